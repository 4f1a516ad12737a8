//! Bad input on the MQTT/TCP port and the connection limit. Each bad client gets the
//! answer the specs give (a CONNACK refusal, a DISCONNECT with a reason code, or just
//! the close), only its own connection ends, a healthy rumqttc client keeps working,
//! and the counter for it moves by exactly one.

mod common;
#[path = "e2e_support.rs"]
mod support;

use std::io::Write;
use std::net::TcpStream;

use common::Broker;
use support::*;

/// Starts a broker with `args`, a healthy client, runs `bad` on a fresh connection to
/// the MQTT port, then checks the healthy client still works, that `counter` grew by
/// exactly one, and that only the healthy connection is left.
fn bad_tcp_input(args: &[&str], counter: &str, bad: impl FnOnce(&mut TcpStream)) {
    let broker = Broker::start(args);
    let rt = runtime();
    let mut healthy = rt.block_on(Healthy::start(v4_tcp("healthy", broker.mqtt_addr())));
    let before = broker.metric(counter);
    let mut s = tcp(broker.mqtt_addr());
    bad(&mut s);
    drop(s);
    assert_eq!(broker.metric(counter), before + 1, "{counter}");
    rt.block_on(healthy.check());
    broker.wait_for_metric("ringmq_connections_current", WAIT, |v| v == 1);
    assert_eq!(broker.metric("ringmq_disconnected_timeout"), 0);
}

#[test]
fn garbage_bytes_close_the_connection() {
    bad_tcp_input(&[], "ringmq_disconnected_protocol_error", |s| {
        // First byte 0x00: packet type 0 is reserved (MQTT 3.1.1 §2.2.1, 5.0 §2.1.2).
        s.write_all(b"\x00\x05garbage\xff\xfe").unwrap();
        expect_closed_silently(s, "garbage");
    });
}

#[test]
fn http_get_on_the_mqtt_port_closes_the_connection() {
    bad_tcp_input(&[], "ringmq_disconnected_protocol_error", |s| {
        s.write_all(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: e2e-test/1.0\r\n\
              Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n",
        )
        .unwrap();
        expect_closed_silently(s, "HTTP GET");
    });
}

/// MQTT-3.1.0-1: the first packet must be CONNECT; anything else closes the connection
/// (without an answer: there is no session to answer in).
#[test]
fn a_first_packet_other_than_connect_closes_the_connection() {
    bad_tcp_input(&[], "ringmq_disconnected_protocol_error", |s| {
        s.write_all(&publish_qos0("a/b", b"no connect first", false))
            .unwrap();
        expect_closed_silently(s, "PUBLISH first");
    });
}

#[test]
fn a_pingreq_before_connect_closes_the_connection() {
    bad_tcp_input(&[], "ringmq_disconnected_protocol_error", |s| {
        s.write_all(&PINGREQ).unwrap();
        expect_closed_silently(s, "PINGREQ first");
    });
}

/// MQTT-3.1.2-2: an unsupported protocol level gets CONNACK return code 0x01
/// (unacceptable protocol version), then the close.
#[test]
fn connect_with_protocol_level_6_gets_connack_0x01() {
    bad_tcp_input(&[], "ringmq_disconnected_protocol_error", |s| {
        s.write_all(&connect_level(6, "level-6", 30)).unwrap();
        let end = read_until_closed(s, WAIT);
        assert_eq!(
            end.bytes,
            [0x20, 0x02, 0x00, 0x01],
            "CONNACK 0x01 then close"
        );
    });
}

/// MQTT 5 §3.1.4, §4.13: a packet over the Maximum Packet Size the server announced
/// in its CONNACK gets DISCONNECT 0x95 (packet too large), then the close.
#[test]
fn v5_packet_over_max_packet_size_gets_disconnect_0x95() {
    let broker = Broker::start(&["--max-packet-size", "1024"]);
    let rt = runtime();
    let mut healthy = rt.block_on(Healthy::start(v4_tcp("healthy", broker.mqtt_addr())));
    let before = broker.metric("ringmq_disconnected_protocol_error");

    let (mut s, props) = raw_v5_client(broker.mqtt_addr(), "too-big-5", 30);
    assert!(
        props.contains(&(0x27, 1024u32.to_be_bytes().to_vec())),
        "CONNACK announces Maximum Packet Size 1024: {props:02x?}"
    );
    // Exactly at the limit is fine: 1024 bytes in all (3-byte fixed header).
    let at_limit = publish_qos0("big", &[7u8; 1024 - 3 - 5 - 1], true);
    assert_eq!(at_limit.len(), 1024);
    s.write_all(&at_limit).unwrap();
    s.write_all(&PINGREQ).unwrap();
    assert_eq!(read_n(&mut s, 2), PINGRESP, "still connected at the limit");

    s.write_all(&publish_qos0("big", &[7u8; 2000], true))
        .unwrap();
    let end = read_until_closed(&mut s, WAIT);
    let packets = split_packets(&end.bytes);
    assert_eq!(
        packets.len(),
        1,
        "one DISCONNECT, then the close: {packets:02x?}"
    );
    let (reason, _) = parse_v5_disconnect(&packets[0]);
    assert_eq!(reason, 0x95, "packet too large");

    assert_eq!(
        broker.metric("ringmq_disconnected_protocol_error"),
        before + 1
    );
    rt.block_on(healthy.check());
    broker.wait_for_metric("ringmq_connections_current", WAIT, |v| v == 1);
}

/// MQTT 3.1.1 has no DISCONNECT from the server: a packet over the limit just closes.
#[test]
fn v311_packet_over_max_packet_size_closes_the_connection() {
    bad_tcp_input(
        &["--max-packet-size", "1024"],
        "ringmq_disconnected_protocol_error",
        |s| {
            s.write_all(&connect_v311("too-big-4", 30)).unwrap();
            assert_eq!(read_n(s, 4), CONNACK_V311_OK);
            s.write_all(&publish_qos0("big", &[1u8; 1500], false))
                .unwrap();
            expect_closed_silently(s, "packet over the limit");
        },
    );
}

/// A CONNECT that is itself over the limit: refused by the header alone.
#[test]
fn v5_connect_over_max_packet_size_is_refused() {
    bad_tcp_input(
        &["--max-packet-size", "1024"],
        "ringmq_disconnected_protocol_error",
        |s| {
            let id = "x".repeat(1500);
            s.write_all(&connect_v5(&id, 30)).unwrap();
            let end = read_until_closed(s, WAIT);
            // MQTT 5 §3.2.2.2: CONNACK 0x95 (packet too large), then the close.
            let packets = split_packets(&end.bytes);
            assert_eq!(packets.len(), 1, "{packets:02x?}");
            let (_, code, _) = parse_v5_connack(&packets[0]);
            assert_eq!(code, 0x95, "{packets:02x?}");
        },
    );
}

/// `--max-connections 2`: the third client is refused with CONNACK 0x03 (3.1.1, server
/// unavailable) or 0x97 (5.0, quota exceeded) and closed; the first two keep working,
/// and once one leaves, a new client gets in.
#[test]
fn max_connections_refuses_the_third_client() {
    let broker = Broker::start(&["--max-connections", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let (mut a, mut b) = rt.block_on(async {
        let mut a = V4::connect(v4_tcp("first", addr)).await;
        a.subscribe_ok("limit/#", 1).await;
        let b = V5::connect(v5_tcp("second", addr)).await;
        (a, b)
    });
    assert_eq!(broker.metric("ringmq_connections_current"), 2);

    let mut s = tcp(addr);
    s.write_all(&connect_v311("third", 30)).unwrap();
    let end = read_until_closed(&mut s, WAIT);
    assert_eq!(
        end.bytes,
        [0x20, 0x02, 0x00, 0x03],
        "3.1.1: server unavailable"
    );

    let mut s = tcp(addr);
    s.write_all(&connect_v5("fourth", 30)).unwrap();
    let end = read_until_closed(&mut s, WAIT);
    let packets = split_packets(&end.bytes);
    assert_eq!(packets.len(), 1, "{packets:02x?}");
    let (present, code, _) = parse_v5_connack(&packets[0]);
    assert!(!present);
    assert_eq!(code, 0x97, "5.0: quota exceeded");

    // rumqttc sees the refusal too.
    let refused = rt.block_on(V4::try_connect(v4_tcp("fifth", addr)));
    match refused {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::ServiceUnavailable)
        }
        Err(e) => panic!("fifth: {e:?}"),
        Ok(_) => panic!("fifth: accepted over the limit"),
    }
    assert_eq!(broker.metric("ringmq_connections_refused_limit"), 3);

    rt.block_on(async {
        b.publish("limit/x", 1, b"still here").await;
        assert_eq!(a.next_publish().await, got("limit/x", 1, "still here"));
    });
    broker.wait_for_metric("ringmq_connections_current", WAIT, |v| v == 2);

    // The second leaves; a new client fits again.
    rt.block_on(async {
        b.client.disconnect().await.unwrap();
        let _ = b.next_error().await;
    });
    drop(b);
    broker.wait_for_metric("ringmq_connections_current", WAIT, |v| v == 1);
    let mut s = raw_v311_client(addr, "sixth", 30);
    s.write_all(&PINGREQ).unwrap();
    assert_eq!(read_n(&mut s, 2), PINGRESP);
    assert_eq!(broker.metric("ringmq_connections_refused_limit"), 3);
    rt.block_on(async {
        a.client
            .publish("limit/y", rumqttc::QoS::AtLeastOnce, false, "again")
            .await
            .unwrap();
        assert_eq!(a.next_publish().await, got("limit/y", 1, "again"));
    });
}

/// MQTT 5 §3.1.4: a malformed CONNECT (here an unknown property identifier) gets a
/// CONNACK with reason 0x81 (malformed packet) in 5.0 framing, then the close.
#[test]
fn v5_connect_with_an_unknown_property_gets_connack_0x81() {
    bad_tcp_input(&[], "ringmq_disconnected_protocol_error", |s| {
        s.write_all(&connect_v5_with("bad-prop", 30, &[0x7F, 0x00]))
            .unwrap();
        let end = read_until_closed(s, WAIT);
        let packets = split_packets(&end.bytes);
        assert_eq!(packets.len(), 1, "{packets:02x?}");
        let (present, code, _) = parse_v5_connack(&packets[0]);
        assert!(!present);
        assert_eq!(code, 0x81, "malformed packet");
    });
}

/// MQTT-3.1.3-8: 3.1.1, zero-length client id with Clean Session 0: CONNACK 0x02
/// (identifier rejected), then the close.
#[test]
fn v311_empty_client_id_without_clean_session_gets_connack_0x02() {
    let broker = Broker::start(&[]);
    let mut s = tcp(broker.mqtt_addr());
    let mut b = Vec::new();
    mqtt_str(b"MQTT", &mut b);
    b.extend_from_slice(&[4, 0x00, 0, 30]); // level 4, Clean Session 0, keepalive 30
    mqtt_str(b"", &mut b);
    s.write_all(&packet(0x10, &b)).unwrap();
    let end = read_until_closed(&mut s, WAIT);
    assert_eq!(end.bytes, [0x20, 0x02, 0x00, 0x02]);
}

/// MQTT-3.1.3-6/7 and 5.0 §3.2.2.3.7: an empty client id with a clean session is
/// accepted; MQTT 5 clients are told the id the server assigned.
#[test]
fn empty_client_id_is_assigned_one() {
    let broker = Broker::start(&[]);
    let mut s = raw_v311_client(broker.mqtt_addr(), "", 30);
    s.write_all(&PINGREQ).unwrap();
    assert_eq!(read_n(&mut s, 2), PINGRESP);
    let (_, props) = raw_v5_client(broker.mqtt_addr(), "", 30);
    let assigned: Vec<_> = props.iter().filter(|(id, _)| *id == 0x12).collect();
    assert_eq!(
        assigned.len(),
        1,
        "Assigned Client Identifier in {props:02x?}"
    );
    assert!(
        assigned[0].1.len() > 2,
        "a non-empty id: {:02x?}",
        assigned[0].1
    );
}

/// MQTT-3.1.0-2: a second CONNECT is a protocol error: 5.0 clients hear DISCONNECT
/// 0x82, then the close.
#[test]
fn a_second_connect_is_a_protocol_error() {
    let broker = Broker::start(&[]);
    let (mut s, _) = raw_v5_client(broker.mqtt_addr(), "twice", 30);
    s.write_all(&connect_v5("twice", 30)).unwrap();
    let end = read_until_closed(&mut s, WAIT);
    let packets = split_packets(&end.bytes);
    assert_eq!(packets.len(), 1, "{packets:02x?}");
    assert_eq!(parse_v5_disconnect(&packets[0]).0, 0x82);
    assert_eq!(broker.metric("ringmq_disconnected_protocol_error"), 1);
}

/// MQTT-3.3.2-2: a topic name must not hold wildcards: 5.0 DISCONNECT 0x90 (topic name
/// invalid), 3.1.1 just the close.
#[test]
fn publish_to_a_wildcard_topic_is_a_protocol_error() {
    let broker = Broker::start(&[]);
    let rt = runtime();
    let mut healthy = rt.block_on(Healthy::start(v4_tcp("healthy", broker.mqtt_addr())));
    let (mut s, _) = raw_v5_client(broker.mqtt_addr(), "wild-5", 30);
    s.write_all(&publish_qos0("health/+", b"x", true)).unwrap();
    let end = read_until_closed(&mut s, WAIT);
    let packets = split_packets(&end.bytes);
    assert_eq!(packets.len(), 1, "{packets:02x?}");
    assert_eq!(parse_v5_disconnect(&packets[0]).0, 0x90);

    let mut s = raw_v311_client(broker.mqtt_addr(), "wild-4", 30);
    s.write_all(&publish_qos0("health/#", b"x", false)).unwrap();
    expect_closed_silently(&mut s, "3.1.1 wildcard topic");
    assert_eq!(broker.metric("ringmq_disconnected_protocol_error"), 2);
    rt.block_on(healthy.check());
}

/// A SUBSCRIBE whose filter misplaces a wildcard (MQTT 3.1.1 §4.7.1, 5.0 §4.7.1)
/// breaks the protocol (3.1.1 §4.8: the connection is closed; 5.0 §4.13: DISCONNECT
/// with a reason code, malformed packet, protocol error or topic filter invalid);
/// other clients keep working.
#[test]
fn invalid_topic_filter_closes_the_connection() {
    let broker = Broker::start(&[]);
    let rt = runtime();
    let mut healthy = rt.block_on(Healthy::start(v4_tcp("healthy", broker.mqtt_addr())));

    let mut s4 = raw_v311_client(broker.mqtt_addr(), "badfilter-4", 30);
    s4.write_all(&subscribe(5, "bad/#/filter", 1, false))
        .unwrap();
    expect_closed_silently(&mut s4, "3.1.1 bad filter");

    let (mut s5, _) = raw_v5_client(broker.mqtt_addr(), "badfilter-5", 30);
    s5.write_all(&subscribe(6, "bad+/filter", 1, true)).unwrap();
    let end = read_until_closed(&mut s5, WAIT);
    let packets = split_packets(&end.bytes);
    assert_eq!(packets.len(), 1, "{packets:02x?}");
    let (reason, _) = parse_v5_disconnect(&packets[0]);
    assert!([0x81, 0x82, 0x8F].contains(&reason), "reason {reason:#04x}");

    assert_eq!(broker.metric("ringmq_disconnected_protocol_error"), 2);
    rt.block_on(healthy.check());
}
