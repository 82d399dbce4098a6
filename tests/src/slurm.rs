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
    /// The node's name (`hostname`).
    pub node: String,
    /// How long the start took, up to the node being idle.
    pub startup: Duration,
    slurmd: Option<Proc>,
    slurmctld: Option<Proc>,
    _lock: Flock<File>,
}

impl Slurm {
    /// Starts munged if needed, then slurmctld and slurmd, and waits until the node is
    /// idle. Panics with the daemons' logs if any of them does not come up.
    pub fn start() -> Slurm {
        let lock = lock();
        let started = Instant::now();
        ensure_munged();
        let dir = TempDir::new("slurm");
        let node = hostname();
        let conf = write_conf(dir.path(), &node);
        let mut slurm = Slurm {
            conf,
            node,
            startup: Duration::ZERO,
            slurmd: None,
            slurmctld: None,
            dir,
            _lock: lock,
        };
        slurm.slurmctld = Some(slurm.daemon("slurmctld"));
        slurm.wait_until("slurmctld answers", |s| {
            s.sinfo().is_ok_and(|o| !o.trim().is_empty())
        });
        slurm.slurmd = Some(slurm.daemon("slurmd"));
        slurm.wait_until("the node is idle", |s| {
            s.sinfo().is_ok_and(|o| o.trim() == "idle")
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

    /// `sinfo -h -o %T`: the node's state.
    pub fn sinfo(&self) -> Result<String, String> {
        let out = self
            .command("sinfo")
            .args(["-h", "-o", "%T"])
            .output()
            .map_err(|e| format!("cannot run sinfo: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn daemon(&self, name: &str) -> Proc {
        let mut cmd = self.command(name);
        cmd.arg("-D")
            .arg("-f")
            .arg(&self.conf)
            .current_dir(self.dir.path());
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
            let exited = [
                ("slurmctld", &mut self.slurmctld),
                ("slurmd", &mut self.slurmd),
            ]
            .into_iter()
            .find_map(|(name, p)| p.as_mut().is_some_and(|p| !p.is_running()).then_some(name));
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
        for (name, p) in [("slurmctld", &self.slurmctld), ("slurmd", &self.slurmd)] {
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
        drop(self.slurmd.take());
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

fn write_conf(dir: &Path, node: &str) -> PathBuf {
    let (ctld_port, slurmd_port) = free_ports();
    for sub in ["state", "spool"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let d = dir.display();
    let conf = format!(
        "\
ClusterName=mana-test
SlurmctldHost={node}
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
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={node} CPUs={CPUS} RealMemory=1024 State=UNKNOWN
PartitionName=test Nodes={node} Default=YES OverSubscribe=YES MaxTime=INFINITE State=UP
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
