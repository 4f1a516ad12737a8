//! The shard loop: one thread, pinned to a core, driving one io_uring ring.
//!
//! Each turn: reap completions (accepts, receives, sends, closes, the doorbell) and hand
//! their bytes to the transport and the service; drain the mesh; run control messages
//! and expired timers; then flush every connection that has bytes queued, give the
//! receive buffers back, move mesh overflow, and submit everything with one
//! `io_uring_enter` — which also waits when there is nothing to do.

use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use io_uring::{opcode, types};
use ringmq_proto::Decoded;
use ringmq_proto::ws;
use rustls::CommonState;
use rustls::server::UnbufferedServerConnection;

use crate::config::{ListenerKind, ShardConfig, WsFraming};
use crate::conn::{CloseReason, ConnKey, Transport, WsConn, flag};
use crate::hist::{self, Recorder, SharedHists};
use crate::io::{Op, Token};
use crate::listen::reuseport_listener;
use crate::mesh::links::MeshLinks;
use crate::ring::{BufRing, Completion, Ring};
use crate::service::{Data, Io, Service};
use crate::stats::RuntimeStats;
use crate::tls::{self, Fed, Pump, TlsConn, TlsError};

/// Messages from other threads to a shard, over its bounded control channel. Whoever
/// sends one rings the shard's doorbell after, so that a sleeping shard wakes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control<R> {
    /// Stop accepting, say goodbye to every connection, flush, and exit.
    Shutdown,
    /// A request for the service (`Service::on_request`).
    Request(R),
}

/// Control messages taken per loop turn: a burst of requests waits in the channel (the
/// shard does not sleep while it holds any) instead of taking one turn over.
pub const REQUESTS_PER_TURN: usize = 64;

/// Buffer group id of the receive buffer ring.
const RECV_GROUP: u16 = 0;
/// Receive buffers added to the ring each time receives run out of them.
const RECV_BUFFERS_STEP: u16 = 64;
/// Receive buffers a lane other than the primary starts with.
const LANE_RECV_BUFFERS_INITIAL: u16 = 16;
/// Completions handled per reap.
const REAP_BATCH: usize = 1024;
/// Mesh messages taken from each peer per turn, so one busy peer cannot starve sockets.
const MESH_BATCH: usize = 1024;
/// Slots kept free in the fixed-file table beyond the listen backlog: accepts that
/// complete in the same kernel batch as the one that crosses the high-water mark.
const ACCEPT_MARGIN: u32 = 256;
/// How often the service's `on_tick` runs.
const TICK_MS: u64 = 1000;
/// How long past the shutdown deadline a shard still waits for its file writes.
const FILE_GRACE_MS: u64 = 10_000;
/// How long a stopping shard waits for its cancelled operations to end.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Buffers kept for TLS records split across receives, and the capacity each keeps: a
/// whole record (16 KiB of plaintext and its overhead) fits.
const TLS_CARRY_POOL_MAX: usize = 64;
const TLS_CARRY_KEEP_CAPACITY: usize = 20 * 1024;

/// Everything a shard thread needs; built by the main thread, moved into the thread.
pub struct ShardSpec<M, R> {
    pub id: usize,
    /// The core to pin to, if any.
    pub core: Option<usize>,
    pub cfg: Arc<ShardConfig>,
    pub stats: Arc<RuntimeStats>,
    pub mesh: MeshLinks<M>,
    pub control: Receiver<Control<R>>,
    /// Where the shard publishes the runtime's latency histograms once a second (a set of
    /// `hist::RUNTIME`).
    pub hists: SharedHists,
}

/// Starts shard `spec.id` on its own thread. `make_service` runs on that thread (a
/// service holds `!Send` state). The returned receiver yields once: `Ok` when the
/// shard listens, or the error that stopped it.
pub fn spawn<S, F>(
    spec: ShardSpec<S::Msg, S::Request>,
    make_service: F,
) -> io::Result<(std::thread::JoinHandle<()>, Receiver<io::Result<()>>)>
where
    S: Service,
    F: FnOnce() -> S + Send + 'static,
{
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let handle = std::thread::Builder::new()
        .name(format!("shard-{}", spec.id))
        .spawn(move || {
            if let Some(core) = spec.core {
                pin_to_core(core);
            }
            match Shard::new(spec, make_service()) {
                Ok(mut shard) => {
                    let _ = ready_tx.send(Ok(()));
                    shard.run();
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })?;
    Ok((handle, ready_rx))
}

fn pin_to_core(core: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// One shard. Field order matters for drop: `io` (which owns the rings) is dropped
/// before `bufs` and `lane_bell`, so the kernel has let go of the buffer rings and the
/// bell's buffer before they are freed.
struct Shard<S: Service> {
    io: Io<S>,
    /// Each lane's receive buffers (a buffer ring belongs to one io_uring instance).
    bufs: Vec<BufRing>,
    /// Wakes the thread asleep on the primary ring when another lane has work; opened
    /// with the second lane.
    lane_bell: Option<LaneBell>,
    service: S,
    listeners: Vec<TcpListener>,
    /// Per listener: the lane its accept is posted on, if one is.
    accept_armed: Vec<Option<u8>>,
    /// Per listener: while its accept rate is exceeded, when it may accept again (shard
    /// clock, ms; 0: it may).
    accept_resume_ms: Vec<u64>,
    accepting: bool,
    /// The lane new connections go to: the first one with room.
    accept_lane: usize,
    control: Receiver<Control<S::Request>>,
    completions: Vec<Completion>,
    inbox: Vec<(usize, S::Msg)>,
    fired: Vec<u64>,
    /// Bytes of a response (101, 400, …) being built.
    scratch: Vec<u8>,
    /// A TLS record's plaintext, handed up as a mutable slice (WebSocket unmasks in place).
    tls_plain: Vec<u8>,
    /// Empty buffers for TLS records split across receives, so that a connection holds
    /// one only while it has such a record.
    tls_carry_pool: Vec<Vec<u8>>,
    /// Where the doorbell eventfd's counter is read into; boxed so it does not move
    /// while the read is in flight.
    doorbell_buf: Box<[u8; 8]>,
    last_tick_ms: u64,
    shutdown_deadline: Option<u64>,
    /// When the mesh was last drained, and whether this turn left it undrained.
    last_mesh_drain_ms: u64,
    mesh_deferred: bool,
}

impl<S: Service> Shard<S> {
    fn new(spec: ShardSpec<S::Msg, S::Request>, service: S) -> io::Result<Shard<S>> {
        let cfg = spec.cfg;
        // Multishot operations post many completions per submission.
        let ring = Ring::new(cfg.ring_entries, cfg.ring_entries * 4, cfg.files_per_shard)?;
        let bufs = new_buf_ring(&ring, &cfg, cfg.recv_buffers_initial)?;
        let mut listeners = Vec::new();
        for l in &cfg.listeners {
            listeners.push(reuseport_listener(l.addr, cfg.backlog)?);
        }
        let hists = Recorder::new(spec.hists);
        let io = Io::<S>::new(ring, cfg.clone(), spec.stats, spec.mesh, hists)?;
        io.stats.lanes.add(1);
        Ok(Shard {
            io,
            bufs: vec![bufs],
            lane_bell: None,
            service,
            accept_armed: vec![None; listeners.len()],
            accept_resume_ms: vec![0; listeners.len()],
            listeners,
            accepting: true,
            accept_lane: 0,
            control: spec.control,
            completions: Vec::with_capacity(REAP_BATCH),
            inbox: Vec::new(),
            fired: Vec::new(),
            scratch: Vec::new(),
            tls_plain: Vec::new(),
            tls_carry_pool: Vec::new(),
            doorbell_buf: Box::new([0; 8]),
            last_tick_ms: 0,
            shutdown_deadline: None,
            last_mesh_drain_ms: 0,
            mesh_deferred: false,
        })
    }

    fn run(&mut self) {
        self.arm_doorbell();
        self.manage_accept();
        let origin = crate::mesh::links::clock_origin();
        loop {
            let turn_start = Instant::now();
            self.io.update_clock();
            self.io
                .mesh
                .set_clock(turn_start.duration_since(origin).as_nanos() as u64);
            self.io.stats.loop_turns.add(1);
            self.handle_completions();
            self.handle_files();
            self.handle_mesh();
            self.handle_control();
            self.handle_timers();
            self.handle_drained();
            let now = self.io.now_ms();
            if now >= self.last_tick_ms + TICK_MS {
                self.last_tick_ms = now;
                self.service.on_tick(&mut self.io);
                self.io.hists.publish();
            }
            self.service.on_turn_end(&mut self.io);
            self.notify_closed();
            self.resume_paused();
            self.io.flush_sends();
            self.rearm_recvs();
            for bufs in &mut self.bufs {
                bufs.commit();
            }
            self.io.mesh.flush();
            self.manage_accept();
            let stats = &self.io.stats;
            stats.outbound_bytes.set(self.io.out_bytes() as u64);
            stats.mesh_waiting.set(self.io.mesh.backlog_total() as u64);
            stats.ops_in_flight.set(self.io.in_flight() as u64);
            let turn_us = turn_start.elapsed().as_micros() as u64;
            self.service.on_turn_flushed(turn_us);
            self.io.hists.record(hist::LOOP_TURN, turn_us);
            if let Some(deadline) = self.shutdown_deadline {
                let done = self.io.conns.is_empty() && self.service.is_idle();
                // The kernel holds the buffers of file writes in flight: they end first
                // (unless the disk hangs past the last grace period: `stop` cancels them,
                // and `Disk`'s drop leaks what never ended).
                let files_done = self.io.disk.in_flight() == 0;
                if (done || now >= deadline) && (files_done || now >= deadline + FILE_GRACE_MS) {
                    return self.stop();
                }
            }
            if let Err(e) = self.wait() {
                tracing::error!(shard = self.io.shard_id(), error = %e, "io_uring_enter failed; the shard stops");
                return self.stop();
            }
        }
    }

    /// The loop is over: cancel every operation still in flight (sends stuck on clients
    /// that do not read, receives, the doorbell's read) and wait until each has ended, so
    /// that no buffer is freed while the kernel may still use it. Should some not end,
    /// their buffers are leaked rather than freed.
    fn stop(&mut self) {
        let left: usize = self
            .io
            .lanes
            .iter_mut()
            .map(|ring| ring.quiesce(STOP_TIMEOUT))
            .sum();
        self.io.stats.ops_in_flight.set(left as u64);
        if left > 0 {
            tracing::error!(
                shard = self.io.shard_id(),
                left,
                "operations did not end when cancelled; their buffers are leaked"
            );
            std::mem::forget(std::mem::take(&mut self.io.conns));
            std::mem::forget(std::mem::replace(&mut self.doorbell_buf, Box::new([0; 8])));
            std::mem::forget(self.lane_bell.take());
            for bufs in &mut self.bufs {
                bufs.leak();
            }
            for ring in &mut self.io.lanes {
                ring.abandon_in_flight();
            }
        }
    }

    /// Submits, and sleeps if there is nothing to do until a completion, a doorbell, or
    /// the next timer.
    fn wait(&mut self) -> io::Result<()> {
        // The other lanes' submissions go now; the primary's with the wait below.
        for ring in &mut self.io.lanes[1..] {
            if ring.has_unsubmitted() {
                ring.enter(0, None)?;
            }
        }
        // Mesh messages left undrained on purpose (back-pressure) are no reason to spin.
        let mesh_ready = !self.mesh_deferred && self.io.mesh.inbound_pending();
        let more_work = std::mem::take(&mut self.io.continue_soon);
        let busy = self.io.lanes[0].completions_ready()
            || self.io.lanes[1..].iter_mut().any(|ring| ring.wants_enter())
            || mesh_ready
            || !self.control.is_empty()
            || self.io.helper.has_results()
            || !self.io.drained.is_empty()
            || more_work;
        let wake_at = self.io.wake_at.take();
        if busy {
            return self.io.lanes[0].enter(0, None);
        }
        let mut timeout_ms = (self.last_tick_ms + TICK_MS).saturating_sub(self.io.now_ms());
        if let Some(hint) = self.io.timers.next_deadline_hint_ms() {
            timeout_ms = timeout_ms.min(hint);
        }
        if let Some(at) = wake_at {
            timeout_ms = timeout_ms.min(at.saturating_sub(self.io.now_ms()));
        }
        if self.io.mesh.has_backlog() {
            // A peer's ring is full; its consumer does not wake us when it drains.
            timeout_ms = timeout_ms.min(1);
        }
        if self.mesh_deferred || !self.io.paused.is_empty() {
            // Back-pressure in force: look again soon whether it can be lifted.
            timeout_ms = timeout_ms.min(5);
        }
        if let Some(ms) = self.io.next_throttle_end_ms() {
            timeout_ms = timeout_ms.min(ms);
        }
        let now = self.io.now_ms();
        for (&resume, armed) in self.accept_resume_ms.iter().zip(&self.accept_armed) {
            if resume > 0 && armed.is_none() {
                timeout_ms = timeout_ms.min(resume.saturating_sub(now));
            }
        }
        let bell = &self.io.mesh.doorbells()[self.io.shard_id()];
        bell.prepare_sleep();
        if (!self.mesh_deferred && self.io.mesh.inbound_pending())
            || !self.control.is_empty()
            || self.io.helper.has_results()
            || !self.lanes_quiet()
        {
            self.io.mesh.doorbells()[self.io.shard_id()].awake();
            return self.io.lanes[0].enter(0, None);
        }
        let r = self.io.lanes[0].enter(1, Some(Duration::from_millis(timeout_ms.max(1))));
        self.io.mesh.doorbells()[self.io.shard_id()].awake();
        r
    }

    /// Reaps every lane: the primary, whose completion work ran when the thread woke on
    /// it, and each other lane that has work, entered for it to run.
    fn handle_completions(&mut self) {
        let mut batch = std::mem::take(&mut self.completions);
        // A lane opened meanwhile (by an accept) is reaped in this turn too.
        let mut lane = 0;
        while lane < self.io.lanes.len() {
            let ring = &mut self.io.lanes[lane];
            if lane > 0
                && ring.wants_enter()
                && let Err(e) = ring.enter(0, None)
            {
                tracing::error!(shard = self.io.shard_id(), lane, error = %e, "io_uring_enter failed on a lane");
            }
            loop {
                self.io.lanes[lane].reap(&mut batch);
                if batch.is_empty() {
                    break;
                }
                let full = batch.len() == batch.capacity();
                for c in batch.iter().copied() {
                    self.handle_completion(lane, c);
                }
                self.notify_closed();
                if !full {
                    break;
                }
            }
            lane += 1;
        }
        self.completions = batch;
    }

    fn handle_completion(&mut self, lane: usize, c: Completion) {
        let Some(token) = c.token::<Op>() else {
            return;
        };
        match token.op {
            Op::Accept => self.on_accept(lane, token.index as usize, c),
            Op::Recv => self.on_recv(lane, token, c),
            Op::Send => {
                if let Some(key) = self.io.key_of(token) {
                    self.io.on_send_done(key, c.result);
                }
            }
            Op::Shutdown => {
                if let Some(key) = self.io.key_of(token) {
                    if let Some(conn) = self.io.conn_raw(key) {
                        conn.set(flag::SHUTDOWN_DONE);
                    }
                    self.io.progress_close(key);
                }
            }
            Op::Close => {
                if let Some(key) = self.io.key_of(token) {
                    self.io.remove(key);
                }
            }
            Op::Doorbell => self.arm_doorbell(),
            Op::LaneBell => {
                if let Some(bell) = &mut self.lane_bell {
                    bell.armed = false;
                }
            }
            Op::Cancel => {}
            Op::PeerAddr => self.on_peer_addr(token.index, c.result),
            Op::PeerName => self.on_peer_name(token, c),
            Op::FileWrite | Op::FileSync => self.io.on_file_cqe(token, c.result),
        }
    }

    /// Hands the service the file writes that ended and the helper's results.
    fn handle_files(&mut self) {
        let mut done = std::mem::take(&mut self.io.disk.done);
        for d in done.drain(..) {
            self.service.on_file_done(&mut self.io, d);
        }
        if self.io.disk.done.is_empty() {
            self.io.disk.done = done;
        }
        while let Some(m) = self.io.helper.try_result() {
            self.service.on_blocking_done(&mut self.io, m);
        }
        self.notify_closed();
    }

    fn on_accept(&mut self, lane: usize, listener: usize, c: Completion) {
        if !c.more()
            && let Some(a) = self.accept_armed.get_mut(listener)
            && *a == Some(lane as u8)
        {
            *a = None;
        }
        if c.result < 0 {
            match -c.result {
                libc::ENFILE | libc::EMFILE => {
                    self.io.stats.connections_refused_table_full.add(1);
                    tracing::info!(
                        shard = self.io.shard_id(),
                        "connection refused: the fixed-file table is full"
                    );
                }
                libc::ECANCELED => {}
                e => tracing::warn!(
                    shard = self.io.shard_id(),
                    error = %io::Error::from_raw_os_error(e),
                    "accept failed"
                ),
            }
            return;
        }
        let slot = c.result as u32;
        let stats = self.io.stats.clone();
        stats.connections_current.add(1);
        stats.connections_total.add(1);
        let open = self
            .io
            .cfg
            .open_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = self
            .io
            .new_conn(slot, lane as u8, listener as u8, S::ConnState::default());
        self.io.count_transport(listener as u8, true);
        if open >= self.io.cfg.max_connections {
            stats.connections_refused_limit.add(1);
            if let Some(conn) = self.io.conn_raw(key) {
                conn.set(flag::OVER_LIMIT);
            }
        }
        let spec = &self.io.cfg.listeners[listener];
        if spec.tls.is_some() || matches!(spec.kind, ListenerKind::WebSocket(_)) {
            // One deadline for the TLS handshake and the WebSocket upgrade together (and
            // the peer address lookup before them).
            let at = self.io.now_ms() + self.io.cfg.handshake_timeout_ms;
            self.io.set_deadline_raw(key, at);
        }
        if self.io.cfg.peer_addresses {
            // Nothing is read, and the service hears nothing, until the address is known.
            self.look_up_peer(key, slot, lane, listener);
        } else {
            self.start_conn(key, listener);
        }
        if self.accepting
            && lane == self.accept_lane
            && self.io.lane_conns[lane] as usize >= self.high_water(lane)
        {
            self.move_accepts();
        }
        self.take_accept_rate(listener);
    }

    /// A new connection's receive is posted, its TLS stage put in place when the listener
    /// has one, and a plain TCP one is opened for the service (one that negotiates first,
    /// TLS or WebSocket, once that is done).
    fn start_conn(&mut self, key: ConnKey, listener: usize) {
        self.io.arm_recv(key, RECV_GROUP);
        let spec = &self.io.cfg.listeners[listener];
        let tls = spec.tls.clone();
        let negotiates = tls.is_some() || matches!(spec.kind, ListenerKind::WebSocket(_));
        if let Some(acceptor) = tls {
            self.start_tls(key, &acceptor);
        }
        if !negotiates {
            self.open(key);
        }
    }

    /// Asks the kernel for a new connection's peer address (`Io::peer_name_op`), on the
    /// lane whose table holds its `slot`.
    fn look_up_peer(&mut self, key: ConnKey, slot: u32, lane: usize, listener: usize) {
        let mut buf = Box::new([0u8; crate::io::PEER_NAME_LEN]);
        let token = Token::new(Op::PeerName, key.index, key.gen_.get());
        let e = self.io.peer_name_op(slot, listener, &mut buf, token);
        // The buffer lives in `peer_lookups` until the operation completes.
        self.io.peer_lookups.insert(key, buf);
        self.io.lanes[lane].push(e);
    }

    /// A peer address lookup completed: the connection starts.
    fn on_peer_name(&mut self, token: Token, c: Completion) {
        let Some(key) = self.io.key_of(token) else {
            return;
        };
        let Some(buf) = self.io.peer_lookups.remove(&key) else {
            return;
        };
        match peer_ip(&buf[..], c.result) {
            Some(ip) => {
                self.io.peers.insert(key, ip);
            }
            None => self.io.stats.peer_address_unknown.add(1),
        }
        let Some(conn) = self.io.conn_raw(key) else {
            return;
        };
        if conn.has(flag::CLOSING) {
            return;
        }
        let listener = conn.listener as usize;
        self.start_conn(key, listener);
    }

    /// An accept takes from its listener's rate: past it, the listener's next accept is
    /// posted only once the rate allows again (`manage_accept`); meanwhile new
    /// connections wait in the kernel's listen backlog.
    fn take_accept_rate(&mut self, listener: usize) {
        let Some(limit) = &self.io.cfg.listeners[listener].connect_rate else {
            return;
        };
        let origin = crate::mesh::links::clock_origin();
        let now_ns = Instant::now().duration_since(origin).as_nanos() as u64;
        let wait_ns = limit.bucket.take(limit.rate, 1, now_ns);
        if wait_ns == 0 || self.accept_resume_ms[listener] > self.io.now_ms() {
            return;
        }
        self.io.stats.accepts_delayed.add(1);
        self.accept_resume_ms[listener] = self.io.now_ms() + wait_ns.div_ceil(1_000_000);
    }

    fn cancel_accept(&mut self, lane: usize, listener: usize) {
        let target = Token::new(Op::Accept, listener as u32, 0).encode();
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(Token::new(Op::Cancel, listener as u32, 0).encode());
        self.io.lanes[lane].push(e);
    }

    /// Puts a TLS stage below the connection's transport.
    fn start_tls(&mut self, key: ConnKey, acceptor: &tls::TlsAcceptor) {
        match acceptor.session() {
            Ok(pump) => {
                if let Some(conn) = self.io.conn_raw(key) {
                    let inner = std::mem::replace(&mut conn.transport, Transport::Tcp);
                    conn.transport = Transport::Tls(Box::new(TlsConn::new(pump, inner)));
                    conn.set(flag::TLS);
                }
            }
            Err(e) => self.io.tls_failed(key, &TlsError::Rustls(e)),
        }
    }

    fn open(&mut self, key: ConnKey) {
        if let Some(conn) = self.io.conn_raw(key) {
            conn.set(flag::OPEN);
            conn.deadline_ms = 0;
        }
        self.service.on_open(&mut self.io, key);
    }

    fn on_recv(&mut self, lane: usize, token: Token, c: Completion) {
        let Some(key) = self.io.key_of(token) else {
            if let Some(bid) = c.buffer_id() {
                self.bufs[lane].recycle(bid);
            }
            return;
        };
        if c.result > 0 {
            let bid = c.buffer_id().expect("a receive with data names its buffer");
            self.io.stats.bytes_in.add(c.result as u64);
            let closing = self
                .io
                .conn_raw(key)
                .is_none_or(|conn| conn.has(flag::CLOSING));
            if !closing {
                // The buffer belongs to us until it is recycled below; `bufs` is a
                // separate field, so the service may use `io` freely meanwhile.
                let data = self.bufs[lane].get(bid, c.result as usize);
                let data: *mut [u8] = data;
                // SAFETY: `data` points into the buffer ring mapping, which lives as long
                // as `self.bufs`; nothing recycles buffer `bid` until `input` returns.
                self.input(key, unsafe { &mut *data });
            }
            self.bufs[lane].recycle(bid);
        } else if c.result == 0 {
            self.peer_done(key);
        } else {
            match -c.result {
                libc::ENOBUFS => {
                    // More connections are sending at once than there are buffers: add
                    // some (the receive is posted again at the end of the turn).
                    self.io.stats.recv_no_buffers.add(1);
                    self.bufs[lane].grow(RECV_BUFFERS_STEP);
                }
                libc::ECANCELED => {
                    // Cancelled to finish a close, or to stop reading a paused connection
                    // (posted again when its pause ends, even if that came first).
                    if let Some(conn) = self.io.conn_raw(key)
                        && conn.has(flag::CLOSING)
                    {
                        conn.set(flag::READ_DONE);
                    }
                }
                _ => {
                    self.count_abandoned_handshake(key);
                    if let Some(conn) = self.io.conn_raw(key) {
                        conn.set(flag::READ_DONE | flag::WRITE_FAILED);
                    }
                    self.io.close(key, CloseReason::Lost);
                }
            }
        }
        if !c.more()
            && let Some(conn) = self.io.conn_raw(key)
        {
            conn.clear(flag::RECV_ARMED);
            if !conn.has(flag::READ_DONE) && !conn.has(flag::NEEDS_RECV) {
                conn.set(flag::NEEDS_RECV);
                self.io.recv_list.push(key.index);
            }
        }
        self.io.progress_close(key);
    }

    /// The peer sent its last bytes (the socket's end, or TLS close_notify).
    fn peer_done(&mut self, key: ConnKey) {
        self.count_abandoned_handshake(key);
        let mut held = false;
        if let Some(conn) = self.io.conn_raw(key) {
            conn.set(flag::READ_DONE);
            // A paused connection's last packets (a DISCONNECT, say) may still be held by
            // the service: they are taken up before it closes.
            held =
                (conn.has(flag::PAUSED) || conn.has(flag::THROTTLED)) && !conn.has(flag::CLOSING);
            if held {
                conn.set(flag::EOF_HELD);
            }
        }
        if !held {
            self.io.close(key, CloseReason::Lost);
        }
    }

    /// A client that goes away in the middle of its TLS handshake (it refused the server's
    /// certificate, say) failed it.
    fn count_abandoned_handshake(&mut self, key: ConnKey) {
        if let Some(conn) = self.io.conn_raw(key)
            && !conn.has(flag::CLOSING)
            && matches!(&conn.transport, Transport::Tls(t) if t.handshaking())
        {
            self.io.stats.tls_handshake_failed.add(1);
        }
    }

    /// Hands received bytes to the connection's transport. The stage that takes them is
    /// moved out of the connection meanwhile (the service runs inside, with `io`).
    fn input(&mut self, key: ConnKey, data: &mut [u8]) {
        let Some(conn) = self.io.conn_raw(key) else {
            return;
        };
        if let Transport::Tls(t) = &mut conn.transport {
            let Some(mut pump) = t.pump.take() else {
                return;
            };
            let mut inner = std::mem::replace(&mut t.inner, Transport::Tcp);
            let fed = self.tls_feed(key, &mut pump, &mut inner, data);
            if let Some(conn) = self.io.conn_raw(key)
                && let Transport::Tls(t) = &mut conn.transport
            {
                t.pump = Some(pump);
                t.inner = inner;
            }
            match fed {
                Err(e) => self.io.tls_failed(key, &e),
                Ok(Fed::PeerClosed) => self.peer_done(key),
                Ok(Fed::Handshaking | Fed::Open | Fed::Stopped) => {}
            }
            return;
        }
        let mut stage = std::mem::replace(&mut conn.transport, Transport::Tcp);
        self.stage_input(key, &mut stage, data);
        if let Some(conn) = self.io.conn_raw(key) {
            conn.transport = stage;
        }
    }

    /// Hands bytes to the stage above the socket or above TLS.
    fn stage_input(&mut self, key: ConnKey, stage: &mut Transport, data: &mut [u8]) {
        match stage {
            Transport::Tcp => {
                let data = Data {
                    bytes: data,
                    text: false,
                    message_end: false,
                };
                self.service.on_data(&mut self.io, key, data);
            }
            Transport::WsHandshake(_) => self.ws_handshake(key, stage, data),
            Transport::Ws(w) => self.ws_feed(key, w, data),
            // TLS is never inside TLS.
            Transport::Tls(_) => {}
        }
    }

    /// Feeds received records to the connection's TLS session; what they carry goes up
    /// to `inner`. A buffer for a record split across receives is lent from the shard's
    /// pool and given back once the record is whole.
    fn tls_feed(
        &mut self,
        key: ConnKey,
        pump: &mut Pump<UnbufferedServerConnection>,
        inner: &mut Transport,
        data: &mut [u8],
    ) -> Result<Fed, TlsError> {
        if pump.carry.capacity() == 0 {
            pump.carry = self.tls_carry_pool.pop().unwrap_or_default();
        }
        let fed = pump.feed(
            data,
            &mut TlsUp {
                shard: self,
                key,
                inner,
            },
        );
        if pump.carry.is_empty() && pump.carry.capacity() > 0 {
            let mut carry = std::mem::take(&mut pump.carry);
            if self.tls_carry_pool.len() < TLS_CARRY_POOL_MAX {
                carry.shrink_to(TLS_CARRY_KEEP_CAPACITY);
                self.tls_carry_pool.push(carry);
            }
        }
        fed
    }

    /// The TLS handshake completed: the client certificate's CN is kept, and MQTT over
    /// TLS opens (secure WebSocket opens after its upgrade).
    fn tls_established(&mut self, key: ConnKey, state: &CommonState, inner: &Transport) {
        self.io.stats.tls_handshakes.add(1);
        let cn = state.peer_certificates().and_then(tls::peer_common_name);
        let Some(conn) = self.io.conn_raw(key) else {
            return;
        };
        if let Transport::Tls(t) = &mut conn.transport {
            t.established = true;
            t.peer_cn = cn;
        }
        if matches!(inner, Transport::Tcp) && self.io.is_open(key) {
            self.open(key);
        }
    }

    /// Reads a WebSocket upgrade request (`stage` is `WsHandshake`); once it is answered
    /// with 101, `stage` becomes `Ws` and bytes behind the request go on to it.
    fn ws_handshake(&mut self, key: ConnKey, stage: &mut Transport, data: &mut [u8]) {
        let cfg = self.io.cfg.clone();
        let Some(ListenerKind::WebSocket(options)) = self.io.listener_kind(key).cloned() else {
            return;
        };
        let Transport::WsHandshake(buf) = stage else {
            return;
        };
        let byte_stream = options.framing == WsFraming::ByteStream;
        let server = ws::handshake::ServerConfig {
            path: &options.path,
            subprotocol: options.subprotocol.as_deref(),
            require_subprotocol: options.require_subprotocol,
            max_header_bytes: cfg.max_handshake_bytes,
            max_headers: 64,
        };
        // Most upgrade requests arrive whole in one receive: parse them in place.
        let in_place = buf.is_empty();
        if !in_place {
            let room = (cfg.max_handshake_bytes + 1).saturating_sub(buf.len());
            buf.extend_from_slice(&data[..data.len().min(room)]);
        }
        let src: &[u8] = if in_place { data } else { buf };
        self.scratch.clear();
        let outcome = match ws::handshake::parse_request(src, &server) {
            Ok(Decoded::Partial { .. }) => None,
            Ok(Decoded::Complete(req, _)) if !options.origin_allowed(req.origin) => {
                self.io.stats.ws_origin_refused.add(1);
                ws::handshake::write_reject(
                    ws::HandshakeError::OriginNotAllowed,
                    &mut self.scratch,
                );
                Some(Err(()))
            }
            Ok(Decoded::Complete(req, used)) => {
                ws::handshake::write_accept(&req, &mut self.scratch);
                Some(Ok(used))
            }
            Err(e) => {
                ws::handshake::write_reject(e, &mut self.scratch);
                Some(Err(()))
            }
        };
        let scratch_len = self.scratch.len();
        let scratch = &self.scratch;
        match outcome {
            None => {
                if in_place {
                    buf.extend_from_slice(&data[..data.len().min(cfg.max_handshake_bytes + 1)]);
                }
            }
            Some(Err(())) => {
                self.io.stats.ws_handshake_rejected.add(1);
                tracing::info!(shard = self.io.shard_id(), "WebSocket upgrade refused");
                self.io
                    .append(key, None, scratch_len, |out| out.copy_from_slice(scratch));
                self.io.close(key, CloseReason::UpgradeRefused);
            }
            Some(Ok(used)) => {
                self.io
                    .append(key, None, scratch_len, |out| out.copy_from_slice(scratch));
                if let Some(conn) = self.io.conn_raw(key) {
                    conn.set(flag::WS);
                    if byte_stream {
                        conn.set(flag::WS_BYTE_STREAM);
                    }
                }
                let ws = Transport::Ws(Box::new(WsConn {
                    decoder: ws::frame::FrameDecoder::new(ws::Role::Server, cfg.max_ws_message),
                    carry: Vec::new(),
                    byte_stream,
                }));
                let request = std::mem::replace(stage, ws);
                self.open(key);
                // Bytes after the request already belong to the WebSocket stream.
                if in_place {
                    if used < data.len() && self.io.is_open(key) {
                        self.stage_input(key, stage, &mut data[used..]);
                    }
                } else if let Transport::WsHandshake(buf) = request
                    && used < buf.len()
                    && self.io.is_open(key)
                {
                    let mut rest = buf[used..].to_vec();
                    self.stage_input(key, stage, &mut rest);
                }
            }
        }
    }

    /// Decodes WebSocket frames: finishes a head or control frame split across receives
    /// from `w.carry`, then decodes `input` in place.
    fn ws_feed(&mut self, key: ConnKey, w: &mut WsConn, input: &mut [u8]) {
        let mut input = input;
        while !w.carry.is_empty() {
            match w.decoder.decode(&mut w.carry[..]) {
                Err(e) => return self.ws_fail(key, e),
                Ok(Decoded::Partial { need }) => {
                    if input.is_empty() {
                        return;
                    }
                    let k = need.max(1).min(input.len());
                    w.carry.extend_from_slice(&input[..k]);
                    input = &mut std::mem::take(&mut input)[k..];
                }
                Ok(Decoded::Complete(event, used)) => {
                    let go_on = self.ws_event(key, event, w.byte_stream);
                    w.carry.drain(..used);
                    if !go_on {
                        return;
                    }
                }
            }
        }
        while !input.is_empty() {
            let used = match w.decoder.decode(input) {
                Err(e) => return self.ws_fail(key, e),
                Ok(Decoded::Partial { .. }) => {
                    w.carry.extend_from_slice(input);
                    return;
                }
                Ok(Decoded::Complete(event, used)) => {
                    if !self.ws_event(key, event, w.byte_stream) {
                        return;
                    }
                    used
                }
            };
            input = &mut std::mem::take(&mut input)[used..];
        }
    }

    /// Handles one WebSocket event; false when the connection stopped taking input.
    fn ws_event(&mut self, key: ConnKey, event: ws::frame::Event<'_>, byte_stream: bool) -> bool {
        use ws::frame::{Event, Opcode};
        match event {
            Event::Data {
                text,
                chunk,
                message_end,
            } => {
                if byte_stream && text {
                    // A byte stream travels in binary messages only (MQTT §6 says so of
                    // MQTT's).
                    self.io.close(key, CloseReason::ProtocolError);
                    return false;
                }
                if !chunk.is_empty() || message_end {
                    let data = Data {
                        bytes: chunk,
                        text,
                        message_end,
                    };
                    self.service.on_data(&mut self.io, key, data);
                }
            }
            Event::Ping(payload) => {
                let n = payload.len();
                self.io.append(key, Some(Opcode::PONG), n, |out| {
                    out.copy_from_slice(payload)
                });
            }
            Event::Pong(_) => {}
            Event::Close { code, .. } => {
                // Echo the peer's status code (RFC 6455 §5.5.1), then close.
                if let Some(conn) = self.io.conn_raw(key)
                    && !conn.has(flag::WS_CLOSE_SENT)
                {
                    conn.set(flag::WS_CLOSE_SENT);
                    let body = code.map(|c| c.0.to_be_bytes());
                    let n = if body.is_some() { 2 } else { 0 };
                    self.io.append(key, Some(Opcode::CLOSE), n, |out| {
                        if let Some(b) = body {
                            out.copy_from_slice(&b);
                        }
                    });
                }
                self.io.close(key, CloseReason::Normal);
            }
        }
        self.io.is_open(key)
    }

    fn ws_fail(&mut self, key: ConnKey, e: ws::frame::FrameError) {
        let reason = match e.close_code().0 {
            1007 => CloseReason::InvalidPayload,
            1009 => CloseReason::TooBig,
            _ => CloseReason::ProtocolError,
        };
        self.io.close(key, reason);
    }

    /// Tells the service about connections that started closing.
    fn notify_closed(&mut self) {
        while !self.io.closed_list.is_empty() {
            let list = std::mem::take(&mut self.io.closed_list);
            for (key, reason) in list {
                if let Some(state) = self.io.take_state(key) {
                    self.service.on_close(&mut self.io, key, state, reason);
                }
            }
        }
    }

    /// A peer-address request's lookup completed: tell the service.
    fn on_peer_addr(&mut self, request: u32, result: i32) {
        let Some((key, buf)) = self.io.peer_requests.try_remove(request as usize) else {
            return;
        };
        // A connection that closed meanwhile may have left its slot to another: only an
        // open connection's answer is its own.
        let addr = peer_sockaddr(&buf[..], result).filter(|_| self.io.is_open(key));
        self.service.on_peer_addr(&mut self.io, key, addr);
        self.notify_closed();
    }

    fn handle_mesh(&mut self) {
        // Back-pressure across shards: while this shard has more to send than it keeps
        // up with, it leaves other shards' messages in their rings (theirs fill, and they
        // pause the connections that feed them), for at most `pause_max_ms` at a time.
        let now = self.io.now_ms();
        self.mesh_deferred = self.io.out_bytes() > self.io.cfg.pressure_high
            && now < self.last_mesh_drain_ms + self.io.cfg.pause_max_ms;
        if self.mesh_deferred {
            return;
        }
        self.last_mesh_drain_ms = now;
        let mut inbox = std::mem::take(&mut self.inbox);
        let origin = crate::mesh::links::clock_origin();
        let now_ns = Instant::now().duration_since(origin).as_nanos() as u64;
        let hists = &mut self.io.hists;
        self.io.mesh.drain(MESH_BATCH, |from, m, sent_ns| {
            hists.record(hist::MESH_HOP, now_ns.saturating_sub(sent_ns) / 1000);
            inbox.push((from, m));
        });
        for (from, m) in inbox.drain(..) {
            self.service.on_message(&mut self.io, from, m);
        }
        self.inbox = inbox;
        self.notify_closed();
    }

    fn handle_control(&mut self) {
        for _ in 0..REQUESTS_PER_TURN {
            let Ok(msg) = self.control.try_recv() else {
                break;
            };
            match msg {
                Control::Shutdown => self.begin_shutdown(),
                Control::Request(r) => {
                    self.service.on_request(&mut self.io, r);
                    self.notify_closed();
                }
            }
        }
    }

    fn begin_shutdown(&mut self) {
        if self.io.shutting_down {
            return;
        }
        self.io.shutting_down = true;
        self.pause_accepts();
        self.service.on_shutdown(&mut self.io);
        // Connections the service never saw (upgrades in progress) close here.
        for key in self.io.open_keys() {
            self.io.close(key, CloseReason::GoingAway);
        }
        self.notify_closed();
        self.shutdown_deadline = Some(self.io.now_ms() + self.io.cfg.close_timeout_ms + 500);
    }

    fn handle_timers(&mut self) {
        let now = self.io.now_ms();
        let mut fired = std::mem::take(&mut self.fired);
        fired.clear();
        self.io.timers.advance_into(now, &mut fired);
        for &k in &fired {
            let Some(key) = ConnKey::from_u64(k) else {
                continue;
            };
            let Some(conn) = self.io.conn_raw(key) else {
                continue;
            };
            if !conn.has(flag::TIMER_ARMED) || conn.timer_at > now {
                continue; // an entry replaced by an earlier one
            }
            if conn.deadline_ms == 0 {
                conn.clear(flag::TIMER_ARMED);
                continue;
            }
            if conn.deadline_ms > now {
                conn.timer_at = conn.deadline_ms;
                let at = conn.deadline_ms;
                self.io.timers.insert(at, k);
                continue;
            }
            conn.clear(flag::TIMER_ARMED);
            conn.deadline_ms = 0;
            if conn.has(flag::CLOSING) {
                self.io.force_close(key);
            } else if conn.transport.negotiating() {
                // The runtime's own deadline: the TLS handshake and the WebSocket upgrade.
                if matches!(&conn.transport, Transport::Tls(t) if t.handshaking()) {
                    self.io.stats.tls_handshake_timeout.add(1);
                }
                self.io.close(key, CloseReason::Timeout);
            } else {
                self.service.on_deadline(&mut self.io, key);
            }
        }
        self.fired = fired;
        self.notify_closed();
    }

    /// Tells the service which connections' outbound queues emptied as it asked; what it
    /// writes now goes out this turn. A connection it asks about again within this call
    /// (nothing queued) is told next turn.
    fn handle_drained(&mut self) {
        let drained = std::mem::take(&mut self.io.drained);
        for &key in &drained {
            if self.io.is_open(key) {
                self.service.on_drained(&mut self.io, key);
            }
        }
        let mut drained = drained;
        drained.clear();
        if self.io.drained.is_empty() {
            self.io.drained = drained;
        }
        self.notify_closed();
    }

    /// Lifts back-pressure pauses that are due, and lets the service take up what it
    /// held back while paused.
    fn resume_paused(&mut self) {
        self.io.resume_paused();
        self.io.resume_throttled();
        while let Some(key) = self.io.resumed.pop() {
            self.service.on_resume(&mut self.io, key);
            let eof = self.io.conn_raw(key).is_some_and(|c| {
                c.has(flag::EOF_HELD)
                    && !c.has(flag::PAUSED)
                    && !c.has(flag::THROTTLED)
                    && !c.has(flag::CLOSING)
            });
            if eof {
                self.io.close(key, CloseReason::Lost);
            }
        }
        self.notify_closed();
    }

    fn rearm_recvs(&mut self) {
        let list = std::mem::take(&mut self.io.recv_list);
        for &index in &list {
            let Some(conn) = self.io.conns.get(index as usize) else {
                continue;
            };
            let key = ConnKey {
                index,
                gen_: conn.gen_,
            };
            if conn.has(flag::NEEDS_RECV) {
                self.io.arm_recv(key, RECV_GROUP);
            }
        }
        let mut list = list;
        list.clear();
        if self.io.recv_list.is_empty() {
            self.io.recv_list = list;
        }
    }

    fn arm_doorbell(&mut self) {
        let fd = self.io.mesh.doorbells()[self.io.shard_id()].fd();
        let e = opcode::Read::new(types::Fd(fd), self.doorbell_buf.as_mut_ptr(), 8)
            .build()
            .user_data(Token::new(Op::Doorbell, 0, 0).encode());
        self.io.lanes[0].push(e);
    }

    /// Whether no lane but the primary has work, with the lanes' bell posted on the
    /// primary ring so that work coming to them later wakes the thread. The bell's count
    /// is cleared first: the lanes signal it also for the completions the thread itself
    /// just took, which are no reason to wake.
    fn lanes_quiet(&mut self) -> bool {
        let Some(bell) = &mut self.lane_bell else {
            return true;
        };
        bell.clear();
        if self.io.lanes[1..].iter_mut().any(|ring| ring.wants_enter()) {
            return false;
        }
        if !bell.armed {
            bell.armed = true;
            let e = opcode::Read::new(types::Fd(bell.fd.as_raw_fd()), bell.buf.as_mut_ptr(), 8)
                .build()
                .user_data(Token::new(Op::LaneBell, 0, 0).encode());
            self.io.lanes[0].push(e);
        }
        true
    }

    /// Connections lane `lane` takes before new ones go to another: its table less the
    /// listen backlog and a margin (accepts that complete in the same kernel batch as the
    /// one that crosses the mark), and on the primary less the file slots.
    fn high_water(&self, lane: usize) -> usize {
        let slots = if lane == 0 {
            self.io.disk.connection_slots()
        } else {
            self.io.cfg.files_per_shard
        };
        let reserve = self.io.cfg.backlog + ACCEPT_MARGIN;
        slots.saturating_sub(reserve).max(1) as usize
    }

    /// Below this many connections a full lane takes new ones again.
    fn low_water(&self, lane: usize) -> usize {
        self.high_water(lane)
            .saturating_sub(ACCEPT_MARGIN as usize)
            .max(1)
    }

    /// The accepting lane is near full: new connections go to the first lane with room,
    /// to a new lane if none has and fewer than `max_lanes` are open, or wait in the
    /// listen backlog until a lane has room again.
    fn move_accepts(&mut self) {
        let full = self.accept_lane;
        self.pause_accepts();
        match self.lane_with_room() {
            Some(lane) => {
                self.accept_lane = lane;
                self.accepting = true;
                // The accepts on the full lane end on their own (cancelled); new ones
                // are posted on `lane` this turn.
                for a in &mut self.accept_armed {
                    if *a == Some(full as u8) {
                        *a = None;
                    }
                }
            }
            None => {
                self.io.stats.accept_paused.add(1);
                tracing::info!(
                    shard = self.io.shard_id(),
                    connections = self.io.conns.len(),
                    lanes = self.io.lanes.len(),
                    "accepting paused: the fixed-file tables of all lanes are nearly full"
                );
            }
        }
    }

    /// The first lane below its low-water mark, or a new one.
    fn lane_with_room(&mut self) -> Option<usize> {
        let open = self.io.lanes.len();
        if let Some(lane) =
            (0..open).find(|&lane| (self.io.lane_conns[lane] as usize) < self.low_water(lane))
        {
            return Some(lane);
        }
        if open >= self.io.cfg.max_lanes.min(usize::from(u8::MAX) + 1) {
            return None;
        }
        match self.open_lane() {
            Ok(lane) => Some(lane),
            Err(e) => {
                tracing::warn!(shard = self.io.shard_id(), error = %e, "could not open another lane");
                None
            }
        }
    }

    /// Opens one more lane: a ring with its own fixed-file table and receive buffers, whose
    /// work wakes the thread through the lanes' bell.
    fn open_lane(&mut self) -> io::Result<usize> {
        let cfg = self.io.cfg.clone();
        // A lane carries only its connections' operations (the file writes and the bells
        // stay with the primary), so a smaller ring does: its memory is a fixed cost per
        // lane, as much as a few hundred idle connections.
        let entries = (cfg.ring_entries / 4).max(256);
        let ring = Ring::new(entries, entries * 4, cfg.files_per_shard)?;
        // A lane fills over time: it starts with few receive buffers and gains more when its
        // receives run out (each buffer a receive has used stays in memory).
        let bufs = new_buf_ring(&ring, &cfg, LANE_RECV_BUFFERS_INITIAL)?;
        if self.lane_bell.is_none() {
            self.lane_bell = Some(LaneBell::new()?);
        }
        let bell = self.lane_bell.as_ref().expect("opened above");
        ring.register_eventfd(bell.fd.as_raw_fd())?;
        self.io.lanes.push(ring);
        self.io.lane_conns.push(0);
        self.bufs.push(bufs);
        self.io.stats.lanes.add(1);
        let lane = self.io.lanes.len() - 1;
        tracing::info!(shard = self.io.shard_id(), lane, "lane opened");
        Ok(lane)
    }

    fn pause_accepts(&mut self) {
        self.accepting = false;
        for i in 0..self.accept_armed.len() {
            if let Some(lane) = self.accept_armed[i] {
                self.cancel_accept(lane as usize, i);
            }
        }
    }

    /// Posts accepts on the accepting lane; after a pause, once a lane has room again.
    fn manage_accept(&mut self) {
        if self.io.shutting_down {
            return;
        }
        if !self.accepting
            && let Some(lane) = self.lane_with_room()
        {
            self.accept_lane = lane;
            self.accepting = true;
        }
        if !self.accepting {
            return;
        }
        let lane = self.accept_lane;
        let now = self.io.now_ms();
        for i in 0..self.listeners.len() {
            if self.accept_resume_ms[i] > now {
                continue; // past its accept rate: the backlog waits
            }
            self.accept_resume_ms[i] = 0;
            if self.accept_armed[i].is_none() {
                self.accept_armed[i] = Some(lane as u8);
                let fd = types::Fd(self.listeners[i].as_raw_fd());
                let e = if self.io.cfg.listeners[i].connect_rate.is_some() {
                    // Paced: one accept at a time, posted again when the rate allows. A
                    // multishot accept would take every waiting connection at once.
                    opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                        .file_index(Some(types::DestinationSlot::auto_target()))
                        .build()
                } else {
                    opcode::AcceptMulti::new(fd)
                        .allocate_file_index(true)
                        .build()
                };
                let e = e.user_data(Token::new(Op::Accept, i as u32, 0).encode());
                self.io.lanes[lane].push(e);
            }
        }
    }
}

/// A lane's receive buffer ring, sized by the config, with `initial` buffers provided.
fn new_buf_ring(ring: &Ring, cfg: &ShardConfig, initial: u16) -> io::Result<BufRing> {
    BufRing::new(
        ring,
        RECV_GROUP,
        cfg.recv_buffers,
        initial.min(cfg.recv_buffers),
        cfg.recv_buffer_size,
    )
}

/// The eventfd every lane but the primary signals when completion work is queued for it
/// (`Ring::register_eventfd`); the primary ring has a read posted on it while the thread
/// sleeps, so the thread wakes for any lane.
struct LaneBell {
    fd: std::os::fd::OwnedFd,
    /// Where the posted read puts the count; boxed so it does not move meanwhile.
    buf: Box<[u8; 8]>,
    /// A read is posted on the primary ring.
    armed: bool,
}

impl LaneBell {
    fn new() -> io::Result<LaneBell> {
        use std::os::fd::FromRawFd;
        // SAFETY: eventfd(2) with valid flags; the descriptor it returns is owned below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(LaneBell {
            // SAFETY: `fd` is a fresh descriptor nothing else owns.
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
            buf: Box::new([0; 8]),
            armed: false,
        })
    }

    /// Takes the count without waiting (the descriptor does not block).
    fn clear(&self) {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live local array.
        unsafe { libc::read(self.fd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
    }
}

/// The shard as the TLS session's peer while one connection's records are fed: records
/// to send go to the connection's queue, plaintext to the stage above TLS.
struct TlsUp<'a, S: Service> {
    shard: &'a mut Shard<S>,
    key: ConnKey,
    inner: &'a mut Transport,
}

impl<S: Service> tls::Peer for TlsUp<'_, S> {
    fn send(&mut self, records: &[u8]) {
        self.shard.io.append_records(self.key, records);
    }

    fn established(&mut self, state: &CommonState) {
        self.shard.tls_established(self.key, state, self.inner);
    }

    fn received(&mut self, data: &[u8]) -> bool {
        if !self.shard.io.is_open(self.key) {
            return false;
        }
        // rustls lends the plaintext read-only; the stages above work in place.
        let mut plain = std::mem::take(&mut self.shard.tls_plain);
        plain.clear();
        plain.extend_from_slice(data);
        self.shard.stage_input(self.key, self.inner, &mut plain);
        self.shard.tls_plain = plain;
        self.shard.io.is_open(self.key)
    }
}

/// The IP address in a `sockaddr_in` or `sockaddr_in6` of `len` bytes the kernel wrote
/// (`len` < 0: its error).
fn peer_ip(buf: &[u8], len: i32) -> Option<std::net::IpAddr> {
    peer_sockaddr(buf, len).map(|a| a.ip())
}

/// The address in a `sockaddr_in` or `sockaddr_in6` of `len` bytes the kernel wrote
/// (`len` < 0: its error).
fn peer_sockaddr(buf: &[u8], len: i32) -> Option<std::net::SocketAddr> {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    let len = usize::try_from(len).ok()?.min(buf.len());
    let buf = &buf[..len];
    let family = i32::from(u16::from_ne_bytes(buf.get(..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let octets: [u8; 4] = buf.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::from((Ipv4Addr::from(octets), port)))
        }
        libc::AF_INET6 => {
            let octets: [u8; 16] = buf.get(8..24)?.try_into().ok()?;
            let v6 = Ipv6Addr::from(octets);
            // An IPv4 client of a dual-stack listener is the IPv4 address it is.
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => SocketAddr::from((v4, port)),
                None => SocketAddr::from((v6, port)),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_ip_reads_both_families() {
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&1883u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(peer_ip(&v4, 16), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(
            peer_sockaddr(&v4, 16),
            Some("10.1.2.3:1883".parse().unwrap())
        );
        assert_eq!(peer_ip(&v4, -22), None);
        let mut v6 = [0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[8..24].copy_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        assert_eq!(peer_ip(&v6, 28), Some("2001:db8::7".parse().unwrap()));
        v6[8..24].copy_from_slice(
            &"::ffff:192.0.2.9"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        assert_eq!(peer_ip(&v6, 28), Some("192.0.2.9".parse().unwrap()));
        assert_eq!(peer_ip(&v6, 4), None);
    }
}
