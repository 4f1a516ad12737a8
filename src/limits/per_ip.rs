//! Connections per source address, counted by every shard in one lock-free table.
//!
//! A client's connections land on any shard (`SO_REUSEPORT` hashes each connection's
//! ports), so the count is process-wide: an open-addressing table of atomic words, each
//! holding a 40-bit fingerprint of an address and its count (24 bits). Taking a place is
//! a compare-and-swap on the address's word; a shard never waits.
//!
//! Bounded: the table has a fixed number of slots, sized for the connections the process
//! can hold, and an address's word is freed when its last connection ends, so the table
//! holds only addresses with a connection open. An address looks at most [`PROBES`]
//! slots from its home; if none is free (a table near full), the connection is let in
//! uncounted ([`Admit::Untracked`], counted in `/metrics`): the limit fails open rather
//! than refuse clients for the table's sake.
//!
//! Two connections of one address accepted at the same instant on two shards may each
//! find no word for it and take two; the address's count is then split, and it gets up
//! to one more connection per shard racing. Sequential connections are counted exactly.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Slots an address looks at from its home slot.
pub const PROBES: usize = 32;
/// The most slots (64 MiB of words).
pub const MAX_SLOTS: usize = 1 << 23;
const COUNT_BITS: u32 = 24;
/// The largest limit per address the table counts to.
pub const MAX_PER_ADDRESS: u32 = (1 << COUNT_BITS) - 1;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// What [`PerIp::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Counted: call [`PerIp::release`] when the connection ends.
    Counted,
    /// The address has its limit of connections open: refuse this one.
    OverLimit,
    /// No room to count it (table near full): let it in uncounted.
    Untracked,
}

/// Open connections per source address, and the limit.
pub struct PerIp {
    slots: Box<[AtomicU64]>,
    mask: usize,
    limit: u64,
    hasher: std::hash::RandomState,
}

impl std::fmt::Debug for PerIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PerIp {{ slots: {}, limit: {} }}",
            self.slots.len(),
            self.limit
        )
    }
}

impl PerIp {
    /// A table for about `connections` open connections (twice as many slots, a power of
    /// two, at most [`MAX_SLOTS`]), allowing `limit` per address (at most 2²⁴ − 1).
    pub fn new(connections: usize, limit: u32) -> PerIp {
        let slots = connections
            .saturating_mul(2)
            .clamp(1024, MAX_SLOTS)
            .next_power_of_two();
        PerIp {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            mask: slots - 1,
            limit: u64::from(limit).min(COUNT_MASK),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// The address's fingerprint (never 0) and home slot.
    fn place(&self, ip: IpAddr) -> (u64, usize) {
        let h = self.hasher.hash_one(ip);
        ((h >> COUNT_BITS) | 1, h as usize & self.mask)
    }

    fn probe(&self, home: usize) -> impl Iterator<Item = &AtomicU64> {
        (0..PROBES).map(move |i| &self.slots[(home + i) & self.mask])
    }

    /// Counts a new connection from `ip`, unless it has its limit open already.
    pub fn admit(&self, ip: IpAddr) -> Admit {
        let (tag, home) = self.place(ip);
        for slot in self.probe(home) {
            let mut word = slot.load(Ordering::Acquire);
            while word >> COUNT_BITS == tag && word & COUNT_MASK > 0 {
                if word & COUNT_MASK >= self.limit {
                    return Admit::OverLimit;
                }
                match slot.compare_exchange_weak(
                    word,
                    word + 1,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Admit::Counted,
                    Err(seen) => word = seen,
                }
            }
        }
        if self.limit == 0 {
            return Admit::OverLimit;
        }
        let first = (tag << COUNT_BITS) | 1;
        for slot in self.probe(home) {
            if slot.load(Ordering::Relaxed) == 0
                && slot
                    .compare_exchange(0, first, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                return Admit::Counted;
            }
        }
        Admit::Untracked
    }

    /// A counted connection from `ip` ended. Its address's slot is freed with its last
    /// connection.
    pub fn release(&self, ip: IpAddr) {
        let (tag, home) = self.place(ip);
        for slot in self.probe(home) {
            let mut word = slot.load(Ordering::Acquire);
            while word >> COUNT_BITS == tag && word & COUNT_MASK > 0 {
                let next = if word & COUNT_MASK == 1 { 0 } else { word - 1 };
                match slot.compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return,
                    Err(seen) => word = seen,
                }
            }
        }
    }

    /// Connections counted for `ip` now.
    pub fn count(&self, ip: IpAddr) -> u64 {
        let (tag, home) = self.place(ip);
        self.probe(home)
            .map(|slot| slot.load(Ordering::Acquire))
            .filter(|word| word >> COUNT_BITS == tag)
            .map(|word| word & COUNT_MASK)
            .sum()
    }

    /// Addresses with a connection counted now (a walk over the whole table).
    pub fn addresses(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != 0)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 | i))
    }

    #[test]
    fn per_ip_counts_up_to_the_limit_and_frees_slots() {
        let t = PerIp::new(100, 3);
        for _ in 0..3 {
            assert_eq!(t.admit(ip(1)), Admit::Counted);
        }
        assert_eq!(t.admit(ip(1)), Admit::OverLimit);
        assert_eq!(t.admit(ip(2)), Admit::Counted);
        assert_eq!((t.count(ip(1)), t.count(ip(2))), (3, 1));
        t.release(ip(1));
        assert_eq!(t.admit(ip(1)), Admit::Counted);
        for _ in 0..3 {
            t.release(ip(1));
        }
        t.release(ip(2));
        assert_eq!(t.addresses(), 0, "every slot is free again");
        // Releasing an address never counted changes nothing.
        t.release(ip(9));
        assert_eq!(t.addresses(), 0);
        assert_eq!(PerIp::new(10, 0).admit(ip(1)), Admit::OverLimit);
    }

    #[test]
    fn per_ip_table_is_bounded_and_fails_open() {
        // 1,024 slots: far more addresses than that each find a slot or are let in
        // uncounted; the table never grows.
        let t = PerIp::new(10, 1);
        let mut untracked = 0;
        for i in 0..20_000 {
            match t.admit(ip(i)) {
                Admit::Counted => {}
                Admit::Untracked => untracked += 1,
                Admit::OverLimit => panic!("a new address is never over its limit"),
            }
        }
        assert_eq!(t.addresses(), 1024);
        assert_eq!(untracked, 20_000 - 1024);
    }

    #[test]
    fn per_ip_threads_count_exactly_when_not_racing_one_address() {
        let t = std::sync::Arc::new(PerIp::new(10_000, 1000));
        let threads: Vec<_> = (0..4u32)
            .map(|n| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        assert_eq!(t.admit(ip(n * 1000 + i)), Admit::Counted);
                        assert_eq!(t.admit(ip(n * 1000 + i)), Admit::Counted);
                    }
                    for i in 0..500 {
                        t.release(ip(n * 1000 + i));
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(t.addresses(), 2000);
        assert!((0..4000).all(|i| t.count(ip(i)) == u64::from(i % 1000 < 500)));
    }
}
