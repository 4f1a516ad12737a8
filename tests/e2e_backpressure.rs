//! Clients that cannot keep up (README, "Limits and what happens at them"). A QoS 1
//! subscriber past its queue bound is disconnected, not silently robbed of messages.
//! A shard with more queued for its clients than `--shard-pressure-bytes` pauses its
//! publishers; a paused publisher is still read: its acknowledgements are taken up at
//! once and everything else is held, in order, until the pause ends — nothing it sent
//! is lost or reordered, and a DISCONNECT it sent before closing its socket still
//! counts.
//!
//! Each back-pressure test puts one shard under lasting pressure the same way: a QoS 0
//! subscriber that never reads, fed until the broker drops messages for it (its queue is
//! then past the 256 KiB slow-consumer bound, so the shard is past a 64 KiB pressure
//! bound).

mod support;

use std::net::{Shutdown, TcpStream};
use std::thread;

use support::*;

/// QoS 1/2 messages for a connected client are queued up to the session's bound, then
/// the client is disconnected (and counted), never has messages dropped while it stays
/// connected. Here: in-flight window 2, queue 5, a subscriber that never acknowledges,
/// 20 QoS 1 messages.
#[test]
fn qos1_subscriber_past_the_queue_limit_is_disconnected_not_dropped() {
    let broker = Broker::start(&["--max-inflight", "2", "--max-queued-messages", "5"]);
    let addr = broker.mqtt_addr();
    let mut s = raw_v311_client(addr, "never-acks", 30);
    s.send(&subscribe(4, 1, "nq/#", 0x01, &[]));
    assert_eq!(s.read_packet().body, [0x00, 0x01, 0x01]);

    let rt = runtime();
    rt.block_on(async {
        let mut publisher = V4::connect(v311::options("nq-pub", addr)).await;
        for i in 0..20 {
            publisher
                .publish("nq/x", 1, format!("n{i}").as_bytes())
                .await;
        }
    });
    // The two in flight arrive; then the broker must end the connection.
    let end = s.read_until_closed(WAIT);
    let packets = split_packets(&end.bytes);
    assert!(packets.iter().all(|p| p.kind() == 3), "{packets:02x?}");
    assert_eq!(broker.metric("ringmq_disconnected_slow_consumer"), 1);
    assert_eq!(broker.metric("ringmq_dropped_queue_full"), 0);
}

/// A one-shard broker whose pressure bound is 64 KiB.
fn broker() -> Broker {
    Broker::start(&[
        "--shards",
        "1",
        "--shard-pressure-bytes",
        "65536",
        "--sys-interval",
        "0",
    ])
}

/// Subscribes a client that never reads to `bp/#`, then publishes 8 KiB messages until
/// the broker drops some for it. Returns the stalled client (the pressure lasts while it
/// is open).
fn put_under_pressure(broker: &Broker) -> TcpStream {
    let addr = broker.mqtt_addr();
    let mut stalled = raw_v311_client(addr, "stalled", 0);
    stalled.send(&subscribe(4, 1, "bp/#", 0x00, &[]));
    assert_eq!(stalled.read_packet().body, [0x00, 0x01, 0x00]);

    let filler = thread::spawn(move || {
        let mut p = raw_v311_client(addr, "filler", 0);
        let chunk = publish_qos0(4, "bp/fill", &[b'x'; 8192]);
        // ~40 MiB: more than the stalled client's socket buffers and its 256 KiB queue.
        for _ in 0..5000 {
            p.send(&chunk);
        }
        p.send(&DISCONNECT);
        p
    });
    broker.wait_for_metric("ringmq_dropped_qos0_slow_consumer", WAIT, |n| n > 0);
    drop(filler.join().unwrap());
    stalled
}

/// A client that publishes QoS 1 to a topic it subscribes to is paused again and again;
/// its PUBACKs to its own deliveries are read while it is paused, and every message
/// arrives once, in order, at it and at another subscriber.
#[test]
fn a_paused_publisher_loses_and_reorders_nothing() {
    let broker = broker();
    let _stalled = put_under_pressure(&broker);
    let paused_before = broker.metric("ringmq_publishers_paused");
    const N: usize = 300;
    let rt = runtime();
    rt.block_on(async {
        let mut other = V4::connect(v311::options("bp-other", broker.mqtt_addr())).await;
        other.subscribe_ok("bp/a", 1).await;
        let mut a = V4::connect(v311::options("bp-a", broker.mqtt_addr())).await;
        a.subscribe_ok("bp/a", 1).await;
        let client = a.client.clone();
        let publishing = tokio::spawn(async move {
            for i in 0..N {
                let payload = format!("{i:05}{}", "p".repeat(500));
                client
                    .publish("bp/a", rumqttc::QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
        });
        let (mut acked, mut received) = (0, Vec::new());
        while acked < N || received.len() < N {
            match a.next_packet().await {
                Seen::PubAck { success } => {
                    assert!(success, "PUBACK {acked}");
                    acked += 1;
                }
                Seen::Publish(g) => received.push(g.text()[..5].to_string()),
                _ => {}
            }
        }
        publishing.await.unwrap();
        let expected: Vec<String> = (0..N).map(|i| format!("{i:05}")).collect();
        assert_eq!(received, expected, "the publisher's own deliveries");
        let mut seen = Vec::new();
        while seen.len() < N {
            let g = other.next_publish().await;
            seen.push(String::from_utf8_lossy(&g.payload[..5]).into_owned());
        }
        assert_eq!(seen, expected, "the other subscriber's deliveries");
    });
    assert!(
        broker.metric("ringmq_publishers_paused") > paused_before,
        "the publisher was never paused: the test did not test back-pressure"
    );
    assert_eq!(broker.metric("ringmq_disconnected_slow_consumer"), 0);
}

/// A client sends a burst of PUBLISHes and a DISCONNECT and closes its socket while the
/// shard is under pressure: the burst is held, the socket's end is seen meanwhile, and
/// still every message is delivered and the will is not published (the DISCONNECT was
/// taken up before the connection was closed).
#[test]
fn a_paused_publishers_burst_and_disconnect_survive_its_socket_closing() {
    let broker = broker();
    let _stalled = put_under_pressure(&broker);
    let paused_before = broker.metric("ringmq_publishers_paused");
    const N: usize = 20;
    let rt = runtime();
    rt.block_on(async {
        let mut watcher = V4::connect(v311::options("bp-watcher", broker.mqtt_addr())).await;
        watcher.subscribe_ok("bp/d", 1).await;
        watcher.subscribe_ok("bp/will", 1).await;

        let will = RawWill {
            topic: "bp/will",
            payload: b"will",
            qos: 0,
            retain: false,
        };
        let mut d = tcp(broker.mqtt_addr());
        d.send(&connect(4, "bp-d", true, 0, Some(will), &[]));
        assert_eq!(d.read_bytes(4), CONNACK_V311_OK);
        let mut burst = Vec::new();
        for i in 0..N {
            burst.extend(publish_qos0(4, "bp/d", format!("d{i}").as_bytes()));
        }
        burst.extend(DISCONNECT);
        d.send(&burst);
        d.shutdown(Shutdown::Write).unwrap();
        let ended = d.read_until_closed(WAIT);
        assert!(ended.bytes.is_empty(), "{:02x?}", ended.bytes);

        let mut got = Vec::new();
        for _ in 0..N {
            let g = watcher.next_publish().await;
            got.push((g.topic, String::from_utf8(g.payload).unwrap()));
        }
        let expected: Vec<_> = (0..N)
            .map(|i| ("bp/d".to_string(), format!("d{i}")))
            .collect();
        assert_eq!(got, expected);
        // A will would have been published as the connection closed, before the last
        // message above was delivered; a marker sent now comes after it.
        watcher.publish("bp/d", 1, b"end").await;
        let after = watcher.publishes_until("end").await;
        assert!(after.is_empty(), "after the burst: {after:?}");
    });
    assert!(
        broker.metric("ringmq_publishers_paused") > paused_before,
        "nobody was paused: the test did not test back-pressure"
    );
}
