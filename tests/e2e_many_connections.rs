//! More connections than one io_uring fixed-file table holds on one shard (one thread):
//! 45,000 MQTT connections to a single shard whose tables have 16,384 slots, so it opens
//! lanes (rings with their own tables) as they fill; each connection is established
//! (CONNACK 0) and answers a PINGREQ. 45,000 is also more than this process's open-file
//! limit (20,000 here).
//!
//! The clients are independent of ringmq's code: tokio sockets with hand-written MQTT
//! 3.1.1 bytes. One test process cannot hold 40,000 sockets (RLIMIT_NOFILE), so the test
//! runs itself again as `CLIENT_PROCS` child processes, each from its own loopback source
//! address, and talks to them over stdin/stdout; an environment variable tells a child
//! that it is one.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use support::*;

const FILES_PER_LANE: usize = 16_384;
const CLIENT_PROCS: usize = 5;
const PER_PROC: usize = 9_000;
const TOTAL: usize = CLIENT_PROCS * PER_PROC;
/// Generous guard against a hang; nothing asserts how long it takes.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);
const CHILD_ENV: &str = "RINGMQ_MANY_CONNECTIONS_CHILD";

struct ClientProc {
    child: Child,
    lines: Receiver<String>,
}

impl ClientProc {
    fn spawn(addr: std::net::SocketAddr, proc_no: usize) -> ClientProc {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "forty_five_thousand_connections_on_one_shard_each_answer_a_ping",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{addr} {proc_no}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn client process");
        let out = child.stdout.take().expect("child stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ClientProc { child, lines }
    }

    /// Waits for the child's line starting with `word` and returns its number.
    fn expect(&self, word: &str) -> usize {
        loop {
            let line = self
                .lines
                .recv_timeout(STEP_TIMEOUT)
                .unwrap_or_else(|_| panic!("client process gave no {word} line"));
            // The test harness may print its own words on the same line.
            if let Some(at) = line.find(word) {
                let n = line[at + word.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("");
                return n.parse().expect("a count after the word");
            }
        }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("child stdin");
        writeln!(stdin, "{line}").expect("write to client process");
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn forty_five_thousand_connections_on_one_shard_each_answer_a_ping() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return client_process(&spec);
    }
    let broker = Broker::start(&[
        "--shards",
        "1",
        "--files-per-shard",
        &FILES_PER_LANE.to_string(),
    ]);
    let addr = broker.mqtt_addr();
    let mut procs: Vec<ClientProc> = (0..CLIENT_PROCS)
        .map(|i| ClientProc::spawn(addr, i))
        .collect();
    let connected: usize = procs.iter().map(|p| p.expect("CONNECTED")).sum();
    assert_eq!(connected, TOTAL, "every client got CONNACK 0");

    let open = broker.wait_for_metric("ringmq_connections_current", STEP_TIMEOUT, |n| {
        n as usize == TOTAL
    });
    assert_eq!(open as usize, TOTAL);
    // More than one table holds: the shard opened lanes as they filled, and never had to
    // stop accepting.
    const { assert!(TOTAL > 2 * FILES_PER_LANE) };
    let lanes = broker.metric("ringmq_lanes");
    assert!(lanes >= 3, "45,000 connections in {lanes} lanes");
    assert_eq!(broker.metric("ringmq_accept_paused"), 0);

    for p in &mut procs {
        p.say("PING");
    }
    let answered: usize = procs.iter().map(|p| p.expect("PONGS")).sum();
    assert_eq!(answered, TOTAL, "every connection answered its PINGREQ");
    assert_eq!(broker.metric("ringmq_connections_refused_table_full"), 0);
}

/// The test above as one of its child processes: `spec` is "ADDRESS NUMBER".
fn client_process(spec: &str) {
    let mut parts = spec.split_whitespace();
    let addr: std::net::SocketAddr = parts.next().unwrap().parse().unwrap();
    let proc_no: usize = parts.next().unwrap().parse().unwrap();
    raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run_clients(addr, proc_no));
}

/// `IP_BIND_ADDRESS_NO_PORT`: the port is picked at connect time, for the whole 4-tuple,
/// so ports of earlier runs still in TIME_WAIT do not make `bind` fail.
fn no_port_at_bind(socket: &tokio::net::TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a live socket with a pointer to a local int.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

async fn run_clients(addr: std::net::SocketAddr, proc_no: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;

    // Each process connects from its own source address (a range other tests do not use):
    // 10,000 ports each, far from the ephemeral range's limit.
    let source: std::net::SocketAddr = format!("127.77.0.{}:0", 1 + proc_no).parse().unwrap();
    let mut streams = Vec::with_capacity(PER_PROC);
    // A few hundred handshakes at a time keep the listen backlogs from overflowing.
    for batch in (0..PER_PROC).collect::<Vec<_>>().chunks(250) {
        let mut tasks = Vec::new();
        for &i in batch {
            tasks.push(tokio::spawn(async move {
                let socket = TcpSocket::new_v4().unwrap();
                no_port_at_bind(&socket);
                socket.bind(source).unwrap();
                let mut s = socket.connect(addr).await.expect("connect");
                // Keep alive 300 s: no ping is due during the test.
                let connect = connect_v311(&format!("many-{proc_no}-{i}"), 300);
                s.write_all(&connect).await.unwrap();
                let mut ack = [0u8; 4];
                s.read_exact(&mut ack).await.expect("CONNACK");
                assert_eq!(ack, CONNACK_V311_OK, "client {proc_no}-{i}");
                s
            }));
        }
        for t in tasks {
            streams.push(t.await.expect("client task"));
        }
    }
    println!("CONNECTED {}", streams.len());

    let mut stdin = BufReader::new(std::io::stdin());
    let mut line = String::new();
    stdin.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "PING");
    let mut answered = 0;
    for chunk in streams.chunks_mut(500) {
        for s in chunk.iter_mut() {
            s.write_all(&PINGREQ).await.unwrap();
        }
        for s in chunk.iter_mut() {
            let mut resp = [0u8; 2];
            s.read_exact(&mut resp).await.expect("PINGRESP");
            if resp == PINGRESP {
                answered += 1;
            }
        }
    }
    println!("PONGS {answered}");
    // Hold the connections until the parent is done with us.
    let _ = stdin.read_line(&mut line);
}
