//! Seeded randomness for "a checkpoint at a random instant": the seed is printed, and
//! `MANA_TEST_SEED=N` replays a run.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Rng(u64);

impl Rng {
    /// A generator seeded from `MANA_TEST_SEED`, else from the clock; prints the seed.
    pub fn seeded(label: &str) -> Rng {
        let seed = match std::env::var("MANA_TEST_SEED") {
            Ok(s) => s
                .parse()
                .unwrap_or_else(|_| panic!("MANA_TEST_SEED={s} is not a number")),
            Err(_) => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1),
        };
        eprintln!("{label}: random seed {seed} (replay with MANA_TEST_SEED={seed})");
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        // splitmix64: fine for choosing instants.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniformly chosen duration in `0..=max`.
    pub fn duration_upto(&mut self, max: Duration) -> Duration {
        let ms = max.as_millis() as u64;
        Duration::from_millis(self.next_u64() % (ms + 1))
    }
}
