//! Counters of one shard. Only the shard thread writes them (relaxed atomic adds on
//! cache lines no other thread writes); the metrics endpoint reads and sums them.
//! Each is declared once, with its kind and the help text `/metrics` shows.

use std::sync::atomic::{AtomicU64, Ordering};

/// Whether a figure only grows (a Prometheus counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

macro_rules! counters {
    ($( $kind:ident $name:ident : $help:literal ),* $(,)?) => {
        /// Per-shard counters; see each field for what it counts.
        #[derive(Debug, Default)]
        pub struct ShardStats {
            $( #[doc = $help] pub $name: AtomicU64, )*
        }

        impl ShardStats {
            /// Every counter with its name, for the metrics endpoint.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name.load(Ordering::Relaxed)) ),*]
            }

            /// Every counter's name, kind and help text, in declaration order.
            pub const DESCRIPTIONS: &'static [(&'static str, Kind, &'static str)] =
                &[$( (stringify!($name), Kind::$kind, $help) ),*];
        }
    };
}

counters! {
    Gauge connections_current: "Connections open now.",
    Counter connections_total: "Connections accepted since start.",
    Counter connections_refused_limit:
        "Connections refused for max_connections (answered with a CONNACK refusal).",
    Counter connections_refused_table_full:
        "Accepts that failed because the fixed-file table was full (the client sees the connection closed).",
    Counter accept_paused: "Times the shard stopped accepting because its fixed-file table was near full.",
    Counter packets_in: "MQTT packets received.",
    Counter packets_out: "MQTT packets sent.",
    Counter messages_in: "PUBLISH packets received from clients.",
    Counter messages_out: "Messages delivered to subscribers.",
    Counter bytes_in: "Bytes received from sockets.",
    Counter bytes_out: "Bytes handed to sockets.",
    Counter dropped_qos0_slow_consumer:
        "QoS 0 deliveries dropped because the subscriber's outbound queue was over its soft limit.",
    Counter dropped_qos0_mesh_full:
        "QoS 0 messages not sent to a peer shard because its ring and overflow were full.",
    Counter dropped_queue_full: "QoS 1/2 messages dropped from a full offline session queue (the oldest goes).",
    Counter dropped_too_large_for_client:
        "Messages not sent because they exceed the client's maximum packet size.",
    Counter disconnected_slow_consumer:
        "Connections closed because their outbound queue passed the hard limit.",
    Counter disconnected_timeout: "Connections closed for a keepalive, CONNECT or handshake timeout.",
    Counter disconnected_protocol_error: "Connections closed for an MQTT or WebSocket protocol violation.",
    Counter ws_handshake_rejected: "WebSocket upgrades refused (400/404/426/431).",
    Counter recv_no_buffers: "Multishot receives that ended because the buffer ring was empty (re-armed).",
    Counter publishers_paused:
        "Times a publisher was paused because the shard was under pressure: its packets are held (acknowledgements aside) until the pressure is gone (back-pressure).",
    Counter publishers_read_stopped:
        "Times a paused publisher sent more than the broker holds for it (pause_hold_bytes), so reading from it stopped until the pause ended.",
    Counter mesh_sent: "Messages sent to other shards over the mesh.",
    Counter mesh_backpressure: "Messages that found a peer shard's ring full and waited in order.",
    Gauge outbound_bytes: "Outbound bytes queued on the shard's connections now.",
    Gauge mesh_waiting: "Messages waiting in order for a full peer ring (the mesh overflow), now.",
    Gauge deliveries_waiting:
        "QoS 1/2 deliveries kept for connected clients until their in-flight window has room, now.",
    Counter loop_turns: "Turns of the shard loop.",
    Counter dedup_window_overflow:
        "Messages a session that just moved between shards could not check for a second copy (window full).",
}

impl ShardStats {
    /// Adds `n` to a counter of this shard. Only the owning shard thread writes its
    /// counters, so a plain load and store is enough (readers may see the old value a
    /// moment longer); a locked read-modify-write per delivery would cost far more.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_described_once() {
        let names: Vec<_> = ShardStats::default()
            .snapshot()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let described: Vec<_> = ShardStats::DESCRIPTIONS.iter().map(|d| d.0).collect();
        assert_eq!(names, described);
        assert!(ShardStats::DESCRIPTIONS.iter().all(|d| !d.2.is_empty()));
    }
}
