//! Every default and bound of the broker and of the process, written once: the flags'
//! help, the settings and `BrokerConfig::default` read them here. The runtime's own
//! (ring and buffer sizes, the mesh, back-pressure thresholds) are
//! `ringmq_shard::config::ShardConfig::default()`'s, and the settings read those there.
//! A leaf: it imports nothing of its siblings.

use ringmq_proto::mqtt::MAX_VARINT;

/// Where MQTT over TCP listens.
pub const MQTT: &str = "127.0.0.1:1883";
/// Where MQTT over WebSocket listens, and the path of its upgrade.
pub const WS: &str = "127.0.0.1:8083";
pub const WS_PATH: &str = "/mqtt";
/// MQTT over TLS and over secure WebSocket: off unless asked for (they need certificates).
pub const MQTTS: &str = "none";
pub const WSS: &str = "none";
/// Where the HTTP server (dashboard, JSON API, `/metrics`, `/healthz`,
/// `/debug/histograms`) listens.
pub const HTTP: &str = "127.0.0.1:9883";
pub const DATA_DIR: &str = "./ringmq-data";
/// In `--durability write`, how often the log is synced.
pub const FSYNC_INTERVAL_MS: u64 = 100;
/// The longest `--fsync-interval`.
pub const MAX_FSYNC_INTERVAL_MS: u64 = 60_000;
/// The smallest `--max-data-bytes` per shard: room for a few segments' headers and a
/// small state.
pub const MIN_DATA_BYTES_PER_SHARD: u64 = 64 * 1024;

/// Largest MQTT packet accepted, fixed header included.
pub const MAX_PACKET_SIZE: u32 = 1024 * 1024;
/// Largest MQTT packet there is: a 5-byte fixed header and the largest remaining length.
pub const MQTT_MAX_PACKET: u32 = 5 + MAX_VARINT as u32;
/// Messages kept for an offline persistent session.
pub const MAX_QUEUED_MESSAGES: usize = 1000;
/// QoS 1/2 messages in flight to one client (and the Receive Maximum told MQTT 5 clients).
pub const MAX_INFLIGHT: u16 = 64;
/// Seconds between `$SYS/broker/...` publications.
pub const SYS_INTERVAL_S: u64 = 10;
/// Longest keep alive accepted from MQTT 5 clients, seconds.
pub const MAX_KEEP_ALIVE_S: u16 = 60;
/// Topic filters clients may not subscribe to: none (a broker's default refuses nothing).
pub const DENY_SUBSCRIBE: &[&str] = &[];
/// Topic levels of a filter other shards are told about.
pub const ROUTE_DEPTH: usize = 1;
/// Topic aliases a client may use towards the broker (MQTT 5).
pub const TOPIC_ALIAS_MAX: u16 = 64;
/// Subscriptions one session may hold.
pub const MAX_SUBSCRIPTIONS: usize = 10_000;
/// Subscription memory one session may hold, in bytes as the broker counts them (see
/// `broker::routing::subscription_cost`): about 10,000 filters of a few levels each.
pub const MAX_SUBSCRIPTION_BYTES: usize = 8 * 1024 * 1024;
/// Levels a topic name or filter may have (EMQX's default too): every level of a filter
/// or a retained topic is a node of a topic trie.
pub const MAX_TOPIC_LEVELS: usize = 128;
/// Retained messages held, on one shard, in the snapshots of new subscriptions waiting
/// to be sent (8 bytes each); past it, further snapshots wait for room.
pub const RETAINED_SNAPSHOT_ENTRIES: usize = 4 * 1024 * 1024;
/// Time allowed for CONNECT after a connection opens.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Outbound bytes queued on one connection past which QoS 0 messages to it are dropped.
pub const OUT_SOFT_LIMIT: usize = 256 * 1024;
/// Messages waiting for a full peer ring past which QoS 0 to that peer is dropped.
pub const MESH_OVERFLOW_LIMIT: usize = 65_536;
/// QoS 1/2 deliveries waiting for connected clients' windows past which a shard is under
/// pressure.
pub const MAX_DELIVERIES_WAITING: usize = 65_536;
/// Bytes held for a paused publisher before reading from it stops.
pub const PAUSE_HOLD_BYTES: usize = 4 * 1024;
/// Retained messages kept, all topics together.
pub const MAX_RETAINED: usize = 1_000_000;

/// Threads that verify passwords and token signatures (off the shards).
pub const AUTH_THREADS: usize = 2;
/// Verifications waiting for a thread, all shards together; also the CONNECTs one shard
/// may have waiting for them.
pub const AUTH_QUEUE: usize = 1024;
/// Verified credentials remembered, so a reconnecting client is not hashed again.
pub const AUTH_CACHE: usize = 65_536;
/// Flapping: connections of one client id (or address) ending without DISCONNECT within
/// the window past which it is banned, the window, and the ban (EMQX's defaults).
pub const FLAPPING_MAX_DROPS: u32 = 15;
pub const FLAPPING_WINDOW_S: u64 = 60;
pub const FLAPPING_BAN_S: u64 = 300;
/// Client ids and addresses the flapping table watches at most (as many bans again).
pub const FLAPPING_CAPACITY: usize = 65_536;

/// Most shards a process runs: the broker keeps sets of shards as 128-bit masks (and the
/// mesh has shards² rings).
pub const MAX_SHARDS: usize = 128;
/// Open files kept for everything that is not a connection (listeners, eventfds, rings,
/// the metrics endpoint, stdio) when sizing the default fixed-file table.
pub const FD_RESERVE: u64 = 64;
/// Default fixed-file table size on hosts whose open-file limit is higher.
pub const MAX_DEFAULT_FILES_PER_SHARD: u64 = 65_536;
/// The kernel's cap on a fixed-file table (`IORING_MAX_FIXED_FILES`).
pub const IORING_MAX_FIXED_FILES: u32 = 1 << 20;

/// The default fixed-file table size, `min(nofile − 64, 65536)`: all the open-file limit
/// allows, less a reserve for everything else the process opens.
pub fn files_per_shard(nofile: u64) -> u32 {
    nofile
        .saturating_sub(FD_RESERVE)
        .min(MAX_DEFAULT_FILES_PER_SHARD) as u32
}

/// Messages for other nodes waiting for the NATS client, all shards together
/// (`--cluster-queue`).
pub const CLUSTER_QUEUE: usize = 65_536;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_per_shard_follows_the_limit() {
        assert_eq!(files_per_shard(20_000), 19_936);
        assert_eq!(files_per_shard(1 << 20), 65_536);
        assert_eq!(files_per_shard(u64::MAX), 65_536);
        assert_eq!(files_per_shard(10), 0);
    }
}
