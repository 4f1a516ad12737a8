//! WebSocket (RFC 6455), hand-written for MQTT over WebSocket, the Autobahn echo server
//! and the swarm's clients. No I/O: bytes in, events and bytes out.
//!
//! In the order data flows through a connection:
//!
//! - [`handshake`]: the HTTP/1.1 Upgrade. The server parses the request as it arrives
//!   ([`parse_request`]) and answers `101` ([`write_accept`]) or an HTTP error
//!   ([`write_reject`]); the client side writes the request and checks the answer.
//! - [`frame`]: frame heads decoded in place ([`decode_head`]) and the streaming
//!   [`FrameDecoder`], which hands out data payload in chunks as soon as it arrives and
//!   control frames whole; [`encode_head`] writes a head into a stack array for a
//!   vectored send.
//! - [`mask`]: (un)masking in place a machine word at a time, resumable mid-frame.
//! - [`utf8`]: incremental UTF-8 validation of text messages across chunks and frames.
//! - [`message`]: [`MessageAssembler`] joins chunks into whole messages, for users that
//!   need them (the echo server); the broker streams chunks into its MQTT decoder.

pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod utf8;

mod fuzz;
#[doc(hidden)]
pub mod testkit;

pub use frame::{
    CloseCode, Event, FrameDecoder, FrameError, FrameHead, MAX_CONTROL_PAYLOAD, MAX_HEAD_LEN,
    Opcode, Role, decode_head, encode_head, write_close, write_frame,
};
#[doc(hidden)]
pub use fuzz::{fuzz_frames, fuzz_handshake};
pub use handshake::{
    HandshakeError, Request, Response, ServerConfig, accept_key, parse_request, parse_response,
    write_accept, write_reject, write_request,
};
pub use mask::apply_mask;
pub use message::{Message, MessageAssembler};
pub use utf8::{InvalidUtf8, Utf8Validator};
