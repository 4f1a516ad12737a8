//! Latency histograms of one shard, in microseconds (HdrHistogram, 2 significant digits,
//! 1 µs to 60 s, so each is ~50 KB whatever it records):
//!
//! - `publish_to_delivery`: from the loop turn in which a PUBLISH arrived to the
//!   submission of that turn's sends (its deliveries on this shard);
//! - `mesh_hop`: from the turn that sent a cross-shard message to the turn that
//!   received it;
//! - `loop_turn`: one turn of the shard loop, from reaping completions to submitting.
//!
//! The shard records into its own histograms (no lock, no allocation: the range is fixed
//! and auto-resize is off). Once a second it adds them into a shared copy behind a mutex
//! and resets its own; the metrics thread reads the shared copy to dump it.

use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

/// Highest value recorded, µs; larger values are counted as this.
const MAX_US: u64 = 60_000_000;

/// The names of a shard's histograms, in dump order.
pub const NAMES: [&str; 3] = ["publish_to_delivery", "mesh_hop", "loop_turn"];

fn new_hist() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, MAX_US, 2).expect("valid histogram bounds");
    h.auto(false);
    h
}

/// A set of the three histograms.
#[derive(Clone)]
pub struct HistSet {
    pub publish_to_delivery: Histogram<u64>,
    pub mesh_hop: Histogram<u64>,
    pub loop_turn: Histogram<u64>,
}

impl Default for HistSet {
    fn default() -> Self {
        HistSet {
            publish_to_delivery: new_hist(),
            mesh_hop: new_hist(),
            loop_turn: new_hist(),
        }
    }
}

impl HistSet {
    /// The histograms with their names, in `NAMES` order.
    pub fn named(&self) -> [(&'static str, &Histogram<u64>); 3] {
        [
            (NAMES[0], &self.publish_to_delivery),
            (NAMES[1], &self.mesh_hop),
            (NAMES[2], &self.loop_turn),
        ]
    }

    /// Adds every histogram of `other` into this set.
    pub fn add(&mut self, other: &HistSet) {
        // Same bounds on both sides: addition cannot fail.
        let _ = self.publish_to_delivery.add(&other.publish_to_delivery);
        let _ = self.mesh_hop.add(&other.mesh_hop);
        let _ = self.loop_turn.add(&other.loop_turn);
    }

    fn reset(&mut self) {
        self.publish_to_delivery.reset();
        self.mesh_hop.reset();
        self.loop_turn.reset();
    }
}

/// The shared copy of a shard's histograms, read by the metrics thread.
pub type SharedHists = Arc<Mutex<HistSet>>;

/// What a shard records into, and publishes to its shared copy once a second.
pub struct Recorder {
    local: HistSet,
    shared: SharedHists,
}

impl Recorder {
    pub fn new(shared: SharedHists) -> Recorder {
        Recorder {
            local: HistSet::default(),
            shared,
        }
    }

    pub fn publish_to_delivery(&mut self, us: u64, count: u64) {
        if count > 0 {
            self.local
                .publish_to_delivery
                .saturating_record_n(us.clamp(1, MAX_US), count);
        }
    }

    pub fn mesh_hop(&mut self, us: u64) {
        self.local.mesh_hop.saturating_record(us.clamp(1, MAX_US));
    }

    pub fn loop_turn(&mut self, us: u64) {
        self.local.loop_turn.saturating_record(us.clamp(1, MAX_US));
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
        let shared: SharedHists = Arc::default();
        let mut r = Recorder::new(shared.clone());
        r.publish_to_delivery(10, 3);
        r.publish_to_delivery(10, 0);
        r.mesh_hop(0);
        r.loop_turn(u64::MAX);
        r.publish();
        r.loop_turn(5);
        let s = shared.lock().unwrap();
        assert_eq!(s.publish_to_delivery.len(), 3);
        assert_eq!(s.mesh_hop.min(), 1, "0 µs is counted as 1 µs");
        assert_eq!(s.loop_turn.len(), 1, "unpublished values stay local");
        assert!(s.loop_turn.max() >= MAX_US / 2);
    }
}
