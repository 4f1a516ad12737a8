//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK (3.1.1 and 5.0 §3.8–3.11).
//!
//! Like properties, the topic lists of a decoded packet stay as validated bytes borrowed
//! from the input ([`SubscribeFilters::Raw`], [`TopicList::Raw`]) and are walked on demand,
//! so decoding allocates nothing; build the `List` forms to encode.

use core::fmt;

use super::error::{DecodeError, EncodeError};
use super::properties::{Context, Properties};
use super::reason::{SUBACK_CODES, SUBACK_CODES_V311, UNSUBACK_CODES};
use super::wire::{Out, QoS, Version, read_packet_id, read_str, read_topic_filter, read_u8};
use crate::reader::Reader;

/// The prefix of a shared subscription's filter (5.0 §4.8.2).
const SHARED_PREFIX: &str = "$share/";

/// The options byte after each filter of a SUBSCRIBE. MQTT 3.1.1 has only the QoS; the other
/// fields are MQTT 5 (5.0 §3.8.3.1) and are not sent in 3.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// The maximum QoS the subscriber accepts.
    pub qos: QoS,
    /// Do not send the subscriber its own publications.
    pub no_local: bool,
    /// Keep the RETAIN flag of forwarded publications as published.
    pub retain_as_published: bool,
    /// 0: send retained messages on subscribe; 1: only for a new subscription; 2: never.
    pub retain_handling: u8,
}

impl SubscriptionOptions {
    const QOS_BITS: u8 = 0b0000_0011;
    const NO_LOCAL: u8 = 0b0000_0100;
    const RETAIN_AS_PUBLISHED: u8 = 0b0000_1000;
    const RETAIN_HANDLING_SHIFT: u8 = 4;
    const RETAIN_HANDLING_BITS: u8 = 0b11;
    /// "Do not send retained messages", the largest Retain Handling; 3 is a protocol error.
    const MAX_RETAIN_HANDLING: u8 = 2;
    const RESERVED_V5: u8 = 0b1100_0000;
    const RESERVED_V311: u8 = 0b1111_1100;

    /// Options with this QoS and everything else off.
    pub const fn new(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }

    /// Reads the options byte. Reserved bits set are malformed (3.1.1 MQTT-3.8.3-4,
    /// 5.0 MQTT-3.8.3-5).
    pub fn from_byte(byte: u8, version: Version) -> Result<SubscriptionOptions, DecodeError> {
        let reserved = match version {
            Version::V311 => Self::RESERVED_V311,
            Version::V5 => Self::RESERVED_V5,
        };
        if byte & reserved != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions);
        }
        let qos = QoS::from_u8(byte & Self::QOS_BITS).ok_or(DecodeError::InvalidQoS)?;
        let retain_handling = (byte >> Self::RETAIN_HANDLING_SHIFT) & Self::RETAIN_HANDLING_BITS;
        if retain_handling > Self::MAX_RETAIN_HANDLING {
            return Err(DecodeError::InvalidRetainHandling);
        }
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & Self::NO_LOCAL != 0,
            retain_as_published: byte & Self::RETAIN_AS_PUBLISHED != 0,
            retain_handling,
        })
    }

    /// The options byte as `version` sends it (3.1.1 keeps only the QoS).
    pub fn to_byte(self, version: Version) -> Result<u8, EncodeError> {
        let mut byte = self.qos as u8;
        if version == Version::V311 {
            return Ok(byte);
        }
        if self.retain_handling > Self::RETAIN_HANDLING_BITS {
            return Err(EncodeError::ValueOutOfRange);
        }
        byte |= self.retain_handling << Self::RETAIN_HANDLING_SHIFT;
        if self.no_local {
            byte |= Self::NO_LOCAL;
        }
        if self.retain_as_published {
            byte |= Self::RETAIN_AS_PUBLISHED;
        }
        Ok(byte)
    }
}

/// A list a packet carries: as received ([`WireList::Raw`], bytes the decoder validated,
/// walked on demand) or to encode ([`WireList::List`]).
#[derive(Clone, Copy)]
pub enum WireList<'a, T> {
    /// The payload as received, validated by the decoder.
    Raw(&'a [u8]),
    /// Items to encode.
    List(&'a [T]),
}

/// The (filter, options) pairs of a SUBSCRIBE.
pub type SubscribeFilters<'a> = WireList<'a, (&'a str, SubscriptionOptions)>;
/// A list of topic filters: the payload of an UNSUBSCRIBE.
pub type TopicList<'a> = WireList<'a, &'a str>;
/// Iterator over [`SubscribeFilters`].
pub type SubscribeFiltersIter<'a> = WireListIter<'a, (&'a str, SubscriptionOptions)>;
/// Iterator over [`TopicList`].
pub type TopicListIter<'a> = WireListIter<'a, &'a str>;

/// An item of a [`WireList`]: how it is read from a validated payload.
pub trait WireItem<'a>: Copy + fmt::Debug + PartialEq + 'a {
    /// Reads one item; an error ends the list.
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError>;
}

/// How an item of a [`WireList`] is written.
pub(crate) trait WriteItem<'a>: WireItem<'a> {
    /// Bytes [`WriteItem::write`] writes.
    fn wire_len(&self) -> usize;
    fn write<O: Out>(&self, version: Version, out: &mut O) -> Result<(), EncodeError>;
}

impl<'a> WireItem<'a> for (&'a str, SubscriptionOptions) {
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let filter = read_str(r)?;
        // The MQTT 5 layout reads a validated 3.1.1 byte the same way.
        let options = SubscriptionOptions::from_byte(read_u8(r)?, Version::V5)?;
        Ok((filter, options))
    }
}

impl<'a> WriteItem<'a> for (&'a str, SubscriptionOptions) {
    fn wire_len(&self) -> usize {
        2 + self.0.len() + 1
    }

    fn write<O: Out>(&self, version: Version, out: &mut O) -> Result<(), EncodeError> {
        // Rewritten rather than copied, so v5 options sent as 3.1.1 lose their v5-only
        // bits.
        out.put_str(self.0)?;
        out.put_u8(self.1.to_byte(version)?)
    }
}

impl<'a> WireItem<'a> for &'a str {
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        read_str(r)
    }
}

impl<'a> WriteItem<'a> for &'a str {
    fn wire_len(&self) -> usize {
        2 + self.len()
    }

    fn write<O: Out>(&self, _: Version, out: &mut O) -> Result<(), EncodeError> {
        out.put_str(self)
    }
}

impl<'a, T: WireItem<'a>> WireList<'a, T> {
    /// The items in wire order. A `Raw` payload not made by the decoder yields items up to
    /// the first it cannot read.
    pub fn iter(&self) -> WireListIter<'a, T> {
        WireListIter(match *self {
            WireList::Raw(bytes) => ListState::Raw(Reader::new(bytes)),
            WireList::List(list) => ListState::List(list.iter()),
        })
    }

    /// The number of items (walks a `Raw` payload).
    pub fn len(&self) -> usize {
        match self {
            WireList::Raw(_) => self.iter().count(),
            WireList::List(list) => list.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            WireList::Raw(bytes) => bytes.is_empty(),
            WireList::List(list) => list.is_empty(),
        }
    }
}

/// Bytes of the body of a SUBSCRIBE or UNSUBSCRIBE (packet id, properties, list), the list
/// counted as `write_list_body` writes it, item by item, even for a payload the decoder
/// did not check.
pub(crate) fn list_body_len<'a, T: WriteItem<'a>>(
    properties: &Properties<'a>,
    list: &WireList<'a, T>,
    version: Version,
) -> usize {
    2 + properties.wire_len(version) + list.iter().map(|item| item.wire_len()).sum::<usize>()
}

/// Writes the body of a SUBSCRIBE or UNSUBSCRIBE.
pub(crate) fn write_list_body<'a, T: WriteItem<'a>, O: Out>(
    pkid: u16,
    properties: &Properties<'a>,
    list: &WireList<'a, T>,
    version: Version,
    out: &mut O,
) -> Result<(), EncodeError> {
    write_id_and_properties(pkid, properties, version, out)?;
    list.iter().try_for_each(|item| item.write(version, out))
}

/// Writes the packet identifier and the properties that open the body of each packet of
/// this module.
fn write_id_and_properties<O: Out>(
    pkid: u16,
    properties: &Properties<'_>,
    version: Version,
    out: &mut O,
) -> Result<(), EncodeError> {
    out.put_u16(pkid)?;
    properties.write(version, out)
}

impl<'a, T: WireItem<'a>> PartialEq for WireList<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<'a, T: WireItem<'a>> Eq for WireList<'a, T> {}

impl<'a, T: WireItem<'a>> fmt::Debug for WireList<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Either a payload to walk or a slice to step through.
#[derive(Debug, Clone)]
enum ListState<'a, T> {
    Raw(Reader<'a>),
    List(core::slice::Iter<'a, T>),
}

/// Iterator over a [`WireList`].
#[derive(Debug, Clone)]
pub struct WireListIter<'a, T>(ListState<'a, T>);

impl<'a, T: WireItem<'a>> Iterator for WireListIter<'a, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match &mut self.0 {
            ListState::List(list) => list.next().copied(),
            ListState::Raw(r) => {
                let item = T::read(r);
                if item.is_err() {
                    r.rest();
                }
                item.ok()
            }
        }
    }
}

/// Reads what a SUBSCRIBE or UNSUBSCRIBE holds: the packet id, the properties, and a
/// payload of at least one item, each checked by `check_item` (which reads one).
fn read_list_packet<'a>(
    r: &mut Reader<'a>,
    version: Version,
    context: Context,
    mut check_item: impl FnMut(&mut Reader<'a>) -> Result<(), DecodeError>,
) -> Result<(u16, Properties<'a>, &'a [u8]), DecodeError> {
    let pkid = read_packet_id(r)?;
    let properties = Properties::read(r, version, context)?;
    let payload = r.rest();
    if payload.is_empty() {
        return Err(DecodeError::EmptySubscription);
    }
    let mut p = Reader::new(payload);
    while !p.is_empty() {
        check_item(&mut p)?;
    }
    Ok((pkid, properties, payload))
}

/// A SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe<'a> {
    pub pkid: u16,
    pub properties: Properties<'a>,
    pub filters: SubscribeFilters<'a>,
}

impl<'a> Subscribe<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>, version: Version) -> Result<Self, DecodeError> {
        // MQTT-3.8.3-3: at least one pair.
        let (pkid, properties, payload) = read_list_packet(r, version, Context::Subscribe, |p| {
            let filter = read_topic_filter(p, version)?;
            let options = SubscriptionOptions::from_byte(read_u8(p)?, version)?;
            // MQTT-3.8.3-4: a client never receives its own message on a shared
            // subscription anyway, so asking for it is a protocol error.
            if options.no_local && filter.starts_with(SHARED_PREFIX) {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            Ok(())
        })?;
        Ok(Subscribe {
            pkid,
            properties,
            filters: SubscribeFilters::Raw(payload),
        })
    }
}

/// A SUBACK packet: one reason code (3.1.1: return code) per filter of the SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck<'a> {
    pub pkid: u16,
    pub properties: Properties<'a>,
    /// Granted QoS (0, 1, 2) or a failure code, each a [`ReasonCode`](super::ReasonCode)
    /// byte; 3.1.1 has only 0, 1, 2 and 0x80.
    pub codes: &'a [u8],
}

impl<'a> SubAck<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>, version: Version) -> Result<Self, DecodeError> {
        let pkid = read_packet_id(r)?;
        let properties = Properties::read(r, version, Context::SubAck)?;
        let allowed = match version {
            Version::V311 => SUBACK_CODES_V311,
            Version::V5 => SUBACK_CODES,
        };
        let codes = read_codes(r, allowed)?;
        Ok(SubAck {
            pkid,
            properties,
            codes,
        })
    }

    pub(crate) fn body_len(&self, version: Version) -> usize {
        2 + self.properties.wire_len(version) + self.codes.len()
    }

    pub(crate) fn write_body<O: Out>(
        &self,
        version: Version,
        out: &mut O,
    ) -> Result<(), EncodeError> {
        write_id_and_properties(self.pkid, &self.properties, version, out)?;
        out.put(self.codes)
    }
}

/// The rest of the packet as a non-empty list of allowed codes.
fn read_codes<'a>(r: &mut Reader<'a>, allowed: &[u8]) -> Result<&'a [u8], DecodeError> {
    let codes = r.rest();
    if codes.is_empty() {
        return Err(DecodeError::EmptySubscription);
    }
    match codes.iter().find(|c| !allowed.contains(c)) {
        Some(&bad) => Err(DecodeError::InvalidReasonCode(bad)),
        None => Ok(codes),
    }
}

/// An UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    pub pkid: u16,
    pub properties: Properties<'a>,
    pub filters: TopicList<'a>,
}

impl<'a> Unsubscribe<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>, version: Version) -> Result<Self, DecodeError> {
        // 3.1.1 MQTT-3.10.3-2, 5.0 MQTT-3.10.3-2: at least one filter.
        let (pkid, properties, payload) =
            read_list_packet(r, version, Context::Unsubscribe, |p| {
                read_topic_filter(p, version).map(|_| ())
            })?;
        Ok(Unsubscribe {
            pkid,
            properties,
            filters: TopicList::Raw(payload),
        })
    }
}

/// An UNSUBACK packet. In 3.1.1 it carries only the packet identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck<'a> {
    pub pkid: u16,
    pub properties: Properties<'a>,
    /// One [`ReasonCode`](super::ReasonCode) byte per filter (MQTT 5); empty in 3.1.1,
    /// where encoding leaves them out.
    pub codes: &'a [u8],
}

impl<'a> UnsubAck<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>, version: Version) -> Result<Self, DecodeError> {
        let pkid = read_packet_id(r)?;
        if version == Version::V311 {
            return Ok(UnsubAck {
                pkid,
                properties: Properties::EMPTY,
                codes: &[],
            });
        }
        let properties = Properties::read(r, version, Context::UnsubAck)?;
        let codes = read_codes(r, UNSUBACK_CODES)?;
        Ok(UnsubAck {
            pkid,
            properties,
            codes,
        })
    }

    pub(crate) fn body_len(&self, version: Version) -> usize {
        match version {
            Version::V311 => 2,
            Version::V5 => 2 + self.properties.wire_len(version) + self.codes.len(),
        }
    }

    pub(crate) fn write_body<O: Out>(
        &self,
        version: Version,
        out: &mut O,
    ) -> Result<(), EncodeError> {
        if version == Version::V311 {
            return out.put_u16(self.pkid);
        }
        write_id_and_properties(self.pkid, &self.properties, version, out)?;
        out.put(self.codes)
    }
}
