//! A cluster: three ringmq nodes joined through a real `nats-server` (JetStream on), and
//! independent MQTT clients (rumqttc) on different nodes. Messages cross nodes at QoS
//! 0, 1 and 2, each once and in each publisher's order, back to no node they came from;
//! wildcards, topics with `.` and empty levels map one-to-one; a shared group delivers
//! each message once in the whole cluster, at members on every node; retained messages
//! published on one node reach subscribers on the others.
//!
//! Without `nats-server` these tests fail, saying how to install it.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::nats::{Nats, Nodes};
use support::*;

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

const PER_QOS: usize = 100;

#[test]
fn fan_out_across_nodes_at_every_qos_once_and_in_order() {
    let nats = Nats::start();
    let nodes = Nodes::start(3, &nats.url(), &[]);
    nodes.wait_connected();
    runtime().block_on(async {
        // Subscribers on every node, the publishers on node 0.
        let mut subs = Vec::new();
        for i in 0..3 {
            let mut s = V4::connect(v311::options(&format!("sub{i}"), nodes.addr(i))).await;
            s.subscribe_ok("fan/#", 2).await;
            subs.push(s);
        }
        // Node 0 knows the other two nodes' interest before anything is published.
        block(|| nodes.wait_interest(0, 2, 2));
        let mut pubs = Vec::new();
        for q in 0..3u8 {
            pubs.push(V4::connect(v311::options(&format!("pub{q}"), nodes.addr(0))).await);
        }
        for i in 0..PER_QOS {
            for (q, p) in pubs.iter_mut().enumerate() {
                p.publish(&format!("fan/q{q}"), q as u8, format!("{q}:{i}").as_bytes())
                    .await;
            }
        }
        for s in subs.iter_mut() {
            let mut by_topic: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for _ in 0..3 * PER_QOS {
                let g = s.next_publish().await;
                let q: u8 = g.topic[5..].parse().unwrap();
                assert_eq!(g.qos, q, "{}: {g:?} at the publisher's QoS", s.id);
                by_topic.entry(g.topic.clone()).or_default().push(g.text());
            }
            // Nothing more: no copy twice, none looped back.
            s.no_publish().await;
            for q in 0..3 {
                let want: Vec<String> = (0..PER_QOS).map(|i| format!("{q}:{i}")).collect();
                assert_eq!(
                    by_topic.get(&format!("fan/q{q}")),
                    Some(&want),
                    "{}: QoS {q} messages once each, in order",
                    s.id
                );
            }
        }
    });
    let out = nodes.nodes[0].metric("ringmq_cluster_messages_out_total");
    // One NATS message per other node and message: nothing for node 0 itself.
    assert_eq!(out, 2 * 3 * PER_QOS as u64);
    for i in 1..3 {
        assert_eq!(
            nodes.nodes[i].metric("ringmq_cluster_messages_out_total"),
            0
        );
        assert_eq!(nodes.nodes[i].metric("ringmq_cluster_bad_frames_total"), 0);
    }
}

#[test]
fn a_publish_nobody_elsewhere_wants_sends_nothing_to_nats() {
    let nats = Nats::start();
    let nodes = Nodes::start(2, &nats.url(), &[]);
    nodes.wait_connected();
    runtime().block_on(async {
        let mut local = V4::connect(v311::options("local", nodes.addr(0))).await;
        local.subscribe_ok("here/#", 1).await;
        let mut remote = V4::connect(v311::options("remote", nodes.addr(1))).await;
        remote.subscribe_ok("there/#", 1).await;
        block(|| nodes.wait_interest(0, 1, 1));
        let mut p = V4::connect(v311::options("p", nodes.addr(0))).await;
        p.publish("here/x", 1, b"local only").await;
        assert_eq!(local.next_publish().await.text(), "local only");
        remote.no_publish().await;
    });
    assert_eq!(
        nodes.nodes[0].metric("ringmq_cluster_messages_out_total"),
        0
    );
}

/// Which of `topics` MQTT's `filter` matches, by hand (the spec's rules, not the
/// broker's code).
fn expected(filter: &str, topics: &[&str]) -> BTreeSet<String> {
    topics
        .iter()
        .filter(|t| {
            let f: Vec<&str> = filter.split('/').collect();
            let t: Vec<&str> = t.split('/').collect();
            for (i, l) in f.iter().enumerate() {
                if *l == "#" {
                    return true;
                }
                match t.get(i) {
                    Some(tl) if *l == "+" || l == tl => {}
                    _ => return false,
                }
            }
            f.len() == t.len()
        })
        .map(|t| t.to_string())
        .collect()
}

#[test]
fn wildcards_dots_and_empty_levels_cross_nodes_one_to_one() {
    let nats = Nats::start();
    let nodes = Nodes::start(3, &nats.url(), &[]);
    nodes.wait_connected();
    let topics = [
        "a/b.c/d", "a/b_c/d", "a/b/c/d", "a//x", "a/", "x.y", "/", "a/b.c", "a/*/>", "a/_2E", "é/ü",
    ];
    let filters = [
        "a/b.c/#", "a//+", "+/+", "#", "a/+/d", "a/*/>", "a/_2E", "é/#",
    ];
    runtime().block_on(async {
        let mut subs = Vec::new();
        for (i, f) in filters.iter().enumerate() {
            // Spread over nodes 1 and 2.
            let node = 1 + i % 2;
            let mut s = V4::connect(v311::options(&format!("w{i}"), nodes.addr(node))).await;
            s.subscribe_ok(f, 1).await;
            subs.push((f, s));
        }
        block(|| nodes.wait_interest(0, 2, 2));
        let mut p = V4::connect(v311::options("wp", nodes.addr(0))).await;
        for t in topics {
            p.publish(t, 1, t.as_bytes()).await;
        }
        for (f, s) in subs.iter_mut() {
            let want = expected(f, &topics);
            let mut got = BTreeSet::new();
            for _ in 0..want.len() {
                let g = s.next_publish().await;
                assert_eq!(g.text(), g.topic, "the payload names its topic");
                assert!(got.insert(g.topic.clone()), "{f}: {} twice", g.topic);
            }
            s.no_publish().await;
            assert_eq!(got, want, "{f}");
        }
    });
}

#[test]
fn a_shared_group_delivers_each_message_once_across_nodes() {
    let nats = Nats::start();
    let nodes = Nodes::start(3, &nats.url(), &[]);
    nodes.wait_connected();
    const N: usize = 90;
    runtime().block_on(async {
        let mut members = Vec::new();
        for i in 0..3 {
            let mut m = V5::connect(v5::options(&format!("m{i}"), nodes.addr(i))).await;
            m.subscribe_ok("$share/g/job/+", 1).await;
            members.push(m);
        }
        // A plain subscriber on node 1 still gets every message.
        let mut plain = V5::connect(v5::options("plain", nodes.addr(1))).await;
        plain.subscribe_ok("job/#", 1).await;
        // Node 0 knows the groups of nodes 1 and 2 and node 1's plain filter.
        block(|| nodes.wait_interest(0, 2, 3));
        let mut p = V5::connect(v5::options("jp", nodes.addr(0))).await;
        // Sent without waiting for each PUBACK, then all of them awaited.
        for i in 0..N {
            p.client
                .publish("job/run", v5::qos(1), false, format!("{i}").into_bytes())
                .await
                .unwrap();
        }
        p.wait_pubacks(N).await;
        let all: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        let mut seen = Vec::new();
        let mut per_member = Vec::new();
        let mut members_got: Vec<Vec<String>> = vec![Vec::new(); 3];
        // Gather until every message arrived somewhere (each member in order).
        while seen.len() < N {
            for (i, m) in members.iter_mut().enumerate() {
                for g in m
                    .publishes_within(std::time::Duration::from_millis(200))
                    .await
                {
                    seen.push(g.text());
                    members_got[i].push(g.text());
                }
            }
            assert!(seen.len() <= N, "more deliveries than messages: {seen:?}");
        }
        for m in members.iter_mut() {
            m.no_publish().await;
        }
        for (i, got) in members_got.iter().enumerate() {
            per_member.push(got.len());
            let mut sorted = got.clone();
            sorted.sort_by_key(|s| s.parse::<usize>().unwrap());
            assert_eq!(&sorted, got, "member {i} got its share in order");
        }
        seen.sort_by_key(|s| s.parse::<usize>().unwrap());
        assert_eq!(seen, all, "each message once in the whole group");
        assert!(
            per_member.iter().all(|&n| n > 0),
            "members on every node take part: {per_member:?}"
        );
        let mut plain_got = Vec::new();
        for _ in 0..N {
            plain_got.push(plain.next_publish().await.text());
        }
        assert_eq!(plain_got, all);
    });
}

/// The counters of a node's QoS 1/2 streams, for a failure's message.
fn cluster_metrics(node: &Broker) -> String {
    [
        "resent_total",
        "windows_dropped_total",
        "dropped_window_full_total",
        "acks_received_total",
        "unacked",
        "nodes_silent",
        "disconnects_total",
        "duplicates_dropped_total",
        "gaps_dropped_total",
        "acks_sent_total",
        "messages_in_total",
    ]
    .iter()
    .map(|m| format!("{m}={}", node.metric(&format!("ringmq_cluster_{m}"))))
    .collect::<Vec<_>>()
    .join(" ")
}

/// Publishes `payload` retained to `cfg/a` from node `from`, and waits until node `at`
/// has read it from the retained bucket.
async fn retain_from(nodes: &Nodes, from: usize, payload: &str, at: usize) {
    let before = block(|| nodes.nodes[at].metric("ringmq_cluster_retained_in_total"));
    let mut p = V4::connect(v311::options(&format!("r-p{from}"), nodes.addr(from))).await;
    p.publish_retained("cfg/a", 1, payload.as_bytes()).await;
    block(|| {
        nodes.nodes[at].wait_for_metric("ringmq_cluster_retained_in_total", WAIT, |v| v > before)
    });
}

/// Publishes probes to `topic` until `remote` gets one (the cluster carries messages
/// again); returns what `remote` got meanwhile, and adds the probes to `sent`.
async fn until_one_crosses(
    p: &mut V4,
    remote: &mut V4,
    topic: &str,
    sent: &mut Vec<String>,
) -> Vec<String> {
    let mut got = Vec::new();
    for n in 0..150 {
        let m = format!("probe{n}");
        p.publish(topic, 1, m.as_bytes()).await;
        sent.push(m);
        for g in remote
            .publishes_within(std::time::Duration::from_millis(200))
            .await
        {
            let crossed = g.text().starts_with("probe");
            got.push(g.text());
            if crossed {
                return got;
            }
        }
    }
    panic!("nothing crossed");
}

#[test]
fn retained_messages_reach_subscribers_on_every_node() {
    let nats = Nats::start();
    let nodes = Nodes::start(3, &nats.url(), &[]);
    nodes.wait_connected();
    runtime().block_on(async {
        let mut p0 = V4::connect(v311::options("r-p0", nodes.addr(0))).await;
        p0.publish_retained("cfg/a", 1, b"v1").await;
        // The retained bucket hands it to the other nodes (its writer and watchers
        // count it).
        for i in 1..3 {
            block(|| {
                nodes.nodes[i].wait_for_metric("ringmq_cluster_retained_in_total", WAIT, |v| v >= 1)
            });
        }
        for i in 1..3 {
            let mut s = V4::connect(v311::options(&format!("r-s{i}"), nodes.addr(i))).await;
            s.subscribe_ok("cfg/#", 1).await;
            let g = s.next_publish().await;
            assert_eq!(
                (g.topic.as_str(), g.text().as_str(), g.retain),
                ("cfg/a", "v1", true)
            );
            s.no_publish().await;
        }
        // Replaced from node 2, then cleared from node 1.
        retain_from(&nodes, 2, "v2", 0).await;
        let mut s = V4::connect(v311::options("r-s0", nodes.addr(0))).await;
        s.subscribe_ok("cfg/#", 1).await;
        assert_eq!(s.next_publish().await.text(), "v2");
        s.disconnect().await;

        retain_from(&nodes, 1, "", 2).await;
        let mut s = V4::connect(v311::options("r-s2b", nodes.addr(2))).await;
        s.subscribe_ok("cfg/#", 1).await;
        s.no_publish().await;
    });
}

#[test]
fn cluster_flags_are_checked() {
    let out = run(&["--node-id", "a"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--cluster is missing"),
        "{out:?}"
    );
    let out = run(&["--cluster", "nats://127.0.0.1:1", "--node-id", "a.b"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("letters, digits or '-'"),
        "{out:?}"
    );
}

#[test]
fn a_node_serves_its_own_clients_while_nats_is_unreachable() {
    // Nothing listens on this NATS address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let nodes = Nodes::start(1, &url, &[]);
    runtime().block_on(async {
        let mut s = V4::connect(v311::options("alone-s", nodes.addr(0))).await;
        s.subscribe_ok("t/#", 1).await;
        let mut p = V4::connect(v311::options("alone-p", nodes.addr(0))).await;
        p.publish_retained("t/1", 1, b"kept").await;
        assert_eq!(s.next_publish().await.text(), "kept");
    });
    assert_eq!(nodes.nodes[0].metric("ringmq_cluster_connected"), 0);
}

/// NATS stopped and started again while a node publishes: its own subscribers get every
/// message throughout, and the other node's get every QoS 1 message too, in order, once
/// NATS is back (those published meanwhile waited in the window and were sent again).
#[test]
fn nats_restarted_under_load_local_delivery_goes_on_and_remote_resumes() {
    let mut nats = Nats::start();
    let nodes = Nodes::start(2, &nats.url(), &[]);
    nodes.wait_connected();
    runtime().block_on(async {
        let mut local = V4::connect(v311::options("nr-local", nodes.addr(0))).await;
        local.subscribe_ok("load/#", 1).await;
        let mut remote = V4::connect(v311::options("nr-remote", nodes.addr(1))).await;
        remote.subscribe_ok("load/#", 1).await;
        block(|| nodes.wait_interest(0, 1, 1));
        let mut p = V4::connect(v311::options("nr-pub", nodes.addr(0))).await;
        let mut sent = Vec::new();
        let send = async |p: &mut V4, sent: &mut Vec<String>, tag: &str, n: usize| {
            for i in 0..n {
                let m = format!("{tag}{i}");
                p.publish("load/x", 1, m.as_bytes()).await;
                sent.push(m);
            }
        };
        send(&mut p, &mut sent, "before", 50).await;
        // Everything before the stop crossed.
        let mut remote_got = Vec::new();
        for _ in 0..50 {
            remote_got.push(remote.next_publish().await.text());
        }
        block(|| nats.kill());
        // Every PUBACK still comes: the node does not wait for NATS.
        send(&mut p, &mut sent, "during", 50).await;
        block(|| {
            nats.restart();
            for b in &nodes.nodes {
                b.wait_for_metric("ringmq_cluster_connects_total", WAIT, |v| v >= 2);
            }
            nodes.wait_connected();
        });
        // Probes until one crosses: node 1 subscribed again, node 0 read its interest.
        remote_got.extend(until_one_crosses(&mut p, &mut remote, "load/x", &mut sent).await);
        send(&mut p, &mut sent, "after", 50).await;
        // Local delivery: every message, in order.
        let mut local_got = Vec::new();
        for _ in 0..sent.len() {
            local_got.push(local.next_publish().await.text());
        }
        assert_eq!(local_got, sent);
        local.no_publish().await;
        // Remote: every message too, in order, once each (those published while NATS
        // was away included), but for probes published before node 0 had read node 1's
        // interest again (sent to no node).
        let mut last_got = std::time::Instant::now();
        while remote_got.last().is_none_or(|m| m != "after49") && last_got.elapsed() < WAIT {
            let more = remote
                .publishes_within(std::time::Duration::from_millis(200))
                .await;
            if !more.is_empty() {
                last_got = std::time::Instant::now();
            }
            remote_got.extend(more.iter().map(|g| g.text()));
        }
        remote.no_publish().await;
        let want: Vec<&String> = sent
            .iter()
            .filter(|m| !m.starts_with("probe") || remote_got.contains(m))
            .collect();
        assert_eq!(
            remote_got.iter().collect::<Vec<_>>(),
            want,
            "every message, in order, once each; node 0: {}; node 1: {}",
            cluster_metrics(&nodes.nodes[0]),
            cluster_metrics(&nodes.nodes[1])
        );
    });
    let resent = nodes.nodes[0].metric("ringmq_cluster_resent_total");
    assert!(resent > 0, "what could not cross was sent again");
}

/// A client that connects to another node takes its session over there: the old node
/// closes the old connection (MQTT 5: DISCONNECT 0x8E) and publishes its will once.
#[test]
fn a_client_reconnecting_to_another_node_takes_its_session_over() {
    let nats = Nats::start();
    let nodes = Nodes::start(3, &nats.url(), &[]);
    nodes.wait_connected();
    runtime().block_on(async {
        let mut watcher = V5::connect(v5::options("tk-watcher", nodes.addr(2))).await;
        watcher.subscribe_ok("will/#", 1).await;
        block(|| nodes.wait_interest(0, 1, 1));
        let mut o = v5::options("tk", nodes.addr(0));
        o.set_last_will(v5::LastWill::new(
            "will/tk",
            "gone",
            v5::QoS::AtLeastOnce,
            false,
            None,
        ));
        let mut old = V5::connect(o).await;
        block(|| {
            nodes.nodes[0]
                .wait_for_metric("ringmq_cluster_sessions_claimed_total", WAIT, |v| v >= 1)
        });
        let mut new = V5::connect(v5::options("tk", nodes.addr(1))).await;
        let why = old.next_error().await;
        assert!(format!("{why:?}").contains("SessionTakenOver"), "{why:?}");
        let g = watcher.next_publish().await;
        assert_eq!((g.topic.as_str(), g.text().as_str()), ("will/tk", "gone"));
        watcher.no_publish().await;
        // The new connection stays, and works.
        new.subscribe_ok("tk/own", 1).await;
        new.publish("tk/own", 1, b"still here").await;
        assert_eq!(new.next_publish().await.text(), "still here");
    });
    assert_eq!(
        nodes.nodes[0].metric("ringmq_cluster_sessions_taken_over_total"),
        1
    );
    assert_eq!(
        nodes.nodes[1].metric("ringmq_cluster_sessions_taken_over_total"),
        0
    );
}

/// Two CONNECTs with one client id on two nodes at once end with one session: the
/// registry takes one of them (compare-and-set), the other is refused at its CONNACK
/// (or, had it gone on, taken over).
#[test]
fn simultaneous_connects_on_two_nodes_end_with_one_session() {
    let nats = Nats::start();
    let nodes = Nodes::start(2, &nats.url(), &[]);
    nodes.wait_connected();
    runtime().block_on(async {
        for round in 0..3 {
            let id = format!("twin{round}");
            let (a, b) = tokio::join!(
                V5::try_connect(v5::options(&id, nodes.addr(0))),
                V5::try_connect(v5::options(&id, nodes.addr(1)))
            );
            let mut connected: Vec<V5> = [a, b].into_iter().filter_map(Result::ok).collect();
            assert!(!connected.is_empty(), "{id}: neither connected");
            for c in connected.iter_mut() {
                c.no_publish().await;
            }
            let mut alive: Vec<V5> = connected
                .into_iter()
                .filter(|c| c.error().is_none())
                .collect();
            assert_eq!(alive.len(), 1, "{id}: one session, one connection");
            alive[0].subscribe_ok("twin/x", 0).await;
        }
    });
    let ended: u64 = nodes
        .nodes
        .iter()
        .map(|n| {
            n.metric("ringmq_cluster_claims_refused_total")
                + n.metric("ringmq_cluster_sessions_taken_over_total")
        })
        .sum();
    assert_eq!(ended, 3, "one CONNECT of each pair refused or taken over");
}

/// Options for a 3.1.1 client with a session that outlives its connection.
fn persistent(id: &str, addr: std::net::SocketAddr) -> rumqttc::MqttOptions {
    let mut o = v311::options(id, addr);
    o.set_clean_session(false);
    o
}

/// A persistent session follows its client to another node: its subscriptions and the
/// messages queued for it while it was away come along, in order, and the node that
/// held it keeps nothing of it.
#[test]
fn a_session_moves_with_its_subscriptions_and_queue_to_another_node() {
    let nats = Nats::start();
    let nodes = Nodes::start(3, &nats.url(), &[]);
    nodes.wait_connected();
    let persistent = |addr| persistent("mover", addr);
    runtime().block_on(async {
        let mut c = V4::connect(persistent(nodes.addr(0))).await;
        assert!(!c.connack.session_present);
        c.subscribe_ok("mv/#", 1).await;
        block(|| nodes.wait_interest(2, 1, 1));
        let mut p = V4::connect(v311::options("mv-pub", nodes.addr(2))).await;
        p.publish("mv/a", 1, b"live").await;
        assert_eq!(c.next_publish().await.text(), "live");
        c.disconnect().await;
        // Queued on node 0 while the client is away.
        for i in 0..20 {
            p.publish("mv/a", 1, format!("q{i}").as_bytes()).await;
        }
        block(|| {
            nodes.nodes[0].wait_for_metric("ringmq_cluster_messages_in_total", WAIT, |v| v >= 21)
        });
        let mut c = V4::connect(persistent(nodes.addr(1))).await;
        assert!(c.connack.session_present, "the session came along");
        let mut got = Vec::new();
        for _ in 0..20 {
            got.push(c.next_publish().await.text());
        }
        let want: Vec<String> = (0..20).map(|i| format!("q{i}")).collect();
        assert_eq!(got, want, "the queue, once each and in order");
        // Its subscription came along too: node 2 learns it is on node 1 now.
        let mut probes = Vec::new();
        until_one_crosses(&mut p, &mut c, "mv/a", &mut probes).await;
        p.publish("mv/a", 1, b"after").await;
        let mut last = c.next_publish().await.text();
        while last.starts_with("probe") {
            last = c.next_publish().await.text();
        }
        assert_eq!(last, "after");
    });
    assert_eq!(
        nodes.nodes[0].metric("ringmq_cluster_handovers_out_total"),
        1
    );
    assert_eq!(
        nodes.nodes[1].metric("ringmq_cluster_handovers_in_total"),
        1
    );
    assert_eq!(nodes.nodes[0].metric("ringmq_sessions_offline"), 0);
    assert_eq!(nodes.nodes[0].metric("ringmq_sessions_online"), 0);
}

/// A node killed with its sessions: a client that reconnects to another node starts a
/// new session there (what README says a node failure loses), without waiting long.
#[test]
fn a_session_on_a_killed_node_starts_afresh_elsewhere() {
    let nats = Nats::start();
    let nodes = Nodes::start(2, &nats.url(), &[]);
    nodes.wait_connected();
    let persistent = |addr| persistent("orphan", addr);
    runtime().block_on(async {
        let mut c = V4::connect(persistent(nodes.addr(0))).await;
        c.subscribe_ok("or/#", 1).await;
        block(|| {
            nodes.nodes[0]
                .wait_for_metric("ringmq_cluster_sessions_claimed_total", WAIT, |v| v >= 1)
        });
        c.kill();
        block(|| nodes.nodes[0].signal(libc::SIGKILL));
        let c = V4::connect(persistent(nodes.addr(1))).await;
        assert!(!c.connack.session_present);
    });
    assert_eq!(
        nodes.nodes[1].metric("ringmq_cluster_handovers_failed_total"),
        1
    );
}

/// Node `name` on NATS `url` with its data directory `data_dir` (which outlives it).
fn node_with_data(url: &str, name: &str, data_dir: &TempDir) -> Broker {
    let dir = data_dir.path().to_str().unwrap();
    Broker::start(&["--cluster", url, "--node-id", name, "--data-dir", dir])
}

/// A persistent client `id` subscribes to `filter` on node 0, which is then killed
/// (SIGKILL) and cannot hand the session over: the client starts a new one on node 1
/// and subscribes again. Returns it, connected to node 1.
async fn orphan_on_node0(nodes: &mut Nodes, id: &str, filter: &str) -> V4 {
    let mut c = V4::connect(persistent(id, nodes.addr(0))).await;
    // (The SUBACK of a persistent session waits for its log.)
    c.subscribe_ok(filter, 1).await;
    block(|| {
        nodes.nodes[0].wait_for_metric("ringmq_cluster_sessions_claimed_total", WAIT, |v| v >= 1)
    });
    c.kill();
    block(|| {
        nodes.nodes[0].signal(libc::SIGKILL);
        nodes.nodes[0].wait_exit();
    });
    let mut c = V4::connect(persistent(id, nodes.addr(1))).await;
    assert!(
        !c.connack.session_present,
        "node 0 is dead: nothing handed over"
    );
    c.subscribe_ok(filter, 1).await;
    block(|| {
        nodes.nodes[1].wait_for_metric("ringmq_cluster_sessions_claimed_total", WAIT, |v| v >= 1)
    });
    c
}

/// Waits until `node`'s API says it holds no session of `client_id`.
fn wait_no_session(node: &Broker, client_id: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (status, body) = node.http_get(&format!("/api/v1/sessions/{client_id}"));
        if status == 404 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node still holds the session of {client_id}: {status} {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A node killed with a persistent session comes back with its data directory after the
/// client started a new session on another node: once it has read the session registry,
/// which names the other node, it ends the copy it recovered from its log (which would
/// otherwise queue the client's messages until it expired), and a message published on
/// a third node reaches the client once, on the node it is on.
#[test]
fn a_restarted_node_ends_a_recovered_session_the_registry_gives_another_node() {
    let nats = Nats::start();
    let url = nats.url();
    let data = TempDir::new("reconcile");
    let mut nodes = Nodes {
        nodes: vec![
            node_with_data(&url, "node0", &data),
            Broker::start(&["--cluster", &url, "--node-id", "node1"]),
            Broker::start(&["--cluster", &url, "--node-id", "node2"]),
        ],
    };
    nodes.wait_connected();
    runtime().block_on(async {
        let mut c = orphan_on_node0(&mut nodes, "rc-orphan", "rc/#").await;
        block(|| nodes.nodes[0] = node_with_data(&url, "node0", &data));
        let n0 = &nodes.nodes[0];
        assert_eq!(n0.metric("ringmq_recovered_sessions"), 1, "its log had it");
        // Until it has read the registry, node 0 holds its copy (offline).
        block(|| wait_no_session(n0, "rc-orphan"));
        block(|| n0.wait_for_metric("ringmq_sessions_offline", WAIT, |v| v == 0));
        assert_eq!(n0.metric("ringmq_sessions_online"), 0);
        assert_eq!(
            n0.metric("ringmq_cluster_recovered_sessions_dropped_total"),
            1
        );

        // A third node's messages reach the client on node 1, each once.
        let mut p = V4::connect(v311::options("rc-pub", nodes.addr(2))).await;
        let mut sent = Vec::new();
        let mut got = until_one_crosses(&mut p, &mut c, "rc/x", &mut sent).await;
        p.publish("rc/x", 1, b"once").await;
        got.extend(c.publishes_until("once").await.iter().map(|g| g.text()));
        c.no_publish().await;
        let mut distinct = BTreeSet::new();
        let twice: Vec<&String> = got.iter().filter(|m| !distinct.insert(*m)).collect();
        assert!(twice.is_empty(), "twice: {twice:?}");
        assert!(got.iter().all(|m| sent.contains(m)), "{got:?}");
        // Node 1 kept the registry's key: its session is the one, still connected.
        let n1 = &nodes.nodes[1];
        assert_eq!(block(|| n1.metric("ringmq_sessions_online")), 1);
    });
    assert_eq!(
        nodes.nodes[1].metric("ringmq_cluster_sessions_taken_over_total"),
        0
    );
}

/// The same with NATS down while the node restarts: it keeps what it recovered while
/// it cannot read the registry, and checks it once NATS is back.
#[test]
fn a_node_restarted_while_nats_is_down_checks_its_recovered_sessions_when_it_is_back() {
    let mut nats = Nats::start();
    let url = nats.url();
    let data = TempDir::new("reconcile-late");
    let mut nodes = Nodes {
        nodes: vec![
            node_with_data(&url, "node0", &data),
            Broker::start(&["--cluster", &url, "--node-id", "node1"]),
        ],
    };
    nodes.wait_connected();
    runtime().block_on(async {
        let _c = orphan_on_node0(&mut nodes, "rc-late", "late/#").await;
        block(|| {
            nats.kill();
            nodes.nodes[0] = node_with_data(&url, "node0", &data);
        });
        let n0 = &nodes.nodes[0];
        let (status, body) = block(|| n0.http_get("/api/v1/sessions/rc-late"));
        assert_eq!(status, 200, "kept while the registry is away: {body}");
        assert_eq!(block(|| n0.metric("ringmq_cluster_connected")), 0);
        block(|| {
            nats.restart();
            n0.wait_for_metric("ringmq_cluster_connected", WAIT, |v| v == 1);
            wait_no_session(n0, "rc-late");
        });
        assert_eq!(
            block(|| n0.metric("ringmq_cluster_recovered_sessions_dropped_total")),
            1
        );
    });
}

/// A node restarted with its data directory whose client did not connect elsewhere
/// keeps the session it recovered (the registry still names it) and, when the client
/// then connects to another node, hands it over with its subscription.
#[test]
fn a_restarted_node_keeps_a_recovered_session_the_registry_still_gives_it() {
    let nats = Nats::start();
    let url = nats.url();
    let data = TempDir::new("reconcile-keep");
    let mut nodes = Nodes {
        nodes: vec![
            node_with_data(&url, "node0", &data),
            Broker::start(&["--cluster", &url, "--node-id", "node1"]),
        ],
    };
    nodes.wait_connected();
    runtime().block_on(async {
        let mut c = V4::connect(persistent("rc-kept", nodes.addr(0))).await;
        c.subscribe_ok("kept/#", 1).await;
        block(|| {
            nodes.nodes[0]
                .wait_for_metric("ringmq_cluster_sessions_claimed_total", WAIT, |v| v >= 1)
        });
        c.kill();
        block(|| {
            nodes.nodes[0].signal(libc::SIGKILL);
            nodes.nodes[0].wait_exit();
            nodes.nodes[0] = node_with_data(&url, "node0", &data);
        });
        let n0 = &nodes.nodes[0];
        block(|| {
            n0.wait_for_metric(
                "ringmq_cluster_recovered_sessions_checked_total",
                WAIT,
                |v| v >= 1,
            )
        });
        assert_eq!(
            n0.metric("ringmq_cluster_recovered_sessions_dropped_total"),
            0
        );
        let (status, body) = n0.http_get("/api/v1/sessions/rc-kept");
        assert_eq!(status, 200, "node 0 kept the session: {body}");

        let mut c = V4::connect(persistent("rc-kept", nodes.addr(1))).await;
        assert!(c.connack.session_present, "node 0 handed it over");
        let mut p = V4::connect(v311::options("rc-kept-pub", nodes.addr(1))).await;
        p.publish("kept/x", 1, b"here").await;
        assert_eq!(c.next_publish().await.text(), "here");
        c.no_publish().await;
    });
    assert_eq!(
        nodes.nodes[0].metric("ringmq_cluster_handovers_out_total"),
        1
    );
}

/// Over a NATS cluster of three servers with JetStream (buckets replicated on three):
/// one NATS server stops under load; the nodes connected to it reconnect to the others,
/// messages cross again, and retained messages (kept by the two servers left) still
/// reach new subscribers on every node.
#[test]
fn a_nats_server_of_three_stopped_under_load() {
    let mut servers = Nats::start_cluster();
    let urls: Vec<String> = servers.iter().map(Nats::url).collect();
    // Each node starts on a different server (the first URL), then the others.
    let nodes: Vec<Broker> = (0..3)
        .map(|i| {
            let mut list = urls.clone();
            list.rotate_left(i);
            let list = list.join(",");
            let id = format!("node{i}");
            Broker::start(&["--cluster", &list, "--node-id", &id])
        })
        .collect();
    let nodes = Nodes { nodes };
    nodes.wait_connected();
    runtime().block_on(async {
        let mut p = V4::connect(v311::options("n3-pub", nodes.addr(0))).await;
        // JetStream elects its leaders first: retry until the retained bucket has it.
        p.publish_retained("n3/cfg", 1, b"kept").await;
        block(|| {
            nodes.nodes[2].wait_for_metric("ringmq_cluster_retained_in_total", WAIT, |v| v >= 1)
        });
        let mut remote = V4::connect(v311::options("n3-remote", nodes.addr(2))).await;
        remote.subscribe_ok("n3/#", 1).await;
        assert_eq!(remote.next_publish().await.text(), "kept");
        block(|| nodes.wait_interest(0, 1, 1));
        p.publish("n3/x", 1, b"before").await;
        assert_eq!(remote.next_publish().await.text(), "before");
        // Node 1's and (through its list) maybe others' server goes.
        block(|| servers[1].kill());
        until_one_crosses(&mut p, &mut remote, "n3/x", &mut Vec::new()).await;
        for i in 0..20 {
            p.publish("n3/x", 1, format!("after{i}").as_bytes()).await;
        }
        let mut got = Vec::new();
        while got.len() < 20 {
            let t = remote.next_publish().await.text();
            if t.starts_with("after") {
                got.push(t);
            }
        }
        let want: Vec<String> = (0..20).map(|i| format!("after{i}")).collect();
        assert_eq!(got, want);
        // A new subscriber on node 1 (which lost its server) still gets the retained one,
        // once node 1 has read it from the bucket (a SUBSCRIBE never waits for that; the
        // messages above may have crossed before node 1's watch of the bucket, started
        // again on its new server, caught up).
        block(|| nodes.nodes[1].wait_for_metric("ringmq_cluster_connected", WAIT, |v| v == 1));
        block(|| {
            nodes.nodes[1].wait_for_metric("ringmq_cluster_retained_in_total", WAIT, |v| v >= 1)
        });
        let mut late = V4::connect(v311::options("n3-late", nodes.addr(1))).await;
        late.subscribe_ok("n3/cfg", 1).await;
        assert_eq!(late.next_publish().await.text(), "kept");
    });
}

/// NATS cuts off a node that stops reading (what waits for it passes the server's
/// `max_pending`, or a write to it passes `write_deadline`: a slow consumer) and drops
/// what was on its way to it. QoS 1 messages for that node are acknowledged by it and
/// sent again, so its subscriber still gets every one, once and in order.
#[test]
fn qos1_messages_nats_dropped_for_a_stopped_node_are_sent_again() {
    messages_nats_dropped_are_sent_again("slow/#");
}

/// The same for a shared group whose only member is on the stopped node: the
/// publishing node picks that node for the group and sends it the message on the same
/// numbered stream.
#[test]
fn qos1_group_messages_nats_dropped_for_a_stopped_node_are_sent_again() {
    messages_nats_dropped_are_sent_again("$share/g/slow/#");
}

fn messages_nats_dropped_are_sent_again(filter: &str) {
    let nats = Nats::start_with_config(&[
        "max_pending: 262144",
        "max_payload: 65536",
        "write_deadline: \"200ms\"",
    ]);
    // Node 1's subscriber gets a burst once node 1 runs again: its session may queue
    // them all rather than cut it off as a slow consumer.
    let nodes = Nodes::start(2, &nats.url(), &["--max-queued-messages", "10000"]);
    nodes.wait_connected();
    // Far more than max_pending and the sockets' buffers together (about 24 MB).
    const N: usize = 3000;
    let pad = "x".repeat(8000);
    runtime().block_on(async {
        let mut s = V4::connect(v311::options("sc-sub", nodes.addr(1))).await;
        s.subscribe_ok(filter, 1).await;
        block(|| nodes.wait_interest(0, 1, 1));
        let mut p = V4::connect(v311::options("sc-pub", nodes.addr(0))).await;
        // Node 1 stops reading anything, NATS included.
        nodes.nodes[1].signal(libc::SIGSTOP);
        for i in 0..N {
            p.client
                .publish(
                    "slow/x",
                    v311::qos(1),
                    false,
                    format!("{i}:{pad}").into_bytes(),
                )
                .await
                .unwrap();
        }
        p.wait_pubacks(N).await;
        // NATS holds a publisher back for a while when a subscriber falls behind, then
        // cuts the subscriber off and drops what was for it.
        block(|| {
            let deadline = std::time::Instant::now() + WAIT;
            while nats.varz("slow_consumers") == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "NATS never cut node 1 off"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        nodes.nodes[1].signal(libc::SIGCONT);
        for i in 0..N {
            let g = s.next_publish().await;
            let text = g.text();
            let number = text.split(':').next().unwrap_or_default();
            assert_eq!(number, i.to_string(), "every message once, in order");
        }
        s.no_publish().await;
    });
    let n1 = &nodes.nodes[1];
    let cut = n1.metric("ringmq_cluster_slow_consumer_total")
        + n1.metric("ringmq_cluster_disconnects_total");
    assert!(cut > 0, "NATS cut node 1 off (else nothing was dropped)");
    assert!(
        nodes.nodes[0].metric("ringmq_cluster_resent_total") > 0,
        "node 0 sent again what NATS dropped"
    );
}

/// A node killed without a word is left out of routing once it has been silent for the
/// node timeout (nothing more is sent to it), and is routed to again when a node of
/// that name is heard again.
#[test]
fn a_silent_node_is_left_out_of_routing_until_it_is_heard_again() {
    let nats = Nats::start();
    let mut nodes = Nodes::start(3, &nats.url(), &[]);
    nodes.wait_connected();
    runtime().block_on(async {
        let mut near = V4::connect(v311::options("lv-1", nodes.addr(1))).await;
        near.subscribe_ok("lv/#", 1).await;
        let mut far = V4::connect(v311::options("lv-2", nodes.addr(2))).await;
        far.subscribe_ok("lv/#", 1).await;
        block(|| nodes.wait_interest(0, 2, 2));
        far.kill();
        block(|| nodes.nodes[2].signal(libc::SIGKILL));
        block(|| nodes.nodes[0].wait_for_metric("ringmq_cluster_nodes_silent", WAIT, |v| v == 1));
        assert_eq!(nodes.nodes[0].metric("ringmq_cluster_remote_nodes"), 1);
        let mut p = V4::connect(v311::options("lv-p", nodes.addr(0))).await;
        let before = nodes.nodes[0].metric("ringmq_cluster_messages_out_total");
        p.publish("lv/x", 1, b"one").await;
        assert_eq!(near.next_publish().await.text(), "one");
        assert_eq!(
            nodes.nodes[0].metric("ringmq_cluster_messages_out_total") - before,
            1,
            "sent to the live node only"
        );
        // A node named node2 again: heard, and routed to with the interest it writes.
        let url = nats.url();
        nodes.nodes[2] = Broker::start(&["--cluster", &url, "--node-id", "node2"]);
        block(|| nodes.nodes[2].wait_for_metric("ringmq_cluster_connected", WAIT, |v| v == 1));
        let mut back = V4::connect(v311::options("lv-3", nodes.addr(2))).await;
        back.subscribe_ok("lv/#", 1).await;
        block(|| nodes.nodes[0].wait_for_metric("ringmq_cluster_nodes_silent", WAIT, |v| v == 0));
        block(|| nodes.wait_interest(0, 2, 2));
        let mut sent = Vec::new();
        until_one_crosses(&mut p, &mut back, "lv/x", &mut sent).await;
    });
}

/// A session moves while a third node publishes to it without a pause: the old node's
/// stub forwards what reached it before the third node learnt where the session went,
/// and the new node delivers none of what it gets both ways twice, and what came
/// straight only in its turn. Every message arrives; on each connection once and in
/// the publisher's order.
#[test]
fn messages_published_while_a_session_moves_reach_it_once() {
    moves_while_published_to(Move::Once);
}

/// The same, with another subscriber of the topic on the node the session moves to, so
/// that node gets every message straight from its publisher all along, also before the
/// session is there: what it routed before the session came, the stub forwards; what
/// came after, it delivers itself, once.
#[test]
fn a_session_moving_to_a_node_that_already_gets_its_topic_gets_each_message_once() {
    moves_while_published_to(Move::ToBystander);
}

/// The session moves to node 1 and straight back to node 0, while node 0's stub still
/// forwards: what it got on node 1 goes back with it, and nothing is lost or doubled
/// around either switch.
#[test]
fn a_session_moving_back_at_once_gets_each_message_once() {
    moves_while_published_to(Move::Back);
}

/// The session moves to the node its publisher is on: what is published there reaches
/// it straight and, while the stub forwards, also back through the stub.
#[test]
fn a_session_moving_to_its_publishers_node_gets_each_message_once() {
    moves_while_published_to(Move::ToPublisher);
}

#[derive(PartialEq)]
enum Move {
    Once,
    ToBystander,
    Back,
    ToPublisher,
}

fn moves_while_published_to(how: Move) {
    const N: usize = 1500;
    let nats = Nats::start();
    let nodes = Nodes::start(3, &nats.url(), &[]);
    nodes.wait_connected();
    let persistent = |addr| persistent("flow", addr);
    runtime().block_on(async {
        let mut c = V4::connect(persistent(nodes.addr(0))).await;
        c.subscribe_ok("fl/#", 1).await;
        let mut bystander = None;
        if how == Move::ToBystander {
            let mut b = V4::connect(v311::options("fl-by", nodes.addr(1))).await;
            b.subscribe_ok("fl/#", 1).await;
            bystander = Some(b);
        }
        let publisher_node = if how == Move::ToPublisher { 1 } else { 2 };
        block(|| nodes.wait_interest(publisher_node, 1 + u64::from(bystander.is_some()), 1));
        let mut p = V4::connect(v311::options("fl-pub", nodes.addr(publisher_node))).await;
        let publisher = tokio::spawn(async move {
            for i in 0..N {
                p.publish("fl/x", 1, i.to_string().as_bytes()).await;
            }
            p.publish("fl/x", 1, b"end").await;
            p
        });
        // Each connection's messages; a move once a tenth more has arrived.
        let mut connections: Vec<Vec<String>> = Vec::new();
        let mut got = Vec::new();
        while got.len() < N / 10 {
            got.push(c.next_publish().await.text());
        }
        got.extend(c.disconnect_collect().await.iter().map(|g| g.text()));
        connections.push(got);
        let mut c = V4::connect(persistent(nodes.addr(1))).await;
        assert!(c.connack.session_present);
        if how == Move::Back {
            let mut got = Vec::new();
            while got.len() < N / 10 {
                got.push(c.next_publish().await.text());
            }
            got.extend(c.disconnect_collect().await.iter().map(|g| g.text()));
            connections.push(got);
            c = V4::connect(persistent(nodes.addr(0))).await;
            assert!(c.connack.session_present);
        }
        connections.push(
            c.publishes_until("end")
                .await
                .iter()
                .map(|g| g.text())
                .collect(),
        );
        let _p = publisher.await.unwrap();
        let mut seen = BTreeSet::new();
        for (i, got) in connections.iter().enumerate() {
            let mut here = BTreeSet::new();
            let twice: Vec<&String> = got.iter().filter(|m| !here.insert(*m)).collect();
            assert!(twice.is_empty(), "twice on connection {i}: {twice:?}");
            let numbers: Vec<usize> = got.iter().filter_map(|m| m.parse().ok()).collect();
            let back: Vec<&[usize]> = numbers.windows(2).filter(|w| w[1] < w[0]).collect();
            assert!(back.is_empty(), "out of order on connection {i}: {back:?}");
            seen.extend(here.into_iter().cloned());
        }
        let missing: Vec<usize> = (0..N).filter(|i| !seen.contains(&i.to_string())).collect();
        assert!(missing.is_empty(), "lost: {missing:?}");
        drop(bystander);
    });
    // The stub carried what node 2 sent before node 1 had the session.
    assert!(nodes.nodes[0].metric("ringmq_cluster_stub_forwarded_total") > 0);
    assert!(nodes.nodes[1].metric("ringmq_cluster_forwarded_in_total") > 0);
}
