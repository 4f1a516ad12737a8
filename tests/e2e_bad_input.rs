//! Bad input on the MQTT/TCP port and the connection limit. Each bad client gets the
//! answer the specs give (a CONNACK refusal, a DISCONNECT with a reason code, or just
//! the close), only its own connection ends, a healthy rumqttc client keeps working,
//! and the counter for it moves by exactly one.

mod support;

use std::net::TcpStream;

use support::*;

/// Starts a broker with `args`, a healthy client, runs `bad` on a fresh connection to
/// the MQTT port, then checks the healthy client still works, that `counter` grew by
/// exactly one, and that only the healthy connection is left.
fn bad_tcp_input(args: &[&str], counter: &str, bad: impl FnOnce(&mut TcpStream)) {
    let broker = Broker::start(args);
    let rt = runtime();
    let mut healthy = rt.block_on(Healthy::start(v311::options("healthy", broker.mqtt_addr())));
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
        s.send(b"\x00\x05garbage\xff\xfe");
        s.expect_closed_silently("garbage");
    });
}

#[test]
fn http_get_on_the_mqtt_port_closes_the_connection() {
    bad_tcp_input(&[], "ringmq_disconnected_protocol_error", |s| {
        s.send(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: e2e-test/1.0\r\n\
              Accept: */*\r\nAccept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n",
        );
        s.expect_closed_silently("HTTP GET");
    });
}

/// MQTT-3.1.0-1: the first packet must be CONNECT; anything else closes the connection
/// (without an answer: there is no session to answer in).
#[test]
fn a_first_packet_other_than_connect_closes_the_connection() {
    bad_tcp_input(&[], "ringmq_disconnected_protocol_error", |s| {
        s.send(&publish_qos0(4, "a/b", b"no connect first"));
        s.expect_closed_silently("PUBLISH first");
    });
}

#[test]
fn a_pingreq_before_connect_closes_the_connection() {
    bad_tcp_input(&[], "ringmq_disconnected_protocol_error", |s| {
        s.send(&PINGREQ);
        s.expect_closed_silently("PINGREQ first");
    });
}

/// MQTT-3.1.2-2: an unsupported protocol level gets CONNACK return code 0x01
/// (unacceptable protocol version), then the close.
#[test]
fn connect_with_protocol_level_6_gets_connack_0x01() {
    bad_tcp_input(&[], "ringmq_disconnected_protocol_error", |s| {
        s.send(&connect(6, "level-6", true, 30, None, &[]));
        let end = s.read_until_closed(WAIT);
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
    let mut healthy = rt.block_on(Healthy::start(v311::options("healthy", broker.mqtt_addr())));
    let before = broker.metric("ringmq_disconnected_protocol_error");

    let (mut s, props) = raw_v5_client(broker.mqtt_addr(), "too-big-5", 30);
    assert!(
        props.contains(&(MAXIMUM_PACKET_SIZE, 1024u32.to_be_bytes().to_vec())),
        "CONNACK announces Maximum Packet Size 1024: {props:02x?}"
    );
    // Exactly at the limit is fine: 1024 bytes in all (3-byte fixed header).
    let at_limit = publish_qos0(5, "big", &[7u8; 1024 - 3 - 5 - 1]);
    assert_eq!(at_limit.len(), 1024);
    s.send(&at_limit);
    s.send(&PINGREQ);
    assert_eq!(s.read_bytes(2), PINGRESP, "still connected at the limit");

    s.send(&publish_qos0(5, "big", &[7u8; 2000]));
    let end = s.read_until_closed(WAIT);
    let packets = split_packets(&end.bytes);
    assert_eq!(
        packets.len(),
        1,
        "one DISCONNECT, then the close: {packets:02x?}"
    );
    let (reason, _) = packets[0].v5_disconnect();
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
            s.send(&connect_v311("too-big-4", 30));
            assert_eq!(s.read_bytes(4), CONNACK_V311_OK);
            s.send(&publish_qos0(4, "big", &[1u8; 1500]));
            s.expect_closed_silently("packet over the limit");
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
            s.send(&connect_v5(&id, 30));
            let end = s.read_until_closed(WAIT);
            // MQTT 5 §3.2.2.2: CONNACK 0x95 (packet too large), then the close.
            let packets = split_packets(&end.bytes);
            assert_eq!(packets.len(), 1, "{packets:02x?}");
            let (_, code, _) = packets[0].v5_connack();
            assert_eq!(code, 0x95, "{packets:02x?}");
        },
    );
}

/// `--max-connections 2`: the third client is refused with CONNACK 0x03 (3.1.1, server
/// unavailable) or 0x97 (5.0, quota exceeded, with a Reason String) and closed; the first two keep working,
/// and once one leaves, a new client gets in.
#[test]
fn max_connections_refuses_the_third_client() {
    let broker = Broker::start(&["--max-connections", "2"]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    let (mut a, mut b) = rt.block_on(async {
        let mut a = V4::connect(v311::options("first", addr)).await;
        a.subscribe_ok("limit/#", 1).await;
        let b = V5::connect(v5::options("second", addr)).await;
        (a, b)
    });
    assert_eq!(broker.metric("ringmq_connections_current"), 2);

    let mut s = tcp(addr);
    s.send(&connect_v311("third", 30));
    let end = s.read_until_closed(WAIT);
    assert_eq!(
        end.bytes,
        [0x20, 0x02, 0x00, 0x03],
        "3.1.1: server unavailable"
    );

    let mut s = tcp(addr);
    s.send(&connect_v5("fourth", 30));
    let end = s.read_until_closed(WAIT);
    let packets = split_packets(&end.bytes);
    assert_eq!(packets.len(), 1, "{packets:02x?}");
    let (present, code, props) = packets[0].v5_connack();
    assert!(!present);
    assert_eq!(code, 0x97, "5.0: quota exceeded");
    assert!(has_reason_string(&props), "{props:02x?}");

    // rumqttc sees the refusal too.
    let refused = rt.block_on(V4::try_connect(v311::options("fifth", addr)));
    match refused {
        Err((_, rumqttc::ConnectionError::ConnectionRefused(code))) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::ServiceUnavailable)
        }
        Err((_, e)) => panic!("fifth: {e:?}"),
        Ok(_) => panic!("fifth: accepted over the limit"),
    }
    assert_eq!(broker.metric("ringmq_connections_refused_limit"), 3);

    rt.block_on(async {
        b.publish("limit/x", 1, b"still here").await;
        assert_eq!(a.next_publish().await, got("limit/x", 1, "still here"));
    });
    broker.wait_for_metric("ringmq_connections_current", WAIT, |v| v == 2);

    // The second leaves; a new client fits again.
    rt.block_on(b.disconnect());
    broker.wait_for_metric("ringmq_connections_current", WAIT, |v| v == 1);
    let mut s = raw_v311_client(addr, "sixth", 30);
    s.send(&PINGREQ);
    assert_eq!(s.read_bytes(2), PINGRESP);
    assert_eq!(broker.metric("ringmq_connections_refused_limit"), 3);
    rt.block_on(async {
        a.publish("limit/y", 1, b"again").await;
        assert_eq!(a.next_publish().await, got("limit/y", 1, "again"));
    });
}

/// MQTT 5 §3.1.4: a malformed CONNECT (here an unknown property identifier) gets a
/// CONNACK with reason 0x81 (malformed packet) in 5.0 framing, then the close.
#[test]
fn v5_connect_with_an_unknown_property_gets_connack_0x81() {
    bad_tcp_input(&[], "ringmq_disconnected_protocol_error", |s| {
        s.send(&connect(5, "bad-prop", true, 30, None, &[0x7F, 0x00]));
        let end = s.read_until_closed(WAIT);
        let packets = split_packets(&end.bytes);
        assert_eq!(packets.len(), 1, "{packets:02x?}");
        let (present, code, _) = packets[0].v5_connack();
        assert!(!present);
        assert_eq!(code, 0x81, "malformed packet");
    });
}

/// MQTT-3.1.0-2: a second CONNECT is a protocol error: 5.0 clients hear DISCONNECT
/// 0x82 with a Reason String (MQTT-4.13.2-1), then the close.
#[test]
fn a_second_connect_is_a_protocol_error() {
    let broker = Broker::start(&[]);
    let (mut s, _) = raw_v5_client(broker.mqtt_addr(), "twice", 30);
    s.send(&connect_v5("twice", 30));
    let end = s.read_until_closed(WAIT);
    let packets = split_packets(&end.bytes);
    assert_eq!(packets.len(), 1, "{packets:02x?}");
    let (reason, props) = packets[0].v5_disconnect();
    assert_eq!(reason, 0x82);
    assert!(has_reason_string(&props), "{props:02x?}");
    assert_eq!(broker.metric("ringmq_disconnected_protocol_error"), 1);
}

/// MQTT-3.3.2-2: a topic name must not hold wildcards: 5.0 DISCONNECT 0x90 (topic name
/// invalid), 3.1.1 just the close.
#[test]
fn publish_to_a_wildcard_topic_is_a_protocol_error() {
    let broker = Broker::start(&[]);
    let rt = runtime();
    let mut healthy = rt.block_on(Healthy::start(v311::options("healthy", broker.mqtt_addr())));
    let (mut s, _) = raw_v5_client(broker.mqtt_addr(), "wild-5", 30);
    s.send(&publish_qos0(5, "health/+", b"x"));
    let end = s.read_until_closed(WAIT);
    let packets = split_packets(&end.bytes);
    assert_eq!(packets.len(), 1, "{packets:02x?}");
    assert_eq!(packets[0].v5_disconnect().0, 0x90);

    let mut s = raw_v311_client(broker.mqtt_addr(), "wild-4", 30);
    s.send(&publish_qos0(4, "health/#", b"x"));
    s.expect_closed_silently("3.1.1 wildcard topic");
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
    let mut healthy = rt.block_on(Healthy::start(v311::options("healthy", broker.mqtt_addr())));

    let mut s4 = raw_v311_client(broker.mqtt_addr(), "badfilter-4", 30);
    s4.send(&subscribe(4, 5, "bad/#/filter", 1, &[]));
    s4.expect_closed_silently("3.1.1 bad filter");

    let (mut s5, _) = raw_v5_client(broker.mqtt_addr(), "badfilter-5", 30);
    s5.send(&subscribe(5, 6, "bad+/filter", 1, &[]));
    let end = s5.read_until_closed(WAIT);
    let packets = split_packets(&end.bytes);
    assert_eq!(packets.len(), 1, "{packets:02x?}");
    let (reason, _) = packets[0].v5_disconnect();
    assert!([0x81, 0x82, 0x8F].contains(&reason), "reason {reason:#04x}");

    assert_eq!(broker.metric("ringmq_disconnected_protocol_error"), 2);
    rt.block_on(healthy.check());
}
