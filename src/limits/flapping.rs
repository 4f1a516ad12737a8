//! Flapping: a client id or a source address whose connections keep ending without a
//! DISCONNECT (or being refused) is banned for a while.
//!
//! Every shard records drops and asks about bans in one table, in [`STRIPES`] parts each
//! behind its own lock. A shard only ever *tries* a part's lock: a part busy with another
//! thread is skipped (the drop goes unrecorded, the ban unasked — counted), so no shard
//! ever waits. Keys are 64-bit keyed hashes of the client id or address, so the table
//! never holds a copy of a name a client invented, whatever its length.
//!
//! Bounded: each part watches at most its share of [`Flapping::new`]'s capacity (the
//! oldest watched key is forgotten first) and holds at most as many bans (past that, the
//! ban that ends first is lifted early, counted).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};

/// Independently locked parts of the table.
pub const STRIPES: usize = 16;

/// When a key is banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlappingConfig {
    /// Drops within `window_ms` past which the key is banned; 0 turns detection off.
    pub max_drops: u32,
    pub window_ms: u64,
    /// How long a ban lasts.
    pub ban_ms: u64,
    /// Whether source addresses are watched too (client ids always are).
    pub by_address: bool,
}

/// What is watched: a client id, or a source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flapper<'a> {
    ClientId(&'a str),
    Address(IpAddr),
}

impl std::fmt::Display for Flapper<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Flapper::ClientId(id) => write!(f, "client id {id:?}"),
            Flapper::Address(ip) => write!(f, "address {ip}"),
        }
    }
}

/// A drop being counted.
#[derive(Debug, Clone, Copy)]
struct Watch {
    drops: u32,
    since_ms: u64,
}

#[derive(Default)]
struct Stripe {
    watched: HashMap<u64, Watch>,
    /// Watched keys in the order they were first seen (the oldest is forgotten first).
    order: VecDeque<u64>,
    /// Banned keys and when their ban ends.
    bans: HashMap<u64, u64>,
}

/// Counters of the table (process-wide).
#[derive(Debug, Default)]
pub struct FlappingStats {
    /// Bans in force (or ended and not yet swept, for at most a second).
    pub bans_now: AtomicU64,
    /// Bans started since the broker started.
    pub bans_total: AtomicU64,
    /// Drops not recorded and bans not asked about because a part was busy.
    pub skipped: AtomicU64,
    /// Watched keys forgotten to keep the table in its bound.
    pub forgotten: AtomicU64,
    /// Bans lifted early to keep the table in its bound.
    pub bans_evicted: AtomicU64,
}

/// The flapping table.
pub struct Flapping {
    config: FlappingConfig,
    stripes: Box<[Mutex<Stripe>]>,
    per_stripe: usize,
    hasher: std::hash::RandomState,
    pub stats: FlappingStats,
}

impl std::fmt::Debug for Flapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Flapping {{ {:?}, capacity: {} }}",
            self.config,
            self.capacity()
        )
    }
}

/// A ban that just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    pub drops: u32,
    pub until_ms: u64,
}

impl Flapping {
    /// A table watching about `capacity` keys (and holding as many bans).
    pub fn new(config: FlappingConfig, capacity: usize) -> Flapping {
        Flapping {
            config,
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            per_stripe: capacity.div_ceil(STRIPES).max(1),
            hasher: std::hash::RandomState::new(),
            stats: FlappingStats::default(),
        }
    }

    pub fn config(&self) -> FlappingConfig {
        self.config
    }

    pub fn capacity(&self) -> usize {
        self.per_stripe * STRIPES
    }

    /// Whether `who` is watched at all.
    pub fn watches(&self, who: Flapper<'_>) -> bool {
        self.config.max_drops > 0
            && match who {
                Flapper::ClientId(_) => true,
                Flapper::Address(_) => self.config.by_address,
            }
    }

    fn key(&self, who: Flapper<'_>) -> u64 {
        self.hasher.hash_one(who)
    }

    /// The key's part, if it can be had without waiting.
    fn try_stripe(&self, key: u64) -> Option<std::sync::MutexGuard<'_, Stripe>> {
        match self.stripes[(key >> 60) as usize % STRIPES].try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => {
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// How long `who`'s ban still lasts (ms), if it is banned at `now_ms`.
    pub fn banned(&self, who: Flapper<'_>, now_ms: u64) -> Option<u64> {
        if !self.watches(who) {
            return None;
        }
        let key = self.key(who);
        let mut stripe = self.try_stripe(key)?;
        let until = *stripe.bans.get(&key)?;
        if until > now_ms {
            return Some(until - now_ms);
        }
        stripe.bans.remove(&key);
        self.stats.bans_now.fetch_sub(1, Ordering::Relaxed);
        None
    }

    /// `who`'s connection ended without a DISCONNECT (or was refused) at `now_ms`.
    /// Returns the ban this starts, if it starts one.
    pub fn record_drop(&self, who: Flapper<'_>, now_ms: u64) -> Option<Ban> {
        if !self.watches(who) {
            return None;
        }
        let key = self.key(who);
        let mut stripe = self.try_stripe(key)?;
        if stripe.bans.get(&key).is_some_and(|&until| until > now_ms) {
            return None;
        }
        let per_stripe = self.per_stripe;
        if !stripe.watched.contains_key(&key) {
            while stripe.watched.len() >= per_stripe {
                let Some(old) = stripe.order.pop_front() else {
                    break;
                };
                if stripe.watched.remove(&old).is_some() {
                    self.stats.forgotten.fetch_add(1, Ordering::Relaxed);
                }
            }
            stripe.order.push_back(key);
        }
        let watch = stripe.watched.entry(key).or_insert(Watch {
            drops: 0,
            since_ms: now_ms,
        });
        if now_ms.saturating_sub(watch.since_ms) > self.config.window_ms {
            *watch = Watch {
                drops: 0,
                since_ms: now_ms,
            };
        }
        watch.drops += 1;
        if watch.drops <= self.config.max_drops {
            return None;
        }
        let drops = watch.drops;
        *watch = Watch {
            drops: 0,
            since_ms: now_ms,
        };
        let until_ms = now_ms + self.config.ban_ms;
        if !stripe.bans.contains_key(&key) && stripe.bans.len() >= per_stripe {
            let first = stripe
                .bans
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(k, _)| *k);
            if let Some(first) = first {
                stripe.bans.remove(&first);
                self.stats.bans_now.fetch_sub(1, Ordering::Relaxed);
                self.stats.bans_evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        if stripe.bans.insert(key, until_ms).is_none() {
            self.stats.bans_now.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.bans_total.fetch_add(1, Ordering::Relaxed);
        Some(Ban { drops, until_ms })
    }

    /// Lifts the bans that ended by `now_ms` (once a second, from one shard).
    pub fn sweep(&self, now_ms: u64) {
        for stripe in self.stripes.iter() {
            let Ok(mut stripe) = stripe.try_lock() else {
                continue;
            };
            let before = stripe.bans.len();
            stripe.bans.retain(|_, until| *until > now_ms);
            let lifted = (before - stripe.bans.len()) as u64;
            self.stats.bans_now.fetch_sub(lifted, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_drops: u32) -> FlappingConfig {
        FlappingConfig {
            max_drops,
            window_ms: 1000,
            ban_ms: 5000,
            by_address: true,
        }
    }

    #[test]
    fn flapping_bans_past_the_threshold_in_the_window_then_lets_back() {
        let f = Flapping::new(config(3), 100);
        let who = Flapper::ClientId("dev-1");
        for t in 0..3 {
            assert_eq!(f.record_drop(who, t * 100), None);
        }
        assert_eq!(f.banned(who, 300), None);
        let ban = f.record_drop(who, 300).expect("the fourth drop bans");
        assert_eq!(
            ban,
            Ban {
                drops: 4,
                until_ms: 5300
            }
        );
        assert_eq!(f.banned(who, 301), Some(4999));
        assert_eq!(f.banned(Flapper::ClientId("dev-2"), 301), None);
        assert_eq!(f.stats.bans_now.load(Ordering::Relaxed), 1);
        // Drops while banned start nothing new.
        assert_eq!(f.record_drop(who, 400), None);
        assert_eq!(f.banned(who, 5300), None, "let back when the ban ends");
        assert_eq!(f.stats.bans_now.load(Ordering::Relaxed), 0);
        // Drops spread wider than the window never ban.
        for t in 0..20 {
            assert_eq!(f.record_drop(Flapper::ClientId("slow"), t * 600), None);
        }
        // Addresses are a separate key space.
        let ip = Flapper::Address("10.0.0.1".parse().unwrap());
        assert!(f.banned(ip, 0).is_none());
        for t in 0..4 {
            f.record_drop(ip, t);
        }
        assert!(f.banned(ip, 10).is_some());
        f.sweep(10_000);
        assert_eq!(f.stats.bans_now.load(Ordering::Relaxed), 0);
        assert!(f.banned(ip, 10).is_none(), "swept");
    }

    #[test]
    fn flapping_off_and_addresses_off() {
        let off = Flapping::new(config(0), 100);
        for t in 0..100 {
            assert_eq!(off.record_drop(Flapper::ClientId("x"), t), None);
        }
        let ids_only = Flapping::new(
            FlappingConfig {
                by_address: false,
                ..config(1)
            },
            100,
        );
        let ip = Flapper::Address("10.0.0.1".parse().unwrap());
        for t in 0..10 {
            assert_eq!(ids_only.record_drop(ip, t), None);
        }
    }

    #[test]
    fn flapping_table_is_bounded_by_invented_ids() {
        let f = Flapping::new(config(1), 64);
        for i in 0..100_000 {
            let id = format!("invented-{i}");
            f.record_drop(Flapper::ClientId(&id), 0);
        }
        let watched: usize = f
            .stripes
            .iter()
            .map(|s| s.lock().unwrap().watched.len())
            .sum();
        let order: usize = f
            .stripes
            .iter()
            .map(|s| s.lock().unwrap().order.len())
            .sum();
        assert!(watched <= f.capacity(), "{watched}");
        assert!(order <= f.capacity(), "{order}");
        assert!(f.stats.forgotten.load(Ordering::Relaxed) >= 100_000 - 64);
        // Bans are bounded too: the ones ending first are lifted early.
        for i in 0..1000 {
            let id = format!("banned-{i}");
            f.record_drop(Flapper::ClientId(&id), i);
            assert!(f.record_drop(Flapper::ClientId(&id), i).is_some());
        }
        let bans: usize = f.stripes.iter().map(|s| s.lock().unwrap().bans.len()).sum();
        assert!(bans <= f.capacity(), "{bans}");
        assert_eq!(f.stats.bans_now.load(Ordering::Relaxed), bans as u64);
    }

    #[test]
    fn flapping_never_waits_for_a_busy_part() {
        let f = Flapping::new(config(1), 64);
        let who = Flapper::ClientId("busy");
        let key = f.key(who);
        let guard = f.stripes[(key >> 60) as usize % STRIPES].lock().unwrap();
        assert_eq!(f.record_drop(who, 0), None);
        assert_eq!(f.banned(who, 0), None);
        assert_eq!(f.stats.skipped.load(Ordering::Relaxed), 2);
        drop(guard);
    }
}
