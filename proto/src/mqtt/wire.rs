//! Wire primitives shared by every packet: the protocol version, QoS, variable byte integers,
//! length-prefixed strings and binary data, topic names and filters (checked by
//! [`crate::topic`]'s rules), and the [`Out`] sink that encoders write into.

use super::error::{DecodeError, EncodeError};
use crate::reader::Reader;
use crate::topic;

/// The largest value a four-byte variable byte integer holds (3.1.1 §2.2.3, 5.0 §1.5.5); the
/// largest remaining length, property length and subscription identifier.
pub const MAX_VARINT: usize = 268_435_455;
/// A variable byte integer is at most four bytes long; a fifth continuation byte is malformed.
const VARINT_MAX_BYTES: usize = 4;
/// Set on every byte of a variable byte integer except the last.
const CONTINUATION: u8 = 0x80;
/// The seven value bits of each variable byte integer byte.
const VARINT_VALUE_BITS: u8 = 0x7F;
/// Strings and binary data carry a two-byte length, so they hold at most this many bytes.
const MAX_PREFIXED_LEN: usize = u16::MAX as usize;

/// The protocol revisions spoken, by their CONNECT protocol level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// MQTT 3.1.1, protocol level 4.
    V311,
    /// MQTT 5.0, protocol level 5.
    V5,
}

impl Version {
    /// The protocol level byte of a CONNECT packet.
    pub const fn level(self) -> u8 {
        match self {
            Version::V311 => 4,
            Version::V5 => 5,
        }
    }

    /// The version for a CONNECT protocol level, if it is one ringmq speaks.
    pub const fn from_level(level: u8) -> Option<Version> {
        match level {
            4 => Some(Version::V311),
            5 => Some(Version::V5),
            _ => None,
        }
    }
}

/// Quality of service of a message or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a wire value; 3 (and anything larger) is not one.
    pub const fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// Why a variable byte integer could not be read; the caller decides which error that is
/// (the fixed header waits for more bytes, a field inside a packet is truncated).
pub(crate) enum VarIntError {
    Incomplete,
    TooLong,
}

/// Reads a variable byte integer of at most four bytes.
///
/// Non-minimal encodings (0x80 0x00 for zero) are accepted: 5.0 §1.5.5 puts the "minimum
/// number of bytes" duty on the sender and names no answer for the receiver, and mosquitto
/// accepts them too.
pub(crate) fn take_varint(r: &mut Reader<'_>) -> Result<usize, VarIntError> {
    let mut value = 0usize;
    for i in 0..VARINT_MAX_BYTES {
        let byte = r.u8().ok_or(VarIntError::Incomplete)?;
        value |= usize::from(byte & VARINT_VALUE_BITS) << (7 * i);
        if byte & CONTINUATION == 0 {
            return Ok(value);
        }
    }
    Err(VarIntError::TooLong)
}

/// A variable byte integer inside a packet body (a property length, a subscription identifier).
pub(crate) fn read_varint(r: &mut Reader<'_>) -> Result<usize, DecodeError> {
    take_varint(r).map_err(|e| match e {
        VarIntError::Incomplete => DecodeError::Truncated,
        VarIntError::TooLong => DecodeError::MalformedVarInt,
    })
}

/// Bytes a variable byte integer takes on the wire; 4 for anything too large to encode, which
/// the writer then refuses.
pub(crate) const fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn read_u8(r: &mut Reader<'_>) -> Result<u8, DecodeError> {
    r.u8().ok_or(DecodeError::Truncated)
}

pub(crate) fn read_u16(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    r.u16().ok_or(DecodeError::Truncated)
}

pub(crate) fn read_u32(r: &mut Reader<'_>) -> Result<u32, DecodeError> {
    r.u32().ok_or(DecodeError::Truncated)
}

/// A packet identifier, which is never 0 in a packet that carries one (3.1.1 §2.3.1,
/// 5.0 §2.2.1).
pub(crate) fn read_packet_id(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    match read_u16(r)? {
        0 => Err(DecodeError::ZeroPacketId),
        id => Ok(id),
    }
}

/// Binary data: a two-byte length, then that many bytes.
pub(crate) fn read_binary<'a>(r: &mut Reader<'a>) -> Result<&'a [u8], DecodeError> {
    let len = read_u16(r)?;
    r.take(usize::from(len)).ok_or(DecodeError::Truncated)
}

/// A UTF-8 encoded string: well-formed UTF-8 (which excludes the surrogates U+D800..U+DFFF)
/// without U+0000, both Malformed Packet in 5.0 §1.5.4 and a connection close in 3.1.1 §1.5.3.
pub(crate) fn read_str<'a>(r: &mut Reader<'a>) -> Result<&'a str, DecodeError> {
    let bytes = read_binary(r)?;
    let s = core::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
    if bytes.contains(&0) {
        return Err(DecodeError::NullCharacter);
    }
    Ok(s)
}

/// A topic name: a string without wildcards, and not empty unless `allow_empty` (an MQTT 5
/// PUBLISH whose Topic Alias stands for the name; whether the alias is there and known is the
/// session's check). The rules are [`crate::topic`]'s.
pub(crate) fn read_topic_name<'a>(
    r: &mut Reader<'a>,
    allow_empty: bool,
) -> Result<&'a str, DecodeError> {
    let name = read_str(r)?;
    if !(name.is_empty() && allow_empty || is_topic_name(name)) {
        return Err(DecodeError::TopicNameInvalid);
    }
    Ok(name)
}

/// A topic filter whose wildcards stand where 4.7.1 allows them, by [`crate::topic`]'s
/// rules. In MQTT 5 a `$share/{group}/{filter}` must also be a well-formed shared
/// subscription (5.0 §4.8.2); 3.1.1 gives `$share` no meaning, so there it is a plain filter.
pub(crate) fn read_topic_filter<'a>(
    r: &mut Reader<'a>,
    version: Version,
) -> Result<&'a str, DecodeError> {
    let filter = read_str(r)?;
    let valid = match version {
        Version::V311 => topic::validate_filter(filter).is_ok(),
        Version::V5 => topic::parse_filter(filter).is_ok(),
    };
    if !valid {
        return Err(DecodeError::TopicFilterInvalid);
    }
    Ok(filter)
}

/// A non-empty topic name without wildcards (PUBLISH and will topic, response topic).
pub(crate) fn is_topic_name(name: &str) -> bool {
    topic::validate_name(name).is_ok()
}

/// Where encoders write: a caller's slice, or the end of a `Vec`. Both checks (room, and
/// values that fit their fields) happen here, so packet encoders are straight-line code.
pub(crate) trait Out {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError>;

    fn put_u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.put(&[v])
    }

    fn put_u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.put(&v.to_be_bytes())
    }

    fn put_u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.put(&v.to_be_bytes())
    }

    fn put_varint(&mut self, v: usize) -> Result<(), EncodeError> {
        if v > MAX_VARINT {
            return Err(EncodeError::ValueOutOfRange);
        }
        let len = varint_len(v);
        let mut bytes = [0u8; VARINT_MAX_BYTES];
        let mut rest = v;
        for (i, slot) in bytes.iter_mut().enumerate().take(len) {
            let more = if i + 1 < len { CONTINUATION } else { 0 };
            // Truncation is the point: the low seven bits of what is left.
            *slot = (rest & usize::from(VARINT_VALUE_BITS)) as u8 | more;
            rest >>= 7;
        }
        // `len` is at most VARINT_MAX_BYTES: `varint_len` of a value that fits.
        self.put(&bytes[..len])
    }

    fn put_binary(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        if bytes.len() > MAX_PREFIXED_LEN {
            return Err(EncodeError::StringTooLong);
        }
        self.put_u16(bytes.len() as u16)?;
        self.put(bytes)
    }

    fn put_str(&mut self, s: &str) -> Result<(), EncodeError> {
        self.put_binary(s.as_bytes())
    }
}

/// Writes into a caller's slice.
pub(crate) struct SliceOut<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl<'b> SliceOut<'b> {
    pub(crate) fn new(buf: &'b mut [u8]) -> Self {
        SliceOut { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }
}

impl Out for SliceOut<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos + bytes.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall { need: end })?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
}

/// Appends; the packet encoder reserves the exact length first, so this never reallocates.
impl Out for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_bytes(v: usize) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_varint(v).unwrap();
        out
    }

    /// The examples of 3.1.1 §2.2.3 / 5.0 §1.5.5, at each boundary.
    #[test]
    fn varint_spec_examples() {
        let cases: &[(usize, &[u8])] = &[
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for &(value, bytes) in cases {
            assert_eq!(varint_bytes(value), bytes, "{value}");
            assert_eq!(varint_len(value), bytes.len(), "{value}");
            let mut r = Reader::new(bytes);
            assert_eq!(read_varint(&mut r), Ok(value));
            assert!(r.is_empty());
        }
        assert_eq!(
            Vec::new().put_varint(MAX_VARINT + 1),
            Err(EncodeError::ValueOutOfRange)
        );
    }

    #[test]
    fn varint_too_long_or_short() {
        let mut r = Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x01]);
        assert_eq!(read_varint(&mut r), Err(DecodeError::MalformedVarInt));
        let mut r = Reader::new(&[0x80, 0x80]);
        assert_eq!(read_varint(&mut r), Err(DecodeError::Truncated));
    }

    #[test]
    fn strings_reject_nul_and_bad_utf8() {
        let mut r = Reader::new(&[0, 2, b'a', 0]);
        assert_eq!(read_str(&mut r), Err(DecodeError::NullCharacter));
        // An encoded surrogate, U+D800.
        let mut r = Reader::new(&[0, 3, 0xED, 0xA0, 0x80]);
        assert_eq!(read_str(&mut r), Err(DecodeError::InvalidUtf8));
        let long = vec![b'a'; MAX_PREFIXED_LEN + 1];
        assert_eq!(
            Vec::new().put_binary(&long),
            Err(EncodeError::StringTooLong)
        );
    }
}
