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

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ringmq_proto::mqtt::SubscriptionOptions;
use ringmq_shard::conn::ConnKey;

use super::msg;
use super::session::SessionId;
use super::topics::{NodeValue, Trie};
use super::{Mail, Msg, Peers};
use crate::config::defaults::MAX_SHARDS;

/// Other shards' interest at one filter: a bit per shard.
#[derive(Default)]
pub(super) struct InterestNode {
    pub shards: u128,
    /// The shards whose interest here is durable.
    pub durable: u128,
    pub groups: Vec<(Arc<str>, u128)>,
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
    pub retained: Vec<(Box<str>, SubscriptionOptions, u32)>,
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
    /// The sequence number of the last broadcast still waiting in the outbox (0: none).
    pub outbox_seq: u64,
    /// How far each peer has applied this shard's broadcasts.
    pub acked: Vec<u64>,
    /// SUBACKs waiting for the other shards to apply the interest their SUBSCRIBE made.
    pub pending_subacks: VecDeque<PendingSuback>,
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
            outbox_seq: 0,
            acked: vec![0; peers.count],
            pending_subacks: VecDeque::new(),
        }
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
    pub fn advertise(
        &mut self,
        prefix: &str,
        share: Option<Arc<str>>,
        add: bool,
        now_ms: u64,
        mail: &mut Mail,
    ) {
        if self.peers.count == 1 {
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
            self.broadcast(prefix, share, add, mail);
        }
    }

    /// Counts durable interest in `prefix` (the prefix of a persistent session's plain
    /// subscription) and tells every other shard when it appears or disappears. It does
    /// not linger: it only says who must answer for durability.
    pub fn advertise_durable(&mut self, prefix: &str, add: bool, mail: &mut Mail) {
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
            self.broadcast_as(prefix, None, add, true, mail);
        }
    }

    /// Each tick: plain interest idle for [`INTEREST_LINGER_MS`] is withdrawn.
    pub fn withdraw_idle(&mut self, now_ms: u64, mail: &mut Mail) {
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
                self.broadcast(&key, None, false, mail);
            }
        }
    }

    /// Tells every other shard that this one has (`add`) or no longer has subscribers
    /// for a prefix (or a shared group's filter).
    fn broadcast(&mut self, prefix: &str, share: Option<Arc<str>>, add: bool, mail: &mut Mail) {
        self.broadcast_as(prefix, share, add, false, mail);
    }

    fn broadcast_as(
        &mut self,
        prefix: &str,
        share: Option<Arc<str>>,
        add: bool,
        durable: bool,
        mail: &mut Mail,
    ) {
        if self.quiet {
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        let filter = if share.is_some() {
            prefix.into()
        } else {
            advertised_filter(prefix)
        };
        for to in self.peers.others() {
            let msg = Msg::Interest(Box::new(msg::Interest {
                filter: filter.clone(),
                share: share.clone(),
                add,
                seq,
                durable,
            }));
            // Interest must not wait behind a local inbox; it goes straight to the peer.
            mail.outbox.push((to, msg));
        }
        self.outbox_seq = seq;
    }

    /// Another shard gained or lost interest (`durable`: durable interest) in `filter`.
    pub fn apply(
        &mut self,
        from: usize,
        filter: &str,
        share: Option<Arc<str>>,
        add: bool,
        durable: bool,
    ) {
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
            Some(share) => match v.groups.iter().position(|(s, _)| *s == share) {
                Some(i) if add => v.groups[i].1 |= bit,
                Some(i) => {
                    v.groups[i].1 &= !bit;
                    if v.groups[i].1 == 0 {
                        v.groups.swap_remove(i);
                    }
                }
                None if add => v.groups.push((share, bit)),
                None => {}
            },
        }
        if !add {
            self.others.prune(node);
        }
    }

    /// A sequence number every other shard acknowledges only after handling everything
    /// it sent this shard before: once acknowledged, every retained message published
    /// anywhere before now is in this shard's store. An interest change still waiting in
    /// the outbox serves; otherwise a `Barrier` goes out.
    pub fn barrier(&mut self, mail: &mut Mail) -> u64 {
        if self.peers.count == 1 || (self.outbox_seq != 0 && self.outbox_seq == self.seq) {
            return self.seq;
        }
        self.seq += 1;
        let seq = self.seq;
        for to in self.peers.others() {
            mail.outbox.push((to, Msg::Barrier { seq }));
        }
        self.outbox_seq = seq;
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
}
