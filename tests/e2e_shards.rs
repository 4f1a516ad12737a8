//! Fan-out across shards: with `--shards 2`, 200 rumqttc subscribers (QoS 1) land on
//! both shards (SO_REUSEPORT spreads connections), and every one of them receives each
//! of 200 numbered QoS 1 messages from one publisher exactly once, in order.

mod common;
#[path = "e2e_support.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Broker, parse_metric};
use rumqttc::{AsyncClient, Event, Packet, QoS, SubscribeReasonCode};
use support::*;
use tokio::sync::oneshot;

const SUBSCRIBERS: usize = 200;
const MESSAGES: u32 = 200;
const TOPIC: &str = "fan/out/seq";

/// One subscriber: connects, subscribes at QoS 1 (says so on `subscribed`), then
/// collects the sequence numbers up to the `end` message.
async fn subscriber(addr: SocketAddr, i: usize, subscribed: oneshot::Sender<()>) -> Vec<u32> {
    let mut opts = v4_tcp(&format!("fan-{i}"), addr);
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, mut el) = AsyncClient::new(opts, 16);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_connection_timeout(60);
    el.set_network_options(net);
    client.subscribe(TOPIC, QoS::AtLeastOnce).await.unwrap();
    let mut subscribed = Some(subscribed);
    let mut seqs = Vec::new();
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Packet::SubAck(s))) => {
                assert_eq!(
                    s.return_codes,
                    [SubscribeReasonCode::Success(QoS::AtLeastOnce)],
                    "subscriber {i}"
                );
                let _ = subscribed.take().expect("one SUBACK").send(());
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                assert_eq!(p.topic, TOPIC);
                assert_eq!(p.qos, QoS::AtLeastOnce, "subscriber {i}");
                if &p.payload[..] == b"end" {
                    drop(client);
                    return seqs;
                }
                let text = std::str::from_utf8(&p.payload).expect("utf-8 payload");
                seqs.push(text.parse().expect("a sequence number"));
            }
            Ok(_) => {}
            Err(e) => panic!("subscriber {i}: {e:?} after {} messages", seqs.len()),
        }
    }
}

#[test]
fn two_shards_200_qos1_subscribers_get_every_message_once_in_order() {
    let broker = Broker::start(&["--shards", "2", "--sys-interval", "0"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let tasks = rt.block_on(async {
        // Connect in batches, to be gentle with a small shared host.
        let mut tasks = Vec::new();
        for batch in (0..SUBSCRIBERS).collect::<Vec<_>>().chunks(25) {
            let mut ready = Vec::new();
            for &i in batch {
                let (tx, rx) = oneshot::channel();
                tasks.push(tokio::spawn(subscriber(addr, i, tx)));
                ready.push(rx);
            }
            for rx in ready {
                tokio::time::timeout(Duration::from_secs(120), rx)
                    .await
                    .expect("a subscriber did not get its SUBACK")
                    .expect("a subscriber failed before its SUBACK");
            }
        }
        tasks
    });

    // Both shards serve some of the subscribers.
    let text = broker.metrics();
    let per_shard: Vec<u64> = (0..2)
        .map(|s| {
            let name = format!("ringmq_connections_current{{shard=\"{s}\"}}");
            parse_metric(&text, &name).unwrap_or_else(|| panic!("no {name} in\n{text}"))
        })
        .collect();
    assert_eq!(
        per_shard.iter().sum::<u64>(),
        SUBSCRIBERS as u64,
        "{per_shard:?}"
    );
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "every shard should have subscribers: {per_shard:?}"
    );

    let results = rt.block_on(async {
        let mut publisher = V4::connect(v4_tcp("fan-publisher", addr)).await;
        for seq in 0..MESSAGES {
            publisher
                .client
                .publish(TOPIC, QoS::AtLeastOnce, false, seq.to_string())
                .await
                .unwrap();
        }
        publisher
            .client
            .publish(TOPIC, QoS::AtLeastOnce, false, "end")
            .await
            .unwrap();
        // Every QoS 1 publish is acknowledged.
        let mut acks = 0;
        while acks < MESSAGES + 1 {
            match publisher.next_event().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acks += 1,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e:?} after {acks} PUBACKs"),
            }
        }
        let mut results = Vec::new();
        for t in tasks {
            let r = tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .expect("a subscriber did not get every message")
                .expect("a subscriber failed");
            results.push(r);
        }
        results
    });

    let want: Vec<u32> = (0..MESSAGES).collect();
    for (i, got) in results.iter().enumerate() {
        assert_eq!(got, &want, "subscriber {i}");
    }
    let deliveries = SUBSCRIBERS as u64 * (MESSAGES as u64 + 1);
    assert_eq!(broker.metric("ringmq_messages_in"), MESSAGES as u64 + 1);
    assert_eq!(broker.metric("ringmq_messages_out"), deliveries);
    assert!(
        broker.metric("ringmq_mesh_sent") > 0,
        "messages crossed shards"
    );
}
