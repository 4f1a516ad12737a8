//! The MQTT broker of one shard: the [`Service`] the runtime serves. Nothing here takes
//! a lock; what crosses shards is a [`Msg`] over the mesh.
//!
//! A [`Broker`] is made of parts, each with its own state and file, named by what it
//! holds: `sessions::Sessions` (sessions by slot and client id, the offline ones),
//! `registry::Registry` (the client ids whose home is this shard), `routing::Routes`
//! (the topic table), `interest::Interest` (what other shards subscribe to),
//! `retained::Retained`, `retained_cursor::RetainedCursors` (retained messages new
//! subscriptions are still to receive), `pressure::Pressure` (back-pressure),
//! `writer::Writer` (packets out, counted), `sys::Sys`, and the mesh messages waiting to
//! go (`Mail`).
//! The work on them is spread over files by stage, in the order a message passes
//! through them:
//!
//! - `input`: bytes → packets (the framer, held and claimed input), each packet to its
//!   handler; `client`: the broker's state for one connection; `throttle`: the
//!   per-client rate limits that stop reading from a client past its buckets.
//! - `connect`: CONNECT/CONNACK, DISCONNECT, wills, the end of a connection and of a
//!   session; `admission`: bans, connections per address, credentials (parked while the
//!   verification pool works), token expiry, reloads; `takeover`: the cross-shard
//!   protocol that finds a session wherever it lives (claim → takeover → hand-off, stubs
//!   and fences).
//! - `subscribe`: SUBSCRIBE/UNSUBSCRIBE over `routing`, `interest` and
//!   `retained`; `retained_cursor`: a new subscription's retained messages, sent at the
//!   subscriber's pace.
//! - `publish`: PUBLISH in; `routing`: where a message goes; `delivery`: one
//!   message to one session; `qos`: the acknowledgements of QoS 1 and 2, in-flight
//!   windows and queues; `writer`: the packets out; `authorize`: what the client's ACL
//!   refuses on each of these paths, and the answers it gets.
//! - `durable`: the shard's write-ahead log (`crate::store`): every change of durable
//!   state as a record, and what waits for records to be durable (acknowledgements,
//!   QoS 2 deliveries, other shards' answers); `recovery`: a shard's state rebuilt from
//!   its log at startup.
//! - `pressure`: back-pressure; `sys`: the `$SYS/broker/...` topics; `stats`: the
//!   counters and latency histograms; `top_topics`: the busiest topics by rate.
//! - `admin`: the control plane's requests (publish, listings, one client or session,
//!   kicks, retained messages), answered between loop turns with bounded work per turn;
//!   `events`: the connect and disconnect log lines and the webhook events.
//! - Vocabulary: `msg` (cross-shard messages), `session` (what a session holds),
//!   `topics` (the trie the topic table, the interest table and the retained store are
//!   made of), `config`.

mod admin;
mod admission;
mod authorize;
mod client;
mod cluster;
mod cluster_recovery;
mod config;
mod connect;
mod delivery;
mod durable;
mod events;
pub mod handover;
mod input;
mod interest;
mod msg;
pub mod node_arrival;
mod pressure;
mod publish;
mod qos;
mod recovery;
mod registry;
mod retained;
mod retained_cursor;
mod routing;
pub mod session;
mod sessions;
mod stats;
mod subscribe;
mod sys;
mod takeover;
mod throttle;
mod top_topics;
pub mod topics;
mod writer;

use std::collections::VecDeque;
use std::sync::Arc;

use ringmq_proto::mqtt::{Disconnect, Packet, Properties, Property, ReasonCode, Version};
use ringmq_shard::conn::{CloseReason, ConnKey};
use ringmq_shard::service::{Data, Service};

use admin::Admin;
pub use admin::{AdminRequest, Listing};
use admission::Admission;
pub use client::Client;
use client::{Phase, client_flag};
pub use config::{BrokerConfig, Guards, Shared};
use connect::Claim;
use durable::Durable;
use interest::Interest;
pub use msg::Msg;
use pressure::Pressure;
pub use recovery::{Recovery, plan as plan_recovery};
use registry::Registry;
use retained::Retained;
use retained_cursor::RetainedCursors;
pub use routing::Tally;
use routing::{Routes, Scratch};
use sessions::Sessions;
use stats::Latency;
pub use stats::{BrokerStats, ShardFigures};
use sys::Sys;
use throttle::Throttle;
use top_topics::TopTopics;
use writer::Writer;

use crate::control::webhook::WebhookSender;

/// What the runtime hands the broker: connections carrying a [`Client`] each, and the
/// mesh carrying [`Msg`]s.
pub type Io = ringmq_shard::io::Io<Client, Msg>;

/// The broker's latency histograms (`/debug/histograms`), a set per shard:
/// `publish_to_delivery`, from the loop turn in which a PUBLISH arrived to the submission
/// of that turn's sends (its deliveries on this shard).
/// `log_sync`, from a batch of the shard's log handed to the ring to the completion of
/// its `fdatasync`.
pub const HISTOGRAMS: &[&str] = &["publish_to_delivery", "log_sync"];
const PUBLISH_TO_DELIVERY: usize = 0;
const LOG_SYNC: usize = 1;

/// Where this shard stands among the others. Sets of shards are 128-bit masks (at most
/// `MAX_SHARDS` shards).
#[derive(Debug, Clone, Copy)]
struct Peers {
    /// This shard's number.
    id: usize,
    /// How many shards there are.
    count: usize,
}

impl Peers {
    /// Every shard's bit.
    fn all(self) -> u128 {
        u128::MAX >> (128 - self.count.min(128))
    }

    /// The other shards.
    fn others(self) -> impl Iterator<Item = usize> {
        (0..self.count).filter(move |&s| s != self.id)
    }

    /// The home shard of a client id (or of a retained topic).
    fn home_of(self, client_id: &str) -> usize {
        home_shard(client_id, self.count)
    }
}

/// The home shard among `count` of a client id (its registry entry) or of a retained
/// topic (its log): FNV-1a, the same on every shard and every run.
pub fn home_shard(key: &str, count: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % count.max(1) as u64) as usize
}

/// Mesh messages waiting to go at the end of the turn.
#[derive(Default)]
struct Mail {
    /// Messages this shard sends itself, handled in order as another shard's would be.
    local: VecDeque<Msg>,
    /// Messages for other shards made where no `Io` is at hand (interest changes).
    outbox: Vec<(usize, Msg)>,
}

/// The MQTT broker of one shard.
pub struct Broker {
    /// Settings, every shard's figures, the retained-message clock: what all shards share.
    shared: Arc<Shared>,
    /// This shard among the others.
    peers: Peers,
    /// This shard's counters.
    stats: Arc<BrokerStats>,
    /// Publish-to-delivery latency.
    latency: Latency,
    /// The shard clock at the last event (ms).
    clock_ms: u64,
    /// The sessions here.
    sessions: Sessions,
    /// The client ids whose home is this shard: who owns each session, claims in progress.
    registry: Registry,
    /// The topic table of this shard's subscriptions.
    routes: Routes,
    /// Other shards' interest, this shard's advertised interest, SUBACKs waiting for it.
    interest: Interest,
    /// The retained messages.
    retained: Retained,
    /// The retained messages new subscriptions are still to receive.
    retained_cursors: RetainedCursors,
    /// The broker's side of back-pressure.
    pressure: Pressure,
    /// Mesh messages waiting to go.
    mail: Mail,
    /// Packets out.
    writer: Writer,
    /// Buffers every publish reuses.
    scratch: Scratch,
    /// When `$SYS` was last published.
    sys: Sys,
    /// The busiest topics published here.
    top_topics: TopTopics,
    /// The control plane's requests in progress.
    admin: Admin,
    /// Where events go, when webhooks are configured.
    webhooks: Option<WebhookSender>,
    /// Who may connect, the verification pool's answers, token expiries.
    admission: Admission,
    /// Clients' rate buckets.
    throttle: Throttle,
    /// The shard's log, and what waits for it.
    durable: Durable,
    /// The cluster's side of this shard (`--cluster`); `None` on a single node.
    cluster: Option<Box<cluster::ClusterPart>>,
}

impl Broker {
    /// The broker of shard `shard_id` of `shared.shards.len()`, with no log (durability
    /// `none`). `wake` rings its shard's doorbell (for answers from the verification
    /// pool).
    pub fn new(shard_id: usize, shared: Arc<Shared>, wake: Arc<dyn Fn() + Send + Sync>) -> Broker {
        Broker::with_log(shard_id, shared, wake, None)
    }

    /// The broker of shard `shard_id`, writing its durable state to `log` (a fresh or a
    /// recovered store; see `Broker::restore` for the state a recovered one holds).
    pub fn with_log(
        shard_id: usize,
        shared: Arc<Shared>,
        wake: Arc<dyn Fn() + Send + Sync>,
        log: Option<crate::store::ring_driver::RingDriver>,
    ) -> Broker {
        let peers = Peers {
            id: shard_id,
            count: shared.shards.len(),
        };
        let figures = shared.shards[shard_id].clone();
        let sessions = Sessions::new(shared.sessions.clone());
        let cluster = shared
            .cluster
            .clone()
            .map(|link| Box::new(cluster::ClusterPart::new(link)));
        let mut interest = Interest::new(peers);
        interest.cluster = cluster.is_some();
        let admission = Admission::new(&shared, wake);
        figures.broker.auth_generation.set(admission.generation());
        Broker {
            admission,
            throttle: Throttle::default(),
            peers,
            writer: Writer::new(figures.broker.clone()),
            stats: figures.broker,
            latency: Latency::new(figures.broker_hists),
            clock_ms: 0,
            sessions,
            registry: Registry::new(),
            routes: Routes::default(),
            interest,
            retained: Retained::default(),
            retained_cursors: RetainedCursors::default(),
            pressure: Pressure::default(),
            mail: Mail::default(),
            scratch: Scratch::default(),
            sys: Sys::default(),
            durable: Durable::new(log),
            top_topics: TopTopics::default(),
            admin: Admin::default(),
            webhooks: shared.webhooks.clone(),
            cluster,
            shared,
        }
    }

    pub(super) fn config(&self) -> &BrokerConfig {
        &self.shared.config
    }

    /// Sends `msg` to shard `to`; to itself, it is handled at the end of this turn.
    pub(super) fn send(&mut self, io: &mut Io, to: usize, msg: Msg) {
        if to == self.peers.id {
            self.mail.local.push_back(msg);
        } else {
            io.send_to_shard(to, msg);
        }
    }

    /// Ends a connection for a protocol violation: MQTT 5 clients get a DISCONNECT with
    /// the reason (and a reason string), 3.1.1 clients are just closed.
    pub(super) fn protocol_error(
        &mut self,
        io: &mut Io,
        key: ConnKey,
        code: ReasonCode,
        why: &str,
    ) {
        tracing::info!(
            shard = self.peers.id,
            code = code.0,
            "protocol error: {why}"
        );
        self.disconnect(io, key, code, why, CloseReason::ProtocolError);
    }

    /// Sends a server DISCONNECT (MQTT 5 only) and closes.
    pub(super) fn disconnect(
        &mut self,
        io: &mut Io,
        key: ConnKey,
        code: ReasonCode,
        why: &str,
        reason: CloseReason,
    ) {
        let (version, connected) = match io.state(key) {
            Some(c) => (c.version(), c.phase == Phase::Connected),
            None => return,
        };
        if version == Version::V5 && connected {
            let props = [Property::ReasonString(why)];
            let full = Packet::Disconnect(Disconnect {
                reason: code,
                properties: Properties::List(&props),
            });
            let bare = Packet::Disconnect(Disconnect {
                reason: code,
                properties: Properties::EMPTY,
            });
            self.writer.answer(io, key, version, &full, &bare);
        }
        io.close(key, reason);
    }

    /// Handles the messages this shard sent itself, and sends the outbox.
    pub(super) fn drain_local_inbox(&mut self, io: &mut Io) {
        loop {
            self.interest.flush(&mut self.mail);
            for (to, m) in self.mail.outbox.drain(..) {
                io.send_to_shard(to, m);
            }
            let Some(m) = self.mail.local.pop_front() else {
                break;
            };
            let id = self.peers.id;
            self.handle_msg(io, id, m);
        }
    }

    /// A message from shard `from` (or from this shard itself, through `Mail::local`).
    pub(super) fn handle_msg(&mut self, io: &mut Io, from: usize, msg: Msg) {
        match msg {
            Msg::Publish {
                msg,
                ticket,
                origin,
                again,
            } => {
                self.deliver_remote(io, from, &msg, ticket, origin, again);
            }
            Msg::PeerReleased { id } => self.on_peer_released(id),
            Msg::ShareDeliver { share, msg, ticket } => {
                self.deliver_share(io, from, &share, &msg, ticket);
            }
            Msg::Tallied(t) => {
                let msg::Tallied { msg, share, tally } = *t;
                // An API publish: answered with the sessions reached, not held for the
                // log (the HTTP answer says where it went, not that it is durable).
                let reached = match &share {
                    Some(share) => u64::from(self.deliver_share(io, from, share, &msg, None)),
                    None => self.deliver_remote(io, from, &msg, None, 0, false) as u64,
                };
                // The API may have given up waiting: nobody to tell then.
                let _ = tally.send(reached);
            }
            Msg::Retain {
                msg,
                version,
                ticket,
            } => self.on_retain(io, from, msg, version, ticket),
            Msg::Durable { ticket, refused } => self.on_durable_answer(io, ticket, refused),
            Msg::MovedDurable { key } => self.on_moved_durable(key),
            Msg::Store(done) => self.on_store_job(io, *done),
            Msg::Interest(i) => {
                for change in i.changes.iter() {
                    self.interest.apply(from, change);
                    if let Some(share) = &change.share {
                        self.settle_share_turn(share);
                    }
                }
                self.send(io, from, Msg::InterestAck { seq: i.seq });
            }
            Msg::Barrier { seq } => self.send(io, from, Msg::InterestAck { seq }),
            Msg::InterestAck { seq } => {
                self.interest.acked[from] = self.interest.acked[from].max(seq);
                self.release_subacks(io);
            }
            Msg::Claim {
                client_id,
                claimant,
            } => self.on_claim(io, client_id, claimant),
            Msg::Granted {
                conn,
                client_id,
                epoch,
            } => {
                self.finish_connect(io, conn, &client_id, epoch, Claim::Granted);
                self.claim_settled(io, client_id, epoch);
            }
            Msg::Takeover(t) => self.on_takeover(io, *t),
            Msg::Settled { client_id, .. } => self.on_settled(io, &client_id),
            Msg::Handoff(h) => {
                let msg::Handoff {
                    conn,
                    client_id,
                    session,
                    stub,
                    epoch,
                } = *h;
                let claim = Claim::TakenOver {
                    session,
                    stub: stub.map(|s| (from, s)),
                };
                self.finish_connect(io, conn, &client_id, epoch, claim);
                self.claim_settled(io, client_id, epoch);
            }
            Msg::Release {
                client_id,
                owner,
                epoch,
            } => self.on_release(&client_id, owner, epoch),
            Msg::Moved {
                client_id,
                old,
                stub,
            } => self.on_moved(io, from, client_id, old, stub),
            Msg::Fence { stub } => self.on_fence(io, from, stub),
            Msg::FenceMark { client_id } => self.on_arrival_progress(Some(from), &client_id),
            Msg::StubGone { client_id } => self.on_arrival_progress(None, &client_id),
            Msg::Forward(f) => self.deliver_forwarded(io, from, *f),
        }
    }
}

impl Service for Broker {
    type ConnState = Client;
    type Msg = Msg;
    type Request = AdminRequest;

    fn on_open(&mut self, io: &mut Io, key: ConnKey) {
        self.clock_ms = io.now_ms();
        let at = io.now_ms() + self.config().connect_timeout_ms;
        io.set_deadline(key, at);
        self.admission_opened(io, key);
        if let Some(cn) = io.peer_certificate_cn(key) {
            tracing::debug!(shard = io.shard_id(), cn, "TLS client certificate verified");
        }
    }

    fn on_data(&mut self, io: &mut Io, key: ConnKey, data: Data<'_>) {
        self.clock_ms = io.now_ms();
        self.process_input(io, key, data.bytes);
    }

    fn on_close(&mut self, io: &mut Io, key: ConnKey, state: Client, reason: CloseReason) {
        self.clock_ms = io.now_ms();
        self.admission_closed(io, key, &state);
        self.connection_closed(io, key, state, reason);
    }

    fn on_deadline(&mut self, io: &mut Io, key: ConnKey) {
        self.clock_ms = io.now_ms();
        let connected = io.state(key).is_some_and(|c| c.phase == Phase::Connected);
        if connected && io.reading_stopped(key) {
            // Back-pressure stopped reading it: whatever it sent waits in its socket, so
            // its keep-alive is not its fault. Looked at again once it is read.
            let ka = io.state(key).map_or(0, |c| c.keep_alive_ms());
            let at_ms = io.now_ms() + ka.max(1000);
            io.set_deadline(key, at_ms);
            return;
        }
        if connected {
            self.disconnect(
                io,
                key,
                ReasonCode::KEEP_ALIVE_TIMEOUT,
                "keep alive timeout",
                CloseReason::Timeout,
            );
        } else {
            io.close(key, CloseReason::Timeout);
        }
    }

    fn on_message(&mut self, io: &mut Io, from: usize, msg: Msg) {
        self.clock_ms = io.now_ms();
        self.handle_msg(io, from, msg);
    }

    fn on_resume(&mut self, io: &mut Io, key: ConnKey) {
        self.take_up_held(io, key);
    }

    fn on_drained(&mut self, io: &mut Io, key: ConnKey) {
        self.clock_ms = io.now_ms();
        if let Some(sid) = io.state(key).and_then(|c| c.session) {
            self.send_retained(io, sid);
        }
    }

    fn on_turn_end(&mut self, io: &mut Io) {
        self.take_verified(io);
        self.run_jobs(io);
        self.admin.new_turn();
        self.drain_local_inbox(io);
        self.durable_turn_end(io);
        self.drain_local_inbox(io);
        self.cluster_turn_end(io);
        self.report_load(io);
    }

    fn on_file_done(&mut self, io: &mut Io, done: ringmq_shard::disk::FileDone) {
        self.clock_ms = io.now_ms();
        self.on_log_written(io, done);
    }

    fn on_blocking_done(&mut self, io: &mut Io, result: Msg) {
        self.clock_ms = io.now_ms();
        self.handle_msg(io, self.peers.id, result);
    }

    fn is_idle(&self) -> bool {
        self.durable.is_idle()
    }

    fn on_request(&mut self, io: &mut Io, request: AdminRequest) {
        self.clock_ms = io.now_ms();
        self.handle_request(io, request);
    }

    fn on_peer_addr(&mut self, io: &mut Io, key: ConnKey, addr: Option<std::net::SocketAddr>) {
        self.clock_ms = io.now_ms();
        self.address_came(key, addr);
    }

    fn on_turn_flushed(&mut self, turn_us: u64) {
        self.latency.turn_flushed(turn_us);
        self.set_gauges();
    }

    fn on_tick(&mut self, io: &mut Io) {
        #[cfg(debug_assertions)]
        {
            // The running count must match a recount (tests run debug builds).
            let recount: usize = self
                .sessions
                .iter()
                .filter(|s| s.conn.is_some())
                .map(|s| s.queue_len())
                .sum();
            assert_eq!(
                self.pressure.waiting, recount,
                "deliveries waiting for connected clients"
            );
        }
        self.clock_ms = io.now_ms();
        self.durable.set_clock(self.clock_ms);
        self.log_figures();
        self.pick_up_reload(io);
        self.expire_tokens(io);
        self.sweep_buckets(io);
        if self.peers.id == 0 {
            self.shared.limits.flapping.sweep(crate::limits::now_ms());
        }
        self.top_topics.tick(self.clock_ms);
        self.expire_sessions(io);
        self.evict_stalled_retained(io);
        self.registry.compact();
        self.interest.withdraw_idle(self.clock_ms);
        self.publish_sys(io);
        self.drain_local_inbox(io);
        self.latency.publish();
    }

    fn on_shutdown(&mut self, io: &mut Io) {
        self.admin.clear();
        for key in io.open_keys() {
            if let Some(c) = io.state(key) {
                // Wills are not published when the whole server stops.
                c.set_flag(client_flag::GRACEFUL, true);
            }
            self.disconnect(
                io,
                key,
                ReasonCode::SERVER_SHUTTING_DOWN,
                "server shutting down",
                CloseReason::GoingAway,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_shard_is_stable_and_in_range() {
        for count in 1..8 {
            for id in ["a", "client-1", "", "ünïcode"] {
                let peers = Peers { id: 0, count };
                let h = peers.home_of(id);
                assert!(h < count);
                assert_eq!(
                    h,
                    Peers {
                        id: count - 1,
                        count
                    }
                    .home_of(id)
                );
            }
        }
        let peers = Peers { id: 0, count: 1000 };
        assert_ne!(peers.home_of("a"), peers.home_of("b"));
        assert_eq!(Peers { id: 1, count: 3 }.all(), 0b111);
        assert_eq!(Peers { id: 0, count: 128 }.all(), u128::MAX);
        assert_eq!(
            Peers { id: 1, count: 3 }.others().collect::<Vec<_>>(),
            [0, 2]
        );
    }
}
