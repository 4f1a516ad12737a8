//! ringmq-hist: logs written with hdrhistogram's own serializer are read back with the
//! right counts and percentiles; merge sums; compare gives ratios; plot writes valid
//! SVG/HTML; bad input gives a clear error and no panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer, V2Serializer};
use ringmq_tools::hist::{self, HistError, Summary, plot};

/// One interval: tag and the values recorded in it (µs).
type Interval<'a> = (Option<&'a str>, Vec<u64>);

fn histogram(values: &[u64]) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for &v in values {
        h.record(v).unwrap();
    }
    h
}

/// An interval log as ringmq-swarm writes it (deflate-compressed V2, one interval per
/// second from a base time), or uncompressed V2 with `compressed = false`.
fn log_bytes(intervals: &[Interval<'_>], compressed: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    if compressed {
        write_intervals(&mut buf, &mut V2DeflateSerializer::new(), intervals);
    } else {
        write_intervals(&mut buf, &mut V2Serializer::new(), intervals);
    }
    buf
}

fn write_intervals<S: Serializer>(buf: &mut Vec<u8>, ser: &mut S, intervals: &[Interval<'_>])
where
    S::SerializeError: std::fmt::Debug,
{
    let base = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let mut lw = IntervalLogWriterBuilder::new()
        .add_comment("test log")
        .with_start_time(base)
        .with_base_time(base)
        .begin_log_with(buf, ser)
        .unwrap();
    for (i, (tag, values)) in intervals.iter().enumerate() {
        let start = Duration::from_secs(i as u64);
        let tag = tag.map(|t| Tag::new(t).unwrap());
        lw.write_histogram(&histogram(values), start, Duration::from_secs(1), tag)
            .unwrap();
    }
}

fn write_log(dir: &Path, name: &str, intervals: &[Interval<'_>]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, log_bytes(intervals, true)).unwrap();
    path
}

fn hist_bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringmq-hist"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn close(actual: u64, expected: u64) -> bool {
    // Three significant digits: within 0.1 %.
    (actual as f64 - expected as f64).abs() <= expected as f64 * 0.001 + 1.0
}

#[test]
fn round_trip_keeps_counts_and_percentiles() {
    let dir = tempfile::tempdir().unwrap();
    let first: Vec<u64> = (1..=5_000).collect();
    let second: Vec<u64> = (5_001..=10_000).collect();
    let path = write_log(
        dir.path(),
        "run.hlog",
        &[
            (Some("lat"), first.clone()),
            (Some("lat"), second.clone()),
            (Some("other"), vec![42; 7]),
        ],
    );
    let log = hist::read_log(&path).unwrap();
    assert_eq!(log.tags(), ["lat", "other"]);

    let lat = log.get("lat").unwrap();
    assert_eq!(lat.intervals, 2);
    let s = Summary::of(&lat.hist);
    assert_eq!(s.count, 10_000);
    assert_eq!(s.min, 1);
    for (got, want) in [
        (s.p50, 5_000),
        (s.p90, 9_000),
        (s.p99, 9_900),
        (s.p999, 9_990),
        (s.p9999, 9_999),
        (s.max, 10_000),
    ] {
        assert!(close(got, want), "got {got}, want ≈ {want}");
    }
    assert!((s.mean - 5_000.5).abs() < 5.0, "mean {}", s.mean);
    // Exactly what the original histogram says (serialisation is lossless).
    let all: Vec<u64> = first.into_iter().chain(second).collect();
    assert_eq!(s, Summary::of(&histogram(&all)));
    // Times: base time + interval starts.
    assert_eq!(lat.start_s, 1_750_000_000.0);
    assert_eq!(lat.end_s, 1_750_000_002.0);

    let other = Summary::of(&log.get("other").unwrap().hist);
    assert_eq!(
        (other.count, other.min, other.max, other.p50),
        (7, 42, 42, 42)
    );
}

#[test]
fn uncompressed_v2_untagged_and_crlf_logs_read() {
    let bytes = log_bytes(&[(None, vec![10, 20, 30])], false);
    let log = hist::parse_log(Path::new("plain.hlog"), &bytes).unwrap();
    assert_eq!(log.tags(), [hist::UNTAGGED]);
    assert_eq!(log.series[0].hist.len(), 3);

    let crlf = String::from_utf8(log_bytes(&[(Some("t"), vec![5])], true))
        .unwrap()
        .replace('\n', "\r\n");
    let log = hist::parse_log(Path::new("crlf.hlog"), crlf.as_bytes()).unwrap();
    assert_eq!(log.get("t").unwrap().hist.len(), 1);
}

#[test]
fn print_shows_a_table_per_tag_in_microseconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(
        dir.path(),
        "broker.hlog",
        &[
            (Some("shard0.publish_to_delivery"), (1..=1000).collect()),
            (Some("merged.loop_turn"), vec![3; 10]),
        ],
    );
    let out = hist_bin(&["print", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("latency in µs"), "{text}");
    for h in [
        "count", "min", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean",
    ] {
        assert!(text.contains(h), "{h} missing: {text}");
    }
    let row = text
        .lines()
        .find(|l| l.starts_with("shard0.publish_to_delivery"))
        .unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1..3], ["1000", "1"], "{row}");
    assert_eq!(cells[9..], ["500.5", "1"], "mean, intervals: {row}");

    let out = hist_bin(&["print", path.to_str().unwrap(), "--tag", "merged.loop_turn"]);
    let text = stdout(&out);
    assert!(
        text.contains("merged.loop_turn") && !text.contains("shard0"),
        "{text}"
    );
}

#[test]
fn merge_of_two_logs_sums_counts_per_tag() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_log(
        dir.path(),
        "a.hlog",
        &[(Some("x"), vec![100; 100]), (Some("y"), vec![7; 50])],
    );
    let b = write_log(
        dir.path(),
        "b.hlog",
        &[(Some("x"), vec![300; 200]), (Some("x"), vec![1; 5])],
    );

    let logs = hist::read_logs(&[a.clone(), b.clone()], None).unwrap();
    let merged = hist::merge(&logs).unwrap();
    let counts: Vec<(&str, u64, usize)> = merged
        .iter()
        .map(|s| (s.name(), s.hist.len(), s.intervals))
        .collect();
    assert_eq!(counts, [("x", 305, 3), ("y", 50, 1)]);

    let out_path = dir.path().join("merged.hlog");
    let out = hist_bin(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let back = hist::read_log(&out_path).unwrap();
    assert_eq!(back.tags(), ["x", "y"]);
    let x = back.get("x").unwrap();
    assert_eq!(
        (x.hist.len(), x.intervals),
        (305, 1),
        "one interval per tag"
    );
    assert_eq!(Summary::of(&x.hist), Summary::of(&merged[0].hist));
    assert_eq!(back.get("y").unwrap().hist.len(), 50);
    // The merged interval spans both runs' intervals.
    assert_eq!(x.start_s, 1_750_000_000.0);
    assert_eq!(x.end_s, 1_750_000_002.0);

    // --tag keeps one.
    let out = hist_bin(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
        "--tag",
        "y",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(hist::read_log(&out_path).unwrap().tags(), ["y"]);
}

#[test]
fn compare_gives_b_over_a() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_log(
        dir.path(),
        "a.hlog",
        &[(Some("lat"), vec![100; 1000]), (Some("only_a"), vec![1])],
    );
    let b = write_log(dir.path(), "b.hlog", &[(Some("lat"), vec![250; 2000])]);

    let (la, lb) = (hist::read_log(&a).unwrap(), hist::read_log(&b).unwrap());
    let pairs = hist::pairs(&la, &lb).unwrap();
    assert_eq!(pairs.len(), 1, "only the shared tag");

    let out = hist_bin(&["compare", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let cells = |name: &str| -> Vec<String> {
        let row = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap();
        row.split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(cells("count"), ["count", "1000", "2000", "2.00x"]);
    assert_eq!(cells("p50"), ["p50", "100", "250", "2.50x"]);
    assert_eq!(cells("p99.99"), ["p99.99", "100", "250", "2.50x"]);
    assert_eq!(cells("mean"), ["mean", "100.0", "250.0", "2.50x"]);
    assert!(text.contains("ratio = B/A"), "{text}");

    // Two single-tag logs with different tags are compared with each other.
    let c = write_log(dir.path(), "c.hlog", &[(Some("other"), vec![50; 10])]);
    let out = hist_bin(&["compare", b.to_str().unwrap(), c.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("lat (A) vs other (B)"),
        "{}",
        stdout(&out)
    );

    // Nothing in common: a clear error; --tag-b picks B's series.
    let out = hist_bin(&["compare", a.to_str().unwrap(), c.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("share no tag"), "{}", stderr(&out));
    let (a_s, c_s) = (a.to_str().unwrap(), c.to_str().unwrap());
    let out = hist_bin(&["compare", a_s, c_s, "--tag", "lat", "--tag-b", "other"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("lat (A) vs other (B)"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("0.50x"), "{}", stdout(&out));
    let out = hist_bin(&["compare", a_s, c_s, "--tag", "lat"]);
    assert_eq!(out.status.code(), Some(1));
    let want = format!("no histogram tagged \"lat\" in {c_s}; the tags are: other");
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
}

#[test]
fn an_empty_histogram_prints_dashes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_log(
        dir.path(),
        "e.hlog",
        &[(Some("idle"), vec![]), (Some("idle"), vec![])],
    );
    let out = hist_bin(&["print", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let row = text.lines().find(|l| l.starts_with("idle")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        ["idle", "0", "-", "-", "-", "-", "-", "-", "-", "-", "2"],
        "{row}"
    );
}

/// Checks that `doc` is well-formed XML as far as elements go: every opened element
/// is closed, in order.
fn assert_well_formed(doc: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').expect("unterminated tag");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap();
            if !["meta"].contains(&name) {
                stack.push(name.to_owned());
            }
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

#[test]
fn plot_writes_svg_and_self_contained_html() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_log(
        dir.path(),
        "swarm-a.hlog",
        &[(None, (1..=100_000).collect())],
    );
    let b = write_log(
        dir.path(),
        "swarm-b.hlog",
        &[(None, (1..=100_000).map(|v| v * 2).collect())],
    );

    let svg_path = dir.path().join("p.svg");
    let out = hist_bin(&[
        "plot",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        svg_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(
        svg.trim_start().starts_with("<svg") || svg.starts_with("<?xml"),
        "{}",
        &svg[..100]
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_well_formed(&svg);
    for label in [
        "50%",
        "90%",
        "99%",
        "99.9%",
        "99.99%",
        "99.999%",
        "percentile",
        "latency (µs)",
        "swarm-a.hlog",
        "swarm-b.hlog",
    ] {
        // plotters writes each text on a line of its own.
        let text = svg.lines().any(|l| l.trim() == label);
        assert!(text, "label {label:?} missing");
    }
    assert!(
        svg.contains("<polyline") || svg.contains("<path"),
        "no lines drawn"
    );

    let html_path = dir.path().join("p.html");
    let out = hist_bin(&[
        "plot",
        a.to_str().unwrap(),
        "-o",
        html_path.to_str().unwrap(),
        "--title",
        "Run <A>",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg") && html.contains("</svg>") && !html.contains("<?xml"));
    assert!(html.contains("Run &lt;A&gt;"));
    assert!(html.contains("<td>100000</td>"), "count in the table");
    for asset in ["<script", "<link", "src=", "url("] {
        assert!(!html.contains(asset), "{asset} in a self-contained page");
    }
    assert_well_formed(&html);

    let out = hist_bin(&[
        "plot",
        a.to_str().unwrap(),
        "-o",
        dir.path().join("p.png").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(".svg or .html"), "{}", stderr(&out));
}

#[test]
fn plot_lines_cover_the_percentiles() {
    let h = histogram(&(1..=1000).collect::<Vec<_>>());
    let s = hist::Series {
        tag: None,
        hist: h,
        intervals: 1,
        start_s: 0.0,
        end_s: 1.0,
    };
    let pts = plot::points(&s, 4.0);
    assert_eq!(pts.first().unwrap().0, 0.0);
    assert_eq!(pts.last().unwrap().0, 4.0);
    assert!(
        pts.windows(2).all(|w| w[0].1 <= w[1].1),
        "latency never falls with the percentile"
    );
    let at_90 = pts.iter().find(|p| (p.0 - 1.0).abs() < 1e-9).unwrap().1;
    assert!(close(at_90 as u64, 900));
}

#[test]
fn bad_input_gives_clear_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, bytes: &[u8], want: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let e = hist::read_log(&path).unwrap_err();
        assert!(e.to_string().contains(want), "{name}: {e}");
        for cmd in ["print", "plot"] {
            let mut args = vec![cmd, path.to_str().unwrap()];
            let svg = dir.path().join("x.svg");
            if cmd == "plot" {
                args.extend(["-o", svg.to_str().unwrap()]);
            }
            let out = hist_bin(&args);
            assert_eq!(out.status.code(), Some(1), "{name} {cmd}: {}", stderr(&out));
            assert!(
                stderr(&out).starts_with("ringmq-hist: "),
                "{}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains(want),
                "{name} {cmd}: {}",
                stderr(&out)
            );
        }
        e
    };

    let e = check(
        "text.hlog",
        b"hello world\nthis is not a log\n",
        "not an HdrHistogram interval log",
    );
    assert!(matches!(e, HistError::NotALog { line: 1, .. }));
    check(
        "binary.hlog",
        &[0xff, 0x00, 0x13, 0x37, 0x80, b'\n'],
        "not an HdrHistogram interval log",
    );
    let e = check("empty.hlog", b"", "no histogram intervals");
    assert!(matches!(e, HistError::Empty { .. }));
    check(
        "comments.hlog",
        b"#[StartTime: 1.000 (seconds since epoch)]\n# nothing\n",
        "no histogram intervals",
    );

    // A log cut short in the middle of its last histogram: base64 of a bad length, or
    // valid base64 of a cut deflate stream.
    let good = log_bytes(
        &[
            (Some("a"), (1..=2000).collect()),
            (Some("b"), (1..=2000).collect()),
        ],
        true,
    );
    let text = String::from_utf8(good).unwrap();
    let last_comma = text.trim_end().rfind(',').unwrap();
    let b64_len = text.trim_end().len() - last_comma - 1;
    let cut_odd = &text[..last_comma + 1 + (b64_len / 2) / 4 * 4 + 1];
    let e = check("cut-b64.hlog", cut_odd.as_bytes(), "not valid base64");
    assert!(matches!(e, HistError::Base64 { line: 5, .. }), "{e}");
    let cut_four = &text[..last_comma + 1 + (b64_len / 2) / 4 * 4];
    let e = check("cut-data.hlog", cut_four.as_bytes(), "cannot be decoded");
    assert!(matches!(e, HistError::Histogram { line: 5, .. }), "{e}");
    assert!(e.to_string().contains("cut-data.hlog:5:"), "{e}");

    // A missing file, an unknown tag.
    let out = hist_bin(&["print", dir.path().join("nope.hlog").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nope.hlog"), "{}", stderr(&out));
    let ok = write_log(dir.path(), "ok.hlog", &[(Some("a"), vec![1])]);
    let out = hist_bin(&["print", ok.to_str().unwrap(), "--tag", "zzz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no histogram tagged \"zzz\"; the tags are: a"),
        "{}",
        stderr(&out)
    );
}
