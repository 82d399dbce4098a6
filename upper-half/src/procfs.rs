//! Reading the process's own state from /proc and the kernel: mappings, mm layout,
//! descriptors, signal dispositions. Used inside the write window (allocations go to the
//! transient arena; no libc call that allocates or locks).

use crate::sys;
use mana_image::{
    DgramState, EpollInterest, FileKind, FileState, InheritedKind, MmLayout, PipeState, SigAction,
    TcpState, UnixPairState,
};

#[derive(Debug, Clone)]
pub struct MapLine {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    pub offset: u64,
    pub inode: u64,
    pub name: String,
}

pub fn read_proc(path: &core::ffi::CStr, cap: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; cap];
    loop {
        match sys::read_file(path, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(libc::ENOBUFS) => {
                let l = buf.len() * 4;
                buf = vec![0u8; l];
            }
            Err(e) => {
                return Err(format!(
                    "cannot read {} (errno {e})",
                    path.to_string_lossy()
                ))
            }
        }
    }
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s, 16).unwrap_or(0)
}

pub fn parse_maps(text: &[u8]) -> Vec<MapLine> {
    let text = String::from_utf8_lossy(text);
    let mut out = Vec::new();
    for line in text.lines() {
        // start-end perms offset dev inode [name]
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(off), Some(_dev), Some(inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let name = it.next().unwrap_or("").trim_start().to_string();
        let (s, e) = range.split_once('-').unwrap_or(("0", "0"));
        let p = perms.as_bytes();
        out.push(MapLine {
            start: hex(s),
            end: hex(e),
            read: p.first() == Some(&b'r'),
            write: p.get(1) == Some(&b'w'),
            exec: p.get(2) == Some(&b'x'),
            shared: p.get(3) == Some(&b's'),
            offset: hex(off),
            inode: inode.parse().unwrap_or(0),
            name,
        });
    }
    out
}

pub fn own_maps() -> Result<Vec<MapLine>, String> {
    Ok(parse_maps(&read_proc(c"/proc/self/maps", 256 << 10)?))
}

/// `mm_struct` layout from /proc/self/stat, the current break and the auxiliary vector.
pub fn mm_layout() -> Result<MmLayout, String> {
    let stat = read_proc(c"/proc/self/stat", 4096)?;
    let stat = String::from_utf8_lossy(&stat);
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 2..])
        .ok_or("malformed /proc/self/stat")?;
    // `after` starts at field 3 (state).
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse::<i64>().unwrap_or(0) as u64)
        .collect();
    let field = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    let auxv_bytes = read_proc(c"/proc/self/auxv", 4096)?;
    let auxv = auxv_bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    Ok(MmLayout {
        start_code: field(26),
        end_code: field(27),
        start_stack: field(28),
        start_data: field(45),
        end_data: field(46),
        start_brk: field(47),
        brk: sys::current_brk(),
        arg_start: field(48),
        arg_end: field(49),
        env_start: field(50),
        env_end: field(51),
        auxv,
    })
}

/// Signal dispositions of signals 1..=64 (not SIGKILL/SIGSTOP).
pub fn signal_actions() -> Vec<SigAction> {
    (1..=64)
        .filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP)
        .filter_map(|s| {
            sys::sigaction_query(s).map(|a| SigAction {
                signo: s,
                handler: a.handler,
                flags: a.flags,
                restorer: a.restorer,
                mask: a.mask,
            })
        })
        .collect()
}

/// Character devices without state that are reopened by path at restart.
const STATELESS_DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// Whether a descriptor of this type and path is reopened by path at restart.
fn reopenable(st: &libc::stat, path: &str) -> bool {
    let ok = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFDIR => true,
        libc::S_IFCHR => STATELESS_DEVICES.contains(&path),
        _ => false,
    };
    ok && !path.ends_with(" (deleted)") && path.starts_with('/')
}

fn inherited_kind(st: &libc::stat) -> InheritedKind {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO => InheritedKind::Pipe,
        libc::S_IFSOCK => InheritedKind::Socket,
        libc::S_IFCHR => InheritedKind::Device,
        _ => InheritedKind::Other,
    }
}

fn fd_path(fd: i32) -> Option<String> {
    let link = format!("/proc/self/fd/{fd}\0");
    let mut target = [0u8; 4096];
    // SAFETY: `link` is NUL-terminated and `target` is a valid buffer.
    let len = unsafe {
        libc::readlink(
            link.as_ptr().cast(),
            target.as_mut_ptr().cast(),
            target.len(),
        )
    };
    (len >= 0).then(|| String::from_utf8_lossy(&target[..len as usize]).into_owned())
}

/// The descriptors above stdio that cannot be reopened by path (fd, inode), at this
/// moment: at the runtime's start, what the process inherited.
pub fn inherited() -> Vec<(i32, u64)> {
    let mut fds = [0i32; 4096];
    let Ok(n) = sys::list_numeric_dir(c"/proc/self/fd", &mut fds) else {
        return Vec::new();
    };
    fds[..n]
        .iter()
        .filter(|&&fd| fd > 2)
        .filter_map(|&fd| {
            let st = fstat(fd)?;
            let path = fd_path(fd)?;
            (!reopenable(&st, &path)).then_some((fd, st.st_ino))
        })
        .collect()
}

/// The inode of the open descriptor `fd`.
pub fn inode(fd: i32) -> Option<u64> {
    fstat(fd).map(|st| st.st_ino)
}

/// The process's descriptors except the runtime's own: stdio, files reopened by path,
/// the descriptors of `inherited` still open (same number and inode), and pipes the
/// process made (with their unread bytes, [`pipe_contents`]). Any other is an error
/// naming it (a socket the process made: not restored yet).
pub fn files(runtime_fds: &[i32], inherited: &[(i32, u64)]) -> Result<Vec<FileState>, String> {
    let mut out = descriptors(runtime_fds, inherited)?;
    pipe_contents(&mut out)?;
    unlinked_contents(&mut out)?;
    socket_contents(&mut out)?;
    tcp_contents(&mut out)?;
    Ok(out)
}

/// A memfd or a file deleted while open ([`FileKind::Unlinked`]), its contents still
/// to be read ([`unlinked_contents`]).
fn unlinked(fd: i32, st: &libc::stat, path: &str) -> Result<FileKind, String> {
    let bare = path.strip_suffix(" (deleted)").unwrap_or(path);
    let (memfd, name) = match bare.strip_prefix("/memfd:") {
        Some(n) => (true, n.to_string()),
        None => (false, bare.to_string()),
    };
    let size = st.st_size as u64;
    if size > mana_image::validate::MAX_UNLINKED {
        return Err(format!(
            "descriptor {fd} ({path}): {size} bytes, more than the 64 MiB an image keeps of a file without a name"
        ));
    }
    let seals = if memfd {
        let f =
            AppFd::get(fd).ok_or_else(|| format!("descriptor {fd}: closed while checkpointing"))?;
        // SAFETY: F_GET_SEALS on an open descriptor.
        unsafe { libc::fcntl(f.raw(), libc::F_GET_SEALS) }.max(0)
    } else {
        0
    };
    let maps = own_maps()?
        .into_iter()
        .filter(|m| m.shared && m.inode == st.st_ino && m.name.ends_with(" (deleted)"))
        .map(|m| [m.start, m.end, m.offset])
        .collect();
    Ok(FileKind::Unlinked(mana_image::UnlinkedState {
        file: st.st_ino,
        memfd,
        name,
        mode: st.st_mode & 0o7777,
        size,
        seals,
        holds_data: false,
        data: Vec::new(),
        maps,
    }))
}

/// Reads each file without a name once, on its first descriptor (`pread`: no offset
/// moves).
fn unlinked_contents(files: &mut [FileState]) -> Result<(), String> {
    let mut done: Vec<u64> = Vec::new();
    for f in files.iter_mut() {
        let FileKind::Unlinked(u) = &mut f.kind else {
            continue;
        };
        if done.contains(&u.file) {
            continue;
        }
        done.push(u.file);
        // A reading descriptor of our own (the program's may be write-only), else the
        // program's (pread moves no offset).
        let own = std::fs::File::open(format!("/proc/self/fd/{}", f.fd)).ok();
        let app = AppFd::get(f.fd)
            .ok_or_else(|| format!("descriptor {}: closed while checkpointing", f.fd))?;
        let src = own
            .as_ref()
            .map_or(app.raw(), std::os::fd::AsRawFd::as_raw_fd);
        let mut data = vec![0u8; u.size as usize];
        let mut got = 0usize;
        while got < data.len() {
            // SAFETY: pread into the unfilled rest of our buffer.
            let n = unsafe {
                libc::pread(
                    src,
                    data[got..].as_mut_ptr().cast(),
                    data.len() - got,
                    got as libc::off_t,
                )
            };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                return Err(format!(
                    "descriptor {} ({}): cannot read the file's contents (write-only, or it shrank): {}",
                    f.fd,
                    f.path,
                    std::io::Error::last_os_error()
                ));
            }
            got += n as usize;
        }
        u.holds_data = true;
        u.data = data;
    }
    Ok(())
}

fn sockopt_int(fd: i32, level: i32, name: i32) -> Option<i32> {
    let mut v: libc::c_int = 0;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: getsockopt into one int.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

/// An address from getsockname/getpeername: (family, address bytes, port); `None` if
/// the call failed (ENOTCONN for a socket connected to nothing).
fn sock_addr(fd: i32, peer: bool) -> Option<(u16, Vec<u8>, u16)> {
    // SAFETY: zeroed sockaddr_storage is a valid out-buffer.
    let mut ss: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let mut len = core::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = (&mut ss as *mut libc::sockaddr_storage).cast();
    // SAFETY: a valid buffer of `len` bytes.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    if r != 0 {
        return None;
    }
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in.
            let a = unsafe { &*(&ss as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            Some((
                libc::AF_INET as u16,
                a.sin_addr.s_addr.to_ne_bytes().to_vec(),
                u16::from_be(a.sin_port),
            ))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6.
            let a =
                unsafe { &*(&ss as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            Some((
                libc::AF_INET6 as u16,
                a.sin6_addr.s6_addr.to_vec(),
                u16::from_be(a.sin6_port),
            ))
        }
        _ => None,
    }
}

/// A datagram socket the restarter can make again (`None`: another kind of socket, or a
/// Unix datagram socket bound to a name).
/// The address of Unix socket `s` (its peer's when `peer`): a path, or an abstract name
/// (leading NUL); empty when it has none (not bound, not connected).
fn unix_name(s: i32, peer: bool) -> Vec<u8> {
    // SAFETY: zeroed sockaddr_un is a valid out-buffer.
    let mut un: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    let mut len = core::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let p = (&mut un as *mut libc::sockaddr_un).cast();
    // SAFETY: a valid buffer of `len` bytes.
    let r = unsafe {
        if peer {
            libc::getpeername(s, p, &mut len)
        } else {
            libc::getsockname(s, p, &mut len)
        }
    };
    if r != 0 {
        return Vec::new();
    }
    let n = (len as usize).saturating_sub(2).min(108);
    let path: Vec<u8> = un.sun_path[..n].iter().map(|&c| c as u8).collect();
    // A pathname is NUL-terminated; an abstract name (leading NUL) is not.
    match path.first() {
        Some(0) => path,
        _ => path.into_iter().take_while(|&c| c != 0).collect(),
    }
}

/// A Unix stream socket that neither listens nor has a peer.
fn unix_stream_without_peer(fd: i32) -> bool {
    let Some(sock) = AppFd::get(fd) else {
        return false;
    };
    let s = sock.raw();
    sockopt_int(s, libc::SOL_SOCKET, libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && sockopt_int(s, libc::SOL_SOCKET, libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && sockopt_int(s, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == Some(0)
}

/// A listening Unix stream or seqpacket socket with an address.
fn unix_listener(fd: i32, ino: u64) -> Option<mana_image::UnixListenerState> {
    let sock = AppFd::get(fd)?;
    let s = sock.raw();
    if sockopt_int(s, libc::SOL_SOCKET, libc::SO_DOMAIN) != Some(libc::AF_UNIX)
        || sockopt_int(s, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) != Some(1)
    {
        return None;
    }
    let seqpacket = match sockopt_int(s, libc::SOL_SOCKET, libc::SO_TYPE)? {
        libc::SOCK_STREAM => false,
        libc::SOCK_SEQPACKET => true,
        _ => return None,
    };
    let path = unix_name(s, false);
    (!path.is_empty()).then_some(mana_image::UnixListenerState {
        socket: ino,
        seqpacket,
        path,
    })
}

fn dgram_socket(fd: i32, ino: u64) -> Option<DgramState> {
    let sock = AppFd::get(fd)?;
    let s = sock.raw();
    if sockopt_int(s, libc::SOL_SOCKET, libc::SO_TYPE) != Some(libc::SOCK_DGRAM) {
        return None;
    }
    match sockopt_int(s, libc::SOL_SOCKET, libc::SO_DOMAIN)? {
        libc::AF_UNIX => {
            let name = |peer: bool| Some(unix_name(s, peer));
            Some(DgramState {
                socket: ino,
                family: libc::AF_UNIX as u16,
                local_ip: name(false)?,
                local_port: 0,
                remote: name(true)?,
                remote_port: 0,
            })
        }
        libc::AF_INET | libc::AF_INET6 => {
            let (family, local_ip, local_port) = sock_addr(s, false)?;
            let (remote, remote_port) =
                sock_addr(s, true).map_or((Vec::new(), 0), |(_, ip, port)| (ip, port));
            Some(DgramState {
                socket: ino,
                family,
                local_ip,
                local_port,
                remote,
                remote_port,
            })
        }
        _ => None,
    }
}

const TCP_FIN_WAIT1: u8 = 4;
const TCP_FIN_WAIT2: u8 = 5;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LAST_ACK: u8 = 9;
const TCP_CLOSING: u8 = 11;

fn tcp_state(fd: i32) -> u8 {
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt TCP_INFO into a 256-byte buffer; its first byte is the state.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r == 0 {
        info[0]
    } else {
        0
    }
}

/// A TCP socket's addresses and state (`None`: the socket is no TCP socket).
fn tcp_socket(fd: i32, ino: u64) -> Result<Option<TcpState>, String> {
    let Some(sock) = AppFd::get(fd) else {
        return Err(format!("descriptor {fd}: closed while checkpointing"));
    };
    let s = sock.raw();
    let domain = sockopt_int(s, libc::SOL_SOCKET, libc::SO_DOMAIN);
    if !matches!(domain, Some(libc::AF_INET | libc::AF_INET6))
        || sockopt_int(s, libc::SOL_SOCKET, libc::SO_TYPE) != Some(libc::SOCK_STREAM)
        || sockopt_int(s, libc::SOL_SOCKET, libc::SO_PROTOCOL) != Some(libc::IPPROTO_TCP)
    {
        return Ok(None);
    }
    let (family, local_ip, local_port) =
        sock_addr(s, false).ok_or_else(|| format!("descriptor {fd} (TCP): no address"))?;
    let listening = sockopt_int(s, libc::SOL_SOCKET, libc::SO_ACCEPTCONN) == Some(1);
    let (remote_ip, remote_port) = match sock_addr(s, true) {
        Some((_, ip, port)) if !listening => (ip, port),
        _ => (Vec::new(), 0),
    };
    let state = tcp_state(s);
    Ok(Some(TcpState {
        socket: ino,
        family,
        local_ip,
        local_port,
        listening,
        remote_ip,
        remote_port,
        peer: 0,
        holds_data: false,
        data: Vec::new(),
        // 2: this side shut its sending side; 1: its peer shut its own (a FIN arrived:
        // reads see end-of-file after the bytes in flight).
        shutdown: if matches!(
            state,
            TCP_FIN_WAIT1 | TCP_FIN_WAIT2 | TCP_LAST_ACK | TCP_CLOSING
        ) {
            2
        } else {
            0
        } | if matches!(state, TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING) {
            1
        } else {
            0
        },
        nodelay: sockopt_int(s, libc::IPPROTO_TCP, libc::TCP_NODELAY).unwrap_or(0) != 0,
    }))
}

/// Pairs the TCP connections whose two sockets the process holds (addresses crossed) and
/// records each socket's bytes in flight on its lowest descriptor ([`tcp_in_flight`]);
/// names, in one warning each, the connections to something outside the process (they
/// come back reset by their peer).
fn tcp_contents(files: &mut [FileState]) -> Result<(), String> {
    let socks: Vec<(i32, TcpState)> = files
        .iter()
        .filter_map(|f| match &f.kind {
            FileKind::Tcp(t) => Some((f.fd, t.clone())),
            _ => None,
        })
        .collect();
    let mut done: Vec<u64> = Vec::new();
    let mut warned: Vec<u64> = Vec::new();
    for f in files.iter_mut() {
        let FileKind::Tcp(t) = &mut f.kind else {
            continue;
        };
        if t.remote_ip.is_empty() {
            continue;
        }
        let peer = socks.iter().find(|(_, u)| {
            u.socket != t.socket
                && u.local_ip == t.remote_ip
                && u.local_port == t.remote_port
                && u.remote_ip == t.local_ip
                && u.remote_port == t.local_port
        });
        let Some((peer_fd, peer)) = peer else {
            if warned.contains(&t.socket) || done.contains(&t.socket) {
                continue;
            }
            // A connection to the parent or a child (made before or after a fork): the
            // bytes readable here are kept, and a restart connects it again (tree.rs).
            if tcp_peer_inode(t).is_some_and(kin_holds) {
                // Bytes still in this side's send queue (the receiver's window full:
                // on the loopback the only case) are in neither process's image, and
                // the receiver, stopped too, will not take them: refused rather than
                // restored with a hole in the stream.
                // An acknowledgement still on its way leaves bytes counted for an
                // instant: only a queue that stays is a full window.
                let queued = || {
                    AppFd::get(f.fd)
                        .and_then(|s| socket_queue(s.raw(), SIOCOUTQ))
                        .unwrap_or(0)
                };
                let settle = std::time::Instant::now() + std::time::Duration::from_millis(500);
                while queued() > 0 && std::time::Instant::now() < settle {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                let queued = queued();
                if queued > 0 {
                    return Err(format!(
                        "descriptor {} (TCP connection to another process of the tree): {queued} bytes it sent wait in its queue (the receiver's window is full); try the checkpoint again once the receiver reads",
                        f.fd
                    ));
                }
                done.push(t.socket);
                t.holds_data = true;
                t.data = peek_socket(f.fd)
                    .map_err(|e| format!("descriptor {} (TCP socket {}): {e}", f.fd, t.socket))?;
            } else if t.shutdown & 1 != 0 {
                // Its peer (outside) closed its side after sending: the bytes readable
                // here are kept, then end-of-file (an answer not read yet when a server
                // closed).
                done.push(t.socket);
                t.holds_data = true;
                t.data = peek_socket(f.fd)
                    .map_err(|e| format!("descriptor {} (TCP socket {}): {e}", f.fd, t.socket))?;
            } else {
                warned.push(t.socket);
                note_outside(f.fd);
                // In an MPI rank the other end may be another rank's: kept with the
                // bytes readable here for the exchange after a restart (rank_links.rs).
                if crate::runtime::mpi_job() && !crate::runtime::is_member() {
                    t.holds_data = true;
                    t.data = peek_socket(f.fd).map_err(|e| {
                        format!("descriptor {} (TCP socket {}): {e}", f.fd, t.socket)
                    })?;
                    crate::rank_links::note(f.fd, t);
                }
            }
            continue;
        };
        t.peer = peer.socket;
        if done.contains(&t.socket) {
            continue;
        }
        done.push(t.socket);
        t.holds_data = true;
        t.data = tcp_in_flight(f.fd, *peer_fd, peer.shutdown)
            .map_err(|e| format!("descriptor {} (TCP socket {}): {e}", f.fd, t.socket))?;
    }
    Ok(())
}

/// Descriptors of TCP connections to something outside the process seen by the last
/// checkpoint (the first 16), for the checkpoint thread to name once the write window is
/// closed (nothing is logged inside it).
static OUTSIDE: [core::sync::atomic::AtomicI32; 16] =
    [const { core::sync::atomic::AtomicI32::new(-1) }; 16];

fn note_outside(fd: i32) {
    use core::sync::atomic::Ordering;
    if let Some(slot) = OUTSIDE.iter().find(|s| s.load(Ordering::Relaxed) < 0) {
        slot.store(fd, Ordering::Relaxed);
    }
}

/// Takes the descriptors [`note_outside`] recorded.
pub fn take_outside_connections() -> Vec<i32> {
    use core::sync::atomic::Ordering;
    OUTSIDE
        .iter()
        .map(|s| s.swap(-1, Ordering::Relaxed))
        .filter(|&fd| fd >= 0)
        .collect()
}

const SIOCOUTQ: libc::c_ulong = 0x5411;

/// A socket's queue in bytes: `FIONREAD` (readable) or `SIOCOUTQ` (sent, not yet taken).
fn socket_queue(fd: i32, req: libc::c_ulong) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD/SIOCOUTQ write one int.
    (unsafe { libc::ioctl(fd, req, &mut n) } == 0).then_some(n.max(0) as usize)
}

/// The bytes the process's socket `peer_fd` sent to its socket `fd` that `fd` has not
/// read: peeked (`MSG_PEEK`) when all of them have arrived; when some still wait in the
/// sender's queue (the receiver's window full), read out — the rest then arrives — and
/// sent again through the sender, so that the stream is as it was (the program's threads
/// are stopped: nothing reads or writes meanwhile).
fn tcp_in_flight(fd: i32, peer_fd: i32, peer_shutdown: u8) -> Result<Vec<u8>, String> {
    let rx = AppFd::get(fd).ok_or("closed while checkpointing")?;
    let tx = AppFd::get(peer_fd).ok_or("its peer closed while checkpointing")?;
    let (rx, tx) = (rx.raw(), tx.raw());
    let queued = socket_queue;
    let unsent = queued(tx, SIOCOUTQ).unwrap_or(0);
    if unsent == 0 {
        let avail = queued(rx, libc::FIONREAD).unwrap_or(0);
        let mut data = vec![0u8; avail];
        if avail == 0 {
            return Ok(data);
        }
        // SAFETY: a peek into our buffer of `avail` bytes.
        let r = unsafe {
            libc::recv(
                rx,
                data.as_mut_ptr().cast(),
                avail,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if r as usize != avail {
            return Err(format!("peeked {r} of its {avail} bytes in flight"));
        }
        return Ok(data);
    }
    if peer_shutdown != 0 {
        return Err(format!(
            "its peer shut its sending side with {unsent} bytes not yet delivered; try the checkpoint again"
        ));
    }
    let mut data = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut failed = None;
    loop {
        let avail = queued(rx, libc::FIONREAD).unwrap_or(0);
        if avail > 0 {
            let at = data.len();
            data.resize(at + avail, 0);
            // SAFETY: reading into the `avail` bytes just added.
            let r = unsafe {
                libc::recv(
                    rx,
                    data[at..].as_mut_ptr().cast(),
                    avail,
                    libc::MSG_DONTWAIT,
                )
            };
            data.truncate(at + r.max(0) as usize);
            continue;
        }
        if queued(tx, SIOCOUTQ).unwrap_or(0) == 0 {
            break;
        }
        if std::time::Instant::now() > deadline {
            failed = Some("its sender's queue did not empty in 5 s".to_string());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // Back into the connection, in order, whatever happens next.
    let mut at = 0;
    while at < data.len() {
        // SAFETY: sending from our buffer.
        let w = unsafe {
            libc::send(
                tx,
                data[at..].as_ptr().cast(),
                data.len() - at,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if w > 0 {
            at += w as usize;
        } else if std::time::Instant::now() > deadline + std::time::Duration::from_secs(5) {
            return Err(format!(
                "LOST {} of {} bytes in flight putting them back into the connection",
                data.len() - at,
                data.len()
            ));
        } else {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(data),
    }
}

/// For each Unix socket pair end: refuses one whose other end is not in the process
/// (another process's, or closed), and records the bytes readable at it on its lowest
/// descriptor, peeked (`SO_PEEK_OFF` + `MSG_PEEK`, so nothing is consumed).
fn socket_contents(files: &mut [FileState]) -> Result<(), String> {
    let ends: Vec<(u64, i32, u8)> = files
        .iter()
        .filter_map(|f| match &f.kind {
            FileKind::UnixPair(u) => Some((u.socket, f.fd, u.shutdown)),
            _ => None,
        })
        .collect();
    let in_process = |s: u64| ends.iter().any(|e| e.0 == s);
    let mut done = Vec::new();
    for f in files.iter_mut() {
        let FileKind::UnixPair(u) = &mut f.kind else {
            continue;
        };
        if done.contains(&u.socket) {
            if !in_process(u.peer) {
                u.outside = true;
            }
            continue;
        }
        if u.seqpacket {
            // Messages cannot be peeked past the first: read out and sent again through
            // the other end, which must be the process's.
            let Some(&(_, peer_fd, peer_shutdown)) = ends.iter().find(|e| e.0 == u.peer) else {
                return Err(format!(
                    "descriptor {} (seqpacket socket {}): its other end is another process's: a seqpacket connection between processes cannot be checkpointed (not restored yet)",
                    f.fd, u.socket
                ));
            };
            done.push(u.socket);
            u.holds_data = true;
            (u.data, u.packets) = seqpacket_in_flight(f.fd, u.shutdown, peer_fd, peer_shutdown)
                .map_err(|e| format!("descriptor {} (seqpacket socket {}): {e}", f.fd, u.socket))?;
            continue;
        }
        if !in_process(u.peer) {
            // Connected to another process: a process of the tree (restored connected
            // with it), else restored with its other end closed — the bytes readable
            // here kept either way. Only the second is worth a warning.
            u.outside = true;
            if !kin_holds(u.peer) {
                note_outside(f.fd);
                // In an MPI rank the other end may be another rank's (rank_links.rs).
                if u.peer != 0 && crate::runtime::mpi_job() && !crate::runtime::is_member() {
                    crate::rank_links::note_unix(f.fd);
                }
            }
        }
        done.push(u.socket);
        u.holds_data = true;
        u.data = peek_socket(f.fd)
            .map_err(|e| format!("descriptor {} (socket:[{}]): {e}", f.fd, u.socket))?;
    }
    Ok(())
}

/// The messages waiting at the seqpacket socket `fd` (their bytes, their lengths, empty
/// messages too): read out, then sent again through its other end `peer_fd` in order, so
/// that its queue is as it was (the program's threads are stopped). A message carrying
/// descriptors (`SCM_RIGHTS`) is sent again with them, and the checkpoint then fails:
/// an image cannot carry descriptors in flight.
fn seqpacket_in_flight(
    fd: i32,
    own_shutdown: u8,
    peer_fd: i32,
    peer_shutdown: u8,
) -> Result<(Vec<u8>, Vec<u32>), String> {
    // No more receiving here: nothing is readable, nothing to keep.
    if own_shutdown & 1 != 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let rx = AppFd::get(fd).ok_or("closed while checkpointing")?;
    let tx = AppFd::get(peer_fd).ok_or("its other end closed while checkpointing")?;
    let (rx, tx) = (rx.raw(), tx.raw());
    // The next message's length (0: an empty one, or end-of-file), or None: none waits.
    let next_len = || {
        // SAFETY: a peek of length 0 with MSG_TRUNC: the kernel returns the message's length.
        let n = unsafe {
            libc::recv(
                rx,
                core::ptr::null_mut(),
                0,
                libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
            )
        };
        (n >= 0).then_some(n as usize)
    };
    if peer_shutdown & 2 != 0 {
        // The other end stopped sending: a 0 is its end-of-file, and anything waiting
        // could not be sent again through it.
        return match next_len() {
            None | Some(0) => Ok((Vec::new(), Vec::new())),
            Some(_) => Err(
                "messages in flight from an end that stopped sending: they could not be sent again"
                    .into(),
            ),
        };
    }
    let mut data = Vec::new();
    let mut packets = Vec::new();
    let mut controls: Vec<(usize, Vec<u8>)> = Vec::new();
    while let Some(n) = next_len() {
        let at = data.len();
        data.resize(at + n, 0);
        let mut control = vec![0u8; 512];
        let mut iov = libc::iovec {
            iov_base: data[at..].as_mut_ptr().cast(),
            iov_len: n,
        };
        // SAFETY: zeroed msghdr is valid; pointers to our buffers set below.
        let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        // SAFETY: reading one message and its ancillary data into our buffers.
        let r = unsafe { libc::recvmsg(rx, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) };
        if r != n as isize {
            return Err(format!(
                "reading a message of {n} bytes failed: the checkpoint lost it"
            ));
        }
        packets.push(n as u32);
        if msg.msg_controllen > 0 {
            control.truncate(msg.msg_controllen);
            controls.push((packets.len() - 1, control));
        }
    }
    let mut at = 0usize;
    for (i, &n) in packets.iter().enumerate() {
        let body = &data[at..at + n as usize];
        let control = controls.iter().find(|(k, _)| *k == i).map(|(_, c)| c);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let mut iov = libc::iovec {
                iov_base: body.as_ptr() as *mut libc::c_void,
                iov_len: body.len(),
            };
            // SAFETY: zeroed msghdr is valid; pointers to our buffers set below.
            let mut msg: libc::msghdr = unsafe { core::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            if let Some(c) = control {
                msg.msg_control = c.as_ptr() as *mut libc::c_void;
                msg.msg_controllen = c.len();
            }
            // SAFETY: sending one message (and the descriptors it carried) from our buffers.
            let w = unsafe { libc::sendmsg(tx, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
            if w == body.len() as isize {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(
                    "a message read out could not be sent again: the checkpoint lost it".into(),
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        at += n as usize;
    }
    if !controls.is_empty() {
        // Our copies of the descriptors sent again.
        for (_, c) in &controls {
            // SAFETY: walking the control buffer the kernel filled, with its own macros.
            unsafe {
                let mut msg: libc::msghdr = core::mem::zeroed();
                msg.msg_control = c.as_ptr() as *mut libc::c_void;
                msg.msg_controllen = c.len();
                let mut cm = libc::CMSG_FIRSTHDR(&msg);
                while !cm.is_null() {
                    if (*cm).cmsg_level == libc::SOL_SOCKET && (*cm).cmsg_type == libc::SCM_RIGHTS {
                        let count = ((*cm).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                        let fds = libc::CMSG_DATA(cm) as *const i32;
                        for k in 0..count {
                            libc::close(*fds.add(k));
                        }
                    }
                    cm = libc::CMSG_NXTHDR(&msg, cm);
                }
            }
        }
        return Err("a message in flight carries descriptors or credentials: an image cannot keep them (the messages are as they were; try the checkpoint again once they are read)".into());
    }
    Ok((data, packets))
}

/// The bytes readable at the stream socket `fd`, without consuming them.
fn peek_socket(fd: i32) -> Result<Vec<u8>, String> {
    let fd = AppFd::get(fd).ok_or("closed while checkpointing")?;
    let fd = fd.raw();
    let mut avail: libc::c_int = 0;
    // SAFETY: FIONREAD (SIOCINQ) writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut avail) } != 0 || avail <= 0 {
        return Ok(Vec::new());
    }
    let mut data = vec![0u8; avail as usize];
    let zero: libc::c_int = 0;
    // SAFETY: SO_PEEK_OFF with a valid int: peeks advance from offset 0.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            (&zero as *const libc::c_int).cast(),
            4,
        )
    };
    let mut got = 0usize;
    let result = loop {
        if got == data.len() {
            break Ok(data);
        }
        // SAFETY: a peek into the unfilled rest of our buffer.
        let r = unsafe {
            libc::recv(
                fd,
                data[got..].as_mut_ptr().cast(),
                data.len() - got,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if r <= 0 {
            break Err(format!(
                "peeked {got} of its {avail} bytes in flight: {}",
                std::io::Error::last_os_error()
            ));
        }
        got += r as usize;
    };
    let off: libc::c_int = -1;
    // SAFETY: SO_PEEK_OFF -1 turns peek offsets off again, as the program had them.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEEK_OFF,
            (&off as *const libc::c_int).cast(),
            4,
        )
    };
    result
}

/// The type, the peer's inode and the shutdown bits of the Unix socket with inode `ino`,
/// from the kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, `UDIAG_SHOW_PEER`); `None`
/// if it is no Unix socket or has no peer.
fn unix_peer(ino: u64) -> Option<(i32, u64, u8)> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_PEER: u32 = 4;
    const UNIX_DIAG_PEER: u16 = 2;
    const UNIX_DIAG_SHUTDOWN: u16 = 6;
    // SAFETY: a netlink socket of our own, closed below.
    let nl = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 4) };
    if nl < 0 {
        return None;
    }
    // nlmsghdr (16) + unix_diag_req (24).
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNIX as u8;
    req[20..24].copy_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req[24..28].copy_from_slice(&(ino as u32).to_ne_bytes());
    req[28..32].copy_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    req[32..40].copy_from_slice(&[0xff; 8]); // no cookie
    let mut buf = [0u8; 4096];
    // SAFETY: send our request and receive into our buffer.
    let n = unsafe {
        if libc::send(nl, req.as_ptr().cast(), req.len(), 0) != req.len() as isize {
            libc::close(nl);
            return None;
        }
        let n = libc::recv(nl, buf.as_mut_ptr().cast(), buf.len(), 0);
        libc::close(nl);
        n
    };
    if n < 32 || u16::from_ne_bytes([buf[4], buf[5]]) != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    let len = (u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize).min(n as usize);
    let sock_type = buf[17] as i32;
    // rtattrs after unix_diag_msg (16 bytes).
    let (mut peer, mut shutdown) = (0u32, 0u8);
    let mut at = 32;
    while at + 4 <= len {
        let alen = u16::from_ne_bytes([buf[at], buf[at + 1]]) as usize;
        let atype = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]);
        if alen < 4 || at + alen > len {
            break;
        }
        if atype == UNIX_DIAG_PEER && alen >= 8 {
            peer = u32::from_ne_bytes(buf[at + 4..at + 8].try_into().ok()?);
        } else if atype == UNIX_DIAG_SHUTDOWN && alen >= 5 {
            shutdown = buf[at + 4] & 3;
        }
        at += (alen + 3) & !3;
    }
    (peer != 0).then_some((sock_type, peer as u64, shutdown))
}

/// Fills in each pipe's content on its lowest read end (a pipe shared with child
/// processes, which are stopped too, may be recorded by several of them: the same
/// bytes; a restart writes them back once).
fn pipe_contents(files: &mut [FileState]) -> Result<(), String> {
    if !files.iter().any(|f| matches!(f.kind, FileKind::Pipe(_))) {
        return Ok(()); // no pipe: the children's descriptors need no reading
    }
    let mut done = Vec::new();
    for i in 0..files.len() {
        let FileKind::Pipe(p) = &files[i].kind else {
            continue;
        };
        let (pipe, fd) = (p.pipe, files[i].fd);
        if done.contains(&pipe) || !p.read_end {
            continue;
        }
        done.push(pipe);
        // Packet mode is the writer's (`O_DIRECT` on the write end; the read end of a
        // pipe2(O_DIRECT) pair does not show it). A pipe without a write end here keeps
        // its bytes, not their packet boundaries.
        let packet = files.iter().any(|g| {
            matches!(&g.kind, FileKind::Pipe(q) if q.pipe == pipe && !q.read_end)
                && g.flags & libc::O_DIRECT != 0
        });
        let (data, packets) = peek_pipe(fd, p.capacity, packet)
            .map_err(|e| format!("descriptor {fd} (pipe:[{pipe}]): {e}"))?;
        if let FileKind::Pipe(p) = &mut files[i].kind {
            p.holds_data = true;
            p.data = data;
            p.packets = packets;
        }
    }
    Ok(())
}

/// An eventfd, timerfd or signalfd, from its `/proc/self/fdinfo` lines (`None`: `path`
/// names none of them).
fn counter_kind(fd: i32, path: &str) -> Result<Option<FileKind>, String> {
    let which = match path {
        "anon_inode:[eventfd]" => 0,
        "anon_inode:[timerfd]" => 1,
        "anon_inode:[signalfd]" => 2,
        _ => return Ok(None),
    };
    let info = read_proc(
        &std::ffi::CString::new(format!("/proc/self/fdinfo/{fd}")).unwrap(),
        4096,
    )?;
    let info = String::from_utf8_lossy(&info);
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
    };
    let bad = || format!("descriptor {fd} ({path}): cannot read its state");
    let hex = |key: &str| field(key).and_then(|v| u64::from_str_radix(&v, 16).ok());
    let dec = |key: &str| field(key).and_then(|v| v.parse::<u64>().ok());
    // "(sec, nsec)" as the timerfd lines print it.
    let pair = |key: &str| {
        let v = field(key)?;
        let (s, n) = v.trim_matches(|c| c == '(' || c == ')').split_once(',')?;
        let (s, n): (u64, u64) = (s.trim().parse().ok()?, n.trim().parse().ok()?);
        s.checked_mul(1_000_000_000)?.checked_add(n)
    };
    Ok(Some(match which {
        0 => FileKind::EventFd {
            count: hex("eventfd-count:").ok_or_else(bad)?,
            semaphore: dec("eventfd-semaphore:") == Some(1),
        },
        1 => FileKind::TimerFd {
            clock: dec("clockid:").ok_or_else(bad)? as i32,
            ticks: dec("ticks:").ok_or_else(bad)?,
            value_ns: pair("it_value:").ok_or_else(bad)?,
            interval_ns: pair("it_interval:").ok_or_else(bad)?,
        },
        _ => FileKind::SignalFd {
            mask: hex("sigmask:").ok_or_else(bad)?,
        },
    }))
}

/// The interest list of the epoll instance `fd`, from `/proc/self/fdinfo` (`tfd: N events:
/// HEX data: HEX … ino: HEX`). An interest whose descriptor number no longer holds the
/// watched file (closed after a `dup`) is refused: it could not be registered again.
fn epoll_interests(fd: i32) -> Result<Vec<EpollInterest>, String> {
    let info = read_proc(
        &std::ffi::CString::new(format!("/proc/self/fdinfo/{fd}")).unwrap(),
        1 << 20,
    )?;
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(&info).lines() {
        let Some(rest) = line.strip_prefix("tfd:") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let value = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        let target: i32 = words.first().and_then(|w| w.parse().ok()).unwrap_or(-1);
        let events = value("events:").and_then(|v| u32::from_str_radix(v, 16).ok());
        let data = value("data:").and_then(|v| u64::from_str_radix(v, 16).ok());
        let ino = words
            .iter()
            .find_map(|w| w.strip_prefix("ino:"))
            .and_then(|v| u64::from_str_radix(v, 16).ok());
        let (Some(events), Some(data)) = (events, data) else {
            return Err(format!(
                "descriptor {fd} (epoll): cannot read its interest {line:?}"
            ));
        };
        if ino.is_some() && fstat(target).map(|st| st.st_ino) != ino {
            return Err(format!(
                "descriptor {fd} (epoll) cannot be checkpointed: it watches a file through descriptor {target}, which no longer holds it"
            ));
        }
        out.push(EpollInterest {
            fd: target,
            events,
            data,
        });
    }
    Ok(out)
}

/// The unread bytes of the pipe whose read end is `fd`, without consuming them: `tee`
/// into a pipe of our own, read from that. In packet mode, also each packet's size.
fn peek_pipe(fd: i32, capacity: u64, packet: bool) -> Result<(Vec<u8>, Vec<u32>), String> {
    let fd = AppFd::get(fd).ok_or("closed while checkpointing")?;
    let fd = fd.raw();
    let mut avail: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut avail) } != 0 || avail <= 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut tmp = [-1i32; 2];
    let direct = if packet { libc::O_DIRECT } else { 0 };
    // SAFETY: `tmp` is a valid out-array of two.
    if unsafe {
        libc::pipe2(
            tmp.as_mut_ptr(),
            libc::O_CLOEXEC | libc::O_NONBLOCK | direct,
        )
    } != 0
    {
        return Err(format!(
            "cannot make a pipe to copy it: {}",
            std::io::Error::last_os_error()
        ));
    }
    let result = (|| {
        // SAFETY: F_SETPIPE_SZ on our own pipe (a failure shows as a short copy below).
        unsafe { libc::fcntl(tmp[1], libc::F_SETPIPE_SZ, capacity as libc::c_int) };
        // SAFETY: tee between two pipes; copies without consuming.
        let n = unsafe { libc::tee(fd, tmp[1], avail as usize, libc::SPLICE_F_NONBLOCK) };
        if n != avail as isize {
            return Err(format!(
                "copied {n} of its {avail} unread bytes: {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut data = Vec::with_capacity(avail as usize);
        let mut packets = Vec::new();
        let mut buf = vec![0u8; 65536];
        while data.len() < avail as usize {
            // SAFETY: reading our own pipe into a valid buffer.
            let r = unsafe { libc::read(tmp[0], buf.as_mut_ptr().cast(), buf.len()) };
            if r <= 0 {
                return Err(format!("its copy ended after {} bytes", data.len()));
            }
            data.extend_from_slice(&buf[..r as usize]);
            if packet {
                packets.push(r as u32);
            }
        }
        Ok((data, packets))
    })();
    // SAFETY: our temporaries.
    unsafe {
        libc::close(tmp[0]);
        libc::close(tmp[1]);
    }
    result
}

/// The inode of the TCP socket at the other end of connection `t` when it is on this
/// machine (`/proc/self/net/tcp` or `tcp6`: the socket whose local address is `t`'s
/// remote one and the other way round).
fn tcp_peer_inode(t: &TcpState) -> Option<u64> {
    let hex_addr = |ip: &[u8], port: u16| -> String {
        // The kernel prints each 32-bit word of the address in host (little-endian) order.
        let words: String = ip
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        format!("{words}:{port:04X}")
    };
    if !t.local_ip.len().is_multiple_of(4) || t.remote_ip.len() != t.local_ip.len() {
        return None;
    }
    let (theirs, ours) = (
        hex_addr(&t.remote_ip, t.remote_port),
        hex_addr(&t.local_ip, t.local_port),
    );
    let table = if t.family == libc::AF_INET6 as u16 {
        "/proc/self/net/tcp6"
    } else {
        "/proc/self/net/tcp"
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == theirs && f[2] == ours)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// Whether another process of the checkpointed tree holds socket `inode` (the other end
/// of a socket pair made before a `fork`, a TCP connection between two of them): the
/// tree as the root listed it for this checkpoint, else this process's children and, in
/// a descendant, its parent (a launcher is never in the tree).
fn kin_holds(inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    let mut tree = crate::members::tree_others();
    if tree.is_empty() {
        let parent = crate::runtime::is_member()
            .then(|| std::fs::read_to_string("/proc/self/stat").ok())
            .flatten()
            .and_then(|s| {
                let rest = s.get(s.rfind(')')? + 2..)?.to_string();
                rest.split_whitespace().nth(1)?.parse::<i32>().ok()
            });
        tree = parent.into_iter().chain(children()).collect();
    }
    tree.into_iter().any(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|f| std::fs::read_link(f.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
        })
    })
}

/// This process's direct children (of every thread).
pub fn children() -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(kids) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<i32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Children that ended and were not waited for, with their wait status (`waitid` with
/// `WNOWAIT`: they stay for the program's own `waitpid`).
pub fn zombies() -> Vec<mana_image::Zombie> {
    let mut out = Vec::new();
    for pid in children() {
        if crate::members::preexisting(pid) {
            continue;
        }
        // SAFETY: a zeroed siginfo is a valid out-buffer; WNOWAIT leaves the child as is.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child, without waiting and without reaping.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: filled by waitid for an ended child (si_pid 0 otherwise).
        let (who, code, st) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if r != 0 || who != pid {
            continue;
        }
        let status = match code {
            libc::CLD_EXITED => (st & 0xff) << 8,
            libc::CLD_DUMPED => (st & 0x7f) | 0x80,
            _ => st & 0x7f,
        };
        out.push(mana_image::Zombie { pid, status });
    }
    out
}

fn descriptors(runtime_fds: &[i32], inherited: &[(i32, u64)]) -> Result<Vec<FileState>, String> {
    let mut fds = [0i32; 4096];
    let n = sys::list_numeric_dir(c"/proc/self/fd", &mut fds)
        .map_err(|e| format!("cannot list /proc/self/fd (errno {e})"))?;
    let mut out = Vec::new();
    let mut fds = fds[..n].to_vec();
    fds.sort_unstable();
    for fd in fds {
        if runtime_fds.contains(&fd) {
            continue;
        }
        let Some(path) = fd_path(fd) else {
            continue; // closed meanwhile (the listing fd itself)
        };
        // In a descendant, a stdio or inherited descriptor that is not the launcher's is
        // the tree's (popen's pipe, a shell's `> /dev/null`): saved as what it is.
        let trees = |st: &libc::stat| crate::members::launchers_inode(st.st_ino) == Some(false);
        if fd <= 2 && !fstat(fd).is_some_and(|st| trees(&st)) {
            out.push(FileState {
                fd,
                kind: FileKind::Stdio,
                path,
                flags: 0,
                offset: 0,
                cloexec: false,
            });
            continue;
        }
        let Some(st) = fstat(fd) else {
            continue; // closed meanwhile
        };
        let kind = if reopenable(&st, &path) {
            FileKind::Regular
        } else if inherited.contains(&(fd, st.st_ino))
            && !(trees(&st) && st.st_mode & libc::S_IFMT == libc::S_IFIFO)
        {
            FileKind::Inherited(inherited_kind(&st))
        } else if st.st_mode & libc::S_IFMT == libc::S_IFREG && path.ends_with(" (deleted)") {
            unlinked(fd, &st, &path)?
        } else if path == "anon_inode:[eventpoll]" {
            FileKind::Epoll(epoll_interests(fd)?)
        } else if let Some(kind) = counter_kind(fd, &path)? {
            kind
        } else if let Some(l) = (st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
            .then(|| unix_listener(fd, st.st_ino))
            .flatten()
        {
            FileKind::UnixListener(l)
        } else if st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
            match unix_peer(st.st_ino) {
                Some((kind @ (libc::SOCK_STREAM | libc::SOCK_SEQPACKET), peer, shutdown)) => {
                    FileKind::UnixPair(UnixPairState {
                        socket: st.st_ino,
                        peer,
                        holds_data: false,
                        data: Vec::new(),
                        shutdown,
                        outside: false,
                        seqpacket: kind == libc::SOCK_SEQPACKET,
                        packets: Vec::new(),
                    })
                }

                _ => match tcp_socket(fd, st.st_ino)? {
                    Some(t) => FileKind::Tcp(t),
                    None => match dgram_socket(fd, st.st_ino) {
                        Some(d) => FileKind::Dgram(d),
                        // A Unix stream socket whose peer is gone (or that was never
                        // connected): it comes back with its other end closed.
                        None if unix_stream_without_peer(fd) => FileKind::UnixPair(UnixPairState {
                            socket: st.st_ino,
                            peer: 0,
                            holds_data: false,
                            data: Vec::new(),
                            shutdown: 0,
                            outside: true,
                            seqpacket: false,
                            packets: Vec::new(),
                        }),
                        None => {
                        return Err(format!(
                            "descriptor {fd} ({path}) cannot be checkpointed: a socket the process made other than a connected Unix stream socket, a TCP or UDP socket or an unbound Unix datagram socket (not restored yet)"
                        ))
                    }
                    },
                },
            }
        } else if st.st_mode & libc::S_IFMT == libc::S_IFIFO {
            let pipe_fd = AppFd::get(fd)
                .ok_or_else(|| format!("descriptor {fd} (pipe): closed while checkpointing"))?;
            // SAFETY: F_GETFL and F_GETPIPE_SZ on an open pipe.
            let (fl, capacity) = unsafe {
                (
                    libc::fcntl(pipe_fd.raw(), libc::F_GETFL),
                    libc::fcntl(pipe_fd.raw(), libc::F_GETPIPE_SZ),
                )
            };
            FileKind::Pipe(PipeState {
                pipe: st.st_ino,
                capacity: capacity.max(4096) as u64,
                read_end: fl & libc::O_ACCMODE == libc::O_RDONLY,
                holds_data: false,
                data: Vec::new(),
                packets: Vec::new(),
            })
        } else {
            return Err(format!(
                "descriptor {fd} ({path}) cannot be checkpointed: the process made it, and only stdio, regular files, directories, /dev/null-like devices and descriptors inherited at start are supported"
            ));
        };
        let info = read_proc(
            &std::ffi::CString::new(format!("/proc/self/fdinfo/{fd}")).unwrap(),
            4096,
        )?;
        let info = String::from_utf8_lossy(&info);
        let mut flags = 0i32;
        let mut pos = 0i64;
        for l in info.lines() {
            if let Some(v) = l.strip_prefix("flags:") {
                flags = i32::from_str_radix(v.trim(), 8).unwrap_or(0);
            } else if let Some(v) = l.strip_prefix("pos:") {
                pos = v.trim().parse().unwrap_or(0);
            }
        }
        let offset = if matches!(kind, FileKind::Regular | FileKind::Unlinked(_)) {
            pos
        } else {
            0
        };
        out.push(FileState {
            fd,
            kind,
            path,
            flags: flags & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_CLOEXEC),
            offset,
            cloexec: flags & libc::O_CLOEXEC != 0,
        });
    }
    Ok(out)
}

pub fn cwd() -> String {
    let mut buf = [0u8; 4096];
    // SAFETY: `buf` is a valid buffer of its length; getcwd with a buffer does not allocate.
    let p = unsafe { libc::getcwd(buf.as_mut_ptr().cast(), buf.len()) };
    if p.is_null() {
        return String::new();
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

pub fn umask() -> u32 {
    // SAFETY: umask has no memory effects; we put the old value back at once (the other
    // threads are stopped).
    unsafe {
        let old = libc::umask(0o022);
        libc::umask(old);
        old as u32
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: valid buffer of its length.
    unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let n = buf.iter().position(|&b| b == 0).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn fstat(fd: i32) -> Option<libc::stat> {
    let fd = AppFd::get(fd)?;
    // SAFETY: zeroed `stat` is a valid out-buffer; a closed fd just fails.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    (unsafe { libc::fstat(fd.raw(), &mut st) } == 0).then_some(st)
}

std::thread_local! {
    /// Whether this thread has a descriptor table of its own ([`own_table`]).
    static OWN_TABLE: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Gives the calling runtime thread a descriptor table of its own (stdio copies only), so
/// that the application's table has one user and the kernel's single-user fast paths
/// stay on for its `read`/`write`. From then on this thread reaches the application's
/// descriptors only through [`AppFd`]. False if the kernel refused.
pub fn own_table() -> bool {
    OWN_TABLE.with(|t| t.set(true));
    sys::private_fd_table()
}

/// The application's descriptor `fd` as the calling thread can use it: `fd` itself in a
/// thread sharing the application's table, else a copy of it (`pidfd_getfd`), closed on
/// drop. `/proc/self/fd` and `/proc/self/fdinfo` show the application's table (the
/// thread-group leader's) either way.
pub struct AppFd {
    fd: i32,
    copy: bool,
}

impl AppFd {
    pub fn get(fd: i32) -> Option<AppFd> {
        if !OWN_TABLE.with(|t| t.get()) {
            return Some(AppFd { fd, copy: false });
        }
        sys::app_fd(fd).ok().map(|fd| AppFd { fd, copy: true })
    }

    pub fn raw(&self) -> i32 {
        self.fd
    }
}

impl Drop for AppFd {
    fn drop(&mut self) {
        if self.copy {
            sys::close(self.fd);
        }
    }
}
