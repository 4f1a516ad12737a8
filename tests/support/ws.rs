//! MQTT over WebSocket from the client side: RFC 6455 by hand (the upgrade request and
//! answer, masked client frames, server frames) for exact bytes, and a tungstenite
//! client for a library's view.

use std::net::{SocketAddr, TcpStream};

use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

use super::broker::Broker;
use super::raw::{RawMqtt, tcp};

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
        head.push(s.read_bytes(1)[0]);
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

/// Opens an MQTT-over-WebSocket connection to `broker` by hand (subprotocol `mqtt`),
/// checking the 101 answer.
pub fn raw_ws(broker: &Broker) -> TcpStream {
    let addr = broker.ws_addr();
    let mut s = tcp(addr);
    s.send(ws_request(addr, broker.ws_path(), Some("mqtt")).as_bytes());
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
    let h = s.read_bytes(2);
    assert_eq!(h[1] & 0x80, 0, "a server frame must not be masked");
    let len = match h[1] & 0x7F {
        126 => u16::from_be_bytes(s.read_bytes(2).try_into().unwrap()) as usize,
        127 => u64::from_be_bytes(s.read_bytes(8).try_into().unwrap()) as usize,
        n => n as usize,
    };
    (h[0], s.read_bytes(len))
}

/// A tungstenite WebSocket over a plain `TcpStream`.
pub type Tungstenite = tungstenite::WebSocket<TcpStream>;

/// A tungstenite client to `broker`'s MQTT/WebSocket endpoint, subprotocol `mqtt`
/// offered and the upgrade checked; no MQTT sent yet.
pub fn tungstenite_client(broker: &Broker) -> Tungstenite {
    let mut req = broker.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (ws, resp) = tungstenite::client(req, tcp(broker.ws_addr())).expect("WebSocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// A tungstenite client that has sent `connect` in a binary message and read a CONNACK.
pub fn tungstenite_mqtt_client(broker: &Broker, connect: Vec<u8>) -> Tungstenite {
    let mut ws = tungstenite_client(broker);
    ws.send(Message::Binary(connect)).unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert_eq!(b[..2], [0x20, b.len() as u8 - 2], "CONNACK {b:02x?}"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    ws
}
