//! A steady stream of HTTP API publishes, for benchmarks that measure what the API costs
//! the broker (`bench/api.sh`): `RATE` requests per second of `POST /api/v1/publish` to
//! `TOPIC/<n>` for `SECONDS`, over a few keep-alive connections, paced by a clock (a
//! request that falls behind is not made up for). Prints one line: requests made,
//! answered 200, failed, and the answer time's p50/p99/max in µs.
//!
//! `cargo run --release --example api_load -- http://127.0.0.1:9883 1000 10 api/load`

use std::time::{Duration, Instant};

/// Connections (and tasks) the requests are spread over.
const CONNECTIONS: usize = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:9883".into());
    let rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000.0);
    let seconds: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let topic = args.next().unwrap_or_else(|| "api/load".into());
    let url = format!("{base}/api/v1/publish");
    // reqwest is built without a crypto provider of its own; plain HTTP needs none, but
    // its client wants one installed.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let interval = Duration::from_secs_f64(CONNECTIONS as f64 / rate.max(1.0));
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .expect("an HTTP client");
        let url = url.clone();
        let topic = topic.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let (mut ok, mut failed, mut times) = (0u64, 0u64, Vec::new());
            let mut n = 0u64;
            while Instant::now() < end {
                tick.tick().await;
                let body = format!("{{\"topic\":\"{topic}/{c}\",\"payload\":\"load {n}\"}}");
                n += 1;
                let sent = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        ok += 1;
                        times.push(sent.elapsed().as_micros() as u64);
                    }
                    _ => failed += 1,
                }
            }
            (ok, failed, times)
        }));
    }
    let (mut ok, mut failed, mut times) = (0, 0, Vec::new());
    for t in tasks {
        let (o, f, mut ts) = t.await.expect("a load task");
        ok += o;
        failed += f;
        times.append(&mut ts);
    }
    times.sort_unstable();
    let at = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "api_load requests {} ok {ok} failed {failed} rate {:.0}/s answer_us p50 {} p99 {} max {}",
        ok + failed,
        (ok + failed) as f64 / seconds,
        at(0.5),
        at(0.99),
        times.last().copied().unwrap_or(0)
    );
}
