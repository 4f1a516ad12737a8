//! Retained messages: every shard keeps the whole set, so a new subscription finds them
//! where it is. A retained PUBLISH is stored on its own shard and sent to every other
//! (`Msg::Retain`) with a version from a process-wide clock, so every shard keeps the same
//! latest one of a topic whatever order the copies arrive in. A new subscription's
//! retained messages are sent at the subscriber's pace by `retained_cursor`.
//!
//! Durably, a topic's retained message lives in one log: its home shard's (a hash of the
//! topic, as for client ids), so that one log's order says which update is the latest
//! and a change of the shard count deals them out by the same hash (see
//! `store::state::redistribute`). The publisher's acknowledgement waits for the home to
//! answer that the update is durable. `$SYS` topics are never logged.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::delivery::Src;
use super::msg::Ticket;
use super::session::Message;
use super::topics::{NodeValue, Trie};
use super::{Broker, Io, Msg};
use crate::store::{MsgId, Record};

/// A retained message and the version that set it.
#[derive(Default)]
pub(super) struct RetainedNode {
    pub msg: Option<(Arc<Message>, u64)>,
}

impl NodeValue for RetainedNode {
    fn is_empty(&self) -> bool {
        self.msg.is_none()
    }
}

/// What [`Retained::store`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    /// It is the topic's retained message now (or cleared it; a clear of a topic without
    /// one counts).
    Changed,
    /// What this shard holds is newer.
    Older,
    /// Not kept: the bound of topics is reached.
    NoRoom,
}

/// This shard's copy of the retained messages: topic name → the latest message and its
/// version; at most `BrokerConfig::max_retained` topics.
#[derive(Default)]
pub(super) struct Retained {
    trie: Trie<RetainedNode>,
    /// Messages held, and their bytes (`Message::size`).
    pub count: usize,
    pub bytes: usize,
}

impl Retained {
    /// Whether a retained message on `topic` may be kept with at most `max` topics: a
    /// topic that holds one already may always be replaced or cleared.
    pub fn has_room(&self, topic: &str, max: usize) -> bool {
        self.count < max
            || self
                .trie
                .find(topic)
                .is_some_and(|node| self.trie.get(node).msg.is_some())
    }

    /// Stores a retained message (an empty payload clears the topic) if it is newer than
    /// what this shard holds (at most `max` topics). Says what it did.
    pub fn store(&mut self, msg: Arc<Message>, version: u64, max: usize) -> Stored {
        let topic = msg.topic().to_owned();
        if msg.payload().is_empty() {
            if let Some(node) = self.trie.find(&topic) {
                let v = self.trie.get_mut(node);
                if v.msg.as_ref().is_none_or(|(_, have)| *have < version) {
                    if let Some((old, _)) = v.msg.take() {
                        self.count -= 1;
                        self.bytes -= old.size();
                    }
                    self.trie.prune(node);
                    return Stored::Changed;
                }
                return Stored::Older;
            }
            return Stored::Changed;
        }
        if !self.has_room(&topic, max) {
            return Stored::NoRoom;
        }
        let node = self.trie.insert(&topic);
        let v = self.trie.get_mut(node);
        if v.msg.as_ref().is_none_or(|(_, have)| *have < version) {
            self.bytes += msg.size();
            match v.msg.replace((msg, version)) {
                Some((old, _)) => self.bytes -= old.size(),
                None => self.count += 1,
            }
            return Stored::Changed;
        }
        Stored::Older
    }

    /// The retained message of `topic`, unless it expired at `now`.
    pub fn get(&self, topic: &str, now: Instant) -> Option<Arc<Message>> {
        let node = self.trie.find(topic)?;
        let (m, _) = self.trie.get(node).msg.as_ref()?;
        (!m.is_expired(now)).then(|| m.clone())
    }

    /// Visits the retained messages in up to `n` slots of the trie from slot `from` on;
    /// the slot to go on from, or `None` past the last (see `Trie::scan`).
    pub fn scan(&self, from: usize, n: usize, mut visit: impl FnMut(&Message)) -> Option<usize> {
        self.trie.scan(from, n, |v| {
            if let Some((m, _)) = &v.msg {
                visit(m);
            }
        })
    }

    /// The retained message of `topic` now, if there is one.
    pub fn current(&self, topic: &str) -> Option<&Arc<Message>> {
        let node = self.trie.find(topic)?;
        self.trie.get(node).msg.as_ref().map(|(m, _)| m)
    }

    /// Calls `visit` for each retained message whose topic `filter` matches (expired
    /// ones included: whoever sends them checks).
    pub fn matching_each(&mut self, filter: &str, mut visit: impl FnMut(&Arc<Message>)) {
        self.trie.match_filter(filter, |_, v| {
            if let Some((m, _)) = &v.msg {
                visit(m);
            }
        });
    }
}

/// Whether a retained topic's updates are logged (`$SYS` topics are the broker's own
/// figures, made again after a restart).
fn logged_topic(topic: &str) -> bool {
    !topic.starts_with("$SYS/")
}

impl Broker {
    /// Stores the retained message routed in `src` here and on every other shard, and
    /// logs it at its topic's home (asking the home to answer when `src` is tracked).
    pub(super) fn retain(&mut self, io: &mut Io, src: &mut Src<'_>) {
        let m = src.shared();
        let max = self.config().max_retained;
        if !m.payload().is_empty() && !self.retained.has_room(m.topic(), max) {
            // Delivered all the same, not kept.
            self.stats.retained_dropped_full.add(1);
            return;
        }
        let version = self.shared.retain_clock.fetch_add(1, Ordering::Relaxed);
        let home = self.peers.home_of(m.topic());
        let logged = logged_topic(m.topic()) && self.logging();
        for to in self.peers.others() {
            let ticket = (to == home && logged && src.track).then(|| self.wait_answer(src));
            let msg = Msg::Retain {
                msg: m.clone(),
                version,
                ticket,
            };
            io.send_to_shard(to, msg);
        }
        if self.store_retained(m, version) && home == self.peers.id && logged {
            self.log_retained(src, version);
        }
    }

    /// A retained message from shard `from`: stored, and logged if this is its home.
    pub(super) fn on_retain(
        &mut self,
        io: &mut Io,
        from: usize,
        msg: Arc<Message>,
        version: u64,
        ticket: Option<Ticket>,
    ) {
        let mut src = Src::from_arc(&msg, from);
        let home = self.peers.home_of(msg.topic()) == self.peers.id;
        if self.store_retained(msg.clone(), version)
            && home
            && logged_topic(msg.topic())
            && self.logging()
        {
            self.log_retained(&mut src, version);
        }
        match ticket {
            Some(t) => self.answer_when_durable(io, from, t, &src),
            None => self.settle_routing(io, &src),
        }
    }

    /// Logs a retained update (set, or cleared by an empty payload) under `version`.
    fn log_retained(&mut self, src: &mut Src<'_>, version: u64) {
        if src.payload.is_empty() {
            let rec = Record::RetainCleared {
                version,
                topic: src.topic,
            };
            if self.log(&rec) {
                src.logged = true;
            } else {
                src.refused = true;
            }
            return;
        }
        let Some(id) = self.ensure_stored(src) else {
            return;
        };
        if self.log(&Record::RetainSet {
            version,
            msg: MsgId(id),
        }) {
            src.logged = true;
        } else {
            src.refused = true;
        }
    }

    /// Keeps a retained message (this shard's or another's: its shard checked the bound,
    /// but two shards filling the last places at once may each keep one, so it is checked
    /// again here). Whether it changed what this shard holds.
    pub(super) fn store_retained(&mut self, m: Arc<Message>, version: u64) -> bool {
        match self.retained.store(m, version, self.config().max_retained) {
            Stored::Changed => true,
            Stored::Older => false,
            Stored::NoRoom => {
                self.stats.retained_dropped_full.add(1);
                false
            }
        }
    }
}
