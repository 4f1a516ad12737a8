//! What a shard is told at start: its listeners and its limits. The binary fills this
//! from flags and the config file; every field has the default `cargo run` gets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// MQTT over plain TCP.
    Mqtt,
    /// MQTT over WebSocket: HTTP Upgrade on `ws_path`, subprotocol `mqtt`, binary frames.
    MqttWs,
    /// Plain WebSocket messages, each handed to the service whole (the echo example).
    Ws,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    pub kind: ListenerKind,
}

/// Limits and sizes of one shard. All shards of a process share one `ShardConfig`.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub listeners: Vec<Listen>,
    /// The HTTP path a WebSocket upgrade must ask for.
    pub ws_path: String,
    /// Whether a WebSocket client must offer the `mqtt` subprotocol (MQTT §6 says it MUST).
    pub ws_require_subprotocol: bool,
    /// Largest MQTT packet accepted, in bytes (fixed header included).
    pub max_packet_size: u32,
    /// Largest WebSocket message (echo) or frame payload accepted, in bytes.
    pub max_ws_message: u64,
    /// Largest HTTP upgrade request, in bytes.
    pub max_handshake_bytes: usize,
    /// Time allowed for the WebSocket upgrade request, from accept.
    pub handshake_timeout_ms: u64,
    /// Time allowed for CONNECT, from accept (or from the upgrade for WebSocket).
    pub connect_timeout_ms: u64,
    /// Time a closing connection may take to flush and say goodbye before it is cut.
    pub close_timeout_ms: u64,
    /// Outbound bytes queued on one connection above which QoS 0 messages to it are
    /// dropped (and counted).
    pub out_soft_limit: usize,
    /// Outbound bytes queued on one connection above which it is disconnected as a
    /// slow consumer (and counted).
    pub out_hard_limit: usize,
    /// Connections this process serves at most; past it a client is answered with
    /// CONNACK "server unavailable" (3.1.1) / 0x97 quota exceeded (5.0) and closed.
    pub max_connections: usize,
    /// Process-wide count of open connections, shared by all shards.
    pub open_connections: Arc<AtomicUsize>,
    /// Fixed-file table slots per shard (bounded by RLIMIT_NOFILE on this kernel).
    pub files_per_shard: u32,
    /// Listen backlog per listener; also the accept margin kept free in the table.
    pub backlog: u32,
    /// Submission queue entries per ring.
    pub ring_entries: u32,
    /// Provided receive buffers per shard, at most (power of two), and their size. A shard
    /// starts with `recv_buffers_initial` and adds more when receives run out.
    pub recv_buffers: u16,
    pub recv_buffers_initial: u16,
    pub recv_buffer_size: u32,
    /// Outbound bytes queued on a whole shard above which it is "under pressure": the
    /// service pauses reading from publishers (and the shard stops taking messages from
    /// other shards) until the queue drains below `pressure_low`, or for at most
    /// `pause_max_ms`. Back-pressure instead of loss when the shard cannot send as fast
    /// as messages come in.
    pub pressure_high: usize,
    pub pressure_low: usize,
    /// Deliveries kept on a whole shard for connected clients whose in-flight window is
    /// full (QoS 1 and 2), above which the shard is under pressure too, until they are
    /// at most half of it.
    pub waiting_high: usize,
    pub pause_max_ms: u64,
    /// Bytes a paused publisher may send that are held for it (its acknowledgements are
    /// taken up at once); past this, reading from it stops until the pause ends.
    pub pause_hold_bytes: usize,
    /// Capacity of each cross-shard SPSC ring.
    pub mesh_capacity: usize,
    /// Messages queued locally for a peer whose ring is full, above which QoS 0
    /// publishes to that peer are dropped (and counted).
    pub mesh_overflow_limit: usize,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            listeners: Vec::new(),
            ws_path: "/mqtt".into(),
            ws_require_subprotocol: true,
            max_packet_size: 1024 * 1024,
            max_ws_message: 16 * 1024 * 1024,
            max_handshake_bytes: 8 * 1024,
            handshake_timeout_ms: 10_000,
            connect_timeout_ms: 10_000,
            close_timeout_ms: 2_000,
            out_soft_limit: 256 * 1024,
            out_hard_limit: 4 * 1024 * 1024,
            max_connections: usize::MAX,
            open_connections: Arc::new(AtomicUsize::new(0)),
            files_per_shard: 16_384,
            backlog: 1024,
            ring_entries: 4096,
            recv_buffers: 4096,
            recv_buffers_initial: 64,
            recv_buffer_size: 4096,
            pressure_high: 16 * 1024 * 1024,
            pressure_low: 8 * 1024 * 1024,
            waiting_high: 65_536,
            pause_max_ms: 250,
            pause_hold_bytes: 4 * 1024,
            mesh_capacity: 4096,
            mesh_overflow_limit: 65_536,
        }
    }
}
