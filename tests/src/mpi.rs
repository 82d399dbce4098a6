//! What the MPI tests share: `mpiexec.mpich` commands with a session's environment,
//! waiting for a job's ranks to register with the session's coordinator, and finding a
//! job's result line.

use crate::{Session, LONG, SCRUBBED_ENV};
use std::ffi::OsStr;
use std::process::Command;
use std::time::{Duration, Instant};

/// `mpiexec.mpich -n N ARGS…` run in the session directory with the session's environment
/// (its status file, `MANA_LOG=mana=info`), plus `extra` variables.
pub fn mpiexec_command(s: &Session, n: usize, args: &[&OsStr], extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("mpiexec.mpich");
    cmd.current_dir(s.dir())
        .args(["-n", &n.to_string()])
        .args(args);
    for v in SCRUBBED_ENV {
        cmd.env_remove(v);
    }
    cmd.env("HOME", &s.home)
        .env("MANA_STATUS_FILE", &s.status_file)
        .env("MANA_LOG", "mana=info");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// Waits until `n` processes are registered with the session's coordinator.
pub fn wait_registered(s: &Session, n: usize) {
    let deadline = Instant::now() + LONG;
    while s.status(&["--list"]).stdout_text().lines().count() < n + 1 {
        assert!(Instant::now() < deadline, "the ranks did not register");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first line of `text` that starts with `prefix` (a job's result line), if any.
pub fn result_line(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .map(str::to_string)
}
