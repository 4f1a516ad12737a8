//! PUBLISH (3.1.1 §3.3, 5.0 §3.3) and the four packets that acknowledge it: PUBACK, PUBREC,
//! PUBREL and PUBCOMP (§3.4–3.7), which share one shape, [`PubResp`].
//!
//! A PUBLISH is the packet a broker fans out, so it can be encoded in two parts: the head
//! ([`Publish::encode_head`]) into a small per-subscriber buffer, and the payload, shared by
//! every subscriber, sent after it by a vectored write without being copied.

use super::error::{DecodeError, EncodeError};
use super::header::{PacketType, PublishFlags};
use super::properties::{Context, Properties};
use super::reason::{PUBACK_CODES, PUBREL_CODES, ReasonCode};
use super::wire::{
    MAX_VARINT, Out, QoS, SliceOut, Version, read_packet_id, read_topic_name, read_u8, varint_len,
};
use crate::reader::Reader;

/// A PUBLISH packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    /// The topic name. In MQTT 5 it may be empty when a Topic Alias property stands for it;
    /// resolving (and requiring) the alias is the session's job.
    pub topic: &'a str,
    /// The packet identifier; 0 for QoS 0, which carries none (and ignored when encoding
    /// QoS 0).
    pub pkid: u16,
    pub properties: Properties<'a>,
    pub payload: &'a [u8],
}

impl<'a> Publish<'a> {
    pub(crate) fn decode(
        flags: u8,
        r: &mut Reader<'a>,
        version: Version,
    ) -> Result<Publish<'a>, DecodeError> {
        let PublishFlags { dup, qos, retain } = PublishFlags::from_bits(flags)?;
        let topic = read_topic_name(r, version == Version::V5)?;
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce | QoS::ExactlyOnce => read_packet_id(r)?,
        };
        let properties = Properties::read(r, version, Context::Publish)?;
        Ok(Publish {
            dup,
            qos,
            retain,
            topic,
            pkid,
            properties,
            payload: r.rest(),
        })
    }

    /// Variable header bytes: topic, packet identifier, properties.
    fn variable_header_len(&self, version: Version) -> usize {
        let pkid_len = if self.qos == QoS::AtMostOnce { 0 } else { 2 };
        2 + self.topic.len() + pkid_len + self.properties.wire_len(version)
    }

    pub(crate) fn body_len(&self, version: Version) -> usize {
        self.variable_header_len(version) + self.payload.len()
    }

    /// Bytes [`Publish::encode_head`] writes: the whole packet but the payload.
    pub fn head_len(&self, version: Version) -> usize {
        let body = self.body_len(version);
        1 + varint_len(body) + self.variable_header_len(version)
    }

    /// Writes the fixed and variable headers, whose remaining length counts the payload that
    /// the caller sends right after them, and returns the bytes written
    /// ([`Publish::head_len`]).
    pub fn encode_head(&self, version: Version, out: &mut [u8]) -> Result<usize, EncodeError> {
        let body = self.body_len(version);
        if body > MAX_VARINT {
            return Err(EncodeError::RemainingLengthTooLarge);
        }
        let head = self.head_len(version);
        if out.len() < head {
            return Err(EncodeError::BufferTooSmall { need: head });
        }
        let mut w = SliceOut::new(out);
        self.write_head(version, body, &mut w)?;
        Ok(w.position())
    }

    fn first_byte(&self) -> u8 {
        PublishFlags {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
        }
        .first_byte()
    }

    fn write_head<O: Out>(
        &self,
        version: Version,
        body_len: usize,
        out: &mut O,
    ) -> Result<(), EncodeError> {
        out.put_u8(self.first_byte())?;
        out.put_varint(body_len)?;
        out.put_str(self.topic)?;
        if self.qos != QoS::AtMostOnce {
            out.put_u16(self.pkid)?;
        }
        self.properties.write(version, out)
    }

    /// The whole packet, with a remaining length of `body_len` ([`Publish::body_len`]).
    pub(crate) fn write<O: Out>(
        &self,
        version: Version,
        body_len: usize,
        out: &mut O,
    ) -> Result<(), EncodeError> {
        self.write_head(version, body_len, out)?;
        out.put(self.payload)
    }
}

/// A PUBLISH encoded once for every receiver of a fan-out whose copies differ only in
/// their packet identifier: the packet is written once, and each receiver's copy is the
/// same bytes stamped with its own identifier at the offset the encoding knows (after the
/// fixed header and the topic). The buffer is kept from one message to the next.
#[derive(Debug, Clone, Default)]
pub struct PublishTemplate {
    bytes: Vec<u8>,
    /// Where the packet identifier sits; `None` for QoS 0, which carries none.
    pkid_at: Option<usize>,
}

impl PublishTemplate {
    /// Encodes `publish` for `version`, in place of what the template held; its own
    /// packet identifier stands until a copy is stamped. On error the template is empty.
    pub fn encode(&mut self, publish: &Publish<'_>, version: Version) -> Result<(), EncodeError> {
        self.bytes.clear();
        self.pkid_at = None;
        let body = publish.body_len(version);
        if body > MAX_VARINT {
            return Err(EncodeError::RemainingLengthTooLarge);
        }
        self.bytes.reserve(1 + varint_len(body) + body);
        if let Err(e) = publish.write(version, body, &mut self.bytes) {
            self.bytes.clear();
            return Err(e);
        }
        if publish.qos != QoS::AtMostOnce {
            self.pkid_at = Some(1 + varint_len(body) + 2 + publish.topic.len());
        }
        Ok(())
    }

    /// Bytes of every copy.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends a copy carrying packet identifier `pkid` to `out` (QoS 0: the bytes as
    /// they are; `pkid` is ignored).
    pub fn stamp_to_vec(&self, pkid: u16, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        if let Some(at) = self.pkid_at {
            out[start + at..start + at + 2].copy_from_slice(&pkid.to_be_bytes());
        }
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP (the [`Packet`](super::Packet) variant says which).
///
/// In MQTT 5 a success without properties is sent in the short form (packet identifier
/// only), and a reason without properties without the Property Length (5.0 §3.4.2.1).
/// In 3.1.1 only the packet identifier exists: reason and properties are not sent, and
/// decoding gives [`ReasonCode::SUCCESS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubResp<'a> {
    pub pkid: u16,
    pub reason: ReasonCode,
    pub properties: Properties<'a>,
}

impl<'a> PubResp<'a> {
    /// A plain success for `pkid`.
    pub const fn new(pkid: u16) -> PubResp<'a> {
        PubResp {
            pkid,
            reason: ReasonCode::SUCCESS,
            properties: Properties::EMPTY,
        }
    }

    pub(crate) fn decode(
        kind: PacketType,
        r: &mut Reader<'a>,
        version: Version,
    ) -> Result<PubResp<'a>, DecodeError> {
        let pkid = read_packet_id(r)?;
        if version == Version::V311 || r.is_empty() {
            return Ok(PubResp::new(pkid));
        }
        let (codes, context) = match kind {
            PacketType::PubAck => (PUBACK_CODES, Context::PubAck),
            PacketType::PubRec => (PUBACK_CODES, Context::PubRec),
            PacketType::PubRel => (PUBREL_CODES, Context::PubRel),
            _ => (PUBREL_CODES, Context::PubComp),
        };
        let reason = read_u8(r)?;
        if !codes.contains(&reason) {
            return Err(DecodeError::InvalidReasonCode(reason));
        }
        // "If the Remaining Length is less than 4 there is no Property Length".
        let properties = if r.is_empty() {
            Properties::EMPTY
        } else {
            Properties::read(r, version, context)?
        };
        Ok(PubResp {
            pkid,
            reason: ReasonCode(reason),
            properties,
        })
    }

    pub(crate) fn body_len(&self, version: Version) -> usize {
        const PKID_LEN: usize = 2;
        match version {
            Version::V311 => PKID_LEN,
            Version::V5 if self.properties.is_empty() => {
                PKID_LEN + usize::from(self.reason != ReasonCode::SUCCESS)
            }
            Version::V5 => PKID_LEN + 1 + self.properties.wire_len(version),
        }
    }

    pub(crate) fn write_body<O: Out>(
        &self,
        version: Version,
        out: &mut O,
    ) -> Result<(), EncodeError> {
        out.put_u16(self.pkid)?;
        if version == Version::V311 {
            return Ok(());
        }
        let has_properties = !self.properties.is_empty();
        if self.reason != ReasonCode::SUCCESS || has_properties {
            out.put_u8(self.reason.0)?;
        }
        if has_properties {
            self.properties.write(version, out)?;
        }
        Ok(())
    }
}
