//! A hashed timing wheel: one per shard, holding the keepalive, handshake and CONNECT
//! deadlines of every connection the shard owns.
//!
//! Up to a million connections per process each need a deadline that moves on every
//! packet. One kernel timeout per connection would cost a syscall per move; a heap would
//! cost `O(log n)` per move. The wheel costs `O(1)` per insert and never cancels:
//!
//! - **Lazy re-arming.** A connection keeps its own current deadline and at most one wheel
//!   entry. When its deadline moves later, nothing happens in the wheel. When the entry
//!   fires, the runtime compares it with the connection's deadline: if the deadline has
//!   moved, it inserts a new entry for the new deadline; otherwise the timer really
//!   expired. Only a deadline that moves *earlier* needs an extra entry (the stale one
//!   then fires harmlessly later).
//! - **Hashing.** Time is cut into ticks of `tick_ms`; an entry goes into slot
//!   `tick(deadline) mod slots`. [`TimerWheel::advance`] walks the slots from the last
//!   tick it saw to the current one and fires the entries whose deadline has passed. An
//!   entry more than one revolution away stays in its slot and is skipped (it is looked
//!   at once per revolution) until its deadline comes.
//! - **Exactness.** Entries keep their deadline in milliseconds, so an entry fires on the
//!   first `advance(now)` with `now ≥ deadline`: never early, and never later than that
//!   call, whatever the tick. The tick only sets how fine-grained the sleep hint is
//!   ([`TimerWheel::next_deadline_hint_ms`]): a caller that sleeps as the hint says is at
//!   most one tick late.
//!
//! Memory: an entry is 16 bytes (key and deadline, both `u64`); each slot is a `Vec` that
//! is cleared in place, never freed, so a wheel in steady state does not allocate.
//!
//! `advance` fires through a callback while it holds `&mut self`, so the callback cannot
//! re-insert into the wheel. The runtime collects the fired keys first
//! ([`TimerWheel::advance_into`] into a reused `Vec`), then looks each one up and
//! re-inserts where the deadline moved.

/// One pending timer.
#[derive(Debug)]
struct Entry {
    /// The caller's key (typically a connection's slab index and generation).
    key: u64,
    /// Absolute deadline, in the caller's milliseconds.
    deadline_ms: u64,
}

/// A hashed timing wheel of `u64` keys with millisecond deadlines. See the module docs.
#[derive(Debug)]
pub struct TimerWheel {
    tick_ms: u64,
    start_ms: u64,
    /// `slots.len() - 1`; the slot count is a power of two.
    mask: u64,
    slots: Box<[Vec<Entry>]>,
    /// One bit per slot, set while the slot is non-empty, so the sleep hint finds the next
    /// busy slot a word (64 slots) at a time.
    occupied: Box<[u64]>,
    /// The tick of the latest `advance` (or of `start_ms`). Every slot of an earlier tick
    /// has been processed; this tick's slot is looked at again by the next `advance`.
    cursor: u64,
    /// The largest `now_ms` seen, from which the sleep hint is measured.
    last_now_ms: u64,
    /// Set when an insert since the last `advance` was already due.
    due_pending: bool,
    len: usize,
}

impl TimerWheel {
    /// A wheel with ticks of `tick_ms` and `slots` slots (rounded up to a power of two),
    /// whose clock starts at `start_ms`. One revolution spans `tick_ms × slots`; deadlines
    /// further out are fine, they are just looked at once per revolution.
    ///
    /// # Panics
    ///
    /// If `tick_ms` is 0, or the slot count overflows when rounded up.
    pub fn new(tick_ms: u64, slots: usize, start_ms: u64) -> Self {
        assert!(tick_ms > 0, "timer wheel tick must be at least 1 ms");
        let slots = slots
            .max(1)
            .checked_next_power_of_two()
            .expect("timer wheel slot count overflows usize");
        TimerWheel {
            tick_ms,
            start_ms,
            mask: slots as u64 - 1,
            slots: (0..slots).map(|_| Vec::new()).collect(),
            occupied: vec![0; slots.div_ceil(64)].into_boxed_slice(),
            cursor: 0,
            last_now_ms: start_ms,
            due_pending: false,
            len: 0,
        }
    }

    /// The tick that contains `ms`; times before the start count as tick 0.
    fn tick_of(&self, ms: u64) -> u64 {
        ms.saturating_sub(self.start_ms) / self.tick_ms
    }

    /// The slot index for a tick.
    fn slot_of(&self, tick: u64) -> usize {
        // The mask is below the slot count, which is a `usize`, so this never truncates.
        (tick & self.mask) as usize
    }

    /// Adds an entry that fires on the first `advance` with `now_ms ≥ deadline_ms`.
    ///
    /// A deadline already reached (in the past, or earlier in the current tick) fires on
    /// the next `advance`; one beyond a revolution waits in its slot for its round. The
    /// same key may be inserted several times; each entry fires once.
    pub fn insert(&mut self, deadline_ms: u64, key: u64) {
        // An entry never goes into a slot behind the cursor: that slot would next be
        // visited a whole revolution later. A deadline before the cursor's tick goes into
        // the cursor's slot, which every `advance` looks at first.
        let tick = self.tick_of(deadline_ms).max(self.cursor);
        let slot = self.slot_of(tick);
        self.slots[slot].push(Entry { key, deadline_ms });
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.due_pending |= deadline_ms <= self.last_now_ms;
        self.len += 1;
    }

    /// Fires (calls `fire` with the key of) every entry whose deadline is `≤ now_ms`, in no
    /// particular order, and removes it. Never fires an entry early.
    ///
    /// Costs one step per tick passed since the last call, capped at one revolution (a
    /// jump over many revolutions visits each slot once), plus one step per entry in the
    /// visited slots. `now_ms` should not go backwards; if it does, only the current tick's
    /// slot is looked at.
    pub fn advance(&mut self, now_ms: u64, mut fire: impl FnMut(u64)) {
        let target = self.tick_of(now_ms).max(self.cursor);
        let slot_count = self.mask + 1;
        // Ticks `cursor..=target`, but each slot at most once.
        let steps = (target - self.cursor).saturating_add(1).min(slot_count);
        let mut fired = 0;
        for step in 0..steps {
            let slot = self.slot_of(self.cursor.wrapping_add(step));
            let bucket = &mut self.slots[slot];
            if bucket.is_empty() {
                continue;
            }
            // `retain` keeps the bucket's capacity: no allocation once the wheel is warm.
            bucket.retain(|entry| {
                if entry.deadline_ms <= now_ms {
                    fire(entry.key);
                    fired += 1;
                    false
                } else {
                    true
                }
            });
            if bucket.is_empty() {
                self.occupied[slot / 64] &= !(1 << (slot % 64));
            }
        }
        self.len -= fired;
        self.cursor = target;
        self.last_now_ms = self.last_now_ms.max(now_ms);
        self.due_pending = false;
    }

    /// [`advance`](Self::advance), appending the fired keys to `out` (which is not cleared
    /// first). With a `Vec` kept across calls this allocates nothing in steady state, and
    /// the caller is free to re-insert while walking `out`.
    pub fn advance_into(&mut self, now_ms: u64, out: &mut Vec<u64>) {
        self.advance(now_ms, |key| out.push(key));
    }

    /// How many entries are pending.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no entry is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How long, in milliseconds from the `now_ms` of the latest `advance` (or from
    /// `start_ms`), the caller may sleep before it should call `advance` again; `None`
    /// when the wheel is empty.
    ///
    /// It is 0 when an entry inserted since the last `advance` is already due. Otherwise
    /// it is the time to the start of the next tick whose slot holds entries, or to the end
    /// of the current tick when the current slot holds entries: sleeping that long makes a
    /// timer at most one tick late. Entries a revolution or more away may wake the caller
    /// early; it then just calls `advance` and asks again.
    pub fn next_deadline_hint_ms(&self) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        if self.due_pending {
            return Some(0);
        }
        let from = self.slot_of(self.cursor);
        let distance = self
            .next_occupied_distance(from)
            .expect("a non-empty wheel has an occupied slot");
        // Entries in the cursor's own slot may be due later in this tick: wake at its end.
        let wake_tick = self.cursor.saturating_add(distance.max(1) as u64);
        let wake_ms = self
            .start_ms
            .saturating_add(wake_tick.saturating_mul(self.tick_ms));
        Some(wake_ms.saturating_sub(self.last_now_ms))
    }

    /// How many slots forward from slot `from` (0 for `from` itself) the first non-empty
    /// slot is, wrapping around; `None` if every slot is empty.
    fn next_occupied_distance(&self, from: usize) -> Option<usize> {
        let words = self.occupied.len();
        let (first_word, first_bit) = (from / 64, from % 64);
        // The bits at or after `from` in its own word, then the following words, then,
        // back in the first word, the bits before `from`.
        let ahead = self.occupied[first_word] & (u64::MAX << first_bit);
        let found = if ahead != 0 {
            Some(first_word * 64 + ahead.trailing_zeros() as usize)
        } else {
            (1..=words).find_map(|i| {
                let word = (first_word + i) % words;
                let mut bits = self.occupied[word];
                if i == words {
                    bits &= !(u64::MAX << first_bit);
                }
                (bits != 0).then(|| word * 64 + bits.trailing_zeros() as usize)
            })
        };
        found.map(|slot| slot.wrapping_sub(from) & self.mask as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: a seeded generator, so failures replay exactly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn entries_are_16_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
    }

    #[test]
    fn rounds_slots_and_fires_in_order_of_time() {
        let mut wheel = TimerWheel::new(10, 6, 1_000);
        assert_eq!(wheel.slots.len(), 8);
        assert_eq!(wheel.next_deadline_hint_ms(), None);
        wheel.insert(1_025, 1);
        wheel.insert(1_050, 2);
        assert_eq!(wheel.len(), 2);
        let mut out = Vec::new();
        wheel.advance_into(1_024, &mut out);
        assert!(out.is_empty(), "never early");
        wheel.advance_into(1_025, &mut out);
        assert_eq!(out, [1]);
        wheel.advance_into(1_049, &mut out);
        assert_eq!(out, [1]);
        wheel.advance_into(1_050, &mut out);
        assert_eq!(out, [1, 2]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn past_and_current_tick_deadlines_fire_on_the_next_advance() {
        let mut wheel = TimerWheel::new(10, 8, 0);
        let mut out = Vec::new();
        wheel.advance_into(1_234, &mut out);
        wheel.insert(5, 1); // long past
        wheel.insert(1_230, 2); // earlier in the current tick
        wheel.insert(1_234, 3); // exactly now
        assert_eq!(wheel.next_deadline_hint_ms(), Some(0));
        wheel.advance_into(1_234, &mut out);
        out.sort_unstable();
        assert_eq!(out, [1, 2, 3]);
        assert_eq!(wheel.next_deadline_hint_ms(), None);
    }

    #[test]
    fn deadlines_beyond_a_revolution_wait_for_their_round() {
        // One revolution is 8 × 10 ms = 80 ms.
        let mut wheel = TimerWheel::new(10, 8, 0);
        wheel.insert(25, 1);
        wheel.insert(25 + 80, 2);
        wheel.insert(25 + 3 * 80, 3);
        let mut out = Vec::new();
        for now in (0..=400).step_by(5) {
            wheel.advance_into(now, &mut out);
            match now {
                25 => assert_eq!(out, [1]),
                105 => assert_eq!(out, [1, 2]),
                265 => assert_eq!(out, [1, 2, 3]),
                _ => {}
            }
        }
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn one_advance_can_jump_many_revolutions() {
        let mut wheel = TimerWheel::new(1, 16, 0);
        for key in 0..1_000u64 {
            wheel.insert(key * 7, key);
        }
        let mut out = Vec::new();
        // 3,500 ticks in one call: each of the 16 slots is visited once.
        wheel.advance_into(3_500, &mut out);
        out.sort_unstable();
        assert_eq!(out, (0..=500).collect::<Vec<_>>());
        out.clear();
        wheel.advance_into(u64::MAX, &mut out);
        assert_eq!(out.len(), 499);
        assert!(wheel.is_empty());
        // The end of time is still a valid place to be.
        wheel.insert(u64::MAX, 7);
        assert_eq!(wheel.next_deadline_hint_ms(), Some(0));
        wheel.advance_into(u64::MAX, &mut out);
        assert_eq!(out.last(), Some(&7));
    }

    #[test]
    fn buckets_keep_their_memory() {
        let mut wheel = TimerWheel::new(1, 4, 0);
        for key in 0..100 {
            wheel.insert(2, key);
        }
        let capacity = wheel.slots[2].capacity();
        wheel.advance(2, |_| {});
        assert!(wheel.slots[2].is_empty());
        assert_eq!(wheel.slots[2].capacity(), capacity);
    }

    #[test]
    fn hint_points_at_the_next_busy_tick() {
        let mut wheel = TimerWheel::new(10, 64, 100);
        wheel.insert(100 + 55, 1); // tick 5
        assert_eq!(wheel.next_deadline_hint_ms(), Some(50));
        wheel.advance(103, |_| unreachable!());
        assert_eq!(wheel.next_deadline_hint_ms(), Some(47));
        wheel.advance(150, |_| unreachable!());
        // The entry is in the current tick (5): wake at its end.
        assert_eq!(wheel.next_deadline_hint_ms(), Some(10));
        wheel.advance(155, |key| assert_eq!(key, 1));
        assert_eq!(wheel.next_deadline_hint_ms(), None);
        // Wrapping around the bitmap: the next busy slot is behind the cursor's slot.
        wheel.insert(100 + 10 * 64 + 20, 2); // tick 66, slot 2; cursor is tick 5
        assert_eq!(wheel.next_deadline_hint_ms(), Some(100 + 10 * 66 - 155));
    }

    /// Random deadlines (past, near, beyond several revolutions), random steps of time
    /// (small, and jumps over many revolutions), keys re-inserted from the fired list like
    /// the runtime does: each entry fires exactly once, on the first `advance` whose time
    /// reached its deadline.
    #[test]
    fn random_deadlines_fire_once_on_time() {
        for seed in 0..20 {
            let mut rng = Rng(seed);
            let tick = 1 + rng.below(20);
            let slots = 1usize << rng.below(8);
            let revolution = tick * slots as u64;
            let start = rng.below(1_000_000);
            let mut wheel = TimerWheel::new(tick, slots, start);
            // Pending entries: deadline by key, and (deadline, key) in order to find the
            // earliest one quickly.
            let mut pending: std::collections::HashMap<u64, u64> = Default::default();
            let mut by_deadline = std::collections::BTreeSet::new();
            let mut next_key = 0u64;
            let mut now = start;
            let mut out = Vec::new();
            for _ in 0..2_000 {
                for _ in 0..rng.below(8) {
                    let deadline = match rng.below(4) {
                        0 => now.saturating_sub(rng.below(3 * revolution)),
                        1 => now + rng.below(2 * tick),
                        _ => now + rng.below(5 * revolution),
                    };
                    wheel.insert(deadline, next_key);
                    pending.insert(next_key, deadline);
                    by_deadline.insert((deadline, next_key));
                    next_key += 1;
                }
                now += match rng.below(50) {
                    0 => rng.below(20 * revolution),
                    _ => rng.below(2 * tick),
                };
                out.clear();
                wheel.advance_into(now, &mut out);
                for &key in &out {
                    let deadline = pending.remove(&key).expect("fired twice or unknown");
                    by_deadline.remove(&(deadline, key));
                    assert!(deadline <= now, "seed {seed}: fired early");
                }
                // Everything due has fired: nothing late.
                assert!(
                    by_deadline.first().is_none_or(|&(d, _)| d > now),
                    "seed {seed}: a due entry did not fire"
                );
                assert_eq!(wheel.len(), pending.len());
                // Lazy re-arming: some fired keys come back with a later deadline.
                for &key in &out {
                    if rng.below(2) == 0 {
                        continue;
                    }
                    let deadline = now + rng.below(3 * revolution);
                    wheel.insert(deadline, key);
                    pending.insert(key, deadline);
                    by_deadline.insert((deadline, key));
                }
            }
        }
    }

    /// A caller that sleeps exactly as the hint says fires every timer at most one tick
    /// after its deadline.
    #[test]
    fn sleeping_by_the_hint_is_at_most_one_tick_late() {
        for seed in 0..10 {
            let mut rng = Rng(1_000 + seed);
            let tick = 1 + rng.below(10);
            let slots = 1usize << (1 + rng.below(6));
            let mut wheel = TimerWheel::new(tick, slots, 0);
            let mut deadlines = std::collections::HashMap::new();
            for key in 0..300 {
                let deadline = rng.below(tick * slots as u64 * 4);
                wheel.insert(deadline, key);
                deadlines.insert(key, deadline);
            }
            let mut now = 0;
            while let Some(sleep) = wheel.next_deadline_hint_ms() {
                now += sleep;
                wheel.advance(now, |key| {
                    let deadline = deadlines.remove(&key).unwrap();
                    assert!(deadline <= now && now - deadline <= tick, "seed {seed}");
                });
            }
            assert!(deadlines.is_empty());
        }
    }
}
