//! The log's vocabulary: one [`Record`] per change of durable state, and its encoding.
//!
//! Every record travels in a frame (all integers big-endian):
//!
//! ```text
//! crc32c u32 | len u32 | lsn u64 | body (len bytes: tag u8, then the record's fields)
//! ```
//!
//! The CRC32C covers `len`, `lsn` and the body, so a frame is only valid at the position
//! in the log its LSN names. Strings are a `u16` length and UTF-8, byte strings a `u32`
//! length and the bytes; every length has a cap ([`MAX_BODY`], [`MAX_MESSAGE`],
//! [`MAX_SUB_IDS`]) that the writer checks before writing and the reader checks before
//! looking at the bytes.
//!
//! Decoding borrows strings and payloads from the input ([`Record<'a>`]) and returns
//! [`Decoded::Partial`] when the input ends inside a frame; only damage is an `Err`.

use std::fmt;

use ringmq_proto::Decoded;
use ringmq_proto::mqtt::{QoS, SubscriptionOptions, Version};
use ringmq_proto::reader::Reader;

/// Bytes of a frame before its body: crc, len, lsn.
pub const FRAME_HEAD: usize = 16;
/// The largest topic + properties + payload of one message: the largest MQTT packet
/// (a remaining length of 268,435,455 bytes) cannot carry more.
pub const MAX_MESSAGE: usize = 268_435_455;
/// The largest record body: a message at [`MAX_MESSAGE`] plus its fixed fields.
pub const MAX_BODY: usize = MAX_MESSAGE + 64;
/// Subscription identifiers kept per delivery (the broker keeps the first four).
pub const MAX_SUB_IDS: usize = 4;
/// The largest subscription identifier (MQTT 5 §3.8.2.1.2).
pub const MAX_SUB_ID: u32 = 268_435_455;
/// Strings carry a `u16` length.
const MAX_STR: usize = u16::MAX as usize;

/// Log sequence number: the position of a record in its shard's log, from 1, one per
/// record. Frames of a snapshot are numbered from 1 within the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

/// Names a session in a shard's log. Keys are given out by [`State`](super::State) and
/// never reused while the session lives; records name sessions by key, not by client id,
/// so a frequent record (a delivery acknowledged) stays small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionKey(pub u64);

/// Names a stored message in a shard's log (see [`Record::MessageStored`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId(pub u64);

/// A wall-clock deadline in milliseconds since the Unix epoch, or none. Absolute, so it
/// means the same after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Deadline(u64);

impl Deadline {
    /// No deadline: written as 0 (no real deadline is in January 1970).
    pub const NONE: Deadline = Deadline(0);

    /// A deadline at `ms` since the epoch; 0 is taken as 1 so that it stays a deadline.
    pub fn at_ms(ms: u64) -> Deadline {
        Deadline(ms.max(1))
    }

    pub fn get(self) -> Option<u64> {
        (self.0 != 0).then_some(self.0)
    }

    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

/// The subscription identifiers of one delivery (MQTT 5), at most [`MAX_SUB_IDS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SubIdList {
    len: u8,
    ids: [u32; MAX_SUB_IDS],
}

impl SubIdList {
    /// The list, if `ids` fits: at most [`MAX_SUB_IDS`] ids, each in 1..=[`MAX_SUB_ID`].
    pub fn new(ids: &[u32]) -> Option<SubIdList> {
        if ids.len() > MAX_SUB_IDS || ids.iter().any(|&i| i == 0 || i > MAX_SUB_ID) {
            return None;
        }
        let mut list = SubIdList {
            len: ids.len() as u8,
            ..SubIdList::default()
        };
        list.ids[..ids.len()].copy_from_slice(ids);
        Some(list)
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.ids[..self.len as usize]
    }
}

/// One delivery of a stored message to one session: what the session's queue and
/// in-flight window hold. QoS and RETAIN are the delivery's, which a subscription's
/// options may lower or clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delivery {
    pub msg: MsgId,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: SubIdList,
}

/// Topic, forwarded MQTT 5 properties (a property block without its length) and payload
/// of a message, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Content<'a> {
    pub topic: &'a str,
    pub props: &'a [u8],
    pub payload: &'a [u8],
}

/// A published message as it is stored once per shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageData<'a> {
    pub qos: QoS,
    pub retain: bool,
    /// When the message expires (MQTT 5 Message Expiry Interval, made absolute).
    pub expires_at: Deadline,
    pub content: Content<'a>,
}

/// A will message. Its expiry interval stays relative: it counts from when the will is
/// published (MQTT 5 §3.1.3.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WillData<'a> {
    /// MQTT 5 Will Delay Interval, seconds.
    pub delay_s: u32,
    /// MQTT 5 Message Expiry Interval of the will, seconds.
    pub expiry_s: Option<u32>,
    pub qos: QoS,
    pub retain: bool,
    pub content: Content<'a>,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// A clean start, a session expiry interval of 0 at disconnect, or an administrative
    /// removal.
    Discarded = 0,
    /// Its session expiry deadline passed.
    Expired = 1,
    /// It moved to another shard, which logged it there first.
    Moved = 2,
}

/// Why a delivery left the front of a session's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unqueue {
    /// Sent: a [`Record::Sent`] for it follows.
    Sending = 0,
    /// The queue was at its bound: the oldest is dropped.
    Dropped = 1,
    /// Its message expired while queued.
    Expired = 2,
}

/// Why an outgoing delivery left the in-flight window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Done {
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2).
    Acked = 0,
    /// PUBREC with an error reason: the client refused it.
    Refused = 1,
    /// Dropped unacknowledged (larger than the new connection accepts, expired).
    Dropped = 2,
}

/// A change of a shard's durable state. Applied by [`State::apply`](super::State::apply)
/// both while the broker runs and during recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A persistent session was created (a key the state does not hold) or resumed (a
    /// key it holds, same client id): the client is connected, so its expiry and will
    /// deadlines are cleared.
    SessionOpened {
        session: SessionKey,
        client_id: &'a str,
        protocol: Version,
        /// Seconds the session outlives its connection (`u32::MAX`: forever).
        expiry_interval_s: u32,
        /// When it was opened (wall clock, ms): of two shards holding one client id after
        /// a crash during a move, the later open wins.
        opened_at_ms: u64,
    },
    /// The session's client went away: when the session ends, and when its delayed will
    /// is due.
    SessionOffline {
        session: SessionKey,
        expires_at: Deadline,
        will_at: Deadline,
    },
    /// The session ended; everything it held goes with it.
    SessionEnded {
        session: SessionKey,
        reason: EndReason,
    },
    /// A subscription was added, or replaced (same filter).
    SubAdded {
        session: SessionKey,
        /// The filter as the client sent it (`$share/...` included).
        filter: &'a str,
        options: SubscriptionOptions,
        /// MQTT 5 subscription identifier; 0: none.
        sub_id: u32,
    },
    SubRemoved {
        session: SessionKey,
        filter: &'a str,
    },
    /// A message that persistent sessions (or the retained set) will refer to, stored
    /// once per shard however many sessions it fans out to.
    MessageStored { id: MsgId, message: MessageData<'a> },
    /// A delivery joined the back of the session's queue.
    Enqueued {
        session: SessionKey,
        delivery: Delivery,
    },
    /// The delivery at the front of the session's queue (of message `msg`) left it.
    Unqueued {
        session: SessionKey,
        msg: MsgId,
        reason: Unqueue,
    },
    /// A QoS 1/2 PUBLISH was sent with packet id `pkid` and waits for PUBACK / PUBREC.
    Sent {
        session: SessionKey,
        pkid: u16,
        delivery: Delivery,
    },
    /// QoS 2: PUBREC came for `pkid` and PUBREL was sent; PUBCOMP is awaited.
    Released { session: SessionKey, pkid: u16 },
    /// The in-flight delivery `pkid` is finished.
    InflightDone {
        session: SessionKey,
        pkid: u16,
        reason: Done,
    },
    /// QoS 2 in: a PUBLISH with `pkid` was delivered and answered with PUBREC; a
    /// PUBLISH with this id is a duplicate until PUBREL comes. `id` names the message
    /// across shards and restarts (see [`Record::Seen`]).
    InboundAdded {
        session: SessionKey,
        pkid: u16,
        id: u64,
    },
    /// QoS 2 in: PUBREL came for `pkid`.
    InboundReleased { session: SessionKey, pkid: u16 },
    /// The session's will (replacing any earlier one).
    WillSet {
        session: SessionKey,
        will: WillData<'a>,
    },
    /// The will was published or discarded.
    WillCleared { session: SessionKey },
    /// The stored message `msg` became the retained message of its topic, if `version`
    /// is newer than the retained one's (versions order updates from several shards).
    RetainSet { version: u64, msg: MsgId },
    /// The topic's retained message was cleared, if `version` is newer than its.
    RetainCleared { version: u64, topic: &'a str },
    /// The QoS 2 message `id` (the id its publisher's shard gave it with
    /// [`Record::InboundAdded`]) was delivered to the session (in the same turn): a copy
    /// its publisher sends again (after a restart, its session perhaps on another shard
    /// by then) is not delivered to it twice.
    Seen { session: SessionKey, id: u64 },
    /// The publisher released message `id` (PUBREL): no copy of it comes again.
    SeenReleased { id: u64 },
    /// Closes the records of one loop turn: recovery applies a turn only when its commit
    /// is there. `synced_through` is what had been synced when the turn was written, so a
    /// damaged record that a later commit says was synced is acknowledged data, never a
    /// torn tail.
    Commit { synced_through: Lsn },
    /// The last frame of a snapshot, which holds the state as of `base_lsn`.
    SnapshotEnd { base_lsn: Lsn },
}

/// A field whose length is capped, for [`RecordError::TooLong`] and
/// [`RecordError::InvalidUtf8`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    ClientId,
    Filter,
    Topic,
    /// Topic, properties and payload of a message together.
    Message,
}

/// Why bytes are not a valid frame (or a record not a writable one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// The declared body length is 0 or above [`MAX_BODY`].
    BadLength(u32),
    /// The CRC32C stored in the frame differs from the one computed over it.
    Checksum {
        stored: u32,
        computed: u32,
    },
    UnknownTag(u8),
    /// A field runs past the end of the body.
    Truncated,
    /// The body goes on after the record's last field.
    TrailingBytes(usize),
    InvalidUtf8(Field),
    TooLong {
        field: Field,
        len: usize,
        max: usize,
    },
    /// A QoS/RETAIN flags byte with QoS 3 or other bits set.
    InvalidFlags(u8),
    InvalidOptions(u8),
    InvalidProtocol(u8),
    /// A reason byte, or an optional field's presence byte, out of range.
    InvalidEnum(u8),
    TooManySubIds(u8),
    /// A subscription identifier of 0 in a list, or above [`MAX_SUB_ID`].
    InvalidSubId(u32),
    /// Packet identifier 0 (MQTT packet ids are 1..=65535).
    ZeroPacketId,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::BadLength(len) => write!(f, "record length {len} outside 1..={MAX_BODY}"),
            RecordError::Checksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            RecordError::UnknownTag(t) => write!(f, "unknown record type {t}"),
            RecordError::Truncated => write!(f, "a field runs past the end of the record"),
            RecordError::TrailingBytes(n) => write!(f, "{n} bytes after the record's last field"),
            RecordError::InvalidUtf8(field) => write!(f, "{field:?} is not UTF-8"),
            RecordError::TooLong { field, len, max } => {
                write!(f, "{field:?} of {len} bytes exceeds {max}")
            }
            RecordError::InvalidFlags(b) => write!(f, "invalid QoS/retain flags {b:#04x}"),
            RecordError::InvalidOptions(b) => write!(f, "invalid subscription options {b:#04x}"),
            RecordError::InvalidProtocol(b) => write!(f, "invalid protocol level {b}"),
            RecordError::InvalidEnum(b) => write!(f, "invalid reason or presence byte {b}"),
            RecordError::TooManySubIds(n) => {
                write!(f, "{n} subscription identifiers (at most {MAX_SUB_IDS})")
            }
            RecordError::InvalidSubId(id) => write!(f, "invalid subscription identifier {id}"),
            RecordError::ZeroPacketId => write!(f, "packet identifier 0"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Record tags: the first byte of a body.
mod tag {
    pub const SESSION_OPENED: u8 = 1;
    pub const SESSION_OFFLINE: u8 = 2;
    pub const SESSION_ENDED: u8 = 3;
    pub const SUB_ADDED: u8 = 4;
    pub const SUB_REMOVED: u8 = 5;
    pub const MESSAGE_STORED: u8 = 6;
    pub const ENQUEUED: u8 = 7;
    pub const UNQUEUED: u8 = 8;
    pub const SENT: u8 = 9;
    pub const RELEASED: u8 = 10;
    pub const INFLIGHT_DONE: u8 = 11;
    pub const INBOUND_ADDED: u8 = 12;
    pub const INBOUND_RELEASED: u8 = 13;
    pub const WILL_SET: u8 = 14;
    pub const WILL_CLEARED: u8 = 15;
    pub const RETAIN_SET: u8 = 16;
    pub const RETAIN_CLEARED: u8 = 17;
    pub const SEEN: u8 = 18;
    pub const SEEN_RELEASED: u8 = 19;
    pub const COMMIT: u8 = 30;
    pub const SNAPSHOT_END: u8 = 31;
}

/// Bits of the flags byte of a message or delivery.
const FLAG_QOS: u8 = 0b011;
const FLAG_RETAIN: u8 = 0b100;

/// Bytes of a delivery without its subscription identifiers: msg, flags, count.
const DELIVERY_FIXED: usize = 8 + 1 + 1;
/// Bytes of a content without its strings: the three lengths.
const CONTENT_FIXED: usize = 2 + 4 + 4;

impl Delivery {
    fn len(&self) -> usize {
        DELIVERY_FIXED + 4 * self.sub_ids.as_slice().len()
    }
}

impl Content<'_> {
    fn len(&self) -> usize {
        CONTENT_FIXED + self.topic.len() + self.props.len() + self.payload.len()
    }

    fn check(&self) -> Result<(), RecordError> {
        check_str(Field::Topic, self.topic)?;
        let len = self.topic.len() + self.props.len() + self.payload.len();
        if len > MAX_MESSAGE {
            return Err(RecordError::TooLong {
                field: Field::Message,
                len,
                max: MAX_MESSAGE,
            });
        }
        Ok(())
    }
}

fn check_str(field: Field, s: &str) -> Result<(), RecordError> {
    if s.len() > MAX_STR {
        return Err(RecordError::TooLong {
            field,
            len: s.len(),
            max: MAX_STR,
        });
    }
    Ok(())
}

fn check_pkid(pkid: u16) -> Result<(), RecordError> {
    if pkid == 0 {
        return Err(RecordError::ZeroPacketId);
    }
    Ok(())
}

impl<'a> Record<'a> {
    /// The session the record is about, if any.
    pub fn session(&self) -> Option<SessionKey> {
        match *self {
            Record::SessionOpened { session, .. }
            | Record::SessionOffline { session, .. }
            | Record::SessionEnded { session, .. }
            | Record::SubAdded { session, .. }
            | Record::SubRemoved { session, .. }
            | Record::Enqueued { session, .. }
            | Record::Unqueued { session, .. }
            | Record::Sent { session, .. }
            | Record::Released { session, .. }
            | Record::InflightDone { session, .. }
            | Record::InboundAdded { session, .. }
            | Record::InboundReleased { session, .. }
            | Record::WillSet { session, .. }
            | Record::Seen { session, .. }
            | Record::WillCleared { session } => Some(session),
            Record::MessageStored { .. }
            | Record::RetainSet { .. }
            | Record::RetainCleared { .. }
            | Record::SeenReleased { .. }
            | Record::Commit { .. }
            | Record::SnapshotEnd { .. } => None,
        }
    }

    /// Whether the writer can encode this record so that the reader accepts it: every
    /// field within its cap, packet ids and subscription options valid.
    pub fn check(&self) -> Result<(), RecordError> {
        match self {
            Record::SessionOpened { client_id, .. } => check_str(Field::ClientId, client_id),
            Record::SubAdded {
                filter,
                options,
                sub_id,
                ..
            } => {
                check_str(Field::Filter, filter)?;
                if *sub_id > MAX_SUB_ID {
                    return Err(RecordError::InvalidSubId(*sub_id));
                }
                // The byte must read back as these options (retain handling 3 has a
                // byte, but the reader refuses it).
                let bad = RecordError::InvalidOptions(options.retain_handling);
                let byte = options.to_byte(Version::V5).map_err(|_| bad)?;
                match SubscriptionOptions::from_byte(byte, Version::V5) {
                    Ok(back) if back == *options => Ok(()),
                    _ => Err(bad),
                }
            }
            Record::SubRemoved { filter, .. } => check_str(Field::Filter, filter),
            Record::MessageStored { message, .. } => message.content.check(),
            Record::WillSet { will, .. } => will.content.check(),
            Record::RetainCleared { topic, .. } => check_str(Field::Topic, topic),
            Record::Sent { pkid, .. }
            | Record::Released { pkid, .. }
            | Record::InflightDone { pkid, .. }
            | Record::InboundAdded { pkid, .. }
            | Record::InboundReleased { pkid, .. } => check_pkid(*pkid),
            Record::SessionOffline { .. }
            | Record::SessionEnded { .. }
            | Record::Enqueued { .. }
            | Record::Unqueued { .. }
            | Record::WillCleared { .. }
            | Record::Seen { .. }
            | Record::SeenReleased { .. }
            | Record::RetainSet { .. }
            | Record::Commit { .. }
            | Record::SnapshotEnd { .. } => Ok(()),
        }
    }

    /// Bytes of the body (tag included).
    pub fn body_len(&self) -> usize {
        1 + match self {
            Record::SessionOpened { client_id, .. } => 8 + 1 + 4 + 8 + 2 + client_id.len(),
            Record::SessionOffline { .. } => 8 + 8 + 8,
            Record::SessionEnded { .. } => 8 + 1,
            Record::SubAdded { filter, .. } => 8 + 1 + 4 + 2 + filter.len(),
            Record::SubRemoved { filter, .. } => 8 + 2 + filter.len(),
            Record::MessageStored { message, .. } => 8 + 1 + 8 + message.content.len(),
            Record::Enqueued { delivery, .. } => 8 + delivery.len(),
            Record::Unqueued { .. } => 8 + 8 + 1,
            Record::Sent { delivery, .. } => 8 + 2 + delivery.len(),
            Record::Released { .. } | Record::InboundReleased { .. } => 8 + 2,
            Record::InboundAdded { .. } => 8 + 2 + 8,
            Record::InflightDone { .. } => 8 + 2 + 1,
            Record::WillSet { will, .. } => 8 + 4 + 1 + 4 + 1 + will.content.len(),
            Record::WillCleared { .. } => 8,
            Record::RetainSet { .. } => 8 + 8,
            Record::RetainCleared { topic, .. } => 8 + 2 + topic.len(),
            Record::Seen { .. } => 8 + 8,
            Record::SeenReleased { .. } => 8,
            Record::Commit { .. } | Record::SnapshotEnd { .. } => 8,
        }
    }

    /// Bytes of the whole frame.
    pub fn frame_len(&self) -> usize {
        FRAME_HEAD + self.body_len()
    }

    fn tag(&self) -> u8 {
        match self {
            Record::SessionOpened { .. } => tag::SESSION_OPENED,
            Record::SessionOffline { .. } => tag::SESSION_OFFLINE,
            Record::SessionEnded { .. } => tag::SESSION_ENDED,
            Record::SubAdded { .. } => tag::SUB_ADDED,
            Record::SubRemoved { .. } => tag::SUB_REMOVED,
            Record::MessageStored { .. } => tag::MESSAGE_STORED,
            Record::Enqueued { .. } => tag::ENQUEUED,
            Record::Unqueued { .. } => tag::UNQUEUED,
            Record::Sent { .. } => tag::SENT,
            Record::Released { .. } => tag::RELEASED,
            Record::InflightDone { .. } => tag::INFLIGHT_DONE,
            Record::InboundAdded { .. } => tag::INBOUND_ADDED,
            Record::InboundReleased { .. } => tag::INBOUND_RELEASED,
            Record::WillSet { .. } => tag::WILL_SET,
            Record::WillCleared { .. } => tag::WILL_CLEARED,
            Record::RetainSet { .. } => tag::RETAIN_SET,
            Record::RetainCleared { .. } => tag::RETAIN_CLEARED,
            Record::Seen { .. } => tag::SEEN,
            Record::SeenReleased { .. } => tag::SEEN_RELEASED,
            Record::Commit { .. } => tag::COMMIT,
            Record::SnapshotEnd { .. } => tag::SNAPSHOT_END,
        }
    }

    /// Appends the frame of this record at `lsn` to `out`; returns its length. The record
    /// must pass [`Record::check`] (the reader would reject it otherwise); one that does
    /// not is refused here, and `out` is left as it was.
    pub fn encode(&self, lsn: Lsn, out: &mut Vec<u8>) -> Result<usize, RecordError> {
        self.check()?;
        let body_len = self.body_len();
        let start = out.len();
        out.reserve(FRAME_HEAD + body_len);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(body_len as u32).to_be_bytes());
        out.extend_from_slice(&lsn.0.to_be_bytes());
        self.write_body(out);
        debug_assert_eq!(out.len() - start, FRAME_HEAD + body_len, "{self:?}");
        let crc = crc32c::crc32c(&out[start + 4..]);
        out[start..start + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(FRAME_HEAD + body_len)
    }

    fn write_body(&self, out: &mut Vec<u8>) {
        out.push(self.tag());
        match *self {
            Record::SessionOpened {
                session,
                client_id,
                protocol,
                expiry_interval_s,
                opened_at_ms,
            } => {
                put_u64(out, session.0);
                out.push(protocol.level());
                put_u32(out, expiry_interval_s);
                put_u64(out, opened_at_ms);
                put_str(out, client_id);
            }
            Record::SessionOffline {
                session,
                expires_at,
                will_at,
            } => {
                put_u64(out, session.0);
                put_u64(out, expires_at.0);
                put_u64(out, will_at.0);
            }
            Record::SessionEnded { session, reason } => {
                put_u64(out, session.0);
                out.push(reason as u8);
            }
            Record::SubAdded {
                session,
                filter,
                options,
                sub_id,
            } => {
                put_u64(out, session.0);
                // `check` has refused options that have no byte.
                out.push(options.to_byte(Version::V5).unwrap_or_default());
                put_u32(out, sub_id);
                put_str(out, filter);
            }
            Record::SubRemoved { session, filter } => {
                put_u64(out, session.0);
                put_str(out, filter);
            }
            Record::MessageStored { id, message } => {
                put_u64(out, id.0);
                out.push(flags(message.qos, message.retain));
                put_u64(out, message.expires_at.0);
                put_content(out, &message.content);
            }
            Record::Enqueued { session, delivery } => {
                put_u64(out, session.0);
                put_delivery(out, &delivery);
            }
            Record::Unqueued {
                session,
                msg,
                reason,
            } => {
                put_u64(out, session.0);
                put_u64(out, msg.0);
                out.push(reason as u8);
            }
            Record::Sent {
                session,
                pkid,
                delivery,
            } => {
                put_u64(out, session.0);
                put_u16(out, pkid);
                put_delivery(out, &delivery);
            }
            Record::Released { session, pkid } | Record::InboundReleased { session, pkid } => {
                put_u64(out, session.0);
                put_u16(out, pkid);
            }
            Record::InboundAdded { session, pkid, id } => {
                put_u64(out, session.0);
                put_u16(out, pkid);
                put_u64(out, id);
            }
            Record::InflightDone {
                session,
                pkid,
                reason,
            } => {
                put_u64(out, session.0);
                put_u16(out, pkid);
                out.push(reason as u8);
            }
            Record::WillSet { session, will } => {
                put_u64(out, session.0);
                put_u32(out, will.delay_s);
                out.push(will.expiry_s.is_some() as u8);
                put_u32(out, will.expiry_s.unwrap_or(0));
                out.push(flags(will.qos, will.retain));
                put_content(out, &will.content);
            }
            Record::WillCleared { session } => put_u64(out, session.0),
            Record::RetainSet { version, msg } => {
                put_u64(out, version);
                put_u64(out, msg.0);
            }
            Record::RetainCleared { version, topic } => {
                put_u64(out, version);
                put_str(out, topic);
            }
            Record::Seen { session, id } => {
                put_u64(out, session.0);
                put_u64(out, id);
            }
            Record::SeenReleased { id } => put_u64(out, id),
            Record::Commit { synced_through } => put_u64(out, synced_through.0),
            Record::SnapshotEnd { base_lsn } => put_u64(out, base_lsn.0),
        }
    }
}

fn flags(qos: QoS, retain: bool) -> u8 {
    qos as u8 | if retain { FLAG_RETAIN } else { 0 }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u16(out, s.len() as u16);
    out.extend_from_slice(s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn put_content(out: &mut Vec<u8>, c: &Content<'_>) {
    put_str(out, c.topic);
    put_bytes(out, c.props);
    put_bytes(out, c.payload);
}

fn put_delivery(out: &mut Vec<u8>, d: &Delivery) {
    put_u64(out, d.msg.0);
    out.push(flags(d.qos, d.retain));
    let ids = d.sub_ids.as_slice();
    out.push(ids.len() as u8);
    for &id in ids {
        put_u32(out, id);
    }
}

/// A decoded frame: a record and its LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub lsn: Lsn,
    pub record: Record<'a>,
}

/// Decodes the frame at the front of `buf`. The length is checked against [`MAX_BODY`]
/// before the body is looked at, the CRC before the fields are read.
pub fn decode_frame(buf: &[u8]) -> Result<Decoded<Frame<'_>>, RecordError> {
    let mut r = Reader::new(buf);
    let (Some(stored), Some(len), Some(lsn)) = (r.u32(), r.u32(), r.u64()) else {
        return Ok(Decoded::Partial {
            need: FRAME_HEAD - buf.len(),
        });
    };
    if len == 0 || len as usize > MAX_BODY {
        return Err(RecordError::BadLength(len));
    }
    let end = FRAME_HEAD + len as usize;
    let Some(framed) = buf.get(4..end) else {
        return Ok(Decoded::Partial {
            need: end - buf.len(),
        });
    };
    let computed = crc32c::crc32c(framed);
    if computed != stored {
        return Err(RecordError::Checksum { stored, computed });
    }
    let record = decode_body(&buf[FRAME_HEAD..end])?;
    Ok(Decoded::Complete(
        Frame {
            lsn: Lsn(lsn),
            record,
        },
        end,
    ))
}

/// Decodes a record body (tag and fields), all of `body`.
pub fn decode_body(body: &[u8]) -> Result<Record<'_>, RecordError> {
    let mut r = Body(Reader::new(body));
    let record = match r.u8()? {
        tag::SESSION_OPENED => {
            let session = r.key()?;
            let level = r.u8()?;
            let protocol = Version::from_level(level).ok_or(RecordError::InvalidProtocol(level))?;
            Record::SessionOpened {
                session,
                protocol,
                expiry_interval_s: r.u32()?,
                opened_at_ms: r.u64()?,
                client_id: r.str(Field::ClientId)?,
            }
        }
        tag::SESSION_OFFLINE => Record::SessionOffline {
            session: r.key()?,
            expires_at: Deadline(r.u64()?),
            will_at: Deadline(r.u64()?),
        },
        tag::SESSION_ENDED => Record::SessionEnded {
            session: r.key()?,
            reason: match r.u8()? {
                0 => EndReason::Discarded,
                1 => EndReason::Expired,
                2 => EndReason::Moved,
                b => return Err(RecordError::InvalidEnum(b)),
            },
        },
        tag::SUB_ADDED => {
            let session = r.key()?;
            let byte = r.u8()?;
            let options = SubscriptionOptions::from_byte(byte, Version::V5)
                .map_err(|_| RecordError::InvalidOptions(byte))?;
            let sub_id = r.u32()?;
            if sub_id > MAX_SUB_ID {
                return Err(RecordError::InvalidSubId(sub_id));
            }
            Record::SubAdded {
                session,
                options,
                sub_id,
                filter: r.str(Field::Filter)?,
            }
        }
        tag::SUB_REMOVED => Record::SubRemoved {
            session: r.key()?,
            filter: r.str(Field::Filter)?,
        },
        tag::MESSAGE_STORED => {
            let id = MsgId(r.u64()?);
            let (qos, retain) = r.flags()?;
            let expires_at = Deadline(r.u64()?);
            Record::MessageStored {
                id,
                message: MessageData {
                    qos,
                    retain,
                    expires_at,
                    content: r.content()?,
                },
            }
        }
        tag::ENQUEUED => Record::Enqueued {
            session: r.key()?,
            delivery: r.delivery()?,
        },
        tag::UNQUEUED => Record::Unqueued {
            session: r.key()?,
            msg: MsgId(r.u64()?),
            reason: match r.u8()? {
                0 => Unqueue::Sending,
                1 => Unqueue::Dropped,
                2 => Unqueue::Expired,
                b => return Err(RecordError::InvalidEnum(b)),
            },
        },
        tag::SENT => Record::Sent {
            session: r.key()?,
            pkid: r.pkid()?,
            delivery: r.delivery()?,
        },
        tag::RELEASED => Record::Released {
            session: r.key()?,
            pkid: r.pkid()?,
        },
        tag::INFLIGHT_DONE => Record::InflightDone {
            session: r.key()?,
            pkid: r.pkid()?,
            reason: match r.u8()? {
                0 => Done::Acked,
                1 => Done::Refused,
                2 => Done::Dropped,
                b => return Err(RecordError::InvalidEnum(b)),
            },
        },
        tag::INBOUND_ADDED => Record::InboundAdded {
            session: r.key()?,
            pkid: r.pkid()?,
            id: r.u64()?,
        },
        tag::INBOUND_RELEASED => Record::InboundReleased {
            session: r.key()?,
            pkid: r.pkid()?,
        },
        tag::WILL_SET => {
            let session = r.key()?;
            let delay_s = r.u32()?;
            let has_expiry = r.u8()?;
            let expiry = r.u32()?;
            let expiry_s = match has_expiry {
                0 => None,
                1 => Some(expiry),
                b => return Err(RecordError::InvalidEnum(b)),
            };
            let (qos, retain) = r.flags()?;
            Record::WillSet {
                session,
                will: WillData {
                    delay_s,
                    expiry_s,
                    qos,
                    retain,
                    content: r.content()?,
                },
            }
        }
        tag::WILL_CLEARED => Record::WillCleared { session: r.key()? },
        tag::RETAIN_SET => Record::RetainSet {
            version: r.u64()?,
            msg: MsgId(r.u64()?),
        },
        tag::SEEN => Record::Seen {
            session: r.key()?,
            id: r.u64()?,
        },
        tag::SEEN_RELEASED => Record::SeenReleased { id: r.u64()? },
        tag::RETAIN_CLEARED => Record::RetainCleared {
            version: r.u64()?,
            topic: r.str(Field::Topic)?,
        },
        tag::COMMIT => Record::Commit {
            synced_through: Lsn(r.u64()?),
        },
        tag::SNAPSHOT_END => Record::SnapshotEnd {
            base_lsn: Lsn(r.u64()?),
        },
        t => return Err(RecordError::UnknownTag(t)),
    };
    match r.0.remaining() {
        0 => Ok(record),
        n => Err(RecordError::TrailingBytes(n)),
    }
}

/// A record body being read: every short read is [`RecordError::Truncated`].
struct Body<'a>(Reader<'a>);

impl<'a> Body<'a> {
    fn u8(&mut self) -> Result<u8, RecordError> {
        self.0.u8().ok_or(RecordError::Truncated)
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        self.0.u16().ok_or(RecordError::Truncated)
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        self.0.u32().ok_or(RecordError::Truncated)
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        self.0.u64().ok_or(RecordError::Truncated)
    }

    fn key(&mut self) -> Result<SessionKey, RecordError> {
        self.u64().map(SessionKey)
    }

    fn pkid(&mut self) -> Result<u16, RecordError> {
        let pkid = self.u16()?;
        check_pkid(pkid)?;
        Ok(pkid)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        self.0.take(n).ok_or(RecordError::Truncated)
    }

    fn str(&mut self, field: Field) -> Result<&'a str, RecordError> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| RecordError::InvalidUtf8(field))
    }

    /// A `u32`-length byte string whose length, with `used` bytes already counted, stays
    /// within [`MAX_MESSAGE`].
    fn message_bytes(&mut self, used: usize) -> Result<&'a [u8], RecordError> {
        let len = self.u32()? as usize;
        if used + len > MAX_MESSAGE {
            return Err(RecordError::TooLong {
                field: Field::Message,
                len: used + len,
                max: MAX_MESSAGE,
            });
        }
        self.take(len)
    }

    fn content(&mut self) -> Result<Content<'a>, RecordError> {
        let topic = self.str(Field::Topic)?;
        let props = self.message_bytes(topic.len())?;
        let payload = self.message_bytes(topic.len() + props.len())?;
        Ok(Content {
            topic,
            props,
            payload,
        })
    }

    fn flags(&mut self) -> Result<(QoS, bool), RecordError> {
        let b = self.u8()?;
        if b & !(FLAG_QOS | FLAG_RETAIN) != 0 {
            return Err(RecordError::InvalidFlags(b));
        }
        let qos = QoS::from_u8(b & FLAG_QOS).ok_or(RecordError::InvalidFlags(b))?;
        Ok((qos, b & FLAG_RETAIN != 0))
    }

    fn delivery(&mut self) -> Result<Delivery, RecordError> {
        let msg = MsgId(self.u64()?);
        let (qos, retain) = self.flags()?;
        let n = self.u8()?;
        if n as usize > MAX_SUB_IDS {
            return Err(RecordError::TooManySubIds(n));
        }
        let mut ids = [0u32; MAX_SUB_IDS];
        for id in &mut ids[..n as usize] {
            *id = self.u32()?;
            if *id == 0 || *id > MAX_SUB_ID {
                return Err(RecordError::InvalidSubId(*id));
            }
        }
        Ok(Delivery {
            msg,
            qos,
            retain,
            sub_ids: SubIdList { len: n, ids },
        })
    }
}

/// One record of every kind, with every optional part used somewhere: seeds for the
/// fuzz targets and the tables of the tests.
pub fn samples() -> Vec<Record<'static>> {
    let key = SessionKey(7);
    let delivery = Delivery {
        msg: MsgId(3),
        qos: QoS::AtLeastOnce,
        retain: true,
        sub_ids: SubIdList::new(&[1, 268_435_455]).unwrap_or_default(),
    };
    let content = Content {
        topic: "sensors/ü/temp",
        props: &[0x03, 0x00, 0x04, b't', b'e', b'x', b't'],
        payload: b"21.5",
    };
    vec![
        Record::SessionOpened {
            session: key,
            client_id: "device-0042",
            protocol: Version::V5,
            expiry_interval_s: 3600,
            opened_at_ms: 1_700_000_000_000,
        },
        Record::SessionOffline {
            session: key,
            expires_at: Deadline::at_ms(1_700_000_360_000),
            will_at: Deadline::NONE,
        },
        Record::SessionEnded {
            session: key,
            reason: EndReason::Expired,
        },
        Record::SubAdded {
            session: key,
            filter: "$share/g/sensors/+/temp",
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: 2,
            },
            sub_id: 99,
        },
        Record::SubRemoved {
            session: key,
            filter: "a/#",
        },
        Record::MessageStored {
            id: MsgId(3),
            message: MessageData {
                qos: QoS::ExactlyOnce,
                retain: true,
                expires_at: Deadline::at_ms(1_700_000_000_500),
                content,
            },
        },
        Record::Enqueued {
            session: key,
            delivery,
        },
        Record::Unqueued {
            session: key,
            msg: MsgId(3),
            reason: Unqueue::Expired,
        },
        Record::Sent {
            session: key,
            pkid: 65535,
            delivery,
        },
        Record::Released {
            session: key,
            pkid: 1,
        },
        Record::InflightDone {
            session: key,
            pkid: 2,
            reason: Done::Refused,
        },
        Record::InboundAdded {
            session: key,
            pkid: 3,
            id: 0x0123_4567_89ab_cdef,
        },
        Record::InboundReleased {
            session: key,
            pkid: 3,
        },
        Record::WillSet {
            session: key,
            will: WillData {
                delay_s: 30,
                expiry_s: Some(0),
                qos: QoS::AtMostOnce,
                retain: false,
                content,
            },
        },
        Record::WillCleared { session: key },
        Record::RetainSet {
            version: 12,
            msg: MsgId(3),
        },
        Record::RetainCleared {
            version: 13,
            topic: "sensors/ü/temp",
        },
        Record::Commit {
            synced_through: Lsn(41),
        },
        Record::SnapshotEnd { base_lsn: Lsn(40) },
        Record::Seen {
            session: key,
            id: 0x0123_4567_89ab_cdef,
        },
        Record::SeenReleased {
            id: 0x0123_4567_89ab_cdef,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(rec: &Record<'_>, lsn: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let n = rec.encode(Lsn(lsn), &mut out).expect("sample encodes");
        assert_eq!(n, out.len());
        assert_eq!(n, rec.frame_len());
        out
    }

    /// Recomputes the CRC of a frame whose bytes a test changed, so that the change
    /// reaches the body decoder.
    fn reseal(bytes: &mut [u8]) {
        let crc = crc32c::crc32c(&bytes[4..]);
        bytes[..4].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn every_record_round_trips() {
        let samples = samples();
        assert_eq!(samples.len(), 21, "one sample per record kind");
        for (i, rec) in samples.iter().enumerate() {
            let bytes = frame(rec, 100 + i as u64);
            let got = decode_frame(&bytes).expect("decodes");
            assert_eq!(
                got,
                Decoded::Complete(
                    Frame {
                        lsn: Lsn(100 + i as u64),
                        record: *rec
                    },
                    bytes.len()
                )
            );
        }
    }

    #[test]
    fn split_feed_gives_partial_until_the_last_byte() {
        for rec in samples() {
            let bytes = frame(&rec, 1);
            for cut in 0..bytes.len() {
                match decode_frame(&bytes[..cut]) {
                    Ok(Decoded::Partial { need }) => {
                        assert!(need >= 1 && cut + need <= bytes.len(), "{rec:?} at {cut}")
                    }
                    other => panic!("{rec:?} cut at {cut}: {other:?}"),
                }
            }
            // Bytes after the frame do not change it.
            let mut more = bytes.clone();
            more.extend_from_slice(&bytes);
            assert!(
                matches!(decode_frame(&more), Ok(Decoded::Complete(f, n)) if n == bytes.len() && f.record == rec)
            );
        }
    }

    #[test]
    fn frame_head_errors() {
        let good = frame(
            &Record::WillCleared {
                session: SessionKey(1),
            },
            5,
        );
        let mut zero_len = good.clone();
        zero_len[4..8].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(decode_frame(&zero_len), Err(RecordError::BadLength(0)));

        // Over the cap: refused from the head alone, before the body is there.
        let mut huge = good[..FRAME_HEAD].to_vec();
        huge[4..8].copy_from_slice(&(MAX_BODY as u32 + 1).to_be_bytes());
        assert_eq!(
            decode_frame(&huge),
            Err(RecordError::BadLength(MAX_BODY as u32 + 1))
        );
        let mut at_cap = huge.clone();
        at_cap[4..8].copy_from_slice(&(MAX_BODY as u32).to_be_bytes());
        assert_eq!(
            decode_frame(&at_cap),
            Ok(Decoded::Partial { need: MAX_BODY })
        );

        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            decode_frame(&flipped),
            Err(RecordError::Checksum { .. })
        ));
        // The LSN is covered by the CRC: a frame moved elsewhere in the log is caught.
        let mut moved = good.clone();
        moved[15] ^= 0x10;
        assert!(matches!(
            decode_frame(&moved),
            Err(RecordError::Checksum { .. })
        ));
    }

    /// The frame of `rec` with `patch` applied to its body, length and CRC made to fit.
    fn patched(rec: &Record<'_>, patch: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut bytes = frame(rec, 1);
        let mut body = bytes.split_off(FRAME_HEAD);
        patch(&mut body);
        bytes[4..8].copy_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&body);
        reseal(&mut bytes);
        bytes
    }

    #[test]
    fn malformed_bodies() {
        let s = samples();
        let (opened, ended, sub, stored, enqueued, unqueued, sent) =
            (&s[0], &s[2], &s[3], &s[5], &s[6], &s[7], &s[8]);
        let (done, will) = (&s[10], &s[13]);
        // Offsets into bodies: tag at 0, session key 1..9.
        let table: Vec<(&str, Vec<u8>, RecordError)> = vec![
            (
                "unknown tag",
                patched(opened, |b| b[0] = 99),
                RecordError::UnknownTag(99),
            ),
            (
                "tag 0",
                patched(opened, |b| b[0] = 0),
                RecordError::UnknownTag(0),
            ),
            (
                "empty after tag",
                patched(opened, |b| b.truncate(1)),
                RecordError::Truncated,
            ),
            (
                "string cut short",
                patched(opened, |b| {
                    b.pop();
                }),
                RecordError::Truncated,
            ),
            (
                "trailing byte",
                patched(opened, |b| b.push(0)),
                RecordError::TrailingBytes(1),
            ),
            (
                "protocol 3",
                patched(opened, |b| b[9] = 3),
                RecordError::InvalidProtocol(3),
            ),
            (
                "client id not UTF-8",
                patched(opened, |b| {
                    let n = b.len();
                    b[n - 1] = 0xff;
                }),
                RecordError::InvalidUtf8(Field::ClientId),
            ),
            (
                "end reason 3",
                patched(ended, |b| b[9] = 3),
                RecordError::InvalidEnum(3),
            ),
            (
                "options reserved bit",
                patched(sub, |b| b[9] |= 0x40),
                RecordError::InvalidOptions(0x40 | 0x2e),
            ),
            (
                "retain handling 3",
                patched(sub, |b| b[9] = 0x30),
                RecordError::InvalidOptions(0x30),
            ),
            (
                "options QoS 3",
                patched(sub, |b| b[9] = 0x03),
                RecordError::InvalidOptions(0x03),
            ),
            (
                "sub id over max",
                patched(sub, |b| {
                    b[10..14].copy_from_slice(&(MAX_SUB_ID + 1).to_be_bytes())
                }),
                RecordError::InvalidSubId(MAX_SUB_ID + 1),
            ),
            (
                "filter not UTF-8",
                patched(sub, |b| b[16] = 0xc0),
                RecordError::InvalidUtf8(Field::Filter),
            ),
            (
                "message QoS 3",
                patched(stored, |b| b[9] = 0x03),
                RecordError::InvalidFlags(0x03),
            ),
            (
                "message flag bit 3",
                patched(stored, |b| b[9] |= 0x08),
                RecordError::InvalidFlags(0x0e),
            ),
            (
                "topic not UTF-8",
                patched(stored, |b| b[20] = 0xff),
                RecordError::InvalidUtf8(Field::Topic),
            ),
            (
                "props over the message cap",
                patched(stored, |b| {
                    let at = 18 + 2 + "sensors/ü/temp".len();
                    b[at..at + 4].copy_from_slice(&(MAX_MESSAGE as u32).to_be_bytes());
                }),
                RecordError::TooLong {
                    field: Field::Message,
                    len: MAX_MESSAGE + 15,
                    max: MAX_MESSAGE,
                },
            ),
            (
                "payload over the message cap",
                patched(stored, |b| {
                    let at = 18 + 2 + "sensors/ü/temp".len() + 4 + 7;
                    b[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
                }),
                RecordError::TooLong {
                    field: Field::Message,
                    len: 15 + 7 + u32::MAX as usize,
                    max: MAX_MESSAGE,
                },
            ),
            (
                "payload length past the body",
                patched(stored, |b| {
                    let at = 18 + 2 + "sensors/ü/temp".len() + 4 + 7;
                    b[at..at + 4].copy_from_slice(&5u32.to_be_bytes());
                }),
                RecordError::Truncated,
            ),
            (
                "five subscription ids",
                patched(enqueued, |b| b[18] = 5),
                RecordError::TooManySubIds(5),
            ),
            (
                "subscription id 0",
                patched(enqueued, |b| b[19..23].copy_from_slice(&[0; 4])),
                RecordError::InvalidSubId(0),
            ),
            (
                "delivery QoS 3",
                patched(enqueued, |b| b[17] = 0x07),
                RecordError::InvalidFlags(0x07),
            ),
            (
                "unqueue reason 3",
                patched(unqueued, |b| b[17] = 3),
                RecordError::InvalidEnum(3),
            ),
            (
                "packet id 0",
                patched(sent, |b| b[9..11].copy_from_slice(&[0, 0])),
                RecordError::ZeroPacketId,
            ),
            (
                "done reason 7",
                patched(done, |b| b[11] = 7),
                RecordError::InvalidEnum(7),
            ),
            (
                "will expiry presence 2",
                patched(will, |b| b[13] = 2),
                RecordError::InvalidEnum(2),
            ),
        ];
        for (name, bytes, want) in table {
            assert_eq!(decode_frame(&bytes), Err(want), "{name}");
        }
    }

    #[test]
    fn the_writer_refuses_what_the_reader_would() {
        let long = "x".repeat(MAX_STR + 1);
        let key = SessionKey(1);
        let cases: Vec<(Record<'_>, RecordError)> = vec![
            (
                Record::SessionOpened {
                    session: key,
                    client_id: &long,
                    protocol: Version::V311,
                    expiry_interval_s: 1,
                    opened_at_ms: 1,
                },
                RecordError::TooLong {
                    field: Field::ClientId,
                    len: MAX_STR + 1,
                    max: MAX_STR,
                },
            ),
            (
                Record::SubRemoved {
                    session: key,
                    filter: &long,
                },
                RecordError::TooLong {
                    field: Field::Filter,
                    len: MAX_STR + 1,
                    max: MAX_STR,
                },
            ),
            (
                Record::RetainCleared {
                    version: 1,
                    topic: &long,
                },
                RecordError::TooLong {
                    field: Field::Topic,
                    len: MAX_STR + 1,
                    max: MAX_STR,
                },
            ),
            (
                Record::Released {
                    session: key,
                    pkid: 0,
                },
                RecordError::ZeroPacketId,
            ),
            (
                Record::SubAdded {
                    session: key,
                    filter: "a",
                    options: SubscriptionOptions {
                        retain_handling: 3,
                        ..SubscriptionOptions::new(QoS::AtMostOnce)
                    },
                    sub_id: 0,
                },
                RecordError::InvalidOptions(3),
            ),
            (
                Record::SubAdded {
                    session: key,
                    filter: "a",
                    options: SubscriptionOptions::new(QoS::AtMostOnce),
                    sub_id: MAX_SUB_ID + 1,
                },
                RecordError::InvalidSubId(MAX_SUB_ID + 1),
            ),
        ];
        for (rec, want) in cases {
            let mut out = vec![1, 2, 3];
            assert_eq!(rec.encode(Lsn(1), &mut out), Err(want));
            assert_eq!(out, vec![1, 2, 3], "nothing written");
        }
        assert_eq!(SubIdList::new(&[1, 2, 3, 4, 5]), None);
        assert_eq!(SubIdList::new(&[0]), None);
        assert_eq!(SubIdList::new(&[MAX_SUB_ID + 1]), None);
    }

    #[test]
    fn a_message_at_the_cap_is_accepted_and_one_byte_more_refused() {
        let payload = vec![0u8; MAX_MESSAGE - 1];
        let mut rec = Record::MessageStored {
            id: MsgId(1),
            message: MessageData {
                qos: QoS::AtLeastOnce,
                retain: false,
                expires_at: Deadline::NONE,
                content: Content {
                    topic: "t",
                    props: &[],
                    payload: &payload,
                },
            },
        };
        let mut out = Vec::new();
        rec.encode(Lsn(1), &mut out).expect("at the cap");
        assert!(out.len() - FRAME_HEAD <= MAX_BODY);
        assert!(matches!(decode_frame(&out), Ok(Decoded::Complete(f, _)) if f.record == rec));
        drop(out);
        let longer = vec![0u8; MAX_MESSAGE];
        if let Record::MessageStored { message, .. } = &mut rec {
            message.content.payload = &longer;
        }
        assert_eq!(
            rec.check(),
            Err(RecordError::TooLong {
                field: Field::Message,
                len: MAX_MESSAGE + 1,
                max: MAX_MESSAGE
            })
        );
    }
}
