//! A message as it crosses nodes: the body of a NATS message (and of a retained
//! message's key-value entry). The topic travels in the subject (or the key), so the body
//! holds the rest, behind a small fixed header:
//!
//! | bytes | what |
//! |---|---|
//! | 1 | format version (1) |
//! | 1 | QoS (bits 0–1), RETAIN (bit 2) |
//! | 2 | the publishing shard on its node (big-endian), which keeps one publisher's messages in order on the receiving node |
//! | 4 | seconds left of the MQTT 5 Message Expiry Interval, 0 for none (big-endian) |
//! | 1 | length of the origin node id (1 to [`MAX_NODE_ID`]) |
//! | n | the origin node id |
//! | 4 | length of the forwarded MQTT 5 property block (big-endian) |
//! | p | the property block |
//! | rest | the payload |
//!
//! No NATS headers: a plain `PUB` costs fewer bytes than an `HPUB`, and the node id is
//! what keeps a message from looping back.

use bytes::{BufMut, Bytes, BytesMut};
use ringmq_proto::mqtt::QoS;

pub const VERSION: u8 = 1;

/// The longest node id (`--node-id`).
pub const MAX_NODE_ID: usize = 64;

/// The fixed part of a frame, without the node id.
const FIXED: usize = 1 + 1 + 2 + 4 + 1 + 4;

/// What a frame says besides the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    pub qos: QoS,
    pub retain: bool,
    pub shard: u16,
    /// Seconds of expiry left (0: never expires).
    pub expiry_s: u32,
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
        b.put_u8(self.node.len() as u8);
        b.put_slice(self.node.as_bytes());
        b.put_u32(self.props.len() as u32);
        b.put_slice(self.props);
        b.put_slice(self.payload);
        b.freeze()
    }

    pub fn decode(body: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        if body.len() < FIXED {
            return Err(FrameError::Short);
        }
        if body[0] != VERSION {
            return Err(FrameError::Version(body[0]));
        }
        let qos = QoS::from_u8(body[1] & 3).ok_or(FrameError::BadQos)?;
        let retain = body[1] & 4 != 0;
        let shard = u16::from_be_bytes([body[2], body[3]]);
        let expiry_s = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        let n = body[8] as usize;
        if n == 0 || n > MAX_NODE_ID {
            return Err(FrameError::BadNode);
        }
        let rest = &body[9..];
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
            node,
            props: &rest[..p],
            payload: &rest[p..],
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
                      node in "[a-z0-9-]{1,64}",
                      props in proptest::collection::vec(any::<u8>(), 0..40),
                      payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            let f = Frame {
                qos: QoS::from_u8(q).unwrap(),
                retain, shard, expiry_s, node: &node, props: &props, payload: &payload,
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

    #[test]
    fn bad_bodies() {
        let f = Frame {
            qos: QoS::AtLeastOnce,
            retain: false,
            shard: 0,
            expiry_s: 0,
            node: "a",
            props: &[],
            payload: b"x",
        };
        let mut b = f.encode().to_vec();
        b[0] = 2;
        assert_eq!(Frame::decode(&b), Err(FrameError::Version(2)));
        b[0] = 1;
        b[1] = 3;
        assert_eq!(Frame::decode(&b), Err(FrameError::BadQos));
        b[1] = 1;
        b[8] = 0;
        assert_eq!(Frame::decode(&b), Err(FrameError::BadNode));
    }
}
