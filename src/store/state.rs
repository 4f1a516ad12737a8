//! The durable state of one shard, as the log rebuilds it: persistent sessions (with
//! subscriptions, queue, in-flight window, inbound QoS 2 ids, will and deadlines),
//! stored messages with reference counts, and retained messages.
//!
//! [`State::apply`] is the one way to change it: the live path applies each record as it
//! appends it, recovery applies the records it reads, and a snapshot is the state written
//! back as records ([`Session::image`]) for `apply` to read again.
//!
//! A message is stored once per shard and referenced by id from queues, in-flight windows
//! and the retained set. Its reference count may fall to zero in the middle of a turn (a
//! delivery leaves the queue and is sent in the next record), so unreferenced messages
//! are freed by [`State::sweep`] between turns, not at once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

use ringmq_proto::mqtt::{QoS, SubscriptionOptions, Version};
use slab::Slab;

use super::record::{
    Content, Deadline, Delivery, Lsn, MessageData, MsgId, Record, SessionKey, WillData,
};
use super::snapshot::{Cursor, SnapshotChunk, SnapshotWriter};

/// Topic, properties and payload in one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    bytes: Box<[u8]>,
    topic_len: u16,
    props_len: u32,
}

impl Body {
    fn new(c: &Content<'_>) -> Body {
        let mut bytes = Vec::with_capacity(c.topic.len() + c.props.len() + c.payload.len());
        bytes.extend_from_slice(c.topic.as_bytes());
        bytes.extend_from_slice(c.props);
        bytes.extend_from_slice(c.payload);
        Body {
            bytes: bytes.into_boxed_slice(),
            // A record's topic is at most u16::MAX bytes and its message at most
            // MAX_MESSAGE, so neither length is cut.
            topic_len: c.topic.len() as u16,
            props_len: c.props.len() as u32,
        }
    }

    pub fn content(&self) -> Content<'_> {
        let (topic, rest) = self.bytes.split_at(self.topic_len as usize);
        let (props, payload) = rest.split_at(self.props_len as usize);
        Content {
            // Copied from a `&str` in `new`.
            topic: std::str::from_utf8(topic).unwrap_or_default(),
            props,
            payload,
        }
    }
}

/// A stored message and how many queue entries, in-flight entries and retained topics
/// refer to it.
#[derive(Debug)]
pub struct StoredMessage {
    pub qos: QoS,
    pub retain: bool,
    pub expires_at: Deadline,
    pub body: Body,
    refs: u32,
    /// The snapshot that has written it (see [`SnapshotWriter`]).
    mark: u32,
}

impl StoredMessage {
    pub fn data(&self) -> MessageData<'_> {
        MessageData {
            qos: self.qos,
            retain: self.retain,
            expires_at: self.expires_at,
            content: self.body.content(),
        }
    }

    pub fn refs(&self) -> u32 {
        self.refs
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub filter: Box<str>,
    pub options: SubscriptionOptions,
    /// MQTT 5 subscription identifier; 0: none.
    pub sub_id: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inflight {
    pub pkid: u16,
    /// QoS 2: PUBREC came and PUBREL was sent.
    pub released: bool,
    pub delivery: Delivery,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub delay_s: u32,
    pub expiry_s: Option<u32>,
    pub qos: QoS,
    pub retain: bool,
    pub body: Body,
}

impl Will {
    pub fn data(&self) -> WillData<'_> {
        WillData {
            delay_s: self.delay_s,
            expiry_s: self.expiry_s,
            qos: self.qos,
            retain: self.retain,
            content: self.body.content(),
        }
    }
}

/// A persistent session.
#[derive(Debug)]
pub struct Session {
    pub key: SessionKey,
    pub client_id: Box<str>,
    pub protocol: Version,
    pub expiry_interval_s: u32,
    pub opened_at_ms: u64,
    /// When the session ends, while its client is away.
    pub expires_at: Deadline,
    /// When its delayed will is due, while its client is away.
    pub will_at: Deadline,
    /// In the order added; a filter added again replaces its entry in place.
    pub subscriptions: Vec<Subscription>,
    pub will: Option<Will>,
    pub queue: VecDeque<Delivery>,
    /// In the order sent.
    pub inflight: VecDeque<Inflight>,
    /// QoS 2 packet ids received and not yet released, with the id each message got.
    pub inbound_qos2: Vec<(u16, u64)>,
    /// Ids of QoS 2 messages delivered to the session whose publisher has not released
    /// them yet (see [`Record::Seen`]).
    pub seen: Vec<u64>,
    /// The LSN of the record that created it.
    born: Lsn,
    /// The snapshot that has written it.
    mark: u32,
}

impl Session {
    /// The records that rebuild this session in an empty state, in order. Deliveries
    /// refer to messages by id: whoever writes the image writes each message first.
    pub fn image(&self, mut each: impl FnMut(Record<'_>)) {
        let session = self.key;
        each(Record::SessionOpened {
            session,
            client_id: &self.client_id,
            protocol: self.protocol,
            expiry_interval_s: self.expiry_interval_s,
            opened_at_ms: self.opened_at_ms,
        });
        if let Some(offline) = self.offline_record() {
            each(offline);
        }
        for s in &self.subscriptions {
            each(Record::SubAdded {
                session,
                filter: &s.filter,
                options: s.options,
                sub_id: s.sub_id,
            });
        }
        if let Some(w) = &self.will {
            each(Record::WillSet {
                session,
                will: w.data(),
            });
        }
        for &delivery in &self.queue {
            each(Record::Enqueued { session, delivery });
        }
        for i in &self.inflight {
            each(Record::Sent {
                session,
                pkid: i.pkid,
                delivery: i.delivery,
            });
            if i.released {
                each(Record::Released {
                    session,
                    pkid: i.pkid,
                });
            }
        }
        for &(pkid, id) in &self.inbound_qos2 {
            each(Record::InboundAdded { session, pkid, id });
        }
        for &id in &self.seen {
            each(Record::Seen { session, id });
        }
    }

    fn offline_record(&self) -> Option<Record<'static>> {
        (!self.expires_at.is_none() || !self.will_at.is_none()).then_some(Record::SessionOffline {
            session: self.key,
            expires_at: self.expires_at,
            will_at: self.will_at,
        })
    }

    /// Bytes of the image's frames.
    fn image_len(&self) -> u64 {
        let mut len = 0;
        self.image(|r| len += r.frame_len() as u64);
        len
    }
}

/// A retained message: the topic's latest update, by version.
#[derive(Debug)]
pub struct Retained {
    pub topic: Box<str>,
    pub version: u64,
    pub msg: MsgId,
    born: Lsn,
    mark: u32,
}

/// Why a record cannot be applied. The state is unchanged when `apply` returns one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    UnknownSession(SessionKey),
    /// A new session for a client id that has one under another key.
    ClientHasSession {
        client_id: Box<str>,
        session: SessionKey,
    },
    /// A resume under a key that belongs to another client id.
    ClientMismatch(SessionKey),
    UnknownMessage(MsgId),
    MessageExists(MsgId),
    /// `Unqueued` for a message that is not at the front of the queue.
    NotQueueFront {
        expected: Option<MsgId>,
        found: MsgId,
    },
    PacketIdInUse(u16),
    UnknownPacketId(u16),
    /// `Released` for a QoS 1 delivery or one released already.
    NotReleasable(u16),
    InboundExists(u16),
    UnknownInbound(u16),
    UnknownSubscription(Box<str>),
    NoWill,
    /// Commits and snapshot ends frame the log; they are not changes of state.
    NotAChange,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::UnknownSession(k) => write!(f, "no session {}", k.0),
            ApplyError::ClientHasSession { client_id, session } => {
                write!(f, "client {client_id:?} has session {} already", session.0)
            }
            ApplyError::ClientMismatch(k) => write!(f, "session {} belongs to another client", k.0),
            ApplyError::UnknownMessage(m) => write!(f, "no message {}", m.0),
            ApplyError::MessageExists(m) => write!(f, "message {} stored twice", m.0),
            ApplyError::NotQueueFront { expected, found } => write!(
                f,
                "message {} is not at the front of the queue ({:?} is)",
                found.0,
                expected.map(|m| m.0)
            ),
            ApplyError::PacketIdInUse(p) => write!(f, "packet id {p} is in flight already"),
            ApplyError::UnknownPacketId(p) => write!(f, "packet id {p} is not in flight"),
            ApplyError::NotReleasable(p) => write!(f, "packet id {p} cannot be released"),
            ApplyError::InboundExists(p) => write!(f, "inbound packet id {p} waits already"),
            ApplyError::UnknownInbound(p) => write!(f, "inbound packet id {p} does not wait"),
            ApplyError::UnknownSubscription(s) => write!(f, "no subscription {s:?}"),
            ApplyError::NoWill => write!(f, "no will to clear"),
            ApplyError::NotAChange => write!(f, "a framing record where a change was expected"),
        }
    }
}

impl std::error::Error for ApplyError {}

/// The durable state of one shard.
#[derive(Default)]
pub struct State {
    pub(super) sessions: Slab<Session>,
    by_key: HashMap<SessionKey, usize>,
    by_client: HashMap<Box<str>, SessionKey>,
    pub(super) messages: HashMap<MsgId, StoredMessage>,
    /// Messages whose count fell to zero (or that were stored and not yet referenced),
    /// for [`State::sweep`].
    unreferenced: Vec<MsgId>,
    pub(super) retained: Slab<Retained>,
    retained_by_topic: HashMap<Box<str>, usize>,
    /// Which sessions have seen each QoS 2 message id (`Session::seen`).
    seen: HashMap<u64, Vec<SessionKey>>,
    next_key: u64,
    next_msg: u64,
    retain_version: u64,
    /// Bytes a snapshot of this state takes, less header and end (see
    /// [`State::live_bytes`]).
    live_bytes: u64,
    pub(super) snapshot: Option<SnapshotWriter>,
    snapshots_begun: u32,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("sessions", &self.sessions.len())
            .field("messages", &self.messages.len())
            .field("retained", &self.retained.len())
            .field("live_bytes", &self.live_bytes)
            .finish()
    }
}

fn len(r: Record<'_>) -> u64 {
    r.frame_len() as u64
}

fn message_len(id: MsgId, m: &StoredMessage) -> u64 {
    len(Record::MessageStored {
        id,
        message: m.data(),
    })
}

const RETAIN_LEN: u64 = (super::record::FRAME_HEAD + 1 + 8 + 8) as u64;

impl State {
    pub fn new() -> State {
        State::default()
    }

    /// A key for a new session: never one a live session holds.
    pub fn allocate_session_key(&mut self) -> SessionKey {
        self.next_key += 1;
        SessionKey(self.next_key)
    }

    /// An id for a new stored message: never one a live message holds.
    pub fn allocate_msg_id(&mut self) -> MsgId {
        self.next_msg += 1;
        MsgId(self.next_msg)
    }

    pub fn session(&self, key: SessionKey) -> Option<&Session> {
        self.by_key.get(&key).map(|&slot| &self.sessions[slot])
    }

    pub fn session_by_client(&self, client_id: &str) -> Option<&Session> {
        self.by_client.get(client_id).and_then(|&k| self.session(k))
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.iter().map(|(_, s)| s)
    }

    pub fn message(&self, id: MsgId) -> Option<&StoredMessage> {
        self.messages.get(&id)
    }

    pub fn messages_len(&self) -> usize {
        self.messages.len()
    }

    pub fn retained(&self) -> impl Iterator<Item = &Retained> {
        self.retained.iter().map(|(_, r)| r)
    }

    /// The highest retained-message version seen: the broker's retain clock goes on
    /// above it after a restart.
    pub fn retain_version(&self) -> u64 {
        self.retain_version
    }

    /// Bytes of the frames a snapshot of this state holds (after [`State::sweep`]): what
    /// compaction would keep of the log. Tracked record by record, not recomputed.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    /// Whether applying `rec` makes the state larger in a way a full disk must refuse:
    /// a new session, subscription, message, queued delivery, inbound QoS 2 id, will or
    /// retained message. Changes that settle what exists (acknowledgements, removals,
    /// a resumed session) are never refused.
    pub fn grows(&self, rec: &Record<'_>) -> bool {
        match rec {
            Record::SessionOpened { session, .. } => !self.by_key.contains_key(session),
            Record::SubAdded {
                session, filter, ..
            } => self
                .session(*session)
                .is_none_or(|s| !s.subscriptions.iter().any(|x| *x.filter == **filter)),
            Record::MessageStored { .. }
            | Record::Enqueued { .. }
            | Record::InboundAdded { .. }
            | Record::WillSet { .. }
            | Record::RetainSet { .. } => true,
            Record::Seen { session, id } => {
                self.session(*session).is_none_or(|s| !s.seen.contains(id))
            }
            _ => false,
        }
    }

    /// Applies one record. `lsn` is the record's position in the log (for a snapshot's
    /// records, the snapshot's base LSN). On error nothing has changed.
    pub fn apply(&mut self, lsn: Lsn, rec: &Record<'_>) -> Result<(), ApplyError> {
        match *rec {
            Record::SessionOpened {
                session,
                client_id,
                protocol,
                expiry_interval_s,
                opened_at_ms,
            } => {
                if let Some(&slot) = self.by_key.get(&session) {
                    if *self.sessions[slot].client_id != *client_id {
                        return Err(ApplyError::ClientMismatch(session));
                    }
                    self.preserve_session(slot);
                    let s = &mut self.sessions[slot];
                    let offline = s.offline_record().map_or(0, len);
                    s.protocol = protocol;
                    s.expiry_interval_s = expiry_interval_s;
                    s.opened_at_ms = opened_at_ms;
                    s.expires_at = Deadline::NONE;
                    s.will_at = Deadline::NONE;
                    self.live_bytes -= offline;
                    return Ok(());
                }
                if let Some(&other) = self.by_client.get(client_id) {
                    return Err(ApplyError::ClientHasSession {
                        client_id: client_id.into(),
                        session: other,
                    });
                }
                let slot = self.sessions.insert(Session {
                    key: session,
                    client_id: client_id.into(),
                    protocol,
                    expiry_interval_s,
                    opened_at_ms,
                    expires_at: Deadline::NONE,
                    will_at: Deadline::NONE,
                    subscriptions: Vec::new(),
                    will: None,
                    queue: VecDeque::new(),
                    inflight: VecDeque::new(),
                    inbound_qos2: Vec::new(),
                    seen: Vec::new(),
                    born: lsn,
                    mark: 0,
                });
                self.by_key.insert(session, slot);
                self.by_client.insert(client_id.into(), session);
                self.next_key = self.next_key.max(session.0);
                self.live_bytes += len(*rec);
            }
            Record::SessionOffline {
                session,
                expires_at,
                will_at,
            } => {
                let slot = self.slot(session)?;
                self.preserve_session(slot);
                let s = &mut self.sessions[slot];
                let before = s.offline_record().map_or(0, len);
                s.expires_at = expires_at;
                s.will_at = will_at;
                let after = s.offline_record().map_or(0, len);
                self.live_bytes = self.live_bytes - before + after;
            }
            Record::SessionEnded { session, .. } => {
                let slot = self.slot(session)?;
                self.preserve_session(slot);
                let s = self.sessions.remove(slot);
                for id in &s.seen {
                    self.unsee(*id, session);
                }
                self.live_bytes -= s.image_len();
                self.by_key.remove(&session);
                self.by_client.remove(&s.client_id);
                for d in s.queue.iter().chain(s.inflight.iter().map(|i| &i.delivery)) {
                    self.release(d.msg);
                }
            }
            Record::SubAdded {
                session,
                filter,
                options,
                sub_id,
            } => {
                let slot = self.slot(session)?;
                self.preserve_session(slot);
                let subs = &mut self.sessions[slot].subscriptions;
                match subs.iter_mut().find(|s| *s.filter == *filter) {
                    Some(s) => {
                        s.options = options;
                        s.sub_id = sub_id;
                    }
                    None => {
                        subs.push(Subscription {
                            filter: filter.into(),
                            options,
                            sub_id,
                        });
                        self.live_bytes += len(*rec);
                    }
                }
            }
            Record::SubRemoved { session, filter } => {
                let slot = self.slot(session)?;
                let Some(i) = self.sessions[slot]
                    .subscriptions
                    .iter()
                    .position(|s| *s.filter == *filter)
                else {
                    return Err(ApplyError::UnknownSubscription(filter.into()));
                };
                self.preserve_session(slot);
                let s = self.sessions[slot].subscriptions.remove(i);
                self.live_bytes -= len(Record::SubAdded {
                    session,
                    filter: &s.filter,
                    options: s.options,
                    sub_id: s.sub_id,
                });
            }
            Record::MessageStored { id, message } => {
                if self.messages.contains_key(&id) {
                    return Err(ApplyError::MessageExists(id));
                }
                self.messages.insert(
                    id,
                    StoredMessage {
                        qos: message.qos,
                        retain: message.retain,
                        expires_at: message.expires_at,
                        body: Body::new(&message.content),
                        refs: 0,
                        mark: 0,
                    },
                );
                self.unreferenced.push(id);
                self.next_msg = self.next_msg.max(id.0);
                self.live_bytes += len(*rec);
            }
            Record::Enqueued { session, delivery } => {
                let slot = self.slot(session)?;
                self.check_message(delivery.msg)?;
                self.preserve_session(slot);
                self.sessions[slot].queue.push_back(delivery);
                self.refer(delivery.msg);
                self.live_bytes += len(*rec);
            }
            Record::Unqueued { session, msg, .. } => {
                let slot = self.slot(session)?;
                let front = self.sessions[slot].queue.front().map(|d| d.msg);
                if front != Some(msg) {
                    return Err(ApplyError::NotQueueFront {
                        expected: front,
                        found: msg,
                    });
                }
                self.preserve_session(slot);
                if let Some(delivery) = self.sessions[slot].queue.pop_front() {
                    self.live_bytes -= len(Record::Enqueued { session, delivery });
                }
                self.release(msg);
            }
            Record::Sent {
                session,
                pkid,
                delivery,
            } => {
                let slot = self.slot(session)?;
                self.check_message(delivery.msg)?;
                if self.inflight_pos(slot, pkid).is_some() {
                    return Err(ApplyError::PacketIdInUse(pkid));
                }
                self.preserve_session(slot);
                self.sessions[slot].inflight.push_back(Inflight {
                    pkid,
                    released: false,
                    delivery,
                });
                self.refer(delivery.msg);
                self.live_bytes += len(*rec);
            }
            Record::Released { session, pkid } => {
                let slot = self.slot(session)?;
                let i = self
                    .inflight_pos(slot, pkid)
                    .ok_or(ApplyError::UnknownPacketId(pkid))?;
                let entry = &self.sessions[slot].inflight[i];
                if entry.released || entry.delivery.qos != QoS::ExactlyOnce {
                    return Err(ApplyError::NotReleasable(pkid));
                }
                self.preserve_session(slot);
                self.sessions[slot].inflight[i].released = true;
                self.live_bytes += len(*rec);
            }
            Record::InflightDone { session, pkid, .. } => {
                let slot = self.slot(session)?;
                let i = self
                    .inflight_pos(slot, pkid)
                    .ok_or(ApplyError::UnknownPacketId(pkid))?;
                self.preserve_session(slot);
                if let Some(done) = self.sessions[slot].inflight.remove(i) {
                    self.live_bytes -= len(Record::Sent {
                        session,
                        pkid,
                        delivery: done.delivery,
                    });
                    if done.released {
                        self.live_bytes -= len(Record::Released { session, pkid });
                    }
                    self.release(done.delivery.msg);
                }
            }
            Record::InboundAdded { session, pkid, .. } => {
                let slot = self.slot(session)?;
                if self.sessions[slot].inbound_qos2.iter().any(|i| i.0 == pkid) {
                    return Err(ApplyError::InboundExists(pkid));
                }
                let Record::InboundAdded { id, .. } = *rec else {
                    unreachable!()
                };
                self.preserve_session(slot);
                self.sessions[slot].inbound_qos2.push((pkid, id));
                self.live_bytes += len(*rec);
            }
            Record::InboundReleased { session, pkid } => {
                let slot = self.slot(session)?;
                let Some(i) = self.sessions[slot]
                    .inbound_qos2
                    .iter()
                    .position(|&(p, _)| p == pkid)
                else {
                    return Err(ApplyError::UnknownInbound(pkid));
                };
                self.preserve_session(slot);
                let (_, id) = self.sessions[slot].inbound_qos2.swap_remove(i);
                self.live_bytes -= len(Record::InboundAdded { session, pkid, id });
            }
            Record::WillSet { session, will } => {
                let slot = self.slot(session)?;
                self.preserve_session(slot);
                let s = &mut self.sessions[slot];
                let before = s.will.as_ref().map_or(0, |w| {
                    len(Record::WillSet {
                        session,
                        will: w.data(),
                    })
                });
                s.will = Some(Will {
                    delay_s: will.delay_s,
                    expiry_s: will.expiry_s,
                    qos: will.qos,
                    retain: will.retain,
                    body: Body::new(&will.content),
                });
                self.live_bytes = self.live_bytes - before + len(*rec);
            }
            Record::WillCleared { session } => {
                let slot = self.slot(session)?;
                if self.sessions[slot].will.is_none() {
                    return Err(ApplyError::NoWill);
                }
                self.preserve_session(slot);
                if let Some(w) = self.sessions[slot].will.take() {
                    self.live_bytes -= len(Record::WillSet {
                        session,
                        will: w.data(),
                    });
                }
            }
            Record::RetainSet { version, msg } => {
                let topic = self
                    .messages
                    .get(&msg)
                    .ok_or(ApplyError::UnknownMessage(msg))?
                    .body
                    .content()
                    .topic;
                self.retain_version = self.retain_version.max(version);
                match self.retained_by_topic.get(topic) {
                    Some(&slot) if self.retained[slot].version >= version => {}
                    Some(&slot) => {
                        self.preserve_retained(slot);
                        let r = &mut self.retained[slot];
                        let old = std::mem::replace(&mut r.msg, msg);
                        r.version = version;
                        self.refer(msg);
                        self.release(old);
                    }
                    None => {
                        let topic: Box<str> = topic.into();
                        let slot = self.retained.insert(Retained {
                            topic: topic.clone(),
                            version,
                            msg,
                            born: lsn,
                            mark: 0,
                        });
                        self.retained_by_topic.insert(topic, slot);
                        self.refer(msg);
                        self.live_bytes += RETAIN_LEN;
                    }
                }
            }
            Record::RetainCleared { version, topic } => {
                self.retain_version = self.retain_version.max(version);
                if let Some(&slot) = self.retained_by_topic.get(topic)
                    && self.retained[slot].version < version
                {
                    self.preserve_retained(slot);
                    let r = self.retained.remove(slot);
                    self.retained_by_topic.remove(topic);
                    self.release(r.msg);
                    self.live_bytes -= RETAIN_LEN;
                }
            }
            Record::Seen { session, id } => {
                let slot = self.slot(session)?;
                if !self.sessions[slot].seen.contains(&id) {
                    self.preserve_session(slot);
                    self.sessions[slot].seen.push(id);
                    self.seen.entry(id).or_default().push(session);
                    self.live_bytes += len(*rec);
                }
            }
            Record::SeenReleased { id } => {
                for session in self.seen.remove(&id).unwrap_or_default() {
                    if let Some(&slot) = self.by_key.get(&session) {
                        self.preserve_session(slot);
                        self.sessions[slot].seen.retain(|&x| x != id);
                        self.live_bytes -= len(Record::Seen { session, id });
                    }
                }
            }
            Record::Commit { .. } | Record::SnapshotEnd { .. } => {
                return Err(ApplyError::NotAChange);
            }
        }
        Ok(())
    }

    /// Frees the messages nothing refers to any more. Called between turns: within a
    /// turn a count may touch zero and rise again.
    pub fn sweep(&mut self) {
        for id in std::mem::take(&mut self.unreferenced) {
            if let Some(m) = self.messages.get(&id)
                && m.refs == 0
            {
                self.live_bytes -= message_len(id, m);
                self.messages.remove(&id);
            }
        }
    }

    fn slot(&self, key: SessionKey) -> Result<usize, ApplyError> {
        self.by_key
            .get(&key)
            .copied()
            .ok_or(ApplyError::UnknownSession(key))
    }

    fn check_message(&self, id: MsgId) -> Result<(), ApplyError> {
        match self.messages.contains_key(&id) {
            true => Ok(()),
            false => Err(ApplyError::UnknownMessage(id)),
        }
    }

    fn inflight_pos(&self, slot: usize, pkid: u16) -> Option<usize> {
        self.sessions[slot]
            .inflight
            .iter()
            .position(|i| i.pkid == pkid)
    }

    fn refer(&mut self, id: MsgId) {
        if let Some(m) = self.messages.get_mut(&id) {
            m.refs += 1;
        }
    }

    fn release(&mut self, id: MsgId) {
        if let Some(m) = self.messages.get_mut(&id) {
            m.refs -= 1;
            if m.refs == 0 {
                self.unreferenced.push(id);
            }
        }
    }

    /// Starts a snapshot of the state as it is now, `base` being the LSN of the last
    /// record applied. It is written by [`State::snapshot_step`] while records go on
    /// being applied: a session or retained topic that a record is about to change is
    /// written first, as it was (copy on write), so the snapshot is the state at `base`
    /// exactly, however long it takes.
    pub fn begin_snapshot(&mut self, shard: u32, seq: u64, base: Lsn) {
        self.snapshots_begun += 1;
        self.snapshot = Some(SnapshotWriter::new(shard, seq, base, self.snapshots_begun));
    }

    /// Whether any session here has seen QoS 2 message `id`.
    pub fn is_seen(&self, id: u64) -> bool {
        !self.seen.is_empty() && self.seen.contains_key(&id)
    }

    /// Forgets that `session` saw message `id` (it ended).
    fn unsee(&mut self, id: u64, session: SessionKey) {
        if let Some(keys) = self.seen.get_mut(&id) {
            keys.retain(|&k| k != session);
            if keys.is_empty() {
                self.seen.remove(&id);
            }
        }
    }

    pub fn snapshot_in_progress(&self) -> bool {
        self.snapshot.is_some()
    }

    /// Forgets the snapshot being written (its file could not be written).
    pub fn abort_snapshot(&mut self) {
        self.snapshot = None;
    }

    /// Writes sessions and retained messages not yet in the snapshot until about
    /// `budget` bytes are ready, and hands them out; the last chunk ends the snapshot.
    /// `None` when no snapshot is being written.
    pub fn snapshot_step(&mut self, budget: usize) -> Option<SnapshotChunk> {
        let w = self.snapshot.as_mut()?;
        while w.ready() < budget {
            match w.cursor {
                Cursor::Sessions(i) if i < self.sessions.capacity() => {
                    w.cursor = Cursor::Sessions(i + 1);
                    if let Some(s) = self.sessions.get_mut(i) {
                        write_session(w, s, &mut self.messages);
                    }
                }
                Cursor::Sessions(_) => w.cursor = Cursor::Retained(0),
                Cursor::Retained(i) if i < self.retained.capacity() => {
                    w.cursor = Cursor::Retained(i + 1);
                    if let Some(r) = self.retained.get_mut(i) {
                        write_retained(w, r, &mut self.messages);
                    }
                }
                Cursor::Retained(_) => {
                    w.finish();
                    break;
                }
                Cursor::Done => break,
            }
        }
        let chunk = w.take();
        if chunk.last {
            self.snapshot = None;
        }
        Some(chunk)
    }

    /// Copy on write: writes the session into the snapshot in progress before a record
    /// changes it, if the snapshot should hold it and does not yet.
    fn preserve_session(&mut self, slot: usize) {
        if let Some(w) = self.snapshot.as_mut() {
            write_session(w, &mut self.sessions[slot], &mut self.messages);
        }
    }

    fn preserve_retained(&mut self, slot: usize) {
        if let Some(w) = self.snapshot.as_mut() {
            write_retained(w, &mut self.retained[slot], &mut self.messages);
        }
    }

    /// The state as plain values, messages by content rather than id: what two states
    /// holding the same data agree on whatever their keys, ids and slots.
    pub fn view(&self) -> View {
        let message = |id: MsgId| {
            self.messages
                .get(&id)
                .map(MessageView::of)
                .unwrap_or_default()
        };
        let delivery = |d: &Delivery| DeliveryView {
            message: message(d.msg),
            qos: d.qos as u8,
            retain: d.retain,
            sub_ids: d.sub_ids.as_slice().to_vec(),
        };
        let sessions = self
            .sessions()
            .map(|s| {
                let mut subscriptions: Vec<_> = s
                    .subscriptions
                    .iter()
                    .map(|x| {
                        let options = x.options.to_byte(Version::V5).unwrap_or_default();
                        (x.filter.to_string(), options, x.sub_id)
                    })
                    .collect();
                subscriptions.sort();
                let mut inbound_qos2: Vec<u16> = s.inbound_qos2.iter().map(|i| i.0).collect();
                inbound_qos2.sort();
                let view = SessionView {
                    protocol: s.protocol.level(),
                    expiry_interval_s: s.expiry_interval_s,
                    opened_at_ms: s.opened_at_ms,
                    expires_at: s.expires_at.get(),
                    will_at: s.will_at.get(),
                    subscriptions,
                    will: s.will.as_ref().map(|w| WillView {
                        delay_s: w.delay_s,
                        expiry_s: w.expiry_s,
                        message: MessageView::of_parts(w.qos, w.retain, Deadline::NONE, &w.body),
                    }),
                    queue: s.queue.iter().map(delivery).collect(),
                    inflight: s
                        .inflight
                        .iter()
                        .map(|i| (i.pkid, i.released, delivery(&i.delivery)))
                        .collect(),
                    inbound_qos2,
                };
                (s.client_id.to_string(), view)
            })
            .collect();
        let retained = self
            .retained()
            .map(|r| (r.topic.to_string(), (r.version, message(r.msg))))
            .collect();
        View { sessions, retained }
    }
}

/// Writes `s` into the snapshot, messages first, unless the snapshot holds it already
/// or should not hold it (created after the snapshot's base).
fn write_session(
    w: &mut SnapshotWriter,
    s: &mut Session,
    messages: &mut HashMap<MsgId, StoredMessage>,
) {
    if s.born > w.base || s.mark == w.mark {
        return;
    }
    s.mark = w.mark;
    s.image(|rec| {
        if let Record::Enqueued { delivery, .. } | Record::Sent { delivery, .. } = rec {
            write_message(w, delivery.msg, messages);
        }
        w.push(&rec);
    });
}

fn write_retained(
    w: &mut SnapshotWriter,
    r: &mut Retained,
    messages: &mut HashMap<MsgId, StoredMessage>,
) {
    if r.born > w.base || r.mark == w.mark {
        return;
    }
    r.mark = w.mark;
    write_message(w, r.msg, messages);
    w.push(&Record::RetainSet {
        version: r.version,
        msg: r.msg,
    });
}

fn write_message(w: &mut SnapshotWriter, id: MsgId, messages: &mut HashMap<MsgId, StoredMessage>) {
    if let Some(m) = messages.get_mut(&id)
        && m.mark != w.mark
    {
        m.mark = w.mark;
        w.push(&Record::MessageStored {
            id,
            message: m.data(),
        });
    }
}

/// Merges the states of every old shard and deals them out to `shards` new ones: each
/// session to `session_home(client id)`, each retained topic to `retained_home(topic)`
/// (both taken modulo `shards`). Messages are copied to each new shard that refers to
/// them, once per shard.
///
/// Retained messages go to one shard, the topic's home, not everywhere: each topic's
/// updates are then in one log only, so that log's order alone says which is the latest
/// (a set or a clear), with no version comparison across logs and no tombstones kept for
/// cleared topics. The broker hands every shard all of them after recovery, as it does
/// with a retained message published on one shard.
///
/// A client id held by several old shards (a crash in the middle of a move) keeps the
/// session opened last. Returns the new states and the client ids dropped that way.
pub fn redistribute(
    old: &[State],
    shards: usize,
    session_home: &dyn Fn(&str) -> usize,
    retained_home: &dyn Fn(&str) -> usize,
) -> (Vec<State>, Vec<String>) {
    let shards = shards.max(1);
    let mut winner: HashMap<&str, (u64, usize)> = HashMap::new();
    let mut dropped = Vec::new();
    for (i, state) in old.iter().enumerate() {
        for s in state.sessions() {
            match winner.get(&*s.client_id) {
                Some(&(at, _)) if at >= s.opened_at_ms => dropped.push(s.client_id.to_string()),
                Some(_) => {
                    dropped.push(s.client_id.to_string());
                    winner.insert(&s.client_id, (s.opened_at_ms, i));
                }
                None => {
                    winner.insert(&s.client_id, (s.opened_at_ms, i));
                }
            }
        }
    }
    let mut new: Vec<State> = (0..shards).map(|_| State::new()).collect();
    // (new shard, old shard, old id) → id in the new shard.
    let mut copied: HashMap<(usize, usize, MsgId), MsgId> = HashMap::new();
    let mut copy = |new: &mut [State], to: usize, from: usize, id: MsgId| -> MsgId {
        *copied.entry((to, from, id)).or_insert_with(|| {
            let target = &mut new[to];
            let new_id = target.allocate_msg_id();
            if let Some(m) = old[from].messages.get(&id) {
                let rec = Record::MessageStored {
                    id: new_id,
                    message: m.data(),
                };
                // A fresh id in a state that did not have it: cannot fail.
                let _ = target.apply(Lsn::ZERO, &rec);
            }
            new_id
        })
    };
    for (i, state) in old.iter().enumerate() {
        for s in state.sessions() {
            if winner.get(&*s.client_id) != Some(&(s.opened_at_ms, i)) {
                continue;
            }
            let to = session_home(&s.client_id) % shards;
            let key = new[to].allocate_session_key();
            s.image(|rec| {
                let rec = match rec {
                    Record::Enqueued { delivery, .. } => Record::Enqueued {
                        session: key,
                        delivery: Delivery {
                            msg: copy(&mut new, to, i, delivery.msg),
                            ..delivery
                        },
                    },
                    Record::Sent { pkid, delivery, .. } => Record::Sent {
                        session: key,
                        pkid,
                        delivery: Delivery {
                            msg: copy(&mut new, to, i, delivery.msg),
                            ..delivery
                        },
                    },
                    other => with_session(other, key),
                };
                // An image applies to an empty session whatever its contents.
                let _ = new[to].apply(Lsn::ZERO, &rec);
            });
        }
        for r in state.retained() {
            let to = retained_home(&r.topic) % shards;
            let msg = copy(&mut new, to, i, r.msg);
            let _ = new[to].apply(
                Lsn::ZERO,
                &Record::RetainSet {
                    version: r.version,
                    msg,
                },
            );
        }
    }
    for s in &mut new {
        s.sweep();
    }
    (new, dropped)
}

/// `rec` about session `key` instead of its own.
fn with_session(rec: Record<'_>, key: SessionKey) -> Record<'_> {
    let session = key;
    match rec {
        Record::SessionOpened {
            client_id,
            protocol,
            expiry_interval_s,
            opened_at_ms,
            ..
        } => Record::SessionOpened {
            session,
            client_id,
            protocol,
            expiry_interval_s,
            opened_at_ms,
        },
        Record::SessionOffline {
            expires_at,
            will_at,
            ..
        } => Record::SessionOffline {
            session,
            expires_at,
            will_at,
        },
        Record::SubAdded {
            filter,
            options,
            sub_id,
            ..
        } => Record::SubAdded {
            session,
            filter,
            options,
            sub_id,
        },
        Record::WillSet { will, .. } => Record::WillSet { session, will },
        Record::Released { pkid, .. } => Record::Released { session, pkid },
        Record::InboundAdded { pkid, id, .. } => Record::InboundAdded { session, pkid, id },
        Record::Seen { id, .. } => Record::Seen { session, id },
        other => other,
    }
}

/// A state as plain values (see [`State::view`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub sessions: BTreeMap<String, SessionView>,
    /// Topic → (version, message).
    pub retained: BTreeMap<String, (u64, MessageView)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub protocol: u8,
    pub expiry_interval_s: u32,
    pub opened_at_ms: u64,
    pub expires_at: Option<u64>,
    pub will_at: Option<u64>,
    /// (filter, options byte, subscription id), sorted.
    pub subscriptions: Vec<(String, u8, u32)>,
    pub will: Option<WillView>,
    pub queue: Vec<DeliveryView>,
    /// (packet id, released, delivery), in the order sent.
    pub inflight: Vec<(u16, bool, DeliveryView)>,
    /// Sorted.
    pub inbound_qos2: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillView {
    pub delay_s: u32,
    pub expiry_s: Option<u32>,
    pub message: MessageView,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryView {
    pub message: MessageView,
    pub qos: u8,
    pub retain: bool,
    pub sub_ids: Vec<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageView {
    pub qos: u8,
    pub retain: bool,
    pub expires_at: Option<u64>,
    pub topic: String,
    pub props: Vec<u8>,
    pub payload: Vec<u8>,
}

impl MessageView {
    fn of(m: &StoredMessage) -> MessageView {
        MessageView::of_parts(m.qos, m.retain, m.expires_at, &m.body)
    }

    fn of_parts(qos: QoS, retain: bool, expires_at: Deadline, body: &Body) -> MessageView {
        let c = body.content();
        MessageView {
            qos: qos as u8,
            retain,
            expires_at: expires_at.get(),
            topic: c.topic.to_string(),
            props: c.props.to_vec(),
            payload: c.payload.to_vec(),
        }
    }
}
