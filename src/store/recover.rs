//! Recovery: rebuild a shard's state from its directory.
//!
//! 1. The newest snapshot `S.snap` is loaded (none: an empty state, LSNs from 1). It was
//!    renamed into place only once complete and synced, so any damage in it is an error.
//! 2. The segments from `S` on are replayed in order; their numbers must follow each
//!    other and each must start at the LSN after the last one's end.
//! 3. Trailing segment files without a valid header and holding nothing that was synced
//!    (a file created just before a crash) are dropped.
//! 4. In the last segment, the first damaged or torn frame ends the log, with the
//!    records of its turn (a turn is applied whole or not at all): that is the tail,
//!    reported as a [`TailCut`] (file, offset, bytes). Damage anywhere else, or damage
//!    that a later commit says was synced, is an error naming the file and offset:
//!    acknowledged data is never skipped silently.
//!
//! Files below the newest snapshot and unfinished snapshots are obsolete; [`repair`]
//! deletes them, cuts the tail off and syncs what was kept, before the log is written
//! again. Several shards are recovered in parallel by [`recover_dirs`] (startup, not a
//! shard loop: it blocks).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::log::Resume;
use super::record::{Lsn, Record};
use super::segment::{
    Damage, DamageKind, HEADER_LEN, Header, HeaderError, Kind, StoreFile, find_proof_of_sync,
    scan_turns,
};
use super::snapshot::{self, check_header};
use super::state::{ApplyError, State};

/// What is wrong at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Io(io::ErrorKind),
    Header(HeaderError),
    HeaderMismatch {
        field: &'static str,
        expected: u64,
        found: u64,
    },
    Frame(DamageKind),
    /// Damage in a turn that a later commit (at `proof`) says was synced.
    SyncedDataDamaged {
        damage: DamageKind,
        proof: u64,
    },
    Apply(ApplyError),
    /// A snapshot goes on after its end.
    AfterEnd,
    /// Segment numbers do not follow each other.
    MissingSegment(u64),
    /// A segment that is not the last ends with a torn write or an unfinished turn.
    EarlierSegmentTorn(DamageKind),
    /// The first segment after a snapshot (or the first of all) does not start where it
    /// should: history is missing.
    Gap {
        expected: Lsn,
        found: Lsn,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Io(kind) => write!(f, "cannot read: {kind}"),
            Problem::Header(e) => write!(f, "bad header: {e}"),
            Problem::HeaderMismatch {
                field,
                expected,
                found,
            } => write!(f, "header names {field} {found}, expected {expected}"),
            Problem::Frame(d) => write!(f, "damaged record: {d}"),
            Problem::SyncedDataDamaged { damage, proof } => write!(
                f,
                "damaged record: {damage}; the commit at offset {proof} says it was synced \
                 (acknowledged data is damaged)"
            ),
            Problem::Apply(e) => write!(f, "record does not apply: {e}"),
            Problem::AfterEnd => write!(f, "bytes after the snapshot's end"),
            Problem::MissingSegment(seq) => {
                write!(f, "segment {} is missing", StoreFile::Segment(*seq).name())
            }
            Problem::EarlierSegmentTorn(d) => {
                write!(f, "a segment before the last is cut short: {d}")
            }
            Problem::Gap { expected, found } => write!(
                f,
                "starts at record {} where {} was expected (history is missing)",
                found.0, expected.0
            ),
        }
    }
}

/// Why a shard cannot be recovered: the file, the offset in it, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverError {
    pub file: PathBuf,
    pub offset: u64,
    pub problem: Problem,
}

impl fmt::Display for RecoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at offset {}: {}",
            self.file.display(),
            self.offset,
            self.problem
        )
    }
}

impl std::error::Error for RecoverError {}

/// The end of the log that was cut off: torn or damaged, and never synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailCut {
    pub file: StoreFile,
    /// Where the kept log ends (the file is cut there).
    pub offset: u64,
    /// Bytes cut off.
    pub bytes: u64,
    /// Where the damage is, and what.
    pub damage_offset: u64,
    pub damage: DamageKind,
}

impl fmt::Display for TailCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: cut {} unsynced bytes from offset {} ({} at offset {})",
            self.file.name(),
            self.bytes,
            self.offset,
            self.damage,
            self.damage_offset
        )
    }
}

/// Figures of one shard's recovery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    pub snapshot_bytes: u64,
    pub segments: u64,
    pub segment_bytes: u64,
    /// Records applied from segments (commits included).
    pub records: u64,
}

/// A recovered shard.
#[derive(Debug)]
pub struct RecoveredShard {
    pub shard: u32,
    pub state: State,
    /// Where its log goes on.
    pub resume: Resume,
    /// Snapshots kept, by sequence number, with their sizes (the newest only, once
    /// repaired).
    pub snapshots: BTreeMap<u64, u64>,
    pub tail: Option<TailCut>,
    /// Files to delete: below the newest snapshot, unfinished snapshots, trailing
    /// segments that never got a header.
    pub obsolete: Vec<StoreFile>,
    pub stats: RecoveryStats,
}

/// Where a shard's files are read from: a directory, or memory in tests and fuzzing.
pub trait ShardFiles: Sync {
    fn names(&self) -> io::Result<Vec<String>>;
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    fn open(&self, name: &str) -> io::Result<Box<dyn Read + '_>>;
    /// How to name the file in an error.
    fn path(&self, name: &str) -> PathBuf;
}

/// A shard's directory.
pub struct DirFiles(pub PathBuf);

impl ShardFiles for DirFiles {
    fn names(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.0)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.0.join(name))
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn Read + '_>> {
        let file = fs::File::open(self.0.join(name))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, file)))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

/// Files held in memory, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemFiles(pub BTreeMap<String, Vec<u8>>);

impl ShardFiles for MemFiles {
    fn names(&self) -> io::Result<Vec<String>> {
        Ok(self.0.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.0
            .get(name)
            .cloned()
            .ok_or(io::ErrorKind::NotFound.into())
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn Read + '_>> {
        let bytes = self.0.get(name).ok_or(io::ErrorKind::NotFound)?;
        Ok(Box::new(&bytes[..]))
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(name)
    }
}

/// Recovers shard `shard` from `files`.
pub fn recover_shard(shard: u32, files: &dyn ShardFiles) -> Result<RecoveredShard, RecoverError> {
    let err = |name: &str, offset: u64, problem| RecoverError {
        file: files.path(name),
        offset,
        problem,
    };
    let mut segments = BTreeSet::new();
    let mut snapshots = BTreeSet::new();
    let mut obsolete = Vec::new();
    let names = files
        .names()
        .map_err(|e| err("", 0, Problem::Io(e.kind())))?;
    for name in names {
        match StoreFile::parse(&name) {
            Some(StoreFile::Segment(seq)) => {
                segments.insert(seq);
            }
            Some(StoreFile::Snapshot(seq)) => {
                snapshots.insert(seq);
            }
            Some(f @ StoreFile::SnapshotTemp(_)) => obsolete.push(f),
            // Not a name this store writes: left alone.
            None => {}
        }
    }

    let mut state = State::new();
    let mut stats = RecoveryStats::default();
    let mut kept_snapshots = BTreeMap::new();
    let mut next_lsn = Lsn(1);
    let first_seq = match snapshots.last().copied() {
        Some(seq) => {
            let name = StoreFile::Snapshot(seq).name();
            let mut input = files
                .open(&name)
                .map_err(|e| err(&name, 0, Problem::Io(e.kind())))?;
            let mut counted = Counted(&mut *input, 0);
            let base = snapshot::load(&mut counted, shard, seq, &mut state)
                .map_err(|(offset, p)| err(&name, offset, p))?;
            stats.snapshot_bytes = counted.1;
            kept_snapshots.insert(seq, counted.1);
            next_lsn = base.next();
            obsolete.extend(snapshots.range(..seq).map(|&s| StoreFile::Snapshot(s)));
            seq
        }
        None => segments.first().copied().unwrap_or(1),
    };
    obsolete.extend(segments.range(..first_seq).map(|&s| StoreFile::Segment(s)));

    let mut logs: Vec<(u64, Vec<u8>)> = Vec::new();
    for &seq in segments.range(first_seq..) {
        let name = StoreFile::Segment(seq).name();
        let bytes = files
            .read(&name)
            .map_err(|e| err(&name, 0, Problem::Io(e.kind())))?;
        logs.push((seq, bytes));
    }
    // Segments from here on have no valid header: created just before a crash, unless a
    // commit in them says otherwise (checked once the LSN they start at is known).
    let headerless_from = logs
        .iter()
        .rposition(|(_, b)| Header::decode(b).is_ok())
        .map_or(0, |i| i + 1);

    let mut expected_seq = first_seq;
    let mut tail = None;
    let mut kept_segments = BTreeMap::new();
    let count = headerless_from;
    for (i, (seq, bytes)) in logs.iter().enumerate() {
        let name = StoreFile::Segment(*seq).name();
        // Checked before the numbering: a driver may have made more than one segment
        // ahead of need, all empty.
        if i >= headerless_from {
            let e = Header::decode(bytes).err().unwrap_or(HeaderError::Magic);
            // A commit in it that says records from where it starts on were synced: a
            // damaged header of acknowledged data, not a file to drop.
            if find_proof_of_sync(bytes, 0, next_lsn).is_some() {
                return Err(err(&name, 0, Problem::Header(e)));
            }
            obsolete.push(StoreFile::Segment(*seq));
            continue;
        }
        if *seq != expected_seq {
            return Err(err(&name, 0, Problem::MissingSegment(expected_seq)));
        }
        expected_seq += 1;
        let header = Header::decode(bytes).map_err(|e| err(&name, 0, Problem::Header(e)))?;
        check_header(&header, Kind::Log, shard, *seq).map_err(|p| err(&name, 0, p))?;
        if header.lsn != next_lsn {
            let gap = Problem::Gap {
                expected: next_lsn,
                found: header.lsn,
            };
            return Err(err(&name, 0, gap));
        }
        let end = scan_turns(bytes, HEADER_LEN, next_lsn, |turn| {
            for l in turn {
                if let Record::Commit { .. } = l.frame.record {
                    continue;
                }
                state
                    .apply(l.frame.lsn, &l.frame.record)
                    .map_err(|e| err(&name, l.offset as u64, Problem::Apply(e)))?;
            }
            stats.records += turn.len() as u64;
            Ok(())
        })?;
        state.sweep();
        next_lsn = end.next_lsn;
        stats.segments += 1;
        let last = i + 1 == count;
        let kept = match end.damage {
            None => bytes.len(),
            Some(Damage {
                kind,
                offset,
                proof_of_sync: Some(proof),
            }) => {
                let problem = Problem::SyncedDataDamaged {
                    damage: kind,
                    proof: proof as u64,
                };
                return Err(err(&name, offset as u64, problem));
            }
            Some(Damage { kind, offset, .. }) if !last => {
                let problem = match kind {
                    DamageKind::Torn | DamageKind::Unfinished => Problem::EarlierSegmentTorn(kind),
                    other => Problem::Frame(other),
                };
                return Err(err(&name, offset as u64, problem));
            }
            Some(Damage { kind, offset, .. }) => {
                tail = Some(TailCut {
                    file: StoreFile::Segment(*seq),
                    offset: end.end as u64,
                    bytes: (bytes.len() - end.end) as u64,
                    damage_offset: offset as u64,
                    damage: kind,
                });
                end.end
            }
        };
        stats.segment_bytes += kept as u64;
        kept_segments.insert(*seq, kept as u64);
    }
    Ok(RecoveredShard {
        shard,
        state,
        resume: Resume {
            next_lsn,
            next_seq: expected_seq,
            segments: kept_segments,
        },
        snapshots: kept_snapshots,
        tail,
        obsolete,
        stats,
    })
}

/// Counts the bytes read through it.
struct Counted<'a>(&'a mut dyn Read, u64);

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1 += n as u64;
        Ok(n)
    }
}

/// Makes a recovered shard's directory what its log goes on from: cuts the tail off,
/// deletes obsolete files, and syncs the last segment and the directory (records read
/// back from the page cache after a crash of the process may not be on disk yet).
pub fn repair(dir: &Path, r: &mut RecoveredShard) -> io::Result<()> {
    if let Some(t) = &r.tail {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(dir.join(t.file.name()))?;
        file.set_len(t.offset)?;
        file.sync_all()?;
    }
    if let Some((&last, _)) = r.resume.segments.last_key_value() {
        fs::File::open(dir.join(StoreFile::Segment(last).name()))?.sync_all()?;
    }
    for f in r.obsolete.drain(..) {
        match fs::remove_file(dir.join(f.name())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    sync_dir(dir)
}

/// Syncs a directory, so that files created, renamed or deleted in it stay so.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Recovers several shards' directories at once, a thread each.
pub fn recover_dirs(dirs: &[(u32, PathBuf)]) -> Vec<Result<RecoveredShard, RecoverError>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|(shard, dir)| scope.spawn(move || recover_shard(*shard, &DirFiles(dir.clone()))))
            .collect();
        handles
            .into_iter()
            .zip(dirs)
            .map(|(h, (_, dir))| {
                h.join().unwrap_or_else(|_| {
                    Err(RecoverError {
                        file: dir.clone(),
                        offset: 0,
                        problem: Problem::Io(io::ErrorKind::Other),
                    })
                })
            })
            .collect()
    })
}
