//! Starting the control plane: its Tokio runtime, the stats sampler, the webhook
//! dispatcher and the HTTP server with the API over the shards, all on the runtime's
//! threads. The webhook queue is made first ([`webhooks`]): the shards hold its sender
//! from their start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use crate::broker::ShardFigures;
use crate::config::settings::Settings;
use crate::control::api::keys::ApiKeys;
use crate::control::api::shards::ShardApi;
use crate::control::api::{self, Access, Info, ListenerInfo};
use crate::control::http::{self, Limits};
use crate::control::metrics;
use crate::control::stats::{Sampler, Sources};
use crate::control::webhook::{self, Dispatcher, WebhookSender};
use ringmq_shard::tls::TlsAcceptor;

/// The running control plane; dropping it stops its threads.
pub struct ControlPlane {
    _runtime: tokio::runtime::Runtime,
}

/// The webhook queue, when webhooks are configured: the sender the shards emit through,
/// and the dispatcher `start` runs.
pub fn webhooks(settings: &Settings) -> Option<(WebhookSender, Dispatcher)> {
    settings
        .webhooks
        .as_ref()
        .map(|config| webhook::channel(config.clone()))
}

/// What the control plane reads and where it listens.
pub struct Start<'a> {
    pub settings: &'a Settings,
    pub http: Option<std::net::TcpListener>,
    pub access: Access,
    pub mqtt: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    /// Each shard's counters and histograms, in shard order.
    pub shards: Vec<ShardFigures>,
    pub started: Instant,
    pub shutting_down: Arc<AtomicBool>,
    /// The webhook queue's dispatcher and its counters (see [`webhooks`]).
    pub webhooks: Option<(Dispatcher, Arc<webhook::WebhookStats>)>,
    /// The shards, for the API's shard-backed routes.
    pub broker: Arc<ShardApi>,
    /// With `--http-tls`: the TLS listeners' settings (swapped on SIGHUP), for https.
    pub tls: Option<Arc<TlsAcceptor>>,
    /// Authentication's counters.
    pub auth_stats: Arc<crate::auth::AuthStats>,
    /// Connections per address, flapping bans.
    pub limits: Arc<crate::limits::Limits>,
    /// In a cluster: the NATS link to start.
    pub cluster: Option<crate::cluster::link::Start>,
}

/// Who may use the API, from `--api-key-file`.
pub fn access(settings: &Settings) -> Result<Access, String> {
    match &settings.api_key_file {
        None => Ok(Access::LoopbackOnly),
        Some(path) => ApiKeys::load(path).map(|k| Access::Keys(Arc::new(k))),
    }
}

pub fn start(s: Start<'_>) -> Result<ControlPlane, String> {
    let runtime =
        http::runtime().map_err(|e| format!("cannot start the control plane's threads: {e}"))?;
    let webhook_stats = match s.webhooks {
        Some((dispatcher, stats)) => {
            runtime.spawn(dispatcher.run());
            Some(stats)
        }
        None => None,
    };
    let sampler = Arc::new(Sampler::new(Sources {
        shards: s.shards.clone(),
        started: s.started,
        webhooks: webhook_stats.clone(),
    }));
    runtime.spawn(sampler.clone().run());
    let cluster = s.cluster.as_ref().map(|c| c.link.clone());
    if let Some(c) = s.cluster {
        crate::cluster::link::start(&runtime, c);
    }

    if let Some(listener) = s.http {
        let state = Arc::new(metrics::State {
            shards: s.shards,
            started: s.started,
            shutting_down: s.shutting_down,
            webhooks: webhook_stats,
            auth: Some(s.auth_stats),
            limits: Some(s.limits),
            cluster,
        });
        let info = Info {
            version: env!("CARGO_PKG_VERSION"),
            shards: s.settings.shards(),
            mqtt: s.mqtt.map(|a| ListenerInfo::new(a, None)),
            ws: s
                .ws
                .map(|a| ListenerInfo::new(a, Some(s.settings.ws_path.clone()))),
            broker_api: false,
        };
        let broker_routes = api::routes::routes(s.broker);
        let api = api::router(sampler, info, s.access, Some(broker_routes));
        let limits = Limits::default();
        let app = http::app(state, api, limits);
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot set up the HTTP listener: {e}"))?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)
                .map_err(|e| format!("cannot set up the HTTP listener: {e}"))?
        };
        runtime.spawn(http::serve(listener, app, limits, s.tls));
    }
    Ok(ControlPlane { _runtime: runtime })
}
