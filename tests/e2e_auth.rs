//! Authentication end to end: password files made by `mosquitto_passwd` ($7$, $6$) and
//! `ringmq passwd` (argon2id), good and bad passwords over 3.1.1 and 5.0 with the exact
//! CONNACK codes, anonymous clients on and off, mosquitto_pub/sub as clients, JWTs (expired,
//! forged, for another client, closed when they expire, their `acl` claim), and SIGHUP
//! reloads (new rules at once, clients no longer admitted disconnected, a bad file keeping
//! the old rules).

mod support;

use std::path::Path;
use std::time::Duration;

use support::creds::{hs256, mosquitto_passwd, ringmq_passwd, run_tool, unix_now};
use support::*;

/// The CONNACK of a raw CONNECT with these credentials: 3.1.1 return code or 5.0 reason.
fn connack(
    addr: std::net::SocketAddr,
    level: u8,
    id: &str,
    user: Option<&str>,
    pw: Option<&str>,
) -> u8 {
    let (_, ack) = raw_connect(
        addr,
        &connect_login(level, id, user, pw.map(str::as_bytes), &[]),
    );
    match level {
        5 => ack.v5_connack().1,
        _ => ack.body[1],
    }
}

/// A password file with alice ($7$ PBKDF2-SHA512) and bob ($6$ SHA-512) made by
/// mosquitto_passwd, and carol (argon2id) by `ringmq passwd`.
fn password_file(dir: &TempDir) -> std::path::PathBuf {
    let file = dir.path().join("passwd");
    mosquitto_passwd(&file, Some("sha512-pbkdf2"), true, "alice", "alice-pw");
    mosquitto_passwd(&file, Some("sha512"), false, "bob", "bob-pw");
    let out = ringmq_passwd(&file, "carol", "carol-pw");
    assert!(
        out.status.success(),
        "ringmq passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    for prefix in ["alice:$7$", "bob:$6$", "carol:$argon2id$"] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "{prefix} in\n{text}"
        );
    }
    file
}

#[test]
fn passwords_of_every_hash_format_are_checked_with_the_right_codes() {
    let dir = TempDir::new("auth-passwords");
    let file = password_file(&dir);
    let broker = Broker::start(&["--password-file", file.to_str().unwrap()]);
    let addr = broker.mqtt_addr();

    for (user, pw) in [
        ("alice", "alice-pw"),
        ("bob", "bob-pw"),
        ("carol", "carol-pw"),
    ] {
        assert_eq!(
            connack(addr, 4, &format!("{user}-3"), Some(user), Some(pw)),
            0,
            "{user}"
        );
        assert_eq!(
            connack(addr, 5, &format!("{user}-5"), Some(user), Some(pw)),
            0,
            "{user}"
        );
        // 3.1.1: 0x04 bad user name or password; 5.0: 0x86.
        assert_eq!(
            connack(addr, 4, "x", Some(user), Some("wrong")),
            0x04,
            "{user}"
        );
        assert_eq!(
            connack(addr, 5, "x", Some(user), Some("wrong")),
            0x86,
            "{user}"
        );
        assert_eq!(
            connack(addr, 5, "x", Some(user), None),
            0x86,
            "{user} without a password"
        );
    }
    // Unknown users, and anonymous clients (not allowed by default with a password file):
    // 3.1.1 0x05 not authorized, 5.0 0x87.
    assert_eq!(connack(addr, 4, "x", Some("mallory"), Some("pw")), 0x04);
    assert_eq!(connack(addr, 5, "x", Some("mallory"), Some("pw")), 0x86);
    assert_eq!(connack(addr, 4, "anon", None, None), 0x05);
    assert_eq!(connack(addr, 5, "anon", None, None), 0x87);

    // A client that reconnects is not hashed again: the cache answers.
    let hashes = broker.metric("ringmq_auth_hashes_computed_total");
    let hits = broker.metric("ringmq_auth_cache_hits_total");
    assert_eq!(
        connack(addr, 5, "again", Some("carol"), Some("carol-pw")),
        0
    );
    assert_eq!(
        connack(addr, 5, "again", Some("carol"), Some("wrong")),
        0x86
    );
    assert_eq!(broker.metric("ringmq_auth_hashes_computed_total"), hashes);
    assert_eq!(broker.metric("ringmq_auth_cache_hits_total"), hits + 2);

    assert_eq!(
        broker.metric("ringmq_auth_refused_bad_credentials_total"),
        12
    );
    assert_eq!(broker.metric("ringmq_auth_refused_not_authorized_total"), 2);
    assert!(broker.metric("ringmq_connects_parked") > 0);

    // mosquitto's own clients, with the same credentials.
    let port = addr.port().to_string();
    let base = ["-h", "127.0.0.1", "-p", port.as_str(), "-V", "mqttv311"];
    let publish = |user: &str, pw: &str| {
        let mut args = base.to_vec();
        args.extend([
            "-u", user, "-P", pw, "-t", "auth/t", "-m", "hello", "-r", "-q", "1",
        ]);
        run_tool("mosquitto_pub", &args, "mosquitto-clients")
    };
    let out = publish("bob", "wrong");
    assert!(!out.status.success(), "a wrong password must fail");
    let out = publish("bob", "bob-pw");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = base.to_vec();
    args.extend([
        "-u", "alice", "-P", "alice-pw", "-t", "auth/t", "-C", "1", "-W", "20",
    ]);
    let out = run_tool("mosquitto_sub", &args, "mosquitto-clients");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");
}

#[test]
fn anonymous_clients_are_allowed_or_not_as_configured() {
    // No credential source: anyone, and a username is taken at its word.
    let open = Broker::start(&[]);
    assert_eq!(connack(open.mqtt_addr(), 4, "a", None, None), 0);
    assert_eq!(
        connack(open.mqtt_addr(), 5, "b", Some("anyone"), Some("x")),
        0
    );
    // Turned off without a password file: nobody without credentials gets in.
    let closed = Broker::start(&["--allow-anonymous", "false"]);
    assert_eq!(connack(closed.mqtt_addr(), 4, "a", None, None), 0x05);
    assert_eq!(connack(closed.mqtt_addr(), 5, "a", None, None), 0x87);

    // A password file with anonymous clients allowed: anonymous in, passwords checked.
    let dir = TempDir::new("auth-anonymous");
    let file = dir.path().join("passwd");
    mosquitto_passwd(&file, None, true, "alice", "alice-pw");
    let broker = Broker::start(&[
        "--password-file",
        file.to_str().unwrap(),
        "--allow-anonymous",
        "true",
    ]);
    let addr = broker.mqtt_addr();
    assert_eq!(connack(addr, 4, "anon", None, None), 0);
    assert_eq!(connack(addr, 5, "anon5", None, None), 0);
    assert_eq!(
        connack(addr, 5, "alice", Some("alice"), Some("alice-pw")),
        0
    );
    assert_eq!(connack(addr, 5, "alice", Some("alice"), Some("nope")), 0x86);
    // A username nobody can verify is refused, not let in as anonymous.
    assert_eq!(connack(addr, 4, "who", Some("mallory"), Some("x")), 0x04);
}

#[test]
fn ringmq_passwd_adds_and_replaces_users() {
    let dir = TempDir::new("auth-passwd-cli");
    let file = dir.path().join("new-passwd");
    let out = ringmq_passwd(&file, "dave", "first");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("added dave"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "a new password file is its owner's only"
    );
    let out = ringmq_passwd(&file, "dave", "second");
    assert!(String::from_utf8_lossy(&out.stdout).contains("changed the password of dave"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    // Refusals: an empty password, a name that cannot be read back.
    assert!(!ringmq_passwd(&file, "erin", "").status.success());
    let out = ringmq_passwd(&file, "a:b", "pw");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("contains ':'"));

    let broker = Broker::start(&["--password-file", file.to_str().unwrap()]);
    assert_eq!(
        connack(broker.mqtt_addr(), 5, "d", Some("dave"), Some("second")),
        0
    );
    assert_eq!(
        connack(broker.mqtt_addr(), 5, "d", Some("dave"), Some("first")),
        0x86
    );
}

const SECRET: &[u8] = b"a shared secret of more than thirty-two bytes";

fn jwt_broker(dir: &TempDir, extra: &[&str]) -> Broker {
    let key = dir.path().join("jwt.key");
    std::fs::write(&key, SECRET).unwrap();
    let mut args = vec!["--jwt-key", key.to_str().unwrap()];
    args.extend_from_slice(extra);
    Broker::start(&args)
}

#[test]
fn tokens_are_checked_and_connections_close_when_they_expire() {
    let dir = TempDir::new("auth-jwt");
    let broker = jwt_broker(&dir, &[]);
    let addr = broker.mqtt_addr();
    let now = unix_now();
    let good = hs256(SECRET, &format!(r#"{{"sub":"dev","exp":{}}}"#, now + 3600));
    assert_eq!(connack(addr, 5, "d1", None, Some(&good)), 0);
    assert_eq!(connack(addr, 4, "d2", Some("dev"), Some(&good)), 0);
    // The CONNECT username must be the token's subject.
    assert_eq!(connack(addr, 5, "d3", Some("other"), Some(&good)), 0x86);
    // Expired, forged, not yet valid: bad credentials.
    let expired = hs256(SECRET, &format!(r#"{{"sub":"dev","exp":{}}}"#, now - 60));
    assert_eq!(connack(addr, 5, "e", None, Some(&expired)), 0x86);
    // (3.1.1 has no password without a username, MQTT-3.1.2-22.)
    assert_eq!(connack(addr, 4, "e", Some("dev"), Some(&expired)), 0x04);
    let forged = hs256(
        b"another secret of more than thirty-two bytes!",
        &format!(r#"{{"exp":{}}}"#, now + 60),
    );
    assert_eq!(connack(addr, 5, "f", None, Some(&forged)), 0x86);
    let early = hs256(SECRET, &format!(r#"{{"nbf":{}}}"#, now + 3600));
    assert_eq!(connack(addr, 5, "n", None, Some(&early)), 0x86);
    // A token for another client id: not authorized.
    let theirs = hs256(
        SECRET,
        &format!(r#"{{"clientid":"theirs","exp":{}}}"#, now + 60),
    );
    assert_eq!(connack(addr, 5, "mine", None, Some(&theirs)), 0x87);
    assert_eq!(connack(addr, 5, "theirs", None, Some(&theirs)), 0);
    // No token, with a JWT key only: anonymous is off by default.
    assert_eq!(connack(addr, 5, "anon", None, None), 0x87);

    // Connected with a token that expires in a few seconds: closed then, with DISCONNECT
    // 0x87 Not authorized in 5.0.
    let short = hs256(SECRET, &format!(r#"{{"exp":{}}}"#, unix_now() + 3));
    let (mut v5, ack) = raw_connect(
        addr,
        &connect_login(5, "short5", None, Some(short.as_bytes()), &[]),
    );
    assert_eq!(ack.v5_connack().1, 0);
    let (mut v3, ack) = raw_connect(
        addr,
        &connect_login(4, "short3", Some("u"), Some(short.as_bytes()), &[]),
    );
    assert_eq!(ack.body, [0, 0]);
    let packets = v5.packets_until_closed();
    assert_eq!(packets.len(), 1, "{packets:02x?}");
    assert_eq!(packets[0].v5_disconnect().0, 0x87);
    v3.expect_closed_silently("3.1.1 client of an expired token");
    assert_eq!(broker.metric("ringmq_tokens_expired"), 2);
}

#[test]
fn a_tokens_acl_claim_grants_only_what_it_lists() {
    let dir = TempDir::new("auth-jwt-acl");
    let broker = jwt_broker(&dir, &[]);
    let addr = broker.mqtt_addr();
    let claims = format!(
        r#"{{"exp":{},"acl":{{"pub":["dev/%c/state"],"sub":["cmd/%c/#"]}}}}"#,
        unix_now() + 3600
    );
    let token = hs256(SECRET, &claims);
    let (mut c, ack) = raw_connect(
        addr,
        &connect_login(5, "t1", None, Some(token.as_bytes()), &[]),
    );
    assert_eq!(ack.v5_connack().1, 0);
    c.send(&subscribe(5, 1, "cmd/t1/#", 1, &[]));
    assert_eq!(c.read_packet().suback(5).1, [1]);
    c.send(&subscribe(5, 2, "cmd/t2/#", 1, &[]));
    assert_eq!(c.read_packet().suback(5).1, [0x87]);
    c.send(&publish(5, "dev/t1/state", 1, false, false, 7, &[], b"up"));
    assert_eq!(c.read_packet().reason_and_props().0, 0);
    c.send(&publish(5, "dev/t2/state", 1, false, false, 8, &[], b"up"));
    assert_eq!(c.read_packet().reason_and_props().0, 0x87);
}

/// Waits until every shard applies configuration generation `n`.
fn wait_generation(broker: &Broker, n: u64) {
    let deadline = std::time::Instant::now() + WAIT;
    while per_shard(broker, "ringmq_auth_generation")
        .iter()
        .any(|&g| g != n)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "generation {n} not applied"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn sighup_reloads_passwords_and_rules() {
    let dir = TempDir::new("auth-reload");
    let passwd = dir.path().join("passwd");
    mosquitto_passwd(&passwd, None, true, "alice", "alice-pw");
    mosquitto_passwd(&passwd, None, false, "bob", "bob-pw");
    let acl = dir.path().join("acl");
    write(
        &acl,
        "user alice\ntopic read a/#\nuser bob\ntopic write a/#\n",
    );
    let broker = Broker::start(&[
        "--password-file",
        passwd.to_str().unwrap(),
        "--acl-file",
        acl.to_str().unwrap(),
    ]);
    let addr = broker.mqtt_addr();
    wait_generation(&broker, 1);
    let (mut alice, ack) = raw_connect(
        addr,
        &connect_login(5, "alice", Some("alice"), Some(b"alice-pw"), &[]),
    );
    assert_eq!(ack.v5_connack().1, 0);
    alice.send(&subscribe(5, 1, "a/#", 0, &[]));
    assert_eq!(alice.read_packet().suback(5).1, [0]);
    let (mut bob, ack) = raw_connect(
        addr,
        &connect_login(5, "bob", Some("bob"), Some(b"bob-pw"), &[]),
    );
    assert_eq!(ack.v5_connack().1, 0);
    bob.send(&publish_qos0(5, "a/secret/1", b"one"));
    assert_eq!(alice.read_packet().topic(), "a/secret/1");

    // New rules: alice may only read a/public/#. Her subscription stays, what it may
    // carry to her shrinks at once.
    write(
        &acl,
        "user alice\ntopic read a/public/#\nuser bob\ntopic write a/#\n",
    );
    broker.signal(libc::SIGHUP);
    broker.wait_for_stdout(WAIT, |l| l.contains("SIGHUP: authentication reloaded"));
    wait_generation(&broker, 2);
    bob.send(&publish_qos0(5, "a/secret/2", b"two"));
    bob.send(&publish_qos0(5, "a/public/3", b"three"));
    assert_eq!(alice.read_packet().topic(), "a/public/3");
    assert!(alice.try_read_packet(QUIET).is_none());

    // A file that does not load keeps the rules in force, and says where it is wrong.
    write(&acl, "user alice\ntopic read a/#\ntopic sometimes a/#\n");
    broker.signal(libc::SIGHUP);
    let line = broker.wait_for_stdout(WAIT, |l| l.contains("SIGHUP: authentication not reloaded"));
    assert!(line.contains("line 3"), "{line}");
    assert_eq!(per_shard(&broker, "ringmq_auth_generation"), [2, 2]);

    // Alice's password changes: she is no longer admitted, and is told so.
    write(
        &acl,
        "user alice\ntopic read a/public/#\nuser bob\ntopic write a/#\n",
    );
    mosquitto_passwd(&passwd, None, false, "alice", "new-pw");
    broker.signal(libc::SIGHUP);
    broker.wait_for_stdout(WAIT, |l| l.contains("SIGHUP: authentication reloaded"));
    // Each shard takes the new files up at its next tick: the new CONNECTs below may
    // land on either.
    wait_generation(&broker, 3);
    let packets = alice.packets_until_closed();
    assert_eq!(packets.len(), 1, "{packets:02x?}");
    assert_eq!(packets[0].v5_disconnect().0, 0x98);
    bob.send(&PINGREQ);
    assert_eq!(bob.read_packet().first, 0xd0, "bob stays");
    assert_eq!(
        connack(addr, 5, "alice", Some("alice"), Some("alice-pw")),
        0x86
    );
    assert_eq!(connack(addr, 5, "alice", Some("alice"), Some("new-pw")), 0);
    assert_eq!(broker.metric("ringmq_disconnected_reload"), 1);
}
