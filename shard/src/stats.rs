//! Counters. Only the shard thread writes a shard's counters (plain relaxed loads and
//! stores on cache lines no other thread writes); the metrics endpoint reads and sums
//! them. Each counter is declared once, with its kind and the help text `/metrics` shows,
//! in a [`counters!`](crate::counters) block: [`RuntimeStats`] here for what the runtime
//! counts (connections, bytes, closes, the mesh), and one in the service for its own.

use std::sync::atomic::{AtomicU64, Ordering};

/// Whether a figure only grows (a Prometheus counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A counter's name (the metric's, less the `ringmq_` prefix), kind and help text.
pub type Description = (&'static str, Kind, &'static str);

/// One figure of one shard, written by its shard thread only.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. The shard thread is the only writer, so a plain load and store is enough
    /// (readers may see the old value a moment longer); a locked read-modify-write per
    /// delivery would cost far more.
    pub fn add(&self, n: u64) {
        self.set(self.get().wrapping_add(n));
    }

    /// Takes `n` off a gauge.
    pub fn sub(&self, n: u64) {
        self.set(self.get().wrapping_sub(n));
    }

    /// Sets a gauge.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A set of counters the metrics endpoint can list.
pub trait CounterSet {
    /// Every counter's name, kind and help, in declaration order.
    const DESCRIPTIONS: &'static [Description];

    /// Every counter's value, in the order of `DESCRIPTIONS`.
    fn values(&self) -> Vec<u64>;
}

/// Declares a struct of [`Counter`]s, each with its kind and help text, and its
/// [`CounterSet`]: `counters! { pub struct Name { Counter name: "help", Gauge other: "help" } }`.
#[macro_export]
macro_rules! counters {
    ($(#[$meta:meta])* $vis:vis struct $set:ident {
        $( $kind:ident $name:ident : $help:literal ),* $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $set {
            $( #[doc = $help] pub $name: $crate::stats::Counter, )*
        }

        impl $crate::stats::CounterSet for $set {
            const DESCRIPTIONS: &'static [$crate::stats::Description] =
                &[$( (stringify!($name), $crate::stats::Kind::$kind, $help) ),*];

            fn values(&self) -> Vec<u64> {
                vec![$( self.$name.get() ),*]
            }
        }
    };
}

counters! {
    /// What the runtime of one shard counts.
    pub struct RuntimeStats {
        Gauge connections_current: "Connections open now.",
        Gauge connections_tcp: "Connections open now on MQTT-over-TCP listeners.",
        Gauge connections_ws: "Connections open now on WebSocket listeners (upgrades in progress included).",
        Gauge connections_tls: "Connections open now on TLS listeners (--mqtts and --wss; also counted in connections_tcp or connections_ws), handshakes in progress included.",
        Counter connections_total: "Connections accepted since start.",
        Counter connections_refused_limit:
            "Connections refused for max_connections (answered with the service's refusal).",
        Counter connections_refused_table_full:
            "Accepts that failed because the fixed-file table was full (the client sees the connection closed).",
        Counter accept_paused: "Times the shard stopped accepting because the fixed-file tables of all its lanes were near full (--lanes-per-shard lanes open).",
        Gauge lanes: "io_uring rings (lanes) open, each with its own fixed-file table of --files-per-shard slots; a shard opens one more when those it has are near full.",
        Counter bytes_in: "Bytes received from sockets.",
        Counter bytes_out: "Bytes handed to sockets.",
        Counter disconnected_slow_consumer:
            "Connections closed because they did not read what they were sent (outbound queue past its hard limit, or too much waiting for them).",
        Counter disconnected_timeout: "Connections closed when a deadline passed (the WebSocket handshake's, or one the service set: CONNECT, keepalive).",
        Counter disconnected_protocol_error: "Connections closed for a protocol violation (WebSocket framing, or the service's protocol).",
        Counter ws_handshake_rejected: "WebSocket upgrades refused (400/403/404/426/431).",
        Counter ws_origin_refused: "WebSocket upgrades refused because their Origin is not allowed (403).",
        Counter accepts_delayed:
            "Times a listener stopped accepting for a while because new connections came faster than its max_connect_rate (they wait in the listen backlog).",
        Counter reads_throttled:
            "Times reading from a connection stopped until a rate limit let it go on (TCP pushes back on the sender meanwhile).",
        Counter peer_address_unknown:
            "Accepted connections whose peer address could not be learnt (per-address limits do not apply to them).",
        Counter tls_handshakes: "TLS handshakes completed.",
        Counter tls_handshake_failed:
            "TLS handshakes that failed (not TLS at all, no common version or cipher suite, a missing or refused client certificate, …: answered with an alert and closed), or that the client left (it refused the server's certificate, say).",
        Counter tls_handshake_timeout:
            "TLS handshakes not finished within the handshake timeout: closed (also counted in disconnected_timeout).",
        Counter tls_errors:
            "TLS connections closed after the handshake for a bad record or more buffered than a record may hold: answered with an alert.",
        Counter recv_no_buffers: "Multishot receives that ended because the buffer ring was empty (re-armed).",
        Counter mesh_sent: "Messages sent to other shards over the mesh.",
        Counter mesh_backpressure: "Messages that found a peer shard's ring full and waited in order.",
        Gauge outbound_bytes: "Outbound bytes queued on the shard's connections now.",
        Gauge mesh_waiting: "Messages waiting in order for a full peer ring (the mesh overflow), now.",
        Counter loop_turns: "Turns of the shard loop.",
        Counter write_errors:
            "Writes the service began that did not append the bytes they promised (an encoder's error): taken back, and the connection closed.",
        Gauge ops_in_flight:
            "io_uring operations the shard has handed to the kernel and not yet seen end, now (0 once a stopped shard has cancelled and waited for them all).",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_described_once_in_order() {
        let stats = RuntimeStats::default();
        stats.bytes_in.add(5);
        stats.connections_current.add(2);
        stats.connections_current.sub(1);
        stats.outbound_bytes.set(7);
        let values = stats.values();
        assert_eq!(values.len(), RuntimeStats::DESCRIPTIONS.len());
        let value = |name| {
            let i = RuntimeStats::DESCRIPTIONS.iter().position(|d| d.0 == name);
            values[i.expect(name)]
        };
        assert_eq!(
            (
                value("bytes_in"),
                value("connections_current"),
                value("outbound_bytes")
            ),
            (5, 1, 7)
        );
        let mut names: Vec<_> = RuntimeStats::DESCRIPTIONS.iter().map(|d| d.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RuntimeStats::DESCRIPTIONS.len());
        assert!(RuntimeStats::DESCRIPTIONS.iter().all(|d| !d.2.is_empty()));
    }
}
