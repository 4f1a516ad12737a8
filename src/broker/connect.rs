//! CONNECT to DISCONNECT: accepting a client, finding its session wherever it lives,
//! taking over an older connection, the will, and the end of a session.
//!
//! A client id belongs to one home shard (a hash of the id). The home shard keeps, for
//! its ids, which shard holds the session now, under a claim epoch. A CONNECT on shard A
//! asks the home (`Claim`); the home records A as the owner and either lets A go ahead
//! (`Granted`: no session elsewhere) or tells the previous owner P to close its
//! connection and hand the session to A (`Takeover` → `Handoff`). All of it is message
//! passing over the mesh; a single-shard broker runs the same steps through its local
//! inbox. A release names its epoch, so a session ending late cannot unregister a newer
//! claim of the same id.
//!
//! The home keeps no record for an id whose session it holds itself once the claim is
//! settled (every id on a single shard, 1/N of them on N shards): its own session index
//! says the same, the session's epoch included (`home_owner`). The session stays indexed
//! until it ends, which sends the release that would clear such a record anyway, or until
//! a later claim (which makes a record again) moves or replaces it.
//!
//! A session that moves from shard P to shard A leaves a *stub* on P: P's topic table
//! keeps the session's subscriptions, so a publisher whose shard has not yet learnt A's
//! interest still reaches P, and the stub forwards such deliveries to A (`Forward`).
//! Once A has advertised its interest it tells every shard (`Moved`); each answers P with
//! a `Fence` (what I send after this, I also send to A directly) and A with a
//! `FenceMark` (what I sent to you before my fence has arrived). The stub forwards only
//! what came from shards that have not fenced yet, and goes when all have. A message can
//! reach A both ways in between; A remembers what it delivered to the session meanwhile
//! (the same `Arc<Message>` travels both ways) and delivers it once.

use std::time::Instant;

use ringmq_proto::mqtt::{
    ConnAck, Connect, ConnectReturnCode, Disconnect, Packet, Properties, Property, ReasonCode,
    Version,
};

use super::Io;
use super::ids::IdKey;
use super::msg::{Handoff, Takeover};
use super::{Broker, BrokerStats, Client, Msg, OutAliases, Phase, client_flag};
use crate::broker::session::{Arrival, Message, MovingSession, Session, SessionId, WillMsg};
use ringmq_shard::conn::CloseReason;
use ringmq_shard::conn::ConnKey;

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
    /// The keep alive the broker imposes (MQTT 5 Server Keep Alive), if it does.
    server_keep_alive: Option<u16>,
}

/// Answers a CONNECT with a refusal: the MQTT 5 reason code with a reason string, or its
/// 3.1.1 return code.
pub(super) fn refuse(
    io: &mut Io,
    stats: &BrokerStats,
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
    Broker::write_answer(io, stats, key, version, &full, &bare);
}

pub(super) fn refuse_v3(io: &mut Io, stats: &BrokerStats, key: ConnKey, code: ConnectReturnCode) {
    let pkt = Packet::ConnAck(ConnAck {
        session_present: false,
        code: code.0,
        properties: Properties::EMPTY,
    });
    Broker::write_packet(io, stats, key, Version::V311, &pkt);
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
            refuse(
                io,
                &self.stats,
                key,
                version,
                ReasonCode::QUOTA_EXCEEDED,
                why,
            );
            io.close(key, CloseReason::Policy);
            return;
        }
        // Zero-length client ids: assigned with a clean session; 3.1.1 refuses them for a
        // persistent one (MQTT-3.1.3-8), MQTT 5 assigns one either way (MQTT-3.1.3-6).
        let (client_id, assigned_id): (Box<str>, bool) = if c.client_id.is_empty() {
            if version == Version::V311 && !c.clean_start {
                let why = "an empty client id needs a clean session";
                refuse(
                    io,
                    &self.stats,
                    key,
                    version,
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    why,
                );
                io.close(key, CloseReason::Policy);
                return;
            }
            self.auto_id += 1;
            (
                format!("ringmq-{}-{}-{:x}", self.id, self.auto_id, key.to_u64()).into(),
                true,
            )
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
            let expiry_s = super::fanout::forward_props(w.properties, &mut props);
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
        client.phase = Phase::Claiming;
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
        self.send_claim(io, client_id, key, c.clean_start);
    }

    fn send_claim(&mut self, io: &mut Io, client_id: Box<str>, conn: ConnKey, clean: bool) {
        let home = home_shard(&client_id, self.shards);
        let from = self.id;
        let claim = Msg::Claim {
            client_id,
            from,
            conn,
            clean_start: clean,
        };
        self.send(io, home, claim);
    }

    /// On the home shard: a claim for `client_id`. Claims of one id are handled one at
    /// a time, in the order they arrive: the next waits until the shard that made this
    /// one says it is settled, so a takeover never crosses an unfinished one.
    pub(super) fn on_claim(
        &mut self,
        io: &mut Io,
        client_id: Box<str>,
        claimer: usize,
        conn: ConnKey,
        clean_start: bool,
    ) {
        let key = self.registry.key(&client_id);
        if self.registry.get(key).is_some_and(|e| e.busy) {
            self.registry
                .push_waiting(key, (claimer, conn, clean_start));
            return;
        }
        self.start_claim(io, client_id, claimer, conn, clean_start);
    }

    /// On the home shard: record the new owner under a new epoch and start the takeover
    /// if another shard holds the session.
    fn start_claim(
        &mut self,
        io: &mut Io,
        client_id: Box<str>,
        claimer: usize,
        conn: ConnKey,
        clean_start: bool,
    ) {
        self.claim_epoch += 1;
        let epoch = self.claim_epoch;
        let key = self.registry.key(&client_id);
        let previous = self.home_owner(key, &client_id);
        let entry = self.registry.entry(key);
        entry.busy = true;
        entry.set_owner(claimer, epoch);
        match previous {
            Some((owner, _)) if owner != claimer => self.send(
                io,
                owner,
                Msg::Takeover(Box::new(Takeover {
                    client_id,
                    to: claimer,
                    conn,
                    clean_start,
                    epoch,
                })),
            ),
            _ => self.send(
                io,
                claimer,
                Msg::Granted {
                    conn,
                    client_id,
                    epoch,
                },
            ),
        }
    }

    /// On the home shard: the claim under `epoch` is settled; the next one may go.
    pub(super) fn on_settled(&mut self, io: &mut Io, client_id: &str) {
        let key = self.registry.key(client_id);
        let Some(entry) = self.registry.get_mut(key) else {
            return;
        };
        // One claim at a time: this is the one in progress (its owner may already have
        // been released, if its connection went away).
        entry.busy = false;
        let owner = entry.owner();
        match self.registry.pop_waiting(key) {
            Some((claimer, conn, clean_start)) => {
                self.start_claim(io, client_id.into(), claimer, conn, clean_start)
            }
            None if owner.is_none() => self.registry.remove(key),
            // This shard holds the session, under the same epoch: the record is not needed
            // (see `home_owner`).
            None if owner == self.local_owner(client_id) => self.registry.remove(key),
            None => {}
        }
    }

    /// On the home shard: which shard owns the session of `client_id`, registered under
    /// which epoch. A record says so; without one, the session of the id on this shard,
    /// under its own epoch, if there is one.
    fn home_owner(&self, key: IdKey, client_id: &str) -> Option<(usize, u64)> {
        match self.registry.get(key) {
            Some(entry) => entry.owner(),
            None => self.local_owner(client_id),
        }
    }

    /// This shard and the epoch of its session of `client_id`, if it has one.
    fn local_owner(&self, client_id: &str) -> Option<(usize, u64)> {
        let sid = self.by_client.get(&self.sessions, client_id)?;
        Some((self.id, self.session(sid)?.epoch))
    }

    /// On the home shard: forget the owner of `client_id` if it is still the one
    /// registered under `epoch`. (Without a record, this shard's session is the owner,
    /// and it leaves the index when it ends, before its release is sent.)
    pub(super) fn on_release(&mut self, client_id: &str, owner: usize, epoch: u64) {
        let key = self.registry.key(client_id);
        let Some(entry) = self.registry.get_mut(key) else {
            return;
        };
        if entry.owner() == Some((owner, epoch)) {
            entry.clear_owner();
            if !entry.busy && !self.registry.has_waiting(key) {
                self.registry.remove(key);
            }
        }
    }

    /// On the claiming shard: the claim under `epoch` is settled (its connection has its
    /// CONNACK, or is gone); the home may handle the next claim of the id.
    pub(super) fn claim_settled(&mut self, io: &mut Io, client_id: Box<str>, epoch: u64) {
        let home = home_shard(&client_id, self.shards);
        self.send(io, home, Msg::Settled { client_id, epoch });
    }

    /// On the shard holding a session that a connection on shard `to` takes over.
    pub(super) fn on_takeover(
        &mut self,
        io: &mut Io,
        client_id: &str,
        to: usize,
        conn: ConnKey,
        clean_start: bool,
        epoch: u64,
    ) {
        let (session, stub) = match self.by_client.get(&self.sessions, client_id) {
            None => (None, None),
            Some(sid) => {
                self.kick_connection(io, sid, clean_start);
                if clean_start {
                    // MQTT-3.1.2-4: a clean start discards the old session.
                    self.take_session(sid);
                    (None, None)
                } else {
                    match self.leave_stub(sid, to) {
                        Some(session) => (Some(Box::new(session)), Some(sid)),
                        None => (None, None),
                    }
                }
            }
        };
        let client_id = client_id.into();
        self.send(
            io,
            to,
            Msg::Handoff(Box::new(Handoff {
                conn,
                client_id,
                session,
                stub,
                epoch,
            })),
        );
    }

    /// Takes the state of session `sid` out to move it to shard `to`, and leaves in its
    /// place a stub with the same subscriptions that forwards to `to`.
    fn leave_stub(&mut self, sid: SessionId, to: usize) -> Option<MovingSession> {
        let s = self.session_mut(sid)?;
        let mut stub = Session::new(&s.client_id, s.version);
        // The stub keeps the slot, and its id.
        stub.gen_ = s.gen_;
        s.copy_subs_to(&mut stub);
        stub.extra_mut().moved_to = Some(to);
        let mut session = std::mem::replace(s, stub);
        // A session moving on again before its last move settled gives up deduplicating
        // that move's late arrivals.
        if let Some(e) = session.extra_opt_mut() {
            e.arrival = None;
        }
        // The other shard's topic table numbers its nodes differently: the
        // subscriptions travel spelled out.
        let refs = session.take_subs();
        let subs = self.spell_out_subs(sid, &refs);
        self.by_client.remove(&session.client_id, sid);
        self.offline.retain(|&o| o != sid);
        Some(MovingSession { session, subs })
    }

    /// Closes the connection serving a session because another connection took the
    /// session over (MQTT-3.1.4-3); MQTT 5 clients hear 0x8E first. The will of that
    /// connection is published unless the session goes on and the will is delayed (the
    /// new connection arrived within the delay, MQTT-3.1.3-9); a delayed will still
    /// waiting from an earlier connection is published if the session ends now (MQTT 5
    /// §3.1.3.2.2: at the end of the delay or of the session, whichever comes first).
    fn kick_connection(&mut self, io: &mut Io, sid: SessionId, session_ends: bool) {
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let old = s.conn.take();
        let no_longer_waiting = if old.is_some() { s.queue_len() } else { 0 };
        let will = s.take_will();
        self.waiting = self.waiting.saturating_sub(no_longer_waiting);
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

    /// Removes a session from this shard (its subscriptions leave the topic table) and
    /// returns it. The registry is not told.
    pub(super) fn take_session(&mut self, sid: SessionId) -> Option<Session> {
        self.session(sid)?;
        let client_id = &self.sessions[sid.index as usize].client_id;
        self.by_client.remove(client_id, sid);
        let mut session = self.sessions.remove(sid.index as usize);
        if session.conn.is_some() {
            self.waiting = self.waiting.saturating_sub(session.queue_len());
        }
        for sub in session.take_subs() {
            self.remove_subscription(sid, sub.node, sub.share.as_deref());
        }
        self.offline.retain(|&o| o != sid);
        Some(session)
    }

    /// Ends a session for good: drops it and tells the client id's home shard.
    pub(super) fn end_session(&mut self, io: &mut Io, sid: SessionId) {
        if let Some(session) = self.take_session(sid) {
            let home = home_shard(&session.client_id, self.shards);
            let owner = self.id;
            self.send(
                io,
                home,
                Msg::Release {
                    client_id: (*session.client_id).into(),
                    owner,
                    epoch: session.epoch,
                },
            );
        }
    }

    /// On the claiming shard: the session is found (`handed` over from shard `from`, or
    /// here, or there is none); answer CONNACK.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_connect(
        &mut self,
        io: &mut Io,
        conn: ConnKey,
        client_id: Option<&str>,
        handed: Option<Box<MovingSession>>,
        stub: Option<(usize, SessionId)>,
        epoch: u64,
        from_takeover: bool,
    ) {
        let pending = io
            .state(conn)
            .filter(|c| c.phase == Phase::Claiming)
            .and_then(|c| c.extra.as_mut()?.pending.take());
        let Some(mut p) = pending else {
            // The connection went away while its session was being found.
            self.orphaned_claim(io, client_id, handed, stub, epoch);
            return;
        };
        // A session on this shard: an older connection here, or an offline session.
        let mut existing = if from_takeover {
            None
        } else {
            self.by_client.get(&self.sessions, &p.client_id)
        };
        if let Some(sid) = existing {
            self.kick_connection(io, sid, p.clean_start);
            if p.clean_start {
                self.take_session(sid);
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
                    self.take_session(sid);
                }
                let sid = self.add_session(Session::new(&p.client_id, version));
                (sid, false)
            }
        };
        let window = p.receive_maximum.min(self.config().max_inflight).max(1);
        // Its queue (offline until now) waits for this connection's window from here.
        let Some(offline) = self
            .session(sid)
            .map(|s| s.conn.is_none().then(|| s.queue_len()))
        else {
            return;
        };
        self.waiting += offline.unwrap_or(0);
        let Some(s) = self.session_mut(sid) else {
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
        self.offline.retain(|&o| o != sid);

        if version == Version::V5 {
            self.write_connack_v5(io, conn, &p, session_present);
        } else {
            let pkt = Packet::ConnAck(ConnAck {
                session_present,
                code: 0,
                properties: Properties::EMPTY,
            });
            Broker::write_packet(io, &self.stats, conn, version, &pkt);
        }
        let Some(client) = io.state(conn) else {
            return;
        };
        client.phase = Phase::Connected;
        client.session = Some(sid);
        let ka = client.keep_alive_ms();
        if ka > 0 {
            let at = io.now_ms() + ka;
            io.set_deadline(conn, at);
        } else {
            io.clear_deadline(conn);
        }
        // What was left in flight goes again (MQTT-4.4.0-1), then what waited in the
        // queue.
        self.resend_inflight(io, sid);
        self.drain_queue(io, sid);
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

    /// The MQTT 5 CONNACK: what the client must know of this broker's limits.
    fn write_connack_v5(
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
        Broker::write_packet(io, &self.stats, conn, Version::V5, &pkt);
    }

    /// A claim finished after its connection closed: keep a handed-over persistent
    /// session (offline), or let the home shard forget the id.
    fn orphaned_claim(
        &mut self,
        io: &mut Io,
        client_id: Option<&str>,
        handed: Option<Box<MovingSession>>,
        stub: Option<(usize, SessionId)>,
        epoch: u64,
    ) {
        match handed {
            Some(s) => {
                let persistent = s.session.is_persistent();
                let sid = self.install_session(io, *s, stub);
                if let Some(s) = self.session_mut(sid) {
                    s.epoch = epoch;
                }
                if persistent {
                    self.went_offline(io, sid);
                } else {
                    self.end_session(io, sid);
                }
            }
            None => {
                let Some(client_id) = client_id else { return };
                match self.by_client.get(&self.sessions, client_id) {
                    // An offline session here is the one the home now points at.
                    Some(sid) => {
                        if let Some(s) = self.session_mut(sid) {
                            s.epoch = epoch;
                        }
                    }
                    None => {
                        let home = home_shard(client_id, self.shards);
                        let owner = self.id;
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

    /// Adds a session handed over from another shard, subscriptions included. If that
    /// shard left a stub, tell every shard to fence it (after the interest the
    /// subscriptions raised, which goes first through the same outbox).
    fn install_session(
        &mut self,
        io: &mut Io,
        moving: MovingSession,
        stub: Option<(usize, SessionId)>,
    ) -> SessionId {
        let MovingSession {
            session: mut s,
            subs,
        } = moving;
        s.conn = None;
        s.take_subs();
        if let Some(e) = s.extra_opt_mut() {
            e.moved_to = None;
            e.fenced = 0;
        }
        let client_id: Box<str> = (*s.client_id).into();
        if stub.is_some() {
            s.extra_mut().arrival = Some(Box::new(Arrival {
                marked: 1u128 << self.id,
                stub_gone: false,
                seen: Default::default(),
            }));
        }
        let sid = self.add_session(s);
        for sub in subs {
            let Some(r) = self.add_subscription(sid, &sub.filter, sub.opts, sub.sub_id) else {
                continue;
            };
            if let Some(s) = self.session_mut(sid) {
                s.add_sub(r);
            }
        }
        if let Some((old, stub)) = stub {
            // This shard's own fence goes at once: a message it routes to the old shard
            // after this point is delivered here directly and must not come back.
            io.send_to_shard(old, Msg::Fence { stub });
            for to in (0..self.shards).filter(|&to| to != self.id) {
                let moved = Msg::Moved {
                    client_id: client_id.clone(),
                    old,
                    stub,
                };
                self.outbox.push((to, moved));
            }
        }
        sid
    }

    /// On every shard but the session's new holder: the holder routes from now on.
    pub(super) fn on_moved(
        &mut self,
        io: &mut Io,
        holder: usize,
        client_id: Box<str>,
        old: usize,
        stub: SessionId,
    ) {
        self.send(io, old, Msg::Fence { stub });
        self.send(io, holder, Msg::FenceMark { client_id });
    }

    /// On the old holder: shard `from` fenced the stub; with every shard fenced, the stub
    /// goes and the new holder hears that nothing more will be forwarded.
    pub(super) fn on_fence(&mut self, io: &mut Io, from: usize, stub: SessionId) {
        let all = self.all_shards();
        let Some(s) = self.session_mut(stub) else {
            return;
        };
        let Some(to) = s.moved_to() else { return };
        let e = s.extra_mut();
        e.fenced |= 1u128 << from;
        if e.fenced & all == all {
            let client_id = (*s.client_id).into();
            self.take_session(stub);
            self.send(io, to, Msg::StubGone { client_id });
        }
    }

    /// On the new holder: `FenceMark` from `from` (`None`: `StubGone`). Once every shard
    /// has marked and the stub is gone, no copy of anything can still arrive twice.
    pub(super) fn on_arrival_progress(&mut self, from: Option<usize>, client_id: &str) {
        let all = self.all_shards();
        let Some(sid) = self.by_client.get(&self.sessions, client_id) else {
            return;
        };
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        let Some(e) = s.extra_opt_mut() else { return };
        let Some(a) = e.arrival.as_mut() else { return };
        match from {
            Some(shard) => a.marked |= 1u128 << shard,
            None => a.stub_gone = true,
        }
        if a.stub_gone && a.marked & all == all {
            e.arrival = None;
        }
    }

    /// Every shard's bit.
    fn all_shards(&self) -> u128 {
        u128::MAX >> (128 - self.shards.min(128))
    }

    pub(super) fn on_disconnect(&mut self, io: &mut Io, key: ConnKey, d: Disconnect<'_>) {
        let sid = io.state(key).and_then(|c| c.session);
        if let Some(expiry) = d.properties.session_expiry_interval() {
            let was_zero = sid
                .and_then(|s| self.session(s))
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
            if let Some(s) = sid.and_then(|s| self.session_mut(s)) {
                s.expiry_interval = expiry;
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
    pub(super) fn connection_closed(&mut self, io: &mut Io, key: ConnKey, client: Client) {
        let Some(sid) = client.session else { return };
        let Some(s) = self.session_mut(sid) else {
            return;
        };
        if s.conn != Some(key) {
            return;
        }
        s.conn = None;
        let no_longer_waiting = s.queue_len();
        let will = s
            .extra_opt_mut()
            .and_then(|e| e.will.take())
            .filter(|_| !client.graceful());
        let persistent = s.is_persistent();
        self.waiting = self.waiting.saturating_sub(no_longer_waiting);
        if let Some(w) = will {
            if w.delay_s > 0 && persistent {
                let at = io.now_ms() + w.delay_s as u64 * 1000;
                if let Some(s) = self.session_mut(sid) {
                    let e = s.extra_mut();
                    e.will = Some(w);
                    e.will_at_ms = Some(at);
                }
            } else {
                self.publish_will(io, w);
            }
        }
        if persistent {
            self.went_offline(io, sid);
        } else {
            self.end_session(io, sid);
        }
    }

    fn went_offline(&mut self, io: &mut Io, sid: SessionId) {
        let now = io.now_ms();
        let Some(s) = self.session_mut(sid) else {
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
        self.offline.push(sid);
    }

    /// Each tick: publish delayed wills that are due, end sessions that expired (their
    /// pending will is published then, MQTT 5 §3.1.3.2.2).
    pub(super) fn expire_sessions(&mut self, io: &mut Io) {
        let now = io.now_ms();
        let offline = std::mem::take(&mut self.offline);
        let mut keep = Vec::with_capacity(offline.len());
        for sid in offline {
            let Some(s) = self.session_mut(sid) else {
                continue;
            };
            if s.conn.is_some() {
                continue;
            }
            let e = s.extra();
            let expired = e.and_then(|e| e.expires_at_ms).is_some_and(|at| at <= now);
            let will_due = e.and_then(|e| e.will_at_ms).is_some_and(|at| at <= now);
            if (expired || will_due)
                && let Some(w) = s.take_will()
            {
                self.publish_will(io, w);
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
