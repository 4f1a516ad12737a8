//! From flags, config file and host to one checked [`Settings`]: precedence flag > file >
//! default, every value validated with an error that says where it came from.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ringmq_shard::config::ShardConfig;

use super::cli::Options;
use super::defaults::{self, IORING_MAX_FIXED_FILES, MAX_SHARDS, MQTT_MAX_PACKET};
use super::values::{CoreList, DurabilityMode, Host, JwtFrom, ListenAddr, Ranges, RateSpec};
use crate::auth::{AuthConfig, PoolConfig, TokenSource};
use crate::control::logging::{LogFormat, LogLevel};
use crate::control::webhook::{WebhookConfig, WebhookTarget};
use crate::limits::FlappingConfig;
use crate::tls::TlsFiles;

/// Everything the broker runs with, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mqtt: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub ws_path: String,
    /// MQTT over TLS, and over secure WebSocket (path `ws_path`).
    pub mqtts: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
    /// The TLS listeners' certificates; `Some` exactly when one of them is on.
    pub tls: Option<TlsFiles>,
    /// The HTTP server (dashboard, API, `/metrics`).
    pub http: Option<SocketAddr>,
    /// The HTTP server speaks TLS with `tls`'s certificates.
    pub http_tls: bool,
    pub api_key_file: Option<PathBuf>,
    /// `None` when no webhook URL is configured.
    pub webhooks: Option<WebhookConfig>,
    pub log_format: LogFormat,
    pub log_level: LogLevel,
    /// The core of every shard, in shard order; its length is the shard count.
    pub placement: Vec<usize>,
    /// `None`: no limit beyond the shards' tables.
    pub max_connections: Option<usize>,
    pub max_packet_size: u32,
    pub data_dir: PathBuf,
    pub durability: DurabilityMode,
    pub fsync_interval_ms: u64,
    /// All shards together; `None`: no limit beyond the filesystem.
    pub max_data_bytes: Option<u64>,
    pub max_queued_messages: usize,
    pub max_inflight: u16,
    pub max_subscriptions: usize,
    pub max_subscription_bytes: usize,
    pub max_topic_levels: usize,
    /// `None`: no bound.
    pub max_sessions: Option<usize>,
    /// `None`: 3.1.1 persistent sessions never expire.
    pub v311_session_expiry_s: Option<u32>,
    pub retained_snapshot_entries: usize,
    pub sys_interval_s: u64,
    pub max_keep_alive_s: u16,
    pub deny_subscribe: Vec<String>,
    pub files_per_shard: u32,
    pub lanes_per_shard: u32,
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    pub mesh_capacity: usize,
    pub shard_pressure_bytes: u64,
    /// Password file, ACL file, JWT key; who may connect without credentials.
    pub auth: AuthConfig,
    /// The verification pool's threads and queue.
    pub auth_pool: PoolConfig,
    /// `None`: any origin.
    pub ws_allowed_origins: Option<Vec<String>>,
    pub client_msg_rate: Option<RateSpec>,
    pub client_byte_rate: Option<RateSpec>,
    pub max_connect_rate: Option<RateSpec>,
    pub max_connections_per_ip: Option<u32>,
    pub max_retained: usize,
    pub flapping: FlappingConfig,
    /// `--cluster`: the other nodes, through NATS.
    pub cluster: Option<crate::cluster::ClusterSettings>,
}

impl Settings {
    pub fn shards(&self) -> usize {
        self.placement.len()
    }

    /// Connections the shards' fixed-file tables hold at most: every lane of every shard
    /// full.
    pub fn connection_capacity(&self) -> usize {
        self.shards() * self.lanes_per_shard as usize * self.files_per_shard as usize
    }
}

/// Where a value came from, for error messages.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Flag,
    File(&'a Path),
    Default,
}

/// A value and where it came from.
struct Picked<'a, T> {
    key: &'static str,
    value: T,
    origin: Origin<'a>,
}

impl<T: Display> Picked<'_, T> {
    /// An error about this value: `--shards 0: why`, or `shards = 0 in FILE: why`.
    fn bad(&self, why: impl Display) -> String {
        let (key, v) = (self.key, &self.value);
        match self.origin {
            Origin::Flag => format!("--{} {v}: {why}", key.replace('_', "-")),
            Origin::File(p) => format!("{key} = {v} in {}: {why}", p.display()),
            Origin::Default => format!("the default {key} ({v}): {why}"),
        }
    }

    /// This value if `ok` holds for it, else the error `why` about it.
    fn check(self, ok: impl FnOnce(&T) -> bool, why: impl Display) -> Result<Self, String> {
        if ok(&self.value) {
            Ok(self)
        } else {
            Err(self.bad(why))
        }
    }
}

/// An optional value, checked as [`Picked::check`] does when it is given.
fn check_given<'a, T: Display>(
    picked: Option<Picked<'a, T>>,
    ok: impl FnOnce(&T) -> bool,
    why: impl Display,
) -> Result<Option<Picked<'a, T>>, String> {
    picked.map(|p| p.check(ok, why)).transpose()
}

/// The option named `key` from `src` ([`Sources::get`]), or with its default
/// ([`Sources::or`]): an option's key is its field's name.
macro_rules! pick {
    ($src:expr, $key:ident) => {
        $src.get(stringify!($key), |o| &o.$key)
    };
    ($src:expr, $key:ident, $default:expr) => {
        $src.or(stringify!($key), |o| &o.$key, $default)
    };
}

struct Sources<'a> {
    flags: &'a Options,
    file: Option<(&'a Path, &'a Options)>,
}

impl<'a> Sources<'a> {
    /// The flag if given, else the file's key if present.
    fn get<T: Clone>(
        &self,
        key: &'static str,
        field: impl Fn(&Options) -> &Option<T>,
    ) -> Option<Picked<'a, T>> {
        if let Some(v) = field(self.flags) {
            return Some(Picked {
                key,
                value: v.clone(),
                origin: Origin::Flag,
            });
        }
        let (path, file) = self.file?;
        field(file).clone().map(|value| Picked {
            key,
            value,
            origin: Origin::File(path),
        })
    }

    /// The flag, else the file, else `default`.
    fn or<T: Clone>(
        &self,
        key: &'static str,
        field: impl Fn(&Options) -> &Option<T>,
        default: T,
    ) -> Picked<'a, T> {
        self.get(key, field).unwrap_or(Picked {
            key,
            value: default,
            origin: Origin::Default,
        })
    }
}

/// Merges flags, the config file (if any) and the defaults, and checks the result.
pub fn resolve(
    flags: &Options,
    file: Option<(&Path, &Options)>,
    host: &Host,
) -> Result<Settings, String> {
    let src = Sources { flags, file };
    let default_addr = |s: &str| ListenAddr::At(s.parse().expect("default address"));

    let mqtt = pick!(src, mqtt, default_addr(defaults::MQTT));
    let ws = pick!(src, ws, default_addr(defaults::WS));
    let off = |s: &str| s.parse::<ListenAddr>().expect("default listener");
    let mqtts = pick!(src, mqtts, off(defaults::MQTTS));
    let wss = pick!(src, wss, off(defaults::WSS));
    let http = pick!(src, http, default_addr(defaults::HTTP));
    if [&mqtt, &ws, &mqtts, &wss]
        .iter()
        .all(|l| l.value == ListenAddr::Off)
    {
        return Err(ws.bad(
            "with mqtt also `none` (and no --mqtts or --wss), the broker would listen nowhere",
        ));
    }
    let listeners = [&mqtt, &ws, &mqtts, &wss, &http];
    for (i, a) in listeners.iter().enumerate() {
        for b in &listeners[i + 1..] {
            if let (ListenAddr::At(x), ListenAddr::At(y)) = (a.value, b.value)
                && overlap(x, y)
            {
                return Err(b.bad(format_args!(
                    "the {} listener already uses port {}; give each listener its own",
                    a.key,
                    x.port()
                )));
            }
        }
    }

    let ws_path = pick!(src, ws_path, defaults::WS_PATH.to_string());
    let p = &ws_path.value;
    if !p.starts_with('/') || p.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(ws_path.bad("must start with `/` and hold no spaces, `?` or `#`"));
    }

    let http_tls = pick!(src, http_tls, false);
    if http_tls.value && http.value == ListenAddr::Off {
        return Err(http_tls.bad("the HTTP server is off (`--http none`)"));
    }
    let tls = tls_files(
        &src,
        mqtts.value != ListenAddr::Off || wss.value != ListenAddr::Off || http_tls.value,
    )?;

    let placement = place_shards(pick!(src, cores), pick!(src, shards), host)?;

    let max_connections = check_given(
        pick!(src, max_connections),
        |&m| m != 0,
        "must be at least 1 (leave it out for no limit)",
    )?;

    let max_packet_size = pick!(src, max_packet_size, defaults::MAX_PACKET_SIZE).check(
        |v| (2..=MQTT_MAX_PACKET).contains(v),
        format_args!("must be 2 to {MQTT_MAX_PACKET} bytes"),
    )?;

    let data_dir = pick!(src, data_dir, PathBuf::from(defaults::DATA_DIR));
    if data_dir.value.as_os_str().is_empty() {
        return Err(format!("{} is empty", flag_name(data_dir.key)));
    }

    let durability = pick!(src, durability, DurabilityMode::Fsync);
    let fsync_interval = pick!(src, fsync_interval, defaults::FSYNC_INTERVAL_MS).check(
        |v| (1..=defaults::MAX_FSYNC_INTERVAL_MS).contains(v),
        format_args!("must be 1 to {} ms", defaults::MAX_FSYNC_INTERVAL_MS),
    )?;
    let max_data_bytes = pick!(src, max_data_bytes);
    if let Some(m) = &max_data_bytes {
        let least = defaults::MIN_DATA_BYTES_PER_SHARD * placement.len() as u64;
        if m.value < least {
            return Err(m.bad(format_args!(
                "must be at least {least} bytes ({} per shard)",
                defaults::MIN_DATA_BYTES_PER_SHARD
            )));
        }
    }

    let max_queued_messages = pick!(src, max_queued_messages, defaults::MAX_QUEUED_MESSAGES);
    let max_inflight = pick!(src, max_inflight, defaults::MAX_INFLIGHT)
        .check(|&v| v != 0, "must be 1 to 65535")?;
    let max_subscriptions = pick!(src, max_subscriptions, defaults::MAX_SUBSCRIPTIONS)
        .check(|&v| v != 0, "must be at least 1")?;
    let max_subscription_bytes = pick!(
        src,
        max_subscription_bytes,
        defaults::MAX_SUBSCRIPTION_BYTES
    )
    .check(|&v| v >= 1024, "must be at least 1024 bytes")?;
    let max_topic_levels = pick!(src, max_topic_levels, defaults::MAX_TOPIC_LEVELS)
        .check(|v| (1..=65_535).contains(v), "must be 1 to 65535")?;
    let max_sessions = check_given(
        pick!(src, max_sessions),
        |&m| m != 0,
        "must be at least 1 (leave it out for no limit)",
    )?;
    let v311_session_expiry = check_given(
        pick!(src, v311_session_expiry),
        |e| (1..u32::MAX).contains(e),
        "must be 1 to 4294967294 (leave it out for never)",
    )?;
    let retained_snapshot_entries = pick!(
        src,
        retained_snapshot_entries,
        defaults::RETAINED_SNAPSHOT_ENTRIES
    )
    .check(|&v| v != 0, "must be at least 1")?;
    let sys_interval = pick!(src, sys_interval, defaults::SYS_INTERVAL_S);
    let max_keep_alive = pick!(src, max_keep_alive, defaults::MAX_KEEP_ALIVE_S);
    let deny_subscribe = pick!(
        src,
        deny_subscribe,
        defaults::DENY_SUBSCRIBE
            .iter()
            .map(|f| f.to_string())
            .collect()
    );
    let deny: Vec<String> = deny_subscribe
        .value
        .iter()
        .filter(|f| f.as_str() != "none")
        .cloned()
        .collect();
    for f in &deny {
        if let Err(e) = ringmq_proto::topic::validate_filter(f) {
            let one = Picked {
                key: deny_subscribe.key,
                value: f,
                origin: deny_subscribe.origin,
            };
            return Err(one.bad(format_args!("not a topic filter: {e}")));
        }
    }

    let files_per_shard = pick!(src, files_per_shard, defaults::files_per_shard(host.nofile));
    let fps = files_per_shard.value;
    if fps < 16 {
        return Err(files_per_shard.bad("must be at least 16"));
    }
    if u64::from(fps) > host.nofile {
        return Err(files_per_shard.bad(format_args!(
            "the kernel caps a shard's table at the open-file limit, {} here \
             (RLIMIT_NOFILE); use more shards for more connections",
            host.nofile
        )));
    }
    if fps > IORING_MAX_FIXED_FILES {
        return Err(files_per_shard.bad(format_args!(
            "io_uring caps a table at {IORING_MAX_FIXED_FILES} files"
        )));
    }

    let runtime = ShardConfig::default();
    let lanes = pick!(src, lanes_per_shard, runtime.max_lanes as u32);
    if !(1..=256).contains(&lanes.value) {
        return Err(lanes.bad("must be from 1 to 256"));
    }
    let recv_buffers = pick!(src, recv_buffers, runtime.recv_buffers);
    if !recv_buffers.value.is_power_of_two() || recv_buffers.value > 32_768 {
        return Err(recv_buffers.bad("must be a power of two from 1 to 32768"));
    }
    let recv_buffer_size = pick!(src, recv_buffer_size, runtime.recv_buffer_size).check(
        |v| (64..=1 << 20).contains(v),
        "must be 64 to 1048576 bytes",
    )?;
    let mesh_capacity = pick!(src, mesh_capacity, runtime.mesh_capacity)
        .check(|v| (2..=1 << 20).contains(v), "must be 2 to 1048576")?;
    let shard_pressure_bytes = pick!(src, shard_pressure_bytes, runtime.pressure_high as u64)
        .check(
            |v| (1 << 16..=1 << 32).contains(v),
            "must be 65536 to 4294967296 bytes",
        )?;

    let (mut auth, auth_pool) = auth(&src)?;
    // A client CA asks TLS clients for certificates: anonymous clients are then refused
    // unless --allow-anonymous says otherwise.
    let client_ca = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let cn_as_username = pick!(src, tls_cn_as_username, false);
    if cn_as_username.value && !client_ca {
        return Err(cn_as_username.bad(
            "clients' certificates are verified against --tls-client-ca FILE, which is missing",
        ));
    }
    auth.client_ca = client_ca;
    auth.cn_as_username = cn_as_username.value;
    let ws_allowed_origins = allowed_origins(&src)?;
    let client_msg_rate = pick!(src, client_msg_rate);
    let client_byte_rate = pick!(src, client_byte_rate);
    let max_connect_rate = pick!(src, max_connect_rate);
    let max_connections_per_ip = check_given(
        pick!(src, max_connections_per_ip),
        |m| (1..=crate::limits::per_ip::MAX_PER_ADDRESS).contains(m),
        format_args!(
            "must be 1 to {} (leave it out for no limit)",
            crate::limits::per_ip::MAX_PER_ADDRESS
        ),
    )?;
    let max_retained = pick!(src, max_retained, defaults::MAX_RETAINED);
    let flapping = flapping(&src)?;
    let cluster = cluster(&src)?;

    let webhooks = webhooks(&src)?;
    let api_key_file = pick!(src, api_key_file).map(|p| p.value);
    let log_format = pick!(src, log_format, LogFormat::default());
    let log_level = pick!(src, log_level, LogLevel::default());

    Ok(Settings {
        mqtt: mqtt.value.addr(),
        ws: ws.value.addr(),
        ws_path: ws_path.value,
        mqtts: mqtts.value.addr(),
        wss: wss.value.addr(),
        tls,
        http: http.value.addr(),
        http_tls: http_tls.value,
        api_key_file,
        webhooks,
        log_format: log_format.value,
        log_level: log_level.value,
        placement,
        max_connections: max_connections.map(|m| m.value),
        max_packet_size: max_packet_size.value,
        data_dir: data_dir.value,
        durability: durability.value,
        fsync_interval_ms: fsync_interval.value,
        max_data_bytes: max_data_bytes.map(|m| m.value),
        max_queued_messages: max_queued_messages.value,
        max_inflight: max_inflight.value,
        max_subscriptions: max_subscriptions.value,
        max_subscription_bytes: max_subscription_bytes.value,
        max_topic_levels: max_topic_levels.value,
        max_sessions: max_sessions.map(|m| m.value),
        v311_session_expiry_s: v311_session_expiry.map(|e| e.value),
        retained_snapshot_entries: retained_snapshot_entries.value,
        sys_interval_s: sys_interval.value,
        max_keep_alive_s: max_keep_alive.value,
        deny_subscribe: deny,
        files_per_shard: fps,
        lanes_per_shard: lanes.value,
        recv_buffers: recv_buffers.value,
        recv_buffer_size: recv_buffer_size.value,
        mesh_capacity: mesh_capacity.value,
        shard_pressure_bytes: shard_pressure_bytes.value,
        auth,
        auth_pool,
        ws_allowed_origins,
        client_msg_rate: client_msg_rate.map(|r| r.value),
        client_byte_rate: client_byte_rate.map(|r| r.value),
        max_connect_rate: max_connect_rate.map(|r| r.value),
        max_connections_per_ip: max_connections_per_ip.map(|m| m.value),
        max_retained: max_retained.value,
        flapping,
        cluster,
    })
}

/// `--cluster`, `--node-id`, `--cluster-queue`, checked.
fn cluster(src: &Sources<'_>) -> Result<Option<crate::cluster::ClusterSettings>, String> {
    let node_id = pick!(src, node_id);
    let queue = pick!(src, cluster_queue, defaults::CLUSTER_QUEUE)
        .check(|v| (1..=1 << 24).contains(v), "must be 1 to 16777216")?;
    let Some(urls) = pick!(src, cluster) else {
        if let Some(n) = node_id {
            return Err(n.bad("names a node of a cluster; --cluster is missing"));
        }
        return Ok(None);
    };
    let list: Vec<String> = urls
        .value
        .split(',')
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    if list.is_empty() {
        return Err(urls.bad("names no NATS server"));
    }
    let node_id = match node_id {
        Some(n) => n.check(
            |v| crate::cluster::valid_node_id(v),
            "must be 1 to 64 letters, digits or '-'",
        )?,
        None => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            let host: String = host
                .trim()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .take(64)
                .collect();
            if !crate::cluster::valid_node_id(&host) {
                return Err(urls.bad("the host name cannot name this node; give --node-id"));
            }
            Picked {
                key: "node_id",
                value: host,
                origin: Origin::Default,
            }
        }
    };
    Ok(Some(crate::cluster::ClusterSettings {
        urls: list,
        node_id: node_id.value,
        queue: queue.value,
    }))
}

/// The authentication settings, checked (the files are read when the broker starts).
fn auth(src: &Sources<'_>) -> Result<(AuthConfig, PoolConfig), String> {
    let path = |key, field: fn(&Options) -> &Option<PathBuf>| -> Result<Option<PathBuf>, String> {
        match src.get(key, field) {
            Some(p) if p.value.as_os_str().is_empty() => {
                Err(format!("{} is empty", flag_name(key)))
            }
            Some(p) => Ok(Some(p.value)),
            None => Ok(None),
        }
    };
    let jwt_from = pick!(src, jwt_from, JwtFrom::default());
    let threads = pick!(src, auth_threads, defaults::AUTH_THREADS)
        .check(|v| (1..=64).contains(v), "must be 1 to 64")?;
    let queue = pick!(src, auth_queue, defaults::AUTH_QUEUE)
        .check(|v| (1..=1 << 20).contains(v), "must be 1 to 1048576")?;
    let cache = pick!(src, auth_cache, defaults::AUTH_CACHE)
        .check(|&v| v <= 1 << 24, "must be 0 to 16777216")?;
    let config = AuthConfig {
        password_file: path("password_file", |o| &o.password_file)?,
        acl_file: path("acl_file", |o| &o.acl_file)?,
        jwt_key_file: path("jwt_key", |o| &o.jwt_key)?,
        jwt_from: match jwt_from.value {
            JwtFrom::Password => TokenSource::Password,
            JwtFrom::Username => TokenSource::Username,
        },
        jwt_audience: pick!(src, jwt_audience).map(|a| a.value),
        allow_anonymous: pick!(src, allow_anonymous).map(|a| a.value),
        client_ca: false,
        cn_as_username: false,
        cache_capacity: cache.value,
    };
    let pool = PoolConfig {
        threads: threads.value,
        queue: queue.value,
    };
    Ok((config, pool))
}

/// `--ws-allowed-origins`: `None` for any (the default, or `*` in the list).
fn allowed_origins(src: &Sources<'_>) -> Result<Option<Vec<String>>, String> {
    let Some(list) = pick!(src, ws_allowed_origins) else {
        return Ok(None);
    };
    let mut origins = Vec::new();
    for o in &list.value {
        let o = o.trim();
        if o == "*" {
            return Ok(None);
        }
        let one = Picked {
            key: list.key,
            value: o,
            origin: list.origin,
        };
        let Some((scheme, host)) = o.split_once("://") else {
            return Err(
                one.bad("an origin is `scheme://host[:port]`, like https://app.example.com")
            );
        };
        if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https")
            || host.is_empty()
            || host.trim_end_matches('/').contains(['/', '?', '#', ' '])
        {
            return Err(one.bad("an origin is `http(s)://host[:port]`, with no path"));
        }
        origins.push(o.trim_end_matches('/').to_string());
    }
    if origins.is_empty() {
        return Err(format!(
            "{}: name at least one origin, or `*` for any",
            flag_name(list.key)
        ));
    }
    Ok(Some(origins))
}

/// The flapping detection, checked.
fn flapping(src: &Sources<'_>) -> Result<FlappingConfig, String> {
    let max_drops = pick!(src, flapping_max_drops, defaults::FLAPPING_MAX_DROPS);
    let window = pick!(src, flapping_window, defaults::FLAPPING_WINDOW_S);
    let ban = pick!(src, flapping_ban, defaults::FLAPPING_BAN_S);
    for p in [&window, &ban] {
        if !(1..=86_400 * 365).contains(&p.value) {
            return Err(p.bad("must be 1 to 31536000 seconds"));
        }
    }
    let by_address = pick!(src, flapping_by_address, false);
    Ok(FlappingConfig {
        max_drops: max_drops.value,
        window_ms: window.value * 1000,
        ban_ms: ban.value * 1000,
        by_address: by_address.value,
    })
}

/// The TLS files, checked for presence (they are read when the broker starts); `None`
/// when no TLS listener is on, and then none of them may be given.
fn tls_files(src: &Sources<'_>, listening: bool) -> Result<Option<TlsFiles>, String> {
    let cert = pick!(src, tls_cert);
    let key = pick!(src, tls_key);
    let client_ca = pick!(src, tls_client_ca);
    let require = pick!(src, tls_require_client_cert, false);
    if !listening {
        let given = [&cert, &key, &client_ca]
            .into_iter()
            .flatten()
            .map(|p| p.key)
            .chain(require.value.then_some(require.key))
            .next();
        return match given {
            Some(key) => Err(format!(
                "{}: no TLS listener uses it; turn one on with --mqtts, --wss or --http-tls",
                flag_name(key)
            )),
            None => Ok(None),
        };
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err(
            "--mqtts, --wss and --http-tls need a certificate and its key: --tls-cert FILE --tls-key FILE"
                .into(),
        );
    };
    if require.value && client_ca.is_none() {
        return Err(
            "--tls-require-client-cert: clients' certificates are verified against \
             --tls-client-ca FILE, which is missing"
                .into(),
        );
    }
    Ok(Some(TlsFiles {
        cert: cert.value,
        key: key.value,
        client_ca: client_ca.map(|c| c.value),
        require_client_cert: require.value,
    }))
}

/// The webhook settings, checked; `None` without a URL.
fn webhooks(src: &Sources<'_>) -> Result<Option<WebhookConfig>, String> {
    let Some(urls) = pick!(src, webhook_url) else {
        return Ok(None);
    };
    let mut targets = Vec::new();
    for u in &urls.value {
        let one = Picked {
            key: urls.key,
            value: u,
            origin: urls.origin,
        };
        targets.push(u.parse::<WebhookTarget>().map_err(|e| one.bad(e))?);
    }
    if targets.is_empty() {
        return Ok(None);
    }
    let secret = match pick!(src, webhook_secret) {
        Some(s) if !s.value.is_empty() => s.value,
        _ => {
            return Err(
                "--webhook-url (webhook_url): webhooks are signed; give the key with \
                 --webhook-secret (webhook_secret)"
                    .into(),
            );
        }
    };
    let mut config = WebhookConfig::new(targets, secret);
    let batch = pick!(src, webhook_batch, config.batch_max)
        .check(|v| (1..=10_000).contains(v), "must be 1 to 10000")?;
    let batch_ms = pick!(src, webhook_batch_ms, config.batch_wait.as_millis() as u64)
        .check(|&v| v <= 60_000, "must be 0 to 60000 ms")?;
    let max_pending = pick!(src, webhook_max_pending, config.max_pending)
        .check(|&v| v != 0, "must be at least 1")?;
    let preview = pick!(src, webhook_payload_preview, config.payload_preview)
        .check(|&v| v <= 65_536, "must be 0 to 65536 bytes")?;
    config.batch_max = batch.value;
    config.batch_wait = std::time::Duration::from_millis(batch_ms.value);
    config.max_pending = max_pending.value;
    config.payload_preview = preview.value;
    Ok(Some(config))
}

/// Whether two listeners would take the same port (port 0 always gets a fresh one).
fn overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// The core of each shard: `--cores` (checked against the host) or every core the
/// process may run on, taken in order and round-robin; `--shards` or one per core.
fn place_shards(
    cores: Option<Picked<'_, CoreList>>,
    shards: Option<Picked<'_, usize>>,
    host: &Host,
) -> Result<Vec<usize>, String> {
    let available: Vec<usize> = if host.cores.is_empty() {
        (0..host.parallelism.max(1)).collect()
    } else {
        host.cores.clone()
    };
    let list = match &cores {
        Some(c) => {
            if let Some(&missing) = c.value.0.iter().find(|core| !available.contains(core)) {
                return Err(c.bad(format_args!(
                    "core {missing} is not available: this process may run on cores {}",
                    Ranges(&available)
                )));
            }
            c.value.0.clone()
        }
        None => available,
    };
    let n = match &shards {
        Some(s) => {
            if !(1..=MAX_SHARDS).contains(&s.value) {
                return Err(s.bad(format_args!("must be 1 to {MAX_SHARDS}")));
            }
            s.value
        }
        None if cores.is_some() => list.len().min(MAX_SHARDS),
        None => host.parallelism.clamp(1, MAX_SHARDS),
    };
    Ok((0..n).map(|i| list[i % list.len()]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn host() -> Host {
        Host {
            cores: vec![0, 1, 2, 3],
            parallelism: 4,
            nofile: 20_000,
        }
    }

    fn flags(args: &[&str]) -> Options {
        Options::try_parse_from(std::iter::once("ringmq").chain(args.iter().copied())).unwrap()
    }

    fn file(text: &str) -> Options {
        toml::from_str(text).unwrap()
    }

    fn resolve_flags(args: &[&str]) -> Result<Settings, String> {
        resolve(&flags(args), None, &host())
    }

    #[test]
    fn defaults() {
        let s = resolve_flags(&[]).unwrap();
        assert_eq!(s.mqtt, Some("127.0.0.1:1883".parse().unwrap()));
        assert_eq!(s.ws, Some("127.0.0.1:8083".parse().unwrap()));
        assert_eq!(s.http, Some("127.0.0.1:9883".parse().unwrap()));
        assert_eq!(s.ws_path, "/mqtt");
        assert_eq!(s.placement, [0, 1, 2, 3]);
        assert_eq!(s.max_connections, None);
        assert_eq!(s.max_packet_size, 1 << 20);
        assert_eq!(s.data_dir, PathBuf::from("./ringmq-data"));
        assert_eq!(
            (s.max_queued_messages, s.max_inflight, s.sys_interval_s),
            (1000, 64, 10)
        );
        assert_eq!(s.files_per_shard, 20_000 - 64);
        assert_eq!(s.max_keep_alive_s, 60);
        assert!(s.deny_subscribe.is_empty(), "the default refuses nothing");
        assert_eq!(
            (
                s.recv_buffers,
                s.recv_buffer_size,
                s.mesh_capacity,
                s.shard_pressure_bytes
            ),
            (4096, 4096, 4096, 16 << 20)
        );
    }

    #[test]
    fn deny_subscribe_takes_several_filters_none_or_a_file_list() {
        let s = resolve_flags(&["--deny-subscribe", "a/#", "--deny-subscribe", "b/+"]).unwrap();
        assert_eq!(s.deny_subscribe, ["a/#", "b/+"]);
        let s = resolve_flags(&["--deny-subscribe", "none"]).unwrap();
        assert!(s.deny_subscribe.is_empty());
        let err = resolve_flags(&["--deny-subscribe", "a/#/b"]).unwrap_err();
        assert!(err.contains("not a topic filter"), "{err}");
        let f = file("deny_subscribe = [\"x\", \"y/#\"]\n");
        let s = resolve(&flags(&[]), Some((Path::new("r.toml"), &f)), &host()).unwrap();
        assert_eq!(s.deny_subscribe, ["x", "y/#"]);
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let f = file("shards = 1\nmax_inflight = 5\nws_path = \"/f\"\n");
        let path = Path::new("ringmq.toml");
        let s = resolve(&flags(&["--shards", "3"]), Some((path, &f)), &host()).unwrap();
        assert_eq!(s.shards(), 3);
        assert_eq!(s.max_inflight, 5);
        assert_eq!(s.ws_path, "/f");
        assert_eq!(s.max_queued_messages, 1000);
    }

    #[test]
    fn shards_are_placed_round_robin() {
        assert_eq!(
            resolve_flags(&["--cores", "0-1"]).unwrap().placement,
            [0, 1]
        );
        assert_eq!(
            resolve_flags(&["--cores", "3,1"]).unwrap().placement,
            [3, 1]
        );
        let s = resolve_flags(&["--cores", "0-1", "--shards", "5"]).unwrap();
        assert_eq!(s.placement, [0, 1, 0, 1, 0]);
        assert_eq!(resolve_flags(&["--shards", "2"]).unwrap().placement, [0, 1]);
        assert_eq!(
            resolve_flags(&["--shards", "6"]).unwrap().placement,
            [0, 1, 2, 3, 0, 1]
        );
    }

    #[test]
    fn affinity_limits_the_cores() {
        let h = Host {
            cores: vec![2, 3],
            parallelism: 2,
            nofile: 20_000,
        };
        let s = resolve(&flags(&[]), None, &h).unwrap();
        assert_eq!(s.placement, [2, 3]);
        let e = resolve(&flags(&["--cores", "0-2"]), None, &h).unwrap_err();
        assert_eq!(
            e,
            "--cores 0-2: core 0 is not available: this process may run on cores 2-3"
        );
    }

    #[test]
    fn errors_name_the_flag_or_the_file_key() {
        let e = resolve_flags(&["--shards", "0"]).unwrap_err();
        assert_eq!(e, "--shards 0: must be 1 to 128");
        let e = resolve_flags(&["--shards", "129"]).unwrap_err();
        assert_eq!(e, "--shards 129: must be 1 to 128");
        let f = file("shards = 200\n");
        let e = resolve(&flags(&[]), Some((Path::new("r.toml"), &f)), &host()).unwrap_err();
        assert_eq!(e, "shards = 200 in r.toml: must be 1 to 128");
        let e = resolve_flags(&["--cores", "7"]).unwrap_err();
        assert!(e.starts_with("--cores 7: core 7 is not available"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (args, says) in [
            (&["--mqtt", "none", "--ws", "none"][..], "listen nowhere"),
            (
                &["--ws", "127.0.0.1:1883"],
                "the mqtt listener already uses port 1883",
            ),
            (
                &["--metrics", "0.0.0.0:8083"],
                "the ws listener already uses port 8083",
            ),
            (&["--ws-path", "mqtt"], "must start with `/`"),
            (&["--max-connections", "0"], "at least 1"),
            (&["--max-packet-size", "1"], "must be 2 to"),
            (&["--max-inflight", "0"], "1 to 65535"),
            (&["--files-per-shard", "20001"], "open-file limit, 20000"),
            (&["--files-per-shard", "8"], "at least 16"),
            (&["--recv-buffers", "1000"], "power of two"),
            (&["--recv-buffer-size", "8"], "64 to 1048576"),
            (&["--mesh-capacity", "1"], "2 to 1048576"),
            (&["--shard-pressure-bytes", "1000"], "65536 to 4294967296"),
        ] {
            let e = resolve_flags(args).unwrap_err();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }

    #[test]
    fn tls_listeners_need_their_files_and_files_need_a_listener() {
        let s = resolve_flags(&[]).unwrap();
        assert_eq!((s.mqtts, s.wss, s.tls), (None, None, None));
        let s = resolve_flags(&[
            "--mqtts",
            "127.0.0.1:8883",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ])
        .unwrap();
        assert_eq!(s.mqtts, Some("127.0.0.1:8883".parse().unwrap()));
        let tls = s.tls.unwrap();
        assert_eq!((tls.client_ca, tls.require_client_cert), (None, false));
        assert!(!s.auth.client_ca && s.auth.allow_anonymous());
        let s = resolve_flags(&[
            "--mqtt",
            "none",
            "--ws",
            "none",
            "--wss",
            "127.0.0.1:8084",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
            "--tls-require-client-cert",
            "--tls-cn-as-username",
        ])
        .unwrap();
        assert_eq!(s.wss, Some("127.0.0.1:8084".parse().unwrap()));
        assert!(s.tls.unwrap().require_client_cert);
        // A client CA turns anonymous clients away unless told otherwise.
        assert!(s.auth.client_ca && s.auth.cn_as_username && !s.auth.allow_anonymous());
        let s =
            resolve_flags(&["--http-tls", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert!(s.http_tls && s.tls.is_some() && s.mqtts.is_none());
        for (args, says) in [
            (
                &["--mqtts", "127.0.0.1:8883"][..],
                "need a certificate and its key",
            ),
            (
                &["--wss", "127.0.0.1:8884", "--tls-cert", "c.pem"],
                "need a certificate and its key",
            ),
            (
                &["--tls-cert", "c.pem"],
                "--tls-cert: no TLS listener uses it",
            ),
            (&["--http-tls"], "need a certificate and its key"),
            (
                &["--http", "none", "--http-tls", "--tls-cert", "c.pem"],
                "--http-tls true: the HTTP server is off",
            ),
            (
                &["--tls-require-client-cert"],
                "--tls-require-client-cert: no TLS listener",
            ),
            (
                &[
                    "--mqtts",
                    "127.0.0.1:8883",
                    "--tls-cert",
                    "c.pem",
                    "--tls-key",
                    "k.pem",
                    "--tls-require-client-cert",
                ],
                "--tls-client-ca FILE, which is missing",
            ),
            (
                &[
                    "--mqtts",
                    "127.0.0.1:8883",
                    "--tls-cert",
                    "c.pem",
                    "--tls-key",
                    "k.pem",
                    "--tls-cn-as-username",
                ],
                "--tls-cn-as-username true: clients' certificates are verified against",
            ),
            (
                &[
                    "--mqtts",
                    "127.0.0.1:1883",
                    "--tls-cert",
                    "c.pem",
                    "--tls-key",
                    "k.pem",
                ],
                "the mqtt listener already uses port 1883",
            ),
        ] {
            let e = resolve_flags(args).unwrap_err();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }

    #[test]
    fn port_zero_listeners_may_share_an_address() {
        let s = resolve_flags(&["--mqtt", "127.0.0.1:0", "--ws", "127.0.0.1:0"]).unwrap();
        assert_eq!(s.mqtt, s.ws);
    }

    #[test]
    fn listeners_turn_off_with_none() {
        let s = resolve_flags(&["--ws", "none", "--metrics", "none"]).unwrap();
        assert_eq!((s.ws, s.http), (None, None));
        assert!(s.mqtt.is_some());
    }
}
