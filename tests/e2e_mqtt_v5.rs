//! MQTT 5.0 conformance, end to end: session and message expiry, topic aliases both
//! ways, Receive Maximum both ways, Maximum Packet Size, subscription options and
//! identifiers, shared subscriptions, will delay, properties passed through, server
//! keep alive, assigned client ids, and the reason codes and strings of negative
//! answers. (Server DISCONNECTs are checked where their causes are: takeover in
//! `e2e_sessions`, keep alive in `e2e_timeouts`, protocol errors in `e2e_bad_input`.)
//! Two shards; clients on different ones where it matters. Clients are rumqttc 5 and,
//! where exact bytes matter, raw packets written by hand.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::v5::{
    Filter, LastWill, LastWillProperties, PublishProperties, QoS, RetainForwardRule, persistent,
};
use support::*;

/// A publisher placed on another shard than `shard`.
async fn publisher_off(broker: &Broker, shard: usize, id: &str) -> V5 {
    let addr = broker.mqtt_addr();
    connect_where(
        broker,
        |s| s != shard,
        || V5::connect(v5::options(id, addr)),
        V5::disconnect,
    )
    .await
    .0
}

/// Session Expiry Interval (MQTT 5 §3.1.2.11.2): the session outlives its connection by
/// that many seconds, then ends (MQTT-3.1.2-23); 0 (the default) ends it with the
/// connection.
#[test]
fn session_expiry_interval_keeps_the_session_that_long_and_no_longer() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let (mut sub, shard) =
            connect_anywhere(&broker, || V5::connect(persistent("se", addr, 2))).await;
        assert!(!sub.connack.session_present);
        sub.subscribe_ok("se/t", 1).await;
        sub.disconnect().await;
        let mut publisher = publisher_off(&broker, shard, "se-pub").await;
        publisher.publish("se/t", 1, b"kept").await;

        let mut sub = V5::connect(persistent("se", addr, 2)).await;
        assert!(sub.connack.session_present, "back within the interval");
        assert_eq!(sub.next_publish().await.text(), "kept");
        sub.disconnect().await;

        tokio::time::sleep(Duration::from_secs(4)).await;
        publisher.publish("se/t", 1, b"late").await;
        let mut sub = V5::connect(persistent("se", addr, 2)).await;
        assert!(!sub.connack.session_present, "the session expired");
        sub.no_publish().await;
        sub.disconnect().await;

        // No Session Expiry Interval: the session ends with the connection.
        let mut o = v5::options("se0", addr);
        o.set_clean_start(false);
        let mut c = V5::connect(o.clone()).await;
        c.subscribe_ok("se/t", 1).await;
        c.disconnect().await;
        let c = V5::connect(o).await;
        assert!(!c.connack.session_present);
    });
}

/// Message Expiry Interval (MQTT 5 §3.3.2.3.3): a message that expired while it waited
/// is not delivered, from an offline queue or the retained store (MQTT-3.3.2-5), and
/// what is delivered carries the time it has left (MQTT-3.3.2-6).
#[test]
fn expired_messages_are_not_delivered_and_the_rest_carry_their_remaining_time() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let (mut sub, shard) =
            connect_anywhere(&broker, || V5::connect(persistent("me", addr, 300))).await;
        sub.subscribe_ok("me/q", 1).await;
        let mut publisher = publisher_off(&broker, shard, "me-pub").await;
        let expiring = |secs| PublishProperties {
            message_expiry_interval: Some(secs),
            ..Default::default()
        };
        publisher
            .publish_with("me/q", 1, b"online", expiring(60))
            .await;
        let m = sub.next_publish().await;
        let left = m.props().message_expiry_interval;
        assert!(matches!(left, Some(1..=60)), "{left:?}");
        sub.disconnect().await;

        publisher
            .publish_with("me/q", 1, b"short", expiring(1))
            .await;
        publisher
            .publish_with("me/q", 1, b"long", expiring(100))
            .await;
        publisher
            .publish_retained_with("me/r", 1, b"short retained", expiring(1))
            .await;
        tokio::time::sleep(Duration::from_millis(2500)).await;

        let mut sub = V5::connect(persistent("me", addr, 300)).await;
        let m = sub.next_publish().await;
        assert_eq!(m.text(), "long");
        // At least 2.5 s of the 100 have passed.
        let left = m.props().message_expiry_interval;
        assert!(matches!(left, Some(1..=98)), "{left:?}");
        sub.subscribe_ok("me/r", 1).await;
        sub.no_publish().await;
    });
}

/// Topic aliases from the client (MQTT 5 §3.3.2.3.4): a PUBLISH with a topic and an
/// alias sets it, one with the alias and an empty topic uses it; an alias above the
/// broker's Topic Alias Maximum, or one never set, ends the connection with 0x94 /
/// 0x82 (MQTT-3.3.2-9, MQTT-3.3.4-?).
#[test]
fn client_topic_aliases_are_resolved_and_bad_ones_refused() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let (mut sub, shard) = rt.block_on(connect_anywhere(&broker, || {
        V5::connect(v5::options("cta-sub", addr))
    }));
    rt.block_on(sub.subscribe_ok("cta/#", 0));

    let (mut p, connack, _) = raw_where(
        &broker,
        |s| s != shard,
        &connect(5, "cta-pub", true, 60, None, &[]),
    );
    let (_, props) = connack.reason_and_props();
    let max = prop_num(&props, TOPIC_ALIAS_MAXIMUM).expect("Topic Alias Maximum in CONNACK");
    assert!(max >= 3, "{max}");
    let mut alias3 = Vec::new();
    prop_u16(TOPIC_ALIAS, 3, &mut alias3);
    p.send(&publish(5, "cta/x", 0, false, false, 0, &alias3, b"set"));
    p.send(&publish(5, "", 0, false, false, 0, &alias3, b"used"));
    rt.block_on(async {
        for want in ["set", "used"] {
            let m = sub.next_publish().await;
            assert_eq!((m.topic.as_str(), m.text().as_str()), ("cta/x", want));
        }
    });

    let mut too_big = Vec::new();
    prop_u16(TOPIC_ALIAS, max as u16 + 1, &mut too_big);
    p.send(&publish(5, "cta/y", 0, false, false, 0, &too_big, b"no"));
    let end = p.packets_until_closed();
    assert_eq!(end.len(), 1, "{end:02x?}");
    assert_eq!((end[0].kind(), end[0].reason_and_props().0), (14, 0x94));

    let (mut p, _) = raw_v5(addr, "cta-pub2", true, &[]);
    let mut unknown = Vec::new();
    prop_u16(TOPIC_ALIAS, 2, &mut unknown);
    p.send(&publish(5, "", 0, false, false, 0, &unknown, b"no"));
    let end = p.packets_until_closed();
    assert_eq!((end[0].kind(), end[0].reason_and_props().0), (14, 0x82));
    rt.block_on(sub.no_publish());
}

/// Topic aliases to the client, within the Topic Alias Maximum it gave in CONNECT
/// (MQTT-3.3.2-8): the first PUBLISH of a topic carries the topic and a new alias, the
/// next ones the alias and an empty topic; topics past the maximum go by name; a client
/// that gave no maximum gets no alias.
#[test]
fn server_topic_aliases_stay_within_the_clients_maximum() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let mut max2 = Vec::new();
    prop_u16(TOPIC_ALIAS_MAXIMUM, 2, &mut max2);
    let (mut s, _, shard) = raw_where(&broker, |_| true, &connect(5, "sta", true, 60, None, &max2));
    s.send(&subscribe(5, 1, "sta/#", 0, &[]));
    assert_eq!(s.read_packet().kind(), 9);
    let (mut plain, _) = raw_v5(addr, "sta-plain", true, &[]);
    plain.send(&subscribe(5, 1, "sta/#", 0, &[]));
    assert_eq!(plain.read_packet().kind(), 9);

    let mut publisher = rt.block_on(publisher_off(&broker, shard, "sta-pub"));
    let topics = ["sta/1", "sta/1", "sta/2", "sta/3", "sta/1", "sta/3"];
    rt.block_on(async {
        for t in topics {
            publisher.publish(t, 1, t.as_bytes()).await;
        }
    });
    let want: [(&str, Option<u64>); 6] = [
        ("sta/1", Some(1)),
        ("", Some(1)),
        ("sta/2", Some(2)),
        ("sta/3", None),
        ("", Some(1)),
        ("sta/3", None),
    ];
    for (i, (topic, alias)) in want.into_iter().enumerate() {
        let m = s.read_packet();
        let (props, payload) = m.publish_parts(5);
        assert_eq!(payload, topics[i].as_bytes());
        assert_eq!(
            (m.topic().as_str(), prop_num(&props, TOPIC_ALIAS)),
            (topic, alias),
            "#{i}"
        );
        let m = plain.read_packet();
        let (props, _) = m.publish_parts(5);
        assert_eq!(
            (m.topic().as_str(), prop_num(&props, TOPIC_ALIAS)),
            (topics[i], None)
        );
    }
}

/// Receive Maximum both ways (MQTT 5 §4.9): the broker sends a client no more
/// unacknowledged QoS 1/2 messages than its Receive Maximum (MQTT-3.3.4-9), the rest
/// following as acknowledgements come; and it tells clients its own (CONNACK), ending
/// with 0x93 a connection that exceeds it (MQTT-3.3.4-8).
#[test]
fn receive_maximum_is_kept_both_ways() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let mut rm2 = Vec::new();
    prop_u16(RECEIVE_MAXIMUM, 2, &mut rm2);
    let (mut s, _, shard) = raw_where(&broker, |_| true, &connect(5, "rm", true, 60, None, &rm2));
    s.send(&subscribe(5, 1, "rm/t", 1, &[]));
    assert_eq!(s.read_packet().kind(), 9);
    let mut publisher = rt.block_on(publisher_off(&broker, shard, "rm-pub"));
    rt.block_on(async {
        for i in 0..5 {
            publisher.publish("rm/t", 1, &[b'0' + i]).await;
        }
    });
    let first = s.read_packet();
    let second = s.read_packet();
    assert_eq!(
        (first.publish_parts(5).1, second.publish_parts(5).1),
        (b"0".to_vec(), b"1".to_vec())
    );
    s.expect_still_open(QUIET);
    s.send(&ack(PUBACK, first.pkid()));
    let third = s.read_packet();
    assert_eq!(third.publish_parts(5).1, b"2");
    s.expect_still_open(QUIET);
    s.send(&ack(PUBACK, second.pkid()));
    s.send(&ack(PUBACK, third.pkid()));
    assert_eq!(s.read_packet().publish_parts(5).1, b"3");
    assert_eq!(s.read_packet().publish_parts(5).1, b"4");

    // The broker's own Receive Maximum (default 64, --max-inflight).
    let (mut c, connack) = raw_v5(addr, "rm-sender", true, &[]);
    let max = prop_num(&connack.reason_and_props().1, RECEIVE_MAXIMUM).expect("Receive Maximum");
    assert_eq!(max, 64);
    for id in 1..=max as u16 {
        c.send(&publish(5, "rm/in", 2, false, false, id, &[], b"x"));
        assert_eq!(c.read_packet().kind(), 5, "PUBREC {id}");
    }
    c.send(&publish(
        5,
        "rm/in",
        2,
        false,
        false,
        1000,
        &[],
        b"one too many",
    ));
    let end = c.packets_until_closed();
    assert_eq!(end.len(), 1, "{end:02x?}");
    assert_eq!((end[0].kind(), end[0].reason_and_props().0), (14, 0x93));
}

/// Maximum Packet Size of the client (MQTT 5 §3.1.2.11.4): a message that would make a
/// larger PUBLISH is not sent to it (MQTT-3.1.2-25), and is counted; smaller ones are.
/// The broker tells its own limit in CONNACK.
#[test]
fn messages_larger_than_the_clients_maximum_packet_size_are_not_sent_to_it() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let (mut sub, shard) = connect_anywhere(&broker, || {
            let mut o = v5::options("mps", addr);
            o.set_max_packet_size(Some(100));
            V5::connect(o)
        })
        .await;
        let broker_max = sub
            .connack
            .properties
            .as_ref()
            .and_then(|p| p.max_packet_size);
        assert_eq!(broker_max, Some(1024 * 1024));
        sub.subscribe_ok("mps/t", 1).await;
        let mut other = V5::connect(v5::options("mps-other", addr)).await;
        other.subscribe_ok("mps/t", 1).await;
        let mut publisher = publisher_off(&broker, shard, "mps-pub").await;
        publisher.publish("mps/t", 1, &[b'x'; 200]).await;
        publisher.publish("mps/t", 1, b"small").await;
        assert_eq!(sub.next_publish().await.text(), "small");
        assert_eq!(other.next_publish().await.payload.len(), 200);
        assert_eq!(other.next_publish().await.text(), "small");
        sub.no_publish().await;
        assert_eq!(broker.metric("ringmq_dropped_too_large_for_client"), 1);
    });
}

/// Subscription options (MQTT 5 §3.8.3.1): No Local keeps a client's own messages from
/// it (MQTT-3.8.3-3); Retain As Published keeps the RETAIN flag (MQTT-3.3.1-12, -13);
/// Retain Handling 0 sends retained messages on every SUBSCRIBE, 1 only for a new
/// subscription, 2 never (MQTT-3.3.1-9, -10, -11).
#[test]
fn subscription_options_no_local_retain_as_published_and_retain_handling() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let (mut a, shard) =
            connect_anywhere(&broker, || V5::connect(v5::options("so-a", addr))).await;
        let mut b = publisher_off(&broker, shard, "so-b").await;

        let mut no_local = Filter::new("so/nl", QoS::AtLeastOnce);
        no_local.nolocal = true;
        a.subscribe_with(no_local, None).await;
        a.publish("so/nl", 1, b"own").await;
        b.publish("so/nl", 1, b"theirs").await;
        assert_eq!(a.next_publish().await.text(), "theirs");
        a.no_publish().await;

        let mut keep = Filter::new("so/rap", QoS::AtLeastOnce);
        keep.preserve_retain = true;
        a.subscribe_with(keep, None).await;
        b.subscribe_ok("so/rap", 1).await;
        a.publish_retained("so/rap", 1, b"r").await;
        assert!(a.next_publish().await.retain, "retain as published");
        assert!(!b.next_publish().await.retain, "RETAIN cleared by default");

        b.publish_retained("so/rh", 1, b"stored").await;
        let handling = |rule| {
            let mut f = Filter::new("so/rh", QoS::AtLeastOnce);
            f.retain_forward_rule = rule;
            f
        };
        for (rule, first, again) in [
            (RetainForwardRule::OnEverySubscribe, true, true),
            (RetainForwardRule::OnNewSubscribe, true, false),
            (RetainForwardRule::Never, false, false),
        ] {
            let mut c = V5::connect(v5::options("so-rh", addr)).await;
            for (time, want) in [("first", first), ("again", again)] {
                c.subscribe_with(handling(rule.clone()), None).await;
                if want {
                    let m = c.next_publish().await;
                    assert_eq!((m.text().as_str(), m.retain), ("stored", true));
                } else {
                    c.no_publish().await;
                }
                let _ = time;
            }
            c.disconnect().await;
        }
    });
}

/// Subscription Identifiers (MQTT 5 §3.8.2.1.2): a message carries the identifier of
/// every subscription of the client it matched, in one PUBLISH (MQTT-3.3.4-3, -4); a
/// subscription replaced without one carries none.
#[test]
fn subscription_identifiers_come_with_the_messages_they_matched() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let (mut sub, shard) =
            connect_anywhere(&broker, || V5::connect(v5::options("sid", addr))).await;
        sub.subscribe_with(Filter::new("sid/+", QoS::AtLeastOnce), Some(7))
            .await;
        sub.subscribe_with(Filter::new("sid/#", QoS::AtLeastOnce), Some(9))
            .await;
        sub.subscribe_with(Filter::new("other", QoS::AtLeastOnce), Some(11))
            .await;
        let mut publisher = publisher_off(&broker, shard, "sid-pub").await;
        publisher.publish("sid/x", 1, b"both").await;
        let m = sub.next_publish().await;
        let mut ids = m.props().subscription_identifiers;
        ids.sort();
        assert_eq!(ids, [7, 9]);
        sub.no_publish().await;

        sub.subscribe_ok("sid/+", 1).await;
        sub.unsubscribe("sid/#").await;
        publisher.publish("sid/x", 1, b"none").await;
        let m = sub.next_publish().await;
        assert_eq!(m.props().subscription_identifiers, Vec::<usize>::new());
    });
}

/// Shared subscriptions (MQTT 5 §4.8.2): a message matching `$share/{group}/{filter}`
/// goes to one member of the group, members on every shard taking turns, whichever
/// shard published it; ordinary subscribers still get every message, and a shared
/// subscription is not sent retained messages.
#[test]
fn shared_subscription_messages_go_to_one_member_across_shards() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut first = V5::connect(v5::options("sh-pub0", addr)).await;
        first.publish_retained("sh/t", 1, b"retained").await;
        let mut members = Vec::new();
        for shard in 0..2 {
            let id = format!("sh-m{shard}");
            let (mut m, _) = connect_where(
                &broker,
                |s| s == shard,
                || V5::connect(v5::options(&id, addr)),
                V5::disconnect,
            )
            .await;
            m.subscribe_ok("$share/g/sh/t", 1).await;
            members.push(m);
        }
        let mut plain = V5::connect(v5::options("sh-plain", addr)).await;
        plain.subscribe_ok("sh/#", 1).await;
        assert_eq!(plain.next_publish().await.text(), "retained");
        let mut publishers = Vec::new();
        for shard in 0..2 {
            let id = format!("sh-pub-{shard}");
            let (p, _) = connect_where(
                &broker,
                |s| s == shard,
                || V5::connect(v5::options(&id, addr)),
                V5::disconnect,
            )
            .await;
            publishers.push(p);
        }
        let mut sent = BTreeSet::new();
        for i in 0..20 {
            let text = format!("m{i}");
            publishers[i % 2].publish("sh/t", 1, text.as_bytes()).await;
            sent.insert(text);
        }
        let mut got = BTreeSet::new();
        let mut per_member = [0; 2];
        for (k, m) in members.iter_mut().enumerate() {
            // Until a member has been silent for a while: the messages are all
            // acknowledged to their publishers, so on their way.
            loop {
                let more = m.publishes_within(Duration::from_secs(2)).await;
                if more.is_empty() {
                    break;
                }
                for p in more {
                    assert!(got.insert(p.text()), "delivered twice: {p:?}");
                    per_member[k] += 1;
                }
            }
        }
        assert_eq!(got, sent);
        assert!(
            per_member.iter().all(|&n| n > 0),
            "both members served: {per_member:?}"
        );
        for _ in 0..20 {
            plain.next_publish().await;
        }
    });
}

/// Will Delay Interval (MQTT 5 §3.1.3.2.2): the will waits that long and is not
/// published if the client returns to the session meanwhile (MQTT-3.1.3-9); it is
/// published when the session ends first; DISCONNECT with reason 0x04 publishes it.
#[test]
fn will_delay_interval_and_disconnect_with_will() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let (mut watch, shard) =
            connect_anywhere(&broker, || V5::connect(v5::options("wd-watch", addr))).await;
        watch.subscribe_ok("wd/#", 1).await;
        let with_will = |id: &str, expiry: u32, delay: u32, topic: &str| {
            let mut o = persistent(id, addr, expiry);
            let props = LastWillProperties {
                delay_interval: Some(delay),
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            };
            o.set_last_will(LastWill::new(
                topic,
                "gone",
                QoS::AtLeastOnce,
                false,
                Some(props),
            ));
            o
        };
        let elsewhere = |s: usize| s != shard;

        // Back within the delay: no will.
        let (c, _) = connect_where(
            &broker,
            elsewhere,
            || V5::connect(with_will("wd-back", 60, 2, "wd/back")),
            V5::disconnect,
        )
        .await;
        c.kill();
        let back = V5::connect(persistent("wd-back", addr, 60)).await;
        assert!(back.connack.session_present);
        // Not published once the delay has long passed.
        tokio::time::sleep(Duration::from_secs(4)).await;
        watch.no_publish().await;

        // Gone for good: published after the delay.
        let (c, _) = connect_where(
            &broker,
            elsewhere,
            || V5::connect(with_will("wd-gone", 60, 1, "wd/gone")),
            V5::disconnect,
        )
        .await;
        c.kill();
        assert_eq!(watch.next_publish().await.topic, "wd/gone");

        // The session ends (1 s) long before the delay (1 hour): published then.
        let (c, _) = connect_where(
            &broker,
            elsewhere,
            || V5::connect(with_will("wd-ends", 1, 3600, "wd/ends")),
            V5::disconnect,
        )
        .await;
        c.kill();
        assert_eq!(watch.next_publish().await.topic, "wd/ends");

        // DISCONNECT with reason 0x04 publishes the will (MQTT 5 §3.14.2.1); a normal
        // DISCONNECT (0x00) discards it (MQTT-3.14.4-3). (Blocking reads are fine here:
        // the rumqttc event loops run on the runtime's worker threads.)
        for (code, published) in [(0x04u8, true), (0x00, false)] {
            let will = RawWill {
                topic: "wd/asked",
                payload: b"bye",
                qos: 1,
                retain: false,
            };
            let mut c = tcp(addr);
            c.send(&connect(5, "wd-asked", true, 60, Some(will), &[]));
            assert_eq!(c.read_packet().kind(), 2);
            c.send(&packet(0xE0, &[code]));
            c.packets_until_closed();
            if published {
                assert_eq!(watch.next_publish().await.topic, "wd/asked");
            } else {
                watch.no_publish().await;
            }
        }
    });
}

/// Properties a subscriber needs for request/response and application metadata pass
/// through unchanged (MQTT-3.3.2-15 to -20): Response Topic, Correlation Data, User
/// Properties in their order, Content Type, Payload Format Indicator.
#[test]
fn request_response_and_user_properties_pass_through() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let (mut responder, shard) =
            connect_anywhere(&broker, || V5::connect(v5::options("rr-responder", addr))).await;
        responder.subscribe_ok("rr/request", 1).await;
        let mut requester = publisher_off(&broker, shard, "rr-requester").await;
        requester.subscribe_ok("rr/reply/1", 1).await;
        let user = vec![
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "3".to_string()),
        ];
        let props = PublishProperties {
            payload_format_indicator: Some(1),
            response_topic: Some("rr/reply/1".into()),
            correlation_data: Some(vec![1, 2, 3].into()),
            user_properties: user.clone(),
            content_type: Some("text/plain".into()),
            ..Default::default()
        };
        requester
            .publish_with("rr/request", 1, b"ping", props)
            .await;
        let req = responder.next_publish().await;
        let p = req.props();
        assert_eq!(p.payload_format_indicator, Some(1));
        assert_eq!(p.response_topic.as_deref(), Some("rr/reply/1"));
        assert_eq!(p.correlation_data.as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(p.user_properties, user);
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));

        let reply = PublishProperties {
            correlation_data: p.correlation_data.clone(),
            ..Default::default()
        };
        responder
            .publish_with("rr/reply/1", 1, b"pong", reply)
            .await;
        let r = requester.next_publish().await;
        assert_eq!(r.text(), "pong");
        assert_eq!(
            r.props().correlation_data.as_deref(),
            Some(&[1u8, 2, 3][..])
        );
    });
}

/// Server Keep Alive (MQTT 5 §3.2.2.3.14): a client asking for more than the broker's
/// maximum (60 s by default), or for none, is told the maximum; one within it is not
/// told anything.
#[test]
fn server_keep_alive_caps_the_clients_keep_alive() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    for (asked, told) in [(120u16, Some(60u64)), (0, Some(60)), (30, None), (60, None)] {
        let mut c = tcp(addr);
        c.send(&connect(5, "ska", true, asked, None, &[]));
        let (code, props) = c.read_packet().reason_and_props();
        assert_eq!(
            (code, prop_num(&props, SERVER_KEEP_ALIVE)),
            (0, told),
            "asked {asked}"
        );
    }
}

/// A zero-length client id gets an Assigned Client Identifier in CONNACK
/// (MQTT-3.2.2-16), unique, and usable to return to a persistent session.
#[test]
fn assigned_client_identifier_names_a_real_session() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let mut expiry = Vec::new();
    prop_u32(SESSION_EXPIRY, 60, &mut expiry);
    let assigned = |ack: &RawPacket| -> String {
        let props = ack.reason_and_props().1;
        let v = &props
            .iter()
            .find(|p| p.0 == ASSIGNED_ID)
            .expect("Assigned Client Identifier")
            .1;
        String::from_utf8(v[2..].to_vec()).unwrap()
    };
    let (mut a, ack_a) = raw_v5(addr, "", false, &expiry);
    let (_b, ack_b) = raw_v5(addr, "", true, &[]);
    let (id_a, id_b) = (assigned(&ack_a), assigned(&ack_b));
    assert!(!id_a.is_empty() && id_a != id_b, "{id_a:?} {id_b:?}");
    a.send(&subscribe(5, 1, "aci/t", 1, &[]));
    assert_eq!(a.read_packet().kind(), 9);
    a.send(&DISCONNECT);
    a.packets_until_closed();
    let (mut again, ack) = raw_v5(addr, &id_a, false, &expiry);
    assert_eq!(ack.body[0], 1, "session present under the assigned id");
    assert!(ack.reason_and_props().1.iter().all(|p| p.0 != ASSIGNED_ID));
    let (mut p, _) = raw_v5(addr, "aci-pub", true, &[]);
    p.send(&publish(
        5,
        "aci/t",
        1,
        false,
        false,
        1,
        &[],
        b"to the assigned id",
    ));
    assert_eq!(p.read_packet().kind(), 4);
    assert_eq!(
        again.read_packet().publish_parts(5).1,
        b"to the assigned id"
    );
}

/// Negative answers carry a reason code and, unless the client asked for no problem
/// information, a Reason String (MQTT 5 §3.x.2.2): SUBACK refusal (here of a filter the
/// broker is told to refuse), PUBCOMP/PUBREL for an unknown packet id (0x92). (A
/// CONNACK refusal's are checked in `e2e_bad_input`.)
#[test]
fn negative_answers_carry_reason_codes_and_strings() {
    let broker = Broker::start(&["--shards", "2", "--deny-subscribe", "test/nosubscribe"]);
    let addr = broker.mqtt_addr();

    let (mut c, _) = raw_v5(addr, "neg", true, &[]);
    c.send(&subscribe(5, 1, "test/nosubscribe", 1, &[]));
    let (props, codes) = c.read_packet().suback(5);
    assert_eq!(codes, [0x80]);
    assert!(has_reason_string(&props), "{props:?}");

    c.send(&ack(PUBREL, 77));
    let comp = c.read_packet();
    assert_eq!(comp.kind(), 7);
    let (code, props) = comp.reason_and_props();
    assert_eq!(code, 0x92);
    assert!(has_reason_string(&props));
    c.send(&ack(PUBREC, 78));
    let rel = c.read_packet();
    assert_eq!(rel.first, 0x62);
    assert_eq!(rel.reason_and_props().0, 0x92);

    // Request Problem Information 0: the code, no string (MQTT-3.1.2-29).
    let mut quiet = Vec::new();
    prop_u8(REQUEST_PROBLEM_INFO, 0, &mut quiet);
    let (mut q, _) = raw_v5(addr, "neg-quiet", true, &quiet);
    q.send(&subscribe(5, 1, "test/nosubscribe", 1, &[]));
    let (props, codes) = q.read_packet().suback(5);
    assert_eq!((props, codes), (vec![], vec![0x80]));
}
