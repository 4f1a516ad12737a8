//! The runtime on its own, with a small test service over real sockets: what happens when
//! a service's write goes wrong, and what a shard leaves behind when it stops.
//!
//! The service answers one-byte commands: `e` writes `ok` back; `b` asks for a write that
//! promises 8 bytes and appends 3 (a broken encoder); `f` queues a few MiB for a client
//! that will never read them; `a` asks the socket its peer's address
//! (`Io::request_peer_addr`) and writes it back, a line; `i` writes the IP the shard
//! learnt when the connection opened (`Io::peer_ip`), a line.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use ringmq_shard::config::{Listen, ListenerKind, ShardConfig};
use ringmq_shard::conn::{CloseReason, ConnKey};
use ringmq_shard::hist;
use ringmq_shard::listen;
use ringmq_shard::mesh::links;
use ringmq_shard::runtime::{self, Control, ShardSpec};
use ringmq_shard::service::{Data, Io, Service};
use ringmq_shard::stats::RuntimeStats;

const WAIT: Duration = Duration::from_secs(30);

struct Commands;

impl Service for Commands {
    type ConnState = ();
    type Msg = ();
    type Request = ();

    fn on_open(&mut self, _io: &mut Io<Self>, _key: ConnKey) {}

    fn on_data(&mut self, io: &mut Io<Self>, key: ConnKey, data: Data<'_>) {
        for &b in data.bytes.iter() {
            match b {
                b'e' => {
                    io.write(key, b"ok");
                }
                b'b' => {
                    io.write_vec(key, 8, |q| {
                        q.extend_from_slice(b"bad");
                        true
                    });
                }
                b'a' => {
                    assert!(io.request_peer_addr(key));
                }
                b'i' => {
                    let ip = io.peer_ip(key).map_or("none".into(), |ip| ip.to_string());
                    io.write(key, format!("{ip}\n").as_bytes());
                }
                b'f' => {
                    let chunk = vec![b'x'; 64 * 1024];
                    while io.out_len(key) < 3 * 1024 * 1024 {
                        io.write(key, &chunk);
                    }
                }
                _ => {}
            }
        }
    }

    fn on_close(&mut self, _io: &mut Io<Self>, _key: ConnKey, _state: (), _why: CloseReason) {}

    fn on_deadline(&mut self, io: &mut Io<Self>, key: ConnKey) {
        io.close(key, CloseReason::Timeout);
    }

    fn on_message(&mut self, _io: &mut Io<Self>, _from: usize, _msg: ()) {}

    fn on_request(&mut self, _io: &mut Io<Self>, _request: ()) {}

    fn on_peer_addr(&mut self, io: &mut Io<Self>, key: ConnKey, addr: Option<SocketAddr>) {
        let addr = addr.map_or("none".into(), |a| a.to_string());
        io.write(key, format!("{addr}\n").as_bytes());
    }

    fn on_shutdown(&mut self, io: &mut Io<Self>) {
        for key in io.open_keys() {
            io.close(key, CloseReason::GoingAway);
        }
    }
}

/// One shard serving `Commands` on a free loopback port.
struct Running {
    addr: SocketAddr,
    _reservation: OwnedFd,
    stats: Arc<RuntimeStats>,
    control: Sender<Control<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start() -> Running {
        Running::start_with(false)
    }

    /// `peer_addresses`: the shard learns each connection's IP before it opens.
    fn start_with(peer_addresses: bool) -> Running {
        // A free port, held by a bound, non-listening SO_REUSEPORT socket while the test
        // runs (it never receives a connection, and keeps bind(0) elsewhere off the
        // port); the shard binds its own listener beside it.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let reservation = listen::reuseport_socket(addr).unwrap();
        let cfg = Arc::new(ShardConfig {
            listeners: vec![Listen {
                addr,
                kind: ListenerKind::Tcp,
                connect_rate: None,
                tls: None,
            }],
            close_timeout_ms: 200,
            files_per_shard: 1024,
            backlog: 16,
            ring_entries: 256,
            peer_addresses,
            ..ShardConfig::default()
        });
        let stats = Arc::new(RuntimeStats::default());
        let (tx, control) = crossbeam_channel::unbounded();
        let mesh = links::build::<()>(1, 64).unwrap().pop().unwrap();
        let spec = ShardSpec {
            id: 0,
            core: None,
            cfg,
            stats: stats.clone(),
            mesh,
            control,
            hists: hist::shared(hist::RUNTIME),
        };
        let (thread, ready) = runtime::spawn(spec, || Commands).unwrap();
        ready.recv().unwrap().unwrap();
        Running {
            addr,
            _reservation: reservation,
            stats,
            control: tx,
            thread: Some(thread),
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    /// Asks the shard to stop and waits for its thread.
    fn stop(&mut self) {
        self.control.send(Control::Shutdown).unwrap();
        let thread = self.thread.take().unwrap();
        let deadline = Instant::now() + WAIT;
        while !thread.is_finished() {
            assert!(Instant::now() < deadline, "the shard did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        thread.join().expect("the shard thread panicked");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.control.send(Control::Shutdown);
        }
    }
}

fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads until EOF or reset; the bytes read.
fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("read: {e} after {got:?}"),
        }
    }
}

/// A write that does not append what it promised is taken back and the connection
/// closed, counted; nothing of it reaches the peer, and other connections go on.
#[test]
fn a_broken_write_closes_its_connection_only() {
    let mut shard = Running::start();
    let mut other = shard.connect();
    let mut broken = shard.connect();
    other.write_all(b"e").unwrap();
    let mut ok = [0u8; 2];
    other.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok");

    broken.write_all(b"eb").unwrap();
    let got = read_to_end(&mut broken);
    assert_eq!(
        got, b"ok",
        "the answer before the broken write, then the end"
    );
    wait_until("the broken write is counted", || {
        shard.stats.write_errors.get() == 1
    });

    other.write_all(b"e").unwrap();
    other.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok", "the other connection is still served");
    shard.stop();
}

/// A shard that stops while sends are stuck (a client that never reads) cancels every
/// operation and waits for each to end before its buffers and ring go.
#[test]
fn a_shard_stops_with_no_operation_in_flight() {
    let mut shard = Running::start();
    let mut stuck = shard.connect();
    // Each `f` tops the queue up to 3 MiB, until the kernel's socket buffers are full and
    // a send stays in flight.
    let deadline = Instant::now() + WAIT;
    while shard.stats.outbound_bytes.get() < 1024 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the client's buffers never filled"
        );
        stuck.write_all(b"f").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until("operations in flight are counted", || {
        shard.stats.ops_in_flight.get() >= 3
    });
    shard.stop();
    assert_eq!(
        shard.stats.ops_in_flight.get(),
        0,
        "operations left in flight when the shard stopped"
    );
    drop(stuck);
}

/// Reads one line (up to `\n`) from `s`.
fn read_line(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

/// A service asks a connection's socket for its peer's address, on the ring, with or
/// without the shard learning each IP when a connection opens; each gets its own answer.
#[test]
fn a_service_learns_each_peers_address() {
    for peer_addresses in [false, true] {
        let mut shard = Running::start_with(peer_addresses);
        let mut clients: Vec<TcpStream> = (0..3).map(|_| shard.connect()).collect();
        for c in &mut clients {
            c.write_all(b"a").unwrap();
        }
        for c in &mut clients {
            assert_eq!(read_line(c), c.local_addr().unwrap().to_string());
            c.write_all(b"i").unwrap();
            let known = if peer_addresses { "127.0.0.1" } else { "none" };
            assert_eq!(read_line(c), known);
        }
        shard.stop();
    }
}
