//! ringmq-tune: parsing and formatting of each setting kind, the OK/LOW/HIGH logic,
//! apply on a fake /proc/sys (idempotent, dry run writes nothing), and `check` on this
//! machine. `apply` never runs against the real /proc/sys here.

use std::path::Path;
use std::process::{Command, Output};

use ringmq_tools::tune::{self, Outcome, SPECS, Shape, Status, sys::ProcSys};

fn spec(name: &str) -> &'static tune::Spec {
    tune::spec(name).unwrap()
}

fn tune_bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringmq-tune"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn parse_each_kind() {
    assert_eq!(tune::parse(Shape::Int, "1048576\n"), Ok(vec![1_048_576]));
    assert_eq!(
        tune::parse(Shape::Triple, "4096\t131072\t6291456\n"),
        Ok(vec![4096, 131_072, 6_291_456])
    );
    assert_eq!(
        tune::parse(Shape::Range, "32768\t60999\n"),
        Ok(vec![32_768, 60_999])
    );
    assert_eq!(
        tune::parse(Shape::Range, "  1024   65535 "),
        Ok(vec![1024, 65_535])
    );

    assert!(
        tune::parse(Shape::Int, "")
            .unwrap_err()
            .contains("expected 1 value(s), found 0")
    );
    assert!(
        tune::parse(Shape::Int, "12 13")
            .unwrap_err()
            .contains("found 2")
    );
    assert!(
        tune::parse(Shape::Triple, "1 2")
            .unwrap_err()
            .contains("expected 3")
    );
    assert!(
        tune::parse(Shape::Int, "-1")
            .unwrap_err()
            .contains("not an unsigned integer")
    );
    assert!(
        tune::parse(Shape::Int, "abc")
            .unwrap_err()
            .contains("\"abc\"")
    );
    assert!(
        tune::parse(Shape::Range, "60000 1024")
            .unwrap_err()
            .contains("backwards")
    );
}

#[test]
fn format_each_kind() {
    assert_eq!(tune::format_for_kernel(&[7]), "7");
    assert_eq!(tune::format_for_kernel(&[1, 2, 3]), "1\t2\t3");
    assert_eq!(tune::format_values(&[1024, 65_535]), "1024 65535");
    assert_eq!(tune::format_recommended(spec("fs.nr_open")), "≥2097152");
    assert_eq!(
        tune::format_recommended(spec("net.ipv4.tcp_mem")),
        "≥786432 ≥1048576 ≥1572864"
    );
    assert_eq!(
        tune::format_recommended(spec("net.ipv4.tcp_rmem")),
        "≥4096 ≤16384 ≤4194304"
    );
    assert_eq!(
        tune::format_recommended(spec("net.ipv4.ip_local_port_range")),
        "1024-65535"
    );
    // What is written parses back to the same values.
    for s in SPECS {
        let text = tune::format_for_kernel(s.recommended);
        assert_eq!(
            tune::parse(s.shape, &text).unwrap(),
            s.recommended,
            "{}",
            s.name
        );
    }
}

#[test]
fn judge_single_integers() {
    let s = spec("net.core.somaxconn");
    assert_eq!(tune::judge(s, &[128]), Status::Low);
    assert_eq!(tune::judge(s, &[4096]), Status::Ok);
    assert_eq!(
        tune::judge(s, &[65_535]),
        Status::Ok,
        "more than recommended is fine"
    );
    let tw = spec("net.ipv4.tcp_tw_reuse");
    assert_eq!(tune::judge(tw, &[0]), Status::Low);
    assert_eq!(tune::judge(tw, &[1]), Status::Ok);
    assert_eq!(
        tune::judge(tw, &[2]),
        Status::Ok,
        "2 (loopback only) is enough on loopback"
    );
}

#[test]
fn judge_triples() {
    let mem = spec("net.ipv4.tcp_mem");
    assert_eq!(tune::judge(mem, &[287_898, 383_867, 575_796]), Status::Low);
    assert_eq!(
        tune::judge(mem, &[786_432, 1_048_576, 1_000_000]),
        Status::Low,
        "one element low"
    );
    assert_eq!(
        tune::judge(mem, &[1_000_000, 2_000_000, 3_000_000]),
        Status::Ok
    );

    let rmem = spec("net.ipv4.tcp_rmem");
    assert_eq!(
        tune::judge(rmem, &[4096, 131_072, 6_291_456]),
        Status::High,
        "kernel default"
    );
    assert_eq!(
        tune::judge(rmem, &[4096, 16_384, 33_554_432]),
        Status::High,
        "max above"
    );
    assert_eq!(tune::judge(rmem, &[4096, 16_384, 4_194_304]), Status::Ok);
    assert_eq!(
        tune::judge(rmem, &[8192, 8192, 1_048_576]),
        Status::Ok,
        "smaller is fine"
    );
    assert_eq!(
        tune::judge(rmem, &[1024, 131_072, 6_291_456]),
        Status::Low,
        "LOW wins over HIGH"
    );
    let wmem = spec("net.ipv4.tcp_wmem");
    assert_eq!(
        tune::judge(wmem, &[4096, 16_384, 4_194_304]),
        Status::Ok,
        "kernel default"
    );
}

#[test]
fn judge_ranges() {
    let r = spec("net.ipv4.ip_local_port_range");
    assert_eq!(
        tune::judge(r, &[32_768, 60_999]),
        Status::Low,
        "kernel default"
    );
    assert_eq!(
        tune::judge(r, &[1024, 60_999]),
        Status::Low,
        "top cut short"
    );
    assert_eq!(
        tune::judge(r, &[2000, 65_535]),
        Status::Low,
        "bottom cut short"
    );
    assert_eq!(tune::judge(r, &[1024, 65_535]), Status::Ok);
    assert_eq!(
        tune::judge(r, &[500, 65_535]),
        Status::High,
        "reaches privileged ports"
    );
}

#[test]
fn targets_move_only_what_is_off() {
    let mem = spec("net.ipv4.tcp_mem");
    assert_eq!(
        tune::target(mem, &[287_898, 383_867, 575_796]),
        [786_432, 1_048_576, 1_572_864]
    );
    assert_eq!(
        tune::target(mem, &[900_000, 383_867, 9_000_000]),
        [900_000, 1_048_576, 9_000_000]
    );
    let rmem = spec("net.ipv4.tcp_rmem");
    assert_eq!(
        tune::target(rmem, &[4096, 131_072, 33_554_432]),
        [4096, 16_384, 4_194_304]
    );
    assert_eq!(
        tune::target(rmem, &[32_768, 131_072, 33_554_432]),
        [32_768, 32_768, 4_194_304],
        "kept non-decreasing"
    );
    let r = spec("net.ipv4.ip_local_port_range");
    assert_eq!(tune::target(r, &[32_768, 60_999]), [1024, 65_535]);
    assert_eq!(tune::target(r, &[500, 65_535]), [1024, 65_535]);
    let n = spec("fs.nr_open");
    assert_eq!(tune::target(n, &[1_048_576]), [2_097_152]);
    assert_eq!(tune::target(n, &[9_999_999]), [9_999_999]);
    // A target is always judged OK.
    for s in SPECS {
        let low: Vec<u64> = if s.shape == Shape::Range {
            vec![40_000, 50_000]
        } else {
            vec![0; s.shape.count()]
        };
        assert_eq!(
            tune::judge(s, &tune::target(s, &low)),
            Status::Ok,
            "{}",
            s.name
        );
    }
}

#[test]
fn lane_arithmetic_for_the_open_file_limit() {
    // This machine: hard limit 20,000 → 19,936-slot tables, 18,656 connections each.
    assert_eq!(tune::lanes_needed(20_000, 1_000_000), Some(54));
    // LimitNOFILE=2000000: tables cap at 65,536 by default → 64,256 each.
    assert_eq!(tune::lanes_needed(2_000_000, 1_000_000), Some(16));
    assert_eq!(tune::lanes_needed(1000, 1_000_000), None);
}

#[test]
fn open_file_limit_rows() {
    let [soft, hard] = tune::nofile_rows(20_000, 20_000, Some(false));
    assert_eq!(soft.status, Status::Ok);
    assert_eq!(hard.status, Status::Low);
    assert!(
        hard.note.contains("CAP_SYS_RESOURCE") && hard.note.contains("opens 54 lanes"),
        "{}",
        hard.note
    );
    let [soft, hard] = tune::nofile_rows(1024, 2_000_000, Some(true));
    assert_eq!((soft.status, hard.status), (Status::Low, Status::Ok));
    assert!(soft.note.contains("ulimit -n 2000000"), "{}", soft.note);
    let [soft, _] = tune::nofile_rows(u64::MAX, u64::MAX, None);
    assert_eq!(soft.current.as_deref(), Some("unlimited"));
}

/// A fake /proc/sys with every setting at `value(spec)` (conntrack absent).
fn fake_proc(dir: &Path, value: impl Fn(&tune::Spec) -> String) -> ProcSys {
    let proc = ProcSys {
        root: dir.to_owned(),
    };
    for s in SPECS.iter().filter(|s| s.when_absent.is_none()) {
        let path = proc.path(s.name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, value(s) + "\n").unwrap();
    }
    proc
}

fn kernel_defaults(s: &tune::Spec) -> String {
    match s.name {
        "fs.nr_open" => "1048576",
        "fs.file-max" => "2466170",
        "net.core.somaxconn" => "4096",
        "net.ipv4.tcp_max_syn_backlog" => "2048",
        "net.ipv4.ip_local_port_range" => "32768\t60999",
        "net.ipv4.tcp_mem" => "287898\t383867\t575796",
        "net.ipv4.tcp_rmem" => "4096\t131072\t6291456",
        "net.ipv4.tcp_wmem" => "4096\t16384\t4194304",
        "net.core.netdev_max_backlog" => "1000",
        "net.ipv4.tcp_tw_reuse" => "2",
        "vm.max_map_count" => "65530",
        other => panic!("no default for {other}"),
    }
    .to_owned()
}

#[test]
fn apply_on_a_fake_proc_sys_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let proc = fake_proc(dir.path(), kernel_defaults);
    let read_all =
        || -> Vec<Option<String>> { SPECS.iter().map(|s| proc.read(s.name).unwrap()).collect() };
    let before = read_all();

    // Dry run: says what it would do, writes nothing.
    let dry: Vec<_> = SPECS
        .iter()
        .map(|s| tune::apply_spec(&proc, s, true))
        .collect();
    assert_eq!(read_all(), before);
    let outcome = |acts: &[tune::Action], name: &str| {
        acts.iter()
            .find(|a| a.name == name)
            .unwrap()
            .outcome
            .clone()
    };
    assert_eq!(
        outcome(&dry, "net.ipv4.tcp_mem"),
        Outcome::WouldChange(
            "287898 383867 575796".into(),
            "786432 1048576 1572864".into(),
            String::new()
        )
    );
    assert!(matches!(
        outcome(&dry, "net.core.somaxconn"),
        Outcome::Unchanged(_)
    ));
    assert!(matches!(
        outcome(&dry, "net.netfilter.nf_conntrack_max"),
        Outcome::Absent(_)
    ));

    // Apply: writes what the dry run said, tab-separated like the kernel.
    let first: Vec<_> = SPECS
        .iter()
        .map(|s| tune::apply_spec(&proc, s, false))
        .collect();
    for (d, f) in dry.iter().zip(&first) {
        match (&d.outcome, &f.outcome) {
            (Outcome::WouldChange(a, b, _), Outcome::Changed(c, e, _)) => {
                assert_eq!((a, b), (c, e))
            }
            (x, y) => assert_eq!(x, y, "{}", d.name),
        }
    }
    assert_eq!(
        proc.read("net.ipv4.ip_local_port_range").unwrap().unwrap(),
        "1024\t65535"
    );
    assert_eq!(
        proc.read("net.ipv4.tcp_rmem").unwrap().unwrap(),
        "4096\t16384\t4194304"
    );
    assert_eq!(
        proc.read("net.ipv4.tcp_tw_reuse").unwrap().unwrap(),
        "2\n",
        "OK settings are not rewritten"
    );

    // Check now says OK everywhere, and a second apply changes nothing.
    for s in SPECS {
        let row = tune::check_spec(&proc, s);
        let want = if s.when_absent.is_some() {
            Status::Absent
        } else {
            Status::Ok
        };
        assert_eq!(row.status, want, "{}", s.name);
    }
    let after_first = read_all();
    let second: Vec<_> = SPECS
        .iter()
        .map(|s| tune::apply_spec(&proc, s, false))
        .collect();
    assert!(
        second
            .iter()
            .all(|a| matches!(a.outcome, Outcome::Unchanged(_) | Outcome::Absent(_))),
        "{second:?}"
    );
    assert_eq!(read_all(), after_first);
    let report = tune::format_apply(&second, false);
    assert!(
        report.contains("0 changed, 0 cannot be changed here, 0 failed"),
        "{report}"
    );
}

#[test]
fn apply_reports_unreadable_and_unparseable_settings() {
    let dir = tempfile::tempdir().unwrap();
    let proc = fake_proc(dir.path(), |s| {
        if s.name == "vm.max_map_count" {
            "lots".into()
        } else {
            kernel_defaults(s)
        }
    });
    let a = tune::apply_spec(&proc, spec("vm.max_map_count"), false);
    assert!(
        matches!(&a.outcome, Outcome::Failed(why) if why.contains("cannot parse")),
        "{a:?}"
    );
    let row = tune::check_spec(&proc, spec("vm.max_map_count"));
    assert_eq!(row.status, Status::Error);
    assert!(row.note.contains("\"lots\""), "{}", row.note);
}

#[test]
fn check_runs_on_this_machine() {
    let out = tune_bin(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for s in SPECS {
        assert!(
            text.lines().any(|l| l.starts_with(s.name)),
            "{} missing:\n{text}",
            s.name
        );
    }
    assert!(
        text.contains("RLIMIT_NOFILE (soft)") && text.contains("RLIMIT_NOFILE (hard)"),
        "{text}"
    );
    assert!(!text.contains("ERROR"), "{text}");

    let out = tune_bin(&["check", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let settings = v["settings"].as_array().unwrap();
    assert_eq!(settings.len(), SPECS.len() + 2);
    assert_eq!(v["target_connections"], 1_000_000);
    for s in settings {
        let status = s["status"].as_str().unwrap();
        assert!(["OK", "LOW", "HIGH", "absent"].contains(&status), "{s}");
        assert_eq!(s["current"].is_null(), status == "absent", "{s}");
    }
    let nr_open = settings.iter().find(|s| s["name"] == "fs.nr_open").unwrap();
    assert_eq!(nr_open["source"], "/proc/sys/fs/nr_open");
}

#[test]
fn dry_run_and_conf_on_a_fake_proc_sys() {
    let dir = tempfile::tempdir().unwrap();
    fake_proc(dir.path(), kernel_defaults);
    let root = dir.path().to_str().unwrap();
    let out = tune_bin(&["apply", "--dry-run", "--proc-sys", root]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("would set  32768 60999 → 1024 65535"),
        "{text}"
    );
    assert!(text.contains("(dry run: nothing written)"), "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fs/nr_open")).unwrap(),
        "1048576\n"
    );

    let out = tune_bin(&["conf", "--proc-sys", root]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\nnet.ipv4.tcp_mem = 786432 1048576 1572864\n"),
        "{text}"
    );
    assert!(
        text.contains("\nnet.ipv4.tcp_tw_reuse = 2\n"),
        "keeps an OK value: {text}"
    );
    assert!(
        text.contains("\n-net.netfilter.nf_conntrack_max = 2097152\n"),
        "{text}"
    );

    let out = tune_bin(&["check", "--strict", "--proc-sys", root]);
    assert_eq!(out.status.code(), Some(1), "LOW settings fail --strict");
}

#[test]
fn tuning_md_table_matches_the_recommendations() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    for s in SPECS {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", s.name)))
            .unwrap_or_else(|| panic!("tuning.md has no table row for {}", s.name));
        for v in s.recommended {
            assert!(
                row.contains(&format!("{v}")),
                "tuning.md row for {} lacks {v}: {row}",
                s.name
            );
        }
        assert!(
            doc.contains(&format!("### `{}`", s.name)),
            "tuning.md has no section for {}",
            s.name
        );
    }
    let nofile = doc
        .lines()
        .find(|l| l.starts_with("| `RLIMIT_NOFILE` hard |"))
        .unwrap();
    assert!(
        nofile.contains(&tune::RECOMMENDED_NOFILE.to_string()),
        "{nofile}"
    );
}
