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

/// The (filter, options) pairs of a SUBSCRIBE.
#[derive(Clone, Copy)]
pub enum SubscribeFilters<'a> {
    /// The payload as received, validated by the decoder.
    Raw(&'a [u8]),
    /// Pairs to encode.
    List(&'a [(&'a str, SubscriptionOptions)]),
}

impl<'a> SubscribeFilters<'a> {
    /// The pairs in wire order. A `Raw` payload not made by the decoder yields pairs up to
    /// the first it cannot read.
    pub fn iter(&self) -> SubscribeFiltersIter<'a> {
        SubscribeFiltersIter(match *self {
            SubscribeFilters::Raw(bytes) => ListState::Raw(Reader::new(bytes)),
            SubscribeFilters::List(list) => ListState::List(list.iter()),
        })
    }

    /// The number of pairs (walks a `Raw` payload).
    pub fn len(&self) -> usize {
        match self {
            SubscribeFilters::Raw(_) => self.iter().count(),
            SubscribeFilters::List(list) => list.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            SubscribeFilters::Raw(bytes) => bytes.is_empty(),
            SubscribeFilters::List(list) => list.is_empty(),
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            // Counted as `write` writes it, even for a payload the decoder did not check.
            SubscribeFilters::Raw(_) => self.iter().map(|(f, _)| 2 + f.len() + 1).sum(),
            SubscribeFilters::List(list) => list.iter().map(|(f, _)| 2 + f.len() + 1).sum(),
        }
    }

    fn write<O: Out>(&self, version: Version, out: &mut O) -> Result<(), EncodeError> {
        match self {
            // Decoded in some version: rewrite rather than copy, so a v5 payload sent as
            // 3.1.1 loses its v5-only option bits.
            SubscribeFilters::Raw(_) => self.iter().try_for_each(|(f, o)| {
                out.put_str(f)?;
                out.put_u8(o.to_byte(version)?)
            }),
            SubscribeFilters::List(list) => list.iter().try_for_each(|(f, o)| {
                out.put_str(f)?;
                out.put_u8(o.to_byte(version)?)
            }),
        }
    }
}

impl PartialEq for SubscribeFilters<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for SubscribeFilters<'_> {}

impl fmt::Debug for SubscribeFilters<'_> {
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

/// Iterator over [`SubscribeFilters`].
#[derive(Debug, Clone)]
pub struct SubscribeFiltersIter<'a>(ListState<'a, (&'a str, SubscriptionOptions)>);

impl<'a> Iterator for SubscribeFiltersIter<'a> {
    type Item = (&'a str, SubscriptionOptions);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            ListState::List(list) => list.next().copied(),
            ListState::Raw(r) => {
                let pair = read_str(r).and_then(|filter| {
                    // The MQTT 5 layout reads a validated 3.1.1 byte the same way.
                    let options = SubscriptionOptions::from_byte(read_u8(r)?, Version::V5)?;
                    Ok((filter, options))
                });
                if pair.is_err() {
                    r.rest();
                }
                pair.ok()
            }
        }
    }
}

/// A list of topic filters: the payload of an UNSUBSCRIBE.
#[derive(Clone, Copy)]
pub enum TopicList<'a> {
    /// The payload as received, validated by the decoder.
    Raw(&'a [u8]),
    /// Filters to encode.
    List(&'a [&'a str]),
}

impl<'a> TopicList<'a> {
    /// The filters in wire order.
    pub fn iter(&self) -> TopicListIter<'a> {
        TopicListIter(match *self {
            TopicList::Raw(bytes) => ListState::Raw(Reader::new(bytes)),
            TopicList::List(list) => ListState::List(list.iter()),
        })
    }

    /// The number of filters (walks a `Raw` payload).
    pub fn len(&self) -> usize {
        match self {
            TopicList::Raw(_) => self.iter().count(),
            TopicList::List(list) => list.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            TopicList::Raw(bytes) => bytes.is_empty(),
            TopicList::List(list) => list.is_empty(),
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            TopicList::Raw(bytes) => bytes.len(),
            TopicList::List(list) => list.iter().map(|f| 2 + f.len()).sum(),
        }
    }

    fn write<O: Out>(&self, out: &mut O) -> Result<(), EncodeError> {
        match self {
            TopicList::Raw(bytes) => out.put(bytes),
            TopicList::List(list) => list.iter().try_for_each(|f| out.put_str(f)),
        }
    }
}

impl PartialEq for TopicList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for TopicList<'_> {}

impl fmt::Debug for TopicList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over [`TopicList`].
#[derive(Debug, Clone)]
pub struct TopicListIter<'a>(ListState<'a, &'a str>);

impl<'a> Iterator for TopicListIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match &mut self.0 {
            ListState::List(list) => list.next().copied(),
            ListState::Raw(r) => {
                let filter = read_str(r);
                if filter.is_err() {
                    r.rest();
                }
                filter.ok()
            }
        }
    }
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
        let pkid = read_packet_id(r)?;
        let properties = Properties::read(r, version, Context::Subscribe)?;
        let payload = r.rest();
        // MQTT-3.8.3-3: at least one pair.
        if payload.is_empty() {
            return Err(DecodeError::EmptySubscription);
        }
        let mut p = Reader::new(payload);
        while !p.is_empty() {
            let filter = read_topic_filter(&mut p, version)?;
            let options = SubscriptionOptions::from_byte(read_u8(&mut p)?, version)?;
            // MQTT-3.8.3-4: a client never receives its own message on a shared
            // subscription anyway, so asking for it is a protocol error.
            if options.no_local && filter.starts_with(SHARED_PREFIX) {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
        }
        Ok(Subscribe {
            pkid,
            properties,
            filters: SubscribeFilters::Raw(payload),
        })
    }

    pub(crate) fn body_len(&self, version: Version) -> usize {
        2 + self.properties.wire_len(version) + self.filters.encoded_len()
    }

    pub(crate) fn write_body<O: Out>(
        &self,
        version: Version,
        out: &mut O,
    ) -> Result<(), EncodeError> {
        out.put_u16(self.pkid)?;
        self.properties.write(version, out)?;
        self.filters.write(version, out)
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
        out.put_u16(self.pkid)?;
        self.properties.write(version, out)?;
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
        let pkid = read_packet_id(r)?;
        let properties = Properties::read(r, version, Context::Unsubscribe)?;
        let payload = r.rest();
        // 3.1.1 MQTT-3.10.3-2, 5.0 MQTT-3.10.3-2: at least one filter.
        if payload.is_empty() {
            return Err(DecodeError::EmptySubscription);
        }
        let mut p = Reader::new(payload);
        while !p.is_empty() {
            read_topic_filter(&mut p, version)?;
        }
        Ok(Unsubscribe {
            pkid,
            properties,
            filters: TopicList::Raw(payload),
        })
    }

    pub(crate) fn body_len(&self, version: Version) -> usize {
        2 + self.properties.wire_len(version) + self.filters.encoded_len()
    }

    pub(crate) fn write_body<O: Out>(
        &self,
        version: Version,
        out: &mut O,
    ) -> Result<(), EncodeError> {
        out.put_u16(self.pkid)?;
        self.properties.write(version, out)?;
        self.filters.write(out)
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
        out.put_u16(self.pkid)?;
        if version == Version::V5 {
            self.properties.write(version, out)?;
            out.put(self.codes)?;
        }
        Ok(())
    }
}
