//! PUBLISH: in from a client, routed to the matching sessions on this shard and to the
//! shards that have matching subscribers, and out to each subscriber with its QoS
//! flow (packet ids, in-flight window, offline queue, acknowledgements).
//!
//! A message that only reaches QoS 0 subscribers on this shard is delivered straight
//! from the receive buffer, with no allocation; it is copied into one shared
//! `Arc<Message>` the first time something must keep it (another shard, a QoS 1/2
//! delivery, an offline queue, the retained store).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringmq_proto::mqtt::{
    Packet, Properties, Property, PubResp, Publish, PublishTemplate, QoS, ReasonCode, Version,
};
use ringmq_proto::topic;

use super::Io;
use super::msg::Forward;
use super::{Broker, BrokerStats, Msg};
use crate::broker::session::{Inflight, Message, OutState, Queued, SessionId, SubIds};
use ringmq_shard::conn::CloseReason;
use ringmq_shard::conn::ConnKey;

/// Buffers reused by every publish, so routing allocates nothing in steady state.
#[derive(Default)]
pub(super) struct Scratch {
    targets: Vec<Target>,
    groups: Vec<(Arc<str>, bool, u128)>,
    /// Forwarded properties of the message being routed.
    fwd: Vec<u8>,
    /// Properties of the PUBLISH being written.
    props: Vec<u8>,
    /// The topic behind a topic alias.
    topic: String,
    /// One message's fan-out encodes its PUBLISH once per variant (version, QoS, RETAIN,
    /// DUP) and stamps each subscriber's copy with its packet id: `enc` holds the last
    /// encoding, `enc_key` its variant. Only valid while `enc_on` (inside one
    /// `deliver_local` loop).
    enc: PublishTemplate,
    enc_key: Option<(Version, QoS, bool, bool)>,
    enc_on: bool,
}

/// One session a message goes to, after overlapping subscriptions are merged.
#[derive(Debug, Clone, Copy)]
struct Target {
    sid: SessionId,
    qos: QoS,
    retain_as_published: bool,
    sub_ids: SubIds,
}

/// A message being routed: borrowed from the packet that carried it, and shared
/// (`Arc`) once something has to keep it.
pub(super) struct Src<'a> {
    topic: &'a str,
    props: &'a [u8],
    payload: &'a [u8],
    qos: QoS,
    retain: bool,
    expires_at: Option<Instant>,
    origin: Option<(usize, SessionId)>,
    /// The shard this message came from to this one (this shard for its own publishes).
    via: usize,
    shared: Option<Arc<Message>>,
}

impl<'a> Src<'a> {
    /// What a PUBLISH of this message is written from.
    fn view(&self) -> View<'a> {
        View {
            topic: self.topic,
            props: self.props,
            payload: self.payload,
            expires_at: self.expires_at,
        }
    }

    pub(super) fn from_arc(m: &'a Arc<Message>, via: usize) -> Src<'a> {
        Src {
            topic: m.topic(),
            props: m.props(),
            payload: m.payload(),
            qos: m.qos,
            retain: m.retain,
            expires_at: m.expires_at,
            origin: m.origin,
            via,
            shared: Some(m.clone()),
        }
    }

    fn shared(&mut self) -> Arc<Message> {
        self.shared
            .get_or_insert_with(|| {
                Arc::new(Message::new(
                    self.topic,
                    self.props,
                    self.payload,
                    self.qos,
                    self.retain,
                    self.expires_at,
                    self.origin,
                ))
            })
            .clone()
    }
}

/// What became of a PUBLISH written to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    Sent,
    /// Larger than the client accepts: dropped for this client (and counted).
    TooLarge,
    /// The connection is closing or gone: not sent, and not lost for a session that
    /// outlives it.
    NotSent,
}

/// Copies the MQTT 5 properties a PUBLISH (or will) forwards to subscribers into `out`,
/// and returns its Message Expiry Interval (kept apart: it is rewritten per delivery).
/// Topic aliases and subscription identifiers are per connection and not forwarded
/// (MQTT-3.3.2-7, MQTT-3.3.4-6); the rest go unaltered (MQTT-3.3.2-4, -3.3.2-15,
/// -3.3.2-16, -3.3.2-17, -3.3.2-18, -3.3.2-20).
pub(super) fn forward_props(props: Properties<'_>, out: &mut Vec<u8>) -> Option<u32> {
    let mut expiry = None;
    for p in props.iter() {
        match p {
            Property::MessageExpiryInterval(s) => expiry = Some(s),
            Property::PayloadFormatIndicator(_)
            | Property::ContentType(_)
            | Property::ResponseTopic(_)
            | Property::CorrelationData(_)
            | Property::UserProperty(..) => p.write_to(out),
            _ => {}
        }
    }
    expiry
}

impl Broker {
    pub(super) fn on_publish(&mut self, io: &mut Io, key: ConnKey, p: Publish<'_>) {
        self.stats.messages_in.add(1);
        let receive_maximum = self.config().max_inflight;
        let Some(client) = io.state(key) else { return };
        let Some(sid) = client.session else { return };
        let version = client.version();
        // Topic aliases (MQTT 5 §3.3.2.3.4): set one with a topic, use one without.
        let mut topic_buf = std::mem::take(&mut self.fan.topic);
        topic_buf.clear();
        if let Some(alias) = p.properties.topic_alias() {
            let max = self.config().topic_alias_max;
            if alias == 0 || alias > max {
                self.fan.topic = topic_buf;
                // MQTT-3.3.2-9, -3.3.2-10.
                return self.protocol_error(
                    io,
                    key,
                    ReasonCode::TOPIC_ALIAS_INVALID,
                    "topic alias out of range",
                );
            }
            let slot = alias as usize - 1;
            let aliases = &mut client.extra_mut().aliases;
            if aliases.len() <= slot {
                aliases.resize(slot + 1, None);
            }
            if p.topic.is_empty() {
                match &aliases[slot] {
                    Some(t) => topic_buf.push_str(t),
                    None => {
                        self.fan.topic = topic_buf;
                        return self.protocol_error(
                            io,
                            key,
                            ReasonCode::PROTOCOL_ERROR,
                            "unknown topic alias",
                        );
                    }
                }
            } else {
                aliases[slot] = Some(p.topic.into());
                topic_buf.push_str(p.topic);
            }
        } else {
            topic_buf.push_str(p.topic);
        }
        if topic::validate_name(&topic_buf).is_err() {
            self.fan.topic = topic_buf;
            return self.protocol_error(
                io,
                key,
                ReasonCode::TOPIC_NAME_INVALID,
                "invalid topic name",
            );
        }
        // A QoS 2 PUBLISH whose id waits for PUBREL was delivered already (MQTT 4.3.3,
        // MQTT-4.3.3-9): answered again, not delivered twice.
        let (duplicate, waiting) = match self.session(sid) {
            Some(s) if p.qos == QoS::ExactlyOnce => s.extra().map_or((false, 0), |e| {
                (e.inbound_qos2.contains(&p.pkid), e.inbound_qos2.len())
            }),
            _ => (false, 0),
        };
        if !duplicate && version == Version::V5 && waiting >= receive_maximum as usize {
            // MQTT-3.3.4-8: more QoS 2 messages unreleased than the Receive Maximum the
            // broker gave in CONNACK.
            self.fan.topic = topic_buf;
            return self.protocol_error(
                io,
                key,
                ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
                "more unacknowledged QoS 2 messages than the receive maximum",
            );
        }
        if !duplicate {
            let mut fwd = std::mem::take(&mut self.fan.fwd);
            fwd.clear();
            let expiry = if version == Version::V5 {
                forward_props(p.properties, &mut fwd)
            } else {
                None
            };
            let mut src = Src {
                topic: &topic_buf,
                props: &fwd,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                expires_at: expiry.map(|s| Instant::now() + Duration::from_secs(s as u64)),
                origin: Some((self.id, sid)),
                via: self.id,
                shared: None,
            };
            if p.retain {
                let m = src.shared();
                self.retain(io, m);
            }
            self.route(io, &mut src);
            self.fan.fwd = fwd;
        }
        self.fan.topic = topic_buf;
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                let ack = Packet::PubAck(PubResp {
                    pkid: p.pkid,
                    reason: ReasonCode::SUCCESS,
                    properties: Properties::EMPTY,
                });
                Broker::write_packet(io, &self.stats, key, version, &ack);
            }
            QoS::ExactlyOnce => {
                if !duplicate && let Some(s) = self.session_mut(sid) {
                    s.extra_mut().inbound_qos2.push(p.pkid);
                }
                let rec = Packet::PubRec(PubResp {
                    pkid: p.pkid,
                    reason: ReasonCode::SUCCESS,
                    properties: Properties::EMPTY,
                });
                Broker::write_packet(io, &self.stats, key, version, &rec);
            }
        }
        self.publishes_this_turn += 1;
        // Back-pressure: a shard that cannot send as fast as it is fed pauses this
        // publisher for a while, instead of dropping messages: what it sends meanwhile is
        // held (`take_up`) until `on_resume`.
        self.pause_publisher_if_pressured(io, key);
    }

    /// Publishes a message made by the broker (a will, `$SYS`).
    pub(super) fn publish_message(&mut self, io: &mut Io, m: &Arc<Message>) {
        if m.retain {
            self.retain(io, m.clone());
        }
        let mut src = Src::from_arc(m, self.id);
        self.route(io, &mut src);
    }

    /// Stores a retained message here and on every other shard.
    fn retain(&mut self, io: &mut Io, m: Arc<Message>) {
        let version = self.shared.retain_clock.fetch_add(1, Ordering::Relaxed);
        for to in 0..self.shards {
            if to != self.id {
                io.send_to_shard(
                    to,
                    Msg::Retain {
                        msg: m.clone(),
                        version,
                    },
                );
            }
        }
        self.store_retained(m, version);
    }

    /// Delivers a message published on this shard: to local subscribers, to the shards
    /// with matching interest, and to one member of each matching shared group.
    fn route(&mut self, io: &mut Io, src: &mut Src<'_>) {
        let mut groups = std::mem::take(&mut self.fan.groups);
        groups.clear();
        self.deliver_local(io, src, Some(&mut groups));
        if self.shards > 1 {
            let mut mask = 0u128;
            self.interest.match_topic(src.topic, |_, v| {
                mask |= v.shards;
                for (share, m) in &v.groups {
                    match groups.iter_mut().find(|g| g.0 == *share) {
                        Some(g) => g.2 |= m,
                        None => groups.push((share.clone(), false, *m)),
                    }
                }
            });
            mask &= !(1u128 << self.id);
            let overflow_limit = self.config().mesh_overflow_limit;
            while mask != 0 {
                let to = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if src.qos == QoS::AtMostOnce && io.mesh_backlog(to) >= overflow_limit {
                    self.stats.dropped_qos0_mesh_full.add(1);
                    continue;
                }
                io.send_to_shard(to, Msg::Publish(src.shared()));
            }
        }
        // Shared subscriptions (MQTT 5 §4.8.2): each matching group gets the message
        // once, at one member, taking turns over the shards that have members.
        for (share, local, remote) in groups.drain(..) {
            let candidates = remote | if local { 1u128 << self.id } else { 0 };
            let n = candidates.count_ones();
            if n == 0 {
                continue;
            }
            let rr = self.share_rr.entry(share.clone()).or_insert(0);
            let mut pick = *rr % n;
            *rr = rr.wrapping_add(1);
            let mut bits = candidates;
            while pick > 0 {
                bits &= bits - 1;
                pick -= 1;
            }
            let to = bits.trailing_zeros() as usize;
            if to == self.id {
                self.deliver_share_local(io, &share, src);
            } else {
                io.send_to_shard(
                    to,
                    Msg::ShareDeliver {
                        share,
                        msg: src.shared(),
                    },
                );
            }
        }
        self.fan.groups = groups;
    }

    /// A message from shard `from` for this shard's plain subscribers.
    pub(super) fn deliver_remote(&mut self, io: &mut Io, from: usize, m: &Arc<Message>) {
        let mut src = Src::from_arc(m, from);
        self.deliver_local(io, &mut src, None);
    }

    /// A message from shard `from` for one member of a shared group here.
    pub(super) fn deliver_share(
        &mut self,
        io: &mut Io,
        from: usize,
        share: &Arc<str>,
        m: &Arc<Message>,
    ) {
        let mut src = Src::from_arc(m, from);
        self.deliver_share_local(io, share, &mut src);
    }

    /// A delivery that reached the session's old shard after the session moved here.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn deliver_forwarded(
        &mut self,
        io: &mut Io,
        from: usize,
        client_id: &str,
        m: &Arc<Message>,
        qos: QoS,
        retain: bool,
        sub_ids: SubIds,
    ) {
        // Gone on (or ended) meanwhile: the move after this one forwards what it holds,
        // not this.
        let Some(sid) = self.by_client.get(&self.sessions, client_id) else {
            return;
        };
        let mut src = Src::from_arc(m, from);
        self.deliver(io, sid, &mut src, qos, retain, sub_ids);
    }

    fn deliver_share_local(&mut self, io: &mut Io, share: &str, src: &mut Src<'_>) {
        let Ok(parsed) = topic::parse_filter(share) else {
            return;
        };
        let Some(node) = self.subs.find(parsed.filter()) else {
            return;
        };
        let Some(g) = self
            .subs
            .get_mut(node)
            .groups_mut()
            .iter_mut()
            .find(|g| &*g.share == share)
        else {
            return;
        };
        let n = g.members.len();
        if n == 0 {
            return;
        }
        let start = g.next as usize % n;
        g.next = g.next.wrapping_add(1);
        // Prefer a connected member, taking turns; with none connected, the next in turn
        // queues it.
        let mut chosen = g.members[start];
        for i in 0..n {
            let m = g.members[(start + i) % n];
            let connected = self
                .sessions
                .get(m.sid.index as usize)
                .is_some_and(|s| s.gen_ == m.sid.gen_ && s.conn.is_some());
            if connected {
                chosen = m;
                break;
            }
        }
        let qos = src.qos.min(chosen.opts.qos);
        let retain = chosen.opts.retain_as_published && src.retain;
        self.deliver(io, chosen.sid, src, qos, retain, SubIds::one(chosen.sub_id));
    }

    /// Delivers to this shard's plain subscribers; collects shared groups that match into
    /// `groups` when given.
    fn deliver_local(
        &mut self,
        io: &mut Io,
        src: &mut Src<'_>,
        groups: Option<&mut Vec<(Arc<str>, bool, u128)>>,
    ) {
        let mut targets = std::mem::take(&mut self.fan.targets);
        targets.clear();
        let mut nodes = 0;
        let mut groups = groups;
        let origin = src.origin;
        let here = self.id;
        self.subs.match_topic(src.topic, |_, v| {
            nodes += 1;
            // MQTT-3.8.3-3: No Local keeps a client's own messages from it.
            let own =
                |s: &super::subscribe::Subscriber| s.opts.no_local && origin == Some((here, s.sid));
            targets.extend(v.plain().iter().filter(|s| !own(s)).map(|s| Target {
                sid: s.sid,
                qos: s.opts.qos,
                retain_as_published: s.opts.retain_as_published,
                sub_ids: SubIds::one(s.sub_id),
            }));
            if let Some(groups) = groups.as_deref_mut() {
                for g in v.groups() {
                    if !groups.iter().any(|x| x.0 == g.share) {
                        groups.push((g.share.clone(), true, 0));
                    }
                }
            }
        });
        if nodes > 1 {
            merge_overlapping(&mut targets);
        }
        self.fan.enc_key = None;
        self.fan.enc_on = true;
        for t in targets.iter() {
            let qos = src.qos.min(t.qos);
            // MQTT-3.3.1-12, -3.3.1-13: RETAIN as published only where asked for.
            let retain = t.retain_as_published && src.retain;
            self.deliver(io, t.sid, src, qos, retain, t.sub_ids);
        }
        self.fan.enc_on = false;
        self.fan.targets = targets;
    }

    /// Delivers one message to one session: sent now, queued (offline, or past the
    /// in-flight window), or dropped (QoS 0 to a slow or absent client), each counted.
    pub(super) fn deliver(
        &mut self,
        io: &mut Io,
        sid: SessionId,
        src: &mut Src<'_>,
        qos: QoS,
        retain: bool,
        sub_ids: SubIds,
    ) {
        // MQTT-3.3.2-5: an expired message is not delivered. (The clock is read only for
        // messages that expire.)
        if src.expires_at.is_some_and(|at| at <= Instant::now()) {
            return;
        }
        let max_queued = self.config().max_queued_messages;
        let soft_limit = self.config().out_soft_limit;
        let stats = &self.stats;
        let Some(s) = self
            .sessions
            .get_mut(sid.index as usize)
            .filter(|s| s.gen_ == sid.gen_)
        else {
            return;
        };
        if let Some(e) = s.extra_opt_mut()
            && let Some(to) = e.moved_to
        {
            // A stub: the session lives on shard `to` now. What came from a shard that
            // has fenced reaches `to` directly.
            if e.fenced & (1u128 << src.via) == 0 {
                let client_id = (*s.client_id).into();
                let msg = src.shared();
                let fwd = Msg::Forward(Box::new(Forward {
                    client_id,
                    msg,
                    qos,
                    retain,
                    sub_ids,
                }));
                io.send_to_shard(to, fwd);
            }
            return;
        }
        if let (Some(a), Some(m)) = (
            s.extra_opt_mut().and_then(|e| e.arrival.as_mut()),
            src.shared.as_ref(),
        ) {
            // Just moved here: a message may come both directly and through the stub.
            let (dup, forgot) = a.seen_before(m);
            if forgot {
                stats.dedup_window_overflow.add(1);
            }
            if dup {
                return;
            }
        }
        // A closing connection counts as gone: a session that outlives it keeps the
        // message, one that ends with it has nowhere to keep it.
        let Some(conn) = s.conn.filter(|&c| io.is_open(c)) else {
            // Offline: QoS 1 and 2 wait for the client (MQTT-3.1.2-5), the oldest
            // dropped past the bound; QoS 0 is not kept.
            if qos != QoS::AtMostOnce && s.is_persistent() {
                let q = Queued {
                    msg: src.shared(),
                    qos,
                    retain,
                    sub_ids,
                };
                let closing = s.conn.is_some();
                if s.extra_mut().enqueue(q, max_queued) {
                    self.stats.dropped_queue_full.add(1);
                } else if closing {
                    // Its connection is closing: counted until `connection_closed`.
                    self.waiting += 1;
                }
            }
            return;
        };
        let max_packet = io.state(conn).map_or(u32::MAX, |c| c.max_packet());
        if qos == QoS::AtMostOnce {
            if io.out_len(conn) > soft_limit {
                self.stats.dropped_qos0_slow_consumer.add(1);
                return;
            }
            let version = s.version;
            let view = src.view();
            let out = Out {
                qos,
                retain,
                pkid: 0,
                dup: false,
                sub_ids,
            };
            self.write_publish(io, conn, version, max_packet, &view, out);
            return;
        }
        if !s.window_open() || s.queue_len() > 0 {
            // MQTT-3.3.4-9: no more unacknowledged than the client's Receive Maximum;
            // the rest wait, in order.
            let q = Queued {
                msg: src.shared(),
                qos,
                retain,
                sub_ids,
            };
            let queue = &mut s.extra_mut().queue;
            if queue.len() < max_queued.max(1) {
                queue.push_back(q);
                self.waiting += 1;
                return;
            }
            // DESIGN "Nothing unbounded": a connected client that lets more than its
            // session's queue wait is disconnected as a slow consumer, rather than lose
            // messages while it stays. A session that outlives the connection keeps this
            // one too (its queue then drops the oldest, counted, as any offline queue).
            if s.is_persistent() {
                s.extra_mut().queue.push_back(q);
                self.waiting += 1;
            }
            self.disconnect(
                io,
                conn,
                ReasonCode::QUOTA_EXCEEDED,
                "too many messages waiting for this client",
                CloseReason::SlowConsumer,
            );
            return;
        }
        let pkid = s.extra_mut().next_pkid();
        let version = s.version;
        let view = src.view();
        let out = Out {
            qos,
            retain,
            pkid,
            dup: false,
            sub_ids,
        };
        match self.write_publish(io, conn, version, max_packet, &view, out) {
            Written::TooLarge => {}
            written => {
                let delivery = Queued {
                    msg: src.shared(),
                    qos,
                    retain,
                    sub_ids,
                };
                let Some(s) = self.session_mut(sid) else {
                    return;
                };
                let e = s.extra_mut();
                if written == Written::Sent {
                    e.inflight.push_back(Inflight {
                        pkid,
                        state: OutState::Published,
                        delivery,
                    });
                } else if e.enqueue(delivery, max_queued) {
                    // The connection is going: the message waits for the next one.
                    self.stats.dropped_queue_full.add(1);
                } else {
                    self.waiting += 1;
                }
            }
        }
    }

    /// Encodes a PUBLISH straight into the connection's send buffer, with a topic alias
    /// where the client allows them.
    fn write_publish(
        &mut self,
        io: &mut Io,
        conn: ConnKey,
        version: Version,
        max_packet: u32,
        m: &View<'_>,
        out: Out,
    ) -> Written {
        let props = &mut self.fan.props;
        props.clear();
        let mut alias = None;
        if version == Version::V5 {
            props.extend_from_slice(m.props);
            if let Some(at) = m.expires_at {
                // MQTT-3.3.2-6: the interval forwarded is what is left of it.
                let left = at
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64()
                    .ceil() as u32;
                Property::MessageExpiryInterval(left.max(1)).write_to(props);
            }
            for &id in out.sub_ids.as_slice() {
                Property::SubscriptionIdentifier(id).write_to(props);
            }
            alias = io
                .state(conn)
                .and_then(|c| c.out_aliases())
                .and_then(|a| a.lookup(m.topic));
            if let Some((a, _)) = alias {
                Property::TopicAlias(a).write_to(props);
            }
        }
        // The same bytes for every subscriber of this fan-out: encoded once, copied.
        let same_for_all = version == Version::V311
            || (m.expires_at.is_none() && out.sub_ids.as_slice().is_empty() && alias.is_none());
        if self.fan.enc_on && same_for_all {
            return self.write_shared_publish(io, conn, version, max_packet, m, &out);
        }
        // An alias the client knows replaces the topic (MQTT-3.3.2-12 allows the
        // empty topic then).
        let topic = match alias {
            Some((_, false)) => "",
            _ => m.topic,
        };
        let pkt = Packet::Publish(Publish {
            dup: out.dup,
            qos: out.qos,
            retain: out.retain,
            topic,
            pkid: out.pkid,
            properties: Properties::Raw(props),
            payload: m.payload,
        });
        if pkt.encoded_len(version) > max_packet as usize {
            // MQTT-3.1.2-25: never send a client more than it accepts; the message is
            // dropped for this client as if delivered.
            self.stats.dropped_too_large_for_client.add(1);
            return Written::TooLarge;
        }
        if !Broker::write_packet(io, &self.stats, conn, version, &pkt) {
            return Written::NotSent;
        }
        self.stats.messages_out.add(1);
        if let Some((a, true)) = alias
            && let Some(aliases) = io.state(conn).and_then(|c| c.out_aliases())
        {
            aliases.set(m.topic, a);
        }
        Written::Sent
    }

    /// `write_publish` for a delivery whose bytes are the same for every subscriber of
    /// this fan-out but for the packet id: encodes once per variant, then copies.
    fn write_shared_publish(
        &mut self,
        io: &mut Io,
        conn: ConnKey,
        version: Version,
        max_packet: u32,
        m: &View<'_>,
        out: &Out,
    ) -> Written {
        let key = (version, out.qos, out.retain, out.dup);
        let fan = &mut self.fan;
        if fan.enc_key != Some(key) {
            let props = if version == Version::V5 { m.props } else { &[] };
            let publish = Publish {
                dup: out.dup,
                qos: out.qos,
                retain: out.retain,
                topic: m.topic,
                pkid: out.pkid.max(1),
                properties: Properties::Raw(props),
                payload: m.payload,
            };
            if fan.enc.encode(&publish, version).is_err() {
                fan.enc_key = None;
                return Written::NotSent;
            }
            fan.enc_key = Some(key);
        }
        let len = fan.enc.len();
        if len > max_packet as usize {
            self.stats.dropped_too_large_for_client.add(1);
            return Written::TooLarge;
        }
        let (template, pkid) = (&fan.enc, out.pkid);
        if !io.write_vec(conn, len, |q| template.stamp_to_vec(pkid, q)) {
            return Written::NotSent;
        }
        self.stats.packets_out.add(1);
        self.stats.messages_out.add(1);
        Written::Sent
    }

    pub(super) fn on_puback(&mut self, io: &mut Io, key: ConnKey, pkid: u16) {
        let Some(sid) = io.state(key).and_then(|c| c.session) else {
            return;
        };
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        if let Some(e) = s.extra_opt_mut()
            && let Some(i) = e.inflight_pos(pkid)
            && e.inflight[i].delivery.qos == QoS::AtLeastOnce
        {
            e.inflight.remove(i);
        }
        self.drain_queue(io, sid);
    }

    pub(super) fn on_pubrec(&mut self, io: &mut Io, key: ConnKey, pkid: u16, reason: ReasonCode) {
        let Some((sid, version)) = io.state(key).and_then(|c| Some((c.session?, c.version())))
        else {
            return;
        };
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let Some(e) = s.extra_opt_mut() else {
            return Self::answer_release(io, &self.stats, key, version, true, pkid, false);
        };
        let known = match e.inflight_pos(pkid) {
            Some(i) if reason.is_error() => {
                // The client refused the message: it is done (MQTT 5 §4.3.3).
                e.inflight.remove(i);
                self.drain_queue(io, sid);
                return;
            }
            Some(i) => {
                e.inflight[i].state = OutState::Released;
                true
            }
            None => false,
        };
        Self::answer_release(io, &self.stats, key, version, true, pkid, known);
    }

    pub(super) fn on_pubrel(&mut self, io: &mut Io, key: ConnKey, pkid: u16) {
        let Some((sid, version)) = io.state(key).and_then(|c| Some((c.session?, c.version())))
        else {
            return;
        };
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let known = match s.extra_opt_mut().and_then(|e| {
            let i = e.inbound_qos2.iter().position(|&p| p == pkid)?;
            Some((e, i))
        }) {
            Some((e, i)) => {
                e.inbound_qos2.swap_remove(i);
                true
            }
            None => false,
        };
        Self::answer_release(io, &self.stats, key, version, false, pkid, known);
    }

    /// PUBREL (after a PUBREC) or PUBCOMP (after a PUBREL): MQTT 5 says 0x92 when the
    /// packet id is unknown (3.1.1 has no codes and answers all the same, MQTT-4.3.3-11).
    fn answer_release(
        io: &mut Io,
        stats: &BrokerStats,
        key: ConnKey,
        version: Version,
        rel: bool,
        pkid: u16,
        known: bool,
    ) {
        let reason = if known || version == Version::V311 {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        let why = [Property::ReasonString("packet identifier not found")];
        let make = |properties| {
            let r = PubResp {
                pkid,
                reason,
                properties,
            };
            if rel {
                Packet::PubRel(r)
            } else {
                Packet::PubComp(r)
            }
        };
        let bare = make(Properties::EMPTY);
        if reason == ReasonCode::SUCCESS {
            Broker::write_packet(io, stats, key, version, &bare);
        } else {
            Broker::write_answer(
                io,
                stats,
                key,
                version,
                &make(Properties::List(&why)),
                &bare,
            );
        }
    }

    pub(super) fn on_pubcomp(&mut self, io: &mut Io, key: ConnKey, pkid: u16) {
        let Some(sid) = io.state(key).and_then(|c| c.session) else {
            return;
        };
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        if let Some(e) = s.extra_opt_mut()
            && let Some(i) = e.inflight_pos(pkid)
            && e.inflight[i].state == OutState::Released
        {
            e.inflight.remove(i);
        }
        self.drain_queue(io, sid);
    }

    /// After a reconnect: what was in flight goes again, PUBLISH with DUP set or PUBREL
    /// where PUBREC was seen (MQTT-4.4.0-1, MQTT-3.3.1-1). A PUBLISH larger than the new
    /// connection accepts is dropped from the window.
    pub(super) fn resend_inflight(&mut self, io: &mut Io, sid: SessionId) {
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let Some(conn) = s.conn else { return };
        let version = s.version;
        let Some(e) = s.extra() else { return };
        let inflight: Vec<Inflight> = e.inflight.iter().cloned().collect();
        let max_packet = io.state(conn).map_or(u32::MAX, |c| c.max_packet());
        for i in inflight {
            match i.state {
                OutState::Published => {
                    let m = &i.delivery.msg;
                    let view = View::of(m);
                    let d = &i.delivery;
                    let out = Out {
                        qos: d.qos,
                        retain: d.retain,
                        pkid: i.pkid,
                        dup: true,
                        sub_ids: d.sub_ids,
                    };
                    match self.write_publish(io, conn, version, max_packet, &view, out) {
                        Written::Sent => {}
                        Written::TooLarge => {
                            if let Some(e) = self.session_mut(sid).and_then(|s| s.extra_opt_mut()) {
                                e.inflight.retain(|x| x.pkid != i.pkid);
                            }
                        }
                        Written::NotSent => return,
                    }
                }
                OutState::Released => {
                    let rel = Packet::PubRel(PubResp {
                        pkid: i.pkid,
                        reason: ReasonCode::SUCCESS,
                        properties: Properties::EMPTY,
                    });
                    if !Broker::write_packet(io, &self.stats, conn, version, &rel) {
                        return;
                    }
                }
            }
        }
    }

    /// Sends queued deliveries while the in-flight window has room.
    pub(super) fn drain_queue(&mut self, io: &mut Io, sid: SessionId) {
        let now = Instant::now();
        loop {
            let Some(s) = self.session_mut(sid) else {
                return;
            };
            let Some(conn) = s.conn else { return };
            if !s.window_open() {
                return;
            }
            let version = s.version;
            let Some(e) = s.extra_opt_mut() else { return };
            let Some(q) = e.queue.pop_front() else { return };
            self.waiting = self.waiting.saturating_sub(1);
            if q.msg.is_expired(now) {
                continue;
            }
            let Some(e) = self.session_mut(sid).and_then(|s| s.extra_opt_mut()) else {
                return;
            };
            let pkid = e.next_pkid();
            let max_packet = io.state(conn).map_or(u32::MAX, |c| c.max_packet());
            let m = q.msg.clone();
            let view = View::of(&m);
            let out = Out {
                qos: q.qos,
                retain: q.retain,
                pkid,
                dup: false,
                sub_ids: q.sub_ids,
            };
            let written = self.write_publish(io, conn, version, max_packet, &view, out);
            let Some(s) = self.session_mut(sid) else {
                return;
            };
            let e = s.extra_mut();
            match written {
                Written::Sent => e.inflight.push_back(Inflight {
                    pkid,
                    state: OutState::Published,
                    delivery: q,
                }),
                Written::TooLarge => {}
                Written::NotSent => {
                    e.queue.push_front(q);
                    self.waiting += 1;
                    return;
                }
            }
        }
    }
}

/// The parts of a message a PUBLISH is written from.
struct View<'a> {
    topic: &'a str,
    props: &'a [u8],
    payload: &'a [u8],
    expires_at: Option<Instant>,
}

impl View<'_> {
    /// A stored message (queued or in flight).
    fn of(m: &Message) -> View<'_> {
        View {
            topic: m.topic(),
            props: m.props(),
            payload: m.payload(),
            expires_at: m.expires_at,
        }
    }
}

/// How one delivery goes out.
#[derive(Debug, Clone, Copy)]
struct Out {
    qos: QoS,
    retain: bool,
    pkid: u16,
    dup: bool,
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

#[cfg(test)]
mod tests {
    use super::*;

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
