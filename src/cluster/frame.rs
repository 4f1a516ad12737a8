//! A message as it crosses nodes: the body of a NATS message (and of a retained
//! message's key-value entry). The topic travels in the subject (or the key), so the body
//! holds the rest, behind a small fixed header:
//!
//! | bytes | what |
//! |---|---|
//! | 1 | format version (2; 1 is still read, see below) |
//! | 1 | QoS (bits 0–1), RETAIN (bit 2), a list of destinations follows the node id (bit 3: written by earlier builds, read and skipped), a delivery to one session follows (bit 4), the publish's number follows (bit 5), a shared group follows (bit 6); bit 7 zero |
//! | 2 | the publishing shard on its node (big-endian), which keeps one publisher's messages in order on the receiving node |
//! | 4 | seconds left of the MQTT 5 Message Expiry Interval, 0 for none (big-endian) |
//! | 8 | the incarnation of the origin's stream to this destination (big-endian; 0 when unsequenced) |
//! | 8 | the message's sequence number in that stream (big-endian; 0: unsequenced, as QoS 0 messages, the groups' subject and retained values are) |
//! | 1 | length of the origin node id (1 to [`MAX_NODE_ID`]) |
//! | n | the origin node id |
//! | 1 + 4d | (bit 3) the number of nodes the message was sent to (2 to 64) and a 4-byte hash of each: no longer written, skipped |
//! | 4 + 2 + 8 | (bit 5) which publish this is (`broker::session::PubNumber`): its node's [`node_hash`](super::node_hash), the publishing shard there, its number among that shard's publishes (big-endian) |
//! | 2 + g | (bit 6) a message for one member of a shared group on the receiver: the group's whole `$share/G/F` (its length big-endian, then the text) |
//! | 2 + c + 2 + 1 + 4i | (bit 4) a delivery to one session that moved to the receiver, forwarded by its stub: the client id's length (big-endian) and the client id, the delivery's QoS (bits 0–1) and RETAIN (bit 2), the number of subscription identifiers (0 to 4) and each (big-endian) |
//! | 4 | length of the forwarded MQTT 5 property block (big-endian) |
//! | p | the property block |
//! | rest | the payload |
//!
//! No NATS headers: a plain `PUB` costs fewer bytes than an `HPUB`, and the node id is
//! what keeps a message from looping back.
//!
//! An acknowledgement of a sequenced stream ([`Ack`], on `ringmq.a.ORIGIN`, see
//! [`super::stream`]) has a body of its own:
//!
//! | bytes | what |
//! |---|---|
//! | 8 | the incarnation of the stream acknowledged (big-endian) |
//! | 8 | the highest sequence number routed without a gap (big-endian) |
//! | 1 | length of the acknowledging node's id (1 to [`MAX_NODE_ID`]) |
//! | n | the acknowledging node's id (exactly the rest of the body) |
//!
//! Version 1 is version 2 without the incarnation and the sequence number; it is still
//! decoded (as unsequenced) because the retained bucket keeps frames as values, and a
//! value an earlier ringmq wrote must still be read. Only version 2 is written.

use bytes::{BufMut, Bytes, BytesMut};
use ringmq_proto::mqtt::QoS;

/// The version written.
pub const VERSION: u8 = 2;
/// The version before the sequence numbers, still read.
pub const VERSION_1: u8 = 1;

/// The longest node id (`--node-id`).
pub const MAX_NODE_ID: usize = 64;

/// The fixed part of a version 1 frame, without the node id.
const FIXED_1: usize = 1 + 1 + 2 + 4 + 1 + 4;
/// The fixed part of a frame, without the node id.
const FIXED: usize = FIXED_1 + 8 + 8;

/// The second byte's bits past QoS and RETAIN.
const SENT_TO: u8 = 8;
const SESSION: u8 = 16;
const NUMBER: u8 = 32;
const SHARE: u8 = 64;
const KNOWN: u8 = 3 | 4 | SENT_TO | SESSION | NUMBER | SHARE;

/// The most nodes a list of destinations named.
const MAX_SENT_TO: usize = 64;

/// Which publish a message is: its node's hash, the shard there, its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number {
    pub node: u32,
    pub shard: u16,
    pub n: u64,
}

/// A delivery to one session, in a frame a stub forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPart<'a> {
    pub client_id: &'a str,
    pub qos: QoS,
    pub retain: bool,
    /// Subscription identifiers, 4 bytes each (big-endian), at most 4 of them.
    pub sub_ids: &'a [u8],
}

/// What a frame says besides the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub qos: QoS,
    pub retain: bool,
    pub shard: u16,
    /// Seconds of expiry left (0: never expires).
    pub expiry_s: u32,
    /// The origin's stream to this destination (0 when unsequenced).
    pub incarnation: u64,
    /// The message's number in that stream, from 1; 0: unsequenced.
    pub seq: u64,
    pub node: &'a str,
    /// Which publish it is (in a frame a stub forwards, the original one's).
    pub number: Option<Number>,
    /// Not for the receiver's subscribers but for one member of this shared group
    /// (`$share/G/F`) there.
    pub share: Option<&'a str>,
    /// Not for the receiver's subscribers: a delivery to one session.
    pub session: Option<SessionPart<'a>>,
    pub props: &'a [u8],
    pub payload: &'a [u8],
}

/// Why a body is not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    Short,
    Version(u8),
    BadQos,
    BadNode,
    /// A flag this version does not know, or a section with a count past its bound.
    BadSection,
}

impl<'a> Frame<'a> {
    pub fn encoded_len(&self) -> usize {
        let number = if self.number.is_some() { 14 } else { 0 };
        let share = self.share.map_or(0, |s| 2 + s.len());
        let session = self
            .session
            .as_ref()
            .map_or(0, |d| 2 + d.client_id.len() + 2 + d.sub_ids.len());
        FIXED + self.node.len() + number + share + session + self.props.len() + self.payload.len()
    }

    /// The body. A session part past its bounds is a caller's bug (debug builds stop).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        b.put_u8(VERSION);
        let mut flags = self.qos as u8 | u8::from(self.retain) << 2;
        if self.number.is_some() {
            flags |= NUMBER;
        }
        if self.share.is_some() {
            flags |= SHARE;
        }
        if self.session.is_some() {
            flags |= SESSION;
        }
        b.put_u8(flags);
        b.put_u16(self.shard);
        b.put_u32(self.expiry_s);
        b.put_u64(self.incarnation);
        b.put_u64(self.seq);
        b.put_u8(self.node.len() as u8);
        b.put_slice(self.node.as_bytes());
        if let Some(n) = &self.number {
            b.put_u32(n.node);
            b.put_u16(n.shard);
            b.put_u64(n.n);
        }
        if let Some(share) = self.share {
            debug_assert!(share.len() <= u16::MAX as usize);
            b.put_u16(share.len() as u16);
            b.put_slice(share.as_bytes());
        }
        if let Some(d) = &self.session {
            debug_assert!(d.client_id.len() <= u16::MAX as usize && d.sub_ids.len() <= 16);
            b.put_u16(d.client_id.len() as u16);
            b.put_slice(d.client_id.as_bytes());
            b.put_u8(d.qos as u8 | u8::from(d.retain) << 2);
            b.put_u8((d.sub_ids.len() / 4) as u8);
            b.put_slice(d.sub_ids);
        }
        b.put_u32(self.props.len() as u32);
        b.put_slice(self.props);
        b.put_slice(self.payload);
        b.freeze()
    }

    pub fn decode(body: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        let fixed = match body.first() {
            None => return Err(FrameError::Short),
            Some(&VERSION) => FIXED,
            Some(&VERSION_1) => FIXED_1,
            Some(&v) => return Err(FrameError::Version(v)),
        };
        if body.len() < fixed {
            return Err(FrameError::Short);
        }
        let qos = QoS::from_u8(body[1] & 3).ok_or(FrameError::BadQos)?;
        let retain = body[1] & 4 != 0;
        let shard = u16::from_be_bytes([body[2], body[3]]);
        let expiry_s = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        let (incarnation, seq, rest) = if body[0] == VERSION {
            let u64_at = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().expect("8"));
            (u64_at(8), u64_at(16), &body[24..])
        } else {
            (0, 0, &body[8..])
        };
        let flags = body[1];
        if flags & !KNOWN != 0
            || (body[0] == VERSION_1 && flags & (SENT_TO | SESSION | NUMBER | SHARE) != 0)
        {
            return Err(FrameError::BadSection);
        }
        let n = rest[0] as usize;
        if n == 0 || n > MAX_NODE_ID {
            return Err(FrameError::BadNode);
        }
        let rest = &rest[1..];
        if rest.len() < n {
            return Err(FrameError::Short);
        }
        let node = std::str::from_utf8(&rest[..n]).map_err(|_| FrameError::BadNode)?;
        let mut rest = &rest[n..];
        if flags & SENT_TO != 0 {
            let (&d, after) = rest.split_first().ok_or(FrameError::Short)?;
            let d = d as usize;
            if !(2..=MAX_SENT_TO).contains(&d) {
                return Err(FrameError::BadSection);
            }
            rest = after.get(4 * d..).ok_or(FrameError::Short)?;
        }
        let mut number = None;
        if flags & NUMBER != 0 {
            let b = rest.get(..14).ok_or(FrameError::Short)?;
            number = Some(Number {
                node: u32::from_be_bytes(b[..4].try_into().expect("4")),
                shard: u16::from_be_bytes([b[4], b[5]]),
                n: u64::from_be_bytes(b[6..14].try_into().expect("8")),
            });
            rest = &rest[14..];
        }
        let mut share = None;
        if flags & SHARE != 0 {
            let c = rest.get(..2).ok_or(FrameError::Short)?;
            let c = u16::from_be_bytes([c[0], c[1]]) as usize;
            let text = rest.get(2..2 + c).ok_or(FrameError::Short)?;
            share = Some(std::str::from_utf8(text).map_err(|_| FrameError::BadSection)?);
            rest = &rest[2 + c..];
        }
        let mut session = None;
        if flags & SESSION != 0 {
            let c = rest.get(..2).ok_or(FrameError::Short)?;
            let c = u16::from_be_bytes([c[0], c[1]]) as usize;
            let after = &rest[2..];
            let id = after.get(..c).ok_or(FrameError::Short)?;
            let client_id = std::str::from_utf8(id).map_err(|_| FrameError::BadSection)?;
            let after = &after[c..];
            let (&delivery, after) = after.split_first().ok_or(FrameError::Short)?;
            let (&i, after) = after.split_first().ok_or(FrameError::Short)?;
            let qos = QoS::from_u8(delivery & 3).ok_or(FrameError::BadQos)?;
            if delivery & !7 != 0 || i > 4 {
                return Err(FrameError::BadSection);
            }
            let sub_ids = after.get(..4 * i as usize).ok_or(FrameError::Short)?;
            rest = &after[4 * i as usize..];
            session = Some(SessionPart {
                client_id,
                qos,
                retain: delivery & 4 != 0,
                sub_ids,
            });
        }
        if rest.len() < 4 {
            return Err(FrameError::Short);
        }
        let p = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let rest = &rest[4..];
        if rest.len() < p {
            return Err(FrameError::Short);
        }
        Ok(Frame {
            qos,
            retain,
            shard,
            expiry_s,
            incarnation,
            seq,
            node,
            number,
            share,
            session,
            props: &rest[..p],
            payload: &rest[p..],
        })
    }
}

/// A destination's cumulative acknowledgement of an origin's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack<'a> {
    /// The acknowledging (destination) node.
    pub node: &'a str,
    pub incarnation: u64,
    /// Everything through this sequence number was routed.
    pub seq: u64,
}

impl<'a> Ack<'a> {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(17 + self.node.len());
        b.put_u64(self.incarnation);
        b.put_u64(self.seq);
        b.put_u8(self.node.len() as u8);
        b.put_slice(self.node.as_bytes());
        b.freeze()
    }

    pub fn decode(body: &'a [u8]) -> Result<Ack<'a>, FrameError> {
        if body.len() < 17 {
            return Err(FrameError::Short);
        }
        let incarnation = u64::from_be_bytes(body[0..8].try_into().expect("8"));
        let seq = u64::from_be_bytes(body[8..16].try_into().expect("8"));
        let n = body[16] as usize;
        let rest = &body[17..];
        if n == 0 || n > MAX_NODE_ID || rest.len() != n {
            return Err(FrameError::BadNode);
        }
        let node = std::str::from_utf8(rest).map_err(|_| FrameError::BadNode)?;
        Ok(Ack {
            node,
            incarnation,
            seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(q in 0u8..3, retain: bool, shard: u16, expiry_s: u32,
                      incarnation: u64, seq: u64,
                      node in "[a-z0-9-]{1,64}",
                      number in proptest::option::of((any::<u32>(), any::<u16>(), any::<u64>())),
                      share in proptest::option::of("[$a-z/+#é]{0,40}"),
                      session in proptest::option::of(("[a-z0-9/ é]{0,30}", 0u8..3, any::<bool>(),
                          proptest::collection::vec(1u32..268_435_456, 0..=4))),
                      props in proptest::collection::vec(any::<u8>(), 0..40),
                      payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let ids: Vec<u8> = session.as_ref().map(|s| s.3.iter().flat_map(|i| i.to_be_bytes()).collect()).unwrap_or_default();
            let f = Frame {
                qos: QoS::from_u8(q).unwrap(),
                retain, shard, expiry_s, incarnation, seq, node: &node,
                number: number.map(|(node, shard, n)| Number { node, shard, n }),
                share: share.as_deref(),
                session: session.as_ref().map(|s| SessionPart {
                    client_id: &s.0, qos: QoS::from_u8(s.1).unwrap(), retain: s.2, sub_ids: &ids,
                }),
                props: &props,
                payload: &payload,
            };
            let bytes = f.encode();
            prop_assert_eq!(bytes.len(), f.encoded_len());
            prop_assert_eq!(Frame::decode(&bytes).unwrap(), f.clone());
            // Every shorter body is refused, never read past its end.
            let fixed_end = f.encoded_len() - payload.len();
            for cut in 0..fixed_end {
                prop_assert!(Frame::decode(&bytes[..cut]).is_err());
            }
        }
    }

    proptest! {
        #[test]
        fn ack_round_trip(incarnation: u64, seq: u64, node in "[a-z0-9-]{1,64}") {
            let a = Ack { node: &node, incarnation, seq };
            let bytes = a.encode();
            prop_assert_eq!(Ack::decode(&bytes).unwrap(), a);
            // Every shorter or longer body is refused.
            for cut in 0..bytes.len() {
                prop_assert!(Ack::decode(&bytes[..cut]).is_err());
            }
            let mut longer = bytes.to_vec();
            longer.push(b'x');
            prop_assert!(Ack::decode(&longer).is_err());
        }
    }

    #[test]
    fn bad_bodies() {
        let f = Frame {
            qos: QoS::AtLeastOnce,
            retain: false,
            shard: 0,
            expiry_s: 0,
            incarnation: 7,
            seq: 9,
            node: "a",
            number: None,
            share: None,
            session: None,
            props: &[],
            payload: b"x",
        };
        let mut b = f.encode().to_vec();
        b[0] = 3;
        assert_eq!(Frame::decode(&b), Err(FrameError::Version(3)));
        b[0] = 0;
        assert_eq!(Frame::decode(&b), Err(FrameError::Version(0)));
        assert_eq!(Frame::decode(&[]), Err(FrameError::Short));
        b[0] = VERSION;
        b[1] = 3;
        assert_eq!(Frame::decode(&b), Err(FrameError::BadQos));
        b[1] = 1 | 128;
        assert_eq!(Frame::decode(&b), Err(FrameError::BadSection));
        b[1] = 1;
        b[24] = 0;
        assert_eq!(Frame::decode(&b), Err(FrameError::BadNode));
        // Five subscription identifiers.
        let ids = [0u8; 20];
        let f = Frame {
            session: Some(SessionPart {
                client_id: "c",
                qos: QoS::AtLeastOnce,
                retain: false,
                sub_ids: &ids[..16],
            }),
            ..f
        };
        let mut b = f.encode().to_vec();
        // fixed 24, node "a" 2, client id 2 + 1, delivery 1, count at 30.
        assert_eq!(b[30], 4);
        b[30] = 5;
        assert_eq!(Frame::decode(&b), Err(FrameError::BadSection));
    }

    /// A list of destinations, as the build before numbered publishes wrote (also into
    /// the retained bucket), is skipped; one of a single node, or cut, is refused.
    #[test]
    fn a_list_of_destinations_is_skipped() {
        let mut b = vec![VERSION, 1 | SENT_TO, 0, 3, 0, 0, 0, 0];
        b.extend_from_slice(&[0; 16]);
        b.push(2);
        b.extend_from_slice(b"n1");
        b.push(2);
        b.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(b"payload");
        let f = Frame::decode(&b).unwrap();
        assert_eq!((f.node, f.number, f.payload), ("n1", None, &b"payload"[..]));
        for cut in 0..b.len() - 7 {
            assert!(Frame::decode(&b[..cut]).is_err(), "{cut}");
        }
        b[27] = 1;
        assert_eq!(Frame::decode(&b), Err(FrameError::BadSection));
    }

    /// A version 1 body, as an earlier ringmq wrote into the retained bucket, still
    /// decodes: unsequenced, everything else as written; every shorter one is refused.
    #[test]
    fn version_1_is_still_read() {
        let mut b = vec![VERSION_1, 1 | 4, 0, 3, 0, 0, 0, 60, 2];
        b.extend_from_slice(b"n1");
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&[1, 2]);
        b.extend_from_slice(b"payload");
        let want = Frame {
            qos: QoS::AtLeastOnce,
            retain: true,
            shard: 3,
            expiry_s: 60,
            incarnation: 0,
            seq: 0,
            node: "n1",
            number: None,
            share: None,
            session: None,
            props: &[1, 2],
            payload: b"payload",
        };
        assert_eq!(Frame::decode(&b), Ok(want));
        for cut in 0..FIXED_1 + 2 + 2 {
            assert!(Frame::decode(&b[..cut]).is_err(), "{cut}");
        }
    }
}
