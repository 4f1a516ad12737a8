//! ringmq: a thread-per-core io_uring MQTT broker. The binary (`main.rs`) only wires these
//! modules together; in the order a run and its messages pass through them:
//!
//! - [`config`]: flags and the config file → one checked `Settings`.
//! - [`system`]: the host: open-file limit, affinity, signal mask, port reservations.
//! - [`tls`]: the TLS listeners' certificates, read from PEM files (again on SIGHUP).
//! - [`server`]: starts one shard per placement entry (the `ringmq_shard` runtime serving a
//!   [`broker::Broker`] each), announces, waits for signals, stops.
//! - [`broker`]: the MQTT service a shard runs: packets in, sessions, subscriptions,
//!   fan-out, QoS flows, the cross-shard protocol, `$SYS`.
//! - [`auth`]: authentication (password file, JWT, verification pool) and authorization
//!   (ACL file, token claims), decided off the shards' loops and checked on them.
//! - [`limits`]: what every shard shares to limit connections: per source address, and
//!   flapping bans.
//! - [`store`]: the per-shard write-ahead log, recovery, snapshots and compaction that
//!   make persistent sessions, offline queues, in-flight messages, wills and retained
//!   messages durable.
//! - [`cluster`]: several nodes joined through NATS (`--cluster`): what crosses nodes,
//!   the NATS client on the control plane's runtime, the topic ↔ subject mapping.
//! - [`control`]: the control plane on its own threads: the HTTP server (dashboard, JSON
//!   API, `/metrics`, `/healthz`, `/debug/histograms`), webhooks, logging.
//!
//! The threading contract is checked at compile time: what crosses shards is `Send`, a
//! shard's own state is not.
//!
//! ```
//! fn assert_send<T: Send>() {}
//! assert_send::<ringmq::broker::Msg>();
//! assert_send::<ringmq_shard::runtime::ShardSpec<ringmq::broker::Msg, ringmq::broker::AdminRequest>>();
//! ```
//!
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<ringmq_shard::io::Io<ringmq::broker::Broker>>();
//! ```

pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod control;
pub mod limits;
pub mod server;
pub mod store;
pub mod system;
pub mod tls;
