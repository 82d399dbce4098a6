//! `mana_coordinator`: the job's coordinator (see `mana_coordinator --help`).

use clap::Parser;
use mana_coordinator::server::{self, Options, DEFAULT_PORT};
use mana_coordinator::status;
use std::path::PathBuf;
use std::process::ExitCode;

/// The MANA coordinator: one per job. Checkpointed processes (started with `mana_launch`
/// or `mana_restart`) register with it; `mana_status` asks it to checkpoint, list or
/// kill them.
///
/// On start it writes the status file (host, port, a fresh random secret, pid; mode
/// 0600). Every MANA command finds the coordinator and proves it belongs to the job
/// through that file, so strangers on the cluster cannot checkpoint or kill the job.
/// Default status file: $MANA_STATUS_FILE, else ~/.mana-slurm-$SLURM_JOB_ID.rc inside a
/// Slurm job, else ~/.mana.rc. The coordinator removes it when it exits.
///
/// Logging: MANA_LOG=debug (or info, warn, …) on stderr; with --daemon, in
/// <status file>.log.
#[derive(Parser, Debug)]
#[command(name = "mana_coordinator", version)]
struct Cli {
    /// TCP port to listen on (all interfaces); 0 picks a free port. The status file
    /// records the port actually used.
    #[arg(long, default_value_t = DEFAULT_PORT, value_name = "N")]
    port: u16,

    /// Status file to write (default: $MANA_STATUS_FILE, else
    /// ~/.mana-slurm-$SLURM_JOB_ID.rc in a Slurm job, else ~/.mana.rc). Refuses to start
    /// if it names a coordinator that still answers; a stale one is replaced.
    #[arg(long, value_name = "FILE")]
    status_file: Option<PathBuf>,

    /// Run in the background: returns once the coordinator listens and the status file
    /// is written; the coordinator's log goes to <status file>.log.
    #[arg(long)]
    daemon: bool,

    /// Checkpoint every SECONDS seconds (counted from the end of the previous
    /// checkpoint). Without it, the interval the first process asks for
    /// (`mana_launch --interval`) is used, if any.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    interval: Option<u64>,

    /// Exit when the last registered process is gone (used when mana_launch starts a
    /// coordinator for a single program).
    #[arg(long)]
    exit_on_last: bool,

    /// Exit if no process has registered SECONDS seconds after start.
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // No colors when the log goes to a file.
    mana_coordinator::init_logging("info", !cli.daemon);
    let status_path =
        status::absolute(&cli.status_file.clone().unwrap_or_else(status::default_path));
    let opts = Options {
        port: cli.port,
        status_path,
        daemon: cli.daemon,
        interval: cli.interval,
        exit_on_last: cli.exit_on_last,
        idle_timeout: cli.idle_timeout,
    };
    match server::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mana_coordinator: {e}");
            ExitCode::FAILURE
        }
    }
}
