//! The checks behind the store's fuzz targets, kept in the library so that the targets
//! are one line each and the tests run the same logic. They panic on a failed check;
//! that is their purpose.

use std::collections::BTreeMap;

use ringmq_proto::Decoded;

use super::record::{FRAME_HEAD, Lsn, decode_body, decode_frame, samples};
use super::recover::{MemFiles, recover_shard};
use super::segment::{HEADER_LEN, Header, Kind, StoreFile};
use super::snapshot;
use super::state::State;

/// Frames shorter than this are also fed at every split point (quadratic).
const SPLIT_LIMIT: usize = 256;

/// Decodes every frame at the front of `data` and checks each one: the same result
/// alone and at every split point, re-encoding gives the same bytes, the body decodes
/// alone to the same record.
pub fn fuzz_record(data: &[u8]) {
    let mut rest = data;
    while let Ok(Decoded::Complete(frame, used)) = decode_frame(rest) {
        let bytes = &rest[..used];
        assert_eq!(decode_frame(bytes), Ok(Decoded::Complete(frame, used)));
        if used <= SPLIT_LIMIT {
            for cut in 0..used {
                assert!(
                    matches!(decode_frame(&bytes[..cut]), Ok(Decoded::Partial { need }) if need >= 1),
                    "a cut frame is partial"
                );
            }
        }
        let mut again = Vec::new();
        let n = frame
            .record
            .encode(frame.lsn, &mut again)
            .expect("a decoded record encodes");
        assert_eq!(n, used);
        assert_eq!(again, bytes, "re-encoding gives the same bytes");
        assert_eq!(decode_body(&bytes[FRAME_HEAD..]), Ok(frame.record));
        rest = &rest[used..];
    }
}

/// Takes `data` as the segments of a shard (split at the first `0xff 0xff` pair into a
/// first and a second segment, each given a valid header unless it starts with the
/// magic) and recovers it: whatever the bytes, recovery returns a state or an error,
/// never panics; a state it returns survives a snapshot and a reload unchanged.
pub fn fuzz_segment(data: &[u8]) {
    let (first, second) = match data.windows(2).position(|w| w == [0xff, 0xff]) {
        Some(i) => (&data[..i], Some(&data[i + 2..])),
        None => (data, None),
    };
    let mut files = BTreeMap::new();
    files.insert(StoreFile::Segment(1).name(), as_segment(first, 1, Lsn(1)));
    if let Some(second) = second {
        // Its first LSN is whatever the first segment ends at; take a guess the
        // fuzzer can hit.
        let lsn = Lsn(1 + first.len() as u64 / 25);
        files.insert(StoreFile::Segment(2).name(), as_segment(second, 2, lsn));
    }
    let files = MemFiles(files);
    let Ok(r) = recover_shard(0, &files) else {
        return;
    };
    let base = Lsn(r.resume.next_lsn.0 - 1);
    check_snapshot_round_trip(r.state, base);
}

fn as_segment(bytes: &[u8], seq: u64, lsn: Lsn) -> Vec<u8> {
    if bytes.starts_with(&super::segment::MAGIC) {
        return bytes.to_vec();
    }
    let header = Header {
        kind: Kind::Log,
        shard: 0,
        seq,
        lsn,
    };
    let mut out = header.encode().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// Writes `state` (the state as of `base`) as a snapshot, loads it into a new state,
/// and checks both agree, and that the snapshot is `live_bytes` long plus its framing.
pub fn check_snapshot_round_trip(mut state: State, base: Lsn) -> State {
    let before = state.view();
    let live = state.live_bytes();
    state.begin_snapshot(0, 9, base);
    let mut bytes = Vec::new();
    while let Some(chunk) = state.snapshot_step(1 << 16) {
        assert_eq!(chunk.offset, bytes.len() as u64);
        bytes.extend_from_slice(&chunk.bytes);
    }
    let end = super::record::Record::SnapshotEnd { base_lsn: base }.frame_len();
    assert_eq!(
        bytes.len() as u64,
        HEADER_LEN as u64 + live + end as u64,
        "live_bytes is what a snapshot takes"
    );
    let mut loaded = State::new();
    let loaded_base = snapshot::load(&mut &bytes[..], 0, 9, &mut loaded);
    assert_eq!(loaded_base, Ok(base), "a snapshot loads");
    assert_eq!(loaded.view(), before);
    assert_eq!(loaded.live_bytes(), live);
    loaded
}

/// Seeds for the fuzz targets: every record kind alone and all in a row (`record`),
/// and a segment a store wrote for a few sessions' worth of traffic (`segment`).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut all = Vec::new();
    for (i, rec) in samples().iter().enumerate() {
        let mut one = Vec::new();
        if rec.encode(Lsn(1 + i as u64), &mut one).is_ok() {
            all.extend_from_slice(&one);
            out.push(("record", one));
        }
    }
    out.push(("record", all));
    out.push(("segment", sample_segment()));
    out
}

/// A segment as a store writes it: sessions opened, subscribed, messages stored,
/// queued, sent, acknowledged, a retained message, a will; one batch per turn.
pub fn sample_segment() -> Vec<u8> {
    use super::record::{Content, Deadline, Delivery, Done, MessageData, SubIdList, Unqueue};
    use super::shard_store::{ShardStore, StoreConfig};
    use ringmq_proto::mqtt::{QoS, SubscriptionOptions, Version};

    let mut store = ShardStore::new(0, StoreConfig::default());
    let mut segment = Vec::new();
    let mut turn = |store: &mut ShardStore, recs: &[super::record::Record<'_>]| {
        for r in recs {
            store.append(r).expect("a consistent sample");
        }
        while let Some(b) = store.take_batch(0) {
            segment.extend_from_slice(store.batch_bytes());
            store.synced(b.last_lsn);
        }
    };
    use super::record::Record as R;
    let (a, b) = (store.allocate_session_key(), store.allocate_session_key());
    let m = store.allocate_msg_id();
    let content = Content {
        topic: "t/1",
        props: &[1, 0, 0, 0, 9],
        payload: b"hello",
    };
    let d = Delivery {
        msg: m,
        qos: QoS::AtLeastOnce,
        retain: false,
        sub_ids: SubIdList::new(&[4]).unwrap_or_default(),
    };
    turn(
        &mut store,
        &[
            R::SessionOpened {
                session: a,
                client_id: "a",
                protocol: Version::V5,
                expiry_interval_s: 60,
                opened_at_ms: 1,
            },
            R::SubAdded {
                session: a,
                filter: "t/+",
                options: SubscriptionOptions::new(QoS::ExactlyOnce),
                sub_id: 4,
            },
            R::SessionOpened {
                session: b,
                client_id: "b",
                protocol: Version::V311,
                expiry_interval_s: u32::MAX,
                opened_at_ms: 2,
            },
        ],
    );
    turn(
        &mut store,
        &[
            R::MessageStored {
                id: m,
                message: MessageData {
                    qos: QoS::ExactlyOnce,
                    retain: true,
                    expires_at: Deadline::at_ms(99),
                    content,
                },
            },
            R::Enqueued {
                session: a,
                delivery: d,
            },
            R::Sent {
                session: b,
                pkid: 7,
                delivery: Delivery {
                    qos: QoS::ExactlyOnce,
                    ..d
                },
            },
            R::RetainSet { version: 1, msg: m },
            R::InboundAdded {
                session: a,
                pkid: 3,
                id: 77,
            },
        ],
    );
    turn(
        &mut store,
        &[
            R::Released {
                session: b,
                pkid: 7,
            },
            R::Unqueued {
                session: a,
                msg: m,
                reason: Unqueue::Sending,
            },
            R::Sent {
                session: a,
                pkid: 1,
                delivery: d,
            },
            R::SessionOffline {
                session: b,
                expires_at: Deadline::at_ms(5000),
                will_at: Deadline::NONE,
            },
        ],
    );
    turn(
        &mut store,
        &[
            R::InflightDone {
                session: a,
                pkid: 1,
                reason: Done::Acked,
            },
            R::InboundReleased {
                session: a,
                pkid: 3,
            },
            R::SubRemoved {
                session: a,
                filter: "t/+",
            },
        ],
    );
    segment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_pass_the_checks() {
        for (_, seed) in seeds() {
            fuzz_record(&seed);
            fuzz_segment(&seed);
        }
    }

    #[test]
    fn garbage_does_not_panic() {
        let mut x: u32 = 12345;
        for len in [0usize, 1, 15, 16, 17, 40, 100, 1000] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            fuzz_record(&data);
            fuzz_segment(&data);
        }
    }
}
