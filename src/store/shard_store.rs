//! One shard's store: its [`State`], its [`Log`], and compaction, behind the calls a
//! shard loop makes (see the driver seam in the module documentation of `store`).

use std::collections::BTreeMap;

use super::log::{Batch, Failure, Log, LogConfig, LogStats, Refusal, Resume};
use super::record::{Lsn, MsgId, Record, RecordError, SessionKey};
use super::recover::RecoveredShard;
use super::segment::StoreFile;
use super::snapshot::{CompactionPolicy, SnapshotChunk};
use super::state::{ApplyError, State};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    pub log: LogConfig,
    pub compaction: CompactionPolicy,
    /// About how many bytes of a snapshot are made per call of
    /// [`ShardStore::snapshot_chunk`] (a loop turn's share of the work).
    pub snapshot_chunk_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            log: LogConfig::default(),
            compaction: CompactionPolicy::default(),
            snapshot_chunk_bytes: 256 << 10,
        }
    }
}

/// Why [`ShardStore::append`] did not take a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendError {
    /// A record that grows the state, refused for lack of room (MQTT 5: PUBACK/PUBREC
    /// 0x97 Quota exceeded; 3.1.1: disconnect without acknowledging), or any record once
    /// the log has failed.
    Refused(Refusal),
    /// A field is over its cap.
    Invalid(RecordError),
    /// The record does not fit the state (a bug of the caller).
    Rejected(ApplyError),
}

/// The store of one shard.
#[derive(Debug)]
pub struct ShardStore {
    shard: u32,
    config: StoreConfig,
    log: Log,
    state: State,
    /// Snapshots on disk, with their sizes.
    snapshots: BTreeMap<u64, u64>,
    /// The snapshot being written: its number and the bytes handed out so far.
    writing: Option<(u64, u64)>,
    /// Files a saved snapshot made obsolete, handed out once the log has rolled past them.
    obsolete: Vec<StoreFile>,
    newest_snapshot: Option<u64>,
    /// After a snapshot failed: no compaction before this time.
    compact_after_ms: u64,
}

impl ShardStore {
    /// A store with nothing on disk yet.
    pub fn new(shard: u32, config: StoreConfig) -> ShardStore {
        ShardStore::with_log(shard, config, Log::new(shard, config.log), State::new())
    }

    /// A store going on from a recovered (and repaired) shard.
    pub fn recovered(config: StoreConfig, r: RecoveredShard) -> ShardStore {
        let log = Log::resume(r.shard, config.log, r.resume);
        let mut store = ShardStore::with_log(r.shard, config, log, r.state);
        store.newest_snapshot = r.snapshots.keys().last().copied();
        store.snapshots = r.snapshots;
        store
    }

    /// A store whose state is `state` and whose log starts after snapshot `seq` (written
    /// by the caller, `bytes` long): what a change of the shard count starts from.
    pub fn from_snapshot(
        shard: u32,
        config: StoreConfig,
        state: State,
        seq: u64,
        bytes: u64,
    ) -> ShardStore {
        let resume = Resume {
            next_lsn: Lsn(1),
            next_seq: seq,
            segments: BTreeMap::new(),
        };
        let mut store =
            ShardStore::with_log(shard, config, Log::resume(shard, config.log, resume), state);
        store.snapshots.insert(seq, bytes);
        store.newest_snapshot = Some(seq);
        store
    }

    fn with_log(shard: u32, config: StoreConfig, log: Log, state: State) -> ShardStore {
        ShardStore {
            shard,
            config,
            log,
            state,
            snapshots: BTreeMap::new(),
            writing: None,
            obsolete: Vec::new(),
            newest_snapshot: None,
            compact_after_ms: 0,
        }
    }

    pub fn shard(&self) -> u32 {
        self.shard
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn allocate_session_key(&mut self) -> SessionKey {
        self.state.allocate_session_key()
    }

    pub fn allocate_msg_id(&mut self) -> MsgId {
        self.state.allocate_msg_id()
    }

    /// Applies `rec` to the state and appends it to the current turn; its LSN, which an
    /// acknowledgement that depends on it waits for ([`ShardStore::is_durable`]).
    pub fn append(&mut self, rec: &Record<'_>) -> Result<Lsn, AppendError> {
        rec.check().map_err(AppendError::Invalid)?;
        let grows = self.state.grows(rec);
        self.log.admit(grows).map_err(AppendError::Refused)?;
        self.state
            .apply(self.log.next_lsn(), rec)
            .map_err(AppendError::Rejected)?;
        self.log.append(rec).map_err(AppendError::Invalid)
    }

    /// Whether appends that grow the state are refused now, and why.
    pub fn refusing(&self) -> Option<Refusal> {
        self.log.refusing()
    }

    /// Ends the turn: frees messages nothing refers to and takes the next batch for the
    /// driver, if one is due and none is in flight.
    pub fn take_batch(&mut self, now_ms: u64) -> Option<Batch> {
        self.state.sweep();
        let outside = self.snapshot_bytes() + self.state.live_bytes();
        self.log.take_batch(now_ms, outside)
    }

    pub fn batch_bytes(&self) -> &[u8] {
        self.log.batch_bytes()
    }

    pub fn written(&mut self, lsn: Lsn) {
        self.log.written(lsn);
    }

    pub fn synced(&mut self, lsn: Lsn) {
        self.log.synced(lsn);
    }

    pub fn failed(&mut self, now_ms: u64, failure: Failure) {
        self.log.failed(now_ms, failure);
    }

    pub fn is_durable(&self, lsn: Lsn) -> bool {
        self.log.is_durable(lsn)
    }

    pub fn durable_lsn(&self) -> Lsn {
        self.log.durable_lsn()
    }

    /// See [`Log::next_deadline_ms`].
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.log.next_deadline_ms()
    }

    pub fn log_stats(&self) -> LogStats {
        self.log.stats()
    }

    /// Bytes of the shard's files on disk (segments and snapshots, a snapshot being
    /// written included).
    pub fn disk_bytes(&self) -> u64 {
        self.log.segment_bytes() + self.snapshot_bytes()
    }

    fn snapshot_bytes(&self) -> u64 {
        self.snapshots.values().sum::<u64>() + self.writing.map_or(0, |(_, b)| b)
    }

    /// Whether to start a compaction: the log holds more than the policy allows for the
    /// live state, or appends are refused for room and a snapshot would free some.
    pub fn compaction_due(&self, now_ms: u64) -> bool {
        if self.writing.is_some()
            || self.log.refusing() == Some(Refusal::Failed)
            || now_ms < self.compact_after_ms
        {
            return false;
        }
        let history = self.log.segment_bytes();
        let live = self.state.live_bytes();
        self.config.compaction.due(history, live)
            || (self.log.refusing().is_some() && history > live)
    }

    /// Starts a snapshot (between turns): the log rolls to a new segment, whose number
    /// the snapshot takes. `None` if one is being written already, or the log's last
    /// roll has not happened yet (the snapshot numbered for it may be saved already).
    pub fn begin_snapshot(&mut self) -> Option<u64> {
        if self.writing.is_some() {
            return None;
        }
        let (seq, base) = self.log.roll_here()?;
        self.state.begin_snapshot(self.shard, seq, base);
        self.writing = Some((seq, 0));
        Some(seq)
    }

    /// The next bytes of the snapshot being written, for `<seq>.snap.tmp` at `offset`.
    /// After the last chunk the driver syncs the file, renames it to `<seq>.snap`, syncs
    /// the directory and calls [`ShardStore::snapshot_saved`].
    pub fn snapshot_chunk(&mut self) -> Option<SnapshotChunk> {
        let chunk = self.state.snapshot_step(self.config.snapshot_chunk_bytes)?;
        if let Some((_, bytes)) = &mut self.writing {
            *bytes += chunk.bytes.len() as u64;
        }
        Some(chunk)
    }

    /// Snapshot `seq` is in place, `bytes` long: the files before it are obsolete.
    pub fn snapshot_saved(&mut self, seq: u64, bytes: u64) {
        self.writing = None;
        self.snapshots.insert(seq, bytes);
        self.newest_snapshot = Some(seq);
        self.obsolete.extend(
            self.log
                .segments()
                .filter(|&s| s < seq)
                .map(StoreFile::Segment),
        );
        self.obsolete.extend(
            self.snapshots
                .keys()
                .filter(|&&s| s < seq)
                .map(|&s| StoreFile::Snapshot(s)),
        );
        self.obsolete.dedup();
    }

    /// Snapshot `seq` could not be written: it is forgotten; the driver deletes its
    /// temporary file (returned). Compaction is not due again for `retry_ms` (the log's),
    /// so a full disk does not make a shard serialise its state every turn.
    pub fn snapshot_failed(&mut self, seq: u64, now_ms: u64) -> StoreFile {
        self.state.abort_snapshot();
        self.writing = None;
        self.compact_after_ms = now_ms + self.config.log.retry_ms;
        StoreFile::SnapshotTemp(seq)
    }

    /// Files the driver may delete now (then it syncs the directory and reports each with
    /// [`ShardStore::file_deleted`]). Segments wait until the log has rolled past them.
    pub fn take_obsolete(&mut self) -> Vec<StoreFile> {
        match self.newest_snapshot {
            Some(seq) if self.log.has_rolled_to(seq) => std::mem::take(&mut self.obsolete),
            _ => Vec::new(),
        }
    }

    pub fn file_deleted(&mut self, file: StoreFile) {
        match file {
            StoreFile::Segment(seq) => self.log.segment_deleted(seq),
            StoreFile::Snapshot(seq) => {
                self.snapshots.remove(&seq);
            }
            StoreFile::SnapshotTemp(_) => {}
        }
    }
}
