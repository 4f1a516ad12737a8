//! The opening handshake (RFC 6455 §4): an HTTP/1.1 `GET` with `Upgrade: websocket`,
//! answered by `101 Switching Protocols`.
//!
//! Server side: [`parse_request`] checks a request as its bytes arrive and
//! [`write_accept`] / [`write_reject`] write the answer. Client side (the swarm):
//! [`write_request`] and [`parse_response`]. Parsing borrows from the input and never
//! allocates; writing appends to the caller's buffer only.

mod client;
mod http;

pub use client::{Response, parse_response, write_request};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

use crate::Decoded;

/// Default bound on the request head, blank line included.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8192;
/// Default bound on the number of header fields.
pub const DEFAULT_MAX_HEADERS: usize = 64;

/// Appended to the client's key before hashing (§1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The client's nonce, before base64 (§4.1).
const KEY_LEN: usize = 16;
/// base64 of the 16-byte nonce.
const ENCODED_KEY_LEN: usize = 24;
/// base64 of a 20-byte SHA-1 digest.
const ACCEPT_LEN: usize = 28;
/// The only protocol version there is (§4.1).
const WEBSOCKET_VERSION: &str = "13";
/// The start of every opening handshake; checked from the first byte so that a client
/// speaking something else fails at once.
const METHOD_GET: &[u8] = b"GET ";

/// What the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig<'c> {
    /// The path the endpoint lives at (the query string of a request is ignored).
    pub path: &'c str,
    /// The subprotocol to select when the client offers it.
    pub subprotocol: Option<&'c str>,
    /// Refuse clients that do not offer `subprotocol`.
    pub require_subprotocol: bool,
    /// Bound on the request head in bytes; a longer one fails with 431.
    pub max_header_bytes: usize,
    /// Bound on the number of header fields; more fail with 431.
    pub max_headers: usize,
}

impl Default for ServerConfig<'static> {
    /// MQTT over WebSocket: path `/mqtt`, subprotocol `mqtt` selected when offered but
    /// not required (some clients still offer only `mqttv3.1`, or nothing).
    fn default() -> Self {
        ServerConfig {
            path: "/mqtt",
            subprotocol: Some("mqtt"),
            require_subprotocol: false,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// A valid opening handshake request, borrowed from the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// The request path without its query string.
    pub path: &'a str,
    /// `Sec-WebSocket-Key` as sent (base64 of 16 bytes).
    pub key: &'a str,
    /// The subprotocol we selected, if the client offered it.
    pub subprotocol: Option<&'a str>,
    /// The `Host` header. Always `Some` from [`parse_request`], which rejects a request
    /// without one.
    pub host: Option<&'a str>,
    /// The `Origin` header, which browsers send and other clients usually do not (RFC 6455
    /// §4.1, §10.2). Whether an origin may connect is the server's policy, not the
    /// codec's: it answers a refused one with [`HandshakeError::OriginNotAllowed`].
    pub origin: Option<&'a str>,
}

/// Why a handshake failed. On the server side each maps to the HTTP status to answer
/// with ([`write_reject`]); the client-side variants (found in a server's response) are
/// never answered and report 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The head passed the size bound without ending (431).
    HeadersTooLarge,
    /// More header fields than allowed (431).
    TooManyHeaders,
    /// The request is not a `GET` (400).
    MethodNotGet,
    /// The request line is not `GET <path> HTTP/<version>` (400).
    MalformedRequestLine,
    /// HTTP before 1.1 (400).
    HttpVersion,
    /// A header line that is not `name: value` (400).
    MalformedHeader,
    /// A header that must appear once appears again (400).
    DuplicateHeader,
    /// No `Host` header (400).
    MissingHost,
    /// No `Upgrade: websocket` (400).
    NotWebSocketUpgrade,
    /// No `upgrade` in `Connection` (400).
    NoConnectionUpgrade,
    /// No `Sec-WebSocket-Version` (426, answered with the version we speak).
    MissingVersion,
    /// A `Sec-WebSocket-Version` other than 13 (426, answered with the version we speak).
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key` (400).
    MissingKey,
    /// A `Sec-WebSocket-Key` that is not base64 of exactly 16 bytes (400).
    InvalidKey,
    /// No endpoint at the requested path (404).
    WrongPath,
    /// The required subprotocol was not offered (400).
    SubprotocolNotOffered,
    /// The server does not accept upgrades from the request's `Origin` (403). Never
    /// returned by [`parse_request`]: the server's policy decides it after parsing.
    OriginNotAllowed,
    /// Client side: the response's status line is malformed.
    MalformedStatusLine,
    /// Client side: the server answered with this status instead of 101.
    UnexpectedStatus(u16),
    /// Client side: no `Sec-WebSocket-Accept`.
    MissingAccept,
    /// Client side: `Sec-WebSocket-Accept` does not match our key.
    WrongAccept,
    /// Client side: the server selected no subprotocol, or another one than ours.
    SubprotocolMismatch,
    /// Client side: the server selected an extension, but we offer none.
    UnexpectedExtension,
}

impl HandshakeError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::HeadersTooLarge | HandshakeError::TooManyHeaders => 431,
            HandshakeError::MissingVersion | HandshakeError::UnsupportedVersion => 426,
            HandshakeError::WrongPath => 404,
            HandshakeError::OriginNotAllowed => 403,
            _ => 400,
        }
    }

    /// A short sentence: the body of the answer, and for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::HeadersTooLarge => "The request head is too large.",
            HandshakeError::TooManyHeaders => "The request has too many header fields.",
            HandshakeError::MethodNotGet => "A WebSocket handshake must be a GET request.",
            HandshakeError::MalformedRequestLine => "The request line is malformed.",
            HandshakeError::HttpVersion => "A WebSocket handshake needs HTTP/1.1 or later.",
            HandshakeError::MalformedHeader => "A header field is malformed.",
            HandshakeError::DuplicateHeader => "A header field that must be single is repeated.",
            HandshakeError::MissingHost => "The Host header is missing.",
            HandshakeError::NotWebSocketUpgrade => {
                "The request does not ask to upgrade to websocket."
            }
            HandshakeError::NoConnectionUpgrade => {
                "The Connection header does not include upgrade."
            }
            HandshakeError::MissingVersion => "Sec-WebSocket-Version is missing; 13 is supported.",
            HandshakeError::UnsupportedVersion => "Only WebSocket version 13 is supported.",
            HandshakeError::MissingKey => "Sec-WebSocket-Key is missing.",
            HandshakeError::InvalidKey => "Sec-WebSocket-Key is not 16 bytes in base64.",
            HandshakeError::WrongPath => "There is no WebSocket endpoint at this path.",
            HandshakeError::SubprotocolNotOffered => {
                "The client did not offer the required subprotocol."
            }
            HandshakeError::OriginNotAllowed => "Upgrades from this Origin are not allowed.",
            HandshakeError::MalformedStatusLine => "The response status line is malformed.",
            HandshakeError::UnexpectedStatus(_) => "The server did not switch protocols.",
            HandshakeError::MissingAccept => "Sec-WebSocket-Accept is missing.",
            HandshakeError::WrongAccept => "Sec-WebSocket-Accept does not match the key.",
            HandshakeError::SubprotocolMismatch => {
                "The server did not select the expected subprotocol."
            }
            HandshakeError::UnexpectedExtension => {
                "The server selected an extension that was not offered."
            }
        }
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::UnexpectedStatus(status) => {
                write!(f, "{} (status {status})", self.reason())
            }
            _ => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`:
/// base64(SHA-1(key + GUID)) (§4.2.2).
pub fn accept_key(key: &str) -> [u8; ACCEPT_LEN] {
    accept_for(key.as_bytes())
}

fn accept_for(key: &[u8]) -> [u8; ACCEPT_LEN] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let digest = sha.finalize();
    let mut out = [0; ACCEPT_LEN];
    BASE64
        .encode_slice(digest, &mut out)
        .expect("a 20-byte digest is exactly 28 base64 characters");
    out
}

/// Parses the opening handshake request at the front of `buf`, the bytes received so
/// far. `Partial` until the blank line that ends the head has arrived; then
/// `Complete(request, consumed)`, where bytes after `consumed` already belong to the
/// WebSocket stream.
///
/// Checks, in this order: the method (from the first byte), the size bound (on the
/// bytes so far), the request line, each header line and the header count, the path
/// (404), `Host`, `Upgrade`, `Connection`, `Sec-WebSocket-Version` (426),
/// `Sec-WebSocket-Key`, and the required subprotocol. Header names are compared
/// ignoring case; `Sec-WebSocket-Extensions` is ignored (we negotiate none).
pub fn parse_request<'a>(
    buf: &'a [u8],
    cfg: &ServerConfig,
) -> Result<Decoded<Request<'a>>, HandshakeError> {
    let seen = buf.len().min(METHOD_GET.len());
    if buf[..seen] != METHOD_GET[..seen] {
        return Err(HandshakeError::MethodNotGet);
    }
    let (head, consumed) = match http::find_head(buf, cfg.max_header_bytes)? {
        Decoded::Complete(head, consumed) => (head, consumed),
        Decoded::Partial { need } => return Ok(Decoded::Partial { need }),
    };
    let path = parse_request_line(head.start_line)?;

    let mut fields = RequestFields::default();
    for field in head.headers(cfg.max_headers) {
        let (name, value) = field?;
        fields.record(name, value, cfg.subprotocol)?;
    }

    if path != cfg.path {
        return Err(HandshakeError::WrongPath);
    }
    let host = fields.host.ok_or(HandshakeError::MissingHost)?;
    if !fields.upgrade_websocket {
        return Err(HandshakeError::NotWebSocketUpgrade);
    }
    if !fields.connection_upgrade {
        return Err(HandshakeError::NoConnectionUpgrade);
    }
    match fields.version {
        None => return Err(HandshakeError::MissingVersion),
        Some(v) if v != WEBSOCKET_VERSION.as_bytes() => {
            return Err(HandshakeError::UnsupportedVersion);
        }
        Some(_) => {}
    }
    let key = fields.key.ok_or(HandshakeError::MissingKey)?;
    let key = validate_key(key)?;
    if cfg.require_subprotocol && cfg.subprotocol.is_some() && fields.subprotocol.is_none() {
        return Err(HandshakeError::SubprotocolNotOffered);
    }

    let request = Request {
        path,
        key,
        subprotocol: fields.subprotocol,
        host: Some(host),
        origin: fields.origin,
    };
    Ok(Decoded::Complete(request, consumed))
}

/// `GET <origin-form target> HTTP/<major>.<minor>`; returns the path without the query.
fn parse_request_line(line: &[u8]) -> Result<&str, HandshakeError> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(b"GET"), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HandshakeError::MalformedRequestLine);
    };
    match http::is_http_1_1_or_later(version) {
        None => return Err(HandshakeError::MalformedRequestLine),
        Some(false) => return Err(HandshakeError::HttpVersion),
        Some(true) => {}
    }
    if !target.iter().all(|b| b.is_ascii_graphic()) {
        return Err(HandshakeError::MalformedRequestLine);
    }
    let target = origin_form(target).ok_or(HandshakeError::MalformedRequestLine)?;
    let path = target.split(|&b| b == b'?').next().unwrap_or(target);
    std::str::from_utf8(path).map_err(|_| HandshakeError::MalformedRequestLine)
}

/// The path-and-query of a request target. RFC 6455 §4.2.1 allows the absolute form
/// (`http://host:port/path`, RFC 7230 §5.3.2) besides the usual `/path`; an absolute URI
/// with no path stands for `/`.
fn origin_form(target: &[u8]) -> Option<&[u8]> {
    if target.first() == Some(&b'/') {
        return Some(target);
    }
    let lower_starts = |prefix: &[u8]| {
        target.len() >= prefix.len() && target[..prefix.len()].eq_ignore_ascii_case(prefix)
    };
    let scheme_len = if lower_starts(b"http://") {
        7
    } else if lower_starts(b"https://") {
        8
    } else {
        return None;
    };
    let rest = &target[scheme_len..];
    match rest.iter().position(|&b| b == b'/') {
        Some(0) | None if rest.is_empty() => None,
        Some(at) => Some(&rest[at..]),
        None => Some(b"/"),
    }
}

/// A key must be the canonical base64 of exactly 16 bytes.
fn validate_key(key: &[u8]) -> Result<&str, HandshakeError> {
    let mut raw = [0u8; KEY_LEN];
    match BASE64.decode_slice(key, &mut raw) {
        Ok(KEY_LEN) => std::str::from_utf8(key).map_err(|_| HandshakeError::InvalidKey),
        _ => Err(HandshakeError::InvalidKey),
    }
}

/// The header fields of a request that the handshake looks at.
#[derive(Default)]
struct RequestFields<'a> {
    host: Option<&'a str>,
    upgrade_websocket: bool,
    connection_upgrade: bool,
    version: Option<&'a [u8]>,
    key: Option<&'a [u8]>,
    subprotocol: Option<&'a str>,
    origin: Option<&'a str>,
}

impl<'a> RequestFields<'a> {
    fn record(
        &mut self,
        name: &[u8],
        value: &'a [u8],
        wanted_subprotocol: Option<&str>,
    ) -> Result<(), HandshakeError> {
        let is = |expected: &str| name.eq_ignore_ascii_case(expected.as_bytes());
        if is("host") {
            let host = std::str::from_utf8(value).map_err(|_| HandshakeError::MalformedHeader)?;
            set_once(&mut self.host, host)?;
        } else if is("upgrade") {
            self.upgrade_websocket |= http::list_contains(value, "websocket");
        } else if is("connection") {
            self.connection_upgrade |= http::list_contains(value, "upgrade");
        } else if is("origin") {
            let origin = std::str::from_utf8(value).map_err(|_| HandshakeError::MalformedHeader)?;
            set_once(&mut self.origin, origin)?;
        } else if is("sec-websocket-version") {
            set_once(&mut self.version, value)?;
        } else if is("sec-websocket-key") {
            set_once(&mut self.key, value)?;
        } else if is("sec-websocket-protocol") {
            // Several headers may each carry a list; subprotocol names are case-sensitive.
            if let Some(wanted) = wanted_subprotocol
                && let Some(offered) = http::tokens(value).find(|t| *t == wanted.as_bytes())
            {
                self.subprotocol = std::str::from_utf8(offered).ok();
            }
        }
        Ok(())
    }
}

/// Stores a header that may appear only once.
fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), HandshakeError> {
    if slot.is_some() {
        return Err(HandshakeError::DuplicateHeader);
    }
    *slot = Some(value);
    Ok(())
}

/// Appends the `101 Switching Protocols` answer to a valid request.
pub fn write_accept(req: &Request, out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&accept_key(req.key));
    out.extend_from_slice(b"\r\n");
    if let Some(protocol) = req.subprotocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(protocol.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the error answer for a failed handshake: the status, a plain-text body with
/// the reason, `Connection: close`, and for 426 the version we speak (§4.4).
pub fn write_reject(err: HandshakeError, out: &mut Vec<u8>) {
    let status = err.status();
    let body = err.reason();
    out.extend_from_slice(b"HTTP/1.1 ");
    http::push_decimal(out, usize::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: text/plain\r\nContent-Length: ");
    http::push_decimal(out, body.len());
    out.extend_from_slice(b"\r\nConnection: close\r\n");
    if status == 426 {
        out.extend_from_slice(b"Sec-WebSocket-Version: ");
        out.extend_from_slice(WEBSOCKET_VERSION.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// The reason phrase for the statuses [`HandshakeError::status`] gives.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        403 => "Forbidden",
        404 => "Not Found",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_accept_key_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            &accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn non_canonical_key_is_refused() {
        // Same 16 bytes as the RFC key, but with nonzero padding bits.
        assert_eq!(
            validate_key(b"dGhlIHNhbXBsZSBub25jZR=="),
            Err(HandshakeError::InvalidKey)
        );
        assert!(validate_key(b"dGhlIHNhbXBsZSBub25jZQ==").is_ok());
    }

    #[test]
    fn absolute_form_targets_give_their_path() {
        let path =
            |t: &str| origin_form(t.as_bytes()).map(|p| String::from_utf8(p.to_vec()).unwrap());
        assert_eq!(path("/mqtt").as_deref(), Some("/mqtt"));
        assert_eq!(path("http://127.0.0.1:8083/mqtt").as_deref(), Some("/mqtt"));
        assert_eq!(path("HTTPS://host/a/b?x=1").as_deref(), Some("/a/b?x=1"));
        assert_eq!(path("http://host").as_deref(), Some("/"));
        assert_eq!(path("http://").as_deref(), None);
        assert_eq!(path("ws://host/mqtt").as_deref(), None);
        assert_eq!(path("mqtt").as_deref(), None);
        assert_eq!(
            parse_request_line(b"GET http://h:1/mqtt?q HTTP/1.1"),
            Ok("/mqtt"),
            "RFC 6455 4.2.1: an absolute URI names the resource too"
        );
    }
}
