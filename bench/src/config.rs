//! The command line (clap) and the checked configuration a run is made from: the target
//! URL, the source-address range, and every knob with its default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ringmq_proto::mqtt::{QoS, Version};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::payload::HEADER_LEN;

/// ringmq-swarm: many MQTT clients on io_uring against any MQTT broker, over TCP or
/// WebSocket, with end-to-end latency, loss, duplicate and reorder accounting.
#[derive(Debug, Parser)]
#[command(name = "ringmq-swarm", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub scenario: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// P publishers (--publishers) → one topic → N subscribers (--connections).
    Fanout(SwarmArgs),
    /// N publishers (--connections) → one topic → one subscriber.
    Fanin(SwarmArgs),
    /// N clients, each subscribed to its own topic (<topic>/<i>) and publishing to random
    /// other clients' topics (each picks --peers of them).
    Pairs(SwarmArgs),
    /// Connection storm: open N connections (CONNECT/CONNACK), report the connect rate,
    /// the time to all N and failures; hold them (or --close each after its CONNACK).
    Connect(SwarmArgs),
    /// Hold N connections with keepalive for --duration (each subscribed to its own topic
    /// with --subscribe-own); with --broker-pid report the broker's memory per connection.
    Idle(SwarmArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SwarmArgs {
    /// tcp://HOST:PORT or ws://HOST:PORT/PATH (WebSocket, subprotocol "mqtt"); over TLS
    /// mqtts://HOST:PORT or wss://HOST:PORT/PATH (or --tls). Several, comma-separated,
    /// of one scheme (the nodes of a cluster): client i connects to the (i mod k)-th, and
    /// after f failures in a row to the ((i + f) mod k)-th.
    #[arg(long, default_value = "tcp://127.0.0.1:1883")]
    pub target: String,
    /// The target of the clients that only publish (fanout's and fanin's publishers),
    /// instead of --target: publishers on one node, subscribers on others.
    #[arg(long, value_name = "URL")]
    pub publishers_target: Option<String>,
    /// TLS to a tcp:// or ws:// target too (mqtts:// and wss:// always are).
    #[arg(long)]
    pub tls: bool,
    /// Over TLS: the CA certificates (PEM) the broker's certificate is verified against.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Over TLS: the name the broker's certificate must carry (default: the target's host).
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Over TLS: a client certificate chain (PEM) and its key, for brokers that ask.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Over TLS: only this protocol version, 1.2 or 1.3 (default: either).
    #[arg(long, value_name = "VERSION", value_parser = ["1.2", "1.3"])]
    pub tls_version: Option<String>,
    /// Over TLS: resume sessions (tickets) on reconnections and later connections; by
    /// default every connection makes a full handshake.
    #[arg(long)]
    pub tls_resume: bool,
    /// Subscribers (fanout), publishers (fanin) or clients (pairs, connect, idle).
    #[arg(long, short = 'n', default_value_t = 100)]
    pub connections: u32,
    /// Publishers (fanout only).
    #[arg(long, short = 'p', default_value_t = 1)]
    pub publishers: u32,
    /// Messages per second, all publishers together; 0 = open loop, as fast as the
    /// connections take them.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Payload bytes (at least the 28-byte header: run, publisher, sequence, send time).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// QoS of publishes and subscriptions: 0, 1 or 2.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// MQTT protocol version: 3 (3.1.1) or 5.
    #[arg(long, default_value_t = 3, value_parser = parse_version_arg)]
    pub mqtt_version: u8,
    /// Seconds measured (connect: the most to wait for all connections; idle: how long
    /// to hold them).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of publishing before measuring starts (not counted).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// After publishing stops, the most seconds to wait for outstanding deliveries.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// New connections per second, all threads together; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Source addresses to bind, round-robin over clients (port 0): a range
    /// "127.0.0.2-127.0.0.60", single addresses, or a comma-separated mix.
    #[arg(long)]
    pub source_addrs: Option<String>,
    /// MQTT keepalive seconds; a PINGREQ goes out after this long without sending.
    #[arg(long, default_value_t = 60)]
    pub keepalive: u16,
    /// Worker threads, one io_uring ring each (default: available cores, raised so that
    /// each ring's fixed-file table fits under RLIMIT_NOFILE).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the latency histograms (one per second) as an HdrHistogram interval log.
    #[arg(long)]
    pub hist: Option<PathBuf>,
    /// Write a self-contained HTML report with SVG plots.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Topic (fanout, fanin) or topic prefix (pairs, idle: <topic>/<i>).
    #[arg(long)]
    pub topic: Option<String>,
    /// Client identifiers are <prefix>-<i> (default: swarm-<pid>).
    #[arg(long)]
    pub client_id_prefix: Option<String>,
    /// Unacknowledged QoS 1/2 publishes per publisher (capped by the broker's Receive
    /// Maximum in MQTT 5).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub inflight: u16,
    /// Pairs: how many other clients each client publishes to, chosen at random.
    #[arg(long, default_value_t = 8)]
    pub peers: u32,
    /// Idle: subscribe each client to its own topic.
    #[arg(long)]
    pub subscribe_own: bool,
    /// Persistent sessions: MQTT 3.1.1 clean session off; MQTT 5 Clean Start 0 and a
    /// Session Expiry Interval of --session-expiry. A reconnecting client resumes its
    /// session (subscriptions kept, missed messages delivered).
    #[arg(long)]
    pub persistent: bool,
    /// MQTT 5 Session Expiry Interval (seconds) of --persistent sessions.
    #[arg(long, default_value_t = 3600)]
    pub session_expiry: u32,
    /// Every client leaves (DISCONNECT, once its publishes are acknowledged) about this
    /// many seconds after it is ready, and connects again at once: with --persistent,
    /// it resumes its session. 0: never.
    #[arg(long, default_value_t = 0.0)]
    pub reconnect_every: f64,
    /// The broker's process id: report its memory (and CPU) beside the results.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Connect: close each connection right after its CONNACK instead of holding it.
    #[arg(long)]
    pub close: bool,
    /// Seconds a connection may take from socket to CONNACK (and SUBACK) before it is
    /// dropped and retried.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Connection attempts in progress at once, all threads together. More than the
    /// broker's listen backlog makes SYNs drop and connections wait for the kernel's 1 s,
    /// 3 s … SYN retries (mosquitto's backlog is 100).
    #[arg(long, default_value_t = 64)]
    pub max_pending: u32,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
    /// Seed of the random choices (peers, jitter); default from the clock.
    #[arg(long)]
    pub seed: Option<u64>,
    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

fn parse_version_arg(s: &str) -> Result<u8, String> {
    match s {
        "3" | "4" | "3.1.1" | "311" => Ok(3),
        "5" | "5.0" => Ok(5),
        _ => Err(format!("{s:?}: use 3 (MQTT 3.1.1) or 5")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Fanout,
    Fanin,
    Pairs,
    Connect,
    Idle,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Fanin => "fanin",
            Scenario::Pairs => "pairs",
            Scenario::Connect => "connect",
            Scenario::Idle => "idle",
        }
    }

    /// Whether messages flow (and latency is measured).
    pub fn publishes(self) -> bool {
        matches!(self, Scenario::Fanout | Scenario::Fanin | Scenario::Pairs)
    }
}

/// How bytes reach the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    /// MQTT over WebSocket: `host` is the Host header, `path` the request target.
    Ws {
        host: String,
        path: String,
    },
}

/// A parsed `--target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub transport: Transport,
    /// The scheme says TLS (mqtts, wss).
    pub tls: bool,
    /// The host as written (the TLS server name unless one is given).
    pub host: String,
}

impl Target {
    /// Parses `tcp://HOST[:PORT]` (default port 1883), `ws://HOST[:PORT][/PATH]` (default
    /// port 80, path `/`), `mqtts://HOST[:PORT]` (8883) or `wss://HOST[:PORT][/PATH]`
    /// (443), resolving HOST once. `prefer_v4` picks an IPv4 address when the name has
    /// both kinds.
    pub fn parse(url: &str, prefer_v4: bool) -> Result<Target, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!(
                "target {url:?}: expected tcp://HOST:PORT, ws://HOST:PORT/PATH, \
                 mqtts://HOST:PORT or wss://HOST:PORT/PATH"
            )
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (default_port, ws, tls) = match scheme {
            "tcp" | "mqtt" => (1883, false, false),
            "ws" => (80, true, false),
            "mqtts" | "ssl" | "tls" => (8883, false, true),
            "wss" => (443, true, true),
            _ => return Err(format!("target {url:?}: unknown scheme {scheme:?}")),
        };
        if !ws && path != "/" {
            return Err(format!("target {url:?}: a tcp target has no path"));
        }
        let (host, port) = split_host_port(authority, default_port)
            .ok_or_else(|| format!("target {url:?}: bad HOST:PORT {authority:?}"))?;
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("target {url:?}: cannot resolve {host:?}: {e}"))?
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4() == prefer_v4)
            .or(addrs.first())
            .copied()
            .ok_or_else(|| format!("target {url:?}: {host:?} has no address"))?;
        let transport = if ws {
            Transport::Ws {
                host: authority.to_string(),
                path: path.to_string(),
            }
        } else {
            Transport::Tcp
        };
        Ok(Target {
            url: url.to_string(),
            addr,
            transport,
            tls,
            host: host.to_string(),
        })
    }
}

/// How the swarm's clients speak TLS.
#[derive(Debug, Clone)]
pub struct TlsClient {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

impl TlsClient {
    /// The client settings from the `--tls-*` arguments (ring provider, like the broker).
    fn new(a: &SwarmArgs, host: &str) -> Result<TlsClient, String> {
        let ca = a.tls_ca.as_deref().ok_or(
            "a TLS target needs --tls-ca FILE: the CA that signed the broker's certificate",
        )?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(ca, "--tls-ca")? {
            roots
                .add(cert)
                .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match a.tls_version.as_deref() {
            Some("1.2") => &[&rustls::version::TLS12],
            Some(_) => &[&rustls::version::TLS13],
            None => rustls::DEFAULT_VERSIONS,
        };
        // ring, as the broker; X25519 first, as most clients offer it (ring's own order
        // puts P-384 first).
        #[allow(deprecated)]
        let mut provider = rustls::crypto::ring::default_provider();
        use rustls::crypto::ring::kx_group;
        provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
        let provider = Arc::new(provider);
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS settings: {e}"))?
            .with_root_certificates(roots);
        let mut config = match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "--tls-cert")?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("--tls-cert with --tls-key: {e}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        if !a.tls_resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        let name = a.tls_server_name.as_deref().unwrap_or(host).to_string();
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| format!("TLS server name {name:?}: {e}"))?;
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
        })
    }
}

fn read_certs(path: &Path, flag: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|c| c.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{flag} {}: no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// "host", "host:port", "[v6]", "[v6]:port".
fn split_host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => default_port,
            p => p.strip_prefix(':')?.parse().ok()?,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Some((host, port.parse().ok()?))
        }
        None if !authority.is_empty() => Some((authority, default_port)),
        _ => None,
    }
}

/// The most source addresses a range may name.
pub const MAX_SOURCE_ADDRS: usize = 65_536;

/// Parses `--source-addrs`: comma-separated items, each an address or an inclusive
/// IPv4 range `A-B`. All of one family.
pub fn parse_source_addrs(spec: &str) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.split_once('-') {
            Some((a, b)) => {
                let a: Ipv4Addr = a
                    .trim()
                    .parse()
                    .map_err(|_| format!("source addresses: bad IPv4 address {a:?}"))?;
                let b: Ipv4Addr = b
                    .trim()
                    .parse()
                    .map_err(|_| format!("source addresses: bad IPv4 address {b:?}"))?;
                let (lo, hi) = (u32::from(a), u32::from(b));
                if lo > hi {
                    return Err(format!("source addresses: range {item:?} runs backwards"));
                }
                if (hi - lo) as usize >= MAX_SOURCE_ADDRS - out.len() {
                    return Err(format!(
                        "source addresses: more than {MAX_SOURCE_ADDRS} addresses"
                    ));
                }
                out.extend((lo..=hi).map(|v| IpAddr::V4(Ipv4Addr::from(v))));
            }
            None => out.push(
                item.parse()
                    .map_err(|_| format!("source addresses: bad address {item:?}"))?,
            ),
        }
    }
    if out.is_empty() {
        return Err("source addresses: none given".into());
    }
    if out.len() > MAX_SOURCE_ADDRS {
        return Err(format!(
            "source addresses: more than {MAX_SOURCE_ADDRS} addresses"
        ));
    }
    let v4 = out[0].is_ipv4();
    if out.iter().any(|a| a.is_ipv4() != v4) {
        return Err("source addresses: IPv4 and IPv6 mixed".into());
    }
    Ok(out)
}

/// Everything a run needs, checked.
#[derive(Debug, Clone)]
pub struct Config {
    pub scenario: Scenario,
    /// The first of `--target` (its scheme, host and path are every target's).
    pub target: Target,
    /// Every `--target` address; client i connects to the (i mod k)-th.
    pub target_addrs: Vec<SocketAddr>,
    /// `--publishers-target`'s address.
    pub publishers_addr: Option<SocketAddr>,
    /// TLS below MQTT (or WebSocket), when the target asks for it.
    pub tls: Option<TlsClient>,
    pub version: Version,
    pub qos: QoS,
    /// Subscribers (fanout), publishers (fanin), clients (others).
    pub connections: u32,
    /// Publishers (fanout; fanin: = connections; pairs: = connections).
    pub publishers: u32,
    pub rate: f64,
    pub payload: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub drain: Duration,
    pub connect_rate: f64,
    pub source_addrs: Vec<IpAddr>,
    pub keepalive: u16,
    pub threads: usize,
    pub json: Option<PathBuf>,
    pub hist: Option<PathBuf>,
    pub report: Option<PathBuf>,
    /// The topic, or the prefix of per-client topics.
    pub topic: String,
    pub client_id_prefix: String,
    pub inflight: u16,
    pub peers: u32,
    pub subscribe_own: bool,
    /// Persistent sessions (clean session off), with this MQTT 5 session expiry.
    pub persistent: bool,
    pub session_expiry: u32,
    /// Leave and connect again this long after being ready (jittered ±25 %).
    pub reconnect_every: Option<Duration>,
    pub broker_pid: Option<u32>,
    pub close_after_connack: bool,
    pub connect_timeout: Duration,
    pub max_pending: u32,
    pub username: Option<String>,
    pub password: Option<String>,
    pub seed: u64,
    pub quiet: bool,
}

/// Fixed-file slots kept free in each ring's table below `RLIMIT_NOFILE`.
const FILE_TABLE_MARGIN: u64 = 64;

impl Config {
    /// Parses a command line (`argv[0]` first).
    pub fn from_argv<I, T>(argv: I) -> Result<Config, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        Config::from_cli(cli)
    }

    pub fn from_cli(cli: Cli) -> Result<Config, String> {
        let (scenario, a) = match cli.scenario {
            Command::Fanout(a) => (Scenario::Fanout, a),
            Command::Fanin(a) => (Scenario::Fanin, a),
            Command::Pairs(a) => (Scenario::Pairs, a),
            Command::Connect(a) => (Scenario::Connect, a),
            Command::Idle(a) => (Scenario::Idle, a),
        };
        Config::new(scenario, a)
    }

    pub fn new(scenario: Scenario, a: SwarmArgs) -> Result<Config, String> {
        let source_addrs = match &a.source_addrs {
            Some(s) => parse_source_addrs(s)?,
            None => Vec::new(),
        };
        let prefer_v4 = source_addrs.first().is_none_or(IpAddr::is_ipv4);
        let mut targets = Vec::new();
        for url in a.target.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            targets.push(Target::parse(url, prefer_v4)?);
        }
        let publishers_target = a
            .publishers_target
            .as_deref()
            .map(|u| Target::parse(u, prefer_v4))
            .transpose()?;
        let Some(target) = targets.first().cloned() else {
            return Err("--target names no broker".into());
        };
        for t in targets.iter().chain(&publishers_target) {
            let same = std::mem::discriminant(&t.transport)
                == std::mem::discriminant(&target.transport)
                && t.tls == target.tls
                && t.addr.is_ipv4() == target.addr.is_ipv4();
            if !same {
                return Err(format!(
                    "target {}: every target must use the scheme and address family of {}",
                    t.url, target.url
                ));
            }
        }
        let target_addrs = targets.iter().map(|t| t.addr).collect();
        let publishers_addr = publishers_target.map(|t| t.addr);
        if let Some(src) = source_addrs.first()
            && src.is_ipv4() != target.addr.is_ipv4()
        {
            return Err(format!(
                "source addresses are IPv{} but the target {} is not",
                if src.is_ipv4() { 4 } else { 6 },
                target.addr
            ));
        }
        let tls = if target.tls || a.tls {
            Some(TlsClient::new(&a, &target.host)?)
        } else {
            if a.tls_ca.is_some() || a.tls_cert.is_some() || a.tls_version.is_some() || a.tls_resume
            {
                return Err(format!(
                    "--tls-* given for {}: use mqtts:// or wss://, or --tls",
                    target.url
                ));
            }
            None
        };
        if a.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if scenario == Scenario::Fanout && a.publishers == 0 {
            return Err("--publishers must be at least 1".into());
        }
        if scenario == Scenario::Pairs && a.connections < 2 {
            return Err("pairs needs at least 2 clients".into());
        }
        for (name, v) in [
            ("rate", a.rate),
            ("duration", a.duration),
            ("warmup", a.warmup),
            ("drain", a.drain),
            ("connect-rate", a.connect_rate),
            ("connect-timeout", a.connect_timeout),
            ("reconnect-every", a.reconnect_every),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Err(format!("--{name} must be a number ≥ 0"));
            }
        }
        if a.payload < HEADER_LEN {
            return Err(format!(
                "--payload must be at least {HEADER_LEN} bytes (the swarm's header)"
            ));
        }
        let publishers = match scenario {
            Scenario::Fanout => a.publishers,
            Scenario::Fanin | Scenario::Pairs => a.connections,
            Scenario::Connect | Scenario::Idle => 0,
        };
        let clients = total_clients(scenario, a.connections, publishers);
        let threads = choose_threads(a.threads, clients)?;
        let topic = a
            .topic
            .clone()
            .unwrap_or_else(|| format!("swarm/{}", scenario.name()));
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(format!("--topic {topic:?}: a topic name without wildcards"));
        }
        let seed = a
            .seed
            .unwrap_or_else(|| crate::sys::now_ns() ^ (u64::from(std::process::id()) << 32));
        Ok(Config {
            scenario,
            target,
            target_addrs,
            publishers_addr,
            tls,
            version: if a.mqtt_version == 5 {
                Version::V5
            } else {
                Version::V311
            },
            qos: QoS::from_u8(a.qos).expect("range-checked by clap"),
            connections: a.connections,
            publishers,
            rate: a.rate,
            payload: a.payload,
            duration: Duration::from_secs_f64(a.duration),
            warmup: Duration::from_secs_f64(a.warmup),
            drain: Duration::from_secs_f64(a.drain),
            connect_rate: a.connect_rate,
            source_addrs,
            keepalive: a.keepalive,
            threads,
            json: a.json,
            hist: a.hist,
            report: a.report,
            topic,
            client_id_prefix: a
                .client_id_prefix
                .unwrap_or_else(|| format!("swarm-{}", std::process::id())),
            inflight: a.inflight,
            peers: a.peers.clamp(1, a.connections.saturating_sub(1).max(1)),
            subscribe_own: a.subscribe_own,
            persistent: a.persistent,
            session_expiry: a.session_expiry,
            reconnect_every: (a.reconnect_every > 0.0)
                .then(|| Duration::from_secs_f64(a.reconnect_every)),
            broker_pid: a.broker_pid,
            close_after_connack: a.close,
            connect_timeout: Duration::from_secs_f64(a.connect_timeout),
            max_pending: a.max_pending.max(1),
            username: a.username,
            password: a.password,
            seed,
            quiet: a.quiet,
        })
    }

    /// Every client of the run (subscribers and publishers).
    pub fn clients(&self) -> u32 {
        total_clients(self.scenario, self.connections, self.publishers)
    }
}

fn total_clients(scenario: Scenario, connections: u32, publishers: u32) -> u32 {
    match scenario {
        Scenario::Fanout => connections + publishers,
        Scenario::Fanin => connections + 1,
        Scenario::Pairs | Scenario::Connect | Scenario::Idle => connections,
    }
}

/// The open-file limit, which caps each ring's fixed-file table.
pub fn nofile_limit() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is valid for writes.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 1024;
    }
    rl.rlim_cur
}

/// The most clients one ring can hold: its fixed-file table under `RLIMIT_NOFILE`.
pub fn clients_per_ring() -> u64 {
    nofile_limit().saturating_sub(FILE_TABLE_MARGIN).max(1)
}

fn choose_threads(asked: Option<usize>, clients: u32) -> Result<usize, String> {
    let per_ring = clients_per_ring();
    let needed = u64::from(clients).div_ceil(per_ring) as usize;
    match asked {
        Some(0) => Err("--threads must be at least 1".into()),
        Some(t) if t < needed => Err(format!(
            "{clients} clients need at least {needed} threads: a ring's fixed-file table \
             holds at most {per_ring} sockets (RLIMIT_NOFILE)"
        )),
        Some(t) => Ok(t),
        None => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Ok(cores.max(needed).min(clients.max(1) as usize))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn source_ranges_are_inclusive() {
        let a = parse_source_addrs("127.0.0.2-127.0.0.60").unwrap();
        assert_eq!(a.len(), 59);
        assert_eq!(a[0], v4("127.0.0.2"));
        assert_eq!(a[58], v4("127.0.0.60"));
        assert_eq!(parse_source_addrs("127.0.0.9").unwrap(), [v4("127.0.0.9")]);
        assert_eq!(
            parse_source_addrs("127.0.0.9-127.0.0.9").unwrap(),
            [v4("127.0.0.9")]
        );
    }

    #[test]
    fn source_ranges_cross_octets_and_mix_with_singles() {
        let a = parse_source_addrs("10.0.0.254-10.0.1.1, 127.0.0.5").unwrap();
        assert_eq!(
            a,
            [
                v4("10.0.0.254"),
                v4("10.0.0.255"),
                v4("10.0.1.0"),
                v4("10.0.1.1"),
                v4("127.0.0.5")
            ]
        );
    }

    #[test]
    fn bad_source_ranges_are_refused() {
        for bad in [
            "",
            ",",
            "127.0.0.60-127.0.0.2",
            "127.0.0.1-",
            "127.0.0.256",
            "localhost",
            "127.0.0.1,::1",
            "::1-::2",
            "0.0.0.0-255.255.255.255",
        ] {
            assert!(parse_source_addrs(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_source_addrs("::1").unwrap(),
            [IpAddr::from(std::net::Ipv6Addr::LOCALHOST)]
        );
    }

    #[test]
    fn several_targets_and_a_publishers_target() {
        let c = Config::from_argv([
            "s",
            "fanout",
            "--target",
            "tcp://127.0.0.1:1,tcp://127.0.0.1:2",
            "--publishers-target",
            "tcp://127.0.0.1:3",
        ])
        .unwrap();
        let ports: Vec<u16> = c.target_addrs.iter().map(|a| a.port()).collect();
        assert_eq!(ports, [1, 2]);
        assert_eq!(c.publishers_addr.map(|a| a.port()), Some(3));
        let e = Config::from_argv([
            "s",
            "idle",
            "--target",
            "tcp://127.0.0.1:1,ws://127.0.0.1:2",
        ])
        .unwrap_err();
        assert!(e.contains("every target must use the scheme"), "{e}");
        assert!(Config::from_argv(["s", "idle", "--target", ","]).is_err());
    }

    #[test]
    fn targets() {
        let t = Target::parse("tcp://127.0.0.1:1884", true).unwrap();
        assert_eq!(t.addr, "127.0.0.1:1884".parse().unwrap());
        assert_eq!(t.transport, Transport::Tcp);
        let t = Target::parse("ws://127.0.0.1:8083/mqtt", true).unwrap();
        assert_eq!(t.addr.port(), 8083);
        assert_eq!(
            t.transport,
            Transport::Ws {
                host: "127.0.0.1:8083".into(),
                path: "/mqtt".into()
            }
        );
        let t = Target::parse("ws://[::1]:9001", false).unwrap();
        assert_eq!(t.addr, "[::1]:9001".parse().unwrap());
        assert!(matches!(t.transport, Transport::Ws { ref path, .. } if path == "/"));
        assert_eq!(
            Target::parse("tcp://127.0.0.1", true).unwrap().addr.port(),
            1883
        );
        let t = Target::parse("mqtts://localhost", true).unwrap();
        assert_eq!(
            (t.addr.port(), t.tls, t.transport),
            (8883, true, Transport::Tcp)
        );
        assert_eq!(t.host, "localhost");
        let t = Target::parse("wss://127.0.0.1:8084/mqtt", true).unwrap();
        assert!(t.tls && matches!(t.transport, Transport::Ws { ref path, .. } if path == "/mqtt"));
        assert!(!Target::parse("ws://127.0.0.1:1", true).unwrap().tls);
        for bad in [
            "127.0.0.1:1883",
            "http://x:1",
            "mqtts://127.0.0.1:1/x",
            "tcp://127.0.0.1:1883/x",
            "tcp://:1883",
            "tcp://127.0.0.1:99999",
        ] {
            assert!(Target::parse(bad, true).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn command_lines() {
        let c = Config::from_argv([
            "ringmq-swarm",
            "fanout",
            "--target",
            "tcp://127.0.0.1:1",
            "-n",
            "20",
            "--publishers",
            "3",
            "--qos",
            "2",
            "--mqtt-version",
            "5",
            "--threads",
            "2",
        ])
        .unwrap();
        assert_eq!(c.scenario, Scenario::Fanout);
        assert_eq!((c.connections, c.publishers, c.clients()), (20, 3, 23));
        assert_eq!((c.qos, c.version), (QoS::ExactlyOnce, Version::V5));
        assert_eq!(c.topic, "swarm/fanout");
        let c = Config::from_argv(["s", "pairs", "-n", "5", "--peers", "100"]).unwrap();
        assert_eq!((c.publishers, c.peers), (5, 4));
        assert!(Config::from_argv(["s", "fanout", "--qos", "3"]).is_err());
        assert!(Config::from_argv(["s", "fanout", "--payload", "10"]).is_err());
        assert!(Config::from_argv(["s", "fanout", "--topic", "a/+"]).is_err());
        assert!(Config::from_argv(["s", "fanout", "--threads", "0"]).is_err());
        let e = Config::from_argv(["s", "idle", "--target", "mqtts://127.0.0.1:1"]).unwrap_err();
        assert!(e.contains("--tls-ca"), "{e}");
        let e = Config::from_argv(["s", "idle", "--tls-ca", "x.pem"]).unwrap_err();
        assert!(e.contains("use mqtts:// or wss://"), "{e}");
    }
}
