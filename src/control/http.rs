//! The control plane's HTTP server: one axum router on a small Tokio runtime of its own
//! (threads `ringmq-http`), never on a shard's thread. It serves
//!
//! - `/metrics` (Prometheus text), `/healthz`, `/debug/histograms` — unauthenticated, as
//!   scrapers and probes expect;
//! - `/` and `/dashboard/*`: the dashboard, embedded in the binary;
//! - `/api/v1/*`: the JSON API (see [`crate::control::api`]).
//!
//! A client cannot stall it: at most [`Limits::max_connections`] connections are served
//! at once (more wait in the listen backlog), a request head must arrive within
//! [`Limits::header_timeout`] and fit [`Limits::max_header_bytes`] (else 431), a request
//! is answered within [`Limits::request_timeout`] (else 503), and a connection lives at
//! most [`Limits::connection_lifetime`] (then it is closed after its current request).
//! With `--http-tls` it speaks https with the TLS listeners' certificates; a TLS
//! handshake must end within [`Limits::header_timeout`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ringmq_shard::tls::TlsAcceptor;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::control::api::{self, ApiError, PeerAddr};
use crate::control::{dashboard, histograms, metrics};

/// The bounds of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub connection_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 256,
            // hyper's smallest read buffer; a larger head is answered 431.
            max_header_bytes: 8 * 1024,
            max_headers: 64,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(120),
        }
    }
}

/// How long a connection past its lifetime gets to finish its current request.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The control plane's Tokio runtime: two worker threads named `ringmq-http`.
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(2)
        .thread_name("ringmq-http")
        .enable_all()
        .build()
}

/// The whole router: the endpoints that were there before the API, the dashboard, and
/// `api` (from [`api::router`]).
pub fn app(state: Arc<metrics::State>, api: Router, limits: Limits) -> Router {
    let plain = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/debug/histograms", get(histogram_log))
        .with_state(state);
    plain
        .merge(dashboard::router())
        .merge(api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(limits, time_limit))
}

/// Serves `app` on `listener` until the runtime ends; over TLS with `tls`'s settings of
/// the moment (a SIGHUP's new certificates serve the next handshake).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<TlsAcceptor>>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "http: accept failed");
                // Out of descriptors, most likely: give them a moment to come back.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(TokioIo::new(stream), peer, app, limits).await,
                Some(tls) => {
                    // The handshake gets the time a request head gets.
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                    let handshake = acceptor.accept(stream);
                    match tokio::time::timeout(limits.header_timeout, handshake).await {
                        Ok(Ok(stream)) => {
                            serve_connection(TokioIo::new(stream), peer, app, limits).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "http: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "http: TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
}

/// One HTTP/1.1 connection, keep-alive, within the limits.
async fn serve_connection<I>(io: I, peer: SocketAddr, app: Router, limits: Limits)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        app.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http: connection ended with an error");
            }
        }
        _ = tokio::time::sleep(limits.connection_lifetime) => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
        }
    }
}

/// Answers 503 to a request not answered within the time limit (JSON under `/api/`).
async fn time_limit(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let api = is_api(request.uri().path());
    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) if api => {
            ApiError::unavailable("the request took longer than its time limit").into_response()
        }
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "request timed out\n"),
    }
}

fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

async fn not_found(request: Request) -> Response {
    if is_api(request.uri().path()) {
        return api::not_found().await.into_response();
    }
    text(
        StatusCode::NOT_FOUND,
        "not found; try / (dashboard), /metrics, /healthz, /debug/histograms or /api/v1/openapi.json\n",
    )
}

fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn metrics_text(State(state): State<Arc<metrics::State>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics::render(&state),
    )
        .into_response()
}

async fn healthz(State(state): State<Arc<metrics::State>>) -> Response {
    if state.shutting_down.load(Ordering::Relaxed) {
        text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        text(StatusCode::OK, "ok\n")
    }
}

async fn histogram_log(State(state): State<Arc<metrics::State>>) -> Response {
    let log = histograms::dump(
        &metrics::histogram_sets(&state.shards),
        state.started.elapsed(),
    );
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        Body::from(log),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
