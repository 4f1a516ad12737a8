//! One message to one session: sent now, queued (offline, or past the in-flight window),
//! forwarded (the session moved to another shard), or dropped (QoS 0 to a slow or absent
//! client, past a bound), each counted. Also the entry points for messages other shards
//! route here.

use std::sync::Arc;
use std::time::Instant;

use ringmq_proto::mqtt::{QoS, ReasonCode};
use ringmq_shard::conn::CloseReason;

use super::msg::{Forward, Ticket};
use super::session::{Inflight, Message, OutState, PubNumber, Queued, SessionId, SubIds};
use super::writer::{Out, Recipient, View, Written};
use super::{Broker, Io, Msg};

/// A message being routed: borrowed from the packet that carried it, and shared
/// (`Arc`) once something has to keep it.
pub(super) struct Src<'a> {
    pub topic: &'a str,
    pub props: &'a [u8],
    pub payload: &'a [u8],
    pub qos: QoS,
    pub retain: bool,
    pub expires_at: Option<Instant>,
    /// The shard and session that published it (for No Local), when known.
    pub origin: Option<(usize, SessionId)>,
    /// The shard this message came from to this one (this shard for its own publishes).
    pub via: usize,
    /// The message as kept, once something had to keep it.
    pub shared: Option<Arc<Message>>,
    /// Durability of this routing: whether other shards are asked to answer once their
    /// deliveries are durable (a QoS 1/2 PUBLISH whose acknowledgement promises it, or
    /// a message that came with such a request).
    pub track: bool,
    /// The message's id in this shard's log once stored there (0: not yet).
    pub store_id: u64,
    /// Something was logged for it on this shard.
    pub logged: bool,
    /// The log refused what it needed (a full disk or budget).
    pub refused: bool,
    /// The entry that collects other shards' answers, once one is asked for.
    pub ticket: Option<Ticket>,
    /// Answers asked for.
    pub waits: u32,
    /// A QoS 2 message from a persistent session's client: the id it got, which goes
    /// with it to every shard (see `Msg::Publish`).
    pub exact: Option<u64>,
    /// A copy sent again: only persistent sessions that never got it get it.
    pub again: bool,
    /// A retained message sent on subscribe: the receiver's ACL is always asked (a live
    /// message only when its connection has `CHECK_DELIVERIES`).
    pub replay: bool,
    /// In a cluster: which publish this is.
    pub number: Option<PubNumber>,
    /// Forwarded by the stub a session left on another node when it moved here.
    pub moved: bool,
}

impl<'a> Src<'a> {
    /// What a PUBLISH of this message is written from.
    pub fn view(&self) -> View<'a> {
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
            number: m.number,
            ..Src::nothing()
        }
    }

    /// A routing the log refused before anything was delivered (no message).
    pub(super) fn refused() -> Src<'static> {
        Src {
            refused: true,
            ..Src::nothing()
        }
    }

    /// No message: what collects answers from other shards for something else (a
    /// release).
    pub(super) fn nothing() -> Src<'static> {
        Src {
            topic: "",
            props: &[],
            payload: &[],
            qos: QoS::AtMostOnce,
            retain: false,
            expires_at: None,
            origin: None,
            via: 0,
            shared: None,
            track: false,
            store_id: 0,
            logged: false,
            refused: false,
            ticket: None,
            waits: 0,
            exact: None,
            again: false,
            replay: false,
            number: None,
            moved: false,
        }
    }

    pub fn shared(&mut self) -> Arc<Message> {
        self.shared
            .get_or_insert_with(|| {
                let mut m = Message::new(
                    self.topic,
                    self.props,
                    self.payload,
                    self.qos,
                    self.retain,
                    self.expires_at,
                    self.origin,
                );
                m.number = self.number;
                Arc::new(m)
            })
            .clone()
    }
}

impl Broker {
    /// A message from shard `from` for this shard's plain subscribers; with a ticket,
    /// answered once what this shard logged for it is durable. How many sessions it went
    /// to.
    pub(super) fn deliver_remote(
        &mut self,
        io: &mut Io,
        from: usize,
        m: &Arc<Message>,
        ticket: Option<Ticket>,
        origin: u64,
        again: bool,
    ) -> usize {
        let mut src = Src::from_arc(m, from);
        src.track = ticket.is_some();
        src.exact = (origin != 0 && self.logging()).then_some(origin);
        src.again = again;
        let reached = self.deliver_local(io, &mut src, None);
        self.answer(io, from, ticket, &src);
        reached
    }

    /// A message from shard `from` for one member of a shared group here; whether there
    /// was one.
    pub(super) fn deliver_share(
        &mut self,
        io: &mut Io,
        from: usize,
        share: &Arc<str>,
        m: &Arc<Message>,
        ticket: Option<Ticket>,
    ) -> bool {
        let mut src = Src::from_arc(m, from);
        src.track = ticket.is_some();
        let delivered = self.deliver_share_local(io, share, &mut src);
        self.answer(io, from, ticket, &src);
        delivered
    }

    /// Answers `ticket` of shard `to` once what was logged here for `src` (and whatever
    /// it was forwarded to) is durable; closes `src`'s routing without one.
    fn answer(&mut self, io: &mut Io, to: usize, ticket: Option<Ticket>, src: &Src<'_>) {
        match ticket {
            Some(ticket) => self.answer_when_durable(io, to, ticket, src),
            None => self.settle_routing(io, src),
        }
    }

    /// A delivery that reached the session's old shard after the session moved here.
    pub(super) fn deliver_forwarded(&mut self, io: &mut Io, from: usize, f: Forward) {
        let mut src = Src::from_arc(&f.msg, from);
        src.track = f.ticket.is_some();
        src.exact = (f.origin != 0 && self.logging()).then_some(f.origin);
        src.again = f.again;
        // Gone on (or ended) meanwhile: the move after this one forwards what it holds,
        // not this.
        if let Some(sid) = self.sessions.find(&f.client_id) {
            self.deliver(io, sid, &mut src, f.qos, f.retain, f.sub_ids);
        }
        self.answer(io, from, f.ticket, &src);
    }

    /// Delivers one message to one session: sent now, queued (offline, or past the
    /// in-flight window), or dropped (QoS 0 to a slow or absent client), each counted.
    /// For a persistent session each is also logged (the message stored once per shard).
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
        let Some(s) = self.sessions.get_mut(sid) else {
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
                // Whoever waits for this delivery to be durable waits for `to` too.
                let ticket = (src.track && qos != QoS::AtMostOnce && self.logging())
                    .then(|| self.wait_answer(src));
                let (origin, again) = (src.exact.unwrap_or(0), src.again);
                let fwd = Msg::Forward(Box::new(Forward {
                    client_id,
                    msg,
                    qos,
                    retain,
                    sub_ids,
                    ticket,
                    origin,
                    again,
                }));
                io.send_to_shard(to, fwd);
            }
            return;
        }
        if let Some(to) = s.extra().and_then(|e| e.moved_to_node.clone()) {
            // A stub of a session that moved to another node.
            let delivery = crate::cluster::SessionDelivery {
                client_id: (*s.client_id).into(),
                qos,
                retain,
                sub_ids: sub_ids.as_slice().to_vec(),
            };
            self.cluster_forward(io, src, to, delivery);
            return;
        }
        // Moved here from another node lately: a copy may come both straight and
        // through the stub there, or be one the session had there.
        if src.number.is_some()
            && s.extra().is_some_and(|e| e.from_node.is_some())
            && !self.cluster_admit(io, sid, src, qos, retain, sub_ids)
        {
            return;
        }
        self.deliver_here(io, sid, src, qos, retain, sub_ids);
    }

    /// [`Broker::deliver`] to a session that lives on this shard, once it is clear that
    /// it gets this copy.
    pub(super) fn deliver_here(
        &mut self,
        io: &mut Io,
        sid: SessionId,
        src: &mut Src<'_>,
        qos: QoS,
        retain: bool,
        sub_ids: SubIds,
    ) {
        let max_queued = self.config().max_queued_messages;
        let soft_limit = self.config().out_soft_limit;
        let stats = &self.stats;
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
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
        let key = s.store_key;
        let persistent = s.is_persistent();
        if src.again && key == 0 {
            // A copy sent again goes only where it is logged whether it came.
            return;
        }
        if let Some(id) = src.exact
            && key != 0
            && !self.see(key, id, src)
        {
            return;
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        // A closing connection counts as gone: a session that outlives it keeps the
        // message, one that ends with it has nowhere to keep it.
        let Some(conn) = s.conn.filter(|&c| io.is_open(c)) else {
            // Offline: QoS 1 and 2 wait for the client (MQTT-3.1.2-5), the oldest
            // dropped past the bound; QoS 0 is not kept.
            if qos != QoS::AtMostOnce && persistent {
                let closing = s.conn.is_some();
                self.enqueue(sid, key, src, qos, retain, sub_ids, closing);
            }
            return;
        };
        // One look at the connection: its rules (asked for a retained message, and for a
        // live one when a deny rule reaches into its subscriptions) and its packet limit.
        let (allowed, max_packet) = io.state(conn).map_or((true, u32::MAX), |c| {
            let allowed = if src.replay {
                c.acl.may_receive(src.topic)
            } else {
                c.may_receive_live(src.topic)
            };
            (allowed, c.max_packet())
        });
        if !allowed {
            self.stats.acl_denied_delivery.add(1);
            return;
        }
        let to = Recipient {
            conn,
            version: s.version,
            max_packet,
        };
        if qos == QoS::AtMostOnce {
            if io.out_len(conn) > soft_limit {
                self.stats.dropped_qos0_slow_consumer.add(1);
                if self.webhooks.is_some()
                    && let Some(s) = self.sessions.get(sid)
                {
                    self.event_dropped(Some(&s.client_id), src.topic, qos, "slow_consumer");
                }
                return;
            }
            let out = Out::first(qos, retain, sub_ids, 0);
            self.writer.publish(io, to, &src.view(), out);
            return;
        }
        if !s.window_open() || s.queue_len() > 0 {
            // MQTT-3.3.4-9: no more unacknowledged than the client's Receive Maximum;
            // the rest wait, in order.
            let full = s.queue_len() >= max_queued.max(1);
            if full && !persistent {
                // Every queue is bounded: a connected client that lets more than its
                // session's queue wait is disconnected as a slow consumer, rather than
                // lose messages while it stays.
                self.disconnect_slow(io, conn);
                return;
            }
            let Some(q) = self.queue_entry(key, src, qos, retain, sub_ids) else {
                return;
            };
            if key != 0 {
                self.log_enqueued(key, &q, &[]);
            }
            if let Some(e) = self.sessions.get_mut(sid).map(|s| s.extra_mut()) {
                e.queue.push_back(q);
                self.pressure.waiting += 1;
            }
            if full {
                // A session that outlives the connection keeps this one too (its queue
                // then drops the oldest, counted, as any offline queue).
                self.disconnect_slow(io, conn);
            }
            return;
        }
        let Some(store_id) = self.store_for(key, src) else {
            return;
        };
        let Some(e) = self.sessions.get_mut(sid).map(|s| s.extra_mut()) else {
            return;
        };
        let pkid = e.next_pkid();
        let delivery = Queued {
            msg: src.shared(),
            qos,
            retain,
            sub_ids,
            store_id,
        };
        if key != 0 {
            let msg = delivery.msg.clone();
            if self.enter_logged_inflight(io, sid, key, conn, pkid, delivery) {
                let out = Out::first(qos, retain, sub_ids, pkid);
                // Not sent now because the connection is going: it stays in flight and
                // goes again when the session next connects.
                if self.writer.publish(io, to, &View::of(&msg), out) == Written::TooLarge {
                    self.drop_too_large(sid, pkid);
                }
            }
            src.logged = true;
            return;
        }
        let out = Out::first(qos, retain, sub_ids, pkid);
        match self.writer.publish(io, to, &src.view(), out) {
            Written::TooLarge => {
                if self.webhooks.is_some()
                    && let Some(s) = self.sessions.get(sid)
                {
                    self.event_dropped(Some(&s.client_id), src.topic, qos, "too_large_for_client");
                }
            }
            written => {
                let Some(s) = self.sessions.get_mut(sid) else {
                    return;
                };
                let e = s.extra_mut();
                if written == Written::Sent {
                    e.inflight.push_back(Inflight {
                        pkid,
                        state: OutState::Published,
                        delivery,
                    });
                } else if e.enqueue(delivery, max_queued, |_| {}) {
                    // The connection is going: the message waits for the next one.
                    self.stats.dropped_queue_full.add(1);
                    if self.webhooks.is_some()
                        && let Some(s) = self.sessions.get(sid)
                    {
                        self.event_dropped(Some(&s.client_id), src.topic, qos, "queue_full");
                    }
                } else {
                    self.pressure.waiting += 1;
                }
            }
        }
    }

    /// The message's id in this shard's log if session `key` is logged (stored now if
    /// it was not yet), 0 for a session that is not; `None` if the log refused it.
    fn store_for(&mut self, key: u64, src: &mut Src<'_>) -> Option<u64> {
        if key == 0 {
            return Some(0);
        }
        let id = self.ensure_stored(src);
        if id.is_none() {
            self.stats.dropped_log_refused.add(1);
        }
        id
    }

    /// The queue entry of `src` for session `key`, stored in the log first as
    /// [`Self::store_for`] does; `None` if the log refused it.
    fn queue_entry(
        &mut self,
        key: u64,
        src: &mut Src<'_>,
        qos: QoS,
        retain: bool,
        sub_ids: SubIds,
    ) -> Option<Queued> {
        let store_id = self.store_for(key, src)?;
        Some(Queued {
            msg: src.shared(),
            qos,
            retain,
            sub_ids,
            store_id,
        })
    }

    /// Queues a delivery for a persistent session whose client is away (its connection
    /// closing, if `closing`); past the bound the oldest is dropped, counted.
    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &mut self,
        sid: SessionId,
        key: u64,
        src: &mut Src<'_>,
        qos: QoS,
        retain: bool,
        sub_ids: SubIds,
        closing: bool,
    ) {
        let max_queued = self.config().max_queued_messages;
        let Some(q) = self.queue_entry(key, src, qos, retain, sub_ids) else {
            return;
        };
        let mut dropped_ids: Vec<u64> = Vec::new();
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let logged = (key != 0).then(|| q.clone());
        let dropped = s
            .extra_mut()
            .enqueue(q, max_queued, |old| dropped_ids.push(old.store_id));
        if let Some(q) = logged {
            self.log_enqueued(key, &q, &dropped_ids);
        }
        if dropped {
            self.stats.dropped_queue_full.add(1);
        } else if closing {
            // Its connection is closing: counted until `connection_closed`.
            self.pressure.waiting += 1;
        }
        if self.webhooks.is_some()
            && let Some(s) = self.sessions.get(sid)
        {
            if dropped {
                // The oldest message of the queue made room for this one.
                self.event_dropped(Some(&s.client_id), src.topic, qos, "queue_full");
            }
            self.event_queued_offline(&s.client_id, src.topic, qos, src.payload);
        }
    }

    /// Disconnects a client that lets more messages wait than its session may queue.
    fn disconnect_slow(&mut self, io: &mut Io, conn: ringmq_shard::conn::ConnKey) {
        self.disconnect(
            io,
            conn,
            ReasonCode::QUOTA_EXCEEDED,
            "too many messages waiting for this client",
            CloseReason::SlowConsumer,
        );
    }
}
