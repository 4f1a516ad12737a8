//! What the store tests share: session events applied both to a plain model (written
//! here, independently of `State`) and to a `ShardStore`, and an in-memory disk that
//! records every write, sync, rename and delete the store's driver does, so a test can
//! rebuild the disk as it was at any point and recover from it.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use ringmq::store::log::Batch;
use ringmq::store::record::{
    Content, Deadline, Delivery, Done, EndReason, Lsn, MessageData, MsgId, Record, SessionKey,
    SubIdList, Unqueue, WillData,
};
use ringmq::store::recover::{MemFiles, RecoverError, RecoveredShard, recover_shard};
use ringmq::store::segment::StoreFile;
use ringmq::store::state::{DeliveryView, MessageView, SessionView, View, WillView};
use ringmq::store::{ShardStore, StoreConfig};
use ringmq_proto::mqtt::{QoS, SubscriptionOptions, Version};

pub const CLIENTS: [&str; 6] = [
    "alpha",
    "beta",
    "gamma",
    "delta-device-0000000042",
    "e",
    "ζ",
];
pub const FILTERS: [&str; 4] = ["a/b", "a/+", "#", "$share/g/a/#"];
pub const TOPICS: [&str; 3] = ["a/b", "a/c", "status/x"];
/// In-flight window per session in the model.
pub const WINDOW: usize = 3;

/// One thing that happens to durable state, as the broker would log it.
#[derive(Debug, Clone)]
pub enum Event {
    Connect {
        client: usize,
        clean: bool,
        v5: bool,
        expiry: u32,
    },
    Disconnect {
        client: usize,
        expires_in: Option<u64>,
        will_in: Option<u64>,
    },
    End {
        client: usize,
        expired: bool,
    },
    Subscribe {
        client: usize,
        filter: usize,
        qos: u8,
        no_local: bool,
        rap: bool,
        rh: u8,
        sub_id: u32,
    },
    Unsubscribe {
        client: usize,
        filter: usize,
    },
    Publish {
        topic: usize,
        payload: Vec<u8>,
        qos: u8,
        retain: bool,
        expires: bool,
        /// (client, delivery QoS 1 or 2, retain as published, send now, sub ids)
        targets: Vec<(usize, u8, bool, bool, Vec<u32>)>,
    },
    ClearRetained {
        topic: usize,
    },
    Deliver {
        client: usize,
    },
    DropFront {
        client: usize,
        expired: bool,
    },
    Ack {
        client: usize,
        which: usize,
    },
    InboundAdd {
        client: usize,
        pkid: u16,
    },
    InboundRelease {
        client: usize,
        which: usize,
    },
    SetWill {
        client: usize,
        delay: u32,
        expiry: Option<u32>,
        payload: Vec<u8>,
    },
    ClearWill {
        client: usize,
    },
}

fn qos(q: u8) -> QoS {
    QoS::from_u8(q.min(2)).unwrap_or(QoS::AtMostOnce)
}

/// What the disk saw, in order.
#[derive(Debug, Clone)]
pub enum Op {
    /// A write; `last_lsn` is the last LSN it holds (log segments only).
    Write {
        file: String,
        offset: u64,
        bytes: Vec<u8>,
        last_lsn: Option<Lsn>,
    },
    /// A sync of a file; `last_lsn`: everything up to it is durable (log segments).
    Sync {
        file: String,
        last_lsn: Option<Lsn>,
    },
    Rename {
        from: String,
        to: String,
    },
    Delete {
        file: String,
    },
}

/// Files as the ops left them: all of `ops`, the last cut to `cut` bytes if it is a write.
pub fn disk_after(ops: &[Op], cut: Option<usize>) -> BTreeMap<String, Vec<u8>> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Write {
                file,
                offset,
                bytes,
                ..
            } => {
                let n = match cut {
                    Some(c) if i + 1 == ops.len() => c.min(bytes.len()),
                    _ => bytes.len(),
                };
                let f = files.entry(file.clone()).or_default();
                let end = *offset as usize + n;
                if f.len() < end {
                    f.resize(end, 0);
                }
                f[*offset as usize..end].copy_from_slice(&bytes[..n]);
            }
            Op::Sync { .. } => {}
            Op::Rename { from, to } => {
                if let Some(b) = files.remove(from) {
                    files.insert(to.clone(), b);
                }
            }
            Op::Delete { file } => {
                files.remove(file);
            }
        }
    }
    files
}

/// A session-event world: the model, the store, and the disk under it.
pub struct World {
    pub store: ShardStore,
    pub config: StoreConfig,
    pub model: View,
    pub ops: Vec<Op>,
    pub files: BTreeMap<String, Vec<u8>>,
    keys: HashMap<String, SessionKey>,
    retain_clock: u64,
    pub now_ms: u64,
    /// The batch taken and not yet completed.
    in_flight: Option<Batch>,
    /// The model after each turn that appended records, and the LSN of that turn's
    /// commit: `views[k]` follows `commits[k - 1]`.
    pub views: Vec<View>,
    pub commits: Vec<Lsn>,
    turn_last: Option<Lsn>,
    /// The snapshot being written, step by step.
    snapshot: Option<u64>,
}

impl World {
    pub fn new(config: StoreConfig) -> World {
        World {
            store: ShardStore::new(0, config),
            config,
            model: View::default(),
            ops: Vec::new(),
            files: BTreeMap::new(),
            keys: HashMap::new(),
            retain_clock: 0,
            now_ms: 1_000,
            in_flight: None,
            views: vec![View::default()],
            commits: Vec::new(),
            turn_last: None,
            snapshot: None,
        }
    }

    fn append(&mut self, rec: Record<'_>) {
        let lsn = self
            .store
            .append(&rec)
            .unwrap_or_else(|e| panic!("{rec:?}: {e:?}"));
        self.turn_last = Some(lsn);
    }

    fn key(&self, client: usize) -> Option<SessionKey> {
        self.keys.get(CLIENTS[client]).copied()
    }

    /// Applies `e` to the model and to the store (nothing, where it does not apply).
    pub fn event(&mut self, e: &Event) {
        self.now_ms += 1;
        match e.clone() {
            Event::Connect {
                client,
                clean,
                v5,
                expiry,
            } => {
                let name = CLIENTS[client];
                let protocol = if v5 { Version::V5 } else { Version::V311 };
                let expiry = expiry.max(1);
                if clean && let Some(session) = self.key(client) {
                    self.append(Record::SessionEnded {
                        session,
                        reason: EndReason::Discarded,
                    });
                    self.keys.remove(name);
                    self.model.sessions.remove(name);
                }
                let session = match self.key(client) {
                    Some(k) => k,
                    None => {
                        let k = self.store.allocate_session_key();
                        self.keys.insert(name.to_string(), k);
                        k
                    }
                };
                self.append(Record::SessionOpened {
                    session,
                    client_id: name,
                    protocol,
                    expiry_interval_s: expiry,
                    opened_at_ms: self.now_ms,
                });
                let s = self
                    .model
                    .sessions
                    .entry(name.to_string())
                    .or_insert_with(|| SessionView {
                        protocol: 0,
                        expiry_interval_s: 0,
                        opened_at_ms: 0,
                        expires_at: None,
                        will_at: None,
                        subscriptions: Vec::new(),
                        will: None,
                        queue: Vec::new(),
                        inflight: Vec::new(),
                        inbound_qos2: Vec::new(),
                    });
                s.protocol = protocol.level();
                s.expiry_interval_s = expiry;
                s.opened_at_ms = self.now_ms;
                s.expires_at = None;
                s.will_at = None;
            }
            Event::Disconnect {
                client,
                expires_in,
                will_in,
            } => {
                let Some(session) = self.key(client) else {
                    return;
                };
                let deadline = |d: Option<u64>| d.map(|d| self.now_ms * 1000 + d);
                let (expires_at, will_at) = (deadline(expires_in), deadline(will_in));
                self.append(Record::SessionOffline {
                    session,
                    expires_at: expires_at.map_or(Deadline::NONE, Deadline::at_ms),
                    will_at: will_at.map_or(Deadline::NONE, Deadline::at_ms),
                });
                let s = self.model.sessions.get_mut(CLIENTS[client]).unwrap();
                s.expires_at = expires_at;
                s.will_at = will_at;
            }
            Event::End { client, expired } => {
                let Some(session) = self.key(client) else {
                    return;
                };
                let reason = if expired {
                    EndReason::Expired
                } else {
                    EndReason::Discarded
                };
                self.append(Record::SessionEnded { session, reason });
                self.keys.remove(CLIENTS[client]);
                self.model.sessions.remove(CLIENTS[client]);
            }
            Event::Subscribe {
                client,
                filter,
                qos: q,
                no_local,
                rap,
                rh,
                sub_id,
            } => {
                let Some(session) = self.key(client) else {
                    return;
                };
                let options = SubscriptionOptions {
                    qos: qos(q),
                    no_local,
                    retain_as_published: rap,
                    retain_handling: rh % 3,
                };
                let filter = FILTERS[filter];
                self.append(Record::SubAdded {
                    session,
                    filter,
                    options,
                    sub_id,
                });
                let subs = &mut self
                    .model
                    .sessions
                    .get_mut(CLIENTS[client])
                    .unwrap()
                    .subscriptions;
                let byte = options.to_byte(Version::V5).unwrap();
                subs.retain(|(f, _, _)| f != filter);
                subs.push((filter.to_string(), byte, sub_id));
                subs.sort();
            }
            Event::Unsubscribe { client, filter } => {
                let Some(session) = self.key(client) else {
                    return;
                };
                let subs = &mut self
                    .model
                    .sessions
                    .get_mut(CLIENTS[client])
                    .unwrap()
                    .subscriptions;
                let Some(i) = subs.iter().position(|(f, _, _)| f == FILTERS[filter]) else {
                    return;
                };
                subs.remove(i);
                self.append(Record::SubRemoved {
                    session,
                    filter: FILTERS[filter],
                });
            }
            Event::Publish {
                topic,
                payload,
                qos: q,
                retain,
                expires,
                targets,
            } => {
                let targets: Vec<_> = targets
                    .into_iter()
                    .filter(|t| self.key(t.0).is_some())
                    .collect();
                if targets.is_empty() && !retain {
                    return;
                }
                let id = self.store.allocate_msg_id();
                let props = [0x03, 0, 1, b'x'];
                let expires_at = expires.then_some(self.now_ms * 1000 + 5_000);
                let message = MessageData {
                    qos: qos(q),
                    retain,
                    expires_at: expires_at.map_or(Deadline::NONE, Deadline::at_ms),
                    content: Content {
                        topic: TOPICS[topic],
                        props: &props,
                        payload: &payload,
                    },
                };
                let view = MessageView {
                    qos: qos(q) as u8,
                    retain,
                    expires_at,
                    topic: TOPICS[topic].to_string(),
                    props: props.to_vec(),
                    payload: payload.clone(),
                };
                self.append(Record::MessageStored { id, message });
                for (client, dq, rap, now, ids) in targets {
                    let session = self.key(client).unwrap();
                    let ids: Vec<u32> = ids.into_iter().map(|i| i.max(1)).take(4).collect();
                    let delivery = Delivery {
                        msg: id,
                        qos: qos(dq.clamp(1, 2)),
                        retain: rap && retain,
                        sub_ids: SubIdList::new(&ids).unwrap(),
                    };
                    let dv = DeliveryView {
                        message: view.clone(),
                        qos: delivery.qos as u8,
                        retain: delivery.retain,
                        sub_ids: ids,
                    };
                    let s = self.model.sessions.get_mut(CLIENTS[client]).unwrap();
                    if now && s.inflight.len() < WINDOW {
                        let pkid = free_pkid(s);
                        s.inflight.push((pkid, false, dv));
                        self.append(Record::Sent {
                            session,
                            pkid,
                            delivery,
                        });
                    } else {
                        s.queue.push(dv);
                        self.append(Record::Enqueued { session, delivery });
                    }
                }
                if retain {
                    self.retain_clock += 1;
                    self.append(Record::RetainSet {
                        version: self.retain_clock,
                        msg: id,
                    });
                    self.model
                        .retained
                        .insert(TOPICS[topic].to_string(), (self.retain_clock, view));
                }
            }
            Event::ClearRetained { topic } => {
                self.retain_clock += 1;
                self.append(Record::RetainCleared {
                    version: self.retain_clock,
                    topic: TOPICS[topic],
                });
                self.model.retained.remove(TOPICS[topic]);
            }
            Event::Deliver { client } => {
                let Some(session) = self.key(client) else {
                    return;
                };
                let s = self.model.sessions.get_mut(CLIENTS[client]).unwrap();
                if s.queue.is_empty() || s.inflight.len() >= WINDOW {
                    return;
                }
                let dv = s.queue.remove(0);
                let pkid = free_pkid(s);
                s.inflight.push((pkid, false, dv));
                let front = self.store.state().session(session).unwrap().queue[0];
                self.append(Record::Unqueued {
                    session,
                    msg: front.msg,
                    reason: Unqueue::Sending,
                });
                self.append(Record::Sent {
                    session,
                    pkid,
                    delivery: front,
                });
            }
            Event::DropFront { client, expired } => {
                let Some(session) = self.key(client) else {
                    return;
                };
                let s = self.model.sessions.get_mut(CLIENTS[client]).unwrap();
                if s.queue.is_empty() {
                    return;
                }
                s.queue.remove(0);
                let msg: MsgId = self.store.state().session(session).unwrap().queue[0].msg;
                let reason = if expired {
                    Unqueue::Expired
                } else {
                    Unqueue::Dropped
                };
                self.append(Record::Unqueued {
                    session,
                    msg,
                    reason,
                });
            }
            Event::Ack { client, which } => {
                let Some(session) = self.key(client) else {
                    return;
                };
                let s = self.model.sessions.get_mut(CLIENTS[client]).unwrap();
                if s.inflight.is_empty() {
                    return;
                }
                let i = which % s.inflight.len();
                let (pkid, released, dv) = s.inflight[i].clone();
                if dv.qos == 2 && !released {
                    s.inflight[i].1 = true;
                    self.append(Record::Released { session, pkid });
                } else {
                    s.inflight.remove(i);
                    self.append(Record::InflightDone {
                        session,
                        pkid,
                        reason: Done::Acked,
                    });
                }
            }
            Event::InboundAdd { client, pkid } => {
                let Some(session) = self.key(client) else {
                    return;
                };
                let pkid = pkid.max(1);
                let s = self.model.sessions.get_mut(CLIENTS[client]).unwrap();
                if s.inbound_qos2.contains(&pkid) {
                    return;
                }
                s.inbound_qos2.push(pkid);
                s.inbound_qos2.sort();
                let id = u64::from(pkid) << 8 | client as u64;
                self.append(Record::InboundAdded { session, pkid, id });
            }
            Event::InboundRelease { client, which } => {
                let Some(session) = self.key(client) else {
                    return;
                };
                let s = self.model.sessions.get_mut(CLIENTS[client]).unwrap();
                if s.inbound_qos2.is_empty() {
                    return;
                }
                let pkid = s.inbound_qos2.remove(which % s.inbound_qos2.len());
                self.append(Record::InboundReleased { session, pkid });
            }
            Event::SetWill {
                client,
                delay,
                expiry,
                payload,
            } => {
                let Some(session) = self.key(client) else {
                    return;
                };
                let will = WillData {
                    delay_s: delay,
                    expiry_s: expiry,
                    qos: QoS::AtLeastOnce,
                    retain: true,
                    content: Content {
                        topic: "wills/x",
                        props: &[],
                        payload: &payload,
                    },
                };
                self.append(Record::WillSet { session, will });
                self.model.sessions.get_mut(CLIENTS[client]).unwrap().will = Some(WillView {
                    delay_s: delay,
                    expiry_s: expiry,
                    message: MessageView {
                        qos: 1,
                        retain: true,
                        expires_at: None,
                        topic: "wills/x".into(),
                        props: vec![],
                        payload,
                    },
                });
            }
            Event::ClearWill { client } => {
                let Some(session) = self.key(client) else {
                    return;
                };
                let s = self.model.sessions.get_mut(CLIENTS[client]).unwrap();
                if s.will.take().is_none() {
                    return;
                }
                self.append(Record::WillCleared { session });
            }
        }
    }

    /// Ends a loop turn: takes a batch if one is due; completes the one in flight first
    /// when `complete` (otherwise it stays in flight, and records pile up behind it).
    pub fn end_turn(&mut self, complete: bool) {
        if let Some(last) = self.turn_last.take() {
            // The turn's commit follows its last record.
            self.commits.push(last.next());
            self.views.push(self.model.clone());
        }
        if complete {
            self.complete();
        }
        // Called every turn, as a shard does: it closes the turn even while a batch is
        // in flight (and then returns none).
        if let Some(b) = self.store.take_batch(self.now_ms) {
            let file = StoreFile::Segment(b.seq).name();
            if b.len > 0 {
                self.ops.push(Op::Write {
                    file,
                    offset: b.offset,
                    bytes: self.store.batch_bytes().to_vec(),
                    last_lsn: Some(b.last_lsn),
                });
            }
            self.in_flight = Some(b);
        }
        self.snapshot_step();
    }

    /// Completes the batch in flight: its sync, then the report.
    pub fn complete(&mut self) {
        if let Some(b) = self.in_flight.take() {
            if b.sync {
                self.ops.push(Op::Sync {
                    file: StoreFile::Segment(b.seq).name(),
                    last_lsn: Some(b.last_lsn),
                });
                self.store.synced(b.last_lsn);
            } else {
                self.store.written(b.last_lsn);
            }
        }
    }

    /// Writes and completes every batch.
    pub fn flush(&mut self) {
        self.complete();
        for _ in 0..4 {
            self.end_turn(true);
        }
        self.complete();
    }

    /// Starts a snapshot between turns (written a chunk per turn by `end_turn`).
    pub fn begin_snapshot(&mut self) {
        if self.snapshot.is_none() {
            self.snapshot = self.store.begin_snapshot();
        }
    }

    fn snapshot_step(&mut self) {
        let Some(seq) = self.snapshot else { return };
        let Some(chunk) = self.store.snapshot_chunk() else {
            return;
        };
        let tmp = StoreFile::SnapshotTemp(seq).name();
        self.ops.push(Op::Write {
            file: tmp.clone(),
            offset: chunk.offset,
            bytes: chunk.bytes.clone(),
            last_lsn: None,
        });
        if !chunk.last {
            return;
        }
        self.ops.push(Op::Sync {
            file: tmp.clone(),
            last_lsn: None,
        });
        let name = StoreFile::Snapshot(seq).name();
        self.ops.push(Op::Rename {
            from: tmp,
            to: name,
        });
        self.store
            .snapshot_saved(seq, chunk.offset + chunk.bytes.len() as u64);
        self.snapshot = None;
    }

    /// Deletes what compaction made obsolete (once the log has rolled past it).
    pub fn delete_obsolete(&mut self) {
        for f in self.store.take_obsolete() {
            self.ops.push(Op::Delete { file: f.name() });
            self.store.file_deleted(f);
        }
    }

    /// The disk as it is now.
    pub fn disk(&self) -> MemFiles {
        MemFiles(disk_after(&self.ops, None))
    }

    /// Stops without a crash (everything flushed), recovers from the disk, and goes on
    /// with the recovered store.
    pub fn restart(&mut self) {
        self.flush();
        self.snapshot = None;
        let mut r = recover_shard(0, &self.disk()).expect("a clean restart recovers");
        assert_eq!(r.tail, None, "nothing torn after a clean stop");
        for f in r.obsolete.drain(..) {
            self.ops.push(Op::Delete { file: f.name() });
        }
        self.keys = r
            .state
            .sessions()
            .map(|s| (s.client_id.to_string(), s.key))
            .collect();
        self.store = ShardStore::recovered(self.config, r);
    }
}

fn free_pkid(s: &SessionView) -> u16 {
    (1..)
        .find(|p| !s.inflight.iter().any(|i| i.0 == *p))
        .unwrap()
}

/// Recovers a shard from files, in memory.
pub fn recover(files: BTreeMap<String, Vec<u8>>) -> Result<RecoveredShard, RecoverError> {
    recover_shard(0, &MemFiles(files))
}
