//! The driver a shard runs its store with: the seam described in `store`'s module
//! documentation, done through the shard's own io_uring ring (`ringmq_shard::disk`) and
//! its helper thread (`ringmq_shard::helper`), so the loop never waits on the disk.
//!
//! - The turn's batch goes out as one `IORING_OP_WRITE` at its offset of the segment's
//!   fixed file, with a linked `IORING_OP_FSYNC` (`DATASYNC`) when the batch syncs. The
//!   bytes are lent to the runtime, which keeps them until the write completes.
//! - Segment files are created on the helper thread ahead of need (the next one as soon
//!   as the current one is registered): `open`, then a sync of the directory, so a
//!   file's entry is on disk before anything in it counts as written. The shard puts
//!   each in a file slot of its ring and lets go of the slot once the log has moved on.
//! - A snapshot is made a chunk per turn on the shard (copy on write, see `snapshot`)
//!   and each chunk written by the helper; the last one is synced, renamed into place
//!   and its directory synced there too. Then the files it made obsolete are deleted,
//!   also there.
//! - Timers: the log's next deadline (a sync in write mode, a retry after `ENOSPC`) is
//!   a wake-up asked of the runtime (`Io::wake_at`).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ringmq_shard::disk::{FileDone, FileSlot, Stage};
use ringmq_shard::io::Io;

use super::log::{Batch, Failure};
use super::record::{Lsn, Record};
use super::recover::sync_dir;
use super::segment::StoreFile;
use super::shard_store::{AppendError, ShardStore};
use super::snapshot::SnapshotChunk;

/// How long a failed segment creation waits before it is tried again.
const CREATE_RETRY_MS: u64 = 100;

/// What a job of the store's on the helper thread found; the service hands it back to
/// [`RingDriver::on_job_done`].
#[derive(Debug)]
pub enum JobDone {
    /// Segment `seq` exists, its directory entry synced: the open file.
    SegmentCreated {
        seq: u64,
        result: io::Result<OwnedFd>,
    },
    /// A chunk of snapshot `seq` is written; after the last one the snapshot is in place,
    /// this many bytes long.
    SnapshotChunk {
        seq: u64,
        result: io::Result<Option<u64>>,
    },
    /// Files deleted (and their directory synced), and the first error, if any.
    Deleted {
        files: Vec<StoreFile>,
        error: Option<io::Error>,
    },
}

/// What a completed write meant, for the shard's figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completed {
    /// A batch was written (and synced, if `synced`) after `latency_us`.
    Batch { synced: bool, latency_us: u64 },
    /// A write or sync failed (the log says what it refuses now).
    Failed,
}

/// Drives one shard's [`ShardStore`] through the shard's ring.
#[derive(Debug)]
pub struct RingDriver {
    store: ShardStore,
    dir: Arc<Path>,
    /// Registered segment files, by sequence number.
    segments: BTreeMap<u64, FileSlot>,
    /// The segment the helper is creating.
    creating: Option<u64>,
    /// No creation before this time (after a failure).
    create_after_ms: u64,
    /// The batch taken from the log, and when it was handed to the ring (`None`: it
    /// waits for its segment file).
    batch: Option<(Batch, Option<Instant>)>,
    /// The snapshot being written, and whether a chunk of it is with the helper.
    snapshot: Option<(u64, bool)>,
    /// Deletions handed to the helper and not yet done.
    deleting: usize,
}

impl RingDriver {
    pub fn new(store: ShardStore, dir: PathBuf) -> RingDriver {
        RingDriver {
            store,
            dir: dir.into(),
            segments: BTreeMap::new(),
            creating: None,
            create_after_ms: 0,
            batch: None,
            snapshot: None,
            deleting: 0,
        }
    }

    pub fn store(&self) -> &ShardStore {
        &self.store
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A key for a new session (see [`ShardStore::allocate_session_key`]).
    pub fn allocate_session_key(&mut self) -> super::record::SessionKey {
        self.store.allocate_session_key()
    }

    /// An id for a new stored message.
    pub fn allocate_msg_id(&mut self) -> super::record::MsgId {
        self.store.allocate_msg_id()
    }

    /// Appends a record (see [`ShardStore::append`]).
    pub fn append(&mut self, rec: &Record<'_>) -> Result<Lsn, AppendError> {
        self.store.append(rec)
    }

    /// Whether the log has nothing left to write or sync and no file work is under way.
    pub fn is_idle(&self) -> bool {
        self.store.is_settled() && self.batch.is_none() && self.deleting == 0
    }

    /// The end of a loop turn: the turn's records close and go out in a batch if none is
    /// in flight, segment files are made ahead of need, compaction moves one chunk on,
    /// and the next deadline is asked for.
    pub fn end_turn<C, M>(&mut self, io: &mut Io<C, M>)
    where
        C: Default,
        M: Send + From<JobDone> + 'static,
    {
        let now = io.now_ms();
        if let Some(b) = self.store.take_batch(now) {
            self.batch = Some((b, None));
        }
        self.submit(io);
        self.prepare_segments(io);
        self.compact(io);
        if let Some(at) = self.store.next_deadline_ms() {
            io.wake_at(at);
        }
    }

    /// Hands the batch to the ring once its segment file is there.
    fn submit<C: Default, M: Send + 'static>(&mut self, io: &mut Io<C, M>) {
        let Some((batch, issued @ None)) = &mut self.batch else {
            return;
        };
        let Some(&slot) = self.segments.get(&batch.seq) else {
            return;
        };
        *issued = Some(Instant::now());
        let (seq, offset, sync, tag) = (batch.seq, batch.offset, batch.sync, batch.last_lsn.0);
        let bytes = self.store.lend_batch_bytes();
        io.write_file(slot, offset, bytes, sync, tag);
        // The log never goes back to an earlier segment: their slots are let go (a write
        // in flight keeps its own reference to its file).
        let older: Vec<u64> = self.segments.range(..seq).map(|(&s, _)| s).collect();
        for s in older {
            if let Some(slot) = self.segments.remove(&s) {
                let _ = io.unregister_file(slot);
            }
        }
    }

    /// Keeps the current segment and the next one created (and registered).
    fn prepare_segments<C, M>(&mut self, io: &mut Io<C, M>)
    where
        C: Default,
        M: Send + From<JobDone> + 'static,
    {
        if self.creating.is_some() || io.now_ms() < self.create_after_ms {
            return;
        }
        let current = self.store.current_segment();
        let seq = if !self.segments.contains_key(&current) {
            current
        } else if !self.segments.contains_key(&(current + 1)) {
            current + 1
        } else {
            return;
        };
        let path = self.dir.join(StoreFile::Segment(seq).name());
        let dir = self.dir.clone();
        let job = Box::new(move || {
            let result = create_segment(&path, &dir);
            M::from(JobDone::SegmentCreated { seq, result })
        });
        if io.run_blocking(job).is_ok() {
            self.creating = Some(seq);
        }
    }

    /// Starts a snapshot when one is due, and gives the helper its next chunk.
    fn compact<C, M>(&mut self, io: &mut Io<C, M>)
    where
        C: Default,
        M: Send + From<JobDone> + 'static,
    {
        let now = io.now_ms();
        if self.snapshot.is_none() && self.store.compaction_due(now) {
            self.snapshot = self.store.begin_snapshot().map(|seq| (seq, false));
        }
        if let Some((seq, busy @ false)) = &mut self.snapshot
            && let Some(chunk) = self.store.snapshot_chunk()
        {
            let seq = *seq;
            let dir = self.dir.clone();
            let job = Box::new(move || {
                let result = save_chunk(&dir, &chunk);
                M::from(JobDone::SnapshotChunk { seq, result })
            });
            match io.run_blocking(job) {
                Ok(()) => *busy = true,
                Err(_) => {
                    // The helper's queue is full: the snapshot is given up and tried later.
                    let tmp = self.store.snapshot_failed(seq, now);
                    self.snapshot = None;
                    self.delete(io, vec![tmp]);
                }
            }
        }
        if self.deleting == 0 {
            let files = self.store.take_obsolete();
            if !files.is_empty() {
                self.delete(io, files);
            }
        }
    }

    fn delete<C, M>(&mut self, io: &mut Io<C, M>, files: Vec<StoreFile>)
    where
        C: Default,
        M: Send + From<JobDone> + 'static,
    {
        let dir = self.dir.clone();
        let job = Box::new(move || {
            let (files, error) = delete_files(&dir, files);
            M::from(JobDone::Deleted { files, error })
        });
        if io.run_blocking(job).is_ok() {
            self.deleting += 1;
        }
    }

    /// A write or sync of the store's ended.
    pub fn on_file_done(&mut self, now_ms: u64, done: FileDone) -> Option<Completed> {
        let (batch, issued) = match self.batch.take() {
            Some((b, Some(at))) if b.last_lsn.0 == done.tag => (b, at),
            other => {
                // Not the batch in flight (nothing else is written this way).
                self.batch = other;
                return None;
            }
        };
        self.store.return_batch_bytes(done.buf);
        match done.result {
            Ok(()) => {
                if batch.sync {
                    self.store.synced(batch.last_lsn);
                } else {
                    self.store.written(batch.last_lsn);
                }
                Some(Completed::Batch {
                    synced: batch.sync,
                    latency_us: issued.elapsed().as_micros() as u64,
                })
            }
            Err(e) => {
                let no_space =
                    e.stage == Stage::Write && matches!(e.errno, libc::ENOSPC | libc::EDQUOT);
                let failure = if no_space {
                    Failure::NoSpace
                } else {
                    Failure::Io(e.to_io().kind())
                };
                tracing::error!(
                    shard = self.store.shard(),
                    segment = %StoreFile::Segment(batch.seq).name(),
                    offset = batch.offset,
                    stage = ?e.stage,
                    error = %e.to_io(),
                    "log write failed"
                );
                self.store.failed(now_ms, failure);
                Some(Completed::Failed)
            }
        }
    }

    /// A job of the store's on the helper thread ended.
    pub fn on_job_done<C, M>(&mut self, io: &mut Io<C, M>, done: JobDone)
    where
        C: Default,
        M: Send + From<JobDone> + 'static,
    {
        let now = io.now_ms();
        match done {
            JobDone::SegmentCreated { seq, result } => {
                self.creating = None;
                let registered = result.and_then(|fd| io.register_file(fd));
                match registered {
                    Ok(slot) => {
                        self.segments.insert(seq, slot);
                    }
                    Err(e) => {
                        tracing::error!(
                            shard = self.store.shard(),
                            segment = %self.dir.join(StoreFile::Segment(seq).name()).display(),
                            error = %e,
                            "cannot create a log segment; trying again"
                        );
                        self.create_after_ms = now + CREATE_RETRY_MS;
                        io.wake_at(self.create_after_ms);
                    }
                }
            }
            JobDone::SnapshotChunk { seq, result } => match result {
                Ok(None) => {
                    if let Some((s, busy)) = &mut self.snapshot
                        && *s == seq
                    {
                        *busy = false;
                    }
                }
                Ok(Some(bytes)) => {
                    self.store.snapshot_saved(seq, bytes);
                    self.snapshot = None;
                }
                Err(e) => {
                    tracing::error!(
                        shard = self.store.shard(),
                        snapshot = %self.dir.join(StoreFile::SnapshotTemp(seq).name()).display(),
                        error = %e,
                        "cannot write a snapshot; compaction waits"
                    );
                    let tmp = self.store.snapshot_failed(seq, now);
                    self.snapshot = None;
                    self.delete(io, vec![tmp]);
                    return;
                }
            },
            JobDone::Deleted { files, error } => {
                self.deleting = self.deleting.saturating_sub(1);
                for f in files {
                    self.store.file_deleted(f);
                }
                if let Some(e) = error {
                    tracing::warn!(
                        shard = self.store.shard(),
                        dir = %self.dir.display(),
                        error = %e,
                        "cannot delete an obsolete log file"
                    );
                }
            }
        }
        // A file may be what the batch waits for.
        self.submit(io);
    }
}

/// Creates segment file `path` (empty) and syncs its directory.
fn create_segment(path: &Path, dir: &Path) -> io::Result<OwnedFd> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    sync_dir(dir)?;
    Ok(file.into())
}

/// Writes one snapshot chunk to `<seq>.snap.tmp`; after the last, syncs it, renames it
/// to `<seq>.snap` and syncs the directory: its size then.
fn save_chunk(dir: &Path, chunk: &SnapshotChunk) -> io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let tmp = dir.join(StoreFile::SnapshotTemp(chunk.seq).name());
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(chunk.offset == 0)
        .open(&tmp)?;
    file.write_all_at(&chunk.bytes, chunk.offset)?;
    if !chunk.last {
        return Ok(None);
    }
    file.sync_all()?;
    fs::rename(&tmp, dir.join(StoreFile::Snapshot(chunk.seq).name()))?;
    sync_dir(dir)?;
    Ok(Some(chunk.offset + chunk.bytes.len() as u64))
}

/// Deletes `files` from `dir` (one already gone counts as deleted) and syncs the
/// directory: those deleted, and the first error.
fn delete_files(dir: &Path, files: Vec<StoreFile>) -> (Vec<StoreFile>, Option<io::Error>) {
    let mut deleted = Vec::with_capacity(files.len());
    let mut error = None;
    for f in files {
        match fs::remove_file(dir.join(f.name())) {
            Ok(()) => deleted.push(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => deleted.push(f),
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    if let Err(e) = sync_dir(dir) {
        error.get_or_insert(e);
    }
    (deleted, error)
}
