//! Packets out: the [`Writer`] encodes every packet the broker sends straight into the
//! connection's send buffer and counts it. A PUBLISH that a fan-out sends to many
//! subscribers in the same form is encoded once and each copy stamped with its
//! subscriber's packet id (`ringmq_proto::mqtt::PublishTemplate`).

use std::sync::Arc;
use std::time::Instant;

use ringmq_proto::mqtt::{
    ConnAck, ConnectReturnCode, Packet, Properties, Property, Publish, PublishTemplate, QoS,
    ReasonCode, Version,
};
use ringmq_shard::conn::ConnKey;

use super::session::{Message, Queued, SubIds};
use super::{BrokerStats, Io};

/// Encodes and counts what the broker writes to its connections.
pub(super) struct Writer {
    /// This shard's counters (packets and messages out, what was too large to send).
    stats: Arc<BrokerStats>,
    /// Properties of the PUBLISH being written.
    props: Vec<u8>,
    /// The PUBLISH of the fan-out in progress, encoded once per variant (version, QoS,
    /// RETAIN, DUP); `template_key` is the variant it holds.
    template: PublishTemplate,
    template_key: Option<(Version, QoS, bool, bool)>,
    /// A fan-out is in progress (`begin_fanout`): deliveries the same for every subscriber
    /// are stamped from the template.
    fanout_on: bool,
}

/// What became of a PUBLISH written to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Written {
    Sent,
    /// Larger than the client accepts: dropped for this client (and counted).
    TooLarge,
    /// The connection is closing or gone: not sent, and not lost for a session that
    /// outlives it.
    NotSent,
}

/// The parts of a message a PUBLISH is written from.
pub(super) struct View<'a> {
    pub topic: &'a str,
    pub props: &'a [u8],
    pub payload: &'a [u8],
    pub expires_at: Option<Instant>,
}

impl View<'_> {
    /// A stored message (queued or in flight).
    pub fn of(m: &Message) -> View<'_> {
        View {
            topic: m.topic(),
            props: m.props(),
            payload: m.payload(),
            expires_at: m.expires_at,
        }
    }
}

/// Where a PUBLISH goes: a connection, the version its client speaks, and the largest
/// packet it accepts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Recipient {
    pub conn: ConnKey,
    pub version: Version,
    pub max_packet: u32,
}

impl Recipient {
    /// Connection `conn`, whose client speaks `version`.
    pub fn of(io: &mut Io, conn: ConnKey, version: Version) -> Recipient {
        let max_packet = io.state(conn).map_or(u32::MAX, |c| c.max_packet());
        Recipient {
            conn,
            version,
            max_packet,
        }
    }
}

/// How one delivery goes out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Out {
    pub qos: QoS,
    pub retain: bool,
    pub pkid: u16,
    pub dup: bool,
    pub sub_ids: SubIds,
}

impl Out {
    /// A delivery sent for the first time, with packet id `pkid` (0 for QoS 0).
    pub fn first(qos: QoS, retain: bool, sub_ids: SubIds, pkid: u16) -> Out {
        Out {
            qos,
            retain,
            pkid,
            dup: false,
            sub_ids,
        }
    }

    /// A kept delivery (queued or in flight) with packet id `pkid`; `dup` when it goes
    /// again.
    pub fn of(d: &Queued, pkid: u16, dup: bool) -> Out {
        Out {
            qos: d.qos,
            retain: d.retain,
            pkid,
            dup,
            sub_ids: d.sub_ids,
        }
    }
}

impl Writer {
    pub fn new(stats: Arc<BrokerStats>) -> Writer {
        Writer {
            stats,
            props: Vec::new(),
            template: PublishTemplate::default(),
            template_key: None,
            fanout_on: false,
        }
    }

    /// Writes one packet to a connection. Returns false if it could not be queued.
    pub fn packet(&self, io: &mut Io, key: ConnKey, version: Version, pkt: &Packet<'_>) -> bool {
        Self::write(io, &self.stats, key, version, pkt)
    }

    /// `packet`, for callers that hold a borrow of the writer's own buffers.
    fn write(
        io: &mut Io,
        stats: &BrokerStats,
        key: ConnKey,
        version: Version,
        pkt: &Packet<'_>,
    ) -> bool {
        let len = pkt.encoded_len(version);
        // An encoder's error, or a length other than `len`, is taken back by the runtime
        // and ends the connection (counted in `write_errors`).
        let ok = io.write_vec(key, len, |buf| pkt.encode_to_vec(version, buf).is_ok());
        if ok {
            stats.packets_out.add(1);
        }
        ok
    }

    /// Writes a negative answer: `full` (with a Reason String) if the client accepts a
    /// packet that large, else `bare` (MQTT-3.2.2-19, 3.4.2-2, 3.9.2-1, 3.14.2-3: a
    /// Reason String must not push a packet past the client's Maximum Packet Size; and
    /// MQTT-3.1.2-29: only CONNACK and DISCONNECT carry one if the client asked for no
    /// problem information).
    pub fn answer(
        &self,
        io: &mut Io,
        key: ConnKey,
        version: Version,
        full: &Packet<'_>,
        bare: &Packet<'_>,
    ) -> bool {
        let len = full.encoded_len(version);
        let always = matches!(full, Packet::ConnAck(_) | Packet::Disconnect(_));
        let fits = version == Version::V5
            && io
                .state(key)
                .is_some_and(|c| c.accepts(len) && (always || c.problem_info()));
        self.packet(io, key, version, if fits { full } else { bare })
    }

    /// Answers a CONNECT with a refusal: the MQTT 5 reason code with a reason string, or its
    /// 3.1.1 return code.
    pub fn refuse_connect(
        &self,
        io: &mut Io,
        key: ConnKey,
        version: Version,
        reason: ReasonCode,
        why: &str,
    ) {
        let code = match version {
            Version::V5 => reason.0,
            Version::V311 => ConnectReturnCode::from_reason(reason).0,
        };
        let props = [Property::ReasonString(why)];
        let full = Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: Properties::List(&props),
        });
        let bare = Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: Properties::EMPTY,
        });
        self.answer(io, key, version, &full, &bare);
    }

    /// The 3.1.1 CONNACK refusal with return code `code`.
    pub fn refuse_connect_v3(&self, io: &mut Io, key: ConnKey, code: ConnectReturnCode) {
        let pkt = Packet::ConnAck(ConnAck {
            session_present: false,
            code: code.0,
            properties: Properties::EMPTY,
        });
        self.packet(io, key, Version::V311, &pkt);
    }

    /// One message's fan-out begins: its deliveries that are the same for every
    /// subscriber are encoded once (per variant) and stamped.
    pub fn begin_fanout(&mut self) {
        self.template_key = None;
        self.fanout_on = true;
    }

    pub fn end_fanout(&mut self) {
        self.fanout_on = false;
    }

    /// Encodes a PUBLISH straight into the connection's send buffer, with a topic alias
    /// where the client allows them.
    pub fn publish(&mut self, io: &mut Io, to: Recipient, m: &View<'_>, out: Out) -> Written {
        let Recipient {
            conn,
            version,
            max_packet,
        } = to;
        let props = &mut self.props;
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
        if self.fanout_on && same_for_all {
            return self.publish_stamped(io, to, m, &out);
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
        if !Self::write(io, &self.stats, conn, version, &pkt) {
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

    /// `publish` for a delivery whose bytes are the same for every subscriber of this
    /// fan-out but for the packet id: encodes once per variant, then stamps each copy.
    fn publish_stamped(&mut self, io: &mut Io, to: Recipient, m: &View<'_>, out: &Out) -> Written {
        let Recipient {
            conn,
            version,
            max_packet,
        } = to;
        let key = (version, out.qos, out.retain, out.dup);
        if self.template_key != Some(key) {
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
            if self.template.encode(&publish, version).is_err() {
                self.template_key = None;
                return Written::NotSent;
            }
            self.template_key = Some(key);
        }
        let len = self.template.len();
        if len > max_packet as usize {
            self.stats.dropped_too_large_for_client.add(1);
            return Written::TooLarge;
        }
        let (template, pkid) = (&self.template, out.pkid);
        let stamp = |q: &mut Vec<u8>| {
            template.stamp_to_vec(pkid, q);
            true
        };
        if !io.write_vec(conn, len, stamp) {
            return Written::NotSent;
        }
        self.stats.packets_out.add(1);
        self.stats.messages_out.add(1);
        Written::Sent
    }
}
