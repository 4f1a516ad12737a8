//! The session registry: a key per client id in the sessions bucket
//! ([`SESSIONS_BUCKET`]) naming the node that holds its session, and the handover of a
//! session between nodes.
//!
//! A CONNECT here asks the registry before its CONNACK ([`ClaimRequest`], from the
//! shard; never waited for on the shard's loop):
//! 1. the client id's entry is read, and this node written in its place with
//!    compare-and-set on the revision read. Of two CONNECTs with one client id on two
//!    nodes at once, one write fails: that CONNECT is refused ("server busy"), so the
//!    cluster ends with one session;
//! 2. if another node held the session, it is asked for it (`ringmq.h.NODE`, a NATS
//!    request): that node closes the old connection (its will published as a takeover
//!    publishes it) and answers the session's image (`broker::handover`) — in chunks
//!    when it is larger than a NATS message — or nothing (no session there, or a clean
//!    start, which ends it there);
//! 3. the shard goes on with the session handed over, or a new one.
//!
//! Without NATS or JetStream the CONNECT goes on at once (counted): a node serves its
//! own clients while the cluster is away. A node that sees another node claim a
//! session it holds, and is not asked for it within [`HANDOVER_GRACE`] (the claiming
//! node could not reach it), ends the session itself. A session that ends for good
//! here deletes its key (if no other node wrote it since), so the bucket holds a key per
//! live session, not per client id ever seen. The sessions a restarted node recovered
//! from its log are checked against their keys once the bucket answers
//! ([`super::reconcile`]): kept and held as a claim's, registered, or ended here.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::link::{Shards, bucket, subscribe, watch};
use super::reconcile::{self, Verdict};
use super::{
    ClaimOutcome, ClaimRequest, ClusterLink, PREFIX, SESSIONS_BUCKET, SessionEvent, subject,
    valid_node_id,
};
use crate::broker::AdminRequest;
use crate::broker::handover::{self, MAX_IMAGE};

/// How long a CONNECT waits for one registry operation before it goes on without it.
pub(super) const KV_WAIT: Duration = Duration::from_secs(2);
/// How long a CONNECT waits for the node that held its session to hand it over (each
/// chunk of it).
const HANDOVER_WAIT: Duration = Duration::from_secs(3);
/// How long a node that sees another node claim one of its sessions waits to be asked
/// for it before it ends the session itself: longer than a claim can take.
const HANDOVER_GRACE: Duration = Duration::from_secs(10);
/// Room left in a NATS message beside a chunk of an image.
const CHUNK_SLACK: usize = 1024;

/// The first byte of a handover answer and of each chunk after it.
const NO_SESSION: u8 = 0;
const LAST_CHUNK: u8 = 1;
const MORE_CHUNKS: u8 = 2;

/// A client id whose session this node holds, in the registry.
#[derive(Default)]
struct Held {
    /// Claims being written.
    writing: u32,
    /// The order of the latest claim here.
    claim_seq: u64,
    /// The revision of this node's latest write.
    revision: u64,
    /// The newest revision another node wrote.
    newest_elsewhere: u64,
}

/// A claim's end: the answer for the shard, and the revision written (if one was).
struct Claimed {
    key: String,
    request: ClaimRequest,
    revision: Option<u64>,
    outcome: ClaimOutcome,
}

/// A change of the sessions bucket.
struct Change {
    key: String,
    revision: u64,
    /// The node that wrote it; `None` for a deletion.
    node: Option<Vec<u8>>,
}

/// The client id's key in the sessions bucket (one token); `None` if it is too long.
pub(super) fn key_of(client_id: &str) -> Option<String> {
    let mut key = String::new();
    subject::push_level(client_id, &mut key);
    (key.len() <= subject::MAX_SUBJECT).then_some(key)
}

pub(super) fn connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

/// Runs the registry: CONNECTs here, session events of the shards, handover requests
/// of other nodes, and the bucket's changes.
pub(super) async fn run(
    link: Arc<ClusterLink>,
    js: jetstream::Context,
    client: async_nats::Client,
    shards: Arc<Shards>,
) {
    let Some(mut claims) = link.take_claims() else {
        return;
    };
    let replicas = link.settings.urls.len();
    let node: Arc<str> = link.node_id().into();
    // The bucket once JetStream answers; CONNECTs meanwhile go on without it.
    let (store_tx, mut store_rx) = oneshot::channel();
    let bucket_js = js.clone();
    tokio::spawn(async move {
        let _ = store_tx.send(bucket(&bucket_js, SESSIONS_BUCKET, replicas).await);
    });
    let mut store: Option<kv::Store> = None;
    let (change_tx, mut changes) = mpsc::channel(1024);
    tokio::spawn(watch_sessions(link.clone(), js, change_tx));
    let mut asks = subscribe(&client, format!("{PREFIX}.h.{node}")).await;
    let (done_tx, mut done) = mpsc::channel::<Claimed>(1024);
    let (written_tx, mut written) = mpsc::channel::<(String, Option<u64>)>(1024);
    let (late_tx, mut late) = mpsc::channel::<String>(1024);
    // The client ids (as keys) whose sessions this node holds (bounded by its sessions).
    let mut held: HashMap<String, Held> = HashMap::new();
    // Client ids another node asked for while this node held them, and when: a session
    // of one that was still connecting here (so not found to hand over) is ended as
    // soon as it is here (bounded: pruned past HANDOVER_GRACE, and by `held`).
    let mut overtaken: HashMap<String, std::time::Instant> = HashMap::new();
    let mut events: Vec<SessionEvent> = Vec::new();
    // What the check of the recovered sessions finds, started once the bucket answers.
    let (verdict_tx, mut verdicts) = mpsc::channel::<Verdict>(reconcile::CHECKS_AT_ONCE);
    let mut verdict_tx = Some(verdict_tx);
    let stats = &link.stats;
    loop {
        tokio::select! {
            s = &mut store_rx, if store.is_none() => {
                store = s.ok();
                if let (Some(store), Some(tx)) = (&store, verdict_tx.take()) {
                    let (link, shards) = (link.clone(), shards.clone());
                    let (client, node, store) = (client.clone(), node.clone(), store.clone());
                    tokio::spawn(reconcile::run(link, shards, client, store, node, tx));
                }
            }
            Some(v) = verdicts.recv() => {
                if !matches!(v, Verdict::Done) {
                    stats.recovered_sessions_checked.fetch_add(1, Relaxed);
                }
                match v {
                    // Claimed by a CONNECT here since the check read it: the claim
                    // settles it.
                    Verdict::Keep { key, .. } | Verdict::Stale { key, .. }
                        if held.contains_key(&key) => {}
                    Verdict::Keep { key, revision } => {
                        held.insert(key, Held { revision, ..Held::default() });
                    }
                    Verdict::Stale { shard, client_id, .. } => {
                        reconcile::end_stale(&shards, shard, client_id).await;
                    }
                    Verdict::Done => reconcile::checked(&shards).await,
                }
            }
            Some(request) = claims.recv() => {
                let Some(key) = key_of(&request.client_id) else {
                    stats.registry_failed.fetch_add(1, Relaxed);
                    answer(&shards, request, ClaimOutcome::Proceed);
                    continue;
                };
                // A new CONNECT here: whatever overtook an earlier one is past.
                overtaken.remove(&key);
                let Some(store) = store.clone().filter(|_| connected(&client)) else {
                    stats.claims_unregistered.fetch_add(1, Relaxed);
                    answer(&shards, request, ClaimOutcome::Proceed);
                    continue;
                };
                held.entry(key.clone()).or_default().writing += 1;
                let (client, node, tx) = (client.clone(), node.clone(), done_tx.clone());
                let (link, shards) = (link.clone(), shards.clone());
                tokio::spawn(async move {
                    // The session comes back to a node where it left a stub: the stub
                    // ends first, or it would forward to where the session no longer is.
                    if link.take_stub(&request.client_id) {
                        for i in 0..shards.controls.len() {
                            let id = request.client_id.clone();
                            shards.hand(i, AdminRequest::ClusterStubEnd(id)).await;
                        }
                    }
                    let (revision, outcome) = claim(&link, &store, &client, &node, &key, &request).await;
                    let _ = tx.send(Claimed { key, request, revision, outcome }).await;
                });
            }
            Some(c) = done.recv() => {
                let Claimed { key, request, revision, outcome } = c;
                if let Some(h) = held.get_mut(&key) {
                    h.writing = h.writing.saturating_sub(1);
                    h.revision = h.revision.max(revision.unwrap_or(0));
                    if h.writing == 0 && h.revision == 0 {
                        held.remove(&key);
                    }
                }
                match (&outcome, revision) {
                    (ClaimOutcome::Refused, _) => stats.claims_refused.fetch_add(1, Relaxed),
                    (_, Some(_)) => stats.sessions_claimed.fetch_add(1, Relaxed),
                    (_, None) => stats.claims_unregistered.fetch_add(1, Relaxed),
                };
                answer(&shards, request, outcome);
            }
            _ = link.sessions_rung.notified() => {
                for pending in &link.sessions {
                    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                    events.append(&mut p);
                }
                // In the order the shards made them.
                events.sort_by_key(|e| match e {
                    SessionEvent::Claim(_, s) | SessionEvent::Release(_, s) => *s,
                });
                for e in events.drain(..) {
                    let (id, seq, claim) = match e {
                        SessionEvent::Claim(id, s) => (id, s, true),
                        SessionEvent::Release(id, s) => (id, s, false),
                    };
                    let Some(key) = key_of(&id) else { continue };
                    if !claim {
                        // A release older than the latest claim is for an earlier session.
                        let ended = held
                            .get(&key)
                            .is_some_and(|h| h.writing == 0 && h.claim_seq < seq);
                        if ended && let Some(h) = held.remove(&key) {
                            forget(&store, &key, h.revision);
                        }
                        continue;
                    }
                    if overtaken
                        .remove(&key)
                        .is_some_and(|at| at.elapsed() < HANDOVER_GRACE)
                    {
                        // Asked for by another node while still connecting here.
                        held.remove(&key);
                        take_over(&shards, &key).await;
                        continue;
                    }
                    let h = held.entry(key.clone()).or_default();
                    h.claim_seq = h.claim_seq.max(seq);
                    // Registered by its CONNECT already.
                    if h.revision != 0 || h.writing != 0 {
                        continue;
                    }
                    // Its CONNECT went on without the registry: written now, if it can be.
                    let Some(store) = store.clone() else {
                        stats.registry_failed.fetch_add(1, Relaxed);
                        continue;
                    };
                    h.writing += 1;
                    let (tx, node) = (written_tx.clone(), node.clone());
                    tokio::spawn(async move {
                        let rev = store.put(&key, Bytes::from(node.to_string())).await.ok();
                        let _ = tx.send((key, rev)).await;
                    });
                }
            }
            Some((key, rev)) = written.recv() => {
                match rev {
                    Some(_) => stats.sessions_claimed.fetch_add(1, Relaxed),
                    None => stats.registry_failed.fetch_add(1, Relaxed),
                };
                let Some(h) = held.get_mut(&key) else { continue };
                h.writing = h.writing.saturating_sub(1);
                h.revision = h.revision.max(rev.unwrap_or(0));
                if h.writing == 0 && h.newest_elsewhere > h.revision {
                    later(&late_tx, key);
                }
            }
            Some(m) = next(&mut asks) => {
                let Some(ask) = Ask::read(&m.payload) else {
                    stats.bad_frames.fetch_add(1, Relaxed);
                    continue;
                };
                let Some(reply) = m.reply else { continue };
                if let Some(key) = key_of(&ask.client_id)
                    && held.remove(&key).is_some()
                {
                    let now = std::time::Instant::now();
                    overtaken.retain(|_, at| now.duration_since(*at) < HANDOVER_GRACE);
                    overtaken.insert(key, now);
                }
                let (shards, client) = (shards.clone(), client.clone());
                tokio::spawn(async move { hand_over(&shards, &client, ask, reply.to_string()).await });
            }
            Some(c) = changes.recv() => {
                if c.node.as_deref() == Some(node.as_bytes()) {
                    continue;
                }
                let Some(h) = held.get_mut(&c.key) else { continue };
                h.newest_elsewhere = h.newest_elsewhere.max(c.revision);
                if h.writing == 0 && h.newest_elsewhere > h.revision {
                    later(&late_tx, c.key);
                }
            }
            Some(key) = late.recv() => {
                // Not asked for it: the claiming node could not reach this one.
                let overtaken = held
                    .get(&key)
                    .is_some_and(|h| h.writing == 0 && h.newest_elsewhere > h.revision);
                if overtaken {
                    held.remove(&key);
                    take_over(&shards, &key).await;
                }
            }
        }
    }
}

/// The next handover request, or never without a subscription.
async fn next(asks: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match asks {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Checks again after [`HANDOVER_GRACE`] whether another node overtook session `key`.
fn later(late: &mpsc::Sender<String>, key: String) {
    let late = late.clone();
    tokio::spawn(async move {
        tokio::time::sleep(HANDOVER_GRACE).await;
        let _ = late.send(key).await;
    });
}

/// Deletes the key of a session that ended here, unless another node wrote it since.
fn forget(store: &Option<kv::Store>, key: &str, revision: u64) {
    let (Some(store), true) = (store.clone(), revision != 0) else {
        return;
    };
    let key = key.to_string();
    tokio::spawn(async move {
        let _ = store.delete_expect_revision(&key, Some(revision)).await;
    });
}

/// The node a key's entry (`operation`, `value`) names as the holder: none for a
/// deletion, or a value that is no node's name.
pub(super) fn holder_of(operation: kv::Operation, value: &[u8]) -> Option<&str> {
    (operation == kv::Operation::Put)
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
        .filter(|h| valid_node_id(h))
}

/// Hands the registry's answer to the shard of the CONNECT.
fn answer(shards: &Arc<Shards>, request: ClaimRequest, outcome: ClaimOutcome) {
    let shards = shards.clone();
    tokio::spawn(async move {
        let i = request.shard;
        let claimed = AdminRequest::ClusterClaimed {
            conn: request.conn,
            client_id: request.client_id,
            outcome,
        };
        shards.hand(i, claimed).await;
    });
}

/// Registers this node as the holder of the session of `key` (compare-and-set on the
/// revision read), then asks the node that held it for it. Returns the revision written.
async fn claim(
    link: &ClusterLink,
    store: &kv::Store,
    client: &async_nats::Client,
    node: &str,
    key: &str,
    request: &ClaimRequest,
) -> (Option<u64>, ClaimOutcome) {
    let (holder, revision) = match tokio::time::timeout(KV_WAIT, store.entry(key)).await {
        Ok(Ok(Some(e))) => (
            holder_of(e.operation, &e.value).map(String::from),
            Some(e.revision),
        ),
        Ok(Ok(None)) => (None, None),
        _ => return (None, ClaimOutcome::Proceed),
    };
    let me = Bytes::from(node.to_string());
    let written = match revision {
        Some(r) => tokio::time::timeout(KV_WAIT, store.update(key, me, r))
            .await
            .map(|w| w.map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision)),
        None => tokio::time::timeout(KV_WAIT, store.create(key, me))
            .await
            .map(|w| w.map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists)),
    };
    let revision = match written {
        Ok(Ok(r)) => r,
        // Another CONNECT wrote between the read and the write.
        Ok(Err(true)) => return (None, ClaimOutcome::Refused),
        _ => return (None, ClaimOutcome::Proceed),
    };
    let Some(holder) = holder.filter(|h| h != node) else {
        return (Some(revision), ClaimOutcome::Proceed);
    };
    // What its stub there forwards comes to the claiming shard, even before the session.
    link.arriving(&request.client_id, request.shard);
    let outcome = match ask_for(
        client,
        node,
        &holder,
        &request.client_id,
        request.clean_start,
    )
    .await
    {
        Ok(None) => ClaimOutcome::Proceed,
        Ok(Some(image)) => match handover::decode(&image) {
            Ok(moving) if *moving.session.client_id == *request.client_id => {
                link.stats.handovers_in.fetch_add(1, Relaxed);
                ClaimOutcome::Session(Box::new(moving))
            }
            other => {
                if let Err(e) = other {
                    tracing::warn!(
                        client_id = &*request.client_id,
                        "cluster: a session image from {holder} was refused: {e:?}"
                    );
                }
                link.stats.handovers_failed.fetch_add(1, Relaxed);
                ClaimOutcome::Proceed
            }
        },
        Err(why) => {
            tracing::info!(
                client_id = &*request.client_id,
                "cluster: {holder} did not hand over the session: {why}"
            );
            link.stats.handovers_failed.fetch_add(1, Relaxed);
            ClaimOutcome::Proceed
        }
    };
    (Some(revision), outcome)
}

/// A handover request: `[clean start][inbox length][inbox][node length][node][client id]`.
struct Ask {
    clean_start: bool,
    /// Where the chunks after the first go.
    inbox: String,
    /// The node that asks.
    node: Arc<str>,
    client_id: Box<str>,
}

impl Ask {
    fn write(&self) -> Bytes {
        let mut b =
            Vec::with_capacity(3 + self.inbox.len() + self.node.len() + self.client_id.len());
        b.push(u8::from(self.clean_start));
        b.push(self.inbox.len() as u8);
        b.extend_from_slice(self.inbox.as_bytes());
        b.push(self.node.len() as u8);
        b.extend_from_slice(self.node.as_bytes());
        b.extend_from_slice(self.client_id.as_bytes());
        b.into()
    }

    fn read(b: &[u8]) -> Option<Ask> {
        fn string(b: &[u8]) -> Option<(&str, &[u8])> {
            let (&n, rest) = b.split_first()?;
            let n = n as usize;
            let s = std::str::from_utf8(rest.get(..n)?).ok()?;
            Some((s, &rest[n..]))
        }
        let (&clean, rest) = b.split_first()?;
        let (inbox, rest) = string(rest)?;
        let (node, rest) = string(rest)?;
        let client_id = std::str::from_utf8(rest).ok()?;
        if clean > 1 || !valid_node_id(node) {
            return None;
        }
        Some(Ask {
            clean_start: clean == 1,
            inbox: inbox.into(),
            node: node.into(),
            client_id: client_id.into(),
        })
    }
}

/// Asks node `holder` for the session of `client_id`: its image, or `None`.
async fn ask_for(
    client: &async_nats::Client,
    node: &str,
    holder: &str,
    client_id: &str,
    clean_start: bool,
) -> Result<Option<Vec<u8>>, String> {
    let inbox = client.new_inbox();
    let mut chunks = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    let ask = Ask {
        clean_start,
        inbox,
        node: node.into(),
        client_id: client_id.into(),
    };
    let first = tokio::time::timeout(
        HANDOVER_WAIT,
        client.request(format!("{PREFIX}.h.{holder}"), ask.write()),
    )
    .await
    .map_err(|_| "no answer".to_string())?
    .map_err(|e| e.to_string())?;
    let mut image = Vec::new();
    let mut part = first.payload;
    loop {
        let Some((&flag, data)) = part.split_first() else {
            return Err("an empty answer".into());
        };
        match flag {
            NO_SESSION => return Ok(None),
            LAST_CHUNK | MORE_CHUNKS => {}
            _ => return Err(format!("an answer marked {flag}")),
        }
        if image.len() + data.len() > MAX_IMAGE {
            return Err("an image past its bound".into());
        }
        image.extend_from_slice(data);
        if flag == LAST_CHUNK {
            return Ok(Some(image));
        }
        part = match tokio::time::timeout(HANDOVER_WAIT, chunks.next()).await {
            Ok(Some(m)) => m.payload,
            _ => return Err("a chunk did not come".into()),
        };
    }
}

/// Answers another node's request for a session: every shard is asked, the one that
/// holds it closes its connection and answers its image, sent in chunks that fit a
/// NATS message.
async fn hand_over(shards: &Shards, client: &async_nats::Client, ask: Ask, reply: String) {
    let mut answers = Vec::with_capacity(shards.controls.len());
    for i in 0..shards.controls.len() {
        let (tx, rx) = oneshot::channel();
        let request = AdminRequest::ClusterHandover {
            client_id: ask.client_id.clone(),
            clean_start: ask.clean_start,
            to: ask.node.clone(),
            reply: tx,
        };
        if shards.hand(i, request).await {
            answers.push(rx);
        }
    }
    let mut image = None;
    for rx in answers {
        if let Ok(Some(i)) = rx.await {
            image = Some(i);
        }
    }
    let Some(image) = image else {
        let _ = client
            .publish(reply, Bytes::from_static(&[NO_SESSION]))
            .await;
        return;
    };
    shards.link.stub_left(&ask.client_id);
    let chunk = (client.server_info().max_payload.saturating_sub(CHUNK_SLACK)).max(4096);
    let mut pieces = image.chunks(chunk).peekable();
    let mut to = reply;
    // An empty image is still one (last) chunk.
    let mut first = true;
    while first || pieces.peek().is_some() {
        let piece = pieces.next().unwrap_or(&[]);
        let flag = if pieces.peek().is_some() {
            MORE_CHUNKS
        } else {
            LAST_CHUNK
        };
        let mut b = Vec::with_capacity(1 + piece.len());
        b.push(flag);
        b.extend_from_slice(piece);
        if client.publish(to.clone(), b.into()).await.is_err() {
            return;
        }
        if first {
            to = ask.inbox.clone();
            first = false;
        }
    }
    let _ = client.flush().await;
}

/// Watches the sessions bucket (from now on, again after every interruption) into
/// `tx`.
async fn watch_sessions(link: Arc<ClusterLink>, js: jetstream::Context, tx: mpsc::Sender<Change>) {
    let replicas = link.settings.urls.len();
    let mut connections = link.connections.subscribe();
    loop {
        let mut w = watch(&js, SESSIONS_BUCKET, replicas, false).await;
        connections.mark_unchanged();
        loop {
            let entry = tokio::select! {
                e = w.next() => e,
                _ = connections.changed() => None,
            };
            let Some(Ok(e)) = entry else { break };
            let node = (e.operation == kv::Operation::Put).then(|| e.value.to_vec());
            let change = Change {
                key: e.key,
                revision: e.revision,
                node,
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Ends the session of the client id `key` names on whichever shard holds it.
async fn take_over(shards: &Shards, key: &str) {
    let mut id = Vec::new();
    if subject::decode_level(key, &mut id).is_err() {
        return;
    }
    let Ok(id) = String::from_utf8(id) else {
        return;
    };
    for i in 0..shards.controls.len() {
        shards
            .hand(i, AdminRequest::ClusterTakeover(id.as_str().into()))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handover_request_reads_back() {
        let ask = Ask {
            clean_start: true,
            inbox: "_INBOX.abc".into(),
            node: "node-b".into(),
            client_id: "dev/1 é".into(),
        };
        let b = ask.write();
        let back = Ask::read(&b).unwrap();
        assert!(back.clean_start);
        assert_eq!(back.inbox, "_INBOX.abc");
        assert_eq!(&*back.node, "node-b");
        assert_eq!(&*back.client_id, "dev/1 é");
        // Cut short, or a flag that is not a flag: refused.
        assert!(Ask::read(&b[..5]).is_none());
        let mut bad = b.to_vec();
        bad[0] = 7;
        assert!(Ask::read(&bad).is_none());
        assert!(Ask::read(&[]).is_none());
    }
}
