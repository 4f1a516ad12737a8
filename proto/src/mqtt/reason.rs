//! Reason codes: the MQTT 5 [`ReasonCode`] that acknowledgements, CONNACK, DISCONNECT and AUTH
//! carry, the MQTT 3.1.1 [`ConnectReturnCode`], and which codes each v5 packet may carry.
//!
//! Both are newtypes over the wire byte with named constants, so a code this crate has no
//! name for still survives a round trip through a `ReasonCode` value.

use core::fmt;

/// An MQTT 5 reason code (5.0 §2.4). Values of 0x80 and above are failures.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReasonCode(pub u8);

impl ReasonCode {
    pub const SUCCESS: Self = Self(0x00);
    pub const NORMAL_DISCONNECTION: Self = Self(0x00);
    pub const GRANTED_QOS_0: Self = Self(0x00);
    pub const GRANTED_QOS_1: Self = Self(0x01);
    pub const GRANTED_QOS_2: Self = Self(0x02);
    pub const DISCONNECT_WITH_WILL_MESSAGE: Self = Self(0x04);
    pub const NO_MATCHING_SUBSCRIBERS: Self = Self(0x10);
    pub const NO_SUBSCRIPTION_EXISTED: Self = Self(0x11);
    pub const CONTINUE_AUTHENTICATION: Self = Self(0x18);
    pub const RE_AUTHENTICATE: Self = Self(0x19);
    pub const UNSPECIFIED_ERROR: Self = Self(0x80);
    pub const MALFORMED_PACKET: Self = Self(0x81);
    pub const PROTOCOL_ERROR: Self = Self(0x82);
    pub const IMPLEMENTATION_SPECIFIC_ERROR: Self = Self(0x83);
    pub const UNSUPPORTED_PROTOCOL_VERSION: Self = Self(0x84);
    pub const CLIENT_IDENTIFIER_NOT_VALID: Self = Self(0x85);
    pub const BAD_USER_NAME_OR_PASSWORD: Self = Self(0x86);
    pub const NOT_AUTHORIZED: Self = Self(0x87);
    pub const SERVER_UNAVAILABLE: Self = Self(0x88);
    pub const SERVER_BUSY: Self = Self(0x89);
    pub const BANNED: Self = Self(0x8A);
    pub const SERVER_SHUTTING_DOWN: Self = Self(0x8B);
    pub const BAD_AUTHENTICATION_METHOD: Self = Self(0x8C);
    pub const KEEP_ALIVE_TIMEOUT: Self = Self(0x8D);
    pub const SESSION_TAKEN_OVER: Self = Self(0x8E);
    pub const TOPIC_FILTER_INVALID: Self = Self(0x8F);
    pub const TOPIC_NAME_INVALID: Self = Self(0x90);
    pub const PACKET_IDENTIFIER_IN_USE: Self = Self(0x91);
    pub const PACKET_IDENTIFIER_NOT_FOUND: Self = Self(0x92);
    pub const RECEIVE_MAXIMUM_EXCEEDED: Self = Self(0x93);
    pub const TOPIC_ALIAS_INVALID: Self = Self(0x94);
    pub const PACKET_TOO_LARGE: Self = Self(0x95);
    pub const MESSAGE_RATE_TOO_HIGH: Self = Self(0x96);
    pub const QUOTA_EXCEEDED: Self = Self(0x97);
    pub const ADMINISTRATIVE_ACTION: Self = Self(0x98);
    pub const PAYLOAD_FORMAT_INVALID: Self = Self(0x99);
    pub const RETAIN_NOT_SUPPORTED: Self = Self(0x9A);
    pub const QOS_NOT_SUPPORTED: Self = Self(0x9B);
    pub const USE_ANOTHER_SERVER: Self = Self(0x9C);
    pub const SERVER_MOVED: Self = Self(0x9D);
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: Self = Self(0x9E);
    pub const CONNECTION_RATE_EXCEEDED: Self = Self(0x9F);
    pub const MAXIMUM_CONNECT_TIME: Self = Self(0xA0);
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: Self = Self(0xA1);
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: Self = Self(0xA2);

    /// Failures start at 0x80 (5.0 §2.4).
    pub const fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// The spec's name for this code, for logs. 0x00, 0x01 and 0x02 have several names
    /// (success, normal disconnection, granted QoS 0); this gives the first.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "SUCCESS",
            0x01 => "GRANTED_QOS_1",
            0x02 => "GRANTED_QOS_2",
            0x04 => "DISCONNECT_WITH_WILL_MESSAGE",
            0x10 => "NO_MATCHING_SUBSCRIBERS",
            0x11 => "NO_SUBSCRIPTION_EXISTED",
            0x18 => "CONTINUE_AUTHENTICATION",
            0x19 => "RE_AUTHENTICATE",
            0x80 => "UNSPECIFIED_ERROR",
            0x81 => "MALFORMED_PACKET",
            0x82 => "PROTOCOL_ERROR",
            0x83 => "IMPLEMENTATION_SPECIFIC_ERROR",
            0x84 => "UNSUPPORTED_PROTOCOL_VERSION",
            0x85 => "CLIENT_IDENTIFIER_NOT_VALID",
            0x86 => "BAD_USER_NAME_OR_PASSWORD",
            0x87 => "NOT_AUTHORIZED",
            0x88 => "SERVER_UNAVAILABLE",
            0x89 => "SERVER_BUSY",
            0x8A => "BANNED",
            0x8B => "SERVER_SHUTTING_DOWN",
            0x8C => "BAD_AUTHENTICATION_METHOD",
            0x8D => "KEEP_ALIVE_TIMEOUT",
            0x8E => "SESSION_TAKEN_OVER",
            0x8F => "TOPIC_FILTER_INVALID",
            0x90 => "TOPIC_NAME_INVALID",
            0x91 => "PACKET_IDENTIFIER_IN_USE",
            0x92 => "PACKET_IDENTIFIER_NOT_FOUND",
            0x93 => "RECEIVE_MAXIMUM_EXCEEDED",
            0x94 => "TOPIC_ALIAS_INVALID",
            0x95 => "PACKET_TOO_LARGE",
            0x96 => "MESSAGE_RATE_TOO_HIGH",
            0x97 => "QUOTA_EXCEEDED",
            0x98 => "ADMINISTRATIVE_ACTION",
            0x99 => "PAYLOAD_FORMAT_INVALID",
            0x9A => "RETAIN_NOT_SUPPORTED",
            0x9B => "QOS_NOT_SUPPORTED",
            0x9C => "USE_ANOTHER_SERVER",
            0x9D => "SERVER_MOVED",
            0x9E => "SHARED_SUBSCRIPTIONS_NOT_SUPPORTED",
            0x9F => "CONNECTION_RATE_EXCEEDED",
            0xA0 => "MAXIMUM_CONNECT_TIME",
            0xA1 => "SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED",
            0xA2 => "WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED",
            _ => return None,
        })
    }
}

impl fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "ReasonCode({:#04x} {name})", self.0),
            None => write!(f, "ReasonCode({:#04x})", self.0),
        }
    }
}

/// Codes a v5 CONNACK may carry (5.0 §3.2.2.2).
pub(crate) const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
/// Codes a PUBACK or PUBREC may carry (5.0 §3.4.2.1, §3.5.2.1).
pub(crate) const PUBACK_CODES: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
/// Codes a PUBREL or PUBCOMP may carry (5.0 §3.6.2.1, §3.7.2.1).
pub(crate) const PUBREL_CODES: &[u8] = &[0x00, 0x92];
/// Codes a v5 SUBACK may carry, one per filter (5.0 §3.9.3).
pub(crate) const SUBACK_CODES: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
/// Return codes a 3.1.1 SUBACK may carry (3.1.1 §3.9.3).
pub(crate) const SUBACK_CODES_V311: &[u8] = &[0x00, 0x01, 0x02, 0x80];
/// Codes a v5 UNSUBACK may carry, one per filter (5.0 §3.11.3).
pub(crate) const UNSUBACK_CODES: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
/// Codes a DISCONNECT may carry (5.0 §3.14.2.1).
pub(crate) const DISCONNECT_CODES: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
/// Codes an AUTH may carry (5.0 §3.15.2.1).
pub(crate) const AUTH_CODES: &[u8] = &[0x00, 0x18, 0x19];

/// An MQTT 3.1.1 CONNACK return code (3.1.1 §3.2.2.3). 6 and above are reserved.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectReturnCode(pub u8);

impl ConnectReturnCode {
    pub const ACCEPTED: Self = Self(0x00);
    pub const UNACCEPTABLE_PROTOCOL_VERSION: Self = Self(0x01);
    pub const IDENTIFIER_REJECTED: Self = Self(0x02);
    pub const SERVER_UNAVAILABLE: Self = Self(0x03);
    pub const BAD_USER_NAME_OR_PASSWORD: Self = Self(0x04);
    pub const NOT_AUTHORIZED: Self = Self(0x05);

    /// The largest return code 3.1.1 defines.
    pub(crate) const MAX_DEFINED: u8 = 0x05;

    /// The 3.1.1 return code closest to a v5 CONNACK reason, so one refusal decision in the
    /// session layer answers clients of both versions.
    ///
    /// 3.1.1 has no code for a malformed or otherwise broken CONNECT (it closes the
    /// connection without a CONNACK, see [`DecodeError::connack_return_code`]); every v5
    /// failure without a closer match is answered as "server unavailable", the 3.1.1 code for
    /// "the server will not take this connection now".
    ///
    /// [`DecodeError::connack_return_code`]: super::DecodeError::connack_return_code
    pub const fn from_reason(reason: ReasonCode) -> ConnectReturnCode {
        match reason {
            ReasonCode::SUCCESS => Self::ACCEPTED,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => Self::UNACCEPTABLE_PROTOCOL_VERSION,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => Self::IDENTIFIER_REJECTED,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD | ReasonCode::BAD_AUTHENTICATION_METHOD => {
                Self::BAD_USER_NAME_OR_PASSWORD
            }
            ReasonCode::NOT_AUTHORIZED | ReasonCode::BANNED => Self::NOT_AUTHORIZED,
            _ => Self::SERVER_UNAVAILABLE,
        }
    }
}

impl fmt::Debug for ConnectReturnCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::ACCEPTED => "ACCEPTED",
            Self::UNACCEPTABLE_PROTOCOL_VERSION => "UNACCEPTABLE_PROTOCOL_VERSION",
            Self::IDENTIFIER_REJECTED => "IDENTIFIER_REJECTED",
            Self::SERVER_UNAVAILABLE => "SERVER_UNAVAILABLE",
            Self::BAD_USER_NAME_OR_PASSWORD => "BAD_USER_NAME_OR_PASSWORD",
            Self::NOT_AUTHORIZED => "NOT_AUTHORIZED",
            _ => return write!(f, "ConnectReturnCode({:#04x})", self.0),
        };
        write!(f, "ConnectReturnCode({:#04x} {name})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v5_reasons_map_to_the_closest_v311_code() {
        let cases = [
            (ReasonCode::SUCCESS, ConnectReturnCode::ACCEPTED),
            (
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
                ConnectReturnCode(0x01),
            ),
            (
                ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                ConnectReturnCode(0x02),
            ),
            (ReasonCode::SERVER_UNAVAILABLE, ConnectReturnCode(0x03)),
            (ReasonCode::SERVER_BUSY, ConnectReturnCode(0x03)),
            (ReasonCode::QUOTA_EXCEEDED, ConnectReturnCode(0x03)),
            (
                ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                ConnectReturnCode(0x04),
            ),
            (ReasonCode::NOT_AUTHORIZED, ConnectReturnCode(0x05)),
            (ReasonCode::BANNED, ConnectReturnCode(0x05)),
        ];
        for (reason, code) in cases {
            assert_eq!(ConnectReturnCode::from_reason(reason), code, "{reason:?}");
        }
    }

    #[test]
    fn every_named_code_has_a_name_and_errors_start_at_0x80() {
        for code in CONNACK_CODES
            .iter()
            .chain(DISCONNECT_CODES)
            .chain(SUBACK_CODES)
        {
            let reason = ReasonCode(*code);
            assert!(reason.name().is_some(), "{code:#x}");
            assert_eq!(reason.is_error(), *code >= 0x80);
        }
        assert_eq!(ReasonCode(0x42).name(), None);
        assert_eq!(format!("{:?}", ReasonCode(0x42)), "ReasonCode(0x42)");
    }
}
