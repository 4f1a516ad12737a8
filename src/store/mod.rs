//! The per-shard write-ahead log: what makes persistent sessions, their queues and
//! in-flight messages, wills and retained messages survive a restart or a crash.
//!
//! Each shard owns one log in its own directory and nothing else touches it. The
//! modules, in the order data flows through them:
//!
//! - [`record`]: the vocabulary, one [`Record`] per change of durable state, and its
//!   encoding: length-prefixed frames with a CRC32C and the record's LSN.
//! - [`state`]: the [`State`] the records build (sessions, messages stored once per
//!   shard with reference counts, retained messages). [`State::apply`] is the one
//!   function both the live path and recovery use. Also [`redistribute`], for a
//!   restart with another shard count.
//! - [`log`]: the writer ([`Log`]): records into the current turn's buffer, one batch
//!   per turn for the driver, durability watermarks, modes, disk budget. No I/O.
//! - [`shard_store`]: [`ShardStore`], a shard's state + log + compaction: the calls a
//!   shard loop makes.
//! - [`segment`]: segment and snapshot files (header, names) and the scan of a
//!   segment's records turn by turn.
//! - [`snapshot`]: snapshots (the state written back as records, copy on write so a
//!   shard never stops for one) and the compaction policy.
//! - [`recover`]: rebuilding a shard from its files, cutting off a torn tail and
//!   refusing damage anywhere else, several shards in parallel.
//! - [`lock`] and [`open`]: the data directory at startup: lock, manifest, recovery,
//!   repair, change of shard count.
//! - [`ring_driver`]: the driver a shard runs: writes and syncs through its own ring,
//!   file work on its helper thread.
//! - [`fs_driver`]: a blocking `std::fs` driver for tests, tools and startup.
//! - [`fuzz`]: the checks behind the fuzz targets.
//!
//! The on-disk format is written down in `src/store/FORMAT.md`.
//!
//! # The driver seam: how a shard drives its store without blocking
//!
//! The store does no I/O of its own; a driver does it and reports back. A shard's loop
//! turn, with its io_uring ring:
//!
//! 1. **Completions.** For the log's write completion call
//!    [`ShardStore::written`]`(batch.last_lsn)`; for its `fdatasync`,
//!    [`ShardStore::synced`]; for a failure, [`ShardStore::failed`] with
//!    [`Failure::NoSpace`] for `-ENOSPC`/`-EDQUOT` on the write, [`Failure::Io`]
//!    otherwise (any failed sync stops the log: after a failed `fdatasync` nobody knows
//!    what reached the disk).
//! 2. **Packets.** Every change of durable state is a [`ShardStore::append`]; it applies
//!    the record to the state and returns its [`Lsn`]. An acknowledgement that promises
//!    durability (PUBACK or PUBREC of a message stored for a persistent session or
//!    retained; PUBCOMP after [`Record::InboundReleased`], so that a reused packet id is
//!    not taken for a duplicate) is parked on the LSN of the turn's last record instead
//!    of being sent. Before the first record of a packet that grows the state, check
//!    [`ShardStore::refusing`] (or handle [`AppendError::Refused`] on that first
//!    record): a refused QoS 1/2 PUBLISH is answered 0x97 Quota exceeded (MQTT 5) or its
//!    connection closed without an answer (3.1.1). The refusal only changes between
//!    turns, so the records of one packet are all taken or all refused.
//! 3. **End of turn.** [`ShardStore::take_batch`]`(now)` closes the turn (a commit
//!    record) and, when no batch is in flight, returns one: submit an `IORING_OP_WRITE`
//!    of [`ShardStore::batch_bytes`] at `batch.offset` on the segment's fixed file and,
//!    if `batch.sync`, an `IORING_OP_FSYNC` with `IORING_FSYNC_DATASYNC` linked to it
//!    (`IOSQE_IO_LINK`). The bytes stay put until the batch completes. A short write
//!    is continued by the driver; `written` means all of it. `len == 0` is a sync
//!    alone. Then release every parked acknowledgement whose LSN is
//!    `<=` [`ShardStore::durable_lsn`], in order. Arm a timeout for
//!    [`ShardStore::next_deadline_ms`] (syncs in write mode, retries after ENOSPC).
//! 4. **Compaction**, when [`ShardStore::compaction_due`]`(now)`: [`ShardStore::begin_snapshot`]
//!    between turns, then each turn one [`ShardStore::snapshot_chunk`] (about
//!    `snapshot_chunk_bytes` of work, copy on write: a record that changes a session the
//!    snapshot has not reached writes that session first) until the last.
//!
//! What goes where:
//!
//! | operation | where | why |
//! |---|---|---|
//! | append, encode, CRC, apply | the shard | memory only, microseconds |
//! | segment `write` + linked `fdatasync` | the shard's ring | the hot path; never blocks |
//! | snapshot serialisation | the shard, one chunk a turn | no copy of the state, no stall |
//! | snapshot chunk writes, sync, `rename`, directory sync | helper thread | metadata operations can wait on the file system's journal for milliseconds |
//! | segment creation (`open` + directory sync) | helper thread, ahead of need | a batch with `create` needs its file; the helper keeps the next segment ([`Batch::seq`]) created and registered in the ring's fixed-file table |
//! | deleting obsolete files + directory sync | helper thread | [`ShardStore::take_obsolete`], then [`ShardStore::file_deleted`] each |
//! | recovery, repair, change of shard count | startup, [`open::open`] | before any shard runs; a thread per shard |
//!
//! The helper thread (`ringmq_shard::helper`) talks to its shard over a bounded channel
//! and the shard's doorbell; [`ring_driver::RingDriver`] is the driver a shard runs, the
//! [`FsDriver`] does the same work blocking, for tests and tools.
//!
//! # Durability modes
//!
//! [`Durability::Fsync`] (acknowledge after `fdatasync`: survives power loss),
//! [`Durability::Write`] (after the write; synced every `fsync_interval_ms`: survives a
//! crash of the process), [`Durability::None`] (no store is built; memory only).
//!
//! # Bounds
//!
//! Every record field has a cap ([`record::MAX_MESSAGE`], strings 65,535 bytes, 4
//! subscription identifiers per delivery); the disk budget `max_data_bytes` counts
//! segments, snapshots and room for one more snapshot; the turn buffer holds what is
//! appended while one batch is in flight ([`Log::pending_bytes`], for back-pressure);
//! refusals are counted in [`LogStats`].

pub mod fs_driver;
pub mod fuzz;
pub mod lock;
pub mod log;
pub mod open;
pub mod record;
pub mod recover;
pub mod ring_driver;
pub mod segment;
pub mod shard_store;
pub mod snapshot;
pub mod state;

pub use fs_driver::FsDriver;
pub use log::{Batch, Durability, Failure, Log, LogConfig, LogStats, Refusal};
pub use record::{Deadline, Delivery, Lsn, MsgId, Record, SessionKey};
pub use shard_store::{AppendError, ShardStore, StoreConfig};
pub use state::{State, redistribute};
