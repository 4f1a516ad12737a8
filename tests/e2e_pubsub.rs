//! Publish/subscribe through the real broker with rumqttc clients: QoS 0, 1 and 2, the
//! `+` and `#` wildcards, `#` not matching `$SYS/...`, UNSUBSCRIBE, MQTT 3.1.1 and 5.0,
//! and the two versions talking to each other. Each test starts its own broker (two
//! shards, so the clients may land on different shards).

mod support;

use std::net::SocketAddr;

use support::client::{Client, Protocol};
use support::v5::Mqtt5;
use support::v311::Mqtt311;
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

/// Each subscription of `SUBSCRIPTIONS` gets exactly the messages of `PUBLISHES` it
/// matches, in order, at the lower of the two QoS; `#` gets no `$SYS` message
/// (MQTT-4.7.2-1), though they are published meanwhile.
fn subscriptions_get_every_matching_message_at_their_qos<P: Protocol>(
    options: impl Fn(&str, SocketAddr) -> P::Options,
) {
    // $SYS topics every second, so that `#` subscribers have a chance to see them.
    let broker = Broker::start(&["--sys-interval", "1"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut subs = Vec::new();
        for (i, &(filter, qos)) in SUBSCRIPTIONS.iter().enumerate() {
            let mut c = Client::<P>::connect(options(&format!("sub-{i}"), addr)).await;
            c.subscribe_ok(filter, qos).await;
            subs.push((filter, qos, c));
        }
        // Subscribed after the `#` subscriber: once it sees a live (not retained) $SYS
        // message, one was published while `#` was subscribed.
        let mut sys = Client::<P>::connect(options("sys", addr)).await;
        sys.subscribe_ok("$SYS/#", 0).await;
        loop {
            let g = sys.next_publish().await;
            assert!(g.topic.starts_with("$SYS/broker/"), "{g:?}");
            assert_eq!(g.qos, 0);
            if !g.retain {
                break;
            }
        }

        let mut publisher = Client::<P>::connect(options("pub", addr)).await;
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
fn v311_subscriptions_get_every_matching_message_at_their_qos() {
    subscriptions_get_every_matching_message_at_their_qos::<Mqtt311>(v311::options);
}

#[test]
fn v5_subscriptions_get_every_matching_message_at_their_qos() {
    subscriptions_get_every_matching_message_at_their_qos::<Mqtt5>(v5::options);
}

/// A 3.1.1 publisher reaches a 5.0 subscriber and the other way round, at both QoS,
/// in order, with payloads (binary and empty) intact.
#[test]
fn v311_and_v5_clients_exchange_messages() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut sub5 = V5::connect(v5::options("mixed-sub5", addr)).await;
        sub5.subscribe_ok("mix/to5/+", 1).await;
        let mut sub4 = V4::connect(v311::options("mixed-sub4", addr)).await;
        sub4.subscribe_ok("mix/to4/#", 1).await;
        let mut pub4 = V4::connect(v311::options("mixed-pub4", addr)).await;
        let mut pub5 = V5::connect(v5::options("mixed-pub5", addr)).await;

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

/// QoS 2 end to end, to a 3.1.1 and a 5.0 subscriber: each message exactly once, in
/// order, at QoS 2.
#[test]
fn qos2_messages_arrive_exactly_once_in_order() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut sub4 = V4::connect(v311::options("q2-sub4", addr)).await;
        sub4.subscribe_ok("q2/#", 2).await;
        let mut sub5 = V5::connect(v5::options("q2-sub5", addr)).await;
        sub5.subscribe_ok("q2/#", 2).await;
        let mut publisher = V4::connect(v311::options("q2-pub", addr)).await;
        for i in 0..20 {
            publisher
                .publish("q2/x", 2, format!("e{i}").as_bytes())
                .await;
        }
        publisher.publish("q2/x", 2, b"end").await;
        let want: Vec<Got> = (0..20).map(|i| got("q2/x", 2, &format!("e{i}"))).collect();
        assert_eq!(sub4.publishes_until("end").await, want);
        assert_eq!(sub5.publishes_until("end").await, want);
    });
}

/// After UNSUBACK no more messages arrive for that filter; the client's other
/// subscriptions stay.
#[test]
fn unsubscribe_stops_delivery_for_that_filter_only() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut sub = V4::connect(v311::options("unsub", addr)).await;
        sub.subscribe_ok("un/#", 1).await;
        sub.subscribe_ok("un/keep", 1).await;
        let mut publisher = V4::connect(v311::options("un-pub", addr)).await;
        publisher.publish("un/drop", 1, b"before").await;
        assert_eq!(sub.next_publish().await, got("un/drop", 1, "before"));

        sub.unsubscribe("un/#").await;
        publisher.publish("un/drop", 1, b"after").await;
        publisher.publish("un/keep", 1, b"kept").await;
        assert_eq!(sub.next_publish().await, got("un/keep", 1, "kept"));
        sub.no_publish().await;
    });
}
