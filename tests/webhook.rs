//! Webhooks against a local receiver (an axum server in the test): every event kind
//! arrives, signed, and the signature checks out with an independent HMAC; a receiver
//! that is down at first gets the events once it is up; one that stays down makes the
//! bounded queues drop, and the drops are counted. The dispatcher alone, and the real
//! binary whose shards emit the events for what MQTT clients (rumqttc) do.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, KeyInit, Mac};
use ringmq::control::webhook::{self, WebhookConfig, WebhookEvent, WebhookTarget};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &str = "test-secret-0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// What the receiver got: each request's verified events.
#[derive(Default)]
struct Received {
    events: Vec<Value>,
    batches: usize,
    bad_signatures: usize,
}

fn verify(headers: &HeaderMap, body: &[u8]) -> bool {
    let (Some(ts), Some(sig)) = (
        headers
            .get(webhook::TIMESTAMP_HEADER)
            .and_then(|v| v.to_str().ok()),
        headers
            .get(webhook::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let Some(hex) = sig.strip_prefix("v1=") else {
        return false;
    };
    let Ok(ts_secs) = ts.parse::<u64>() else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(ts_secs) > 300 {
        return false;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    let Some(bytes) = bytes else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

/// Starts a receiver on `listener`; returns what it collects.
fn receiver(rt: &tokio::runtime::Runtime, listener: std::net::TcpListener) -> Arc<Mutex<Received>> {
    let got = Arc::new(Mutex::new(Received::default()));
    let keep = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let got = keep.clone();
            async move {
                let mut g = got.lock().unwrap();
                if !verify(&headers, &body) {
                    g.bad_signatures += 1;
                    return StatusCode::UNAUTHORIZED;
                }
                let batch: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(
                    headers
                        .get(webhook::BATCH_HEADER)
                        .unwrap()
                        .to_str()
                        .unwrap(),
                    batch["batch_id"].as_str().unwrap()
                );
                g.batches += 1;
                g.events
                    .extend(batch["events"].as_array().unwrap().iter().cloned());
                StatusCode::NO_CONTENT
            }
        }),
    );
    listener.set_nonblocking(true).unwrap();
    let listener = {
        let _g = rt.enter();
        tokio::net::TcpListener::from_std(listener).unwrap()
    };
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    got
}

/// A receiver on a free port: its address and what it collects.
fn listening(rt: &tokio::runtime::Runtime) -> (SocketAddr, Arc<Mutex<Received>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (addr, receiver(rt, listener))
}

/// A free port left closed: connections to it are refused.
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The broker, sending its webhooks to `url` signed with [`SECRET`], with `more` flags.
fn hooked_broker(url: String, more: &[&str]) -> support::Broker {
    let mut args = vec!["--webhook-url", &url, "--webhook-secret", SECRET];
    args.extend_from_slice(more);
    support::Broker::start(&args)
}

fn config(addr: SocketAddr, filter: &str) -> WebhookConfig {
    let target: WebhookTarget = format!("http://{addr}/hook{filter}").parse().unwrap();
    let mut c = WebhookConfig::new(vec![target], SECRET.into());
    c.batch_wait = Duration::from_millis(50);
    c.retry_base = Duration::from_millis(200);
    c.retry_cap = Duration::from_secs(1);
    c.request_timeout = Duration::from_secs(5);
    c.payload_preview = 4;
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn one_of_each() -> Vec<WebhookEvent> {
    vec![
        WebhookEvent::ClientConnected {
            client_id: "phone-42".into(),
            username: Some("u42".into()),
            address: "127.0.0.1:50000".into(),
            transport: "ws",
            protocol_version: 5,
            keep_alive: 60,
            clean_start: false,
            shard: 1,
        },
        WebhookEvent::ClientDisconnected {
            client_id: "phone-42".into(),
            reason: "keepalive_timeout",
            shard: 1,
        },
        WebhookEvent::SessionCreated {
            client_id: "phone-42".into(),
            expiry_interval: 86400,
            shard: 1,
        },
        WebhookEvent::SessionExpired {
            client_id: "old-phone".into(),
            shard: 0,
        },
        WebhookEvent::MessageDropped {
            client_id: Some("phone-42".into()),
            topic: "users/42/inbox".into(),
            qos: 1,
            reason: "queue_full",
        },
    ]
}

#[test]
fn every_event_kind_arrives_signed() {
    let rt = runtime();
    let (addr, got) = listening(&rt);
    let (sender, dispatcher) = webhook::channel(config(addr, ""));
    rt.spawn(dispatcher.run());
    for e in one_of_each() {
        sender.send(e);
    }
    sender.queued_offline("phone-42", "users/42/inbox", 1, b"hello world");
    wait_until("6 events", || got.lock().unwrap().events.len() >= 6);
    let g = got.lock().unwrap();
    assert_eq!(g.bad_signatures, 0);
    let kinds: Vec<&str> = g
        .events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, webhook::EVENT_KINDS);
    assert_eq!(g.events[1]["reason"], "keepalive_timeout");
    assert_eq!(g.events[4]["reason"], "queue_full");
    let offline = &g.events[5];
    assert_eq!(offline["client_id"], "phone-42");
    assert_eq!(offline["topic"], "users/42/inbox");
    assert_eq!(offline["qos"], 1);
    assert_eq!(offline["payload_size"], 11);
    assert_eq!(
        offline["payload_preview"], "aGVsbA==",
        "the first 4 bytes, base64"
    );
    assert_eq!(offline["preview_truncated"], true);
    assert!(
        g.events
            .iter()
            .all(|e| e["at_ms"].as_u64().unwrap() > 1_600_000_000_000)
    );
    let f = sender.stats().figures();
    assert_eq!(
        (f.events_received, f.events_delivered, f.pending),
        (6, 6, 0)
    );
}

#[test]
fn a_filter_sends_only_the_events_it_names() {
    let rt = runtime();
    let (addr, got) = listening(&rt);
    let (sender, dispatcher) = webhook::channel(config(addr, "#message.queued_offline"));
    rt.spawn(dispatcher.run());
    assert!(!sender.wants("client.connected"));
    assert!(sender.wants("message.queued_offline"));
    for e in one_of_each() {
        sender.send(e);
    }
    sender.queued_offline("phone-1", "t", 0, b"");
    wait_until("the one event", || !got.lock().unwrap().events.is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let g = got.lock().unwrap();
    assert_eq!(g.events.len(), 1);
    assert_eq!(g.events[0]["event"], "message.queued_offline");
    assert_eq!(
        sender.stats().figures().events_received,
        1,
        "filtered at the sender"
    );
}

#[test]
fn a_receiver_that_is_down_gets_the_events_once_it_is_up() {
    let rt = runtime();
    // Take a free port and leave it closed: connections are refused until it listens.
    let addr = closed_port();
    let (sender, dispatcher) = webhook::channel(config(addr, ""));
    rt.spawn(dispatcher.run());
    sender.queued_offline("phone-7", "users/7/inbox", 1, b"wake up");
    wait_until("two failed attempts", || {
        sender.stats().figures().failed_requests >= 2
    });
    assert_eq!(sender.stats().figures().events_delivered, 0);
    let got = receiver(&rt, std::net::TcpListener::bind(addr).unwrap());
    wait_until("delivery", || got.lock().unwrap().events.len() == 1);
    assert_eq!(got.lock().unwrap().events[0]["client_id"], "phone-7");
    wait_until("the counters", || {
        sender.stats().figures().events_delivered == 1
    });
    assert_eq!(sender.stats().figures().pending, 0);
}

#[test]
fn a_receiver_that_stays_down_makes_the_bounded_queue_drop_and_count() {
    let rt = runtime();
    let addr = closed_port();
    let mut c = config(addr, "");
    c.max_pending = 10;
    c.batch_max = 5;
    let (sender, dispatcher) = webhook::channel(c);
    rt.spawn(dispatcher.run());
    for i in 0..50 {
        sender.queued_offline(&format!("phone-{i}"), "t", 0, b"x");
    }
    wait_until("all 50 taken", || {
        sender.stats().figures().events_received == 50
    });
    wait_until("a failure", || {
        sender.stats().figures().failed_requests >= 1
    });
    let f = sender.stats().figures();
    assert_eq!(f.events_delivered, 0);
    // Held: at most max_pending waiting plus one batch in flight; the rest dropped.
    assert!(f.pending <= 15, "{f:?}");
    assert_eq!(f.pending + f.dropped_pending_full, 50, "{f:?}");
    assert!(f.dropped_pending_full >= 35, "{f:?}");
    let mut prom = String::new();
    sender.stats().render_prometheus(&mut prom);
    assert!(
        prom.contains(&format!(
            "ringmq_webhook_dropped_total{{reason=\"pending_full\"}} {}\n",
            f.dropped_pending_full
        )),
        "{prom}"
    );
}

#[test]
fn a_full_queue_drops_at_the_sender_without_waiting() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut c = config(addr, "");
    c.queue_capacity = 4;
    // No dispatcher runs: nothing drains the queue.
    let (sender, _dispatcher) = webhook::channel(c);
    for i in 0..10 {
        sender.queued_offline(&format!("phone-{i}"), "t", 0, b"x");
    }
    assert_eq!(sender.stats().figures().dropped_queue_full, 6);
}

/// The events a receiver got, by kind.
fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

#[test]
fn the_broker_emits_every_kind_signed() {
    use support::v5::{self, V5};
    let rt = runtime();
    let (addr, got) = listening(&rt);
    let b = hooked_broker(
        format!("http://{addr}/hook"),
        &[
            "--webhook-batch-ms",
            "50",
            "--webhook-payload-preview",
            "4",
            "--max-queued-messages",
            "1",
        ],
    );
    let mqtt = b.mqtt_addr();
    let mqtt_rt = support::runtime();
    mqtt_rt.block_on(async {
        // A phone with a session that outlives its connection by 1 s, then goes away.
        let mut phone = V5::connect(v5::persistent("phone-9", mqtt, 1)).await;
        phone.subscribe_ok("users/9/inbox", 1).await;
        phone.disconnect().await;
        // Two messages for it: the first waits (queued offline), the second pushes it out
        // of the one-message queue (dropped, queue_full) and waits in its place.
        let mut backend = V5::connect(v5::options("backend", mqtt)).await;
        backend.publish("users/9/inbox", 1, b"first message").await;
        backend.publish("users/9/inbox", 1, b"second").await;
        backend.disconnect().await;
    });
    wait_until("every kind", || {
        let g = got.lock().unwrap();
        webhook::EVENT_KINDS
            .iter()
            .all(|k| !of_kind(&g.events, k).is_empty())
    });
    let g = got.lock().unwrap();
    assert_eq!(g.bad_signatures, 0);
    let connected = of_kind(&g.events, "client.connected");
    let phone = connected
        .iter()
        .find(|e| e["client_id"] == "phone-9")
        .expect("phone-9 connected");
    assert_eq!(phone["protocol_version"], 5);
    assert_eq!(phone["transport"], "mqtt");
    assert_eq!(phone["clean_start"], false);
    assert!(
        phone["address"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{phone}"
    );
    let created = of_kind(&g.events, "session.created");
    assert!(
        created
            .iter()
            .any(|e| e["client_id"] == "phone-9" && e["expiry_interval"] == 1)
    );
    let gone = of_kind(&g.events, "client.disconnected");
    assert!(
        gone.iter()
            .any(|e| e["client_id"] == "backend" && e["reason"] == "client_disconnect"),
        "{gone:?}"
    );
    let queued = of_kind(&g.events, "message.queued_offline");
    assert_eq!(queued.len(), 2, "{queued:?}");
    assert_eq!(queued[0]["client_id"], "phone-9");
    assert_eq!(queued[0]["topic"], "users/9/inbox");
    assert_eq!(queued[0]["qos"], 1);
    assert_eq!(queued[0]["payload_size"], 13);
    assert_eq!(queued[0]["payload_preview"], "Zmlycw==", "'firs', base64");
    assert_eq!(queued[0]["preview_truncated"], true);
    let dropped = of_kind(&g.events, "message.dropped");
    assert_eq!(dropped[0]["reason"], "queue_full");
    assert_eq!(dropped[0]["client_id"], "phone-9");
    let expired = of_kind(&g.events, "session.expired");
    assert_eq!(expired[0]["client_id"], "phone-9");
    assert_eq!(
        b.metric("ringmq_webhook_dropped_total{reason=\"queue_full\"}"),
        0
    );
}

#[test]
fn a_kicked_client_is_reported_kicked() {
    use support::v5::{self, V5};
    let rt = runtime();
    let (addr, got) = listening(&rt);
    let b = hooked_broker(
        format!("http://{addr}/hook#client.disconnected"),
        &["--webhook-batch-ms", "50"],
    );
    let mqtt_rt = support::runtime();
    let mut c = mqtt_rt.block_on(V5::connect(v5::options("kick-me", b.mqtt_addr())));
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let status = reqwest::blocking::Client::new()
        .delete(format!(
            "http://{}/api/v1/clients/kick-me",
            b.metrics_addr()
        ))
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 204);
    mqtt_rt.block_on(c.wait_closed());
    wait_until("the event", || !got.lock().unwrap().events.is_empty());
    let g = got.lock().unwrap();
    assert_eq!(g.events[0]["client_id"], "kick-me");
    assert_eq!(g.events[0]["reason"], "kicked");
}

#[test]
fn a_receiver_that_stays_down_costs_the_broker_drops_not_service() {
    use support::v311::{self, V4};
    // A port nobody listens on: every request fails and is retried.
    let dead = closed_port();
    let b = hooked_broker(
        format!("http://{dead}/hook"),
        &["--webhook-max-pending", "20"],
    );
    let mqtt = b.mqtt_addr();
    let rt = support::runtime();
    rt.block_on(async {
        for i in 0..30 {
            V4::connect(v311::options(&format!("churn-{i}"), mqtt))
                .await
                .disconnect()
                .await;
        }
        // MQTT goes on as usual meanwhile.
        let mut sub = V4::connect(v311::options("still-served", mqtt)).await;
        sub.subscribe_ok("alive", 1).await;
        sub.publish("alive", 1, b"yes").await;
        assert_eq!(sub.next_publish().await.text(), "yes");
    });
    // 30 connects and disconnects are 90 events (connected, session.created,
    // disconnected): an endpoint holds 20 and one batch, the rest are dropped and counted.
    let dropped = b.wait_for_metric(
        "ringmq_webhook_dropped_total{reason=\"pending_full\"}",
        WAIT,
        |n| n > 0,
    );
    assert!(b.metric("ringmq_webhook_pending") <= 20 + 100, "bounded");
    b.wait_for_metric("ringmq_webhook_failed_requests_total", WAIT, |n| n >= 1);
    assert_eq!(b.metric("ringmq_webhook_delivered_total"), 0);
    assert!(dropped >= 1);
}
