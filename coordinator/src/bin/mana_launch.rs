//! `mana_launch`: run a program with the MANA runtime injected (see `mana_launch --help`).
//!
//! This binary has no Rust `fn main`: std's runtime start-up would set SIGPIPE to
//! "ignore" before our code runs, and an ignored signal survives `execve`, so the
//! application would stop dying on broken pipes. With `#![no_main]` nothing touches the
//! signal dispositions or the mask, and the program inherits exactly what a native run
//! would — including what the user set on purpose (`nohup`'s ignored SIGHUP, a
//! launcher's mask). (glibc hands argv to std through `.init_array`, so `std::env`
//! works as usual.)

#![no_main]

use clap::Parser;
use mana_coordinator::launch::{self, LaunchError};
use mana_coordinator::status;
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Run PROGRAM under MANA: it becomes checkpointable (`mana_status --checkpoint`) and
/// restartable (`mana_restart`).
///
/// mana_launch replaces itself with PROGRAM (same pid, standard streams and exit code),
/// with libmana.so (from mana_launch's own directory) in LD_PRELOAD and MANA_STATUS_FILE,
/// MANA_CKPT_DIR (and MANA_INTERVAL) set. PROGRAM must be dynamically linked.
///
/// The coordinator is found through the status file (--status-file, else
/// $MANA_STATUS_FILE, else ~/.mana-slurm-$SLURM_JOB_ID.rc in a Slurm job, else
/// ~/.mana.rc). Outside srun/mpiexec, if none is running, mana_launch starts one
/// (`mana_coordinator --daemon --exit-on-last`); under a launcher, start
/// `mana_coordinator --daemon` yourself first, or every rank would start its own.
#[derive(Parser, Debug)]
#[command(name = "mana_launch", version)]
struct Cli {
    /// Status file of the job's coordinator; it must name a running coordinator.
    #[arg(long, value_name = "FILE")]
    status_file: Option<PathBuf>,

    /// Checkpoint directory (default: $MANA_CKPT_DIR, else ./ckpt); created if missing.
    #[arg(long, value_name = "DIR")]
    ckptdir: Option<PathBuf>,

    /// Ask for a checkpoint every SECONDS seconds (if the coordinator has no interval
    /// of its own).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    interval: Option<u64>,

    /// Checkpoint the whole job when any of its processes receives SIGNAL (a name such as
    /// USR1 or SIGUSR1, or a number): for `srun --signal=USR1@120 mana_launch
    /// --checkpoint-signal USR1 ./app`, a checkpoint 120 s before the time limit. The
    /// signal is then the runtime's: the application does not see it.
    #[arg(long, value_name = "SIGNAL", value_parser = parse_signal)]
    checkpoint_signal: Option<i32>,

    /// Keep the N newest committed generations in the checkpoint directory and remove
    /// older ones after each commit (0 keeps all; default 2: the newest and the one
    /// before it). Leftovers of failed attempts are always removed.
    #[arg(long, value_name = "N")]
    keep: Option<usize>,

    /// How the job holds its checkpoint directory against other jobs: `flock` (the
    /// default; where the file system refuses flock, as Lustre without `-o flock` does, a
    /// heartbeat instead) or `heartbeat` (`.lease` names the job and is renewed every
    /// 10 s; a lease not renewed for 120 s is taken over): for mounts whose flock is
    /// honoured on one node only (Lustre `localflock`, NFS `local_lock=flock`). Default:
    /// $MANA_LEASE, else flock.
    #[arg(long, value_name = "KIND", value_parser = ["flock", "heartbeat"])]
    lease: Option<String>,

    /// The program to run, then its arguments: everything from PROGRAM on is passed
    /// through untouched (`--help` and `--` included).
    #[arg(value_name = "PROGRAM [ARGS]", required = true, num_args = 1.., trailing_var_arg = true)]
    command: Vec<OsString>,
}

/// A signal the runtime can take for checkpoint requests: by name (USR1, SIGUSR1) or
/// number; not one that stops or kills unconditionally, reports a fault, or that the
/// runtime uses to stop threads.
fn parse_signal(s: &str) -> Result<i32, String> {
    use nix::sys::signal::Signal;
    use std::str::FromStr;
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    let n = match s.parse::<i32>() {
        Ok(n) => n,
        Err(_) => Signal::from_str(&name)
            .map_err(|_| format!("{s} is not a signal name (try USR1 or USR2)"))?
            as i32,
    };
    let forbidden = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGILL,
        libc::SIGTRAP,
        libc::SIGABRT,
        62, // the runtime's thread-stop signal (upper-half threads.rs)
    ];
    if !(1..=64).contains(&n) || forbidden.contains(&n) {
        return Err(format!(
            "{s} cannot be the checkpoint signal (use USR1 or USR2)"
        ));
    }
    Ok(n)
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Launch(#[from] LaunchError),
    #[error("cannot find the MANA runtime {}: it must be installed beside mana_launch", .0.display())]
    NoRuntime(PathBuf),
    #[error("{} has MPI linked in statically (libmpich.a): its MPI calls cannot be wrapped, so it cannot be checkpointed; link it with mpicc.mpich's shared libmpich.so.12", .0.display())]
    StaticMpi(PathBuf),
    #[error("cannot create checkpoint directory {}: {source}", path.display())]
    CkptDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint directory {0}")]
    CkptDirUnsafe(String),
    #[error("{0}")]
    CkptDirInUse(String),
    #[error("{0}")]
    Lease(String),
    #[error("{what} contains a NUL byte")]
    Nul { what: String },
    #[error("cannot execute {}: {source}", path.display())]
    Exec {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

#[no_mangle]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    let cli = Cli::parse();
    mana_coordinator::init_logging("warn", true);
    // run() only returns on failure: on success the process is PROGRAM now.
    let e = match run(cli) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    eprintln!("mana_launch: {e}");
    127
}

fn run(cli: Cli) -> Result<std::convert::Infallible, Error> {
    let program = cli.command[0].to_string_lossy().into_owned();
    let path = launch::resolve_program(&program)?;
    launch::check_dynamic(&path)?;

    let exe = std::env::current_exe().unwrap_or_default();
    let runtime = exe.with_file_name("libmana.so");
    if !runtime.is_file() {
        return Err(Error::NoRuntime(runtime));
    }
    let runtime = status::absolute(&runtime);

    let ckpt_dir = cli
        .ckptdir
        .clone()
        .or_else(|| {
            std::env::var_os("MANA_CKPT_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("ckpt"));
    // Made private (0700) if missing; refused now, in one line, if another user owns it
    // or every user can write it (issue 10: checkpoints there could be planted or read).
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&ckpt_dir)
            .map_err(|source| Error::CkptDir {
                path: ckpt_dir.clone(),
                source,
            })?;
    }
    mana_image::ckptdir::check_private(&ckpt_dir, true)
        .map_err(|e| Error::CkptDirUnsafe(e.to_string()))?;
    let ckpt_dir = status::absolute(&ckpt_dir);

    if cli.lease.is_none() {
        mana_image::ckptdir::LeaseMode::from_env().map_err(Error::Lease)?;
    }
    let status_file =
        launch::ensure_coordinator(cli.status_file.as_deref(), cli.interval, "mana_launch")?;
    // One job per checkpoint directory: another live job's lease refuses this one now.
    if let Ok(st) = status::StatusFile::read(&status_file) {
        let job = mana_image::ckptdir::job_token(&st.secret);
        if let Some(holder) = mana_image::CkptDir::new(&ckpt_dir).leased_by_other(&job) {
            return Err(Error::CkptDirInUse(
                mana_image::ckptdir::CkptDirError::InUse {
                    path: ckpt_dir.clone(),
                    holder,
                }
                .to_string(),
            ));
        }
    }

    // Every program gets the MPI wrapper library and a lower half to load should it ever
    // use MPI — through its own DT_NEEDED, a library's, or a dlopen (mpi4py, ctypes,
    // libmpichfort): libmana.so, then mana-mpi/libmpich.so.12 and the libmpi.so.12 stub
    // are preloaded, so the loader answers every request for those sonames with MANA's
    // wrapper, and libmana's dlopen sends paths of MPICH libraries there too
    // (upper-half/src/mpi_guard.rs). The real MPI is loaded only inside the lower half.
    let wrappers = status::absolute(&exe.with_file_name("mana-mpi"));
    let wrappers = std::fs::canonicalize(&wrappers).unwrap_or(wrappers);
    let lower = exe.with_file_name("mana_lower");
    for needed in [
        wrappers.join("libmpich.so.12"),
        wrappers.join("libmpi.so.12"),
        lower.clone(),
    ] {
        if !needed.is_file() {
            return Err(Error::NoRuntime(needed));
        }
    }
    if mana_coordinator::mpi_abi::has_static_mpi(&path) {
        return Err(Error::StaticMpi(path));
    }
    let mut mpi_env: Vec<(&str, OsString)> = Vec::new();
    let mut libpath = wrappers.clone().into_os_string();
    let old = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
    if !old.is_empty() {
        libpath.push(":");
        libpath.push(&old);
    }
    // The lower world gets the original path (see mana_lower::loader::default_env).
    mpi_env.push(("MANA_LOWER_LIBRARY_PATH", old));
    mpi_env.push(("LD_LIBRARY_PATH", libpath));
    mpi_env.push(("MANA_LOWER_HALF", status::absolute(&lower).into_os_string()));
    mpi_env.push((
        "MANA_MPI_WRAPPER",
        wrappers.join("libmpich.so.12").into_os_string(),
    ));
    // The runtime need not read this program's symbol tables again (exec chains do).
    mpi_env.push((
        "MANA_CHECKED_EXE",
        std::fs::canonicalize(&path)
            .unwrap_or_else(|_| path.clone())
            .into_os_string(),
    ));
    let mut preload = runtime.as_os_str().to_os_string();
    for lib in ["libmpich.so.12", "libmpi.so.12"] {
        preload.push(":");
        preload.push(wrappers.join(lib));
    }
    if let Some(old) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(old);
    }
    let mut ours: Vec<(&str, OsString)> = vec![
        ("LD_PRELOAD", preload),
        (status::STATUS_FILE_ENV, status_file.into_os_string()),
        ("MANA_CKPT_DIR", ckpt_dir.into_os_string()),
        // The runtime activates only in this process (same pid after execve), not in
        // children that inherit LD_PRELOAD.
        ("MANA_LAUNCH_PID", std::process::id().to_string().into()),
    ];
    if let Some(i) = cli.interval {
        ours.push(("MANA_INTERVAL", i.to_string().into()));
    }
    if let Some(sig) = cli.checkpoint_signal {
        ours.push(("MANA_CHECKPOINT_ON_SIGNAL", sig.to_string().into()));
    }
    if let Some(k) = cli.keep {
        ours.push(("MANA_KEEP", k.to_string().into()));
    }
    if let Some(l) = &cli.lease {
        ours.push(("MANA_LEASE", l.into()));
    }
    ours.extend(mpi_env);

    let mut env: Vec<CString> = Vec::new();
    for (k, v) in std::env::vars_os() {
        if ours.iter().any(|(o, _)| OsStr::new(o) == k)
            || cli.interval.is_none() && k == "MANA_INTERVAL"
        {
            continue;
        }
        env.push(key_value(&k, &v)?);
    }
    for (k, v) in &ours {
        env.push(key_value(OsStr::new(k), v)?);
    }
    let mut argv = vec![c_string(&cli.command[0], "PROGRAM")?];
    for a in &cli.command[1..] {
        argv.push(c_string(a, "an argument")?);
    }
    let c_path = c_string(path.as_os_str(), "PROGRAM")?;
    tracing::debug!(program = %path.display(), args = ?&cli.command[1..], "exec");
    let err = match nix::unistd::execve(&c_path, &argv, &env) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    Err(Error::Exec {
        path: path.to_path_buf(),
        source: err,
    })
}

fn c_string(s: &OsStr, what: &str) -> Result<CString, Error> {
    CString::new(s.as_bytes()).map_err(|_| Error::Nul {
        what: what.to_string(),
    })
}

/// A `KEY=VALUE` environment entry; an inherited entry with a NUL cannot exist, ours
/// are checked.
fn key_value(k: &OsStr, v: &OsStr) -> Result<CString, Error> {
    let mut s = k.to_os_string();
    s.push("=");
    s.push(v);
    c_string(
        &s,
        &format!("environment variable {}", Path::new(k).display()),
    )
}
