//! A real Slurm on this one machine, started by a test and stopped when it ends: munged
//! (started if not already running, and left running), then `slurmctld -D -f CONF` and
//! `slurmd -D -f CONF` as children of the test, with every state, spool, log and pid file
//! in a temp dir of their own and two free ports.
//!
//! ```text
//! $ slurmctld -D -f DIR/slurm.conf & slurmd -D -f DIR/slurm.conf &
//! $ SLURM_CONF=DIR/slurm.conf srun --mpi=pmi2 -n 2 mana_launch ./ring
//! ```
//!
//! Slurm tests run one at a time, on any number of test threads or processes: a
//! [`Slurm`] holds an exclusive `flock` on [`LOCK_FILE`] for its lifetime.

use crate::process::{Proc, SCRUBBED_ENV};
use crate::tempdir::TempDir;
use crate::SHORT;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{chown, User};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Held by every [`Slurm`] while it runs: its daemons share the machine's node name.
pub const LOCK_FILE: &str = "/tmp/mana-slurm-tests.lock";
/// The CPUs the node claims (`SlurmdParameters=config_overrides` lets it claim more than
/// the machine has).
pub const CPUS: u32 = 8;

const MUNGE_KEY: &str = "/etc/munge/munge.key";
const MUNGE_RUN_DIR: &str = "/run/munge";
const POLL: Duration = Duration::from_millis(100);

/// slurmctld and slurmd of this test, running; killed on drop. They also die with the
/// thread that called [`Slurm::start`] (`PR_SET_PDEATHSIG`): keep a `Slurm` in the test's
/// own thread, not in a static shared by tests.
pub struct Slurm {
    /// The daemons' directory: `slurm.conf`, `state/`, `spool/`, `*.log`.
    pub dir: TempDir,
    pub conf: PathBuf,
    /// The (first) node's name (`hostname` with one node, else `n1`).
    pub node: String,
    /// Every node's name.
    pub nodes: Vec<String>,
    /// How long the start took, up to the node being idle.
    pub startup: Duration,
    slurmds: Vec<Proc>,
    slurmctld: Option<Proc>,
    _lock: Flock<File>,
}

impl Slurm {
    /// Starts munged if needed, then slurmctld and slurmd, and waits until the node is
    /// idle. Panics with the daemons' logs if any of them does not come up.
    pub fn start() -> Slurm {
        Slurm::start_nodes(1)
    }

    /// The same with `count` nodes on this machine (`n1`…: one slurmd each, `slurmd -N`,
    /// its own port, spool and log; ENVIRONMENT.md), all idle on return. One node is named
    /// after the host.
    pub fn start_nodes(count: usize) -> Slurm {
        let lock = lock();
        let started = Instant::now();
        ensure_munged();
        let dir = TempDir::new("slurm");
        let nodes: Vec<String> = if count == 1 {
            vec![hostname()]
        } else {
            (1..=count).map(|i| format!("n{i}")).collect()
        };
        let conf = write_conf(dir.path(), &nodes);
        let mut slurm = Slurm {
            conf,
            node: nodes[0].clone(),
            nodes,
            startup: Duration::ZERO,
            slurmds: Vec::new(),
            slurmctld: None,
            dir,
            _lock: lock,
        };
        slurm.slurmctld = Some(slurm.daemon("slurmctld", None));
        slurm.wait_until("slurmctld answers", |s| {
            s.sinfo().is_ok_and(|o| !o.trim().is_empty())
        });
        for i in 0..count {
            let name = (count > 1).then(|| slurm.nodes[i].clone());
            let d = slurm.daemon("slurmd", name.as_deref());
            slurm.slurmds.push(d);
        }
        slurm.wait_until("every node is idle", |s| {
            s.sinfo().is_ok_and(|o| {
                o.lines().count() == s.nodes.len() && o.lines().all(|l| l.trim() == "idle")
            })
        });
        slurm.startup = started.elapsed();
        slurm
    }

    /// A command run with this Slurm's configuration (`SLURM_CONF`), without the
    /// variables that would make it find another job.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        for v in SCRUBBED_ENV {
            cmd.env_remove(v);
        }
        cmd.env("SLURM_CONF", &self.conf);
        cmd
    }

    /// `srun`, pointed at this Slurm.
    pub fn srun(&self) -> Command {
        self.command("srun")
    }

    /// `sinfo -h -N -o %T`: each node's state, a line each.
    pub fn sinfo(&self) -> Result<String, String> {
        let out = self
            .command("sinfo")
            .args(["-h", "-N", "-o", "%T"])
            .output()
            .map_err(|e| format!("cannot run sinfo: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Starts daemon `name` (`slurmd -N node` for one of several nodes).
    fn daemon(&self, name: &str, node: Option<&str>) -> Proc {
        let mut cmd = self.command(name);
        cmd.arg("-D")
            .arg("-f")
            .arg(&self.conf)
            .current_dir(self.dir.path());
        if let Some(n) = node {
            cmd.args(["-N", n]);
        }
        // A daemon must not outlive a test process that is killed before its drop runs
        // (it would hold its port and log into a removed directory).
        // SAFETY: the closure runs in the forked child before exec and only calls
        // prctl(2), which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        Proc::spawn(name, cmd)
    }

    /// Polls `ready` until it holds; panics with the daemons' output and logs if a daemon
    /// exits or the deadline passes first.
    fn wait_until(&mut self, what: &str, ready: impl Fn(&Slurm) -> bool) {
        let deadline = Instant::now() + SHORT;
        loop {
            if ready(self) {
                return;
            }
            let exited = std::iter::once(("slurmctld", self.slurmctld.as_mut()))
                .chain(self.slurmds.iter_mut().map(|p| ("slurmd", Some(p))))
                .find_map(|(name, p)| p.is_some_and(|p| !p.is_running()).then_some(name));
            if let Some(name) = exited {
                panic!("{name} exited while waiting until {what}:\n{}", self.logs());
            }
            if Instant::now() >= deadline {
                panic!(
                    "not ready within {SHORT:?}: waiting until {what} (sinfo: {:?}):\n{}",
                    self.sinfo(),
                    self.logs()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The daemons' stderr and log files, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        let mut logs = vec![("slurmctld".to_string(), self.slurmctld.as_ref())];
        for (i, p) in self.slurmds.iter().enumerate() {
            let name = if self.nodes.len() > 1 {
                format!("slurmd-{}", self.nodes[i])
            } else {
                "slurmd".to_string()
            };
            logs.push((name, Some(p)));
        }
        for (name, p) in logs {
            if let Some(p) = p {
                s += &format!(
                    "--- {name} (pid {}) stderr ---\n{}",
                    p.pid(),
                    p.stderr_text()
                );
            }
            let log = self.dir.path().join(format!("{name}.log"));
            s += &format!(
                "--- {} ---\n{}",
                log.display(),
                std::fs::read_to_string(&log).unwrap_or_else(|e| format!("({e})\n"))
            );
        }
        s + "--- end ---"
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        // slurmd first, so slurmctld does not see its node go away and log about it.
        // Proc's drop kills (SIGKILL) and reaps.
        self.slurmds.clear();
        drop(self.slurmctld.take());
    }
}

fn lock() -> Flock<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap_or_else(|e| panic!("cannot open {LOCK_FILE}: {e}"));
    Flock::lock(f, FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("cannot lock {LOCK_FILE}: {e}"))
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .expect("gethostname")
        .into_string()
        .expect("hostname is UTF-8")
}

/// Two ports nobody listens on now (bound to port 0, then released).
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("0.0.0.0:0").expect("binding a free port");
    let b = std::net::TcpListener::bind("0.0.0.0:0").expect("binding a free port");
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

fn write_conf(dir: &Path, nodes: &[String]) -> PathBuf {
    let (ctld_port, slurmd_port) = free_ports();
    let host = hostname();
    let several = nodes.len() > 1;
    // Several nodes: each slurmd its own port, spool directory, pid and log file (%n).
    let (spool, pid, log) = if several {
        ("spool/%n", "slurmd-%n.pid", "slurmd-%n.log")
    } else {
        ("spool", "slurmd.pid", "slurmd.log")
    };
    let mut node_lines = String::new();
    for n in nodes {
        if several {
            let port = free_ports().0;
            node_lines += &format!(
                "NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs={CPUS} RealMemory=1024 State=UNKNOWN\n"
            );
            std::fs::create_dir_all(dir.join("spool").join(n)).unwrap();
        } else {
            node_lines += &format!("NodeName={n} CPUs={CPUS} RealMemory=1024 State=UNKNOWN\n");
        }
    }
    let node_list = nodes.join(",");
    for sub in ["state", "spool"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let d = dir.display();
    let conf = format!(
        "\
ClusterName=mana-test
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/{spool}
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/{pid}
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/{log}
SlurmctldDebug=info
SlurmdDebug=info
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
{node_lines}PartitionName=test Nodes={node_list} Default=YES OverSubscribe=YES MaxTime=INFINITE State=UP
"
    );
    let path = dir.join("slurm.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

/// `munge -n`: whether a munged answers on the default socket.
fn munged_answers() -> bool {
    Command::new("munge")
        .arg("-n")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Makes sure munged runs: the key exists with munge's ownership and mode 0400, the run
/// directory is munge's, and munged (as user munge) answers.
fn ensure_munged() {
    if munged_answers() {
        return;
    }
    let munge = User::from_name("munge")
        .expect("looking up user munge")
        .expect("no user munge: install munge (scripts/setup.sh)");
    let own = |path: &Path, mode: u32| {
        chown(path, Some(munge.uid), Some(munge.gid))
            .unwrap_or_else(|e| panic!("chown munge {}: {e}", path.display()));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
    };
    let key = Path::new(MUNGE_KEY);
    let key_dir = key.parent().unwrap();
    std::fs::create_dir_all(key_dir).unwrap();
    own(key_dir, 0o700);
    if !key.exists() {
        let mut bytes = vec![0u8; 1024];
        use std::io::Read;
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .expect("reading /dev/urandom");
        std::fs::write(key, bytes).unwrap();
    }
    own(key, 0o400);
    for (dir, mode) in [
        (MUNGE_RUN_DIR, 0o755),
        ("/var/lib/munge", 0o700),
        ("/var/log/munge", 0o700),
    ] {
        std::fs::create_dir_all(dir).unwrap();
        own(Path::new(dir), mode);
    }
    // munged forks into the background itself; its parent's exit status says whether it
    // started.
    let out = Command::new("munged")
        .uid(munge.uid.as_raw())
        .gid(munge.gid.as_raw())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .expect("cannot run munged: install munge (scripts/setup.sh)");
    let log = || std::fs::read_to_string("/var/log/munge/munged.log").unwrap_or_default();
    assert!(
        out.status.success(),
        "munged failed to start: {}\n{}{}\n--- /var/log/munge/munged.log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    let deadline = Instant::now() + SHORT;
    while !munged_answers() {
        assert!(
            Instant::now() < deadline,
            "munged started but `munge -n` fails after {SHORT:?}:\n{}",
            log()
        );
        std::thread::sleep(POLL);
    }
}
