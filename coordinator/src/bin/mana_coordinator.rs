//! `mana_coordinator`: the job's coordinator (see `mana_coordinator --help`).

use clap::Parser;
use mana_coordinator::server::{self, Options, DEFAULT_PORT};
use mana_coordinator::status;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// TCP port to listen on; 0 picks a free port. The status file records the port
    /// actually used.
    #[arg(long, default_value_t = DEFAULT_PORT, value_name = "N")]
    port: u16,

    /// Address to listen on (default: all addresses, so that ranks on every node of the
    /// job reach it). `--bind 127.0.0.1` for a single-node job keeps it off the network;
    /// the status file then names that address. Every client proves the job's secret
    /// (and checks the coordinator's proof) before anything else is exchanged.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0")]
    bind: std::net::IpAddr,

    /// Status file to write (default: $MANA_STATUS_FILE, else
    /// ~/.mana-slurm-$SLURM_JOB_ID.rc in a Slurm job, else ~/.mana.rc). Refuses to start
    /// if it names a coordinator that still answers; a stale one is replaced.
    #[arg(long, value_name = "FILE")]
    status_file: Option<PathBuf>,

    /// Run in the background: returns once the coordinator listens and the status file
    /// is written; the coordinator's log goes to <status file>.log.
    #[arg(long)]
    daemon: bool,

    /// Checkpoint every SECONDS seconds (counted from the first registration, then from
    /// the end of the previous checkpoint); fractions are allowed (`0.2`). Without it,
    /// the interval the first process asks for (`mana_launch --interval`) is used, if any.
    #[arg(long, value_name = "SECONDS", value_parser = parse_interval)]
    interval: Option<Duration>,

    /// Exit when the last registered process is gone (used when mana_launch starts a
    /// coordinator for a single program).
    #[arg(long)]
    exit_on_last: bool,

    /// Exit if no process has registered SECONDS seconds after start.
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<u64>,

    /// A status file that names a coordinator which is gone is replaced keeping its
    /// secret: the processes of that coordinator's job, which keep trying to reconnect,
    /// register with this one and can be checkpointed again. With --fresh-secret a new
    /// secret is made instead (the old job's processes are then refused).
    #[arg(long)]
    fresh_secret: bool,
}

/// `--interval`: a positive number of seconds, fractions allowed (at least 1 ms).
fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(0.001..=1e9).contains(&secs) {
        return Err(format!(
            "`{s}`: the interval must be between 0.001 and 1e9 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // No colors when the log goes to a file.
    mana_coordinator::init_logging("info", !cli.daemon);
    let status_path =
        status::absolute(&cli.status_file.clone().unwrap_or_else(status::default_path));
    let opts = Options {
        port: cli.port,
        bind: cli.bind,
        status_path,
        daemon: cli.daemon,
        interval: cli.interval,
        exit_on_last: cli.exit_on_last,
        idle_timeout: cli.idle_timeout,
        fresh_secret: cli.fresh_secret,
    };
    match server::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mana_coordinator: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_takes_fractions_of_a_second() {
        assert_eq!(parse_interval("0.2"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_interval("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_interval(" 1.5 "), Ok(Duration::from_millis(1500)));
        for bad in ["0", "-1", "0.0001", "nan", "inf", "1e10", "", "2s"] {
            assert!(parse_interval(bad).is_err(), "{bad:?} accepted");
        }
        let cli = Cli::try_parse_from(["mana_coordinator", "--interval", "0.25"]).unwrap();
        assert_eq!(cli.interval, Some(Duration::from_millis(250)));
    }
}
