//! Snapshots and the compaction policy.
//!
//! A snapshot is the state of a shard as of one LSN, written as the records that rebuild
//! it, in a file shaped like a segment (header of kind [`Kind::Snapshot`], frames numbered
//! from 1, a [`Record::SnapshotEnd`] last). Compaction is:
//!
//! 1. the log rolls to a new segment `S` at a turn boundary, LSN `base`;
//! 2. the state is written to `S.snap.tmp` in chunks ([`State::snapshot_step`]), copy on
//!    write, so records go on being appended meanwhile;
//! 3. the file is synced, renamed to `S.snap`, and the directory synced;
//! 4. segments and snapshots numbered below `S` are deleted, and the directory synced.
//!
//! A crash at any step leaves either the old files (a `.tmp` is ignored and deleted) or
//! the new snapshot with the segments from `S` on; recovery ignores what is below the
//! newest snapshot and deletes it.
//!
//! [`State::snapshot_step`]: super::State::snapshot_step

use std::io::{self, Read};

use ringmq_proto::Decoded;

use super::record::{Lsn, Record, decode_frame};
use super::recover::Problem;
use super::segment::{DamageKind, HEADER_LEN, Header, Kind};
use super::state::State;

/// Where the walk over the state has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The next session slot to look at.
    Sessions(usize),
    /// The next retained slot to look at.
    Retained(usize),
    Done,
}

/// A snapshot being written: its frames so far, and which entities it holds.
#[derive(Debug)]
pub struct SnapshotWriter {
    /// The LSN the snapshot is the state as of: entities created after it are not in it.
    pub(super) base: Lsn,
    /// Entities marked with this number are in the snapshot already.
    pub(super) mark: u32,
    pub(super) cursor: Cursor,
    seq: u64,
    next: Lsn,
    buf: Vec<u8>,
    /// Bytes handed out before `buf`.
    offset: u64,
}

/// Bytes of a snapshot to write at `offset` of `<seq>.snap.tmp`; `last`: the file is
/// complete after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub seq: u64,
    pub offset: u64,
    pub bytes: Vec<u8>,
    pub last: bool,
}

impl SnapshotWriter {
    pub(super) fn new(shard: u32, seq: u64, base: Lsn, mark: u32) -> SnapshotWriter {
        let header = Header {
            kind: Kind::Snapshot,
            shard,
            seq,
            lsn: base,
        };
        SnapshotWriter {
            base,
            mark,
            cursor: Cursor::Sessions(0),
            seq,
            next: Lsn(1),
            buf: header.encode().to_vec(),
            offset: 0,
        }
    }

    pub(super) fn push(&mut self, rec: &Record<'_>) {
        rec.encode(self.next, &mut self.buf)
            .expect("a record rebuilt from the state passes the checks it passed when applied");
        self.next = self.next.next();
    }

    pub(super) fn finish(&mut self) {
        self.push(&Record::SnapshotEnd {
            base_lsn: self.base,
        });
        self.cursor = Cursor::Done;
    }

    pub(super) fn ready(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn take(&mut self) -> SnapshotChunk {
        let bytes = std::mem::take(&mut self.buf);
        let chunk = SnapshotChunk {
            seq: self.seq,
            offset: self.offset,
            last: self.cursor == Cursor::Done,
            bytes,
        };
        self.offset += chunk.bytes.len() as u64;
        chunk
    }
}

/// Reads a snapshot into `state` (which should be empty) from `input`, checking its
/// header against `shard` and `seq`, and returns its base LSN. Frames are read through a
/// window of about a megabyte, so a snapshot is never held whole. On error: where, and
/// what.
pub fn load(
    input: &mut dyn Read,
    shard: u32,
    seq: u64,
    state: &mut State,
) -> Result<Lsn, (u64, Problem)> {
    let mut w = Window::new(input);
    let io = |e: io::Error| (0, Problem::Io(e.kind()));
    w.more(HEADER_LEN).map_err(io)?;
    let header = Header::decode(w.bytes()).map_err(|e| (0, Problem::Header(e)))?;
    check_header(&header, Kind::Snapshot, shard, seq).map_err(|p| (0, p))?;
    let base = header.lsn;
    w.consume(HEADER_LEN);
    let mut next = Lsn(1);
    loop {
        let offset = w.offset();
        let (frame, used) = match decode_frame(w.bytes()) {
            Ok(Decoded::Complete(f, used)) => (f, used),
            Ok(Decoded::Partial { .. }) if w.eof => {
                return Err((offset, Problem::Frame(DamageKind::Torn)));
            }
            Ok(Decoded::Partial { need }) => {
                w.more(need).map_err(io)?;
                continue;
            }
            Err(e) => return Err((offset, Problem::Frame(DamageKind::Corrupt(e)))),
        };
        if frame.lsn != next {
            let kind = DamageKind::WrongLsn {
                expected: next,
                found: frame.lsn,
            };
            return Err((offset, Problem::Frame(kind)));
        }
        next = next.next();
        if let Record::SnapshotEnd { base_lsn } = frame.record
            && base_lsn == base
        {
            w.consume(used);
            if w.bytes().is_empty() && !w.eof {
                w.more(1).map_err(io)?;
            }
            if !w.bytes().is_empty() {
                return Err((w.offset(), Problem::AfterEnd));
            }
            state.sweep();
            return Ok(base);
        }
        state
            .apply(base, &frame.record)
            .map_err(|e| (offset, Problem::Apply(e)))?;
        w.consume(used);
    }
}

/// A window over a stream: `buf[start..end]` has been read and not yet consumed.
struct Window<'a> {
    input: &'a mut dyn Read,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes of the stream before `buf[0]`.
    consumed: u64,
    eof: bool,
}

impl<'a> Window<'a> {
    const SIZE: usize = 1 << 20;

    fn new(input: &'a mut dyn Read) -> Window<'a> {
        Window {
            input,
            buf: Vec::new(),
            start: 0,
            end: 0,
            consumed: 0,
            eof: false,
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The stream offset of `bytes()`.
    fn offset(&self) -> u64 {
        self.consumed + self.start as u64
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Reads until `need` more bytes are there, or the input ends (`eof`).
    fn more(&mut self, need: usize) -> io::Result<()> {
        self.buf.copy_within(self.start..self.end, 0);
        self.consumed += self.start as u64;
        self.end -= self.start;
        self.start = 0;
        let want = self.end + need;
        if self.buf.len() < want {
            // From 64 KiB, doubling up to SIZE: a small snapshot needs no big buffer.
            let grown = (self.buf.len() * 2).clamp(64 << 10, Self::SIZE);
            self.buf.resize(want.max(grown), 0);
        }
        while self.end < want {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Whether a header is the one the file's place says it should be.
pub(super) fn check_header(h: &Header, kind: Kind, shard: u32, seq: u64) -> Result<(), Problem> {
    let mismatch = |field, expected: u64, found: u64| {
        Err(Problem::HeaderMismatch {
            field,
            expected,
            found,
        })
    };
    if h.kind != kind {
        return mismatch("kind", kind as u64, h.kind as u64);
    }
    if h.shard != shard {
        return mismatch("shard", shard as u64, h.shard as u64);
    }
    if h.seq != seq {
        return mismatch("sequence number", seq, h.seq);
    }
    Ok(())
}

/// When to compact: once the log holds more than `factor` times what a snapshot of the
/// live state would, and more than `floor_bytes` (so that a small state is not
/// rewritten for every few records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    pub factor: u64,
    pub floor_bytes: u64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            factor: 2,
            floor_bytes: 64 << 20,
        }
    }
}

impl CompactionPolicy {
    pub fn due(&self, log_bytes: u64, live_bytes: u64) -> bool {
        log_bytes > self.floor_bytes.max(self.factor.saturating_mul(live_bytes))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::log::{Batch, Durability, LogConfig};
    use crate::store::shard_store::{ShardStore, StoreConfig};

    #[test]
    fn compaction_is_due_past_k_times_live_and_the_floor() {
        let p = CompactionPolicy {
            factor: 2,
            floor_bytes: 1000,
        };
        assert!(!p.due(1000, 10), "under the floor");
        assert!(p.due(1001, 10));
        assert!(!p.due(4000, 2000), "history not above twice the live state");
        assert!(p.due(4001, 2000));
    }

    /// The record of a session opening (client `c`, MQTT 5, expiry 9 s).
    fn opening(session: crate::store::record::SessionKey) -> Record<'static> {
        Record::SessionOpened {
            session,
            client_id: "c",
            protocol: ringmq_proto::mqtt::Version::V5,
            expiry_interval_s: 9,
            opened_at_ms: 1,
        }
    }

    #[test]
    fn a_failed_snapshot_backs_off_before_the_next() {
        let config = StoreConfig {
            compaction: CompactionPolicy {
                factor: 1,
                floor_bytes: 0,
            },
            ..StoreConfig::default()
        };
        let mut store = ShardStore::new(0, config);
        let open = opening(store.allocate_session_key());
        store.append(&open).unwrap();
        let b = store.take_batch(0).unwrap();
        store.synced(b.last_lsn);
        assert!(store.compaction_due(0));
        let seq = store.begin_snapshot().unwrap();
        assert!(!store.compaction_due(0), "one at a time");
        store.snapshot_failed(seq, 1000);
        assert!(!store.compaction_due(1050));
        assert!(store.compaction_due(1100));
    }

    /// A driver that leaves its batch in flight until `turn(.., true)`, and notes where
    /// each segment it creates starts.
    #[derive(Default)]
    struct SlowDisk {
        in_flight: Option<Batch>,
        segment_starts: BTreeMap<u64, Lsn>,
        /// Each snapshot saved: its number and base.
        snapshots: Vec<(u64, Lsn)>,
    }

    impl SlowDisk {
        fn turn(&mut self, store: &mut ShardStore, complete: bool) {
            if complete && let Some(b) = self.in_flight.take() {
                if b.sync {
                    store.synced(b.last_lsn);
                } else {
                    store.written(b.last_lsn);
                }
            }
            if let Some(b) = store.take_batch(0) {
                if b.create {
                    let header = Header::decode(store.batch_bytes()).unwrap();
                    self.segment_starts.insert(b.seq, header.lsn);
                }
                self.in_flight = Some(b);
            }
        }

        fn save_snapshot(&mut self, store: &mut ShardStore, seq: u64) {
            let mut bytes = Vec::new();
            while let Some(chunk) = store.snapshot_chunk() {
                bytes.extend_from_slice(&chunk.bytes);
            }
            store.snapshot_saved(seq, bytes.len() as u64);
            self.snapshots
                .push((seq, Header::decode(&bytes).unwrap().lsn));
        }
    }

    /// Snapshot `S` is the state as of the LSN before segment `S`'s first record. The
    /// roll to segment `S` waits for the batch in flight; a snapshot begun before it
    /// happened moved it (and took the number `S` again), so segment `S` started after
    /// records that neither `S.snap` nor any kept segment held.
    #[test]
    fn a_snapshot_begun_before_the_last_ones_roll_leaves_that_roll_in_place() {
        let config = StoreConfig {
            log: LogConfig {
                durability: Durability::Write,
                ..LogConfig::default()
            },
            ..StoreConfig::default()
        };
        let mut store = ShardStore::new(0, config);
        let open = opening(store.allocate_session_key());
        let mut disk = SlowDisk::default();
        store.append(&open).unwrap();
        disk.turn(&mut store, false);
        assert!(disk.in_flight.is_some(), "the first batch stays in flight");

        store.append(&open).unwrap();
        let first = store.begin_snapshot().unwrap();
        disk.save_snapshot(&mut store, first);
        store.append(&open).unwrap();
        disk.turn(&mut store, false);

        // The next snapshot starts as soon as the store lets it, as a shard's loop does.
        let mut turns = 0;
        let second = loop {
            if let Some(seq) = store.begin_snapshot() {
                break seq;
            }
            disk.turn(&mut store, true);
            turns += 1;
            assert!(
                turns < 10,
                "the first roll happens once the batches complete"
            );
        };
        disk.save_snapshot(&mut store, second);
        store.append(&open).unwrap();
        for _ in 0..10 {
            disk.turn(&mut store, true);
        }

        assert_ne!(first, second);
        for (seq, base) in disk.snapshots {
            assert_eq!(
                disk.segment_starts.get(&seq),
                Some(&base.next()),
                "segment {seq} starts right after snapshot {seq}'s base"
            );
        }
    }
}
