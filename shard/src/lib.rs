//! ringmq-shard: the per-core runtime of the broker.
//!
//! One shard is one thread pinned to a core, with its own io_uring ring, listeners,
//! connections, sessions and topic table. The modules, in the order a message passes
//! through them:
//!
//! - [`ring`]: the io_uring instance, its fixed-file table (direct descriptors) and the
//!   provided-buffer ring that multishot receives fill.
//! - [`listen`]: `SO_REUSEPORT` listeners, one set per shard.
//! - [`runtime`]: the shard loop: completions → transport → service, then one submit.
//! - [`conn`]: a connection's state machine (operations in flight, WebSocket framing,
//!   outbound bytes); [`io`]: what a service may do with connections.
//! - [`service`]: the contract between the runtime and what it serves.
//! - [`broker`]: the MQTT service: [`session`] (CONNECT, keepalive, packet ids),
//!   [`topics`] (the subscription trie), [`fanout`] (one encode, many deliveries).
//! - [`mesh`]: SPSC rings between shards and the doorbells that wake them.
//! - [`timers`]: the hashed timing wheel for handshake, CONNECT and keepalive deadlines.
//! - [`stats`] (counters), [`hist`] (latency histograms), [`config`].
//!
//! The threading contract is checked at compile time: what crosses shards is `Send`,
//! a shard's own state is not.
//!
//! ```
//! fn assert_send<T: Send>() {}
//! assert_send::<ringmq_shard::broker::Msg>();
//! assert_send::<ringmq_shard::runtime::ShardSpec<ringmq_shard::broker::Msg>>();
//! ```
//!
//! ```compile_fail
//! fn assert_send<T: Send>() {}
//! assert_send::<ringmq_shard::io::Io<ringmq_shard::broker::Broker>>();
//! ```

pub mod broker;
pub mod config;
pub mod conn;
pub mod hist;
pub mod io;
pub mod listen;
pub mod mesh;
pub mod ring;
pub mod runtime;
pub mod service;
pub mod session;
pub mod stats;
pub mod timers;
pub mod topics;
