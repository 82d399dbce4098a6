//! The plan handed from the first stage (`mana_restart`, std) to the final stage (the
//! position-independent restorer): plain `repr(C)` data with fixed capacities, no
//! pointers into first-stage memory (which the final stage unmaps). This file is compiled
//! into both programs.

pub const MAX_UNMAP: usize = 1024;
pub const MAX_THREADS: usize = 1024;
pub const MAX_SIGS: usize = 64;
pub const MAX_KEEP_FDS: usize = 1024;
pub const MAX_VDSO_MOVES: usize = 8;
pub const MAX_AUXV: usize = 128;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Range {
    pub start: u64,
    pub len: u64,
}

/// Callee-saved registers; the same layout as `upper-half/src/context.rs`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Ctx {
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

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PlanThread {
    pub ctx: Ctx,
    pub fs_base: u64,
    pub tid_address: u64,
    pub robust_head: u64,
    pub robust_len: u64,
    pub rseq_addr: u64,
    pub rseq_len: u32,
    pub rseq_sig: u32,
    pub sigmask: u64,
    /// `ss_flags` of the alternate stack; `SS_DISABLE` (2) when there is none.
    pub alt_flags: i64,
    pub alt_sp: u64,
    pub alt_size: u64,
    /// Top of a small stack in the restorer area, used between `clone` and the jump.
    pub stack_top: u64,
    /// The thread id to create the thread with (`clone3` `set_tid`); 0: any.
    pub set_tid: i32,
    /// Non-zero: `capset` to `caps` before resuming (a user namespace gave the restarter
    /// capabilities the process did not have).
    pub drop_caps: u32,
    /// `capset` v3 data: effective, permitted, inheritable (bits 0–31), then bits 32–63.
    pub caps: [u32; 6],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct SigAct {
    pub signo: u64,
    pub handler: u64,
    pub flags: u64,
    pub restorer: u64,
    pub mask: u64,
}

/// `struct prctl_mm_map` of the kernel.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct PrctlMmMap {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub auxv: u64,
    pub auxv_size: u32,
    pub exe_fd: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct VdsoMove {
    pub src: u64,
    pub dst: u64,
    pub len: u64,
}

#[repr(C)]
pub struct Plan {
    pub n_unmap: u64,
    pub unmap: [Range; MAX_UNMAP],
    pub n_vdso_moves: u64,
    pub vdso_moves: [VdsoMove; MAX_VDSO_MOVES],
    /// Non-zero: call `prctl(PR_SET_MM, PR_SET_MM_MAP, &mm)`.
    pub set_mm: u64,
    pub mm: PrctlMmMap,
    pub auxv: [u64; MAX_AUXV],
    pub n_sigs: u64,
    pub sigs: [SigAct; MAX_SIGS],
    /// Sorted descriptors to keep open; every other descriptor is closed.
    pub n_keep_fds: u64,
    pub keep_fds: [i32; MAX_KEEP_FDS],
    pub n_threads: u64,
    /// Index of the thread the calling (leader) thread becomes.
    pub main_index: u64,
    pub threads: [PlanThread; MAX_THREADS],
}

/// The kernel's `struct clone_args` (v2, 88 bytes), for `clone3`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}
