//! The control plane's HTTP server in the real binary, through an independent HTTP
//! client (reqwest): the API's answers hold to the OpenAPI document the binary serves,
//! keys guard the API (not /metrics), errors are JSON, many requests are served while a
//! client trickles, and the log flags work.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use reqwest::blocking::Client;
use rumqttc::{Client as MqttClient, MqttOptions, QoS};
use serde_json::Value;
use support::{Broker, TempDir, parse_metric, run};

const KEY: &str = "ops-key-0123456789abcdef";

fn client() -> Client {
    // reqwest is built without a bundled crypto provider (the broker installs ring's).
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn url(b: &Broker, path: &str) -> String {
    format!("http://{}{path}", b.metrics_addr())
}

/// The JSON Schema of `method path status` in `doc`, with the components beside it.
fn schema_of(doc: &Value, method: &str, path: &str, status: &str) -> Value {
    let mut response = &doc["paths"][path][method]["responses"][status];
    if let Some(r) = response.get("$ref").and_then(Value::as_str) {
        response = doc.pointer(r.trim_start_matches('#')).unwrap();
    }
    let schema = response
        .pointer("/content/application~1json/schema")
        .unwrap_or_else(|| panic!("no JSON schema for {method} {path} {status}"));
    let mut root = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"].clone(),
    });
    for (k, v) in schema.as_object().unwrap() {
        root[k] = v.clone();
    }
    root
}

fn assert_valid(schema: &Value, instance: &Value, what: &str) {
    let v = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = v.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{what}: {errors:?}\n{instance:#}");
}

fn mqtt_client(b: &Broker, id: &str) -> (MqttClient, std::thread::JoinHandle<()>) {
    let addr = b.mqtt_addr();
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    let (c, mut conn) = MqttClient::new(o, 100);
    let t = std::thread::spawn(move || {
        for event in conn.iter() {
            if event.is_err() {
                break;
            }
        }
    });
    (c, t)
}

#[test]
fn the_served_document_is_true_of_the_binary() {
    let b = Broker::start(&[]);
    let http = client();
    let doc: Value = http
        .get(url(&b, "/api/v1/openapi.json"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    // Every route the document describes is mounted in the binary, and served.
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/control/api/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut listed: Vec<&String> = paths.keys().collect();
    let mut all: Vec<&String> = written["paths"].as_object().unwrap().keys().collect();
    listed.sort();
    all.sort();
    assert_eq!(listed, all);

    // Something for each route to show: a connected client with a subscription and an
    // offline session with a queued message, a retained message.
    let (sub, sub_thread) = mqtt_client(&b, "doc-client");
    sub.subscribe("doc/#", QoS::AtLeastOnce).unwrap();
    let mut o = MqttOptions::new("doc-offline", "127.0.0.1", b.mqtt_addr().port());
    o.set_clean_session(false);
    let (off, mut conn) = MqttClient::new(o, 10);
    off.subscribe("doc/#", QoS::AtLeastOnce).unwrap();
    for event in conn.iter() {
        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) = event {
            break;
        }
    }
    off.disconnect().unwrap();
    for event in conn.iter() {
        if event.is_err() {
            break;
        }
    }
    let post = |path: &str, body: Value| http.post(url(&b, path)).json(&body).send().unwrap();
    let publish = serde_json::json!({"topic": "doc/t", "payload": "p", "qos": 1, "retain": true});
    // Every answer is checked against the document: status and JSON schema.
    let check = |method: &str, path: &str, r: reqwest::blocking::Response| {
        let status = r.status().as_u16().to_string();
        let documented = doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is not in the document"));
        assert!(
            documented.contains_key(&status),
            "{method} {path}: {status}"
        );
        let text = r.text().unwrap();
        if status == "204" {
            assert!(text.is_empty(), "{method} {path}: 204 with {text:?}");
            return;
        }
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_valid(&schema_of(&doc, method, path, &status), &body, path);
    };
    check(
        "post",
        "/api/v1/publish",
        post("/api/v1/publish", publish.clone()),
    );
    let batch = serde_json::json!({"messages": [publish, {"topic": "$bad", "payload": ""}]});
    let r = post("/api/v1/publish/batch", batch);
    assert_eq!(r.status(), 400, "a bad message refuses the whole batch");
    let batch = serde_json::json!({"messages": [{"topic": "doc/u", "payload": "p", "qos": 1}]});
    check(
        "post",
        "/api/v1/publish/batch",
        post("/api/v1/publish/batch", batch),
    );
    let gets = [
        ("/api/v1/stats", "/api/v1/stats"),
        ("/api/v1/info", "/api/v1/info"),
        ("/api/v1/openapi.json", "/api/v1/openapi.json"),
        ("/api/v1/clients", "/api/v1/clients"),
        ("/api/v1/clients/{client_id}", "/api/v1/clients/doc-client"),
        ("/api/v1/sessions", "/api/v1/sessions?connected=false"),
        (
            "/api/v1/sessions/{client_id}",
            "/api/v1/sessions/doc-offline",
        ),
        (
            "/api/v1/sessions/{client_id}/queue",
            "/api/v1/sessions/doc-offline/queue",
        ),
        (
            "/api/v1/subscriptions",
            "/api/v1/subscriptions?filter=doc%2F%23",
        ),
        ("/api/v1/retained", "/api/v1/retained?filter=doc%2F%2B"),
        ("/api/v1/retained/{topic}", "/api/v1/retained/doc%2Ft"),
        ("/api/v1/topics/top", "/api/v1/topics/top"),
        // Errors are documented too.
        ("/api/v1/clients/{client_id}", "/api/v1/clients/nobody"),
        ("/api/v1/clients", "/api/v1/clients?limit=0"),
    ];
    for (template, path) in gets {
        let r = http.get(url(&b, path)).send().unwrap();
        check("get", template, r);
    }
    let (_, queue) = b.http_get("/api/v1/sessions/doc-offline/queue");
    assert!(queue.contains("\"topic\":\"doc/t\""), "{queue}");
    for (template, path) in [
        ("/api/v1/retained/{topic}", "/api/v1/retained/doc%2Ft"),
        ("/api/v1/clients/{client_id}", "/api/v1/clients/doc-client"),
        (
            "/api/v1/sessions/{client_id}",
            "/api/v1/sessions/doc-offline",
        ),
        (
            "/api/v1/sessions/{client_id}",
            "/api/v1/sessions/doc-offline",
        ),
    ] {
        check(
            "delete",
            template,
            http.delete(url(&b, path)).send().unwrap(),
        );
    }
    let _ = sub_thread.join();
    // A path the document does not list is not served: JSON 404.
    let r = http.get(url(&b, "/api/v1/nope")).send().unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().unwrap()["code"], "not_found");
    let r = http.post(url(&b, "/api/v1/stats")).send().unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().unwrap()["code"], "method_not_allowed");
}

#[test]
fn stats_agree_with_metrics_and_info_names_the_ws_listener() {
    let b = Broker::start(&[]);
    let http = client();
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(mqtt_client(&b, &format!("stats-{i}")));
    }
    b.wait_for_metric("ringmq_connections_current", Duration::from_secs(30), |n| {
        n == 5
    });
    for (c, _) in &clients {
        c.publish("stats/t", QoS::AtMostOnce, false, "x").unwrap();
    }
    b.wait_for_metric("ringmq_messages_in", Duration::from_secs(30), |n| n == 5);
    // The sampler takes a sample a second: wait for one that has the publishes.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let s: Value = http
            .get(url(&b, "/api/v1/stats"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if s["counters"]["messages_in"] == 5 {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stats never saw 5 messages: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let metrics = b.metrics();
    assert_eq!(stats["gauges"]["connections_current"], 5);
    assert_eq!(
        stats["counters"]["connections_total"].as_u64(),
        parse_metric(&metrics, "ringmq_connections_total")
    );
    assert_eq!(stats["shards"], 2);
    assert_eq!(stats["per_shard"].as_array().unwrap().len(), 2);
    let per_shard: u64 = stats["per_shard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["gauges"]["connections_current"].as_u64().unwrap())
        .sum();
    assert_eq!(per_shard, 5);
    assert!(stats["rates"]["messages_in"].as_f64().unwrap() >= 0.0);

    let info: Value = http
        .get(url(&b, "/api/v1/info"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(info["ws"]["port"], b.ws_addr().port());
    assert_eq!(info["ws"]["path"], "/mqtt");
    assert_eq!(info["mqtt"]["port"], b.mqtt_addr().port());
    assert_eq!(info["broker_api"], true);
    for (c, t) in clients {
        let _ = c.disconnect();
        let _ = t.join();
    }
}

#[test]
fn api_keys_guard_the_api_but_not_the_scrape_endpoints() {
    let dir = TempDir::new("keys");
    let keys = dir.file("keys", &format!("# operators\n{KEY}\n"));
    let b = Broker::start(&["--api-key-file", keys.to_str().unwrap()]);
    let http = client();
    let r = http.get(url(&b, "/api/v1/stats")).send().unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(r.json::<Value>().unwrap()["code"], "unauthorized");
    let r = http
        .get(url(&b, "/api/v1/stats"))
        .bearer_auth("not-the-key-at-all-no")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(url(&b, "/api/v1/stats"))
        .bearer_auth(KEY)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(http.get(url(&b, "/metrics")).send().unwrap().status(), 200);
    assert_eq!(http.get(url(&b, "/healthz")).send().unwrap().status(), 200);
    assert_eq!(http.get(url(&b, "/")).send().unwrap().status(), 200);
}

#[test]
fn bad_key_files_and_webhook_flags_fail_at_start() {
    let dir = TempDir::new("badkeys");
    let short = dir.file("short", "tooshort\n");
    let out = run(&[
        "--api-key-file",
        short.to_str().unwrap(),
        "--mqtt",
        "127.0.0.1:0",
        "--ws",
        "none",
        "--http",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 characters"));
    let out = run(&["--webhook-url", "http://127.0.0.1:9/hook"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--webhook-secret"));
    let out = run(&[
        "--webhook-url",
        "http://127.0.0.1:9/#client.exploded",
        "--webhook-secret",
        "s",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown webhook event"));
    let out = run(&["--log-format", "yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_http_flag_and_its_metrics_alias_both_work() {
    let b = Broker::start(&["--http", "127.0.0.1:0", "--ws", "none"]);
    assert_eq!(b.http_get("/healthz").0, 200);
    drop(b);
    let b = Broker::start(&["--metrics", "127.0.0.1:0", "--ws", "none"]);
    assert_eq!(b.http_get("/healthz").0, 200);
}

#[test]
fn many_requests_are_served_while_a_client_trickles() {
    let b = Broker::start(&[]);
    let addr: SocketAddr = b.metrics_addr();
    // A client that sends its request a byte at a time and an API body that never ends.
    let mut slow_head = TcpStream::connect(addr).unwrap();
    slow_head
        .write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let mut slow_body = TcpStream::connect(addr).unwrap();
    slow_body
        .write_all(b"POST /api/v1/publish HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .unwrap();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let http = client();
            let base = format!("http://{addr}");
            std::thread::spawn(move || {
                let mut ok = 0;
                for i in 0..25 {
                    let path = if i % 2 == 0 {
                        "/metrics"
                    } else {
                        "/api/v1/stats"
                    };
                    if http
                        .get(format!("{base}{path}"))
                        .send()
                        .is_ok_and(|r| r.status() == 200)
                    {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    for _ in 0..5 {
        let _ = slow_head.write_all(b"a");
        std::thread::sleep(Duration::from_millis(50));
    }
    let served: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(served, 200);
    // The server closes the trickling head on its own.
    slow_head
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = slow_head.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[test]
fn logs_are_json_lines_with_log_format_json() {
    let b = Broker::start(&["--log-format", "json", "--log-level", "info"]);
    b.signal(libc::SIGUSR1);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stderr = b.stderr();
        let lines: Vec<Value> = stderr
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if let Some(l) = lines.iter().find(|l| l["fields"]["message"] == "SIGUSR1") {
            assert_eq!(l["level"], "INFO");
            assert!(
                l["fields"]["counters"]
                    .as_str()
                    .unwrap()
                    .contains("connections_total=")
            );
            assert!(
                stderr
                    .lines()
                    .all(|l| serde_json::from_str::<Value>(l).is_ok()),
                "{stderr}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no JSON SIGUSR1 line in:\n{stderr}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn configured_webhooks_are_counted_in_stats_and_metrics() {
    let b = Broker::start(&[
        "--webhook-url",
        "http://127.0.0.1:9/a#client.connected",
        "--webhook-url",
        "http://127.0.0.1:9/b",
        "--webhook-secret",
        "s3cret-s3cret-s3cret",
    ]);
    let stats: Value = client()
        .get(url(&b, "/api/v1/stats"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stats["webhooks"]["endpoints"], 2);
    let metrics = b.metrics();
    assert!(
        metrics.contains("\nringmq_webhook_dropped_total{reason=\"queue_full\"} 0\n"),
        "{metrics}"
    );
}
