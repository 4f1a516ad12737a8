//! `$SYS/broker/...`: the broker's own figures as retained messages, published by
//! shard 0 every `sys_interval_s` seconds (process-wide sums of every shard's
//! counters). A `#` subscription does not match them (`$` topics); `$SYS/#` does.

use std::sync::Arc;

use ringmq_proto::mqtt::QoS;

use super::Io;
use super::{Broker, BrokerStats};
use crate::broker::session::Message;
use ringmq_shard::stats::{Counter, RuntimeStats};

/// When `$SYS` was last published.
#[derive(Default)]
pub(super) struct Sys {
    /// Shard clock, ms (0: never).
    pub last_ms: u64,
}

impl Broker {
    pub(super) fn publish_sys(&mut self, io: &mut Io) {
        let interval = self.config().sys_interval_s;
        if self.peers.id != 0 || interval == 0 {
            return;
        }
        let now = io.now_ms();
        if self.sys.last_ms != 0 && now < self.sys.last_ms + interval * 1000 {
            return;
        }
        self.sys.last_ms = now.max(1);
        let shards = &self.shared.shards;
        let runtime = |f: fn(&RuntimeStats) -> &Counter| -> u64 {
            shards.iter().map(|s| f(&s.runtime).get()).sum()
        };
        let broker = |f: fn(&BrokerStats) -> &Counter| -> u64 {
            shards.iter().map(|s| f(&s.broker).get()).sum()
        };
        let figures: [(&str, String); 9] = [
            ("version", format!("ringmq {}", env!("CARGO_PKG_VERSION"))),
            (
                "uptime",
                format!("{} seconds", self.shared.started.elapsed().as_secs()),
            ),
            (
                "clients/connected",
                runtime(|s| &s.connections_current).to_string(),
            ),
            (
                "clients/total",
                runtime(|s| &s.connections_total).to_string(),
            ),
            ("messages/received", broker(|s| &s.messages_in).to_string()),
            ("messages/sent", broker(|s| &s.messages_out).to_string()),
            ("bytes/received", runtime(|s| &s.bytes_in).to_string()),
            ("bytes/sent", runtime(|s| &s.bytes_out).to_string()),
            ("shards", self.peers.count.to_string()),
        ];
        for (name, value) in figures {
            let topic = format!("$SYS/broker/{name}");
            let m = Arc::new(Message::new(
                &topic,
                &[],
                value.as_bytes(),
                QoS::AtMostOnce,
                true,
                None,
                None,
            ));
            self.publish_message(io, &m);
        }
    }
}
