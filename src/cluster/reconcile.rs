//! A node restarted with its data directory brings back the persistent sessions its log
//! held (`broker::recovery`). While it was away, their clients may have connected to
//! other nodes, which could not have the sessions handed over and started new ones: the
//! copies here would go on taking their messages into queues nobody reads until they
//! expire. So once the sessions bucket answers, each session recovered here that is
//! still offline and has had no CONNECT since startup (one that has is the registry's
//! business, as for any CONNECT) is checked against its key ([`decide`]):
//! - the key names another node: the copy here is stale and ends
//!   (`AdminRequest::ClusterRecoveredStale`; `cluster_recovered_sessions_dropped_total`);
//! - no node (no key, a deleted one, or a value that names no node): this node writes
//!   itself there with compare-and-set on what it read; a write that fails because
//!   another node wrote first is followed by a new read;
//! - this node: the session stays, and the registry task keeps the revision, as it does
//!   for a session a CONNECT claimed, so that the session's end deletes the key.
//!
//! Bounded and off the shards: each shard lists its candidates a page of its session
//! table at a time (`AdminRequest::ClusterRecovered`), and the reads run here, on the
//! Tokio runtime, [`CHECKS_AT_ONCE`] at a time. A round that fails (NATS or JetStream
//! away) stops, and goes on from the page where it stopped when the link reconnects (or
//! after [`RETRY`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::ClusterLink;
use super::link::Shards;
use super::registry::{KV_WAIT, connected, holder_of, key_of};
use crate::broker::AdminRequest;

/// Registry reads (and writes) in flight at once.
pub(super) const CHECKS_AT_ONCE: usize = 64;
/// How long a failed round waits for a reconnect before it is tried again anyway.
const RETRY: Duration = Duration::from_secs(10);
/// Reads of one key before its check is given up for this round (each failed write,
/// another node having written first, costs one).
const READS_PER_KEY: usize = 3;

/// What the registry's entry for a recovered session calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// It names this node, at `revision`: the session stays.
    Keep { revision: u64 },
    /// It names another node: the session here is stale.
    Stale,
    /// It names no node: this node writes itself there, expecting the revision read
    /// (`None`: there is no key).
    Register { expect: Option<u64> },
}

/// Decides for a key's last entry as read, `(operation, value, revision)` (`None`: no
/// such key), on node `node`.
pub(super) fn decide(entry: Option<(kv::Operation, &[u8], u64)>, node: &str) -> Decision {
    let Some((operation, value, revision)) = entry else {
        return Decision::Register { expect: None };
    };
    match holder_of(operation, value) {
        Some(h) if h == node => Decision::Keep { revision },
        Some(_) => Decision::Stale,
        // Deleted, purged, or not a node's name: nobody holds it.
        None => Decision::Register {
            expect: Some(revision),
        },
    }
}

/// A check's end, for the registry task (which holds the table of held sessions).
pub(super) enum Verdict {
    /// The session of `key` stays here; this node holds the key at `revision`.
    Keep { key: String, revision: u64 },
    /// The session of `client_id` (whose key is `key`) on shard `shard` is stale.
    Stale {
        key: String,
        shard: usize,
        client_id: Box<str>,
    },
    /// Every recovered session has been checked.
    Done,
}

/// Checks every session the shards recovered, until all are checked; `verdicts` to the
/// registry task.
pub(super) async fn run(
    link: Arc<ClusterLink>,
    shards: Arc<Shards>,
    client: async_nats::Client,
    store: kv::Store,
    node: Arc<str>,
    verdicts: mpsc::Sender<Verdict>,
) {
    let mut connections = link.connections.subscribe();
    // Where each shard's walk goes on from (`None`: done).
    let mut walks: Vec<Option<usize>> = vec![Some(0); shards.controls.len()];
    let ctx = Check {
        client: &client,
        store: &store,
        node: &node,
        verdicts: &verdicts,
    };
    loop {
        connections.mark_unchanged();
        if ctx.walk(&shards, &mut walks).await {
            let _ = verdicts.send(Verdict::Done).await;
            return;
        }
        if verdicts.is_closed() {
            return;
        }
        link.stats.registry_failed.fetch_add(1, Relaxed);
        tracing::info!(
            "cluster: the session registry could not be read for every recovered session; \
             going on when NATS is back"
        );
        tokio::select! {
            changed = connections.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// What a round of checks works with.
struct Check<'a> {
    client: &'a async_nats::Client,
    store: &'a kv::Store,
    node: &'a str,
    verdicts: &'a mpsc::Sender<Verdict>,
}

impl Check<'_> {
    /// Walks each shard's recovered sessions from where its walk stopped; true once
    /// every shard's are checked.
    async fn walk(&self, shards: &Shards, walks: &mut [Option<usize>]) -> bool {
        for (shard, walk) in walks.iter_mut().enumerate() {
            while let Some(from) = *walk {
                let (reply, page) = oneshot::channel();
                let request = AdminRequest::ClusterRecovered { from, reply };
                // A shard that has stopped has nothing left to check.
                if !shards.hand(shard, request).await {
                    *walk = None;
                    break;
                }
                let Ok((client_ids, next)) = page.await else {
                    *walk = None;
                    break;
                };
                if !self.page(shard, client_ids).await {
                    return false;
                }
                *walk = next;
            }
        }
        true
    }

    /// Checks one page of shard `shard`'s recovered sessions; false if any check failed
    /// (those after the first failure are not tried: the page is taken again).
    async fn page(&self, shard: usize, client_ids: Vec<Box<str>>) -> bool {
        let failed = AtomicBool::new(false);
        let failed = &failed;
        let mut checks = futures_util::stream::iter(client_ids)
            .map(|client_id| async move {
                // A client id too long for a key is never in the registry (its CONNECTs
                // go on unregistered): nothing to check.
                let key = key_of(&client_id)?;
                if failed.load(Relaxed) || !connected(self.client) {
                    failed.store(true, Relaxed);
                    return None;
                }
                let verdict = match self.holder(&key).await {
                    Some(Decision::Keep { revision }) => Verdict::Keep { key, revision },
                    Some(Decision::Stale) => Verdict::Stale {
                        key,
                        shard,
                        client_id,
                    },
                    _ => {
                        failed.store(true, Relaxed);
                        return None;
                    }
                };
                Some(verdict)
            })
            .buffer_unordered(CHECKS_AT_ONCE);
        while let Some(verdict) = checks.next().await {
            if let Some(v) = verdict
                && self.verdicts.send(v).await.is_err()
            {
                return false;
            }
        }
        !failed.load(Relaxed)
    }

    /// Reads the key of a recovered session, and registers this node where it names no
    /// node: `Keep` or `Stale`, or `None` if the registry did not answer.
    async fn holder(&self, key: &str) -> Option<Decision> {
        for _ in 0..READS_PER_KEY {
            let entry = match tokio::time::timeout(KV_WAIT, self.store.entry(key)).await {
                Ok(Ok(e)) => e,
                _ => return None,
            };
            let read = entry
                .as_ref()
                .map(|e| (e.operation, &e.value[..], e.revision));
            let decision = decide(read, self.node);
            let Decision::Register { expect } = decision else {
                return Some(decision);
            };
            let me = Bytes::from(self.node.to_string());
            // `Err(true)`: another node wrote the key since it was read.
            let written = match expect {
                None => tokio::time::timeout(KV_WAIT, self.store.create(key, me))
                    .await
                    .map(|w| w.map_err(|e| e.kind() == kv::CreateErrorKind::AlreadyExists)),
                Some(r) => tokio::time::timeout(KV_WAIT, self.store.update(key, me, r))
                    .await
                    .map(|w| w.map_err(|e| e.kind() == kv::UpdateErrorKind::WrongLastRevision)),
            };
            match written {
                Ok(Ok(revision)) => return Some(Decision::Keep { revision }),
                Ok(Err(true)) => continue,
                _ => return None,
            }
        }
        None
    }
}

/// The registry names another node for the session of `client_id`, recovered on shard
/// `shard`: that shard ends it, if it is still offline and unclaimed there.
pub(super) async fn end_stale(shards: &Shards, shard: usize, client_id: Box<str>) {
    shards
        .hand(shard, AdminRequest::ClusterRecoveredStale(client_id))
        .await;
}

/// Every recovered session has been checked: the shards forget which they recovered.
pub(super) async fn checked(shards: &Shards) {
    for i in 0..shards.controls.len() {
        shards.hand(i, AdminRequest::ClusterRecoveredChecked).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv::Operation::{Delete, Purge, Put};

    #[test]
    fn a_recovered_session_is_kept_ended_or_registered_as_its_key_says() {
        let me = "node-a";
        // This node: kept, at the revision read.
        assert_eq!(
            decide(Some((Put, b"node-a", 7)), me),
            Decision::Keep { revision: 7 }
        );
        // Another node: stale here.
        assert_eq!(decide(Some((Put, b"node-b", 9)), me), Decision::Stale);
        assert_eq!(decide(Some((Put, b"node-a2", 9)), me), Decision::Stale);
        // Nobody: registered, with compare-and-set on what was read.
        assert_eq!(decide(None, me), Decision::Register { expect: None });
        for op in [Delete, Purge] {
            assert_eq!(
                decide(Some((op, b"", 4)), me),
                Decision::Register { expect: Some(4) }
            );
            // A deletion's value is not a holder, even if it reads as one.
            assert_eq!(
                decide(Some((op, b"node-b", 4)), me),
                Decision::Register { expect: Some(4) }
            );
        }
        // A value that names no node (not UTF-8, empty, not a node id).
        for junk in [&b"\xff\xfe"[..], b"", b"node a", b"node.b"] {
            assert_eq!(
                decide(Some((Put, junk, 5)), me),
                Decision::Register { expect: Some(5) },
                "{junk:?}"
            );
        }
    }
}
