//! Back-pressure, the broker's side. The runtime measures what it can see (bytes queued
//! for sockets, messages waiting for a full peer ring); the broker adds what only it knows,
//! the QoS 1/2 deliveries waiting for connected clients' in-flight windows, as its load,
//! and decides whom to pause: a connection that just published, or whose held packets
//! were just taken up. A paused connection's input is held in order (see `input`), its
//! acknowledgements still taken up.

use ringmq_shard::conn::ConnKey;
use ringmq_shard::io::ServiceLoad;

use super::{Broker, Io};

/// Deliveries a paused connection's held packets may make when taken up, before it may
/// be paused again: about one recv buffer of small one-to-one PUBLISHes, or a single
/// fan-out one (so a resume adds little to a shard already near its pressure bound).
const HELD_DELIVERY_BUDGET: u64 = 256;

/// The broker's part in back-pressure.
#[derive(Default)]
pub(super) struct Pressure {
    /// Deliveries queued for connected clients whose in-flight window is full: the sum of
    /// `queue_len` over sessions with a connection. Told to the runtime as the broker's
    /// load before every back-pressure decision.
    pub waiting: usize,
    /// Taking up a paused connection's held packets (`on_resume`): they are handled
    /// until they have made `HELD_DELIVERY_BUDGET` deliveries, then the connection may
    /// be paused again. A fan-out PUBLISH spends the budget at once; many small
    /// one-to-one ones are taken up together.
    pub taking_up_held: bool,
    /// `deliveries_so_far` when the held packets began to be taken up.
    pub held_budget_from: u64,
}

impl Pressure {
    /// The broker's load: overloaded while more deliveries wait for connected clients'
    /// in-flight windows than `max_waiting`, light again once they are at most half of it.
    pub fn load(&self, max_waiting: usize) -> ServiceLoad {
        if self.waiting > max_waiting {
            ServiceLoad::Overloaded
        } else if self.waiting > max_waiting / 2 {
            ServiceLoad::Heavy
        } else {
            ServiceLoad::Light
        }
    }
}

impl Broker {
    /// Tells the runtime the broker's load.
    pub(super) fn report_load(&self, io: &mut Io) {
        // Messages held for a full cluster queue weigh as a full load: publishers pause.
        let load = if self.cluster.as_ref().is_some_and(|c| c.backlogged()) {
            ServiceLoad::Overloaded
        } else {
            self.pressure.load(self.config().max_deliveries_waiting)
        };
        io.set_service_load(load);
    }

    /// Deliveries made by this shard so far, to its clients or handed to other shards.
    pub(super) fn deliveries_so_far(&self, io: &Io) -> u64 {
        self.stats.messages_out.get() + io.stats().mesh_sent.get()
    }

    /// Back-pressure: pauses a connection that just published (or whose held packets
    /// were just taken up) if the shard is under pressure — except while its held
    /// packets are taken up within their budget.
    pub(super) fn pause_publisher_if_pressured(&self, io: &mut Io, key: ConnKey) {
        if self.pressure.taking_up_held
            && self.deliveries_so_far(io) - self.pressure.held_budget_from < HELD_DELIVERY_BUDGET
        {
            return;
        }
        self.report_load(io);
        if io.pause_if_pressured(key) {
            self.stats.publishers_paused.add(1);
        }
    }
}
