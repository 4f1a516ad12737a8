//! MQTT 3.1.1 and 5.0 control packets, decoded in place and encoded after computing their
//! exact length.
//!
//! Bytes flow through these modules in this order: `framer` cuts a byte stream into whole
//! packets ([`Framer`], with a carry buffer for a packet split across receives), reading
//! each packet's length from `header`, which frames a packet (type and flags of the first
//! byte, remaining length, the configured maximum size) before the body is looked at;
//! `wire` reads and writes the fields every packet is made of (variable byte integers,
//! length-prefixed strings and binary data, topic names and filters); `properties`
//! validates an MQTT 5 property block against the packet it sits in (the identifiers are
//! in the leaf `property_id`, which `error` shares); the packet bodies follow in `connect`
//! (CONNECT with its will, CONNACK), `publish` (PUBLISH and its four acknowledgements, and
//! [`PublishTemplate`], one encoding stamped with each receiver's packet id), `subscribe`
//! (SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK) and `packet` ([`Packet`], DISCONNECT, AUTH,
//! and [`decode`] and [`Packet::encode`], which tie the rest together). `reason` holds the
//! reason codes the answers carry and `error` what went wrong and which answer it calls
//! for; `check` is the decode → encode → compare logic that the fuzz target and the tests
//! share.
//!
//! Decoding never allocates: a [`Packet`] borrows topic, payload, client id, properties and
//! topic lists from the input, and property blocks and topic lists stay as validated bytes
//! that are walked on demand. Encoding writes into a caller's slice or appends to a `Vec`
//! after reserving the exact length once.
//!
//! The codec checks what a packet says on its own, as both specifications require; what
//! depends on the connection's state (topic aliases, receive maximum, packet identifiers in
//! flight, the client identifier rules, authorisation, the payload format) belongs to the
//! session layer.

mod check;
mod connect;
mod error;
mod framer;
mod header;
mod packet;
mod properties;
mod property_id;
mod publish;
mod reason;
mod subscribe;
mod wire;

#[doc(hidden)]
pub use check::{check_round_trip, check_split_feed, fuzz_decode};
pub use connect::{ConnAck, Connect, Will, peek_connect_version};
pub use error::{DecodeError, EncodeError};
pub use framer::{Frame, Framer};
pub use header::{is_acknowledgement, peek_packet_len};
pub use packet::{Auth, Disconnect, Packet, decode};
pub use properties::{Properties, Property, PropertyIter};
pub use property_id::PropertyId;
pub use publish::{PubResp, Publish, PublishTemplate};
pub use reason::{ConnectReturnCode, ReasonCode};
pub use subscribe::{
    SubAck, Subscribe, SubscribeFilters, SubscribeFiltersIter, SubscriptionOptions, TopicList,
    TopicListIter, UnsubAck, Unsubscribe, WireItem, WireList, WireListIter,
};
pub use wire::{MAX_VARINT, QoS, Version};
