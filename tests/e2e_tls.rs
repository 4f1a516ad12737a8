//! MQTT over TLS and over secure WebSocket, with independent clients and certificates the
//! tests make: mosquitto_pub/sub (OpenSSL) on TLS 1.2 and 1.3, python paho-mqtt with
//! `tls_set` (and a context pinned to each version), rumqttc (rustls) talking with plain TCP clients and sending payloads
//! many records long, a blocking rustls client for exact bytes (the negotiated version,
//! the close_notify), rumqttc and tungstenite over secure WebSocket; client certificates
//! (refused without one, the CN reaches the broker and, with `--tls-cn-as-username`, is
//! the username the ACL file names); a certificate reload on SIGHUP that
//! new connections see and open ones survive; and bad input (garbage instead of a
//! ClientHello, an oversized record, a silent socket) that ends only its own connection
//! and is counted; TLS connections in the transport gauges and the API's client list.

mod support;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rustls::version::{TLS12, TLS13};
use support::*;
use tungstenite::Message;
use tungstenite::client::IntoClientRequest;

/// The broker's flags for TLS with `pki`, then `extra`.
fn tls_broker(pki: &Pki, extra: &[&str]) -> Broker {
    let mut args = pki.broker_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Broker::start(&args)
}

/// Runs a client program to its end (it is given its own timeout too).
fn run_client(program: &str, args: &[&str]) -> Output {
    support::js::require_program(program, "--help");
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn ok_output(program: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{program} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn mosquitto_clients_talk_over_tls_1_2_and_1_3() {
    let pki = Pki::new("mosquitto");
    let broker = tls_broker(&pki, &[]);
    let port = broker.mqtts_addr().port().to_string();
    let common = ["-h", "localhost", "-p", &port, "--cafile", path(&pki.ca)];
    // Retained, so the subscriber gets both whenever it subscribes.
    for version in ["tlsv1.2", "tlsv1.3"] {
        let mut args = common.to_vec();
        let topic = format!("tls/{version}");
        let message = format!("over {version}");
        args.extend(["--tls-version", version, "-t", &topic, "-m", &message, "-r"]);
        args.extend(["-q", "1"]);
        ok_output("mosquitto_pub", &run_client("mosquitto_pub", &args));
    }
    for version in ["tlsv1.2", "tlsv1.3"] {
        let mut args = common.to_vec();
        args.extend(["--tls-version", version, "-t", "tls/#", "-C", "2", "-v"]);
        args.extend(["-W", "30"]);
        let text = ok_output("mosquitto_sub", &run_client("mosquitto_sub", &args));
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            ["tls/tlsv1.2 over tlsv1.2", "tls/tlsv1.3 over tlsv1.3"],
            "subscribed over {version}"
        );
    }
    assert_eq!(broker.metric("ringmq_tls_handshakes"), 4);
    assert_eq!(broker.metric("ringmq_tls_handshake_failed"), 0);
}

/// Connects with paho-mqtt over TLS (`tls_set` with the CA, or for "1.2" and "1.3" a
/// context pinned to that version), subscribes, publishes to itself and prints what came
/// back and the TLS version Python's ssl negotiated.
const PAHO_SCRIPT: &str = r#"
import ssl, sys, threading
import paho.mqtt.client as mqtt
port, ca, version = int(sys.argv[1]), sys.argv[2], sys.argv[3]
kw = {"callback_api_version": mqtt.CallbackAPIVersion.VERSION2} if hasattr(mqtt, "CallbackAPIVersion") else {}
c = mqtt.Client(client_id="paho-" + version, **kw)
if version == "any":
    c.tls_set(ca_certs=ca)
else:
    ctx = ssl.create_default_context(cafile=ca)
    v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
    ctx.minimum_version = ctx.maximum_version = v
    c.tls_set_context(ctx)
topic = "paho/" + version
got, box = threading.Event(), {}
def on_connect(client, userdata, flags, rc, props=None):
    client.subscribe(topic, qos=1)
def on_subscribe(client, userdata, mid, *rest):
    client.publish(topic, b"hello from paho", qos=1)
def on_message(client, userdata, msg):
    box["m"] = msg.payload
    got.set()
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("localhost", port, keepalive=30)
c.loop_start()
ok = got.wait(30)
sock = c.socket()
print("got", box.get("m", b"").decode(), "over", sock.version() if sock else "?")
c.disconnect()
c.loop_stop()
sys.exit(0 if ok else 1)
"#;

#[test]
fn paho_mqtt_with_tls_set() {
    let has_paho = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_paho,
        "missing: python3 with paho-mqtt; install it as .ci/run does: \
         `python3 -m pip install paho-mqtt`"
    );
    let pki = Pki::new("paho");
    let broker = tls_broker(&pki, &[]);
    let port = broker.mqtts_addr().port().to_string();
    for (version, name) in [("any", "TLSv1.3"), ("1.2", "TLSv1.2"), ("1.3", "TLSv1.3")] {
        let out = Command::new("python3")
            .args(["-c", PAHO_SCRIPT, &port, path(&pki.ca), version])
            .output()
            .expect("python3");
        let text = ok_output("python3 (paho-mqtt)", &out);
        assert_eq!(text.trim(), format!("got hello from paho over {name}"));
    }
}

#[test]
fn rumqttc_over_tls_talks_with_tcp_clients_in_many_records() {
    let pki = Pki::new("rumqttc");
    let broker = tls_broker(&pki, &[]);
    let rt = runtime();
    rt.block_on(async {
        // rumqttc takes 10 KB packets unless told otherwise.
        let big_packets = |mut o: rumqttc::MqttOptions| {
            o.set_max_packet_size(200_000, 200_000);
            o
        };
        let tls = |id: &str| {
            big_packets(v311::tls_options(
                id,
                broker.mqtts_addr(),
                pki.ca_pem(),
                None,
            ))
        };
        let tcp = |id: &str| big_packets(v311::options(id, broker.mqtt_addr()));
        let mut tls_sub = V4::connect(tls("tls-sub")).await;
        tls_sub.subscribe_ok("x/from-tcp", 1).await;
        let mut tcp_sub = V4::connect(tcp("tcp-sub")).await;
        tcp_sub.subscribe_ok("x/from-tls", 1).await;
        let mut tcp_pub = V4::connect(tcp("tcp-pub")).await;
        let mut tls_pub = V4::connect(tls("tls-pub")).await;
        // 100 KB: seven records of 16 KiB each way, split over many receives.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        for payload in [&b"small"[..], &big] {
            tcp_pub.publish("x/from-tcp", 1, payload).await;
            let g = tls_sub.next_publish().await;
            assert_eq!(
                (g.topic.as_str(), g.payload.as_slice()),
                ("x/from-tcp", payload)
            );
            tls_pub.publish("x/from-tls", 1, payload).await;
            let g = tcp_sub.next_publish().await;
            assert_eq!(
                (g.topic.as_str(), g.payload.as_slice()),
                ("x/from-tls", payload)
            );
        }
    });
    assert_eq!(broker.metric("ringmq_tls_handshakes"), 2);
}

#[test]
fn a_rustls_client_gets_tls_1_2_or_1_3_and_a_close_notify() {
    let pki = Pki::new("versions");
    let broker = tls_broker(&pki, &[]);
    for version in [&TLS12, &TLS13] {
        let config = pki.client_config(None, &[version]);
        let mut s = tls_connect(broker.mqtts_addr(), config).expect("TLS handshake");
        assert_eq!(s.conn.protocol_version(), Some(version.version));
        s.send(&connect_v311("raw-tls", 30));
        let connack = s.read_packet();
        assert_eq!(
            (connack.first, connack.body.as_slice()),
            (0x20, &[0, 0][..])
        );
        s.send(&[0xC0, 0]); // PINGREQ
        assert_eq!(s.read_packet().first, 0xD0);
        s.send(&[0xE0, 0]); // DISCONNECT
        let end = s.read_until_closed(WAIT);
        assert!(end.bytes.is_empty(), "{:02x?}", end.bytes);
        assert!(!end.reset, "the broker ended TLS with a close_notify");
    }
}

#[test]
fn secure_websocket_with_rumqttc_and_tungstenite() {
    let pki = Pki::new("wss");
    let broker = tls_broker(&pki, &[]);
    let rt = runtime();
    rt.block_on(async {
        let mut options = v311::wss_options("wss-sub", &broker.wss_url(), pki.ca_pem());
        options.set_max_packet_size(100_000, 100_000);
        let mut sub = V4::connect(options).await;
        sub.subscribe_ok("wss/#", 1).await;
        let mut options = v311::options("tcp-pub", broker.mqtt_addr());
        options.set_max_packet_size(100_000, 100_000);
        let mut publisher = V4::connect(options).await;
        let big = vec![0x5Au8; 40_000];
        publisher.publish("wss/a", 1, b"one").await;
        publisher.publish("wss/b", 1, &big).await;
        assert_eq!(sub.next_publish().await, got("wss/a", 1, "one"));
        assert_eq!(sub.next_publish().await.payload, big);
    });

    // tungstenite over a rustls stream: the upgrade, MQTT in binary messages, ping, close.
    let config = pki.client_config(None, &[]);
    let stream = tls_connect(broker.wss_addr(), config.clone()).expect("TLS handshake");
    let mut req = broker.wss_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (mut ws, resp) = tungstenite::client(req, stream).expect("upgrade over TLS");
    assert_eq!(resp.status(), 101);
    ws.send(Message::Binary(connect_v311("tungstenite-wss", 30)))
        .unwrap();
    match ws.read().unwrap() {
        Message::Binary(b) => assert_eq!(b, [0x20, 2, 0, 0]),
        other => panic!("expected a CONNACK, got {other:?}"),
    }
    ws.send(Message::Ping(b"tls".to_vec())).unwrap();
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(p, b"tls"),
        other => panic!("expected a pong, got {other:?}"),
    }
    ws.close(None).unwrap();
    match ws.read() {
        Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed) => {}
        Ok(other) => panic!("expected the close echoed, got {other:?}"),
        Err(e) => panic!("closing: {e}"),
    }

    // A wrong path is answered 404 inside TLS.
    let mut s = tls_connect(broker.wss_addr(), config).expect("TLS handshake");
    s.send(ws_request(broker.wss_addr(), "/nope", Some("mqtt")).as_bytes());
    let end = s.read_until_closed(WAIT);
    let text = String::from_utf8_lossy(&end.bytes);
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    assert_eq!(broker.metric("ringmq_ws_handshake_rejected"), 1);
}

#[test]
fn a_required_client_certificate_is_checked_and_its_cn_reaches_the_broker() {
    let pki = Pki::new("clients");
    let device = pki.client("device-7");
    let other_ca = Pki::new("stranger");
    let stranger = other_ca.client("device-7");
    let broker = tls_broker(
        &pki,
        &[
            "--tls-client-ca",
            path(&pki.ca),
            "--tls-require-client-cert",
            // A client CA refuses clients without credentials by default; these connect
            // with a certificate and nothing else.
            "--allow-anonymous",
            "true",
            "--log-level",
            "info,ringmq::broker=debug",
        ],
    );
    let port = broker.mqtts_addr().port().to_string();
    let common = ["-h", "localhost", "-p", &port, "--cafile", path(&pki.ca)];

    // Without a certificate, and with one another CA signed: refused.
    let no_cert = run_client(
        "mosquitto_pub",
        &[&common[..], &["-t", "t", "-m", "x"]].concat(),
    );
    assert!(
        !no_cert.status.success(),
        "a client without a certificate got in"
    );
    let mut s = tls_connect(broker.mqtts_addr(), pki.client_config(None, &[&TLS13]))
        .expect("the client's side of the handshake");
    s.write_connect_expecting_refusal();
    let wrong = ["--cert", path(&stranger.cert), "--key", path(&stranger.key)];
    let out = run_client(
        "mosquitto_pub",
        &[&common[..], &wrong, &["-t", "t", "-m", "x"]].concat(),
    );
    assert!(!out.status.success(), "a certificate of another CA got in");
    broker.wait_for_metric("ringmq_tls_handshake_failed", WAIT, |n| n == 3);

    // With one: accepted, and the broker knows its CN.
    let with = ["--cert", path(&device.cert), "--key", path(&device.key)];
    let out = run_client(
        "mosquitto_pub",
        &[&common[..], &with, &["-t", "t", "-m", "x", "-q", "1"]].concat(),
    );
    ok_output("mosquitto_pub", &out);
    let mut s = tls_connect(
        broker.mqtts_addr(),
        pki.client_config(Some(&device), &[&TLS12]),
    )
    .expect("TLS handshake with a client certificate");
    s.send(&connect_v311("with-cert", 30));
    assert_eq!(s.read_packet().body, [0, 0]);
    let deadline = std::time::Instant::now() + WAIT;
    while !broker
        .stderr()
        .lines()
        .any(|l| l.contains("TLS client certificate verified") && l.contains("device-7"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line with the CN:\n{}",
            broker.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TLS 1.3 client finishes its side of the handshake before the server has looked at
/// its certificate: the refusal comes as an alert on its first read.
trait RefusedLater {
    fn write_connect_expecting_refusal(&mut self);
}

impl RefusedLater for TlsStream {
    fn write_connect_expecting_refusal(&mut self) {
        use std::io::{Read, Write};
        let _ = self.write_all(&connect_v311("no-cert", 30));
        let _ = self.flush();
        let mut buf = [0u8; 16];
        match self.read(&mut buf) {
            Err(e) => assert!(
                e.to_string().contains("CertificateRequired") || e.to_string().contains("alert"),
                "{e}"
            ),
            Ok(n) => panic!(
                "the broker answered a client without a certificate: {:02x?}",
                &buf[..n]
            ),
        }
    }
}

#[test]
fn an_optional_client_certificate_is_taken_when_given() {
    let pki = Pki::new("optional");
    let device = pki.client("sensor-1");
    let broker = tls_broker(
        &pki,
        &[
            "--tls-client-ca",
            path(&pki.ca),
            "--allow-anonymous",
            "true",
            "--log-level",
            "info,ringmq::broker=debug",
        ],
    );
    for cert in [None, Some(&device)] {
        let mut s =
            tls_connect(broker.mqtts_addr(), pki.client_config(cert, &[])).expect("TLS handshake");
        s.send(&connect_v311("optional", 30));
        assert_eq!(s.read_packet().body, [0, 0]);
    }
    let deadline = std::time::Instant::now() + WAIT;
    while !broker.stderr().contains("sensor-1") {
        assert!(std::time::Instant::now() < deadline, "{}", broker.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(broker.metric("ringmq_tls_handshake_failed"), 0);
}

#[test]
fn a_certificate_cn_is_the_username_for_the_acl_and_anonymous_clients_are_refused() {
    let pki = Pki::new("cn-user");
    let (one, two) = (pki.client("device-1"), pki.client("device-2"));
    let dir = TempDir::new("tls-cn-acl");
    let acl = dir.path().join("acl");
    std::fs::write(
        &acl,
        "user device-1\ntopic readwrite devices/device-1/#\npattern read broadcast/%u\n",
    )
    .unwrap();
    let broker = tls_broker(
        &pki,
        &[
            "--tls-client-ca",
            path(&pki.ca),
            "--tls-cn-as-username",
            "--acl-file",
            path(&acl),
        ],
    );
    let connect = |cert: Option<&ClientCert>, id: &str| {
        let mut s =
            tls_connect(broker.mqtts_addr(), pki.client_config(cert, &[])).expect("TLS handshake");
        s.send(&connect_v5(id, 30));
        let code = s.read_packet().v5_connack().1;
        (s, code)
    };

    // No username in the CONNECT: the certificate's CN is the user the ACL names.
    let (mut device, code) = connect(Some(&one), "d1");
    assert_eq!(code, 0);
    device.send(&subscribe(5, 1, "devices/device-1/#", 1, &[]));
    assert_eq!(device.read_packet().suback(5).1, [1]);
    device.send(&subscribe(5, 2, "devices/device-2/#", 0, &[]));
    assert_eq!(device.read_packet().suback(5).1, [0x87]);
    device.send(&subscribe(5, 3, "broadcast/device-1", 0, &[]));
    assert_eq!(device.read_packet().suback(5).1, [0]);
    device.send(&subscribe(5, 4, "broadcast/device-2", 0, &[]));
    assert_eq!(device.read_packet().suback(5).1, [0x87]);

    // mosquitto_pub with the same certificate may write there; with the other, it may not.
    let port = broker.mqtts_addr().port().to_string();
    let common = ["-h", "localhost", "-p", &port, "--cafile", path(&pki.ca)];
    let as_one = ["--cert", path(&one.cert), "--key", path(&one.key)];
    let temp = ["-t", "devices/device-1/temp", "-m", "21.5", "-q", "1"];
    let out = run_client("mosquitto_pub", &[&common[..], &as_one, &temp].concat());
    ok_output("mosquitto_pub", &out);
    let got = device.read_packet();
    assert_eq!(
        (got.topic(), got.payload(5)),
        ("devices/device-1/temp".to_string(), b"21.5".to_vec())
    );
    let (mut intruder, code) = connect(Some(&two), "d2");
    assert_eq!(
        code, 0,
        "a verified certificate is a user, with no rights here"
    );
    intruder.send(&publish(
        5,
        "devices/device-1/temp",
        1,
        false,
        false,
        7,
        &[],
        b"-40",
    ));
    let ack = intruder.read_packet();
    assert_eq!((ack.kind(), ack.pkid()), (PUBACK >> 4, 7));
    assert_eq!(ack.reason_and_props().0, 0x87);
    if let Some(p) = device.try_read_packet(QUIET) {
        panic!("a refused PUBLISH was delivered: {p:02x?}");
    }

    // A client CA makes credentials necessary: anonymous clients are refused, over TLS
    // without a certificate and over plain TCP alike.
    let (_, code) = connect(None, "nobody");
    assert_eq!(code, 0x87);
    let (_, ack) = raw_connect(broker.mqtt_addr(), &connect_v5("nobody-tcp", 30));
    assert_eq!(ack.v5_connack().1, 0x87);
}

#[test]
fn sighup_switches_the_certificate_for_new_connections_and_keeps_open_ones() {
    let (old, new) = (Pki::new("before"), Pki::new("after"));
    let dir = TempDir::new("tls-reload");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let install = |pki: &Pki| {
        std::fs::copy(&pki.cert, &cert).unwrap();
        std::fs::copy(&pki.key, &key).unwrap();
    };
    install(&old);
    let mut broker = Broker::start(&[
        "--mqtts",
        "127.0.0.1:0",
        "--tls-cert",
        path(&cert),
        "--tls-key",
        path(&key),
    ]);
    let addr = broker.mqtts_addr();
    let mut kept = tls_connect(addr, old.client_config(None, &[])).expect("old certificate");
    kept.send(&connect_v311("kept", 0));
    assert_eq!(kept.read_packet().body, [0, 0]);
    kept.send(&subscribe(4, 1, "reload/#", 1, &[]));
    assert_eq!(kept.read_packet().first, 0x90);

    install(&new);
    broker.signal(libc::SIGHUP);
    broker.wait_for_stdout(WAIT, |l| l == "ringmq: SIGHUP: TLS certificates reloaded");

    // New handshakes show the new certificate: a client that trusts only the old CA
    // refuses it, one that trusts the new CA gets in.
    let Err(e) = tls_connect(addr, old.client_config(None, &[])) else {
        panic!("the old CA still verifies the server");
    };
    assert!(e.to_string().contains("certificate"), "{e}");
    let mut fresh = tls_connect(addr, new.client_config(None, &[])).expect("new certificate");
    fresh.send(&connect_v311("fresh", 30));
    assert_eq!(fresh.read_packet().body, [0, 0]);

    // The connection made before the reload is still up and still served.
    fresh.send(&publish(
        4,
        "reload/x",
        1,
        false,
        false,
        7,
        &[],
        b"after reload",
    ));
    assert_eq!(fresh.read_packet().first, 0x40);
    let delivery = kept.read_packet();
    assert_eq!(delivery.topic(), "reload/x");
    assert_eq!(delivery.payload(4), b"after reload");

    // A bad file is refused and the certificate in use stays.
    std::fs::write(&key, "not a key").unwrap();
    broker.signal(libc::SIGHUP);
    let line = broker.wait_for_stdout(WAIT, |l| l.starts_with("ringmq: SIGHUP: TLS certificates"));
    assert!(
        line.contains("not reloaded") && line.contains("--tls-key"),
        "{line}"
    );
    tls_connect(addr, new.client_config(None, &[])).expect("the certificate in use stays");
    assert_eq!(broker.stop_graceful().code(), Some(0));
}

#[test]
fn bad_input_ends_only_its_own_connection_and_is_counted() {
    let pki = Pki::new("bad");
    let broker = tls_broker(&pki, &[]);
    let rt = runtime();
    let mut healthy = rt.block_on(Healthy::start(v311::tls_options(
        "healthy",
        broker.mqtts_addr(),
        pki.ca_pem(),
        None,
    )));

    // Plain HTTP (or plain MQTT) instead of a ClientHello: an alert, then the end.
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &connect_v311("plain-on-tls", 30),
        // A handshake record longer than any record may be.
        &[22, 3, 1, 0xFF, 0xFF, 1, 0, 0, 0],
    ] {
        let mut s = tcp(broker.mqtts_addr());
        s.send(garbage);
        let end = s.read_until_closed(WAIT);
        assert_eq!(
            end.bytes.first(),
            Some(&21),
            "an alert record: {:02x?}",
            end.bytes
        );
        rt.block_on(healthy.check());
    }
    assert_eq!(broker.metric("ringmq_tls_handshake_failed"), 3);

    // After the handshake, a record that does not decrypt: an alert (bad_record_mac), the
    // end, counted as a TLS error.
    let mut s = tls_connect(broker.mqtts_addr(), pki.client_config(None, &[])).unwrap();
    s.send(&connect_v311("tampered", 30));
    assert_eq!(s.read_packet().body, [0, 0]);
    let mut forged = vec![23, 3, 3, 0, 40];
    forged.extend([0x5A; 40]);
    std::io::Write::write_all(&mut s.sock, &forged).unwrap();
    let mut buf = [0u8; 64];
    let e = std::io::Read::read(&mut s, &mut buf).expect_err("the broker answers with an alert");
    assert!(e.to_string().contains("BadRecordMac"), "{e}");
    broker.wait_for_metric("ringmq_tls_errors", WAIT, |n| n == 1);
    rt.block_on(healthy.check());

    // A socket that never says anything is closed by the handshake deadline.
    let mut silent = tcp(broker.mqtts_addr());
    silent.expect_closed_silently("a silent TLS connection");
    assert_eq!(broker.metric("ringmq_tls_handshake_timeout"), 1);
    rt.block_on(healthy.check());
}

#[test]
fn a_shutdown_says_goodbye_inside_tls() {
    let pki = Pki::new("shutdown");
    let mut broker = tls_broker(&pki, &[]);
    let mut s = tls_connect(broker.mqtts_addr(), pki.client_config(None, &[])).unwrap();
    s.send(&connect_v5("leaving-v5", 30));
    assert_eq!(s.read_packet().first, 0x20);
    broker.signal(libc::SIGTERM);
    let end = s.read_until_closed(WAIT);
    let packets = split_packets(&end.bytes);
    assert_eq!(packets.len(), 1, "{packets:?}");
    assert_eq!(packets[0].v5_disconnect().0, 0x8B, "server shutting down");
    assert!(!end.reset, "the DISCONNECT is followed by a close_notify");
    assert_eq!(broker.wait_exit().code(), Some(0));
}

#[test]
fn tls_connections_are_counted_and_listed_by_transport() {
    let pki = Pki::new("transports");
    let broker = tls_broker(&pki, &[]);
    let rt = runtime();
    rt.block_on(async {
        let _tcp = V4::connect(v311::options("on-mqtt", broker.mqtt_addr())).await;
        let _mqtts = V4::connect(v311::tls_options(
            "on-mqtts",
            broker.mqtts_addr(),
            pki.ca_pem(),
            None,
        ))
        .await;
        let _wss = V4::connect(v311::wss_options("on-wss", &broker.wss_url(), pki.ca_pem())).await;

        // A TLS connection is TCP or WebSocket with TLS: counted in both gauges.
        let metrics = broker.metrics();
        let gauge = |name| parse_metric(&metrics, name).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(gauge("ringmq_connections_current"), 3);
        assert_eq!(gauge("ringmq_connections_tcp"), 2);
        assert_eq!(gauge("ringmq_connections_ws"), 1);
        assert_eq!(gauge("ringmq_connections_tls"), 2);

        // The API (on loopback, without keys) names each client's transport.
        let (status, body) = broker.http_get("/api/v1/clients");
        assert_eq!(status, 200, "{body}");
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut seen: Vec<(String, String)> = page["items"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|c| {
                (
                    c["client_id"].as_str().unwrap().to_string(),
                    c["transport"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        seen.sort();
        let expected = [
            ("on-mqtt", "mqtt"),
            ("on-mqtts", "mqtts"),
            ("on-wss", "wss"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(c, t)| (c.to_string(), t.to_string()))
            .collect();
        assert_eq!(seen, expected);
    });
    drop(rt); // the clients' event loops end, and their sockets with them
    broker.wait_for_metric("ringmq_connections_current", WAIT, |n| n == 0);
    assert_eq!(broker.metric("ringmq_connections_tls"), 0);
    assert_eq!(broker.metric("ringmq_connections_tcp"), 0);
}

/// `GET path` over a TLS stream, `Connection: close`: the whole answer.
fn https_get(stream: &mut TlsStream, path: &str) -> String {
    stream.send(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    String::from_utf8_lossy(&stream.read_until_closed(WAIT).bytes).into_owned()
}

#[test]
fn the_http_server_speaks_tls_with_the_brokers_certificate() {
    let pki = Pki::new("https");
    let broker = tls_broker(&pki, &["--http-tls"]);
    assert!(
        broker.startup_line().contains("metrics https://"),
        "{}",
        broker.startup_line()
    );
    let addr = broker.metrics_addr();
    let config = pki.client_config(None, &[]);

    let mut s = tls_connect(addr, config.clone()).expect("TLS handshake with the HTTP server");
    let answer = https_get(&mut s, "/healthz");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The API too (on loopback, without keys), with the shards behind it.
    let mut s = tls_connect(addr, config).expect("TLS handshake with the HTTP server");
    let answer = https_get(&mut s, "/api/v1/info");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"broker_api\":true"), "{answer}");

    // Plain HTTP gets no HTTP answer.
    let plain = std::panic::catch_unwind(|| http_get(addr, "/healthz"));
    assert!(
        !matches!(plain, Ok((200, _))),
        "plain HTTP was answered on the https port"
    );
}
