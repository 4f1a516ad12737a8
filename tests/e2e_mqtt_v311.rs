//! MQTT 3.1.1 conformance, end to end (issue 4): QoS 2 both ways, retained messages,
//! wills, persistent sessions and their bounded offline queue, overlapping
//! subscriptions, zero-length client ids, `$SYS` topics and subscription refusals. The
//! broker runs with two shards and, where it matters, the clients sit on different
//! ones. Clients are rumqttc and, where a test must see exact bytes (DUP flags, return
//! codes), raw packets written by hand.

mod common;
mod mqtt;

use std::collections::BTreeMap;

use common::Broker;
use mqtt::v4::{self, LastWill, QoS, SubscribeReasonCode};
use mqtt::*;

/// A QoS 2 PUBLISH sent again (DUP) before PUBREL is answered again but delivered once
/// (MQTT-4.3.3-9/10: the receiver remembers the packet id until PUBREL); after PUBCOMP
/// the id is free and a new message with it is delivered. Publisher and subscriber on
/// different shards.
#[test]
fn qos2_publish_repeated_before_pubrel_is_delivered_once() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let (mut sub, sub_shard) = rt.block_on(connect_anywhere(&broker, || {
        v4::Client::connect(v4::options("q2in-sub", addr))
    }));
    rt.block_on(sub.subscribe("q2/in", QoS::ExactlyOnce));
    let (mut p, _, _) = raw_where(
        &broker,
        |s| s != sub_shard,
        || raw_v311(addr, "q2in-pub", true, 60),
    );

    p.send(&publish(4, "q2/in", 2, false, false, 7, &[], b"first"));
    assert_eq!(
        p.read(),
        Raw {
            first: 0x50,
            body: vec![0, 7]
        },
        "PUBREC"
    );
    p.send(&publish(4, "q2/in", 2, true, false, 7, &[], b"first"));
    assert_eq!(
        p.read(),
        Raw {
            first: 0x50,
            body: vec![0, 7]
        },
        "PUBREC again"
    );
    p.send(&ack(PUBREL, 7));
    assert_eq!(
        p.read(),
        Raw {
            first: 0x70,
            body: vec![0, 7]
        },
        "PUBCOMP"
    );
    // The id is free again: this is a new message.
    p.send(&publish(4, "q2/in", 2, false, false, 7, &[], b"second"));
    assert_eq!(p.read().first, 0x50);
    p.send(&ack(PUBREL, 7));
    assert_eq!(p.read().first, 0x70);

    rt.block_on(async {
        let m = sub.next_publish().await;
        assert_eq!((v4::text(&m).as_str(), m.qos), ("first", QoS::ExactlyOnce));
        assert_eq!(v4::text(&sub.next_publish().await), "second");
        sub.no_publish().await;
    });

    // A persistent publisher's session remembers the id across a reconnect, on whichever
    // shard it lands (MQTT-4.3.3-9 holds for the session, not the connection).
    let (mut p, _) = raw_v311(addr, "q2in-persistent", false, 60);
    p.send(&publish(4, "q2/in", 2, false, false, 9, &[], b"third"));
    assert_eq!(
        p.read(),
        Raw {
            first: 0x50,
            body: vec![0, 9]
        }
    );
    drop(p);
    for _ in 0..3 {
        let (mut p, connack) = raw_v311(addr, "q2in-persistent", false, 60);
        assert_eq!(connack.body, [1, 0]);
        p.send(&publish(4, "q2/in", 2, true, false, 9, &[], b"third"));
        assert_eq!(
            p.read(),
            Raw {
                first: 0x50,
                body: vec![0, 9]
            }
        );
        p.send(&DISCONNECT);
        p.until_closed();
    }
    let (mut p, _) = raw_v311(addr, "q2in-persistent", false, 60);
    p.send(&ack(PUBREL, 9));
    assert_eq!(
        p.read(),
        Raw {
            first: 0x70,
            body: vec![0, 9]
        }
    );
    rt.block_on(async {
        assert_eq!(v4::text(&sub.next_publish().await), "third");
        sub.no_publish().await;
    });
}

/// A QoS 2 delivery interrupted by a disconnect resumes on the next connection of the
/// persistent session, on another shard: the unanswered PUBLISH is sent again with DUP
/// and the same packet id, PUBREL is sent again after PUBREC until PUBCOMP comes
/// (MQTT-4.4.0-1, MQTT-3.3.1-1), and nothing is sent once the flow is complete.
#[test]
fn qos2_delivery_resumes_after_reconnect() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let mut publisher = rt.block_on(v4::Client::connect(v4::options("q2out-pub", addr)));

    let (mut s, connack, first_shard) =
        raw_where(&broker, |_| true, || raw_v311(addr, "q2out", false, 60));
    assert_eq!(connack.body, [0, 0], "a new session");
    s.send(&subscribe(4, 1, "q2/out", 2, &[]));
    assert_eq!(
        s.read(),
        Raw {
            first: 0x90,
            body: vec![0, 1, 2]
        }
    );
    rt.block_on(publisher.publish("q2/out", QoS::ExactlyOnce, false, b"exactly"));
    let p = s.read();
    assert_eq!((p.kind(), p.qos(), p.dup()), (3, 2, false), "{p:02x?}");
    let pkid = p.pkid();
    drop(s); // no PUBREC

    let (mut s, connack, _) = raw_where(
        &broker,
        |sh| sh != first_shard,
        || raw_v311(addr, "q2out", false, 60),
    );
    assert_eq!(connack.body, [1, 0], "session present");
    let again = s.read();
    assert_eq!(
        (again.kind(), again.qos(), again.dup(), again.pkid()),
        (3, 2, true, pkid),
        "{again:02x?}"
    );
    assert_eq!(again.publish_parts(4).1, b"exactly");
    s.send(&ack(PUBREC, pkid));
    assert_eq!(
        s.read(),
        Raw {
            first: 0x62,
            body: pkid.to_be_bytes().to_vec()
        }
    );
    drop(s); // no PUBCOMP

    let (mut s, connack) = raw_v311(addr, "q2out", false, 60);
    assert_eq!(connack.body, [1, 0]);
    assert_eq!(
        s.read(),
        Raw {
            first: 0x62,
            body: pkid.to_be_bytes().to_vec()
        },
        "PUBREL again"
    );
    s.send(&ack(PUBCOMP, pkid));
    s.nothing();
    s.send(&DISCONNECT);
    drop(s);

    let (mut s, _) = raw_v311(addr, "q2out", false, 60);
    s.nothing();
}

/// Retained messages: stored, replaced (from another shard), cleared by an empty
/// payload (MQTT-3.3.1-5, -6, -10, -11), and sent with RETAIN set to a new subscription
/// on either shard, wildcard filters included, whichever shard published them
/// (MQTT-3.3.1-8); a message that matches an established subscription goes with
/// RETAIN 0 (MQTT-3.3.1-9).
#[test]
fn retained_messages_from_every_shard_reach_new_wildcard_subscriptions() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let (mut a, a_shard) =
            connect_anywhere(&broker, || v4::Client::connect(v4::options("ret-a", addr))).await;
        let (mut b, _) = connect_where(
            &broker,
            |s| s != a_shard,
            || v4::Client::connect(v4::options("ret-b", addr)),
            v4::Client::disconnect,
        )
        .await;
        a.publish("r/a", QoS::AtLeastOnce, true, b"a1").await;
        b.publish("r/b/c", QoS::AtLeastOnce, true, b"b1").await;
        b.publish("r/a", QoS::AtLeastOnce, true, b"a2").await;
        a.publish("r/gone", QoS::AtLeastOnce, true, b"x").await;
        b.publish("r/gone", QoS::AtLeastOnce, true, b"").await;

        let mut want = BTreeMap::from([
            ("r/a".to_string(), "a2".to_string()),
            ("r/b/c".to_string(), "b1".to_string()),
        ]);
        for shard in 0..2 {
            let id = format!("ret-sub-{shard}");
            let (mut sub, _) = connect_where(
                &broker,
                |s| s == shard,
                || v4::Client::connect(v4::options(&id, addr)),
                v4::Client::disconnect,
            )
            .await;
            sub.subscribe("r/#", QoS::AtLeastOnce).await;
            let mut got = BTreeMap::new();
            for _ in 0..2 {
                let m = sub.next_publish().await;
                assert!(m.retain, "sent for a new subscription: RETAIN set ({m:?})");
                got.insert(m.topic.clone(), v4::text(&m));
            }
            sub.no_publish().await;
            assert_eq!(got, want, "subscriber on shard {shard}");

            sub.subscribe("r/+/c", QoS::AtLeastOnce).await;
            let m = sub.next_publish().await;
            assert_eq!(
                (m.topic.as_str(), v4::text(&m).as_str(), m.retain),
                ("r/b/c", "b1", true)
            );

            // A live message on an established subscription: RETAIN 0.
            b.publish(
                "r/a",
                QoS::AtLeastOnce,
                true,
                format!("live{shard}").as_bytes(),
            )
            .await;
            let m = sub.next_publish().await;
            assert_eq!((v4::text(&m), m.retain), (format!("live{shard}"), false));
            want.insert("r/a".into(), format!("live{shard}"));
            sub.disconnect().await;
        }
    });
}

/// The will is published, with its QoS and RETAIN, whenever a connection ends without a
/// DISCONNECT: the socket closed, keep alive expired, a protocol error, a takeover
/// (MQTT-3.1.2-8, MQTT-3.1.4-2); never after DISCONNECT (MQTT-3.1.2-10). The clients
/// sit on the other shard from the watcher.
#[test]
fn will_is_published_on_every_end_but_disconnect() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let (mut watch, watch_shard) = rt.block_on(connect_anywhere(&broker, || {
        v4::Client::connect(v4::options("will-watch", addr))
    }));
    rt.block_on(watch.subscribe("will/#", QoS::ExactlyOnce));
    let elsewhere = |s: usize| s != watch_shard;
    let will = |topic: &'static str, qos: u8, retain: bool| RawWill {
        topic,
        payload: b"gone",
        qos,
        retain,
    };

    // The socket just closes.
    let (c, _) = rt.block_on(connect_where(
        &broker,
        elsewhere,
        || {
            let mut o = v4::options("will-close", addr);
            o.set_last_will(LastWill::new("will/close", "gone", QoS::AtLeastOnce, false));
            v4::Client::connect(o)
        },
        v4::Client::disconnect,
    ));
    c.kill();
    let m = rt.block_on(watch.next_publish());
    assert_eq!(
        (m.topic.as_str(), m.qos, m.retain),
        ("will/close", QoS::AtLeastOnce, false)
    );

    // Keep alive 1 s and silence: closed after 1.5 s, will published.
    let connect_with = |id: &'static str, w: RawWill<'static>, ka: u16| {
        move || {
            let mut c = RawConn::open(addr);
            c.send(&connect(4, id, true, ka, Some(w), &[]));
            let ack = c.read();
            (c, ack)
        }
    };
    let (mut c, _, _) = raw_where(
        &broker,
        elsewhere,
        connect_with("will-ka", will("will/keepalive", 2, false), 1),
    );
    c.until_closed();
    let m = rt.block_on(watch.next_publish());
    assert_eq!(
        (m.topic.as_str(), m.qos),
        ("will/keepalive", QoS::ExactlyOnce)
    );

    // A protocol error: a second CONNECT (MQTT-3.1.0-2).
    let (mut c, _, _) = raw_where(
        &broker,
        elsewhere,
        connect_with("will-proto", will("will/protocol", 0, false), 60),
    );
    c.send(&connect(4, "will-proto", true, 60, None, &[]));
    c.until_closed();
    let m = rt.block_on(watch.next_publish());
    assert_eq!(
        (m.topic.as_str(), m.qos),
        ("will/protocol", QoS::AtMostOnce)
    );

    // Taken over by a new connection with the same client id.
    let (mut old, _, _) = raw_where(
        &broker,
        elsewhere,
        connect_with("will-taken", will("will/takeover", 1, true), 60),
    );
    let (_new, _) = raw_v311(addr, "will-taken", true, 60);
    old.until_closed();
    let m = rt.block_on(watch.next_publish());
    assert_eq!(
        (m.topic.as_str(), m.retain),
        ("will/takeover", false),
        "a live delivery"
    );
    // Retained: a new subscriber gets it.
    let mut late = rt.block_on(v4::Client::connect(v4::options("will-late", addr)));
    rt.block_on(late.subscribe("will/takeover", QoS::AtLeastOnce));
    let m = rt.block_on(late.next_publish());
    assert_eq!((v4::text(&m).as_str(), m.retain), ("gone", true));

    // DISCONNECT: no will.
    let (c, _) = rt.block_on(connect_where(
        &broker,
        elsewhere,
        || {
            let mut o = v4::options("will-bye", addr);
            o.set_last_will(LastWill::new("will/bye", "gone", QoS::AtLeastOnce, false));
            v4::Client::connect(o)
        },
        v4::Client::disconnect,
    ));
    rt.block_on(c.disconnect());
    rt.block_on(watch.no_publish());
}

/// Clean Session 0: subscriptions and the QoS 1 and 2 messages published while the
/// client is away are kept and delivered, in order, when it returns (MQTT-3.1.2-4,
/// MQTT-3.1.2-5), and CONNACK says whether a session is present (MQTT-3.2.2-2, -3);
/// Clean Session 1 discards it (MQTT-3.1.2-6). The publisher sits on the other shard.
#[test]
fn persistent_session_keeps_subscriptions_and_queues_messages_while_offline() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let persistent = || {
            let mut o = v4::options("ps", addr);
            o.set_clean_session(false);
            v4::Client::connect(o)
        };
        let (mut sub, shard) = connect_anywhere(&broker, persistent).await;
        assert!(!sub.connack.session_present);
        sub.subscribe("ps/#", QoS::ExactlyOnce).await;
        sub.disconnect().await;

        let (mut publisher, _) = connect_where(
            &broker,
            |s| s != shard,
            || v4::Client::connect(v4::options("ps-pub", addr)),
            v4::Client::disconnect,
        )
        .await;
        publisher
            .publish("ps/a", QoS::AtLeastOnce, false, b"1")
            .await;
        publisher
            .publish("ps/b", QoS::ExactlyOnce, false, b"2")
            .await;
        publisher
            .publish("ps/a", QoS::AtLeastOnce, false, b"3")
            .await;

        let mut sub = persistent().await;
        assert!(sub.connack.session_present);
        let got: Vec<(String, QoS)> = [
            sub.next_publish().await,
            sub.next_publish().await,
            sub.next_publish().await,
        ]
        .iter()
        .map(|m| (v4::text(m), m.qos))
        .collect();
        assert_eq!(
            got,
            [
                ("1".to_string(), QoS::AtLeastOnce),
                ("2".to_string(), QoS::ExactlyOnce),
                ("3".to_string(), QoS::AtLeastOnce)
            ]
        );
        sub.disconnect().await;

        // Clean Session 1 ends it; the next persistent connection starts afresh.
        let mut o = v4::options("ps", addr);
        o.set_clean_session(true);
        v4::Client::connect(o).await.disconnect().await;
        let mut sub = persistent().await;
        assert!(!sub.connack.session_present);
        publisher
            .publish("ps/a", QoS::AtLeastOnce, false, b"4")
            .await;
        sub.no_publish().await;
    });
}

/// The offline queue of a session holds `--max-queued-messages` (default 1000): past
/// it the oldest message goes, and each one dropped is counted in
/// `ringmq_dropped_queue_full`.
#[test]
fn offline_queue_keeps_the_newest_1000_and_counts_what_it_drops() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let persistent = || {
            let mut o = v4::options("oq", addr);
            o.set_clean_session(false);
            v4::Client::connect(o)
        };
        let (mut sub, shard) = connect_anywhere(&broker, persistent).await;
        sub.subscribe("oq", QoS::AtLeastOnce).await;
        sub.disconnect().await;
        let (mut publisher, _) = connect_where(
            &broker,
            |s| s != shard,
            || v4::Client::connect(v4::options("oq-pub", addr)),
            v4::Client::disconnect,
        )
        .await;
        for i in 0..1005 {
            publisher
                .publish("oq", QoS::AtLeastOnce, false, i.to_string().as_bytes())
                .await;
        }
        // The publisher's acknowledgements come before the session's shard has queued
        // the last ones: wait for the count, then check it stays.
        broker.wait_for_metric("ringmq_dropped_queue_full", WAIT, |n| n >= 5);
        let mut sub = persistent().await;
        for i in 5..1005 {
            assert_eq!(v4::text(&sub.next_publish().await), i.to_string());
        }
        sub.no_publish().await;
        assert_eq!(broker.metric("ringmq_dropped_queue_full"), 5);
    });
}

/// A client whose subscriptions overlap gets one copy of a message, at the highest
/// QoS its matching subscriptions granted (MQTT-3.3.5-1).
#[test]
fn overlapping_subscriptions_deliver_one_copy_at_the_highest_qos() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let (mut sub, shard) =
            connect_anywhere(&broker, || v4::Client::connect(v4::options("ov-sub", addr))).await;
        sub.subscribe("ov/+", QoS::AtMostOnce).await;
        sub.subscribe("ov/#", QoS::ExactlyOnce).await;
        sub.subscribe("ov/x", QoS::AtLeastOnce).await;
        let (mut publisher, _) = connect_where(
            &broker,
            |s| s != shard,
            || v4::Client::connect(v4::options("ov-pub", addr)),
            v4::Client::disconnect,
        )
        .await;
        publisher
            .publish("ov/x", QoS::ExactlyOnce, false, b"two")
            .await;
        let m = sub.next_publish().await;
        assert_eq!((v4::text(&m).as_str(), m.qos), ("two", QoS::ExactlyOnce));
        publisher
            .publish("ov/x", QoS::AtLeastOnce, false, b"one")
            .await;
        let m = sub.next_publish().await;
        assert_eq!((v4::text(&m).as_str(), m.qos), ("one", QoS::AtLeastOnce));
        sub.no_publish().await;
    });
}

/// A zero-length client id is accepted with Clean Session 1 (the broker assigns one,
/// MQTT-3.1.3-6) and refused with return code 0x02 with Clean Session 0 (MQTT-3.1.3-8).
#[test]
fn zero_length_client_id_needs_a_clean_session() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let (mut ok, ack) = raw_v311(addr, "", true, 60);
    assert_eq!(ack.body, [0, 0]);
    ok.send(&PINGREQ);
    assert_eq!(
        ok.read(),
        Raw {
            first: 0xD0,
            body: vec![]
        }
    );
    // Two anonymous clients are two sessions: neither takes the other over.
    let (mut other, ack) = raw_v311(addr, "", true, 60);
    assert_eq!(ack.body, [0, 0]);
    other.send(&PINGREQ);
    assert_eq!(other.read().first, 0xD0);
    ok.send(&PINGREQ);
    assert_eq!(ok.read().first, 0xD0);

    let (mut refused, ack) = raw_v311(addr, "", false, 60);
    assert_eq!(ack.body, [0, 2], "identifier rejected");
    assert_eq!(refused.until_closed(), []);
}

/// `$SYS/broker/...` topics are published at `--sys-interval`, reach `$SYS/#`, and are
/// matched by no filter starting with a wildcard (MQTT-4.7.2-1).
#[test]
fn sys_topics_are_published_periodically_and_not_matched_by_wildcards() {
    let broker = Broker::start(&["--shards", "2", "--sys-interval", "1"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut all = v4::Client::connect(v4::options("sys-all", addr)).await;
        all.subscribe("#", QoS::AtMostOnce).await;
        all.subscribe("+/broker/uptime", QoS::AtMostOnce).await;
        let mut sys = v4::Client::connect(v4::options("sys-sys", addr)).await;
        sys.subscribe("$SYS/broker/#", QoS::AtMostOnce).await;
        // Two live (not retained) uptime messages: it is published again and again.
        let mut uptimes = 0;
        let mut topics = std::collections::BTreeSet::new();
        while uptimes < 2 {
            let m = sys.next_publish().await;
            assert!(m.topic.starts_with("$SYS/broker/"), "{m:?}");
            topics.insert(m.topic.clone());
            if m.topic == "$SYS/broker/uptime" && !m.retain {
                uptimes += 1;
            }
        }
        for t in ["version", "clients/connected", "messages/received"] {
            assert!(topics.contains(&format!("$SYS/broker/{t}")), "{topics:?}");
        }
        all.publish("not/sys", QoS::AtMostOnce, false, b"x").await;
        let m = all.next_publish().await;
        assert_eq!(m.topic, "not/sys", "`#` sees ordinary topics only");
        all.no_publish().await;
    });
}

/// A subscription the broker does not allow gets the failure return code 0x80
/// (MQTT-3.9.3-1); the others in the same SUBSCRIBE are granted. `test/nosubscribe` is
/// the filter the Paho interoperability suite expects to be refused.
#[test]
fn denied_subscription_gets_return_code_0x80() {
    let broker = Broker::start(&["--shards", "2", "--deny-subscribe", "test/nosubscribe"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut c = v4::Client::connect(v4::options("deny", addr)).await;
        assert_eq!(
            c.subscribe("test/nosubscribe", QoS::ExactlyOnce).await,
            SubscribeReasonCode::Failure
        );
        assert_eq!(
            c.subscribe("test/#", QoS::AtLeastOnce).await,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        );
    });
    // Both in one SUBSCRIBE: one code each.
    let (mut s, _) = raw_v311(addr, "deny-raw", true, 60);
    let mut body = vec![0, 9];
    utf8(b"test/nosubscribe", &mut body);
    body.push(1);
    utf8(b"test/ok", &mut body);
    body.push(2);
    s.send(&packet(0x82, &body));
    assert_eq!(
        s.read(),
        Raw {
            first: 0x90,
            body: vec![0, 9, 0x80, 2]
        }
    );
}
