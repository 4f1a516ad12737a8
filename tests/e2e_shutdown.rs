//! Graceful shutdown on SIGTERM: every client hears the goodbye its protocol has (MQTT 5
//! DISCONNECT 0x8B "server shutting down", WebSocket close 1001 "going away", plain EOF
//! for MQTT 3.1.1), and the broker exits with status 0.

mod support;

use std::net::TcpStream;
use std::thread::JoinHandle;

use support::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// Reads WebSocket messages until the close handshake ends, then checks the TCP
/// connection ends too; returns the messages (the close frame included).
fn ws_read_to_close(mut ws: Tungstenite) -> JoinHandle<Vec<Message>> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            match ws.read() {
                Ok(m) => got.push(m),
                Err(tungstenite::Error::ConnectionClosed) => break,
                Err(e) => panic!("WebSocket read: {e} after {got:?}"),
            }
        }
        let end = ws.get_mut().read_until_closed(WAIT);
        assert!(
            end.bytes.is_empty(),
            "bytes after close: {:02x?}",
            end.bytes
        );
        got
    })
}

fn tcp_read_to_close(mut s: TcpStream) -> JoinHandle<Ended> {
    std::thread::spawn(move || s.read_until_closed(WAIT))
}

#[test]
fn sigterm_says_goodbye_to_every_client_and_exits_0() {
    let mut broker = Broker::start(&[]);
    let rt = runtime();
    let mqtt = broker.mqtt_addr();

    let (raw5, _) = raw_v5_client(mqtt, "raw-v5", 30);
    let raw4 = raw_v311_client(mqtt, "raw-v311", 30);
    let ws5 = tungstenite_mqtt_client(&broker, connect_v5("ws-v5", 30));
    let ws4 = tungstenite_mqtt_client(&broker, connect_v311("ws-v311", 30));
    let (mut rumq5, mut rumq4) = rt.block_on(async {
        let mut c5 = V5::connect(v5::options("rumqttc-v5", mqtt)).await;
        c5.subscribe_ok("any/#", 1).await;
        let c4 = V4::connect(v311::options("rumqttc-v311", mqtt)).await;
        (c5, c4)
    });
    // Mid-upgrade: connected to the WebSocket port, no request yet.
    let upgrading = tcp(broker.ws_addr());
    broker.wait_for_metric("ringmq_connections_current", WAIT, |v| v == 7);

    let raw5 = tcp_read_to_close(raw5);
    let raw4 = tcp_read_to_close(raw4);
    let upgrading = tcp_read_to_close(upgrading);
    let ws5 = ws_read_to_close(ws5);
    let ws4 = ws_read_to_close(ws4);

    let status = broker.stop_graceful();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(status.code(), Some(0));
    let stdout = broker.stdout();
    assert!(
        stdout.contains("ringmq: SIGTERM: shutting down"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l == "ringmq: stopped"), "{stdout}");

    // MQTT 5 over TCP: DISCONNECT 0x8B, then EOF.
    let end = raw5.join().unwrap();
    let packets = split_packets(&end.bytes);
    assert_eq!(packets.len(), 1, "{packets:02x?}");
    let (reason, props) = packets[0].v5_disconnect();
    assert_eq!(reason, 0x8B, "server shutting down");
    assert!(
        props
            .iter()
            .all(|(id, _)| *id == REASON_STRING || *id == USER_PROPERTY),
        "{props:02x?}"
    );

    // MQTT 3.1.1 over TCP: EOF, nothing before it.
    let end = raw4.join().unwrap();
    assert!(end.bytes.is_empty(), "3.1.1: {:02x?}", end.bytes);
    let end = upgrading.join().unwrap();
    assert!(end.bytes.is_empty(), "mid-upgrade: {:02x?}", end.bytes);

    // MQTT 5 over WebSocket: the DISCONNECT in a binary message, then close 1001.
    let got = ws5.join().unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    match &got[0] {
        Message::Binary(b) => {
            let packets = split_packets(b);
            assert_eq!(packets.len(), 1, "{packets:02x?}");
            assert_eq!(packets[0].v5_disconnect().0, 0x8B);
        }
        other => panic!("expected the DISCONNECT, got {other:?}"),
    }
    match &got[1] {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }

    // MQTT 3.1.1 over WebSocket: close 1001 only.
    let got = ws4.join().unwrap();
    match &got[..] {
        [Message::Close(Some(f))] => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected only close 1001, got {other:?}"),
    }

    rt.block_on(async {
        use rumqttc::v5::mqttbytes::v5::DisconnectReasonCode;
        use rumqttc::v5::{ConnectionError, StateError};
        match rumq5.next_error().await {
            ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => {
                assert_eq!(reason_code, DisconnectReasonCode::ServerShuttingDown)
            }
            other => panic!("rumqttc v5: {other:?}"),
        }
        // rumqttc 3.1.1 just sees the connection end.
        let e = rumq4.next_error().await;
        assert!(
            matches!(
                e,
                rumqttc::ConnectionError::Io(_)
                    | rumqttc::ConnectionError::MqttState(rumqttc::StateError::Io(_))
            ),
            "rumqttc v3.1.1: {e:?}"
        );
    });
}

/// A shutdown with no clients (and one shard) exits 0 too.
#[test]
fn sigterm_with_no_clients_exits_0() {
    let mut broker = Broker::start(&["--shards", "1"]);
    let status = broker.stop_graceful();
    assert_eq!(status.code(), Some(0), "{}", broker.stderr());
    assert!(broker.stdout().lines().any(|l| l == "ringmq: stopped"));
}

/// A client that never reads keeps sends in flight (its socket full, more queued behind
/// them) when the server stops: every operation is cancelled and ends before the shard's
/// buffers go, and the broker exits 0 with nothing said of operations left behind.
#[test]
fn sigterm_with_sends_stuck_on_a_client_that_never_reads_exits_0() {
    let mut broker = Broker::start(&["--shards", "1"]);
    let addr = broker.mqtt_addr();
    let mut stuck = raw_v311_client(addr, "never-reads", 60);
    stuck.send(&subscribe(4, 1, "flood/#", 0, &[]));
    assert_eq!(stuck.read_packet().suback(4).1, [0]);
    let mut publisher = raw_v311_client(addr, "flooder", 60);
    let payload = vec![b'f'; 60_000];
    let deadline = std::time::Instant::now() + WAIT;
    while broker.metric("ringmq_outbound_bytes") < 64 * 1024 {
        assert!(std::time::Instant::now() < deadline, "nothing stuck");
        for _ in 0..50 {
            publisher.send(&publish_qos0(4, "flood/x", &payload));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(broker.metric("ringmq_ops_in_flight") > 0);
    let status = broker.stop_graceful();
    assert_eq!(status.code(), Some(0), "{}", broker.stderr());
    let stderr = broker.stderr();
    assert!(
        !stderr.contains("in flight") && !stderr.contains("did not end"),
        "{stderr}"
    );
    assert!(broker.stdout().lines().any(|l| l == "ringmq: stopped"));
    drop(stuck);
}
