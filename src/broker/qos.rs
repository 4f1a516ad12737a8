//! QoS flows: the acknowledgements of QoS 1 and 2 both ways. Outbound deliveries wait in
//! the session's in-flight window (PUBLISH → PUBACK; PUBLISH → PUBREC → PUBREL → PUBCOMP)
//! and, past it, in its queue; inbound QoS 2 packet ids wait for PUBREL. After a reconnect
//! what was in flight goes again (MQTT-4.4.0-1), then the queue.

use std::time::Instant;

use ringmq_proto::mqtt::{Packet, Properties, Property, PubResp, QoS, ReasonCode, Version};
use ringmq_shard::conn::ConnKey;

use super::session::{Inflight, OutState, Queued, SessionId};
use super::writer::{Out, Recipient, View, Writer, Written};
use super::{Broker, Io};

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
        if let Some(e) = s.extra_opt_mut()
            && let Some(i) = e.inflight_pos(pkid)
            && ends(&e.inflight[i])
        {
            e.inflight.remove(i);
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
        let Some(e) = s.extra_opt_mut() else {
            return answer_release(&self.writer, io, key, version, true, pkid, false);
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
        answer_release(&self.writer, io, key, version, true, pkid, known);
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
        let known = s.extra_opt_mut().is_some_and(|e| {
            let known = e.inbound_qos2.remove(&pkid);
            if e.inbound_qos2.is_empty() && e.inbound_qos2.capacity() > 64 {
                // A burst is over: its table goes with it.
                e.inbound_qos2 = Default::default();
            }
            known
        });
        answer_release(&self.writer, io, key, version, false, pkid, known);
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
                OutState::Published if !self.may_receive(io, conn, i.delivery.msg.topic()) => {
                    // Sent under other rules (another user, before a reload): it completes
                    // here without going again.
                    if let Some(e) = self.sessions.get_mut(sid).and_then(|s| s.extra_opt_mut()) {
                        e.inflight.retain(|x| x.pkid != i.pkid);
                    }
                }
                OutState::Published => {
                    let view = View::of(&i.delivery.msg);
                    let out = Out::of(&i.delivery, i.pkid, true);
                    match self.writer.publish(io, to, &view, out) {
                        Written::Sent => {}
                        Written::TooLarge => {
                            if let Some(e) =
                                self.sessions.get_mut(sid).and_then(|s| s.extra_opt_mut())
                            {
                                e.inflight.retain(|x| x.pkid != i.pkid);
                            }
                            self.too_large_for_client(sid, &i.delivery);
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
    /// messages a new subscription is still to receive.
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
            let Some(e) = s.extra_opt_mut() else { return };
            let Some(q) = e.queue.pop_front() else { return };
            self.pressure.waiting = self.pressure.waiting.saturating_sub(1);
            if q.msg.is_expired(now) || !self.may_receive(io, conn, q.msg.topic()) {
                continue;
            }
            let Some(e) = self.sessions.get_mut(sid).and_then(|s| s.extra_opt_mut()) else {
                return;
            };
            let pkid = e.next_pkid();
            let to = Recipient::of(io, conn, version);
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

/// PUBREL (after a PUBREC) or PUBCOMP (after a PUBREL): MQTT 5 says 0x92 when the
/// packet id is unknown (3.1.1 has no codes and answers all the same, MQTT-4.3.3-11).
fn answer_release(
    writer: &Writer,
    io: &mut Io,
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
        writer.packet(io, key, version, &bare);
    } else {
        writer.answer(io, key, version, &make(Properties::List(&why)), &bare);
    }
}
