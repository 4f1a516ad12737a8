//! Authorization end to end: an ACL file in mosquitto's format, each kind of rule (read,
//! write, readwrite, deny inside a grant, `pattern` with %c and with %u, the anonymous
//! block, no rule) against each path a message takes — PUBLISH, SUBSCRIBE, retained
//! delivery on subscribe, queued delivery after a reconnect — and the replay hole other
//! brokers leave open: a session resumed under another user gets none of what the first
//! user could read. Raw 3.1.1 and 5.0 clients, so the exact codes are seen.

mod support;

use std::net::SocketAddr;

use support::*;

const ACL: &str = "\
# Clients without a username.
topic read public/#

user alice
topic read r/#
topic write w/#
topic readwrite rw/#
topic readwrite d/#
topic deny d/secret

user root
topic readwrite #

pattern readwrite p/%c/#
pattern read u/%u/#
";

/// Every topic of the table.
const TOPICS: &[&str] = &[
    "r/x",
    "w/x",
    "rw/x",
    "d/ok",
    "d/secret",
    "p/alice-dev/x",
    "p/other/x",
    "u/alice/x",
    "u/bob/x",
    "n/x",
    "public/x",
];

fn broker_with_acl(dir: &TempDir) -> Broker {
    let acl = dir.file("acl", ACL);
    Broker::start(&["--acl-file", acl.to_str().unwrap()])
}

/// A 5.0 client logged in as `user` (no password file: the name is taken at its word),
/// its session kept 600 s unless `clean`.
fn v5_as(
    addr: SocketAddr,
    id: &str,
    user: Option<&str>,
    clean: bool,
) -> (std::net::TcpStream, bool) {
    let mut props = Vec::new();
    prop_u32(SESSION_EXPIRY, 600, &mut props);
    let c = connect_as(5, id, clean, 60, None, &props, user, None);
    let (s, ack) = raw_connect(addr, &c);
    let (present, code, _) = ack.v5_connack();
    assert_eq!(code, 0, "CONNACK for {id} as {user:?}");
    (s, present)
}

/// `root`, subscribed to every topic (`#`) at `qos`.
fn root_watching(addr: SocketAddr, qos: u8) -> std::net::TcpStream {
    let (mut root, _) = v5_as(addr, "root", Some("root"), true);
    root.send(&subscribe(5, 1, "#", qos, &[]));
    assert_eq!(root.read_packet().suback(5).1, [qos]);
    root
}

/// `s` publishes `payload` on each of [`TOPICS`] (MQTT 5, packet ids from `first_pkid`).
fn publish_on_every_topic(
    s: &mut std::net::TcpStream,
    qos: u8,
    retain: bool,
    first_pkid: u16,
    payload: &[u8],
) {
    for (i, t) in TOPICS.iter().enumerate() {
        s.send(&publish(
            5,
            t,
            qos,
            false,
            retain,
            first_pkid + i as u16,
            &[],
            payload,
        ));
    }
}

/// The topics of the PUBLISH packets that arrive until the connection is quiet, each
/// QoS 1 one acknowledged (PUBACKs for the client's own are passed over).
fn received(c: &mut std::net::TcpStream) -> Vec<String> {
    let mut topics = Vec::new();
    while let Some(p) = c.try_read_packet(QUIET) {
        if p.kind() == 4 {
            continue; // the PUBACK of the client's own QoS 1 PUBLISH
        }
        assert_eq!(p.kind(), 3, "a PUBLISH expected: {p:02x?}");
        if p.qos() == 1 {
            c.send(&ack(PUBACK, p.pkid()));
        }
        topics.push(p.topic());
    }
    topics.sort();
    topics
}

/// The reason code of the PUBACK for `pkid`; PUBLISH packets that arrive first (the
/// client's own, through its subscriptions) are acknowledged and their topics added to
/// `publishes`.
fn puback(c: &mut std::net::TcpStream, pkid: u16, publishes: &mut Vec<String>) -> u8 {
    loop {
        let p = c.read_packet();
        match p.kind() {
            4 if p.pkid() == pkid => return p.reason_and_props().0,
            3 => {
                if p.qos() == 1 {
                    c.send(&ack(PUBACK, p.pkid()));
                }
                publishes.push(p.topic());
            }
            _ => panic!("PUBACK {pkid} expected: {p:02x?}"),
        }
    }
}

fn sorted(topics: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    v.sort();
    v
}

#[test]
fn each_rule_kind_on_each_path() {
    let dir = TempDir::new("acl-table");
    let broker = broker_with_acl(&dir);
    let addr = broker.mqtt_addr();

    // root watches everything and retains a message on every topic.
    let mut root = root_watching(addr, 1);
    publish_on_every_topic(&mut root, 1, true, 100, b"retained");
    let mut acks = 0;
    let mut seen = Vec::new();
    while acks < TOPICS.len() {
        let p = root.read_packet();
        match p.kind() {
            4 => {
                assert_eq!(p.reason_and_props().0, 0);
                acks += 1;
            }
            3 => {
                root.send(&ack(PUBACK, p.pkid()));
                seen.push(p.topic());
            }
            k => panic!("packet {k}"),
        }
    }
    seen.extend(received(&mut root));
    seen.sort();
    assert_eq!(seen, sorted(TOPICS));

    // SUBSCRIBE, one filter at a time: the SUBACK code and the retained messages it
    // brings. (filter, 5.0 code, retained topics delivered)
    let (mut alice, _) = v5_as(addr, "alice-dev", Some("alice"), true);
    let subscriptions: &[(&str, u8, &[&str])] = &[
        ("r/x", 1, &["r/x"]),                     // read
        ("w/x", 0x87, &[]),                       // write only
        ("rw/x", 1, &["rw/x"]),                   // readwrite
        ("d/#", 1, &["d/ok"]),                    // a deny inside a grant
        ("d/secret", 0x87, &[]),                  // deny
        ("p/alice-dev/x", 1, &["p/alice-dev/x"]), // pattern %c
        ("p/other/x", 0x87, &[]),                 // pattern %c, another client's
        ("u/alice/x", 1, &["u/alice/x"]),         // pattern %u
        ("u/bob/x", 0x87, &[]),                   // pattern %u, another user's
        ("n/x", 0x87, &[]),                       // no rule
        ("public/#", 0x87, &[]),                  // the anonymous block is not alice's
    ];
    for (i, &(filter, code, retained)) in subscriptions.iter().enumerate() {
        alice.send(&subscribe(5, 10 + i as u16, filter, 1, &[]));
        let (props, codes) = alice.read_packet().suback(5);
        assert_eq!(codes, [code], "SUBSCRIBE {filter}");
        if code == 0x87 {
            assert!(has_reason_string(&props), "{filter}: {props:?}");
        }
        assert_eq!(
            received(&mut alice),
            sorted(retained),
            "retained on {filter}"
        );
    }

    // PUBLISH: what alice may write reaches root; the rest is refused with 0x87 and goes
    // nowhere.
    let writable = ["w/x", "rw/x", "d/ok", "p/alice-dev/x"];
    let mut own = Vec::new();
    for (i, t) in TOPICS.iter().enumerate() {
        alice.send(&publish(
            5,
            t,
            1,
            false,
            false,
            200 + i as u16,
            &[],
            b"from alice",
        ));
        let code = puback(&mut alice, 200 + i as u16, &mut own);
        let want = if writable.contains(t) { 0 } else { 0x87 };
        assert_eq!(code, want, "PUBLISH {t}");
    }
    assert_eq!(received(&mut root), sorted(&writable));
    // alice's own subscriptions see her allowed publishes too.
    own.extend(received(&mut alice));
    own.sort();
    assert_eq!(own, sorted(&["rw/x", "d/ok", "p/alice-dev/x"]));
    // $SYS is read-only, whatever the rules say.
    root.send(&publish(
        5,
        "$SYS/broker/fake",
        1,
        false,
        false,
        300,
        &[],
        b"x",
    ));
    assert_eq!(root.read_packet().reason_and_props().0, 0x87);

    // Queued while offline, delivered after the reconnect: only what alice may read.
    alice.send(&DISCONNECT);
    alice.expect_closed_silently("after DISCONNECT");
    publish_on_every_topic(&mut root, 1, false, 400, b"queued");
    let _ = received(&mut root); // its PUBACKs and its own copies
    let (mut alice, present) = v5_as(addr, "alice-dev", Some("alice"), false);
    assert!(present);
    assert_eq!(
        received(&mut alice),
        sorted(&["r/x", "rw/x", "d/ok", "p/alice-dev/x", "u/alice/x"])
    );
    assert!(broker.metric("ringmq_acl_denied_delivery") >= 2);

    // The same session resumed by another user: bob may read none of alice's topics but
    // p/alice-dev/x (%c is the client id): neither the queue nor live messages leak.
    alice.send(&DISCONNECT);
    alice.expect_closed_silently("after DISCONNECT");
    publish_on_every_topic(&mut root, 1, false, 500, b"for alice");
    let _ = received(&mut root);
    let (mut bob, present) = v5_as(addr, "alice-dev", Some("bob"), false);
    assert!(present, "the session is the client id's");
    assert_eq!(received(&mut bob), sorted(&["p/alice-dev/x"]));
    publish_on_every_topic(&mut root, 0, false, 600, b"live");
    assert_eq!(received(&mut bob), sorted(&["p/alice-dev/x"]));

    assert!(broker.metric("ringmq_acl_denied_publish") >= 7);
    assert!(broker.metric("ringmq_acl_denied_subscribe") >= 6);
}

#[test]
fn anonymous_clients_and_311_codes() {
    let dir = TempDir::new("acl-anonymous");
    let broker = broker_with_acl(&dir);
    let addr = broker.mqtt_addr();
    let mut root = root_watching(addr, 0);

    // Anonymous, 3.1.1: the anonymous block applies; refusals are 0x80, and a refused
    // PUBLISH is acknowledged as usual and dropped (3.1.1 has no way to say no).
    let mut anon = raw_v311_client(addr, "anon", 60);
    anon.send(&subscribe(4, 1, "public/#", 1, &[]));
    assert_eq!(anon.read_packet().suback(4).1, [1]);
    anon.send(&subscribe(4, 2, "r/#", 1, &[]));
    assert_eq!(anon.read_packet().suback(4).1, [0x80]);
    anon.send(&publish(4, "public/x", 1, false, false, 3, &[], b"no"));
    assert_eq!(
        anon.read_packet(),
        RawPacket {
            first: 0x40,
            body: vec![0, 3]
        }
    );
    // QoS 2: PUBREC, then PUBREL is answered with PUBCOMP as for any message.
    anon.send(&publish(4, "public/x", 2, false, false, 4, &[], b"no"));
    assert_eq!(
        anon.read_packet(),
        RawPacket {
            first: 0x50,
            body: vec![0, 4]
        }
    );
    anon.send(&ack(PUBREL, 4));
    assert_eq!(
        anon.read_packet(),
        RawPacket {
            first: 0x70,
            body: vec![0, 4]
        }
    );
    assert!(
        root.try_read_packet(QUIET).is_none(),
        "nothing reached root"
    );

    // 5.0: a QoS 2 refusal is a PUBREC with 0x87, which ends the flow.
    let (mut anon5, _) = raw_v5_client(addr, "anon5", 60);
    anon5.send(&publish(5, "public/x", 2, false, false, 5, &[], b"no"));
    let rec = anon5.read_packet();
    assert_eq!((rec.kind(), rec.reason_and_props().0), (5, 0x87));
    // What an anonymous client may read reaches it.
    root.send(&publish_qos0(5, "public/news", b"hi"));
    assert_eq!(anon.read_packet().topic(), "public/news");
}

/// Without an ACL file nothing is refused but writing to `$SYS`.
#[test]
fn without_rules_only_sys_is_refused() {
    let broker = Broker::start(&[]);
    let addr = broker.mqtt_addr();
    let (mut c, _) = raw_v5_client(addr, "free", 60);
    c.send(&subscribe(5, 1, "#", 1, &[]));
    assert_eq!(c.read_packet().suback(5).1, [1]);
    c.send(&publish(
        5,
        "$SYS/broker/uptime",
        1,
        false,
        false,
        2,
        &[],
        b"0",
    ));
    assert_eq!(c.read_packet().reason_and_props().0, 0x87);
    c.send(&publish(5, "any/topic", 1, false, false, 3, &[], b"ok"));
    let mut kinds = vec![c.read_packet().kind(), c.read_packet().kind()];
    kinds.sort();
    assert_eq!(kinds, [3, 4], "the PUBACK and its own copy");
}
