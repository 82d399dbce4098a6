//! One job, as a user would run it at a terminal: a private directory, a status file of
//! its own, a coordinator started for it (`mana_coordinator --daemon --port 0`) and
//! stopped when the session ends (`mana_status --quit`), and the commands run against it.

use crate::process::{Output, Proc, SCRUBBED_ENV};
use crate::programs::bin;
use crate::tempdir::TempDir;
use crate::{LONG, SHORT};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Session {
    pub dir: TempDir,
    /// `$HOME` of every command (so nothing falls back to the real `~/.mana.rc`).
    pub home: PathBuf,
    /// The status file every command is pointed at (`MANA_STATUS_FILE`).
    pub status_file: PathBuf,
    /// The `--ckptdir` given to `mana_launch` and to `mana_restart`.
    pub ckpt_dir: PathBuf,
    /// Whether commands get `MANA_STATUS_FILE` (false: they use the default under $HOME).
    named_status_file: bool,
    /// The user every command runs as (`None`: the test's own, root in CI).
    user: Option<(u32, u32)>,
}

impl Session {
    /// `mana_coordinator --daemon --port 0 --status-file DIR/status`
    pub fn start(label: &str) -> Session {
        Session::start_with(label, &[])
    }

    /// The same coordinator with `extra` arguments (`--interval 0.03`).
    pub fn start_with(label: &str, extra: &[&str]) -> Session {
        Session::start_coordinator(Session::new(label, true), extra)
    }

    /// A session whose every command — the coordinator, the job, `mana_status`,
    /// `mana_restart` — runs as the ordinary user `who` ([`crate::user`]), in a directory
    /// of theirs.
    pub fn start_as(label: &str, who: (u32, u32)) -> Session {
        let mut s = Session::new(label, true);
        crate::chown(s.dir(), who);
        crate::chown(&s.home, who);
        s.user = Some(who);
        Session::start_coordinator(s, &[])
    }

    fn start_coordinator(s: Session, extra: &[&str]) -> Session {
        let mut args = vec![
            "--daemon",
            "--port",
            "0",
            "--status-file",
            s.status_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = s.run("mana_coordinator", &args, SHORT);
        out.assert_success();
        assert!(
            out.streams_closed,
            "mana_coordinator --daemon returned but its daemon still holds the caller's stdout/stderr \
             (`$(mana_coordinator --daemon)` in a script would hang): {}",
            out.describe()
        );
        assert!(
            s.status_file.is_file(),
            "mana_coordinator --daemon returned without writing {}: {}",
            s.status_file.display(),
            out.describe()
        );
        s
    }

    /// A session in which no coordinator runs and no status file is named: commands use
    /// the default status file under the session's `$HOME` (`~/.mana.rc`).
    pub fn without_coordinator(label: &str) -> Session {
        let mut s = Session::new(label, false);
        s.status_file = s.home.join(".mana.rc");
        s
    }

    fn new(label: &str, named_status_file: bool) -> Session {
        let dir = TempDir::new(label);
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        Session {
            status_file: dir.path().join("status"),
            ckpt_dir: dir.path().join("ckpt"),
            home,
            dir,
            named_status_file,
            user: None,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A command of the project, run in the session directory with the session's
    /// environment.
    pub fn command(&self, name: &str) -> Command {
        self.command_of(&bin(name))
    }

    /// `bash -c SCRIPT` as a user types it at a terminal (redirections, process
    /// substitution), with the session's environment and the project's commands first in
    /// `PATH`.
    pub fn shell(&self, script: &str) -> Command {
        let mut cmd = self.command_of(Path::new("/bin/bash"));
        let bins = bin("mana_launch").parent().unwrap().to_path_buf();
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut all = vec![bins];
        all.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(all).unwrap())
            .args(["-c", script]);
        cmd
    }

    fn command_of(&self, program: &Path) -> Command {
        let mut cmd = match self.user {
            Some(who) => crate::as_user(who, program, &[]),
            None => Command::new(program),
        };
        cmd.current_dir(self.dir());
        for v in SCRUBBED_ENV {
            cmd.env_remove(v);
        }
        cmd.env("HOME", &self.home);
        // Tests keep every generation (several read older ones); the default pruning
        // (--keep 2) has its own test in tests/tests/generations.rs.
        cmd.env("MANA_KEEP", "0");
        if self.named_status_file {
            cmd.env("MANA_STATUS_FILE", &self.status_file);
        }
        cmd
    }

    /// Runs a command to completion.
    pub fn run(&self, name: &str, args: &[&str], timeout: Duration) -> Output {
        let mut cmd = self.command(name);
        cmd.args(args);
        Proc::spawn(&format!("{name} {}", args.join(" ")), cmd).wait_output(timeout)
    }

    /// `mana_launch --ckptdir CKPT PROGRAM ARGS…`
    pub fn launch(&self, program: &Path, args: &[&str]) -> Proc {
        let mut cmd = self.command("mana_launch");
        cmd.arg("--ckptdir")
            .arg(&self.ckpt_dir)
            .arg(program)
            .args(args);
        Proc::spawn(&format!("mana_launch {}", program.display()), cmd)
    }

    /// `mana_restart CKPT_DIR`
    pub fn restart(&self, ckpt_dir: &Path) -> Proc {
        self.restart_with_env(ckpt_dir, &[])
    }

    /// `VAR=VALUE… mana_restart CKPT_DIR`
    pub fn restart_with_env(&self, ckpt_dir: &Path, env: &[(&str, &str)]) -> Proc {
        let mut cmd = self.command("mana_restart");
        cmd.arg(ckpt_dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc::spawn(&format!("mana_restart {}", ckpt_dir.display()), cmd)
    }

    /// `mana_status ARGS…`
    pub fn status(&self, args: &[&str]) -> Output {
        self.run("mana_status", args, LONG)
    }

    /// `mana_status --checkpoint`, as it finished.
    pub fn checkpoint_output(&self) -> Output {
        self.status(&["--checkpoint"])
    }

    /// `mana_status --checkpoint`: the directory of the committed generation, or the
    /// command's output if it failed.
    pub fn checkpoint(&self) -> Result<PathBuf, String> {
        self.committed_dir(self.checkpoint_output())
    }

    /// A committed generation of `program ARGS…` (launched, checkpointed once it printed
    /// `ready` and registered, then killed): the generation's directory.
    pub fn checkpoint_of(&self, program: &Path, args: &[&str]) -> PathBuf {
        let run = self.launch(program, args);
        run.wait_for_stdout("ready", SHORT);
        self.wait_registered(run.pid());
        let gen = self
            .checkpoint()
            .unwrap_or_else(|e| panic!("checkpoint failed: {e}"));
        crate::ckpt::assert_committed(&self.ckpt_dir, &gen);
        self.kill9(run);
        gen
    }

    /// `mana_status --checkpoint --kill`
    pub fn checkpoint_and_kill(&self) -> Result<PathBuf, String> {
        self.committed_dir(self.status(&["--checkpoint", "--kill"]))
    }

    fn committed_dir(&self, out: Output) -> Result<PathBuf, String> {
        if !out.status.success() {
            return Err(out.describe());
        }
        let text = out.stdout_text();
        let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) else {
            return Err(format!(
                "mana_status --checkpoint printed no directory: {}",
                out.describe()
            ));
        };
        let dir = self.dir().join(line.trim()); // absolute paths replace the base
        if !dir.is_dir() {
            return Err(format!(
                "mana_status --checkpoint printed {line:?}, which is not a directory: {}",
                out.describe()
            ));
        }
        Ok(dir)
    }

    /// `mana_status --quit`
    pub fn quit(&self) -> Output {
        self.run("mana_status", &["--quit"], SHORT)
    }

    /// Polls `mana_status --list` until a row shows `pid` (the process registered with
    /// the coordinator, so a checkpoint will include it).
    pub fn wait_registered(&self, pid: u32) {
        self.wait_list(pid, true)
    }

    /// Polls `mana_status --list` until no row shows `pid`.
    pub fn wait_unregistered(&self, pid: u32) {
        self.wait_list(pid, false)
    }

    fn wait_list(&self, pid: u32, present: bool) {
        let deadline = Instant::now() + SHORT;
        loop {
            let out = self.run("mana_status", &["--list"], SHORT);
            let listed = out.status.success() && lists_pid(&out.stdout_text(), pid);
            if listed == present {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "pid {pid} {} in `mana_status --list` within {SHORT:?}: {}",
                    if present {
                        "did not appear"
                    } else {
                        "did not disappear"
                    },
                    out.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9 PID`, then waits until the coordinator has noticed.
    pub fn kill9(&self, p: Proc) -> Output {
        let pid = p.pid();
        let out = p.kill9();
        self.wait_unregistered(pid);
        out
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.named_status_file && !self.status_file.exists() {
            return;
        }
        let mut cmd = self.command("mana_status");
        cmd.arg("--quit");
        // Never panic here: this may run while a failed test unwinds.
        let _ = Proc::spawn("mana_status --quit", cmd).wait_quietly(SHORT);
    }
}

/// Whether `--list` output shows `pid` as a number of its own.
pub fn lists_pid(list: &str, pid: u32) -> bool {
    let pid = pid.to_string();
    list.split(|c: char| !c.is_ascii_digit())
        .any(|tok| tok == pid)
}
