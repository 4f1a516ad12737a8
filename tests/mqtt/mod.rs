//! Clients for the `e2e_mqtt_*` tests (MQTT conformance, issue 4): `rumqttc` 3.1.1 and
//! 5.0 clients whose event loops run on a tokio runtime, raw packets written by hand
//! from the specs for what rumqttc cannot say or show (DUP flags, exact reason codes,
//! packets a well-behaved client never sends), and the placement of clients on chosen
//! shards. Nothing here uses ringmq's own codec.
//!
//! Waits have generous deadlines so that a hang fails instead of blocking; no test
//! asserts how long anything takes.

#![allow(dead_code)]
// rumqttc's error types are large; they are only passed on to panics here.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;

use crate::common::Broker;

// The raw-packet basics and the runtime are the other e2e tests' (`e2e_support.rs`).
#[path = "../e2e_support.rs"]
mod support;
pub use support::{WAIT, mqtt_str as utf8, packet, runtime, varint};

/// How long to watch for something that must not happen.
pub const QUIET: Duration = Duration::from_millis(700);

// ------------------------------------------------------------------------------------
// rumqttc, MQTT 3.1.1
// ------------------------------------------------------------------------------------

#[allow(unused_imports)]
pub mod v4 {
    use super::*;
    pub use rumqttc::{
        AsyncClient, ConnAck, ConnectReturnCode, Event, LastWill, MqttOptions, Packet, Publish,
        QoS, SubscribeReasonCode,
    };

    pub fn options(id: &str, addr: SocketAddr) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(60));
        o
    }

    /// A connected rumqttc 3.1.1 client; incoming packets wait in `inbox`.
    pub struct Client {
        pub client: AsyncClient,
        pub connack: ConnAck,
        events: UnboundedReceiver<Result<Event, rumqttc::ConnectionError>>,
        task: JoinHandle<()>,
        inbox: VecDeque<Packet>,
        closed: bool,
        /// Why the event loop ended, if it did with an error (Debug form).
        pub error: Option<String>,
    }

    impl Client {
        /// Connects and waits for CONNACK; panics if it is a refusal.
        pub async fn connect(opts: MqttOptions) -> Client {
            let (client, mut el) = AsyncClient::new(opts, 1000);
            let (tx, events) = unbounded_channel();
            let task = tokio::spawn(async move {
                loop {
                    let ev = el.poll().await;
                    let end = ev.is_err();
                    if tx.send(ev).is_err() || end {
                        return;
                    }
                }
            });
            let mut c = Client {
                client,
                connack: ConnAck::new(ConnectReturnCode::Success, false),
                events,
                task,
                inbox: VecDeque::new(),
                closed: false,
                error: None,
            };
            c.connack = c
                .wait_for(|p| match p {
                    Packet::ConnAck(a) => Some(a.clone()),
                    _ => None,
                })
                .await;
            assert_eq!(c.connack.code, ConnectReturnCode::Success);
            c
        }

        /// The next incoming packet.
        async fn next_packet(&mut self, within: Duration) -> Option<Packet> {
            if let Some(p) = self.inbox.pop_front() {
                return Some(p);
            }
            let deadline = tokio::time::Instant::now() + within;
            loop {
                let ev = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                    Err(_) => return None,
                    Ok(None) => {
                        self.closed = true;
                        return None;
                    }
                    Ok(Some(ev)) => ev,
                };
                match ev {
                    Ok(Event::Incoming(p)) => return Some(p),
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        self.closed = true;
                        self.error = Some(format!("{e:?}"));
                        return None;
                    }
                }
            }
        }

        /// Waits for the first incoming packet `pick` accepts; the others stay in order.
        pub async fn wait_for<T>(&mut self, pick: impl Fn(&Packet) -> Option<T>) -> T {
            let mut skipped = VecDeque::new();
            let deadline = Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let Some(p) = self.next_packet(left).await else {
                    panic!(
                        "no such packet within {WAIT:?} (closed: {}); got {skipped:?}",
                        self.closed
                    );
                };
                if let Some(t) = pick(&p) {
                    skipped.extend(self.inbox.drain(..));
                    self.inbox = skipped;
                    return t;
                }
                skipped.push_back(p);
            }
        }

        pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
            self.client.subscribe(filter, qos).await.unwrap();
            self.wait_for(|p| match p {
                Packet::SubAck(a) => Some(a.return_codes[0]),
                _ => None,
            })
            .await
        }

        /// Publishes and, for QoS 1 and 2, waits until the broker acknowledged it.
        pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
            self.client
                .publish(topic, qos, retain, payload.to_vec())
                .await
                .unwrap();
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    self.wait_for(|p| matches!(p, Packet::PubAck(_)).then_some(()))
                        .await
                }
                QoS::ExactlyOnce => {
                    self.wait_for(|p| matches!(p, Packet::PubComp(_)).then_some(()))
                        .await
                }
            }
        }

        pub async fn next_publish(&mut self) -> Publish {
            self.wait_for(|p| match p {
                Packet::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .await
        }

        /// Waits for `n` PUBACKs (after publishes that did not wait for theirs).
        pub async fn wait_pubacks(&mut self, n: usize) {
            for _ in 0..n {
                self.wait_for(|p| matches!(p, Packet::PubAck(_)).then_some(()))
                    .await;
            }
        }

        /// Panics if a PUBLISH arrives within `QUIET`.
        pub async fn no_publish(&mut self) {
            let deadline = Instant::now() + QUIET;
            while let Some(p) = self
                .next_packet(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                assert!(!matches!(p, Packet::Publish(_)), "unexpected {p:?}");
            }
        }

        /// Whether the broker closed the connection (waits up to `WAIT` for it).
        pub async fn closed_by_broker(&mut self) -> bool {
            let deadline = Instant::now() + WAIT;
            while !self.closed && Instant::now() < deadline {
                self.next_packet(Duration::from_millis(100)).await;
            }
            self.closed
        }

        /// DISCONNECT, then the connection ends.
        pub async fn disconnect(self) {
            self.disconnect_collect().await;
        }

        /// DISCONNECT; returns every PUBLISH that arrived before the connection ended.
        pub async fn disconnect_collect(mut self) -> Vec<Publish> {
            let _ = self.client.disconnect().await;
            self.drain_until_closed().await
        }

        /// Every PUBLISH that arrives until the connection ends (panics if it does not
        /// end within `WAIT`).
        pub async fn drain_until_closed(&mut self) -> Vec<Publish> {
            let mut got = Vec::new();
            let deadline = Instant::now() + WAIT;
            while !self.closed {
                assert!(Instant::now() < deadline, "still open after {WAIT:?}");
                if let Some(Packet::Publish(p)) = self.next_packet(Duration::from_millis(100)).await
                {
                    got.push(p);
                }
            }
            self.task.abort();
            got
        }

        /// Every PUBLISH that arrives within `d`.
        pub async fn publishes_within(&mut self, d: Duration) -> Vec<Publish> {
            let mut got = Vec::new();
            let deadline = Instant::now() + d;
            while let Some(p) = self
                .next_packet(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                if let Packet::Publish(p) = p {
                    got.push(p);
                }
            }
            got
        }

        /// Drops the connection without a DISCONNECT (the will is published).
        pub fn kill(self) {
            self.task.abort();
        }
    }

    pub fn text(p: &Publish) -> String {
        String::from_utf8_lossy(&p.payload).into_owned()
    }
}

// ------------------------------------------------------------------------------------
// rumqttc, MQTT 5
// ------------------------------------------------------------------------------------

#[allow(unused_imports)]
pub mod v5 {
    use super::*;
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::mqttbytes::v5::{
        ConnAck, ConnectProperties, ConnectReturnCode, Filter, LastWill, LastWillProperties,
        Packet, Publish, PublishProperties, RetainForwardRule, SubscribeProperties,
        SubscribeReasonCode,
    };
    pub use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    pub fn options(id: &str, addr: SocketAddr) -> MqttOptions {
        let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(60));
        o
    }

    /// A connected rumqttc 5.0 client; incoming packets wait in `inbox`.
    pub struct Client {
        pub client: AsyncClient,
        pub connack: ConnAck,
        events: UnboundedReceiver<Result<Event, rumqttc::v5::ConnectionError>>,
        task: JoinHandle<()>,
        inbox: VecDeque<Packet>,
        closed: bool,
        /// Why the event loop ended, if it did with an error (Debug form).
        pub error: Option<String>,
    }

    impl Client {
        /// Connects and waits for CONNACK; panics if it is a refusal.
        pub async fn connect(opts: MqttOptions) -> Client {
            let (client, mut el) = AsyncClient::new(opts, 1000);
            let (tx, events) = unbounded_channel();
            let task = tokio::spawn(async move {
                loop {
                    let ev = el.poll().await;
                    let end = ev.is_err();
                    if tx.send(ev).is_err() || end {
                        return;
                    }
                }
            });
            let mut c = Client {
                client,
                connack: ConnAck {
                    session_present: false,
                    code: ConnectReturnCode::Success,
                    properties: None,
                },
                events,
                task,
                inbox: VecDeque::new(),
                closed: false,
                error: None,
            };
            c.connack = c
                .wait_for(|p| match p {
                    Packet::ConnAck(a) => Some(a.clone()),
                    _ => None,
                })
                .await;
            assert_eq!(c.connack.code, ConnectReturnCode::Success);
            c
        }

        async fn next_packet(&mut self, within: Duration) -> Option<Packet> {
            if let Some(p) = self.inbox.pop_front() {
                return Some(p);
            }
            let deadline = tokio::time::Instant::now() + within;
            loop {
                let ev = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                    Err(_) => return None,
                    Ok(None) => {
                        self.closed = true;
                        return None;
                    }
                    Ok(Some(ev)) => ev,
                };
                match ev {
                    Ok(Event::Incoming(p)) => return Some(p),
                    Ok(Event::Outgoing(_)) => {}
                    Err(e) => {
                        self.closed = true;
                        self.error = Some(format!("{e:?}"));
                        return None;
                    }
                }
            }
        }

        /// Waits for the first incoming packet `pick` accepts; the others stay in order.
        pub async fn wait_for<T>(&mut self, pick: impl Fn(&Packet) -> Option<T>) -> T {
            let mut skipped = VecDeque::new();
            let deadline = Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let Some(p) = self.next_packet(left).await else {
                    panic!(
                        "no such packet within {WAIT:?} (closed: {}); got {skipped:?}",
                        self.closed
                    );
                };
                if let Some(t) = pick(&p) {
                    skipped.extend(self.inbox.drain(..));
                    self.inbox = skipped;
                    return t;
                }
                skipped.push_back(p);
            }
        }

        /// Subscribes with `filter`'s options (and a subscription identifier if given);
        /// returns the SUBACK reason code.
        pub async fn subscribe_with(&mut self, filter: Filter, id: Option<usize>) -> u8 {
            let props = id.map(|id| SubscribeProperties {
                id: Some(id),
                user_properties: Vec::new(),
            });
            match props {
                Some(p) => self
                    .client
                    .subscribe_many_with_properties([filter], p)
                    .await
                    .unwrap(),
                None => self.client.subscribe_many([filter]).await.unwrap(),
            }
            self.wait_for(|p| match p {
                Packet::SubAck(a) => Some(suback_code(a.return_codes[0])),
                _ => None,
            })
            .await
        }

        pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> u8 {
            self.subscribe_with(Filter::new(filter, qos), None).await
        }

        /// Publishes and, for QoS 1 and 2, waits until the broker acknowledged it.
        pub async fn publish_with(
            &mut self,
            topic: &str,
            qos: QoS,
            retain: bool,
            payload: &[u8],
            props: PublishProperties,
        ) {
            self.client
                .publish_with_properties(topic, qos, retain, payload.to_vec(), props)
                .await
                .unwrap();
            match qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => {
                    self.wait_for(|p| matches!(p, Packet::PubAck(_)).then_some(()))
                        .await
                }
                QoS::ExactlyOnce => {
                    self.wait_for(|p| matches!(p, Packet::PubComp(_)).then_some(()))
                        .await
                }
            }
        }

        pub async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: &[u8]) {
            self.publish_with(topic, qos, retain, payload, PublishProperties::default())
                .await
        }

        pub async fn next_publish(&mut self) -> Publish {
            self.wait_for(|p| match p {
                Packet::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .await
        }

        /// Panics if a PUBLISH arrives within `QUIET`.
        pub async fn no_publish(&mut self) {
            let deadline = Instant::now() + QUIET;
            while let Some(p) = self
                .next_packet(deadline.saturating_duration_since(Instant::now()))
                .await
            {
                assert!(!matches!(p, Packet::Publish(_)), "unexpected {p:?}");
            }
        }

        /// Waits until the connection ends (panics if it does not within `WAIT`).
        pub async fn wait_closed(&mut self) {
            let deadline = Instant::now() + WAIT;
            while !self.closed {
                assert!(Instant::now() < deadline, "still open after {WAIT:?}");
                self.next_packet(Duration::from_millis(100)).await;
            }
        }

        /// DISCONNECT (normal), then the connection ends.
        pub async fn disconnect(mut self) {
            let _ = self.client.disconnect().await;
            let deadline = Instant::now() + WAIT;
            while !self.closed && Instant::now() < deadline {
                self.next_packet(Duration::from_millis(100)).await;
            }
            self.task.abort();
        }

        /// Drops the connection without a DISCONNECT (the will is published).
        pub fn kill(self) {
            self.task.abort();
        }
    }

    pub fn suback_code(c: SubscribeReasonCode) -> u8 {
        match c {
            SubscribeReasonCode::Success(QoS::AtMostOnce) => 0,
            SubscribeReasonCode::Success(QoS::AtLeastOnce) => 1,
            SubscribeReasonCode::Success(QoS::ExactlyOnce) => 2,
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

    pub fn text(p: &Publish) -> String {
        String::from_utf8_lossy(&p.payload).into_owned()
    }

    pub fn topic(p: &Publish) -> String {
        String::from_utf8_lossy(&p.topic).into_owned()
    }

    pub fn props(p: &Publish) -> PublishProperties {
        p.properties.clone().unwrap_or_default()
    }
}

// ------------------------------------------------------------------------------------
// Raw packets (MQTT 3.1.1 §3, MQTT 5.0 §3), written by hand.
// ------------------------------------------------------------------------------------

/// A will for a raw CONNECT: topic, payload, QoS, retain (3.1.1 and 5.0 without
/// properties).
#[derive(Clone, Copy)]
pub struct RawWill<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
}

/// CONNECT for MQTT 3.1.1 (level 4) or 5 (level 5, with the property bytes `props`).
pub fn connect(
    level: u8,
    id: &str,
    clean: bool,
    keep_alive: u16,
    will: Option<RawWill<'_>>,
    props: &[u8],
) -> Vec<u8> {
    let mut b = Vec::new();
    utf8(b"MQTT", &mut b);
    b.push(level);
    let mut flags = if clean { 0x02 } else { 0 };
    if let Some(w) = will {
        flags |= 0x04 | (w.qos << 3) | if w.retain { 0x20 } else { 0 };
    }
    b.push(flags);
    b.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        varint(props.len(), &mut b);
        b.extend_from_slice(props);
    }
    utf8(id.as_bytes(), &mut b);
    if let Some(w) = will {
        if level == 5 {
            b.push(0);
        }
        utf8(w.topic.as_bytes(), &mut b);
        utf8(w.payload, &mut b);
    }
    packet(0x10, &b)
}

/// SUBSCRIBE with one filter and its options byte (MQTT 5: with `props`).
pub fn subscribe(level: u8, pkid: u16, filter: &str, options: u8, props: &[u8]) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    if level == 5 {
        varint(props.len(), &mut b);
        b.extend_from_slice(props);
    }
    utf8(filter.as_bytes(), &mut b);
    b.push(options);
    packet(0x82, &b)
}

/// PUBLISH (MQTT 5: with `props`).
#[allow(clippy::too_many_arguments)]
pub fn publish(
    level: u8,
    topic: &str,
    qos: u8,
    dup: bool,
    retain: bool,
    pkid: u16,
    props: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut b = Vec::new();
    utf8(topic.as_bytes(), &mut b);
    if qos > 0 {
        b.extend_from_slice(&pkid.to_be_bytes());
    }
    if level == 5 {
        varint(props.len(), &mut b);
        b.extend_from_slice(props);
    }
    b.extend_from_slice(payload);
    let first = 0x30 | (qos << 1) | if dup { 0x08 } else { 0 } | u8::from(retain);
    packet(first, &b)
}

/// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62), PUBCOMP (0x70): just the packet id.
pub fn ack(first: u8, pkid: u16) -> Vec<u8> {
    packet(first, &pkid.to_be_bytes())
}

pub const PUBACK: u8 = 0x40;
pub const PUBREC: u8 = 0x50;
pub const PUBREL: u8 = 0x62;
pub const PUBCOMP: u8 = 0x70;
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// One MQTT 5 property of each wire type, appended to `out`.
pub fn prop_u8(id: u8, v: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[id, v]);
}
pub fn prop_u16(id: u8, v: u16, out: &mut Vec<u8>) {
    out.push(id);
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn prop_u32(id: u8, v: u32, out: &mut Vec<u8>) {
    out.push(id);
    out.extend_from_slice(&v.to_be_bytes());
}
pub fn prop_varint(id: u8, v: usize, out: &mut Vec<u8>) {
    out.push(id);
    varint(v, out);
}

/// A packet as read back: first byte and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    pub first: u8,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }

    /// PUBLISH: the DUP flag, the QoS and the RETAIN flag.
    pub fn dup(&self) -> bool {
        self.first & 0x08 != 0
    }
    pub fn qos(&self) -> u8 {
        (self.first >> 1) & 3
    }
    pub fn retain(&self) -> bool {
        self.first & 1 != 0
    }

    /// PUBLISH: the topic.
    pub fn topic(&self) -> String {
        let n = u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        String::from_utf8_lossy(&self.body[2..2 + n]).into_owned()
    }

    /// PUBLISH with QoS > 0, and every acknowledgement: the packet id.
    pub fn pkid(&self) -> u16 {
        let at = if self.kind() == 3 {
            2 + u16::from_be_bytes([self.body[0], self.body[1]]) as usize
        } else {
            0
        };
        u16::from_be_bytes([self.body[at], self.body[at + 1]])
    }

    /// PUBLISH: the properties (MQTT 5) and the payload.
    pub fn publish_parts(&self, level: u8) -> (Vec<(u8, Vec<u8>)>, Vec<u8>) {
        let mut at = 2 + u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        if self.qos() > 0 {
            at += 2;
        }
        let props = if level == 5 {
            let (props, used) = parse_props(&self.body[at..]);
            at += used;
            props
        } else {
            Vec::new()
        };
        (props, self.body[at..].to_vec())
    }

    /// A packet whose variable header is a reason code then properties (MQTT 5
    /// CONNACK after its flags, PUBACK/PUBREC/PUBREL/PUBCOMP after the packet id,
    /// DISCONNECT): the reason code and the properties.
    pub fn reason_and_props(&self) -> (u8, Vec<(u8, Vec<u8>)>) {
        let at = match self.kind() {
            2 => 1,
            4..=7 => 2,
            _ => 0,
        };
        if self.body.len() <= at {
            return (0, Vec::new());
        }
        let code = self.body[at];
        if self.body.len() == at + 1 {
            return (code, Vec::new());
        }
        (code, parse_props(&self.body[at + 1..]).0)
    }

    /// SUBACK: the properties (MQTT 5) and the codes.
    pub fn suback(&self, level: u8) -> (Vec<(u8, Vec<u8>)>, Vec<u8>) {
        let mut at = 2;
        let props = if level == 5 {
            let (p, used) = parse_props(&self.body[at..]);
            at += used;
            p
        } else {
            Vec::new()
        };
        (props, self.body[at..].to_vec())
    }
}

/// MQTT 5 property ids this module reads.
pub const MESSAGE_EXPIRY: u8 = 0x02;
pub const SUBSCRIPTION_ID: u8 = 0x0B;
pub const SESSION_EXPIRY: u8 = 0x11;
pub const ASSIGNED_ID: u8 = 0x12;
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
pub const REASON_STRING: u8 = 0x1F;
pub const RECEIVE_MAXIMUM: u8 = 0x21;
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub const TOPIC_ALIAS: u8 = 0x23;
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;

/// Reads a property block (its length first): the properties as (id, value bytes),
/// and the bytes the block took.
pub fn parse_props(b: &[u8]) -> (Vec<(u8, Vec<u8>)>, usize) {
    let (len, mut at) = read_varint(b);
    let end = at + len;
    let mut out = Vec::new();
    while at < end {
        let id = b[at];
        at += 1;
        let size = match id {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x0B => read_varint(&b[at..]).1,
            0x26 => {
                let k = u16::from_be_bytes([b[at], b[at + 1]]) as usize;
                let v = u16::from_be_bytes([b[at + 2 + k], b[at + 3 + k]]) as usize;
                4 + k + v
            }
            _ => 2 + u16::from_be_bytes([b[at], b[at + 1]]) as usize,
        };
        out.push((id, b[at..at + size].to_vec()));
        at += size;
    }
    (out, end)
}

pub fn read_varint(b: &[u8]) -> (usize, usize) {
    let mut n = 0usize;
    for (i, &byte) in b.iter().enumerate().take(4) {
        n |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return (n, i + 1);
        }
    }
    panic!("bad variable byte integer {b:02x?}")
}

/// The value of property `id` among `props`, as a number (1, 2 or 4 bytes, or a
/// variable byte integer for a subscription identifier).
pub fn prop_num(props: &[(u8, Vec<u8>)], id: u8) -> Option<u64> {
    props.iter().find(|p| p.0 == id).map(|(id, v)| {
        if *id == SUBSCRIPTION_ID {
            return read_varint(v).0 as u64;
        }
        v.iter().fold(0u64, |n, &b| (n << 8) | b as u64)
    })
}

/// A raw client connection, with a read timeout.
pub struct RawConn {
    pub s: TcpStream,
}

impl RawConn {
    pub fn open(addr: SocketAddr) -> RawConn {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_nodelay(true).unwrap();
        RawConn { s }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write to the broker");
    }

    /// The next packet; panics on EOF or timeout.
    pub fn read(&mut self) -> Raw {
        self.try_read(WAIT)
            .unwrap_or_else(|| panic!("no packet within {WAIT:?}"))
    }

    /// The next packet within `within`, or `None` on EOF or timeout.
    pub fn try_read(&mut self, within: Duration) -> Option<Raw> {
        self.s.set_read_timeout(Some(within)).unwrap();
        let r = self.read_packet();
        self.s.set_read_timeout(Some(WAIT)).unwrap();
        r
    }

    fn read_packet(&mut self) -> Option<Raw> {
        let mut first = [0u8; 1];
        self.read_exact(&mut first)?;
        let mut len = 0usize;
        for i in 0..4 {
            let mut b = [0u8; 1];
            self.read_exact(&mut b)?;
            len |= ((b[0] & 0x7F) as usize) << (7 * i);
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        self.read_exact(&mut body)?;
        Some(Raw {
            first: first[0],
            body,
        })
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Option<()> {
        match self.s.read_exact(buf) {
            Ok(()) => Some(()),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof
                        | ErrorKind::WouldBlock
                        | ErrorKind::TimedOut
                        | ErrorKind::ConnectionReset
                ) =>
            {
                None
            }
            Err(e) => panic!("read from the broker: {e}"),
        }
    }

    /// Reads until the broker closes the connection (panics if it does not within
    /// `WAIT`); returns the packets that came before.
    pub fn until_closed(&mut self) -> Vec<Raw> {
        let deadline = Instant::now() + WAIT;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "still open after {WAIT:?}; got {got:02x?}");
            self.s.set_read_timeout(Some(left)).unwrap();
            let mut first = [0u8; 1];
            match self.s.read(&mut first) {
                Ok(0) => return got,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
                Err(e) => panic!("still open after {WAIT:?} ({e}); got {got:02x?}"),
            }
            let mut len = 0usize;
            for i in 0..4 {
                let mut b = [0u8; 1];
                self.s.read_exact(&mut b).expect("remaining length");
                len |= ((b[0] & 0x7F) as usize) << (7 * i);
                if b[0] & 0x80 == 0 {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            self.s.read_exact(&mut body).expect("packet body");
            got.push(Raw {
                first: first[0],
                body,
            });
        }
    }

    /// Panics if a packet arrives within `QUIET`.
    pub fn nothing(&mut self) {
        if let Some(p) = self.try_read(QUIET) {
            panic!("unexpected packet {p:02x?}");
        }
    }
}

/// A raw MQTT 3.1.1 client: connected, CONNACK read; returns the CONNACK too.
pub fn raw_v311(addr: SocketAddr, id: &str, clean: bool, keep_alive: u16) -> (RawConn, Raw) {
    let mut c = RawConn::open(addr);
    c.send(&connect(4, id, clean, keep_alive, None, &[]));
    let ack = c.read();
    assert_eq!(ack.first, 0x20, "CONNACK expected: {ack:02x?}");
    (c, ack)
}

/// A raw MQTT 5 client with CONNECT properties `props`: connected, CONNACK read.
pub fn raw_v5(addr: SocketAddr, id: &str, clean: bool, props: &[u8]) -> (RawConn, Raw) {
    let mut c = RawConn::open(addr);
    c.send(&connect(5, id, clean, 60, None, props));
    let ack = c.read();
    assert_eq!(ack.first, 0x20, "CONNACK expected: {ack:02x?}");
    (c, ack)
}

// ------------------------------------------------------------------------------------
// Shards
// ------------------------------------------------------------------------------------

/// `ringmq_connections_total{shard="i"}` (connections accepted since start) for every
/// shard: the shard whose count grew by one across a connect is where the connection
/// landed, whatever other connections are closing meanwhile.
pub fn shard_accepts(broker: &Broker) -> Vec<u64> {
    let text = broker.metrics();
    let mut out = Vec::new();
    for i in 0.. {
        let name = format!("ringmq_connections_total{{shard=\"{i}\"}} ");
        let Some(v) = text
            .lines()
            .find_map(|l| l.strip_prefix(&name).and_then(|v| v.parse().ok()))
        else {
            break;
        };
        out.push(v);
    }
    assert!(!out.is_empty(), "no per-shard accept counter in\n{text}");
    out
}

/// The shard that accepted one connection between the two readings.
fn landed(before: &[u64], after: &[u64]) -> usize {
    let grew: Vec<usize> = (0..after.len()).filter(|&i| after[i] > before[i]).collect();
    assert_eq!(
        grew.len(),
        1,
        "one connection should have been accepted: {before:?} → {after:?}"
    );
    grew[0]
}

/// Connects with `connect` (which must not return before its CONNACK) until the
/// connection lands on a shard `ok` accepts; connections that land elsewhere are
/// dropped with `drop_it`. Returns the client and its shard. No other connection may
/// be accepted meanwhile.
pub async fn connect_where<C, F, Fut, D, DFut>(
    broker: &Broker,
    ok: impl Fn(usize) -> bool,
    mut connect: F,
    mut drop_it: D,
) -> (C, usize)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = C>,
    D: FnMut(C) -> DFut,
    DFut: std::future::Future<Output = ()>,
{
    for _ in 0..40 {
        let before = shard_accepts(broker);
        let c = connect().await;
        let shard = landed(&before, &shard_accepts(broker));
        if ok(shard) {
            return (c, shard);
        }
        drop_it(c).await;
    }
    panic!("40 connections in a row landed on the wrong shard")
}

/// The shard the one connection made by `connect` landed on (no other connection may
/// be accepted meanwhile).
pub async fn connect_anywhere<C, Fut: std::future::Future<Output = C>>(
    broker: &Broker,
    connect: impl FnOnce() -> Fut,
) -> (C, usize) {
    let before = shard_accepts(broker);
    let c = connect().await;
    let shard = landed(&before, &shard_accepts(broker));
    (c, shard)
}

/// The raw-connection form of [`connect_where`].
pub fn raw_where(
    broker: &Broker,
    ok: impl Fn(usize) -> bool,
    mut connect: impl FnMut() -> (RawConn, Raw),
) -> (RawConn, Raw, usize) {
    for _ in 0..40 {
        let before = shard_accepts(broker);
        let (mut c, ack) = connect();
        let shard = landed(&before, &shard_accepts(broker));
        if ok(shard) {
            return (c, ack, shard);
        }
        c.send(&DISCONNECT);
        // Wait for the broker to close it, so the next attempt does not take it over.
        c.until_closed();
    }
    panic!("40 connections in a row landed on the wrong shard")
}
