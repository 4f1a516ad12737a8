//! Many shared-subscription groups on one topic: 10 clients × 10,000 groups subscribe in
//! bounded time (a group is found by its name, not by a search of the node's groups, and
//! the interest other shards hear travels in batches), a message published to the topic
//! reaches each group exactly once, and once every client has unsubscribed the broker
//! keeps nothing of the groups (the gauges say so).

mod support;

use std::net::TcpStream;
use std::time::Duration;

use support::*;

const CLIENTS: usize = 10;
const GROUPS: usize = 10_000;
/// Filters per SUBSCRIBE and UNSUBSCRIBE packet.
const PER_PACKET: usize = 500;

fn group_filter(g: usize) -> String {
    format!("$share/g{g}/load/t")
}

/// A 5.0 SUBSCRIBE (QoS 0) or UNSUBSCRIBE of `filters`.
fn many(unsubscribe: bool, pkid: u16, filters: &[String]) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    b.push(0); // properties
    for f in filters {
        mqtt_str(f.as_bytes(), &mut b);
        if !unsubscribe {
            b.push(0);
        }
    }
    packet(if unsubscribe { 0xA2 } else { 0x82 }, &b)
}

/// Sends every group's (un)subscription, `PER_PACKET` at a time, and checks each answer.
fn all_groups(c: &mut TcpStream, unsubscribe: bool) {
    let filters: Vec<String> = (0..GROUPS).map(group_filter).collect();
    for (i, chunk) in filters.chunks(PER_PACKET).enumerate() {
        c.send(&many(unsubscribe, i as u16 + 1, chunk));
    }
    for _ in filters.chunks(PER_PACKET) {
        let ack = c.read_packet();
        if unsubscribe {
            assert_eq!(ack.first, 0xB0, "UNSUBACK: {:02x?}", &ack.body[..8]);
            let (_, used) = read_varint(&ack.body[2..]).unwrap();
            let codes = &ack.body[2 + used..];
            assert!(codes.len() == PER_PACKET && codes.iter().all(|&c| c == 0));
        } else {
            let codes = ack.suback(5).1;
            assert!(codes.len() == PER_PACKET && codes.iter().all(|&c| c == 0));
        }
    }
}

#[test]
fn ten_clients_in_ten_thousand_groups_on_one_topic() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|i| raw_v5_client(addr, &format!("member-{i}"), 60).0)
        .collect();
    for c in clients.iter_mut() {
        all_groups(c, false);
    }
    broker.wait_for_metric("ringmq_subscriptions", WAIT, |v| {
        v == (CLIENTS * GROUPS) as u64
    });
    // Every shard takes turns in every group.
    let shards = per_shard(&broker, "ringmq_shared_groups").len() as u64;
    broker.wait_for_metric("ringmq_shared_groups", WAIT, |v| {
        v == shards * GROUPS as u64
    });

    // One message: each group delivers it to one of its members.
    let (mut publisher, _) = raw_v5_client(addr, "publisher", 60);
    publisher.send(&publish(
        5,
        "load/t",
        1,
        false,
        false,
        1,
        &[],
        b"once per group",
    ));
    assert_eq!(publisher.read_packet().first, 0x40, "PUBACK");
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let mut n = 0;
                while let Some(p) = c.try_read_packet(Duration::from_secs(3)) {
                    assert_eq!(p.kind(), 3, "{p:02x?}");
                    assert_eq!(p.payload(5), b"once per group");
                    n += 1;
                }
                (c, n)
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut delivered = 0;
    for r in readers {
        let (c, n) = r.join().unwrap();
        delivered += n;
        clients.push(c);
    }
    assert_eq!(delivered, GROUPS, "each group once");

    // Every member leaves every group: nothing of them is kept.
    for c in clients.iter_mut() {
        all_groups(c, true);
    }
    broker.wait_for_metric("ringmq_subscriptions", WAIT, |v| v == 0);
    broker.wait_for_metric("ringmq_shared_groups", WAIT, |v| v == 0);
    assert_eq!(broker.metric("ringmq_subscription_bytes"), 0);
}
