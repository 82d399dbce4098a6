//! Coordinator wire protocol: every message is a `u32` little-endian length followed by
//! an `rmp-serde` encoded [`ToCoord`] or [`FromCoord`]. The first message on every
//! connection is [`ToCoord::Hello`] carrying the per-job secret from the status file; a
//! wrong secret gets [`FromCoord::Error`] and the connection is closed.

use serde::{Deserialize, Serialize};
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

pub fn send<W: Write, T: Serialize>(w: &mut W, msg: &T) -> Result<(), ProtoError> {
    let body = rmp_serde::to_vec(msg).map_err(|e| ProtoError::Decode(e.to_string()))?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
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
}
