//! The link: this node's NATS client and the tasks around it, on the control plane's
//! Tokio runtime (never a shard's thread).
//!
//! - *Out*: the outbound queue's messages, one NATS message per node with plain interest
//!   (`ringmq.n.NODE.TOPIC`: addressed, so a node gets each message once however many of
//!   its filters match, and in the order its publisher sent them), and one to the node
//!   the publishing shard picked for each matching shared group that has members
//!   elsewhere (the same subject, the group named in the frame); a retained message
//!   also goes to the retained bucket. A QoS 1/2 message to a node is numbered
//!   in this node's stream to it and kept in that stream's window until the node acks it
//!   on `ringmq.a.THIS-NODE` (the acks' subscription is read by the same task), sent
//!   again when acks stall and on every reconnect ([`super::stream`]); a full window
//!   makes the task wait while connected. While NATS is unreachable nothing waits: QoS
//!   1/2 messages wait in their windows (a full one drops and counts), QoS 0 messages
//!   are counted (`cluster_publish_failed_total`). A delivery a moved session's
//!   stub forwards goes on its new node's subject and stream, the session named in the
//!   frame.
//! - *In*: this node's subject (`ringmq.n.NODE.>`). A numbered message is routed only
//!   in its stream's order (a duplicate or one after a gap is dropped). Messages go to
//!   the shards in batches over their control channels (one publisher's always to the
//!   same shard, so its order holds), at most [`INBOUND_PER_SHARD`] not yet routed per
//!   shard; the numbered ones handed over are then acked to their origins. A forwarded
//!   delivery goes to the shard that claimed its session (else to every shard).
//! - *Interest*: the shards' changes, counted per node; a key in the interest bucket per
//!   filter with local interest (written again after a failure), and the other nodes'
//!   keys watched into [`RemoteInterest`].
//! - *Retained*: the retained bucket watched from its start (last value per topic) into
//!   every shard's store, so SUBSCRIBE never waits on the network.
//!
//! NATS down: the client reconnects with back-off (100 ms doubling to 5 s) and
//! subscribes again; the watchers start again from the buckets' last values.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use ringmq_proto::mqtt::QoS;
use ringmq_shard::mesh::links::Doorbell;
use ringmq_shard::runtime::Control;

use super::frame::{self, Ack, Frame, SessionPart};
use super::liveness::Liveness;
use super::remote::{Kind, MAX_NODES, RemoteInterest};
use super::stream::{RESEND, Receiver, Streams, Verdict};
use super::subject::{self, filter_key, push_topic};
use super::{
    ClusterLink, INBOUND_PER_SHARD, INTEREST_BUCKET, Inbound, InterestChange, Outbound, PREFIX,
    RETAINED_BUCKET, SessionDelivery,
};
use crate::broker::AdminRequest;
use crate::broker::session::{Message, PubNumber};

/// What the link needs to run.
pub struct Start {
    pub link: Arc<ClusterLink>,
    pub out: mpsc::Receiver<Outbound>,
    /// Each shard's control channel and doorbell.
    pub shards: Vec<Sender<Control<AdminRequest>>>,
    pub doorbells: Arc<[Doorbell]>,
}

/// Messages read from NATS subscriptions and not yet handed to the shards.
const INBOUND_QUEUE: usize = 8192;
/// Messages handed to the shards in one batch.
const BATCH: usize = 512;
/// Retained messages waiting to be written to the bucket.
const RETAINED_QUEUE: usize = 4096;
/// Tries of one retained write.
const RETAINED_TRIES: u32 = 5;
/// The least time between two rebuilds of the table of other nodes' interest.
const MIN_REBUILD_GAP: Duration = Duration::from_millis(5);
/// How long a failed bucket operation waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the link's tasks on `runtime`.
pub fn start(runtime: &tokio::runtime::Runtime, s: Start) {
    runtime.spawn(run(s));
}

/// The reconnect back-off: 100 ms doubling to 5 s.
fn backoff(attempts: usize) -> Duration {
    Duration::from_millis((100u64 << attempts.min(6)).min(5_000))
}

async fn run(s: Start) {
    let link = s.link.clone();
    let events = link.clone();
    let options = async_nats::ConnectOptions::new()
        .name(format!("ringmq-{}", link.node_id()))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(backoff)
        .event_callback(move |event| {
            let link = events.clone();
            async move {
                let s = &link.stats;
                match event {
                    async_nats::Event::Connected => {
                        s.connects.fetch_add(1, Relaxed);
                        s.connected.store(1, Relaxed);
                        link.connections.send_modify(|n| *n += 1);
                        tracing::info!("cluster: connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        s.disconnects.fetch_add(1, Relaxed);
                        s.connected.store(0, Relaxed);
                        tracing::warn!("cluster: lost the NATS connection; reconnecting");
                    }
                    async_nats::Event::SlowConsumer(_) => {
                        s.slow_consumer.fetch_add(1, Relaxed);
                    }
                    other => tracing::info!("cluster: NATS: {other}"),
                }
            }
        });
    let client = match options.connect(link.settings.urls.clone()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "cluster: cannot use the NATS servers {:?}: {e}",
                link.settings.urls
            );
            return;
        }
    };
    let shards = Shards {
        controls: s.shards,
        doorbells: s.doorbells,
        link: link.clone(),
    };
    let shards = Arc::new(shards);
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    let (retained_tx, retained_rx) = mpsc::channel(RETAINED_QUEUE);
    let js = jetstream::new(client.clone());

    let inbox = format!("{PREFIX}.n.{}.>", link.node_id());
    if let Some(sub) = subscribe(&client, inbox).await {
        tokio::spawn(forward(sub, in_tx));
    }
    let acks = subscribe(&client, format!("{PREFIX}.a.{}", link.node_id())).await;
    tokio::spawn(dispatch(in_rx, shards.clone(), client.clone()));
    tokio::spawn(outbound(
        s.out,
        client.clone(),
        link.clone(),
        retained_tx,
        acks,
    ));
    tokio::spawn(interest(link.clone(), js.clone()));
    let (live_tx, live_rx) = tokio::sync::watch::channel(Liveness::default());
    tokio::spawn(super::liveness::run(link.clone(), client.clone(), live_tx));
    tokio::spawn(watch_interest(link.clone(), js.clone(), live_rx));
    tokio::spawn(write_retained(link.clone(), js.clone(), retained_rx));
    tokio::spawn(super::registry::run(
        link.clone(),
        js.clone(),
        client.clone(),
        shards.clone(),
    ));
    tokio::spawn(watch_retained(link, js, shards));
}

/// A subscription to `subject`; `None` (logged) if the client refuses it, which it does
/// only once it has stopped.
pub(super) async fn subscribe(
    client: &async_nats::Client,
    subject: String,
) -> Option<async_nats::Subscriber> {
    match client.subscribe(subject.clone()).await {
        Ok(sub) => Some(sub),
        Err(e) => {
            tracing::error!("cluster: cannot subscribe to {subject}: {e}");
            None
        }
    }
}

/// The shards, as the link reaches them.
pub(super) struct Shards {
    pub(super) controls: Vec<Sender<Control<AdminRequest>>>,
    doorbells: Arc<[Doorbell]>,
    pub(super) link: Arc<ClusterLink>,
}

impl Shards {
    /// Hands `request` to shard `i`, waiting while its control channel is full (the API
    /// shares it); false once the shard has stopped.
    pub(super) async fn hand(&self, i: usize, request: AdminRequest) -> bool {
        let mut request = Control::Request(request);
        loop {
            match self.controls[i].try_send(request) {
                Ok(()) => {
                    self.doorbells[i].ring_if_sleeping();
                    return true;
                }
                Err(TrySendError::Full(r)) => {
                    request = r;
                    self.doorbells[i].ring_if_sleeping();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
    }

    /// The shard that routes the messages of publisher `shard` of `node`: always the
    /// same one, so they are routed in the order they came.
    fn for_publisher(&self, node: &str, shard: u16) -> usize {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in node.bytes().chain(shard.to_be_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        (h % self.controls.len() as u64) as usize
    }
}

/// Copies a subscription's messages into the inbound queue.
async fn forward(mut sub: async_nats::Subscriber, tx: mpsc::Sender<async_nats::Message>) {
    while let Some(m) = sub.next().await {
        if tx.send(m).await.is_err() {
            return;
        }
    }
}

/// The message a NATS message carries, and the shard it goes to; `None` if it is not
/// a ringmq frame for this node.
fn inbound(
    link: &ClusterLink,
    shards: &Shards,
    receiver: &mut Receiver,
    m: &async_nats::Message,
) -> Option<(Option<usize>, Inbound)> {
    let stats = &link.stats;
    stats.messages_in.fetch_add(1, Relaxed);
    stats
        .bytes_in
        .fetch_add((m.subject.len() + m.payload.len()) as u64, Relaxed);
    let tokens = m
        .subject
        .strip_prefix(PREFIX)
        .and_then(|s| s.strip_prefix(".n."))
        .and_then(|s| s.strip_prefix(link.node_id()))
        .and_then(|s| s.strip_prefix('.'));
    let frame =
        tokens.and_then(|t| Some((subject::decode(t).ok()?, Frame::decode(&m.payload).ok()?)));
    let Some((topic, f)) = frame else {
        stats.bad_frames.fetch_add(1, Relaxed);
        return None;
    };
    // A message is addressed to other nodes only; one from this node is a loop.
    if f.node == link.node_id() {
        stats.bad_frames.fetch_add(1, Relaxed);
        return None;
    }
    // A sequenced message (QoS 1/2) is routed once, in its stream's order; the origin
    // sends again what is dropped here.
    if f.seq != 0 {
        match receiver.check(f.node, f.incarnation, f.seq, Instant::now()) {
            Verdict::Route => {}
            Verdict::Duplicate => {
                stats.duplicates_dropped.fetch_add(1, Relaxed);
                return None;
            }
            Verdict::Gap => {
                stats.gaps_dropped.fetch_add(1, Relaxed);
                return None;
            }
        }
    }
    let mut msg = message(&topic, &f);
    msg.number = f.number.map(|n| PubNumber {
        node: n.node,
        shard: n.shard,
        n: n.n,
    });
    let forward = f.session.as_ref().map(|d| {
        Box::new(SessionDelivery {
            client_id: d.client_id.into(),
            qos: d.qos,
            retain: d.retain,
            sub_ids: d
                .sub_ids
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    });
    // A delivery to one session goes to the shard that claimed it lately, else to every
    // shard: the one that holds it takes it.
    let shard = match &forward {
        Some(d) => link.arriving_at(&d.client_id),
        None => Some(shards.for_publisher(f.node, f.shard)),
    };
    Some((
        shard,
        Inbound {
            msg: Arc::new(msg),
            share: f.share.map(Arc::from),
            forward,
        },
    ))
}

/// The frame of `m` as this node sends it from publishing shard `shard` at `now`:
/// unnumbered in any stream, for the destination's subscribers (the caller names a
/// group or a session where it is for one).
fn frame_of<'a>(m: &'a Message, shard: u16, node: &'a str, now: Instant) -> Frame<'a> {
    Frame {
        qos: m.qos,
        retain: m.retain,
        shard,
        expiry_s: m.remaining_expiry(now).unwrap_or(0),
        incarnation: 0,
        seq: 0,
        node,
        number: m.number.map(|n| frame::Number {
            node: n.node,
            shard: n.shard,
            n: n.n,
        }),
        share: None,
        session: None,
        props: m.props(),
        payload: m.payload(),
    }
}

fn message(topic: &str, f: &Frame<'_>) -> Message {
    let expires_at =
        (f.expiry_s != 0).then(|| Instant::now() + Duration::from_secs(u64::from(f.expiry_s)));
    Message::new(topic, f.props, f.payload, f.qos, f.retain, expires_at, None)
}

/// Hands NATS's messages to the shards in batches, and acknowledges the sequenced ones
/// once handed over (coalesced: see [`super::stream`]).
async fn dispatch(
    mut rx: mpsc::Receiver<async_nats::Message>,
    shards: Arc<Shards>,
    client: async_nats::Client,
) {
    let link = shards.link.clone();
    let n = shards.controls.len();
    let mut batches: Vec<Vec<Inbound>> = (0..n).map(|_| Vec::new()).collect();
    let mut receiver = Receiver::default();
    loop {
        let first = match receiver.next_due() {
            Some(due) => tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep_until(due.into()) => {
                    send_acks(&client, &link, &mut receiver).await;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(m) = first else { return };
        let mut taken = 0;
        let mut next = Some(m);
        while let Some(m) = next.take() {
            match inbound(&link, &shards, &mut receiver, &m) {
                Some((Some(i), inbound)) => batches[i].push(inbound),
                Some((None, inbound)) => {
                    for batch in batches.iter_mut() {
                        batch.push(inbound.clone());
                    }
                }
                None => {}
            }
            taken += 1;
            if taken < BATCH {
                next = rx.try_recv().ok();
            }
        }
        for (i, batch) in batches.iter_mut().enumerate() {
            if batch.is_empty() {
                continue;
            }
            // Bounded: wait while the shard has its fill of messages not yet routed.
            while link.inbound[i].load(Relaxed) + batch.len() > INBOUND_PER_SHARD {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            link.inbound[i].fetch_add(batch.len(), Relaxed);
            let count = batch.len();
            if !shards
                .hand(i, AdminRequest::Cluster(std::mem::take(batch)))
                .await
            {
                link.inbound[i].fetch_sub(count, Relaxed);
            }
        }
        send_acks(&client, &link, &mut receiver).await;
    }
}

/// Publishes the acks due (what they acknowledge is in the shards' hands). One lost is
/// answered again: the origin resends, and a duplicate owes an ack.
async fn send_acks(client: &async_nats::Client, link: &ClusterLink, receiver: &mut Receiver) {
    for due in receiver.acks_due(Instant::now()) {
        let body = Ack {
            node: link.node_id(),
            incarnation: due.incarnation,
            seq: due.seq,
        }
        .encode();
        let subject = format!("{PREFIX}.a.{}", due.origin);
        if client.publish(subject, body).await.is_ok() {
            link.stats.acks_sent.fetch_add(1, Relaxed);
        }
    }
}

/// Publishes what the shards queued; keeps the QoS 1/2 streams to other nodes (their
/// windows, acks and resends: see [`super::stream`]).
async fn outbound(
    mut rx: mpsc::Receiver<Outbound>,
    client: async_nats::Client,
    link: Arc<ClusterLink>,
    retained: mpsc::Sender<(String, Option<Bytes>)>,
    mut acks: Option<async_nats::Subscriber>,
) {
    let mut out = Out {
        client,
        link: link.clone(),
        retained,
        streams: Streams::default(),
        subject: String::new(),
    };
    let mut connections = link.connections.subscribe();
    let mut tick = tokio::time::interval(RESEND / 4);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A message waiting for room in a destination's window (then nothing more is taken
    // from the queue: the shards hold QoS 1/2 messages and pause their publishers), and
    // whether that wait was counted.
    let mut waiting: Option<Outbound> = None;
    let mut counted = false;
    loop {
        if let Some(o) = waiting.take() {
            match out.send(o).await {
                Ok(()) => counted = false,
                Err(o) => {
                    if !counted {
                        link.stats.window_full_waits.fetch_add(1, Relaxed);
                        counted = true;
                    }
                    waiting = Some(o);
                }
            }
        }
        tokio::select! {
            o = rx.recv(), if waiting.is_none() => match o {
                Some(o) => waiting = Some(o),
                None => return,
            },
            m = next_ack(&mut acks) => match m {
                Some(m) => out.acked(&m),
                None => acks = None,
            },
            _ = tick.tick() => out.tick().await,
            changed = connections.changed() => {
                if changed.is_err() {
                    return;
                }
                // Whatever was on the old connection may be lost: every window again.
                for node in out.streams.nodes() {
                    out.resend(&node).await;
                }
            }
        }
    }
}

/// The next ack; never, without the acks' subscription.
async fn next_ack(acks: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match acks {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

/// The outbound task's state.
struct Out {
    client: async_nats::Client,
    link: Arc<ClusterLink>,
    retained: mpsc::Sender<(String, Option<Bytes>)>,
    streams: Streams,
    subject: String,
}

impl Out {
    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Publishes `o`, or hands it back when it must wait for room in a window.
    async fn send(&mut self, o: Outbound) -> Result<(), Outbound> {
        if o.forward.is_some() {
            return self.send_forward(o).await;
        }
        let link = self.link.clone();
        let stats = &link.stats;
        let m = &o.msg;
        let now = Instant::now();
        let Some(tokens) = self.tokens(m, now) else {
            return Ok(());
        };
        let connected = self.connected();
        let sequenced = m.qos != QoS::AtMostOnce;
        // All or nothing: a message waits before any node got it, so none gets it twice.
        if sequenced && connected {
            let mut nodes = o.nodes;
            while nodes != 0 {
                let i = nodes.trailing_zeros() as usize;
                nodes &= nodes - 1;
                if o.table.node(i).is_some_and(|n| self.streams.must_wait(n)) {
                    return Err(o);
                }
            }
        }
        let mut frame = Frame {
            share: o.share.as_deref(),
            ..frame_of(m, o.shard, link.node_id(), now)
        };
        // The retained bucket keeps the copy for the subscribers, not a group's.
        let retain = m.retain && o.share.is_none();
        // The body without a number: QoS 0, the retained bucket.
        let unsequenced = if !sequenced || retain {
            frame.encode()
        } else {
            Bytes::new()
        };
        let mut nodes = o.nodes;
        while nodes != 0 {
            let i = nodes.trailing_zeros() as usize;
            nodes &= nodes - 1;
            let Some(node) = o.table.node(i) else {
                continue;
            };
            let subject = &mut self.subject;
            subject.clear();
            subject.push_str(PREFIX);
            subject.push_str(".n.");
            subject.push_str(node);
            subject.push('.');
            subject.push_str(&tokens);
            if !sequenced {
                publish(&self.client, connected, &link, subject, &unsequenced).await;
                continue;
            }
            let out = (&mut self.streams, &self.client, &*link);
            send_numbered(out, node, subject, &mut frame, now, connected).await;
        }
        if retain {
            // Never waits: a retained message the writer has no room for is counted.
            let value = (!m.payload().is_empty()).then_some(unsequenced);
            if self.retained.try_send((tokens, value)).is_err() {
                stats.retained_failed.fetch_add(1, Relaxed);
            }
        }
        Ok(())
    }

    /// A delivery a stub here forwards to the node its session moved to: on that
    /// node's subject and stream, like a message for its subscribers, with the session
    /// named in the frame.
    async fn send_forward(&mut self, o: Outbound) -> Result<(), Outbound> {
        let Some((to, d)) = &o.forward else {
            return Ok(());
        };
        let link = self.link.clone();
        let m = &o.msg;
        let now = Instant::now();
        let Some(tokens) = self.tokens(m, now) else {
            return Ok(());
        };
        let connected = self.connected();
        let sequenced = d.qos != QoS::AtMostOnce;
        if sequenced && connected && self.streams.must_wait(to) {
            return Err(o);
        }
        let sub_ids: Vec<u8> = d
            .sub_ids
            .iter()
            .take(4)
            .flat_map(|i| i.to_be_bytes())
            .collect();
        let mut frame = Frame {
            session: Some(SessionPart {
                client_id: &d.client_id,
                qos: d.qos,
                retain: d.retain,
                sub_ids: &sub_ids,
            }),
            ..frame_of(m, o.shard, link.node_id(), now)
        };
        let subject = format!("{PREFIX}.n.{to}.{tokens}");
        if !sequenced {
            publish(&self.client, connected, &link, &subject, &frame.encode()).await;
            return Ok(());
        }
        let out = (&mut self.streams, &self.client, &*link);
        send_numbered(out, to, &subject, &mut frame, now, connected).await;
        Ok(())
    }

    /// The topic of `m` as subject tokens; `None` for a message that has expired, or
    /// whose subject would pass the bound (counted: it stays on this node).
    fn tokens(&self, m: &Message, now: Instant) -> Option<String> {
        let mut tokens = String::new();
        if push_topic(m.topic(), &mut tokens).is_err() {
            self.link.stats.too_long.fetch_add(1, Relaxed);
            return None;
        }
        (!m.is_expired(now)).then_some(tokens)
    }

    /// An ack from a destination.
    fn acked(&mut self, m: &async_nats::Message) {
        let stats = &self.link.stats;
        let Ok(a) = Ack::decode(&m.payload) else {
            stats.bad_frames.fetch_add(1, Relaxed);
            return;
        };
        stats.acks_received.fetch_add(1, Relaxed);
        self.streams
            .acked(a.node, a.incarnation, a.seq, Instant::now());
    }

    /// Sends `node`'s window again, in order (not while disconnected: the reconnect
    /// does it).
    async fn resend(&mut self, node: &str) {
        if !self.connected() {
            return;
        }
        let Some(window) = self.streams.resend(node, Instant::now()) else {
            return;
        };
        // Counted apart from `messages_out`, which counts each message once.
        let stats = &self.link.stats;
        for sent in window {
            let bytes = sent.subject.len() + sent.body.len();
            match self
                .client
                .publish(sent.subject.clone(), sent.body.clone())
                .await
            {
                Ok(()) => {
                    stats.resent.fetch_add(1, Relaxed);
                    stats.bytes_out.fetch_add(bytes as u64, Relaxed);
                }
                Err(_) => {
                    stats.publish_failed.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// Drops the windows of nodes out of the routing table for a while; resends stalled
    /// ones.
    async fn tick(&mut self) {
        let table = self.link.remote();
        let routed = |node: &str| {
            (0..table.node_count()).any(|i| table.node(i).is_some_and(|n| &**n == node))
        };
        let t = self.streams.tick(Instant::now(), routed);
        let stats = &self.link.stats;
        stats.windows_dropped.fetch_add(t.dropped as u64, Relaxed);
        stats.unacked.store(t.unacked as u64, Relaxed);
        for node in t.resend {
            self.resend(&node).await;
        }
    }
}

/// Numbers `frame` in this node's stream to `node`, keeps it in that stream's window and
/// publishes it on `subject`; while disconnected it waits in the window for the
/// reconnect's resend. A full window here means NATS is away, or the destination is
/// (otherwise the caller waited for room): the message is dropped and counted.
async fn send_numbered(
    (streams, client, link): (&mut Streams, &async_nats::Client, &ClusterLink),
    node: &Arc<str>,
    subject: &str,
    frame: &mut Frame<'_>,
    now: Instant,
    connected: bool,
) {
    let stream = streams.stream(node, now);
    if stream.is_full() {
        link.stats.dropped_window_full.fetch_add(1, Relaxed);
        return;
    }
    (frame.incarnation, frame.seq) = stream.next();
    let body = frame.encode();
    stream.push(subject.to_string(), body.clone(), now);
    if connected {
        publish(client, true, link, subject, &body).await;
    }
}

/// One publish; counted as failed (not waited for) while NATS is unreachable.
async fn publish(
    client: &async_nats::Client,
    connected: bool,
    link: &ClusterLink,
    subject: &str,
    body: &Bytes,
) {
    let stats = &link.stats;
    if !connected {
        stats.publish_failed.fetch_add(1, Relaxed);
        return;
    }
    match client.publish(subject.to_string(), body.clone()).await {
        Ok(()) => {
            stats.messages_out.fetch_add(1, Relaxed);
            stats
                .bytes_out
                .fetch_add((subject.len() + body.len()) as u64, Relaxed);
        }
        Err(_) => {
            stats.publish_failed.fetch_add(1, Relaxed);
        }
    }
}

/// A key-value bucket, made if it does not exist yet; retried until JetStream answers.
/// The bucket's stream is made here as `async-nats` would make it (last value per key,
/// rollups, direct gets), because its `create_key_value` first reads the account in a
/// form servers before 2.10 (Debian's) do not send. Replicas: one per NATS server
/// given, at most 3.
pub(super) async fn bucket(js: &jetstream::Context, name: &str, replicas: usize) -> kv::Store {
    loop {
        if let Ok(store) = js.get_key_value(name).await {
            return store;
        }
        let config = jetstream::stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            num_replicas: replicas.clamp(1, 3),
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        };
        match js.get_or_create_stream(config).await {
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!("cluster: bucket {name} not ready: {e}");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Every key of a bucket: its last value first (with `history`), then each change;
/// retried until JetStream answers.
pub(super) async fn watch(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    history: bool,
) -> kv::Watch {
    loop {
        let store = bucket(js, name, replicas).await;
        let watch = if history {
            store.watch_with_history(">").await
        } else {
            store.watch(">").await
        };
        match watch {
            Ok(w) => return w,
            Err(e) => {
                tracing::debug!("cluster: cannot watch the bucket {name}: {e}");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// The interest bucket's key of a filter of this node.
fn interest_key(node: &str, kind: Kind, filter: &str) -> Option<String> {
    let mut k = String::with_capacity(node.len() + 3 + filter.len());
    k.push_str(node);
    k.push_str(match kind {
        Kind::Plain => ".p.",
        Kind::Group => ".g.",
    });
    filter_key(filter, &mut k).ok()?;
    Some(k)
}

/// This node's interest: the shards' changes counted, and the interest bucket kept equal
/// to what has local interest.
async fn interest(link: Arc<ClusterLink>, js: jetstream::Context) {
    // (kind, filter) → shards with interest.
    let mut counts: HashMap<(Kind, Box<str>), u32> = HashMap::new();
    let mut store: Option<kv::Store> = None;
    // Keys the bucket holds for this node, as far as the link knows.
    let mut written: HashSet<String> = HashSet::new();
    let mut changes: Vec<InterestChange> = Vec::new();
    let mut dirty = true;
    loop {
        let _ = tokio::time::timeout(RETRY, link.interest_rung.notified()).await;
        for pending in &link.interest {
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            changes.append(&mut p);
        }
        for c in changes.drain(..) {
            dirty = true;
            let kind = if c.share { Kind::Group } else { Kind::Plain };
            let key = (kind, c.key);
            let count = counts.entry(key.clone()).or_insert(0);
            if c.add {
                *count += 1;
            } else {
                *count = count.saturating_sub(1);
            }
            let now = *count;
            if now == 0 {
                counts.remove(&key);
            }
        }
        if !dirty {
            continue;
        }
        if store.is_none() {
            let Ok(s) = tokio::time::timeout(
                RETRY,
                bucket(&js, INTEREST_BUCKET, link.settings.urls.len()),
            )
            .await
            else {
                continue;
            };
            // What an earlier run of this node left there goes unless still wanted.
            if let Ok(mut keys) = s.keys().await {
                let mine = format!("{}.", link.node_id());
                while let Some(Ok(k)) = keys.next().await {
                    if k.starts_with(&mine) {
                        written.insert(k);
                    }
                }
            }
            store = Some(s);
        }
        let Some(s) = &store else { continue };
        let wanted: HashSet<String> = counts
            .keys()
            .filter_map(|(kind, f)| interest_key(link.node_id(), *kind, f))
            .collect();
        let mut failed = false;
        for k in wanted.difference(&written).cloned().collect::<Vec<_>>() {
            match s.put(&k, Bytes::new()).await {
                Ok(_) => {
                    written.insert(k);
                }
                Err(_) => failed = true,
            }
        }
        for k in written.difference(&wanted).cloned().collect::<Vec<_>>() {
            match s.delete(&k).await {
                Ok(()) => {
                    written.remove(&k);
                }
                Err(_) => failed = true,
            }
        }
        if failed {
            link.stats.interest_sync_failed.fetch_add(1, Relaxed);
        }
        dirty = failed;
    }
}

/// Reads an interest key of another node: (node, kind, filter).
fn read_interest_key(key: &str) -> Option<(&str, Kind, String)> {
    let (node, rest) = key.split_once('.')?;
    let (kind, filter) = rest.split_once('.')?;
    let kind = match kind {
        "p" => Kind::Plain,
        "g" => Kind::Group,
        _ => return None,
    };
    Some((node, kind, subject::decode(filter).ok()?))
}

/// Watches the interest bucket into the table the shards read, leaving out the nodes
/// not heard from lately (`liveness`).
async fn watch_interest(
    link: Arc<ClusterLink>,
    js: jetstream::Context,
    mut liveness: tokio::sync::watch::Receiver<Liveness>,
) {
    let mut connections = link.connections.subscribe();
    loop {
        let mut watch = watch(&js, INTEREST_BUCKET, link.settings.urls.len(), true).await;
        connections.mark_unchanged();
        // Node → its filters (a group by its whole `$share/G/F`), read again from the
        // bucket on each watch; the table the shards read stays the previous one until
        // the watch has caught up (a message published meanwhile still crosses).
        let mut all: BTreeMap<Arc<str>, BTreeSet<(Kind, Box<str>)>> = BTreeMap::new();
        let mut caught_up = false;
        // A rebuild costs time in proportion to every node's filters: the next one waits
        // at least as long as the last took, so under churn the task spends at most half
        // its time rebuilding, and a table is never more than one rebuild late.
        let mut dirty = false;
        let mut next_build = Instant::now();
        loop {
            if dirty && caught_up && Instant::now() >= next_build {
                let started = Instant::now();
                publish_table(&link, &all, &liveness.borrow_and_update());
                dirty = false;
                next_build = Instant::now() + started.elapsed().max(MIN_REBUILD_GAP);
            }
            let entry = tokio::select! {
                e = watch.next() => e,
                _ = connections.changed() => None,
                _ = liveness.changed() => {
                    dirty = true;
                    continue;
                }
                _ = tokio::time::sleep_until(next_build.into()), if dirty && caught_up => continue,
            };
            let Some(entry) = entry else { break };
            let mut next = Some(entry);
            while let Some(entry) = next.take() {
                let Ok(e) = entry else { break };
                caught_up |= e.seen_current || e.delta == 0;
                if let Some((node, kind, filter)) = read_interest_key(&e.key)
                    && node != link.node_id()
                {
                    let filters = all.entry(node.into()).or_default();
                    match e.operation {
                        kv::Operation::Put => {
                            filters.insert((kind, filter.into()));
                        }
                        kv::Operation::Delete | kv::Operation::Purge => {
                            filters.remove(&(kind, filter.into_boxed_str()));
                        }
                    }
                    if filters.is_empty() {
                        all.remove(node);
                    }
                }
                next = watch.next().now_or_never().flatten();
            }
            dirty = true;
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Swaps in the table of `all`'s nodes that `live` routes to.
fn publish_table(
    link: &ClusterLink,
    all: &BTreeMap<Arc<str>, BTreeSet<(Kind, Box<str>)>>,
    live: &Liveness,
) {
    let routed = all.iter().filter(|(node, _)| live.routes_to(node));
    let routed_nodes = routed.clone().count();
    let table = RemoteInterest::build(routed);
    let s = &link.stats;
    s.remote_filters.store(table.filter_count() as u64, Relaxed);
    s.remote_nodes.store(table.node_count() as u64, Relaxed);
    s.nodes_silent
        .store((all.len() - routed_nodes) as u64, Relaxed);
    s.nodes_left_out
        .store(routed_nodes.saturating_sub(MAX_NODES) as u64, Relaxed);
    link.remote.store(Arc::new(table));
}

/// Writes retained messages to the retained bucket, in the order they were published.
async fn write_retained(
    link: Arc<ClusterLink>,
    js: jetstream::Context,
    mut rx: mpsc::Receiver<(String, Option<Bytes>)>,
) {
    let stats = &link.stats;
    // Until the bucket is there (JetStream electing its leaders, say) the writes wait in
    // the queue.
    let s = bucket(&js, RETAINED_BUCKET, link.settings.urls.len()).await;
    while let Some((key, value)) = rx.recv().await {
        // A write JetStream refuses while it elects a leader or a server is away is
        // tried again, in order, up to RETAINED_TRIES times (0.2 s doubling).
        let mut done = Err(String::new());
        for attempt in 0..RETAINED_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            done = match &value {
                Some(v) => s
                    .put(&key, v.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                None => s.delete(&key).await.map_err(|e| e.to_string()),
            };
            if done.is_ok() {
                break;
            }
        }
        match done {
            Ok(()) => stats.retained_put.fetch_add(1, Relaxed),
            Err(e) => {
                tracing::warn!("cluster: retained {key} not written: {e}");
                stats.retained_failed.fetch_add(1, Relaxed)
            }
        };
    }
}

/// Watches the retained bucket into the shards' stores (from its last values on, again
/// after every interruption).
async fn watch_retained(link: Arc<ClusterLink>, js: jetstream::Context, shards: Arc<Shards>) {
    let mut connections = link.connections.subscribe();
    loop {
        let mut watch = watch(&js, RETAINED_BUCKET, link.settings.urls.len(), true).await;
        connections.mark_unchanged();
        loop {
            let entry = tokio::select! {
                e = watch.next() => e,
                _ = connections.changed() => None,
            };
            let Some(entry) = entry else { break };
            let Ok(e) = entry else { break };
            let Ok(topic) = subject::decode(&e.key) else {
                link.stats.bad_frames.fetch_add(1, Relaxed);
                continue;
            };
            let msg = match e.operation {
                kv::Operation::Put => match Frame::decode(&e.value) {
                    Ok(f) => message(&topic, &f),
                    Err(_) => {
                        link.stats.bad_frames.fetch_add(1, Relaxed);
                        continue;
                    }
                },
                // An empty retained message removes the topic's.
                kv::Operation::Delete | kv::Operation::Purge => {
                    Message::new(&topic, &[], &[], QoS::AtMostOnce, true, None, None)
                }
            };
            link.stats.retained_in.fetch_add(1, Relaxed);
            // One topic's updates always to the same shard, in order.
            let i = shards.for_publisher(&topic, 0);
            if !shards
                .hand(i, AdminRequest::ClusterRetain(Arc::new(msg)))
                .await
            {
                return;
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}
