//! CONNECT with its will (3.1.1 §3.1, 5.0 §3.1) and CONNACK (§3.2): the packets that open a
//! session. A CONNECT carries its own protocol level, so it decodes without knowing the
//! version; everything after it is decoded in the version it chose.

use super::error::{DecodeError, EncodeError};
use super::header::{PacketType, peek_packet_len};
use super::properties::{Context, Properties};
use super::reason::{CONNACK_CODES, ConnectReturnCode};
use super::wire::{Out, QoS, Version, read_binary, read_str, read_topic_name, read_u8, read_u16};
use crate::Decoded;
use crate::reader::Reader;

/// The protocol name of MQTT 3.1.1 and 5.0.
const PROTOCOL_NAME: &[u8] = b"MQTT";
/// The protocol name of MQTT 3.1 (level 3), recognised only to refuse it properly.
const PROTOCOL_NAME_V31: &[u8] = b"MQIsdp";

/// CONNECT flag bits (3.1.1 §3.1.2.3, 5.0 §3.1.2.3).
mod flag {
    pub const RESERVED: u8 = 0x01;
    pub const CLEAN_START: u8 = 0x02;
    pub const WILL: u8 = 0x04;
    pub const WILL_QOS_SHIFT: u8 = 3;
    pub const WILL_QOS_BITS: u8 = 0b11;
    pub const WILL_RETAIN: u8 = 0x20;
    pub const PASSWORD: u8 = 0x40;
    pub const USERNAME: u8 = 0x80;
}

/// CONNACK acknowledge flags: only bit 0, Session Present, is defined.
const SESSION_PRESENT: u8 = 0x01;

/// A CONNECT packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect<'a> {
    /// The protocol level the client asked for. Decoding takes it from the packet; encoding
    /// writes the packet in this version whatever version the caller passes.
    pub version: Version,
    /// Clean Session in 3.1.1, Clean Start in 5.0.
    pub clean_start: bool,
    /// Seconds; 0 turns keep-alive off.
    pub keep_alive: u16,
    /// May be empty: whether the server then assigns one or refuses (3.1.1 MQTT-3.1.3-8) is
    /// the session layer's decision.
    pub client_id: &'a str,
    pub will: Option<Will<'a>>,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub properties: Properties<'a>,
}

/// The will message of a CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will<'a> {
    /// A topic name: no wildcards, not empty.
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: QoS,
    pub retain: bool,
    /// Will properties (MQTT 5).
    pub properties: Properties<'a>,
}

impl<'a> Connect<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Connect<'a>, DecodeError> {
        let name = read_binary(r)?;
        let level = read_u8(r)?;
        if name == PROTOCOL_NAME_V31 {
            // A 3.1 client understands a CONNACK refusing its level (3.1.1 MQTT-3.1.2-2).
            return Err(DecodeError::UnsupportedProtocolVersion(level));
        }
        if name != PROTOCOL_NAME {
            return Err(DecodeError::InvalidProtocolName);
        }
        let version =
            Version::from_level(level).ok_or(DecodeError::UnsupportedProtocolVersion(level))?;
        let flags = read_u8(r)?;
        let has_will = flags & flag::WILL != 0;
        let will_qos_bits = (flags >> flag::WILL_QOS_SHIFT) & flag::WILL_QOS_BITS;
        let will_retain = flags & flag::WILL_RETAIN != 0;
        let has_username = flags & flag::USERNAME != 0;
        let has_password = flags & flag::PASSWORD != 0;
        // MQTT-3.1.2-3 (reserved bit), 3.1.1 MQTT-3.1.2-13/-15 and 5.0 MQTT-3.1.2-11/-13
        // (no will, no will QoS or retain), 3.1.1 MQTT-3.1.2-22 (no password without user
        // name; 5.0 allows it).
        if flags & flag::RESERVED != 0
            || (!has_will && (will_qos_bits != 0 || will_retain))
            || (version == Version::V311 && has_password && !has_username)
        {
            return Err(DecodeError::InvalidConnectFlags);
        }
        let will_qos = QoS::from_u8(will_qos_bits).ok_or(DecodeError::InvalidQoS)?;
        let keep_alive = read_u16(r)?;
        let properties = Properties::read(r, version, Context::Connect)?;
        let client_id = read_str(r)?;
        let will = if has_will {
            let properties = Properties::read(r, version, Context::Will)?;
            Some(Will {
                topic: read_topic_name(r, false)?,
                payload: read_binary(r)?,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(read_str(r)?)
        } else {
            None
        };
        let password = if has_password {
            Some(read_binary(r)?)
        } else {
            None
        };
        Ok(Connect {
            version,
            clean_start: flags & flag::CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.clean_start {
            flags |= flag::CLEAN_START;
        }
        if let Some(will) = &self.will {
            flags |= flag::WILL | (will.qos as u8) << flag::WILL_QOS_SHIFT;
            if will.retain {
                flags |= flag::WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= flag::USERNAME;
        }
        if self.password.is_some() {
            flags |= flag::PASSWORD;
        }
        flags
    }

    /// The remaining length, in this CONNECT's own version.
    pub(crate) fn body_len(&self) -> usize {
        let v = self.version;
        // Protocol name, level, flags, keep alive.
        let mut len = 2 + PROTOCOL_NAME.len() + 1 + 1 + 2;
        len += self.properties.wire_len(v) + 2 + self.client_id.len();
        if let Some(will) = &self.will {
            len += will.properties.wire_len(v) + 2 + will.topic.len() + 2 + will.payload.len();
        }
        len += self.username.map_or(0, |u| 2 + u.len());
        len += self.password.map_or(0, |p| 2 + p.len());
        len
    }

    pub(crate) fn write_body<O: Out>(&self, out: &mut O) -> Result<(), EncodeError> {
        let v = self.version;
        out.put_binary(PROTOCOL_NAME)?;
        out.put_u8(v.level())?;
        out.put_u8(self.flags())?;
        out.put_u16(self.keep_alive)?;
        self.properties.write(v, out)?;
        out.put_str(self.client_id)?;
        if let Some(will) = &self.will {
            will.properties.write(v, out)?;
            out.put_str(will.topic)?;
            out.put_binary(will.payload)?;
        }
        if let Some(username) = self.username {
            out.put_str(username)?;
        }
        if let Some(password) = self.password {
            out.put_binary(password)?;
        }
        Ok(())
    }
}

/// The protocol version of a CONNECT at the front of `buf`, read from its variable header
/// without decoding the rest; `None` if `buf` does not start with a CONNECT of a supported
/// version or is too short to tell.
///
/// For a server whose [`decode`](super::decode) of a first packet failed: a v5 client is
/// answered with a CONNACK carrying [`DecodeError::reason_code`], a 3.1.1 client with
/// [`DecodeError::connack_return_code`] where there is one, anyone else by closing.
pub fn peek_connect_version(buf: &[u8]) -> Option<Version> {
    if buf.first()? >> 4 != PacketType::Connect as u8 {
        return None;
    }
    let Ok(Decoded::Complete(_, header_len)) = peek_packet_len(buf, u32::MAX) else {
        return None;
    };
    let mut r = Reader::new(buf.get(header_len..)?);
    if read_binary(&mut r).ok()? != PROTOCOL_NAME {
        return None;
    }
    Version::from_level(r.u8()?)
}

/// A CONNACK packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck<'a> {
    pub session_present: bool,
    /// A [`ReasonCode`](super::ReasonCode) in MQTT 5, a [`ConnectReturnCode`] in 3.1.1.
    pub code: u8,
    pub properties: Properties<'a>,
}

impl<'a> ConnAck<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>, version: Version) -> Result<Self, DecodeError> {
        let flags = read_u8(r)?;
        let code = read_u8(r)?;
        let allowed = match version {
            Version::V311 => code <= ConnectReturnCode::MAX_DEFINED,
            Version::V5 => CONNACK_CODES.contains(&code),
        };
        if !allowed {
            return Err(DecodeError::InvalidReasonCode(code));
        }
        let session_present = flags & SESSION_PRESENT != 0;
        // Bits 7-1 reserved (MQTT-3.2.2-1); no session on a refusal (3.1.1 MQTT-3.2.2-4,
        // 5.0 MQTT-3.2.2-6).
        if flags & !SESSION_PRESENT != 0 || (session_present && code != 0) {
            return Err(DecodeError::InvalidConnAckFlags);
        }
        let properties = Properties::read(r, version, Context::ConnAck)?;
        Ok(ConnAck {
            session_present,
            code,
            properties,
        })
    }

    pub(crate) fn body_len(&self, version: Version) -> usize {
        2 + self.properties.wire_len(version)
    }

    pub(crate) fn write_body<O: Out>(
        &self,
        version: Version,
        out: &mut O,
    ) -> Result<(), EncodeError> {
        out.put_u8(if self.session_present {
            SESSION_PRESENT
        } else {
            0
        })?;
        out.put_u8(self.code)?;
        self.properties.write(version, out)
    }
}
