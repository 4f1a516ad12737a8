//! Rate limits as token buckets, each kept as one number: the generic cell rate algorithm
//! (GCRA). A bucket that refills at `per_s` units a second and holds `burst` units is the
//! time at which it would be full again (the "theoretical arrival time", TAT): taking `n`
//! units moves it `n / per_s` seconds later, and the bucket is empty once the TAT is
//! `burst / per_s` seconds ahead of now.
//!
//! Takings never fail: a bucket may go into debt, and the answer is how long the taker
//! must now wait before it takes more. Data already received (a PUBLISH in a receive
//! buffer, a connection the kernel already accepted) is never lost to a limit; the limit
//! stops what comes next until the debt is paid, so the long-run rate is exact.
//!
//! [`Gcra`] belongs to one thread (a connection's bucket, on its shard); [`SharedGcra`]
//! is one atomic shared by every shard (a listener's accept rate), taken with a
//! compare-and-swap, never a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// A rate with a burst: `per_s` units a second on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_s: u64,
    pub burst: u64,
}

impl Rate {
    /// `per_s` a second with `burst` at once (both at least 1).
    pub fn new(per_s: u64, burst: u64) -> Rate {
        Rate {
            per_s: per_s.max(1),
            burst: burst.max(1),
        }
    }

    /// How long `units` take to refill, in ns.
    fn cost_ns(self, units: u64) -> u64 {
        let ns = u128::from(units) * 1_000_000_000 / u128::from(self.per_s.max(1));
        ns.min(u128::from(u64::MAX / 4)) as u64
    }

    /// How far ahead of now the TAT may be while the bucket still has room: a full burst.
    fn tolerance_ns(self) -> u64 {
        self.cost_ns(self.burst)
    }

    /// How far ahead the TAT may be when a paused taker resumes: half a burst is back
    /// (so a taker held to its rate resumes for a run of takings, not for one at a time).
    fn resume_ns(self) -> u64 {
        self.cost_ns(self.burst.div_ceil(2))
    }

    /// After a taking left the TAT at `tat`: 0 if more may be taken at once, else how long
    /// (ns) to wait before taking again.
    fn wait_after(self, tat: u64, now_ns: u64) -> u64 {
        let ahead = tat.saturating_sub(now_ns);
        if ahead <= self.tolerance_ns() {
            0
        } else {
            ahead - self.resume_ns()
        }
    }
}

/// One taker's bucket, on one thread. The default is a full bucket.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    tat_ns: u64,
}

impl Gcra {
    /// Takes `units` at `now_ns` (always, into debt if need be). Returns 0 if the taker may
    /// go on, else how long (ns) it must now wait.
    pub fn take(&mut self, rate: Rate, units: u64, now_ns: u64) -> u64 {
        self.tat_ns = self.tat_ns.max(now_ns).saturating_add(rate.cost_ns(units));
        rate.wait_after(self.tat_ns, now_ns)
    }

    /// Whether the bucket is full at `now_ns`: it then says nothing a fresh one would not,
    /// and may be forgotten.
    pub fn is_full(&self, now_ns: u64) -> bool {
        self.tat_ns <= now_ns
    }
}

/// A bucket shared by threads (one listener's accepts on every shard).
#[derive(Debug, Default)]
pub struct SharedGcra {
    tat_ns: AtomicU64,
}

impl SharedGcra {
    pub fn new() -> SharedGcra {
        SharedGcra::default()
    }

    /// [`Gcra::take`] for a shared bucket. `now_ns` must come from one clock for every
    /// taker (the process's, [`crate::mesh::links::clock_origin`]).
    pub fn take(&self, rate: Rate, units: u64, now_ns: u64) -> u64 {
        let cost = rate.cost_ns(units);
        let mut tat = self.tat_ns.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now_ns).saturating_add(cost);
            match self
                .tat_ns
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return rate.wait_after(next, now_ns),
                Err(seen) => tat = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn rate_burst_then_the_rate() {
        let rate = Rate::new(10, 5);
        let mut b = Gcra::default();
        // A full bucket gives the burst at once.
        for _ in 0..5 {
            assert_eq!(b.take(rate, 1, 0), 0);
        }
        // The sixth is in debt: wait until half the burst is back (0.6 s − 0.3 s).
        assert_eq!(b.take(rate, 1, 0), 3 * S / 10);
        // Over a long run at ten times the rate, the takings the bucket lets through
        // without a wait come to the rate (plus the burst).
        let mut b = Gcra::default();
        let mut now = 0;
        let mut taken = 0u64;
        while now < 100 * S {
            let wait = b.take(rate, 1, now);
            taken += 1;
            now += wait.max(S / 100);
        }
        let expected = 10 * 100 + 5;
        assert!(
            taken.abs_diff(expected) <= 10,
            "{taken} taken, about {expected} expected"
        );
        assert!(!b.is_full(now - S));
        assert!(b.is_full(now + S));
    }

    #[test]
    fn rate_counts_units() {
        // Bytes: 1,000 a second, a burst of 1,000.
        let rate = Rate::new(1000, 1000);
        let mut b = Gcra::default();
        assert_eq!(b.take(rate, 600, 0), 0);
        assert_eq!(b.take(rate, 400, 0), 0);
        // 500 bytes of debt, resumed when 500 bytes are back: 1 s.
        assert_eq!(b.take(rate, 500, 0), S);
    }

    #[test]
    fn rate_shared_bucket_across_threads() {
        let rate = Rate::new(1000, 100);
        let bucket = std::sync::Arc::new(SharedGcra::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let bucket = bucket.clone();
                std::thread::spawn(move || {
                    (0..1000).filter(|_| bucket.take(rate, 1, 0) == 0).count()
                })
            })
            .collect();
        let free: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        // At one instant only the burst passes without a wait, whoever takes it.
        assert_eq!(free, 100);
    }
}
