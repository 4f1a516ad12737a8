//! The [`Packet`] enum, the two packets small enough to live here (DISCONNECT and AUTH), and
//! the entry points: [`decode`] frames a packet with the fixed header, checks its size, and
//! hands the body to the packet's decoder; [`Packet::encode`] computes the exact length,
//! then writes.

use super::connect::{ConnAck, Connect};
use super::error::{DecodeError, EncodeError};
use super::header::{PacketType, parse_first_byte, peek_packet_len};
use super::properties::{Context, Properties};
use super::publish::{PubResp, Publish};
use super::reason::{AUTH_CODES, DISCONNECT_CODES, ReasonCode};
use super::subscribe::{SubAck, Subscribe, UnsubAck, Unsubscribe, list_body_len, write_list_body};
use super::wire::{MAX_VARINT, Out, SliceOut, Version, read_u8, varint_len};
use crate::Decoded;
use crate::reader::Reader;

/// One MQTT control packet, borrowing its strings, payload and properties from the buffer it
/// was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Connect(Connect<'a>),
    ConnAck(ConnAck<'a>),
    Publish(Publish<'a>),
    PubAck(PubResp<'a>),
    PubRec(PubResp<'a>),
    PubRel(PubResp<'a>),
    PubComp(PubResp<'a>),
    Subscribe(Subscribe<'a>),
    SubAck(SubAck<'a>),
    Unsubscribe(Unsubscribe<'a>),
    UnsubAck(UnsubAck<'a>),
    PingReq,
    PingResp,
    Disconnect(Disconnect<'a>),
    /// MQTT 5 only.
    Auth(Auth<'a>),
}

/// A DISCONNECT packet. In 3.1.1 it has no body: encoding leaves reason and properties out,
/// decoding gives [`ReasonCode::NORMAL_DISCONNECTION`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect<'a> {
    pub reason: ReasonCode,
    pub properties: Properties<'a>,
}

/// An AUTH packet (MQTT 5 only), a step of an extended authentication exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth<'a> {
    pub reason: ReasonCode,
    pub properties: Properties<'a>,
}

/// DISCONNECT and AUTH share a body: an optional reason code and optional properties,
/// both left out when the reason is 0 and there are no properties (5.0 §3.14.2, §3.15.2).
fn decode_reason_body<'a>(
    r: &mut Reader<'a>,
    allowed: &[u8],
    context: Context,
) -> Result<(ReasonCode, Properties<'a>), DecodeError> {
    if r.is_empty() {
        return Ok((ReasonCode::SUCCESS, Properties::EMPTY));
    }
    let reason = read_u8(r)?;
    if !allowed.contains(&reason) {
        return Err(DecodeError::InvalidReasonCode(reason));
    }
    // "If the Remaining Length is less than 2, a value of 0 is used" for the Property Length.
    let properties = if r.is_empty() {
        Properties::EMPTY
    } else {
        Properties::read(r, Version::V5, context)?
    };
    Ok((ReasonCode(reason), properties))
}

fn reason_body_len(reason: ReasonCode, properties: &Properties<'_>) -> usize {
    if !properties.is_empty() {
        1 + properties.wire_len(Version::V5)
    } else {
        usize::from(reason != ReasonCode::SUCCESS)
    }
}

fn write_reason_body<O: Out>(
    reason: ReasonCode,
    properties: &Properties<'_>,
    out: &mut O,
) -> Result<(), EncodeError> {
    if reason != ReasonCode::SUCCESS || !properties.is_empty() {
        out.put_u8(reason.0)?;
    }
    if !properties.is_empty() {
        properties.write(Version::V5, out)?;
    }
    Ok(())
}

/// Decodes the packet at the front of `buf`.
///
/// `version` is the version the connection speaks; a CONNECT ignores it and is decoded in
/// the version its protocol level names. `max_packet_size` counts the whole packet (fixed
/// header and remaining length, like MQTT 5's Maximum Packet Size); a packet declaring more
/// is `Err(PacketTooLarge)` as soon as its fixed header is readable.
///
/// Returns `Complete(packet, consumed)` with the bytes the packet used, or
/// `Partial { need }`: while the fixed header is incomplete `need` is 1, afterwards it is
/// exactly the number of bytes still missing. A first byte that is wrong on its own (reserved
/// type, bad flags, QoS 3) is an error before any more bytes arrive.
pub fn decode(
    buf: &[u8],
    version: Version,
    max_packet_size: u32,
) -> Result<Decoded<Packet<'_>>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(Decoded::Partial { need: 1 });
    };
    let (kind, flags) = parse_first_byte(first, version)?;
    let (total, header_len) = match peek_packet_len(buf, max_packet_size)? {
        Decoded::Partial { need } => return Ok(Decoded::Partial { need }),
        Decoded::Complete(total, header_len) => (total, header_len),
    };
    let Some(body) = buf.get(header_len..total) else {
        return Ok(Decoded::Partial {
            need: total.saturating_sub(buf.len()),
        });
    };
    let packet = decode_body(kind, flags, body, version)?;
    Ok(Decoded::Complete(packet, total))
}

fn decode_body(
    kind: PacketType,
    flags: u8,
    body: &[u8],
    version: Version,
) -> Result<Packet<'_>, DecodeError> {
    let r = &mut Reader::new(body);
    let packet = match kind {
        PacketType::Connect => Packet::Connect(Connect::decode(r)?),
        PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(r, version)?),
        PacketType::Publish => Packet::Publish(Publish::decode(flags, r, version)?),
        PacketType::PubAck => Packet::PubAck(PubResp::decode(kind, r, version)?),
        PacketType::PubRec => Packet::PubRec(PubResp::decode(kind, r, version)?),
        PacketType::PubRel => Packet::PubRel(PubResp::decode(kind, r, version)?),
        PacketType::PubComp => Packet::PubComp(PubResp::decode(kind, r, version)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(r, version)?),
        PacketType::SubAck => Packet::SubAck(SubAck::decode(r, version)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(r, version)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(r, version)?),
        PacketType::PingReq => Packet::PingReq,
        PacketType::PingResp => Packet::PingResp,
        PacketType::Disconnect if version == Version::V311 => Packet::Disconnect(Disconnect {
            reason: ReasonCode::NORMAL_DISCONNECTION,
            properties: Properties::EMPTY,
        }),
        PacketType::Disconnect => {
            let (reason, properties) =
                decode_reason_body(r, DISCONNECT_CODES, Context::Disconnect)?;
            Packet::Disconnect(Disconnect { reason, properties })
        }
        PacketType::Auth => {
            let (reason, properties) = decode_reason_body(r, AUTH_CODES, Context::Auth)?;
            Packet::Auth(Auth { reason, properties })
        }
    };
    if !r.is_empty() {
        return Err(DecodeError::TrailingBytes);
    }
    Ok(packet)
}

impl Packet<'_> {
    /// The version the packet is written in: a CONNECT's own, otherwise `version`.
    fn wire_version(&self, version: Version) -> Version {
        match self {
            Packet::Connect(c) => c.version,
            _ => version,
        }
    }

    /// The remaining length in `version` (already resolved by `wire_version`).
    fn body_len(&self, version: Version) -> usize {
        match self {
            Packet::Connect(c) => c.body_len(),
            Packet::ConnAck(c) => c.body_len(version),
            Packet::Publish(p) => p.body_len(version),
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                r.body_len(version)
            }
            Packet::Subscribe(s) => list_body_len(&s.properties, &s.filters, version),
            Packet::SubAck(s) => s.body_len(version),
            Packet::Unsubscribe(u) => list_body_len(&u.properties, &u.filters, version),
            Packet::UnsubAck(u) => u.body_len(version),
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(_) if version == Version::V311 => 0,
            Packet::Disconnect(d) => reason_body_len(d.reason, &d.properties),
            Packet::Auth(a) => reason_body_len(a.reason, &a.properties),
        }
    }

    fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubAck(_) => PacketType::PubAck,
            Packet::PubRec(_) => PacketType::PubRec,
            Packet::PubRel(_) => PacketType::PubRel,
            Packet::PubComp(_) => PacketType::PubComp,
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// Bytes [`Packet::encode`] writes for `version`.
    pub fn encoded_len(&self, version: Version) -> usize {
        let body = self.body_len(self.wire_version(version));
        1 + varint_len(body) + body
    }

    /// Checks that the packet can be written in `version` and returns its resolved version,
    /// remaining length and total length.
    fn plan(&self, version: Version) -> Result<(Version, usize, usize), EncodeError> {
        let version = self.wire_version(version);
        if version == Version::V311 && matches!(self, Packet::Auth(_)) {
            return Err(EncodeError::NotInVersion);
        }
        let body = self.body_len(version);
        if body > MAX_VARINT {
            return Err(EncodeError::RemainingLengthTooLarge);
        }
        Ok((version, body, 1 + varint_len(body) + body))
    }

    fn write<O: Out>(
        &self,
        version: Version,
        body_len: usize,
        out: &mut O,
    ) -> Result<(), EncodeError> {
        if let Packet::Publish(p) = self {
            return p.write(version, body_len, out);
        }
        out.put_u8(self.packet_type().first_byte())?;
        out.put_varint(body_len)?;
        match self {
            Packet::Connect(c) => c.write_body(out),
            Packet::ConnAck(c) => c.write_body(version, out),
            Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => {
                r.write_body(version, out)
            }
            Packet::Subscribe(s) => {
                write_list_body(s.pkid, &s.properties, &s.filters, version, out)
            }
            Packet::SubAck(s) => s.write_body(version, out),
            Packet::Unsubscribe(u) => {
                write_list_body(u.pkid, &u.properties, &u.filters, version, out)
            }
            Packet::UnsubAck(u) => u.write_body(version, out),
            Packet::Disconnect(_) if version == Version::V311 => Ok(()),
            Packet::Disconnect(d) => write_reason_body(d.reason, &d.properties, out),
            Packet::Auth(a) => write_reason_body(a.reason, &a.properties, out),
            Packet::Publish(_) | Packet::PingReq | Packet::PingResp => Ok(()),
        }
    }

    /// Writes the packet for a connection speaking `version` (a CONNECT uses its own) into
    /// the front of `out` and returns the bytes written, [`Packet::encoded_len`].
    /// Properties are left out in 3.1.1.
    pub fn encode(&self, version: Version, out: &mut [u8]) -> Result<usize, EncodeError> {
        let (version, body_len, total) = self.plan(version)?;
        if out.len() < total {
            return Err(EncodeError::BufferTooSmall { need: total });
        }
        let mut w = SliceOut::new(out);
        self.write(version, body_len, &mut w)?;
        Ok(w.position())
    }

    /// Appends the packet to `out`, reserving its exact length once (so nothing is
    /// allocated when the capacity suffices), and returns the bytes appended. On error `out`
    /// is left as it was.
    pub fn encode_to_vec(&self, version: Version, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
        let (version, body_len, total) = self.plan(version)?;
        out.reserve(total);
        let start = out.len();
        self.write(version, body_len, out)
            .inspect_err(|_| out.truncate(start))?;
        Ok(out.len() - start)
    }
}
