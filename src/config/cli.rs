//! The flags and the config file: one struct serves both, so every flag is a key of the
//! file under the same name (with `_` for `-`) and neither can drift from the other.
//!
//! Every field is an `Option`: `None` means "not given here", so the settings can apply
//! the precedence flag > file > default. Defaults live in [`super::defaults`], and each
//! flag's help names its default.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::{Arg, CommandFactory, FromArgMatches, Parser, Subcommand};
use serde::Deserialize;

use super::defaults::{self, MAX_SHARDS};
use super::values::{CoreList, DurabilityMode, Host, JwtFrom, ListenAddr, Ranges, RateSpec};
use crate::control::logging::{LogFormat, LogLevel};

/// Text shown after the flag list of `--help`.
const AFTER_HELP: &str = "\
Every flag is also a key of the --config file, spelled with `_` for `-` (for example
`max_connections = 50000`, `ws_path = \"/mqtt\"`); a flag given on the command line wins
over the file, and the file wins over the default. See ringmq.example.toml.

A listener address is IP:PORT or HOST:PORT; port 0 picks a free port (the startup line
shows the real one); `none` turns the listener off.

Signals: SIGINT or SIGTERM shut down gracefully (clients are disconnected cleanly); a
second one during shutdown exits at once (130 for SIGINT, 143 for SIGTERM). SIGHUP
reloads the password file, the ACL file and the JWT key (a file that does not load keeps
the old rules, and the log names its line), and reads the TLS certificate, key and client
CA files again (new handshakes use them, open connections stay). SIGUSR1 prints the
counters to stderr.

`ringmq passwd FILE USER` adds USER to a password file (or changes its password), hashed
with argon2id; the password is read from the terminal without echo, or from stdin.

Exit status: 0 after a clean shutdown, 1 when the broker fails at start or while
running, 2 for bad flags or a bad config file.";

/// Flags of `ringmq`, and keys of its config file.
#[derive(Debug, Default, Clone, Parser, Deserialize)]
#[command(
    name = "ringmq",
    version,
    about = "A thread-per-core io_uring MQTT broker (MQTT 3.1.1 and 5.0, over TCP and WebSocket, either over TLS).",
    after_help = AFTER_HELP,
    max_term_width = 100
)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Read settings from this TOML file; its keys are the flag names with `_` for `-`.
    /// Flags override the file. [default: no file]
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address for MQTT over plain TCP, or `none` to turn it off. [default: 127.0.0.1:1883]
    #[arg(long, value_name = "ADDR")]
    pub mqtt: Option<ListenAddr>,

    /// Address for MQTT over WebSocket, or `none` to turn it off. [default: 127.0.0.1:8083]
    #[arg(long, value_name = "ADDR")]
    pub ws: Option<ListenAddr>,

    /// HTTP path on which WebSocket clients upgrade (over --ws and --wss); must start
    /// with `/`. [default: /mqtt]
    #[arg(long, value_name = "PATH")]
    pub ws_path: Option<String>,

    /// Address for MQTT over TLS (8883 is the usual port), or `none`; needs --tls-cert and
    /// --tls-key. [default: none]
    #[arg(long, value_name = "ADDR")]
    pub mqtts: Option<ListenAddr>,

    /// Address for MQTT over secure WebSocket (TLS, path --ws-path), or `none`; needs
    /// --tls-cert and --tls-key. [default: none]
    #[arg(long, value_name = "ADDR")]
    pub wss: Option<ListenAddr>,

    /// The TLS listeners' certificate chain, leaf first, in a PEM file; read again on
    /// SIGHUP. [default: none]
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert in a PEM file (PKCS#8, PKCS#1 or SEC1); read again
    /// on SIGHUP. [default: none]
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// CA certificates (PEM) that TLS clients' certificates are verified against; with it
    /// clients are asked for a certificate, and a bad one is refused. [default: none,
    /// clients are not asked]
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,

    /// Refuse TLS clients that send no certificate (needs --tls-client-ca).
    /// [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls_require_client_cert: Option<bool>,

    /// The subject CN of a verified client certificate is the client's username: it is
    /// admitted without a password, and the ACL file's `user` and `%u` name it (needs
    /// --tls-client-ca). [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub tls_cn_as_username: Option<bool>,

    /// Address of the HTTP server: the dashboard (/), the JSON API (/api/v1/), /metrics
    /// (Prometheus text), /healthz and /debug/histograms; `none` turns it off. `--metrics`
    /// is the same flag. [default: 127.0.0.1:9883]
    #[arg(long, value_name = "ADDR", alias = "metrics")]
    #[serde(alias = "metrics")]
    pub http: Option<ListenAddr>,

    /// Serve the HTTP server over TLS (https) with the TLS listeners' certificate settings
    /// (--tls-cert, --tls-key, --tls-client-ca, --tls-require-client-cert), read again on
    /// SIGHUP. [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub http_tls: Option<bool>,

    /// File of API keys, one per line (at least 16 characters; `#` starts a comment). With
    /// keys, the API wants `Authorization: Bearer KEY`; without, it answers only to
    /// loopback peers. [default: no keys]
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Endpoint that receives webhook events: `URL` for every event, or
    /// `URL#EVENT,EVENT` for some (client.connected, client.disconnected,
    /// session.created, session.expired, message.dropped, message.queued_offline);
    /// repeat the flag for several, or give a list in the file. Needs --webhook-secret.
    /// [default: none]
    #[arg(long, value_name = "URL", action = clap::ArgAction::Append)]
    pub webhook_url: Option<Vec<String>>,

    /// Key of the HMAC-SHA256 signature of every webhook request (header
    /// X-Ringmq-Signature). [default: none]
    #[arg(long, value_name = "SECRET")]
    pub webhook_secret: Option<String>,

    /// Most events in one webhook request, 1 to 10000. [default: 100]
    #[arg(long, value_name = "N")]
    pub webhook_batch: Option<usize>,

    /// Longest an event waits for its webhook batch to fill, in milliseconds, 0 to 60000.
    /// [default: 200]
    #[arg(long, value_name = "MS")]
    pub webhook_batch_ms: Option<u64>,

    /// Events one webhook endpoint holds while it is slow or down; past it the oldest is
    /// dropped and counted. [default: 100000]
    #[arg(long, value_name = "N")]
    pub webhook_max_pending: Option<usize>,

    /// Bytes of the payload copied (base64) into a message.queued_offline event, 0 to
    /// 65536. [default: 256]
    #[arg(long, value_name = "BYTES")]
    pub webhook_payload_preview: Option<usize>,

    /// Log lines as `text` (for people) or `json` (one object per line). [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Least severe log level written: error, warn, info, debug, trace or off (or a
    /// `tracing` filter such as `info,ringmq::control=debug`). [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,

    /// CPU cores to pin shards to, as cores and ranges like `0-3,8`; shards take them in
    /// order, round-robin when there are more shards than cores. [default: every core
    /// this process may run on]
    #[arg(long, value_name = "LIST")]
    pub cores: Option<CoreList>,

    /// Number of shards (one thread and one io_uring ring each), 1 to 128. [default: one
    /// per core of --cores when given, else one per available core]
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,

    /// Most client connections served at once; past it a new client gets a CONNACK
    /// refusal ("server unavailable" / "quota exceeded"). [default: no limit beyond the
    /// shards' tables, shards × files-per-shard]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Largest MQTT packet accepted, in bytes, fixed header included; a client that
    /// sends a bigger one is disconnected. [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub max_packet_size: Option<u32>,

    /// Directory for the broker's data (the write-ahead log of every shard, locked while
    /// the broker runs), created if missing. [default: ./ringmq-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// What the acknowledgement of a QoS 1/2 message for a persistent session (or of a
    /// retained message) waits for: `fsync` (its records are on disk: survives power
    /// loss), `write` (written to the log file, synced every --fsync-interval: survives
    /// a crash of the process), `none` (memory only: nothing is written, nothing
    /// survives a restart). [default: fsync]
    #[arg(long, value_name = "MODE")]
    pub durability: Option<DurabilityMode>,

    /// With --durability write, milliseconds between syncs of the log, 1 to 60000.
    /// [default: 100]
    #[arg(long, value_name = "MS")]
    pub fsync_interval: Option<u64>,

    /// Most bytes the log may take on disk, all shards together (each shard an equal
    /// share); at it, new QoS 1/2 messages for persistent sessions and new retained
    /// messages are refused (MQTT 5: 0x97; 3.1.1: disconnected) until compaction or
    /// acknowledgements make room. [default: no limit beyond the filesystem]
    #[arg(long, value_name = "BYTES")]
    pub max_data_bytes: Option<u64>,

    /// Messages kept for an offline persistent session; past it the oldest is dropped
    /// and counted. [default: 1000]
    #[arg(long, value_name = "N")]
    pub max_queued_messages: Option<usize>,

    /// QoS 1 and 2 messages in flight to one client at a time (also the Receive Maximum
    /// announced to MQTT 5 clients), 1 to 65535; also the QoS 2 messages from one client
    /// that may await PUBREL: one more ends its connection (MQTT 5: DISCONNECT 0x93).
    /// [default: 64]
    #[arg(long, value_name = "N")]
    pub max_inflight: Option<u16>,

    /// Subscriptions one session may hold; one more is refused (SUBACK 0x97, or 0x80 for
    /// MQTT 3.1.1). [default: 10000]
    #[arg(long, value_name = "N")]
    pub max_subscriptions: Option<usize>,

    /// Subscription memory one session may hold, in bytes as the broker counts them (the
    /// filter, 128 per topic level, 64 per subscription); a subscription past it is
    /// refused (SUBACK 0x97, or 0x80 for MQTT 3.1.1). [default: 8388608]
    #[arg(long, value_name = "BYTES")]
    pub max_subscription_bytes: Option<usize>,

    /// Levels a topic name or filter may have, 1 to 65535: a deeper filter is refused
    /// (SUBACK 0x8F / 0x80), a deeper PUBLISH refused (MQTT 5: PUBACK or PUBREC 0x90 at
    /// QoS 1 and 2, DISCONNECT 0x90 at QoS 0; 3.1.1: the connection is closed).
    /// [default: 128]
    #[arg(long, value_name = "N")]
    pub max_topic_levels: Option<usize>,

    /// Sessions the broker holds at most, connected or not; a CONNECT that needs a new
    /// one past it is refused (CONNACK 0x03 for MQTT 3.1.1, 0x97 for 5.0). [default: no
    /// limit]
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,

    /// Seconds an MQTT 3.1.1 persistent session (Clean Session off) outlives its
    /// connection, 1 to 4294967294; MQTT 5 clients say so themselves. [default: for ever,
    /// as the 3.1.1 spec has it]
    #[arg(long, value_name = "SECS")]
    pub v311_session_expiry: Option<u32>,

    /// Retained messages one shard holds, 8 bytes each, in new subscriptions' snapshots
    /// waiting to be sent at their subscribers' pace; past it, a new subscription's
    /// retained messages wait until others are sent (one snapshot alone may be larger).
    /// [default: 4194304]
    #[arg(long, value_name = "N")]
    pub retained_snapshot_entries: Option<usize>,

    /// Seconds between publications of the $SYS/broker/... topics; 0 turns them off.
    /// [default: 10]
    #[arg(long, value_name = "SECS")]
    pub sys_interval: Option<u64>,

    /// Longest keepalive, in seconds, accepted from MQTT 5 clients: one that asks for more
    /// (or for none) is told this value (Server Keep Alive) and held to it; 0 accepts
    /// whatever the client asks. MQTT 3.1.1 cannot be told, so it is not applied there.
    /// [default: 60]
    #[arg(long, value_name = "SECS")]
    pub max_keep_alive: Option<u16>,

    /// A topic filter clients may not subscribe to, nor to any filter inside it (the
    /// SUBSCRIBE gets return code 0x80); repeat the flag for several, or give a list in
    /// the file; `none` refuses nothing. [default: none]
    #[arg(long, value_name = "FILTER", action = clap::ArgAction::Append)]
    pub deny_subscribe: Option<Vec<String>>,

    /// Connection slots in each lane's fixed-file table. A shard's thread drives one or
    /// more io_uring rings ("lanes"), each with its own table; a lane takes new
    /// connections until fewer than 1280 of its slots are free (listen backlog 1024 +
    /// 256), about N − 1280, then the shard opens another. The kernel caps N at the
    /// open-file limit (ringmq raises its soft RLIMIT_NOFILE to the hard limit at start).
    /// [default: min(hard RLIMIT_NOFILE − 64, 65536)]
    #[arg(long, value_name = "N")]
    pub files_per_shard: Option<u32>,

    /// Lanes a shard opens at most, 1 to 256: with all of them near full it stops
    /// accepting (new connections wait in the listen backlog), so a shard holds about
    /// lanes × (files-per-shard − 1280) connections. [default: 64]
    #[arg(long, value_name = "N")]
    pub lanes_per_shard: Option<u32>,

    /// Receive buffers per lane at most, shared by its connections (an idle connection
    /// holds none); a power of two, at most 32768. A lane starts with 64 and adds 64
    /// whenever receives run out, so a quiet lane keeps little memory. [default: 4096]
    #[arg(long, value_name = "N")]
    pub recv_buffers: Option<u16>,

    /// Size of each receive buffer, in bytes, 64 to 1048576. [default: 4096]
    #[arg(long, value_name = "BYTES")]
    pub recv_buffer_size: Option<u32>,

    /// Messages each shard-to-shard ring holds (rounded up to a power of two), 2 to
    /// 1048576; a full ring is back-pressure. [default: 4096]
    #[arg(long, value_name = "N")]
    pub mesh_capacity: Option<usize>,

    /// Outbound bytes queued on one shard above which it applies back-pressure: its
    /// publishers are paused (their packets held, acknowledgements still read) until
    /// the queue is below half of this, or for at most 250 ms at a time; 65536 to
    /// 4294967296. [default: 16777216]
    #[arg(long, value_name = "BYTES")]
    pub shard_pressure_bytes: Option<u64>,

    /// Password file in mosquitto's format, one `user:hash` a line ($7$ PBKDF2-SHA512, $6$
    /// SHA-512, $argon2id$); `ringmq passwd FILE USER` adds users. Reloaded on SIGHUP.
    /// [default: none]
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// ACL file in mosquitto's format (`user`, `topic [read|write|readwrite|deny] FILTER`,
    /// `pattern` with %c and %u): what each client may publish, subscribe to and receive;
    /// with a file, what it does not grant is refused. Reloaded on SIGHUP. [default: none,
    /// everything allowed but writing to $SYS]
    #[arg(long, value_name = "FILE")]
    pub acl_file: Option<PathBuf>,

    /// Key that verifies JWTs: a PEM public key (RS256, ES256) or a file holding an HS256
    /// secret of at least 32 bytes. Tokens' `exp` and `nbf` are enforced (a connection is
    /// closed when its token expires) and their `acl` claim grants topics. Reloaded on
    /// SIGHUP. [default: none]
    #[arg(long, value_name = "FILE")]
    pub jwt_key: Option<PathBuf>,

    /// The CONNECT field that carries the JWT: `password` or `username`. [default:
    /// password]
    #[arg(long, value_name = "FIELD")]
    pub jwt_from: Option<JwtFrom>,

    /// An audience tokens must name in their `aud` claim. [default: none, `aud` not
    /// checked]
    #[arg(long, value_name = "AUD")]
    pub jwt_audience: Option<String>,

    /// Whether clients without credentials may connect: true or false. [default: true
    /// unless --password-file, --jwt-key or --tls-client-ca is given]
    #[arg(long, value_name = "BOOL")]
    pub allow_anonymous: Option<bool>,

    /// Threads that verify passwords and token signatures, off the shards, 1 to 64.
    /// [default: 2]
    #[arg(long, value_name = "N")]
    pub auth_threads: Option<usize>,

    /// Verifications that may wait for those threads, all shards together (and CONNECTs
    /// one shard may have waiting); past it a CONNECT is refused as "server busy".
    /// [default: 1024]
    #[arg(long, value_name = "N")]
    pub auth_queue: Option<usize>,

    /// Verified credentials remembered, so reconnecting clients are not hashed again; 0
    /// remembers none. [default: 65536]
    #[arg(long, value_name = "N")]
    pub auth_cache: Option<usize>,

    /// Origins browsers may open MQTT over WebSocket from, as `scheme://host[:port]`,
    /// comma-separated (or a list in the file); others get 403 at the upgrade. Clients that
    /// send no Origin (not browsers) are let in. `*` allows any. [default: *]
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub ws_allowed_origins: Option<Vec<String>>,

    /// PUBLISH packets one client may send a second, `RATE` or `RATE:BURST`; past it the
    /// broker stops reading from the client until its bucket allows (it is slowed down,
    /// not disconnected). [default: no limit]
    #[arg(long, value_name = "RATE[:BURST]")]
    pub client_msg_rate: Option<RateSpec>,

    /// Bytes of PUBLISH packets one client may send a second, `RATE` or `RATE:BURST`; as
    /// --client-msg-rate. [default: no limit]
    #[arg(long, value_name = "RATE[:BURST]")]
    pub client_byte_rate: Option<RateSpec>,

    /// New connections a second each listener takes, all shards together, `RATE` or
    /// `RATE:BURST`; past it accepting pauses (connections wait in the listen backlog).
    /// [default: no limit]
    #[arg(long, value_name = "RATE[:BURST]")]
    pub max_connect_rate: Option<RateSpec>,

    /// Connections one source address may have open; past it a new one gets a CONNACK
    /// refusal (quota exceeded / server unavailable). [default: no limit]
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<u32>,

    /// Join a cluster: the NATS servers (JetStream on) that carry what crosses nodes,
    /// `nats://HOST:PORT[,…]`. [default: none, a single node]
    #[arg(long, value_name = "URL[,URL…]")]
    pub cluster: Option<String>,

    /// This node's name in the cluster: letters, digits and `-`, 1 to 64 characters,
    /// unique in the cluster. [default: the host name]
    #[arg(long, value_name = "NAME")]
    pub node_id: Option<String>,

    /// Messages for other nodes waiting for the NATS client, all shards together; past
    /// it QoS 0 is dropped (counted) and QoS 1/2 held while publishers pause.
    /// [default: 65536]
    #[arg(long, value_name = "N")]
    pub cluster_queue: Option<usize>,

    /// Retained messages kept, all topics together; past it a retained PUBLISH to a new
    /// topic is delivered but not retained. [default: 1000000]
    #[arg(long, value_name = "N")]
    pub max_retained: Option<usize>,

    /// Flapping: a client id whose connections end without DISCONNECT (or are refused
    /// for their credentials) more than N times within --flapping-window is banned for
    /// --flapping-ban (CONNACK 0x8A Banned / 0x05); 0 turns it off. [default: 15]
    #[arg(long, value_name = "N")]
    pub flapping_max_drops: Option<u32>,

    /// The window of --flapping-max-drops, in seconds. [default: 60]
    #[arg(long, value_name = "SECS")]
    pub flapping_window: Option<u64>,

    /// How long a flapping client id (or address) is banned, in seconds. [default: 300]
    #[arg(long, value_name = "SECS")]
    pub flapping_ban: Option<u64>,

    /// Whether flapping also bans source addresses (many clients behind one NAT share
    /// one): true or false. [default: false]
    #[arg(long, value_name = "BOOL")]
    pub flapping_by_address: Option<bool>,

    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<Command>,
}

/// What `ringmq` does other than run the broker.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Adds a user to a password file, or changes its password (argon2id). The password
    /// is read from the terminal without echo (twice), or from the first line of stdin
    /// when it is not a terminal. Other lines are kept as they are; the file is replaced
    /// atomically, so a broker reloading it (SIGHUP) never sees half of it.
    Passwd {
        /// The password file (created, readable by its owner only, if missing).
        file: PathBuf,
        /// The user name.
        user: String,
    },
}

impl Options {
    /// Parses the command line (exiting on an error, `--help` or `--version`). The help
    /// also shows what the host-dependent defaults come to on this host.
    pub fn parse_with(host: &Host) -> Options {
        let files = defaults::files_per_shard(host.nofile);
        let shards = host.parallelism.clamp(1, MAX_SHARDS);
        let cmd = Options::command()
            .mut_arg("cores", |a| here(a, Ranges(&host.cores)))
            .mut_arg("shards", |a| here(a, shards))
            .mut_arg("files_per_shard", |a| here(a, files));
        let matches = cmd.get_matches();
        Options::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// Reads and parses a config file. Unknown keys are an error that names the key.
    pub fn from_file(path: &Path) -> Result<Options, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }
}

/// Adds what a default comes to on this host: `[default: …; here: VALUE]`.
fn here(arg: Arg, value: impl fmt::Display) -> Arg {
    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
    let help = match help.strip_suffix(']') {
        Some(open) => format!("{open}; here: {value}]"),
        None => format!("{help} [here: {value}]"),
    };
    arg.help(help)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_are_well_formed() {
        Options::command().debug_assert();
    }

    #[test]
    fn the_file_takes_the_flag_names() {
        let o: Options = toml::from_str(
            "mqtt = \"none\"\nws = \"127.0.0.1:0\"\nws_path = \"/x\"\ncores = \"0-1\"\n\
             shards = 3\nmax_connections = 5\nmax_inflight = 7\nsys_interval = 0\n",
        )
        .unwrap();
        assert_eq!(o.mqtt, Some(ListenAddr::Off));
        assert_eq!(o.ws_path.as_deref(), Some("/x"));
        assert_eq!(o.cores, Some(CoreList(vec![0, 1])));
        assert_eq!(o.shards, Some(3));
        assert_eq!(o.max_inflight, Some(7));
        assert_eq!(o.sys_interval, Some(0));
        let o: Options = toml::from_str(
            "mqtts = \"127.0.0.1:8883\"\ntls_cert = \"c.pem\"\ntls_require_client_cert = true\n",
        )
        .unwrap();
        assert_eq!(o.mqtts, Some("127.0.0.1:8883".parse().unwrap()));
        assert_eq!(o.tls_cert, Some(PathBuf::from("c.pem")));
        assert_eq!(o.tls_require_client_cert, Some(true));
    }

    #[test]
    fn require_client_cert_is_a_switch_or_a_value() {
        let o = Options::try_parse_from(["ringmq", "--tls-require-client-cert"]).unwrap();
        assert_eq!(o.tls_require_client_cert, Some(true));
        let o = Options::try_parse_from(["ringmq", "--tls-require-client-cert=false"]).unwrap();
        assert_eq!(o.tls_require_client_cert, Some(false));
    }

    #[test]
    fn metrics_is_the_old_name_of_http() {
        let o: Options = toml::from_str("metrics = \"127.0.0.1:0\"\n").unwrap();
        assert_eq!(o.http, Some("127.0.0.1:0".parse().unwrap()));
        let o = Options::try_parse_from(["ringmq", "--metrics", "none"]).unwrap();
        assert_eq!(o.http, Some(ListenAddr::Off));
        let o: Options = toml::from_str(
            "webhook_url = [\"http://127.0.0.1:9/h#client.connected\"]\nlog_format = \"json\"\n",
        )
        .unwrap();
        assert_eq!(o.webhook_url.unwrap().len(), 1);
        assert_eq!(o.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = toml::from_str::<Options>("max_conections = 5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_conections"), "{e}");
        // `config` is a flag only: a file cannot point at another file.
        let e = toml::from_str::<Options>("config = \"x.toml\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("config"), "{e}");
    }

    #[test]
    fn out_of_range_numbers_in_the_file_are_errors() {
        let e = toml::from_str::<Options>("max_inflight = 70000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_inflight"), "{e}");
        let e = toml::from_str::<Options>("cores = \"0-x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a core number"), "{e}");
    }
}
