//! The coordinator's front door (issue 10, item 1): every connection is held here, by one
//! thread polling non-blocking sockets, until its peer has proved the job's secret
//! ([`crate::auth`]). Until then a peer gets no thread, at most [`MAX_PENDING_FRAME`]
//! bytes of buffer, and [`HANDSHAKE_DEADLINE`] for the whole handshake (a peer sending
//! one byte every few seconds is cut off like a silent one); at most [`MAX_PENDING`]
//! such peers are held, the oldest dropped for a new one, so a flood cannot lock out a
//! client that completes its handshake in a round trip. Authenticated connections are
//! handed to the caller.

use crate::auth;
use crate::protocol::{self, FromCoord, ToCoord};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Peers held before they have proved the secret (the oldest goes for a new one).
pub const MAX_PENDING: usize = 1024;
/// Time from accept to a verified proof.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// Largest frame read before authentication (`Greet` and `Auth` are under 100 bytes).
pub const MAX_PENDING_FRAME: usize = 256;
/// Connections accepted per round of the poll loop.
const ACCEPT_BATCH: usize = 64;

enum Stage {
    Greet,
    Auth {
        client_nonce: auth::Nonce,
        server_nonce: auth::Nonce,
    },
}

struct Pending {
    stream: TcpStream,
    peer: String,
    deadline: Instant,
    stage: Stage,
    /// The frame being read: 4 length bytes, then the body (reads stop at its end, so
    /// what the client sends after `Auth` stays in the socket for the caller).
    buf: [u8; 4 + MAX_PENDING_FRAME],
    filled: usize,
}

enum Step {
    Keep,
    Drop,
    Authenticated,
}

/// Why a pending peer was let go (debug log).
fn drop_reason(stage: &Stage) -> &'static str {
    match stage {
        Stage::Greet => "before Greet",
        Stage::Auth { .. } => "before Auth",
    }
}

/// Accepts on `listener` forever, authenticating each connection against `secret`;
/// calls `admit(stream, peer)` with every authenticated one (blocking mode again).
pub fn run(
    listener: &TcpListener,
    secret: &str,
    mut admit: impl FnMut(TcpStream, String),
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut pending: Vec<Pending> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut accept_errors = 0u32;
    loop {
        let now = Instant::now();
        let timeout = pending
            .iter()
            .map(|p| p.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        fds.clear();
        fds.push(libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        fds.extend(pending.iter().map(|p| libc::pollfd {
            fd: p.stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }));
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
        let n = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timeout.as_millis().max(1) as i32,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
            continue;
        }
        // Pending peers first (entry i was polled as fds[i + 1]), then removals from the
        // back so that indexes stay valid.
        let now = Instant::now();
        let steps: Vec<Step> = pending
            .iter_mut()
            .zip(&fds[1..])
            .map(|(p, f)| {
                if f.revents != 0 {
                    advance(p, secret)
                } else if now >= p.deadline {
                    tracing::debug!(peer = %p.peer, stage = drop_reason(&p.stage),
                        "handshake deadline passed; connection closed");
                    Step::Drop
                } else {
                    Step::Keep
                }
            })
            .collect();
        for (i, step) in steps.into_iter().enumerate().rev() {
            match step {
                Step::Keep => {}
                Step::Drop => drop(pending.swap_remove(i)),
                Step::Authenticated => {
                    let p = pending.swap_remove(i);
                    if p.stream.set_nonblocking(false).is_ok() {
                        admit(p.stream, p.peer);
                    }
                }
            }
        }
        if fds[0].revents != 0 {
            // At most ACCEPT_BATCH per round, so that a flood filling the backlog cannot
            // keep this thread from the handshakes in progress.
            for _ in 0..ACCEPT_BATCH {
                match listener.accept() {
                    Ok((stream, addr)) => {
                        accept_errors = 0;
                        if stream.set_nonblocking(true).is_err() {
                            continue;
                        }
                        let _ = stream.set_nodelay(true);
                        if pending.len() >= MAX_PENDING {
                            let oldest = pending
                                .iter()
                                .enumerate()
                                .min_by_key(|(_, p)| p.deadline)
                                .map(|(i, _)| i)
                                .unwrap_or(0);
                            let gone = pending.swap_remove(oldest);
                            tracing::debug!(peer = %gone.peer, "too many unauthenticated connections; the oldest closed");
                        }
                        pending.push(Pending {
                            stream,
                            peer: addr.to_string(),
                            deadline: Instant::now() + HANDSHAKE_DEADLINE,
                            stage: Stage::Greet,
                            buf: [0; 4 + MAX_PENDING_FRAME],
                            filled: 0,
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        // e.g. out of descriptors: the pending peers' deadlines free some.
                        // Never fatal: the registered processes are served meanwhile.
                        accept_errors = accept_errors.saturating_add(1);
                        if accept_errors == 1 || accept_errors.is_power_of_two() {
                            tracing::warn!(error = %e, times = accept_errors, "accept failed");
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        break;
                    }
                }
            }
        }
    }
}

/// Reads what `p` sent; acts on a complete frame.
fn advance(p: &mut Pending, secret: &str) -> Step {
    // Read up to the end of the current frame only.
    let want = if p.filled < 4 {
        4
    } else {
        let len = u32::from_le_bytes(p.buf[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_PENDING_FRAME {
            return too_large(p, len);
        }
        4 + len
    };
    match p.stream.read(&mut p.buf[p.filled..want]) {
        Ok(0) => return Step::Drop,
        Ok(n) => p.filled += n,
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
            return Step::Keep
        }
        Err(_) => return Step::Drop,
    }
    if p.filled < 4 {
        return Step::Keep;
    }
    let len = u32::from_le_bytes(p.buf[..4].try_into().expect("4 bytes")) as usize;
    if len > MAX_PENDING_FRAME {
        return too_large(p, len);
    }
    if p.filled < 4 + len {
        return Step::Keep;
    }
    let msg: Result<ToCoord, _> = rmp_serde::from_slice(&p.buf[4..4 + len]);
    p.filled = 0;
    match (&p.stage, msg) {
        (Stage::Greet, Ok(ToCoord::Greet { version, nonce })) => {
            if version != auth::PROTOCOL_VERSION {
                refuse(p, &format!("this client speaks coordinator protocol {version}, the coordinator {}: use one MANA-rs version for the whole job", auth::PROTOCOL_VERSION));
                return Step::Drop;
            }
            let Ok(server_nonce) = auth::nonce() else {
                return Step::Drop;
            };
            let reply = FromCoord::Challenge {
                version: auth::PROTOCOL_VERSION,
                nonce: server_nonce,
                proof: auth::coordinator_proof(secret, &nonce, &server_nonce),
            };
            if !send_small(&mut p.stream, &reply) {
                return Step::Drop;
            }
            p.stage = Stage::Auth {
                client_nonce: nonce,
                server_nonce,
            };
            Step::Keep
        }
        (
            Stage::Auth {
                client_nonce,
                server_nonce,
            },
            Ok(ToCoord::Auth { proof }),
        ) => {
            if auth::client_proved(secret, server_nonce, client_nonce, &proof) {
                Step::Authenticated
            } else {
                tracing::warn!(peer = %p.peer, "refused a connection that did not prove the secret");
                refuse(p, "authentication failed");
                Step::Drop
            }
        }
        (Stage::Greet, Ok(ToCoord::Hello { .. })) => {
            tracing::warn!(peer = %p.peer, "refused a client of the older protocol (Hello with the secret)");
            refuse(p, &format!("this client speaks an older coordinator protocol (1) than the coordinator ({}): use one MANA-rs version for the whole job", auth::PROTOCOL_VERSION));
            Step::Drop
        }
        _ => {
            tracing::warn!(peer = %p.peer, "refused a connection that did not follow the handshake");
            Step::Drop
        }
    }
}

/// A frame over the pre-authentication limit: dropped, with a line for a client of the
/// older protocol (whose first message, `Hello`, carried its whole description).
fn too_large(p: &mut Pending, len: usize) -> Step {
    tracing::debug!(peer = %p.peer, len, "unauthenticated frame over the limit; connection closed");
    if matches!(p.stage, Stage::Greet) {
        refuse(p, &format!("the coordinator refused a first message of {len} bytes before authentication: a client of an older MANA-rs (coordinator protocol 1, this one speaks {})? use one version for the whole job", auth::PROTOCOL_VERSION));
    }
    Step::Drop
}

/// Sends a small reply on a non-blocking socket; `false` if it did not go out at once.
fn send_small(stream: &mut TcpStream, msg: &FromCoord) -> bool {
    match protocol::encode(msg) {
        Ok(frame) => stream.write(&frame).is_ok_and(|n| n == frame.len()),
        Err(_) => false,
    }
}

fn refuse(p: &mut Pending, why: &str) {
    let _ = send_small(&mut p.stream, &FromCoord::Error(why.into()));
}
