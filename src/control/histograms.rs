//! Dumps of the shards' latency histograms (µs) as one HdrHistogram interval log: a
//! histogram per shard and per kind (`shard0.publish_to_delivery`, …) and the same kinds
//! merged over all shards (`merged.loop_turn`, …). `ringmq-hist print` reads it.
//! Served at `GET /debug/histograms` and written to the data directory on SIGUSR1.

use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use ringmq_shard::hist::{HistSet, SharedHists};

/// The interval log of every shard's histograms since the broker started.
pub fn dump(shards: &[SharedHists], uptime: Duration) -> Vec<u8> {
    let mut merged = HistSet::default();
    let snapshots: Vec<HistSet> = shards
        .iter()
        .map(|h| h.lock().map(|h| h.clone()).unwrap_or_default())
        .collect();
    for s in &snapshots {
        merged.add(s);
    }
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let start = SystemTime::now() - uptime;
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment("ringmq latency histograms, microseconds, since start")
        .with_start_time(start)
        .with_base_time(start);
    let Ok(mut log) = builder.begin_log_with(&mut out, &mut serializer) else {
        return Vec::new();
    };
    let sets = snapshots
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("shard{i}"), s))
        .chain(std::iter::once(("merged".to_string(), &merged)));
    for (prefix, set) in sets {
        for (name, h) in set.named() {
            let tag = format!("{prefix}.{name}");
            // Tags may not contain spaces or commas; these never do.
            let _ = log.write_histogram(h, Duration::ZERO, uptime, Tag::new(&tag));
        }
    }
    drop(log);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use std::sync::Arc;

    #[test]
    fn dump_has_every_shard_and_the_merged_set() {
        let a: SharedHists = Arc::default();
        let b: SharedHists = Arc::default();
        a.lock().unwrap().loop_turn.record(10).unwrap();
        b.lock().unwrap().loop_turn.record(30).unwrap();
        let text = dump(&[a, b], Duration::from_secs(3));
        let mut tags = Vec::new();
        for entry in IntervalLogIterator::new(&text) {
            if let Ok(LogEntry::Interval(h)) = entry {
                tags.push(h.tag().map(|t| t.as_str().to_string()).unwrap_or_default());
            }
        }
        assert_eq!(tags.len(), 9);
        assert!(tags.contains(&"shard1.loop_turn".to_string()));
        assert!(tags.contains(&"merged.publish_to_delivery".to_string()));
    }
}
