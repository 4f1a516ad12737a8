//! ringmq-shard: the per-core runtime. It knows bytes, connections and shards; what the
//! bytes mean is the business of the [`service::Service`] it runs (the MQTT broker in the
//! `ringmq` crate, or the WebSocket echo example).
//!
//! One shard is one thread pinned to a core, with its own io_uring ring, listeners and
//! connections. The modules, in the order bytes pass through them:
//!
//! - [`ring`]: the io_uring instance, its fixed-file table (direct descriptors) and the
//!   provided-buffer ring that multishot receives fill (the swarm in `bench/` uses it too).
//! - [`listen`]: `SO_REUSEPORT` listeners, one set per shard.
//! - [`runtime`]: the shard loop: completions → transport → service, then one submit.
//! - [`tls`]: TLS on the shard's own buffers (rustls' unbuffered API), below the other
//!   stages of a connection.
//! - [`conn`]: a connection's state machine (operations in flight, WebSocket framing,
//!   outbound bytes); [`io`]: what a service may do with connections.
//! - [`service`]: the contract between the runtime and what it serves.
//! - [`disk`]: file writes and data syncs through the shard's ring (a log's path), with
//!   the buffers the runtime lends the kernel; [`helper`]: the shard's helper thread for
//!   file work that may block (creating, renaming, deleting, directory syncs).
//! - [`mesh`]: SPSC rings between shards and the doorbells that wake them.
//! - [`timers`]: the hashed timing wheel for every connection's deadline.
//! - [`rate`]: token buckets (GCRA) for the rate limits a runtime or a service applies.
//! - [`stats`] (counters), [`hist`] (latency histograms), [`config`].
//!
//! The threading contract is checked at compile time: what crosses shards is `Send`
//! (the service's own messages are checked where they are defined).
//!
//! ```
//! fn assert_send<T: Send>() {}
//! assert_send::<ringmq_shard::runtime::ShardSpec<Box<[u8]>, Box<[u8]>>>();
//! ```

pub mod config;
pub mod conn;
pub mod disk;
pub mod helper;
pub mod hist;
pub mod io;
pub mod listen;
pub mod mesh;
pub mod rate;
pub mod ring;
pub mod runtime;
pub mod service;
pub mod stats;
pub mod timers;
pub mod tls;
