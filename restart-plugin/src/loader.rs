//! Loads the final restart stage (an embedded freestanding static-pie ELF) into a hole of
//! the address space chosen by the kernel — necessarily outside every image range, which
//! are all mapped by then — applies its relative relocations, and jumps into it.
//!
//! Area layout: `[restorer segments][Plan][one small stack per thread][main stack]`.

use crate::sys;
use goblin::elf::{program_header::PT_LOAD, reloc::R_X86_64_RELATIVE, Elf};
use mana_restart_core::plan::Plan;

static RESTORER_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/mana_restorer"));

const THREAD_STACK: u64 = 32 << 10;
const MAIN_STACK: u64 = 256 << 10;
const PAGE: u64 = 4096;

pub struct Restorer {
    pub base: u64,
    pub len: u64,
    entry: u64,
    plan_addr: u64,
    thread_stacks: u64,
    main_stack_top: u64,
}

fn align_up(v: u64) -> u64 {
    (v + PAGE - 1) & !(PAGE - 1)
}

impl Restorer {
    pub fn load(nthreads: usize) -> Result<Restorer, String> {
        let elf =
            Elf::parse(RESTORER_ELF).map_err(|e| format!("embedded restorer is not ELF: {e}"))?;
        let span = align_up(
            elf.program_headers
                .iter()
                .filter(|p| p.p_type == PT_LOAD)
                .map(|p| p.p_vaddr + p.p_memsz)
                .max()
                .ok_or("embedded restorer has no segments")?,
        );
        let plan_len = align_up(core::mem::size_of::<Plan>() as u64);
        let len = span + plan_len + nthreads as u64 * THREAD_STACK + MAIN_STACK;
        let base = sys::map_anywhere(len, libc::PROT_READ | libc::PROT_WRITE)
            .map_err(|e| format!("cannot map the final restart stage: {e}"))?;
        // SAFETY: the area was just mapped writable and is ours alone.
        let area = unsafe { sys::slice_mut(base, len) };
        for p in elf.program_headers.iter().filter(|p| p.p_type == PT_LOAD) {
            let (off, fsz, va) = (p.p_offset as usize, p.p_filesz as usize, p.p_vaddr as usize);
            area[va..va + fsz].copy_from_slice(&RESTORER_ELF[off..off + fsz]);
        }
        for r in elf.dynrelas.iter() {
            if r.r_type != R_X86_64_RELATIVE {
                return Err(format!(
                    "embedded restorer has an unsupported relocation type {}",
                    r.r_type
                ));
            }
            let v = base.wrapping_add(r.r_addend.unwrap_or(0) as u64);
            let at = r.r_offset as usize;
            area[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        for p in elf
            .program_headers
            .iter()
            .filter(|p| p.p_type == PT_LOAD && p.is_executable())
        {
            let start = p.p_vaddr & !(PAGE - 1);
            let end = align_up(p.p_vaddr + p.p_memsz);
            // SAFETY: a range of the area we own; code pages become read+execute.
            unsafe { sys::protect(base + start, end - start, libc::PROT_READ | libc::PROT_EXEC) }
                .map_err(|e| format!("cannot make the final stage executable: {e}"))?;
        }
        let plan_addr = base + span;
        let thread_stacks = plan_addr + plan_len;
        Ok(Restorer {
            base,
            len,
            entry: base + elf.entry,
            plan_addr,
            thread_stacks,
            main_stack_top: base + len - 64,
        })
    }

    pub fn plan(&mut self) -> &mut Plan {
        // SAFETY: `plan_addr` is inside our zero-filled writable area, aligned, and
        // `Plan` is plain data for which all-zero is valid.
        unsafe { &mut *(self.plan_addr as *mut Plan) }
    }

    /// Top of the temporary stack for re-created thread `i` (16-byte aligned).
    pub fn thread_stack_top(&self, i: usize) -> u64 {
        self.thread_stacks + (i as u64 + 1) * THREAD_STACK - 64
    }

    /// Enters the final stage. All signals must be blocked.
    ///
    /// # Safety
    /// The plan must be complete; nothing of the first stage may be needed afterwards
    /// (the final stage unmaps it).
    pub unsafe fn enter(&self) -> ! {
        // SAFETY: switches to the final stage's own stack and calls its entry with the
        // plan; the entry never returns.
        unsafe {
            core::arch::asm!(
                "mov rsp, {stack}",
                "and rsp, -16",
                "call {entry}",
                "ud2",
                stack = in(reg) self.main_stack_top,
                entry = in(reg) self.entry,
                in("rdi") self.plan_addr,
                options(noreturn),
            )
        }
    }
}
