//! MQTT over WebSocket: rumqttc over `ws://` talking to TCP clients both ways, the
//! upgrade answer read by hand, ping/pong and the close handshake with tungstenite, and
//! bad WebSocket input (no `mqtt` subprotocol, wrong path, a text frame, a frame larger
//! than the maximum message), each of which ends only its own connection while a
//! healthy client keeps working.

mod support;

use support::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn ws_subscriber_receives_from_tcp_publisher() {
    let broker = Broker::start(&[]);
    let rt = runtime();
    rt.block_on(async {
        let mut sub4 = V4::connect(v311::ws_options("ws-sub4", &broker.ws_url())).await;
        sub4.subscribe_ok("ws/in/#", 1).await;
        let mut sub5 = V5::connect(v5::ws_options("ws-sub5", &broker.ws_url())).await;
        sub5.subscribe_ok("ws/in/+", 0).await;
        let mut publisher = V4::connect(v311::options("tcp-pub", broker.mqtt_addr())).await;
        let big = vec![0xA5u8; 5000]; // several TCP segments, one WebSocket frame
        publisher.publish("ws/in/a", 1, b"one").await;
        publisher.publish("ws/in/b", 0, b"two").await;
        publisher.publish("ws/in/c", 1, &big).await;
        publisher.publish("ws/in/end", 1, b"end").await;

        let mut want = vec![got("ws/in/a", 1, "one"), got("ws/in/b", 0, "two")];
        let mut big_msg = got("ws/in/c", 1, "");
        big_msg.payload = big.clone();
        want.push(big_msg);
        assert_eq!(sub4.publishes_until("end").await, want);
        for w in &mut want {
            w.qos = 0;
        }
        assert_eq!(sub5.publishes_until("end").await, want);
    });
}

#[test]
fn tcp_subscriber_receives_from_ws_publisher() {
    let broker = Broker::start(&[]);
    let rt = runtime();
    rt.block_on(async {
        let mut sub = V4::connect(v311::options("tcp-sub", broker.mqtt_addr())).await;
        sub.subscribe_ok("from/ws/#", 1).await;
        let mut pub4 = V4::connect(v311::ws_options("ws-pub4", &broker.ws_url())).await;
        let mut pub5 = V5::connect(v5::ws_options("ws-pub5", &broker.ws_url())).await;
        let mut want = Vec::new();
        for i in 0..10u8 {
            let qos = i % 2;
            let p = format!("v4-{i}");
            pub4.publish("from/ws/v4", qos, p.as_bytes()).await;
            want.push(got("from/ws/v4", qos, &p));
            let p = format!("v5-{i}");
            pub5.publish("from/ws/v5", qos, p.as_bytes()).await;
            want.push(got("from/ws/v5", qos, &p));
        }
        // Each publisher ends its own sequence: messages from different publishers
        // (maybe on different shards) have no order between them.
        pub4.publish("from/ws/v4", 1, b"end").await;
        pub5.publish("from/ws/v5", 1, b"end").await;
        let mut got = Vec::new();
        let mut ends = 0;
        while ends < 2 {
            let g = sub.next_publish().await;
            if g.payload == b"end" {
                ends += 1;
            } else {
                got.push(g);
            }
        }
        // Order holds per publisher (MQTT 3.1.1 §4.6); the two may interleave.
        for topic in ["from/ws/v4", "from/ws/v5"] {
            let of = |v: &[Got]| {
                v.iter()
                    .filter(|g| g.topic == topic)
                    .cloned()
                    .collect::<Vec<_>>()
            };
            assert_eq!(of(&got), of(&want), "{topic}");
        }
        assert_eq!(got.len(), want.len(), "{got:?}");
    });
}

/// The upgrade answer, read by hand: 101, the accept key of RFC 6455 §1.3, and the
/// `mqtt` subprotocol selected (MQTT 3.1.1 §6, 5.0 §6); then MQTT flows in binary
/// frames.
#[test]
fn ws_upgrade_selects_the_mqtt_subprotocol() {
    let broker = Broker::start(&[]);
    let addr = broker.ws_addr();
    let path = broker.ws_path();
    let mut s = tcp(addr);
    s.send(ws_request(addr, path, Some("mqtt")).as_bytes());
    let (status, headers) = read_http_head(&mut s);
    assert_eq!(status, 101, "{headers:?}");
    assert_eq!(
        header(&headers, "upgrade").map(str::to_ascii_lowercase),
        Some("websocket".into())
    );
    assert_eq!(
        header(&headers, "connection").map(str::to_ascii_lowercase),
        Some("upgrade".into())
    );
    assert_eq!(header(&headers, "sec-websocket-accept"), Some(WS_ACCEPT));
    assert_eq!(header(&headers, "sec-websocket-protocol"), Some("mqtt"));

    // A client offering several subprotocols gets `mqtt` picked.
    let mut s2 = tcp(addr);
    s2.send(ws_request(addr, path, Some("chat, mqtt")).as_bytes());
    let (status, headers) = read_http_head(&mut s2);
    assert_eq!(status, 101, "{headers:?}");
    assert_eq!(header(&headers, "sec-websocket-protocol"), Some("mqtt"));

    // MQTT in a binary frame; the CONNACK comes back in one binary frame.
    s.send(&ws_frame(0x2, &connect_v311("raw-ws", 30)));
    assert_eq!(read_ws_frame(&mut s), (0x82, CONNACK_V311_OK.to_vec()));
    s.send(&ws_frame(0x2, &PINGREQ));
    assert_eq!(read_ws_frame(&mut s), (0x82, PINGRESP.to_vec()));
}

/// RFC 6455 §5.5.2-3 and §5.5.1: a ping gets a pong with the same payload; a close
/// 1000 gets a close 1000 back, then the server ends the TCP connection.
#[test]
fn ws_ping_pong_and_close_handshake() {
    let broker = Broker::start(&[]);
    let mut ws = tungstenite_client(&broker);
    // On an MQTT session, so the ping is answered mid-conversation.
    ws.send(Message::Binary(connect_v311("tung", 30))).unwrap();
    assert_eq!(
        ws.read().unwrap(),
        Message::Binary(CONNACK_V311_OK.to_vec())
    );

    for payload in [b"hello ping".to_vec(), Vec::new(), vec![0xFF; 125]] {
        ws.send(Message::Ping(payload.clone())).unwrap();
        assert_eq!(ws.read().unwrap(), Message::Pong(payload));
    }

    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected close 1000, got {other:?}"),
    }
    // The close handshake is complete; the server closes the TCP connection.
    let end = ws.get_mut().read_until_closed(WAIT);
    assert!(
        end.bytes.is_empty(),
        "bytes after close: {:02x?}",
        end.bytes
    );
}

/// One kind of bad WebSocket input: what it does to its own connection is checked by
/// `bad`; a healthy client (over WebSocket too) must work before and after, and
/// `counter` must grow by exactly one.
fn bad_ws_input(counter: &str, bad: impl FnOnce(&Broker)) {
    let broker = Broker::start(&[]);
    let rt = runtime();
    let mut healthy = rt.block_on(Healthy::start(v311::ws_options(
        "healthy",
        &broker.ws_url(),
    )));
    let before = broker.metric(counter);
    bad(&broker);
    assert_eq!(broker.metric(counter), before + 1, "{counter}");
    rt.block_on(healthy.check());
    // The healthy connection is the only one left open.
    broker.wait_for_metric("ringmq_connections_current", WAIT, |v| v == 1);
}

/// MQTT §6 (MQTT-6.0.0-3/4): the client must offer `mqtt`; without it the upgrade is
/// refused with a 4xx answer, not 101.
#[test]
fn ws_upgrade_without_mqtt_subprotocol_is_refused() {
    bad_ws_input("ringmq_ws_handshake_rejected", |broker| {
        let addr = broker.ws_addr();
        let mut s = tcp(addr);
        s.send(ws_request(addr, broker.ws_path(), None).as_bytes());
        let end = s.read_until_closed(WAIT);
        let text = String::from_utf8_lossy(&end.bytes).to_string();
        let (head, _) = text.split_once("\r\n\r\n").expect("a whole answer");
        let (status, headers) = parse_http_head(head);
        assert_eq!(status, 400, "{text}");
        assert_eq!(header(&headers, "sec-websocket-accept"), None);
    });
}

#[test]
fn ws_upgrade_without_mqtt_subprotocol_offering_another_is_refused() {
    bad_ws_input("ringmq_ws_handshake_rejected", |broker| {
        let addr = broker.ws_addr();
        let mut s = tcp(addr);
        s.send(ws_request(addr, broker.ws_path(), Some("chat, superchat")).as_bytes());
        let end = s.read_until_closed(WAIT);
        let text = String::from_utf8_lossy(&end.bytes).to_string();
        let (status, _) = parse_http_head(text.split_once("\r\n\r\n").expect("answer").0);
        assert_eq!(status, 400, "{text}");
    });
}

#[test]
fn ws_upgrade_to_the_wrong_path_is_404() {
    bad_ws_input("ringmq_ws_handshake_rejected", |broker| {
        let addr = broker.ws_addr();
        let mut s = tcp(addr);
        s.send(ws_request(addr, "/not-mqtt", Some("mqtt")).as_bytes());
        let end = s.read_until_closed(WAIT);
        let text = String::from_utf8_lossy(&end.bytes).to_string();
        let (status, headers) = parse_http_head(text.split_once("\r\n\r\n").expect("answer").0);
        assert_eq!(status, 404, "{text}");
        assert_eq!(header(&headers, "sec-websocket-accept"), None);
    });
}

/// MQTT-6.0.0-1: MQTT travels in binary frames; a text frame ends the connection with
/// a close frame and the TCP close.
#[test]
fn ws_text_frame_closes_the_connection() {
    bad_ws_input("ringmq_disconnected_protocol_error", |broker| {
        let mut s = raw_ws(broker);
        s.send(&ws_frame(0x2, &connect_v311("texter", 30)));
        assert_eq!(read_ws_frame(&mut s), (0x82, CONNACK_V311_OK.to_vec()));
        s.send(&ws_frame(0x1, b"hello"));
        let end = s.read_until_closed(WAIT);
        // 1002 (protocol error) or 1003 (data of a type it cannot accept, RFC 6455
        // §7.4.1): both say why; MQTT only requires the close.
        assert!(
            end.bytes == [0x88, 0x02, 0x03, 0xEA] || end.bytes == [0x88, 0x02, 0x03, 0xEB],
            "close frame 1002 or 1003, then the close: {:02x?}",
            end.bytes
        );
    });
}

/// RFC 6455 §7.4.1: a frame declaring more than the maximum message (16 MiB by
/// default) is refused with close 1009 as soon as its head is read, before any payload.
#[test]
fn ws_frame_over_the_max_message_size_is_closed_with_1009() {
    bad_ws_input("ringmq_disconnected_protocol_error", |broker| {
        let mut s = raw_ws(broker);
        s.send(&ws_frame(0x2, &connect_v311("big-framer", 30)));
        assert_eq!(read_ws_frame(&mut s), (0x82, CONNACK_V311_OK.to_vec()));
        let declared: u64 = 16 * 1024 * 1024 + 1;
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&declared.to_be_bytes());
        head.extend_from_slice(&[1, 2, 3, 4]); // mask
        s.send(&head);
        let end = s.read_until_closed(WAIT);
        assert_eq!(end.bytes, [0x88, 0x02, 0x03, 0xF1], "close frame 1009");
    });
}

/// The same before CONNECT, with a length far past any limit.
#[test]
fn ws_frame_declaring_2_pow_62_bytes_is_closed_with_1009() {
    bad_ws_input("ringmq_disconnected_protocol_error", |broker| {
        let mut s = raw_ws(broker);
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&(1u64 << 62).to_be_bytes());
        head.extend_from_slice(&[9, 8, 7, 6]);
        s.send(&head);
        let end = s.read_until_closed(WAIT);
        assert_eq!(end.bytes, [0x88, 0x02, 0x03, 0xF1], "close frame 1009");
    });
}

/// `--max-connections 1`: a WebSocket client over the limit still upgrades, then gets
/// its CONNACK refusal (0x03 in 3.1.1, 0x97 in 5.0) in a binary message, a close frame
/// and the TCP close; the first client keeps working.
#[test]
fn ws_client_over_max_connections_gets_a_connack_refusal() {
    let broker = Broker::start(&["--max-connections", "1"]);
    let rt = runtime();
    let mut healthy = rt.block_on(Healthy::start(v311::ws_options(
        "healthy",
        &broker.ws_url(),
    )));
    for (connect, code) in [
        (connect_v311("ws-over-4", 30), 0x03),
        (connect_v5("ws-over-5", 30), 0x97),
    ] {
        let mut s = raw_ws(&broker);
        s.send(&ws_frame(0x2, &connect));
        let (head, payload) = read_ws_frame(&mut s);
        assert_eq!(head, 0x82);
        let packets = split_packets(&payload);
        assert_eq!(packets.len(), 1, "{packets:02x?}");
        let connack = &packets[0];
        assert_eq!(connack.first, 0x20);
        assert_eq!(connack.body[..2], [0x00, code], "refusal: {connack:02x?}");
        let (head, close) = read_ws_frame(&mut s);
        assert_eq!(head, 0x88, "a close frame");
        assert_eq!(close.len(), 2);
        let end = s.read_until_closed(WAIT);
        assert!(end.bytes.is_empty(), "{:02x?}", end.bytes);
    }
    assert_eq!(broker.metric("ringmq_connections_refused_limit"), 2);
    rt.block_on(healthy.check());
}

/// RFC 6455 §4.2.1 (1): the request target is the resource name, "or an absolute
/// HTTP/HTTPS URI containing the resource name" (RFC 7230 §5.3.2: servers must accept
/// the absolute form).
#[test]
fn ws_upgrade_accepts_an_absolute_uri() {
    let broker = Broker::start(&[]);
    let addr = broker.ws_addr();
    let mut s = tcp(addr);
    let target = format!("http://{addr}{}", broker.ws_path());
    s.send(ws_request(addr, &target, Some("mqtt")).as_bytes());
    let (status, headers) = read_http_head(&mut s);
    assert_eq!(status, 101, "{headers:?}");
    assert_eq!(header(&headers, "sec-websocket-protocol"), Some("mqtt"));
}
