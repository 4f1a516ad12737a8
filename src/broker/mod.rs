//! The MQTT broker of one shard: the [`Service`] the runtime serves.
//!
//! Bytes from a connection become packets here ([`Broker::on_data`], with a carry buffer
//! for packets split across receives), and each packet goes to its handler:
//!
//! - [`connect`]: CONNECT/CONNACK, the client-id registry that finds a client's session
//!   on any shard, takeover, wills, DISCONNECT, session expiry;
//! - [`subscribe`]: SUBSCRIBE/UNSUBSCRIBE, the interest other shards are told about,
//!   retained messages sent on subscribe;
//! - [`fanout`]: PUBLISH in (topic aliases, QoS 1/2 acknowledgements), routing to local
//!   sessions and to the shards that have matching subscribers, PUBLISH out and its
//!   acknowledgements, in-flight windows and offline queues;
//! - [`sys`]: the `$SYS/broker/...` topics.
//!
//! Cross-shard traffic is [`Msg`] over the mesh; nothing here takes a lock.

mod connect;
mod fanout;
mod ids;
mod msg;
pub mod session;
mod stats;
mod subscribe;
mod sys;
pub mod topics;

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use ringmq_proto::Decoded;
use ringmq_proto::mqtt::{
    self, Disconnect, Framer, Packet, Properties, Property, ReasonCode, Version,
};
use slab::Slab;

use crate::broker::session::{Session, SessionId};
use crate::broker::topics::Trie;
use crate::config::defaults::{self, MAX_SHARDS};
use ringmq_shard::conn::{CloseReason, ConnKey};
use ringmq_shard::hist::Recorder;
use ringmq_shard::io::ServiceLoad;
use ringmq_shard::service::{Data, Service};

use ids::{ClientIndex, Registry};
pub use msg::Msg;
pub use stats::{BrokerStats, ShardFigures};

/// What the runtime hands the broker: connections carrying a [`Client`] each, and the
/// mesh carrying [`Msg`]s.
pub type Io = ringmq_shard::io::Io<Client, Msg>;

/// The broker's latency histograms (`/debug/histograms`), a set per shard:
/// `publish_to_delivery`, from the loop turn in which a PUBLISH arrived to the submission
/// of that turn's sends (its deliveries on this shard).
pub const HISTOGRAMS: &[&str] = &["publish_to_delivery"];
const PUBLISH_TO_DELIVERY: usize = 0;
use subscribe::{InterestNode, PendingSuback, RetainedNode, SubsNode};

/// Deliveries a paused connection's held packets may make when taken up, before it may
/// be paused again: about one recv buffer of small one-to-one PUBLISHes, or a single
/// fan-out one (so a resume adds little to a shard already near its pressure bound).
const HELD_DELIVERY_BUDGET: u64 = 256;

/// Broker-level settings shared by all shards.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Offline queue bound per persistent session (messages); the oldest is dropped
    /// (and counted) past it.
    pub max_queued_messages: usize,
    /// QoS 1/2 messages in flight to one client at a time; also the Receive Maximum
    /// told MQTT 5 clients: QoS 2 messages from one client that may await PUBREL at a
    /// time, one more being answered with DISCONNECT 0x93 (MQTT-3.3.4-8). QoS 1
    /// messages are acknowledged at once and never wait.
    pub max_inflight: u16,
    /// How often `$SYS/broker/...` topics are published, in seconds (0: never).
    pub sys_interval_s: u64,
    /// Topic levels of a filter that other shards are told about: a publish goes to every
    /// shard with a filter matching on these levels (a superset of the shards that have
    /// matching subscribers). Fewer levels keep each shard's copy of the others' interest
    /// small; more levels route more precisely. The default, 1, advertises `idle/#` once
    /// for a million clients subscribed to `idle/<their id>` (with 2, every shard would
    /// hold a node per other shard's client topic); a shard that gets a message it has no
    /// subscriber for just finds no match.
    pub route_depth: usize,
    /// Topic aliases a client may use towards the broker (MQTT 5 Topic Alias Maximum).
    pub topic_alias_max: u16,
    /// Subscriptions one session may hold.
    pub max_subscriptions: usize,
    /// Longest keep alive an MQTT 5 client may use, in seconds (0: whatever the client
    /// asks). A client asking for more, or for none (0), is told this value as Server
    /// Keep Alive (MQTT 5 §3.2.2.3.14) and held to it: a connection that never has to
    /// speak cannot be told from a dead one. MQTT 3.1.1 has no way to say this; its
    /// clients keep their own value.
    pub max_keep_alive_s: u16,
    /// Subscription authorization: a SUBSCRIBE filter that lies within one of these
    /// filters (every topic it can match is matched by the denied filter) is refused
    /// with SUBACK 0x80. It decides what may be subscribed, not what is delivered: `#`
    /// stays allowed even if `a/b` is denied.
    pub deny_subscribe: Vec<Box<str>>,
    /// Largest MQTT packet accepted, in bytes (fixed header included).
    pub max_packet_size: u32,
    /// Time allowed for CONNECT, from the connection's opening (after the upgrade, for
    /// WebSocket).
    pub connect_timeout_ms: u64,
    /// Outbound bytes queued on one connection above which QoS 0 messages to it are
    /// dropped (and counted).
    pub out_soft_limit: usize,
    /// Messages queued locally for a peer shard whose ring is full, above which QoS 0
    /// publishes to that peer are dropped (and counted).
    pub mesh_overflow_limit: usize,
    /// QoS 1/2 deliveries kept on a whole shard for connected clients whose in-flight
    /// window is full, above which the shard is under pressure (its publishers are
    /// paused), until they are at most half of it.
    pub max_deliveries_waiting: usize,
    /// Bytes a paused publisher may send that are held for it (its acknowledgements are
    /// taken up at once); past this, reading from it stops until the pause ends.
    pub pause_hold_bytes: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_queued_messages: defaults::MAX_QUEUED_MESSAGES,
            max_inflight: defaults::MAX_INFLIGHT,
            sys_interval_s: defaults::SYS_INTERVAL_S,
            route_depth: defaults::ROUTE_DEPTH,
            topic_alias_max: defaults::TOPIC_ALIAS_MAX,
            max_subscriptions: defaults::MAX_SUBSCRIPTIONS,
            max_keep_alive_s: defaults::MAX_KEEP_ALIVE_S,
            deny_subscribe: defaults::DENY_SUBSCRIBE.iter().map(|&f| f.into()).collect(),
            max_packet_size: defaults::MAX_PACKET_SIZE,
            connect_timeout_ms: defaults::CONNECT_TIMEOUT_MS,
            out_soft_limit: defaults::OUT_SOFT_LIMIT,
            mesh_overflow_limit: defaults::MESH_OVERFLOW_LIMIT,
            max_deliveries_waiting: defaults::MAX_DELIVERIES_WAITING,
            pause_hold_bytes: defaults::PAUSE_HOLD_BYTES,
        }
    }
}

/// What every shard's broker can read: settings, every shard's counters, and the clock
/// that orders retained-message updates across shards.
pub struct Shared {
    pub config: BrokerConfig,
    /// Each shard's counters and histograms, in shard order.
    pub shards: Vec<ShardFigures>,
    pub started: Instant,
    /// Each retained update takes the next value, so every shard keeps the same latest one.
    pub retain_clock: AtomicU64,
}

impl Shared {
    /// What `shards.len()` shards share; at most [`MAX_SHARDS`] (sets of shards are
    /// 128-bit masks).
    pub fn new(config: BrokerConfig, shards: Vec<ShardFigures>) -> Result<Shared, String> {
        if shards.is_empty() || shards.len() > MAX_SHARDS {
            return Err(format!(
                "a broker runs 1 to {MAX_SHARDS} shards, not {}",
                shards.len()
            ));
        }
        Ok(Shared {
            config,
            shards,
            started: Instant::now(),
            retain_clock: AtomicU64::new(1),
        })
    }
}

/// Where a connection is in the MQTT conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Waiting for CONNECT (the CONNECT timeout runs).
    #[default]
    AwaitConnect,
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
/// CONNECT whose session is being found) is in [`ClientExtra`], made on first use and
/// dropped when it is no longer used.
pub struct Client {
    session: Option<SessionId>,
    extra: Option<Box<ClientExtra>>,
    /// The largest packet the client accepts (MQTT 5 Maximum Packet Size); `u32::MAX`:
    /// no limit but the protocol's.
    max_packet: u32,
    /// The keep alive in seconds (0: none); the connection ends after one and a half
    /// keep alives of silence.
    keep_alive_s: u16,
    phase: Phase,
    /// [`client_flag`] bits.
    flags: u8,
}

/// Bits of `Client::flags`.
mod client_flag {
    /// The client speaks MQTT 5 (else 3.1.1, also before its CONNECT is read).
    pub const V5: u8 = 1 << 0;
    /// The connection ended with a DISCONNECT that does not ask for the will.
    pub const GRACEFUL: u8 = 1 << 1;
    /// MQTT 5 Request Problem Information: Reason Strings may be sent on packets other
    /// than CONNACK and DISCONNECT. Set from CONNECT.
    pub const PROBLEM_INFO: u8 = 1 << 2;
}

/// What a connection holds beyond an idle one's.
#[derive(Default)]
struct ClientExtra {
    /// The front of a packet split across receives (or, while the session is being
    /// claimed, every byte received after the CONNECT).
    carry: Vec<u8>,
    /// While paused: the whole packets held back, in order (acknowledgements aside).
    held: Vec<u8>,
    /// Topic aliases the client set (MQTT 5), index = alias − 1.
    aliases: Vec<Option<Box<str>>>,
    /// Topic aliases the broker sets towards the client (MQTT 5), when the client allows
    /// them.
    out_aliases: Option<OutAliases>,
    pending: Option<Box<connect::PendingConnect>>,
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
        }
    }
}

impl Client {
    fn version(&self) -> Version {
        if self.flags & client_flag::V5 != 0 {
            Version::V5
        } else {
            Version::V311
        }
    }

    fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    fn graceful(&self) -> bool {
        self.flags & client_flag::GRACEFUL != 0
    }

    fn problem_info(&self) -> bool {
        self.flags & client_flag::PROBLEM_INFO != 0
    }

    /// The keep alive deadline's distance, in ms (0: none).
    fn keep_alive_ms(&self) -> u64 {
        self.keep_alive_s as u64 * 1500
    }

    /// The largest packet the client accepts.
    fn max_packet(&self) -> u32 {
        self.max_packet
    }

    /// Whether a packet of `len` bytes may be sent to this client (MQTT-3.1.2-24).
    fn accepts(&self, len: usize) -> bool {
        len <= self.max_packet as usize
    }

    fn extra_mut(&mut self) -> &mut ClientExtra {
        self.extra.get_or_insert_default()
    }

    fn out_aliases(&mut self) -> Option<&mut OutAliases> {
        self.extra.as_mut()?.out_aliases.as_mut()
    }

    /// Drops the extra state once nothing is in it.
    fn tidy(&mut self) {
        if self.extra.as_ref().is_some_and(|e| e.is_unused()) {
            self.extra = None;
        }
    }

    fn take_carry(&mut self) -> Vec<u8> {
        self.take_buffer(|e| &mut e.carry)
    }

    /// Keeps `carry` (with its capacity, so packets split again need no allocation).
    fn put_carry(&mut self, carry: Vec<u8>) {
        self.put_buffer(|e| &mut e.carry, carry);
    }

    fn take_held(&mut self) -> Vec<u8> {
        self.take_buffer(|e| &mut e.held)
    }

    fn put_held(&mut self, held: Vec<u8>) {
        self.put_buffer(|e| &mut e.held, held);
    }

    fn take_buffer(&mut self, buffer: fn(&mut ClientExtra) -> &mut Vec<u8>) -> Vec<u8> {
        self.extra
            .as_mut()
            .map(|e| std::mem::take(buffer(e)))
            .unwrap_or_default()
    }

    /// Keeps `bytes` in one of the buffers of the extra state, or drops the extra state if
    /// nothing is left in it.
    fn put_buffer(&mut self, buffer: fn(&mut ClientExtra) -> &mut Vec<u8>, bytes: Vec<u8>) {
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
struct OutAliases {
    max: u16,
    by_topic: HashMap<Box<str>, u16>,
}

impl OutAliases {
    fn new(max: u16) -> OutAliases {
        OutAliases {
            max,
            by_topic: HashMap::new(),
        }
    }

    /// The alias for `topic`, and whether it is new (the PUBLISH must then carry the
    /// topic to set it); `None` once every alias is taken by another topic.
    fn lookup(&self, topic: &str) -> Option<(u16, bool)> {
        match self.by_topic.get(topic) {
            Some(&alias) => Some((alias, false)),
            None if self.by_topic.len() < self.max as usize => {
                Some((self.by_topic.len() as u16 + 1, true))
            }
            None => None,
        }
    }

    /// Records the alias a PUBLISH just sent set.
    fn set(&mut self, topic: &str, alias: u16) {
        self.by_topic.insert(topic.into(), alias);
    }
}

/// The MQTT broker of one shard.
pub struct Broker {
    shared: Arc<Shared>,
    /// This shard's counters.
    stats: Arc<BrokerStats>,
    /// This shard's histograms ([`HISTOGRAMS`]).
    hists: Recorder,
    /// PUBLISH packets handled this turn: they wait for the turn's sends.
    publishes_this_turn: u64,
    id: usize,
    shards: usize,
    /// Sessions, each with the generation of its slot (`Session::gen_`).
    sessions: Slab<Session>,
    session_gen: NonZeroU32,
    /// Client id → its session here.
    by_client: ClientIndex,
    /// Local subscriptions: filter → sessions.
    subs: Trie<SubsNode>,
    /// Other shards' subscriptions: filter prefix → shards.
    interest: Trie<InterestNode>,
    /// Interest this shard has told the others about, with local reference counts.
    advertised: HashMap<Box<str>, subscribe::Advert>,
    /// Plain interest without local subscribers, oldest first, withdrawn once it has
    /// lingered long enough: (prefix, idle since).
    lingering: VecDeque<(Box<str>, u64)>,
    /// The shard clock at the last event (ms).
    clock_ms: u64,
    /// Deliveries queued for connected clients whose in-flight window is full: the sum
    /// of `queue_len` over sessions with a connection. Told to the runtime as the
    /// service's load (`Broker::load`) before every back-pressure decision.
    waiting: usize,
    /// Taking up a paused connection's held packets (`on_resume`): they are handled
    /// until they have made `HELD_DELIVERY_BUDGET` deliveries, then the connection may
    /// be paused again. A fan-out PUBLISH spends the budget at once; many small
    /// one-to-one ones are taken up together.
    taking_up_held: bool,
    /// `deliveries_so_far` when the held packets began to be taken up.
    held_budget_from: u64,
    retained: Trie<RetainedNode>,
    /// Client ids whose home is this shard: which shard owns the session, and the claims
    /// in progress (no record for a settled id whose session is here: see `connect`).
    registry: Registry,
    /// The last claim epoch given out by this shard (as a home).
    claim_epoch: u64,
    /// Messages this shard sends itself (handled at the end of the turn, in order).
    local_inbox: VecDeque<Msg>,
    /// Messages for other shards produced where no `Io` is at hand (interest changes),
    /// sent at the end of the turn.
    outbox: Vec<(usize, Msg)>,
    /// Interest broadcasts sent, and how far each peer has applied them.
    interest_seq: u64,
    /// The sequence number of the last broadcast still waiting in `outbox` (0: none).
    outbox_seq: u64,
    interest_acked: Vec<u64>,
    pending_subacks: VecDeque<PendingSuback>,
    /// Round-robin positions of shared-subscription groups across shards.
    share_rr: HashMap<Arc<str>, u32>,
    /// Disconnected persistent sessions (checked each tick for expiry and delayed wills).
    offline: Vec<SessionId>,
    fan: fanout::Scratch,
    auto_id: u64,
    last_sys_ms: u64,
}

impl Broker {
    pub fn new(shard_id: usize, shared: Arc<Shared>) -> Broker {
        let shards = shared.shards.len().max(1);
        let figures = shared.shards[shard_id].clone();
        Broker {
            shared,
            stats: figures.broker,
            hists: Recorder::new(figures.broker_hists),
            publishes_this_turn: 0,
            id: shard_id,
            shards,
            sessions: Slab::new(),
            session_gen: NonZeroU32::MIN,
            by_client: ClientIndex::new(),
            subs: Trie::new(),
            interest: Trie::new(),
            advertised: HashMap::new(),
            lingering: VecDeque::new(),
            clock_ms: 0,
            taking_up_held: false,
            held_budget_from: 0,
            waiting: 0,
            retained: Trie::new(),
            registry: Registry::new(),
            claim_epoch: 0,
            local_inbox: VecDeque::new(),
            outbox: Vec::new(),
            interest_seq: 0,
            outbox_seq: 0,
            interest_acked: vec![0; shards],
            pending_subacks: VecDeque::new(),
            share_rr: HashMap::new(),
            offline: Vec::new(),
            fan: fanout::Scratch::default(),
            auto_id: 0,
            last_sys_ms: 0,
        }
    }

    fn config(&self) -> &BrokerConfig {
        &self.shared.config
    }

    fn session(&self, sid: SessionId) -> Option<&Session> {
        self.sessions
            .get(sid.index as usize)
            .filter(|s| s.gen_ == sid.gen_)
    }

    fn session_mut(&mut self, sid: SessionId) -> Option<&mut Session> {
        self.sessions
            .get_mut(sid.index as usize)
            .filter(|s| s.gen_ == sid.gen_)
    }

    /// Puts a session in the table and the client-id index.
    fn add_session(&mut self, mut session: Session) -> SessionId {
        let gen_ = self.session_gen;
        self.session_gen = gen_.checked_add(1).unwrap_or(NonZeroU32::MIN);
        session.gen_ = gen_;
        let index = self.sessions.insert(session) as u32;
        let sid = SessionId { index, gen_ };
        self.by_client.insert(&self.sessions, sid);
        sid
    }

    /// Sends `msg` to shard `to`; to itself, it is handled at the end of this turn.
    fn send(&mut self, io: &mut Io, to: usize, msg: Msg) {
        if to == self.id {
            self.local_inbox.push_back(msg);
        } else {
            io.send_to_shard(to, msg);
        }
    }

    /// Writes one packet to a connection. Returns false if it could not be queued.
    fn write_packet(
        io: &mut Io,
        stats: &BrokerStats,
        key: ConnKey,
        version: Version,
        pkt: &Packet<'_>,
    ) -> bool {
        let len = pkt.encoded_len(version);
        let ok = io.write_vec(key, len, |buf| {
            // Appends exactly `len` bytes: the length was computed for this packet.
            let _ = pkt.encode_to_vec(version, buf);
        });
        if ok {
            stats.packets_out.add(1);
        }
        ok
    }

    /// Ends a connection for a protocol violation: MQTT 5 clients get a DISCONNECT with
    /// the reason (and a reason string), 3.1.1 clients are just closed.
    fn protocol_error(&mut self, io: &mut Io, key: ConnKey, code: ReasonCode, why: &str) {
        self.disconnect(io, key, code, why, CloseReason::ProtocolError);
    }

    /// Sends a server DISCONNECT (MQTT 5 only) and closes.
    fn disconnect(
        &mut self,
        io: &mut Io,
        key: ConnKey,
        code: ReasonCode,
        why: &str,
        reason: CloseReason,
    ) {
        let (version, connected) = match io.state(key) {
            Some(c) => (c.version(), c.phase == Phase::Connected),
            None => return,
        };
        if version == Version::V5 && connected {
            let props = [Property::ReasonString(why)];
            let full = Packet::Disconnect(Disconnect {
                reason: code,
                properties: Properties::List(&props),
            });
            let bare = Packet::Disconnect(Disconnect {
                reason: code,
                properties: Properties::EMPTY,
            });
            Self::write_answer(io, &self.stats, key, version, &full, &bare);
        }
        io.close(key, reason);
    }

    /// Writes a negative answer: `full` (with a Reason String) if the client accepts a
    /// packet that large, else `bare` (MQTT-3.2.2-19, 3.4.2-2, 3.9.2-1, 3.14.2-3: a
    /// Reason String must not push a packet past the client's Maximum Packet Size; and
    /// MQTT-3.1.2-29: only CONNACK and DISCONNECT carry one if the client asked for no
    /// problem information).
    fn write_answer(
        io: &mut Io,
        stats: &BrokerStats,
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
        Self::write_packet(io, stats, key, version, if fits { full } else { bare })
    }

    /// Decodes and handles every whole packet `input` completes after the connection's
    /// carry buffer, keeping the front of a packet split across receives there.
    fn process_input(&mut self, io: &mut Io, key: ConnKey, input: &[u8]) {
        let max = self.config().max_packet_size;
        let Some(client) = io.state(key) else { return };
        let mut carry = client.take_carry();
        if client.phase == Phase::Claiming {
            // The session is being found on another shard: keep the packets for later.
            if carry.len() + input.len() > max as usize * 2 {
                self.protocol_error(
                    io,
                    key,
                    ReasonCode::QUOTA_EXCEEDED,
                    "too much data before CONNACK",
                );
                return;
            }
            carry.extend_from_slice(input);
            if let Some(client) = io.state(key) {
                client.put_carry(carry);
            }
            return;
        }
        self.take_up(io, key, Framer::new(carry, input, max));
    }

    /// Handles the packets `frames` cuts from the stream, as the connection's state
    /// allows each. Back-pressure: while the connection is paused, its acknowledgements
    /// and pings are taken up at once (so the deliveries it is waiting on keep flowing and
    /// its keep-alive holds) and its other packets wait in order in its held buffer until
    /// `on_resume`; past `pause_hold_bytes`, reading from it stops until the pause ends.
    /// Once it is claiming its session, the rest of the stream waits unread in its carry
    /// buffer.
    fn take_up(&mut self, io: &mut Io, key: ConnKey, mut frames: Framer<'_>) {
        let mut held: Option<Vec<u8>> = None;
        loop {
            let version = io.state(key).map_or(Version::V311, |c| c.version());
            let frame = match frames.next_frame(version) {
                Err(e) => return self.decode_error(io, key, frames.front(), e),
                Ok(Decoded::Partial { .. }) => break,
                Ok(Decoded::Complete(frame, _)) => frame,
            };
            if io.is_paused(key) && !frame.is_acknowledgement() {
                let held = held
                    .get_or_insert_with(|| io.state(key).map_or_else(Vec::new, |c| c.take_held()));
                held.extend_from_slice(frame.bytes());
                continue;
            }
            match frame.decode(version) {
                Err(e) => return self.decode_error(io, key, frame.bytes(), e),
                Ok(pkt) => self.handle_packet(io, key, pkt),
            }
            if !io.is_open(key) {
                return;
            }
            if io.state(key).is_some_and(|c| c.phase == Phase::Claiming) {
                break;
            }
        }
        let carry = frames.into_carry();
        if let Some(held) = held {
            // A held packet was received all the same: it counts for the keep-alive
            // (MQTT-3.1.2-24 speaks of receiving, not of handling).
            Self::keep_alive_from_now(io, key);
            let over = held.len() + carry.len() > self.config().pause_hold_bytes;
            if let Some(client) = io.state(key) {
                client.put_held(held);
            }
            if over && io.stop_reading(key) {
                self.stats.publishers_read_stopped.add(1);
            }
        }
        self.keep_carry(io, key, carry);
    }

    /// Deliveries made by this shard so far, to its clients or handed to other shards.
    fn deliveries_so_far(&self, io: &Io) -> u64 {
        self.stats.messages_out.get() + io.stats().mesh_sent.get()
    }

    /// The broker's load, for back-pressure: overloaded while more deliveries wait for
    /// connected clients' in-flight windows than `max_deliveries_waiting`, light again
    /// once they are at most half of it.
    fn load(&self) -> ServiceLoad {
        let high = self.config().max_deliveries_waiting;
        if self.waiting > high {
            ServiceLoad::Overloaded
        } else if self.waiting > high / 2 {
            ServiceLoad::Heavy
        } else {
            ServiceLoad::Light
        }
    }

    /// Back-pressure: pauses a connection that just published (or whose held packets
    /// were just taken up) if the shard is under pressure — except while its held
    /// packets are taken up within their budget.
    pub(super) fn pause_publisher_if_pressured(&self, io: &mut Io, key: ConnKey) {
        if self.taking_up_held
            && self.deliveries_so_far(io) - self.held_budget_from < HELD_DELIVERY_BUDGET
        {
            return;
        }
        io.set_service_load(self.load());
        if io.pause_if_pressured(key) {
            self.stats.publishers_paused.add(1);
        }
    }

    fn keep_carry(&mut self, io: &mut Io, key: ConnKey, mut carry: Vec<u8>) {
        if carry.is_empty() && carry.capacity() > 4096 {
            carry = Vec::new();
        }
        if let Some(client) = io.state(key) {
            client.put_carry(carry);
        }
    }

    /// A packet could not be decoded: answer as the spec says and close.
    fn decode_error(&mut self, io: &mut Io, key: ConnKey, bytes: &[u8], e: mqtt::DecodeError) {
        let Some(client) = io.state(key) else { return };
        if client.phase == Phase::AwaitConnect {
            // A bad CONNECT: answer with a CONNACK refusal in the version it asked for.
            let v5 = mqtt::peek_connect_version(bytes) == Some(Version::V5);
            if v5 {
                let why = e.to_string();
                connect::refuse(io, &self.stats, key, Version::V5, e.reason_code(), &why);
            } else if let Some(code) = e.connack_return_code() {
                connect::refuse_v3(io, &self.stats, key, code);
            }
            io.close(key, CloseReason::ProtocolError);
            return;
        }
        let code = e.reason_code();
        let why = e.to_string();
        self.protocol_error(io, key, code, &why);
    }

    /// A packet was received from a connected client: its keep-alive deadline starts
    /// over (none when it asked for no keep-alive).
    fn keep_alive_from_now(io: &mut Io, key: ConnKey) {
        let ka = io.state(key).map_or(0, |c| c.keep_alive_ms());
        if ka > 0 {
            let at = io.now_ms() + ka;
            io.set_deadline(key, at);
        }
    }

    fn handle_packet(&mut self, io: &mut Io, key: ConnKey, pkt: Packet<'_>) {
        self.stats.packets_in.add(1);
        let Some(client) = io.state(key) else { return };
        let phase = client.phase;
        if phase == Phase::Connected {
            Self::keep_alive_from_now(io, key);
        }
        match (phase, pkt) {
            (Phase::AwaitConnect, Packet::Connect(c)) => self.on_connect(io, key, c),
            (Phase::AwaitConnect, _) => {
                // MQTT-3.1.0-1: the first packet must be CONNECT.
                io.close(key, CloseReason::ProtocolError);
            }
            (Phase::Claiming, _) => {} // not reached: packets wait in the carry buffer
            (Phase::Connected, Packet::Connect(_)) => {
                self.protocol_error(io, key, ReasonCode::PROTOCOL_ERROR, "second CONNECT")
            }
            (Phase::Connected, Packet::Publish(p)) => self.on_publish(io, key, p),
            (Phase::Connected, Packet::PubAck(r)) => self.on_puback(io, key, r.pkid),
            (Phase::Connected, Packet::PubRec(r)) => self.on_pubrec(io, key, r.pkid, r.reason),
            (Phase::Connected, Packet::PubRel(r)) => self.on_pubrel(io, key, r.pkid),
            (Phase::Connected, Packet::PubComp(r)) => self.on_pubcomp(io, key, r.pkid),
            (Phase::Connected, Packet::Subscribe(s)) => self.on_subscribe(io, key, s),
            (Phase::Connected, Packet::Unsubscribe(u)) => self.on_unsubscribe(io, key, u),
            (Phase::Connected, Packet::PingReq) => {
                let v = io.state(key).map_or(Version::V311, |c| c.version());
                Self::write_packet(io, &self.stats, key, v, &Packet::PingResp);
            }
            (Phase::Connected, Packet::Disconnect(d)) => self.on_disconnect(io, key, d),
            (Phase::Connected, Packet::Auth(_)) => self.protocol_error(
                io,
                key,
                ReasonCode::PROTOCOL_ERROR,
                "AUTH without an authentication method",
            ),
            (Phase::Connected, _) => self.protocol_error(
                io,
                key,
                ReasonCode::PROTOCOL_ERROR,
                "a packet only a server sends",
            ),
        }
    }

    /// Handles the messages this shard sent itself, and sends the outbox.
    fn drain_local_inbox(&mut self, io: &mut Io) {
        loop {
            for (to, m) in self.outbox.drain(..) {
                io.send_to_shard(to, m);
            }
            self.outbox_seq = 0;
            let Some(m) = self.local_inbox.pop_front() else {
                break;
            };
            let id = self.id;
            self.handle_msg(io, id, m);
        }
    }

    fn handle_msg(&mut self, io: &mut Io, from: usize, msg: Msg) {
        match msg {
            Msg::Publish(m) => self.deliver_remote(io, from, &m),
            Msg::ShareDeliver { share, msg } => self.deliver_share(io, from, &share, &msg),
            Msg::Retain { msg, version } => self.store_retained(msg, version),
            Msg::Interest(i) => {
                let msg::Interest {
                    filter,
                    share,
                    add,
                    seq,
                } = *i;
                self.apply_interest(from, &filter, share, add);
                self.send(io, from, Msg::InterestAck { seq });
            }
            Msg::Barrier { seq } => self.send(io, from, Msg::InterestAck { seq }),
            Msg::InterestAck { seq } => {
                self.interest_acked[from] = self.interest_acked[from].max(seq);
                self.release_subacks(io);
            }
            Msg::Claim {
                client_id,
                from: claimer,
                conn,
                clean_start,
            } => self.on_claim(io, client_id, claimer, conn, clean_start),
            Msg::Granted {
                conn,
                client_id,
                epoch,
            } => {
                self.finish_connect(io, conn, Some(&client_id), None, None, epoch, false);
                self.claim_settled(io, client_id, epoch);
            }
            Msg::Takeover(t) => {
                let msg::Takeover {
                    client_id,
                    to,
                    conn,
                    clean_start,
                    epoch,
                } = *t;
                self.on_takeover(io, &client_id, to, conn, clean_start, epoch)
            }
            Msg::Settled { client_id, .. } => self.on_settled(io, &client_id),
            Msg::Handoff(h) => {
                let msg::Handoff {
                    conn,
                    client_id,
                    session,
                    stub,
                    epoch,
                } = *h;
                let stub = stub.map(|s| (from, s));
                self.finish_connect(io, conn, Some(&client_id), session, stub, epoch, true);
                self.claim_settled(io, client_id, epoch);
            }
            Msg::Release {
                client_id,
                owner,
                epoch,
            } => self.on_release(&client_id, owner, epoch),
            Msg::Moved {
                client_id,
                old,
                stub,
            } => self.on_moved(io, from, client_id, old, stub),
            Msg::Fence { stub } => self.on_fence(io, from, stub),
            Msg::FenceMark { client_id } => self.on_arrival_progress(Some(from), &client_id),
            Msg::StubGone { client_id } => self.on_arrival_progress(None, &client_id),
            Msg::Forward(f) => {
                let msg::Forward {
                    client_id,
                    msg,
                    qos,
                    retain,
                    sub_ids,
                } = *f;
                self.deliver_forwarded(io, from, &client_id, &msg, qos, retain, sub_ids)
            }
        }
    }
}

impl Service for Broker {
    type ConnState = Client;
    type Msg = Msg;

    fn on_open(&mut self, io: &mut Io, key: ConnKey) {
        self.clock_ms = io.now_ms();
        let at = io.now_ms() + self.config().connect_timeout_ms;
        io.set_deadline(key, at);
    }

    fn on_data(&mut self, io: &mut Io, key: ConnKey, data: Data<'_>) {
        self.clock_ms = io.now_ms();
        self.process_input(io, key, data.bytes);
    }

    fn on_close(&mut self, io: &mut Io, key: ConnKey, state: Client) {
        self.clock_ms = io.now_ms();
        self.connection_closed(io, key, state);
    }

    fn on_deadline(&mut self, io: &mut Io, key: ConnKey) {
        self.clock_ms = io.now_ms();
        let connected = io.state(key).is_some_and(|c| c.phase == Phase::Connected);
        if connected && io.reading_stopped(key) {
            // Back-pressure stopped reading it: whatever it sent waits in its socket, so
            // its keep-alive is not its fault. Looked at again once it is read.
            let ka = io.state(key).map_or(0, |c| c.keep_alive_ms());
            let at_ms = io.now_ms() + ka.max(1000);
            io.set_deadline(key, at_ms);
            return;
        }
        if connected {
            self.disconnect(
                io,
                key,
                ReasonCode::KEEP_ALIVE_TIMEOUT,
                "keep alive timeout",
                CloseReason::Timeout,
            );
        } else {
            io.close(key, CloseReason::Timeout);
        }
    }

    fn on_message(&mut self, io: &mut Io, from: usize, msg: Msg) {
        self.clock_ms = io.now_ms();
        self.handle_msg(io, from, msg);
    }

    fn on_resume(&mut self, io: &mut Io, key: ConnKey) {
        let max = self.config().max_packet_size;
        let Some((held, carry)) = io.state(key).map(|c| (c.take_held(), c.take_carry())) else {
            return;
        };
        if !held.is_empty() {
            self.taking_up_held = true;
            self.held_budget_from = self.deliveries_so_far(io);
            // The held packets are whole and come before the carried front of the packet
            // still arriving, which goes back once they are taken up.
            self.take_up(io, key, Framer::new(Vec::new(), &held, max));
            self.taking_up_held = false;
            // Still pressured: pause again before reading more from it.
            self.pause_publisher_if_pressured(io, key);
        }
        if let Some(client) = io.state(key) {
            client.put_carry(carry);
        }
    }

    fn on_turn_end(&mut self, io: &mut Io) {
        self.drain_local_inbox(io);
        io.set_service_load(self.load());
    }

    fn on_turn_flushed(&mut self, turn_us: u64) {
        let published = std::mem::take(&mut self.publishes_this_turn);
        self.hists.record_n(PUBLISH_TO_DELIVERY, turn_us, published);
        self.stats.deliveries_waiting.set(self.waiting as u64);
    }

    fn on_tick(&mut self, io: &mut Io) {
        #[cfg(debug_assertions)]
        {
            // The running count must match a recount (tests run debug builds).
            let recount: usize = self
                .sessions
                .iter()
                .filter(|(_, s)| s.conn.is_some())
                .map(|(_, s)| s.queue_len())
                .sum();
            assert_eq!(
                self.waiting, recount,
                "deliveries waiting for connected clients"
            );
        }
        self.clock_ms = io.now_ms();
        self.expire_sessions(io);
        self.registry.compact();
        self.withdraw_idle_interest();
        self.publish_sys(io);
        self.drain_local_inbox(io);
        self.hists.publish();
    }

    fn on_shutdown(&mut self, io: &mut Io) {
        for key in io.open_keys() {
            if let Some(c) = io.state(key) {
                // Wills are not published when the whole server stops.
                c.set_flag(client_flag::GRACEFUL, true);
            }
            self.disconnect(
                io,
                key,
                ReasonCode::SERVER_SHUTTING_DOWN,
                "server shutting down",
                CloseReason::GoingAway,
            );
        }
    }
}
