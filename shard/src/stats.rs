//! Counters of one shard. Only the shard thread writes them (relaxed atomic adds on
//! cache lines no other thread writes); the metrics endpoint reads and sums them.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Per-shard counters; see each field for what it counts.
        #[derive(Debug, Default)]
        pub struct ShardStats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        impl ShardStats {
            /// Every counter with its name, for the metrics endpoint.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name.load(Ordering::Relaxed)) ),*]
            }
        }
    };
}

counters! {
    /// Connections open now (a gauge: incremented on accept, decremented on close).
    connections_current,
    /// Connections accepted since start.
    connections_total,
    /// Connections refused: over `max_connections` (answered with a CONNACK refusal).
    connections_refused_limit,
    /// Accepts that failed because the fixed-file table was full (the kernel had
    /// already accepted; the client sees the connection closed).
    connections_refused_table_full,
    /// Times this shard stopped accepting because its fixed-file table was near full.
    accept_paused,
    /// MQTT packets received / sent.
    packets_in,
    packets_out,
    /// PUBLISH packets received / delivered to subscribers.
    messages_in,
    messages_out,
    /// Bytes received from / handed to sockets.
    bytes_in,
    bytes_out,
    /// QoS 0 deliveries dropped because the subscriber's outbound queue was over its limit.
    dropped_qos0_slow_consumer,
    /// QoS 0 messages not sent to a peer shard because its ring and overflow were full.
    dropped_qos0_mesh_full,
    /// QoS 1/2 messages dropped from a full offline/in-flight queue (the oldest goes).
    dropped_queue_full,
    /// Messages dropped because they exceed the receiving client's maximum packet size.
    dropped_too_large_for_client,
    /// Connections closed because their outbound queue passed the hard limit.
    disconnected_slow_consumer,
    /// Connections closed for a keepalive, CONNECT or handshake timeout.
    disconnected_timeout,
    /// Connections closed for a protocol violation (MQTT or WebSocket).
    disconnected_protocol_error,
    /// WebSocket upgrades refused (400/404/426/431).
    ws_handshake_rejected,
    /// Receive multishots that ended because the buffer ring was empty (re-armed).
    recv_no_buffers,
    /// Messages sent to other shards over the mesh.
    mesh_sent,
    /// Messages that found a peer's ring full and waited in the local overflow queue.
    mesh_backpressure,
    /// Loop turns.
    loop_turns,
}

impl ShardStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
