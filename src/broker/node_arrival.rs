//! A session that moved here from another node, while the stub it left there forwards
//! (`cluster::STUB_GRACE`): each message must reach it once and in its publisher's
//! order, though it may come both straight from its publishing node and through the
//! stub, and the stub's path is the slower one.
//!
//! Every publish carries its number ([`PubNumber`]), and every node routes one
//! publishing shard's messages in the order of their numbers. So:
//!
//! - A copy routed here straight is not delivered if the session's old shard had routed
//!   it before the session left (`had`, from the image): the session got it there, or
//!   the stub forwards it.
//! - While the stub forwards ([`NodeArrival::hold_until_ms`]), a copy routed here
//!   straight is *held*: the stub forwards it too, after every older one of its
//!   publisher that reached the old node. It is delivered when that twin comes (or a
//!   later number of the same publisher does: the stub did not have it), in number
//!   order with what the stub forwards; what is still held when the stub has ended is
//!   delivered then, in order.
//! - Every copy delivered or held is remembered by its number, at most
//!   [`NodeArrival::MAX_SEEN`], so a second copy of one is not delivered; the memory is
//!   kept twice as long as the stub forwards, for what is still on its way.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::session::{PubNumber, Queued};

/// What a session that moved here from another node knows of what it got.
#[derive(Debug, Default)]
pub struct NodeArrival {
    pub had: HashMap<(u32, u16), u64>,
    seen: HashSet<PubNumber>,
    order: VecDeque<PubNumber>,
    /// Copies routed here straight, waiting for what the stub forwards before them, by
    /// publishing node, shard and number.
    held: BTreeMap<(u32, u16, u64), Queued>,
    /// Numbers forgotten (past [`NodeArrival::MAX_SEEN`]) or held copies let go early
    /// (past [`NodeArrival::MAX_HELD`]) since the caller last counted them.
    pub forgotten: u64,
    pub let_go: u64,
    /// Until when copies routed here straight are held (shard clock, ms; 0: the session
    /// is on its way).
    pub hold_until_ms: u64,
    /// Until when this is kept (shard clock, ms; 0: the session is on its way).
    pub until_ms: u64,
}

/// What [`NodeArrival`] says of one copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Deliver,
    /// Routed here straight while the stub forwards: kept until its turn
    /// ([`NodeArrival::hold`]).
    Hold,
    /// The session had it on its old node, or got it here already.
    Duplicate,
}

impl NodeArrival {
    /// Numbers remembered; past it the oldest is forgotten (a second copy of it would be
    /// delivered).
    pub const MAX_SEEN: usize = 65_536;
    /// Copies held; past it the lowest is delivered at once (it may then come before
    /// an older one the stub still forwards).
    pub const MAX_HELD: usize = 16_384;

    pub fn new(had: HashMap<(u32, u16), u64>, seen: impl IntoIterator<Item = PubNumber>) -> Self {
        let mut a = NodeArrival {
            had,
            ..NodeArrival::default()
        };
        for n in seen {
            a.remember(n);
        }
        a.forgotten = 0;
        a
    }

    /// The session is installed at `now_ms`: the stub on its old node forwards for
    /// `forwards_ms` more at most.
    pub fn start(&mut self, now_ms: u64, forwards_ms: u64) {
        self.hold_until_ms = now_ms + forwards_ms;
        self.until_ms = now_ms + 2 * forwards_ms;
    }

    /// A copy routed here straight from its publishing node, at `now_ms`.
    pub fn admit_direct(&mut self, n: PubNumber, now_ms: u64) -> Admit {
        if self.had.get(&(n.node, n.shard)).is_some_and(|&h| n.n <= h) {
            return Admit::Duplicate;
        }
        if !self.remember(n) {
            return Admit::Duplicate;
        }
        if now_ms < self.hold_until_ms {
            Admit::Hold
        } else {
            Admit::Deliver
        }
    }

    /// Keeps `q` (numbered `n`, [`Admit::Hold`]) until its turn; returns the lowest held
    /// copy if there is no more room (to be delivered now).
    pub fn hold(&mut self, n: PubNumber, q: Queued) -> Option<Queued> {
        self.held.insert((n.node, n.shard, n.n), q);
        if self.held.len() <= Self::MAX_HELD {
            return None;
        }
        self.let_go += 1;
        self.held.pop_first().map(|(_, q)| q)
    }

    /// A copy the stub on the old node forwarded: first the held copies of its publisher
    /// up to its number, in order (into `release`), then what to do with it.
    pub fn admit_forwarded(&mut self, n: PubNumber, release: &mut Vec<Queued>) -> Admit {
        let due: Vec<(u32, u16, u64)> = self
            .held
            .range((n.node, n.shard, 0)..=(n.node, n.shard, n.n))
            .map(|(k, _)| *k)
            .collect();
        release.extend(due.iter().filter_map(|k| self.held.remove(k)));
        if self.remember(n) {
            Admit::Deliver
        } else {
            Admit::Duplicate
        }
    }

    /// Every held copy, in order: the stub has ended (or the session leaves).
    pub fn release_all(&mut self) -> Vec<Queued> {
        std::mem::take(&mut self.held).into_values().collect()
    }

    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether copies are held and their time is up at `now_ms`.
    pub fn hold_is_over(&self, now_ms: u64) -> bool {
        !self.held.is_empty() && now_ms >= self.hold_until_ms
    }

    /// Remembers `n`; false if it was remembered already.
    fn remember(&mut self, n: PubNumber) -> bool {
        if !self.seen.insert(n) {
            return false;
        }
        self.order.push_back(n);
        if self.order.len() > Self::MAX_SEEN
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
            self.forgotten += 1;
        }
        true
    }

    /// The numbers remembered, oldest first (for a session moving on).
    pub fn seen(&self) -> impl Iterator<Item = &PubNumber> {
        self.order.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::session::{Message, SubIds};
    use ringmq_proto::mqtt::QoS;
    use std::sync::Arc;

    fn n(shard: u16, n: u64) -> PubNumber {
        PubNumber { node: 7, shard, n }
    }

    fn copy(text: &str) -> Queued {
        Queued {
            msg: Arc::new(Message::new(
                "t",
                &[],
                text.as_bytes(),
                QoS::AtLeastOnce,
                false,
                None,
                None,
            )),
            qos: QoS::AtLeastOnce,
            retain: false,
            sub_ids: SubIds::default(),
            store_id: 0,
        }
    }

    fn texts(v: &[Queued]) -> Vec<String> {
        v.iter()
            .map(|q| String::from_utf8_lossy(q.msg.payload()).into_owned())
            .collect()
    }

    /// The stub forwards 11 and 13 (the publisher's 12 never reached the old node);
    /// 12, 13 and 14 come straight first. Delivered: 11, 12, 13 in order, each once;
    /// 14 when the stub has ended.
    #[test]
    fn straight_copies_wait_for_the_stub_and_go_in_number_order() {
        let mut a = NodeArrival::new(HashMap::from([((7, 0), 10)]), []);
        a.start(1000, 100);
        assert_eq!(a.admit_direct(n(0, 10), 1000), Admit::Duplicate, "had");
        for i in 12..=14 {
            assert_eq!(a.admit_direct(n(0, i), 1000), Admit::Hold);
            assert!(a.hold(n(0, i), copy(&i.to_string())).is_none());
        }
        let mut release = Vec::new();
        assert_eq!(a.admit_forwarded(n(0, 11), &mut release), Admit::Deliver);
        assert!(release.is_empty());
        assert_eq!(a.admit_forwarded(n(0, 13), &mut release), Admit::Duplicate);
        assert_eq!(texts(&release), ["12", "13"]);
        // Another publishing shard's copies are not released by this one's.
        assert_eq!(a.admit_direct(n(1, 5), 1050), Admit::Hold);
        assert!(a.hold(n(1, 5), copy("s1")).is_none());
        assert!(!a.hold_is_over(1099));
        assert!(a.hold_is_over(1100));
        assert_eq!(texts(&a.release_all()), ["14", "s1"]);
        // Once the stub has ended, straight copies go at once, still once.
        assert_eq!(a.admit_direct(n(0, 15), 1100), Admit::Deliver);
        assert_eq!(a.admit_forwarded(n(0, 15), &mut release), Admit::Duplicate);
        assert_eq!(a.admit_direct(n(0, 14), 1100), Admit::Duplicate);
    }

    #[test]
    fn what_is_remembered_and_held_is_bounded() {
        let mut a = NodeArrival::new(HashMap::new(), []);
        a.start(0, 100);
        let mut let_go = Vec::new();
        for i in 0..(NodeArrival::MAX_HELD as u64 + 2) {
            assert_eq!(a.admit_direct(n(0, i), 0), Admit::Hold);
            let_go.extend(a.hold(n(0, i), copy(&i.to_string())));
        }
        // The lowest go first.
        assert_eq!(texts(&let_go), ["0", "1"]);
        assert_eq!(a.let_go, 2);
        let mut b = NodeArrival::new(HashMap::new(), []);
        for i in 0..(NodeArrival::MAX_SEEN as u64 + 3) {
            assert_eq!(b.admit_direct(n(0, i), 0), Admit::Deliver);
        }
        assert_eq!(b.forgotten, 3);
        assert_eq!(b.seen().count(), NodeArrival::MAX_SEEN);
        assert_eq!(b.admit_direct(n(0, 0), 0), Admit::Deliver, "forgotten");
    }
}
