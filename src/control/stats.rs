//! The broker's figures as JSON (`GET /api/v1/stats`, and the dashboard's charts): every
//! shard counter and gauge, summed and per shard, with rates per second, plus latency
//! percentiles from the shards' histograms.
//!
//! A sampler task on the control runtime reads the shards' counters (relaxed atomics)
//! once per [`SAMPLE_INTERVAL`]; a rate is the difference between two successive samples
//! over the time between them. Requests read the last computed [`Stats`] and never touch
//! a shard. The histograms the shards share grow from the start; keeping the merged copy
//! of a few samples ago gives percentiles over the last [`LATENCY_WINDOW`] samples.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use ringmq_shard::hist::HistSet;
use ringmq_shard::stats::Kind;
use serde::Serialize;

use crate::broker;
use crate::control::metrics;
use crate::control::webhook::WebhookStats;

/// Time between two samples of the shards' counters.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept for the latency window (the percentiles cover this many intervals).
pub const LATENCY_WINDOW: usize = 10;

/// One answer of `GET /api/v1/stats`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Stats {
    /// Seconds since the broker started.
    pub uptime_seconds: f64,
    /// Unix time of the sample, milliseconds.
    pub sampled_at_ms: u64,
    /// Seconds between the last two samples, which the rates are over (0 before the
    /// second sample: rates are then 0).
    pub interval_seconds: f64,
    pub shards: usize,
    /// Every counter summed over the shards, since start.
    pub counters: BTreeMap<&'static str, u64>,
    /// Every counter's increase per second over the last interval.
    pub rates: BTreeMap<&'static str, f64>,
    /// Every gauge summed over the shards, now.
    pub gauges: BTreeMap<&'static str, u64>,
    pub per_shard: Vec<ShardFigures>,
    /// Percentiles of each latency histogram over the last samples, µs.
    pub latency_us: BTreeMap<&'static str, Percentiles>,
    pub webhooks: WebhookFigures,
}

/// One shard's counters, rates and gauges.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ShardFigures {
    pub shard: usize,
    pub counters: BTreeMap<&'static str, u64>,
    pub rates: BTreeMap<&'static str, f64>,
    pub gauges: BTreeMap<&'static str, u64>,
}

/// Percentiles of one histogram, µs, and how many values they are drawn from.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The webhook dispatcher's figures (all zero when no webhook is configured).
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct WebhookFigures {
    pub endpoints: u64,
    /// Events taken from the shards' queue.
    pub events_received: u64,
    /// Events that reached an endpoint (counted once per endpoint).
    pub events_delivered: u64,
    /// Events dropped because the shards' queue was full.
    pub dropped_queue_full: u64,
    /// Events dropped because an endpoint already held its most pending events.
    pub dropped_pending_full: u64,
    /// Events dropped because an endpoint refused their batch (a 4xx answer).
    pub dropped_rejected: u64,
    /// Events waiting for an endpoint, now.
    pub pending: u64,
    /// Requests that failed (and will be retried).
    pub failed_requests: u64,
}

/// What the sampler reads.
pub struct Sources {
    /// Each shard's counters and histograms, in shard order.
    pub shards: Vec<broker::ShardFigures>,
    pub started: Instant,
    pub webhooks: Option<Arc<WebhookStats>>,
}

/// The last sample and what the next one needs.
pub struct Sampler {
    sources: Sources,
    state: Mutex<SamplerState>,
}

/// Every shard's counters as `ShardFigures::snapshot` gives them, in shard order.
type Counters = Vec<Vec<(&'static str, Kind, u64)>>;

struct SamplerState {
    /// The last sample's time and counters, which the next sample's rates start from.
    previous: Option<(Instant, Counters)>,
    /// The shards' histograms merged, one set per kind (the broker's, the runtime's), at
    /// each of the last samples.
    merged: VecDeque<Vec<HistSet>>,
    last: Arc<Stats>,
}

impl Sampler {
    pub fn new(sources: Sources) -> Sampler {
        Sampler {
            sources,
            state: Mutex::new(SamplerState {
                previous: None,
                merged: VecDeque::new(),
                last: Arc::default(),
            }),
        }
    }

    /// The last sample (taking the first one if none has been taken).
    pub fn latest(&self) -> Arc<Stats> {
        let never_sampled = self
            .state
            .lock()
            .map(|s| s.previous.is_none())
            .unwrap_or(false);
        if never_sampled {
            self.sample();
        }
        self.state
            .lock()
            .map(|s| s.last.clone())
            .unwrap_or_default()
    }

    /// Samples every [`SAMPLE_INTERVAL`] for as long as the runtime runs.
    pub async fn run(self: Arc<Sampler>) {
        let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample();
        }
    }

    /// Reads the shards and computes a new [`Stats`].
    pub fn sample(&self) {
        let now = Instant::now();
        let snapshots: Counters = self.sources.shards.iter().map(|s| s.snapshot()).collect();
        // Each shard gives its sets in the same order; the k-th of every shard add up.
        let mut merged: Vec<HistSet> = Vec::new();
        for sets in metrics::histogram_sets(&self.sources.shards) {
            for (k, h) in sets.iter().enumerate() {
                let Ok(h) = h.lock() else { continue };
                match merged.get_mut(k) {
                    Some(m) => m.add(&h),
                    None => merged.push(h.clone()),
                }
            }
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let previous = state.previous.take();
        let (interval, before) = match &previous {
            Some((at, snaps)) => (now.duration_since(*at).as_secs_f64(), Some(snaps)),
            None => (0.0, None),
        };
        let mut stats = Stats {
            uptime_seconds: self.sources.started.elapsed().as_secs_f64(),
            sampled_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            interval_seconds: interval,
            shards: snapshots.len(),
            ..Stats::default()
        };
        for (shard, snap) in snapshots.iter().enumerate() {
            let mut figures = ShardFigures {
                shard,
                ..ShardFigures::default()
            };
            for (i, &(name, kind, value)) in snap.iter().enumerate() {
                if kind == Kind::Gauge {
                    figures.gauges.insert(name, value);
                    *stats.gauges.entry(name).or_default() += value;
                    continue;
                }
                let old = before.and_then(|b| b.get(shard)).and_then(|s| s.get(i));
                let rate = match old {
                    Some(&(_, _, old)) if interval > 0.0 => {
                        value.saturating_sub(old) as f64 / interval
                    }
                    _ => 0.0,
                };
                figures.counters.insert(name, value);
                figures.rates.insert(name, rate);
                *stats.counters.entry(name).or_default() += value;
                *stats.rates.entry(name).or_default() += rate;
            }
            stats.per_shard.push(figures);
        }

        // Percentiles over the window: the newest merged copy less the oldest kept one.
        let oldest = state.merged.front();
        for (name, h) in merged.iter().flat_map(HistSet::named) {
            let mut recent = h.clone();
            if let Some(old) = oldest {
                let old = old
                    .iter()
                    .flat_map(HistSet::named)
                    .find(|(n, _)| *n == name)
                    .map(|(_, h)| h);
                if let Some(old) = old
                    && recent.subtract(old).is_err()
                {
                    // The shards' copies only grow; if one was reset, use it whole.
                    recent = h.clone();
                }
            }
            stats.latency_us.insert(name, Percentiles::of(&recent));
        }
        state.merged.push_back(merged);
        while state.merged.len() > LATENCY_WINDOW {
            state.merged.pop_front();
        }

        if let Some(w) = &self.sources.webhooks {
            stats.webhooks = w.figures();
        }
        state.previous = Some((now, snapshots));
        state.last = Arc::new(stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(shards: usize) -> Sampler {
        Sampler::new(Sources {
            shards: (0..shards)
                .map(|_| broker::ShardFigures::default())
                .collect(),
            started: Instant::now(),
            webhooks: None,
        })
    }

    #[test]
    fn rates_come_from_successive_samples() {
        let s = sampler(2);
        s.sources.shards[0].broker.messages_in.add(100);
        s.sources.shards[1].runtime.connections_current.add(3);
        s.sample();
        let first = s.latest();
        assert_eq!(first.counters["messages_in"], 100);
        assert_eq!(first.rates["messages_in"], 0.0, "no rate from one sample");
        assert_eq!(first.gauges["connections_current"], 3);
        assert!(!first.counters.contains_key("connections_current"));
        assert!(!first.gauges.contains_key("messages_in"));

        std::thread::sleep(Duration::from_millis(50));
        s.sources.shards[0].broker.messages_in.add(40);
        s.sources.shards[1].broker.messages_in.add(10);
        s.sample();
        let second = s.latest();
        let expected = 50.0 / second.interval_seconds;
        assert!((second.rates["messages_in"] - expected).abs() < 1e-6);
        assert_eq!(second.per_shard[1].counters["messages_in"], 10);
        assert!(
            (second.per_shard[0].rates["messages_in"] - 40.0 / second.interval_seconds).abs()
                < 1e-6
        );
    }

    #[test]
    fn latency_covers_the_window_only() {
        let s = sampler(1);
        for _ in 0..100 {
            s.sources.shards[0]
                .broker_hists
                .lock()
                .unwrap()
                .get_mut(0)
                .record(5000)
                .unwrap();
        }
        s.sample();
        assert_eq!(s.latest().latency_us["publish_to_delivery"].count, 100);
        for _ in 0..10 {
            s.sources.shards[0]
                .broker_hists
                .lock()
                .unwrap()
                .get_mut(0)
                .record(10)
                .unwrap();
        }
        s.sample();
        let p = s.latest().latency_us["publish_to_delivery"];
        assert_eq!(
            p.count, 10,
            "the first sample's values are outside the window"
        );
        assert!(p.p99 <= 11, "{p:?}");
        for _ in 0..LATENCY_WINDOW + 1 {
            s.sample();
        }
        assert_eq!(s.latest().latency_us["publish_to_delivery"].count, 0);
    }
}
