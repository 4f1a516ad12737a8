//! One worker thread: one io_uring ring driving thousands of clients.
//!
//! Each client is a state machine in a `Vec`, driven by completions:
//!
//! ```text
//! Idle ─► Connecting ─► [Handshaking] ─► [Upgrading] ─► Connack ─► [Suback] ─► Ready ─► [Leaving] ─► Closing ─► Done
//!              │ socket → setsockopt(TCP_NODELAY) → bind → connect, linked, into a fixed slot
//!              └─ any failure or loss ─► Closing ─► Backoff (1 s, 2 s, 4 s … 30 s) ─► Connecting
//! ```
//!
//! A loop turn: submit everything queued and wait (one `io_uring_enter`), read the clock,
//! handle the completions (multishot receives are decoded in place from the provided
//! buffer, and the buffer is handed back at once), run due timers (keepalive, connect
//! deadlines, retries), start paced connection attempts, publish what the rate allows,
//! and queue one send per client with bytes waiting (over TLS, sealed into records by
//! rustls' unbuffered API, `ringmq_shard::tls`, as the broker does). Messages are stamped with the turn's
//! clock and latencies are recorded into this thread's histogram, which is handed to the
//! main thread once per second.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use hdrhistogram::Histogram;
use io_uring::{opcode, squeue, types};
use ringmq_proto::Decoded;
use ringmq_proto::mqtt::{
    ConnAck, Connect, Disconnect, Packet, Properties, Property, PubResp, Publish, QoS, ReasonCode,
    Subscribe, SubscribeFilters, SubscriptionOptions, Version,
};
use ringmq_proto::ws::{self, Event, FrameDecoder, Opcode, Role};
use ringmq_shard::listen::SockAddr;
use ringmq_shard::ring::{BufRing, Completion, GEN_MASK, OpKind, Ring};
use ringmq_shard::tls::{Fed, Peer, Pump};
use rustls::CommonState;
use rustls::client::UnbufferedClientConnection;

use crate::backoff::{self, Rng};
use crate::config::{Config, Transport};
use crate::control::{Control, Counters, IntervalMsg, PHASE_RUN, PHASE_STOP, new_histogram};
use crate::payload::{self, Header};
use crate::plan::Plan;
use crate::seq::{SeqCounters, SeqTable};
use crate::stream;
use crate::sys::now_ns;

/// What a client's operation was for, carried in its `user_data` (see [`Token`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    /// `socket()` straight into a fixed-file slot.
    Socket = 1,
    /// `setsockopt(TCP_NODELAY)`.
    SockOpt = 2,
    /// `bind()` to a source address, port 0.
    Bind = 3,
    Connect = 4,
    /// Multishot receive into the provided-buffer ring.
    Recv = 5,
    Send = 6,
    /// `shutdown()` followed (linked) by the close of the slot.
    Shutdown = 7,
    Close = 8,
    /// Cancels a pending connect that ran past its deadline.
    Cancel = 9,
}

impl OpKind for Op {
    fn to_u8(self) -> u8 {
        self as u8
    }

    fn from_u8(byte: u8) -> Option<Op> {
        Some(match byte {
            1 => Op::Socket,
            2 => Op::SockOpt,
            3 => Op::Bind,
            4 => Op::Connect,
            5 => Op::Recv,
            6 => Op::Send,
            7 => Op::Shutdown,
            8 => Op::Close,
            9 => Op::Cancel,
            _ => return None,
        })
    }
}

/// A swarm operation's token: `index` is the client's place in its worker, `gen_` names
/// the connection attempt, so a completion for a replaced attempt is recognised.
type Token = ringmq_shard::ring::Token<Op>;

/// Submission queue entries per ring.
const RING_ENTRIES: u32 = 4096;
/// Provided receive buffers per ring, and their size.
const RECV_BUFFERS: u16 = 4096;
const RECV_BUFFER_SIZE: u32 = 16 * 1024;
const BUFFER_GROUP: u16 = 0;
/// Bytes reserved at the front of a WebSocket client's send buffer for the frame head.
const WS_ROOM: usize = ws::MAX_HEAD_LEN;
/// The largest packet accepted from the broker.
const MAX_PACKET: u32 = 64 * 1024 * 1024;
/// The most bytes a publisher queues for sending before it waits for the socket.
const OUT_HIGH_WATER: usize = 64 * 1024;
/// Open loop: the most messages one publisher queues per loop turn.
const OPEN_LOOP_BATCH: usize = 64;
/// Rate mode: the most messages one worker publishes per loop turn.
const MAX_PUBLISH_PER_TURN: u64 = 16_384;
/// The shortest sleep between paced publishing turns.
const PUBLISH_TICK_NS: u64 = 200_000;
/// The longest a worker sleeps, so that it sees phase changes quickly.
const MAX_WAIT: Duration = Duration::from_millis(10);
/// Once stopping, how long a worker waits for its connections to close.
const STOP_GRACE_NS: u64 = 3_000_000_000;
/// Ring and WebSocket limits.
const MAX_WS_MESSAGE: u64 = 1 << 30;
const MAX_HTTP_HEAD: usize = 16 * 1024;
const NS_PER_SEC: u64 = 1_000_000_000;
/// How long a client waits for the broker to close after its DISCONNECT.
const LEAVE_WAIT_NS: u64 = 1_000_000_000;

/// A client's worker as its TLS session's peer while records are fed: records to send
/// queue on the client, plaintext goes to `Core::on_plain`.
struct TlsPeer<'a> {
    core: &'a mut Core,
    li: usize,
    failed: Option<String>,
}

impl Peer for TlsPeer<'_> {
    fn send(&mut self, records: &[u8]) {
        if let Some(tls) = &mut self.core.clients[self.li].tls {
            tls.records.extend_from_slice(records);
        }
        self.core.mark_dirty(self.li);
    }

    fn established(&mut self, _state: &CommonState) {
        self.core.open_stream(self.li);
    }

    fn received(&mut self, data: &[u8]) -> bool {
        let mut plain = std::mem::take(&mut self.core.tls_plain);
        plain.clear();
        plain.extend_from_slice(data);
        let r = self.core.on_plain(self.li, &mut plain);
        self.core.tls_plain = plain;
        if let Err(e) = r {
            self.failed = Some(e);
            return false;
        }
        self.core.clients[self.li].is_live()
    }
}

/// Collects the records a session starts with (the ClientHello).
struct Records<'a>(&'a mut Vec<u8>);

impl Peer for Records<'_> {
    fn send(&mut self, records: &[u8]) {
        self.0.extend_from_slice(records);
    }

    fn established(&mut self, _state: &CommonState) {}

    fn received(&mut self, _data: &[u8]) -> bool {
        true
    }
}

/// `setsockopt` reads the option value from here while the operation runs.
static ONE: libc::c_int = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not started yet (waiting for connection pacing).
    Idle,
    /// Waiting for the retry timer.
    Backoff,
    /// socket → bind → connect in flight.
    Connecting,
    /// TLS handshake in progress.
    Handshaking,
    /// WebSocket upgrade request sent, waiting for `101`.
    Upgrading,
    /// CONNECT sent, waiting for CONNACK.
    Connack,
    /// SUBSCRIBE sent, waiting for SUBACK.
    Suback,
    Ready,
    /// DISCONNECT sent: waiting for the broker to close first, so that TIME_WAIT (and
    /// its port) stays on the broker's side, not on the swarm's.
    Leaving,
    /// shutdown + close in flight.
    Closing,
    /// Finished for good.
    Done,
}

/// Packet identifiers of one publisher's unacknowledged QoS 1/2 publishes: identifiers
/// 1..=window, handed out from a free list.
struct PkidPool {
    free: Vec<u16>,
    /// Per identifier (index pkid - 1): `PKID_FREE` or the acknowledgement awaited.
    state: Vec<u8>,
}

const PKID_FREE: u8 = 0;
const AWAIT_PUBACK: u8 = 1;
const AWAIT_PUBREC: u8 = 2;
const AWAIT_PUBCOMP: u8 = 3;

impl PkidPool {
    fn new(window: u16) -> PkidPool {
        PkidPool {
            free: (1..=window).rev().collect(),
            state: vec![PKID_FREE; usize::from(window)],
        }
    }

    fn reset(&mut self, window: u16) {
        *self = PkidPool::new(window);
    }

    fn in_flight(&self) -> usize {
        self.state.len() - self.free.len()
    }

    fn take(&mut self, awaiting: u8) -> Option<u16> {
        let pkid = self.free.pop()?;
        self.state[usize::from(pkid) - 1] = awaiting;
        Some(pkid)
    }

    /// The state of `pkid`, if it is one of ours.
    fn get(&self, pkid: u16) -> Option<u8> {
        self.state.get(usize::from(pkid).wrapping_sub(1)).copied()
    }

    fn set(&mut self, pkid: u16, state: u8) {
        let i = usize::from(pkid) - 1;
        if state == PKID_FREE && self.state[i] != PKID_FREE {
            self.free.push(pkid);
        }
        self.state[i] = state;
    }
}

struct Publisher {
    id: u32,
    /// Topic numbers it publishes to, and the next sequence number for each.
    targets: Vec<u32>,
    seqs: Vec<u64>,
    pkids: PkidPool,
    /// When each packet id's PUBLISH was made (index pkid - 1), for the time to its
    /// PUBACK (QoS 1) or PUBREC (QoS 2).
    sent_ns: Vec<u64>,
}

struct WsState {
    key: [u8; 16],
    upgraded: bool,
    decoder: FrameDecoder,
    /// Received bytes not yet usable: the HTTP answer until complete, then at most one
    /// partial frame head or control frame.
    carry: Vec<u8>,
    /// Control frames (pongs) waiting to be sent on their own.
    ctrl: Vec<u8>,
}

/// A client's TLS: the session (out of its place while it is fed) and records to send
/// before anything sealed later.
struct ClientTls {
    pump: Option<Pump<UnbufferedClientConnection>>,
    records: Vec<u8>,
}

struct Client {
    /// The client's number in the run.
    global: u32,
    /// Names the current connection attempt in operation tokens (24 bits used).
    gen_: u32,
    state: State,
    slot: u32,
    /// The fixed slot holds a socket (until its close completes).
    has_socket: bool,
    /// TCP is connected (counted in `open`).
    established: bool,
    /// Counted in the worker's attempts in progress.
    attempting: bool,
    timed_out: bool,
    /// Retry after the close completes.
    retry: bool,
    /// Leaving to connect again (`--reconnect-every`): the broker's close is not the end.
    rejoin: bool,
    recv_armed: bool,
    /// A send is in flight (from `inflight`); cleared by its completion whatever the
    /// attempt, so buffers are never touched while the kernel reads them.
    sending: bool,
    /// On the worker's flush list.
    dirty: bool,
    /// Disconnect once everything queued is sent.
    close_when_flushed: bool,
    out: Vec<u8>,
    inflight: Vec<u8>,
    send_pos: usize,
    send_end: usize,
    /// The front of a packet split across receives.
    carry: Vec<u8>,
    ws: Option<Box<WsState>>,
    /// Over TLS: the current connection's session.
    tls: Option<Box<ClientTls>>,
    subscribe: Option<u32>,
    publisher: Option<Box<Publisher>>,
    /// Sequence state per publisher heard from; kept across reconnections.
    table: Option<Box<SeqTable>>,
    /// Failed attempts since the last success.
    failures: u32,
    attempt_start_ns: u64,
    last_send_ns: u64,
    /// Our keepalive, or the MQTT 5 Server Keep Alive the broker imposed.
    keepalive_ns: u64,
    connected_once: bool,
}

impl Client {
    /// The send buffer, with room for a frame head reserved on a WebSocket connection.
    fn out_buf(&mut self) -> &mut Vec<u8> {
        let framed = self.ws.as_ref().is_some_and(|w| w.upgraded);
        if framed && self.out.is_empty() {
            self.out.resize(WS_ROOM, 0);
        }
        &mut self.out
    }

    fn has_output(&self) -> bool {
        self.has_plain_output() || self.tls.as_ref().is_some_and(|t| !t.records.is_empty())
    }

    /// MQTT bytes or WebSocket frames waiting (below TLS, if any).
    fn has_plain_output(&self) -> bool {
        let room = if self.ws.as_ref().is_some_and(|w| w.upgraded) {
            WS_ROOM
        } else {
            0
        };
        self.out.len() > room || self.ws.as_ref().is_some_and(|w| !w.ctrl.is_empty())
    }

    fn queued_bytes(&self) -> usize {
        self.out.len() + (self.send_end - self.send_pos)
    }

    /// TCP up and not being torn down.
    fn is_live(&self) -> bool {
        matches!(
            self.state,
            State::Handshaking | State::Upgrading | State::Connack | State::Suback | State::Ready
        )
    }
}

/// What the main thread hands a worker.
pub struct WorkerSetup {
    pub id: usize,
    pub cfg: Arc<Config>,
    pub plan: Arc<Plan>,
    pub control: Arc<Control>,
    /// The clients (run numbers) this worker runs.
    pub clients: Vec<u32>,
    pub intervals: Sender<IntervalMsg>,
}

/// What a worker hands back at the end.
pub struct WorkerResult {
    pub counters: Counters,
    pub seq: SeqCounters,
    /// (topic, publisher, messages sent to that topic).
    pub published: Vec<(u32, u32, u64)>,
    /// (topic, sequence table) per subscriber.
    pub subscribers: Vec<(u32, SeqTable)>,
    /// Microseconds from the socket to CONNACK, per successful connection.
    pub connect_hist: Histogram<u64>,
    /// Microseconds from a QoS 1/2 PUBLISH sent inside the measured window to its
    /// PUBACK (QoS 1) or PUBREC (QoS 2).
    pub ack_hist: Histogram<u64>,
    /// Distinct error messages with their counts.
    pub errors: Vec<(String, u64)>,
}

/// Distinct errors, counted; the first 32 kinds kept.
#[derive(Default)]
struct ErrorLog(Vec<(String, u64)>);

impl ErrorLog {
    fn record(&mut self, what: std::fmt::Arguments<'_>) {
        let text = what.to_string();
        if let Some(e) = self.0.iter_mut().find(|(t, _)| *t == text) {
            e.1 += 1;
        } else if self.0.len() < 32 {
            self.0.push((text, 1));
        }
    }
}

fn errno_name(res: i32) -> String {
    std::io::Error::from_raw_os_error(-res).to_string()
}

/// The addresses operations point at: boxed, never moved or changed while the ring lives.
struct Addrs {
    domain: i32,
    /// Every target; client i connects to the (i mod k)-th.
    targets: Vec<SockAddr>,
    /// Where the clients that only publish connect, if elsewhere.
    publishers: Option<SockAddr>,
    sources: Vec<SockAddr>,
}

/// A timer: (deadline ns, client, attempt generation, kind).
type Timer = Reverse<(u64, u32, u32, TimerKind)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// The attempt must be ready by now.
    Deadline,
    /// Send a PINGREQ if nothing was sent for a keepalive interval.
    Ping,
    /// Back-off over: try again.
    Retry,
    /// Leave and connect again (`--reconnect-every`).
    Rejoin,
}

/// Everything but the buffer ring, so that received bytes (borrowed from the buffer ring)
/// can be handed to methods that change the rest.
struct Core {
    ring: Ring,
    id: usize,
    cfg: Arc<Config>,
    plan: Arc<Plan>,
    control: Arc<Control>,
    addrs: Box<Addrs>,
    clients: Vec<Client>,
    free_slots: Vec<u32>,
    timers: BinaryHeap<Timer>,
    flush_list: Vec<u32>,
    rearm_list: Vec<u32>,
    rng: Rng,
    c: Counters,
    seq: SeqCounters,
    errors: ErrorLog,
    version: Version,
    qos: QoS,
    run_id: u32,
    keepalive_ns: u64,
    connect_timeout_ns: u64,
    /// The payload sent; its header is rewritten per message.
    payload: Vec<u8>,
    /// A TLS record's plaintext, handed on as a mutable slice (frames unmask in place).
    tls_plain: Vec<u8>,
    topic_buf: String,
    id_buf: String,
    /// Latencies (µs) of the current one-second interval.
    hist: Histogram<u64>,
    hist_index: u64,
    intervals: Sender<IntervalMsg>,
    connect_hist: Histogram<u64>,
    ack_hist: Histogram<u64>,
    now: u64,
    phase: u8,
    publish_start: u64,
    measure_start: u64,
    measure_end: u64,
    stopping: bool,
    stop_deadline: u64,
    /// Clients not yet `Done`.
    alive: usize,
    /// Next client to start for the first time, and attempts in progress.
    next_initial: usize,
    connecting: u32,
    connect_rate: f64,
    /// Local indices of publishing clients, the round-robin cursor, and messages
    /// accounted against the rate (sent or skipped).
    publishers: Vec<u32>,
    pub_cursor: usize,
    pub_budget_used: u64,
    pub_rate: f64,
    last_store_ns: u64,
}

pub fn run_worker(setup: WorkerSetup) -> std::io::Result<WorkerResult> {
    let files = setup.clients.len().max(1) as u32;
    // Every connection's multishot receive may post while the worker is busy.
    let ring = Ring::new(RING_ENTRIES, RING_ENTRIES * 8, files)?;
    let bufs = BufRing::new(
        &ring,
        BUFFER_GROUP,
        RECV_BUFFERS,
        RECV_BUFFERS,
        RECV_BUFFER_SIZE,
    )?;
    let mut core = Core::new(ring, setup);
    let mut cqes: Vec<Completion> = Vec::with_capacity(RING_ENTRIES as usize * 8);
    let mut w = Worker { core, bufs };
    w.run(&mut cqes)?;
    core = w.core;
    Ok(core.finish())
}

struct Worker {
    // Field order: the ring (in `core`) is dropped before the buffers it reads into.
    core: Core,
    bufs: BufRing,
}

impl Worker {
    fn run(&mut self, cqes: &mut Vec<Completion>) -> std::io::Result<()> {
        let mut wait_for = 0;
        let mut timeout = Duration::ZERO;
        loop {
            self.core.ring.enter(wait_for, Some(timeout))?;
            self.core.now = now_ns();
            self.core.ring.reap(cqes);
            self.core.c.turns += 1;
            self.core.c.completions += cqes.len() as u64;
            for cqe in cqes.iter() {
                self.completion(cqe);
            }
            self.bufs.commit();
            let core = &mut self.core;
            core.sync_phase();
            core.roll_interval();
            core.run_timers();
            core.start_connections();
            let more_to_publish = core.publish();
            core.flush();
            core.rearm();
            core.store_counters(false);
            if core.stopping && (core.alive == 0 || core.now >= core.stop_deadline) {
                core.store_counters(true);
                return Ok(());
            }
            if more_to_publish {
                wait_for = 0;
                timeout = Duration::ZERO;
            } else {
                wait_for = 1;
                timeout = core.next_wake();
            }
        }
    }

    fn completion(&mut self, cqe: &Completion) {
        let Some(tok) = cqe.token::<Op>() else {
            return;
        };
        if tok.op == Op::Recv {
            let bid = cqe.buffer_id();
            if let Some(bid) = bid {
                let len = usize::try_from(cqe.result).unwrap_or(0);
                let data = self.bufs.get(bid, len);
                self.core.on_recv(tok, cqe.result, cqe.more(), data);
                self.bufs.recycle(bid);
            } else {
                self.core.on_recv(tok, cqe.result, cqe.more(), &mut []);
            }
            return;
        }
        self.core.on_completion(tok, cqe.result);
    }
}

impl Core {
    fn new(ring: Ring, setup: WorkerSetup) -> Core {
        let cfg = setup.cfg;
        let plan = setup.plan;
        let threads = cfg.threads as f64;
        let rng = Rng::new(cfg.seed ^ (setup.id as u64).wrapping_mul(0x9e37_79b9));
        let domain = if cfg.target.addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let addrs = Box::new(Addrs {
            domain,
            targets: cfg.target_addrs.iter().map(|a| SockAddr::new(*a)).collect(),
            publishers: cfg.publishers_addr.map(SockAddr::new),
            sources: cfg
                .source_addrs
                .iter()
                .map(|ip: &IpAddr| SockAddr::new(SocketAddr::new(*ip, 0)))
                .collect(),
        });
        let window = cfg.inflight;
        let publishes_qos = cfg.qos != QoS::AtMostOnce;
        let mut publishers = Vec::new();
        let mut clients = Vec::with_capacity(setup.clients.len());
        // Roles are drawn from a generator seeded by the run seed, not the worker's, so
        // that peer choices do not depend on the thread count.
        let mut role_rng = Rng::new(cfg.seed);
        for (li, &global) in setup.clients.iter().enumerate() {
            let mut per_client = Rng::new(role_rng.next_u64() ^ u64::from(global));
            let role = plan.role(global, &mut per_client);
            let publisher = role.publish.map(|(id, targets)| {
                publishers.push(li as u32);
                Box::new(Publisher {
                    id,
                    seqs: vec![0; targets.len()],
                    targets,
                    pkids: PkidPool::new(if publishes_qos { window } else { 0 }),
                    sent_ns: vec![
                        0;
                        if publishes_qos {
                            usize::from(u16::MAX)
                        } else {
                            0
                        }
                    ],
                })
            });
            let table = role.subscribe.map(|_| {
                Box::new(if plan.single_topic() {
                    SeqTable::dense(plan.publishers)
                } else {
                    SeqTable::sparse()
                })
            });
            let ws = match &cfg.target.transport {
                Transport::Tcp => None,
                Transport::Ws { .. } => Some(Box::new(WsState {
                    key: [0; 16],
                    upgraded: false,
                    decoder: FrameDecoder::new(Role::Client, MAX_WS_MESSAGE),
                    carry: Vec::new(),
                    ctrl: Vec::new(),
                })),
            };
            clients.push(Client {
                global,
                gen_: 0,
                state: State::Idle,
                slot: 0,
                has_socket: false,
                established: false,
                attempting: false,
                timed_out: false,
                retry: false,
                rejoin: false,
                recv_armed: false,
                sending: false,
                dirty: false,
                close_when_flushed: false,
                out: Vec::new(),
                inflight: Vec::new(),
                send_pos: 0,
                send_end: 0,
                carry: Vec::new(),
                ws,
                tls: None,
                subscribe: role.subscribe,
                publisher,
                table,
                failures: 0,
                attempt_start_ns: 0,
                last_send_ns: 0,
                keepalive_ns: u64::from(cfg.keepalive) * NS_PER_SEC,
                connected_once: false,
            });
        }
        let n = clients.len();
        let total_publishers = f64::from(cfg.publishers.max(1));
        Core {
            ring,
            id: setup.id,
            version: cfg.version,
            qos: cfg.qos,
            run_id: setup.control.run_id,
            keepalive_ns: u64::from(cfg.keepalive) * NS_PER_SEC,
            connect_timeout_ns: cfg.connect_timeout.as_nanos() as u64,
            payload: payload::template(cfg.payload),
            tls_plain: Vec::new(),
            connect_rate: cfg.connect_rate / threads,
            pub_rate: cfg.rate * publishers.len() as f64 / total_publishers,
            publishers,
            addrs,
            free_slots: (0..n as u32).rev().collect(),
            clients,
            timers: BinaryHeap::new(),
            flush_list: Vec::new(),
            rearm_list: Vec::new(),
            rng,
            c: Counters::default(),
            seq: SeqCounters::default(),
            errors: ErrorLog::default(),
            topic_buf: String::new(),
            id_buf: String::new(),
            hist: new_histogram(),
            hist_index: 0,
            intervals: setup.intervals,
            connect_hist: new_histogram(),
            ack_hist: new_histogram(),
            now: now_ns(),
            phase: setup.control.phase(),
            publish_start: u64::MAX,
            measure_start: u64::MAX,
            measure_end: u64::MAX,
            stopping: false,
            stop_deadline: u64::MAX,
            alive: n,
            next_initial: 0,
            connecting: 0,
            pub_cursor: 0,
            pub_budget_used: 0,
            last_store_ns: 0,
            control: setup.control,
            cfg,
            plan,
        }
    }

    fn finish(mut self) -> WorkerResult {
        self.send_interval();
        let _ = self.intervals.send(IntervalMsg {
            worker: self.id,
            index: crate::control::WORKER_DONE,
            hist: None,
        });
        let mut published = Vec::new();
        let mut subscribers = Vec::new();
        for c in &mut self.clients {
            if let Some(p) = &c.publisher {
                for (t, &n) in p.targets.iter().zip(&p.seqs) {
                    published.push((*t, p.id, n));
                }
            }
            if let (Some(t), Some(table)) = (c.subscribe, c.table.take()) {
                subscribers.push((t, *table));
            }
        }
        WorkerResult {
            counters: self.c,
            seq: self.seq,
            published,
            subscribers,
            connect_hist: self.connect_hist,
            ack_hist: self.ack_hist,
            errors: self.errors.0,
        }
    }

    // ---- phases, timers, pacing ------------------------------------------------------

    fn sync_phase(&mut self) {
        let phase = self.control.phase();
        if phase == self.phase {
            return;
        }
        if phase >= PHASE_RUN && self.publish_start == u64::MAX {
            use std::sync::atomic::Ordering::Relaxed;
            self.publish_start = self.control.publish_start_ns.load(Relaxed);
            self.measure_start = self.control.measure_start_ns.load(Relaxed);
            self.measure_end = self.control.measure_end_ns.load(Relaxed);
        }
        self.phase = phase;
        if phase == PHASE_STOP {
            self.begin_stop();
        }
    }

    fn begin_stop(&mut self) {
        self.stopping = true;
        self.stop_deadline = self.now + STOP_GRACE_NS;
        for li in 0..self.clients.len() {
            let c = &mut self.clients[li];
            c.retry = false;
            match c.state {
                State::Idle | State::Backoff => self.set_done(li),
                State::Connecting => {
                    let gen_ = c.gen_;
                    self.cancel_connect(li, gen_);
                }
                State::Ready => {
                    let version = self.version;
                    let disconnect = Packet::Disconnect(Disconnect {
                        reason: ReasonCode::NORMAL_DISCONNECTION,
                        properties: Properties::EMPTY,
                    });
                    let _ = disconnect.encode_to_vec(version, c.out_buf());
                    c.close_when_flushed = true;
                    self.mark_dirty(li);
                }
                State::Handshaking | State::Upgrading | State::Connack | State::Suback => {
                    self.end_connection(li, false)
                }
                State::Leaving | State::Closing | State::Done => {}
            }
        }
    }

    /// Cancels the pending connect of attempt `gen_`; its completion (-ECANCELED) then
    /// ends the attempt.
    fn cancel_connect(&mut self, li: usize, gen_: u32) {
        let tok = Token::new(Op::Connect, li as u32, gen_).encode();
        let cancel = opcode::AsyncCancel::new(tok)
            .build()
            .user_data(Token::new(Op::Cancel, li as u32, gen_).encode());
        self.push(&[cancel]);
    }

    fn set_done(&mut self, li: usize) {
        let c = &mut self.clients[li];
        if c.state != State::Done {
            c.state = State::Done;
            self.alive -= 1;
        }
    }

    /// When the loop must wake even if nothing completes.
    fn next_wake(&self) -> Duration {
        let mut wake = self.now + MAX_WAIT.as_nanos() as u64;
        if let Some(Reverse((t, ..))) = self.timers.peek() {
            wake = wake.min(*t);
        }
        if self.phase == PHASE_RUN && self.pub_rate > 0.0 && self.now < self.measure_end {
            let next = self.publish_start
                + ((self.pub_budget_used + 1) as f64 * 1e9 / self.pub_rate) as u64;
            // High rates are published in small bursts rather than one wake-up each.
            wake = wake.min(next.max(self.now + PUBLISH_TICK_NS));
        }
        if self.connect_rate > 0.0 && self.next_initial < self.clients.len() && !self.stopping {
            let next = self.control.start_ns
                + ((self.next_initial + 1) as f64 * 1e9 / self.connect_rate) as u64;
            wake = wake.min(next);
        }
        Duration::from_nanos(wake.saturating_sub(self.now).max(1_000))
    }

    fn add_timer(&mut self, at: u64, li: usize, kind: TimerKind) {
        let gen_ = self.clients[li].gen_;
        self.timers.push(Reverse((at, li as u32, gen_, kind)));
    }

    fn run_timers(&mut self) {
        while let Some(&Reverse((at, li, gen_, kind))) = self.timers.peek() {
            if at > self.now {
                break;
            }
            self.timers.pop();
            let li = li as usize;
            let c = &mut self.clients[li];
            if c.gen_ != gen_ {
                continue;
            }
            match kind {
                TimerKind::Deadline => self.deadline(li),
                TimerKind::Ping => self.ping(li),
                TimerKind::Retry if c.state == State::Backoff && !self.stopping => {
                    self.start_attempt(li);
                }
                TimerKind::Retry => {}
                TimerKind::Rejoin => self.rejoin(li),
            }
        }
    }

    /// Everything is sent after a DISCONNECT: wait (at most `LEAVE_WAIT_NS`) for the
    /// broker to close.
    fn leave(&mut self, li: usize) {
        let c = &mut self.clients[li];
        if c.state == State::Ready {
            self.c.ready -= 1;
        }
        c.state = State::Leaving;
        c.close_when_flushed = false;
        let at = self.now + LEAVE_WAIT_NS;
        self.add_timer(at, li, TimerKind::Deadline);
    }

    fn deadline(&mut self, li: usize) {
        let c = &mut self.clients[li];
        match c.state {
            State::Leaving => {
                let again = std::mem::take(&mut c.rejoin);
                self.end_connection(li, again);
            }
            State::Connecting => {
                c.timed_out = true;
                self.c.timeouts += 1;
                let gen_ = c.gen_;
                self.cancel_connect(li, gen_);
            }
            State::Handshaking | State::Upgrading | State::Connack | State::Suback => {
                self.c.timeouts += 1;
                let what = match c.state {
                    State::Handshaking => "the TLS handshake",
                    State::Upgrading => "WebSocket upgrade",
                    State::Connack => "CONNACK",
                    _ => "SUBACK",
                };
                self.errors
                    .record(format_args!("timed out waiting for {what}"));
                self.end_connection(li, true);
            }
            _ => {}
        }
    }

    /// `--reconnect-every`: once nothing it published waits for an acknowledgement, the
    /// client sends DISCONNECT, and connects again once the broker has closed.
    fn rejoin(&mut self, li: usize) {
        let now = self.now;
        let c = &mut self.clients[li];
        if c.state != State::Ready || self.stopping {
            return;
        }
        if c.publisher
            .as_ref()
            .is_some_and(|p| p.pkids.in_flight() > 0)
        {
            self.add_timer(now + 10_000_000, li, TimerKind::Rejoin);
            return;
        }
        let disconnect = Packet::Disconnect(Disconnect {
            reason: ReasonCode::NORMAL_DISCONNECTION,
            properties: Properties::EMPTY,
        });
        let _ = disconnect.encode_to_vec(self.version, c.out_buf());
        c.close_when_flushed = true;
        c.rejoin = true;
        self.c.rejoins += 1;
        self.mark_dirty(li);
    }

    fn ping(&mut self, li: usize) {
        let now = self.now;
        let c = &mut self.clients[li];
        let ka = c.keepalive_ns;
        if c.state != State::Ready || ka == 0 {
            return;
        }
        let due = c.last_send_ns + ka;
        if due > now {
            self.add_timer(due, li, TimerKind::Ping);
            return;
        }
        if !c.sending && !c.has_output() {
            let _ = Packet::PingReq.encode_to_vec(self.version, c.out_buf());
            self.c.pings += 1;
            self.mark_dirty(li);
        }
        self.add_timer(now + ka, li, TimerKind::Ping);
    }

    fn start_connections(&mut self) {
        if self.stopping {
            return;
        }
        let max_pending = self.cfg.max_pending.div_ceil(self.cfg.threads as u32);
        while self.next_initial < self.clients.len() && self.connecting < max_pending {
            if self.connect_rate > 0.0 {
                let elapsed = self.now.saturating_sub(self.control.start_ns) as f64 / 1e9;
                let allowed = (elapsed * self.connect_rate) as usize + 1;
                if self.next_initial >= allowed {
                    break;
                }
            }
            let li = self.next_initial;
            self.next_initial += 1;
            self.start_attempt(li);
        }
    }

    // ---- connection set-up and tear-down ------------------------------------------

    fn push(&mut self, entries: &[squeue::Entry]) {
        self.ring.push_all(entries);
    }

    /// socket → setsockopt(TCP_NODELAY) → [bind] → connect, linked, into a fixed slot.
    fn start_attempt(&mut self, li: usize) {
        let Some(slot) = self.free_slots.pop() else {
            // Cannot happen: one slot per client, freed before a retry is scheduled.
            self.errors.record(format_args!("no free fixed-file slot"));
            self.set_done(li);
            return;
        };
        let now = self.now;
        let c = &mut self.clients[li];
        if c.connected_once || c.failures > 0 {
            self.c.reconnects += 1;
        }
        c.gen_ = c.gen_.wrapping_add(1) & GEN_MASK;
        c.state = State::Connecting;
        c.slot = slot;
        c.has_socket = false;
        c.established = false;
        c.attempting = true;
        c.timed_out = false;
        c.retry = false;
        c.recv_armed = false;
        c.close_when_flushed = false;
        c.attempt_start_ns = now;
        c.carry.clear();
        c.out.clear();
        c.tls = None;
        if let Some(p) = &mut c.publisher {
            let window = p.pkids.state.len() as u16;
            p.pkids.reset(window);
        }
        let gen_ = c.gen_;
        self.connecting += 1;
        let tok = |op| Token::new(op, li as u32, gen_).encode();
        let fixed = types::Fixed(slot);
        let dest = types::DestinationSlot::try_from_slot_target(slot).expect("slot in range");
        let socket = opcode::Socket::new(self.addrs.domain, libc::SOCK_STREAM, 0)
            .file_index(Some(dest))
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(tok(Op::Socket));
        // A hard link: the connection goes ahead even if the option cannot be set.
        let nodelay = opcode::SetSockOpt::new(
            fixed,
            libc::IPPROTO_TCP as u32,
            libc::TCP_NODELAY as u32,
            (&raw const ONE).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
        .build()
        .flags(squeue::Flags::IO_HARDLINK)
        .user_data(tok(Op::SockOpt));
        let global = self.clients[li].global;
        // After each failure in a row the next target: a client of a node that is gone
        // goes on to the others.
        let shift = self.clients[li].failures as usize;
        let target = match &self.addrs.publishers {
            Some(p) if self.plan.publishes_only(global) => p,
            _ => &self.addrs.targets[(global as usize + shift) % self.addrs.targets.len()],
        };
        let connect = opcode::Connect::new(fixed, target.ptr(), target.len())
            .build()
            .user_data(tok(Op::Connect));
        let global = self.clients[li].global as usize;
        if self.addrs.sources.is_empty() {
            self.ring.push_all(&[socket, nodelay, connect]);
        } else {
            let src = &self.addrs.sources[global % self.addrs.sources.len()];
            let bind = opcode::Bind::new(fixed, src.ptr(), src.len())
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(tok(Op::Bind));
            self.ring.push_all(&[socket, nodelay, bind, connect]);
        }
        self.add_timer(now + self.connect_timeout_ns, li, TimerKind::Deadline);
    }

    /// The current attempt or connection is over: close its socket, then retry (after a
    /// back-off) or finish.
    fn end_connection(&mut self, li: usize, retry: bool) {
        let stopping = self.stopping;
        let c = &mut self.clients[li];
        if matches!(
            c.state,
            State::Closing | State::Done | State::Backoff | State::Idle
        ) {
            return;
        }
        if c.attempting {
            c.attempting = false;
            self.connecting -= 1;
        }
        if c.state == State::Ready {
            self.c.ready -= 1;
        }
        if c.established {
            c.established = false;
            self.c.open -= 1;
        }
        c.retry = retry && !stopping;
        c.close_when_flushed = false;
        if let Some(p) = &mut c.publisher {
            // Unacknowledged publishes die with the connection (clean session).
            self.c.inflight -= p.pkids.in_flight() as u64;
            let window = p.pkids.state.len() as u16;
            p.pkids.reset(window);
        }
        if c.has_socket {
            c.state = State::Closing;
            let slot = c.slot;
            let gen_ = c.gen_;
            let shutdown = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_RDWR)
                .build()
                .flags(squeue::Flags::IO_HARDLINK)
                .user_data(Token::new(Op::Shutdown, li as u32, gen_).encode());
            let close = opcode::Close::new(types::Fixed(slot))
                .build()
                .user_data(Token::new(Op::Close, li as u32, gen_).encode());
            self.push(&[shutdown, close]);
        } else {
            c.state = State::Closing;
            self.closed(li);
        }
    }

    /// The slot is free again.
    fn closed(&mut self, li: usize) {
        let c = &mut self.clients[li];
        c.has_socket = false;
        self.free_slots.push(c.slot);
        if c.retry && !self.stopping {
            c.failures += 1;
            c.state = State::Backoff;
            let delay = backoff::delay_ms(c.failures, &mut self.rng) * 1_000_000;
            let at = self.now + delay;
            self.add_timer(at, li, TimerKind::Retry);
        } else {
            self.set_done(li);
        }
    }

    fn on_completion(&mut self, tok: Token, res: i32) {
        let li = tok.index as usize;
        let Some(c) = self.clients.get_mut(li) else {
            return;
        };
        if tok.op == Op::Send {
            // Whatever the attempt, the buffer is free again.
            self.send_done(li, tok.gen_, res);
            return;
        }
        if c.gen_ != tok.gen_ {
            return;
        }
        match tok.op {
            Op::Socket => {
                if res >= 0 {
                    c.has_socket = true;
                } else {
                    self.errors
                        .record(format_args!("socket: {}", errno_name(res)));
                }
            }
            Op::SockOpt if res < 0 => {
                self.errors
                    .record(format_args!("setsockopt TCP_NODELAY: {}", errno_name(res)));
            }
            Op::Bind if res < 0 => {
                self.errors
                    .record(format_args!("bind: {}", errno_name(res)));
            }
            Op::Connect => self.connected(li, res),
            Op::Close if c.state == State::Closing => self.closed(li),
            _ => {}
        }
    }

    fn connected(&mut self, li: usize, res: i32) {
        let c = &mut self.clients[li];
        if c.state != State::Connecting {
            return;
        }
        if res < 0 {
            if !c.timed_out && !self.stopping {
                self.c.connect_failures += 1;
                if res != -libc::ECANCELED {
                    self.errors.record(format_args!(
                        "connect to {}: {}",
                        self.cfg.target.addr,
                        errno_name(res)
                    ));
                }
            }
            self.end_connection(li, true);
            return;
        }
        c.established = true;
        self.c.open += 1;
        if self.stopping {
            self.end_connection(li, false);
            return;
        }
        self.arm_recv(li);
        if let Some(tls) = &self.cfg.tls {
            let conn = UnbufferedClientConnection::new(tls.config.clone(), tls.server_name.clone());
            let mut pump = match conn {
                Ok(conn) => Pump::new(conn),
                Err(e) => {
                    self.errors.record(format_args!("TLS: {e}"));
                    self.end_connection(li, false);
                    return;
                }
            };
            let mut records = Vec::new();
            let started = pump.start(&mut Records(&mut records));
            if let Err(e) = started {
                self.errors.record(format_args!("TLS: {e}"));
                self.end_connection(li, true);
                return;
            }
            let c = &mut self.clients[li];
            c.tls = Some(Box::new(ClientTls {
                pump: Some(pump),
                records,
            }));
            c.state = State::Handshaking;
            self.mark_dirty(li);
            return;
        }
        self.open_stream(li);
    }

    /// The byte stream is up (TCP, or TLS over it): upgrade to WebSocket, or CONNECT.
    fn open_stream(&mut self, li: usize) {
        let c = &mut self.clients[li];
        if let (Some(ws), Transport::Ws { host, path }) = (&mut c.ws, &self.cfg.target.transport) {
            ws.upgraded = false;
            ws.decoder = FrameDecoder::new(Role::Client, MAX_WS_MESSAGE);
            ws.carry.clear();
            ws.ctrl.clear();
            let (a, b) = (self.rng.next_u64(), self.rng.next_u64());
            ws.key[..8].copy_from_slice(&a.to_le_bytes());
            ws.key[8..].copy_from_slice(&b.to_le_bytes());
            ws::handshake::write_request(host, path, &ws.key, Some("mqtt"), &mut c.out);
            c.state = State::Upgrading;
            self.mark_dirty(li);
        } else {
            self.send_connect(li);
        }
    }

    fn send_connect(&mut self, li: usize) {
        let plan = Arc::clone(&self.plan);
        plan.client_id(self.clients[li].global, &mut self.id_buf);
        let expiry = [Property::SessionExpiryInterval(self.cfg.session_expiry)];
        let properties = if self.cfg.persistent && self.version == Version::V5 {
            Properties::List(&expiry)
        } else {
            Properties::EMPTY
        };
        let connect = Packet::Connect(Connect {
            version: self.version,
            clean_start: !self.cfg.persistent,
            keep_alive: self.cfg.keepalive,
            client_id: &self.id_buf,
            will: None,
            username: self.cfg.username.as_deref(),
            password: self.cfg.password.as_deref().map(str::as_bytes),
            properties,
        });
        let c = &mut self.clients[li];
        let _ = connect.encode_to_vec(self.version, c.out_buf());
        c.state = State::Connack;
        self.mark_dirty(li);
    }

    fn arm_recv(&mut self, li: usize) {
        let c = &mut self.clients[li];
        if c.recv_armed || !c.established {
            return;
        }
        c.recv_armed = true;
        let recv = opcode::RecvMulti::new(types::Fixed(c.slot), BUFFER_GROUP)
            .build()
            .user_data(Token::new(Op::Recv, li as u32, c.gen_).encode());
        self.push(&[recv]);
    }

    fn rearm(&mut self) {
        while let Some(li) = self.rearm_list.pop() {
            let li = li as usize;
            if self.clients[li].is_live() || self.clients[li].state == State::Leaving {
                self.arm_recv(li);
            }
        }
    }

    // ---- sending ----------------------------------------------------------------------

    fn mark_dirty(&mut self, li: usize) {
        let c = &mut self.clients[li];
        if !c.dirty {
            c.dirty = true;
            self.flush_list.push(li as u32);
        }
    }

    /// One send per client with bytes waiting and none in flight.
    fn flush(&mut self) {
        let mut list = std::mem::take(&mut self.flush_list);
        for &li in &list {
            self.flush_one(li as usize);
        }
        list.clear();
        self.flush_list = list;
    }

    fn flush_one(&mut self, li: usize) {
        let now = self.now;
        let c = &mut self.clients[li];
        c.dirty = false;
        if c.sending || !c.established || !c.is_live() {
            return;
        }
        if !c.has_output() {
            if c.close_when_flushed {
                self.leave(li);
            }
            return;
        }
        c.inflight.clear();
        let (mut start, mut end) = (0, 0);
        let plain = c.has_plain_output();
        match &mut c.ws {
            _ if !plain => {}
            Some(ws) if !ws.ctrl.is_empty() => {
                // Control frames go on their own, before the data.
                std::mem::swap(&mut c.inflight, &mut ws.ctrl);
                (start, end) = (0, c.inflight.len());
            }
            Some(ws) if ws.upgraded => {
                std::mem::swap(&mut c.inflight, &mut c.out);
                let key = (self.rng.next_u64() as u32).to_ne_bytes();
                let body = c.inflight.len() - WS_ROOM;
                let mut head = [0u8; ws::MAX_HEAD_LEN];
                let n = ws::encode_head(true, Opcode::BINARY, body as u64, Some(key), &mut head);
                c.inflight[WS_ROOM - n..WS_ROOM].copy_from_slice(&head[..n]);
                ws::apply_mask(&mut c.inflight[WS_ROOM..], key, 0);
                (start, end) = (WS_ROOM - n, c.inflight.len());
            }
            _ => {
                std::mem::swap(&mut c.inflight, &mut c.out);
                (start, end) = (0, c.inflight.len());
            }
        }
        if let Some(tls) = &mut c.tls {
            // Records rustls still has to send, then the plaintext sealed behind them.
            let mut wire = std::mem::take(&mut tls.records);
            if end > start {
                let sealed = match tls.pump.as_mut() {
                    Some(pump) => pump.seal(&c.inflight[start..end], false, &mut wire),
                    None => Ok(false),
                };
                if !matches!(sealed, Ok(true)) {
                    let why = sealed
                        .map_or_else(|e| e.to_string(), |_| "data before the handshake".into());
                    self.errors.record(format_args!("TLS: {why}"));
                    self.c.protocol_errors += 1;
                    self.end_connection(li, true);
                    return;
                }
            }
            let mut plain_buf = std::mem::replace(&mut c.inflight, wire);
            plain_buf.clear();
            tls.records = plain_buf;
            (start, end) = (0, c.inflight.len());
        }
        c.send_pos = start;
        c.send_end = end;
        c.last_send_ns = now;
        self.submit_send(li);
    }

    fn submit_send(&mut self, li: usize) {
        let c = &mut self.clients[li];
        c.sending = true;
        let buf = &c.inflight[c.send_pos..c.send_end];
        let send = opcode::Send::new(types::Fixed(c.slot), buf.as_ptr(), buf.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(Token::new(Op::Send, li as u32, c.gen_).encode());
        self.push(&[send]);
    }

    fn send_done(&mut self, li: usize, gen_: u32, res: i32) {
        let c = &mut self.clients[li];
        c.sending = false;
        if c.gen_ != gen_ || !c.is_live() {
            c.send_pos = 0;
            c.send_end = 0;
            c.inflight.clear();
            if c.is_live() && c.has_output() {
                self.mark_dirty(li);
            }
            return;
        }
        if res < 0 {
            if !self.stopping {
                self.c.disconnects += 1;
                self.errors
                    .record(format_args!("send: {}", errno_name(res)));
            }
            self.end_connection(li, true);
            return;
        }
        c.send_pos += res as usize;
        if c.send_pos < c.send_end {
            self.submit_send(li);
            return;
        }
        c.send_pos = 0;
        c.send_end = 0;
        c.inflight.clear();
        if c.close_when_flushed && !c.has_output() {
            // The DISCONNECT is out: leave now, not at the next flush, so that the
            // broker's close, which may complete in this same batch, is the expected end
            // and not counted as a lost connection.
            self.leave(li);
        } else if c.has_output() || c.close_when_flushed {
            self.mark_dirty(li);
        }
    }

    // ---- receiving --------------------------------------------------------------------

    fn on_recv(&mut self, tok: Token, res: i32, more: bool, data: &mut [u8]) {
        let li = tok.index as usize;
        let Some(c) = self.clients.get_mut(li) else {
            return;
        };
        if c.gen_ != tok.gen_ {
            return;
        }
        if !more {
            c.recv_armed = false;
        }
        if c.state == State::Leaving {
            // Bytes after our DISCONNECT are ignored; the broker's close ends it.
            if res <= 0 && res != -libc::ENOBUFS {
                let again = std::mem::take(&mut c.rejoin);
                self.end_connection(li, again);
            } else if !more {
                self.rearm_list.push(li as u32);
            }
            return;
        }
        if !c.is_live() {
            return;
        }
        if res > 0 {
            if let Err(what) = self.on_bytes(li, data) {
                self.c.protocol_errors += 1;
                self.errors.record(format_args!("{what}"));
                self.end_connection(li, true);
                return;
            }
        } else if res == -libc::ENOBUFS {
            self.c.recv_nobufs += 1;
        } else {
            if !self.stopping {
                self.c.disconnects += 1;
                if res == 0 {
                    self.errors
                        .record(format_args!("connection closed by the broker"));
                } else {
                    self.errors
                        .record(format_args!("recv: {}", errno_name(res)));
                }
            }
            self.end_connection(li, true);
            return;
        }
        let c = &mut self.clients[li];
        if !c.recv_armed && c.is_live() {
            self.rearm_list.push(li as u32);
        }
    }

    fn on_bytes(&mut self, li: usize, data: &mut [u8]) -> Result<(), String> {
        if self.clients[li].tls.is_some() {
            return self.feed_tls(li, data);
        }
        self.on_plain(li, data)
    }

    /// TLS records in; what they carry goes to `on_plain`.
    fn feed_tls(&mut self, li: usize, data: &mut [u8]) -> Result<(), String> {
        let Some(mut pump) = self.clients[li].tls.as_mut().and_then(|t| t.pump.take()) else {
            return Ok(());
        };
        let mut peer = TlsPeer {
            core: self,
            li,
            failed: None,
        };
        let fed = pump.feed(data, &mut peer);
        let failed = peer.failed.take();
        if let Some(tls) = &mut self.clients[li].tls {
            tls.pump = Some(pump);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        match fed {
            Err(e) => Err(format!("TLS: {e}")),
            Ok(Fed::PeerClosed) => {
                if !self.stopping {
                    self.c.disconnects += 1;
                    self.errors.record(format_args!(
                        "connection closed by the broker (TLS close_notify)"
                    ));
                }
                self.end_connection(li, true);
                Ok(())
            }
            Ok(Fed::Handshaking | Fed::Open | Fed::Stopped) => Ok(()),
        }
    }

    /// MQTT bytes, or WebSocket (the upgrade answer, then frames) carrying them.
    fn on_plain(&mut self, li: usize, data: &mut [u8]) -> Result<(), String> {
        let Some(ws) = &mut self.clients[li].ws else {
            return self.feed_mqtt(li, data);
        };
        if ws.upgraded {
            return self.feed_ws(li, data);
        }
        ws.carry.extend_from_slice(data);
        let consumed =
            match ws::handshake::parse_response(&ws.carry, &ws.key, Some("mqtt"), MAX_HTTP_HEAD) {
                Ok(Decoded::Partial { .. }) => return Ok(()),
                Ok(Decoded::Complete(_, consumed)) => consumed,
                Err(e) => return Err(format!("WebSocket upgrade refused: {e:?}")),
            };
        ws.upgraded = true;
        let mut head_and_rest = std::mem::take(&mut ws.carry);
        self.send_connect(li);
        // Frames may have come right behind the `101`.
        self.feed_ws(li, &mut head_and_rest[consumed..])
    }

    /// WebSocket frames in, MQTT bytes out (see `stream::feed_ws`).
    fn feed_ws(&mut self, li: usize, data: &mut [u8]) -> Result<(), String> {
        let ws = self.clients[li].ws.as_mut().expect("a WebSocket client");
        let fresh = FrameDecoder::new(Role::Client, MAX_WS_MESSAGE);
        let mut decoder = std::mem::replace(&mut ws.decoder, fresh);
        let mut carry = std::mem::take(&mut ws.carry);
        let r = stream::feed_ws(&mut decoder, &mut carry, data, |event| {
            self.ws_event(li, event)
        });
        if let Some(ws) = &mut self.clients[li].ws {
            ws.decoder = decoder;
            ws.carry = carry;
        }
        r
    }

    /// Acts on one WebSocket event; whether the connection goes on.
    fn ws_event(&mut self, li: usize, event: Event<'_>) -> Result<bool, String> {
        match event {
            Event::Data { chunk, .. } => self.feed_mqtt(li, chunk)?,
            Event::Ping(payload) => {
                let key = (self.rng.next_u64() as u32).to_ne_bytes();
                let ws = self.clients[li].ws.as_mut().expect("a WebSocket client");
                ws::write_frame(Opcode::PONG, payload, Some(key), &mut ws.ctrl);
                self.mark_dirty(li);
            }
            Event::Pong(_) => {}
            Event::Close { code, .. } => {
                if !self.stopping {
                    self.c.disconnects += 1;
                    self.errors.record(format_args!(
                        "WebSocket closed by the broker ({:?})",
                        code.map(|c| c.0)
                    ));
                }
                self.end_connection(li, true);
            }
        }
        Ok(self.clients[li].is_live())
    }

    /// MQTT bytes in, packets handled (see `stream::feed_mqtt`).
    fn feed_mqtt(&mut self, li: usize, data: &[u8]) -> Result<(), String> {
        let mut carry = std::mem::take(&mut self.clients[li].carry);
        let version = self.version;
        let r = stream::feed_mqtt(&mut carry, data, version, MAX_PACKET, |packet| {
            self.packet(li, packet)?;
            Ok(self.clients[li].is_live())
        });
        self.clients[li].carry = carry;
        r
    }

    // ---- MQTT -------------------------------------------------------------------------

    fn packet(&mut self, li: usize, packet: Packet<'_>) -> Result<(), String> {
        let state = self.clients[li].state;
        match packet {
            Packet::Publish(p) => self.on_publish(li, &p),
            Packet::PubAck(r) => self.on_ack(li, &r, AWAIT_PUBACK),
            Packet::PubRec(r) => self.on_ack(li, &r, AWAIT_PUBREC),
            Packet::PubComp(r) => self.on_ack(li, &r, AWAIT_PUBCOMP),
            Packet::PubRel(r) => {
                self.respond(li, Packet::PubComp(PubResp::new(r.pkid)));
                Ok(())
            }
            Packet::ConnAck(ack) if state == State::Connack => self.on_connack(li, &ack),
            Packet::SubAck(ack) if state == State::Suback => {
                match ack.codes.first() {
                    Some(&code) if code <= 2 => self.ready(li),
                    code => {
                        self.c.suback_refused += 1;
                        self.errors.record(format_args!("SUBACK refused: {code:?}"));
                        self.end_connection(li, true);
                    }
                }
                Ok(())
            }
            Packet::PingResp | Packet::UnsubAck(_) => Ok(()),
            Packet::Disconnect(d) => {
                if !self.stopping {
                    self.c.disconnects += 1;
                    self.errors.record(format_args!(
                        "DISCONNECT from the broker, reason 0x{:02x}",
                        d.reason.0
                    ));
                }
                self.end_connection(li, true);
                Ok(())
            }
            other => Err(format!("unexpected packet in state {state:?}: {other:?}")),
        }
    }

    fn respond(&mut self, li: usize, packet: Packet<'_>) {
        let version = self.version;
        let c = &mut self.clients[li];
        let _ = packet.encode_to_vec(version, c.out_buf());
        self.mark_dirty(li);
    }

    fn on_connack(&mut self, li: usize, ack: &ConnAck<'_>) -> Result<(), String> {
        if ack.code != 0 {
            self.c.connack_refused += 1;
            self.errors
                .record(format_args!("CONNACK refused: code 0x{:02x}", ack.code));
            self.end_connection(li, true);
            return Ok(());
        }
        let now = self.now;
        let c = &mut self.clients[li];
        self.c.connacks += 1;
        if !c.connected_once {
            c.connected_once = true;
            self.c.first_connacks += 1;
            self.c.last_first_connack_ns = now;
        }
        self.connect_hist
            .saturating_record((now - c.attempt_start_ns) / 1_000);
        c.keepalive_ns = match ack.properties.server_keep_alive() {
            Some(ka) => u64::from(ka) * NS_PER_SEC,
            None => self.keepalive_ns,
        };
        if let (Some(max), Some(p)) = (ack.properties.receive_maximum(), &mut c.publisher) {
            let window = self.cfg.inflight.min(max);
            if self.qos != QoS::AtMostOnce && usize::from(window) != p.pkids.state.len() {
                p.pkids.reset(window);
            }
        }
        if let Some(t) = c.subscribe {
            let plan = Arc::clone(&self.plan);
            plan.topic_name(t, &mut self.topic_buf);
            let filters = [(self.topic_buf.as_str(), SubscriptionOptions::new(self.qos))];
            let sub = Packet::Subscribe(Subscribe {
                pkid: 1,
                properties: Properties::EMPTY,
                filters: SubscribeFilters::List(&filters),
            });
            let c = &mut self.clients[li];
            let _ = sub.encode_to_vec(self.version, c.out_buf());
            c.state = State::Suback;
            self.mark_dirty(li);
        } else {
            self.ready(li);
        }
        Ok(())
    }

    fn ready(&mut self, li: usize) {
        let now = self.now;
        let c = &mut self.clients[li];
        c.state = State::Ready;
        c.failures = 0;
        if c.attempting {
            c.attempting = false;
            self.connecting -= 1;
        }
        self.c.ready += 1;
        if c.keepalive_ns > 0 {
            let at = now + c.keepalive_ns;
            self.add_timer(at, li, TimerKind::Ping);
        }
        if let Some(every) = self.cfg.reconnect_every {
            // Jittered ±25 %, so clients do not all leave at once.
            let ns = every.as_nanos() as u64;
            let jitter = self.rng.next_u64() % (ns / 2 + 1);
            let at = now + ns - ns / 4 + jitter;
            self.add_timer(at, li, TimerKind::Rejoin);
        }
        if self.cfg.close_after_connack {
            let c = &mut self.clients[li];
            let disconnect = Packet::Disconnect(Disconnect {
                reason: ReasonCode::NORMAL_DISCONNECTION,
                properties: Properties::EMPTY,
            });
            let _ = disconnect.encode_to_vec(self.version, c.out_buf());
            c.close_when_flushed = true;
            c.retry = false;
            self.mark_dirty(li);
        }
    }

    fn on_ack(&mut self, li: usize, r: &PubResp<'_>, kind: u8) -> Result<(), String> {
        let c = &mut self.clients[li];
        let Some(p) = &mut c.publisher else {
            return Err(format!(
                "acknowledgement {kind} for pkid {} to a non-publisher",
                r.pkid
            ));
        };
        if p.pkids.get(r.pkid) != Some(kind) {
            return Err(format!(
                "acknowledgement {kind} for pkid {} not awaiting it",
                r.pkid
            ));
        }
        let refused = r.reason.0 >= 0x80;
        if kind != AWAIT_PUBCOMP
            && let Some(&sent) = p.sent_ns.get(usize::from(r.pkid).wrapping_sub(1))
            && sent >= self.measure_start
            && sent < self.measure_end
        {
            self.ack_hist
                .saturating_record(self.now.saturating_sub(sent) / 1_000);
        }
        if refused {
            self.c.publish_refused += 1;
            self.errors
                .record(format_args!("publish refused: reason 0x{:02x}", r.reason.0));
        }
        match kind {
            AWAIT_PUBREC if !refused => {
                p.pkids.set(r.pkid, AWAIT_PUBCOMP);
                self.respond(li, Packet::PubRel(PubResp::new(r.pkid)));
            }
            _ => {
                p.pkids.set(r.pkid, PKID_FREE);
                self.c.inflight -= 1;
            }
        }
        Ok(())
    }

    fn on_publish(&mut self, li: usize, p: &Publish<'_>) -> Result<(), String> {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.respond(li, Packet::PubAck(PubResp::new(p.pkid))),
            QoS::ExactlyOnce => self.respond(li, Packet::PubRec(PubResp::new(p.pkid))),
        }
        let header = Header::read(p.payload);
        let run_id = self.run_id;
        let c = &mut self.clients[li];
        let pair = header
            .filter(|h| h.run_id == run_id)
            .and_then(|h| c.table.as_mut().and_then(|t| t.pair(h.publisher)));
        let (Some(h), Some(pair)) = (header, pair) else {
            self.c.foreign += 1;
            let why = match header {
                None => "no swarm header",
                Some(h) if h.run_id != run_id => "another run",
                Some(_) => "unknown publisher or not subscribed",
            };
            self.errors.record(format_args!(
                "foreign message on {:?} ({why}, {} bytes)",
                p.topic,
                p.payload.len()
            ));
            return Ok(());
        };
        let outcome = pair.record(h.seq);
        self.seq.apply(outcome);
        if outcome != crate::seq::Outcome::Duplicate
            && h.sent_ns >= self.measure_start
            && h.sent_ns < self.measure_end
        {
            self.c.delivered_measured += 1;
            let latency_us = self.now.saturating_sub(h.sent_ns) / 1_000;
            self.hist.saturating_record(latency_us);
        }
        Ok(())
    }

    // ---- publishing -------------------------------------------------------------------

    fn can_publish(&self, li: usize) -> bool {
        let c = &self.clients[li];
        c.state == State::Ready
            && !c.close_when_flushed
            && c.queued_bytes() < OUT_HIGH_WATER
            && (self.qos == QoS::AtMostOnce
                || c.publisher
                    .as_ref()
                    .is_some_and(|p| !p.pkids.free.is_empty()))
    }

    /// Publishes what is due; true when an open-loop publisher could go on at once.
    fn publish(&mut self) -> bool {
        if self.phase != PHASE_RUN
            || self.stopping
            || self.now < self.publish_start
            || self.now >= self.measure_end
            || self.publishers.is_empty()
        {
            return false;
        }
        if self.pub_rate > 0.0 {
            self.publish_paced();
            return false;
        }
        let mut more = false;
        for k in 0..self.publishers.len() {
            let li = self.publishers[k] as usize;
            let mut n = 0;
            while n < OPEN_LOOP_BATCH && self.can_publish(li) {
                self.publish_one(li);
                n += 1;
            }
            more |= n == OPEN_LOOP_BATCH && self.can_publish(li);
        }
        more
    }

    fn publish_paced(&mut self) {
        let elapsed = (self.now - self.publish_start) as f64 / 1e9;
        let due = (elapsed * self.pub_rate) as u64;
        let mut todo = due.saturating_sub(self.pub_budget_used);
        // More than a second behind: the publishers cannot keep up (blocked, or
        // disconnected). Skip what is older than a second and count it.
        let backlog_cap = (self.pub_rate as u64).max(1);
        if todo > backlog_cap {
            let skipped = todo - backlog_cap;
            self.c.publish_skipped += skipped;
            self.pub_budget_used += skipped;
            todo = backlog_cap;
        }
        let mut todo = todo.min(MAX_PUBLISH_PER_TURN);
        let n = self.publishers.len();
        let mut blocked = 0;
        while todo > 0 && blocked < n {
            let li = self.publishers[self.pub_cursor] as usize;
            self.pub_cursor = (self.pub_cursor + 1) % n;
            if self.can_publish(li) {
                self.publish_one(li);
                self.pub_budget_used += 1;
                todo -= 1;
                blocked = 0;
            } else {
                blocked += 1;
            }
        }
    }

    fn publish_one(&mut self, li: usize) {
        let now = self.now;
        let qos = self.qos;
        let version = self.version;
        let c = &mut self.clients[li];
        let p = c.publisher.as_mut().expect("a publisher");
        let t = if p.targets.len() == 1 {
            0
        } else {
            self.rng.below(p.targets.len() as u64) as usize
        };
        let seq = p.seqs[t];
        p.seqs[t] += 1;
        let pkid = match qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => p.pkids.take(AWAIT_PUBACK).expect("checked by can_publish"),
            QoS::ExactlyOnce => p.pkids.take(AWAIT_PUBREC).expect("checked by can_publish"),
        };
        if let Some(t) = p.sent_ns.get_mut(usize::from(pkid).wrapping_sub(1)) {
            *t = now;
        }
        Header {
            run_id: self.run_id,
            publisher: p.id,
            seq,
            sent_ns: now,
        }
        .write(&mut self.payload);
        self.plan.topic_name(p.targets[t], &mut self.topic_buf);
        let publish = Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: &self.topic_buf,
            pkid,
            properties: Properties::EMPTY,
            payload: &self.payload,
        });
        let _ = publish.encode_to_vec(version, c.out_buf());
        self.c.published += 1;
        if now >= self.measure_start && now < self.measure_end {
            self.c.published_measured += 1;
        }
        if qos != QoS::AtMostOnce {
            self.c.inflight += 1;
        }
        self.mark_dirty(li);
    }

    // ---- statistics -------------------------------------------------------------------

    fn roll_interval(&mut self) {
        if self.now < self.measure_start {
            return;
        }
        let index = (self.now - self.measure_start) / NS_PER_SEC;
        while self.hist_index < index {
            self.send_interval();
            self.hist_index += 1;
        }
    }

    /// Hands the current interval's histogram to the main thread; an empty interval goes
    /// as `None` (a watermark), so nothing is allocated for it.
    fn send_interval(&mut self) {
        let hist = if self.hist.is_empty() {
            None
        } else {
            Some(std::mem::replace(&mut self.hist, new_histogram()))
        };
        let _ = self.intervals.send(IntervalMsg {
            worker: self.id,
            index: self.hist_index,
            hist,
        });
    }

    fn store_counters(&mut self, force: bool) {
        if !force && self.now.saturating_sub(self.last_store_ns) < 1_000_000 {
            return;
        }
        self.last_store_ns = self.now;
        self.c.received = self.seq.received;
        self.c.unique = self.seq.unique;
        self.c.duplicates = self.seq.duplicates;
        self.c.out_of_order = self.seq.out_of_order;
        self.c.missing = self.seq.missing();
        self.control.workers[self.id].store(&self.c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkid_pool_hands_out_each_identifier_once() {
        let mut pool = PkidPool::new(3);
        let a = pool.take(AWAIT_PUBACK).unwrap();
        let b = pool.take(AWAIT_PUBREC).unwrap();
        let c = pool.take(AWAIT_PUBACK).unwrap();
        assert_eq!(pool.take(AWAIT_PUBACK), None);
        let mut ids = [a, b, c];
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!(pool.in_flight(), 3);
        assert_eq!(pool.get(b), Some(AWAIT_PUBREC));
        pool.set(b, AWAIT_PUBCOMP);
        assert_eq!(pool.in_flight(), 3);
        pool.set(b, PKID_FREE);
        assert_eq!(pool.in_flight(), 2);
        assert_eq!(pool.take(AWAIT_PUBACK), Some(b));
        assert_eq!(pool.get(0), None);
        assert_eq!(pool.get(4), None);
    }
}
