//! Sessions across connections and shards (issue 4): takeover by a new connection on
//! the same shard or another closes the old one, publishes its will, and continues the
//! session with nothing lost (QoS 1) and nothing delivered twice that QoS does not
//! allow (QoS 0, QoS 2); sessions resume on another shard with what was queued there;
//! unacknowledged messages are sent again with DUP. Publishers keep publishing while
//! sessions move, so the broker's hand-over between shards is exercised under load.

mod common;
mod mqtt;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Broker;
use mqtt::v4::{self, LastWill, QoS};
use mqtt::*;

/// Payloads `0..n`, published with QoS `qos` to each topic by one client per shard
/// taking turns, as fast as the clients go (QoS 1 acknowledgements are not waited for
/// one by one, so the stream keeps flowing while the test moves sessions around);
/// `sent` counts what was handed to the clients. The task ends once every QoS 1
/// message is acknowledged.
fn publish_in_background(
    rt: &tokio::runtime::Runtime,
    broker: &Broker,
    name: &str,
    streams: Vec<(&'static str, QoS)>,
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
                let mut o = v4::options(&id, addr);
                o.set_inflight(50);
                v4::Client::connect(o)
            },
            v4::Client::disconnect,
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
                    .publish(*topic, *qos, false, i.to_string().into_bytes())
                    .await
                    .unwrap();
                if *qos == QoS::AtLeastOnce {
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

fn numbers(got: &[v4::Publish], topic: &str) -> Vec<usize> {
    got.iter()
        .filter(|p| p.topic == topic)
        .map(|p| v4::text(p).parse().unwrap())
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
        let mut watch = rt.block_on(v4::Client::connect(v4::options(&format!("{name}-w"), addr)));
        rt.block_on(watch.subscribe(&will_topic, QoS::AtLeastOnce));

        let session = |will: bool| {
            let mut o = v4::options(name, addr);
            o.set_clean_session(false);
            if will {
                o.set_last_will(LastWill::new(
                    &will_topic,
                    "old gone",
                    QoS::AtLeastOnce,
                    false,
                ));
            }
            o
        };
        let (mut old, old_shard) = rt.block_on(connect_anywhere(&broker, || {
            v4::Client::connect(session(true))
        }));
        rt.block_on(old.subscribe(&data, QoS::AtLeastOnce));

        let sent = Arc::new(AtomicUsize::new(0));
        let topic: &'static str = Box::leak(data.clone().into_boxed_str());
        const N: usize = 5_000;
        let stream = publish_in_background(
            &rt,
            &broker,
            name,
            vec![(topic, QoS::AtLeastOnce)],
            N,
            sent.clone(),
        );
        while sent.load(Ordering::Relaxed) < N / 4 {
            std::thread::sleep(Duration::from_millis(1));
        }

        // Connections on the wrong shard are takeovers too; what they got counts.
        let got = Arc::new(Mutex::new(Vec::new()));
        let keep = got.clone();
        let (mut new, new_shard) = rt.block_on(connect_where(
            &broker,
            |s| (s == old_shard) == same_shard,
            || v4::Client::connect(session(false)),
            move |c: v4::Client| {
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
        assert_eq!(v4::text(&will), "old gone");
        rt.block_on(watch.no_publish());
        rt.block_on(new.disconnect());
    }
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
        let mut o = v4::options("mv", addr);
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
            || v4::Client::connect(v4::options(&id, addr)),
            v4::Client::disconnect,
        ));
        rt.block_on(a.subscribe("mv/#", QoS::AtMostOnce));
        anchors.push(a);
    }
    let (mut conn, mut shard) =
        rt.block_on(connect_anywhere(&broker, || v4::Client::connect(session())));
    rt.block_on(conn.subscribe("mv/q0", QoS::AtMostOnce));
    rt.block_on(conn.subscribe("mv/q1", QoS::AtLeastOnce));
    const N: usize = 20_000;
    let sent = Arc::new(AtomicUsize::new(0));
    let stream = publish_in_background(
        &rt,
        &broker,
        "mv",
        vec![("mv/q0", QoS::AtMostOnce), ("mv/q1", QoS::AtLeastOnce)],
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
            || v4::Client::connect(session()),
            move |c: v4::Client| {
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

/// A persistent session left on one shard resumes on the other with what was queued
/// meanwhile, published from both shards, in each publisher's order (MQTT-4.6.0-6 for
/// one publisher's messages on one topic). (The client is raw: a connection that lands
/// on the wrong shard leaves without acknowledging anything, so what it was sent is
/// sent again to the next.)
#[test]
fn session_resumes_on_another_shard_with_messages_queued_from_both() {
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let (mut c, _, shard) = raw_where(&broker, |_| true, || raw_v311(addr, "rs", false, 60));
    c.send(&subscribe(4, 1, "rs/+", 2, &[]));
    assert_eq!(c.read().kind(), 9);
    c.send(&DISCONNECT);
    c.until_closed();
    rt.block_on(async {
        let mut publishers = Vec::new();
        for s in 0..2 {
            let id = format!("rs-pub{s}");
            let (p, _) = connect_where(
                &broker,
                |x| x == s,
                || v4::Client::connect(v4::options(&id, addr)),
                v4::Client::disconnect,
            )
            .await;
            publishers.push(p);
        }
        for i in 0..10 {
            for (s, p) in publishers.iter_mut().enumerate() {
                let qos = if i % 2 == 0 {
                    QoS::AtLeastOnce
                } else {
                    QoS::ExactlyOnce
                };
                p.publish(&format!("rs/{s}"), qos, false, i.to_string().as_bytes())
                    .await;
            }
        }
    });
    let (mut c, connack, _) =
        raw_where(&broker, |s| s != shard, || raw_v311(addr, "rs", false, 60));
    assert_eq!(connack.body, [1, 0], "session present");
    let mut got: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut received = 0;
    while received < 20 {
        let p = c.read();
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
    while let Some(p) = c.try_read(QUIET) {
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
    let mut publisher = rt.block_on(v4::Client::connect(v4::options("dup-pub", addr)));
    let (mut s, _, shard) = raw_where(&broker, |_| true, || raw_v311(addr, "dup", false, 60));
    s.send(&subscribe(4, 1, "dup/t", 1, &[]));
    assert_eq!(s.read().kind(), 9);
    rt.block_on(async {
        for m in ["a", "b", "c"] {
            publisher
                .publish("dup/t", QoS::AtLeastOnce, false, m.as_bytes())
                .await;
        }
    });
    let first: Vec<Raw> = (0..3).map(|_| s.read()).collect();
    assert!(first.iter().all(|p| p.kind() == 3 && !p.dup()));
    s.send(&ack(PUBACK, first[1].pkid()));
    drop(s);

    let (mut s, connack, _) =
        raw_where(&broker, |x| x != shard, || raw_v311(addr, "dup", false, 60));
    assert_eq!(connack.body, [1, 0]);
    for want in [&first[0], &first[2]] {
        let again = s.read();
        assert_eq!(
            (again.kind(), again.dup(), again.pkid()),
            (3, true, want.pkid())
        );
        assert_eq!(again.publish_parts(4).1, want.publish_parts(4).1);
        s.send(&ack(PUBACK, again.pkid()));
    }
    rt.block_on(publisher.publish("dup/t", QoS::AtLeastOnce, false, b"d"));
    let fresh = s.read();
    assert_eq!(
        (fresh.dup(), fresh.publish_parts(4).1),
        (false, b"d".to_vec())
    );
    s.send(&ack(PUBACK, fresh.pkid()));
    s.nothing();
}

/// MQTT 5: a session taken over on another shard (the old connection hears 0x8E)
/// continues with exactly-once delivery: QoS 2 messages completed on the old
/// connection are not delivered again, later ones arrive once.
#[test]
fn v5_takeover_across_shards_keeps_qos2_exactly_once() {
    use mqtt::v5::{self as m5, ConnectProperties};
    let broker = Broker::start(&["--shards", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let session = || {
        let mut o = m5::options("x2", addr);
        o.set_clean_start(false);
        let mut p = ConnectProperties::new();
        p.session_expiry_interval = Some(300);
        o.set_connect_properties(p);
        o
    };
    rt.block_on(async {
        let (mut old, shard) = connect_anywhere(&broker, || m5::Client::connect(session())).await;
        old.subscribe("x2/t", m5::QoS::ExactlyOnce).await;
        let mut publisher = m5::Client::connect(m5::options("x2-pub", addr)).await;
        for i in 0..5 {
            publisher
                .publish(
                    "x2/t",
                    m5::QoS::ExactlyOnce,
                    false,
                    i.to_string().as_bytes(),
                )
                .await;
        }
        for i in 0..5 {
            assert_eq!(m5::text(&old.next_publish().await), i.to_string());
        }
        // Let the old connection finish its PUBREC/PUBREL/PUBCOMP exchanges.
        old.no_publish().await;

        // Connections that land on the old shard take the session over too, and leave
        // it (nothing is pending, so they get nothing).
        let (mut new, _) = connect_where(
            &broker,
            |s| s != shard,
            || m5::Client::connect(session()),
            m5::Client::disconnect,
        )
        .await;
        assert!(new.connack.session_present);
        old.wait_closed().await;
        let why = old.error.clone().unwrap_or_default();
        assert!(why.contains("SessionTakenOver"), "{why}");
        for i in 5..10 {
            publisher
                .publish(
                    "x2/t",
                    m5::QoS::ExactlyOnce,
                    false,
                    i.to_string().as_bytes(),
                )
                .await;
        }
        for i in 5..10 {
            assert_eq!(m5::text(&new.next_publish().await), i.to_string());
        }
        new.no_publish().await;
    });
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
        let mut conns: Vec<RawConn> = (0..12).map(|_| RawConn::open(addr)).collect();
        for c in &mut conns {
            c.send(&connect(4, &id, false, 60, None, &[]));
        }
        for c in &mut conns {
            // Each is answered (CONNACK), then either stays or is closed by a later one.
            let ack = c.read();
            assert_eq!(ack.first, 0x20, "{ack:02x?}");
        }
        broker.wait_for_metric("ringmq_connections_current", WAIT, |n| n <= 1);
        let mut open = 0;
        for c in &mut conns {
            let _ = c.s.write_all(&PINGREQ);
            if let Some(p) = c.try_read(QUIET) {
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
