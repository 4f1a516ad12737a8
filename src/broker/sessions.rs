//! The sessions of one shard: the table that holds them by slot (a [`SessionId`] names a
//! slot and its generation, so a stale id never reaches a later session in the same slot),
//! the index that finds one by client id without a copy of the id, the set of those whose
//! client is away, and when each of those ends or has its will published.
//!
//! A reconnect storm of a million persistent sessions must not cost a million steps per
//! reconnect, nor per tick: the offline set is a hash set (a session leaves it in one
//! step), and deadlines wait in a heap ordered by time, of which a tick looks only at
//! those due. An entry whose session came back (or whose deadline changed) stays in the
//! heap and is recognised as stale when it comes up; the heap is rebuilt without the
//! stale entries whenever they are the larger part, so it stays within a constant factor
//! of the offline sessions.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hashbrown::{HashSet, HashTable};
use slab::Slab;

use super::session::{Session, SessionId};

/// Every session of this shard, and the indexes over them.
pub(super) struct Sessions {
    /// Sessions, each with the generation of its slot (`Session::gen_`).
    table: Slab<Session>,
    /// The generation the next session's slot gets.
    next_gen: NonZeroU32,
    /// Client id → its session here (stubs of sessions that moved away are not in it).
    by_client: ClientIndex,
    /// Disconnected persistent sessions.
    offline: HashSet<SessionId>,
    /// Those recovered from the log that have stayed offline since startup, until the
    /// cluster's session registry has checked them (`cluster_recovery`); empty on a
    /// single node. A session leaves it as it leaves the offline set.
    recovered: HashSet<SessionId>,
    /// When offline sessions end, and when their delayed wills are due.
    deadlines: BinaryHeap<Reverse<Deadline>>,
    /// Sessions indexed by client id on every shard (see `Shared::sessions`).
    count: Arc<AtomicUsize>,
    /// Client ids this shard has made up (for clients that sent an empty one), so far.
    pub assigned_ids: u64,
    /// Entries of the offline set and the deadline heap looked at so far: the work the
    /// tests count.
    pub work: u64,
}

/// A time (shard clock, ms) at which something may be due for a session: its end or its
/// delayed will. Stale when the session no longer has that time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Deadline {
    at_ms: u64,
    index: u32,
    gen_: NonZeroU32,
}

impl Sessions {
    /// The sessions of a shard; `count` is shared by every shard's.
    pub fn new(count: Arc<AtomicUsize>) -> Sessions {
        Sessions {
            table: Slab::new(),
            next_gen: NonZeroU32::MIN,
            by_client: ClientIndex::new(),
            offline: HashSet::new(),
            recovered: HashSet::new(),
            deadlines: BinaryHeap::new(),
            count,
            assigned_ids: 0,
            work: 0,
        }
    }

    pub fn get(&self, sid: SessionId) -> Option<&Session> {
        self.table
            .get(sid.index as usize)
            .filter(|s| s.gen_ == sid.gen_)
    }

    pub fn get_mut(&mut self, sid: SessionId) -> Option<&mut Session> {
        self.table
            .get_mut(sid.index as usize)
            .filter(|s| s.gen_ == sid.gen_)
    }

    /// The session of `client_id` here, if one is indexed under it.
    pub fn find(&self, client_id: &str) -> Option<SessionId> {
        self.by_client.get(&self.table, client_id)
    }

    /// Puts a session in the table and indexes it under its client id (in place of any
    /// other session indexed under that id).
    pub fn add(&mut self, session: Session) -> SessionId {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.insert(session)
    }

    /// Adds a new session unless the broker holds `max` sessions already (`None`: no
    /// bound); the count is taken atomically, so shards never go past it together.
    pub fn add_new(&mut self, session: Session, max: Option<usize>) -> Option<SessionId> {
        let max = max.unwrap_or(usize::MAX);
        self.count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(self.insert(session))
    }

    fn insert(&mut self, mut session: Session) -> SessionId {
        let gen_ = self.next_gen;
        self.next_gen = gen_.checked_add(1).unwrap_or(NonZeroU32::MIN);
        session.gen_ = gen_;
        let index = self.table.insert(session) as u32;
        let sid = SessionId { index, gen_ };
        if !self.by_client.insert(&self.table, sid) {
            // It took the place of another session indexed under its id.
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        sid
    }

    /// Takes session `sid` out of the table and every index.
    pub fn remove(&mut self, sid: SessionId) -> Option<Session> {
        let s = self
            .table
            .get(sid.index as usize)
            .filter(|s| s.gen_ == sid.gen_)?;
        if self.by_client.remove(&s.client_id, sid) {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        self.forget_offline(sid);
        Some(self.table.remove(sid.index as usize))
    }

    /// Takes session `sid` out of the client-id index and the offline set: its slot now
    /// holds a stub that forwards to where the session went.
    pub fn unindex(&mut self, client_id: &str, sid: SessionId) {
        if self.by_client.remove(client_id, sid) {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        self.forget_offline(sid);
    }

    /// Session `sid` has no connection now and outlives it, until the times in its
    /// `expires_at_ms` and `will_at_ms`, if it has any.
    pub fn went_offline(&mut self, sid: SessionId) {
        let Some(s) = self.get(sid) else { return };
        let times = s
            .extra()
            .map_or([None, None], |e| [e.expires_at_ms, e.will_at_ms]);
        self.work += 1;
        self.offline.insert(sid);
        for at_ms in times.into_iter().flatten() {
            self.deadlines.push(Reverse(Deadline {
                at_ms,
                index: sid.index,
                gen_: sid.gen_,
            }));
        }
        // At most two live entries per offline session: past twice that, the stale
        // ones are the larger part, and a rebuild costs less than they do.
        if self.deadlines.len() > 4 * self.offline.len() + 1024 {
            self.drop_stale_deadlines();
        }
    }

    /// Session `sid` is no longer offline (or no longer here). Its deadlines go stale.
    pub fn forget_offline(&mut self, sid: SessionId) {
        self.work += 1;
        self.offline.remove(&sid);
        if !self.recovered.is_empty() {
            self.recovered.remove(&sid);
        }
    }

    /// Offline session `sid` was recovered from the log at startup.
    pub fn mark_recovered(&mut self, sid: SessionId) {
        if self.offline.contains(&sid) {
            self.recovered.insert(sid);
        }
    }

    /// Whether session `sid` was recovered from the log and has stayed offline since
    /// (and is still marked: see [`Sessions::forget_recovered`]).
    pub fn is_recovered(&self, sid: SessionId) -> bool {
        self.recovered.contains(&sid)
    }

    /// Forgets which sessions were recovered.
    pub fn forget_recovered(&mut self) {
        self.recovered = HashSet::new();
    }

    /// Disconnected persistent sessions here.
    pub fn offline_len(&self) -> usize {
        self.offline.len()
    }

    /// Sessions indexed by client id here (connected or not; stubs are not).
    pub fn indexed_len(&self) -> usize {
        self.by_client.table.len()
    }

    /// The next offline session with a deadline (its end or its delayed will) at or
    /// before `now_ms`; stale entries met on the way are dropped.
    pub fn next_due(&mut self, now_ms: u64) -> Option<SessionId> {
        while let Some(&Reverse(d)) = self.deadlines.peek() {
            self.work += 1;
            if d.at_ms > now_ms {
                return None;
            }
            self.deadlines.pop();
            if self.is_live(&d) {
                return Some(SessionId {
                    index: d.index,
                    gen_: d.gen_,
                });
            }
        }
        None
    }

    /// Whether `d` is still a deadline of an offline session.
    fn is_live(&self, d: &Deadline) -> bool {
        let sid = SessionId {
            index: d.index,
            gen_: d.gen_,
        };
        self.offline.contains(&sid)
            && self.get(sid).is_some_and(|s| {
                s.extra().is_some_and(|e| {
                    e.expires_at_ms == Some(d.at_ms) || e.will_at_ms == Some(d.at_ms)
                })
            })
    }

    fn drop_stale_deadlines(&mut self) {
        let heap = std::mem::take(&mut self.deadlines);
        self.work += heap.len() as u64;
        let live: Vec<_> = heap
            .into_vec()
            .into_iter()
            .filter(|Reverse(d)| self.is_live(d))
            .collect();
        self.deadlines = BinaryHeap::from(live);
    }

    /// Visits the sessions in up to `n` slots of the table from slot `from` on (stubs
    /// included); returns the slot to go on from, or `None` past the last. A listing walks
    /// the table this way a piece per loop turn.
    pub fn scan(
        &self,
        from: usize,
        n: usize,
        mut visit: impl FnMut(SessionId, &Session),
    ) -> Option<usize> {
        let end = from.saturating_add(n).min(self.table.capacity());
        for index in from..end {
            if let Some(s) = self.table.get(index) {
                let sid = SessionId {
                    index: index as u32,
                    gen_: s.gen_,
                };
                visit(sid, s);
            }
        }
        (end < self.table.capacity()).then_some(end)
    }

    /// Every session here, stubs included (for the recount debug builds check).
    #[cfg(debug_assertions)]
    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.table.iter().map(|(_, s)| s)
    }
}

/// Client id → the session that holds it on this shard (stubs of sessions that moved
/// away are not in it).
struct ClientIndex {
    /// Slots of the session table; each slot's session holds the id it is found by.
    table: HashTable<u32>,
    hasher: RandomState,
}

impl ClientIndex {
    fn new() -> ClientIndex {
        ClientIndex {
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    /// The session of `client_id`, if one on this shard is indexed under it.
    fn get(&self, sessions: &Slab<Session>, client_id: &str) -> Option<SessionId> {
        let h = self.hasher.hash_one(client_id);
        let index = *self.table.find(h, |&i| {
            sessions
                .get(i as usize)
                .is_some_and(|s| *s.client_id == *client_id)
        })?;
        let gen_ = sessions.get(index as usize)?.gen_;
        Some(SessionId { index, gen_ })
    }

    /// Indexes session `sid` (already in `sessions`) under its client id, in place of
    /// any other session indexed under that id; whether no other was.
    fn insert(&mut self, sessions: &Slab<Session>, sid: SessionId) -> bool {
        let Some(slot) = sessions.get(sid.index as usize) else {
            return false;
        };
        let client_id = &*slot.client_id;
        let h = self.hasher.hash_one(client_id);
        let same_id = |&i: &u32| {
            sessions
                .get(i as usize)
                .is_some_and(|s| *s.client_id == *client_id)
        };
        if let Some(i) = self.table.find_mut(h, same_id) {
            *i = sid.index;
            return false;
        }
        let hasher = &self.hasher;
        // Every indexed slot holds a session (see `remove`), so rehashing finds its id.
        let rehash = |&i: &u32| {
            sessions
                .get(i as usize)
                .map_or(0, |s| hasher.hash_one(&*s.client_id))
        };
        self.table.insert_unique(h, sid.index, rehash);
        true
    }

    /// Removes the entry of `client_id` if it names session `sid`; whether it did. Must
    /// be called before the session leaves its slot.
    fn remove(&mut self, client_id: &str, sid: SessionId) -> bool {
        let h = self.hasher.hash_one(client_id);
        match self.table.find_entry(h, |&i| i == sid.index) {
            Ok(e) => {
                e.remove();
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_proto::mqtt::Version;

    /// `n` persistent sessions gone offline, each to end at a time of its own.
    fn offline_sessions(n: usize) -> (Sessions, Vec<SessionId>) {
        let mut sessions = Sessions::new(Arc::default());
        let mut sids = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = Session::new(&format!("c{i}"), Version::V311);
            s.expiry_interval = 3600;
            s.extra_mut().expires_at_ms = Some(10_000 + i as u64);
            let sid = sessions.add(s);
            sessions.went_offline(sid);
            sids.push(sid);
        }
        (sessions, sids)
    }

    /// A reconnect among 100,000 offline sessions, and a tick with nothing due, each
    /// touch a few entries, not all of them.
    #[test]
    fn a_reconnect_and_a_tick_do_not_scan_the_offline_sessions() {
        let (mut sessions, sids) = offline_sessions(100_000);
        assert_eq!(sessions.offline_len(), 100_000);
        let before = sessions.work;
        // A reconnect: the session leaves the offline set (and its deadline goes stale).
        let back = sids[54_321];
        sessions.forget_offline(back);
        if let Some(e) = sessions.get_mut(back).and_then(|s| s.extra_opt_mut()) {
            e.expires_at_ms = None;
        }
        assert!(sessions.work - before <= 2, "{}", sessions.work - before);
        // A tick before anything is due.
        let before = sessions.work;
        assert_eq!(sessions.next_due(9_999), None);
        assert!(sessions.work - before <= 2, "{}", sessions.work - before);
        assert_eq!(sessions.offline_len(), 99_999);
    }

    /// Deadlines come out in time order, stale ones (a session that came back) skipped,
    /// and stale entries never outgrow the live ones by more than a constant factor.
    #[test]
    fn deadlines_come_due_in_order_and_stale_ones_are_dropped() {
        let (mut sessions, sids) = offline_sessions(10);
        sessions.forget_offline(sids[3]);
        let due: Vec<_> = std::iter::from_fn(|| sessions.next_due(10_005)).collect();
        let want: Vec<_> = [0, 1, 2, 4, 5].iter().map(|&i| sids[i]).collect();
        assert_eq!(due, want);
        // A client that comes and goes forever leaves a stale entry each time.
        let sid = sids[9];
        for i in 0..100_000u64 {
            sessions.forget_offline(sid);
            if let Some(e) = sessions.get_mut(sid).and_then(|s| s.extra_opt_mut()) {
                e.expires_at_ms = Some(20_000 + i);
            }
            sessions.went_offline(sid);
        }
        assert!(sessions.deadlines.len() <= 4 * sessions.offline_len() + 1025);
        assert_eq!(sessions.next_due(10_009), Some(sids[6]));
    }

    /// A session recovered from the log stays marked while it is offline and untouched:
    /// its client coming back, its end or its move takes the mark away.
    #[test]
    fn a_recovered_session_is_marked_until_it_leaves_the_offline_set() {
        let (mut sessions, sids) = offline_sessions(4);
        for &sid in &sids {
            sessions.mark_recovered(sid);
        }
        assert!(sids.iter().all(|&sid| sessions.is_recovered(sid)));
        // Its client connected again; it ended; it moved to another shard.
        sessions.forget_offline(sids[0]);
        sessions.remove(sids[1]);
        sessions.unindex("c2", sids[2]);
        let marked: Vec<bool> = sids.iter().map(|&sid| sessions.is_recovered(sid)).collect();
        assert_eq!(marked, [false, false, false, true]);
        // Only an offline session is marked.
        let online = sessions.add(Session::new("online", Version::V5));
        sessions.mark_recovered(online);
        assert!(!sessions.is_recovered(online));
        sessions.forget_recovered();
        assert!(!sessions.is_recovered(sids[3]));
    }

    /// The broker-wide count follows the sessions indexed by client id, and a new one
    /// past the bound is refused.
    #[test]
    fn the_session_count_is_shared_and_bounded() {
        let count = Arc::new(AtomicUsize::new(0));
        let mut a = Sessions::new(count.clone());
        let mut b = Sessions::new(count.clone());
        let s1 = a.add_new(Session::new("x", Version::V5), Some(2)).unwrap();
        b.add_new(Session::new("y", Version::V5), Some(2)).unwrap();
        assert!(b.add_new(Session::new("z", Version::V5), Some(2)).is_none());
        assert_eq!(count.load(Ordering::Relaxed), 2);
        a.unindex("x", s1);
        assert_eq!(count.load(Ordering::Relaxed), 1);
        assert!(a.remove(s1).is_some(), "the stub goes, uncounted");
        assert_eq!(count.load(Ordering::Relaxed), 1);
        assert!(b.add_new(Session::new("z", Version::V5), Some(2)).is_some());
    }
}
