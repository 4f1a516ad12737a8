//! What the main thread and the workers share: the phase of the run with its start and
//! end times, and per-worker counters. A worker writes its own counters once per loop
//! turn (relaxed stores to a cache line nobody else writes); the main thread reads them
//! for progress lines and the throughput time series. Latency histograms do not pass
//! through here: each worker records into its own and hands one over per second
//! ([`IntervalMsg`]), so the hot path takes no lock.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// Clients connect and subscribe; nobody publishes.
pub const PHASE_CONNECT: u8 = 0;
/// Publishers publish between `publish_start_ns` and `measure_end_ns`.
pub const PHASE_RUN: u8 = 1;
/// Everyone disconnects and the workers end.
pub const PHASE_STOP: u8 = 2;

/// Latency histograms: 1 µs to one hour, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

pub struct Control {
    pub phase: AtomicU8,
    /// CLOCK_MONOTONIC ns; written before `phase` is set to RUN (release), read after it
    /// (acquire).
    pub publish_start_ns: AtomicU64,
    pub measure_start_ns: AtomicU64,
    pub measure_end_ns: AtomicU64,
    /// When the workers were started (connection pacing counts from here).
    pub start_ns: u64,
    /// Tells this run's messages from any other's.
    pub run_id: u32,
    pub workers: Vec<WorkerStats>,
}

impl Control {
    pub fn new(workers: usize, run_id: u32, start_ns: u64) -> Control {
        Control {
            phase: AtomicU8::new(PHASE_CONNECT),
            publish_start_ns: AtomicU64::new(u64::MAX),
            measure_start_ns: AtomicU64::new(u64::MAX),
            measure_end_ns: AtomicU64::new(u64::MAX),
            start_ns,
            run_id,
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
        }
    }

    pub fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    /// Starts publishing now (`start`), measuring from `measure_start`, until `end`.
    pub fn start_run(&self, start: u64, measure_start: u64, end: u64) {
        self.publish_start_ns.store(start, Ordering::Relaxed);
        self.measure_start_ns
            .store(measure_start, Ordering::Relaxed);
        self.measure_end_ns.store(end, Ordering::Relaxed);
        self.phase.store(PHASE_RUN, Ordering::Release);
    }

    pub fn stop(&self) {
        self.phase.store(PHASE_STOP, Ordering::Release);
    }

    /// The sum of all workers' counters.
    pub fn totals(&self) -> Counters {
        let mut sum = Counters::default();
        for w in &self.workers {
            sum.add(&w.load());
        }
        sum
    }
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// A worker's counters (summed over workers by `add`).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
        pub struct Counters {
            $($(#[$doc])* pub $name: u64,)*
        }

        /// The shared copy of one worker's [`Counters`], on its own cache lines.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct WorkerStats {
            $($name: AtomicU64,)*
        }

        impl WorkerStats {
            pub fn store(&self, c: &Counters) {
                $(self.$name.store(c.$name, Ordering::Relaxed);)*
            }

            pub fn load(&self) -> Counters {
                Counters { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl Counters {
            pub fn add(&mut self, o: &Counters) {
                $(self.$name += o.$name;)*
            }
        }
    };
}

counters! {
    /// Clients connected, subscribed and ready now.
    ready,
    /// TCP connections established now.
    open,
    /// Clients that have had a CONNACK at least once.
    first_connacks,
    /// CONNACKs with success, reconnections included.
    connacks,
    /// When this worker's last client got its first CONNACK (CLOCK_MONOTONIC ns).
    last_first_connack_ns,
    /// Messages published (encoded and queued), all phases.
    published,
    /// Messages published with a send time inside the measured window.
    published_measured,
    /// Publishes not made because publishers fell more than a second behind the rate
    /// (blocked by the in-flight window, or disconnected).
    publish_skipped,
    /// Unacknowledged QoS 1/2 publishes now.
    inflight,
    /// Publishes the broker refused (MQTT 5 PUBACK/PUBREC reason ≥ 0x80).
    publish_refused,
    /// Deliveries of this run's messages, duplicates included.
    received,
    /// Deliveries that were not duplicates.
    unique,
    duplicates,
    out_of_order,
    /// Messages missing in sequence gaps now (live loss figure).
    missing,
    /// Unique deliveries of messages sent inside the measured window.
    delivered_measured,
    /// Messages that were not this run's (no swarm header, another run, a topic the
    /// client did not subscribe to).
    foreign,
    /// Connection attempts after a lost or failed one, or after leaving to connect
    /// again (`--reconnect-every`).
    reconnects,
    /// Times a client left to connect again (`--reconnect-every`).
    rejoins,
    /// Established connections lost (closed by the broker, reset, protocol error).
    disconnects,
    /// Attempts that failed before TCP was up (socket, bind, connect errors).
    connect_failures,
    /// CONNACKs refusing the connection.
    connack_refused,
    /// SUBACKs refusing the subscription.
    suback_refused,
    /// Attempts that did not reach ready within --connect-timeout.
    timeouts,
    /// Malformed or unexpected packets or frames from the broker.
    protocol_errors,
    /// PINGREQs sent.
    pings,
    /// Multishot receives that ran out of provided buffers (re-armed).
    recv_nobufs,
    /// Loop turns (one `io_uring_enter` each) and completions handled.
    turns,
    completions,
}

/// The `index` of a worker's last message: it has ended.
pub const WORKER_DONE: u64 = u64::MAX;

/// One second of latencies from one worker: `index` counts seconds since measuring
/// started (or is [`WORKER_DONE`]); `hist` is `None` when the worker recorded nothing in
/// that second. A message for `index` also says the worker is done with every earlier one.
pub struct IntervalMsg {
    pub worker: usize,
    pub index: u64,
    pub hist: Option<Histogram<u64>>,
}
