//! The client side of the opening handshake, for the swarm: write the upgrade request,
//! check the server's `101` answer.

use base64::Engine;

use super::{
    BASE64, DEFAULT_MAX_HEADERS, ENCODED_KEY_LEN, HandshakeError, KEY_LEN, WEBSOCKET_VERSION,
    accept_for, http, set_once,
};
use crate::Decoded;

/// The start of every response; checked from the first byte.
const HTTP_PREFIX: &[u8] = b"HTTP/";
const SWITCHING_PROTOCOLS: u16 = 101;

/// A valid `101 Switching Protocols` answer, borrowed from the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// The subprotocol the server selected (the expected one, when one was expected).
    pub subprotocol: Option<&'a str>,
}

/// Appends an upgrade request for `path` on `host`, with the 16-byte nonce `key`
/// (base64-encoded into `Sec-WebSocket-Key`) and, when given, offering `subprotocol`.
/// `host`, `path` and `subprotocol` are written as given: they must be valid header
/// values (the swarm takes them from its own configuration).
pub fn write_request(
    host: &str,
    path: &str,
    key: &[u8; KEY_LEN],
    subprotocol: Option<&str>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ");
    out.extend_from_slice(&encode_key(key));
    out.extend_from_slice(b"\r\nSec-WebSocket-Version: ");
    out.extend_from_slice(WEBSOCKET_VERSION.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = subprotocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn encode_key(key: &[u8; KEY_LEN]) -> [u8; ENCODED_KEY_LEN] {
    let mut out = [0; ENCODED_KEY_LEN];
    BASE64
        .encode_slice(key, &mut out)
        .expect("16 bytes are exactly 24 base64 characters");
    out
}

/// Parses the server's answer to [`write_request`] at the front of `buf`, like
/// [`parse_request`](super::parse_request): `Partial` until the head has ended, then
/// `Complete(response, consumed)`; bytes after `consumed` are WebSocket frames.
///
/// Checks the status (101), `Upgrade: websocket`, `Connection: upgrade`,
/// `Sec-WebSocket-Accept` against `key`, that no extension was selected, and that the
/// selected subprotocol is exactly `expected_subprotocol` (none when `None`).
pub fn parse_response<'a>(
    buf: &'a [u8],
    key: &[u8; KEY_LEN],
    expected_subprotocol: Option<&str>,
    max_header_bytes: usize,
) -> Result<Decoded<Response<'a>>, HandshakeError> {
    let seen = buf.len().min(HTTP_PREFIX.len());
    if buf[..seen] != HTTP_PREFIX[..seen] {
        return Err(HandshakeError::MalformedStatusLine);
    }
    let (head, consumed) = match http::find_head(buf, max_header_bytes)? {
        Decoded::Complete(head, consumed) => (head, consumed),
        Decoded::Partial { need } => return Ok(Decoded::Partial { need }),
    };
    let status = parse_status_line(head.start_line)?;
    if status != SWITCHING_PROTOCOLS {
        return Err(HandshakeError::UnexpectedStatus(status));
    }

    let mut fields = ResponseFields::default();
    for field in head.headers(DEFAULT_MAX_HEADERS) {
        let (name, value) = field?;
        fields.record(name, value)?;
    }
    if !fields.upgrade_websocket {
        return Err(HandshakeError::NotWebSocketUpgrade);
    }
    if !fields.connection_upgrade {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    let accept = fields.accept.ok_or(HandshakeError::MissingAccept)?;
    if accept != accept_for(&encode_key(key)) {
        return Err(HandshakeError::WrongAccept);
    }
    if fields.extensions {
        return Err(HandshakeError::UnexpectedExtension);
    }
    let subprotocol = match (expected_subprotocol, fields.subprotocol) {
        (None, None) => None,
        (Some(expected), Some(selected)) if selected == expected.as_bytes() => {
            std::str::from_utf8(selected).ok()
        }
        _ => return Err(HandshakeError::SubprotocolMismatch),
    };
    Ok(Decoded::Complete(Response { subprotocol }, consumed))
}

/// `HTTP/<major>.<minor> <3 digits>[ <reason>]`; returns the status code.
fn parse_status_line(line: &[u8]) -> Result<u16, HandshakeError> {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (Some(version), Some(status)) = (parts.next(), parts.next()) else {
        return Err(HandshakeError::MalformedStatusLine);
    };
    match http::is_http_1_1_or_later(version) {
        None => return Err(HandshakeError::MalformedStatusLine),
        Some(false) => return Err(HandshakeError::HttpVersion),
        Some(true) => {}
    }
    if status.len() != 3 || !status.iter().all(u8::is_ascii_digit) {
        return Err(HandshakeError::MalformedStatusLine);
    }
    Ok(status.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0')))
}

/// The header fields of a response that the handshake looks at.
#[derive(Default)]
struct ResponseFields<'a> {
    upgrade_websocket: bool,
    connection_upgrade: bool,
    accept: Option<&'a [u8]>,
    subprotocol: Option<&'a [u8]>,
    extensions: bool,
}

impl<'a> ResponseFields<'a> {
    fn record(&mut self, name: &[u8], value: &'a [u8]) -> Result<(), HandshakeError> {
        let is = |expected: &str| name.eq_ignore_ascii_case(expected.as_bytes());
        if is("upgrade") {
            self.upgrade_websocket |= http::list_contains(value, "websocket");
        } else if is("connection") {
            self.connection_upgrade |= http::list_contains(value, "upgrade");
        } else if is("sec-websocket-accept") {
            set_once(&mut self.accept, value)?;
        } else if is("sec-websocket-protocol") {
            set_once(&mut self.subprotocol, value)?;
        } else if is("sec-websocket-extensions") {
            self.extensions = true;
        }
        Ok(())
    }
}
