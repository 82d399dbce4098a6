//! `mana_launch --checkpoint-signal SIG`: SIG sent to any process of the job — by
//! `srun --signal=SIG@SECONDS` before a time limit, `scancel --signal`, or `kill` — asks
//! the coordinator for a job-wide checkpoint, as `mana_status --checkpoint` does. Every
//! rank of a job usually gets the signal at once; the coordinator folds their requests
//! into one checkpoint.
//!
//! The signal is blocked in the thread that loads the runtime (the main thread, before
//! `main`), so every thread the application or MPI starts inherits it blocked, and a
//! small thread of ours takes it with `sigwait`. A checkpoint leaves that thread alone
//! (it is not the application's); a restarted process starts it again.

use mana_coordinator::{Connection, FromCoord, Role, ToCoord};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;
use tracing::{info, warn};

/// The variable `mana_launch` sets: the signal's number.
pub const ENV: &str = "MANA_CHECKPOINT_ON_SIGNAL";
/// Set (to 1) for a checkpoint that also ends the job once committed, as
/// `mana_status --checkpoint --kill` does (set by test harnesses: scripts/mpich-testsuite.sh).
pub const KILL_ENV: &str = "MANA_CHECKPOINT_ON_SIGNAL_KILL";

static SIGNAL: OnceLock<Option<(Signal, PathBuf)>> = OnceLock::new();
/// The waiting thread's id (0: none).
static TID: AtomicI32 = AtomicI32::new(0);
/// The connection of a request in progress (-1: none): the runtime's, not saved in images.
static REQUEST_FD: AtomicI32 = AtomicI32::new(-1);

/// The descriptor of the coordinator connection a request holds open (-1 if none).
pub fn request_fd() -> i32 {
    REQUEST_FD.load(Ordering::SeqCst)
}

/// The waiting thread, which a checkpoint must not stop (0 if there is none).
pub fn tid() -> i32 {
    TID.load(Ordering::Relaxed)
}

/// Called by the library constructor on the main thread: blocks the signal named by
/// [`ENV`] (if any) and starts the thread that waits for it.
pub fn start(status_file: PathBuf) {
    let chosen = std::env::var(ENV).ok().and_then(|v| {
        let sig = v.parse::<i32>().ok().and_then(|n| Signal::try_from(n).ok());
        if sig.is_none() {
            eprintln!("mana: {ENV}={v} is not a signal number; checkpoints on a signal are off");
        }
        sig
    });
    let Some(sig) = chosen else {
        let _ = SIGNAL.set(None);
        return;
    };
    let mut set = SigSet::empty();
    set.add(sig);
    if let Err(e) = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        eprintln!("mana: cannot block {sig} ({e}); checkpoints on a signal are off");
        let _ = SIGNAL.set(None);
        return;
    }
    let _ = SIGNAL.set(Some((sig, status_file)));
    spawn();
}

/// Starts the waiting thread again (a restarted process has none).
pub fn restart() {
    TID.store(0, Ordering::Relaxed);
    spawn();
}

fn spawn() {
    let Some(Some((sig, status_file))) = SIGNAL.get() else {
        return;
    };
    let (sig, status_file) = (*sig, status_file.clone());
    let spawned = crate::sys::spawn_blocked(
        std::thread::Builder::new()
            .name("mana-signal".into())
            .stack_size(256 << 10),
        move || wait_loop(sig, status_file),
    );
    if let Err(e) = spawned {
        eprintln!("mana: cannot start the thread waiting for {sig}: {e}");
    }
}

fn wait_loop(sig: Signal, status_file: PathBuf) {
    TID.store(nix::unistd::gettid().as_raw(), Ordering::Relaxed);
    if crate::runtime::own_tables() {
        crate::procfs::own_table();
    }
    let mut set = SigSet::empty();
    set.add(sig);
    loop {
        match set.wait() {
            Ok(_) => request(sig, &status_file),
            Err(e) => {
                warn!("waiting for {sig} failed ({e}); checkpoints on a signal are off");
                return;
            }
        }
    }
}

/// Asks the coordinator for a checkpoint and waits for its outcome.
fn request(sig: Signal, status_file: &std::path::Path) {
    info!(signal = %sig, "checkpoint requested by a signal");
    // The descriptor is ours from the moment its socket exists until it is closed: a
    // checkpoint (the interval's, say) may be writing this process's image meanwhile, and
    // refused the image for an unknown socket when the descriptor was recorded only once
    // connected (MPICH's suite, pt2pt/probenull in the ckpt mode, once in CI).
    let outcome = Connection::open_watched(status_file, Role::Command, &REQUEST_FD)
        .map_err(|e| e.to_string())
        .and_then(|(mut conn, _)| {
            let kill_after = std::env::var_os(KILL_ENV).is_some_and(|v| v == "1");
            let r = conn
                .request(&ToCoord::Checkpoint { kill_after })
                .map_err(|e| e.to_string());
            drop(conn);
            r
        });
    REQUEST_FD.store(-1, Ordering::SeqCst);
    match outcome {
        Ok(FromCoord::Checkpointed { generation, .. }) => {
            info!(generation, signal = %sig, "checkpoint on a signal committed")
        }
        Ok(other) => warn!(?other, "unexpected reply to a checkpoint request"),
        Err(e) => warn!("the checkpoint {sig} asked for failed: {e}"),
    }
}
