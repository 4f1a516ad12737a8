//! A shard's lanes at their bound: with small fixed-file tables, a shard moves new
//! connections to another lane when one is near full, and with `--lanes-per-shard` lanes
//! near full it stops accepting (new connections wait in the listen backlog, counted in
//! `ringmq_accept_paused`) until connections close, then takes the waiting ones.
//!
//! The clients are tokio sockets with hand-written MQTT 3.1.1 bytes, independent of
//! ringmq's codec.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::*;

/// 2,000 slots: 4 kept for files, 1,280 kept free (listen backlog 1,024 + 256), so a lane
/// takes 716 connections and takes new ones again below 460.
const FILES: &str = "2000";
const LANE_TAKES: u64 = 716;
const LANE_RESUMES_BELOW: u64 = 460;
const CLIENTS: usize = 1000;
/// Generous guard against a hang; nothing asserts how long a step takes.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Connects and sends CONNECT.
async fn connect(addr: SocketAddr, i: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&connect_v311(&format!("lane-{i}"), 300))
        .await
        .unwrap();
    s
}

/// Clients `range`, one after the other, each waiting for its CONNACK before the next
/// connects: the shard takes them one at a time, so it sees each table mark as it is
/// crossed (a burst may be accepted in one batch, past a mark, into the margin kept free
/// for that).
async fn connect_in_turn(addr: SocketAddr, range: std::ops::Range<usize>) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(range.len());
    for i in range {
        let mut s = connect(addr, i).await;
        connack(&mut s).await;
        streams.push(s);
    }
    streams
}

async fn connack(s: &mut TcpStream) {
    let mut ack = [0u8; 4];
    tokio::time::timeout(STEP_TIMEOUT, s.read_exact(&mut ack))
        .await
        .expect("a CONNACK in time")
        .expect("CONNACK");
    assert_eq!(ack, CONNACK_V311_OK);
}

/// A PINGREQ answered: the shard has taken a turn since everything sent before it.
async fn ping(s: &mut TcpStream) {
    s.write_all(&PINGREQ).await.unwrap();
    let mut resp = [0u8; 2];
    tokio::time::timeout(STEP_TIMEOUT, s.read_exact(&mut resp))
        .await
        .expect("a PINGRESP in time")
        .expect("PINGRESP");
    assert_eq!(resp, PINGRESP);
}

#[test]
fn a_shard_opens_a_lane_when_its_first_is_near_full() {
    let broker = Broker::start(&["--shards", "1", "--files-per-shard", FILES]);
    let rt = runtime();
    rt.block_on(async {
        let _streams = connect_in_turn(broker.mqtt_addr(), 0..CLIENTS).await;
        // Checked while every client is still connected.
        assert_eq!(broker.metric("ringmq_connections_current"), CLIENTS as u64);
        assert_eq!(broker.metric("ringmq_lanes"), 2);
        assert_eq!(broker.metric("ringmq_accept_paused"), 0);
    });
}

#[test]
fn with_every_lane_near_full_the_shard_waits_for_room() {
    let broker = Broker::start(&[
        "--shards",
        "1",
        "--files-per-shard",
        FILES,
        "--lanes-per-shard",
        "1",
    ]);
    let addr = broker.mqtt_addr();
    let rt = runtime();
    rt.block_on(async {
        let taken = LANE_TAKES as usize;
        let mut streams = connect_in_turn(addr, 0..taken).await;
        // The lane is at its mark and the only one allowed: the shard stopped accepting,
        // and the next clients wait in the listen backlog.
        assert_eq!(broker.metric("ringmq_accept_paused"), 1);
        let mut waiting = Vec::new();
        for i in taken..CLIENTS {
            waiting.push(connect(addr, i).await);
        }
        ping(&mut streams[0]).await;
        assert_eq!(broker.metric("ringmq_connections_current"), LANE_TAKES);
        assert_eq!(broker.metric("ringmq_lanes"), 1);
        // Clients leave until the lane is below its low-water mark, with room under its
        // mark for all that wait: the shard accepts again and each gets its CONNACK (it
        // may stop once more on the way, while the closes are still being taken up).
        let close = (waiting.len() + 1).max(taken - LANE_RESUMES_BELOW as usize + 1);
        for s in streams.drain(..close) {
            drop(s);
        }
        for s in &mut waiting {
            connack(s).await;
        }
        let want = (CLIENTS - close) as u64;
        let open =
            broker.wait_for_metric("ringmq_connections_current", STEP_TIMEOUT, |n| n == want);
        assert_eq!(open, want);
    });
    assert_eq!(broker.metric("ringmq_lanes"), 1);
    assert_eq!(broker.metric("ringmq_connections_refused_table_full"), 0);
}
