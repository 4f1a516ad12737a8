//! The contract between the runtime and what it serves. The runtime owns sockets,
//! buffers, WebSocket framing, timers and the mesh; a `Service` (the MQTT broker, or the
//! WebSocket echo example) gets events and answers through its [`Io`].
//!
//! Every callback runs on the shard thread, between two submissions of its ring, and
//! must not block.

use std::net::SocketAddr;

use crate::conn::{CloseReason, ConnKey};
use crate::disk::FileDone;
use crate::io;

/// The [`io::Io`] a service `S` is handed: its connection state and message types.
pub type Io<S> = io::Io<<S as Service>::ConnState, <S as Service>::Msg>;

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

/// What the runtime serves.
pub trait Service: Sized + 'static {
    /// Per-connection state, stored in the runtime's connection slab.
    type ConnState: Default;
    /// What shards send each other over the mesh.
    type Msg: Send + 'static;
    /// What other threads ask of the shard over its control channel
    /// (`runtime::Control::Request`), answered by the service as it sees fit (a reply
    /// channel inside the request, say).
    type Request: Send + 'static;

    /// A connection is ready for the service: accepted (TCP) or upgraded (WebSocket).
    fn on_open(&mut self, io: &mut Io<Self>, key: ConnKey);

    /// Bytes arrived on an open connection.
    fn on_data(&mut self, io: &mut Io<Self>, key: ConnKey, data: Data<'_>);

    /// The connection is closing (for any reason, the service's own `io.close` included,
    /// which `reason` names): its state is handed back, and nothing more will arrive from
    /// it. Called once per `on_open`.
    fn on_close(
        &mut self,
        io: &mut Io<Self>,
        key: ConnKey,
        state: Self::ConnState,
        reason: CloseReason,
    );

    /// The deadline set with `io.set_deadline` passed.
    fn on_deadline(&mut self, io: &mut Io<Self>, key: ConnKey);

    /// A message from shard `from` over the mesh.
    fn on_message(&mut self, io: &mut Io<Self>, from: usize, msg: Self::Msg);

    /// Reading from the connection resumes after a back-pressure pause
    /// (`io.pause_if_pressured`): bytes it held back may be taken up now.
    fn on_resume(&mut self, _io: &mut Io<Self>, _key: ConnKey) {}

    /// Everything queued for the connection has been handed to the kernel, as asked with
    /// `io.notify_drained`: the service may write the next batch of a long series.
    fn on_drained(&mut self, _io: &mut Io<Self>, _key: ConnKey) {}

    /// End of a loop turn, before outbound bytes are flushed and the mesh is rung.
    fn on_turn_end(&mut self, _io: &mut Io<Self>) {}

    /// The turn's writes are handed to the ring, `turn_us` µs after the turn began: what
    /// the service handled this turn waited that long for its answers to leave (a service
    /// may record it; nothing may be written now).
    fn on_turn_flushed(&mut self, _turn_us: u64) {}

    /// About once a second (and when woken without work): periodic duties.
    fn on_tick(&mut self, _io: &mut Io<Self>) {}

    /// A file write or sync asked for with `io.write_file` ended; the buffer comes back.
    fn on_file_done(&mut self, _io: &mut Io<Self>, _done: FileDone) {}

    /// A job given to the helper thread (`io.run_blocking`) ended with this result.
    fn on_blocking_done(&mut self, _io: &mut Io<Self>, _result: Self::Msg) {}

    /// During shutdown: whether the service has nothing left to finish (a log to write
    /// out, say). The shard ends once its connections are closed and this says so, or
    /// after the close timeout; never while a file write is in flight.
    fn is_idle(&self) -> bool {
        true
    }

    /// A request from another thread (`runtime::Control::Request`). At most
    /// `runtime::REQUESTS_PER_TURN` are handed over per loop turn; a service that has more
    /// to do for one than a turn should hold does it over several turns (`on_turn_end`,
    /// with `Io::continue_soon` so that the shard does not sleep meanwhile).
    fn on_request(&mut self, io: &mut Io<Self>, request: Self::Request);

    /// The peer address asked for with `Io::request_peer_addr`: `None` if the connection
    /// went away first or the socket could not say.
    fn on_peer_addr(&mut self, _io: &mut Io<Self>, _key: ConnKey, _addr: Option<SocketAddr>) {}

    /// The process is shutting down: say goodbye to every connection and close it.
    /// The runtime then flushes what was written and exits once all are closed, or
    /// after the close timeout.
    fn on_shutdown(&mut self, io: &mut Io<Self>);
}
