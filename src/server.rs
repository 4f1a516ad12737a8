//! Starting the shards, the control plane, and shutting down.
//!
//! Start: reserve every listener's port (so port 0 becomes one concrete port that all
//! shards share), start one shard per entry of the placement and wait until each
//! listens, then announce. Run: the main thread waits for signals and watches the
//! shards. Stop: `Control::Shutdown` to every shard plus its doorbell, then join.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use ringmq_shard::config::{ConnectRate, Listen, ListenerKind, ShardConfig, WsFraming, WsOptions};
use ringmq_shard::mesh::links::{self, Doorbell};
use ringmq_shard::rate::Rate;
use ringmq_shard::runtime::{self, Control, ShardSpec};
use ringmq_shard::stats::{CounterSet, RuntimeStats};
use ringmq_shard::tls::TlsAcceptor;

use crate::auth::{AuthStats, Authenticator, CurrentAuth, VerifyPool};
use crate::broker::{
    AdminRequest, Broker, BrokerConfig, BrokerStats, Guards, Msg, Recovery, ShardFigures, Shared,
    home_shard, plan_recovery,
};
use crate::cluster::ClusterLink;
use crate::cluster::link::Start as LinkStart;
use crate::config::defaults;
use crate::config::settings::Settings;
use crate::config::values::{DurabilityMode, RateSpec};
use crate::control::api::shards::{CONTROL_CAPACITY, ShardApi};
use crate::control::webhook::WebhookSender;
use crate::control::{histograms, metrics, plane};
use crate::limits::{Flapping, Limits, PerIp};
use crate::store::lock::DirLock;
use crate::store::open::{Homes, open};
use crate::store::ring_driver::RingDriver;
use crate::store::{Durability, LogConfig, StoreConfig};
use crate::system::{self, PortReservation, Signals};
use crate::tls::Tls;

/// How long shards get to stop before the process gives up on them. They close their
/// connections within `close_timeout_ms` + 0.5 s (2.5 s by default).
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);
/// How often the main thread looks at the shards while it waits for signals.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long the main thread waits for room in a shard's control channel to ask it to stop.
const STOP_SEND_LIMIT: Duration = Duration::from_secs(1);

/// Writes a line to stdout now (tests and scripts wait for these lines).
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the broker until a signal stops it; returns the exit status.
pub fn run(settings: Settings, signals: Signals) -> i32 {
    let started = Instant::now();
    let reserve = |name: &str, addr: Option<SocketAddr>| {
        addr.map(|a| {
            system::reserve_port(a).map_err(|e| format!("cannot listen for {name} on {a}: {e}"))
        })
        .transpose()
    };
    let (mqtt, ws) = match (reserve("mqtt", settings.mqtt), reserve("ws", settings.ws)) {
        (Ok(mqtt), Ok(ws)) => (mqtt, ws),
        (Err(e), _) | (_, Err(e)) => return fail(&e),
    };
    let (mqtts, wss) = match (
        reserve("mqtts", settings.mqtts),
        reserve("wss", settings.wss),
    ) {
        (Ok(mqtts), Ok(wss)) => (mqtts, wss),
        (Err(e), _) | (_, Err(e)) => return fail(&e),
    };
    let tls = match settings.tls.clone().map(Tls::load).transpose() {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let http_listener = match settings.http.map(TcpListener::bind).transpose() {
        Ok(l) => l,
        Err(e) => {
            let a = settings.http.expect("http address");
            return fail(&format!("cannot listen for http on {a}: {e}"));
        }
    };
    let access = match plane::access(&settings) {
        Ok(a) => a,
        Err(e) => return fail(&e),
    };

    let security = match Security::start(&settings) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let ports = Ports {
        mqtt: mqtt.as_ref(),
        ws: ws.as_ref(),
        mqtts: mqtts.as_ref(),
        wss: wss.as_ref(),
    };
    let acceptor = tls.as_ref().map(|t| t.acceptor.clone());
    let cfg = Arc::new(shard_config(
        &settings,
        &ports,
        acceptor,
        security.limits.needs_addresses(),
    ));
    let figures: Vec<ShardFigures> = (0..settings.shards())
        .map(|_| ShardFigures::default())
        .collect();
    // The data directory: locked for as long as the broker runs, every shard's log
    // recovered before any shard starts.
    let (_lock, recovered) = match open_data(&settings) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let (webhook_sender, webhooks) = match plane::webhooks(&settings) {
        Some((sender, dispatcher)) => {
            let stats = sender.stats().clone();
            (Some(sender), Some((dispatcher, stats)))
        }
        None => (None, None),
    };
    // The cluster link's shared half goes to the shards; its tasks start with the
    // control plane, once the shards can be reached.
    let (cluster, cluster_out) = match settings.cluster.clone() {
        Some(c) => {
            let (link, out) = ClusterLink::new(c, settings.shards());
            (Some(link), Some(out))
        }
        None => (None, None),
    };
    let shared = match shared(
        &settings,
        &figures,
        &security,
        webhook_sender,
        cluster.clone(),
    ) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let shards = match start_shards(&settings, cfg, &shared, recovered) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    // The shards listen on the ports now; let go of the placeholders.
    let (mqtt, ws) = (mqtt.map(|r| r.addr), ws.map(|r| r.addr));
    let (mqtts, wss) = (mqtts.map(|r| r.addr), wss.map(|r| r.addr));

    let shutting_down = Arc::new(AtomicBool::new(false));
    let metrics_addr = http_listener.as_ref().and_then(|l| l.local_addr().ok());
    let broker = Arc::new(ShardApi::new(
        shards.controls.clone(),
        shards.doorbells.clone(),
        settings.max_packet_size,
    ));
    // Held until the broker stops.
    let _control = match plane::start(plane::Start {
        settings: &settings,
        http: http_listener,
        access,
        mqtt,
        ws,
        shards: figures.clone(),
        started,
        shutting_down: shutting_down.clone(),
        webhooks,
        broker,
        tls: settings
            .http_tls
            .then(|| tls.as_ref().map(|t| t.acceptor.clone()))
            .flatten(),
        auth_stats: security.stats.clone(),
        limits: security.limits.clone(),
        cluster: cluster.zip(cluster_out).map(|(link, out)| LinkStart {
            link,
            out,
            shards: shards.controls.clone(),
            doorbells: shards.doorbells.clone(),
        }),
    }) {
        Ok(c) => c,
        Err(e) => {
            shards.stop();
            shards.join();
            return fail(&e);
        }
    };

    let listening = Listening {
        mqtt,
        ws,
        mqtts,
        wss,
        metrics: metrics_addr,
    };
    say(format_args!("{}", announcement(&settings, &listening)));
    let dump = HistogramDump {
        shards: figures,
        started,
        dir: settings.data_dir.clone(),
    };
    let reload = Reload {
        settings: &settings,
        shared: &shared,
        security: &security,
        tls,
    };
    let status = watch(shards, &signals, &shutting_down, &dump, &reload);
    security.stop();
    status
}

/// Authentication and the process-wide limits, made once at start.
struct Security {
    stats: Arc<AuthStats>,
    /// `None` when nothing needs verifying off the shards.
    pool: Option<VerifyPool>,
    /// The first generation (later ones come from `Reload`).
    first: Arc<Authenticator>,
    limits: Arc<Limits>,
}

impl Security {
    /// Starts the verification pool if the configuration needs one and loads every file;
    /// an error names the file and line.
    fn start(settings: &Settings) -> Result<Security, String> {
        let stats = Arc::new(AuthStats::default());
        let pool = if settings.auth.needs_pool() {
            let pool = VerifyPool::start(settings.auth_pool)
                .map_err(|e| format!("cannot start the verification threads: {e}"))?;
            Some(pool)
        } else {
            None
        };
        let first = Authenticator::load(
            &settings.auth,
            pool.as_ref().map(VerifyPool::handle),
            stats.clone(),
        )
        .map_err(|e| e.to_string())?;
        let connections = settings
            .max_connections
            .unwrap_or(settings.connection_capacity());
        let per_ip = settings
            .max_connections_per_ip
            .map(|limit| PerIp::new(connections, limit));
        let flapping = Flapping::new(settings.flapping, defaults::FLAPPING_CAPACITY);
        Ok(Security {
            stats,
            pool,
            first,
            limits: Arc::new(Limits::new(per_ip, flapping)),
        })
    }

    fn stop(self) {
        if let Some(pool) = self.pool {
            pool.shutdown();
        }
    }
}

/// What SIGHUP reloads: the TLS certificates, and the password file, the ACL file and
/// the JWT key. Each outcome is said on stdout (scripts and tests wait for it) and logged.
struct Reload<'a> {
    settings: &'a Settings,
    shared: &'a Shared,
    security: &'a Security,
    tls: Option<Tls>,
}

impl Reload<'_> {
    fn run(&self) {
        self.tls();
        self.authentication();
    }

    /// Reads the certificate, key and client CA files again; new handshakes use them,
    /// open connections stay. What cannot be read keeps the previous ones.
    fn tls(&self) {
        let Some(tls) = &self.tls else {
            return;
        };
        match tls.reload() {
            Ok(()) => {
                tracing::info!("TLS certificates reloaded");
                say(format_args!("ringmq: SIGHUP: TLS certificates reloaded"));
            }
            Err(e) => {
                tracing::error!("TLS certificates not reloaded, the previous ones stay: {e}");
                say(format_args!(
                    "ringmq: SIGHUP: TLS certificates not reloaded: {e}"
                ));
            }
        }
    }

    /// Builds a new authentication generation and puts it in force; on an error the
    /// rules in force stay and the log names the file and line.
    fn authentication(&self) {
        let pool = self.security.pool.as_ref().map(VerifyPool::handle);
        let needs_pool = self.settings.auth.needs_pool();
        if needs_pool && pool.is_none() {
            tracing::error!("reload: the configuration needs the verification pool; none runs");
            return;
        }
        match Authenticator::load(&self.settings.auth, pool, self.security.stats.clone()) {
            Ok(next) => {
                self.shared.auth.replace(next);
                tracing::info!(
                    generation = self.shared.auth.generation(),
                    "reloaded the password file, ACL file and JWT key"
                );
                say(format_args!("ringmq: SIGHUP: authentication reloaded"));
            }
            Err(e) => {
                tracing::error!("reload failed, the rules in force stay: {e}");
                say(format_args!(
                    "ringmq: SIGHUP: authentication not reloaded: {e}"
                ));
            }
        }
    }
}

/// Where SIGUSR1 writes the latency histograms.
struct HistogramDump {
    shards: Vec<ShardFigures>,
    started: Instant,
    dir: std::path::PathBuf,
}

impl HistogramDump {
    /// Writes `histograms.hlog` in the data directory and says where on stderr.
    fn write(&self) {
        let path = self.dir.join("histograms.hlog");
        let sets = metrics::histogram_sets(&self.shards);
        let log = histograms::dump(&sets, self.started.elapsed());
        match std::fs::write(&path, log) {
            Ok(()) => tracing::info!(path = %path.display(), "histograms written"),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot write the histograms")
            }
        }
    }
}

fn fail(msg: &str) -> i32 {
    tracing::error!("{msg}");
    1
}

/// Where the broker listens (concrete ports).
struct Listening {
    mqtt: Option<SocketAddr>,
    ws: Option<SocketAddr>,
    mqtts: Option<SocketAddr>,
    wss: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
}

/// `ringmq 0.1.0 listening: mqtt tcp ADDR, mqtt ws ADDR/PATH, mqtt tls ADDR, mqtt wss
/// ADDR/PATH, metrics http://ADDR/metrics (https with --http-tls); N shards on cores [..]` — the line tests and
/// scripts wait for.
fn announcement(s: &Settings, at: &Listening) -> String {
    let mut parts = Vec::new();
    if let Some(a) = at.mqtt {
        parts.push(format!("mqtt tcp {a}"));
    }
    if let Some(a) = at.ws {
        parts.push(format!("mqtt ws {a}{}", s.ws_path));
    }
    if let Some(a) = at.mqtts {
        parts.push(format!("mqtt tls {a}"));
    }
    if let Some(a) = at.wss {
        parts.push(format!("mqtt wss {a}{}", s.ws_path));
    }
    if let Some(a) = at.metrics {
        let scheme = if s.http_tls { "https" } else { "http" };
        parts.push(format!("metrics {scheme}://{a}/metrics"));
    }
    let n = s.shards();
    format!(
        "ringmq {} listening: {}; {n} shard{} on cores {:?}",
        env!("CARGO_PKG_VERSION"),
        parts.join(", "),
        if n == 1 { "" } else { "s" },
        s.placement
    )
}

/// What the shards start from after recovery: one plan per shard, and the highest
/// retained-message version logged.
type Recovered = (Vec<Recovery>, u64);

/// The store's configuration from the settings: the disk budget is shared equally by
/// the shards.
pub fn store_config(s: &Settings) -> StoreConfig {
    let durability = match s.durability {
        DurabilityMode::Fsync => Durability::Fsync,
        DurabilityMode::Write => Durability::Write,
        DurabilityMode::None => Durability::None,
    };
    let defaults = StoreConfig::default();
    StoreConfig {
        log: LogConfig {
            durability,
            fsync_interval_ms: s.fsync_interval_ms,
            max_data_bytes: s.max_data_bytes.map(|b| b / s.shards() as u64),
            ..defaults.log
        },
        ..defaults
    }
}

/// What the shards start from: nothing with `--durability none`; else the data
/// directory locked, and what each shard's log holds (recovered, repaired, dealt out
/// again if the shard count changed). An error names the file and offset at fault.
fn open_data(settings: &Settings) -> Result<(Option<DirLock>, Option<Recovered>), String> {
    if settings.durability == DurabilityMode::None {
        return Ok((None, None));
    }
    let started = Instant::now();
    let n = settings.shards();
    let dir = &settings.data_dir;
    let session = |id: &str| home_shard(id, n);
    let retained = |topic: &str| home_shard(topic, n);
    let homes = Homes {
        session: &session,
        retained: &retained,
    };
    let opened = open(dir, n, store_config(settings), homes)
        .map_err(|e| format!("cannot open the data directory {}: {e}", dir.display()))?;
    let report = &opened.report;
    for (shard, tail) in &report.tails {
        tracing::warn!(shard, "log recovery: {tail}");
    }
    if let Some((from, to)) = report.reshard {
        tracing::info!(
            from,
            to,
            "the data was dealt out again for another shard count"
        );
    }
    for id in &report.duplicates {
        tracing::warn!(client_id = %id, "a session found on two shards (a crash during a move); the older copy was dropped");
    }
    let drivers: Vec<RingDriver> = opened
        .stores
        .into_iter()
        .zip(opened.shard_dirs)
        .map(|(store, dir)| RingDriver::new(store, dir))
        .collect();
    let ms = started.elapsed().as_millis() as u64;
    let (plans, retain_version) = plan_recovery(drivers, crate::config::defaults::ROUTE_DEPTH, ms);
    let sessions: usize = plans
        .iter()
        .map(|p| p.driver.store().state().sessions().count())
        .sum();
    let messages: usize = plans
        .iter()
        .map(|p| p.driver.store().state().messages_len())
        .sum();
    tracing::info!(
        ms,
        sessions,
        messages,
        dir = %dir.display(),
        "data directory recovered"
    );
    Ok((Some(opened.lock), Some((plans, retain_version))))
}

fn rate(spec: RateSpec) -> Rate {
    Rate::new(spec.per_s, spec.burst)
}

/// What every shard's broker reads. Built here only, so new fields go in one place.
fn shared(
    settings: &Settings,
    figures: &[ShardFigures],
    security: &Security,
    webhooks: Option<WebhookSender>,
    cluster: Option<Arc<ClusterLink>>,
) -> Result<Arc<Shared>, String> {
    let config = BrokerConfig {
        max_queued_messages: settings.max_queued_messages,
        max_inflight: settings.max_inflight,
        sys_interval_s: settings.sys_interval_s,
        max_keep_alive_s: settings.max_keep_alive_s,
        max_packet_size: settings.max_packet_size,
        max_subscriptions: settings.max_subscriptions,
        max_subscription_bytes: settings.max_subscription_bytes,
        max_topic_levels: settings.max_topic_levels,
        max_sessions: settings.max_sessions,
        v311_session_expiry_s: settings.v311_session_expiry_s,
        retained_snapshot_entries: settings.retained_snapshot_entries,
        deny_subscribe: settings
            .deny_subscribe
            .iter()
            .map(|f| f.as_str().into())
            .collect(),
        client_msg_rate: settings.client_msg_rate.map(rate),
        client_byte_rate: settings.client_byte_rate.map(rate),
        max_retained: settings.max_retained,
        max_parked_connects: settings.auth_pool.queue,
        ..BrokerConfig::default()
    };
    let guards = Guards {
        auth: CurrentAuth::new(security.first.clone()),
        limits: security.limits.clone(),
    };
    Shared::new(config, figures.to_vec(), guards, webhooks).map(|mut s| {
        s.cluster = cluster;
        Arc::new(s)
    })
}

/// The reserved (concrete) ports of the listeners that are on.
struct Ports<'a> {
    mqtt: Option<&'a PortReservation>,
    ws: Option<&'a PortReservation>,
    mqtts: Option<&'a PortReservation>,
    wss: Option<&'a PortReservation>,
}

/// The one `ShardConfig` all shards share, listening on the reserved ports; the TLS
/// listeners read `tls`. `peer_addresses`: the shards learn each connection's peer
/// address (per-address limits need it).
fn shard_config(
    s: &Settings,
    ports: &Ports<'_>,
    tls: Option<Arc<TlsAcceptor>>,
    peer_addresses: bool,
) -> ShardConfig {
    let defaults = ShardConfig::default();
    // MQTT §6: subprotocol `mqtt`, which the client must offer; packets travel in binary
    // messages.
    let websocket = || {
        ListenerKind::WebSocket(WsOptions {
            path: s.ws_path.clone(),
            subprotocol: Some("mqtt".into()),
            require_subprotocol: true,
            framing: WsFraming::ByteStream,
            allowed_origins: s.ws_allowed_origins.clone().map(Arc::from),
        })
    };
    let mut listeners = Vec::new();
    // Each listener has its own bucket, shared by every shard.
    let connect_rate = || s.max_connect_rate.map(|r| ConnectRate::new(rate(r)));
    for (port, kind, secure) in [
        (ports.mqtt, ListenerKind::Tcp, false),
        (ports.ws, websocket(), false),
        (ports.mqtts, ListenerKind::Tcp, true),
        (ports.wss, websocket(), true),
    ] {
        if let Some(r) = port {
            let tls = secure.then(|| tls.clone().expect("TLS listeners come with their settings"));
            listeners.push(Listen {
                addr: r.addr,
                kind,
                connect_rate: connect_rate(),
                tls,
            });
        }
    }
    ShardConfig {
        listeners,
        // A WebSocket frame must be able to carry the largest packet.
        max_ws_message: defaults.max_ws_message.max(u64::from(s.max_packet_size)),
        max_connections: s.max_connections.unwrap_or(usize::MAX),
        open_connections: Arc::new(AtomicUsize::new(0)),
        files_per_shard: s.files_per_shard,
        max_lanes: s.lanes_per_shard as usize,
        recv_buffers: s.recv_buffers,
        recv_buffer_size: s.recv_buffer_size,
        mesh_capacity: s.mesh_capacity,
        pressure_high: s.shard_pressure_bytes as usize,
        pressure_low: s.shard_pressure_bytes as usize / 2,
        peer_addresses,
        ..defaults
    }
}

/// The running shards and the ways to reach them.
struct Shards {
    handles: Vec<JoinHandle<()>>,
    controls: Vec<Sender<Control<AdminRequest>>>,
    doorbells: Arc<[Doorbell]>,
}

impl Shards {
    /// Asks every shard to stop: a control message, then its doorbell so it wakes. A
    /// channel full of API requests has room again within a few loop turns; a shard that
    /// has ended has dropped its end (the send fails at once).
    fn stop(&self) {
        for (control, bell) in self.controls.iter().zip(self.doorbells.iter()) {
            bell.ring();
            let _ = control.send_timeout(Control::Shutdown, STOP_SEND_LIMIT);
            bell.ring();
        }
    }

    /// The first shard whose thread has ended.
    fn first_finished(&self) -> Option<usize> {
        self.handles.iter().position(|h| h.is_finished())
    }

    fn all_finished(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }

    /// Joins every shard; false if one panicked.
    fn join(self) -> bool {
        let mut ok = true;
        for (i, h) in self.handles.into_iter().enumerate() {
            if h.join().is_err() {
                tracing::error!(shard = i, "shard panicked");
                ok = false;
            }
        }
        ok
    }
}

/// Starts every shard and waits until all of them listen. If one fails, stops the
/// others and says which failed and why.
fn start_shards(
    settings: &Settings,
    cfg: Arc<ShardConfig>,
    shared: &Arc<Shared>,
    recovered: Option<Recovered>,
) -> Result<Shards, String> {
    let n = settings.shards();
    let figures = &shared.shards;
    let mut recoveries: Vec<Option<Recovery>> = match recovered {
        Some((plans, retain_version)) => {
            // Retained updates from now on are newer than every one logged.
            shared
                .retain_clock
                .store(retain_version + 1, std::sync::atomic::Ordering::Relaxed);
            plans.into_iter().map(Some).collect()
        }
        None => (0..n).map(|_| None).collect(),
    };
    let mesh = links::build::<Msg>(n, settings.mesh_capacity)
        .map_err(|e| format!("cannot build the mesh between {n} shards: {e}"))?;
    let doorbells = mesh[0].doorbells().clone();
    let mut shards = Shards {
        handles: Vec::new(),
        controls: Vec::new(),
        doorbells,
    };
    let mut ready = Vec::new();
    let mut errors = Vec::new();
    for (id, links) in mesh.into_iter().enumerate() {
        let core = settings.placement[id];
        let (control_tx, control_rx) = crossbeam_channel::bounded(CONTROL_CAPACITY);
        let spec = ShardSpec {
            id,
            core: Some(core),
            cfg: cfg.clone(),
            stats: figures[id].runtime.clone(),
            mesh: links,
            control: control_rx,
            hists: figures[id].runtime_hists.clone(),
        };
        let shared = shared.clone();
        let bells = shards.doorbells.clone();
        // The verification pool's answers wake the shard (an eventfd write per answer;
        // only CONNECTs whose credentials are not in the cache wait for one).
        let wake: Arc<dyn Fn() + Send + Sync> = Arc::new(move || bells[id].ring());
        let recovery = recoveries[id].take();
        let make = move || match recovery {
            Some(r) => Broker::recovered(id, shared, wake, r),
            None => Broker::new(id, shared, wake),
        };
        match runtime::spawn(spec, make) {
            Ok((handle, ready_rx)) => {
                shards.handles.push(handle);
                shards.controls.push(control_tx);
                ready.push((id, ready_rx));
            }
            Err(e) => {
                errors.push(format!("cannot start a thread for shard {id}: {e}"));
                break;
            }
        }
    }
    for (id, rx) in ready {
        let core = settings.placement[id];
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("shard {id} (core {core}) failed to start: {e}")),
            Err(_) => errors.push(format!("shard {id} (core {core}) ended while starting")),
        }
    }
    if errors.is_empty() {
        return Ok(shards);
    }
    shards.stop();
    shards.join();
    Err(errors.join("\nringmq: "))
}

/// Waits for signals and watches the shards until they have stopped; returns the exit
/// status.
fn watch(
    shards: Shards,
    signals: &Signals,
    shutting_down: &AtomicBool,
    dump: &HistogramDump,
    reload: &Reload<'_>,
) -> i32 {
    let mut stopping: Option<Instant> = None;
    let mut failed = false;
    loop {
        let interval = if stopping.is_some() {
            STOP_POLL_INTERVAL
        } else {
            WATCH_INTERVAL
        };
        match signals.wait(interval) {
            Some(libc::SIGUSR1) => {
                tracing::info!(counters = %counters(&dump.shards), "SIGUSR1");
                dump.write();
            }
            Some(libc::SIGHUP) if stopping.is_none() => reload.run(),
            // Nothing to reload into while stopping (and no reason to stop at once).
            Some(libc::SIGHUP) => {}
            Some(sig) => {
                let name = system::signal_name(sig);
                if stopping.is_some() {
                    say(format_args!(
                        "ringmq: {name} again during shutdown; exiting now"
                    ));
                    std::process::exit(128 + sig);
                }
                say(format_args!("ringmq: {name}: shutting down"));
                shutting_down.store(true, Ordering::Relaxed);
                shards.stop();
                stopping = Some(Instant::now());
            }
            None => {}
        }
        match stopping {
            None => {
                if let Some(i) = shards.first_finished() {
                    tracing::error!(shard = i, "shard stopped on its own; shutting down");
                    failed = true;
                    shutting_down.store(true, Ordering::Relaxed);
                    shards.stop();
                    stopping = Some(Instant::now());
                }
            }
            Some(since) => {
                if shards.all_finished() {
                    failed |= !shards.join();
                    say(format_args!("ringmq: stopped"));
                    return if failed { 1 } else { 0 };
                }
                if since.elapsed() > SHUTDOWN_LIMIT {
                    tracing::error!(
                        "shards did not stop within {} s; exiting",
                        SHUTDOWN_LIMIT.as_secs()
                    );
                    return 1;
                }
            }
        }
    }
}

/// Every counter summed over the shards, as `name=value` pairs, the runtime's then the
/// broker's.
fn counters(shards: &[ShardFigures]) -> String {
    fn sums<C: CounterSet>(sets: impl Iterator<Item = Vec<u64>>) -> Vec<String> {
        let mut sums = vec![0u64; C::DESCRIPTIONS.len()];
        for values in sets {
            for (sum, v) in sums.iter_mut().zip(values) {
                *sum = sum.wrapping_add(v);
            }
        }
        C::DESCRIPTIONS
            .iter()
            .zip(sums)
            .map(|(d, v)| format!("{}={v}", d.0))
            .collect()
    }
    let mut pairs = sums::<RuntimeStats>(shards.iter().map(|s| s.runtime.values()));
    pairs.extend(sums::<BrokerStats>(
        shards.iter().map(|s| s.broker.values()),
    ));
    pairs.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::resolve;
    use crate::config::values::Host;
    use clap::Parser;

    fn settings(args: &[&str]) -> Settings {
        let flags = crate::config::cli::Options::try_parse_from(
            std::iter::once("ringmq").chain(args.iter().copied()),
        )
        .unwrap();
        let host = Host {
            cores: vec![0, 1],
            parallelism: 2,
            nofile: 20_000,
        };
        resolve(&flags, None, &host).unwrap()
    }

    #[test]
    fn the_announcement_names_every_listener() {
        let at = |s: &Settings| Listening {
            mqtt: s.mqtt,
            ws: s.ws,
            mqtts: s.mqtts,
            wss: s.wss,
            metrics: s.http,
        };
        let s = settings(&[]);
        let line = announcement(&s, &at(&s));
        assert_eq!(
            line,
            "ringmq 0.1.0 listening: mqtt tcp 127.0.0.1:1883, mqtt ws 127.0.0.1:8083/mqtt, \
             metrics http://127.0.0.1:9883/metrics; 2 shards on cores [0, 1]"
        );
        let s = settings(&["--ws", "none", "--metrics", "none", "--shards", "1"]);
        let line = announcement(&s, &at(&s));
        assert_eq!(
            line,
            "ringmq 0.1.0 listening: mqtt tcp 127.0.0.1:1883; 1 shard on cores [0]"
        );
        let s = settings(&[
            "--mqtt",
            "none",
            "--ws",
            "none",
            "--metrics",
            "none",
            "--mqtts",
            "127.0.0.1:8883",
            "--wss",
            "127.0.0.1:8884",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--shards",
            "1",
        ]);
        let line = announcement(&s, &at(&s));
        assert_eq!(
            line,
            "ringmq 0.1.0 listening: mqtt tls 127.0.0.1:8883, mqtt wss 127.0.0.1:8884/mqtt; \
             1 shard on cores [0]"
        );
    }

    #[test]
    fn the_shard_config_carries_the_settings() {
        let s = settings(&[
            "--max-packet-size",
            "33554432",
            "--max-connections",
            "7",
            "--shard-pressure-bytes",
            "1000000",
        ]);
        let r = system::reserve_port("127.0.0.1:0".parse().unwrap()).unwrap();
        let ports = Ports {
            mqtt: Some(&r),
            ws: None,
            mqtts: None,
            wss: None,
        };
        let cfg = shard_config(&s, &ports, None, false);
        assert_eq!(cfg.listeners.len(), 1);
        assert_eq!(cfg.listeners[0].addr, r.addr);
        assert_eq!(cfg.listeners[0].kind, ListenerKind::Tcp);
        assert_eq!(cfg.listeners[0].tls, None);
        assert_eq!(cfg.max_ws_message, 32 << 20);
        assert_eq!(cfg.max_connections, 7);
        assert_eq!(cfg.files_per_shard, 19_936);
        assert_eq!((cfg.pressure_high, cfg.pressure_low), (1_000_000, 500_000));
    }
}
