//! SUBSCRIBE and UNSUBSCRIBE: the session's subscriptions in the topic table (`routing`),
//! the interest other shards are told about (`interest`), and the retained messages a new
//! subscription receives (`retained`).
//!
//! A SUBACK is held until every other shard has applied the interest the subscription
//! created (`Interest` → `InterestAck`), so a message published anywhere after the client
//! saw its SUBACK reaches it.

use ringmq_proto::mqtt::{
    Packet, Properties, Property, ReasonCode, SubAck, Subscribe, SubscriptionOptions, UnsubAck,
    Unsubscribe, Version,
};
use ringmq_proto::topic::{self, Filter};
use ringmq_shard::conn::ConnKey;

use super::client::client_flag;
use super::durable::Then;
use super::interest::{PendingSuback, interest_prefix};
use super::retained_cursor::RetainedFilter;
use super::routing::{Subscriber, level_count, subscription_cost};
use super::session::{SessionId, SubRef, Subscription};
use super::topics::NodeId;
use super::{Broker, Io};
use crate::auth::SubscribeVerdict;
use crate::store::{Record, SessionKey};

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

impl Broker {
    pub(super) fn on_subscribe(&mut self, io: &mut Io, key: ConnKey, s: Subscribe<'_>) {
        let Some((sid, version)) = io.state(key).and_then(|c| Some((c.session?, c.version())))
        else {
            return;
        };
        let sub_id = s.properties.subscription_identifiers().next().unwrap_or(0);
        let max_subs = self.config().max_subscriptions;
        let max_bytes = self.config().max_subscription_bytes;
        let max_levels = self.config().max_topic_levels;
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        let mut logged = false;
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
            let levels = level_count(parsed.filter());
            if levels > max_levels {
                // Well formed, but more than this server takes: 0x8F Topic Filter
                // invalid (MQTT 5 §3.9.3: "correctly formed but not accepted").
                self.stats.topic_levels_refused.add(1);
                codes.push(refuse(
                    ReasonCode::TOPIC_FILTER_INVALID,
                    "the topic filter has more levels than this server takes",
                ));
                continue;
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
            let verdict = io
                .state(key)
                .map_or(SubscribeVerdict::Refused, |c| c.acl.may_subscribe(filter));
            let check_each_delivery = match verdict {
                SubscribeVerdict::Refused => {
                    self.stats.acl_denied_subscribe.add(1);
                    codes.push(refuse(
                        ReasonCode::NOT_AUTHORIZED,
                        "not authorized to subscribe to this topic filter",
                    ));
                    continue;
                }
                SubscribeVerdict::Allowed {
                    check_each_delivery,
                } => check_each_delivery,
            };
            let share = matches!(parsed, Filter::Shared { .. }).then_some(filter);
            let node = self.routes.subs.find(parsed.filter());
            let Some(session) = self.sessions.get(sid) else {
                return;
            };
            let existing = node.filter(|&n| session.has_sub(n, share));
            if existing.is_none() {
                let too_many = session.subs_len() >= max_subs;
                let cost = subscription_cost(filter.len(), levels);
                if too_many || self.session_sub_bytes(sid) + cost > max_bytes {
                    self.stats.subscriptions_refused.add(1);
                    codes.push(refuse(
                        ReasonCode::QUOTA_EXCEEDED,
                        if too_many {
                            "too many subscriptions in this session"
                        } else {
                            "the session's subscriptions take too much memory"
                        },
                    ));
                    continue;
                }
            }
            let is_new = existing.is_none();
            let (store_key, durable) = (session.store_key, session.durable);
            match existing {
                // MQTT-3.8.4-3: a subscription to the same filter replaces the old one,
                // in place, so no message matching both is lost in between.
                Some(node) => self.update_subscription(sid, node, share, opts, sub_id),
                None => {
                    if let Some((r, cost)) = self.add_subscription(sid, filter, opts, sub_id) {
                        if durable && r.share.is_none() {
                            self.durable_interest_of(r.node, true);
                        }
                        if let Some(session) = self.sessions.get_mut(sid) {
                            session.add_sub(r, cost);
                        }
                    }
                }
            }
            if store_key != 0 {
                logged |= self.log(&Record::SubAdded {
                    session: SessionKey(store_key),
                    filter,
                    options: opts,
                    sub_id,
                });
            }
            codes.push(opts.qos as u8);
            if check_each_delivery && let Some(c) = io.state(key) {
                // A deny rule covers some of its topics: every delivery is checked.
                c.set_flag(client_flag::CHECK_DELIVERIES, true);
            }
            // Retained messages: not for shared subscriptions (MQTT-3.8.4-? / MQTT 5
            // §4.8.2), and as the Retain Handling option says (MQTT-3.3.1-9, -10, -11).
            let send_retained = !matches!(parsed, Filter::Shared { .. })
                && match opts.retain_handling {
                    0 => true,
                    1 => is_new,
                    _ => false,
                };
            if send_retained {
                retained.push(RetainedFilter {
                    filter: filter.into(),
                    opts,
                    sub_id,
                });
            }
        }
        let seq = if retained.is_empty() {
            self.interest.seq()
        } else {
            self.interest.barrier(&mut self.mail)
        };
        let pending = PendingSuback {
            seq,
            conn: key,
            sid,
            pkid: s.pkid,
            codes,
            why,
            retained,
            logged,
        };
        if self.interest.applied_everywhere(pending.seq) && self.interest.pending_subacks.is_empty()
        {
            self.suback_when_durable(io, pending);
        } else {
            self.interest.pending_subacks.push_back(pending);
        }
    }

    /// A SUBACK whose interest every shard has: sent once its subscriptions are durable
    /// (and after the earlier acknowledgements of its connection).
    fn suback_when_durable(&mut self, io: &mut Io, p: PendingSuback) {
        if p.logged || self.durable_acks_waiting(p.conn) {
            self.park(io, Then::Suback(Box::new(p)), None);
        } else {
            self.send_suback(io, p);
        }
    }

    pub(super) fn release_subacks(&mut self, io: &mut Io) {
        while let Some(p) = self.interest.pending_subacks.front() {
            if !self.interest.applied_everywhere(p.seq) {
                break;
            }
            let p = self
                .interest
                .pending_subacks
                .pop_front()
                .expect("front exists");
            self.suback_when_durable(io, p);
        }
    }

    pub(super) fn send_suback(&mut self, io: &mut Io, p: PendingSuback) {
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
                self.writer.answer(io, p.conn, version, &full, &bare);
            }
            None => {
                self.writer.packet(io, p.conn, version, &bare);
            }
        }
        self.queue_retained(io, p.sid, p.retained);
    }

    pub(super) fn on_unsubscribe(&mut self, io: &mut Io, key: ConnKey, u: Unsubscribe<'_>) {
        let Some(sid) = io.state(key).and_then(|c| c.session) else {
            return;
        };
        let mut codes = Vec::with_capacity(u.filters.len());
        let mut logged = false;
        for filter in u.filters.iter() {
            // A filter the session holds is valid and has its node in the table.
            let found = topic::parse_filter(filter).ok().and_then(|parsed| {
                let share = matches!(parsed, Filter::Shared { .. }).then_some(filter);
                let node = self.routes.subs.find(parsed.filter())?;
                Some((node, share, self.routes.cost_of(node, share)))
            });
            let Some(session) = self.sessions.get_mut(sid) else {
                return;
            };
            let (store_key, durable) = (session.store_key, session.durable);
            match found {
                Some((node, share, cost)) if session.remove_sub(node, share, cost) => {
                    if durable && share.is_none() {
                        self.durable_interest_of(node, false);
                    }
                    self.retained_cursors.forget_filter(sid, filter);
                    self.remove_subscription(sid, node, share);
                    if store_key != 0 {
                        logged |= self.log(&Record::SubRemoved {
                            session: SessionKey(store_key),
                            filter,
                        });
                    }
                    codes.push(ReasonCode::SUCCESS.0);
                }
                _ => codes.push(ReasonCode::NO_SUBSCRIPTION_EXISTED.0),
            }
        }
        if !logged && !self.durable_acks_waiting(key) {
            return self.send_unsuback(io, key, u.pkid, &codes);
        }
        // Sent once the removals are durable (a crash must not bring back a subscription
        // the client was told is gone), in its place among the connection's
        // acknowledgements.
        let then = Then::Unsuback {
            conn: key,
            pkid: u.pkid,
            codes: codes.into(),
        };
        self.park(io, then, None);
    }

    /// Writes an UNSUBACK; `codes` are MQTT 5's (3.1.1's has none).
    pub(super) fn send_unsuback(&mut self, io: &mut Io, key: ConnKey, pkid: u16, codes: &[u8]) {
        let Some(version) = io.state(key).map(|c| c.version()) else {
            return;
        };
        let codes: &[u8] = if version == Version::V5 { codes } else { &[] };
        let pkt = Packet::UnsubAck(UnsubAck {
            pkid,
            properties: Properties::EMPTY,
            codes,
        });
        self.writer.packet(io, key, version, &pkt);
    }

    /// Puts a subscription of session `sid` to `filter` (valid) in the topic table and
    /// tells other shards. Returns what the session keeps of it, and what it costs.
    pub(super) fn add_subscription(
        &mut self,
        sid: SessionId,
        filter: &str,
        opts: SubscriptionOptions,
        sub_id: u32,
    ) -> Option<(SubRef, usize)> {
        let parsed = topic::parse_filter(filter).ok()?;
        let entry = Subscriber { sid, opts, sub_id };
        let (node, share) = self.routes.add(&parsed, filter, entry);
        let cost = subscription_cost(filter.len(), level_count(parsed.filter()));
        self.routes.count += 1;
        self.routes.bytes += cost;
        let share = share.map(|(share, new_group)| {
            if new_group {
                self.routes.keep_turn(&share);
            }
            share
        });
        let advertised = match share {
            None => interest_prefix(parsed.filter(), self.config().route_depth),
            Some(_) => parsed.filter(),
        };
        let now = self.clock_ms;
        self.interest
            .advertise(advertised, share.clone(), true, now);
        Some((SubRef { node, share }, cost))
    }

    /// The subscription memory session `sid` holds (`routing::subscription_cost`).
    pub(super) fn session_sub_bytes(&self, sid: SessionId) -> usize {
        let Some(s) = self.sessions.get(sid) else {
            return 0;
        };
        let first = s
            .first_plain_sub()
            .map_or(0, |n| self.routes.cost_of(n, None));
        first + s.extra().map_or(0, |e| e.sub_bytes)
    }

    /// Changes the options of a subscription already in the topic table.
    pub(super) fn update_subscription(
        &mut self,
        sid: SessionId,
        node: NodeId,
        share: Option<&str>,
        opts: SubscriptionOptions,
        sub_id: u32,
    ) {
        if let Some(e) = self.routes.subscriber_mut(sid, node, share) {
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
                .routes
                .subscriber_mut(sid, r.node, r.share.as_deref())
                .copied()
            else {
                continue;
            };
            let filter = match &r.share {
                Some(share) => (**share).into(),
                None => self.routes.subs.path_of(r.node).into(),
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
        let cost = self.routes.cost_of(node, share);
        let Some(removed_share) = self.routes.remove(sid, node, share) else {
            return;
        };
        self.routes.count -= 1;
        self.routes.bytes = self.routes.bytes.saturating_sub(cost);
        // Only other shards hear about interest: a single shard needs no filter here.
        let plain = if self.peers.count > 1 {
            self.routes.subs.path_of(node)
        } else {
            String::new()
        };
        self.routes.subs.prune(node);
        let now = self.clock_ms;
        match removed_share {
            None => {
                let prefix = interest_prefix(&plain, self.config().route_depth);
                self.interest.advertise(prefix, None, false, now);
            }
            Some((share, emptied)) => {
                if emptied {
                    self.settle_share_turn(&share);
                }
                self.interest.advertise(&plain, Some(share), false, now);
            }
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
}
