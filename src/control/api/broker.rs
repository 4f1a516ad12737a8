//! What the API asks of the shards: the [`BrokerApi`] trait and its request and answer
//! types (which are also the API's JSON).
//!
//! An implementation answers from per-shard requests with replies over the shards'
//! control channels: it sends one request to each shard concerned (all of them for a
//! listing, the home shard of a client id for one client), gathers the replies until
//! the [`Deadline`], and merges them. Listings are paged by a cursor, the last key of the
//! previous page (a client id, a topic): every shard returns up to `limit` entries after
//! the cursor in key order, the implementation merges the sorted replies and keeps the
//! first `limit`, and `next` is the last key kept. So a page costs each shard `limit`
//! entries at most, whatever the total, and pages stay stable while clients come and go
//! (an entry added before the cursor is simply not seen in this pass).
//!
//! A shard that does not reply by the deadline makes the call fail with
//! [`BrokerError::Timeout`] rather than return a partial answer.

use std::future::Future;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// When an answer is due; past it the call gives up with [`BrokerError::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

/// Why a broker call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerError {
    /// No such client, session or retained message (the text says which).
    NotFound(String),
    /// The request is not something the broker takes (bad topic for its rules, …).
    Invalid(String),
    /// The broker's rules refuse it (for instance the ACL rules for API publishers).
    Denied(String),
    /// A shard did not reply before the deadline.
    Timeout,
    /// The broker cannot answer now (shutting down).
    Unavailable(String),
}

/// Most entries in one page of a listing.
pub const MAX_PAGE: usize = 1000;
/// Entries in a page when the request names no limit.
pub const DEFAULT_PAGE: usize = 100;

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The cursor for the next page (`after=`), absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A message to publish, decoded and checked: it enters a shard like a client's PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub properties: PublishProperties,
}

/// The MQTT 5 properties an API publisher may set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishProperties {
    /// Payload Format Indicator: true when the payload is UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_format_indicator: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_expiry_interval: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_topic: Option<String>,
    /// Correlation Data, base64 in JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_data: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_properties: Vec<UserProperty>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserProperty {
    pub name: String,
    pub value: String,
}

/// Where a publication went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routed {
    /// Sessions (online or offline) the message was routed to.
    pub routed: u64,
}

/// Which clients to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientQuery {
    /// Only client ids starting with this.
    pub prefix: Option<String>,
    pub username: Option<String>,
    pub shard: Option<usize>,
    /// The cursor: list client ids after this one.
    pub after: Option<String>,
    pub limit: Option<usize>,
}

/// A connected client, in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSummary {
    pub client_id: String,
    pub username: Option<String>,
    pub address: String,
    /// `mqtt`, `ws`, `mqtts` (MQTT over TLS) or `wss` (secure WebSocket).
    pub transport: String,
    pub protocol_version: u8,
    pub shard: usize,
    /// Unix time, milliseconds.
    pub connected_at_ms: u64,
}

/// One connected client in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientDetail {
    #[serde(flatten)]
    pub summary: ClientSummary,
    pub keep_alive: u16,
    pub clean_start: bool,
    pub subscriptions: Vec<Subscription>,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight: u32,
    /// Messages waiting for the client's in-flight window.
    pub queued: u32,
    pub outbound_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    pub filter: String,
    pub qos: u8,
    #[serde(default)]
    pub no_local: bool,
    #[serde(default)]
    pub retain_as_published: bool,
}

/// Which sessions to list (online and offline).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    pub prefix: Option<String>,
    /// Only sessions with (true) or without (false) a connection.
    pub connected: Option<bool>,
    pub after: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub client_id: String,
    pub connected: bool,
    pub shard: usize,
    /// Seconds the session outlives its connection.
    pub expiry_interval: u32,
    pub subscriptions: u32,
    /// Messages kept for it (offline queue or waiting for its window).
    pub queued: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub summary: SessionSummary,
    pub subscriptions: Vec<Subscription>,
    /// Unix time, milliseconds, when an offline session expires.
    pub expires_at_ms: Option<u64>,
}

/// A message waiting in a session's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// The position in the queue, the cursor of the queue's pages.
    pub position: u64,
    pub topic: String,
    pub qos: u8,
    pub payload_size: usize,
    /// The first bytes of the payload, base64.
    pub payload_preview: String,
}

/// A page request without a filter (a session's queue).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub after: Option<String>,
    pub limit: Option<usize>,
}

/// Which subscriptions to list: those with exactly this filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionQuery {
    pub filter: String,
    pub after: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionEntry {
    pub client_id: String,
    pub shard: usize,
    #[serde(flatten)]
    pub subscription: Subscription,
}

/// Which retained messages to list: those whose topic matches the filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetainedQuery {
    /// A topic filter; `#` when absent.
    pub filter: Option<String>,
    pub after: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedSummary {
    pub topic: String,
    pub qos: u8,
    pub payload_size: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedMessage {
    pub topic: String,
    pub qos: u8,
    /// The payload, base64.
    pub payload: String,
    #[serde(default)]
    pub properties: PublishProperties,
}

/// A topic's recent publish rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicRate {
    pub topic: String,
    pub messages_per_second: f64,
}

/// The shards' side of the API. Every call takes a deadline; see the module text for how
/// an implementation gathers per-shard replies and pages.
pub trait BrokerApi: Send + Sync + 'static {
    /// Publishes each message as a client's PUBLISH would be (ACL rules for the API
    /// publisher apply), in order; one result per message.
    fn publish(
        &self,
        messages: Vec<Publication>,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Vec<Result<Routed, BrokerError>>, BrokerError>> + Send;

    fn clients(
        &self,
        query: ClientQuery,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Page<ClientSummary>, BrokerError>> + Send;

    fn client(
        &self,
        client_id: String,
        deadline: Deadline,
    ) -> impl Future<Output = Result<ClientDetail, BrokerError>> + Send;

    /// Ends the client's connection (MQTT 5: DISCONNECT 0x98, Administrative action);
    /// its session stays as its expiry says.
    fn disconnect(
        &self,
        client_id: String,
        deadline: Deadline,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    fn sessions(
        &self,
        query: SessionQuery,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Page<SessionSummary>, BrokerError>> + Send;

    fn session(
        &self,
        client_id: String,
        deadline: Deadline,
    ) -> impl Future<Output = Result<SessionDetail, BrokerError>> + Send;

    fn session_queue(
        &self,
        client_id: String,
        page: PageQuery,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Page<QueuedMessage>, BrokerError>> + Send;

    /// Discards a session and its queue (disconnecting its client, if connected).
    fn discard_session(
        &self,
        client_id: String,
        deadline: Deadline,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    fn subscriptions(
        &self,
        query: SubscriptionQuery,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Page<SubscriptionEntry>, BrokerError>> + Send;

    fn retained(
        &self,
        query: RetainedQuery,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Page<RetainedSummary>, BrokerError>> + Send;

    fn retained_message(
        &self,
        topic: String,
        deadline: Deadline,
    ) -> impl Future<Output = Result<RetainedMessage, BrokerError>> + Send;

    fn delete_retained(
        &self,
        topic: String,
        deadline: Deadline,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// The busiest topics by publish rate, busiest first.
    fn top_topics(
        &self,
        limit: usize,
        deadline: Deadline,
    ) -> impl Future<Output = Result<Vec<TopicRate>, BrokerError>> + Send;
}
