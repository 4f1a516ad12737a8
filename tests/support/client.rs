//! A rumqttc client for tests, the same for both protocol versions: its event loop runs
//! on a background task (so a test's thread may block on raw sockets meanwhile) and
//! stops at the first error (no reconnecting); incoming packets wait in order in an
//! inbox until the test asks for them, so waiting for one kind of packet loses none of
//! the others. `Protocol` is the little that differs between rumqttc's 3.1.1 and 5.0
//! APIs; `v311` and `v5` implement it.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::PublishProperties;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;

use super::{QUIET, WAIT};

/// A received PUBLISH, the same for both protocol versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub payload: Vec<u8>,
    /// MQTT 5 only: the properties, if the PUBLISH had any.
    pub properties: Option<PublishProperties>,
}

impl Got {
    /// The payload as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The properties, empty if there were none.
    pub fn props(&self) -> PublishProperties {
        self.properties.clone().unwrap_or_default()
    }
}

/// `Got` for a live (not retained) message without properties.
pub fn got(topic: &str, qos: u8, payload: &str) -> Got {
    Got {
        topic: topic.into(),
        qos,
        retain: false,
        payload: payload.as_bytes().to_vec(),
        properties: None,
    }
}

/// What a test may wait for among the incoming packets after CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Publish(Got),
    /// A PUBACK, and whether its reason code is success (always in 3.1.1).
    PubAck {
        success: bool,
    },
    PubComp,
    /// A SUBACK's reason codes: the granted QoS, or 0x80 and up for a refusal.
    SubAck(Vec<u8>),
    UnsubAck,
    Other,
}

/// What differs between rumqttc's 3.1.1 and 5.0 clients.
pub trait Protocol: Sized + 'static {
    type Options;
    type AsyncClient: Send + Sync + 'static;
    type EventLoop: Send + 'static;
    type Packet: Debug + Send + 'static;
    type ConnAck: Debug + Clone + Send + Sync;
    type Error: Debug + Send + Sync + 'static;

    /// The client and its event loop, with `WAIT` as the connection timeout.
    fn new(opts: Self::Options) -> (String, Self::AsyncClient, Self::EventLoop);
    /// The next incoming packet, or `None` for an outgoing one.
    fn poll(
        el: &mut Self::EventLoop,
    ) -> impl Future<Output = Result<Option<Self::Packet>, Self::Error>> + Send;
    fn connack(p: &Self::Packet) -> Option<Self::ConnAck>;
    fn seen(p: Self::Packet) -> Seen;
    fn subscribe(c: &Self::AsyncClient, filter: &str, qos: u8) -> impl Future<Output = ()> + Send;
    fn unsubscribe(c: &Self::AsyncClient, filter: &str) -> impl Future<Output = ()> + Send;
    fn publish(
        c: &Self::AsyncClient,
        topic: &str,
        qos: u8,
        retain: bool,
        payload: Vec<u8>,
    ) -> impl Future<Output = ()> + Send;
    /// Sends DISCONNECT, if the connection is still there to send it on.
    fn disconnect(c: &Self::AsyncClient) -> impl Future<Output = ()> + Send;
}

/// A connected rumqttc client (`V4` or `V5`).
pub struct Client<P: Protocol> {
    pub id: String,
    /// rumqttc's handle, for requests the methods below do not cover.
    pub client: P::AsyncClient,
    pub connack: P::ConnAck,
    events: UnboundedReceiver<Result<P::Packet, P::Error>>,
    task: JoinHandle<()>,
    inbox: VecDeque<Seen>,
    closed: bool,
    error: Option<P::Error>,
}

impl<P: Protocol> Drop for Client<P> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<P: Protocol> Client<P> {
    /// Connects; panics unless the broker accepts within `WAIT`.
    pub async fn connect(opts: P::Options) -> Self {
        Self::try_connect(opts)
            .await
            .unwrap_or_else(|(id, e)| panic!("{id}: connect failed: {e:?}"))
    }

    /// Connects; the client id and the error if the connection or the CONNACK failed.
    pub async fn try_connect(opts: P::Options) -> Result<Self, (String, P::Error)> {
        let (id, client, mut el) = P::new(opts);
        let (tx, events) = unbounded_channel();
        let connack = tokio::time::timeout(WAIT, async {
            loop {
                match P::poll(&mut el).await {
                    Ok(Some(p)) => match P::connack(&p) {
                        Some(c) => return Ok(c),
                        None => panic!("{id}: first packet {p:?}"),
                    },
                    Ok(None) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{id}: no CONNACK within {WAIT:?}"));
        let connack = match connack {
            Ok(c) => c,
            Err(e) => return Err((id, e)),
        };
        let task = tokio::spawn(async move {
            loop {
                let ev = match P::poll(&mut el).await {
                    Ok(None) => continue,
                    Ok(Some(p)) => Ok(p),
                    Err(e) => Err(e),
                };
                let end = ev.is_err();
                if tx.send(ev).is_err() || end {
                    return;
                }
            }
        });
        Ok(Client {
            id,
            client,
            connack,
            events,
            task,
            inbox: VecDeque::new(),
            closed: false,
            error: None,
        })
    }

    /// The next incoming packet within `within`; `None` on timeout or once the
    /// connection has ended.
    async fn poll_seen(&mut self, within: Duration) -> Option<Seen> {
        if let Some(p) = self.inbox.pop_front() {
            return Some(p);
        }
        match tokio::time::timeout(within, self.events.recv()).await {
            Err(_) => None,
            Ok(None) => {
                self.closed = true;
                None
            }
            Ok(Some(Ok(p))) => Some(P::seen(p)),
            Ok(Some(Err(e))) => {
                self.closed = true;
                self.error = Some(e);
                None
            }
        }
    }

    /// Waits for the first incoming packet `pick` accepts; the others stay, in order.
    pub async fn wait_for<T>(&mut self, pick: impl Fn(&Seen) -> Option<T>) -> T {
        let mut skipped = VecDeque::new();
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(p) = self.poll_seen(left).await else {
                panic!(
                    "{}: no such packet within {WAIT:?} (closed: {}, error: {:?}); got {skipped:?}",
                    self.id, self.closed, self.error
                );
            };
            if let Some(t) = pick(&p) {
                // The skipped packets go back in front of the ones not looked at yet.
                while let Some(q) = skipped.pop_back() {
                    self.inbox.push_front(q);
                }
                return t;
            }
            skipped.push_back(p);
        }
    }

    /// The next incoming packet, whatever it is.
    pub async fn next_packet(&mut self) -> Seen {
        self.wait_for(|p| Some(p.clone())).await
    }

    /// Subscribes to one filter; returns the SUBACK's reason code.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> u8 {
        P::subscribe(&self.client, filter, qos).await;
        self.wait_suback().await
    }

    /// The next SUBACK's first reason code.
    pub async fn wait_suback(&mut self) -> u8 {
        self.wait_for(|p| match p {
            Seen::SubAck(codes) => Some(codes[0]),
            _ => None,
        })
        .await
    }

    /// Subscribes and checks the broker granted `qos`.
    pub async fn subscribe_ok(&mut self, filter: &str, qos: u8) {
        let code = self.subscribe(filter, qos).await;
        assert_eq!(code, qos, "{}: SUBACK for {filter}", self.id);
    }

    /// Unsubscribes and waits for the UNSUBACK.
    pub async fn unsubscribe(&mut self, filter: &str) {
        P::unsubscribe(&self.client, filter).await;
        self.wait_for(|p| (*p == Seen::UnsubAck).then_some(()))
            .await
    }

    /// Publishes, not retained; for QoS 1 and 2 waits until the broker acknowledged it
    /// (QoS 0: once handed to rumqttc, which sends in order).
    pub async fn publish(&mut self, topic: &str, qos: u8, payload: &[u8]) {
        P::publish(&self.client, topic, qos, false, payload.to_vec()).await;
        self.wait_ack(qos).await;
    }

    /// `publish` with the RETAIN flag.
    pub async fn publish_retained(&mut self, topic: &str, qos: u8, payload: &[u8]) {
        P::publish(&self.client, topic, qos, true, payload.to_vec()).await;
        self.wait_ack(qos).await;
    }

    /// Waits for the acknowledgement that ends the flow of a message published at
    /// `qos`: PUBACK (which must be a success), PUBCOMP, nothing for QoS 0.
    pub async fn wait_ack(&mut self, qos: u8) {
        let id = self.id.clone();
        match qos {
            0 => {}
            1 => {
                let success = self
                    .wait_for(|p| match p {
                        Seen::PubAck { success } => Some(*success),
                        _ => None,
                    })
                    .await;
                assert!(success, "{id}: PUBACK with a failure reason");
            }
            _ => self.wait_for(|p| (*p == Seen::PubComp).then_some(())).await,
        }
    }

    /// Waits for `n` PUBACKs (after publishes through `client` that did not wait).
    pub async fn wait_pubacks(&mut self, n: usize) {
        for _ in 0..n {
            self.wait_ack(1).await;
        }
    }

    /// The next message.
    pub async fn next_publish(&mut self) -> Got {
        self.wait_for(|p| match p {
            Seen::Publish(g) => Some(g.clone()),
            _ => None,
        })
        .await
    }

    /// Every message up to the first with payload `end` (which is left out).
    pub async fn publishes_until(&mut self, end: &str) -> Vec<Got> {
        let mut out = Vec::new();
        loop {
            let g = self.next_publish().await;
            if g.payload == end.as_bytes() {
                return out;
            }
            out.push(g);
        }
    }

    /// Every message that arrives within `d`.
    pub async fn publishes_within(&mut self, d: Duration) -> Vec<Got> {
        let mut out = Vec::new();
        let deadline = Instant::now() + d;
        while let Some(p) = self
            .poll_seen(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            if let Seen::Publish(g) = p {
                out.push(g);
            }
        }
        out
    }

    /// Panics if a message arrives within `QUIET`.
    pub async fn no_publish(&mut self) {
        let got = self.publishes_within(QUIET).await;
        assert!(got.is_empty(), "{}: unexpected {got:?}", self.id);
    }

    /// Every message that arrives until the connection ends; panics if it does not end
    /// within `WAIT`.
    pub async fn drain_until_closed(&mut self) -> Vec<Got> {
        let mut out = Vec::new();
        let deadline = Instant::now() + WAIT;
        while !self.closed {
            assert!(
                Instant::now() < deadline,
                "{}: still open after {WAIT:?}",
                self.id
            );
            if let Some(Seen::Publish(g)) = self.poll_seen(Duration::from_millis(100)).await {
                out.push(g);
            }
        }
        self.task.abort();
        out
    }

    /// Waits until the connection ends; panics if it does not within `WAIT`.
    pub async fn wait_closed(&mut self) {
        self.drain_until_closed().await;
    }

    /// Waits for the connection to fail; returns why.
    pub async fn next_error(&mut self) -> P::Error {
        self.wait_closed().await;
        let id = &self.id;
        self.error
            .take()
            .unwrap_or_else(|| panic!("{id}: the connection ended without an error"))
    }

    /// Why the connection ended, if it did with an error.
    pub fn error(&self) -> Option<&P::Error> {
        self.error.as_ref()
    }

    /// DISCONNECT, then waits for the connection to end.
    pub async fn disconnect(self) {
        self.disconnect_collect().await;
    }

    /// DISCONNECT; returns every message that arrived before the connection ended.
    pub async fn disconnect_collect(mut self) -> Vec<Got> {
        P::disconnect(&self.client).await;
        self.drain_until_closed().await
    }

    /// Drops the connection without a DISCONNECT (so the will is published).
    pub fn kill(self) {
        self.task.abort();
    }
}

/// What reads the same for rumqttc's 3.1.1 and 5.0 APIs, which name their types and
/// methods alike: the options for TCP and WebSocket, the QoS conversion, and the
/// `Protocol` implementation but for `new` and `seen`, given as `$specific`. Expanded in
/// `v311` and `v5`, where the names resolve to that version's types.
macro_rules! rumqttc_version {
    ($marker:ident { $($specific:tt)* }) => {
        /// Options for a client over TCP.
        pub fn options(id: &str, addr: std::net::SocketAddr) -> MqttOptions {
            let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
            o.set_keep_alive(std::time::Duration::from_secs(30));
            o
        }

        /// Options for a client over WebSocket (`url` from `Broker::ws_url`).
        pub fn ws_options(id: &str, url: &str) -> MqttOptions {
            let mut o = MqttOptions::new(id, url, 0);
            o.set_transport(rumqttc::Transport::Ws);
            o.set_keep_alive(std::time::Duration::from_secs(30));
            o
        }

        /// Options for a client over TLS to `addr` (a `127.0.0.1` address: the test
        /// certificates name it) that trusts `ca_pem`, with a client certificate and key
        /// (PEM) when given.
        pub fn tls_options(
            id: &str,
            addr: std::net::SocketAddr,
            ca_pem: Vec<u8>,
            client_auth: Option<(Vec<u8>, Vec<u8>)>,
        ) -> MqttOptions {
            let mut o = options(id, addr);
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Simple {
                    ca: ca_pem,
                    alpn: None,
                    client_auth,
                },
            ));
            o
        }

        /// Options for a client over secure WebSocket (`url` from `Broker::wss_url`)
        /// that trusts `ca_pem`.
        pub fn wss_options(id: &str, url: &str, ca_pem: Vec<u8>) -> MqttOptions {
            let mut o = MqttOptions::new(id, url, 0);
            o.set_transport(rumqttc::Transport::wss_with_config(
                rumqttc::TlsConfiguration::Simple {
                    ca: ca_pem,
                    alpn: None,
                    client_auth: None,
                },
            ));
            o.set_keep_alive(std::time::Duration::from_secs(30));
            o
        }

        /// rumqttc's QoS for `q`.
        pub fn qos(q: u8) -> QoS {
            match q {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                _ => QoS::ExactlyOnce,
            }
        }

        pub struct $marker;

        impl Protocol for $marker {
            type Options = MqttOptions;
            type AsyncClient = AsyncClient;
            type EventLoop = EventLoop;
            type Packet = Packet;
            type ConnAck = ConnAck;
            type Error = ConnectionError;

            async fn poll(el: &mut EventLoop) -> Result<Option<Packet>, ConnectionError> {
                match el.poll().await? {
                    Event::Incoming(p) => Ok(Some(p)),
                    Event::Outgoing(_) => Ok(None),
                }
            }

            fn connack(p: &Packet) -> Option<ConnAck> {
                match p {
                    Packet::ConnAck(c) => Some(c.clone()),
                    _ => None,
                }
            }

            async fn subscribe(c: &AsyncClient, filter: &str, q: u8) {
                c.subscribe(filter, qos(q)).await.unwrap();
            }

            async fn unsubscribe(c: &AsyncClient, filter: &str) {
                c.unsubscribe(filter).await.unwrap();
            }

            async fn publish(
                c: &AsyncClient,
                topic: &str,
                q: u8,
                retain: bool,
                payload: Vec<u8>,
            ) {
                c.publish(topic, qos(q), retain, payload).await.unwrap();
            }

            async fn disconnect(c: &AsyncClient) {
                let _ = c.disconnect().await;
            }

            $($specific)*
        }
    };
}
pub(crate) use rumqttc_version;
