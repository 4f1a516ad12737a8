//! The home registry: on a client id's home shard, which shard owns its session and under
//! which claim epoch (see `takeover`), for ids claimed now or whose session is on another
//! shard, and the claims waiting for the one in progress. Its entries are keyed by a
//! 128-bit fingerprint of the id instead of the id, so a million idle clients cost a
//! 32-byte entry each (and a `u32` and a control byte per bucket) rather than a heap copy
//! of every id. (Which session here holds an id is the session table's index,
//! `sessions::ClientIndex`.)

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use slab::Slab;

use super::msg::Claimant;

/// A client id as the registry knows it: a 128-bit keyed hash.
///
/// Why a hash can stand for the id: the two halves are SipHash-1-3 of the id under one
/// random key, with different domain tags, i.e. two outputs of a keyed pseudo-random
/// function, so distinct ids collide with probability 2^-128 per pair: among a million
/// ids registered at once, about 10^-27 (and about 10^-21 over 10^12 ids ever seen). The
/// key is drawn per process and never leaves it, so a client cannot pick ids that
/// collide. Even then no session would reach the wrong client: sessions themselves are
/// found by the id (`ClientIndex`); the two ids would only share their home shard's
/// record of where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct IdKey([u64; 2]);

/// What a client id's home shard knows of it: the shard that owns its session and the
/// epoch of the claim that made it the owner (none once released), and whether a claim
/// is in progress.
pub(super) struct HomeEntry {
    key: IdKey,
    /// The owner's claim epoch; 0: no owner (epochs start at 1).
    epoch: u64,
    shard: u32,
    pub busy: bool,
}

impl HomeEntry {
    pub fn owner(&self) -> Option<(usize, u64)> {
        (self.epoch != 0).then_some((self.shard as usize, self.epoch))
    }

    pub fn set_owner(&mut self, shard: usize, epoch: u64) {
        debug_assert!(epoch != 0, "claim epochs start at 1");
        self.shard = shard as u32;
        self.epoch = epoch;
    }

    pub fn clear_owner(&mut self) {
        self.epoch = 0;
    }
}

/// The client ids whose home is this shard.
pub(super) struct Registry {
    /// The last claim epoch given out (epochs start at 1).
    claim_epoch: u64,
    hasher: RandomState,
    entries: Slab<HomeEntry>,
    /// Slots of `entries`, hashed by their key (already a hash: its first half).
    table: HashTable<u32>,
    /// Claims waiting, per id (rare: only while one id is claimed twice at once).
    waiting: HashMap<IdKey, VecDeque<Claimant>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry {
            claim_epoch: 0,
            hasher: RandomState::new(),
            entries: Slab::new(),
            table: HashTable::new(),
            waiting: HashMap::new(),
        }
    }

    /// A new claim epoch, later than every one given out before.
    pub fn next_epoch(&mut self) -> u64 {
        self.claim_epoch += 1;
        self.claim_epoch
    }

    /// Records that shard `owner` holds the session of `client_id` under `epoch` (a
    /// session recovered at startup); later epochs follow it.
    pub fn seed(&mut self, client_id: &str, owner: usize, epoch: u64) {
        let key = self.key(client_id);
        self.entry(key).set_owner(owner, epoch);
        self.claim_epoch = self.claim_epoch.max(epoch);
    }

    pub fn key(&self, client_id: &str) -> IdKey {
        IdKey([
            self.hasher.hash_one((1u8, client_id)),
            self.hasher.hash_one((2u8, client_id)),
        ])
    }

    fn slot(&self, key: IdKey) -> Option<u32> {
        let entries = &self.entries;
        self.table
            .find(key.0[0], |&i| entries[i as usize].key == key)
            .copied()
    }

    pub fn get(&self, key: IdKey) -> Option<&HomeEntry> {
        let slot = self.slot(key)?;
        self.entries.get(slot as usize)
    }

    pub fn get_mut(&mut self, key: IdKey) -> Option<&mut HomeEntry> {
        let slot = self.slot(key)?;
        self.entries.get_mut(slot as usize)
    }

    /// The entry of `key`, made (no owner, not busy) if there is none.
    pub fn entry(&mut self, key: IdKey) -> &mut HomeEntry {
        let slot = match self.slot(key) {
            Some(slot) => slot,
            None => {
                let slot = self.entries.insert(HomeEntry {
                    key,
                    epoch: 0,
                    shard: 0,
                    busy: false,
                }) as u32;
                let entries = &self.entries;
                self.table
                    .insert_unique(key.0[0], slot, |&i| entries[i as usize].key.0[0]);
                slot
            }
        };
        &mut self.entries[slot as usize]
    }

    pub fn remove(&mut self, key: IdKey) {
        let entries = &self.entries;
        if let Ok(e) = self
            .table
            .find_entry(key.0[0], |&i| entries[i as usize].key == key)
        {
            let (slot, _) = e.remove();
            self.entries.remove(slot as usize);
        }
    }

    /// Rebuilds the tables at their live size once at most half of their room is used.
    /// A connect storm keeps a record per client until its claim settles, and most are
    /// dropped then (the session is on this shard) or later: without this, the vacant
    /// slots of the peak would stay resident for good.
    pub fn compact(&mut self) {
        let live = self.entries.len();
        if self.entries.capacity() < 1024 || live * 2 > self.entries.capacity() {
            return;
        }
        let mut entries = Slab::with_capacity(live);
        let mut table = HashTable::with_capacity(live);
        for (_, e) in std::mem::take(&mut self.entries) {
            let h = e.key.0[0];
            let slot = entries.insert(e) as u32;
            table.insert_unique(h, slot, |&i| entries[i as usize].key.0[0]);
        }
        self.entries = entries;
        self.table = table;
    }

    pub fn push_waiting(&mut self, key: IdKey, claim: Claimant) {
        self.waiting.entry(key).or_default().push_back(claim);
    }

    pub fn pop_waiting(&mut self, key: IdKey) -> Option<Claimant> {
        let queue = self.waiting.get_mut(&key)?;
        let claim = queue.pop_front();
        if queue.is_empty() {
            self.waiting.remove(&key);
        }
        claim
    }

    pub fn has_waiting(&self, key: IdKey) -> bool {
        self.waiting.contains_key(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_shard::conn::ConnKey;

    #[test]
    fn registry_entries_by_fingerprint() {
        let mut r = Registry::new();
        let (a, b) = (r.key("client-a"), r.key("client-b"));
        assert_ne!(a, b);
        assert_eq!(a, r.key("client-a"), "the same id, the same key");
        assert!(r.get(a).is_none());
        assert_eq!(r.entry(a).owner(), None);
        r.entry(a).set_owner(3, 7);
        assert_eq!(r.get(a).unwrap().owner(), Some((3, 7)));
        assert!(r.get_mut(b).is_none());
        for i in 0..1000 {
            let k = r.key(&format!("c{i}"));
            r.entry(k).set_owner(1, i + 1);
        }
        r.get_mut(a).unwrap().set_owner(4, 8);
        assert_eq!(r.get(a).unwrap().owner(), Some((4, 8)));
        r.get_mut(a).unwrap().clear_owner();
        assert_eq!(r.get_mut(a).unwrap().owner(), None);
        r.remove(a);
        assert!(r.get_mut(a).is_none());
        assert_eq!(r.get_mut(r.key("c999")).unwrap().owner(), Some((1, 1000)));
        for i in 0..900 {
            r.remove(r.key(&format!("c{i}")));
        }
        r.compact();
        assert!(r.entries.capacity() < 200, "rebuilt at its live size");
        for i in 0..1000 {
            let owner = r.get(r.key(&format!("c{i}"))).map(|e| e.owner());
            assert_eq!(owner, (i >= 900).then_some(Some((1, i as u64 + 1))));
        }
        assert_eq!(std::mem::size_of::<HomeEntry>(), 32);

        let conn = |index| ConnKey {
            index,
            gen_: std::num::NonZeroU32::MIN,
        };
        let claimant = |shard| Claimant {
            shard,
            conn: conn(shard as u32),
            clean_start: shard == 1,
        };
        r.push_waiting(b, claimant(1));
        r.push_waiting(b, claimant(2));
        assert!(r.has_waiting(b));
        assert_eq!(r.pop_waiting(b), Some(claimant(1)));
        assert_eq!(r.pop_waiting(b), Some(claimant(2)));
        assert!(!r.has_waiting(b) && r.pop_waiting(b).is_none());
    }
}
