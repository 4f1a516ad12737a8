//! Durability: the broker's side of its shard's write-ahead log (`crate::store`).
//!
//! Every change of durable state is a record appended to the shard's log as it happens
//! (`Broker::log`): persistent sessions created, resumed, gone offline and ended, their
//! subscriptions, queued and in-flight deliveries, inbound QoS 2 packet ids, delayed
//! wills, and retained messages (at the topic's home shard). A message that fans out to
//! many persistent sessions is stored once per shard and referred to by id.
//!
//! What promises durability waits for it (`Waiters`): the PUBACK or PUBREC of a QoS 1/2
//! PUBLISH whose delivery logged something (here or on another shard), a PUBCOMP after
//! its PUBREL was logged, a PUBREL after the PUBREC it answers was logged, a SUBACK of a
//! persistent session, and a QoS 2 delivery to a persistent session (its packet id must
//! be on disk before the client can see it, or a restart would send it again under
//! another id). Each waits for the LSN of the last record appended when it was made,
//! and releases in order once the log says that LSN is durable (after the sync in
//! `fsync` mode, the write in `write` mode). A QoS 0 or clean-session fan-out logs
//! nothing and waits for nothing.
//!
//! Across shards: a publisher's shard sends a message with a *ticket* to every shard
//! whose durable interest matches (and to the retained topic's home shard, and with
//! shared and forwarded deliveries); each answers `Msg::Durable { ticket }` once
//! everything it had logged when it handled the message is durable, and the publisher's
//! acknowledgement waits for all of them. A shard that could not log (its disk is full)
//! answers `refused`, and the publisher is refused (0x97 / disconnect).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringmq_proto::mqtt::{Packet, Properties, Property, PubResp, QoS, ReasonCode, Version};
use ringmq_shard::conn::{CloseReason, ConnKey};
use slab::Slab;

use super::delivery::Src;
use super::interest::PendingSuback;
use super::msg::Ticket;
use super::session::{Inflight, Message, OutState, Queued, SessionId};
use super::{Broker, Io, Msg};
use crate::store::record::{
    Content, Deadline, Delivery, Done, EndReason, MessageData, SubIdList, Unqueue,
};
use crate::store::ring_driver::{Completed, JobDone, RingDriver};
use crate::store::{AppendError, Lsn, MsgId, Record, SessionKey};

/// An acknowledgement to a client that waits for durability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ack {
    Puback(u16),
    Pubrec(u16),
    Pubrel(u16),
    Pubcomp(u16),
    /// A PINGRESP keeps its place behind the connection's acknowledgements, so that a
    /// client may use PINGREQ to learn that everything it sent before was acknowledged.
    Pingresp,
}

/// The reason code of an acknowledgement decided when it is made rather than by the log
/// (a refusal such as 0x87 Not authorized or 0x90 Topic Name invalid, or 0x92 for an
/// unknown packet id), with the Reason String MQTT 5 gets when the client takes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Reason {
    pub code: ReasonCode,
    pub why: Option<&'static str>,
}

/// What happens once the records it depends on are durable.
pub(super) enum Then {
    /// An acknowledgement to connection `conn`, with its reason code when that was
    /// decided as it was made.
    Ack {
        conn: ConnKey,
        ack: Ack,
        reason: Option<Reason>,
    },
    /// A SUBACK (and the retained messages after it).
    Suback(Box<PendingSuback>),
    /// An UNSUBACK to connection `conn` for `pkid`, with MQTT 5's reason codes (none
    /// for 3.1.1).
    Unsuback {
        conn: ConnKey,
        pkid: u16,
        codes: Box<[u8]>,
    },
    /// A QoS 1/2 delivery of session `sid` in flight under `pkid`, written only now (on
    /// connection `conn`).
    Deliver {
        conn: ConnKey,
        sid: SessionId,
        pkid: u16,
    },
    /// `Msg::Durable` to shard `to`.
    Answer { to: usize, ticket: Ticket },
    /// `Msg::MovedDurable` to a moved session's old shard.
    MovedDurable { to: usize, key: u64 },
    /// What a session that connected (on `conn`) had in flight and queued goes out.
    Resend { conn: ConnKey, sid: SessionId },
    /// Nothing (an entry that only collected answers).
    Nothing,
    /// Not decided yet: an entry opened while a message is routed.
    Unset,
}

impl Then {
    /// The connection whose packets must keep their order with this one's.
    fn conn(&self) -> Option<ConnKey> {
        match self {
            Then::Ack { conn, .. }
            | Then::Unsuback { conn, .. }
            | Then::Deliver { conn, .. }
            | Then::Resend { conn, .. } => Some(*conn),
            Then::Suback(p) => Some(p.conn),
            _ => None,
        }
    }

    /// Whether it is an answer to a client (else a delivery or a notice).
    fn is_ack(&self) -> bool {
        matches!(
            self,
            Then::Ack { .. } | Then::Suback(_) | Then::Unsuback { .. }
        )
    }
}

struct Waiter {
    lsn: Lsn,
    /// Answers from other shards still to come.
    waits: u32,
    refused: bool,
    /// What it waits for in this shard's log is durable.
    local: bool,
    then: Then,
}

/// What waits for durability. Every entry waits for the log (in `fifo`, in the order
/// made, which is the order of the LSNs it waits for) and perhaps for other shards'
/// answers; one with a connection also waits behind the earlier ones of its connection
/// (MQTT keeps a connection's acknowledgements, and a subscription's deliveries, in
/// order). Each step is O(1) per entry.
#[derive(Default)]
pub(super) struct Waiters {
    entries: Slab<Waiter>,
    /// Entries whose LSN is not durable yet (or was not when last looked at).
    fifo: VecDeque<u32>,
    /// Per connection: its acknowledgements, and its deliveries, in order.
    acks: HashMap<ConnKey, VecDeque<u32>>,
    sends: HashMap<ConnKey, VecDeque<u32>>,
}

impl Waiters {
    fn queue(&mut self, then: &Then) -> Option<&mut VecDeque<u32>> {
        let conn = then.conn()?;
        let map = if then.is_ack() {
            &mut self.acks
        } else {
            &mut self.sends
        };
        Some(map.entry(conn).or_default())
    }

    fn acks_waiting(&self, conn: ConnKey) -> bool {
        !self.acks.is_empty() && self.acks.contains_key(&conn)
    }

    fn sends_waiting(&self, conn: ConnKey) -> bool {
        !self.sends.is_empty() && self.sends.contains_key(&conn)
    }

    /// Entries parked and not done.
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Moves the entries of `conn`'s queue (`ack`: its acknowledgements) that are ready,
    /// from the front, into `ready`.
    fn drain_conn(&mut self, conn: ConnKey, ack: bool, ready: &mut Vec<Waiter>) {
        let map = if ack { &mut self.acks } else { &mut self.sends };
        let Some(q) = map.get_mut(&conn) else {
            return;
        };
        while let Some(&id) = q.front() {
            let e = &self.entries[id as usize];
            if !e.local || e.waits > 0 {
                break;
            }
            q.pop_front();
            ready.push(self.entries.remove(id as usize));
        }
        if q.is_empty() {
            map.remove(&conn);
        }
    }

    /// Entry `id` may be ready now: done with its log, and with its answers.
    fn settle(&mut self, id: u32, ready: &mut Vec<Waiter>) {
        let e = &self.entries[id as usize];
        if !e.local || e.waits > 0 {
            return;
        }
        match e.then.conn() {
            Some(c) => {
                let ack = e.then.is_ack();
                self.drain_conn(c, ack, ready);
            }
            None => ready.push(self.entries.remove(id as usize)),
        }
    }
}

/// The broker's durability: the shard's log driver (none with `--durability none`) and
/// what waits for it.
pub(super) struct Durable {
    pub driver: Option<RingDriver>,
    pub waiters: Waiters,
    /// This process's offset from the shard clock to the wall clock, so deadlines can be
    /// written as wall-clock times (what they mean after a restart).
    wall_origin_ms: u64,
}

/// QoS 2 message ids a session remembers having got (see `Broker::see`).
const MAX_SEEN: usize = 1024;

/// Milliseconds since the Unix epoch.
pub(super) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Durable {
    pub fn new(driver: Option<RingDriver>) -> Durable {
        Durable {
            driver,
            waiters: Waiters::default(),
            // The shard clock starts at about 0 when the shard does.
            wall_origin_ms: wall_ms(),
        }
    }

    /// Sets the offset between the shard clock (`now_ms`) and the wall clock.
    pub fn set_clock(&mut self, now_ms: u64) {
        self.wall_origin_ms = wall_ms().saturating_sub(now_ms);
    }

    /// A deadline at shard time `at_ms`, as a wall-clock deadline.
    pub fn deadline(&self, at_ms: Option<u64>) -> Deadline {
        at_ms.map_or(Deadline::NONE, |at| {
            Deadline::at_ms(self.wall_origin_ms + at)
        })
    }

    fn durable_lsn(&self) -> Lsn {
        self.driver
            .as_ref()
            .map_or(Lsn(u64::MAX), |d| d.store().durable_lsn())
    }

    fn last_lsn(&self) -> Lsn {
        self.driver
            .as_ref()
            .map_or(Lsn::ZERO, |d| d.store().last_lsn())
    }

    pub fn is_idle(&self) -> bool {
        self.driver.as_ref().is_none_or(|d| d.is_idle())
    }
}

/// An `Instant` as a wall-clock deadline.
fn instant_deadline(at: Option<Instant>) -> Deadline {
    match at {
        None => Deadline::NONE,
        Some(at) => {
            let now = Instant::now();
            let wall = wall_ms();
            let ms = if at >= now {
                wall + (at - now).as_millis() as u64
            } else {
                wall.saturating_sub((now - at).as_millis() as u64)
            };
            Deadline::at_ms(ms)
        }
    }
}

/// A wall-clock deadline as an `Instant`.
pub(super) fn deadline_instant(d: Deadline) -> Option<Instant> {
    let at = d.get()?;
    let now = Instant::now();
    let wall = wall_ms();
    Some(if at >= wall {
        now + Duration::from_millis(at - wall)
    } else {
        now.checked_sub(Duration::from_millis(wall - at))
            .unwrap_or(now)
    })
}

fn delivery(q: &Queued) -> Delivery {
    delivery_as(q, MsgId(q.store_id))
}

/// The record of delivery `q` as one of message `msg`.
pub(super) fn delivery_as(q: &Queued, msg: MsgId) -> Delivery {
    Delivery {
        msg,
        qos: q.qos,
        retain: q.retain,
        // At most four ids, each valid: `SubIds` keeps them so.
        sub_ids: SubIdList::new(q.sub_ids.as_slice()).unwrap_or_default(),
    }
}

/// The record that stores `m` as message `id`.
pub(super) fn message_data(m: &Message) -> MessageData<'_> {
    MessageData {
        qos: m.qos,
        retain: m.retain,
        expires_at: instant_deadline(m.expires_at),
        content: Content {
            topic: m.topic(),
            props: m.props(),
            payload: m.payload(),
        },
    }
}

impl Broker {
    /// Whether this shard logs (durability is not `none`).
    pub(super) fn logging(&self) -> bool {
        self.durable.driver.is_some()
    }

    /// Appends `rec` to the shard's log: false if it was refused (a full disk or
    /// budget, or a failed log: counted) or there is no log.
    pub(super) fn log(&mut self, rec: &Record<'_>) -> bool {
        let Some(d) = self.durable.driver.as_mut() else {
            return false;
        };
        match d.append(rec) {
            Ok(_) => true,
            Err(AppendError::Refused(_)) => {
                self.stats.log_records_refused.add(1);
                false
            }
            Err(e) => {
                // The broker and its log disagree: a bug. Tests (debug builds) stop here.
                self.stats.log_records_rejected.add(1);
                tracing::error!(shard = self.peers.id, record = ?rec, error = ?e, "log record rejected");
                debug_assert!(false, "log record rejected: {rec:?}: {e:?}");
                false
            }
        }
    }

    /// Stores the message being routed in this shard's log, once: its id, or `None` if
    /// the log refused it (the delivery is then not made, and the publisher refused).
    pub(super) fn ensure_stored(&mut self, src: &mut Src<'_>) -> Option<u64> {
        if src.store_id != 0 {
            return Some(src.store_id);
        }
        let Some(d) = self.durable.driver.as_mut() else {
            return Some(0);
        };
        let id = d.allocate_msg_id();
        let m = src.shared();
        let rec = Record::MessageStored {
            id,
            message: message_data(&m),
        };
        if self.log(&rec) {
            src.store_id = id.0;
            src.logged = true;
            Some(id.0)
        } else {
            src.refused = true;
            None
        }
    }

    /// Logs that delivery `q` joined the back of session `key`'s queue, after the
    /// deliveries `dropped` (store ids) left its front for lack of room.
    pub(super) fn log_enqueued(&mut self, key: u64, q: &Queued, dropped: &[u64]) {
        let session = SessionKey(key);
        for &id in dropped {
            self.log(&Record::Unqueued {
                session,
                msg: MsgId(id),
                reason: Unqueue::Dropped,
            });
        }
        self.log(&Record::Enqueued {
            session,
            delivery: delivery(q),
        });
    }

    /// Logs that the front of session `key`'s queue left it (`why`).
    pub(super) fn log_unqueued(&mut self, key: u64, q: &Queued, why: Unqueue) {
        self.log(&Record::Unqueued {
            session: SessionKey(key),
            msg: MsgId(q.store_id),
            reason: why,
        });
    }

    /// Logs that delivery `q` went out to session `key` under `pkid`.
    pub(super) fn log_sent(&mut self, key: u64, pkid: u16, q: &Queued) {
        self.log(&Record::Sent {
            session: SessionKey(key),
            pkid,
            delivery: delivery(q),
        });
    }

    /// A delivery to logged session `sid` (key `key`, connection `conn`) under `pkid`:
    /// logged as sent (before the client can see it) and put in the in-flight window.
    /// True if the caller writes it now; a QoS 2 one (or one behind another that waits)
    /// goes out once its record is durable.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn enter_logged_inflight(
        &mut self,
        io: &mut Io,
        sid: SessionId,
        key: u64,
        conn: ConnKey,
        pkid: u16,
        q: Queued,
    ) -> bool {
        self.log_sent(key, pkid, &q);
        let wait = q.qos == QoS::ExactlyOnce || self.sends_waiting(conn);
        let state = if wait {
            OutState::Logged(conn)
        } else {
            OutState::Published
        };
        if let Some(e) = self.sessions.get_mut(sid).map(|s| s.extra_mut()) {
            e.inflight.push_back(Inflight {
                pkid,
                state,
                delivery: q,
            });
        }
        if wait {
            self.park(io, Then::Deliver { conn, sid, pkid }, None);
        }
        !wait
    }

    /// Logs that session `sid` opens under `key`, later than `after_ms` (its last open,
    /// here or on another shard), with its current protocol and expiry.
    fn log_open(&mut self, sid: SessionId, key: SessionKey, after_ms: u64) -> bool {
        let Some(s) = self.sessions.get(sid) else {
            return false;
        };
        let client_id: Box<str> = (*s.client_id).into();
        let rec = Record::SessionOpened {
            session: key,
            client_id: &client_id,
            protocol: s.version,
            expiry_interval_s: s.expiry_interval,
            opened_at_ms: wall_ms().max(after_ms + 1),
        };
        self.log(&rec)
    }

    pub(super) fn log_inflight_done(&mut self, key: u64, pkid: u16, why: Done) {
        self.log(&Record::InflightDone {
            session: SessionKey(key),
            pkid,
            reason: why,
        });
    }

    /// A ticket for an answer from another shard about the message being routed: the
    /// message's entry (opened now if it has none) waits for one more answer.
    pub(super) fn wait_answer(&mut self, src: &mut Src<'_>) -> Ticket {
        let w = &mut self.durable.waiters;
        let id = match src.ticket {
            Some(t) => t.0,
            None => {
                let id = w.entries.insert(Waiter {
                    lsn: Lsn::ZERO,
                    waits: 0,
                    refused: false,
                    local: false,
                    then: Then::Unset,
                }) as u32;
                src.ticket = Some(Ticket(id));
                id
            }
        };
        w.entries[id as usize].waits += 1;
        src.waits += 1;
        Ticket(id)
    }

    /// Parks `then` until what was logged so far is durable (and, for the message
    /// routed in `src`, every answer it waits for has come). Done at once when nothing
    /// is to wait for and nothing of the same connection waits before it.
    pub(super) fn park(&mut self, io: &mut Io, then: Then, src: Option<&Src<'_>>) {
        let lsn = self.durable.last_lsn();
        let durable = self.durable.durable_lsn();
        let ticket = src.and_then(|s| s.ticket);
        let refused = src.is_some_and(|s| s.refused);
        let w = &mut self.durable.waiters;
        let in_order = match then.conn() {
            Some(c) if then.is_ack() => w.acks_waiting(c),
            Some(c) => w.sends_waiting(c),
            None => false,
        };
        if ticket.is_none() && !in_order && lsn <= durable {
            self.fire(io, then, refused);
            return;
        }
        let id = match ticket {
            Some(t) => {
                let e = &mut w.entries[t.0 as usize];
                e.lsn = lsn;
                e.refused |= refused;
                t.0
            }
            None => w.entries.insert(Waiter {
                lsn,
                waits: 0,
                refused,
                local: false,
                then: Then::Unset,
            }) as u32,
        };
        if let Some(q) = w.queue(&then) {
            q.push_back(id);
        }
        w.entries[id as usize].then = then;
        w.fifo.push_back(id);
        self.stats.durability_waiting.set(w.len() as u64);
    }

    /// Closes the routing of a message nobody waits for, whose entry may have collected
    /// tickets (it must not stay open).
    pub(super) fn settle_routing(&mut self, io: &mut Io, src: &Src<'_>) {
        if src.ticket.is_some() {
            self.park(io, Then::Nothing, Some(src));
        }
    }

    /// Another shard answered `ticket`.
    pub(super) fn on_durable_answer(&mut self, io: &mut Io, ticket: Ticket, refused: bool) {
        let w = &mut self.durable.waiters;
        let Some(e) = w.entries.get_mut(ticket.0 as usize) else {
            return;
        };
        e.refused |= refused;
        e.waits = e.waits.saturating_sub(1);
        if e.waits > 0 || matches!(e.then, Then::Unset) {
            return;
        }
        let mut ready = Vec::new();
        w.settle(ticket.0, &mut ready);
        self.fire_all(io, ready);
    }

    /// Does what waits for records that are durable now (in each connection's order).
    pub(super) fn release_waiters(&mut self, io: &mut Io) {
        let durable = self.durable.durable_lsn();
        let w = &mut self.durable.waiters;
        let mut ready = Vec::new();
        while let Some(&id) = w.fifo.front() {
            if w.entries[id as usize].lsn > durable {
                break;
            }
            w.fifo.pop_front();
            w.entries[id as usize].local = true;
            w.settle(id, &mut ready);
        }
        self.fire_all(io, ready);
    }

    fn fire_all(&mut self, io: &mut Io, ready: Vec<Waiter>) {
        if ready.is_empty() {
            return;
        }
        self.stats
            .durability_waiting
            .set(self.durable.waiters.len() as u64);
        for e in ready {
            self.fire(io, e.then, e.refused);
        }
    }

    fn fire(&mut self, io: &mut Io, then: Then, refused: bool) {
        match then {
            Then::Ack { conn, ack, reason } => self.send_ack(io, conn, ack, refused, reason),
            Then::Suback(p) => self.send_suback(io, *p),
            Then::Unsuback { conn, pkid, codes } => self.send_unsuback(io, conn, pkid, &codes),
            Then::Deliver { conn, sid, pkid } => self.send_parked_delivery(io, conn, sid, pkid),
            Then::Answer { to, ticket } => self.send(io, to, Msg::Durable { ticket, refused }),
            Then::MovedDurable { to, key } => self.send(io, to, Msg::MovedDurable { key }),
            Then::Resend { conn, sid } => {
                if self.sessions.get(sid).is_some_and(|s| s.conn == Some(conn)) {
                    self.resend_inflight(io, sid);
                    self.drain_queue(io, sid);
                }
            }
            Then::Nothing | Then::Unset => {}
        }
    }

    /// Sends an acknowledgement now, or parks it behind earlier ones of its connection.
    pub(super) fn acknowledge(
        &mut self,
        io: &mut Io,
        conn: ConnKey,
        ack: Ack,
        src: Option<&Src<'_>>,
    ) {
        let waits = src.is_some_and(|s| s.logged || s.ticket.is_some() || s.refused);
        if !waits && !self.durable.waiters.acks_waiting(conn) {
            self.send_ack(io, conn, ack, false, None);
            return;
        }
        self.park(
            io,
            Then::Ack {
                conn,
                ack,
                reason: None,
            },
            src,
        );
    }

    /// Sends an acknowledgement whose reason code is decided now (a refusal, or an
    /// unknown packet id): at once, or behind the connection's acknowledgements that
    /// wait for the log, which it must not overtake (MQTT-4.6.0-2, -3, -4: PUBACK,
    /// PUBREC and PUBREL go in the order of the packets they answer).
    pub(super) fn answer_in_order(&mut self, io: &mut Io, conn: ConnKey, ack: Ack, reason: Reason) {
        let then = Then::Ack {
            conn,
            ack,
            reason: Some(reason),
        };
        if self.durable.waiters.acks_waiting(conn) {
            self.park(io, then, None);
        } else {
            self.fire(io, then, false);
        }
    }

    /// An acknowledgement whose records are durable, or a refusal: MQTT 5 gets 0x97
    /// Quota exceeded on its PUBACK or PUBREC, 3.1.1 has no way to say it and is
    /// disconnected without one. `reason`: the code decided when it was made, and the
    /// Reason String that goes with it if the client takes it.
    fn send_ack(
        &mut self,
        io: &mut Io,
        conn: ConnKey,
        ack: Ack,
        refused: bool,
        reason: Option<Reason>,
    ) {
        let Some(version) = io.state(conn).map(|c| c.version()) else {
            return;
        };
        if refused {
            self.stats.durable_publishes_refused.add(1);
            if version == Version::V311 {
                io.close(conn, CloseReason::Policy);
                return;
            }
        }
        let code = match reason {
            Some(r) => r.code,
            None if refused => ReasonCode::QUOTA_EXCEEDED,
            None => ReasonCode::SUCCESS,
        };
        let make = |properties| {
            let r = |pkid| PubResp {
                pkid,
                reason: code,
                properties,
            };
            match ack {
                Ack::Puback(p) => Packet::PubAck(r(p)),
                Ack::Pubrec(p) => Packet::PubRec(r(p)),
                Ack::Pubrel(p) => Packet::PubRel(r(p)),
                Ack::Pubcomp(p) => Packet::PubComp(r(p)),
                Ack::Pingresp => Packet::PingResp,
            }
        };
        let bare = make(Properties::EMPTY);
        match reason.and_then(|r| r.why) {
            Some(why) => {
                let props = [Property::ReasonString(why)];
                self.writer
                    .answer(io, conn, version, &make(Properties::List(&props)), &bare);
            }
            None => {
                self.writer.packet(io, conn, version, &bare);
            }
        }
    }

    /// Whether acknowledgements to connection `conn` wait for durability (what follows
    /// them waits too).
    pub(super) fn durable_acks_waiting(&self, conn: ConnKey) -> bool {
        self.durable.waiters.acks_waiting(conn)
    }

    /// Whether a delivery to connection `conn` must wait behind earlier ones that wait
    /// for durability.
    pub(super) fn sends_waiting(&self, conn: ConnKey) -> bool {
        self.durable.waiters.sends_waiting(conn)
    }

    /// The end of a turn: the log's records go out, and what they made durable is done.
    pub(super) fn durable_turn_end(&mut self, io: &mut Io) {
        if let Some(d) = self.durable.driver.as_mut() {
            d.end_turn(io);
        }
        let w = &self.durable.waiters;
        let durable = self.durable.durable_lsn();
        if w.fifo
            .front()
            .is_some_and(|&id| w.entries[id as usize].lsn <= durable)
        {
            self.release_waiters(io);
        }
    }

    /// A write or sync of the log ended.
    pub(super) fn on_log_written(&mut self, io: &mut Io, done: ringmq_shard::disk::FileDone) {
        let now = io.now_ms();
        let Some(d) = self.durable.driver.as_mut() else {
            return;
        };
        match d.on_file_done(now, done) {
            Some(Completed::Batch { synced, latency_us }) => {
                if synced {
                    self.latency.log_synced(latency_us);
                }
                self.release_waiters(io);
            }
            Some(Completed::Failed) => self.stats.log_write_failures.add(1),
            None => {}
        }
    }

    /// A job of the store's on the helper thread ended.
    pub(super) fn on_store_job(&mut self, io: &mut Io, done: JobDone) {
        if let Some(d) = self.durable.driver.as_mut() {
            d.on_job_done(io, done);
        }
    }

    /// Each tick: the log's figures into the shard's counters.
    pub(super) fn log_figures(&self) {
        let Some(d) = &self.durable.driver else {
            return;
        };
        let s = d.store().log_stats();
        let st = &self.stats;
        st.log_records.set(s.records);
        st.log_bytes_written.set(s.bytes);
        st.log_syncs.set(s.syncs);
        st.log_disk_bytes.set(d.store().disk_bytes());
        st.log_refusing
            .set(d.store().refusing().map_or(0, |r| r as u64 + 1));
    }

    /// Whether a QoS 1/2 PUBLISH (or a retained one) must be refused before it is
    /// delivered anywhere: the log refuses what grows the state (full disk or budget)
    /// and the message would be logged (retained, or a durable subscription matches
    /// here or on another shard).
    pub(super) fn refuses_publish(&mut self, topic: &str, qos: QoS, retain: bool) -> bool {
        let Some(d) = &self.durable.driver else {
            return false;
        };
        if d.store().refusing().is_none() || (qos == QoS::AtMostOnce && !retain) {
            return false;
        }
        if retain {
            return true;
        }
        let mut durable = false;
        let sessions = &self.sessions;
        self.routes.subs.match_topic(topic, |_, v| {
            durable |= v
                .plain()
                .iter()
                .any(|s| sessions.get(s.sid).is_some_and(|x| x.durable));
            durable |= v.groups().any(|g| {
                g.members
                    .iter()
                    .any(|s| sessions.get(s.sid).is_some_and(|x| x.durable))
            });
        });
        if !durable && self.peers.count > 1 {
            self.interest.others.match_topic(topic, |_, v| {
                durable |= v.durable != 0 || !v.groups.is_empty();
            });
        }
        durable
    }

    /// A delivery that waited for its packet id to be durable goes out now, if the
    /// session still has it in flight on the same connection.
    fn send_parked_delivery(&mut self, io: &mut Io, conn: ConnKey, sid: SessionId, pkid: u16) {
        use super::session::OutState;
        use super::writer::{Out, Recipient, View, Written};
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        if s.conn != Some(conn) || !io.is_open(conn) {
            return;
        }
        let version = s.version;
        let Some(i) = s
            .extra()
            .and_then(|e| e.inflight.iter().find(|i| i.pkid == pkid))
            .filter(|i| i.state == OutState::Logged(conn))
        else {
            return;
        };
        let q = i.delivery.clone();
        let to = Recipient::of(io, conn, version);
        let out = Out::of(&q, pkid, false);
        match self.writer.publish(io, to, &View::of(&q.msg), out) {
            Written::Sent => self.set_published(sid, pkid),
            Written::TooLarge => self.drop_too_large(sid, pkid),
            // The connection is going: the next one's resend writes it.
            Written::NotSent => {}
        }
    }

    /// Logs session `sid` whole under a new key (it became persistent here, or moved
    /// here): open, subscriptions, will, queue, in flight, inbound ids, and its offline
    /// deadlines. `opened_after_ms`: its last open elsewhere, which this one must follow.
    pub(super) fn log_new_session(&mut self, sid: SessionId, opened_after_ms: u64, seen: &[u64]) {
        let Some(d) = self.durable.driver.as_mut() else {
            return;
        };
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        // A copy of this client's session still in the log (the session left and came
        // back before its old copy was ended) ends in the same turn.
        let stale = d
            .store()
            .state()
            .session_by_client(&s.client_id)
            .map(|x| x.key);
        let key = d.allocate_session_key();
        if let Some(old) = stale {
            self.log(&Record::SessionEnded {
                session: old,
                reason: EndReason::Moved,
            });
        }
        if !self.log_open(sid, key, opened_after_ms) {
            return;
        }
        if let Some(s) = self.sessions.get_mut(sid) {
            s.store_key = key.0;
        }
        self.set_durable_interest(sid, true);
        let subs = self.session_subs(sid);
        for sub in &subs {
            self.log(&Record::SubAdded {
                session: key,
                filter: &sub.filter,
                options: sub.opts,
                sub_id: sub.sub_id,
            });
        }
        self.log_will(sid);
        // The messages it holds, stored once each.
        let mut stored: HashMap<*const Message, u64> = HashMap::new();
        let (queue, inflight, inbound, offline) = match self.sessions.get(sid) {
            Some(s) => {
                let e = s.extra();
                let queue: Vec<Queued> = e
                    .map(|e| e.queue.iter().cloned().collect())
                    .unwrap_or_default();
                let inflight: Vec<(u16, bool, Queued)> = e
                    .map(|e| {
                        e.inflight
                            .iter()
                            .map(|i| {
                                (
                                    i.pkid,
                                    i.state == super::session::OutState::Released,
                                    i.delivery.clone(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let inbound = e.map(|e| e.inbound_qos2.clone()).unwrap_or_default();
                let offline = s.conn.is_none().then(|| {
                    (
                        e.and_then(|e| e.expires_at_ms),
                        e.and_then(|e| e.will_at_ms),
                    )
                });
                (queue, inflight, inbound, offline)
            }
            None => return,
        };
        let mut ids_queue = Vec::with_capacity(queue.len());
        for q in &queue {
            ids_queue.push(self.store_message(&mut stored, &q.msg));
        }
        let mut ids_inflight = Vec::with_capacity(inflight.len());
        for (_, _, q) in &inflight {
            ids_inflight.push(self.store_message(&mut stored, &q.msg));
        }
        for (q, id) in queue.iter().zip(&ids_queue) {
            let q = Queued {
                store_id: *id,
                ..q.clone()
            };
            self.log(&Record::Enqueued {
                session: key,
                delivery: delivery(&q),
            });
        }
        for ((pkid, released, q), id) in inflight.iter().zip(&ids_inflight) {
            let q = Queued {
                store_id: *id,
                ..q.clone()
            };
            self.log_sent(key.0, *pkid, &q);
            if *released {
                self.log(&Record::Released {
                    session: key,
                    pkid: *pkid,
                });
            }
        }
        for (pkid, id) in inbound {
            self.log(&Record::InboundAdded {
                session: key,
                pkid,
                id,
            });
        }
        for &id in seen {
            self.log(&Record::Seen { session: key, id });
        }
        if let Some((expires, will_at)) = offline {
            let rec = Record::SessionOffline {
                session: key,
                expires_at: self.durable.deadline(expires),
                will_at: self.durable.deadline(will_at),
            };
            self.log(&rec);
        }
        // The session's entries now name this log's copies.
        if let Some(e) = self.sessions.get_mut(sid).and_then(|s| s.extra_opt_mut()) {
            for (q, id) in e.queue.iter_mut().zip(ids_queue) {
                q.store_id = id;
            }
            for (i, id) in e.inflight.iter_mut().zip(ids_inflight) {
                i.delivery.store_id = id;
            }
        }
    }

    /// A session got a connection (`finish_connect`): logged whole if it became
    /// persistent here, reopened (with its new will) if it was logged, ended in the log
    /// if it no longer outlives its connection.
    pub(super) fn log_connected(&mut self, sid: SessionId) {
        if !self.logging() {
            return;
        }
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        match (s.is_persistent(), s.store_key != 0) {
            (true, false) => self.log_new_session(sid, 0, &[]),
            (true, true) => {
                self.log_reopened(sid);
                self.log_will(sid);
            }
            (false, true) => {
                self.log_session_ended(sid, EndReason::Discarded);
                self.set_durable_interest(sid, false);
            }
            (false, false) => {}
        }
    }

    /// From a moved session's new shard: its copy is durable there, so this shard's
    /// log ends its own (unless the session came back and was logged anew meanwhile).
    pub(super) fn on_moved_durable(&mut self, key: u64) {
        let held = self
            .durable
            .driver
            .as_ref()
            .is_some_and(|d| d.store().state().session(SessionKey(key)).is_some());
        let here = self.sessions_by_key(key);
        if held && !here {
            self.log(&Record::SessionEnded {
                session: SessionKey(key),
                reason: EndReason::Moved,
            });
        }
    }

    /// Stores `m` in the log once per call of `log_new_session`.
    fn store_message(
        &mut self,
        stored: &mut HashMap<*const Message, u64>,
        m: &std::sync::Arc<Message>,
    ) -> u64 {
        let ptr = std::sync::Arc::as_ptr(m);
        if let Some(&id) = stored.get(&ptr) {
            return id;
        }
        let Some(d) = self.durable.driver.as_mut() else {
            return 0;
        };
        let id = d.allocate_msg_id();
        // Settling a session's own state is not refused for room here: it is what the
        // session held already.
        self.log(&Record::MessageStored {
            id,
            message: message_data(m),
        });
        stored.insert(ptr, id.0);
        id.0
    }

    /// Logs the session's will if it is one to keep (a persistent session's, with a
    /// delay), clearing a logged one otherwise.
    pub(super) fn log_will(&mut self, sid: SessionId) {
        let Some(d) = self.durable.driver.as_ref() else {
            return;
        };
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if s.store_key == 0 {
            return;
        }
        let key = SessionKey(s.store_key);
        let logged = d
            .store()
            .state()
            .session(key)
            .is_some_and(|x| x.will.is_some());
        let persistent = s.is_persistent();
        let will = s.extra_opt_mut().and_then(|e| e.will.take());
        match &will {
            Some(w) if w.delay_s > 0 && persistent => {
                let rec = Record::WillSet {
                    session: key,
                    will: crate::store::record::WillData {
                        delay_s: w.delay_s,
                        expiry_s: w.expiry_s,
                        qos: w.msg.qos,
                        retain: w.msg.retain,
                        content: Content {
                            topic: w.msg.topic(),
                            props: w.msg.props(),
                            payload: w.msg.payload(),
                        },
                    },
                };
                // A will the log refuses (a full budget) is kept in memory only.
                let _ = self.log(&rec);
            }
            _ if logged => {
                self.log(&Record::WillCleared { session: key });
            }
            _ => {}
        }
        if let Some(e) = self.sessions.get_mut(sid).and_then(|s| s.extra_opt_mut()) {
            e.will = will;
        }
    }

    /// Clears the session's logged will (published or discarded).
    pub(super) fn log_will_gone(&mut self, key: u64) {
        let Some(d) = self.durable.driver.as_ref() else {
            return;
        };
        let logged = d
            .store()
            .state()
            .session(SessionKey(key))
            .is_some_and(|x| x.will.is_some());
        if logged {
            self.log(&Record::WillCleared {
                session: SessionKey(key),
            });
        }
    }

    /// Logs that session `sid` ended (`why`) and forgets its key; its subscriptions no
    /// longer count as durable interest.
    pub(super) fn log_session_ended(&mut self, sid: SessionId, why: EndReason) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let key = std::mem::take(&mut s.store_key);
        if key != 0 {
            self.log(&Record::SessionEnded {
                session: SessionKey(key),
                reason: why,
            });
        }
    }

    /// Logs that session `sid`'s client went away: when it expires, when its will is due.
    pub(super) fn log_offline(&mut self, sid: SessionId) {
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        if s.store_key == 0 {
            return;
        }
        let e = s.extra();
        let rec = Record::SessionOffline {
            session: SessionKey(s.store_key),
            expires_at: self.durable.deadline(e.and_then(|e| e.expires_at_ms)),
            will_at: self.durable.deadline(e.and_then(|e| e.will_at_ms)),
        };
        self.log(&rec);
    }

    /// Logs that session `sid` is open again (same key), with its current expiry.
    pub(super) fn log_reopened(&mut self, sid: SessionId) {
        let Some(d) = self.durable.driver.as_ref() else {
            return;
        };
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        let key = SessionKey(s.store_key);
        let last = d.store().state().session(key).map_or(0, |x| x.opened_at_ms);
        self.log_open(sid, key, last);
    }

    /// When session `sid` was last opened, as this shard's log says (0: not logged).
    pub(super) fn logged_open(&self, sid: SessionId) -> u64 {
        let (Some(d), Some(s)) = (self.durable.driver.as_ref(), self.sessions.get(sid)) else {
            return 0;
        };
        d.store()
            .state()
            .session(SessionKey(s.store_key))
            .map_or(0, |x| x.opened_at_ms)
    }

    /// Whether logged session `key` has inbound QoS 2 packet id `pkid` waiting for
    /// PUBREL in this shard's log.
    pub(super) fn logs_inbound(&self, key: u64, pkid: u16) -> bool {
        self.durable.driver.as_ref().is_some_and(|d| {
            d.store()
                .state()
                .session(SessionKey(key))
                .is_some_and(|s| s.inbound_qos2.iter().any(|i| i.0 == pkid))
        })
    }

    /// The QoS 2 message ids session `sid` got, as this shard's log says.
    pub(super) fn logged_seen(&self, sid: SessionId) -> Vec<u64> {
        let (Some(d), Some(s)) = (self.durable.driver.as_ref(), self.sessions.get(sid)) else {
            return Vec::new();
        };
        d.store()
            .state()
            .session(SessionKey(s.store_key))
            .map_or_else(Vec::new, |x| x.seen.clone())
    }

    /// Whether a session here holds log key `key`.
    fn sessions_by_key(&self, key: u64) -> bool {
        self.durable
            .driver
            .as_ref()
            .and_then(|d| d.store().state().session(SessionKey(key)))
            .and_then(|x| self.sessions.find(&x.client_id))
            .and_then(|sid| self.sessions.get(sid))
            .is_some_and(|s| s.store_key == key)
    }

    /// Counts session `sid`'s plain subscriptions as durable interest (or no longer).
    pub(super) fn set_durable_interest(&mut self, sid: SessionId, on: bool) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if s.durable == on {
            return;
        }
        s.durable = on;
        let refs: Vec<_> = s.subs().filter(|r| r.share.is_none()).collect();
        for r in refs {
            self.durable_interest_of(r.node, on);
        }
    }

    /// Durable interest in the plain filter at `node`, added or taken away.
    pub(super) fn durable_interest_of(&mut self, node: super::topics::NodeId, add: bool) {
        if self.peers.count == 1 {
            return;
        }
        let filter = self.routes.subs.path_of(node);
        let prefix = super::interest::interest_prefix(&filter, self.config().route_depth);
        self.interest.advertise_durable(prefix, add);
    }

    /// The subscriptions of session `sid`, spelled out.
    pub(super) fn session_subs(&mut self, sid: SessionId) -> Vec<super::session::Subscription> {
        let refs: Vec<_> = self
            .sessions
            .get(sid)
            .map(|s| s.subs().collect())
            .unwrap_or_default();
        self.spell_out_subs(sid, &refs)
    }

    /// Whether logged session `key` got QoS 2 message `id` already (false), else logs
    /// that it gets it now (true).
    pub(super) fn see(&mut self, key: u64, id: u64, src: &mut Src<'_>) -> bool {
        let seen = self.durable.driver.as_ref().is_some_and(|d| {
            d.store()
                .state()
                .session(SessionKey(key))
                .is_some_and(|s| s.seen.contains(&id))
        });
        if seen {
            return false;
        }
        // Bounded: the oldest is forgotten (its publisher has long been answered).
        let oldest = self.durable.driver.as_ref().and_then(|d| {
            let s = d.store().state().session(SessionKey(key))?;
            (s.seen.len() >= MAX_SEEN).then(|| s.seen[0])
        });
        if let Some(old) = oldest {
            self.log(&Record::SeenReleased { id: old });
        }
        if self.log(&Record::Seen {
            session: SessionKey(key),
            id,
        }) {
            src.logged = true;
        }
        true
    }

    /// The id of a QoS 2 message a persistent session's client sent: a digest of the
    /// client id, packet id, topic and payload, so that the copy the client sends again
    /// (after a restart that lost what its session logged, say) gets the same id
    /// wherever it arrives and is not delivered twice to a session that got it.
    pub(super) fn exact_id(client_id: &str, pkid: u16, topic: &str, payload: &[u8]) -> u64 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [client_id.as_bytes(), topic.as_bytes()] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        h.update(pkid.to_be_bytes());
        h.update(payload);
        let d = h.finalize();
        // 0 means no id.
        u64::from_be_bytes(d[..8].try_into().unwrap_or_default()).max(1)
    }

    /// The publisher released QoS 2 message `id`: every shard's sessions forget it.
    pub(super) fn release_seen(&mut self, io: &mut Io, id: u64) {
        self.on_peer_released(id);
        for to in self.peers.others() {
            io.send_to_shard(to, Msg::PeerReleased { id });
        }
    }

    /// Message `id` was released: the sessions here that got it forget it.
    pub(super) fn on_peer_released(&mut self, id: u64) {
        let seen = self
            .durable
            .driver
            .as_ref()
            .is_some_and(|d| d.store().state().is_seen(id));
        if seen {
            self.log(&Record::SeenReleased { id });
        }
    }

    /// A message for this shard's durable sessions from another shard that waits for an
    /// answer (`ticket`): answered once what this shard logged is durable.
    pub(super) fn answer_when_durable(
        &mut self,
        io: &mut Io,
        to: usize,
        ticket: Ticket,
        src: &Src<'_>,
    ) {
        self.park(io, Then::Answer { to, ticket }, Some(src));
    }
}
