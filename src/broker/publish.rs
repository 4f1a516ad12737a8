//! PUBLISH in: a client's PUBLISH (its topic alias resolved, a QoS 2 duplicate answered
//! without a second delivery), or a message the broker makes (a will, `$SYS`), is
//! retained if asked, routed (`routing`), and acknowledged; then the publisher may be
//! paused for back-pressure (`pressure`).
//!
//! A message that only reaches QoS 0 subscribers on this shard is delivered straight
//! from the receive buffer, with no allocation; it is copied into one shared
//! `Arc<Message>` the first time something must keep it (another shard, a QoS 1/2
//! delivery, an offline queue, the retained store: see `delivery::Src`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmq_proto::mqtt::{Properties, Property, Publish, QoS, ReasonCode, Version};
use ringmq_proto::topic;
use ringmq_shard::conn::ConnKey;

use super::client::Client;
use super::delivery::Src;
use super::durable::{Ack, Reason};
use super::routing::level_count;
use super::session::Message;
use super::{Broker, Io};
use crate::store::{Record, SessionKey};

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

/// Writes into `topic` the topic a PUBLISH is for: its topic name, or the one its topic
/// alias stands for (MQTT 5 §3.3.2.3.4: a PUBLISH with a topic sets the alias, one
/// without uses it). An error is the reason code and string the protocol error carries.
fn resolve_topic(
    client: &mut Client,
    p: &Publish<'_>,
    max_alias: u16,
    topic: &mut String,
) -> Result<(), (ReasonCode, &'static str)> {
    topic.clear();
    if let Some(alias) = p.properties.topic_alias() {
        if alias == 0 || alias > max_alias {
            // MQTT-3.3.2-9, -3.3.2-10.
            return Err((ReasonCode::TOPIC_ALIAS_INVALID, "topic alias out of range"));
        }
        let slot = alias as usize - 1;
        let aliases = &mut client.extra_mut().aliases;
        if aliases.len() <= slot {
            aliases.resize(slot + 1, None);
        }
        if p.topic.is_empty() {
            let known = aliases[slot].as_deref();
            topic.push_str(known.ok_or((ReasonCode::PROTOCOL_ERROR, "unknown topic alias"))?);
        } else {
            aliases[slot] = Some(p.topic.into());
            topic.push_str(p.topic);
        }
    } else {
        topic.push_str(p.topic);
    }
    topic::validate_name(topic).map_err(|_| (ReasonCode::TOPIC_NAME_INVALID, "invalid topic name"))
}

impl Broker {
    /// A client's PUBLISH.
    pub(super) fn on_publish(&mut self, io: &mut Io, key: ConnKey, p: Publish<'_>) {
        self.stats.messages_in.add(1);
        let receive_maximum = self.config().max_inflight;
        let Some(client) = io.state(key) else { return };
        let Some(sid) = client.session else { return };
        let version = client.version();
        let mut topic_buf = std::mem::take(&mut self.scratch.topic);
        let max_alias = self.config().topic_alias_max;
        let resolved = resolve_topic(client, &p, max_alias, &mut topic_buf);
        let acl_allows = client.acl.may_publish(&topic_buf);
        // A QoS 2 PUBLISH whose id waits for PUBREL was delivered already (MQTT 4.3.3,
        // MQTT-4.3.3-9): answered again, not delivered twice.
        let (inbound, waiting) = match self.sessions.get(sid) {
            Some(s) if p.qos == QoS::ExactlyOnce => s.extra().map_or((None, 0), |e| {
                let found = e.inbound_qos2.get(&p.pkid).copied();
                (found, e.inbound_qos2.len())
            }),
            _ => (None, 0),
        };
        let duplicate = inbound.is_some();
        // MQTT-3.3.4-8: more QoS 2 messages unreleased than the Receive Maximum the
        // broker gave in CONNACK. A 3.1.1 client is held to the same bound (it cannot be
        // told it; a well-behaved one keeps far fewer in flight), so that no client makes
        // the broker keep an id for each of the 65,535 there are.
        let over_receive_maximum = !duplicate && waiting >= receive_maximum as usize;
        if over_receive_maximum {
            self.stats.inbound_qos2_exceeded.add(1);
        }
        let refused = resolved.err().or(over_receive_maximum.then_some((
            ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            "more unacknowledged QoS 2 messages than the receive maximum",
        )));
        if let Some((code, why)) = refused {
            self.scratch.topic = topic_buf;
            return self.protocol_error(io, key, code, why);
        }
        if level_count(&topic_buf) > self.config().max_topic_levels {
            self.scratch.topic = topic_buf;
            return self.refuse_deep_topic(io, key, version, &p);
        }
        if !acl_allows {
            self.scratch.topic = topic_buf;
            return self.refuse_publish(io, key, sid, version, &p);
        }
        let ack = match p.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => Some(Ack::Puback(p.pkid)),
            QoS::ExactlyOnce => Some(Ack::Pubrec(p.pkid)),
        };
        // The log refuses what grows the durable state (full disk or budget): a message
        // that would be logged is refused before it reaches anyone; a retained QoS 0 one
        // is delivered but not retained.
        let mut retain = p.retain;
        if !duplicate && self.refuses_publish(&topic_buf, p.qos, p.retain) {
            if let Some(ack) = ack {
                self.scratch.topic = topic_buf;
                self.refuse_durable_publish(io, key, ack);
                return;
            }
            self.stats.durable_publishes_refused.add(1);
            retain = false;
        }
        // A persistent session's QoS 2 message gets an id that goes with it everywhere,
        // so that a copy its client sends again is delivered once per session.
        let store_key = self.sessions.get(sid).map_or(0, |s| s.store_key);
        let exact = match inbound {
            Some(id) if id != 0 => Some(id),
            Some(_) => None,
            None if p.qos == QoS::ExactlyOnce && store_key != 0 => {
                let client_id = self.sessions.get(sid).map_or("", |s| &*s.client_id);
                Some(Self::exact_id(client_id, p.pkid, &topic_buf, p.payload))
            }
            None => None,
        };
        // A duplicate of a message without an id was delivered here already, and only
        // here: it is answered again, not delivered again.
        let again = duplicate && exact.is_some();
        if duplicate && !again {
            self.scratch.topic = topic_buf;
            if let Some(ack) = ack {
                self.acknowledge(io, key, ack, None);
            }
        } else {
            let mut fwd = std::mem::take(&mut self.scratch.fwd);
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
                origin: Some((self.peers.id, sid)),
                via: self.peers.id,
                shared: None,
                track: p.qos != QoS::AtMostOnce && self.logging(),
                store_id: 0,
                logged: false,
                refused: false,
                ticket: None,
                waits: 0,
                exact,
                again,
                replay: false,
                number: None,
                moved: false,
            };
            if again {
                // Its persistent subscribers here and on the shards that log deliveries
                // get it again and keep it only if they never got it; the PUBREC waits
                // for them.
                self.route_again(io, &mut src);
            } else {
                if retain {
                    self.retain(io, &mut src);
                }
                self.top_topics.count(&topic_buf);
                self.route(io, &mut src, None);
                if p.qos == QoS::ExactlyOnce
                    && let Some(s) = self.sessions.get_mut(sid)
                {
                    let id = exact.unwrap_or(0);
                    s.extra_mut().inbound_qos2.insert(p.pkid, id);
                    // Logged, so a PUBLISH sent again after a restart is still known.
                    src.logged |= store_key != 0
                        && self.log(&Record::InboundAdded {
                            session: SessionKey(store_key),
                            pkid: p.pkid,
                            id,
                        });
                }
            }
            match ack {
                Some(ack) => self.acknowledge(io, key, ack, Some(&src)),
                None => self.settle_routing(io, &src),
            }
            self.scratch.fwd = fwd;
            self.scratch.topic = topic_buf;
        }
        self.latency.note_publish();
        // Back-pressure: a shard that cannot send as fast as it is fed pauses this
        // publisher for a while, instead of dropping messages: what it sends meanwhile is
        // held (`take_up`) until `on_resume`.
        self.pause_publisher_if_pressured(io, key);
    }

    /// A QoS 1/2 PUBLISH the log cannot take: MQTT 5 hears 0x97 Quota exceeded, 3.1.1
    /// is disconnected without an acknowledgement (it sends the message again later).
    fn refuse_durable_publish(&mut self, io: &mut Io, key: ConnKey, ack: Ack) {
        let refused = Src::refused();
        self.acknowledge(io, key, ack, Some(&refused));
    }

    /// A PUBLISH whose topic has more levels than `max_topic_levels`: not delivered nor
    /// retained. MQTT 5 answers a QoS 1 or 2 one with PUBACK or PUBREC 0x90 Topic Name
    /// invalid ("not accepted by this server"), which ends its flow and keeps the
    /// connection, and a QoS 0 one (which has no answer) with DISCONNECT 0x90; 3.1.1 has
    /// no code for it and closes the connection. The answer keeps its place behind the
    /// connection's acknowledgements that wait for the log.
    fn refuse_deep_topic(&mut self, io: &mut Io, key: ConnKey, version: Version, p: &Publish<'_>) {
        self.stats.topic_levels_refused.add(1);
        let why = "the topic name has more levels than this server takes";
        let ack = match p.qos {
            QoS::AtLeastOnce if version == Version::V5 => Ack::Puback(p.pkid),
            QoS::ExactlyOnce if version == Version::V5 => Ack::Pubrec(p.pkid),
            _ => return self.protocol_error(io, key, ReasonCode::TOPIC_NAME_INVALID, why),
        };
        let reason = Reason {
            code: ReasonCode::TOPIC_NAME_INVALID,
            why: Some(why),
        };
        self.answer_in_order(io, key, ack, reason);
    }

    /// Publishes a message made by the broker (a will, `$SYS`). Nothing waits for it to
    /// be durable; a retained one is logged at its topic's home (`$SYS` topics never).
    pub(super) fn publish_message(&mut self, io: &mut Io, m: &Arc<Message>) {
        let mut src = Src::from_arc(m, self.peers.id);
        if m.retain {
            self.retain(io, &mut src);
        }
        self.route(io, &mut src, None);
        self.settle_routing(io, &src);
    }
}
