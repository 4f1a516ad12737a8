//! Credentials made independently of the broker's code: password files by the real
//! `mosquitto_passwd` (Debian's `mosquitto` package, which `.ci/run` installs) and by
//! the `ringmq passwd` command (the binary, its password on stdin); JSON Web Tokens
//! signed here by hand (RFC 7515: base64url, HMAC-SHA256), not with the library the broker
//! verifies them with.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{KeyInit, Mac};

use super::broker::BIN;

/// `mosquitto_passwd [-H hash] [-c] -b FILE USER PASSWORD`; panics (saying what to
/// install) when the program is missing, so a test never passes without it.
pub fn mosquitto_passwd(file: &Path, hash: Option<&str>, create: bool, user: &str, password: &str) {
    let mut cmd = Command::new("mosquitto_passwd");
    if let Some(h) = hash {
        cmd.args(["-H", h]);
    }
    if create {
        cmd.arg("-c");
    }
    cmd.arg("-b").arg(file).arg(user).arg(password);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run mosquitto_passwd ({e}); install the mosquitto package")
    });
    assert!(
        out.status.success(),
        "mosquitto_passwd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ringmq passwd FILE USER`, the password on stdin (not a terminal).
pub fn ringmq_passwd(file: &Path, user: &str, password: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("passwd")
        .arg(file)
        .arg(user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringmq passwd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().expect("ringmq passwd")
}

/// An HS256 token: `claims` (JSON text) signed with `secret`.
pub fn hs256(secret: &[u8], claims: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.as_bytes());
    let signing_input = format!("{header}.{payload}");
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs `program args`, panicking with how to install it when it is missing.
pub fn run_tool(program: &str, args: &[&str], package: &str) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); install the {package} package"))
}
