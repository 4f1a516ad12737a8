//! The swarm against a real broker: Debian's `mosquitto`, started here as a child process on
//! free loopback ports (one plain MQTT listener, one WebSocket listener; or both over TLS,
//! with certificates made here, to check the swarm's TLS client against OpenSSL's server).
//!
//! NEEDS `mosquitto` on PATH (or in /usr/sbin, where Debian puts it): `apt-get install -y
//! mosquitto`. Without it every test here fails, saying so: a test that cannot run its
//! broker has tested nothing, and must not pass.
//!
//! The runs are short (about 2 s each) and run one at a time, so that they do not compete
//! for the CPU with each other. mosquitto is configured with `set_tcp_nodelay true`: its
//! default leaves Nagle's algorithm on for deliveries, which adds tens of milliseconds of
//! latency that have nothing to do with the swarm.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringmq_bench::config::Config;
use ringmq_bench::report::RunReport;
use ringmq_bench::run::run;

/// Source addresses of the swarm's connections.
const SOURCE_ADDRS: &str = "127.66.0.1-127.66.0.16";

/// One broker run at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn find_mosquitto() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("mosquitto"))
        .find(|p| p.is_file())
}

/// Two distinct free ports below the ephemeral range (32768 and up by default), so that
/// no outgoing connection, on this test's swarm or anyone else's, holds them: mosquitto's
/// WebSocket listener binds `[::]:PORT`, which any socket with that local port blocks.
/// Each is checked by binding the wildcard address, and both are held while picking.
fn free_ports() -> (u16, u16) {
    let mut candidate = 20_000 + (std::process::id() % 10_000) as u16;
    let mut held = Vec::new();
    while held.len() < 2 {
        candidate = if candidate >= 31_999 {
            20_000
        } else {
            candidate + 1
        };
        if let Ok(l) = TcpListener::bind(("::", candidate))
            .or_else(|_| TcpListener::bind(("0.0.0.0", candidate)))
        {
            held.push(l);
        }
    }
    let port = |l: &TcpListener| l.local_addr().unwrap().port();
    (port(&held[0]), port(&held[1]))
}

/// A mosquitto child process, killed on drop.
struct Broker {
    child: Child,
    tcp: u16,
    ws: u16,
    dir: PathBuf,
}

/// A CA and a server certificate for `localhost` and `127.0.0.1` it signed (ECDSA P-256),
/// written as PEM files into `dir`: (CA, certificate, key).
fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "swarm test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    (
        write("ca.pem", ca.pem()),
        write("server.pem", cert.pem()),
        write("server.key", key.serialize_pem()),
    )
}

impl Broker {
    /// Starts mosquitto; panics if it is not installed.
    fn start(name: &str) -> Broker {
        Broker::start_with(name, false)
    }

    /// Starts mosquitto with both listeners over TLS (see `make_certs`; the CA is
    /// `file("ca.pem")`).
    fn start_tls(name: &str) -> Broker {
        Broker::start_with(name, true)
    }

    fn start_with(name: &str, tls: bool) -> Broker {
        let bin = find_mosquitto().expect(
            "mosquitto not found on PATH, in /usr/sbin or /usr/local/sbin: these tests need \
             it (apt-get install -y mosquitto)",
        );
        let dir =
            std::env::temp_dir().join(format!("ringmq-swarm-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (tcp, ws) = free_ports();
        let conf = dir.join("mosquitto.conf");
        let tls_lines = if tls {
            let (_, cert, key) = make_certs(&dir);
            format!("certfile {}\nkeyfile {}\n", cert.display(), key.display())
        } else {
            String::new()
        };
        std::fs::write(
            &conf,
            format!(
                "listener {tcp} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n\
                 {tls_lines}\
                 listener {ws} 127.0.0.1\nprotocol websockets\nallow_anonymous true\n\
                 set_tcp_nodelay true\n{tls_lines}"
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let broker = Broker {
            child,
            tcp,
            ws,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [tcp, ws] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "mosquitto did not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        broker
    }

    /// Kills the broker, waits `down`, and starts it again on the same ports.
    fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        let bin = find_mosquitto().expect("found before");
        self.child = Command::new(bin)
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("restart mosquitto");
    }

    fn tcp(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.tcp)
    }

    fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}/mqtt", self.ws)
    }

    fn mqtts(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.tcp)
    }

    fn wss(&self) -> String {
        format!("wss://127.0.0.1:{}/mqtt", self.ws)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn swarm(args: &[&str]) -> RunReport {
    let mut argv = vec!["ringmq-swarm"];
    argv.extend_from_slice(args);
    argv.extend_from_slice(&["--quiet", "--threads", "2", "--seed", "7"]);
    if !args.contains(&"--source-addrs") {
        // Not 127.0.0.1: on a busy machine its ephemeral ports may all be taken.
        argv.extend_from_slice(&["--source-addrs", SOURCE_ADDRS]);
    }
    let cfg = Config::from_argv(argv).expect("valid command line");
    let report = run(cfg).expect("the run completes");
    print!("{}", report.summary());
    report
}

/// No message lost, duplicated or reordered, every expected delivery made, no
/// connection trouble.
fn assert_clean(r: &RunReport) {
    let m = r.messages.as_ref().expect("message figures");
    assert!(m.published > 0, "nothing published");
    assert_eq!(m.lost, 0, "lost");
    assert_eq!(m.duplicates, 0, "duplicated");
    assert_eq!(m.out_of_order, 0, "out of order");
    assert_eq!(m.foreign, 0, "foreign");
    assert_eq!(m.unique, m.expected, "delivered != expected");
    assert_eq!(m.received, m.unique);
    assert_eq!(m.publish_skipped, 0, "publishers fell behind the rate");
    assert!(m.delivered_measured > 0);
    let l = r.latency_us.as_ref().expect("latency figures");
    assert_eq!(
        l.count, m.delivered_measured,
        "one latency per measured delivery"
    );
    assert!(l.p50 > 0 && l.p50 <= l.p99 && l.p99 <= l.max);
    let c = &r.connect;
    assert!(c.all_ready);
    assert_eq!(c.reconnects, 0);
    assert_eq!(c.disconnects, 0);
    assert_eq!(
        c.connect_failures + c.connack_refused + c.suback_refused + c.timeouts,
        0
    );
    assert_eq!(c.protocol_errors, 0);
    assert!(r.errors.is_empty(), "errors: {:?}", r.errors);
}

#[test]
fn fanout_qos1_one_publisher_twenty_subscribers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let b = Broker::start("fanout");
    let (json, hist, html) = (b.file("r.json"), b.file("r.hlog"), b.file("r.html"));
    let r = swarm(&[
        "fanout",
        "--target",
        &b.tcp(),
        "--connections",
        "20",
        "--publishers",
        "1",
        "--qos",
        "1",
        "--rate",
        "500",
        "--duration",
        "2",
        "--warmup",
        "0.5",
        "--json",
        json.to_str().unwrap(),
        "--hist",
        hist.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
    ]);
    assert_clean(&r);
    let m = r.messages.as_ref().unwrap();
    // Every message reaches all 20 subscribers.
    assert_eq!(m.expected, m.published * 20);
    // 500 msg/s for 2 s, give or take a loop turn at each end.
    assert!(
        (990..=1010).contains(&m.published_measured),
        "{}",
        m.published_measured
    );
    assert_eq!(m.delivered_measured, m.published_measured * 20);
    r.write_json(&json).unwrap();
    r.write_html(&html).unwrap();
    check_outputs(&r, &json, &hist, &html);
}

/// The three output files say what the report says.
fn check_outputs(r: &RunReport, json: &Path, hist: &Path, html: &Path) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).expect("valid JSON");
    assert_eq!(v["scenario"], "fanout");
    assert_eq!(
        v["messages"]["lost"].as_u64(),
        Some(r.messages.as_ref().unwrap().lost)
    );
    assert_eq!(
        v["latency_us"]["count"].as_u64(),
        Some(r.latency_us.as_ref().unwrap().count)
    );

    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let log = std::fs::read(hist).unwrap();
    let mut total = 0u64;
    let mut intervals = 0;
    let mut de = Deserializer::new();
    for entry in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(ilh) = entry.expect("a well-formed interval log") {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(ilh.encoded_histogram())
                .unwrap();
            let h: hdrhistogram::Histogram<u64> =
                de.deserialize(&mut std::io::Cursor::new(bytes)).unwrap();
            total += h.len();
            intervals += 1;
        }
    }
    assert!(intervals >= 2, "{intervals} intervals");
    assert_eq!(total, r.latency_us.as_ref().unwrap().count);

    let page = std::fs::read_to_string(html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.matches("<svg").count() >= 2, "plots missing");
    for banned in ["<script", " src=", "<link", "@import", "url("] {
        assert!(
            !page.contains(banned),
            "report refers outside itself: {banned}"
        );
    }
}

#[test]
fn pairs_fifty_clients() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let b = Broker::start("pairs");
    let r = swarm(&[
        "pairs",
        "--target",
        &b.tcp(),
        "--connections",
        "50",
        "--rate",
        "2000",
        "--duration",
        "2",
        "--warmup",
        "0.5",
    ]);
    assert_clean(&r);
    let m = r.messages.as_ref().unwrap();
    // One subscriber per topic: every message is delivered once.
    assert_eq!(m.expected, m.published);
}

#[test]
fn connect_storm_of_two_hundred() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let b = Broker::start("connect");
    let r = swarm(&[
        "connect",
        "--target",
        &b.tcp(),
        "--connections",
        "200",
        "--duration",
        "20",
    ]);
    let c = &r.connect;
    assert!(c.all_ready);
    assert_eq!(c.first_connacks, 200);
    assert_eq!(c.latency_us.count, 200);
    assert!(c.time_to_all_s.is_some_and(|t| t > 0.0));
    assert!(c.rate_per_s.is_some_and(|r| r > 0.0));
    assert_eq!(c.connect_failures + c.connack_refused + c.timeouts, 0);
    assert!(r.messages.is_none());
}

#[test]
fn websocket_fanout_qos2_mqtt5() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let b = Broker::start("ws");
    let r = swarm(&[
        "fanout",
        "--target",
        &b.ws(),
        "--connections",
        "10",
        "--publishers",
        "2",
        "--qos",
        "2",
        "--mqtt-version",
        "5",
        "--rate",
        "400",
        "--duration",
        "2",
        "--warmup",
        "0.5",
    ]);
    assert_clean(&r);
    assert_eq!(r.transport, "ws");
    let m = r.messages.as_ref().unwrap();
    assert_eq!(m.expected, m.published * 10);
}

#[test]
fn tls_fanout_on_1_2_and_1_3_and_over_wss() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let b = Broker::start_tls("tls");
    let ca = b.file("ca.pem");
    let ca = ca.to_str().unwrap();
    for (target, version) in [(b.mqtts(), "1.2"), (b.mqtts(), "1.3"), (b.wss(), "1.3")] {
        let r = swarm(&[
            "fanout",
            "--target",
            &target,
            "--tls-ca",
            ca,
            "--tls-version",
            version,
            "--connections",
            "10",
            "--qos",
            "1",
            "--rate",
            "300",
            "--duration",
            "1.5",
            "--warmup",
            "0.5",
        ]);
        assert_clean(&r);
        assert_eq!(
            r.transport,
            target[..target.find(':').unwrap()].replace("mqtts", "tls")
        );
        let m = r.messages.as_ref().unwrap();
        assert_eq!(m.expected, m.published * 10, "{target} TLS {version}");
    }
    // A client that does not trust the broker's CA gets nowhere, and says why.
    let r = swarm(&[
        "connect",
        "--target",
        &b.mqtts(),
        "--tls-ca",
        b.file("server.pem").to_str().unwrap(),
        "--connections",
        "3",
        "--duration",
        "1",
    ]);
    assert!(!r.connect.all_ready);
    assert!(
        r.errors.iter().any(|(e, _)| e.contains("certificate")),
        "{:?}",
        r.errors
    );
}

#[test]
fn idle_with_keepalive_and_broker_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let b = Broker::start("idle");
    let pid = b.pid().to_string();
    let r = swarm(&[
        "idle",
        "--target",
        &b.tcp(),
        "--connections",
        "100",
        "--subscribe-own",
        "--keepalive",
        "1",
        "--duration",
        "2.5",
        "--broker-pid",
        &pid,
        "--source-addrs",
        "127.0.0.2-127.0.0.5",
    ]);
    assert!(r.connect.all_ready);
    assert_eq!(r.counters.ready, 0, "all closed at the end");
    // Keepalive 1 s over 2.5 s of holding: at least two PINGREQs per client.
    assert!(r.counters.pings >= 200, "{} pings", r.counters.pings);
    assert_eq!(r.connect.disconnects, 0);
    let broker = r.broker.as_ref().expect("broker figures");
    assert!(broker.rss_before > 0 && broker.rss_end > 0);
    assert_eq!(r.source_addrs, 4);
}

#[test]
fn lost_connections_come_back_after_a_broker_restart() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = Broker::start("restart");
    let target = b.tcp();
    let swarm = std::thread::spawn(move || {
        swarm(&[
            "idle",
            "--target",
            &target,
            "--connections",
            "20",
            "--subscribe-own",
            "--duration",
            "4",
        ])
    });
    // The idle hold starts once all 20 are ready (well under a second); drop them all,
    // and come back before the first retry (0.75 to 1 s after the loss).
    std::thread::sleep(Duration::from_millis(1_000));
    b.restart(Duration::from_millis(300));
    let r = swarm.join().expect("swarm thread");
    let c = &r.connect;
    assert!(c.all_ready);
    assert_eq!(c.first_connacks, 20);
    assert_eq!(c.disconnects, 20, "every connection was lost once");
    assert!(c.reconnects >= 20, "{} reconnects", c.reconnects);
    // Back and subscribed again: a second CONNACK for everyone.
    assert_eq!(c.connacks, 40, "errors: {:?}", r.errors);
}
