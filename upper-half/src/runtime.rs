//! The checkpoint thread: coordinator session and the checkpoint phases.

use crate::context::save_and_call;
use crate::threads::{self, ThreadSlot};
use crate::write::{self, Job, Written};
use crate::{alloc, procfs, sys};
use core::cell::UnsafeCell;
use core::ffi::c_void;
use mana_coordinator::client::Connection;
use mana_coordinator::protocol::{FromCoord, ProcessInfo, Role, ToCoord};
use mana_coordinator::status::StatusFile;
use mana_image::ckptdir::{LeaseMode, HEARTBEAT};
use mana_image::{CkptDir, ImageHeader, ManifestEntry, RestartMailbox, MAILBOX_MAGIC};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing::{debug, error, info, info_span, warn};

/// Filled by `mana_restart` before the restored threads run (see [`RestartMailbox`]).
pub struct Mailbox(UnsafeCell<RestartMailbox>);
// SAFETY: written by the restarter before any thread runs, then read by the checkpoint
// thread only.
unsafe impl Sync for Mailbox {}
pub static MAILBOX: Mailbox = Mailbox(UnsafeCell::new(RestartMailbox {
    magic: 0,
    restorer_start: 0,
    restorer_len: 0,
    generation: 0,
    status_file: [0; 4096],
    ckpt_dir: [0; 4096],
    env_start: 0,
    env_len: 0,
    visible_pid: 0,
    ns_root: 0,
}));

/// The runtime's own address range (text, data, bss), found at start-up.
static LIB_START: AtomicU64 = AtomicU64::new(0);
static LIB_END: AtomicU64 = AtomicU64::new(0);

struct Static<T>(UnsafeCell<T>);
// SAFETY: used by the checkpoint thread only.
unsafe impl<T> Sync for Static<T> {}

/// The checkpoint thread's own slot (its context is saved by the write phase).
static CKPT_SLOT: Static<ThreadSlot> = Static(UnsafeCell::new(ThreadSlot::EMPTY));

/// What the write phase hands back across the window (plain data: anything allocated in
/// the window is gone when it closes).
struct WindowCall {
    cfg: *const Config,
    generation: u64,
    parked: usize,
    fd: i32,
    pagemap_fd: i32,
    result: Result<Written, [u8; 512]>,
}
static CALL: Static<Option<WindowCall>> = Static(UnsafeCell::new(None));

/// The descriptors the process inherited at exec that cannot be reopened by path (fd,
/// inode): a pipe from the launching shell, a terminal, an MPI launcher's pipes and
/// sockets (mpiexec.mpich leaks a dozen). Saved as [`mana_image::FileKind::Inherited`]:
/// at restart the restarting process's descriptor of the same number, or a stand-in.
/// Refreshed after a restart (the numbers now hold the restart's objects).
static INHERITED: std::sync::Mutex<Vec<(i32, u64)>> = std::sync::Mutex::new(Vec::new());

/// The launcher's PMI connection (`PMI_FD`), the one inherited descriptor never saved: a
/// restart's launcher brings its own (the restarter hands it to the new lower half).
static LAUNCHER_PMI_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

fn pmi_fd_of(value: Option<&str>) -> i32 {
    value.and_then(|v| v.parse().ok()).unwrap_or(-1)
}

/// Whether that connection is Hydra's (`mpiexec.mpich`: `PMI_FD` with Hydra's
/// `MPIR_CVAR_CH3_INTERFACE_HOSTNAME`), which speaks PMI-1 to a `cmd=` line.
static HYDRA_PMI: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn is_hydra(var: impl Fn(&str) -> bool) -> bool {
    var("PMI_FD") && var("MPIR_CVAR_CH3_INTERFACE_HOSTNAME")
}

/// Before a rank exits after a checkpoint (`--kill`): tells Hydra this process is done
/// with PMI (`cmd=finalize`, waits up to 2 s for the answer), as `MPI_Finalize` would.
/// Otherwise Hydra sees the PMI connection close before it reaps the rank, takes that
/// for a crash, prints its "BAD TERMINATION" banner and kills the other ranks — about
/// one kill in five here (docs/mpich-testsuite-results.md).
fn leave_launcher_quietly() {
    let fd = LAUNCHER_PMI_FD.load(Ordering::Relaxed);
    if fd < 0 || !HYDRA_PMI.load(Ordering::Relaxed) || !MPI_JOB.load(Ordering::Relaxed) {
        return;
    }
    let msg = b"cmd=finalize\n";
    // SAFETY: writing our launcher connection (SIGPIPE is blocked in this thread).
    if unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) } != msg.len() as isize {
        return;
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; then reading its answer into our buffer.
    unsafe {
        if libc::poll(&mut p, 1, 2000) == 1 {
            let mut answer = [0u8; 128];
            libc::read(fd, answer.as_mut_ptr().cast(), answer.len());
        }
    }
}

/// Whether an MPI launcher started this process (a launcher's rank variable is set: what
/// `mana_launch` looks at). Such a process is part of an MPI job from its start, also
/// before `MPI_Init`: it takes part in every checkpoint's MPI agreement, and the
/// launcher's pipes and sockets are not its own.
static UNDER_LAUNCHER: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether the current checkpoint is an MPI one ([`crate::mpi_ckpt::in_mpi_job`]).
static MPI_JOB: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// What the MPI preparation of the current checkpoint found (for the image header).
static MPI_STATE: Static<Option<crate::mpi_ckpt::Prepared>> = Static(UnsafeCell::new(None));

#[derive(Clone, Debug)]
pub struct Config {
    pub status_file: PathBuf,
    pub ckpt_dir: PathBuf,
    pub interval: Option<u64>,
    pub rank: u32,
    pub world_size: u32,
    pub program: String,
    pub last_generation: u64,
    /// Committed generations to keep in the directory (`mana_launch --keep`,
    /// `MANA_KEEP`; 0 keeps all).
    pub keep: usize,
}

/// Committed generations kept when `--keep` is not given: the newest and the one before
/// it, so that a newest generation damaged later still leaves one to restart from.
pub const DEFAULT_KEEP: usize = 2;

/// This process's id while its checkpoint thread is inside a checkpoint, from the
/// coordinator's request to the resume (0: none). A process that exits meanwhile waits
/// for it ([`hold_exit`]): a rank that leaves right after `MPI_Finalize` while its peers
/// are still being checkpointed made that generation fail ("disconnected during the
/// checkpoint"). The id, not a flag: a child forked during the agreement inherits the
/// value but has no checkpoint thread, and must not wait.
static IN_CHECKPOINT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// How long an exiting process waits for the checkpoint in progress.
const EXIT_HOLD: Duration = Duration::from_secs(600);

/// Marks a checkpoint in progress while it lives.
struct InCheckpoint;

impl InCheckpoint {
    fn enter() -> InCheckpoint {
        // Registered at the first checkpoint, not in the library constructor: handlers run
        // in reverse order of registration, and the constructor runs before the C start-up
        // code registers the loader's destructor pass, which must come after this one.
        static REGISTER: std::sync::Once = std::sync::Once::new();
        REGISTER.call_once(|| {
            // SAFETY: registers a plain extern "C" function taking no arguments.
            if unsafe { libc::atexit(hold_exit) } != 0 {
                warn!("cannot register the exit hold: an exit during a checkpoint will fail it");
            }
        });
        IN_CHECKPOINT.store(sys::getpid(), Ordering::SeqCst);
        crate::ids::at_checkpoint();
        InCheckpoint
    }
}

impl Drop for InCheckpoint {
    fn drop(&mut self) {
        IN_CHECKPOINT.store(0, Ordering::SeqCst);
    }
}

/// At `exit`: while this process is being checkpointed, waits (at most [`EXIT_HOLD`]) for
/// the checkpoint to end, so that the generation includes the process as it exits. A
/// process restarted from that image resumes here and exits once the restart is done.
extern "C" fn hold_exit() {
    let me = sys::getpid();
    if IN_CHECKPOINT.load(Ordering::SeqCst) != me {
        return;
    }
    debug!("exiting during a checkpoint: waiting for it to end");
    let t0 = std::time::Instant::now();
    while IN_CHECKPOINT.load(Ordering::SeqCst) == me && t0.elapsed() < EXIT_HOLD {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The coordinator connection's descriptor (never saved in an image).
static CONN_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Called from the library constructor.
pub fn start() {
    let Ok(status) = std::env::var("MANA_STATUS_FILE") else {
        return;
    };
    // The process mana_launch exec'd is the job member's root; a descendant (it kept
    // LD_PRELOAD) is checkpointed with it when the root named its socket (members.rs).
    if let Ok(pid) = std::env::var("MANA_LAUNCH_PID") {
        if pid.parse::<i32>().ok() != Some(sys::getpid()) {
            if std::env::var_os(crate::members::ENV).is_none() {
                return;
            }
            IS_MEMBER.store(true, Ordering::Relaxed);
        }
    }
    mana_coordinator::init_runtime_logging(std::path::Path::new(&status));
    // The MPI checks are the launched program's (a descendant never reaches MPI through
    // the runtime): a child that starts by the thousand (`system` in a loop) skips them.
    if !is_member() {
        crate::mpi_guard::check_executable();
        crate::mpi_guard::check_loaded();
    }
    find_own_range();
    *INHERITED.lock().unwrap_or_else(|p| p.into_inner()) = procfs::inherited();
    LAUNCHER_PMI_FD.store(
        pmi_fd_of(std::env::var("PMI_FD").ok().as_deref()),
        Ordering::Relaxed,
    );
    HYDRA_PMI.store(
        is_hydra(|k| std::env::var_os(k).is_some()),
        Ordering::Relaxed,
    );
    UNDER_LAUNCHER.store(mana_coordinator::under_launcher(), Ordering::Relaxed);
    let ckpt_dir = std::env::var("MANA_CKPT_DIR").unwrap_or_else(|_| "ckpt".into());
    let cfg = Config {
        status_file: status.into(),
        ckpt_dir: ckpt_dir.into(),
        interval: std::env::var("MANA_INTERVAL")
            .ok()
            .and_then(|v| v.parse().ok()),
        rank: launcher_var(&[
            "PMI_RANK",
            "SLURM_PROCID",
            "PMIX_RANK",
            "OMPI_COMM_WORLD_RANK",
        ])
        .unwrap_or(0),
        world_size: launcher_var(&["PMI_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"])
            .unwrap_or(1),
        program: std::fs::read_link("/proc/self/exe")
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        last_generation: 0,
        keep: std::env::var("MANA_KEEP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_KEEP),
    };
    let cfg = Config {
        last_generation: if is_member() {
            0
        } else {
            CkptDir::new(&cfg.ckpt_dir)
                .latest()
                .ok()
                .flatten()
                .unwrap_or(0)
        },
        ..cfg
    };
    if let Err(e) = threads::install_handler() {
        eprintln!("mana: {e}; checkpointing is disabled");
        return;
    }
    OWN_TABLES.store(
        !UNDER_LAUNCHER.load(Ordering::Relaxed)
            && !crate::mpi::loaded()
            && std::env::var_os("MANA_SHARED_FDS").is_none(),
        Ordering::Relaxed,
    );
    debug!(
        own_tables = own_tables(),
        "runtime threads' descriptor tables"
    );
    if !is_member() {
        crate::ckpt_signal::start(cfg.status_file.clone());
        crate::members::name_for_descendants(cfg.rank);
        crate::members::note_preexisting();
        crate::members::note_launch_stdio();
    }
    *START_CONFIG.lock().unwrap_or_else(|p| p.into_inner()) = Some(cfg.clone());
    // A child made by fork has only the forking thread: every lock the runtime's
    // threads may hold is taken around the fork (the runtime heap's by dlmalloc's own
    // handlers, registered first so that its child handler runs before ours).
    // SAFETY: registers dlmalloc's fork handlers (once); allocations before are fine
    // (they only take and release its lock).
    unsafe { dlmalloc::enable_alloc_after_fork() };
    // SAFETY: registering plain extern "C" functions as fork handlers.
    unsafe {
        libc::pthread_atfork(
            Some(crate::fork::before_fork),
            Some(crate::fork::after_fork_in_parent),
            Some(crate::fork::after_fork_in_child),
        )
    };
    spawn_runtime_thread(cfg);
}

/// This module's locks, held by the forking thread across a `fork` ([`crate::fork`]);
/// the lease's before the heartbeat's, as [`claim_lease`] takes them.
pub(crate) fn hold_for_fork() -> Vec<Box<dyn std::any::Any>> {
    use crate::fork::held;
    vec![
        held(&LEASE),
        held(&HEARTBEAT_JOB),
        held(&INHERITED),
        held(&POSIX_TIMERS),
        held(&START_CONFIG),
    ]
}

/// The runtime's and the lower half's descriptors in the application's table now (an MPI
/// rank shares it), for a look at the application's sockets outside a write.
pub(crate) fn not_the_programs_fds() -> Vec<i32> {
    let mut v = vec![
        CONN_FD.load(Ordering::Relaxed),
        crate::ckpt_signal::request_fd(),
        LEASE_FD.load(Ordering::Relaxed),
        LAUNCHER_PMI_FD.load(Ordering::Relaxed),
    ];
    v.extend(crate::members::runtime_fds());
    v.extend(crate::mpi::lower_fds());
    v.extend(crate::mpi::deferred_fds());
    v.retain(|&fd| fd >= 0);
    v
}

/// Whether the current checkpoint is an MPI one (every rank of the job takes part).
pub(crate) fn mpi_job() -> bool {
    MPI_JOB.load(Ordering::Relaxed)
}

/// Whether this process is a descendant of a job member's launched process, checkpointed
/// through it (members.rs), not registered with the coordinator itself.
static IS_MEMBER: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

pub fn is_member() -> bool {
    IS_MEMBER.load(Ordering::Relaxed)
}

/// In a child made by `fork` (not `vfork`/`posix_spawn`: those exec, and the library
/// constructor starts the runtime again): it has no checkpoint thread (fork copies only
/// the caller); it gets one that joins the launched process as a member.
pub(crate) fn after_fork_in_child() {
    crate::members::forked();
    let Ok(cfg) = START_CONFIG.try_lock().map(|c| c.clone()) else {
        return;
    };
    let Some(cfg) = cfg else {
        return;
    };
    if std::env::var_os(crate::members::ENV).is_none() {
        return;
    }
    IS_MEMBER.store(true, Ordering::Relaxed);
    MPI_JOB.store(false, Ordering::Relaxed);
    CONN_FD.store(-1, Ordering::Relaxed);
    spawn_runtime_thread(cfg);
}

fn spawn_runtime_thread(cfg: Config) {
    let epoch = RUNTIME_EPOCH.load(Ordering::Acquire);
    let spawned = sys::spawn_blocked(
        std::thread::Builder::new()
            .name("mana-ckpt".into())
            .stack_size(1 << 20),
        move || {
            if is_member() {
                RUNTIME_TID.store(sys::gettid(), Ordering::Release);
                if OWN_TABLES.load(Ordering::Acquire) && !procfs::own_table() {
                    OWN_TABLES.store(false, Ordering::Release);
                }
                crate::members::serve_member(cfg)
            } else {
                run(cfg, epoch)
            }
        },
    );
    if let Err(e) = spawned {
        eprintln!("mana: cannot start the checkpoint thread: {e}; checkpointing is disabled");
    }
}

/// Whether the runtime's threads keep descriptor tables of their own
/// ([`procfs::own_table`]): in a process that is no MPI rank (not under a launcher, no
/// lower half loaded: a singleton MPI program gives it up at its first MPI call,
/// [`mpi_arrived`]). An MPI rank's checkpoint thread drains messages through the lower
/// half, whose descriptors the application's threads open: it shares their table.
/// `MANA_SHARED_FDS` (any value) turns it off.
static OWN_TABLES: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether the runtime's threads keep descriptor tables of their own.
pub fn own_tables() -> bool {
    OWN_TABLES.load(Ordering::Relaxed)
}

/// The configuration the runtime started with, for a checkpoint thread started again.
static START_CONFIG: std::sync::Mutex<Option<Config>> = std::sync::Mutex::new(None);

/// Moved when a checkpoint thread must give way to a new one: the old one ends at its
/// next wake-up (at most [`RETIRE_POLL`] later).
static RUNTIME_EPOCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How often a checkpoint thread with a table of its own looks whether it must give way.
const RETIRE_POLL: Duration = Duration::from_millis(200);

/// Called on the application's thread whose MPI call loads the lower half in a process
/// started without a launcher (a singleton MPI program): the checkpoint thread, which kept a descriptor table
/// of its own, gives way to a new one that shares the application's — the drain uses the
/// descriptors MPI opens. The new thread registers with the coordinator afresh.
pub fn mpi_arrived() {
    if !OWN_TABLES.swap(false, Ordering::AcqRel) {
        return;
    }
    let Some(cfg) = START_CONFIG
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
    else {
        return;
    };
    RETIRING_TID.store(RUNTIME_TID.load(Ordering::Acquire), Ordering::Release);
    RUNTIME_EPOCH.fetch_add(1, Ordering::AcqRel);
    // The old thread's registration ends before the new one's begins: a checkpoint round
    // never counts both (one of them leaving would fail it).
    let t0 = std::time::Instant::now();
    while RETIRING_TID.load(Ordering::Acquire) != 0 && t0.elapsed() < 10 * RETIRE_POLL {
        std::thread::sleep(Duration::from_millis(5));
    }
    info!(waited = ?t0.elapsed(), "MPI starts in a process without a launcher: the checkpoint thread now shares the application's descriptor table");
    spawn_runtime_thread(cfg);
}

/// The checkpoint thread's id, and that of one giving way ([`mpi_arrived`]) until it
/// ended: a checkpoint meanwhile must not try to stop it (it blocks every signal).
static RUNTIME_TID: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);
static RETIRING_TID: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(0);

fn retired(epoch: u64) -> bool {
    RUNTIME_EPOCH.load(Ordering::Acquire) != epoch
}

/// The first of `vars` set in the environment, as a number.
fn launcher_var(vars: &[&str]) -> Option<u32> {
    vars.iter()
        .find_map(|v| std::env::var(v).ok())
        .and_then(|v| v.parse().ok())
}

fn find_own_range() {
    // SAFETY: zeroed Dl_info is a valid out-buffer; dladdr only reads loader state.
    let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: any address inside this library identifies it.
    if unsafe { libc::dladdr(&MAILBOX as *const Mailbox as *const c_void, &mut info) } == 0
        || info.dli_fname.is_null()
    {
        return;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
    let path = unsafe { core::ffi::CStr::from_ptr(info.dli_fname) }
        .to_string_lossy()
        .into_owned();
    let Ok(maps) = procfs::own_maps() else { return };
    let mut start = u64::MAX;
    let mut end = 0;
    for m in &maps {
        if m.name == path || (end != 0 && m.start == end && m.name.is_empty()) {
            start = start.min(m.start);
            end = end.max(m.end);
        }
    }
    if end != 0 {
        LIB_START.store(start, Ordering::Relaxed);
        LIB_END.store(end, Ordering::Relaxed);
    }
}

/// The job's lease on its checkpoint directory (issue 10, item 3), taken at the first
/// registration and held for the process's life; its descriptor is the runtime's.
static LEASE: std::sync::Mutex<Option<mana_image::ckptdir::Lease>> = std::sync::Mutex::new(None);
static LEASE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);
static LEASE_UNSUPPORTED_SAID: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

fn claim_lease(cfg: &Config, status: &StatusFile) -> Result<(), String> {
    let mut held = LEASE.lock().unwrap_or_else(|p| p.into_inner());
    if held.is_some() {
        return Ok(());
    }
    let job = mana_image::ckptdir::job_token(&status.secret);
    let mode = LeaseMode::from_env().unwrap_or_else(|e| {
        warn!("{e}; using flock");
        LeaseMode::Flock
    });
    match CkptDir::new(&cfg.ckpt_dir).claim(
        &job,
        &procfs::hostname(),
        crate::ids::visible_pid(),
        mode,
    ) {
        Ok(lease) => {
            if lease.needs_heartbeat() {
                if mode == LeaseMode::Flock && !LEASE_UNSUPPORTED_SAID.swap(true, Ordering::Relaxed)
                {
                    info!(dir = %cfg.ckpt_dir.display(), "the file system does not honour flock: the job holds its checkpoint directory by a heartbeat lease");
                }
                *HEARTBEAT_JOB.lock().unwrap_or_else(|p| p.into_inner()) = Some(job);
            }
            LEASE_FD.store(lease.fd(), Ordering::Relaxed);
            *held = Some(lease);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The job token of a heartbeat lease this process renews ([`CkptDir::beat`]).
static HEARTBEAT_JOB: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
static HEARTBEAT_FAILED_SAID: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Waits for the coordinator's next message, renewing a heartbeat lease meanwhile; false
/// if this checkpoint thread must give way to a new one ([`mpi_arrived`]).
fn wait_for_message(cfg: &Config, conn: &Connection, epoch: u64) -> bool {
    let mut since_beat = Duration::ZERO;
    loop {
        if retired(epoch) {
            return false;
        }
        let job = HEARTBEAT_JOB
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let watch = OWN_TABLES.load(Ordering::Acquire);
        if job.is_none() && !watch {
            return true;
        }
        let wait = if watch { RETIRE_POLL } else { HEARTBEAT };
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(conn.stream()),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; poll only reads and writes it.
        let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
        if n != 0 {
            return !retired(epoch); // a message, an error or an interruption: recv() tells which
        }
        since_beat += wait;
        let Some(job) = job else { continue };
        if since_beat < HEARTBEAT {
            continue;
        }
        since_beat = Duration::ZERO;
        match CkptDir::new(&cfg.ckpt_dir).beat(&job, &procfs::hostname(), crate::ids::visible_pid())
        {
            Ok(()) => HEARTBEAT_FAILED_SAID.store(false, Ordering::Relaxed),
            Err(e) => {
                if !HEARTBEAT_FAILED_SAID.swap(true, Ordering::Relaxed) {
                    warn!("cannot renew the checkpoint directory's lease: {e}");
                }
            }
        }
    }
}

/// After a restart the lease object in memory names a descriptor of the old process:
/// forgotten (never closed — its number may now be the application's), claimed again.
fn forget_lease() {
    if let Some(old) = LEASE.lock().unwrap_or_else(|p| p.into_inner()).take() {
        std::mem::forget(old);
    }
    LEASE_FD.store(-1, Ordering::Relaxed);
    *HEARTBEAT_JOB.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

fn connect(cfg: &Config) -> Result<Connection, String> {
    let status = StatusFile::read(&cfg.status_file).map_err(|e| e.to_string())?;
    let info = ProcessInfo {
        host: procfs::hostname(),
        pid: crate::ids::visible_pid(),
        rank: cfg.rank,
        world_size: cfg.world_size,
        program: cfg.program.clone(),
        ckpt_dir: cfg.ckpt_dir.display().to_string(),
        last_generation: cfg.last_generation,
        interval_secs: cfg.interval,
        dir_generation: CkptDir::new(&cfg.ckpt_dir).highest_generation(),
    };
    let (conn, reply) =
        Connection::connect(&status, Role::Process(info)).map_err(|e| e.to_string())?;
    use std::os::fd::AsRawFd;
    CONN_FD.store(conn.stream().as_raw_fd(), Ordering::Relaxed);
    match reply {
        FromCoord::Welcome { id } => {
            // The lease only once the coordinator proved the job's secret and took us.
            if let Err(e) = claim_lease(cfg, &status) {
                CONN_FD.store(-1, Ordering::Relaxed);
                return Err(e);
            }
            info!(id, "registered with the coordinator");
            Ok(conn)
        }
        FromCoord::Error(e) => Err(e),
        other => Err(format!("unexpected reply from the coordinator: {other:?}")),
    }
}

enum Outcome {
    Continue,
    Restarted,
}

/// How often a process that lost its coordinator tries the status file again.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

fn run(cfg: Config, epoch: u64) {
    serve(cfg, epoch);
    if retired(epoch) {
        // Its lease descriptor is in this thread's table, closed as the thread ends; the
        // new thread claims the lease again. So are the child-process sockets.
        forget_lease();
        crate::members::retire();
        let _ =
            RETIRING_TID.compare_exchange(sys::gettid(), 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

fn serve(mut cfg: Config, epoch: u64) {
    // Until the first registration a failure is final (no coordinator for this job);
    // after one, the process waits for a coordinator to take over (issue 10: a
    // replacement started with the same status file keeps the secret and adopts the job).
    let mut registered_once = false;
    let mut waiting_since: Option<std::time::Instant> = None;
    loop {
        // Again after a restart: the restored thread has another id.
        RUNTIME_TID.store(sys::gettid(), Ordering::Release);
        if OWN_TABLES.load(Ordering::Acquire) && !procfs::own_table() {
            warn!("cannot give the checkpoint thread a descriptor table of its own (close_range with CLOSE_RANGE_UNSHARE); it shares the application's");
            OWN_TABLES.store(false, Ordering::Release);
        }
        if retired(epoch) {
            return;
        }
        let mut conn = match connect(&cfg) {
            Ok(c) => {
                if let Some(t) = waiting_since.take() {
                    info!(after = ?t.elapsed(), "a new coordinator took over; checkpoints resume");
                }
                registered_once = true;
                // Hash the mapped files now, while nothing waits for this thread: the
                // first checkpoint then finds them done.
                let t = std::time::Instant::now();
                write::warm_hashes(&crate::mpi::lower_regions());
                debug!(elapsed = ?t.elapsed(), "mapped files hashed at registration");
                c
            }
            Err(e) if !registered_once => {
                eprintln!("mana: {e}; this process will not be checkpointed");
                return;
            }
            Err(e) => {
                debug!("no coordinator yet ({e})");
                std::thread::sleep(RECONNECT_EVERY);
                continue;
            }
        };
        loop {
            if !wait_for_message(&cfg, &conn, epoch) {
                debug!("this checkpoint thread gives way to a new one");
                return;
            }
            match conn.recv() {
                Ok(FromCoord::Checkpoint { generation }) => {
                    let outcome = {
                        let _busy = InCheckpoint::enter();
                        checkpoint(&mut cfg, &mut conn, generation)
                    };
                    match outcome {
                        Outcome::Continue => {}
                        Outcome::Restarted => {
                            // The socket of the old process does not exist here; its number may
                            // now be an application file: never close it.
                            std::mem::forget(conn);
                            forget_lease();
                            crate::ckpt_signal::restart();
                            registered_once = false;
                            break;
                        }
                    }
                }
                Ok(FromCoord::Kill) => kill_self(),
                Ok(other) => debug!(?other, "ignoring message"),
                Err(e) => {
                    warn!("lost the coordinator ({e}); the job runs on, waiting for a coordinator started with the same status file to take over");
                    CONN_FD.store(-1, Ordering::Relaxed);
                    drop(conn);
                    waiting_since = Some(std::time::Instant::now());
                    break;
                }
            }
        }
    }
}

fn kill_self() -> ! {
    // SAFETY: raising SIGKILL on ourselves.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!("SIGKILL returned")
}

fn fixed_msg(s: &str) -> [u8; 512] {
    let mut b = [0u8; 512];
    let n = s.len().min(511);
    b[..n].copy_from_slice(&s.as_bytes()[..n]);
    b
}

fn from_fixed(b: &[u8]) -> String {
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..n]).into_owned()
}

/// One checkpoint: `prepare → quiesce → write → commit → resume`.
fn checkpoint(cfg: &mut Config, conn: &mut Connection, generation: u64) -> Outcome {
    let span = info_span!("checkpoint", rank = cfg.rank, generation);
    let _g = span.enter();
    let t0 = std::time::Instant::now();
    note_process_name();
    let dir = CkptDir::new(&cfg.ckpt_dir);
    let path = dir.image_path(generation, cfg.rank);
    let (fd, pagemap_fd) = match prepare(&dir, generation, cfg.rank) {
        Ok(x) => x,
        Err(e) => {
            fail(conn, generation, &e);
            return Outcome::Continue;
        }
    };
    let mpi = crate::mpi_ckpt::in_mpi_job(UNDER_LAUNCHER.load(Ordering::Relaxed));
    MPI_JOB.store(mpi, Ordering::Relaxed);
    // Content hashes of the mapped files, while the application still runs (all cached
    // since the registration but for libraries loaded since).
    write::warm_hashes(&if mpi {
        crate::mpi::lower_regions()
    } else {
        Vec::new()
    });
    debug!(elapsed = ?t0.elapsed(), "mapped files hashed");
    if mpi {
        match crate::mpi_ckpt::prepare(conn, generation) {
            Ok(p) => {
                debug!(drained = p.drained, agree = ?p.agree, drain = ?p.drain, "MPI quiet");
                // SAFETY: only the checkpoint thread uses MPI_STATE.
                unsafe { *MPI_STATE.0.get() = Some(p) };
            }
            Err(e) => {
                sys::close(fd);
                sys::close(pagemap_fd);
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_dir(dir.gen_dir(generation));
                match crate::mpi_ckpt::take_round_end() {
                    // Another rank's failure ended the round while this one waited: its
                    // Resume is read, there is nothing to report and nothing to wait for.
                    Some(FromCoord::Kill) => kill_self(),
                    Some(_) => error!("checkpoint failed: MPI: {e}"),
                    None => fail(conn, generation, &format!("MPI: {e}")),
                }
                return Outcome::Continue;
            }
        }
    }
    let mut not_ours = if mpi {
        crate::mpi::lower_tids()
    } else {
        Vec::new()
    };
    // The thread waiting for the checkpoint signal is the runtime's, not the application's.
    not_ours.push(crate::ckpt_signal::tid());
    not_ours.push(RETIRING_TID.load(Ordering::Acquire));
    not_ours.push(crate::members::listener_tid());
    CKPT_MONO.store(kernel_monotonic_ns(), Ordering::Release);
    save_itimers();
    save_posix_timers();
    save_resources();
    let parked = match threads::quiesce(Duration::from_secs(30), &not_ours) {
        Ok(n) => n,
        Err(e) => {
            sys::close(fd);
            sys::close(pagemap_fd);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir(dir.gen_dir(generation));
            if mpi {
                crate::mpi_ckpt::finish();
            }
            fail(conn, generation, &e);
            return Outcome::Continue;
        }
    };
    debug!(parked, elapsed = ?t0.elapsed(), "quiesced");
    // Connections between ranks: every rank stopped sending before any peeks.
    if mpi {
        if let Err(e) = crate::rank_links::settle(conn, generation) {
            sys::close(fd);
            sys::close(pagemap_fd);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir(dir.gen_dir(generation));
            threads::resume(parked);
            crate::mpi_ckpt::finish();
            match crate::mpi_ckpt::take_round_end() {
                Some(FromCoord::Kill) => kill_self(),
                Some(_) => error!("checkpoint failed: {e}"),
                None => fail(conn, generation, &e),
            }
            return Outcome::Continue;
        }
    }
    // The descendants: stopped once this process is, then writing beside it.
    let root_dir = std::path::absolute(&cfg.ckpt_dir).unwrap_or(cfg.ckpt_dir.clone());
    let gen_dir = CkptDir::new(&root_dir).gen_dir(generation);
    let mut round = match crate::members::Round::stop(generation).and_then(|mut r| {
        // The launcher's descriptors, and the lower half's (a child that execs keeps
        // those MPI opened without close-on-exec: not the tree's).
        let mut inherited = INHERITED.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if mpi {
            inherited.extend(
                crate::mpi::lower_fds()
                    .into_iter()
                    .filter_map(|fd| procfs::inode(fd).map(|i| (fd, i))),
            );
        }
        r.write(generation, &root_dir, cfg.rank, &inherited)
            .map(|()| r)
    }) {
        Ok(r) => r,
        Err(e) => {
            sys::close(fd);
            sys::close(pagemap_fd);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir(dir.gen_dir(generation));
            threads::resume(parked);
            if mpi {
                crate::mpi_ckpt::finish();
            }
            fail(conn, generation, &e);
            return Outcome::Continue;
        }
    };
    let written = match write_phase(cfg, generation, parked, fd, pagemap_fd) {
        None => {
            // Restored: the round's sockets were the checkpointed process's.
            std::mem::forget(round);
            return restarted(cfg, parked, mpi);
        }
        Some(Ok(w)) => {
            for fd in procfs::take_outside_connections() {
                warn!(fd, "descriptor {fd} is a connection to something outside the process: after a restart it reads as closed (Unix) or reset (TCP) by its peer, unless (TCP) its other end is a rank of this job");
            }
            w
        }
        Some(Err(e)) => {
            let _ = round.collect();
            round.discard(&gen_dir, cfg.rank);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir(dir.gen_dir(generation));
            threads::resume(parked);
            if mpi {
                crate::mpi_ckpt::finish();
            }
            fail(
                conn,
                generation,
                &format!("writing {}: {e}", path.display()),
            );
            return Outcome::Continue;
        }
    };
    info!(
        bytes = written.bytes,
        stored = written.stored,
        mapped = written.mapped,
        write_s = written.write_secs,
        sync_s = written.sync_secs,
        elapsed = ?t0.elapsed(),
        "image written"
    );
    let members = match round.collect() {
        Ok(m) => m,
        Err(e) => {
            round.discard(&gen_dir, cfg.rank);
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_dir(dir.gen_dir(generation));
            threads::resume(parked);
            if mpi {
                crate::mpi_ckpt::finish();
            }
            drop(round);
            fail(conn, generation, &e);
            return Outcome::Continue;
        }
    };
    let entry = ManifestEntry {
        rank: cfg.rank,
        host: procfs::hostname(),
        pid: crate::ids::visible_pid(),
        file: mana_image::ckptdir::image_name(cfg.rank),
        bytes: written.bytes,
        header_checksum: written.header_checksum,
        max_id: members
            .iter()
            .map(|m| m.max_id)
            .fold(written.max_id, i32::max),
        members,
    };
    if let Err(e) = conn.send(&ToCoord::Written { generation, entry }) {
        warn!("lost the coordinator while checkpointing: {e}");
        threads::resume(parked);
        if mpi {
            crate::mpi_ckpt::finish();
        }
        return Outcome::Continue;
    }
    commit_phase(cfg, conn, &dir, generation, &path, &mut round);
    threads::resume(parked);
    if mpi {
        crate::mpi_ckpt::finish();
    }
    debug!(elapsed = ?t0.elapsed(), "resumed");
    Outcome::Continue
}

fn fail(conn: &mut Connection, generation: u64, reason: &str) {
    error!("checkpoint failed: {reason}");
    let _ = conn.send(&ToCoord::CheckpointFailed {
        generation,
        reason: reason.to_string(),
    });
    // The coordinator answers with Resume{committed: false}.
    let _ = conn.recv();
}

/// Creates the generation directory and opens the image and pagemap files.
fn prepare(dir: &CkptDir, generation: u64, rank: u32) -> Result<(i32, i32), String> {
    use std::os::fd::IntoRawFd;
    let fd = dir
        .create_image(generation, rank)
        .map_err(|e| format!("cannot create the image: {e}"))?
        .into_raw_fd();
    let pm = sys::open_readonly(c"/proc/self/pagemap").map_err(|e| {
        sys::close(fd);
        format!("cannot open /proc/self/pagemap (errno {e})")
    })?;
    Ok((fd, pm))
}

/// Saves this thread's context and writes the image. `None` means the process was
/// restarted from that image (the call returned a second time).
fn write_phase(
    cfg: &Config,
    generation: u64,
    parked: usize,
    fd: i32,
    pagemap_fd: i32,
) -> Option<Result<Written, String>> {
    // SAFETY: only the checkpoint thread uses CKPT_SLOT and CALL.
    let slot = unsafe { &mut *CKPT_SLOT.0.get() };
    slot.capture_current();
    // SAFETY: as above.
    unsafe {
        *CALL.0.get() = Some(WindowCall {
            cfg,
            generation,
            parked,
            fd,
            pagemap_fd,
            result: Err(fixed_msg("not run")),
        })
    };
    if let Err(e) = alloc::begin_window() {
        return Some(Err(format!("cannot map the write arena (errno {e})")));
    }
    // SAFETY: `slot.ctx` is static memory; `write_in_window` touches only statics and
    // memory it allocates in the window.
    let restarted = unsafe { save_and_call(&mut slot.ctx, write_in_window, core::ptr::null_mut()) };
    if restarted {
        return None;
    }
    alloc::end_window(&crate::ALLOC);
    sys::close(fd);
    sys::close(pagemap_fd);
    // SAFETY: the window is closed; CALL holds plain data only.
    let call = unsafe { (*CALL.0.get()).take() }.expect("window call");
    Some(call.result.map_err(|b| from_fixed(&b)))
}

extern "C" fn write_in_window(_: *mut c_void) {
    // SAFETY: set by write_phase just before; only this thread uses it.
    let call = unsafe { (*CALL.0.get()).as_mut() }.expect("window call");
    // SAFETY: `cfg` outlives the window (it is owned by the checkpoint thread's caller).
    let cfg = unsafe { &*call.cfg };
    call.result = build_and_write(cfg, call).map_err(|e| fixed_msg(&e));
}

fn build_and_write(cfg: &Config, call: &WindowCall) -> Result<Written, String> {
    let pid = sys::getpid();
    // SAFETY: CKPT_SLOT was filled by write_phase; its ctx by save_and_call. It is static
    // and not written again before the next checkpoint.
    let own: &'static ThreadSlot = unsafe { &*CKPT_SLOT.0.get() };
    let mut thread_states = vec![own.to_image(pid)];
    thread_states.extend(
        threads::parked_slots(call.parked)
            .iter()
            .map(|s| s.to_image(pid)),
    );
    // A checkpoint thread with a table of its own holds its descriptors there, out of
    // the application's table (the one listed).
    let mut own_fds = if own_tables() {
        vec![LAUNCHER_PMI_FD.load(Ordering::Relaxed)]
    } else {
        vec![
            call.fd,
            call.pagemap_fd,
            CONN_FD.load(Ordering::Relaxed),
            crate::ckpt_signal::request_fd(),
            LEASE_FD.load(Ordering::Relaxed),
            LAUNCHER_PMI_FD.load(Ordering::Relaxed),
        ]
        .into_iter()
        .chain(crate::members::runtime_fds())
        .collect()
    };
    let (mpi, lower) = if MPI_JOB.load(Ordering::Relaxed) {
        own_fds.extend(crate::mpi::lower_fds());
        own_fds.extend(crate::mpi::deferred_fds());
        let lower = crate::mpi::lower_regions();
        // SAFETY: only the checkpoint thread uses MPI_STATE.
        let drained = unsafe { (*MPI_STATE.0.get()).as_ref() }.map_or(0, |p| p.drained);
        let image = mana_image::MpiImage {
            lower_regions: lower.iter().map(|&(s, e)| [s, e]).collect(),
            drained_messages: drained,
        };
        (Some(image), lower)
    } else if is_member() && crate::mpi::loaded() {
        // A child an MPI rank forked has a copy of the rank's lower half, which it never
        // runs (a child of an MPI process may not call MPI): left out of its image, as
        // the lower half's descriptors are; a restart brings none.
        own_fds.extend(crate::mpi::lower_fds());
        own_fds.extend(crate::mpi::deferred_fds());
        (None, crate::mpi::lower_regions())
    } else {
        (None, Vec::new())
    };
    let inherited = INHERITED.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let files = procfs::files(&own_fds, &inherited)?;
    let header = ImageHeader {
        generation: call.generation,
        rank: cfg.rank,
        world_size: cfg.world_size,
        hostname: procfs::hostname(),
        pid,
        program: cfg.program.clone(),
        created_unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
        cwd: procfs::cwd(),
        umask: procfs::umask(),
        regions: Vec::new(),
        threads: thread_states,
        files,
        signals: procfs::signal_actions(),
        mm: procfs::mm_layout()?,
        vdso: None,
        restart_mailbox: MAILBOX.0.get() as u64,
        mpi,
        state_digest_at: 0,
        zombies: procfs::zombies(),
    };
    let here = 0u8;
    let sp = &here as *const u8 as u64;
    let mut volatile = vec![
        (sp, sp + 1),
        (
            LIB_START.load(Ordering::Relaxed),
            LIB_END.load(Ordering::Relaxed),
        ),
    ];
    // A parked thread's handler wakes up now and then while the image is written (its
    // futex wait has a timeout), writing below its saved stack pointer: its stack (and
    // alternate signal stack) is written through the bounce buffer, so that the data and
    // the checksum agree. What changes there lies below the saved context: a restart does
    // not read it. Each time it runs again the kernel also rewrites its rseq area (the CPU
    // it runs on) in its thread control block: that region too (CI, 2026-12-03: the main
    // thread's TLS region of `datatypes` failed its checksum after a write longer than the
    // 1 s wait; a restart registers the area again).
    for slot in threads::parked_slots(call.parked) {
        volatile.push((slot.ctx.rsp.saturating_sub(1), slot.ctx.rsp));
        if slot.rseq_addr != 0 {
            volatile.push((slot.rseq_addr, slot.rseq_addr + 32));
        }
        if slot.altstack.flags & libc::SS_DISABLE == 0 && slot.altstack.size > 0 {
            let base = slot.altstack.sp;
            volatile.push((base, base + slot.altstack.size));
        }
    }
    let mut job = Job {
        fd: call.fd,
        pagemap_fd: call.pagemap_fd,
        header,
        volatile,
        lower,
    };
    write::write_image(&mut job)
}

/// Waits for the coordinator's verdict; the leader writes the MANIFEST and LATEST.
fn commit_phase(
    cfg: &Config,
    conn: &mut Connection,
    dir: &CkptDir,
    generation: u64,
    path: &std::path::Path,
    round: &mut crate::members::Round,
) {
    let mut leader = false;
    loop {
        match conn.recv() {
            Ok(FromCoord::Commit { manifest }) => {
                let reply = match dir.commit(&manifest) {
                    Ok(d) => {
                        leader = true;
                        ToCoord::CommitDone {
                            generation,
                            dir: d.display().to_string(),
                        }
                    }
                    Err(e) => ToCoord::CommitFailed {
                        generation,
                        reason: e.to_string(),
                    },
                };
                if conn.send(&reply).is_err() {
                    return;
                }
            }
            Ok(FromCoord::Resume {
                committed, exit, ..
            }) => {
                round.finish(committed, exit);
                if committed {
                    info!("generation committed");
                    // The leader prunes once the round is over: older committed
                    // generations beyond --keep, and the leftovers of failed attempts.
                    if leader {
                        for (g, e) in dir.prune(cfg.keep, generation) {
                            match e {
                                None => debug!(generation = g, "pruned"),
                                Some(e) => warn!(generation = g, error = %e, "cannot prune"),
                            }
                        }
                    }
                } else if dir.latest().ok().flatten() == Some(generation) {
                    // LATEST moved before the round failed (a rank left between the
                    // leader's commit and its answer): the images are the committed
                    // generation's and stay.
                    warn!("checkpoint aborted by the coordinator after LATEST named it; keeping its images");
                } else {
                    warn!(
                        "checkpoint aborted by the coordinator; removing {}",
                        path.display()
                    );
                    round.discard(&dir.gen_dir(generation), cfg.rank);
                    let _ = std::fs::remove_file(path);
                    let _ = std::fs::remove_dir(dir.gen_dir(generation));
                }
                if exit {
                    info!("exiting after the checkpoint, as requested");
                    leave_launcher_quietly();
                    // SAFETY: _exit ends the process without running the application's
                    // atexit handlers or flushing its stdio (the image has those buffers).
                    unsafe { libc::_exit(0) };
                }
                let _ = cfg;
                return;
            }
            Ok(FromCoord::Kill) => {
                round.kill();
                kill_self()
            }
            Ok(other) => debug!(?other, "ignoring message during commit"),
            Err(e) => {
                warn!("lost the coordinator during commit: {e}");
                return;
            }
        }
    }
}

/// The write phase returned a second time: this is the restored process.
/// The restart's environment the restarter left in the mailbox (then unmapped here).
fn restart_env(mb: &RestartMailbox) -> Vec<(String, String)> {
    if mb.magic != MAILBOX_MAGIC || mb.env_len == 0 {
        return std::env::vars().collect();
    }
    // SAFETY: the restarter's mapping of `env_len` bytes, kept for us.
    let blob =
        unsafe { core::slice::from_raw_parts(mb.env_start as *const u8, mb.env_len as usize) };
    let vars = blob
        .split(|&b| b == 0)
        .filter(|kv| !kv.is_empty())
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    // SAFETY: the mapping is ours now and nothing refers to it any more.
    unsafe { sys::unmap(mb.env_start as *mut u8, mb.env_len as usize) };
    vars
}

/// How far the runtime's monotonic clock is behind the kernel's: each restart adds the
/// time between the checkpoint and the restart, so that clock goes on from the
/// checkpoint's instant ([`monotonic_ns`]).
static MONO_SHIFT: core::sync::atomic::AtomicI64 = core::sync::atomic::AtomicI64::new(0);
/// The process's interval timers (`ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`: also
/// `alarm`) when the threads were last stopped: set again after a restart, with the time
/// they had left (issue 11, item 4).
static ITIMERS: Static<[libc::itimerval; 3]> = Static(UnsafeCell::new(
    [libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    }; 3],
));
const ITIMER_KINDS: [libc::c_int; 3] = [libc::ITIMER_REAL, libc::ITIMER_VIRTUAL, libc::ITIMER_PROF];

/// Soft and hard resource limits (`RLIMIT_*` 0..16), the personality and the checkpoint
/// thread's own CPU affinity when the threads were last stopped: put back after a
/// restart as far as the node allows (issue 11, item 7).
static LIMITS: Static<[libc::rlimit; 16]> = Static(UnsafeCell::new(
    [libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    }; 16],
));
static OWN_PERSONALITY: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
static OWN_AFFINITY: Static<[u64; 16]> = Static(UnsafeCell::new([0; 16]));

const LIMIT_NAMES: [&str; 16] = [
    "cpu",
    "fsize",
    "data",
    "stack",
    "core",
    "rss",
    "nproc",
    "nofile",
    "memlock",
    "as",
    "locks",
    "sigpending",
    "msgqueue",
    "nice",
    "rtprio",
    "rttime",
];

fn save_resources() {
    // SAFETY: only the checkpoint thread touches LIMITS and OWN_AFFINITY.
    let limits = unsafe { &mut *LIMITS.0.get() };
    for (r, l) in limits.iter_mut().enumerate() {
        // SAFETY: getrlimit into a valid rlimit.
        unsafe { libc::getrlimit(r as _, l) };
    }
    OWN_PERSONALITY.store(sys::personality(0xffff_ffff), Ordering::Release);
    // SAFETY: as above.
    unsafe { *OWN_AFFINITY.0.get() = sys::affinity().unwrap_or([0; 16]) };
    // Counted afresh by the threads of the next restart (the image holds 0).
    threads::AFFINITY_REFUSED.store(0, Ordering::Release);
}

/// After a restart: the soft limits the process had (each at most this node's hard
/// limit, which an ordinary user cannot raise: a lower one is logged), its personality
/// and its threads' CPU affinity where the node has those CPUs.
fn restore_resources() {
    // SAFETY: only the checkpoint thread touches LIMITS and OWN_AFFINITY.
    let limits = unsafe { &*LIMITS.0.get() };
    for (r, saved) in limits.iter().enumerate() {
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit into a valid rlimit.
        if unsafe { libc::getrlimit(r as _, &mut now) } != 0 || now.rlim_cur == saved.rlim_cur {
            continue;
        }
        let soft = saved.rlim_cur.min(now.rlim_max);
        if soft < saved.rlim_cur {
            info!(
                limit = LIMIT_NAMES[r],
                was = saved.rlim_cur,
                now = soft,
                "a soft resource limit is lower than at the checkpoint: this node's hard limit"
            );
        }
        let want = libc::rlimit {
            rlim_cur: soft,
            rlim_max: now.rlim_max,
        };
        // SAFETY: setrlimit with a soft limit at most the hard one.
        if unsafe { libc::setrlimit(r as _, &want) } != 0 {
            warn!(
                limit = LIMIT_NAMES[r],
                "cannot set a soft resource limit again"
            );
        }
    }
    // This thread's (the kernel keeps it per thread); each restored thread sets its own
    // (threads.rs).
    sys::personality(OWN_PERSONALITY.load(Ordering::Acquire));
    // SAFETY: as above.
    let own = unsafe { &*OWN_AFFINITY.0.get() };
    if own.iter().any(|&w| w != 0) && !sys::set_affinity(own) {
        threads::AFFINITY_REFUSED.fetch_add(1, Ordering::AcqRel);
    }
}

fn save_itimers() {
    // SAFETY: only the checkpoint thread touches ITIMERS.
    let saved = unsafe { &mut *ITIMERS.0.get() };
    for (t, kind) in saved.iter_mut().zip(ITIMER_KINDS) {
        // SAFETY: getitimer into a valid itimerval.
        unsafe { libc::getitimer(kind, t) };
    }
}

/// The process's POSIX timers at the last checkpoint ([`crate::posix_timers`]).
static POSIX_TIMERS: std::sync::Mutex<Vec<crate::posix_timers::SavedTimer>> =
    std::sync::Mutex::new(Vec::new());

fn save_posix_timers() {
    let saved = crate::posix_timers::save().unwrap_or_else(|e| {
        warn!("{e}; the process's POSIX timers will not come back after a restart");
        Vec::new()
    });
    *POSIX_TIMERS.lock().unwrap_or_else(|p| p.into_inner()) = saved;
}

/// After a restart, once every thread is back (their new ids written where glibc keeps
/// them): the POSIX timers, each notifying the same thread as before.
fn restore_posix_timers(parked: usize) {
    // SAFETY: CKPT_SLOT is this thread's, filled at the checkpoint.
    let own: &ThreadSlot = unsafe { &*CKPT_SLOT.0.get() };
    let mut pairs: Vec<(i32, i32)> = Vec::new();
    for s in std::iter::once(own).chain(threads::parked_slots(parked).iter()) {
        if s.tid_address != 0 {
            // SAFETY: glibc's tid field of a restored thread, written by the kernel when
            // the restorer made it (CLONE_PARENT_SETTID).
            let new = unsafe { core::ptr::read_volatile(s.tid_address as *const i32) };
            pairs.push((s.tid, new));
        }
    }
    let map = |old: i32| pairs.iter().find(|(o, _)| *o == old).map(|&(_, n)| n);
    crate::posix_timers::restarted(map);
    let saved = POSIX_TIMERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    crate::posix_timers::restore(&saved, map);
}

fn restore_itimers() {
    // SAFETY: only the checkpoint thread touches ITIMERS.
    let saved = unsafe { &*ITIMERS.0.get() };
    for (t, kind) in saved.iter().zip(ITIMER_KINDS) {
        if t.it_value.tv_sec != 0 || t.it_value.tv_usec != 0 {
            // SAFETY: setitimer from a valid itimerval.
            if unsafe { libc::setitimer(kind, t, core::ptr::null_mut()) } != 0 {
                warn!(timer = kind, "cannot set an interval timer again");
            }
        }
    }
}

/// The kernel's monotonic time when the threads were last stopped for a checkpoint.
static CKPT_MONO: core::sync::atomic::AtomicI64 = core::sync::atomic::AtomicI64::new(0);

fn kernel_monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a valid timespec (vDSO).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// The runtime's monotonic clock: the kernel's, less the time the job spent between its
/// checkpoints and their restarts (timed waits measure their remaining time on it).
pub fn monotonic_ns() -> i64 {
    kernel_monotonic_ns() - MONO_SHIFT.load(Ordering::Acquire)
}

/// The process's name (`/proc/PID/comm`, its first thread's) at the last checkpoint: after
/// a restart the thread that runs this code is the process's first (the restarter's
/// main thread), so it takes this name — `ps`, `top` and `pgrep` show the program, not
/// `mana_restart`.
static PROCESS_NAME: Static<[u8; 16]> = Static(UnsafeCell::new([0; 16]));

fn restarted(cfg: &mut Config, parked: usize, mpi: bool) -> Outcome {
    alloc::forget_window();
    crate::members::restarted();
    // The clock timed waits use goes on from the checkpoint's instant (before any
    // restored thread looks at it).
    MONO_SHIFT.fetch_add(
        kernel_monotonic_ns() - CKPT_MONO.load(Ordering::Acquire),
        Ordering::AcqRel,
    );
    restore_itimers();
    restore_resources();
    // SAFETY: only the checkpoint thread touches PROCESS_NAME.
    sys::set_thread_name(unsafe { &*PROCESS_NAME.0.get() });
    // SAFETY: written by the restarter before it resumed the threads.
    let mb = unsafe { &*MAILBOX.0.get() };
    if mb.magic == MAILBOX_MAGIC {
        cfg.status_file = PathBuf::from(from_fixed(&mb.status_file));
        cfg.ckpt_dir = PathBuf::from(from_fixed(&mb.ckpt_dir));
        cfg.last_generation = mb.generation;
        crate::ids::restarted(mb.visible_pid, mb.ns_root != 0);
    }
    threads::wait_arrived(parked);
    restore_posix_timers(parked);
    if mb.magic == MAILBOX_MAGIC && mb.restorer_len != 0 {
        // SAFETY: the restorer's area; every restored thread has left it (wait_arrived).
        unsafe { sys::unmap(mb.restorer_start as *mut u8, mb.restorer_len as usize) };
    }
    if mpi {
        // The checkpointed process's lower half did not come back: start a new one with
        // the restart's environment and bring MPI state back (docs/mpi-checkpoint.md); before
        // MPI_Init or after MPI_Finalize, the next MPI call loads it with that environment.
        let env = restart_env(mb);
        HYDRA_PMI.store(
            is_hydra(|k| env.iter().any(|(n, _)| n == k)),
            Ordering::Relaxed,
        );
        LAUNCHER_PMI_FD.store(
            pmi_fd_of(
                env.iter()
                    .find(|(k, _)| k == "PMI_FD")
                    .map(|(_, v)| v.as_str()),
            ),
            Ordering::Relaxed,
        );
        if let Err(e) = crate::mpi_ckpt::restart(env, cfg.rank, cfg.world_size) {
            eprintln!("mana: restarting MPI (rank {}): {e}", cfg.rank);
            // The other ranks may wait for this one inside MPI: end abnormally, so that
            // the launcher ends the whole job (after it had time to forward the line).
            std::thread::sleep(std::time::Duration::from_millis(300));
            kill_self();
        }
        crate::mpi_ckpt::finish();
        crate::rank_links::restore(
            &CkptDir::new(&cfg.ckpt_dir).image_path(cfg.last_generation, cfg.rank),
            cfg.rank,
            cfg.world_size,
        );
    }
    // The inherited descriptors' numbers now hold what the restarter put there.
    INHERITED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain_mut(|(fd, ino)| match procfs::inode(*fd) {
            Some(now) => {
                *ino = now;
                true
            }
            None => false,
        });
    if !is_member() {
        crate::members::note_launch_stdio();
    }
    // SAFETY: only this thread reads it; cleared so a stale mailbox is never reused.
    unsafe { (*MAILBOX.0.get()).magic = 0 };
    info!(generation = cfg.last_generation, parked, "restarted");
    threads::resume(parked);
    let refused = threads::AFFINITY_REFUSED.load(Ordering::Acquire);
    if refused > 0 {
        info!(
            threads = refused,
            "this node refused some threads' CPU affinity (CPUs it does not have): they run on any CPU"
        );
    }
    Outcome::Restarted
}

/// A member's checkpoint (members.rs): stops its threads, tells the root (`root`: the
/// connection), writes its image when told, then goes on or exits as told. Returns
/// whether this process is the one restored from the image.
pub fn member_checkpoint(cfg: &mut Config, root: i32, generation: u64) -> bool {
    use crate::members::ToMember;
    let pid = sys::getpid();
    let span = info_span!("checkpoint", rank = cfg.rank, generation, member = pid);
    let _g = span.enter();
    note_process_name();
    CKPT_MONO.store(kernel_monotonic_ns(), Ordering::Release);
    save_itimers();
    save_posix_timers();
    save_resources();
    let parked = match threads::quiesce(Duration::from_secs(30), &[]) {
        Ok(n) => n,
        Err(e) => {
            crate::members::failed(root, &e);
            return false;
        }
    };
    if !crate::members::stopped(root) {
        threads::resume(parked);
        return false;
    }
    let (dir, rank) = match crate::members::next(root) {
        Some(ToMember::Write {
            generation: g,
            dir,
            rank,
            outside,
            tree,
        }) if g == generation => {
            crate::members::set_outside(outside);
            crate::members::set_tree(tree);
            (CkptDir::new(dir), rank)
        }
        // The round ended before the images (or the root is gone).
        _ => {
            threads::resume(parked);
            return false;
        }
    };
    let name = mana_image::ckptdir::member_image_name(rank, pid);
    let path = dir.gen_dir(generation).join(&name);
    let opened = dir
        .create_named_image(generation, &name)
        .map_err(|e| format!("cannot create the image: {e}"))
        .and_then(|f| {
            use std::os::fd::IntoRawFd;
            let fd = f.into_raw_fd();
            sys::open_readonly(c"/proc/self/pagemap")
                .map(|pm| (fd, pm))
                .map_err(|e| {
                    sys::close(fd);
                    format!("cannot open /proc/self/pagemap (errno {e})")
                })
        });
    let (fd, pagemap_fd) = match opened {
        Ok(x) => x,
        Err(e) => {
            crate::members::failed(root, &e);
            threads::resume(parked);
            return false;
        }
    };
    match write_phase(cfg, generation, parked, fd, pagemap_fd) {
        None => {
            restarted(cfg, parked, false);
            return true;
        }
        Some(Err(e)) => {
            let _ = std::fs::remove_file(&path);
            crate::members::failed(root, &format!("writing {}: {e}", path.display()));
            threads::resume(parked);
            return false;
        }
        Some(Ok(w)) => {
            info!(bytes = w.bytes, "image written");
            let entry = mana_image::MemberEntry {
                pid,
                ppid: 0,
                file: name,
                bytes: w.bytes,
                header_checksum: w.header_checksum,
                max_id: w.max_id,
            };
            if !crate::members::written(root, entry) {
                let _ = std::fs::remove_file(&path);
                threads::resume(parked);
                return false;
            }
        }
    }
    match crate::members::next(root) {
        Some(ToMember::Resume { committed, exit }) => {
            if !committed {
                let _ = std::fs::remove_file(&path);
            } else if exit {
                info!("exiting after the checkpoint, as requested");
                // SAFETY: _exit ends the process without running the application's
                // atexit handlers or flushing its stdio (the image has those buffers).
                unsafe { libc::_exit(0) };
            }
        }
        other => debug!(
            ?other,
            "the launched process is gone during a checkpoint; going on"
        ),
    }
    threads::resume(parked);
    false
}

/// Keeps the process's name (`/proc/self/comm`) for the restored process.
fn note_process_name() {
    if let Ok(comm) = std::fs::read("/proc/self/comm") {
        let comm = comm.strip_suffix(b"\n").unwrap_or(&comm);
        let mut name = [0u8; 16];
        let n = comm.len().min(15);
        name[..n].copy_from_slice(&comm[..n]);
        // SAFETY: only the checkpoint thread touches PROCESS_NAME.
        unsafe { *PROCESS_NAME.0.get() = name };
    }
}
