//! The control plane's requests to a shard ([`AdminRequest`], the broker's
//! `Service::Request`) and their answers: publishing as a client would, listing clients,
//! sessions, subscriptions and retained messages a page at a time, reading and ending one
//! client or session, deleting a retained message, the top topics.
//!
//! Requests come over the shard's control channel (`runtime::Control::Request`), each with
//! a reply channel (`tokio::sync::oneshot`, whose `send` never waits). What can be answered
//! from one lookup is answered at once. A listing walks its table a piece per loop turn
//! ([`SCAN_PER_TURN`] slots over all listings), keeping only the `limit` smallest keys
//! after the cursor, so a page costs the shard `limit` entries of memory and a bounded
//! slice of each turn however many clients it holds. A batch of publishes goes
//! [`PUBLISH_PER_TURN`] messages a turn. A listing is not a snapshot: an entry added or
//! removed while the walk goes on may or may not be in it.
//!
//! The runtime keeps no peer address and port per connection (only the IP, and only for
//! the per-address limits): an answer that shows one asks the socket for it
//! (`Io::request_peer_addr`) and is sent when the addresses have come (`on_peer_addr`).
//! A client listing answers without addresses, with each client's
//! connection; the API then asks each shard for the addresses of the clients it keeps
//! (`PeerAddresses`), so a page costs `limit` addresses, not `limit` per shard. An answer
//! the API has stopped waiting for (its deadline passed) is dropped at the next turn.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use ringmq_proto::mqtt::{Properties, Property, QoS, ReasonCode};
use ringmq_proto::topic::{self, Filter};
use ringmq_shard::conn::{CloseReason, ConnKey};
use tokio::sync::oneshot;

use super::client::{Phase, client_flag};
use super::delivery::Src;
use super::events::{protocol_level, transport};
use super::routing::{Subscriber, Tally};
use super::session::{Message, Session, SessionId};
use super::{Broker, Io};
use crate::auth::ClientAcl;
use crate::control::api::broker::{
    ClientDetail, ClientSummary, MAX_PAGE, PublishProperties, QueuedMessage, RetainedMessage,
    RetainedSummary, SessionDetail, SessionSummary, Subscription, SubscriptionEntry, TopicRate,
    UserProperty,
};
use crate::control::webhook::WebhookEvent;
use crate::store::record::EndReason;

/// Table slots all listings walk per loop turn, together.
pub const SCAN_PER_TURN: usize = 4096;
/// Messages of API publishes handled per loop turn.
pub const PUBLISH_PER_TURN: usize = 32;
/// Requests a shard works on at once over several turns; past it a new one is refused
/// (its reply channel dropped: the API answers 503).
pub const MAX_JOBS: usize = 256;
/// Bytes of a queued message's payload shown in a queue listing.
pub const QUEUE_PREVIEW: usize = 64;

/// A reply channel.
pub type Reply<T> = oneshot::Sender<T>;

/// Stands for a connection that is not (or no longer) here: no address is asked for it.
const GONE: ConnKey = ConnKey {
    index: u32::MAX,
    gen_: std::num::NonZeroU32::MAX,
};

/// Which entries of a listing: keys (client ids, topics) starting with `prefix`, after the
/// cursor `after`, at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub prefix: Option<String>,
    pub after: Option<String>,
    pub limit: usize,
}

impl Listing {
    fn wants(&self, key: &str) -> bool {
        self.prefix.as_deref().is_none_or(|p| key.starts_with(p))
            && self.after.as_deref().is_none_or(|a| key > a)
    }
}

/// What the control plane asks of one shard.
pub enum AdminRequest {
    /// Publish each message on this shard as a client's PUBLISH would be, in order:
    /// retained if asked, routed here and to the other shards; one [`Tally`] each.
    Publish {
        messages: Vec<Arc<Message>>,
        reply: Reply<Vec<Tally>>,
    },
    /// Connected clients, by client id, each with its connection, but no address yet (the
    /// API asks for the addresses of those it keeps: [`AdminRequest::PeerAddresses`]).
    /// `username`: only those with this user name.
    Clients {
        listing: Listing,
        username: Option<String>,
        reply: Reply<Vec<(ClientSummary, ConnKey)>>,
    },
    /// The peer address of each connection (`IP:PORT`, empty for one that is gone).
    PeerAddresses {
        conns: Vec<ConnKey>,
        reply: Reply<Vec<String>>,
    },
    /// The connected client with this id, if this shard serves it.
    Client {
        client_id: String,
        reply: Reply<Option<ClientDetail>>,
    },
    /// Ends the connection of this client, if this shard serves it (MQTT 5: DISCONNECT
    /// 0x98); whether it did.
    Disconnect {
        client_id: String,
        reply: Reply<bool>,
    },
    /// Sessions (connected or not, or `connected` only as asked), by client id.
    Sessions {
        listing: Listing,
        connected: Option<bool>,
        reply: Reply<Vec<SessionSummary>>,
    },
    Session {
        client_id: String,
        reply: Reply<Option<SessionDetail>>,
    },
    /// The messages waiting in a session's queue after position `after`; `None` if the
    /// session is not here.
    SessionQueue {
        client_id: String,
        after: Option<u64>,
        limit: usize,
        reply: Reply<Option<Vec<QueuedMessage>>>,
    },
    /// Ends a session and its connection; whether it was here.
    DiscardSession {
        client_id: String,
        reply: Reply<bool>,
    },
    /// The subscriptions whose filter is exactly `filter`, by client id.
    Subscriptions {
        filter: String,
        listing: Listing,
        reply: Reply<Vec<SubscriptionEntry>>,
    },
    /// Messages from other nodes of the cluster, to route here (never back to NATS).
    Cluster(Vec<crate::cluster::Inbound>),
    /// A retained message from the cluster's retained bucket, to store here.
    ClusterRetain(Arc<Message>),
    /// Another node took the session of this client id over: end it if it is here.
    ClusterTakeover(Box<str>),
    /// The session of this client id comes back to this node: a stub it left here
    /// ends.
    ClusterStubEnd(Box<str>),
    /// The session registry's answer to a CONNECT here (`ClusterLink::claim`).
    ClusterClaimed {
        conn: ConnKey,
        client_id: Box<str>,
        outcome: crate::cluster::ClaimOutcome,
    },
    /// Another node asks for the session of this client id (its client connected
    /// there): if it is here, close its connection and answer its image
    /// (`handover::encode`), or end it for a clean start (answering `None`).
    ClusterHandover {
        client_id: Box<str>,
        clean_start: bool,
        /// The node that asks.
        to: Arc<str>,
        reply: Reply<Option<Vec<u8>>>,
    },
    /// The client ids of the sessions this shard recovered from its log and that are
    /// still offline and untouched since startup, in a page of its session table from
    /// slot `from`, and the slot the next page starts at (`None`: none).
    ClusterRecovered {
        from: usize,
        reply: Reply<(Vec<Box<str>>, Option<usize>)>,
    },
    /// The session registry names another node for this client id: a session this
    /// shard recovered for it, still untouched, is stale and ends.
    ClusterRecoveredStale(Box<str>),
    /// Every recovered session has been checked against the registry.
    ClusterRecoveredChecked,
    /// Retained messages whose topic `filter` matches, by topic.
    Retained {
        filter: String,
        listing: Listing,
        reply: Reply<Vec<RetainedSummary>>,
    },
    RetainedMessage {
        topic: String,
        reply: Reply<Option<RetainedMessage>>,
    },
    /// Clears a retained message on every shard; whether there was one.
    DeleteRetained { topic: String, reply: Reply<bool> },
    /// This shard's busiest topics.
    TopTopics { reply: Reply<Vec<TopicRate>> },
}

/// The `limit` smallest keys offered, in a max-heap (the largest kept is the first to go).
struct Smallest<V> {
    limit: usize,
    heap: BinaryHeap<Pick<V>>,
}

struct Pick<V> {
    key: Box<str>,
    value: V,
}

impl<V> PartialEq for Pick<V> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<V> Eq for Pick<V> {}
impl<V> PartialOrd for Pick<V> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<V> Ord for Pick<V> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.cmp(&other.key)
    }
}

impl<V> Smallest<V> {
    fn new(limit: usize) -> Smallest<V> {
        Smallest {
            limit: limit.clamp(1, MAX_PAGE),
            heap: BinaryHeap::new(),
        }
    }

    /// Whether `key` would be kept (checked before anything is copied for it).
    fn takes(&self, key: &str) -> bool {
        self.heap.len() < self.limit || self.heap.peek().is_some_and(|m| key < &*m.key)
    }

    fn offer(&mut self, key: &str, value: V) {
        if !self.takes(key) {
            return;
        }
        if self.heap.len() == self.limit {
            self.heap.pop();
        }
        self.heap.push(Pick {
            key: key.into(),
            value,
        });
    }

    /// The keys kept, smallest first.
    fn into_sorted(self) -> Vec<(Box<str>, V)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect()
    }
}

/// What a walk over the session table lists.
enum SessionWalk {
    Clients {
        username: Option<String>,
        reply: Reply<Vec<(ClientSummary, ConnKey)>>,
    },
    Sessions {
        connected: Option<bool>,
        reply: Reply<Vec<SessionSummary>>,
    },
}

/// An answer waiting for peer addresses: `waiting` are still to come.
enum Addressed {
    Addresses {
        items: Vec<String>,
        reply: Reply<Vec<String>>,
    },
    Client {
        item: Box<ClientDetail>,
        reply: Reply<Option<ClientDetail>>,
    },
}

/// A request answered over several turns.
enum Job {
    Publish {
        messages: VecDeque<Arc<Message>>,
        tallies: Vec<Tally>,
        reply: Reply<Vec<Tally>>,
        /// Shard time the request came: while the shard is under pressure it waits, as a
        /// paused publisher does, for at most `pause_max_ms`.
        since_ms: u64,
    },
    WalkSessions {
        next: usize,
        listing: Listing,
        picks: Smallest<SessionId>,
        walk: SessionWalk,
    },
    WalkSubscriptions {
        filter: String,
        next: usize,
        listing: Listing,
        picks: Smallest<(SessionId, Subscriber)>,
        reply: Reply<Vec<SubscriptionEntry>>,
    },
    WalkRetained {
        filter: String,
        next: usize,
        listing: Listing,
        picks: Smallest<()>,
        reply: Reply<Vec<RetainedSummary>>,
    },
    Addresses {
        answer: Addressed,
        waiting: usize,
    },
}

impl Job {
    /// Whether the API still waits for the answer.
    fn wanted(&self) -> bool {
        match self {
            Job::Publish { reply, .. } => !reply.is_closed(),
            Job::WalkSessions { walk, .. } => match walk {
                SessionWalk::Clients { reply, .. } => !reply.is_closed(),
                SessionWalk::Sessions { reply, .. } => !reply.is_closed(),
            },
            Job::WalkSubscriptions { reply, .. } => !reply.is_closed(),
            Job::WalkRetained { reply, .. } => !reply.is_closed(),
            Job::Addresses { answer, .. } => match answer {
                Addressed::Addresses { reply, .. } => !reply.is_closed(),
                Addressed::Client { reply, .. } => !reply.is_closed(),
            },
        }
    }
}

/// Who waits for a connection's peer address.
pub(super) enum Waiter {
    /// Entry `index` of the answer of job `job`.
    Job { job: u64, index: usize },
    /// A `client.connected` event.
    Connected(Box<WebhookEvent>),
}

/// The shard's requests in progress.
pub(super) struct Admin {
    /// Requests answered over several turns, by number, oldest first.
    jobs: VecDeque<(u64, Job)>,
    next_job: u64,
    /// Connections whose peer address is asked for, and who waits for it.
    addr_waits: HashMap<ConnKey, Vec<Waiter>>,
    /// What is left of this turn's budgets: table slots to walk, messages to publish.
    scan_left: usize,
    publish_left: usize,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            jobs: VecDeque::new(),
            next_job: 0,
            addr_waits: HashMap::new(),
            scan_left: SCAN_PER_TURN,
            publish_left: PUBLISH_PER_TURN,
        }
    }
}

impl Admin {
    /// A new turn: the budgets are whole again.
    pub(super) fn new_turn(&mut self) {
        self.scan_left = SCAN_PER_TURN;
        self.publish_left = PUBLISH_PER_TURN;
    }

    fn add(&mut self, job: Job) {
        if self.jobs.len() >= MAX_JOBS {
            // Dropping the job drops its reply channel: the API answers 503.
            return;
        }
        self.next_job += 1;
        self.jobs.push_back((self.next_job, job));
    }

    /// Waits for the peer address of `conn` on behalf of `waiter`; gives the waiter back
    /// if the address cannot be asked for.
    pub(super) fn wait_for_address(
        &mut self,
        io: &mut Io,
        conn: ConnKey,
        waiter: Waiter,
    ) -> Result<(), Waiter> {
        if let Some(w) = self.addr_waits.get_mut(&conn) {
            w.push(waiter);
            return Ok(());
        }
        if !io.request_peer_addr(conn) {
            return Err(waiter);
        }
        self.addr_waits.insert(conn, vec![waiter]);
        Ok(())
    }

    /// Drops everything in progress (shutdown): the API hears that the shard is gone.
    pub(super) fn clear(&mut self) {
        self.jobs.clear();
        self.addr_waits.clear();
    }
}

/// The API's view of a subscription.
fn subscription(filter: &str, opts: ringmq_proto::mqtt::SubscriptionOptions) -> Subscription {
    Subscription {
        filter: filter.into(),
        qos: opts.qos as u8,
        no_local: opts.no_local,
        retain_as_published: opts.retain_as_published,
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The MQTT 5 properties a message carries, as the API shows them.
fn properties(m: &Message) -> PublishProperties {
    let mut p = PublishProperties::default();
    for prop in Properties::Raw(m.props()).iter() {
        match prop {
            Property::PayloadFormatIndicator(v) => p.payload_format_indicator = Some(v == 1),
            Property::ContentType(t) => p.content_type = Some(t.into()),
            Property::ResponseTopic(t) => p.response_topic = Some(t.into()),
            Property::CorrelationData(d) => p.correlation_data = Some(base64(d)),
            Property::UserProperty(name, value) => p.user_properties.push(UserProperty {
                name: name.into(),
                value: value.into(),
            }),
            _ => {}
        }
    }
    p.message_expiry_interval = m.remaining_expiry(std::time::Instant::now());
    p
}

impl Broker {
    /// A request from the control plane.
    pub(super) fn handle_request(&mut self, io: &mut Io, request: AdminRequest) {
        match request {
            AdminRequest::Cluster(messages) => self.cluster_inbound(io, messages),
            AdminRequest::ClusterRetain(m) => self.cluster_retain(io, m),
            AdminRequest::ClusterTakeover(id) => self.cluster_takeover(io, &id),
            AdminRequest::ClusterStubEnd(id) => self.cluster_stub_end(&id),
            AdminRequest::ClusterClaimed {
                conn,
                client_id,
                outcome,
            } => self.cluster_claimed(io, conn, client_id, outcome),
            AdminRequest::ClusterHandover {
                client_id,
                clean_start,
                to,
                reply,
            } => self.cluster_handover(io, &client_id, clean_start, to, reply),
            AdminRequest::ClusterRecovered { from, reply } => self.cluster_recovered(from, reply),
            AdminRequest::ClusterRecoveredStale(id) => self.cluster_recovered_stale(io, &id),
            AdminRequest::ClusterRecoveredChecked => self.cluster_recovered_checked(),
            AdminRequest::Publish { messages, reply } => self.admin.add(Job::Publish {
                tallies: Vec::with_capacity(messages.len()),
                messages: messages.into(),
                reply,
                since_ms: io.now_ms(),
            }),
            AdminRequest::Clients {
                listing,
                username,
                reply,
            } => self.admin.add(Job::WalkSessions {
                next: 0,
                picks: Smallest::new(listing.limit),
                listing,
                walk: SessionWalk::Clients { username, reply },
            }),
            AdminRequest::Sessions {
                listing,
                connected,
                reply,
            } => self.admin.add(Job::WalkSessions {
                next: 0,
                picks: Smallest::new(listing.limit),
                listing,
                walk: SessionWalk::Sessions { connected, reply },
            }),
            AdminRequest::Subscriptions {
                filter,
                listing,
                reply,
            } => self.admin.add(Job::WalkSubscriptions {
                filter,
                next: 0,
                picks: Smallest::new(listing.limit),
                listing,
                reply,
            }),
            AdminRequest::Retained {
                filter,
                listing,
                reply,
            } => self.admin.add(Job::WalkRetained {
                filter,
                next: 0,
                picks: Smallest::new(listing.limit),
                listing,
                reply,
            }),
            AdminRequest::Client { client_id, reply } => self.answer_client(io, &client_id, reply),
            AdminRequest::PeerAddresses { conns, reply } => {
                let answer = Addressed::Addresses {
                    items: vec![String::new(); conns.len()],
                    reply,
                };
                // Only this shard's open connections: a key from elsewhere, or one whose
                // connection closed, names nothing here (or another connection now).
                let ours: Vec<ConnKey> = conns
                    .iter()
                    .map(|&c| if io.is_open(c) { c } else { GONE })
                    .collect();
                self.start_addressed(io, answer, &ours);
            }
            AdminRequest::Disconnect { client_id, reply } => {
                let done = self.kick(io, &client_id);
                let _ = reply.send(done);
            }
            AdminRequest::Session { client_id, reply } => {
                let detail = self.session_detail(io, &client_id);
                let _ = reply.send(detail);
            }
            AdminRequest::SessionQueue {
                client_id,
                after,
                limit,
                reply,
            } => {
                let queue = self.session_queue(&client_id, after, limit);
                let _ = reply.send(queue);
            }
            AdminRequest::DiscardSession { client_id, reply } => {
                let done = self.discard_session(io, &client_id);
                let _ = reply.send(done);
            }
            AdminRequest::RetainedMessage { topic, reply } => {
                let now = std::time::Instant::now();
                let m = self.retained.get(&topic, now).map(|m| RetainedMessage {
                    topic: topic.clone(),
                    qos: m.qos as u8,
                    payload: base64(m.payload()),
                    properties: properties(&m),
                });
                let _ = reply.send(m);
            }
            AdminRequest::DeleteRetained { topic, reply } => {
                let now = std::time::Instant::now();
                let found = self.retained.get(&topic, now).is_some();
                if found {
                    // An empty retained message clears the topic on every shard, as a
                    // client's would, without being delivered to anyone.
                    let clear = Arc::new(Message::new(
                        &topic,
                        &[],
                        &[],
                        QoS::AtMostOnce,
                        true,
                        None,
                        None,
                    ));
                    let mut src = Src::from_arc(&clear, self.peers.id);
                    self.retain(io, &mut src);
                    self.settle_routing(io, &src);
                }
                let _ = reply.send(found);
            }
            AdminRequest::TopTopics { reply } => {
                let rates = self
                    .top_topics
                    .rates()
                    .into_iter()
                    .map(|(topic, messages_per_second)| TopicRate {
                        topic,
                        messages_per_second,
                    })
                    .collect();
                let _ = reply.send(rates);
            }
        }
        self.run_jobs(io);
    }

    /// Works on the requests in progress, within this turn's budget; asks for another turn
    /// soon if work is left that no completion will wake the shard for.
    pub(super) fn run_jobs(&mut self, io: &mut Io) {
        if self.admin.jobs.is_empty() {
            return;
        }
        let mut jobs = std::mem::take(&mut self.admin.jobs);
        let mut scan_budget = self.admin.scan_left;
        let mut publish_budget = self.admin.publish_left;
        let mut left = VecDeque::with_capacity(jobs.len());
        let mut busy = false;
        while let Some((id, job)) = jobs.pop_front() {
            if !job.wanted() {
                continue;
            }
            let job = match job {
                Job::Publish {
                    mut messages,
                    mut tallies,
                    reply,
                    since_ms,
                } => {
                    // Back-pressure: the API's publishes wait like a paused client's. The
                    // shard's own sends and acknowledgements wake it when that ends.
                    let hold =
                        io.under_pressure() && io.now_ms() < since_ms + io.config().pause_max_ms;
                    while !hold
                        && publish_budget > 0
                        && let Some(m) = messages.pop_front()
                    {
                        publish_budget -= 1;
                        tallies.push(self.publish_from_api(io, &m));
                    }
                    if messages.is_empty() {
                        let _ = reply.send(tallies);
                        None
                    } else {
                        busy |= !hold;
                        Some(Job::Publish {
                            messages,
                            tallies,
                            reply,
                            since_ms,
                        })
                    }
                }
                Job::WalkSessions {
                    next,
                    listing,
                    mut picks,
                    walk,
                } => {
                    let n = scan_budget;
                    let rest = self.sessions.scan(next, n, |sid, s| {
                        if walk_wants(&walk, &listing, s, io) {
                            picks.offer(&s.client_id, sid);
                        }
                    });
                    scan_budget = scan_budget.saturating_sub(rest.map_or(n, |r| r - next));
                    match rest {
                        Some(next) => Some(Job::WalkSessions {
                            next,
                            listing,
                            picks,
                            walk,
                        }),
                        None => self.finish_session_walk(io, picks, walk),
                    }
                }
                Job::WalkSubscriptions {
                    filter,
                    next,
                    listing,
                    mut picks,
                    reply,
                } => {
                    let n = scan_budget;
                    let rest = self.walk_subscriptions(&filter, next, n, &listing, &mut picks);
                    scan_budget = scan_budget.saturating_sub(rest.map_or(n, |r| r - next));
                    match rest {
                        Some(next) => Some(Job::WalkSubscriptions {
                            filter,
                            next,
                            listing,
                            picks,
                            reply,
                        }),
                        None => {
                            let entries = self.subscription_entries(&filter, picks);
                            let _ = reply.send(entries);
                            None
                        }
                    }
                }
                Job::WalkRetained {
                    filter,
                    next,
                    listing,
                    mut picks,
                    reply,
                } => {
                    let n = scan_budget;
                    let now = std::time::Instant::now();
                    let rest = self.retained.scan(next, n, |m| {
                        let t = m.topic();
                        if listing.wants(t)
                            && picks.takes(t)
                            && topic::matches(&filter, t)
                            && !m.is_expired(now)
                        {
                            picks.offer(t, ());
                        }
                    });
                    scan_budget = scan_budget.saturating_sub(rest.map_or(n, |r| r - next));
                    match rest {
                        Some(next) => Some(Job::WalkRetained {
                            filter,
                            next,
                            listing,
                            picks,
                            reply,
                        }),
                        None => {
                            let items = picks
                                .into_sorted()
                                .into_iter()
                                .filter_map(|(t, ())| {
                                    let m = self.retained.get(&t, now)?;
                                    Some(RetainedSummary {
                                        topic: t.into(),
                                        qos: m.qos as u8,
                                        payload_size: m.payload().len(),
                                    })
                                })
                                .collect();
                            let _ = reply.send(items);
                            None
                        }
                    }
                }
                waiting @ Job::Addresses { .. } => Some(waiting),
            };
            if let Some(job) = job {
                busy |= matches!(
                    job,
                    Job::WalkSessions { .. }
                        | Job::WalkSubscriptions { .. }
                        | Job::WalkRetained { .. }
                );
                left.push_back((id, job));
            }
        }
        self.admin.scan_left = scan_budget;
        self.admin.publish_left = publish_budget;
        // Jobs added meanwhile go after.
        left.append(&mut self.admin.jobs);
        self.admin.jobs = left;
        if busy {
            io.continue_soon();
        }
    }

    /// A walk over the sessions is done: the answer.
    fn finish_session_walk(
        &mut self,
        io: &mut Io,
        picks: Smallest<SessionId>,
        walk: SessionWalk,
    ) -> Option<Job> {
        let picks = picks.into_sorted();
        match walk {
            SessionWalk::Sessions { reply, .. } => {
                let items = picks
                    .into_iter()
                    .filter_map(|(_, sid)| Some(self.session_summary(self.sessions.get(sid)?)))
                    .collect();
                let _ = reply.send(items);
                None
            }
            SessionWalk::Clients { reply, .. } => {
                let items = picks
                    .into_iter()
                    .filter_map(|(_, sid)| self.client_summary(io, sid))
                    .collect();
                let _ = reply.send(items);
                None
            }
        }
    }

    /// Asks for the peer address of each connection in `conns` (entry `i` of the answer is
    /// `conns[i]`'s); the answer goes now if none can be waited for.
    fn await_addresses(
        &mut self,
        io: &mut Io,
        id: u64,
        answer: Addressed,
        conns: &[ConnKey],
    ) -> Option<Job> {
        let mut waiting = 0;
        for (index, &conn) in conns.iter().enumerate() {
            if conn == GONE {
                continue;
            }
            let waiter = Waiter::Job { job: id, index };
            if self.admin.wait_for_address(io, conn, waiter).is_ok() {
                waiting += 1;
            }
        }
        if waiting == 0 {
            send_addressed(answer);
            return None;
        }
        Some(Job::Addresses { answer, waiting })
    }

    /// The peer address of `key` has come (or it could not be read).
    pub(super) fn address_came(&mut self, key: ConnKey, addr: Option<SocketAddr>) {
        let Some(waiters) = self.admin.addr_waits.remove(&key) else {
            return;
        };
        let address = addr.map(|a| a.to_string()).unwrap_or_default();
        for w in waiters {
            match w {
                Waiter::Connected(mut event) => {
                    if let WebhookEvent::ClientConnected { address: a, .. } = &mut *event {
                        a.clone_from(&address);
                    }
                    if let Some(hooks) = &self.webhooks {
                        hooks.send(*event);
                    }
                }
                Waiter::Job { job, index } => {
                    let Some(pos) = self.admin.jobs.iter().position(|(id, _)| *id == job) else {
                        continue;
                    };
                    let Job::Addresses { answer, waiting } = &mut self.admin.jobs[pos].1 else {
                        continue;
                    };
                    match answer {
                        Addressed::Addresses { items, .. } => {
                            if let Some(item) = items.get_mut(index) {
                                item.clone_from(&address);
                            }
                        }
                        Addressed::Client { item, .. } => item.summary.address.clone_from(&address),
                    }
                    *waiting -= 1;
                    if *waiting == 0
                        && let Some((_, Job::Addresses { answer, .. })) =
                            self.admin.jobs.remove(pos)
                    {
                        send_addressed(answer);
                    }
                }
            }
        }
    }

    /// Publishes one message from the API as a client's PUBLISH entering this shard.
    fn publish_from_api(&mut self, io: &mut Io, m: &Arc<Message>) -> Tally {
        self.stats.api_messages_in.add(1);
        let mut tally = Tally::default();
        if !self.api_may_publish(m.topic()) {
            tally.denied = true;
            return tally;
        }
        self.top_topics.count(m.topic());
        let mut src = Src::from_arc(m, self.peers.id);
        if m.retain {
            self.retain(io, &mut src);
        }
        self.route(io, &mut src, Some(&mut tally));
        // Nothing waits for the log: the API's answer says where the message went.
        self.settle_routing(io, &src);
        self.latency.note_publish();
        tally
    }

    /// Whether the API may publish to `topic`. The API is an operator, not an MQTT
    /// client: the HTTP side authenticated it (an API key, or a loopback peer without a
    /// key file), and no ACL rule names it, so it has the rights of a client nothing
    /// restricts: every topic but the broker's own (`$SYS`; the API refuses every `$`
    /// topic before it comes here). Receivers' rules still hold: a message the API
    /// publishes reaches only subscribers whose rules let them read its topic.
    fn api_may_publish(&self, topic: &str) -> bool {
        ClientAcl::unrestricted().may_publish(topic)
    }

    /// A connected client's summary and its connection, from its session.
    fn client_summary(&mut self, io: &mut Io, sid: SessionId) -> Option<(ClientSummary, ConnKey)> {
        let s = self.sessions.get(sid)?;
        let conn = s.conn.filter(|&c| io.is_open(c))?;
        let version = s.version;
        let client_id = s.client_id.to_string();
        let transport = transport(io, conn);
        let client = io.state(conn)?;
        if client.phase != Phase::Connected {
            return None;
        }
        let connected_at_s = client.connected_at_s;
        let username = client.acl.username().map(String::from);
        let connected_at_ms = io.unix_ms(u64::from(connected_at_s) * 1000);
        let summary = ClientSummary {
            client_id,
            username,
            address: String::new(),
            transport: transport.into(),
            protocol_version: protocol_level(version),
            shard: self.peers.id,
            connected_at_ms,
        };
        Some((summary, conn))
    }

    fn session_summary(&self, s: &Session) -> SessionSummary {
        SessionSummary {
            client_id: s.client_id.to_string(),
            connected: s.conn.is_some(),
            shard: self.peers.id,
            expiry_interval: s.expiry_interval,
            subscriptions: s.subs_len() as u32,
            queued: s.queue_len() as u32,
        }
    }

    /// A session's subscriptions, as the API shows them.
    fn subscriptions_of(&mut self, sid: SessionId) -> Vec<Subscription> {
        let Some(s) = self.sessions.get(sid) else {
            return Vec::new();
        };
        let refs: Vec<_> = s.subs().collect();
        self.spell_out_subs(sid, &refs)
            .iter()
            .map(|sub| subscription(&sub.filter, sub.opts))
            .collect()
    }

    /// The session indexed under `client_id` here (not a stub left by a move).
    fn session_of(&self, client_id: &str) -> Option<SessionId> {
        let sid = self.sessions.find(client_id)?;
        self.sessions
            .get(sid)
            .is_some_and(|s| s.moved_to().is_none())
            .then_some(sid)
    }

    /// An answer that waits for peer addresses, under a job number of its own.
    fn start_addressed(&mut self, io: &mut Io, answer: Addressed, conns: &[ConnKey]) {
        self.admin.next_job += 1;
        let id = self.admin.next_job;
        if let Some(job) = self.await_addresses(io, id, answer, conns) {
            self.admin.jobs.push_back((id, job));
        }
    }

    fn answer_client(&mut self, io: &mut Io, client_id: &str, reply: Reply<Option<ClientDetail>>) {
        let Some(sid) = self.session_of(client_id) else {
            let _ = reply.send(None);
            return;
        };
        let Some((summary, conn)) = self.client_summary(io, sid) else {
            let _ = reply.send(None);
            return;
        };
        let subscriptions = self.subscriptions_of(sid);
        let Some(s) = self.sessions.get(sid) else {
            let _ = reply.send(None);
            return;
        };
        let inflight = s.extra().map_or(0, |e| e.inflight.len()) as u32;
        let queued = s.queue_len() as u32;
        let outbound_bytes = io.out_len(conn) as u64;
        let Some(client) = io.state(conn) else {
            let _ = reply.send(None);
            return;
        };
        let detail = ClientDetail {
            summary,
            keep_alive: client.keep_alive_s,
            clean_start: client.clean_start(),
            subscriptions,
            inflight,
            queued,
            outbound_bytes,
        };
        let answer = Addressed::Client {
            item: Box::new(detail),
            reply,
        };
        self.start_addressed(io, answer, &[conn]);
    }

    fn session_detail(&mut self, io: &Io, client_id: &str) -> Option<SessionDetail> {
        let sid = self.session_of(client_id)?;
        let subscriptions = self.subscriptions_of(sid);
        let s = self.sessions.get(sid)?;
        let expires_at_ms = s
            .conn
            .is_none()
            .then(|| s.extra().and_then(|e| e.expires_at_ms))
            .flatten()
            .map(|at| io.unix_ms(at));
        Some(SessionDetail {
            summary: self.session_summary(s),
            subscriptions,
            expires_at_ms,
        })
    }

    fn session_queue(
        &self,
        client_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Option<Vec<QueuedMessage>> {
        let s = self.sessions.get(self.session_of(client_id)?)?;
        let start = after.map_or(0, |a| a.saturating_add(1)) as usize;
        let Some(e) = s.extra() else {
            return Some(Vec::new());
        };
        let items = e
            .queue
            .iter()
            .enumerate()
            .skip(start)
            .take(limit.clamp(1, MAX_PAGE))
            .map(|(i, q)| {
                let payload = q.msg.payload();
                QueuedMessage {
                    position: i as u64,
                    topic: q.msg.topic().into(),
                    qos: q.qos as u8,
                    payload_size: payload.len(),
                    payload_preview: base64(&payload[..payload.len().min(QUEUE_PREVIEW)]),
                }
            })
            .collect();
        Some(items)
    }

    /// Ends the connection of `client_id` here for an administrator (MQTT 5: DISCONNECT
    /// 0x98). Its session stays as its expiry says; its will is published, as for any
    /// connection that ends without the client's DISCONNECT.
    fn kick(&mut self, io: &mut Io, client_id: &str) -> bool {
        let Some(conn) = self
            .session_of(client_id)
            .and_then(|sid| self.sessions.get(sid)?.conn)
            .filter(|&c| io.is_open(c))
        else {
            return false;
        };
        if let Some(c) = io.state(conn) {
            c.set_flag(client_flag::KICKED, true);
        }
        tracing::info!(
            client_id,
            shard = self.peers.id,
            "client disconnected by the API"
        );
        self.disconnect(
            io,
            conn,
            ReasonCode::ADMINISTRATIVE_ACTION,
            "disconnected by an administrator",
            CloseReason::Policy,
        );
        true
    }

    /// Ends the session of `client_id` here and its connection (MQTT 5: DISCONNECT 0x98),
    /// with its queue and without its will: an administrator's decision, not a failure.
    fn discard_session(&mut self, io: &mut Io, client_id: &str) -> bool {
        let Some(sid) = self.session_of(client_id) else {
            return false;
        };
        let Some(s) = self.sessions.get_mut(sid) else {
            return false;
        };
        drop(s.take_will());
        let conn = s.conn.take();
        let waiting = if conn.is_some() { s.queue_len() } else { 0 };
        self.pressure.waiting = self.pressure.waiting.saturating_sub(waiting);
        if let Some(conn) = conn {
            if let Some(c) = io.state(conn) {
                // The connection no longer speaks for the session.
                c.session = None;
                c.set_flag(client_flag::GRACEFUL | client_flag::KICKED, true);
            }
            self.client_disconnected(client_id, "kicked");
            self.disconnect(
                io,
                conn,
                ReasonCode::ADMINISTRATIVE_ACTION,
                "session discarded by an administrator",
                CloseReason::Policy,
            );
        }
        tracing::info!(
            client_id,
            shard = self.peers.id,
            "session discarded by the API"
        );
        self.end_session(io, sid, EndReason::Discarded);
        true
    }

    /// Walks up to `n` subscribers of the filter's node from `next` on.
    fn walk_subscriptions(
        &self,
        filter: &str,
        next: usize,
        n: usize,
        listing: &Listing,
        picks: &mut Smallest<(SessionId, Subscriber)>,
    ) -> Option<usize> {
        let subs = self.subscribers_of(filter);
        let end = next.saturating_add(n).min(subs.len());
        for sub in subs.get(next..end).unwrap_or_default() {
            let Some(s) = self.sessions.get(sub.sid) else {
                continue;
            };
            if s.moved_to().is_none() && listing.wants(&s.client_id) {
                picks.offer(&s.client_id, (sub.sid, *sub));
            }
        }
        (end < subs.len()).then_some(end)
    }

    /// The subscribers of exactly `filter` here (a shared group's members for
    /// `$share/...`).
    fn subscribers_of(&self, filter: &str) -> &[Subscriber] {
        let Ok(parsed) = topic::parse_filter(filter) else {
            return &[];
        };
        let Some(node) = self.routes.subs.find(parsed.filter()) else {
            return &[];
        };
        let v = self.routes.subs.get(node);
        match parsed {
            Filter::Plain(_) => v.plain(),
            Filter::Shared { .. } => v
                .groups()
                .find(|g| &*g.share == filter)
                .map_or(&[], |g| &g.members[..]),
        }
    }

    fn subscription_entries(
        &self,
        filter: &str,
        picks: Smallest<(SessionId, Subscriber)>,
    ) -> Vec<SubscriptionEntry> {
        picks
            .into_sorted()
            .into_iter()
            .filter(|(_, (sid, _))| self.sessions.get(*sid).is_some())
            .map(|(client_id, (_, sub))| SubscriptionEntry {
                client_id: client_id.into(),
                shard: self.peers.id,
                subscription: subscription(filter, sub.opts),
            })
            .collect()
    }
}

/// Whether a walk over the sessions lists session `s`.
fn walk_wants(walk: &SessionWalk, listing: &Listing, s: &Session, io: &mut Io) -> bool {
    if s.moved_to().is_some() || !listing.wants(&s.client_id) {
        return false;
    }
    match walk {
        SessionWalk::Sessions { connected, .. } => connected.is_none_or(|c| s.conn.is_some() == c),
        // The user name is the one the rules know the client by (none when the broker
        // checks no credentials).
        SessionWalk::Clients { username, .. } => s.conn.is_some_and(|c| {
            io.state(c).is_some_and(|client| {
                client.phase == Phase::Connected
                    && username
                        .as_deref()
                        .is_none_or(|name| client.acl.username() == Some(name))
            })
        }),
    }
}

fn send_addressed(answer: Addressed) {
    match answer {
        Addressed::Addresses { items, reply } => {
            let _ = reply.send(items);
        }
        Addressed::Client { item, reply } => {
            let _ = reply.send(Some(*item));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_keeps_the_limit_smallest_keys_in_order() {
        let mut s = Smallest::new(3);
        for k in ["m", "c", "x", "a", "k", "b", "z"] {
            s.offer(k, k.len());
        }
        assert!(!s.takes("d"), "c is the largest kept");
        assert!(s.takes("b0"));
        let keys: Vec<_> = s.into_sorted().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a".into(), "b".into(), "c".into()] as [Box<str>; 3]);
    }

    #[test]
    fn a_listing_takes_keys_after_the_cursor_with_the_prefix() {
        let l = Listing {
            prefix: Some("dev-".into()),
            after: Some("dev-10".into()),
            limit: 10,
        };
        assert!(l.wants("dev-11"));
        assert!(l.wants("dev-2"), "keys compare as strings");
        assert!(!l.wants("dev-10"), "the cursor itself was on the last page");
        assert!(!l.wants("dev-0"));
        assert!(!l.wants("phone-99"));
        assert!(Listing::default().wants(""));
    }
}
