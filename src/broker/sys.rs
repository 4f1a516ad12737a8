//! `$SYS/broker/...`: the broker's own figures as retained messages, published by
//! shard 0 every `sys_interval_s` seconds (process-wide sums of every shard's
//! counters). A `#` subscription does not match them (`$` topics); `$SYS/#` does.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ringmq_proto::mqtt::QoS;

use super::Broker;
use crate::broker::session::Message;
use ringmq_shard::io::Io;

impl Broker {
    pub(super) fn publish_sys(&mut self, io: &mut Io<Self>) {
        let interval = self.config().sys_interval_s;
        if self.id != 0 || interval == 0 {
            return;
        }
        let now = io.now_ms();
        if self.last_sys_ms != 0 && now < self.last_sys_ms + interval * 1000 {
            return;
        }
        self.last_sys_ms = now.max(1);
        let sum =
            |f: fn(&ringmq_shard::stats::ShardStats) -> &std::sync::atomic::AtomicU64| -> u64 {
                self.shared
                    .shard_stats
                    .iter()
                    .map(|s| f(s).load(Ordering::Relaxed))
                    .sum()
            };
        let figures: [(&str, String); 9] = [
            ("version", format!("ringmq {}", env!("CARGO_PKG_VERSION"))),
            (
                "uptime",
                format!("{} seconds", self.shared.started.elapsed().as_secs()),
            ),
            (
                "clients/connected",
                sum(|s| &s.connections_current).to_string(),
            ),
            ("clients/total", sum(|s| &s.connections_total).to_string()),
            ("messages/received", sum(|s| &s.messages_in).to_string()),
            ("messages/sent", sum(|s| &s.messages_out).to_string()),
            ("bytes/received", sum(|s| &s.bytes_in).to_string()),
            ("bytes/sent", sum(|s| &s.bytes_out).to_string()),
            ("shards", self.shards.to_string()),
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
