//! The coordinator server: registration of processes, commands, and checkpoint rounds.
//!
//! One thread per connection; all state lives in one [`State`] behind a mutex, and a
//! condition variable wakes commands waiting for a round and the interval timer.
//!
//! A checkpoint round: `Checkpoint{generation}` to every registered process → each
//! answers `Written` (or `CheckpointFailed`) → `Commit{manifest}` to the leader (lowest
//! rank) → `CommitDone` → `Resume{committed: true}` to everyone and `Checkpointed` to
//! the commands that asked. Any failure, or a participant disconnecting, ends the round
//! with `Resume{committed: false}` and an `Error` naming the process.
//!
//! Job-wide reduces (`Reduce` → `Reduced`/`ReduceFailed`) are kept apart from rounds:
//! the `reduce` module keeps their books, this module delivers its replies.

use crate::client::{probe, Probe};
use crate::protocol::{self, FromCoord, ProcessInfo, ProcessRow, Role, ToCoord};
use crate::reduce::{Reduces, Reply};
use crate::status::{self, StatusError, StatusFile};
use mana_image::{Manifest, ManifestEntry};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default TCP port.
pub const DEFAULT_PORT: u16 = 7779;
/// An authenticated client must say who it is (`Register`) within this time.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Authenticated connections served at once (the largest job, 4,096 ranks, plus its
/// commands, with room to spare).
pub const MAX_AUTHENTICATED: usize = 8192;
/// A process that does not take a message within this time is treated as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `Quit` waits for commands waiting on a round to get their answer.
const QUIT_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Options {
    pub port: u16,
    /// Address to listen on: all (`0.0.0.0`) by default; loopback for a coordinator a
    /// tool starts by itself (single-node use), or what `--bind` says.
    pub bind: std::net::IpAddr,
    /// Absolute path of the status file.
    pub status_path: PathBuf,
    pub daemon: bool,
    /// Time between timed checkpoints (else the first process's `interval_secs`).
    pub interval: Option<Duration>,
    pub exit_on_last: bool,
    /// Exit if no process has registered this many seconds after start.
    pub idle_timeout: Option<u64>,
    /// With a stale status file, start with a new secret instead of adopting the old one
    /// (whose processes then cannot register).
    pub fresh_secret: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("a coordinator is already running at {addr} (status file {})", path.display())]
    AlreadyRunning { addr: String, path: PathBuf },
    #[error("cannot listen on port {port}: {source}{}", if source.kind() == std::io::ErrorKind::AddrInUse { " (choose another with --port, or --port 0 for any free port)" } else { "" })]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("cannot become a daemon: {0}")]
    Daemon(String),
    #[error("accepting connections on port {port} failed: {source}")]
    Accept {
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

/// Runs a coordinator. With `daemon`, the calling process returns `Ok(())` as soon as the
/// coordinator listens and the status file is written; the coordinator itself only
/// returns on a fatal error (it ends with `process::exit` on `Quit`, `--exit-on-last`,
/// `--idle-timeout` or SIGINT/SIGTERM/SIGHUP).
pub fn run(opts: Options) -> Result<(), ServerError> {
    let path = opts.status_path.clone();
    // Before the fork and before the status file exists: a SIGTERM that arrives as soon as
    // the status file is there must not kill the daemon before its signal thread runs (its
    // default action would leave the file behind; seen once in CI).
    let term_signals = block_termination_signals();
    // Serialize "is one running? → bind → write the status file" against other
    // coordinators starting with the same status file (best effort: not every file
    // system supports flock on a directory).
    let mut dir_lock = lock_dir(&path);

    if let Probe::Running(s) = probe(&path) {
        return Err(ServerError::AlreadyRunning {
            addr: s.addr(),
            path,
        });
    }
    let listener =
        TcpListener::bind((opts.bind, opts.port)).map_err(|source| ServerError::Bind {
            port: opts.port,
            source,
        })?;
    let port = listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            port: opts.port,
            source,
        })?
        .port();
    // Clients connect to the host the status file names: the bound address itself when
    // it is one (loopback, or --bind ADDR), else this host's name.
    let host = if opts.bind.is_unspecified() {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    } else {
        opts.bind.to_string()
    };
    // A status file naming a coordinator that is gone: its job may still run, its
    // processes trying to reconnect with the secret they know — keep it, so they register
    // here (a replacement coordinator adopts the job). A garbled file gets a new secret.
    // Only a file of this user's that no one else can read or write is adopted (anyone
    // who could plant one would know the secret).
    let private = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(&path).is_ok_and(|m| {
            // SAFETY: geteuid cannot fail.
            m.is_file() && m.uid() == unsafe { libc::geteuid() } && m.mode() & 0o077 == 0
        })
    };
    let adopted = match probe(&path) {
        Probe::Stale(_) if !opts.fresh_secret && private() => StatusFile::read(&path).ok(),
        _ => None,
    };
    let secret = match &adopted {
        Some(old) => {
            tracing::info!(old_pid = old.pid, old_addr = %old.addr(),
                "the status file names a coordinator that is gone: keeping its secret, so the processes of its job register here");
            old.secret.clone()
        }
        None => status::new_secret()?,
    };

    let pid = if opts.daemon {
        match daemonize(&opts, &host, port, &secret)? {
            Daemonized::Parent => return Ok(()),
            Daemonized::Child => {
                // Close our copy of the directory lock without unlocking: the lock
                // belongs to the open file description the parent shares, and the
                // parent releases it once the status file is written.
                if let Some(l) = dir_lock.take() {
                    let fd = l.as_raw_fd();
                    std::mem::forget(l);
                    let _ = nix::unistd::close(fd);
                }
                std::process::id() as i32
            }
        }
    } else {
        let pid = std::process::id() as i32;
        StatusFile {
            host: host.clone(),
            port,
            secret: secret.clone(),
            pid,
        }
        .write(&path)?;
        pid
    };
    drop(dir_lock);
    tracing::info!(%host, port, pid, status_file = %path.display(), "coordinator listening");

    let coord = Arc::new(Coord {
        state: Mutex::new(State::new(opts.interval)),
        cond: Condvar::new(),
        status_path: path,
        pid,
        secret,
        exit_on_last: opts.exit_on_last,
        idle_timeout: opts.idle_timeout.map(Duration::from_secs),
        started: Instant::now(),
    });

    // Only now (after any fork) may threads exist.
    if let Some(set) = term_signals {
        spawn_signal_thread(coord.clone(), set);
    }
    {
        let c = coord.clone();
        spawn("mana-timer", move || c.timer_loop());
    }
    raise_descriptor_limit();
    let authed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    crate::gate::run(&listener, &coord.secret.clone(), |stream, peer| {
        use std::sync::atomic::Ordering;
        if authed.fetch_add(1, Ordering::AcqRel) >= MAX_AUTHENTICATED {
            authed.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%peer, limit = MAX_AUTHENTICATED, "refused an authenticated connection over the limit");
            let mut stream = stream;
            let _ = protocol::send(
                &mut stream,
                &FromCoord::Error(format!(
                    "the coordinator already serves {MAX_AUTHENTICATED} connections"
                )),
            );
            return;
        }
        let c = coord.clone();
        let a = authed.clone();
        let started = spawn("mana-conn", move || {
            c.serve(stream, peer);
            a.fetch_sub(1, Ordering::AcqRel);
        });
        if !started {
            authed.fetch_sub(1, Ordering::AcqRel);
        }
    })
    .map_err(|source| ServerError::Accept { port, source })?;
    Ok(())
}

/// Raises the soft descriptor limit to the hard one: a job of 4,096 ranks needs a socket
/// per rank, and the gate holds up to `gate::MAX_PENDING` more.
fn raise_descriptor_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit structure.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            let want = l.rlim_max.min(1 << 20);
            l.rlim_cur = want.max(l.rlim_cur);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0
            && (l.rlim_cur as usize) < MAX_AUTHENTICATED + crate::gate::MAX_PENDING + 64
        {
            tracing::warn!(
                limit = l.rlim_cur,
                "the descriptor limit is below what a job of {MAX_AUTHENTICATED} connections needs"
            );
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> bool {
    match std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(512 << 10)
        .spawn(f)
    {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a thread");
            false
        }
    }
}

/// Holds `flock(LOCK_EX)` on the status file's directory while alive.
fn lock_dir(path: &std::path::Path) -> Option<nix::fcntl::Flock<File>> {
    let dir = path.parent()?;
    let f = File::open(dir).ok()?;
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive) {
        Ok(l) => Some(l),
        Err((_, e)) => {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot lock the status file's directory");
            None
        }
    }
}

enum Daemonized {
    Parent,
    Child,
}

/// Forks; the parent writes the status file (naming the child's pid) and returns
/// `Parent`; the child starts a new session, moves to `/`, and sends stdin/stdout to
/// `/dev/null` and stderr to `<status file>.log`.
fn daemonize(
    opts: &Options,
    host: &str,
    port: u16,
    secret: &str,
) -> Result<Daemonized, ServerError> {
    use nix::unistd::{fork, ForkResult};
    let log = status::log_path(&opts.status_path);
    // Appended across runs; never through a planted symlink or into another's file.
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&log)
        .map_err(|e| ServerError::Daemon(format!("cannot open log file {}: {e}", log.display())))?;
    {
        use std::os::unix::fs::MetadataExt;
        let md = log_file
            .metadata()
            .map_err(|e| ServerError::Daemon(format!("{}: {e}", log.display())))?;
        // SAFETY: geteuid cannot fail.
        if md.uid() != unsafe { libc::geteuid() } || md.mode() & 0o022 != 0 {
            return Err(ServerError::Daemon(format!(
                "log file {} belongs to another user or others can write it",
                log.display()
            )));
        }
    }
    let devnull = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| ServerError::Daemon(format!("cannot open /dev/null: {e}")))?;

    // SAFETY: no thread has been started in this process yet (run() forks before
    // spawning any), so the child is a complete copy and may use any function.
    match unsafe { fork() }.map_err(|e| ServerError::Daemon(format!("fork: {e}")))? {
        ForkResult::Parent { child } => {
            let st = StatusFile {
                host: host.to_string(),
                port,
                secret: secret.to_string(),
                pid: child.as_raw(),
            };
            if let Err(e) = st.write(&opts.status_path) {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                return Err(e.into());
            }
            tracing::info!(
                %host, port, pid = child.as_raw(), status_file = %opts.status_path.display(),
                log = %log.display(), "coordinator daemon listening"
            );
            Ok(Daemonized::Parent)
        }
        ForkResult::Child => {
            let _ = nix::unistd::setsid();
            let _ = std::env::set_current_dir("/");
            let _ = nix::unistd::dup2(devnull.as_raw_fd(), 0);
            let _ = nix::unistd::dup2(devnull.as_raw_fd(), 1);
            let _ = nix::unistd::dup2(log_file.as_raw_fd(), 2);
            Ok(Daemonized::Child)
        }
    }
}

/// SIGINT/SIGTERM/SIGHUP, blocked in the calling (only) thread: inherited across the fork
/// and by every thread started later, until the signal thread takes them.
fn block_termination_signals() -> Option<nix::sys::signal::SigSet> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    match nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
        Ok(()) => Some(set),
        Err(e) => {
            tracing::warn!(error = %e, "cannot block termination signals; the status file may be left behind");
            None
        }
    }
}

/// SIGINT/SIGTERM/SIGHUP (blocked by [`block_termination_signals`]): remove the status file
/// and exit. One thread takes them with `sigwait`.
fn spawn_signal_thread(coord: Arc<Coord>, set: nix::sys::signal::SigSet) {
    spawn("mana-signals", move || {
        if let Ok(sig) = set.wait() {
            let mut st = coord.state.lock();
            coord.exit(&mut st, &format!("received {sig}"), 128 + sig as i32);
        }
    });
}

/// Process state as `mana_status --list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PState {
    Running,
    Checkpointing,
    Written,
    Committing,
}

impl PState {
    fn name(self) -> &'static str {
        match self {
            PState::Running => "running",
            PState::Checkpointing => "checkpointing",
            PState::Written => "written",
            PState::Committing => "committing",
        }
    }
}

struct Proc {
    info: ProcessInfo,
    /// Write side of the process's connection.
    writer: TcpStream,
    state: PState,
    last_generation: u64,
}

impl Proc {
    /// "process 3 (node1:4242 rank 0)"
    fn describe(&self, id: u32) -> String {
        format!(
            "process {id} ({}:{} rank {})",
            self.info.host, self.info.pid, self.info.rank
        )
    }

    /// Sends one message; on failure the connection is shut down, so its reader thread
    /// sees the process as gone and handles it like any disconnect.
    fn send(&mut self, id: u32, msg: &FromCoord) {
        if let Err(e) = protocol::send(&mut self.writer, msg) {
            tracing::warn!(id, error = %e, "cannot send to {}", self.describe(id));
            let _ = self.writer.shutdown(Shutdown::Both);
        }
    }

    /// [`Proc::send`] for a message already encoded (one encoding for many processes).
    fn send_frame(&mut self, id: u32, frame: &[u8]) {
        if let Err(e) = protocol::send_frame(&mut self.writer, frame) {
            tracing::warn!(id, error = %e, "cannot send to {}", self.describe(id));
            let _ = self.writer.shutdown(Shutdown::Both);
        }
    }
}

struct Round {
    seq: u64,
    generation: u64,
    kill_after: bool,
    participants: BTreeSet<u32>,
    entries: BTreeMap<u32, ManifestEntry>,
    leader: Option<u32>,
    /// Commands waiting for this round's outcome.
    waiters: usize,
    started: Instant,
}

/// Result of a round for the commands that waited: `(generation, dir)` or the reason.
type Outcome = Result<(u64, String), String>;

struct State {
    next_id: u32,
    procs: BTreeMap<u32, Proc>,
    round: Option<Round>,
    next_seq: u64,
    /// Outcomes of finished rounds, with how many waiters have yet to take them.
    outcomes: HashMap<u64, (Outcome, usize)>,
    last_committed: u64,
    /// The newest generation a round was started for (committed or not).
    last_attempted: u64,
    interval: Option<Duration>,
    /// Timed checkpoints count from here (start, first registration, end of a round).
    interval_base: Instant,
    ever_registered: bool,
    waiting_commands: usize,
    /// Job-wide reduces pending (or failed, until every process has been told).
    reduces: Reduces,
}

impl State {
    fn new(interval: Option<Duration>) -> State {
        State {
            next_id: 1,
            procs: BTreeMap::new(),
            round: None,
            next_seq: 1,
            outcomes: HashMap::new(),
            last_committed: 0,
            last_attempted: 0,
            interval: interval.filter(|d| !d.is_zero()),
            interval_base: Instant::now(),
            ever_registered: false,
            waiting_commands: 0,
            reduces: Reduces::default(),
        }
    }
}

struct Coord {
    state: Mutex<State>,
    cond: Condvar,
    status_path: PathBuf,
    pid: i32,
    secret: String,
    exit_on_last: bool,
    idle_timeout: Option<Duration>,
    started: Instant,
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Coord {
    /// Removes the status file (if it still names us) and ends the coordinator.
    fn exit(&self, _st: &mut MutexGuard<'_, State>, why: &str, code: i32) -> ! {
        tracing::info!(reason = why, "coordinator exiting");
        StatusFile::remove_if_owned(&self.status_path, self.pid);
        std::process::exit(code);
    }

    /// `--exit-on-last`: every process is gone and nobody waits for an answer.
    fn maybe_exit(&self, st: &mut MutexGuard<'_, State>) {
        if self.exit_on_last
            && st.ever_registered
            && st.procs.is_empty()
            && st.waiting_commands == 0
        {
            self.exit(st, "the last process is gone (--exit-on-last)", 0);
        }
    }

    /// Serves a connection whose peer proved the secret (`gate`): it says who it is.
    fn serve(self: Arc<Self>, mut stream: TcpStream, peer: String) {
        let _ = stream.set_read_timeout(Some(REGISTER_TIMEOUT));
        let role = match protocol::recv(&mut stream) {
            Ok(ToCoord::Register(role)) => role,
            Ok(other) => {
                tracing::warn!(%peer, message = ?other, "an authenticated client did not register; closed");
                return;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection closed before Register");
                return;
            }
        };
        let _ = stream.set_read_timeout(None);
        match role {
            Role::Process(info) => self.serve_process(stream, info),
            Role::Command => self.serve_command(stream, &peer),
        }
    }

    // ---------------------------------------------------------------- processes

    fn serve_process(&self, mut stream: TcpStream, info: ProcessInfo) {
        let writer = match stream.try_clone() {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "cannot duplicate a connection");
                return;
            }
        };
        let _ = writer.set_write_timeout(Some(WRITE_TIMEOUT));
        let id = {
            let mut st = self.state.lock();
            let id = st.next_id;
            st.next_id += 1;
            if st.procs.is_empty() {
                st.interval_base = Instant::now();
            }
            if st.interval.is_none() {
                if let Some(s) = info.interval_secs.filter(|&s| s > 0) {
                    tracing::info!(
                        seconds = s,
                        "timed checkpoints requested by the first process"
                    );
                    st.interval = Some(Duration::from_secs(s));
                }
            }
            st.ever_registered = true;
            let mut p = Proc {
                last_generation: info.last_generation,
                info,
                writer,
                state: PState::Running,
            };
            tracing::info!(id, rank = p.info.rank, world_size = p.info.world_size,
                host = %p.info.host, pid = p.info.pid, program = %p.info.program, "process registered");
            p.send(id, &FromCoord::Welcome { id });
            st.procs.insert(id, p);
            self.cond.notify_all();
            id
        };
        loop {
            match protocol::recv::<_, ToCoord>(&mut stream) {
                Ok(msg) => {
                    let mut st = self.state.lock();
                    self.on_process_message(&mut st, id, msg);
                }
                Err(e) => {
                    let mut st = self.state.lock();
                    self.on_disconnect(&mut st, id, &e.to_string());
                    return;
                }
            }
        }
    }

    fn on_disconnect(&self, st: &mut MutexGuard<'_, State>, id: u32, error: &str) {
        let Some(p) = st.procs.remove(&id) else {
            return;
        };
        let who = p.describe(id);
        tracing::info!(id, error, "{who} disconnected");
        drop(p);
        if st
            .round
            .as_ref()
            .is_some_and(|r| r.participants.contains(&id))
        {
            self.fail_round(st, &format!("{who}: disconnected during the checkpoint"));
        }
        let State { reduces, procs, .. } = &mut **st;
        let replies = reduces.disconnected(id, &who, procs.keys().copied());
        deliver(procs, replies);
        self.cond.notify_all();
        self.maybe_exit(st);
    }

    fn on_process_message(&self, st: &mut MutexGuard<'_, State>, id: u32, msg: ToCoord) {
        let Some(p) = st.procs.get(&id) else { return };
        let who = p.describe(id);
        let rank = p.info.rank;
        let expected = st
            .round
            .as_ref()
            .filter(|r| r.participants.contains(&id))
            .map(|r| r.generation);
        match msg {
            ToCoord::Written { generation, entry } if Some(generation) == expected => {
                if entry.rank != rank {
                    let why = format!(
                        "{who}: reported an image for rank {} but registered as rank {rank}",
                        entry.rank
                    );
                    return self.fail_round(st, &why);
                }
                let Some(round) = st.round.as_mut() else {
                    return;
                };
                tracing::info!(id, generation, rank, bytes = entry.bytes, "image written");
                round.entries.insert(id, entry);
                if let Some(p) = st.procs.get_mut(&id) {
                    p.state = PState::Written;
                }
                self.maybe_commit(st);
            }
            ToCoord::CheckpointFailed { generation, reason } if Some(generation) == expected => {
                self.fail_round(st, &format!("{who}: {reason}"));
            }
            ToCoord::CommitDone { generation, dir }
                if Some(generation) == expected
                    && st.round.as_ref().and_then(|r| r.leader) == Some(id) =>
            {
                self.succeed_round(st, dir);
            }
            ToCoord::CommitFailed { generation, reason }
                if Some(generation) == expected
                    && st.round.as_ref().and_then(|r| r.leader) == Some(id) =>
            {
                self.fail_round(st, &format!("{who}: commit failed: {reason}"));
            }
            ToCoord::Reduce { key, op, entries } => {
                let State { reduces, procs, .. } = &mut **st;
                let reply = reduces.contribute(id, &who, key, op, entries, procs.keys().copied());
                deliver(procs, reply);
            }
            other => {
                tracing::warn!(id, message = ?other, "ignoring an unexpected message from {who}")
            }
        }
    }

    // ---------------------------------------------------------------- rounds

    /// Starts a round (or joins the running one) for a command; returns its sequence
    /// number. `waiter` counts the caller as waiting for the outcome.
    fn start_or_join(
        &self,
        st: &mut MutexGuard<'_, State>,
        kill_after: bool,
        waiter: bool,
    ) -> Result<u64, String> {
        if let Some(r) = st.round.as_mut() {
            r.kill_after |= kill_after;
            r.waiters += usize::from(waiter);
            tracing::info!(
                generation = r.generation,
                "joining the checkpoint in progress"
            );
            return Ok(r.seq);
        }
        if st.procs.is_empty() {
            return Err("no processes are registered with the coordinator".into());
        }
        check_ranks(&st.procs)?;
        // Above everything committed or attempted by this coordinator, restored by a
        // process, or present in a process's checkpoint directory: a number is never
        // used twice (a failed attempt's included).
        let generation = st
            .procs
            .values()
            .flat_map(|p| [p.last_generation, p.info.dir_generation])
            .chain([st.last_committed, st.last_attempted])
            .max()
            .unwrap_or(0)
            + 1;
        st.last_attempted = generation;
        let seq = st.next_seq;
        st.next_seq += 1;
        let participants: BTreeSet<u32> = st.procs.keys().copied().collect();
        tracing::info!(
            generation,
            processes = participants.len(),
            kill_after,
            "checkpoint started"
        );
        st.round = Some(Round {
            seq,
            generation,
            kill_after,
            participants,
            entries: BTreeMap::new(),
            leader: None,
            waiters: usize::from(waiter),
            started: Instant::now(),
        });
        for (&id, p) in st.procs.iter_mut() {
            p.state = PState::Checkpointing;
            p.send(id, &FromCoord::Checkpoint { generation });
        }
        Ok(seq)
    }

    /// Every participant wrote: ask the leader (lowest rank, then lowest id) to commit.
    fn maybe_commit(&self, st: &mut MutexGuard<'_, State>) {
        let State { round, procs, .. } = &mut **st;
        let Some(r) = round.as_mut() else { return };
        if r.leader.is_some() || r.entries.len() < r.participants.len() {
            return;
        }
        let Some(leader) = r
            .participants
            .iter()
            .filter_map(|id| procs.get(id).map(|p| (p.info.rank, *id)))
            .min()
            .map(|(_, id)| id)
        else {
            return;
        };
        let mut images: Vec<ManifestEntry> = r.entries.values().cloned().collect();
        images.sort_by_key(|e| e.rank);
        let world_size = r
            .participants
            .iter()
            .filter_map(|id| procs.get(id).map(|p| p.info.world_size))
            .max()
            .unwrap_or(0);
        let manifest = Manifest {
            generation: r.generation,
            world_size,
            created_unix_ns: now_unix_ns(),
            mpi: String::new(),
            images,
        };
        r.leader = Some(leader);
        if let Some(p) = procs.get_mut(&leader) {
            tracing::info!(
                generation = r.generation,
                leader,
                "all images written; committing"
            );
            p.state = PState::Committing;
            p.send(leader, &FromCoord::Commit { manifest });
        }
    }

    fn succeed_round(&self, st: &mut MutexGuard<'_, State>, dir: String) {
        let Some(r) = st.round.take() else { return };
        let generation = r.generation;
        tracing::info!(generation, %dir, elapsed_ms = r.started.elapsed().as_millis() as u64,
            exit = r.kill_after, "checkpoint committed");
        st.last_committed = st.last_committed.max(generation);
        for id in &r.participants {
            if let Some(p) = st.procs.get_mut(id) {
                p.state = PState::Running;
                p.last_generation = generation;
                p.send(
                    *id,
                    &FromCoord::Resume {
                        generation,
                        committed: true,
                        exit: r.kill_after,
                    },
                );
            }
        }
        self.finish_round(st, &r, Ok((generation, dir)));
    }

    fn fail_round(&self, st: &mut MutexGuard<'_, State>, reason: &str) {
        let Some(r) = st.round.take() else { return };
        // The round's reduces end with it (its processes are told below); a retry reuses
        // the generation number and so the same keys.
        st.reduces.clear();
        let generation = r.generation;
        let message = format!("checkpoint of generation {generation} failed: {reason}");
        tracing::error!(generation, "{message}");
        for id in &r.participants {
            if let Some(p) = st.procs.get_mut(id) {
                p.state = PState::Running;
                p.send(
                    *id,
                    &FromCoord::Resume {
                        generation,
                        committed: false,
                        exit: false,
                    },
                );
            }
        }
        self.finish_round(st, &r, Err(message));
    }

    fn finish_round(&self, st: &mut MutexGuard<'_, State>, r: &Round, outcome: Outcome) {
        if r.waiters > 0 {
            st.outcomes.insert(r.seq, (outcome, r.waiters));
        }
        st.interval_base = Instant::now();
        self.cond.notify_all();
    }

    /// Waits for the outcome of round `seq` (the caller was counted as a waiter).
    fn wait_outcome(&self, st: &mut MutexGuard<'_, State>, seq: u64) -> Outcome {
        loop {
            if let Some((outcome, left)) = st.outcomes.get_mut(&seq) {
                *left -= 1;
                let o = outcome.clone();
                if *left == 0 {
                    st.outcomes.remove(&seq);
                }
                return o;
            }
            self.cond.wait(st);
        }
    }

    /// Timed checkpoints and `--idle-timeout`.
    fn timer_loop(&self) {
        let mut st = self.state.lock();
        loop {
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            if let (Some(idle), false) = (self.idle_timeout, st.ever_registered) {
                let deadline = self.started + idle;
                if now >= deadline {
                    self.exit(&mut st, "no process registered within --idle-timeout", 0);
                }
                next = Some(deadline);
            }
            if let Some(interval) = st.interval {
                if !st.procs.is_empty() && st.round.is_none() {
                    let due = st.interval_base + interval;
                    if now >= due {
                        tracing::info!(interval = interval.as_secs_f64(), "timed checkpoint");
                        if let Err(e) = self.start_or_join(&mut st, false, false) {
                            tracing::warn!("timed checkpoint not started: {e}");
                            st.interval_base = now;
                        }
                        continue;
                    }
                    next = Some(next.map_or(due, |n| n.min(due)));
                }
            }
            match next {
                Some(t) => {
                    self.cond.wait_until(&mut st, t);
                }
                None => self.cond.wait(&mut st),
            }
        }
    }

    // ---------------------------------------------------------------- commands

    fn serve_command(&self, mut stream: TcpStream, peer: &str) {
        if protocol::send(
            &mut stream,
            &FromCoord::Done {
                message: "ok".into(),
            },
        )
        .is_err()
        {
            return;
        }
        loop {
            let msg: ToCoord = match protocol::recv(&mut stream) {
                Ok(m) => m,
                Err(_) => return,
            };
            tracing::debug!(%peer, message = ?msg, "command");
            let quit = matches!(msg, ToCoord::Quit);
            let (reply, waited) = self.on_command(msg);
            let sent = protocol::send(&mut stream, &reply);
            if waited {
                // Counted as waiting until the answer is out, so that --exit-on-last
                // does not end the coordinator before the command has its reply.
                let mut st = self.state.lock();
                st.waiting_commands -= 1;
                self.cond.notify_all();
                self.maybe_exit(&mut st);
            }
            if quit {
                let mut st = self.state.lock();
                self.quit(&mut st);
            }
            if sent.is_err() {
                return;
            }
        }
    }

    /// The reply to one command, and whether the caller was counted in
    /// `waiting_commands` (it must uncount itself once the reply is sent).
    fn on_command(&self, msg: ToCoord) -> (FromCoord, bool) {
        let mut st = self.state.lock();
        let reply = match msg {
            ToCoord::Checkpoint { kill_after } => {
                let seq = match self.start_or_join(&mut st, kill_after, true) {
                    Ok(s) => s,
                    Err(e) => return (FromCoord::Error(e), false),
                };
                st.waiting_commands += 1;
                let reply = match self.wait_outcome(&mut st, seq) {
                    Ok((generation, dir)) => FromCoord::Checkpointed { generation, dir },
                    Err(e) => FromCoord::Error(e),
                };
                return (reply, true);
            }
            ToCoord::List => FromCoord::Rows(
                st.procs
                    .iter()
                    .map(|(&id, p)| ProcessRow {
                        id,
                        host: p.info.host.clone(),
                        pid: p.info.pid,
                        rank: p.info.rank,
                        program: p.info.program.clone(),
                        state: p.state.name().to_string(),
                        last_generation: p.last_generation,
                        ckpt_dir: p.info.ckpt_dir.clone(),
                    })
                    .collect(),
            ),
            ToCoord::Kill => {
                let n = self.kill_all(&mut st);
                FromCoord::Done {
                    message: format!("sent kill to {}", plural(n, "process", "processes")),
                }
            }
            ToCoord::Quit => {
                let n = self.kill_all(&mut st);
                FromCoord::Done {
                    message: format!(
                        "coordinator stopping; sent kill to {}",
                        plural(n, "process", "processes")
                    ),
                }
            }
            other => FromCoord::Error(format!("unexpected message from a command: {other:?}")),
        };
        (reply, false)
    }

    fn kill_all(&self, st: &mut MutexGuard<'_, State>) -> usize {
        let n = st.procs.len();
        tracing::info!(processes = n, "killing every process");
        for (&id, p) in st.procs.iter_mut() {
            p.send(id, &FromCoord::Kill);
        }
        n
    }

    fn quit(&self, st: &mut MutexGuard<'_, State>) -> ! {
        self.fail_round(st, "the coordinator was told to quit");
        let deadline = Instant::now() + QUIT_GRACE;
        while st.waiting_commands > 0 && Instant::now() < deadline {
            self.cond.wait_until(st, deadline);
        }
        self.exit(st, "told to quit", 0)
    }
}

/// Sends reduce replies, each encoded once however many processes it goes to.
fn deliver(procs: &mut BTreeMap<u32, Proc>, replies: impl IntoIterator<Item = Reply>) {
    for Reply { to, msg } in replies {
        let frame = match protocol::encode(&msg) {
            Ok(f) => f,
            Err(e) => {
                // `reduce` only hands out results it checked can be encoded.
                tracing::error!(error = %e, reply = ?msg, "cannot encode a reduce reply");
                continue;
            }
        };
        for id in to {
            if let Some(p) = procs.get_mut(&id) {
                p.send_frame(id, &frame);
            }
        }
    }
}

/// Refuses a round whose manifest could not describe the job: every rank
/// `0..world_size` must be registered exactly once.
fn check_ranks(procs: &BTreeMap<u32, Proc>) -> Result<(), String> {
    let world_size = procs.values().map(|p| p.info.world_size).max().unwrap_or(0);
    let mut seen: BTreeMap<u32, u32> = BTreeMap::new();
    for (&id, p) in procs {
        if p.info.rank >= world_size {
            return Err(format!(
                "cannot checkpoint: {} claims rank {} in a world of {world_size}",
                p.describe(id),
                p.info.rank
            ));
        }
        if let Some(other) = seen.insert(p.info.rank, id) {
            return Err(format!(
                "cannot checkpoint: process {other} and {} both registered as rank {}",
                p.describe(id),
                p.info.rank
            ));
        }
    }
    if seen.len() < world_size as usize {
        let missing: Vec<String> = (0..world_size)
            .filter(|r| !seen.contains_key(r))
            .take(8)
            .map(|r| r.to_string())
            .collect();
        return Err(format!(
            "cannot checkpoint: only {} of {world_size} ranks are registered (missing rank {}{})",
            seen.len(),
            missing.join(", "),
            if world_size as usize - seen.len() > missing.len() {
                ", …"
            } else {
                ""
            }
        ));
    }
    Ok(())
}
