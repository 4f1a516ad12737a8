//! Packets and frames that do not line up with reads: MQTT packets split byte by byte
//! or batched in one write (TCP), split across WebSocket frames and messages or
//! several in one frame (MQTT 3.1.1 §6 / 5.0 §6: "MQTT Control Packets can be split
//! across WebSocket frames"), plus WebSocket framing errors (RFC 6455 §5.1-5.5).

mod support;

use std::time::Duration;

use support::*;

/// SUBSCRIBE (3.1.1) to one filter at QoS 0.
fn subscribe_v311(pkid: u16, filter: &str) -> Vec<u8> {
    subscribe(4, pkid, filter, 0, &[])
}

fn suback_v311(pkid: u16) -> Vec<u8> {
    let mut p = vec![0x90, 0x03];
    p.extend_from_slice(&pkid.to_be_bytes());
    p.push(0);
    p
}

/// Takes the one SUBACK out of `packets`: it may come after PUBLISHes on its
/// subscription (MQTT 3.1.1 §3.8.4 permits that) and after later answers (the broker
/// holds it until every shard knows the subscription).
fn take_suback(packets: &mut Vec<RawPacket>, pkid: u16) {
    let want = split_packets(&suback_v311(pkid)).remove(0);
    let n = packets.iter().filter(|p| **p == want).count();
    assert_eq!(n, 1, "one SUBACK {want:02x?} in {packets:02x?}");
    packets.retain(|p| *p != want);
}

/// A session, written byte by byte: CONNECT, SUBSCRIBE, PUBLISH to itself, PINGREQ.
#[test]
fn tcp_packets_split_byte_by_byte() {
    let broker = Broker::start(&[]);
    let mut s = tcp(broker.mqtt_addr());
    let mut bytes = connect_v311("trickle", 30);
    bytes.extend(subscribe_v311(7, "trickle/#"));
    bytes.extend(publish_qos0(4, "trickle/a", b"drip"));
    bytes.extend(PINGREQ);
    for b in bytes {
        s.send(&[b]);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(s.read_bytes(4), CONNACK_V311_OK);
    let mut got: Vec<RawPacket> = (0..3).map(|_| s.read_packet()).collect();
    take_suback(&mut got, 7);
    let mut want = split_packets(&publish_qos0(4, "trickle/a", b"drip"));
    want.extend(split_packets(&PINGRESP));
    assert_eq!(got, want);
}

/// The same session in one write.
#[test]
fn tcp_packets_batched_in_one_write() {
    let broker = Broker::start(&[]);
    let mut s = tcp(broker.mqtt_addr());
    let mut bytes = connect_v311("batch", 30);
    bytes.extend(subscribe_v311(9, "batch/#"));
    for i in 0..50 {
        bytes.extend(publish_qos0(4, "batch/a", format!("m{i}").as_bytes()));
    }
    bytes.extend(PINGREQ);
    s.send(&bytes);
    assert_eq!(s.read_bytes(4), CONNACK_V311_OK);
    let mut got: Vec<RawPacket> = (0..52).map(|_| s.read_packet()).collect();
    take_suback(&mut got, 9);
    let mut want = Vec::new();
    for i in 0..50 {
        want.extend(split_packets(&publish_qos0(
            4,
            "batch/a",
            format!("m{i}").as_bytes(),
        )));
    }
    want.extend(split_packets(&PINGRESP));
    assert_eq!(got, want);
}

/// Several packets in one binary message, and one packet split across two messages.
#[test]
fn ws_packets_not_aligned_with_messages() {
    let broker = Broker::start(&[]);
    let mut s = raw_ws(&broker);
    let mut first = connect_v311("ws-batch", 30);
    first.extend(subscribe_v311(3, "wsb/#"));
    let publish = publish_qos0(4, "wsb/x", b"split across messages");
    let (a, b) = publish.split_at(5);
    first.extend_from_slice(a);
    s.send(&ws_frame(0x2, &first));
    let mut second = b.to_vec();
    second.extend(PINGREQ);
    s.send(&ws_frame(0x2, &second));

    // The broker's answers, however they are framed.
    let mut answers = Vec::new();
    let want_len = 4 + 5 + publish.len() + 2;
    while answers.len() < want_len {
        let (head, payload) = read_ws_frame(&mut s);
        assert_eq!(head, 0x82, "binary frames only");
        answers.extend(payload);
    }
    let mut got = split_packets(&answers);
    take_suback(&mut got, 3);
    let mut want = split_packets(&CONNACK_V311_OK);
    want.extend(split_packets(&publish));
    want.extend(split_packets(&PINGRESP));
    assert_eq!(got, want);
}

/// One packet fragmented over a binary frame and continuation frames, with a ping
/// between the fragments (RFC 6455 §5.4: control frames may be injected).
#[test]
fn ws_packet_in_fragmented_message() {
    let broker = Broker::start(&[]);
    let mut s = raw_ws(&broker);
    let connect = connect_v311("ws-frag", 30);
    let (a, rest) = connect.split_at(3);
    let (b, c) = rest.split_at(4);
    // Binary without FIN, continuation without FIN, ping, final continuation.
    let mut f = ws_frame(0x2, a);
    f[0] &= 0x7F;
    s.send(&f);
    let mut f = ws_frame(0x0, b);
    f[0] &= 0x7F;
    s.send(&f);
    s.send(&ws_frame(0x9, b"mid"));
    s.send(&ws_frame(0x0, c));
    assert_eq!(read_ws_frame(&mut s), (0x8A, b"mid".to_vec()), "pong");
    assert_eq!(read_ws_frame(&mut s), (0x82, CONNACK_V311_OK.to_vec()));
}

/// RFC 6455 §5.1: a client frame must be masked; an unmasked one is a protocol error.
#[test]
fn ws_unmasked_client_frame_is_closed_with_1002() {
    let broker = Broker::start(&[]);
    let mut s = raw_ws(&broker);
    let mut f = vec![0x82, PINGREQ.len() as u8];
    f.extend(PINGREQ);
    s.send(&f);
    let end = s.read_until_closed(WAIT);
    assert_eq!(end.bytes, [0x88, 0x02, 0x03, 0xEA]);
    assert_eq!(broker.metric("ringmq_disconnected_protocol_error"), 1);
}

/// RFC 6455 §5.5: control frames carry at most 125 bytes and are not fragmented.
#[test]
fn ws_oversized_control_frame_is_closed_with_1002() {
    let broker = Broker::start(&[]);
    let mut s = raw_ws(&broker);
    s.send(&ws_frame(0x9, &[0u8; 126]));
    let end = s.read_until_closed(WAIT);
    assert_eq!(end.bytes, [0x88, 0x02, 0x03, 0xEA]);
}

/// RFC 6455 §5.2: an unknown opcode is a protocol error.
#[test]
fn ws_reserved_opcode_is_closed_with_1002() {
    let broker = Broker::start(&[]);
    let mut s = raw_ws(&broker);
    s.send(&ws_frame(0x3, b"x"));
    let end = s.read_until_closed(WAIT);
    assert_eq!(end.bytes, [0x88, 0x02, 0x03, 0xEA]);
}

/// An MQTT 5 client over WebSocket that sends a packet over the maximum packet size
/// hears DISCONNECT 0x95 in a binary message, then a close frame.
#[test]
fn ws_v5_packet_over_max_packet_size_gets_disconnect_0x95() {
    let broker = Broker::start(&["--max-packet-size", "1024"]);
    let mut s = raw_ws(&broker);
    s.send(&ws_frame(0x2, &connect_v5("ws-big", 30)));
    let (head, connack) = read_ws_frame(&mut s);
    assert_eq!(head, 0x82);
    let packets = split_packets(&connack);
    assert_eq!(packets[0].v5_connack().1, 0);
    s.send(&ws_frame(0x2, &publish_qos0(5, "big", &[0u8; 2000])));
    let (head, payload) = read_ws_frame(&mut s);
    assert_eq!(head, 0x82, "the DISCONNECT in a binary message");
    let packets = split_packets(&payload);
    assert_eq!(packets[0].v5_disconnect().0, 0x95);
    let (head, payload) = read_ws_frame(&mut s);
    assert_eq!(head, 0x88, "then a close frame");
    assert_eq!(payload.len(), 2);
    let end = s.read_until_closed(WAIT);
    assert!(end.bytes.is_empty(), "{:02x?}", end.bytes);
}

/// A short HTTP request on the MQTT port: its first byte reads as a PUBACK with
/// reserved flags (MQTT-2.2.2-2: invalid flags close the connection), so the broker
/// closes it as a protocol error without waiting for the remaining length it declares.
#[test]
fn short_http_request_on_the_mqtt_port_is_a_protocol_error() {
    let broker = Broker::start(&[]);
    let mut s = tcp(broker.mqtt_addr());
    s.send(b"GET / HTTP/1.0\r\n\r\n");
    s.expect_closed_silently("short GET");
    assert_eq!(broker.metric("ringmq_disconnected_protocol_error"), 1);
    assert_eq!(broker.metric("ringmq_disconnected_timeout"), 0);
}
