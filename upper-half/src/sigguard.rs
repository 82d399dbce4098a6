//! Signal handlers never run application code on a lower-half TCB (DESIGN.md §3).
//!
//! In a process with a lower half (an MPI program under `mana_launch`), a signal can
//! arrive while a thread executes lower-half code with a lower TCB in FS. The
//! application's `sigaction`/`signal` are interposed here: the application's handler is
//! recorded and the kernel gets [`guard`], which switches FS back to the upper TCB that
//! lent the lower one (if any), runs the handler and switches back. Queries return the
//! application's own handler. In a process without a lower half the guard only counts
//! the application's handlers ([`APP_SIGNALS`], for [`crate::timed`]).

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

type SigactionFn =
    unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;

/// The application's handler per signal (0: none recorded; the kernel has it directly).
static USER: [AtomicUsize; 65] = [const { AtomicUsize::new(0) }; 65];

fn real_sigaction() -> SigactionFn {
    static REAL: OnceLock<usize> = OnceLock::new();
    let p = *REAL.get_or_init(|| {
        // SAFETY: looking up the next definition of a libc symbol.
        unsafe { libc::dlsym(libc::RTLD_NEXT, c"sigaction".as_ptr()) as usize }
    });
    // SAFETY: libc's sigaction has this signature.
    unsafe { core::mem::transmute::<usize, SigactionFn>(p) }
}

fn active() -> bool {
    static ACTIVE: OnceLock<bool> = OnceLock::new();
    *ACTIVE.get_or_init(|| std::env::var_os(mana_lower::LOWER_HALF_ENV).is_some())
}

/// Installs a disposition for the runtime itself, bypassing the interposer.
pub fn runtime_sigaction(sig: c_int, act: &libc::sigaction) -> c_int {
    // SAFETY: the real sigaction with a valid action.
    unsafe { real_sigaction()(sig, act, core::ptr::null_mut()) }
}

/// The kernel's disposition of `sig`, bypassing the interposer.
pub fn runtime_query(sig: c_int, old: &mut libc::sigaction) -> c_int {
    // SAFETY: a query into a valid out-buffer.
    unsafe { real_sigaction()(sig, core::ptr::null(), old) }
}

/// Counts the application's signal handlers run (a timed wait that failed with `EINTR`
/// while it moved was interrupted by the application's own signal: [`crate::timed`]).
pub static APP_SIGNALS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

extern "C" fn guard(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    APP_SIGNALS.fetch_add(1, Ordering::AcqRel);
    let (lower, upper) = if active() {
        let lower: u64;
        // SAFETY: reading this thread's FS base (FSGSBASE is required by the lower half).
        unsafe {
            core::arch::asm!("rdfsbase {}", out(reg) lower, options(nostack, preserves_flags))
        };
        (lower, crate::mpi::mana_upper_fs_for(lower))
    } else {
        (0, 0)
    };
    if upper != 0 {
        // SAFETY: back to the upper TCB of the thread that lent this lower one.
        unsafe {
            core::arch::asm!("wrfsbase {}", in(reg) upper, options(nostack, preserves_flags))
        };
    }
    let h = USER
        .get(sig as usize)
        .map_or(0, |u| u.load(Ordering::Acquire));
    if h > 1 {
        // SAFETY: the application's SA_SIGINFO-compatible handler (a plain handler ignores
        // the extra arguments under the x86-64 calling convention).
        let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { core::mem::transmute(h) };
        f(sig, info, ctx);
    }
    if upper != 0 {
        // SAFETY: back to the lower TCB the interrupted code was running on.
        unsafe {
            core::arch::asm!("wrfsbase {}", in(reg) lower, options(nostack, preserves_flags))
        };
    }
}

/// The application's flags per signal (returned by queries instead of the guard's).
static USER_FLAGS: [AtomicUsize; 65] = [const { AtomicUsize::new(0) }; 65];

/// # Safety
/// The `sigaction(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    let real = real_sigaction();
    let ckpt = crate::threads::CKPT_SIGNAL.load(Ordering::Acquire) as c_int;
    if sig == ckpt && crate::threads::INSTALLED.load(Ordering::Acquire) {
        // The runtime's thread-stop signal: to the application it looks free.
        if act.is_null() {
            if !old.is_null() {
                // SAFETY: the caller's out-buffer; a zeroed sigaction is SIG_DFL.
                unsafe { *old = core::mem::zeroed() };
            }
            return 0;
        }
        // SAFETY: the caller passes a valid action.
        let installs = unsafe { (*act).sa_sigaction } != libc::SIG_DFL;
        if installs && crate::threads::make_way_for(sig).is_none() {
            // SAFETY: the errno slot of this thread.
            unsafe { *libc::__errno_location() = libc::EINVAL };
            return -1;
        }
        // SIG_DFL on a signal the application does not hold changes nothing; a handler
        // is installed now that the runtime has moved (no recursion: `sig` is not the
        // runtime's any more).
        let r = if installs {
            // SAFETY: the caller's valid action; no old action asked for.
            unsafe { sigaction(sig, act, core::ptr::null_mut()) }
        } else {
            0
        };
        if r == 0 && !old.is_null() {
            // SAFETY: the caller's out-buffer; a zeroed sigaction is SIG_DFL.
            unsafe { *old = core::mem::zeroed() };
        }
        return r;
    }
    if !(1..=64).contains(&sig) {
        // SAFETY: forwarded unchanged.
        return unsafe { real(sig, act, old) };
    }
    let slot = sig as usize;
    let (prev, prev_flags) = (
        USER[slot].load(Ordering::Acquire),
        USER_FLAGS[slot].load(Ordering::Acquire),
    );
    let r = if act.is_null() {
        // SAFETY: a query.
        unsafe { real(sig, act, old) }
    } else {
        // SAFETY: the caller passes a valid action.
        let mut a = unsafe { *act };
        let (h, flags) = (a.sa_sigaction, a.sa_flags);
        let is_fn = h != libc::SIG_DFL && h != libc::SIG_IGN;
        if is_fn {
            a.sa_sigaction = guard as *const () as usize;
            a.sa_flags |= libc::SA_SIGINFO;
        }
        // SAFETY: a valid action.
        let r = unsafe { real(sig, &a, old) };
        if r == 0 {
            USER[slot].store(if is_fn { h } else { 0 }, Ordering::Release);
            USER_FLAGS[slot].store(flags as usize, Ordering::Release);
        }
        r
    };
    if r == 0 && !old.is_null() && prev != 0 {
        // SAFETY: `old` was just filled in: show the application's own handler and flags.
        unsafe {
            (*old).sa_sigaction = prev;
            (*old).sa_flags = prev_flags as c_int;
        }
    }
    r
}

/// `signal()` goes through [`sigaction`] (glibc's would bypass the interposer).
///
/// # Safety
/// The `signal(2)` contract.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: zeroed sigaction is valid; filled below.
    let mut a: libc::sigaction = unsafe { core::mem::zeroed() };
    a.sa_sigaction = handler;
    a.sa_flags = libc::SA_RESTART;
    // SAFETY: zeroed is a valid out-buffer.
    let mut old: libc::sigaction = unsafe { core::mem::zeroed() };
    // SAFETY: valid pointers.
    if unsafe { sigaction(sig, &a, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

/// `set` without the runtime's thread-stop signal, if `set` would block it: a program
/// that blocks every signal in a thread (`sigfillset` + `pthread_sigmask`) must still
/// let the runtime stop that thread for a checkpoint (issue 11, item 4). Null stays null.
///
/// # Safety
/// `set` is null or points to a valid `sigset_t`.
pub unsafe fn without_ckpt_signal(
    set: *const libc::sigset_t,
    copy: &mut libc::sigset_t,
) -> *const libc::sigset_t {
    if set.is_null() || !crate::threads::INSTALLED.load(Ordering::Acquire) {
        return set;
    }
    let sig = crate::threads::CKPT_SIGNAL.load(Ordering::Acquire) as c_int;
    // SAFETY: the caller's valid set, copied; sigdelset on our copy.
    unsafe {
        *copy = *set;
        libc::sigdelset(copy, sig);
    }
    copy
}

type SigmaskFn = unsafe extern "C" fn(c_int, *const libc::sigset_t, *mut libc::sigset_t) -> c_int;

fn real_mask_fn(name: &'static core::ffi::CStr, cache: &'static OnceLock<usize>) -> SigmaskFn {
    let p = *cache.get_or_init(|| {
        // SAFETY: looking up the next definition of a libc symbol.
        unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
    });
    // SAFETY: libc's sigprocmask and pthread_sigmask have this signature.
    unsafe { core::mem::transmute::<usize, SigmaskFn>(p) }
}

/// Calls `real` (libc's sigprocmask or pthread_sigmask) with `set` less the runtime's
/// thread-stop signal when it blocks or replaces the mask.
///
/// # Safety
/// The `sigprocmask(2)` contract.
unsafe fn set_mask(
    real: SigmaskFn,
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    // SAFETY: zeroed is a valid sigset_t to copy into.
    let mut copy: libc::sigset_t = unsafe { core::mem::zeroed() };
    let set = if how == libc::SIG_UNBLOCK {
        set
    } else {
        // SAFETY: the caller's set, valid or null.
        unsafe { without_ckpt_signal(set, &mut copy) }
    };
    // SAFETY: the caller's arguments, the set possibly replaced by our copy.
    unsafe { real(how, set, old) }
}

/// # Safety
/// The `sigprocmask(2)` contract; the runtime's thread-stop signal is never blocked.
#[no_mangle]
pub unsafe extern "C" fn sigprocmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    static REAL: OnceLock<usize> = OnceLock::new();
    let real = real_mask_fn(c"sigprocmask", &REAL);
    // SAFETY: the caller's arguments, as the contract gives them.
    unsafe { set_mask(real, how, set, old) }
}

/// # Safety
/// The `pthread_sigmask(3)` contract; the runtime's thread-stop signal is never blocked.
#[no_mangle]
pub unsafe extern "C" fn pthread_sigmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    static REAL: OnceLock<usize> = OnceLock::new();
    let real = real_mask_fn(c"pthread_sigmask", &REAL);
    // SAFETY: the caller's arguments, as the contract gives them.
    unsafe { set_mask(real, how, set, old) }
}
