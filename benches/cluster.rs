//! The cluster's table of other nodes' interest (`RemoteInterest`): what one rebuild
//! costs as the number of remote filters grows (the link rebuilds it after each batch of
//! interest changes, no more often than the last rebuild took), and what a shard's
//! lookup on each publish costs.
//!
//! `cargo bench -p ringmq --bench cluster`. Compare figures within one run (the machine
//! is shared and noisy), not across runs.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use ringmq::cluster::remote::{Kind, RemoteInterest};

/// `filters` per-device filters (`dev/N/#`, the advertised prefix of a device's own
/// subscriptions) spread over three nodes, and a shared group on each node.
fn interest(filters: usize) -> BTreeMap<Arc<str>, BTreeSet<(Kind, Box<str>)>> {
    let mut all: BTreeMap<Arc<str>, BTreeSet<(Kind, Box<str>)>> = BTreeMap::new();
    for i in 0..filters {
        let node: Arc<str> = format!("node{}", i % 3).into();
        all.entry(node)
            .or_default()
            .insert((Kind::Plain, format!("dev/{i}/#").into()));
    }
    for n in 0..3 {
        all.entry(format!("node{n}").into())
            .or_default()
            .insert((Kind::Group, "ingest/+/data".into()));
    }
    all
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("remote_interest");
    g.sample_size(10);
    for filters in [10_000usize, 100_000, 1_000_000] {
        let all = interest(filters);
        g.bench_function(format!("build {filters} filters"), |b| {
            b.iter(|| black_box(RemoteInterest::build(black_box(&all))))
        });
        let table = RemoteInterest::build(&all);
        let topic = format!("dev/{}/state", filters / 2);
        g.bench_function(format!("reach among {filters} filters"), |b| {
            b.iter(|| black_box(table.reach(black_box(&topic))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
