//! Stopping and resuming the application's threads (signal handling lives here).
//!
//! The checkpoint thread sends [`CKPT_SIGNAL`] to every other thread with `tgkill`. Each
//! thread's handler records what the kernel keeps per thread (FS base, clear-tid address,
//! robust list, rseq area, signal mask, alternate stack), saves its callee-saved context
//! with [`crate::context::save_and_call`] and parks on a futex inside that call. On resume
//! the call returns 0; after a restart the restorer makes it return 1. Either way the
//! handler returns through `rt_sigreturn`, which restores the interrupted registers,
//! FPU state and signal mask from the signal frame on the thread's own stack.

use crate::context::{save_and_call, RawContext};
use crate::sys;
use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Real-time signal used to stop threads (override with `MANA_CKPT_SIGNAL`).
pub const DEFAULT_CKPT_SIGNAL: i32 = 62;
pub static CKPT_SIGNAL: AtomicU32 = AtomicU32::new(DEFAULT_CKPT_SIGNAL as u32);

pub const MAX_THREADS: usize = 1024;

/// Counts the times threads were stopped (each [`quiesce`]): a timed wait that failed with
/// `EINTR` while it moved was cut short by a checkpoint ([`crate::timed`]).
pub static CKPT_EPOCH: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
const RSEQ_SIG: u32 = 0x5305_3053;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ThreadSlot {
    pub tid: i32,
    pub ctx: RawContext,
    pub fs_base: u64,
    pub tid_address: u64,
    pub robust_head: u64,
    pub robust_len: u64,
    pub rseq_addr: u64,
    pub sigmask: u64,
    pub altstack: sys::StackT,
}

impl ThreadSlot {
    pub const EMPTY: ThreadSlot = ThreadSlot {
        tid: 0,
        ctx: RawContext {
            rbx: 0,
            rbp: 0,
            r12: 0,
            r13: 0,
            r14: 0,
            r15: 0,
            rsp: 0,
            rip: 0,
            mxcsr: 0,
            fpu_cw: 0,
            _pad: 0,
        },
        fs_base: 0,
        tid_address: 0,
        robust_head: 0,
        robust_len: 0,
        rseq_addr: 0,
        sigmask: 0,
        altstack: sys::StackT {
            sp: 0,
            flags: 0,
            size: 0,
        },
    };

    /// Records the calling thread's kernel-side state (not its registers).
    pub fn capture_current(&mut self) {
        self.tid = sys::gettid();
        self.fs_base = sys::fs_base();
        self.tid_address = sys::tid_address();
        (self.robust_head, self.robust_len) = sys::robust_list();
        self.rseq_addr = rseq_area(self.fs_base);
        self.sigmask = sys::sigmask();
        self.altstack = sys::altstack();
    }

    /// The header's copy of this record, which stays in memory at `self` (a static slot)
    /// and is saved with it.
    pub fn to_image(&'static self, pid: i32) -> mana_image::ThreadState {
        mana_image::ThreadState {
            record: self as *const ThreadSlot as u64,
            tid: self.tid,
            is_main: self.tid == pid,
            ctx: self.ctx.to_image(),
            fs_base: self.fs_base,
            tid_address: self.tid_address,
            robust_list: self.robust_head,
            robust_len: self.robust_len,
            rseq: (self.rseq_addr != 0).then(|| mana_image::Rseq {
                addr: self.rseq_addr,
                // glibc registers at least the original 32-byte `struct rseq`.
                // SAFETY: glibc's exported constant, read-only after startup.
                len: unsafe { __rseq_size }.max(32),
                sig: RSEQ_SIG,
            }),
            sigmask: self.sigmask,
            altstack: (self.altstack.flags & libc::SS_DISABLE == 0).then_some(
                mana_image::AltStack {
                    sp: self.altstack.sp,
                    flags: self.altstack.flags,
                    size: self.altstack.size,
                },
            ),
        }
    }
}

// The image's validator reads this record from the saved memory at the offsets of
// `mana_image::thread_record`.
const _: () = {
    use core::mem::offset_of;
    use mana_image::thread_record as r;
    assert!(core::mem::size_of::<ThreadSlot>() == r::LEN);
    assert!(offset_of!(ThreadSlot, tid) == r::TID);
    assert!(offset_of!(ThreadSlot, ctx) == r::CTX);
    assert!(offset_of!(ThreadSlot, ctx) + offset_of!(RawContext, mxcsr) == r::CTX + 64);
    assert!(offset_of!(ThreadSlot, ctx) + offset_of!(RawContext, fpu_cw) == r::CTX + 68);
    assert!(offset_of!(ThreadSlot, fs_base) == r::FS_BASE);
    assert!(offset_of!(ThreadSlot, tid_address) == r::TID_ADDRESS);
    assert!(offset_of!(ThreadSlot, robust_head) == r::ROBUST_HEAD);
    assert!(offset_of!(ThreadSlot, robust_len) == r::ROBUST_LEN);
    assert!(offset_of!(ThreadSlot, rseq_addr) == r::RSEQ_ADDR);
    assert!(offset_of!(ThreadSlot, sigmask) == r::SIGMASK);
    assert!(offset_of!(ThreadSlot, altstack) == r::ALTSTACK);
    assert!(offset_of!(sys::StackT, flags) == 8 && offset_of!(sys::StackT, size) == 16);
    assert!(r::SS_DISABLE == libc::SS_DISABLE);
};

extern "C" {
    // glibc ≥ 2.35: where this thread's `struct rseq` is, relative to the thread pointer.
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

fn rseq_area(fs_base: u64) -> u64 {
    // SAFETY: glibc's exported constants, read-only after startup.
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        0
    } else {
        (fs_base as i64 + off as i64) as u64
    }
}

struct Slots(UnsafeCell<[ThreadSlot; MAX_THREADS]>);
// SAFETY: each slot is written by exactly one thread (its index comes from an atomic
// counter) and read by the checkpoint thread only after that thread parked.
unsafe impl Sync for Slots {}

static SLOTS: Slots = Slots(UnsafeCell::new([ThreadSlot::EMPTY; MAX_THREADS]));

/// Each parked thread's name (`comm`), by slot: saved with memory, given back to the
/// thread after a restart (issue 11: `top`, `ps -L` and gdb show the same names).
struct Names(UnsafeCell<[[u8; 16]; MAX_THREADS]>);
// SAFETY: entry `i` is written and read only by the thread holding slot `i`.
unsafe impl Sync for Names {}
static NAMES: Names = Names(UnsafeCell::new([[0; 16]; MAX_THREADS]));

/// Each parked thread's pending signals, by slot, and the process's (taken by the
/// thread-group leader): see pending.rs.
struct Pending(UnsafeCell<[crate::pending::ThreadSignals; MAX_THREADS]>);
// SAFETY: entry `i` is written and read only by the thread holding slot `i`.
unsafe impl Sync for Pending {}
static PENDING: Pending = Pending(UnsafeCell::new(
    [crate::pending::ThreadSignals::EMPTY; MAX_THREADS],
));
struct ProcessPending(UnsafeCell<crate::pending::ProcessSignals>);
// SAFETY: used only by the thread-group leader, in its checkpoint handler.
unsafe impl Sync for ProcessPending {}
static PROCESS_PENDING: ProcessPending =
    ProcessPending(UnsafeCell::new(crate::pending::ProcessSignals::EMPTY));

/// Each parked thread's CPU affinity, by slot (all zero: not read), set again after a
/// restart where the node allows it ([`AFFINITY_REFUSED`] counts where it did not).
struct Masks(UnsafeCell<[[u64; 16]; MAX_THREADS]>);
// SAFETY: entry `i` is written and read only by the thread holding slot `i`.
unsafe impl Sync for Masks {}
static MASKS: Masks = Masks(UnsafeCell::new([[0; 16]; MAX_THREADS]));
/// Restored threads whose CPU affinity this node refused (logged by the runtime).
pub static AFFINITY_REFUSED: AtomicU32 = AtomicU32::new(0);
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
static OVERFLOW: AtomicBool = AtomicBool::new(false);
/// Threads that saved their state and are waiting.
static PARKED: AtomicU32 = AtomicU32::new(0);
/// Threads that left the handler after a resume.
static LEFT: AtomicU32 = AtomicU32::new(0);
/// Threads that landed back in the handler after a restart.
pub static ARRIVED: AtomicU32 = AtomicU32::new(0);
/// Resume epoch: parked threads wait while it equals [`WAIT_FOR`].
static RESUME: AtomicU32 = AtomicU32::new(0);
static WAIT_FOR: AtomicU32 = AtomicU32::new(0);

extern "C" fn ckpt_handler(_sig: i32, _info: *mut libc::siginfo_t, _uctx: *mut c_void) {
    // SAFETY: __errno_location returns this thread's errno slot.
    let errno_slot = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved_errno = unsafe { *errno_slot };
    let i = NEXT_SLOT.fetch_add(1, Ordering::AcqRel);
    if i >= MAX_THREADS {
        OVERFLOW.store(true, Ordering::Release);
        PARKED.fetch_add(1, Ordering::AcqRel);
        sys::futex_wake_all(&PARKED);
        wait_for_resume();
    } else {
        // SAFETY: slot `i` is this thread's alone (unique index).
        let slot = unsafe { &mut (*SLOTS.0.get())[i] };
        slot.capture_current();
        // SAFETY: entry `i` is this thread's alone (unique index).
        let name = unsafe { &mut (*NAMES.0.get())[i] };
        *name = sys::thread_name();
        // SAFETY: entry `i` is this thread's alone (unique index).
        let mask = unsafe { &mut (*MASKS.0.get())[i] };
        *mask = sys::affinity().unwrap_or([0; 16]);
        // The personality is the kernel's per thread: each keeps its own.
        let persona = sys::personality(0xffff_ffff);
        // SAFETY: entry `i` is this thread's alone; the process's entry is the leader's.
        let (pending, process) = unsafe {
            (
                &mut (*PENDING.0.get())[i],
                (sys::gettid() == sys::getpid()).then(|| &mut *PROCESS_PENDING.0.get()),
            )
        };
        crate::pending::take_pending(pending, process, _sig);
        let ctx = &mut slot.ctx as *mut RawContext;
        // SAFETY: `ctx` is static memory saved in the image; `park` only touches statics.
        let restarted = unsafe { save_and_call(ctx, park, core::ptr::null_mut()) };
        if restarted {
            sys::set_thread_name(name);
            sys::personality(persona);
            if mask.iter().any(|&w| w != 0) && !sys::set_affinity(mask) {
                AFFINITY_REFUSED.fetch_add(1, Ordering::AcqRel);
            }
            ARRIVED.fetch_add(1, Ordering::AcqRel);
            sys::futex_wake_all(&ARRIVED);
            wait_for_resume();
        }
        // SAFETY: as above (the leader of the restored process is the leader again).
        let process =
            (sys::gettid() == sys::getpid()).then(|| unsafe { &mut *PROCESS_PENDING.0.get() });
        crate::pending::queue_again(pending, process);
    }
    LEFT.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake_all(&LEFT);
    // SAFETY: restoring this thread's errno.
    unsafe { *errno_slot = saved_errno };
}

extern "C" fn park(_: *mut c_void) {
    PARKED.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake_all(&PARKED);
    wait_for_resume();
}

fn wait_for_resume() {
    let w = WAIT_FOR.load(Ordering::Acquire);
    while RESUME.load(Ordering::Acquire) == w {
        sys::futex_wait(&RESUME, w, 1000);
    }
}

/// Installs the checkpoint signal handler (all signals blocked while it runs).
pub fn install_handler() -> Result<(), String> {
    if let Ok(v) = std::env::var("MANA_CKPT_SIGNAL") {
        let s: i32 = v
            .parse()
            .map_err(|_| format!("MANA_CKPT_SIGNAL={v} is not a signal number"))?;
        if !(34..=64).contains(&s) {
            return Err(format!(
                "MANA_CKPT_SIGNAL={v}: choose a real-time signal 34..64"
            ));
        }
        CKPT_SIGNAL.store(s as u32, Ordering::Relaxed);
    }
    let mut sig = CKPT_SIGNAL.load(Ordering::Relaxed) as i32;
    if disposition(sig) != libc::SIG_DFL {
        // Taken already (a library's constructor): another one.
        let free = free_signal(sig).ok_or("no real-time signal is free to stop threads with")?;
        tracing::info!(
            taken = sig,
            using = free,
            "the program handles signal {sig}; the runtime stops threads with signal {free}"
        );
        sig = free;
    }
    install_on(sig)?;
    CKPT_SIGNAL.store(sig as u32, Ordering::Release);
    INSTALLED.store(true, Ordering::Release);
    Ok(())
}

/// Whether the runtime's handler is installed (from then on the application's
/// `sigaction` on [`CKPT_SIGNAL`] moves it: [`make_way_for`]).
pub static INSTALLED: AtomicBool = AtomicBool::new(false);

fn install_on(sig: i32) -> Result<(), String> {
    // SAFETY: a zeroed sigaction is a valid starting point; we fill handler, flags, mask.
    let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
    sa.sa_sigaction = ckpt_handler as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `sa.sa_mask` is a valid sigset_t.
    unsafe { libc::sigfillset(&mut sa.sa_mask) };
    if crate::sigguard::runtime_sigaction(sig, &sa) != 0 {
        return Err(format!(
            "cannot install the checkpoint handler for signal {sig}"
        ));
    }
    Ok(())
}

/// The kernel's current handler for `sig`.
fn disposition(sig: i32) -> usize {
    // SAFETY: a zeroed sigaction is a valid out-buffer; a query changes nothing.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    crate::sigguard::runtime_query(sig, &mut old);
    old.sa_sigaction
}

/// The highest real-time signal other than `but` with the default disposition.
fn free_signal(but: i32) -> Option<i32> {
    (libc::SIGRTMIN() + 2..=libc::SIGRTMAX())
        .rev()
        .find(|&s| s != but && disposition(s) == libc::SIG_DFL)
}

/// The application is installing a handler for the signal the runtime stops threads
/// with: the runtime moves to a free real-time signal first (and says which), so that
/// the application's handler is the application's alone. Returns the new signal.
pub fn make_way_for(sig: i32) -> Option<i32> {
    let free = free_signal(sig)?;
    install_on(free).ok()?;
    CKPT_SIGNAL.store(free as u32, Ordering::Release);
    tracing::info!(
        taken = sig,
        using = free,
        "the program installs a handler for signal {sig}, which the runtime stopped threads with; it uses signal {free} now"
    );
    Some(free)
}

/// Stops every thread but the caller. Returns the number of parked threads.
/// `skip`: threads that are not the application's (the lower half's), left running.
pub fn quiesce(timeout: Duration, skip: &[i32]) -> Result<usize, String> {
    CKPT_EPOCH.fetch_add(1, Ordering::AcqRel);
    NEXT_SLOT.store(0, Ordering::Release);
    OVERFLOW.store(false, Ordering::Release);
    PARKED.store(0, Ordering::Release);
    LEFT.store(0, Ordering::Release);
    ARRIVED.store(0, Ordering::Release);
    WAIT_FOR.store(RESUME.load(Ordering::Acquire), Ordering::Release);
    let me = sys::gettid();
    let pid = sys::getpid();
    let sig = CKPT_SIGNAL.load(Ordering::Relaxed) as i32;
    let mut signaled = [0i32; MAX_THREADS];
    let mut nsig = 0usize;
    let mut tids = [0i32; MAX_THREADS];
    let deadline = Instant::now() + timeout;
    loop {
        let n = sys::list_numeric_dir(c"/proc/self/task", &mut tids)
            .map_err(|e| format!("cannot list /proc/self/task (errno {e})"))?;
        let mut new = 0;
        for &tid in &tids[..n] {
            if tid == me || signaled[..nsig].contains(&tid) || skip.contains(&tid) {
                continue;
            }
            if nsig == MAX_THREADS {
                resume_after_failure();
                return Err(format!("more than {MAX_THREADS} threads"));
            }
            match sys::tgkill(pid, tid, sig) {
                Ok(()) => {
                    signaled[nsig] = tid;
                    nsig += 1;
                    new += 1;
                }
                Err(libc::ESRCH) => {}
                Err(e) => {
                    resume_after_failure();
                    return Err(format!("cannot signal thread {tid} (errno {e})"));
                }
            }
        }
        let alive = signaled[..nsig]
            .iter()
            .filter(|t| tids[..n].contains(t))
            .count();
        let parked = PARKED.load(Ordering::Acquire) as usize;
        if new == 0 && parked >= alive {
            if OVERFLOW.load(Ordering::Acquire) {
                resume_after_failure();
                return Err(format!("more than {MAX_THREADS} threads"));
            }
            return Ok(parked);
        }
        if Instant::now() > deadline {
            let waiting: Vec<i32> = signaled[..nsig].to_vec();
            resume_after_failure();
            return Err(format!(
                "threads did not stop within {}s (one of {:?} may block signal {sig}; set MANA_CKPT_SIGNAL to a free real-time signal)",
                timeout.as_secs(),
                waiting
            ));
        }
        sys::futex_wait(&PARKED, parked as u32, 5);
    }
}

fn resume_after_failure() {
    let parked = PARKED.load(Ordering::Acquire);
    resume(parked as usize);
}

/// Releases the parked threads and waits (bounded) until they left the handler, so the
/// next checkpoint cannot reuse a slot a slow thread still reads.
pub fn resume(parked: usize) {
    RESUME.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake_all(&RESUME);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = LEFT.load(Ordering::Acquire);
        if left as usize >= parked || Instant::now() > deadline {
            break;
        }
        sys::futex_wait(&LEFT, left, 10);
    }
}

/// After a restart: waits until every restored thread has left the restorer's code.
pub fn wait_arrived(parked: usize) {
    loop {
        let a = ARRIVED.load(Ordering::Acquire);
        if a as usize >= parked {
            return;
        }
        sys::futex_wait(&ARRIVED, a, 10);
    }
}

/// The parked threads' slots (valid between [`quiesce`] and [`resume`]).
pub fn parked_slots(n: usize) -> &'static [ThreadSlot] {
    // SAFETY: the first `n` slots were written by threads that are now parked and will
    // not touch them until resumed.
    unsafe { &(&*SLOTS.0.get())[..n.min(MAX_THREADS)] }
}
