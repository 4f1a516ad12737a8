//! From flags, config file and host to one checked [`Settings`]: precedence flag > file >
//! default, every value validated with an error that says where it came from.

use std::fmt::{self, Display};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::cli::{CoreList, ListenAddr, Options};
use crate::control::logging::{LogFormat, LogLevel};
use crate::control::webhook::{WebhookConfig, WebhookTarget};

pub const DEFAULT_MQTT: &str = "127.0.0.1:1883";
pub const DEFAULT_WS: &str = "127.0.0.1:8083";
pub const DEFAULT_WS_PATH: &str = "/mqtt";
pub const DEFAULT_HTTP: &str = "127.0.0.1:9883";
pub const DEFAULT_DATA_DIR: &str = "./ringmq-data";
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 1024 * 1024;
pub const DEFAULT_MAX_QUEUED_MESSAGES: usize = 1000;
pub const DEFAULT_MAX_INFLIGHT: u16 = 64;
pub const DEFAULT_SYS_INTERVAL_S: u64 = 10;
pub const DEFAULT_MAX_KEEP_ALIVE_S: u16 = 60;
/// Refused by default: the filter conformance suites subscribe to in order to check that
/// a refusal is answered (SUBACK 0x80). `--deny-subscribe none` clears it.
pub const DEFAULT_DENY_SUBSCRIBE: &str = "test/nosubscribe";
pub const DEFAULT_RECV_BUFFERS: u16 = 4096;
pub const DEFAULT_RECV_BUFFER_SIZE: u32 = 4096;
pub const DEFAULT_MESH_CAPACITY: usize = 4096;
pub const DEFAULT_SHARD_PRESSURE_BYTES: u64 = 16 * 1024 * 1024;
/// Most shards a process runs (the mesh has shards² rings).
pub const MAX_SHARDS: usize = 128;
/// Open files kept for everything that is not a connection (listeners, eventfds, rings,
/// the metrics endpoint, stdio) when sizing the default fixed-file table.
pub const FD_RESERVE: u64 = 64;
/// Default fixed-file table size on hosts whose open-file limit is higher.
pub const MAX_DEFAULT_FILES_PER_SHARD: u64 = 65_536;
/// The kernel's cap on a fixed-file table (`IORING_MAX_FIXED_FILES`).
const IORING_MAX_FIXED_FILES: u32 = 1 << 20;
/// Largest MQTT packet there is: a 5-byte fixed header and 268,435,455 bytes.
const MQTT_MAX_PACKET: u32 = 5 + 268_435_455;

/// What the host allows; found at start by `system`, and passed in so tests can fake it.
#[derive(Debug, Clone)]
pub struct Host {
    /// Cores this process may run on (its affinity mask), ascending.
    pub cores: Vec<usize>,
    /// `std::thread::available_parallelism`.
    pub parallelism: usize,
    /// The open-file limit in force (the soft limit, after raising it to the hard one).
    pub nofile: u64,
}

/// Everything the broker runs with, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mqtt: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub ws_path: String,
    /// The HTTP server (dashboard, API, `/metrics`).
    pub http: Option<SocketAddr>,
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
    pub max_queued_messages: usize,
    pub max_inflight: u16,
    pub sys_interval_s: u64,
    pub max_keep_alive_s: u16,
    pub deny_subscribe: Vec<String>,
    pub files_per_shard: u32,
    pub recv_buffers: u16,
    pub recv_buffer_size: u32,
    pub mesh_capacity: usize,
    pub shard_pressure_bytes: u64,
}

impl Settings {
    pub fn shards(&self) -> usize {
        self.placement.len()
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

    let mqtt = src.or("mqtt", |o| &o.mqtt, default_addr(DEFAULT_MQTT));
    let ws = src.or("ws", |o| &o.ws, default_addr(DEFAULT_WS));
    let http = src.or("http", |o| &o.http, default_addr(DEFAULT_HTTP));
    if mqtt.value == ListenAddr::Off && ws.value == ListenAddr::Off {
        return Err(ws.bad("with mqtt also `none`, the broker would listen nowhere"));
    }
    let listeners = [&mqtt, &ws, &http];
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

    let ws_path = src.or("ws_path", |o| &o.ws_path, DEFAULT_WS_PATH.to_string());
    let p = &ws_path.value;
    if !p.starts_with('/') || p.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
        return Err(ws_path.bad("must start with `/` and hold no spaces, `?` or `#`"));
    }

    let placement = place_shards(
        src.get("cores", |o| &o.cores),
        src.get("shards", |o| &o.shards),
        host,
    )?;

    let max_connections = src.get("max_connections", |o| &o.max_connections);
    if let Some(m) = &max_connections
        && m.value == 0
    {
        return Err(m.bad("must be at least 1 (leave it out for no limit)"));
    }

    let max_packet_size = src.or(
        "max_packet_size",
        |o| &o.max_packet_size,
        DEFAULT_MAX_PACKET_SIZE,
    );
    if !(2..=MQTT_MAX_PACKET).contains(&max_packet_size.value) {
        return Err(max_packet_size.bad(format_args!("must be 2 to {MQTT_MAX_PACKET} bytes")));
    }

    let data_dir = src.or("data_dir", |o| &o.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    if data_dir.value.as_os_str().is_empty() {
        return Err(format!("{} is empty", flag_name(data_dir.key)));
    }

    let max_queued_messages = src.or(
        "max_queued_messages",
        |o| &o.max_queued_messages,
        DEFAULT_MAX_QUEUED_MESSAGES,
    );
    let max_inflight = src.or("max_inflight", |o| &o.max_inflight, DEFAULT_MAX_INFLIGHT);
    if max_inflight.value == 0 {
        return Err(max_inflight.bad("must be 1 to 65535"));
    }
    let sys_interval = src.or("sys_interval", |o| &o.sys_interval, DEFAULT_SYS_INTERVAL_S);
    let max_keep_alive = src.or(
        "max_keep_alive",
        |o| &o.max_keep_alive,
        DEFAULT_MAX_KEEP_ALIVE_S,
    );
    let deny_subscribe = src.or(
        "deny_subscribe",
        |o| &o.deny_subscribe,
        vec![DEFAULT_DENY_SUBSCRIBE.to_string()],
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

    let files_per_shard = src.or(
        "files_per_shard",
        |o| &o.files_per_shard,
        default_files_per_shard(host.nofile),
    );
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

    let recv_buffers = src.or("recv_buffers", |o| &o.recv_buffers, DEFAULT_RECV_BUFFERS);
    if !recv_buffers.value.is_power_of_two() || recv_buffers.value > 32_768 {
        return Err(recv_buffers.bad("must be a power of two from 1 to 32768"));
    }
    let recv_buffer_size = src.or(
        "recv_buffer_size",
        |o| &o.recv_buffer_size,
        DEFAULT_RECV_BUFFER_SIZE,
    );
    if !(64..=1 << 20).contains(&recv_buffer_size.value) {
        return Err(recv_buffer_size.bad("must be 64 to 1048576 bytes"));
    }
    let mesh_capacity = src.or("mesh_capacity", |o| &o.mesh_capacity, DEFAULT_MESH_CAPACITY);
    if !(2..=1 << 20).contains(&mesh_capacity.value) {
        return Err(mesh_capacity.bad("must be 2 to 1048576"));
    }
    let shard_pressure_bytes = src.or(
        "shard_pressure_bytes",
        |o| &o.shard_pressure_bytes,
        DEFAULT_SHARD_PRESSURE_BYTES,
    );
    if !(1 << 16..=1 << 32).contains(&shard_pressure_bytes.value) {
        return Err(shard_pressure_bytes.bad("must be 65536 to 4294967296 bytes"));
    }

    let webhooks = webhooks(&src)?;
    let api_key_file = src
        .get("api_key_file", |o| &o.api_key_file)
        .map(|p| p.value);
    let log_format = src.or("log_format", |o| &o.log_format, LogFormat::default());
    let log_level = src.or("log_level", |o| &o.log_level, LogLevel::default());

    Ok(Settings {
        mqtt: mqtt.value.addr(),
        ws: ws.value.addr(),
        ws_path: ws_path.value,
        http: http.value.addr(),
        api_key_file,
        webhooks,
        log_format: log_format.value,
        log_level: log_level.value,
        placement,
        max_connections: max_connections.map(|m| m.value),
        max_packet_size: max_packet_size.value,
        data_dir: data_dir.value,
        max_queued_messages: max_queued_messages.value,
        max_inflight: max_inflight.value,
        sys_interval_s: sys_interval.value,
        max_keep_alive_s: max_keep_alive.value,
        deny_subscribe: deny,
        files_per_shard: fps,
        recv_buffers: recv_buffers.value,
        recv_buffer_size: recv_buffer_size.value,
        mesh_capacity: mesh_capacity.value,
        shard_pressure_bytes: shard_pressure_bytes.value,
    })
}

/// The webhook settings, checked; `None` without a URL.
fn webhooks(src: &Sources<'_>) -> Result<Option<WebhookConfig>, String> {
    let Some(urls) = src.get("webhook_url", |o| &o.webhook_url) else {
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
    let secret = match src.get("webhook_secret", |o| &o.webhook_secret) {
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
    let batch = src.or("webhook_batch", |o| &o.webhook_batch, config.batch_max);
    if !(1..=10_000).contains(&batch.value) {
        return Err(batch.bad("must be 1 to 10000"));
    }
    let batch_ms = src.or(
        "webhook_batch_ms",
        |o| &o.webhook_batch_ms,
        config.batch_wait.as_millis() as u64,
    );
    if batch_ms.value > 60_000 {
        return Err(batch_ms.bad("must be 0 to 60000 ms"));
    }
    let max_pending = src.or(
        "webhook_max_pending",
        |o| &o.webhook_max_pending,
        config.max_pending,
    );
    if max_pending.value == 0 {
        return Err(max_pending.bad("must be at least 1"));
    }
    let preview = src.or(
        "webhook_payload_preview",
        |o| &o.webhook_payload_preview,
        config.payload_preview,
    );
    if preview.value > 65_536 {
        return Err(preview.bad("must be 0 to 65536 bytes"));
    }
    config.batch_max = batch.value;
    config.batch_wait = std::time::Duration::from_millis(batch_ms.value);
    config.max_pending = max_pending.value;
    config.payload_preview = preview.value;
    Ok(Some(config))
}

/// `min(nofile − 64, 65536)`: all the open-file limit allows, less a reserve for
/// everything else the process opens.
pub fn default_files_per_shard(nofile: u64) -> u32 {
    nofile
        .saturating_sub(FD_RESERVE)
        .min(MAX_DEFAULT_FILES_PER_SHARD) as u32
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

impl Display for CoreList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ranges(&self.0).fmt(f)
    }
}

/// Writes cores the way `--cores` takes them: `0-3,8`.
pub struct Ranges<'a>(pub &'a [usize]);

impl Display for Ranges<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let s = self.0;
        while i < s.len() {
            let mut j = i;
            while j + 1 < s.len() && s[j + 1] == s[j] + 1 {
                j += 1;
            }
            if i > 0 {
                f.write_str(",")?;
            }
            if j > i {
                write!(f, "{}-{}", s[i], s[j])?;
            } else {
                write!(f, "{}", s[i])?;
            }
            i = j + 1;
        }
        Ok(())
    }
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
        assert_eq!(s.deny_subscribe, ["test/nosubscribe"]);
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
    fn files_per_shard_default_follows_the_limit() {
        assert_eq!(default_files_per_shard(20_000), 19_936);
        assert_eq!(default_files_per_shard(1 << 20), 65_536);
        assert_eq!(default_files_per_shard(u64::MAX), 65_536);
        assert_eq!(default_files_per_shard(10), 0);
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

    #[test]
    fn ranges_print_compactly() {
        assert_eq!(Ranges(&[0, 1, 2, 3, 8]).to_string(), "0-3,8");
        assert_eq!(Ranges(&[4, 2, 3]).to_string(), "4,2-3");
        assert_eq!(Ranges(&[5]).to_string(), "5");
        assert_eq!(Ranges(&[]).to_string(), "");
    }
}
