//! Deadlines: keepalive (MQTT-3.1.2-24: close after 1.5 × the keepalive without a
//! packet), a client that pings in time stays, and the CONNECT / WebSocket-handshake
//! timeouts (10 s by default; no flag changes them) for sockets that say nothing.
//! Only generous upper bounds are waited for; nothing asserts how fast.

mod support;

use std::time::Duration;

use support::*;

#[test]
fn silent_v311_client_is_closed_after_its_keepalive() {
    let broker = Broker::start(&[]);
    let rt = runtime();
    let mut healthy = rt.block_on(Healthy::start(v311::options("healthy", broker.mqtt_addr())));
    let mut s = raw_v311_client(broker.mqtt_addr(), "silent-4", 1);
    // 3.1.1 has no server DISCONNECT: the connection just ends.
    s.expect_closed_silently("keepalive expiry");
    assert_eq!(broker.metric("ringmq_disconnected_timeout"), 1);
    assert_eq!(broker.metric("ringmq_disconnected_protocol_error"), 0);
    rt.block_on(healthy.check());
}

/// MQTT 5: the server says why (DISCONNECT 0x8D, keep alive timeout, with a Reason
/// String) before closing.
#[test]
fn silent_v5_client_gets_disconnect_0x8d() {
    let broker = Broker::start(&[]);
    let (mut s, _) = raw_v5_client(broker.mqtt_addr(), "silent-5", 1);
    let end = s.read_until_closed(WAIT);
    let packets = split_packets(&end.bytes);
    assert_eq!(packets.len(), 1, "{packets:02x?}");
    let (reason, props) = packets[0].v5_disconnect();
    assert_eq!(reason, 0x8D, "keep alive timeout");
    assert!(has_reason_string(&props), "{props:02x?}");
    assert_eq!(broker.metric("ringmq_disconnected_timeout"), 1);
}

/// A PINGREQ every 0.5 s with a keepalive of 1 s: never closed over ~3 s, and every
/// PINGREQ gets its PINGRESP.
#[test]
fn client_pinging_within_its_keepalive_stays_connected() {
    let broker = Broker::start(&[]);
    let mut s = raw_v311_client(broker.mqtt_addr(), "pinger", 1);
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        s.send(&PINGREQ);
        assert_eq!(s.read_bytes(2), PINGRESP);
    }
    s.send(&PINGREQ);
    assert_eq!(s.read_bytes(2), PINGRESP);
    assert_eq!(broker.metric("ringmq_disconnected_timeout"), 0);
    assert_eq!(broker.metric("ringmq_connections_current"), 1);
}

/// Keepalive 0 turns the mechanism off (MQTT-3.1.2-23 and 5.0 §3.1.2.10): a silent
/// client stays.
#[test]
fn keepalive_zero_is_never_timed_out() {
    let broker = Broker::start(&[]);
    let mut s = raw_v311_client(broker.mqtt_addr(), "no-keepalive", 0);
    s.expect_still_open(Duration::from_secs(3));
    s.send(&PINGREQ);
    assert_eq!(s.read_bytes(2), PINGRESP);
    assert_eq!(broker.metric("ringmq_disconnected_timeout"), 0);
}

/// Sockets that never say anything are closed by the CONNECT timeout (plain TCP, and
/// WebSocket after the upgrade: close 1008) and by the handshake timeout (WebSocket
/// port, no upgrade request). 10 s each by default, run side by side.
#[test]
fn silent_sockets_are_closed_by_the_connect_and_handshake_timeouts() {
    let broker = Broker::start(&[]);
    let rt = runtime();
    let mut healthy = rt.block_on(Healthy::start(v311::options("healthy", broker.mqtt_addr())));
    let limit = Duration::from_secs(60);

    let mut tcp_silent = tcp(broker.mqtt_addr());
    let mut ws_no_upgrade = tcp(broker.ws_addr());
    let mut ws_no_connect = raw_ws(&broker);
    let tcp_silent = std::thread::spawn(move || tcp_silent.read_until_closed(limit));
    let ws_no_upgrade = std::thread::spawn(move || ws_no_upgrade.read_until_closed(limit));
    let ws_no_connect = std::thread::spawn(move || ws_no_connect.read_until_closed(limit));

    let end = tcp_silent.join().unwrap();
    assert!(end.bytes.is_empty(), "TCP: {:02x?}", end.bytes);
    let end = ws_no_upgrade.join().unwrap();
    assert!(
        end.bytes.is_empty(),
        "WebSocket, no upgrade: {:02x?}",
        end.bytes
    );
    let end = ws_no_connect.join().unwrap();
    assert_eq!(
        end.bytes,
        [0x88, 0x02, 0x03, 0xF0],
        "WebSocket, no CONNECT: close 1008"
    );

    assert_eq!(broker.metric("ringmq_disconnected_timeout"), 3);
    rt.block_on(healthy.check());
    broker.wait_for_metric("ringmq_connections_current", WAIT, |v| v == 1);
}

/// Over WebSocket, an MQTT 5 client that goes silent hears DISCONNECT 0x8D in a binary
/// message, then a close frame. WebSocket pings do not count as MQTT activity.
#[test]
fn silent_v5_client_over_websocket_gets_disconnect_0x8d() {
    let broker = Broker::start(&[]);
    let mut s = raw_ws(&broker);
    s.send(&ws_frame(0x2, &connect_v5("ws-silent", 1)));
    let (head, payload) = read_ws_frame(&mut s);
    assert_eq!(head, 0x82);
    assert_eq!(split_packets(&payload)[0].v5_connack().1, 0);
    loop {
        // Pings keep the WebSocket busy, not the MQTT session.
        s.send(&ws_frame(0x9, b"p"));
        let (head, payload) = read_ws_frame(&mut s);
        if head == 0x8A {
            assert_eq!(payload, b"p");
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        assert_eq!(head, 0x82, "the DISCONNECT in a binary message");
        let packets = split_packets(&payload);
        assert_eq!(packets[0].v5_disconnect().0, 0x8D);
        break;
    }
    let (head, close) = read_ws_frame(&mut s);
    assert_eq!(head, 0x88, "then a close frame");
    assert_eq!(close.len(), 2);
    assert_eq!(broker.metric("ringmq_disconnected_timeout"), 1);
}
