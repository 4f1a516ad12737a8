//! Latency histograms, in microseconds (HdrHistogram, 2 significant digits, 1 µs to 60 s,
//! so each is ~50 KB whatever it records). The runtime keeps two per shard
//! ([`RUNTIME`]):
//!
//! - `mesh_hop`: from the turn that sent a cross-shard message to the turn that
//!   received it;
//! - `loop_turn`: one turn of the shard loop, from reaping completions to submitting.
//!
//! A service keeps its own set the same way (the broker's `publish_to_delivery`).
//!
//! A shard records into its own histograms (no lock, no allocation: the range is fixed
//! and auto-resize is off). Once a second it adds them into a shared copy behind a mutex
//! and resets its own; the metrics thread reads the shared copy to dump it.

use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

/// Highest value recorded, µs; larger values are counted as this.
const MAX_US: u64 = 60_000_000;

/// The runtime's histograms, in dump order.
pub const RUNTIME: &[&str] = &["mesh_hop", "loop_turn"];
/// Indexes into a set of [`RUNTIME`] histograms.
pub const MESH_HOP: usize = 0;
pub const LOOP_TURN: usize = 1;

fn new_hist() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, MAX_US, 2).expect("valid histogram bounds");
    h.auto(false);
    h
}

/// A set of named histograms.
#[derive(Clone)]
pub struct HistSet {
    names: &'static [&'static str],
    hists: Vec<Histogram<u64>>,
}

impl HistSet {
    /// One empty histogram per name.
    pub fn new(names: &'static [&'static str]) -> HistSet {
        HistSet {
            names,
            hists: names.iter().map(|_| new_hist()).collect(),
        }
    }

    /// The histograms with their names, in the order the set was made with.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, &Histogram<u64>)> {
        self.names.iter().copied().zip(&self.hists)
    }

    /// The histogram at `i` (an index into the names).
    pub fn get_mut(&mut self, i: usize) -> &mut Histogram<u64> {
        &mut self.hists[i]
    }

    /// Adds every histogram of `other` (a set with the same names) into this one.
    pub fn add(&mut self, other: &HistSet) {
        debug_assert_eq!(self.names, other.names);
        for (mine, theirs) in self.hists.iter_mut().zip(&other.hists) {
            // Same bounds on both sides: addition cannot fail.
            let _ = mine.add(theirs);
        }
    }

    fn reset(&mut self) {
        self.hists.iter_mut().for_each(Histogram::reset);
    }
}

/// The shared copy of a shard's histograms, read by the metrics thread.
pub type SharedHists = Arc<Mutex<HistSet>>;

/// An empty shared set of the histograms `names`.
pub fn shared(names: &'static [&'static str]) -> SharedHists {
    Arc::new(Mutex::new(HistSet::new(names)))
}

/// What a shard records into, and publishes to its shared copy once a second.
pub struct Recorder {
    local: HistSet,
    shared: SharedHists,
}

impl Recorder {
    /// Records into a set with the names of `shared`.
    pub fn new(shared: SharedHists) -> Recorder {
        let names = shared.lock().map_or(&[][..], |s| s.names);
        Recorder {
            local: HistSet::new(names),
            shared,
        }
    }

    /// Records `us` in histogram `i`, `count` times.
    pub fn record_n(&mut self, i: usize, us: u64, count: u64) {
        if count > 0 {
            self.local
                .get_mut(i)
                .saturating_record_n(us.clamp(1, MAX_US), count);
        }
    }

    /// Records `us` in histogram `i`.
    pub fn record(&mut self, i: usize, us: u64) {
        self.record_n(i, us, 1);
    }

    /// Adds what was recorded since the last call to the shared copy.
    pub fn publish(&mut self) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.add(&self.local);
        }
        self.local.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_reach_the_shared_copy_and_clamp() {
        let shared = shared(RUNTIME);
        let mut r = Recorder::new(shared.clone());
        r.record_n(MESH_HOP, 10, 3);
        r.record_n(MESH_HOP, 10, 0);
        r.record(MESH_HOP, 0);
        r.record(LOOP_TURN, u64::MAX);
        r.publish();
        r.record(LOOP_TURN, 5);
        let s = shared.lock().unwrap();
        let h: Vec<_> = s.named().collect();
        assert_eq!((h[0].0, h[1].0), ("mesh_hop", "loop_turn"));
        assert_eq!(h[0].1.len(), 4);
        assert_eq!(h[0].1.min(), 1, "0 µs is counted as 1 µs");
        assert_eq!(h[1].1.len(), 1, "unpublished values stay local");
        assert!(h[1].1.max() >= MAX_US / 2);
    }
}
