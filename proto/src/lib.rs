//! ringmq-proto: the codecs shared by the broker and the client swarm. No I/O, no runtime.
//!
//! Bytes from a socket pass through these modules in this order:
//!
//! - [`ws`]: the WebSocket layer (RFC 6455) for clients that connect over WebSocket:
//!   [`ws::handshake`] parses the HTTP/1.1 Upgrade request and writes the 101 answer,
//!   [`ws::frame`] decodes frame heads in place and hands out unmasked payload chunks,
//!   [`ws::mask`] unmasks a machine word at a time.
//! - [`mqtt`]: MQTT 3.1.1 and 5.0 control packets. [`mqtt::Packet`] borrows topic, payload,
//!   client id and properties from the input; encoding writes into a caller's buffer after
//!   computing the exact length.
//! - [`topic`]: topic names and filters: validation, matching, `$share/{group}/{filter}`.
//!
//! Decoders never allocate on the hot path and never read past a configured maximum: a
//! declared length above the maximum is rejected before any byte of the body is looked at.
//! "Need more bytes" is [`Decoded::Partial`], not an error; only malformed input is `Err`.

pub mod mqtt;
pub mod reader;
pub mod topic;
pub mod ws;

/// The result of trying to decode one item from the front of a byte slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<T> {
    /// The input ends before the item does; at least `need` more bytes are required
    /// before trying again (a lower bound: when only a header is known, it may be 1).
    Partial { need: usize },
    /// The item, and how many bytes of the input it used.
    Complete(T, usize),
}

impl<T> Decoded<T> {
    /// Maps the decoded item, keeping the consumed count.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Decoded<U> {
        match self {
            Decoded::Partial { need } => Decoded::Partial { need },
            Decoded::Complete(t, n) => Decoded::Complete(f(t), n),
        }
    }
}
