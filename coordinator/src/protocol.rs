//! Coordinator wire protocol: every message is a `u32` little-endian length followed by
//! an `rmp-serde` encoded [`ToCoord`] or [`FromCoord`]. Every connection starts with the
//! mutual authentication of [`crate::auth`] (`Greet` → `Challenge` → `Auth`), then
//! `Register(role)`; a failed proof gets [`FromCoord::Error`] and the connection is
//! closed. [`ToCoord::Hello`] (which carried the secret itself) is the older protocol's
//! first message, refused with a message saying so.
//!
//! Besides checkpoint rounds, processes can reduce values across the whole job
//! ([`ToCoord::Reduce`], answered by [`FromCoord::Reduced`] or [`FromCoord::ReduceFailed`]):
//! the runtime uses it during a checkpoint to agree on collective sequence numbers and
//! message counts, and, with no entries, as a barrier.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{Read, Write};

/// Largest message accepted (a corrupt length must not make us allocate gigabytes).
pub const MAX_MESSAGE: u32 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A checkpointed process (the checkpoint thread of `libmana`).
    Process(ProcessInfo),
    /// A command (`mana_status`, `mana_launch` probing).
    Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub host: String,
    pub pid: i32,
    pub rank: u32,
    pub world_size: u32,
    pub program: String,
    /// Absolute checkpoint directory of this process.
    pub ckpt_dir: String,
    /// Newest generation this process knows to be committed (restored from, or 0).
    pub last_generation: u64,
    /// `mana_launch --interval`: asks the coordinator for timed checkpoints if it has none.
    pub interval_secs: Option<u64>,
    /// Highest generation number present in `ckpt_dir` (any job's): the next generation
    /// is numbered above it, so no number is ever used twice in a directory.
    #[serde(default)]
    pub dir_generation: u64,
}

/// One value of a reduce: a key chosen by the runtime (e.g. communicator, peer, tag)
/// and its value.
pub type ReduceEntry = ([u64; 3], i64);

/// How a reduce combines the values contributed under equal keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReduceOp {
    /// The largest value.
    Max,
    /// The sum, wrapping on overflow.
    Sum,
}

impl ReduceOp {
    /// `a` and `b` combined: the larger, or the wrapping sum.
    pub fn combine(self, a: i64, b: i64) -> i64 {
        match self {
            ReduceOp::Max => a.max(b),
            ReduceOp::Sum => a.wrapping_add(b),
        }
    }
}

impl fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReduceOp::Max => "MAX",
            ReduceOp::Sum => "SUM",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToCoord {
    Hello {
        secret: String,
        role: Role,
    },
    // ---- from processes ----
    /// The image of `generation` is written and synced.
    Written {
        generation: u64,
        entry: mana_image::ManifestEntry,
    },
    /// This process could not write its image.
    CheckpointFailed {
        generation: u64,
        reason: String,
    },
    /// (Leader only) the generation's MANIFEST is written and LATEST renamed.
    CommitDone {
        generation: u64,
        dir: String,
    },
    CommitFailed {
        generation: u64,
        reason: String,
    },
    /// This process's contribution to the job-wide reduce `key`. Once every registered
    /// process has contributed, each gets [`FromCoord::Reduced`]; a barrier is a reduce
    /// with no entries. A process contributes once per key, and every contribution
    /// must name the same `op`.
    Reduce {
        key: String,
        op: ReduceOp,
        entries: Vec<ReduceEntry>,
    },
    // ---- from commands ----
    /// Checkpoint every process; reply when committed. `kill_after` ends the job after.
    Checkpoint {
        kill_after: bool,
    },
    List,
    /// Kill every process (the coordinator keeps running).
    Kill,
    /// Kill every process and stop the coordinator.
    Quit,
    // ---- handshake (crate::auth) ----
    /// First message of a connection: the client's protocol version and nonce.
    Greet {
        version: u32,
        nonce: crate::auth::Nonce,
    },
    /// The client's proof of the secret, after it checked the coordinator's.
    Auth {
        proof: crate::auth::Proof,
    },
    /// Who the (authenticated) client is: answered by `Welcome` or the command's reply.
    Register(Role),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRow {
    pub id: u32,
    pub host: String,
    pub pid: i32,
    pub rank: u32,
    pub program: String,
    pub state: String,
    pub last_generation: u64,
    /// The process's checkpoint directory (where `LATEST` tells what was committed).
    #[serde(default)]
    pub ckpt_dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromCoord {
    // ---- to processes ----
    Welcome {
        id: u32,
    },
    /// Stop, write the image of `generation` into `gen-NNNNNN/` of your checkpoint dir.
    Checkpoint {
        generation: u64,
    },
    /// (To the leader) every process has written: write MANIFEST and rename LATEST.
    Commit {
        manifest: mana_image::Manifest,
    },
    /// The generation is committed (or aborted, `committed == false`): resume.
    Resume {
        generation: u64,
        committed: bool,
        exit: bool,
    },
    /// End the process now.
    Kill,
    /// Every registered process contributed to `key`: the union of their entries, equal
    /// keys combined with the reduce's op, sorted by key.
    Reduced {
        key: String,
        entries: Vec<ReduceEntry>,
    },
    /// The reduce `key` cannot complete (a process left before it did, asked for a
    /// different op, or contributed twice); `reason` is one sentence naming the process.
    ReduceFailed {
        key: String,
        reason: String,
    },
    // ---- to commands ----
    Done {
        message: String,
    },
    Checkpointed {
        generation: u64,
        dir: String,
    },
    Rows(Vec<ProcessRow>),
    Error(String),
    /// Answer to `Greet`: the coordinator's version, nonce and proof of the secret.
    Challenge {
        version: u32,
        nonce: crate::auth::Nonce,
        proof: crate::auth::Proof,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(u32),
    #[error("undecodable message: {0}")]
    Decode(String),
}

/// One message as it goes on the wire (length, then body), e.g. to send the same
/// message to many peers. A body over [`MAX_MESSAGE`], which [`recv`] would refuse, is
/// refused here.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    let body = rmp_serde::to_vec(msg).map_err(|e| ProtoError::Decode(e.to_string()))?;
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    if len > MAX_MESSAGE {
        return Err(ProtoError::TooLarge(len));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Writes a frame made by [`encode`].
pub fn send_frame<W: Write>(w: &mut W, frame: &[u8]) -> Result<(), ProtoError> {
    w.write_all(frame)?;
    w.flush()?;
    Ok(())
}

pub fn send<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtoError> {
    send_frame(w, &encode(msg)?)
}

pub fn recv<R: Read, T: for<'de> Deserialize<'de>>(r: &mut R) -> Result<T, ProtoError> {
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len) {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ProtoError::Closed
        } else {
            ProtoError::Io(e)
        });
    }
    let n = u32::from_le_bytes(len);
    if n > MAX_MESSAGE {
        return Err(ProtoError::TooLarge(n));
    }
    let mut body = vec![0u8; n as usize];
    r.read_exact(&mut body)?;
    rmp_serde::from_slice(&body).map_err(|e| ProtoError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        send(&mut buf, &ToCoord::Checkpoint { kill_after: true }).unwrap();
        send(&mut buf, &ToCoord::List).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            recv::<_, ToCoord>(&mut r).unwrap(),
            ToCoord::Checkpoint { kill_after: true }
        );
        assert_eq!(recv::<_, ToCoord>(&mut r).unwrap(), ToCoord::List);
        assert!(matches!(
            recv::<_, ToCoord>(&mut r),
            Err(ProtoError::Closed)
        ));
        let huge = (MAX_MESSAGE + 1).to_le_bytes();
        assert!(matches!(
            recv::<_, ToCoord>(&mut &huge[..]),
            Err(ProtoError::TooLarge(_))
        ));
    }

    #[test]
    fn reduce_messages_round_trip() {
        let entries = vec![([0, 1, u64::MAX], i64::MIN), ([7, 0, 0], 42)];
        let mut buf = Vec::new();
        for op in [ReduceOp::Max, ReduceOp::Sum] {
            send(
                &mut buf,
                &ToCoord::Reduce {
                    key: "ckpt7/round2/seq".into(),
                    op,
                    entries: entries.clone(),
                },
            )
            .unwrap();
        }
        send(
            &mut buf,
            &ToCoord::Reduce {
                key: "barrier".into(),
                op: ReduceOp::Max,
                entries: vec![],
            },
        )
        .unwrap();
        let replies = [
            FromCoord::Reduced {
                key: "ckpt7/round2/seq".into(),
                entries: entries.clone(),
            },
            FromCoord::ReduceFailed {
                key: "k".into(),
                reason: "process 3 (node1:4242 rank 2) disconnected before contributing".into(),
            },
        ];
        for m in &replies {
            send(&mut buf, m).unwrap();
        }

        let mut r = &buf[..];
        for op in [ReduceOp::Max, ReduceOp::Sum] {
            assert_eq!(
                recv::<_, ToCoord>(&mut r).unwrap(),
                ToCoord::Reduce {
                    key: "ckpt7/round2/seq".into(),
                    op,
                    entries: entries.clone(),
                }
            );
        }
        assert_eq!(
            recv::<_, ToCoord>(&mut r).unwrap(),
            ToCoord::Reduce {
                key: "barrier".into(),
                op: ReduceOp::Max,
                entries: vec![],
            }
        );
        for m in replies {
            assert_eq!(recv::<_, FromCoord>(&mut r).unwrap(), m);
        }
        assert!(r.is_empty());
    }

    #[test]
    fn ops_combine() {
        assert_eq!(ReduceOp::Max.combine(-3, 2), 2);
        assert_eq!(ReduceOp::Sum.combine(-3, 2), -1);
        assert_eq!(ReduceOp::Sum.combine(i64::MAX, 1), i64::MIN, "wraps");
    }

    #[test]
    fn oversized_messages_are_refused_by_the_sender() {
        let entries = vec![([u64::MAX; 3], i64::MIN); MAX_MESSAGE as usize / 32];
        let msg = FromCoord::Reduced {
            key: "k".into(),
            entries,
        };
        assert!(matches!(encode(&msg), Err(ProtoError::TooLarge(_))));
        let mut sink = Vec::new();
        assert!(matches!(
            send(&mut sink, &msg),
            Err(ProtoError::TooLarge(_))
        ));
        assert!(sink.is_empty(), "nothing written");
    }
}
