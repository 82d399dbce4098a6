//! Address ranges that belong to the runtime's transient state (the write arena) and are
//! never saved. Fixed-size and lock-free so the checkpoint thread can consult it while
//! the process is stopped.

use core::sync::atomic::{AtomicU64, Ordering};

const SLOTS: usize = 16;
static START: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
static END: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];

pub fn add(start: u64, end: u64) {
    for i in 0..SLOTS {
        if START[i].load(Ordering::Relaxed) == 0 {
            END[i].store(end, Ordering::Relaxed);
            START[i].store(start, Ordering::Release);
            return;
        }
    }
}

pub fn remove(start: u64) {
    for s in &START {
        if s.load(Ordering::Relaxed) == start {
            s.store(0, Ordering::Release);
        }
    }
}

pub fn clear() {
    for s in &START {
        s.store(0, Ordering::Release);
    }
}

/// Calls `f` with each piece of `[start, end)` that is not excluded.
pub fn for_each_kept(start: u64, end: u64, mut f: impl FnMut(u64, u64)) {
    let mut cuts: [(u64, u64); SLOTS] = [(0, 0); SLOTS];
    let mut n = 0;
    for i in 0..SLOTS {
        let s = START[i].load(Ordering::Acquire);
        if s != 0 {
            let e = END[i].load(Ordering::Relaxed);
            if s < end && e > start {
                cuts[n] = (s.max(start), e.min(end));
                n += 1;
            }
        }
    }
    cuts[..n].sort_unstable();
    let mut cur = start;
    for &(s, e) in &cuts[..n] {
        if s > cur {
            f(cur, s);
        }
        cur = cur.max(e);
    }
    if cur < end {
        f(cur, end);
    }
}
