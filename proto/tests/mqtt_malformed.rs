//! A table of malformed MQTT packets, each row named after what it guards against, with the
//! exact `DecodeError` and the MQTT 5 reason code that answers it; and a table of close
//! neighbours that are valid, so the rules do not grow stricter than the specs.

use ringmq_proto::Decoded;
use ringmq_proto::mqtt::{
    ConnectReturnCode, DecodeError, PropertyId, ReasonCode, Version, decode, fuzz_decode,
};

use DecodeError::*;
use Version::{V5, V311};

/// A length-prefixed string or binary field, written by hand.
fn s(text: &str) -> Vec<u8> {
    let mut out = (text.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(text.as_bytes());
    out
}

/// A packet with a one-byte remaining length.
fn frame(first: u8, parts: &[&[u8]]) -> Vec<u8> {
    let body = parts.concat();
    assert!(body.len() < 128);
    let mut out = vec![first, body.len() as u8];
    out.extend_from_slice(&body);
    out
}

/// A property block with a one-byte Property Length.
fn props(parts: &[&[u8]]) -> Vec<u8> {
    let block = parts.concat();
    let mut out = vec![block.len() as u8];
    out.extend_from_slice(&block);
    out
}

/// A CONNECT: protocol name "MQTT", the level, flags, keep alive 60, then the rest.
fn connect(level: u8, flags: u8, rest: &[&[u8]]) -> Vec<u8> {
    let head = [0, 4, b'M', b'Q', b'T', b'T', level, flags, 0, 60];
    let mut parts: Vec<&[u8]> = vec![&head];
    parts.extend_from_slice(rest);
    frame(0x10, &parts)
}

/// A QoS 0 v5 PUBLISH to "t" with these properties.
fn publish_v5(properties: &[&[u8]]) -> Vec<u8> {
    frame(0x30, &[&s("t"), &props(properties), b"x"])
}

/// A v5 SUBSCRIBE of one filter with these options.
fn subscribe_v5(filter: &str, options: u8) -> Vec<u8> {
    frame(0x82, &[&[0, 1, 0], &s(filter), &[options]])
}

/// A v3 SUBSCRIBE of one filter with these options.
fn subscribe_v311(filter: &str, options: u8) -> Vec<u8> {
    frame(0x82, &[&[0, 1], &s(filter), &[options]])
}

struct Row {
    name: &'static str,
    version: Version,
    bytes: Vec<u8>,
    max: u32,
    error: DecodeError,
    reason: ReasonCode,
}

fn row(
    name: &'static str,
    version: Version,
    bytes: Vec<u8>,
    error: DecodeError,
    reason: ReasonCode,
) -> Row {
    Row {
        name,
        version,
        bytes,
        max: u32::MAX,
        error,
        reason,
    }
}

const MALFORMED: ReasonCode = ReasonCode::MALFORMED_PACKET;
const PROTOCOL: ReasonCode = ReasonCode::PROTOCOL_ERROR;

fn rows() -> Vec<Row> {
    let user = [0x26, 0, 1, b'k', 0, 1, b'v'];
    vec![
        // Framing.
        row(
            "remaining length with 5 bytes",
            V5,
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
            MalformedRemainingLength,
            MALFORMED,
        ),
        row(
            "remaining length with a 4th continuation byte, before a 5th arrives",
            V311,
            vec![0xC0, 0x80, 0x80, 0x80, 0x80],
            MalformedRemainingLength,
            MALFORMED,
        ),
        Row {
            max: 100,
            ..row(
                "declared length above max before body arrives",
                V5,
                vec![0x30, 0x80, 0x01],
                PacketTooLarge,
                ReasonCode::PACKET_TOO_LARGE,
            )
        },
        Row {
            max: 4,
            ..row(
                "max counts the fixed header too",
                V311,
                vec![0x40, 0x03, 0, 1, 0],
                PacketTooLarge,
                ReasonCode::PACKET_TOO_LARGE,
            )
        },
        Row {
            max: 10,
            ..row(
                "declared length above max for a CONNECT",
                V5,
                connect(5, 0x02, &[&[0], &s("id")]),
                PacketTooLarge,
                ReasonCode::PACKET_TOO_LARGE,
            )
        },
        row(
            "reserved packet type 0",
            V5,
            vec![0x00, 0x00],
            InvalidPacketType,
            MALFORMED,
        ),
        row(
            "AUTH in 3.1.1 is reserved type 15",
            V311,
            vec![0xF0, 0x00],
            InvalidPacketType,
            MALFORMED,
        ),
        row(
            "PUBREL without its 0b0010 flags",
            V311,
            vec![0x60, 2, 0, 1],
            InvalidHeaderFlags,
            MALFORMED,
        ),
        row(
            "SUBSCRIBE without its 0b0010 flags, on the first byte alone",
            V5,
            vec![0x80],
            InvalidHeaderFlags,
            MALFORMED,
        ),
        row(
            "UNSUBSCRIBE with flags 0b0011",
            V5,
            vec![0xA3, 0],
            InvalidHeaderFlags,
            MALFORMED,
        ),
        row(
            "PINGREQ with a flag",
            V311,
            vec![0xC1, 0],
            InvalidHeaderFlags,
            MALFORMED,
        ),
        row(
            "CONNECT with a flag",
            V5,
            vec![0x12, 0],
            InvalidHeaderFlags,
            MALFORMED,
        ),
        row(
            "PINGREQ with a body",
            V5,
            vec![0xC0, 1, 0],
            TrailingBytes,
            MALFORMED,
        ),
        row(
            "3.1.1 DISCONNECT with a body",
            V311,
            vec![0xE0, 1, 0],
            TrailingBytes,
            MALFORMED,
        ),
        row(
            "3.1.1 PUBACK with a reason code",
            V311,
            vec![0x40, 3, 0, 1, 0],
            TrailingBytes,
            MALFORMED,
        ),
        row(
            "3.1.1 UNSUBACK with reason codes",
            V311,
            vec![0xB0, 3, 0, 1, 0],
            TrailingBytes,
            MALFORMED,
        ),
        row(
            "PUBACK shorter than its packet id",
            V5,
            vec![0x40, 1, 0],
            Truncated,
            MALFORMED,
        ),
        // PUBLISH.
        row(
            "qos 3 publish, on the first byte alone",
            V311,
            vec![0x36],
            InvalidQoS,
            MALFORMED,
        ),
        row(
            "dup on a qos 0 publish",
            V5,
            frame(0x38, &[&s("t"), &[0]]),
            DupWithQoS0,
            PROTOCOL,
        ),
        row(
            "publish topic longer than the packet",
            V311,
            vec![0x30, 3, 0, 5, b'a'],
            Truncated,
            MALFORMED,
        ),
        row(
            "qos 1 publish that ends inside its packet id",
            V311,
            frame(0x32, &[&s("t"), &[0]]),
            Truncated,
            MALFORMED,
        ),
        row(
            "+ in a publish topic",
            V311,
            frame(0x30, &[&s("a/+")]),
            TopicNameInvalid,
            ReasonCode::TOPIC_NAME_INVALID,
        ),
        row(
            "# in a publish topic",
            V5,
            frame(0x30, &[&s("a/#"), &[0]]),
            TopicNameInvalid,
            ReasonCode::TOPIC_NAME_INVALID,
        ),
        row(
            "empty publish topic in 3.1.1",
            V311,
            frame(0x30, &[&s(""), b"x"]),
            TopicNameInvalid,
            ReasonCode::TOPIC_NAME_INVALID,
        ),
        row(
            "U+0000 in a publish topic",
            V311,
            frame(0x30, &[&[0, 3, b'a', 0, b'b']]),
            NullCharacter,
            MALFORMED,
        ),
        row(
            "UTF-16 surrogate U+D800 in a publish topic",
            V5,
            frame(0x30, &[&[0, 3, 0xED, 0xA0, 0x80], &[0]]),
            InvalidUtf8,
            MALFORMED,
        ),
        row(
            "overlong UTF-8 for / in a publish topic",
            V311,
            frame(0x30, &[&[0, 2, 0xC0, 0xAF]]),
            InvalidUtf8,
            MALFORMED,
        ),
        row(
            "qos 1 publish with packet id 0",
            V311,
            frame(0x32, &[&s("t"), &[0, 0]]),
            ZeroPacketId,
            PROTOCOL,
        ),
        row(
            "v5 publish without its property length",
            V5,
            frame(0x30, &[&s("t")]),
            Truncated,
            MALFORMED,
        ),
        // Acknowledgements.
        row(
            "PUBACK with packet id 0",
            V311,
            vec![0x40, 2, 0, 0],
            ZeroPacketId,
            PROTOCOL,
        ),
        row(
            "PUBCOMP with packet id 0",
            V5,
            vec![0x70, 2, 0, 0],
            ZeroPacketId,
            PROTOCOL,
        ),
        row(
            "PUBACK with PUBREL's reason 0x92",
            V5,
            vec![0x40, 3, 0, 1, 0x92],
            InvalidReasonCode(0x92),
            PROTOCOL,
        ),
        row(
            "PUBREL with PUBACK's reason 0x10",
            V5,
            vec![0x62, 3, 0, 1, 0x10],
            InvalidReasonCode(0x10),
            PROTOCOL,
        ),
        row(
            "PUBACK whose property length runs past the packet",
            V5,
            vec![0x40, 5, 0, 1, 0, 9, 0x1F],
            Truncated,
            MALFORMED,
        ),
        // CONNECT.
        row(
            "protocol name MQTS",
            V311,
            frame(0x10, &[&[0, 4, b'M', b'Q', b'T', b'S', 4, 2, 0, 0], &s("")]),
            InvalidProtocolName,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        ),
        row(
            "MQTT 3.1 (MQIsdp, level 3)",
            V311,
            frame(
                0x10,
                &[
                    &[0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 0],
                    &s("a"),
                ],
            ),
            UnsupportedProtocolVersion(3),
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        ),
        row(
            "protocol level 6",
            V5,
            connect(6, 0x02, &[&s("a")]),
            UnsupportedProtocolVersion(6),
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        ),
        row(
            "CONNECT reserved flag set",
            V311,
            connect(4, 0x03, &[&s("a")]),
            InvalidConnectFlags,
            MALFORMED,
        ),
        row(
            "will qos without the will flag",
            V5,
            connect(5, 0x0A, &[&[0], &s("a")]),
            InvalidConnectFlags,
            MALFORMED,
        ),
        row(
            "will retain without the will flag",
            V311,
            connect(4, 0x22, &[&s("a")]),
            InvalidConnectFlags,
            MALFORMED,
        ),
        row(
            "password without username in 3.1.1",
            V311,
            connect(4, 0x42, &[&s("a"), &s("pw")]),
            InvalidConnectFlags,
            MALFORMED,
        ),
        row(
            "will qos 3",
            V311,
            connect(4, 0x1E, &[&s("a"), &s("w"), &s("m")]),
            InvalidQoS,
            MALFORMED,
        ),
        row(
            "wildcard in the will topic",
            V311,
            connect(4, 0x06, &[&s("a"), &s("w/#"), &s("m")]),
            TopicNameInvalid,
            ReasonCode::TOPIC_NAME_INVALID,
        ),
        row(
            "bytes after the password",
            V311,
            connect(4, 0xC2, &[&s("a"), &s("u"), &s("p"), &[0]]),
            TrailingBytes,
            MALFORMED,
        ),
        row(
            "username flag set but no username",
            V311,
            connect(4, 0x82, &[&s("a")]),
            Truncated,
            MALFORMED,
        ),
        row(
            "client id runs past the packet",
            V311,
            connect(4, 0x02, &[&[0, 9, b'a']]),
            Truncated,
            MALFORMED,
        ),
        row(
            "reason string in CONNECT",
            V5,
            connect(5, 0x02, &[&props(&[&[0x1F, 0, 0]]), &s("a")]),
            PropertyNotAllowed(PropertyId::REASON_STRING),
            MALFORMED,
        ),
        row(
            "topic alias in will properties",
            V5,
            connect(
                5,
                0x06,
                &[&[0], &s("a"), &props(&[&[0x23, 0, 1]]), &s("w"), &s("m")],
            ),
            PropertyNotAllowed(PropertyId::TOPIC_ALIAS),
            MALFORMED,
        ),
        row(
            "will delay interval in CONNECT properties (it belongs to the will)",
            V5,
            connect(5, 0x02, &[&props(&[&[0x18, 0, 0, 0, 1]]), &s("a")]),
            PropertyNotAllowed(PropertyId::WILL_DELAY_INTERVAL),
            MALFORMED,
        ),
        row(
            "receive maximum 0",
            V5,
            connect(5, 0x02, &[&props(&[&[0x21, 0, 0]]), &s("a")]),
            InvalidPropertyValue(PropertyId::RECEIVE_MAXIMUM),
            PROTOCOL,
        ),
        row(
            "maximum packet size 0",
            V5,
            connect(5, 0x02, &[&props(&[&[0x27, 0, 0, 0, 0]]), &s("a")]),
            InvalidPropertyValue(PropertyId::MAXIMUM_PACKET_SIZE),
            PROTOCOL,
        ),
        row(
            "request problem information 2",
            V5,
            connect(5, 0x02, &[&props(&[&[0x17, 2]]), &s("a")]),
            InvalidPropertyValue(PropertyId::REQUEST_PROBLEM_INFORMATION),
            PROTOCOL,
        ),
        row(
            "duplicate session expiry interval",
            V5,
            connect(
                5,
                0x02,
                &[&props(&[&[0x11, 0, 0, 0, 1], &[0x11, 0, 0, 0, 2]]), &s("a")],
            ),
            DuplicateProperty(PropertyId::SESSION_EXPIRY_INTERVAL),
            PROTOCOL,
        ),
        row(
            "authentication data without authentication method",
            V5,
            connect(5, 0x02, &[&props(&[&[0x16, 0, 1, 9]]), &s("a")]),
            InvalidPropertyValue(PropertyId::AUTHENTICATION_DATA),
            PROTOCOL,
        ),
        // CONNACK.
        row(
            "CONNACK reserved flag bit",
            V311,
            vec![0x20, 2, 0x02, 0],
            InvalidConnAckFlags,
            MALFORMED,
        ),
        row(
            "session present on a refused connection",
            V5,
            vec![0x20, 3, 0x01, 0x87, 0],
            InvalidConnAckFlags,
            MALFORMED,
        ),
        row(
            "3.1.1 CONNACK return code 6",
            V311,
            vec![0x20, 2, 0, 6],
            InvalidReasonCode(6),
            PROTOCOL,
        ),
        row(
            "v5 CONNACK reason 0x8B, a DISCONNECT-only code",
            V5,
            vec![0x20, 3, 0, 0x8B, 0],
            InvalidReasonCode(0x8B),
            PROTOCOL,
        ),
        row(
            "v5 CONNACK without its property length",
            V5,
            vec![0x20, 2, 0, 0],
            Truncated,
            MALFORMED,
        ),
        row(
            "maximum qos 2 in CONNACK",
            V5,
            frame(0x20, &[&[0, 0], &props(&[&[0x24, 2]])]),
            InvalidPropertyValue(PropertyId::MAXIMUM_QOS),
            PROTOCOL,
        ),
        // Properties in general.
        row(
            "user property in SUBACK is allowed but session expiry in PUBLISH is not",
            V5,
            publish_v5(&[&user, &[0x11, 0, 0, 0, 1]]),
            PropertyNotAllowed(PropertyId::SESSION_EXPIRY_INTERVAL),
            MALFORMED,
        ),
        row(
            "duplicate topic alias property",
            V5,
            publish_v5(&[&[0x23, 0, 1], &[0x23, 0, 2]]),
            DuplicateProperty(PropertyId::TOPIC_ALIAS),
            PROTOCOL,
        ),
        row(
            "duplicate content type",
            V5,
            publish_v5(&[&[0x03, 0, 0], &user, &[0x03, 0, 0]]),
            DuplicateProperty(PropertyId::CONTENT_TYPE),
            PROTOCOL,
        ),
        row(
            "topic alias 0",
            V5,
            publish_v5(&[&[0x23, 0, 0]]),
            InvalidPropertyValue(PropertyId::TOPIC_ALIAS),
            ReasonCode::TOPIC_ALIAS_INVALID,
        ),
        row(
            "payload format indicator 2",
            V5,
            publish_v5(&[&[0x01, 2]]),
            InvalidPropertyValue(PropertyId::PAYLOAD_FORMAT_INDICATOR),
            PROTOCOL,
        ),
        row(
            "wildcard in the response topic",
            V5,
            publish_v5(&[&[0x08, 0, 1, b'+']]),
            InvalidPropertyValue(PropertyId::RESPONSE_TOPIC),
            PROTOCOL,
        ),
        row(
            "subscription identifier 0",
            V5,
            publish_v5(&[&[0x0B, 0]]),
            InvalidPropertyValue(PropertyId::SUBSCRIPTION_IDENTIFIER),
            PROTOCOL,
        ),
        row(
            "subscription identifier in 5 varint bytes",
            V5,
            publish_v5(&[&[0x0B, 0x80, 0x80, 0x80, 0x80, 0x01]]),
            MalformedVarInt,
            MALFORMED,
        ),
        row(
            "property length in 5 varint bytes",
            V5,
            frame(0x30, &[&s("t"), &[0x80, 0x80, 0x80, 0x80, 0x00]]),
            MalformedVarInt,
            MALFORMED,
        ),
        row(
            "unknown property id 0x7F",
            V5,
            publish_v5(&[&[0x7F, 0]]),
            InvalidPropertyId(0x7F),
            MALFORMED,
        ),
        row(
            "property id with a continuation bit",
            V5,
            publish_v5(&[&[0x81, 0x01]]),
            InvalidPropertyId(0x81),
            MALFORMED,
        ),
        row(
            "property value runs past the property block",
            V5,
            frame(0x30, &[&s("t"), &[2, 0x23, 0], b"xy"]),
            Truncated,
            MALFORMED,
        ),
        row(
            "invalid UTF-8 in a content type",
            V5,
            publish_v5(&[&[0x03, 0, 1, 0xFF]]),
            InvalidUtf8,
            MALFORMED,
        ),
        row(
            "U+0000 in a user property value",
            V5,
            publish_v5(&[&[0x26, 0, 1, b'k', 0, 1, 0]]),
            NullCharacter,
            MALFORMED,
        ),
        // SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK.
        row(
            "SUBSCRIBE with no filters",
            V311,
            vec![0x82, 2, 0, 1],
            EmptySubscription,
            PROTOCOL,
        ),
        row(
            "v5 SUBSCRIBE with properties but no filters",
            V5,
            vec![0x82, 3, 0, 1, 0],
            EmptySubscription,
            PROTOCOL,
        ),
        row(
            "SUBSCRIBE with packet id 0",
            V311,
            subscribe_v311("a", 0),
            ZeroPacketId,
            PROTOCOL,
        )
        .with_pkid_zero(),
        row(
            "no local bit in a 3.1.1 subscription (reserved there)",
            V311,
            subscribe_v311("a", 0x04),
            InvalidSubscriptionOptions,
            MALFORMED,
        ),
        row(
            "reserved subscription option bits in v5",
            V5,
            subscribe_v5("a", 0x40),
            InvalidSubscriptionOptions,
            MALFORMED,
        ),
        row(
            "subscription qos 3",
            V5,
            subscribe_v5("a", 0x03),
            InvalidQoS,
            MALFORMED,
        ),
        row(
            "retain handling 3",
            V5,
            subscribe_v5("a", 0x30),
            InvalidRetainHandling,
            PROTOCOL,
        ),
        row(
            "no local on a shared subscription",
            V5,
            subscribe_v5("$share/g/a", 0x04),
            NoLocalOnSharedSubscription,
            PROTOCOL,
        ),
        row(
            "# not in the last level of a filter",
            V311,
            subscribe_v311("a/#/b", 0),
            TopicFilterInvalid,
            ReasonCode::TOPIC_FILTER_INVALID,
        ),
        row(
            "+ sharing a level in a filter",
            V5,
            subscribe_v5("a+/b", 0),
            TopicFilterInvalid,
            ReasonCode::TOPIC_FILTER_INVALID,
        ),
        row(
            "empty topic filter",
            V311,
            subscribe_v311("", 0),
            TopicFilterInvalid,
            ReasonCode::TOPIC_FILTER_INVALID,
        ),
        row(
            "shared subscription whose group has a wildcard",
            V5,
            subscribe_v5("$share/+/a", 0),
            TopicFilterInvalid,
            ReasonCode::TOPIC_FILTER_INVALID,
        ),
        row(
            "shared subscription without a filter",
            V5,
            subscribe_v5("$share/g", 0),
            TopicFilterInvalid,
            ReasonCode::TOPIC_FILTER_INVALID,
        ),
        row(
            "unsubscribe from a filter with a misplaced #",
            V311,
            frame(0xA2, &[&[0, 1], &s("a#")]),
            TopicFilterInvalid,
            ReasonCode::TOPIC_FILTER_INVALID,
        ),
        row(
            "filter without its options byte",
            V311,
            frame(0x82, &[&[0, 1], &s("a")]),
            Truncated,
            MALFORMED,
        ),
        row(
            "subscription identifier twice in SUBSCRIBE",
            V5,
            frame(
                0x82,
                &[&[0, 1], &props(&[&[0x0B, 1], &[0x0B, 2]]), &s("a"), &[0]],
            ),
            DuplicateProperty(PropertyId::SUBSCRIPTION_IDENTIFIER),
            PROTOCOL,
        ),
        row(
            "SUBACK with no codes",
            V311,
            vec![0x90, 2, 0, 1],
            EmptySubscription,
            PROTOCOL,
        ),
        row(
            "3.1.1 SUBACK code 0x83 (v5 only)",
            V311,
            vec![0x90, 3, 0, 1, 0x83],
            InvalidReasonCode(0x83),
            PROTOCOL,
        ),
        row(
            "v5 SUBACK code 0x11, an UNSUBACK code",
            V5,
            vec![0x90, 4, 0, 1, 0, 0x11],
            InvalidReasonCode(0x11),
            PROTOCOL,
        ),
        row(
            "UNSUBSCRIBE with no filters",
            V5,
            vec![0xA2, 3, 0, 1, 0],
            EmptySubscription,
            PROTOCOL,
        ),
        row(
            "subscription identifier in UNSUBSCRIBE",
            V5,
            frame(0xA2, &[&[0, 1], &props(&[&[0x0B, 1]]), &s("a")]),
            PropertyNotAllowed(PropertyId::SUBSCRIPTION_IDENTIFIER),
            MALFORMED,
        ),
        row(
            "v5 UNSUBACK with no codes",
            V5,
            vec![0xB0, 3, 0, 1, 0],
            EmptySubscription,
            PROTOCOL,
        ),
        row(
            "v5 UNSUBACK code 0x02, a SUBACK code",
            V5,
            vec![0xB0, 4, 0, 1, 0, 0x02],
            InvalidReasonCode(0x02),
            PROTOCOL,
        ),
        // DISCONNECT, AUTH.
        row(
            "DISCONNECT with a CONNACK-only reason 0x84",
            V5,
            vec![0xE0, 1, 0x84],
            InvalidReasonCode(0x84),
            PROTOCOL,
        ),
        row(
            "topic alias in DISCONNECT",
            V5,
            frame(0xE0, &[&[0], &props(&[&[0x23, 0, 1]])]),
            PropertyNotAllowed(PropertyId::TOPIC_ALIAS),
            MALFORMED,
        ),
        row(
            "AUTH reason 0x01",
            V5,
            vec![0xF0, 1, 0x01],
            InvalidReasonCode(0x01),
            PROTOCOL,
        ),
        row(
            "AUTH with bytes after its properties",
            V5,
            vec![0xF0, 3, 0x18, 0, 0],
            TrailingBytes,
            MALFORMED,
        ),
    ]
}

impl Row {
    /// Zeroes the packet identifier of a SUBSCRIBE row built with identifier 1.
    fn with_pkid_zero(mut self) -> Row {
        self.bytes[3] = 0;
        self
    }
}

#[test]
fn malformed_inputs_give_the_exact_error_and_reason_code() {
    let rows = rows();
    for r in &rows {
        assert_eq!(
            decode(&r.bytes, r.version, r.max),
            Err(r.error),
            "{}: {:02x?}",
            r.name,
            r.bytes
        );
        assert_eq!(r.error.reason_code(), r.reason, "{}", r.name);
        assert_eq!(ReasonCode::from(r.error), r.reason);
        assert!(!r.error.to_string().is_empty());
        // The fuzz checks hold on malformed input too (nothing decodes, nothing panics).
        fuzz_decode(&r.bytes);
    }
    let mut names: Vec<_> = rows.iter().map(|r| r.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), rows.len(), "row names are unique");
}

/// A row's error does not wait for bytes the decision does not need.
#[test]
fn errors_in_the_first_byte_come_before_the_rest_arrives() {
    for (first, version, error) in [
        (0x36, V5, InvalidQoS),
        (0x38, V311, DupWithQoS0),
        (0x00, V5, InvalidPacketType),
        (0xF0, V311, InvalidPacketType),
        (0x61, V5, InvalidHeaderFlags),
    ] {
        assert_eq!(decode(&[first], version, u32::MAX), Err(error));
    }
    // Too large as soon as the remaining length is read, with no body at all.
    assert_eq!(
        decode(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F], V5, 1 << 20),
        Err(PacketTooLarge)
    );
}

#[test]
fn only_an_unsupported_level_has_a_v311_connack_code() {
    assert_eq!(
        UnsupportedProtocolVersion(3).connack_return_code(),
        Some(ConnectReturnCode::UNACCEPTABLE_PROTOCOL_VERSION)
    );
    for r in rows() {
        if !matches!(r.error, UnsupportedProtocolVersion(_)) {
            assert_eq!(r.error.connack_return_code(), None, "{}", r.name);
        }
    }
}

/// Close neighbours of the rows above that the specs allow.
#[test]
fn valid_neighbours_decode() {
    let user = [0x26, 0, 1, b'k', 0, 1, b'v'];
    let cases: Vec<(&str, Version, Vec<u8>)> = vec![
        (
            "user property in SUBACK",
            V5,
            frame(0x90, &[&[0, 1], &props(&[&user]), &[0]]),
        ),
        (
            "user property twice in PUBLISH",
            V5,
            publish_v5(&[&user, &user]),
        ),
        (
            "subscription identifier twice in a server's PUBLISH",
            V5,
            publish_v5(&[&[0x0B, 1], &[0x0B, 2]]),
        ),
        (
            "password without username in v5",
            V5,
            connect(5, 0x42, &[&[0], &s("a"), &s("pw")]),
        ),
        ("empty client id", V311, connect(4, 0x02, &[&s("")])),
        (
            "empty topic in v5 (a topic alias is the session's check)",
            V5,
            frame(0x30, &[&s(""), &[0]]),
        ),
        (
            "$ topics and spaces in a topic name",
            V311,
            frame(0x30, &[&s("$SYS/a b")]),
        ),
        (
            "a shared subscription without no local",
            V5,
            subscribe_v5("$share/g/a/#", 0x01),
        ),
        ("retain handling 2", V5, subscribe_v5("a", 0x20)),
        (
            "$share means nothing in 3.1.1: a plain filter there",
            V311,
            subscribe_v311("$share/+/a", 0),
        ),
        (
            "packet exactly at the maximum size",
            V311,
            vec![0x40, 2, 0, 1],
        ),
    ];
    for (name, version, bytes) in cases {
        let max = bytes.len() as u32;
        assert!(
            matches!(decode(&bytes, version, max), Ok(Decoded::Complete(_, n)) if n == bytes.len()),
            "{name}: {:?}",
            decode(&bytes, version, max)
        );
    }
}
