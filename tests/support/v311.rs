//! MQTT 3.1.1 clients on rumqttc (which calls 3.1.1 "v4").

use rumqttc::{AsyncClient, ConnAck, ConnectionError, Event, EventLoop, MqttOptions, Packet};
pub use rumqttc::{LastWill, QoS};

use super::WAIT;
use super::client::{Client, Got, Protocol, Seen, got, rumqttc_version};

/// A connected MQTT 3.1.1 client.
pub type V4 = Client<Mqtt311>;

rumqttc_version!(Mqtt311 {
    fn new(opts: MqttOptions) -> (String, AsyncClient, EventLoop) {
        let id = opts.client_id();
        let (client, mut el) = AsyncClient::new(opts, 1000);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_connection_timeout(WAIT.as_secs());
        el.set_network_options(net);
        (id, client, el)
    }

    fn seen(p: Packet) -> Seen {
        match p {
            Packet::Publish(p) => Seen::Publish(Got {
                topic: p.topic,
                qos: p.qos as u8,
                retain: p.retain,
                payload: p.payload.to_vec(),
                properties: None,
            }),
            Packet::PubAck(_) => Seen::PubAck { success: true },
            Packet::PubComp(_) => Seen::PubComp,
            Packet::SubAck(s) => Seen::SubAck(
                s.return_codes
                    .iter()
                    .map(|c| match c {
                        rumqttc::SubscribeReasonCode::Success(q) => *q as u8,
                        rumqttc::SubscribeReasonCode::Failure => 0x80,
                    })
                    .collect(),
            ),
            Packet::UnsubAck(_) => Seen::UnsubAck,
            _ => Seen::Other,
        }
    }
});

/// A well-behaved client that must keep working while others misbehave: subscribed to
/// `health/#`, it publishes to itself and must get each message back.
pub struct Healthy {
    pub c: V4,
    n: u32,
}

impl Healthy {
    pub async fn start(opts: MqttOptions) -> Healthy {
        let mut c = V4::connect(opts).await;
        c.subscribe_ok("health/#", 1).await;
        let mut h = Healthy { c, n: 0 };
        h.check().await;
        h
    }

    /// Publishes a new QoS 1 message and expects exactly it back.
    pub async fn check(&mut self) {
        self.n += 1;
        let topic = format!("health/{}", self.n);
        let payload = format!("alive-{}", self.n);
        self.c.publish(&topic, 1, payload.as_bytes()).await;
        let g = self.c.next_publish().await;
        assert_eq!(g, got(&topic, 1, &payload), "the healthy client");
    }
}
