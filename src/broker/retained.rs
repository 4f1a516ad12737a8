//! Retained messages: every shard keeps the whole set, so a new subscription finds them
//! where it is. A retained PUBLISH is stored on its own shard and sent to every other
//! (`Msg::Retain`) with a version from a process-wide clock, so every shard keeps the same
//! latest one of a topic whatever order the copies arrive in. A new subscription's
//! retained messages are sent at the subscriber's pace by `retained_cursor`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::session::Message;
use super::topics::{NodeValue, Trie};
use super::{Broker, Io, Msg};

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
    /// what this shard holds. Returns false when it is not kept for want of room (at most
    /// `max` topics).
    pub fn store(&mut self, msg: Arc<Message>, version: u64, max: usize) -> bool {
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
                }
            }
            return true;
        }
        if !self.has_room(&topic, max) {
            return false;
        }
        let node = self.trie.insert(&topic);
        let v = self.trie.get_mut(node);
        if v.msg.as_ref().is_none_or(|(_, have)| *have < version) {
            self.bytes += msg.size();
            match v.msg.replace((msg, version)) {
                Some((old, _)) => self.bytes -= old.size(),
                None => self.count += 1,
            }
        }
        true
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

impl Broker {
    /// Stores a retained message here and on every other shard.
    pub(super) fn retain(&mut self, io: &mut Io, m: Arc<Message>) {
        let max = self.config().max_retained;
        if !m.payload().is_empty() && !self.retained.has_room(m.topic(), max) {
            // Delivered all the same, not kept.
            self.stats.retained_dropped_full.add(1);
            return;
        }
        let version = self.shared.retain_clock.fetch_add(1, Ordering::Relaxed);
        for to in self.peers.others() {
            let msg = Msg::Retain {
                msg: m.clone(),
                version,
            };
            io.send_to_shard(to, msg);
        }
        self.retained.store(m, version, max);
    }

    /// A retained message another shard kept (its shard checked the bound; two shards
    /// filling the last places at once may each keep one, so it is checked again here).
    pub(super) fn store_retained(&mut self, m: Arc<Message>, version: u64) {
        if !self.retained.store(m, version, self.config().max_retained) {
            self.stats.retained_dropped_full.add(1);
        }
    }
}
