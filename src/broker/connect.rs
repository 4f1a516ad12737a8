//! CONNECT to DISCONNECT: accepting a client, finding its session wherever it lives (the
//! claim: see `takeover`), answering CONNACK, the will, DISCONNECT, the end of a
//! connection, and the end of a session (expiry).

use std::time::Instant;

use ringmq_proto::mqtt::{
    ConnAck, Connect, Disconnect, Packet, Properties, Property, ReasonCode, Version,
};
use ringmq_shard::conn::{CloseReason, ConnKey};

use super::client::{Client, OutAliases, PendingConnect, Phase, client_flag};
use super::durable::Then;
use super::events::disconnect_reason;
use super::msg::Claimant;
use super::publish::forward_props;
use super::routing::level_count;
use super::session::{Message, MovingSession, Session, SessionId, WillMsg};
use super::{Broker, Io, Msg};
use crate::auth::Credentials;
use crate::store::record::EndReason;

/// Session Expiry Interval meaning "never expires" (MQTT 5 §3.1.2.11.2).
const NEVER_EXPIRES: u32 = u32::MAX;

/// How the claim of a client id ended, for the connection that made it.
pub(super) enum Claim {
    /// No other shard holds the session (`Msg::Granted`): a session of the id here, if
    /// there is one, is this connection's.
    Granted,
    /// The shard that held the session handed it over (`Msg::Handoff`): the session (none
    /// if it had ended, or a clean start was asked for), and the stub it left there to
    /// forward what still reaches it (that shard, the stub's slot).
    TakenOver {
        session: Option<Box<MovingSession>>,
        stub: Option<(usize, SessionId)>,
    },
}

impl Broker {
    pub(super) fn on_connect(&mut self, io: &mut Io, key: ConnKey, c: Connect<'_>) {
        let version = c.version;
        let max_packet = c.properties.maximum_packet_size().unwrap_or(u32::MAX);
        if let Some(client) = io.state(key) {
            client.set_flag(client_flag::V5, version == Version::V5);
            client.max_packet = max_packet;
            // MQTT-3.1.2-29: with Request Problem Information 0, no Reason String
            // except on CONNACK and DISCONNECT.
            let problem_info = c.properties.request_problem_information() != Some(0);
            client.set_flag(client_flag::PROBLEM_INFO, problem_info);
        }
        if io.is_over_limit(key) {
            let why = "the server's connection limit is reached";
            tracing::info!(shard = self.peers.id, "CONNECT refused: {why}");
            self.writer
                .refuse_connect(io, key, version, ReasonCode::QUOTA_EXCEEDED, why);
            io.close(key, CloseReason::Policy);
            return;
        }
        // Zero-length client ids: assigned with a clean session; 3.1.1 refuses them for a
        // persistent one (MQTT-3.1.3-8), MQTT 5 assigns one either way (MQTT-3.1.3-6).
        let (client_id, assigned_id): (Box<str>, bool) = if c.client_id.is_empty() {
            if version == Version::V311 && !c.clean_start {
                let why = "an empty client id needs a clean session";
                tracing::info!(shard = self.peers.id, "CONNECT refused: {why}");
                self.writer.refuse_connect(
                    io,
                    key,
                    version,
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    why,
                );
                io.close(key, CloseReason::Policy);
                return;
            }
            self.sessions.assigned_ids += 1;
            (
                format!(
                    "ringmq-{}-{}-{:x}",
                    self.peers.id,
                    self.sessions.assigned_ids,
                    key.to_u64()
                )
                .into(),
                true,
            )
        } else {
            (c.client_id.into(), false)
        };
        let expiry_interval = match version {
            Version::V311 if c.clean_start => 0,
            Version::V311 => self.config().v311_session_expiry_s.unwrap_or(NEVER_EXPIRES),
            Version::V5 => c.properties.session_expiry_interval().unwrap_or(0),
        };
        if let Some(w) = &c.will
            && level_count(w.topic) > self.config().max_topic_levels
        {
            // A will is published like any PUBLISH (and retained, perhaps): held to the
            // same bound. 3.1.1 has no return code for it: the connection is closed
            // without a CONNACK, as for any CONNECT the server does not accept.
            self.stats.topic_levels_refused.add(1);
            if version == Version::V5 {
                let why = "the will topic has more levels than this server takes";
                self.writer
                    .refuse_connect(io, key, version, ReasonCode::TOPIC_NAME_INVALID, why);
            }
            io.close(key, CloseReason::Policy);
            return;
        }
        let will = c.will.as_ref().map(|w| {
            let mut props = Vec::new();
            let expiry_s = forward_props(w.properties, &mut props);
            WillMsg {
                msg: Message::new(w.topic, &props, w.payload, w.qos, w.retain, None, None),
                expiry_s,
                delay_s: w.properties.will_delay_interval().unwrap_or(0),
            }
        });
        // MQTT 5 §3.2.2.3.14: the broker may shorten the keep alive (and give one to a
        // client that asked for none); the client must then use the broker's value.
        let max_ka = self.config().max_keep_alive_s;
        let server_keep_alive =
            (version == Version::V5 && max_ka > 0 && (c.keep_alive == 0 || c.keep_alive > max_ka))
                .then_some(max_ka);
        let keep_alive = server_keep_alive.unwrap_or(c.keep_alive);
        let receive_maximum = c.properties.receive_maximum().unwrap_or(u16::MAX);
        let alias_max = c
            .properties
            .topic_alias_maximum()
            .unwrap_or(0)
            .min(self.config().topic_alias_max);
        let Some(client) = io.state(key) else { return };
        // MQTT-3.1.2-24 (3.1.1: MQTT-3.1.2-24 too): one and a half keep alives of silence
        // end the connection.
        client.keep_alive_s = keep_alive;
        client.set_flag(client_flag::CLEAN_START, c.clean_start);
        let extra = client.extra_mut();
        if alias_max > 0 {
            extra.out_aliases = Some(OutAliases::new(alias_max));
        }
        extra.pending = Some(Box::new(PendingConnect {
            client_id: client_id.clone(),
            assigned_id,
            clean_start: c.clean_start,
            expiry_interval,
            will,
            receive_maximum,
            server_keep_alive,
        }));
        // Bans, limits and credentials (`admission`); an admitted client claims its
        // session (`claim_session`), now or once its credentials are verified.
        let certificate_cn: Option<Box<str>> = io.peer_certificate_cn(key).map(Into::into);
        let creds = Credentials {
            client_id: &client_id,
            username: c.username,
            password: c.password,
            auth_method: c.properties.authentication_method(),
            // The CN of a client certificate the TLS transport verified: the username
            // with `--tls-cn-as-username`.
            certificate_cn: certificate_cn.as_deref(),
        };
        self.admit(io, key, &creds);
    }

    /// An admitted CONNECT: its client id's home shard is asked for the session.
    pub(super) fn claim_session(&mut self, io: &mut Io, key: ConnKey) {
        let Some(client) = io.state(key) else { return };
        let Some(p) = client.extra.as_ref().and_then(|e| e.pending.as_ref()) else {
            return;
        };
        let (client_id, clean_start) = (p.client_id.clone(), p.clean_start);
        client.phase = Phase::Claiming;
        if self.cluster_claim(io, key, &client_id, clean_start) {
            return;
        }
        self.send_claim(io, client_id, key, clean_start);
    }

    /// Asks the home shard of `client_id` for its session, for connection `conn` here.
    pub(super) fn send_claim(
        &mut self,
        io: &mut Io,
        client_id: Box<str>,
        conn: ConnKey,
        clean_start: bool,
    ) {
        let home = self.peers.home_of(&client_id);
        let claimant = Claimant {
            shard: self.peers.id,
            conn,
            clean_start,
        };
        self.send(
            io,
            home,
            Msg::Claim {
                client_id,
                claimant,
            },
        );
    }

    /// On the claiming shard: the claim of `client_id` under `epoch` for connection `conn`
    /// has ended as `claim` says; the session is found (handed over, or here, or there is
    /// none): answer CONNACK.
    pub(super) fn finish_connect(
        &mut self,
        io: &mut Io,
        conn: ConnKey,
        client_id: &str,
        epoch: u64,
        claim: Claim,
    ) {
        let claim = self.with_arrival(io, conn, client_id, claim);
        let pending = io
            .state(conn)
            .filter(|c| c.phase == Phase::Claiming)
            .and_then(|c| c.extra.as_mut()?.pending.take());
        let Some(mut p) = pending else {
            // The connection went away while its session was being found.
            self.orphaned_claim(io, client_id, epoch, claim);
            return;
        };
        let (handed, stub, from_takeover) = match claim {
            Claim::Granted => (None, None, false),
            Claim::TakenOver { session, stub } => (session, stub, true),
        };
        // A session on this shard: an older connection here, or an offline session.
        let mut existing = if from_takeover {
            None
        } else {
            self.sessions.find(&p.client_id)
        };
        if let Some(sid) = existing {
            self.kick_connection(io, sid, p.clean_start);
            if p.clean_start {
                self.take_session(sid, EndReason::Discarded);
                existing = None;
            }
        }
        let version = io.state(conn).map_or(Version::V311, |c| c.version());
        let (sid, session_present) = match (existing, handed) {
            (Some(sid), _) => (sid, true),
            (None, Some(s)) if !p.clean_start => (self.install_session(io, *s, stub), true),
            (None, handed) => {
                if let Some(s) = handed {
                    // A clean start asked for after the session left its old shard: it
                    // still has to settle its stub there.
                    let sid = self.install_session(io, *s, stub);
                    self.take_session(sid, EndReason::Discarded);
                }
                let max = self.config().max_sessions;
                match self
                    .sessions
                    .add_new(Session::new(&p.client_id, version), max)
                {
                    Some(sid) => {
                        self.session_created(&p.client_id, p.expiry_interval);
                        (sid, false)
                    }
                    None => return self.refuse_new_session(io, conn, &p.client_id, epoch),
                }
            }
        };
        let window = p.receive_maximum.min(self.config().max_inflight).max(1);
        // Its queue (offline until now) waits for this connection's window from here.
        let Some(offline) = self
            .sessions
            .get(sid)
            .map(|s| s.conn.is_none().then(|| s.queue_len()))
        else {
            return;
        };
        self.pressure.waiting += offline.unwrap_or(0);
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        s.conn = Some(conn);
        s.version = version;
        s.expiry_interval = p.expiry_interval;
        if let Some(e) = s.extra_opt_mut() {
            e.expires_at_ms = None;
            e.will = None;
            e.will_at_ms = None;
        }
        if let Some(will) = p.will.take() {
            s.extra_mut().will = Some(will);
        }
        s.send_window = window;
        s.epoch = epoch;
        self.sessions.forget_offline(sid);
        self.log_connected(sid);

        if version == Version::V5 {
            self.write_connack_v5(io, conn, &p, session_present);
        } else {
            let pkt = Packet::ConnAck(ConnAck {
                session_present,
                code: 0,
                properties: Properties::EMPTY,
            });
            self.writer.packet(io, conn, version, &pkt);
        }
        let now_s = (io.now_ms() / 1000) as u32;
        let Some(client) = io.state(conn) else {
            return;
        };
        client.phase = Phase::Connected;
        client.session = Some(sid);
        client.connected_at_s = now_s;
        let ka = client.keep_alive_ms();
        let restricted = !client.acl.is_unrestricted();
        if ka > 0 {
            let at = io.now_ms() + ka;
            io.set_deadline(conn, at);
        } else {
            io.clear_deadline(conn);
        }
        self.client_connected(io, conn, &p.client_id, p.clean_start);
        self.cluster_session(&p.client_id, true);
        if restricted && session_present {
            // Subscriptions made before, perhaps under other rules.
            self.recheck_subscriptions(io, conn, sid);
        }
        // What was left in flight goes again (MQTT-4.4.0-1), then what waited in the
        // queue: for a logged session once the session's open is durable, so nothing
        // reaches the client under a packet id the log might not hold after a crash.
        if self.sessions.get(sid).is_some_and(|s| s.store_key != 0) {
            self.park(io, Then::Resend { conn, sid }, None);
        } else {
            self.resend_inflight(io, sid);
            self.drain_queue(io, sid);
        }
        // Packets that arrived while the session was being found.
        let carried = io
            .state(conn)
            .map(|c| {
                let carried = c.take_carry();
                // The CONNECT is done with: an idle connection keeps no extra state.
                c.tidy();
                carried
            })
            .unwrap_or_default();
        if !carried.is_empty() {
            self.process_input(io, conn, &carried);
        }
    }

    /// The broker holds `max_sessions` already: the CONNECT that needs a new one is
    /// refused (CONNACK 0x03 / 0x97, counted), and the home shard forgets the claim.
    fn refuse_new_session(&mut self, io: &mut Io, conn: ConnKey, client_id: &str, epoch: u64) {
        self.stats.sessions_refused.add(1);
        let version = io.state(conn).map_or(Version::V311, |c| c.version());
        let why = "the server's session limit is reached";
        self.writer
            .refuse_connect(io, conn, version, ReasonCode::QUOTA_EXCEEDED, why);
        io.close(conn, CloseReason::Policy);
        let home = self.peers.home_of(client_id);
        let release = Msg::Release {
            client_id: client_id.into(),
            owner: self.peers.id,
            epoch,
        };
        self.send(io, home, release);
    }

    /// The MQTT 5 CONNACK: what the client must know of this broker's limits.
    pub(super) fn write_connack_v5(
        &mut self,
        io: &mut Io,
        conn: ConnKey,
        p: &PendingConnect,
        session_present: bool,
    ) {
        let cfg = self.config();
        let mut props = Vec::with_capacity(10);
        if p.assigned_id {
            props.push(Property::AssignedClientIdentifier(&p.client_id));
        }
        if let Some(ka) = p.server_keep_alive {
            props.push(Property::ServerKeepAlive(ka));
        }
        if cfg.max_inflight < u16::MAX {
            props.push(Property::ReceiveMaximum(cfg.max_inflight.max(1)));
        }
        props.extend([
            Property::TopicAliasMaximum(cfg.topic_alias_max),
            Property::MaximumPacketSize(self.config().max_packet_size),
            Property::RetainAvailable(1),
            Property::WildcardSubscriptionAvailable(1),
            Property::SubscriptionIdentifierAvailable(1),
            Property::SharedSubscriptionAvailable(1),
        ]);
        let pkt = Packet::ConnAck(ConnAck {
            session_present,
            code: 0,
            properties: Properties::List(&props),
        });
        self.writer.packet(io, conn, Version::V5, &pkt);
    }

    /// A claim finished after its connection closed: keep a handed-over persistent
    /// session (offline), or let the home shard forget the id.
    pub(super) fn orphaned_claim(
        &mut self,
        io: &mut Io,
        client_id: &str,
        epoch: u64,
        claim: Claim,
    ) {
        match claim {
            Claim::TakenOver {
                session: Some(s),
                stub,
            } => {
                let persistent = s.session.is_persistent();
                let sid = self.install_session(io, *s, stub);
                if let Some(s) = self.sessions.get_mut(sid) {
                    s.epoch = epoch;
                }
                if persistent {
                    self.went_offline(io, sid);
                } else {
                    self.end_session(io, sid, EndReason::Discarded);
                }
            }
            _ => {
                match self.sessions.find(client_id) {
                    // An offline session here is the one the home now points at.
                    Some(sid) => {
                        if let Some(s) = self.sessions.get_mut(sid) {
                            s.epoch = epoch;
                        }
                    }
                    None => {
                        let home = self.peers.home_of(client_id);
                        let owner = self.peers.id;
                        let client_id = client_id.into();
                        let release = Msg::Release {
                            client_id,
                            owner,
                            epoch,
                        };
                        self.send(io, home, release);
                    }
                }
            }
        }
    }

    /// Closes the connection serving a session because another connection took the
    /// session over (MQTT-3.1.4-3); MQTT 5 clients hear 0x8E first. The will of that
    /// connection is published unless the session goes on and the will is delayed (the
    /// new connection arrived within the delay, MQTT-3.1.3-9); a delayed will still
    /// waiting from an earlier connection is published if the session ends now (MQTT 5
    /// §3.1.3.2.2: at the end of the delay or of the session, whichever comes first).
    pub(super) fn kick_connection(&mut self, io: &mut Io, sid: SessionId, session_ends: bool) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let old = s.conn.take();
        let no_longer_waiting = if old.is_some() { s.queue_len() } else { 0 };
        let will = s.take_will();
        let store_key = s.store_key;
        if will.is_some() && store_key != 0 {
            self.log_will_gone(store_key);
        }
        if old.is_some()
            && let Some(s) = self.sessions.get(sid)
        {
            self.client_disconnected(&s.client_id, "taken_over");
        }
        self.pressure.waiting = self.pressure.waiting.saturating_sub(no_longer_waiting);
        if let Some(old) = old {
            if let Some(client) = io.state(old) {
                // The old connection no longer speaks for the session; its end must not
                // publish the will a second time.
                client.session = None;
                client.set_flag(client_flag::GRACEFUL, true);
            }
            self.disconnect(
                io,
                old,
                ReasonCode::SESSION_TAKEN_OVER,
                "another connection took the session over",
                CloseReason::Policy,
            );
        }
        if let Some(w) = will
            && (session_ends || (old.is_some() && w.delay_s == 0))
        {
            self.publish_will(io, w);
        }
    }

    /// Publishes a will, its Message Expiry Interval counted from now.
    pub(super) fn publish_will(&mut self, io: &mut Io, w: WillMsg) {
        let m = w.into_message(Instant::now());
        self.publish_message(io, &m);
    }

    /// Removes a session from this shard (its subscriptions leave the topic table, its
    /// log ends it for `why`) and returns it. The registry is not told.
    pub(super) fn take_session(&mut self, sid: SessionId, why: EndReason) -> Option<Session> {
        // QoS 2 messages of a logged session never released: the sessions that got
        // them forget them.
        let pending = self
            .sessions
            .get(sid)
            .map(Session::unreleased_ids)
            .unwrap_or_default();
        self.log_session_ended(sid, why);
        let mut session = self.sessions.remove(sid)?;
        self.forget_received(pending);
        self.retained_cursors.remove(sid);
        if session.conn.is_some() {
            self.pressure.waiting = self.pressure.waiting.saturating_sub(session.queue_len());
        }
        for sub in session.take_subs() {
            if session.durable && sub.share.is_none() {
                self.durable_interest_of(sub.node, false);
            }
            self.remove_subscription(sid, sub.node, sub.share.as_deref());
        }
        Some(session)
    }

    /// QoS 2 messages a logged session received and its client never released (`ids`):
    /// the sessions that got them, on every shard, forget them.
    pub(super) fn forget_received(&mut self, ids: Vec<u64>) {
        for id in ids {
            self.on_peer_released(id);
            for to in self.peers.others() {
                self.mail.outbox.push((to, Msg::PeerReleased { id }));
            }
        }
    }

    /// Ends a session for good (`why`): drops it and tells the client id's home shard.
    pub(super) fn end_session(&mut self, io: &mut Io, sid: SessionId, why: EndReason) {
        if let Some(session) = self.take_session(sid, why) {
            self.cluster_session(&session.client_id, false);
            self.release_at_home(io, &session);
        }
    }

    /// Tells the home shard of `session`'s client id that this shard no longer holds it
    /// (under its epoch).
    pub(super) fn release_at_home(&mut self, io: &mut Io, session: &Session) {
        let home = self.peers.home_of(&session.client_id);
        let release = Msg::Release {
            client_id: (*session.client_id).into(),
            owner: self.peers.id,
            epoch: session.epoch,
        };
        self.send(io, home, release);
    }

    pub(super) fn on_disconnect(&mut self, io: &mut Io, key: ConnKey, d: Disconnect<'_>) {
        let sid = io.state(key).and_then(|c| c.session);
        if let Some(expiry) = d.properties.session_expiry_interval() {
            let was_zero = sid
                .and_then(|s| self.sessions.get(s))
                .is_some_and(|s| s.expiry_interval == 0);
            if was_zero && expiry != 0 {
                // MQTT-3.14.2-2: a session that was to end cannot be extended here.
                return self.protocol_error(
                    io,
                    key,
                    ReasonCode::PROTOCOL_ERROR,
                    "session expiry set on DISCONNECT after 0 on CONNECT",
                );
            }
            if let Some(sid) = sid
                && let Some(s) = self.sessions.get_mut(sid)
            {
                s.expiry_interval = expiry;
                if s.store_key != 0 && expiry != 0 {
                    // Its new expiry counts from this disconnect.
                    self.log_reopened(sid);
                }
            }
        }
        if let Some(c) = io.state(key) {
            // MQTT-3.14.4-3: a DISCONNECT discards the will, unless (MQTT 5) its reason
            // is 0x04 "disconnect with will message".
            let graceful = d.reason != ReasonCode::DISCONNECT_WITH_WILL_MESSAGE;
            c.set_flag(client_flag::GRACEFUL, graceful);
        }
        io.close(key, CloseReason::Normal);
    }

    /// A connection ended: its session goes offline or ends, and its will is published
    /// (now, or after the will delay) unless the client said goodbye (MQTT-3.1.2-8).
    pub(super) fn connection_closed(
        &mut self,
        io: &mut Io,
        key: ConnKey,
        client: Client,
        reason: CloseReason,
    ) {
        let Some(sid) = client.session else { return };
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if s.conn != Some(key) {
            return;
        }
        s.conn = None;
        if client.phase == Phase::Connected
            && let Some(s) = self.sessions.get(sid)
        {
            self.client_disconnected(&s.client_id, disconnect_reason(reason, &client));
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let no_longer_waiting = s.queue_len();
        let will = s
            .extra_opt_mut()
            .and_then(|e| e.will.take())
            .filter(|_| !client.graceful());
        let persistent = s.is_persistent();
        let store_key = s.store_key;
        self.pressure.waiting = self.pressure.waiting.saturating_sub(no_longer_waiting);
        let mut will_kept = false;
        if let Some(w) = will {
            if w.delay_s > 0 && persistent {
                let at = io.now_ms() + w.delay_s as u64 * 1000;
                if let Some(s) = self.sessions.get_mut(sid) {
                    let e = s.extra_mut();
                    e.will = Some(w);
                    e.will_at_ms = Some(at);
                    will_kept = true;
                }
            } else {
                self.publish_will(io, w);
            }
        }
        if persistent {
            if !will_kept && store_key != 0 {
                self.log_will_gone(store_key);
            }
            self.went_offline(io, sid);
        } else {
            self.end_session(io, sid, EndReason::Discarded);
        }
    }

    pub(super) fn went_offline(&mut self, io: &mut Io, sid: SessionId) {
        let now = io.now_ms();
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        match s.expiry_interval {
            NEVER_EXPIRES => {
                if let Some(e) = s.extra_opt_mut() {
                    e.expires_at_ms = None;
                }
            }
            secs => s.extra_mut().expires_at_ms = Some(now + secs as u64 * 1000),
        }
        self.sessions.went_offline(sid);
        self.log_offline(sid);
    }

    /// Each tick: publish delayed wills that are due, end sessions that expired (their
    /// pending will is published then, MQTT 5 §3.1.3.2.2). Only the sessions with a
    /// deadline due are looked at.
    pub(super) fn expire_sessions(&mut self, io: &mut Io) {
        let now = io.now_ms();
        while let Some(sid) = self.sessions.next_due(now) {
            let Some(s) = self.sessions.get_mut(sid) else {
                continue;
            };
            let e = s.extra();
            let expired = e.and_then(|e| e.expires_at_ms).is_some_and(|at| at <= now);
            let will_due = e.and_then(|e| e.will_at_ms).is_some_and(|at| at <= now);
            let store_key = s.store_key;
            if (expired || will_due)
                && let Some(w) = s.take_will()
            {
                if store_key != 0 && !expired {
                    self.log_will_gone(store_key);
                    self.log_offline(sid);
                }
                self.publish_will(io, w);
            }
            if expired {
                self.stats.sessions_expired.add(1);
                if let Some(s) = self.sessions.get(sid) {
                    self.session_expired(&s.client_id);
                }
                self.end_session(io, sid, EndReason::Expired);
            }
        }
    }
}
