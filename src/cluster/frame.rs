//! A message as it crosses nodes: the body of a NATS message (and of a retained
//! message's key-value entry). The topic travels in the subject (or the key), so the body
//! holds the rest, behind a small fixed header:
//!
//! | bytes | what |
//! |---|---|
//! | 1 | format version (2; 1 is still read, see below) |
//! | 1 | QoS (bits 0–1), RETAIN (bit 2) |
//! | 2 | the publishing shard on its node (big-endian), which keeps one publisher's messages in order on the receiving node |
//! | 4 | seconds left of the MQTT 5 Message Expiry Interval, 0 for none (big-endian) |
//! | 8 | the incarnation of the origin's stream to this destination (big-endian; 0 when unsequenced) |
//! | 8 | the message's sequence number in that stream (big-endian; 0: unsequenced, as QoS 0 messages, the groups' subject and retained values are) |
//! | 1 | length of the origin node id (1 to [`MAX_NODE_ID`]) |
//! | n | the origin node id |
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
}

impl<'a> Frame<'a> {
    pub fn encoded_len(&self) -> usize {
        FIXED + self.node.len() + self.props.len() + self.payload.len()
    }

    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(self.encoded_len());
        b.put_u8(VERSION);
        b.put_u8(self.qos as u8 | u8::from(self.retain) << 2);
        b.put_u16(self.shard);
        b.put_u32(self.expiry_s);
        b.put_u64(self.incarnation);
        b.put_u64(self.seq);
        b.put_u8(self.node.len() as u8);
        b.put_slice(self.node.as_bytes());
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
        let n = rest[0] as usize;
        if n == 0 || n > MAX_NODE_ID {
            return Err(FrameError::BadNode);
        }
        let rest = &rest[1..];
        if rest.len() < n + 4 {
            return Err(FrameError::Short);
        }
        let node = std::str::from_utf8(&rest[..n]).map_err(|_| FrameError::BadNode)?;
        let rest = &rest[n..];
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
                      props in proptest::collection::vec(any::<u8>(), 0..40),
                      payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let f = Frame {
                qos: QoS::from_u8(q).unwrap(),
                retain, shard, expiry_s, incarnation, seq, node: &node, props: &props,
                payload: &payload,
            };
            let bytes = f.encode();
            prop_assert_eq!(bytes.len(), f.encoded_len());
            prop_assert_eq!(Frame::decode(&bytes).unwrap(), f);
            // Every shorter body is refused, never read past its end.
            let fixed_end = FIXED + node.len() + props.len();
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
        b[1] = 1;
        b[24] = 0;
        assert_eq!(Frame::decode(&b), Err(FrameError::BadNode));
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
            props: &[1, 2],
            payload: b"payload",
        };
        assert_eq!(Frame::decode(&b), Ok(want));
        for cut in 0..FIXED_1 + 2 + 2 {
            assert!(Frame::decode(&b[..cut]).is_err(), "{cut}");
        }
    }
}
