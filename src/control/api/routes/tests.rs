//! The API's handlers against the fake broker, every answer held to the OpenAPI
//! document, and the router compared with the document both ways.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::fake::FakeBroker;
use super::routes;
use crate::control::api::broker::BrokerError;
use crate::control::api::doc_check::{check, document};
use crate::control::api::keys::ApiKeys;
use crate::control::api::{self, Access, GUARD_STATUSES, Info, MAX_BODY, PeerAddr, RouteSpec};
use crate::control::stats::{Sampler, Sources};

fn sampler() -> Arc<Sampler> {
    Arc::new(Sampler::new(Sources {
        shards: (0..2)
            .map(|_| crate::broker::ShardFigures::default())
            .collect(),
        started: Instant::now(),
        webhooks: None,
    }))
}

fn info() -> Info {
    Info {
        version: "0.1.0",
        shards: 2,
        mqtt: None,
        ws: None,
        broker_api: false,
    }
}

fn app(fake: &Arc<FakeBroker>, access: Access) -> Router {
    api::router(sampler(), info(), access, Some(routes(fake.clone())))
}

const LOOPBACK: &str = "127.0.0.1:50000";

struct Answer {
    status: u16,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends one request from `peer` and returns the answer.
async fn send(app: &Router, peer: &str, request: Request<Body>) -> Answer {
    let mut request = request;
    request
        .extensions_mut()
        .insert(PeerAddr(peer.parse::<SocketAddr>().unwrap()));
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

/// Calls a route from loopback and holds the answer to the document: `template` is the
/// route's path as documented, `uri` the one requested.
async fn call(
    app: &Router,
    method: &str,
    template: &str,
    uri: &str,
    body: Option<Value>,
) -> Answer {
    let mut builder = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(v) => {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let answer = send(app, LOOPBACK, builder.body(body).unwrap()).await;
    check(
        &method.to_lowercase(),
        template,
        answer.status,
        &answer.body,
    );
    answer
}

fn all_specs(fake: &Arc<FakeBroker>) -> Vec<RouteSpec> {
    let mut specs = vec![api::STATS, api::INFO, api::OPENAPI];
    specs.extend_from_slice(routes(fake.clone()).specs());
    specs
}

const METHODS: [&str; 5] = ["get", "post", "delete", "put", "patch"];

/// (path, method) → statuses, from the document.
fn documented(doc: &Value) -> BTreeMap<(String, String), BTreeSet<u16>> {
    let mut out = BTreeMap::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let statuses = op["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|s| s.parse::<u16>().expect("numeric status"))
                .collect();
            out.insert((path.clone(), method.clone()), statuses);
        }
    }
    out
}

#[test]
fn the_router_and_the_document_agree() {
    let fake = Arc::new(FakeBroker::default());
    let doc = document();
    let mut from_router = BTreeMap::new();
    for spec in all_specs(&fake) {
        let mut statuses: BTreeSet<u16> = spec.statuses.iter().copied().collect();
        statuses.extend(GUARD_STATUSES);
        let key = (spec.path.to_string(), spec.verb.openapi().to_string());
        assert!(
            from_router.insert(key, statuses).is_none(),
            "{spec:?} twice"
        );
    }
    let from_doc = documented(&doc);
    for (key, statuses) in &from_router {
        let doc_statuses = from_doc
            .get(key)
            .unwrap_or_else(|| panic!("the router has {key:?}; openapi.json does not"));
        assert_eq!(
            statuses, doc_statuses,
            "statuses of {key:?}: router vs openapi.json"
        );
    }
    for key in from_doc.keys() {
        assert!(
            from_router.contains_key(key),
            "openapi.json has {key:?}; the router does not"
        );
    }
    // Every $ref points somewhere.
    let text = api::OPENAPI_DOCUMENT;
    for r in text.split("\"$ref\": \"#").skip(1) {
        let pointer = &r[..r.find('"').unwrap()];
        assert!(doc.pointer(pointer).is_some(), "dangling $ref #{pointer}");
    }
}

#[tokio::test]
async fn the_served_document_lists_only_the_mounted_routes() {
    let bare = api::router(sampler(), info(), Access::LoopbackOnly, None);
    let answer = call(
        &bare,
        "GET",
        "/api/v1/openapi.json",
        "/api/v1/openapi.json",
        None,
    )
    .await;
    assert_eq!(answer.status, 200);
    let served: Vec<(String, String)> = documented(&answer.json()).into_keys().collect();
    let want: Vec<(String, String)> = [api::INFO, api::OPENAPI, api::STATS]
        .iter()
        .map(|s| (s.path.to_string(), "get".to_string()))
        .collect();
    assert_eq!(served, want);
    // Unmounted routes are not there: 404 as JSON, not a stub answer.
    let a = send(
        &bare,
        LOOPBACK,
        Request::get("/api/v1/clients").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(a.status, 404, "not mounted");

    let fake = Arc::new(FakeBroker::default());
    let full = app(&fake, Access::LoopbackOnly);
    let answer = call(
        &full,
        "GET",
        "/api/v1/openapi.json",
        "/api/v1/openapi.json",
        None,
    )
    .await;
    assert_eq!(documented(&answer.json()).len(), all_specs(&fake).len());
}

#[tokio::test]
async fn stats_and_info_match_their_schemas() {
    let fake = Arc::new(FakeBroker::default());
    let app = app(&fake, Access::LoopbackOnly);
    let stats = call(&app, "GET", "/api/v1/stats", "/api/v1/stats", None).await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json()["shards"], 2);
    let info = call(&app, "GET", "/api/v1/info", "/api/v1/info", None).await;
    assert_eq!(info.json()["broker_api"], true);
}

#[tokio::test]
async fn publish_routes_a_message_and_says_to_how_many_sessions() {
    let fake = Arc::new(FakeBroker::with_clients(3));
    let app = app(&fake, Access::LoopbackOnly);
    let a = call(
        &app,
        "POST",
        "/api/v1/publish",
        "/api/v1/publish",
        Some(json!({"topic": "users/1/inbox", "payload": "hi", "qos": 1})),
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(a.json(), json!({"routed": 1}));
    let a = call(
        &app,
        "POST",
        "/api/v1/publish",
        "/api/v1/publish",
        Some(json!({
            "topic": "news", "payload": "AAEC", "encoding": "base64", "retain": true,
            "properties": {"content_type": "application/octet-stream",
                           "message_expiry_interval": 60,
                           "correlation_data": "eHl6",
                           "user_properties": [{"name": "k", "value": "v"}]}
        })),
    )
    .await;
    assert_eq!(a.json(), json!({"routed": 0}));
    let s = fake.state.lock().unwrap();
    assert_eq!(s.published.len(), 2);
    assert_eq!(s.published[0].payload, b"hi");
    assert_eq!(s.published[0].qos, 1);
    assert_eq!(s.published[1].payload, [0, 1, 2]);
    assert!(s.published[1].retain);
    assert_eq!(s.published[1].properties.user_properties[0].name, "k");
}

#[tokio::test]
async fn bad_publishes_get_their_documented_answers() {
    let fake = Arc::new(FakeBroker::with_clients(1));
    let app = app(&fake, Access::LoopbackOnly);
    let cases = [
        (
            json!({"topic": "a/+/b", "payload": "x"}),
            400,
            "invalid_topic",
        ),
        (
            json!({"topic": "$SYS/x", "payload": "x"}),
            400,
            "invalid_topic",
        ),
        (json!({"topic": "", "payload": "x"}), 400, "invalid_topic"),
        (json!({"topic": "a", "qos": 3}), 400, "invalid_request"),
        (
            json!({"topic": "a", "payload": "!!", "encoding": "base64"}),
            400,
            "invalid_request",
        ),
        (
            json!({"topic": "a", "encoding": "rot13"}),
            400,
            "invalid_json",
        ),
        (json!({"topic": "a", "colour": "blue"}), 400, "invalid_json"),
        (json!({"payload": "no topic"}), 400, "invalid_json"),
        (
            json!({"topic": "a", "properties": {"response_topic": "r/#"}}),
            400,
            "invalid_topic",
        ),
        (
            json!({"topic": "denied/x", "payload": "x"}),
            403,
            "forbidden",
        ),
    ];
    for (body, status, code) in cases {
        let a = call(
            &app,
            "POST",
            "/api/v1/publish",
            "/api/v1/publish",
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (a.status, a.json()["code"].as_str().unwrap()),
            (status, code),
            "{body}"
        );
    }

    // Not JSON at all.
    let req = Request::post("/api/v1/publish")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"topic\": "))
        .unwrap();
    let a = send(&app, LOOPBACK, req).await;
    check("post", "/api/v1/publish", a.status, &a.body);
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (400, json!("invalid_json"))
    );

    // Not declared as JSON.
    let req = Request::post("/api/v1/publish")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{\"topic\": \"a\"}"))
        .unwrap();
    let a = send(&app, LOOPBACK, req).await;
    check("post", "/api/v1/publish", a.status, &a.body);
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (415, json!("unsupported_media_type"))
    );

    // Too large, declared and streamed without a length.
    let big = format!(
        "{{\"topic\": \"a\", \"payload\": \"{}\"}}",
        "x".repeat(MAX_BODY)
    );
    let req = Request::post("/api/v1/publish")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(big.clone()))
        .unwrap();
    let a = send(&app, LOOPBACK, req).await;
    check("post", "/api/v1/publish", a.status, &a.body);
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (413, json!("payload_too_large"))
    );
    let stream = futures_stream(big.into_bytes());
    let req = Request::post("/api/v1/publish")
        .header(header::CONTENT_TYPE, "application/json")
        .body(stream)
        .unwrap();
    let a = send(&app, LOOPBACK, req).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (413, json!("payload_too_large"))
    );
    assert!(fake.state.lock().unwrap().published.is_empty());
}

/// A body of unknown length, in 64 KiB chunks.
fn futures_stream(bytes: Vec<u8>) -> Body {
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = bytes
        .chunks(64 * 1024)
        .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn a_batch_answers_per_message() {
    let fake = Arc::new(FakeBroker::with_clients(2));
    let app = app(&fake, Access::LoopbackOnly);
    let a = call(
        &app,
        "POST",
        "/api/v1/publish/batch",
        "/api/v1/publish/batch",
        Some(json!({"messages": [
            {"topic": "users/0/x", "payload": "a"},
            {"topic": "denied/y", "payload": "b"},
            {"topic": "users/1/z", "payload": "c", "qos": 2}
        ]})),
    )
    .await;
    assert_eq!(a.status, 200);
    let results = a.json()["results"].clone();
    assert_eq!(results[0], json!({"routed": 1}));
    assert_eq!(results[1]["error"]["code"], "forbidden");
    assert_eq!(results[2], json!({"routed": 1}));

    for (body, says) in [
        (json!({"messages": []}), "1 to 1000"),
        (
            json!({"messages": [{"topic": "ok"}, {"topic": "bad/#"}]}),
            "messages[1]",
        ),
    ] {
        let a = call(
            &app,
            "POST",
            "/api/v1/publish/batch",
            "/api/v1/publish/batch",
            Some(body),
        )
        .await;
        assert_eq!(a.status, 400);
        assert!(
            a.json()["message"].as_str().unwrap().contains(says),
            "{}",
            a.json()
        );
    }
    let many: Vec<Value> = (0..1001).map(|_| json!({"topic": "t"})).collect();
    let a = call(
        &app,
        "POST",
        "/api/v1/publish/batch",
        "/api/v1/publish/batch",
        Some(json!({ "messages": many })),
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        fake.state.lock().unwrap().published.len(),
        2,
        "nothing of a bad batch"
    );
}

#[tokio::test]
async fn clients_are_listed_page_by_page() {
    let fake = Arc::new(FakeBroker::with_clients(250));
    let app = app(&fake, Access::LoopbackOnly);
    let mut seen = Vec::new();
    let mut uri = "/api/v1/clients?limit=100".to_string();
    loop {
        let a = call(&app, "GET", "/api/v1/clients", &uri, None).await;
        assert_eq!(a.status, 200);
        let page = a.json();
        for c in page["items"].as_array().unwrap() {
            seen.push(c["client_id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => uri = format!("/api/v1/clients?limit=100&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 250);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, no repeats");

    let a = call(
        &app,
        "GET",
        "/api/v1/clients",
        "/api/v1/clients?prefix=client-01&shard=1",
        None,
    )
    .await;
    let ids: Vec<String> = a.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "client-011",
            "client-013",
            "client-015",
            "client-017",
            "client-019"
        ]
    );
    let a = call(
        &app,
        "GET",
        "/api/v1/clients",
        "/api/v1/clients?username=alice&limit=1000",
        None,
    )
    .await;
    assert_eq!(a.json()["items"].as_array().unwrap().len(), 84);

    for bad in ["limit=0", "limit=1001", "shard=x", "colour=blue"] {
        let a = call(
            &app,
            "GET",
            "/api/v1/clients",
            &format!("/api/v1/clients?{bad}"),
            None,
        )
        .await;
        assert_eq!(
            (a.status, a.json()["code"].clone()),
            (400, json!("invalid_request")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn one_client_is_shown_and_disconnected() {
    let fake = Arc::new(FakeBroker::with_clients(2));
    {
        let mut s = fake.state.lock().unwrap();
        let mut c = s.clients["client-000"].clone();
        c.summary.client_id = "site/a b".into();
        s.clients.insert("site/a b".into(), c);
    }
    let app = app(&fake, Access::LoopbackOnly);
    let t = "/api/v1/clients/{client_id}";
    let a = call(&app, "GET", t, "/api/v1/clients/client-001", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["transport"], "ws");
    assert_eq!(a.json()["subscriptions"][0]["filter"], "users/1/#");
    let a = call(&app, "GET", t, "/api/v1/clients/site%2Fa%20b", None).await;
    assert_eq!(
        (a.status, a.json()["client_id"].clone()),
        (200, json!("site/a b"))
    );
    let a = call(&app, "GET", t, "/api/v1/clients/nobody", None).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (404, json!("not_found"))
    );

    let a = call(&app, "DELETE", t, "/api/v1/clients/client-001", None).await;
    assert_eq!(a.status, 204);
    assert_eq!(fake.state.lock().unwrap().disconnected, ["client-001"]);
    let a = call(&app, "DELETE", t, "/api/v1/clients/client-001", None).await;
    assert_eq!(a.status, 404);
}

#[tokio::test]
async fn sessions_their_queues_and_discarding() {
    let fake = Arc::new(FakeBroker::with_clients(3));
    let app = app(&fake, Access::LoopbackOnly);
    let a = call(
        &app,
        "GET",
        "/api/v1/sessions",
        "/api/v1/sessions?connected=false",
        None,
    )
    .await;
    assert_eq!(a.json()["items"][0]["client_id"], "phone-offline");
    assert_eq!(a.json()["items"].as_array().unwrap().len(), 1);
    let a = call(
        &app,
        "GET",
        "/api/v1/sessions/{client_id}",
        "/api/v1/sessions/phone-offline",
        None,
    )
    .await;
    assert_eq!(a.json()["expires_at_ms"], 1_700_086_400_000u64);
    let q = "/api/v1/sessions/{client_id}/queue";
    let a = call(
        &app,
        "GET",
        q,
        "/api/v1/sessions/phone-offline/queue?limit=1",
        None,
    )
    .await;
    assert_eq!(a.json()["items"][0]["payload_preview"], "aGVsbG8=");
    let next = a.json()["next"].as_str().unwrap().to_string();
    let a = call(
        &app,
        "GET",
        q,
        &format!("/api/v1/sessions/phone-offline/queue?limit=1&after={next}"),
        None,
    )
    .await;
    assert_eq!(a.json()["items"][0]["position"], 1);
    assert!(a.json().get("next").is_none());
    let a = call(
        &app,
        "GET",
        q,
        "/api/v1/sessions/phone-offline/queue?after=x",
        None,
    )
    .await;
    assert_eq!(a.status, 400);
    let a = call(&app, "GET", q, "/api/v1/sessions/nobody/queue", None).await;
    assert_eq!(a.status, 404);

    let d = "/api/v1/sessions/{client_id}";
    assert_eq!(
        call(&app, "DELETE", d, "/api/v1/sessions/phone-offline", None)
            .await
            .status,
        204
    );
    assert_eq!(
        call(&app, "GET", d, "/api/v1/sessions/phone-offline", None)
            .await
            .status,
        404
    );
    assert_eq!(
        call(&app, "DELETE", d, "/api/v1/sessions/phone-offline", None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn subscriptions_retained_and_top_topics() {
    let fake = Arc::new(FakeBroker::with_clients(3));
    let app = app(&fake, Access::LoopbackOnly);
    let s = "/api/v1/subscriptions";
    let a = call(
        &app,
        "GET",
        s,
        "/api/v1/subscriptions?filter=users%2F2%2F%23",
        None,
    )
    .await;
    assert_eq!(a.json()["items"][0]["client_id"], "client-002");
    assert_eq!(a.json()["items"][0]["qos"], 1);
    let a = call(
        &app,
        "GET",
        s,
        "/api/v1/subscriptions?filter=a%2F%23%2Fb",
        None,
    )
    .await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (400, json!("invalid_topic"))
    );
    let a = call(&app, "GET", s, "/api/v1/subscriptions", None).await;
    assert_eq!(a.status, 400, "filter is required");

    for topic in ["news/today", "news/sport", "weather"] {
        call(
            &app,
            "POST",
            "/api/v1/publish",
            "/api/v1/publish",
            Some(json!({"topic": topic, "payload": "p", "retain": true})),
        )
        .await;
    }
    let a = call(
        &app,
        "GET",
        "/api/v1/retained",
        "/api/v1/retained?filter=news%2F%2B",
        None,
    )
    .await;
    let topics: Vec<Value> = a.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["topic"].clone())
        .collect();
    assert_eq!(topics, [json!("news/sport"), json!("news/today")]);
    let a = call(&app, "GET", "/api/v1/retained", "/api/v1/retained", None).await;
    assert_eq!(a.json()["items"].as_array().unwrap().len(), 3);
    let r = "/api/v1/retained/{topic}";
    let a = call(&app, "GET", r, "/api/v1/retained/news%2Ftoday", None).await;
    assert_eq!(
        (a.status, a.json()["payload"].clone()),
        (200, json!("cA=="))
    );
    let a = call(&app, "GET", r, "/api/v1/retained/news%2F%23", None).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (400, json!("invalid_topic"))
    );
    assert_eq!(
        call(&app, "DELETE", r, "/api/v1/retained/news%2Ftoday", None)
            .await
            .status,
        204
    );
    assert_eq!(
        call(&app, "GET", r, "/api/v1/retained/news%2Ftoday", None)
            .await
            .status,
        404
    );
    assert_eq!(
        call(&app, "DELETE", r, "/api/v1/retained/news%2Ftoday", None)
            .await
            .status,
        404
    );

    let a = call(
        &app,
        "GET",
        "/api/v1/topics/top",
        "/api/v1/topics/top?limit=5",
        None,
    )
    .await;
    assert_eq!(a.json()["topics"][0]["messages_per_second"], 12.5);
    let a = call(
        &app,
        "GET",
        "/api/v1/topics/top",
        "/api/v1/topics/top?limit=500",
        None,
    )
    .await;
    assert_eq!(a.status, 400);
}

#[tokio::test]
async fn a_broker_that_does_not_answer_in_time_is_503() {
    let fake = Arc::new(FakeBroker::with_clients(1));
    let app = app(&fake, Access::LoopbackOnly);
    fake.state.lock().unwrap().fail_next = Some(BrokerError::Timeout);
    let a = call(&app, "GET", "/api/v1/clients", "/api/v1/clients", None).await;
    assert_eq!(
        (a.status, a.json()["code"].clone()),
        (503, json!("unavailable"))
    );
    fake.state.lock().unwrap().fail_next = Some(BrokerError::Unavailable("shutting down".into()));
    let a = call(
        &app,
        "POST",
        "/api/v1/publish",
        "/api/v1/publish",
        Some(json!({"topic": "a"})),
    )
    .await;
    assert_eq!(a.status, 503);
}

#[tokio::test]
async fn without_keys_only_loopback_is_served() {
    let fake = Arc::new(FakeBroker::with_clients(1));
    let app = app(&fake, Access::LoopbackOnly);
    for peer in ["192.0.2.7:5000", "[2001:db8::1]:5000"] {
        let a = send(
            &app,
            peer,
            Request::get("/api/v1/stats").body(Body::empty()).unwrap(),
        )
        .await;
        check("get", "/api/v1/stats", a.status, &a.body);
        assert_eq!(
            (a.status, a.json()["code"].clone()),
            (403, json!("forbidden")),
            "{peer}"
        );
    }
    for peer in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
        let a = send(
            &app,
            peer,
            Request::get("/api/v1/stats").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(a.status, 200, "{peer}");
    }
}

#[tokio::test]
async fn with_keys_a_bearer_key_is_needed_from_anywhere() {
    let fake = Arc::new(FakeBroker::with_clients(1));
    let keys = ApiKeys::parse("0123456789abcdef-ops\n").unwrap();
    let app = app(&fake, Access::Keys(Arc::new(keys)));
    let ask = |auth: Option<&str>, peer: &'static str| {
        let app = app.clone();
        let auth = auth.map(str::to_string);
        async move {
            let mut b = Request::get("/api/v1/clients");
            if let Some(a) = auth {
                b = b.header(header::AUTHORIZATION, a);
            }
            send(&app, peer, b.body(Body::empty()).unwrap()).await
        }
    };
    for auth in [
        None,
        Some("Bearer wrong-key-wrong-key"),
        Some("Basic 0123456789abcdef-ops"),
        Some("Bearer"),
    ] {
        let a = ask(auth, LOOPBACK).await;
        check("get", "/api/v1/clients", a.status, &a.body);
        assert_eq!(
            (a.status, a.json()["code"].clone()),
            (401, json!("unauthorized")),
            "{auth:?}"
        );
        assert!(a.headers.get(header::WWW_AUTHENTICATE).is_some());
    }
    assert_eq!(
        ask(Some("Bearer 0123456789abcdef-ops"), LOOPBACK)
            .await
            .status,
        200
    );
    assert_eq!(
        ask(Some("bearer 0123456789abcdef-ops"), "192.0.2.7:1")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_known_path_with_another_method_is_a_json_405() {
    let fake = Arc::new(FakeBroker::default());
    let app = app(&fake, Access::LoopbackOnly);
    let a = send(
        &app,
        LOOPBACK,
        Request::post("/api/v1/stats").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED.as_u16());
    assert_eq!(a.json()["code"], "method_not_allowed");
}
