//! The descendants of a job member's launched process (issue 11, item 5;
//! docs/process-state.md "Child processes").
//!
//! Every descendant runs the runtime: a child that execs keeps `LD_PRELOAD` and starts it
//! from the library constructor; a child that only forks gets a checkpoint thread from
//! the runtime's `pthread_atfork` handler. Its checkpoint thread does not talk to the
//! coordinator: it connects to the launched process (the **root**), which listens on an
//! abstract Unix socket named in `MANA_MEMBERS` (set by the root at start, inherited).
//! The root accepts only its own user's descendants (`SO_PEERCRED` and the parent chain).
//!
//! A checkpoint of the root stops its threads, then every member's (`Stop`); each answers
//! with its direct children. Every child of every process of the tree must be a member
//! (or a zombie, which its parent records): a child that does not connect within
//! [`JOIN_GRACE`] runs without the runtime (statically linked, or `LD_PRELOAD` taken out
//! of its environment) and fails the checkpoint, named. With everything stopped, each
//! member writes its image (`Write`) — `rank-RRRRR.pPID.mana` next to the root's —
//! and the root lists them in its MANIFEST entry; the coordinator's verdict goes back
//! to each (`Resume`: go on, or exit after a `--kill`).

use crate::runtime::Config;
use mana_image::MemberEntry;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The environment variable naming the root's socket (abstract namespace).
pub const ENV: &str = "MANA_MEMBERS";

/// How long a child found at a checkpoint may take to connect (it may be between `fork`
/// and its runtime's start).
pub const JOIN_GRACE: Duration = Duration::from_secs(3);

/// Largest frame either side accepts.
const MAX_FRAME: u32 = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
pub enum ToMember {
    Stop {
        generation: u64,
    },
    /// `outside`: the inodes of the launcher's descriptors (the root's stdio and
    /// inherited ones): a member's stdio or inherited pipe that is none of them is a
    /// pipe of the tree (`popen`'s), saved and restored as one.
    /// `tree`: every process of the tree (the root and its members), whose sockets
    /// are the tree's (a connection between two of them comes back connected).
    Write {
        generation: u64,
        dir: String,
        rank: u32,
        outside: Vec<u64>,
        #[serde(default)]
        tree: Vec<i32>,
    },
    Resume {
        committed: bool,
        exit: bool,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum FromMember {
    Hello { pid: i32, ppid: i32 },
    Stopped { children: Vec<i32> },
    Written { entry: MemberEntry },
    Failed { reason: String },
}

fn send<T: Serialize>(fd: RawFd, m: &T) -> std::io::Result<()> {
    let body = rmp_serde::to_vec(m).map_err(std::io::Error::other)?;
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    with_stream(fd, |s| s.write_all(&frame))
}

fn recv<T: DeserializeOwned>(fd: RawFd, timeout: Option<Duration>) -> std::io::Result<T> {
    with_stream(fd, |s| {
        s.set_read_timeout(timeout)?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME {
            return Err(std::io::Error::other(format!("a frame of {len} bytes")));
        }
        let mut body = vec![0u8; len as usize];
        s.read_exact(&mut body)?;
        rmp_serde::from_slice(&body).map_err(std::io::Error::other)
    })
}

/// Runs `f` on a stream over `fd` without taking the descriptor over.
fn with_stream<R>(
    fd: RawFd,
    f: impl FnOnce(&mut UnixStream) -> std::io::Result<R>,
) -> std::io::Result<R> {
    // SAFETY: `fd` is a connected Unix stream socket this module owns; the stream gives
    // it back (into_raw_fd) instead of closing it.
    let mut s = unsafe { UnixStream::from_raw_fd(fd) };
    let r = f(&mut s);
    let _ = s.into_raw_fd();
    r
}

fn close(fd: RawFd) {
    crate::sys::close(fd);
}

/// A connected member, as the root knows it.
#[derive(Clone, Copy, Debug)]
struct Member {
    pid: i32,
    ppid: i32,
    fd: RawFd,
}

/// Members that connected (the listener adds, a checkpoint takes them into its round).
static MEMBERS: Mutex<Vec<Member>> = Mutex::new(Vec::new());
/// The root's listening socket, its listener thread, and (in a member) the connection to
/// the root: the runtime's, never saved in an image.
static LISTEN_FD: AtomicI32 = AtomicI32::new(-1);
static LISTENER_TID: AtomicI32 = AtomicI32::new(0);
static ROOT_FD: AtomicI32 = AtomicI32::new(-1);

/// Children the launched process had before the runtime started: a shell's `>(cat)`
/// forked before it exec'd the program (they belong to whoever started the job, as an
/// inherited pipe's other end does): never checkpointed, never waited for here.
static PREEXISTING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The root, at start: notes the children it already has.
pub fn note_preexisting() {
    *PREEXISTING.lock().unwrap_or_else(|p| p.into_inner()) = crate::procfs::children();
}

/// The root: the inodes of its stdio as the launcher (or the restarter) gave it.
static LAUNCH_STDIO: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// The root, at start and after a restart: notes its stdio's inodes.
pub fn note_launch_stdio() {
    *LAUNCH_STDIO.lock().unwrap_or_else(|p| p.into_inner()) =
        (0..3).filter_map(crate::procfs::inode).collect();
}

/// A member: the launcher's inodes (from the root, for the image being written).
static OUTSIDE: Mutex<Option<Vec<u64>>> = Mutex::new(None);

/// In a member writing its image: whether a pipe at a stdio or inherited descriptor is
/// the launcher's (`Some(true)`) or the tree's (`Some(false)`); `None` in the root.
pub fn launchers_inode(ino: u64) -> Option<bool> {
    OUTSIDE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|o| o.contains(&ino))
}

/// A member: the launcher's inodes for the image about to be written.
pub fn set_outside(outside: Vec<u64>) {
    *OUTSIDE.lock().unwrap_or_else(|p| p.into_inner()) = Some(outside);
}

/// The processes of the tree in the checkpoint being written (empty outside one, and in
/// a root without members).
static TREE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The tree of the image about to be written: the root and its members.
pub fn set_tree(tree: Vec<i32>) {
    *TREE.lock().unwrap_or_else(|p| p.into_inner()) = tree;
}

/// The other processes of the tree whose image is being written (an empty list when
/// the root has no members).
pub fn tree_others() -> Vec<i32> {
    let me = crate::sys::getpid();
    let mut t = TREE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    t.retain(|&p| p != me);
    t
}

/// Whether `pid` is a child the launched process had before the runtime started.
pub fn preexisting(pid: i32) -> bool {
    PREEXISTING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&pid)
}

/// Descriptors of this module (left out of the image).
pub fn runtime_fds() -> Vec<i32> {
    let mut v = vec![
        LISTEN_FD.load(Ordering::Acquire),
        ROOT_FD.load(Ordering::Acquire),
    ];
    v.extend(
        MEMBERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|m| m.fd),
    );
    v.retain(|&fd| fd >= 0);
    v
}

/// The listener thread (not the application's: never stopped).
pub fn listener_tid() -> i32 {
    LISTENER_TID.load(Ordering::Acquire)
}

/// The root: chooses the socket's name for its descendants (before the program runs).
pub fn name_for_descendants(rank: u32) {
    let mut nonce = [0u8; 8];
    // SAFETY: getrandom into a valid 8-byte buffer.
    let got = unsafe { libc::getrandom(nonce.as_mut_ptr().cast(), 8, 0) };
    let nonce = if got == 8 {
        u64::from_le_bytes(nonce)
    } else {
        crate::sys::getpid() as u64 ^ (crate::runtime::monotonic_ns() as u64).rotate_left(20)
    };
    // Set while the process is still single-threaded (the library constructor).
    std::env::set_var(ENV, format!("mana-members-{nonce:016x}-{rank}"));
}

fn socket_name() -> Option<String> {
    std::env::var(ENV)
        .ok()
        .filter(|n| n.len() < 100 && n.starts_with("mana-members-"))
}

fn abstract_addr(name: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
}

/// The root: listens for its descendants (from the first checkpoint that finds children
/// on; again after a restart). Called by the checkpoint thread, so that the listener
/// shares its descriptor table.
pub fn listen() {
    let Some(name) = socket_name() else {
        return;
    };
    let listener = match abstract_addr(&name).and_then(|a| UnixListener::bind_addr(&a)) {
        Ok(l) => l,
        Err(e) => {
            warn!("cannot listen for child processes on @{name} ({e}): child processes are not checkpointed");
            return;
        }
    };
    LISTEN_FD.store(listener.as_raw_fd(), Ordering::Release);
    let spawned = crate::sys::spawn_blocked(
        std::thread::Builder::new()
            .name("mana-members".into())
            .stack_size(256 << 10),
        move || accept_loop(listener),
    );
    if let Err(e) = spawned {
        warn!("cannot start the thread child processes connect to: {e}");
    }
}

fn accept_loop(listener: UnixListener) {
    LISTENER_TID.store(crate::sys::gettid(), Ordering::Release);
    let me = crate::sys::getpid();
    for conn in listener.incoming() {
        // Retired ([`retire`]): the socket was shut down and forgotten.
        if LISTEN_FD.load(Ordering::Acquire) != listener.as_raw_fd() {
            break;
        }
        let Ok(conn) = conn else { continue };
        let fd = conn.into_raw_fd();
        match admit(fd, me) {
            Ok(m) => {
                debug!(pid = m.pid, ppid = m.ppid, "a child process joined");
                let mut all = MEMBERS.lock().unwrap_or_else(|p| p.into_inner());
                // A member that connects again (after its restart) replaces itself; those
                // that ended since (a program that runs `popen` in a loop) go.
                all.retain(|o| {
                    let keep = o.pid != m.pid && !hung_up(o.fd);
                    if !keep {
                        close(o.fd);
                    }
                    keep
                });
                all.push(m);
            }
            // A process that ended before it said who it is (a shell `system` ran) is
            // no news; anybody else is named.
            Err(Refused::Gone(e)) => {
                debug!("a child process left before it joined: {e}");
                close(fd);
            }
            Err(Refused::Stranger(e)) => {
                warn!("refused a connection to the child-process socket: {e}");
                close(fd);
            }
        }
    }
    LISTENER_TID.store(0, Ordering::Release);
}

/// The checkpoint thread gives way to a new one with another descriptor table (a program
/// started without a launcher, at its first MPI call): the listening socket and the
/// members' connections are in this thread's table, which the new thread cannot use.
/// Called by the retiring thread: the listener thread ends (its socket shut down), the
/// members' connections close — members connect again, to the listener the new thread
/// makes at its first checkpoint with children.
pub fn retire() {
    let fd = LISTEN_FD.swap(-1, Ordering::AcqRel);
    if fd < 0 {
        return;
    }
    // SAFETY: shutting down our listening socket wakes its thread's accept.
    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    let deadline = Instant::now() + Duration::from_secs(1);
    while listener_tid() != 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut all = MEMBERS.lock().unwrap_or_else(|p| p.into_inner());
    for m in all.iter() {
        close(m.fd);
    }
    all.clear();
}

/// Whether the member at the other end of `fd` is gone (a member never speaks first:
/// anything to read is its end of file).
fn hung_up(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, without waiting.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r != 0
}

enum Refused {
    Gone(String),
    Stranger(String),
}

/// Checks a new connection: this user's process, a descendant of this one, and its hello.
fn admit(fd: RawFd, me: i32) -> Result<Member, Refused> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED into a ucred of the given size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: getuid cannot fail.
    if r != 0 || cred.uid != unsafe { libc::getuid() } {
        return Err(Refused::Stranger(format!(
            "pid {} is another user's",
            cred.pid
        )));
    }
    if !descends_from(cred.pid, me) {
        let e = format!("pid {} is no descendant of this process", cred.pid);
        return Err(if parent_of(cred.pid).is_none() {
            Refused::Gone(e)
        } else {
            Refused::Stranger(e)
        });
    }
    match recv::<FromMember>(fd, Some(Duration::from_secs(5))) {
        Ok(FromMember::Hello { pid, ppid }) if pid == cred.pid => Ok(Member { pid, ppid, fd }),
        Ok(other) => Err(Refused::Stranger(format!(
            "pid {}: unexpected {other:?}",
            cred.pid
        ))),
        Err(e) => Err(Refused::Gone(format!("pid {}: {e}", cred.pid))),
    }
}

/// The parent of `pid` (`/proc/PID/stat`), if it exists.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn descends_from(mut pid: i32, root: i32) -> bool {
    for _ in 0..64 {
        match parent_of(pid) {
            Some(p) if p == root => return true,
            Some(p) if p > 1 => pid = p,
            _ => return false,
        }
    }
    false
}

/// State and name of process `pid` (`/proc/PID/stat`).
fn state_of(pid: i32) -> Option<(char, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let state = stat.get(close + 2..)?.chars().next()?;
    Some((state, comm))
}

/// The members of one checkpoint, stopped.
pub struct Round {
    members: Vec<Member>,
    finished: bool,
}

impl Round {
    /// Stops every member; fails if a child of the tree runs without the runtime.
    pub fn stop(generation: u64) -> Result<Round, String> {
        let mut round = Round {
            members: Vec::new(),
            finished: false,
        };
        let t0 = Instant::now();
        let preexisting = PREEXISTING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut children = crate::procfs::children();
        children.retain(|c| !preexisting.contains(c));
        // The socket is opened at the first checkpoint that finds children (most
        // processes have none: no thread, no socket); they are trying to connect.
        if !children.is_empty() && listener_tid() == 0 && LISTEN_FD.load(Ordering::Acquire) < 0 {
            listen();
        }
        loop {
            let joined: Vec<Member> = MEMBERS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|m| !round.members.iter().any(|r| r.pid == m.pid))
                .copied()
                .collect();
            for m in joined {
                if send(m.fd, &ToMember::Stop { generation }).is_err() {
                    forget_member(m.pid);
                    continue;
                }
                match recv::<FromMember>(m.fd, Some(Duration::from_secs(40))) {
                    Ok(FromMember::Stopped { children: c }) => {
                        children.extend(c);
                        round.members.push(m);
                    }
                    Ok(FromMember::Failed { reason }) => {
                        return Err(format!("child process {}: {reason}", m.pid));
                    }
                    Ok(other) => {
                        return Err(format!("child process {}: unexpected {other:?}", m.pid))
                    }
                    // Ended (or gone) before it stopped: its parent sees it ended.
                    Err(_) => forget_member(m.pid),
                }
            }
            let unknown: Vec<i32> = children
                .iter()
                .copied()
                .filter(|&c| !round.members.iter().any(|m| m.pid == c))
                .filter(|&c| !matches!(state_of(c), None | Some(('Z' | 'X', _))))
                .collect();
            if unknown.is_empty() {
                break;
            }
            if t0.elapsed() > JOIN_GRACE {
                let c = unknown[0];
                let comm = state_of(c).map(|s| s.1).unwrap_or_default();
                return Err(format!(
                    "child process {c} ({comm}) runs without the runtime (a statically linked program, or LD_PRELOAD taken out of its environment): it cannot be checkpointed"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !round.members.is_empty() {
            info!(members = round.members.len(), "child processes stopped");
        }
        Ok(round)
    }

    /// Asks every member to write its image into the generation `generation` of the
    /// checkpoint directory `dir` (absolute).
    pub fn write(
        &mut self,
        generation: u64,
        dir: &std::path::Path,
        rank: u32,
        inherited: &[(i32, u64)],
    ) -> Result<(), String> {
        let dir = dir.display().to_string();
        let mut outside = LAUNCH_STDIO
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        outside.extend(inherited.iter().map(|&(_, ino)| ino));
        let tree: Vec<i32> = std::iter::once(crate::sys::getpid())
            .chain(self.members.iter().map(|m| m.pid))
            .collect();
        set_tree(tree.clone());
        for m in &self.members {
            send(
                m.fd,
                &ToMember::Write {
                    generation,
                    dir: dir.clone(),
                    rank,
                    outside: outside.clone(),
                    tree: tree.clone(),
                },
            )
            .map_err(|e| format!("child process {}: {e}", m.pid))?;
        }
        Ok(())
    }

    /// Every member's image, once written.
    pub fn collect(&mut self) -> Result<Vec<MemberEntry>, String> {
        let mut out = Vec::new();
        for m in &self.members {
            match recv::<FromMember>(m.fd, Some(Duration::from_secs(600))) {
                Ok(FromMember::Written { entry }) if entry.pid == m.pid => out.push(MemberEntry {
                    ppid: m.ppid,
                    ..entry
                }),
                Ok(FromMember::Failed { reason }) => {
                    return Err(format!("child process {}: {reason}", m.pid))
                }
                Ok(other) => return Err(format!("child process {}: unexpected {other:?}", m.pid)),
                Err(e) => return Err(format!("child process {}: {e}", m.pid)),
            }
        }
        Ok(out)
    }

    /// The round's end: each member goes on (or exits after a committed `--kill`).
    pub fn finish(&mut self, committed: bool, exit: bool) {
        self.finished = true;
        for m in &self.members {
            let _ = send(m.fd, &ToMember::Resume { committed, exit });
        }
    }

    /// Removes the members' images from `gen_dir` (a failed round).
    pub fn discard(&self, gen_dir: &std::path::Path, rank: u32) {
        for m in &self.members {
            let _ = std::fs::remove_file(
                gen_dir.join(mana_image::ckptdir::member_image_name(rank, m.pid)),
            );
        }
    }

    /// Kills every member (the coordinator kills the job).
    pub fn kill(&mut self) {
        self.finished = true;
        for m in &self.members {
            // SAFETY: SIGKILL to a descendant of ours.
            unsafe { libc::kill(m.pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Round {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(false, false);
        }
    }
}

fn forget_member(pid: i32) {
    let mut all = MEMBERS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(i) = all.iter().position(|m| m.pid == pid) {
        close(all[i].fd);
        all.remove(i);
    }
}

/// After a restart: the descriptors of the checkpointed process's sockets are not ours
/// (their numbers may now be the program's): forgotten, never closed.
pub fn restarted() {
    // The children the launched process had before it started were not restored.
    if let Ok(mut p) = PREEXISTING.try_lock() {
        p.clear();
    }
    LISTEN_FD.store(-1, Ordering::Release);
    LISTENER_TID.store(0, Ordering::Release);
    ROOT_FD.store(-1, Ordering::Release);
    MEMBERS.lock().unwrap_or_else(|p| p.into_inner()).clear();
}

/// This module's locks, held by the forking thread across a `fork` ([`crate::fork`]):
/// the listener may be adding to the member list, and the child would find it locked
/// for ever.
pub(crate) fn hold_for_fork() -> Vec<Box<dyn std::any::Any>> {
    use crate::fork::held;
    vec![
        held(&MEMBERS),
        held(&PREEXISTING),
        held(&LAUNCH_STDIO),
        held(&OUTSIDE),
        held(&TREE),
    ]
}

/// In a child made by `fork` (its `pthread_atfork` handler, the locks released): the
/// parent's sockets are the parent's.
pub fn forked() {
    {
        let mut all = MEMBERS.lock().unwrap_or_else(|p| p.into_inner());
        for m in all.iter() {
            close(m.fd);
        }
        all.clear();
    }
    for fd in [
        LISTEN_FD.load(Ordering::Acquire),
        ROOT_FD.load(Ordering::Acquire),
    ] {
        if fd >= 0 {
            close(fd);
        }
    }
    restarted();
}

/// A member's checkpoint thread: connects to the root and serves its checkpoints.
pub fn serve_member(mut cfg: Config) {
    let Some(name) = socket_name() else {
        return;
    };
    let mut quiet_until = Instant::now();
    // The root listens from its first checkpoint with children on: tried every 20 ms at
    // first, then less often (at most every 500 ms: well within JOIN_GRACE).
    let mut pause = Duration::from_millis(20);
    loop {
        let conn = abstract_addr(&name).and_then(|a| UnixStream::connect_addr(&a));
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                if Instant::now() >= quiet_until {
                    debug!("cannot reach the launched process on @{name} ({e}); trying again");
                    quiet_until = Instant::now() + Duration::from_secs(60);
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(500));
                continue;
            }
        };
        pause = Duration::from_millis(20);
        let fd = conn.into_raw_fd();
        ROOT_FD.store(fd, Ordering::Release);
        let hello = FromMember::Hello {
            pid: crate::sys::getpid(),
            ppid: parent_of(crate::sys::getpid()).unwrap_or(0),
        };
        if send(fd, &hello).is_ok() {
            while let Ok(msg) = recv::<ToMember>(fd, None) {
                match msg {
                    ToMember::Stop { generation } => {
                        if crate::runtime::member_checkpoint(&mut cfg, fd, generation) {
                            // Restarted: that socket was the checkpointed process's.
                            break;
                        }
                    }
                    other => debug!(?other, "ignoring a message outside a checkpoint"),
                }
            }
        }
        if ROOT_FD.load(Ordering::Acquire) == fd {
            ROOT_FD.store(-1, Ordering::Release);
            close(fd);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A member, stopped: tells the root, with its children.
pub fn stopped(fd: RawFd) -> bool {
    send(
        fd,
        &FromMember::Stopped {
            children: crate::procfs::children(),
        },
    )
    .is_ok()
}

/// A member's answer (`Failed` when `reason` is set).
pub fn failed(fd: RawFd, reason: &str) {
    let _ = send(
        fd,
        &FromMember::Failed {
            reason: reason.to_string(),
        },
    );
}

pub fn written(fd: RawFd, entry: MemberEntry) -> bool {
    send(fd, &FromMember::Written { entry }).is_ok()
}

/// The next instruction from the root (`None`: it is gone).
pub fn next(fd: RawFd) -> Option<ToMember> {
    recv::<ToMember>(fd, None).ok()
}
