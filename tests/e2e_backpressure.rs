//! Back-pressure (README, "Limits and what happens at them"): a shard with more queued
//! for its clients than `--shard-pressure-bytes` pauses its publishers. A paused
//! publisher is still read: its acknowledgements are taken up at once and everything
//! else is held, in order, until the pause ends — nothing it sent is lost or reordered,
//! and a DISCONNECT it sent before closing its socket still counts.
//!
//! Each test puts one shard under lasting pressure the same way: a QoS 0 subscriber that
//! never reads, fed until the broker drops messages for it (its queue is then past the
//! 256 KiB slow-consumer bound, so the shard is past a 64 KiB pressure bound).

mod common;
#[path = "e2e_support.rs"]
mod support;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::thread;

use common::Broker;
use support::*;

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
    stalled
        .write_all(&subscribe(1, "bp/#", 0x00, false))
        .unwrap();
    assert_eq!(read_packet(&mut stalled).body, [0x00, 0x01, 0x00]);

    let filler = thread::spawn(move || {
        let mut p = raw_v311_client(addr, "filler", 0);
        let chunk = publish_qos0("bp/fill", &[b'x'; 8192], false);
        // ~40 MiB: more than the stalled client's socket buffers and its 256 KiB queue.
        for _ in 0..5000 {
            p.write_all(&chunk).unwrap();
        }
        p.write_all(&[0xE0, 0x00]).unwrap();
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
        let mut other = V4::connect(v4_tcp("bp-other", broker.mqtt_addr())).await;
        other.subscribe_ok("bp/a", 1).await;
        let mut a = V4::connect(v4_tcp("bp-a", broker.mqtt_addr())).await;
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
            match a.next_event().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => acked += 1,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    received.push(String::from_utf8_lossy(&p.payload[..5]).into_owned());
                }
                Ok(_) => {}
                Err(e) => panic!("publisher: {e:?} after {acked} PUBACKs"),
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

/// A CONNECT with a will (QoS 0) and Clean Session, MQTT 3.1.1.
fn connect_with_will(client_id: &str, will_topic: &str, will_message: &str) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(b"MQTT", &mut b);
    b.push(4);
    b.push(0x06); // Will Flag, Clean Session
    b.extend_from_slice(&0u16.to_be_bytes());
    mqtt_str(client_id.as_bytes(), &mut b);
    mqtt_str(will_topic.as_bytes(), &mut b);
    mqtt_str(will_message.as_bytes(), &mut b);
    packet(0x10, &b)
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
        let mut watcher = V4::connect(v4_tcp("bp-watcher", broker.mqtt_addr())).await;
        watcher.subscribe_ok("bp/d", 1).await;
        watcher.subscribe_ok("bp/will", 1).await;

        let mut d = tcp(broker.mqtt_addr());
        d.write_all(&connect_with_will("bp-d", "bp/will", "will"))
            .unwrap();
        assert_eq!(read_n(&mut d, 4), CONNACK_V311_OK);
        let mut burst = Vec::new();
        for i in 0..N {
            burst.extend(publish_qos0("bp/d", format!("d{i}").as_bytes(), false));
        }
        burst.extend([0xE0, 0x00]); // DISCONNECT
        d.write_all(&burst).unwrap();
        d.shutdown(Shutdown::Write).unwrap();
        let ended = read_until_closed(&mut d, WAIT);
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
        watcher
            .client
            .publish("bp/d", rumqttc::QoS::AtLeastOnce, false, "end")
            .await
            .unwrap();
        let after = watcher.publishes_until("end").await;
        assert!(after.is_empty(), "after the burst: {after:?}");
    });
    assert!(
        broker.metric("ringmq_publishers_paused") > paused_before,
        "nobody was paused: the test did not test back-pressure"
    );
}
