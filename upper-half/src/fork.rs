//! The runtime's `pthread_atfork` handlers. A child made by `fork` has only the forking
//! thread: a lock another thread held at that instant stays taken for ever in the child,
//! and the child's own checkpoint thread (a member, [`crate::members`]) would hang on it.
//! So the forking thread takes every lock of the runtime's that a checkpoint may need
//! before the `fork` and lets them go after it, in the parent and in the child (the
//! runtime heap's lock by dlmalloc's own handlers, registered before these).
//!
//! Signals are blocked in the forking thread from before the first lock to after the
//! last release: a checkpoint's stop signal taken while it held them would park it with
//! the locks the checkpoint thread then needs. The runtime's threads never hold one of
//! these locks while they wait for the program's threads, so the wait here is short.

use std::any::Any;
use std::cell::UnsafeCell;
use std::sync::Mutex;

/// What the forking thread holds between the prepare handler and the parent's or child's.
struct Held {
    mask: u64,
    guards: Vec<Box<dyn Any>>,
}

struct Slot(UnsafeCell<Option<Held>>);
// SAFETY: only the forking thread touches it, from the prepare handler to the parent's
// or child's handler; glibc runs the handlers of one fork at a time (its atfork lock).
unsafe impl Sync for Slot {}
static HELD: Slot = Slot(UnsafeCell::new(None));

/// A lock of the runtime's, taken for the fork (a poisoned one all the same).
pub(crate) fn held<T: 'static>(m: &'static Mutex<T>) -> Box<dyn Any> {
    Box::new(m.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Prepare handler. Lock order: the member list and its companions, then the lease, the
/// inherited descriptors, the timers and the start configuration, then stderr (the
/// runtime's log with `MANA_LOG`); nothing takes two of these in another order.
pub extern "C" fn before_fork() {
    let mask = crate::sys::set_sigmask(!0);
    let mut guards = crate::members::hold_for_fork();
    guards.extend(crate::runtime::hold_for_fork());
    guards.extend(crate::posix_timers::hold_for_fork());
    guards.push(Box::new(std::io::stderr().lock()));
    // SAFETY: see Slot.
    unsafe { *HELD.0.get() = Some(Held { mask, guards }) };
}

/// Releases what [`before_fork`] took, last taken first.
fn release() {
    // SAFETY: see Slot.
    if let Some(Held { mask, mut guards }) = unsafe { (*HELD.0.get()).take() } {
        while guards.pop().is_some() {}
        crate::sys::set_sigmask(mask);
    }
}

/// Parent handler.
pub extern "C" fn after_fork_in_parent() {
    release();
}

/// Child handler: the locks released (this thread took them, so they are its to
/// release), then the runtime made again for the child ([`crate::runtime`]).
pub extern "C" fn after_fork_in_child() {
    // SAFETY: see Slot.
    let mask = unsafe { (*HELD.0.get()).as_ref().map(|h| h.mask) };
    // SAFETY: see Slot.
    if let Some(Held { mut guards, .. }) = unsafe { (*HELD.0.get()).take() } {
        while guards.pop().is_some() {}
    }
    crate::runtime::after_fork_in_child();
    if let Some(mask) = mask {
        crate::sys::set_sigmask(mask);
    }
}
