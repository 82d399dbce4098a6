//! Helpers shared by the coordinator's integration tests: temporary directories, a
//! coordinator started as a real daemon, a fake checkpointed process speaking the
//! protocol, and polling with a deadline.

#![allow(dead_code)]

use mana_coordinator::{Connection, FromCoord, ProcessInfo, ReduceOp, Role, StatusFile, ToCoord};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const COORDINATOR: &str = env!("CARGO_BIN_EXE_mana_coordinator");
pub const STATUS: &str = env!("CARGO_BIN_EXE_mana_status");
pub const LAUNCH: &str = env!("CARGO_BIN_EXE_mana_launch");

/// Upper bound for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "mana-coord-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` until it is true; panics with `what` after [`DEADLINE`].
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn pid_alive(pid: i32) -> bool {
    // A zombie still "exists" for kill(0); look at its state instead.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// A coordinator started with `--daemon --port 0` on a status file of its own; stopped
/// (Quit, else SIGKILL) on drop.
pub struct Coord {
    pub dir: TempDir,
    pub status_path: PathBuf,
    pub status: StatusFile,
}

impl Coord {
    pub fn start(tag: &str, extra: &[&str]) -> Coord {
        let dir = TempDir::new(tag);
        let status_path = dir.path().join("status.rc");
        let out = Command::new(COORDINATOR)
            .args(["--daemon", "--port", "0", "--status-file"])
            .arg(&status_path)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mana_coordinator --daemon failed: {out:?}"
        );
        // When --daemon returns, the status file is there and the port listens.
        let status = StatusFile::read(&status_path).unwrap();
        Coord {
            dir,
            status_path,
            status,
        }
    }

    /// `mana_status --status-file <ours> ARGS`.
    pub fn mana_status(&self, args: &[&str]) -> Output {
        Command::new(STATUS)
            .arg("--status-file")
            .arg(&self.status_path)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn command(&self) -> Connection {
        let (c, hello) = Connection::open(&self.status_path, Role::Command).unwrap();
        assert_eq!(
            hello,
            FromCoord::Done {
                message: "ok".into()
            }
        );
        c
    }

    pub fn process(&self, rank: u32, world_size: u32, last_generation: u64) -> FakeProcess {
        FakeProcess::register(&self.status_path, rank, world_size, last_generation, None)
    }

    /// The `N` ranks of a job of `N`, registered in rank order (ids `1..=N`), each
    /// reading with a [`DEADLINE`] so that a reply that never comes fails the test.
    pub fn ranks<const N: usize>(&self) -> [FakeProcess; N] {
        std::array::from_fn(|rank| {
            let p = self.process(rank as u32, N as u32, 0);
            p.conn.set_read_timeout(Some(DEADLINE)).unwrap();
            p
        })
    }

    /// Waits until the coordinator process is gone and its status file removed.
    pub fn wait_exit(&self) {
        wait_for("the coordinator to exit", || !pid_alive(self.status.pid));
        assert!(!self.status_path.exists(), "status file left behind");
    }
}

impl Drop for Coord {
    fn drop(&mut self) {
        if pid_alive(self.status.pid) {
            if let Ok((mut c, _)) = Connection::connect(&self.status, Role::Command) {
                let _ = c.send(&ToCoord::Quit);
                let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = c.recv();
            }
            let end = Instant::now() + Duration::from_secs(5);
            while pid_alive(self.status.pid) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            if pid_alive(self.status.pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.status.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Plays the runtime's checkpoint thread: registers as a process and answers by hand.
pub struct FakeProcess {
    pub conn: Connection,
    pub id: u32,
    pub info: ProcessInfo,
}

impl FakeProcess {
    pub fn register(
        status_path: &Path,
        rank: u32,
        world_size: u32,
        last_generation: u64,
        interval_secs: Option<u64>,
    ) -> FakeProcess {
        let info = ProcessInfo {
            host: "testhost".into(),
            // Fake, distinct pids: tests only read them back.
            pid: 100_000 + rank as i32,
            rank,
            world_size,
            program: format!("fake-rank-{rank}"),
            ckpt_dir: "/nonexistent/ckpt".into(),
            last_generation,
            interval_secs,
            dir_generation: 0,
        };
        let (conn, reply) = Connection::open(status_path, Role::Process(info.clone())).unwrap();
        let FromCoord::Welcome { id } = reply else {
            panic!("expected Welcome, got {reply:?}")
        };
        FakeProcess { conn, id, info }
    }

    /// The next message from the coordinator (bounded wait).
    pub fn recv(&mut self) -> FromCoord {
        self.conn.set_read_timeout(Some(DEADLINE)).unwrap();
        self.conn.recv().unwrap()
    }

    pub fn expect_checkpoint(&mut self) -> u64 {
        match self.recv() {
            FromCoord::Checkpoint { generation } => generation,
            other => panic!(
                "rank {}: expected Checkpoint, got {other:?}",
                self.info.rank
            ),
        }
    }

    pub fn written(&mut self, generation: u64) {
        let entry = mana_image::ManifestEntry {
            rank: self.info.rank,
            host: self.info.host.clone(),
            pid: self.info.pid,
            file: format!("rank-{:05}.mana", self.info.rank),
            bytes: 4096 * (u64::from(self.info.rank) + 1),
            header_checksum: 0xabc0 + u64::from(self.info.rank),
            max_id: 0,
            members: Vec::new(),
        };
        self.conn
            .send(&ToCoord::Written { generation, entry })
            .unwrap();
    }

    pub fn send(&mut self, msg: ToCoord) {
        self.conn.send(&msg).unwrap();
    }
}

/// Returns once the coordinator has handled every message `procs` sent so far: each
/// then passes the barrier `key`, which the coordinator handles after their earlier
/// messages (it reads a connection in order). The barrier's result must be the next
/// message each of them gets, so nothing those messages started has completed.
pub fn sync_barrier(procs: &mut [&mut FakeProcess], key: &str) {
    for p in procs.iter_mut() {
        p.send(ToCoord::Reduce {
            key: key.into(),
            op: ReduceOp::Max,
            entries: vec![],
        });
    }
    for p in procs.iter_mut() {
        assert_eq!(
            p.recv(),
            FromCoord::Reduced {
                key: key.into(),
                entries: vec![]
            },
            "rank {}",
            p.info.rank
        );
    }
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
