//! Job-wide reduces as the runtime's checkpoint threads use them: ranks agreeing on
//! sequence numbers (MAX) and message counts (SUM), and waiting for each other at
//! barriers, through a real coordinator daemon.

mod support;

use mana_coordinator::protocol::ProtoError;
use mana_coordinator::{ClientError, FromCoord, ReduceEntry, ReduceError, ReduceOp, ToCoord};
use std::time::Duration;
use support::*;

/// A read timeout short enough to see a rank still waiting (only used where waiting
/// longer would pass the test just the same).
const BLOCKED: Duration = Duration::from_millis(100);

#[test]
fn ranks_reduce_max_and_sum_to_one_sorted_result() {
    let c = Coord::start("reduce", &[]);
    let mut ranks = c.ranks::<3>();
    let results: Vec<(Vec<ReduceEntry>, Vec<ReduceEntry>)> = std::thread::scope(|s| {
        let threads: Vec<_> = ranks
            .iter_mut()
            .map(|p| {
                s.spawn(move || {
                    let r = i64::from(p.info.rank);
                    let u = u64::from(p.info.rank);
                    // Unsorted, overlapping on [1,0,0] and [7,7,7], one key per rank.
                    let seqs = vec![([7, 7, 7], -r), ([1, 0, 0], 10 * r), ([0, u, 0], r)];
                    let mut counts = vec![([u64::MAX, 0, 0], i64::MAX), ([2, 0, 0], r + 1)];
                    if r == 1 {
                        counts.push(([3, 1, 4], -5));
                    }
                    let seqs = p.conn.reduce("ckpt1/seq", ReduceOp::Max, seqs).unwrap();
                    let counts = p
                        .conn
                        .reduce("ckpt1/counts", ReduceOp::Sum, counts)
                        .unwrap();
                    (seqs, counts)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });

    let seqs = vec![
        ([0, 0, 0], 0),
        ([0, 1, 0], 1),
        ([0, 2, 0], 2),
        ([1, 0, 0], 20),
        ([7, 7, 7], 0),
    ];
    let counts = vec![
        ([2, 0, 0], 1 + 2 + 3),
        ([3, 1, 4], -5),
        ([u64::MAX, 0, 0], i64::MAX.wrapping_mul(3)),
    ];
    for (rank, got) in results.into_iter().enumerate() {
        assert_eq!(got, (seqs.clone(), counts.clone()), "rank {rank}");
    }
}

/// Rank 0 waits in "a" and then in "b"; "b" completes first, "a" when rank 2 comes.
#[test]
fn pending_keys_complete_independently() {
    let c = Coord::start("reducekeys", &[]);
    let [mut r0, mut r1, mut r2] = c.ranks::<3>();
    let a = || contribution("a", ReduceOp::Sum, vec![([1, 0, 0], 1)]);
    let b = |rank: i64| contribution("b", ReduceOp::Max, vec![([1, 0, 0], 7 * rank)]);
    r0.send(a());
    r0.send(b(0));
    r1.send(b(1));
    r1.send(a());
    assert_eq!(
        r2.conn
            .reduce("b", ReduceOp::Max, vec![([1, 0, 0], 14)])
            .unwrap(),
        [([1, 0, 0], 14)]
    );
    for p in [&mut r0, &mut r1] {
        assert_eq!(
            p.conn.wait_reduced("b").unwrap(),
            [([1, 0, 0], 14)],
            "rank {}: \"b\" comes first",
            p.info.rank
        );
    }
    assert_eq!(
        r2.conn
            .reduce("a", ReduceOp::Sum, vec![([1, 0, 0], 1)])
            .unwrap(),
        [([1, 0, 0], 3)]
    );
    for p in [&mut r0, &mut r1] {
        assert_eq!(p.conn.wait_reduced("a").unwrap(), [([1, 0, 0], 3)]);
    }
}

#[test]
fn barrier_holds_everyone_until_the_last_rank_arrives() {
    let c = Coord::start("barrier", &[]);
    let [mut r0, mut r1, mut r2] = c.ranks::<3>();
    for p in [&mut r0, &mut r1] {
        p.conn.set_read_timeout(Some(BLOCKED)).unwrap();
        let e = p.conn.barrier("ckpt1/drained").unwrap_err();
        assert!(timed_out(&e), "rank {}: {e:?}", p.info.rank);
        p.conn.set_read_timeout(Some(DEADLINE)).unwrap();
    }
    // The coordinator has now seen both arrivals, and still holds them.
    sync_barrier(&mut [&mut r0, &mut r1, &mut r2], "sync1");

    r2.conn.barrier("ckpt1/drained").unwrap();
    for p in [&mut r0, &mut r1] {
        assert_eq!(p.conn.wait_reduced("ckpt1/drained").unwrap(), []);
    }
}

#[test]
fn rank_dying_during_a_reduce_fails_it_for_the_others() {
    let c = Coord::start("reducedie", &[]);
    let [mut r0, mut r1, mut r2] = c.ranks::<3>();
    let key = "ckpt3/seq";
    r0.send(contribution(key, ReduceOp::Max, vec![([0, 0, 0], 1)]));
    r1.send(contribution(key, ReduceOp::Max, vec![([0, 0, 0], 2)]));
    sync_barrier(&mut [&mut r0, &mut r1, &mut r2], "sync1");
    drop(r2); // rank 2 dies before reaching the reduce
    for p in [&mut r0, &mut r1] {
        assert_failed(
            p.conn.wait_reduced(key),
            key,
            "process 3 (testhost:100002 rank 2) disconnected before contributing",
        );
    }

    // The survivors go on reducing among themselves.
    let [seq0, seq1] = std::thread::scope(|s| {
        [&mut r0, &mut r1]
            .map(|p| s.spawn(move || p.conn.reduce("after", ReduceOp::Sum, vec![([0, 0, 0], 1)])))
            .map(|t| t.join().unwrap().unwrap())
    });
    assert_eq!(seq0, [([0, 0, 0], 2)]);
    assert_eq!(seq1, seq0);
}

#[test]
fn op_mismatch_fails_the_reduce_for_every_rank() {
    let c = Coord::start("reduceop", &[]);
    let [mut r0, mut r1, mut r2] = c.ranks::<3>();
    let key = "ckpt1/counts";
    r0.send(contribution(key, ReduceOp::Max, vec![([0, 0, 0], 1)]));
    sync_barrier(&mut [&mut r0, &mut r1, &mut r2], "sync1");
    let reason = "process 2 (testhost:100001 rank 1) asked for SUM but \
                  process 1 (testhost:100000 rank 0) asked for MAX";
    assert_failed(
        r1.conn.reduce(key, ReduceOp::Sum, vec![([0, 0, 0], 1)]),
        key,
        reason,
    );
    assert_failed(r0.conn.wait_reduced(key), key, reason);
    // Rank 2 comes later and learns the same instead of waiting forever.
    assert_failed(
        r2.conn.reduce(key, ReduceOp::Max, vec![([0, 0, 0], 1)]),
        key,
        reason,
    );
    // Once everyone was told, the key is forgotten: it can be used again.
    sync_barrier(&mut [&mut r0, &mut r1, &mut r2], key);
}

#[test]
fn contributing_twice_fails_the_reduce() {
    let c = Coord::start("reducetwice", &[]);
    let [mut r0, mut r1] = c.ranks::<2>();
    r0.conn.set_read_timeout(Some(BLOCKED)).unwrap();
    let e = r0.conn.barrier("b").unwrap_err();
    assert!(timed_out(&e), "{e:?}");
    r0.conn.set_read_timeout(Some(DEADLINE)).unwrap();
    let reason = "process 1 (testhost:100000 rank 0) contributed twice";
    assert_failed(r0.conn.barrier("b").map(|()| vec![]), "b", reason);
    assert_failed(r1.conn.barrier("b").map(|()| vec![]), "b", reason);
}

/// A message for the coordinator during a reduce is handed to the caller, who can go on
/// waiting for the result.
#[test]
fn kill_during_a_reduce_is_not_lost() {
    let c = Coord::start("reducekill", &[]);
    let [mut r0, mut r1] = c.ranks::<2>();
    r0.send(contribution("k", ReduceOp::Sum, vec![([0, 0, 0], 1)]));
    let out = c.mana_status(&["--kill"]);
    assert!(out.status.success(), "{}", show(&out));
    for p in [&mut r0, &mut r1] {
        let got = if p.info.rank == 0 {
            p.conn.wait_reduced("k")
        } else {
            p.conn.reduce("k", ReduceOp::Sum, vec![([0, 0, 0], 1)])
        };
        assert!(
            matches!(got, Err(ReduceError::Interrupted(FromCoord::Kill))),
            "rank {}: {got:?}",
            p.info.rank
        );
    }
    for p in [&mut r0, &mut r1] {
        assert_eq!(p.conn.wait_reduced("k").unwrap(), [([0, 0, 0], 2)]);
    }
}

/// What [`mana_coordinator::Connection::reduce`] sends, for a rank that must not wait yet.
fn contribution(key: &str, op: ReduceOp, entries: Vec<ReduceEntry>) -> ToCoord {
    ToCoord::Reduce {
        key: key.into(),
        op,
        entries,
    }
}

fn timed_out(e: &ReduceError) -> bool {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    matches!(e, ReduceError::Client(ClientError::Proto { source: ProtoError::Io(io), .. })
        if matches!(io.kind(), WouldBlock | TimedOut))
}

fn assert_failed(got: Result<Vec<ReduceEntry>, ReduceError>, key: &str, reason: &str) {
    match got {
        Err(ReduceError::Failed { key: k, reason: r }) => {
            assert_eq!((k.as_str(), r.as_str()), (key, reason));
        }
        other => panic!("expected reduce {key:?} to fail ({reason}), got {other:?}"),
    }
}
