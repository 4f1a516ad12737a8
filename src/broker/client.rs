//! The broker's state for one connection ([`Client`]), which the runtime keeps beside its
//! own: where the connection is in the MQTT conversation, what its CONNECT settled, and
//! what only some connections need (the front of a split packet, input held back, topic
//! aliases, the CONNECT whose session is being found), made on first use.

use std::collections::HashMap;

use ringmq_proto::mqtt::Version;

use super::session::{SessionId, WillMsg};
use crate::auth::ClientAcl;

/// Where a connection is in the MQTT conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Phase {
    /// Waiting for CONNECT (the CONNECT timeout runs).
    #[default]
    AwaitConnect,
    /// CONNECT read; its credentials are being verified off the shard (the verification
    /// pool). Packets that arrive meanwhile wait in the carry buffer; the CONNECT timeout
    /// still runs.
    Authenticating,
    /// CONNECT accepted; the client id's home shard is finding its session. Packets that
    /// arrive meanwhile wait in the carry buffer.
    Claiming,
    Connected,
}

/// The broker's state for one connection (the session is separate: it may outlive the
/// connection or move to another shard).
///
/// A shard may serve a million mostly idle connections, so what every connection uses
/// is inline, and what only some do (a packet split across receives, topic aliases, the
/// CONNECT whose session is being found) is in `ClientExtra`, made on first use and
/// dropped when it is no longer used.
pub struct Client {
    pub(super) session: Option<SessionId>,
    pub(super) extra: Option<Box<ClientExtra>>,
    /// The largest packet the client accepts (MQTT 5 Maximum Packet Size); `u32::MAX`:
    /// no limit but the protocol's.
    pub(super) max_packet: u32,
    /// The keep alive in seconds (0: none); the connection ends after one and a half
    /// keep alives of silence.
    pub(super) keep_alive_s: u16,
    pub(super) phase: Phase,
    /// `client_flag` bits (two bytes: they sit in what `Client`'s alignment leaves).
    pub(super) flags: u16,
    /// What the client may publish, subscribe to and receive: one null pointer when
    /// nothing restricts it.
    pub(super) acl: ClientAcl,
    /// When the client got its CONNACK: shard time in seconds (`Io::now_ms` / 1000), for
    /// the API's "connected since". With the rules' pointer beside it the struct grows
    /// from 32 to 40 bytes (four of them alignment): the only per-connection memory the
    /// control plane adds.
    pub(super) connected_at_s: u32,
}

/// Bits of `Client::flags`.
pub(super) mod client_flag {
    /// The client speaks MQTT 5 (else 3.1.1, also before its CONNECT is read).
    pub const V5: u16 = 1 << 0;
    /// The connection ended with a DISCONNECT that does not ask for the will.
    pub const GRACEFUL: u16 = 1 << 1;
    /// MQTT 5 Request Problem Information: Reason Strings may be sent on packets other
    /// than CONNACK and DISCONNECT. Set from CONNECT.
    pub const PROBLEM_INFO: u16 = 1 << 2;
    /// Some subscription of the session covers topics the client may not receive (a deny
    /// rule inside it, or one a reload or another user no longer allows): every live
    /// delivery is checked against the client's ACL.
    pub const CHECK_DELIVERIES: u16 = 1 << 3;
    /// Accepted while its source address had `max_connections_per_ip` open: its CONNECT
    /// is refused.
    pub const OVER_IP_LIMIT: u16 = 1 << 4;
    /// Counted in the per-address table (released when it ends).
    pub const IP_COUNTED: u16 = 1 << 5;
    /// The CONNECT asked for a clean start (3.1.1: clean session).
    pub const CLEAN_START: u16 = 1 << 6;
    /// An administrator ended the connection (the API's disconnect or discard).
    pub const KICKED: u16 = 1 << 7;
    /// The broker withdrew its admission: its token expired, or a reload no longer
    /// admits it.
    pub const REVOKED: u16 = 1 << 8;
}

/// What a connection holds beyond an idle one's.
#[derive(Default)]
pub(super) struct ClientExtra {
    /// The front of a packet split across receives (or, while the session is being
    /// claimed, every byte received after the CONNECT).
    pub(super) carry: Vec<u8>,
    /// While paused: the whole packets held back, in order (acknowledgements aside).
    pub(super) held: Vec<u8>,
    /// Topic aliases the client set (MQTT 5), index = alias − 1.
    pub(super) aliases: Vec<Option<Box<str>>>,
    /// Topic aliases the broker sets towards the client (MQTT 5), when the client allows
    /// them.
    pub(super) out_aliases: Option<OutAliases>,
    pub(super) pending: Option<Box<PendingConnect>>,
}

impl ClientExtra {
    fn is_unused(&self) -> bool {
        self.carry.capacity() == 0
            && self.held.capacity() == 0
            && self.aliases.is_empty()
            && self.out_aliases.is_none()
            && self.pending.is_none()
    }
}

impl Default for Client {
    fn default() -> Self {
        Client {
            session: None,
            extra: None,
            max_packet: u32::MAX,
            keep_alive_s: 0,
            phase: Phase::AwaitConnect,
            flags: 0,
            acl: ClientAcl::unrestricted(),
            connected_at_s: 0,
        }
    }
}

impl Client {
    pub(super) fn version(&self) -> Version {
        if self.flags & client_flag::V5 != 0 {
            Version::V5
        } else {
            Version::V311
        }
    }

    pub(super) fn set_flag(&mut self, flag: u16, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    pub(super) fn graceful(&self) -> bool {
        self.flags & client_flag::GRACEFUL != 0
    }

    pub(super) fn problem_info(&self) -> bool {
        self.flags & client_flag::PROBLEM_INFO != 0
    }

    pub(super) fn clean_start(&self) -> bool {
        self.flags & client_flag::CLEAN_START != 0
    }

    pub(super) fn has_flag(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// Whether a live delivery of a message on `topic` may go to this client.
    pub(super) fn may_receive_live(&self, topic: &str) -> bool {
        !self.has_flag(client_flag::CHECK_DELIVERIES) || self.acl.may_receive(topic)
    }

    /// The keep alive deadline's distance, in ms (0: none).
    pub(super) fn keep_alive_ms(&self) -> u64 {
        self.keep_alive_s as u64 * 1500
    }

    /// The largest packet the client accepts.
    pub(super) fn max_packet(&self) -> u32 {
        self.max_packet
    }

    /// Whether a packet of `len` bytes may be sent to this client (MQTT-3.1.2-24).
    pub(super) fn accepts(&self, len: usize) -> bool {
        len <= self.max_packet as usize
    }

    pub(super) fn extra_mut(&mut self) -> &mut ClientExtra {
        self.extra.get_or_insert_default()
    }

    pub(super) fn out_aliases(&mut self) -> Option<&mut OutAliases> {
        self.extra.as_mut()?.out_aliases.as_mut()
    }

    /// Drops the extra state once nothing is in it.
    pub(super) fn tidy(&mut self) {
        if self.extra.as_ref().is_some_and(|e| e.is_unused()) {
            self.extra = None;
        }
    }

    pub(super) fn take_carry(&mut self) -> Vec<u8> {
        self.take_buffer(|e| &mut e.carry)
    }

    /// Keeps `carry` (with its capacity, so packets split again need no allocation).
    pub(super) fn put_carry(&mut self, carry: Vec<u8>) {
        self.put_buffer(|e| &mut e.carry, carry);
    }

    pub(super) fn take_held(&mut self) -> Vec<u8> {
        self.take_buffer(|e| &mut e.held)
    }

    pub(super) fn put_held(&mut self, held: Vec<u8>) {
        self.put_buffer(|e| &mut e.held, held);
    }

    pub(super) fn take_buffer(&mut self, buffer: fn(&mut ClientExtra) -> &mut Vec<u8>) -> Vec<u8> {
        self.extra
            .as_mut()
            .map(|e| std::mem::take(buffer(e)))
            .unwrap_or_default()
    }

    /// Keeps `bytes` in one of the buffers of the extra state, or drops the extra state if
    /// nothing is left in it.
    pub(super) fn put_buffer(
        &mut self,
        buffer: fn(&mut ClientExtra) -> &mut Vec<u8>,
        bytes: Vec<u8>,
    ) {
        if bytes.capacity() > 0 {
            *buffer(self.extra_mut()) = bytes;
        } else {
            self.tidy();
        }
    }
}

/// Topic aliases from the broker to one client (MQTT 5 §3.3.2.3.4): the first
/// `max` topics sent get an alias each, kept for the life of the connection; later
/// topics go by name. A fixed set never re-points an alias, so a PUBLISH resent after
/// a lost acknowledgement still means what it meant.
pub(super) struct OutAliases {
    max: u16,
    by_topic: HashMap<Box<str>, u16>,
}

impl OutAliases {
    pub(super) fn new(max: u16) -> OutAliases {
        OutAliases {
            max,
            by_topic: HashMap::new(),
        }
    }

    /// The alias for `topic`, and whether it is new (the PUBLISH must then carry the
    /// topic to set it); `None` once every alias is taken by another topic.
    pub(super) fn lookup(&self, topic: &str) -> Option<(u16, bool)> {
        match self.by_topic.get(topic) {
            Some(&alias) => Some((alias, false)),
            None if self.by_topic.len() < self.max as usize => {
                Some((self.by_topic.len() as u16 + 1, true))
            }
            None => None,
        }
    }

    /// Records the alias a PUBLISH just sent set.
    pub(super) fn set(&mut self, topic: &str, alias: u16) {
        self.by_topic.insert(topic.into(), alias);
    }
}

/// What a CONNECT asked for, kept while the session is being found.
pub(super) struct PendingConnect {
    pub(super) client_id: Box<str>,
    pub(super) assigned_id: bool,
    pub(super) clean_start: bool,
    pub(super) expiry_interval: u32,
    pub(super) will: Option<WillMsg>,
    pub(super) receive_maximum: u16,
    /// The keep alive the broker imposes (MQTT 5 Server Keep Alive), if it does.
    pub(super) server_keep_alive: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection carries a `Client` in the runtime's slab (see `Client`'s text): a
    /// field added here is paid a million times. Its rules cost one pointer, null when
    /// nothing restricts the client.
    #[test]
    fn an_idle_connection_costs_the_broker_40_bytes() {
        assert_eq!(std::mem::size_of::<ClientAcl>(), 8);
        assert_eq!(std::mem::size_of::<Client>(), 40);
    }
}
