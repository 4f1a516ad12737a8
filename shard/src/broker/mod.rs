//! The MQTT service (being written; this is the interface the binary starts it with).

use std::sync::Arc;

use crate::conn::ConnKey;
use crate::io::Io;
use crate::service::{Data, Service};
use crate::stats::ShardStats;

/// Broker-level settings shared by all shards.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Offline queue bound per persistent session (messages); the oldest is dropped
    /// (and counted) past it.
    pub max_queued_messages: usize,
    /// QoS 1/2 messages in flight to one client at a time (and the Receive Maximum
    /// the broker announces to MQTT 5 clients).
    pub max_inflight: u16,
    /// How often `$SYS/broker/...` topics are published, in seconds (0: never).
    pub sys_interval_s: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig { max_queued_messages: 1000, max_inflight: 64, sys_interval_s: 10 }
    }
}

/// What every shard's broker can read: settings and every shard's counters.
pub struct Shared {
    pub config: BrokerConfig,
    pub shard_stats: Vec<Arc<ShardStats>>,
}

/// A cross-shard message.
pub enum Msg {}

/// The MQTT broker of one shard.
pub struct Broker {
    _shared: Arc<Shared>,
}

impl Broker {
    pub fn new(_shard_id: usize, shared: Arc<Shared>) -> Broker {
        Broker { _shared: shared }
    }
}

impl Service for Broker {
    type ConnState = ();
    type Msg = Msg;
    fn on_open(&mut self, _io: &mut Io<Self>, _key: ConnKey) {}
    fn on_data(&mut self, _io: &mut Io<Self>, _key: ConnKey, _data: Data<'_>) {}
    fn on_close(&mut self, _io: &mut Io<Self>, _key: ConnKey, _state: ()) {}
    fn on_deadline(&mut self, _io: &mut Io<Self>, _key: ConnKey) {}
    fn on_message(&mut self, _io: &mut Io<Self>, _from: usize, msg: Msg) {
        match msg {}
    }
    fn on_shutdown(&mut self, _io: &mut Io<Self>) {}
}
