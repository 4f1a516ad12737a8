//! `/metrics`: every shard counter in the Prometheus text format (one sample per shard and
//! their sum), process-wide figures, and the webhook dispatcher's counters. It reads the
//! shards' counters (relaxed atomics) and never touches a shard otherwise; the HTTP
//! server (`control::http`) serves it.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ringmq_shard::hist::SharedHists;
use ringmq_shard::stats::{Kind, ShardStats};

use crate::control::webhook::WebhookStats;

/// What the endpoints read.
pub struct State {
    pub shard_stats: Vec<Arc<ShardStats>>,
    pub started: Instant,
    /// Set when shutdown begins; `/healthz` then answers 503.
    pub shutting_down: Arc<AtomicBool>,
    /// Each shard's latency histograms.
    pub histograms: Vec<SharedHists>,
    /// The webhook dispatcher's counters, when webhooks are configured.
    pub webhooks: Option<Arc<WebhookStats>>,
}

/// The Prometheus text exposition (format 0.0.4) of every counter: one sample per shard
/// (label `shard`) and their sum (no label), then process-wide values.
pub fn render(state: &State) -> String {
    let snapshots: Vec<Vec<(&'static str, u64)>> =
        state.shard_stats.iter().map(|s| s.snapshot()).collect();
    let mut out = String::with_capacity(4096 + 64 * snapshots.len() * 24);
    if let Some(first) = snapshots.first() {
        for (i, &(name, _)) in first.iter().enumerate() {
            let kind = if is_gauge(name) { "gauge" } else { "counter" };
            let _ = writeln!(out, "# HELP ringmq_{name} {}", help(name));
            let _ = writeln!(out, "# TYPE ringmq_{name} {kind}");
            let mut sum: u64 = 0;
            for (shard, snap) in snapshots.iter().enumerate() {
                let v = snap[i].1;
                sum = sum.wrapping_add(v);
                let _ = writeln!(out, "ringmq_{name}{{shard=\"{shard}\"}} {v}");
            }
            let _ = writeln!(out, "ringmq_{name} {sum}");
        }
    }
    let uptime = state.started.elapsed().as_secs_f64();
    let version = env!("CARGO_PKG_VERSION");
    let _ = write!(
        out,
        "# HELP ringmq_shards Shards (threads with their own io_uring ring) running.\n\
         # TYPE ringmq_shards gauge\n\
         ringmq_shards {}\n\
         # HELP ringmq_uptime_seconds Seconds since the broker started.\n\
         # TYPE ringmq_uptime_seconds gauge\n\
         ringmq_uptime_seconds {uptime:.3}\n\
         # HELP ringmq_build_info The running ringmq version.\n\
         # TYPE ringmq_build_info gauge\n\
         ringmq_build_info{{version=\"{version}\"}} 1\n",
        snapshots.len()
    );
    if let Some(w) = &state.webhooks {
        w.render_prometheus(&mut out);
    }
    out
}

fn is_gauge(name: &str) -> bool {
    description(name).is_some_and(|d| d.1 == Kind::Gauge)
}

/// The `# HELP` text of a shard counter, as declared in `ringmq_shard::stats`.
fn help(name: &str) -> &'static str {
    description(name).map_or("A shard counter.", |d| d.2)
}

fn description(name: &str) -> Option<&'static (&'static str, Kind, &'static str)> {
    ShardStats::DESCRIPTIONS.iter().find(|d| d.0 == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(shards: usize) -> State {
        State {
            shard_stats: (0..shards)
                .map(|_| Arc::new(ShardStats::default()))
                .collect(),
            started: Instant::now(),
            shutting_down: Arc::new(AtomicBool::new(false)),
            histograms: (0..shards).map(|_| Arc::default()).collect(),
            webhooks: None,
        }
    }

    #[test]
    fn every_counter_per_shard_and_summed() {
        let s = state(2);
        ShardStats::add(&s.shard_stats[0].connections_total, 3);
        ShardStats::add(&s.shard_stats[1].connections_total, 4);
        ShardStats::add(&s.shard_stats[1].connections_current, 1);
        let text = render(&s);
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            "# TYPE ringmq_connections_current gauge",
            "# TYPE ringmq_connections_total counter",
            "ringmq_connections_total{shard=\"0\"} 3",
            "ringmq_connections_total{shard=\"1\"} 4",
            "ringmq_connections_total 7",
            "ringmq_connections_current 1",
            "ringmq_shards 2",
            "# TYPE ringmq_shards gauge",
            "ringmq_build_info{version=\"0.1.0\"} 1",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{text}");
        }
        for (name, _) in ShardStats::default().snapshot() {
            let help = format!("# HELP ringmq_{name} ");
            // A counter added to the shard without a line in `help` gets the generic text.
            assert!(text.contains(&help), "no HELP for {name}");
        }
        assert!(text.contains("\nringmq_uptime_seconds "));
        assert!(text.ends_with('\n'));
    }
}
