//! What a client's ACL (`auth::ClientAcl`, bound at CONNECT) refuses, on each path a
//! message takes, and the answer the client gets:
//!
//! - PUBLISH (`publish`): a topic it may not write (`$SYS/...` never) is not routed nor
//!   retained. 3.1.1 has no way to say no: the PUBLISH is acknowledged as usual (PUBACK,
//!   or PUBREC then PUBCOMP) and dropped, as mosquitto does. MQTT 5 answers PUBACK or
//!   PUBREC with 0x87 Not authorized (a PUBREC with an error ends the QoS 2 flow).
//! - SUBSCRIBE (`subscribe`): a filter it may not read gets 0x80 (3.1.1) or 0x87 (5.0). A
//!   filter allowed although a deny rule covers some of its topics sets
//!   `CHECK_DELIVERIES` on the connection.
//! - Delivery (`delivery`, `qos`, `retained`): every retained message sent on subscribe,
//!   every queued message sent after a reconnect or when the window opens, every message
//!   resent from the in-flight window, and live messages to a connection with
//!   `CHECK_DELIVERIES`, are checked; what is refused is skipped (a QoS 1/2 one completes
//!   silently, never sent) and counted. Replay paths are where other brokers leak.
//!
//! An unrestricted ACL (nothing configured) is one null pointer: each check is a test of
//! it, and the topic's first bytes for `$SYS`.

use ringmq_proto::mqtt::{Publish, QoS, ReasonCode, Version};
use ringmq_shard::conn::ConnKey;

use super::durable::{Ack, Reason};
use super::session::SessionId;
use super::{Broker, Io};

impl Broker {
    /// Whether the client on `conn` may receive a message on `topic` (retained, queued,
    /// resent).
    pub(super) fn may_receive(&self, io: &mut Io, conn: ConnKey, topic: &str) -> bool {
        let allowed = io.state(conn).is_none_or(|c| c.acl.may_receive(topic));
        if !allowed {
            self.stats.acl_denied_delivery.add(1);
        }
        allowed
    }

    /// Answers a PUBLISH the client may not send: acknowledged and dropped (3.1.1), or
    /// refused with 0x87 (5.0).
    pub(super) fn refuse_publish(
        &mut self,
        io: &mut Io,
        key: ConnKey,
        sid: SessionId,
        version: Version,
        p: &Publish<'_>,
    ) {
        self.stats.acl_denied_publish.add(1);
        let reason = match version {
            Version::V5 => Reason {
                code: ReasonCode::NOT_AUTHORIZED,
                why: Some("not authorized to publish to this topic"),
            },
            Version::V311 => Reason {
                code: ReasonCode::SUCCESS,
                why: None,
            },
        };
        let ack = match p.qos {
            QoS::AtLeastOnce => Ack::Puback(p.pkid),
            QoS::ExactlyOnce => Ack::Pubrec(p.pkid),
            QoS::AtMostOnce => return,
        };
        if version == Version::V311 && p.qos == QoS::ExactlyOnce {
            // The flow goes on to PUBREL/PUBCOMP: the packet id waits for it as for any
            // other, so a resend is recognised.
            if let Some(s) = self.sessions.get_mut(sid) {
                s.extra_mut().inbound_qos2.insert(p.pkid, 0);
            }
        }
        // After the acknowledgements of this connection that wait for the log.
        self.answer_in_order(io, key, ack, reason);
    }
}
