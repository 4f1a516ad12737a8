//! `connect --close`: a broker that closes the connection in answer to the client's
//! DISCONNECT (a WebSocket close frame 1000, or a TCP FIN) is the expected end, not a lost
//! connection.
//!
//! Regression test: the swarm used to count such a close as "lost" (and an error) whenever
//! the completion of its DISCONNECT send and the broker's close arrived in the same loop
//! turn: the client only entered its leaving state when the send buffer was next flushed,
//! after the close had been handled. Against ringmq over WebSocket that was about a quarter
//! of 5,000 connections.
//!
//! The broker here is a few lines of blocking std code (one thread per connection) that
//! answers CONNECT with CONNACK and DISCONNECT with an immediate close, so nothing else
//! is needed to run it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

use ringmq_bench::config::Config;
use ringmq_bench::report::RunReport;
use ringmq_bench::run::run;

const CLIENTS: u32 = 300;

fn read_exact(s: &mut TcpStream, n: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// One MQTT packet from a plain stream: fixed header, remaining length, body.
fn read_mqtt(s: &mut TcpStream) -> Option<u8> {
    let first = read_exact(s, 1)?[0];
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = read_exact(s, 1)?[0];
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    read_exact(s, len)?;
    Some(first >> 4)
}

/// One masked client frame's payload (the swarm sends each MQTT packet batch as one
/// binary frame).
fn read_ws_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let head = read_exact(s, 2)?;
    let len = match head[1] & 0x7f {
        126 => u16::from_be_bytes(read_exact(s, 2)?.try_into().ok()?) as usize,
        127 => u64::from_be_bytes(read_exact(s, 8)?.try_into().ok()?) as usize,
        n => usize::from(n),
    };
    let key = read_exact(s, 4)?;
    let mut body = read_exact(s, len)?;
    for (i, b) in body.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    Some(body)
}

fn serve(mut s: TcpStream, ws: bool) -> Option<()> {
    s.set_nodelay(true).ok()?;
    if ws {
        let mut req = Vec::new();
        while !req.ends_with(b"\r\n\r\n") {
            req.extend(read_exact(&mut s, 1)?);
        }
        let req = String::from_utf8(req).ok()?;
        let key = req.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_string())
        })?;
        let accept = ringmq_proto::ws::accept_key(&key);
        let mut resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Protocol: mqtt\r\nSec-WebSocket-Accept: "
            .to_vec();
        resp.extend_from_slice(&accept);
        resp.extend_from_slice(b"\r\n\r\n");
        s.write_all(&resp).ok()?;
        let connect = read_ws_frame(&mut s)?;
        assert_eq!(connect[0] >> 4, 1, "CONNECT first");
        s.write_all(&[0x82, 4, 0x20, 2, 0, 0]).ok()?; // CONNACK, accepted
        let disconnect = read_ws_frame(&mut s)?;
        assert_eq!(disconnect[0] >> 4, 14, "DISCONNECT next");
        s.write_all(&[0x88, 2, 0x03, 0xe8]).ok()?; // close 1000
    } else {
        assert_eq!(read_mqtt(&mut s)?, 1, "CONNECT first");
        s.write_all(&[0x20, 2, 0, 0]).ok()?;
        assert_eq!(read_mqtt(&mut s)?, 14, "DISCONNECT next");
    }
    // Dropping the stream closes it (FIN).
    Some(())
}

/// Accepts `CLIENTS` connections on a free loopback port, each served on its own thread.
fn broker(ws: bool) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming().take(CLIENTS as usize) {
            let s = s.unwrap();
            thread::spawn(move || serve(s, ws));
        }
    });
    port
}

fn connect_close(target: &str) -> RunReport {
    let n = CLIENTS.to_string();
    let argv = [
        "ringmq-swarm",
        "connect",
        "--target",
        target,
        "--connections",
        &n,
        "--close",
        "--duration",
        "20",
        "--quiet",
        "--threads",
        "2",
        "--source-addrs",
        "127.67.0.1-127.67.0.4",
    ];
    let r = run(Config::from_argv(argv).expect("valid command line")).expect("the run completes");
    print!("{}", r.summary());
    r
}

fn assert_no_trouble(r: &RunReport) {
    let c = &r.connect;
    assert!(c.all_ready);
    assert_eq!(c.first_connacks, u64::from(CLIENTS));
    assert_eq!(
        c.disconnects, 0,
        "connections counted as lost: {:?}",
        r.errors
    );
    assert_eq!(c.reconnects, 0);
    assert_eq!(c.protocol_errors + c.connect_failures + c.timeouts, 0);
    assert!(r.errors.is_empty(), "errors: {:?}", r.errors);
}

#[test]
fn websocket_close_after_disconnect_is_not_a_lost_connection() {
    let port = broker(true);
    assert_no_trouble(&connect_close(&format!("ws://127.0.0.1:{port}/mqtt")));
}

#[test]
fn tcp_close_after_disconnect_is_not_a_lost_connection() {
    let port = broker(false);
    assert_no_trouble(&connect_close(&format!("tcp://127.0.0.1:{port}")));
}
