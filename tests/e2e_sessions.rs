//! Sessions across connections and shards: a second connection with the same client id
//! takes the session over (the first hears DISCONNECT 0x8E in MQTT 5), a persistent
//! session keeps its subscriptions and queues QoS 1 messages while offline, a will is
//! published when a client vanishes and not when it says goodbye, and QoS 2 delivers
//! exactly once. Two shards, many connections: client ids land on both.

mod common;
#[path = "e2e_support.rs"]
mod support;

use std::io::Write;

use common::Broker;
use support::*;

/// Tries many ids so that old and new connections meet on the same and on different
/// shards (the kernel picks the shard; the client id's home shard is a hash).
#[test]
fn v5_takeover_disconnects_the_old_connection_with_0x8e() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let mut kept = Vec::new();
    for i in 0..8 {
        let id = format!("taken-{i}");
        let (mut old, _) = raw_v5_client(addr, &id, 30);
        let (mut new, _) = raw_v5_client(addr, &id, 30);
        let end = read_until_closed(&mut old, WAIT);
        let packets = split_packets(&end.bytes);
        assert_eq!(packets.len(), 1, "{id}: {packets:02x?}");
        assert_eq!(
            parse_v5_disconnect(&packets[0]).0,
            0x8E,
            "{id}: session taken over"
        );
        new.write_all(&PINGREQ).unwrap();
        assert_eq!(
            read_n(&mut new, 2),
            PINGRESP,
            "{id}: the new connection works"
        );
        kept.push(new);
    }
    broker.wait_for_metric("ringmq_connections_current", WAIT, |v| v == 8);
}

/// 3.1.1 Clean Session = 0: subscriptions survive a disconnect, QoS 1 messages
/// published meanwhile are delivered on return (in order), and CONNACK says the session
/// is present.
#[test]
fn persistent_session_queues_qos1_while_offline() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut opts = v4_tcp("persistent", addr);
        opts.set_clean_session(false);
        let mut sub = V4::connect(opts.clone()).await;
        sub.subscribe_ok("queue/#", 1).await;
        sub.client.disconnect().await.unwrap();
        let _ = sub.next_error().await;
        drop(sub);

        let mut publisher = V4::connect(v4_tcp("queue-pub", addr)).await;
        for i in 0..10 {
            publisher
                .publish("queue/a", 1, format!("q{i}").as_bytes())
                .await;
        }
        publisher.publish("queue/a", 0, b"q0-dropped-or-not").await;
        publisher.publish("queue/a", 1, b"end").await;

        // Back, without subscribing again.
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 16);
        match el.poll().await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c))) => {
                assert_eq!(c.code, rumqttc::ConnectReturnCode::Success);
                assert!(c.session_present, "the session is present");
            }
            other => panic!("{other:?}"),
        }
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(WAIT, el.poll())
                .await
                .expect("queued messages")
            {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    if &p.payload[..] == b"end" {
                        break;
                    }
                    got.push((p.qos as u8, String::from_utf8(p.payload.to_vec()).unwrap()));
                }
                Ok(_) => {}
                Err(e) => panic!("{e:?}"),
            }
        }
        drop(client);
        // QoS 1 messages all come, in order; a QoS 0 one may or may not have been kept.
        got.retain(|(q, _)| *q == 1);
        let want: Vec<(u8, String)> = (0..10).map(|i| (1, format!("q{i}"))).collect();
        assert_eq!(got, want);
    });
}

/// A will is published when the connection ends without DISCONNECT, and not after a
/// DISCONNECT.
#[test]
fn will_is_published_on_abrupt_close_only() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut watcher = V4::connect(v4_tcp("watcher", addr)).await;
        watcher.subscribe_ok("wills/#", 1).await;

        // Says goodbye: no will.
        let mut polite = v4_tcp("polite", addr);
        polite.set_last_will(rumqttc::LastWill::new(
            "wills/polite",
            "polite died",
            rumqttc::QoS::AtLeastOnce,
            false,
        ));
        let mut polite = V4::connect(polite).await;
        polite.client.disconnect().await.unwrap();
        let _ = polite.next_error().await;

        // Vanishes: raw CONNECT with a will, then the socket is dropped.
        let mut b = Vec::new();
        mqtt_str(b"MQTT", &mut b);
        b.push(4);
        b.push(0x02 | 0x04 | 0x08); // clean session, will flag, will QoS 1
        b.extend_from_slice(&30u16.to_be_bytes());
        mqtt_str(b"rude", &mut b);
        mqtt_str(b"wills/rude", &mut b);
        mqtt_str(b"rude died", &mut b);
        let mut s = tcp(addr);
        s.write_all(&packet(0x10, &b)).unwrap();
        assert_eq!(read_n(&mut s, 4), CONNACK_V311_OK);
        drop(s);

        assert_eq!(
            watcher.next_publish().await,
            got("wills/rude", 1, "rude died")
        );
        // Nothing from the polite one: the next message is a marker published now.
        watcher
            .client
            .publish("wills/marker", rumqttc::QoS::AtLeastOnce, false, "marker")
            .await
            .unwrap();
        assert_eq!(
            watcher.next_publish().await,
            got("wills/marker", 1, "marker")
        );
    });
}

/// QoS 2 end to end, both versions: each message exactly once, in order.
#[test]
fn qos2_is_delivered_exactly_once() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let mut sub4 = V4::connect(v4_tcp("q2-sub4", addr)).await;
        sub4.subscribe_ok("q2/#", 2).await;
        let mut sub5 = V5::connect(v5_tcp("q2-sub5", addr)).await;
        sub5.subscribe_ok("q2/#", 2).await;
        let publisher = V4::connect(v4_tcp("q2-pub", addr)).await;
        for i in 0..20 {
            publisher
                .client
                .publish("q2/x", rumqttc::QoS::ExactlyOnce, false, format!("e{i}"))
                .await
                .unwrap();
        }
        publisher
            .client
            .publish("q2/x", rumqttc::QoS::ExactlyOnce, false, "end")
            .await
            .unwrap();
        let want: Vec<Got> = (0..20).map(|i| got("q2/x", 2, &format!("e{i}"))).collect();
        assert_eq!(sub4.publishes_until("end").await, want);
        assert_eq!(sub5.publishes_until("end").await, want);
        drop(publisher);
    });
}
