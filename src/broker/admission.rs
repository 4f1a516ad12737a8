//! Admission: who may connect (the ban list, connections per address, the credentials),
//! for how long (a token's expiry), and the rules each connection carries (its
//! [`ClientAcl`]), kept current when the configuration is reloaded.
//!
//! The order a CONNECT meets them (after the client id is settled in `connect`):
//!
//! 1. Its address had `max_connections_per_ip` open when it was accepted (`opened`):
//!    CONNACK 0x97 Quota exceeded (3.1.1: 0x03 Server unavailable).
//! 2. Its client id or address is banned for flapping: 0x8A Banned (3.1.1: 0x05).
//! 3. [`Authenticator::authenticate`]: allowed at once (no credentials to verify, or
//!    verified ones in the cache), refused (`auth::Refusal`'s codes), or parked.
//! 4. A will the client may not publish: 0x87 Not authorized (3.1.1: 0x05), as mosquitto
//!    decides.
//!
//! A parked CONNECT waits in `Phase::Authenticating` while the verification pool hashes
//! or checks a signature off the shard: what the client sends meanwhile waits in its
//! carry buffer, its CONNECT timeout still runs. The answer comes on this shard's reply
//! channel, read every turn (`take_verified`); the pool rings the shard's doorbell so a
//! sleeping shard wakes for it.
//!
//! A token's `exp` closes the connection when it passes (checked once a second): MQTT 5
//! clients get DISCONNECT 0x87 Not authorized (as EMQX sends), which tells them to come
//! back with new credentials.
//!
//! A reload (SIGHUP) puts a new generation of the authenticator in `Shared::auth`; each
//! shard picks it up at its next tick and rebinds every connection's rules
//! ([`Authenticator::rebind`]): a connection the new files no longer admit gets DISCONNECT
//! 0x98 Administrative action and is closed; the others get the new rules at once, their
//! subscriptions checked again.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ringmq_proto::mqtt::ReasonCode;
use ringmq_shard::conn::{CloseReason, ConnKey};

use super::client::{Client, Phase, client_flag};
use super::session::SessionId;
use super::{Broker, Io, Shared};
use crate::auth::{
    Authenticator, Credentials, Decision, Grant, Refusal, Replies, ReplyTo, SubscribeVerdict,
    Verified, reply_channel,
};
use crate::limits::{self, Admit, Flapper};

/// Seconds since the epoch (token times are in these).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This shard's side of admission: the authenticator generation it uses, its reply
/// channel from the verification pool, and the token expiries of its connections.
pub(super) struct Admission {
    auth: Arc<Authenticator>,
    /// The number of `auth` in `Shared::auth`.
    generation: u64,
    reply_to: ReplyTo,
    replies: Replies,
    /// Connections admitted with a token that expires, and when (seconds since the epoch).
    expiries: HashMap<ConnKey, u64>,
    /// The same, soonest first; entries of connections gone are skipped (and dropped when
    /// they outnumber the live ones).
    expiry_order: BinaryHeap<Reverse<(u64, ConnKey)>>,
}

impl Admission {
    /// `wake` rings this shard's doorbell (the pool calls it after each answer).
    pub fn new(shared: &Shared, wake: Arc<dyn Fn() + Send + Sync>) -> Admission {
        let (reply_to, replies) = reply_channel(shared.config.max_parked_connects, wake);
        Admission {
            auth: shared.auth.get(),
            generation: shared.auth.generation(),
            reply_to,
            replies,
            expiries: HashMap::new(),
            expiry_order: BinaryHeap::new(),
        }
    }

    /// The number of the generation this shard applies.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn track_expiry(&mut self, key: ConnKey, at: u64) {
        self.expiries.insert(key, at);
        self.expiry_order.push(Reverse((at, key)));
    }

    fn forget(&mut self, key: ConnKey) {
        if self.expiries.remove(&key).is_some()
            && self.expiry_order.len() > 2 * self.expiries.len() + 64
        {
            self.expiry_order = self
                .expiries
                .iter()
                .map(|(&key, &at)| Reverse((at, key)))
                .collect();
        }
    }
}

impl Broker {
    /// A connection opened: it takes a place in its address's count, or is marked to be
    /// refused at CONNECT when its address has its limit open.
    pub(super) fn admission_opened(&mut self, io: &mut Io, key: ConnKey) {
        let limits = &self.shared.limits;
        let Some(per_ip) = &limits.per_ip else { return };
        let Some(ip) = io.peer_ip(key) else { return };
        let flag = match per_ip.admit(ip) {
            Admit::Counted => client_flag::IP_COUNTED,
            Admit::OverLimit => {
                limits
                    .per_ip_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                client_flag::OVER_IP_LIMIT
            }
            Admit::Untracked => {
                limits
                    .per_ip_untracked
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        };
        if let Some(c) = io.state(key) {
            c.set_flag(flag, true);
        }
    }

    /// The last steps of a CONNECT whose client id is settled (its `PendingConnect` is in
    /// the connection's extra state): the limits, the bans, the credentials.
    pub(super) fn admit(&mut self, io: &mut Io, key: ConnKey, creds: &Credentials<'_>) {
        let Some(client) = io.state(key) else { return };
        let version = client.version();
        if client.has_flag(client_flag::OVER_IP_LIMIT) {
            let why = "too many connections from this address";
            self.writer
                .refuse_connect(io, key, version, ReasonCode::QUOTA_EXCEEDED, why);
            io.close(key, CloseReason::Policy);
            return;
        }
        let now_ms = limits::now_ms();
        let flapping = &self.shared.limits.flapping;
        let banned = flapping
            .banned(Flapper::ClientId(creds.client_id), now_ms)
            .is_some()
            || io
                .peer_ip(key)
                .is_some_and(|ip| flapping.banned(Flapper::Address(ip), now_ms).is_some());
        if banned {
            self.admission.auth.stats().count_refusal(Refusal::Banned);
            return self.refuse_admission(io, key, Refusal::Banned);
        }
        let auth = &self.admission.auth;
        match auth.authenticate(creds, &self.admission.reply_to, key.to_u64(), unix_now()) {
            Decision::Allowed(grant) => self.admitted(io, key, grant),
            Decision::Refused(why) => self.refuse_admission(io, key, why),
            Decision::Parked => {
                self.stats.connects_parked.add(1);
                if let Some(c) = io.state(key) {
                    c.phase = Phase::Authenticating;
                }
            }
        }
    }

    /// The client is admitted with `grant`: its rules go with the connection, its token's
    /// expiry is watched, and its session is claimed.
    fn admitted(&mut self, io: &mut Io, key: ConnKey, grant: Grant) {
        let Some(client) = io.state(key) else { return };
        let will_allowed = client
            .extra
            .as_ref()
            .and_then(|e| e.pending.as_ref())
            .and_then(|p| p.will.as_ref())
            .is_none_or(|w| grant.acl.may_publish(w.msg.topic()));
        if !will_allowed {
            self.stats.acl_denied_publish.add(1);
            return self.refuse_admission(io, key, Refusal::NotAuthorized);
        }
        client.acl = grant.acl;
        if let Some(at) = grant.expires_at {
            self.admission.track_expiry(key, at);
        }
        self.claim_session(io, key);
    }

    /// Answers a refused CONNECT and closes. A refusal of credentials counts as a drop
    /// for flapping (guessing passwords is flapping too).
    fn refuse_admission(&mut self, io: &mut Io, key: ConnKey, why: Refusal) {
        let Some(client) = io.state(key) else { return };
        let version = client.version();
        if matches!(why, Refusal::BadCredentials | Refusal::NotAuthorized) {
            let client_id = client
                .extra
                .as_ref()
                .and_then(|e| e.pending.as_ref())
                .map(|p| p.client_id.clone());
            if let Some(id) = client_id {
                self.record_drop(io, key, &id);
            }
        }
        self.writer
            .refuse_connect(io, key, version, why.reason_code(), why.reason_string());
        io.close(key, CloseReason::Policy);
    }

    /// A connection of `client_id` ended without its DISCONNECT, or was refused: flapping
    /// counts it against the id and the address, and a ban that starts is logged.
    fn record_drop(&self, io: &Io, key: ConnKey, client_id: &str) {
        let flapping = &self.shared.limits.flapping;
        let now_ms = limits::now_ms();
        let address = io.peer_ip(key).map(Flapper::Address);
        for who in std::iter::once(Flapper::ClientId(client_id)).chain(address) {
            if let Some(ban) = flapping.record_drop(who, now_ms) {
                tracing::warn!(
                    "{who} banned for {} s: {} connections ended without DISCONNECT within {} s",
                    flapping.config().ban_ms / 1000,
                    ban.drops,
                    flapping.config().window_ms / 1000,
                );
            }
        }
    }

    /// Each turn: answers from the verification pool resume or refuse parked CONNECTs.
    pub(super) fn take_verified(&mut self, io: &mut Io) {
        while let Some(Verified { ticket, outcome }) = self.admission.replies.try_recv() {
            let Some(key) = ConnKey::from_u64(ticket) else {
                continue;
            };
            // Closed, or timed out, while it waited.
            let Some(client) = io.state(key).filter(|c| c.phase == Phase::Authenticating) else {
                continue;
            };
            let grant = outcome.and_then(|grant| {
                // Judged by the generation that parked it: bound to the one in force now
                // (a reload may have come in between).
                let client_id = client
                    .extra
                    .as_ref()
                    .and_then(|e| e.pending.as_ref())
                    .map(|p| p.client_id.clone())
                    .unwrap_or_default();
                let acl = self.admission.auth.rebind(&grant.acl, &client_id, None)?;
                Ok(Grant {
                    acl,
                    expires_at: grant.expires_at,
                })
            });
            match grant {
                Ok(grant) => self.admitted(io, key, grant),
                Err(why) => self.refuse_admission(io, key, why),
            }
        }
    }

    /// Once a second: connections whose token expired are closed.
    pub(super) fn expire_tokens(&mut self, io: &mut Io) {
        let now = unix_now();
        while let Some(&Reverse((at, key))) = self.admission.expiry_order.peek() {
            if at > now {
                break;
            }
            self.admission.expiry_order.pop();
            if self.admission.expiries.get(&key) != Some(&at) {
                continue;
            }
            self.admission.expiries.remove(&key);
            self.stats.tokens_expired.add(1);
            if let Some(c) = io.state(key) {
                c.set_flag(client_flag::REVOKED, true);
            }
            self.disconnect(
                io,
                key,
                ReasonCode::NOT_AUTHORIZED,
                "the token has expired",
                CloseReason::Policy,
            );
        }
    }

    /// Once a second: a reloaded configuration is picked up and every connection's rules
    /// bound to it; those it no longer admits are disconnected.
    pub(super) fn pick_up_reload(&mut self, io: &mut Io) {
        if self.shared.auth.generation() == self.admission.generation {
            return;
        }
        let Some((auth, generation)) = self.shared.auth.try_get() else {
            return; // a reload holds the lock this instant: next tick
        };
        self.admission.auth = auth;
        self.admission.generation = generation;
        self.stats.auth_generation.set(generation);
        for key in io.open_keys() {
            let Some(client) = io.state(key) else {
                continue;
            };
            let (client_id, sid): (Box<str>, Option<SessionId>) = match client.phase {
                Phase::Connected => {
                    let Some(sid) = client.session else { continue };
                    let Some(s) = self.sessions.get(sid) else {
                        continue;
                    };
                    ((*s.client_id).into(), Some(sid))
                }
                // Admitted, finding its session: the id is in its CONNECT.
                Phase::Claiming => match client.extra.as_ref().and_then(|e| e.pending.as_ref()) {
                    Some(p) => (p.client_id.clone(), None),
                    None => continue,
                },
                // Not admitted yet (a parked one is bound when its answer comes).
                Phase::AwaitConnect | Phase::Authenticating => continue,
            };
            let Some(client) = io.state(key) else {
                continue;
            };
            match self.admission.auth.rebind(&client.acl, &client_id, None) {
                Ok(acl) => {
                    client.acl = acl;
                    if let Some(sid) = sid {
                        self.recheck_subscriptions(io, key, sid);
                    }
                }
                Err(_) => {
                    self.stats.disconnected_reload.add(1);
                    client.set_flag(client_flag::REVOKED, true);
                    self.disconnect(
                        io,
                        key,
                        ReasonCode::ADMINISTRATIVE_ACTION,
                        "no longer authorized after a configuration reload",
                        CloseReason::Policy,
                    );
                }
            }
        }
    }

    /// Whether every live delivery to `key` must be checked: some subscription of its
    /// session covers topics its rules do not let it receive (after a reconnect, which
    /// may be another user's, or a reload).
    pub(super) fn recheck_subscriptions(&mut self, io: &mut Io, key: ConnKey, sid: SessionId) {
        let Some(client) = io.state(key) else { return };
        if client.acl.is_unrestricted() {
            client.set_flag(client_flag::CHECK_DELIVERIES, false);
            return;
        }
        let Some(session) = self.sessions.get(sid) else {
            return;
        };
        let check = session.subs().any(|r| {
            let filter = match &r.share {
                Some(share) => share.to_string(),
                None => self.routes.subs.path_of(r.node),
            };
            client.acl.may_subscribe(&filter)
                != (SubscribeVerdict::Allowed {
                    check_each_delivery: false,
                })
        });
        client.set_flag(client_flag::CHECK_DELIVERIES, check);
    }

    /// A connection ended: its place in its address's count is freed, its expiry and
    /// rate buckets forgotten, and an end without DISCONNECT counted for flapping.
    pub(super) fn admission_closed(&mut self, io: &mut Io, key: ConnKey, client: &Client) {
        if client.has_flag(client_flag::IP_COUNTED)
            && let (Some(per_ip), Some(ip)) = (&self.shared.limits.per_ip, io.peer_ip(key))
        {
            per_ip.release(ip);
        }
        self.admission.forget(key);
        self.throttle.forget(key);
        if client.phase == Phase::Connected && !client.graceful() {
            let client_id = client
                .session
                .and_then(|sid| self.sessions.get(sid))
                .map(|s| Box::<str>::from(&*s.client_id));
            if let Some(id) = client_id {
                self.record_drop(io, key, &id);
            }
        }
    }
}
