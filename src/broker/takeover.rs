//! The cross-shard protocol that finds a client's session wherever it lives.
//!
//! A client id belongs to one home shard (a hash of the id). The home shard keeps, for
//! its ids, which shard holds the session now, under a claim epoch. A CONNECT on shard A
//! asks the home (`Claim`); the home records A as the owner and either lets A go ahead
//! (`Granted`: no session elsewhere) or tells the previous owner P to close its
//! connection and hand the session to A (`Takeover` → `Handoff`). All of it is message
//! passing over the mesh; a single-shard broker runs the same steps through its local
//! inbox. A release names its epoch, so a session ending late cannot unregister a newer
//! claim of the same id.
//!
//! The home keeps no record for an id whose session it holds itself once the claim is
//! settled (every id on a single shard, 1/N of them on N shards): its own session index
//! says the same, the session's epoch included (`home_owner`). The session stays indexed
//! until it ends, which sends the release that would clear such a record anyway, or until
//! a later claim (which makes a record again) moves or replaces it.
//!
//! A session that moves from shard P to shard A leaves a *stub* on P: P's topic table
//! keeps the session's subscriptions, so a publisher whose shard has not yet learnt A's
//! interest still reaches P, and the stub forwards such deliveries to A (`Forward`).
//! Once A has advertised its interest it tells every shard (`Moved`); each answers P with
//! a `Fence` (what I send after this, I also send to A directly) and A with a
//! `FenceMark` (what I sent to you before my fence has arrived). The stub forwards only
//! what came from shards that have not fenced yet, and goes when all have. A message can
//! reach A both ways in between; A remembers what it delivered to the session meanwhile
//! (the same `Arc<Message>` travels both ways) and delivers it once.

use super::durable::Then;
use super::msg::{Claimant, Handoff, Takeover};
use super::registry::IdKey;
use super::session::{Arrival, MovingSession, OutState, SessionId};
use super::{Broker, Io, Msg};
use crate::store::record::EndReason;

impl Broker {
    /// On the home shard: a claim for `client_id`. Claims of one id are handled one at
    /// a time, in the order they arrive: the next waits until the shard that made this
    /// one says it is settled, so a takeover never crosses an unfinished one.
    pub(super) fn on_claim(&mut self, io: &mut Io, client_id: Box<str>, claimant: Claimant) {
        let key = self.registry.key(&client_id);
        if self.registry.get(key).is_some_and(|e| e.busy) {
            self.registry.push_waiting(key, claimant);
            return;
        }
        self.start_claim(io, client_id, claimant);
    }

    /// On the home shard: record the new owner under a new epoch and start the takeover
    /// if another shard holds the session.
    pub(super) fn start_claim(&mut self, io: &mut Io, client_id: Box<str>, claimant: Claimant) {
        let Claimant {
            shard: claimer,
            conn,
            clean_start,
        } = claimant;
        let epoch = self.registry.next_epoch();
        let key = self.registry.key(&client_id);
        let previous = self.home_owner(key, &client_id);
        let entry = self.registry.entry(key);
        entry.busy = true;
        entry.set_owner(claimer, epoch);
        match previous {
            Some((owner, _)) if owner != claimer => self.send(
                io,
                owner,
                Msg::Takeover(Box::new(Takeover {
                    client_id,
                    to: claimer,
                    conn,
                    clean_start,
                    epoch,
                })),
            ),
            _ => self.send(
                io,
                claimer,
                Msg::Granted {
                    conn,
                    client_id,
                    epoch,
                },
            ),
        }
    }

    /// On the home shard: the claim under `epoch` is settled; the next one may go.
    pub(super) fn on_settled(&mut self, io: &mut Io, client_id: &str) {
        let key = self.registry.key(client_id);
        let Some(entry) = self.registry.get_mut(key) else {
            return;
        };
        // One claim at a time: this is the one in progress (its owner may already have
        // been released, if its connection went away).
        entry.busy = false;
        let owner = entry.owner();
        match self.registry.pop_waiting(key) {
            Some(claimant) => self.start_claim(io, client_id.into(), claimant),
            None if owner.is_none() => self.registry.remove(key),
            // This shard holds the session, under the same epoch: the record is not needed
            // (see `home_owner`).
            None if owner == self.local_owner(client_id) => self.registry.remove(key),
            None => {}
        }
    }

    /// On the home shard: which shard owns the session of `client_id`, registered under
    /// which epoch. A record says so; without one, the session of the id on this shard,
    /// under its own epoch, if there is one.
    pub(super) fn home_owner(&self, key: IdKey, client_id: &str) -> Option<(usize, u64)> {
        match self.registry.get(key) {
            Some(entry) => entry.owner(),
            None => self.local_owner(client_id),
        }
    }

    /// This shard and the epoch of its session of `client_id`, if it has one.
    pub(super) fn local_owner(&self, client_id: &str) -> Option<(usize, u64)> {
        let sid = self.sessions.find(client_id)?;
        Some((self.peers.id, self.sessions.get(sid)?.epoch))
    }

    /// On the home shard: forget the owner of `client_id` if it is still the one
    /// registered under `epoch`. (Without a record, this shard's session is the owner,
    /// and it leaves the index when it ends, before its release is sent.)
    pub(super) fn on_release(&mut self, client_id: &str, owner: usize, epoch: u64) {
        let key = self.registry.key(client_id);
        let Some(entry) = self.registry.get_mut(key) else {
            return;
        };
        if entry.owner() == Some((owner, epoch)) {
            entry.clear_owner();
            if !entry.busy && !self.registry.has_waiting(key) {
                self.registry.remove(key);
            }
        }
    }

    /// On the claiming shard: the claim under `epoch` is settled (its connection has its
    /// CONNACK, or is gone); the home may handle the next claim of the id.
    pub(super) fn claim_settled(&mut self, io: &mut Io, client_id: Box<str>, epoch: u64) {
        let home = self.peers.home_of(&client_id);
        self.send(io, home, Msg::Settled { client_id, epoch });
    }

    /// On the shard holding a session that a connection on shard `to` takes over.
    pub(super) fn on_takeover(&mut self, io: &mut Io, t: Takeover) {
        let Takeover {
            client_id,
            to,
            conn,
            clean_start,
            epoch,
        } = t;
        let (session, stub) = match self.sessions.find(&client_id) {
            None => (None, None),
            Some(sid) => {
                self.kick_connection(io, sid, clean_start);
                if clean_start {
                    // MQTT-3.1.2-4: a clean start discards the old session.
                    self.take_session(sid, EndReason::Discarded);
                    (None, None)
                } else {
                    match self.leave_stub(sid, to) {
                        Some(session) => (Some(Box::new(session)), Some(sid)),
                        None => (None, None),
                    }
                }
            }
        };
        self.send(
            io,
            to,
            Msg::Handoff(Box::new(Handoff {
                conn,
                client_id,
                session,
                stub,
                epoch,
            })),
        );
    }

    /// Takes the state of session `sid` out to move it to shard `to`, and leaves in its
    /// place a stub with the same subscriptions that forwards to `to`.
    pub(super) fn leave_stub(&mut self, sid: SessionId, to: usize) -> Option<MovingSession> {
        let opened_at_ms = self.logged_open(sid);
        let seen = self.logged_seen(sid);
        // The log keeps the session until its new shard has made it durable there
        // (`Msg::MovedDurable`, naming the key it moves with).
        let mut session = self
            .sessions
            .get_mut(sid)?
            .replace_with_stub(|e| e.moved_to = Some(to));
        // A session moving on again before its last move settled gives up deduplicating
        // that move's late arrivals.
        if let Some(e) = session.extra_opt_mut() {
            e.arrival = None;
        }
        // The other shard's topic table numbers its nodes differently: the
        // subscriptions travel spelled out.
        let refs = session.take_subs();
        let subs = self.spell_out_subs(sid, &refs);
        self.sessions.unindex(&session.client_id, sid);
        // Retained messages still to send stay behind (documented in `retained_cursor`).
        self.retained_cursors.remove(sid);
        Some(MovingSession {
            session,
            subs,
            seen,
            opened_at_ms,
        })
    }

    /// Adds a session handed over from another shard, subscriptions included. If that
    /// shard left a stub, tell every shard to fence it (after the interest the
    /// subscriptions raised, which goes first through the same outbox).
    pub(super) fn install_session(
        &mut self,
        io: &mut Io,
        moving: MovingSession,
        stub: Option<(usize, SessionId)>,
    ) -> SessionId {
        let MovingSession {
            session: mut s,
            subs,
            seen,
            opened_at_ms,
        } = moving;
        s.conn = None;
        s.take_subs();
        // Its key and message ids were the old shard's log's.
        let old_key = std::mem::take(&mut s.store_key);
        s.durable = false;
        if let Some(e) = s.extra_opt_mut() {
            e.moved_to = None;
            e.fenced = 0;
            for q in e.queue.iter_mut() {
                q.store_id = 0;
            }
            for i in e.inflight.iter_mut() {
                i.delivery.store_id = 0;
                // Its connection was the old shard's: the next connection's resend
                // writes it (marked DUP: the client may have had it).
                if matches!(i.state, OutState::Logged(_)) {
                    i.state = OutState::Published;
                }
            }
        }
        let persistent = s.is_persistent();
        let client_id: Box<str> = (*s.client_id).into();
        if stub.is_some() {
            s.extra_mut().arrival = Some(Box::new(Arrival {
                marked: 1u128 << self.peers.id,
                stub_gone: false,
                seen: Default::default(),
            }));
        }
        let sid = self.sessions.add(s);
        for sub in subs {
            let Some((r, cost)) = self.add_subscription(sid, &sub.filter, sub.opts, sub.sub_id)
            else {
                continue;
            };
            if let Some(s) = self.sessions.get_mut(sid) {
                s.add_sub(r, cost);
            }
        }
        if persistent && self.logging() {
            self.log_new_session(sid, opened_at_ms, &seen);
        }
        if old_key != 0
            && let Some((old, _)) = stub
        {
            self.park(
                io,
                Then::MovedDurable {
                    to: old,
                    key: old_key,
                },
                None,
            );
        }
        if let Some((old, stub)) = stub {
            // This shard's own fence goes at once: a message it routes to the old shard
            // after this point is delivered here directly and must not come back.
            io.send_to_shard(old, Msg::Fence { stub });
            for to in self.peers.others() {
                let moved = Msg::Moved {
                    client_id: client_id.clone(),
                    old,
                    stub,
                };
                self.mail.outbox.push((to, moved));
            }
        }
        sid
    }

    /// On every shard but the session's new holder: the holder routes from now on.
    pub(super) fn on_moved(
        &mut self,
        io: &mut Io,
        holder: usize,
        client_id: Box<str>,
        old: usize,
        stub: SessionId,
    ) {
        self.send(io, old, Msg::Fence { stub });
        self.send(io, holder, Msg::FenceMark { client_id });
    }

    /// On the old holder: shard `from` fenced the stub; with every shard fenced, the stub
    /// goes and the new holder hears that nothing more will be forwarded.
    pub(super) fn on_fence(&mut self, io: &mut Io, from: usize, stub: SessionId) {
        let all = self.peers.all();
        let Some(s) = self.sessions.get_mut(stub) else {
            return;
        };
        let Some(to) = s.moved_to() else { return };
        let e = s.extra_mut();
        e.fenced |= 1u128 << from;
        if e.fenced & all == all {
            let client_id = (*s.client_id).into();
            self.take_session(stub, EndReason::Moved);
            self.send(io, to, Msg::StubGone { client_id });
        }
    }

    /// On the new holder: `FenceMark` from `from` (`None`: `StubGone`). Once every shard
    /// has marked and the stub is gone, no copy of anything can still arrive twice.
    pub(super) fn on_arrival_progress(&mut self, from: Option<usize>, client_id: &str) {
        let all = self.peers.all();
        let Some(sid) = self.sessions.find(client_id) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let Some(e) = s.extra_opt_mut() else { return };
        let Some(a) = e.arrival.as_mut() else { return };
        match from {
            Some(shard) => a.marked |= 1u128 << shard,
            None => a.stub_gone = true,
        }
        if a.stub_gone && a.marked & all == all {
            e.arrival = None;
        }
    }
}
