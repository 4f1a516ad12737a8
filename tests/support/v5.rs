//! MQTT 5.0 clients on rumqttc, and what only 5.0 has: subscription options and
//! identifiers, PUBLISH properties, session expiry.

use std::net::SocketAddr;

pub use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectProperties, Packet, PubAckReason, SubscribeProperties, SubscribeReasonCode,
};
pub use rumqttc::v5::mqttbytes::v5::{
    Filter, LastWill, LastWillProperties, PublishProperties, RetainForwardRule,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};

use super::WAIT;
use super::client::{Client, Got, Protocol, Seen, rumqttc_version};

/// A connected MQTT 5.0 client.
pub type V5 = Client<Mqtt5>;

/// Options for a client that resumes its session (Clean Start 0) and keeps it for
/// `expiry` seconds after the connection ends.
pub fn persistent(id: &str, addr: SocketAddr, expiry: u32) -> MqttOptions {
    let mut o = options(id, addr);
    o.set_clean_start(false);
    let mut p = ConnectProperties::new();
    p.session_expiry_interval = Some(expiry);
    o.set_connect_properties(p);
    o
}

/// A SUBACK reason code as on the wire.
fn suback_code(c: &SubscribeReasonCode) -> u8 {
    match c {
        SubscribeReasonCode::Success(q) => *q as u8,
        SubscribeReasonCode::Unspecified | SubscribeReasonCode::Failure => 0x80,
        SubscribeReasonCode::ImplementationSpecific => 0x83,
        SubscribeReasonCode::NotAuthorized => 0x87,
        SubscribeReasonCode::TopicFilterInvalid => 0x8F,
        SubscribeReasonCode::PkidInUse => 0x91,
        SubscribeReasonCode::QuotaExceeded => 0x97,
        SubscribeReasonCode::SharedSubscriptionsNotSupported => 0x9E,
        SubscribeReasonCode::SubscriptionIdNotSupported => 0xA1,
        SubscribeReasonCode::WildcardSubscriptionsNotSupported => 0xA2,
    }
}

rumqttc_version!(Mqtt5 {
    fn new(mut opts: MqttOptions) -> (String, AsyncClient, EventLoop) {
        let id = opts.client_id();
        opts.set_connection_timeout(WAIT.as_secs());
        let mut net = rumqttc::NetworkOptions::new();
        net.set_connection_timeout(WAIT.as_secs());
        opts.set_network_options(net);
        let (client, el) = AsyncClient::new(opts, 1000);
        (id, client, el)
    }

    fn seen(p: Packet) -> Seen {
        match p {
            Packet::Publish(p) => Seen::Publish(Got {
                topic: String::from_utf8(p.topic.to_vec()).expect("a UTF-8 topic"),
                qos: p.qos as u8,
                retain: p.retain,
                payload: p.payload.to_vec(),
                properties: p.properties,
            }),
            Packet::PubAck(a) => Seen::PubAck {
                success: a.reason == PubAckReason::Success,
            },
            Packet::PubComp(_) => Seen::PubComp,
            Packet::SubAck(s) => Seen::SubAck(s.return_codes.iter().map(suback_code).collect()),
            Packet::UnsubAck(_) => Seen::UnsubAck,
            _ => Seen::Other,
        }
    }
});

impl V5 {
    /// Subscribes with `filter`'s options and, if given, a subscription identifier;
    /// returns the SUBACK's reason code.
    pub async fn subscribe_with(&mut self, filter: Filter, id: Option<usize>) -> u8 {
        match id {
            Some(id) => {
                let props = SubscribeProperties {
                    id: Some(id),
                    user_properties: Vec::new(),
                };
                self.client
                    .subscribe_many_with_properties([filter], props)
                    .await
                    .unwrap()
            }
            None => self.client.subscribe_many([filter]).await.unwrap(),
        }
        self.wait_suback().await
    }

    /// `publish` with PUBLISH properties.
    pub async fn publish_with(
        &mut self,
        topic: &str,
        q: u8,
        payload: &[u8],
        props: PublishProperties,
    ) {
        self.send_with_properties(topic, q, false, payload, props)
            .await
    }

    /// `publish_retained` with PUBLISH properties.
    pub async fn publish_retained_with(
        &mut self,
        topic: &str,
        q: u8,
        payload: &[u8],
        props: PublishProperties,
    ) {
        self.send_with_properties(topic, q, true, payload, props)
            .await
    }

    async fn send_with_properties(
        &mut self,
        topic: &str,
        q: u8,
        retain: bool,
        payload: &[u8],
        props: PublishProperties,
    ) {
        self.client
            .publish_with_properties(topic, qos(q), retain, payload.to_vec(), props)
            .await
            .unwrap();
        self.wait_ack(q).await;
    }
}
