//! ringmq-swarm: an io_uring MQTT client swarm for load tests against any MQTT broker.
//!
//! In the order a run flows through them:
//!
//! - [`config`]: the command line and the checked [`config::Config`] (target URL,
//!   source-address ranges, every knob).
//! - [`plan`]: who does what in a scenario (fanout, fanin, pairs, connect, idle): which
//!   client subscribes to which topic, which publishes where.
//! - [`run`]: the main thread. Starts one [`worker`] per thread, moves the run through its
//!   phases (connect → publish: warm-up, measured window, drain → stop) through
//!   [`control`], samples progress and the broker's `/proc` entry, collects the results.
//! - [`worker`]: one thread, one io_uring ring (the runtime's, `ringmq_shard::ring`: a
//!   fixed-file table and a provided-buffer ring), thousands of client state machines;
//!   received bytes go through
//!   [`stream`] (frames and packets decoded in place with the workspace codec,
//!   `ringmq_proto`, split ones completed in a carry buffer).
//! - [`payload`] is the header each message carries (publisher, sequence, send time);
//!   [`seq`] counts loss, duplicates and reordering per (subscriber, publisher);
//!   [`backoff`] paces reconnections; [`sys`] reads clocks, CPU time and `/proc`.
//! - [`report`]: the one-screen summary, JSON, the HdrHistogram interval log, and the
//!   self-contained HTML report with SVG plots.

pub mod backoff;
pub mod config;
pub mod control;
pub mod payload;
pub mod plan;
pub mod report;
pub mod run;
pub mod seq;
pub mod stream;
pub mod sys;
pub mod worker;
