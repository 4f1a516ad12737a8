//! The broker's counters, a set per shard; `/metrics` shows them beside the runtime's
//! (`ringmq_shard::stats::RuntimeStats`), under the same `ringmq_` names. And
//! [`ShardFigures`], everything a shard counts and times, as the process hands it out.

use std::sync::Arc;

use ringmq_shard::hist::{self, Recorder, SharedHists};
use ringmq_shard::stats::{CounterSet, Kind, RuntimeStats};

/// One shard's figures: the runtime's and the broker's counters and latency histograms.
/// The process makes them, the shard writes them, `$SYS` and the control plane read them.
#[derive(Clone)]
pub struct ShardFigures {
    pub runtime: Arc<RuntimeStats>,
    pub broker: Arc<BrokerStats>,
    /// A set of `hist::RUNTIME`.
    pub runtime_hists: SharedHists,
    /// A set of [`super::HISTOGRAMS`].
    pub broker_hists: SharedHists,
}

impl Default for ShardFigures {
    fn default() -> Self {
        ShardFigures {
            runtime: Arc::default(),
            broker: Arc::default(),
            runtime_hists: hist::shared(hist::RUNTIME),
            broker_hists: hist::shared(super::HISTOGRAMS),
        }
    }
}

impl ShardFigures {
    /// Every counter of the shard, the runtime's then the broker's, with its name and
    /// kind, in the order `/metrics` shows them.
    pub fn snapshot(&self) -> Vec<(&'static str, Kind, u64)> {
        let runtime = RuntimeStats::DESCRIPTIONS.iter().zip(self.runtime.values());
        let broker = BrokerStats::DESCRIPTIONS.iter().zip(self.broker.values());
        runtime
            .chain(broker)
            .map(|(&(name, kind, _), value)| (name, kind, value))
            .collect()
    }
}

ringmq_shard::counters! {
    /// What the broker of one shard counts.
    pub struct BrokerStats {
        Counter packets_in: "MQTT packets received.",
        Counter packets_out: "MQTT packets sent.",
        Counter messages_in: "PUBLISH packets received from clients.",
        Counter api_messages_in: "Messages published through the HTTP API (POST /api/v1/publish, /publish/batch).",
        Counter messages_out: "Messages delivered to subscribers.",
        Counter dropped_qos0_slow_consumer:
            "QoS 0 deliveries dropped because the subscriber's outbound queue was over its soft limit.",
        Counter dropped_qos0_mesh_full:
            "QoS 0 messages not sent to a peer shard because its ring and overflow were full.",
        Counter dropped_queue_full: "QoS 1/2 messages dropped from a full offline session queue (the oldest goes).",
        Counter dropped_too_large_for_client:
            "Messages not sent because they exceed the client's maximum packet size.",
        Counter publishers_paused:
            "Times a publisher was paused because the shard was under pressure: its packets are held (acknowledgements aside) until the pressure is gone (back-pressure).",
        Counter publishers_read_stopped:
            "Times a paused publisher sent more than the broker holds for it (pause_hold_bytes), so reading from it stopped until the pause ended.",
        Gauge deliveries_waiting:
            "QoS 1/2 deliveries kept for connected clients until their in-flight window has room, now.",
        Counter dedup_window_overflow:
            "Messages a session that just moved between shards could not check for a second copy (window full).",
    }
}

/// Publish-to-delivery latency: PUBLISH packets handled in this loop turn wait for the
/// turn's sends, and `turn_flushed` records that wait once for each.
pub(super) struct Latency {
    /// This shard's histograms ([`super::HISTOGRAMS`]).
    hists: Recorder,
    publishes_this_turn: u64,
}

impl Latency {
    pub fn new(shared: SharedHists) -> Latency {
        Latency {
            hists: Recorder::new(shared),
            publishes_this_turn: 0,
        }
    }

    /// A PUBLISH was handled this turn.
    pub fn note_publish(&mut self) {
        self.publishes_this_turn += 1;
    }

    /// The turn's sends were handed to the ring `turn_us` after it began.
    pub fn turn_flushed(&mut self, turn_us: u64) {
        let published = std::mem::take(&mut self.publishes_this_turn);
        self.hists
            .record_n(super::PUBLISH_TO_DELIVERY, turn_us, published);
    }

    /// Adds what was recorded since the last call to the shared copy.
    pub fn publish(&mut self) {
        self.hists.publish();
    }
}
