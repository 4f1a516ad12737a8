//! A steady stream of HTTP API publishes, for benchmarks that measure what the API costs
//! the broker (`bench/api.sh`): `RATE` requests per second of `POST /api/v1/publish` to
//! `TOPIC/<n % 16>` for `SECONDS`, open loop (a request starts on the clock, whether or not
//! earlier ones have been answered; at most [`MAX_IN_FLIGHT`] at once, past which a tick is
//! skipped and counted), over keep-alive connections. Prints one line: requests started,
//! answered 200, failed, skipped, and the answer time's p50/p99/max in µs.
//!
//! `cargo run --release --example api_load -- http://127.0.0.1:9883 1000 10 api/load`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Requests waiting for their answer at once, at most.
const MAX_IN_FLIGHT: usize = 256;

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:9883".into());
    let rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000.0);
    let seconds: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let topic = args.next().unwrap_or_else(|| "api/load".into());
    let url: Arc<str> = format!("{base}/api/v1/publish").into();
    // reqwest is built without a crypto provider of its own; plain HTTP needs none, but
    // its client wants one installed.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Option<u64>>();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut started, mut skipped) = (0u64, 0u64);
    while Instant::now() < end {
        tick.tick().await;
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            skipped += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let body = format!(
            "{{\"topic\":\"{topic}/{}\",\"payload\":\"load {started}\"}}",
            started % 16
        );
        started += 1;
        let (client, url, in_flight, done) = (
            client.clone(),
            url.clone(),
            in_flight.clone(),
            done_tx.clone(),
        );
        tokio::spawn(async move {
            let sent = Instant::now();
            let r = client
                .post(&*url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let ok = match r {
                Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                _ => false,
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = done.send(ok.then(|| sent.elapsed().as_micros() as u64));
        });
    }
    drop(done_tx);
    let (mut ok, mut failed, mut times) = (0u64, 0u64, Vec::new());
    while let Some(answer) = done_rx.recv().await {
        match answer {
            Some(us) => {
                ok += 1;
                times.push(us);
            }
            None => failed += 1,
        }
    }
    times.sort_unstable();
    let at = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "api_load started {started} ok {ok} failed {failed} skipped {skipped} ({:.0}/s answered) answer_us p50 {} p99 {} max {}",
        ok as f64 / seconds,
        at(0.5),
        at(0.99),
        times.last().copied().unwrap_or(0)
    );
}
