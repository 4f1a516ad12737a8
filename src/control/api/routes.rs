//! The routes that ask the shards, over a [`BrokerApi`]: publish, clients, sessions and
//! their queues, subscriptions, retained messages, top topics. [`routes`] builds them for
//! one implementation; the binary mounts them once the shards can answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::broker::{
    BrokerApi, BrokerError, ClientQuery, DEFAULT_PAGE, Deadline, MAX_PAGE, PageQuery, Publication,
    PublishProperties, RetainedQuery, Routed, SessionQuery, SubscriptionQuery,
};
use super::{ApiError, ApiJson, ApiPath, ApiQuery, NO_CONTENT, RouteSpec, Routes, Verb};

/// How long the shards get to answer one API call.
pub const BROKER_DEADLINE: Duration = Duration::from_secs(5);
/// Most messages in one `POST /api/v1/publish/batch`.
pub const MAX_BATCH: usize = 1000;
/// Most topics `GET /api/v1/topics/top` lists.
pub const MAX_TOP_TOPICS: usize = 100;

pub const PUBLISH: RouteSpec = RouteSpec {
    verb: Verb::Post,
    path: "/api/v1/publish",
    statuses: &[200, 400, 413, 415],
};
pub const PUBLISH_BATCH: RouteSpec = RouteSpec {
    verb: Verb::Post,
    path: "/api/v1/publish/batch",
    statuses: &[200, 400, 413, 415],
};
pub const CLIENTS: RouteSpec = RouteSpec {
    verb: Verb::Get,
    path: "/api/v1/clients",
    statuses: &[200, 400],
};
pub const CLIENT: RouteSpec = RouteSpec {
    verb: Verb::Get,
    path: "/api/v1/clients/{client_id}",
    statuses: &[200, 400, 404],
};
pub const CLIENT_DISCONNECT: RouteSpec = RouteSpec {
    verb: Verb::Delete,
    path: "/api/v1/clients/{client_id}",
    statuses: &[204, 400, 404],
};
pub const SESSIONS: RouteSpec = RouteSpec {
    verb: Verb::Get,
    path: "/api/v1/sessions",
    statuses: &[200, 400],
};
pub const SESSION: RouteSpec = RouteSpec {
    verb: Verb::Get,
    path: "/api/v1/sessions/{client_id}",
    statuses: &[200, 400, 404],
};
pub const SESSION_DISCARD: RouteSpec = RouteSpec {
    verb: Verb::Delete,
    path: "/api/v1/sessions/{client_id}",
    statuses: &[204, 400, 404],
};
pub const SESSION_QUEUE: RouteSpec = RouteSpec {
    verb: Verb::Get,
    path: "/api/v1/sessions/{client_id}/queue",
    statuses: &[200, 400, 404],
};
pub const SUBSCRIPTIONS: RouteSpec = RouteSpec {
    verb: Verb::Get,
    path: "/api/v1/subscriptions",
    statuses: &[200, 400],
};
pub const RETAINED: RouteSpec = RouteSpec {
    verb: Verb::Get,
    path: "/api/v1/retained",
    statuses: &[200, 400],
};
pub const RETAINED_MESSAGE: RouteSpec = RouteSpec {
    verb: Verb::Get,
    path: "/api/v1/retained/{topic}",
    statuses: &[200, 400, 404],
};
pub const RETAINED_DELETE: RouteSpec = RouteSpec {
    verb: Verb::Delete,
    path: "/api/v1/retained/{topic}",
    statuses: &[204, 400, 404],
};
pub const TOP_TOPICS: RouteSpec = RouteSpec {
    verb: Verb::Get,
    path: "/api/v1/topics/top",
    statuses: &[200, 400],
};

/// Every shard-backed route, served by `broker`.
pub fn routes<B: BrokerApi>(broker: Arc<B>) -> Routes<()> {
    Routes::<Arc<B>>::new()
        .add(PUBLISH, publish::<B>)
        .add(PUBLISH_BATCH, publish_batch::<B>)
        .add(CLIENTS, clients::<B>)
        .add(CLIENT, client::<B>)
        .add(CLIENT_DISCONNECT, disconnect::<B>)
        .add(SESSIONS, sessions::<B>)
        .add(SESSION, session::<B>)
        .add(SESSION_DISCARD, discard_session::<B>)
        .add(SESSION_QUEUE, session_queue::<B>)
        .add(SUBSCRIPTIONS, subscriptions::<B>)
        .add(RETAINED, retained::<B>)
        .add(RETAINED_MESSAGE, retained_message::<B>)
        .add(RETAINED_DELETE, delete_retained::<B>)
        .add(TOP_TOPICS, top_topics::<B>)
        .with_state(broker)
}

fn deadline() -> Deadline {
    Deadline(Instant::now() + BROKER_DEADLINE)
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> ApiError {
        match e {
            BrokerError::NotFound(what) => ApiError::not_found(what),
            BrokerError::Invalid(why) => ApiError::invalid_request(why),
            BrokerError::Denied(why) => ApiError::denied(why),
            BrokerError::Timeout => ApiError::unavailable(format!(
                "the shards did not answer within {} s",
                BROKER_DEADLINE.as_secs()
            )),
            BrokerError::Unavailable(why) => ApiError::unavailable(why),
        }
    }
}

/// How `payload` is written in a publish request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
}

/// The body of `POST /api/v1/publish`, and each message of a batch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub topic: String,
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default)]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    #[serde(default)]
    pub properties: PublishProperties,
}

impl PublishRequest {
    /// The checked message, or why it is not one.
    pub fn into_publication(self) -> Result<Publication, ApiError> {
        if let Err(e) = ringmq_proto::topic::validate_name(&self.topic) {
            return Err(ApiError::invalid_topic(format!(
                "topic {:?}: {e}",
                self.topic
            )));
        }
        if self.topic.starts_with('$') {
            return Err(ApiError::invalid_topic(format!(
                "topic {:?}: topics starting with `$` are the broker's",
                self.topic
            )));
        }
        if self.qos > 2 {
            return Err(ApiError::invalid_request(format!(
                "qos {}: must be 0, 1 or 2",
                self.qos
            )));
        }
        let payload = match self.encoding {
            Encoding::Utf8 => self.payload.into_bytes(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(self.payload.as_bytes())
                .map_err(|e| ApiError::invalid_request(format!("payload is not base64: {e}")))?,
        };
        let p = &self.properties;
        if let Some(t) = &p.response_topic
            && (ringmq_proto::topic::validate_name(t).is_err() || t.is_empty())
        {
            return Err(ApiError::invalid_topic(format!(
                "properties.response_topic {t:?} is not a topic name"
            )));
        }
        if let Some(c) = &p.correlation_data
            && base64::engine::general_purpose::STANDARD
                .decode(c.as_bytes())
                .is_err()
        {
            return Err(ApiError::invalid_request(
                "properties.correlation_data is not base64",
            ));
        }
        if p.payload_format_indicator == Some(true) && std::str::from_utf8(&payload).is_err() {
            return Err(ApiError::invalid_request(
                "payload_format_indicator says UTF-8 but the payload is not",
            ));
        }
        Ok(Publication {
            topic: self.topic,
            payload,
            qos: self.qos,
            retain: self.retain,
            properties: self.properties,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub messages: Vec<PublishRequest>,
}

/// One message's outcome in a batch: `{"routed": n}` or `{"error": {...}}`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum BatchResult {
    Routed(Routed),
    Error { error: ErrorBody },
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    code: &'static str,
    message: String,
}

async fn publish<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiJson(request): ApiJson<PublishRequest>,
) -> Result<Json<Routed>, ApiError> {
    let message = request.into_publication()?;
    let mut results = broker.publish(vec![message], deadline()).await?;
    match results.pop() {
        Some(Ok(routed)) if results.is_empty() => Ok(Json(routed)),
        Some(Err(e)) if results.is_empty() => Err(e.into()),
        _ => Err(ApiError::internal(
            "the broker answered one publish with several results",
        )),
    }
}

async fn publish_batch<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiJson(request): ApiJson<BatchRequest>,
) -> Result<Response, ApiError> {
    let n = request.messages.len();
    if n == 0 || n > MAX_BATCH {
        return Err(ApiError::invalid_request(format!(
            "a batch holds 1 to {MAX_BATCH} messages, not {n}"
        )));
    }
    let mut messages = Vec::with_capacity(n);
    for (i, m) in request.messages.into_iter().enumerate() {
        let m = m.into_publication().map_err(|mut e| {
            e.message = format!("messages[{i}]: {}", e.message);
            e
        })?;
        messages.push(m);
    }
    let results = broker.publish(messages, deadline()).await?;
    if results.len() != n {
        return Err(ApiError::internal(format!(
            "the broker answered {n} publishes with {} results",
            results.len()
        )));
    }
    let results: Vec<BatchResult> = results
        .into_iter()
        .map(|r| match r {
            Ok(routed) => BatchResult::Routed(routed),
            Err(e) => {
                let e = ApiError::from(e);
                BatchResult::Error {
                    error: ErrorBody {
                        code: e.code,
                        message: e.message,
                    },
                }
            }
        })
        .collect();
    Ok(Json(serde_json::json!({ "results": results })).into_response())
}

/// A page size from the query: the default when absent, 1 to [`MAX_PAGE`].
fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::invalid_request(format!(
            "limit {n}: must be 1 to {MAX_PAGE}"
        ))),
    }
}

async fn clients<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiQuery(mut query): ApiQuery<ClientQuery>,
) -> Result<Response, ApiError> {
    query.limit = Some(page_limit(query.limit)?);
    Ok(Json(broker.clients(query, deadline()).await?).into_response())
}

async fn client<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiPath(client_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(broker.client(client_id, deadline()).await?).into_response())
}

async fn disconnect<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiPath(client_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    broker.disconnect(client_id, deadline()).await?;
    Ok(NO_CONTENT.into_response())
}

async fn sessions<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiQuery(mut query): ApiQuery<SessionQuery>,
) -> Result<Response, ApiError> {
    query.limit = Some(page_limit(query.limit)?);
    Ok(Json(broker.sessions(query, deadline()).await?).into_response())
}

async fn session<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiPath(client_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    Ok(Json(broker.session(client_id, deadline()).await?).into_response())
}

async fn discard_session<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiPath(client_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    broker.discard_session(client_id, deadline()).await?;
    Ok(NO_CONTENT.into_response())
}

async fn session_queue<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiPath(client_id): ApiPath<String>,
    ApiQuery(mut page): ApiQuery<PageQuery>,
) -> Result<Response, ApiError> {
    page.limit = Some(page_limit(page.limit)?);
    Ok(Json(broker.session_queue(client_id, page, deadline()).await?).into_response())
}

async fn subscriptions<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiQuery(mut query): ApiQuery<SubscriptionQuery>,
) -> Result<Response, ApiError> {
    if let Err(e) = ringmq_proto::topic::validate_filter(&query.filter) {
        return Err(ApiError::invalid_topic(format!(
            "filter {:?}: {e}",
            query.filter
        )));
    }
    query.limit = Some(page_limit(query.limit)?);
    Ok(Json(broker.subscriptions(query, deadline()).await?).into_response())
}

async fn retained<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiQuery(mut query): ApiQuery<RetainedQuery>,
) -> Result<Response, ApiError> {
    let filter = query.filter.get_or_insert_with(|| "#".to_string());
    if let Err(e) = ringmq_proto::topic::validate_filter(filter) {
        return Err(ApiError::invalid_topic(format!("filter {filter:?}: {e}")));
    }
    query.limit = Some(page_limit(query.limit)?);
    Ok(Json(broker.retained(query, deadline()).await?).into_response())
}

fn topic_name(topic: &str) -> Result<(), ApiError> {
    ringmq_proto::topic::validate_name(topic)
        .map_err(|e| ApiError::invalid_topic(format!("topic {topic:?}: {e}")))
}

async fn retained_message<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Response, ApiError> {
    topic_name(&topic)?;
    Ok(Json(broker.retained_message(topic, deadline()).await?).into_response())
}

async fn delete_retained<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Response, ApiError> {
    topic_name(&topic)?;
    broker.delete_retained(topic, deadline()).await?;
    Ok(NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopQuery {
    limit: Option<usize>,
}

async fn top_topics<B: BrokerApi>(
    State(broker): State<Arc<B>>,
    ApiQuery(query): ApiQuery<TopQuery>,
) -> Result<Response, ApiError> {
    let limit = match query.limit {
        None => 10,
        Some(n) if (1..=MAX_TOP_TOPICS).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::invalid_request(format!(
                "limit {n}: must be 1 to {MAX_TOP_TOPICS}"
            )));
        }
    };
    let topics = broker.top_topics(limit, deadline()).await?;
    Ok(Json(serde_json::json!({ "topics": topics })).into_response())
}

#[cfg(test)]
pub mod fake;
#[cfg(test)]
mod tests;
