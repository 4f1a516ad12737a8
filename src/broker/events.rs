//! What the broker tells the outside about its clients and messages: the log lines of
//! connects and disconnects (`debug`), and the webhook events (`control::webhook`).
//!
//! An event goes into the webhook dispatcher's bounded queue with a non-blocking
//! `try_send` (a full queue drops it and counts it there), so a shard never waits for a
//! receiver. Without a webhook configured nothing is built: each emitter starts with a
//! branch on `Broker::webhooks`, and with one, on whether any endpoint wants the kind,
//! before a client id or topic is copied.

use ringmq_proto::mqtt::{QoS, Version};
use ringmq_shard::conn::{CloseReason, ConnKey};

use super::admin::Waiter;
use super::client::{Client, client_flag};
use super::{Broker, Io};
use crate::control::webhook::{EVENT_KINDS, WebhookEvent};

/// `client.connected`, …: the kinds by the names the filters use.
const CONNECTED: &str = EVENT_KINDS[0];
const DISCONNECTED: &str = EVENT_KINDS[1];
const SESSION_CREATED: &str = EVENT_KINDS[2];
const SESSION_EXPIRED: &str = EVENT_KINDS[3];
const DROPPED: &str = EVENT_KINDS[4];

/// Why a connected client's connection ended, as `client.disconnected` and the log say it.
pub(super) fn disconnect_reason(reason: CloseReason, client: &Client) -> &'static str {
    if client.has_flag(client_flag::KICKED) {
        return "kicked";
    }
    if client.has_flag(client_flag::REVOKED) {
        return "not_authorized";
    }
    match reason {
        CloseReason::Normal => "client_disconnect",
        CloseReason::GoingAway => "shutdown",
        CloseReason::ProtocolError
        | CloseReason::TooBig
        | CloseReason::InvalidPayload
        | CloseReason::UpgradeRefused => "protocol_error",
        CloseReason::Timeout => "keepalive_timeout",
        CloseReason::SlowConsumer => "slow_consumer",
        CloseReason::Policy => "policy",
        CloseReason::Lost => "connection_lost",
        CloseReason::TlsFailed => "tls_error",
        CloseReason::WriteFailed => "write_failed",
    }
}

/// The protocol level MQTT gives each version (4: 3.1.1, 5: 5.0).
pub(super) fn protocol_level(v: Version) -> u8 {
    match v {
        Version::V311 => 4,
        Version::V5 => 5,
    }
}

/// `mqtt`, `ws`, `mqtts` or `wss`: what the connection's listener speaks (the last two
/// over TLS).
pub(super) fn transport(io: &Io, key: ConnKey) -> &'static str {
    let ws = matches!(
        io.listener_kind(key),
        Some(ringmq_shard::config::ListenerKind::WebSocket(_))
    );
    match (ws, io.is_tls(key)) {
        (false, false) => "mqtt",
        (true, false) => "ws",
        (false, true) => "mqtts",
        (true, true) => "wss",
    }
}

impl Broker {
    /// Whether an endpoint wants events of `kind` (false without webhooks).
    fn wants(&self, kind: &str) -> bool {
        self.webhooks.as_ref().is_some_and(|w| w.wants(kind))
    }

    /// A client has its CONNACK. The `client.connected` event waits for the connection's
    /// peer address (`Io::request_peer_addr`): the runtime keeps at most its IP.
    pub(super) fn client_connected(
        &mut self,
        io: &mut Io,
        conn: ConnKey,
        client_id: &str,
        clean_start: bool,
    ) {
        tracing::debug!(client_id, shard = self.peers.id, "client connected");
        if !self.wants(CONNECTED) {
            return;
        }
        let transport = transport(io, conn);
        let Some(client) = io.state(conn) else { return };
        let event = WebhookEvent::ClientConnected {
            client_id: client_id.into(),
            username: client.acl.username().map(String::from),
            address: String::new(),
            transport,
            protocol_version: protocol_level(client.version()),
            keep_alive: client.keep_alive_s,
            clean_start,
            shard: self.peers.id,
        };
        let waiter = Waiter::Connected(Box::new(event));
        if let Err(Waiter::Connected(event)) = self.admin.wait_for_address(io, conn, waiter)
            && let Some(w) = &self.webhooks
        {
            // Too many addresses asked for at once: the event goes without one.
            w.send(*event);
        }
    }

    /// A connected client's connection ended (or was taken over by another connection).
    pub(super) fn client_disconnected(&self, client_id: &str, reason: &'static str) {
        tracing::debug!(
            client_id,
            shard = self.peers.id,
            reason,
            "client disconnected"
        );
        if let Some(w) = &self.webhooks
            && w.wants(DISCONNECTED)
        {
            w.send(WebhookEvent::ClientDisconnected {
                client_id: client_id.into(),
                reason,
                shard: self.peers.id,
            });
        }
    }

    pub(super) fn session_created(&self, client_id: &str, expiry_interval: u32) {
        if let Some(w) = &self.webhooks
            && w.wants(SESSION_CREATED)
        {
            w.send(WebhookEvent::SessionCreated {
                client_id: client_id.into(),
                expiry_interval,
                shard: self.peers.id,
            });
        }
    }

    pub(super) fn session_expired(&self, client_id: &str) {
        tracing::debug!(client_id, shard = self.peers.id, "session expired");
        if let Some(w) = &self.webhooks
            && w.wants(SESSION_EXPIRED)
        {
            w.send(WebhookEvent::SessionExpired {
                client_id: client_id.into(),
                shard: self.peers.id,
            });
        }
    }

    /// A message was dropped (counted where it was) for `client_id`, or for a whole shard
    /// when `None`.
    pub(super) fn event_dropped(
        &self,
        client_id: Option<&str>,
        topic: &str,
        qos: QoS,
        reason: &'static str,
    ) {
        if let Some(w) = &self.webhooks
            && w.wants(DROPPED)
        {
            w.send(WebhookEvent::MessageDropped {
                client_id: client_id.map(Into::into),
                topic: topic.into(),
                qos: qos as u8,
                reason,
            });
        }
    }

    /// A message waits in an offline session's queue.
    pub(super) fn event_queued_offline(
        &self,
        client_id: &str,
        topic: &str,
        qos: QoS,
        payload: &[u8],
    ) {
        if let Some(w) = &self.webhooks {
            w.queued_offline(client_id, topic, qos as u8, payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_withdrawn_admission_is_told_apart_from_other_policy_closes() {
        let mut client = Client::default();
        assert_eq!(disconnect_reason(CloseReason::Policy, &client), "policy");
        client.set_flag(client_flag::REVOKED, true);
        assert_eq!(
            disconnect_reason(CloseReason::Policy, &client),
            "not_authorized"
        );
        client.set_flag(client_flag::KICKED, true);
        assert_eq!(disconnect_reason(CloseReason::Policy, &client), "kicked");
    }
}
