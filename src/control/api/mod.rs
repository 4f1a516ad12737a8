//! The JSON API under `/api/v1/`, described by [`openapi.json`](openapi.json) (served at
//! `/api/v1/openapi.json`):
//!
//! - [`error`]: the one error shape, `{"code", "message"}` with its status;
//! - [`keys`]: bearer API keys; without any, only loopback peers are served (else 403);
//! - [`broker`]: the [`broker::BrokerApi`] trait the shard-backed routes call;
//! - [`routes`]: the handlers of those routes, mounted only with an implementation;
//! - [`shards`]: the implementation the binary mounts: requests to the shards over their
//!   control channels;
//! - this file: the route table, the extractors (content type, body limit, JSON), the
//!   guard, and the routes that need no shard (`stats`, `info`, `openapi.json`).
//!
//! Every route is declared once as a [`RouteSpec`] (method, path, statuses), and the
//! router is built from those declarations, so a test can compare the router with the
//! OpenAPI document both ways.

pub mod broker;
pub mod error;
pub mod keys;
pub mod routes;
pub mod shards;

#[cfg(test)]
pub mod doc_check;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::handler::Handler;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::control::stats::Sampler;
pub use error::ApiError;
use keys::ApiKeys;

/// Largest request body the API reads; a larger one gets 413 `payload_too_large`.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Where a request came from (set by the HTTP server on every
/// request). A request without one counts as not from loopback.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Get,
    Post,
    Delete,
}

impl Verb {
    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Delete => MethodFilter::DELETE,
        }
    }

    /// The method as the OpenAPI document spells it.
    pub fn openapi(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Post => "post",
            Verb::Delete => "delete",
        }
    }
}

/// A route: its method, its path (OpenAPI's template syntax, which is axum's), and every
/// status it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub verb: Verb,
    pub path: &'static str,
    pub statuses: &'static [u16],
}

/// Statuses every API route can answer besides its own: 401/403 from the guard, 503
/// when the request ran past its time limit.
pub const GUARD_STATUSES: [u16; 3] = [401, 403, 503];

/// A router being built from route declarations.
pub struct Routes<S> {
    router: Router<S>,
    specs: Vec<RouteSpec>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Routes<S> {
        Routes {
            router: Router::new(),
            specs: Vec::new(),
        }
    }

    /// Mounts `handler` for exactly the method and path of `spec`.
    pub fn add<H, T>(mut self, spec: RouteSpec, handler: H) -> Routes<S>
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.router = self
            .router
            .route(spec.path, on(spec.verb.filter(), handler));
        self.specs.push(spec);
        self
    }

    pub fn with_state(self, state: S) -> Routes<()> {
        Routes {
            router: self.router.with_state(state),
            specs: self.specs,
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes::new()
    }
}

impl Routes<()> {
    pub fn merge(mut self, other: Routes<()>) -> Routes<()> {
        self.router = self.router.merge(other.router);
        self.specs.extend(other.specs);
        self
    }

    pub fn specs(&self) -> &[RouteSpec] {
        &self.specs
    }
}

/// Who may use the API.
#[derive(Debug, Clone)]
pub enum Access {
    /// No keys configured: loopback peers only.
    LoopbackOnly,
    Keys(Arc<ApiKeys>),
}

/// What `GET /api/v1/info` tells a page: where the broker's listeners are.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    pub version: &'static str,
    pub shards: usize,
    pub mqtt: Option<ListenerInfo>,
    pub ws: Option<ListenerInfo>,
    /// Whether the routes that ask the shards (clients, sessions, publish, …) are served.
    pub broker_api: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListenerInfo {
    /// The address it listens on (`0.0.0.0` means every interface).
    pub address: String,
    pub port: u16,
    /// The WebSocket upgrade path (WebSocket only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl ListenerInfo {
    pub fn new(addr: SocketAddr, path: Option<String>) -> ListenerInfo {
        ListenerInfo {
            address: addr.ip().to_string(),
            port: addr.port(),
            path,
        }
    }
}

/// The routes' shared context.
struct Context {
    sampler: Arc<Sampler>,
    info: Info,
    openapi: Bytes,
}

pub const STATS: RouteSpec = RouteSpec {
    verb: Verb::Get,
    path: "/api/v1/stats",
    statuses: &[200],
};
pub const INFO: RouteSpec = RouteSpec {
    verb: Verb::Get,
    path: "/api/v1/info",
    statuses: &[200],
};
pub const OPENAPI: RouteSpec = RouteSpec {
    verb: Verb::Get,
    path: "/api/v1/openapi.json",
    statuses: &[200],
};

/// The OpenAPI document, as written (every route there is).
pub const OPENAPI_DOCUMENT: &str = include_str!("openapi.json");

/// The whole API: the routes that need no shard, plus `broker_routes` when there is a
/// [`broker::BrokerApi`] to serve them. The OpenAPI document served keeps only the
/// routes mounted.
pub fn router(
    sampler: Arc<Sampler>,
    mut info: Info,
    access: Access,
    broker_routes: Option<Routes<()>>,
) -> Router {
    info.broker_api = broker_routes.is_some();
    let mut mounted = vec![STATS, INFO, OPENAPI];
    if let Some(r) = &broker_routes {
        mounted.extend_from_slice(r.specs());
    }
    let openapi = Bytes::from(document_for(&mounted));
    let context = Arc::new(Context {
        sampler,
        info,
        openapi,
    });
    let mut routes = Routes::new()
        .add(STATS, stats)
        .add(INFO, info_handler)
        .add(OPENAPI, openapi_handler)
        .with_state(context);
    if let Some(r) = broker_routes {
        routes = routes.merge(r);
    }
    routes
        .router
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(Arc::new(access), guard))
}

/// The document with only the operations in `mounted` (and paths left empty removed).
pub fn document_for(mounted: &[RouteSpec]) -> String {
    let mut doc: serde_json::Value =
        serde_json::from_str(OPENAPI_DOCUMENT).expect("openapi.json is JSON (a test checks)");
    if let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) {
        for (path, ops) in paths.iter_mut() {
            if let Some(ops) = ops.as_object_mut() {
                ops.retain(|method, _| {
                    !["get", "post", "delete", "put", "patch"].contains(&method.as_str())
                        || mounted
                            .iter()
                            .any(|r| r.path == path && r.verb.openapi() == method)
                });
            }
        }
        paths.retain(|_, ops| {
            ops.as_object().is_some_and(|o| {
                o.keys()
                    .any(|k| ["get", "post", "delete", "put", "patch"].contains(&k.as_str()))
            })
        });
    }
    doc.to_string()
}

/// The key check, before any API route.
async fn guard(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    let allowed = match &*access {
        Access::LoopbackOnly => {
            let peer = request.extensions().get::<PeerAddr>().map(|p| p.0.ip());
            match peer {
                Some(ip) if is_loopback(ip) => Ok(()),
                _ => Err(ApiError::forbidden_not_loopback()),
            }
        }
        Access::Keys(keys) => {
            let token = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    let (scheme, token) = v.split_once(' ')?;
                    scheme
                        .eq_ignore_ascii_case("bearer")
                        .then_some(token.trim())
                });
            match token {
                Some(t) if keys.accepts(t) => Ok(()),
                _ => Err(ApiError::unauthorized()),
            }
        }
    };
    match allowed {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

async fn stats(State(ctx): State<Arc<Context>>) -> Response {
    Json(&*ctx.sampler.latest()).into_response()
}

async fn info_handler(State(ctx): State<Arc<Context>>) -> Response {
    Json(&ctx.info).into_response()
}

async fn openapi_handler(State(ctx): State<Arc<Context>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        ctx.openapi.clone(),
    )
        .into_response()
}

/// A JSON body: `Content-Type: application/json` (else 415), at most [`MAX_BODY`] bytes
/// (else 413), and JSON of the route's shape (else 400 `invalid_json`).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::unsupported_media_type());
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(ApiError::payload_too_large(MAX_BODY));
        }
        let body: Bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|e| {
                if passed_limit(&e) {
                    ApiError::payload_too_large(MAX_BODY)
                } else {
                    ApiError::invalid_request(format!("cannot read the body: {e}"))
                }
            })?;
        serde_json::from_slice(&body)
            .map(ApiJson)
            .map_err(ApiError::invalid_json)
    }
}

/// Whether a body read failed because the body passed its limit (the error `to_bytes`
/// wraps somewhere in the chain).
fn passed_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Query parameters; a bad one is 400 `invalid_request` with the reason.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::invalid_request(e.body_text()))
    }
}

/// A path parameter, percent-decoded (a `/` inside a topic or client id is sent as `%2F`).
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::invalid_request(e.body_text()))
    }
}

/// The JSON 404 for any path under `/api/` that is not a route.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such API route; see /api/v1/openapi.json")
}

/// The status of an empty success (`DELETE`).
pub const NO_CONTENT: StatusCode = StatusCode::NO_CONTENT;
