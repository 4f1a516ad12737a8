//! Dumps of the shards' latency histograms (µs) as one HdrHistogram interval log: a
//! histogram per shard and per kind (`shard0.publish_to_delivery`, …) and the same kinds
//! merged over all shards (`merged.loop_turn`, …). `ringmq-hist print` reads it.
//! Served at `GET /debug/histograms` and written to the data directory on SIGUSR1.

use std::time::{Duration, SystemTime};

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use ringmq_shard::hist::{HistSet, SharedHists};

/// The interval log of every shard's histograms since the broker started: `shards[i]`
/// holds shard `i`'s sets of histograms, in the same order for every shard.
pub fn dump(shards: &[Vec<SharedHists>], uptime: Duration) -> Vec<u8> {
    let snapshot = |h: &SharedHists| match h.lock() {
        Ok(set) => set.clone(),
        // A shard that panicked while publishing left its last figures: still worth seeing.
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let snapshots: Vec<Vec<HistSet>> = shards
        .iter()
        .map(|sets| sets.iter().map(snapshot).collect())
        .collect();
    let mut merged: Vec<HistSet> = snapshots.first().cloned().unwrap_or_default();
    for shard in snapshots.iter().skip(1) {
        for (m, s) in merged.iter_mut().zip(shard) {
            m.add(s);
        }
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
    for (prefix, sets) in sets {
        for (name, h) in sets.iter().flat_map(HistSet::named) {
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
    use ringmq_shard::hist::{self, LOOP_TURN};

    #[test]
    fn dump_has_every_shard_and_the_merged_set() {
        let shard = |us| {
            let runtime = hist::shared(hist::RUNTIME);
            runtime
                .lock()
                .unwrap()
                .get_mut(LOOP_TURN)
                .record(us)
                .unwrap();
            vec![hist::shared(crate::broker::HISTOGRAMS), runtime]
        };
        let text = dump(&[shard(10), shard(30)], Duration::from_secs(3));
        let mut tags = Vec::new();
        let mut merged_loop_turn = 0;
        for entry in IntervalLogIterator::new(&text) {
            if let Ok(LogEntry::Interval(h)) = entry {
                let tag = h.tag().map(|t| t.as_str().to_string()).unwrap_or_default();
                if tag == "merged.loop_turn" {
                    use base64::Engine as _;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(h.encoded_histogram())
                        .unwrap();
                    let merged: hdrhistogram::Histogram<u64> =
                        hdrhistogram::serialization::Deserializer::new()
                            .deserialize(&mut &bytes[..])
                            .unwrap();
                    merged_loop_turn = merged.len();
                }
                tags.push(tag);
            }
        }
        assert_eq!(
            tags,
            [
                "shard0.publish_to_delivery",
                "shard0.log_sync",
                "shard0.mesh_hop",
                "shard0.loop_turn",
                "shard1.publish_to_delivery",
                "shard1.log_sync",
                "shard1.mesh_hop",
                "shard1.loop_turn",
                "merged.publish_to_delivery",
                "merged.log_sync",
                "merged.mesh_hop",
                "merged.loop_turn",
            ]
        );
        assert_eq!(merged_loop_turn, 2, "both shards' turns");
    }
}
