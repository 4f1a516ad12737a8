//! Fan-out across shards: with `--shards 2`, 200 rumqttc subscribers (QoS 1) land on
//! both shards (SO_REUSEPORT spreads connections), and every one of them receives each
//! of 200 numbered QoS 1 messages from one publisher exactly once, in order.

mod support;

use support::*;

const SUBSCRIBERS: usize = 200;
const MESSAGES: u32 = 200;
const TOPIC: &str = "fan/out/seq";

#[test]
fn two_shards_200_qos1_subscribers_get_every_message_once_in_order() {
    let broker = Broker::start(&["--shards", "2", "--sys-interval", "0"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let mut subscribers = rt.block_on(async {
        // Connect in batches, to be gentle with a small shared host.
        let mut subscribers = Vec::new();
        for batch in (0..SUBSCRIBERS).collect::<Vec<_>>().chunks(25) {
            let connecting: Vec<_> = batch
                .iter()
                .map(|&i| {
                    tokio::spawn(async move {
                        let mut c = V4::connect(v311::options(&format!("fan-{i}"), addr)).await;
                        c.subscribe_ok(TOPIC, 1).await;
                        c
                    })
                })
                .collect();
            for c in connecting {
                subscribers.push(c.await.expect("a subscriber failed to subscribe"));
            }
        }
        subscribers
    });

    // Both shards serve some of the subscribers.
    let per_shard = per_shard(&broker, "ringmq_connections_current");
    assert_eq!(
        per_shard.iter().sum::<u64>(),
        SUBSCRIBERS as u64,
        "{per_shard:?}"
    );
    assert!(
        per_shard.iter().all(|&n| n > 0),
        "every shard should have subscribers: {per_shard:?}"
    );

    rt.block_on(async {
        let mut publisher = V4::connect(v311::options("fan-publisher", addr)).await;
        for seq in 0..MESSAGES {
            publisher
                .client
                .publish(TOPIC, v311::QoS::AtLeastOnce, false, seq.to_string())
                .await
                .unwrap();
        }
        publisher
            .client
            .publish(TOPIC, v311::QoS::AtLeastOnce, false, "end")
            .await
            .unwrap();
        // Every QoS 1 publish is acknowledged.
        publisher.wait_pubacks(MESSAGES as usize + 1).await;

        let want: Vec<Got> = (0..MESSAGES)
            .map(|seq| got(TOPIC, 1, &seq.to_string()))
            .collect();
        for (i, s) in subscribers.iter_mut().enumerate() {
            assert_eq!(s.publishes_until("end").await, want, "subscriber {i}");
        }
    });

    let deliveries = SUBSCRIBERS as u64 * (MESSAGES as u64 + 1);
    assert_eq!(broker.metric("ringmq_messages_in"), MESSAGES as u64 + 1);
    assert_eq!(broker.metric("ringmq_messages_out"), deliveries);
    assert!(
        broker.metric("ringmq_mesh_sent") > 0,
        "messages crossed shards"
    );
}
