//! ringmq: the broker as a library, with the binary (`src/main.rs`) on top.
//!
//! - [`store`]: the per-shard write-ahead log, recovery, snapshots and compaction that
//!   make persistent sessions, offline queues, in-flight messages, wills and retained
//!   messages durable.
pub mod store;
