//! The HTTP endpoint: `/metrics` in the Prometheus text format, `/healthz`, and
//! `/debug/histograms` (the shards' latency histograms as an HdrHistogram interval log).
//!
//! A small blocking server on its own thread, one request at a time: reads the request
//! head (bounded, with a timeout), answers, and closes (`Connection: close`). It reads
//! the shards' counters (relaxed atomics) and never touches a shard otherwise.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringmq_shard::stats::{CounterSet, Description, Kind, RuntimeStats};

use crate::broker::{BrokerStats, ShardFigures};
use crate::control::histograms;

/// Largest request head read; a bigger one gets 431.
const MAX_REQUEST: usize = 8 * 1024;
/// How long one client may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// After answering, how long and how much is read while waiting for the client to close.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// What the endpoint reads.
pub struct State {
    /// Each shard's counters and histograms, in shard order.
    pub shards: Vec<ShardFigures>,
    pub started: Instant,
    /// Set when shutdown begins; `/healthz` then answers 503.
    pub shutting_down: Arc<AtomicBool>,
}

/// Serves requests on `listener` on a new thread, for the life of the process.
pub fn spawn(listener: TcpListener, state: State) -> io::Result<()> {
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || serve(listener, state))?;
    Ok(())
}

fn serve(listener: TcpListener, state: State) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                // A client that goes away mid-answer is its own problem.
                let _ = handle(stream, &state);
            }
            Err(e) => {
                eprintln!("ringmq: metrics endpoint: accept failed: {e}");
                // Out of descriptors, most likely: give them a moment to come back.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
    allow: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: false,
        }
    }
}

fn handle(mut stream: TcpStream, state: &State) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let head = loop {
        if let Some(end) = head_end(&buf[..len]) {
            break Some(end);
        }
        if len == buf.len() {
            break None;
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Ok(()),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let (response, head_only) = match head {
        None => (Response::text(431, "request header too large\n"), false),
        Some(end) => match std::str::from_utf8(&buf[..end]) {
            Ok(text) => route(text, state),
            Err(_) => (Response::text(400, "bad request\n"), false),
        },
    };
    write_response(&mut stream, &response, head_only)?;
    stream.flush()?;
    linger(stream);
    Ok(())
}

/// Closes after the client has read the answer: shuts down writing, then reads what the
/// client still sends (a bounded amount, briefly), so that unread input does not make
/// the close a reset that destroys the answer before the client reads it.
fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER));
    let mut sink = [0u8; 4096];
    let mut left = LINGER_BYTES;
    while left > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Where the request head ends (the blank line), if it has ended.
fn head_end(b: &[u8]) -> Option<usize> {
    b.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| b.windows(2).position(|w| w == b"\n\n"))
}

/// The answer to a request head, and whether only its head is sent (HEAD).
fn route(head: &str, state: &State) -> (Response, bool) {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return (Response::text(400, "bad request line\n"), false);
    };
    if !version.starts_with("HTTP/1.") {
        return (Response::text(505, "HTTP/1.x only\n"), false);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut r = Response::text(405, "only GET and HEAD\n");
            r.allow = true;
            return (r, false);
        }
    };
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let response = match path {
        "/metrics" => Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: render(state),
            allow: false,
        },
        "/healthz" if state.shutting_down.load(Ordering::Relaxed) => {
            Response::text(503, "shutting down\n")
        }
        "/healthz" => Response::text(200, "ok\n"),
        "/debug/histograms" => Response {
            status: 200,
            content_type: "text/plain; charset=utf-8",
            body: String::from_utf8_lossy(&histograms::dump(
                &histogram_sets(&state.shards),
                state.started.elapsed(),
            ))
            .into_owned(),
            allow: false,
        },
        _ => Response::text(
            404,
            "not found; try /metrics, /healthz or /debug/histograms\n",
        ),
    };
    (response, head_only)
}

fn write_response(w: &mut impl Write, r: &Response, head_only: bool) -> io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    if r.allow {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())?;
    if !head_only {
        w.write_all(r.body.as_bytes())?;
    }
    Ok(())
}

/// Each shard's histogram sets, the broker's first (the order of their dump).
pub fn histogram_sets(shards: &[ShardFigures]) -> Vec<Vec<ringmq_shard::hist::SharedHists>> {
    shards
        .iter()
        .map(|s| vec![s.broker_hists.clone(), s.runtime_hists.clone()])
        .collect()
}

/// The Prometheus text exposition (format 0.0.4) of every counter, the runtime's then the
/// broker's: one sample per shard (label `shard`) and their sum (no label), then
/// process-wide values.
pub fn render(state: &State) -> String {
    let mut out = String::with_capacity(4096 + 64 * state.shards.len() * 32);
    let runtime: Vec<_> = state.shards.iter().map(|s| s.runtime.values()).collect();
    counter_family(&mut out, RuntimeStats::DESCRIPTIONS, &runtime);
    let broker: Vec<_> = state.shards.iter().map(|s| s.broker.values()).collect();
    counter_family(&mut out, BrokerStats::DESCRIPTIONS, &broker);
    let uptime = state.started.elapsed().as_secs_f64();
    let version = env!("CARGO_PKG_VERSION");
    let _ = write!(
        out,
        "# HELP ringmq_shards Shards (threads with their own io_uring ring) running.\n\
         # TYPE ringmq_shards gauge\n\
         ringmq_shards {}\n\
         # HELP ringmq_uptime_seconds Seconds since the broker started.\n\
         # TYPE ringmq_uptime_seconds gauge\n\
         ringmq_uptime_seconds {uptime:.3}\n\
         # HELP ringmq_build_info The running ringmq version.\n\
         # TYPE ringmq_build_info gauge\n\
         ringmq_build_info{{version=\"{version}\"}} 1\n",
        state.shards.len()
    );
    out
}

/// One set of counters: for each, its HELP and TYPE lines, a sample per shard
/// (`per_shard[shard][counter]`) and their sum.
fn counter_family(out: &mut String, descriptions: &[Description], per_shard: &[Vec<u64>]) {
    for (i, &(name, kind, help)) in descriptions.iter().enumerate() {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(out, "# HELP ringmq_{name} {help}");
        let _ = writeln!(out, "# TYPE ringmq_{name} {kind}");
        let mut sum: u64 = 0;
        for (shard, values) in per_shard.iter().enumerate() {
            let v = values[i];
            sum = sum.wrapping_add(v);
            let _ = writeln!(out, "ringmq_{name}{{shard=\"{shard}\"}} {v}");
        }
        let _ = writeln!(out, "ringmq_{name} {sum}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(shards: usize) -> State {
        State {
            shards: (0..shards).map(|_| ShardFigures::default()).collect(),
            started: Instant::now(),
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    #[test]
    fn every_counter_per_shard_and_summed() {
        let s = state(2);
        s.shards[0].runtime.connections_total.add(3);
        s.shards[1].runtime.connections_total.add(4);
        s.shards[1].runtime.connections_current.add(1);
        s.shards[0].broker.messages_out.add(5);
        s.shards[1].broker.deliveries_waiting.set(2);
        let text = render(&s);
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            "# TYPE ringmq_connections_current gauge",
            "# TYPE ringmq_connections_total counter",
            "ringmq_connections_total{shard=\"0\"} 3",
            "ringmq_connections_total{shard=\"1\"} 4",
            "ringmq_connections_total 7",
            "ringmq_connections_current 1",
            "# TYPE ringmq_messages_out counter",
            "ringmq_messages_out{shard=\"0\"} 5",
            "ringmq_messages_out 5",
            "# TYPE ringmq_deliveries_waiting gauge",
            "ringmq_deliveries_waiting 2",
            "ringmq_shards 2",
            "# TYPE ringmq_shards gauge",
            "ringmq_build_info{version=\"0.1.0\"} 1",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{text}");
        }
        let names = RuntimeStats::DESCRIPTIONS
            .iter()
            .chain(BrokerStats::DESCRIPTIONS)
            .map(|d| d.0);
        let mut seen = std::collections::HashSet::new();
        for name in names {
            assert!(seen.insert(name), "{name} is counted twice");
            let help = format!("# HELP ringmq_{name} ");
            assert!(text.contains(&help), "no HELP for {name}");
        }
        assert!(text.contains("\nringmq_uptime_seconds "));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn routes() {
        let s = state(1);
        let status = |head: &str| route(head, &s).0.status;
        assert_eq!(status("GET /metrics HTTP/1.1\r\n"), 200);
        assert_eq!(status("GET /metrics?x=1 HTTP/1.0\r\n"), 200);
        assert_eq!(status("GET /healthz HTTP/1.1\r\n"), 200);
        assert_eq!(status("GET /nope HTTP/1.1\r\n"), 404);
        assert_eq!(status("POST /metrics HTTP/1.1\r\n"), 405);
        assert_eq!(status("GET /metrics HTTP/2\r\n"), 505);
        assert_eq!(status("GET\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1 extra\r\n"), 400);
        assert!(route("HEAD /healthz HTTP/1.1\r\n", &s).1);
        s.shutting_down.store(true, Ordering::Relaxed);
        assert_eq!(status("GET /healthz HTTP/1.1\r\n"), 503);
    }

    #[test]
    fn answers_over_a_socket_and_bounds_the_request() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        spawn(listener, state(1)).unwrap();
        let ask = |req: &[u8]| {
            let mut c = TcpStream::connect(addr).unwrap();
            let _ = c.write_all(req);
            let mut out = String::new();
            let _ = c.read_to_string(&mut out);
            out
        };
        let ok = ask(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Connection: close\r\n"));
        assert!(ok.ends_with("\r\n\r\nok\n"));
        let head = ask(b"HEAD /metrics HTTP/1.1\r\n\r\n");
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST + 100, b'a');
        let too_big = ask(&big);
        assert!(too_big.starts_with("HTTP/1.1 431 "), "{too_big}");
    }
}
