//! Limits end to end: WebSocket origins (403), a publisher past its message rate held to
//! it without loss or disconnection while another client of the same shard flows,
//! a listener's connect rate, connections per source address, flapping bans (by client
//! id and by address) that end, and the bounds on retained messages and subscriptions.
//!
//! No test asserts how long anything takes: the rate tests measure a rate over a window of
//! several seconds (between two arrivals well after the burst), with a ±10 % (publish) or
//! ±25 % (accept) tolerance that a loaded machine stays within.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;

use support::*;

/// The status of a tungstenite upgrade to `broker` with this `Origin` (if any).
fn upgrade_status(broker: &Broker, origin: Option<&str>) -> u16 {
    let mut req = broker.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match tungstenite::client(req, tcp(broker.ws_addr())) {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            resp.status().as_u16()
        }
        Err(e) => panic!("upgrade: {e}"),
    }
}

#[test]
fn websocket_origins_are_checked_at_the_upgrade() {
    let broker = Broker::start(&[
        "--ws-allowed-origins",
        "https://app.example.com,http://localhost:8080",
    ]);
    assert_eq!(upgrade_status(&broker, Some("https://evil.example")), 403);
    assert_eq!(
        upgrade_status(&broker, Some("https://app.example.com.evil.example")),
        403
    );
    assert_eq!(
        upgrade_status(&broker, Some("https://app.example.com")),
        101
    );
    assert_eq!(
        upgrade_status(&broker, Some("HTTPS://APP.EXAMPLE.COM")),
        101
    );
    assert_eq!(upgrade_status(&broker, Some("http://localhost:8080")), 101);
    // Not a browser: no Origin, let in.
    assert_eq!(upgrade_status(&broker, None), 101);
    // The refusal by hand: 403 with a reason, and the connection closed.
    let addr = broker.ws_addr();
    let mut s = tcp(addr);
    let req = ws_request(addr, broker.ws_path(), Some("mqtt"))
        .replace("\r\n\r\n", "\r\nOrigin: https://evil.example\r\n\r\n");
    s.send(req.as_bytes());
    let end = s.read_until_closed(WAIT);
    let text = String::from_utf8_lossy(&end.bytes);
    assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
    assert!(
        text.ends_with("Upgrades from this Origin are not allowed."),
        "{text}"
    );
    assert_eq!(broker.metric("ringmq_ws_origin_refused"), 3);

    // By default any origin is let in.
    let open = Broker::start(&[]);
    assert_eq!(upgrade_status(&open, Some("https://evil.example")), 101);
}

/// Sends QoS 0 PUBLISH packets `flood/N` (payload N) at about `per_s` a second for
/// `seconds`; returns how many.
fn flood(mut s: TcpStream, per_s: u64, seconds: u64, running: Arc<AtomicBool>) -> (TcpStream, u64) {
    let start = Instant::now();
    let total = per_s * seconds;
    for n in 0..total {
        s.send(&publish_qos0(
            4,
            &format!("flood/{n}"),
            n.to_string().as_bytes(),
        ));
        let due = start + Duration::from_micros(n * 1_000_000 / per_s);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    running.store(false, Ordering::Relaxed);
    (s, total)
}

#[test]
fn a_publisher_past_its_rate_is_held_to_it_without_loss() {
    const RATE: u64 = 100;
    let broker = Broker::start(&[
        "--shards",
        "1",
        "--client-msg-rate",
        &format!("{RATE}:{RATE}"),
    ]);
    let addr = broker.mqtt_addr();
    let mut counter = raw_v311_client(addr, "counter", 60);
    counter.send(&subscribe(4, 1, "flood/#", 0, &[]));
    assert_eq!(counter.read_packet().suback(4).1, [0]);
    let mut calm_sub = raw_v311_client(addr, "calm-sub", 60);
    calm_sub.send(&subscribe(4, 1, "calm/#", 1, &[]));
    assert_eq!(calm_sub.read_packet().suback(4).1, [1]);

    // Ten times the rate for six seconds, and beside it a client well under the rate on
    // the same shard.
    let running = Arc::new(AtomicBool::new(true));
    let publisher = raw_v311_client(addr, "flood", 60);
    let flooding = {
        let running = running.clone();
        std::thread::spawn(move || flood(publisher, RATE * 10, 6, running))
    };
    let calm = std::thread::spawn(move || {
        let mut c = raw_v311_client(addr, "calm", 60);
        for n in 0..50u16 {
            c.send(&publish(
                4,
                &format!("calm/{n}"),
                1,
                false,
                false,
                n + 1,
                &[],
                b"calm",
            ));
            assert_eq!(c.read_packet().first, 0x40, "PUBACK");
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    });
    let calm_received = std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < 50 {
            let p = calm_sub.read_packet();
            calm_sub.send(&ack(PUBACK, p.pkid()));
            got.push(p.topic());
        }
        (got, calm_sub)
    });

    // The flood as the subscriber sees it: each arrival's time.
    let mut arrivals: Vec<(u64, Instant)> = Vec::new();
    let collect_until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < collect_until {
        let Some(p) = counter.try_read_packet(Duration::from_millis(200)) else {
            continue;
        };
        let n: u64 = String::from_utf8(p.payload(4)).unwrap().parse().unwrap();
        arrivals.push((n, Instant::now()));
    }
    // No loss, in order: exactly 0, 1, 2, …
    for (i, (n, _)) in arrivals.iter().enumerate() {
        assert_eq!(*n, i as u64, "a gap in the flood");
    }
    // The rate after the burst: between the 150th and the 550th arrival.
    assert!(arrivals.len() > 560, "only {} arrived", arrivals.len());
    let (a, b) = (150, 550);
    let secs = arrivals[b].1.duration_since(arrivals[a].1).as_secs_f64();
    let rate = (b - a) as f64 / secs;
    assert!(
        (RATE as f64 * 0.9..=RATE as f64 * 1.1).contains(&rate),
        "measured {rate:.1} messages/s for a limit of {RATE}"
    );

    // The calm client kept flowing meanwhile: all its messages, in order.
    let (calm_got, _calm_sub) = calm_received.join().unwrap();
    let want: Vec<String> = (0..50).map(|n| format!("calm/{n}")).collect();
    assert_eq!(calm_got, want);
    let _calm = calm.join().unwrap();
    let (mut publisher, sent) = flooding.join().unwrap();
    assert!(!running.load(Ordering::Relaxed));
    assert!(
        (arrivals.len() as u64) < sent,
        "the flood is still held back"
    );

    // Not disconnected: the publisher is still served (its PINGREQ waits behind its own
    // backlog, so ask the broker instead).
    assert!(broker.metric("ringmq_publishers_throttled") > 0);
    // counter, calm-sub, calm and the publisher.
    assert_eq!(broker.metric("ringmq_connections_current"), 4);
    assert_eq!(broker.metric("ringmq_disconnected_protocol_error"), 0);
    assert_eq!(broker.metric("ringmq_disconnected_slow_consumer"), 0);
    publisher.expect_still_open(Duration::from_millis(100));
}

#[test]
fn a_listener_takes_connections_at_its_connect_rate() {
    const RATE: u64 = 10;
    const N: usize = 40;
    let broker = Broker::start(&["--max-connect-rate", &format!("{RATE}:5")]);
    let addr = broker.mqtt_addr();
    // Every connection sends its CONNECT at once; the CONNACK comes once it is accepted.
    let threads: Vec<_> = (0..N)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = tcp(addr);
                let ack = send_connect(&mut s, &connect_v311(&format!("c{i}"), 60));
                assert_eq!(ack.body, [0, 0]);
                (Instant::now(), s)
            })
        })
        .collect();
    let mut times: Vec<Instant> = threads.into_iter().map(|t| t.join().unwrap().0).collect();
    times.sort();
    let (a, b) = (10, N - 1);
    let rate = (b - a) as f64 / times[b].duration_since(times[a]).as_secs_f64();
    assert!(
        (RATE as f64 * 0.75..=RATE as f64 * 1.25).contains(&rate),
        "accepted {rate:.1} connections/s for a limit of {RATE}"
    );
    assert!(broker.metric("ringmq_accepts_delayed") > 0);
    assert_eq!(broker.metric("ringmq_connections_refused_limit"), 0);
}

#[test]
fn connections_per_address_are_bounded() {
    let broker = Broker::start(&["--max-connections-per-ip", "3"]);
    let addr = broker.mqtt_addr();
    let mut open: Vec<TcpStream> = (0..2)
        .map(|i| raw_v311_client(addr, &format!("ip{i}"), 60))
        .collect();
    let ws = tungstenite_mqtt_client(&broker, connect_v311("ip-ws", 60));
    // The fourth from 127.0.0.1: quota exceeded (3.1.1: server unavailable), closed.
    let (mut s, ack) = raw_connect(addr, &connect_v5("ip3", 60));
    let (_, code, props) = ack.v5_connack();
    assert_eq!(code, 0x97);
    assert!(has_reason_string(&props));
    s.expect_closed_silently("refused for its address");
    let (_, ack) = raw_connect(addr, &connect_v311("ip4", 60));
    assert_eq!(ack.body, [0, 0x03]);
    assert_eq!(broker.metric("ringmq_per_ip_refused_total"), 2);
    // One goes: there is room for one again.
    drop(open.pop());
    drop(ws);
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, ack) = raw_connect(addr, &connect_v311("ip5", 60));
        if ack.body == [0, 0] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after two connections closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects `id` with 5.0 and returns the CONNACK reason; the connection is dropped
/// without DISCONNECT (a flap) unless `polite`.
fn flap(addr: SocketAddr, id: &str, polite: bool) -> u8 {
    let (mut s, ack) = raw_connect(addr, &connect_v5(id, 60));
    let code = ack.v5_connack().1;
    if polite && code == 0 {
        s.send(&DISCONNECT);
    }
    code
}

/// Waits until the broker has seen every connection close.
fn all_closed(broker: &Broker) {
    broker.wait_for_metric("ringmq_connections_current", WAIT, |v| v == 0);
}

#[test]
fn a_flapping_client_id_is_banned_then_let_back() {
    let broker = Broker::start(&[
        "--flapping-max-drops",
        "3",
        "--flapping-window",
        "600",
        "--flapping-ban",
        "2",
    ]);
    let addr = broker.mqtt_addr();
    // Clean goodbyes never count.
    for _ in 0..6 {
        assert_eq!(flap(addr, "polite", true), 0);
        all_closed(&broker);
    }
    for _ in 0..4 {
        assert_eq!(flap(addr, "flappy", false), 0);
        all_closed(&broker);
    }
    // Past three drops in the window: banned (5.0 0x8A, 3.1.1 0x05).
    assert_eq!(flap(addr, "flappy", false), 0x8A);
    let (_, ack) = raw_connect(addr, &connect_v311("flappy", 60));
    assert_eq!(ack.body, [0, 0x05]);
    assert_eq!(flap(addr, "polite", true), 0, "others are not affected");
    assert_eq!(broker.metric("ringmq_flapping_bans"), 1);
    assert_eq!(broker.metric("ringmq_flapping_bans_total"), 1);
    assert_eq!(broker.metric("ringmq_auth_refused_banned_total"), 2);
    // The ban ends.
    let deadline = Instant::now() + WAIT;
    while flap(addr, "flappy", true) != 0 {
        assert!(Instant::now() < deadline, "still banned");
        std::thread::sleep(Duration::from_millis(100));
    }
    broker.wait_for_metric("ringmq_flapping_bans", WAIT, |v| v == 0);
}

#[test]
fn a_flapping_address_is_banned_when_asked() {
    let broker = Broker::start(&[
        "--flapping-max-drops",
        "3",
        "--flapping-ban",
        "2",
        "--flapping-by-address",
        "true",
    ]);
    let addr = broker.mqtt_addr();
    for i in 0..4 {
        assert_eq!(flap(addr, &format!("id{i}"), false), 0);
        all_closed(&broker);
    }
    // Every client id from 127.0.0.1 is refused now.
    assert_eq!(flap(addr, "fresh", true), 0x8A);
    let deadline = Instant::now() + WAIT;
    while flap(addr, "fresh", true) != 0 {
        assert!(Instant::now() < deadline, "still banned");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn retained_messages_and_subscriptions_are_bounded() {
    let broker = Broker::start(&["--max-retained", "2", "--max-subscriptions", "2"]);
    let addr = broker.mqtt_addr();
    let mut p = raw_v311_client(addr, "retainer", 60);
    let retain = |p: &mut TcpStream, topic: &str, payload: &[u8], pkid: u16| {
        p.send(&publish(4, topic, 1, false, true, pkid, &[], payload));
        assert_eq!(p.read_packet().first, 0x40);
    };
    retain(&mut p, "r/1", b"one", 1);
    retain(&mut p, "r/2", b"two", 2);
    retain(&mut p, "r/3", b"three", 3); // past the bound: delivered, not kept
    retain(&mut p, "r/1", b"one again", 4); // replacing one kept is fine
    assert_eq!(broker.metric("ringmq_retained_dropped_full"), 1);

    let retained_on_subscribe = |id: &str| {
        let (mut s, _) = raw_v5_client(addr, id, 60);
        s.send(&subscribe(5, 1, "r/#", 0, &[]));
        assert_eq!(s.read_packet().suback(5).1, [0]);
        let mut got = Vec::new();
        while let Some(pk) = s.try_read_packet(QUIET) {
            got.push((pk.topic(), pk.payload(5)));
        }
        got.sort();
        (s, got)
    };
    let (mut s, got) = retained_on_subscribe("s1");
    assert_eq!(
        got,
        [
            ("r/1".to_string(), b"one again".to_vec()),
            ("r/2".to_string(), b"two".to_vec())
        ]
    );
    // Clearing one makes room.
    retain(&mut p, "r/1", b"", 5);
    retain(&mut p, "r/3", b"three", 6);
    let (_, got) = retained_on_subscribe("s2");
    let topics: Vec<_> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, ["r/2", "r/3"]);

    // Subscriptions: s1 holds r/#; one more fits, the next is over its quota (0x97).
    while s.try_read_packet(QUIET).is_some() {}
    s.send(&subscribe(5, 2, "a", 0, &[]));
    assert_eq!(s.read_packet().suback(5).1, [0]);
    s.send(&subscribe(5, 3, "b", 0, &[]));
    assert_eq!(s.read_packet().suback(5).1, [0x97]);
}
