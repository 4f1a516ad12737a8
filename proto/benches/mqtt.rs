//! MQTT hot path: decoding and encoding a PUBLISH with a 64-byte and a 1 KiB payload, in
//! 3.1.1 and in 5.0 with a typical set of properties. Throughput counts whole packets.
//!
//! Encoding is measured three ways: the whole packet into a slice, appended to a `Vec`
//! that keeps its capacity, and the head alone (what fan-out writes per subscriber, the
//! payload being shared).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringmq_proto::Decoded;
use ringmq_proto::mqtt::{Packet, Properties, Property, Publish, QoS, Version, decode};

const SIZES: [(&str, usize); 2] = [("64B", 64), ("1KiB", 1024)];
const VERSIONS: [(&str, Version); 2] = [("v311", Version::V311), ("v5", Version::V5)];

/// What a v5 publisher commonly sends along with a message.
const PROPERTIES: &[Property<'static>] = &[
    Property::MessageExpiryInterval(300),
    Property::ContentType("application/json"),
    Property::SubscriptionIdentifier(12),
    Property::UserProperty("trace-id", "4bf92f3577b34da6"),
];

fn publish(version: Version, payload: &[u8]) -> Publish<'_> {
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "devices/eu-west/42/telemetry",
        pkid: 4242,
        properties: match version {
            Version::V311 => Properties::EMPTY,
            Version::V5 => Properties::List(PROPERTIES),
        },
        payload,
    }
}

fn decode_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("mqtt_publish_decode");
    for (vname, version) in VERSIONS {
        for (name, len) in SIZES {
            let payload = vec![0x5A; len];
            let mut bytes = Vec::new();
            Packet::Publish(publish(version, &payload))
                .encode_to_vec(version, &mut bytes)
                .expect("encodes");
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_function(BenchmarkId::new(vname, name), |b| {
                b.iter(|| match decode(black_box(&bytes), version, u32::MAX) {
                    Ok(Decoded::Complete(Packet::Publish(p), used)) => p.payload.len() + used,
                    _ => 0,
                })
            });
        }
    }
    group.finish();
}

fn encode_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("mqtt_publish_encode");
    for (vname, version) in VERSIONS {
        for (name, len) in SIZES {
            let payload = vec![0x5A; len];
            let p = publish(version, &payload);
            let packet = Packet::Publish(p.clone());
            let total = packet.encoded_len(version);
            let mut slice = vec![0u8; total];
            let mut vec = Vec::with_capacity(total);
            let mut head = [0u8; 128];
            group.throughput(Throughput::Bytes(total as u64));
            group.bench_function(BenchmarkId::new(format!("{vname}/slice"), name), |b| {
                b.iter(|| black_box(&packet).encode(version, &mut slice))
            });
            group.bench_function(BenchmarkId::new(format!("{vname}/vec"), name), |b| {
                b.iter(|| {
                    vec.clear();
                    black_box(&packet).encode_to_vec(version, &mut vec)
                })
            });
            group.bench_function(BenchmarkId::new(format!("{vname}/head"), name), |b| {
                b.iter(|| black_box(&p).encode_head(version, &mut head))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, decode_publish, encode_publish);
criterion_main!(benches);
