//! The upper half's side of the split process: loads the lower half on the first MPI call
//! and serves the wrapper library (`mpi-wrappers/`, `libmpich.so.12`) with the lower
//! world's functions and FS base.
//!
//! Each upper thread that calls MPI borrows a lower TCB of its own; handle translation
//! lives in the wrapper library. A process with a lower half cannot be checkpointed yet
//! (the checkpoint fails saying so; MPI checkpoint/restart is the next issue).

use core::ffi::{c_char, c_int, c_void, CStr};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use mana_lower::abi::LowerTable;
use mana_lower::loader;
use std::sync::OnceLock;

/// The lower world's main TCB (also `tcbs[0]`).
#[no_mangle]
pub static mana_lower_fs: AtomicU64 = AtomicU64::new(0);

/// How many upper threads may call MPI in one process (each keeps its lower TCB).
const MAX_MPI_THREADS: usize = 4096;

/// Which lower TCB is lent to which upper thread (by FS base), for callbacks that must
/// find their way back. Written once per slot, read lock-free with the lower FS active.
static LENT_LOWER: [AtomicU64; MAX_MPI_THREADS] = [const { AtomicU64::new(0) }; MAX_MPI_THREADS];
static LENT_UPPER: [AtomicU64; MAX_MPI_THREADS] = [const { AtomicU64::new(0) }; MAX_MPI_THREADS];
static NEXT_TCB: AtomicUsize = AtomicUsize::new(0);
/// Serialises the use of the proxy's spawning TCB (`tcbs[n_tcbs - 1]`).
static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());
thread_local! {
    static MY_TCB: core::cell::Cell<u64> = const { core::cell::Cell::new(0) };
}

fn upper_fs() -> u64 {
    let mut v: u64 = 0;
    // SAFETY: ARCH_GET_FS writes one u64.
    unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut v as *mut u64) };
    v
}

/// Lends the calling upper thread a lower TCB of its own (DESIGN.md §3: every thread that
/// calls MPI needs one): one the proxy prepared, or a new parked lower thread's, started
/// on the proxy's spawning TCB. The wrappers cache the answer per thread.
#[no_mangle]
pub extern "C" fn mana_lower_tcb_for_this_thread() -> u64 {
    let t = lower();
    let i = NEXT_TCB.fetch_add(1, Ordering::AcqRel);
    let lendable = t.n_tcbs.saturating_sub(1) as usize;
    let fs = if i < lendable {
        t.tcbs[i]
    } else if i < MAX_MPI_THREADS && lendable > 0 {
        let _one_at_a_time = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        let spawner = t.tcbs[lendable];
        // SAFETY: `new_tcb` runs on the spawning TCB, which nobody else uses meanwhile.
        unsafe { loader::in_lower(spawner, || (t.new_tcb)()) }
    } else {
        0
    };
    if fs == 0 {
        eprintln!(
            "mana: cannot give thread #{} a lower-half TCB (at most {MAX_MPI_THREADS} threads may call MPI)",
            i + 1
        );
        std::process::abort();
    }
    LENT_UPPER[i].store(upper_fs(), Ordering::Release);
    LENT_LOWER[i].store(fs, Ordering::Release);
    MY_TCB.with(|c| c.set(fs));
    fs
}

/// The upper FS base of the thread that borrowed lower TCB `lower_fs` (0 if none). Runs
/// with the lower FS active: touches no thread-local state.
#[no_mangle]
pub extern "C" fn mana_upper_fs_for(lower_fs: u64) -> u64 {
    let lent = NEXT_TCB.load(Ordering::Acquire).min(MAX_MPI_THREADS);
    for i in 0..lent {
        if LENT_LOWER[i].load(Ordering::Acquire) == lower_fs {
            return LENT_UPPER[i].load(Ordering::Acquire);
        }
    }
    0
}

fn my_tcb() -> u64 {
    let fs = MY_TCB.with(|c| c.get());
    if fs != 0 {
        fs
    } else {
        mana_lower_tcb_for_this_thread()
    }
}

const MAX_FNS: usize = 8192;
static FNS: [AtomicUsize; MAX_FNS] = [const { AtomicUsize::new(0) }; MAX_FNS];
static LOWER: OnceLock<&'static LowerTable> = OnceLock::new();
/// The lower main stack (mapped by our loader, so known).
static LOWER_STACK: OnceLock<(u64, u64)> = OnceLock::new();

const MPI_COMM_WORLD: c_int = 0x4400_0000;
const MPI_ERR_UNSUPPORTED_OPERATION: c_int = 44;

/// Whether this process has a lower half (then it cannot be checkpointed yet).
pub fn loaded() -> bool {
    LOWER.get().is_some()
}

fn lower() -> &'static LowerTable {
    LOWER.get_or_init(|| {
        let Some(path) = std::env::var_os(mana_lower::LOWER_HALF_ENV) else {
            eprintln!(
                "mana: this program called MPI, but {} is not set (start it with mana_launch)",
                mana_lower::LOWER_HALF_ENV
            );
            std::process::exit(1);
        };
        match loader::load(path.as_ref(), &loader::default_env()) {
            Ok(world) => {
                mana_lower_fs.store(world.table.fs_base, Ordering::Release);
                let _ = LOWER_STACK.set(world.stack);
                tracing::debug!(ldso = ?world.ldso, stack = ?world.stack, "lower half loaded");
                world.table
            }
            Err(e) => {
                eprintln!(
                    "mana: cannot load the lower half {}: {e}",
                    std::path::Path::new(&path).display()
                );
                std::process::exit(1);
            }
        }
    })
}

/// The lower world's function `lower_name`, cached under `id` (the wrapper's index),
/// looked up on the calling thread's lower TCB `fs`.
///
/// # Safety
/// `lower_name` must be a NUL-terminated string; `fs` the TCB lent to this thread.
#[no_mangle]
pub unsafe extern "C" fn mana_lower_fn(
    id: u32,
    lower_name: *const c_char,
    fs: u64,
) -> *const c_void {
    let slot = FNS.get(id as usize);
    if let Some(p) = slot.map(|s| s.load(Ordering::Acquire)).filter(|&p| p != 0) {
        return p as *const c_void;
    }
    let t = lower();
    // SAFETY: `lookup` is the lower world's dlsym; the name is a C string from the wrapper.
    let p = unsafe { loader::call_ptr(fs, t.lookup, lower_name) };
    if p.is_null() {
        // SAFETY: the wrapper passes a NUL-terminated literal.
        let name = unsafe { CStr::from_ptr(lower_name) }.to_string_lossy();
        eprintln!("mana: the lower half's MPI library has no {name}");
        std::process::abort();
    }
    if let Some(s) = slot {
        s.store(p as usize, Ordering::Release);
    }
    p
}

/// A function MANA-rs does not support: report it by name and through the error handler
/// of `MPI_COMM_WORLD` (which aborts under the default `MPI_ERRORS_ARE_FATAL`).
///
/// # Safety
/// `name` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn mana_unsupported(name: *const c_char) -> c_int {
    // SAFETY: the stub passes a NUL-terminated literal.
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
    eprintln!("mana: {name} is not supported by MANA-rs (MPI_ERR_UNSUPPORTED_OPERATION)");
    let fs = my_tcb();
    // SAFETY: a C string literal and this thread's lower TCB.
    let f = unsafe { mana_lower_fn(u32::MAX, c"PMPI_Comm_call_errhandler".as_ptr(), fs) };
    // SAFETY: MPICH's MPI_Comm_call_errhandler(MPI_Comm, int) called in the lower world.
    unsafe {
        let f: unsafe extern "C" fn(c_int, c_int) -> c_int = core::mem::transmute(f);
        loader::in_lower(fs, || f(MPI_COMM_WORLD, MPI_ERR_UNSUPPORTED_OPERATION));
    }
    MPI_ERR_UNSUPPORTED_OPERATION
}

/// The address ranges that belong to the lower half, from the loader's and the proxy's own
/// records (never guessed from mapping names): the lower link map's segments, every
/// mapping made through the proxy's `mmap`/`mremap`, and the lower main stack. Sorted.
pub fn lower_regions() -> Vec<(u64, u64)> {
    let Some(t) = LOWER.get() else {
        return Vec::new();
    };
    let mut buf = vec![[0u64; 2]; 16384];
    let fs = my_tcb();
    // SAFETY: `regions` is a lower-world function filling at most `cap` entries of `buf`.
    let n = unsafe { loader::in_lower(fs, || (t.regions)(buf.as_mut_ptr(), buf.len())) };
    let mut v: Vec<(u64, u64)> = buf[..n.min(buf.len())]
        .iter()
        .map(|r| (r[0], r[1]))
        .collect();
    if let Some(&s) = LOWER_STACK.get() {
        v.push(s);
    }
    v.sort_unstable();
    v
}

/// Thread ids of the lower world's threads (never stopped by the checkpointer).
pub fn lower_tids() -> Vec<i32> {
    lower_list(|t| t.tids)
}

/// Descriptors the lower world holds (not saved, not an error at a checkpoint).
pub fn lower_fds() -> Vec<i32> {
    lower_list(|t| t.fds)
}

fn lower_list(
    f: impl Fn(&LowerTable) -> unsafe extern "C" fn(*mut i32, usize) -> usize,
) -> Vec<i32> {
    let Some(t) = LOWER.get() else {
        return Vec::new();
    };
    let func = f(t);
    let mut buf = vec![0i32; 8192];
    let fs = my_tcb();
    // SAFETY: a lower-world function filling at most `cap` entries of `buf`.
    let n = unsafe { loader::in_lower(fs, || func(buf.as_mut_ptr(), buf.len())) };
    buf.truncate(n.min(buf.len()));
    buf
}

/// Called by the `MPI_Finalize` wrapper before the real one. With `MANA_DUMP_REGIONS=DIR`
/// writes `DIR/regions-PID.txt`: one `lower START END` line per lower-half range, then
/// `/proc/self/maps` — so tests can check the region accounting against the kernel's view.
#[no_mangle]
pub extern "C" fn mana_before_finalize() {
    let Some(dir) = std::env::var_os("MANA_DUMP_REGIONS") else {
        return;
    };
    let mut text = String::new();
    for (s, e) in lower_regions() {
        text.push_str(&format!("lower {s:x} {e:x}\n"));
    }
    // The stack pointer of every other thread blocked in a system call (the proxy's
    // parked threads, UCX's progress thread, …): `thread TID SP`.
    let me = std::process::id().to_string();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let tid = task.file_name().to_string_lossy().into_owned();
            let syscall = std::fs::read_to_string(task.path().join("syscall")).unwrap_or_default();
            let fields: Vec<&str> = syscall.split_whitespace().collect();
            if tid != me && fields.len() >= 3 && fields[0] != "running" {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                let sp = fields[fields.len() - 2];
                text.push_str(&format!("thread {tid} {sp} {}\n", comm.trim()));
            }
        }
    }
    text.push_str(&std::fs::read_to_string("/proc/self/maps").unwrap_or_default());
    let path = std::path::Path::new(&dir).join(format!("regions-{}.txt", std::process::id()));
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("mana: cannot write {}: {e}", path.display());
    }
}
