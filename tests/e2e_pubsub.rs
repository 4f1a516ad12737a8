//! Publish/subscribe through the real broker with rumqttc clients: QoS 0 and 1, the `+`
//! and `#` wildcards, `#` not matching `$SYS/...`, MQTT 3.1.1 and 5.0, and the two
//! versions talking to each other. Each test starts its own broker (two shards, so the
//! clients may land on different shards).

mod common;
#[path = "e2e_support.rs"]
mod support;

use common::Broker;
use support::*;

/// What the wildcard tests publish, in order (topic, QoS, payload); the last one, with
/// payload `end`, goes to `sport/tennis/score`, which every subscriber but the `$SYS`
/// one matches, and closes each subscriber's list.
const PUBLISHES: &[(&str, u8, &str)] = &[
    ("sport/tennis/score", 1, "t1"),
    ("sport/tennis/score/set", 1, "t2"),
    ("sport", 1, "s0"),
    ("sport/golf/score", 0, "g1"),
    ("news/today", 1, "n1"),
    ("sport/tennis", 0, "t0"),
];

/// What each subscription must receive (the messages before `end`), in order.
fn expected(filter: &str, sub_qos: u8) -> Vec<Got> {
    let all: &[(&str, &[&str])] = &[
        ("sport/+/score", &["t1", "g1"]),
        ("sport/#", &["t1", "t2", "s0", "g1", "t0"]),
        ("#", &["t1", "t2", "s0", "g1", "n1", "t0"]),
        ("sport/tennis/score", &["t1"]),
        ("+/tennis/#", &["t1", "t2", "t0"]),
    ];
    let wanted = all.iter().find(|(f, _)| *f == filter).unwrap().1;
    PUBLISHES
        .iter()
        .filter(|(_, _, p)| wanted.contains(p))
        .map(|&(t, q, p)| got(t, q.min(sub_qos), p))
        .collect()
}

/// (filter, QoS) of each wildcard-test subscriber.
const SUBSCRIPTIONS: &[(&str, u8)] = &[
    ("sport/+/score", 1),
    ("sport/#", 1),
    ("#", 1),
    ("sport/tennis/score", 1),
    ("sport/+/score", 0),
    ("+/tennis/#", 1),
];

fn start_broker() -> Broker {
    // $SYS topics every second, so that `#` subscribers have a chance to see them.
    Broker::start(&["--sys-interval", "1"])
}

#[test]
fn v311_qos0_qos1_and_wildcards() {
    let broker = start_broker();
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut subs = Vec::new();
        for (i, &(filter, qos)) in SUBSCRIPTIONS.iter().enumerate() {
            let mut c = V4::connect(v4_tcp(&format!("sub-{i}"), addr)).await;
            c.subscribe_ok(filter, qos).await;
            subs.push((filter, qos, c));
        }
        // Subscribed after the `#` subscriber: once it sees a live (not retained) $SYS
        // message, one was published while `#` was subscribed.
        let mut sys = V4::connect(v4_tcp("sys", addr)).await;
        sys.subscribe_ok("$SYS/#", 0).await;
        loop {
            let g = sys.next_publish().await;
            assert!(g.topic.starts_with("$SYS/broker/"), "{g:?}");
            assert_eq!(g.qos, 0);
            if !g.retain {
                break;
            }
        }

        let mut publisher = V4::connect(v4_tcp("pub", addr)).await;
        for &(topic, qos, payload) in PUBLISHES {
            publisher.publish(topic, qos, payload.as_bytes()).await;
        }
        publisher.publish("sport/tennis/score", 1, b"end").await;

        for (filter, qos, mut c) in subs {
            let got = c.publishes_until("end").await;
            assert_eq!(got, expected(filter, qos), "{filter} at QoS {qos}");
        }
    });
    assert_eq!(broker.metric("ringmq_disconnected_protocol_error"), 0);
}

#[test]
fn v5_qos0_qos1_and_wildcards() {
    let broker = start_broker();
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut subs = Vec::new();
        for (i, &(filter, qos)) in SUBSCRIPTIONS.iter().enumerate() {
            let mut c = V5::connect(v5_tcp(&format!("sub5-{i}"), addr)).await;
            c.subscribe_ok(filter, qos).await;
            subs.push((filter, qos, c));
        }
        let mut sys = V5::connect(v5_tcp("sys5", addr)).await;
        sys.subscribe_ok("$SYS/#", 0).await;
        loop {
            let g = sys.next_publish().await;
            assert!(g.topic.starts_with("$SYS/broker/"), "{g:?}");
            if !g.retain {
                break;
            }
        }

        let mut publisher = V5::connect(v5_tcp("pub5", addr)).await;
        for &(topic, qos, payload) in PUBLISHES {
            publisher.publish(topic, qos, payload.as_bytes()).await;
        }
        publisher.publish("sport/tennis/score", 1, b"end").await;

        for (filter, qos, mut c) in subs {
            let got = c.publishes_until("end").await;
            assert_eq!(got, expected(filter, qos), "{filter} at QoS {qos}");
        }
    });
    assert_eq!(broker.metric("ringmq_disconnected_protocol_error"), 0);
}

/// A 3.1.1 publisher reaches a 5.0 subscriber and the other way round, at both QoS,
/// in order, with payloads (binary and empty) intact.
#[test]
fn v311_and_v5_clients_exchange_messages() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut sub5 = V5::connect(v5_tcp("mixed-sub5", addr)).await;
        sub5.subscribe_ok("mix/to5/+", 1).await;
        let mut sub4 = V4::connect(v4_tcp("mixed-sub4", addr)).await;
        sub4.subscribe_ok("mix/to4/#", 1).await;
        let mut pub4 = V4::connect(v4_tcp("mixed-pub4", addr)).await;
        let mut pub5 = V5::connect(v5_tcp("mixed-pub5", addr)).await;

        let binary: Vec<u8> = (0..=255u8).collect();
        let mut want5 = Vec::new();
        let mut want4 = Vec::new();
        for i in 0..20u8 {
            let qos = i % 2;
            let payload = format!("m{i}");
            pub4.publish("mix/to5/a", qos, payload.as_bytes()).await;
            want5.push(got("mix/to5/a", qos, &payload));
            pub5.publish("mix/to4/b/c", qos, payload.as_bytes()).await;
            want4.push(got("mix/to4/b/c", qos, &payload));
        }
        pub4.publish("mix/to5/bin", 1, &binary).await;
        pub5.publish("mix/to4/empty", 1, b"").await;
        pub4.publish("mix/to5/x", 1, b"end").await;
        pub5.publish("mix/to4/x", 1, b"end").await;

        let mut got5 = sub5.publishes_until("end").await;
        let bin = got5.pop().expect("the binary message");
        assert_eq!(bin.topic, "mix/to5/bin");
        assert_eq!(bin.payload, binary);
        assert_eq!(got5, want5);

        let mut got4 = sub4.publishes_until("end").await;
        assert_eq!(got4.pop(), Some(got("mix/to4/empty", 1, "")));
        assert_eq!(got4, want4);
    });
    // Every message above went to exactly one subscriber: 20 + 1 + 1 each way.
    assert_eq!(broker.metric("ringmq_messages_in"), 44);
    assert_eq!(broker.metric("ringmq_messages_out"), 44);
}
