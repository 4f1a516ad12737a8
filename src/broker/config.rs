//! What the broker of every shard is told at start ([`BrokerConfig`]) and what it can
//! read of the others ([`Shared`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Instant;

use ringmq_shard::rate::Rate;

use super::ShardFigures;
use crate::auth::{AuthStats, Authenticator, CurrentAuth};
use crate::config::defaults::{self, MAX_SHARDS};
use crate::control::webhook::WebhookSender;
use crate::limits::{Flapping, FlappingConfig, Limits};

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
    /// Subscriptions one session may hold; one more is refused (SUBACK 0x97 / 0x80).
    pub max_subscriptions: usize,
    /// Subscription memory one session may hold, as `routing::subscription_cost` counts
    /// it; a subscription past it is refused (SUBACK 0x97 / 0x80).
    pub max_subscription_bytes: usize,
    /// Levels a topic name or filter may have. A filter with more is refused (SUBACK 0x8F
    /// / 0x80); a PUBLISH with more is answered PUBACK/PUBREC 0x90 (MQTT 5, QoS 1 and 2),
    /// DISCONNECT 0x90 (MQTT 5, QoS 0), or closed (3.1.1); a will with more refuses the
    /// CONNECT (CONNACK 0x90, or a close for 3.1.1).
    pub max_topic_levels: usize,
    /// Sessions the whole broker holds at most (connected or not); a CONNECT that needs
    /// a new one past it is refused (CONNACK 0x03 / 0x97). `None`: no bound.
    pub max_sessions: Option<usize>,
    /// Seconds a 3.1.1 persistent session (Clean Session off) outlives its connection;
    /// `None`: for ever, as the 3.1.1 spec has it.
    pub v311_session_expiry_s: Option<u32>,
    /// Retained messages one shard holds in new subscriptions' snapshots waiting to be
    /// sent; past it further snapshots wait until others are sent.
    pub retained_snapshot_entries: usize,
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
    /// PUBLISH packets a client may send a second, with a burst; past it, reading from
    /// the client stops until its bucket allows again (it is not disconnected: TCP slows
    /// it down). `None`: no limit.
    pub client_msg_rate: Option<Rate>,
    /// The same for the bytes of its PUBLISH packets.
    pub client_byte_rate: Option<Rate>,
    /// Retained messages kept (every shard holds them all); a retained PUBLISH to a new
    /// topic past it is delivered but not retained (counted).
    pub max_retained: usize,
    /// CONNECTs of one shard waiting for the verification pool at once; past it, a
    /// CONNECT that needs the pool is refused as "server busy".
    pub max_parked_connects: usize,
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
            max_subscription_bytes: defaults::MAX_SUBSCRIPTION_BYTES,
            max_topic_levels: defaults::MAX_TOPIC_LEVELS,
            max_sessions: None,
            v311_session_expiry_s: None,
            retained_snapshot_entries: defaults::RETAINED_SNAPSHOT_ENTRIES,
            max_keep_alive_s: defaults::MAX_KEEP_ALIVE_S,
            deny_subscribe: defaults::DENY_SUBSCRIBE.iter().map(|&f| f.into()).collect(),
            max_packet_size: defaults::MAX_PACKET_SIZE,
            connect_timeout_ms: defaults::CONNECT_TIMEOUT_MS,
            out_soft_limit: defaults::OUT_SOFT_LIMIT,
            mesh_overflow_limit: defaults::MESH_OVERFLOW_LIMIT,
            max_deliveries_waiting: defaults::MAX_DELIVERIES_WAITING,
            pause_hold_bytes: defaults::PAUSE_HOLD_BYTES,
            client_msg_rate: None,
            client_byte_rate: None,
            max_retained: defaults::MAX_RETAINED,
            max_parked_connects: defaults::AUTH_QUEUE,
        }
    }
}

/// What every shard's broker can read: settings, every shard's counters, the clock
/// that orders retained-message updates across shards, the authentication generation in
/// force and the process-wide connection limits.
pub struct Shared {
    pub config: BrokerConfig,
    /// Each shard's counters and histograms, in shard order.
    pub shards: Vec<ShardFigures>,
    pub started: Instant,
    /// Each retained update takes the next value, so every shard keeps the same latest one.
    pub retain_clock: AtomicU64,
    /// Where the shards emit webhook events (`None`: no webhook is configured, and no
    /// event is built).
    pub webhooks: Option<WebhookSender>,
    /// Sessions held by all shards (those indexed by client id; a moved session's stub
    /// is not one), for `max_sessions`.
    pub sessions: Arc<AtomicUsize>,
    /// Who may connect and what they may do; a reload replaces it.
    pub auth: CurrentAuth,
    /// Connections per address, flapping bans.
    pub limits: Arc<Limits>,
    /// The link to the other nodes of the cluster (`--cluster`), `None` on a single node.
    pub cluster: Option<Arc<crate::cluster::ClusterLink>>,
}

/// What shards share beyond their settings and figures.
pub struct Guards {
    pub auth: CurrentAuth,
    pub limits: Arc<Limits>,
}

impl Default for Guards {
    /// Nothing configured: everyone admitted, nothing limited.
    fn default() -> Guards {
        let off = FlappingConfig {
            max_drops: 0,
            window_ms: 0,
            ban_ms: 0,
            by_address: false,
        };
        Guards {
            auth: CurrentAuth::new(Arc::new(Authenticator::open(
                Arc::new(AuthStats::default()),
            ))),
            limits: Arc::new(Limits::new(None, Flapping::new(off, 16))),
        }
    }
}

impl Shared {
    /// What `shards.len()` shards share; at most [`MAX_SHARDS`] (sets of shards are
    /// 128-bit masks).
    pub fn new(
        config: BrokerConfig,
        shards: Vec<ShardFigures>,
        guards: Guards,
        webhooks: Option<WebhookSender>,
    ) -> Result<Shared, String> {
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
            webhooks,
            auth: guards.auth,
            limits: guards.limits,
            sessions: Arc::new(AtomicUsize::new(0)),
            cluster: None,
        })
    }
}
