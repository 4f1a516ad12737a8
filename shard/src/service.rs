//! The contract between the runtime and what it serves. The runtime owns sockets,
//! buffers, WebSocket framing, timers and the mesh; a `Service` (the MQTT broker, or the
//! WebSocket echo example) gets events and answers through [`Io`].
//!
//! Every callback runs on the shard thread, between two submissions of its ring, and
//! must not block.

use crate::conn::ConnKey;
use crate::io::Io;

/// Bytes that arrived on a connection, as the service sees them: the TCP stream, or an
/// unmasked piece of a WebSocket data message. The slice is the runtime's receive
/// buffer, lent for the duration of the call; copy what must outlive it.
pub struct Data<'a> {
    pub bytes: &'a mut [u8],
    /// WebSocket only: the message is a text message.
    pub text: bool,
    /// WebSocket only: this piece ends a message.
    pub message_end: bool,
}

/// Why a connection is being closed; decides the WebSocket close code the runtime sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The service is done with the connection (after a DISCONNECT, a refusal, …).
    Normal,
    /// The server is shutting down.
    GoingAway,
    /// The peer broke the protocol.
    ProtocolError,
    /// The peer sent something too large.
    TooBig,
    /// The peer sent text that is not UTF-8 (WebSocket) or an invalid payload.
    InvalidPayload,
    /// A deadline passed (handshake, CONNECT, keepalive).
    Timeout,
    /// The peer does not read what it is sent.
    SlowConsumer,
    /// A policy refusal (limits, taken over by another connection).
    Policy,
    /// The socket failed or the peer went away; nothing more can be sent.
    Lost,
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
            CloseReason::Lost => return None,
        })
    }
}

/// What the runtime serves.
pub trait Service: Sized + 'static {
    /// Per-connection state, stored in the runtime's connection slab.
    type ConnState: Default;
    /// What shards send each other over the mesh.
    type Msg: Send + 'static;

    /// A connection is ready for the service: accepted (TCP) or upgraded (WebSocket).
    fn on_open(&mut self, io: &mut Io<Self>, key: ConnKey);

    /// Bytes arrived on an open connection.
    fn on_data(&mut self, io: &mut Io<Self>, key: ConnKey, data: Data<'_>);

    /// The connection is closing (for any reason, the service's own `io.close` included):
    /// its state is handed back, and nothing more will arrive from it. Called once per
    /// `on_open`.
    fn on_close(&mut self, io: &mut Io<Self>, key: ConnKey, state: Self::ConnState);

    /// The deadline set with `io.set_deadline` passed.
    fn on_deadline(&mut self, io: &mut Io<Self>, key: ConnKey);

    /// A message from shard `from` over the mesh.
    fn on_message(&mut self, io: &mut Io<Self>, from: usize, msg: Self::Msg);

    /// Reading from the connection resumes after a back-pressure pause
    /// (`io.pause_if_pressured`): bytes it held back may be taken up now.
    fn on_resume(&mut self, _io: &mut Io<Self>, _key: ConnKey) {}

    /// End of a loop turn, before outbound bytes are flushed and the mesh is rung.
    fn on_turn_end(&mut self, _io: &mut Io<Self>) {}

    /// About once a second (and when woken without work): periodic duties.
    fn on_tick(&mut self, _io: &mut Io<Self>) {}

    /// The process is shutting down: say goodbye to every connection and close it.
    /// The runtime then flushes what was written and exits once all are closed, or
    /// after the close timeout.
    fn on_shutdown(&mut self, io: &mut Io<Self>);
}
