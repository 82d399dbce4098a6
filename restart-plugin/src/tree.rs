//! Restoring a job member's process tree (issue 11, item 5; docs/process-state.md
//! "Child processes").
//!
//! The restarter of the launched process (the root) reads the images of its descendants
//! (MANIFEST `members`) and makes, once, every pipe that two processes of the tree hold
//! (the same pipe inode in several images), its unread bytes written back — inherited by
//! everything it forks. Each process of the tree, before it restores itself, makes its
//! direct children with their saved pids (`clone3` with `set_tid`, in the restart's pid
//! namespace): each child execs this restarter again (`MANA_RESTORE_MEMBER`: its pid)
//! and restores its own image the same way; and it makes its ended-but-unwaited children
//! again, ended the same way, for its `waitpid`. A restored child is thus the restored
//! parent's real child.

use crate::ns;
use mana_image::{FileKind, ImageHeader, ImageReader, MemberEntry};
use std::collections::HashMap;
use std::path::Path;
use tracing::{debug, warn};

/// Set in a child this restarter made: the pid whose image it restores.
pub const MEMBER_ENV: &str = "MANA_RESTORE_MEMBER";
/// The tree's shared pipes, inherited: `INODE:READ:WRITE,…`.
const PIPES_ENV: &str = "MANA_RESTORE_PIPES";
/// The capabilities a member goes back to in its final stage (6 words, hex), when the
/// root's user namespace gave the restarters more.
const CAPS_ENV: &str = "MANA_RESTORE_CAPS";

/// The member this restarter restores (`None`: the launched process).
pub fn member() -> Result<Option<i32>, String> {
    match std::env::var(MEMBER_ENV) {
        Err(_) => Ok(None),
        Ok(v) => v
            .parse::<i32>()
            .ok()
            .filter(|&p| p > 1)
            .map(Some)
            .ok_or_else(|| format!("{MEMBER_ENV}={v} is no process id")),
    }
}

/// The descendants' images (the root's restarter, `root`: the launched process's saved
/// pid): each header, checked; every member must hang below the root and be the process
/// its image holds.
pub fn load(
    gen_dir: &Path,
    root: i32,
    members: &[MemberEntry],
) -> Result<Vec<ImageReader>, String> {
    for m in members {
        let mut at = m.ppid;
        for _ in 0..=members.len() {
            if at == root {
                break;
            }
            at = members.iter().find(|p| p.pid == at).map_or(0, |p| p.ppid);
        }
        if at != root || m.pid == root {
            return Err(format!(
                "MANIFEST: process {} (parent {}) does not descend from the launched process {root}",
                m.pid, m.ppid
            ));
        }
    }
    members
        .iter()
        .map(|m| {
            let r = ImageReader::open_listed(&gen_dir.join(&m.file), m.header_checksum)
                .map_err(|e| e.to_string())?;
            if r.header.pid != m.pid {
                return Err(format!(
                    "{}: holds process {}, the MANIFEST says {}",
                    m.file, r.header.pid, m.pid
                ));
            }
            Ok(r)
        })
        .collect()
}

/// What the tree's processes share, made once by the root's restarter and inherited:
/// pipes ([read, write] by pipe inode) and socket-pair ends (by socket inode).
#[derive(Default)]
pub struct Shared {
    pub pipes: HashMap<u64, [i32; 2]>,
    pub sockets: HashMap<u64, i32>,
    /// Shared memory, by each holder's (start, end, object inode): a memfd holding its
    /// contents, which every process maps instead of memory of its own.
    pub memory: HashMap<(u64, u64, u64), i32>,
    /// TCP connections between processes of the tree (each end) and listening sockets
    /// several of them hold: by socket inode.
    pub tcp: HashMap<u64, i32>,
}

impl Shared {
    /// Closes the shared descriptors (every process placed its own ends).
    pub fn close(&self) {
        let all = self
            .pipes
            .values()
            .flat_map(|e| e.iter().copied())
            .chain(self.sockets.values().copied())
            .chain({
                let mut m: Vec<i32> = self.memory.values().copied().collect();
                m.sort_unstable();
                m.dedup();
                m
            })
            .chain(self.tcp.values().copied());
        for fd in all {
            // SAFETY: our inherited temporaries.
            unsafe { libc::close(fd) };
        }
    }
}

/// Whether an image of the tree other than `all[i]` holds a descriptor whose kind `is`.
fn in_another(all: &[ImageHeader], i: usize, is: impl Fn(&FileKind) -> bool) -> bool {
    all.iter()
        .enumerate()
        .any(|(j, o)| j != i && o.files.iter().any(|g| is(&g.kind)))
}

/// The socket-pair ends shared by the tree (env).
const SOCKETS_ENV: &str = "MANA_RESTORE_SOCKETS";

/// The shared anonymous memory (env): `START:END:FD,…`.
const MEMORY_ENV: &str = "MANA_RESTORE_MEMORY";

/// The root's restarter: makes what two or more images of the tree share (`all`: the
/// root's header and its members'; `readers`: the images, in the same order, for the
/// contents of shared memory).
pub fn make_shared(all: &[ImageHeader], readers: &[&ImageReader]) -> Result<Shared, String> {
    let pipes = make_shared_pipes(all)?;
    let above = above_all(all);
    let memory = make_shared_memory(all, readers, above)?;
    let mut sockets = HashMap::new();
    // A socket-pair end whose peer is a socket of another image: connected again.
    for (i, h) in all.iter().enumerate() {
        for f in &h.files {
            let FileKind::UnixPair(u) = &f.kind else {
                continue;
            };
            if !u.outside || sockets.contains_key(&u.socket) {
                continue;
            }
            let elsewhere = in_another(
                all,
                i,
                |k| matches!(k, FileKind::UnixPair(v) if v.socket == u.peer),
            );
            if !elsewhere {
                continue;
            }
            let ends = crate::new_socket_pair(all, u, above, false).map_err(|e| {
                format!(
                    "socket pair {}-{} between processes of the tree: {e}",
                    u.socket, u.peer
                )
            })?;
            sockets.insert(u.socket, ends[0]);
            sockets.insert(u.peer, ends[1]);
        }
    }
    // A Unix listening socket several processes hold (a pre-forking server): listens
    // again once, inherited by all.
    for (i, h) in all.iter().enumerate() {
        for f in &h.files {
            let FileKind::UnixListener(l) = &f.kind else {
                continue;
            };
            if sockets.contains_key(&l.socket) {
                continue;
            }
            let elsewhere = in_another(
                all,
                i,
                |k| matches!(k, FileKind::UnixListener(m) if m.socket == l.socket),
            );
            if elsewhere {
                let s = crate::tcp::unix_listener(l).map_err(|e| {
                    format!(
                        "descriptor {} (Unix socket listening on {}, shared by processes of the tree): {e}",
                        f.fd,
                        String::from_utf8_lossy(&l.path)
                    )
                })?;
                sockets.insert(l.socket, crate::tcp::moved_above(s, above, false)?);
            }
        }
    }
    if !sockets.is_empty() {
        let v: Vec<String> = sockets.iter().map(|(s, fd)| format!("{s}:{fd}")).collect();
        std::env::set_var(SOCKETS_ENV, v.join(","));
        debug!(
            ends = sockets.len(),
            "socket pairs between processes of the tree made"
        );
    }
    let tcp = make_shared_tcp(all, above)?;
    Ok(Shared {
        pipes,
        sockets,
        memory,
        tcp,
    })
}

/// The TCP connections from a process of the tree to another (each image holds one end,
/// without a peer in it, the addresses crossed): connected again by the root's
/// restarter, with the bytes readable at each end.
fn make_shared_tcp(all: &[ImageHeader], above: i32) -> Result<HashMap<u64, i32>, String> {
    use mana_image::TcpState;
    let ends: Vec<(usize, &TcpState)> = all
        .iter()
        .enumerate()
        .flat_map(|(i, h)| {
            h.files.iter().filter_map(move |f| match &f.kind {
                FileKind::Tcp(t) if t.peer == 0 && !t.listening && !t.remote_ip.is_empty() => {
                    Some((i, t))
                }
                _ => None,
            })
        })
        .collect();
    let data_of = |socket: u64| {
        ends.iter()
            .find(|(_, t)| t.socket == socket && t.holds_data)
            .map_or(&[][..], |(_, t)| t.data.as_slice())
    };
    let mut made = HashMap::new();
    for &(i, t) in &ends {
        if made.contains_key(&t.socket) {
            continue;
        }
        let Some(&(_, u)) = ends.iter().find(|(j, u)| {
            *j != i
                && u.local_ip == t.remote_ip
                && u.local_port == t.remote_port
                && u.remote_ip == t.local_ip
                && u.remote_port == t.local_port
        }) else {
            continue;
        };
        let fds =
            crate::tcp::connect_pair(t, u, data_of(t.socket), data_of(u.socket), above, false)
                .map_err(|e| {
                    format!(
                        "TCP connection between processes of the tree (port {} to {}): {e}",
                        t.local_port, t.remote_port
                    )
                })?;
        made.insert(t.socket, fds[0]);
        made.insert(u.socket, fds[1]);
    }
    // A listening socket several processes hold (a pre-forking server: made before the
    // fork, accepted on by the children): listens again once, inherited by all; after
    // the connections above, whose rendezvous may have used its port.
    for (i, h) in all.iter().enumerate() {
        for f in &h.files {
            let FileKind::Tcp(t) = &f.kind else {
                continue;
            };
            if !t.listening || made.contains_key(&t.socket) {
                continue;
            }
            let elsewhere = in_another(
                all,
                i,
                |k| matches!(k, FileKind::Tcp(u) if u.socket == t.socket),
            );
            if elsewhere {
                let s = crate::tcp::listen_again(f.fd, t)?;
                made.insert(t.socket, crate::tcp::moved_above(s, above, false)?);
            }
        }
    }
    if !made.is_empty() {
        let v: Vec<String> = made.iter().map(|(s, fd)| format!("{s}:{fd}")).collect();
        std::env::set_var(TCP_ENV, v.join(","));
        debug!(
            ends = made.len(),
            "TCP connections between processes of the tree made"
        );
    }
    Ok(made)
}

/// The TCP connection ends shared by the tree (env).
const TCP_ENV: &str = "MANA_RESTORE_TCP";

/// `INODE:FD,…` from `var`, keeping descriptors that are sockets.
fn inherited_sockets(var: &str) -> HashMap<u64, i32> {
    let mut out = HashMap::new();
    if let Ok(v) = std::env::var(var) {
        for item in v.split(',').take(4096) {
            let mut it = item.split(':').map(|x| x.parse::<i64>().ok());
            let (Some(Some(s)), Some(Some(fd))) = (it.next(), it.next()) else {
                continue;
            };
            if s > 0 && is_a(fd, libc::S_IFSOCK) {
                out.insert(s as u64, fd as i32);
            }
        }
    }
    out
}

/// Shared memory several images of the tree hold — the same object (its inode, when the
/// images record it: a `MAP_SHARED` anonymous mapping, a `SysV` segment, a deleted
/// file's shared mapping, wherever each process maps it) or, in earlier images, the same
/// range (made before a `fork`): one memfd with its contents (from the first image
/// holding it), for each process to map at its own range. Nobody writes those pages back
/// afterwards: a process restored later would overwrite what an earlier one already
/// changed. Keyed by (start, end, inode) so that a process finds its own region's.
fn make_shared_memory(
    all: &[ImageHeader],
    readers: &[&ImageReader],
    above: i32,
) -> Result<HashMap<(u64, u64, u64), i32>, String> {
    use mana_image::RegionKind;
    // The object a region maps: a shared-memory object (a `SysV` segment, a `MAP_SHARED`
    // anonymous mapping: inodes of one internal file system) mapped whole-once by its
    // image is matched by inode, wherever each process maps it; anything else (pieces of
    // one object, a deleted file's mapping, an earlier image without inodes) by range
    // and inode, so that unrelated memory at one range in two processes stays apart.
    let object = |h: &ImageHeader, r: &mana_image::Region| -> (u64, u64, u64) {
        let shmem = r.name.starts_with("/SYSV") || r.name == "/dev/zero (deleted)";
        let pieces = h
            .regions
            .iter()
            .filter(|q| q.kind == RegionKind::SharedAnon && q.shared_inode == r.shared_inode)
            .count();
        if r.shared_inode != 0 && shmem && pieces == 1 {
            (r.shared_inode, r.len(), u64::MAX)
        } else {
            (r.start, r.end, r.shared_inode)
        }
    };
    let mut memory = HashMap::new();
    let mut done: Vec<(u64, u64, u64)> = Vec::new();
    for (i, h) in all.iter().enumerate() {
        for (index, r) in h.regions.iter().enumerate() {
            if r.kind != RegionKind::SharedAnon {
                continue;
            }
            let key = object(h, r);
            if done.contains(&key) {
                continue;
            }
            let holders: Vec<(u64, u64, u64)> = all
                .iter()
                .flat_map(|o| {
                    o.regions
                        .iter()
                        .filter(move |q| q.kind == RegionKind::SharedAnon && object(o, q) == key)
                        .map(|q| (q.start, q.end, q.shared_inode))
                })
                .collect();
            if !all[i + 1..].iter().any(|o| {
                o.regions
                    .iter()
                    .any(|q| q.kind == RegionKind::SharedAnon && object(o, q) == key)
            }) {
                continue;
            }
            done.push(key);
            let err = |what: &str| {
                format!(
                    "memory {:#x}-{:#x} shared between processes of the tree: {what}: {}",
                    r.start,
                    r.end,
                    std::io::Error::last_os_error()
                )
            };
            let len = r.end - r.start;
            // SAFETY: a new memfd with a constant name.
            let fd = unsafe { libc::memfd_create(c"mana-shared".as_ptr(), 0) };
            if fd < 0 {
                return Err(err("cannot make a memfd"));
            }
            // SAFETY: sizing our new memfd.
            if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
                return Err(err("cannot size it"));
            }
            if !r.extents.is_empty() {
                // SAFETY: a temporary shared mapping of our memfd, filled, then unmapped.
                let at = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        len as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        fd,
                        0,
                    )
                };
                if at == libc::MAP_FAILED {
                    return Err(err("cannot map it"));
                }
                // SAFETY: the mapping just made, `len` bytes, ours alone.
                let dest = unsafe { std::slice::from_raw_parts_mut(at as *mut u8, len as usize) };
                let filled = readers[i].read_region(index, dest);
                // SAFETY: unmapping our temporary mapping.
                unsafe { libc::munmap(at, len as usize) };
                filled.map_err(|e| e.to_string())?;
            }
            // SAFETY: F_DUPFD (inherited) of our descriptor, then close the low one.
            let high = unsafe { libc::fcntl(fd, libc::F_DUPFD, above) };
            // SAFETY: our temporary.
            unsafe { libc::close(fd) };
            if high < 0 {
                return Err(err("cannot move it out of the way"));
            }
            for k in holders {
                memory.insert(k, high);
            }
        }
    }
    if !memory.is_empty() {
        let v: Vec<String> = memory
            .iter()
            .map(|((s, e, ino), fd)| format!("{s}:{e}:{ino}:{fd}"))
            .collect();
        std::env::set_var(MEMORY_ENV, v.join(","));
        debug!(
            regions = memory.len(),
            "memory shared between processes of the tree made"
        );
    }
    Ok(memory)
}

/// Above every descriptor any image of the tree uses.
fn above_all(all: &[ImageHeader]) -> i32 {
    all.iter()
        .flat_map(|h| h.files.iter().map(|f| f.fd))
        .max()
        .unwrap_or(2)
        .max(64)
        + 1
}

/// In a member's restarter: what its ancestors made for the tree.
pub fn inherited() -> Shared {
    let sockets = inherited_sockets(SOCKETS_ENV);
    let mut memory = HashMap::new();
    if let Ok(v) = std::env::var(MEMORY_ENV) {
        for item in v.split(',').take(4096) {
            let mut it = item.split(':').map(|x| x.parse::<u64>().ok());
            let (Some(Some(s)), Some(Some(e)), Some(Some(ino)), Some(Some(fd))) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                continue;
            };
            if s < e && fd < 1 << 20 && is_a(fd as i64, libc::S_IFREG) {
                memory.insert((s, e, ino), fd as i32);
            }
        }
    }
    Shared {
        pipes: inherited_pipes(),
        sockets,
        memory,
        tcp: inherited_sockets(TCP_ENV),
    }
}

/// Whether `fd` is an open descriptor of file type `kind`.
fn is_a(fd: i64, kind: libc::mode_t) -> bool {
    // SAFETY: fstat into a zeroed stat on a number we only inspect.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    (0..1 << 20).contains(&fd)
        && unsafe { libc::fstat(fd as i32, &mut st) } == 0
        && st.st_mode & libc::S_IFMT == kind
}

/// Makes every pipe two or more images of the tree hold, inheritable, above every
/// descriptor any of them uses.
fn make_shared_pipes(all: &[ImageHeader]) -> Result<HashMap<u64, [i32; 2]>, String> {
    let mut holders: HashMap<u64, usize> = HashMap::new();
    for h in all {
        let mut mine: Vec<u64> = h
            .files
            .iter()
            .filter_map(|f| match &f.kind {
                FileKind::Pipe(p) => Some(p.pipe),
                _ => None,
            })
            .collect();
        mine.sort_unstable();
        mine.dedup();
        for p in mine {
            *holders.entry(p).or_default() += 1;
        }
    }
    let above = above_all(all);
    let mut shared = HashMap::new();
    let mut inodes: Vec<u64> = holders
        .into_iter()
        .filter(|&(_, n)| n > 1)
        .map(|(p, _)| p)
        .collect();
    inodes.sort_unstable();
    for p in inodes {
        let ends = crate::new_pipe(all, p, above, false)
            .map_err(|e| format!("pipe {p} between processes of the tree: {e}"))?;
        shared.insert(p, ends);
    }
    if !shared.is_empty() {
        let v: Vec<String> = shared
            .iter()
            .map(|(p, e)| format!("{p}:{}:{}", e[0], e[1]))
            .collect();
        std::env::set_var(PIPES_ENV, v.join(","));
        debug!(
            pipes = shared.len(),
            "pipes between processes of the tree made"
        );
    }
    Ok(shared)
}

/// In a member's restarter: the shared pipes its ancestors made (from the environment;
/// only descriptors that are open pipes are believed).
fn inherited_pipes() -> HashMap<u64, [i32; 2]> {
    let mut out = HashMap::new();
    let Ok(v) = std::env::var(PIPES_ENV) else {
        return out;
    };
    for item in v.split(',').take(4096) {
        let mut it = item.split(':').map(|x| x.parse::<i64>().ok());
        let (Some(Some(p)), Some(Some(r)), Some(Some(w))) = (it.next(), it.next(), it.next())
        else {
            continue;
        };
        if p > 0 && is_a(r, libc::S_IFIFO) && is_a(w, libc::S_IFIFO) {
            out.insert(p as u64, [r as i32, w as i32]);
        }
    }
    out
}

/// The capabilities members go back to, for their restarters.
pub fn pass_caps(drop_caps: Option<&[u32; 6]>) {
    if let Some(c) = drop_caps {
        let v: Vec<String> = c.iter().map(|w| format!("{w:x}")).collect();
        std::env::set_var(CAPS_ENV, v.join(","));
    }
}

/// In a member's restarter: the capabilities to go back to, if any.
pub fn inherited_caps() -> Option<[u32; 6]> {
    let v = std::env::var(CAPS_ENV).ok()?;
    let words: Vec<u32> = v
        .split(',')
        .filter_map(|w| u32::from_str_radix(w, 16).ok())
        .collect();
    words.try_into().ok()
}

/// Makes this process's children of the tree (`pid`: its saved pid; `members`: the
/// MANIFEST's list) and its ended children (`zombies`), with their saved pids when
/// `kept_ids`. Each child restarter execs with `MANA_RESTORE_MEMBER`.
pub fn make_children(
    pid: i32,
    members: &[MemberEntry],
    zombies: &[mana_image::Zombie],
    kept_ids: bool,
    ckpt_dir: &Path,
) -> Result<(), String> {
    for z in zombies {
        match fork_with(z.pid, kept_ids)? {
            0 => ns::end_like(z.status),
            child => debug!(pid = child, "an ended child made again"),
        }
    }
    for m in members.iter().filter(|m| m.ppid == pid) {
        match fork_with(m.pid, kept_ids)? {
            0 => {
                let err = exec_member(m.pid, ckpt_dir);
                eprintln!("mana_restart: child process {}: {err}", m.pid);
                // SAFETY: ends this child restarter.
                unsafe { libc::_exit(127) };
            }
            child => {
                if child != m.pid {
                    warn!(
                        saved = m.pid,
                        now = child,
                        "a child process gets a new pid (its parent's waitpid on the saved one fails)"
                    );
                }
            }
        }
    }
    Ok(())
}

/// A child of this process with pid `want` (when `kept_ids`; else any): 0 in the child.
fn fork_with(want: i32, kept_ids: bool) -> Result<i32, String> {
    let set_tid = [want];
    let args = mana_restart_core::plan::CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: if kept_ids { set_tid.as_ptr() as u64 } else { 0 },
        set_tid_size: kept_ids as u64,
        ..Default::default()
    };
    ns::clone3(&args).map_err(|e| {
        format!(
            "cannot make child process {want}: {}",
            std::io::Error::from_raw_os_error(e)
        )
    })
}

/// Execs this restarter for member `pid`, keeping the capabilities a user namespace gave
/// (ambient), which the member's final stage drops again.
fn exec_member(pid: i32, ckpt_dir: &Path) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    raise_ambient();
    let exe = match std::fs::read_link("/proc/self/exe") {
        Ok(e) => e,
        Err(e) => return e,
    };
    // The checkpoint directory as an absolute path: the namespace's restarter may have
    // changed directory.
    std::process::Command::new(exe)
        .arg(ckpt_dir)
        .env(MEMBER_ENV, pid.to_string())
        .env_remove(crate::ATTEMPT_ENV)
        .exec()
}

/// Makes every permitted capability inheritable and ambient, so that it survives exec.
fn raise_ambient() {
    let Ok(mut caps) = ns::capget() else { return };
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } == 0 {
        return; // root keeps its capabilities across exec
    }
    caps[2] = caps[1];
    caps[5] = caps[4];
    let hdr = [0x2008_0522u32, 0];
    // SAFETY: capset with a v3 header and two 12-byte records.
    if unsafe { libc::syscall(libc::SYS_capset, hdr.as_ptr(), caps.as_ptr()) } != 0 {
        return;
    }
    for cap in 0..64u32 {
        let permitted = if cap < 32 {
            caps[1] & (1 << cap)
        } else {
            caps[4] & (1 << (cap - 32))
        };
        if permitted != 0 {
            // SAFETY: raising an ambient capability that is permitted and inheritable.
            unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
        }
    }
}
