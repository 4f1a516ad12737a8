//! Running the Node.js scripts of `tests/js/` (MQTT.js, and Chromium through
//! playwright-core). What they need is checked first; if anything is missing the test
//! FAILS and says how to install it (CI installs it all in `.ci/run`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::Duration;

/// How long one script may run before it is killed and the test fails.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js")
}

const INSTALL: &str = "install them as .ci/run does: `apt-get install -y nodejs npm chromium \
     mosquitto-clients` and `(cd tests/js && npm ci)`";

fn found(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Panics, naming what is missing and how to install it, unless `node` runs and every
/// npm package in `packages` is in tests/js/node_modules.
pub fn require_node(packages: &[&str]) {
    let mut missing = Vec::new();
    if !found("node", "--version") {
        missing.push("node (Node.js)".to_string());
    }
    for p in packages {
        if !js_dir()
            .join("node_modules")
            .join(p)
            .join("package.json")
            .exists()
        {
            missing.push(format!("the npm package {p} in tests/js/node_modules"));
        }
    }
    assert!(
        missing.is_empty(),
        "missing: {}; {INSTALL}",
        missing.join(", ")
    );
}

/// The Chromium binary (`RINGMQ_CHROMIUM`, else Debian's `/usr/bin/chromium`); panics
/// if it does not run.
pub fn require_chromium() -> String {
    let path = std::env::var("RINGMQ_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        found(&path, "--version"),
        "missing: Chromium at {path}; {INSTALL}"
    );
    path
}

pub fn require_program(name: &str, version_arg: &str) {
    assert!(
        Command::new(name)
            .arg(version_arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok(),
        "missing: {name}; {INSTALL}"
    );
}

/// Runs `node SCRIPT ARGS…` in tests/js; returns its output, panicking with it if the
/// script fails or runs past [`SCRIPT_TIMEOUT`].
pub fn run_script(script: &str, args: &[&str]) -> String {
    let child = Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(js_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn node");
    let pid = child.id() as i32;
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(SCRIPT_TIMEOUT) {
        Ok(out) => out.expect("wait for node"),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("node {script} still running after {SCRIPT_TIMEOUT:?}");
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "node {script} failed ({}):\n{text}",
        out.status
    );
    text
}
