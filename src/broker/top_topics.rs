//! The busiest topics a shard has seen published, by rate: a Space-Saving sketch
//! (Metwally, Agrawal, El Abbadi, 2005) of [`TOP_TOPICS`] counters, in fixed memory
//! whatever the number of topics.
//!
//! Each PUBLISH that enters the shard (a client's or the API's) counts its topic: a topic
//! already counted gains one; a new one takes the counter with the smallest count and
//! starts from that count plus one (Space-Saving's overestimate, at most that smallest
//! count, so a topic published more often than `1/K` of the time is always counted).
//! Once a second (`tick`) each counter's arrivals since the last tick, per second, are
//! averaged into its rate (an exponentially weighted mean, each tick weighing half), and
//! every count is halved, so a topic that stopped being published fades from the list and
//! gives its counter up to newer ones within a few seconds.
//!
//! The per-publish cost is a hash of the topic and a scan of `K` hashes (one more scan on a
//! miss); the topic's text is copied into the counter's buffer, whose capacity is reused,
//! so nothing is allocated once the buffers are as long as the topics.

use std::hash::BuildHasher;

/// Counters per shard: the most topics one shard can name.
pub const TOP_TOPICS: usize = 64;

/// One counter of the sketch.
#[derive(Default)]
struct Slot {
    /// Arrivals counted (halved each tick), the overestimate inherited on replacement
    /// included.
    count: u64,
    /// `count` at the last tick (or when this topic took the counter).
    at_tick: u64,
    /// Arrivals per second, smoothed over the last few ticks.
    rate: f64,
    /// The topic took the counter since the last tick: its first rate is not smoothed.
    fresh: bool,
    topic: String,
}

/// A shard's top topics.
pub struct TopTopics {
    /// Each counter's topic hash; 0 marks a free counter (a topic hashing to 0 counts as
    /// 1: a rare collision costs only a string comparison).
    hashes: [u64; TOP_TOPICS],
    slots: Box<[Slot]>,
    hasher: hashbrown::DefaultHashBuilder,
    /// Shard time of the last tick (ms).
    last_tick_ms: u64,
}

impl Default for TopTopics {
    fn default() -> Self {
        TopTopics {
            hashes: [0; TOP_TOPICS],
            slots: (0..TOP_TOPICS).map(|_| Slot::default()).collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            last_tick_ms: 0,
        }
    }
}

impl TopTopics {
    /// Counts one PUBLISH to `topic`.
    pub fn count(&mut self, topic: &str) {
        let h = self.hasher.hash_one(topic).max(1);
        if let Some(i) = self
            .hashes
            .iter()
            .position(|&x| x == h)
            .filter(|&i| self.slots[i].topic == topic)
        {
            self.slots[i].count += 1;
            return;
        }
        // The counter with the smallest count (a free one has 0) goes to this topic.
        let (i, min) = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.count))
            .min_by_key(|&(_, c)| c)
            .unwrap_or((0, 0));
        let slot = &mut self.slots[i];
        slot.topic.clear();
        slot.topic.push_str(topic);
        slot.count = min + 1;
        slot.at_tick = min;
        slot.rate = 0.0;
        slot.fresh = true;
        self.hashes[i] = h;
    }

    /// Rates below this (per second) count as none: the counter is free again.
    const FADED: f64 = 0.01;

    /// Averages the arrivals since the last tick into the rates and halves the counts.
    pub fn tick(&mut self, now_ms: u64) {
        let elapsed_ms = now_ms.saturating_sub(self.last_tick_ms);
        self.last_tick_ms = now_ms;
        if elapsed_ms == 0 {
            return;
        }
        let seconds = elapsed_ms as f64 / 1000.0;
        for (h, s) in self.hashes.iter_mut().zip(self.slots.iter_mut()) {
            if *h == 0 {
                continue;
            }
            let now = (s.count - s.at_tick.min(s.count)) as f64 / seconds;
            s.rate = if s.fresh { now } else { (s.rate + now) / 2.0 };
            s.fresh = false;
            s.count /= 2;
            s.at_tick = s.count;
            if s.count == 0 && s.rate < Self::FADED {
                // Not published for a while: the counter is free again.
                *h = 0;
                s.topic.clear();
            }
        }
    }

    /// The counted topics with a rate, busiest first.
    pub fn rates(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self
            .hashes
            .iter()
            .zip(self.slots.iter())
            .filter(|(h, s)| **h != 0 && s.rate >= Self::FADED)
            .map(|(_, s)| (s.topic.clone(), s.rate))
            .collect();
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_arrivals_between_ticks() {
        let mut t = TopTopics::default();
        t.tick(1000);
        for _ in 0..30 {
            t.count("a");
        }
        for _ in 0..10 {
            t.count("b");
        }
        t.tick(3000);
        assert_eq!(t.rates(), vec![("a".into(), 15.0), ("b".into(), 5.0)]);
        for _ in 0..9 {
            t.count("b");
        }
        t.tick(4000);
        assert_eq!(
            t.rates(),
            vec![("a".into(), 7.5), ("b".into(), 7.0)],
            "a, not published, fades to half; b averages 5 and 9"
        );
    }

    #[test]
    fn heavy_topics_survive_a_flood_of_distinct_ones() {
        let mut t = TopTopics::default();
        t.tick(0);
        // 20 % of a stream on one topic, the rest each on a topic of its own: far more
        // topics than counters.
        for i in 0..10_000 {
            if i % 5 == 0 {
                t.count("hot/topic");
            } else {
                t.count(&format!("cold/{i}"));
            }
        }
        t.tick(1000);
        let rates = t.rates();
        assert_eq!(rates[0].0, "hot/topic");
        // Space-Saving never undercounts a topic it holds.
        assert!(rates[0].1 >= 2000.0, "{:?}", rates[0]);
        assert!(rates.len() <= TOP_TOPICS);
    }

    #[test]
    fn a_topic_that_stops_fades_and_gives_its_counter_up() {
        let mut t = TopTopics::default();
        t.tick(0);
        t.count("once");
        t.tick(1000);
        assert_eq!(t.rates(), vec![("once".into(), 1.0)]);
        t.tick(2000);
        assert_eq!(t.rates(), vec![("once".into(), 0.5)]);
        for s in 3..10 {
            t.tick(s * 1000);
        }
        assert!(t.rates().is_empty());
        assert!(t.hashes.iter().all(|&h| h == 0));
    }
}
