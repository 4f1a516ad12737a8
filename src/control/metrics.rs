//! `/metrics`: every shard counter in the Prometheus text format (one sample per shard and
//! their sum), process-wide figures, and the webhook dispatcher's counters. It reads the
//! shards' counters (relaxed atomics) and never touches a shard otherwise; the HTTP
//! server (`control::http`) serves it.

use std::fmt::{Display, Write as _};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ringmq_shard::stats::{CounterSet, Description, Kind, RuntimeStats};

use crate::auth::AuthStats;
use crate::broker::{BrokerStats, ShardFigures};
use crate::control::webhook::WebhookStats;
use crate::limits::Limits;

/// What the endpoints read.
pub struct State {
    /// Each shard's counters and histograms, in shard order.
    pub shards: Vec<ShardFigures>,
    pub started: Instant,
    /// Set when shutdown begins; `/healthz` then answers 503.
    pub shutting_down: Arc<AtomicBool>,
    /// The webhook dispatcher's counters, when webhooks are configured.
    pub webhooks: Option<Arc<WebhookStats>>,
    /// Authentication's counters (every generation's).
    pub auth: Option<Arc<AuthStats>>,
    /// Connections per address and flapping bans.
    pub limits: Option<Arc<Limits>>,
    /// The cluster link's counters, in a cluster.
    pub cluster: Option<Arc<crate::cluster::ClusterLink>>,
}

/// Each shard's histogram sets, the broker's first (the order of their dump).
pub fn histogram_sets(shards: &[ShardFigures]) -> Vec<Vec<ringmq_shard::hist::SharedHists>> {
    shards
        .iter()
        .map(|s| vec![s.broker_hists.clone(), s.runtime_hists.clone()])
        .collect()
}

/// The Prometheus text exposition (format 0.0.4) of every counter, the runtime's then the
/// broker's: one sample per shard (label `shard`) and their sum (no label), then
/// process-wide values.
pub fn render(state: &State) -> String {
    let mut out = String::with_capacity(4096 + 64 * state.shards.len() * 32);
    let runtime: Vec<_> = state.shards.iter().map(|s| s.runtime.values()).collect();
    counter_family(&mut out, RuntimeStats::DESCRIPTIONS, &runtime);
    let broker: Vec<_> = state.shards.iter().map(|s| s.broker.values()).collect();
    counter_family(&mut out, BrokerStats::DESCRIPTIONS, &broker);
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
        state.shards.len()
    );
    if let Some(w) = &state.webhooks {
        w.render_prometheus(&mut out);
    }
    if let Some(a) = &state.auth {
        for (name, value) in a.snapshot() {
            let (kind, help) = auth_help(name);
            one_sample(&mut out, name, kind, help, value);
        }
    }
    if let Some(l) = &state.limits {
        l.render_prometheus(&mut out);
    }
    if let Some(c) = &state.cluster {
        c.stats.render_prometheus(&mut out);
    }
    out
}

/// The kind and help of an authentication counter.
/// A family of one unlabelled sample `ringmq_NAME`, with its help and type lines.
pub fn one_sample(out: &mut String, name: &str, kind: &str, help: &str, value: impl Display) {
    let _ = write!(
        out,
        "# HELP ringmq_{name} {help}\n# TYPE ringmq_{name} {kind}\nringmq_{name} {value}\n"
    );
}

fn auth_help(name: &str) -> (&'static str, &'static str) {
    let help = match name {
        "auth_allowed_total" => "CONNECTs admitted (anonymous, password, token or certificate).",
        "auth_cache_hits_total" => {
            "Credentials found in the cache of verified ones (no hash computed)."
        }
        "auth_cache_misses_total" => "Credentials sent to the verification pool.",
        "auth_hashes_computed_total" => "Password hashes computed by the verification pool.",
        "auth_tokens_checked_total" => "Token signatures checked by the verification pool.",
        "auth_refused_bad_credentials_total" => {
            "CONNECTs refused for a bad username, password or token (0x86 / 0x04)."
        }
        "auth_refused_not_authorized_total" => "CONNECTs refused as not authorized (0x87 / 0x05).",
        "auth_refused_banned_total" => {
            "CONNECTs refused because the client id or address is banned (0x8A / 0x05)."
        }
        "auth_refused_bad_method_total" => {
            "CONNECTs refused for an MQTT 5 authentication method (0x8C)."
        }
        "auth_refused_busy_total" => {
            "CONNECTs refused because the verification queue was full (0x89 / 0x03)."
        }
        _ => "Authentication counter.",
    };
    ("counter", help)
}

/// One set of counters: for each, its HELP and TYPE lines, a sample per shard
/// (`per_shard[shard][counter]`) and their sum.
fn counter_family(out: &mut String, descriptions: &[Description], per_shard: &[Vec<u64>]) {
    for (i, &(name, kind, help)) in descriptions.iter().enumerate() {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP ringmq_{name} {help}");
        let _ = writeln!(out, "# TYPE ringmq_{name} {kind}");
        let mut sum: u64 = 0;
        for (shard, values) in per_shard.iter().enumerate() {
            let v = values[i];
            sum = sum.wrapping_add(v);
            let _ = writeln!(out, "ringmq_{name}{{shard=\"{shard}\"}} {v}");
        }
        let _ = writeln!(out, "ringmq_{name} {sum}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(shards: usize) -> State {
        State {
            shards: (0..shards).map(|_| ShardFigures::default()).collect(),
            started: Instant::now(),
            shutting_down: Arc::new(AtomicBool::new(false)),
            webhooks: None,
            auth: None,
            limits: None,
            cluster: None,
        }
    }

    #[test]
    fn every_counter_per_shard_and_summed() {
        let s = state(2);
        s.shards[0].runtime.connections_total.add(3);
        s.shards[1].runtime.connections_total.add(4);
        s.shards[1].runtime.connections_current.add(1);
        s.shards[0].broker.messages_out.add(5);
        s.shards[1].broker.deliveries_waiting.set(2);
        let text = render(&s);
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            "# TYPE ringmq_connections_current gauge",
            "# TYPE ringmq_connections_total counter",
            "ringmq_connections_total{shard=\"0\"} 3",
            "ringmq_connections_total{shard=\"1\"} 4",
            "ringmq_connections_total 7",
            "ringmq_connections_current 1",
            "# TYPE ringmq_messages_out counter",
            "ringmq_messages_out{shard=\"0\"} 5",
            "ringmq_messages_out 5",
            "# TYPE ringmq_deliveries_waiting gauge",
            "ringmq_deliveries_waiting 2",
            "ringmq_shards 2",
            "# TYPE ringmq_shards gauge",
            "ringmq_build_info{version=\"0.1.0\"} 1",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{text}");
        }
        let names = RuntimeStats::DESCRIPTIONS
            .iter()
            .chain(BrokerStats::DESCRIPTIONS)
            .map(|d| d.0);
        let mut seen = std::collections::HashSet::new();
        for name in names {
            assert!(seen.insert(name), "{name} is counted twice");
            let help = format!("# HELP ringmq_{name} ");
            assert!(text.contains(&help), "no HELP for {name}");
        }
        assert!(text.contains("\nringmq_uptime_seconds "));
        assert!(text.ends_with('\n'));
    }
}
