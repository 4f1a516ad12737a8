//! Retained messages for a new subscription, sent at the pace the subscriber takes them.
//!
//! A subscription may match any number of retained messages (a new subscriber to `#` on a
//! broker holding millions). Pushing them all into the connection at once would drop QoS 0
//! past the connection's soft limit and disconnect a QoS 1/2 subscriber whose in-flight
//! window and queue cannot hold them. Instead each session with retained messages to
//! receive has a [`Cursor`]: a snapshot of the matching messages taken when the SUBACK
//! goes, sent a batch at a time — a batch when the connection's outbound queue has
//! emptied (`Io::notify_drained` → `on_drained`), and as acknowledgements free its
//! in-flight window — so nothing is lost and no loop turn does more than a batch for it.
//!
//! What the subscriber sees while retained state changes under an open cursor:
//! - the snapshot holds the matching topics' messages as they were when the SUBACK went
//!   (weak references: it keeps no message alive);
//! - each is read again when its turn comes: a topic cleared since, or whose message
//!   expired, is skipped; a topic whose message was replaced since is skipped too — the
//!   replacement was published after the subscription existed, so it reached the
//!   subscriber as a live message;
//! - topics retained after the snapshot are not in it, for the same reason;
//! - a filter unsubscribed meanwhile sends nothing more; a filter subscribed again while
//!   its turn has not come waits once, with the newer options; one subscribed again while
//!   its snapshot is being sent gets a fresh snapshot after it (MQTT-3.3.1-10: retained
//!   messages are sent on every subscribe with Retain Handling 0);
//! - the cursor belongs to the session: a persistent session whose client goes away keeps
//!   it and goes on after its queue when the client is back; it ends with the session (or
//!   when the session moves to another shard).
//!
//! Memory: 8 bytes per snapshot entry, and the snapshots of one shard hold at most
//! `retained_snapshot_entries` (one snapshot may be larger alone): a subscription whose
//! snapshot finds no room waits, in order, until others are sent (counted in
//! `retained_snapshots_waited`). A subscriber that takes nothing for
//! `RETAINED_STALL_MS` while others wait is disconnected as a slow consumer, so one
//! client cannot hold the room for ever; a persistent session gets its snapshot again
//! when it is back.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Instant;

use ringmq_proto::mqtt::{QoS, ReasonCode, SubscriptionOptions};
use ringmq_shard::conn::CloseReason;

use super::delivery::Src;
use super::session::{Message, SessionId, SubIds};
use super::{Broker, Io};

/// Retained messages a cursor sends (or skips) per event: a drained queue or an
/// acknowledgement.
const RETAINED_BATCH: usize = 256;
/// How long a cursor may make no progress while others wait for room before its
/// subscriber is disconnected as a slow consumer.
const RETAINED_STALL_MS: u64 = 30_000;

/// A filter whose retained messages are to be sent, with its subscription's options.
#[derive(Debug, Clone)]
pub(super) struct RetainedFilter {
    pub filter: Box<str>,
    pub opts: SubscriptionOptions,
    pub sub_id: u32,
}

/// One session's retained messages still to send.
#[derive(Default)]
struct Cursor {
    /// The filter whose snapshot is being sent.
    current: Option<RetainedFilter>,
    /// Its messages not sent yet, sent from the end.
    snapshot: Vec<Weak<Message>>,
    /// Filters whose snapshots follow, in order, each once.
    next: VecDeque<RetainedFilter>,
    /// In `RetainedCursors::waiting`: its next snapshot waits for room.
    waiting: bool,
    /// When it last sent or skipped a message (shard clock, ms).
    progress_ms: u64,
}

/// The retained messages new subscriptions are still to receive, per session.
#[derive(Default)]
pub(super) struct RetainedCursors {
    by_session: HashMap<SessionId, Cursor>,
    /// Sessions whose next snapshot waits for room, oldest first.
    waiting: VecDeque<SessionId>,
    /// Entries in every snapshot.
    pub entries: usize,
}

impl RetainedCursors {
    /// Whether session `sid` has retained messages to receive.
    pub fn has(&self, sid: SessionId) -> bool {
        !self.by_session.is_empty() && self.by_session.contains_key(&sid)
    }

    /// Adds filters whose retained messages session `sid` is to receive after what it
    /// has to receive already. A filter already waiting its turn keeps its place and
    /// takes the new options.
    pub fn push(&mut self, sid: SessionId, filters: Vec<RetainedFilter>, now_ms: u64) {
        let c = self.by_session.entry(sid).or_insert_with(|| Cursor {
            progress_ms: now_ms,
            ..Cursor::default()
        });
        for f in filters {
            match c.next.iter_mut().find(|n| n.filter == f.filter) {
                Some(waiting) => *waiting = f,
                None => c.next.push_back(f),
            }
        }
    }

    /// Session `sid` unsubscribed from `filter`: its retained messages stop.
    pub fn forget_filter(&mut self, sid: SessionId, filter: &str) {
        let Some(c) = self.by_session.get_mut(&sid) else {
            return;
        };
        c.next.retain(|n| &*n.filter != filter);
        if c.current.as_ref().is_some_and(|f| &*f.filter == filter) {
            self.entries -= c.snapshot.len();
            c.snapshot = Vec::new();
            c.current = None;
        }
    }

    /// Session `sid` ended or moved away: what it had to receive goes.
    pub fn remove(&mut self, sid: SessionId) {
        if let Some(c) = self.by_session.remove(&sid) {
            self.entries -= c.snapshot.len();
        }
    }
}

impl Broker {
    /// After a SUBACK: sends the retained messages matching `filters` to session `sid`,
    /// a batch now and the rest as the subscriber takes them.
    pub(super) fn queue_retained(
        &mut self,
        io: &mut Io,
        sid: SessionId,
        filters: Vec<RetainedFilter>,
    ) {
        if filters.is_empty() {
            return;
        }
        self.retained_cursors.push(sid, filters, self.clock_ms);
        self.send_retained(io, sid);
    }

    /// Sends session `sid` its next batch of retained messages, if its connection takes
    /// more now; then gives the room its snapshots freed to sessions waiting for it.
    pub(super) fn send_retained(&mut self, io: &mut Io, sid: SessionId) {
        if !self.retained_cursors.has(sid) {
            return;
        }
        self.retained_batch(io, sid);
        let max = self.config().retained_snapshot_entries;
        let mut turns = self.retained_cursors.waiting.len();
        while turns > 0 && self.retained_cursors.entries < max {
            turns -= 1;
            let Some(next) = self.retained_cursors.waiting.pop_front() else {
                break;
            };
            if let Some(c) = self.retained_cursors.by_session.get_mut(&next) {
                c.waiting = false;
                self.retained_batch(io, next);
            }
        }
    }

    /// One batch for session `sid`: while its connection's queue is under the soft limit
    /// and (for QoS 1/2) its in-flight window has room and nothing waits before it.
    fn retained_batch(&mut self, io: &mut Io, sid: SessionId) {
        let Some(conn) = self
            .sessions
            .get(sid)
            .and_then(|s| s.conn)
            .filter(|&c| io.is_open(c))
        else {
            return; // offline: goes on when the client is back
        };
        let soft = self.config().out_soft_limit;
        let max_entries = self.config().retained_snapshot_entries;
        let now = Instant::now();
        let mut budget = RETAINED_BATCH;
        loop {
            let cursors = &mut self.retained_cursors;
            let Some(c) = cursors.by_session.get_mut(&sid) else {
                return;
            };
            if c.snapshot.is_empty() {
                c.current = None;
                if c.waiting {
                    return;
                }
                let Some(next) = c.next.pop_front() else {
                    cursors.by_session.remove(&sid);
                    return;
                };
                if cursors.entries >= max_entries && cursors.entries > 0 {
                    c.next.push_front(next);
                    c.waiting = true;
                    cursors.waiting.push_back(sid);
                    self.stats.retained_snapshots_waited.add(1);
                    return;
                }
                let mut snapshot = Vec::new();
                self.retained.matching_each(&next.filter, |m| {
                    snapshot.push(Arc::downgrade(m));
                });
                let cursors = &mut self.retained_cursors;
                let Some(c) = cursors.by_session.get_mut(&sid) else {
                    return;
                };
                snapshot.reverse();
                cursors.entries += snapshot.len();
                c.snapshot = snapshot;
                c.current = Some(next);
                c.progress_ms = self.clock_ms;
                continue;
            }
            if budget == 0 || io.out_len(conn) >= soft {
                // Goes on once what is queued has gone to the kernel.
                io.notify_drained(conn);
                return;
            }
            let Some(f) = c.current.clone() else { return };
            let weak = c.snapshot.last().cloned().unwrap_or_default();
            // Read when sent: skipped if cleared, replaced or expired since.
            let m = weak.upgrade().filter(|m| {
                !m.is_expired(now)
                    && self
                        .retained
                        .current(m.topic())
                        .is_some_and(|now_held| Arc::ptr_eq(now_held, m))
            });
            let qos = m
                .as_ref()
                .map_or(QoS::AtMostOnce, |m| m.qos.min(f.opts.qos));
            if m.is_some() && qos != QoS::AtMostOnce {
                let Some(s) = self.sessions.get(sid) else {
                    return;
                };
                if !s.window_open() || s.queue_len() > 0 {
                    // Goes on as acknowledgements free the window (`drain_queue`).
                    return;
                }
            }
            let cursors = &mut self.retained_cursors;
            if let Some(c) = cursors.by_session.get_mut(&sid) {
                c.snapshot.pop();
                c.progress_ms = self.clock_ms;
                cursors.entries -= 1;
            }
            budget -= 1;
            if let Some(m) = m {
                let mut src = Src::from_arc(&m, self.peers.id);
                // A retained message always meets the receiver's ACL (`delivery`).
                src.replay = true;
                self.deliver(io, sid, &mut src, qos, true, SubIds::one(f.sub_id));
            }
        }
    }

    /// Each tick, while snapshots wait for room: a subscriber whose retained messages
    /// have not moved for `RETAINED_STALL_MS` is disconnected as a slow consumer, and its
    /// snapshot goes (taken again, whole, if its persistent session comes back).
    pub(super) fn evict_stalled_retained(&mut self, io: &mut Io) {
        if self.retained_cursors.waiting.is_empty() {
            return;
        }
        let now = self.clock_ms;
        let cursors = &mut self.retained_cursors;
        let mut stalled = Vec::new();
        for (&sid, c) in cursors.by_session.iter_mut() {
            if !c.snapshot.is_empty() && c.progress_ms + RETAINED_STALL_MS <= now {
                cursors.entries -= c.snapshot.len();
                c.snapshot = Vec::new();
                if let Some(f) = c.current.take() {
                    c.next.push_front(f);
                }
                c.progress_ms = now;
                stalled.push(sid);
            }
        }
        for sid in stalled {
            if let Some(conn) = self.sessions.get(sid).and_then(|s| s.conn) {
                self.disconnect(
                    io,
                    conn,
                    ReasonCode::QUOTA_EXCEEDED,
                    "retained messages not taken",
                    CloseReason::SlowConsumer,
                );
            }
        }
        if let Some(&first) = self.retained_cursors.waiting.front() {
            self.send_retained(io, first);
        }
    }
}
