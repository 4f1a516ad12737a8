//! Password files written by the real `mosquitto_passwd` (Debian's `mosquitto` package,
//! which `.ci/run` installs) are read by ringmq and their passwords verify.
//!
//! Without the program this test fails: it never passes without checking anything.

mod support;

use std::path::PathBuf;

use ringmq::auth::PasswordFile;
use ringmq::auth::password::PasswordHash;
use support::creds::mosquitto_passwd;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ringmq-mosquitto-passwd-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn mosquitto_passwd_files_verify() {
    let dir = scratch("verify");
    let file = dir.join("passwords");
    let users = [
        (Some("sha512-pbkdf2"), "alice", "secret1"),
        (None, "bob smith", "p@ss wörd with spaces"),
        (Some("sha512"), "carol", "hunter2"),
        (Some("sha512-pbkdf2"), "dave", "x"),
        (Some("sha512"), "émile", "ünïcödé"),
    ];
    for (i, (hash, user, password)) in users.iter().enumerate() {
        mosquitto_passwd(&file, *hash, i == 0, user, password);
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("alice:$7$"), "{text}");
    assert!(text.contains("carol:$6$"), "{text}");

    let parsed = PasswordFile::load(&file).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(parsed.len(), users.len());
    for (_, user, password) in users {
        let entry = parsed.get(user).unwrap_or_else(|| panic!("{user} missing"));
        assert!(entry.hash.verify(password.as_bytes()), "{user}");
        assert!(!entry.hash.verify(b"wrong"), "{user}");
    }
    // A password changed with mosquitto_passwd: the old one stops working.
    mosquitto_passwd(&file, None, false, "alice", "secret2");
    let parsed = PasswordFile::load(&file).unwrap();
    let alice = &parsed.get("alice").unwrap().hash;
    assert!(alice.verify(b"secret2"));
    assert!(!alice.verify(b"secret1"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ringmq_passwd_keeps_mosquitto_entries() {
    let dir = scratch("keep");
    let file = dir.join("passwords");
    mosquitto_passwd(&file, None, true, "alice", "secret1");
    let before = std::fs::read_to_string(&file).unwrap();
    ringmq::auth::password::passwd(&file, "zoe", b"zoe's password").unwrap();
    let after = std::fs::read_to_string(&file).unwrap();
    assert!(after.starts_with(&before), "{before}\n---\n{after}");
    let parsed = PasswordFile::load(&file).unwrap();
    assert!(parsed.get("alice").unwrap().hash.verify(b"secret1"));
    let zoe = &parsed.get("zoe").unwrap().hash;
    assert!(matches!(zoe, PasswordHash::Argon2id { .. }));
    assert!(zoe.verify(b"zoe's password"));
    // mosquitto_passwd still manages the file ringmq passwd wrote to.
    mosquitto_passwd(&file, None, false, "alice", "changed");
    let parsed = PasswordFile::load(&file).unwrap();
    assert!(parsed.get("alice").unwrap().hash.verify(b"changed"));
    assert!(parsed.get("zoe").unwrap().hash.verify(b"zoe's password"));
    std::fs::remove_dir_all(&dir).unwrap();
}
