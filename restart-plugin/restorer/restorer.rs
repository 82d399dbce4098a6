//! MANA-rs final restart stage.
//!
//! THIS CODE RUNS AFTER THE RESTARTER HAS UNMAPPED ITSELF. It is a freestanding,
//! position-independent blob: no allocator, no libc, no TLS, no globals with
//! relocations it did not get, no stack canary — raw system calls only. `mana_restart`
//! loads it into a free hole of the address space, applies its relative relocations and
//! calls [`mana_restorer_main`] on a stack inside the blob's area with a [`Plan`].
//! It unmaps the first stage, moves `[vvar]`/`[vdso]`, restores the mm layout, signal
//! dispositions and descriptors, re-creates the threads with `clone` and jumps into each
//! thread's saved context. The restored runtime unmaps this blob afterwards.

#![no_std]
#![no_main]
#![allow(clippy::missing_safety_doc)]

#[path = "../src/plan.rs"]
mod plan;

use core::arch::{asm, global_asm};
use plan::*;

const SYS_WRITE: usize = 1;
const SYS_CLOSE: usize = 3;
const SYS_MUNMAP: usize = 11;
const SYS_RT_SIGACTION: usize = 13;
const SYS_RT_SIGPROCMASK: usize = 14;
const SYS_MREMAP: usize = 25;
const SYS_CAPSET: usize = 126;
const SYS_CLONE3: usize = 435;
const SYS_EXIT_GROUP: usize = 231;
const SYS_SIGALTSTACK: usize = 131;
const SYS_PRCTL: usize = 157;
const SYS_ARCH_PRCTL: usize = 158;
const SYS_GETTID: usize = 186;
const SYS_SET_TID_ADDRESS: usize = 218;
const SYS_SET_ROBUST_LIST: usize = 273;
const SYS_RSEQ: usize = 334;
const SYS_CLOSE_RANGE: usize = 436;

const MREMAP_MAYMOVE: usize = 1;
const MREMAP_FIXED: usize = 2;
const PR_SET_MM: usize = 35;
const PR_SET_MM_MAP: usize = 14;
const ARCH_SET_FS: usize = 0x1002;
const SS_DISABLE: i64 = 2;

const CLONE_VM: usize = 0x100;
const CLONE_FS: usize = 0x200;
const CLONE_FILES: usize = 0x400;
const CLONE_SIGHAND: usize = 0x800;
const CLONE_THREAD: usize = 0x10000;
const CLONE_SYSVSEM: usize = 0x40000;
const CLONE_SETTLS: usize = 0x80000;
const CLONE_PARENT_SETTID: usize = 0x100000;
const CLONE_CHILD_CLEARTID: usize = 0x200000;

#[inline(always)]
unsafe fn sys6(nr: usize, a: usize, b: usize, c: usize, d: usize, e: usize, f: usize) -> isize {
    let ret: isize;
    // SAFETY: x86_64 Linux syscall convention; rcx/r11 clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") nr as isize => ret, in("rdi") a, in("rsi") b, in("rdx") c,
             in("r10") d, in("r8") e, in("r9") f, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

fn write_err(msg: &[u8]) {
    // SAFETY: writing a static message to stderr.
    unsafe { sys6(SYS_WRITE, 2, msg.as_ptr() as usize, msg.len(), 0, 0, 0) };
}

fn die(msg: &[u8]) -> ! {
    write_err(b"mana_restart: final stage: ");
    write_err(msg);
    write_err(b"\n");
    loop {
        // SAFETY: ends the process.
        unsafe { sys6(SYS_EXIT_GROUP, 1, 0, 0, 0, 0, 0) };
    }
}

/// Restores the per-thread kernel state of the calling thread, then jumps into `t.ctx`.
unsafe fn become_thread(t: &PlanThread) -> ! {
    // SAFETY (whole block): plain syscalls on values recorded at checkpoint time.
    unsafe {
        if t.robust_head != 0 {
            sys6(
                SYS_SET_ROBUST_LIST,
                t.robust_head as usize,
                t.robust_len as usize,
                0,
                0,
                0,
                0,
            );
        }
        if t.rseq_addr != 0 {
            sys6(
                SYS_RSEQ,
                t.rseq_addr as usize,
                t.rseq_len as usize,
                0,
                t.rseq_sig as usize,
                0,
                0,
            );
        }
        if t.alt_flags & SS_DISABLE == 0 {
            let ss: [u64; 3] = [t.alt_sp, t.alt_flags as u64, t.alt_size];
            sys6(SYS_SIGALTSTACK, ss.as_ptr() as usize, 0, 0, 0, 0, 0);
        }
        if t.drop_caps != 0 {
            // The capabilities the process had (a user namespace gave the restarter all).
            let hdr: [u32; 2] = [0x2008_0522, 0];
            if sys6(SYS_CAPSET, hdr.as_ptr() as usize, t.caps.as_ptr() as usize, 0, 0, 0, 0) != 0 {
                die(b"cannot give up the restarter's capabilities");
            }
        }
        let mask = t.sigmask;
        sys6(
            SYS_RT_SIGPROCMASK,
            2,
            &mask as *const u64 as usize,
            0,
            8,
            0,
            0,
        );
        jump_to_context(&t.ctx)
    }
}

global_asm!(
    ".globl mana_jump_to_context",
    ".hidden mana_jump_to_context",
    "mana_jump_to_context:",
    "mov rbx, [rdi + 0]",
    "mov rbp, [rdi + 8]",
    "mov r12, [rdi + 16]",
    "mov r13, [rdi + 24]",
    "mov r14, [rdi + 32]",
    "mov r15, [rdi + 40]",
    "ldmxcsr [rdi + 64]",
    "fldcw [rdi + 68]",
    "mov rsp, [rdi + 48]",
    "mov eax, 1",
    "jmp qword ptr [rdi + 56]",
);

extern "C" {
    fn mana_jump_to_context(ctx: *const Ctx) -> !;
}

unsafe fn jump_to_context(ctx: &Ctx) -> ! {
    // SAFETY: the context was saved by the runtime's mana_save_and_call in restored memory.
    unsafe { mana_jump_to_context(ctx) }
}

extern "C" fn child_entry(t: *const PlanThread) -> ! {
    // SAFETY: `t` points into the plan, which stays mapped until every thread arrived.
    unsafe { become_thread(&*t) }
}

/// Bytes of the thread's temporary stack below `stack_top` handed to `clone3`.
const CLONE_STACK: u64 = 16 << 10;

/// Creates a thread that becomes `t`, with its saved id when `t.set_tid` is set (and the
/// kernel allows it; else with a new one, said on stderr).
unsafe fn spawn(t: &PlanThread) -> isize {
    if t.set_tid != 0 {
        // SAFETY: as below.
        let r = unsafe { clone3(t, t.set_tid) };
        if r >= 0 {
            return r;
        }
        write_err(b"mana_restart: warning: a thread could not get its saved id back\n");
    }
    // SAFETY: as below.
    unsafe { clone3(t, 0) }
}

unsafe fn clone3(t: &PlanThread, tid: i32) -> isize {
    let flags = CLONE_VM
        | CLONE_FS
        | CLONE_FILES
        | CLONE_SIGHAND
        | CLONE_THREAD
        | CLONE_SYSVSEM
        | CLONE_SETTLS
        | CLONE_PARENT_SETTID
        | CLONE_CHILD_CLEARTID;
    let set_tid = [tid];
    let args = CloneArgs {
        flags: flags as u64,
        pidfd: 0,
        child_tid: t.tid_address,
        parent_tid: t.tid_address,
        exit_signal: 0,
        stack: t.stack_top - CLONE_STACK,
        stack_size: CLONE_STACK,
        tls: t.fs_base,
        set_tid: if tid != 0 { set_tid.as_ptr() as u64 } else { 0 },
        set_tid_size: if tid != 0 { 1 } else { 0 },
        cgroup: 0,
    };
    let ret: isize;
    // SAFETY: raw clone3; the child starts on `t.stack_top` (stack + stack_size) and never
    // returns into this frame (it calls child_entry, which jumps into the saved context).
    // Parent and child tid both point at the thread's `struct pthread` tid field, so glibc
    // sees the new tid. `args` is read by the kernel before the call returns.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r9",
            "call {entry}",
            "ud2",
            "2:",
            entry = sym child_entry,
            inlateout("rax") SYS_CLONE3 as isize => ret,
            in("rdi") &args as *const CloneArgs,
            in("rsi") core::mem::size_of::<CloneArgs>(),
            in("r9") t as *const PlanThread,
            lateout("rcx") _, lateout("r11") _,
        );
    }
    ret
}

#[no_mangle]
pub unsafe extern "C" fn mana_restorer_main(plan: *const Plan) -> ! {
    // SAFETY: the first stage passes a fully initialized plan inside this blob's area.
    let p = unsafe { &*plan };
    // SAFETY (whole block): raw syscalls on ranges and values the first stage computed.
    unsafe {
        for r in &p.unmap[..p.n_unmap as usize] {
            sys6(SYS_MUNMAP, r.start as usize, r.len as usize, 0, 0, 0, 0);
        }
        for m in &p.vdso_moves[..p.n_vdso_moves as usize] {
            let r = sys6(
                SYS_MREMAP,
                m.src as usize,
                m.len as usize,
                m.len as usize,
                MREMAP_MAYMOVE | MREMAP_FIXED,
                m.dst as usize,
                0,
            );
            if r as u64 != m.dst {
                die(b"cannot move [vvar]/[vdso] to their saved address");
            }
        }
        if p.set_mm != 0 {
            let mut mm = p.mm;
            let size = core::mem::size_of::<PrctlMmMap>();
            let mut r = sys6(
                SYS_PRCTL,
                PR_SET_MM,
                PR_SET_MM_MAP,
                &mm as *const PrctlMmMap as usize,
                size,
                0,
                0,
            );
            if r != 0 {
                mm.auxv = 0;
                mm.auxv_size = 0;
                r = sys6(
                    SYS_PRCTL,
                    PR_SET_MM,
                    PR_SET_MM_MAP,
                    &mm as *const PrctlMmMap as usize,
                    size,
                    0,
                    0,
                );
            }
            if r != 0 {
                write_err(b"mana_restart: warning: prctl(PR_SET_MM_MAP) failed; brk and /proc/PID/cmdline keep the restarter's values\n");
            }
        }
        for s in &p.sigs[..p.n_sigs as usize] {
            let act: [u64; 4] = [s.handler, s.flags, s.restorer, s.mask];
            sys6(
                SYS_RT_SIGACTION,
                s.signo as usize,
                act.as_ptr() as usize,
                0,
                8,
                0,
                0,
            );
        }
        let mut next: u64 = 0;
        for &fd in &p.keep_fds[..p.n_keep_fds as usize] {
            let fd = fd as u64;
            if fd > next {
                close_range(next, fd - 1);
            }
            next = fd + 1;
        }
        close_range(next, u32::MAX as u64);

        let threads = &p.threads[..p.n_threads as usize];
        for (i, t) in threads.iter().enumerate() {
            if i as u64 != p.main_index && spawn(t) < 0 {
                die(b"clone failed while re-creating a thread");
            }
        }
        let main = &threads[p.main_index as usize];
        let tid = sys6(SYS_GETTID, 0, 0, 0, 0, 0, 0) as i32;
        if main.tid_address != 0 {
            core::ptr::write_volatile(main.tid_address as *mut i32, tid);
            sys6(
                SYS_SET_TID_ADDRESS,
                main.tid_address as usize,
                0,
                0,
                0,
                0,
                0,
            );
        }
        sys6(
            SYS_ARCH_PRCTL,
            ARCH_SET_FS,
            main.fs_base as usize,
            0,
            0,
            0,
            0,
        );
        become_thread(main)
    }
}

unsafe fn close_range(first: u64, last: u64) {
    // SAFETY: closing descriptors the restored process does not own.
    let r = unsafe { sys6(SYS_CLOSE_RANGE, first as usize, last as usize, 0, 0, 0, 0) };
    if r != 0 {
        let mut fd = first;
        while fd <= last && fd < 65536 {
            // SAFETY: as above.
            unsafe { sys6(SYS_CLOSE, fd as usize, 0, 0, 0, 0, 0) };
            fd += 1;
        }
    }
}

// The compiler may emit calls to these; with no libc we provide them.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: rep movsb with caller-guaranteed valid ranges.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack))
    };
    dst
}

#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize) + n {
        // SAFETY: forward copy is safe for these overlaps.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: backward copy with the direction flag, restored afterwards.
    unsafe {
        asm!("std", "rep movsb", "cld", inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _,
             inout("rsi") src.add(n - 1) => _, options(nostack));
    }
    dst
}

#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: rep stosb with a caller-guaranteed valid range.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8, options(nostack))
    };
    dst
}

#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: caller-guaranteed valid ranges.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: forwarded.
    unsafe { memcmp(a, b, n) }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    die(b"internal error (panic)")
}

/// The precompiled `core` references an unwinding personality; nothing here unwinds.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}
