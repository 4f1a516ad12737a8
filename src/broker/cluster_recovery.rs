//! In a cluster, the shard's side of checking the sessions it recovered from its log
//! against the session registry (`crate::cluster::reconcile`): it lists those still
//! offline and untouched since startup (`Sessions::is_recovered`: no CONNECT has claimed
//! them, none moved), a page of its session table at a time, and ends one the registry
//! gives to another node. Both answer at once, within one loop turn.

use std::sync::atomic::Ordering::Relaxed;

use super::admin::Reply;
use super::{Broker, Io};
use crate::store::record::EndReason;

/// Session table slots one `AdminRequest::ClusterRecovered` looks at.
pub const RECOVERED_PAGE: usize = 1024;

impl Broker {
    /// The client ids of the sessions recovered here and still untouched, in up to
    /// [`RECOVERED_PAGE`] slots of the session table from slot `from`, and the slot to go
    /// on from (`None`: past the last).
    pub(super) fn cluster_recovered(
        &self,
        from: usize,
        reply: Reply<(Vec<Box<str>>, Option<usize>)>,
    ) {
        let mut client_ids = Vec::new();
        let next = self.sessions.scan(from, RECOVERED_PAGE, |sid, s| {
            if self.sessions.is_recovered(sid) {
                client_ids.push(s.client_id.as_str().into());
            }
        });
        let _ = reply.send((client_ids, next));
    }

    /// The registry names another node as the holder of the session of `client_id`: the
    /// copy this shard recovered from its log is stale (its client connected to that
    /// node while this one was down) and ends here, if it is still untouched since
    /// startup (else a CONNECT here claimed it since, which settles it with the
    /// registry).
    ///
    /// It ends as `end_session` with `EndReason::Discarded` ends a session — its log
    /// record ended, its subscriptions (and the interest they gave other shards and
    /// nodes) removed, the QoS 2 messages it never released forgotten, its home shard
    /// told — but the registry is not handed a release: the key is the other node's,
    /// and must stay. No will is published (`end_session` publishes none; only a
    /// connection's end or a takeover, `kick_connection`, does). The only will a
    /// recovered session can hold is a delayed one, from the connection this node lost
    /// when it went down, its delay counted from startup; its client has connected
    /// again since (on the other node), and a new connection within the delay means no
    /// will (MQTT-3.1.3-9).
    pub(super) fn cluster_recovered_stale(&mut self, io: &mut Io, client_id: &str) {
        let Some(sid) = self.sessions.find(client_id) else {
            return;
        };
        if !self.sessions.is_recovered(sid) {
            return;
        }
        if let Some(link) = &self.shared.cluster {
            link.stats.recovered_sessions_dropped.fetch_add(1, Relaxed);
        }
        tracing::info!(
            client_id,
            shard = self.peers.id,
            "recovered session ended: the session registry names another node"
        );
        if let Some(session) = self.take_session(sid, EndReason::Discarded) {
            self.release_at_home(io, &session);
        }
    }

    /// Every recovered session has been checked against the registry: the shard
    /// forgets which sessions it recovered.
    pub(super) fn cluster_recovered_checked(&mut self) {
        self.sessions.forget_recovered();
    }
}
