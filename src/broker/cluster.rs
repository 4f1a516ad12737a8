//! The broker's side of the cluster (`crate::cluster`): what a shard hands the link
//! (messages other nodes want, its interest changes) and what it takes from it
//! (messages from other nodes, retained messages from the retained bucket). Nothing
//! here waits: the outbound queue is tried, and what it has no room for is dropped (QoS
//! 0, counted) or held in order (QoS 1/2) while the shard pauses its publishers.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use ringmq_proto::mqtt::QoS;
use ringmq_proto::topic;

use super::admin::Reply;
use super::connect::Claim;
use super::delivery::Src;
use super::handover;
use super::node_arrival::{Admit, NodeArrival};
use super::routing::Scope;
use super::session::{
    Message, MovingSession, PubNumber, Queued, Session, SessionId, SubIds, SubRef,
};
use super::{Broker, Io};
use crate::cluster::remote::{Reach, RemoteInterest};
use crate::cluster::{
    ClaimOutcome, ClaimRequest, ClusterLink, ClusterStats, Inbound, InterestChange, Outbound,
    Refused, STUB_GRACE, SessionDelivery, SessionEvent,
};
use crate::store::record::EndReason;
use crate::store::{Record, SessionKey};
use ringmq_proto::mqtt::{ReasonCode, Version};
use ringmq_shard::conn::{CloseReason, ConnKey};

/// Inbound messages a shard routes in one turn.
const INBOUND_PER_TURN: usize = 1024;

/// A shard's cluster state.
pub(super) struct ClusterPart {
    link: Arc<ClusterLink>,
    /// QoS 1/2 messages the outbound queue had no room for, oldest first; at most the
    /// queue's bound (`--cluster-queue`), past which they are dropped and counted.
    held: VecDeque<Outbound>,
    /// Messages from other nodes not routed yet, and since when the oldest waits.
    inbox: VecDeque<Inbound>,
    inbox_since_ms: u64,
    /// Interest changes of this shard not yet handed to the link.
    pub changes: Vec<InterestChange>,
    /// Sessions claimed and released here, not yet handed to the link.
    sessions: Vec<SessionEvent>,
    /// Sessions handed over by other nodes, by the connection whose CONNECT claimed
    /// them, until its claim on this node is settled (at most one per connection in
    /// its CONNECT).
    arrivals: HashMap<ConnKey, Box<MovingSession>>,
    /// Stubs of sessions that moved to other nodes, with when each ends (shard clock,
    /// ms), oldest first.
    stubs: VecDeque<(u64, SessionId)>,
    /// Deliveries a stub on another node forwarded before the session it forwards to
    /// arrived here (its image still on the way), with when each came (shard clock,
    /// ms); at most [`EARLY_MAX`], kept for [`STUB_GRACE`].
    early: VecDeque<(u64, Box<str>, Queued)>,
    /// Sessions that moved here from other nodes, with when their stubs there stop
    /// forwarding (shard clock, ms), oldest first: what they hold goes then, and one
    /// `STUB_GRACE` later what they know of their arrival.
    holding: VecDeque<(u64, Box<str>)>,
    /// This node's [`node_hash`](crate::cluster::node_hash) and the number of this
    /// shard's next publish (see [`PubNumber`]).
    own: u32,
    next_number: u64,
    /// Per publishing node and shard, the highest number routed here: what a session
    /// leaving this shard for another node has had (one shard's messages are routed in
    /// the order it published them). At most nodes × shards entries.
    routed: HashMap<(u32, u16), u64>,
}

/// Forwarded deliveries a shard keeps for sessions still arriving; past it the oldest
/// is dropped (counted).
const EARLY_MAX: usize = 65_536;

impl ClusterPart {
    pub fn new(link: Arc<ClusterLink>) -> ClusterPart {
        ClusterPart {
            held: VecDeque::new(),
            inbox: VecDeque::new(),
            inbox_since_ms: 0,
            changes: Vec::new(),
            sessions: Vec::new(),
            arrivals: HashMap::new(),
            stubs: VecDeque::new(),
            early: VecDeque::new(),
            holding: VecDeque::new(),
            own: crate::cluster::node_hash(link.node_id()),
            next_number: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64),
            routed: HashMap::new(),
            link,
        }
    }

    /// The outbound queue is full and messages wait here: the shard is under pressure.
    pub fn backlogged(&self) -> bool {
        !self.held.is_empty()
    }
}

/// Counts what `a` said since it was last counted.
fn count_arrival(stats: &ClusterStats, a: &mut NodeArrival, admit: Admit) {
    if admit == Admit::Duplicate {
        stats.moved_duplicates.fetch_add(1, Relaxed);
    }
    let forgotten = std::mem::take(&mut a.forgotten);
    stats.moved_seen_forgotten.fetch_add(forgotten, Relaxed);
    let let_go = std::mem::take(&mut a.let_go);
    stats.moved_held_let_go.fetch_add(let_go, Relaxed);
}

/// Queues a delivery the stub of `session` on its old node forwarded before the session
/// was installed here, unless it got that message already. (Nothing is held yet: what
/// comes straight is not for the session before it is installed.)
fn enqueue_forwarded(stats: &ClusterStats, session: &mut Session, q: Queued, max: usize) {
    let e = session.extra_mut();
    if let (Some(a), Some(n)) = (e.from_node.as_mut(), q.msg.number) {
        let admit = a.admit_forwarded(n, &mut Vec::new());
        count_arrival(stats, a, admit);
        if admit == Admit::Duplicate {
            return;
        }
    }
    e.enqueue(q, max, |_| {});
}

/// Where a message published here goes in the cluster.
pub(super) struct ClusterRoute {
    table: Arc<RemoteInterest>,
    reach: Reach,
    /// Shared groups this shard picked another node for: (group, the node's bit).
    groups: Vec<(Arc<str>, u64)>,
}

impl ClusterPart {
    /// Queues `o` for the link behind what is held, or holds it while the queue is
    /// full (a QoS 0 one, `qos`, is dropped instead). Why it was dropped, if it was.
    fn queue(&mut self, io: &mut Io, o: Outbound, qos: QoS) -> Option<&'static str> {
        let stats = &self.link.stats;
        let refused = if self.held.is_empty() {
            match self.link.send(o) {
                Ok(()) | Err(Refused::Closed) => return None,
                Err(Refused::Full(o)) => o,
            }
        } else {
            o
        };
        if qos == QoS::AtMostOnce {
            stats.dropped_qos0_queue_full.fetch_add(1, Relaxed);
            return Some("cluster_queue_full");
        }
        if self.held.len() >= self.link.settings.queue {
            stats.dropped_held_full.fetch_add(1, Relaxed);
            return Some("cluster_queue_full");
        }
        stats.held_queue_full.fetch_add(1, Relaxed);
        self.held.push_back(refused);
        io.wake_at(io.now_ms() + 1);
        None
    }
}

impl Broker {
    /// Which other nodes a message published here goes to; `None` without a cluster
    /// and for `$` topics (`$SYS` is each node's own). The message gets its number.
    pub(super) fn cluster_route(&mut self, src: &mut Src<'_>) -> Option<ClusterRoute> {
        let part = self.cluster.as_mut()?;
        if src.topic.starts_with('$') {
            return None;
        }
        let n = PubNumber {
            node: part.own,
            shard: self.peers.id as u16,
            n: part.next_number,
        };
        part.next_number += 1;
        src.number = Some(n);
        // Kept already (a retained message, one from the API): the copy that is routed
        // carries the number.
        if let Some(m) = &src.shared {
            src.shared = Some(Arc::new(m.numbered(n)));
        }
        let table = part.link.remote();
        let reach = table.reach(src.topic);
        Some(ClusterRoute {
            table,
            reach,
            groups: Vec::new(),
        })
    }

    /// Picks, for each shared group that matches the message of `src` and has members
    /// on other nodes, the node that delivers it: one of those nodes, or this one if it
    /// has members too (`groups`: this node's matching groups), at random. The groups
    /// picked elsewhere leave `groups` for `route.groups`.
    pub(super) fn cluster_groups(
        &mut self,
        src: &Src<'_>,
        groups: &mut Vec<(Arc<str>, bool, u128)>,
        route: &mut ClusterRoute,
    ) {
        if !route.reach.groups {
            return;
        }
        let mut remote = Vec::new();
        route.table.groups(src.topic, &mut remote);
        for (share, nodes) in remote {
            let here = groups.iter().position(|g| g.0 == share);
            let n = nodes.count_ones() + u32::from(here.is_some());
            let mut pick = fastrand::u32(..n);
            if pick == nodes.count_ones() {
                continue;
            }
            let mut bits = nodes;
            while pick > 0 {
                bits &= bits - 1;
                pick -= 1;
            }
            if let Some(i) = here {
                groups.swap_remove(i);
            }
            route.groups.push((share, 1u64 << bits.trailing_zeros()));
        }
    }

    /// Hands a message published here to the link: for the nodes with plain interest
    /// (and the retained bucket, which keeps it for every node, if it is retained), and
    /// for each shared group picked elsewhere.
    pub(super) fn cluster_send(&mut self, io: &mut Io, src: &mut Src<'_>, route: ClusterRoute) {
        let plain = route.reach.nodes != 0 || src.retain;
        if !plain && route.groups.is_empty() {
            return;
        }
        let shard = self.peers.id as u16;
        let msg = src.shared();
        let Some(part) = self.cluster.as_mut() else {
            return;
        };
        let outbound = |nodes, share| Outbound {
            msg: msg.clone(),
            table: route.table.clone(),
            nodes,
            share,
            shard,
            forward: None,
        };
        let mut dropped = None;
        if plain {
            dropped = dropped.or(part.queue(io, outbound(route.reach.nodes, None), src.qos));
        }
        for (share, node) in route.groups {
            dropped = dropped.or(part.queue(io, outbound(node, Some(share)), src.qos));
        }
        if let Some(why) = dropped {
            self.event_dropped(None, src.topic, src.qos, why);
        }
    }

    /// At the end of a turn: held messages to the link, interest changes to the link,
    /// messages from other nodes routed.
    pub(super) fn cluster_turn_end(&mut self, io: &mut Io) {
        let id = self.peers.id;
        let Some(part) = self.cluster.as_mut() else {
            return;
        };
        while let Some(o) = part.held.pop_front() {
            match part.link.send(o) {
                Ok(()) => {}
                Err(Refused::Closed) => part.held.clear(),
                Err(Refused::Full(o)) => {
                    part.held.push_front(o);
                    break;
                }
            }
        }
        let now = io.now_ms();
        let mut ended = Vec::new();
        while part.stubs.front().is_some_and(|(at, _)| *at <= now) {
            ended.extend(part.stubs.pop_front().map(|(_, sid)| sid));
        }
        if let Some((at, _)) = part.stubs.front() {
            io.wake_at(*at);
        }
        let mut hold_over = Vec::new();
        while part.holding.front().is_some_and(|(at, _)| *at <= now) {
            hold_over.extend(part.holding.pop_front().map(|(_, id)| id));
        }
        if let Some((at, _)) = part.holding.front() {
            io.wake_at(*at);
        }
        let grace = STUB_GRACE.as_millis() as u64;
        while part
            .early
            .front()
            .is_some_and(|(at, _, _)| at + grace <= now)
        {
            part.early.pop_front();
            part.link.stats.early_dropped.fetch_add(1, Relaxed);
        }
        part.changes.append(&mut self.interest.cluster_changes);
        part.link.hand_interest(id, &mut part.changes);
        part.link.hand_sessions(id, &mut part.sessions);
        if !part.held.is_empty() || !part.changes.is_empty() || !part.sessions.is_empty() {
            io.wake_at(io.now_ms() + 1);
        }
        for client_id in hold_over {
            let Some(sid) = self.sessions.find(&client_id) else {
                continue;
            };
            self.release_held(io, sid);
            let arriving = self
                .sessions
                .get(sid)
                .is_some_and(|s| s.extra().is_some_and(|e| e.from_node.is_some()));
            if arriving && let Some(part) = self.cluster.as_mut() {
                // (Later than every entry there: they were all pushed before now.)
                part.holding.push_back((now + grace, client_id));
                io.wake_at(now + grace);
            }
        }
        for sid in ended {
            // (A slot taken by another session since has another generation.)
            if self
                .sessions
                .get(sid)
                .is_some_and(|s| s.extra().is_some_and(|e| e.moved_to_node.is_some()))
            {
                self.take_session(sid, EndReason::Moved);
            }
        }
        self.route_inbound(io);
    }

    /// Messages from other nodes: routed here, at most [`INBOUND_PER_TURN`] a turn, and
    /// held while the shard is under pressure as a paused publisher's are.
    pub(super) fn route_inbound(&mut self, io: &mut Io) {
        let Some(part) = self.cluster.as_mut() else {
            return;
        };
        if part.inbox.is_empty() {
            return;
        }
        if io.under_pressure() && io.now_ms() < part.inbox_since_ms + io.config().pause_max_ms {
            io.wake_at(io.now_ms() + 1);
            return;
        }
        let mut batch: Vec<Inbound> = Vec::new();
        let n = part.inbox.len().min(INBOUND_PER_TURN);
        batch.extend(part.inbox.drain(..n));
        part.inbox_since_ms = io.now_ms();
        let link = part.link.clone();
        let more = !part.inbox.is_empty();
        for Inbound {
            msg,
            share,
            forward,
        } in &batch
        {
            match forward {
                Some(d) => self.deliver_moved_here(io, msg, d),
                None => self.route_from_cluster(io, msg, share.as_ref()),
            }
        }
        link.routed_inbound(self.peers.id, batch.len());
        if more {
            io.continue_soon();
        }
    }

    /// Messages from other nodes for this shard to route.
    pub(super) fn cluster_inbound(&mut self, io: &mut Io, messages: Vec<Inbound>) {
        let Some(part) = self.cluster.as_mut() else {
            return;
        };
        if part.inbox.is_empty() {
            part.inbox_since_ms = io.now_ms();
        }
        part.inbox.extend(messages);
        self.route_inbound(io);
    }

    /// Whether session `sid`, which moved here from another node lately, gets the copy
    /// of `src` now (see [`NodeArrival`]): one it had or got is dropped, one that came
    /// straight while the stub forwards is held; a forwarded one first delivers the held
    /// ones of its publisher before it.
    pub(super) fn cluster_admit(
        &mut self,
        io: &mut Io,
        sid: SessionId,
        src: &mut Src<'_>,
        qos: QoS,
        retain: bool,
        sub_ids: SubIds,
    ) -> bool {
        let now = io.now_ms();
        let (Some(n), Some(part)) = (src.number, self.cluster.as_deref()) else {
            return true;
        };
        let Some(a) = self
            .sessions
            .get_mut(sid)
            .and_then(|s| s.extra_opt_mut())
            .and_then(|e| e.from_node.as_mut())
        else {
            return true;
        };
        let mut release = Vec::new();
        if a.hold_is_over(now) {
            release = a.release_all();
        }
        let admit = if src.moved {
            a.admit_forwarded(n, &mut release)
        } else {
            a.admit_direct(n, now)
        };
        if admit == Admit::Hold {
            let q = Queued {
                msg: src.shared(),
                qos,
                retain,
                sub_ids,
                store_id: 0,
            };
            release.extend(a.hold(n, q));
        }
        count_arrival(&part.link.stats, a, admit);
        self.deliver_held(io, sid, release);
        self.end_arrival_if_over(sid, now);
        admit == Admit::Deliver
    }

    /// Delivers every copy session `sid` held, in order.
    pub(super) fn release_held(&mut self, io: &mut Io, sid: SessionId) {
        let now = io.now_ms();
        let release = self
            .sessions
            .get_mut(sid)
            .and_then(|s| s.extra_opt_mut())
            .and_then(|e| e.from_node.as_mut())
            .map(|a| a.release_all())
            .unwrap_or_default();
        self.deliver_held(io, sid, release);
        self.end_arrival_if_over(sid, now);
    }

    fn deliver_held(&mut self, io: &mut Io, sid: SessionId, release: Vec<Queued>) {
        for q in release {
            let mut src = Src::from_arc(&q.msg, self.peers.id);
            self.deliver_here(io, sid, &mut src, q.qos, q.retain, q.sub_ids);
            self.settle_routing(io, &src);
        }
    }

    /// Forgets what session `sid` knew of its arrival once that is no longer needed.
    fn end_arrival_if_over(&mut self, sid: SessionId, now: u64) {
        if let Some(e) = self.sessions.get_mut(sid).and_then(|s| s.extra_opt_mut())
            && e.from_node
                .as_ref()
                .is_some_and(|a| a.until_ms != 0 && now >= a.until_ms && !a.holds())
        {
            e.from_node = None;
        }
    }

    /// A message numbered `n` is routed on this shard.
    pub(super) fn cluster_routed(&mut self, n: PubNumber) {
        if let Some(part) = self.cluster.as_mut() {
            let h = part.routed.entry((n.node, n.shard)).or_insert(0);
            *h = (*h).max(n.n);
        }
    }

    /// One message from another node: to the plain subscribers of every shard here
    /// (never back to the cluster), or to one member of its shared group.
    fn route_from_cluster(&mut self, io: &mut Io, m: &Arc<Message>, share: Option<&Arc<str>>) {
        let mut src = Src::from_arc(m, self.peers.id);
        match share {
            None => {
                let mut groups = std::mem::take(&mut self.scratch.groups);
                groups.clear();
                self.deliver_local(io, &mut src, None);
                // Its publishing shard picked a node for each shared group.
                self.route_remote(io, &mut src, &mut groups, Scope::Plain, None, None);
                self.scratch.groups = groups;
            }
            Some(share) => {
                if let Ok(parsed) = topic::parse_filter(share) {
                    let local = self.routes.has_group(share);
                    let elsewhere = self.interest.group_shards(parsed.filter(), share)
                        & !(1u128 << self.peers.id);
                    if !local && elsewhere == 0 {
                        // Its members here left since the publishing node picked this one.
                        if let Some(part) = &self.cluster {
                            part.link.stats.group_unserved.fetch_add(1, Relaxed);
                        }
                    }
                    let mut groups = vec![(share.clone(), local, elsewhere)];
                    self.deliver_groups(io, &mut src, &mut groups, None);
                }
            }
        }
        self.settle_routing(io, &src);
        self.latency.note_publish();
    }

    /// A client connected here (`claim`) or its session ended here for good: the
    /// cluster's session registry hears of it at the end of the turn.
    pub(super) fn cluster_session(&mut self, client_id: &str, claim: bool) {
        if let Some(part) = self.cluster.as_mut() {
            let id = client_id.into();
            let seq = part.link.next_session_seq();
            part.sessions.push(if claim {
                SessionEvent::Claim(id, seq)
            } else {
                SessionEvent::Release(id, seq)
            });
            part.link.hand_sessions(self.peers.id, &mut part.sessions);
        }
    }

    /// The session of `client_id` was claimed by another node after this one: ended
    /// here, as a takeover ends it (MQTT 5: DISCONNECT 0x8E; the will published once).
    /// Nothing of it moves to the other node.
    pub(super) fn cluster_takeover(&mut self, io: &mut Io, client_id: &str) {
        let Some(sid) = self.sessions.find(client_id) else {
            return;
        };
        if self
            .sessions
            .get(sid)
            .is_some_and(|s| s.moved_to().is_some())
        {
            return;
        }
        if let Some(part) = &self.cluster {
            part.link.stats.sessions_taken_over.fetch_add(1, Relaxed);
        }
        tracing::info!(
            client_id,
            shard = self.peers.id,
            "session taken over by another node"
        );
        self.kick_connection(io, sid, true);
        self.end_session(io, sid, EndReason::Discarded);
    }

    /// A CONNECT here asks the cluster's session registry first, so that a session
    /// another node holds comes over before the CONNACK, and of two CONNECTs with one
    /// client id on two nodes only one goes on. False without a cluster (the claim
    /// goes straight to the home shard); true when the registry has it, or when its
    /// queue is full and the CONNECT was refused.
    pub(super) fn cluster_claim(
        &mut self,
        io: &mut Io,
        conn: ConnKey,
        client_id: &str,
        clean_start: bool,
    ) -> bool {
        let Some(part) = self.cluster.as_ref() else {
            return false;
        };
        let request = ClaimRequest {
            shard: self.peers.id,
            conn,
            client_id: client_id.into(),
            clean_start,
        };
        if !part.link.claim(request) {
            part.link.stats.claims_refused.fetch_add(1, Relaxed);
            self.refuse_busy(io, conn, "the cluster's session registry is busy");
        }
        true
    }

    fn refuse_busy(&mut self, io: &mut Io, conn: ConnKey, why: &str) {
        let version = io.state(conn).map_or(Version::V311, |c| c.version());
        self.writer
            .refuse_connect(io, conn, version, ReasonCode::SERVER_BUSY, why);
        io.close(conn, CloseReason::Policy);
    }

    /// The session registry answered the CONNECT of `conn`: it goes on to the home
    /// shard's claim (with the session another node handed over, if one did), or is
    /// refused.
    pub(super) fn cluster_claimed(
        &mut self,
        io: &mut Io,
        conn: ConnKey,
        client_id: Box<str>,
        outcome: ClaimOutcome,
    ) {
        let clean_start = io
            .state(conn)
            .filter(|c| c.phase == super::client::Phase::Claiming)
            .and_then(|c| c.extra.as_ref()?.pending.as_ref())
            .filter(|p| p.client_id == client_id)
            .map(|p| p.clean_start);
        match outcome {
            ClaimOutcome::Refused => {
                if clean_start.is_some() {
                    let why =
                        "another connection with this client id registered first on another node";
                    self.refuse_busy(io, conn, why);
                }
            }
            ClaimOutcome::Proceed => {
                if let Some(clean_start) = clean_start {
                    self.send_claim(io, client_id, conn, clean_start);
                }
            }
            ClaimOutcome::Session(mut moving) => {
                // Claimed here even if the connection has gone: the session is kept
                // (offline) as a takeover between shards would keep it.
                let max = self.config().max_queued_messages;
                let now = io.now_ms();
                if let Some(part) = self.cluster.as_deref_mut() {
                    // Copies that may come twice are told apart from now on, and those
                    // that come straight wait for the stub's while it forwards.
                    let grace = STUB_GRACE.as_millis() as u64;
                    if let Some(a) = moving.session.extra_mut().from_node.as_mut() {
                        a.start(now, grace);
                        part.holding.push_back((now + grace, client_id.clone()));
                        io.wake_at(now + grace);
                    }
                    // What its old node's stub forwarded before it came, behind its queue.
                    let mut kept = VecDeque::with_capacity(part.early.len());
                    for (at, id, q) in part.early.drain(..) {
                        if id == client_id {
                            enqueue_forwarded(&part.link.stats, &mut moving.session, q, max);
                        } else {
                            kept.push_back((at, id, q));
                        }
                    }
                    part.early = kept;
                    part.arrivals.insert(conn, moving);
                }
                self.send_claim(io, client_id, conn, clean_start.unwrap_or(false));
            }
        }
    }

    /// The claim of `conn` on this node is settled as `claim`: a session another node
    /// handed over takes the place of any this node had (the registry says the other
    /// node held it last).
    pub(super) fn with_arrival(
        &mut self,
        io: &mut Io,
        conn: ConnKey,
        client_id: &str,
        claim: Claim,
    ) -> Claim {
        let Some(moving) = self
            .cluster
            .as_mut()
            .and_then(|part| part.arrivals.remove(&conn))
        else {
            return claim;
        };
        if let Claim::TakenOver {
            session: Some(s),
            stub,
        } = claim
        {
            // Its stub on the shard it left still has to settle.
            let sid = self.install_session(io, *s, stub);
            self.take_session(sid, EndReason::Discarded);
        }
        if let Some(sid) = self.sessions.find(client_id) {
            self.kick_connection(io, sid, true);
            self.take_session(sid, EndReason::Discarded);
        }
        Claim::TakenOver {
            session: Some(moving),
            stub: None,
        }
    }

    /// Another node asks for the session of `client_id`: its connection here is closed
    /// (as a takeover closes it) and its image answered, or it ends here for a clean
    /// start. `None` when it is not on this shard.
    pub(super) fn cluster_handover(
        &mut self,
        io: &mut Io,
        client_id: &str,
        clean_start: bool,
        to: Arc<str>,
        reply: Reply<Option<Vec<u8>>>,
    ) {
        let Some(sid) = self.sessions.find(client_id) else {
            let _ = reply.send(None);
            return;
        };
        if self
            .sessions
            .get(sid)
            .is_none_or(|s| s.moved_to().is_some())
        {
            let _ = reply.send(None);
            return;
        }
        tracing::info!(
            client_id,
            shard = self.peers.id,
            clean_start,
            "session handed over to another node"
        );
        self.kick_connection(io, sid, clean_start);
        if clean_start {
            if let Some(part) = &self.cluster {
                part.link.stats.sessions_taken_over.fetch_add(1, Relaxed);
            }
            self.end_session(io, sid, EndReason::Discarded);
            let _ = reply.send(None);
            return;
        }
        // What it holds goes into its queue, in order, and with it.
        self.release_held(io, sid);
        let refs: Vec<SubRef> = self
            .sessions
            .get(sid)
            .map(|s| s.subs().collect())
            .unwrap_or_default();
        let subs = self.spell_out_subs(sid, &refs);
        let empty = HashMap::new();
        let had = self.cluster.as_ref().map_or(&empty, |p| &p.routed);
        let Some((image, left_out)) = self
            .sessions
            .get(sid)
            .map(|s| handover::encode(s, &subs, had))
        else {
            let _ = reply.send(None);
            return;
        };
        if let Some(part) = &self.cluster {
            let stats = &part.link.stats;
            stats.handovers_out.fetch_add(1, Relaxed);
            stats.sessions_taken_over.fetch_add(1, Relaxed);
            stats.handover_left_out.fetch_add(left_out as u64, Relaxed);
        }
        self.leave_node_stub(io, sid, to);
        let _ = reply.send(Some(image));
    }

    /// Puts a stub in the place of session `sid`, which moved to node `to`: the stub
    /// keeps its subscriptions here for [`STUB_GRACE`] and forwards what reaches it
    /// (`cluster_forward`), so that a message published before a node learnt where the
    /// session went still reaches it. The session itself leaves this shard: its log
    /// record ends, its home shard forgets it.
    fn leave_node_stub(&mut self, io: &mut Io, sid: SessionId, to: Arc<str>) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let mut session = s.replace_with_stub(|e| e.moved_to_node = Some(to));
        session.take_subs();
        self.sessions.unindex(&session.client_id, sid);
        self.retained_cursors.remove(sid);
        if session.store_key != 0 {
            self.log(&Record::SessionEnded {
                session: SessionKey(session.store_key),
                reason: EndReason::Moved,
            });
        }
        self.forget_received(session.unreleased_ids());
        self.release_at_home(io, &session);
        if let Some(part) = self.cluster.as_mut() {
            let at = io.now_ms() + STUB_GRACE.as_millis() as u64;
            part.stubs.push_back((at, sid));
            io.wake_at(at);
        }
    }

    /// The session of `client_id` comes back to this node: the stub it left here (if
    /// this shard has it) ends now.
    pub(super) fn cluster_stub_end(&mut self, client_id: &str) {
        let Some(part) = self.cluster.as_mut() else {
            return;
        };
        let sessions = &self.sessions;
        let mut ended = Vec::new();
        part.stubs.retain(|&(_, sid)| {
            let here = sessions.get(sid).is_some_and(|s| {
                *s.client_id == *client_id && s.extra().is_some_and(|e| e.moved_to_node.is_some())
            });
            if here {
                ended.push(sid);
            }
            !here
        });
        for sid in ended {
            self.take_session(sid, EndReason::Moved);
        }
    }

    /// The stub on this shard of the session of `client_id`, which moved to another
    /// node, and that node.
    fn node_stub(&self, client_id: &str) -> Option<Arc<str>> {
        let part = self.cluster.as_ref()?;
        part.stubs.iter().find_map(|&(_, sid)| {
            let s = self.sessions.get(sid)?;
            (*s.client_id == *client_id)
                .then(|| s.extra()?.moved_to_node.clone())
                .flatten()
        })
    }

    /// A delivery that reached the stub of a session that moved to node `to`: sent
    /// after it, always — `to` may have got the message itself, but only once the
    /// session is installed there does that copy reach it; its [`NodeArrival`] keeps
    /// the session from getting both.
    ///
    /// [`NodeArrival`]: super::session::NodeArrival
    pub(super) fn cluster_forward(
        &mut self,
        io: &mut Io,
        src: &mut Src<'_>,
        to: Arc<str>,
        delivery: SessionDelivery,
    ) {
        let shard = self.peers.id as u16;
        let msg = src.shared();
        let Some(part) = self.cluster.as_mut() else {
            return;
        };
        let table = part.link.remote();
        part.link.stats.stub_forwarded.fetch_add(1, Relaxed);
        let qos = delivery.qos;
        let o = Outbound {
            msg,
            table,
            nodes: 0,
            share: None,
            shard,
            forward: Some((to, Box::new(delivery))),
        };
        part.queue(io, o, qos);
    }

    /// A delivery forwarded by the stub of a session that moved here from another node:
    /// to that session, if this shard holds it.
    fn deliver_moved_here(&mut self, io: &mut Io, m: &Arc<Message>, d: &SessionDelivery) {
        let mut sub_ids = SubIds::default();
        for &id in d.sub_ids.iter().take(4) {
            sub_ids.push(id);
        }
        let max = self.config().max_queued_messages;
        if self.sessions.find(&d.client_id).is_none()
            && let Some(to) = self.node_stub(&d.client_id)
        {
            // It moved on from here meanwhile: after it.
            let mut src = Src::from_arc(m, self.peers.id);
            self.cluster_forward(io, &mut src, to, d.clone());
            return;
        }
        let Some(part) = self.cluster.as_deref_mut() else {
            return;
        };
        part.link.stats.moved_in.fetch_add(1, Relaxed);
        let Some(sid) = self.sessions.find(&d.client_id) else {
            // Not here yet: its image is on the way (or on this shard's desk).
            let q = Queued {
                msg: m.clone(),
                qos: d.qos,
                retain: d.retain,
                sub_ids,
                store_id: 0,
            };
            let arrived = part
                .arrivals
                .values_mut()
                .find(|s| *s.session.client_id == *d.client_id);
            match arrived {
                Some(s) => enqueue_forwarded(&part.link.stats, &mut s.session, q, max),
                None => {
                    if part.early.len() >= EARLY_MAX {
                        part.early.pop_front();
                        part.link.stats.early_dropped.fetch_add(1, Relaxed);
                    }
                    part.early.push_back((io.now_ms(), d.client_id.clone(), q));
                    io.wake_at(io.now_ms() + STUB_GRACE.as_millis() as u64);
                }
            }
            return;
        };
        let mut src = Src::from_arc(m, self.peers.id);
        src.moved = true;
        self.deliver(io, sid, &mut src, d.qos, d.retain, sub_ids);
        self.settle_routing(io, &src);
    }

    /// A retained message from the retained bucket: stored on every shard here.
    pub(super) fn cluster_retain(&mut self, io: &mut Io, m: Arc<Message>) {
        let mut src = Src::from_arc(&m, self.peers.id);
        self.retain(io, &mut src);
        self.settle_routing(io, &src);
    }
}
