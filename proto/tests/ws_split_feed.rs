//! Split-feed tests: every frame sequence and every handshake head, fed at every split
//! point and byte by byte through the same caller logic a connection uses
//! (`testkit::decode_stream`, `testkit::feed_head`), gives the same result as when it
//! arrives whole.

use ringmq_proto::Decoded;
use ringmq_proto::ws::testkit::{Item, Transcript, decode_stream, feed_head};
use ringmq_proto::ws::{
    CloseCode, MAX_HEAD_LEN, Opcode, Request, Role, ServerConfig, encode_head, parse_request,
    parse_response, write_accept, write_close, write_frame, write_request,
};

const MAX_MESSAGE: u64 = 1 << 20;
const KEY: [u8; 4] = [0xa1, 0x02, 0xf3, 0x44];
/// Piece sizes meaning "all at once" and "one byte at a time".
const WHOLE: &[usize] = &[];
const BYTE_BY_BYTE: &[usize] = &[1];

/// Appends one frame, masked with `KEY` when `masked`.
fn frame(out: &mut Vec<u8>, fin: bool, opcode: Opcode, payload: &[u8], masked: bool) {
    let mask = masked.then_some(KEY);
    let mut head = [0; MAX_HEAD_LEN];
    let n = encode_head(fin, opcode, payload.len() as u64, mask, &mut head);
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        ringmq_proto::ws::apply_mask(&mut out[start..], key, 0);
    }
}

/// Named frame sequences as a client sends them (masked) to a server.
fn client_sequences() -> Vec<(&'static str, Vec<u8>)> {
    let masked = true;
    let mut seqs = Vec::new();

    let mut s = Vec::new();
    write_frame(Opcode::TEXT, b"Hello", Some(KEY), &mut s);
    write_frame(
        Opcode::BINARY,
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        Some(KEY),
        &mut s,
    );
    seqs.push(("two single-frame messages", s));

    let mut s = Vec::new();
    frame(&mut s, false, Opcode::TEXT, "καλη".as_bytes(), masked);
    frame(
        &mut s,
        false,
        Opcode::CONTINUATION,
        "μέρα ".as_bytes(),
        masked,
    );
    frame(&mut s, true, Opcode::CONTINUATION, "😀!".as_bytes(), masked);
    seqs.push(("text in three fragments", s));

    let mut s = Vec::new();
    // A code point cut between two fragments: é is C3 A9.
    frame(&mut s, false, Opcode::TEXT, b"caf\xc3", masked);
    frame(&mut s, true, Opcode::CONTINUATION, b"\xa9", masked);
    seqs.push(("code point split across fragments", s));

    let mut s = Vec::new();
    frame(&mut s, false, Opcode::BINARY, b"abc", masked);
    write_frame(Opcode::PING, b"ping", Some(KEY), &mut s);
    frame(&mut s, false, Opcode::CONTINUATION, b"", masked);
    write_frame(Opcode::PONG, b"", Some(KEY), &mut s);
    frame(&mut s, true, Opcode::CONTINUATION, b"def", masked);
    seqs.push(("control frames between fragments", s));

    let mut s = Vec::new();
    write_frame(Opcode::TEXT, b"", Some(KEY), &mut s);
    frame(&mut s, false, Opcode::BINARY, b"", masked);
    frame(&mut s, true, Opcode::CONTINUATION, b"", masked);
    seqs.push(("empty messages", s));

    let mut s = Vec::new();
    let long: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    write_frame(Opcode::BINARY, &long, Some(KEY), &mut s);
    write_close(CloseCode::NORMAL, "done", Some(KEY), &mut s);
    seqs.push(("16-bit length then close", s));

    let mut s = Vec::new();
    write_close(CloseCode::NO_STATUS, "", Some(KEY), &mut s);
    seqs.push(("empty close", s));

    let mut s = Vec::new();
    write_frame(Opcode::TEXT, b"ok", Some(KEY), &mut s);
    // An unfinished frame at the end: only part of a head.
    s.extend_from_slice(&[0x82, 0xfe, 0x01]);
    seqs.push(("unfinished head at the end", s));
    seqs
}

fn assert_same_at_every_split(name: &str, role: Role, input: &[u8]) -> Transcript {
    let whole = decode_stream(role, MAX_MESSAGE, input, WHOLE);
    for split in 0..=input.len() {
        let pieces = decode_stream(role, MAX_MESSAGE, input, &[split, usize::MAX]);
        assert_eq!(pieces, whole, "{name}: split at {split}");
    }
    let bytes = decode_stream(role, MAX_MESSAGE, input, BYTE_BY_BYTE);
    assert_eq!(bytes, whole, "{name}: byte by byte");
    whole
}

#[test]
fn client_frames_at_every_split() {
    for (name, input) in client_sequences() {
        let whole = assert_same_at_every_split(name, Role::Server, &input);
        assert_eq!(whole.error, None, "{name}");
        assert!(!whole.items.is_empty(), "{name}");
    }
}

#[test]
fn server_frames_at_every_split() {
    // The same sequences unmasked, as a server sends them to a client.
    let mut s = Vec::new();
    frame(&mut s, false, Opcode::TEXT, b"Hel", false);
    write_frame(Opcode::PING, b"", None, &mut s);
    frame(&mut s, true, Opcode::CONTINUATION, b"lo", false);
    write_close(CloseCode::GOING_AWAY, "restart", None, &mut s);
    let whole = assert_same_at_every_split("unmasked", Role::Client, &s);
    assert_eq!(
        whole.items,
        [
            Item::Ping(vec![]),
            Item::Message {
                text: true,
                payload: b"Hello".to_vec()
            },
            Item::Close {
                code: Some(CloseCode::GOING_AWAY),
                reason: "restart".into()
            },
        ]
    );
}

#[test]
fn errors_are_the_same_at_every_split() {
    // Valid text, then a fragment whose UTF-8 goes bad in its middle.
    let mut s = Vec::new();
    write_frame(Opcode::TEXT, b"fine", Some(KEY), &mut s);
    frame(&mut s, false, Opcode::TEXT, b"ab\xed", true);
    frame(&mut s, true, Opcode::CONTINUATION, b"\xa0\x80cd", true);
    let whole = assert_same_at_every_split("bad utf8", Role::Server, &s);
    assert_eq!(whole.items.len(), 1);
    assert_eq!(whole.error, Some(ringmq_proto::ws::FrameError::InvalidUtf8));
}

#[test]
fn large_frame_in_uneven_pieces() {
    let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let mut s = Vec::new();
    write_frame(Opcode::BINARY, &payload, Some(KEY), &mut s);
    let whole = decode_stream(Role::Server, MAX_MESSAGE, &s, WHOLE);
    for sizes in [&[1][..], &[2, 3], &[13, 1, 4096], &[65_535]] {
        assert_eq!(decode_stream(Role::Server, MAX_MESSAGE, &s, sizes), whole);
    }
    assert_eq!(
        whole.items,
        [Item::Message {
            text: false,
            payload
        }]
    );
}

/// Requests as real clients send them; the accept must not depend on how they arrive.
fn requests() -> Vec<(&'static str, Vec<u8>)> {
    let mut swarm = Vec::new();
    write_request(
        "localhost:8083",
        "/mqtt",
        &[7; 16],
        Some("mqtt"),
        &mut swarm,
    );
    vec![
        (
            "browser",
            b"GET /mqtt HTTP/1.1\r\n\
              Host: broker.example:8083\r\n\
              Connection: Upgrade\r\n\
              Pragma: no-cache\r\n\
              Upgrade: websocket\r\n\
              Origin: http://example.com\r\n\
              Sec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
              Sec-WebSocket-Protocol: mqtt\r\n\r\n"
                .to_vec(),
        ),
        (
            "keep-alive, lower case, query, several protocol headers, frame bytes after",
            b"GET /mqtt?token=abc HTTP/1.1\r\n\
              host:b\r\n\
              connection: keep-alive, Upgrade\r\n\
              upgrade:\tWebSocket \r\n\
              sec-websocket-version: 13\r\n\
              sec-websocket-key: AAECAwQFBgcICQoLDA0ODw==\r\n\
              sec-websocket-protocol: mqttv3.1\r\n\
              Sec-WebSocket-Protocol: wamp, mqtt\r\n\r\n\x82\x80\x00\x00\x00\x00"
                .to_vec(),
        ),
        ("swarm", swarm),
    ]
}

type OwnedRequest = (String, String, Option<String>, Option<String>);

fn owned(r: Request<'_>) -> OwnedRequest {
    (
        r.path.into(),
        r.key.into(),
        r.subprotocol.map(Into::into),
        r.host.map(Into::into),
    )
}

#[test]
fn requests_at_every_split() {
    let cfg = ServerConfig::default();
    for (name, input) in requests() {
        let Ok(Decoded::Complete(req, consumed)) = parse_request(&input, &cfg) else {
            panic!("{name}: did not parse whole");
        };
        assert_eq!(req.path, "/mqtt", "{name}");
        assert_eq!(req.subprotocol, Some("mqtt"), "{name}");
        assert!(input[..consumed].ends_with(b"\r\n\r\n"), "{name}");
        let expected = (owned(req), consumed);
        let parse = |b: &[u8]| parse_request(b, &cfg).map(|d| d.map(owned));
        for split in 0..=input.len() {
            let fed = feed_head(&input, &[split, usize::MAX], parse);
            assert_eq!(fed, Ok(Some(expected.clone())), "{name}: split at {split}");
        }
        let fed = feed_head(&input, BYTE_BY_BYTE, parse);
        assert_eq!(fed, Ok(Some(expected.clone())), "{name}: byte by byte");
    }
}

#[test]
fn responses_at_every_split() {
    let key = [0x42; 16];
    let mut request = Vec::new();
    write_request("h", "/mqtt", &key, Some("mqtt"), &mut request);
    let Ok(Decoded::Complete(req, _)) = parse_request(&request, &ServerConfig::default()) else {
        panic!("swarm request");
    };
    let mut response = Vec::new();
    write_accept(&req, &mut response);
    let head_len = response.len();
    response.extend_from_slice(&[0x82, 0x00]); // a frame right behind the head
    let parse = |b: &[u8]| {
        parse_response(b, &key, Some("mqtt"), 8192)
            .map(|d| d.map(|r| r.subprotocol.map(String::from)))
    };
    let expected = Ok(Some((Some("mqtt".to_string()), head_len)));
    for split in 0..=response.len() {
        assert_eq!(
            feed_head(&response, &[split, usize::MAX], parse),
            expected,
            "split at {split}"
        );
    }
    assert_eq!(feed_head(&response, BYTE_BY_BYTE, parse), expected);
}
