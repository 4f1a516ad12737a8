//! What a service may do: write to a connection, close it, set its deadline, pause
//! reading from it, send to other shards. `Io` owns the ring, the connection slab, the
//! timer wheel and the mesh ends; the runtime (`runtime.rs`) drives it from completions.
//!
//! `Io<C, M>` is generic over the service's per-connection state `C` and cross-shard
//! message `M`, not over the service itself, so this module does not depend on
//! `service.rs` (which hands each service its `Io`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use std::os::fd::OwnedFd;

use io_uring::{opcode, types};
use ringmq_proto::ws;
use slab::Slab;

use crate::config::{ListenerKind, ShardConfig};
use crate::conn::{CloseReason, Conn, ConnKey, OutBuf, Transport, flag};
use crate::disk::{Disk, FileSlot, Part, WriteReq};
use crate::helper::{Helper, Job};
use crate::hist::Recorder;
use crate::mesh::links::{MeshLinks, Sent};
use crate::ring::{GEN_MASK, OpKind, Ring};
use crate::stats::RuntimeStats;
use crate::timers::TimerWheel;
use crate::tls::TlsError;

/// What a shard's operation was for, carried in its `user_data` (see [`Token`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    /// Multishot accept on listener number `index`.
    Accept = 1,
    /// Multishot receive on a connection.
    Recv = 2,
    /// A send on a connection.
    Send = 3,
    /// `shutdown(SHUT_WR)` on a connection, the first step of a graceful close.
    Shutdown = 4,
    /// Closing a connection's fixed-file slot, the last step.
    Close = 5,
    /// The read on the shard's doorbell eventfd.
    Doorbell = 6,
    /// Cancellation requests; their completions carry nothing acted on.
    Cancel = 7,
    /// A file write (`index`: the write's entry in `Disk`).
    FileWrite = 8,
    /// The data sync linked to a file write.
    FileSync = 9,
    /// `getsockopt(SO_PEERNAME)` on a new connection (`ShardConfig::peer_addresses`).
    PeerName = 10,
    /// `getsockopt(SO_PEERNAME)` asked for by the service (`Io::request_peer_addr`;
    /// `index` is the request's number).
    PeerAddr = 11,
    /// The read, on the primary ring, of the eventfd the other lanes signal.
    LaneBell = 12,
}

impl OpKind for Op {
    fn to_u8(self) -> u8 {
        self as u8
    }

    fn from_u8(byte: u8) -> Option<Op> {
        Some(match byte {
            1 => Op::Accept,
            2 => Op::Recv,
            3 => Op::Send,
            4 => Op::Shutdown,
            5 => Op::Close,
            6 => Op::Doorbell,
            7 => Op::Cancel,
            8 => Op::FileWrite,
            9 => Op::FileSync,
            10 => Op::PeerName,
            11 => Op::PeerAddr,
            12 => Op::LaneBell,
            _ => return None,
        })
    }
}

/// A shard's token: which operation, for which connection (or listener).
pub(crate) type Token = crate::ring::Token<Op>;

/// The `user_data` of one part of file write `id`.
fn file_token(part: Part, id: u32) -> u64 {
    let op = match part {
        Part::Write => Op::FileWrite,
        Part::Sync => Op::FileSync,
    };
    Token::new(op, id, 0).encode()
}

/// Room for the largest peer address (`sockaddr_in6`).
pub(crate) const PEER_NAME_LEN: usize = 28;

/// Send buffers kept for reuse, and the largest capacity a reused buffer keeps: at most
/// 256 × 2 × 16 KiB = 8 MiB per shard stays allocated after a burst.
const OUTBUF_POOL_MAX: usize = 256;
const OUTBUF_KEEP_CAPACITY: usize = 16 * 1024;
/// Peer-address requests in flight at once per shard (`Io::request_peer_addr`); each holds
/// a 28-byte buffer until the kernel has written the address.
pub const MAX_PEER_REQUESTS: usize = 4096;

/// How loaded a service says it is (`Io::set_service_load`), beside what the runtime
/// measures itself (outbound bytes, the mesh's backlog), for back-pressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceLoad {
    /// Back-pressure may end as far as the service is concerned.
    #[default]
    Light,
    /// Not loaded enough to pause more connections, but too loaded to resume paused ones.
    Heavy,
    /// The shard is under pressure: connections that feed it are paused.
    Overloaded,
}

pub struct Io<C, M> {
    /// The shard's rings ("lanes"), each with its own fixed-file table, so that one thread
    /// holds more connections than one table may (the kernel caps a table at the
    /// open-file limit). Lane 0, the primary, also carries the file writes, the doorbell
    /// and the other lanes' bell; the thread sleeps on it alone.
    pub(crate) lanes: Vec<Ring>,
    /// Connections in each lane's table.
    pub(crate) lane_conns: Vec<u32>,
    pub(crate) conns: Slab<Conn<C>>,
    pub(crate) cfg: Arc<ShardConfig>,
    pub(crate) stats: Arc<RuntimeStats>,
    pub(crate) mesh: MeshLinks<M>,
    pub(crate) timers: TimerWheel,
    clock_origin: Instant,
    /// Unix time at `clock_origin`, in ms.
    clock_origin_unix_ms: u64,
    now_ms: u64,
    /// Connections with bytes to send this turn.
    pub(crate) flush_list: Vec<u32>,
    /// Connections whose service must hear `on_close`, and why they close.
    pub(crate) closed_list: Vec<(ConnKey, CloseReason)>,
    /// Connections whose receive must be posted again.
    pub(crate) recv_list: Vec<u32>,
    /// Boxes, because connections hold `Option<Box<OutBuf>>` (8 bytes when idle): a
    /// pooled box is reused without allocating.
    #[allow(clippy::vec_box)]
    outbuf_pool: Vec<Box<OutBuf>>,
    next_gen: NonZeroU32,
    pub(crate) shutting_down: bool,
    /// The runtime's histograms (`hist::RUNTIME`).
    pub(crate) hists: Recorder,
    /// Outbound bytes queued on every connection of the shard, in flight included.
    out_total: usize,
    /// What the service last said of its load.
    service_load: ServiceLoad,
    /// Connections whose reading is paused for back-pressure, and since when.
    pub(crate) paused: Vec<(ConnKey, u64)>,
    /// Connections resumed this turn; the service hears `on_resume` for each.
    pub(crate) resumed: Vec<ConnKey>,
    /// File writes and syncs in flight, and the slots of the files.
    pub(crate) disk: Disk,
    /// Entries a file write adds to the submission queue.
    file_sqes: Vec<io_uring::squeue::Entry>,
    /// The helper thread for work that may block.
    pub(crate) helper: Helper<M>,
    /// When the service wants a turn even if nothing happens (see `wake_at`).
    pub(crate) wake_at: Option<u64>,
    /// Connections whose reading stopped for a rate limit, and when it may go on (ms).
    pub(crate) throttled: Vec<(ConnKey, u64)>,
    /// Peer addresses of open connections (only with `ShardConfig::peer_addresses`).
    pub(crate) peers: HashMap<ConnKey, IpAddr>,
    /// Where the kernel writes a new connection's peer address while its `PeerName`
    /// operation is in flight (boxed: the buffer must not move meanwhile).
    pub(crate) peer_lookups: HashMap<ConnKey, Box<[u8; PEER_NAME_LEN]>>,
    /// Peer-address requests in flight: the request's number (the operation's token
    /// index) → the connection it is for, and where the kernel writes the address.
    pub(crate) peer_requests: Slab<(ConnKey, Box<[u8; PEER_NAME_LEN]>)>,
    /// The service has work left for the next turn: the shard must not sleep.
    pub(crate) continue_soon: bool,
    /// Connections whose outbound queue emptied after the service asked to hear of it;
    /// the service hears `on_drained` for each.
    pub(crate) drained: Vec<ConnKey>,
    /// A shard's state never leaves its thread (shared nothing); this marker
    /// makes that a compile-time fact.
    _not_send: std::marker::PhantomData<std::rc::Rc<()>>,
}

/// The connection `key` names, if its slot still holds that one. It borrows only the
/// table, so the runtime's other fields stay usable beside it.
fn live_mut<C>(conns: &mut Slab<Conn<C>>, key: ConnKey) -> Option<&mut Conn<C>> {
    conns
        .get_mut(key.index as usize)
        .filter(|c| c.gen_ == key.gen_)
}

impl<C: Default, M: Send + 'static> Io<C, M> {
    pub(crate) fn new(
        ring: Ring,
        cfg: Arc<ShardConfig>,
        stats: Arc<RuntimeStats>,
        mesh: MeshLinks<M>,
        hists: Recorder,
    ) -> std::io::Result<Self> {
        let clock_origin = Instant::now();
        let clock_origin_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let disk = Disk::new(&ring, cfg.files_per_shard)?;
        let helper = Helper::new(mesh.id(), mesh.doorbells().clone());
        Ok(Io {
            lanes: vec![ring],
            lane_conns: vec![0],
            conns: Slab::new(),
            cfg,
            stats,
            mesh,
            timers: TimerWheel::new(100, 1024, 0),
            clock_origin,
            clock_origin_unix_ms,
            now_ms: 0,
            flush_list: Vec::new(),
            closed_list: Vec::new(),
            recv_list: Vec::new(),
            outbuf_pool: Vec::new(),
            next_gen: NonZeroU32::MIN,
            shutting_down: false,
            hists,
            out_total: 0,
            service_load: ServiceLoad::Light,
            paused: Vec::new(),
            resumed: Vec::new(),
            disk,
            file_sqes: Vec::new(),
            helper,
            wake_at: None,
            throttled: Vec::new(),
            peers: HashMap::new(),
            peer_lookups: HashMap::new(),
            peer_requests: Slab::new(),
            continue_soon: false,
            drained: Vec::new(),
            _not_send: std::marker::PhantomData,
        })
    }

    /// Operations in flight on all the shard's lanes.
    pub(crate) fn in_flight(&self) -> usize {
        self.lanes.iter().map(Ring::in_flight).sum()
    }

    pub(crate) fn update_clock(&mut self) {
        self.now_ms = self.clock_origin.elapsed().as_millis() as u64;
    }

    /// Outbound bytes queued on the whole shard.
    pub fn out_bytes(&self) -> usize {
        self.out_total
    }

    /// Whether the shard has more to send than it keeps up with: its outbound queue is
    /// over `pressure_high`, the service says it is overloaded, or a peer shard's ring is
    /// full and messages wait for it.
    pub fn under_pressure(&self) -> bool {
        self.out_total > self.cfg.pressure_high
            || self.service_load == ServiceLoad::Overloaded
            || self.mesh.backlog_total() > self.cfg.mesh_capacity
    }

    /// What the service says of its own load; it counts towards the shard's pressure
    /// until the service says otherwise.
    pub fn set_service_load(&mut self, load: ServiceLoad) {
        self.service_load = load;
    }

    /// Back-pressure: when the shard is under pressure, pauses reading `key` (a
    /// connection that just fed it) until the pressure is gone or `pause_max_ms` has
    /// passed (longer while messages wait for a full peer ring: see `resume_paused`).
    /// Returns whether it paused. A paused connection is still read, and the service
    /// decides what to take up of what it sends meanwhile (its acknowledgements, say)
    /// and what to hold; when it holds as much as it will, it stops reading altogether
    /// ([`Io::stop_reading`]).
    pub fn pause_if_pressured(&mut self, key: ConnKey) -> bool {
        if !self.under_pressure() {
            return false;
        }
        let now = self.now_ms;
        let Some(c) = self.conn_mut(key) else {
            return false;
        };
        // A connection whose peer has closed sends nothing more: pausing it would only
        // delay its end.
        if c.has(flag::PAUSED) || c.has(flag::CLOSING) || c.has(flag::READ_DONE) {
            return false;
        }
        c.set(flag::PAUSED);
        self.paused.push((key, now));
        true
    }

    /// Stops reading from a paused connection until its pause ends: the service holds
    /// as much of its input as it will. The kernel's socket buffer holds the rest, and
    /// TCP flow control slows the sender. Returns whether reading stopped now (false if
    /// it had already, or the connection is not paused).
    pub fn stop_reading(&mut self, key: ConnKey) -> bool {
        let Some(c) = self.conn_mut(key) else {
            return false;
        };
        if !c.has(flag::PAUSED) || c.has(flag::READ_HELD) {
            return false;
        }
        c.set(flag::READ_HELD);
        if c.has(flag::RECV_ARMED) {
            self.cancel_recv(key);
        }
        true
    }

    /// Whether reading from the connection has stopped (it is paused and the service holds
    /// as much of its input as it will): its silence is then the shard's doing.
    pub fn reading_stopped(&self, key: ConnKey) -> bool {
        self.conn(key).is_some_and(|c| c.has(flag::READ_HELD))
    }

    /// Whether reading from the connection is paused, for back-pressure or a rate limit:
    /// the service holds what it sends (acknowledgements aside) until `on_resume`.
    pub fn is_paused(&self, key: ConnKey) -> bool {
        self.conn(key)
            .is_some_and(|c| c.has(flag::PAUSED) || c.has(flag::THROTTLED))
    }

    /// A rate limit: stops reading from `key` until `until_ms` (the shard clock), whatever
    /// the shard's pressure. What it already sent and the service has not taken up is held
    /// as in a pause; the kernel's socket buffer holds the rest, and TCP slows the sender.
    /// Returns whether reading stopped now (false if it already had, or the connection is
    /// closing or its peer is gone).
    pub fn throttle(&mut self, key: ConnKey, until_ms: u64) -> bool {
        let Some(c) = self.conn_mut(key) else {
            return false;
        };
        if c.has(flag::CLOSING) || c.has(flag::READ_DONE) {
            return false;
        }
        if c.has(flag::THROTTLED) {
            if let Some(entry) = self.throttled.iter_mut().find(|(k, _)| *k == key) {
                entry.1 = entry.1.max(until_ms);
            }
            return false;
        }
        c.set(flag::THROTTLED | flag::READ_HELD);
        let armed = c.has(flag::RECV_ARMED);
        self.throttled.push((key, until_ms));
        self.stats.reads_throttled.add(1);
        if armed {
            self.cancel_recv(key);
        }
        true
    }

    /// The peer's IP address, when the shard learns them (`ShardConfig::peer_addresses`)
    /// and the kernel told it.
    pub fn peer_ip(&self, key: ConnKey) -> Option<IpAddr> {
        self.peers.get(&key).copied()
    }

    /// Resumes paused connections once the pressure is gone, or those paused longest
    /// ago than `pause_max_ms` (so a few stuck consumers cannot stall a shard).
    pub(crate) fn resume_paused(&mut self) {
        if self.paused.is_empty() {
            return;
        }
        let low = self.out_total < self.cfg.pressure_low
            && self.service_load == ServiceLoad::Light
            && self.mesh.backlog_total() <= self.cfg.mesh_capacity / 2;
        // The mesh always drains (a peer takes from its rings at least every
        // `pause_max_ms`), so while it is backed up paused connections stay paused past the
        // deadline: resuming them would only grow the overflow.
        let mesh_backed_up = self.mesh.backlog_total() > self.cfg.mesh_capacity;
        let deadline = self.now_ms.saturating_sub(self.cfg.pause_max_ms);
        let mut paused = std::mem::take(&mut self.paused);
        paused.retain(|&(key, since)| {
            if !low && (since > deadline || mesh_backed_up) {
                return true;
            }
            // A rate limit still in force keeps reading stopped; its end resumes.
            self.lift_read_hold(key, flag::PAUSED, flag::THROTTLED);
            false
        });
        paused.append(&mut self.paused);
        self.paused = paused;
    }

    /// Lifts the rate limits that are due (`throttle`); a connection also paused for
    /// back-pressure stays paused.
    pub(crate) fn resume_throttled(&mut self) {
        if self.throttled.is_empty() {
            return;
        }
        let now = self.now_ms;
        let mut throttled = std::mem::take(&mut self.throttled);
        throttled.retain(|&(key, until)| {
            if until > now {
                return true;
            }
            self.lift_read_hold(key, flag::THROTTLED, flag::PAUSED);
            false
        });
        throttled.append(&mut self.throttled);
        self.throttled = throttled;
    }

    /// Ends one reason (`lifted`, PAUSED or THROTTLED) for a connection's reading to stand
    /// still; unless the other one (`still`) holds it too, reading resumes, with a receive
    /// posted if none is.
    fn lift_read_hold(&mut self, key: ConnKey, lifted: u32, still: u32) {
        let Some(c) = live_mut(&mut self.conns, key) else {
            return;
        };
        c.clear(lifted);
        if c.has(still) {
            return;
        }
        c.clear(flag::READ_HELD);
        self.resumed.push(key);
        if !c.has(flag::RECV_ARMED) && !c.has(flag::READ_DONE) && !c.has(flag::NEEDS_RECV) {
            c.set(flag::NEEDS_RECV);
            self.recv_list.push(key.index);
        }
    }

    /// How long until the first rate limit is due to be lifted, if any is in force.
    pub(crate) fn next_throttle_end_ms(&self) -> Option<u64> {
        self.throttled
            .iter()
            .map(|&(_, until)| until.saturating_sub(self.now_ms))
            .min()
    }

    /// Milliseconds since the shard started, read once per loop turn.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The Unix time (ms) of shard time `at_ms` (a value `now_ms` gave).
    pub fn unix_ms(&self, at_ms: u64) -> u64 {
        self.clock_origin_unix_ms + at_ms
    }

    /// The service has work left that it does over the next turns: the shard takes its
    /// next turn without sleeping. Holds for this turn only.
    pub fn continue_soon(&mut self) {
        self.continue_soon = true;
    }

    /// Asks the socket of an open connection for its peer's address; the answer comes to
    /// `Service::on_peer_addr` in a later turn. The runtime keeps addresses only for the
    /// per-address limits (`ShardConfig::peer_addresses`, and then the IP only, `peer_ip`),
    /// so the socket is asked as a new connection's is: `getsockopt(SO_PEERNAME)` on the
    /// ring. Returns false, and nothing comes, when the connection is not open or
    /// [`MAX_PEER_REQUESTS`] are in flight already.
    pub fn request_peer_addr(&mut self, key: ConnKey) -> bool {
        if self.peer_requests.len() >= MAX_PEER_REQUESTS {
            return false;
        }
        let Some((slot, listener, lane)) = self
            .conn(key)
            .filter(|c| !c.has(flag::CLOSING))
            .map(|c| (c.slot, c.listener as usize, c.lane as usize))
        else {
            return false;
        };
        let request = self.peer_requests.vacant_key();
        let token = Token::new(Op::PeerAddr, request as u32, 0);
        let mut buf = Box::new([0u8; PEER_NAME_LEN]);
        let e = self.peer_name_op(slot, listener, &mut buf, token);
        // The buffer lives in `peer_requests` until the operation completes.
        let inserted = self.peer_requests.insert((key, buf));
        debug_assert_eq!(inserted, request);
        self.lanes[lane].push(e);
        true
    }

    /// `getsockopt(SO_PEERNAME)` on the ring for the socket in `slot`, so the shard never
    /// blocks; `buf` must stay where it is until the operation completes. The kernel
    /// writes no more than the length asked for and refuses a length above the address's
    /// own, so it is asked for the size of the listener's address family.
    pub(crate) fn peer_name_op(
        &self,
        slot: u32,
        listener: usize,
        buf: &mut [u8; PEER_NAME_LEN],
        token: Token,
    ) -> io_uring::squeue::Entry {
        let len = match self.cfg.listeners[listener].addr {
            std::net::SocketAddr::V4(_) => std::mem::size_of::<libc::sockaddr_in>(),
            std::net::SocketAddr::V6(_) => std::mem::size_of::<libc::sockaddr_in6>(),
        };
        opcode::GetSockOpt::new(
            types::Fixed(slot),
            libc::SOL_SOCKET as u32,
            libc::SO_PEERNAME as u32,
            buf.as_mut_ptr().cast(),
            len as u32,
        )
        .build()
        .user_data(token.encode())
    }

    pub fn shard_id(&self) -> usize {
        self.mesh.id()
    }

    pub fn shards(&self) -> usize {
        self.mesh.shards()
    }

    pub fn config(&self) -> &ShardConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &RuntimeStats {
        &self.stats
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Open connections on this shard.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    fn conn(&self, key: ConnKey) -> Option<&Conn<C>> {
        self.conns
            .get(key.index as usize)
            .filter(|c| c.gen_ == key.gen_)
    }

    fn conn_mut(&mut self, key: ConnKey) -> Option<&mut Conn<C>> {
        live_mut(&mut self.conns, key)
    }

    /// The service state of an open connection (`None` once it is closing).
    pub fn state(&mut self, key: ConnKey) -> Option<&mut C> {
        self.conn_mut(key)
            .filter(|c| !c.has(flag::CLOSING))
            .map(|c| &mut c.state)
    }

    /// Whether the connection is open and not closing.
    pub fn is_open(&self, key: ConnKey) -> bool {
        self.conn(key).is_some_and(|c| !c.has(flag::CLOSING))
    }

    /// Whether the connection was accepted over `max_connections` and must be refused.
    pub fn is_over_limit(&self, key: ConnKey) -> bool {
        self.conn(key).is_some_and(|c| c.has(flag::OVER_LIMIT))
    }

    /// What the listener that accepted this connection speaks.
    pub fn listener_kind(&self, key: ConnKey) -> Option<&ListenerKind> {
        let c = self.conn(key)?;
        Some(&self.cfg.listeners.get(c.listener as usize)?.kind)
    }

    /// Whether the connection speaks TLS (MQTT over TLS, secure WebSocket).
    pub fn is_tls(&self, key: ConnKey) -> bool {
        self.conn(key).is_some_and(|c| c.has(flag::TLS))
    }

    /// The subject common name (CN) of the client certificate the TLS handshake verified,
    /// if the client sent one (`--tls-client-ca`) and it has a CN. Known from `on_open` on,
    /// for as long as the connection is open.
    pub fn peer_certificate_cn(&self, key: ConnKey) -> Option<&str> {
        match &self.conn(key)?.transport {
            Transport::Tls(t) => t.peer_cn.as_deref(),
            _ => None,
        }
    }

    /// Outbound bytes queued on the connection, in flight included.
    pub fn out_len(&self, key: ConnKey) -> usize {
        self.conn(key).map_or(0, |c| c.out_len())
    }

    /// Queues `bytes` for the connection: on TCP as they are, on a WebSocket byte stream
    /// as one binary message. Returns false when the connection is gone or closing, or
    /// when these bytes push it past the hard outbound limit (it is then closed as a slow
    /// consumer).
    pub fn write(&mut self, key: ConnKey, bytes: &[u8]) -> bool {
        self.write_with(key, bytes.len(), |out| out.copy_from_slice(bytes))
    }

    /// Like `write`, with the bytes produced in place by `fill` (given exactly `len`
    /// bytes to fill), so a packet is encoded straight into the send buffer.
    pub fn write_with(&mut self, key: ConnKey, len: usize, fill: impl FnOnce(&mut [u8])) -> bool {
        self.write_vec(key, len, |q| {
            let start = q.len();
            q.resize(start + len, 0);
            fill(&mut q[start..]);
            true
        })
    }

    /// Like `write_with`, with `write` appending the `len` bytes to the send buffer itself
    /// (an encoder that appends to a `Vec`): nothing is zero-filled first. `write` returns
    /// whether it succeeded; one that fails, or appends other than `len` bytes, has its
    /// bytes taken back (and, on a WebSocket, the frame head that announced them), and the
    /// connection is closed (`CloseReason::WriteFailed`, counted in `write_errors`): the
    /// peer never sees a frame or packet that is not what its head says.
    pub fn write_vec(
        &mut self,
        key: ConnKey,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> bool {
        let hard = self.cfg.out_hard_limit;
        let Some(conn) = self.conn_mut(key) else {
            return false;
        };
        if conn.has(flag::CLOSING) || conn.has(flag::WRITE_FAILED) {
            return false;
        }
        if conn.out_len() + len > hard {
            self.close(key, CloseReason::SlowConsumer);
            return false;
        }
        let opcode = conn
            .has(flag::WS_BYTE_STREAM)
            .then_some(ws::frame::Opcode::BINARY);
        if !self.append_vec(key, opcode, len, write) {
            self.stats.write_errors.add(1);
            self.close(key, CloseReason::WriteFailed);
            return false;
        }
        true
    }

    /// Asks for `on_drained` once everything queued for the connection has been handed to
    /// the kernel (at once, in this turn, if nothing is queued now): a service that writes
    /// a long series at the pace the client reads it (retained messages for a new
    /// subscription, say) writes a batch and goes on from there.
    pub fn notify_drained(&mut self, key: ConnKey) {
        let Some(c) = self.conn_mut(key) else { return };
        if c.has(flag::CLOSING) || c.has(flag::WANT_DRAINED) {
            return;
        }
        if c.out_len() == 0 {
            self.drained.push(key);
        } else {
            c.set(flag::WANT_DRAINED);
        }
    }

    /// Queues one WebSocket message (`WsFraming::Messages` listeners; on other
    /// connections the bytes are written as they are).
    pub fn write_message(&mut self, key: ConnKey, text: bool, bytes: &[u8]) -> bool {
        let Some(conn) = self.conn_mut(key) else {
            return false;
        };
        if conn.has(flag::CLOSING) || conn.has(flag::WRITE_FAILED) {
            return false;
        }
        let opcode = match (conn.has(flag::WS), text) {
            (true, true) => Some(ws::frame::Opcode::TEXT),
            (true, false) => Some(ws::frame::Opcode::BINARY),
            (false, _) => None,
        };
        self.append(key, opcode, bytes.len(), |out| out.copy_from_slice(bytes));
        true
    }

    /// Appends `len` bytes (framed with `opcode` when given) to the connection's queue and
    /// puts it on the flush list. No limit check: callers decide.
    pub(crate) fn append(
        &mut self,
        key: ConnKey,
        opcode: Option<ws::frame::Opcode>,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) {
        self.append_vec(key, opcode, len, |q| {
            let start = q.len();
            q.resize(start + len, 0);
            fill(&mut q[start..]);
            true
        });
    }

    /// Appends `len` bytes (framed with `opcode` when given) that `write` pushes onto the
    /// connection's queue, and puts the connection on the flush list. No limit check.
    /// Returns false, with the queue as it was before, if `write` failed or did not append
    /// exactly `len` bytes.
    pub(crate) fn append_vec(
        &mut self,
        key: ConnKey,
        opcode: Option<ws::frame::Opcode>,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> bool {
        let pool = &mut self.outbuf_pool;
        let Some(conn) = live_mut(&mut self.conns, key) else {
            return false;
        };
        let out = conn
            .out
            .get_or_insert_with(|| pool.pop().unwrap_or_default());
        // Over TLS the bytes wait as plaintext; `start_send` seals them.
        let q = if conn.flags & flag::TLS != 0 {
            &mut out.plain
        } else {
            &mut out.queued
        };
        let before = q.len();
        q.reserve(len + ws::frame::MAX_HEAD_LEN);
        if let Some(op) = opcode {
            let mut head = [0u8; ws::frame::MAX_HEAD_LEN];
            let n = ws::frame::encode_head(true, op, len as u64, None, &mut head);
            q.extend_from_slice(&head[..n]);
        }
        let start = q.len();
        if !write(q) || q.len() - start != len {
            // A frame head (or an MQTT length) already promised `len` bytes: what was
            // appended goes, so the stream holds only whole, truthful frames.
            q.truncate(before);
            return false;
        }
        let added = q.len() - before;
        if !conn.has(flag::QUEUED_FLUSH) {
            conn.set(flag::QUEUED_FLUSH);
            self.flush_list.push(key.index);
        }
        self.out_total += added;
        true
    }

    /// Queues TLS records (the handshake's, alerts) as they are, behind what is queued.
    pub(crate) fn append_records(&mut self, key: ConnKey, records: &[u8]) {
        let pool = &mut self.outbuf_pool;
        let Some(conn) = live_mut(&mut self.conns, key) else {
            return;
        };
        if conn.has(flag::WRITE_FAILED) {
            return;
        }
        let out = conn
            .out
            .get_or_insert_with(|| pool.pop().unwrap_or_default());
        out.queued.extend_from_slice(records);
        if !conn.has(flag::QUEUED_FLUSH) {
            conn.set(flag::QUEUED_FLUSH);
            self.flush_list.push(key.index);
        }
        self.out_total += records.len();
    }

    /// Starts closing the connection: nothing more reaches the service, queued bytes are
    /// flushed (after a WebSocket close frame for `reason`), then the socket is shut down
    /// and closed. The service hears `on_close` after the current callback. A close for
    /// a timeout, a protocol violation or a slow consumer is counted here, once.
    pub fn close(&mut self, key: ConnKey, reason: CloseReason) {
        let close_timeout = self.cfg.close_timeout_ms;
        let now = self.now_ms;
        let stats = self.stats.clone();
        let shard = self.mesh.id();
        let Some(conn) = self.conn_mut(key) else {
            return;
        };
        if conn.has(flag::CLOSING) {
            return;
        }
        conn.set(flag::CLOSING);
        match reason {
            CloseReason::Timeout => stats.disconnected_timeout.add(1),
            CloseReason::ProtocolError | CloseReason::TooBig | CloseReason::InvalidPayload => {
                stats.disconnected_protocol_error.add(1)
            }
            CloseReason::SlowConsumer => {
                stats.disconnected_slow_consumer.add(1);
                tracing::info!(
                    shard,
                    conn = key.index,
                    "connection closed: it does not read what it is sent (slow consumer)"
                );
            }
            _ => {}
        }
        let ws_close = if conn.has(flag::WS) && !conn.has(flag::WS_CLOSE_SENT) {
            reason.ws_code()
        } else {
            None
        };
        let was_open = conn.has(flag::OPEN);
        if let Some(code) = ws_close {
            conn.set(flag::WS_CLOSE_SENT);
            let mut frame = [0u8; ws::frame::MAX_HEAD_LEN + 2];
            let mut head = [0u8; ws::frame::MAX_HEAD_LEN];
            let hn = ws::frame::encode_head(true, ws::frame::Opcode::CLOSE, 2, None, &mut head);
            frame[..hn].copy_from_slice(&head[..hn]);
            frame[hn..hn + 2].copy_from_slice(&code.to_be_bytes());
            self.append(key, None, hn + 2, |out| {
                out.copy_from_slice(&frame[..hn + 2])
            });
        }
        if was_open {
            self.closed_list.push((key, reason));
        }
        self.set_deadline_raw(key, now + close_timeout);
        self.progress_close(key);
    }

    /// Sets when `on_deadline` fires for the connection (replacing any earlier deadline).
    pub fn set_deadline(&mut self, key: ConnKey, at_ms: u64) {
        if self.is_open(key) {
            self.set_deadline_raw(key, at_ms);
        }
    }

    /// Removes the connection's deadline.
    pub fn clear_deadline(&mut self, key: ConnKey) {
        if let Some(c) = self.conn_mut(key)
            && !c.has(flag::CLOSING)
        {
            c.deadline_ms = 0;
        }
    }

    /// Deadlines are lazy: a connection keeps one live wheel entry (`timer_at`). A later
    /// deadline just moves `deadline_ms` (the entry re-arms itself when it fires); an
    /// earlier one adds an entry, and the one it replaces is ignored when it fires.
    pub(crate) fn set_deadline_raw(&mut self, key: ConnKey, at_ms: u64) {
        let Some(c) = live_mut(&mut self.conns, key) else {
            return;
        };
        c.deadline_ms = at_ms.max(1);
        if !c.has(flag::TIMER_ARMED) || at_ms < c.timer_at {
            c.set(flag::TIMER_ARMED);
            c.timer_at = c.deadline_ms;
            self.timers.insert(c.deadline_ms, key.to_u64());
        }
    }

    /// Sends a message to shard `to` (never this shard).
    pub fn send_to_shard(&mut self, to: usize, msg: M) -> Sent {
        self.stats.mesh_sent.add(1);
        let sent = self.mesh.send(to, msg);
        if sent == Sent::Overflow {
            self.stats.mesh_backpressure.add(1);
        }
        sent
    }

    /// Messages for shard `to` waiting because its ring is full.
    pub fn mesh_backlog(&self, to: usize) -> usize {
        self.mesh.backlog(to)
    }

    /// Every open (not closing) connection, for shutdown and periodic sweeps.
    pub fn open_keys(&self) -> Vec<ConnKey> {
        self.conns
            .iter()
            .filter(|(_, c)| !c.has(flag::CLOSING))
            .map(|(i, c)| ConnKey {
                index: i as u32,
                gen_: c.gen_,
            })
            .collect()
    }

    /// Puts an open file in one of the shard's file slots (`disk::FILE_SLOTS` of them),
    /// for [`Io::write_file`]. The slot holds its own reference: `fd` is closed here.
    pub fn register_file(&mut self, fd: OwnedFd) -> std::io::Result<FileSlot> {
        self.disk.register(&self.lanes[0], fd)
    }

    /// Empties a file slot. Writes in flight on the file finish normally.
    pub fn unregister_file(&mut self, slot: FileSlot) -> std::io::Result<()> {
        self.disk.unregister(&self.lanes[0], slot)
    }

    /// Writes `buf` at `offset` of the file in `slot`, then (`sync`) syncs its data
    /// (`fdatasync`, linked so it starts once the write is done); an empty `buf` with
    /// `sync` is a sync alone. The runtime keeps `buf` until the write ends and hands it
    /// back with the outcome in `Service::on_file_done`, tagged `tag`. Submitted with the
    /// turn's other operations.
    pub fn write_file(&mut self, slot: FileSlot, offset: u64, buf: Vec<u8>, sync: bool, tag: u64) {
        let mut sqes = std::mem::take(&mut self.file_sqes);
        sqes.clear();
        let w = WriteReq {
            slot,
            offset,
            buf,
            sync,
            tag,
        };
        self.disk.start(w, file_token, &mut sqes);
        self.lanes[0].push_all(&sqes);
        self.file_sqes = sqes;
    }

    /// File writes (and syncs) in flight.
    pub fn files_in_flight(&self) -> usize {
        self.disk.in_flight()
    }

    /// Runs `job` on the shard's helper thread (started on first use), for work that may
    /// block: its result comes back to `Service::on_blocking_done` in a later turn. Jobs
    /// run one at a time, in order. The job comes back if the helper's queue is full
    /// (`helper::HELPER_QUEUE`).
    pub fn run_blocking(&mut self, job: Job<M>) -> Result<(), Job<M>> {
        self.helper.run(job)
    }

    /// Jobs given to the helper thread whose results have not been handed back yet.
    pub fn blocking_pending(&self) -> usize {
        self.helper.pending()
    }

    /// Asks for a loop turn by `at_ms` (shard clock) even if nothing else happens; good
    /// for this turn's wait only (a service asks again each turn it needs one).
    pub fn wake_at(&mut self, at_ms: u64) {
        self.wake_at = Some(self.wake_at.map_or(at_ms, |w| w.min(at_ms)));
    }

    // ---- runtime side ----

    /// A completion of a file write or sync.
    pub(crate) fn on_file_cqe(&mut self, token: Token, result: i32) {
        let part = if token.op == Op::FileSync {
            Part::Sync
        } else {
            Part::Write
        };
        let mut sqes = std::mem::take(&mut self.file_sqes);
        sqes.clear();
        self.disk
            .complete(token.index, part, result, file_token, &mut sqes);
        if !sqes.is_empty() {
            self.lanes[0].push_all(&sqes);
        }
        self.file_sqes = sqes;
    }

    pub(crate) fn new_conn(&mut self, slot: u32, lane: u8, listener: u8, state: C) -> ConnKey {
        let gen_ = self.next_gen;
        self.next_gen = NonZeroU32::new((gen_.get() + 1) & GEN_MASK).unwrap_or(NonZeroU32::MIN);
        let transport = match self.cfg.listeners[listener as usize].kind {
            ListenerKind::Tcp => Transport::Tcp,
            ListenerKind::WebSocket(_) => Transport::WsHandshake(Box::default()),
        };
        let index = self.conns.insert(Conn {
            gen_,
            slot,
            flags: 0,
            listener,
            lane,
            transport,
            out: None,
            deadline_ms: 0,
            timer_at: 0,
            state,
        }) as u32;
        self.lane_conns[lane as usize] += 1;
        ConnKey { index, gen_ }
    }

    pub(crate) fn key_of(&self, token: Token) -> Option<ConnKey> {
        let c = self.conns.get(token.index as usize)?;
        (c.gen_.get() & GEN_MASK == token.gen_).then_some(ConnKey {
            index: token.index,
            gen_: c.gen_,
        })
    }

    pub(crate) fn conn_raw(&mut self, key: ConnKey) -> Option<&mut Conn<C>> {
        self.conn_mut(key)
    }

    pub(crate) fn arm_recv(&mut self, key: ConnKey, group: u16) {
        let Some(c) = self.conn_mut(key) else { return };
        if c.has(flag::RECV_ARMED) || c.has(flag::READ_DONE) {
            return;
        }
        if c.has(flag::READ_HELD) {
            // Posted again when the pause ends (`resume_paused`).
            c.clear(flag::NEEDS_RECV);
            return;
        }
        c.set(flag::RECV_ARMED);
        c.clear(flag::NEEDS_RECV);
        let lane = c.lane as usize;
        let e = opcode::RecvMulti::new(types::Fixed(c.slot), group)
            .build()
            .user_data(Token::new(Op::Recv, key.index, key.gen_.get()).encode());
        self.lanes[lane].push(e);
    }

    /// Hands queued bytes to the kernel for every connection on the flush list.
    pub(crate) fn flush_sends(&mut self) {
        let list = std::mem::take(&mut self.flush_list);
        for &index in &list {
            let Some(c) = self.conns.get_mut(index as usize) else {
                continue;
            };
            c.clear(flag::QUEUED_FLUSH);
            let key = ConnKey {
                index,
                gen_: c.gen_,
            };
            self.start_send(key);
        }
        let mut list = list;
        list.clear();
        if self.flush_list.is_empty() {
            self.flush_list = list;
        }
    }

    fn start_send(&mut self, key: ConnKey) {
        let Some(c) = self.conn_mut(key) else { return };
        if c.has(flag::SEND_INFLIGHT) || c.has(flag::CLOSE_SENT) {
            return;
        }
        if c.has(flag::TLS)
            && let Err(e) = self.seal(key)
        {
            self.tls_failed(key, &e);
            return;
        }
        let Some(c) = self.conn_mut(key) else { return };
        let (slot, lane) = (c.slot, c.lane as usize);
        let Some(out) = c.out.as_mut() else { return };
        if out.sent == out.sending.len() {
            out.sending.clear();
            out.sent = 0;
            std::mem::swap(&mut out.sending, &mut out.queued);
        }
        if out.sending.is_empty() {
            return;
        }
        let pending = &out.sending[out.sent..];
        let len = pending.len().min(u32::MAX as usize) as u32;
        let e = opcode::Send::new(types::Fixed(slot), pending.as_ptr(), len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(Token::new(Op::Send, key.index, key.gen_.get()).encode());
        c.set(flag::SEND_INFLIGHT);
        self.lanes[lane].push(e);
    }

    /// Seals a TLS connection's staged plaintext into records behind what is queued (with
    /// a close_notify once it is closing).
    fn seal(&mut self, key: ConnKey) -> Result<(), TlsError> {
        let pool = &mut self.outbuf_pool;
        let Some(c) = live_mut(&mut self.conns, key) else {
            return Ok(());
        };
        let closing = c.has(flag::CLOSING);
        let has_plain = c.out.as_ref().is_some_and(|o| !o.plain.is_empty());
        let Transport::Tls(t) = &mut c.transport else {
            return Ok(());
        };
        let owes = closing && t.owes_close_notify();
        if !has_plain && !owes {
            return Ok(());
        }
        let Some(pump) = t.pump.as_mut() else {
            return Ok(());
        };
        let out = c.out.get_or_insert_with(|| pool.pop().unwrap_or_default());
        let before = out.queued.len();
        let sealed = pump.seal(&out.plain, closing, &mut out.queued);
        let added = out.queued.len() - before;
        // Sealed, or never to be (the session failed): the plaintext is done with. Not
        // yet (the handshake goes on): it waits.
        let done = if matches!(sealed, Ok(false)) {
            0
        } else {
            let n = out.plain.len();
            out.plain.clear();
            n
        };
        self.out_total = self.out_total + added - done;
        sealed.map(|_| ())
    }

    /// A TLS session failed: what rustls answered (an alert) is sent, nothing more is
    /// read, and the connection closes.
    pub(crate) fn tls_failed(&mut self, key: ConnKey, e: &TlsError) {
        let Some(c) = self.conn_mut(key) else { return };
        // No session at all yet, or one that had not finished its handshake.
        let handshaking = match &c.transport {
            Transport::Tls(t) => t.handshaking(),
            _ => true,
        };
        c.set(flag::READ_DONE);
        if handshaking {
            self.stats.tls_handshake_failed.add(1);
        } else {
            self.stats.tls_errors.add(1);
        }
        crate::tls::log_failure(self.shard_id(), handshaking, e);
        self.close(key, CloseReason::TlsFailed);
    }

    pub(crate) fn on_send_done(&mut self, key: ConnKey, result: i32) {
        let stats = self.stats.clone();
        if self.conn(key).is_none() {
            return;
        }
        if result > 0 {
            self.out_total -= result as usize;
        }
        let Some(c) = self.conn_mut(key) else { return };
        c.clear(flag::SEND_INFLIGHT);
        if result < 0 {
            c.set(flag::WRITE_FAILED | flag::READ_DONE);
            let out = c.out.take();
            self.release_outbuf(out);
            self.close(key, CloseReason::Lost);
            self.progress_close(key);
            return;
        }
        stats.bytes_out.add(result as u64);
        let out = c.out.as_mut().expect("send completed without a buffer");
        out.sent += result as usize;
        if out.is_empty() {
            let out = c.out.take();
            if c.has(flag::WANT_DRAINED) {
                c.clear(flag::WANT_DRAINED);
                self.drained.push(key);
            }
            self.release_outbuf(out);
        } else {
            self.start_send(key);
        }
        self.progress_close(key);
    }

    fn release_outbuf(&mut self, out: Option<Box<OutBuf>>) {
        let Some(mut out) = out else { return };
        // Whatever was still queued is dropped with the buffer.
        self.out_total -= out.len();
        if self.outbuf_pool.len() >= OUTBUF_POOL_MAX {
            return;
        }
        out.sending.clear();
        out.queued.clear();
        out.plain.clear();
        out.sent = 0;
        out.sending.shrink_to(OUTBUF_KEEP_CAPACITY);
        out.queued.shrink_to(OUTBUF_KEEP_CAPACITY);
        out.plain.shrink_to(OUTBUF_KEEP_CAPACITY);
        self.outbuf_pool.push(out);
    }

    /// Moves a closing connection one step further: flush, `shutdown(SHUT_WR)`, wait for
    /// the peer's end (or the close timeout), cancel the receive, close the slot.
    pub(crate) fn progress_close(&mut self, key: ConnKey) {
        let Some(c) = self.conn_mut(key) else { return };
        if !c.has(flag::CLOSING) || c.has(flag::CLOSE_SENT) {
            return;
        }
        if c.has(flag::SEND_INFLIGHT) {
            return;
        }
        let owes_close_notify = matches!(&c.transport, Transport::Tls(t) if t.owes_close_notify());
        if (c.out_len() > 0 || owes_close_notify) && !c.has(flag::WRITE_FAILED) {
            if !c.has(flag::QUEUED_FLUSH) {
                c.set(flag::QUEUED_FLUSH);
                self.flush_list.push(key.index);
            }
            return;
        }
        let (slot, lane) = (c.slot, c.lane as usize);
        if !c.has(flag::SHUTDOWN_SENT) && !c.has(flag::WRITE_FAILED) {
            c.set(flag::SHUTDOWN_SENT);
            let e = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_WR)
                .build()
                .user_data(Token::new(Op::Shutdown, key.index, key.gen_.get()).encode());
            self.lanes[lane].push(e);
            return;
        }
        if c.has(flag::SHUTDOWN_SENT) && !c.has(flag::SHUTDOWN_DONE) {
            return;
        }
        if c.has(flag::RECV_ARMED) {
            if c.has(flag::READ_DONE) {
                // The peer is gone or the deadline passed: stop waiting for its end.
                self.cancel_recv(key);
            }
            return;
        }
        self.submit_close(key);
    }

    pub(crate) fn cancel_recv(&mut self, key: ConnKey) {
        let Some(lane) = self.conn(key).map(|c| c.lane as usize) else {
            return;
        };
        let target = Token::new(Op::Recv, key.index, key.gen_.get()).encode();
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(Token::new(Op::Cancel, key.index, key.gen_.get()).encode());
        self.lanes[lane].push(e);
    }

    fn submit_close(&mut self, key: ConnKey) {
        let Some(c) = self.conn_mut(key) else { return };
        c.set(flag::CLOSE_SENT);
        let lane = c.lane as usize;
        let e = opcode::Close::new(types::Fixed(c.slot))
            .build()
            .user_data(Token::new(Op::Close, key.index, key.gen_.get()).encode());
        self.lanes[lane].push(e);
    }

    /// The slot is closed: forget the connection.
    pub(crate) fn remove(&mut self, key: ConnKey) {
        if self.conn(key).is_none() {
            return;
        }
        let c = self.conns.remove(key.index as usize);
        self.lane_conns[c.lane as usize] -= 1;
        self.release_outbuf(c.out);
        // A lookup still in flight keeps its buffer until it completes (`on_peer_name`).
        self.peers.remove(&key);
        self.stats.connections_current.sub(1);
        self.count_transport(c.listener, false);
        self.cfg
            .open_connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a connection opened (or closed) on the listener in the gauge of its
    /// transport: TCP or WebSocket, and TLS beside either when the listener has it.
    pub(crate) fn count_transport(&self, listener: u8, opened: bool) {
        let Some(spec) = self.cfg.listeners.get(listener as usize) else {
            return;
        };
        let transport = match spec.kind {
            ListenerKind::WebSocket(_) => &self.stats.connections_ws,
            ListenerKind::Tcp => &self.stats.connections_tcp,
        };
        let tls = spec.tls.is_some().then_some(&self.stats.connections_tls);
        for gauge in std::iter::once(transport).chain(tls) {
            if opened {
                gauge.add(1);
            } else {
                gauge.sub(1);
            }
        }
    }

    /// Takes the service state out of a connection whose service must hear `on_close`.
    pub(crate) fn take_state(&mut self, key: ConnKey) -> Option<C> {
        let c = self.conn_mut(key)?;
        if !c.has(flag::OPEN) {
            return None;
        }
        c.clear(flag::OPEN);
        Some(std::mem::take(&mut c.state))
    }

    /// A closing connection's time is up: stop waiting for the peer.
    pub(crate) fn force_close(&mut self, key: ConnKey) {
        let Some(c) = self.conn_mut(key) else { return };
        c.set(flag::READ_DONE | flag::WRITE_FAILED);
        if c.has(flag::SHUTDOWN_SENT) && !c.has(flag::SHUTDOWN_DONE) {
            // The shutdown completes on its own; progress continues from there.
            return;
        }
        c.set(flag::SHUTDOWN_DONE);
        if c.has(flag::SEND_INFLIGHT) {
            // A blocked send ends when the socket shuts down.
            let (slot, lane) = (c.slot, c.lane as usize);
            let e = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_RDWR)
                .build()
                .user_data(Token::new(Op::Cancel, key.index, key.gen_.get()).encode());
            self.lanes[lane].push(e);
            return;
        }
        self.progress_close(key);
    }
}
