//! Property tests: arbitrary PUBLISH, SUBSCRIBE and CONNECT values (with every property they
//! may carry, in any order) round-trip through encode and decode and survive every split
//! point; arbitrary bytes never panic the decoder, and what it reports it consumed is all
//! it looked at.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use ringmq_proto::Decoded;
use ringmq_proto::mqtt::{
    Connect, MAX_VARINT, Packet, Properties, Property, Publish, QoS, Subscribe, SubscribeFilters,
    SubscriptionOptions, Version, Will, check_round_trip, check_split_feed, decode, fuzz_decode,
};

/// Split-feed checks are quadratic in the packet length; longer packets get the round trip
/// only.
const SPLIT_FEED_MAX: usize = 160;

/// An owned property, so a strategy can produce it; [`P::get`] borrows it as a `Property`.
#[derive(Debug, Clone)]
enum P {
    PayloadFormat(u8),
    MessageExpiry(u32),
    ContentType(String),
    ResponseTopic(String),
    Correlation(Vec<u8>),
    SubscriptionId(u32),
    TopicAlias(u16),
    User(String, String),
    SessionExpiry(u32),
    ReceiveMaximum(u16),
    MaximumPacketSize(u32),
    TopicAliasMaximum(u16),
    RequestProblem(u8),
    RequestResponse(u8),
    AuthMethod(String),
    AuthData(Vec<u8>),
    WillDelay(u32),
}

impl P {
    fn get(&self) -> Property<'_> {
        match self {
            P::PayloadFormat(v) => Property::PayloadFormatIndicator(*v),
            P::MessageExpiry(v) => Property::MessageExpiryInterval(*v),
            P::ContentType(s) => Property::ContentType(s),
            P::ResponseTopic(s) => Property::ResponseTopic(s),
            P::Correlation(b) => Property::CorrelationData(b),
            P::SubscriptionId(v) => Property::SubscriptionIdentifier(*v),
            P::TopicAlias(v) => Property::TopicAlias(*v),
            P::User(k, v) => Property::UserProperty(k, v),
            P::SessionExpiry(v) => Property::SessionExpiryInterval(*v),
            P::ReceiveMaximum(v) => Property::ReceiveMaximum(*v),
            P::MaximumPacketSize(v) => Property::MaximumPacketSize(*v),
            P::TopicAliasMaximum(v) => Property::TopicAliasMaximum(*v),
            P::RequestProblem(v) => Property::RequestProblemInformation(*v),
            P::RequestResponse(v) => Property::RequestResponseInformation(*v),
            P::AuthMethod(s) => Property::AuthenticationMethod(s),
            P::AuthData(b) => Property::AuthenticationData(b),
            P::WillDelay(v) => Property::WillDelayInterval(*v),
        }
    }
}

fn borrow(props: &[P]) -> Vec<Property<'_>> {
    props.iter().map(P::get).collect()
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,8}"
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _$é/-]{1,16}"
}

fn topic_filter() -> impl Strategy<Value = String> {
    (
        vec(prop_oneof!["[a-z0-9é$]{0,5}", Just("+".to_string())], 1..5),
        any::<bool>(),
    )
        .prop_map(|(mut levels, multi)| {
            if multi {
                levels.push("#".to_string());
            }
            let filter = levels.join("/");
            if filter.is_empty() {
                "a".into()
            } else {
                filter
            }
        })
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V311), Just(Version::V5)]
}

fn user_properties() -> impl Strategy<Value = Vec<P>> {
    vec((text(), text()).prop_map(|(k, v)| P::User(k, v)), 0..3)
}

/// Each single-valued property at most once, repeatable ones any number of times, in any
/// order.
fn shuffled(parts: Vec<Vec<P>>) -> impl Strategy<Value = Vec<P>> {
    Just(parts.concat()).prop_shuffle()
}

/// The properties of a PUBLISH (and, without topic alias and subscription identifiers, of
/// a will).
fn message_properties(publish: bool) -> impl Strategy<Value = Vec<P>> {
    (
        option::of((0u8..=1).prop_map(P::PayloadFormat)),
        option::of(any::<u32>().prop_map(P::MessageExpiry)),
        option::of(text().prop_map(P::ContentType)),
        option::of(topic_name().prop_map(P::ResponseTopic)),
        option::of(bytes(8).prop_map(P::Correlation)),
        vec((1..=MAX_VARINT as u32).prop_map(P::SubscriptionId), 0..3),
        option::of((1..=u16::MAX).prop_map(P::TopicAlias)),
        user_properties(),
        option::of(any::<u32>().prop_map(P::WillDelay)),
    )
        .prop_flat_map(move |(pfi, mei, ct, rt, cd, sids, alias, users, delay)| {
            let mut parts = vec![
                pfi.into_iter().collect(),
                mei.into_iter().collect(),
                ct.into_iter().collect(),
                rt.into_iter().collect(),
                cd.into_iter().collect(),
                users,
            ];
            if publish {
                parts.push(sids);
                parts.push(alias.into_iter().collect());
            } else {
                parts.push(delay.into_iter().collect());
            }
            shuffled(parts)
        })
}

fn connect_properties() -> impl Strategy<Value = Vec<P>> {
    (
        option::of(any::<u32>().prop_map(P::SessionExpiry)),
        option::of((1..=u16::MAX).prop_map(P::ReceiveMaximum)),
        option::of((1..=u32::MAX).prop_map(P::MaximumPacketSize)),
        option::of(any::<u16>().prop_map(P::TopicAliasMaximum)),
        option::of((0u8..=1).prop_map(P::RequestProblem)),
        option::of((0u8..=1).prop_map(P::RequestResponse)),
        option::of((text(), option::of(bytes(8)))),
        user_properties(),
    )
        .prop_flat_map(|(se, rm, mps, tam, rpi, rri, auth, users)| {
            let auth: Vec<P> = match auth {
                Some((method, data)) => std::iter::once(P::AuthMethod(method))
                    .chain(data.map(P::AuthData))
                    .collect(),
                None => Vec::new(),
            };
            shuffled(vec![
                se.into_iter().collect(),
                rm.into_iter().collect(),
                mps.into_iter().collect(),
                tam.into_iter().collect(),
                rpi.into_iter().collect(),
                rri.into_iter().collect(),
                auth,
                users,
            ])
        })
}

/// Properties only exist in MQTT 5.
fn in_version<'a>(version: Version, props: &'a [Property<'a>]) -> Properties<'a> {
    match version {
        Version::V311 => Properties::EMPTY,
        Version::V5 => Properties::List(props),
    }
}

/// Round trip, and the split-feed checks for packets short enough.
fn check(packet: &Packet<'_>, version: Version) {
    let bytes = check_round_trip(packet, version);
    if bytes.len() <= SPLIT_FEED_MAX {
        assert_eq!(&check_split_feed(&bytes, version), packet);
    }
}

#[derive(Debug, Clone)]
struct OwnedWill {
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
    properties: Vec<P>,
}

fn will() -> impl Strategy<Value = OwnedWill> {
    (
        topic_name(),
        bytes(16),
        qos(),
        any::<bool>(),
        message_properties(false),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| OwnedWill {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

proptest! {
    #[test]
    fn publish_round_trips(
        version in version(),
        qos in qos(),
        dup in any::<bool>(),
        retain in any::<bool>(),
        topic in topic_name(),
        pkid in 1..=u16::MAX,
        properties in message_properties(true),
        payload in prop_oneof![bytes(48), bytes(2000)],
    ) {
        let props = borrow(&properties);
        let qos0 = qos == QoS::AtMostOnce;
        let packet = Packet::Publish(Publish {
            dup: dup && !qos0,
            qos,
            retain,
            topic: &topic,
            pkid: if qos0 { 0 } else { pkid },
            properties: in_version(version, &props),
            payload: &payload,
        });
        check(&packet, version);
    }

    #[test]
    fn subscribe_round_trips(
        version in version(),
        pkid in 1..=u16::MAX,
        id in option::of((1..=MAX_VARINT as u32).prop_map(P::SubscriptionId)),
        users in user_properties(),
        filters in vec(
            (topic_filter(), qos(), any::<bool>(), any::<bool>(), 0u8..=2),
            1..5,
        ),
    ) {
        let properties: Vec<P> = id.into_iter().chain(users).collect();
        let props = borrow(&properties);
        let filters: Vec<(&str, SubscriptionOptions)> = filters
            .iter()
            .map(|(f, qos, nl, rap, rh)| {
                let options = match version {
                    Version::V311 => SubscriptionOptions::new(*qos),
                    Version::V5 => SubscriptionOptions {
                        qos: *qos,
                        no_local: *nl,
                        retain_as_published: *rap,
                        retain_handling: *rh,
                    },
                };
                (f.as_str(), options)
            })
            .collect();
        let packet = Packet::Subscribe(Subscribe {
            pkid,
            properties: in_version(version, &props),
            filters: SubscribeFilters::List(&filters),
        });
        check(&packet, version);
    }

    #[test]
    fn connect_round_trips(
        version in version(),
        clean_start in any::<bool>(),
        keep_alive in any::<u16>(),
        client_id in text(),
        will in option::of(will()),
        username in option::of(text()),
        password in option::of(bytes(12)),
        properties in connect_properties(),
    ) {
        let props = borrow(&properties);
        let will_props = will.as_ref().map(|w| borrow(&w.properties)).unwrap_or_default();
        // 3.1.1 allows no password without a user name.
        let password = match (version, &username) {
            (Version::V311, None) => None,
            _ => password,
        };
        let packet = Packet::Connect(Connect {
            version,
            clean_start,
            keep_alive,
            client_id: &client_id,
            will: will.as_ref().map(|w| Will {
                topic: &w.topic,
                payload: &w.payload,
                qos: w.qos,
                retain: w.retain,
                properties: in_version(version, &will_props),
            }),
            username: username.as_deref(),
            password: password.as_deref(),
            properties: in_version(version, &props),
        });
        check(&packet, version);
    }

    /// Never a panic, and every decoded packet passes the fuzz target's checks.
    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(96)) {
        fuzz_decode(&data);
    }

    /// Arbitrary bodies behind a correct remaining length reach every packet decoder.
    #[test]
    fn arbitrary_bodies_never_panic(first in any::<u8>(), body in bytes(64)) {
        let mut data = vec![first, body.len() as u8];
        data.extend_from_slice(&body);
        fuzz_decode(&data);
    }

    /// `Complete(_, n)` depends on the first `n` bytes alone; `Partial { need }` is never
    /// more than is missing.
    #[test]
    fn decode_reads_only_what_it_consumes(
        data in bytes(48),
        junk in bytes(8),
        version in version(),
    ) {
        match decode(&data, version, u32::MAX) {
            Ok(Decoded::Complete(packet, used)) => {
                let mut longer = data[..used].to_vec();
                longer.extend_from_slice(&junk);
                prop_assert_eq!(
                    decode(&longer, version, u32::MAX),
                    Ok(Decoded::Complete(packet, used))
                );
            }
            Ok(Decoded::Partial { need }) => {
                prop_assert!(need >= 1);
                let mut longer = data.clone();
                longer.resize(data.len() + need - 1, 0);
                let still_partial = matches!(
                    decode(&longer, version, u32::MAX),
                    Ok(Decoded::Partial { .. })
                );
                prop_assert!(still_partial, "need {} overstated for {:02x?}", need, data);
            }
            Err(_) => {}
        }
    }

    /// A valid packet with one byte changed, dropped or added never panics the decoder.
    #[test]
    fn mutated_packets_never_panic(
        topic in topic_name(),
        properties in message_properties(true),
        payload in bytes(16),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        how in 0..3u8,
    ) {
        let props = borrow(&properties);
        let packet = Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: &topic,
            pkid: 1,
            properties: Properties::List(&props),
            payload: &payload,
        });
        let mut data = check_round_trip(&packet, Version::V5);
        let i = at.index(data.len());
        match how {
            0 => data[i] = byte,
            1 => { data.remove(i); }
            _ => data.insert(i, byte),
        }
        fuzz_decode(&data);
    }
}
