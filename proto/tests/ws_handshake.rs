//! The opening handshake end to end: what the server accepts, the exact answers it
//! writes, and the client side agreeing with it.

use ringmq_proto::Decoded;
use ringmq_proto::ws::{
    HandshakeError, Request, Response, ServerConfig, parse_request, parse_response, write_accept,
    write_request,
};

/// The request of RFC 6455 §1.2, with the `mqtt` subprotocol offered instead of chat.
const RFC_REQUEST: &[u8] = b"GET /mqtt HTTP/1.1\r\n\
    Host: server.example.com\r\n\
    Upgrade: websocket\r\n\
    Connection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Origin: http://example.com\r\n\
    Sec-WebSocket-Protocol: chat, mqtt\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

fn parse(input: &[u8], cfg: &ServerConfig) -> (Request<'static>, usize) {
    let input: &'static [u8] = Box::leak(input.to_vec().into_boxed_slice());
    match parse_request(input, cfg) {
        Ok(Decoded::Complete(req, n)) => (req, n),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rfc_request_is_accepted_with_the_rfc_answer() {
    let (req, consumed) = parse(RFC_REQUEST, &ServerConfig::default());
    assert_eq!(consumed, RFC_REQUEST.len());
    assert_eq!(
        req,
        Request {
            path: "/mqtt",
            key: "dGhlIHNhbXBsZSBub25jZQ==",
            subprotocol: Some("mqtt"),
            host: Some("server.example.com"),
            origin: Some("http://example.com"),
        }
    );
    let mut answer = Vec::new();
    write_accept(&req, &mut answer);
    assert_eq!(
        answer,
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
          Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    );
}

#[test]
fn query_string_is_ignored_and_no_subprotocol_is_fine_unless_required() {
    let input = b"GET /mqtt?client=7 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (req, _) = parse(input, &ServerConfig::default());
    assert_eq!((req.path, req.subprotocol), ("/mqtt", None));
    let mut answer = Vec::new();
    write_accept(&req, &mut answer);
    assert!(!answer.windows(22).any(|w| w == b"Sec-WebSocket-Protocol"));

    let required = ServerConfig {
        require_subprotocol: true,
        ..ServerConfig::default()
    };
    assert_eq!(
        parse_request(input, &required),
        Err(HandshakeError::SubprotocolNotOffered)
    );
}

#[test]
fn echo_server_configuration_selects_nothing() {
    let cfg = ServerConfig {
        path: "/",
        subprotocol: None,
        ..ServerConfig::default()
    };
    let input = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: AAECAwQFBgcICQoLDA0ODw==\r\n\
        Sec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (req, _) = parse(input, &cfg);
    assert_eq!((req.path, req.subprotocol), ("/", None));
}

#[test]
fn swarm_request_and_broker_answer_agree() {
    let key = [9u8; 16];
    for subprotocol in [Some("mqtt"), None] {
        let mut request = Vec::new();
        write_request("localhost:8083", "/mqtt", &key, subprotocol, &mut request);
        let (req, consumed) = parse(&request, &ServerConfig::default());
        assert_eq!(consumed, request.len());
        assert_eq!(req.host, Some("localhost:8083"));
        assert_eq!(req.subprotocol, subprotocol);

        let mut answer = Vec::new();
        write_accept(&req, &mut answer);
        answer.extend_from_slice(&[0x82, 0x00]);
        assert_eq!(
            parse_response(&answer, &key, subprotocol, 8192),
            Ok(Decoded::Complete(
                Response { subprotocol },
                answer.len() - 2
            ))
        );
        // Another key's answer does not satisfy this client.
        assert_eq!(
            parse_response(&answer, &[8; 16], subprotocol, 8192),
            Err(HandshakeError::WrongAccept)
        );
    }
}

#[test]
fn response_head_is_bounded() {
    let mut endless = b"HTTP/1.1 101 Switching Protocols\r\nX: ".to_vec();
    endless.resize(100, b'a');
    assert_eq!(
        parse_response(&endless, &[0; 16], None, 100),
        Err(HandshakeError::HeadersTooLarge)
    );
    assert!(matches!(
        parse_response(&endless[..99], &[0; 16], None, 100),
        Ok(Decoded::Partial { .. })
    ));
}

/// The `Origin` header is read for the server's policy (one at most), and a refused origin
/// is answered 403.
#[test]
fn origin_is_read_once_and_a_refusal_is_403() {
    let without = String::from_utf8(RFC_REQUEST.to_vec())
        .unwrap()
        .replace("Origin: http://example.com\r\n", "");
    let (req, _) = parse(without.as_bytes(), &ServerConfig::default());
    assert_eq!(req.origin, None);
    let twice = String::from_utf8(RFC_REQUEST.to_vec()).unwrap().replace(
        "Origin: http://example.com\r\n",
        "Origin: http://example.com\r\norigin: http://evil.example\r\n",
    );
    assert_eq!(
        parse_request(twice.as_bytes(), &ServerConfig::default()),
        Err(HandshakeError::DuplicateHeader)
    );
    let mut answer = Vec::new();
    ringmq_proto::ws::write_reject(HandshakeError::OriginNotAllowed, &mut answer);
    let text = String::from_utf8(answer).unwrap();
    assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
    assert!(
        text.ends_with("Upgrades from this Origin are not allowed."),
        "{text}"
    );
}
