//! Every MQTT packet type in both versions: hand-written bytes (the specs' examples where
//! they give one) decode to the expected packet at every split point, and the packet encodes
//! back to exactly those bytes. Covers v5 properties of every type, a will with properties,
//! and subscription options.

use std::collections::BTreeSet;

use ringmq_proto::Decoded;
use ringmq_proto::mqtt::{
    Auth, ConnAck, Connect, ConnectReturnCode, Disconnect, EncodeError, Packet, Properties,
    Property, PubResp, Publish, QoS, ReasonCode, SubAck, Subscribe, SubscribeFilters,
    SubscriptionOptions, TopicList, UnsubAck, Unsubscribe, Version, Will, check_round_trip,
    check_split_feed, decode,
};

use Version::{V5, V311};

/// A length-prefixed string or binary field, written by hand.
fn s(text: &str) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// A packet: first byte, remaining length (one or two bytes here), body.
fn frame(first: u8, parts: &[&[u8]]) -> Vec<u8> {
    let body = parts.concat();
    let len = body.len();
    let mut out = vec![first];
    if len < 128 {
        out.push(len as u8);
    } else {
        assert!(len < 16_384);
        out.extend_from_slice(&[(len % 128) as u8 | 0x80, (len / 128) as u8]);
    }
    out.extend_from_slice(&body);
    out
}

/// A property block: Property Length (one byte here), then the properties.
fn props(parts: &[&[u8]]) -> Vec<u8> {
    let block = parts.concat();
    assert!(block.len() < 128);
    let mut out = vec![block.len() as u8];
    out.extend_from_slice(&block);
    out
}

/// `bytes` is exactly the encoding of `expected` in `version`, and decodes to it when fed
/// at every split point.
fn assert_wire(bytes: &[u8], version: Version, expected: &Packet<'_>) {
    let decoded = check_split_feed(bytes, version);
    assert_eq!(&decoded, expected, "decoding {bytes:02x?}");
    assert_eq!(
        check_round_trip(expected, version),
        bytes,
        "encoding {expected:?}"
    );
}

/// Property ids seen in the packets of these tests, to show every one is covered.
fn ids_of(packet: &Packet<'_>) -> Vec<u8> {
    let mut blocks = Vec::new();
    match packet {
        Packet::Connect(c) => {
            blocks.push(c.properties);
            if let Some(w) = &c.will {
                blocks.push(w.properties);
            }
        }
        Packet::ConnAck(c) => blocks.push(c.properties),
        Packet::Publish(p) => blocks.push(p.properties),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
            blocks.push(r.properties)
        }
        Packet::Subscribe(s) => blocks.push(s.properties),
        Packet::SubAck(s) => blocks.push(s.properties),
        Packet::Unsubscribe(u) => blocks.push(u.properties),
        Packet::UnsubAck(u) => blocks.push(u.properties),
        Packet::Disconnect(d) => blocks.push(d.properties),
        Packet::Auth(a) => blocks.push(a.properties),
        Packet::PingReq | Packet::PingResp => {}
    }
    blocks
        .iter()
        .flat_map(|b| b.iter().map(|p| p.id().0))
        .collect()
}

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const SUBSCRIBE: u8 = 8;
const UNSUBSCRIBE: u8 = 10;

/// The first case of a packet type.
fn first_of(cases: Vec<(Vec<u8>, Packet<'static>)>, kind: u8) -> (Vec<u8>, Packet<'static>) {
    cases
        .into_iter()
        .find(|(bytes, _)| bytes[0] >> 4 == kind)
        .unwrap()
}

const USER: &[u8] = &[0x26, 0, 1, b'k', 0, 1, b'v'];

const V311_FILTERS: &[(&str, SubscriptionOptions)] = &[
    ("a/b", SubscriptionOptions::new(QoS::AtLeastOnce)),
    ("c/d", SubscriptionOptions::new(QoS::ExactlyOnce)),
];

const V5_FILTERS: &[(&str, SubscriptionOptions)] = &[
    (
        "a/+",
        SubscriptionOptions {
            qos: QoS::AtLeastOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: 2,
        },
    ),
    ("$share/g/x", SubscriptionOptions::new(QoS::ExactlyOnce)),
    (
        "#",
        SubscriptionOptions {
            retain_handling: 1,
            ..SubscriptionOptions::new(QoS::AtMostOnce)
        },
    ),
];

fn v311_cases() -> Vec<(Vec<u8>, Packet<'static>)> {
    vec![
        // 3.1.1 §3.1.2.10 example variable header: level 4, flags 0xCE (user name, password,
        // will QoS 1, will, clean session), keep alive 10.
        (
            frame(
                0x10,
                &[
                    &[0, 4, b'M', b'Q', b'T', b'T', 4, 0xCE, 0, 10],
                    &s("c1"),
                    &s("w/t"),
                    &s("bye"),
                    &s("u"),
                    &s("pw"),
                ],
            ),
            Packet::Connect(Connect {
                version: V311,
                clean_start: true,
                keep_alive: 10,
                client_id: "c1",
                will: Some(Will {
                    topic: "w/t",
                    payload: b"bye",
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Properties::EMPTY,
                }),
                username: Some("u"),
                password: Some(b"pw"),
                properties: Properties::EMPTY,
            }),
        ),
        (
            vec![0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 0],
            Packet::Connect(Connect {
                version: V311,
                clean_start: true,
                keep_alive: 60,
                client_id: "",
                will: None,
                username: None,
                password: None,
                properties: Properties::EMPTY,
            }),
        ),
        (
            vec![0x20, 2, 1, 0],
            Packet::ConnAck(ConnAck {
                session_present: true,
                code: ConnectReturnCode::ACCEPTED.0,
                properties: Properties::EMPTY,
            }),
        ),
        (
            vec![0x20, 2, 0, 5],
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: ConnectReturnCode::NOT_AUTHORIZED.0,
                properties: Properties::EMPTY,
            }),
        ),
        // 3.1.1 §3.3.2.3 example: topic "a/b", packet identifier 10.
        (
            frame(0x32, &[&s("a/b"), &[0, 10], b"hello"]),
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "a/b",
                pkid: 10,
                properties: Properties::EMPTY,
                payload: b"hello",
            }),
        ),
        (
            frame(0x31, &[&s("a/b")]),
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: true,
                topic: "a/b",
                pkid: 0,
                properties: Properties::EMPTY,
                payload: b"",
            }),
        ),
        (
            frame(0x3C, &[&s("x"), &[0xFF, 0xFF], &[0; 200]]),
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: false,
                topic: "x",
                pkid: 0xFFFF,
                properties: Properties::EMPTY,
                payload: &[0; 200],
            }),
        ),
        (vec![0x40, 2, 0, 10], Packet::PubAck(PubResp::new(10))),
        (vec![0x50, 2, 0, 11], Packet::PubRec(PubResp::new(11))),
        (vec![0x62, 2, 0, 12], Packet::PubRel(PubResp::new(12))),
        (vec![0x70, 2, 0, 13], Packet::PubComp(PubResp::new(13))),
        // 3.1.1 §3.8.3 example payload: "a/b" QoS 1, "c/d" QoS 2.
        (
            frame(0x82, &[&[0, 10], &s("a/b"), &[1], &s("c/d"), &[2]]),
            Packet::Subscribe(Subscribe {
                pkid: 10,
                properties: Properties::EMPTY,
                filters: SubscribeFilters::List(V311_FILTERS),
            }),
        ),
        // 3.1.1 §3.9.3 example payload: granted QoS 0, granted QoS 2, failure.
        (
            vec![0x90, 5, 0, 10, 0x00, 0x02, 0x80],
            Packet::SubAck(SubAck {
                pkid: 10,
                properties: Properties::EMPTY,
                codes: &[0x00, 0x02, 0x80],
            }),
        ),
        // 3.1.1 §3.10.3 example payload: "a/b", "c/d".
        (
            frame(0xA2, &[&[0, 10], &s("a/b"), &s("c/d")]),
            Packet::Unsubscribe(Unsubscribe {
                pkid: 10,
                properties: Properties::EMPTY,
                filters: TopicList::List(&["a/b", "c/d"]),
            }),
        ),
        (
            vec![0xB0, 2, 0, 10],
            Packet::UnsubAck(UnsubAck {
                pkid: 10,
                properties: Properties::EMPTY,
                codes: &[],
            }),
        ),
        (vec![0xC0, 0], Packet::PingReq),
        (vec![0xD0, 0], Packet::PingResp),
        (
            vec![0xE0, 0],
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::NORMAL_DISCONNECTION,
                properties: Properties::EMPTY,
            }),
        ),
    ]
}

const CONNECT_PROPS: &[Property<'static>] = &[
    Property::SessionExpiryInterval(3600),
    Property::ReceiveMaximum(20),
    Property::MaximumPacketSize(65536),
    Property::TopicAliasMaximum(10),
    Property::RequestProblemInformation(0),
    Property::RequestResponseInformation(1),
    Property::AuthenticationMethod("SCRAM"),
    Property::AuthenticationData(&[0xAB, 0xCD]),
    Property::UserProperty("k", "v"),
];

const WILL_PROPS: &[Property<'static>] = &[
    Property::WillDelayInterval(5),
    Property::PayloadFormatIndicator(1),
    Property::MessageExpiryInterval(60),
    Property::ContentType("text"),
    Property::ResponseTopic("r/t"),
    Property::CorrelationData(&[7]),
    Property::UserProperty("k", "v"),
];

const CONNACK_PROPS: &[Property<'static>] = &[
    Property::SessionExpiryInterval(120),
    Property::ReceiveMaximum(10),
    Property::MaximumQoS(1),
    Property::RetainAvailable(0),
    Property::MaximumPacketSize(4096),
    Property::AssignedClientIdentifier("auto"),
    Property::TopicAliasMaximum(5),
    Property::ReasonString("ok"),
    Property::UserProperty("k", "v"),
    Property::WildcardSubscriptionAvailable(0),
    Property::SubscriptionIdentifierAvailable(1),
    Property::SharedSubscriptionAvailable(1),
    Property::ServerKeepAlive(60),
    Property::ResponseInformation("resp"),
    Property::ServerReference("other"),
    Property::AuthenticationMethod("SCRAM"),
    Property::AuthenticationData(&[1]),
];

const PUBLISH_PROPS: &[Property<'static>] = &[
    Property::PayloadFormatIndicator(1),
    Property::MessageExpiryInterval(3600),
    Property::ContentType("text/plain"),
    Property::ResponseTopic("reply/here"),
    Property::CorrelationData(&[1, 2]),
    Property::SubscriptionIdentifier(300),
    Property::SubscriptionIdentifier(1),
    Property::TopicAlias(7),
    Property::UserProperty("k", "v"),
    Property::UserProperty("k", "v2"),
];

const REASON_PROPS: &[Property<'static>] = &[
    Property::ReasonString("nope"),
    Property::UserProperty("k", "v"),
];

fn v5_cases() -> Vec<(Vec<u8>, Packet<'static>)> {
    vec![
        // 5.0 §3.1.2.11 example variable header: level 5, flags 0xCE, keep alive 10,
        // properties: Session Expiry Interval 10.
        (
            frame(
                0x10,
                &[
                    &[0, 4, b'M', b'Q', b'T', b'T', 5, 0xCE, 0, 10],
                    &[5, 0x11, 0, 0, 0, 10],
                    &s("c1"),
                    &[0],
                    &s("w/t"),
                    &s("bye"),
                    &s("u"),
                    &s("pw"),
                ],
            ),
            Packet::Connect(Connect {
                version: V5,
                clean_start: true,
                keep_alive: 10,
                client_id: "c1",
                will: Some(Will {
                    topic: "w/t",
                    payload: b"bye",
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    properties: Properties::EMPTY,
                }),
                username: Some("u"),
                password: Some(b"pw"),
                properties: Properties::List(&[Property::SessionExpiryInterval(10)]),
            }),
        ),
        // Every CONNECT and will property; a password without a user name (allowed in v5);
        // will QoS 2 with retain; empty client id and will payload.
        (
            frame(
                0x10,
                &[
                    &[0, 4, b'M', b'Q', b'T', b'T', 5, 0x74, 0, 0],
                    &props(&[
                        &[0x11, 0, 0, 0x0E, 0x10],
                        &[0x21, 0, 20],
                        &[0x27, 0, 1, 0, 0],
                        &[0x22, 0, 10],
                        &[0x17, 0],
                        &[0x19, 1],
                        &[&[0x15][..], &s("SCRAM")].concat(),
                        &[0x16, 0, 2, 0xAB, 0xCD],
                        USER,
                    ]),
                    &s(""),
                    &props(&[
                        &[0x18, 0, 0, 0, 5],
                        &[0x01, 1],
                        &[0x02, 0, 0, 0, 60],
                        &[&[0x03][..], &s("text")].concat(),
                        &[&[0x08][..], &s("r/t")].concat(),
                        &[0x09, 0, 1, 7],
                        USER,
                    ]),
                    &s("will"),
                    &s(""),
                    &s("pwd"),
                ],
            ),
            Packet::Connect(Connect {
                version: V5,
                clean_start: false,
                keep_alive: 0,
                client_id: "",
                will: Some(Will {
                    topic: "will",
                    payload: b"",
                    qos: QoS::ExactlyOnce,
                    retain: true,
                    properties: Properties::List(WILL_PROPS),
                }),
                username: None,
                password: Some(b"pwd"),
                properties: Properties::List(CONNECT_PROPS),
            }),
        ),
        (
            frame(
                0x20,
                &[
                    &[0, 0],
                    &props(&[
                        &[0x11, 0, 0, 0, 120],
                        &[0x21, 0, 10],
                        &[0x24, 1],
                        &[0x25, 0],
                        &[0x27, 0, 0, 0x10, 0],
                        &[&[0x12][..], &s("auto")].concat(),
                        &[0x22, 0, 5],
                        &[&[0x1F][..], &s("ok")].concat(),
                        USER,
                        &[0x28, 0],
                        &[0x29, 1],
                        &[0x2A, 1],
                        &[0x13, 0, 60],
                        &[&[0x1A][..], &s("resp")].concat(),
                        &[&[0x1C][..], &s("other")].concat(),
                        &[&[0x15][..], &s("SCRAM")].concat(),
                        &[0x16, 0, 1, 1],
                    ]),
                ],
            ),
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: ReasonCode::SUCCESS.0,
                properties: Properties::List(CONNACK_PROPS),
            }),
        ),
        (
            vec![0x20, 3, 0, 0x87, 0],
            Packet::ConnAck(ConnAck {
                session_present: false,
                code: ReasonCode::NOT_AUTHORIZED.0,
                properties: Properties::EMPTY,
            }),
        ),
        (
            frame(
                0x3D,
                &[
                    &s("a/b"),
                    &[0x12, 0x34],
                    &props(&[
                        &[0x01, 1],
                        &[0x02, 0, 0, 0x0E, 0x10],
                        &[&[0x03][..], &s("text/plain")].concat(),
                        &[&[0x08][..], &s("reply/here")].concat(),
                        &[0x09, 0, 2, 1, 2],
                        &[0x0B, 0xAC, 0x02],
                        &[0x0B, 0x01],
                        &[0x23, 0, 7],
                        USER,
                        &[0x26, 0, 1, b'k', 0, 2, b'v', b'2'],
                    ]),
                    b"hello",
                ],
            ),
            Packet::Publish(Publish {
                dup: true,
                qos: QoS::ExactlyOnce,
                retain: true,
                topic: "a/b",
                pkid: 0x1234,
                properties: Properties::List(PUBLISH_PROPS),
                payload: b"hello",
            }),
        ),
        // An empty topic with a Topic Alias standing for it.
        (
            frame(0x30, &[&s(""), &props(&[&[0x23, 0, 1]]), b"x"]),
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: "",
                pkid: 0,
                properties: Properties::List(&[Property::TopicAlias(1)]),
                payload: b"x",
            }),
        ),
        (
            frame(0x30, &[&s("t"), &[0], b"payload"]),
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: "t",
                pkid: 0,
                properties: Properties::EMPTY,
                payload: b"payload",
            }),
        ),
        // The short form: success and no properties.
        (vec![0x40, 2, 0, 10], Packet::PubAck(PubResp::new(10))),
        (
            frame(
                0x40,
                &[
                    &[0, 10, 0x80],
                    &props(&[&[&[0x1F][..], &s("nope")].concat(), USER]),
                ],
            ),
            Packet::PubAck(PubResp {
                pkid: 10,
                reason: ReasonCode::UNSPECIFIED_ERROR,
                properties: Properties::List(REASON_PROPS),
            }),
        ),
        // A reason without properties leaves out the Property Length.
        (
            vec![0x50, 3, 0, 11, 0x10],
            Packet::PubRec(PubResp {
                pkid: 11,
                reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
                properties: Properties::EMPTY,
            }),
        ),
        (
            frame(
                0x62,
                &[
                    &[0, 12, 0x92],
                    &props(&[&[&[0x1F][..], &s("nope")].concat(), USER]),
                ],
            ),
            Packet::PubRel(PubResp {
                pkid: 12,
                reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                properties: Properties::List(REASON_PROPS),
            }),
        ),
        (
            vec![0x70, 3, 0, 13, 0x92],
            Packet::PubComp(PubResp {
                pkid: 13,
                reason: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                properties: Properties::EMPTY,
            }),
        ),
        // Subscription options: QoS 1 + No Local + Retain As Published + Retain Handling 2
        // (0x2D); QoS 2 on a shared subscription; Retain Handling 1 (0x10).
        (
            frame(
                0x82,
                &[
                    &[0, 10],
                    &props(&[&[0x0B, 5], USER]),
                    &s("a/+"),
                    &[0x2D],
                    &s("$share/g/x"),
                    &[0x02],
                    &s("#"),
                    &[0x10],
                ],
            ),
            Packet::Subscribe(Subscribe {
                pkid: 10,
                properties: Properties::List(&[
                    Property::SubscriptionIdentifier(5),
                    Property::UserProperty("k", "v"),
                ]),
                filters: SubscribeFilters::List(V5_FILTERS),
            }),
        ),
        (
            frame(
                0x90,
                &[
                    &[0, 10],
                    &props(&[&[&[0x1F][..], &s("nope")].concat(), USER]),
                    &[0x00, 0x01, 0x02, 0x80, 0x8F, 0xA2],
                ],
            ),
            Packet::SubAck(SubAck {
                pkid: 10,
                properties: Properties::List(REASON_PROPS),
                codes: &[0x00, 0x01, 0x02, 0x80, 0x8F, 0xA2],
            }),
        ),
        (
            frame(0xA2, &[&[0, 11], &props(&[USER]), &s("a/+"), &s("#")]),
            Packet::Unsubscribe(Unsubscribe {
                pkid: 11,
                properties: Properties::List(&[Property::UserProperty("k", "v")]),
                filters: TopicList::List(&["a/+", "#"]),
            }),
        ),
        (
            vec![0xB0, 5, 0, 11, 0, 0x00, 0x11],
            Packet::UnsubAck(UnsubAck {
                pkid: 11,
                properties: Properties::EMPTY,
                codes: &[0x00, 0x11],
            }),
        ),
        (
            frame(
                0xB0,
                &[
                    &[0, 11],
                    &props(&[&[&[0x1F][..], &s("nope")].concat(), USER]),
                    &[0x87],
                ],
            ),
            Packet::UnsubAck(UnsubAck {
                pkid: 11,
                properties: Properties::List(REASON_PROPS),
                codes: &[0x87],
            }),
        ),
        (vec![0xC0, 0], Packet::PingReq),
        (vec![0xD0, 0], Packet::PingResp),
        (
            vec![0xE0, 0],
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::NORMAL_DISCONNECTION,
                properties: Properties::EMPTY,
            }),
        ),
        (
            vec![0xE0, 1, 0x04],
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::DISCONNECT_WITH_WILL_MESSAGE,
                properties: Properties::EMPTY,
            }),
        ),
        (
            frame(
                0xE0,
                &[
                    &[0x9C],
                    &props(&[
                        &[0x11, 0, 0, 0, 0],
                        &[&[0x1F][..], &s("bye")].concat(),
                        &[&[0x1C][..], &s("srv2")].concat(),
                        USER,
                    ]),
                ],
            ),
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::USE_ANOTHER_SERVER,
                properties: Properties::List(&[
                    Property::SessionExpiryInterval(0),
                    Property::ReasonString("bye"),
                    Property::ServerReference("srv2"),
                    Property::UserProperty("k", "v"),
                ]),
            }),
        ),
        (
            vec![0xF0, 0],
            Packet::Auth(Auth {
                reason: ReasonCode::SUCCESS,
                properties: Properties::EMPTY,
            }),
        ),
        (
            frame(
                0xF0,
                &[
                    &[0x18],
                    &props(&[
                        &[&[0x15][..], &s("SCRAM")].concat(),
                        &[0x16, 0, 3, 1, 2, 3],
                        &[&[0x1F][..], &s("go on")].concat(),
                        USER,
                    ]),
                ],
            ),
            Packet::Auth(Auth {
                reason: ReasonCode::CONTINUE_AUTHENTICATION,
                properties: Properties::List(&[
                    Property::AuthenticationMethod("SCRAM"),
                    Property::AuthenticationData(&[1, 2, 3]),
                    Property::ReasonString("go on"),
                    Property::UserProperty("k", "v"),
                ]),
            }),
        ),
    ]
}

#[test]
fn every_v311_packet_matches_hand_written_bytes() {
    for (bytes, packet) in v311_cases() {
        assert_wire(&bytes, V311, &packet);
    }
}

#[test]
fn every_v5_packet_matches_hand_written_bytes() {
    for (bytes, packet) in v5_cases() {
        assert_wire(&bytes, V5, &packet);
    }
}

#[test]
fn every_packet_type_is_covered_in_both_versions() {
    let kinds = |cases: Vec<(Vec<u8>, Packet<'static>)>| -> BTreeSet<u8> {
        cases.iter().map(|(bytes, _)| bytes[0] >> 4).collect()
    };
    assert_eq!(kinds(v311_cases()), (1..=14).collect());
    assert_eq!(kinds(v5_cases()), (1..=15).collect());
}

#[test]
fn every_v5_property_is_covered() {
    let seen: BTreeSet<u8> = v5_cases().iter().flat_map(|(_, p)| ids_of(p)).collect();
    assert_eq!(seen.len(), 27, "{seen:02x?}");
}

/// A CONNECT decodes in its own version whatever the connection's version says, and
/// encodes in its own version too.
#[test]
fn connect_carries_its_own_version() {
    for (bytes, packet) in v5_cases().into_iter().take(2) {
        assert_eq!(check_split_feed(&bytes, V311), packet);
        assert_eq!(check_round_trip(&packet, V311), bytes);
    }
    let (bytes, packet) = first_of(v311_cases(), CONNECT);
    assert_eq!(check_split_feed(&bytes, V5), packet);
}

/// The forms a v5 sender may choose that are not the shortest: they decode to the same
/// packet as the short form, which is what encoding writes.
#[test]
fn v5_long_forms_decode_like_the_short_ones() {
    let cases: &[(&[u8], &[u8])] = &[
        (&[0x40, 3, 0, 10, 0], &[0x40, 2, 0, 10]),
        (&[0x40, 4, 0, 10, 0, 0], &[0x40, 2, 0, 10]),
        (&[0x62, 4, 0, 10, 0, 0], &[0x62, 2, 0, 10]),
        (&[0xE0, 1, 0], &[0xE0, 0]),
        (&[0xE0, 2, 0, 0], &[0xE0, 0]),
        (&[0xF0, 2, 0, 0], &[0xF0, 0]),
        // A remaining length in more bytes than needed.
        (&[0xC0, 0x80, 0x00], &[0xC0, 0]),
    ];
    for (long, short) in cases {
        let packet = check_split_feed(long, V5);
        assert_eq!(check_round_trip(&packet, V5), *short, "{long:02x?}");
    }
}

/// One packet value serves subscribers of both versions: 3.1.1 leaves out properties and
/// reason codes, and v5-only subscription options.
#[test]
fn encoding_for_v311_leaves_out_v5_fields() {
    let publish = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "a/b",
        pkid: 10,
        properties: Properties::List(PUBLISH_PROPS),
        payload: b"hello",
    });
    let (v311_bytes, _) = first_of(v311_cases(), PUBLISH);
    let mut out = Vec::new();
    publish.encode_to_vec(V311, &mut out).unwrap();
    assert_eq!(out, v311_bytes);

    let ack = Packet::PubAck(PubResp {
        pkid: 10,
        reason: ReasonCode::QUOTA_EXCEEDED,
        properties: Properties::List(REASON_PROPS),
    });
    let mut out = [0; 16];
    assert_eq!(ack.encode(V311, &mut out), Ok(4));
    assert_eq!(out[..4], [0x40, 2, 0, 10]);

    // A v5 SUBSCRIBE decoded, then sent on as 3.1.1: only the QoS bits remain.
    let (v5_bytes, _) = first_of(v5_cases(), SUBSCRIBE);
    let Ok(Decoded::Complete(subscribe @ Packet::Subscribe(_), _)) = decode(&v5_bytes, V5, 1024)
    else {
        panic!("not a SUBSCRIBE");
    };
    let mut v311 = Vec::new();
    subscribe.encode_to_vec(V311, &mut v311).unwrap();
    let expected = frame(
        0x82,
        &[
            &[0, 10],
            &s("a/+"),
            &[1],
            &s("$share/g/x"),
            &[2],
            &s("#"),
            &[0],
        ],
    );
    assert_eq!(v311, expected);
}

#[test]
fn publish_head_and_payload_make_the_packet() {
    for version in [V311, V5] {
        for payload_len in [0, 1, 100, 127, 128, 16_383, 16_384, 70_000] {
            let payload = vec![0x5A; payload_len];
            let publish = Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: "sensors/1/temperature",
                pkid: 7,
                properties: match version {
                    V311 => Properties::EMPTY,
                    V5 => Properties::List(&[Property::MessageExpiryInterval(5)]),
                },
                payload: &payload,
            };
            let bytes = check_round_trip(&Packet::Publish(publish.clone()), version);
            let mut head = [0u8; 64];
            let head_len = publish.encode_head(version, &mut head).unwrap();
            assert_eq!(head_len, publish.head_len(version));
            assert_eq!(head[..head_len], bytes[..head_len]);
            assert_eq!(bytes[head_len..], payload[..]);
        }
    }
}

#[test]
fn encode_errors() {
    let long = "x".repeat(65_536);
    let publish = |topic| {
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic,
            pkid: 0,
            properties: Properties::EMPTY,
            payload: b"",
        })
    };
    let mut out = vec![0; 70_000];
    assert_eq!(
        publish(&long).encode(V5, &mut out),
        Err(EncodeError::StringTooLong)
    );
    let mut vec = vec![1, 2, 3];
    assert_eq!(
        publish(&long).encode_to_vec(V5, &mut vec),
        Err(EncodeError::StringTooLong)
    );
    assert_eq!(vec, [1, 2, 3], "a failed append leaves the Vec as it was");

    assert_eq!(
        publish("a/b").encode(V5, &mut [0; 6]),
        Err(EncodeError::BufferTooSmall { need: 8 })
    );

    // The largest remaining length plus one; calloc'd pages that are never touched.
    let huge = vec![0u8; 268_435_456 - 3];
    let too_big = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "a",
        pkid: 0,
        properties: Properties::EMPTY,
        payload: &huge,
    };
    assert_eq!(
        Packet::Publish(too_big.clone()).encode(V311, &mut out),
        Err(EncodeError::RemainingLengthTooLarge)
    );
    assert_eq!(
        too_big.encode_head(V311, &mut out),
        Err(EncodeError::RemainingLengthTooLarge)
    );

    let auth = Packet::Auth(Auth {
        reason: ReasonCode::SUCCESS,
        properties: Properties::EMPTY,
    });
    assert_eq!(auth.encode(V311, &mut out), Err(EncodeError::NotInVersion));

    let filters = [(
        "a",
        SubscriptionOptions {
            retain_handling: 4,
            ..SubscriptionOptions::new(QoS::AtMostOnce)
        },
    )];
    let subscribe = Packet::Subscribe(Subscribe {
        pkid: 1,
        properties: Properties::List(&[Property::SubscriptionIdentifier(268_435_456)]),
        filters: SubscribeFilters::List(&filters),
    });
    assert_eq!(
        subscribe.encode(V5, &mut out),
        Err(EncodeError::ValueOutOfRange)
    );
}

#[test]
fn property_getters_on_a_decoded_packet() {
    let (bytes, _) = first_of(v5_cases(), CONNACK);
    let Ok(Decoded::Complete(Packet::ConnAck(connack), _)) = decode(&bytes, V5, 1024) else {
        panic!("not a CONNACK");
    };
    let p = connack.properties;
    assert!(matches!(p, Properties::Raw(_)));
    assert_eq!(p.session_expiry_interval(), Some(120));
    assert_eq!(p.receive_maximum(), Some(10));
    assert_eq!(p.maximum_qos(), Some(1));
    assert_eq!(p.retain_available(), Some(0));
    assert_eq!(p.maximum_packet_size(), Some(4096));
    assert_eq!(p.assigned_client_identifier(), Some("auto"));
    assert_eq!(p.topic_alias_maximum(), Some(5));
    assert_eq!(p.reason_string(), Some("ok"));
    assert_eq!(p.user_properties().collect::<Vec<_>>(), [("k", "v")]);
    assert_eq!(p.wildcard_subscription_available(), Some(0));
    assert_eq!(p.subscription_identifier_available(), Some(1));
    assert_eq!(p.shared_subscription_available(), Some(1));
    assert_eq!(p.server_keep_alive(), Some(60));
    assert_eq!(p.response_information(), Some("resp"));
    assert_eq!(p.server_reference(), Some("other"));
    assert_eq!(p.authentication_method(), Some("SCRAM"));
    assert_eq!(p.authentication_data(), Some(&[1u8][..]));
    assert_eq!(p.topic_alias(), None);
    assert_eq!(
        p.encoded_len(),
        Properties::List(CONNACK_PROPS).encoded_len()
    );

    let publish = Properties::List(PUBLISH_PROPS);
    assert_eq!(
        publish.subscription_identifiers().collect::<Vec<_>>(),
        [300, 1]
    );
    assert_eq!(publish.payload_format_indicator(), Some(1));
    assert_eq!(publish.message_expiry_interval(), Some(3600));
    assert_eq!(publish.content_type(), Some("text/plain"));
    assert_eq!(publish.response_topic(), Some("reply/here"));
    assert_eq!(publish.correlation_data(), Some(&[1u8, 2][..]));
    assert_eq!(publish.topic_alias(), Some(7));
    let will = Properties::List(WILL_PROPS);
    assert_eq!(will.will_delay_interval(), Some(5));
    let connect = Properties::List(CONNECT_PROPS);
    assert_eq!(connect.request_problem_information(), Some(0));
    assert_eq!(connect.request_response_information(), Some(1));
}

#[test]
fn decoded_lists_iterate_and_count() {
    let (bytes, _) = first_of(v5_cases(), SUBSCRIBE);
    let Ok(Decoded::Complete(Packet::Subscribe(sub), _)) = decode(&bytes, V5, 1024) else {
        panic!("not a SUBSCRIBE");
    };
    assert_eq!(sub.filters.len(), 3);
    let filters: Vec<&str> = sub.filters.iter().map(|(f, _)| f).collect();
    assert_eq!(filters, ["a/+", "$share/g/x", "#"]);

    let (bytes, _) = first_of(v5_cases(), UNSUBSCRIBE);
    let Ok(Decoded::Complete(Packet::Unsubscribe(unsub), _)) = decode(&bytes, V5, 1024) else {
        panic!("not an UNSUBSCRIBE");
    };
    assert_eq!(unsub.filters.len(), 2);
    assert_eq!(unsub.filters.iter().collect::<Vec<_>>(), ["a/+", "#"]);
}

#[test]
fn packets_back_to_back_in_one_buffer() {
    let cases = v5_cases();
    let stream: Vec<u8> = cases.iter().flat_map(|(b, _)| b.clone()).collect();
    let mut rest = &stream[..];
    for (bytes, packet) in &cases {
        match decode(rest, V5, 1024) {
            Ok(Decoded::Complete(p, used)) => {
                assert_eq!((&p, used), (packet, bytes.len()));
                rest = &rest[used..];
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(rest.is_empty());
}

/// Writes every packet above into the fuzz seed corpus, `proto/fuzz/seeds/mqtt_decode/`.
/// Run after changing the cases: `cargo test -p ringmq-proto --test mqtt_packets --
/// --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes files into the source tree"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/mqtt_decode");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, cases) in [("v311", v311_cases()), ("v5", v5_cases())] {
        for (i, (bytes, _)) in cases.iter().enumerate() {
            std::fs::write(
                dir.join(format!("{name}_{i:02}_type{}", bytes[0] >> 4)),
                bytes,
            )
            .unwrap();
        }
        // A stream of every packet back to back, as a connection delivers them.
        let stream: Vec<u8> = cases.iter().flat_map(|(b, _)| b.clone()).collect();
        std::fs::write(dir.join(format!("{name}_stream")), stream).unwrap();
    }
}
