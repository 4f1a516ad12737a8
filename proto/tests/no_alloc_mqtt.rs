//! The MQTT hot path allocates nothing: framing a stream of packets in place (and through
//! a carry buffer that has the capacity), decoding a PUBLISH (3.1.1, and 5.0 with
//! properties, including reading them through the getters), encoding a PUBLISH into a
//! `Vec` that has the capacity, into a `&mut [u8]`, and as a head for a vectored write, and
//! stamping copies of a fan-out's PUBLISH. A counting global allocator proves it.
//!
//! The counter is per thread, so the test harness's own threads do not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use ringmq_proto::Decoded;
use ringmq_proto::mqtt::{
    Framer, Packet, Properties, Property, Publish, PublishTemplate, QoS, SubscribeFilters,
    SubscriptionOptions, Version, decode,
};

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// Counts allocations and reallocations on the current thread, then defers to `System`.
struct Counting;

// SAFETY: every call is passed unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count() {
    // `try_with`: a thread being torn down may still free and allocate.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations_in(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

const PROPERTIES: &[Property<'static>] = &[
    Property::PayloadFormatIndicator(1),
    Property::MessageExpiryInterval(60),
    Property::ContentType("application/json"),
    Property::ResponseTopic("replies/42"),
    Property::CorrelationData(b"corr"),
    Property::SubscriptionIdentifier(7),
    Property::SubscriptionIdentifier(9),
    Property::TopicAlias(3),
    Property::UserProperty("trace", "abc"),
];

fn publish(version: Version, payload: &[u8]) -> Publish<'_> {
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "devices/42/telemetry",
        pkid: 42,
        properties: match version {
            Version::V311 => Properties::EMPTY,
            Version::V5 => Properties::List(PROPERTIES),
        },
        payload,
    }
}

/// The counter sees what it should, so a zero below means something.
#[test]
fn the_counter_counts() {
    assert_eq!(
        allocations_in(|| drop(black_box(Vec::<u8>::with_capacity(1)))),
        1
    );
}

#[test]
fn decoding_a_publish_allocates_nothing() {
    let payload = [0x5A; 1024];
    for version in [Version::V311, Version::V5] {
        let packet = Packet::Publish(publish(version, &payload));
        let mut bytes = Vec::new();
        packet.encode_to_vec(version, &mut bytes).unwrap();
        let n = allocations_in(|| {
            let Ok(Decoded::Complete(Packet::Publish(p), used)) =
                decode(black_box(&bytes), version, u32::MAX)
            else {
                panic!("not a PUBLISH");
            };
            assert_eq!(used, bytes.len());
            // Reading the properties walks the borrowed block.
            black_box(p.properties.topic_alias());
            black_box(p.properties.content_type());
            black_box(p.properties.subscription_identifiers().sum::<u32>());
            black_box(p.properties.user_properties().count());
            black_box(p.payload.len());
            // Every prefix: Partial, still without allocating.
            for split in 0..bytes.len() {
                let partial = decode(&bytes[..split], version, u32::MAX);
                assert!(matches!(partial, Ok(Decoded::Partial { .. })));
            }
        });
        assert_eq!(n, 0, "{version:?}");
    }
}

#[test]
fn encoding_a_publish_allocates_nothing() {
    let payload = [0x5A; 1024];
    for version in [Version::V311, Version::V5] {
        let p = publish(version, &payload);
        let packet = Packet::Publish(p.clone());
        let len = packet.encoded_len(version);
        let mut vec = Vec::with_capacity(4 * len);
        let mut slice = vec![0u8; len];
        let mut head = [0u8; 128];
        let n = allocations_in(|| {
            for _ in 0..4 {
                assert_eq!(packet.encode_to_vec(version, &mut vec), Ok(len));
            }
            assert_eq!(packet.encode(version, &mut slice), Ok(len));
            assert_eq!(p.encode_head(version, &mut head), Ok(p.head_len(version)));
        });
        assert_eq!(n, 0, "{version:?}");
        assert_eq!(vec.len(), 4 * len);
        assert_eq!(slice[..], vec[..len]);
    }
}

/// Not only PUBLISH: a SUBSCRIBE's filters are walked in place too.
#[test]
fn decoding_a_subscribe_allocates_nothing() {
    let filters = [
        ("a/+/c", SubscriptionOptions::new(QoS::AtLeastOnce)),
        ("$share/g/#", SubscriptionOptions::new(QoS::AtMostOnce)),
    ];
    let packet = Packet::Subscribe(ringmq_proto::mqtt::Subscribe {
        pkid: 1,
        properties: Properties::List(&[Property::SubscriptionIdentifier(5)]),
        filters: SubscribeFilters::List(&filters),
    });
    let mut bytes = Vec::new();
    packet.encode_to_vec(Version::V5, &mut bytes).unwrap();
    let n = allocations_in(|| {
        let Ok(Decoded::Complete(Packet::Subscribe(s), _)) =
            decode(black_box(&bytes), Version::V5, u32::MAX)
        else {
            panic!("not a SUBSCRIBE");
        };
        assert_eq!(s.filters.len(), 2);
        black_box(
            s.filters
                .iter()
                .map(|(f, o)| f.len() + o.qos as usize)
                .sum::<usize>(),
        );
    });
    assert_eq!(n, 0);
}

#[test]
fn framing_a_stream_allocates_nothing() {
    let payload = [0x5A; 300];
    for version in [Version::V311, Version::V5] {
        let packet = Packet::Publish(publish(version, &payload));
        let mut stream = Vec::new();
        for _ in 0..3 {
            packet.encode_to_vec(version, &mut stream).unwrap();
        }
        let one = stream.len() / 3;
        // A carry buffer that has held a packet before keeps its capacity.
        let carry = Vec::with_capacity(2 * one);
        let n = allocations_in(|| {
            // The stream cut inside the second packet: the first is framed in place, the
            // second through the carry buffer, the third in place again.
            let cut = one + one / 2;
            let mut framer = Framer::new(carry, black_box(&stream[..cut]), u32::MAX);
            let mut frames = 0;
            while let Ok(Decoded::Complete(frame, _)) = framer.next_frame(version) {
                assert!(matches!(frame.decode(version), Ok(Packet::Publish(_))));
                frames += 1;
            }
            let mut framer = Framer::new(framer.into_carry(), &stream[cut..], u32::MAX);
            while let Ok(Decoded::Complete(frame, _)) = framer.next_frame(version) {
                assert!(matches!(frame.decode(version), Ok(Packet::Publish(_))));
                frames += 1;
            }
            assert_eq!(frames, 3);
            black_box(framer.into_carry());
        });
        assert_eq!(n, 0, "{version:?}");
    }
}

#[test]
fn stamping_a_fan_out_allocates_nothing_once_encoded() {
    let payload = [0x5A; 1024];
    for version in [Version::V311, Version::V5] {
        let p = publish(version, &payload);
        let mut template = PublishTemplate::default();
        template.encode(&p, version).unwrap();
        let mut out = Vec::with_capacity(100 * template.len());
        let n = allocations_in(|| {
            // The next message of the fan-out reuses the template's buffer.
            template.encode(black_box(&p), version).unwrap();
            for pkid in 1..=100 {
                template.stamp_to_vec(pkid, &mut out);
            }
        });
        assert_eq!(n, 0, "{version:?}");
        assert_eq!(out.len(), 100 * template.len());
    }
}
