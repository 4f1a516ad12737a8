//! A session moving to another node of the cluster. Its client connected there; this
//! node closes the old connection and sends the session — subscriptions, queue, in-flight
//! window, the QoS 2 packet ids it has received and not yet seen released — as an
//! *image*: the log's own records (`store::record`) that rebuild it in an empty state,
//! framed and checksummed as in the log. The receiving node applies them to an empty
//! [`State`], which checks them as recovery does, and rebuilds the session from it as
//! recovery does (`recovery::restore_deliveries`). One format and one checker for a
//! session at rest and a session in transit.
//!
//! The image leaves out what belongs to the old connection: its will (published or
//! dropped when the connection is closed, as for a takeover between shards) and the
//! session's expiry (the new connection's CONNECT sets it).
//!
//! Before the records, the image says what the session had had when it left (its
//! [`NodeArrival`] on the new node), 14 bytes per entry, big-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 4 | entries of `had` (at most [`MAX_HAD`]) |
//! | 14 each | a publishing node's hash (4), its shard (2), the highest number of that shard routed on the session's old shard (8) |
//! | 4 | entries of `seen` (at most [`NodeArrival::MAX_SEEN`]) |
//! | 14 each | a publish the session got since it last moved between nodes: node hash, shard, number |

use std::collections::HashMap;
use std::sync::Arc;

use super::durable::{delivery_as, message_data};
use super::node_arrival::NodeArrival;
use super::recovery::{restore_deliveries, stored_message};
use super::session::{Message, MovingSession, OutState, PubNumber, Queued, Session, Subscription};
use crate::store::record::{RecordError, decode_frame};
use crate::store::{Delivery, Lsn, MsgId, Record, SessionKey, State};
use ringmq_proto::Decoded;

/// The largest image: a session whose image would be larger leaves its oldest queued
/// messages behind (counted by the caller), never its in-flight window.
pub const MAX_IMAGE: usize = 64 << 20;

/// Publishing shards an image's `had` names at most (nodes × shards of a cluster).
pub const MAX_HAD: usize = 1 << 16;

/// The key the session has inside its image.
const KEY: SessionKey = SessionKey(1);

/// Why bytes are not a session image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    Record(RecordError),
    /// It ends inside a record.
    Truncated,
    /// A record that is not part of a session image, or one its state refuses.
    Unexpected(String),
    /// No session in it, or more than one.
    Sessions(usize),
    /// What the session had is cut short or past its bounds.
    Position,
}

/// The image of session `s` with subscriptions `subs`, leaving a shard that has routed
/// `had` (per publishing node and shard, the highest number), and how many queued
/// messages were left out to stay within [`MAX_IMAGE`].
pub(super) fn encode(
    s: &Session,
    subs: &[Subscription],
    had: &HashMap<(u32, u16), u64>,
) -> (Vec<u8>, usize) {
    let e = s.extra();
    let queue: Vec<&Queued> = e.map(|e| e.queue.iter().collect()).unwrap_or_default();
    let mut position = Vec::new();
    let put = |out: &mut Vec<u8>, node: u32, shard: u16, n: u64| {
        out.extend_from_slice(&node.to_be_bytes());
        out.extend_from_slice(&shard.to_be_bytes());
        out.extend_from_slice(&n.to_be_bytes());
    };
    position.extend_from_slice(&(had.len().min(MAX_HAD) as u32).to_be_bytes());
    for (&(node, shard), &n) in had.iter().take(MAX_HAD) {
        put(&mut position, node, shard, n);
    }
    let seen: Vec<&PubNumber> = e
        .and_then(|e| e.from_node.as_ref())
        .map(|a| a.seen().collect())
        .unwrap_or_default();
    position.extend_from_slice(&(seen.len() as u32).to_be_bytes());
    for n in seen {
        put(&mut position, n.node, n.shard, n.n);
    }
    let mut skip = 0;
    loop {
        let mut out = position.clone();
        out.extend_from_slice(&encode_from(s, subs, &queue[skip..]));
        if out.len() <= MAX_IMAGE || skip == queue.len() {
            return (out, skip);
        }
        // Leave out as many of the oldest as the excess could hold, at least one.
        let excess = out.len() - MAX_IMAGE;
        let mut freed = 0;
        while skip < queue.len() && freed < excess {
            freed += queue[skip].msg.payload().len() + queue[skip].msg.topic().len();
            skip += 1;
        }
    }
}

/// An image being written: its frames, and the last frame's number.
#[derive(Default)]
struct Image {
    out: Vec<u8>,
    lsn: u64,
}

impl Image {
    fn put(&mut self, rec: &Record<'_>) {
        self.lsn += 1;
        // Every field comes from a session the broker accepted, within the log's bounds.
        let _ = rec.encode(Lsn(self.lsn), &mut self.out);
    }
}

fn encode_from(s: &Session, subs: &[Subscription], queue: &[&Queued]) -> Vec<u8> {
    let mut image = Image::default();
    image.put(&Record::SessionOpened {
        session: KEY,
        client_id: s.client_id.as_str(),
        protocol: s.version,
        expiry_interval_s: s.expiry_interval,
        opened_at_ms: 0,
    });
    for sub in subs {
        image.put(&Record::SubAdded {
            session: KEY,
            filter: &sub.filter,
            options: sub.opts,
            sub_id: sub.sub_id,
        });
    }
    let Some(e) = s.extra() else {
        return image.out;
    };
    // Each message once, however many deliveries refer to it.
    let mut ids: HashMap<*const Message, MsgId> = HashMap::new();
    let mut id_of = |image: &mut Image, m: &Arc<Message>| -> MsgId {
        let next = MsgId(ids.len() as u64 + 1);
        *ids.entry(Arc::as_ptr(m)).or_insert_with(|| {
            image.put(&Record::MessageStored {
                id: next,
                message: message_data(m),
            });
            next
        })
    };
    let queued: Vec<Delivery> = queue
        .iter()
        .map(|q| delivery_as(q, id_of(&mut image, &q.msg)))
        .collect();
    let sent: Vec<Delivery> = e
        .inflight
        .iter()
        .map(|i| delivery_as(&i.delivery, id_of(&mut image, &i.delivery.msg)))
        .collect();
    for delivery in queued {
        image.put(&Record::Enqueued {
            session: KEY,
            delivery,
        });
    }
    for (i, delivery) in e.inflight.iter().zip(sent) {
        image.put(&Record::Sent {
            session: KEY,
            pkid: i.pkid,
            delivery,
        });
        if i.state == OutState::Released {
            image.put(&Record::Released {
                session: KEY,
                pkid: i.pkid,
            });
        }
    }
    for &pkid in e.inbound_qos2.keys() {
        // The message ids of the old node's log mean nothing here.
        image.put(&Record::InboundAdded {
            session: KEY,
            pkid,
            id: 0,
        });
    }
    image.out
}

/// Reads `count` entries of 14 bytes (at most `max`) from the front of `bytes`.
fn read_entries(bytes: &mut &[u8], max: usize) -> Result<Vec<PubNumber>, ImageError> {
    let count = bytes.get(..4).ok_or(ImageError::Position)?;
    let count = u32::from_be_bytes(count.try_into().expect("4")) as usize;
    if count > max {
        return Err(ImageError::Position);
    }
    let all = bytes.get(4..4 + 14 * count).ok_or(ImageError::Position)?;
    let entries = all
        .chunks_exact(14)
        .map(|b| PubNumber {
            node: u32::from_be_bytes(b[..4].try_into().expect("4")),
            shard: u16::from_be_bytes([b[4], b[5]]),
            n: u64::from_be_bytes(b[6..].try_into().expect("8")),
        })
        .collect();
    *bytes = &bytes[4 + 14 * count..];
    Ok(entries)
}

/// The session an image holds, checked record by record.
pub fn decode(mut bytes: &[u8]) -> Result<MovingSession, ImageError> {
    let had = read_entries(&mut bytes, MAX_HAD)?
        .into_iter()
        .map(|n| ((n.node, n.shard), n.n))
        .collect();
    let seen = read_entries(&mut bytes, NodeArrival::MAX_SEEN)?;
    let mut state = State::new();
    while !bytes.is_empty() {
        let (frame, used) = match decode_frame(bytes).map_err(ImageError::Record)? {
            Decoded::Complete(frame, used) => (frame, used),
            Decoded::Partial { .. } => return Err(ImageError::Truncated),
        };
        match frame.record {
            Record::SessionOpened { .. }
            | Record::SubAdded { .. }
            | Record::MessageStored { .. }
            | Record::Enqueued { .. }
            | Record::Sent { .. }
            | Record::Released { .. }
            | Record::InboundAdded { .. } => {}
            other => return Err(ImageError::Unexpected(format!("{other:?}"))),
        }
        state
            .apply(frame.lsn, &frame.record)
            .map_err(|e| ImageError::Unexpected(format!("{e:?}")))?;
        bytes = &bytes[used..];
    }
    let mut sessions = state.sessions();
    let (Some(s), None) = (sessions.next(), sessions.next()) else {
        return Err(ImageError::Sessions(state.sessions().count()));
    };
    let mut session = Session::new(&s.client_id, s.protocol);
    session.expiry_interval = s.expiry_interval_s;
    let mut messages: HashMap<MsgId, Arc<Message>> = HashMap::new();
    let message = |id: MsgId| -> Option<Arc<Message>> {
        let m = state.message(id)?;
        Some(
            messages
                .entry(id)
                .or_insert_with(|| Arc::new(stored_message(m)))
                .clone(),
        )
    };
    restore_deliveries(session.extra_mut(), s, message, false);
    session.extra_mut().from_node = Some(Box::new(NodeArrival::new(had, seen)));
    let subs = s
        .subscriptions
        .iter()
        .map(|sub| Subscription {
            filter: sub.filter.clone(),
            opts: sub.options,
            sub_id: sub.sub_id,
        })
        .collect();
    Ok(MovingSession {
        session,
        subs,
        seen: Vec::new(),
        opened_at_ms: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::node_arrival::Admit;
    use crate::broker::session::{Inflight, SubIds};
    use ringmq_proto::mqtt::{QoS, SubscriptionOptions, Version};

    fn queued(m: &Arc<Message>, qos: QoS, sub_id: u32) -> Queued {
        Queued {
            msg: m.clone(),
            qos,
            retain: false,
            sub_ids: SubIds::one(sub_id),
            store_id: 7,
        }
    }

    fn session() -> (Session, Vec<Subscription>) {
        let mut s = Session::new("dev/1", Version::V5);
        s.expiry_interval = 3600;
        let a = Arc::new(Message::new(
            "t/a",
            &[1, 0],
            b"one",
            QoS::ExactlyOnce,
            false,
            None,
            None,
        ));
        let b = Arc::new(Message::new(
            "t/b",
            &[],
            b"two",
            QoS::AtLeastOnce,
            true,
            None,
            None,
        ));
        let e = s.extra_mut();
        // One message in the queue and in flight: stored once.
        e.queue.push_back(queued(&a, QoS::AtLeastOnce, 5));
        e.queue.push_back(queued(&b, QoS::AtLeastOnce, 0));
        e.inflight.push_back(Inflight {
            pkid: 9,
            state: OutState::Released,
            delivery: queued(&a, QoS::ExactlyOnce, 5),
        });
        e.inflight.push_back(Inflight {
            pkid: 10,
            state: OutState::Published,
            delivery: queued(&b, QoS::AtLeastOnce, 0),
        });
        e.inbound_qos2.insert(33, 12);
        let subs = vec![
            Subscription {
                filter: "t/#".into(),
                opts: SubscriptionOptions::new(QoS::AtLeastOnce),
                sub_id: 5,
            },
            Subscription {
                filter: "$share/g/t/+".into(),
                opts: SubscriptionOptions::new(QoS::AtLeastOnce),
                sub_id: 0,
            },
        ];
        (s, subs)
    }

    /// What of a session travels, comparable.
    fn parts(s: &Session) -> Vec<String> {
        let e = s.extra().unwrap();
        let mut out = vec![format!(
            "{} {:?} {}",
            s.client_id.as_str(),
            s.version,
            s.expiry_interval
        )];
        for q in &e.queue {
            out.push(format!(
                "q {} {:?} {:?} {:?} {:?}",
                q.msg.topic(),
                q.msg.payload(),
                q.msg.props(),
                q.qos,
                q.sub_ids.as_slice()
            ));
        }
        for i in &e.inflight {
            let q = &i.delivery;
            out.push(format!(
                "f {} {:?} {} {:?} {:?}",
                i.pkid,
                i.state,
                q.msg.topic(),
                q.qos,
                q.msg.retain
            ));
        }
        let mut inbound: Vec<u16> = e.inbound_qos2.keys().copied().collect();
        inbound.sort();
        out.push(format!("in {inbound:?}"));
        out
    }

    #[test]
    fn an_image_rebuilds_the_session() {
        let (s, subs) = session();
        let had = HashMap::from([((7, 1), 99), ((8, 0), 5)]);
        let (image, left_out) = encode(&s, &subs, &had);
        assert_eq!(left_out, 0);
        let moved = decode(&image).unwrap();
        assert_eq!(parts(&moved.session), parts(&s));
        let filters: Vec<(&str, u32)> = moved.subs.iter().map(|x| (&*x.filter, x.sub_id)).collect();
        assert_eq!(filters, [("t/#", 5), ("$share/g/t/+", 0)]);
        // The in-flight window and the queue share a message: one copy of it arrives.
        let e = moved.session.extra().unwrap();
        assert!(Arc::ptr_eq(&e.queue[0].msg, &e.inflight[0].delivery.msg));
        // Nothing names the old node's log.
        assert!(e.queue.iter().all(|q| q.store_id == 0));
        // What it had on the old node came with it.
        assert_eq!(e.from_node.as_ref().unwrap().had, had);
    }

    /// A session that moves on before its arrival's window closed takes along what it
    /// got since; the new node delivers none of those again, nor what the old shard
    /// had routed.
    #[test]
    fn what_a_session_had_and_got_moves_with_it() {
        let (mut s, subs) = session();
        let n = |n| PubNumber {
            node: 7,
            shard: 1,
            n,
        };
        let mut arrival = NodeArrival::new(HashMap::new(), []);
        let mut release = Vec::new();
        assert_eq!(
            arrival.admit_forwarded(n(500), &mut release),
            Admit::Deliver
        );
        s.extra_mut().from_node = Some(Box::new(arrival));
        let had = HashMap::from([((7, 1), 100)]);
        let (image, _) = encode(&s, &subs, &had);
        let mut moved = decode(&image).unwrap();
        let a = moved.session.extra_mut().from_node.as_mut().unwrap();
        // (Past the stub's time: nothing is held.)
        assert_eq!(a.admit_direct(n(100), 0), Admit::Duplicate, "had");
        assert_eq!(a.admit_direct(n(500), 0), Admit::Duplicate, "got it");
        assert_eq!(a.admit_forwarded(n(500), &mut release), Admit::Duplicate);
        assert_eq!(a.admit_direct(n(101), 0), Admit::Deliver);
        assert_eq!(a.admit_forwarded(n(101), &mut release), Admit::Duplicate);
        assert_eq!(a.admit_forwarded(n(102), &mut release), Admit::Deliver);
        assert_eq!(a.admit_direct(n(102), 0), Admit::Duplicate, "got it now");
        // Another shard's numbers are its own.
        assert_eq!(
            a.admit_direct(PubNumber { shard: 2, ..n(50) }, 0),
            Admit::Deliver
        );
        assert!(release.is_empty());
    }

    #[test]
    fn a_damaged_or_cut_image_is_refused() {
        let (s, subs) = session();
        let (image, _) = encode(&s, &subs, &HashMap::from([((1, 1), 1)]));
        for cut in [1, 10, image.len() / 2, image.len() - 1] {
            assert!(decode(&image[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = image.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(decode(&bad), Err(ImageError::Record(_))));
        // Two sessions in one image.
        let mut two = image.clone();
        let (other, _) = encode(&Session::new("dev/2", Version::V311), &[], &HashMap::new());
        two.extend_from_slice(&other[8..]);
        assert!(decode(&two).is_err());
        assert_eq!(decode(&[0; 8]).err(), Some(ImageError::Sessions(0)));
        assert_eq!(decode(&[]).err(), Some(ImageError::Position));
        // More entries than the bound.
        let mut past = image.clone();
        past[..4].copy_from_slice(&(MAX_HAD as u32 + 1).to_be_bytes());
        assert_eq!(decode(&past).err(), Some(ImageError::Position));
    }

    #[test]
    fn a_queue_past_the_bound_leaves_its_oldest_behind() {
        let mut s = Session::new("big", Version::V311);
        let payload = vec![0u8; 1 << 20];
        let n = MAX_IMAGE / payload.len() + 8;
        for i in 0..n {
            let m = Arc::new(Message::new(
                &format!("b/{i}"),
                &[],
                &payload,
                QoS::AtLeastOnce,
                false,
                None,
                None,
            ));
            s.extra_mut()
                .queue
                .push_back(queued(&m, QoS::AtLeastOnce, 0));
        }
        let (image, left_out) = encode(&s, &[], &HashMap::new());
        assert!(image.len() <= MAX_IMAGE);
        assert!(left_out > 0);
        let moved = decode(&image).unwrap();
        let e = moved.session.extra().unwrap();
        assert_eq!(e.queue.len() + left_out, n);
        // The newest stay.
        assert_eq!(e.queue.back().unwrap().msg.topic(), format!("b/{}", n - 1));
    }
}
