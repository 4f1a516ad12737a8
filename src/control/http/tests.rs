//! The HTTP server over real sockets: the endpoints that were there before the API keep
//! their answers, and slow or oversized clients are bounded without stalling others.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::broker::ShardFigures;

use super::*;
use crate::control::api::{Access, Info};
use crate::control::stats::{Sampler, Sources};

/// Starts the whole app on a loopback port, on a runtime of its own; returns the address
/// and what the endpoints read.
fn start(limits: Limits) -> (SocketAddr, Arc<metrics::State>, tokio::runtime::Runtime) {
    let runtime = runtime().unwrap();
    let state = Arc::new(metrics::State {
        shards: (0..2).map(|_| ShardFigures::default()).collect(),
        started: Instant::now(),
        shutting_down: Arc::new(AtomicBool::new(false)),
        webhooks: None,
        auth: None,
        limits: None,
        cluster: None,
    });
    let sampler = Arc::new(Sampler::new(Sources {
        shards: state.shards.clone(),
        started: state.started,
        webhooks: None,
    }));
    let info = Info {
        version: "0.1.0",
        shards: 2,
        mqtt: None,
        ws: None,
        broker_api: false,
    };
    let api = api::router(sampler, info, Access::LoopbackOnly, None);
    let app = app(state.clone(), api, limits);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(serve(listener, app, limits, None));
    (addr, state, runtime)
}

/// Sends raw bytes, reads the answer until the server closes.
fn ask(addr: SocketAddr, request: &[u8]) -> String {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = c.write_all(request);
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}

fn get(addr: SocketAddr, path: &str) -> String {
    ask(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn the_old_endpoints_keep_their_answers() {
    let (addr, state, _rt) = start(Limits::default());
    state.shards[1].runtime.connections_total.add(4);
    let m = get(addr, "/metrics");
    assert!(m.starts_with("HTTP/1.1 200 OK\r\n"), "{m}");
    assert!(
        m.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{m}"
    );
    assert!(
        m.contains("\nringmq_connections_total{shard=\"1\"} 4\n"),
        "{m}"
    );
    assert!(get(addr, "/metrics?x=1").starts_with("HTTP/1.1 200 "));
    let h = get(addr, "/healthz");
    assert!(
        h.starts_with("HTTP/1.1 200 OK\r\n") && h.ends_with("\r\n\r\nok\n"),
        "{h}"
    );
    let hist = get(addr, "/debug/histograms");
    assert!(
        hist.starts_with("HTTP/1.1 200 ") && hist.contains("#[StartTime: "),
        "{hist}"
    );

    let head = ask(addr, b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    let post = ask(
        addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(
        post.to_ascii_lowercase().contains("allow: get,head"),
        "{post}"
    );
    let nope = get(addr, "/nope");
    assert!(
        nope.starts_with("HTTP/1.1 404 ") && nope.contains("/metrics"),
        "{nope}"
    );
    let api_nope = get(addr, "/api/v1/nope");
    assert!(
        api_nope.starts_with("HTTP/1.1 404 ") && api_nope.contains("\"code\":\"not_found\""),
        "{api_nope}"
    );
    assert!(get(addr, "/").contains("<title>ringmq</title>"));

    state
        .shutting_down
        .store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(get(addr, "/healthz").starts_with("HTTP/1.1 503 "));
}

#[test]
fn bad_request_heads_are_refused() {
    let (addr, _state, _rt) = start(Limits::default());
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.resize(Limits::default().max_header_bytes + 100, b'a');
    big.extend_from_slice(b"\r\n\r\n");
    let a = ask(addr, &big);
    assert!(a.starts_with("HTTP/1.1 431 "), "{a}");
    let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let a = ask(addr, &many);
    assert!(a.starts_with("HTTP/1.1 431 "), "{a}");
    let a = ask(addr, b"GARBAGE\r\n\r\n");
    assert!(a.starts_with("HTTP/1.1 400 "), "{a}");
}

/// A client that sends its request head one byte at a time, never finishing it.
fn trickle(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let head = b"GET /metrics HTTP/1.1\r\nX-Slow: ";
        let mut sent = 0;
        let mut buf = [0u8; 1024];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let byte = if sent < head.len() { head[sent] } else { b'a' };
            if c.write_all(&[byte]).is_err() {
                return true;
            }
            sent += 1;
            match c.read(&mut buf) {
                // Closed by the server (it may answer 408 first).
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    })
}

#[test]
fn trickling_clients_stall_nobody_and_are_cut_off() {
    let limits = Limits {
        header_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let (addr, _state, _rt) = start(limits);
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Vec<_> = (0..4).map(|_| trickle(addr, stop.clone())).collect();
    // Many requests at once while they trickle: every one is answered.
    let askers: Vec<_> = (0..16)
        .map(|_| {
            std::thread::spawn(move || {
                (0..10)
                    .filter(|_| get(addr, "/healthz").starts_with("HTTP/1.1 200 "))
                    .count()
            })
        })
        .collect();
    let answered: usize = askers.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(answered, 160);
    // The tricklers are closed by the server (the header time limit), not by the test.
    let cut: Vec<bool> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(cut, [true; 4]);
}

#[test]
fn past_the_connection_limit_clients_wait_their_turn() {
    let limits = Limits {
        max_connections: 2,
        header_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (addr, _state, _rt) = start(limits);
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Vec<_> = (0..2).map(|_| trickle(addr, stop.clone())).collect();
    std::thread::sleep(Duration::from_millis(200));
    // Both slots are held by tricklers: this request waits in the backlog until the
    // header time limit frees a slot, then is answered.
    let answer = get(addr, "/healthz");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in slow {
        t.join().unwrap();
    }
}

#[test]
fn a_slow_api_body_is_cut_off_by_the_request_time_limit() {
    let limits = Limits {
        request_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let (addr, _state, _rt) = start(limits);
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c.write_all(
        b"POST /api/v1/stats HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .unwrap();
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    // /api/v1/stats takes no POST: the answer comes at once, whatever the body does.
    assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
}
