//! The logic of the fuzz targets `ws_frames` and `ws_handshake`, kept in the library so
//! that the targets stay one line each and the property tests can run it too.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::Decoded;
use crate::ws::frame::{CloseCode, Opcode, Role, write_close, write_frame};
use crate::ws::handshake::{
    self, DEFAULT_MAX_HEADER_BYTES, HandshakeError, Request, Response, ServerConfig,
};
use crate::ws::testkit::{Item, Transcript, decode_stream, feed_head};

/// Large enough for any fuzz input, small enough that the bound is also exercised.
const FUZZ_MAX_MESSAGE: u64 = 1 << 12;
/// At most this many leading bytes of a frames input choose the piece sizes.
const MAX_SIZE_BYTES: u8 = 8;

/// Decodes `data[1..]` as a stream of frames twice, whole and in pieces chosen by the
/// input, and checks both give the same transcript; then re-encodes every message and
/// control frame as the peer would and checks they decode to the same items.
///
/// `data[0]`: bit 0 picks our role; bits 1–3 how many following bytes give piece sizes.
pub fn fuzz_frames(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let role = if control & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let size_bytes = usize::from((control >> 1) % MAX_SIZE_BYTES).min(rest.len());
    let (size_bytes, stream) = rest.split_at(size_bytes);
    let sizes: Vec<usize> = size_bytes.iter().map(|&b| usize::from(b)).collect();

    let whole = decode_stream(role, FUZZ_MAX_MESSAGE, stream, &[]);
    let pieces = decode_stream(role, FUZZ_MAX_MESSAGE, stream, &sizes);
    assert_eq!(
        whole, pieces,
        "the split of the input changed what was decoded"
    );

    // The peer masks when we are the server; the key comes from the input.
    let mask = match role {
        Role::Server => Some(u32::from(control).wrapping_mul(0x9e37_79b9).to_be_bytes()),
        Role::Client => None,
    };
    let mut wire = Vec::new();
    for item in &whole.items {
        encode_item(item, mask, &mut wire);
    }
    let again = decode_stream(role, FUZZ_MAX_MESSAGE, &wire, &sizes);
    let expected = Transcript {
        items: whole.items,
        error: None,
        leftover: 0,
    };
    assert_eq!(again, expected, "re-encoded items did not decode the same");
}

fn encode_item(item: &Item, mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    match item {
        Item::Message { text, payload } => {
            let opcode = if *text { Opcode::TEXT } else { Opcode::BINARY };
            write_frame(opcode, payload, mask, out);
        }
        Item::Ping(payload) => write_frame(Opcode::PING, payload, mask, out),
        Item::Pong(payload) => write_frame(Opcode::PONG, payload, mask, out),
        Item::Close { code, reason } => {
            write_close(code.unwrap_or(CloseCode::NO_STATUS), reason, mask, out);
        }
    }
}

/// An owned copy of a [`Request`], to compare results across buffers.
type OwnedRequest = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn owned(r: Request<'_>) -> OwnedRequest {
    (
        r.path.to_owned(),
        r.key.to_owned(),
        r.subprotocol.map(str::to_owned),
        r.host.map(str::to_owned),
        r.origin.map(str::to_owned),
    )
}

/// Parses `data` as a handshake request under several configurations and as a
/// response, whole and in pieces, checking the results agree. A complete request is
/// written again in canonical form and must parse to the same [`Request`]; its accept
/// answer must satisfy the client side, and a rejection must read as that status.
pub fn fuzz_handshake(data: &[u8]) {
    let configs = [
        ServerConfig::default(),
        ServerConfig {
            require_subprotocol: true,
            ..ServerConfig::default()
        },
        ServerConfig {
            path: "/",
            subprotocol: None,
            ..ServerConfig::default()
        },
        ServerConfig {
            max_header_bytes: 128,
            max_headers: 5,
            ..ServerConfig::default()
        },
    ];
    // A data-dependent piece size, without reserving input bytes for it.
    let sizes = [data.len() % 61 + 1];
    for cfg in &configs {
        let whole = handshake::parse_request(data, cfg);
        let fed = feed_head(data, &sizes, |b| {
            handshake::parse_request(b, cfg).map(|d| d.map(owned))
        });
        match (&whole, &fed) {
            (Ok(Decoded::Complete(req, n)), Ok(Some((fed_req, fed_n)))) => {
                assert_eq!((&owned(*req), n), (fed_req, fed_n));
            }
            (Ok(Decoded::Partial { .. }), Ok(None)) => {}
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("whole {whole:?} and in pieces {fed:?} disagree"),
        }
        match whole {
            Ok(Decoded::Complete(req, consumed)) => check_request(data, cfg, req, consumed),
            Ok(Decoded::Partial { .. }) => {}
            Err(e) => check_reject(e),
        }
    }

    let key = [0x5a; 16];
    let whole = handshake::parse_response(data, &key, Some("mqtt"), DEFAULT_MAX_HEADER_BYTES);
    let fed = feed_head(data, &sizes, |b| {
        handshake::parse_response(b, &key, Some("mqtt"), DEFAULT_MAX_HEADER_BYTES)
            .map(|d| d.map(|r| r.subprotocol.map(str::to_owned)))
    });
    match (whole, fed) {
        (Ok(Decoded::Complete(r, n)), Ok(Some((fed_r, fed_n)))) => {
            assert_eq!((r.subprotocol.map(str::to_owned), n), (fed_r, fed_n));
        }
        (Ok(Decoded::Partial { .. }), Ok(None)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b),
        (whole, fed) => panic!("whole {whole:?} and in pieces {fed:?} disagree"),
    }
}

fn check_request(data: &[u8], cfg: &ServerConfig, req: Request<'_>, consumed: usize) {
    assert!(consumed <= data.len());
    assert!(matches!(
        handshake::parse_request(&data[..consumed - 1], cfg),
        Ok(Decoded::Partial { .. })
    ));

    let mut raw_key = [0u8; 16];
    assert_eq!(BASE64.decode_slice(req.key, &mut raw_key), Ok(16));
    let host = req.host.expect("a complete request has a Host");
    let mut canonical = Vec::new();
    handshake::write_request(host, req.path, &raw_key, req.subprotocol, &mut canonical);
    let reparsed = handshake::parse_request(&canonical, cfg);
    if canonical.len() <= cfg.max_header_bytes {
        // A client written by `write_request` sends no Origin (it is not a browser).
        let without_origin = Request {
            origin: None,
            ..req
        };
        assert_eq!(
            reparsed,
            Ok(Decoded::Complete(without_origin, canonical.len()))
        );
    } else {
        assert_eq!(reparsed, Err(HandshakeError::HeadersTooLarge));
    }

    let mut answer = Vec::new();
    handshake::write_accept(&req, &mut answer);
    let response =
        handshake::parse_response(&answer, &raw_key, req.subprotocol, DEFAULT_MAX_HEADER_BYTES);
    let expected = Response {
        subprotocol: req.subprotocol,
    };
    assert_eq!(response, Ok(Decoded::Complete(expected, answer.len())));
}

fn check_reject(e: HandshakeError) {
    let mut answer = Vec::new();
    handshake::write_reject(e, &mut answer);
    let response = handshake::parse_response(&answer, &[0; 16], None, DEFAULT_MAX_HEADER_BYTES);
    assert_eq!(response, Err(HandshakeError::UnexpectedStatus(e.status())));
}
