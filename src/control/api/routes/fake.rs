//! An in-memory [`BrokerApi`] for the handler tests: clients, sessions with queues,
//! subscriptions and retained messages in sorted maps, paged the way the trait says
//! (entries after the cursor, in key order), with a way to make the next call fail.

use std::collections::BTreeMap;
use std::sync::Mutex;

use base64::Engine as _;

use crate::control::api::broker::*;

#[derive(Default)]
pub struct FakeBroker {
    pub state: Mutex<FakeState>,
}

#[derive(Default)]
pub struct FakeState {
    pub clients: BTreeMap<String, ClientDetail>,
    pub sessions: BTreeMap<String, SessionDetail>,
    pub queues: BTreeMap<String, Vec<QueuedMessage>>,
    pub retained: BTreeMap<String, RetainedMessage>,
    pub published: Vec<Publication>,
    pub disconnected: Vec<String>,
    pub top: Vec<TopicRate>,
    /// The next call fails with this.
    pub fail_next: Option<BrokerError>,
}

impl FakeBroker {
    /// A broker with `n` connected clients `client-000`…, each subscribed to
    /// `users/<i>/#` on shard `i % 2`, with a persistent session, and one offline session
    /// `phone-offline` holding two queued messages.
    pub fn with_clients(n: usize) -> FakeBroker {
        let fake = FakeBroker::default();
        {
            let mut s = fake.state.lock().unwrap();
            for i in 0..n {
                let id = format!("client-{i:03}");
                let sub = Subscription {
                    filter: format!("users/{i}/#"),
                    qos: 1,
                    no_local: false,
                    retain_as_published: false,
                };
                s.clients.insert(
                    id.clone(),
                    ClientDetail {
                        summary: ClientSummary {
                            client_id: id.clone(),
                            username: (i % 3 == 0).then(|| "alice".to_string()),
                            address: format!("127.0.0.1:{}", 40000 + i),
                            transport: if i % 2 == 0 { "mqtt" } else { "ws" }.into(),
                            protocol_version: 5,
                            shard: i % 2,
                            connected_at_ms: 1_700_000_000_000 + i as u64,
                        },
                        keep_alive: 60,
                        clean_start: false,
                        subscriptions: vec![sub.clone()],
                        inflight: 0,
                        queued: 0,
                        outbound_bytes: 0,
                    },
                );
                s.sessions.insert(
                    id.clone(),
                    SessionDetail {
                        summary: SessionSummary {
                            client_id: id,
                            connected: true,
                            shard: i % 2,
                            expiry_interval: 3600,
                            subscriptions: 1,
                            queued: 0,
                        },
                        subscriptions: vec![sub],
                        expires_at_ms: None,
                    },
                );
            }
            let offline = "phone-offline".to_string();
            s.sessions.insert(
                offline.clone(),
                SessionDetail {
                    summary: SessionSummary {
                        client_id: offline.clone(),
                        connected: false,
                        shard: 1,
                        expiry_interval: 86400,
                        subscriptions: 1,
                        queued: 2,
                    },
                    subscriptions: vec![Subscription {
                        filter: "users/phone/inbox".into(),
                        qos: 1,
                        no_local: false,
                        retain_as_published: false,
                    }],
                    expires_at_ms: Some(1_700_086_400_000),
                },
            );
            let queued = (0..2)
                .map(|p| QueuedMessage {
                    position: p,
                    topic: "users/phone/inbox".into(),
                    qos: 1,
                    payload_size: 5,
                    payload_preview: base64::engine::general_purpose::STANDARD.encode("hello"),
                })
                .collect();
            s.queues.insert(offline, queued);
            s.top = vec![TopicRate {
                topic: "users/1/inbox".into(),
                messages_per_second: 12.5,
            }];
        }
        fake
    }

    fn enter(&self) -> Result<std::sync::MutexGuard<'_, FakeState>, BrokerError> {
        let mut s = self.state.lock().unwrap();
        match s.fail_next.take() {
            Some(e) => Err(e),
            None => Ok(s),
        }
    }
}

/// Entries after the cursor, at most `limit`, and the cursor of the next page.
fn page<T: Clone>(
    entries: impl Iterator<Item = (String, T)>,
    after: Option<&str>,
    limit: Option<usize>,
) -> Page<T> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    let mut items = Vec::new();
    let mut last = None;
    let mut more = false;
    for (key, item) in entries {
        if after.is_some_and(|a| key.as_str() <= a) {
            continue;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        last = Some(key);
        items.push(item);
    }
    Page {
        items,
        next: if more { last } else { None },
    }
}

fn not_found(what: &str, id: &str) -> BrokerError {
    BrokerError::NotFound(format!("no {what} {id:?}"))
}

impl BrokerApi for FakeBroker {
    async fn publish(
        &self,
        messages: Vec<Publication>,
        _deadline: Deadline,
    ) -> Result<Vec<Result<Routed, BrokerError>>, BrokerError> {
        let mut s = self.enter()?;
        let mut results = Vec::new();
        for m in messages {
            if m.topic.starts_with("denied/") {
                results.push(Err(BrokerError::Denied(format!(
                    "API publishers may not publish to {:?}",
                    m.topic
                ))));
                continue;
            }
            let routed = s
                .sessions
                .values()
                .filter(|d| {
                    d.subscriptions
                        .iter()
                        .any(|sub| ringmq_proto::topic::matches(&sub.filter, &m.topic))
                })
                .count() as u64;
            if m.retain {
                s.retained.insert(
                    m.topic.clone(),
                    RetainedMessage {
                        topic: m.topic.clone(),
                        qos: m.qos,
                        payload: base64::engine::general_purpose::STANDARD.encode(&m.payload),
                        properties: m.properties.clone(),
                    },
                );
            }
            s.published.push(m);
            results.push(Ok(Routed { routed }));
        }
        Ok(results)
    }

    async fn clients(
        &self,
        q: ClientQuery,
        _deadline: Deadline,
    ) -> Result<Page<ClientSummary>, BrokerError> {
        let s = self.enter()?;
        let entries = s
            .clients
            .iter()
            .filter(|(id, c)| {
                q.prefix.as_ref().is_none_or(|p| id.starts_with(p.as_str()))
                    && q.username
                        .as_ref()
                        .is_none_or(|u| c.summary.username.as_ref() == Some(u))
                    && q.shard.is_none_or(|sh| c.summary.shard == sh)
            })
            .map(|(id, c)| (id.clone(), c.summary.clone()));
        Ok(page(entries, q.after.as_deref(), q.limit))
    }

    async fn client(&self, id: String, _deadline: Deadline) -> Result<ClientDetail, BrokerError> {
        let s = self.enter()?;
        s.clients
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found("client", &id))
    }

    async fn disconnect(&self, id: String, _deadline: Deadline) -> Result<(), BrokerError> {
        let mut s = self.enter()?;
        s.clients
            .remove(&id)
            .ok_or_else(|| not_found("client", &id))?;
        if let Some(session) = s.sessions.get_mut(&id) {
            session.summary.connected = false;
        }
        s.disconnected.push(id);
        Ok(())
    }

    async fn sessions(
        &self,
        q: SessionQuery,
        _deadline: Deadline,
    ) -> Result<Page<SessionSummary>, BrokerError> {
        let s = self.enter()?;
        let entries = s
            .sessions
            .iter()
            .filter(|(id, d)| {
                q.prefix.as_ref().is_none_or(|p| id.starts_with(p.as_str()))
                    && q.connected.is_none_or(|c| d.summary.connected == c)
            })
            .map(|(id, d)| (id.clone(), d.summary.clone()));
        Ok(page(entries, q.after.as_deref(), q.limit))
    }

    async fn session(&self, id: String, _deadline: Deadline) -> Result<SessionDetail, BrokerError> {
        let s = self.enter()?;
        s.sessions
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found("session", &id))
    }

    async fn session_queue(
        &self,
        id: String,
        p: PageQuery,
        _deadline: Deadline,
    ) -> Result<Page<QueuedMessage>, BrokerError> {
        let s = self.enter()?;
        if !s.sessions.contains_key(&id) {
            return Err(not_found("session", &id));
        }
        let after = match p.after.as_deref().map(str::parse::<u64>) {
            None => None,
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => return Err(BrokerError::Invalid("after: a queue position".into())),
        };
        let queue = s.queues.get(&id).cloned().unwrap_or_default();
        let entries = queue
            .into_iter()
            .filter(|m| after.is_none_or(|a| m.position > a))
            .map(|m| (format!("{:020}", m.position), m));
        let mut result = page(entries, None, p.limit);
        result.next = result
            .items
            .last()
            .filter(|_| result.next.is_some())
            .map(|m| m.position.to_string());
        Ok(result)
    }

    async fn discard_session(&self, id: String, _deadline: Deadline) -> Result<(), BrokerError> {
        let mut s = self.enter()?;
        s.sessions
            .remove(&id)
            .ok_or_else(|| not_found("session", &id))?;
        s.clients.remove(&id);
        s.queues.remove(&id);
        Ok(())
    }

    async fn subscriptions(
        &self,
        q: SubscriptionQuery,
        _deadline: Deadline,
    ) -> Result<Page<SubscriptionEntry>, BrokerError> {
        let s = self.enter()?;
        let entries = s.sessions.iter().flat_map(|(id, d)| {
            d.subscriptions
                .iter()
                .filter(|sub| sub.filter == q.filter)
                .map(|sub| {
                    (
                        id.clone(),
                        SubscriptionEntry {
                            client_id: id.clone(),
                            shard: d.summary.shard,
                            subscription: sub.clone(),
                        },
                    )
                })
                .collect::<Vec<_>>()
        });
        Ok(page(entries, q.after.as_deref(), q.limit))
    }

    async fn retained(
        &self,
        q: RetainedQuery,
        _deadline: Deadline,
    ) -> Result<Page<RetainedSummary>, BrokerError> {
        let s = self.enter()?;
        let filter = q.filter.clone().unwrap_or_else(|| "#".into());
        let entries = s
            .retained
            .iter()
            .filter(|(t, _)| ringmq_proto::topic::matches(&filter, t))
            .map(|(t, m)| {
                let size = base64::engine::general_purpose::STANDARD
                    .decode(&m.payload)
                    .map_or(0, |p| p.len());
                (
                    t.clone(),
                    RetainedSummary {
                        topic: t.clone(),
                        qos: m.qos,
                        payload_size: size,
                    },
                )
            });
        Ok(page(entries, q.after.as_deref(), q.limit))
    }

    async fn retained_message(
        &self,
        topic: String,
        _deadline: Deadline,
    ) -> Result<RetainedMessage, BrokerError> {
        let s = self.enter()?;
        s.retained
            .get(&topic)
            .cloned()
            .ok_or_else(|| not_found("retained message on", &topic))
    }

    async fn delete_retained(&self, topic: String, _deadline: Deadline) -> Result<(), BrokerError> {
        let mut s = self.enter()?;
        s.retained
            .remove(&topic)
            .map(|_| ())
            .ok_or_else(|| not_found("retained message on", &topic))
    }

    async fn top_topics(
        &self,
        limit: usize,
        _deadline: Deadline,
    ) -> Result<Vec<TopicRate>, BrokerError> {
        let s = self.enter()?;
        Ok(s.top.iter().take(limit).cloned().collect())
    }
}
