//! Signals pending at a checkpoint (issue 11, item 4; docs/process-state.md "Pending
//! signals").
//!
//! A signal the program blocks stays pending in the kernel, which a restart does not
//! bring back. Each thread, in the checkpoint signal's handler, takes its own pending
//! signals with their `siginfo` (`rt_sigtimedwait`, zero timeout: those `SigPnd` of
//! `/proc/thread-self/status` lists); the thread-group leader also takes the process's
//! (`ShdPnd`). They are kept in static memory (saved with the image) and queued again as
//! the thread leaves the handler — after a checkpoint without a kill as after a restart:
//! to the thread itself (`rt_tgsigqueueinfo`), or to the process by the leader
//! (`rt_sigqueueinfo`; the kernel lets a thread keep any `si_code` only in what it sends
//! to itself, so each queues its own). Order is kept; real-time signals keep their
//! values and count. Everything here runs inside a signal handler: raw system calls, no
//! allocation.

use crate::sys;

/// Signals kept per thread, and for the process (more stay in the kernel: kept without
/// a kill, lost by a restart).
const PER_THREAD: usize = 16;
const SHARED: usize = 32;

/// A `siginfo_t` (128 bytes).
type Info = [u64; 16];

/// Signals taken from one thread (or the process).
#[repr(C)]
pub struct Taken<const N: usize> {
    n: usize,
    infos: [Info; N],
}

pub type ThreadSignals = Taken<PER_THREAD>;
pub type ProcessSignals = Taken<SHARED>;

impl<const N: usize> Taken<N> {
    pub const EMPTY: Self = Taken {
        n: 0,
        infos: [[0; 16]; N],
    };
}

const SYS_RT_SIGTIMEDWAIT: usize = 128;
const SYS_RT_SIGQUEUEINFO: usize = 129;
const SYS_RT_TGSIGQUEUEINFO: usize = 297;

/// The pending-signal mask `field` ("SigPnd:" or "ShdPnd:") of this thread's status.
fn pending_mask(field: &[u8]) -> u64 {
    let Ok(fd) = sys::open_readonly(c"/proc/thread-self/status") else {
        return 0;
    };
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        match sys::read(fd, &mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    sys::close(fd);
    let text = &buf[..len];
    let Some(at) = text.windows(field.len()).position(|w| w == field) else {
        return 0;
    };
    let mut v: u64 = 0;
    for &c in text[at + field.len()..]
        .iter()
        .skip_while(|c| **c == b'\t' || **c == b' ')
    {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => break,
        };
        v = (v << 4) | d as u64;
    }
    v
}

/// Signals never taken: the runtime's own stop signal, SIGKILL, SIGSTOP.
fn never(ckpt_signal: i32) -> u64 {
    let bit = |s: i32| 1u64 << (s - 1);
    bit(ckpt_signal) | bit(libc::SIGKILL) | bit(libc::SIGSTOP)
}

/// Takes the pending signals `field` lists into `into` (appending).
fn take<const N: usize>(into: &mut Taken<N>, field: &[u8], ckpt_signal: i32) {
    loop {
        let mask = pending_mask(field) & !never(ckpt_signal);
        if mask == 0 || into.n >= N {
            return;
        }
        let ts = [0i64; 2];
        let mut info: Info = [0; 16];
        // SAFETY: rt_sigtimedwait with a zero timeout on a valid set, info and timespec.
        let sig = unsafe {
            sys::syscall6(
                SYS_RT_SIGTIMEDWAIT,
                &mask as *const u64 as usize,
                info.as_mut_ptr() as usize,
                ts.as_ptr() as usize,
                8,
                0,
                0,
            )
        };
        if sig <= 0 {
            return;
        }
        into.infos[into.n] = info;
        into.n += 1;
    }
}

/// In the checkpoint handler, before the thread parks: takes its pending signals (and the
/// process's, when it is the leader).
pub fn take_pending(own: &mut ThreadSignals, process: Option<&mut ProcessSignals>, ckpt: i32) {
    own.n = 0;
    take(own, b"SigPnd:", ckpt);
    if let Some(p) = process {
        p.n = 0;
        take(p, b"ShdPnd:", ckpt);
    }
}

/// As the thread leaves the checkpoint handler: queues them again, in order.
pub fn queue_again(own: &mut ThreadSignals, process: Option<&mut ProcessSignals>) {
    let (pid, tid) = (sys::getpid(), sys::gettid());
    if let Some(p) = process {
        for info in &p.infos[..p.n] {
            // SAFETY: rt_sigqueueinfo to this process from its leader, with a saved
            // siginfo (its first int is the signal number).
            unsafe {
                sys::syscall6(
                    SYS_RT_SIGQUEUEINFO,
                    pid as usize,
                    (info[0] & 0xffff_ffff) as usize,
                    info.as_ptr() as usize,
                    0,
                    0,
                    0,
                )
            };
        }
        p.n = 0;
    }
    for info in &own.infos[..own.n] {
        // SAFETY: rt_tgsigqueueinfo to this very thread with a saved siginfo.
        unsafe {
            sys::syscall6(
                SYS_RT_TGSIGQUEUEINFO,
                pid as usize,
                tid as usize,
                (info[0] & 0xffff_ffff) as usize,
                info.as_ptr() as usize,
                0,
                0,
            )
        };
    }
    own.n = 0;
}
