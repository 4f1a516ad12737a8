//! Helpers shared by the `e2e_*` tests, which include this file as a module
//! (`#[path = "e2e_support.rs"] mod support;`). Cargo also builds it alone as a test
//! target; it holds no tests.
//!
//! Everything here is an independent client: raw MQTT and WebSocket bytes written by
//! hand (never ringmq's own codec), and `rumqttc` (3.1.1 and 5.0, TCP and WebSocket)
//! running on a tokio runtime in the background, so that a test's own thread may block
//! on raw sockets while the rumqttc clients keep working.

#![allow(dead_code)]
// rumqttc's own error types are large; these helpers pass them on as they are.
#![allow(clippy::result_large_err)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;

/// How long anything that should happen may take (generous: the host is small and
/// shared). Tests never assert that something happened quickly.
pub const WAIT: Duration = Duration::from_secs(20);

/// A multi-threaded runtime on which rumqttc event loops run in the background.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

// ------------------------------------------------------------------------------------
// Raw MQTT packets, written by hand from the specs (3.1.1 §2-3, 5.0 §2-3).
// ------------------------------------------------------------------------------------

/// Appends a Variable Byte Integer (the Remaining Length encoding).
pub fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            break;
        }
    }
}

/// Appends a UTF-8 string with its two-byte length.
pub fn mqtt_str(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// A whole packet: the first byte, the Remaining Length, the rest.
pub fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    varint(body.len(), &mut p);
    p.extend_from_slice(body);
    p
}

/// CONNECT with protocol name "MQTT", the given level, Clean Session/Start, no will,
/// no credentials; for level 5 an empty property list.
pub fn connect_level(level: u8, client_id: &str, keep_alive: u16) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(b"MQTT", &mut b);
    b.push(level);
    b.push(0x02); // Clean Session
    b.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        b.push(0); // properties
    }
    mqtt_str(client_id.as_bytes(), &mut b);
    packet(0x10, &b)
}

/// A 5.0 CONNECT (Clean Start) with the given encoded properties (identifier and value
/// bytes, without the property length).
pub fn connect_v5_with(client_id: &str, keep_alive: u16, props: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(b"MQTT", &mut b);
    b.push(5);
    b.push(0x02);
    b.extend_from_slice(&keep_alive.to_be_bytes());
    varint(props.len(), &mut b);
    b.extend_from_slice(props);
    mqtt_str(client_id.as_bytes(), &mut b);
    packet(0x10, &b)
}

/// SUBSCRIBE to one filter with the given options byte (QoS in bits 0-1; 5.0 adds
/// No Local, Retain As Published, Retain Handling); `v5` adds the empty property list.
pub fn subscribe(pkid: u16, filter: &str, options: u8, v5: bool) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    if v5 {
        b.push(0);
    }
    mqtt_str(filter.as_bytes(), &mut b);
    b.push(options);
    packet(0x82, &b)
}

/// PUBACK for `pkid` (success; in 5.0 the reason code may be left out).
pub fn puback(pkid: u16) -> Vec<u8> {
    let mut p = vec![0x40, 0x02];
    p.extend_from_slice(&pkid.to_be_bytes());
    p
}

/// A received PUBLISH taken apart: QoS, retain, topic, packet id (QoS > 0), payload.
/// `v5` skips the property list.
pub fn parse_publish(p: &RawPacket, v5: bool) -> (u8, bool, String, u16, Vec<u8>) {
    assert_eq!(p.kind(), 3, "not a PUBLISH: {p:02x?}");
    let qos = (p.first >> 1) & 3;
    let retain = p.first & 1 == 1;
    let b = &p.body;
    let tlen = u16::from_be_bytes([b[0], b[1]]) as usize;
    let topic = String::from_utf8(b[2..2 + tlen].to_vec()).expect("utf-8 topic");
    let mut at = 2 + tlen;
    let mut pkid = 0;
    if qos > 0 {
        pkid = u16::from_be_bytes([b[at], b[at + 1]]);
        at += 2;
    }
    if v5 {
        let (len, used) = read_varint(&b[at..]).expect("property length");
        at += used + len;
    }
    (qos, retain, topic, pkid, b[at..].to_vec())
}

pub fn connect_v311(client_id: &str, keep_alive: u16) -> Vec<u8> {
    connect_level(4, client_id, keep_alive)
}

pub fn connect_v5(client_id: &str, keep_alive: u16) -> Vec<u8> {
    connect_level(5, client_id, keep_alive)
}

/// A 3.1.1 CONNACK accepting the connection without a session.
pub const CONNACK_V311_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
pub const PINGRESP: [u8; 2] = [0xD0, 0x00];

/// PUBLISH at QoS 0; `v5` adds the (empty) property list.
pub fn publish_qos0(topic: &str, payload: &[u8], v5: bool) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(topic.as_bytes(), &mut b);
    if v5 {
        b.push(0);
    }
    b.extend_from_slice(payload);
    packet(0x30, &b)
}

/// One MQTT packet as read from a socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    pub first: u8,
    pub body: Vec<u8>,
}

impl RawPacket {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
}

/// Splits `bytes` into whole MQTT packets; panics if something is left over.
pub fn split_packets(mut bytes: &[u8]) -> Vec<RawPacket> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, used) = read_varint(&bytes[1..]).expect("remaining length");
        let end = 1 + used + len;
        assert!(
            end <= bytes.len(),
            "a partial packet at the end: {bytes:02x?}"
        );
        out.push(RawPacket {
            first: bytes[0],
            body: bytes[1 + used..end].to_vec(),
        });
        bytes = &bytes[end..];
    }
    out
}

/// Reads a Variable Byte Integer: its value and how many bytes it took.
pub fn read_varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for (i, &byte) in b.iter().enumerate().take(4) {
        v |= ((byte & 0x7F) as usize) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// MQTT 5 properties (§2.2.2.2) as (identifier, value bytes) pairs; panics on an
/// identifier this helper does not know.
pub fn parse_v5_properties(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let id = b[0];
        b = &b[1..];
        let n = match id {
            // Byte
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            // Two Byte Integer
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            // Four Byte Integer
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            // UTF-8 string / binary data
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                2 + u16::from_be_bytes([b[0], b[1]]) as usize
            }
            // UTF-8 string pair
            0x26 => {
                let k = 2 + u16::from_be_bytes([b[0], b[1]]) as usize;
                k + 2 + u16::from_be_bytes([b[k], b[k + 1]]) as usize
            }
            0x0B => read_varint(b).expect("subscription identifier").1,
            other => panic!("unknown property {other:#04x}"),
        };
        out.push((id, b[..n].to_vec()));
        b = &b[n..];
    }
    out
}

/// A server's MQTT 5 DISCONNECT: its reason code and properties.
pub fn parse_v5_disconnect(p: &RawPacket) -> (u8, Vec<(u8, Vec<u8>)>) {
    assert_eq!(p.first, 0xE0, "not a DISCONNECT: {p:02x?}");
    if p.body.is_empty() {
        return (0, Vec::new());
    }
    let reason = p.body[0];
    if p.body.len() == 1 {
        return (reason, Vec::new());
    }
    let (len, used) = read_varint(&p.body[1..]).expect("property length");
    let props = &p.body[1 + used..];
    assert_eq!(props.len(), len, "DISCONNECT property length: {p:02x?}");
    (reason, parse_v5_properties(props))
}

/// A v5 CONNACK: session present, reason code, properties.
pub fn parse_v5_connack(p: &RawPacket) -> (bool, u8, Vec<(u8, Vec<u8>)>) {
    assert_eq!(p.first, 0x20, "not a CONNACK: {p:02x?}");
    let (len, used) = read_varint(&p.body[2..]).expect("property length");
    let props = &p.body[2 + used..];
    assert_eq!(props.len(), len, "CONNACK property length: {p:02x?}");
    (p.body[0] & 1 == 1, p.body[1], parse_v5_properties(props))
}

// ------------------------------------------------------------------------------------
// Raw sockets.
// ------------------------------------------------------------------------------------

pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads exactly `n` bytes; panics on EOF or timeout.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("reading {n} bytes: {e}"));
    buf
}

/// Reads one MQTT packet; panics on EOF or timeout.
pub fn read_packet(s: &mut TcpStream) -> RawPacket {
    let first = read_n(s, 1)[0];
    let mut len_bytes = Vec::new();
    let len = loop {
        len_bytes.push(read_n(s, 1)[0]);
        if let Some((len, _)) = read_varint(&len_bytes) {
            break len;
        }
        assert!(len_bytes.len() < 4, "bad remaining length {len_bytes:02x?}");
    };
    RawPacket {
        first,
        body: read_n(s, len),
    }
}

/// How a connection ended, seen from the client.
#[derive(Debug)]
pub struct Ended {
    /// Every byte read before the end.
    pub bytes: Vec<u8>,
    /// The end was a reset, not an orderly EOF.
    pub reset: bool,
}

/// Reads until the server closes the connection (EOF or reset); panics if it is still
/// open after `timeout`.
pub fn read_until_closed(s: &mut TcpStream, timeout: Duration) -> Ended {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "the server did not close the connection within {timeout:?}; read so far: {bytes:02x?}"
        );
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => {
                return Ended {
                    bytes,
                    reset: false,
                };
            }
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                return Ended { bytes, reset: true };
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Asserts the server closes the connection without sending anything.
pub fn expect_closed_silently(s: &mut TcpStream, what: &str) {
    let end = read_until_closed(s, WAIT);
    assert!(
        end.bytes.is_empty(),
        "{what}: expected a close without an answer, got {:02x?}",
        end.bytes
    );
}

/// Asserts the connection is still open after `d` of reading nothing.
pub fn expect_still_open(s: &mut TcpStream, d: Duration) {
    s.set_read_timeout(Some(d)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => panic!("the server closed the connection"),
        Ok(n) => panic!("unexpected bytes {:02x?}", &buf[..n]),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Err(e) => panic!("read: {e}"),
    }
    s.set_read_timeout(Some(WAIT)).unwrap();
}

/// Connects with a raw 3.1.1 CONNECT and checks the CONNACK.
pub fn raw_v311_client(addr: SocketAddr, client_id: &str, keep_alive: u16) -> TcpStream {
    let mut s = tcp(addr);
    s.write_all(&connect_v311(client_id, keep_alive)).unwrap();
    assert_eq!(
        read_n(&mut s, 4),
        CONNACK_V311_OK,
        "CONNACK for {client_id}"
    );
    s
}

/// Connects with a raw 5.0 CONNECT, checks the CONNACK is a success and returns its
/// properties.
pub fn raw_v5_client(
    addr: SocketAddr,
    client_id: &str,
    keep_alive: u16,
) -> (TcpStream, Vec<(u8, Vec<u8>)>) {
    let mut s = tcp(addr);
    s.write_all(&connect_v5(client_id, keep_alive)).unwrap();
    let p = read_packet(&mut s);
    let (present, code, props) = parse_v5_connack(&p);
    assert!(!present);
    assert_eq!(code, 0, "CONNACK reason for {client_id}: {p:02x?}");
    (s, props)
}

// ------------------------------------------------------------------------------------
// Raw WebSocket (RFC 6455), client side.
// ------------------------------------------------------------------------------------

/// The RFC 6455 §1.3 example key and the accept value the server must derive from it.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// An upgrade request for `path`, offering `protocol` when given.
pub fn ws_request(addr: SocketAddr, path: &str, protocol: Option<&str>) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    if let Some(p) = protocol {
        r.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    r.push_str("\r\n");
    r
}

/// Reads an HTTP response head (up to the blank line): status and lower-cased header
/// (name, value) pairs.
pub fn read_http_head(s: &mut TcpStream) -> (u16, Vec<(String, String)>) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(read_n(s, 1)[0]);
        assert!(head.len() < 16 * 1024, "endless response head");
    }
    parse_http_head(std::str::from_utf8(&head).expect("utf-8 head"))
}

pub fn parse_http_head(text: &str) -> (u16, Vec<(String, String)>) {
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line:?}");
    let status = status_line[9..12].parse().expect("status code");
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or_else(|| panic!("header {l:?}"));
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    (status, headers)
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Opens an MQTT-over-WebSocket connection by hand (subprotocol `mqtt`), checking the
/// 101 answer.
pub fn raw_ws(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = tcp(addr);
    s.write_all(ws_request(addr, path, Some("mqtt")).as_bytes())
        .unwrap();
    let (status, headers) = read_http_head(&mut s);
    assert_eq!(status, 101, "{headers:?}");
    s
}

/// A masked client frame (FIN set) with the given opcode.
pub fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads one server frame (servers do not mask): first byte and payload.
pub fn read_ws_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let h = read_n(s, 2);
    assert_eq!(h[1] & 0x80, 0, "a server frame must not be masked");
    let len = match h[1] & 0x7F {
        126 => u16::from_be_bytes(read_n(s, 2).try_into().unwrap()) as usize,
        127 => u64::from_be_bytes(read_n(s, 8).try_into().unwrap()) as usize,
        n => n as usize,
    };
    (h[0], read_n(s, len))
}

// ------------------------------------------------------------------------------------
// rumqttc clients: the event loop runs on a background task and hands every event to
// the test through a channel; it stops at the first error (no reconnecting).
// ------------------------------------------------------------------------------------

/// A received PUBLISH, the same for both protocol versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub payload: Vec<u8>,
}

/// `Got` for a live (not retained) message.
pub fn got(topic: &str, qos: u8, payload: &str) -> Got {
    Got {
        topic: topic.into(),
        qos,
        retain: false,
        payload: payload.as_bytes().to_vec(),
    }
}

/// rumqttc options for MQTT 3.1.1 over TCP.
pub fn v4_tcp(id: &str, addr: SocketAddr) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// rumqttc options for MQTT 3.1.1 over WebSocket (`url` from `Broker::ws_url`).
pub fn v4_ws(id: &str, url: &str) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(id, url, 0);
    o.set_transport(rumqttc::Transport::Ws);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

pub fn v5_tcp(id: &str, addr: SocketAddr) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

pub fn v5_ws(id: &str, url: &str) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(id, url, 0);
    o.set_transport(rumqttc::Transport::Ws);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

type V4Event = Result<rumqttc::Event, rumqttc::ConnectionError>;

/// An MQTT 3.1.1 rumqttc client.
pub struct V4 {
    pub id: String,
    pub client: rumqttc::AsyncClient,
    events: UnboundedReceiver<V4Event>,
    task: JoinHandle<()>,
}

impl Drop for V4 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl V4 {
    /// Connects; panics unless the CONNACK accepts.
    pub async fn connect(opts: rumqttc::MqttOptions) -> V4 {
        let id = opts.client_id();
        V4::try_connect(opts)
            .await
            .unwrap_or_else(|e| panic!("{id}: connect failed: {e:?}"))
    }

    /// Connects; the error if the connection or the CONNACK failed.
    pub async fn try_connect(opts: rumqttc::MqttOptions) -> Result<V4, rumqttc::ConnectionError> {
        let id = opts.client_id();
        let (client, mut el) = rumqttc::AsyncClient::new(opts, 64);
        let mut net = rumqttc::NetworkOptions::new();
        net.set_connection_timeout(WAIT.as_secs());
        el.set_network_options(net);
        match within(&id, el.poll()).await {
            Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c))) => {
                assert_eq!(c.code, rumqttc::ConnectReturnCode::Success);
            }
            Ok(other) => panic!("{id}: first event {other:?}"),
            Err(e) => return Err(e),
        }
        let (tx, events) = unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = el.poll().await;
                let stop = ev.is_err();
                if tx.send(ev).is_err() || stop {
                    break;
                }
            }
        });
        Ok(V4 {
            id,
            client,
            events,
            task,
        })
    }

    /// The next event; panics after `WAIT`.
    pub async fn next_event(&mut self) -> V4Event {
        let id = self.id.clone();
        within(&id, self.events.recv())
            .await
            .unwrap_or_else(|| panic!("{id}: the event loop ended"))
    }

    /// Subscribes and waits for the SUBACK; returns its codes.
    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> Vec<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos4(qos)).await.unwrap();
        loop {
            match self.next_event().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(s))) => {
                    return s.return_codes;
                }
                Ok(_) => {}
                Err(e) => panic!("{}: subscribing to {filter}: {e:?}", self.id),
            }
        }
    }

    /// Subscribes and checks the broker granted `qos`.
    pub async fn subscribe_ok(&mut self, filter: &str, qos: u8) {
        let codes = self.subscribe(filter, qos).await;
        assert_eq!(
            codes,
            [rumqttc::SubscribeReasonCode::Success(qos4(qos))],
            "{}: SUBACK for {filter}",
            self.id
        );
    }

    /// Publishes (not retained); for QoS 1 waits for the PUBACK. Only for a client that
    /// receives no messages meanwhile.
    pub async fn publish(&mut self, topic: &str, qos: u8, payload: &[u8]) {
        self.client
            .publish(topic, qos4(qos), false, payload.to_vec())
            .await
            .unwrap();
        loop {
            match self.next_event().await {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(_))) if qos == 0 => return,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) if qos == 1 => return,
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    panic!("{}: unexpected message while publishing: {p:?}", self.id)
                }
                Ok(_) => {}
                Err(e) => panic!("{}: publishing to {topic}: {e:?}", self.id),
            }
        }
    }

    /// The next message; panics on an error or after `WAIT`.
    pub async fn next_publish(&mut self) -> Got {
        loop {
            match self.next_event().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    return Got {
                        topic: p.topic,
                        qos: p.qos as u8,
                        retain: p.retain,
                        payload: p.payload.to_vec(),
                    };
                }
                Ok(_) => {}
                Err(e) => panic!("{}: waiting for a message: {e:?}", self.id),
            }
        }
    }

    /// Every message up to the first with payload `end` (excluded).
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

    /// Waits for the connection to fail and returns why.
    pub async fn next_error(&mut self) -> rumqttc::ConnectionError {
        loop {
            if let Err(e) = self.next_event().await {
                return e;
            }
        }
    }
}

type V5Event = Result<rumqttc::v5::Event, rumqttc::v5::ConnectionError>;

/// An MQTT 5 rumqttc client.
pub struct V5 {
    pub id: String,
    pub client: rumqttc::v5::AsyncClient,
    events: UnboundedReceiver<V5Event>,
    task: JoinHandle<()>,
}

impl Drop for V5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl V5 {
    pub async fn connect(opts: rumqttc::v5::MqttOptions) -> V5 {
        use rumqttc::v5::Event;
        use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
        let id = opts.client_id();
        let mut opts = opts;
        opts.set_connection_timeout(WAIT.as_secs());
        let mut net = rumqttc::NetworkOptions::new();
        net.set_connection_timeout(WAIT.as_secs());
        opts.set_network_options(net);
        let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 64);
        match within(&id, el.poll()).await {
            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                assert_eq!(c.code, ConnectReturnCode::Success, "{id}");
            }
            other => panic!("{id}: first event {other:?}"),
        }
        let (tx, events) = unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = el.poll().await;
                let stop = ev.is_err();
                if tx.send(ev).is_err() || stop {
                    break;
                }
            }
        });
        V5 {
            id,
            client,
            events,
            task,
        }
    }

    pub async fn next_event(&mut self) -> V5Event {
        let id = self.id.clone();
        within(&id, self.events.recv())
            .await
            .unwrap_or_else(|| panic!("{id}: the event loop ended"))
    }

    pub async fn subscribe_ok(&mut self, filter: &str, qos: u8) {
        use rumqttc::v5::Event;
        use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
        self.client.subscribe(filter, qos5(qos)).await.unwrap();
        loop {
            match self.next_event().await {
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    assert_eq!(
                        s.return_codes,
                        [SubscribeReasonCode::Success(qos5(qos))],
                        "{}: SUBACK for {filter}",
                        self.id
                    );
                    return;
                }
                Ok(_) => {}
                Err(e) => panic!("{}: subscribing to {filter}: {e:?}", self.id),
            }
        }
    }

    pub async fn publish(&mut self, topic: &str, qos: u8, payload: &[u8]) {
        use rumqttc::v5::Event;
        use rumqttc::v5::mqttbytes::v5::Packet;
        self.client
            .publish(topic, qos5(qos), false, payload.to_vec())
            .await
            .unwrap();
        loop {
            match self.next_event().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) if qos == 0 => return,
                Ok(Event::Incoming(Packet::PubAck(a))) if qos == 1 => {
                    use rumqttc::v5::mqttbytes::v5::PubAckReason;
                    assert_eq!(a.reason, PubAckReason::Success, "{}: PUBACK", self.id);
                    return;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    panic!("{}: unexpected message while publishing: {p:?}", self.id)
                }
                Ok(_) => {}
                Err(e) => panic!("{}: publishing to {topic}: {e:?}", self.id),
            }
        }
    }

    pub async fn next_publish(&mut self) -> Got {
        use rumqttc::v5::Event;
        use rumqttc::v5::mqttbytes::v5::Packet;
        loop {
            match self.next_event().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    return Got {
                        topic: String::from_utf8(p.topic.to_vec()).expect("utf-8 topic"),
                        qos: p.qos as u8,
                        retain: p.retain,
                        payload: p.payload.to_vec(),
                    };
                }
                Ok(_) => {}
                Err(e) => panic!("{}: waiting for a message: {e:?}", self.id),
            }
        }
    }

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

    pub async fn next_error(&mut self) -> rumqttc::v5::ConnectionError {
        loop {
            if let Err(e) = self.next_event().await {
                return e;
            }
        }
    }
}

/// A well-behaved client that must keep working while others misbehave: subscribed to
/// `health/#`, it publishes to itself and must get each message back.
pub struct Healthy {
    pub c: V4,
    n: u32,
}

impl Healthy {
    pub async fn start(opts: rumqttc::MqttOptions) -> Healthy {
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
        self.c
            .client
            .publish(&topic, rumqttc::QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
        let g = self.c.next_publish().await;
        assert_eq!(g, got(&topic, 1, &payload), "the healthy client");
    }
}
