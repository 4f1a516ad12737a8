//! Interest: which shards have subscribers for what. A publish goes only to the shards
//! whose interest matches its topic, so every shard keeps a table of the others' interest
//! ([`Interest::others`]) and tells the others of its own: the first `route_depth` levels
//! of each plain filter (`idle/#` for a million `idle/<id>` subscriptions), and the exact
//! filter of each shared group. Each broadcast has a sequence number the other shards
//! acknowledge once applied, so a SUBACK can wait until every shard routes to this one
//! (`PendingSuback`), and a barrier can wait until every retained message published
//! before a SUBSCRIBE has arrived here.
//!
//! Durable interest is told apart: the prefixes of subscriptions of persistent sessions
//! (whose deliveries this shard logs), so that a publisher whose acknowledgement
//! promises durability knows which shards must answer that they made it durable, and
//! a QoS 0 or clean-session fan-out never waits for any.
//!
//! Changes made in one loop turn travel together: one `Msg::Interest` per peer and turn,
//! carrying them all under one sequence number, so a client that joins 10,000 groups
//! costs each peer a message per turn, not one per group.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ringmq_shard::conn::ConnKey;

use super::msg;
use super::retained_cursor::RetainedFilter;
use super::session::SessionId;
use super::topics::{NodeValue, Trie};
use super::{Mail, Msg, Peers};
use crate::cluster::InterestChange;
use crate::config::defaults::MAX_SHARDS;

/// Other shards' interest at one filter: a bit per shard, and for each shared group
/// (found by name: a filter may carry thousands) the shards with members.
#[derive(Default)]
pub(super) struct InterestNode {
    pub shards: u128,
    /// The shards whose interest here is durable.
    pub durable: u128,
    pub groups: HashMap<Arc<str>, u128>,
}

impl NodeValue for InterestNode {
    fn is_empty(&self) -> bool {
        self.shards == 0 && self.durable == 0 && self.groups.is_empty()
    }
}

/// A SUBACK waiting for the other shards to apply interest `seq`, and the retained
/// messages to send after it.
pub(super) struct PendingSuback {
    pub seq: u64,
    pub conn: ConnKey,
    pub sid: SessionId,
    pub pkid: u16,
    pub codes: Vec<u8>,
    /// Why a filter was refused, for the Reason String (MQTT 5).
    pub why: Option<&'static str>,
    /// The filters whose retained messages follow the SUBACK, with their options.
    pub retained: Vec<RetainedFilter>,
    /// The subscriptions were logged (a persistent session's): the SUBACK also waits
    /// for them to be durable.
    pub logged: bool,
}

/// How long plain interest stays advertised after its last subscriber on this shard
/// left (see `Broker::advertise`).
pub const INTEREST_LINGER_MS: u64 = 30_000;

/// Local interest in one advertised prefix: subscriptions behind it, and since when it
/// has had none (0: in use).
#[derive(Default)]
pub(super) struct Advert {
    pub count: u32,
    pub idle_since: u64,
}

/// The prefix of a plain filter that other shards are told about: its first `depth`
/// levels, then `#` when it goes deeper (a superset of what it matches).
pub(super) fn interest_prefix(filter: &str, depth: usize) -> &str {
    let mut levels = 0;
    for (i, b) in filter.bytes().enumerate() {
        if b == b'/' {
            levels += 1;
            if levels == depth {
                return &filter[..=i];
            }
        }
    }
    filter
}

/// The advertised form of a prefix cut at a `/`: `a/b/` → `a/b/#`.
pub(super) fn advertised_filter(prefix: &str) -> Box<str> {
    if prefix.ends_with('/') {
        format!("{prefix}#").into()
    } else {
        prefix.into()
    }
}

/// This shard's view of interest: the others', and what it told them of its own.
pub(super) struct Interest {
    peers: Peers,
    /// Other shards' subscriptions: filter prefix → shards (and shared groups → shards).
    pub others: Trie<InterestNode>,
    /// Interest this shard has told the others about, with local reference counts.
    advertised: HashMap<Box<str>, Advert>,
    /// Durable interest told about: prefix → subscriptions of persistent sessions.
    advertised_durable: HashMap<Box<str>, u32>,
    /// While the recovered sessions are put back: the other shards were told of their
    /// interest before any shard started, so nothing is broadcast.
    pub quiet: bool,
    /// Plain interest without local subscribers, oldest first, withdrawn once it has
    /// lingered long enough: (prefix, idle since).
    lingering: VecDeque<(Box<str>, u64)>,
    /// Interest broadcasts (and barriers) sent so far.
    seq: u64,
    /// Changes made this turn, sent together by `flush` under the sequence number
    /// `batch_seq`.
    batch: Vec<msg::InterestChange>,
    batch_seq: u64,
    /// How far each peer has applied this shard's broadcasts.
    pub acked: Vec<u64>,
    /// SUBACKs waiting for the other shards to apply the interest their SUBSCRIBE made.
    pub pending_subacks: VecDeque<PendingSuback>,
    /// In a cluster: changes are also collected for other nodes (see `broker::cluster`).
    pub cluster: bool,
    pub cluster_changes: Vec<InterestChange>,
}

impl Interest {
    pub fn new(peers: Peers) -> Interest {
        Interest {
            peers,
            others: Trie::new(),
            advertised: HashMap::new(),
            advertised_durable: HashMap::new(),
            quiet: false,
            lingering: VecDeque::new(),
            seq: 0,
            batch: Vec::new(),
            batch_seq: 0,
            acked: vec![0; peers.count],
            pending_subacks: VecDeque::new(),
            cluster: false,
            cluster_changes: Vec::new(),
        }
    }

    /// The shards with members of group `share` (on `filter`).
    pub fn group_shards(&self, filter: &str, share: &str) -> u128 {
        self.others
            .find(filter)
            .and_then(|n| self.others.get(n).groups.get(share).copied())
            .unwrap_or(0)
    }

    /// The last broadcast's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Counts local interest in `prefix` (or in the exact filter of a shared group) and
    /// tells every other shard when it appears or disappears. Plain interest lingers for
    /// [`INTEREST_LINGER_MS`] after its last subscriber here leaves: a client that
    /// reconnects and subscribes again (the usual churn) costs no broadcast, and other
    /// shards keep routing to this one meanwhile, so a message published just after such
    /// a SUBSCRIBE reached this shard does not depend on the interest having travelled
    /// first. A group's interest goes at once: a publisher picks one shard per group, and
    /// must not pick one without members.
    pub fn advertise(&mut self, prefix: &str, share: Option<Arc<str>>, add: bool, now_ms: u64) {
        if self.peers.count == 1 && !self.cluster {
            return;
        }
        let key: &str = match &share {
            Some(s) => s,
            None => prefix,
        };
        let lingers = share.is_none();
        let now = now_ms.max(1);
        // Looked up first: most calls find their entry, and need no copy of the key.
        if !self.advertised.contains_key(key) {
            self.advertised.insert(key.into(), Advert::default());
        }
        let Some(entry) = self.advertised.get_mut(key) else {
            return;
        };
        let changed = if add {
            entry.count += 1;
            // Back from lingering: still advertised.
            let was_idle = entry.idle_since != 0;
            entry.idle_since = 0;
            entry.count == 1 && !was_idle
        } else {
            entry.count = entry.count.saturating_sub(1);
            entry.count == 0 && !lingers
        };
        if entry.count == 0 {
            if lingers {
                if entry.idle_since == 0 {
                    entry.idle_since = now;
                    self.lingering.push_back((key.into(), now));
                }
                return;
            }
            self.advertised.remove(key);
        }
        if changed {
            self.broadcast(prefix, share, add);
        }
    }

    /// Counts durable interest in `prefix` (the prefix of a persistent session's plain
    /// subscription) and tells every other shard when it appears or disappears. It does
    /// not linger: it only says who must answer for durability.
    pub fn advertise_durable(&mut self, prefix: &str, add: bool) {
        if self.peers.count == 1 {
            return;
        }
        let changed = if add {
            match self.advertised_durable.get_mut(prefix) {
                Some(n) => {
                    *n += 1;
                    false
                }
                None => {
                    self.advertised_durable.insert(prefix.into(), 1);
                    true
                }
            }
        } else {
            match self.advertised_durable.get_mut(prefix) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    self.advertised_durable.remove(prefix);
                    true
                }
                None => false,
            }
        };
        if changed {
            self.broadcast_as(prefix, None, add, true);
        }
    }

    /// Each tick: plain interest idle for [`INTEREST_LINGER_MS`] is withdrawn.
    pub fn withdraw_idle(&mut self, now_ms: u64) {
        while let Some((key, since)) = self.lingering.front() {
            if since + INTEREST_LINGER_MS > now_ms {
                return;
            }
            let (key, since) = (key.clone(), *since);
            self.lingering.pop_front();
            let idle = self
                .advertised
                .get(&key)
                .is_some_and(|a| a.count == 0 && a.idle_since == since);
            if idle {
                self.advertised.remove(&key);
                self.broadcast(&key, None, false);
            }
        }
    }

    /// Tells every other shard that this one has (`add`) or no longer has subscribers
    /// for a prefix (or a shared group's filter): joins the batch of this turn, which
    /// goes under one sequence number.
    fn broadcast(&mut self, prefix: &str, share: Option<Arc<str>>, add: bool) {
        self.broadcast_as(prefix, share, add, false);
    }

    fn broadcast_as(&mut self, prefix: &str, share: Option<Arc<str>>, add: bool, durable: bool) {
        // The cluster learns of every change, those of recovered sessions too (other
        // nodes were told nothing before this shard started).
        if self.cluster && !durable {
            let key = match &share {
                Some(s) => Box::from(&**s),
                None => advertised_filter(prefix),
            };
            self.cluster_changes.push(InterestChange {
                key,
                share: share.is_some(),
                add,
            });
        }
        if self.quiet || self.peers.count == 1 {
            return;
        }
        if self.batch.is_empty() {
            self.seq += 1;
            self.batch_seq = self.seq;
        }
        let filter = if share.is_some() {
            prefix.into()
        } else {
            advertised_filter(prefix)
        };
        self.batch.push(msg::InterestChange {
            filter,
            share,
            add,
            durable,
        });
    }

    /// Sends this turn's interest changes to every other shard, one message each.
    pub fn flush(&mut self, mail: &mut Mail) {
        if self.batch.is_empty() {
            return;
        }
        let changes: Arc<[msg::InterestChange]> = std::mem::take(&mut self.batch).into();
        for to in self.peers.others() {
            let msg = Msg::Interest(Box::new(msg::Interest {
                changes: changes.clone(),
                seq: self.batch_seq,
            }));
            // Interest must not wait behind a local inbox; it goes straight to the peer.
            mail.outbox.push((to, msg));
        }
    }

    /// Another shard gained or lost interest (`durable`: durable interest) in `filter`.
    pub fn apply(&mut self, from: usize, change: &msg::InterestChange) {
        let msg::InterestChange {
            filter,
            share,
            add,
            durable,
        } = change;
        let (add, durable) = (*add, *durable);
        if from >= MAX_SHARDS {
            return;
        }
        let bit = 1u128 << from;
        let node = if add {
            self.others.insert(filter)
        } else {
            match self.others.find(filter) {
                Some(n) => n,
                None => return,
            }
        };
        let v = self.others.get_mut(node);
        match share {
            None if durable && add => v.durable |= bit,
            None if durable => v.durable &= !bit,
            None if add => v.shards |= bit,
            None => v.shards &= !bit,
            Some(share) if add => *v.groups.entry(share.clone()).or_default() |= bit,
            Some(share) => {
                if let Some(m) = v.groups.get_mut(share) {
                    *m &= !bit;
                    if *m == 0 {
                        v.groups.remove(share);
                    }
                }
            }
        }
        if !add {
            self.others.prune(node);
        }
    }

    /// Whether another shard has members in shared group `share`.
    pub fn has_group_elsewhere(&self, share: &str) -> bool {
        let Ok(parsed) = ringmq_proto::topic::parse_filter(share) else {
            return false;
        };
        self.others.find(parsed.filter()).is_some_and(|n| {
            self.others
                .get(n)
                .groups
                .get(share)
                .is_some_and(|&m| m != 0)
        })
    }

    /// A sequence number every other shard acknowledges only after handling everything
    /// it sent this shard before: once acknowledged, every retained message published
    /// anywhere before now is in this shard's store. This turn's batch of interest
    /// changes serves, if there is one; otherwise a `Barrier` goes out.
    pub fn barrier(&mut self, mail: &mut Mail) -> u64 {
        if self.peers.count == 1 || !self.batch.is_empty() {
            return self.seq;
        }
        self.seq += 1;
        let seq = self.seq;
        for to in self.peers.others() {
            mail.outbox.push((to, Msg::Barrier { seq }));
        }
        seq
    }

    /// Whether every other shard has applied broadcast `seq`.
    pub fn applied_everywhere(&self, seq: u64) -> bool {
        self.peers.others().all(|s| self.acked[s] >= seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_proto::topic;

    #[test]
    fn interest_prefixes_cut_at_the_route_depth() {
        assert_eq!(interest_prefix("a/b/c", 1), "a/");
        assert_eq!(interest_prefix("a/b/c", 2), "a/b/");
        assert_eq!(interest_prefix("a/b", 2), "a/b");
        assert_eq!(interest_prefix("#", 1), "#");
        assert_eq!(interest_prefix("+/x", 1), "+/");
        assert_eq!(&*advertised_filter("a/b/"), "a/b/#");
        assert_eq!(&*advertised_filter("a/b"), "a/b");
        // The advertised filter matches everything the original does.
        for (f, t) in [("a/b/c", "a/b/c"), ("a/+/c", "a/x/c"), ("a/b/#", "a/b")] {
            for depth in 1..4 {
                let adv = advertised_filter(interest_prefix(f, depth));
                assert!(topic::matches(&adv, t), "{adv} should match {t}");
            }
        }
    }

    /// A client that joins 10,000 groups in one turn costs each other shard one message,
    /// which carries every change under one sequence number.
    #[test]
    fn a_turn_of_interest_changes_is_one_message_per_peer() {
        let mut interest = Interest::new(Peers { id: 0, count: 3 });
        let mut mail = Mail::default();
        for g in 0..10_000 {
            let share: Arc<str> = format!("$share/g{g}/load/t").into();
            interest.advertise("load/t", Some(share), true, 1);
        }
        let seq = interest.seq();
        assert_eq!(
            interest.barrier(&mut mail),
            seq,
            "the batch serves as a barrier"
        );
        interest.flush(&mut mail);
        assert_eq!(mail.outbox.len(), 2, "one message per peer");
        for (_, m) in &mail.outbox {
            let Msg::Interest(i) = m else {
                panic!("an interest message")
            };
            assert_eq!((i.changes.len(), i.seq), (10_000, seq));
        }
        // Applied on a peer: every group found by name.
        let mut peer = Interest::new(Peers { id: 1, count: 3 });
        let Msg::Interest(i) = &mail.outbox[0].1 else {
            unreachable!()
        };
        for c in i.changes.iter() {
            peer.apply(0, c);
        }
        assert!(peer.has_group_elsewhere("$share/g9999/load/t"));
        assert!(!peer.has_group_elsewhere("$share/other/load/t"));
    }
}
