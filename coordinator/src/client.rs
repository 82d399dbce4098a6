//! Client side of the coordinator protocol, used by `mana_status`, `mana_launch`,
//! `mana_restart` and the runtime's checkpoint thread.

use crate::auth;
use crate::protocol::{self, FromCoord, ProtoError, ReduceEntry, ReduceOp, Role, ToCoord};
use crate::status::{StatusError, StatusFile};
use std::fmt;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// How long one connection attempt (per resolved address) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the coordinator may take to answer `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// " (status file F)" when the status file is known, for messages.
#[derive(Debug, Clone, Default)]
pub struct FileNote(pub Option<PathBuf>);

impl fmt::Display for FileNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(p) => write!(f, " (status file {})", p.display()),
            None => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("no coordinator reachable at {addr}{file}: {reason}")]
    Unreachable {
        addr: String,
        file: FileNote,
        reason: String,
    },
    #[error("coordinator at {addr} rejected the secret from {}", file.0.as_ref().map_or("the status file".to_string(), |p| p.display().to_string()))]
    Rejected { addr: String, file: FileNote },
    /// What answers at the address did not prove the job's secret: not this job's
    /// coordinator (another program on a freed port, or a coordinator of another job).
    #[error("the coordinator at {addr}{file} did not prove the job's secret: the status file is stale or another program holds that port (nothing was sent to it)")]
    Impostor { addr: String, file: FileNote },
    /// The coordinator answered with an error (its message is already a full sentence).
    #[error("{message}")]
    Refused { addr: String, message: String },
    #[error("coordinator at {addr}{file}: {source}")]
    Proto {
        addr: String,
        file: FileNote,
        #[source]
        source: ProtoError,
    },
}

/// Why [`Connection::reduce`] (or [`Connection::barrier`]) returned without a result.
#[derive(Debug, thiserror::Error)]
pub enum ReduceError {
    /// The coordinator gave up on the key (its reason names the process at fault).
    #[error("reduce {key:?} failed: {reason}")]
    Failed { key: String, reason: String },
    /// The coordinator sent something else first (e.g. `Kill`); the reduce is still
    /// pending: act on the message, then [`Connection::wait_reduced`] if still wanted.
    #[error("the coordinator sent {0:?} while a reduce was pending")]
    Interrupted(FromCoord),
    /// The connection failed, or the read timeout passed (the reduce is still pending).
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// One authenticated connection to the coordinator.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    addr: String,
    file: FileNote,
}

impl Connection {
    /// Connects to the coordinator `status` names, authenticates both ways
    /// ([`crate::auth`]), registers as `role` and returns the first reply (`Welcome{id}` for a process, `Done` for a command).
    pub fn connect(
        status: &StatusFile,
        role: Role,
    ) -> Result<(Connection, FromCoord), ClientError> {
        Self::connect_noted(status, role, FileNote(None))
    }

    /// Reads the status file at `path`, then [`Connection::connect`]; errors name the file.
    pub fn open(path: &Path, role: Role) -> Result<(Connection, FromCoord), ClientError> {
        let status = StatusFile::read(path)?;
        Self::connect_noted(&status, role, FileNote(Some(path.to_path_buf())))
    }

    /// [`Connection::open`], with `watch` holding the connection's descriptor from the
    /// moment its socket exists (-1 again if it is closed on failure). For a process that
    /// must tell its own descriptors from the application's at any instant (the runtime: a
    /// checkpoint may be writing an image while it connects). The caller sets `watch` back
    /// to -1 after dropping the connection.
    pub fn open_watched(
        path: &Path,
        role: Role,
        watch: &AtomicI32,
    ) -> Result<(Connection, FromCoord), ClientError> {
        let status = StatusFile::read(path)?;
        let file = FileNote(Some(path.to_path_buf()));
        let stream = connect_any(&status, Some(watch));
        Self::hello(&status, role, file, stream)
    }

    fn connect_noted(
        status: &StatusFile,
        role: Role,
        file: FileNote,
    ) -> Result<(Connection, FromCoord), ClientError> {
        Self::hello(status, role, file, connect_any(status, None))
    }

    fn hello(
        status: &StatusFile,
        role: Role,
        file: FileNote,
        stream: Result<TcpStream, String>,
    ) -> Result<(Connection, FromCoord), ClientError> {
        let addr = status.addr();
        let stream = stream.map_err(|reason| ClientError::Unreachable {
            addr: addr.clone(),
            file: file.clone(),
            reason,
        })?;
        let _ = stream.set_nodelay(true);
        let mut conn = Connection { stream, addr, file };
        conn.set_read_timeout(Some(HELLO_TIMEOUT))?;
        // Mutual authentication (crate::auth): the coordinator proves the secret first.
        let client_nonce = auth::nonce().map_err(|e| conn.proto(ProtoError::Io(e)))?;
        conn.send(&ToCoord::Greet {
            version: auth::PROTOCOL_VERSION,
            nonce: client_nonce,
        })?;
        let reply = match conn.recv()? {
            FromCoord::Challenge {
                nonce: server_nonce,
                proof,
                ..
            } => {
                if !auth::coordinator_proved(&status.secret, &client_nonce, &server_nonce, &proof) {
                    return Err(ClientError::Impostor {
                        addr: conn.addr,
                        file: conn.file,
                    });
                }
                conn.send(&ToCoord::Auth {
                    proof: auth::client_proof(&status.secret, &server_nonce, &client_nonce),
                })?;
                conn.send(&ToCoord::Register(role))?;
                conn.recv()?
            }
            // An older coordinator refusing the handshake says so in an Error.
            FromCoord::Error(m) => FromCoord::Error(m),
            _ => {
                return Err(ClientError::Impostor {
                    addr: conn.addr,
                    file: conn.file,
                })
            }
        };
        conn.set_read_timeout(None)?;
        match reply {
            FromCoord::Error(m) if m.contains("authentication") => Err(ClientError::Rejected {
                addr: conn.addr,
                file: conn.file,
            }),
            FromCoord::Error(message) => Err(ClientError::Refused {
                addr: conn.addr,
                message,
            }),
            reply => Ok((conn, reply)),
        }
    }

    pub fn send(&mut self, msg: &ToCoord) -> Result<(), ClientError> {
        protocol::send(&mut self.stream, msg).map_err(|e| self.proto(e))
    }

    /// Blocks for the next message (or until the read timeout, an `Io` error of kind
    /// `WouldBlock`/`TimedOut`).
    pub fn recv(&mut self) -> Result<FromCoord, ClientError> {
        protocol::recv(&mut self.stream).map_err(|e| self.proto(e))
    }

    /// Sends a command and waits for its one reply; `FromCoord::Error` becomes
    /// [`ClientError::Refused`].
    pub fn request(&mut self, msg: &ToCoord) -> Result<FromCoord, ClientError> {
        self.send(msg)?;
        match self.recv()? {
            FromCoord::Error(message) => Err(ClientError::Refused {
                addr: self.addr.clone(),
                message,
            }),
            reply => Ok(reply),
        }
    }

    /// Contributes `entries` to the job-wide reduce `key` and waits until every process
    /// registered with the coordinator has: returns the union of all entries, equal keys
    /// combined with `op` (which every process must name alike), sorted by key. Each
    /// process contributes once per key; pick a fresh key per use, e.g.
    /// `ckpt7/round2/seq`. Waits as long as the read timeout allows.
    pub fn reduce(
        &mut self,
        key: &str,
        op: ReduceOp,
        entries: Vec<ReduceEntry>,
    ) -> Result<Vec<ReduceEntry>, ReduceError> {
        self.send(&ToCoord::Reduce {
            key: key.to_string(),
            op,
            entries,
        })?;
        self.wait_reduced(key)
    }

    /// Waits until every process registered with the coordinator has reached the
    /// barrier `key` (a reduce with no entries, by convention with [`ReduceOp::Max`]).
    pub fn barrier(&mut self, key: &str) -> Result<(), ReduceError> {
        self.reduce(key, ReduceOp::Max, Vec::new()).map(drop)
    }

    /// Waits for the result of the reduce `key`, already sent: after
    /// [`ReduceError::Interrupted`] or a read timeout.
    pub fn wait_reduced(&mut self, key: &str) -> Result<Vec<ReduceEntry>, ReduceError> {
        match self.recv()? {
            FromCoord::Reduced { key: k, entries } if k == key => Ok(entries),
            FromCoord::ReduceFailed { key: k, reason } if k == key => {
                Err(ReduceError::Failed { key: k, reason })
            }
            other => Err(ReduceError::Interrupted(other)),
        }
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream
            .set_read_timeout(timeout)
            .map_err(|e| self.proto(ProtoError::Io(e)))
    }

    /// A second handle on the same connection (e.g. one thread reads, another writes).
    pub fn try_clone(&self) -> Result<Connection, ClientError> {
        Ok(Connection {
            stream: self
                .stream
                .try_clone()
                .map_err(|e| self.proto(ProtoError::Io(e)))?,
            addr: self.addr.clone(),
            file: self.file.clone(),
        })
    }

    /// Closes both directions (wakes a thread blocked in [`Connection::recv`]).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// `host:port` of the coordinator.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The underlying socket (e.g. to poll it or to keep its descriptor number).
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn proto(&self, source: ProtoError) -> ClientError {
        ClientError::Proto {
            addr: self.addr.clone(),
            file: self.file.clone(),
            source,
        }
    }
}

fn connect_any(status: &StatusFile, watch: Option<&AtomicI32>) -> Result<TcpStream, String> {
    let mut last = String::from("no address to connect to");
    for a in status.socket_addrs() {
        let attempt = match watch {
            Some(w) => connect_watched(&a, w),
            None => TcpStream::connect_timeout(&a, CONNECT_TIMEOUT),
        };
        match attempt {
            Ok(s) => return Ok(s),
            Err(e) => {
                tracing::debug!(addr = %a, error = %e, "connect failed");
                last = io_reason(&e);
            }
        }
    }
    Err(last)
}

/// `TcpStream::connect_timeout`, with the socket's descriptor in `watch` from its creation
/// on (and -1 again once it is closed, on failure).
fn connect_watched(a: &SocketAddr, watch: &AtomicI32) -> std::io::Result<TcpStream> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    use std::os::fd::{AsFd, AsRawFd};
    let family = if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    watch.store(fd.as_raw_fd(), Ordering::SeqCst);
    let connected = (|| {
        match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(*a)) {
            Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
            Err(e) => return Err(std::io::Error::from(e)),
        }
        let ms = PollTimeout::try_from(CONNECT_TIMEOUT.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
        if poll(&mut fds, ms)? == 0 {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        match socket::getsockopt(&fd, sockopt::SocketError)? {
            0 => Ok(()),
            e => Err(std::io::Error::from_raw_os_error(e)),
        }
    })();
    if let Err(e) = connected {
        drop(fd);
        watch.store(-1, Ordering::SeqCst);
        return Err(e);
    }
    let stream = TcpStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// "connection refused" rather than "Connection refused (os error 111)".
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        TimedOut | WouldBlock => "connection timed out".into(),
        _ => e.to_string(),
    }
}

/// What a status file leads to.
#[derive(Debug)]
pub enum Probe {
    /// A coordinator answers and accepts the secret.
    Running(StatusFile),
    /// No status file.
    Missing,
    /// The file names a coordinator that is gone (or is unreadable/garbled).
    Stale(ClientError),
}

/// Checks whether the status file at `path` names a live coordinator that accepts its
/// secret.
pub fn probe(path: &Path) -> Probe {
    let status = match StatusFile::read(path) {
        Ok(s) => s,
        Err(StatusError::Missing(_)) => return Probe::Missing,
        Err(e) => return Probe::Stale(e.into()),
    };
    match Connection::connect_noted(&status, Role::Command, FileNote(Some(path.to_path_buf()))) {
        Ok(_) => Probe::Running(status),
        Err(e) => Probe::Stale(e),
    }
}

/// True if the status file at `path` names a live coordinator that accepts its secret.
pub fn reachable(path: &Path) -> bool {
    matches!(probe(path), Probe::Running(_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_watched_connection_is_recorded_while_it_exists() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let watch = AtomicI32::new(-1);
        let stream = connect_watched(&addr, &watch).unwrap();
        assert_eq!(watch.load(Ordering::SeqCst), stream.as_raw_fd());
        let (_peer, _) = listener.accept().unwrap();
        let flags = nix::fcntl::fcntl(stream.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        assert_eq!(flags & libc::O_NONBLOCK, 0, "the stream blocks again");
    }

    #[test]
    fn a_refused_watched_connection_leaves_nothing_recorded() {
        let addr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let watch = AtomicI32::new(-1);
        let e = connect_watched(&addr, &watch).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert_eq!(watch.load(Ordering::SeqCst), -1);
    }
}
