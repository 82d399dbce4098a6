//! Raw system calls used by the runtime where libc would allocate, take a lock, or is
//! not available for the call (robust lists, `arch_prctl`, `getdents64`, futexes).
//! Every function here is a thin, typed wrapper; the checkpoint logic above stays safe.

use core::arch::asm;

pub const SYS_READ: usize = 0;
pub const SYS_WRITE: usize = 1;
pub const SYS_OPEN: usize = 2;
pub const SYS_CLOSE: usize = 3;
pub const SYS_MMAP: usize = 9;
pub const SYS_MPROTECT: usize = 10;
pub const SYS_MUNMAP: usize = 11;
pub const SYS_BRK: usize = 12;
pub const SYS_RT_SIGACTION: usize = 13;
pub const SYS_RT_SIGPROCMASK: usize = 14;
pub const SYS_PREAD64: usize = 17;
pub const SYS_SIGALTSTACK: usize = 131;
pub const SYS_PRCTL: usize = 157;
pub const SYS_ARCH_PRCTL: usize = 158;
pub const SYS_GETTID: usize = 186;
pub const SYS_FUTEX: usize = 202;
pub const SYS_GETDENTS64: usize = 217;
pub const SYS_TGKILL: usize = 234;
pub const SYS_GET_ROBUST_LIST: usize = 274;
pub const SYS_GETPID: usize = 39;

/// # Safety
/// The caller must pass arguments valid for syscall `nr`.
#[inline(always)]
pub unsafe fn syscall6(
    nr: usize,
    a: usize,
    b: usize,
    c: usize,
    d: usize,
    e: usize,
    f: usize,
) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 Linux syscall convention; rcx and r11 are clobbered by `syscall`.
    unsafe {
        asm!("syscall", inlateout("rax") nr as isize => ret, in("rdi") a, in("rsi") b, in("rdx") c,
             in("r10") d, in("r8") e, in("r9") f, lateout("rcx") _, lateout("r11") _,
             options(nostack));
    }
    ret
}

/// Result of a raw syscall: `Err(errno)` for -4095..-1.
fn check(r: isize) -> Result<usize, i32> {
    if (-4095..0).contains(&r) {
        Err((-r) as i32)
    } else {
        Ok(r as usize)
    }
}

pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments.
    unsafe { syscall6(SYS_GETTID, 0, 0, 0, 0, 0, 0) as i32 }
}

const SYS_PERSONALITY: usize = 135;

/// Sets the calling thread's personality (a per-thread property the kernel copies to
/// new threads); `persona` as `personality(2)` takes it. 0xffffffff only queries.
/// Returns the previous one.
pub fn personality(persona: u32) -> u32 {
    // SAFETY: personality takes one integer argument.
    unsafe { syscall6(SYS_PERSONALITY, persona as usize, 0, 0, 0, 0, 0) as u32 }
}

const SYS_SCHED_SETAFFINITY: usize = 203;
const SYS_SCHED_GETAFFINITY: usize = 204;

/// The calling thread's CPU affinity mask (up to 1,024 CPUs); `None` if it cannot be read.
pub fn affinity() -> Option<[u64; 16]> {
    let mut mask = [0u64; 16];
    // SAFETY: sched_getaffinity writes at most 128 bytes into `mask`.
    let r = unsafe {
        syscall6(
            SYS_SCHED_GETAFFINITY,
            0,
            core::mem::size_of_val(&mask),
            mask.as_mut_ptr() as usize,
            0,
            0,
            0,
        )
    };
    (r > 0).then_some(mask)
}

/// Sets the calling thread's CPU affinity; false if the kernel refused (no CPU of the
/// mask here, or a cpuset that excludes them).
pub fn set_affinity(mask: &[u64; 16]) -> bool {
    // SAFETY: sched_setaffinity reads 128 bytes of `mask`.
    unsafe {
        syscall6(
            SYS_SCHED_SETAFFINITY,
            0,
            core::mem::size_of_val(mask),
            mask.as_ptr() as usize,
            0,
            0,
            0,
        ) == 0
    }
}

/// The calling thread's name (`comm`, 16 bytes with its NUL).
pub fn thread_name() -> [u8; 16] {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes into `name`.
    unsafe {
        syscall6(
            SYS_PRCTL,
            libc::PR_GET_NAME as usize,
            name.as_mut_ptr() as usize,
            0,
            0,
            0,
            0,
        )
    };
    name
}

/// Names the calling thread (`comm`); `name` is NUL-terminated within 16 bytes.
pub fn set_thread_name(name: &[u8; 16]) {
    if name[0] == 0 {
        return;
    }
    // SAFETY: PR_SET_NAME reads at most 16 bytes of `name`.
    unsafe {
        syscall6(
            SYS_PRCTL,
            libc::PR_SET_NAME as usize,
            name.as_ptr() as usize,
            0,
            0,
            0,
            0,
        )
    };
}

pub fn getpid() -> i32 {
    // SAFETY: getpid takes no arguments.
    unsafe { syscall6(SYS_GETPID, 0, 0, 0, 0, 0, 0) as i32 }
}

pub fn getppid() -> i32 {
    // SAFETY: getppid takes no arguments.
    unsafe { syscall6(libc::SYS_getppid as usize, 0, 0, 0, 0, 0, 0) as i32 }
}

pub fn tgkill(pid: i32, tid: i32, sig: i32) -> Result<(), i32> {
    // SAFETY: plain integer arguments.
    check(unsafe {
        syscall6(
            SYS_TGKILL,
            pid as usize,
            tid as usize,
            sig as usize,
            0,
            0,
            0,
        )
    })
    .map(|_| ())
}

const ARCH_GET_FS: usize = 0x1003;

pub fn fs_base() -> u64 {
    let mut v: u64 = 0;
    // SAFETY: ARCH_GET_FS writes one u64 to the pointer we pass.
    unsafe {
        syscall6(
            SYS_ARCH_PRCTL,
            ARCH_GET_FS,
            &mut v as *mut u64 as usize,
            0,
            0,
            0,
            0,
        )
    };
    v
}

const PR_GET_TID_ADDRESS: usize = 40;

/// The address the kernel clears when this thread exits (glibc's `&pthread_self()->tid`).
pub fn tid_address() -> u64 {
    let mut p: u64 = 0;
    // SAFETY: PR_GET_TID_ADDRESS stores one pointer-sized value at the address we pass.
    unsafe {
        syscall6(
            SYS_PRCTL,
            PR_GET_TID_ADDRESS,
            &mut p as *mut u64 as usize,
            0,
            0,
            0,
            0,
        )
    };
    p
}

/// This thread's robust futex list head and length.
pub fn robust_list() -> (u64, u64) {
    let mut head: u64 = 0;
    let mut len: u64 = 0;
    // SAFETY: pid 0 = this thread; the kernel writes a pointer and a size_t.
    unsafe {
        syscall6(
            SYS_GET_ROBUST_LIST,
            0,
            &mut head as *mut u64 as usize,
            &mut len as *mut u64 as usize,
            0,
            0,
            0,
        )
    };
    (head, len)
}

/// This thread's blocked-signal mask (bit n-1 = signal n).
pub fn sigmask() -> u64 {
    let mut old: u64 = 0;
    // SAFETY: a NULL new set only queries; the kernel writes 8 bytes.
    unsafe {
        syscall6(
            SYS_RT_SIGPROCMASK,
            0,
            0,
            &mut old as *mut u64 as usize,
            8,
            0,
            0,
        )
    };
    old
}

/// Sets this thread's blocked-signal mask; returns the one before.
pub fn set_sigmask(mask: u64) -> u64 {
    let mut old: u64 = 0;
    // SAFETY: SIG_SETMASK (2) with valid 8-byte sets.
    unsafe {
        syscall6(
            SYS_RT_SIGPROCMASK,
            2,
            &mask as *const u64 as usize,
            &mut old as *mut u64 as usize,
            8,
            0,
            0,
        )
    };
    old
}

/// Starts a runtime thread that blocks every signal from its first instruction: a new
/// thread inherits its creator's mask, and a signal the program sends to its process in
/// the instant before the thread blocks everything itself would run the program's
/// handler on the runtime's thread (found: the pending signals a program raised at
/// start were taken by the just-made checkpoint thread, so nothing was pending to keep).
/// The caller's mask is blocked only around the `clone`.
pub fn spawn_blocked<F, T>(
    builder: std::thread::Builder,
    f: F,
) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let old = set_sigmask(!0);
    let spawned = builder.spawn(f);
    set_sigmask(old);
    spawned
}

/// The kernel's `struct sigaction` for x86_64.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct KSigAction {
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

pub fn sigaction_query(sig: i32) -> Option<KSigAction> {
    let mut old = KSigAction::default();
    // SAFETY: a NULL new action only queries; `old` has the kernel layout.
    let r = unsafe {
        syscall6(
            SYS_RT_SIGACTION,
            sig as usize,
            0,
            &mut old as *mut KSigAction as usize,
            8,
            0,
            0,
        )
    };
    check(r).ok().map(|_| old)
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct StackT {
    pub sp: u64,
    pub flags: i32,
    pub size: u64,
}

pub fn altstack() -> StackT {
    let mut old = StackT::default();
    // SAFETY: a NULL new stack only queries; `old` has the kernel's stack_t layout.
    unsafe {
        syscall6(
            SYS_SIGALTSTACK,
            0,
            &mut old as *mut StackT as usize,
            0,
            0,
            0,
            0,
        )
    };
    old
}

const FUTEX_WAIT_PRIVATE: usize = 128;
const FUTEX_WAKE_PRIVATE: usize = 129;

/// Waits while `*word == val`, at most `timeout_ms` (spurious wake-ups are possible).
pub fn futex_wait(word: &core::sync::atomic::AtomicU32, val: u32, timeout_ms: u64) {
    let ts = libc::timespec {
        tv_sec: (timeout_ms / 1000) as libc::time_t,
        tv_nsec: ((timeout_ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: `word` is a valid aligned u32 for the duration of the call; `ts` is valid.
    unsafe {
        syscall6(
            SYS_FUTEX,
            word.as_ptr() as usize,
            FUTEX_WAIT_PRIVATE,
            val as usize,
            &ts as *const libc::timespec as usize,
            0,
            0,
        )
    };
}

pub fn futex_wake_all(word: &core::sync::atomic::AtomicU32) {
    // SAFETY: waking has no memory effects beyond the futex word's address.
    unsafe {
        syscall6(
            SYS_FUTEX,
            word.as_ptr() as usize,
            FUTEX_WAKE_PRIVATE,
            i32::MAX as usize,
            0,
            0,
            0,
        )
    };
}

pub fn current_brk() -> u64 {
    // SAFETY: brk(0) never changes the break; it returns the current one.
    unsafe { syscall6(SYS_BRK, 0, 0, 0, 0, 0, 0) as u64 }
}

/// An anonymous private mapping owned by the runtime (never in an image).
pub fn map_anon(len: usize) -> Result<*mut u8, i32> {
    // SAFETY: a fresh anonymous mapping does not alias anything.
    let r = unsafe {
        syscall6(
            SYS_MMAP,
            0,
            len,
            (libc::PROT_READ | libc::PROT_WRITE) as usize,
            (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE) as usize,
            usize::MAX,
            0,
        )
    };
    check(r).map(|a| a as *mut u8)
}

/// # Safety
/// `[addr, addr+len)` must be a mapping the caller owns and no longer references.
pub unsafe fn unmap(addr: *mut u8, len: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { syscall6(SYS_MUNMAP, addr as usize, len, 0, 0, 0, 0) };
}

/// # Safety
/// Changing protections must not break code that is running (the checkpoint thread only
/// adds PROT_READ to stopped memory and puts the original back).
pub unsafe fn mprotect(addr: u64, len: u64, prot: i32) -> Result<(), i32> {
    // SAFETY: guaranteed by the caller.
    check(unsafe {
        syscall6(
            SYS_MPROTECT,
            addr as usize,
            len as usize,
            prot as usize,
            0,
            0,
            0,
        )
    })
    .map(|_| ())
}

pub fn open_readonly(path: &core::ffi::CStr) -> Result<i32, i32> {
    // SAFETY: `path` is NUL-terminated.
    check(unsafe {
        syscall6(
            SYS_OPEN,
            path.as_ptr() as usize,
            (libc::O_RDONLY | libc::O_CLOEXEC) as usize,
            0,
            0,
            0,
            0,
        )
    })
    .map(|fd| fd as i32)
}

pub fn close(fd: i32) {
    // SAFETY: closing a descriptor the caller owns.
    unsafe { syscall6(SYS_CLOSE, fd as usize, 0, 0, 0, 0, 0) };
}

pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: `buf` is valid for writes of its length.
    check(unsafe {
        syscall6(
            SYS_READ,
            fd as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
            0,
            0,
            0,
        )
    })
}

pub fn pread(fd: i32, buf: &mut [u8], off: u64) -> Result<usize, i32> {
    // SAFETY: `buf` is valid for writes of its length.
    check(unsafe {
        syscall6(
            SYS_PREAD64,
            fd as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
            off as usize,
            0,
            0,
        )
    })
}

/// Writes from raw memory (the process's own regions).
///
/// # Safety
/// `[addr, addr+len)` must be mapped readable or the call fails with EFAULT.
pub unsafe fn write_raw(fd: i32, addr: u64, len: usize) -> Result<usize, i32> {
    // SAFETY: the kernel validates the user range; guaranteed readable by the caller.
    check(unsafe { syscall6(SYS_WRITE, fd as usize, addr as usize, len, 0, 0, 0) })
}

/// Reads a whole small file (e.g. under /proc) into `buf`; returns the bytes read.
pub fn read_file(path: &core::ffi::CStr, buf: &mut [u8]) -> Result<usize, i32> {
    let fd = open_readonly(path)?;
    let mut n = 0;
    let res = loop {
        if n == buf.len() {
            break Err(libc::ENOBUFS);
        }
        match read(fd, &mut buf[n..]) {
            Ok(0) => break Ok(n),
            Ok(k) => n += k,
            Err(libc::EINTR) => {}
            Err(e) => break Err(e),
        }
    };
    close(fd);
    res
}

/// Numeric entries of a /proc directory (tasks, fds), without libc's `opendir` (which
/// allocates through the application's malloc).
pub fn list_numeric_dir(path: &core::ffi::CStr, out: &mut [i32]) -> Result<usize, i32> {
    let fd = check(unsafe_open_dir(path))? as i32;
    let mut buf = [0u8; 4096];
    let mut n = 0;
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe {
            syscall6(
                SYS_GETDENTS64,
                fd as usize,
                buf.as_mut_ptr() as usize,
                buf.len(),
                0,
                0,
                0,
            )
        };
        let got = match check(r) {
            Ok(0) => break,
            Ok(g) => g,
            Err(e) => {
                close(fd);
                return Err(e);
            }
        };
        let mut off = 0;
        while off < got {
            // linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name...
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            let name = &buf[off + 19..off + reclen];
            let mut v: i64 = 0;
            let mut digits = 0;
            for &c in name {
                if c == 0 {
                    break;
                }
                if !c.is_ascii_digit() {
                    digits = 0;
                    break;
                }
                v = v * 10 + (c - b'0') as i64;
                digits += 1;
            }
            if digits > 0 {
                if n == out.len() {
                    close(fd);
                    return Err(libc::ENOBUFS);
                }
                out[n] = v as i32;
                n += 1;
            }
            off += reclen;
        }
    }
    close(fd);
    Ok(n)
}

fn unsafe_open_dir(path: &core::ffi::CStr) -> isize {
    // SAFETY: `path` is NUL-terminated.
    unsafe {
        syscall6(
            SYS_OPEN,
            path.as_ptr() as usize,
            (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as usize,
            0,
            0,
            0,
            0,
        )
    }
}

const SYS_PIDFD_OPEN: usize = 434;
const SYS_CLOSE_RANGE: usize = 436;
const SYS_PIDFD_GETFD: usize = 438;
const CLOSE_RANGE_UNSHARE: usize = 2;

/// Gives the calling thread a descriptor table of its own, holding only copies of 0–2
/// (`close_range(3, ~0, CLOSE_RANGE_UNSHARE)`): the application's table then has one
/// user again, and the kernel's single-user fast paths apply to its `read`/`write`
/// (docs/process-state.md, "Runtime cost"). False if the kernel refused (before 5.9).
pub fn private_fd_table() -> bool {
    // SAFETY: close_range takes three integers; it only closes this thread's copies.
    unsafe {
        syscall6(
            SYS_CLOSE_RANGE,
            3,
            u32::MAX as usize,
            CLOSE_RANGE_UNSHARE,
            0,
            0,
            0,
        ) == 0
    }
}

/// A descriptor of this thread's table for the application's descriptor `fd` — the
/// table of the thread-group leader — by `pidfd_getfd` (same open file description,
/// close-on-exec); the errno if it has none.
pub fn app_fd(fd: i32) -> Result<i32, i32> {
    // SAFETY: pidfd_open takes a pid and flags.
    let pidfd = unsafe { syscall6(SYS_PIDFD_OPEN, getpid() as usize, 0, 0, 0, 0, 0) };
    if pidfd < 0 {
        return Err(-pidfd as i32);
    }
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number and flags (0).
    let r = unsafe { syscall6(SYS_PIDFD_GETFD, pidfd as usize, fd as usize, 0, 0, 0, 0) };
    close(pidfd as i32);
    if r < 0 {
        Err(-r as i32)
    } else {
        Ok(r as i32)
    }
}
