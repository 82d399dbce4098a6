//! Process ids across a restart (issue 11, item 3; docs/process-state.md "Ids").
//!
//! `mana_restart` gives a process its pid and thread ids back by restoring it as the
//! first process of a pid namespace of its own. Two things differ from before the
//! restart, and are handled here:
//! * its parent is the restarter's outer process, outside the namespace (`getppid`
//!   answers 0), not the process that started it (a launcher, a shell, gone with the old
//!   job): `getppid` keeps answering the parent the process had at its checkpoint — programs compare it with what they saw at start
//!   (`getppid() != start_ppid` → "my parent died");
//! * the node and the launcher know it under another pid (the restarter's outer
//!   process): the runtime registers that one, so that `mana_status --list` names a pid
//!   one can `kill` or attach to on the node.

use crate::sys;
use std::sync::atomic::{AtomicI32, Ordering};

/// The pid registered with the coordinator and written into the MANIFEST; 0: getpid().
static VISIBLE_PID: AtomicI32 = AtomicI32::new(0);
/// The process restored as the first of its pid namespace (0: none).
static NS_ROOT_PID: AtomicI32 = AtomicI32::new(0);
/// The parent the process had (as `getppid` answered it) at its last checkpoint.
static PPID_SEEN: AtomicI32 = AtomicI32::new(0);

/// The pid the node, the launcher and the coordinator know this process by.
pub fn visible_pid() -> i32 {
    match VISIBLE_PID.load(Ordering::Relaxed) {
        0 => sys::getpid(),
        p => p,
    }
}

/// Called at each checkpoint, before the image is written.
pub fn at_checkpoint() {
    PPID_SEEN.store(parent(), Ordering::Relaxed);
}

/// Called by the checkpoint thread after a restart, from the restarter's mailbox.
pub fn restarted(visible_pid: i64, ns_root: bool) {
    let own = sys::getpid();
    VISIBLE_PID.store(
        i32::try_from(visible_pid)
            .ok()
            .filter(|&p| p > 0)
            .unwrap_or(0),
        Ordering::Relaxed,
    );
    NS_ROOT_PID.store(if ns_root { own } else { 0 }, Ordering::Relaxed);
}

/// What `getppid` answers for this process.
fn parent() -> i32 {
    let real = sys::getppid();
    let root = NS_ROOT_PID.load(Ordering::Relaxed);
    // A parent outside the namespace (0) stands for the parent the process had; a child
    // of the process (a copy of this memory) has a parent of its own.
    if real == 0 && root != 0 && root == sys::getpid() {
        let seen = PPID_SEEN.load(Ordering::Relaxed);
        if seen > 0 {
            return seen;
        }
    }
    real
}

/// `getppid`, interposed: see the module comment.
#[no_mangle]
pub extern "C" fn getppid() -> libc::pid_t {
    parent()
}
