//! The cluster: several ringmq nodes joined through NATS (`--cluster URL,…`). Each node
//! keeps its own shards, sessions, log and hot path; NATS carries only what crosses
//! nodes. In the order a message crosses:
//!
//! - [`subject`]: MQTT topics and filters as NATS subjects and key-value keys, one-to-one.
//! - [`remote`]: other nodes' interest, which a shard asks on every publish (a table it
//!   reads without a lock), so a publish nobody elsewhere wants sends nothing to NATS.
//! - [`frame`]: the body of a message on NATS (QoS, RETAIN, expiry, properties, payload,
//!   the origin node and shard, its stream's incarnation and number), and of an ack.
//! - [`stream`]: QoS 1/2 across nodes: a numbered stream per (origin, destination) node,
//!   acked cumulatively by the destination and sent again go-back-N by the origin, so
//!   what NATS drops is not lost.
//! - [`link`]: the NATS client (`async-nats`) on the control plane's runtime, never on a
//!   shard: it publishes what the shards hand it, hands the shards what NATS delivers,
//!   keeps this node's interest in the interest bucket and watches the others', and keeps
//!   retained messages in the retained bucket.
//! - [`liveness`]: heartbeats; a node not heard for a while is not routed to.
//! - [`registry`]: which node holds each client id's session, asked before a CONNACK,
//!   and the handover of a session from the node that held it.
//! - [`reconcile`]: the sessions a restarted node recovered from its log, checked
//!   against the registry once it answers (a copy another node holds now ends here).
//!
//! Between the shards and the link every queue is bounded: the outbound queue
//! (`--cluster-queue` messages, all shards together; full → QoS 0 dropped and counted,
//! QoS 1/2 held by the shard, which then pauses its publishers; the link stops taking
//! from it while a destination's window of unacked messages is full), and each shard's
//! inbound messages ([`INBOUND_PER_SHARD`] handed over and not yet routed; past it the
//! link stops reading NATS, which counts a slow consumer if it lasts).

pub mod frame;
pub mod link;
pub mod liveness;
pub mod reconcile;
pub mod registry;
pub mod remote;
pub mod stream;
pub mod subject;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::broker::session::{Message, MovingSession};
use remote::RemoteInterest;
use ringmq_proto::mqtt::QoS;
use ringmq_shard::conn::ConnKey;

/// The subject prefix of everything the cluster publishes.
pub const PREFIX: &str = "ringmq";
/// The key-value bucket of every node's interest (`NODE.p.FILTER`, `NODE.g.SHARE`).
pub const INTEREST_BUCKET: &str = "ringmq-interest";
/// The key-value bucket of retained messages (key: the topic's tokens).
pub const RETAINED_BUCKET: &str = "ringmq-retained";
/// The key-value bucket of sessions: client id (as one token) → the node that holds it.
pub const SESSIONS_BUCKET: &str = "ringmq-sessions";

/// CONNECTs waiting for the session registry, all shards together; past it a CONNECT is
/// refused with "server busy" (counted).
pub const CLAIMS_QUEUE: usize = 65_536;

/// Session events of one shard waiting for the link; past it the oldest are dropped.
pub const SESSION_EVENTS_PER_SHARD: usize = 65_536;

/// Messages handed to one shard and not yet routed by it; past it the link waits.
pub const INBOUND_PER_SHARD: usize = 16_384;

/// `--cluster`, `--node-id`, `--cluster-queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// NATS servers.
    pub urls: Vec<String>,
    /// This node's name in the cluster: `[A-Za-z0-9-]`, 1 to 64 characters.
    pub node_id: String,
    /// The outbound queue's bound, in messages.
    pub queue: usize,
}

/// Whether `id` may name a node: it goes into subjects and keys as it is.
pub fn valid_node_id(id: &str) -> bool {
    (1..=frame::MAX_NODE_ID).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A message a shard hands the link.
pub struct Outbound {
    pub msg: Arc<Message>,
    /// The table `nodes` indexes.
    pub table: Arc<RemoteInterest>,
    /// The nodes it goes to: those with plain interest, or the one picked for `share`.
    pub nodes: u64,
    /// Not for the nodes' subscribers but for one member of this shared group on the
    /// node picked (`nodes`, one bit).
    pub share: Option<Arc<str>>,
    /// The publishing shard.
    pub shard: u16,
    /// Not a message for other nodes' subscribers but a delivery to one session that
    /// moved to node `.0`, forwarded by its stub here.
    pub forward: Option<(Arc<str>, Box<SessionDelivery>)>,
}

/// A delivery to one session, as a stub forwards it to the node the session moved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDelivery {
    pub client_id: Box<str>,
    /// The QoS and RETAIN of the delivery (the subscription's, not the message's).
    pub qos: QoS,
    pub retain: bool,
    /// Subscription identifiers (at most 4).
    pub sub_ids: Vec<u32>,
}

/// How long the stub of a session that moved to another node forwards what still
/// reaches it here: longer than the other nodes take to read the new node's interest.
pub const STUB_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A node's id as the list of nodes a message was sent to names it (32-bit FNV-1a; two
/// nodes of one cluster sharing one is a chance of one in four billion per pair).
pub fn node_hash(node: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in node.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// A message NATS delivered, for one shard to route here.
#[derive(Clone)]
pub struct Inbound {
    pub msg: Arc<Message>,
    /// `None`: to the plain subscribers; `Some($share/G/F)`: to one member of that group.
    pub share: Option<Arc<str>>,
    /// To this one session only (forwarded by its stub on the node it left).
    pub forward: Option<Box<SessionDelivery>>,
}

/// An interest change of one shard: a plain prefix (as advertised, `a/#`) or a shared
/// group's whole filter (`$share/G/F`), gained or lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterestChange {
    pub key: Box<str>,
    pub share: bool,
    pub add: bool,
}

/// A CONNECT on this node, for the session registry: which node held the client id's
/// session last, and its session if another node did.
pub struct ClaimRequest {
    pub shard: usize,
    pub conn: ConnKey,
    pub client_id: Box<str>,
    pub clean_start: bool,
}

/// What the session registry answers a [`ClaimRequest`].
pub enum ClaimOutcome {
    /// No other node holds the session (or the registry cannot be reached: the node
    /// serves its own clients meanwhile): the CONNECT goes on here.
    Proceed,
    /// Another node held it and handed it over.
    Session(Box<MovingSession>),
    /// Another CONNECT with the same client id, on another node, registered first.
    Refused,
}

/// A session's life on this node, for the cluster's session registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// A client connected here: this node now holds its session.
    Claim(Box<str>, u64),
    /// Its session ended here for good.
    Release(Box<str>, u64),
}

/// The cluster's counters (relaxed atomics, read by `/metrics`).
#[derive(Default, Debug)]
pub struct ClusterStats {
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub dropped_qos0_queue_full: AtomicU64,
    pub held_queue_full: AtomicU64,
    pub dropped_held_full: AtomicU64,
    pub publish_failed: AtomicU64,
    pub too_long: AtomicU64,
    pub bad_frames: AtomicU64,
    pub slow_consumer: AtomicU64,
    pub disconnects: AtomicU64,
    pub connects: AtomicU64,
    pub connected: AtomicU64,
    pub retained_put: AtomicU64,
    pub retained_failed: AtomicU64,
    pub retained_in: AtomicU64,
    pub interest_sync_failed: AtomicU64,
    pub sessions_claimed: AtomicU64,
    pub sessions_taken_over: AtomicU64,
    pub registry_failed: AtomicU64,
    pub claims_refused: AtomicU64,
    pub claims_unregistered: AtomicU64,
    pub handovers_in: AtomicU64,
    pub handovers_out: AtomicU64,
    pub handovers_failed: AtomicU64,
    pub handover_left_out: AtomicU64,
    pub recovered_sessions_checked: AtomicU64,
    pub recovered_sessions_dropped: AtomicU64,
    pub stub_forwarded: AtomicU64,
    pub moved_in: AtomicU64,
    pub early_dropped: AtomicU64,
    pub moved_duplicates: AtomicU64,
    pub group_unserved: AtomicU64,
    pub moved_seen_forgotten: AtomicU64,
    pub moved_held_let_go: AtomicU64,
    pub remote_filters: AtomicU64,
    pub remote_nodes: AtomicU64,
    pub nodes_left_out: AtomicU64,
    pub nodes_alive: AtomicU64,
    pub nodes_silent: AtomicU64,
    pub resent: AtomicU64,
    pub duplicates_dropped: AtomicU64,
    pub gaps_dropped: AtomicU64,
    pub acks_sent: AtomicU64,
    pub acks_received: AtomicU64,
    pub window_full_waits: AtomicU64,
    pub dropped_window_full: AtomicU64,
    pub windows_dropped: AtomicU64,
    pub unacked: AtomicU64,
}

impl ClusterStats {
    /// The counters in the Prometheus text format, for `/metrics`.
    pub fn render_prometheus(&self, out: &mut String) {
        use crate::control::metrics::one_sample;
        let c = |a: &AtomicU64| a.load(Relaxed);
        for (name, kind, help, v) in [
            (
                "cluster_messages_out_total",
                "counter",
                "Messages published to NATS (one per destination node; resends are cluster_resent_total).",
                &self.messages_out,
            ),
            (
                "cluster_bytes_out_total",
                "counter",
                "Bytes of subject and body published to NATS, resends included.",
                &self.bytes_out,
            ),
            (
                "cluster_messages_in_total",
                "counter",
                "Messages received from NATS for local subscribers.",
                &self.messages_in,
            ),
            (
                "cluster_bytes_in_total",
                "counter",
                "Bytes of subject and body received from NATS.",
                &self.bytes_in,
            ),
            (
                "cluster_dropped_qos0_total",
                "counter",
                "QoS 0 messages for other nodes dropped: the outbound queue was full.",
                &self.dropped_qos0_queue_full,
            ),
            (
                "cluster_held_total",
                "counter",
                "QoS 1/2 messages a shard held (and paused its publishers) because the outbound queue was full.",
                &self.held_queue_full,
            ),
            (
                "cluster_dropped_held_total",
                "counter",
                "QoS 1/2 messages for other nodes dropped: the shard's held messages were at their bound.",
                &self.dropped_held_full,
            ),
            (
                "cluster_publish_failed_total",
                "counter",
                "Messages that could not be handed to NATS (not connected, or refused).",
                &self.publish_failed,
            ),
            (
                "cluster_topic_too_long_total",
                "counter",
                "Messages that stayed on this node: their subject would pass the cluster's bound.",
                &self.too_long,
            ),
            (
                "cluster_bad_frames_total",
                "counter",
                "Messages from NATS that were not ringmq frames (dropped).",
                &self.bad_frames,
            ),
            (
                "cluster_slow_consumer_total",
                "counter",
                "NATS slow-consumer events: NATS dropped messages this node read too slowly.",
                &self.slow_consumer,
            ),
            (
                "cluster_disconnects_total",
                "counter",
                "Times the link lost its NATS connection.",
                &self.disconnects,
            ),
            (
                "cluster_connects_total",
                "counter",
                "Times the link (re)connected to NATS.",
                &self.connects,
            ),
            (
                "cluster_connected",
                "gauge",
                "1 while the link is connected to NATS.",
                &self.connected,
            ),
            (
                "cluster_retained_put_total",
                "counter",
                "Retained messages written to the retained bucket.",
                &self.retained_put,
            ),
            (
                "cluster_retained_failed_total",
                "counter",
                "Retained messages that could not be written to the retained bucket.",
                &self.retained_failed,
            ),
            (
                "cluster_retained_in_total",
                "counter",
                "Retained messages read from the retained bucket.",
                &self.retained_in,
            ),
            (
                "cluster_interest_sync_failed_total",
                "counter",
                "Writes of this node's interest to the interest bucket that failed (retried).",
                &self.interest_sync_failed,
            ),
            (
                "cluster_sessions_claimed_total",
                "counter",
                "Sessions this node wrote to the session registry (one per CONNECT here).",
                &self.sessions_claimed,
            ),
            (
                "cluster_sessions_taken_over_total",
                "counter",
                "Sessions here ended because their client connected to another node.",
                &self.sessions_taken_over,
            ),
            (
                "cluster_registry_failed_total",
                "counter",
                "Writes to the session registry that failed.",
                &self.registry_failed,
            ),
            (
                "cluster_claims_refused_total",
                "counter",
                "CONNECTs refused because a CONNECT with the same client id on another node registered first (or the registry's queue was full).",
                &self.claims_refused,
            ),
            (
                "cluster_claims_unregistered_total",
                "counter",
                "CONNECTs that went on without the session registry (NATS or JetStream unreachable).",
                &self.claims_unregistered,
            ),
            (
                "cluster_handovers_in_total",
                "counter",
                "Sessions handed over to this node by the node that held them.",
                &self.handovers_in,
            ),
            (
                "cluster_handovers_out_total",
                "counter",
                "Sessions this node handed over to another node.",
                &self.handovers_out,
            ),
            (
                "cluster_handovers_failed_total",
                "counter",
                "Sessions another node held that could not be handed over (that node did not answer, or its image was refused): the client started a new one.",
                &self.handovers_failed,
            ),
            (
                "cluster_handover_left_out_total",
                "counter",
                "Queued messages left out of a handed-over session to keep its image within its bound.",
                &self.handover_left_out,
            ),
            (
                "cluster_recovered_sessions_checked_total",
                "counter",
                "Sessions recovered from the log at startup whose key in the session registry was read (and written where it named no node).",
                &self.recovered_sessions_checked,
            ),
            (
                "cluster_recovered_sessions_dropped_total",
                "counter",
                "Sessions recovered from the log at startup and ended because the session registry names another node (their client connected there while this node was down).",
                &self.recovered_sessions_dropped,
            ),
            (
                "cluster_stub_forwarded_total",
                "counter",
                "Deliveries the stub of a session that moved to another node forwarded to it.",
                &self.stub_forwarded,
            ),
            (
                "cluster_forwarded_in_total",
                "counter",
                "Deliveries forwarded here by the stub of a session that moved here.",
                &self.moved_in,
            ),
            (
                "cluster_forwarded_dropped_total",
                "counter",
                "Forwarded deliveries dropped: their session did not arrive here within 10 s, or past 65,536 waiting per shard.",
                &self.early_dropped,
            ),
            (
                "cluster_group_unserved_total",
                "counter",
                "Messages for a shared group that came to this node after its last member here left.",
                &self.group_unserved,
            ),
            (
                "cluster_moved_duplicates_total",
                "counter",
                "Copies not delivered to a session that moved here from another node: it had the message there, or got it here both straight and through the stub.",
                &self.moved_duplicates,
            ),
            (
                "cluster_moved_seen_forgotten_total",
                "counter",
                "Publishes a session that moved here forgot it had got (past 65,536 remembered): a second copy of one would be delivered.",
                &self.moved_seen_forgotten,
            ),
            (
                "cluster_moved_held_let_go_total",
                "counter",
                "Copies a session that moved here held for their turn and delivered early, past 16,384 held: they may come before an older one of their publisher.",
                &self.moved_held_let_go,
            ),
            (
                "cluster_remote_filters",
                "gauge",
                "Filters in other nodes' interest.",
                &self.remote_filters,
            ),
            (
                "cluster_remote_nodes",
                "gauge",
                "Other nodes with interest.",
                &self.remote_nodes,
            ),
            (
                "cluster_nodes_alive",
                "gauge",
                "Other nodes heard from within the node timeout (5 s).",
                &self.nodes_alive,
            ),
            (
                "cluster_nodes_silent",
                "gauge",
                "Other nodes with interest left out of routing: not heard from within the node timeout.",
                &self.nodes_silent,
            ),
            (
                "cluster_nodes_left_out",
                "gauge",
                "Other nodes past the 64 routed to.",
                &self.nodes_left_out,
            ),
            (
                "cluster_resent_total",
                "counter",
                "QoS 1/2 messages sent to a node again: no ack came for them in time, or the NATS connection was new.",
                &self.resent,
            ),
            (
                "cluster_duplicates_dropped_total",
                "counter",
                "QoS 1/2 messages from another node dropped here: routed before (a resend).",
                &self.duplicates_dropped,
            ),
            (
                "cluster_gaps_dropped_total",
                "counter",
                "QoS 1/2 messages from another node dropped here: one before them was missing (the resend brings both).",
                &self.gaps_dropped,
            ),
            (
                "cluster_acks_sent_total",
                "counter",
                "Acks this node sent to other nodes for their QoS 1/2 messages.",
                &self.acks_sent,
            ),
            (
                "cluster_acks_received_total",
                "counter",
                "Acks other nodes sent this node for its QoS 1/2 messages.",
                &self.acks_received,
            ),
            (
                "cluster_window_full_waits_total",
                "counter",
                "Times the link waited for acks: a node's window of unacknowledged QoS 1/2 messages was full.",
                &self.window_full_waits,
            ),
            (
                "cluster_dropped_window_full_total",
                "counter",
                "QoS 1/2 messages for a node dropped: its window was full while NATS was disconnected or the node away.",
                &self.dropped_window_full,
            ),
            (
                "cluster_windows_dropped_total",
                "counter",
                "Unacknowledged QoS 1/2 messages dropped with the window of a node that left the interest table.",
                &self.windows_dropped,
            ),
            (
                "cluster_unacked",
                "gauge",
                "QoS 1/2 messages sent to other nodes and not acknowledged yet.",
                &self.unacked,
            ),
        ] {
            one_sample(out, name, kind, help, c(v));
        }
    }
}

/// Client ids noted lately, each with a value: what a note says holds for twice a
/// stub's life ([`STUB_GRACE`]). Bounded by the registry's queue ([`CLAIMS_QUEUE`]): at
/// the bound the stale notes go, and a new one is not kept if none were stale.
struct Recent<V> {
    notes: Mutex<HashMap<Box<str>, (V, Instant)>>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            notes: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Copy> Recent<V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, (V, Instant)>> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn insert(&self, client_id: &str, v: V) {
        let now = Instant::now();
        let mut notes = self.lock();
        if notes.len() >= CLAIMS_QUEUE {
            notes.retain(|_, (_, since)| now.duration_since(*since) < 2 * STUB_GRACE);
            if notes.len() >= CLAIMS_QUEUE {
                return;
            }
        }
        notes.insert(client_id.into(), (v, now));
    }

    fn get(&self, client_id: &str) -> Option<V> {
        let notes = self.lock();
        let (v, since) = notes.get(client_id)?;
        (since.elapsed() < 2 * STUB_GRACE).then_some(*v)
    }

    fn take(&self, client_id: &str) -> Option<V> {
        let (v, since) = self.lock().remove(client_id)?;
        (since.elapsed() < 2 * STUB_GRACE).then_some(v)
    }
}

/// What the shards and the link share.
pub struct ClusterLink {
    pub settings: ClusterSettings,
    /// The outbound queue (the link holds the receiver).
    out: tokio::sync::mpsc::Sender<Outbound>,
    /// Other nodes' interest.
    remote: ArcSwap<RemoteInterest>,
    /// Each shard's interest changes not yet taken by the link (only try-locked by the
    /// shard; bounded by the shard's advertised entries, a change cancelling its opposite).
    interest: Vec<Mutex<Vec<InterestChange>>>,
    /// Rung when a shard has interest changes for the link.
    interest_rung: tokio::sync::Notify,
    /// Each shard's session events not yet taken by the link (as `interest`).
    sessions: Vec<Mutex<Vec<SessionEvent>>>,
    sessions_rung: tokio::sync::Notify,
    /// Client ids whose sessions other nodes are handing over, with the shard that
    /// claimed each and since when: what their stubs forward goes to that shard only.
    arriving: Recent<usize>,
    /// Client ids whose sessions left this node lately, leaving stubs here, and when.
    stubbed: Recent<()>,
    /// CONNECTs for the session registry (the link takes the receiver once).
    claims: tokio::sync::mpsc::Sender<ClaimRequest>,
    claims_rx: Mutex<Option<tokio::sync::mpsc::Receiver<ClaimRequest>>>,
    /// Orders the session events of all shards (the second field of each).
    session_seq: AtomicU64,
    /// Each shard's inbound messages handed over and not yet routed.
    inbound: Vec<AtomicUsize>,
    /// Counts the link's connections to NATS: the bucket watchers start again on each
    /// (a watch on a server that went away may never end by itself).
    pub connections: tokio::sync::watch::Sender<u64>,
    pub stats: ClusterStats,
}

/// What `Outbound` could not be queued.
pub enum Refused {
    Full(Outbound),
    Closed,
}

impl ClusterLink {
    /// The link's shared half and the receiver of the outbound queue (for
    /// [`link::start`]).
    pub fn new(
        settings: ClusterSettings,
        shards: usize,
    ) -> (Arc<ClusterLink>, tokio::sync::mpsc::Receiver<Outbound>) {
        let (out, rx) = tokio::sync::mpsc::channel(settings.queue);
        let (claims, claims_rx) = tokio::sync::mpsc::channel(CLAIMS_QUEUE);
        let link = ClusterLink {
            settings,
            out,
            remote: ArcSwap::from_pointee(RemoteInterest::default()),
            interest: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            interest_rung: tokio::sync::Notify::new(),
            sessions: (0..shards).map(|_| Mutex::new(Vec::new())).collect(),
            sessions_rung: tokio::sync::Notify::new(),
            claims,
            claims_rx: Mutex::new(Some(claims_rx)),
            arriving: Recent::default(),
            stubbed: Recent::default(),
            session_seq: AtomicU64::new(1),
            inbound: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
            connections: tokio::sync::watch::Sender::new(0),
            stats: ClusterStats::default(),
        };
        (Arc::new(link), rx)
    }

    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// Other nodes' interest now.
    pub fn remote(&self) -> Arc<RemoteInterest> {
        self.remote.load_full()
    }

    /// Queues a message for NATS without waiting.
    pub fn send(&self, o: Outbound) -> Result<(), Refused> {
        use tokio::sync::mpsc::error::TrySendError;
        self.out.try_send(o).map_err(|e| match e {
            TrySendError::Full(o) => Refused::Full(o),
            TrySendError::Closed(_) => Refused::Closed,
        })
    }

    /// Hands the link `changes` of shard `shard`, unless the link holds them right now
    /// (then they stay in `changes` for the next turn). Never waits.
    pub fn hand_interest(&self, shard: usize, changes: &mut Vec<InterestChange>) {
        if changes.is_empty() {
            return;
        }
        let Ok(mut pending) = self.interest[shard].try_lock() else {
            return;
        };
        pending.append(changes);
        drop(pending);
        self.interest_rung.notify_one();
    }

    /// Hands a CONNECT to the session registry without waiting; false if its queue is
    /// full (or the link has stopped).
    pub fn claim(&self, request: ClaimRequest) -> bool {
        self.claims.try_send(request).is_ok()
    }

    /// The receiver of the CONNECTs, for the link (once).
    pub fn take_claims(&self) -> Option<tokio::sync::mpsc::Receiver<ClaimRequest>> {
        self.claims_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Shard `shard` claimed the session of `client_id`, which another node is asked
    /// for. Kept for a stub's life past the claim.
    pub fn arriving(&self, client_id: &str, shard: usize) {
        self.arriving.insert(client_id, shard);
    }

    /// The shard that claimed the session of `client_id` lately, if one did.
    pub fn arriving_at(&self, client_id: &str) -> Option<usize> {
        self.arriving.get(client_id)
    }

    /// The session of `client_id` left this node for another, leaving a stub here.
    pub fn stub_left(&self, client_id: &str) {
        self.stubbed.insert(client_id, ());
    }

    /// Whether the session of `client_id` may still have a stub here; forgets it.
    pub fn take_stub(&self, client_id: &str) -> bool {
        self.stubbed.take(client_id).is_some()
    }

    /// The next number of the session events' order.
    pub fn next_session_seq(&self) -> u64 {
        self.session_seq.fetch_add(1, Relaxed)
    }

    /// Hands the link `events` of shard `shard`, as [`ClusterLink::hand_interest`].
    pub fn hand_sessions(&self, shard: usize, events: &mut Vec<SessionEvent>) {
        if events.is_empty() {
            return;
        }
        let Ok(mut pending) = self.sessions[shard].try_lock() else {
            return;
        };
        // Bounded: past it the oldest claims go unregistered (counted).
        let over = (pending.len() + events.len()).saturating_sub(SESSION_EVENTS_PER_SHARD);
        if over > 0 {
            let from_pending = over.min(pending.len());
            pending.drain(..from_pending);
            events.drain(..over - from_pending);
            self.stats.registry_failed.fetch_add(over as u64, Relaxed);
        }
        pending.append(events);
        drop(pending);
        self.sessions_rung.notify_one();
    }

    /// Shard `shard` routed `n` inbound messages.
    pub fn routed_inbound(&self, shard: usize, n: usize) {
        self.inbound[shard].fetch_sub(n, Relaxed);
    }
}
