//! Job-wide reduces ([`ToCoord::Reduce`](crate::protocol::ToCoord::Reduce)): during a
//! checkpoint the ranks agree on collective sequence numbers and message counts (MAX and
//! SUM over keyed values), and wait for each other (a reduce with no entries).
//!
//! A key completes when every registered process has contributed to it; each
//! contributor then gets the same [`FromCoord::Reduced`] and the key is forgotten. A key
//! fails when two contributions disagree on the op, a process contributes twice, or a
//! process leaves before the key completed; every contributor gets
//! [`FromCoord::ReduceFailed`]. The processes that had not contributed yet would wait
//! forever for the others, so a failed key is remembered (its reason and who still owes
//! a contribution) until each of them has asked and been told, or has left.
//!
//! This module only keeps the books: it says what to send to whom, the server sends.
//! A process is an id (the coordinator's connection id), and "registered" is the set of
//! process connections the caller passes in.

use crate::protocol::{self, FromCoord, ReduceEntry, ReduceOp};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

/// One message for some processes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    /// Ids, ascending.
    pub to: Vec<u32>,
    pub msg: FromCoord,
}

/// Every key that is pending or failed (completed keys leave nothing behind).
#[derive(Default)]
pub(crate) struct Reduces {
    keys: HashMap<String, Key>,
}

enum Key {
    Pending(Pending),
    Failed(Failed),
}

struct Pending {
    op: ReduceOp,
    /// The first contributor, who set `op` (named if another disagrees).
    op_from: String,
    /// Always registered processes: a process leaving fails every pending key.
    contributors: BTreeSet<u32>,
    values: BTreeMap<[u64; 3], i64>,
    started: Instant,
}

struct Failed {
    reason: String,
    /// Processes registered when the key failed that had not contributed to it.
    owed: BTreeSet<u32>,
}

impl Pending {
    fn new(op: ReduceOp, who: &str) -> Pending {
        Pending {
            op,
            op_from: who.to_string(),
            contributors: BTreeSet::new(),
            values: BTreeMap::new(),
            started: Instant::now(),
        }
    }

    fn add(&mut self, entries: Vec<ReduceEntry>) {
        for (k, v) in entries {
            self.values
                .entry(k)
                .and_modify(|acc| *acc = self.op.combine(*acc, v))
                .or_insert(v);
        }
    }
}

impl Reduces {
    /// Process `id` (described as `who`) contributes to `key`. `registered` are the ids
    /// of every registered process, `id` among them. Returns what to send, if anything
    /// is due now.
    pub fn contribute(
        &mut self,
        id: u32,
        who: &str,
        key: String,
        op: ReduceOp,
        entries: Vec<ReduceEntry>,
        registered: impl ExactSizeIterator<Item = u32>,
    ) -> Option<Reply> {
        let mut pending = match self.keys.remove(&key) {
            Some(Key::Failed(mut f)) => {
                f.owed.remove(&id);
                let reason = f.reason.clone();
                if !f.owed.is_empty() {
                    self.keys.insert(key.clone(), Key::Failed(f));
                }
                tracing::debug!(id, key, "contribution to a failed reduce");
                return Some(Reply {
                    to: vec![id],
                    msg: FromCoord::ReduceFailed { key, reason },
                });
            }
            Some(Key::Pending(p)) => p,
            None => Pending::new(op, who),
        };
        if !pending.contributors.insert(id) {
            let reason = format!("{who} contributed twice");
            return Some(self.fail(key, pending, reason, registered));
        }
        if pending.op != op {
            let reason = format!(
                "{who} asked for {op} but {} asked for {}",
                pending.op_from, pending.op
            );
            return Some(self.fail(key, pending, reason, registered));
        }
        pending.add(entries);
        tracing::trace!(id, key, "reduce contribution");
        if pending.contributors.len() < registered.len() {
            self.keys.insert(key, Key::Pending(pending));
            return None;
        }
        Some(complete(key, pending))
    }

    /// Process `id` (described as `who`) left; `registered` are the processes still
    /// registered. Fails every pending key (`id` can no longer contribute, or receive a
    /// result it contributed to) and forgets what `id` owed to failed ones.
    pub fn disconnected(
        &mut self,
        id: u32,
        who: &str,
        registered: impl Iterator<Item = u32> + Clone,
    ) -> Vec<Reply> {
        let mut replies = Vec::new();
        for (key, state) in std::mem::take(&mut self.keys) {
            match state {
                Key::Pending(mut p) => {
                    let reason = if p.contributors.remove(&id) {
                        format!("{who} disconnected before the reduce completed")
                    } else {
                        format!("{who} disconnected before contributing")
                    };
                    replies.push(self.fail(key, p, reason, registered.clone()));
                }
                Key::Failed(mut f) => {
                    f.owed.remove(&id);
                    if !f.owed.is_empty() {
                        self.keys.insert(key, Key::Failed(f));
                    }
                }
            }
        }
        replies
    }

    /// Forgets every key (a checkpoint round failed: its processes were told with
    /// `Resume`, and a retry reuses the generation number, hence the same key names —
    /// a contribution left pending by the failed round would be mixed into the retry's).
    pub fn clear(&mut self) {
        if !self.keys.is_empty() {
            tracing::debug!(
                keys = self.keys.len(),
                "forgetting the reduces of a failed round"
            );
        }
        self.keys.clear();
    }

    /// Keys pending or failed.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.len()
    }

    /// Ends pending `key`: its contributors are told why, and the other `registered`
    /// processes will be when they contribute.
    fn fail(
        &mut self,
        key: String,
        p: Pending,
        reason: String,
        registered: impl Iterator<Item = u32>,
    ) -> Reply {
        tracing::warn!(
            key,
            contributors = p.contributors.len(),
            "reduce failed: {reason}"
        );
        let owed: BTreeSet<u32> = registered
            .filter(|id| !p.contributors.contains(id))
            .collect();
        if !owed.is_empty() {
            self.keys.insert(
                key.clone(),
                Key::Failed(Failed {
                    reason: reason.clone(),
                    owed,
                }),
            );
        }
        Reply {
            to: p.contributors.into_iter().collect(),
            msg: FromCoord::ReduceFailed { key, reason },
        }
    }
}

/// Everyone contributed: the combined entries (a `BTreeMap` iterates sorted by key).
fn complete(key: String, p: Pending) -> Reply {
    let to: Vec<u32> = p.contributors.into_iter().collect();
    let entries: Vec<ReduceEntry> = p.values.into_iter().collect();
    let n = entries.len();
    let msg = FromCoord::Reduced {
        key: key.clone(),
        entries,
    };
    if let Err(e) = protocol::encode(&msg) {
        let reason = format!("the result ({n} entries) cannot be sent: {e}");
        tracing::warn!(key, "reduce failed: {reason}");
        return Reply {
            to,
            msg: FromCoord::ReduceFailed { key, reason },
        };
    }
    tracing::debug!(
        key,
        processes = to.len(),
        entries = n,
        elapsed_us = p.started.elapsed().as_micros() as u64,
        "reduce complete"
    );
    Reply { to, msg }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [u32; 3] = [1, 2, 3];

    fn who(id: u32) -> String {
        format!("process {id} (h:{id} rank {})", id - 1)
    }

    fn contribute(
        r: &mut Reduces,
        id: u32,
        key: &str,
        op: ReduceOp,
        entries: Vec<ReduceEntry>,
        registered: &[u32],
    ) -> Option<Reply> {
        r.contribute(
            id,
            &who(id),
            key.into(),
            op,
            entries,
            registered.iter().copied(),
        )
    }

    fn failed(to: &[u32], key: &str, reason: &str) -> Option<Reply> {
        Some(Reply {
            to: to.to_vec(),
            msg: FromCoord::ReduceFailed {
                key: key.into(),
                reason: reason.into(),
            },
        })
    }

    #[test]
    fn combines_overlapping_keys_sorted_once_everyone_contributed() {
        let mut r = Reduces::default();
        let max = ReduceOp::Max;
        assert_eq!(
            contribute(
                &mut r,
                2,
                "m",
                max,
                vec![([2, 0, 0], 5), ([1, 9, 9], -1)],
                &ALL
            ),
            None
        );
        assert_eq!(
            contribute(
                &mut r,
                1,
                "m",
                max,
                vec![([2, 0, 0], 7), ([1, 9, 9], -4)],
                &ALL
            ),
            None
        );
        let done = contribute(&mut r, 3, "m", max, vec![([0, 0, 1], 0)], &ALL);
        assert_eq!(
            done,
            Some(Reply {
                to: ALL.to_vec(),
                msg: FromCoord::Reduced {
                    key: "m".into(),
                    entries: vec![([0, 0, 1], 0), ([1, 9, 9], -1), ([2, 0, 0], 7)],
                },
            })
        );
        assert_eq!(r.len(), 0, "a completed key leaves nothing behind");

        let sum = ReduceOp::Sum;
        let e = |v| vec![([4, 4, 4], v), ([4, 4, 4], 1)];
        assert_eq!(contribute(&mut r, 1, "s", sum, e(i64::MAX), &ALL), None);
        assert_eq!(contribute(&mut r, 2, "s", sum, e(10), &ALL), None);
        let Some(Reply {
            msg: FromCoord::Reduced { entries, .. },
            ..
        }) = contribute(&mut r, 3, "s", sum, vec![], &ALL)
        else {
            panic!("must complete")
        };
        assert_eq!(entries, [([4, 4, 4], i64::MAX.wrapping_add(12))]);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_lone_process_completes_at_once() {
        let mut r = Reduces::default();
        let done = contribute(&mut r, 7, "b", ReduceOp::Max, vec![], &[7]);
        assert_eq!(
            done,
            Some(Reply {
                to: vec![7],
                msg: FromCoord::Reduced {
                    key: "b".into(),
                    entries: vec![],
                },
            })
        );
    }

    #[test]
    fn op_mismatch_fails_contributors_then_latecomers() {
        let mut r = Reduces::default();
        assert_eq!(
            contribute(&mut r, 1, "k", ReduceOp::Max, vec![], &ALL),
            None
        );
        let reason =
            "process 2 (h:2 rank 1) asked for SUM but process 1 (h:1 rank 0) asked for MAX";
        assert_eq!(
            contribute(&mut r, 2, "k", ReduceOp::Sum, vec![], &ALL),
            failed(&[1, 2], "k", reason)
        );
        assert_eq!(r.len(), 1, "remembered for process 3");
        assert_eq!(
            contribute(&mut r, 3, "k", ReduceOp::Max, vec![], &ALL),
            failed(&[3], "k", reason)
        );
        assert_eq!(r.len(), 0, "everyone was told");
        // The key is free again.
        assert_eq!(
            contribute(&mut r, 1, "k", ReduceOp::Sum, vec![], &[1]).map(|r| r.to),
            Some(vec![1])
        );
    }

    #[test]
    fn contributing_twice_fails_the_key() {
        let mut r = Reduces::default();
        assert_eq!(
            contribute(&mut r, 1, "k", ReduceOp::Max, vec![], &ALL),
            None
        );
        assert_eq!(
            contribute(&mut r, 2, "k", ReduceOp::Max, vec![], &ALL),
            None
        );
        assert_eq!(
            contribute(&mut r, 2, "k", ReduceOp::Max, vec![], &ALL),
            failed(&[1, 2], "k", "process 2 (h:2 rank 1) contributed twice")
        );
    }

    #[test]
    fn leaving_fails_every_pending_key_and_clears_what_it_owed() {
        let mut r = Reduces::default();
        assert_eq!(
            contribute(&mut r, 1, "a", ReduceOp::Max, vec![], &ALL),
            None
        );
        assert_eq!(
            contribute(&mut r, 3, "a", ReduceOp::Max, vec![], &ALL),
            None
        );
        assert_eq!(
            contribute(&mut r, 1, "b", ReduceOp::Sum, vec![], &ALL),
            None
        );
        assert_eq!(
            contribute(&mut r, 2, "b", ReduceOp::Sum, vec![], &ALL),
            None
        );
        let mut replies = r.disconnected(3, &who(3), [1, 2].into_iter());
        replies.sort_by_key(|r| r.to.clone());
        assert_eq!(
            replies,
            [
                Reply {
                    to: vec![1],
                    msg: FromCoord::ReduceFailed {
                        key: "a".into(),
                        reason: "process 3 (h:3 rank 2) disconnected before the reduce completed"
                            .into(),
                    },
                },
                Reply {
                    to: vec![1, 2],
                    msg: FromCoord::ReduceFailed {
                        key: "b".into(),
                        reason: "process 3 (h:3 rank 2) disconnected before contributing".into(),
                    },
                },
            ]
        );
        // Process 2 still owes "a"; once it is gone too, nothing is left.
        assert_eq!(r.len(), 1);
        assert!(r.disconnected(2, &who(2), [1].into_iter()).is_empty());
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_result_too_large_to_send_fails() {
        let mut r = Reduces::default();
        let n = protocol::MAX_MESSAGE as u64 / 16;
        let entries = (0..n)
            .map(|i| ([i, u64::MAX, u64::MAX], i64::MIN))
            .collect();
        let Some(Reply {
            to,
            msg: FromCoord::ReduceFailed { reason, .. },
        }) = contribute(&mut r, 1, "big", ReduceOp::Max, entries, &[1])
        else {
            panic!("must fail")
        };
        assert_eq!(to, [1]);
        assert!(
            reason.starts_with(&format!(
                "the result ({n} entries) cannot be sent: message of"
            )),
            "{reason}"
        );
        assert_eq!(r.len(), 0);
    }
}
