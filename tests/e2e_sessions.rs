//! Sessions across connections and shards. A second connection with a session's client
//! id takes it over, on the same shard or another: the old connection is closed (an
//! MQTT 5 one hears why), its will is published, and the session goes on with nothing
//! lost (QoS 1) and nothing delivered twice that its QoS forbids (QoS 0, QoS 2). A
//! persistent session keeps its subscriptions and a bounded queue while its client is
//! away, and resumes on another shard with what was queued there and what was in
//! flight (sent again with DUP). A will is published whenever a connection ends
//! without DISCONNECT. Publishers keep publishing while sessions move, so the hand-over
//! between shards is exercised under load.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::v311::LastWill;
use support::*;

/// Payloads `0..n`, published with QoS `qos` to each topic by one client per shard
/// taking turns, as fast as the clients go (QoS 1 acknowledgements are not waited for
/// one by one, so the stream keeps flowing while the test moves sessions around);
/// `sent` counts what was handed to the clients. The task ends once every QoS 1
/// message is acknowledged.
fn publish_in_background(
    rt: &tokio::runtime::Runtime,
    broker: &Broker,
    name: &str,
    streams: Vec<(&'static str, u8)>,
    n: usize,
    sent: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    let addr = broker.mqtt_addr();
    let mut publishers = Vec::new();
    for shard in 0..2 {
        let id = format!("{name}-pub{shard}");
        let (p, _) = rt.block_on(connect_where(
            broker,
            |s| s == shard,
            || {
                let mut o = v311::options(&id, addr);
                o.set_inflight(50);
                V4::connect(o)
            },
            V4::disconnect,
        ));
        publishers.push(p);
    }
    rt.spawn(async move {
        let mut qos1 = [0usize; 2];
        for i in 0..n {
            let k = i % 2;
            for (topic, qos) in &streams {
                publishers[k]
                    .client
                    .publish(*topic, v311::qos(*qos), false, i.to_string().into_bytes())
                    .await
                    .unwrap();
                if *qos == 1 {
                    qos1[k] += 1;
                }
            }
            sent.store(i + 1, Ordering::Relaxed);
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for (k, p) in publishers.iter_mut().enumerate() {
            p.wait_pubacks(qos1[k]).await;
        }
    })
}

fn numbers(got: &[Got], topic: &str) -> Vec<usize> {
    got.iter()
        .filter(|p| p.topic == topic)
        .map(|p| p.text().parse().unwrap())
        .collect()
}

/// A second connection with a session's client id takes it over, on the same shard or
/// another (MQTT-3.1.4-2): the old connection is closed and its will published; the new
/// one continues the session, and every QoS 1 message published throughout reaches one
/// of them.
#[test]
fn takeover_on_the_same_or_another_shard_continues_the_session() {
    // The stream outruns the subscriber: a queue large enough that it is not
    // disconnected as a slow consumer.
    let broker = Broker::start(&["--shards", "2", "--max-queued-messages", "1000000"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    for same_shard in [true, false] {
        let name = if same_shard { "tk-same" } else { "tk-other" };
        let (data, will_topic) = (format!("{name}/data"), format!("{name}/will"));
        let mut watch = rt.block_on(V4::connect(v311::options(&format!("{name}-w"), addr)));
        rt.block_on(watch.subscribe_ok(&will_topic, 1));

        let session = |will: bool| {
            let mut o = v311::options(name, addr);
            o.set_clean_session(false);
            if will {
                o.set_last_will(LastWill::new(
                    &will_topic,
                    "old gone",
                    v311::QoS::AtLeastOnce,
                    false,
                ));
            }
            o
        };
        let (mut old, old_shard) =
            rt.block_on(connect_anywhere(&broker, || V4::connect(session(true))));
        rt.block_on(old.subscribe_ok(&data, 1));

        let sent = Arc::new(AtomicUsize::new(0));
        let topic: &'static str = Box::leak(data.clone().into_boxed_str());
        const N: usize = 5_000;
        let stream = publish_in_background(&rt, &broker, name, vec![(topic, 1)], N, sent.clone());
        while sent.load(Ordering::Relaxed) < N / 4 {
            std::thread::sleep(Duration::from_millis(1));
        }

        // Connections on the wrong shard are takeovers too; what they got counts.
        let got = Arc::new(Mutex::new(Vec::new()));
        let keep = got.clone();
        let (mut new, new_shard) = rt.block_on(connect_where(
            &broker,
            |s| (s == old_shard) == same_shard,
            || V4::connect(session(false)),
            move |c: V4| {
                let keep = keep.clone();
                async move {
                    let got = c.disconnect_collect().await;
                    keep.lock().unwrap().extend(got)
                }
            },
        ));
        assert_eq!((new_shard == old_shard), same_shard);
        assert!(new.connack.session_present);
        let from_old = rt.block_on(old.drain_until_closed());
        got.lock().unwrap().extend(from_old);
        rt.block_on(stream).unwrap();
        let mut got = got.lock().unwrap().clone();
        // The rest arrives on the new connection.
        let want: BTreeSet<usize> = (0..N).collect();
        rt.block_on(async {
            while numbers(&got, topic).into_iter().collect::<BTreeSet<_>>() != want {
                let more = new.publishes_within(Duration::from_secs(1)).await;
                if more.is_empty() {
                    let have: BTreeSet<usize> = numbers(&got, topic).into_iter().collect();
                    let missing: Vec<_> = want.difference(&have).collect();
                    panic!(
                        "{name}: {} missing, from {:?}; metrics:\n{}",
                        missing.len(),
                        &missing[..missing.len().min(20)],
                        broker.metrics()
                    );
                }
                got.extend(more);
            }
        });
        let will = rt.block_on(watch.next_publish());
        assert_eq!(will.text(), "old gone");
        rt.block_on(watch.no_publish());
        rt.block_on(new.disconnect());
    }
}

/// A new MQTT 5 connection with a session's client id, on the same shard or another,
/// takes the session over: the old connection hears DISCONNECT 0x8E (session taken
/// over) with a Reason String, then the close (MQTT 5 §3.14, MQTT-3.1.4-3); the new one
/// works, and it is the only connection left for that id.
#[test]
fn v5_takeover_on_the_same_or_another_shard_tells_the_old_connection_0x8e() {
    let broker = Broker::start(&["--shards", "2"]);
    let mut kept = Vec::new();
    for same_shard in [true, false] {
        let id = if same_shard {
            "taken-same"
        } else {
            "taken-other"
        };
        let (mut old, _, shard) = raw_where(&broker, |_| true, &connect_v5(id, 30));
        let (mut new, ack, _) =
            raw_where(&broker, |s| (s == shard) == same_shard, &connect_v5(id, 30));
        assert_eq!(ack.v5_connack().1, 0, "{id}: {ack:02x?}");
        let end = old.packets_until_closed();
        assert_eq!(end.len(), 1, "{id}: {end:02x?}");
        let (reason, props) = end[0].v5_disconnect();
        assert_eq!(reason, 0x8E, "{id}: session taken over");
        assert!(has_reason_string(&props), "{id}: {props:02x?}");
        new.send(&PINGREQ);
        assert_eq!(
            new.read_bytes(2),
            PINGRESP,
            "{id}: the new connection works"
        );
        kept.push(new);
    }
    broker.wait_for_metric("ringmq_connections_current", WAIT, |v| v == 2);
}

/// A session moves between the shards again and again while messages stream in from
/// both: every QoS 1 message reaches the client (at least once), and no QoS 0 message
/// arrives twice (the broker forwards what reached a session's old shard, and must not
/// deliver a message that came both ways twice).
#[test]
fn session_moving_between_shards_under_load_loses_and_duplicates_nothing() {
    let broker = Broker::start(&["--shards", "2", "--max-queued-messages", "1000000"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let session = || {
        let mut o = v311::options("mv", addr);
        o.set_clean_session(false);
        o
    };
    // A subscriber to the same topics on every shard: every shard routes the stream to
    // every other all along, so while the session moves a message can reach its new
    // shard directly and through the old one.
    let mut anchors = Vec::new();
    for shard in 0..2 {
        let id = format!("mv-anchor{shard}");
        let (mut a, _) = rt.block_on(connect_where(
            &broker,
            |s| s == shard,
            || V4::connect(v311::options(&id, addr)),
            V4::disconnect,
        ));
        rt.block_on(a.subscribe_ok("mv/#", 0));
        anchors.push(a);
    }
    let (mut conn, mut shard) = rt.block_on(connect_anywhere(&broker, || V4::connect(session())));
    rt.block_on(conn.subscribe_ok("mv/q0", 0));
    rt.block_on(conn.subscribe_ok("mv/q1", 1));
    const N: usize = 20_000;
    let sent = Arc::new(AtomicUsize::new(0));
    let stream = publish_in_background(
        &rt,
        &broker,
        "mv",
        vec![("mv/q0", 0), ("mv/q1", 1)],
        N,
        sent.clone(),
    );
    let got = Arc::new(Mutex::new(Vec::new()));
    for hop in 1..=16 {
        while sent.load(Ordering::Relaxed) < hop * N / 18 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let keep = got.clone();
        let (next, next_shard) = rt.block_on(connect_where(
            &broker,
            |s| s != shard,
            || V4::connect(session()),
            move |c: V4| {
                let keep = keep.clone();
                async move {
                    let got = c.disconnect_collect().await;
                    keep.lock().unwrap().extend(got)
                }
            },
        ));
        let from_old = rt.block_on(conn.drain_until_closed());
        got.lock().unwrap().extend(from_old);
        (conn, shard) = (next, next_shard);
    }
    rt.block_on(stream).unwrap();
    let mut got = got.lock().unwrap().clone();
    let want: BTreeSet<usize> = (0..N).collect();
    rt.block_on(async {
        while numbers(&got, "mv/q1").into_iter().collect::<BTreeSet<_>>() != want {
            let more = conn.publishes_within(Duration::from_secs(1)).await;
            assert!(!more.is_empty(), "QoS 1 messages lost");
            got.extend(more);
        }
        got.extend(conn.publishes_within(QUIET).await);
    });
    let mut seen = BTreeMap::new();
    for n in numbers(&got, "mv/q0") {
        *seen.entry(n).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        twice.is_empty(),
        "QoS 0 messages delivered twice: {twice:?}"
    );
    assert_eq!(broker.metric("ringmq_dedup_window_overflow"), 0);
}

/// Many connections with one client id at once, landing on both shards: whatever the
/// order their claims cross the shards in, in the end exactly one of them is connected
/// (MQTT-3.1.4-2: each new one takes the session over from the one before), and it
/// holds the session.
#[test]
fn simultaneous_connects_with_one_client_id_leave_one_connection() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    for round in 0..10 {
        let id = format!("race-{round}");
        let mut conns: Vec<TcpStream> = (0..12).map(|_| tcp(addr)).collect();
        for c in &mut conns {
            c.send(&connect(4, &id, false, 60, None, &[]));
        }
        for c in &mut conns {
            // Each is answered (CONNACK), then either stays or is closed by a later one.
            let ack = c.read_packet();
            assert_eq!(ack.first, 0x20, "{ack:02x?}");
        }
        broker.wait_for_metric("ringmq_connections_current", WAIT, |n| n <= 1);
        let mut open = 0;
        for c in &mut conns {
            let _ = c.write_all(&PINGREQ);
            if let Some(p) = c.try_read_packet(QUIET) {
                assert_eq!(p.first, 0xD0, "{p:02x?}");
                open += 1;
            }
        }
        assert_eq!(
            open, 1,
            "round {round}: {open} connections kept the client id"
        );
    }
}

/// Clean Session off: subscriptions and the QoS 1 and 2 messages published while the
/// client is away are kept and delivered, in order, when it returns (MQTT-3.1.2-4,
/// MQTT-3.1.2-5), and CONNACK says whether a session is present (MQTT-3.2.2-2, -3);
/// Clean Session on discards it (MQTT-3.1.2-6). The publisher sits on the other shard.
#[test]
fn persistent_session_keeps_subscriptions_and_queues_messages_while_offline() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let persistent = || {
            let mut o = v311::options("ps", addr);
            o.set_clean_session(false);
            V4::connect(o)
        };
        let (mut sub, shard) = connect_anywhere(&broker, persistent).await;
        assert!(!sub.connack.session_present);
        sub.subscribe_ok("ps/#", 2).await;
        sub.disconnect().await;

        let (mut publisher, _) = connect_where(
            &broker,
            |s| s != shard,
            || V4::connect(v311::options("ps-pub", addr)),
            V4::disconnect,
        )
        .await;
        publisher.publish("ps/a", 1, b"1").await;
        publisher.publish("ps/b", 2, b"2").await;
        publisher.publish("ps/a", 1, b"3").await;

        let mut sub = persistent().await;
        assert!(sub.connack.session_present);
        let got: Vec<(String, u8)> = [
            sub.next_publish().await,
            sub.next_publish().await,
            sub.next_publish().await,
        ]
        .iter()
        .map(|m| (m.text(), m.qos))
        .collect();
        assert_eq!(
            got,
            [
                ("1".to_string(), 1),
                ("2".to_string(), 2),
                ("3".to_string(), 1)
            ]
        );
        sub.disconnect().await;

        // Clean Session on ends it; the next persistent connection starts afresh.
        let mut o = v311::options("ps", addr);
        o.set_clean_session(true);
        V4::connect(o).await.disconnect().await;
        let mut sub = persistent().await;
        assert!(!sub.connack.session_present);
        publisher.publish("ps/a", 1, b"4").await;
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
            let mut o = v311::options("oq", addr);
            o.set_clean_session(false);
            V4::connect(o)
        };
        let (mut sub, shard) = connect_anywhere(&broker, persistent).await;
        sub.subscribe_ok("oq", 1).await;
        sub.disconnect().await;
        let (mut publisher, _) = connect_where(
            &broker,
            |s| s != shard,
            || V4::connect(v311::options("oq-pub", addr)),
            V4::disconnect,
        )
        .await;
        for i in 0..1005 {
            publisher.publish("oq", 1, i.to_string().as_bytes()).await;
        }
        // The publisher's acknowledgements come before the session's shard has queued
        // the last ones: wait for the count, then check it stays.
        broker.wait_for_metric("ringmq_dropped_queue_full", WAIT, |n| n >= 5);
        let mut sub = persistent().await;
        for i in 5..1005 {
            assert_eq!(sub.next_publish().await.text(), i.to_string());
        }
        sub.no_publish().await;
        assert_eq!(broker.metric("ringmq_dropped_queue_full"), 5);
    });
}

/// A persistent session left on one shard resumes on the other with what was queued
/// meanwhile, published from both shards, in each publisher's order (MQTT-4.6.0-6 for
/// one publisher's messages on one topic). The client is raw, to answer QoS 2 by hand.
#[test]
fn session_resumes_on_another_shard_with_messages_queued_from_both() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let (mut c, _, shard) = raw_where(&broker, |_| true, &connect(4, "rs", false, 60, None, &[]));
    c.send(&subscribe(4, 1, "rs/+", 2, &[]));
    assert_eq!(c.read_packet().kind(), 9);
    c.send(&DISCONNECT);
    c.packets_until_closed();
    rt.block_on(async {
        let mut publishers = Vec::new();
        for s in 0..2 {
            let id = format!("rs-pub{s}");
            let (p, _) = connect_where(
                &broker,
                |x| x == s,
                || V4::connect(v311::options(&id, addr)),
                V4::disconnect,
            )
            .await;
            publishers.push(p);
        }
        for i in 0..10 {
            for (s, p) in publishers.iter_mut().enumerate() {
                let qos = if i % 2 == 0 { 1 } else { 2 };
                p.publish(&format!("rs/{s}"), qos, i.to_string().as_bytes())
                    .await;
            }
        }
    });
    let (mut c, connack, _) = raw_where(
        &broker,
        |s| s != shard,
        &connect(4, "rs", false, 60, None, &[]),
    );
    assert_eq!(connack.body, [1, 0], "session present");
    let mut got: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut received = 0;
    while received < 20 {
        let p = c.read_packet();
        match p.kind() {
            3 => {
                received += 1;
                let n = String::from_utf8(p.publish_parts(4).1)
                    .unwrap()
                    .parse()
                    .unwrap();
                got.entry(p.topic()).or_default().push(n);
                let answer = if p.qos() == 1 { PUBACK } else { PUBREC };
                c.send(&ack(answer, p.pkid()));
            }
            6 => c.send(&ack(PUBCOMP, p.pkid())),
            _ => panic!("unexpected {p:02x?}"),
        }
    }
    let order: Vec<usize> = (0..10).collect();
    assert_eq!(got["rs/0"], order);
    assert_eq!(got["rs/1"], order);
    // Only the last PUBRELs may follow.
    while let Some(p) = c.try_read_packet(QUIET) {
        assert_eq!(p.first, 0x62, "{p:02x?}");
        c.send(&ack(PUBCOMP, p.pkid()));
    }
}

/// Unacknowledged QoS 1 messages are sent again, with DUP and their packet ids, when
/// the session's client returns, here on the other shard (MQTT-4.4.0-1, MQTT-3.3.1-1);
/// new messages go with DUP 0.
#[test]
fn unacknowledged_messages_are_resent_with_dup_on_another_shard() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let mut publisher = rt.block_on(V4::connect(v311::options("dup-pub", addr)));
    let (mut s, _, shard) = raw_where(&broker, |_| true, &connect(4, "dup", false, 60, None, &[]));
    s.send(&subscribe(4, 1, "dup/t", 1, &[]));
    assert_eq!(s.read_packet().kind(), 9);
    rt.block_on(async {
        for m in ["a", "b", "c"] {
            publisher.publish("dup/t", 1, m.as_bytes()).await;
        }
    });
    let first: Vec<RawPacket> = (0..3).map(|_| s.read_packet()).collect();
    assert!(first.iter().all(|p| p.kind() == 3 && !p.dup()));
    s.send(&ack(PUBACK, first[1].pkid()));
    drop(s);

    let (mut s, connack, _) = raw_where(
        &broker,
        |x| x != shard,
        &connect(4, "dup", false, 60, None, &[]),
    );
    assert_eq!(connack.body, [1, 0]);
    for want in [&first[0], &first[2]] {
        let again = s.read_packet();
        assert_eq!(
            (again.kind(), again.dup(), again.pkid()),
            (3, true, want.pkid())
        );
        assert_eq!(again.publish_parts(4).1, want.publish_parts(4).1);
        s.send(&ack(PUBACK, again.pkid()));
    }
    rt.block_on(publisher.publish("dup/t", 1, b"d"));
    let fresh = s.read_packet();
    assert_eq!(
        (fresh.dup(), fresh.publish_parts(4).1),
        (false, b"d".to_vec())
    );
    s.send(&ack(PUBACK, fresh.pkid()));
    s.expect_still_open(QUIET);
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
    let mut publisher = rt.block_on(V4::connect(v311::options("q2out-pub", addr)));

    let (mut s, connack, first_shard) = raw_where(
        &broker,
        |_| true,
        &connect(4, "q2out", false, 60, None, &[]),
    );
    assert_eq!(connack.body, [0, 0], "a new session");
    s.send(&subscribe(4, 1, "q2/out", 2, &[]));
    assert_eq!(
        s.read_packet(),
        RawPacket {
            first: 0x90,
            body: vec![0, 1, 2]
        }
    );
    rt.block_on(publisher.publish("q2/out", 2, b"exactly"));
    let p = s.read_packet();
    assert_eq!((p.kind(), p.qos(), p.dup()), (3, 2, false), "{p:02x?}");
    let pkid = p.pkid();
    drop(s); // no PUBREC

    let (mut s, connack, _) = raw_where(
        &broker,
        |sh| sh != first_shard,
        &connect(4, "q2out", false, 60, None, &[]),
    );
    assert_eq!(connack.body, [1, 0], "session present");
    let again = s.read_packet();
    assert_eq!(
        (again.kind(), again.qos(), again.dup(), again.pkid()),
        (3, 2, true, pkid),
        "{again:02x?}"
    );
    assert_eq!(again.publish_parts(4).1, b"exactly");
    s.send(&ack(PUBREC, pkid));
    assert_eq!(
        s.read_packet(),
        RawPacket {
            first: 0x62,
            body: pkid.to_be_bytes().to_vec()
        }
    );
    drop(s); // no PUBCOMP

    let (mut s, connack) = raw_v311(addr, "q2out", false, 60);
    assert_eq!(connack.body, [1, 0]);
    assert_eq!(
        s.read_packet(),
        RawPacket {
            first: 0x62,
            body: pkid.to_be_bytes().to_vec()
        },
        "PUBREL again"
    );
    s.send(&ack(PUBCOMP, pkid));
    s.expect_still_open(QUIET);
    s.send(&DISCONNECT);
    drop(s);

    let (mut s, _) = raw_v311(addr, "q2out", false, 60);
    s.expect_still_open(QUIET);
}

/// MQTT 5: a session taken over on another shard (the old connection hears 0x8E)
/// continues with exactly-once delivery: QoS 2 messages completed on the old
/// connection are not delivered again, later ones arrive once.
#[test]
fn v5_takeover_across_shards_keeps_qos2_exactly_once() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let session = || v5::persistent("x2", addr, 300);
    rt.block_on(async {
        let (mut old, shard) = connect_anywhere(&broker, || V5::connect(session())).await;
        old.subscribe_ok("x2/t", 2).await;
        let mut publisher = V5::connect(v5::options("x2-pub", addr)).await;
        for i in 0..5 {
            publisher.publish("x2/t", 2, i.to_string().as_bytes()).await;
        }
        for i in 0..5 {
            assert_eq!(old.next_publish().await.text(), i.to_string());
        }
        // Let the old connection finish its PUBREC/PUBREL/PUBCOMP exchanges.
        old.no_publish().await;

        // Connections that land on the old shard take the session over too, and leave
        // it (nothing is pending, so they get nothing).
        let (mut new, _) = connect_where(
            &broker,
            |s| s != shard,
            || V5::connect(session()),
            V5::disconnect,
        )
        .await;
        assert!(new.connack.session_present);
        old.wait_closed().await;
        let why = format!("{:?}", old.error());
        assert!(why.contains("SessionTakenOver"), "{why}");
        for i in 5..10 {
            publisher.publish("x2/t", 2, i.to_string().as_bytes()).await;
        }
        for i in 5..10 {
            assert_eq!(new.next_publish().await.text(), i.to_string());
        }
        new.no_publish().await;
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
        V4::connect(v311::options("will-watch", addr))
    }));
    rt.block_on(watch.subscribe_ok("will/#", 2));
    let elsewhere = |s: usize| s != watch_shard;
    // A raw 3.1.1 CONNECT with a will whose payload is "gone".
    let with_will = |id: &str, topic: &str, qos: u8, retain: bool, keep_alive: u16| {
        let will = RawWill {
            topic,
            payload: b"gone",
            qos,
            retain,
        };
        connect(4, id, true, keep_alive, Some(will), &[])
    };

    // The socket just closes.
    let (c, _) = rt.block_on(connect_where(
        &broker,
        elsewhere,
        || {
            let mut o = v311::options("will-close", addr);
            o.set_last_will(LastWill::new(
                "will/close",
                "gone",
                v311::QoS::AtLeastOnce,
                false,
            ));
            V4::connect(o)
        },
        V4::disconnect,
    ));
    c.kill();
    let m = rt.block_on(watch.next_publish());
    assert_eq!(
        (m.topic.as_str(), m.qos, m.retain),
        ("will/close", 1, false)
    );

    // Keep alive 1 s and silence: closed after 1.5 s, will published.
    let (mut c, _, _) = raw_where(
        &broker,
        elsewhere,
        &with_will("will-ka", "will/keepalive", 2, false, 1),
    );
    c.packets_until_closed();
    let m = rt.block_on(watch.next_publish());
    assert_eq!((m.topic.as_str(), m.qos), ("will/keepalive", 2));

    // A protocol error: a second CONNECT (MQTT-3.1.0-2).
    let (mut c, _, _) = raw_where(
        &broker,
        elsewhere,
        &with_will("will-proto", "will/protocol", 0, false, 60),
    );
    c.send(&connect(4, "will-proto", true, 60, None, &[]));
    c.packets_until_closed();
    let m = rt.block_on(watch.next_publish());
    assert_eq!((m.topic.as_str(), m.qos), ("will/protocol", 0));

    // Taken over by a new connection with the same client id.
    let (mut old, _, _) = raw_where(
        &broker,
        elsewhere,
        &with_will("will-taken", "will/takeover", 1, true, 60),
    );
    let (_new, _) = raw_v311(addr, "will-taken", true, 60);
    old.packets_until_closed();
    let m = rt.block_on(watch.next_publish());
    assert_eq!(
        (m.topic.as_str(), m.retain),
        ("will/takeover", false),
        "a live delivery"
    );
    // Retained: a new subscriber gets it.
    let mut late = rt.block_on(V4::connect(v311::options("will-late", addr)));
    rt.block_on(late.subscribe_ok("will/takeover", 1));
    let m = rt.block_on(late.next_publish());
    assert_eq!((m.text().as_str(), m.retain), ("gone", true));

    // DISCONNECT: no will.
    let (c, _) = rt.block_on(connect_where(
        &broker,
        elsewhere,
        || {
            let mut o = v311::options("will-bye", addr);
            o.set_last_will(LastWill::new(
                "will/bye",
                "gone",
                v311::QoS::AtLeastOnce,
                false,
            ));
            V4::connect(o)
        },
        V4::disconnect,
    ));
    rt.block_on(c.disconnect());
    rt.block_on(watch.no_publish());
}
