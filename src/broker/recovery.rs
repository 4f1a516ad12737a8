//! Startup: what each shard's log holds, put back into its broker before any shard
//! accepts a connection.
//!
//! The process opens the data directory (`store::open`: every shard's log recovered in
//! parallel, the data dealt out again if the shard count changed) and, before starting
//! the shards, works out what they must know of each other ([`plan`]): which shard
//! holds each recovered session (its client id's home shard records it, under a claim
//! epoch, so a client that connects anywhere finds it by the usual takeover), the
//! interest the recovered subscriptions give every shard (durable interest included, so
//! the first publish after the start already reaches them and waits for them), and
//! every retained message (each log holds its home topics'; every shard keeps them
//! all). Each broker then rebuilds its sessions, subscriptions, queues and in-flight
//! windows from its log's state (`Broker::recovered`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ringmq_proto::topic::{self, Filter};

use super::interest::{advertised_filter, interest_prefix};
use super::msg::InterestChange;
use super::session::{Inflight, Message, OutState, Queued, Session, SessionExtra, SubIds, WillMsg};
use super::{Broker, Shared, home_shard};
use crate::store::MsgId;
use crate::store::record::{Deadline, SessionKey};
use crate::store::ring_driver::RingDriver;

/// Interest one shard's recovered subscriptions give it: (filter, shared group, durable).
type Advert = (Box<str>, Option<Arc<str>>, bool);

/// What one shard starts from, worked out before any shard runs.
pub struct Recovery {
    pub driver: RingDriver,
    /// Client ids whose home is this shard and whose recovered sessions are held by
    /// another shard: (client id, holder, claim epoch).
    homes: Vec<(Box<str>, usize, u64)>,
    /// The claim epoch of each recovered session here whose home is another shard.
    epochs: HashMap<SessionKey, u64>,
    /// Every shard's interest from its recovered subscriptions, by shard.
    interest: Arc<Vec<Vec<Advert>>>,
    /// Every retained message, with its version.
    retained: Arc<Vec<(Arc<Message>, u64)>>,
    /// How long the recovery took, ms.
    pub recovery_ms: u64,
}

/// Works out what every shard must know of the others' recovered state. Returns one
/// [`Recovery`] per shard (in shard order) and the highest retained-message version.
pub fn plan(
    drivers: Vec<RingDriver>,
    route_depth: usize,
    recovery_ms: u64,
) -> (Vec<Recovery>, u64) {
    let n = drivers.len();
    let mut homes: Vec<Vec<(Box<str>, usize, u64)>> = vec![Vec::new(); n];
    let mut epochs: Vec<HashMap<SessionKey, u64>> = vec![HashMap::new(); n];
    let mut next_epoch = vec![0u64; n];
    let mut interest: Vec<Vec<Advert>> = vec![Vec::new(); n];
    let mut retained = Vec::new();
    let mut retain_version = 0;
    for (shard, d) in drivers.iter().enumerate() {
        let state = d.store().state();
        // Prefixes (and shared filters) seen on this shard: most sessions share them.
        let mut seen: HashSet<&str> = HashSet::new();
        for s in state.sessions() {
            let home = home_shard(&s.client_id, n);
            if home != shard {
                next_epoch[home] += 1;
                let epoch = next_epoch[home];
                homes[home].push((s.client_id.clone(), shard, epoch));
                epochs[shard].insert(s.key, epoch);
            }
            for sub in &s.subscriptions {
                let Ok(parsed) = topic::parse_filter(&sub.filter) else {
                    continue;
                };
                match parsed {
                    Filter::Plain(f) => {
                        let prefix = interest_prefix(f, route_depth);
                        if seen.insert(prefix) {
                            let adv = advertised_filter(prefix);
                            interest[shard].push((adv.clone(), None, false));
                            interest[shard].push((adv, None, true));
                        }
                    }
                    Filter::Shared { filter, .. } => {
                        if seen.insert(&sub.filter) {
                            let share = Some(Arc::from(&*sub.filter));
                            interest[shard].push((filter.into(), share, false));
                        }
                    }
                }
            }
        }
        retain_version = retain_version.max(state.retain_version());
        for r in state.retained() {
            if let Some(m) = state.message(r.msg) {
                retained.push((Arc::new(stored_message(m)), r.version));
            }
        }
    }
    let interest = Arc::new(interest);
    let retained = Arc::new(retained);
    let plans = drivers
        .into_iter()
        .zip(homes)
        .zip(epochs)
        .map(|((driver, homes), epochs)| Recovery {
            driver,
            homes,
            epochs,
            interest: interest.clone(),
            retained: retained.clone(),
            recovery_ms,
        })
        .collect();
    (plans, retain_version)
}

/// A message of the log as the broker keeps it.
pub(super) fn stored_message(m: &crate::store::state::StoredMessage) -> Message {
    let c = m.body.content();
    Message::new(
        c.topic,
        c.props,
        c.payload,
        m.qos,
        m.retain,
        super::durable::deadline_instant(m.expires_at),
        None,
    )
}

impl Broker {
    /// The broker of shard `shard_id`, its state rebuilt from its log.
    pub fn recovered(
        shard_id: usize,
        shared: Arc<Shared>,
        wake: Arc<dyn Fn() + Send + Sync>,
        rec: Recovery,
    ) -> Broker {
        let Recovery {
            driver,
            homes,
            epochs,
            interest,
            retained,
            recovery_ms,
        } = rec;
        let mut b = Broker::with_log(shard_id, shared, wake, None);
        b.restore(driver, homes, &epochs, &interest, &retained, recovery_ms);
        b
    }

    fn restore(
        &mut self,
        driver: RingDriver,
        homes: Vec<(Box<str>, usize, u64)>,
        epochs: &HashMap<SessionKey, u64>,
        interest: &[Vec<Advert>],
        retained: &[(Arc<Message>, u64)],
        recovery_ms: u64,
    ) {
        let me = self.peers.id;
        // The other shards know this shard's interest already, as it knows theirs.
        self.interest.quiet = true;
        for (shard, adverts) in interest.iter().enumerate() {
            if shard == me {
                continue;
            }
            for (filter, share, durable) in adverts {
                let change = InterestChange {
                    filter: filter.clone(),
                    share: share.clone(),
                    add: true,
                    durable: *durable,
                };
                self.interest.apply(shard, &change);
            }
        }
        for (client_id, holder, epoch) in homes {
            self.registry.seed(&client_id, holder, epoch);
        }
        let state = driver.store().state();
        let now = self.clock_ms;
        let mut messages: HashMap<MsgId, Arc<Message>> = HashMap::new();
        let mut message = |id: MsgId| -> Option<Arc<Message>> {
            if let Some(m) = messages.get(&id) {
                return Some(m.clone());
            }
            let m = Arc::new(stored_message(state.message(id)?));
            messages.insert(id, m.clone());
            Some(m)
        };
        // Sessions that were connected when the process ended: their expiry (and delayed
        // will) counts from now, and is logged.
        let mut now_offline = Vec::new();
        let (mut sessions, mut queued) = (0u64, 0u64);
        for s in state.sessions() {
            let mut session = Session::new(&s.client_id, s.protocol);
            session.expiry_interval = s.expiry_interval_s;
            session.store_key = s.key.0;
            session.epoch = epochs.get(&s.key).copied().unwrap_or(0);
            let e = session.extra_mut();
            let wall = super::durable::wall_ms();
            let shard_time = |d: Deadline| d.get().map(|at| now + at.saturating_sub(wall));
            let was_online = s.expires_at.is_none() && s.will_at.is_none();
            e.expires_at_ms = shard_time(s.expires_at);
            e.will_at_ms = shard_time(s.will_at);
            if let Some(w) = &s.will {
                let c = w.body.content();
                e.will = Some(WillMsg {
                    msg: Message::new(c.topic, c.props, c.payload, w.qos, w.retain, None, None),
                    expiry_s: w.expiry_s,
                    delay_s: w.delay_s,
                });
            }
            // (A session that never expires and has no will looks the same offline:
            // then there is nothing to count from now.)
            let mut counts_from_now = false;
            if was_online {
                if s.expiry_interval_s != u32::MAX {
                    e.expires_at_ms = Some(now + s.expiry_interval_s as u64 * 1000);
                    counts_from_now = true;
                }
                if let Some(w) = &e.will {
                    e.will_at_ms = Some(now + w.delay_s as u64 * 1000);
                    counts_from_now = true;
                }
            }
            queued += restore_deliveries(e, s, &mut message, true);
            session.durable = true;
            let sid = self.sessions.add(session);
            for sub in &s.subscriptions {
                if let Some((r, cost)) =
                    self.add_subscription(sid, &sub.filter, sub.options, sub.sub_id)
                {
                    if r.share.is_none() && self.peers.count > 1 {
                        let depth = self.config().route_depth;
                        let prefix = interest_prefix(&sub.filter, depth);
                        self.interest.advertise_durable(prefix, true);
                    }
                    if let Some(x) = self.sessions.get_mut(sid) {
                        x.add_sub(r, cost);
                    }
                }
            }
            self.sessions.went_offline(sid);
            if self.cluster.is_some() {
                // To be checked against the cluster's session registry.
                self.sessions.mark_recovered(sid);
            }
            if counts_from_now {
                now_offline.push(sid);
            }
            sessions += 1;
        }
        for (m, version) in retained {
            // Acknowledged once: kept whatever the bound of topics is now.
            self.retained.store(m.clone(), *version, usize::MAX);
        }
        self.interest.quiet = false;
        self.durable.driver = Some(driver);
        for sid in now_offline {
            self.log_offline(sid);
        }
        let st = &self.stats;
        st.recovered_sessions.set(sessions);
        st.recovered_messages.set(queued);
        st.recovered_retained.set(
            retained
                .iter()
                .filter(|(m, _)| home_shard(m.topic(), self.peers.count) == me)
                .count() as u64,
        );
        st.recovery_ms.set(recovery_ms);
    }
}

/// Puts back the queue, the in-flight window and the inbound QoS 2 packet ids of a
/// session the log (or a session image from another node) holds; `logged`: the
/// deliveries keep their message ids in this shard's log. Returns how many deliveries.
pub(super) fn restore_deliveries(
    e: &mut SessionExtra,
    s: &crate::store::state::Session,
    mut message: impl FnMut(MsgId) -> Option<Arc<Message>>,
    logged: bool,
) -> u64 {
    let mut count = 0;
    let store_id = |id: MsgId| if logged { id.0 } else { 0 };
    for d in &s.queue {
        let Some(msg) = message(d.msg) else { continue };
        e.queue.push_back(Queued {
            msg,
            qos: d.qos,
            retain: d.retain,
            sub_ids: sub_ids(d.sub_ids.as_slice()),
            store_id: store_id(d.msg),
        });
        count += 1;
    }
    for i in &s.inflight {
        let Some(msg) = message(i.delivery.msg) else {
            continue;
        };
        e.inflight.push_back(Inflight {
            pkid: i.pkid,
            state: if i.released {
                OutState::Released
            } else {
                OutState::Published
            },
            delivery: Queued {
                msg,
                qos: i.delivery.qos,
                retain: i.delivery.retain,
                sub_ids: sub_ids(i.delivery.sub_ids.as_slice()),
                store_id: store_id(i.delivery.msg),
            },
        });
        count += 1;
    }
    e.inbound_qos2 = s.inbound_qos2.iter().copied().collect();
    count
}

fn sub_ids(ids: &[u32]) -> SubIds {
    let mut s = SubIds::default();
    for &id in ids {
        s.push(id);
    }
    s
}
