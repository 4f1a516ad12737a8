//! Retained messages for a new subscription go out at the pace the subscriber reads
//! them: 100,000 retained messages all reach a new subscriber to `#`, at QoS 0 (none
//! dropped as to a slow consumer) and at QoS 1 (far more than its in-flight window and
//! queue hold, without it being disconnected), over TCP and over WebSocket; and while
//! they go out, another client on the same shard is served.

mod support;

use std::collections::HashSet;
use std::io::Read;
use std::net::TcpStream;

use support::*;
use tungstenite::Message;

const RETAINED: usize = 100_000;
/// Large enough that the retained set (about 12 MB) is far more than the sockets buffer,
/// so the subscriber's pause below leaves most of it waiting in the broker.
const PAYLOAD: usize = 100;
/// Retained messages the subscriber reads before it stops reading for a while.
const BEFORE_PAUSE: usize = 1_000;

/// The byte stream of an MQTT connection, over TCP or in WebSocket binary messages.
trait Wire {
    fn send(&mut self, bytes: &[u8]);
    /// Reads what has arrived into `into`; panics on EOF, an error or `WAIT` of silence.
    fn fill(&mut self, into: &mut PacketStream);
}

impl Wire for TcpStream {
    fn send(&mut self, bytes: &[u8]) {
        RawMqtt::send(self, bytes);
    }

    fn fill(&mut self, into: &mut PacketStream) {
        let mut buf = vec![0u8; 64 * 1024];
        match self.read(&mut buf) {
            Ok(0) => panic!("the broker closed the connection"),
            Ok(n) => into.push(&buf[..n]),
            Err(e) => panic!("read: {e}"),
        }
    }
}

impl Wire for Tungstenite {
    fn send(&mut self, bytes: &[u8]) {
        tungstenite::WebSocket::send(self, Message::Binary(bytes.to_vec())).expect("ws send");
    }

    fn fill(&mut self, into: &mut PacketStream) {
        match self.read().expect("ws read") {
            Message::Binary(b) => into.push(&b),
            Message::Close(c) => panic!("the broker closed the WebSocket: {c:?}"),
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// The next packet from `wire`.
fn next_packet(wire: &mut impl Wire, stream: &mut PacketStream) -> RawPacket {
    loop {
        if let Some(p) = stream.next_packet() {
            return p;
        }
        wire.fill(stream);
    }
}

/// Retains `RETAINED` messages at QoS 1 (`r/0` … `r/99999`) from a 3.1.1 client, and
/// waits until the broker has taken them all up (its PINGRESP comes after their PUBACKs).
fn retain_many(broker: &Broker) {
    let mut s = raw_v311_client(broker.mqtt_addr(), "retainer", 60);
    let payload = vec![b'p'; PAYLOAD];
    let mut batch = Vec::new();
    for i in 0..RETAINED {
        let pkid = (i % 60_000) as u16 + 1;
        batch.extend(publish(
            4,
            &format!("r/{i}"),
            1,
            false,
            true,
            pkid,
            &[],
            &payload,
        ));
        if batch.len() > 256 * 1024 || i + 1 == RETAINED {
            RawMqtt::send(&mut s, &batch);
            batch.clear();
        }
    }
    RawMqtt::send(&mut s, &PINGREQ);
    let mut stream = PacketStream::default();
    let mut acks = 0;
    loop {
        let p = next_packet(&mut s, &mut stream);
        match p.kind() {
            4 => acks += 1,
            13 => break,
            _ => panic!("unexpected {p:02x?}"),
        }
    }
    assert_eq!(acks, RETAINED);
    RawMqtt::send(&mut s, &DISCONNECT);
}

/// Two clients on the broker's only shard: one subscribed to `side/t`, one publishing
/// to it.
struct Side {
    sub: TcpStream,
    publisher: TcpStream,
    sent: usize,
}

impl Side {
    fn new(broker: &Broker) -> Side {
        let mut sub = raw_v311_client(broker.mqtt_addr(), "side-sub", 60);
        RawMqtt::send(&mut sub, &subscribe(4, 1, "side/t", 0, &[]));
        let ack = sub.read_packet();
        assert_eq!(ack.suback(4).1, [0]);
        let publisher = raw_v311_client(broker.mqtt_addr(), "side-pub", 60);
        Side {
            sub,
            publisher,
            sent: 0,
        }
    }

    /// Publishes a few messages and checks each arrives.
    fn served(&mut self) {
        for _ in 0..5 {
            self.sent += 1;
            let body = format!("side {}", self.sent);
            RawMqtt::send(
                &mut self.publisher,
                &publish_qos0(4, "side/t", body.as_bytes()),
            );
            let p = self.sub.read_packet();
            assert_eq!(p.kind(), 3, "{p:02x?}");
            assert_eq!((p.topic(), p.payload(4)), ("side/t".into(), body.into()));
        }
    }
}

/// Subscribes `wire`'s client (connected, 3.1.1) to `#` at `qos`, reads `BEFORE_PAUSE`
/// retained messages, stops reading while `side` is served, then reads every other one.
fn receive_all(broker: &Broker, wire: &mut impl Wire, qos: u8, side: &mut Side) {
    wire.send(&subscribe(4, 7, "#", qos, &[]));
    let mut stream = PacketStream::default();
    let mut seen = HashSet::with_capacity(RETAINED);
    let mut suback = false;
    let mut paused = false;
    while seen.len() < RETAINED {
        let p = next_packet(wire, &mut stream);
        match p.kind() {
            9 => {
                assert_eq!(p.suback(4).1, [qos]);
                suback = true;
            }
            3 => {
                assert!(suback, "a PUBLISH before the SUBACK");
                let topic = p.topic();
                if !topic.starts_with("r/") {
                    continue; // a live message to `side/t`
                }
                assert!(p.retain(), "{topic} without RETAIN");
                assert_eq!(p.qos(), qos, "{topic}");
                assert_eq!(p.payload(4).len(), PAYLOAD);
                if qos > 0 {
                    wire.send(&ack(PUBACK, p.pkid()));
                }
                assert!(seen.insert(topic.clone()), "{topic} twice");
            }
            _ => panic!("unexpected {p:02x?}"),
        }
        if seen.len() == BEFORE_PAUSE && !paused {
            // The subscriber reads nothing for a while: the rest waits in the broker (not
            // in its queue for the connection: in the subscription's snapshot), and the
            // other clients of the shard are served meanwhile.
            paused = true;
            side.served();
            let pending = broker.metric("ringmq_retained_pending");
            assert!(
                pending > 0 && pending < RETAINED as u64,
                "{pending} pending"
            );
        }
    }
    side.served();
}

fn check(broker: &Broker) {
    assert_eq!(
        broker.metric("ringmq_disconnected_slow_consumer"),
        0,
        "no subscriber was cut off"
    );
    assert_eq!(broker.metric("ringmq_retained_pending"), 0);
}

/// The retained messages, then a QoS 0 and a QoS 1 subscriber to `#` that `connect`
/// connects (3.1.1) under `ids`, each receiving every one of them.
fn every_retained_message_reaches<W: Wire>(ids: [&str; 2], connect: impl Fn(&Broker, &str) -> W) {
    let broker = Broker::start(&["--shards", "1"]);
    retain_many(&broker);
    let mut side = Side::new(&broker);
    for (qos, id) in [0, 1].into_iter().zip(ids) {
        let mut sub = connect(&broker, id);
        receive_all(&broker, &mut sub, qos, &mut side);
        sub.send(&DISCONNECT);
    }
    check(&broker);
}

#[test]
fn every_retained_message_reaches_a_new_subscriber_over_tcp() {
    every_retained_message_reaches(["all-q0", "all-q1"], |b, id| {
        raw_v311_client(b.mqtt_addr(), id, 60)
    });
}

#[test]
fn every_retained_message_reaches_a_new_subscriber_over_websocket() {
    every_retained_message_reaches(["ws-all-q0", "ws-all-q1"], |b, id| {
        tungstenite_mqtt_client(b, connect_v311(id, 60))
    });
}

/// The snapshots of one shard are bounded: a subscription whose snapshot finds no room
/// waits (counted) until another subscriber has taken its retained messages, then gets
/// every one of its own.
#[test]
fn a_snapshot_past_the_bound_waits_for_room() {
    let broker = Broker::start(&["--shards", "1", "--retained-snapshot-entries", "100"]);
    let addr = broker.mqtt_addr();
    // 1,000 retained messages of 10 KB: far more than a connection's soft limit and the
    // sockets' buffers hold.
    let mut p = raw_v311_client(addr, "big-retainer", 60);
    let payload = vec![b'b'; 10_000];
    for i in 0..1000 {
        RawMqtt::send(
            &mut p,
            &publish(4, &format!("big/{i}"), 0, false, true, 0, &[], &payload),
        );
    }
    RawMqtt::send(&mut p, &PINGREQ);
    assert_eq!(p.read_packet().first, 0xD0);
    // A subscribes and reads nothing: most of its snapshot stays in the broker.
    let mut a = raw_v311_client(addr, "slow-a", 60);
    RawMqtt::send(&mut a, &subscribe(4, 1, "big/#", 0, &[]));
    broker.wait_for_metric("ringmq_retained_pending", WAIT, |v| v > 100);
    // B's snapshot finds no room and waits.
    let mut b = raw_v311_client(addr, "waits-b", 60);
    RawMqtt::send(&mut b, &subscribe(4, 1, "big/#", 0, &[]));
    broker.wait_for_metric("ringmq_retained_snapshots_waited", WAIT, |v| v == 1);
    let mut b_stream = PacketStream::default();
    assert_eq!(next_packet(&mut b, &mut b_stream).suback(4).1, [0]);
    assert!(
        b.try_read_packet(QUIET).is_none(),
        "B gets nothing while it waits"
    );
    // A takes all of its own; then B gets all of its own.
    for (who, s, stream) in [
        ("A", &mut a, &mut PacketStream::default()),
        ("B", &mut b, &mut b_stream),
    ] {
        let mut seen = HashSet::new();
        while seen.len() < 1000 {
            let p = next_packet(s, stream);
            if p.kind() == 3 {
                assert!(p.retain(), "{who}");
                seen.insert(p.topic());
            }
        }
    }
    assert_eq!(broker.metric("ringmq_dropped_qos0_slow_consumer"), 0);
}
