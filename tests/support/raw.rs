//! MQTT 3.1.1 and 5.0 packets written and read by hand from the specs (3.1.1 §2-3,
//! 5.0 §2-3), over plain `TcpStream`s. A protocol level of 4 means 3.1.1, 5 means 5.0;
//! 5.0 packets carry property blocks, given here as encoded bytes without their length.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::WAIT;

// ------------------------------------------------------------------------------------
// Writing packets
// ------------------------------------------------------------------------------------

/// Appends a Variable Byte Integer (the Remaining Length and property length encoding).
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

/// Appends a UTF-8 string or binary data with its two-byte length.
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

/// A will for a raw CONNECT (no will properties in 5.0).
#[derive(Clone, Copy)]
pub struct RawWill<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: u8,
    pub retain: bool,
}

/// CONNECT with protocol name "MQTT" at `level`, Clean Session / Clean Start as
/// `clean`, no credentials; at level 5 with the CONNECT properties `props`.
pub fn connect(
    level: u8,
    id: &str,
    clean: bool,
    keep_alive: u16,
    will: Option<RawWill<'_>>,
    props: &[u8],
) -> Vec<u8> {
    connect_as(level, id, clean, keep_alive, will, props, None, None)
}

/// CONNECT with a clean session (keep alive 60 s), a username and a password, each if
/// given, and at level 5 the CONNECT properties `props`.
pub fn connect_login(
    level: u8,
    id: &str,
    username: Option<&str>,
    password: Option<&[u8]>,
    props: &[u8],
) -> Vec<u8> {
    connect_as(level, id, true, 60, None, props, username, password)
}

/// CONNECT with everything a test may set.
#[allow(clippy::too_many_arguments)]
pub fn connect_as(
    level: u8,
    id: &str,
    clean: bool,
    keep_alive: u16,
    will: Option<RawWill<'_>>,
    props: &[u8],
    username: Option<&str>,
    password: Option<&[u8]>,
) -> Vec<u8> {
    let mut b = Vec::new();
    mqtt_str(b"MQTT", &mut b);
    b.push(level);
    let mut flags = if clean { 0x02 } else { 0 };
    if let Some(w) = will {
        flags |= 0x04 | (w.qos << 3) | if w.retain { 0x20 } else { 0 };
    }
    if username.is_some() {
        flags |= 0x80;
    }
    if password.is_some() {
        flags |= 0x40;
    }
    b.push(flags);
    b.extend_from_slice(&keep_alive.to_be_bytes());
    if level == 5 {
        varint(props.len(), &mut b);
        b.extend_from_slice(props);
    }
    mqtt_str(id.as_bytes(), &mut b);
    if let Some(w) = will {
        if level == 5 {
            b.push(0); // will properties
        }
        mqtt_str(w.topic.as_bytes(), &mut b);
        mqtt_str(w.payload, &mut b);
    }
    if let Some(u) = username {
        mqtt_str(u.as_bytes(), &mut b);
    }
    if let Some(p) = password {
        mqtt_str(p, &mut b);
    }
    packet(0x10, &b)
}

/// A 3.1.1 CONNECT with Clean Session, no will.
pub fn connect_v311(id: &str, keep_alive: u16) -> Vec<u8> {
    connect(4, id, true, keep_alive, None, &[])
}

/// A 5.0 CONNECT with Clean Start, no will, no properties.
pub fn connect_v5(id: &str, keep_alive: u16) -> Vec<u8> {
    connect(5, id, true, keep_alive, None, &[])
}

/// SUBSCRIBE to one filter with its options byte (QoS in bits 0-1; 5.0 adds No Local,
/// Retain As Published, Retain Handling); at level 5 with `props`.
pub fn subscribe(level: u8, pkid: u16, filter: &str, options: u8, props: &[u8]) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    if level == 5 {
        varint(props.len(), &mut b);
        b.extend_from_slice(props);
    }
    mqtt_str(filter.as_bytes(), &mut b);
    b.push(options);
    packet(0x82, &b)
}

/// PUBLISH; the packet id is written for QoS 1 and 2 only; at level 5 with `props`.
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
    mqtt_str(topic.as_bytes(), &mut b);
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

/// PUBLISH at QoS 0, not retained, without properties.
pub fn publish_qos0(level: u8, topic: &str, payload: &[u8]) -> Vec<u8> {
    publish(level, topic, 0, false, false, 0, &[], payload)
}

/// PUBACK, PUBREC, PUBREL, PUBCOMP (the first byte): just the packet id, which means
/// success in 5.0 too.
pub fn ack(first: u8, pkid: u16) -> Vec<u8> {
    packet(first, &pkid.to_be_bytes())
}

pub const PUBACK: u8 = 0x40;
pub const PUBREC: u8 = 0x50;
pub const PUBREL: u8 = 0x62;
pub const PUBCOMP: u8 = 0x70;
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];
pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
pub const PINGRESP: [u8; 2] = [0xD0, 0x00];
/// A 3.1.1 CONNACK accepting the connection without a session.
pub const CONNACK_V311_OK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

// MQTT 5 property identifiers (§2.2.2.2) the tests use.
pub const SUBSCRIPTION_ID: u8 = 0x0B;
pub const SESSION_EXPIRY: u8 = 0x11;
pub const ASSIGNED_ID: u8 = 0x12;
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
pub const REQUEST_PROBLEM_INFO: u8 = 0x17;
pub const REASON_STRING: u8 = 0x1F;
pub const RECEIVE_MAXIMUM: u8 = 0x21;
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub const TOPIC_ALIAS: u8 = 0x23;
pub const USER_PROPERTY: u8 = 0x26;
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;

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

// ------------------------------------------------------------------------------------
// Reading packets
// ------------------------------------------------------------------------------------

/// Reads a Variable Byte Integer: its value and how many bytes it took; `None` if `b`
/// ends before it does, or it runs past four bytes.
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

/// MQTT 5 properties as (identifier, value bytes) pairs.
pub type Props = Vec<(u8, Vec<u8>)>;

/// Reads a property block, its length first: the properties and the bytes the block
/// took. Panics on an identifier the spec does not define.
pub fn parse_props(b: &[u8]) -> (Props, usize) {
    let (len, mut at) = read_varint(b).expect("property length");
    let end = at + len;
    let mut out = Vec::new();
    while at < end {
        let id = b[at];
        at += 1;
        let str_len = |at: usize| 2 + u16::from_be_bytes([b[at], b[at + 1]]) as usize;
        let size = match id {
            // Byte
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            // Two Byte Integer
            0x13 | 0x21 | 0x22 | 0x23 => 2,
            // Four Byte Integer
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            // UTF-8 string, binary data
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => str_len(at),
            // UTF-8 string pair
            0x26 => {
                let k = str_len(at);
                k + str_len(at + k)
            }
            0x0B => read_varint(&b[at..]).expect("subscription identifier").1,
            other => panic!("unknown property {other:#04x} in {b:02x?}"),
        };
        out.push((id, b[at..at + size].to_vec()));
        at += size;
    }
    assert_eq!(at, end, "property block length: {b:02x?}");
    (out, end)
}

/// The value of property `id` among `props`, as a number (1, 2 or 4 bytes, or a
/// variable byte integer for a subscription identifier).
pub fn prop_num(props: &[(u8, Vec<u8>)], id: u8) -> Option<u64> {
    props.iter().find(|p| p.0 == id).map(|(id, v)| {
        if *id == SUBSCRIPTION_ID {
            return read_varint(v).expect("subscription identifier").0 as u64;
        }
        v.iter().fold(0u64, |n, &b| (n << 8) | b as u64)
    })
}

/// Whether `props` hold a Reason String.
pub fn has_reason_string(props: &[(u8, Vec<u8>)]) -> bool {
    props.iter().any(|p| p.0 == REASON_STRING)
}

/// One MQTT packet as read back: its first byte and the rest after the Remaining Length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    pub first: u8,
    pub body: Vec<u8>,
}

impl RawPacket {
    /// The packet type (1 CONNECT … 14 DISCONNECT).
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }

    /// PUBLISH: the DUP flag.
    pub fn dup(&self) -> bool {
        self.first & 0x08 != 0
    }

    /// PUBLISH: the QoS.
    pub fn qos(&self) -> u8 {
        (self.first >> 1) & 3
    }

    /// PUBLISH: the RETAIN flag.
    pub fn retain(&self) -> bool {
        self.first & 1 != 0
    }

    /// PUBLISH: the topic.
    pub fn topic(&self) -> String {
        let n = u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        String::from_utf8(self.body[2..2 + n].to_vec()).expect("a UTF-8 topic")
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

    /// PUBLISH: the properties (level 5) and the payload.
    pub fn publish_parts(&self, level: u8) -> (Props, Vec<u8>) {
        assert_eq!(self.kind(), 3, "not a PUBLISH: {self:02x?}");
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

    /// PUBLISH: the payload.
    pub fn payload(&self, level: u8) -> Vec<u8> {
        self.publish_parts(level).1
    }

    /// A 5.0 packet whose variable header is a reason code then properties (CONNACK
    /// after its flags, PUBACK/PUBREC/PUBREL/PUBCOMP after the packet id, DISCONNECT):
    /// the reason code and the properties, either of which may be left out (0, none).
    pub fn reason_and_props(&self) -> (u8, Props) {
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
        let (props, used) = parse_props(&self.body[at + 1..]);
        assert_eq!(
            at + 1 + used,
            self.body.len(),
            "trailing bytes: {self:02x?}"
        );
        (code, props)
    }

    /// A 5.0 CONNACK: session present, reason code, properties.
    pub fn v5_connack(&self) -> (bool, u8, Props) {
        assert_eq!(self.first, 0x20, "not a CONNACK: {self:02x?}");
        let (code, props) = self.reason_and_props();
        (self.body[0] & 1 == 1, code, props)
    }

    /// A 5.0 DISCONNECT from the server: its reason code and properties.
    pub fn v5_disconnect(&self) -> (u8, Props) {
        assert_eq!(self.first, 0xE0, "not a DISCONNECT: {self:02x?}");
        self.reason_and_props()
    }

    /// SUBACK: the properties (level 5) and the reason codes.
    pub fn suback(&self, level: u8) -> (Props, Vec<u8>) {
        assert_eq!(self.first, 0x90, "not a SUBACK: {self:02x?}");
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

/// Splits `bytes` into whole packets; panics if a partial one is left at the end.
pub fn split_packets(bytes: &[u8]) -> Vec<RawPacket> {
    let mut stream = PacketStream::default();
    stream.push(bytes);
    let out: Vec<RawPacket> = std::iter::from_fn(|| stream.next_packet()).collect();
    assert!(
        stream.pending() == 0,
        "a partial packet at the end: {bytes:02x?}"
    );
    out
}

/// Packets cut from a byte stream that arrives in pieces (a socket read at a time, or
/// WebSocket messages): bytes go in with `push`, whole packets come out of
/// `next_packet`, a packet split across pieces waits for the rest.
#[derive(Default)]
pub struct PacketStream {
    buf: Vec<u8>,
    at: usize,
}

impl PacketStream {
    pub fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole packet, if one has arrived.
    pub fn next_packet(&mut self) -> Option<RawPacket> {
        let rest = &self.buf[self.at..];
        if rest.len() < 2 {
            return None;
        }
        let (len, used) = read_varint(&rest[1..])?;
        let end = 1 + used + len;
        if rest.len() < end {
            return None;
        }
        let p = RawPacket {
            first: rest[0],
            body: rest[1 + used..end].to_vec(),
        };
        self.at += end;
        Some(p)
    }

    /// Bytes received that do not make a whole packet yet.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.at
    }
}

// ------------------------------------------------------------------------------------
// Raw connections
// ------------------------------------------------------------------------------------

/// A TCP connection with `WAIT` as its read and write timeouts and Nagle off.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// How a connection ended, seen from the client.
#[derive(Debug)]
pub struct Ended {
    /// Every byte read before the end.
    pub bytes: Vec<u8>,
    /// The end was a reset, not an orderly EOF.
    pub reset: bool,
}

/// MQTT over a raw socket: what a test does with a `TcpStream` (or a TLS stream over one)
/// to the broker.
pub trait RawMqtt: Read + Write + Sized {
    /// The transport, as the panics name it: `""` or `" over TLS"`.
    const OVER: &'static str;

    /// Sets the read timeout of the socket underneath.
    fn set_read_wait(&mut self, wait: Duration);

    /// Writes all of `bytes`.
    fn send(&mut self, bytes: &[u8]) {
        let over = Self::OVER;
        self.write_all(bytes)
            .and_then(|()| self.flush())
            .unwrap_or_else(|e| panic!("writing {} bytes{over}: {e}", bytes.len()));
    }

    /// Reads exactly `n` bytes; panics on EOF or timeout.
    fn read_bytes(&mut self, n: usize) -> Vec<u8> {
        let over = Self::OVER;
        let mut buf = vec![0; n];
        self.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("reading {n} bytes{over}: {e}"));
        buf
    }

    /// The next packet within `within`; `None` on EOF, reset or timeout.
    fn try_read_packet(&mut self, within: Duration) -> Option<RawPacket> {
        self.set_read_wait(within);
        let got = read_whole_packet(self);
        self.set_read_wait(WAIT);
        got
    }

    /// Reads until the server closes the connection (EOF, reset, or a TLS stream's
    /// socket ending without close_notify); panics if it is still open after `timeout`.
    fn read_until_closed(&mut self, timeout: Duration) -> Ended {
        let over = Self::OVER;
        let deadline = Instant::now() + timeout;
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the server did not close the connection{over} within {timeout:?}; read so far: {bytes:02x?}"
            );
            self.set_read_wait(left);
            match self.read(&mut buf) {
                Ok(0) => {
                    return Ended {
                        bytes,
                        reset: false,
                    };
                }
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
                    ) =>
                {
                    return Ended { bytes, reset: true };
                }
                Err(e) => panic!("read{over}: {e}"),
            }
        }
    }

    /// The next packet; panics on EOF or after `WAIT`.
    fn read_packet(&mut self) -> RawPacket {
        self.try_read_packet(WAIT)
            .unwrap_or_else(|| panic!("no packet within {WAIT:?}, or the connection ended"))
    }

    /// The packets the server sends before it closes the connection (within `WAIT`).
    fn packets_until_closed(&mut self) -> Vec<RawPacket> {
        split_packets(&self.read_until_closed(WAIT).bytes)
    }

    /// Asserts the server closes the connection without sending anything.
    fn expect_closed_silently(&mut self, what: &str) {
        let end = self.read_until_closed(WAIT);
        assert!(
            end.bytes.is_empty(),
            "{what}: expected a close without an answer, got {:02x?}",
            end.bytes
        );
    }

    /// Asserts the connection is still open, and silent, after `d`.
    fn expect_still_open(&mut self, d: Duration) {
        let over = Self::OVER;
        self.set_read_wait(d);
        let mut buf = [0u8; 64];
        match self.read(&mut buf) {
            Ok(0) => panic!("the server closed the connection{over}"),
            Ok(n) => panic!("unexpected bytes {:02x?}", &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read{over}: {e}"),
        }
        self.set_read_wait(WAIT);
    }
}

impl RawMqtt for TcpStream {
    const OVER: &'static str = "";

    fn set_read_wait(&mut self, wait: Duration) {
        self.set_read_timeout(Some(wait)).unwrap();
    }
}

/// One packet, under the socket's read timeout; `None` on EOF, reset or timeout.
pub fn read_whole_packet(s: &mut impl Read) -> Option<RawPacket> {
    let mut fill = |buf: &mut [u8]| match s.read_exact(buf) {
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
    };
    let mut first = [0u8; 1];
    fill(&mut first)?;
    let mut len_bytes = Vec::new();
    let len = loop {
        let mut b = [0u8; 1];
        fill(&mut b)?;
        len_bytes.push(b[0]);
        if let Some((len, _)) = read_varint(&len_bytes) {
            break len;
        }
        assert!(len_bytes.len() < 4, "bad remaining length {len_bytes:02x?}");
    };
    let mut body = vec![0u8; len];
    fill(&mut body)?;
    Some(RawPacket {
        first: first[0],
        body,
    })
}

/// Opens a connection, sends `connect` and reads the answer (a CONNACK, checked to be
/// one, accepting or not).
pub fn raw_connect(addr: SocketAddr, connect: &[u8]) -> (TcpStream, RawPacket) {
    let mut s = tcp(addr);
    let ack = send_connect(&mut s, connect);
    (s, ack)
}

/// Sends `connect` on `s` and reads the CONNACK (accepting or not).
pub fn send_connect(s: &mut TcpStream, connect: &[u8]) -> RawPacket {
    s.send(connect);
    let ack = s.read_packet();
    assert_eq!(ack.first, 0x20, "CONNACK expected: {ack:02x?}");
    ack
}

/// A raw 3.1.1 client: connected, its CONNACK read and returned.
pub fn raw_v311(
    addr: SocketAddr,
    id: &str,
    clean: bool,
    keep_alive: u16,
) -> (TcpStream, RawPacket) {
    raw_connect(addr, &connect(4, id, clean, keep_alive, None, &[]))
}

/// A raw 5.0 client (keep alive 60 s) with CONNECT properties `props`: connected, its
/// CONNACK read and returned.
pub fn raw_v5(addr: SocketAddr, id: &str, clean: bool, props: &[u8]) -> (TcpStream, RawPacket) {
    raw_connect(addr, &connect(5, id, clean, 60, None, props))
}

/// A raw 3.1.1 client with a clean session, checked to be accepted.
pub fn raw_v311_client(addr: SocketAddr, id: &str, keep_alive: u16) -> TcpStream {
    let (s, ack) = raw_connect(addr, &connect_v311(id, keep_alive));
    assert_eq!(split_packets(&CONNACK_V311_OK), [ack], "CONNACK for {id:?}");
    s
}

/// A raw 5.0 client with a clean start, checked to be accepted; returns the CONNACK's
/// properties.
pub fn raw_v5_client(addr: SocketAddr, id: &str, keep_alive: u16) -> (TcpStream, Props) {
    let (s, ack) = raw_connect(addr, &connect_v5(id, keep_alive));
    let (present, code, props) = ack.v5_connack();
    assert_eq!(
        (present, code),
        (false, 0),
        "CONNACK for {id:?}: {ack:02x?}"
    );
    (s, props)
}
