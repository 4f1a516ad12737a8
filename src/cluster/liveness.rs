//! Which other nodes are alive: every node says so on `ringmq.hb.NODE` every
//! [`HEARTBEAT`], and a node not heard for [`NODE_TIMEOUT`] is left out of routing (its
//! interest stays in the interest bucket, so it is routed to again as soon as it is
//! heard again, with the interest it then writes). A node that dies without a word
//! (`kill -9`, a lost host) therefore stops costing the others NATS messages nobody
//! reads, and its unacknowledged messages are given up (counted) instead of waiting.
//!
//! A node judges no other node until it has listened for [`NODE_TIMEOUT`] since its
//! latest connection to NATS: one that was away itself heard nobody meanwhile.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;

use super::link::subscribe;
use super::remote::MAX_NODES;
use super::{ClusterLink, PREFIX, valid_node_id};

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node may stay silent before the others stop routing to it.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// Nodes remembered: the most that can be routed to, with room for ones come and gone.
const REMEMBERED: usize = 4 * MAX_NODES;

/// What the routing table needs to know of other nodes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    /// Whether this node has listened long enough to judge.
    pub judging: bool,
    /// The nodes heard within [`NODE_TIMEOUT`].
    pub alive: BTreeSet<Arc<str>>,
}

impl Liveness {
    /// Whether node `node` is routed to.
    pub fn routes_to(&self, node: &str) -> bool {
        !self.judging || self.alive.contains(node)
    }
}

/// Says this node is alive, listens to the others, and keeps `tx` up to date.
pub(super) async fn run(
    link: Arc<ClusterLink>,
    client: async_nats::Client,
    tx: watch::Sender<Liveness>,
) {
    let me = link.node_id().to_string();
    let subject = format!("{PREFIX}.hb.{me}");
    let Some(mut beats) = subscribe(&client, format!("{PREFIX}.hb.*")).await else {
        // Every node stays routed to, as before any node is judged.
        return keep(tx).await;
    };
    let mut connections = link.connections.subscribe();
    let mut listening_since = Instant::now();
    let mut heard: HashMap<Arc<str>, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let _ = client.publish(subject.clone(), Bytes::new()).await;
            }
            _ = connections.changed() => {
                listening_since = Instant::now();
            }
            m = beats.next() => {
                let Some(m) = m else { return keep(tx).await };
                let Some(node) = m.subject.strip_prefix(PREFIX).and_then(|s| s.strip_prefix(".hb.")) else {
                    continue;
                };
                if node == me || !valid_node_id(node) {
                    continue;
                }
                if !heard.contains_key(node) && heard.len() >= REMEMBERED {
                    // Forget the one silent longest.
                    if let Some(oldest) = heard.iter().min_by_key(|(_, t)| **t).map(|(n, _)| n.clone()) {
                        heard.remove(&oldest);
                    }
                }
                heard.insert(node.into(), Instant::now());
            }
        }
        let now = Instant::now();
        let next = Liveness {
            judging: now.duration_since(listening_since) >= NODE_TIMEOUT,
            alive: heard
                .iter()
                .filter(|(_, t)| now.duration_since(**t) < NODE_TIMEOUT)
                .map(|(n, _)| n.clone())
                .collect(),
        };
        link.stats
            .nodes_alive
            .store(next.alive.len() as u64, Relaxed);
        tx.send_if_modified(|l| {
            let changed = *l != next;
            *l = next;
            changed
        });
    }
}

/// Holds the last word on liveness for good (the client has stopped).
async fn keep(tx: watch::Sender<Liveness>) {
    tx.send_replace(Liveness::default());
    std::future::pending::<()>().await;
    drop(tx);
}
