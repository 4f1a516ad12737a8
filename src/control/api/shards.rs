//! The [`BrokerApi`] the binary serves: each call is one [`AdminRequest`] per shard
//! concerned, sent over the shard's bounded control channel (`runtime::Control::Request`,
//! then the shard's doorbell if it sleeps), answered on a oneshot channel, and gathered
//! until the [`Deadline`].
//!
//! - Listings (clients, sessions, subscriptions) ask every shard for its `limit` smallest
//!   keys after the cursor, merge the sorted answers and keep the first `limit` (see the
//!   trait's module text); retained messages, which every shard holds, ask one shard, the
//!   next in turn.
//! - One client or session: every shard is asked, the one that holds it answers.
//! - A publish (or a batch, in order) enters one shard, the next in turn, as a client's
//!   PUBLISH would; each other shard the message reaches counts its own sessions and
//!   answers too (`Msg::Tallied`), and the counts are added up.
//!
//! A shard whose control channel is full answers nothing: the call fails at once with
//! `Unavailable` (HTTP 503) rather than wait. A shard that has stopped (shutdown) drops
//! its reply channels: `Unavailable` too.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use crossbeam_channel::{Sender, TrySendError};
use ringmq_proto::mqtt::{Packet, Properties, Property, Publish, QoS, Version};
use ringmq_shard::conn::ConnKey;
use ringmq_shard::mesh::links::Doorbell;
use ringmq_shard::runtime::Control;
use tokio::sync::oneshot;

use super::broker::*;
use crate::broker::session::Message;
use crate::broker::{AdminRequest, Listing, Tally};

/// Requests one shard's control channel holds (a shard takes up to
/// `runtime::REQUESTS_PER_TURN` of them per loop turn).
pub const CONTROL_CAPACITY: usize = 256;

/// The shards, as the API reaches them.
pub struct ShardApi {
    controls: Vec<Sender<Control<AdminRequest>>>,
    doorbells: Arc<[Doorbell]>,
    /// Which shard the next publish or retained-message request goes to.
    turn: AtomicUsize,
    /// The broker's largest packet: a publish must fit in one, as a client's must.
    max_packet_size: u32,
}

fn gone() -> BrokerError {
    BrokerError::Unavailable("the broker is shutting down".into())
}

impl ShardApi {
    /// The API over shards reached through `controls` (in shard order), woken by
    /// `doorbells`.
    pub fn new(
        controls: Vec<Sender<Control<AdminRequest>>>,
        doorbells: Arc<[Doorbell]>,
        max_packet_size: u32,
    ) -> ShardApi {
        ShardApi {
            controls,
            doorbells,
            turn: AtomicUsize::new(0),
            max_packet_size,
        }
    }

    fn next_shard(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed) % self.controls.len()
    }

    /// Sends `shard` the request `make` builds around a reply channel, and wakes it.
    fn ask<T>(
        &self,
        shard: usize,
        make: impl FnOnce(oneshot::Sender<T>) -> AdminRequest,
    ) -> Result<oneshot::Receiver<T>, BrokerError> {
        let control = self
            .controls
            .get(shard)
            .ok_or_else(|| BrokerError::Invalid(format!("there is no shard {shard}")))?;
        let (tx, rx) = oneshot::channel();
        match control.try_send(Control::Request(make(tx))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(BrokerError::Unavailable(format!(
                    "shard {shard} has {CONTROL_CAPACITY} requests waiting; try again"
                )));
            }
            Err(TrySendError::Disconnected(_)) => return Err(gone()),
        }
        self.doorbells[shard].ring_if_sleeping();
        Ok(rx)
    }

    /// One request per shard.
    fn ask_all<T>(
        &self,
        make: impl Fn(oneshot::Sender<T>) -> AdminRequest,
    ) -> Result<Vec<oneshot::Receiver<T>>, BrokerError> {
        (0..self.controls.len())
            .map(|shard| self.ask(shard, &make))
            .collect()
    }

    /// Every shard's answer to the request `make` builds, until the deadline.
    async fn ask_every<T>(
        &self,
        deadline: Deadline,
        make: impl Fn(oneshot::Sender<T>) -> AdminRequest,
    ) -> Result<Vec<T>, BrokerError> {
        gather(self.ask_all(make)?, deadline).await
    }

    /// The answer of the one shard that holds what is asked for (the others answer
    /// `None`), or [`BrokerError::NotFound`] with `missing`.
    async fn find<T>(
        &self,
        deadline: Deadline,
        missing: impl FnOnce() -> String,
        make: impl Fn(oneshot::Sender<Option<T>>) -> AdminRequest,
    ) -> Result<T, BrokerError> {
        self.ask_every(deadline, make)
            .await?
            .into_iter()
            .flatten()
            .next()
            .ok_or_else(|| BrokerError::NotFound(missing()))
    }

    /// The answer of the shard whose turn it is, for what any shard can do (every shard
    /// holds every retained message).
    async fn ask_next<T>(
        &self,
        deadline: Deadline,
        make: impl FnOnce(oneshot::Sender<T>) -> AdminRequest,
    ) -> Result<T, BrokerError> {
        let asked = self.ask(self.next_shard(), make)?;
        gather(vec![asked], deadline).await?.pop().ok_or_else(gone)
    }

    /// Every shard's answer to a listing, merged into one page (the shards named by
    /// `shard`, or all).
    async fn listing<T>(
        &self,
        shard: Option<usize>,
        listing: Listing,
        deadline: Deadline,
        make: impl Fn(Listing, oneshot::Sender<Vec<T>>) -> AdminRequest,
        key: impl Fn(&T) -> &str,
    ) -> Result<Page<T>, BrokerError> {
        let limit = listing.limit;
        let asked = match shard {
            Some(s) => vec![self.ask(s, |tx| make(listing.clone(), tx))?],
            None => self.ask_all(|tx| make(listing.clone(), tx))?,
        };
        let parts = gather(asked, deadline).await?;
        Ok(merge_page(parts, limit, key))
    }
}

/// Waits for every answer until the deadline.
async fn gather<T>(
    answers: Vec<oneshot::Receiver<T>>,
    deadline: Deadline,
) -> Result<Vec<T>, BrokerError> {
    let all = async {
        let mut out = Vec::with_capacity(answers.len());
        for a in answers {
            out.push(a.await.map_err(|_| gone())?);
        }
        Ok(out)
    };
    within(deadline, all).await
}

/// `work`, or [`BrokerError::Timeout`] once the deadline has passed.
async fn within<T>(
    deadline: Deadline,
    work: impl Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    let at = tokio::time::Instant::from_std(deadline.0);
    tokio::time::timeout_at(at, work)
        .await
        .unwrap_or(Err(BrokerError::Timeout))
}

/// The first `limit` entries of the shards' sorted answers, by key, and the cursor of the
/// next page: the last key kept, when a shard may hold more (it answered a full page) or
/// entries were left out here.
fn merge_page<T>(parts: Vec<Vec<T>>, limit: usize, key: impl Fn(&T) -> &str) -> Page<T> {
    let full = parts.iter().any(|p| p.len() >= limit);
    let mut items: Vec<T> = parts.into_iter().flatten().collect();
    items.sort_by(|a, b| key(a).cmp(key(b)));
    // A client whose session moves between shards while the shards answer may be in
    // two answers.
    items.dedup_by(|a, b| key(a) == key(b));
    let more = full || items.len() > limit;
    items.truncate(limit);
    let next = more
        .then(|| items.last().map(|i| key(i).to_string()))
        .flatten();
    Page { items, next }
}

fn listing(prefix: Option<String>, after: Option<String>, limit: Option<usize>) -> Listing {
    Listing {
        prefix,
        after,
        limit: limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE),
    }
}

/// The message a [`Publication`] stands for, as a client's PUBLISH with the same fields
/// would make it; refused if such a PUBLISH would be larger than the broker takes.
fn message(p: &Publication, max_packet_size: u32) -> Result<Arc<Message>, BrokerError> {
    let qos = QoS::from_u8(p.qos)
        .ok_or_else(|| BrokerError::Invalid(format!("qos {}: must be 0, 1 or 2", p.qos)))?;
    let pp = &p.properties;
    let correlation = match &pp.correlation_data {
        Some(c) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(c.as_bytes())
                .map_err(|_| BrokerError::Invalid("correlation_data is not base64".into()))?,
        ),
        None => None,
    };
    let mut props = Vec::new();
    if let Some(utf8) = pp.payload_format_indicator {
        Property::PayloadFormatIndicator(u8::from(utf8)).write_to(&mut props);
    }
    if let Some(t) = &pp.content_type {
        Property::ContentType(t).write_to(&mut props);
    }
    if let Some(t) = &pp.response_topic {
        Property::ResponseTopic(t).write_to(&mut props);
    }
    if let Some(c) = &correlation {
        Property::CorrelationData(c).write_to(&mut props);
    }
    for u in &pp.user_properties {
        Property::UserProperty(&u.name, &u.value).write_to(&mut props);
    }
    let mut with_expiry = props.clone();
    if let Some(s) = pp.message_expiry_interval {
        Property::MessageExpiryInterval(s).write_to(&mut with_expiry);
    }
    let size = Packet::Publish(Publish {
        dup: false,
        qos,
        retain: p.retain,
        topic: &p.topic,
        pkid: 1,
        properties: Properties::Raw(&with_expiry),
        payload: &p.payload,
    })
    .encoded_len(Version::V5);
    if size > max_packet_size as usize {
        return Err(BrokerError::Invalid(format!(
            "the message would be a {size}-byte PUBLISH; the broker takes at most \
             {max_packet_size} bytes (--max-packet-size)"
        )));
    }
    let expires_at = pp
        .message_expiry_interval
        .map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
    Ok(Arc::new(Message::new(
        &p.topic, &props, &p.payload, qos, p.retain, expires_at, None,
    )))
}

/// How many sessions a message reached: here, plus each other shard's answer.
async fn routed(tally: Tally, topic: &str) -> Result<Routed, BrokerError> {
    if tally.denied {
        return Err(BrokerError::Denied(format!(
            "the API may not publish to {topic:?}"
        )));
    }
    let mut routed = tally.here;
    for elsewhere in tally.elsewhere {
        routed += elsewhere.await.map_err(|_| gone())?;
    }
    Ok(Routed { routed })
}

impl BrokerApi for ShardApi {
    async fn publish(
        &self,
        messages: Vec<Publication>,
        deadline: Deadline,
    ) -> Result<Vec<Result<Routed, BrokerError>>, BrokerError> {
        let checked: Vec<Result<Arc<Message>, BrokerError>> = messages
            .iter()
            .map(|p| message(p, self.max_packet_size))
            .collect();
        let valid: Vec<Arc<Message>> = checked.iter().flatten().cloned().collect();
        let tallies = if valid.is_empty() {
            Vec::new()
        } else {
            self.ask_next(deadline, |reply| AdminRequest::Publish {
                messages: valid,
                reply,
            })
            .await?
        };
        let mut tallies = tallies.into_iter();
        within(deadline, async {
            let mut results = Vec::with_capacity(checked.len());
            for (c, p) in checked.into_iter().zip(&messages) {
                results.push(match c {
                    Err(e) => Err(e),
                    Ok(_) => match tallies.next() {
                        Some(t) => routed(t, &p.topic).await,
                        None => Err(BrokerError::Unavailable(
                            "the shard answered fewer publishes than it was sent".into(),
                        )),
                    },
                });
            }
            Ok(results)
        })
        .await
    }

    async fn clients(
        &self,
        q: ClientQuery,
        deadline: Deadline,
    ) -> Result<Page<ClientSummary>, BrokerError> {
        let username = q.username.clone();
        let l = listing(q.prefix, q.after, q.limit);
        let page = self
            .listing(
                q.shard,
                l,
                deadline,
                |listing, reply| AdminRequest::Clients {
                    listing,
                    username: username.clone(),
                    reply,
                },
                |(c, _)| &c.client_id,
            )
            .await?;
        // The addresses of the clients kept only, from the shard of each.
        let mut items: Vec<ClientSummary> = Vec::with_capacity(page.items.len());
        let mut by_shard: Vec<(usize, Vec<usize>, Vec<ConnKey>)> = Vec::new();
        for (i, (summary, conn)) in page.items.into_iter().enumerate() {
            match by_shard.iter_mut().find(|(s, ..)| *s == summary.shard) {
                Some((_, at, conns)) => {
                    at.push(i);
                    conns.push(conn);
                }
                None => by_shard.push((summary.shard, vec![i], vec![conn])),
            }
            items.push(summary);
        }
        let mut asked = Vec::with_capacity(by_shard.len());
        let mut places = Vec::with_capacity(by_shard.len());
        for (shard, at, conns) in by_shard {
            asked.push(self.ask(shard, |reply| AdminRequest::PeerAddresses { conns, reply })?);
            places.push(at);
        }
        for (at, addresses) in places.into_iter().zip(gather(asked, deadline).await?) {
            for (i, address) in at.into_iter().zip(addresses) {
                items[i].address = address;
            }
        }
        Ok(Page {
            items,
            next: page.next,
        })
    }

    async fn client(&self, id: String, deadline: Deadline) -> Result<ClientDetail, BrokerError> {
        let missing = || format!("no client {id:?} is connected");
        self.find(deadline, missing, |reply| AdminRequest::Client {
            client_id: id.clone(),
            reply,
        })
        .await
    }

    async fn disconnect(&self, id: String, deadline: Deadline) -> Result<(), BrokerError> {
        let asked = self.ask_every(deadline, |reply| AdminRequest::Disconnect {
            client_id: id.clone(),
            reply,
        });
        if asked.await?.contains(&true) {
            Ok(())
        } else {
            Err(BrokerError::NotFound(format!(
                "no client {id:?} is connected"
            )))
        }
    }

    async fn sessions(
        &self,
        q: SessionQuery,
        deadline: Deadline,
    ) -> Result<Page<SessionSummary>, BrokerError> {
        let connected = q.connected;
        let l = listing(q.prefix, q.after, q.limit);
        self.listing(
            None,
            l,
            deadline,
            |listing, reply| AdminRequest::Sessions {
                listing,
                connected,
                reply,
            },
            |s| &s.client_id,
        )
        .await
    }

    async fn session(&self, id: String, deadline: Deadline) -> Result<SessionDetail, BrokerError> {
        let missing = || format!("no session {id:?}");
        self.find(deadline, missing, |reply| AdminRequest::Session {
            client_id: id.clone(),
            reply,
        })
        .await
    }

    async fn session_queue(
        &self,
        id: String,
        page: PageQuery,
        deadline: Deadline,
    ) -> Result<Page<QueuedMessage>, BrokerError> {
        let after = match page.after.as_deref().map(str::parse::<u64>) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                return Err(BrokerError::Invalid(
                    "after: a queue position (a number from the last page)".into(),
                ));
            }
        };
        let limit = page.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
        let missing = || format!("no session {id:?}");
        let items = self
            .find(deadline, missing, |reply| AdminRequest::SessionQueue {
                client_id: id.clone(),
                after,
                limit,
                reply,
            })
            .await?;
        let next = (items.len() == limit)
            .then(|| items.last().map(|m| m.position.to_string()))
            .flatten();
        Ok(Page { items, next })
    }

    async fn discard_session(&self, id: String, deadline: Deadline) -> Result<(), BrokerError> {
        let asked = self.ask_every(deadline, |reply| AdminRequest::DiscardSession {
            client_id: id.clone(),
            reply,
        });
        if asked.await?.contains(&true) {
            Ok(())
        } else {
            Err(BrokerError::NotFound(format!("no session {id:?}")))
        }
    }

    async fn subscriptions(
        &self,
        q: SubscriptionQuery,
        deadline: Deadline,
    ) -> Result<Page<SubscriptionEntry>, BrokerError> {
        let filter = q.filter.clone();
        let l = listing(None, q.after, q.limit);
        self.listing(
            None,
            l,
            deadline,
            |listing, reply| AdminRequest::Subscriptions {
                filter: filter.clone(),
                listing,
                reply,
            },
            |s| &s.client_id,
        )
        .await
    }

    async fn retained(
        &self,
        q: RetainedQuery,
        deadline: Deadline,
    ) -> Result<Page<RetainedSummary>, BrokerError> {
        let filter = q.filter.clone().unwrap_or_else(|| "#".into());
        let l = listing(None, q.after, q.limit);
        // Every shard holds every retained message: one answers.
        let shard = self.next_shard();
        self.listing(
            Some(shard),
            l,
            deadline,
            |listing, reply| AdminRequest::Retained {
                filter: filter.clone(),
                listing,
                reply,
            },
            |r| &r.topic,
        )
        .await
    }

    async fn retained_message(
        &self,
        topic: String,
        deadline: Deadline,
    ) -> Result<RetainedMessage, BrokerError> {
        let asked = self.ask_next(deadline, |reply| AdminRequest::RetainedMessage {
            topic: topic.clone(),
            reply,
        });
        asked
            .await?
            .ok_or_else(|| BrokerError::NotFound(format!("no retained message on {topic:?}")))
    }

    async fn delete_retained(&self, topic: String, deadline: Deadline) -> Result<(), BrokerError> {
        let asked = self.ask_next(deadline, |reply| AdminRequest::DeleteRetained {
            topic: topic.clone(),
            reply,
        });
        if asked.await? {
            Ok(())
        } else {
            Err(BrokerError::NotFound(format!(
                "no retained message on {topic:?}"
            )))
        }
    }

    async fn top_topics(
        &self,
        limit: usize,
        deadline: Deadline,
    ) -> Result<Vec<TopicRate>, BrokerError> {
        let parts = self.ask_every(deadline, |reply| AdminRequest::TopTopics { reply });
        let mut by_topic: std::collections::HashMap<String, f64> = Default::default();
        for part in parts.await? {
            for t in part {
                *by_topic.entry(t.topic).or_default() += t.messages_per_second;
            }
        }
        let mut top: Vec<TopicRate> = by_topic
            .into_iter()
            .map(|(topic, messages_per_second)| TopicRate {
                topic,
                messages_per_second,
            })
            .collect();
        top.sort_by(|a, b| {
            b.messages_per_second
                .total_cmp(&a.messages_per_second)
                .then_with(|| a.topic.cmp(&b.topic))
        });
        top.truncate(limit);
        Ok(top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_merge_by_key_and_say_where_to_go_on() {
        let parts = vec![vec!["a", "d", "e"], vec!["b", "c"]];
        let p = merge_page(parts.clone(), 3, |s| s);
        assert_eq!(p.items, ["a", "b", "c"]);
        assert_eq!(p.next.as_deref(), Some("c"));
        let p = merge_page(parts, 10, |s| s);
        assert_eq!(p.items.len(), 5);
        assert_eq!(p.next, None, "no shard answered a full page");
        // A shard that filled its page may hold more: the cursor says so.
        let p = merge_page(vec![vec!["a", "b"], vec![]], 2, |s| s);
        assert_eq!(p.next.as_deref(), Some("b"));
        let p = merge_page(vec![vec!["x"], vec!["x"]], 5, |s| s);
        assert_eq!(p.items, ["x"], "one entry per key");
    }

    fn publication(topic: &str, payload: usize) -> Publication {
        Publication {
            topic: topic.into(),
            payload: vec![b'p'; payload],
            qos: 1,
            retain: false,
            properties: PublishProperties {
                content_type: Some("text/plain".into()),
                correlation_data: Some("AAE=".into()),
                message_expiry_interval: Some(60),
                user_properties: vec![UserProperty {
                    name: "k".into(),
                    value: "v".into(),
                }],
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_publication_becomes_the_message_a_client_publish_makes() {
        let m = message(&publication("a/b", 3), 1024).unwrap();
        assert_eq!(
            (m.topic(), m.payload(), m.qos),
            ("a/b", &b"ppp"[..], QoS::AtLeastOnce)
        );
        let props: Vec<String> = Properties::Raw(m.props())
            .iter()
            .map(|p| format!("{p:?}"))
            .collect();
        assert_eq!(
            props,
            [
                "ContentType(\"text/plain\")",
                "CorrelationData([0, 1])",
                "UserProperty(\"k\", \"v\")"
            ],
            "forwarded properties; the expiry is kept apart"
        );
        assert!(m.expires_at.is_some());
        assert!(matches!(
            message(&publication("a/b", 2000), 1024),
            Err(BrokerError::Invalid(e)) if e.contains("--max-packet-size")
        ));
    }
}
