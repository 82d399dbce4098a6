//! TCP connections between ranks of one job (issue 11, item 2): "connections whose two
//! ends are in the checkpointed job come back connected with their in-flight data".
//!
//! At a checkpoint (an MPI one: every rank takes part), once the rank's threads are
//! stopped: its TCP connections' send queues are given up to 2 s to empty (on a live
//! connection every byte sent arrives at its peer), then a job-wide reduce through the
//! coordinator — a barrier — makes sure no rank peeks its receive queues before every
//! rank stopped sending; it also decides, alike for all, whether a restart exchanges
//! connections at all (some rank has one, every rank has MPI initialized). The image
//! keeps each connection to another process with the bytes readable at it; the restarter
//! puts a connection reset by its peer at its number, as for any outside connection.
//!
//! After a restart, with the new lower half initialized and the application's threads
//! still parked: every rank offers its connections (crossed addresses) and a temporary
//! listener (its port, its host name and addresses) in one `MPI_Allgatherv`; a connection
//! whose crossed twin is exactly one connection of one other rank (and the other way
//! round) is made again: the lower rank accepts, the higher connects and names the pair.
//! Each side sends the bytes that were readable at it, length first, reads the other's
//! and sends them back: afterwards each side finds exactly its own saved bytes unread.
//! The new socket replaces the stand-in (`dup3`, with its file status flags). Anything
//! not matched or failing stays reset by its peer, logged.

use crate::sys;
use mana_image::TcpState;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// The descriptors of a rank's connections to other processes at the last checkpoint
/// (-1: free). Noted inside the write window, where the runtime allocates nothing that
/// survives into the image: their states (with the bytes readable at each) are read back
/// from the image after a restart.
static LINK_FDS: [AtomicI32; 256] = [const { AtomicI32::new(-1) }; 256];
/// Sockets whose send queue did not empty at the last checkpoint: never noted (their
/// stream would have a hole). Set before the write window.
static UNSENT: Mutex<Vec<u64>> = Mutex::new(Vec::new());
/// Decided job-wide at the last checkpoint: a restart exchanges connections.
static EXCHANGE: AtomicBool = AtomicBool::new(false);

const WAIT_SENT: Duration = Duration::from_secs(2);
const MAGIC: u32 = 0x4d52_4c31; // "MRL1"
/// Per rank in the exchange (a rank offering more is not matched).
const OFFER_LIMIT: usize = 1 << 20;
/// Each side's saved bytes: as a restored connection within one process can hold.
const DATA_LIMIT: u64 = 64 << 20;

/// At a checkpoint (`tcp_contents`): a TCP connection to another process, with the bytes
/// readable at it.
pub fn note(fd: i32, t: &TcpState) {
    if t.shutdown & 1 != 0 || UNSENT.try_lock().is_ok_and(|u| u.contains(&t.socket)) {
        return;
    }
    if let Some(slot) = LINK_FDS.iter().find(|s| s.load(Ordering::Relaxed) < 0) {
        slot.store(fd, Ordering::Relaxed);
    }
}

/// A noted connection as the image holds it.
#[derive(Clone)]
enum Saved {
    Tcp(TcpState),
    Unix(mana_image::UnixPairState),
}

impl Saved {
    fn data(&self) -> &[u8] {
        match self {
            Saved::Tcp(t) => &t.data,
            Saved::Unix(u) => &u.data,
        }
    }
    /// Whether this side had shut its sending side.
    fn shut_sending(&self) -> bool {
        match self {
            Saved::Tcp(t) => t.shutdown & 2 != 0,
            Saved::Unix(u) => u.shutdown & 2 != 0,
        }
    }
    fn nodelay(&self) -> bool {
        matches!(self, Saved::Tcp(t) if t.nodelay)
    }
}

/// A noted connection: every descriptor of its socket, and its state.
struct Link {
    fds: Vec<i32>,
    saved: Saved,
}

impl Link {
    fn fd(&self) -> i32 {
        self.fds[0]
    }
}

/// The noted connections, their states as the image holds them, and the host the
/// checkpoint ran on.
fn noted(image: &std::path::Path) -> Result<(String, Vec<Link>), String> {
    let fds: Vec<i32> = LINK_FDS
        .iter()
        .map(|s| s.swap(-1, Ordering::Relaxed))
        .filter(|&fd| fd >= 0)
        .collect();
    if fds.is_empty() {
        return Ok((String::new(), Vec::new()));
    }
    let reader = mana_image::ImageReader::open(image).map_err(|e| e.to_string())?;
    let files = &reader.header.files;
    let socket_of = |k: &mana_image::FileKind| match k {
        mana_image::FileKind::Tcp(t) => Some((false, t.socket)),
        mana_image::FileKind::UnixPair(u) => Some((true, u.socket)),
        _ => None,
    };
    let mut links: Vec<Link> = Vec::new();
    for f in files.iter().filter(|f| fds.contains(&f.fd)) {
        let saved = match &f.kind {
            mana_image::FileKind::Tcp(t) if t.holds_data && t.peer == 0 && !t.listening => {
                Saved::Tcp(t.clone())
            }
            mana_image::FileKind::UnixPair(u) if u.holds_data && u.outside && u.peer != 0 => {
                Saved::Unix(u.clone())
            }
            _ => continue,
        };
        let me = socket_of(&f.kind);
        let mut all: Vec<i32> = vec![f.fd];
        all.extend(
            files
                .iter()
                .filter(|g| g.fd != f.fd && socket_of(&g.kind) == me)
                .map(|g| g.fd),
        );
        links.push(Link { fds: all, saved });
    }
    Ok((reader.header.hostname.clone(), links))
}

/// At a checkpoint (`socket_contents`): a Unix stream connection to another process.
pub fn note_unix(fd: i32) {
    if let Some(slot) = LINK_FDS.iter().find(|s| s.load(Ordering::Relaxed) < 0) {
        slot.store(fd, Ordering::Relaxed);
    }
}

/// One connected TCP socket of the application as `/proc/self/net/tcp` shows it.
struct Queued {
    inode: u64,
    tx_queue: u64,
}

/// The application's sockets (how many: the lower half's and the runtime's left out) and
/// its connected TCP sockets (IPv4 and IPv6) with their send queues.
fn app_connections() -> (usize, Vec<Queued>) {
    let not_ours = crate::runtime::not_the_programs_fds();
    let mut mine: Vec<u64> = Vec::new();
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        for f in fds.flatten() {
            let fd = f.file_name().to_str().and_then(|n| n.parse::<i32>().ok());
            if fd.is_none_or(|fd| not_ours.contains(&fd)) {
                continue;
            }
            if let Ok(l) = std::fs::read_link(f.path()) {
                let l = l.to_string_lossy();
                if let Some(n) = l
                    .strip_prefix("socket:[")
                    .and_then(|r| r.strip_suffix(']'))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    mine.push(n);
                }
            }
        }
    }
    let mut out = Vec::new();
    if mine.is_empty() {
        return (0, out); // no socket: the node's whole table is not worth reading
    }
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for l in text.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 || f[3] == "0A" {
                continue; // listening
            }
            let Ok(inode) = f[9].parse::<u64>() else {
                continue;
            };
            if inode == 0 || !mine.contains(&inode) {
                continue;
            }
            let tx = f[4]
                .split(':')
                .next()
                .and_then(|t| u64::from_str_radix(t, 16).ok())
                .unwrap_or(0);
            out.push(Queued {
                inode,
                tx_queue: tx,
            });
        }
    }
    (mine.len(), out)
}

/// At an MPI checkpoint, the rank's threads stopped: lets its connections' send queues
/// empty (up to 2 s), then waits for every rank at the coordinator (see the module
/// documentation). An error fails the checkpoint.
pub fn settle(conn: &mut mana_coordinator::Connection, generation: u64) -> Result<(), String> {
    let t0 = Instant::now();
    for s in &LINK_FDS {
        s.store(-1, Ordering::Relaxed);
    }
    let deadline = Instant::now() + WAIT_SENT;
    let (sockets, mut conns) = app_connections();
    let mut unsent = Vec::new();
    loop {
        let pending: Vec<u64> = conns
            .iter()
            .filter(|q| q.tx_queue > 0)
            .map(|q| q.inode)
            .collect();
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            unsent = pending;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        conns = app_connections().1;
    }
    *UNSENT.lock().unwrap_or_else(|p| p.into_inner()) = unsent;
    let not_initialized = mana_drain::phase() != mana_drain::Phase::Initialized;
    let sums = conn
        .reduce(
            &format!("ckpt{generation}/links"),
            mana_coordinator::protocol::ReduceOp::Sum,
            vec![
                ([0, 0, 0], sockets as i64),
                ([1, 0, 0], i64::from(not_initialized)),
            ],
        )
        .map_err(|e| {
            format!(
                "waiting for every rank's connections to settle: {}",
                mana_drain::reduce_err(e)
            )
        })?;
    let sum = |k: u64| sums.iter().find(|(key, _)| key[0] == k).map_or(0, |e| e.1);
    EXCHANGE.store(sum(0) > 0 && sum(1) == 0, Ordering::Release);
    tracing::debug!(
        sockets,
        job_wide = sum(0),
        elapsed = ?t0.elapsed(),
        "connections settled"
    );
    Ok(())
}

/// A rank's offer in the exchange after a restart.
#[derive(Serialize, Deserialize, Default)]
struct Offer {
    /// Random, sent back by each rank connecting to this one's listener (which listens
    /// on every address of the node: a stranger must not pass for a rank).
    token: u64,
    host: String,
    /// The host the checkpoint ran on (a loopback connection is matched only between
    /// ranks that were on one host).
    ckpt_host: String,
    /// IPv4 addresses of this node (not the loopback), for peers on other nodes.
    addrs: Vec<[u8; 4]>,
    port: u16,
    links: Vec<Offered>,
    /// Unix stream connections: (socket, its peer, bytes readable here) as the
    /// checkpoint saw them; made again only between ranks on one node.
    unix: Vec<(u64, u64, u64)>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
struct Offered {
    family: u16,
    local_ip: Vec<u8>,
    local_port: u16,
    remote_ip: Vec<u8>,
    remote_port: u16,
    /// Bytes readable at this end at the checkpoint (the peer checks the preamble).
    readable: u64,
}

impl Offered {
    /// Whether either end's address is a loopback one (127/8, ::1, ::ffff:127/8).
    fn loopback(&self) -> bool {
        let lo = |ip: &[u8]| match ip.len() {
            4 => ip[0] == 127,
            16 => {
                ip[..15].iter().all(|&b| b == 0) && ip[15] == 1
                    || (ip[..10].iter().all(|&b| b == 0)
                        && ip[10] == 0xff
                        && ip[11] == 0xff
                        && ip[12] == 127)
            }
            _ => false,
        };
        lo(&self.local_ip) || lo(&self.remote_ip)
    }

    fn crosses(&self, o: &Offered) -> bool {
        self.family == o.family
            && self.local_ip == o.remote_ip
            && self.local_port == o.remote_port
            && self.remote_ip == o.local_ip
            && self.remote_port == o.local_port
    }
}

/// A connection of this rank matched with one of rank `peer`: `mine` indexes this rank's
/// noted connections, `theirs` the peer's offered list of that kind.
struct Matched {
    mine: usize,
    /// Its index in this rank's offered list of its kind.
    offered: usize,
    peer: u32,
    theirs: usize,
    unix: bool,
}

/// Bit of an index in the hello naming a Unix connection.
const UNIX_BIT: u32 = 1 << 31;

/// After a restart (see the module documentation): the connections between ranks made
/// again, in place of their stand-ins.
pub fn restore(image: &std::path::Path, rank: u32, world_size: u32) {
    if !EXCHANGE.swap(false, Ordering::AcqRel) {
        return;
    }
    // Every rank of the world takes part in both exchanges below, whatever it holds or
    // fails to do (a rank missing one would leave the others waiting inside MPI).
    let (ckpt_host, links) = noted(image).unwrap_or_else(|e| {
        warn!("cannot read this rank's connections back from its image ({e}): they stay reset");
        (String::new(), Vec::new())
    });
    let tcp_idx: Vec<usize> = (0..links.len())
        .filter(|&i| matches!(links[i].saved, Saved::Tcp(_)))
        .collect();
    let unix_idx: Vec<usize> = (0..links.len())
        .filter(|&i| matches!(links[i].saved, Saved::Unix(_)))
        .collect();
    let mut token = [0u8; 8];
    // SAFETY: getrandom into a valid 8-byte buffer.
    let random = unsafe { libc::getrandom(token.as_mut_ptr().cast(), 8, 0) } == 8;
    if !random && !links.is_empty() {
        warn!("no random bytes for the connections between ranks: they stay reset");
    }
    let token = u64::from_ne_bytes(token);
    let listener = if links.is_empty() || !random {
        None
    } else {
        match Listener::open(token, !unix_idx.is_empty()) {
            Ok(l) => Some(l),
            Err(e) => {
                warn!("cannot listen for the connections between ranks: {e}; they stay reset");
                None
            }
        }
    };
    // Offered only with a listener to be reached at.
    let offered = |n: usize| {
        if listener.is_some() {
            n as u64
        } else {
            u64::MAX
        }
    };
    let offer = Offer {
        token,
        host: crate::procfs::hostname(),
        ckpt_host,
        addrs: node_addresses(),
        port: listener.as_ref().map_or(0, |l| l.port),
        links: tcp_idx
            .iter()
            .filter_map(|&i| match &links[i].saved {
                Saved::Tcp(t) => Some(Offered {
                    family: t.family,
                    local_ip: t.local_ip.clone(),
                    local_port: t.local_port,
                    remote_ip: t.remote_ip.clone(),
                    remote_port: t.remote_port,
                    readable: offered(t.data.len()),
                }),
                Saved::Unix(_) => None,
            })
            .collect(),
        unix: unix_idx
            .iter()
            .filter_map(|&i| match &links[i].saved {
                Saved::Unix(u) => Some((u.socket, u.peer, offered(u.data.len()))),
                Saved::Tcp(_) => None,
            })
            .collect(),
    };
    let bytes = rmp_serde::to_vec(&offer).unwrap_or_default();
    // Fails alike on every rank (the lengths are every rank's, MPI's errors the job's).
    let all = match mana_drain::allgather(&bytes, world_size, OFFER_LIMIT) {
        Ok(a) => a,
        Err(e) => {
            warn!("cannot exchange the connections between ranks ({e}): they stay reset");
            return;
        }
    };
    let offers: Vec<Offer> = all
        .iter()
        .map(|b| rmp_serde::from_slice(b).unwrap_or_default())
        .collect();
    let mut matched = if listener.is_some() {
        match_links(&offers, rank)
    } else {
        Vec::new()
    };
    for m in &mut matched {
        m.mine = if m.unix {
            unix_idx[m.mine]
        } else {
            tcp_idx[m.mine]
        };
    }
    for (i, l) in links.iter().enumerate() {
        if !matched.iter().any(|m| m.mine == i) {
            let kind = if matches!(l.saved, Saved::Unix(_)) {
                "a Unix connection to another process: no rank of this job holds its other end; it stays closed by its peer"
            } else {
                "a TCP connection to another process: no rank of this job holds its other end; it stays reset by its peer"
            };
            info!(fd = l.fd(), "{kind}");
        }
    }
    let made = match &listener {
        Some(listener) => connect_all(listener, &offers, rank, &matched),
        None => Vec::new(),
    };
    let mut states: Vec<(usize, Exchange)> = Vec::new();
    for (k, (m, sock)) in matched.iter().zip(made).enumerate() {
        let link = &links[m.mine];
        let theirs = &offers[m.peer as usize];
        let readable = if m.unix {
            theirs.unix[m.theirs].2
        } else {
            theirs.links[m.theirs].readable
        };
        match sock {
            Ok(s) => states.push((
                k,
                Exchange::new(s, link.fds.clone(), &link.saved, readable, m.peer),
            )),
            Err(e) => warn!(
                fd = link.fd(),
                peer = m.peer,
                "a connection to rank {}: {e}; it stays as it came back (reset or closed)",
                m.peer
            ),
        }
    }
    let mut just: Vec<&mut Exchange> = states.iter_mut().map(|(_, x)| x).collect();
    exchange_all(&mut just);
    // Both sides put a connection in place, or neither: a side whose exchange failed (its
    // peer's bytes did not fit, a timeout) must not leave the other reading a cut stream.
    let done: Vec<(u32, u32, bool)> = states
        .iter()
        .map(|(k, x)| {
            let m = &matched[*k];
            let bit = if m.unix { UNIX_BIT } else { 0 };
            (m.peer, m.offered as u32 | bit, x.succeeded())
        })
        .collect();
    let bytes = rmp_serde::to_vec(&done).unwrap_or_default();
    let results: Vec<Vec<(u32, u32, bool)>> =
        match mana_drain::allgather(&bytes, world_size, OFFER_LIMIT) {
            Ok(a) => a
                .iter()
                .map(|b| rmp_serde::from_slice(b).unwrap_or_default())
                .collect(),
            Err(e) => {
                warn!("cannot agree on the connections between ranks ({e}): they stay reset");
                Vec::new()
            }
        };
    for (k, x) in states {
        let m = &matched[k];
        let bit = if m.unix { UNIX_BIT } else { 0 };
        let peer_ok = results.get(m.peer as usize).is_some_and(|r| {
            r.iter()
                .any(|&(p, o, ok)| p == rank && o == m.theirs as u32 | bit && ok)
        });
        x.finish(peer_ok);
    }
}

/// Connections matched unambiguously both ways (a pair of loopback connections on two
/// nodes may carry the same four numbers: neither is matched then); a Unix connection
/// by its socket and peer inodes, and only between ranks on one node now.
fn match_links(offers: &[Offer], rank: u32) -> Vec<Matched> {
    let usable = |o: &Offered| o.readable != u64::MAX;
    let twins = |r: usize, i: usize| -> Vec<(usize, usize)> {
        let me = &offers[r].links[i];
        let mut v = Vec::new();
        for (p, o) in offers.iter().enumerate() {
            if p == r {
                continue;
            }
            // A loopback connection joins two processes of one host only.
            let same_host = o.ckpt_host == offers[r].ckpt_host;
            for (j, l) in o.links.iter().enumerate() {
                if usable(l) && l.crosses(me) && (same_host || !l.loopback()) {
                    v.push((p, j));
                }
            }
        }
        v
    };
    let unix_twins = |r: usize, i: usize| -> Vec<(usize, usize)> {
        let (sock, peer, _) = offers[r].unix[i];
        let mut v = Vec::new();
        for (p, o) in offers.iter().enumerate() {
            if p == r {
                continue;
            }
            for (j, &(s2, p2, n)) in o.unix.iter().enumerate() {
                if n != u64::MAX && s2 == peer && p2 == sock {
                    v.push((p, j));
                }
            }
        }
        v
    };
    let r = rank as usize;
    let Some(mine) = offers.get(r) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, l) in mine.links.iter().enumerate() {
        if !usable(l) {
            continue;
        }
        let t = twins(r, i);
        if t.len() != 1 {
            continue;
        }
        let (p, j) = t[0];
        if twins(p, j) == vec![(r, i)] {
            out.push(Matched {
                mine: i,
                offered: i,
                peer: p as u32,
                theirs: j,
                unix: false,
            });
        }
    }
    for (i, &(_, _, n)) in mine.unix.iter().enumerate() {
        if n == u64::MAX {
            continue;
        }
        let t = unix_twins(r, i);
        if t.len() != 1 {
            continue;
        }
        let (p, j) = t[0];
        if unix_twins(p, j) == vec![(r, i)]
            && offers[p].host == mine.host
            && offers[p].ckpt_host == mine.ckpt_host
        {
            out.push(Matched {
                mine: i,
                offered: i,
                peer: p as u32,
                theirs: j,
                unix: true,
            });
        }
    }
    out
}

/// The abstract name of a rank's Unix listener (`token`: its offer's).
fn unix_name(token: u64) -> String {
    format!("mana-links-{token:016x}")
}

/// The temporary listeners of this rank: TCP on every address, and an abstract Unix
/// socket when it has Unix connections.
struct Listener {
    fd: i32,
    port: u16,
    unix_fd: i32,
}

impl Listener {
    fn open(token: u64, with_unix: bool) -> Result<Listener, String> {
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        let mut l = Listener {
            fd,
            port: 0,
            unix_fd: -1,
        };
        let mut a: libc::sockaddr_in = unsafe_zeroed_in();
        a.sin_family = libc::AF_INET as u16;
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: bind/listen/getsockname on our socket with a valid sockaddr_in.
        let ok = unsafe {
            libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len) == 0
                && libc::listen(fd, 128) == 0
                && libc::getsockname(fd, (&mut a as *mut libc::sockaddr_in).cast(), &mut len) == 0
        };
        if !ok {
            return Err(std::io::Error::last_os_error().to_string());
        }
        l.port = u16::from_be(a.sin_port);
        if with_unix {
            let u = std::os::unix::net::UnixListener::bind_addr(
                &<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
                    unix_name(token).as_bytes(),
                )
                .map_err(|e| e.to_string())?,
            )
            .map_err(|e| format!("a Unix listener: {e}"))?;
            l.unix_fd = std::os::fd::IntoRawFd::into_raw_fd(u);
        }
        Ok(l)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        sys::close(self.fd);
        if self.unix_fd >= 0 {
            sys::close(self.unix_fd);
        }
    }
}

fn unsafe_zeroed_in() -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

/// This node's IPv4 addresses but the loopback's.
fn node_addresses() -> Vec<[u8; 4]> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: a node of the list getifaddrs returned.
        let ifa = unsafe { &*p };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of its family.
            let fam = unsafe { (*ifa.ifa_addr).sa_family };
            if fam == libc::AF_INET as u16 {
                // SAFETY: an AF_INET address is a sockaddr_in.
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let ip = a.sin_addr.s_addr.to_ne_bytes();
                if ip[0] != 127 && !out.contains(&ip) && out.len() < 16 {
                    out.push(ip);
                }
            }
        }
        p = ifa.ifa_next;
    }
    // SAFETY: the list from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// A connection to `ip:port`, within `wait`.
fn connect_to(ip: [u8; 4], port: u16, wait: Duration) -> Result<i32, String> {
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let mut a = unsafe_zeroed_in();
    a.sin_family = libc::AF_INET as u16;
    a.sin_port = port.to_be();
    a.sin_addr.s_addr = u32::from_ne_bytes(ip);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: connect with a valid sockaddr_in.
    let r = unsafe { libc::connect(fd, (&a as *const libc::sockaddr_in).cast(), len) };
    if r != 0 && sys_errno() != libc::EINPROGRESS {
        let e = std::io::Error::last_os_error().to_string();
        sys::close(fd);
        return Err(e);
    }
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as libc::c_int) };
    let mut err: libc::c_int = 0;
    let mut elen = 4 as libc::socklen_t;
    // SAFETY: SO_ERROR writes one int.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut elen,
        )
    };
    if n != 1 || err != 0 {
        sys::close(fd);
        return Err(if n != 1 {
            "timed out".into()
        } else {
            std::io::Error::from_raw_os_error(err).to_string()
        });
    }
    Ok(fd)
}

/// A connection to the abstract Unix socket `name` (non-blocking once made).
fn connect_unix(name: &str) -> Result<i32, String> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| e.to_string())?;
    let s = std::os::unix::net::UnixStream::connect_addr(&addr).map_err(|e| e.to_string())?;
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(std::os::fd::IntoRawFd::into_raw_fd(s))
}

fn sys_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The sockets of the matched connections, in `matched`'s order: connected to the lower
/// rank's listener by the higher rank (which names the pair first), accepted by the lower.
fn connect_all(
    listener: &Listener,
    offers: &[Offer],
    rank: u32,
    matched: &[Matched],
) -> Vec<Result<i32, String>> {
    let me = &offers[rank as usize];
    let mut out: Vec<Result<i32, String>> = matched
        .iter()
        .map(|_| Err("not connected".to_string()))
        .collect();
    for (k, m) in matched.iter().enumerate() {
        if m.peer > rank {
            continue;
        }
        let peer = &offers[m.peer as usize];
        let bit = if m.unix { UNIX_BIT } else { 0 };
        let mut hello = Vec::with_capacity(24);
        hello.extend_from_slice(&MAGIC.to_le_bytes());
        hello.extend_from_slice(&rank.to_le_bytes());
        hello.extend_from_slice(&(m.offered as u32 | bit).to_le_bytes());
        hello.extend_from_slice(&(m.theirs as u32 | bit).to_le_bytes());
        hello.extend_from_slice(&peer.token.to_le_bytes());
        let mut tries: Vec<Option<[u8; 4]>> = Vec::new();
        if m.unix {
            tries.push(None);
        } else {
            if peer.host == me.host {
                tries.push(Some([127, 0, 0, 1]));
            }
            tries.extend(peer.addrs.iter().copied().map(Some));
        }
        let mut last = "the rank offered no address".to_string();
        for ip in tries {
            let conn = match ip {
                Some(ip) => connect_to(ip, peer.port, Duration::from_secs(5)).map_err(|e| {
                    format!("connecting to rank {} on port {}: {e}", m.peer, peer.port)
                }),
                None => connect_unix(&unix_name(peer.token))
                    .map_err(|e| format!("connecting to rank {}'s Unix socket: {e}", m.peer)),
            };
            match conn {
                // The other rank acknowledges with this rank's token: an unrelated
                // listener at that address (another node's, a local daemon's) does not.
                Ok(fd) => match write_all(fd, &hello, Instant::now() + Duration::from_secs(10))
                    .and_then(|()| {
                        let mut ack = [0u8; 8];
                        read_exact(fd, &mut ack, Instant::now() + Duration::from_secs(5))?;
                        if u64::from_le_bytes(ack) == me.token {
                            Ok(())
                        } else {
                            Err("another listener answered".to_string())
                        }
                    }) {
                    Ok(()) => {
                        tracing::debug!(peer = m.peer, address = ?ip, "connected to the rank's listener");
                        out[k] = Ok(fd);
                        break;
                    }
                    Err(e) => {
                        sys::close(fd);
                        last = e;
                    }
                },
                Err(e) => last = e,
            }
        }
        if out[k].is_err() {
            out[k] = Err(last);
        }
    }
    let expected = matched.iter().filter(|m| m.peer > rank).count();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = 0;
    while got < expected && Instant::now() < deadline {
        let mut pfds = [listener.fd, listener.unix_fd].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: two valid pollfds (a negative fd is ignored).
        if unsafe { libc::poll(pfds.as_mut_ptr(), 2, 200) } < 1 {
            continue;
        }
        let Some(ready) = pfds.iter().find(|p| p.revents & libc::POLLIN != 0) else {
            continue;
        };
        // SAFETY: accept on our listener.
        let fd = unsafe {
            libc::accept4(
                ready.fd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if fd < 0 {
            continue;
        }
        let mut hello = [0u8; 24];
        if read_exact(fd, &mut hello, Instant::now() + Duration::from_secs(10)).is_err() {
            sys::close(fd);
            continue;
        }
        let word =
            |i: usize| u32::from_le_bytes([hello[i], hello[i + 1], hello[i + 2], hello[i + 3]]);
        let (magic, from, theirs, mine) = (word(0), word(4), word(8), word(12));
        let mut t = [0u8; 8];
        t.copy_from_slice(&hello[16..24]);
        let token_ok = u64::from_le_bytes(t) == me.token;
        let slot = matched.iter().position(|m| {
            let bit = if m.unix { UNIX_BIT } else { 0 };
            m.peer == from
                && m.peer > rank
                && m.theirs as u32 | bit == theirs
                && m.offered as u32 | bit == mine
        });
        match slot {
            Some(k) if magic == MAGIC && token_ok && out[k].is_err() => {
                let ack = offers[from as usize].token.to_le_bytes();
                if write_all(fd, &ack, Instant::now() + Duration::from_secs(5)).is_ok() {
                    out[k] = Ok(fd);
                    got += 1;
                } else {
                    sys::close(fd);
                }
            }
            _ => sys::close(fd), // not one of ours
        }
    }
    out
}

fn wait_fd(fd: i32, events: i16, deadline: Instant) -> Result<(), String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("timed out".into());
    }
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as libc::c_int) };
    Ok(())
}

fn write_all(fd: i32, mut b: &[u8], deadline: Instant) -> Result<(), String> {
    while !b.is_empty() {
        // SAFETY: writing from a valid buffer.
        let n = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
        if n > 0 {
            b = &b[n as usize..];
        } else if n < 0 && matches!(sys_errno(), libc::EAGAIN | libc::EINTR) {
            wait_fd(fd, libc::POLLOUT, deadline)?;
        } else {
            return Err(std::io::Error::last_os_error().to_string());
        }
    }
    Ok(())
}

fn read_exact(fd: i32, b: &mut [u8], deadline: Instant) -> Result<(), String> {
    let mut at = 0;
    while at < b.len() {
        // SAFETY: reading into a valid buffer.
        let n = unsafe { libc::recv(fd, b[at..].as_mut_ptr().cast(), b.len() - at, 0) };
        if n > 0 {
            at += n as usize;
        } else if n < 0 && matches!(sys_errno(), libc::EAGAIN | libc::EINTR) {
            wait_fd(fd, libc::POLLIN, deadline)?;
        } else {
            return Err("the peer closed".into());
        }
    }
    Ok(())
}

/// One connection being given its bytes back (see the module documentation).
struct Exchange {
    sock: i32,
    /// Every descriptor of the connection's socket in the program (the first names it).
    fds: Vec<i32>,
    peer: u32,
    shut_sending: bool,
    nodelay: bool,
    /// What goes out: the length and the bytes readable here, then the peer's bytes.
    out: Vec<u8>,
    sent: usize,
    /// The peer's preamble: length (8 bytes), then its bytes.
    head: [u8; 8],
    head_got: usize,
    expect: u64,
    data: Vec<u8>,
    echoed: bool,
    failed: Option<String>,
}

impl Exchange {
    fn new(sock: i32, fds: Vec<i32>, saved: &Saved, readable: u64, peer: u32) -> Exchange {
        let mut out = (saved.data().len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(saved.data());
        Exchange {
            sock,
            fds,
            peer,
            shut_sending: saved.shut_sending(),
            nodelay: saved.nodelay(),
            out,
            sent: 0,
            head: [0; 8],
            head_got: 0,
            expect: readable,
            data: Vec::new(),
            echoed: false,
            failed: (readable > DATA_LIMIT).then(|| format!("its peer saved {readable} bytes")),
        }
    }

    fn done(&self) -> bool {
        self.failed.is_some() || (self.echoed && self.sent == self.out.len())
    }

    /// Reads and writes what it can without blocking.
    fn step(&mut self) {
        if self.done() {
            return;
        }
        while self.sent < self.out.len() {
            let b = &self.out[self.sent..];
            // SAFETY: writing from a valid buffer.
            let n =
                unsafe { libc::send(self.sock, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
            if n > 0 {
                self.sent += n as usize;
            } else {
                if n < 0 && !matches!(sys_errno(), libc::EAGAIN | libc::EINTR) {
                    self.failed = Some(std::io::Error::last_os_error().to_string());
                }
                break;
            }
        }
        // Never read past the peer's preamble: what follows is this side's own bytes.
        while !self.echoed && self.failed.is_none() {
            let want = if self.head_got < 8 {
                8 - self.head_got
            } else {
                (self.expect - self.data.len() as u64) as usize
            };
            if self.head_got == 8 && want == 0 {
                self.echoed = true;
                let data = std::mem::take(&mut self.data);
                self.out.extend_from_slice(&data);
                break;
            }
            let mut buf = vec![0u8; want.min(1 << 16)];
            // SAFETY: reading into a valid buffer.
            let n = unsafe { libc::recv(self.sock, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                let n = n as usize;
                if self.head_got < 8 {
                    self.head[self.head_got..self.head_got + n].copy_from_slice(&buf[..n]);
                    self.head_got += n;
                    if self.head_got == 8 && u64::from_le_bytes(self.head) != self.expect {
                        self.failed = Some("its peer sent another length than it offered".into());
                    }
                } else {
                    self.data.extend_from_slice(&buf[..n]);
                }
            } else {
                if n == 0 || !matches!(sys_errno(), libc::EAGAIN | libc::EINTR) {
                    self.failed = Some("the peer closed".into());
                }
                break;
            }
        }
    }

    /// Whether this side's exchange completed.
    fn succeeded(&self) -> bool {
        self.failed.is_none() && self.done()
    }

    /// Puts the new connection in place of the stand-in at each of its descriptors when
    /// both sides' exchanges completed (`peer_ok`: the peer's), else leaves the stand-ins.
    fn finish(self, peer_ok: bool) {
        let fd = self.fds[0];
        let why = match &self.failed {
            Some(e) => Some(e.clone()),
            None if !self.done() => Some("timed out".to_string()),
            None if !peer_ok => Some("the other rank's side failed".to_string()),
            None => None,
        };
        if let Some(e) = why {
            warn!(
                fd,
                peer = self.peer,
                "a connection to rank {}: {e}; it stays as it came back (reset or closed)",
                self.peer
            );
            sys::close(self.sock);
            return;
        }
        if self.shut_sending {
            // SAFETY: our socket, after its bytes.
            unsafe { libc::shutdown(self.sock, libc::SHUT_WR) };
        }
        if self.nodelay {
            let one: libc::c_int = 1;
            // SAFETY: TCP_NODELAY with one int on our socket.
            unsafe {
                libc::setsockopt(
                    self.sock,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&one as *const libc::c_int).cast(),
                    4,
                )
            };
        }
        let mut placed = true;
        for &at in &self.fds {
            // SAFETY: fcntl and dup3 on our socket and a stand-in at the program's number.
            placed &= unsafe {
                let fl = libc::fcntl(at, libc::F_GETFL);
                let cloexec = libc::fcntl(at, libc::F_GETFD) & libc::FD_CLOEXEC != 0;
                fl >= 0
                    && libc::fcntl(self.sock, libc::F_SETFL, fl & libc::O_NONBLOCK) == 0
                    && libc::dup3(self.sock, at, if cloexec { libc::O_CLOEXEC } else { 0 }) == at
            };
        }
        sys::close(self.sock);
        if placed {
            info!(
                fd,
                peer = self.peer,
                "a connection to rank {} comes back connected",
                self.peer
            );
        } else {
            warn!(
                fd,
                "cannot put the connection to rank {} in place at every descriptor", self.peer
            );
        }
    }
}

/// Every connection's exchange, in one poll loop (no rank waits on one connection while
/// its peer waits on another), for at most 60 s.
fn exchange_all(states: &mut [&mut Exchange]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for x in states.iter_mut() {
            x.step();
        }
        if states.iter().all(|x| x.done()) || Instant::now() >= deadline {
            return;
        }
        let mut pfds: Vec<libc::pollfd> = states
            .iter()
            .filter(|x| !x.done())
            .map(|x| libc::pollfd {
                fd: x.sock,
                events: if x.sent < x.out.len() {
                    libc::POLLOUT | libc::POLLIN
                } else {
                    libc::POLLIN
                },
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfds.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
    }
}
