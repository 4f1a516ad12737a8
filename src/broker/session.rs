//! MQTT session state: what the broker remembers about a client, within a connection and
//! — for persistent sessions — across connections.
//!
//! A [`Session`] is the subscriber the topic table points at, not the connection: when
//! a persistent session's client is away, deliveries to it are queued (QoS 1 and 2,
//! bounded, oldest dropped first) and resent when it returns. A session moves between
//! shards whole (it is `Send`) when its client reconnects to another shard.
//!
//! Every change to a session is one of a few events (subscribe, unsubscribe, message
//! queued, message in flight, acknowledged, session created/ended): for a persistent
//! session each is also a record of the shard's log (`durable`, `crate::store`), which
//! names the session by its `store_key` and a message by the `store_id` of its copy in
//! the log.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use ringmq_proto::mqtt::{QoS, SubscriptionOptions, Version};

use crate::broker::topics::NodeId;
use ringmq_shard::conn::ConnKey;

/// Names a session in its shard's session table: its slot and the slot's generation,
/// which tells it from an earlier session in the same slot. The generation is never 0,
/// so an `Option<SessionId>` is 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId {
    pub index: u32,
    pub gen_: NonZeroU32,
}

/// A client id, inline up to 22 bytes (generated ids, serial numbers, most device ids:
/// no allocation), longer ones on the heap; 24 bytes either way.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientId {
    Inline { len: u8, bytes: [u8; 22] },
    Heap(Box<str>),
}

impl ClientId {
    pub fn new(id: &str) -> ClientId {
        let mut bytes = [0u8; 22];
        match bytes.get_mut(..id.len()) {
            Some(dst) => {
                dst.copy_from_slice(id.as_bytes());
                ClientId::Inline {
                    len: id.len() as u8,
                    bytes,
                }
            }
            None => ClientId::Heap(id.into()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Always copied from a `&str` in `new`.
            ClientId::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            ClientId::Heap(s) => s,
        }
    }
}

impl std::ops::Deref for ClientId {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// A published message as the broker keeps it: topic, forwarded MQTT 5 properties and
/// payload in one allocation, shared by every queue and shard that holds it.
#[derive(Debug)]
pub struct Message {
    bytes: Box<[u8]>,
    topic_len: u32,
    props_len: u32,
    pub qos: QoS,
    pub retain: bool,
    /// When the message expires (MQTT 5 Message Expiry Interval).
    pub expires_at: Option<Instant>,
    /// The shard and session that published it (for No Local), when known.
    pub origin: Option<(usize, SessionId)>,
    /// In a cluster: which publish this is (see [`PubNumber`]).
    pub number: Option<PubNumber>,
}

/// One publish in a cluster: its node ([`crate::cluster::node_hash`]), the shard there,
/// and its number among that shard's publishes. Numbers increase in the order the shard
/// published, and every node routes one shard's messages in that order, so "the highest
/// number of a shard routed here" says which of its messages came before a moment. They
/// start at the wall clock in nanoseconds when the shard starts, so a restarted node's
/// numbers are higher than those of its earlier run (a shard publishes far fewer than a
/// message per nanosecond).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PubNumber {
    pub node: u32,
    pub shard: u16,
    pub n: u64,
}

impl Message {
    /// Builds a message. `props` is an MQTT 5 property block (without its length) holding
    /// only the properties forwarded to subscribers.
    pub fn new(
        topic: &str,
        props: &[u8],
        payload: &[u8],
        qos: QoS,
        retain: bool,
        expires_at: Option<Instant>,
        origin: Option<(usize, SessionId)>,
    ) -> Message {
        let mut bytes = Vec::with_capacity(topic.len() + props.len() + payload.len());
        bytes.extend_from_slice(topic.as_bytes());
        bytes.extend_from_slice(props);
        bytes.extend_from_slice(payload);
        Message {
            bytes: bytes.into_boxed_slice(),
            topic_len: topic.len() as u32,
            props_len: props.len() as u32,
            qos,
            retain,
            expires_at,
            origin,
            number: None,
        }
    }

    /// A copy of this message numbered `n`.
    pub fn numbered(&self, n: PubNumber) -> Message {
        Message {
            bytes: self.bytes.clone(),
            number: Some(n),
            ..*self
        }
    }

    pub fn topic(&self) -> &str {
        // The first `topic_len` bytes were copied from a `&str` in `new`.
        std::str::from_utf8(&self.bytes[..self.topic_len as usize]).unwrap_or_default()
    }

    pub fn props(&self) -> &[u8] {
        let start = self.topic_len as usize;
        &self.bytes[start..start + self.props_len as usize]
    }

    pub fn payload(&self) -> &[u8] {
        &self.bytes[(self.topic_len + self.props_len) as usize..]
    }

    /// Bytes of topic, properties and payload together.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Seconds left before expiry (at least 1 while not expired), or `None` if it never
    /// expires; `Some(0)` once expired.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let at = self.expires_at?;
        if at <= now {
            return Some(0);
        }
        Some((at - now).as_secs_f64().ceil().min(u32::MAX as f64) as u32)
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Subscription identifiers to attach to one delivery (MQTT 5; usually none or one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubIds {
    len: u8,
    ids: [u32; 4],
}

impl SubIds {
    pub fn one(id: u32) -> SubIds {
        let mut s = SubIds::default();
        s.push(id);
        s
    }

    /// Adds an id (0 means none); more than four overlapping identifiers keep the first four.
    pub fn push(&mut self, id: u32) {
        if id != 0 && (self.len as usize) < self.ids.len() && !self.as_slice().contains(&id) {
            self.ids[self.len as usize] = id;
            self.len += 1;
        }
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.ids[..self.len as usize]
    }
}

/// A delivery waiting for the client: offline, or past its in-flight window.
#[derive(Debug, Clone)]
pub struct Queued {
    pub msg: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: SubIds,
    /// The message's id in this shard's log (0: not stored there).
    pub store_id: u64,
}

/// Where an outgoing QoS 1/2 delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// QoS 2: PUBREL sent, waiting for PUBCOMP.
    Released,
    /// Logged (a persistent session's) while its client was on connection `conn`, not
    /// written yet: it goes out once its record is durable (see `durable`), or with the
    /// resend of the next connection.
    Logged(ConnKey),
}

/// An outgoing QoS 1/2 delivery that the client has not finished acknowledging.
#[derive(Debug, Clone)]
pub struct Inflight {
    pub pkid: u16,
    pub state: OutState,
    pub delivery: Queued,
}

/// One subscription spelled out: how a session's subscriptions travel to another shard
/// (whose topic table numbers its nodes differently).
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The filter as the client sent it (`$share/...` included).
    pub filter: Box<str>,
    pub opts: SubscriptionOptions,
    pub sub_id: u32,
}

/// One subscription of a session, as a reference into its shard's topic table: the
/// filter is the node's path (`Trie::path_of`), the options and identifier are in the
/// node's entry for the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRef {
    pub node: NodeId,
    /// The whole filter of a shared subscription (`$share/{group}/{filter}`): the node
    /// may hold several groups. `None` for a plain subscription.
    pub share: Option<Arc<str>>,
}

impl std::hash::Hash for SubRef {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        SubKey {
            node: self.node,
            share: self.share.as_deref(),
        }
        .hash(h);
    }
}

/// A `SubRef` looked up by a borrowed group name (no `Arc` made for the lookup).
#[derive(Hash)]
struct SubKey<'a> {
    node: NodeId,
    share: Option<&'a str>,
}

impl hashbrown::Equivalent<SubRef> for SubKey<'_> {
    fn equivalent(&self, r: &SubRef) -> bool {
        self.node == r.node && self.share == r.share.as_deref()
    }
}

/// A will message, published when the connection ends without a DISCONNECT.
#[derive(Debug)]
pub struct WillMsg {
    /// The message, without an expiry time yet: its Message Expiry Interval counts from
    /// when it is published, not from CONNECT (MQTT 5 §3.1.3.2.4).
    pub msg: Message,
    pub expiry_s: Option<u32>,
    /// MQTT 5 Will Delay Interval, seconds.
    pub delay_s: u32,
}

impl WillMsg {
    /// The message to publish now, its expiry counted from `now`.
    pub fn into_message(self, now: Instant) -> Arc<Message> {
        let mut msg = self.msg;
        msg.expires_at = self
            .expiry_s
            .map(|s| now + std::time::Duration::from_secs(s as u64));
        Arc::new(msg)
    }
}

/// What the shard that now holds a session handed over from another shard keeps while
/// the old shard still forwards what it receives for the session (see
/// `broker::connect`): the messages delivered meanwhile, so that one arriving both
/// directly and forwarded is delivered once.
#[derive(Debug)]
pub struct Arrival {
    /// Shards whose `FenceMark` has come: everything they sent here directly before
    /// their fence has arrived.
    pub marked: u128,
    /// The old shard removed its forwarding stub: nothing more is forwarded.
    pub stub_gone: bool,
    /// Messages delivered since the handover (most recent last), at most
    /// [`Arrival::MAX_SEEN`].
    pub seen: VecDeque<Arc<Message>>,
}

impl Arrival {
    /// Messages remembered for deduplication; the window lasts a few mesh round trips.
    pub const MAX_SEEN: usize = 4096;

    /// Whether `msg` was delivered already; remembers it otherwise. Returns also whether
    /// an older message had to be forgotten to make room.
    pub fn seen_before(&mut self, msg: &Arc<Message>) -> (bool, bool) {
        if self.seen.iter().any(|m| Arc::ptr_eq(m, msg)) {
            return (true, false);
        }
        let full = self.seen.len() >= Self::MAX_SEEN;
        if full {
            self.seen.pop_front();
        }
        self.seen.push_back(msg.clone());
        (false, full)
    }
}

/// An MQTT session.
///
/// A shard may hold a million of them, most of them clean sessions of idle clients, so
/// what such a session uses is inline and everything else is in [`SessionExtra`], made on
/// first use: an idle clean session never has anything in flight or queued, no will
/// (or an idle one), and never moves.
#[derive(Debug)]
pub struct Session {
    pub client_id: ClientId,
    /// The generation of the slot holding the session in its shard's table (see
    /// [`SessionId`]), set when the session is put there.
    pub gen_: NonZeroU32,
    /// The claim under which the client id's home shard registered this session; its
    /// release names it, so a late release cannot unregister a newer claim.
    pub epoch: u64,
    /// The connection serving the session now, if the client is connected.
    pub conn: Option<ConnKey>,
    /// Seconds the session outlives its connection (3.1.1 clean session = 0 → 0;
    /// clean session = 1 → forever, `u32::MAX`).
    pub expiry_interval: u32,
    /// The session's key in this shard's log (0: not logged, a clean session or
    /// durability off).
    pub store_key: u64,
    /// How many QoS 1/2 deliveries may be in flight to the connected client.
    pub send_window: u16,
    pub version: Version,
    /// Its subscriptions count as durable interest (see `interest`): a logged session,
    /// or the stub left behind by one that moved.
    pub durable: bool,
    /// The node of one plain subscription, inline: most sessions hold exactly one (a
    /// topic per client). The others are in `SessionExtra::more_subs`. The root (node 0,
    /// the empty filter) never holds a subscription, so 0 can mean none.
    first_sub: Option<NonZeroU32>,
    extra: Option<Box<SessionExtra>>,
}

/// What a session needs only once it has something in flight, queued or waiting, a
/// will, or has moved between shards.
#[derive(Debug, Default)]
pub struct SessionExtra {
    /// When a disconnected session ends (shard clock, ms).
    pub expires_at_ms: Option<u64>,
    pub inflight: VecDeque<Inflight>,
    pub queue: VecDeque<Queued>,
    /// QoS 2 packet ids received and answered with PUBREC, waiting for PUBREL; a
    /// PUBLISH with one of these ids is a duplicate and is not delivered again. With
    /// each, the id its message got in a persistent session (0: none; see `durable`).
    /// A hash table: every QoS 2 PUBLISH looks its id up, and a client may hold up to
    /// `max_inflight` of them.
    pub inbound_qos2: hashbrown::HashMap<u16, u64>,
    next_pkid: u16,
    pub will: Option<WillMsg>,
    /// A delayed will waits for this time (shard clock, ms).
    pub will_at_ms: Option<u64>,
    /// This entry is a forwarding stub: the session moved to that shard, and what still
    /// reaches it here goes after it until every shard has fenced (`fenced`).
    pub moved_to: Option<usize>,
    /// This entry is a forwarding stub of a session that moved to that node of the
    /// cluster: what reaches it goes after it until the stub ends
    /// (`cluster::STUB_GRACE`).
    pub moved_to_node: Option<Arc<str>>,
    /// The session arrived from another node, whose stub may still forward to it what
    /// this node also sends it directly.
    pub from_node: Option<Box<super::node_arrival::NodeArrival>>,
    pub fenced: u128,
    /// The session arrived from another shard that may still forward to it.
    pub arrival: Option<Box<Arrival>>,
    /// Subscriptions beyond `Session::first_sub`, found by node and group in one step
    /// (a session may hold `max_subscriptions` of them).
    more_subs: hashbrown::HashSet<SubRef>,
    /// The cost of `more_subs` (`routing::subscription_cost`); the inline first one's is
    /// worked out from the topic table when needed.
    pub sub_bytes: usize,
}

impl SessionExtra {
    /// A packet id not in flight (1..=65535). The window is far below 65,535, so the
    /// search ends quickly.
    pub fn next_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.wrapping_add(1);
            if self.next_pkid == 0 {
                self.next_pkid = 1;
            }
            let id = self.next_pkid;
            if !self.inflight.iter().any(|i| i.pkid == id) {
                return id;
            }
        }
    }

    /// Queues a delivery; past `max` the oldest is dropped (and handed to `dropped`).
    /// Returns whether one was dropped.
    pub fn enqueue(&mut self, q: Queued, max: usize, mut dropped: impl FnMut(Queued)) -> bool {
        let mut any = false;
        while self.queue.len() >= max.max(1) {
            if let Some(old) = self.queue.pop_front() {
                dropped(old);
            }
            any = true;
        }
        self.queue.push_back(q);
        any
    }

    /// Position of the in-flight delivery with this packet id.
    pub fn inflight_pos(&self, pkid: u16) -> Option<usize> {
        // Acknowledgements mostly come in order: the front is the usual hit.
        self.inflight.iter().position(|i| i.pkid == pkid)
    }
}

/// A session on its way to another shard, its subscriptions spelled out.
#[derive(Debug)]
pub struct MovingSession {
    pub session: Session,
    pub subs: Vec<Subscription>,
    /// Ids of QoS 2 messages the session got and their publishers have not released,
    /// as its old shard's log says (see `durable`).
    pub seen: Vec<u64>,
    /// When the session was last opened, as its old shard's log says (0: not logged
    /// there): the new shard's open must be later, so that of two logs holding it after
    /// a crash, the new one's wins.
    pub opened_at_ms: u64,
}

impl Session {
    pub fn new(client_id: &str, version: Version) -> Session {
        Session {
            client_id: ClientId::new(client_id),
            gen_: NonZeroU32::MIN,
            epoch: 0,
            conn: None,
            expiry_interval: 0,
            store_key: 0,
            send_window: u16::MAX,
            version,
            durable: false,
            first_sub: None,
            extra: None,
        }
    }

    /// Whether the session outlives a connection.
    pub fn is_persistent(&self) -> bool {
        self.expiry_interval > 0
    }

    /// The state beyond an idle session's, if the session has any.
    pub fn extra(&self) -> Option<&SessionExtra> {
        self.extra.as_deref()
    }

    pub fn extra_opt_mut(&mut self) -> Option<&mut SessionExtra> {
        self.extra.as_deref_mut()
    }

    /// The state beyond an idle session's, made now if the session has none yet.
    pub fn extra_mut(&mut self) -> &mut SessionExtra {
        self.extra.get_or_insert_default()
    }

    /// The shard this entry forwards to, if it is a stub left behind by a move.
    pub fn moved_to(&self) -> Option<usize> {
        self.extra().and_then(|e| e.moved_to)
    }

    /// Takes the will out, delayed or not.
    pub fn take_will(&mut self) -> Option<WillMsg> {
        let e = self.extra_opt_mut()?;
        e.will_at_ms = None;
        e.will.take()
    }

    /// Whether another QoS 1/2 delivery may be sent now.
    pub fn window_open(&self) -> bool {
        self.extra().map_or(0, |e| e.inflight.len()) < self.send_window as usize
    }

    /// Deliveries waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.extra().map_or(0, |e| e.queue.len())
    }

    /// How many subscriptions the session holds.
    pub fn subs_len(&self) -> usize {
        self.first_sub.is_some() as usize + self.extra().map_or(0, |e| e.more_subs.len())
    }

    /// The session's subscriptions.
    pub fn subs(&self) -> impl Iterator<Item = SubRef> + '_ {
        let first = self.first_sub.map(|n| SubRef {
            node: n.get(),
            share: None,
        });
        let more = self
            .extra()
            .into_iter()
            .flat_map(|e| e.more_subs.iter().cloned());
        first.into_iter().chain(more)
    }

    /// Whether the session is subscribed at `node` (in group `share`, for a shared one).
    pub fn has_sub(&self, node: NodeId, share: Option<&str>) -> bool {
        let first = share.is_none() && self.first_sub.is_some_and(|n| n.get() == node);
        first
            || self
                .extra()
                .is_some_and(|e| e.more_subs.contains(&SubKey { node, share }))
    }

    /// The node of the plain subscription kept inline, if there is one.
    pub fn first_plain_sub(&self) -> Option<NodeId> {
        self.first_sub.map(NonZeroU32::get)
    }

    /// Adds a subscription that costs `cost` (see `SessionExtra::sub_bytes`).
    pub fn add_sub(&mut self, sub: SubRef, cost: usize) {
        if self.first_sub.is_none()
            && sub.share.is_none()
            && let Some(n) = NonZeroU32::new(sub.node)
        {
            self.first_sub = Some(n);
            return;
        }
        let e = self.extra_mut();
        if e.more_subs.insert(sub) {
            e.sub_bytes += cost;
        }
    }

    /// Removes the subscription at `node` (in group `share`), which cost `cost`; whether
    /// there was one.
    pub fn remove_sub(&mut self, node: NodeId, share: Option<&str>, cost: usize) -> bool {
        if share.is_none() && self.first_sub.is_some_and(|n| n.get() == node) {
            self.first_sub = None;
            return true;
        }
        let Some(e) = self.extra_opt_mut() else {
            return false;
        };
        if !e.more_subs.remove(&SubKey { node, share }) {
            return false;
        }
        e.sub_bytes = e.sub_bytes.saturating_sub(cost);
        true
    }

    /// Takes every subscription out of the session.
    pub fn take_subs(&mut self) -> Vec<SubRef> {
        let subs = self.subs().collect();
        self.first_sub = None;
        if let Some(e) = self.extra_opt_mut() {
            e.more_subs = Default::default();
            e.sub_bytes = 0;
        }
        subs
    }

    /// Puts a stub in this session's place — the same slot and id, the same
    /// subscriptions (which stay in the topic table, with their durable interest, until
    /// the stub goes), marked by `mark` with where the session went — and returns the
    /// session, no longer counted as durable here.
    pub fn replace_with_stub(&mut self, mark: impl FnOnce(&mut SessionExtra)) -> Session {
        let mut stub = Session::new(&self.client_id, self.version);
        stub.gen_ = self.gen_;
        self.copy_subs_to(&mut stub);
        mark(stub.extra_mut());
        stub.durable = self.durable;
        let mut session = std::mem::replace(self, stub);
        session.durable = false;
        session
    }

    /// The ids of the QoS 2 messages this session received and its client has not
    /// released yet, as its shard's log knows them (none unless it is logged there).
    pub fn unreleased_ids(&self) -> Vec<u64> {
        if self.store_key == 0 {
            return Vec::new();
        }
        self.extra()
            .map(|e| {
                e.inbound_qos2
                    .values()
                    .copied()
                    .filter(|&id| id != 0)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Gives `other` the same subscriptions (on the same shard).
    pub fn copy_subs_to(&self, other: &mut Session) {
        other.first_sub = self.first_sub;
        if let Some(e) = self.extra()
            && !e.more_subs.is_empty()
        {
            let o = other.extra_mut();
            o.more_subs = e.more_subs.clone();
            o.sub_bytes = e.sub_bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_parts_round_trip() {
        let m = Message::new("a/b", &[1, 2], b"hello", QoS::AtLeastOnce, true, None, None);
        assert_eq!(m.topic(), "a/b");
        assert_eq!(m.props(), &[1, 2]);
        assert_eq!(m.payload(), b"hello");
    }

    /// A QoS 1 delivery of `payload` on topic `t`.
    fn queued(payload: &[u8]) -> Queued {
        let msg = Message::new("t", &[], payload, QoS::AtLeastOnce, false, None, None);
        Queued {
            msg: Arc::new(msg),
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: SubIds::default(),
            store_id: 0,
        }
    }

    #[test]
    fn pkids_skip_zero_and_ids_in_flight() {
        let mut s = SessionExtra {
            next_pkid: u16::MAX - 1,
            ..Default::default()
        };
        s.inflight.push_back(Inflight {
            pkid: 1,
            state: OutState::Published,
            delivery: queued(b""),
        });
        assert_eq!(s.next_pkid(), u16::MAX);
        assert_eq!(s.next_pkid(), 2, "0 is not an id and 1 is in flight");
    }

    #[test]
    fn queue_drops_oldest_at_its_bound() {
        let mut s = SessionExtra::default();
        for i in 0..5u8 {
            let dropped = s.enqueue(queued(&[i]), 3, |_| {});
            assert_eq!(dropped, i >= 3);
        }
        let kept: Vec<u8> = s.queue.iter().map(|q| q.msg.payload()[0]).collect();
        assert_eq!(kept, vec![2, 3, 4]);
    }

    #[test]
    fn one_plain_subscription_is_inline() {
        let mut s = Session::new("c", Version::V5);
        let share: Arc<str> = "$share/g/a".into();
        s.add_sub(
            SubRef {
                node: 7,
                share: None,
            },
            100,
        );
        assert!(
            s.extra().is_none(),
            "no allocation for one plain subscription"
        );
        s.add_sub(
            SubRef {
                node: 7,
                share: Some(share.clone()),
            },
            20,
        );
        s.add_sub(
            SubRef {
                node: 9,
                share: None,
            },
            30,
        );
        assert_eq!(s.extra().map(|e| e.sub_bytes), Some(50));
        assert_eq!(s.subs_len(), 3);
        assert!(s.has_sub(7, None) && s.has_sub(7, Some("$share/g/a")));
        assert!(!s.has_sub(9, Some("$share/g/a")) && !s.has_sub(8, None));
        let mut stub = Session::new("c", Version::V5);
        s.copy_subs_to(&mut stub);
        assert_eq!(
            stub.subs().collect::<Vec<_>>(),
            s.subs().collect::<Vec<_>>()
        );
        assert!(s.remove_sub(7, None, 100));
        assert!(!s.remove_sub(7, None, 100));
        assert!(s.remove_sub(7, Some("$share/g/a"), 20));
        assert_eq!(s.subs().map(|r| r.node).collect::<Vec<_>>(), vec![9]);
        assert!(s.remove_sub(9, None, 30));
        assert_eq!(s.extra().map(|e| e.sub_bytes), Some(0));
        assert_eq!(s.subs_len(), 0);
        assert_eq!(stub.take_subs().len(), 3);
        assert_eq!(stub.subs_len(), 0);
    }

    #[test]
    fn client_ids_up_to_22_bytes_are_inline() {
        assert_eq!(std::mem::size_of::<ClientId>(), 24);
        for id in ["", "a", "swarm-12345-14999", &"x".repeat(22), "ünïcode-id"] {
            let c = ClientId::new(id);
            assert!(matches!(c, ClientId::Inline { .. }), "{id}");
            assert_eq!(&*c, id);
        }
        let long = "y".repeat(23);
        let c = ClientId::new(&long);
        assert!(matches!(c, ClientId::Heap(_)));
        assert_eq!(&*c, long);
        assert_ne!(ClientId::new("ab"), ClientId::new("ab\0"));
    }

    #[test]
    fn sub_ids_dedupe_and_cap() {
        let mut s = SubIds::default();
        for id in [0, 5, 5, 6, 7, 8, 9] {
            s.push(id);
        }
        assert_eq!(s.as_slice(), &[5, 6, 7, 8]);
    }
}
