//! The shard-backed API in the real binary, through independent clients: reqwest for
//! HTTP, rumqttc (3.1.1 and 5.0, TCP and WebSocket), raw MQTT sockets and mosquitto_pub
//! for MQTT. An HTTP publish reaches subscribers over TCP and WebSocket and an offline
//! session's queue; kicking a client ends it with MQTT 5's Administrative action; listings
//! page by cursor across the shards; bad requests get their documented status; slow and
//! many requests at once stall nothing.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};
use support::v5;
use support::{Broker, RawMqtt, TempDir, V4, V5, WAIT, prop_u32, raw_v5, raw_v311_client};

fn client() -> Client {
    // reqwest is built without a bundled crypto provider (the broker installs ring's).
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder().timeout(WAIT).build().unwrap()
}

/// The API as a test talks to it.
struct Api {
    http: Client,
    base: String,
}

impl Api {
    fn of(b: &Broker) -> Api {
        Api {
            http: client(),
            base: format!("http://{}", b.metrics_addr()),
        }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap();
        answer(r)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .unwrap();
        answer(r)
    }

    fn delete(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .delete(format!("{}{path}", self.base))
            .send()
            .unwrap();
        answer(r)
    }

    /// Every item of a listing, following `next` page by page; also how many pages.
    fn all_pages(&self, path: &str) -> (Vec<Value>, usize) {
        let mut items = Vec::new();
        let mut pages = 0;
        let mut after: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &after {
                Some(a) => format!("{path}{sep}after={}", encode(a)),
                None => path.to_string(),
            };
            let (status, page) = self.get(&url);
            assert_eq!(status, 200, "{url}: {page}");
            pages += 1;
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => return (items, pages),
            }
            assert!(pages < 1000, "{path}: pages never end");
        }
    }
}

fn answer(r: reqwest::blocking::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, body)
}

/// Percent-encodes what a path segment or query value must not hold as is.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Asserts an error answer: the status and the JSON error's code.
#[track_caller]
fn assert_error(got: (u16, Value), status: u16, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert!(
        !got.1["message"].as_str().unwrap_or_default().is_empty(),
        "{}",
        got.1
    );
}

fn api_addr(b: &Broker) -> SocketAddr {
    b.metrics_addr()
}

/// Sends `head`, then more than 4 MiB of body (in chunks when `chunked`), from a raw
/// socket; returns the answer's status and JSON body.
fn oversized(addr: SocketAddr, head: &str, chunked: bool) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let piece = vec![b'x'; 64 * 1024];
    for _ in 0..80 {
        let sent = if chunked {
            s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .and_then(|()| s.write_all(&piece))
                .and_then(|()| s.write_all(b"\r\n"))
        } else {
            s.write_all(&piece)
        };
        if sent.is_err() {
            break;
        }
    }
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut text);
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // The answer may be chunked itself: the JSON is the part between the braces.
    let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

/// Polls `what` until `ok` holds; panics after `WAIT`.
fn eventually<T: std::fmt::Debug>(what: &str, get: impl Fn() -> T, ok: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = get();
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: last seen {v:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_http_publish_reaches_tcp_ws_and_offline_subscribers() {
    let b = Broker::start(&[]);
    let api = Api::of(&b);
    let rt = support::runtime();
    let addr = b.mqtt_addr();
    let topic = "push/users/42/inbox";
    let (mut tcp, mut ws) = rt.block_on(async {
        let mut tcp = V4::connect(support::v311::options("tcp-sub", addr)).await;
        tcp.subscribe_ok("push/users/+/inbox", 1).await;
        let mut ws = V5::connect(v5::ws_options("ws-sub", &b.ws_url())).await;
        ws.subscribe_ok("push/#", 1).await;
        // A phone's persistent session, then the phone goes away.
        let mut phone = V5::connect(v5::persistent("phone-42", addr, 3600)).await;
        phone.subscribe_ok(topic, 1).await;
        phone.disconnect().await;
        (tcp, ws)
    });
    let (status, session) = eventually(
        "phone-42 offline",
        || api.get("/api/v1/sessions/phone-42"),
        |(_, s)| s["connected"] == false,
    );
    assert_eq!(status, 200);
    assert_eq!(session["expiry_interval"], 3600);

    let (status, routed) = api.post(
        "/api/v1/publish",
        &json!({
            "topic": topic,
            "payload": "wake up",
            "qos": 1,
            "properties": {
                "content_type": "text/plain",
                "user_properties": [{"name": "from", "value": "backend"}]
            }
        }),
    );
    assert_eq!((status, routed), (200, json!({"routed": 3})));

    rt.block_on(async {
        let got = tcp.next_publish().await;
        assert_eq!((got.topic.as_str(), got.qos), (topic, 1));
        assert_eq!(got.text(), "wake up");
        let got = ws.next_publish().await;
        assert_eq!(got.text(), "wake up");
        let props = got.props();
        assert_eq!(props.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            props.user_properties,
            [("from".to_string(), "backend".to_string())]
        );
    });

    // The offline session holds it, as the API shows, until the phone comes back.
    let (status, queue) = api.get("/api/v1/sessions/phone-42/queue");
    assert_eq!(status, 200, "{queue}");
    let items = queue["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{queue}");
    assert_eq!(items[0]["topic"], topic);
    assert_eq!(items[0]["payload_size"], 7);
    assert_eq!(items[0]["payload_preview"], "d2FrZSB1cA==");
    rt.block_on(async {
        let mut phone = V5::connect(v5::persistent("phone-42", addr, 3600)).await;
        let got = phone.next_publish().await;
        assert_eq!((got.topic.as_str(), got.text()), (topic, "wake up".into()));
        phone.disconnect().await;
    });

    // A batch: one result per message, in order; base64 payloads.
    let (status, batch) = api.post(
        "/api/v1/publish/batch",
        &json!({"messages": [
            {"topic": "push/users/7/inbox", "payload": "AAEC", "encoding": "base64", "qos": 0},
            {"topic": "nobody/listens", "payload": "x"},
        ]}),
    );
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch, json!({"results": [{"routed": 2}, {"routed": 0}]}));
    rt.block_on(async {
        assert_eq!(tcp.next_publish().await.payload, [0, 1, 2]);
        assert_eq!(ws.next_publish().await.payload, [0, 1, 2]);
    });
    assert_eq!(b.metric("ringmq_api_messages_in"), 3);
}

#[test]
fn kicking_a_client_ends_it_with_administrative_action() {
    let b = Broker::start(&[]);
    let api = Api::of(&b);
    let addr = b.mqtt_addr();
    // MQTT 5 with a session that outlives the connection.
    let mut expiry = Vec::new();
    prop_u32(0x11, 600, &mut expiry);
    let (mut v5_conn, ack) = raw_v5(addr, "kick-me-5", true, &expiry);
    assert_eq!(ack.v5_connack().1, 0);
    let mut v311_conn = raw_v311_client(addr, "kick-me-311", 60);
    b.wait_for_metric("ringmq_connections_current", WAIT, |n| n == 2);
    let (status, detail) = api.get("/api/v1/clients/kick-me-5");
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["protocol_version"], 5);
    assert_eq!(detail["transport"], "mqtt");
    let local = v5_conn.local_addr().unwrap();
    assert_eq!(detail["address"], local.to_string(), "the peer address");

    assert_eq!(api.delete("/api/v1/clients/kick-me-5"), (204, Value::Null));
    let packets = v5_conn.packets_until_closed();
    let disconnect = packets
        .iter()
        .find(|p| p.first == 0xE0)
        .unwrap_or_else(|| panic!("no DISCONNECT before the close: {packets:02x?}"));
    let (reason, _props) = disconnect.v5_disconnect();
    assert_eq!(reason, 0x98, "Administrative action");

    assert_eq!(
        api.delete("/api/v1/clients/kick-me-311"),
        (204, Value::Null)
    );
    v311_conn.expect_closed_silently("a kicked 3.1.1 client");

    b.wait_for_metric("ringmq_connections_current", WAIT, |n| n == 0);
    assert_error(api.get("/api/v1/clients/kick-me-5"), 404, "not_found");
    assert_error(api.delete("/api/v1/clients/kick-me-5"), 404, "not_found");
    // The session stays, as its expiry says; discarding it ends it.
    let (status, s) = api.get("/api/v1/sessions/kick-me-5");
    assert_eq!((status, &s["connected"]), (200, &json!(false)), "{s}");
    assert_eq!(api.delete("/api/v1/sessions/kick-me-5"), (204, Value::Null));
    assert_error(api.get("/api/v1/sessions/kick-me-5"), 404, "not_found");
}

#[test]
fn discarding_a_connected_session_disconnects_its_client() {
    let b = Broker::start(&[]);
    let api = Api::of(&b);
    let rt = support::runtime();
    let addr = b.mqtt_addr();
    let mut c = rt.block_on(V5::connect(v5::persistent("discard-me", addr, 3600)));
    rt.block_on(c.subscribe_ok("discard/me", 1));
    assert_eq!(
        api.delete("/api/v1/sessions/discard-me"),
        (204, Value::Null)
    );
    rt.block_on(c.wait_closed());
    assert_error(api.get("/api/v1/sessions/discard-me"), 404, "not_found");
    let (_, subs) = api.get("/api/v1/subscriptions?filter=discard%2Fme");
    assert_eq!(
        subs["items"],
        json!([]),
        "the session's subscriptions went with it"
    );
    // A new connection under the id starts afresh.
    let c = rt.block_on(V5::connect(v5::persistent("discard-me", addr, 3600)));
    assert!(!c.connack.session_present);
}

#[test]
fn listings_page_by_cursor_across_the_shards() {
    let b = Broker::start(&["--shards", "3"]);
    let api = Api::of(&b);
    let addr = b.mqtt_addr();
    let n = 25;
    let conns: Vec<TcpStream> = (0..n)
        .map(|i| {
            let mut s = raw_v311_client(addr, &format!("page-{i:02}"), 60);
            s.send(&support::subscribe(4, 1, "pages/all", 1, &[]));
            let ack = s.read_packet();
            assert_eq!(ack.first, 0x90, "SUBACK");
            s
        })
        .collect();
    let _other = raw_v311_client(addr, "other-client", 60);
    b.wait_for_metric("ringmq_connections_current", WAIT, |c| c == n + 1);

    let want: Vec<String> = (0..n).map(|i| format!("page-{i:02}")).collect();
    let ids = |items: &[Value]| -> Vec<String> {
        items
            .iter()
            .map(|c| c["client_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (clients, pages) = api.all_pages("/api/v1/clients?prefix=page-&limit=10");
    assert_eq!(ids(&clients), want, "every client once, in id order");
    assert!(pages >= 3, "{pages} pages of at most 10");
    let shards: std::collections::BTreeSet<u64> = clients
        .iter()
        .map(|c| c["shard"].as_u64().unwrap())
        .collect();
    assert!(shards.len() > 1, "the clients are spread over the shards");
    assert!(
        clients
            .iter()
            .all(|c| c["address"].as_str().unwrap().starts_with("127.0.0.1:"))
    );

    let (subs, _) = api.all_pages("/api/v1/subscriptions?filter=pages%2Fall&limit=7");
    assert_eq!(ids(&subs), want);
    assert!(
        subs.iter()
            .all(|s| s["qos"] == 1 && s["filter"] == "pages/all")
    );

    let (sessions, _) = api.all_pages("/api/v1/sessions?limit=4");
    assert_eq!(sessions.len(), n as usize + 1);
    let (one_shard, _) = api.all_pages("/api/v1/clients?shard=1&limit=5");
    assert!(one_shard.iter().all(|c| c["shard"] == 1));
    assert!(!one_shard.is_empty());
    let (status, page) = api.get("/api/v1/clients?username=nobody");
    assert_eq!((status, &page["items"]), (200, &json!([])));
    drop(conns);
}

/// The API publishes as an operator: the ACL file does not bind it, while a client it
/// lets only read may not write the same topic. Clients are listed with the username the
/// rules know them by, and with their address and port while the shards also learn each
/// connection's IP for the per-address limit (both lookups of the peer address at once).
#[test]
fn the_api_publishes_past_the_acl_and_lists_usernames() {
    let dir = TempDir::new("api-acl");
    let acl = dir.file("acl", "user alice\ntopic read cmd/#\n");
    let b = Broker::start(&[
        "--acl-file",
        acl.to_str().unwrap(),
        "--max-connections-per-ip",
        "100",
    ]);
    let api = Api::of(&b);
    let rt = support::runtime();
    let addr = b.mqtt_addr();
    let mut alice = rt.block_on(async {
        let mut o = v5::options("alice-phone", addr);
        o.set_credentials("alice", "");
        let mut alice = V5::connect(o).await;
        alice.subscribe_ok("cmd/#", 1).await;
        // Her own PUBLISH to the topic is dropped: it reaches nobody, her included.
        alice.publish("cmd/door", 0, b"from alice").await;
        alice
    });
    let mut anonymous = rt.block_on(V5::connect(v5::options("no-name", addr)));

    let (status, routed) = api.post(
        "/api/v1/publish",
        &json!({"topic": "cmd/door", "payload": "open", "qos": 1}),
    );
    assert_eq!((status, routed), (200, json!({"routed": 1})));
    rt.block_on(async {
        let got = alice.next_publish().await;
        assert_eq!(
            (got.topic.as_str(), got.text()),
            ("cmd/door", "open".into())
        );
    });

    let (status, page) = api.get("/api/v1/clients");
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    let by_id = |id: &str| items.iter().find(|c| c["client_id"] == id).unwrap().clone();
    assert_eq!(by_id("alice-phone")["username"], "alice");
    assert_eq!(by_id("no-name")["username"], Value::Null);
    for c in items {
        let a: SocketAddr = c["address"].as_str().unwrap().parse().unwrap();
        assert!(a.ip().is_loopback() && a.port() != 0, "{c}");
    }
    let (_, only) = api.get("/api/v1/clients?username=alice");
    let ids: Vec<&Value> = only["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["client_id"])
        .collect();
    assert_eq!(ids, [&json!("alice-phone")]);
    let (status, detail) = api.get("/api/v1/clients/alice-phone");
    assert_eq!((status, &detail["username"]), (200, &json!("alice")));
    rt.block_on(async {
        alice.no_publish().await;
        anonymous.no_publish().await;
    });
}

#[test]
fn retained_messages_are_listed_read_and_deleted() {
    support::js::require_program("mosquitto_pub", "--help");
    let b = Broker::start(&[]);
    let api = Api::of(&b);
    let addr = b.mqtt_addr();
    let (status, _) = api.post(
        "/api/v1/publish",
        &json!({"topic": "status/a", "payload": "up", "qos": 1, "retain": true,
                "properties": {"content_type": "text/plain"}}),
    );
    assert_eq!(status, 200);
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-t", "status/b", "-m", "down", "-r", "-q", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed = eventually(
        "both retained",
        || {
            api.all_pages("/api/v1/retained?filter=status%2F%2B&limit=1")
                .0
        },
        |items| items.len() == 2,
    );
    let topics: Vec<&str> = listed
        .iter()
        .map(|r| r["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["status/a", "status/b"]);
    let (status, m) = api.get("/api/v1/retained/status%2Fa");
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["payload"], "dXA=");
    assert_eq!(m["qos"], 1);
    assert_eq!(m["properties"]["content_type"], "text/plain");

    assert_eq!(
        api.delete("/api/v1/retained/status%2Fa"),
        (204, Value::Null)
    );
    assert_error(api.get("/api/v1/retained/status%2Fa"), 404, "not_found");
    assert_error(api.delete("/api/v1/retained/status%2Fa"), 404, "not_found");
    // Gone on every shard: a new subscriber on either shard gets only status/b.
    let rt = support::runtime();
    for i in 0..4 {
        let got = rt.block_on(async {
            let mut c = V4::connect(support::v311::options(&format!("late-{i}"), addr)).await;
            c.subscribe_ok("status/#", 1).await;
            c.publishes_within(Duration::from_millis(700)).await
        });
        let topics: Vec<&str> = got.iter().map(|g| g.topic.as_str()).collect();
        assert_eq!(topics, ["status/b"]);
    }
}

#[test]
fn the_busiest_topics_come_first() {
    let b = Broker::start(&[]);
    let api = Api::of(&b);
    let rt = support::runtime();
    rt.block_on(async {
        let mut c = V4::connect(support::v311::options("busy", b.mqtt_addr())).await;
        for i in 0..60 {
            let topic = if i % 6 == 0 {
                "quiet/topic"
            } else {
                "busy/topic"
            };
            c.publish(topic, 1, b"x").await;
        }
    });
    let (_, top) = eventually(
        "the rates",
        || api.get("/api/v1/topics/top?limit=5"),
        |(_, t)| t["topics"].as_array().is_some_and(|a| a.len() == 2),
    );
    let topics = top["topics"].as_array().unwrap();
    assert_eq!(topics[0]["topic"], "busy/topic");
    assert_eq!(topics[1]["topic"], "quiet/topic");
    assert!(
        topics[0]["messages_per_second"].as_f64().unwrap()
            > topics[1]["messages_per_second"].as_f64().unwrap()
    );
}

#[test]
fn bad_requests_get_their_documented_status() {
    let b = Broker::start(&["--max-packet-size", "1024"]);
    let api = Api::of(&b);
    let raw = |body: &str, content_type: &str| {
        let r = api
            .http
            .post(format!("{}/api/v1/publish", api.base))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .unwrap();
        answer(r)
    };
    assert_error(raw("{\"topic\": ", "application/json"), 400, "invalid_json");
    assert_error(
        raw("{\"topic\": \"a\", \"colour\": 1}", "application/json"),
        400,
        "invalid_json",
    );
    assert_error(
        raw("{\"topic\": \"a\"}", "text/plain"),
        415,
        "unsupported_media_type",
    );
    let publish = |body: Value| api.post("/api/v1/publish", &body);
    assert_error(publish(json!({"topic": "a/+/b"})), 400, "invalid_topic");
    assert_error(publish(json!({"topic": ""})), 400, "invalid_topic");
    assert_error(publish(json!({"topic": "$SYS/x"})), 400, "invalid_topic");
    assert_error(
        publish(json!({"topic": "a", "qos": 3})),
        400,
        "invalid_request",
    );
    assert_error(
        publish(json!({"topic": "a", "payload": "%%%", "encoding": "base64"})),
        400,
        "invalid_request",
    );
    assert_error(
        publish(json!({"topic": "a", "payload": "x".repeat(2000)})),
        400,
        "invalid_request",
    );
    // Over 4 MiB, declared or sent chunked: 413 (the server may answer before it has read
    // the body, so the body is written from a raw socket that ignores a closed pipe).
    let head = "POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    let declared = format!("{head}Content-Length: {}\r\n\r\n", (4 << 20) + 1);
    assert_error(
        oversized(api_addr(&b), &declared, false),
        413,
        "payload_too_large",
    );
    let chunked = format!("{head}Transfer-Encoding: chunked\r\n\r\n");
    assert_error(
        oversized(api_addr(&b), &chunked, true),
        413,
        "payload_too_large",
    );
    assert_error(
        api.post("/api/v1/publish/batch", &json!({"messages": []})),
        400,
        "invalid_request",
    );
    assert_error(api.get("/api/v1/clients/nobody-here"), 404, "not_found");
    assert_error(api.get("/api/v1/sessions/nobody-here"), 404, "not_found");
    assert_error(
        api.get("/api/v1/sessions/nobody-here/queue"),
        404,
        "not_found",
    );
    assert_error(
        api.get("/api/v1/retained/no%2Fsuch%2Ftopic"),
        404,
        "not_found",
    );
    assert_error(api.get("/api/v1/clients?limit=0"), 400, "invalid_request");
    assert_error(
        api.get("/api/v1/clients?limit=many"),
        400,
        "invalid_request",
    );
    assert_error(
        api.get("/api/v1/subscriptions?filter=a%2F%23%2Fb"),
        400,
        "invalid_topic",
    );
    assert_error(api.get("/api/v1/subscriptions"), 400, "invalid_request");
    assert_error(
        api.get("/api/v1/topics/top?limit=1000"),
        400,
        "invalid_request",
    );
    assert_error(api.get("/api/v1/clients?shard=7"), 400, "invalid_request");

    // A bad key, where keys are configured.
    let dir = TempDir::new("api-keys");
    let key = "ops-key-0123456789abcdef";
    let keys = dir.file("keys", &format!("{key}\n"));
    let b = Broker::start(&["--api-key-file", keys.to_str().unwrap()]);
    let api = Api::of(&b);
    let url = format!("{}/api/v1/publish", api.base);
    let body = json!({"topic": "a", "payload": "x"});
    let r = api.http.post(&url).json(&body).send().unwrap();
    assert_error(answer(r), 401, "unauthorized");
    let r = api
        .http
        .post(&url)
        .bearer_auth("wrong-key-0123456789")
        .json(&body)
        .send();
    assert_error(answer(r.unwrap()), 401, "unauthorized");
    let r = api
        .http
        .post(&url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(answer(r), (200, json!({"routed": 0})));
}

#[test]
fn slow_and_many_requests_at_once_stall_nothing() {
    let b = Broker::start(&[]);
    let addr: SocketAddr = b.metrics_addr();
    let mqtt = b.mqtt_addr();
    let _clients: Vec<TcpStream> = (0..200)
        .map(|i| raw_v311_client(mqtt, &format!("many-{i:03}"), 60))
        .collect();
    b.wait_for_metric("ringmq_connections_current", WAIT, |n| n == 200);
    // Requests whose bodies trickle in and never end.
    let mut slow: Vec<TcpStream> = (0..64)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(
                b"POST /api/v1/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                  Content-Length: 100000\r\n\r\n{\"topic\": \"slow\", ",
            )
            .unwrap();
            s
        })
        .collect();
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let base = format!("http://{addr}");
            std::thread::spawn(move || {
                let http = client();
                let mut ok = 0;
                for i in 0..20 {
                    let r = match i % 4 {
                        0 => http.get(format!("{base}/api/v1/clients?limit=1000")).send(),
                        1 => http
                            .get(format!("{base}/api/v1/sessions?limit=1000"))
                            .send(),
                        2 => http
                            .post(format!("{base}/api/v1/publish"))
                            .json(&json!({"topic": format!("fast/{w}"), "payload": "x"}))
                            .send(),
                        _ => http
                            .get(format!("{base}/api/v1/clients/many-{w:03}"))
                            .send(),
                    };
                    if r.is_ok_and(|r| r.status() == 200) {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    for _ in 0..5 {
        for s in &mut slow {
            let _ = s.write_all(b" ");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let served: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(
        served, 160,
        "every request answered 200 while 64 others trickle"
    );
    let (status, page) = Api::of(&b).get("/api/v1/clients?limit=1000");
    assert_eq!(status, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 200);
}
