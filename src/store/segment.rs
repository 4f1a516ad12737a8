//! Segment files: the log of one shard cut into files of about `segment_bytes` each,
//! and the snapshots that compaction writes in the same shape.
//!
//! Names, in the shard's directory (`seq` as 20 decimal digits, so names sort in order):
//!
//! - `<seq>.log`: a log segment; `seq` counts up from 1.
//! - `<seq>.snap`: a snapshot of the state as of the LSN before segment `seq`'s first
//!   record; recovery loads it and replays the segments from `seq` on.
//! - `<seq>.snap.tmp`: a snapshot being written (never read; deleted by recovery).
//!
//! Every file opens with a [`Header`] of [`HEADER_LEN`] bytes (big-endian):
//!
//! ```text
//! magic "ringmqlg" | format u16 | kind u8 | 0 u8 | shard u32 | seq u64 | lsn u64 | crc32c u32
//! ```
//!
//! `lsn` is the first record's LSN in a log segment and the base LSN in a snapshot; the
//! CRC covers the 32 bytes before it. Frames ([`super::record`]) follow.

use std::fmt;

use ringmq_proto::Decoded;
use ringmq_proto::reader::Reader;

use super::record::{Frame, Lsn, Record, RecordError, decode_frame};

/// The first bytes of every file.
pub const MAGIC: [u8; 8] = *b"ringmqlg";
/// The format this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of a header.
pub const HEADER_LEN: usize = 36;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Log = 1,
    Snapshot = 2,
}

/// The header of a segment or snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub shard: u32,
    pub seq: u64,
    /// A log segment: its first record's LSN. A snapshot: the LSN it is the state as of.
    pub lsn: Lsn,
}

/// Why the first [`HEADER_LEN`] bytes of a file are not a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The file is shorter than a header.
    Short(usize),
    Magic,
    Checksum,
    /// A format this code does not know.
    Format(u16),
    Kind(u8),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Short(n) => write!(f, "{n} bytes, shorter than a header"),
            HeaderError::Magic => write!(f, "not a ringmq log file (bad magic)"),
            HeaderError::Checksum => write!(f, "header checksum mismatch"),
            HeaderError::Format(v) => write!(
                f,
                "format version {v}, this ringmq reads version {FORMAT_VERSION}"
            ),
            HeaderError::Kind(k) => write!(f, "unknown file kind {k}"),
        }
    }
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        out[10] = self.kind as u8;
        out[12..16].copy_from_slice(&self.shard.to_be_bytes());
        out[16..24].copy_from_slice(&self.seq.to_be_bytes());
        out[24..32].copy_from_slice(&self.lsn.0.to_be_bytes());
        let crc = crc32c::crc32c(&out[..32]);
        out[32..].copy_from_slice(&crc.to_be_bytes());
        out
    }

    pub fn decode(buf: &[u8]) -> Result<Header, HeaderError> {
        let mut r = Reader::new(buf);
        let (Some(magic), Some(format), Some(kind), Some(_), Some(shard), Some(seq), Some(lsn)) = (
            r.take_array::<8>(),
            r.u16(),
            r.u8(),
            r.u8(),
            r.u32(),
            r.u64(),
            r.u64(),
        ) else {
            return Err(HeaderError::Short(buf.len()));
        };
        let Some(stored) = r.u32() else {
            return Err(HeaderError::Short(buf.len()));
        };
        if magic != MAGIC {
            return Err(HeaderError::Magic);
        }
        if crc32c::crc32c(&buf[..32]) != stored {
            return Err(HeaderError::Checksum);
        }
        if format != FORMAT_VERSION {
            return Err(HeaderError::Format(format));
        }
        let kind = match kind {
            1 => Kind::Log,
            2 => Kind::Snapshot,
            k => return Err(HeaderError::Kind(k)),
        };
        Ok(Header {
            kind,
            shard,
            seq,
            lsn: Lsn(lsn),
        })
    }
}

/// A file of a shard's directory, by what its name says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StoreFile {
    Segment(u64),
    Snapshot(u64),
    SnapshotTemp(u64),
}

impl StoreFile {
    pub fn name(&self) -> String {
        match self {
            StoreFile::Segment(seq) => format!("{seq:020}.log"),
            StoreFile::Snapshot(seq) => format!("{seq:020}.snap"),
            StoreFile::SnapshotTemp(seq) => format!("{seq:020}.snap.tmp"),
        }
    }

    /// The file a name names; `None` for a name this module never writes.
    pub fn parse(name: &str) -> Option<StoreFile> {
        let (digits, make): (&str, fn(u64) -> StoreFile) =
            if let Some(d) = name.strip_suffix(".snap.tmp") {
                (d, StoreFile::SnapshotTemp)
            } else if let Some(d) = name.strip_suffix(".snap") {
                (d, StoreFile::Snapshot)
            } else {
                (name.strip_suffix(".log")?, StoreFile::Segment)
            };
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(make)
    }
}

/// A frame and where it starts in its file.
#[derive(Debug, Clone, Copy)]
pub struct Located<'a> {
    pub offset: usize,
    pub frame: Frame<'a>,
}

/// What stopped a scan before the end of its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageKind {
    /// The file ends inside a frame.
    Torn,
    /// The file ends after a frame, inside a turn whose commit is missing.
    Unfinished,
    /// A frame is damaged.
    Corrupt(RecordError),
    /// A valid frame, but not the next one of the log.
    WrongLsn { expected: Lsn, found: Lsn },
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DamageKind::Torn => write!(f, "the file ends inside a record"),
            DamageKind::Unfinished => write!(f, "the file ends inside a turn (no commit)"),
            DamageKind::Corrupt(e) => write!(f, "{e}"),
            DamageKind::WrongLsn { expected, found } => {
                write!(f, "record {} where {} was expected", found.0, expected.0)
            }
        }
    }
}

/// A scan's damage: what, where, and whether a later frame proves the damaged turn was
/// synced (it is then acknowledged data, not a torn tail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub kind: DamageKind,
    /// Where the damaged frame starts.
    pub offset: usize,
    /// Where a valid commit that says the damaged turn was synced starts, if one does.
    pub proof_of_sync: Option<usize>,
}

/// How a scan of a segment's records ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// The offset after the last complete turn: where the valid log ends.
    pub end: usize,
    /// The LSN after the last complete turn's commit.
    pub next_lsn: Lsn,
    /// Why the scan stopped before the end of the file, if it did.
    pub damage: Option<Damage>,
}

/// Walks the frames of a log segment from `start` (after the header), expecting LSNs from
/// `first_lsn` on, and hands `on_turn` each complete turn (its frames, the commit last).
/// It stops at the first damage, or at the end of `buf`; frames of a turn without its
/// commit are never handed out.
pub fn scan_turns<'a, E>(
    buf: &'a [u8],
    start: usize,
    first_lsn: Lsn,
    mut on_turn: impl FnMut(&[Located<'a>]) -> Result<(), E>,
) -> Result<ScanEnd, E> {
    let mut turn: Vec<Located<'a>> = Vec::new();
    let mut pos = start;
    let mut lsn = first_lsn;
    let mut end = ScanEnd {
        end: start,
        next_lsn: first_lsn,
        damage: None,
    };
    let damage = loop {
        let Some(rest) = buf.get(pos..).filter(|r| !r.is_empty()) else {
            break turn.first().map(|l| (DamageKind::Unfinished, l.offset));
        };
        let (frame, used) = match decode_frame(rest) {
            Ok(Decoded::Complete(frame, used)) => (frame, used),
            Ok(Decoded::Partial { .. }) => break Some((DamageKind::Torn, pos)),
            Err(e) => break Some((DamageKind::Corrupt(e), pos)),
        };
        if frame.lsn != lsn {
            let kind = DamageKind::WrongLsn {
                expected: lsn,
                found: frame.lsn,
            };
            break Some((kind, pos));
        }
        turn.push(Located { offset: pos, frame });
        pos += used;
        lsn = lsn.next();
        if let Record::Commit { .. } = frame.record {
            on_turn(&turn)?;
            turn.clear();
            end.end = pos;
            end.next_lsn = lsn;
        }
    };
    end.damage = damage.map(|(kind, offset)| Damage {
        kind,
        offset,
        proof_of_sync: find_proof_of_sync(buf, offset + 1, end.next_lsn),
    });
    Ok(end)
}

/// Looks for a valid commit at or after `from` that says records from `turn_lsn` on were
/// synced. Every offset is tried, since the damage may have hidden where frames start.
pub fn find_proof_of_sync(buf: &[u8], from: usize, turn_lsn: Lsn) -> Option<usize> {
    (from..buf.len()).find(|&p| match decode_frame(&buf[p..]) {
        Ok(Decoded::Complete(f, _)) => matches!(
            f.record,
            Record::Commit { synced_through } if f.lsn > turn_lsn && synced_through >= turn_lsn
        ),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::SessionKey;

    #[test]
    fn header_round_trip_and_errors() {
        let h = Header {
            kind: Kind::Snapshot,
            shard: 3,
            seq: 17,
            lsn: Lsn(99),
        };
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes), Ok(h));
        assert_eq!(Header::decode(&bytes[..35]), Err(HeaderError::Short(35)));
        let mut bad = bytes;
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad), Err(HeaderError::Magic));
        let mut bad = bytes;
        bad[20] ^= 1;
        assert_eq!(Header::decode(&bad), Err(HeaderError::Checksum));
        let mut bad = bytes;
        bad[9] = 2;
        let crc = crc32c::crc32c(&bad[..32]);
        bad[32..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(Header::decode(&bad), Err(HeaderError::Format(2)));
        bad[9] = 1;
        bad[10] = 9;
        let crc = crc32c::crc32c(&bad[..32]);
        bad[32..].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(Header::decode(&bad), Err(HeaderError::Kind(9)));
    }

    #[test]
    fn names_round_trip() {
        for f in [
            StoreFile::Segment(1),
            StoreFile::Snapshot(u64::MAX),
            StoreFile::SnapshotTemp(42),
        ] {
            assert_eq!(StoreFile::parse(&f.name()), Some(f));
        }
        assert_eq!(StoreFile::Segment(3).name(), "00000000000000000003.log");
        for junk in [
            "1.log",
            "LOCK",
            "0000000000000000000a.log",
            "00000000000000000003.txt",
        ] {
            assert_eq!(StoreFile::parse(junk), None, "{junk}");
        }
    }

    fn log_of(turns: &[&[Record<'_>]]) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut lsn = Lsn(10);
        for turn in turns {
            for r in *turn {
                r.encode(lsn, &mut buf).unwrap();
                lsn = lsn.next();
            }
        }
        buf
    }

    fn collect(buf: &[u8]) -> (Vec<Vec<u64>>, ScanEnd) {
        let mut turns = Vec::new();
        let end = scan_turns::<()>(buf, 0, Lsn(10), |t| {
            turns.push(t.iter().map(|l| l.frame.lsn.0).collect());
            Ok(())
        })
        .unwrap();
        (turns, end)
    }

    #[test]
    fn turns_are_handed_out_whole() {
        let k = SessionKey(1);
        let a = Record::WillCleared { session: k };
        let commit = |n| Record::Commit {
            synced_through: Lsn(n),
        };
        let buf = log_of(&[&[a, a, commit(0)], &[a, commit(12)], &[a]]);
        let (turns, end) = collect(&buf);
        assert_eq!(turns, vec![vec![10, 11, 12], vec![13, 14]]);
        assert_eq!(end.next_lsn, Lsn(15));
        assert_eq!(end.end, 5 * a.frame_len());
        assert_eq!(
            end.damage,
            Some(Damage {
                kind: DamageKind::Unfinished,
                offset: end.end,
                proof_of_sync: None
            })
        );
        // Torn in the middle of the third turn's frame.
        let (_, torn) = collect(&buf[..buf.len() - 3]);
        assert_eq!(torn.damage.map(|d| d.kind), Some(DamageKind::Torn));
        assert_eq!(torn.end, end.end);
    }

    #[test]
    fn damage_followed_by_a_commit_that_says_it_was_synced_is_proven() {
        let k = SessionKey(1);
        let a = Record::WillCleared { session: k };
        // Turn 1: lsns 10, 11 (commit). Turn 2: 12, 13 (commit saying 11 synced).
        // Turn 3: 14, 15 (commit saying 13 synced).
        let buf = log_of(&[
            &[
                a,
                Record::Commit {
                    synced_through: Lsn(0),
                },
            ],
            &[
                a,
                Record::Commit {
                    synced_through: Lsn(11),
                },
            ],
            &[
                a,
                Record::Commit {
                    synced_through: Lsn(13),
                },
            ],
        ]);
        let f = a.frame_len();
        let commit = Record::Commit {
            synced_through: Lsn(0),
        }
        .frame_len();
        // Damage in turn 2: turn 3's commit says 13 was synced, so it is not a tail.
        let mut bad = buf.clone();
        bad[f + commit + 20] ^= 0x01;
        let (turns, end) = collect(&bad);
        assert_eq!(turns.len(), 1);
        let damage = end.damage.unwrap();
        assert!(matches!(
            damage.kind,
            DamageKind::Corrupt(RecordError::Checksum { .. })
        ));
        assert_eq!(damage.offset, f + commit);
        assert_eq!(damage.proof_of_sync, Some(2 * (f + commit) + f));
        // Damage in turn 3: nothing after it claims it, a tail.
        let mut bad = buf.clone();
        bad[2 * (f + commit) + 20] ^= 0x01;
        let (turns, end) = collect(&bad);
        assert_eq!(turns.len(), 2);
        assert_eq!(end.damage.unwrap().proof_of_sync, None);
    }

    #[test]
    fn a_frame_out_of_place_is_damage() {
        let a = Record::WillCleared {
            session: SessionKey(1),
        };
        let mut buf = Vec::new();
        a.encode(Lsn(10), &mut buf).unwrap();
        a.encode(Lsn(12), &mut buf).unwrap();
        let (_, end) = collect(&buf);
        assert_eq!(
            end.damage.map(|d| (d.kind, d.offset)),
            Some((
                DamageKind::WrongLsn {
                    expected: Lsn(11),
                    found: Lsn(12)
                },
                a.frame_len()
            ))
        );
    }
}
