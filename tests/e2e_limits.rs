//! The bounds a client (or many) could otherwise push without end, each with its answer
//! and its count: topic levels (`--max-topic-levels`), subscription memory per session
//! (`--max-subscription-bytes`), sessions (`--max-sessions`), 3.1.1 persistent sessions'
//! lifetime (`--v311-session-expiry`), QoS 2 messages awaiting PUBREL from a 3.1.1 client
//! (`--max-inflight`), and the gauges that make a flood visible in `/metrics`.

mod support;

use support::*;

/// A filter or topic of `n` levels.
fn levels(n: usize) -> String {
    vec!["l"; n].join("/")
}

/// A raw MQTT 5 client with a clean start and a session that outlives it by an hour.
fn v5_persistent(broker: &Broker, id: &str) -> (std::net::TcpStream, RawPacket) {
    let mut props = Vec::new();
    prop_u32(SESSION_EXPIRY, 3600, &mut props);
    raw_v5(broker.mqtt_addr(), id, false, &props)
}

#[test]
fn topics_and_filters_deeper_than_the_bound_are_refused() {
    let broker = Broker::start(&["--max-topic-levels", "8"]);
    let addr = broker.mqtt_addr();

    // MQTT 5: the filter is refused with 0x8F Topic Filter invalid; at the bound it is
    // granted.
    let (mut c5, _) = raw_v5_client(addr, "deep-v5", 60);
    c5.send(&subscribe(5, 1, &levels(9), 1, &[]));
    assert_eq!(c5.read_packet().suback(5).1, [0x8F]);
    c5.send(&subscribe(5, 2, &levels(8), 1, &[]));
    assert_eq!(c5.read_packet().suback(5).1, [0x01]);
    // A QoS 1 PUBLISH to a topic deeper than the bound: PUBACK 0x90 Topic Name invalid,
    // and the connection stays; one at the bound is delivered.
    c5.send(&publish(5, &levels(9), 1, false, false, 5, &[], b"x"));
    let ack = c5.read_packet();
    assert_eq!((ack.kind(), ack.pkid()), (4, 5), "{ack:02x?}");
    assert_eq!(ack.reason_and_props().0, 0x90);
    c5.send(&publish(5, &levels(8), 1, false, false, 6, &[], b"y"));
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(c5.read_packet());
    }
    assert!(
        got.iter().any(|p| p.kind() == 4 && p.pkid() == 6),
        "{got:02x?}"
    );
    assert!(
        got.iter()
            .any(|p| p.kind() == 3 && p.topic() == levels(8) && p.payload(5) == b"y"),
        "{got:02x?}"
    );
    // At QoS 0 there is no acknowledgement to carry the refusal: DISCONNECT 0x90.
    c5.send(&publish(5, &levels(9), 0, false, false, 0, &[], b"z"));
    let end = c5.packets_until_closed();
    assert_eq!(end.len(), 1, "{end:02x?}");
    assert_eq!(end[0].v5_disconnect().0, 0x90);

    // MQTT 3.1.1: the filter is refused with 0x80; a PUBLISH closes the connection.
    let mut c4 = raw_v311_client(addr, "deep-v311", 60);
    c4.send(&subscribe(4, 1, &levels(9), 0, &[]));
    assert_eq!(c4.read_packet().suback(4).1, [0x80]);
    c4.send(&publish_qos0(4, &levels(9), b"x"));
    c4.expect_closed_silently("a 3.1.1 PUBLISH deeper than the bound");

    // A will deeper than the bound is refused with the CONNECT (5.0: CONNACK 0x90).
    let will = RawWill {
        topic: &levels(9),
        payload: b"w",
        qos: 0,
        retain: true,
    };
    let (_, ack) = raw_connect(addr, &connect(5, "deep-will", true, 60, Some(will), &[]));
    assert_eq!(ack.v5_connack().1, 0x90);

    assert_eq!(broker.metric("ringmq_topic_levels_refused"), 6);
}

#[test]
fn subscription_memory_per_session_is_budgeted() {
    let broker = Broker::start(&["--max-subscription-bytes", "4096"]);
    let addr = broker.mqtt_addr();
    let (mut c5, _) = raw_v5_client(addr, "budget-v5", 60);
    let mut granted = 0u16;
    let refused_at = loop {
        let pkid = granted + 1;
        c5.send(&subscribe(5, pkid, &format!("budget/{granted}/x"), 0, &[]));
        let codes = c5.read_packet().suback(5).1;
        match codes[..] {
            [0] => granted += 1,
            [0x97] => break granted,
            _ => panic!("SUBACK {codes:02x?}"),
        }
        assert!(granted < 1000, "4 KiB of subscriptions never ran out");
    };
    assert!(refused_at > 1, "{refused_at}");
    // The ones granted still work.
    let (mut p, _) = raw_v5_client(addr, "budget-pub", 60);
    p.send(&publish(5, "budget/0/x", 0, false, false, 0, &[], b"hi"));
    let got = c5.read_packet();
    assert_eq!(
        (got.topic(), got.payload(5)),
        ("budget/0/x".into(), b"hi".to_vec())
    );
    // 3.1.1 says 0x80.
    let mut c4 = raw_v311_client(addr, "budget-v311", 60);
    let refused = (1..1000u16).find_map(|i| {
        c4.send(&subscribe(4, i, &format!("budget/{i}/y"), 0, &[]));
        let codes = c4.read_packet().suback(4).1;
        (codes != [0]).then_some(codes)
    });
    assert_eq!(refused, Some(vec![0x80]));
    assert_eq!(broker.metric("ringmq_subscriptions_refused"), 2);
    assert!(broker.metric("ringmq_subscription_bytes") > 4096);
    // Unsubscribing gives the memory back: with every client gone, none is left.
    c5.send(&DISCONNECT);
    c4.send(&DISCONNECT);
    broker.wait_for_metric("ringmq_subscriptions", WAIT, |v| v == 0);
    assert_eq!(broker.metric("ringmq_subscription_bytes"), 0);
}

#[test]
fn new_sessions_past_the_bound_are_refused() {
    let broker = Broker::start(&["--max-sessions", "2"]);
    let addr = broker.mqtt_addr();
    let (mut s1, ack) = raw_v311(addr, "kept-1", false, 60);
    assert_eq!(ack.body, [0, 0]);
    s1.send(&DISCONNECT);
    s1.read_until_closed(WAIT);
    let (_s2, ack) = v5_persistent(&broker, "kept-2");
    assert_eq!(ack.v5_connack().1, 0);
    broker.wait_for_metric("ringmq_sessions_offline", WAIT, |v| v == 1);
    assert_eq!(broker.metric("ringmq_sessions_online"), 1);

    // A new session, persistent or not, 3.1.1 or 5.0: refused.
    let (mut s3, ack) = raw_v311(addr, "new-3", false, 60);
    assert_eq!(ack.body, [0, 0x03], "3.1.1: server unavailable");
    s3.expect_closed_silently("after a refusal");
    let (_, ack) = raw_v311(addr, "new-4", true, 60);
    assert_eq!(ack.body, [0, 0x03]);
    let (_, ack) = raw_v5(addr, "new-5", true, &[]);
    assert_eq!(ack.v5_connack().1, 0x97, "5.0: quota exceeded");
    // An existing session is not new: its client comes back to it.
    let (_s1, ack) = raw_v311(addr, "kept-1", false, 60);
    assert_eq!(ack.body, [1, 0], "session present");
    assert_eq!(broker.metric("ringmq_sessions_refused"), 3);
    broker.wait_for_metric("ringmq_sessions_online", WAIT, |v| v == 2);
    assert_eq!(broker.metric("ringmq_sessions_offline"), 0);
}

#[test]
fn v311_persistent_sessions_expire_when_asked() {
    let broker = Broker::start(&["--v311-session-expiry", "1", "--shards", "1"]);
    let addr = broker.mqtt_addr();
    let (mut s, _) = raw_v311(addr, "short-lived", false, 60);
    s.send(&subscribe(4, 1, "x/y", 1, &[]));
    assert_eq!(s.read_packet().suback(4).1, [1]);
    s.send(&DISCONNECT);
    s.read_until_closed(WAIT);
    broker.wait_for_metric("ringmq_sessions_expired", WAIT, |v| v == 1);
    assert_eq!(broker.metric("ringmq_sessions_offline"), 0);
    assert_eq!(broker.metric("ringmq_subscriptions"), 0);
    let (_s, ack) = raw_v311(addr, "short-lived", false, 60);
    assert_eq!(ack.body, [0, 0], "the session ended: not present");
}

#[test]
fn v311_qos2_messages_awaiting_pubrel_are_bounded() {
    let broker = Broker::start(&["--max-inflight", "8"]);
    let mut c = raw_v311_client(broker.mqtt_addr(), "qos2-v311", 60);
    for pkid in 1..=8u16 {
        c.send(&publish(4, "q2/t", 2, false, false, pkid, &[], b"m"));
        let rec = c.read_packet();
        assert_eq!((rec.first, rec.pkid()), (0x50, pkid), "PUBREC");
    }
    // A duplicate of one waiting is answered again, and is not one more.
    c.send(&publish(4, "q2/t", 2, true, false, 3, &[], b"m"));
    assert_eq!(c.read_packet().pkid(), 3);
    // A PUBREL frees one.
    c.send(&ack(PUBREL, 1));
    assert_eq!(c.read_packet().first, 0x70, "PUBCOMP");
    c.send(&publish(4, "q2/t", 2, false, false, 9, &[], b"m"));
    assert_eq!(c.read_packet().pkid(), 9);
    // One more than the bound: 3.1.1 has no reason code, the connection is closed.
    c.send(&publish(4, "q2/t", 2, false, false, 10, &[], b"m"));
    c.expect_closed_silently("a ninth QoS 2 message awaiting PUBREL");
    assert_eq!(broker.metric("ringmq_inbound_qos2_exceeded"), 1);
}

#[test]
fn gauges_show_sessions_subscriptions_and_retained_messages() {
    let broker = Broker::start(&["--shards", "1"]);
    let addr = broker.mqtt_addr();
    let (mut gone, _) = raw_v311(addr, "gauge-offline", false, 60);
    gone.send(&subscribe(4, 1, "g/a/b", 1, &[]));
    gone.read_packet();
    gone.send(&DISCONNECT);
    gone.read_until_closed(WAIT);
    let (mut here, _) = raw_v5_client(addr, "gauge-online", 60);
    here.send(&subscribe(5, 1, "g/#", 0, &[]));
    here.read_packet();
    for (topic, payload) in [("g/r1", &b"12345"[..]), ("g/r2", b"1234567890")] {
        here.send(&publish(5, topic, 1, false, true, 9, &[], payload));
        while here.read_packet().kind() != 4 {}
    }
    broker.wait_for_metric("ringmq_retained_messages", WAIT, |v| v == 2);
    assert_eq!(broker.metric("ringmq_sessions_online"), 1);
    assert_eq!(broker.metric("ringmq_sessions_offline"), 1);
    assert_eq!(broker.metric("ringmq_subscriptions"), 2);
    assert!(broker.metric("ringmq_subscription_bytes") > 0);
    // The topic and the payload of each.
    assert_eq!(broker.metric("ringmq_retained_bytes"), 4 + 5 + 4 + 10);
    // Clearing one takes it out.
    here.send(&publish(5, "g/r1", 1, false, true, 10, &[], b""));
    broker.wait_for_metric("ringmq_retained_messages", WAIT, |v| v == 1);
    assert_eq!(broker.metric("ringmq_retained_bytes"), 4 + 10);
}

/// Without the flag, the bound is 128 levels (EMQX's default).
#[test]
fn the_default_topic_level_bound_is_128() {
    let broker = Broker::start(&[]);
    let (mut c, _) = raw_v5_client(broker.mqtt_addr(), "default-depth", 60);
    c.send(&subscribe(5, 1, &levels(129), 0, &[]));
    assert_eq!(c.read_packet().suback(5).1, [0x8F]);
    c.send(&subscribe(5, 2, &levels(128), 0, &[]));
    assert_eq!(c.read_packet().suback(5).1, [0x00]);
}
