//! Timed waits a checkpoint does not cut short (issue 11, item 4).
//!
//! The runtime stops threads with a signal whose handler returns, so the kernel ends a
//! thread's `nanosleep`, `poll`, `select`, `epoll_wait`, `sem_timedwait`, `pause`… with
//! `EINTR` (whatever `SA_RESTART` says), and `sleep` returns early. The wrappers below
//! call the real function again when it failed with `EINTR`, a checkpoint ran meanwhile
//! ([`crate::threads::CKPT_EPOCH`] moved) and no handler of the application ran
//! ([`crate::sigguard::APP_SIGNALS`] did not move: the application's own signals still
//! interrupt it), for the time that is left:
//!
//! * relative sleeps (`nanosleep`, `clock_nanosleep`, `sleep`, `usleep`) go on with the
//!   remaining time the kernel wrote back when the checkpoint signal came — in memory, so
//!   also after a restart; `select` the same (Linux writes its timeout back);
//! * absolute deadlines (`clock_nanosleep(TIMER_ABSTIME)`, `sem_timedwait`) and waits
//!   without a timeout are called again as they were;
//! * millisecond and `timespec` timeouts the kernel does not write back (`poll`, `ppoll`,
//!   `pselect`, `epoll_wait`, `epoll_pwait`) are measured on the runtime's monotonic
//!   clock, which a restart moves on from the checkpoint's instant
//!   ([`crate::runtime::monotonic_ns`]): the time a job spent dead does not count.
//!
//! Cost on the fast path: two atomic loads per call, and one `clock_gettime` (vDSO) per
//! call with a positive millisecond/`timespec` timeout (benches: `timed_waits`).

use crate::runtime::monotonic_ns;
use crate::sigguard::{without_ckpt_signal, APP_SIGNALS};
use crate::threads::CKPT_EPOCH;
use core::ffi::{c_int, c_uint};
use core::sync::atomic::Ordering;

/// The next definition of a libc function (cached).
macro_rules! real {
    ($name:literal, $ty:ty) => {{
        static REAL: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
        let p = *REAL.get_or_init(|| {
            // SAFETY: looking up the next definition of a libc symbol.
            unsafe { libc::dlsym(libc::RTLD_NEXT, concat!($name, "\0").as_ptr().cast()) as usize }
        });
        // SAFETY: libc's function of that name has this signature.
        unsafe { core::mem::transmute::<usize, $ty>(p) }
    }};
}

pub(crate) use real;

/// What a wait saw when it started: a later `EINTR` was a checkpoint's alone if the
/// checkpoint epoch moved and no application handler ran.
struct Watch {
    epoch: u64,
    app: u64,
}

impl Watch {
    fn new() -> Watch {
        Watch {
            epoch: CKPT_EPOCH.load(Ordering::Acquire),
            app: APP_SIGNALS.load(Ordering::Acquire),
        }
    }

    /// After `EINTR`: whether to wait again (and from now on compare with now).
    fn again(&mut self) -> bool {
        let (e, a) = (
            CKPT_EPOCH.load(Ordering::Acquire),
            APP_SIGNALS.load(Ordering::Acquire),
        );
        let ours = e != self.epoch && a == self.app;
        self.epoch = e;
        ours
    }
}

/// An empty signal set to copy a mask into.
fn unmasked() -> libc::sigset_t {
    // SAFETY: all-zero is a valid (empty) sigset_t.
    unsafe { core::mem::zeroed() }
}

fn eintr() -> bool {
    // SAFETY: this thread's errno.
    unsafe { *libc::__errno_location() == libc::EINTR }
}

/// A deadline on the runtime's monotonic clock `ms` milliseconds (or `ts`) from now.
struct Deadline(i64);

impl Deadline {
    fn after_ns(ns: i64) -> Deadline {
        Deadline(monotonic_ns().saturating_add(ns))
    }
    fn left_ns(&self) -> i64 {
        (self.0 - monotonic_ns()).max(0)
    }
    fn left_ms(&self) -> c_int {
        // Rounded up: never shorter than asked.
        ((self.left_ns() + 999_999) / 1_000_000).min(c_int::MAX as i64) as c_int
    }
    fn left_ts(&self) -> libc::timespec {
        let n = self.left_ns();
        libc::timespec {
            tv_sec: n / 1_000_000_000,
            tv_nsec: n % 1_000_000_000,
        }
    }
}

fn ts_ns(ts: &libc::timespec) -> i64 {
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

type NanosleepFn = unsafe extern "C" fn(*const libc::timespec, *mut libc::timespec) -> c_int;

/// # Safety
/// The `nanosleep(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn nanosleep(req: *const libc::timespec, rem: *mut libc::timespec) -> c_int {
    let real = real!("nanosleep", NanosleepFn);
    let mut w = Watch::new();
    let mut left = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut req = req;
    loop {
        // SAFETY: the caller's request; our own remainder buffer.
        let r = unsafe { real(req, &mut left) };
        if r == -1 && eintr() && w.again() {
            req = &left;
            continue;
        }
        if !rem.is_null() && r == -1 {
            // SAFETY: the caller's out-buffer.
            unsafe { *rem = left };
        }
        return r;
    }
}

type ClockNanosleepFn = unsafe extern "C" fn(
    libc::clockid_t,
    c_int,
    *const libc::timespec,
    *mut libc::timespec,
) -> c_int;

/// # Safety
/// The `clock_nanosleep(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn clock_nanosleep(
    clock: libc::clockid_t,
    flags: c_int,
    req: *const libc::timespec,
    rem: *mut libc::timespec,
) -> c_int {
    let real = real!("clock_nanosleep", ClockNanosleepFn);
    let mut w = Watch::new();
    let mut left = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut req = req;
    loop {
        // SAFETY: the caller's request; our own remainder buffer.
        let r = unsafe { real(clock, flags, req, &mut left) };
        if r == libc::EINTR && w.again() {
            if flags & libc::TIMER_ABSTIME == 0 {
                req = &left;
            }
            continue;
        }
        if !rem.is_null() && r == libc::EINTR && flags & libc::TIMER_ABSTIME == 0 {
            // SAFETY: the caller's out-buffer.
            unsafe { *rem = left };
        }
        return r;
    }
}

/// # Safety
/// The `sleep(3)` contract.
#[no_mangle]
pub unsafe extern "C" fn sleep(secs: c_uint) -> c_uint {
    let req = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let mut rem = req;
    // SAFETY: valid buffers.
    if unsafe { nanosleep(&req, &mut rem) } == 0 {
        0
    } else {
        // Interrupted by the application's signal: the seconds left, rounded up.
        (rem.tv_sec + (rem.tv_nsec > 0) as libc::time_t) as c_uint
    }
}

/// # Safety
/// The `usleep(3)` contract.
#[no_mangle]
pub unsafe extern "C" fn usleep(us: libc::useconds_t) -> c_int {
    let req = libc::timespec {
        tv_sec: (us / 1_000_000) as libc::time_t,
        tv_nsec: (us % 1_000_000) as i64 * 1000,
    };
    // SAFETY: a valid request, no remainder wanted.
    unsafe { nanosleep(&req, core::ptr::null_mut()) }
}

/// `call(timeout)`, made again with the milliseconds left after a checkpoint's `EINTR`
/// (a negative timeout: none; 0: no wait).
fn retry_ms(timeout: c_int, mut call: impl FnMut(c_int) -> c_int) -> c_int {
    let mut w = Watch::new();
    let deadline = (timeout > 0).then(|| Deadline::after_ns(timeout as i64 * 1_000_000));
    let mut t = timeout;
    loop {
        let r = call(t);
        if r == -1 && eintr() && w.again() {
            t = deadline.as_ref().map_or(timeout, Deadline::left_ms);
            continue;
        }
        return r;
    }
}

/// `call(tmo)`, made again with the time left after a checkpoint's `EINTR` (a null
/// timeout: none).
fn retry_ts(
    tmo: *const libc::timespec,
    mut call: impl FnMut(*const libc::timespec) -> c_int,
) -> c_int {
    let mut w = Watch::new();
    // SAFETY: the caller's timeout, if any.
    let deadline = unsafe { tmo.as_ref() }.map(|t| Deadline::after_ns(ts_ns(t)));
    let mut left;
    let mut t = tmo;
    loop {
        let r = call(t);
        if r == -1 && eintr() && w.again() {
            if let Some(d) = &deadline {
                left = d.left_ts();
                t = &left;
            }
            continue;
        }
        return r;
    }
}

/// `call()`, made again as it was after a checkpoint's `EINTR` (no timeout, an absolute
/// one, or one the kernel writes back).
fn retry(mut call: impl FnMut() -> c_int) -> c_int {
    let mut w = Watch::new();
    loop {
        let r = call();
        if r == -1 && eintr() && w.again() {
            continue;
        }
        return r;
    }
}

type PollFn = unsafe extern "C" fn(*mut libc::pollfd, libc::nfds_t, c_int) -> c_int;

/// # Safety
/// The `poll(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int) -> c_int {
    let real = real!("poll", PollFn);
    // SAFETY: the caller's arguments.
    retry_ms(timeout, |t| unsafe { real(fds, n, t) })
}

type PpollFn = unsafe extern "C" fn(
    *mut libc::pollfd,
    libc::nfds_t,
    *const libc::timespec,
    *const libc::sigset_t,
) -> c_int;

/// # Safety
/// The `ppoll(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    tmo: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    let real = real!("ppoll", PpollFn);
    let mut copy = unmasked();
    // SAFETY: the caller's mask, valid or null.
    let mask = unsafe { without_ckpt_signal(mask, &mut copy) };
    // SAFETY: the caller's arguments, or our remaining timeout.
    retry_ts(tmo, |t| unsafe { real(fds, n, t, mask) })
}

type SelectFn = unsafe extern "C" fn(
    c_int,
    *mut libc::fd_set,
    *mut libc::fd_set,
    *mut libc::fd_set,
    *mut libc::timeval,
) -> c_int;

/// # Safety
/// The `select(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn select(
    n: c_int,
    r: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    e: *mut libc::fd_set,
    timeout: *mut libc::timeval,
) -> c_int {
    let real = real!("select", SelectFn);
    // SAFETY: the caller's arguments; on EINTR the sets are unchanged and Linux wrote the
    // time left into `timeout`.
    retry(|| unsafe { real(n, r, wr, e, timeout) })
}

type PselectFn = unsafe extern "C" fn(
    c_int,
    *mut libc::fd_set,
    *mut libc::fd_set,
    *mut libc::fd_set,
    *const libc::timespec,
    *const libc::sigset_t,
) -> c_int;

/// # Safety
/// The `pselect(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut libc::fd_set,
    wr: *mut libc::fd_set,
    e: *mut libc::fd_set,
    tmo: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    let real = real!("pselect", PselectFn);
    let mut copy = unmasked();
    // SAFETY: the caller's mask, valid or null.
    let mask = unsafe { without_ckpt_signal(mask, &mut copy) };
    // SAFETY: the caller's arguments, or our remaining timeout.
    retry_ts(tmo, |t| unsafe { real(n, r, wr, e, t, mask) })
}

type EpollWaitFn = unsafe extern "C" fn(c_int, *mut libc::epoll_event, c_int, c_int) -> c_int;

/// # Safety
/// The `epoll_wait(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    ep: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    let real = real!("epoll_wait", EpollWaitFn);
    // SAFETY: the caller's arguments.
    retry_ms(timeout, |t| unsafe { real(ep, events, max, t) })
}

type EpollPwaitFn = unsafe extern "C" fn(
    c_int,
    *mut libc::epoll_event,
    c_int,
    c_int,
    *const libc::sigset_t,
) -> c_int;

/// # Safety
/// The `epoll_pwait(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    ep: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> c_int {
    let real = real!("epoll_pwait", EpollPwaitFn);
    let mut copy = unmasked();
    // SAFETY: the caller's mask, valid or null.
    let mask = unsafe { without_ckpt_signal(mask, &mut copy) };
    // SAFETY: the caller's arguments.
    retry_ms(timeout, |t| unsafe { real(ep, events, max, t, mask) })
}

type SemTimedwaitFn = unsafe extern "C" fn(*mut libc::sem_t, *const libc::timespec) -> c_int;

/// # Safety
/// The `sem_timedwait(3)` contract.
#[no_mangle]
pub unsafe extern "C" fn sem_timedwait(sem: *mut libc::sem_t, abs: *const libc::timespec) -> c_int {
    let real = real!("sem_timedwait", SemTimedwaitFn);
    // SAFETY: the caller's arguments (an absolute deadline: the same again).
    retry(|| unsafe { real(sem, abs) })
}

type SemClockwaitFn =
    unsafe extern "C" fn(*mut libc::sem_t, libc::clockid_t, *const libc::timespec) -> c_int;

/// # Safety
/// The `sem_clockwait(3)` contract.
#[no_mangle]
pub unsafe extern "C" fn sem_clockwait(
    sem: *mut libc::sem_t,
    clock: libc::clockid_t,
    abs: *const libc::timespec,
) -> c_int {
    let real = real!("sem_clockwait", SemClockwaitFn);
    // SAFETY: the caller's arguments (an absolute deadline: the same again).
    retry(|| unsafe { real(sem, clock, abs) })
}

type EpollPwait2Fn = unsafe extern "C" fn(
    c_int,
    *mut libc::epoll_event,
    c_int,
    *const libc::timespec,
    *const libc::sigset_t,
) -> c_int;

/// # Safety
/// The `epoll_pwait2(2)` contract (a relative `timespec` timeout the kernel does not
/// write back: the time left on the runtime's clock, as for `ppoll`).
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(
    ep: c_int,
    events: *mut libc::epoll_event,
    max: c_int,
    timeout: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    let real = real!("epoll_pwait2", EpollPwait2Fn);
    let mut copy = unmasked();
    // SAFETY: the caller's mask, valid or null.
    let mask = unsafe { without_ckpt_signal(mask, &mut copy) };
    // SAFETY: the caller's arguments.
    retry_ts(timeout, |t| unsafe { real(ep, events, max, t, mask) })
}

type PauseFn = unsafe extern "C" fn() -> c_int;

/// # Safety
/// The `pause(2)` contract: returns when a handler of the application ran.
#[no_mangle]
pub unsafe extern "C" fn pause() -> c_int {
    let real = real!("pause", PauseFn);
    // SAFETY: no arguments.
    retry(|| unsafe { real() })
}

type SigsuspendFn = unsafe extern "C" fn(*const libc::sigset_t) -> c_int;

/// # Safety
/// The `sigsuspend(2)` contract: returns when a handler of the application ran.
#[no_mangle]
pub unsafe extern "C" fn sigsuspend(mask: *const libc::sigset_t) -> c_int {
    let real = real!("sigsuspend", SigsuspendFn);
    let mut copy = unmasked();
    // SAFETY: the caller's mask, valid or null.
    let mask = unsafe { without_ckpt_signal(mask, &mut copy) };
    // SAFETY: the caller's mask (the runtime's signal taken out).
    retry(|| unsafe { real(mask) })
}

type SigtimedwaitFn = unsafe extern "C" fn(
    *const libc::sigset_t,
    *mut libc::siginfo_t,
    *const libc::timespec,
) -> c_int;

/// # Safety
/// The `sigtimedwait(2)` contract. The runtime's signal is taken out of the set (a
/// thread waiting for "every signal" must not swallow a checkpoint's stop request), and
/// a checkpoint's `EINTR` goes on for the time left.
#[no_mangle]
pub unsafe extern "C" fn sigtimedwait(
    set: *const libc::sigset_t,
    info: *mut libc::siginfo_t,
    timeout: *const libc::timespec,
) -> c_int {
    let real = real!("sigtimedwait", SigtimedwaitFn);
    let mut copy = unmasked();
    // SAFETY: the caller's set, valid or null.
    let set = unsafe { without_ckpt_signal(set, &mut copy) };
    // SAFETY: the caller's arguments (the runtime's signal taken out of the set).
    retry_ts(timeout, |t| unsafe { real(set, info, t) })
}

/// # Safety
/// The `sigwaitinfo(2)` contract; as [`sigtimedwait`] without a timeout.
#[no_mangle]
pub unsafe extern "C" fn sigwaitinfo(
    set: *const libc::sigset_t,
    info: *mut libc::siginfo_t,
) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { sigtimedwait(set, info, core::ptr::null()) }
}

/// # Safety
/// The `sigwait(3)` contract (libc's own calls its internal `sigtimedwait`, past the one
/// above: the set would keep the runtime's signal).
#[no_mangle]
pub unsafe extern "C" fn sigwait(set: *const libc::sigset_t, sig: *mut c_int) -> c_int {
    loop {
        // SAFETY: the caller's set; no siginfo wanted.
        let r = unsafe { sigtimedwait(set, core::ptr::null_mut(), core::ptr::null()) };
        if r >= 0 {
            // SAFETY: the caller's out-pointer.
            unsafe { *sig = r };
            return 0;
        }
        // SAFETY: this thread's errno.
        let e = unsafe { *libc::__errno_location() };
        if e != libc::EINTR {
            return e;
        }
    }
}
