//! Tables of malformed input, each row named for what it guards against, with the exact
//! error and the answer it leads to (WebSocket close code or HTTP status). Frame rows
//! are fed whole and byte by byte: the error must not depend on how the bytes arrive.

use ringmq_proto::Decoded;
use ringmq_proto::ws::testkit::{decode_stream, feed_head};
use ringmq_proto::ws::{
    CloseCode, FrameDecoder, FrameError, HandshakeError, MAX_HEAD_LEN, Opcode, Role, ServerConfig,
    encode_head, parse_request, parse_response, write_reject,
};

const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];
const MAX_MESSAGE: u64 = 1024;

/// One frame with any first byte; masked with `KEY` when `mask`.
fn raw_frame(b0: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut head = [0; MAX_HEAD_LEN];
    let n = encode_head(
        true,
        Opcode(0),
        payload.len() as u64,
        mask.then_some(KEY),
        &mut head,
    );
    head[0] = b0;
    let mut out = head[..n].to_vec();
    let start = out.len();
    out.extend_from_slice(payload);
    if mask {
        ringmq_proto::ws::apply_mask(&mut out[start..], KEY, 0);
    }
    out
}

fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(b0, payload, true)
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

struct FrameRow {
    name: &'static str,
    role: Role,
    input: Vec<u8>,
    error: FrameError,
    close: CloseCode,
}

fn frame_rows() -> Vec<FrameRow> {
    let server = Role::Server;
    let row = |name, role, input, error, close| FrameRow {
        name,
        role,
        input,
        error,
        close,
    };
    vec![
        row(
            "rsv1 set without extension",
            server,
            masked(0xc1, b"x"),
            FrameError::ReservedBits,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "rsv2 set without extension",
            server,
            masked(0xa1, b"x"),
            FrameError::ReservedBits,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "rsv3 set without extension",
            server,
            masked(0x91, b"x"),
            FrameError::ReservedBits,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "reserved data opcode 3",
            server,
            masked(0x83, b""),
            FrameError::UnknownOpcode,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "reserved control opcode 11",
            server,
            masked(0x8b, b""),
            FrameError::UnknownOpcode,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "ping of 126 bytes",
            server,
            masked(0x89, &[b'p'; 126]),
            FrameError::ControlTooLong,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "close of 126 bytes",
            server,
            masked(0x88, &[b'c'; 126]),
            FrameError::ControlTooLong,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "fragmented ping",
            server,
            masked(0x09, b"p"),
            FrameError::FragmentedControl,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "unmasked client frame",
            server,
            raw_frame(0x81, b"Hello", false),
            FrameError::UnmaskedFrame,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "masked server frame",
            Role::Client,
            masked(0x81, b"Hello"),
            FrameError::MaskedFrame,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "64-bit length top bit",
            server,
            vec![
                0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 0x11, 0x22, 0x33, 0x44,
            ],
            FrameError::LengthOverflow,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "continuation without start",
            server,
            masked(0x80, b"x"),
            FrameError::ContinuationWithoutStart,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "text after unfinished text",
            server,
            cat(&[masked(0x01, b"Hel"), masked(0x81, b"lo")]),
            FrameError::MessageNotFinished,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "binary after unfinished text",
            server,
            cat(&[masked(0x01, b"Hel"), masked(0x82, b"lo")]),
            FrameError::MessageNotFinished,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "invalid utf8 split across fragments",
            server,
            // ED A0 80 would be a UTF-16 surrogate: invalid, cut after its first byte.
            cat(&[masked(0x01, b"ok\xed"), masked(0x80, b"\xa0\x80")]),
            FrameError::InvalidUtf8,
            CloseCode::INVALID_PAYLOAD,
        ),
        row(
            "text ending inside a code point",
            server,
            masked(0x81, b"\xe2\x82"),
            FrameError::InvalidUtf8,
            CloseCode::INVALID_PAYLOAD,
        ),
        row(
            "close with 1 byte payload",
            server,
            masked(0x88, &[0x03]),
            FrameError::CloseTooShort,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "close code 1005 on the wire",
            server,
            masked(0x88, &1005u16.to_be_bytes()),
            FrameError::InvalidCloseCode,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "close code 1006 on the wire",
            server,
            masked(0x88, &1006u16.to_be_bytes()),
            FrameError::InvalidCloseCode,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "close code 999",
            server,
            masked(0x88, &999u16.to_be_bytes()),
            FrameError::InvalidCloseCode,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "close code 1004",
            server,
            masked(0x88, &1004u16.to_be_bytes()),
            FrameError::InvalidCloseCode,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "close code 1015",
            server,
            masked(0x88, &1015u16.to_be_bytes()),
            FrameError::InvalidCloseCode,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "close code 2999",
            server,
            masked(0x88, &2999u16.to_be_bytes()),
            FrameError::InvalidCloseCode,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "close code 5000",
            server,
            masked(0x88, &5000u16.to_be_bytes()),
            FrameError::InvalidCloseCode,
            CloseCode::PROTOCOL_ERROR,
        ),
        row(
            "close reason not utf8",
            server,
            masked(0x88, b"\x03\xe8\xff"),
            FrameError::InvalidCloseReason,
            CloseCode::INVALID_PAYLOAD,
        ),
        row(
            "message over max before payload",
            server,
            // Only the head: the error comes before any payload byte is there.
            vec![0x82, 0xfe, 0x04, 0x01, 0x11, 0x22, 0x33, 0x44],
            FrameError::MessageTooBig,
            CloseCode::MESSAGE_TOO_BIG,
        ),
        row(
            "fragments over max together",
            server,
            cat(&[masked(0x02, &[0; 600]), masked(0x80, &[0; 600])]),
            FrameError::MessageTooBig,
            CloseCode::MESSAGE_TOO_BIG,
        ),
    ]
}

#[test]
fn malformed_frames() {
    for row in frame_rows() {
        let whole = decode_stream(row.role, MAX_MESSAGE, &row.input, &[]);
        assert_eq!(whole.error, Some(row.error), "{}", row.name);
        assert_eq!(row.error.close_code(), row.close, "{}", row.name);
        assert_eq!(CloseCode::from(row.error), row.close, "{}", row.name);
        assert!(!row.error.reason().is_empty(), "{}", row.name);
        let bytes = decode_stream(row.role, MAX_MESSAGE, &row.input, &[1]);
        assert_eq!(bytes, whole, "{}: byte by byte", row.name);
    }
}

#[test]
fn decoder_stays_failed() {
    let mut decoder = FrameDecoder::new(Role::Server, MAX_MESSAGE);
    let mut bad = masked(0xc1, b"x");
    assert_eq!(decoder.decode(&mut bad), Err(FrameError::ReservedBits));
    let mut good = masked(0x81, b"x");
    assert_eq!(decoder.decode(&mut good), Err(FrameError::ReservedBits));
}

#[test]
fn errors_fail_on_the_first_byte_that_shows_them() {
    // The decoder does not wait for the rest of a head it already knows is bad.
    for (first_bytes, error) in [
        (&[0xc1][..], FrameError::ReservedBits),
        (&[0x83], FrameError::UnknownOpcode),
        (&[0x09], FrameError::FragmentedControl),
        (&[0x81, 0x05], FrameError::UnmaskedFrame),
        (&[0x89, 0xfe, 0x00, 0x7e], FrameError::ControlTooLong),
    ] {
        let mut buf = first_bytes.to_vec();
        let got = FrameDecoder::new(Role::Server, MAX_MESSAGE).decode(&mut buf);
        assert_eq!(got, Err(error), "{first_bytes:02x?}");
    }
}

/// A request that passes every check, with `replace` applied to its text.
fn request_with(replace: &[(&str, &str)]) -> Vec<u8> {
    let mut text = "GET /mqtt HTTP/1.1\r\n\
                    Host: broker\r\n\
                    Upgrade: websocket\r\n\
                    Connection: Upgrade\r\n\
                    Sec-WebSocket-Version: 13\r\n\
                    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                    Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        .to_string();
    for (from, to) in replace {
        assert!(text.contains(from), "{from}");
        text = text.replace(from, to);
    }
    text.into_bytes()
}

struct RequestRow {
    name: &'static str,
    input: Vec<u8>,
    require_subprotocol: bool,
    error: HandshakeError,
    status: u16,
}

fn request_rows() -> Vec<RequestRow> {
    let row = |name, input, error, status| RequestRow {
        name,
        input,
        require_subprotocol: false,
        error,
        status,
    };
    let mut long = b"GET /mqtt HTTP/1.1\r\nX-Filler: ".to_vec();
    long.resize(9000, b'a');
    let many_headers = "X-A: 1\r\n".repeat(60);
    vec![
        row(
            "header over 8 KiB",
            long,
            HandshakeError::HeadersTooLarge,
            431,
        ),
        row(
            "more than 64 headers",
            request_with(&[(
                "Host: broker\r\n",
                &format!("Host: broker\r\n{many_headers}"),
            )]),
            HandshakeError::TooManyHeaders,
            431,
        ),
        row(
            "version 8 → 426",
            request_with(&[("Version: 13", "Version: 8")]),
            HandshakeError::UnsupportedVersion,
            426,
        ),
        row(
            "no version → 426",
            request_with(&[("Sec-WebSocket-Version: 13\r\n", "")]),
            HandshakeError::MissingVersion,
            426,
        ),
        row(
            "key of 15 bytes",
            request_with(&[("dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAA")]),
            HandshakeError::InvalidKey,
            400,
        ),
        row(
            "key of 17 bytes",
            request_with(&[("dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAAAAA=")]),
            HandshakeError::InvalidKey,
            400,
        ),
        row(
            "key not base64",
            request_with(&[("dGhlIHNhbXBsZSBub25jZQ==", "not base64 at all!!!!!==")]),
            HandshakeError::InvalidKey,
            400,
        ),
        row(
            "no key",
            request_with(&[("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")]),
            HandshakeError::MissingKey,
            400,
        ),
        row(
            "two keys",
            request_with(&[(
                "Host: broker\r\n",
                "Host: broker\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n",
            )]),
            HandshakeError::DuplicateHeader,
            400,
        ),
        row(
            "no Connection upgrade",
            request_with(&[("Connection: Upgrade", "Connection: keep-alive")]),
            HandshakeError::NoConnectionUpgrade,
            400,
        ),
        row(
            "Connection upgraded is not upgrade",
            request_with(&[("Connection: Upgrade", "Connection: upgraded")]),
            HandshakeError::NoConnectionUpgrade,
            400,
        ),
        row(
            "no Upgrade header",
            request_with(&[("Upgrade: websocket\r\n", "")]),
            HandshakeError::NotWebSocketUpgrade,
            400,
        ),
        row(
            "Upgrade to h2c",
            request_with(&[("Upgrade: websocket", "Upgrade: h2c")]),
            HandshakeError::NotWebSocketUpgrade,
            400,
        ),
        row(
            "wrong path → 404",
            request_with(&[("GET /mqtt ", "GET /ws ")]),
            HandshakeError::WrongPath,
            404,
        ),
        row(
            "path prefix is not the path",
            request_with(&[("GET /mqtt ", "GET /mqtt/x ")]),
            HandshakeError::WrongPath,
            404,
        ),
        row(
            "no Host",
            request_with(&[("Host: broker\r\n", "")]),
            HandshakeError::MissingHost,
            400,
        ),
        row(
            "two Host headers",
            request_with(&[("Host: broker\r\n", "Host: a\r\nHost: b\r\n")]),
            HandshakeError::DuplicateHeader,
            400,
        ),
        row(
            "POST",
            request_with(&[("GET ", "POST ")]),
            HandshakeError::MethodNotGet,
            400,
        ),
        row(
            "lower-case get",
            request_with(&[("GET ", "get ")]),
            HandshakeError::MethodNotGet,
            400,
        ),
        row(
            "HTTP/1.0",
            request_with(&[("HTTP/1.1", "HTTP/1.0")]),
            HandshakeError::HttpVersion,
            400,
        ),
        row(
            "two spaces in the request line",
            request_with(&[("GET /mqtt", "GET  /mqtt")]),
            HandshakeError::MalformedRequestLine,
            400,
        ),
        row(
            // An absolute http(s) URI is accepted (RFC 6455 4.2.1); other schemes are not.
            "absolute target with a non-http scheme",
            request_with(&[("GET /mqtt", "GET ws://broker/mqtt")]),
            HandshakeError::MalformedRequestLine,
            400,
        ),
        row(
            "space before colon",
            request_with(&[("Host: broker", "Host : broker")]),
            HandshakeError::MalformedHeader,
            400,
        ),
        row(
            "obsolete line folding",
            request_with(&[("Host: broker\r\n", "Host: broker\r\n folded\r\n")]),
            HandshakeError::MalformedHeader,
            400,
        ),
        row(
            "bare LF inside a header",
            request_with(&[("Host: broker", "Host: bro\nker")]),
            HandshakeError::MalformedHeader,
            400,
        ),
        row(
            "header without colon",
            request_with(&[("Host: broker\r\n", "Host: broker\r\nnocolon\r\n")]),
            HandshakeError::MalformedHeader,
            400,
        ),
        RequestRow {
            name: "mqtt not offered when required",
            input: request_with(&[(
                "Sec-WebSocket-Protocol: mqtt",
                "Sec-WebSocket-Protocol: mqttv3.1, MQTT",
            )]),
            require_subprotocol: true,
            error: HandshakeError::SubprotocolNotOffered,
            status: 400,
        },
    ]
}

#[test]
fn the_base_request_is_valid() {
    for require_subprotocol in [false, true] {
        let cfg = ServerConfig {
            require_subprotocol,
            ..ServerConfig::default()
        };
        assert!(matches!(
            parse_request(&request_with(&[]), &cfg),
            Ok(Decoded::Complete(..))
        ));
    }
}

#[test]
fn malformed_requests() {
    for row in request_rows() {
        let cfg = ServerConfig {
            require_subprotocol: row.require_subprotocol,
            ..ServerConfig::default()
        };
        assert_eq!(
            parse_request(&row.input, &cfg),
            Err(row.error),
            "{}",
            row.name
        );
        assert_eq!(row.error.status(), row.status, "{}", row.name);
        let fed = feed_head(&row.input, &[1], |b| {
            parse_request(b, &cfg).map(|d| d.map(|_| ()))
        });
        assert_eq!(fed, Err(row.error), "{}: byte by byte", row.name);

        let mut answer = Vec::new();
        write_reject(row.error, &mut answer);
        let text = String::from_utf8(answer).unwrap();
        assert!(
            text.starts_with(&format!("HTTP/1.1 {} ", row.status)),
            "{}",
            row.name
        );
        assert_eq!(
            text.contains("\r\nSec-WebSocket-Version: 13\r\n"),
            row.status == 426,
            "{}",
            row.name
        );
    }
}

#[test]
fn endless_header_fails_as_it_passes_the_bound() {
    let cfg = ServerConfig::default();
    let mut endless = b"GET /mqtt HTTP/1.1\r\nX: ".to_vec();
    endless.resize(cfg.max_header_bytes, b'a');
    assert!(matches!(
        parse_request(&endless[..cfg.max_header_bytes - 1], &cfg),
        Ok(Decoded::Partial { .. })
    ));
    assert_eq!(
        parse_request(&endless, &cfg),
        Err(HandshakeError::HeadersTooLarge)
    );
}

#[test]
fn reject_answer_is_complete() {
    let mut answer = Vec::new();
    write_reject(HandshakeError::UnsupportedVersion, &mut answer);
    let reason = HandshakeError::UnsupportedVersion.reason();
    let expected = format!(
        "HTTP/1.1 426 Upgrade Required\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: {}\r\n\
         Connection: close\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n{reason}",
        reason.len()
    );
    assert_eq!(String::from_utf8(answer).unwrap(), expected);
}

#[test]
fn malformed_responses() {
    let key = *b"0123456789abcdef";
    // base64("0123456789abcdef") is MDEyMzQ1Njc4OWFiY2RlZg==.
    let accept = ringmq_proto::ws::accept_key("MDEyMzQ1Njc4OWFiY2RlZg==");
    let accept = std::str::from_utf8(&accept).unwrap();
    let good = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
    let with = |from: &str, to: &str| good.replace(from, to).into_bytes();
    let rows: Vec<(&str, Vec<u8>, HandshakeError)> = vec![
        (
            "not http",
            b"SSH-2.0-OpenSSH\r\n\r\n".to_vec(),
            HandshakeError::MalformedStatusLine,
        ),
        (
            "status 400",
            with("101 Switching Protocols", "400 Bad Request"),
            HandshakeError::UnexpectedStatus(400),
        ),
        (
            "status not three digits",
            with("101 ", "1010 "),
            HandshakeError::MalformedStatusLine,
        ),
        (
            "HTTP/1.0",
            with("HTTP/1.1", "HTTP/1.0"),
            HandshakeError::HttpVersion,
        ),
        (
            "no upgrade",
            with("Upgrade: websocket\r\n", ""),
            HandshakeError::NotWebSocketUpgrade,
        ),
        (
            "no connection",
            with("Connection: Upgrade\r\n", ""),
            HandshakeError::NoConnectionUpgrade,
        ),
        (
            "no accept",
            with(&format!("Sec-WebSocket-Accept: {accept}\r\n"), ""),
            HandshakeError::MissingAccept,
        ),
        (
            "wrong accept",
            with(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            HandshakeError::WrongAccept,
        ),
        (
            "other subprotocol",
            with("Protocol: mqtt", "Protocol: wamp"),
            HandshakeError::SubprotocolMismatch,
        ),
        (
            "no subprotocol",
            with("Sec-WebSocket-Protocol: mqtt\r\n", ""),
            HandshakeError::SubprotocolMismatch,
        ),
        (
            "extension not offered",
            with(
                "Connection: Upgrade\r\n",
                "Connection: Upgrade\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
            ),
            HandshakeError::UnexpectedExtension,
        ),
    ];
    assert!(matches!(
        parse_response(good.as_bytes(), &key, Some("mqtt"), 8192),
        Ok(Decoded::Complete(r, n)) if r.subprotocol == Some("mqtt") && n == good.len()
    ));
    for (name, input, error) in rows {
        assert_eq!(
            parse_response(&input, &key, Some("mqtt"), 8192),
            Err(error),
            "{name}"
        );
    }
}
