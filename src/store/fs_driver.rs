//! A blocking driver on `std::fs`, for tests, tools and startup work: it does what a
//! shard's io_uring driver does (the seam in `store`'s documentation), one call at a
//! time, and waits for each.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::log::{Batch, Failure};
use super::recover::sync_dir;
use super::segment::StoreFile;
use super::shard_store::ShardStore;
use super::snapshot::SnapshotChunk;

/// Drives one shard's store in `dir`.
#[derive(Debug)]
pub struct FsDriver {
    dir: PathBuf,
    /// Open segment files, by sequence number.
    segments: BTreeMap<u64, File>,
    /// The snapshot file being written.
    snapshot: Option<(u64, File)>,
}

/// What `ENOSPC` and `EDQUOT` are to the log; anything else stops it.
pub fn failure_of(e: &io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Failure::NoSpace,
        kind => Failure::Io(kind),
    }
}

impl FsDriver {
    pub fn new(dir: impl Into<PathBuf>) -> FsDriver {
        FsDriver {
            dir: dir.into(),
            segments: BTreeMap::new(),
            snapshot: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes batches until none is due; a failure is reported to the store and
    /// returned.
    pub fn flush(&mut self, store: &mut ShardStore, now_ms: u64) -> Result<(), Failure> {
        while let Some(batch) = store.take_batch(now_ms) {
            match self.write(&batch, store.batch_bytes()) {
                Ok(()) if batch.sync => store.synced(batch.last_lsn),
                Ok(()) => store.written(batch.last_lsn),
                Err(e) => {
                    let failure = failure_of(&e);
                    store.failed(now_ms, failure);
                    return Err(failure);
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, batch: &Batch, bytes: &[u8]) -> io::Result<()> {
        if batch.create {
            // Dropped segments are closed here; a shard keeps the current one open.
            self.segments
                .retain(|&seq, _| seq >= batch.seq.saturating_sub(1));
            let file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.dir.join(StoreFile::Segment(batch.seq).name()))?;
            sync_dir(&self.dir)?;
            self.segments.insert(batch.seq, file);
        }
        let file = match self.segments.get(&batch.seq) {
            Some(f) => f,
            None => {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(self.dir.join(StoreFile::Segment(batch.seq).name()))?;
                self.segments.entry(batch.seq).or_insert(f)
            }
        };
        file.write_all_at(bytes, batch.offset)?;
        if batch.sync {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Writes one snapshot chunk; after the last, syncs, renames and syncs the
    /// directory, and returns the snapshot's size.
    pub fn save_chunk(&mut self, chunk: &SnapshotChunk) -> io::Result<Option<u64>> {
        let tmp = self.dir.join(StoreFile::SnapshotTemp(chunk.seq).name());
        if chunk.offset == 0 {
            let file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            self.snapshot = Some((chunk.seq, file));
        }
        let Some((_, file)) = self.snapshot.as_ref().filter(|(s, _)| *s == chunk.seq) else {
            return Err(io::Error::other("snapshot chunk without its file"));
        };
        file.write_all_at(&chunk.bytes, chunk.offset)?;
        if !chunk.last {
            return Ok(None);
        }
        file.sync_all()?;
        self.snapshot = None;
        fs::rename(&tmp, self.dir.join(StoreFile::Snapshot(chunk.seq).name()))?;
        sync_dir(&self.dir)?;
        Ok(Some(chunk.offset + chunk.bytes.len() as u64))
    }

    /// Compacts now: snapshot, roll, delete what it made obsolete. Returns the
    /// snapshot's number, or `None` if [`ShardStore::begin_snapshot`] could not start one.
    pub fn compact(&mut self, store: &mut ShardStore, now_ms: u64) -> io::Result<Option<u64>> {
        let Some(seq) = store.begin_snapshot() else {
            return Ok(None);
        };
        while let Some(chunk) = store.snapshot_chunk() {
            match self.save_chunk(&chunk) {
                Ok(Some(bytes)) => store.snapshot_saved(seq, bytes),
                Ok(None) => {}
                Err(e) => {
                    let tmp = store.snapshot_failed(seq, now_ms);
                    let _ = fs::remove_file(self.dir.join(tmp.name()));
                    return Err(e);
                }
            }
        }
        // The log rolls to the snapshot's segment with its next batch.
        let _ = self.flush(store, now_ms);
        self.delete_obsolete(store)?;
        Ok(Some(seq))
    }

    /// Deletes what the store says is obsolete, then syncs the directory.
    pub fn delete_obsolete(&mut self, store: &mut ShardStore) -> io::Result<()> {
        let files = store.take_obsolete();
        if files.is_empty() {
            return Ok(());
        }
        for f in &files {
            if let StoreFile::Segment(seq) = f {
                self.segments.remove(seq);
            }
            match fs::remove_file(self.dir.join(f.name())) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        sync_dir(&self.dir)?;
        for f in files {
            store.file_deleted(f);
        }
        Ok(())
    }
}
