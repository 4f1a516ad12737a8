//! Process-wide limits every shard applies to connections: open connections per source
//! address ([`per_ip`]) and flapping bans ([`flapping`]). They are shared by all shards
//! (a client's connections land on any of them) and never make a shard wait: one is an
//! atomic table, the other is only ever try-locked.
//!
//! The per-connection limits live where the connection does: messages and bytes a client
//! may send per second in the broker (`broker::throttle`, token buckets of
//! `ringmq_shard::rate`), a listener's new connections per second in the runtime
//! (`ringmq_shard::config::ConnectRate`).

pub mod flapping;
pub mod per_ip;

use std::sync::atomic::{AtomicU64, Ordering};

pub use flapping::{Ban, Flapper, Flapping, FlappingConfig};
pub use per_ip::{Admit, PerIp};

/// The process clock the shared tables are read with, in ms (every shard reads the same
/// one; a shard's own clock starts when the shard does).
pub fn now_ms() -> u64 {
    ringmq_shard::mesh::links::clock_origin()
        .elapsed()
        .as_millis() as u64
}

/// The shared limits, and their counters.
#[derive(Debug)]
pub struct Limits {
    /// `None` without `--max-connections-per-ip`.
    pub per_ip: Option<PerIp>,
    pub flapping: Flapping,
    /// Connections refused because their address had its limit open.
    pub per_ip_refused: AtomicU64,
    /// Connections let in uncounted because the per-address table had no room.
    pub per_ip_untracked: AtomicU64,
}

impl Limits {
    pub fn new(per_ip: Option<PerIp>, flapping: Flapping) -> Limits {
        Limits {
            per_ip,
            flapping,
            per_ip_refused: AtomicU64::new(0),
            per_ip_untracked: AtomicU64::new(0),
        }
    }

    /// Whether the shards must learn each connection's address.
    pub fn needs_addresses(&self) -> bool {
        self.per_ip.is_some() || self.flapping.config().by_address
    }

    /// The counters in the Prometheus text format (`/metrics`).
    pub fn render_prometheus(&self, out: &mut String) {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let f = &self.flapping.stats;
        let rows: [(&str, &str, &str, u64); 7] = [
            (
                "per_ip_refused_total",
                "counter",
                "Connections refused because their source address had max_connections_per_ip open.",
                v(&self.per_ip_refused),
            ),
            (
                "per_ip_untracked_total",
                "counter",
                "Connections let in uncounted because the per-address table had no room near their address.",
                v(&self.per_ip_untracked),
            ),
            (
                "flapping_bans",
                "gauge",
                "Client ids and addresses banned for flapping now.",
                v(&f.bans_now),
            ),
            (
                "flapping_bans_total",
                "counter",
                "Flapping bans started.",
                v(&f.bans_total),
            ),
            (
                "flapping_skipped_total",
                "counter",
                "Drops not recorded or bans not asked about because another shard held that part of the table.",
                v(&f.skipped),
            ),
            (
                "flapping_forgotten_total",
                "counter",
                "Watched client ids and addresses forgotten to keep the flapping table in its bound.",
                v(&f.forgotten),
            ),
            (
                "flapping_bans_evicted_total",
                "counter",
                "Bans lifted early to keep the ban table in its bound.",
                v(&f.bans_evicted),
            ),
        ];
        for (name, kind, help, value) in rows {
            crate::control::metrics::one_sample(out, name, kind, help, value);
        }
    }
}
