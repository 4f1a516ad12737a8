//! The sessions of one shard: the table that holds them by slot (a [`SessionId`] names a
//! slot and its generation, so a stale id never reaches a later session in the same slot),
//! the index that finds one by client id without a copy of the id, and the list of those
//! whose client is away.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;

use hashbrown::HashTable;
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
    /// Disconnected persistent sessions, checked each tick for expiry and delayed wills.
    offline: Vec<SessionId>,
    /// Client ids this shard has made up (for clients that sent an empty one), so far.
    pub assigned_ids: u64,
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions {
            table: Slab::new(),
            next_gen: NonZeroU32::MIN,
            by_client: ClientIndex::new(),
            offline: Vec::new(),
            assigned_ids: 0,
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
    pub fn add(&mut self, mut session: Session) -> SessionId {
        let gen_ = self.next_gen;
        self.next_gen = gen_.checked_add(1).unwrap_or(NonZeroU32::MIN);
        session.gen_ = gen_;
        let index = self.table.insert(session) as u32;
        let sid = SessionId { index, gen_ };
        self.by_client.insert(&self.table, sid);
        sid
    }

    /// Takes session `sid` out of the table and every index.
    pub fn remove(&mut self, sid: SessionId) -> Option<Session> {
        let s = self
            .table
            .get(sid.index as usize)
            .filter(|s| s.gen_ == sid.gen_)?;
        self.by_client.remove(&s.client_id, sid);
        self.forget_offline(sid);
        Some(self.table.remove(sid.index as usize))
    }

    /// Takes session `sid` out of the client-id index and the offline list: its slot now
    /// holds a stub that forwards to where the session went.
    pub fn unindex(&mut self, client_id: &str, sid: SessionId) {
        self.by_client.remove(client_id, sid);
        self.forget_offline(sid);
    }

    /// Session `sid` has no connection now and outlives it.
    pub fn went_offline(&mut self, sid: SessionId) {
        self.offline.push(sid);
    }

    /// Session `sid` is no longer offline (or no longer here).
    pub fn forget_offline(&mut self, sid: SessionId) {
        self.offline.retain(|&o| o != sid);
    }

    /// The offline sessions, to look each over; give back those still offline with
    /// `keep_offline`.
    pub fn take_offline(&mut self) -> Vec<SessionId> {
        std::mem::take(&mut self.offline)
    }

    /// Puts back `keep`, ahead of sessions that went offline meanwhile.
    pub fn keep_offline(&mut self, mut keep: Vec<SessionId>) {
        keep.append(&mut self.offline);
        self.offline = keep;
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
    /// any other session indexed under that id.
    fn insert(&mut self, sessions: &Slab<Session>, sid: SessionId) {
        let Some(slot) = sessions.get(sid.index as usize) else {
            return;
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
            return;
        }
        let hasher = &self.hasher;
        // Every indexed slot holds a session (see `remove`), so rehashing finds its id.
        let rehash = |&i: &u32| {
            sessions
                .get(i as usize)
                .map_or(0, |s| hasher.hash_one(&*s.client_id))
        };
        self.table.insert_unique(h, sid.index, rehash);
    }

    /// Removes the entry of `client_id` if it names session `sid`. Must be called before
    /// the session leaves its slot.
    fn remove(&mut self, client_id: &str, sid: SessionId) {
        let h = self.hasher.hash_one(client_id);
        if let Ok(e) = self.table.find_entry(h, |&i| i == sid.index) {
            e.remove();
        }
    }
}
