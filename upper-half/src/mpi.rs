//! The upper half's side of the split process: loads the lower half on the first MPI call
//! and serves the wrapper library (`mpi-wrappers/`, `libmpich.so.12`) with the lower
//! world's functions and FS base.
//!
//! Each upper thread that calls MPI borrows a lower TCB of its own; handle translation
//! lives in the wrapper library. At a restart the old lower half is gone: [`restart_lower`]
//! forgets everything about it (tables, lent TCBs, cached functions — a generation number
//! tells every thread) and starts a new one with the restart's environment.

use core::ffi::{c_char, c_int, c_void, CStr};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use mana_lower::abi::LowerTable;
use mana_lower::loader;

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
    /// This thread's lower TCB and the lower half's generation it belongs to.
    static MY_TCB: core::cell::Cell<(u64, u64)> = const { core::cell::Cell::new((0, 0)) };
}

/// Bumped when a restart replaces the lower half: thread-local caches of lower TCBs (here
/// and in the wrapper library) compare it with the generation they were made in.
#[no_mangle]
pub static mana_lower_generation: AtomicU64 = AtomicU64::new(1);

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
    MY_TCB.with(|c| c.set((fs, mana_lower_generation.load(Ordering::Acquire))));
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
    let (fs, gen) = MY_TCB.with(|c| c.get());
    if fs != 0 && gen == mana_lower_generation.load(Ordering::Acquire) {
        fs
    } else {
        mana_lower_tcb_for_this_thread()
    }
}

const MAX_FNS: usize = 8192;
static FNS: [AtomicUsize; MAX_FNS] = [const { AtomicUsize::new(0) }; MAX_FNS];
static LOWER: AtomicPtr<LowerTable> = AtomicPtr::new(core::ptr::null_mut());
static LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// The lower main stack (mapped by our loader, so known).
static LOWER_STACK: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

const MPI_COMM_WORLD: c_int = 0x4400_0000;
const MPI_ERR_UNSUPPORTED_OPERATION: c_int = 44;

/// Whether this process has a lower half (then it cannot be checkpointed yet).
pub fn loaded() -> bool {
    !LOWER.load(Ordering::Acquire).is_null()
}

fn table() -> Option<&'static LowerTable> {
    // SAFETY: set once per lower half from the table the proxy keeps for its lifetime.
    unsafe { LOWER.load(Ordering::Acquire).as_ref() }
}

fn lower() -> &'static LowerTable {
    if let Some(t) = table() {
        return t;
    }
    let _one = LOAD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = table() {
        return t;
    }
    crate::mpi_guard::before_lower_half();
    crate::runtime::mpi_arrived();
    // Restarted before MPI_Init (or after MPI_Finalize): the lower half gets the restart's
    // environment (its launcher's PMI connection), not the checkpointed process's.
    let deferred = DEFERRED_ENV
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(vars) = deferred {
        let path = vars
            .iter()
            .find(|(k, _)| k == mana_lower::LOWER_HALF_ENV)
            .map(|(_, v)| std::path::PathBuf::from(v))
            .or_else(|| std::env::var_os(mana_lower::LOWER_HALF_ENV).map(Into::into));
        let Some(path) = path else {
            eprintln!(
                "mana: this program called MPI, but {} is not set at restart",
                mana_lower::LOWER_HALF_ENV
            );
            std::process::exit(1);
        };
        tracing::debug!("loading the lower half with the restart's environment");
        return match load_lower(&path, &loader::env_from(vars.into_iter())) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("mana: {e}");
                std::process::exit(1);
            }
        };
    }
    let Some(path) = std::env::var_os(mana_lower::LOWER_HALF_ENV) else {
        eprintln!(
            "mana: this program called MPI, but {} is not set (start it with mana_launch)",
            mana_lower::LOWER_HALF_ENV
        );
        std::process::exit(1);
    };
    match load_lower(path.as_ref(), &loader::default_env()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mana: {e}");
            std::process::exit(1);
        }
    }
}

fn load_lower(
    path: &std::path::Path,
    env: &[(String, String)],
) -> Result<&'static LowerTable, String> {
    match loader::load(path, env) {
        Ok(world) => {
            mana_lower_fs.store(world.table.fs_base, Ordering::Release);
            LOWER_STACK[0].store(world.stack.0, Ordering::Release);
            LOWER_STACK[1].store(world.stack.1, Ordering::Release);
            tracing::debug!(ldso = ?world.ldso, stack = ?world.stack, "lower half loaded");
            LOWER.store(
                world.table as *const LowerTable as *mut LowerTable,
                Ordering::Release,
            );
            Ok(world.table)
        }
        Err(e) => Err(format!(
            "cannot load the lower half {}: {e}",
            path.display()
        )),
    }
}

/// The restart's environment for a lower half not loaded yet: set when a process restarts
/// before `MPI_Init` or after `MPI_Finalize` ([`defer_lower`]), taken by the next load.
static DEFERRED_ENV: std::sync::Mutex<Option<Vec<(String, String)>>> = std::sync::Mutex::new(None);

/// Forgets the checkpointed process's lower half (its memory is gone), if it had one.
fn forget_lower() {
    LOWER.store(core::ptr::null_mut(), Ordering::Release);
    LOWER_STACK[0].store(0, Ordering::Release);
    LOWER_STACK[1].store(0, Ordering::Release);
    mana_lower_fs.store(0, Ordering::Release);
    for f in &FNS {
        f.store(0, Ordering::Relaxed);
    }
    for i in 0..MAX_MPI_THREADS {
        LENT_LOWER[i].store(0, Ordering::Relaxed);
        LENT_UPPER[i].store(0, Ordering::Relaxed);
    }
    NEXT_TCB.store(0, Ordering::Release);
    mana_lower_generation.fetch_add(1, Ordering::AcqRel);
}

/// At a restart of a process checkpointed before `MPI_Init` or after `MPI_Finalize`:
/// forgets its old lower half, if any, and keeps the restart's environment `vars` for the
/// lower half its next MPI call loads.
pub fn defer_lower(vars: Vec<(String, String)>) {
    let _one = LOAD.lock().unwrap_or_else(|e| e.into_inner());
    forget_lower();
    *DEFERRED_ENV.lock().unwrap_or_else(|e| e.into_inner()) = Some(vars);
}

/// The restart launcher's PMI connection kept for a deferred lower half (not saved in an
/// image: it is the launcher's, and a restart brings its own).
pub fn deferred_fds() -> Vec<i32> {
    DEFERRED_ENV
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|vars| vars.iter().find(|(k, _)| k == "PMI_FD"))
        .and_then(|(_, v)| v.parse().ok())
        .into_iter()
        .collect()
}

/// At a restart: forgets the checkpointed process's lower half (its memory is gone) and
/// starts a new one with the restart's environment `vars` (PMI, UCX transport, placement).
pub fn restart_lower(vars: Vec<(String, String)>) -> Result<(), String> {
    let _one = LOAD.lock().unwrap_or_else(|e| e.into_inner());
    forget_lower();
    *DEFERRED_ENV.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let path = vars
        .iter()
        .find(|(k, _)| k == mana_lower::LOWER_HALF_ENV)
        .map(|(_, v)| std::path::PathBuf::from(v))
        .or_else(|| std::env::var_os(mana_lower::LOWER_HALF_ENV).map(Into::into))
        .ok_or_else(|| format!("{} is not set at restart", mana_lower::LOWER_HALF_ENV))?;
    load_lower(&path, &loader::env_from(vars.into_iter()))?;
    Ok(())
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
    let Some(t) = table() else {
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
    let stack = (
        LOWER_STACK[0].load(Ordering::Acquire),
        LOWER_STACK[1].load(Ordering::Acquire),
    );
    if stack.1 != 0 {
        v.push(stack);
    }
    v.sort_unstable();
    // SAFETY: a lower-world function without arguments.
    let overflows = unsafe { loader::in_lower(fs, || (t.arena_overflows)()) };
    static LOGGED: AtomicBool = AtomicBool::new(false);
    if overflows > 0 && !LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            overflows,
            "the lower half's address-space arena is full: its later mappings are placed \
             outside it and recorded one by one"
        );
    }
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
    let Some(t) = table() else {
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
