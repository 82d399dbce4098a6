//! Address-space bookkeeping of the lower half's arena (DESIGN.md rule 2).
//!
//! The proxy reserves one large `PROT_NONE` range and hands out pieces of it for every
//! mapping its world makes; a released piece goes back to `PROT_NONE` and to this free
//! list. This module only does the arithmetic — first fit, merging neighbours — over a
//! fixed array, because it runs inside `mmap` itself, where no allocator may be called.

/// Free ranges `[start, end)`, page-aligned, sorted by start, never adjacent (merged).
pub struct FreeList<const N: usize> {
    ranges: [[u64; 2]; N],
    len: usize,
}

impl<const N: usize> Default for FreeList<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FreeList<N> {
    pub const fn new() -> Self {
        FreeList {
            ranges: [[0; 2]; N],
            len: 0,
        }
    }

    /// Starts over with one free range.
    pub fn reset(&mut self, start: u64, end: u64) {
        self.ranges[0] = [start, end];
        self.len = usize::from(start < end);
    }

    pub fn free_ranges(&self) -> &[[u64; 2]] {
        &self.ranges[..self.len]
    }

    /// Takes `len` bytes (a multiple of the page size) from the first range that has
    /// them; their start, or `None` when no free range is large enough.
    pub fn take(&mut self, len: u64) -> Option<u64> {
        let i = (0..self.len).find(|&i| self.ranges[i][1] - self.ranges[i][0] >= len)?;
        let start = self.ranges[i][0];
        self.ranges[i][0] += len;
        if self.ranges[i][0] == self.ranges[i][1] {
            self.remove(i);
        }
        Some(start)
    }

    /// Whether all of `[start, end)` is free.
    pub fn is_free(&self, start: u64, end: u64) -> bool {
        self.ranges[..self.len]
            .iter()
            .any(|&[a, b]| a <= start && end <= b)
    }

    /// Marks `[start, end)` as used (a fixed mapping placed into the arena), splitting a
    /// free range if needed. Returns false, changing nothing, when that split finds the
    /// table full.
    pub fn claim(&mut self, start: u64, end: u64) -> bool {
        let mut i = 0;
        while i < self.len {
            let [a, b] = self.ranges[i];
            if b <= start || a >= end {
                i += 1;
                continue;
            }
            match (a < start, b > end) {
                (true, true) => {
                    if self.len == N {
                        return false;
                    }
                    self.ranges[i] = [a, start];
                    self.insert(i + 1, [end, b]);
                    return true;
                }
                (true, false) => {
                    self.ranges[i][1] = start;
                    i += 1;
                }
                (false, true) => {
                    self.ranges[i][0] = end;
                    i += 1;
                }
                (false, false) => self.remove(i),
            }
        }
        true
    }

    /// Returns `[start, end)` (which must be in use) to the free list, merging with its
    /// neighbours. Returns false if the table is full (the range is then leaked: it
    /// stays reserved and lower half, just never reused).
    pub fn give(&mut self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        let i = self.ranges[..self.len].partition_point(|r| r[0] < start);
        let joins_prev = i > 0 && self.ranges[i - 1][1] == start;
        let joins_next = i < self.len && self.ranges[i][0] == end;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[i - 1][1] = self.ranges[i][1];
                self.remove(i);
            }
            (true, false) => self.ranges[i - 1][1] = end,
            (false, true) => self.ranges[i][0] = start,
            (false, false) => {
                if self.len == N {
                    return false;
                }
                self.insert(i, [start, end]);
            }
        }
        true
    }

    fn remove(&mut self, i: usize) {
        self.ranges.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }

    fn insert(&mut self, i: usize, r: [u64; 2]) {
        self.ranges.copy_within(i..self.len, i + 1);
        self.ranges[i] = r;
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::FreeList;
    const P: u64 = 4096;

    #[test]
    fn take_give_merge_and_claim() {
        let mut f = FreeList::<8>::new();
        f.reset(0, 100 * P);
        let a = f.take(10 * P).unwrap();
        let b = f.take(5 * P).unwrap();
        let c = f.take(20 * P).unwrap();
        assert_eq!((a, b, c), (0, 10 * P, 15 * P));
        assert!(f.give(b, b + 5 * P));
        assert_eq!(f.free_ranges(), &[[10 * P, 15 * P], [35 * P, 100 * P]]);
        // First fit: a 3-page request reuses the hole.
        assert_eq!(f.take(3 * P), Some(10 * P));
        assert!(f.give(10 * P, 13 * P));
        assert!(f.give(a, a + 10 * P));
        assert!(f.give(c, c + 20 * P));
        assert_eq!(f.free_ranges(), &[[0, 100 * P]], "everything merged back");
        assert!(f.claim(40 * P, 50 * P));
        assert_eq!(f.free_ranges(), &[[0, 40 * P], [50 * P, 100 * P]]);
        assert!(!f.is_free(45 * P, 46 * P));
        assert!(f.is_free(60 * P, 70 * P));
        assert!(f.claim(0, 40 * P));
        assert_eq!(f.free_ranges(), &[[50 * P, 100 * P]]);
        assert_eq!(f.take(60 * P), None, "no range is large enough");
    }

    #[test]
    fn a_full_table_refuses_instead_of_losing_ranges() {
        let mut f = FreeList::<2>::new();
        f.reset(0, 10 * P);
        assert!(f.claim(2 * P, 3 * P));
        assert!(!f.claim(5 * P, 6 * P), "no room to split");
        assert_eq!(f.free_ranges(), &[[0, 2 * P], [3 * P, 10 * P]]);
        let used = f.take(2 * P).unwrap();
        assert_eq!(used, 0);
        assert_eq!(f.free_ranges(), &[[3 * P, 10 * P]]);
        assert!(f.give(used, used + P));
        assert_eq!(f.take(2 * P), Some(3 * P));
        assert_eq!(f.free_ranges(), &[[0, P], [5 * P, 10 * P]]);
        assert!(!f.give(3 * P, 4 * P), "a third free range does not fit");
        assert!(f.give(4 * P, 5 * P), "merging needs no room");
    }
}
