//! A real `nats-server` (JetStream on) for the cluster tests, and ringmq nodes joined
//! through it. A missing `nats-server` fails the test with how to install it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::WAIT;
use super::broker::{Broker, TempDir, http_get};

/// Where Debian installs it; else the one on `PATH`.
fn nats_server_bin() -> String {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    "nats-server".to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One `nats-server` process.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    /// The route port, in a NATS cluster.
    pub cluster_port: u16,
    dir: TempDir,
    /// Every server of its NATS cluster's route addresses (empty alone).
    routes: Vec<u16>,
    name: String,
    /// A configuration file's lines (`-c`), for what has no command-line flag.
    config: Vec<String>,
    /// The monitoring port (`/varz`).
    monitor_port: u16,
}

impl Nats {
    /// A lone server with JetStream.
    pub fn start() -> Nats {
        Nats::start_member("n0", free_port(), None, &[])
    }

    /// A lone server with JetStream and these configuration file lines (e.g.
    /// `max_pending: 262144`, `write_deadline: "100ms"`).
    pub fn start_with_config(config: &[&str]) -> Nats {
        let mut n = Nats::new_member("n0", free_port(), None, &[]);
        n.config = config.iter().map(|l| l.to_string()).collect();
        n.spawn();
        n
    }

    /// Three servers with JetStream in one NATS cluster.
    pub fn start_cluster() -> Vec<Nats> {
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        (0..3)
            .map(|i| Nats::start_member(&format!("n{i}"), free_port(), Some(routes[i]), &routes))
            .collect()
    }

    fn start_member(name: &str, port: u16, cluster_port: Option<u16>, routes: &[u16]) -> Nats {
        let mut n = Nats::new_member(name, port, cluster_port, routes);
        n.spawn();
        n
    }

    fn new_member(name: &str, port: u16, cluster_port: Option<u16>, routes: &[u16]) -> Nats {
        Nats {
            child: None,
            port,
            cluster_port: cluster_port.unwrap_or(0),
            dir: TempDir::new("nats"),
            routes: routes.to_vec(),
            name: name.to_string(),
            config: Vec::new(),
            monitor_port: free_port(),
        }
    }

    fn spawn(&mut self) {
        let store = self.dir.path().join("js");
        let mut args: Vec<String> = vec![
            "-js".into(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-sd".into(),
            store.to_str().unwrap().into(),
            "-n".into(),
            self.name.clone(),
            "-m".into(),
            self.monitor_port.to_string(),
        ];
        if !self.config.is_empty() {
            let mut text = self.config.join("\n");
            text.push('\n');
            let file = self.dir.file("nats.conf", &text);
            args.extend(["-c".into(), file.to_str().unwrap().into()]);
        }
        if self.cluster_port != 0 {
            let routes: Vec<String> = self
                .routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            args.extend([
                "--cluster_name".into(),
                "ringmq-test".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", self.cluster_port),
                "--routes".into(),
                routes.join(","),
            ]);
        }
        let log = std::fs::File::create(self.dir.path().join("nats.log")).expect("nats log");
        let child = Command::new(nats_server_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run nats-server ({e}): the cluster tests need it; install it with \
                     `apt-get install nats-server` (Debian) or from https://nats.io"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A number of the server's `/varz` (e.g. `slow_consumers`); 0 if it is not there.
    pub fn varz(&self, field: &str) -> u64 {
        let (_, body) = http_get(
            SocketAddr::from(([127, 0, 0, 1], self.monitor_port)),
            "/varz",
        );
        let key = format!("\"{field}\":");
        body.split_once(&key)
            .map(|(_, rest)| {
                rest.trim_start()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// ringmq nodes joined through NATS servers.
pub struct Nodes {
    pub nodes: Vec<Broker>,
}

impl Nodes {
    /// `n` nodes named `node0`…, each with `extra` flags, on the NATS servers `urls`.
    pub fn start(n: usize, urls: &str, extra: &[&str]) -> Nodes {
        let nodes = (0..n)
            .map(|i| {
                let id = format!("node{i}");
                let mut args = vec!["--cluster", urls, "--node-id", &id];
                args.extend_from_slice(extra);
                Broker::start(&args)
            })
            .collect();
        Nodes { nodes }
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].mqtt_addr()
    }

    /// Waits until node `i` knows of at least `filters` filters of `nodes` other nodes.
    pub fn wait_interest(&self, i: usize, nodes: u64, filters: u64) {
        let b = &self.nodes[i];
        b.wait_for_metric("ringmq_cluster_remote_nodes", WAIT, |v| v >= nodes);
        b.wait_for_metric("ringmq_cluster_remote_filters", WAIT, |v| v >= filters);
    }

    /// Waits until every node is connected to NATS.
    pub fn wait_connected(&self) {
        for b in &self.nodes {
            b.wait_for_metric("ringmq_cluster_connected", WAIT, |v| v == 1);
        }
    }
}
