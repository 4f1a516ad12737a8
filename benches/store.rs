//! The store's costs on a shard, and recovery speed.
//!
//! - `store_append`: one QoS 1 delivery's life in the log, as the live path makes it:
//!   message stored (100-byte payload), queued, unqueued, sent, acknowledged: five
//!   records applied to the state and encoded (CRC included), a batch taken every 64
//!   deliveries. Throughput counts records.
//! - `store_encode`: encoding alone, a queued delivery and a stored message.
//! - `store_recover`: recovering a shard from memory: 10,000 persistent sessions with a
//!   subscription each and 20,000 queued messages, as segments (the whole history) and
//!   as a snapshot of the same state. Throughput counts bytes; records/s is the same
//!   run divided by the record count printed at the start.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringmq::store::log::LogConfig;
use ringmq::store::record::{Content, Deadline, Done, MessageData, SubIdList, Unqueue};
use ringmq::store::recover::{MemFiles, recover_shard};
use ringmq::store::segment::StoreFile;
use ringmq::store::{Delivery, Lsn, Record, SessionKey, ShardStore, StoreConfig};
use ringmq_proto::mqtt::{QoS, SubscriptionOptions, Version};

const PAYLOAD: [u8; 100] = [0x5A; 100];

fn message(payload: &[u8]) -> MessageData<'_> {
    MessageData {
        qos: QoS::AtLeastOnce,
        retain: false,
        expires_at: Deadline::NONE,
        content: Content {
            topic: "devices/eu-west/42/telemetry",
            props: &[],
            payload,
        },
    }
}

fn config() -> StoreConfig {
    StoreConfig {
        log: LogConfig {
            segment_bytes: 1 << 40,
            ..LogConfig::default()
        },
        ..StoreConfig::default()
    }
}

fn append(c: &mut Criterion) {
    let mut store = ShardStore::new(0, config());
    let session = store.allocate_session_key();
    store
        .append(&Record::SessionOpened {
            session,
            client_id: "subscriber-0001",
            protocol: Version::V5,
            expiry_interval_s: 3600,
            opened_at_ms: 1,
        })
        .unwrap();
    let mut n = 0u64;
    let mut group = c.benchmark_group("store_append");
    group.throughput(Throughput::Elements(5));
    group.bench_function("qos1_delivery_5_records", |b| {
        b.iter(|| {
            let msg = store.allocate_msg_id();
            let delivery = Delivery {
                msg,
                qos: QoS::AtLeastOnce,
                retain: false,
                sub_ids: SubIdList::default(),
            };
            let recs = [
                Record::MessageStored {
                    id: msg,
                    message: message(black_box(&PAYLOAD)),
                },
                Record::Enqueued { session, delivery },
                Record::Unqueued {
                    session,
                    msg,
                    reason: Unqueue::Sending,
                },
                Record::Sent {
                    session,
                    pkid: 1,
                    delivery,
                },
                Record::InflightDone {
                    session,
                    pkid: 1,
                    reason: Done::Acked,
                },
            ];
            for r in &recs {
                store.append(r).unwrap();
            }
            n += 1;
            if n.is_multiple_of(64)
                && let Some(b) = store.take_batch(0)
            {
                store.synced(b.last_lsn);
            }
        })
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_encode");
    let delivery = Delivery {
        msg: ringmq::store::MsgId(77),
        qos: QoS::AtLeastOnce,
        retain: false,
        sub_ids: SubIdList::new(&[3]).unwrap(),
    };
    let recs = [
        (
            "enqueued",
            Record::Enqueued {
                session: SessionKey(9),
                delivery,
            },
        ),
        (
            "message_100B",
            Record::MessageStored {
                id: ringmq::store::MsgId(77),
                message: message(&PAYLOAD),
            },
        ),
    ];
    let mut out = Vec::with_capacity(1 << 16);
    for (name, rec) in recs {
        group.throughput(Throughput::Bytes(rec.frame_len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                if out.len() > 60_000 {
                    out.clear();
                }
                black_box(&rec).encode(Lsn(12345), &mut out).unwrap()
            })
        });
    }
    group.finish();
}

/// A shard's files after 10,000 sessions subscribed and 20,000 messages queued to them,
/// 100 records a turn: the segments, and a snapshot of the same state.
fn shard_files() -> (MemFiles, MemFiles, u64) {
    let mut store = ShardStore::new(0, config());
    let mut segment = Vec::new();
    let mut records = 0u64;
    let flush = |store: &mut ShardStore, segment: &mut Vec<u8>| {
        while let Some(b) = store.take_batch(0) {
            segment.extend_from_slice(store.batch_bytes());
            store.synced(b.last_lsn);
        }
    };
    let mut keys = Vec::new();
    for i in 0..10_000 {
        let session = store.allocate_session_key();
        let client = format!("device-{i:06}");
        let filter = format!("devices/{i}/cmd");
        for r in [
            Record::SessionOpened {
                session,
                client_id: &client,
                protocol: Version::V311,
                expiry_interval_s: u32::MAX,
                opened_at_ms: i,
            },
            Record::SubAdded {
                session,
                filter: &filter,
                options: SubscriptionOptions::new(QoS::AtLeastOnce),
                sub_id: 0,
            },
        ] {
            store.append(&r).unwrap();
            records += 1;
        }
        keys.push(session);
        if i % 50 == 49 {
            flush(&mut store, &mut segment);
        }
    }
    for i in 0..20_000usize {
        let msg = store.allocate_msg_id();
        store
            .append(&Record::MessageStored {
                id: msg,
                message: message(&PAYLOAD),
            })
            .unwrap();
        let delivery = Delivery {
            msg,
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: SubIdList::default(),
        };
        store
            .append(&Record::Enqueued {
                session: keys[i % keys.len()],
                delivery,
            })
            .unwrap();
        records += 2;
        if i % 50 == 49 {
            flush(&mut store, &mut segment);
        }
    }
    flush(&mut store, &mut segment);
    let mut log = BTreeMap::new();
    log.insert(StoreFile::Segment(1).name(), segment);
    let seq = store.begin_snapshot().unwrap();
    let mut snap = Vec::new();
    while let Some(chunk) = store.snapshot_chunk() {
        snap.extend_from_slice(&chunk.bytes);
    }
    let mut snapshot = BTreeMap::new();
    snapshot.insert(StoreFile::Snapshot(seq).name(), snap);
    (MemFiles(log), MemFiles(snapshot), records)
}

fn recover(c: &mut Criterion) {
    let (log, snapshot, records) = shard_files();
    let mut group = c.benchmark_group("store_recover");
    group.sample_size(10);
    for (name, files) in [("segments", &log), ("snapshot", &snapshot)] {
        let bytes: usize = files.0.values().map(Vec::len).sum();
        eprintln!("store_recover/{name}: {bytes} bytes, {records} records of history");
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let r = recover_shard(0, black_box(files)).unwrap();
                assert_eq!(r.state.messages_len(), 20_000);
                r.state.live_bytes()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, append, encode, recover);
criterion_main!(benches);
