//! Property identifiers (5.0 §2.2.2.2): the vocabulary that property blocks and decode
//! errors share, kept apart from both so neither imports the other.

use core::fmt;

/// A property identifier (5.0 §2.2.2.2), with a named constant for each of the 27 that MQTT 5
/// defines.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PropertyId(pub u8);

impl PropertyId {
    pub const PAYLOAD_FORMAT_INDICATOR: Self = Self(0x01);
    pub const MESSAGE_EXPIRY_INTERVAL: Self = Self(0x02);
    pub const CONTENT_TYPE: Self = Self(0x03);
    pub const RESPONSE_TOPIC: Self = Self(0x08);
    pub const CORRELATION_DATA: Self = Self(0x09);
    pub const SUBSCRIPTION_IDENTIFIER: Self = Self(0x0B);
    pub const SESSION_EXPIRY_INTERVAL: Self = Self(0x11);
    pub const ASSIGNED_CLIENT_IDENTIFIER: Self = Self(0x12);
    pub const SERVER_KEEP_ALIVE: Self = Self(0x13);
    pub const AUTHENTICATION_METHOD: Self = Self(0x15);
    pub const AUTHENTICATION_DATA: Self = Self(0x16);
    pub const REQUEST_PROBLEM_INFORMATION: Self = Self(0x17);
    pub const WILL_DELAY_INTERVAL: Self = Self(0x18);
    pub const REQUEST_RESPONSE_INFORMATION: Self = Self(0x19);
    pub const RESPONSE_INFORMATION: Self = Self(0x1A);
    pub const SERVER_REFERENCE: Self = Self(0x1C);
    pub const REASON_STRING: Self = Self(0x1F);
    pub const RECEIVE_MAXIMUM: Self = Self(0x21);
    pub const TOPIC_ALIAS_MAXIMUM: Self = Self(0x22);
    pub const TOPIC_ALIAS: Self = Self(0x23);
    pub const MAXIMUM_QOS: Self = Self(0x24);
    pub const RETAIN_AVAILABLE: Self = Self(0x25);
    pub const USER_PROPERTY: Self = Self(0x26);
    pub const MAXIMUM_PACKET_SIZE: Self = Self(0x27);
    pub const WILDCARD_SUBSCRIPTION_AVAILABLE: Self = Self(0x28);
    pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: Self = Self(0x29);
    pub const SHARED_SUBSCRIPTION_AVAILABLE: Self = Self(0x2A);

    /// The spec's name, for logs; `None` for an identifier MQTT 5 does not define.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::PAYLOAD_FORMAT_INDICATOR => "PAYLOAD_FORMAT_INDICATOR",
            Self::MESSAGE_EXPIRY_INTERVAL => "MESSAGE_EXPIRY_INTERVAL",
            Self::CONTENT_TYPE => "CONTENT_TYPE",
            Self::RESPONSE_TOPIC => "RESPONSE_TOPIC",
            Self::CORRELATION_DATA => "CORRELATION_DATA",
            Self::SUBSCRIPTION_IDENTIFIER => "SUBSCRIPTION_IDENTIFIER",
            Self::SESSION_EXPIRY_INTERVAL => "SESSION_EXPIRY_INTERVAL",
            Self::ASSIGNED_CLIENT_IDENTIFIER => "ASSIGNED_CLIENT_IDENTIFIER",
            Self::SERVER_KEEP_ALIVE => "SERVER_KEEP_ALIVE",
            Self::AUTHENTICATION_METHOD => "AUTHENTICATION_METHOD",
            Self::AUTHENTICATION_DATA => "AUTHENTICATION_DATA",
            Self::REQUEST_PROBLEM_INFORMATION => "REQUEST_PROBLEM_INFORMATION",
            Self::WILL_DELAY_INTERVAL => "WILL_DELAY_INTERVAL",
            Self::REQUEST_RESPONSE_INFORMATION => "REQUEST_RESPONSE_INFORMATION",
            Self::RESPONSE_INFORMATION => "RESPONSE_INFORMATION",
            Self::SERVER_REFERENCE => "SERVER_REFERENCE",
            Self::REASON_STRING => "REASON_STRING",
            Self::RECEIVE_MAXIMUM => "RECEIVE_MAXIMUM",
            Self::TOPIC_ALIAS_MAXIMUM => "TOPIC_ALIAS_MAXIMUM",
            Self::TOPIC_ALIAS => "TOPIC_ALIAS",
            Self::MAXIMUM_QOS => "MAXIMUM_QOS",
            Self::RETAIN_AVAILABLE => "RETAIN_AVAILABLE",
            Self::USER_PROPERTY => "USER_PROPERTY",
            Self::MAXIMUM_PACKET_SIZE => "MAXIMUM_PACKET_SIZE",
            Self::WILDCARD_SUBSCRIPTION_AVAILABLE => "WILDCARD_SUBSCRIPTION_AVAILABLE",
            Self::SUBSCRIPTION_IDENTIFIER_AVAILABLE => "SUBSCRIPTION_IDENTIFIER_AVAILABLE",
            Self::SHARED_SUBSCRIPTION_AVAILABLE => "SHARED_SUBSCRIPTION_AVAILABLE",
            _ => return None,
        })
    }
}

impl fmt::Debug for PropertyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "PropertyId({:#04x})", self.0),
        }
    }
}
