//! The coordinator: one small TCP server per job (registration, command relay,
//! checkpoint generations, timed checkpoints), its wire protocol, the status file that
//! tells every command where it is and which secret to present, and the client used by
//! `mana_status`, `mana_launch`, `mana_restart` and the runtime's checkpoint thread.
//!
//! * [`protocol`]: the messages and their length-prefixed `rmp-serde` framing.
//! * [`status`]: the status file (`host`, `port`, `secret`, `pid`; mode 0600).
//! * [`client`]: [`client::Connection`], an authenticated connection.
//! * [`server`]: the coordinator itself (`mana_coordinator`).
//! * `reduce`: the coordinator's books of job-wide reduces ([`Connection::reduce`]).
//! * [`launch`]: finding or starting the job's coordinator, launcher detection, and
//!   the checks `mana_launch` makes on a program.

pub mod auth;
pub mod client;
mod gate;
pub mod launch;
pub mod mpi_abi;
pub mod protocol;
mod reduce;
pub mod server;
pub mod status;

pub use client::{reachable, ClientError, Connection, ReduceError};
pub use launch::{ensure_coordinator, launcher_rank_var, under_launcher, LaunchError};
pub use protocol::{FromCoord, ProcessInfo, ProcessRow, ReduceEntry, ReduceOp, Role, ToCoord};
pub use status::{default_path, StatusFile};

/// Logs through `tracing` to stderr; the filter comes from `MANA_LOG` (e.g.
/// `MANA_LOG=debug`, `MANA_LOG=mana_coordinator=trace`), else `default_filter`.
/// Colors only when stderr is a terminal and `color` is true.
pub fn init_logging(default_filter: &str, color: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("MANA_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color && std::io::stderr().is_terminal())
        .try_init();
}

/// The runtime's logging inside an application process: quiet by default, so that the
/// program's own stdout and stderr carry only what the program writes (test harnesses
/// such as MPICH's `runtests` judge them line by line).
///
/// * `MANA_LOG` set: as [`init_logging`] (stderr, that filter).
/// * otherwise: warnings and errors are appended to the job's log beside its status
///   file, [`runtime_log_path`] — opened for each event (warnings are rare), so the
///   process holds no descriptor of ours that a checkpoint would see.
///
/// Fatal refusals are not logged but printed: they still reach stderr as one line.
pub fn init_runtime_logging(status_file: &std::path::Path) {
    use tracing_subscriber::EnvFilter;
    if std::env::var_os("MANA_LOG").is_some() {
        init_logging("warn", true);
        return;
    }
    let path = runtime_log_path(status_file);
    let make = move || -> Box<dyn std::io::Write> {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => Box::new(f),
            Err(_) => Box::new(std::io::sink()),
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("warn"))
        .with_writer(make)
        .with_ansi(false)
        .try_init();
}

/// The job's runtime log: `STATUS_FILE.runtime.log` (every process of the job appends).
pub fn runtime_log_path(status_file: &std::path::Path) -> std::path::PathBuf {
    let mut name = status_file.as_os_str().to_os_string();
    name.push(".runtime.log");
    name.into()
}
