//! Saving a thread's resumable CPU state.
//!
//! `mana_save_and_call(ctx, f, arg)` stores the callee-saved registers, the stack pointer
//! and the return address into `ctx`, then calls `f(arg)` on a deeper frame and returns 0.
//! The restorer resumes a thread by loading `ctx` and jumping to the return address with
//! `rax = 1`: to the caller it looks as if `mana_save_and_call` returned 1. Because the
//! work done after the save (`f`) runs *below* the caller's frame, the caller's frame is
//! exactly as it was at the save — unlike `setjmp`, no local of the caller can have
//! changed between the save and the image write.
//!
//! Layout (shared with the restorer's `plan.rs`): rbx 0, rbp 8, r12 16, r13 24, r14 32,
//! r15 40, rsp 48, rip 56, mxcsr 64 (u32), x87 control word 68 (u16).

use core::ffi::c_void;

#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct RawContext {
    pub rbx: u64,
    pub rbp: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rsp: u64,
    pub rip: u64,
    pub mxcsr: u32,
    pub fpu_cw: u16,
    pub _pad: u16,
}

impl RawContext {
    pub fn to_image(self) -> mana_image::CpuContext {
        mana_image::CpuContext {
            rbx: self.rbx,
            rbp: self.rbp,
            r12: self.r12,
            r13: self.r13,
            r14: self.r14,
            r15: self.r15,
            rsp: self.rsp,
            rip: self.rip,
            mxcsr: self.mxcsr,
            fpu_cw: self.fpu_cw,
        }
    }
}

core::arch::global_asm!(
    ".globl mana_save_and_call",
    ".hidden mana_save_and_call",
    ".type mana_save_and_call,@function",
    "mana_save_and_call:",
    "mov [rdi + 0], rbx",
    "mov [rdi + 8], rbp",
    "mov [rdi + 16], r12",
    "mov [rdi + 24], r13",
    "mov [rdi + 32], r14",
    "mov [rdi + 40], r15",
    "lea rax, [rsp + 8]",
    "mov [rdi + 48], rax",
    "mov rax, [rsp]",
    "mov [rdi + 56], rax",
    "stmxcsr [rdi + 64]",
    "fnstcw [rdi + 68]",
    // At entry rsp = 8 (mod 16); one push realigns it for the call.
    "push rbx",
    "mov rdi, rdx",
    "call rsi",
    "pop rbx",
    "xor eax, eax",
    "ret",
    ".size mana_save_and_call, . - mana_save_and_call",
);

extern "C" {
    fn mana_save_and_call(
        ctx: *mut RawContext,
        f: extern "C" fn(*mut c_void),
        arg: *mut c_void,
    ) -> u64;
}

/// Saves the calling thread's context into `ctx` and runs `f(arg)`. Returns `false` after
/// `f` returned normally, `true` when the thread was resumed by the restarter.
///
/// # Safety
/// `ctx` must stay valid and be part of the saved memory; `f` must not write into the
/// caller's stack frame (pass it heap or static state only).
pub unsafe fn save_and_call(
    ctx: *mut RawContext,
    f: extern "C" fn(*mut c_void),
    arg: *mut c_void,
) -> bool {
    // SAFETY: the assembly follows the SysV ABI (callee-saved registers preserved on the
    // normal path; on the restart path the restorer loads the same saved values).
    unsafe { mana_save_and_call(ctx, f, arg) != 0 }
}
