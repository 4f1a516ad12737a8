//! The log writer of one shard. It does no I/O: records are encoded into the current
//! turn's buffer, and at the end of the turn the shard takes one [`Batch`] (segment
//! file, offset, bytes, and whether to sync) and hands it to its driver, which reports
//! back with [`Log::written`], [`Log::synced`] or [`Log::failed`].
//!
//! Group commit: every record appended while a batch is in flight waits in the buffer,
//! and the next batch takes them all, closed turn by turn with a [`Record::Commit`]. One
//! batch is in flight at a time, so "synced up to LSN x" always means every record up to
//! x is on disk, whatever order the kernel completes things in.
//!
//! Durability modes and what an acknowledgement waits for ([`Log::is_durable`]):
//!
//! | mode | a record is durable when | the file is synced |
//! |---|---|---|
//! | [`Durability::Fsync`] | its batch was written and `fdatasync`ed | every batch |
//! | [`Durability::Write`] | its batch was written (page cache) | every `fsync_interval_ms` |
//! | [`Durability::None`] | at once (nothing is written) | never |
//!
//! A segment is rolled over only once everything in it is synced, so only the last
//! segment can end in a torn write.
//!
//! Refusals: when the disk budget (`max_data_bytes`) is reached, or the disk is full
//! (the driver reported `ENOSPC`), appends of records that grow the state are refused
//! with [`Refusal`], decided at turn boundaries so that one packet's records are all
//! accepted or all refused (the turn that reaches the budget is taken whole: the files
//! may hold that one turn beyond it). Records that settle existing state
//! (acknowledgements, removals) are always accepted. A batch that failed for lack of space is kept and
//! retried; nothing appended before is dropped.

use std::collections::BTreeMap;
use std::io;

use super::record::{Lsn, Record, RecordError};
use super::segment::{Header, Kind};

/// What an acknowledgement of durable state waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The records are on disk (`fdatasync`): survives power loss.
    Fsync,
    /// The records are written to the file (page cache) and synced every
    /// `fsync_interval_ms`: survives a crash of the process.
    Write,
    /// Memory only: no log is written.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub durability: Durability,
    /// In [`Durability::Write`], how often written records are synced.
    pub fsync_interval_ms: u64,
    /// A segment rolls over once it holds this many bytes.
    pub segment_bytes: u64,
    /// The most bytes the shard's files may take (`None`: what the disk has).
    pub max_data_bytes: Option<u64>,
    /// How long a batch that failed for lack of space waits before it is tried again.
    pub retry_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            durability: Durability::Fsync,
            fsync_interval_ms: 100,
            segment_bytes: 64 << 20,
            max_data_bytes: None,
            retry_ms: 100,
        }
    }
}

/// Why an append was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The shard's files (plus room for one snapshot) reached `max_data_bytes`.
    DiskBudget,
    /// A write failed for lack of space; refusals end once a write succeeds.
    NoSpace,
    /// A write or sync failed otherwise: the log is stopped, and what was not synced may
    /// be lost; only a restart (which recovers from disk) resumes.
    Failed,
}

/// How a driver's write or sync failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// `ENOSPC` (or `EDQUOT`) from the write: retried once there is room.
    NoSpace,
    /// Anything else, or any failure of a sync.
    Io(io::ErrorKind),
}

/// One write for the driver: `len` bytes ([`Log::batch_bytes`]) at `offset` of segment
/// `seq`, then an `fdatasync` if `sync`. `create`: the segment is new, its header first
/// in the bytes; the file must exist, and its directory entry be synced, before the
/// write's completion is reported. `len` 0 with `sync`: a sync alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub seq: u64,
    pub create: bool,
    pub offset: u64,
    pub len: usize,
    pub sync: bool,
    /// The last LSN the batch holds: what to pass to `written` and `synced`.
    pub last_lsn: Lsn,
}

/// Where a log goes on after recovery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resume {
    /// The LSN of the next record.
    pub next_lsn: Lsn,
    /// The sequence number of the next segment (the log never appends to a segment
    /// written before a restart).
    pub next_seq: u64,
    /// Segments on disk, by sequence number, with their sizes.
    pub segments: BTreeMap<u64, u64>,
}

/// Counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub records: u64,
    pub bytes: u64,
    pub batches: u64,
    pub syncs: u64,
    pub refused_budget: u64,
    pub refused_no_space: u64,
    pub refused_failed: u64,
    pub write_failures: u64,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    len: u64,
    created: bool,
    /// The last LSN written to it.
    last_lsn: Lsn,
}

#[derive(Debug, Clone, Copy)]
struct RollPoint {
    /// Pending bytes before this offset go to the current segment, the rest to the next.
    at: usize,
    /// The LSN of the first record after the roll.
    lsn: Lsn,
}

#[derive(Debug)]
struct InFlight {
    batch: Batch,
    bytes: Vec<u8>,
    issued_ms: u64,
    written: bool,
    /// When the batch failed for lack of space (it is retried `retry_ms` later).
    failed_ms: Option<u64>,
}

/// The writer of one shard's log.
#[derive(Debug)]
pub struct Log {
    config: LogConfig,
    shard: u32,
    next_lsn: Lsn,
    /// Frames not yet in a batch, from `pending_first` on.
    pending: Vec<u8>,
    pending_first: Lsn,
    /// Records appended since the last commit.
    open_turn: bool,
    roll: Option<RollPoint>,
    current: Segment,
    /// Every segment on disk (or being written), with its size.
    segments: BTreeMap<u64, u64>,
    in_flight: Option<InFlight>,
    /// A buffer to take the next batch's bytes into (the last batch's, emptied).
    spare: Vec<u8>,
    written: Lsn,
    synced: Lsn,
    last_sync_ms: u64,
    refusing: Option<Refusal>,
    no_space: bool,
    fatal: Option<io::ErrorKind>,
    stats: LogStats,
}

impl Log {
    /// A log that has never written anything.
    pub fn new(shard: u32, config: LogConfig) -> Log {
        Log::resume(
            shard,
            config,
            Resume {
                next_lsn: Lsn(1),
                next_seq: 1,
                segments: BTreeMap::new(),
            },
        )
    }

    /// A log going on from what recovery found; everything before `next_lsn` counts as
    /// synced (recovery syncs what it keeps).
    pub fn resume(shard: u32, config: LogConfig, resume: Resume) -> Log {
        let last = Lsn(resume.next_lsn.0.saturating_sub(1));
        Log {
            config,
            shard,
            next_lsn: resume.next_lsn,
            pending: Vec::new(),
            pending_first: resume.next_lsn,
            open_turn: false,
            roll: None,
            current: Segment {
                seq: resume.next_seq,
                len: 0,
                created: false,
                last_lsn: last,
            },
            segments: resume.segments,
            in_flight: None,
            spare: Vec::new(),
            written: last,
            synced: last,
            last_sync_ms: 0,
            refusing: None,
            no_space: false,
            fatal: None,
            stats: LogStats::default(),
        }
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The LSN the next record gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Whether an append of a record that grows the state (`grows`) would be refused now.
    pub fn admit(&mut self, grows: bool) -> Result<(), Refusal> {
        let refusal = match (self.fatal, self.refusing) {
            (Some(_), _) => Some(Refusal::Failed),
            (None, Some(r)) if grows => Some(r),
            _ => None,
        };
        match refusal {
            None => Ok(()),
            Some(r) => {
                let count = match r {
                    Refusal::DiskBudget => &mut self.stats.refused_budget,
                    Refusal::NoSpace => &mut self.stats.refused_no_space,
                    Refusal::Failed => &mut self.stats.refused_failed,
                };
                *count += 1;
                Err(r)
            }
        }
    }

    /// Encodes `rec` into the current turn; its LSN. The caller has [`admit`]ted it.
    ///
    /// [`admit`]: Log::admit
    pub fn append(&mut self, rec: &Record<'_>) -> Result<Lsn, RecordError> {
        let lsn = self.next_lsn;
        if self.config.durability != Durability::None {
            let n = rec.encode(lsn, &mut self.pending)?;
            self.open_turn = true;
            self.stats.bytes += n as u64;
        }
        self.stats.records += 1;
        self.next_lsn = lsn.next();
        Ok(lsn)
    }

    /// Whether `lsn` is durable as the mode promises, so that an acknowledgement that
    /// waits for it can go.
    pub fn is_durable(&self, lsn: Lsn) -> bool {
        lsn <= self.durable_lsn()
    }

    /// Every record up to this LSN is durable as the mode promises.
    pub fn durable_lsn(&self) -> Lsn {
        match self.config.durability {
            Durability::Fsync => self.synced,
            Durability::Write => self.written,
            Durability::None => Lsn(self.next_lsn.0 - 1),
        }
    }

    pub fn refusing(&self) -> Option<Refusal> {
        if self.fatal.is_some() {
            return Some(Refusal::Failed);
        }
        self.refusing
    }

    pub fn stats(&self) -> LogStats {
        self.stats
    }

    /// Bytes of frames waiting for a batch.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Bytes of every segment on disk.
    pub fn segment_bytes(&self) -> u64 {
        self.segments.values().sum()
    }

    /// Sequence numbers of the segments on disk.
    pub fn segments(&self) -> impl Iterator<Item = u64> + '_ {
        self.segments.keys().copied()
    }

    /// Whether segment `seq` has been created and is the one appended to (or a later one
    /// is): the segments before it can be deleted once a snapshot covers them.
    pub fn has_rolled_to(&self, seq: u64) -> bool {
        self.current.seq > seq || (self.current.seq == seq && self.current.created)
    }

    /// The driver deleted segment `seq`.
    pub fn segment_deleted(&mut self, seq: u64) {
        self.segments.remove(&seq);
    }

    /// Ends the current turn here and makes the next record start a new segment; returns
    /// that segment's number and the LSN of the last record before it. Call it between
    /// turns, never within one.
    ///
    /// `None` while an earlier roll still waits for the batch in flight and the sync of the
    /// current segment: moving it would start that segment after the LSN already handed
    /// out as its base, and the records in between would be in neither that segment nor
    /// the snapshot numbered after it.
    pub fn roll_here(&mut self) -> Option<(u64, Lsn)> {
        if self.roll.is_some() {
            return None;
        }
        self.close_turn();
        self.roll = Some(RollPoint {
            at: self.pending.len(),
            lsn: self.next_lsn,
        });
        Some((self.current.seq + 1, Lsn(self.next_lsn.0 - 1)))
    }

    /// When the shard must call [`Log::take_batch`] even if nothing is appended: a sync
    /// that comes due (write mode) or a retry after a failure for lack of space.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        if let Some(f) = &self.in_flight {
            return f.failed_ms.map(|t| t + self.config.retry_ms);
        }
        (self.config.durability == Durability::Write && self.synced < self.written)
            .then(|| self.last_sync_ms + self.config.fsync_interval_ms)
    }

    /// Closes the turn and, if no batch is in flight, takes the next one. `outside_bytes`
    /// are bytes of the shard's files that are not segments (snapshots), plus the room
    /// to keep for the next snapshot: the disk budget counts them too.
    pub fn take_batch(&mut self, now_ms: u64, outside_bytes: u64) -> Option<Batch> {
        if self.config.durability == Durability::None || self.fatal.is_some() {
            return None;
        }
        self.close_turn();
        self.update_refusal(outside_bytes);
        if let Some(f) = &mut self.in_flight {
            return match f.failed_ms {
                Some(t) if now_ms >= t + self.config.retry_ms => {
                    f.failed_ms = None;
                    f.issued_ms = now_ms;
                    Some(f.batch)
                }
                _ => None,
            };
        }
        if self.roll.is_none()
            && self.current.created
            && self.current.len >= self.config.segment_bytes
            && !self.pending.is_empty()
        {
            self.roll = Some(RollPoint {
                at: 0,
                lsn: self.pending_first,
            });
        }
        let batch = match self.roll {
            Some(RollPoint { at, lsn }) if at > 0 => {
                // Records before the roll point finish the current segment, synced.
                self.roll = Some(RollPoint { at: 0, lsn });
                self.take(at, lsn, true, now_ms)
            }
            Some(_) if self.synced < self.current.last_lsn => self.sync_only(now_ms),
            Some(_) => {
                self.roll = None;
                self.current = Segment {
                    seq: self.current.seq + 1,
                    len: 0,
                    created: false,
                    last_lsn: self.current.last_lsn,
                };
                let sync = self.sync_due(now_ms);
                self.take(self.pending.len(), self.next_lsn, sync, now_ms)
            }
            None if !self.pending.is_empty() => {
                let sync = self.sync_due(now_ms);
                self.take(self.pending.len(), self.next_lsn, sync, now_ms)
            }
            None if self.sync_due(now_ms) && self.synced < self.written => self.sync_only(now_ms),
            None => return None,
        };
        self.stats.batches += 1;
        Some(batch)
    }

    /// The bytes of the batch in flight. They stay where they are until the batch is
    /// written or has failed, so a driver may hand their address to the kernel.
    pub fn batch_bytes(&self) -> &[u8] {
        self.in_flight.as_ref().map_or(&[], |f| &f.bytes)
    }

    /// The batch ending at `lsn` was written (all of it).
    pub fn written(&mut self, lsn: Lsn) {
        let Some(f) = self.in_flight.as_mut().filter(|f| f.batch.last_lsn == lsn) else {
            return;
        };
        f.written = true;
        let sync = f.batch.sync;
        self.written = self.written.max(lsn);
        self.space_is_back();
        if !sync {
            self.finish();
        }
    }

    /// The batch ending at `lsn` was written and synced.
    pub fn synced(&mut self, lsn: Lsn) {
        let Some(f) = self.in_flight.as_ref().filter(|f| f.batch.last_lsn == lsn) else {
            return;
        };
        self.last_sync_ms = f.issued_ms;
        self.written = self.written.max(lsn);
        self.synced = self.synced.max(lsn);
        self.space_is_back();
        self.stats.syncs += 1;
        self.finish();
    }

    /// The batch in flight failed. For lack of space, before it was written, it is kept
    /// and tried again; otherwise the log stops.
    pub fn failed(&mut self, now_ms: u64, failure: Failure) {
        let Some(f) = self.in_flight.as_mut() else {
            return;
        };
        self.stats.write_failures += 1;
        match failure {
            Failure::NoSpace if !f.written => {
                f.failed_ms = Some(now_ms);
                self.no_space = true;
                self.refusing = Some(Refusal::NoSpace);
            }
            // A sync that fails leaves the page cache in a state nobody knows: nothing
            // written since the last good sync can be trusted to reach the disk.
            Failure::NoSpace => self.fatal = Some(io::ErrorKind::StorageFull),
            Failure::Io(kind) => self.fatal = Some(kind),
        }
    }

    /// A write succeeded: refusals for lack of space end now (a budget refusal is
    /// decided again at the end of the turn).
    fn space_is_back(&mut self) {
        self.no_space = false;
        if self.refusing == Some(Refusal::NoSpace) {
            self.refusing = None;
        }
    }

    fn finish(&mut self) {
        if let Some(f) = self.in_flight.take() {
            self.spare = f.bytes;
            self.spare.clear();
        }
    }

    fn close_turn(&mut self) {
        if self.open_turn {
            let commit = Record::Commit {
                synced_through: self.synced,
            };
            // A commit has no field that can be over a cap.
            let _ = self.append(&commit);
            self.open_turn = false;
        }
    }

    fn sync_due(&self, now_ms: u64) -> bool {
        match self.config.durability {
            Durability::Fsync => true,
            Durability::Write => now_ms >= self.last_sync_ms + self.config.fsync_interval_ms,
            Durability::None => false,
        }
    }

    fn update_refusal(&mut self, outside_bytes: u64) {
        let over_budget = self.config.max_data_bytes.is_some_and(|max| {
            self.segment_bytes() + self.pending.len() as u64 + outside_bytes >= max
        });
        self.refusing = if self.no_space {
            Some(Refusal::NoSpace)
        } else if over_budget {
            Some(Refusal::DiskBudget)
        } else {
            None
        };
    }

    /// Takes `upto` pending bytes (the records before `next`) into a batch for the
    /// current segment.
    fn take(&mut self, upto: usize, next: Lsn, sync: bool, now_ms: u64) -> Batch {
        let mut bytes = std::mem::take(&mut self.spare);
        let create = !self.current.created;
        if create {
            let header = Header {
                kind: Kind::Log,
                shard: self.shard,
                seq: self.current.seq,
                lsn: self.pending_first,
            };
            bytes.extend_from_slice(&header.encode());
            self.current.created = true;
        }
        if upto == self.pending.len() && bytes.is_empty() {
            std::mem::swap(&mut bytes, &mut self.pending);
        } else {
            bytes.extend_from_slice(&self.pending[..upto]);
            self.pending.drain(..upto);
        }
        self.pending_first = next;
        let last_lsn = Lsn(next.0 - 1);
        let batch = Batch {
            seq: self.current.seq,
            create,
            offset: self.current.len,
            len: bytes.len(),
            sync,
            last_lsn,
        };
        self.current.len += bytes.len() as u64;
        self.current.last_lsn = last_lsn;
        *self.segments.entry(self.current.seq).or_default() += bytes.len() as u64;
        self.in_flight = Some(InFlight {
            batch,
            bytes,
            issued_ms: now_ms,
            written: false,
            failed_ms: None,
        });
        batch
    }

    fn sync_only(&mut self, now_ms: u64) -> Batch {
        let batch = Batch {
            seq: self.current.seq,
            create: false,
            offset: self.current.len,
            len: 0,
            sync: true,
            last_lsn: self.written,
        };
        self.in_flight = Some(InFlight {
            batch,
            bytes: std::mem::take(&mut self.spare),
            issued_ms: now_ms,
            written: true,
            failed_ms: None,
        });
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::SessionKey;

    const REC: Record<'static> = Record::WillCleared {
        session: SessionKey(1),
    };

    fn config(durability: Durability) -> LogConfig {
        LogConfig {
            durability,
            segment_bytes: 200,
            ..LogConfig::default()
        }
    }

    #[test]
    fn fsync_mode_one_batch_in_flight_and_durable_after_sync() {
        let mut log = Log::new(0, config(Durability::Fsync));
        let a = log.append(&REC).unwrap();
        let b = log.take_batch(0, 0).expect("a batch");
        assert!(b.create && b.sync && b.offset == 0 && b.seq == 1);
        assert_eq!(b.last_lsn, Lsn(2), "the record and its commit");
        let c = log.append(&REC).unwrap();
        assert_eq!(log.take_batch(0, 0), None, "one batch in flight at a time");
        log.written(b.last_lsn);
        assert!(!log.is_durable(a), "fsync mode waits for the sync");
        log.synced(b.last_lsn);
        assert!(log.is_durable(a) && !log.is_durable(c));
        let b2 = log.take_batch(0, 0).unwrap();
        assert!(!b2.create && b2.offset == b.len as u64);
        log.synced(b2.last_lsn);
        assert!(log.is_durable(c));
    }

    #[test]
    fn write_mode_acks_on_write_and_syncs_on_the_interval() {
        let mut log = Log::new(0, config(Durability::Write));
        let a = log.append(&REC).unwrap();
        let b = log.take_batch(1000, 0).unwrap();
        assert!(b.sync, "the first batch: no sync yet, so one is due");
        log.synced(b.last_lsn);
        let c = log.append(&REC).unwrap();
        let b = log.take_batch(1050, 0).unwrap();
        assert!(!b.sync, "50 ms after the last sync");
        log.written(b.last_lsn);
        assert!(log.is_durable(a) && log.is_durable(c));
        assert_eq!(log.next_deadline_ms(), Some(1100));
        assert_eq!(log.take_batch(1099, 0), None);
        let s = log.take_batch(1100, 0).expect("a sync alone");
        assert_eq!((s.len, s.sync, s.last_lsn), (0, true, b.last_lsn));
        log.synced(s.last_lsn);
        assert_eq!(log.next_deadline_ms(), None);
    }

    #[test]
    fn segments_roll_only_when_synced() {
        let mut log = Log::new(0, config(Durability::Write));
        let mut seqs = Vec::new();
        for t in 0..40u64 {
            log.append(&REC).unwrap();
            // Syncs come due every 100 ms; a turn every 10 ms.
            if let Some(b) = log.take_batch(t * 10, 0) {
                seqs.push((b.seq, b.create, b.sync, b.len));
                if b.sync {
                    log.synced(b.last_lsn);
                } else {
                    log.written(b.last_lsn);
                }
            }
        }
        let first_new = seqs.iter().position(|s| s.0 == 2).expect("rolled over");
        assert!(seqs[first_new].1, "the new segment is created");
        assert!(seqs[first_new - 1].2, "the old one was synced first");
        assert!(log.segments().count() >= 2);
    }

    #[test]
    fn roll_here_splits_the_pending_records() {
        let mut log = Log::new(3, config(Durability::Fsync));
        log.append(&REC).unwrap();
        let b = log.take_batch(0, 0).unwrap();
        log.append(&REC).unwrap(); // lsn 3, while the first batch is in flight
        let (seq, base) = log.roll_here().unwrap();
        assert_eq!((seq, base), (2, Lsn(4)), "the commit of lsn 3 is the base");
        log.append(&REC).unwrap(); // lsn 5: the new segment's
        assert_eq!(
            log.roll_here(),
            None,
            "the roll to 2 stays where it was decided"
        );
        log.synced(b.last_lsn);
        let old = log.take_batch(0, 0).unwrap();
        assert_eq!((old.seq, old.last_lsn, old.sync), (1, Lsn(4), true));
        assert!(!log.has_rolled_to(2));
        log.synced(old.last_lsn);
        let new = log.take_batch(0, 0).unwrap();
        assert_eq!((new.seq, new.create, new.last_lsn), (2, true, Lsn(6)));
        let header = Header::decode(log.batch_bytes()).unwrap();
        assert_eq!((header.seq, header.lsn, header.shard), (2, Lsn(5), 3));
        assert!(log.has_rolled_to(2));
    }

    #[test]
    fn budget_refuses_growth_at_the_next_turn_and_never_settling_records() {
        let mut log = Log::new(
            0,
            LogConfig {
                max_data_bytes: Some(100),
                ..config(Durability::Fsync)
            },
        );
        assert_eq!(log.admit(true), Ok(()));
        log.append(&REC).unwrap();
        let b = log.take_batch(0, 60).unwrap();
        assert_eq!(log.admit(true), Err(Refusal::DiskBudget));
        assert_eq!(log.admit(false), Ok(()));
        log.synced(b.last_lsn);
        assert_eq!(log.stats().refused_budget, 1);
        log.segment_deleted(1);
        log.take_batch(0, 0);
        assert_eq!(log.admit(true), Ok(()), "room again");
    }

    #[test]
    fn no_space_keeps_the_batch_and_retries_it() {
        let mut log = Log::new(0, config(Durability::Fsync));
        let a = log.append(&REC).unwrap();
        let b = log.take_batch(0, 0).unwrap();
        let bytes = log.batch_bytes().to_vec();
        log.failed(5, Failure::NoSpace);
        assert_eq!(log.refusing(), Some(Refusal::NoSpace));
        assert_eq!(log.admit(true), Err(Refusal::NoSpace));
        log.append(&REC).unwrap(); // settling records still go in
        assert_eq!(log.take_batch(50, 0), None, "waits retry_ms");
        assert_eq!(log.take_batch(105, 0), Some(b), "the same batch again");
        assert_eq!(log.batch_bytes(), bytes);
        log.synced(b.last_lsn);
        assert!(log.is_durable(a));
        assert_eq!(log.refusing(), None);
        let next = log.take_batch(105, 0).unwrap();
        assert_eq!(next.offset, b.len as u64);
    }

    #[test]
    fn a_failed_sync_stops_the_log() {
        let mut log = Log::new(0, config(Durability::Fsync));
        log.append(&REC).unwrap();
        let b = log.take_batch(0, 0).unwrap();
        log.written(b.last_lsn);
        log.failed(0, Failure::NoSpace);
        assert_eq!(log.refusing(), Some(Refusal::Failed));
        assert_eq!(log.admit(false), Err(Refusal::Failed));
        assert_eq!(log.take_batch(1000, 0), None);
    }

    #[test]
    fn none_mode_writes_nothing_and_everything_is_durable() {
        let mut log = Log::new(0, config(Durability::None));
        let a = log.append(&REC).unwrap();
        assert!(log.is_durable(a));
        assert_eq!(log.take_batch(0, 0), None);
        assert_eq!(log.pending_bytes(), 0);
    }
}
