//! The worked examples of RFC 6455: the accept key of §1.3 and every framing example
//! of §5.7, decoded with the streaming decoder and encoded back to the same bytes.

use ringmq_proto::Decoded;
use ringmq_proto::ws::testkit::{Item, decode_stream};
use ringmq_proto::ws::{
    CloseCode, Event, FrameDecoder, MAX_HEAD_LEN, Opcode, Role, accept_key, decode_head,
    encode_head, write_frame,
};

const RFC_MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const HELLO: &[u8] = b"Hello";
const UNMASKED_HELLO: &[u8] = &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
const MASKED_HELLO: &[u8] = &[
    0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
];
const FRAGMENTED_HELLO: &[u8] = &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
const UNMASKED_PING: &[u8] = &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
const MASKED_PONG: &[u8] = &[
    0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
];

fn message(text: bool, payload: &[u8]) -> Item {
    Item::Message {
        text,
        payload: payload.to_vec(),
    }
}

fn decode_all(role: Role, input: &[u8]) -> Vec<Item> {
    let transcript = decode_stream(role, 1 << 20, input, &[]);
    assert_eq!((transcript.error, transcript.leftover), (None, 0));
    transcript.items
}

#[test]
fn accept_key_of_section_1_3() {
    assert_eq!(
        &accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn single_frame_unmasked_text() {
    assert_eq!(
        decode_all(Role::Client, UNMASKED_HELLO),
        [message(true, HELLO)]
    );
    let mut out = Vec::new();
    write_frame(Opcode::TEXT, HELLO, None, &mut out);
    assert_eq!(out, UNMASKED_HELLO);
}

#[test]
fn single_frame_masked_text() {
    let Ok(Decoded::Complete(head, 6)) = decode_head(MASKED_HELLO, Role::Server) else {
        panic!("head did not decode");
    };
    assert_eq!(
        (head.fin, head.opcode, head.mask, head.payload_len),
        (true, Opcode::TEXT, Some(RFC_MASK), 5)
    );
    assert_eq!(
        decode_all(Role::Server, MASKED_HELLO),
        [message(true, HELLO)]
    );
    let mut out = Vec::new();
    write_frame(Opcode::TEXT, HELLO, Some(RFC_MASK), &mut out);
    assert_eq!(out, MASKED_HELLO);
}

#[test]
fn fragmented_unmasked_text() {
    let mut buf = FRAGMENTED_HELLO.to_vec();
    let mut decoder = FrameDecoder::new(Role::Client, 1 << 20);
    let Ok(Decoded::Complete(first, 5)) = decoder.decode(&mut buf) else {
        panic!("first fragment");
    };
    assert_eq!(
        first,
        Event::Data {
            text: true,
            chunk: &mut b"Hel".to_vec(),
            message_end: false
        }
    );
    let Ok(Decoded::Complete(second, 4)) = decoder.decode(&mut buf[5..]) else {
        panic!("second fragment");
    };
    assert_eq!(
        second,
        Event::Data {
            text: true,
            chunk: &mut b"lo".to_vec(),
            message_end: true
        }
    );
    assert_eq!(
        decode_all(Role::Client, FRAGMENTED_HELLO),
        [message(true, HELLO)]
    );
}

#[test]
fn unmasked_ping_and_masked_pong() {
    assert_eq!(
        decode_all(Role::Client, UNMASKED_PING),
        [Item::Ping(HELLO.to_vec())]
    );
    assert_eq!(
        decode_all(Role::Server, MASKED_PONG),
        [Item::Pong(HELLO.to_vec())]
    );
    let mut out = Vec::new();
    write_frame(Opcode::PING, HELLO, None, &mut out);
    assert_eq!(out, UNMASKED_PING);
    out.clear();
    write_frame(Opcode::PONG, HELLO, Some(RFC_MASK), &mut out);
    assert_eq!(out, MASKED_PONG);
}

#[test]
fn masked_ping() {
    // The masked pong of §5.7 with the ping opcode: what a client sends.
    let mut masked_ping = MASKED_PONG.to_vec();
    masked_ping[0] = 0x89;
    assert_eq!(
        decode_all(Role::Server, &masked_ping),
        [Item::Ping(HELLO.to_vec())]
    );
}

#[test]
fn binary_256_bytes_has_a_16_bit_length() {
    let payload: Vec<u8> = (0..=255).collect();
    let mut head = [0; MAX_HEAD_LEN];
    let n = encode_head(true, Opcode::BINARY, 256, None, &mut head);
    assert_eq!(&head[..n], [0x82, 0x7e, 0x01, 0x00]);
    let mut frame = head[..n].to_vec();
    frame.extend_from_slice(&payload);
    assert_eq!(decode_all(Role::Client, &frame), [message(false, &payload)]);
}

#[test]
fn binary_64_kib_has_a_64_bit_length() {
    let payload: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    let mut head = [0; MAX_HEAD_LEN];
    let n = encode_head(true, Opcode::BINARY, 65_536, None, &mut head);
    assert_eq!(
        &head[..n],
        [0x82, 0x7f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
    );
    let mut frame = head[..n].to_vec();
    frame.extend_from_slice(&payload);
    assert_eq!(decode_all(Role::Client, &frame), [message(false, &payload)]);
    // Masked, from a client, in uneven pieces.
    let mut masked = Vec::new();
    write_frame(Opcode::BINARY, &payload, Some(RFC_MASK), &mut masked);
    let transcript = decode_stream(Role::Server, 1 << 20, &masked, &[1, 3, 1000, 7, 4096]);
    assert_eq!(transcript.items, [message(false, &payload)]);
}

#[test]
fn close_with_code_and_reason() {
    let mut out = Vec::new();
    ringmq_proto::ws::write_close(CloseCode::GOING_AWAY, "bye", Some(RFC_MASK), &mut out);
    assert_eq!(
        decode_all(Role::Server, &out),
        [Item::Close {
            code: Some(CloseCode::GOING_AWAY),
            reason: "bye".into()
        }]
    );
}

#[test]
fn empty_messages_still_give_an_event() {
    let mut out = Vec::new();
    write_frame(Opcode::TEXT, b"", None, &mut out);
    write_frame(Opcode::BINARY, b"", None, &mut out);
    let mut decoder = FrameDecoder::new(Role::Client, 16);
    let Ok(Decoded::Complete(event, 2)) = decoder.decode(&mut out) else {
        panic!("empty text frame");
    };
    assert_eq!(
        event,
        Event::Data {
            text: true,
            chunk: &mut [],
            message_end: true
        }
    );
    assert_eq!(
        decode_all(Role::Client, &out),
        [message(true, b""), message(false, b"")]
    );
}
