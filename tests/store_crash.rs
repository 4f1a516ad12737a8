//! Crash points: a session workload runs against the store while an in-memory disk
//! records every write and sync. The disk is then rebuilt as a crash would have left it
//! after each operation, the last write cut at every byte offset, and with one bit
//! flipped in each byte of the unsynced tail, and recovered. Recovery must always
//! succeed and give the state after some whole turn: never less than every synced turn
//! (acknowledged data), never more than what was written (nothing invented).

mod store_support;

use ringmq::store::log::LogConfig;
use ringmq::store::snapshot::CompactionPolicy;
use ringmq::store::{Durability, Lsn, StoreConfig};
use store_support::{CLIENTS, Event, FILTERS, Op, TOPICS, World, disk_after, recover};

/// A small deterministic generator (xorshift), so a failure names a reproducible run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

fn random_event(rng: &mut Rng) -> Event {
    let client = rng.below(CLIENTS.len());
    match rng.below(10) {
        0 | 1 => Event::Connect {
            client,
            clean: rng.below(4) == 0,
            v5: rng.coin(),
            expiry: 30,
        },
        2 => Event::Subscribe {
            client,
            filter: rng.below(FILTERS.len()),
            qos: rng.below(3) as u8,
            no_local: rng.coin(),
            rap: rng.coin(),
            rh: rng.below(3) as u8,
            sub_id: rng.below(3) as u32,
        },
        3..=5 => Event::Publish {
            topic: rng.below(TOPICS.len()),
            payload: vec![rng.below(256) as u8; rng.below(40)],
            qos: 1 + rng.below(2) as u8,
            retain: rng.below(4) == 0,
            expires: rng.coin(),
            targets: (0..rng.below(4))
                .map(|_| {
                    let c = rng.below(CLIENTS.len());
                    (c, 1 + rng.below(2) as u8, rng.coin(), rng.coin(), vec![1])
                })
                .collect(),
        },
        6 => Event::Deliver { client },
        7 => Event::Ack {
            client,
            which: rng.below(3),
        },
        8 => Event::InboundAdd {
            client,
            pkid: 1 + rng.below(5) as u16,
        },
        _ => match rng.below(4) {
            0 => Event::Disconnect {
                client,
                expires_in: Some(30_000),
                will_in: None,
            },
            1 => Event::InboundRelease { client, which: 0 },
            2 => Event::SetWill {
                client,
                delay: 5,
                expiry: Some(9),
                payload: b"gone".to_vec(),
            },
            _ => Event::End {
                client,
                expired: true,
            },
        },
    }
}

/// Runs a workload: turns of a few events, batches completed at once or a turn late,
/// segments of 600 bytes, a snapshot written a chunk per turn in the middle, and the
/// files it made obsolete deleted. The last batch stays in flight.
fn workload(durability: Durability, seed: u64, turns: usize) -> World {
    let config = StoreConfig {
        log: LogConfig {
            durability,
            segment_bytes: 600,
            ..LogConfig::default()
        },
        compaction: CompactionPolicy::default(),
        snapshot_chunk_bytes: 150,
    };
    let mut w = World::new(config);
    let mut rng = Rng(seed);
    for t in 0..turns {
        for _ in 0..1 + rng.below(4) {
            w.event(&random_event(&mut rng));
        }
        w.now_ms += 40;
        w.end_turn(rng.below(3) != 0);
        if t == turns / 3 {
            w.begin_snapshot();
        }
        if t == 2 * turns / 3 {
            w.delete_obsolete();
        }
    }
    w
}

/// The LSNs the ops synced, and wrote (in part, for a cut last write), in log segments.
fn watermarks(ops: &[Op]) -> (Lsn, Lsn) {
    let mut synced = Lsn::ZERO;
    let mut written = Lsn::ZERO;
    for op in ops {
        match op {
            Op::Sync {
                last_lsn: Some(l), ..
            } => synced = synced.max(*l),
            Op::Write {
                last_lsn: Some(l), ..
            } => written = written.max(*l),
            _ => {}
        }
    }
    (synced, written)
}

/// Recovers `files` and checks the state is the one after a whole turn between the
/// last synced one and the last written one.
fn check(
    w: &World,
    files: std::collections::BTreeMap<String, Vec<u8>>,
    synced: Lsn,
    written: Lsn,
    at: &str,
) {
    let r = recover(files).unwrap_or_else(|e| panic!("{at}: recovery failed: {e}"));
    let view = r.state.view();
    let k_min = w.commits.iter().filter(|c| **c <= synced).count();
    let k_max = w.commits.iter().filter(|c| **c <= written).count();
    assert!(
        (k_min..=k_max).any(|k| w.views[k] == view),
        "{at}: the recovered state is not the state after any turn from {k_min} to {k_max}"
    );
}

#[test]
fn every_crash_point_keeps_every_synced_turn_and_invents_nothing() {
    let w = workload(Durability::Fsync, 0x9E37_79B9_7F4A_7C15, 36);
    assert!(w.commits.len() > 20, "the workload logged turns");
    let (synced, _) = watermarks(&w.ops);
    assert!(synced > Lsn(100), "the workload synced turns");
    assert!(
        w.ops.iter().any(|op| matches!(op, Op::Rename { .. })),
        "a snapshot was written"
    );
    assert!(
        w.ops
            .iter()
            .any(|op| matches!(op, Op::Delete { file } if file.ends_with(".log"))),
        "segments were deleted after the snapshot"
    );
    let mut recoveries = 0;
    for i in 0..w.ops.len() {
        let prefix = &w.ops[..=i];
        let (synced, written) = watermarks(prefix);
        let cuts: Vec<Option<usize>> = match &w.ops[i] {
            // Every byte offset of a log write; a snapshot's temporary file is never
            // read, so fewer of its cuts are tried.
            Op::Write { bytes, file, .. } => {
                let step = if file.ends_with(".log") { 1 } else { 13 };
                (0..bytes.len()).step_by(step).map(Some).collect()
            }
            _ => vec![None],
        };
        for cut in cuts {
            check(
                &w,
                disk_after(prefix, cut),
                synced,
                written,
                &format!("op {i} cut {cut:?}"),
            );
            recoveries += 1;
        }
        // Every complete log write, with one bit flipped in each byte it wrote (it is not
        // synced yet: its sync is the next op).
        if let Op::Write {
            file,
            offset,
            bytes,
            last_lsn: Some(_),
        } = &w.ops[i]
        {
            for p in 0..bytes.len() {
                let mut files = disk_after(prefix, None);
                let f = files.get_mut(file).unwrap();
                f[*offset as usize + p] ^= 1 << (p % 8);
                check(
                    &w,
                    files,
                    synced,
                    written,
                    &format!("op {i} bit flipped at {p}"),
                );
                recoveries += 1;
            }
        }
    }
    eprintln!("{recoveries} crash points recovered");
    assert!(recoveries > 1000, "{recoveries} crash points tried");
}

#[test]
fn write_mode_loses_nothing_written_when_the_process_dies() {
    // A crash of the process keeps what reached the page cache: every complete write.
    let w = workload(Durability::Write, 0x0123_4567_89AB_CDEF, 36);
    for i in 0..w.ops.len() {
        let prefix = &w.ops[..=i];
        let (_, written) = watermarks(prefix);
        // Acknowledged in write mode = written: the minimum is every written turn.
        check(
            &w,
            disk_after(prefix, None),
            written,
            written,
            &format!("op {i}"),
        );
    }
}
