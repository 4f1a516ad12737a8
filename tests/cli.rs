//! End-to-end tests of the binary itself: flags, config file, startup, the metrics
//! endpoint, signals. Plain std sockets only; MQTT behaviour is tested elsewhere.

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;

use support::{Broker, TempDir, WAIT, http_get, parse_metric, run};

/// Every flag of `ringmq` (besides --help and --version).
const FLAGS: &[&str] = &[
    "--config",
    "--mqtt",
    "--ws",
    "--ws-path",
    "--http",
    "--cores",
    "--shards",
    "--max-connections",
    "--max-packet-size",
    "--data-dir",
    "--durability",
    "--fsync-interval",
    "--max-data-bytes",
    "--max-queued-messages",
    "--max-inflight",
    "--max-subscriptions",
    "--max-subscription-bytes",
    "--max-topic-levels",
    "--max-sessions",
    "--v311-session-expiry",
    "--retained-snapshot-entries",
    "--sys-interval",
    "--max-keep-alive",
    "--deny-subscribe",
    "--files-per-shard",
    "--lanes-per-shard",
    "--recv-buffers",
    "--recv-buffer-size",
    "--mesh-capacity",
    "--shard-pressure-bytes",
    "--api-key-file",
    "--webhook-url",
    "--webhook-secret",
    "--webhook-batch",
    "--webhook-batch-ms",
    "--webhook-max-pending",
    "--webhook-payload-preview",
    "--log-format",
    "--log-level",
    "--password-file",
    "--acl-file",
    "--jwt-key",
    "--jwt-from",
    "--jwt-audience",
    "--allow-anonymous",
    "--auth-threads",
    "--auth-queue",
    "--auth-cache",
    "--ws-allowed-origins",
    "--client-msg-rate",
    "--client-byte-rate",
    "--max-connect-rate",
    "--max-connections-per-ip",
    "--max-retained",
    "--cluster",
    "--node-id",
    "--cluster-queue",
    "--flapping-max-drops",
    "--flapping-window",
    "--flapping-ban",
    "--flapping-by-address",
    "--mqtts",
    "--wss",
    "--tls-cert",
    "--tls-key",
    "--tls-client-ca",
    "--tls-require-client-cert",
    "--http-tls",
    "--tls-cn-as-username",
];

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let out = run(&["--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in FLAGS {
        // A switch that may also take a value reads `--flag [<VALUE>]`.
        assert!(
            help.contains(&format!("{flag} <")) || help.contains(&format!("{flag} [<")),
            "--help lacks {flag}:\n{help}"
        );
    }
    // One `[default: …]` per flag.
    assert_eq!(help.matches("[default:").count(), FLAGS.len(), "{help}");
    assert!(
        help.contains("`none`"),
        "--help must say how to turn a listener off"
    );
}

#[test]
fn the_example_config_has_every_key_and_starts_the_broker() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("ringmq.example.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    for flag in &FLAGS[1..] {
        let key = flag.trim_start_matches("--").replace('-', "_");
        let listed = text.lines().any(|l| {
            let l = l.trim_start_matches("# ");
            l.starts_with(&format!("{key} = "))
        });
        assert!(listed, "ringmq.example.toml lacks `{key}`");
    }
    let mut b = Broker::start(&["--config", example.to_str().unwrap(), "--shards", "1"]);
    assert_eq!(b.metric("ringmq_shards"), 1);
    assert!(b.stop_graceful().success());
}

#[test]
fn bad_cores_and_shards_fail_with_a_clear_message() {
    for (args, says) in [
        (
            &["--cores", "0-x"][..],
            "invalid value '0-x' for '--cores <LIST>'",
        ),
        (&["--cores", "0-x"], "`x` is not a core number"),
        (&["--cores", "3-1"], "runs backwards"),
        (&["--cores", "5000"], "past the highest core number"),
        (
            &["--cores", "1000"],
            "--cores 1000: core 1000 is not available",
        ),
        (&["--shards", "0"], "--shards 0: must be 1 to 128"),
        (&["--shards", "129"], "--shards 129: must be 1 to 128"),
        (&["--mqtt", "none", "--ws", "none"], "listen nowhere"),
        (&["--mqtt", "localhost"], "no port"),
        (
            &["--durability", "sometimes"],
            "expected `fsync`, `write` or `none`",
        ),
        (
            &["--fsync-interval", "0"],
            "--fsync-interval 0: must be 1 to 60000 ms",
        ),
        (
            &["--max-data-bytes", "1000", "--shards", "2"],
            "--max-data-bytes 1000: must be at least 131072 bytes",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let e = stderr(&out);
        assert!(e.contains(says), "{args:?}: expected {says:?} in:\n{e}");
    }
}

#[test]
fn the_config_file_sets_values_and_flags_win() {
    let dir = TempDir::new("config");
    let file = dir.file("ringmq.toml", "shards = 1\nws_path = \"/broker\"\n");
    let file = file.to_str().unwrap();

    let mut b = Broker::start(&["--config", file]);
    assert_eq!(b.metric("ringmq_shards"), 1);
    assert!(b.ws_url().ends_with("/broker"), "{}", b.ws_url());
    assert!(b.stop_graceful().success());

    let mut b = Broker::start(&["--config", file, "--shards", "2", "--ws-path", "/flag"]);
    assert_eq!(b.metric("ringmq_shards"), 2);
    assert!(b.ws_url().ends_with("/flag"), "{}", b.ws_url());
    assert!(b.stop_graceful().success());
}

#[test]
fn config_file_errors_name_the_file_and_the_key() {
    let dir = TempDir::new("config-errors");
    let unknown = dir.file("unknown.toml", "shards = 1\nmax_conections = 5\n");
    let out = run(&["--config", unknown.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("max_conections") && e.contains("unknown.toml"),
        "{e}"
    );

    let bad = dir.file("bad.toml", "shards = 0\n");
    let out = run(&["--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let e = stderr(&out);
    assert!(
        e.contains("shards = 0 in ") && e.contains("must be 1 to 128"),
        "{e}"
    );

    let typed = dir.file("typed.toml", "max_inflight = \"many\"\n");
    let out = run(&["--config", typed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("max_inflight"), "{}", stderr(&out));

    let missing = dir.path().join("missing.toml");
    let out = run(&["--config", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read config file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn starts_on_port_zero_and_serves_metrics() {
    let mut b = Broker::start(&["--shards", "2"]);
    assert_ne!(b.mqtt_addr().port(), 0);
    assert_ne!(b.ws_addr().port(), 0);
    assert_ne!(b.metrics_addr().port(), 0);
    assert!(b.ws_url().starts_with("ws://127.0.0.1:") && b.ws_url().ends_with("/mqtt"));
    assert!(
        b.startup_line().contains("; 2 shards on cores ["),
        "{}",
        b.startup_line()
    );

    let text = b.metrics();
    for want in [
        "# TYPE ringmq_connections_current gauge",
        "# TYPE ringmq_connections_total counter",
        "ringmq_connections_current{shard=\"0\"} 0",
        "ringmq_connections_current{shard=\"1\"} 0",
        "ringmq_build_info{version=\"0.1.0\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in\n{text}"
        );
    }
    assert_eq!(parse_metric(&text, "ringmq_shards"), Some(2));
    assert_eq!(parse_metric(&text, "ringmq_connections_current"), Some(0));
    assert!(parse_metric(&text, "ringmq_uptime_seconds").is_some());
    assert!(b.stop_graceful().success());
}

#[test]
fn healthz_answers_ok_and_other_paths_404() {
    let b = Broker::start(&[]);
    assert_eq!(b.http_get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(b.http_get("/nope").0, 404);
    assert_eq!(http_get(b.metrics_addr(), "/metrics?format=text").0, 200);
}

#[test]
fn sigterm_and_sigint_shut_down_with_status_0() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut b = Broker::start(&[]);
        b.signal(sig);
        let status = b.wait_exit();
        assert_eq!(status.code(), Some(0), "signal {sig}");
        assert!(b.stdout().contains("shutting down"), "{}", b.stdout());
        assert!(b.stdout().ends_with("ringmq: stopped"), "{}", b.stdout());
    }
}

/// While a client holds its connection open, the shard waits for it (up to the close
/// timeout) during shutdown; a second SIGINT then ends the process at once. If the
/// shutdown finishes before the second signal lands, the test tries again.
#[test]
fn a_second_sigint_during_shutdown_exits_with_130() {
    for _ in 0..5 {
        let mut b = Broker::start(&["--shards", "1"]);
        let _held = TcpStream::connect(b.mqtt_addr()).unwrap();
        b.wait_for_metric("ringmq_connections_current", WAIT, |n| n >= 1);
        b.signal(libc::SIGINT);
        b.wait_for_stdout(WAIT, |l| l.contains("shutting down"));
        b.signal(libc::SIGINT);
        let status = b.wait_exit();
        if status.code() == Some(0) {
            continue; // the shutdown won the race
        }
        assert_eq!(status.code(), Some(130));
        return;
    }
    panic!("the shutdown always finished before the second SIGINT");
}

#[test]
fn a_tcp_connection_is_counted() {
    let b = Broker::start(&[]);
    let before = b.metric("ringmq_connections_total");
    let mut c = TcpStream::connect(b.mqtt_addr()).unwrap();
    b.wait_for_metric("ringmq_connections_total", WAIT, |n| n > before);
    b.wait_for_metric("ringmq_connections_current", WAIT, |n| n >= 1);
    let ws = TcpStream::connect(b.ws_addr()).unwrap();
    b.wait_for_metric("ringmq_connections_total", WAIT, |n| n > before + 1);
    drop(ws);
    // Closing from our side: the broker closes too, and the gauge comes back down.
    c.shutdown(std::net::Shutdown::Write).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let _ = c.read_to_end(&mut Vec::new());
    b.wait_for_metric("ringmq_connections_current", WAIT, |n| n == 0);
}

#[test]
fn a_listener_turns_off_with_none() {
    let b = Broker::start(&["--ws", "none"]);
    assert!(b.has_mqtt() && !b.has_ws() && b.has_metrics());
    assert!(
        !b.startup_line().contains("mqtt ws"),
        "{}",
        b.startup_line()
    );

    let b = Broker::start(&["--metrics", "none", "--mqtt", "none"]);
    assert!(!b.has_mqtt() && b.has_ws() && !b.has_metrics());
}

#[test]
fn a_port_in_use_is_refused() {
    let a = Broker::start(&["--shards", "1"]);
    let taken = a.mqtt_addr().to_string();
    let e = Broker::try_start(&["--mqtt", &taken])
        .err()
        .expect("second broker on one port");
    assert_eq!(e.status.and_then(|s| s.code()), Some(1), "{e}");
    assert!(
        e.stderr
            .contains(&format!("cannot listen for mqtt on {taken}")),
        "{e}"
    );
}

#[test]
fn the_data_dir_is_created() {
    let dir = TempDir::new("data-dir");
    let data = dir.path().join("a/b/data");
    let mut b = Broker::start(&["--data-dir", data.to_str().unwrap()]);
    assert!(data.is_dir());
    assert!(b.stop_graceful().success());
}
