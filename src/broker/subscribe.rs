//! SUBSCRIBE and UNSUBSCRIBE: the local topic table, the interest other shards are told
//! about, and the retained messages a new subscription receives.
//!
//! A SUBACK is held until every other shard has applied the interest the subscription
//! created (`Interest` → `InterestAck`), so a message published anywhere after the client
//! saw its SUBACK reaches it.

use std::sync::Arc;

use ringmq_proto::mqtt::{
    Packet, Properties, Property, ReasonCode, SubAck, Subscribe, SubscriptionOptions, UnsubAck,
    Unsubscribe, Version,
};
use ringmq_proto::topic::{self, Filter};

use super::Io;
use super::msg::Interest;
use super::{Broker, Msg};
use crate::broker::session::{Message, SessionId, SubIds, SubRef, Subscription};
use crate::broker::topics::{NodeId, NodeValue};
use crate::config::defaults::MAX_SHARDS;
use ringmq_shard::conn::ConnKey;

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
    groups: Vec<ShareGroup>,
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
    pub fn groups(&self) -> &[ShareGroup] {
        match self {
            SubsNode::Many(m) => &m.groups,
            _ => &[],
        }
    }

    pub fn groups_mut(&mut self) -> &mut [ShareGroup] {
        match self {
            SubsNode::Many(m) => &mut m.groups,
            _ => &mut [],
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

    /// The groups, to add one (the subscriptions move to the heap).
    pub fn groups_vec(&mut self) -> &mut Vec<ShareGroup> {
        &mut self.many().groups
    }

    /// Removes the group at `i`.
    pub fn remove_group(&mut self, i: usize) {
        if let SubsNode::Many(m) = self {
            m.groups.swap_remove(i);
        }
        self.tidy();
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
                groups: Vec::new(),
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

/// Other shards' interest at one filter: a bit per shard.
#[derive(Default)]
pub(super) struct InterestNode {
    pub shards: u128,
    pub groups: Vec<(Arc<str>, u128)>,
}

impl NodeValue for InterestNode {
    fn is_empty(&self) -> bool {
        self.shards == 0 && self.groups.is_empty()
    }
}

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

/// A SUBACK waiting for the other shards to apply interest `seq`, and the retained
/// messages to send after it.
pub(super) struct PendingSuback {
    seq: u64,
    conn: ConnKey,
    sid: SessionId,
    pkid: u16,
    codes: Vec<u8>,
    /// Why a filter was refused, for the Reason String (MQTT 5).
    why: Option<&'static str>,
    retained: Vec<(Box<str>, SubscriptionOptions, u32)>,
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
fn interest_prefix(filter: &str, depth: usize) -> &str {
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

/// Whether every topic the (valid) filter `filter` matches is also matched by `outer`:
/// a subscription to `filter` lies within `outer`. `a/+` lies within `a/#` and `+/+`;
/// `a/#` does not lie within `a/+`.
fn filter_within(filter: &str, outer: &str) -> bool {
    // A wildcard first level never matches `$` topics (MQTT-4.7.2-1).
    if filter.starts_with('$') && outer.starts_with(['+', '#']) {
        return false;
    }
    let mut f = topic::levels(filter);
    let mut o = topic::levels(outer);
    loop {
        match (o.next(), f.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The advertised form of a prefix cut at a `/`: `a/b/` → `a/b/#`.
fn advertised_filter(prefix: &str) -> Box<str> {
    if prefix.ends_with('/') {
        format!("{prefix}#").into()
    } else {
        prefix.into()
    }
}

impl Broker {
    pub(super) fn on_subscribe(&mut self, io: &mut Io, key: ConnKey, s: Subscribe<'_>) {
        let Some((sid, version)) = io.state(key).and_then(|c| Some((c.session?, c.version())))
        else {
            return;
        };
        let sub_id = s.properties.subscription_identifiers().next().unwrap_or(0);
        let max_subs = self.config().max_subscriptions;
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        // The Reason String of the SUBACK: why the first refused filter was refused.
        let mut why: Option<&'static str> = None;
        let mut refuse = |code: ReasonCode, reason: &'static str| {
            why.get_or_insert(reason);
            match version {
                Version::V5 => code.0,
                // MQTT-3.9.3-2: 3.1.1 has one failure code.
                Version::V311 => 0x80,
            }
        };
        for (filter, opts) in s.filters.iter() {
            let parsed = match topic::parse_filter(filter) {
                Ok(p) => p,
                Err(_) => {
                    codes.push(refuse(
                        ReasonCode::TOPIC_FILTER_INVALID,
                        "invalid topic filter",
                    ));
                    continue;
                }
            };
            if matches!(parsed, Filter::Shared { .. }) && opts.no_local {
                // MQTT-3.8.3-4.
                return self.protocol_error(
                    io,
                    key,
                    ReasonCode::PROTOCOL_ERROR,
                    "No Local on a shared subscription",
                );
            }
            let denied = self
                .config()
                .deny_subscribe
                .iter()
                .any(|d| filter_within(parsed.filter(), d));
            if denied {
                // 0x80 rather than 0x87 Not authorized: the broker does not say why
                // (MQTT 5 §3.9.3 allows either; the Paho interoperability suite expects
                // 0x80).
                codes.push(refuse(
                    ReasonCode::UNSPECIFIED_ERROR,
                    "subscriptions to this topic filter are not allowed",
                ));
                continue;
            }
            let share = matches!(parsed, Filter::Shared { .. }).then_some(filter);
            let node = self.subs.find(parsed.filter());
            let Some(session) = self.session_mut(sid) else {
                return;
            };
            let existing = node.filter(|&n| session.has_sub(n, share));
            if existing.is_none() && session.subs_len() >= max_subs {
                codes.push(refuse(
                    ReasonCode::QUOTA_EXCEEDED,
                    "too many subscriptions in this session",
                ));
                continue;
            }
            let is_new = existing.is_none();
            match existing {
                // MQTT-3.8.4-3: a subscription to the same filter replaces the old one,
                // in place, so no message matching both is lost in between.
                Some(node) => self.update_subscription(sid, node, share, opts, sub_id),
                None => {
                    if let Some(r) = self.add_subscription(sid, filter, opts, sub_id)
                        && let Some(session) = self.session_mut(sid)
                    {
                        session.add_sub(r);
                    }
                }
            }
            codes.push(opts.qos as u8);
            // Retained messages: not for shared subscriptions (MQTT-3.8.4-? / MQTT 5
            // §4.8.2), and as the Retain Handling option says (MQTT-3.3.1-9, -10, -11).
            let send_retained = !matches!(parsed, Filter::Shared { .. })
                && match opts.retain_handling {
                    0 => true,
                    1 => is_new,
                    _ => false,
                };
            if send_retained {
                retained.push((Box::<str>::from(filter), opts, sub_id));
            }
        }
        let seq = if retained.is_empty() {
            self.interest_seq
        } else {
            self.barrier()
        };
        let pending = PendingSuback {
            seq,
            conn: key,
            sid,
            pkid: s.pkid,
            codes,
            why,
            retained,
        };
        if self.interest_applied_everywhere(pending.seq) && self.pending_subacks.is_empty() {
            self.send_suback(io, pending);
        } else {
            self.pending_subacks.push_back(pending);
        }
    }

    /// A sequence number every other shard acknowledges only after handling everything
    /// it sent this shard before: once acknowledged, every retained message published
    /// anywhere before now is in this shard's store. An interest change still waiting in
    /// the outbox serves; otherwise a `Barrier` goes out.
    fn barrier(&mut self) -> u64 {
        if self.shards == 1 || (self.outbox_seq != 0 && self.outbox_seq == self.interest_seq) {
            return self.interest_seq;
        }
        self.interest_seq += 1;
        let seq = self.interest_seq;
        for to in (0..self.shards).filter(|&to| to != self.id) {
            self.outbox.push((to, Msg::Barrier { seq }));
        }
        self.outbox_seq = seq;
        seq
    }

    fn interest_applied_everywhere(&self, seq: u64) -> bool {
        (0..self.shards).all(|s| s == self.id || self.interest_acked[s] >= seq)
    }

    pub(super) fn release_subacks(&mut self, io: &mut Io) {
        while let Some(p) = self.pending_subacks.front() {
            if !self.interest_applied_everywhere(p.seq) {
                break;
            }
            let p = self.pending_subacks.pop_front().expect("front exists");
            self.send_suback(io, p);
        }
    }

    fn send_suback(&mut self, io: &mut Io, p: PendingSuback) {
        let Some(version) = io.state(p.conn).map(|c| c.version()) else {
            return;
        };
        let bare = Packet::SubAck(SubAck {
            pkid: p.pkid,
            properties: Properties::EMPTY,
            codes: &p.codes,
        });
        match p.why {
            Some(why) => {
                let props = [Property::ReasonString(why)];
                let full = Packet::SubAck(SubAck {
                    pkid: p.pkid,
                    properties: Properties::List(&props),
                    codes: &p.codes,
                });
                Broker::write_answer(io, &self.stats, p.conn, version, &full, &bare);
            }
            None => {
                Broker::write_packet(io, &self.stats, p.conn, version, &bare);
            }
        }
        for (filter, opts, sub_id) in p.retained {
            self.send_retained(io, p.sid, &filter, opts, sub_id);
        }
    }

    pub(super) fn on_unsubscribe(&mut self, io: &mut Io, key: ConnKey, u: Unsubscribe<'_>) {
        let Some((sid, version)) = io.state(key).and_then(|c| Some((c.session?, c.version())))
        else {
            return;
        };
        let mut codes = Vec::with_capacity(u.filters.len());
        for filter in u.filters.iter() {
            // A filter the session holds is valid and has its node in the table.
            let found = topic::parse_filter(filter).ok().and_then(|parsed| {
                let share = matches!(parsed, Filter::Shared { .. }).then_some(filter);
                Some((self.subs.find(parsed.filter())?, share))
            });
            let Some(session) = self.session_mut(sid) else {
                return;
            };
            match found {
                Some((node, share)) if session.remove_sub(node, share) => {
                    self.remove_subscription(sid, node, share);
                    codes.push(ReasonCode::SUCCESS.0);
                }
                _ => codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED.0),
            }
        }
        let codes: &[u8] = if version == Version::V5 { &codes } else { &[] };
        let pkt = Packet::UnsubAck(UnsubAck {
            pkid: u.pkid,
            properties: Properties::EMPTY,
            codes,
        });
        Broker::write_packet(io, &self.stats, key, version, &pkt);
    }

    /// Puts a subscription of session `sid` to `filter` (valid) in the topic table and
    /// tells other shards. Returns what the session keeps of it.
    pub(super) fn add_subscription(
        &mut self,
        sid: SessionId,
        filter: &str,
        opts: SubscriptionOptions,
        sub_id: u32,
    ) -> Option<SubRef> {
        let parsed = topic::parse_filter(filter).ok()?;
        let entry = Subscriber { sid, opts, sub_id };
        match parsed {
            Filter::Plain(f) => {
                let node = self.subs.insert(f);
                self.subs.get_mut(node).push_plain(entry);
                let prefix = interest_prefix(f, self.config().route_depth);
                self.advertise(prefix, None, true);
                Some(SubRef { node, share: None })
            }
            Filter::Shared { filter: plain, .. } => {
                let node = self.subs.insert(plain);
                let groups = self.subs.get_mut(node).groups_vec();
                let share: Arc<str> = match groups.iter_mut().find(|g| &*g.share == filter) {
                    Some(g) => {
                        g.members.push(entry);
                        g.share.clone()
                    }
                    None => {
                        let share: Arc<str> = Arc::from(filter);
                        groups.push(ShareGroup {
                            share: share.clone(),
                            members: vec![entry],
                            next: 0,
                        });
                        share
                    }
                };
                self.advertise(plain, Some(share.clone()), true);
                Some(SubRef {
                    node,
                    share: Some(share),
                })
            }
        }
    }

    /// The entry of session `sid` at `node` (in group `share`, for a shared
    /// subscription).
    fn subscriber_mut(
        &mut self,
        sid: SessionId,
        node: NodeId,
        share: Option<&str>,
    ) -> Option<&mut Subscriber> {
        let v = self.subs.get_mut(node);
        match share {
            None => v.plain_mut().iter_mut().find(|s| s.sid == sid),
            Some(share) => v
                .groups_mut()
                .iter_mut()
                .find(|g| &*g.share == share)
                .and_then(|g| g.members.iter_mut().find(|s| s.sid == sid)),
        }
    }

    /// Changes the options of a subscription already in the topic table.
    fn update_subscription(
        &mut self,
        sid: SessionId,
        node: NodeId,
        share: Option<&str>,
        opts: SubscriptionOptions,
        sub_id: u32,
    ) {
        if let Some(e) = self.subscriber_mut(sid, node, share) {
            e.opts = opts;
            e.sub_id = sub_id;
        }
    }

    /// A session's subscriptions spelled out (filter, options, identifier), for a move to
    /// another shard.
    pub(super) fn spell_out_subs(&mut self, sid: SessionId, subs: &[SubRef]) -> Vec<Subscription> {
        let mut out = Vec::with_capacity(subs.len());
        for r in subs {
            let Some(e) = self
                .subscriber_mut(sid, r.node, r.share.as_deref())
                .copied()
            else {
                continue;
            };
            let filter = match &r.share {
                Some(share) => (**share).into(),
                None => self.subs.path_of(r.node).into(),
            };
            out.push(Subscription {
                filter,
                opts: e.opts,
                sub_id: e.sub_id,
            });
        }
        out
    }

    /// Takes the subscription of session `sid` at `node` (in group `share`, for a shared
    /// one) out of the topic table.
    pub(super) fn remove_subscription(
        &mut self,
        sid: SessionId,
        node: NodeId,
        share: Option<&str>,
    ) {
        let value = self.subs.get_mut(node);
        let removed_share = match share {
            None => {
                if !value.remove_plain(sid) {
                    return;
                }
                None
            }
            Some(share) => {
                let groups = value.groups_mut();
                let Some(gi) = groups.iter().position(|g| &*g.share == share) else {
                    return;
                };
                let g = &mut groups[gi];
                g.members.retain(|s| s.sid != sid);
                let share = g.share.clone();
                if g.members.is_empty() {
                    value.remove_group(gi);
                }
                Some(share)
            }
        };
        // Only other shards hear about interest: a single shard needs no filter here.
        let plain = if self.shards > 1 {
            self.subs.path_of(node)
        } else {
            String::new()
        };
        self.subs.prune(node);
        match removed_share {
            None => {
                let prefix = interest_prefix(&plain, self.config().route_depth);
                self.advertise(prefix, None, false);
            }
            Some(share) => self.advertise(&plain, Some(share), false),
        }
    }

    /// Counts local interest in `prefix` (or in the exact filter of a shared group) and
    /// tells every other shard when it appears or disappears. Plain interest lingers for
    /// [`INTEREST_LINGER_MS`] after its last subscriber here leaves: a client that
    /// reconnects and subscribes again (the usual churn) costs no broadcast, and other
    /// shards keep routing to this one meanwhile, so a message published just after such
    /// a SUBSCRIBE reached this shard does not depend on the interest having travelled
    /// first. A group's interest goes at once: a publisher picks one shard per group, and
    /// must not pick one without members.
    fn advertise(&mut self, prefix: &str, share: Option<Arc<str>>, add: bool) {
        if self.shards == 1 {
            return;
        }
        let key: Box<str> = match &share {
            Some(s) => (**s).into(),
            None => prefix.into(),
        };
        let lingers = share.is_none();
        let now = self.clock_ms.max(1);
        let entry = self.advertised.entry(key.clone()).or_default();
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
                    self.lingering.push_back((key, now));
                }
                return;
            }
            self.advertised.remove(&key);
        }
        if changed {
            self.broadcast_interest(prefix, share, add);
        }
    }

    /// Each tick: plain interest idle for [`INTEREST_LINGER_MS`] is withdrawn.
    pub(super) fn withdraw_idle_interest(&mut self) {
        let now = self.clock_ms;
        while let Some((key, since)) = self.lingering.front() {
            if since + INTEREST_LINGER_MS > now {
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
                self.broadcast_interest(&key, None, false);
            }
        }
    }

    /// Tells every other shard that this one has (`add`) or no longer has subscribers
    /// for a prefix (or a shared group's filter).
    fn broadcast_interest(&mut self, prefix: &str, share: Option<Arc<str>>, add: bool) {
        self.interest_seq += 1;
        let seq = self.interest_seq;
        let filter = if share.is_some() {
            prefix.into()
        } else {
            advertised_filter(prefix)
        };
        for to in 0..self.shards {
            if to != self.id {
                let msg = Msg::Interest(Box::new(Interest {
                    filter: filter.clone(),
                    share: share.clone(),
                    add,
                    seq,
                }));
                // Interest must not wait behind a local inbox; it goes straight to the peer.
                self.outbox.push((to, msg));
            }
        }
        self.outbox_seq = seq;
    }

    /// Another shard gained or lost interest in `filter`.
    pub(super) fn apply_interest(
        &mut self,
        from: usize,
        filter: &str,
        share: Option<Arc<str>>,
        add: bool,
    ) {
        if from >= MAX_SHARDS {
            return;
        }
        let bit = 1u128 << from;
        let node = if add {
            self.interest.insert(filter)
        } else {
            match self.interest.find(filter) {
                Some(n) => n,
                None => return,
            }
        };
        let v = self.interest.get_mut(node);
        match share {
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
            self.interest.prune(node);
        }
    }

    /// Stores a retained message (an empty payload clears the topic) if it is newer than
    /// what this shard holds.
    pub(super) fn store_retained(&mut self, msg: Arc<Message>, version: u64) {
        let topic = msg.topic().to_owned();
        if msg.payload().is_empty() {
            if let Some(node) = self.retained.find(&topic) {
                let v = self.retained.get_mut(node);
                if v.msg.as_ref().is_none_or(|(_, have)| *have < version) {
                    v.msg = None;
                    self.retained.prune(node);
                }
            }
            return;
        }
        let node = self.retained.insert(&topic);
        let v = self.retained.get_mut(node);
        if v.msg.as_ref().is_none_or(|(_, have)| *have < version) {
            v.msg = Some((msg, version));
        }
    }

    /// Sends the retained messages matching a new subscription, with RETAIN set.
    fn send_retained(
        &mut self,
        io: &mut Io,
        sid: SessionId,
        filter: &str,
        opts: SubscriptionOptions,
        sub_id: u32,
    ) {
        let mut found: Vec<Arc<Message>> = Vec::new();
        let now = std::time::Instant::now();
        self.retained.match_filter(filter, |_, v| {
            if let Some((m, _)) = &v.msg
                && !m.is_expired(now)
            {
                found.push(m.clone());
            }
        });
        for m in found {
            let qos = m.qos.min(opts.qos);
            let mut src = super::fanout::Src::from_arc(&m, self.id);
            self.deliver(io, sid, &mut src, qos, true, SubIds::one(sub_id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_within_filters() {
        for (f, outer) in [
            ("test/nosubscribe", "test/nosubscribe"),
            ("a/b", "a/#"),
            ("a", "a/#"),
            ("a/+/c", "a/#"),
            ("a/+", "+/+"),
            ("a/#", "#"),
            ("$SYS/x", "$SYS/#"),
        ] {
            assert!(filter_within(f, outer), "{f} within {outer}");
        }
        for (f, outer) in [
            ("a/#", "a/+"),
            ("a/+", "a/b"),
            ("#", "a/#"),
            ("a/b/c", "a/b"),
            ("a", "a/b"),
            ("$SYS/x", "#"),
            ("$SYS/x", "+/x"),
            ("test/nosubscribe/x", "test/nosubscribe"),
        ] {
            assert!(!filter_within(f, outer), "{f} not within {outer}");
        }
        // Every topic the inner filter matches is matched by the outer one.
        for (f, outer) in [("a/+/c", "a/#"), ("+/b", "+/+")] {
            for t in ["a/x/c", "q/b", "a/b/c"] {
                if topic::matches(f, t) {
                    assert!(topic::matches(outer, t));
                }
            }
        }
    }

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
        v.groups_vec().push(ShareGroup {
            share: "$share/g/t".into(),
            members: vec![sub(4)],
            next: 0,
        });
        assert_eq!((v.plain().len(), v.groups().len()), (1, 1));
        assert!(v.remove_plain(sid(2)));
        assert!(!v.is_empty(), "the group is left");
        v.remove_group(0);
        assert!(v.is_empty());
    }

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
