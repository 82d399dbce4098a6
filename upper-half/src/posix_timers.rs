//! POSIX timers (`timer_create`) across checkpoints (issue 11, item 4).
//!
//! * **Saved and made again.** Before the threads stop, every kernel timer of the process
//!   is read from `/proc/self/timers` (id, signal, `sigev_value`, how it notifies and whom,
//!   clock) and `timer_gettime` (time left, period). At a restart they are created again
//!   with the same ids — the kernel hands out a process's timer ids in sequence from 0, so
//!   the restorer creates and deletes timers until the next id is the one wanted, as the
//!   program's `timer_t` values name them — notifying the same thread (by its new id), and
//!   armed with the time that was left: the time the job spent dead does not count, as
//!   for `setitimer`.
//! * **`SIGEV_THREAD`.** glibc runs these through a helper thread that blocks every
//!   signal, the runtime's thread-stop signal too, so a checkpoint could never stop it. The
//!   runtime implements them itself: the kernel timer signals a thread of the runtime's
//!   (`mana-timers`, made at the first such timer, blocked in `sigwaitinfo` like glibc's
//!   but stoppable and restored with the others), which starts a thread running the
//!   program's function for each expiry, as glibc does. The `timer_t` is the kernel id,
//!   so `timer_settime`, `timer_gettime` and `timer_getoverrun` of libc work unchanged;
//!   `timer_delete` is interposed to forget the function.

use crate::sys;
use core::ffi::{c_int, c_void};
use std::sync::Mutex;

/// The signal the runtime's `SIGEV_THREAD` timers send its helper thread: glibc's own
/// timer signal (`SIGRTMIN` of the kernel, 32), which glibc keeps from applications.
const TIMER_SIGNAL: c_int = 32;
const SI_TIMER: c_int = -2;
const SYS_TIMER_CREATE: usize = 222;
const SYS_TIMER_SETTIME: usize = 223;
const SYS_TIMER_GETTIME: usize = 224;
const SYS_TIMER_DELETE: usize = 226;
const SYS_RT_SIGTIMEDWAIT: usize = 128;
const SIGEV_SIGNAL: c_int = 0;
const SIGEV_NONE: c_int = 1;
const SIGEV_THREAD: c_int = 2;
const SIGEV_THREAD_ID: c_int = 4;
/// Where the kernel cannot be asked for an id: timer ids at most this high come back (the
/// restorer creates and deletes every id below: about 2 s for a million).
const MAX_RESTORED_ID: i32 = 1 << 20;

/// The kernel's `struct sigevent` (64 bytes on x86-64).
#[repr(C)]
#[derive(Clone, Copy)]
struct KernelSigevent {
    value: u64,
    signo: c_int,
    notify: c_int,
    /// `sigev_notify_thread_id` for SIGEV_THREAD_ID; glibc's function and attributes for
    /// SIGEV_THREAD.
    rest: [u64; 6],
}

/// A `SIGEV_THREAD` timer's function, argument and thread attributes.
struct ThreadTimer {
    id: c_int,
    function: usize,
    value: u64,
    attr: Option<Box<libc::pthread_attr_t>>,
}

// SAFETY: the attributes are only read (by pthread_create), under THREAD_TIMERS's lock.
unsafe impl Send for ThreadTimer {}

static THREAD_TIMERS: Mutex<Vec<ThreadTimer>> = Mutex::new(Vec::new());
/// [`THREAD_TIMERS`] held with every signal blocked: a thread a checkpoint stopped while
/// holding it would keep a forking thread (which takes it with signals blocked,
/// [`crate::fork`]) waiting, and that one could then never stop. Unlocked before the
/// mask is given back.
struct TimersHeld {
    guard: Option<std::sync::MutexGuard<'static, Vec<ThreadTimer>>>,
    mask: u64,
}

fn lock_timers() -> TimersHeld {
    let mask = sys::set_sigmask(!0);
    TimersHeld {
        guard: Some(THREAD_TIMERS.lock().unwrap_or_else(|p| p.into_inner())),
        mask,
    }
}

impl std::ops::Deref for TimersHeld {
    type Target = Vec<ThreadTimer>;
    fn deref(&self) -> &Vec<ThreadTimer> {
        self.guard.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for TimersHeld {
    fn deref_mut(&mut self) -> &mut Vec<ThreadTimer> {
        self.guard.as_mut().expect("held until dropped")
    }
}

impl Drop for TimersHeld {
    fn drop(&mut self) {
        drop(self.guard.take());
        sys::set_sigmask(self.mask);
    }
}

/// This module's lock, held by the forking thread across a `fork` ([`crate::fork`]).
pub(crate) fn hold_for_fork() -> Vec<Box<dyn std::any::Any>> {
    vec![crate::fork::held(&THREAD_TIMERS)]
}

/// The helper thread's id (0: not started).
static HELPER_TID: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);

/// # Safety
/// The `timer_create(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn timer_create(
    clock: libc::clockid_t,
    sevp: *mut libc::sigevent,
    timerid: *mut libc::timer_t,
) -> c_int {
    // SAFETY: the caller's sigevent, if any, is valid to read.
    let thread = !sevp.is_null() && unsafe { (*sevp).sigev_notify } == SIGEV_THREAD;
    if !thread {
        type F =
            unsafe extern "C" fn(libc::clockid_t, *mut libc::sigevent, *mut libc::timer_t) -> c_int;
        let real: F = crate::timed::real!("timer_create", F);
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(clock, sevp, timerid) };
    }
    // SAFETY: glibc's sigevent: sigev_value, signo, notify, then for SIGEV_THREAD the
    // function and the attributes pointer (its `_sigev_thread` member).
    let ev = unsafe { &*(sevp as *const KernelSigevent) };
    let function = ev.rest[0] as usize;
    let attr_ptr = ev.rest[1] as *const libc::pthread_attr_t;
    let attr = (!attr_ptr.is_null()).then(|| {
        // SAFETY: a valid pthread_attr_t of the caller's, copied bit for bit as glibc
        // does (its affinity set, if any, stays the caller's).
        Box::new(unsafe { core::ptr::read(attr_ptr) })
    });
    let Some(helper) = helper_tid() else {
        set_errno(libc::EAGAIN);
        return -1;
    };
    let mut kev = KernelSigevent {
        value: 0,
        signo: TIMER_SIGNAL,
        notify: SIGEV_THREAD_ID,
        rest: [0; 6],
    };
    kev.rest[0] = helper as u32 as u64;
    // The helper finds the timer by the id the kernel puts in the signal's siginfo.
    let mut timers = lock_timers();
    let id = match kernel_timer_create(clock, &kev) {
        Ok(id) => id,
        Err(e) => {
            set_errno(e);
            return -1;
        }
    };
    timers.push(ThreadTimer {
        id,
        function,
        value: ev.value,
        attr,
    });
    // SAFETY: the caller's out-pointer; a kernel id as glibc's timer_t.
    unsafe { *timerid = id as isize as libc::timer_t };
    0
}

/// # Safety
/// The `timer_delete(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn timer_delete(timerid: libc::timer_t) -> c_int {
    let id = timerid as isize;
    if (0..=i32::MAX as isize).contains(&id) {
        lock_timers().retain(|t| t.id as isize != id);
    }
    type F = unsafe extern "C" fn(libc::timer_t) -> c_int;
    let real: F = crate::timed::real!("timer_delete", F);
    // SAFETY: the caller's timer, passed on.
    unsafe { real(timerid) }
}

/// `timer_create(clock, ev)`: the kernel's timer id, or the errno.
fn kernel_timer_create(clock: i32, ev: &KernelSigevent) -> Result<c_int, c_int> {
    kernel_timer_create_as(clock, ev, -1)
}

/// `timer_create` with `want` in the out-pointer: the id the kernel gives while
/// [`restore_ids_mode`] is on, ignored otherwise.
fn kernel_timer_create_as(clock: i32, ev: &KernelSigevent, want: c_int) -> Result<c_int, c_int> {
    let mut id: c_int = want;
    // SAFETY: timer_create with a valid sigevent and out-pointer.
    let r = unsafe {
        sys::syscall6(
            SYS_TIMER_CREATE,
            clock as usize,
            ev as *const KernelSigevent as usize,
            &mut id as *mut c_int as usize,
            0,
            0,
            0,
        )
    };
    if r < 0 {
        Err(-r as c_int)
    } else {
        Ok(id)
    }
}

/// A timer's [period s, ns, time left s, ns]: read (`set` None, `timer_gettime`) or set
/// relative (`timer_settime`); the errno if the kernel refused.
fn kernel_timer_spec(id: i32, set: Option<&[i64; 4]>) -> Result<[i64; 4], c_int> {
    let mut spec = set.copied().unwrap_or([0; 4]);
    let (nr, a, b) = match set {
        None => (SYS_TIMER_GETTIME, spec.as_mut_ptr() as usize, 0),
        Some(_) => (SYS_TIMER_SETTIME, 0, spec.as_ptr() as usize),
    };
    // SAFETY: timer_gettime into, or timer_settime from, a valid itimerspec.
    let r = unsafe { sys::syscall6(nr, id as usize, a, b, 0, 0, 0) };
    if r < 0 {
        Err(-r as c_int)
    } else {
        Ok(spec)
    }
}

fn set_errno(e: c_int) {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() = e };
}

/// The helper thread's id, started at the first call.
fn helper_tid() -> Option<i32> {
    use core::sync::atomic::Ordering;
    static START: Mutex<()> = Mutex::new(());
    let _one = START.lock().unwrap_or_else(|p| p.into_inner());
    let tid = HELPER_TID.load(Ordering::Acquire);
    if tid != 0 {
        return Some(tid);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    sys::spawn_blocked(
        std::thread::Builder::new()
            .name("mana-timers".into())
            .stack_size(256 << 10),
        move || helper(tx),
    )
    .ok()?;
    let tid = rx.recv().ok()?;
    HELPER_TID.store(tid, Ordering::Release);
    Some(tid)
}

/// The helper thread: waits for the timer signal, starts the timer's function in a new
/// thread for each expiry. The runtime's thread-stop signal reaches it (it is stopped
/// and restored as the application's threads are); `sigwaitinfo` goes on after one.
fn helper(tx: std::sync::mpsc::Sender<i32>) {
    // glibc's sigaddset, sigprocmask and sigwaitinfo refuse or drop its own signals (32
    // and 33): the mask and the wait are raw system calls. Like glibc's own helper, it
    // blocks every signal (the program's are for the program's threads) but the
    // runtime's thread-stop signal.
    let set: u64 = 1 << (TIMER_SIGNAL - 1);
    let stop = crate::threads::CKPT_SIGNAL.load(core::sync::atomic::Ordering::Acquire);
    let blocked: u64 = !(1u64 << (stop - 1));
    // SAFETY: SIG_SETMASK with a valid 8-byte set, this thread only.
    unsafe {
        sys::syscall6(
            sys::SYS_RT_SIGPROCMASK,
            libc::SIG_SETMASK as usize,
            &blocked as *const u64 as usize,
            0,
            8,
            0,
            0,
        )
    };
    let _ = tx.send(sys::gettid());
    loop {
        // SAFETY: zeroed siginfo is a valid out-buffer.
        let mut info: libc::siginfo_t = unsafe { core::mem::zeroed() };
        // SAFETY: rt_sigtimedwait with a valid set, out-buffer, no timeout.
        let r = unsafe {
            sys::syscall6(
                SYS_RT_SIGTIMEDWAIT,
                &set as *const u64 as usize,
                &mut info as *mut libc::siginfo_t as usize,
                0,
                8,
                0,
                0,
            )
        };
        if r < 0 || info.si_code != SI_TIMER {
            continue; // EINTR: a checkpoint stopped this thread
        }
        // SAFETY: si_code SI_TIMER: the timer id is the first int after si_code's
        // padding (`_sigev_un._timer.si_tid`).
        let id =
            unsafe { *((&info as *const libc::siginfo_t as *const u8).add(16) as *const c_int) };
        // Held until the thread is made: its attributes live in the list (a timer_delete
        // meanwhile would free them).
        let timers = lock_timers();
        let Some(t) = timers.iter().find(|t| t.id == id) else {
            continue;
        };
        let mut thread: libc::pthread_t = 0;
        let attr = t
            .attr
            .as_deref()
            .map_or(core::ptr::null(), |a| a as *const libc::pthread_attr_t);
        let call = Box::into_raw(Box::new((t.function, t.value)));
        // SAFETY: a trampoline taking ownership of `call`; attributes copied at creation.
        let r = unsafe { libc::pthread_create(&mut thread, attr, run_function, call.cast()) };
        drop(timers);
        if r == 0 {
            // SAFETY: the thread just made; glibc detaches SIGEV_THREAD threads too.
            unsafe { libc::pthread_detach(thread) };
        } else {
            // SAFETY: not handed over.
            drop(unsafe { Box::from_raw(call) });
        }
    }
}

extern "C" fn run_function(arg: *mut c_void) -> *mut c_void {
    // Made with every signal blocked (the helper's mask while it held the timer list): the
    // program's function runs with none blocked, as glibc's SIGEV_THREAD threads do.
    sys::set_sigmask(0);
    // SAFETY: made by `helper` with Box::into_raw.
    let (function, value) = *unsafe { Box::from_raw(arg as *mut (usize, u64)) };
    // SAFETY: the program's `void (*)(union sigval)`; a sigval is passed as one word.
    let f: extern "C" fn(u64) = unsafe { core::mem::transmute(function) };
    f(value);
    core::ptr::null_mut()
}

/// A kernel timer as a checkpoint saw it.
#[derive(Clone, Copy, Debug, Default)]
pub struct SavedTimer {
    id: i32,
    clock: i32,
    signo: i32,
    value: u64,
    notify: i32,
    /// The thread it notifies (SIGEV_THREAD_ID), by its id before the checkpoint.
    tid: i32,
    left_ns: u64,
    interval_ns: u64,
}

/// The process's kernel timers, from `/proc/self/timers` and `timer_gettime`.
pub fn save() -> Result<Vec<SavedTimer>, String> {
    let text = crate::procfs::read_proc(c"/proc/self/timers", 1 << 20)?;
    let text = String::from_utf8_lossy(&text);
    let mut out: Vec<SavedTimer> = Vec::new();
    let bad = |l: &str| format!("cannot read a POSIX timer from /proc/self/timers: {l:?}");
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("ID: ") {
            let id = v.trim().parse().map_err(|_| bad(line))?;
            out.push(SavedTimer {
                id,
                ..SavedTimer::default()
            });
            continue;
        }
        let Some(t) = out.last_mut() else {
            return Err(bad(line));
        };
        if let Some(v) = line.strip_prefix("signal: ") {
            let (s, val) = v.trim().split_once('/').ok_or_else(|| bad(line))?;
            t.signo = s.parse().map_err(|_| bad(line))?;
            t.value = u64::from_str_radix(val, 16).map_err(|_| bad(line))?;
        } else if let Some(v) = line.strip_prefix("notify: ") {
            // "signal/pid.N", "signal/tid.N" (SIGEV_THREAD_ID), "none/pid.N".
            let (how, who) = v.trim().split_once('/').ok_or_else(|| bad(line))?;
            let base = match how {
                "signal" => SIGEV_SIGNAL,
                "none" => SIGEV_NONE,
                _ => return Err(bad(line)),
            };
            if let Some(tid) = who.strip_prefix("tid.") {
                t.notify = base | SIGEV_THREAD_ID;
                t.tid = tid.parse().map_err(|_| bad(line))?;
            } else {
                t.notify = base;
            }
        } else if let Some(v) = line.strip_prefix("ClockID: ") {
            t.clock = v.trim().parse().map_err(|_| bad(line))?;
        }
    }
    for t in &mut out {
        let spec = kernel_timer_spec(t.id, None)
            .map_err(|e| format!("timer_gettime of POSIX timer {} failed (errno {e})", t.id))?;
        let ns = |s: i64, n: i64| (s.max(0) as u64).saturating_mul(1_000_000_000) + n.max(0) as u64;
        t.interval_ns = ns(spec[0], spec[1]);
        t.left_ns = ns(spec[2], spec[3]);
    }
    out.sort_by_key(|t| t.id);
    Ok(out)
}

/// Makes the saved timers again in the restored process, with their ids; `new_tid` maps a
/// thread id of the checkpointed process to the restored thread's. Each timer that cannot
/// come back is named in one warning.
pub fn restore(saved: &[SavedTimer], new_tid: impl Fn(i32) -> Option<i32>) {
    if saved.is_empty() {
        return;
    }
    // The program's other threads are parked: nothing else makes a timer meanwhile.
    let by_id = restore_ids_mode(true);
    for t in saved {
        if let Err(e) = restore_one(t, &new_tid, by_id) {
            tracing::warn!(timer = t.id, "a POSIX timer did not come back: {e}");
        }
    }
    if by_id {
        restore_ids_mode(false);
    }
}

/// Linux 6.16's `PR_TIMER_CREATE_RESTORE_IDS`: while on (for the whole process),
/// `timer_create` gives the id its out-pointer holds. False where the kernel lacks it.
fn restore_ids_mode(on: bool) -> bool {
    const PR_TIMER_CREATE_RESTORE_IDS: c_int = 77;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(PR_TIMER_CREATE_RESTORE_IDS, on as libc::c_ulong, 0, 0, 0) == 0 }
}

fn restore_one(
    t: &SavedTimer,
    new_tid: &impl Fn(i32) -> Option<i32>,
    by_id: bool,
) -> Result<(), String> {
    if t.id < 0 || (!by_id && t.id > MAX_RESTORED_ID) {
        return Err(format!(
            "its id is above {MAX_RESTORED_ID} (this kernel cannot be asked for an id: Linux 6.16's PR_TIMER_CREATE_RESTORE_IDS)"
        ));
    }
    let mut ev = KernelSigevent {
        value: t.value,
        signo: t.signo,
        notify: t.notify,
        rest: [0; 6],
    };
    if t.notify & SIGEV_THREAD_ID != 0 {
        let tid = new_tid(t.tid).ok_or_else(|| format!("thread {} it notifies is gone", t.tid))?;
        ev.rest[0] = tid as u32 as u64;
    }
    if by_id {
        let id = kernel_timer_create_as(t.clock, &ev, t.id)
            .map_err(|e| format!("timer_create with its id failed (errno {e})"))?;
        if id != t.id {
            // SAFETY: deleting the timer just made.
            unsafe { sys::syscall6(SYS_TIMER_DELETE, id as usize, 0, 0, 0, 0, 0) };
            return Err(format!("the kernel gave id {id}, not {}", t.id));
        }
    } else {
        loop {
            let id = kernel_timer_create(t.clock, &ev)
                .map_err(|e| format!("timer_create failed (errno {e})"))?;
            if id == t.id {
                break;
            }
            // SAFETY: deleting the timer just made.
            unsafe { sys::syscall6(SYS_TIMER_DELETE, id as usize, 0, 0, 0, 0, 0) };
            if id > t.id {
                return Err(format!("the kernel gave id {id}, past {}", t.id));
            }
        }
    }
    if t.left_ns == 0 {
        return Ok(());
    }
    let s = |ns: u64| [(ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64];
    let (i, v) = (s(t.interval_ns), s(t.left_ns));
    let spec = [i[0], i[1], v[0], v[1]];
    kernel_timer_spec(t.id, Some(&spec))
        .map_err(|e| format!("timer_settime failed (errno {e})"))?;
    Ok(())
}

/// After a restart: the helper thread has a new id; the `SIGEV_THREAD` timers notify it
/// (their saved target is its old id, mapped like any other thread's).
pub fn restarted(new_tid: impl Fn(i32) -> Option<i32>) {
    use core::sync::atomic::Ordering;
    let old = HELPER_TID.load(Ordering::Acquire);
    if old != 0 {
        if let Some(t) = new_tid(old) {
            HELPER_TID.store(t, Ordering::Release);
        }
    }
}
