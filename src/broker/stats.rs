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
        Counter log_records: "Records appended to the shard's write-ahead log (commits included).",
        Counter log_bytes_written: "Bytes appended to the shard's write-ahead log.",
        Counter log_syncs: "fdatasync calls of the shard's log that completed.",
        Gauge log_disk_bytes: "Bytes of the shard's log files on disk (segments and snapshots), now.",
        Gauge log_refusing:
            "Whether the shard's log refuses records that grow the durable state now: 0 no, 1 disk budget (--max-data-bytes) reached, 2 disk full, 3 the log failed (restart needed).",
        Counter log_records_refused:
            "Records the shard's log refused (disk budget reached, disk full, or a failed log).",
        Counter log_records_rejected:
            "Records the shard's log rejected as not fitting its state (a bug; logged).",
        Counter log_write_failures: "Writes or syncs of the shard's log that failed.",
        Counter durable_publishes_refused:
            "QoS 1/2 publishes refused because they needed the log and it refused them (MQTT 5: PUBACK/PUBREC 0x97; 3.1.1: disconnected without acknowledgement).",
        Counter dropped_log_refused:
            "Deliveries to persistent sessions not made because the log refused to store them.",
        Gauge durability_waiting:
            "Acknowledgements, deliveries and notices waiting for the log to make their records durable, now.",
        Gauge recovered_sessions: "Persistent sessions recovered from the shard's log at startup.",
        Gauge recovered_messages: "Messages (queued or in flight) recovered from the shard's log at startup.",
        Gauge recovered_retained: "Retained messages recovered from the shard's log at startup.",
        Gauge recovery_ms: "Milliseconds the startup recovery of the data directory took (all shards).",
        Gauge sessions_online: "Sessions whose client is connected, now.",
        Gauge sessions_offline: "Persistent sessions whose client is away, now.",
        Counter sessions_refused:
            "CONNECTs refused because they needed a new session past max_sessions (CONNACK 0x03 / 0x97).",
        Counter sessions_expired: "Sessions that ended because their client stayed away past their expiry.",
        Gauge subscriptions: "Subscriptions in the shard's topic table (moved sessions' stubs included), now.",
        Gauge subscription_bytes:
            "Memory of those subscriptions as the per-session budget counts it (the filter, 128 B a topic level, 64 B a subscription), now.",
        Counter subscriptions_refused:
            "Subscriptions refused because the session held max_subscriptions or max_subscription_bytes already (SUBACK 0x97 / 0x80).",
        Counter topic_levels_refused:
            "Filters, PUBLISH topics and will topics refused for having more than max_topic_levels levels.",
        Gauge shared_groups:
            "Shared-subscription groups with members on some shard that this shard keeps a turn for, now.",
        Gauge retained_messages: "Retained messages held (every shard holds them all; shard 0 reports them), now.",
        Gauge retained_bytes: "Bytes of those messages (topic, properties, payload), now.",
        Gauge retained_pending:
            "Retained messages waiting in new subscriptions' snapshots to be sent, now.",
        Counter retained_snapshots_waited:
            "New subscriptions whose retained messages waited for room among the shard's snapshots (retained_snapshot_entries).",
        Counter inbound_qos2_exceeded:
            "Connections ended for holding more QoS 2 messages awaiting PUBREL than max_inflight (MQTT 5: DISCONNECT 0x93).",
        Gauge auth_generation:
            "The generation of the password, ACL and JWT configuration this shard applies (1 at start, one more for each reload it picked up).",
        Counter connects_parked:
            "CONNECTs that waited for the verification pool (a password hash or token signature not in the cache).",
        Counter acl_denied_publish:
            "PUBLISH packets (and wills) the client's ACL did not allow: acknowledged and dropped (MQTT 5: reason 0x87).",
        Counter acl_denied_subscribe: "Subscription filters the client's ACL refused (SUBACK 0x80 / 0x87).",
        Counter acl_denied_delivery:
            "Deliveries not sent because the subscriber's ACL does not let it receive the topic (live, retained, queued or resent).",
        Counter tokens_expired: "Connections closed because their token expired (MQTT 5: DISCONNECT 0x87).",
        Counter disconnected_reload:
            "Connections closed because a reloaded password, ACL or JWT configuration no longer admits them (MQTT 5: DISCONNECT 0x98).",
        Counter publishers_throttled:
            "Times reading from a client stopped because it published past its message or byte rate (it resumes when its bucket allows).",
        Counter retained_dropped_full:
            "Retained PUBLISHes to a new topic not retained because max_retained messages are kept (they are still delivered).",
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

    /// A sync of the shard's log completed `us` after its batch was handed to the ring.
    pub fn log_synced(&mut self, us: u64) {
        self.hists.record(super::LOG_SYNC, us);
    }

    /// Adds what was recorded since the last call to the shared copy.
    pub fn publish(&mut self) {
        self.hists.publish();
    }
}

impl super::Broker {
    /// Sets the gauges of what the broker holds, so that a flood of sessions,
    /// subscriptions or retained messages shows in `/metrics`.
    pub(super) fn set_gauges(&self) {
        let s = &self.stats;
        s.deliveries_waiting.set(self.pressure.waiting as u64);
        let offline = self.sessions.offline_len();
        s.sessions_offline.set(offline as u64);
        s.sessions_online
            .set(self.sessions.indexed_len().saturating_sub(offline) as u64);
        s.subscriptions.set(self.routes.count as u64);
        s.subscription_bytes.set(self.routes.bytes as u64);
        s.shared_groups.set(self.routes.turns_kept() as u64);
        s.retained_pending.set(self.retained_cursors.entries as u64);
        // Every shard holds every retained message (sharing the messages themselves):
        // one shard speaks for all, so the sum over shards is the broker's.
        if self.peers.id == 0 {
            s.retained_messages.set(self.retained.count as u64);
            s.retained_bytes.set(self.retained.bytes as u64);
        }
    }
}
