//! A spawned process whose stdout and stderr are read in background threads, so a test
//! can wait for an observable event (a line, an exit) under a deadline and still have
//! everything the process printed when it ends — also when it is killed.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long the pipes may stay open after the process exited (a daemon it started may
/// still hold them) before the output is taken as complete.
const PIPE_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Variables that would make a command find another job or log more than one line.
pub const SCRUBBED_ENV: &[&str] = &[
    "MANA_LOG",
    "RUST_LOG",
    "MANA_CKPT_DIR",
    "MANA_STATUS_FILE",
    "SLURM_JOB_ID",
    "SLURM_PROCID",
    "PMI_RANK",
    "PMI_FD",
    "PMIX_RANK",
    "OMPI_COMM_WORLD_RANK",
    "LD_PRELOAD",
];

/// What a finished process left behind.
#[derive(Debug)]
pub struct Output {
    pub label: String,
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// From spawn to exit.
    pub elapsed: Duration,
    /// Whether stdout and stderr reached end of file (false: a process it left behind,
    /// e.g. a daemon, still holds them).
    pub streams_closed: bool,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Everything known about the process, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{} (pid {}): {} after {:.2?}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.label,
            self.pid,
            self.status,
            self.elapsed,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }

    /// Panics with everything the process printed unless it exited with status 0.
    pub fn assert_success(&self) -> &Output {
        assert!(
            self.status.success(),
            "expected success: {}",
            self.describe()
        );
        self
    }
}

fn tail(bytes: &[u8]) -> String {
    const KEEP: usize = 6000;
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= KEEP {
        return text.into_owned();
    }
    let mut cut = text.len() - KEEP;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("[... {cut} bytes ...]\n{}", &text[cut..])
}

#[derive(Default)]
struct Capture {
    state: Mutex<CaptureState>,
    changed: Condvar,
}

#[derive(Default)]
struct CaptureState {
    bytes: Vec<u8>,
    closed: bool,
}

impl Capture {
    fn start(mut reader: impl Read + Send + 'static) -> Arc<Capture> {
        let cap = Arc::new(Capture::default());
        let c = cap.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        c.state.lock().unwrap().bytes.extend_from_slice(&buf[..n]);
                        c.changed.notify_all();
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            c.state.lock().unwrap().closed = true;
            c.changed.notify_all();
        });
        cap
    }

    fn bytes(&self) -> Vec<u8> {
        self.state.lock().unwrap().bytes.clone()
    }

    /// Waits until a complete line containing `needle` has arrived.
    fn wait_line(&self, needle: &str, deadline: Instant) -> Result<String, &'static str> {
        let mut st = self.state.lock().unwrap();
        loop {
            let text = String::from_utf8_lossy(&st.bytes);
            if let Some(line) = text
                .split_inclusive('\n')
                .find(|l| l.ends_with('\n') && l.contains(needle))
            {
                return Ok(line.trim_end().to_string());
            }
            if st.closed {
                return Err("the stream ended first");
            }
            let now = Instant::now();
            if now >= deadline {
                return Err("timed out");
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    fn wait_closed(&self, deadline: Instant) -> bool {
        let mut st = self.state.lock().unwrap();
        while !st.closed {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap().0;
        }
        true
    }
}

/// Which output stream of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A running process with its output being collected. Dropping it kills it.
pub struct Proc {
    label: String,
    child: Option<Child>,
    pid: u32,
    stdout: Arc<Capture>,
    stderr: Arc<Capture>,
    started: Instant,
}

/// Marks every descriptor this test process inherited beyond stdio close-on-exec, once.
/// A test's programs start with stdin, stdout and stderr only, as from a terminal: a
/// descriptor leaked by whatever started `cargo test` (a jobserver pipe, a CI runner's
/// pipe) would otherwise be inherited by the launched program, and a checkpoint rightly
/// refuses descriptors it cannot restore.
fn stray_descriptors_close_on_exec() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        let fds: Vec<i32> = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|fd| *fd > 2)
            .collect();
        for fd in fds {
            // Fails harmlessly for the descriptor read_dir used, now closed.
            let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
    });
}

impl Proc {
    /// Spawns `cmd` with stdin from /dev/null and stdout/stderr collected.
    pub fn spawn(label: &str, mut cmd: Command) -> Proc {
        stray_descriptors_close_on_exec();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} ({cmd:?}): {e}"));
        let stdout = Capture::start(child.stdout.take().expect("piped stdout"));
        let stderr = Capture::start(child.stderr.take().expect("piped stderr"));
        Proc {
            label: label.to_string(),
            pid: child.id(),
            child: Some(child),
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The pid (on this node) of the program this process runs: for `mana_restart`, which
    /// restores the program as its child in a pid namespace (next to that namespace's
    /// init, `mana-init`, when it made it), that child; else this process.
    pub fn program_pid(&self) -> u32 {
        let comm = |p: u32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if comm(self.pid).trim() != "mana_restart" {
            return self.pid;
        }
        process_tree(self.pid)
            .into_iter()
            .skip(1)
            .find(|&p| comm(p).trim() != "mana-init")
            .unwrap_or(self.pid)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// What the process has printed to stdout so far.
    pub fn stdout(&self) -> Vec<u8> {
        self.stdout.bytes()
    }

    pub fn stderr(&self) -> Vec<u8> {
        self.stderr.bytes()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr()).into_owned()
    }

    /// Waits for a complete line containing `needle` (`""`: any line) on `stream`.
    pub fn wait_for_line(
        &self,
        stream: Stream,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let cap = match stream {
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        };
        cap.wait_line(needle, Instant::now() + timeout).map_err(|why| {
            format!(
                "{} (pid {}): no line containing {needle:?} on {stream:?} ({why})\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
                self.label,
                self.pid,
                tail(&self.stdout()),
                tail(&self.stderr())
            )
        })
    }

    /// Waits for a stdout line containing `needle`; panics with the output if none comes.
    pub fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_line(Stream::Stdout, needle, timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `kill -9` the process, reap it, and return what it printed.
    pub fn kill9(mut self) -> Output {
        let mut child = self.child.take().expect("process not yet reaped");
        let _ = child.kill(); // SIGKILL; fails only if it already exited
        let status = child.wait().expect("reaping a killed process");
        self.collect(status)
    }

    /// Waits for the process to exit; on timeout kills it and panics with its output.
    pub fn wait_output(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("process not yet reaped");
        loop {
            if let Some(status) = child.try_wait().expect("waiting for a child") {
                return self.collect(status);
            }
            if Instant::now() >= deadline {
                let stacks = stacks_of_tree(child.id());
                let _ = child.kill();
                let status = child.wait().expect("reaping a killed process");
                let out = self.collect(status);
                panic!(
                    "did not finish within {timeout:?}, killed: {}\n--- stacks before the kill ---\n{stacks}",
                    out.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Like [`Proc::wait_output`], but on timeout kills the process and returns `None`
    /// instead of panicking (for cleanup in `Drop`).
    pub fn wait_quietly(mut self, timeout: Duration) -> Option<Output> {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take()?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(self.collect(status)),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// Whether the process is still running (not yet exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn collect(&self, status: ExitStatus) -> Output {
        let deadline = Instant::now() + PIPE_CLOSE_GRACE;
        let closed = self.stdout.wait_closed(deadline) & self.stderr.wait_closed(deadline);
        Output {
            label: self.label.clone(),
            pid: self.pid,
            status,
            stdout: self.stdout(),
            stderr: self.stderr(),
            elapsed: self.started.elapsed(),
            streams_closed: closed,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `program args` directly, without MANA: the reference every checkpointed run is
/// compared with.
pub fn native_run(program: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for v in SCRUBBED_ENV {
        cmd.env_remove(v);
    }
    let out = Proc::spawn(&format!("native {}", program.display()), cmd).wait_output(crate::LONG);
    out.assert_success();
    out
}

/// The processes under `root` (itself included), parents before children.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // /proc/PID/stat: "pid (comm) state ppid …"; comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// Every thread's backtrace of every process under `root` (gdb, 30 s at most each): what a
/// test that timed out prints, so that a hang in CI says where each rank waited.
fn stacks_of_tree(root: u32) -> String {
    let mut all = String::new();
    for pid in process_tree(root) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        all.push_str(&format!("=== pid {pid} {}\n", comm.trim()));
        let out = Command::new("timeout")
            .args(["30", "gdb", "-nx", "-batch", "-p", &pid.to_string()])
            .args(["-ex", "thread apply all bt 25"])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) => {
                let text = String::from_utf8_lossy(&o.stdout);
                for l in text
                    .lines()
                    .filter(|l| l.starts_with('#') || l.starts_with("Thread "))
                {
                    all.push_str(l);
                    all.push('\n');
                }
            }
            Err(e) => all.push_str(&format!("(gdb could not run: {e})\n")),
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process that outlives its timeout is reported with the stacks of its whole tree.
    #[test]
    #[should_panic(expected = "__libc_start_main")]
    fn a_timeout_prints_the_stacks_of_the_process_tree() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 60 & sleep 60; wait"]);
        let p = Proc::spawn("sleepers", cmd);
        std::thread::sleep(Duration::from_millis(300));
        let tree = process_tree(p.pid);
        assert_eq!(tree.len(), 3, "sh and its two sleeps: {tree:?}");
        p.wait_output(Duration::from_millis(500));
    }
}
