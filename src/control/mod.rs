//! The control plane, on threads of its own (never a shard's):
//!
//! - [`http`]: the HTTP server (axum on a small Tokio runtime) and its routes: [`metrics`]
//!   (`/metrics` in the Prometheus text format, `/healthz`), [`histograms`] (the shards'
//!   latency histograms as one HdrHistogram interval log, `/debug/histograms`),
//!   [`dashboard`] (`/`), and [`api`] (the JSON API under `/api/v1/`);
//! - [`stats`]: samples of the shards' counters, with rates, for the API and the dashboard;
//! - [`webhook`]: the broker's events, batched, signed and POSTed to the operator's URLs;
//! - [`logging`]: the process's `tracing` subscriber;
//! - [`plane`]: starts all of it.

pub mod api;
pub mod dashboard;
pub mod histograms;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod plane;
pub mod stats;
pub mod webhook;
