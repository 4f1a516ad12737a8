//! Which shard a connection landed on, and placing clients on chosen shards. The kernel
//! picks the shard (SO_REUSEPORT), so a test that needs a client on a given shard
//! connects until one lands there.

use std::future::Future;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::WAIT;
use super::broker::{Broker, parse_metric};
use super::raw::{RawPacket, send_connect, tcp};

/// The labelled sample `name{shard="i"}` of `/metrics` for every shard, in order.
pub fn per_shard(broker: &Broker, name: &str) -> Vec<u64> {
    let text = broker.metrics();
    let out: Vec<u64> = (0..)
        .map_while(|i| parse_metric(&text, &format!("{name}{{shard=\"{i}\"}}")))
        .collect();
    assert!(!out.is_empty(), "no per-shard {name} in\n{text}");
    out
}

/// Connections accepted since start, per shard: the shard whose count grew by one
/// across a connect is where the connection landed, whatever other connections are
/// closing meanwhile.
fn shard_accepts(broker: &Broker) -> Vec<u64> {
    per_shard(broker, "ringmq_connections_total")
}

/// The shard that accepted one connection between the two readings.
fn landed(before: &[u64], after: &[u64]) -> usize {
    let grew: Vec<usize> = (0..after.len()).filter(|&i| after[i] > before[i]).collect();
    assert_eq!(
        grew.len(),
        1,
        "one connection should have been accepted: {before:?} → {after:?}"
    );
    grew[0]
}

/// Connects with `connect` (which must not return before its CONNACK) until the
/// connection lands on a shard `ok` accepts; connections that land elsewhere are
/// dropped with `drop_it`. Returns the client and its shard. No other connection may
/// be accepted meanwhile.
pub async fn connect_where<C, F, Fut, D, DFut>(
    broker: &Broker,
    ok: impl Fn(usize) -> bool,
    mut connect: F,
    mut drop_it: D,
) -> (C, usize)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
    D: FnMut(C) -> DFut,
    DFut: Future<Output = ()>,
{
    for _ in 0..40 {
        let (c, shard) = connect_anywhere(broker, &mut connect).await;
        if ok(shard) {
            return (c, shard);
        }
        drop_it(c).await;
    }
    panic!("40 connections in a row landed on the wrong shard")
}

/// The client `connect` makes, and the shard it landed on (no other connection may be
/// accepted meanwhile).
pub async fn connect_anywhere<C, Fut: Future<Output = C>>(
    broker: &Broker,
    connect: impl FnOnce() -> Fut,
) -> (C, usize) {
    let before = shard_accepts(broker);
    let c = connect().await;
    let shard = landed(&before, &shard_accepts(broker));
    (c, shard)
}

/// A TCP connection to the MQTT port, not yet past CONNECT, on a shard `ok` accepts:
/// connections accepted elsewhere are closed before they say anything, so unlike
/// [`connect_where`] no session is touched on the wrong shard. No other connection may
/// be accepted meanwhile.
pub fn tcp_where(broker: &Broker, ok: impl Fn(usize) -> bool) -> (TcpStream, usize) {
    for _ in 0..40 {
        let before = shard_accepts(broker);
        let s = tcp(broker.mqtt_addr());
        let deadline = Instant::now() + WAIT;
        let after = loop {
            let now = shard_accepts(broker);
            if now.iter().sum::<u64>() > before.iter().sum::<u64>() {
                break now;
            }
            assert!(
                Instant::now() < deadline,
                "no shard accepted the connection"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let shard = landed(&before, &after);
        if ok(shard) {
            return (s, shard);
        }
    }
    panic!("40 connections in a row landed on the wrong shard")
}

/// A raw client on a shard `ok` accepts ([`tcp_where`]) that has sent `connect` and
/// read the CONNACK: the connection, the CONNACK and the shard.
pub fn raw_where(
    broker: &Broker,
    ok: impl Fn(usize) -> bool,
    connect: &[u8],
) -> (TcpStream, RawPacket, usize) {
    let (mut s, shard) = tcp_where(broker, ok);
    let ack = send_connect(&mut s, connect);
    (s, ack, shard)
}
