//! Cross-node QoS 1/2 delivery: a sequenced stream per (origin node → destination node)
//! on the destination's node subject, acknowledged cumulatively and retransmitted
//! go-back-N, so a message NATS dropped (a node cut off as a slow consumer, a connection
//! that broke with messages in flight) is sent again instead of being lost.
//!
//! - *Origin* ([`Streams`], kept by the link's outbound task): per destination node an
//!   incarnation (random, new whenever the stream starts: first message to that node, or
//!   after its window was dropped), the next sequence number (from 1) and a window of
//!   the messages sent and not yet acknowledged, at most [`WINDOW`]. A full window while
//!   NATS is connected makes the outbound task wait for acks (back-pressure: the
//!   outbound queue fills, the shards hold QoS 1/2 messages and pause their publishers);
//!   while NATS is disconnected, or the destination is [away](AWAY), a message for a full
//!   window is dropped and counted instead, so a node keeps serving its local clients.
//!   A window whose oldest message has seen no ack progress for [`RESEND`] is sent again
//!   whole, in order, as it is on every reconnect to NATS. A destination missing from
//!   the routing table for [`GONE`] (its interest gone, or silent) loses its window.
//! - *Destination* ([`Receiver`], kept by the link's dispatch task): per origin node the
//!   incarnation it is reading and the next sequence number expected. The expected one
//!   is routed; an earlier one is a duplicate (a resend of something routed) and a later
//!   one follows a gap (something was dropped before it): both are dropped, counted, and
//!   answered with an ack of what was routed, so the origin's resend fills the gap. The
//!   first message of an incarnation the receiver does not know is routed whatever its
//!   number: the origin's stream started again, or the receiver restarted and lost what
//!   it knew (then a message lost just before it is not recovered).
//! - *Acks* go to `ringmq.a.ORIGIN` ([`super::frame::Ack`]): this node, the incarnation
//!   and the highest sequence number routed without a gap, after the messages were handed
//!   to the shards; coalesced, at most one per origin every [`ACK_DELAY`] unless
//!   [`ACK_EVERY`] messages wait for one.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::remote::MAX_NODES;

/// QoS 1/2 messages sent to one destination node and not yet acknowledged. Full while
/// connected: the outbound task waits (back-pressure). Memory: up to this many messages
/// per destination node, each as large as the messages published.
pub const WINDOW: usize = 4096;

/// A window whose oldest message has seen no ack progress for this long is sent again,
/// whole and in order.
pub const RESEND: Duration = Duration::from_secs(1);

/// A destination whose full window has seen no ack progress for this long is *away*
/// (stopped, or dead with its interest still in the bucket): its window is no longer
/// waited for; messages that find it full are dropped and counted, and its window is
/// sent again every `AWAY` instead of every [`RESEND`], until an ack makes progress.
pub const AWAY: Duration = Duration::from_secs(10);

/// A destination missing from the routing table (its interest gone, or silent) keeps its
/// window this long before the window is dropped: the table can lack a node for a moment
/// (while it is read again after a reconnect), and its window must not go with that.
pub const GONE: Duration = Duration::from_secs(5);

/// An ack goes out once this many routed messages of one origin wait for one…
pub const ACK_EVERY: u64 = 256;
/// …or once the first of them has waited this long.
pub const ACK_DELAY: Duration = Duration::from_millis(5);

/// Origins a receiver keeps a sequence for; past it one is forgotten (its next message
/// is then taken as the first of an unknown incarnation). Nodes are bounded by
/// [`MAX_NODES`], and an origin's incarnations replace each other.
pub const ORIGINS: usize = 2 * MAX_NODES;

/// A message in a window: its subject and body as sent.
pub struct Sent {
    pub seq: u64,
    pub subject: String,
    pub body: Bytes,
}

/// The origin's stream to one destination node.
pub struct Stream {
    pub incarnation: u64,
    next_seq: u64,
    window: VecDeque<Sent>,
    /// The last ack progress, or when the window last became non-empty.
    progress: Instant,
    /// The last resend.
    resent: Instant,
    away: bool,
    /// Since when the destination is missing from the routing table.
    missing: Option<Instant>,
}

impl Stream {
    fn new(now: Instant) -> Stream {
        Stream {
            // Never 0, which frames use for "unsequenced".
            incarnation: fastrand::u64(1..),
            next_seq: 1,
            window: VecDeque::new(),
            progress: now,
            resent: now,
            away: false,
            missing: None,
        }
    }

    pub fn is_full(&self) -> bool {
        self.window.len() >= WINDOW
    }

    /// The (incarnation, sequence number) of the next message.
    pub fn next(&self) -> (u64, u64) {
        (self.incarnation, self.next_seq)
    }

    /// Keeps a message sent (or to be sent) with the number [`Stream::next`] gave.
    pub fn push(&mut self, subject: String, body: Bytes, now: Instant) {
        debug_assert!(!self.is_full());
        if self.window.is_empty() {
            self.progress = now;
        }
        self.window.push_back(Sent {
            seq: self.next_seq,
            subject,
            body,
        });
        self.next_seq += 1;
    }

    /// The window, oldest first, for a resend at `now`.
    pub fn resend(&mut self, now: Instant) -> impl Iterator<Item = &Sent> {
        self.resent = now;
        self.window.iter()
    }

    pub fn unacked(&self) -> usize {
        self.window.len()
    }
}

/// The origin's streams, by destination node.
#[derive(Default)]
pub struct Streams {
    by_node: HashMap<Arc<str>, Stream>,
}

/// What [`Streams::tick`] found.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Tick {
    /// Destinations whose window is due for a resend.
    pub resend: Vec<Arc<str>>,
    /// Messages dropped with the windows of destinations that left.
    pub dropped: usize,
    /// Messages in all windows.
    pub unacked: usize,
}

impl Streams {
    pub fn get(&self, node: &str) -> Option<&Stream> {
        self.by_node.get(node)
    }

    /// The stream to `node`, started if there is none.
    pub fn stream(&mut self, node: &Arc<str>, now: Instant) -> &mut Stream {
        self.by_node
            .entry(node.clone())
            .or_insert_with(|| Stream::new(now))
    }

    /// Whether a message for `node` must wait: its window is full, and it is not away.
    pub fn must_wait(&self, node: &str) -> bool {
        self.by_node
            .get(node)
            .is_some_and(|s| s.is_full() && !s.away)
    }

    pub fn nodes(&self) -> Vec<Arc<str>> {
        self.by_node.keys().cloned().collect()
    }

    pub fn resend(&mut self, node: &str, now: Instant) -> Option<impl Iterator<Item = &Sent>> {
        self.by_node.get_mut(node).map(|s| s.resend(now))
    }

    /// `node` routed everything of `incarnation` through `seq`: those leave its window.
    /// How many did (an ack of another incarnation is stale: none).
    pub fn acked(&mut self, node: &str, incarnation: u64, seq: u64, now: Instant) -> usize {
        let Some(s) = self.by_node.get_mut(node) else {
            return 0;
        };
        if s.incarnation != incarnation {
            return 0;
        }
        let mut popped = 0;
        while s.window.front().is_some_and(|m| m.seq <= seq) {
            s.window.pop_front();
            popped += 1;
        }
        if popped > 0 {
            s.progress = now;
            s.away = false;
        }
        popped
    }

    /// The periodic check: windows of destinations for which `routed` has been false
    /// for [`GONE`] are dropped; windows whose oldest message has had no ack progress for
    /// [`RESEND`] (and no resend since) are due for a resend; full windows without
    /// progress for [`AWAY`] are marked away.
    pub fn tick(&mut self, now: Instant, routed: impl Fn(&str) -> bool) -> Tick {
        let mut t = Tick::default();
        self.by_node.retain(|node, s| {
            if routed(node) {
                s.missing = None;
                return true;
            }
            if now.duration_since(*s.missing.get_or_insert(now)) < GONE {
                return true;
            }
            t.dropped += s.window.len();
            false
        });
        for (node, s) in &mut self.by_node {
            t.unacked += s.window.len();
            if s.window.is_empty() {
                continue;
            }
            // An away destination (dead, maybe) is tried far less often.
            let every = if s.away { AWAY } else { RESEND };
            if now.duration_since(s.progress.max(s.resent)) >= every {
                t.resend.push(node.clone());
            }
            if s.is_full() && now.duration_since(s.progress) >= AWAY {
                s.away = true;
            }
        }
        t
    }
}

/// What a receiver does with a sequenced message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Route,
    /// Routed before (a resend): dropped.
    Duplicate,
    /// Something before it is missing: dropped, the resend brings both.
    Gap,
}

/// One origin as a receiver reads it.
struct Origin {
    incarnation: u64,
    /// The next sequence number to route.
    next: u64,
    /// The highest one acknowledged.
    acked: u64,
    /// An ack is owed (routed messages not acked yet, or a duplicate or gap to answer),
    /// since then.
    owed_since: Option<Instant>,
}

/// An ack to send: to `origin`, for `incarnation`, everything through `seq` routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckDue {
    pub origin: Box<str>,
    pub incarnation: u64,
    pub seq: u64,
}

/// The destination's side: the next sequence number of each origin.
#[derive(Default)]
pub struct Receiver {
    origins: HashMap<Box<str>, Origin>,
}

impl Receiver {
    /// Whether the message `seq` of `incarnation` from `origin` is routed, at `now`.
    pub fn check(&mut self, origin: &str, incarnation: u64, seq: u64, now: Instant) -> Verdict {
        if !self.origins.contains_key(origin) && self.origins.len() >= ORIGINS {
            // Bounded: forget one (its next message starts it again, as a new one).
            if let Some(k) = self.origins.keys().next().cloned() {
                self.origins.remove(&k);
            }
        }
        let o = self.origins.entry(origin.into()).or_insert(Origin {
            incarnation: 0,
            next: 0,
            acked: 0,
            owed_since: None,
        });
        o.owed_since.get_or_insert(now);
        if o.incarnation != incarnation {
            // A stream this receiver has not read: taken from wherever it is.
            *o = Origin {
                incarnation,
                next: seq + 1,
                acked: 0,
                owed_since: Some(now),
            };
            return Verdict::Route;
        }
        match seq.cmp(&o.next) {
            std::cmp::Ordering::Equal => {
                o.next += 1;
                Verdict::Route
            }
            std::cmp::Ordering::Less => Verdict::Duplicate,
            std::cmp::Ordering::Greater => Verdict::Gap,
        }
    }

    /// The acks due at `now` (they are then taken as sent).
    pub fn acks_due(&mut self, now: Instant) -> Vec<AckDue> {
        let mut due = Vec::new();
        for (origin, o) in &mut self.origins {
            let Some(since) = o.owed_since else { continue };
            let through = o.next.saturating_sub(1);
            if through.saturating_sub(o.acked) < ACK_EVERY && now.duration_since(since) < ACK_DELAY
            {
                continue;
            }
            o.owed_since = None;
            o.acked = through;
            due.push(AckDue {
                origin: origin.clone(),
                incarnation: o.incarnation,
                seq: through,
            });
        }
        due
    }

    /// When the next ack falls due, if one is owed.
    pub fn next_due(&self) -> Option<Instant> {
        self.origins
            .values()
            .filter_map(|o| o.owed_since)
            .min()
            .map(|t| t + ACK_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_routes_in_order_drops_duplicates_and_gaps() {
        let t = Instant::now();
        let mut r = Receiver::default();
        assert_eq!(r.check("a", 7, 1, t), Verdict::Route);
        assert_eq!(r.check("a", 7, 2, t), Verdict::Route);
        // A resend of what was routed.
        assert_eq!(r.check("a", 7, 1, t), Verdict::Duplicate);
        assert_eq!(r.check("a", 7, 2, t), Verdict::Duplicate);
        // 3 was lost: 4 and 5 wait for the resend.
        assert_eq!(r.check("a", 7, 4, t), Verdict::Gap);
        assert_eq!(r.check("a", 7, 5, t), Verdict::Gap);
        assert_eq!(r.check("a", 7, 3, t), Verdict::Route);
        assert_eq!(r.check("a", 7, 4, t), Verdict::Route);
        // Another origin has its own numbers.
        assert_eq!(r.check("b", 1, 1, t), Verdict::Route);
        assert_eq!(r.check("b", 1, 3, t), Verdict::Gap);
        assert_eq!(r.check("a", 7, 5, t), Verdict::Route);
    }

    #[test]
    fn receiver_takes_a_new_incarnation_from_wherever_it_starts() {
        let t = Instant::now();
        let mut r = Receiver::default();
        // The receiver restarted: the origin's stream is at 500 already.
        assert_eq!(r.check("a", 7, 500, t), Verdict::Route);
        assert_eq!(r.check("a", 7, 499, t), Verdict::Duplicate);
        assert_eq!(r.check("a", 7, 501, t), Verdict::Route);
        // The origin started a new stream: its numbers start again.
        assert_eq!(r.check("a", 8, 1, t), Verdict::Route);
        assert_eq!(r.check("a", 8, 2, t), Verdict::Route);
        assert_eq!(r.check("a", 8, 501, t), Verdict::Gap);
    }

    #[test]
    fn receiver_acks_are_coalesced_and_cumulative() {
        let t = Instant::now();
        let mut r = Receiver::default();
        assert_eq!(r.next_due(), None);
        for seq in 1..=3 {
            r.check("a", 7, seq, t);
        }
        // Three routed: not yet due, until ACK_DELAY has passed.
        assert!(r.acks_due(t).is_empty());
        assert_eq!(r.next_due(), Some(t + ACK_DELAY));
        let ack = AckDue {
            origin: "a".into(),
            incarnation: 7,
            seq: 3,
        };
        assert_eq!(r.acks_due(t + ACK_DELAY), vec![ack.clone()]);
        assert!(r.acks_due(t + ACK_DELAY * 2).is_empty(), "sent once");
        // ACK_EVERY routed: due at once.
        for seq in 4..4 + ACK_EVERY {
            r.check("a", 7, seq, t);
        }
        assert_eq!(r.acks_due(t)[0].seq, 3 + ACK_EVERY);
        // A duplicate is answered with the same ack again.
        r.check("a", 7, 2, t);
        assert_eq!(r.acks_due(t + ACK_DELAY)[0].seq, 3 + ACK_EVERY);
    }

    #[test]
    fn receiver_table_is_bounded() {
        let t = Instant::now();
        let mut r = Receiver::default();
        for i in 0..ORIGINS * 2 {
            assert_eq!(r.check(&format!("n{i}"), 1, 1, t), Verdict::Route);
        }
        assert_eq!(r.origins.len(), ORIGINS);
    }

    fn body(seq: u64) -> Bytes {
        Bytes::from(seq.to_string())
    }

    #[test]
    fn origin_window_pops_on_acks_and_resends_when_stalled() {
        let t = Instant::now();
        let mut s = Streams::default();
        let b: Arc<str> = "b".into();
        for _ in 0..5 {
            let st = s.stream(&b, t);
            let (_, seq) = st.next();
            st.push("subj".into(), body(seq), t);
        }
        let inc = s.get("b").unwrap().incarnation;
        assert_ne!(inc, 0);
        // A stale incarnation's ack does nothing; a real one pops through its number.
        assert_eq!(s.acked("b", inc ^ 1, 3, t), 0);
        assert_eq!(s.acked("b", inc, 3, t), 3);
        assert_eq!(s.acked("b", inc, 3, t), 0);
        assert_eq!(s.get("b").unwrap().unacked(), 2);
        // No progress for RESEND: due; resent: not due again until RESEND later.
        assert!(s.tick(t, |_| true).resend.is_empty());
        let later = t + RESEND;
        assert_eq!(s.tick(later, |_| true).resend, vec![b.clone()]);
        let resent: Vec<u64> = s.resend("b", later).unwrap().map(|m| m.seq).collect();
        assert_eq!(resent, vec![4, 5], "the whole window, in order");
        assert!(s.tick(later, |_| true).resend.is_empty());
        // The destination left the table for a moment: its window stays.
        assert_eq!(s.tick(later, |n| n != "b").dropped, 0);
        assert_eq!(s.tick(later + GONE / 2, |_| true).dropped, 0);
        assert_eq!(s.tick(later + GONE, |n| n != "b").dropped, 0);
        assert_eq!(s.get("b").unwrap().unacked(), 2);
        // It stayed out for GONE: its window goes, counted.
        let tick = s.tick(later + GONE * 2, |n| n != "b");
        assert_eq!(tick.dropped, 2);
        assert!(s.get("b").is_none());
        // It comes back as a new stream.
        assert_ne!(s.stream(&b, later).next(), (inc, 6));
    }

    #[test]
    fn a_full_window_is_waited_for_until_the_destination_is_away() {
        let t = Instant::now();
        let mut s = Streams::default();
        let b: Arc<str> = "b".into();
        for _ in 0..WINDOW {
            assert!(!s.must_wait("b"));
            let st = s.stream(&b, t);
            st.push("subj".into(), Bytes::new(), t);
        }
        assert!(s.must_wait("b"));
        s.tick(t + AWAY / 2, |_| true);
        assert!(s.must_wait("b"));
        s.tick(t + AWAY, |_| true);
        assert!(!s.must_wait("b"), "away");
        // Resent every AWAY now, not every RESEND.
        assert_eq!(s.tick(t + AWAY, |_| true).resend, vec![b.clone()]);
        s.resend("b", t + AWAY).unwrap().count();
        assert!(s.tick(t + AWAY + RESEND, |_| true).resend.is_empty());
        assert_eq!(s.tick(t + AWAY * 2, |_| true).resend, vec![b.clone()]);
        // Progress again: waited for again once full.
        let inc = s.get("b").unwrap().incarnation;
        assert_eq!(s.acked("b", inc, 1, t + AWAY), 1);
        let st = s.stream(&b, t);
        st.push("subj".into(), Bytes::new(), t);
        assert!(s.must_wait("b"));
    }
}
