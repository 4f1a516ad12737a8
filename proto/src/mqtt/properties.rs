//! MQTT 5 properties (5.0 §2.2.2): a length-prefixed block of (identifier, value) pairs in
//! the variable header of most packets and in the will.
//!
//! Decoding validates the whole block once — known identifiers, allowed in this packet,
//! values of the right type and range, no duplicates of single-valued properties — and keeps
//! it as [`Properties::Raw`] bytes borrowed from the input, so a decoded packet holds no list
//! and a broker can forward the block by copying it. The getters walk the block when asked.
//! To encode, build a [`Properties::List`] of [`Property`] values. MQTT 3.1.1 has no
//! properties: decoding a 3.1.1 packet gives [`Properties::EMPTY`] and encoding for 3.1.1
//! leaves them out, so one packet value can be sent to subscribers of both versions.

use core::fmt;

use super::error::{DecodeError, EncodeError};
use super::property_id::PropertyId;
use super::wire::{
    self, Out, Version, read_binary, read_str, read_u8, read_u16, read_u32, read_varint, varint_len,
};
use crate::reader::Reader;

impl PropertyId {
    /// The packets (a set of [`Context`] bits) this property may appear in, from the table of
    /// 5.0 §2.2.2.2; `None` for an identifier MQTT 5 does not define.
    const fn contexts(self) -> Option<u16> {
        use Context::*;
        const MESSAGE: u16 = contexts(&[Publish, Will]);
        const ACKS: u16 = contexts(&[
            ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth,
        ]);
        const AUTHENTICATION: u16 = contexts(&[Connect, ConnAck, Auth]);
        const LIMITS: u16 = contexts(&[Connect, ConnAck]);
        Some(match self {
            Self::PAYLOAD_FORMAT_INDICATOR
            | Self::MESSAGE_EXPIRY_INTERVAL
            | Self::CONTENT_TYPE
            | Self::RESPONSE_TOPIC
            | Self::CORRELATION_DATA => MESSAGE,
            Self::SUBSCRIPTION_IDENTIFIER => contexts(&[Publish, Subscribe]),
            Self::SESSION_EXPIRY_INTERVAL => contexts(&[Connect, ConnAck, Disconnect]),
            Self::ASSIGNED_CLIENT_IDENTIFIER
            | Self::SERVER_KEEP_ALIVE
            | Self::RESPONSE_INFORMATION
            | Self::MAXIMUM_QOS
            | Self::RETAIN_AVAILABLE
            | Self::WILDCARD_SUBSCRIPTION_AVAILABLE
            | Self::SUBSCRIPTION_IDENTIFIER_AVAILABLE
            | Self::SHARED_SUBSCRIPTION_AVAILABLE => ConnAck.bit(),
            Self::AUTHENTICATION_METHOD | Self::AUTHENTICATION_DATA => AUTHENTICATION,
            Self::REQUEST_PROBLEM_INFORMATION | Self::REQUEST_RESPONSE_INFORMATION => Connect.bit(),
            Self::WILL_DELAY_INTERVAL => Will.bit(),
            Self::SERVER_REFERENCE => contexts(&[ConnAck, Disconnect]),
            Self::REASON_STRING => ACKS,
            Self::RECEIVE_MAXIMUM | Self::TOPIC_ALIAS_MAXIMUM | Self::MAXIMUM_PACKET_SIZE => LIMITS,
            Self::TOPIC_ALIAS => Publish.bit(),
            Self::USER_PROPERTY => u16::MAX,
            _ => return None,
        })
    }
}

/// Where a property block sits: the packet types, plus the will inside CONNECT, which has
/// its own set of allowed properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Connect,
    ConnAck,
    Publish,
    Will,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

impl Context {
    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

const fn contexts(list: &[Context]) -> u16 {
    let mut set = 0;
    let mut i = 0;
    while i < list.len() {
        set |= list[i].bit();
        i += 1;
    }
    set
}

/// One property with its typed value. Strings and binary data borrow from the packet.
///
/// Byte-valued flags keep their wire value (decoding allows only 0 and 1 where the spec
/// does), so a value read is the value sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Property<'a> {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(&'a str),
    ResponseTopic(&'a str),
    CorrelationData(&'a [u8]),
    /// 1 to 268,435,455, a variable byte integer on the wire.
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(&'a str),
    ServerKeepAlive(u16),
    AuthenticationMethod(&'a str),
    AuthenticationData(&'a [u8]),
    RequestProblemInformation(u8),
    WillDelayInterval(u32),
    RequestResponseInformation(u8),
    ResponseInformation(&'a str),
    ServerReference(&'a str),
    ReasonString(&'a str),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(u8),
    RetainAvailable(u8),
    /// A name and a value; the only property that may repeat in every packet.
    UserProperty(&'a str, &'a str),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(u8),
    SubscriptionIdentifierAvailable(u8),
    SharedSubscriptionAvailable(u8),
}

/// A property value by its wire type (5.0 §1.5), so lengths and writes are written once per
/// type rather than once per property.
enum Value<'a> {
    Byte(u8),
    TwoByte(u16),
    FourByte(u32),
    VarInt(u32),
    Utf8(&'a str),
    Binary(&'a [u8]),
    Pair(&'a str, &'a str),
}

impl<'a> Property<'a> {
    /// This property's identifier.
    pub const fn id(&self) -> PropertyId {
        match self {
            Property::PayloadFormatIndicator(_) => PropertyId::PAYLOAD_FORMAT_INDICATOR,
            Property::MessageExpiryInterval(_) => PropertyId::MESSAGE_EXPIRY_INTERVAL,
            Property::ContentType(_) => PropertyId::CONTENT_TYPE,
            Property::ResponseTopic(_) => PropertyId::RESPONSE_TOPIC,
            Property::CorrelationData(_) => PropertyId::CORRELATION_DATA,
            Property::SubscriptionIdentifier(_) => PropertyId::SUBSCRIPTION_IDENTIFIER,
            Property::SessionExpiryInterval(_) => PropertyId::SESSION_EXPIRY_INTERVAL,
            Property::AssignedClientIdentifier(_) => PropertyId::ASSIGNED_CLIENT_IDENTIFIER,
            Property::ServerKeepAlive(_) => PropertyId::SERVER_KEEP_ALIVE,
            Property::AuthenticationMethod(_) => PropertyId::AUTHENTICATION_METHOD,
            Property::AuthenticationData(_) => PropertyId::AUTHENTICATION_DATA,
            Property::RequestProblemInformation(_) => PropertyId::REQUEST_PROBLEM_INFORMATION,
            Property::WillDelayInterval(_) => PropertyId::WILL_DELAY_INTERVAL,
            Property::RequestResponseInformation(_) => PropertyId::REQUEST_RESPONSE_INFORMATION,
            Property::ResponseInformation(_) => PropertyId::RESPONSE_INFORMATION,
            Property::ServerReference(_) => PropertyId::SERVER_REFERENCE,
            Property::ReasonString(_) => PropertyId::REASON_STRING,
            Property::ReceiveMaximum(_) => PropertyId::RECEIVE_MAXIMUM,
            Property::TopicAliasMaximum(_) => PropertyId::TOPIC_ALIAS_MAXIMUM,
            Property::TopicAlias(_) => PropertyId::TOPIC_ALIAS,
            Property::MaximumQoS(_) => PropertyId::MAXIMUM_QOS,
            Property::RetainAvailable(_) => PropertyId::RETAIN_AVAILABLE,
            Property::UserProperty(..) => PropertyId::USER_PROPERTY,
            Property::MaximumPacketSize(_) => PropertyId::MAXIMUM_PACKET_SIZE,
            Property::WildcardSubscriptionAvailable(_) => {
                PropertyId::WILDCARD_SUBSCRIPTION_AVAILABLE
            }
            Property::SubscriptionIdentifierAvailable(_) => {
                PropertyId::SUBSCRIPTION_IDENTIFIER_AVAILABLE
            }
            Property::SharedSubscriptionAvailable(_) => PropertyId::SHARED_SUBSCRIPTION_AVAILABLE,
        }
    }

    fn value(&self) -> Value<'a> {
        match *self {
            Property::PayloadFormatIndicator(v)
            | Property::RequestProblemInformation(v)
            | Property::RequestResponseInformation(v)
            | Property::MaximumQoS(v)
            | Property::RetainAvailable(v)
            | Property::WildcardSubscriptionAvailable(v)
            | Property::SubscriptionIdentifierAvailable(v)
            | Property::SharedSubscriptionAvailable(v) => Value::Byte(v),
            Property::ServerKeepAlive(v)
            | Property::ReceiveMaximum(v)
            | Property::TopicAliasMaximum(v)
            | Property::TopicAlias(v) => Value::TwoByte(v),
            Property::MessageExpiryInterval(v)
            | Property::SessionExpiryInterval(v)
            | Property::WillDelayInterval(v)
            | Property::MaximumPacketSize(v) => Value::FourByte(v),
            Property::SubscriptionIdentifier(v) => Value::VarInt(v),
            Property::ContentType(s)
            | Property::ResponseTopic(s)
            | Property::AssignedClientIdentifier(s)
            | Property::AuthenticationMethod(s)
            | Property::ResponseInformation(s)
            | Property::ServerReference(s)
            | Property::ReasonString(s) => Value::Utf8(s),
            Property::CorrelationData(b) | Property::AuthenticationData(b) => Value::Binary(b),
            Property::UserProperty(k, v) => Value::Pair(k, v),
        }
    }

    /// Bytes this property takes on the wire: identifier and value.
    pub fn encoded_len(&self) -> usize {
        const ID_LEN: usize = 1;
        ID_LEN
            + match self.value() {
                Value::Byte(_) => 1,
                Value::TwoByte(_) => 2,
                Value::FourByte(_) => 4,
                Value::VarInt(v) => varint_len(v as usize),
                Value::Utf8(s) => 2 + s.len(),
                Value::Binary(b) => 2 + b.len(),
                Value::Pair(k, v) => 2 + k.len() + 2 + v.len(),
            }
    }

    /// Appends this property (identifier and value) to `out`: how the broker builds the
    /// property block of a message it forwards, next to the properties it received.
    ///
    /// A value that cannot be encoded (a string over 65,535 bytes, a subscription
    /// identifier over 268,435,455; never one taken from a decoded packet) is left out
    /// whole, so `out` never holds half a property.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let start = out.len();
        if self.write(out).is_err() {
            out.truncate(start);
        }
    }

    fn write<O: Out>(&self, out: &mut O) -> Result<(), EncodeError> {
        out.put_u8(self.id().0)?;
        match self.value() {
            Value::Byte(v) => out.put_u8(v),
            Value::TwoByte(v) => out.put_u16(v),
            Value::FourByte(v) => out.put_u32(v),
            Value::VarInt(v) => out.put_varint(v as usize),
            Value::Utf8(s) => out.put_str(s),
            Value::Binary(b) => out.put_binary(b),
            Value::Pair(k, v) => {
                out.put_str(k)?;
                out.put_str(v)
            }
        }
    }

    /// Reads one property, checking only that it is a known identifier with a value of the
    /// right type; [`validate`] adds the per-packet rules.
    fn read(r: &mut Reader<'a>) -> Result<Property<'a>, DecodeError> {
        // The identifier is a variable byte integer, but every identifier MQTT 5 defines is
        // below 0x80: a first byte with the continuation bit is no identifier we know.
        let id = PropertyId(read_u8(r)?);
        Ok(match id {
            PropertyId::PAYLOAD_FORMAT_INDICATOR => Property::PayloadFormatIndicator(read_u8(r)?),
            PropertyId::MESSAGE_EXPIRY_INTERVAL => Property::MessageExpiryInterval(read_u32(r)?),
            PropertyId::CONTENT_TYPE => Property::ContentType(read_str(r)?),
            PropertyId::RESPONSE_TOPIC => Property::ResponseTopic(read_str(r)?),
            PropertyId::CORRELATION_DATA => Property::CorrelationData(read_binary(r)?),
            PropertyId::SUBSCRIPTION_IDENTIFIER => {
                // At most 268,435,455: four varint bytes always fit a u32.
                let v = u32::try_from(read_varint(r)?).map_err(|_| DecodeError::MalformedVarInt)?;
                Property::SubscriptionIdentifier(v)
            }
            PropertyId::SESSION_EXPIRY_INTERVAL => Property::SessionExpiryInterval(read_u32(r)?),
            PropertyId::ASSIGNED_CLIENT_IDENTIFIER => {
                Property::AssignedClientIdentifier(read_str(r)?)
            }
            PropertyId::SERVER_KEEP_ALIVE => Property::ServerKeepAlive(read_u16(r)?),
            PropertyId::AUTHENTICATION_METHOD => Property::AuthenticationMethod(read_str(r)?),
            PropertyId::AUTHENTICATION_DATA => Property::AuthenticationData(read_binary(r)?),
            PropertyId::REQUEST_PROBLEM_INFORMATION => {
                Property::RequestProblemInformation(read_u8(r)?)
            }
            PropertyId::WILL_DELAY_INTERVAL => Property::WillDelayInterval(read_u32(r)?),
            PropertyId::REQUEST_RESPONSE_INFORMATION => {
                Property::RequestResponseInformation(read_u8(r)?)
            }
            PropertyId::RESPONSE_INFORMATION => Property::ResponseInformation(read_str(r)?),
            PropertyId::SERVER_REFERENCE => Property::ServerReference(read_str(r)?),
            PropertyId::REASON_STRING => Property::ReasonString(read_str(r)?),
            PropertyId::RECEIVE_MAXIMUM => Property::ReceiveMaximum(read_u16(r)?),
            PropertyId::TOPIC_ALIAS_MAXIMUM => Property::TopicAliasMaximum(read_u16(r)?),
            PropertyId::TOPIC_ALIAS => Property::TopicAlias(read_u16(r)?),
            PropertyId::MAXIMUM_QOS => Property::MaximumQoS(read_u8(r)?),
            PropertyId::RETAIN_AVAILABLE => Property::RetainAvailable(read_u8(r)?),
            PropertyId::USER_PROPERTY => {
                let name = read_str(r)?;
                Property::UserProperty(name, read_str(r)?)
            }
            PropertyId::MAXIMUM_PACKET_SIZE => Property::MaximumPacketSize(read_u32(r)?),
            PropertyId::WILDCARD_SUBSCRIPTION_AVAILABLE => {
                Property::WildcardSubscriptionAvailable(read_u8(r)?)
            }
            PropertyId::SUBSCRIPTION_IDENTIFIER_AVAILABLE => {
                Property::SubscriptionIdentifierAvailable(read_u8(r)?)
            }
            PropertyId::SHARED_SUBSCRIPTION_AVAILABLE => {
                Property::SharedSubscriptionAvailable(read_u8(r)?)
            }
            PropertyId(unknown) => return Err(DecodeError::InvalidPropertyId(unknown)),
        })
    }

    /// The range rules of 5.0 §3 that a value of the right type can still break.
    fn value_is_valid(&self) -> bool {
        // Every byte-valued property is a flag: "a value other than 0 or 1" is a protocol
        // error.
        if let Value::Byte(v) = self.value() {
            return v <= 1;
        }
        match *self {
            Property::ReceiveMaximum(v) | Property::TopicAlias(v) => v != 0,
            Property::MaximumPacketSize(v) | Property::SubscriptionIdentifier(v) => v != 0,
            // MQTT-3.3.2-14: a response topic is a topic name, so no wildcards.
            Property::ResponseTopic(topic) => wire::is_topic_name(topic),
            _ => true,
        }
    }
}

/// Checks a property block read from a packet of the given kind.
fn validate(block: &[u8], context: Context) -> Result<(), DecodeError> {
    // One bit per identifier seen; every identifier MQTT 5 defines is below 64.
    let mut seen: u64 = 0;
    let mut r = Reader::new(block);
    while let Some(id) = r.peek().map(PropertyId) {
        let allowed = id.contexts().ok_or(DecodeError::InvalidPropertyId(id.0))?;
        if allowed & context.bit() == 0 {
            return Err(DecodeError::PropertyNotAllowed(id));
        }
        let property = Property::read(&mut r)?;
        // A server sends one Subscription Identifier per matching subscription (5.0
        // §3.3.4); everywhere else only User Property repeats.
        let repeats = id == PropertyId::USER_PROPERTY
            || (id == PropertyId::SUBSCRIPTION_IDENTIFIER && context == Context::Publish);
        let bit = 1u64 << id.0;
        if seen & bit != 0 && !repeats {
            return Err(DecodeError::DuplicateProperty(id));
        }
        seen |= bit;
        if !property.value_is_valid() {
            return Err(DecodeError::InvalidPropertyValue(id));
        }
    }
    // 5.0 §3.1.2.11.10 and §3.15.2.2.3: Authentication Data needs an Authentication Method.
    let has = |id: PropertyId| seen & (1u64 << id.0) != 0;
    if has(PropertyId::AUTHENTICATION_DATA) && !has(PropertyId::AUTHENTICATION_METHOD) {
        return Err(DecodeError::InvalidPropertyValue(
            PropertyId::AUTHENTICATION_DATA,
        ));
    }
    Ok(())
}

/// The properties of one packet or will.
#[derive(Clone, Copy)]
pub enum Properties<'a> {
    /// The property bytes after the Property Length, as received; validated by the decoder.
    /// Encoding copies them as they are.
    Raw(&'a [u8]),
    /// Properties to encode, written in this order.
    List(&'a [Property<'a>]),
}

impl Default for Properties<'_> {
    fn default() -> Self {
        Properties::EMPTY
    }
}

/// Defines a getter for a single-valued property: its first occurrence.
macro_rules! getter {
    ($(#[$doc:meta])* $name:ident, $variant:ident -> $ty:ty) => {
        $(#[$doc])*
        pub fn $name(&self) -> Option<$ty> {
            self.iter().find_map(|p| match p {
                Property::$variant(v) => Some(v),
                _ => None,
            })
        }
    };
}

impl<'a> Properties<'a> {
    /// No properties.
    pub const EMPTY: Properties<'a> = Properties::Raw(&[]);

    /// The properties in wire order. A [`Properties::Raw`] block that was not made by the
    /// decoder yields properties up to the first it cannot read.
    pub fn iter(&self) -> PropertyIter<'a> {
        PropertyIter(match *self {
            Properties::Raw(bytes) => IterState::Raw(Reader::new(bytes)),
            Properties::List(list) => IterState::List(list.iter()),
        })
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Properties::Raw(bytes) => bytes.is_empty(),
            Properties::List(list) => list.is_empty(),
        }
    }

    /// Bytes of the properties themselves, without the Property Length in front of them.
    pub fn encoded_len(&self) -> usize {
        match self {
            Properties::Raw(bytes) => bytes.len(),
            Properties::List(list) => list.iter().map(Property::encoded_len).sum(),
        }
    }

    /// Bytes the block takes in a packet of `version`: Property Length and properties in
    /// MQTT 5, nothing in 3.1.1.
    pub(crate) fn wire_len(&self, version: Version) -> usize {
        match version {
            Version::V311 => 0,
            Version::V5 => {
                let len = self.encoded_len();
                varint_len(len) + len
            }
        }
    }

    /// Writes the block as [`Properties::wire_len`] counts it.
    pub(crate) fn write<O: Out>(&self, version: Version, out: &mut O) -> Result<(), EncodeError> {
        if version == Version::V311 {
            return Ok(());
        }
        out.put_varint(self.encoded_len())?;
        match self {
            Properties::Raw(bytes) => out.put(bytes),
            Properties::List(list) => list.iter().try_for_each(|p| p.write(out)),
        }
    }

    /// Reads and validates the block of a packet of `version`: in 3.1.1 there is none.
    pub(crate) fn read(
        r: &mut Reader<'a>,
        version: Version,
        context: Context,
    ) -> Result<Properties<'a>, DecodeError> {
        if version == Version::V311 {
            return Ok(Properties::EMPTY);
        }
        let len = read_varint(r)?;
        let block = r.take(len).ok_or(DecodeError::Truncated)?;
        validate(block, context)?;
        Ok(Properties::Raw(block))
    }

    getter!(session_expiry_interval, SessionExpiryInterval -> u32);
    getter!(receive_maximum, ReceiveMaximum -> u16);
    getter!(maximum_packet_size, MaximumPacketSize -> u32);
    getter!(topic_alias_maximum, TopicAliasMaximum -> u16);
    getter!(topic_alias, TopicAlias -> u16);
    getter!(message_expiry_interval, MessageExpiryInterval -> u32);
    getter!(payload_format_indicator, PayloadFormatIndicator -> u8);
    getter!(content_type, ContentType -> &'a str);
    getter!(response_topic, ResponseTopic -> &'a str);
    getter!(correlation_data, CorrelationData -> &'a [u8]);
    getter!(assigned_client_identifier, AssignedClientIdentifier -> &'a str);
    getter!(server_keep_alive, ServerKeepAlive -> u16);
    getter!(authentication_method, AuthenticationMethod -> &'a str);
    getter!(authentication_data, AuthenticationData -> &'a [u8]);
    getter!(request_problem_information, RequestProblemInformation -> u8);
    getter!(request_response_information, RequestResponseInformation -> u8);
    getter!(response_information, ResponseInformation -> &'a str);
    getter!(server_reference, ServerReference -> &'a str);
    getter!(reason_string, ReasonString -> &'a str);
    getter!(will_delay_interval, WillDelayInterval -> u32);
    getter!(maximum_qos, MaximumQoS -> u8);
    getter!(retain_available, RetainAvailable -> u8);
    getter!(wildcard_subscription_available, WildcardSubscriptionAvailable -> u8);
    getter!(subscription_identifier_available, SubscriptionIdentifierAvailable -> u8);
    getter!(shared_subscription_available, SharedSubscriptionAvailable -> u8);

    /// Every Subscription Identifier, in order (a server's PUBLISH carries one per matching
    /// subscription; a SUBSCRIBE at most one).
    pub fn subscription_identifiers(&self) -> impl Iterator<Item = u32> + use<'a> {
        self.iter().filter_map(|p| match p {
            Property::SubscriptionIdentifier(v) => Some(v),
            _ => None,
        })
    }

    /// Every User Property as (name, value), in order; names may repeat.
    pub fn user_properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        self.iter().filter_map(|p| match p {
            Property::UserProperty(k, v) => Some((k, v)),
            _ => None,
        })
    }
}

/// Two blocks are equal when they hold the same properties in the same order, whether
/// received ([`Properties::Raw`]) or built ([`Properties::List`]).
impl PartialEq for Properties<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Properties<'_> {}

impl fmt::Debug for Properties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &Properties<'a> {
    type Item = Property<'a>;
    type IntoIter = PropertyIter<'a>;

    fn into_iter(self) -> PropertyIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Properties`], from [`Properties::iter`].
#[derive(Debug, Clone)]
pub struct PropertyIter<'a>(IterState<'a>);

#[derive(Debug, Clone)]
enum IterState<'a> {
    Raw(Reader<'a>),
    List(core::slice::Iter<'a, Property<'a>>),
}

impl<'a> Iterator for PropertyIter<'a> {
    type Item = Property<'a>;

    fn next(&mut self) -> Option<Property<'a>> {
        match &mut self.0 {
            IterState::List(list) => list.next().copied(),
            IterState::Raw(r) => match Property::read(r) {
                Ok(p) => Some(p),
                Err(_) => {
                    // Stop for good, at the end or at a block the decoder did not check.
                    r.rest();
                    None
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_defined_id_has_a_name_and_contexts() {
        let defined: Vec<u8> = (0..=u8::MAX)
            .filter(|&id| PropertyId(id).contexts().is_some())
            .collect();
        assert_eq!(defined.len(), 27);
        assert!(
            defined
                .iter()
                .all(|&id| id < 64 && PropertyId(id).name().is_some())
        );
    }

    #[test]
    fn getters_find_values_in_raw_blocks() {
        // Session expiry 10, two user properties, receive maximum 20.
        let raw = [
            0x11, 0, 0, 0, 10, 0x26, 0, 1, b'a', 0, 1, b'b', 0x26, 0, 1, b'a', 0, 1, b'c', 0x21, 0,
            20,
        ];
        validate(&raw, Context::Connect).unwrap();
        let props = Properties::Raw(&raw);
        assert_eq!(props.session_expiry_interval(), Some(10));
        assert_eq!(props.receive_maximum(), Some(20));
        assert_eq!(props.topic_alias_maximum(), None);
        let users: Vec<_> = props.user_properties().collect();
        assert_eq!(users, [("a", "b"), ("a", "c")]);
        let list = [
            Property::SessionExpiryInterval(10),
            Property::UserProperty("a", "b"),
            Property::UserProperty("a", "c"),
            Property::ReceiveMaximum(20),
        ];
        assert_eq!(props, Properties::List(&list));
        assert_eq!(props.encoded_len(), Properties::List(&list).encoded_len());
    }

    #[test]
    fn write_to_appends_whole_properties_only() {
        let mut out = vec![9];
        Property::TopicAlias(3).write_to(&mut out);
        assert_eq!(out, [9, 0x23, 0, 3]);
        let long = "x".repeat(65_536);
        Property::UserProperty("k", &long).write_to(&mut out);
        Property::SubscriptionIdentifier(268_435_456).write_to(&mut out);
        assert_eq!(out, [9, 0x23, 0, 3]);
    }

    #[test]
    fn raw_iteration_stops_at_unreadable_bytes() {
        let props = Properties::Raw(&[0x23, 0, 5, 0x7F, 1]);
        let all: Vec<_> = props.iter().collect();
        assert_eq!(all, [Property::TopicAlias(5)]);
    }
}
