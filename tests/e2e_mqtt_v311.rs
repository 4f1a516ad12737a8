//! MQTT 3.1.1 conformance, end to end: QoS 2 from the publisher, retained messages,
//! overlapping subscriptions, zero-length client ids, `$SYS` topics and subscription
//! refusals. (Sessions, wills and QoS flows across reconnects are in `e2e_sessions`.)
//! The broker runs with two shards and, where it matters, the clients sit on different
//! ones. Clients are rumqttc and, where a test must see exact bytes (DUP flags, return
//! codes), raw packets written by hand.

mod support;

use std::collections::BTreeMap;

use support::*;

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
        V4::connect(v311::options("q2in-sub", addr))
    }));
    rt.block_on(sub.subscribe_ok("q2/in", 2));
    let (mut p, _, _) = raw_where(
        &broker,
        |s| s != sub_shard,
        &connect(4, "q2in-pub", true, 60, None, &[]),
    );

    p.send(&publish(4, "q2/in", 2, false, false, 7, &[], b"first"));
    assert_eq!(
        p.read_packet(),
        RawPacket {
            first: 0x50,
            body: vec![0, 7]
        },
        "PUBREC"
    );
    p.send(&publish(4, "q2/in", 2, true, false, 7, &[], b"first"));
    assert_eq!(
        p.read_packet(),
        RawPacket {
            first: 0x50,
            body: vec![0, 7]
        },
        "PUBREC again"
    );
    p.send(&ack(PUBREL, 7));
    assert_eq!(
        p.read_packet(),
        RawPacket {
            first: 0x70,
            body: vec![0, 7]
        },
        "PUBCOMP"
    );
    // The id is free again: this is a new message.
    p.send(&publish(4, "q2/in", 2, false, false, 7, &[], b"second"));
    assert_eq!(p.read_packet().first, 0x50);
    p.send(&ack(PUBREL, 7));
    assert_eq!(p.read_packet().first, 0x70);

    rt.block_on(async {
        let m = sub.next_publish().await;
        assert_eq!((m.text().as_str(), m.qos), ("first", 2));
        assert_eq!(sub.next_publish().await.text(), "second");
        sub.no_publish().await;
    });

    // A persistent publisher's session remembers the id across a reconnect, on whichever
    // shard it lands (MQTT-4.3.3-9 holds for the session, not the connection).
    let (mut p, _) = raw_v311(addr, "q2in-persistent", false, 60);
    p.send(&publish(4, "q2/in", 2, false, false, 9, &[], b"third"));
    assert_eq!(
        p.read_packet(),
        RawPacket {
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
            p.read_packet(),
            RawPacket {
                first: 0x50,
                body: vec![0, 9]
            }
        );
        p.send(&DISCONNECT);
        p.packets_until_closed();
    }
    let (mut p, _) = raw_v311(addr, "q2in-persistent", false, 60);
    p.send(&ack(PUBREL, 9));
    assert_eq!(
        p.read_packet(),
        RawPacket {
            first: 0x70,
            body: vec![0, 9]
        }
    );
    rt.block_on(async {
        assert_eq!(sub.next_publish().await.text(), "third");
        sub.no_publish().await;
    });
}

/// Retained messages: stored, replaced (from another shard), cleared by an empty
/// payload, which established subscriptions receive as usual (MQTT-3.3.1-5, -6, -10,
/// -11), and sent with RETAIN set to a new subscription on either shard, wildcard
/// filters included, whichever shard published them (MQTT-3.3.1-8); a message that
/// matches an established subscription goes with RETAIN 0 (MQTT-3.3.1-9).
#[test]
fn retained_messages_from_every_shard_reach_new_wildcard_subscriptions() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let (mut a, a_shard) =
            connect_anywhere(&broker, || V4::connect(v311::options("ret-a", addr))).await;
        let (mut b, _) = connect_where(
            &broker,
            |s| s != a_shard,
            || V4::connect(v311::options("ret-b", addr)),
            V4::disconnect,
        )
        .await;
        let mut live = V4::connect(v311::options("ret-live", addr)).await;
        live.subscribe_ok("r/gone", 1).await;
        a.publish_retained("r/a", 1, b"a1").await;
        b.publish_retained("r/b/c", 1, b"b1").await;
        b.publish_retained("r/a", 1, b"a2").await;
        a.publish_retained("r/gone", 1, b"x").await;
        b.publish_retained("r/gone", 1, b"").await;
        // An established subscription gets both as live messages, the empty one too.
        assert_eq!(live.next_publish().await, got("r/gone", 1, "x"));
        assert_eq!(live.next_publish().await, got("r/gone", 1, ""));

        let mut want = BTreeMap::from([
            ("r/a".to_string(), "a2".to_string()),
            ("r/b/c".to_string(), "b1".to_string()),
        ]);
        for shard in 0..2 {
            let id = format!("ret-sub-{shard}");
            let (mut sub, _) = connect_where(
                &broker,
                |s| s == shard,
                || V4::connect(v311::options(&id, addr)),
                V4::disconnect,
            )
            .await;
            sub.subscribe_ok("r/#", 1).await;
            let mut got = BTreeMap::new();
            for _ in 0..2 {
                let m = sub.next_publish().await;
                assert!(m.retain, "sent for a new subscription: RETAIN set ({m:?})");
                got.insert(m.topic.clone(), m.text());
            }
            sub.no_publish().await;
            assert_eq!(got, want, "subscriber on shard {shard}");

            sub.subscribe_ok("r/+/c", 1).await;
            let m = sub.next_publish().await;
            assert_eq!(
                (m.topic.as_str(), m.text().as_str(), m.retain),
                ("r/b/c", "b1", true)
            );

            // A live message on an established subscription: RETAIN 0.
            b.publish_retained("r/a", 1, format!("live{shard}").as_bytes())
                .await;
            let m = sub.next_publish().await;
            assert_eq!((m.text(), m.retain), (format!("live{shard}"), false));
            want.insert("r/a".into(), format!("live{shard}"));
            sub.disconnect().await;
        }
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
            connect_anywhere(&broker, || V4::connect(v311::options("ov-sub", addr))).await;
        sub.subscribe_ok("ov/+", 0).await;
        sub.subscribe_ok("ov/#", 2).await;
        sub.subscribe_ok("ov/x", 1).await;
        let (mut publisher, _) = connect_where(
            &broker,
            |s| s != shard,
            || V4::connect(v311::options("ov-pub", addr)),
            V4::disconnect,
        )
        .await;
        publisher.publish("ov/x", 2, b"two").await;
        let m = sub.next_publish().await;
        assert_eq!((m.text().as_str(), m.qos), ("two", 2));
        publisher.publish("ov/x", 1, b"one").await;
        let m = sub.next_publish().await;
        assert_eq!((m.text().as_str(), m.qos), ("one", 1));
        sub.no_publish().await;
    });
}

/// A zero-length client id is accepted with Clean Session on (the broker assigns one,
/// MQTT-3.1.3-6) and refused with return code 0x02 with Clean Session off (MQTT-3.1.3-8).
#[test]
fn zero_length_client_id_needs_a_clean_session() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let (mut ok, ack) = raw_v311(addr, "", true, 60);
    assert_eq!(ack.body, [0, 0]);
    ok.send(&PINGREQ);
    assert_eq!(
        ok.read_packet(),
        RawPacket {
            first: 0xD0,
            body: vec![]
        }
    );
    // Two anonymous clients are two sessions: neither takes the other over.
    let (mut other, ack) = raw_v311(addr, "", true, 60);
    assert_eq!(ack.body, [0, 0]);
    other.send(&PINGREQ);
    assert_eq!(other.read_packet().first, 0xD0);
    ok.send(&PINGREQ);
    assert_eq!(ok.read_packet().first, 0xD0);

    let (mut refused, ack) = raw_v311(addr, "", false, 60);
    assert_eq!(ack.body, [0, 2], "identifier rejected");
    assert_eq!(refused.packets_until_closed(), []);
}

/// `$SYS/broker/...` topics are published at `--sys-interval`, reach `$SYS/#`, and are
/// matched by no filter starting with a wildcard (MQTT-4.7.2-1).
#[test]
fn sys_topics_are_published_periodically_and_not_matched_by_wildcards() {
    let broker = Broker::start(&["--shards", "2", "--sys-interval", "1"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut all = V4::connect(v311::options("sys-all", addr)).await;
        all.subscribe_ok("#", 0).await;
        all.subscribe_ok("+/broker/uptime", 0).await;
        let mut sys = V4::connect(v311::options("sys-sys", addr)).await;
        sys.subscribe_ok("$SYS/broker/#", 0).await;
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
        all.publish("not/sys", 0, b"x").await;
        let m = all.next_publish().await;
        assert_eq!(m.topic, "not/sys", "`#` sees ordinary topics only");
        all.no_publish().await;
    });
}

/// A subscription the ACL file refuses gets the failure return code 0x80
/// (MQTT-3.9.3-1); the others in the same SUBSCRIBE are granted. (The conformance suites'
/// refusal case: `test/nosubscribe` denied, everything else allowed.)
#[test]
fn denied_subscription_gets_return_code_0x80() {
    let dir = TempDir::new("deny-acl");
    let acl = dir.file("acl", "topic readwrite #\ntopic deny test/nosubscribe\n");
    let broker = Broker::start(&["--shards", "2", "--acl-file", acl.to_str().unwrap()]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut c = V4::connect(v311::options("deny", addr)).await;
        assert_eq!(c.subscribe("test/nosubscribe", 2).await, 0x80);
        assert_eq!(c.subscribe("test/#", 1).await, 1);
    });
    // Both in one SUBSCRIBE: one code each.
    let (mut s, _) = raw_v311(addr, "deny-raw", true, 60);
    let mut body = vec![0, 9];
    mqtt_str(b"test/nosubscribe", &mut body);
    body.push(1);
    mqtt_str(b"test/ok", &mut body);
    body.push(2);
    s.send(&packet(0x82, &body));
    assert_eq!(
        s.read_packet(),
        RawPacket {
            first: 0x90,
            body: vec![0, 9, 0x80, 2]
        }
    );
}

/// A broker started without `--deny-subscribe` refuses no subscription, not even the
/// filter conformance suites use to test refusals.
#[test]
fn by_default_no_subscription_is_refused() {
    let broker = Broker::start(&["--shards", "2"]);
    let rt = runtime();
    rt.block_on(async {
        let mut c = V4::connect(v311::options("no-deny", broker.mqtt_addr())).await;
        c.subscribe_ok("test/nosubscribe", 2).await;
        c.subscribe_ok("#", 1).await;
    });
}
