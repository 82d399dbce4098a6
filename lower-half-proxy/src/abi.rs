//! The contract between the upper half and the proxy: plain `repr(C)` data.

/// Environment variable through which the loader tells the proxy where to report back
/// (hex address of an `extern "C" fn(*const LowerTable) -> !` in the upper half).
pub const CALLBACK_ENV: &str = "MANA_LOWER_CALLBACK";

pub const TABLE_MAGIC: u64 = 0x4d41_4e41_4c4f_5752; // "MANALOWR"

/// Lower-world TCBs the proxy prepares before it reports back (DESIGN.md §3: one per
/// upper thread that calls MPI); more are made on demand with `new_tcb`.
pub const PREPARED_TCBS: usize = 8;

#[repr(C)]
pub struct LowerTable {
    pub magic: u64,
    /// The proxy main thread's FS base (its TCB): switch to it around every lower call.
    pub fs_base: u64,
    /// `dlsym(RTLD_DEFAULT, name)` inside the lower world.
    pub lookup: unsafe extern "C" fn(name: *const core::ffi::c_char) -> *const core::ffi::c_void,
    /// A self-test: exercises the lower libc (allocation, formatting, TLS, errno) and
    /// returns a value derived from `x` (see `mana_lower`).
    pub probe: unsafe extern "C" fn(x: u64) -> u64,
    /// Fills `out` with up to `cap` `[start, end)` ranges that belong to the lower world:
    /// the segments of every object in its link map, and every mapping made through its
    /// `mmap`/`mremap` (interposed by the proxy); returns how many there are.
    pub regions: unsafe extern "C" fn(out: *mut [u64; 2], cap: usize) -> usize,
    /// TCBs to lend to upper threads: `tcbs[0]` is the proxy's main thread (== `fs_base`),
    /// the others belong to lower threads that park forever with every signal blocked.
    /// The last one, `tcbs[n_tcbs - 1]`, is never lent: it is the one `new_tcb` runs on.
    pub n_tcbs: u64,
    pub tcbs: [u64; PREPARED_TCBS],
    /// Starts one more parked lower thread and returns its TCB (0 if it could not). Must
    /// run on `tcbs[n_tcbs - 1]`, by one upper thread at a time.
    pub new_tcb: unsafe extern "C" fn() -> u64,
    /// Fills `out` with up to `cap` thread ids of the lower world's running threads (those
    /// it started: parked TCB owners, UCX's and MPICH's threads); returns how many.
    pub tids: unsafe extern "C" fn(out: *mut i32, cap: usize) -> usize,
    /// Fills `out` with up to `cap` file descriptors the lower world holds (opened through
    /// the proxy's interposed calls, or handed to MPI by the launcher: `PMI_FD`).
    pub fds: unsafe extern "C" fn(out: *mut i32, cap: usize) -> usize,
    /// How many lower-world mappings were placed outside the lower half's arena because it
    /// was full (0: none). The proxy writes nothing itself; the upper half logs it.
    pub arena_overflows: unsafe extern "C" fn() -> u64,
}
