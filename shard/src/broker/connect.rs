//! CONNECT to DISCONNECT: accepting a client, finding its session wherever it lives,
//! taking over an older connection, the will, and the end of a session.
//!
//! A client id belongs to one home shard (a hash of the id). The home shard keeps, for
//! its ids, which shard holds the session now. A CONNECT on shard A asks the home
//! (`Claim`); the home records A as the owner and either lets A go ahead (`Granted`: no
//! session elsewhere) or tells the previous owner P to close its connection and hand the
//! session to A (`Takeover` → `Handoff`). All of it is message passing over the mesh; a
//! single-shard broker runs the same steps through its local inbox.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringmq_proto::mqtt::{
    ConnAck, Connect, ConnectReturnCode, Disconnect, Packet, Properties, Property, ReasonCode,
    Version,
};

use super::{Broker, Client, Msg, Phase};
use crate::conn::ConnKey;
use crate::io::Io;
use crate::service::CloseReason;
use crate::session::{Message, Session, SessionId, WillMsg};

/// Session Expiry Interval meaning "never expires" (MQTT 5 §3.1.2.11.2).
const NEVER_EXPIRES: u32 = u32::MAX;

/// What a CONNECT asked for, kept while the session is being found.
pub(super) struct PendingConnect {
    client_id: Box<str>,
    assigned_id: bool,
    clean_start: bool,
    expiry_interval: u32,
    will: Option<WillMsg>,
    receive_maximum: u16,
    max_packet: u32,
}

/// Answers a CONNECT with a refusal (MQTT 5 reason code, or its 3.1.1 equivalent).
pub(super) fn refuse(io: &mut Io<Broker>, key: ConnKey, version: Version, reason: ReasonCode) {
    let code = match version {
        Version::V5 => reason.0,
        Version::V311 => ConnectReturnCode::from_reason(reason).0,
    };
    let pkt = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Properties::EMPTY,
    });
    Broker::write_packet(io, key, version, &pkt);
}

pub(super) fn refuse_v3(io: &mut Io<Broker>, key: ConnKey, code: ConnectReturnCode) {
    let pkt =
        Packet::ConnAck(ConnAck { session_present: false, code: code.0, properties: Properties::EMPTY });
    Broker::write_packet(io, key, Version::V311, &pkt);
}

/// The home shard of a client id (FNV-1a: the same on every shard and every run).
fn home_shard(client_id: &str, shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client_id.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards as u64) as usize
}

impl Broker {
    pub(super) fn on_connect(&mut self, io: &mut Io<Self>, key: ConnKey, c: Connect<'_>) {
        let version = c.version;
        if let Some(client) = io.state(key) {
            client.version = Some(version);
        }
        if io.is_over_limit(key) {
            refuse(io, key, version, ReasonCode::QUOTA_EXCEEDED);
            io.close(key, CloseReason::Policy);
            return;
        }
        // Zero-length client ids: assigned with a clean session; 3.1.1 refuses them for a
        // persistent one (MQTT-3.1.3-8), MQTT 5 assigns one either way (MQTT-3.1.3-6).
        let (client_id, assigned_id): (Box<str>, bool) = if c.client_id.is_empty() {
            if version == Version::V311 && !c.clean_start {
                refuse(io, key, version, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
                io.close(key, CloseReason::Policy);
                return;
            }
            self.auto_id += 1;
            (format!("ringmq-{}-{}-{:x}", self.id, self.auto_id, key.to_u64()).into(), true)
        } else {
            (c.client_id.into(), false)
        };
        let expiry_interval = match version {
            Version::V311 if c.clean_start => 0,
            Version::V311 => NEVER_EXPIRES,
            Version::V5 => c.properties.session_expiry_interval().unwrap_or(0),
        };
        let will = c.will.as_ref().map(|w| {
            let mut props = Vec::new();
            let expiry = super::fanout::forward_props(w.properties, &mut props);
            let now = Instant::now();
            WillMsg {
                msg: Arc::new(Message::new(
                    w.topic,
                    &props,
                    w.payload,
                    w.qos,
                    w.retain,
                    expiry.map(|s| now + Duration::from_secs(s as u64)),
                    None,
                )),
                delay_s: w.properties.will_delay_interval().unwrap_or(0),
            }
        });
        let receive_maximum = c.properties.receive_maximum().unwrap_or(u16::MAX);
        let max_packet = c.properties.maximum_packet_size().unwrap_or(u32::MAX);
        let Some(client) = io.state(key) else { return };
        client.keep_alive_ms = c.keep_alive as u64 * 1500;
        client.phase = Phase::Claiming;
        client.pending = Some(Box::new(PendingConnect {
            client_id: client_id.clone(),
            assigned_id,
            clean_start: c.clean_start,
            expiry_interval,
            will,
            receive_maximum,
            max_packet,
        }));
        let home = home_shard(&client_id, self.shards);
        let from = self.id;
        self.send(io, home, Msg::Claim { client_id, from, conn: key, clean_start: c.clean_start });
    }

    /// On the home shard: record the new owner and start the takeover if needed.
    pub(super) fn on_claim(
        &mut self,
        io: &mut Io<Self>,
        client_id: Box<str>,
        claimer: usize,
        conn: ConnKey,
        clean_start: bool,
    ) {
        let previous = self.registry.insert(client_id.clone(), claimer);
        match previous {
            Some(owner) if owner != claimer => {
                self.send(io, owner, Msg::Takeover { client_id, to: claimer, conn, clean_start })
            }
            _ => self.send(io, claimer, Msg::Granted { conn }),
        }
    }

    /// On the shard holding a session that a connection on shard `to` takes over.
    pub(super) fn on_takeover(
        &mut self,
        io: &mut Io<Self>,
        client_id: &str,
        to: usize,
        conn: ConnKey,
        clean_start: bool,
    ) {
        let session = self.by_client.get(client_id).copied().and_then(|sid| {
            self.kick_connection(io, sid, clean_start);
            self.take_session(sid)
        });
        let session = if clean_start { None } else { session.map(Box::new) };
        self.send(io, to, Msg::Handoff { conn, session });
    }

    /// Closes the connection serving a session because another took it over: MQTT 5
    /// clients hear "session taken over"; the will is published unless the session goes
    /// on and the will is delayed (MQTT 5 §3.1.3.2.2).
    fn kick_connection(&mut self, io: &mut Io<Self>, sid: SessionId, session_ends: bool) {
        let Some(s) = self.session_mut(sid) else { return };
        let Some(old) = s.conn.take() else { return };
        let will = s.will.take();
        if let Some(client) = io.state(old) {
            // The old connection no longer speaks for the session.
            client.session = None;
            client.graceful = true;
            let version = client.version();
            if version == Version::V5 {
                let pkt = Packet::Disconnect(Disconnect {
                    reason: ReasonCode::SESSION_TAKEN_OVER,
                    properties: Properties::EMPTY,
                });
                Broker::write_packet(io, old, version, &pkt);
            }
        }
        io.close(old, CloseReason::Policy);
        if let Some(w) = will {
            if session_ends || w.delay_s == 0 {
                self.publish_message(io, &w.msg);
            }
        }
    }

    /// Removes a session from this shard (its subscriptions leave the topic table) and
    /// returns it, e.g. to hand it to another shard. The registry is not told.
    fn take_session(&mut self, sid: SessionId) -> Option<Session> {
        self.session(sid)?;
        let slot = self.sessions.remove(sid.index as usize);
        let mut session = slot.session;
        self.by_client.remove(&session.client_id);
        let subs = std::mem::take(&mut session.subs);
        for sub in &subs {
            self.remove_subscription(sid, &sub.filter);
        }
        session.subs = subs;
        self.offline.retain(|&o| o != sid);
        Some(session)
    }

    /// Ends a session for good: drops it and tells the client id's home shard.
    pub(super) fn end_session(&mut self, io: &mut Io<Self>, sid: SessionId) {
        if let Some(session) = self.take_session(sid) {
            let home = home_shard(&session.client_id, self.shards);
            let owner = self.id;
            self.send(io, home, Msg::Release { client_id: session.client_id, owner });
        }
    }

    /// On the claiming shard: the session is found (or there is none); answer CONNACK.
    pub(super) fn finish_connect(
        &mut self,
        io: &mut Io<Self>,
        conn: ConnKey,
        handed: Option<Box<Session>>,
        from_takeover: bool,
    ) {
        let pending = io
            .state(conn)
            .filter(|c| c.phase == Phase::Claiming)
            .and_then(|c| c.pending.take());
        let Some(p) = pending else {
            // The connection went away while its session was being found.
            self.orphaned_claim(io, handed);
            return;
        };
        // A session on this shard: an older connection here, or an offline session.
        let mut existing = if from_takeover { None } else { self.by_client.get(&p.client_id).copied() };
        if let Some(sid) = existing {
            self.kick_connection(io, sid, p.clean_start);
            if p.clean_start {
                self.take_session(sid);
                existing = None;
            }
        }
        let (sid, session_present) = match (existing, handed) {
            (Some(sid), _) => (sid, true),
            (None, Some(s)) if !p.clean_start => {
                let sid = self.install_session(*s);
                (sid, true)
            }
            _ => {
                let version = io.state(conn).map_or(Version::V311, |c| c.version());
                let sid = self.add_session(Session::new(p.client_id.clone(), version));
                (sid, false)
            }
        };
        let version = io.state(conn).map_or(Version::V311, |c| c.version());
        let window = p.receive_maximum.min(self.config().max_inflight).max(1);
        let Some(s) = self.session_mut(sid) else { return };
        s.conn = Some(conn);
        s.version = version;
        s.expiry_interval = p.expiry_interval;
        s.expires_at_ms = None;
        s.will = p.will;
        s.will_at_ms = None;
        s.send_window = window;
        s.client_max_packet = p.max_packet;
        self.offline.retain(|&o| o != sid);

        let topic_alias_max = self.config().topic_alias_max;
        let max_packet = io.config().max_packet_size;
        let props = [
            Property::AssignedClientIdentifier(&p.client_id),
            Property::TopicAliasMaximum(topic_alias_max),
            Property::MaximumPacketSize(max_packet),
            Property::RetainAvailable(1),
            Property::WildcardSubscriptionAvailable(1),
            Property::SubscriptionIdentifierAvailable(1),
            Property::SharedSubscriptionAvailable(1),
        ];
        let props = if p.assigned_id { &props[..] } else { &props[1..] };
        let pkt = Packet::ConnAck(ConnAck {
            session_present,
            code: 0,
            properties: if version == Version::V5 { Properties::List(props) } else { Properties::EMPTY },
        });
        Broker::write_packet(io, conn, version, &pkt);
        let Some(client) = io.state(conn) else { return };
        client.phase = Phase::Connected;
        client.session = Some(sid);
        let ka = client.keep_alive_ms;
        if ka > 0 {
            let at = io.now_ms() + ka;
            io.set_deadline(conn, at);
        } else {
            io.clear_deadline(conn);
        }
        // What was left in flight goes again, then what waited in the queue.
        self.resend_inflight(io, sid);
        self.drain_queue(io, sid);
        // Packets that arrived while the session was being found.
        let carried = io.state(conn).map(|c| std::mem::take(&mut c.carry)).unwrap_or_default();
        if !carried.is_empty() {
            self.process_input(io, conn, &carried);
        }
    }

    /// A claim finished after its connection closed: keep a handed-over persistent
    /// session (offline), or let the home shard forget the id.
    fn orphaned_claim(&mut self, io: &mut Io<Self>, handed: Option<Box<Session>>) {
        match handed {
            Some(s) if s.is_persistent() => {
                let sid = self.install_session(*s);
                self.went_offline(io, sid);
            }
            Some(s) => {
                let home = home_shard(&s.client_id, self.shards);
                let owner = self.id;
                self.send(io, home, Msg::Release { client_id: s.client_id.clone(), owner });
            }
            None => {}
        }
    }

    /// Adds a session handed over from another shard, subscriptions included.
    fn install_session(&mut self, mut s: Session) -> SessionId {
        s.conn = None;
        let subs = std::mem::take(&mut s.subs);
        let sid = self.add_session(s);
        for sub in subs {
            self.add_subscription(sid, sub);
        }
        sid
    }

    pub(super) fn on_disconnect(&mut self, io: &mut Io<Self>, key: ConnKey, d: Disconnect<'_>) {
        let sid = io.state(key).and_then(|c| c.session);
        if let Some(expiry) = d.properties.session_expiry_interval() {
            let was_zero = sid.and_then(|s| self.session(s)).is_some_and(|s| s.expiry_interval == 0);
            if was_zero && expiry != 0 {
                // MQTT-3.14.2-2: a session that was to end cannot be extended here.
                return self.protocol_error(
                    io,
                    key,
                    ReasonCode::PROTOCOL_ERROR,
                    "session expiry set on DISCONNECT after 0 on CONNECT",
                );
            }
            if let Some(s) = sid.and_then(|s| self.session_mut(s)) {
                s.expiry_interval = expiry;
            }
        }
        if let Some(c) = io.state(key) {
            // Reason 0x04 asks for the will to be published anyway.
            c.graceful = d.reason != ReasonCode::DISCONNECT_WITH_WILL_MESSAGE;
        }
        io.close(key, CloseReason::Normal);
    }

    /// A connection ended: its session goes offline or ends, and its will is published
    /// (now, or after the will delay) unless the client said goodbye.
    pub(super) fn connection_closed(&mut self, io: &mut Io<Self>, key: ConnKey, client: Client) {
        let Some(sid) = client.session else { return };
        let Some(s) = self.session_mut(sid) else { return };
        if s.conn != Some(key) {
            return;
        }
        s.conn = None;
        let will = s.will.take().filter(|_| !client.graceful);
        let persistent = s.is_persistent();
        if let Some(w) = will {
            if w.delay_s > 0 && persistent {
                let at = io.now_ms() + w.delay_s as u64 * 1000;
                if let Some(s) = self.session_mut(sid) {
                    s.will = Some(w);
                    s.will_at_ms = Some(at);
                }
            } else {
                self.publish_message(io, &w.msg);
            }
        }
        if persistent {
            self.went_offline(io, sid);
        } else {
            self.end_session(io, sid);
        }
    }

    fn went_offline(&mut self, io: &mut Io<Self>, sid: SessionId) {
        let now = io.now_ms();
        let Some(s) = self.session_mut(sid) else { return };
        s.expires_at_ms = match s.expiry_interval {
            NEVER_EXPIRES => None,
            secs => Some(now + secs as u64 * 1000),
        };
        self.offline.push(sid);
    }

    /// Each tick: publish delayed wills that are due, end sessions that expired (their
    /// pending will is published then, MQTT 5 §3.1.2.5).
    pub(super) fn expire_sessions(&mut self, io: &mut Io<Self>) {
        let now = io.now_ms();
        let offline = std::mem::take(&mut self.offline);
        let mut keep = Vec::with_capacity(offline.len());
        for sid in offline {
            let Some(s) = self.session_mut(sid) else { continue };
            if s.conn.is_some() {
                continue;
            }
            let expired = s.expires_at_ms.is_some_and(|at| at <= now);
            let will_due = s.will_at_ms.is_some_and(|at| at <= now);
            if expired || will_due {
                s.will_at_ms = None;
                if let Some(w) = s.will.take() {
                    self.publish_message(io, &w.msg);
                }
            }
            if expired {
                self.end_session(io, sid);
            } else {
                keep.push(sid);
            }
        }
        keep.append(&mut self.offline);
        self.offline = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_shard_is_stable_and_in_range() {
        for n in 1..8 {
            for id in ["a", "client-1", "", "ünïcode"] {
                let h = home_shard(id, n);
                assert!(h < n);
                assert_eq!(h, home_shard(id, n));
            }
        }
        assert_ne!(home_shard("a", 1000), home_shard("b", 1000));
    }
}
