//! What a shard is told at start: its listeners and its limits. The binary fills this
//! from flags and the config file; every field has the default `cargo run` gets, and
//! these defaults are the only place the runtime's are written.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use crate::rate::{Rate, SharedGcra};
use crate::tls::TlsAcceptor;

/// What a listener's connections speak below the service. The transports stack: bytes
/// from the socket, then TLS when the listener has it (`Listen::tls`), then (for
/// WebSocket) the upgrade and frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain TCP: the service gets the byte stream as it arrives.
    Tcp,
    /// WebSocket (RFC 6455): an HTTP Upgrade, then frames.
    WebSocket(WsOptions),
}

/// How a WebSocket listener upgrades its connections and frames their data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsOptions {
    /// The HTTP path an upgrade must ask for.
    pub path: String,
    /// The subprotocol the server offers (`Sec-WebSocket-Protocol`), if any.
    pub subprotocol: Option<String>,
    /// Whether a client must offer `subprotocol` to be upgraded.
    pub require_subprotocol: bool,
    pub framing: WsFraming,
    /// The `Origin`s browsers may upgrade from (`scheme://host[:port]`, compared without
    /// regard to case); `None` lets any in. A request without an `Origin` (not from a
    /// browser) is let in either way: the check guards browsers' users against other
    /// sites' pages (cross-site WebSocket hijacking), which always carry one.
    pub allowed_origins: Option<Arc<[String]>>,
}

impl WsOptions {
    /// Whether an upgrade with this `Origin` header (if any) may go on.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match (&self.allowed_origins, origin) {
            (None, _) | (_, None) => true,
            (Some(allowed), Some(origin)) => {
                let origin = origin.trim().trim_end_matches('/');
                allowed
                    .iter()
                    .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
            }
        }
    }
}

/// What the service sees of a WebSocket connection's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsFraming {
    /// A byte stream carried in binary messages (as MQTT over WebSocket is): message
    /// boundaries mean nothing, every write goes out as one binary message, and a text
    /// message is a protocol error.
    ByteStream,
    /// Messages: the service gets each message's pieces with their text flag and end,
    /// and writes whole messages (`Io::write_message`).
    Messages,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub addr: SocketAddr,
    pub kind: ListenerKind,
    /// New connections a second this listener takes, on all shards together; past it the
    /// shards stop accepting from it until the rate allows again (the connections wait in
    /// the kernel's listen backlog). `None`: as fast as they come.
    pub connect_rate: Option<ConnectRate>,
    /// TLS below `kind` (MQTT over TLS, secure WebSocket): the server settings every
    /// shard's handshakes read, replaced whole on a reload.
    pub tls: Option<Arc<TlsAcceptor>>,
}

/// A listener's accept rate: the rate, and the bucket every shard takes from.
#[derive(Debug, Clone)]
pub struct ConnectRate {
    pub rate: Rate,
    pub bucket: Arc<SharedGcra>,
}

impl ConnectRate {
    pub fn new(rate: Rate) -> ConnectRate {
        ConnectRate {
            rate,
            bucket: Arc::new(SharedGcra::new()),
        }
    }
}

impl PartialEq for ConnectRate {
    fn eq(&self, other: &ConnectRate) -> bool {
        self.rate == other.rate
    }
}

impl Eq for ConnectRate {}

/// Limits and sizes of one shard. All shards of a process share one `ShardConfig`.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    pub listeners: Vec<Listen>,
    /// Largest WebSocket message (`WsFraming::Messages`) or frame payload accepted, in
    /// bytes.
    pub max_ws_message: u64,
    /// Largest HTTP upgrade request, in bytes.
    pub max_handshake_bytes: usize,
    /// Time allowed for the TLS handshake and the WebSocket upgrade request, together,
    /// from accept.
    pub handshake_timeout_ms: u64,
    /// Time a closing connection may take to flush and say goodbye before it is cut.
    pub close_timeout_ms: u64,
    /// Outbound bytes queued on one connection above which it is disconnected as a
    /// slow consumer (and counted).
    pub out_hard_limit: usize,
    /// Connections this process serves at most; past it a connection is still accepted,
    /// marked over the limit (`Io::is_over_limit`) so that the service can answer with a
    /// refusal its protocol understands, and counted.
    pub max_connections: usize,
    /// Process-wide count of open connections, shared by all shards.
    pub open_connections: Arc<AtomicUsize>,
    /// Fixed-file table slots per lane (bounded by RLIMIT_NOFILE on this kernel).
    pub files_per_shard: u32,
    /// Lanes a shard may open at most: io_uring rings driven by the shard's one thread,
    /// each with its own fixed-file table of `files_per_shard` slots. A shard opens one
    /// more when those it has are near full, and stops accepting when all
    /// `max_lanes` are.
    pub max_lanes: usize,
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
    /// service pauses reading from the connections that feed it (and the shard stops
    /// taking messages from other shards) until the queue drains below `pressure_low`, or
    /// for at most `pause_max_ms`. Back-pressure instead of loss when the shard cannot send
    /// as fast as messages come in.
    pub pressure_high: usize,
    pub pressure_low: usize,
    pub pause_max_ms: u64,
    /// Capacity of each cross-shard SPSC ring.
    pub mesh_capacity: usize,
    /// Learn each connection's peer address before it is opened (one `getsockopt` on
    /// the ring per accept, `Io::peer_ip`), for services that limit or ban by address.
    /// Off, a connection costs nothing for it.
    pub peer_addresses: bool,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            listeners: Vec::new(),
            max_ws_message: 16 * 1024 * 1024,
            max_handshake_bytes: 8 * 1024,
            handshake_timeout_ms: 10_000,
            close_timeout_ms: 2_000,
            out_hard_limit: 4 * 1024 * 1024,
            max_connections: usize::MAX,
            open_connections: Arc::new(AtomicUsize::new(0)),
            files_per_shard: 16_384,
            max_lanes: 64,
            backlog: 1024,
            ring_entries: 4096,
            recv_buffers: 4096,
            recv_buffers_initial: 64,
            recv_buffer_size: 4096,
            pressure_high: 16 * 1024 * 1024,
            pressure_low: 8 * 1024 * 1024,
            pause_max_ms: 250,
            mesh_capacity: 4096,
            peer_addresses: false,
        }
    }
}
