//! The control plane's HTTP endpoint, on its own thread: [`metrics`] (`/metrics` in the
//! Prometheus text format, `/healthz`, `/debug/histograms`) and [`histograms`] (the shards'
//! latency histograms as one HdrHistogram interval log).

pub mod histograms;
pub mod metrics;
