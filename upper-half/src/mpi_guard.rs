//! No MPICH process runs unprotected: the real MPI library stays out of the upper half.
//!
//! `mana_launch` preloads, after `libmana`, the wrapper library `libmpich.so.12` and a
//! stub whose soname is `libmpi.so.12` (`mana-mpi/`). The dynamic loader then answers
//! every later request for either soname — an executable's or a library's `DT_NEEDED`
//! (`libmpichfort.so.12`, `libscalapack-mpich`, mpi4py's extension module), `dlopen` by
//! soname, whatever `DT_RPATH`/`DT_RUNPATH` say — with the object it already has. What
//! that cannot catch is a request by *path* (ctypes' `CDLL("/usr/lib/…/libmpich.so.12")`,
//! mpi4py's `MPI4PY_LIBMPI`, the `libmpich.so` development link): this module interposes
//! `dlopen` and sends any name that resolves to an MPICH-ABI library — recognised by the
//! file's `DT_SONAME`, not by its name — to the wrapper instead.
//!
//! The interposer is a naked tail call: glibc's `dlopen` takes its caller's return
//! address to pick the caller's `DT_RUNPATH` and namespace, so the original return
//! address must still be on the stack when it runs.
//!
//! An MPI that cannot be wrapped makes the checkpointed process exit with one line before
//! `main` (another family such as Open MPI's `libmpi.so.40`, found among the objects
//! loaded at start-up), at the `dlopen` that would load it, or at the first MPI call for
//! one that came in as a dependency of a `dlopen`ed library.

use core::ffi::{c_char, c_int, c_void, CStr};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use mana_coordinator::mpi_abi::{self, MpiLibrary};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable naming the wrapper library (set by `mana_launch`).
pub const WRAPPER_ENV: &str = "MANA_MPI_WRAPPER";

/// libc's `dlopen`, found on first use.
static REAL_DLOPEN: AtomicUsize = AtomicUsize::new(0);
/// Set in the checkpointed process (not in children that inherit the preload): a foreign
/// MPI there is refused.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The wrapper library: its path as a C string and its (device, inode).
struct Wrapper {
    path: CString,
    id: (u64, u64),
}

fn wrapper() -> Option<&'static Wrapper> {
    static W: OnceLock<Option<Wrapper>> = OnceLock::new();
    W.get_or_init(|| {
        let path = std::env::var_os(WRAPPER_ENV)?;
        let meta = std::fs::metadata(&path).ok()?;
        Some(Wrapper {
            path: CString::new(path.as_bytes()).ok()?,
            id: (meta.dev(), meta.ino()),
        })
    })
    .as_ref()
}

/// Whether `path` is one of MANA's own MPI libraries (the wrapper or the stub beside it).
fn is_ours(path: &Path, w: &Wrapper) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    (meta.dev(), meta.ino()) == w.id
        || Path::new(std::ffi::OsStr::from_bytes(w.path.as_bytes())).parent()
            == std::fs::canonicalize(path)
                .ok()
                .as_deref()
                .and_then(Path::parent)
}

/// The one line for a program whose MPI cannot be wrapped; the process exits with 127.
fn refuse(what: &str) -> ! {
    let exe = std::fs::read_link("/proc/self/exe")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    eprintln!(
        "mana: {exe} {what}: MANA checkpoints programs using MPICH's ABI (libmpich.so.12) only; run it without mana_launch"
    );
    // SAFETY: ends the process at once (no atexit handlers of a half-started program).
    unsafe { libc::_exit(127) }
}

/// What to do about a library named `name` in a `dlopen`: `Some(wrapper)` to load the
/// wrapper instead. Refuses a foreign MPI in the checkpointed process.
fn redirect(name: &[u8]) -> Option<&'static CStr> {
    let base = name.rsplit(|&c| c == b'/').next().unwrap_or(name);
    let file: PathBuf = if name.contains(&b'/') {
        PathBuf::from(std::ffi::OsStr::from_bytes(name))
    } else {
        // By soname, the preloaded objects answer; other names are searched only when they
        // look like an MPI library's (libmpi*, libmpich*): the loader finds the rest.
        if base == b"libmpich.so.12" || base == b"libmpi.so.12" || !base.starts_with(b"libmpi") {
            return None;
        }
        search(base)?
    };
    let w = wrapper()?;
    if is_ours(&file, w) {
        return None;
    }
    match mpi_abi::classify_file(&file) {
        MpiLibrary::MpichAbi => {
            tracing::debug!(library = %file.display(), "dlopen of an MPICH-ABI library: the wrapper instead");
            Some(w.path.as_c_str())
        }
        MpiLibrary::Foreign { soname, family } if ACTIVE.load(Ordering::Relaxed) => {
            refuse(&format!("loads {family} ({soname}, {})", file.display()))
        }
        _ => None,
    }
}

/// Where the loader would find bare `name` outside `mana-mpi/`: `LD_LIBRARY_PATH`, then
/// the system directories (the `ld.so.cache` lists nothing else on Debian's layout).
fn search(name: &[u8]) -> Option<PathBuf> {
    let name = std::ffi::OsStr::from_bytes(name);
    let user = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
    let system = [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ];
    std::env::split_paths(&user)
        .chain(system.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Called by [`dlopen`] before libc's: the name libc should load, and libc's `dlopen`
/// resolved into [`REAL_DLOPEN`].
extern "C" fn rewrite_name(name: *const c_char) -> *const c_char {
    if REAL_DLOPEN.load(Ordering::Acquire) == 0 {
        // SAFETY: looking up the next definition of a libc symbol.
        let real = unsafe { libc::dlsym(libc::RTLD_NEXT, c"dlopen".as_ptr()) };
        REAL_DLOPEN.store(real as usize, Ordering::Release);
    }
    if name.is_null() {
        return name;
    }
    // SAFETY: dlopen's argument is a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
    redirect(bytes).map_or(name, CStr::as_ptr)
}

/// The application's `dlopen`: [`rewrite_name`], then a tail jump to libc's with the
/// caller's return address still on the stack.
///
/// # Safety
/// As libc's `dlopen`.
#[unsafe(naked)]
#[no_mangle]
pub unsafe extern "C" fn dlopen(_name: *const c_char, _flags: c_int) -> *mut c_void {
    // On entry rsp is 8 mod 16; two pushes and 8 bytes align the call.
    core::arch::naked_asm!(
        "push rdi",
        "push rsi",
        "sub rsp, 8",
        "call {rewrite}",
        "add rsp, 8",
        "pop rsi",
        "pop rdi",
        "mov rdi, rax",
        "jmp qword ptr [rip + {real}]",
        rewrite = sym rewrite_name,
        real = sym REAL_DLOPEN,
    )
}

/// Refuses the process if an MPI that cannot be wrapped is loaded (another family, or a
/// real MPICH-ABI library that came in past the preload), or if the executable carries
/// MPI itself (`libmpich.a`). Called in the checkpointed process at start-up, and before
/// the lower half is loaded.
pub fn check_loaded() {
    ACTIVE.store(true, Ordering::Relaxed);
    scan();
}

/// Before the lower half is loaded: [`check_loaded`] again in the checkpointed process
/// (libraries `dlopen`ed since start-up bring their own `DT_NEEDED`).
pub fn before_lower_half() {
    if ACTIVE.load(Ordering::Relaxed) {
        scan();
    }
}

fn scan() {
    let Some(w) = wrapper() else {
        return;
    };
    for path in loaded_objects() {
        if is_ours(&path, w) {
            continue;
        }
        match mpi_abi::classify_file(&path) {
            MpiLibrary::MpichAbi => refuse(&format!(
                "loaded the real MPI library {} past MANA's wrapper",
                path.display()
            )),
            MpiLibrary::Foreign { soname, family } => {
                refuse(&format!("loads {family} ({soname}, {})", path.display()))
            }
            MpiLibrary::Other => {}
        }
    }
}

/// Refuses an executable that has MPI linked in statically. `mana_launch` checked the
/// program it started; an exec chain (`mana_launch numactl ./app`) ends in another one.
pub fn check_executable() {
    let Ok(exe) = std::fs::canonicalize("/proc/self/exe") else {
        return;
    };
    let checked = std::env::var_os("MANA_CHECKED_EXE").map(PathBuf::from);
    if checked.as_deref() == Some(exe.as_path()) {
        return;
    }
    if mpi_abi::has_static_mpi(&exe) {
        refuse("has an MPI library linked in statically (libmpich.a)");
    }
}

/// Files of every object the upper loader has loaded (the executable excluded).
fn loaded_objects() -> Vec<PathBuf> {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info; data is the Vec below.
        let (info, out) = unsafe { (&*info, &mut *(data as *mut Vec<PathBuf>)) };
        if !info.dlpi_name.is_null() {
            // SAFETY: dlpi_name is a NUL-terminated string owned by the loader.
            let name = unsafe { CStr::from_ptr(info.dlpi_name) }.to_bytes();
            if name.starts_with(b"/") {
                out.push(PathBuf::from(std::ffi::OsStr::from_bytes(name)));
            }
        }
        0
    }
    let mut out: Vec<PathBuf> = Vec::new();
    // SAFETY: the callback only reads its arguments and pushes into `out`.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut out as *mut Vec<PathBuf> as *mut c_void) };
    out
}
