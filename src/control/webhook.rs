//! Webhooks: the broker's events, batched and signed, POSTed as JSON to the operator's
//! endpoints (`--webhook-url`), the way a notification service learns that an offline
//! phone has a message waiting.
//!
//! Shards hold a [`WebhookSender`] and emit with [`WebhookSender::send`]: a non-blocking
//! `try_send` into one bounded queue ([`WebhookConfig::queue_capacity`]); when it is full
//! the event is dropped and counted (`dropped_queue_full`), so a shard never waits. The
//! [`Dispatcher`] on the control runtime takes events from that queue and hands each to
//! every endpoint whose filter wants it. Each endpoint keeps at most
//! [`WebhookConfig::max_pending`] events (then the oldest is dropped and counted,
//! `dropped_pending_full`) plus the batch in flight, and sends a batch when it holds
//! [`WebhookConfig::batch_max`] events or its first event has waited
//! [`WebhookConfig::batch_wait`].
//!
//! ## A request
//!
//! `POST URL`, `Content-Type: application/json`, body
//! `{"batch_id": "<id>", "events": [{"event": "client.connected", "at_ms": …, …}, …]}`,
//! and the headers
//! - `X-Ringmq-Timestamp`: Unix time in seconds when the request was signed;
//! - `X-Ringmq-Signature`: `v1=` and the lowercase hex HMAC-SHA256, keyed with
//!   `--webhook-secret`, of `TIMESTAMP.BODY` (the timestamp, a dot, the exact body bytes).
//!   A receiver recomputes it, compares in constant time, and refuses a timestamp older
//!   than a few minutes, which stops a captured request from being replayed;
//! - `X-Ringmq-Batch`: the batch id again; a retried batch keeps its id (and is signed
//!   afresh), so a receiver can drop a batch it already took.
//!
//! A 2xx answer delivers the batch. A connection error, a time-out, 408, 429 or a 5xx is
//! retried after an exponential back-off with full jitter (a random wait between 0 and
//! `min(retry_cap, retry_base × 2^attempt)`: 1 s to 30 s by default). Any other answer
//! (a 4xx: the receiver refuses this batch for good) drops the batch, counted as
//! `dropped_rejected`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{Mutex, Notify, mpsc};

use crate::control::stats::WebhookFigures;

/// The kinds of event, by the names used in filters and in the `event` field.
pub const EVENT_KINDS: [&str; 6] = [
    "client.connected",
    "client.disconnected",
    "session.created",
    "session.expired",
    "message.dropped",
    "message.queued_offline",
];

/// Something that happened in the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event")]
pub enum WebhookEvent {
    #[serde(rename = "client.connected")]
    ClientConnected {
        client_id: String,
        username: Option<String>,
        /// The peer's address, `IP:PORT`.
        address: String,
        /// `mqtt`, `ws`, `mqtts` or `wss`.
        transport: &'static str,
        /// 4 (3.1.1) or 5.
        protocol_version: u8,
        keep_alive: u16,
        clean_start: bool,
        shard: usize,
    },
    #[serde(rename = "client.disconnected")]
    ClientDisconnected {
        client_id: String,
        /// Why the connection ended, e.g. `client_disconnect`, `keepalive_timeout`,
        /// `protocol_error`, `taken_over`, `kicked`, `not_authorized`, `slow_consumer`,
        /// `tls_error`, `shutdown`.
        reason: &'static str,
        shard: usize,
    },
    #[serde(rename = "session.created")]
    SessionCreated {
        client_id: String,
        /// Seconds the session outlives its connection (0: it ends with it).
        expiry_interval: u32,
        shard: usize,
    },
    #[serde(rename = "session.expired")]
    SessionExpired { client_id: String, shard: usize },
    #[serde(rename = "message.dropped")]
    MessageDropped {
        /// The receiver it was meant for, if it was meant for one.
        client_id: Option<String>,
        topic: String,
        qos: u8,
        /// Why, e.g. `queue_full`, `slow_consumer`, `too_large_for_client`, `mesh_full`.
        reason: &'static str,
    },
    #[serde(rename = "message.queued_offline")]
    MessageQueuedOffline {
        client_id: String,
        topic: String,
        qos: u8,
        /// The whole payload's size in bytes.
        payload_size: usize,
        /// The payload's first `--webhook-payload-preview` bytes, base64.
        #[serde(serialize_with = "as_base64")]
        payload_preview: Vec<u8>,
        /// Whether the preview is shorter than the payload.
        preview_truncated: bool,
    },
}

fn as_base64<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
}

impl WebhookEvent {
    pub fn kind(&self) -> &'static str {
        match self {
            WebhookEvent::ClientConnected { .. } => EVENT_KINDS[0],
            WebhookEvent::ClientDisconnected { .. } => EVENT_KINDS[1],
            WebhookEvent::SessionCreated { .. } => EVENT_KINDS[2],
            WebhookEvent::SessionExpired { .. } => EVENT_KINDS[3],
            WebhookEvent::MessageDropped { .. } => EVENT_KINDS[4],
            WebhookEvent::MessageQueuedOffline { .. } => EVENT_KINDS[5],
        }
    }

    fn bit(&self) -> u8 {
        1 << EVENT_KINDS
            .iter()
            .position(|k| *k == self.kind())
            .unwrap_or(0)
    }
}

/// An event with the time it happened.
#[derive(Debug, Clone, Serialize)]
struct Stamped {
    #[serde(flatten)]
    event: WebhookEvent,
    /// Unix time, milliseconds.
    at_ms: u64,
}

/// A set of event kinds (bit `i` is `EVENT_KINDS[i]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFilter(u8);

impl EventFilter {
    pub const ALL: EventFilter = EventFilter((1 << EVENT_KINDS.len()) - 1);
    pub const NONE: EventFilter = EventFilter(0);

    fn wants(self, event: &WebhookEvent) -> bool {
        self.0 & event.bit() != 0
    }

    fn union(self, other: EventFilter) -> EventFilter {
        EventFilter(self.0 | other.0)
    }

    /// Parses `client.connected,message.queued_offline`.
    pub fn parse(list: &str) -> Result<EventFilter, String> {
        let mut bits = 0;
        for name in list.split(',').map(str::trim) {
            match EVENT_KINDS.iter().position(|k| *k == name) {
                Some(i) => bits |= 1 << i,
                None => {
                    return Err(format!(
                        "unknown webhook event `{name}`; the events are {}",
                        EVENT_KINDS.join(", ")
                    ));
                }
            }
        }
        Ok(EventFilter(bits))
    }
}

/// One `--webhook-url`: `URL` (every event) or `URL#event,event` (those events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookTarget {
    pub url: reqwest::Url,
    pub events: EventFilter,
}

impl std::str::FromStr for WebhookTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<WebhookTarget, String> {
        let s = s.trim();
        let (url, events) = match s.split_once('#') {
            Some((url, list)) => (url, EventFilter::parse(list)?),
            None => (s, EventFilter::ALL),
        };
        let url = reqwest::Url::parse(url).map_err(|e| format!("bad webhook URL `{url}`: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("webhook URL `{url}`: only http and https"));
        }
        Ok(WebhookTarget { url, events })
    }
}

impl std::fmt::Display for WebhookTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.url)?;
        if self.events != EventFilter::ALL {
            let names: Vec<&str> = EVENT_KINDS
                .iter()
                .enumerate()
                .filter(|(i, _)| self.events.0 & (1 << i) != 0)
                .map(|(_, k)| *k)
                .collect();
            write!(f, "#{}", names.join(","))?;
        }
        Ok(())
    }
}

/// How webhooks are sent.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub targets: Vec<WebhookTarget>,
    /// The HMAC key of every request's signature.
    pub secret: String,
    /// Events the shards' queue holds before new ones are dropped.
    pub queue_capacity: usize,
    /// Events one endpoint holds waiting (besides the batch in flight).
    pub max_pending: usize,
    /// Most events in one request.
    pub batch_max: usize,
    /// Longest an event waits for more to fill its batch.
    pub batch_wait: Duration,
    /// Limit on one request, connecting included.
    pub request_timeout: Duration,
    /// First back-off after a failure, and the most it grows to.
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Bytes of a payload copied into `message.queued_offline`.
    pub payload_preview: usize,
}

pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
pub const DEFAULT_MAX_PENDING: usize = 100_000;
pub const DEFAULT_BATCH_MAX: usize = 100;
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_millis(200);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(1);
pub const DEFAULT_RETRY_CAP: Duration = Duration::from_secs(30);
pub const DEFAULT_PAYLOAD_PREVIEW: usize = 256;

impl WebhookConfig {
    pub fn new(targets: Vec<WebhookTarget>, secret: String) -> WebhookConfig {
        WebhookConfig {
            targets,
            secret,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_pending: DEFAULT_MAX_PENDING,
            batch_max: DEFAULT_BATCH_MAX,
            batch_wait: DEFAULT_BATCH_WAIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_base: DEFAULT_RETRY_BASE,
            retry_cap: DEFAULT_RETRY_CAP,
            payload_preview: DEFAULT_PAYLOAD_PREVIEW,
        }
    }
}

/// The dispatcher's counters, shared with the senders and the stats.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub endpoints: AtomicU64,
    pub events_received: AtomicU64,
    pub events_delivered: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_pending_full: AtomicU64,
    pub dropped_rejected: AtomicU64,
    pub pending: AtomicU64,
    pub failed_requests: AtomicU64,
}

impl WebhookStats {
    pub fn figures(&self) -> WebhookFigures {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WebhookFigures {
            endpoints: get(&self.endpoints),
            events_received: get(&self.events_received),
            events_delivered: get(&self.events_delivered),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_pending_full: get(&self.dropped_pending_full),
            dropped_rejected: get(&self.dropped_rejected),
            pending: get(&self.pending),
            failed_requests: get(&self.failed_requests),
        }
    }

    /// The counters in the Prometheus text format, for `/metrics`.
    pub fn render_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        let f = self.figures();
        let _ = write!(
            out,
            "# HELP ringmq_webhook_events_total Webhook events taken from the shards' queue.\n\
             # TYPE ringmq_webhook_events_total counter\n\
             ringmq_webhook_events_total {}\n\
             # HELP ringmq_webhook_delivered_total Webhook events delivered (once per endpoint).\n\
             # TYPE ringmq_webhook_delivered_total counter\n\
             ringmq_webhook_delivered_total {}\n\
             # HELP ringmq_webhook_dropped_total Webhook events dropped: the shards' queue was full, an endpoint held its most pending events, or an endpoint refused the batch (4xx).\n\
             # TYPE ringmq_webhook_dropped_total counter\n\
             ringmq_webhook_dropped_total{{reason=\"queue_full\"}} {}\n\
             ringmq_webhook_dropped_total{{reason=\"pending_full\"}} {}\n\
             ringmq_webhook_dropped_total{{reason=\"rejected\"}} {}\n\
             # HELP ringmq_webhook_pending Webhook events waiting for an endpoint, now.\n\
             # TYPE ringmq_webhook_pending gauge\n\
             ringmq_webhook_pending {}\n\
             # HELP ringmq_webhook_failed_requests_total Webhook requests that failed and were retried.\n\
             # TYPE ringmq_webhook_failed_requests_total counter\n\
             ringmq_webhook_failed_requests_total {}\n",
            f.events_received,
            f.events_delivered,
            f.dropped_queue_full,
            f.dropped_pending_full,
            f.dropped_rejected,
            f.pending,
            f.failed_requests,
        );
    }
}

fn count(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// What a shard holds to emit events; cheap to clone, never blocks.
#[derive(Clone)]
pub struct WebhookSender {
    tx: mpsc::Sender<Stamped>,
    wanted: EventFilter,
    payload_preview: usize,
    stats: Arc<WebhookStats>,
}

impl WebhookSender {
    /// Whether any endpoint wants events of this kind: a shard asks before it builds one
    /// (copies a client id, a topic, a payload preview).
    pub fn wants(&self, kind: &str) -> bool {
        EVENT_KINDS
            .iter()
            .position(|k| *k == kind)
            .is_some_and(|i| self.wanted.0 & (1 << i) != 0)
    }

    /// Queues an event if an endpoint wants it; drops and counts it if the queue is full.
    pub fn send(&self, event: WebhookEvent) {
        if !self.wanted.wants(&event) {
            return;
        }
        let stamped = Stamped {
            event,
            at_ms: unix_ms(),
        };
        if self.tx.try_send(stamped).is_err() {
            count(&self.stats.dropped_queue_full, 1);
        }
    }

    /// A `message.queued_offline` event, copying at most the configured preview of the
    /// payload.
    pub fn queued_offline(&self, client_id: &str, topic: &str, qos: u8, payload: &[u8]) {
        if !self.wants(EVENT_KINDS[5]) {
            return;
        }
        let preview = &payload[..payload.len().min(self.payload_preview)];
        self.send(WebhookEvent::MessageQueuedOffline {
            client_id: client_id.into(),
            topic: topic.into(),
            qos,
            payload_size: payload.len(),
            payload_preview: preview.to_vec(),
            preview_truncated: preview.len() < payload.len(),
        });
    }

    pub fn stats(&self) -> &Arc<WebhookStats> {
        &self.stats
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Takes events from the shards' queue and sends them to the endpoints.
pub struct Dispatcher {
    rx: mpsc::Receiver<Stamped>,
    config: Arc<WebhookConfig>,
    stats: Arc<WebhookStats>,
}

/// The sender the shards use and the dispatcher that drains it (run it with
/// [`Dispatcher::run`] on the control runtime).
pub fn channel(config: WebhookConfig) -> (WebhookSender, Dispatcher) {
    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    let stats = Arc::new(WebhookStats::default());
    stats
        .endpoints
        .store(config.targets.len() as u64, Ordering::Relaxed);
    let wanted = config
        .targets
        .iter()
        .fold(EventFilter::NONE, |w, t| w.union(t.events));
    let sender = WebhookSender {
        tx,
        wanted,
        payload_preview: config.payload_preview,
        stats: stats.clone(),
    };
    let dispatcher = Dispatcher {
        rx,
        config: Arc::new(config),
        stats,
    };
    (sender, dispatcher)
}

/// One endpoint's waiting events.
struct Pending {
    events: Mutex<VecDeque<Stamped>>,
    arrived: Notify,
}

impl Dispatcher {
    /// Runs until every sender is gone (the process's life, in the broker).
    pub async fn run(mut self) {
        // reqwest takes rustls's process-wide provider; a second install is refused
        // harmlessly. ring, not aws-lc-rs: no C toolchain beyond `cc` to build it, at the
        // cost of no post-quantum key exchange with webhook endpoints.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = match reqwest::Client::builder()
            .timeout(self.config.request_timeout)
            .connect_timeout(self.config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ringmq/", env!("CARGO_PKG_VERSION")))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhooks: cannot build the HTTP client; no webhook will be sent");
                return;
            }
        };
        let mut endpoints = Vec::new();
        for target in &self.config.targets {
            let pending = Arc::new(Pending {
                events: Mutex::new(VecDeque::new()),
                arrived: Notify::new(),
            });
            let endpoint = Endpoint {
                target: target.clone(),
                pending: pending.clone(),
                config: self.config.clone(),
                stats: self.stats.clone(),
                client: client.clone(),
            };
            tokio::spawn(endpoint.run());
            endpoints.push((target.events, pending));
        }
        while let Some(event) = self.rx.recv().await {
            count(&self.stats.events_received, 1);
            for (filter, pending) in &endpoints {
                if !filter.wants(&event.event) {
                    continue;
                }
                let mut queue = pending.events.lock().await;
                if queue.len() >= self.config.max_pending {
                    // Drop the oldest: a notification service wants the latest news most.
                    queue.pop_front();
                    count(&self.stats.dropped_pending_full, 1);
                } else {
                    count(&self.stats.pending, 1);
                }
                queue.push_back(event.clone());
                drop(queue);
                pending.arrived.notify_one();
            }
        }
    }
}

struct Endpoint {
    target: WebhookTarget,
    pending: Arc<Pending>,
    config: Arc<WebhookConfig>,
    stats: Arc<WebhookStats>,
    client: reqwest::Client,
}

/// How a request ended.
enum Outcome {
    Delivered,
    Retry(String),
    Refused(reqwest::StatusCode),
}

impl Endpoint {
    async fn run(self) {
        let mut batch_number: u64 = 0;
        loop {
            self.wait_for_batch().await;
            let batch: Vec<Stamped> = {
                let mut queue = self.pending.events.lock().await;
                let n = queue.len().min(self.config.batch_max);
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                continue;
            }
            batch_number += 1;
            let id = format!("{:x}-{batch_number}", unix_ms());
            let body = match serde_json::to_vec(&Batch {
                batch_id: &id,
                events: &batch,
            }) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "webhooks: cannot encode a batch");
                    self.settle(batch.len());
                    continue;
                }
            };
            let mut attempt: u32 = 0;
            loop {
                match self.post(&id, &body).await {
                    Outcome::Delivered => {
                        count(&self.stats.events_delivered, batch.len() as u64);
                        break;
                    }
                    Outcome::Refused(status) => {
                        tracing::warn!(url = %self.target.url, %status, events = batch.len(),
                            "webhooks: the endpoint refused a batch; dropped");
                        count(&self.stats.dropped_rejected, batch.len() as u64);
                        break;
                    }
                    Outcome::Retry(why) => {
                        count(&self.stats.failed_requests, 1);
                        let wait = backoff(attempt, self.config.retry_base, self.config.retry_cap);
                        tracing::info!(url = %self.target.url, error = %why, attempt,
                            retry_in_ms = wait.as_millis() as u64, "webhooks: request failed; will retry");
                        attempt = attempt.saturating_add(1);
                        tokio::time::sleep(wait).await;
                    }
                }
            }
            self.settle(batch.len());
        }
    }

    fn settle(&self, n: usize) {
        self.stats.pending.fetch_sub(n as u64, Ordering::Relaxed);
    }

    /// Waits until a batch is due: `batch_max` events, or the first has waited
    /// `batch_wait`.
    async fn wait_for_batch(&self) {
        loop {
            if !self.pending.events.lock().await.is_empty() {
                break;
            }
            self.pending.arrived.notified().await;
        }
        let due = tokio::time::Instant::now() + self.config.batch_wait;
        loop {
            if self.pending.events.lock().await.len() >= self.config.batch_max {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(due) => return,
                _ = self.pending.arrived.notified() => {}
            }
        }
    }

    async fn post(&self, batch_id: &str, body: &[u8]) -> Outcome {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let signature = sign(self.config.secret.as_bytes(), &timestamp, body);
        let result = self
            .client
            .post(self.target.url.clone())
            .header("content-type", "application/json")
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, signature)
            .header(BATCH_HEADER, batch_id)
            .body(body.to_vec())
            .send()
            .await;
        match result {
            Err(e) => Outcome::Retry(e.to_string()),
            Ok(r) if r.status().is_success() => Outcome::Delivered,
            Ok(r)
                if r.status().is_server_error()
                    || r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || r.status() == reqwest::StatusCode::REQUEST_TIMEOUT =>
            {
                Outcome::Retry(format!("answered {}", r.status()))
            }
            Ok(r) => Outcome::Refused(r.status()),
        }
    }
}

#[derive(Serialize)]
struct Batch<'a> {
    batch_id: &'a str,
    events: &'a [Stamped],
}

pub const TIMESTAMP_HEADER: &str = "x-ringmq-timestamp";
pub const SIGNATURE_HEADER: &str = "x-ringmq-signature";
pub const BATCH_HEADER: &str = "x-ringmq-batch";

/// `v1=` and the hex HMAC-SHA256 of `TIMESTAMP.BODY`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + 64);
    out.push_str("v1=");
    for b in digest {
        out.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
        out.push(char::from_digit(u32::from(b & 15), 16).unwrap_or('0'));
    }
    out
}

/// Full jitter: a random wait in `[0, min(cap, base × 2^attempt)]`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(cap)
        .min(cap);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_a_filter() {
        let all: WebhookTarget = "http://127.0.0.1:9/hook".parse().unwrap();
        assert_eq!(all.events, EventFilter::ALL);
        let some: WebhookTarget = "https://example.test/h#client.connected,message.queued_offline"
            .parse()
            .unwrap();
        assert_eq!(some.url.as_str(), "https://example.test/h");
        assert_eq!(
            some.to_string(),
            "https://example.test/h#client.connected,message.queued_offline"
        );
        assert!(
            "http://x/#client.exploded"
                .parse::<WebhookTarget>()
                .unwrap_err()
                .contains("unknown webhook event")
        );
        assert!(
            "ftp://x/"
                .parse::<WebhookTarget>()
                .unwrap_err()
                .contains("only http")
        );
        assert!("not a url".parse::<WebhookTarget>().is_err());
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // HMAC-SHA256 under key "key" of "1700000000.{}", computed by hand from the
        // hmac crate, and the shape: `v1=` and 64 lowercase hex digits.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"1700000000.{}");
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let got = sign(b"key", "1700000000", b"{}");
        assert_eq!(got, format!("v1={want}"));
        assert_eq!(got.len(), 67);
        assert_ne!(got, sign(b"key", "1700000001", b"{}"));
        assert_ne!(got, sign(b"kez", "1700000000", b"{}"));
        assert_ne!(got, sign(b"key", "1700000000", b"{ }"));
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_cap() {
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(30));
        for attempt in 0..40 {
            let ceiling = Duration::from_secs(1u64 << attempt.min(5)).min(cap);
            for _ in 0..50 {
                assert!(backoff(attempt, base, cap) <= ceiling);
            }
        }
        let waits: Vec<Duration> = (0..50).map(|_| backoff(10, base, cap)).collect();
        assert!(waits.iter().any(|w| *w != waits[0]), "jittered");
    }

    #[test]
    fn events_serialise_with_their_kind_and_base64_preview() {
        let e = WebhookEvent::MessageQueuedOffline {
            client_id: "phone-42".into(),
            topic: "users/42/inbox".into(),
            qos: 1,
            payload_size: 5,
            payload_preview: b"hel".to_vec(),
            preview_truncated: true,
        };
        let v = serde_json::to_value(Stamped { event: e, at_ms: 7 }).unwrap();
        assert_eq!(v["event"], "message.queued_offline");
        assert_eq!(v["payload_preview"], "aGVs");
        assert_eq!(v["at_ms"], 7);
    }
}
