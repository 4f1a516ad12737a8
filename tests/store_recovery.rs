//! The store on real files: damage before the tail is an error naming file and offset,
//! a truncated log loses only its unsynced tail, the disk budget refuses growth and
//! recovers after compaction, a locked data directory is refused, and a restart with
//! another shard count keeps everything.

use std::fs;
use std::path::Path;

use ringmq::store::log::LogConfig;
use ringmq::store::open::{Homes, OpenError, Opened, open};
use ringmq::store::record::{Content, Deadline, Delivery, Done, MessageData, SubIdList, Unqueue};
use ringmq::store::recover::Problem;
use ringmq::store::segment::StoreFile;
use ringmq::store::snapshot::CompactionPolicy;
use ringmq::store::state::View;
use ringmq::store::{AppendError, FsDriver, Lsn, Record, Refusal, ShardStore, StoreConfig};
use ringmq_proto::mqtt::{QoS, SubscriptionOptions, Version};

fn fnv(s: &str) -> usize {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    }) as usize
}

fn homes() -> Homes<'static> {
    Homes {
        session: &fnv,
        retained: &fnv,
    }
}

fn config() -> StoreConfig {
    StoreConfig {
        log: LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        },
        compaction: CompactionPolicy::default(),
        snapshot_chunk_bytes: 1024,
    }
}

fn open_dir(dir: &Path, shards: usize) -> Opened {
    open(dir, shards, config(), homes()).unwrap_or_else(|e| panic!("open: {e}"))
}

/// One client's traffic as one turn: a session, a subscription, a queued and an
/// in-flight message, and (every third client) a retained message.
fn client_turn(store: &mut ShardStore, client: &str, n: u64) {
    let session = store.allocate_session_key();
    let msg = store.allocate_msg_id();
    let payload = format!("payload of {client}");
    let topic = format!("t/{client}");
    let recs = [
        Record::SessionOpened {
            session,
            client_id: client,
            protocol: Version::V5,
            expiry_interval_s: 3600,
            opened_at_ms: 1_000 + n,
        },
        Record::SubAdded {
            session,
            filter: "t/#",
            options: SubscriptionOptions::new(QoS::AtLeastOnce),
            sub_id: 7,
        },
        Record::MessageStored {
            id: msg,
            message: MessageData {
                qos: QoS::ExactlyOnce,
                retain: n.is_multiple_of(3),
                expires_at: Deadline::at_ms(9_999_999),
                content: Content {
                    topic: &topic,
                    props: &[],
                    payload: payload.as_bytes(),
                },
            },
        },
        Record::Enqueued {
            session,
            delivery: delivery(msg),
        },
        Record::Sent {
            session,
            pkid: 1,
            delivery: delivery(msg),
        },
        Record::InboundAdded {
            session,
            pkid: 9,
            id: n,
        },
    ];
    for r in &recs {
        store.append(r).unwrap();
    }
    if n.is_multiple_of(3) {
        store
            .append(&Record::RetainSet { version: n, msg })
            .unwrap();
    }
}

fn delivery(msg: ringmq::store::MsgId) -> Delivery {
    Delivery {
        msg,
        qos: QoS::ExactlyOnce,
        retain: false,
        sub_ids: SubIdList::new(&[7]).unwrap(),
    }
}

/// Writes `clients` turns on shard 0 of a fresh directory, every one synced.
fn shard_with_turns(dir: &Path, clients: u64) -> (Opened, FsDriver) {
    let mut o = open_dir(dir, 1);
    let mut driver = FsDriver::new(&o.shard_dirs[0]);
    for n in 0..clients {
        client_turn(&mut o.stores[0], &format!("c{n}"), n);
        driver.flush(&mut o.stores[0], n).unwrap();
    }
    (o, driver)
}

/// Every shard's state as one view.
fn merged(stores: &[ShardStore]) -> View {
    let mut all = View::default();
    for s in stores {
        let v = s.state().view();
        for (k, x) in v.sessions {
            assert!(
                all.sessions.insert(k, x).is_none(),
                "a client on two shards"
            );
        }
        all.retained.extend(v.retained);
    }
    all
}

fn only_segment(dir: &Path) -> std::path::PathBuf {
    let logs: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    logs[0].clone()
}

#[test]
fn damage_before_the_tail_is_an_error_naming_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, _) = shard_with_turns(tmp.path(), 4);
    let shard_dir = o.shard_dirs[0].clone();
    drop(o);
    let seg = only_segment(&shard_dir);
    let mut bytes = fs::read(&seg).unwrap();
    // Into the first turn's first record (after the 36-byte header): later turns' commits
    // say it was synced.
    bytes[36 + 20] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    match open(tmp.path(), 1, config(), homes()) {
        Err(OpenError::Recover(e)) => {
            assert_eq!(e.file, seg);
            assert_eq!(e.offset, 36);
            assert!(
                matches!(e.problem, Problem::SyncedDataDamaged { .. }),
                "{:?}",
                e.problem
            );
            let msg = OpenError::Recover(e).to_string();
            assert!(
                msg.contains("00000000000000000001.log at offset 36")
                    && msg.contains("acknowledged data is damaged"),
                "{msg}"
            );
        }
        other => panic!("expected a recovery error, got {other:?}"),
    }
    // Nothing was cut or deleted: the damaged file is as it was, for someone to look at.
    assert_eq!(fs::read(&seg).unwrap(), bytes);
}

#[test]
fn damage_in_an_earlier_segment_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, _) = shard_with_turns(tmp.path(), 30);
    let dir = o.shard_dirs[0].clone();
    drop(o);
    let first = dir.join(StoreFile::Segment(1).name());
    assert!(
        dir.join(StoreFile::Segment(2).name()).exists(),
        "rolled over"
    );
    // The end of segment 1: its last turn, which no later commit in it claims.
    let mut bytes = fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 1;
    fs::write(&first, &bytes).unwrap();
    match open(tmp.path(), 1, config(), homes()) {
        Err(OpenError::Recover(e)) => {
            assert_eq!(e.file, first);
            assert!(matches!(e.problem, Problem::Frame(_)), "{:?}", e.problem);
        }
        other => panic!("expected a recovery error, got {other:?}"),
    }
}

#[test]
fn a_truncated_log_loses_only_its_torn_turn_and_is_cut_there() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, _) = shard_with_turns(tmp.path(), 5);
    let full = merged(&o.stores);
    let dir = o.shard_dirs[0].clone();
    drop(o);
    let seg = only_segment(&dir);
    let len = fs::metadata(&seg).unwrap().len();
    // Cut into the last turn, as a crash during its write would.
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 30)
        .unwrap();
    let o = open_dir(tmp.path(), 1);
    let (shard, cut) = o.report.tails[0];
    assert_eq!(shard, 0);
    assert_eq!(cut.file, StoreFile::Segment(1));
    assert!(
        cut.offset < len - 30 && cut.bytes == len - 30 - cut.offset,
        "{cut}"
    );
    assert_eq!(fs::metadata(&seg).unwrap().len(), cut.offset, "cut on disk");
    let got = merged(&o.stores);
    assert_eq!(
        got.sessions.len(),
        4,
        "the last client's turn is gone, whole"
    );
    let mut expected = full.clone();
    expected.sessions.remove("c4");
    assert_eq!(got, expected);
    drop(o);
    let again = open_dir(tmp.path(), 1);
    assert!(again.report.tails.is_empty(), "nothing more to cut");
    assert_eq!(merged(&again.stores), expected);
}

#[test]
fn the_disk_budget_refuses_growth_and_recovers_after_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let budget = 12_000;
    let cfg = StoreConfig {
        log: LogConfig {
            max_data_bytes: Some(budget),
            segment_bytes: 2048,
            ..LogConfig::default()
        },
        ..config()
    };
    let mut o = open(tmp.path(), 1, cfg, homes()).unwrap();
    let mut d = FsDriver::new(&o.shard_dirs[0]);
    let store = &mut o.stores[0];
    let mut n = 0;
    let refused = loop {
        let session = store.allocate_session_key();
        let open = Record::SessionOpened {
            session,
            client_id: &format!("c{n}"),
            protocol: Version::V311,
            expiry_interval_s: 60,
            opened_at_ms: n,
        };
        match store.append(&open) {
            Ok(_) => {}
            Err(e) => break e,
        }
        // Each session comes and goes: history grows, live state does not.
        store
            .append(&Record::SessionEnded {
                session,
                reason: ringmq::store::record::EndReason::Discarded,
            })
            .unwrap();
        d.flush(store, n).unwrap();
        n += 1;
        assert!(n < 10_000, "never refused");
    };
    assert_eq!(refused, AppendError::Refused(Refusal::DiskBudget));
    assert!(store.log_stats().refused_budget >= 1);
    // The refusal starts at the end of the turn that reached the budget: the disk holds
    // at most that turn beyond it.
    assert!(store.disk_bytes() <= budget + 200, "{}", store.disk_bytes());
    // Settling records still go in while growth is refused.
    assert!(
        store.compaction_due(n),
        "refused, and a snapshot would free room"
    );
    d.compact(store, n).unwrap().expect("a snapshot");
    d.flush(store, n).unwrap();
    d.delete_obsolete(store).unwrap();
    assert!(store.disk_bytes() < budget / 2, "{}", store.disk_bytes());
    store.take_batch(n);
    let session = store.allocate_session_key();
    let again = Record::SessionOpened {
        session,
        client_id: "after",
        protocol: Version::V311,
        expiry_interval_s: 60,
        opened_at_ms: 1,
    };
    assert_eq!(store.append(&again).map(|_| ()), Ok(()), "room again");
    d.flush(store, n + 1).unwrap();
    drop(o);
    let o = open_dir(tmp.path(), 1);
    assert_eq!(
        o.stores[0]
            .state()
            .sessions()
            .map(|s| s.client_id.to_string())
            .collect::<Vec<_>>(),
        vec!["after"]
    );
}

#[test]
fn no_space_refuses_growth_keeps_what_was_acknowledged_and_recovers_on_a_good_write() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut o, mut d) = shard_with_turns(tmp.path(), 2);
    let store = &mut o.stores[0];
    let before = store.state().view();
    let key = store.state().session_by_client("c0").unwrap().key;
    // The next batch fails with ENOSPC (as the driver reports it).
    store
        .append(&Record::InflightDone {
            session: key,
            pkid: 1,
            reason: Done::Acked,
        })
        .unwrap();
    let b = store.take_batch(100).unwrap();
    store.failed(100, ringmq::store::Failure::NoSpace);
    assert_eq!(store.refusing(), Some(Refusal::NoSpace));
    let grow = Record::InboundAdded {
        session: key,
        pkid: 10,
        id: 10,
    };
    assert_eq!(
        store.append(&grow),
        Err(AppendError::Refused(Refusal::NoSpace))
    );
    let settle = Record::Unqueued {
        session: key,
        msg: store.state().session(key).unwrap().queue[0].msg,
        reason: Unqueue::Dropped,
    };
    store.append(&settle).expect("settling records are taken");
    assert_eq!(store.log_stats().refused_no_space, 1);
    // Space returns: the same batch is retried and succeeds.
    assert_eq!(store.take_batch(150), None, "waits before retrying");
    d.flush(store, 300).unwrap();
    assert!(store.is_durable(b.last_lsn));
    assert_eq!(store.refusing(), None);
    store.append(&grow).expect("growth again");
    d.flush(store, 301).unwrap();
    drop(o);
    let o = open_dir(tmp.path(), 1);
    let after = o.stores[0].state().view();
    let c0 = &after.sessions["c0"];
    assert!(c0.inflight.is_empty() && c0.queue.is_empty() && c0.inbound_qos2 == vec![9, 10]);
    assert_eq!(after.sessions["c1"], before.sessions["c1"]);
}

#[test]
fn a_second_open_of_the_data_directory_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let first = open_dir(tmp.path(), 2);
    match open(tmp.path(), 2, config(), homes()) {
        Err(e @ OpenError::Lock(_)) => {
            let msg = e.to_string();
            assert!(msg.contains("another ringmq"), "{msg}");
            assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        }
        other => panic!("expected a lock error, got {other:?}"),
    }
    drop(first);
    open_dir(tmp.path(), 2);
}

#[test]
fn a_restart_with_another_shard_count_keeps_all_data() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = open_dir(tmp.path(), 3);
    let mut drivers: Vec<FsDriver> = o.shard_dirs.iter().map(FsDriver::new).collect();
    for n in 0..30u64 {
        let client = format!("client-{n}");
        let home = fnv(&client) % 3;
        client_turn(&mut o.stores[home], &client, n);
        drivers[home].flush(&mut o.stores[home], n).unwrap();
    }
    // A snapshot on one shard, so that data comes from snapshots and segments alike.
    drivers[1].compact(&mut o.stores[1], 99).unwrap();
    let before = merged(&o.stores);
    assert_eq!(before.sessions.len(), 30);
    assert_eq!(before.retained.len(), 10);
    drop((o, drivers));

    for shards in [2, 5, 1, 5] {
        let o = open_dir(tmp.path(), shards);
        assert_eq!(o.stores.len(), shards);
        assert_eq!(merged(&o.stores), before, "{shards} shards");
        for (i, store) in o.stores.iter().enumerate() {
            for s in store.state().sessions() {
                assert_eq!(fnv(&s.client_id) % shards, i, "sessions at their home");
            }
            for r in store.state().retained() {
                assert_eq!(fnv(&r.topic) % shards, i, "retained at its home");
            }
        }
        let generations: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.starts_with("gen-"))
            .collect();
        assert_eq!(
            generations.len(),
            1,
            "old generations removed: {generations:?}"
        );
    }
}

#[test]
fn duplicates_from_a_move_keep_the_later_session() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = open_dir(tmp.path(), 2);
    let mut drivers: Vec<FsDriver> = o.shard_dirs.iter().map(FsDriver::new).collect();
    // The same client on both shards: opened on 0, then (a move cut short by a crash)
    // on 1, later.
    for (shard, at) in [(0, 10), (1, 20)] {
        let store = &mut o.stores[shard];
        let session = store.allocate_session_key();
        store
            .append(&Record::SessionOpened {
                session,
                client_id: "mover",
                protocol: Version::V5,
                expiry_interval_s: 60,
                opened_at_ms: at,
            })
            .unwrap();
        drivers[shard].flush(store, at).unwrap();
    }
    drop((o, drivers));
    let mut o = open_dir(tmp.path(), 2);
    assert_eq!(o.report.duplicates, vec!["mover".to_string()]);
    assert!(o.stores[0].state().session_by_client("mover").is_none());
    assert_eq!(
        o.stores[1]
            .state()
            .session_by_client("mover")
            .map(|s| s.opened_at_ms),
        Some(20)
    );
    // The end was logged: after it is written, a restart finds no duplicate.
    let mut d0 = FsDriver::new(&o.shard_dirs[0]);
    d0.flush(&mut o.stores[0], 30).unwrap();
    drop(o);
    let o = open_dir(tmp.path(), 2);
    assert!(o.report.duplicates.is_empty());
}

#[test]
fn a_manifest_of_another_format_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(open_dir(tmp.path(), 1));
    fs::write(
        tmp.path().join("MANIFEST"),
        "ringmq-store 2\ngeneration 1\nshards 1\n",
    )
    .unwrap();
    match open(tmp.path(), 1, config(), homes()) {
        Err(OpenError::Manifest { what, .. }) => assert!(what.contains("format"), "{what}"),
        other => panic!("expected a manifest error, got {other:?}"),
    }
}

#[test]
fn recovery_reports_its_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, _) = shard_with_turns(tmp.path(), 3);
    let lsn = o.stores[0].durable_lsn();
    drop(o);
    let o = open_dir(tmp.path(), 1);
    let stats = o.report.stats[0];
    assert_eq!(stats.segments, 1);
    // Every record and commit of the three turns.
    assert_eq!(stats.records, lsn.0);
    assert!(o.stores[0].durable_lsn() == lsn && o.stores[0].is_durable(Lsn(1)));
}

#[test]
fn empty_segments_made_ahead_of_need_are_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, _) = shard_with_turns(tmp.path(), 3);
    let full = merged(&o.stores);
    let dir = o.shard_dirs[0].clone();
    drop(o);
    // A driver keeps the next segments created before they are needed; a crash leaves
    // them empty.
    for seq in [2, 3] {
        fs::write(dir.join(StoreFile::Segment(seq).name()), b"").unwrap();
    }
    let o = open_dir(tmp.path(), 1);
    assert_eq!(merged(&o.stores), full);
    assert!(!dir.join(StoreFile::Segment(3).name()).exists(), "deleted");
    drop(o);
    // With nothing written at all, too.
    let tmp = tempfile::tempdir().unwrap();
    let o = open_dir(tmp.path(), 1);
    let dir = o.shard_dirs[0].clone();
    drop(o);
    for seq in [1, 2] {
        fs::write(dir.join(StoreFile::Segment(seq).name()), b"").unwrap();
    }
    let o = open_dir(tmp.path(), 1);
    assert!(merged(&o.stores).sessions.is_empty());
}
