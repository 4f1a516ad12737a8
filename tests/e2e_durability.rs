//! Durability end to end: the real binary on one data directory, stopped gracefully or
//! killed with SIGKILL and started again, talked to by independent clients (rumqttc,
//! mosquitto_pub/sub, python paho-mqtt for QoS 2, packets written by hand). What a
//! broker acknowledged is never lost: retained messages, persistent sessions with their
//! subscriptions and queues survive a restart (with another shard count too), a QoS 1
//! load to persistent subscribers loses no acknowledged message across twenty
//! `kill -9`s, QoS 2 stays exactly once across them (and a refused QoS 2 PUBLISH
//! completes its flow), refusals keep their place behind acknowledgements that wait for
//! the log, a torn log tail is cut while damage before it
//! stops the start with the file and offset named, a full disk budget refuses what it
//! cannot keep and recovers, and a second broker cannot open a data directory in use.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// A data directory that outlives the brokers started on it.
struct Data {
    dir: TempDir,
}

impl Data {
    fn new(name: &str) -> Data {
        Data {
            dir: TempDir::new(name),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The broker on this data directory, with `args`.
    fn start(&self, args: &[&str]) -> Broker {
        Broker::start(&self.args(args))
    }

    /// `start` on a fixed port just given up by a killed broker: its connections may
    /// hold the port a moment longer (FIN_WAIT), so a start that finds it in use is
    /// tried again.
    fn restart(&self, args: &[&str]) -> Broker {
        let deadline = Instant::now() + WAIT;
        loop {
            match Broker::try_start(&self.args(args)) {
                Ok(b) => return b,
                Err(e)
                    if e.stderr.contains("Address already in use") && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let path: &'static str = Box::leak(self.path().to_str().unwrap().to_string().into());
        let mut all = vec!["--data-dir", path];
        all.extend_from_slice(args);
        all
    }

    /// A one-shard broker started on this data directory, which must refuse to start
    /// (exit status 1): what it said.
    fn refused_start(&self) -> String {
        let out = run(&self.args(&[
            "--shards",
            "1",
            "--mqtt",
            "127.0.0.1:0",
            "--ws",
            "none",
            "--http",
            "none",
        ]));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        stderr
    }

    /// The log files (segments) of every shard, largest first.
    fn segments(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        walk(&self.path(), &mut found);
        found.retain(|p| p.extension().is_some_and(|e| e == "log"));
        found.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).map_or(0, |m| m.len())));
        found
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// A free port on 127.0.0.1, for a broker that must come back on the same one.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mosquitto_pub(broker: &Broker, args: &[&str]) {
    let port = broker.mqtt_addr().port().to_string();
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port])
        .args(args)
        .output()
        .expect("mosquitto_pub must be installed (apt-get install mosquitto-clients)");
    assert!(out.status.success(), "mosquitto_pub {args:?}: {out:?}");
}

/// `mosquitto_sub` until `count` messages or `secs` seconds: the lines it printed.
fn mosquitto_sub(broker: &Broker, args: &[&str], count: usize, secs: u64) -> Vec<String> {
    let port = broker.mqtt_addr().port().to_string();
    let (c, w) = (count.to_string(), secs.to_string());
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port, "-v", "-C", &c, "-W", &w])
        .args(args)
        .output()
        .expect("mosquitto_sub must be installed (apt-get install mosquitto-clients)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Retained messages, a 3.1.1 persistent session and an MQTT 5 one with a session
/// expiry, each with subscriptions and a queue, as a restart must find them.
fn fill(rt: &tokio::runtime::Runtime, broker: &Broker) {
    mosquitto_pub(
        broker,
        &["-t", "keep/a", "-m", "retained-a", "-r", "-q", "1"],
    );
    mosquitto_pub(broker, &["-t", "keep/b", "-m", "retained-b", "-r"]);
    mosquitto_pub(broker, &["-t", "keep/c", "-m", "gone", "-r", "-q", "1"]);
    // An empty retained message clears the topic.
    mosquitto_pub(broker, &["-t", "keep/c", "-n", "-r", "-q", "1"]);
    let addr = broker.mqtt_addr();
    rt.block_on(async {
        let mut o = v311::options("durable-v4", addr);
        o.set_clean_session(false);
        let mut c = V4::connect(o).await;
        c.subscribe_ok("q/#", 1).await;
        c.subscribe_ok("also/+", 2).await;
        c.disconnect().await;
        let mut c = V5::connect(v5::persistent("durable-v5", addr, 3600)).await;
        c.subscribe_ok("q/#", 2).await;
        c.disconnect().await;
    });
    for i in 0..5 {
        let m = format!("queued-{i}");
        mosquitto_pub(broker, &["-t", "q/x", "-m", &m, "-q", "1"]);
    }
    mosquitto_pub(broker, &["-t", "also/y", "-m", "qos2", "-q", "2"]);
}

/// What `fill` left must be there: the retained messages (not the cleared one), both
/// sessions (present) with their queues in order, and their subscriptions working.
fn check(rt: &tokio::runtime::Runtime, broker: &Broker) {
    let mut retained = mosquitto_sub(broker, &["-t", "keep/#"], 3, 3);
    retained.sort();
    assert_eq!(
        retained,
        ["keep/a retained-a", "keep/b retained-b"],
        "retained messages after the restart"
    );
    let addr = broker.mqtt_addr();
    rt.block_on(async {
        let mut o = v311::options("durable-v4", addr);
        o.set_clean_session(false);
        let mut c = V4::connect(o).await;
        assert!(
            c.connack.session_present,
            "the 3.1.1 session is still there"
        );
        let mut got = Vec::new();
        while got.len() < 6 {
            got.push(c.next_publish().await);
        }
        let queued: Vec<String> = got
            .iter()
            .filter(|g| g.topic == "q/x")
            .map(Got::text)
            .collect();
        assert_eq!(
            queued,
            (0..5).map(|i| format!("queued-{i}")).collect::<Vec<_>>()
        );
        assert!(got.iter().any(|g| g.topic == "also/y" && g.qos == 2));
        c.no_publish().await;
        let mut c5 = V5::connect(v5::persistent("durable-v5", addr, 3600)).await;
        assert!(
            c5.connack.session_present,
            "the MQTT 5 session is still there"
        );
        for i in 0..5 {
            let g = c5.next_publish().await;
            assert_eq!((g.topic.as_str(), g.text()), ("q/x", format!("queued-{i}")));
        }
        // The subscriptions came back too: a new message reaches both.
        let mut p = V4::connect(v311::options("durable-pub", addr)).await;
        p.publish("q/after", 1, b"after").await;
        assert_eq!(c.next_publish().await.text(), "after");
        assert_eq!(c5.next_publish().await.text(), "after");
        c.disconnect().await;
        c5.disconnect().await;
        p.disconnect().await;
    });
}

#[test]
fn a_graceful_restart_keeps_retained_messages_sessions_subscriptions_and_queues() {
    let rt = runtime();
    let data = Data::new("graceful");
    let mut b = data.start(&["--shards", "2"]);
    fill(&rt, &b);
    assert!(b.stop_graceful().success());
    let mut b = data.start(&["--shards", "2"]);
    assert_eq!(b.metric("ringmq_recovered_sessions"), 2);
    assert_eq!(b.metric("ringmq_recovered_retained"), 2);
    check(&rt, &b);
    assert!(b.stop_graceful().success());
}

#[test]
fn a_restart_with_another_shard_count_keeps_everything() {
    let rt = runtime();
    let data = Data::new("reshard");
    let mut b = data.start(&["--shards", "2"]);
    fill(&rt, &b);
    assert!(b.stop_graceful().success());
    let mut b = data.start(&["--shards", "3"]);
    assert_eq!(b.metric("ringmq_shards"), 3);
    assert_eq!(b.metric("ringmq_recovered_sessions"), 2);
    check(&rt, &b);
    // And down to one: the sessions, emptied by `check`, and the retained messages.
    mosquitto_pub(&b, &["-t", "q/x", "-m", "for-one", "-q", "1"]);
    assert!(b.stop_graceful().success());
    let mut b = data.start(&["--shards", "1"]);
    assert_eq!(b.metric("ringmq_recovered_sessions"), 2);
    let mut retained = mosquitto_sub(&b, &["-t", "keep/#"], 3, 3);
    retained.sort();
    assert_eq!(retained, ["keep/a retained-a", "keep/b retained-b"]);
    let addr = b.mqtt_addr();
    rt.block_on(async {
        let mut o = v311::options("durable-v4", addr);
        o.set_clean_session(false);
        let mut c = V4::connect(o).await;
        assert!(c.connack.session_present);
        assert_eq!(c.next_publish().await.text(), "for-one");
        c.disconnect().await;
    });
    assert!(b.stop_graceful().success());
}

/// One round of the kill -9 loop: a publisher and a connected persistent subscriber
/// under a steady QoS 1 load, until the broker dies.
struct Round {
    /// Ids whose PUBACK the publisher saw.
    acked: Arc<Mutex<BTreeSet<u64>>>,
    /// Every id a subscriber received, with how often.
    received: Arc<Mutex<BTreeMap<u64, u32>>>,
}

/// Publishes QoS 1 messages `from..` to `load/<n>` until the connection dies, noting the
/// id of each one acknowledged (rumqttc hands out packet ids in publish order).
async fn publish_until_killed(
    addr: std::net::SocketAddr,
    from: u64,
    acked: Arc<Mutex<BTreeSet<u64>>>,
) -> u64 {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let mut o = MqttOptions::new(
        format!("load-pub-{from}"),
        addr.ip().to_string(),
        addr.port(),
    );
    o.set_keep_alive(Duration::from_secs(30));
    o.set_inflight(64);
    let (client, mut el) = AsyncClient::new(o, 64);
    let next = Arc::new(std::sync::atomic::AtomicU64::new(from));
    let n = next.clone();
    let feeder = tokio::spawn(async move {
        loop {
            let id = n.load(std::sync::atomic::Ordering::Relaxed);
            let topic = format!("load/{}", id % 7);
            if client
                .publish(topic, QoS::AtLeastOnce, false, id.to_string().into_bytes())
                .await
                .is_err()
            {
                return;
            }
            n.store(id + 1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // The i-th PUBLISH written carries the i-th id.
    let mut sent_id = from;
    let mut by_pkid: BTreeMap<u16, u64> = BTreeMap::new();
    while let Ok(ev) = el.poll().await {
        match ev {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                by_pkid.insert(pkid, sent_id);
                sent_id += 1;
            }
            Event::Incoming(Packet::PubAck(a)) => {
                if let Some(id) = by_pkid.remove(&a.pkid) {
                    acked.lock().unwrap().insert(id);
                }
            }
            _ => {}
        }
    }
    feeder.abort();
    sent_id
}

/// A persistent subscriber to `load/#` that notes every id it receives until its
/// connection dies (or it is aborted).
async fn receive(addr: std::net::SocketAddr, id: &str, received: Arc<Mutex<BTreeMap<u64, u32>>>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut o = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(false);
    let (client, mut el) = AsyncClient::new(o, 64);
    let _ = client.subscribe("load/#", QoS::AtLeastOnce).await;
    while let Ok(ev) = el.poll().await {
        if let Event::Incoming(Packet::Publish(p)) = ev
            && let Ok(n) = std::str::from_utf8(&p.payload).unwrap_or("").parse::<u64>()
        {
            *received.lock().unwrap().entry(n).or_default() += 1;
        }
    }
}

#[test]
fn kill_9_during_a_qos1_load_loses_no_acknowledged_message_twenty_times() {
    let rt = runtime();
    let data = Data::new("kill9");
    let args = ["--shards", "2", "--max-queued-messages", "1000000"];
    let round = Round {
        acked: Arc::default(),
        received: Arc::default(),
    };
    // A second subscriber stays away until the end: everything waits in its queue.
    let offline: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let mut next = 0u64;
    for i in 0..20 {
        let b = data.start(&args);
        let addr = b.mqtt_addr();
        if i == 0 {
            rt.block_on(async {
                let mut o = v311::options("kill9-offline", addr);
                o.set_clean_session(false);
                let mut c = V4::connect(o).await;
                c.subscribe_ok("load/#", 1).await;
                c.disconnect().await;
            });
        }
        let sub = rt.spawn(receive(addr, "kill9-online", round.received.clone()));
        // The subscriber's SUBACK (first round) or reconnect settles before the load.
        std::thread::sleep(Duration::from_millis(200));
        let publisher = rt.spawn(publish_until_killed(addr, next, round.acked.clone()));
        // A different moment each round.
        std::thread::sleep(Duration::from_millis(150 + (i * 37 % 200)));
        b.signal(libc::SIGKILL);
        let mut b = b;
        b.wait_exit();
        next = rt.block_on(publisher).unwrap().max(next) + 1;
        sub.abort();
    }
    // The last start: both subscribers get everything that was acknowledged.
    let mut b = data.start(&args);
    let addr = b.mqtt_addr();
    let acked = round.acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the load was too small: {} acknowledged",
        acked.len()
    );
    let online = rt.spawn(receive(addr, "kill9-online", round.received.clone()));
    let away = rt.spawn(receive(addr, "kill9-offline", offline.clone()));
    let deadline = Instant::now() + WAIT * 2;
    let missing = |got: &Arc<Mutex<BTreeMap<u64, u32>>>| -> Vec<u64> {
        let got = got.lock().unwrap();
        acked
            .iter()
            .filter(|id| !got.contains_key(id))
            .copied()
            .collect()
    };
    while (!missing(&round.received).is_empty() || !missing(&offline).is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    online.abort();
    away.abort();
    for (name, got) in [("online", &round.received), ("offline", &offline)] {
        let lost = missing(got);
        let got = got.lock().unwrap();
        let dups: u32 = got.values().map(|n| n - 1).sum();
        let invented: Vec<_> = got.keys().filter(|&&id| id >= next).collect();
        eprintln!(
            "{name} subscriber: {} acknowledged, {} received, {dups} duplicates (QoS 1 allows them)",
            acked.len(),
            got.len()
        );
        assert!(
            lost.is_empty(),
            "{name}: {} acknowledged messages lost: {:?}",
            lost.len(),
            &lost[..lost.len().min(20)]
        );
        assert!(
            invented.is_empty(),
            "{name}: messages never published: {invented:?}"
        );
    }
    assert!(b.stop_graceful().success());
}

#[test]
fn qos2_stays_exactly_once_across_kill_9() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/qos2_kill9.py");
    let probe = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .status();
    assert!(
        probe.is_ok_and(|s| s.success()),
        "python3 with paho-mqtt is needed: pip install -r tests/python/requirements.txt"
    );
    let data = Data::new("qos2");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args = ["--shards", "2", "--mqtt", listen.as_str()];
    let mut b = data.start(&args);
    let count = 400;
    let mut child = Command::new("python3")
        .arg(&script)
        .args([&port.to_string(), &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(400 + i * 90));
        b.signal(libc::SIGKILL);
        b.wait_exit();
        let before = b.stderr();
        assert!(!before.contains("panicked"), "a shard panicked:\n{before}");
        b = data.restart(&args);
    }
    let deadline = Instant::now() + WAIT * 3;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the paho script did not finish");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "paho script failed:\n{stdout}\n{stderr}"
    );
    // The script prints every payload its subscriber received, one a line.
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for l in stdout.lines().filter_map(|l| l.strip_prefix("got ")) {
        *seen.entry(l.parse().unwrap()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "QoS 2 delivered twice: {twice:?}");
    let lost: Vec<u64> = (0..count).filter(|i| !seen.contains_key(i)).collect();
    assert!(lost.is_empty(), "QoS 2 messages lost: {lost:?}\n{stderr}");
    assert!(b.stop_graceful().success());
}

#[test]
fn a_torn_tail_is_cut_and_damage_before_it_is_refused_naming_file_and_offset() {
    let data = Data::new("damage");
    // Several turns: the retained message, then more records after it.
    let mut b = data.start(&["--shards", "1"]);
    mosquitto_pub(&b, &["-t", "t/one", "-m", "first", "-r", "-q", "1"]);
    for i in 0..5 {
        mosquitto_pub(
            &b,
            &["-t", "t/one", "-m", &format!("later-{i}"), "-r", "-q", "1"],
        );
    }
    assert!(b.stop_graceful().success());
    let seg = data.segments().into_iter().next().expect("a log segment");
    let len = std::fs::metadata(&seg).unwrap().len();
    // Torn: the last bytes never made it.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let mut b = data.start(&["--shards", "1"]);
    let got = mosquitto_sub(&b, &["-t", "t/one"], 1, 3);
    assert_eq!(got.len(), 1, "the retained message survives the cut tail");
    assert!(got[0].starts_with("t/one "), "{got:?}");
    assert!(b.stop_graceful().success());
    assert!(
        b.stderr().contains("cut") || b.stdout().contains("cut"),
        "the cut is reported:\n{}",
        b.stderr()
    );
    // Damage in the first record, which later commits say was synced.
    let seg = data
        .segments()
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("00000000000000000001")
        })
        .or_else(|| data.segments().into_iter().next())
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = 36 + 20;
    bytes[at] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let stderr = data.refused_start();
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(stderr.contains(name), "the file is named:\n{stderr}");
    assert!(stderr.contains("offset"), "the offset is named:\n{stderr}");
}

#[test]
fn a_second_broker_on_the_same_data_dir_refuses_to_start() {
    let data = Data::new("lock");
    let mut b = data.start(&["--shards", "1"]);
    let stderr = data.refused_start();
    assert!(
        stderr.contains("LOCK is locked: another ringmq")
            && stderr.contains(&format!("process {}", b.pid())),
        "{stderr}"
    );
    assert!(b.stop_graceful().success());
    // Free again once the first has gone.
    let mut b = data.start(&["--shards", "1"]);
    assert!(b.stop_graceful().success());
}

#[test]
fn a_full_disk_budget_refuses_durable_publishes_and_recovers_when_space_returns() {
    let rt = runtime();
    let data = Data::new("budget");
    let mut b = data.start(&[
        "--shards",
        "1",
        "--max-data-bytes",
        "131072",
        "--max-queued-messages",
        "100000",
    ]);
    let addr = b.mqtt_addr();
    let payload = vec![b'x'; 1000];
    rt.block_on(async {
        let mut sub = V5::connect(v5::persistent("budget-sub", addr, 3600)).await;
        sub.subscribe_ok("full/#", 1).await;
        sub.disconnect().await;
        // Queued for the offline session until the budget refuses: MQTT 5 hears 0x97
        // (rumqttc then ends the connection, naming the reason).
        let mut p = V5::connect(v5::options("budget-pub5", addr)).await;
        let mut accepted = 0;
        let why = loop {
            assert!(accepted < 2000, "the budget never refused");
            p.client
                .publish("full/a", v5::QoS::AtLeastOnce, false, payload.clone())
                .await
                .unwrap();
            match p.puback_or_error().await {
                Ok(true) => accepted += 1,
                Ok(false) => break "a failure reason".to_string(),
                Err(why) => break why,
            }
        };
        assert!(why.contains("QuotaExceeded"), "{why}");
        assert!(accepted > 10, "{accepted} accepted before the refusal");
        // 3.1.1 has no reason code: the publisher is disconnected, unanswered. (Until
        // compaction makes room: what it takes is answered as usual.)
        let mut refused4 = false;
        for _ in 0..50 {
            let mut p4 = V4::connect(v311::options("budget-pub4", addr)).await;
            p4.client
                .publish("full/a", v311::QoS::AtLeastOnce, false, payload.clone())
                .await
                .unwrap();
            if p4.puback_or_error().await.is_err() {
                refused4 = true;
                break;
            }
            accepted += 1;
        }
        assert!(refused4, "3.1.1: disconnected without a PUBACK");
        // QoS 0 to the same topic is not kept for an offline session: not refused.
        let mut p = V5::connect(v5::options("budget-pub5", addr)).await;
        p.publish("full/a", 0, b"qos0").await;
        // What was accepted is all there; once taken, the log makes room again.
        let mut sub = V5::connect(v5::persistent("budget-sub", addr, 3600)).await;
        for _ in 0..accepted {
            let g = sub.next_publish().await;
            assert_eq!(g.payload.len(), 1000);
        }
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "the budget never recovered");
            p.client
                .publish("full/b", v5::QoS::AtLeastOnce, false, payload.clone())
                .await
                .unwrap();
            match p.puback_or_error().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(_) => p = V5::connect(v5::options("budget-pub5", addr)).await,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(sub.next_publish().await.topic, "full/b");
        sub.disconnect().await;
        p.disconnect().await;
    });
    assert!(b.metric("ringmq_durable_publishes_refused") >= 2);
    assert!(b.stop_graceful().success());
}

/// Under `--durability fsync` the PUBACK of a message for a persistent session waits
/// for the sync; the refusals and answers decided at once (a topic too deep, 0x90; a
/// topic the client may not write, 0x87; a PUBREL for an unknown packet id, 0x92) come
/// behind it, in the order of the packets they answer (MQTT-4.6.0-2). All of them are
/// sent in one write, so without that queue the refusals would overtake the PUBACK that
/// waits for the disk.
#[test]
fn refusals_keep_their_place_behind_acknowledgements_waiting_for_the_log() {
    let b = Broker::start(&[
        "--shards",
        "1",
        "--durability",
        "fsync",
        "--max-topic-levels",
        "3",
    ]);
    let addr = b.mqtt_addr();
    // A persistent session, offline: what matches `ord/#` is logged for it.
    let mut props = Vec::new();
    prop_u32(SESSION_EXPIRY, 300, &mut props);
    let (mut sub, _) = raw_v5(addr, "ord-sub", false, &props);
    sub.send(&subscribe(5, 1, "ord/#", 1, &[]));
    assert_eq!(sub.read_packet().kind(), 9, "SUBACK");
    sub.send(&DISCONNECT);
    drop(sub);
    let (mut p, _) = raw_v5(addr, "ord-pub", true, &[]);
    let mut burst = Vec::new();
    burst.extend(publish(5, "ord/a", 1, false, false, 1, &[], b"kept"));
    burst.extend(publish(5, "ord/a/b/c/d", 1, false, false, 2, &[], b"deep"));
    burst.extend(publish(5, "$SYS/ord", 1, false, false, 3, &[], b"denied"));
    burst.extend(ack(PUBREL, 9));
    burst.extend(publish(5, "ord/b", 1, false, false, 4, &[], b"kept"));
    p.send(&burst);
    let got: Vec<(u8, u16, u8)> = (0..5)
        .map(|_| {
            let r = p.read_packet();
            (r.kind(), r.pkid(), r.reason_and_props().0)
        })
        .collect();
    // (packet type, packet id, reason code): PUBACK is 4, PUBCOMP 7.
    assert_eq!(
        got,
        [
            (4, 1, 0x00),
            (4, 2, 0x90),
            (4, 3, 0x87),
            (7, 9, 0x92),
            (4, 4, 0x00)
        ],
        "acknowledgements out of order"
    );
}

/// An UNSUBACK of a persistent session is sent once its removal is durable, in its place
/// among the connection's acknowledgements: behind the SUBACK that waits for the log
/// when both are asked in one write.
#[test]
fn an_unsuback_waits_for_the_log_behind_the_suback_before_it() {
    let b = Broker::start(&["--shards", "1", "--durability", "fsync"]);
    let mut props = Vec::new();
    prop_u32(SESSION_EXPIRY, 300, &mut props);
    let (mut c, _) = raw_v5(b.mqtt_addr(), "unsub-order", false, &props);
    let mut unsubscribe = 2u16.to_be_bytes().to_vec();
    unsubscribe.push(0); // no properties
    mqtt_str(b"unsub/#", &mut unsubscribe);
    let mut burst = subscribe(5, 1, "unsub/#", 1, &[]);
    burst.extend(packet(0xA2, &unsubscribe));
    c.send(&burst);
    let got: Vec<(u8, u16)> = (0..2)
        .map(|_| {
            let r = c.read_packet();
            (r.kind(), r.pkid())
        })
        .collect();
    // SUBACK is 9, UNSUBACK 11.
    assert_eq!(got, [(9, 1), (11, 2)], "acknowledgements out of order");
}

/// A 3.1.1 persistent session's QoS 2 PUBLISH to a topic it may not write (`$SYS`) is
/// answered as if taken and dropped; its packet id waits for PUBREL in memory only (it
/// was never logged), so the PUBREL completes the flow without logging a release the
/// log never heard of.
#[test]
fn a_refused_qos2_publish_of_a_persistent_311_session_completes_its_flow() {
    let b = Broker::start(&["--shards", "1"]);
    let (mut p, _) = raw_v311(b.mqtt_addr(), "refused-qos2", false, 60);
    p.send(&publish(4, "$SYS/refused", 2, false, false, 7, &[], b"no"));
    let rec = p.read_packet();
    assert_eq!((rec.kind(), rec.pkid()), (5, 7), "PUBREC: {rec:02x?}");
    p.send(&ack(PUBREL, 7));
    let comp = p.read_packet();
    assert_eq!((comp.kind(), comp.pkid()), (7, 7), "PUBCOMP: {comp:02x?}");
    // The shard is still there: a PINGREQ is answered.
    p.send(&PINGREQ);
    assert_eq!(p.read_packet().kind(), 13, "PINGRESP");
    let stderr = b.stderr();
    assert!(!stderr.contains("rejected"), "{stderr}");
}

#[test]
fn durability_none_writes_nothing_and_keeps_nothing() {
    let data = Data::new("none");
    let mut b = data.start(&["--shards", "1", "--durability", "none"]);
    mosquitto_pub(&b, &["-t", "gone/r", "-m", "r", "-r", "-q", "1"]);
    assert!(b.stop_graceful().success());
    assert!(data.segments().is_empty(), "no log in none mode");
    let mut b = data.start(&["--shards", "1", "--durability", "none"]);
    assert!(mosquitto_sub(&b, &["-t", "gone/#"], 1, 1).is_empty());
    assert!(b.stop_graceful().success());
}
