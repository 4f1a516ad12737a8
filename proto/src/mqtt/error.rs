//! What can go wrong: [`DecodeError`] names each way a packet can be malformed or break a
//! protocol rule, and says which answer it calls for (an MQTT 5 reason code, and a 3.1.1
//! CONNACK return code where 3.1.1 defines one); [`EncodeError`] says why a packet value could
//! not be written.

use core::fmt;

use super::property_id::PropertyId;
use super::reason::{ConnectReturnCode, ReasonCode};

/// A packet that the specs do not allow. Only malformed input is an error; input that ends
/// too early is [`crate::Decoded::Partial`].
///
/// The MQTT 5 specification separates Malformed Packet (0x81: the bytes cannot be parsed as
/// the spec defines them) from Protocol Error (0x82: parsed, but holding data the protocol
/// does not allow); [`DecodeError::reason_code`] follows that split and the codes the spec
/// names for particular failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The remaining length has a continuation bit on its fourth byte.
    MalformedRemainingLength,
    /// A variable byte integer inside the packet (a property length, a subscription
    /// identifier) has a continuation bit on its fourth byte.
    MalformedVarInt,
    /// The whole packet (fixed header plus remaining length) is larger than the configured
    /// maximum. Reported as soon as the fixed header is readable.
    PacketTooLarge,
    /// Packet type 0, or 15 (AUTH) in MQTT 3.1.1.
    InvalidPacketType,
    /// Fixed-header flags other than those the packet type requires (3.1.1 §2.2.2,
    /// 5.0 §2.1.3).
    InvalidHeaderFlags,
    /// A field runs past the end of the packet (or of its property block).
    Truncated,
    /// Bytes left over after the last field of a packet that has no free-form payload.
    TrailingBytes,
    /// A UTF-8 string field is not well-formed UTF-8.
    InvalidUtf8,
    /// A UTF-8 string field contains U+0000.
    NullCharacter,
    /// A QoS of 3, in PUBLISH flags, will QoS or subscription options.
    InvalidQoS,
    /// A QoS 0 PUBLISH with the DUP flag set (3.1.1 and 5.0 §3.3.1.1, MQTT-3.3.1-2).
    DupWithQoS0,
    /// A CONNECT whose protocol name is not "MQTT".
    InvalidProtocolName,
    /// A CONNECT with a protocol level other than 4 (3.1.1) or 5 (5.0); also a 3.1
    /// ("MQIsdp") CONNECT, so that such a client gets the CONNACK it understands.
    UnsupportedProtocolVersion(u8),
    /// CONNECT flags that break a rule: the reserved bit set, will QoS or will retain without
    /// a will, or (3.1.1 only) a password without a user name.
    InvalidConnectFlags,
    /// CONNACK acknowledge flags with a reserved bit set, or session present on a refusal.
    InvalidConnAckFlags,
    /// A property identifier that MQTT 5 does not define.
    InvalidPropertyId(u8),
    /// A property that this packet type may not carry (5.0 §2.2.2.2: malformed).
    PropertyNotAllowed(PropertyId),
    /// A property that may appear only once appears twice (a protocol error throughout
    /// 5.0 §3).
    DuplicateProperty(PropertyId),
    /// A property value outside its allowed range: a 0 Receive Maximum, Maximum Packet Size,
    /// Topic Alias or Subscription Identifier, a flag byte other than 0 or 1, a response topic
    /// that is not a topic name, Authentication Data without an Authentication Method.
    InvalidPropertyValue(PropertyId),
    /// Packet identifier 0 in a packet that carries one.
    ZeroPacketId,
    /// A SUBSCRIBE or UNSUBSCRIBE without topic filters, or a SUBACK or v5 UNSUBACK without
    /// reason codes.
    EmptySubscription,
    /// A topic name with a wildcard, or empty where a name is required.
    TopicNameInvalid,
    /// A topic filter that is empty or has a wildcard where 4.7.1 does not allow one, or
    /// (MQTT 5) a `$share/` filter without a valid share name and filter (4.8.2).
    TopicFilterInvalid,
    /// Subscription options with a reserved bit set.
    InvalidSubscriptionOptions,
    /// Subscription options with Retain Handling 3 (5.0 §3.8.3.1: protocol error).
    InvalidRetainHandling,
    /// No Local on a `$share/` subscription (5.0 MQTT-3.8.3-4: protocol error).
    NoLocalOnSharedSubscription,
    /// A reason code (or 3.1.1 return code) that this packet type may not carry.
    InvalidReasonCode(u8),
}

impl DecodeError {
    /// The MQTT 5 reason code to send in the CONNACK or DISCONNECT that answers this error.
    pub fn reason_code(&self) -> ReasonCode {
        use DecodeError::*;
        match *self {
            PacketTooLarge => ReasonCode::PACKET_TOO_LARGE,
            InvalidProtocolName | UnsupportedProtocolVersion(_) => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            TopicNameInvalid => ReasonCode::TOPIC_NAME_INVALID,
            TopicFilterInvalid => ReasonCode::TOPIC_FILTER_INVALID,
            InvalidPropertyValue(PropertyId::TOPIC_ALIAS) => ReasonCode::TOPIC_ALIAS_INVALID,
            DupWithQoS0
            | DuplicateProperty(_)
            | InvalidPropertyValue(_)
            | ZeroPacketId
            | EmptySubscription
            | InvalidRetainHandling
            | NoLocalOnSharedSubscription
            | InvalidReasonCode(_) => ReasonCode::PROTOCOL_ERROR,
            MalformedRemainingLength
            | MalformedVarInt
            | InvalidPacketType
            | InvalidHeaderFlags
            | Truncated
            | TrailingBytes
            | InvalidUtf8
            | NullCharacter
            | InvalidQoS
            | InvalidConnectFlags
            | InvalidConnAckFlags
            | InvalidPropertyId(_)
            | PropertyNotAllowed(_)
            | InvalidSubscriptionOptions => ReasonCode::MALFORMED_PACKET,
        }
    }

    /// The MQTT 3.1.1 CONNACK return code for a CONNECT that failed this way, where 3.1.1
    /// defines one: only an unsupported protocol level (0x01, MQTT-3.1.2-2). For everything
    /// else 3.1.1 closes the connection without a CONNACK.
    pub fn connack_return_code(&self) -> Option<ConnectReturnCode> {
        match self {
            DecodeError::UnsupportedProtocolVersion(_) => {
                Some(ConnectReturnCode::UNACCEPTABLE_PROTOCOL_VERSION)
            }
            _ => None,
        }
    }
}

impl From<DecodeError> for ReasonCode {
    fn from(e: DecodeError) -> ReasonCode {
        e.reason_code()
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeError::*;
        match *self {
            MalformedRemainingLength => f.write_str("remaining length longer than four bytes"),
            MalformedVarInt => f.write_str("variable byte integer longer than four bytes"),
            PacketTooLarge => f.write_str("packet larger than the maximum packet size"),
            InvalidPacketType => f.write_str("reserved packet type"),
            InvalidHeaderFlags => f.write_str("invalid fixed header flags"),
            Truncated => f.write_str("a field runs past the end of the packet"),
            TrailingBytes => f.write_str("bytes after the last field of the packet"),
            InvalidUtf8 => f.write_str("string is not well-formed UTF-8"),
            NullCharacter => f.write_str("string contains U+0000"),
            InvalidQoS => f.write_str("QoS 3"),
            DupWithQoS0 => f.write_str("DUP set on a QoS 0 PUBLISH"),
            InvalidProtocolName => f.write_str("protocol name is not MQTT"),
            UnsupportedProtocolVersion(level) => write!(f, "unsupported protocol level {level}"),
            InvalidConnectFlags => f.write_str("invalid CONNECT flags"),
            InvalidConnAckFlags => f.write_str("invalid CONNACK flags"),
            InvalidPropertyId(id) => write!(f, "unknown property identifier {id:#04x}"),
            PropertyNotAllowed(id) => write!(f, "property {id:?} not allowed in this packet"),
            DuplicateProperty(id) => write!(f, "property {id:?} appears more than once"),
            InvalidPropertyValue(id) => write!(f, "invalid value for property {id:?}"),
            ZeroPacketId => f.write_str("packet identifier 0"),
            EmptySubscription => f.write_str("no topic filters or reason codes"),
            TopicNameInvalid => f.write_str("invalid topic name"),
            TopicFilterInvalid => f.write_str("invalid topic filter"),
            InvalidSubscriptionOptions => f.write_str("reserved subscription option bits set"),
            InvalidRetainHandling => f.write_str("retain handling 3"),
            NoLocalOnSharedSubscription => f.write_str("no local on a shared subscription"),
            InvalidReasonCode(code) => write!(f, "reason code {code:#04x} not allowed here"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a packet value could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The output slice is shorter than the packet; `need` is the packet's whole length.
    BufferTooSmall { need: usize },
    /// A string or binary field longer than 65,535 bytes.
    StringTooLong,
    /// A remaining length over 268,435,455 bytes.
    RemainingLengthTooLarge,
    /// A value its field cannot hold: a variable byte integer (property block length,
    /// subscription identifier) over 268,435,455, or retain handling over 3.
    ValueOutOfRange,
    /// A packet the requested version does not have (AUTH in 3.1.1).
    NotInVersion,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { need } => {
                write!(f, "output buffer too small: the packet needs {need} bytes")
            }
            EncodeError::StringTooLong => f.write_str("string or binary field over 65,535 bytes"),
            EncodeError::RemainingLengthTooLarge => {
                f.write_str("remaining length over 268,435,455 bytes")
            }
            EncodeError::ValueOutOfRange => f.write_str("value does not fit its field"),
            EncodeError::NotInVersion => f.write_str("packet type does not exist in this version"),
        }
    }
}

impl std::error::Error for EncodeError {}
