//! The SPSC ring between two real threads: ten million sequence numbers arrive exactly once
//! and in order through rings of capacity 1024 and 2 (the smallest, where the two sides
//! collide on every value), and values left inside are dropped exactly once whichever half
//! goes last.
//!
//! These tests assert correctness only; throughput belongs to `bench/`.

use std::sync::Arc;
use std::thread;

use ringmq_shard::mesh::spsc::{Consumer, Producer, channel};

const COUNT: u64 = 10_000_000;

/// Waits politely: spin a little, then let the other thread run (the test machine may have
/// fewer cores than busy threads).
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

fn produce(mut tx: Producer<u64>) {
    for seq in 0..COUNT {
        let mut value = seq;
        let mut spins = 0;
        while let Err(back) = tx.try_send(value) {
            value = back;
            backoff(&mut spins);
        }
    }
}

/// Receives with `try_recv`, one value at a time.
fn consume_one_by_one(mut rx: Consumer<u64>) {
    let mut expected = 0;
    let mut spins = 0;
    while expected < COUNT {
        match rx.try_recv() {
            Some(value) => {
                assert_eq!(value, expected, "out of order or duplicated");
                expected += 1;
                spins = 0;
            }
            None => backoff(&mut spins),
        }
    }
    assert_eq!(rx.try_recv(), None, "more values than were sent");
}

/// Receives with `drain_batch`, in batches of up to 64.
fn consume_in_batches(mut rx: Consumer<u64>) {
    let mut expected = 0;
    let mut spins = 0;
    while expected < COUNT {
        let taken = rx.drain_batch(64, |value| {
            assert_eq!(value, expected, "out of order or duplicated");
            expected += 1;
        });
        if taken == 0 {
            backoff(&mut spins);
        } else {
            assert!(taken <= 64);
            spins = 0;
        }
    }
    assert!(rx.is_empty(), "more values than were sent");
}

fn run(capacity: usize, consume: fn(Consumer<u64>)) {
    let (tx, rx) = channel::<u64>(capacity);
    assert_eq!(tx.capacity(), capacity);
    let producer = thread::spawn(move || produce(tx));
    let consumer = thread::spawn(move || consume(rx));
    producer.join().unwrap();
    consumer.join().unwrap();
}

#[test]
fn spsc_ten_million_in_order_capacity_1024() {
    run(1024, consume_one_by_one);
}

#[test]
fn spsc_ten_million_in_order_capacity_1024_batched() {
    run(1024, consume_in_batches);
}

#[test]
fn spsc_ten_million_in_order_capacity_2() {
    run(2, consume_one_by_one);
}

#[test]
fn spsc_ten_million_in_order_capacity_2_batched() {
    run(2, consume_in_batches);
}

#[test]
fn spsc_full_ring_hands_the_value_back() {
    let (mut tx, mut rx) = channel(2);
    let a = Arc::new("a");
    tx.try_send(Arc::clone(&a)).unwrap();
    tx.try_send(Arc::clone(&a)).unwrap();
    assert!(tx.is_full());
    let back = tx.try_send(Arc::clone(&a)).unwrap_err();
    assert!(Arc::ptr_eq(&back, &a), "the very value comes back");
    drop(back);
    assert_eq!(Arc::strong_count(&a), 3);
    assert!(rx.try_recv().is_some());
    assert!(tx.try_send(Arc::clone(&a)).is_ok());
}

/// Fills a ring whose indexes have gone round it several times, takes some values out,
/// and checks that dropping the halves in either order drops each remaining value once.
fn leftovers_dropped_once(consumer_first: bool) {
    let counter = Arc::new(());
    let (mut tx, mut rx) = channel(8);
    // Go round the ring a few times so that head and tail are not at slot 0.
    for _ in 0..21 {
        tx.try_send(Arc::clone(&counter)).unwrap();
        drop(rx.try_recv().unwrap());
    }
    for _ in 0..8 {
        tx.try_send(Arc::clone(&counter)).unwrap();
    }
    assert!(tx.try_send(Arc::clone(&counter)).is_err());
    drop(rx.try_recv());
    rx.drain_batch(2, drop);
    assert_eq!(Arc::strong_count(&counter), 1 + 5);
    if consumer_first {
        drop(rx);
        assert!(!tx.is_consumer_alive());
        // Sends still succeed while there is room; those values go down with the ring.
        tx.try_send(Arc::clone(&counter)).unwrap();
        assert_eq!(Arc::strong_count(&counter), 1 + 6);
        drop(tx);
    } else {
        drop(tx);
        assert!(!rx.is_producer_alive());
        assert_eq!(Arc::strong_count(&counter), 1 + 5);
        drop(rx);
    }
    assert_eq!(Arc::strong_count(&counter), 1);
}

#[test]
fn spsc_leftovers_dropped_once_consumer_first() {
    leftovers_dropped_once(true);
}

#[test]
fn spsc_leftovers_dropped_once_producer_first() {
    leftovers_dropped_once(false);
}

/// The halves dropped on different threads while values are in flight: every value is
/// dropped exactly once, by the consumer or with the ring.
#[test]
fn spsc_drop_across_threads_drops_each_value_once() {
    let counter = Arc::new(());
    for round in 0..50 {
        let (mut tx, mut rx) = channel(16);
        let sent = {
            let counter = Arc::clone(&counter);
            thread::spawn(move || {
                let mut sent = 0;
                while tx.is_consumer_alive() && sent < 10_000 {
                    if tx.try_send(Arc::clone(&counter)).is_ok() {
                        sent += 1;
                    } else {
                        thread::yield_now();
                    }
                }
                sent
            })
        };
        let received = thread::spawn(move || {
            let mut received = 0;
            while received < round * 100 {
                received += rx.drain_batch(7, drop);
                thread::yield_now();
            }
            received
        });
        let received = received.join().unwrap();
        let sent = sent.join().unwrap();
        assert!(received <= sent);
        assert_eq!(Arc::strong_count(&counter), 1, "round {round}");
    }
}
