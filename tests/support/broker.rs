//! The real `ringmq` binary, started for a test: on free ports, in its own data
//! directory, stopped when the test is done; its `/metrics` read over plain HTTP.
//!
//! `Broker::start(&args)` runs the binary with `args`, adding what a test needs unless
//! `args` already says it:
//! - `--mqtt 127.0.0.1:0 --ws 127.0.0.1:0 --http 127.0.0.1:0` (free ports; the real
//!   ones are read from the startup line),
//! - `--data-dir` in a fresh temporary directory,
//! - `--shards 2`, unless `--shards` or `--config` is given (so a big CI host does not
//!   start one shard per core for every test).
//!
//! The broker's stdout is read line by line (the startup line, shutdown lines); its
//! stderr goes to a file that a failing test prints. Dropping a `Broker` kills it.
//! Waits have generous deadlines so that a hang fails instead of blocking forever; no
//! test asserts how long anything takes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::WAIT;

/// How long the broker may take to print its startup line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the broker may take to exit after a signal.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a one-shot run (`--help`, bad flags) may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

pub const BIN: &str = env!("CARGO_BIN_EXE_ringmq");

/// A temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("ringmq-test-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` in the directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `ringmq args` to its end (for `--help`, bad flags, failed starts); kills it and
/// panics if it is still running after `RUN_TIMEOUT`.
pub fn run(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringmq");
    let pid = child.id() as i32;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(out) => out.expect("wait for ringmq"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!(
                "`ringmq {}` still running after {RUN_TIMEOUT:?}",
                args.join(" ")
            );
        }
    }
}

/// A running broker.
pub struct Broker {
    child: Child,
    mqtt: Option<SocketAddr>,
    ws: Option<SocketAddr>,
    ws_path: String,
    mqtts: Option<SocketAddr>,
    wss: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    startup_line: String,
    lines: Receiver<String>,
    stdout: Arc<Mutex<Vec<String>>>,
    /// The stdout reader; joined once the broker has exited, so `stdout()` is complete.
    reader: Option<std::thread::JoinHandle<()>>,
    stderr_path: PathBuf,
    status: Option<ExitStatus>,
    dir: TempDir,
}

/// Why a broker did not start.
#[derive(Debug)]
pub struct StartError {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ringmq did not start (exit: {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

fn has_flag(args: &[&str], flag: &str) -> bool {
    args.iter()
        .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
}

impl Broker {
    /// Starts the broker and waits for its startup line; panics (with its output) if it
    /// does not come up.
    pub fn start(args: &[&str]) -> Broker {
        Broker::try_start(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the broker and waits for its startup line, or for it to exit.
    pub fn try_start(args: &[&str]) -> Result<Broker, StartError> {
        let dir = TempDir::new("broker");
        let data_dir = dir.path().join("data");
        let data_dir = data_dir.to_str().expect("utf-8 temp path").to_string();
        let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        for (flag, value) in [
            ("--mqtt", "127.0.0.1:0"),
            ("--ws", "127.0.0.1:0"),
            ("--http", "127.0.0.1:0"),
            ("--data-dir", data_dir.as_str()),
        ] {
            // `--metrics` is the old name of `--http`.
            let given = has_flag(args, flag) || (flag == "--http" && has_flag(args, "--metrics"));
            if !given {
                full.extend([flag.to_string(), value.to_string()]);
            }
        }
        if !has_flag(args, "--shards") && !has_flag(args, "--config") {
            full.extend(["--shards".to_string(), "2".to_string()]);
        }

        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr log");
        let mut child = Command::new(BIN)
            .args(&full)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("spawn ringmq");

        // Read stdout on a thread (so the broker never blocks on a full pipe); every
        // line is kept and also handed to whoever waits for one.
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = channel();
        let pipe = child.stdout.take().expect("stdout pipe");
        let keep = stdout.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let startup_line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.starts_with("ringmq ") && line.contains(" listening: ") => {
                    break line;
                }
                Ok(_) => continue,
                Err(e) => {
                    let status = match e {
                        // stdout closed: the broker exited (or is about to).
                        RecvTimeoutError::Disconnected => child.wait().ok(),
                        RecvTimeoutError::Timeout => {
                            let _ = child.kill();
                            child.wait().ok()
                        }
                    };
                    return Err(StartError {
                        status,
                        stdout: stdout.lock().unwrap().join("\n"),
                        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
                    });
                }
            }
        };

        let mut broker = Broker {
            child,
            mqtt: None,
            ws: None,
            ws_path: String::new(),
            mqtts: None,
            wss: None,
            metrics: None,
            startup_line,
            lines,
            stdout,
            reader: Some(reader),
            stderr_path,
            status: None,
            dir,
        };
        broker.parse_startup_line();
        Ok(broker)
    }

    /// `ringmq 0.1.0 listening: mqtt tcp A, mqtt ws B/PATH, mqtt tls C, mqtt wss D/PATH,
    /// metrics http://E/metrics; …`
    fn parse_startup_line(&mut self) {
        let line = self.startup_line.clone();
        let rest = line.split_once(" listening: ").expect("startup line").1;
        let listeners = rest.split_once("; ").map_or(rest, |(l, _)| l);
        let addr = |s: &str| -> SocketAddr {
            s.parse()
                .unwrap_or_else(|e| panic!("bad address {s:?} in {line:?}: {e}"))
        };
        for part in listeners.split(", ") {
            if let Some(a) = part.strip_prefix("mqtt tcp ") {
                self.mqtt = Some(addr(a));
            } else if let Some(a) = part.strip_prefix("mqtt ws ") {
                let slash = a.find('/').expect("ws path in startup line");
                self.ws = Some(addr(&a[..slash]));
                self.ws_path = a[slash..].to_string();
            } else if let Some(a) = part.strip_prefix("mqtt tls ") {
                self.mqtts = Some(addr(a));
            } else if let Some(a) = part.strip_prefix("mqtt wss ") {
                let slash = a.find('/').expect("wss path in startup line");
                self.wss = Some(addr(&a[..slash]));
                self.ws_path = a[slash..].to_string();
            } else if let Some(a) = part
                .strip_prefix("metrics http://")
                .or_else(|| part.strip_prefix("metrics https://"))
            {
                self.metrics = Some(addr(a.strip_suffix("/metrics").expect("/metrics")));
            } else {
                panic!("unknown listener {part:?} in {line:?}");
            }
        }
    }

    pub fn startup_line(&self) -> &str {
        &self.startup_line
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt.expect("the MQTT/TCP listener is off")
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws.expect("the MQTT/WebSocket listener is off")
    }

    /// `ws://127.0.0.1:PORT/mqtt`
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.ws_addr(), self.ws_path)
    }

    /// The path of the MQTT/WebSocket endpoint (`/mqtt` unless the test chose another).
    pub fn ws_path(&self) -> &str {
        &self.ws_path
    }

    pub fn mqtts_addr(&self) -> SocketAddr {
        self.mqtts.expect("the MQTT/TLS listener is off")
    }

    pub fn wss_addr(&self) -> SocketAddr {
        self.wss.expect("the MQTT/secure WebSocket listener is off")
    }

    /// `wss://127.0.0.1:PORT/mqtt`
    pub fn wss_url(&self) -> String {
        format!("wss://{}{}", self.wss_addr(), self.ws_path)
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.expect("the metrics endpoint is off")
    }

    pub fn has_mqtt(&self) -> bool {
        self.mqtt.is_some()
    }

    pub fn has_ws(&self) -> bool {
        self.ws.is_some()
    }

    pub fn has_metrics(&self) -> bool {
        self.metrics.is_some()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The broker's data directory (unless the test chose its own).
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET path` on the metrics endpoint: status code and body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_addr(), path)
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// The unlabelled sample `name value` of `/metrics` (for shard counters, the sum over
    /// shards), if present.
    pub fn try_metric(&self, name: &str) -> Option<u64> {
        parse_metric(&self.metrics(), name)
    }

    /// The unlabelled sample `name value` of `/metrics`; panics if it is missing.
    pub fn metric(&self, name: &str) -> u64 {
        let text = self.metrics();
        parse_metric(&text, name).unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
    }

    /// Polls `/metrics` until `name` satisfies `ok`, and returns its value; panics with
    /// the last value after `timeout`.
    pub fn wait_for_metric(&self, name: &str, timeout: Duration, ok: impl Fn(u64) -> bool) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric(name);
            if ok(v) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!("{name} is still {v} after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a stdout line that satisfies `ok` (lines seen before are skipped unless
    /// still unread); panics after `timeout`.
    pub fn wait_for_stdout(&self, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if ok(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no such stdout line; stdout so far:\n{}", self.stdout()),
            }
        }
    }

    /// Everything the broker printed on stdout so far (all of it once `wait_exit` or
    /// `stop_graceful` returned).
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    /// Everything the broker printed on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Sends `sig` to the broker.
    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped.
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// Waits for the broker to exit; panics (and kills it) after `EXIT_TIMEOUT`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.status = Some(s);
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                return s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("ringmq did not exit within {EXIT_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop_graceful(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- ringmq stdout ---\n{}\n--- ringmq stderr ---\n{}",
                self.stdout(),
                self.stderr()
            );
        }
    }
}

/// `GET path` over a plain TcpStream: status code and body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    (status, body.to_string())
}

/// The value of the unlabelled sample `name` in Prometheus text (a float is truncated).
pub fn parse_metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(name)?.strip_prefix(' ')?;
        v.parse::<u64>()
            .ok()
            .or_else(|| v.parse::<f64>().ok().map(|f| f as u64))
    })
}
