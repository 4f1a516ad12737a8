//! Loss, duplicate and reorder accounting per (subscriber, publisher) pair.
//!
//! Each publisher numbers its messages per topic 0, 1, 2, …; a subscriber keeps, per
//! publisher it hears from, the next sequence number it expects and which of the last
//! [`WINDOW`] numbers it has seen. A number past the expected one opens a gap (counted
//! lost until it is filled); a number inside the window is a duplicate if seen, otherwise
//! a late arrival that fills a gap (out of order); a number older than the window is
//! counted as a late arrival too. The final loss figure of a run is exact and comes from
//! elsewhere (expected deliveries minus unique ones, `run.rs`); the gap count here is the
//! live figure shown while running.

/// How many sequence numbers behind the highest one a subscriber remembers.
pub const WINDOW: u64 = 128;

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The next expected number.
    InOrder,
    /// Ahead of the expected number: this many messages in between are missing so far.
    Gap(u64),
    /// Behind the highest number and not seen before: it fills a gap.
    Late,
    /// Already seen.
    Duplicate,
}

/// The state of one (subscriber, publisher) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairState {
    /// One past the highest number seen.
    next: u64,
    /// Bit `i` set: number `next - 1 - i` was seen.
    seen: u128,
}

impl PairState {
    /// One past the highest sequence number received: the count the publisher must have
    /// sent at least.
    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn record(&mut self, seq: u64) -> Outcome {
        if seq >= self.next {
            let gap = seq - self.next;
            let shift = gap + 1;
            self.seen = if shift >= WINDOW {
                1
            } else {
                (self.seen << shift) | 1
            };
            self.next = seq + 1;
            return if gap == 0 {
                Outcome::InOrder
            } else {
                Outcome::Gap(gap)
            };
        }
        let age = self.next - 1 - seq;
        if age >= WINDOW {
            // Too old to tell; a duplicate that late is far less likely than a straggler.
            return Outcome::Late;
        }
        let bit = 1u128 << age;
        if self.seen & bit != 0 {
            Outcome::Duplicate
        } else {
            self.seen |= bit;
            Outcome::Late
        }
    }
}

/// Counters summed over pairs (and over subscribers, workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqCounters {
    /// Every arrival of a message of this run.
    pub received: u64,
    /// Arrivals that were not duplicates.
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Messages skipped by gaps so far…
    pub gaps: u64,
    /// …and those of them that arrived later.
    pub filled: u64,
}

impl SeqCounters {
    pub fn apply(&mut self, outcome: Outcome) {
        self.received += 1;
        match outcome {
            Outcome::InOrder => self.unique += 1,
            Outcome::Gap(n) => {
                self.unique += 1;
                self.gaps += n;
            }
            Outcome::Late => {
                self.unique += 1;
                self.out_of_order += 1;
                self.filled += 1;
            }
            Outcome::Duplicate => self.duplicates += 1,
        }
    }

    /// Messages missing in gaps now (the live loss figure).
    pub fn missing(&self) -> u64 {
        self.gaps.saturating_sub(self.filled)
    }

    pub fn add(&mut self, o: &SeqCounters) {
        self.received += o.received;
        self.unique += o.unique;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.gaps += o.gaps;
        self.filled += o.filled;
    }
}

/// A subscriber's pairs, by publisher number.
#[derive(Debug, Clone)]
pub enum SeqTable {
    /// Every publisher of the run has a place: for fan-out and fan-in, where each
    /// subscriber hears from all publishers.
    Dense(Vec<PairState>),
    /// Only the publishers heard from, searched linearly: for pairs, where each subscriber
    /// hears from a few publishers out of many.
    Sparse(Vec<(u32, PairState)>),
}

impl SeqTable {
    pub fn dense(publishers: u32) -> SeqTable {
        SeqTable::Dense(vec![PairState::default(); publishers as usize])
    }

    pub fn sparse() -> SeqTable {
        SeqTable::Sparse(Vec::new())
    }

    /// The pair for `publisher`; `None` for a dense table that has no such publisher.
    pub fn pair(&mut self, publisher: u32) -> Option<&mut PairState> {
        match self {
            SeqTable::Dense(v) => v.get_mut(publisher as usize),
            SeqTable::Sparse(v) => {
                let i = match v.iter().position(|(p, _)| *p == publisher) {
                    Some(i) => i,
                    None => {
                        v.push((publisher, PairState::default()));
                        v.len() - 1
                    }
                };
                Some(&mut v[i].1)
            }
        }
    }

    /// `next()` of the pair for `publisher`, 0 when never heard from.
    pub fn next_of(&self, publisher: u32) -> u64 {
        match self {
            SeqTable::Dense(v) => v.get(publisher as usize).map_or(0, PairState::next),
            SeqTable::Sparse(v) => v
                .iter()
                .find(|(p, _)| *p == publisher)
                .map_or(0, |(_, s)| s.next()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seqs: &[u64]) -> (SeqCounters, PairState) {
        let mut st = PairState::default();
        let mut c = SeqCounters::default();
        for &s in seqs {
            c.apply(st.record(s));
        }
        (c, st)
    }

    #[test]
    fn in_order_stream_counts_nothing_wrong() {
        let seqs: Vec<u64> = (0..1000).collect();
        let (c, st) = feed(&seqs);
        assert_eq!(c.received, 1000);
        assert_eq!(c.unique, 1000);
        assert_eq!((c.duplicates, c.out_of_order, c.missing()), (0, 0, 0));
        assert_eq!(st.next(), 1000);
    }

    #[test]
    fn gaps_count_as_missing() {
        let (c, st) = feed(&[0, 1, 4, 5, 9]);
        assert_eq!(c.unique, 5);
        assert_eq!(c.missing(), 2 + 3);
        assert_eq!(c.out_of_order, 0);
        assert_eq!(st.next(), 10);
    }

    #[test]
    fn a_late_arrival_fills_its_gap_and_counts_out_of_order() {
        let (c, _) = feed(&[0, 2, 1, 3]);
        assert_eq!(c.unique, 4);
        assert_eq!(c.missing(), 0);
        assert_eq!(c.out_of_order, 1);
        assert_eq!(c.duplicates, 0);
    }

    #[test]
    fn repeats_are_duplicates_not_losses() {
        let (c, _) = feed(&[0, 1, 1, 2, 0, 2, 2]);
        assert_eq!(c.received, 7);
        assert_eq!(c.unique, 3);
        assert_eq!(c.duplicates, 4);
        assert_eq!((c.missing(), c.out_of_order), (0, 0));
    }

    #[test]
    fn a_late_message_seen_twice_is_one_reorder_and_one_duplicate() {
        let (c, _) = feed(&[0, 3, 1, 1, 2]);
        assert_eq!(c.unique, 4);
        assert_eq!(c.out_of_order, 2);
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.missing(), 0);
    }

    #[test]
    fn window_edges() {
        // A number exactly WINDOW - 1 behind is still remembered.
        let mut seqs: Vec<u64> = (0..WINDOW + 10).collect();
        seqs.push(10);
        let (c, _) = feed(&seqs);
        assert_eq!(c.duplicates, 1);
        // A gap wider than the window: the missing numbers arrive late, each once.
        let mut seqs = vec![0, WINDOW * 3];
        seqs.extend(1..WINDOW * 3);
        let (c, st) = feed(&seqs);
        assert_eq!(c.unique, WINDOW * 3 + 1);
        assert_eq!(c.missing(), 0);
        assert_eq!(c.out_of_order, WINDOW * 3 - 1);
        assert_eq!(st.next(), WINDOW * 3 + 1);
    }

    #[test]
    fn the_first_message_need_not_be_zero() {
        // A subscriber that joins late (or lost the first messages) sees a gap from 0.
        let (c, _) = feed(&[5, 6]);
        assert_eq!(c.missing(), 5);
    }

    #[test]
    fn tables_find_pairs_by_publisher() {
        let mut dense = SeqTable::dense(3);
        assert!(dense.pair(3).is_none());
        dense.pair(2).unwrap().record(0);
        assert_eq!(dense.next_of(2), 1);
        assert_eq!(dense.next_of(0), 0);
        let mut sparse = SeqTable::sparse();
        sparse.pair(1000).unwrap().record(4);
        sparse.pair(7).unwrap().record(0);
        sparse.pair(1000).unwrap().record(5);
        assert_eq!(sparse.next_of(1000), 6);
        assert_eq!(sparse.next_of(7), 1);
        assert_eq!(sparse.next_of(8), 0);
    }
}
