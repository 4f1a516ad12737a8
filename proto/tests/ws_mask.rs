//! Word-at-a-time masking against a byte-at-a-time reference, for every length 0..=64,
//! every key offset 0..4 and every alignment 0..8 of the slice start; and the
//! incremental UTF-8 validator against `std::str::from_utf8` on every split.

use ringmq_proto::ws::{Utf8Validator, apply_mask};

const KEY: [u8; 4] = [0x9d, 0x17, 0xe2, 0x5b];
const MAX_LEN: usize = 64;
const WORD: usize = 8;

fn reference(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[(offset + i) % 4];
    }
}

#[test]
fn mask_matches_the_reference_at_every_length_offset_and_alignment() {
    let data: Vec<u8> = (0..MAX_LEN + 2 * WORD)
        .map(|i| (i * 31 + 7) as u8)
        .collect();
    for len in 0..=MAX_LEN {
        for offset in 0..4 {
            for align in 0..WORD {
                let mut ours = data.clone();
                let mut theirs = data.clone();
                // Start at an address that is `align` bytes past an 8-byte boundary.
                let start = ours.as_ptr().align_offset(WORD) + align;
                let their_start = theirs.as_ptr().align_offset(WORD) + align;
                apply_mask(&mut ours[start..start + len], KEY, offset);
                reference(&mut theirs[their_start..their_start + len], KEY, offset);
                assert_eq!(
                    ours[start..start + len],
                    theirs[their_start..their_start + len],
                    "len {len} offset {offset} align {align}"
                );
                assert_eq!(ours[..start], data[..start], "wrote before the slice");
                assert_eq!(
                    ours[start + len..],
                    data[start + len..],
                    "wrote after the slice"
                );
            }
        }
    }
}

#[test]
fn offset_counts_modulo_four() {
    let mut a = [0u8; 9];
    let mut b = [0u8; 9];
    apply_mask(&mut a, KEY, 3);
    apply_mask(&mut b, KEY, 4 * 1000 + 3);
    assert_eq!(a, b);
}

#[test]
fn utf8_validator_agrees_with_std_on_every_split() {
    let samples: [&[u8]; 8] = [
        "plain ascii".as_bytes(),
        "ñ € 😀 mixed".as_bytes(),
        b"\xed\xa0\x80 surrogate",
        b"\xf4\x90\x80\x80 too high",
        b"\xc0\xaf overlong",
        b"ends inside \xe2\x82",
        b"\xff",
        b"\xe2\x82\xac\xf0\x9f\x98",
    ];
    for sample in samples {
        let expected = std::str::from_utf8(sample).is_ok();
        for i in 0..=sample.len() {
            for j in i..=sample.len() {
                let mut v = Utf8Validator::new();
                let ok = v.feed(&sample[..i]).is_ok()
                    && v.feed(&sample[i..j]).is_ok()
                    && v.feed(&sample[j..]).is_ok()
                    && v.finish().is_ok();
                assert_eq!(ok, expected, "{sample:02x?} split at {i}, {j}");
            }
        }
    }
}
