//! TCP sockets at restart ([`mana_image::FileKind::Tcp`], issue 11, item 2). No
//! `TCP_REPAIR` without privilege, so connections are made anew:
//!
//! * a connection whose two sockets the process held: a rendezvous on this node — a
//!   temporary listener on one socket's address, the other socket bound to its own
//!   address and connected to it — then each side's bytes in flight sent by the other
//!   and the shutdowns applied after them. Same addresses and ports where this node has
//!   them (`SO_REUSEADDR`; a connect refused while the old connection's `TIME_WAIT` lasts
//!   is tried again for 2 s), else the loopback address or another port, logged;
//! * a listening socket: bound to its address again (`SO_REUSEADDR`) and listening; on a
//!   node without that address, the wildcard address of its family, logged; its port
//!   taken on this node → the restart fails naming it;
//! * a connection to something outside the process: a socket its peer reset (a
//!   connection on the loopback whose other side closed with `SO_LINGER` 0): the next
//!   read or write fails with `ECONNRESET`, as after a peer's crash;
//! * a socket neither listening nor connected: made again, bound if it was.
//!
//! Datagram sockets ([`make_dgram`]): UDP bound to its address and port again (the
//! wildcard or loopback address where this node lacks it, logged) and connected again; an
//! unbound Unix datagram socket connected to its path again (libc's `syslog` socket to
//! `/dev/log`) — where that fails it stays unconnected (sends fail), logged. Datagrams
//! queued at the checkpoint are not kept.

use mana_image::{DgramState, FileKind, ImageHeader, TcpState, UnixListenerState};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A socket address of `family` (IPv4: 4 address bytes, IPv6: 16).
fn sockaddr(family: u16, ip: &[u8], port: u16) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    if family as i32 == libc::AF_INET6 {
        // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in6.
        let a =
            unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
        a.sin6_family = libc::AF_INET6 as u16;
        a.sin6_port = port.to_be();
        a.sin6_addr.s6_addr.copy_from_slice(&ip[..16]);
        (
            ss,
            core::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    } else {
        // SAFETY: as above, for sockaddr_in.
        let a = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in) };
        a.sin_family = libc::AF_INET as u16;
        a.sin_port = port.to_be();
        a.sin_addr.s_addr = u32::from_ne_bytes([ip[0], ip[1], ip[2], ip[3]]);
        (
            ss,
            core::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    }
}

fn loopback(family: u16) -> Vec<u8> {
    if family as i32 == libc::AF_INET6 {
        let mut a = vec![0u8; 16];
        a[15] = 1;
        a
    } else {
        vec![127, 0, 0, 1]
    }
}

fn wildcard(family: u16) -> Vec<u8> {
    vec![
        0u8;
        if family as i32 == libc::AF_INET6 {
            16
        } else {
            4
        }
    ]
}

fn new_socket(family: u16) -> Result<i32, String> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            family as i32,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            libc::IPPROTO_TCP,
        )
    };
    if fd < 0 {
        return Err(os_err("cannot make a TCP socket"));
    }
    let one: libc::c_int = 1;
    // SAFETY: SO_REUSEADDR with one int, on our socket.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            4,
        )
    };
    Ok(fd)
}

fn bind(fd: i32, family: u16, ip: &[u8], port: u16) -> bool {
    let (ss, len) = sockaddr(family, ip, port);
    // SAFETY: a valid address of `len` bytes.
    unsafe { libc::bind(fd, (&ss as *const libc::sockaddr_storage).cast(), len) == 0 }
}

/// The address `fd` is bound to (its port, with the address it was given).
fn local_port(fd: i32) -> u16 {
    // SAFETY: zeroed sockaddr_storage is a valid out-buffer.
    let mut ss: libc::sockaddr_storage = unsafe { core::mem::zeroed() };
    let mut len = core::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: a valid buffer of `len` bytes.
    unsafe {
        libc::getsockname(
            fd,
            (&mut ss as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    // Both sockaddr_in and sockaddr_in6 keep the port right after the family.
    // SAFETY: reading the port field of either layout.
    u16::from_be(unsafe {
        (*(&ss as *const libc::sockaddr_storage as *const libc::sockaddr_in)).sin_port
    })
}

/// Binds a connection's socket to its saved address; where this node lacks the address,
/// the loopback; where the port is taken, another port. Returns the address used.
fn bind_end(fd: i32, t: &TcpState, what: &str) -> Result<Vec<u8>, String> {
    if bind(fd, t.family, &t.local_ip, t.local_port) {
        return Ok(t.local_ip.clone());
    }
    let e = errno();
    let ip = if e == libc::EADDRNOTAVAIL {
        loopback(t.family)
    } else {
        t.local_ip.clone()
    };
    if bind(fd, t.family, &ip, t.local_port) {
        tracing::info!(
            socket = t.socket,
            "{what}: its address is not on this node; on the loopback address, same port"
        );
        return Ok(ip);
    }
    if bind(fd, t.family, &ip, 0) {
        tracing::warn!(
            socket = t.socket,
            port = t.local_port,
            new_port = local_port(fd),
            "{what}: its port is taken on this node; another port"
        );
        return Ok(ip);
    }
    Err(os_err(&format!("{what}: cannot bind")))
}

fn set_nodelay(fd: i32, on: bool) {
    if on {
        let one: libc::c_int = 1;
        // SAFETY: TCP_NODELAY with one int, on our socket.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                4,
            )
        };
    }
}

/// Sends all of `bytes` through our new socket `fd` (non-blocking, for at most 5 s: a
/// connection nobody reads yet holds what its buffers hold).
fn send_all(fd: i32, bytes: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut at = 0;
    while at < bytes.len() {
        // SAFETY: sending from our buffer.
        let w = unsafe {
            libc::send(
                fd,
                bytes[at..].as_ptr().cast(),
                bytes.len() - at,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if w > 0 {
            at += w as usize;
        } else if Instant::now() > deadline {
            return Err(format!(
                "{} of its {} bytes in flight do not fit in a new connection's buffers",
                bytes.len() - at,
                bytes.len()
            ));
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

/// `fd` moved to `above` or higher (out of every restored descriptor's way).
fn high(fd: i32, above: i32) -> Result<i32, String> {
    moved_above(fd, above, true)
}

/// `fd` moved to `above` or higher, close-on-exec or (for the tree's processes, made by
/// `exec`) inherited.
pub(crate) fn moved_above(fd: i32, above: i32, cloexec: bool) -> Result<i32, String> {
    let cmd = if cloexec {
        libc::F_DUPFD_CLOEXEC
    } else {
        libc::F_DUPFD
    };
    // SAFETY: duplicating and closing our own descriptor.
    let h = unsafe {
        let h = libc::fcntl(fd, cmd, above);
        libc::close(fd);
        h
    };
    if h < 0 {
        return Err(os_err("cannot move a socket out of the way"));
    }
    Ok(h)
}

/// A connection inside the process, made anew: returns (t's socket, u's socket).
fn rendezvous(t: &TcpState, u: &TcpState) -> Result<(i32, i32), String> {
    let listener = new_socket(t.family)?;
    let ip = bind_end(listener, t, "a TCP connection inside the process")?;
    let port = local_port(listener);
    // SAFETY: listen on our socket.
    if unsafe { libc::listen(listener, 1) } != 0 {
        return Err(os_err("cannot listen for a connection inside the process"));
    }
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(2);
        let client = loop {
            let client = new_socket(u.family)?;
            bind_end(client, u, "a TCP connection inside the process")?;
            let (ss, len) = sockaddr(t.family, &ip, port);
            // SAFETY: a valid address of `len` bytes.
            if unsafe { libc::connect(client, (&ss as *const libc::sockaddr_storage).cast(), len) }
                == 0
            {
                break client;
            }
            let e = errno();
            // SAFETY: our socket.
            unsafe { libc::close(client) };
            // The old connection's TIME_WAIT holds the same four numbers for a while.
            if e != libc::EADDRNOTAVAIL || Instant::now() > deadline {
                if e == libc::EADDRNOTAVAIL {
                    let client = new_socket(u.family)?;
                    // SAFETY: a valid address of `len` bytes.
                    if unsafe {
                        libc::connect(client, (&ss as *const libc::sockaddr_storage).cast(), len)
                    } == 0
                    {
                        tracing::warn!(socket = u.socket, port = u.local_port, "a TCP connection inside the process: its old port is still held by the killed connection; another port");
                        break client;
                    }
                }
                return Err(format!(
                    "cannot connect a TCP connection inside the process again: {}",
                    std::io::Error::from_raw_os_error(e)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // SAFETY: accepting on our listener (the connection is already queued).
        let server = unsafe {
            libc::accept4(
                listener,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if server < 0 {
            return Err(os_err("cannot accept a TCP connection inside the process"));
        }
        Ok((server, client))
    })();
    // SAFETY: our temporary listener.
    unsafe { libc::close(listener) };
    result
}

/// A connected socket whose peer has reset the connection: the next read or write
/// fails with ECONNRESET.
fn reset_socket(family: u16) -> Result<i32, String> {
    stand_in(family, None)
}

/// A connected socket whose peer (outside) sent `bytes` and closed its side: reads see
/// them, then end-of-file. The bytes must fit in the new connection's buffers.
fn closed_after(family: u16, bytes: &[u8]) -> Result<i32, String> {
    stand_in(family, Some(bytes))
}

/// A loopback connection whose other end is gone: reset (`closing` None: `SO_LINGER` 0)
/// or closed after sending `closing`'s bytes.
fn stand_in(family: u16, closing: Option<&[u8]>) -> Result<i32, String> {
    let listener = new_socket(family)?;
    if !bind(listener, family, &loopback(family), 0) {
        // SAFETY: our socket.
        unsafe { libc::close(listener) };
        return Err(os_err("cannot make a stand-in connection (bind)"));
    }
    // SAFETY: listen on our socket.
    unsafe { libc::listen(listener, 1) };
    let port = local_port(listener);
    let client = new_socket(family)?;
    let (ss, len) = sockaddr(family, &loopback(family), port);
    let mut sent_all = true;
    // SAFETY: connect, accept, send, linger and close on our own sockets.
    let ok = unsafe {
        let c = libc::connect(client, (&ss as *const libc::sockaddr_storage).cast(), len) == 0;
        let server = libc::accept4(
            listener,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        );
        libc::close(listener);
        if server >= 0 {
            match closing {
                None => {
                    let l = libc::linger {
                        l_onoff: 1,
                        l_linger: 0,
                    };
                    libc::setsockopt(
                        server,
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&l as *const libc::linger).cast(),
                        core::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
                Some(mut b) => {
                    while !b.is_empty() {
                        let n = libc::send(
                            server,
                            b.as_ptr().cast(),
                            b.len(),
                            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                        );
                        if n <= 0 {
                            sent_all = false;
                            break;
                        }
                        b = &b[n as usize..];
                    }
                }
            }
            libc::close(server);
        }
        c && server >= 0
    };
    if !ok || !sent_all {
        // SAFETY: our socket.
        unsafe { libc::close(client) };
        return Err(if ok {
            format!(
                "its {} bytes in flight do not fit in a new connection's buffers",
                closing.map_or(0, <[u8]>::len)
            )
        } else {
            os_err("cannot make a stand-in connection")
        });
    }
    Ok(client)
}

/// Makes every TCP socket of the image once, moved to `above` or higher; returns the new
/// descriptor by the socket's number (inode).
/// Connects `t` and `u` (two ends of one connection, their addresses crossed) again by a
/// rendezvous, the bytes readable at each (`t_data`, `u_data`) sent from the other, then
/// their shutdowns; [t's descriptor, u's] at `above` or higher (inheritable unless
/// `cloexec`).
pub(crate) fn connect_pair(
    t: &TcpState,
    u: &TcpState,
    t_data: &[u8],
    u_data: &[u8],
    above: i32,
    cloexec: bool,
) -> Result<[i32; 2], String> {
    let (mine, theirs) = rendezvous(t, u)?;
    send_all(theirs, t_data)?;
    send_all(mine, u_data)?;
    for (end, s) in [(mine, t), (theirs, u)] {
        set_nodelay(end, s.nodelay);
        if s.shutdown & 2 != 0 {
            // SAFETY: shutdown of our new socket, after its bytes.
            unsafe { libc::shutdown(end, libc::SHUT_WR) };
        }
    }
    let mut out = [-1i32; 2];
    for (i, end) in [mine, theirs].into_iter().enumerate() {
        out[i] = moved_above(end, above, cloexec)?;
    }
    Ok(out)
}

pub fn make(
    h: &ImageHeader,
    above: i32,
    shared: &HashMap<u64, i32>,
) -> Result<HashMap<u64, i32>, String> {
    let socks: Vec<(i32, &TcpState)> = h
        .files
        .iter()
        .filter_map(|f| match &f.kind {
            FileKind::Tcp(t) => Some((f.fd, t)),
            _ => None,
        })
        .collect();
    let data_of = |socket: u64| {
        socks
            .iter()
            .find(|(_, t)| t.socket == socket && t.holds_data)
            .map_or(&[][..], |(_, t)| t.data.as_slice())
    };
    let mut made: HashMap<u64, i32> = HashMap::new();
    // Connections inside the process first: their temporary listeners may use a port a
    // listening socket of the program takes again afterwards.
    for (fd, t) in &socks {
        if t.peer == 0 || made.contains_key(&t.socket) {
            continue;
        }
        let Some((_, u)) = socks.iter().find(|(_, u)| u.socket == t.peer) else {
            return Err(format!(
                "descriptor {fd} (TCP): its peer is not in the image"
            ));
        };
        let (mine, theirs) = rendezvous(t, u).map_err(|e| format!("descriptor {fd} (TCP): {e}"))?;
        // Bytes readable at t were sent by u, and the other way round.
        send_all(theirs, data_of(t.socket)).map_err(|e| format!("descriptor {fd} (TCP): {e}"))?;
        send_all(mine, data_of(u.socket)).map_err(|e| format!("descriptor {fd} (TCP): {e}"))?;
        for (end, s) in [(mine, *t), (theirs, *u)] {
            set_nodelay(end, s.nodelay);
            if s.shutdown & 2 != 0 {
                // SAFETY: shutdown of our new socket, after its bytes.
                unsafe { libc::shutdown(end, libc::SHUT_WR) };
            }
        }
        made.insert(t.socket, high(mine, above)?);
        made.insert(u.socket, high(theirs, above)?);
    }
    for (fd, t) in &socks {
        if made.contains_key(&t.socket) || shared.contains_key(&t.socket) {
            continue;
        }
        let s = if t.listening {
            listen_again(*fd, t)?
        } else if !t.remote_ip.is_empty() && t.shutdown & 1 != 0 {
            tracing::info!(fd, port = t.remote_port, "a TCP connection to something outside the process, which had closed its side: its bytes in flight, then end-of-file");
            let s = closed_after(t.family, data_of(t.socket))
                .map_err(|e| format!("descriptor {fd}: {e}"))?;
            if t.shutdown & 2 != 0 {
                // SAFETY: shutdown of our new socket.
                unsafe { libc::shutdown(s, libc::SHUT_WR) };
            }
            s
        } else if !t.remote_ip.is_empty() {
            tracing::info!(fd, port = t.remote_port, "a TCP connection to something outside the process: it comes back reset by its peer");
            reset_socket(t.family).map_err(|e| format!("descriptor {fd}: {e}"))?
        } else {
            let s = new_socket(t.family)?;
            if t.local_port != 0 {
                bind_end(s, t, "a bound TCP socket")?;
            }
            s
        };
        set_nodelay(s, t.nodelay);
        made.insert(t.socket, high(s, above)?);
    }
    Ok(made)
}

/// A listening socket (descriptor `fd` of an image) listening again on its address and
/// port; on the wildcard address of its family, logged, when this node lacks the address.
pub fn listen_again(fd: i32, t: &TcpState) -> Result<i32, String> {
    let s = new_socket(t.family)?;
    let mut waited = false;
    let deadline = Instant::now() + TIME_WAIT_LEFT;
    let mut ip = t.local_ip.clone();
    loop {
        if bind(s, t.family, &ip, t.local_port) {
            break;
        }
        let mut e = errno();
        if e == libc::EADDRNOTAVAIL && ip == t.local_ip {
            ip = wildcard(t.family);
            tracing::info!(fd, port = t.local_port, "a listening socket's address is not on this node: it listens on the wildcard address, same port");
            continue;
        }
        // The killed process's own connections in TIME_WAIT hold the port against a
        // listener when its listening socket lacked SO_REUSEADDR (ours has it: theirs
        // count too): they end within a minute. A port another socket listens on is
        // taken for good.
        if e == libc::EADDRINUSE && !port_listened(t.family, t.local_port) {
            if Instant::now() < deadline {
                if !waited {
                    tracing::warn!(fd, port = t.local_port, "port {} is held by the killed process's connections in TIME_WAIT (its listening socket had no SO_REUSEADDR): waiting for them to end, up to a minute", t.local_port);
                    waited = true;
                }
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            e = libc::EADDRINUSE;
        }
        // SAFETY: our socket.
        unsafe { libc::close(s) };
        return Err(format!(
            "descriptor {fd}: cannot listen on port {} again: {}",
            t.local_port,
            std::io::Error::from_raw_os_error(e)
        ));
    }
    // SAFETY: listen on our socket.
    if unsafe { libc::listen(s, libc::SOMAXCONN) } != 0 {
        let e = os_err(&format!("descriptor {fd}: cannot listen again"));
        // SAFETY: our socket.
        unsafe { libc::close(s) };
        return Err(e);
    }
    Ok(s)
}

/// How long the killed connections' TIME_WAIT may still hold a port (Linux: 60 s).
const TIME_WAIT_LEFT: Duration = Duration::from_secs(65);

/// Whether a socket of this node listens on TCP `port` (`/proc/net/tcp` or `tcp6`).
fn port_listened(family: u16, port: u16) -> bool {
    let table = if family == libc::AF_INET6 as u16 {
        "/proc/net/tcp6"
    } else {
        "/proc/net/tcp"
    };
    let want = format!(":{port:04X}");
    std::fs::read_to_string(table).is_ok_and(|text| {
        text.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[3] == "0A" && f[1].ends_with(&want)
        })
    })
}

/// Makes every datagram socket of the image once, moved to `above` or higher; returns the
/// new descriptor by the socket's number (inode).
pub fn make_dgram(h: &ImageHeader, above: i32) -> Result<HashMap<u64, i32>, String> {
    let mut made: HashMap<u64, i32> = HashMap::new();
    for f in &h.files {
        let FileKind::Dgram(d) = &f.kind else {
            continue;
        };
        if made.contains_key(&d.socket) {
            continue;
        }
        let s = dgram(d).map_err(|e| format!("descriptor {} (datagram socket): {e}", f.fd))?;
        made.insert(d.socket, high(s, above)?);
    }
    Ok(made)
}

/// A Unix socket address for `path` (a path, or an abstract name with its leading NUL;
/// at most 107 bytes, as the validator checked).
fn unix_addr(path: &[u8]) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut un: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    un.sun_family = libc::AF_UNIX as u16;
    let path = &path[..path.len().min(107)];
    for (i, &c) in path.iter().enumerate() {
        un.sun_path[i] = c as libc::c_char;
    }
    (un, (2 + path.len()) as libc::socklen_t)
}

/// Makes every listening Unix socket of the image once, listening on its address again,
/// moved to `above` or higher; returns the new descriptor by the socket's number.
pub fn make_unix_listeners(
    h: &ImageHeader,
    above: i32,
    shared: &HashMap<u64, i32>,
) -> Result<HashMap<u64, i32>, String> {
    let mut made: HashMap<u64, i32> = HashMap::new();
    for f in &h.files {
        let FileKind::UnixListener(l) = &f.kind else {
            continue;
        };
        if made.contains_key(&l.socket) || shared.contains_key(&l.socket) {
            continue;
        }
        let s = unix_listener(l).map_err(|e| {
            format!(
                "descriptor {} (Unix socket listening on {}): {e}",
                f.fd,
                String::from_utf8_lossy(&l.path)
            )
        })?;
        made.insert(l.socket, high(s, above)?);
    }
    Ok(made)
}

pub(crate) fn unix_listener(l: &UnixListenerState) -> Result<i32, String> {
    let kind = if l.seqpacket {
        libc::SOCK_SEQPACKET
    } else {
        libc::SOCK_STREAM
    };
    // SAFETY: socket(2) with constant arguments.
    let s = unsafe { libc::socket(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(os_err("cannot make it"));
    }
    let listen = || {
        // SAFETY: listen on our bound socket.
        match unsafe { libc::listen(s, libc::SOMAXCONN) } {
            0 => Ok(()),
            _ => Err(os_err("cannot listen on it again")),
        }
    };
    if let Err(e) = bind_unix(s, kind, &l.path).and_then(|()| listen()) {
        // SAFETY: closing our socket.
        unsafe { libc::close(s) };
        return Err(e);
    }
    Ok(s)
}

/// Binds our Unix socket `s` (of type `kind`) to `path` again. A path still holding the
/// killed process's socket file is taken over when nobody uses it (a probe connection is
/// refused: the file is removed, logged); refused when somebody does.
fn bind_unix(s: i32, kind: i32, path: &[u8]) -> Result<(), String> {
    let (un, len) = unix_addr(path);
    let addr = (&un as *const libc::sockaddr_un).cast();
    // SAFETY: bind with a valid sockaddr_un of `len` bytes.
    let mut r = unsafe { libc::bind(s, addr, len) };
    if r != 0 && errno() == libc::EADDRINUSE && path.first() != Some(&0) {
        // The socket file the killed process left: taken over when nobody listens on it
        // (a connection is refused), refused when somebody does.
        // SAFETY: a probe socket of our own, closed below.
        let probe = unsafe { libc::socket(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0) };
        // SAFETY: connect with a valid address; close our probe.
        let alive = unsafe {
            let c = libc::connect(probe, addr, len) == 0;
            libc::close(probe);
            c
        };
        if alive {
            return Err("another process uses that path now".into());
        }
        let c_path = std::ffi::CString::new(path.to_vec()).map_err(|_| "bad path")?;
        let meta = std::fs::symlink_metadata(
            <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path),
        );
        use std::os::unix::fs::FileTypeExt;
        if meta.is_ok_and(|m| m.file_type().is_socket()) {
            // SAFETY: removing a stale socket file (checked above: a socket nobody uses).
            unsafe { libc::unlink(c_path.as_ptr()) };
            tracing::info!(path = %String::from_utf8_lossy(path), "removed the stale socket file of a restored socket");
        }
        // SAFETY: as above.
        r = unsafe { libc::bind(s, addr, len) };
    }
    if r != 0 {
        return Err(os_err("cannot bind it to its address again"));
    }
    Ok(())
}

fn dgram(d: &DgramState) -> Result<i32, String> {
    // SAFETY: socket(2) with a validated family.
    let s = unsafe { libc::socket(d.family as i32, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(os_err("cannot make it"));
    }
    if d.family as i32 == libc::AF_UNIX {
        if !d.local_ip.is_empty() {
            if let Err(e) = bind_unix(s, libc::SOCK_DGRAM, &d.local_ip) {
                // SAFETY: closing our socket.
                unsafe { libc::close(s) };
                return Err(e);
            }
        }
        if d.remote.is_empty() {
            return Ok(s);
        }
        let (un, len) = unix_addr(&d.remote);
        // SAFETY: a valid sockaddr_un of `len` bytes.
        if unsafe { libc::connect(s, (&un as *const libc::sockaddr_un).cast(), len) } != 0 {
            tracing::warn!(path = %String::from_utf8_lossy(&d.remote), "a Unix datagram socket cannot connect to its path again ({}): it stays unconnected", std::io::Error::last_os_error());
        }
        return Ok(s);
    }
    let one: libc::c_int = 1;
    // SAFETY: SO_REUSEADDR with one int, on our socket.
    unsafe {
        libc::setsockopt(
            s,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            4,
        )
    };
    if d.local_port != 0 && !bind(s, d.family, &d.local_ip, d.local_port) {
        let fallback = if d.local_ip.iter().all(|&b| b == 0) {
            loopback(d.family)
        } else {
            wildcard(d.family)
        };
        if errno() != libc::EADDRNOTAVAIL || !bind(s, d.family, &fallback, d.local_port) {
            return Err(os_err(&format!(
                "cannot bind UDP port {} again",
                d.local_port
            )));
        }
        tracing::info!(
            port = d.local_port,
            "a UDP socket's address is not on this node: bound to the wildcard address, same port"
        );
    }
    if !d.remote.is_empty() {
        let (ss, len) = sockaddr(d.family, &d.remote, d.remote_port);
        // SAFETY: a valid address of `len` bytes.
        if unsafe { libc::connect(s, (&ss as *const libc::sockaddr_storage).cast(), len) } != 0 {
            tracing::warn!(
                port = d.remote_port,
                "a UDP socket cannot connect to its peer again ({}): it stays unconnected",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(s)
}
