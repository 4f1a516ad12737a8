//! A bounded, lock-free ring for exactly one producer thread and one consumer thread.
//!
//! The mesh has one ring per ordered pair of shards, so every ring has a single writer
//! and a single reader by construction, and the ring needs no compare-and-swap: each side
//! owns one index and only reads the other's. A send is one slot write plus one release
//! store; [`Consumer::drain_batch`] amortises the consumer's release store over a whole
//! batch.
//!
//! Layout and costs:
//! - `head` (next slot to read, written by the consumer) and `tail` (next slot to write,
//!   written by the producer) live in separate 128-byte-aligned blocks, so the two cores
//!   do not bounce one cache line between them (128 rather than 64 because adjacent-line
//!   prefetching pulls pairs of lines on current x86 cores).
//! - Each side keeps a private copy of the other side's index and re-reads the shared
//!   atomic only when that copy says the ring is full (producer) or empty (consumer).
//!   While the ring is neither, a send or a receive touches no cache line the other core
//!   writes to, apart from the slot itself.
//! - Indexes count up forever and wrap at `usize::MAX`; the slot is `index & mask`.
//!   Because the capacity is a power of two, wrapping subtraction still gives the number
//!   of occupied slots.
//!
//! A full ring hands the value back (`Err(value)`); what to do then (queue locally, shed,
//! push back on the sender) is the caller's policy. Nothing here blocks or allocates after
//! [`channel`] returns.
//!
//! Items still in the ring when both halves are gone are dropped exactly once, by
//! whichever half is dropped last.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Aligns (and so pads) its content to 128 bytes, giving it cache lines of its own.
#[repr(align(128))]
struct CachePadded<T>(T);

/// The state both halves share.
struct Shared<T> {
    /// Index of the next slot to read. Written only by the consumer.
    head: CachePadded<AtomicUsize>,
    /// Index of the next slot to write. Written only by the producer.
    tail: CachePadded<AtomicUsize>,
    /// Slots `head..tail` (mod capacity) hold initialised values; the rest are free.
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    /// `capacity - 1`; the capacity is a power of two.
    mask: usize,
    /// Cleared when the consumer is dropped, so a producer can stop sending to a shard
    /// that has gone away.
    consumer_alive: AtomicBool,
    /// Cleared when the producer is dropped.
    producer_alive: AtomicBool,
}

impl<T> Shared<T> {
    /// The slot for an index.
    fn slot(&self, index: usize) -> *mut MaybeUninit<T> {
        self.slots[index & self.mask].get()
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both halves are gone (this is the last `Arc`), and the `Arc`'s own reference
        // counting orders their last writes before this point, so plain reads suffice.
        let head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        let mut index = head;
        while index != tail {
            // SAFETY: slots in `head..tail` hold initialised values that nobody has moved
            // out (the consumer publishes `head` past every value it takes, see
            // `Consumer::drop`), and each index is visited once, so each value is dropped
            // exactly once.
            unsafe { (*self.slot(index)).assume_init_drop() };
            index = index.wrapping_add(1);
        }
    }
}

/// Creates a ring holding up to `capacity` values, rounded up to a power of two and to at
/// least 2.
///
/// # Panics
///
/// If the rounded capacity does not fit in `usize`.
pub fn channel<T: Send>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity
        .max(2)
        .checked_next_power_of_two()
        .expect("ring capacity overflows usize");
    let slots = (0..capacity)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let shared = Arc::new(Shared {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        slots,
        mask: capacity - 1,
        consumer_alive: AtomicBool::new(true),
        producer_alive: AtomicBool::new(true),
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        tail: 0,
        cached_head: 0,
    };
    let consumer = Consumer {
        shared,
        head: 0,
        cached_tail: 0,
    };
    (producer, consumer)
}

/// The sending half of a ring. There is exactly one per ring (it is not `Clone`).
///
/// It is `Send` when `T` is, and not `Sync`: it belongs to one thread at a time. A
/// shard-local `!Send` type cannot cross:
///
/// ```compile_fail
/// let (tx, _rx) = ringmq_shard::mesh::spsc::channel::<std::rc::Rc<u8>>(4);
/// ```
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// Our own index; the shared `tail` is only ever a published copy of it.
    tail: usize,
    /// The consumer's `head` as last read; the real one is never behind it.
    cached_head: usize,
}

// SAFETY: the producer only writes slots the consumer has released (see `try_send`), and
// hands values to another thread, which is sound when `T: Send`. `Shared` is not `Sync`
// because of its `UnsafeCell`s; the single-producer/single-consumer protocol is what makes
// sharing it between exactly these two halves sound.
unsafe impl<T: Send> Send for Producer<T> {}

impl<T> Producer<T> {
    /// Appends `value`, or hands it back if the ring is full. Never blocks, never
    /// allocates.
    pub fn try_send(&mut self, value: T) -> Result<(), T> {
        let capacity = self.shared.mask + 1;
        if self.tail.wrapping_sub(self.cached_head) == capacity {
            // Acquire pairs with the consumer's release store of `head`: its reads of the
            // slots it gave back happen before we overwrite them.
            self.cached_head = self.shared.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.cached_head) == capacity {
                return Err(value);
            }
        }
        // SAFETY: `tail - head < capacity`, so the slot at `tail` is free: the consumer
        // has finished with it (acquire above, or an earlier one) and will not read it
        // until we publish the new `tail` below. Only this producer writes slots.
        unsafe { self.shared.slot(self.tail).write(MaybeUninit::new(value)) };
        self.tail = self.tail.wrapping_add(1);
        // Release: the slot write above happens before the consumer sees the new tail.
        self.shared.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Whether the ring is full right now (a fresh look at the consumer's index).
    pub fn is_full(&self) -> bool {
        // Relaxed: only a count is derived; `try_send` does its own acquire before it
        // writes a slot.
        let head = self.shared.head.0.load(Ordering::Relaxed);
        self.tail.wrapping_sub(head) == self.capacity()
    }

    /// How many values the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Whether the consumer half still exists. Values sent after it is dropped are only
    /// dropped when the producer is.
    pub fn is_consumer_alive(&self) -> bool {
        // Relaxed: a hint that publishes no data; the ring's own indexes order the values.
        self.shared.consumer_alive.load(Ordering::Relaxed)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        // The shared `tail` is already up to date: every send publishes it. Relaxed: the
        // flag is a hint (see `Producer::is_consumer_alive`).
        self.shared.producer_alive.store(false, Ordering::Relaxed);
    }
}

/// The receiving half of a ring. There is exactly one per ring.
///
/// It is `Send` when `T` is, and not `Sync`.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Our own index. Values before it have been moved out; the shared `head` may lag
    /// behind it inside `drain_batch`, and is brought up to date before anyone else can
    /// depend on it (at the end of the batch, or in `drop`).
    head: usize,
    /// The producer's `tail` as last read; the real one is never behind it.
    cached_tail: usize,
}

// SAFETY: the consumer only reads slots the producer has published (see `try_recv`), and
// takes values that came from another thread, which is sound when `T: Send`.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T> Consumer<T> {
    /// Whether a value is ready at `head`, re-reading the producer's index only when the
    /// cached copy says the ring is empty.
    fn ready(&mut self) -> bool {
        if self.head == self.cached_tail {
            // Acquire pairs with the producer's release store of `tail`: its writes of the
            // slots before `tail` are visible to us.
            self.cached_tail = self.shared.tail.0.load(Ordering::Acquire);
        }
        self.head != self.cached_tail
    }

    /// Moves the value at `head` out and advances our private `head` (not the shared one).
    ///
    /// # Safety
    ///
    /// `ready()` must have returned true since the last call.
    unsafe fn take(&mut self) -> T {
        // SAFETY: the caller checked `head != tail` with `tail` read by an acquire load,
        // so the slot holds a value the producer wrote and published; advancing `head`
        // right after means it is never read twice.
        let value = unsafe { (*self.shared.slot(self.head)).assume_init_read() };
        self.head = self.head.wrapping_add(1);
        value
    }

    /// Gives the slots before `head` back to the producer.
    fn publish_head(&self) {
        // Release: our reads of the slots happen before the producer sees them as free
        // and writes them again.
        self.shared.head.0.store(self.head, Ordering::Release);
    }

    /// Takes the oldest value, if any. Never blocks.
    pub fn try_recv(&mut self) -> Option<T> {
        if !self.ready() {
            return None;
        }
        // SAFETY: `ready()` just returned true.
        let value = unsafe { self.take() };
        self.publish_head();
        Some(value)
    }

    /// Takes up to `max` values in order, handing each to `f`, and returns how many it
    /// took. The slots are given back to the producer with one release store at the end,
    /// so a batch costs one write to the shared index rather than one per value.
    ///
    /// If `f` panics, the values already taken are not lost or duplicated: the rest stay
    /// in the ring and are dropped with it.
    pub fn drain_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let mut taken = 0;
        while taken < max && self.ready() {
            // SAFETY: `ready()` just returned true.
            let value = unsafe { self.take() };
            taken += 1;
            f(value);
        }
        if taken > 0 {
            self.publish_head();
        }
        taken
    }

    /// Whether the ring is empty right now (a fresh look at the producer's index).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many values are waiting right now.
    pub fn len(&self) -> usize {
        // Relaxed: only a count is derived; `try_recv` does its own acquire before it
        // reads a slot.
        let tail = self.shared.tail.0.load(Ordering::Relaxed);
        tail.wrapping_sub(self.head)
    }

    /// How many values the ring holds at most.
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Whether the producer half still exists. Once it is gone and the ring is empty,
    /// nothing more will arrive.
    pub fn is_producer_alive(&self) -> bool {
        // Relaxed: see `Producer::is_consumer_alive`.
        self.shared.producer_alive.load(Ordering::Relaxed)
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        // `head` may be ahead of the shared copy if `f` panicked inside `drain_batch`;
        // publish it so that `Shared::drop` does not drop values we already moved out.
        self.publish_head();
        self.shared.consumer_alive.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    #[test]
    fn halves_are_send() {
        fn assert_send<S: Send>() {}
        assert_send::<Producer<u64>>();
        assert_send::<Consumer<u64>>();
        assert_send::<Producer<Arc<String>>>();
    }

    #[test]
    fn index_blocks_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<CachePadded<AtomicUsize>>(), 128);
        assert_eq!(std::mem::size_of::<CachePadded<AtomicUsize>>(), 128);
        let (tx, _rx) = channel::<u8>(2);
        let head = &tx.shared.head as *const _ as usize;
        let tail = &tx.shared.tail as *const _ as usize;
        assert!(head.abs_diff(tail) >= 128);
    }

    #[test]
    fn capacity_rounds_up_to_a_power_of_two_of_at_least_two() {
        for (asked, got) in [(0, 2), (1, 2), (2, 2), (3, 4), (1000, 1024), (1024, 1024)] {
            let (tx, rx) = channel::<u8>(asked);
            assert_eq!((tx.capacity(), rx.capacity()), (got, got), "asked {asked}");
        }
    }

    #[test]
    fn fifo_and_full_ring_hands_the_value_back() {
        let (mut tx, mut rx) = channel(4);
        assert!(rx.is_empty());
        for i in 0..4 {
            assert_eq!(tx.try_send(i), Ok(()));
        }
        assert!(tx.is_full());
        assert_eq!(rx.len(), 4);
        assert_eq!(tx.try_send(99), Err(99));
        assert_eq!(rx.try_recv(), Some(0));
        assert!(!tx.is_full());
        assert_eq!(tx.try_send(4), Ok(()));
        assert_eq!(tx.try_send(5), Err(5));
        let mut got = Vec::new();
        assert_eq!(rx.drain_batch(10, |v| got.push(v)), 4);
        assert_eq!(got, [1, 2, 3, 4]);
        assert_eq!(rx.try_recv(), None);
        assert!(rx.is_empty());
    }

    #[test]
    fn drain_batch_stops_at_max_and_publishes_once_at_the_end() {
        let (mut tx, mut rx) = channel(8);
        for i in 0..8 {
            tx.try_send(i).unwrap();
        }
        let mut seen = Vec::new();
        let taken = rx.drain_batch(5, |v| {
            // Inside the batch the producer still sees the ring full: the head is
            // published only after the last value.
            assert!(tx.is_full());
            seen.push(v);
        });
        assert_eq!(taken, 5);
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        assert_eq!(rx.len(), 3);
        assert!(!tx.is_full());
        assert_eq!(rx.drain_batch(0, |_| unreachable!()), 0);
    }

    #[test]
    fn indexes_wrap_around_usize_max() {
        let (mut tx, mut rx) = channel(4);
        // Start both sides just below the wrap, as if 2^64 values had gone through.
        let start = usize::MAX - 5;
        tx.shared.head.0.store(start, Ordering::Relaxed);
        tx.shared.tail.0.store(start, Ordering::Relaxed);
        (tx.tail, tx.cached_head) = (start, start);
        (rx.head, rx.cached_tail) = (start, start);
        let mut next_out = 0u32;
        for i in 0..40u32 {
            tx.try_send(i).unwrap();
            if i % 3 == 0 {
                // Let the ring fill up now and then.
                while tx.try_send(1000).is_ok() {}
                while let Some(v) = rx.try_recv() {
                    if v != 1000 {
                        assert_eq!(v, next_out);
                        next_out += 1;
                    }
                }
            }
        }
        while let Some(v) = rx.try_recv() {
            assert_eq!(v, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, 40);
        assert!(tx.tail < start, "the index really wrapped");
    }

    #[test]
    fn a_panicking_batch_loses_and_duplicates_nothing() {
        let item = Arc::new(());
        let (mut tx, mut rx) = channel(8);
        for _ in 0..6 {
            tx.try_send(Arc::clone(&item)).unwrap();
        }
        let mut calls = 0;
        let result = catch_unwind(AssertUnwindSafe(|| {
            rx.drain_batch(6, |v| {
                calls += 1;
                drop(v);
                if calls == 2 {
                    panic!("handler failed");
                }
            })
        }));
        assert!(result.is_err());
        // Two values were taken (and dropped by the handler); four are still in the ring.
        assert_eq!(Arc::strong_count(&item), 5);
        drop(rx);
        assert_eq!(
            Arc::strong_count(&item),
            5,
            "the producer still holds the ring"
        );
        drop(tx);
        assert_eq!(Arc::strong_count(&item), 1);
    }

    #[test]
    fn liveness_flags_follow_the_halves() {
        let (tx, rx) = channel::<u8>(2);
        assert!(tx.is_consumer_alive() && rx.is_producer_alive());
        drop(rx);
        assert!(!tx.is_consumer_alive());
        let (tx, rx) = channel::<u8>(2);
        drop(tx);
        assert!(!rx.is_producer_alive());
    }

    #[test]
    fn zero_sized_values_are_counted() {
        let (mut tx, mut rx) = channel(2);
        assert_eq!(tx.try_send(()), Ok(()));
        assert_eq!(tx.try_send(()), Ok(()));
        assert_eq!(tx.try_send(()), Err(()));
        assert_eq!(rx.len(), 2);
        assert_eq!(rx.try_recv(), Some(()));
    }
}
