//! Delivery rules beyond plain pub/sub: MQTT 5 flow control (Receive Maximum) and the
//! client's Maximum Packet Size, shared subscriptions, retained messages and
//! UNSUBSCRIBE, each across two shards.

mod common;
#[path = "e2e_support.rs"]
mod support;

use std::io::Write;
use std::time::Duration;

use common::Broker;
use support::*;

/// MQTT 5 §3.3.4 (MQTT-3.3.4-9): the server sends no more unacknowledged QoS 1
/// PUBLISHes than the client's Receive Maximum; each PUBACK lets one more through.
#[test]
fn v5_receive_maximum_bounds_unacknowledged_deliveries() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let mut s = tcp(addr);
    // Receive Maximum (0x21) = 2.
    s.write_all(&connect_v5_with("slow-reader", 30, &[0x21, 0x00, 0x02]))
        .unwrap();
    assert_eq!(parse_v5_connack(&read_packet(&mut s)).1, 0);
    s.write_all(&subscribe(1, "rm/#", 0x01, true)).unwrap();
    let suback = read_packet(&mut s);
    assert_eq!(suback.first, 0x90);
    assert_eq!(
        suback.body,
        [0x00, 0x01, 0x00, 0x01],
        "SUBACK granting QoS 1"
    );

    let rt = runtime();
    rt.block_on(async {
        let mut publisher = V4::connect(v4_tcp("rm-pub", addr)).await;
        for i in 0..5 {
            publisher
                .publish("rm/x", 1, format!("r{i}").as_bytes())
                .await;
        }
    });

    let next = |s: &mut std::net::TcpStream| {
        let (qos, _, topic, pkid, payload) = parse_publish(&read_packet(s), true);
        assert_eq!((qos, topic.as_str()), (1, "rm/x"));
        (pkid, String::from_utf8(payload).unwrap())
    };
    let (p0, m0) = next(&mut s);
    let (p1, m1) = next(&mut s);
    assert_eq!((m0.as_str(), m1.as_str()), ("r0", "r1"));
    // Two in flight: nothing more until a PUBACK.
    expect_still_open(&mut s, Duration::from_millis(500));
    s.write_all(&puback(p0)).unwrap();
    let (p2, m2) = next(&mut s);
    assert_eq!(m2, "r2");
    expect_still_open(&mut s, Duration::from_millis(300));
    s.write_all(&puback(p1)).unwrap();
    s.write_all(&puback(p2)).unwrap();
    let (p3, m3) = next(&mut s);
    let (p4, m4) = next(&mut s);
    assert_eq!((m3.as_str(), m4.as_str()), ("r3", "r4"));
    s.write_all(&puback(p3)).unwrap();
    s.write_all(&puback(p4)).unwrap();
    s.write_all(&PINGREQ).unwrap();
    assert_eq!(read_n(&mut s, 2), PINGRESP);
}

/// MQTT-3.1.2-25: the server never sends a packet larger than the client's Maximum
/// Packet Size; such a message is dropped for that client (and counted).
#[test]
fn v5_client_maximum_packet_size_is_respected() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let mut s = tcp(addr);
    // Maximum Packet Size (0x27) = 64.
    s.write_all(&connect_v5_with("small-packets", 30, &[0x27, 0, 0, 0, 64]))
        .unwrap();
    assert_eq!(parse_v5_connack(&read_packet(&mut s)).1, 0);
    s.write_all(&subscribe(1, "mps/#", 0x00, true)).unwrap();
    assert_eq!(read_packet(&mut s).first, 0x90);

    let rt = runtime();
    rt.block_on(async {
        let mut publisher = V4::connect(v4_tcp("mps-pub", addr)).await;
        publisher.publish("mps/big", 1, &[b'x'; 200]).await;
        publisher.publish("mps/small", 1, b"fits").await;
    });
    let p = read_packet(&mut s);
    assert!(p.body.len() + 2 <= 64);
    let (qos, _, topic, _, payload) = parse_publish(&p, true);
    assert_eq!(
        (qos, topic.as_str(), &payload[..]),
        (0, "mps/small", &b"fits"[..])
    );
    assert_eq!(broker.metric("ringmq_dropped_too_large_for_client"), 1);
}

/// MQTT 5 §4.8.2: each message to a shared subscription goes to exactly one member of
/// the group; a plain subscriber still gets every message.
#[test]
fn shared_subscription_delivers_each_message_to_one_member() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut members = Vec::new();
        for i in 0..4 {
            let mut m = V5::connect(v5_tcp(&format!("member-{i}"), addr)).await;
            m.subscribe_ok("$share/group/sh/#", 1).await;
            members.push(m);
        }
        let mut plain = V5::connect(v5_tcp("plain", addr)).await;
        plain.subscribe_ok("sh/#", 1).await;
        let mut publisher = V5::connect(v5_tcp("sh-pub", addr)).await;
        const N: usize = 40;
        for i in 0..N {
            publisher
                .publish("sh/x", 1, format!("s{i}").as_bytes())
                .await;
        }
        publisher.publish("sh/x", 1, b"end").await;
        let all = plain.publishes_until("end").await;
        assert_eq!(all.len(), N);

        // Every message exactly once over the group (the end marker too).
        let mut seen = Vec::new();
        while seen.len() < N + 1 {
            let polls = members.iter_mut().map(|m| Box::pin(m.next_publish()));
            let g = first_of(polls.collect()).await;
            assert_eq!((g.topic.as_str(), g.qos), ("sh/x", 1));
            seen.push(String::from_utf8(g.payload).unwrap());
        }
        seen.sort();
        let mut want: Vec<String> = (0..N).map(|i| format!("s{i}")).collect();
        want.push("end".into());
        want.sort();
        assert_eq!(seen, want);
    });
}

/// The output of whichever future finishes first (a tiny `select_all`, no extra
/// dependency); the others are dropped.
async fn first_of<F: std::future::Future + Unpin>(mut futs: Vec<F>) -> F::Output {
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// MQTT-3.3.1-6/-10/-11: a retained message goes to every later subscriber (with the
/// RETAIN flag), on whichever shard it lands; live deliveries clear the flag
/// (MQTT-3.3.1-9); an empty retained message removes it.
#[test]
fn retained_message_reaches_later_subscribers_and_can_be_cleared() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut early = V4::connect(v4_tcp("early", addr)).await;
        early.subscribe_ok("ret/#", 1).await;
        let mut publisher = V4::connect(v4_tcp("ret-pub", addr)).await;
        publisher
            .client
            .publish("ret/a", rumqttc::QoS::AtLeastOnce, true, "kept")
            .await
            .unwrap();
        loop {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) =
                publisher.next_event().await
            {
                break;
            }
        }
        assert_eq!(early.next_publish().await, got("ret/a", 1, "kept"));

        // Several later subscribers, so that both shards serve some.
        for i in 0..6 {
            let mut late = V4::connect(v4_tcp(&format!("late-{i}"), addr)).await;
            late.subscribe_ok("ret/+", 1).await;
            let mut want = got("ret/a", 1, "kept");
            want.retain = true;
            assert_eq!(late.next_publish().await, want, "late-{i}");
        }

        // Cleared: an empty retained message (delivered live, empty, to `early`).
        publisher
            .client
            .publish("ret/a", rumqttc::QoS::AtLeastOnce, true, "")
            .await
            .unwrap();
        assert_eq!(early.next_publish().await, got("ret/a", 1, ""));
        for i in 0..6 {
            let mut later = V4::connect(v4_tcp(&format!("later-{i}"), addr)).await;
            later.subscribe_ok("ret/#", 1).await;
            // The first message is the marker: nothing retained is left.
            publisher
                .client
                .publish("ret/marker", rumqttc::QoS::AtLeastOnce, false, "m")
                .await
                .unwrap();
            assert_eq!(
                later.next_publish().await,
                got("ret/marker", 1, "m"),
                "later-{i}"
            );
            assert_eq!(early.next_publish().await, got("ret/marker", 1, "m"));
        }
    });
}

/// After UNSUBACK no more messages arrive for that filter; others stay.
#[test]
fn unsubscribe_stops_delivery_for_that_filter_only() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut sub = V4::connect(v4_tcp("unsub", addr)).await;
        sub.subscribe_ok("un/#", 1).await;
        sub.subscribe_ok("un/keep", 1).await;
        let mut publisher = V4::connect(v4_tcp("un-pub", addr)).await;
        publisher.publish("un/drop", 1, b"before").await;
        assert_eq!(sub.next_publish().await, got("un/drop", 1, "before"));

        sub.client.unsubscribe("un/#").await.unwrap();
        loop {
            match sub.next_event().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::UnsubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        publisher.publish("un/drop", 1, b"after").await;
        publisher.publish("un/keep", 1, b"kept").await;
        assert_eq!(sub.next_publish().await, got("un/keep", 1, "kept"));
    });
}

/// DESIGN.md, "Nothing unbounded": QoS 1/2 messages for a connected client are queued
/// up to the session limit, *then the client is disconnected* (and counted) — never
/// dropped while it stays connected ("no lost message"). Here: in-flight window 2,
/// queue 5, a subscriber that never acknowledges, 20 QoS 1 messages.
#[test]
fn qos1_subscriber_past_the_queue_limit_is_disconnected_not_dropped() {
    let broker = Broker::start(&["--max-inflight", "2", "--max-queued-messages", "5"]);
    let addr = broker.mqtt_addr();
    let mut s = raw_v311_client(addr, "never-acks", 30);
    s.write_all(&subscribe(1, "nq/#", 0x01, false)).unwrap();
    assert_eq!(read_packet(&mut s).body, [0x00, 0x01, 0x01]);

    let rt = runtime();
    rt.block_on(async {
        let mut publisher = V4::connect(v4_tcp("nq-pub", addr)).await;
        for i in 0..20 {
            publisher
                .publish("nq/x", 1, format!("n{i}").as_bytes())
                .await;
        }
    });
    // The two in flight arrive; then the broker must end the connection.
    let end = read_until_closed(&mut s, WAIT);
    let packets = split_packets(&end.bytes);
    assert!(packets.iter().all(|p| p.kind() == 3), "{packets:02x?}");
    assert_eq!(broker.metric("ringmq_disconnected_slow_consumer"), 1);
    assert_eq!(broker.metric("ringmq_dropped_queue_full"), 0);
}
