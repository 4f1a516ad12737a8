//! Decode → encode → compare: the checks behind the `mqtt_decode` fuzz target and the
//! codec's tests, kept in the library so both run the same logic (as rustls does with its
//! fuzz helpers). These functions panic on a failed check; that is their purpose, and why
//! they are hidden from the documentation.

use super::error::EncodeError;
use super::framer::Framer;
use super::header::peek_packet_len;
use super::packet::{Packet, decode};
use super::publish::PublishTemplate;
use super::wire::{QoS, Version};
use crate::Decoded;

/// No packet size limit.
const NO_LIMIT: u32 = u32::MAX;
/// Packets up to this size are also fed at every split point in [`fuzz_decode`]; that is
/// quadratic, so longer ones are not.
const FUZZ_SPLIT_LIMIT: usize = 256;

/// Decodes every packet at the front of `data` in both versions and checks each one:
/// decoding it alone gives the same result, its size is the smallest limit it passes,
/// encoding it and decoding that gives the same packet, re-encoding gives the same bytes.
pub fn fuzz_decode(data: &[u8]) {
    for version in [Version::V311, Version::V5] {
        let mut rest = data;
        while let Ok(Decoded::Complete(packet, used)) = decode(rest, version, NO_LIMIT) {
            let (bytes, tail) = rest
                .split_at_checked(used)
                .expect("decode consumed more bytes than it was given");
            // Nothing after the packet influenced it.
            assert_eq!(
                decode(bytes, version, NO_LIMIT),
                Ok(Decoded::Complete(packet.clone(), used))
            );
            let size = u32::try_from(used).expect("a packet is under 4 GiB");
            assert!(
                decode(bytes, version, size).is_ok(),
                "limit equal to the size"
            );
            assert_eq!(
                decode(bytes, version, size - 1),
                Err(super::DecodeError::PacketTooLarge)
            );
            if used <= FUZZ_SPLIT_LIMIT {
                check_split_feed(bytes, version);
            }
            check_round_trip(&packet, version);
            rest = tail;
        }
    }
}

/// Encodes `packet` for `version` every way there is (into a `Vec`, into a slice, into a
/// slice one byte short, as head plus payload for a PUBLISH), checks they agree with
/// [`Packet::encoded_len`], decodes the bytes back, checks the result equals `packet` and
/// encodes to the same bytes, and returns the bytes.
pub fn check_round_trip(packet: &Packet<'_>, version: Version) -> Vec<u8> {
    let len = packet.encoded_len(version);
    let mut bytes = Vec::new();
    let written = packet
        .encode_to_vec(version, &mut bytes)
        .unwrap_or_else(|e| panic!("cannot encode {packet:?}: {e}"));
    assert_eq!(
        (written, bytes.len()),
        (len, len),
        "encoded_len of {packet:?}"
    );

    let mut slice = vec![0xAA; len + 1];
    assert_eq!(packet.encode(version, &mut slice), Ok(len));
    assert_eq!(
        slice.get(..len),
        Some(&bytes[..]),
        "slice and Vec encodings differ"
    );
    assert_eq!(
        packet.encode(version, &mut slice[..len - 1]),
        Err(EncodeError::BufferTooSmall { need: len })
    );

    if let Packet::Publish(publish) = packet {
        let head_len = publish.head_len(version);
        let mut head = vec![0; head_len];
        assert_eq!(publish.encode_head(version, &mut head), Ok(head_len));
        head.extend_from_slice(publish.payload);
        assert_eq!(head, bytes, "head + payload differs from the whole packet");

        let mut template = PublishTemplate::default();
        template
            .encode(publish, version)
            .unwrap_or_else(|e| panic!("no template of {packet:?}: {e}"));
        assert_eq!(template.len(), len);
        let mut stamped = vec![0xAA];
        template.stamp_to_vec(publish.pkid, &mut stamped);
        assert_eq!(
            &stamped[1..],
            &bytes[..],
            "template stamped with its own id"
        );
        let other = publish.pkid.wrapping_add(1).max(1);
        let mut again = Packet::Publish(crate::mqtt::Publish {
            pkid: other,
            ..publish.clone()
        });
        if publish.qos == QoS::AtMostOnce {
            again = packet.clone();
        }
        stamped.clear();
        template.stamp_to_vec(other, &mut stamped);
        let mut want = Vec::new();
        again
            .encode_to_vec(version, &mut want)
            .expect("the same packet with another id");
        assert_eq!(stamped, want, "template stamped with id {other}");
    }

    let decoded = match decode(&bytes, version, NO_LIMIT) {
        Ok(Decoded::Complete(decoded, used)) if used == len => decoded,
        other => panic!("{packet:?} encoded as {bytes:02x?} decodes as {other:?}"),
    };
    assert_eq!(&decoded, packet, "round trip of {bytes:02x?}");
    let mut again = Vec::new();
    assert_eq!(decoded.encode_to_vec(version, &mut again), Ok(len));
    assert_eq!(again, bytes, "re-encoding is not stable");
    bytes
}

/// Feeds the single packet `bytes` the ways a connection receives it and returns it:
/// - every prefix is `Partial` with `need` 1 inside the fixed header and exactly the missing
///   byte count after it;
/// - reading `need` bytes at a time, starting from nothing, ends exactly at the packet's end;
/// - byte by byte into a carry buffer, the packet appears with the last byte and not before;
/// - followed by more bytes, the packet and its length are unchanged;
/// - cut in two at every point and fed to a [`Framer`] through its carry buffer, the
///   packet comes out whole, once, with the second piece.
pub fn check_split_feed(bytes: &[u8], version: Version) -> Packet<'_> {
    let packet = match decode(bytes, version, NO_LIMIT) {
        Ok(Decoded::Complete(packet, used)) if used == bytes.len() => packet,
        other => panic!("{bytes:02x?} is not one whole packet: {other:?}"),
    };
    let header_len = match peek_packet_len(bytes, NO_LIMIT) {
        Ok(Decoded::Complete(_, header_len)) => header_len,
        other => panic!("no fixed header in {bytes:02x?}: {other:?}"),
    };

    for split in 0..bytes.len() {
        let need = if split < header_len {
            1
        } else {
            bytes.len() - split
        };
        assert_eq!(
            decode(&bytes[..split], version, NO_LIMIT),
            Ok(Decoded::Partial { need }),
            "prefix of {split} bytes of {bytes:02x?}"
        );
    }

    let mut have = 0;
    loop {
        match decode(&bytes[..have], version, NO_LIMIT) {
            Ok(Decoded::Partial { need }) => {
                have += need;
                assert!(
                    have <= bytes.len(),
                    "need overshoots the end of {bytes:02x?}"
                );
            }
            Ok(Decoded::Complete(p, used)) => {
                assert_eq!((&p, used), (&packet, bytes.len()));
                break;
            }
            Err(e) => panic!("{e} after {have} bytes of {bytes:02x?}"),
        }
    }

    let mut carry = Vec::with_capacity(bytes.len());
    for (i, &b) in bytes.iter().enumerate() {
        carry.push(b);
        let result = decode(&carry, version, NO_LIMIT);
        if i + 1 < bytes.len() {
            assert!(
                matches!(result, Ok(Decoded::Partial { .. })),
                "{result:?} after {} bytes",
                i + 1
            );
        } else {
            assert_eq!(result, Ok(Decoded::Complete(packet.clone(), bytes.len())));
        }
    }

    let mut followed = bytes.to_vec();
    followed.extend_from_slice(bytes);
    assert_eq!(
        decode(&followed, version, NO_LIMIT),
        Ok(Decoded::Complete(packet.clone(), bytes.len()))
    );

    for split in 0..=bytes.len() {
        let mut first = Framer::new(Vec::new(), &bytes[..split], NO_LIMIT);
        if split < bytes.len() {
            assert!(
                matches!(first.next_frame(version), Ok(Decoded::Partial { .. })),
                "framed before its last byte, split at {split}"
            );
            let mut second = Framer::new(first.into_carry(), &bytes[split..], NO_LIMIT);
            match second.next_frame(version) {
                Ok(Decoded::Complete(frame, n)) => {
                    assert_eq!((frame.bytes(), n), (bytes, bytes.len()));
                    assert_eq!(frame.decode(version).as_ref(), Ok(&packet));
                }
                other => panic!("split at {split}: {other:?}"),
            }
            assert_eq!(second.next_frame(version), Ok(Decoded::Partial { need: 1 }));
            assert!(second.into_carry().is_empty());
        } else {
            assert!(
                matches!(first.next_frame(version), Ok(Decoded::Complete(f, _)) if f.bytes() == bytes)
            );
        }
    }
    packet
}
