//! What the end-to-end tests share. Each test file says `mod support;` and
//! `use support::*;`; this directory is not a test target of its own.
//!
//! Everything here is a client independent of ringmq's code, as a client in the field
//! would be:
//! - `broker`: starts the real binary on free ports, waits for it, stops it, reads
//!   `/metrics`.
//! - `raw`: MQTT 3.1.1 and 5.0 packets written and read by hand from the specs, over
//!   plain `TcpStream`s, for what a library client cannot say or show (exact bytes,
//!   DUP flags, reason codes, packets a well-behaved client never sends).
//! - `ws`: RFC 6455 by hand (upgrade request, frames) and a tungstenite client.
//! - `client`: a rumqttc client whose event loop runs in the background and whose
//!   incoming packets wait in order until the test asks for them; `v311` and `v5` adapt
//!   it to the two protocol versions (`V4`, `V5`).
//! - `js`: running the Node.js scripts of `tests/js/` (MQTT.js, and Chromium through
//!   playwright-core), failing with install instructions when something is missing.
//! - `shards`: which shard a connection landed on, and placing clients on chosen shards.
//! - `creds`: password files made by `mosquitto_passwd` and `ringmq passwd`, JWTs signed
//!   by hand.
//! - `tls`: certificates made by the test (rcgen) as PEM files, and a blocking rustls
//!   client for exact bytes and secure WebSocket.

// Every test file compiles this whole tree and uses a part of it.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod client;
pub mod creds;
pub mod js;
pub mod nats;
pub mod raw;
pub mod shards;
pub mod tls;
pub mod v311;
pub mod v5;
pub mod ws;

pub use broker::{Broker, TempDir, http_get, parse_metric, run};
pub use client::{Got, Seen, got};
pub use raw::*;
pub use shards::*;
pub use tls::*;
pub use v5::V5;
pub use v311::{Healthy, V4};
pub use ws::*;

use std::time::Duration;

/// How long anything that should happen may take (generous: the host is small and
/// shared, so a hang fails instead of blocking; no test asserts that anything is quick).
pub const WAIT: Duration = Duration::from_secs(30);

/// How long to watch for something that must not happen.
pub const QUIET: Duration = Duration::from_millis(700);

/// A multi-threaded runtime on which rumqttc event loops run in the background, so that
/// a test's own thread may block on raw sockets while they keep working.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
