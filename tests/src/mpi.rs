//! What the MPI tests share: `mpiexec.mpich` commands with a session's environment,
//! waiting for a job's ranks to register with the session's coordinator, and finding a
//! job's result line.

use crate::{assert_committed, bin, Proc, Rng, Session, LONG, SCRUBBED_ENV};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `mpiexec.mpich -n N ARGS…` run in the session directory with the session's environment
/// (its status file, `MANA_LOG=mana=info`), plus `extra` variables.
pub fn mpiexec_command(s: &Session, n: usize, args: &[&OsStr], extra: &[(&str, &str)]) -> Command {
    mpiexec_command_under(s, &[], n, args, extra)
}

/// [`mpiexec_command`] run by `wrapper` (a program and its arguments: `strace -f …`).
pub fn mpiexec_command_under(
    s: &Session,
    wrapper: &[&OsStr],
    n: usize,
    args: &[&OsStr],
    extra: &[(&str, &str)],
) -> Command {
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg("mpiexec.mpich");
            c
        }
        None => Command::new("mpiexec.mpich"),
    };
    cmd.current_dir(s.dir())
        .args(["-n", &n.to_string()])
        .args(args);
    for v in SCRUBBED_ENV {
        cmd.env_remove(v);
    }
    cmd.env("HOME", &s.home)
        .env("MANA_STATUS_FILE", &s.status_file)
        .env("MANA_KEEP", "0")
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

/// The stdout of `program ARGS…` run natively by `mpiexec.mpich -n N` (it must succeed).
pub fn native(s: &Session, n: usize, program: &Path, args: &[&str]) -> String {
    let mut all: Vec<&OsStr> = vec![program.as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    let out = Proc::spawn("native", mpiexec_command(s, n, &all, &[])).wait_output(LONG);
    out.assert_success();
    out.stdout_text()
}

/// `mpiexec.mpich -n N mana_launch --ckptdir <session ckpt> program ARGS…`, started.
pub fn launch(
    s: &Session,
    n: usize,
    program: &Path,
    args: &[&str],
    extra: &[(&str, &str)],
) -> Proc {
    let mut cmd: Vec<&OsStr> = vec![program.as_os_str()];
    cmd.extend(args.iter().map(OsStr::new));
    Proc::spawn(
        &format!("mpiexec -n {n} mana_launch"),
        launch_command(s, n, &cmd, extra),
    )
}

/// `mpiexec.mpich -n N mana_launch --ckptdir <session ckpt> CMD…` (CMD: a program and its
/// arguments, or an interpreter, its script and their arguments), not started.
pub fn launch_command(s: &Session, n: usize, cmd: &[&OsStr], extra: &[(&str, &str)]) -> Command {
    let launch = bin("mana_launch");
    let mut all: Vec<&OsStr> = vec![
        launch.as_os_str(),
        "--ckptdir".as_ref(),
        s.ckpt_dir.as_os_str(),
    ];
    all.extend_from_slice(cmd);
    mpiexec_command(s, n, &all, extra)
}

/// `mpiexec.mpich -n N mana_restart <session ckpt>`, started.
pub fn restart(s: &Session, n: usize, extra: &[(&str, &str)]) -> Proc {
    let restart = bin("mana_restart");
    let cmd = mpiexec_command(s, n, &[restart.as_os_str(), s.ckpt_dir.as_os_str()], extra);
    Proc::spawn(&format!("mpiexec -n {n} mana_restart"), cmd)
}

/// Checkpoints the running job `run` one after another (none killed), `pause` apart, until
/// it ends; returns the committed generations. A checkpoint that fails because a rank left
/// — the job's end: a rank that exited is no longer registered, or left while the
/// checkpoint ran — ends the loop (the caller then judges the job's output and exit
/// status, which a rank that crashed would fail); any other failure fails the test.
pub fn checkpoint_until_end(s: &Session, run: &mut Proc, pause: Duration) -> Vec<PathBuf> {
    let mut gens = Vec::new();
    while run.is_running() {
        match s.checkpoint() {
            Ok(g) => gens.push(g),
            Err(_) if !run.is_running() => break,
            Err(e)
                if e.contains("registered") || e.contains("disconnected during the checkpoint") =>
            {
                break
            }
            Err(e) => panic!("checkpoint failed: {e}"),
        }
        std::thread::sleep(pause);
    }
    gens
}

/// Checkpoints the running job at a random instant within `within` and kills it; returns
/// the committed generation.
pub fn checkpoint_and_kill(s: &Session, rng: &mut Rng, within: Duration, run: Proc) -> PathBuf {
    std::thread::sleep(rng.duration_upto(within));
    let gen = s
        .checkpoint_and_kill()
        .unwrap_or_else(|e| panic!("checkpoint --kill failed: {e}"));
    assert_committed(&s.ckpt_dir, &gen);
    let _ = run.wait_quietly(LONG);
    gen
}

/// Every image of generation `gen` holds no lower-half range of its process and no region
/// of the restarter.
pub fn assert_images_have_no_lower_half(gen: &Path, ranks: usize) {
    for rank in 0..ranks {
        let image = gen.join(mana_image::ckptdir::image_name(rank as u32));
        let reader = mana_image::ImageReader::open(&image)
            .unwrap_or_else(|e| panic!("{}: {e}", image.display()));
        let mpi = reader.header.mpi.as_ref().expect("an MPI image");
        for r in &reader.header.regions {
            assert!(
                !r.name.contains("mana_restart"),
                "{}: the restarter's {} was saved",
                image.display(),
                r.name
            );
            for l in &mpi.lower_regions {
                assert!(
                    r.end <= l[0] || r.start >= l[1],
                    "{}: saved region {:#x}-{:#x} ({}) is lower half",
                    image.display(),
                    r.start,
                    r.end,
                    r.name
                );
            }
        }
    }
}

/// A killed job's stdout without what `mpiexec.mpich` appends when it sees a rank die (a
/// banner of `=`, "BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES", the exit
/// string): the application's lines only.
pub fn without_launcher_report(stdout: &[u8]) -> &[u8] {
    const REPORT: &[u8] = b"BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES";
    let Some(at) = stdout.windows(REPORT.len()).position(|w| w == REPORT) else {
        return stdout;
    };
    // Back to the start of the banner line above the report's first line.
    let line = stdout[..at]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |i| i + 1);
    let banner = stdout[..line.saturating_sub(1)]
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |i| i + 1);
    let before = if stdout[banner..line].starts_with(b"====") {
        &stdout[..banner]
    } else {
        &stdout[..line]
    };
    // Hydra writes a newline of its own before the banner.
    before.strip_suffix(b"\n").unwrap_or(before)
}
