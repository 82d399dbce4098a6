//! The first stage's raw memory and signal operations (the only `unsafe` in the first
//! stage besides loading the final stage, see `loader.rs`).

use std::io;

pub fn errno() -> io::Error {
    io::Error::last_os_error()
}

/// Maps `len` bytes at exactly `addr` without replacing anything (`MAP_FIXED_NOREPLACE`).
pub fn map_fixed(
    addr: u64,
    len: u64,
    prot: i32,
    flags: i32,
    fd: i32,
    off: u64,
) -> Result<(), io::Error> {
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; it fails instead.
    let r = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len as usize,
            prot,
            flags | libc::MAP_FIXED_NOREPLACE,
            fd,
            off as libc::off_t,
        )
    };
    if r == libc::MAP_FAILED {
        return Err(errno());
    }
    if r as u64 != addr {
        // Old kernels ignore the flag and return another address: undo and report.
        // SAFETY: unmapping the mapping we just made.
        unsafe { libc::munmap(r, len as usize) };
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    Ok(())
}

pub fn map_anywhere(len: u64, prot: i32) -> Result<u64, io::Error> {
    // SAFETY: a fresh anonymous mapping at a kernel-chosen free address.
    let r = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            len as usize,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if r == libc::MAP_FAILED {
        return Err(errno());
    }
    Ok(r as u64)
}

/// # Safety
/// The range must be one of the restarter's own mappings that nothing references.
pub unsafe fn protect(addr: u64, len: u64, prot: i32) -> Result<(), io::Error> {
    // SAFETY: guaranteed by the caller.
    if unsafe { libc::mprotect(addr as *mut libc::c_void, len as usize, prot) } != 0 {
        return Err(errno());
    }
    Ok(())
}

/// A mutable view of memory the restarter mapped itself at `addr`.
///
/// # Safety
/// `[addr, addr+len)` must be mapped writable by the restarter and not aliased.
pub unsafe fn slice_mut<'a>(addr: u64, len: u64) -> &'a mut [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len as usize) }
}

/// A view of readable memory of this process (e.g. our own `[vdso]`).
///
/// # Safety
/// `[addr, addr+len)` must be mapped readable for the life of the slice.
pub unsafe fn slice<'a>(addr: u64, len: u64) -> &'a [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) }
}

pub fn block_all_signals() {
    // SAFETY: filling and installing a valid sigset.
    unsafe {
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::sigprocmask(libc::SIG_BLOCK, &set, core::ptr::null_mut());
    }
}

extern "C" {
    // glibc ≥ 2.35: this thread's `struct rseq`, relative to the thread pointer.
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

const RSEQ_SIG: u32 = 0x5305_3053;
const RSEQ_FLAG_UNREGISTER: i32 = 1;

/// Unregisters glibc's rseq area of this thread. The area lives in the first stage's
/// TLS, which the final stage unmaps; the kernel would otherwise kill the process when
/// it next updates the area.
pub fn unregister_rseq() {
    // SAFETY: reads glibc's exported constants; pthread_self is the thread pointer on x86_64.
    let (off, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return;
    }
    // SAFETY: pthread_self() returns this thread's TCB address (the thread pointer).
    let tp = unsafe { libc::pthread_self() } as isize;
    // SAFETY: unregistering exactly the area glibc registered for this thread.
    // glibc registers at least 32 bytes (the original `struct rseq`), whatever __rseq_size says.
    unsafe {
        libc::syscall(
            libc::SYS_rseq,
            tp + off,
            size.max(32),
            RSEQ_FLAG_UNREGISTER,
            RSEQ_SIG,
        )
    };
}

/// Ends this process with SIGKILL (an abnormal end a launcher notices).
pub fn kill_self() -> ! {
    // SAFETY: raising SIGKILL on ourselves.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL returned")
}
