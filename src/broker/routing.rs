//! Routing: where a message published on this shard goes. [`Routes`] holds the shard's
//! topic table (each filter with its plain subscribers and shared groups); `route` sends a
//! message to the local sessions that match, to the other shards whose interest matches
//! (see `interest`), and to one member of each matching shared group, taking turns over
//! the shards that have members (MQTT 5 §4.8.2).
//!
//! A filter may carry any number of shared groups (10,000 on one topic is a real
//! deployment): a group is found by its name in a hash table at its node, never by a
//! search of the node's groups, so a subscription costs the same however many groups
//! there are. Whose turn it is in each group is kept while the group has members on
//! some shard, and forgotten when it has none.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use ringmq_proto::mqtt::{QoS, SubscriptionOptions};
use ringmq_proto::topic::{self, Filter};

use super::cluster::ClusterRoute;
use super::delivery::Src;
use super::msg::Tallied;
use super::session::{Message, SessionId, SubIds};
use super::topics::{NodeId, NodeValue, Trie};
use super::{Broker, Io, Msg};

/// A session subscribed at a trie node.
#[derive(Debug, Clone, Copy)]
pub(super) struct Subscriber {
    pub sid: SessionId,
    pub opts: SubscriptionOptions,
    pub sub_id: u32,
}

/// The sessions of one shared-subscription group at a node.
pub(super) struct ShareGroup {
    /// The whole filter, `$share/{group}/{filter}`.
    pub share: Arc<str>,
    pub members: Vec<Subscriber>,
    pub next: u32,
}

/// Local subscriptions at one filter. Most filters have exactly one plain subscriber (a
/// topic per client), so that one lives inline in the trie node, with no allocation: the
/// whole value is 16 bytes (the enum's tag hides in a niche of the options). A second
/// subscriber, or a shared group, moves the node's subscriptions to the heap.
#[derive(Default)]
pub(super) enum SubsNode {
    #[default]
    Empty,
    One(Subscriber),
    Many(Box<SubsMany>),
}

/// The subscriptions of a node with more than one plain subscriber or a shared group.
#[derive(Default)]
pub(super) struct SubsMany {
    plain: Vec<Subscriber>,
    /// The groups, hashed by name (`Routes::hasher`).
    groups: HashTable<ShareGroup>,
}

impl SubsNode {
    /// The plain (not shared) subscribers.
    pub fn plain(&self) -> &[Subscriber] {
        match self {
            SubsNode::Empty => &[],
            SubsNode::One(s) => std::slice::from_ref(s),
            SubsNode::Many(m) => &m.plain,
        }
    }

    pub fn plain_mut(&mut self) -> &mut [Subscriber] {
        match self {
            SubsNode::Empty => &mut [],
            SubsNode::One(s) => std::slice::from_mut(s),
            SubsNode::Many(m) => &mut m.plain,
        }
    }

    /// The shared-subscription groups.
    pub fn groups(&self) -> impl Iterator<Item = &ShareGroup> {
        let groups = match self {
            SubsNode::Many(m) => Some(&m.groups),
            _ => None,
        };
        groups.into_iter().flat_map(|g| g.iter())
    }

    /// How many shared-subscription groups the node has.
    #[cfg(test)]
    pub fn group_count(&self) -> usize {
        match self {
            SubsNode::Many(m) => m.groups.len(),
            _ => 0,
        }
    }

    pub fn push_plain(&mut self, sub: Subscriber) {
        match self {
            SubsNode::Empty => *self = SubsNode::One(sub),
            SubsNode::One(_) => self.many().plain.push(sub),
            SubsNode::Many(m) => m.plain.push(sub),
        }
    }

    /// Removes the plain subscription of session `sid`; whether there was one.
    pub fn remove_plain(&mut self, sid: SessionId) -> bool {
        let removed = match self {
            SubsNode::Empty => false,
            SubsNode::One(s) if s.sid == sid => {
                *self = SubsNode::Empty;
                true
            }
            SubsNode::One(_) => false,
            SubsNode::Many(m) => {
                let before = m.plain.len();
                m.plain.retain(|s| s.sid != sid);
                m.plain.len() != before
            }
        };
        self.tidy();
        removed
    }

    /// The subscriptions on the heap, moved there first if they are inline.
    fn many(&mut self) -> &mut SubsMany {
        if !matches!(self, SubsNode::Many(_)) {
            let plain = match std::mem::take(self) {
                SubsNode::One(s) => vec![s],
                _ => Vec::new(),
            };
            *self = SubsNode::Many(Box::new(SubsMany {
                plain,
                groups: HashTable::new(),
            }));
        }
        match self {
            SubsNode::Many(m) => m,
            _ => unreachable!("just made"),
        }
    }

    /// Back inline once a single plain subscriber is left (or none).
    fn tidy(&mut self) {
        if let SubsNode::Many(m) = self
            && m.groups.is_empty()
            && m.plain.len() <= 1
        {
            *self = match m.plain.pop() {
                Some(s) => SubsNode::One(s),
                None => SubsNode::Empty,
            };
        }
    }
}

impl NodeValue for SubsNode {
    fn is_empty(&self) -> bool {
        matches!(self, SubsNode::Empty)
    }
}

/// This shard's subscriptions.
#[derive(Default)]
pub(super) struct Routes {
    /// Filter → the sessions subscribed to it here, plain and by shared group.
    pub subs: Trie<SubsNode>,
    /// Hashes group names in every node's group table.
    hasher: RandomState,
    /// Whose turn it is in each shared group with members on some shard (here, or
    /// elsewhere as `Interest` says): an entry per such group, gone when it has none.
    share_turns: HashMap<Arc<str>, u32>,
    /// Subscriptions in the table, and what they cost (`subscription_cost`).
    pub count: usize,
    pub bytes: usize,
    /// Group names compared while finding groups (what the tests count).
    pub probes: u64,
}

/// What one subscription costs the broker, as the per-session budget counts it
/// (`max_subscription_bytes`): the filter as sent (`filter_len` bytes), for each of its
/// `levels` a trie node's worth (about 128 bytes: the node, its level, its share of a
/// child table), and the subscriber entry and the session's reference to it.
pub(super) fn subscription_cost(filter_len: usize, levels: usize) -> usize {
    const PER_LEVEL: usize = 128;
    const PER_SUBSCRIPTION: usize = 64;
    filter_len + levels * PER_LEVEL + PER_SUBSCRIPTION
}

/// The levels of a topic name or filter.
pub(super) fn level_count(topic: &str) -> usize {
    topic.bytes().filter(|&b| b == b'/').count() + 1
}

impl Routes {
    /// Puts session `sid`'s subscription to `filter` (valid; `parsed` is its parse) in the
    /// table. Returns its node and, for a shared one, the group's name as the table holds
    /// it, and whether the group is new here.
    pub fn add(
        &mut self,
        parsed: &Filter<'_>,
        filter: &str,
        entry: Subscriber,
    ) -> (NodeId, Option<(Arc<str>, bool)>) {
        match *parsed {
            Filter::Plain(f) => {
                let node = self.subs.insert(f);
                self.subs.get_mut(node).push_plain(entry);
                (node, None)
            }
            Filter::Shared { filter: plain, .. } => {
                let node = self.subs.insert(plain);
                let hasher = &self.hasher;
                let probes = &mut self.probes;
                let groups = &mut self.subs.get_mut(node).many().groups;
                let h = hasher.hash_one(filter);
                let found = groups.find_mut(h, |g| {
                    *probes += 1;
                    &*g.share == filter
                });
                let share = match found {
                    Some(g) => {
                        g.members.push(entry);
                        (g.share.clone(), false)
                    }
                    None => {
                        let share: Arc<str> = Arc::from(filter);
                        let group = ShareGroup {
                            share: share.clone(),
                            members: vec![entry],
                            next: 0,
                        };
                        groups.insert_unique(h, group, |g| hasher.hash_one(&*g.share));
                        (share, true)
                    }
                };
                (node, Some(share))
            }
        }
    }

    /// Group `share` at `node`, if it is there.
    pub fn group_mut(&mut self, node: NodeId, share: &str) -> Option<&mut ShareGroup> {
        let h = self.hasher.hash_one(share);
        let probes = &mut self.probes;
        match self.subs.get_mut(node) {
            SubsNode::Many(m) => m.groups.find_mut(h, |g| {
                *probes += 1;
                &*g.share == share
            }),
            _ => None,
        }
    }

    /// The entry of session `sid` at `node` (in group `share`, for a shared subscription).
    pub fn subscriber_mut(
        &mut self,
        sid: SessionId,
        node: NodeId,
        share: Option<&str>,
    ) -> Option<&mut Subscriber> {
        match share {
            None => self
                .subs
                .get_mut(node)
                .plain_mut()
                .iter_mut()
                .find(|s| s.sid == sid),
            Some(share) => self
                .group_mut(node, share)?
                .members
                .iter_mut()
                .find(|s| s.sid == sid),
        }
    }

    /// Takes session `sid`'s subscription at `node` (in group `share`) out of the node,
    /// which is not pruned yet. `None` if it was not there; else the group it left
    /// (`Some(None)` for a plain one) and whether that group is now empty here (and gone).
    pub fn remove(
        &mut self,
        sid: SessionId,
        node: NodeId,
        share: Option<&str>,
    ) -> Option<Option<(Arc<str>, bool)>> {
        let Some(share) = share else {
            return self.subs.get_mut(node).remove_plain(sid).then_some(None);
        };
        let h = self.hasher.hash_one(share);
        let probes = &mut self.probes;
        let value = self.subs.get_mut(node);
        let SubsNode::Many(m) = value else {
            return None;
        };
        let Ok(mut entry) = m.groups.find_entry(h, |g| {
            *probes += 1;
            &*g.share == share
        }) else {
            return None;
        };
        let g = entry.get_mut();
        g.members.retain(|s| s.sid != sid);
        let name = g.share.clone();
        let emptied = g.members.is_empty();
        if emptied {
            entry.remove();
            value.tidy();
        }
        Some(Some((name, emptied)))
    }

    /// The next turn in shared group `share` (one with members on some shard).
    pub fn next_turn(&mut self, share: &Arc<str>) -> u32 {
        let rr = self.share_turns.entry(share.clone()).or_insert(0);
        let turn = *rr;
        *rr = rr.wrapping_add(1);
        turn
    }

    /// Group `share` has members on some shard: it gets a turn.
    pub fn keep_turn(&mut self, share: &Arc<str>) {
        self.share_turns.entry(share.clone()).or_insert(0);
    }

    /// Group `share` has no member on any shard: its turn goes.
    pub fn forget_turn(&mut self, share: &str) {
        self.share_turns.remove(share);
    }

    /// Shared groups with a turn kept.
    pub fn turns_kept(&self) -> usize {
        self.share_turns.len()
    }

    /// Whether group `share` (`$share/{group}/{filter}`) has members here.
    pub fn has_group(&mut self, share: &str) -> bool {
        let Ok(Filter::Shared { filter, .. }) = topic::parse_filter(share) else {
            return false;
        };
        match self.subs.find(filter) {
            Some(node) => self.group_mut(node, share).is_some(),
            None => false,
        }
    }

    /// What the subscription at `node` (in group `share`) costs (`subscription_cost`).
    pub fn cost_of(&self, node: NodeId, share: Option<&str>) -> usize {
        let (levels, path_len) = self.subs.depth_and_len(node);
        subscription_cost(share.map_or(path_len, str::len), levels)
    }
}

/// Buffers reused by every publish, so routing allocates nothing in steady state.
#[derive(Default)]
pub(super) struct Scratch {
    /// The local sessions a message goes to.
    pub targets: Vec<Target>,
    /// The shared groups that match it: (group, members here, shards with members).
    pub groups: Vec<(Arc<str>, bool, u128)>,
    /// Where each group is in `groups`, to merge the local and the remote view of one.
    pub group_at: HashMap<Arc<str>, usize>,
    /// Forwarded properties of the message being routed.
    pub fwd: Vec<u8>,
    /// The topic behind a topic alias.
    pub topic: String,
}

/// One session a message goes to, after overlapping subscriptions are merged.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target {
    sid: SessionId,
    qos: QoS,
    retain_as_published: bool,
    sub_ids: SubIds,
}

/// Merges the targets of one session matched through several filters into one
/// delivery (MQTT-3.3.4-2): the highest QoS, every subscription identifier
/// (MQTT-3.3.4-3), RETAIN kept if any subscription asks for it.
fn merge_overlapping(targets: &mut Vec<Target>) {
    targets.sort_unstable_by_key(|t| (t.sid.index, t.sid.gen_));
    let mut out = 0;
    for i in 0..targets.len() {
        if out > 0 && targets[out - 1].sid == targets[i].sid {
            let t = targets[i];
            let m = &mut targets[out - 1];
            m.qos = m.qos.max(t.qos);
            m.retain_as_published |= t.retain_as_published;
            for &id in t.sub_ids.as_slice() {
                m.sub_ids.push(id);
            }
        } else {
            targets[out] = targets[i];
            out += 1;
        }
    }
    targets.truncate(out);
}

/// How far a routing reaches on the other shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Every subscriber and shared group.
    All,
    /// The shards with durable subscribers, no group (a copy sent again).
    Durable,
    /// Plain subscribers only: a message from another node, whose publishing shard
    /// picked the node of each group.
    Plain,
}

impl Broker {
    /// Delivers a message published on this shard: to local subscribers, to the shards
    /// with matching interest, and to one member of each matching shared group. With a
    /// `tally` (a message from the API), the sessions reached here are counted in it, and
    /// every other shard the message goes to counts its own and answers through it.
    pub(super) fn route(&mut self, io: &mut Io, src: &mut Src<'_>, tally: Option<&mut Tally>) {
        let mut tally = tally;
        let mut groups = std::mem::take(&mut self.scratch.groups);
        groups.clear();
        let mut cluster = self.cluster_route(src);
        let here = self.deliver_local(io, src, Some(&mut groups));
        if let Some(t) = tally.as_deref_mut() {
            t.here += here as u64;
        }
        self.route_remote(io, src, &mut groups, Scope::All, cluster.as_mut(), tally);
        self.scratch.groups = groups;
        if let Some(c) = cluster {
            self.cluster_send(io, src, c);
        }
    }

    /// A QoS 2 message its persistent session's client sent again before it saw the
    /// PUBREC (after a restart, say): it goes again to the persistent sessions here and
    /// on the shards that log deliveries, and each that never got it gets it (see
    /// `Msg::Publish`'s origin).
    pub(super) fn route_again(&mut self, io: &mut Io, src: &mut Src<'_>) {
        let mut groups = std::mem::take(&mut self.scratch.groups);
        groups.clear();
        src.again = true;
        self.deliver_local(io, src, None);
        self.route_remote(io, src, &mut groups, Scope::Durable, None, None);
        self.scratch.groups = groups;
    }

    /// The other shards' part of `route`: the shards whose interest matches, and one
    /// member of each shared group, as far as `scope` goes — in a cluster (`cluster`)
    /// unless another node was picked for the group. With a `tally`,
    /// each of them counts the sessions it reaches and answers through it.
    pub(super) fn route_remote(
        &mut self,
        io: &mut Io,
        src: &mut Src<'_>,
        groups: &mut Vec<(Arc<str>, bool, u128)>,
        scope: Scope,
        cluster: Option<&mut ClusterRoute>,
        mut tally: Option<&mut Tally>,
    ) {
        let mut group_at = std::mem::take(&mut self.scratch.group_at);
        group_at.clear();
        if self.peers.count > 1 {
            if !groups.is_empty() {
                group_at.extend(groups.iter().enumerate().map(|(i, g)| (g.0.clone(), i)));
            }
            let mut mask = 0u128;
            let mut durable = 0u128;
            self.interest.others.match_topic(src.topic, |_, v| {
                mask |= v.shards | v.durable;
                durable |= v.durable;
                for (share, m) in &v.groups {
                    match group_at.get(share) {
                        Some(&i) => groups[i].2 |= m,
                        None => {
                            group_at.insert(share.clone(), groups.len());
                            groups.push((share.clone(), false, *m));
                        }
                    }
                }
            });
            mask &= !(1u128 << self.peers.id);
            if scope == Scope::Durable {
                mask &= durable;
            }
            if scope != Scope::All {
                groups.clear();
            }
            let overflow_limit = self.config().mesh_overflow_limit;
            while mask != 0 {
                let to = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if src.qos == QoS::AtMostOnce && io.mesh_backlog(to) >= overflow_limit {
                    self.stats.dropped_qos0_mesh_full.add(1);
                    self.event_dropped(None, src.topic, src.qos, "mesh_full");
                    continue;
                }
                let msg = match tally.as_deref_mut() {
                    Some(t) => t.elsewhere(src.shared(), None),
                    None => {
                        // A shard with durable subscribers answers once what it logged
                        // is durable, when an acknowledgement waits for that.
                        let ticket = (src.track && durable & (1u128 << to) != 0)
                            .then(|| self.wait_answer(src));
                        let origin = ticket.and(src.exact).unwrap_or(0);
                        Msg::Publish {
                            msg: src.shared(),
                            ticket,
                            origin,
                            again: src.again,
                        }
                    }
                };
                io.send_to_shard(to, msg);
            }
        }
        if let Some(c) = cluster {
            self.cluster_groups(src, groups, c);
        }
        self.deliver_groups(io, src, groups, tally);
        group_at.clear();
        self.scratch.group_at = group_at;
    }

    /// Shared subscriptions (MQTT 5 §4.8.2): each group of `groups` (whole filter, members
    /// here, shards with members) gets the message once, at one member, taking turns
    /// over the shards that have members.
    pub(super) fn deliver_groups(
        &mut self,
        io: &mut Io,
        src: &mut Src<'_>,
        groups: &mut Vec<(Arc<str>, bool, u128)>,
        mut tally: Option<&mut Tally>,
    ) {
        for (share, local, remote) in groups.drain(..) {
            let candidates = remote | if local { 1u128 << self.peers.id } else { 0 };
            let n = candidates.count_ones();
            if n == 0 {
                continue;
            }
            let mut pick = self.routes.next_turn(&share) % n;
            let mut bits = candidates;
            while pick > 0 {
                bits &= bits - 1;
                pick -= 1;
            }
            let to = bits.trailing_zeros() as usize;
            if to == self.peers.id {
                let reached = self.deliver_share_local(io, &share, src);
                if let Some(t) = tally.as_deref_mut() {
                    t.here += u64::from(reached);
                }
            } else {
                let msg = match tally.as_deref_mut() {
                    Some(t) => t.elsewhere(src.shared(), Some(share)),
                    None => {
                        // Whether the member it goes to is durable is that shard's to
                        // know.
                        let ticket = src.track.then(|| self.wait_answer(src));
                        Msg::ShareDeliver {
                            share,
                            msg: src.shared(),
                            ticket,
                        }
                    }
                };
                io.send_to_shard(to, msg);
            }
        }
    }

    /// Delivers to this shard's plain subscribers; collects shared groups that match into
    /// `groups` when given (each once: a group's name holds its filter, so it is at one
    /// node only). Returns how many sessions it went to.
    pub(super) fn deliver_local(
        &mut self,
        io: &mut Io,
        src: &mut Src<'_>,
        groups: Option<&mut Vec<(Arc<str>, bool, u128)>>,
    ) -> usize {
        if let Some(n) = src.number {
            self.cluster_routed(n);
        }
        let mut targets = std::mem::take(&mut self.scratch.targets);
        targets.clear();
        let mut nodes = 0;
        let mut groups = groups;
        let origin = src.origin;
        let here = self.peers.id;
        self.routes.subs.match_topic(src.topic, |_, v| {
            nodes += 1;
            // MQTT-3.8.3-3: No Local keeps a client's own messages from it.
            let own = |s: &Subscriber| s.opts.no_local && origin == Some((here, s.sid));
            targets.extend(v.plain().iter().filter(|s| !own(s)).map(|s| Target {
                sid: s.sid,
                qos: s.opts.qos,
                retain_as_published: s.opts.retain_as_published,
                sub_ids: SubIds::one(s.sub_id),
            }));
            if let Some(groups) = groups.as_deref_mut() {
                groups.extend(v.groups().map(|g| (g.share.clone(), true, 0)));
            }
        });
        if nodes > 1 {
            merge_overlapping(&mut targets);
        }
        self.writer.begin_fanout();
        for t in targets.iter() {
            let qos = src.qos.min(t.qos);
            // MQTT-3.3.1-12, -3.3.1-13: RETAIN as published only where asked for.
            let retain = t.retain_as_published && src.retain;
            self.deliver(io, t.sid, src, qos, retain, t.sub_ids);
        }
        self.writer.end_fanout();
        let reached = targets.len();
        self.scratch.targets = targets;
        reached
    }

    /// Delivers to one member of the shared group `share` here; whether there was one.
    pub(super) fn deliver_share_local(
        &mut self,
        io: &mut Io,
        share: &str,
        src: &mut Src<'_>,
    ) -> bool {
        let Ok(parsed) = topic::parse_filter(share) else {
            return false;
        };
        let Some(node) = self.routes.subs.find(parsed.filter()) else {
            return false;
        };
        let Some(g) = self.routes.group_mut(node, share) else {
            return false;
        };
        let n = g.members.len();
        if n == 0 {
            return false;
        }
        let start = g.next as usize % n;
        g.next = g.next.wrapping_add(1);
        // Prefer a connected member, taking turns; with none connected, the next in turn
        // queues it.
        let mut chosen = g.members[start];
        for i in 0..n {
            let m = g.members[(start + i) % n];
            let connected = self.sessions.get(m.sid).is_some_and(|s| s.conn.is_some());
            if connected {
                chosen = m;
                break;
            }
        }
        let qos = src.qos.min(chosen.opts.qos);
        let retain = chosen.opts.retain_as_published && src.retain;
        self.deliver(io, chosen.sid, src, qos, retain, SubIds::one(chosen.sub_id));
        true
    }

    /// Keeps a turn for shared group `share` while it has members on some shard, and
    /// forgets it once it has none (so the turns kept are bounded by the live groups).
    pub(super) fn settle_share_turn(&mut self, share: &Arc<str>) {
        if self.routes.has_group(share) || self.interest.has_group_elsewhere(share) {
            self.routes.keep_turn(share);
        } else {
            self.routes.forget_turn(share);
        }
    }
}

/// Where a message published through the API went: the sessions it reached on the shard
/// it entered, and an answer to come from each other shard it was sent to; or that the
/// API may not publish there.
#[derive(Default)]
pub struct Tally {
    pub here: u64,
    pub elsewhere: Vec<tokio::sync::oneshot::Receiver<u64>>,
    pub denied: bool,
}

impl Tally {
    /// The message for another shard that counts the sessions it reaches there.
    fn elsewhere(&mut self, msg: Arc<Message>, share: Option<Arc<str>>) -> Msg {
        let (tally, answer) = tokio::sync::oneshot::channel();
        self.elsewhere.push(answer);
        Msg::Tallied(Box::new(Tallied { msg, share, tally }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_subscriber_stays_inline() {
        let sub = |index| Subscriber {
            sid: SessionId {
                index,
                gen_: std::num::NonZeroU32::MIN,
            },
            opts: SubscriptionOptions {
                qos: ringmq_proto::mqtt::QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
            sub_id: index,
        };
        assert_eq!(std::mem::size_of::<SubsNode>(), 16);
        let mut v = SubsNode::default();
        v.push_plain(sub(1));
        assert!(matches!(v, SubsNode::One(_)));
        v.push_plain(sub(2));
        assert!(matches!(v, SubsNode::Many(_)));
        assert_eq!(v.plain().len(), 2);
        let sid = |index| SessionId {
            index,
            gen_: std::num::NonZeroU32::MIN,
        };
        assert!(!v.remove_plain(sid(3)));
        assert!(v.remove_plain(sid(1)));
        assert!(
            matches!(v, SubsNode::One(s) if s.sub_id == 2),
            "back inline"
        );
        let mut routes = Routes::default();
        let parsed = topic::parse_filter("$share/g/t").unwrap();
        let n = routes.subs.insert("t");
        *routes.subs.get_mut(n) = v;
        routes.add(&parsed, "$share/g/t", sub(4));
        let v = routes.subs.get_mut(n);
        assert_eq!((v.plain().len(), v.group_count()), (1, 1));
        assert!(v.remove_plain(sid(2)));
        assert!(!v.is_empty(), "the group is left");
        let left = routes.remove(sid(4), n, Some("$share/g/t"));
        assert!(matches!(left, Some(Some((_, true)))), "the group emptied");
        assert!(routes.subs.get(n).is_empty());
    }

    /// Finding a group costs the same whatever the number of groups at the node: a
    /// subscription to a new group and to an existing one compare one group name at
    /// most, with 10 groups there or with 10,000.
    #[test]
    fn a_group_subscription_costs_the_same_whatever_the_group_count() {
        let sub = |index| Subscriber {
            sid: SessionId {
                index,
                gen_: std::num::NonZeroU32::MIN,
            },
            opts: SubscriptionOptions {
                qos: QoS::AtMostOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
            sub_id: 0,
        };
        let mut probes_with = Vec::new();
        for groups in [10u32, 10_000] {
            let mut routes = Routes::default();
            for g in 0..groups {
                let f = format!("$share/g{g}/load/t");
                routes.add(&topic::parse_filter(&f).unwrap(), &f, sub(g));
            }
            let before = routes.probes;
            let new = "$share/new/load/t";
            routes.add(&topic::parse_filter(new).unwrap(), new, sub(1));
            let old = "$share/g5/load/t";
            routes.add(&topic::parse_filter(old).unwrap(), old, sub(2));
            let node = routes.subs.find("load/t").unwrap();
            routes.remove(sub(2).sid, node, Some(old));
            probes_with.push(routes.probes - before);
        }
        // A linear search would compare thousands of names. The hash table compares a
        // name only where a 7-bit tag matches, so a big table may meet a rare false match
        // (its hasher is seeded at random): allow one per operation, no more.
        assert!(probes_with[1] <= probes_with[0] + 3, "{probes_with:?}");
        assert!(probes_with[0] <= 3, "{probes_with:?}");
    }

    fn t(index: u32, qos: QoS, id: u32) -> Target {
        Target {
            sid: SessionId {
                index,
                gen_: std::num::NonZeroU32::MIN,
            },
            qos,
            retain_as_published: false,
            sub_ids: SubIds::one(id),
        }
    }

    #[test]
    fn overlapping_subscriptions_give_one_delivery_at_the_highest_qos() {
        let mut v = vec![
            t(2, QoS::AtMostOnce, 1),
            t(1, QoS::AtMostOnce, 0),
            t(2, QoS::ExactlyOnce, 3),
            t(1, QoS::AtLeastOnce, 0),
        ];
        merge_overlapping(&mut v);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].qos, QoS::AtLeastOnce);
        assert_eq!(v[1].qos, QoS::ExactlyOnce);
        assert_eq!(v[1].sub_ids.as_slice(), &[1, 3]);
    }
}
