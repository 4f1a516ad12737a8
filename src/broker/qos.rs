//! QoS flows: the acknowledgements of QoS 1 and 2 both ways. Outbound deliveries wait in
//! the session's in-flight window (PUBLISH → PUBACK; PUBLISH → PUBREC → PUBREL → PUBCOMP)
//! and, past it, in its queue; inbound QoS 2 packet ids wait for PUBREL. After a reconnect
//! what was in flight goes again (MQTT-4.4.0-1), then the queue.

use std::time::Instant;

use ringmq_proto::mqtt::{Packet, Properties, PubResp, QoS, ReasonCode, Version};
use ringmq_shard::conn::ConnKey;

use super::durable::{Ack, Reason, Then};
use super::session::{Inflight, OutState, Queued, SessionId};
use super::writer::{Out, Recipient, View, Written};
use super::{Broker, Io};
use crate::store::record::{Done, Unqueue};
use crate::store::{Record, SessionKey};

impl Broker {
    /// PUBACK: a QoS 1 delivery is done.
    pub(super) fn on_puback(&mut self, io: &mut Io, key: ConnKey, pkid: u16) {
        self.complete_inflight(io, key, pkid, |i| i.delivery.qos == QoS::AtLeastOnce);
    }

    /// PUBCOMP: a QoS 2 delivery whose PUBREL was sent is done.
    pub(super) fn on_pubcomp(&mut self, io: &mut Io, key: ConnKey, pkid: u16) {
        self.complete_inflight(io, key, pkid, |i| i.state == OutState::Released);
    }

    /// Takes the in-flight delivery `pkid` of `key`'s session out of the window if `ends`
    /// says this acknowledgement ends it, and sends what waits for the window.
    fn complete_inflight(
        &mut self,
        io: &mut Io,
        key: ConnKey,
        pkid: u16,
        ends: impl Fn(&Inflight) -> bool,
    ) {
        let Some(sid) = io.state(key).and_then(|c| c.session) else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let store_key = s.store_key;
        if let Some(e) = s.extra_opt_mut()
            && let Some(i) = e.inflight_pos(pkid)
            && ends(&e.inflight[i])
        {
            e.inflight.remove(i);
            if store_key != 0 {
                self.log_inflight_done(store_key, pkid, Done::Acked);
            }
        }
        self.drain_queue(io, sid);
    }

    /// PUBREC: a QoS 2 delivery was received (PUBREL follows), or refused (it is done).
    pub(super) fn on_pubrec(&mut self, io: &mut Io, key: ConnKey, pkid: u16, reason: ReasonCode) {
        let Some((sid, version)) = io.state(key).and_then(|c| Some((c.session?, c.version())))
        else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let store_key = s.store_key;
        let Some(e) = s.extra_opt_mut() else {
            return self.answer_unknown(io, key, version, Ack::Pubrel(pkid));
        };
        let released = match e.inflight_pos(pkid) {
            Some(i) if reason.is_error() => {
                // The client refused the message: it is done (MQTT 5 §4.3.3).
                e.inflight.remove(i);
                if store_key != 0 {
                    self.log_inflight_done(store_key, pkid, Done::Refused);
                }
                self.drain_queue(io, sid);
                return;
            }
            Some(i) if e.inflight[i].state == OutState::Published => {
                e.inflight[i].state = OutState::Released;
                true
            }
            Some(i) if e.inflight[i].state == OutState::Released => false,
            // Never sent on any connection: not for this PUBREC.
            _ => return self.answer_unknown(io, key, version, Ack::Pubrel(pkid)),
        };
        // The PUBREL goes once the release is durable: a restart then sends PUBREL
        // again, never the PUBLISH.
        let logged = released
            && store_key != 0
            && self.log(&Record::Released {
                session: SessionKey(store_key),
                pkid,
            });
        self.acknowledge_logged(io, key, Ack::Pubrel(pkid), logged);
    }

    /// PUBREL: an inbound QoS 2 message is released (PUBCOMP follows).
    pub(super) fn on_pubrel(&mut self, io: &mut Io, key: ConnKey, pkid: u16) {
        let Some((sid, version)) = io.state(key).and_then(|c| Some((c.session?, c.version())))
        else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let store_key = s.store_key;
        let released = s.extra_opt_mut().and_then(|e| {
            let id = e.inbound_qos2.remove(&pkid);
            if e.inbound_qos2.is_empty() && e.inbound_qos2.capacity() > 64 {
                // A burst is over: its table goes with it.
                e.inbound_qos2 = Default::default();
            }
            id
        });
        let Some(id) = released else {
            return self.answer_unknown(io, key, version, Ack::Pubcomp(pkid));
        };
        // PUBCOMP once the release is durable, so that the packet id, once reused, is
        // never taken for the earlier message after a restart. The sessions that got
        // the message may forget its id (no copy of it comes again). An id that was
        // never logged (a 3.1.1 PUBLISH its ACL refused, answered as if taken) has no
        // release to log.
        let logged = store_key != 0
            && self.logs_inbound(store_key, pkid)
            && self.log(&Record::InboundReleased {
                session: SessionKey(store_key),
                pkid,
            });
        if id != 0 {
            self.release_seen(io, id);
        }
        self.acknowledge_logged(io, key, Ack::Pubcomp(pkid), logged);
    }

    /// An acknowledgement that waits for what was just logged (`logged`), or for the
    /// earlier ones of its connection.
    pub(super) fn acknowledge_logged(
        &mut self,
        io: &mut Io,
        conn: ConnKey,
        ack: Ack,
        logged: bool,
    ) {
        if logged {
            let then = Then::Ack {
                conn,
                ack,
                reason: None,
            };
            self.park(io, then, None);
        } else {
            self.acknowledge(io, conn, ack, None);
        }
    }

    /// After a reconnect: what was in flight goes again, PUBLISH with DUP set or PUBREL
    /// where PUBREC was seen (MQTT-4.4.0-1, MQTT-3.3.1-1). A PUBLISH larger than the new
    /// connection accepts is dropped from the window.
    pub(super) fn resend_inflight(&mut self, io: &mut Io, sid: SessionId) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let Some(conn) = s.conn else { return };
        let version = s.version;
        let Some(e) = s.extra() else { return };
        let inflight: Vec<Inflight> = e.inflight.iter().cloned().collect();
        let to = Recipient::of(io, conn, version);
        for i in inflight {
            match i.state {
                // Logged for this connection: it goes once durable (`Then::Deliver`).
                OutState::Logged(c) if c == conn => {}
                OutState::Published | OutState::Logged(_)
                    if !self.may_receive(io, conn, i.delivery.msg.topic()) =>
                {
                    // Sent (or decided) under other rules (another user, before a
                    // reload): it completes here without going again.
                    self.drop_inflight(sid, i.pkid);
                }
                // Logged for an earlier connection and never written: a first send (its
                // record is durable by the time a logged session's resend runs).
                OutState::Logged(_) => {
                    let out = Out::of(&i.delivery, i.pkid, false);
                    match self.writer.publish(io, to, &View::of(&i.delivery.msg), out) {
                        Written::Sent => self.set_published(sid, i.pkid),
                        Written::TooLarge => self.drop_too_large(sid, i.pkid),
                        Written::NotSent => return,
                    }
                }
                OutState::Published => {
                    let view = View::of(&i.delivery.msg);
                    let out = Out::of(&i.delivery, i.pkid, true);
                    match self.writer.publish(io, to, &view, out) {
                        Written::Sent => {}
                        Written::TooLarge => self.drop_too_large(sid, i.pkid),
                        Written::NotSent => return,
                    }
                }
                OutState::Released => {
                    let rel = Packet::PubRel(PubResp {
                        pkid: i.pkid,
                        reason: ReasonCode::SUCCESS,
                        properties: Properties::EMPTY,
                    });
                    if !self.writer.packet(io, conn, version, &rel) {
                        return;
                    }
                }
            }
        }
    }

    /// A waiting delivery was dropped because it is larger than its client accepts (the
    /// writer counted it): the webhook event.
    fn too_large_for_client(&self, sid: SessionId, q: &Queued) {
        if self.webhooks.is_some()
            && let Some(s) = self.sessions.get(sid)
        {
            let topic = q.msg.topic();
            self.event_dropped(Some(&s.client_id), topic, q.qos, "too_large_for_client");
        }
    }

    /// Sends queued deliveries while the in-flight window has room, then retained
    /// messages a new subscription is still to receive. For a logged session each
    /// delivery leaves the queue and enters the window in the log first.
    pub(super) fn drain_queue(&mut self, io: &mut Io, sid: SessionId) {
        self.send_queued(io, sid);
        self.send_retained(io, sid);
    }

    fn send_queued(&mut self, io: &mut Io, sid: SessionId) {
        let now = Instant::now();
        loop {
            let Some(s) = self.sessions.get_mut(sid) else {
                return;
            };
            let Some(conn) = s.conn else { return };
            if !s.window_open() {
                return;
            }
            let version = s.version;
            let store_key = s.store_key;
            let Some(e) = s.extra_opt_mut() else { return };
            let Some(q) = e.queue.pop_front() else { return };
            self.pressure.waiting = self.pressure.waiting.saturating_sub(1);
            let expired = q.msg.is_expired(now);
            if expired || !self.may_receive(io, conn, q.msg.topic()) {
                if store_key != 0 {
                    let why = if expired {
                        Unqueue::Expired
                    } else {
                        Unqueue::Dropped
                    };
                    self.log_unqueued(store_key, &q, why);
                }
                continue;
            }
            let Some(e) = self.sessions.get_mut(sid).and_then(|s| s.extra_opt_mut()) else {
                return;
            };
            let pkid = e.next_pkid();
            let to = Recipient::of(io, conn, version);
            if store_key != 0 {
                self.log_unqueued(store_key, &q, Unqueue::Sending);
                let out = Out::of(&q, pkid, false);
                let msg = q.msg.clone();
                if !self.enter_logged_inflight(io, sid, store_key, conn, pkid, q) {
                    continue;
                }
                match self.writer.publish(io, to, &View::of(&msg), out) {
                    Written::Sent => {}
                    Written::TooLarge => self.drop_too_large(sid, pkid),
                    // In flight: it goes again with the next connection.
                    Written::NotSent => return,
                }
                continue;
            }
            let out = Out::of(&q, pkid, false);
            let written = self.writer.publish(io, to, &View::of(&q.msg), out);
            let Some(s) = self.sessions.get_mut(sid) else {
                return;
            };
            let e = s.extra_mut();
            match written {
                Written::Sent => e.inflight.push_back(Inflight {
                    pkid,
                    state: OutState::Published,
                    delivery: q,
                }),
                Written::TooLarge => self.too_large_for_client(sid, &q),
                Written::NotSent => {
                    e.queue.push_front(q);
                    self.pressure.waiting += 1;
                    return;
                }
            }
        }
    }
}

impl Broker {
    /// A delivery in flight was written to the client.
    pub(super) fn set_published(&mut self, sid: SessionId, pkid: u16) {
        if let Some(e) = self.sessions.get_mut(sid).and_then(|s| s.extra_opt_mut())
            && let Some(i) = e.inflight_pos(pkid)
        {
            e.inflight[i].state = OutState::Published;
        }
    }

    /// Takes delivery `pkid` out of session `sid`'s in-flight window unacknowledged (it
    /// is larger than the client accepts), logged.
    /// Drops the in-flight delivery `pkid` of session `sid` that is larger than its
    /// client takes (counted by the writer), telling the webhooks.
    pub(super) fn drop_too_large(&mut self, sid: SessionId, pkid: u16) {
        if self.webhooks.is_some()
            && let Some(e) = self.sessions.get(sid).and_then(|s| s.extra())
            && let Some(i) = e.inflight_pos(pkid)
        {
            let q = e.inflight[i].delivery.clone();
            self.too_large_for_client(sid, &q);
        }
        self.drop_inflight(sid, pkid);
    }

    pub(super) fn drop_inflight(&mut self, sid: SessionId, pkid: u16) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let key = s.store_key;
        if let Some(e) = s.extra_opt_mut()
            && let Some(i) = e.inflight_pos(pkid)
        {
            e.inflight.remove(i);
            if key != 0 {
                self.log_inflight_done(key, pkid, Done::Dropped);
            }
        }
    }
}

impl Broker {
    /// PUBREL (after a PUBREC) or PUBCOMP (after a PUBREL) for a packet id not known:
    /// MQTT 5 says 0x92 (3.1.1 has no codes and answers all the same, MQTT-4.3.3-11).
    fn answer_unknown(&mut self, io: &mut Io, key: ConnKey, version: Version, ack: Ack) {
        let reason = match version {
            Version::V5 => Reason {
                code: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                why: Some("packet identifier not found"),
            },
            Version::V311 => Reason {
                code: ReasonCode::SUCCESS,
                why: None,
            },
        };
        self.answer_in_order(io, key, ack, reason);
    }
}
