//! The fixed header (3.1.1 §2.2, 5.0 §2.1): packet type and flags in the first byte, then the
//! remaining length. Framing is settled here before any byte of the body is looked at: a
//! wrong first byte is refused on its own, and a packet above the maximum size as soon as its
//! length is readable.

use super::error::DecodeError;
use super::wire::{QoS, VarIntError, Version, take_varint};
use crate::Decoded;
use crate::reader::Reader;

/// Control packet types, the high nibble of the first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

/// The flags PUBREL, SUBSCRIBE and UNSUBSCRIBE must carry; every other type but PUBLISH
/// carries 0 (3.1.1 §2.2.2, 5.0 §2.1.3).
const FLAGS_BIT_1: u8 = 0b0010;

impl PacketType {
    /// The type in the first byte. Type 0 is reserved in both versions; 15 is AUTH in
    /// MQTT 5 and reserved in 3.1.1.
    fn from_first_byte(byte: u8, version: Version) -> Result<PacketType, DecodeError> {
        use PacketType::*;
        Ok(match byte >> 4 {
            1 => Connect,
            2 => ConnAck,
            3 => Publish,
            4 => PubAck,
            5 => PubRec,
            6 => PubRel,
            7 => PubComp,
            8 => Subscribe,
            9 => SubAck,
            10 => Unsubscribe,
            11 => UnsubAck,
            12 => PingReq,
            13 => PingResp,
            14 => Disconnect,
            15 if version == Version::V5 => Auth,
            _ => return Err(DecodeError::InvalidPacketType),
        })
    }

    /// The first byte of a packet of this type whose flags are fixed.
    pub(crate) const fn first_byte(self) -> u8 {
        let flags = match self {
            PacketType::PubRel | PacketType::Subscribe | PacketType::Unsubscribe => FLAGS_BIT_1,
            _ => 0,
        };
        (self as u8) << 4 | flags
    }
}

/// Whether a packet starting with `first_byte` only settles the sender's own exchange
/// with its peer: PUBACK, PUBREC, PUBREL, PUBCOMP or PINGREQ. A broker may take these up
/// ahead of packets it holds back (a paused publisher's), since none of them depends on
/// a later packet nor changes what others receive.
pub fn is_acknowledgement(first_byte: u8) -> bool {
    matches!(first_byte >> 4, 4..=7 | 12)
}

/// The checked first byte: the type and its flags (only PUBLISH flags carry information).
pub(crate) fn parse_first_byte(
    byte: u8,
    version: Version,
) -> Result<(PacketType, u8), DecodeError> {
    let kind = PacketType::from_first_byte(byte, version)?;
    let flags = byte & 0x0F;
    if kind == PacketType::Publish {
        PublishFlags::from_bits(flags)?;
    } else if byte != kind.first_byte() {
        return Err(DecodeError::InvalidHeaderFlags);
    }
    Ok((kind, flags))
}

/// The flags of a PUBLISH fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PublishFlags {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
}

impl PublishFlags {
    const DUP: u8 = 0b1000;
    const QOS_SHIFT: u8 = 1;
    const QOS_BITS: u8 = 0b11;
    const RETAIN: u8 = 0b0001;

    /// QoS 3 is malformed (MQTT-3.3.1-4); DUP on QoS 0 is forbidden (MQTT-3.3.1-2).
    pub(crate) fn from_bits(flags: u8) -> Result<PublishFlags, DecodeError> {
        let qos = QoS::from_u8((flags >> Self::QOS_SHIFT) & Self::QOS_BITS)
            .ok_or(DecodeError::InvalidQoS)?;
        let dup = flags & Self::DUP != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupWithQoS0);
        }
        Ok(PublishFlags {
            dup,
            qos,
            retain: flags & Self::RETAIN != 0,
        })
    }

    /// The whole first byte of a PUBLISH with these flags.
    pub(crate) fn first_byte(self) -> u8 {
        let mut byte = (PacketType::Publish as u8) << 4 | (self.qos as u8) << Self::QOS_SHIFT;
        if self.dup {
            byte |= Self::DUP;
        }
        if self.retain {
            byte |= Self::RETAIN;
        }
        byte
    }
}

/// The length of the packet at the front of `buf`, read from its fixed header alone.
///
/// Returns `Complete(total_len, header_len)`: the packet spans `total_len` bytes (fixed
/// header plus remaining length), of which the first `header_len` are the fixed header. It is
/// complete as soon as the fixed header is, whether or not the body has arrived, so a
/// connection can size its carry buffer; `Partial { need: 1 }` while the fixed header is
/// still incomplete. The first byte is not checked (that needs the version; [`decode`] does
/// it). `Err(PacketTooLarge)` when `total_len` exceeds `max_packet_size`, which counts the
/// whole packet as MQTT 5's Maximum Packet Size does; `Err(MalformedRemainingLength)` for a
/// remaining length with a fifth byte.
///
/// [`decode`]: super::decode
pub fn peek_packet_len(buf: &[u8], max_packet_size: u32) -> Result<Decoded<usize>, DecodeError> {
    let Some(length_bytes) = buf.get(1..) else {
        return Ok(Decoded::Partial { need: 1 });
    };
    let mut r = Reader::new(length_bytes);
    let remaining = match take_varint(&mut r) {
        Ok(remaining) => remaining,
        Err(VarIntError::Incomplete) => return Ok(Decoded::Partial { need: 1 }),
        Err(VarIntError::TooLong) => return Err(DecodeError::MalformedRemainingLength),
    };
    let header_len = 1 + r.position();
    let total = header_len + remaining;
    if total > usize::try_from(max_packet_size).unwrap_or(usize::MAX) {
        return Err(DecodeError::PacketTooLarge);
    }
    Ok(Decoded::Complete(total, header_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_are_the_four_publish_answers_and_pingreq() {
        use PacketType::*;
        let acks = [PubAck, PubRec, PubRel, PubComp, PingReq];
        // Every packet type (AUTH included: MQTT 5).
        for nibble in 1..=15u8 {
            let kind = PacketType::from_first_byte(nibble << 4, Version::V5).unwrap();
            assert_eq!(
                is_acknowledgement(kind.first_byte()),
                acks.contains(&kind),
                "{kind:?}"
            );
        }
        assert!(!is_acknowledgement(0x3B), "a QoS 1 retained DUP PUBLISH");
    }

    #[test]
    fn first_bytes_round_trip() {
        for kind in [PacketType::PubRel, PacketType::Subscribe, PacketType::Auth] {
            let byte = kind.first_byte();
            assert_eq!(parse_first_byte(byte, Version::V5), Ok((kind, byte & 0x0F)));
        }
        assert_eq!(
            parse_first_byte(0xF0, Version::V311),
            Err(DecodeError::InvalidPacketType)
        );
        let flags = PublishFlags {
            dup: true,
            qos: QoS::ExactlyOnce,
            retain: true,
        };
        assert_eq!(flags.first_byte(), 0x3D);
        assert_eq!(PublishFlags::from_bits(0x0D), Ok(flags));
    }

    #[test]
    fn peek_reports_total_and_header_length() {
        assert_eq!(peek_packet_len(&[], 100), Ok(Decoded::Partial { need: 1 }));
        assert_eq!(
            peek_packet_len(&[0x30], 100),
            Ok(Decoded::Partial { need: 1 })
        );
        assert_eq!(
            peek_packet_len(&[0x30, 0x80], 1000),
            Ok(Decoded::Partial { need: 1 })
        );
        assert_eq!(
            peek_packet_len(&[0x30, 0x80, 0x01], 1000),
            Ok(Decoded::Complete(131, 3))
        );
        assert_eq!(
            peek_packet_len(&[0x30, 0x80, 0x01], 130),
            Err(DecodeError::PacketTooLarge)
        );
        assert_eq!(
            peek_packet_len(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], u32::MAX),
            Err(DecodeError::MalformedRemainingLength)
        );
    }
}
