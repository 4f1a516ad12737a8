//! Splitting a byte stream into MQTT packets: the one place where received bytes are cut
//! into [`Frame`]s, each holding exactly one whole packet, before they are decoded.
//!
//! A [`Framer`] reads one input (a receive buffer) after whatever a connection kept from
//! the inputs before it (its *carry* buffer). Whole packets are borrowed from the input in
//! place; only a packet split across two inputs is copied, into the carry buffer, which
//! takes just the bytes the packet still lacks (nats-server keeps its `scratch` buffer the
//! same way). How long the next packet is comes from its fixed header alone
//! ([`peek_packet_len`]), so a packet larger than the maximum is refused before any of its
//! body is kept.
//!
//! The framer is a lending iterator: the frame [`Framer::next_frame`] returns borrows the
//! framer, and must be dropped before the next call.

use super::error::DecodeError;
use super::header::{is_acknowledgement, parse_first_byte, peek_packet_len};
use super::packet::{Packet, decode};
use super::wire::Version;
use crate::Decoded;

/// One whole packet's bytes, as the framer cut them from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a>(&'a [u8]);

impl<'a> Frame<'a> {
    /// The packet's bytes, fixed header included.
    pub fn bytes(self) -> &'a [u8] {
        self.0
    }

    /// Whether the packet is PUBACK, PUBREC, PUBREL, PUBCOMP or PINGREQ (see
    /// [`is_acknowledgement`]).
    pub fn is_acknowledgement(self) -> bool {
        is_acknowledgement(self.0[0])
    }

    /// Decodes the packet for a connection that speaks `version`.
    pub fn decode(self, version: Version) -> Result<Packet<'a>, DecodeError> {
        // The frame's length was checked against the maximum when it was cut.
        match decode(self.0, version, u32::MAX)? {
            Decoded::Complete(packet, _) => Ok(packet),
            // Not reached: the fixed header said the packet ends where the frame does.
            Decoded::Partial { .. } => Err(DecodeError::Truncated),
        }
    }
}

/// Cuts one input, after a connection's carry buffer, into whole packets. See the module
/// documentation.
#[derive(Debug)]
pub struct Framer<'i> {
    /// The front of a packet split across inputs (or, after `next` handed it out, a whole
    /// packet, dropped on the next call).
    carry: Vec<u8>,
    /// `carry` holds a whole packet that was handed out.
    carry_out: bool,
    /// What is left of the input.
    input: &'i [u8],
    max_packet_size: u32,
}

impl<'i> Framer<'i> {
    /// A framer over `input`, which continues the stream that `carry` (possibly empty)
    /// holds the unfinished front packet of. Packets larger than `max_packet_size` bytes
    /// (fixed header included, as MQTT 5's Maximum Packet Size counts) are an error.
    pub fn new(carry: Vec<u8>, input: &'i [u8], max_packet_size: u32) -> Framer<'i> {
        Framer {
            carry,
            carry_out: false,
            input,
            max_packet_size,
        }
    }

    /// The next whole packet of a connection that speaks `version`: `Complete(frame, its
    /// length)`, or `Partial { need }` when the stream ends inside a packet (whose front
    /// then stays for [`Framer::into_carry`]); `need` is 1 while the fixed header is
    /// incomplete and the bytes missing after it. An error is a first byte that is wrong on
    /// its own in `version` (reserved type, bad flags, QoS 3: refused before the rest of the
    /// packet arrives), or a fixed header that is malformed or declares a packet over the
    /// maximum.
    pub fn next_frame(&mut self, version: Version) -> Result<Decoded<Frame<'_>>, DecodeError> {
        self.drop_handed_out();
        if !self.carry.is_empty() {
            parse_first_byte(self.carry[0], version)?;
            return self.complete_carry();
        }
        if let Some(&first) = self.input.first() {
            parse_first_byte(first, version)?;
        }
        let total = match peek_packet_len(self.input, self.max_packet_size)? {
            Decoded::Partial { need } => return Ok(Decoded::Partial { need }),
            Decoded::Complete(total, _) => total,
        };
        if total > self.input.len() {
            return Ok(Decoded::Partial {
                need: total - self.input.len(),
            });
        }
        let (packet, rest) = self.input.split_at(total);
        self.input = rest;
        Ok(Decoded::Complete(Frame(packet), total))
    }

    /// Moves into `carry` the bytes its packet lacks, as far as the input has them.
    fn complete_carry(&mut self) -> Result<Decoded<Frame<'_>>, DecodeError> {
        loop {
            let (total, header_known) = match peek_packet_len(&self.carry, self.max_packet_size)? {
                // The fixed header is incomplete: one more byte of it.
                Decoded::Partial { .. } => (self.carry.len() + 1, false),
                Decoded::Complete(total, _) => (total, true),
            };
            let want = total - self.carry.len();
            if header_known && want == 0 {
                self.carry_out = true;
                return Ok(Decoded::Complete(Frame(&self.carry), total));
            }
            let take = want.min(self.input.len());
            if take == 0 {
                return Ok(Decoded::Partial { need: want });
            }
            let (taken, rest) = self.input.split_at(take);
            self.carry.extend_from_slice(taken);
            self.input = rest;
        }
    }

    fn drop_handed_out(&mut self) {
        if self.carry_out {
            self.carry.clear();
            self.carry_out = false;
        }
    }

    /// The bytes where the stream stands now: the carried front of a packet if there is
    /// one, else what is left of the input (where an error was found, after `next` failed).
    pub fn front(&self) -> &[u8] {
        if self.carry.is_empty() || self.carry_out {
            self.input
        } else {
            &self.carry
        }
    }

    /// Ends framing: the carry buffer with every byte not handed out yet appended in order
    /// (the front of a packet still arriving, or the rest of the stream when framing stops
    /// early). Its capacity is kept, so a packet split again needs no allocation.
    pub fn into_carry(mut self) -> Vec<u8> {
        self.drop_handed_out();
        self.carry.extend_from_slice(self.input);
        self.carry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PINGREQ, a PUBLISH of 200 bytes (two-byte remaining length), PUBACK.
    fn stream() -> Vec<u8> {
        let mut s = vec![0xC0, 0x00];
        let body = 197usize; // 2 + 3 ("a/b") + payload
        s.extend_from_slice(&[0x30, 0x80 | (body & 0x7F) as u8, (body >> 7) as u8]);
        s.extend_from_slice(&[0x00, 0x03, b'a', b'/', b'b']);
        s.extend(std::iter::repeat_n(b'x', body - 5));
        s.extend_from_slice(&[0x40, 0x02, 0x00, 0x07]);
        s
    }

    /// Frames `inputs` one after another through a carry buffer; returns the packets.
    fn frame_all(inputs: &[&[u8]], max: u32) -> Result<Vec<Vec<u8>>, DecodeError> {
        let mut carry = Vec::new();
        let mut out = Vec::new();
        for input in inputs {
            let mut f = Framer::new(carry, input, max);
            loop {
                match f.next_frame(Version::V5)? {
                    Decoded::Complete(frame, len) => {
                        assert_eq!(frame.bytes().len(), len);
                        out.push(frame.bytes().to_vec());
                    }
                    Decoded::Partial { need } => {
                        assert!(need >= 1);
                        break;
                    }
                }
            }
            carry = f.into_carry();
        }
        assert!(carry.is_empty(), "a whole stream leaves nothing behind");
        Ok(out)
    }

    #[test]
    fn every_split_gives_the_same_packets() {
        let s = stream();
        let whole = frame_all(&[&s], u32::MAX).unwrap();
        assert_eq!(
            whole.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 200, 4],
            "three packets"
        );
        for a in 0..=s.len() {
            assert_eq!(frame_all(&[&s[..a], &s[a..]], u32::MAX).unwrap(), whole);
        }
        for a in (0..=s.len()).step_by(7) {
            for b in a..=s.len() {
                let inputs = [&s[..a], &s[a..b], &s[b..]];
                assert_eq!(frame_all(&inputs, u32::MAX).unwrap(), whole, "{a} {b}");
            }
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(frame_all(&bytes, u32::MAX).unwrap(), whole, "byte by byte");
    }

    #[test]
    fn the_carry_takes_only_what_its_packet_lacks() {
        let s = stream();
        // The PUBLISH's first 10 bytes arrive after the PINGREQ; the rest with the PUBACK.
        let mut f = Framer::new(Vec::new(), &s[..12], u32::MAX);
        assert!(
            matches!(f.next_frame(Version::V5), Ok(Decoded::Complete(fr, 2)) if fr.bytes() == [0xC0, 0])
        );
        assert_eq!(
            f.next_frame(Version::V5),
            Ok(Decoded::Partial { need: 190 })
        );
        let carry = f.into_carry();
        assert_eq!(carry.len(), 10);
        let mut f = Framer::new(carry, &s[12..], u32::MAX);
        let Ok(Decoded::Complete(frame, 200)) = f.next_frame(Version::V5) else {
            panic!("the PUBLISH")
        };
        assert_eq!(frame.bytes(), &s[2..202]);
        assert!(!frame.is_acknowledgement());
        let Ok(Decoded::Complete(frame, 4)) = f.next_frame(Version::V5) else {
            panic!("the PUBACK, in place")
        };
        assert!(frame.is_acknowledgement());
        assert!(matches!(frame.decode(Version::V311), Ok(Packet::PubAck(_))));
        assert_eq!(f.next_frame(Version::V5), Ok(Decoded::Partial { need: 1 }));
        assert!(f.into_carry().is_empty());
    }

    #[test]
    fn a_packet_over_the_maximum_is_refused_from_its_fixed_header() {
        let s = stream();
        assert_eq!(frame_all(&[&s], 199), Err(DecodeError::PacketTooLarge));
        // Only the PUBLISH's fixed header has arrived, after a carried first byte.
        let mut f = Framer::new(vec![0x30], &s[3..5], 199);
        assert_eq!(f.next_frame(Version::V5), Err(DecodeError::PacketTooLarge));
        assert_eq!(f.front(), &[0x30, 0xC5, 0x01]);
        let mut f = Framer::new(Vec::new(), &[0x30, 0xFF, 0xFF, 0xFF, 0xFF], u32::MAX);
        assert_eq!(
            f.next_frame(Version::V5),
            Err(DecodeError::MalformedRemainingLength)
        );
        assert_eq!(f.front()[0], 0x30);
    }

    #[test]
    fn a_first_byte_wrong_on_its_own_is_refused_before_the_rest_arrives() {
        // "GET / ...": a PUBACK with reserved flags, declaring 0x45 more bytes.
        let mut f = Framer::new(Vec::new(), b"GET", u32::MAX);
        assert_eq!(
            f.next_frame(Version::V5),
            Err(DecodeError::InvalidHeaderFlags)
        );
        // AUTH exists in MQTT 5 only.
        let mut f = Framer::new(vec![0xF0], &[], u32::MAX);
        assert_eq!(
            f.next_frame(Version::V311),
            Err(DecodeError::InvalidPacketType)
        );
        let mut f = Framer::new(vec![0xF0], &[], u32::MAX);
        assert_eq!(f.next_frame(Version::V5), Ok(Decoded::Partial { need: 1 }));
    }

    #[test]
    fn stopping_early_keeps_the_rest_in_order() {
        let s = stream();
        let mut f = Framer::new(vec![0xC0], &s[1..], u32::MAX);
        assert!(matches!(
            f.next_frame(Version::V5),
            Ok(Decoded::Complete(_, 2))
        ));
        assert_eq!(f.front(), &s[2..]);
        assert_eq!(f.into_carry(), &s[2..]);
    }
}
