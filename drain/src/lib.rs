//! The MPI side of a checkpoint (DESIGN.md §4, DRAIN.md; docs/mpi-checkpoint.md): before
//! the threads are stopped, every rank of the job agrees that no collective is
//! half-entered ([`prepare`]: rounds of job-wide MAX/SUM reductions through the
//! coordinator), closes its gate, and drains the messages in flight into the upper half
//! (the senders' counts, summed, tell each receiver how many to expect). After the image
//! (commit or failure) [`finish`] opens the gate again. At a restart, [`restart`] brings MPI
//! back in the new lower half.
//!
//! The MPI work itself is done by the wrapper library (`mpi-wrappers/src/ckpt.c`), which
//! registers its operations table at load time (through `libmana`'s
//! `mana_register_mpi_ops`, which calls [`register`]).

use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use mana_coordinator::{Connection, FromCoord, ReduceEntry, ReduceError, ReduceOp, ToCoord};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// `struct mana_seq` of `mpi-wrappers/src/mana_ops.h`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Seq {
    gid: u64,
    seq: u64,
}

/// `struct mana_count`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Count {
    key: [u64; 3],
    count: u64,
}

const OPS_VERSION: u32 = 7;

/// `struct mana_mpi_ops`: keep in step with `mana_ops.h`.
#[repr(C)]
pub struct MpiOps {
    version: u32,
    coll_snapshot: unsafe extern "C" fn(out: *mut Seq, cap: i32) -> i32,
    coll_apply: unsafe extern "C" fn(targets: *const Seq, n: i32) -> i32,
    coll_grant_pass: unsafe extern "C" fn(),
    coll_finish: unsafe extern "C" fn(agreed: i32),
    gate_close: unsafe extern "C" fn(timeout: f64) -> i32,
    gate_open: unsafe extern "C" fn(),
    p2p_sent: unsafe extern "C" fn(out: *mut Count, cap: i32) -> i32,
    drain_step: unsafe extern "C" fn(sums: *const Count, n: i32) -> i64,
    drained_count: unsafe extern "C" fn() -> i32,
    /// One poke of the lower half's progress engine (gate closed).
    progress: unsafe extern "C" fn(),
    /// After the drain: records what a restart needs from the lower half; 0, or -1 with
    /// why a restart of this image would be refused.
    snapshot: unsafe extern "C" fn(why: *mut u8, len: i32) -> i32,
    /// Forgets every cached lower-half function (a new lower half is coming).
    restart_reset: unsafe extern "C" fn(),
    /// In a restarted process with a new lower half: MPI_Init, check rank and size, bring
    /// back what the application holds; 0, or -1 with a message in `err`.
    restart: unsafe extern "C" fn(rank: i32, size: i32, err: *mut u8, errlen: i32) -> i32,
    /// The last restart's seconds in MPI_Init and in re-creating the application's objects.
    restart_times: unsafe extern "C" fn(init_s: *mut f64, rebuild_s: *mut f64),
    /// Where the process is in MPI's lifetime: [`Phase`].
    phase: unsafe extern "C" fn() -> i32,
    /// What the last drain round left on this rank, in words; the length written.
    drain_report: unsafe extern "C" fn(buf: *mut u8, len: i32) -> i32,
    /// Every rank's byte count (MPI initialized, every rank calling); 0 or -1.
    allgather_lens: unsafe extern "C" fn(len: i32, lens: *mut i32) -> i32,
    /// Every rank's bytes, rank after rank; 0 or -1.
    allgather_bytes: unsafe extern "C" fn(
        input: *const u8,
        len: i32,
        out: *mut u8,
        lens: *const i32,
        size: i32,
    ) -> i32,
}

/// Every rank's `mine`, in rank order: the checkpointer's own exchange between ranks
/// after a restart (MPI initialized, the application's threads parked, every rank of the
/// world calling). At most `limit` bytes from each rank are accepted.
pub fn allgather(mine: &[u8], world_size: u32, limit: usize) -> Result<Vec<Vec<u8>>, String> {
    let ops = ops().ok_or("the MPI wrapper library did not register its operations")?;
    if phase() != Phase::Initialized {
        return Err("MPI is not initialized".into());
    }
    let n = usize::try_from(world_size).map_err(|_| "world size out of range")?;
    let len = i32::try_from(mine.len()).map_err(|_| "too many bytes to exchange")?;
    let mut lens = vec![0i32; n];
    // SAFETY: `lens` holds one int per rank of the world.
    if unsafe { (ops.allgather_lens)(len, lens.as_mut_ptr()) } != 0 {
        return Err("MPI_Allgather failed".into());
    }
    let mut total: usize = 0;
    for &l in &lens {
        let l = usize::try_from(l).map_err(|_| "a rank sent a negative length")?;
        if l > limit {
            return Err(format!("a rank sent {l} bytes (at most {limit})"));
        }
        total = total.checked_add(l).ok_or("lengths overflow")?;
    }
    if total > i32::MAX as usize {
        return Err("more than 2 GiB to exchange".into());
    }
    let mut out = vec![0u8; total];
    // SAFETY: `out` has room for the sum of `lens`; `mine` holds `len` bytes.
    if unsafe {
        (ops.allgather_bytes)(
            mine.as_ptr(),
            len,
            out.as_mut_ptr(),
            lens.as_ptr(),
            n as i32,
        )
    } != 0
    {
        return Err("MPI_Allgatherv failed".into());
    }
    let mut at = 0usize;
    Ok(lens
        .iter()
        .map(|&l| {
            let v = out[at..at + l as usize].to_vec();
            at += l as usize;
            v
        })
        .collect())
}

/// Where a process is in MPI's lifetime (`mana_mpi_phase` of `mana_wrap.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before `MPI_Init` returned (a lower half may already be loaded: a call allowed
    /// before `MPI_Init`, such as `MPI_Get_version`, loads it).
    BeforeInit,
    /// Between `MPI_Init` and `MPI_Finalize`.
    Initialized,
    /// After `MPI_Finalize` returned.
    Finalized,
}

/// Where this process is in MPI's lifetime (before `MPI_Init` if the wrapper library did
/// not register its operations).
pub fn phase() -> Phase {
    // SAFETY: the wrapper library's own function.
    match ops().map_or(0, |o| unsafe { (o.phase)() }) {
        1 => Phase::Initialized,
        2 => Phase::Finalized,
        _ => Phase::BeforeInit,
    }
}

/// Whether the wrapper library registered its operations (the process was started by
/// `mana_launch`, which preloads it).
pub fn registered() -> bool {
    ops().is_some()
}

static OPS: AtomicPtr<MpiOps> = AtomicPtr::new(core::ptr::null_mut());

/// Records the wrapper library's (static) operations table.
///
/// # Safety
/// `ops` must point to a `struct mana_mpi_ops` that lives as long as the process.
pub unsafe fn register(ops: *const MpiOps) {
    // SAFETY: the caller passes a valid, static table.
    if unsafe { (*ops).version } == OPS_VERSION {
        OPS.store(ops as *mut MpiOps, Ordering::Release);
    }
}

fn ops() -> Option<&'static MpiOps> {
    // SAFETY: set once from a static table.
    unsafe { OPS.load(Ordering::Acquire).as_ref() }
}

/// How long the agreement rounds and the drain may take before the checkpoint is given up
/// (the job then runs on).
const AGREE_TIMEOUT: Duration = Duration::from_secs(120);
const GATE_TIMEOUT: f64 = 60.0;

/// The outcome of [`prepare`]: what the image records.
pub struct Prepared {
    pub drained: u32,
    pub agree: Duration,
    pub drain: Duration,
}

/// The coordinator message that ended the round while this rank waited for a reduce
/// (`Resume{committed: false}` after another rank's failure, or `Kill`), read by
/// [`reduce_err`]; taken by [`take_round_end`].
static ROUND_END: std::sync::Mutex<Option<FromCoord>> = std::sync::Mutex::new(None);

/// A reduce's failure in words; a coordinator message that ended the round is kept for
/// [`take_round_end`] (also for the checkpointer's own reduces during a checkpoint).
pub fn reduce_err(e: ReduceError) -> String {
    match e {
        ReduceError::Interrupted(msg) => {
            let text = format!("the coordinator interrupted the checkpoint's agreement ({msg:?})");
            if matches!(msg, FromCoord::Resume { .. } | FromCoord::Kill) {
                *ROUND_END.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
            }
            text
        }
        other => other.to_string(),
    }
}

/// After [`prepare`] failed: the message with which the coordinator had already ended the
/// round, if that is why (then the caller must not report the failure and wait for a
/// `Resume`: it has read it — waiting took the next round's `Checkpoint` instead, and
/// that round then waited forever for this rank).
pub fn take_round_end() -> Option<FromCoord> {
    ROUND_END.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Agreement and drain. On error the gate is open again and the job runs on.
pub fn prepare(conn: &mut Connection, generation: u64) -> Result<Prepared, String> {
    let Some(ops) = ops() else {
        return Err("the MPI wrapper library did not register its checkpoint operations".into());
    };
    let t0 = Instant::now();
    AGREED.store(false, Ordering::Relaxed);
    let _ = take_round_end();
    let r = agree(ops, conn, generation).and_then(|rounds| {
        AGREED.store(true, Ordering::Relaxed);
        let agree = t0.elapsed();
        debug!(rounds, ?agree, "collectives converged");
        // SAFETY: the wrapper library's own function.
        if unsafe { (ops.gate_close)(GATE_TIMEOUT) } != 0 {
            return Err(format!(
                "a thread stayed inside MPI for {GATE_TIMEOUT} s after the collectives converged"
            ));
        }
        let t1 = Instant::now();
        // The agreement counted MPI_Init and MPI_Finalize as collectives on
        // MPI_COMM_WORLD: every rank is on the same side of both. Before MPI_Init and after
        // MPI_Finalize nothing is in flight and MPI may not be called: no drain, no snapshot
        // (a restart loads a lower half again only at the next MPI call).
        if phase() != Phase::Initialized {
            debug!(phase = ?phase(), "MPI is not initialized: nothing to drain");
            return Ok(Prepared {
                drained: 0,
                agree,
                drain: t1.elapsed(),
            });
        }
        match drain(ops, conn, generation) {
            Ok(()) => {
                let mut why = [0u8; 512];
                // SAFETY: `why` has room for `len` bytes; the gate is closed, as required.
                if unsafe { (ops.snapshot)(why.as_mut_ptr(), why.len() as i32) } != 0 {
                    let n = why.iter().position(|&c| c == 0).unwrap_or(why.len());
                    warn!(
                        "this checkpoint's image cannot be restarted: {}",
                        String::from_utf8_lossy(&why[..n])
                    );
                }
                Ok(Prepared {
                    // SAFETY: the wrapper library's own function.
                    drained: unsafe { (ops.drained_count)() }.max(0) as u32,
                    agree,
                    drain: t1.elapsed(),
                })
            }
            Err(e) => {
                // What this rank still waited for, whoever reported the failure first (a
                // rank with nothing left often does: its peers are then interrupted).
                let left = drain_report(ops);
                if !left.is_empty() {
                    warn!("the failed drain left on this rank: {left}");
                }
                // SAFETY: as above.
                unsafe { (ops.gate_open)() };
                Err(e)
            }
        }
    });
    if r.is_err() {
        // SAFETY: the wrapper library's own function.
        unsafe { (ops.coll_finish)(i32::from(AGREED.load(Ordering::Relaxed))) };
    }
    r
}

/// Whether the last checkpoint's collectives converged job-wide (then every rank has freed
/// each communicator that any rank had freed: the wrapper library forgets their final
/// sequence numbers).
static AGREED: AtomicBool = AtomicBool::new(false);

/// The job resumes (after the commit, or a failed checkpoint).
pub fn finish() {
    if let Some(ops) = ops() {
        // SAFETY: the wrapper library's own functions.
        unsafe {
            (ops.coll_finish)(i32::from(AGREED.load(Ordering::Relaxed)));
            (ops.gate_open)();
        }
    }
}

/// Rounds of DRAIN.md §1.3 until every rank is at the job-wide maximum sequence number of
/// every communicator and inside no blocking collective. Returns the number of rounds.
fn agree(ops: &MpiOps, conn: &mut Connection, generation: u64) -> Result<u32, String> {
    let deadline = Instant::now() + AGREE_TIMEOUT;
    let mut last: Option<(Vec<ReduceEntry>, i64)> = None;
    let mut stalled = 0;
    let mut pause = Duration::from_micros(200);
    for round in 0u32.. {
        let mut seqs = vec![Seq::default(); 4096];
        // SAFETY: `seqs` has room for `cap` entries.
        let n =
            unsafe { (ops.coll_snapshot)(seqs.as_mut_ptr(), seqs.len() as i32) }.max(0) as usize;
        let entries: Vec<ReduceEntry> = seqs[..n.min(seqs.len())]
            .iter()
            .map(|s| ([s.gid, 0, 0], s.seq as i64))
            .collect();
        let targets = conn
            .reduce(
                &format!("ckpt{generation}/agree{round}/seq"),
                ReduceOp::Max,
                entries,
            )
            .map_err(reduce_err)?;
        let t: Vec<Seq> = targets
            .iter()
            .map(|(k, v)| Seq {
                gid: k[0],
                seq: *v as u64,
            })
            .collect();
        // SAFETY: `t` holds `t.len()` entries.
        let conv = unsafe { (ops.coll_apply)(t.as_ptr(), t.len() as i32) } != 0;
        let notconv = conn
            .reduce(
                &format!("ckpt{generation}/agree{round}/conv"),
                ReduceOp::Sum,
                vec![([0, 0, 0], i64::from(!conv))],
            )
            .map_err(reduce_err)?;
        let left = notconv.first().map_or(0, |e| e.1);
        if left == 0 {
            return Ok(round + 1);
        }
        let now = (targets, left);
        if last.as_ref() == Some(&now) {
            stalled += 1;
        } else {
            stalled = 0;
        }
        last = Some(now);
        if stalled >= 3 {
            // Nobody moved for three rounds: let each frozen rank enter one more
            // collective (DRAIN.md §1.4, the freeze deadlock).
            // SAFETY: the wrapper library's own function.
            unsafe { (ops.coll_grant_pass)() };
            stalled = 0;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{left} rank(s) did not reach a common point between collectives within {} s \
                 (each stayed inside a blocking collective, a wait for a peer's lock or post, or an \
                 open MPI_Win_post/MPI_Win_start epoch)",
                AGREE_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    unreachable!()
}

/// A reduce once the gate is closed: while the coordinator's answer is not there, this rank
/// keeps MPI progressing. A peer's thread may be inside MPI waiting for this rank — a
/// passive-target unlock or flush needs its target's progress — and that peer cannot close
/// its gate (so the reduce cannot complete) until it returns.
fn reduce_progressing(
    ops: &MpiOps,
    conn: &mut Connection,
    key: &str,
    op: ReduceOp,
    entries: Vec<ReduceEntry>,
) -> Result<Vec<ReduceEntry>, ReduceError> {
    conn.send(&ToCoord::Reduce {
        key: key.to_string(),
        op,
        entries,
    })?;
    loop {
        let mut fds = [PollFd::new(conn.stream().as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(1u8)).is_ok_and(|n| n > 0) {
            break;
        }
        // SAFETY: the wrapper library's own function; the gate is closed.
        unsafe { (ops.progress)() };
    }
    conn.wait_reduced(key)
}

/// What the last drain round left on this rank, in words (empty: nothing).
fn drain_report(ops: &MpiOps) -> String {
    let mut why = [0u8; 1024];
    // SAFETY: `why` has room for `len` bytes; called by the checkpointer, gate closed.
    let n = unsafe { (ops.drain_report)(why.as_mut_ptr(), why.len() as i32) };
    String::from_utf8_lossy(&why[..(n.max(0) as usize).min(why.len())]).into_owned()
}

/// DRAIN.md §2: every rank publishes how many messages it sent to whom; each receives
/// what is still in flight to it, until the job-wide work left is zero.
fn drain(ops: &MpiOps, conn: &mut Connection, generation: u64) -> Result<(), String> {
    let mut sent = vec![Count::default(); 1 << 16];
    // SAFETY: `sent` has room for `cap` entries.
    let n = unsafe { (ops.p2p_sent)(sent.as_mut_ptr(), sent.len() as i32) }.max(0) as usize;
    if n > sent.len() {
        return Err(format!(
            "this rank talked to {n} (communicator, peer) pairs; at most {} are supported",
            sent.len()
        ));
    }
    let entries: Vec<ReduceEntry> = sent[..n].iter().map(|c| (c.key, c.count as i64)).collect();
    let sums = reduce_progressing(
        ops,
        conn,
        &format!("ckpt{generation}/sent"),
        ReduceOp::Sum,
        entries,
    )
    .map_err(reduce_err)?;
    let sums: Vec<Count> = sums
        .iter()
        .map(|(k, v)| Count {
            key: *k,
            count: *v as u64,
        })
        .collect();
    let deadline = Instant::now() + AGREE_TIMEOUT;
    for round in 0u32.. {
        // SAFETY: `sums` holds `sums.len()` entries.
        let left = unsafe { (ops.drain_step)(sums.as_ptr(), sums.len() as i32) };
        if left < 0 {
            warn!("more messages arrived than were sent: message counting is wrong");
        }
        let total = reduce_progressing(
            ops,
            conn,
            &format!("ckpt{generation}/drain{round}"),
            ReduceOp::Sum,
            vec![([0, 0, 0], left.max(0)), ([1, 0, 0], i64::from(left < 0))],
        )
        .map_err(reduce_err)?;
        let get = |k: u64| total.iter().find(|e| e.0[0] == k).map_or(0, |e| e.1);
        if get(1) > 0 {
            return Err("a rank received more messages than were sent to it (MANA bug)".into());
        }
        if get(0) == 0 {
            info!(rounds = round + 1, "drained");
            return Ok(());
        }
        if Instant::now() > deadline {
            let here = drain_report(ops);
            return Err(format!(
                "{} message(s) or request(s) still in flight after {} s of draining (this rank: {})",
                get(0),
                AGREE_TIMEOUT.as_secs(),
                if here.is_empty() { "nothing left" } else { &here }
            ));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    unreachable!()
}

/// In a restored process that was checkpointed before `MPI_Init` or after `MPI_Finalize`:
/// the wrapper library forgets every cached function of the old lower half (if one was
/// loaded); the caller defers loading a new one to the next MPI call.
pub fn restart_without_mpi() {
    if let Some(ops) = ops() {
        // SAFETY: the wrapper library's own function.
        unsafe { (ops.restart_reset)() };
    }
    info!(phase = ?phase(), "restarted outside MPI's lifetime: no new lower half yet");
}

/// In the restored process: `new_lower_half` starts a new lower half (with the restart's
/// environment), then the wrapper library brings MPI back (MPI_Init, rank check, pending
/// receives).
pub fn restart(
    new_lower_half: impl FnOnce() -> Result<(), String>,
    rank: u32,
    world_size: u32,
) -> Result<(), String> {
    let Some(ops) = ops() else {
        return Err("the MPI wrapper library did not register its checkpoint operations".into());
    };
    let t0 = Instant::now();
    // SAFETY: the wrapper library's own function.
    unsafe { (ops.restart_reset)() };
    new_lower_half()?;
    let loaded = t0.elapsed();
    let mut err = [0u8; 1024];
    // SAFETY: `err` has room for `errlen` bytes.
    let r = unsafe {
        (ops.restart)(
            rank as i32,
            world_size as i32,
            err.as_mut_ptr(),
            err.len() as i32,
        )
    };
    if r != 0 {
        let n = err.iter().position(|&c| c == 0).unwrap_or(err.len());
        return Err(String::from_utf8_lossy(&err[..n]).into_owned());
    }
    let (mut init, mut rebuild) = (0f64, 0f64);
    // SAFETY: the wrapper library's own function, writing two doubles.
    unsafe { (ops.restart_times)(&mut init, &mut rebuild) };
    info!(
        ?loaded,
        init = ?Duration::from_secs_f64(init),
        rebuild = ?Duration::from_secs_f64(rebuild),
        total = ?t0.elapsed(),
        "MPI restarted with a new lower half"
    );
    Ok(())
}
