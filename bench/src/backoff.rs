//! Reconnection back-off: 1 s, 2 s, 4 s, … doubling per failed attempt, capped at 30 s,
//! each delay drawn uniformly from the upper quarter below its base (`[¾·base, base]`),
//! so that clients dropped together do not come back together. And the small, fast
//! random number generator the swarm uses for it and for picking peers.

/// The first delay.
pub const BASE_MS: u64 = 1_000;
/// No delay is longer.
pub const CAP_MS: u64 = 30_000;

/// The base delay before attempt number `attempt` after a loss (1 for the first retry).
pub fn base_ms(attempt: u32) -> u64 {
    let doublings = attempt.saturating_sub(1).min(16);
    (BASE_MS << doublings).min(CAP_MS)
}

/// The delay before retry `attempt`, jittered within `[base·3/4, base]`.
pub fn delay_ms(attempt: u32, rng: &mut Rng) -> u64 {
    let base = base_ms(attempt);
    let low = base - base / 4;
    low + rng.below(base - low + 1)
}

/// xorshift64*: small, fast, and good enough for jitter and peer choice. Not for secrets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that nearby seeds give unrelated streams; never 0.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_doubles_then_caps() {
        let bases: Vec<u64> = (1..=8).map(base_ms).collect();
        assert_eq!(
            bases,
            [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
        );
        assert_eq!(base_ms(0), 1_000);
        assert_eq!(base_ms(u32::MAX), 30_000);
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let mut rng = Rng::new(42);
        for attempt in 1..=10 {
            let base = base_ms(attempt);
            let delays: Vec<u64> = (0..2_000).map(|_| delay_ms(attempt, &mut rng)).collect();
            let (min, max) = (*delays.iter().min().unwrap(), *delays.iter().max().unwrap());
            assert!(min >= base * 3 / 4, "attempt {attempt}: {min} < ¾·{base}");
            assert!(max <= base, "attempt {attempt}: {max} > {base}");
            // Spread over most of the range, not a constant.
            assert!(max - min > base / 8, "attempt {attempt}: {min}..{max}");
        }
        assert!((1..100).all(|a| delay_ms(a, &mut rng) <= CAP_MS));
    }

    #[test]
    fn below_is_in_range_and_seeds_differ() {
        let mut rng = Rng::new(1);
        assert!((0..10_000).all(|_| rng.below(7) < 7));
        let mut a = Rng::new(1);
        let mut b = Rng::new(2);
        assert_ne!(a.next_u64(), b.next_u64());
    }
}
