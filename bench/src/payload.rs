//! The header every published payload starts with: who sent it, its place in that
//! sender's sequence, and when it was sent, so a subscriber can count losses, duplicates
//! and reordering and measure end-to-end latency without asking anyone.
//!
//! Layout (little-endian, [`HEADER_LEN`] bytes): magic `RMQS` | run id u32 | publisher
//! u32 | sequence u64 | send time u64 (CLOCK_MONOTONIC nanoseconds; publisher and
//! subscriber run on the same machine). The rest of the payload is filler.

/// Bytes of the header; the smallest payload the swarm sends.
pub const HEADER_LEN: usize = 28;
const MAGIC: [u8; 4] = *b"RMQS";

/// The header of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Chosen at random per run: messages of another run (a retained message, another
    /// swarm on the same broker) are told apart and not counted.
    pub run_id: u32,
    /// The publisher's number within the run.
    pub publisher: u32,
    /// 0, 1, 2, … per (publisher, topic).
    pub seq: u64,
    /// CLOCK_MONOTONIC nanoseconds when the message was encoded for sending.
    pub sent_ns: u64,
}

impl Header {
    /// Writes the header into the front of `out`, which must hold [`HEADER_LEN`] bytes.
    pub fn write(&self, out: &mut [u8]) {
        let out = &mut out[..HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&self.run_id.to_le_bytes());
        out[8..12].copy_from_slice(&self.publisher.to_le_bytes());
        out[12..20].copy_from_slice(&self.seq.to_le_bytes());
        out[20..28].copy_from_slice(&self.sent_ns.to_le_bytes());
    }

    /// Reads the header at the front of `payload`; `None` when it is too short or does
    /// not start with the magic (not a swarm message).
    pub fn read(payload: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = payload.get(..HEADER_LEN)?.try_into().ok()?;
        if h[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(h[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap());
        Some(Header {
            run_id: u32_at(4),
            publisher: u32_at(8),
            seq: u64_at(12),
            sent_ns: u64_at(20),
        })
    }
}

/// A payload of `len` bytes (at least [`HEADER_LEN`]) whose filler after the header is a
/// repeating printable pattern; the header is written per message.
pub fn template(len: usize) -> Vec<u8> {
    let len = len.max(HEADER_LEN);
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            run_id: 0xdead_beef,
            publisher: 7,
            seq: u64::MAX - 3,
            sent_ns: 123_456_789_012,
        };
        let mut buf = template(64);
        h.write(&mut buf);
        assert_eq!(Header::read(&buf), Some(h));
        assert_eq!(&buf[..4], b"RMQS");
        // The filler after the header is untouched.
        assert_eq!(buf[HEADER_LEN..], template(64)[HEADER_LEN..]);
    }

    #[test]
    fn header_is_little_endian_at_fixed_offsets() {
        let h = Header {
            run_id: 1,
            publisher: 2,
            seq: 3,
            sent_ns: 4,
        };
        let mut buf = [0u8; HEADER_LEN];
        h.write(&mut buf);
        assert_eq!(
            buf,
            [
                b'R', b'M', b'Q', b'S', 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0,
                0, 0, 0, 0
            ]
        );
    }

    #[test]
    fn foreign_or_short_payloads_are_not_headers() {
        assert_eq!(Header::read(b""), None);
        assert_eq!(Header::read(&[b'R'; HEADER_LEN]), None);
        let mut buf = [0u8; HEADER_LEN];
        Header {
            run_id: 1,
            publisher: 1,
            seq: 1,
            sent_ns: 1,
        }
        .write(&mut buf);
        assert_eq!(Header::read(&buf[..HEADER_LEN - 1]), None);
    }

    #[test]
    fn template_is_never_shorter_than_the_header() {
        assert_eq!(template(0).len(), HEADER_LEN);
        assert_eq!(template(1000).len(), 1000);
    }
}
