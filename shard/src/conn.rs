//! One connection's state machine, as the runtime sees it: its fixed-file slot, the
//! operations it has in flight, its transport (plain TCP, a WebSocket upgrade in
//! progress, WebSocket frames, any of them inside TLS), its outbound bytes, and why it
//! closes. The service's own state for the connection (`T`) rides along.
//!
//! An idle connection is small: no receive buffer (the provided-buffer ring lends one
//! only while bytes are processed) and no send buffer (one is borrowed from a pool while
//! bytes are queued or in flight); over TLS, its session's keys and state and no buffer.

use std::num::NonZeroU32;

use ringmq_proto::ws;

use crate::tls::TlsConn;

/// Names a connection: its slab index and the generation of that slab entry, so a
/// completion or a timer for a closed connection never reaches its successor. The
/// generation is never 0, so an `Option<ConnKey>` is 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    pub index: u32,
    pub gen_: NonZeroU32,
}

impl ConnKey {
    /// Packs the key into a timer-wheel key.
    pub fn to_u64(self) -> u64 {
        ((self.gen_.get() as u64) << 32) | self.index as u64
    }

    /// The key `to_u64` packed (`None` for a value it never gives).
    pub fn from_u64(v: u64) -> Option<ConnKey> {
        Some(ConnKey {
            index: v as u32,
            gen_: NonZeroU32::new((v >> 32) as u32)?,
        })
    }
}

/// Bits of `Conn::flags`.
pub mod flag {
    /// A multishot receive is posted.
    pub const RECV_ARMED: u32 = 1 << 0;
    /// A send is in flight; the send buffer must not move.
    pub const SEND_INFLIGHT: u32 = 1 << 1;
    /// The peer closed its side (receive returned 0) or the socket failed.
    pub const READ_DONE: u32 = 1 << 2;
    /// Closing: no more data goes to the service; outbound bytes are flushed, then the
    /// socket is shut down and closed.
    pub const CLOSING: u32 = 1 << 3;
    pub const SHUTDOWN_SENT: u32 = 1 << 4;
    pub const CLOSE_SENT: u32 = 1 << 5;
    /// The connection is on the turn's flush list.
    pub const QUEUED_FLUSH: u32 = 1 << 6;
    /// The receive ended (no buffers, or an error worth retrying) and must be re-posted.
    pub const NEEDS_RECV: u32 = 1 << 7;
    /// The service was told about the connection (`on_open`), so it must be told about
    /// its end (`on_close`).
    pub const OPEN: u32 = 1 << 8;
    /// Accepted over `max_connections`: the service answers with a refusal and closes.
    pub const OVER_LIMIT: u32 = 1 << 9;
    /// A WebSocket close frame was sent; nothing may follow it.
    pub const WS_CLOSE_SENT: u32 = 1 << 10;
    /// The timer wheel holds a live entry for this connection (at `timer_at`).
    pub const TIMER_ARMED: u32 = 1 << 11;
    /// Outbound bytes were dropped because the socket failed; further writes are dropped.
    pub const WRITE_FAILED: u32 = 1 << 12;
    /// The `shutdown(SHUT_WR)` completed.
    pub const SHUTDOWN_DONE: u32 = 1 << 13;
    /// The connection speaks WebSocket (after the upgrade).
    pub const WS: u32 = 1 << 14;
    /// A WebSocket byte stream (`WsFraming::ByteStream`): every write is framed as one
    /// binary message.
    pub const WS_BYTE_STREAM: u32 = 1 << 15;
    /// Back-pressure: the service holds what this connection sends (acknowledgements
    /// aside) until it is resumed. Receives go on, so the connection's acknowledgements
    /// still free its own deliveries.
    pub const PAUSED: u32 = 1 << 16;
    /// Paused, and the service holds as much as it will: no receive is posted until the
    /// pause ends.
    pub const READ_HELD: u32 = 1 << 17;
    /// The peer closed its side while paused: the connection is closed once the service
    /// has taken up what it held (a DISCONNECT among it closes it first).
    pub const EOF_HELD: u32 = 1 << 18;
    /// The service asked to hear when the outbound queue is empty (`Io::notify_drained`).
    pub const WANT_DRAINED: u32 = 1 << 19;
    /// A rate limit: reading stops (`READ_HELD` is set with it) until a time the service
    /// named (`Io::throttle`); what the service already received is held as in a pause.
    pub const THROTTLED: u32 = 1 << 20;
    /// The connection speaks TLS: what is written is staged as plaintext
    /// (`OutBuf::plain`) and sealed into records when its send is posted.
    pub const TLS: u32 = 1 << 21;
}

/// The transport a connection speaks below the service (see `config::Listen`): the stage
/// that gets the socket's bytes.
pub enum Transport {
    /// Bytes go to the service as they arrive.
    Tcp,
    /// Waiting for the HTTP Upgrade request; bytes so far (bounded by the config). Boxed,
    /// so the enum is 16 bytes in every connection, not a `Vec`'s 24.
    #[allow(clippy::box_collection)]
    WsHandshake(Box<Vec<u8>>),
    /// WebSocket frames; the service gets unmasked data chunks.
    Ws(Box<WsConn>),
    /// TLS records; what they carry goes to the stage inside (`TlsConn::inner`: one of
    /// the above).
    Tls(Box<TlsConn>),
}

impl Transport {
    /// Whether the runtime still negotiates the connection (a TLS handshake or a
    /// WebSocket upgrade) before the service hears of it.
    pub fn negotiating(&self) -> bool {
        match self {
            Transport::Tls(t) => t.handshaking() || t.inner.negotiating(),
            Transport::WsHandshake(_) => true,
            Transport::Tcp | Transport::Ws(_) => false,
        }
    }
}

/// WebSocket state after the upgrade.
pub struct WsConn {
    pub decoder: ws::frame::FrameDecoder,
    /// Bytes of a frame head or of a control frame split across receives (at most
    /// one head plus 125 bytes).
    pub carry: Vec<u8>,
    /// A byte stream in binary messages (every write is one message, text is refused),
    /// or messages the service frames itself (`config::WsFraming`).
    pub byte_stream: bool,
}

/// Why a connection is being closed; decides the WebSocket close code the runtime sends
/// and which counter the close is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The service is done with the connection (after its peer said goodbye, a refusal,
    /// …).
    Normal,
    /// The server is shutting down.
    GoingAway,
    /// The peer broke the protocol.
    ProtocolError,
    /// The peer sent something too large.
    TooBig,
    /// The peer sent text that is not UTF-8 (WebSocket) or an invalid payload.
    InvalidPayload,
    /// A deadline passed (handshake, or one the service set).
    Timeout,
    /// The peer does not read what it is sent.
    SlowConsumer,
    /// A policy refusal (limits, taken over by another connection).
    Policy,
    /// The runtime refused the connection's WebSocket upgrade, with an HTTP answer.
    UpgradeRefused,
    /// The TLS handshake failed or a record was bad (rustls' alert is sent, nothing else).
    TlsFailed,
    /// The socket failed or the peer went away; nothing more can be sent.
    Lost,
    /// The service could not write what it began to (an encoder's error): the
    /// connection's stream would be corrupt if it went on.
    WriteFailed,
}

impl CloseReason {
    /// The WebSocket close code (RFC 6455 §7.4.1) sent for this reason, if one is sent.
    pub fn ws_code(self) -> Option<u16> {
        Some(match self {
            CloseReason::Normal => 1000,
            CloseReason::GoingAway => 1001,
            CloseReason::ProtocolError => 1002,
            CloseReason::InvalidPayload => 1007,
            CloseReason::Policy | CloseReason::Timeout | CloseReason::SlowConsumer => 1008,
            CloseReason::TooBig => 1009,
            CloseReason::WriteFailed => 1011,
            // Not upgraded: there is no WebSocket to close.
            CloseReason::UpgradeRefused | CloseReason::TlsFailed | CloseReason::Lost => {
                return None;
            }
        })
    }
}

/// Outbound bytes of one connection. `sending[sent..]` is in flight (the kernel reads
/// it until the send completes, so it must not move); new bytes go to `queued`; when the
/// send completes the two swap. Over TLS, what is written waits in `plain` and is sealed
/// into records appended to `queued` when a send is posted.
#[derive(Default)]
pub struct OutBuf {
    pub sending: Vec<u8>,
    pub sent: usize,
    pub queued: Vec<u8>,
    pub plain: Vec<u8>,
}

impl OutBuf {
    /// Bytes not yet handed to the kernel, in flight included (over TLS, plaintext not
    /// yet sealed counts as it is).
    pub fn len(&self) -> usize {
        self.sending.len() - self.sent + self.queued.len() + self.plain.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One connection in a shard's slab.
pub struct Conn<T> {
    pub gen_: NonZeroU32,
    /// The connection's direct descriptor: its slot in its lane's fixed-file table.
    pub slot: u32,
    pub flags: u32,
    /// Which listener accepted it (index into the shard's listeners).
    pub listener: u8,
    /// The lane (the shard's ring) whose fixed-file table holds the connection: every
    /// operation on it goes to that ring.
    pub lane: u8,
    pub transport: Transport,
    pub out: Option<Box<OutBuf>>,
    /// When the service's deadline for this connection falls (0: none).
    pub deadline_ms: u64,
    /// When the live timer-wheel entry for this connection fires.
    pub timer_at: u64,
    /// The service's state for this connection.
    pub state: T,
}

impl<T> Conn<T> {
    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    pub fn set(&mut self, f: u32) {
        self.flags |= f;
    }

    pub fn clear(&mut self, f: u32) {
        self.flags &= !f;
    }

    pub fn out_len(&self) -> usize {
        self.out.as_ref().map_or(0, |o| o.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_key_packs_into_u64() {
        let k = ConnKey {
            index: 7,
            gen_: NonZeroU32::new(0xabcdef).unwrap(),
        };
        assert_eq!(ConnKey::from_u64(k.to_u64()), Some(k));
        assert_eq!(ConnKey::from_u64(7), None);
    }

    #[test]
    fn outbuf_len_counts_in_flight_and_queued() {
        let mut o = OutBuf::default();
        o.sending.extend_from_slice(b"abcdef");
        o.sent = 4;
        o.queued.extend_from_slice(b"xyz");
        assert_eq!(o.len(), 5);
        o.plain.extend_from_slice(b"pq");
        assert_eq!(o.len(), 7);
    }
}
