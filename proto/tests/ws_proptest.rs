//! Property tests: arbitrary messages, fragmented and interleaved with control frames,
//! encoded as the peer would and decoded in arbitrary pieces, come back unchanged; and
//! arbitrary bytes (raw, or a valid input with a byte changed) never make the decoders
//! panic or disagree with themselves (the fuzz logic is run on them).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use ringmq_proto::ws::testkit::{Item, decode_stream};
use ringmq_proto::ws::{
    CloseCode, MAX_HEAD_LEN, Opcode, Role, apply_mask, encode_head, fuzz_frames, fuzz_handshake,
    write_close, write_frame, write_request,
};

const MAX_MESSAGE: u64 = 1 << 16;

/// A control frame to slip between two fragments.
#[derive(Debug, Clone)]
enum Control {
    Ping(Vec<u8>),
    Pong(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Message {
    text: bool,
    payload: Vec<u8>,
    /// Where the payload is cut into fragments (any byte, also inside a code point).
    cuts: Vec<Index>,
    /// A control frame after fragment `i`, taken in order.
    controls: Vec<Option<Control>>,
    key: [u8; 4],
}

fn control() -> impl Strategy<Value = Control> {
    prop_oneof![
        vec(any::<u8>(), 0..=125).prop_map(Control::Ping),
        vec(any::<u8>(), 0..=125).prop_map(Control::Pong),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    let payload = prop_oneof![
        ".{0,80}".prop_map(|s: String| (true, s.into_bytes())),
        vec(any::<u8>(), 0..400).prop_map(|b| (false, b)),
    ];
    (
        payload,
        vec(any::<Index>(), 0..4),
        vec(proptest::option::of(control()), 0..4),
        any::<[u8; 4]>(),
    )
        .prop_map(|((text, payload), cuts, controls, key)| Message {
            text,
            payload,
            cuts,
            controls,
            key,
        })
}

fn push_frame(out: &mut Vec<u8>, fin: bool, opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) {
    let mut head = [0; MAX_HEAD_LEN];
    let n = encode_head(fin, opcode, payload.len() as u64, mask, &mut head);
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

/// Encodes the messages as the peer of `role` sends them and lists what must come out.
fn encode(messages: &[Message], role: Role, close: Option<(u16, String)>) -> (Vec<u8>, Vec<Item>) {
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for m in messages {
        let mask = (role == Role::Server).then_some(m.key);
        let mut cuts: Vec<usize> = m
            .cuts
            .iter()
            .map(|i| i.index(m.payload.len() + 1))
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(m.payload.len());
        let fragments: Vec<&[u8]> = bounds.windows(2).map(|w| &m.payload[w[0]..w[1]]).collect();
        let mut controls = m.controls.iter();
        for (i, fragment) in fragments.iter().enumerate() {
            let first = i == 0;
            let last = i + 1 == fragments.len();
            let opcode = match (first, m.text) {
                (false, _) => Opcode::CONTINUATION,
                (true, true) => Opcode::TEXT,
                (true, false) => Opcode::BINARY,
            };
            push_frame(&mut wire, last, opcode, fragment, mask);
            if !last && let Some(Some(control)) = controls.next() {
                let (opcode, payload, item) = match control {
                    Control::Ping(p) => (Opcode::PING, p, Item::Ping(p.clone())),
                    Control::Pong(p) => (Opcode::PONG, p, Item::Pong(p.clone())),
                };
                write_frame(opcode, payload, mask, &mut wire);
                expected.push(item);
            }
        }
        expected.push(Item::Message {
            text: m.text,
            payload: m.payload.clone(),
        });
    }
    if let Some((code, reason)) = close {
        let mask = (role == Role::Server).then_some([1, 2, 3, 4]);
        write_close(CloseCode(code), &reason, mask, &mut wire);
        expected.push(Item::Close {
            code: Some(CloseCode(code)),
            reason,
        });
    }
    (wire, expected)
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Server), Just(Role::Client)]
}

proptest! {
    #[test]
    fn messages_survive_any_fragmentation_and_chunking(
        messages in vec(message(), 0..6),
        role in role(),
        close in proptest::option::of((prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999], "[a-z ]{0,40}")),
        sizes in vec(1usize..200, 1..6),
    ) {
        let (wire, expected) = encode(&messages, role, close);
        let transcript = decode_stream(role, MAX_MESSAGE, &wire, &sizes);
        prop_assert_eq!(transcript.error, None);
        prop_assert_eq!(transcript.leftover, 0);
        prop_assert_eq!(transcript.items, expected);
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..600)) {
        fuzz_frames(&data);
        fuzz_handshake(&data);
    }

    #[test]
    fn valid_frames_with_one_byte_changed_never_panic(
        messages in vec(message(), 1..4),
        role in role(),
        at in any::<Index>(),
        byte in any::<u8>(),
        sizes in vec(any::<u8>(), 0..8),
    ) {
        let (mut wire, _) = encode(&messages, role, None);
        let i = at.index(wire.len());
        wire[i] = byte;
        // A fuzz input starts with a byte for the role and the count of size bytes.
        let role_bit = u8::from(role == Role::Client);
        let mut data = vec![(sizes.len() as u8) << 1 | role_bit];
        data.extend_from_slice(&sizes);
        data.extend_from_slice(&wire);
        fuzz_frames(&data);
    }

    #[test]
    fn requests_with_odd_headers_never_panic(
        lines in vec("[ -~\t]{0,30}", 0..8),
        cut in any::<Index>(),
    ) {
        let mut request = Vec::new();
        write_request("h", "/mqtt", &[3; 16], Some("mqtt"), &mut request);
        let at = cut.index(request.len() - 2);
        let extra: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        request.splice(at..at, extra.into_bytes());
        fuzz_handshake(&request);
    }
}
