//! Starting the proxy in a second loader world (the ELF-loading layer: `unsafe` lives here).
//!
//! Like the kernel's `execve` of `ld.so ./mana_lower`, but inside the running process:
//! map the system `ld.so` (the proxy's `PT_INTERP`) with our own ELF loader, build a fresh
//! stack (argv, a deliberately built environment, and an auxiliary vector copied from ours
//! with the exec-specific entries rewritten; `AT_RANDOM` is ours, so both worlds share the
//! stack-protector canary and pointer guard), save our context and jump to `ld.so`'s
//! entry. `ld.so` loads the proxy, a second libc and their dependencies, runs their
//! constructors and calls the proxy's `main`, which reports its [`LowerTable`] through a
//! callback that restores our FS base and returns here. The process-wide side effects of
//! starting a libc (clear-tid address, robust list, alternate stack, signal mask and
//! handlers) are undone.

use crate::abi::{LowerTable, CALLBACK_ENV, TABLE_MAGIC};
use core::sync::atomic::{AtomicU64, Ordering};
use goblin::elf::{program_header::PT_INTERP, program_header::PT_LOAD, Elf};
use std::ffi::{CStr, CString};
use std::path::Path;

#[derive(Debug)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, LoadError> {
    Err(LoadError(msg.into()))
}

/// The lower world, once its `main` reported back.
pub struct LowerWorld {
    pub table: &'static LowerTable,
    /// The lower `ld.so`'s mapping and the lower main stack (mapped by us, so known).
    pub ldso: (u64, u64),
    pub stack: (u64, u64),
}

const STACK_SIZE: u64 = 8 << 20;
const PAGE: u64 = 4096;
const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_BASE: u64 = 7;
const AT_ENTRY: u64 = 9;
const AT_RANDOM: u64 = 25;
const AT_EXECFN: u64 = 31;
const AT_PLATFORM: u64 = 15;
const AT_HWCAP2: u64 = 26;
const HWCAP2_FSGSBASE: u64 = 2;

/// Callee-saved registers and `rsp` of the thread that entered the lower world.
static mut SAVED: [u64; 7] = [0; 7];
static UPPER_FS: AtomicU64 = AtomicU64::new(0);

core::arch::global_asm!(
    ".globl mana_lower_enter",
    ".hidden mana_lower_enter",
    "mana_lower_enter:",
    "mov [rdx + 0], rbx",
    "mov [rdx + 8], rbp",
    "mov [rdx + 16], r12",
    "mov [rdx + 24], r13",
    "mov [rdx + 32], r14",
    "mov [rdx + 40], r15",
    "mov [rdx + 48], rsp",
    "mov rsp, rdi",
    "xor edx, edx", // no rtld_fini, as from the kernel
    "xor ebp, ebp",
    "jmp rsi",
    ".globl mana_lower_return",
    ".hidden mana_lower_return",
    "mana_lower_return:",
    "mov rbx, [rdi + 0]",
    "mov rbp, [rdi + 8]",
    "mov r12, [rdi + 16]",
    "mov r13, [rdi + 24]",
    "mov r14, [rdi + 32]",
    "mov r15, [rdi + 40]",
    "mov rsp, [rdi + 48]",
    "mov rax, rsi",
    "ret",
);

extern "C" {
    /// Saves our context into `save`, switches to `stack` and jumps to `entry`. Returns
    /// (with the table) when the lower main calls [`lower_ready`].
    fn mana_lower_enter(stack: u64, entry: u64, save: *mut [u64; 7]) -> u64;
    fn mana_lower_return(save: *const [u64; 7], value: u64) -> !;
}

/// Called by the proxy's `main` on the lower stack with the lower FS base: restore ours
/// first (no TLS may be touched before), then return from `mana_lower_enter`.
extern "C" fn lower_ready(table: *const LowerTable) -> ! {
    let fs = UPPER_FS.load(Ordering::Relaxed);
    // SAFETY: ARCH_SET_FS to this thread's own upper TCB, saved before entering.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") 158isize => _, in("rdi") 0x1002usize, in("rsi") fs,
                         lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    // SAFETY: SAVED holds the context mana_lower_enter stored; its frame is still live.
    unsafe { mana_lower_return(&raw const SAVED, table as u64) }
}

fn fs_base() -> u64 {
    let mut v: u64 = 0;
    // SAFETY: ARCH_GET_FS writes one u64.
    unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut v as *mut u64) };
    v
}

/// Whether `wrfsbase`/`rdfsbase` may be used (the kernel enabled FSGSBASE).
pub fn have_fsgsbase() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector.
    unsafe { libc::getauxval(AT_HWCAP2 as libc::c_ulong) as u64 & HWCAP2_FSGSBASE != 0 }
}

/// Runs `f(x)` in the lower world: the FS base is switched to `fs` around the call.
///
/// # Safety
/// `f` must be a lower-world function; `fs` the lower TCB lent to this thread.
pub unsafe fn call1(fs: u64, f: unsafe extern "C" fn(u64) -> u64, x: u64) -> u64 {
    let up: u64;
    // SAFETY: FSGSBASE is enabled (checked at load); the switch is undone right after.
    unsafe {
        core::arch::asm!("rdfsbase {}", out(reg) up, options(nostack, preserves_flags));
        core::arch::asm!("wrfsbase {}", in(reg) fs, options(nostack, preserves_flags));
        let r = f(x);
        core::arch::asm!("wrfsbase {}", in(reg) up, options(nostack, preserves_flags));
        r
    }
}

/// Runs `f` with the FS base switched to the lower TCB `fs`.
///
/// # Safety
/// `f` may only call lower-world functions with plain arguments: any use of this
/// thread's upper TLS (Rust `thread_local!`, errno, panics) inside it is wrong.
#[inline(always)]
pub unsafe fn in_lower<R>(fs: u64, f: impl FnOnce() -> R) -> R {
    let up: u64;
    // SAFETY: as in call1.
    unsafe {
        core::arch::asm!("rdfsbase {}", out(reg) up, options(nostack, preserves_flags));
        core::arch::asm!("wrfsbase {}", in(reg) fs, options(nostack, preserves_flags));
    }
    let r = f();
    // SAFETY: back to this thread's own TCB.
    unsafe { core::arch::asm!("wrfsbase {}", in(reg) up, options(nostack, preserves_flags)) };
    r
}

/// Same as [`call1`] for a function taking a pointer.
///
/// # Safety
/// As [`call1`].
pub unsafe fn call_ptr<T, R>(fs: u64, f: unsafe extern "C" fn(*const T) -> R, p: *const T) -> R {
    let up: u64;
    // SAFETY: as in call1.
    unsafe {
        core::arch::asm!("rdfsbase {}", out(reg) up, options(nostack, preserves_flags));
        core::arch::asm!("wrfsbase {}", in(reg) fs, options(nostack, preserves_flags));
        let r = f(p);
        core::arch::asm!("wrfsbase {}", in(reg) up, options(nostack, preserves_flags));
        r
    }
}

struct Mapped {
    base: u64,
    span: u64,
    entry: u64,
    phdr: u64,
    phnum: u64,
}

/// Maps an ET_DYN ELF file (the lower `ld.so`) at a kernel-chosen base.
fn map_elf(path: &Path) -> Result<Mapped, LoadError> {
    let bytes = std::fs::read(path).map_err(|e| LoadError(format!("{}: {e}", path.display())))?;
    let elf =
        Elf::parse(&bytes).map_err(|e| LoadError(format!("{}: not ELF: {e}", path.display())))?;
    let loads: Vec<_> = elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == PT_LOAD)
        .collect();
    let Some(first) = loads.first() else {
        return err(format!("{}: no loadable segment", path.display()));
    };
    let span = loads
        .iter()
        .map(|p| p.p_vaddr + p.p_memsz)
        .max()
        .unwrap_or(0)
        .div_ceil(PAGE)
        * PAGE;
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| LoadError("bad path".into()))?;
    // SAFETY: opening a file read-only.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return err(format!(
            "{}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh PROT_NONE reservation for the whole image.
    let base = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            span as usize,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        // SAFETY: closing our descriptor.
        unsafe { libc::close(fd) };
        return err(format!(
            "cannot reserve {span} bytes for {}",
            path.display()
        ));
    }
    let base = base as u64;
    for p in &loads {
        let prot = (if p.is_read() { libc::PROT_READ } else { 0 })
            | (if p.is_write() { libc::PROT_WRITE } else { 0 })
            | (if p.is_executable() {
                libc::PROT_EXEC
            } else {
                0
            });
        let start = base + (p.p_vaddr & !(PAGE - 1));
        let file_end = base + p.p_vaddr + p.p_filesz;
        let map_end = file_end.div_ceil(PAGE) * PAGE;
        let mem_end = (base + p.p_vaddr + p.p_memsz).div_ceil(PAGE) * PAGE;
        if p.p_filesz > 0 {
            // SAFETY: maps over our own reservation (MAP_FIXED inside it only).
            let r = unsafe {
                libc::mmap(
                    start as *mut _,
                    (map_end - start) as usize,
                    if p.p_memsz > p.p_filesz {
                        prot | libc::PROT_WRITE
                    } else {
                        prot
                    },
                    libc::MAP_PRIVATE | libc::MAP_FIXED,
                    fd,
                    (p.p_offset & !(PAGE - 1)) as libc::off_t,
                )
            };
            if r == libc::MAP_FAILED {
                return err(format!(
                    "{}: cannot map a segment: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                ));
            }
            if p.p_memsz > p.p_filesz {
                // SAFETY: the tail of the last file page belongs to .bss: zero it.
                unsafe {
                    core::ptr::write_bytes(file_end as *mut u8, 0, (map_end - file_end) as usize)
                };
                // SAFETY: our own mapping gets its final protection.
                unsafe { libc::mprotect(start as *mut _, (map_end - start) as usize, prot) };
            }
        }
        if mem_end > map_end {
            // SAFETY: anonymous zero pages for the rest of .bss, inside our reservation.
            let r = unsafe {
                libc::mmap(
                    map_end as *mut _,
                    (mem_end - map_end) as usize,
                    prot,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if r == libc::MAP_FAILED {
                return err(format!("{}: cannot map .bss", path.display()));
            }
        }
    }
    // SAFETY: closing our descriptor (the mappings keep the file).
    unsafe { libc::close(fd) };
    let phdr = base + elf.header.e_phoff - first.p_offset + first.p_vaddr;
    Ok(Mapped {
        base,
        span,
        entry: base + elf.header.e_entry,
        phdr,
        phnum: elf.header.e_phnum as u64,
    })
}

fn interpreter(program: &Path) -> Result<std::path::PathBuf, LoadError> {
    let bytes =
        std::fs::read(program).map_err(|e| LoadError(format!("{}: {e}", program.display())))?;
    let elf = Elf::parse(&bytes)
        .map_err(|e| LoadError(format!("{}: not ELF: {e}", program.display())))?;
    for p in &elf.program_headers {
        if p.p_type == PT_INTERP {
            let s = &bytes[p.p_offset as usize..(p.p_offset + p.p_filesz) as usize];
            let s = CStr::from_bytes_until_nul(s).map_err(|_| LoadError("bad PT_INTERP".into()))?;
            return Ok(s.to_string_lossy().into_owned().into());
        }
    }
    err(format!("{} is not dynamically linked", program.display()))
}

/// Builds the initial stack of the lower world; returns the stack pointer (at argc).
fn build_stack(
    top: u64,
    argv: &[CString],
    envp: &[CString],
    auxv: &mut [(u64, u64)],
    execfn: &CStr,
) -> u64 {
    let mut sp = top;
    let mut push_bytes = |b: &[u8]| -> u64 {
        sp -= b.len() as u64;
        // SAFETY: `sp` stays inside the stack mapping we own (strings are small).
        unsafe { core::ptr::copy_nonoverlapping(b.as_ptr(), sp as *mut u8, b.len()) };
        sp
    };
    // SAFETY: AT_RANDOM points at 16 bytes the kernel gave this process.
    let random = unsafe {
        core::slice::from_raw_parts(libc::getauxval(AT_RANDOM as libc::c_ulong) as *const u8, 16)
    };
    let random_at = push_bytes(random);
    let platform_at = push_bytes(b"x86_64\0");
    let execfn_at = push_bytes(execfn.to_bytes_with_nul());
    let argv_at: Vec<u64> = argv
        .iter()
        .map(|a| push_bytes(a.to_bytes_with_nul()))
        .collect();
    let envp_at: Vec<u64> = envp
        .iter()
        .map(|e| push_bytes(e.to_bytes_with_nul()))
        .collect();
    for (k, v) in auxv.iter_mut() {
        match *k {
            AT_RANDOM => *v = random_at,
            AT_PLATFORM => *v = platform_at,
            AT_EXECFN => *v = execfn_at,
            _ => {}
        }
    }
    let words = 1 + argv_at.len() + 1 + envp_at.len() + 1 + 2 * auxv.len() + 2;
    let mut sp = (sp - words as u64 * 8) & !15;
    let base = sp;
    let mut put = |v: u64| {
        // SAFETY: inside our stack mapping, 8-byte aligned.
        unsafe { *(sp as *mut u64) = v };
        sp += 8;
    };
    put(argv_at.len() as u64);
    argv_at.iter().for_each(|&a| put(a));
    put(0);
    envp_at.iter().for_each(|&e| put(e));
    put(0);
    for &(k, v) in auxv.iter() {
        put(k);
        put(v);
    }
    put(AT_NULL);
    put(0);
    base
}

/// Set by `mana_launch`: the library path the program was started with (before MANA's
/// wrapper directory was put first), which is the lower world's.
pub const LOWER_LIBRARY_PATH_ENV: &str = "MANA_LOWER_LIBRARY_PATH";

/// The lower world's environment: ours without `LD_PRELOAD`, plus what keeps UCX (MPICH's
/// transport) from patching allocation functions and installing fault handlers
/// process-wide while it loads (LOWER-HALF.md, "what broke"), and without glibc's rseq
/// registration (the thread's rseq belongs to the upper libc).
pub fn default_env() -> Vec<(String, String)> {
    env_from(std::env::vars())
}

/// The lower world's environment derived from `vars` (the process's, or a restart's).
pub fn env_from(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    let vars: Vec<(String, String)> = vars.collect();
    let forced = [
        ("UCX_MEM_EVENTS", "no"),
        ("UCX_ERROR_SIGNALS", ""),
        ("UCX_DEBUG_SIGNO", "0"),
        ("GLIBC_TUNABLES", "glibc.pthread.rseq=0"),
    ];
    // mana_launch put the wrapper library first on LD_LIBRARY_PATH; the lower world must
    // find the real MPI: it gets the path the program was started with.
    let lower_path = vars
        .iter()
        .find(|(k, _)| k == LOWER_LIBRARY_PATH_ENV)
        .map(|(_, v)| v.clone());
    let mut env: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k != "LD_PRELOAD" && !forced.iter().any(|(f, _)| f == k))
        .filter(|(k, _)| !(lower_path.is_some() && k == "LD_LIBRARY_PATH"))
        .collect();
    if let Some(p) = lower_path.filter(|p| !p.is_empty()) {
        env.push(("LD_LIBRARY_PATH".into(), p));
    }
    env.extend(forced.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Starts `proxy` in its own loader world and returns its table. `env` is the lower
/// world's entire environment (build it deliberately: no `LD_PRELOAD`).
pub fn load(proxy: &Path, env: &[(String, String)]) -> Result<LowerWorld, LoadError> {
    if !have_fsgsbase() {
        return err("this CPU/kernel does not allow wrfsbase (HWCAP2_FSGSBASE); the arch_prctl fallback is not built yet");
    }
    let interp = interpreter(proxy)?;
    let ldso = map_elf(&interp)?;
    // SAFETY: a fresh private stack for the lower main thread.
    let stack = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            STACK_SIZE as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return err("cannot map the lower main stack");
    }
    let stack = stack as u64;

    let auxv_bytes =
        std::fs::read("/proc/self/auxv").map_err(|e| LoadError(format!("/proc/self/auxv: {e}")))?;
    let mut auxv: Vec<(u64, u64)> = auxv_bytes
        .chunks_exact(16)
        .map(|c| {
            (
                u64::from_ne_bytes(c[..8].try_into().unwrap()),
                u64::from_ne_bytes(c[8..].try_into().unwrap()),
            )
        })
        .take_while(|&(k, _)| k != AT_NULL)
        .collect();
    for (k, v) in auxv.iter_mut() {
        match *k {
            AT_PHDR => *v = ldso.phdr,
            AT_PHENT => *v = 56,
            AT_PHNUM => *v = ldso.phnum,
            AT_BASE => *v = 0,
            AT_ENTRY => *v = ldso.entry,
            _ => {}
        }
    }
    let argv = vec![
        CString::new(interp.as_os_str().as_encoded_bytes()).unwrap(),
        CString::new(proxy.as_os_str().as_encoded_bytes())
            .map_err(|_| LoadError("bad proxy path".into()))?,
    ];
    let mut envp: Vec<CString> = env
        .iter()
        .filter(|(k, _)| k != CALLBACK_ENV)
        .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
        .collect();
    envp.push(
        CString::new(format!(
            "{CALLBACK_ENV}={:x}",
            lower_ready as *const () as usize
        ))
        .unwrap(),
    );
    let sp = build_stack(stack + STACK_SIZE - 64, &argv, &envp, &mut auxv, &argv[1]);

    // What starting a libc changes for the whole thread/process, to put back afterwards.
    let saved = ThreadState::capture();
    UPPER_FS.store(fs_base(), Ordering::Relaxed);
    // SAFETY: enters ld.so on its own stack; returns through lower_ready with the table.
    let table = unsafe { mana_lower_enter(sp, ldso.entry, &raw mut SAVED) } as *const LowerTable;
    saved.restore();
    // SAFETY: the proxy passed a pointer to its static table.
    let table = unsafe { &*table };
    if table.magic != TABLE_MAGIC {
        return err(format!(
            "{} reported a table with a bad magic",
            proxy.display()
        ));
    }
    Ok(LowerWorld {
        table,
        ldso: (ldso.base, ldso.base + ldso.span),
        stack: (stack, stack + STACK_SIZE),
    })
}

/// Per-thread kernel state a starting libc overwrites.
struct ThreadState {
    tid_address: u64,
    robust: (u64, u64),
    altstack: libc::stack_t,
    mask: libc::sigset_t,
    actions: Vec<(i32, libc::sigaction)>,
}

impl ThreadState {
    fn capture() -> ThreadState {
        let mut tid_address: u64 = 0;
        let mut robust: (u64, u64) = (0, 0);
        // SAFETY: queries writing into valid out-buffers.
        unsafe {
            libc::prctl(
                40, /* PR_GET_TID_ADDRESS */
                &mut tid_address as *mut u64,
            );
            libc::syscall(
                libc::SYS_get_robust_list,
                0,
                &mut robust.0 as *mut u64,
                &mut robust.1 as *mut u64,
            );
        }
        // SAFETY: zeroed stack_t/sigset_t/sigaction are valid out-buffers.
        let mut altstack: libc::stack_t = unsafe { core::mem::zeroed() };
        // SAFETY: as above.
        let mut mask: libc::sigset_t = unsafe { core::mem::zeroed() };
        // SAFETY: queries only.
        unsafe {
            libc::sigaltstack(core::ptr::null(), &mut altstack);
            libc::pthread_sigmask(libc::SIG_SETMASK, core::ptr::null(), &mut mask);
        }
        let actions = (1..=64)
            .filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP)
            .map(|s| {
                // SAFETY: zeroed sigaction is a valid out-buffer; query only.
                let mut a: libc::sigaction = unsafe { core::mem::zeroed() };
                // SAFETY: as above.
                unsafe { libc::sigaction(s, core::ptr::null(), &mut a) };
                (s, a)
            })
            .collect();
        ThreadState {
            tid_address,
            robust,
            altstack,
            mask,
            actions,
        }
    }

    fn restore(&self) {
        // SAFETY: putting back values this thread had a moment ago.
        unsafe {
            libc::syscall(libc::SYS_set_tid_address, self.tid_address);
            libc::syscall(libc::SYS_set_robust_list, self.robust.0, self.robust.1);
            libc::sigaltstack(&self.altstack, core::ptr::null_mut());
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.mask, core::ptr::null_mut());
            for (s, a) in &self.actions {
                libc::sigaction(*s, a, core::ptr::null_mut());
            }
        }
    }
}
