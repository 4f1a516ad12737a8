//! HdrHistogram interval logs: read them, merge their intervals per tag, summarise,
//! compare and write them back.
//!
//! The format is the one `hdrhistogram::serialization::interval_log` writes (and Java's
//! `HistogramLogWriter`): optional `#[StartTime: …]` and `#[BaseTime: …]` headers, comment
//! lines starting with `#`, an optional CSV legend, and one line per interval,
//! `[Tag=NAME,]START,DURATION,MAX,BASE64` where BASE64 is a (usually deflate-compressed)
//! V2 histogram. ringmq's histograms are in microseconds: `ringmq-swarm --hist` writes one
//! untagged or tagged interval per second, the broker dumps per-shard and merged
//! histograms tagged like `shard0.publish_to_delivery` or `merged.loop_turn`.
//!
//! Every problem with the input is an [`HistError`] naming the file and line, never a
//! panic.

pub mod plot;

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::table;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag,
};
use hdrhistogram::serialization::{Deserializer, V2DeflateSerializer};

/// The unit of every value in ringmq's histograms.
pub const UNIT: &str = "µs";

/// How an untagged series is shown.
pub const UNTAGGED: &str = "(untagged)";

/// Seconds in a year: Java's heuristic for whether interval timestamps are relative to
/// `StartTime` (when they are more than this much smaller) or absolute.
const YEAR_S: f64 = 365.0 * 24.0 * 3600.0;

/// What can go wrong reading, merging or writing histogram logs.
#[derive(Debug)]
pub enum HistError {
    /// A file could not be read or written.
    Io { path: PathBuf, source: io::Error },
    /// A line is neither a header, a comment, the legend nor an interval.
    NotALog {
        path: PathBuf,
        line: usize,
        text: String,
    },
    /// An interval's histogram is not valid base64.
    Base64 {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// An interval's histogram decodes to bytes that are not a V2 histogram.
    Histogram {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// Two histograms of one tag could not be added.
    Merge {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The file holds no interval at all.
    Empty { path: PathBuf },
    /// `--tag` named a tag that no file has (or that `file` lacks).
    NoSuchTag {
        tag: String,
        file: Option<PathBuf>,
        available: Vec<String>,
    },
    /// `compare` found no tag the two files share.
    NothingInCommon { a: Vec<String>, b: Vec<String> },
    /// Serialising or drawing the output failed.
    Output { path: PathBuf, reason: String },
}

impl fmt::Display for HistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            HistError::NotALog { path, line, text } => write!(
                f,
                "{}:{line}: not an HdrHistogram interval log line: {text:?} \
                 (expected `#` comments, #[StartTime: …]/#[BaseTime: …] headers and \
                 `[Tag=NAME,]START,DURATION,MAX,BASE64` intervals)",
                path.display()
            ),
            HistError::Base64 { path, line, reason } => write!(
                f,
                "{}:{line}: the histogram is not valid base64 (truncated line?): {reason}",
                path.display()
            ),
            HistError::Histogram { path, line, reason } => write!(
                f,
                "{}:{line}: the histogram cannot be decoded (truncated or corrupt): {reason}",
                path.display()
            ),
            HistError::Merge { path, line, reason } => write!(
                f,
                "{}:{line}: cannot add this histogram to the others of its tag: {reason}",
                path.display()
            ),
            HistError::Empty { path } => {
                write!(f, "{}: no histogram intervals in this file", path.display())
            }
            HistError::NoSuchTag {
                tag,
                file,
                available,
            } => {
                write!(f, "no histogram tagged {tag:?}")?;
                if let Some(file) = file {
                    write!(f, " in {}", file.display())?;
                }
                write!(f, "; the tags are: {}", available.join(", "))
            }
            HistError::NothingInCommon { a, b } => write!(
                f,
                "the two logs share no tag (A has {}; B has {}); pick one with --tag",
                a.join(", "),
                b.join(", ")
            ),
            HistError::Output { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for HistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HistError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// All the intervals of one tag in one or more logs, added together.
#[derive(Debug, Clone)]
pub struct Series {
    /// The tag, `None` for untagged intervals.
    pub tag: Option<String>,
    /// The sum of the intervals.
    pub hist: Histogram<u64>,
    /// How many intervals were added.
    pub intervals: usize,
    /// Earliest interval start, seconds since the epoch when the log says so (else
    /// seconds from the log's own origin).
    pub start_s: f64,
    /// Latest interval end, same origin as `start_s`.
    pub end_s: f64,
}

impl Series {
    /// The tag as shown to people.
    pub fn name(&self) -> &str {
        self.tag.as_deref().unwrap_or(UNTAGGED)
    }

    fn add(&mut self, other: &Series) -> Result<(), String> {
        self.hist.add(&other.hist).map_err(|e| format!("{e:?}"))?;
        self.intervals += other.intervals;
        self.start_s = self.start_s.min(other.start_s);
        self.end_s = self.end_s.max(other.end_s);
        Ok(())
    }
}

/// One log, its intervals merged per tag (in the order tags first appear).
#[derive(Debug, Clone)]
pub struct Log {
    pub path: PathBuf,
    pub series: Vec<Series>,
}

impl Log {
    /// The tags, as shown to people.
    pub fn tags(&self) -> Vec<String> {
        self.series.iter().map(|s| s.name().to_owned()).collect()
    }

    /// The series named `tag` (`(untagged)` names the untagged one).
    pub fn get(&self, tag: &str) -> Option<&Series> {
        self.series.iter().find(|s| s.name() == tag)
    }

    /// Keeps only `tag`, or fails listing the tags there are.
    pub fn only(mut self, tag: Option<&str>) -> Result<Log, HistError> {
        if let Some(tag) = tag {
            let available = self.tags();
            self.series.retain(|s| s.name() == tag);
            if self.series.is_empty() {
                return Err(HistError::NoSuchTag {
                    tag: tag.to_owned(),
                    file: Some(self.path),
                    available,
                });
            }
        }
        Ok(self)
    }

    /// The file name without its folder, for labels.
    pub fn label(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }
}

/// Reads and merges one log file.
pub fn read_log(path: &Path) -> Result<Log, HistError> {
    let bytes = std::fs::read(path).map_err(|source| HistError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_log(path, &bytes)
}

/// Reads several logs, keeping only `tag` when given; fails when no log has it.
pub fn read_logs(paths: &[PathBuf], tag: Option<&str>) -> Result<Vec<Log>, HistError> {
    let logs = paths
        .iter()
        .map(|p| read_log(p))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(tag) = tag else { return Ok(logs) };
    if !logs.iter().any(|l| l.get(tag).is_some()) {
        let mut available: Vec<String> = Vec::new();
        for t in logs.iter().flat_map(|l| l.tags()) {
            if !available.contains(&t) {
                available.push(t);
            }
        }
        return Err(HistError::NoSuchTag {
            tag: tag.to_owned(),
            file: None,
            available,
        });
    }
    Ok(logs
        .into_iter()
        .map(|mut l| {
            l.series.retain(|s| s.name() == tag);
            l
        })
        .filter(|l| !l.series.is_empty())
        .collect())
}

/// Parses the bytes of one log (`path` only names it in errors).
pub fn parse_log(path: &Path, bytes: &[u8]) -> Result<Log, HistError> {
    // The parser needs every line, the last one included, to end in '\n'.
    let owned;
    let bytes = if bytes.last().is_some_and(|&b| b != b'\n') {
        owned = [bytes, b"\n"].concat();
        &owned[..]
    } else {
        bytes
    };
    // Line numbers for errors, counted incrementally (entries come in file order).
    let (mut counted_to, mut lines_before) = (0usize, 0usize);
    let mut line_of = |offset: usize| {
        let offset = offset.min(bytes.len());
        if offset >= counted_to {
            lines_before += bytes[counted_to..offset]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            counted_to = offset;
        }
        lines_before + 1
    };

    let mut series: Vec<Series> = Vec::new();
    let mut start_time: Option<f64> = None;
    let mut base_time: Option<f64> = None;
    let mut deserializer = Deserializer::new();
    let mut raw = Vec::new();
    for entry in IntervalLogIterator::new(bytes) {
        let entry = match entry {
            Ok(e) => e,
            Err(hdrhistogram::serialization::interval_log::LogIteratorError::ParseError {
                offset,
            }) => {
                let rest = &bytes[offset.min(bytes.len())..];
                let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
                let mut text = String::from_utf8_lossy(&rest[..end.min(80)]).into_owned();
                if end > 80 {
                    text.push('…');
                }
                return Err(HistError::NotALog {
                    path: path.to_owned(),
                    line: line_of(offset),
                    text,
                });
            }
        };
        match entry {
            LogEntry::StartTime(d) => start_time = Some(d.as_secs_f64()),
            LogEntry::BaseTime(d) => base_time = Some(d.as_secs_f64()),
            LogEntry::Interval(ilh) => {
                let encoded = ilh.encoded_histogram();
                // The encoded text borrows from `bytes`: its address gives its line.
                let line =
                    line_of((encoded.as_ptr() as usize).wrapping_sub(bytes.as_ptr() as usize));
                raw.clear();
                base64::engine::general_purpose::STANDARD
                    .decode_vec(encoded.trim(), &mut raw)
                    .map_err(|e| HistError::Base64 {
                        path: path.to_owned(),
                        line,
                        reason: e.to_string(),
                    })?;
                let hist: Histogram<u64> =
                    deserializer
                        .deserialize(&mut &raw[..])
                        .map_err(|e| HistError::Histogram {
                            path: path.to_owned(),
                            line,
                            reason: e.to_string(),
                        })?;
                let ts = ilh.start_timestamp().as_secs_f64();
                let origin = match (base_time, start_time) {
                    (Some(b), _) => b,
                    (None, Some(s)) if ts < s - YEAR_S => s,
                    _ => 0.0,
                };
                let start_s = origin + ts;
                let one = Series {
                    tag: ilh.tag().map(|t| t.as_str().to_owned()),
                    intervals: 1,
                    start_s,
                    end_s: start_s + ilh.duration().as_secs_f64(),
                    hist,
                };
                match series.iter_mut().find(|s| s.tag == one.tag) {
                    Some(s) => s.add(&one).map_err(|reason| HistError::Merge {
                        path: path.to_owned(),
                        line,
                        reason,
                    })?,
                    None => series.push(with_auto_resize(one)),
                }
            }
        }
    }
    if series.is_empty() {
        return Err(HistError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(Log {
        path: path.to_owned(),
        series,
    })
}

/// A copy of the series whose histogram grows to take any value added later (the
/// first interval's range may not cover the next ones').
fn with_auto_resize(mut s: Series) -> Series {
    if let Ok(mut h) = Histogram::<u64>::new(s.hist.sigfig())
        && h.add(&s.hist).is_ok()
    {
        h.auto(true);
        s.hist = h;
    }
    s
}

/// Merges the series of several logs per tag (in the order tags first appear).
pub fn merge(logs: &[Log]) -> Result<Vec<Series>, HistError> {
    let mut out: Vec<Series> = Vec::new();
    for log in logs {
        for s in &log.series {
            match out.iter_mut().find(|o| o.tag == s.tag) {
                Some(o) => o.add(s).map_err(|reason| HistError::Merge {
                    path: log.path.clone(),
                    line: 0,
                    reason,
                })?,
                None => out.push(s.clone()),
            }
        }
    }
    Ok(out)
}

/// Writes `series` as an interval log, one interval per tag spanning all it merged.
pub fn write_log<W: Write>(out: &mut W, series: &[Series], comment: &str) -> io::Result<()> {
    let origin = series
        .iter()
        .map(|s| s.start_s)
        .fold(f64::INFINITY, f64::min);
    let origin = if origin.is_finite() && origin > 0.0 {
        origin
    } else {
        0.0
    };
    let origin_time = UNIX_EPOCH + Duration::from_secs_f64(origin);
    let mut serializer = V2DeflateSerializer::new();
    let mut builder = IntervalLogWriterBuilder::new();
    for line in comment.lines() {
        builder.add_comment(line);
    }
    builder
        .with_start_time(origin_time)
        .with_base_time(origin_time);
    let mut writer = builder.begin_log_with(out, &mut serializer)?;
    for s in series {
        let tag = match &s.tag {
            Some(t) => Some(Tag::new(t).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("bad tag {t:?}"))
            })?),
            None => None,
        };
        let start = Duration::from_secs_f64((s.start_s - origin).max(0.0));
        let duration = Duration::from_secs_f64((s.end_s - s.start_s).max(0.0));
        writer
            .write_histogram(&s.hist, start, duration, tag)
            .map_err(|e| io::Error::other(e.to_string()))?;
    }
    Ok(())
}

/// Writes `series` as an interval log to the file `path`.
pub fn write_log_file(path: &Path, series: &[Series], comment: &str) -> Result<(), HistError> {
    let io_err = |source| HistError::Io {
        path: path.to_owned(),
        source,
    };
    let mut buf = Vec::new();
    write_log(&mut buf, series, comment).map_err(io_err)?;
    std::fs::write(path, buf).map_err(io_err)
}

/// The figures of one histogram that `print` and `compare` show, in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
    pub mean: f64,
}

/// The rows of a summary: name and value as a float (count included).
pub const FIELDS: [&str; 9] = [
    "count", "min", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean",
];

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary {
                count: 0,
                min: 0,
                p50: 0,
                p90: 0,
                p99: 0,
                p999: 0,
                p9999: 0,
                max: 0,
                mean: 0.0,
            };
        }
        Summary {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            mean: h.mean(),
        }
    }

    /// The values in [`FIELDS`] order.
    pub fn values(&self) -> [f64; 9] {
        [
            self.count as f64,
            self.min as f64,
            self.p50 as f64,
            self.p90 as f64,
            self.p99 as f64,
            self.p999 as f64,
            self.p9999 as f64,
            self.max as f64,
            self.mean,
        ]
    }
}

/// `b / a`, or `None` when `a` is 0 (no meaningful ratio).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    if a == 0.0 { None } else { Some(b / a) }
}

/// The cells of one series in [`FIELDS`] order, then the number of intervals; an empty
/// histogram shows `-` for everything but its count.
pub fn summary_cells(s: &Series) -> Vec<String> {
    let sum = Summary::of(&s.hist);
    let mut cells: Vec<String> = FIELDS
        .iter()
        .zip(sum.values())
        .map(|(f, v)| {
            if sum.count == 0 && *f != "count" {
                "-".to_owned()
            } else {
                fmt_value(f, v)
            }
        })
        .collect();
    cells.push(s.intervals.to_string());
    cells
}

fn fmt_value(field: &str, v: f64) -> String {
    if field == "mean" {
        format!("{v:.1}")
    } else {
        format!("{}", v as u64)
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{r:.2}x"),
        None => "-".to_owned(),
    }
}

/// `print`: one table per log, one row per tag.
pub fn print_table(log: &Log) -> String {
    let mut header = vec!["tag".to_owned()];
    header.extend(FIELDS.iter().map(|f| f.to_string()));
    header.push("intervals".to_owned());
    let rows: Vec<Vec<String>> = log
        .series
        .iter()
        .map(|s| {
            let mut row = vec![s.name().to_owned()];
            row.extend(summary_cells(s));
            row
        })
        .collect();
    format!(
        "{} — latency in {UNIT}, all intervals of each tag merged\n{}",
        log.path.display(),
        table(&header, &rows, true)
    )
}

/// The pairs of series `compare` puts side by side: the tags both logs have (in A's
/// order), or, when each has exactly one and they differ, those two.
pub fn pairs<'a>(a: &'a Log, b: &'a Log) -> Result<Vec<(&'a Series, &'a Series)>, HistError> {
    let common: Vec<_> = a
        .series
        .iter()
        .filter_map(|sa| {
            b.series
                .iter()
                .find(|sb| sb.tag == sa.tag)
                .map(|sb| (sa, sb))
        })
        .collect();
    if !common.is_empty() {
        return Ok(common);
    }
    if a.series.len() == 1 && b.series.len() == 1 {
        return Ok(vec![(&a.series[0], &b.series[0])]);
    }
    Err(HistError::NothingInCommon {
        a: a.tags(),
        b: b.tags(),
    })
}

/// `compare`: per shared tag, A and B side by side with B/A.
pub fn compare_table(a: &Log, b: &Log) -> Result<String, HistError> {
    let mut out = format!(
        "A = {}\nB = {}\nlatency in {UNIT}; ratio = B/A (below 1: B is lower)\n",
        a.path.display(),
        b.path.display()
    );
    for (sa, sb) in pairs(a, b)? {
        let title = if sa.tag == sb.tag {
            sa.name().to_owned()
        } else {
            format!("{} (A) vs {} (B)", sa.name(), sb.name())
        };
        let (va, vb) = (
            Summary::of(&sa.hist).values(),
            Summary::of(&sb.hist).values(),
        );
        let header = vec![title, "A".to_owned(), "B".to_owned(), "B/A".to_owned()];
        let rows: Vec<Vec<String>> = FIELDS
            .iter()
            .enumerate()
            .map(|(i, f)| {
                vec![
                    f.to_string(),
                    fmt_value(f, va[i]),
                    fmt_value(f, vb[i]),
                    fmt_ratio(ratio(va[i], vb[i])),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&header, &rows, true));
    }
    Ok(out)
}

/// Now, for the comment of a merged log.
pub fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(values: &[(Option<&str>, &[u64])]) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut ser = V2DeflateSerializer::new();
        let mut w = IntervalLogWriterBuilder::new()
            .with_base_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
            .begin_log_with(&mut buf, &mut ser)
            .unwrap();
        for (i, (tag, vals)) in values.iter().enumerate() {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            for &v in *vals {
                h.record(v).unwrap();
            }
            w.write_histogram(
                &h,
                Duration::from_secs(i as u64),
                Duration::from_secs(1),
                tag.map(|t| Tag::new(t).unwrap()),
            )
            .unwrap();
        }
        buf
    }

    #[test]
    fn intervals_of_one_tag_add_up() {
        let bytes = log_with(&[
            (Some("a"), &[10, 20]),
            (Some("b"), &[5]),
            (Some("a"), &[30]),
        ]);
        let log = parse_log(Path::new("x"), &bytes).unwrap();
        assert_eq!(log.tags(), ["a", "b"]);
        let a = log.get("a").unwrap();
        assert_eq!((a.hist.len(), a.intervals), (3, 2));
        assert_eq!(a.hist.max(), 30);
        assert_eq!(a.start_s, 1_700_000_000.0);
        assert_eq!(a.end_s, 1_700_000_003.0);
    }

    #[test]
    fn untagged_intervals_are_one_series() {
        let bytes = log_with(&[(None, &[1]), (None, &[2])]);
        let log = parse_log(Path::new("x"), &bytes).unwrap();
        assert_eq!(log.tags(), [UNTAGGED]);
        assert_eq!(log.series[0].hist.len(), 2);
    }

    #[test]
    fn missing_final_newline_is_accepted() {
        let mut bytes = log_with(&[(Some("a"), &[7])]);
        assert_eq!(bytes.pop(), Some(b'\n'));
        assert_eq!(
            parse_log(Path::new("x"), &bytes).unwrap().series[0]
                .hist
                .len(),
            1
        );
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(100.0, 150.0), Some(1.5));
        assert_eq!(ratio(0.0, 5.0), None);
        assert_eq!(fmt_ratio(ratio(4.0, 1.0)), "0.25x");
        assert_eq!(fmt_ratio(None), "-");
    }

    #[test]
    fn errors_name_the_line() {
        let mut bytes = log_with(&[(Some("a"), &[7])]);
        bytes.extend_from_slice(b"hello world\n");
        let e = parse_log(Path::new("f.hlog"), &bytes).unwrap_err();
        assert!(matches!(e, HistError::NotALog { line: 3, .. }), "{e}");
        assert!(
            e.to_string().starts_with("f.hlog:3: not an HdrHistogram"),
            "{e}"
        );
    }

    #[test]
    fn table_aligns() {
        let header = ["tag".into(), "n".into()];
        let rows = [
            vec!["long-tag".into(), "1".into()],
            vec!["x".into(), "1000".into()],
        ];
        let t = table(&header, &rows, true);
        assert_eq!(t, "tag          n\nlong-tag     1\nx         1000\n");
        let t = table(&header, &rows, false);
        assert_eq!(t, "tag       n\nlong-tag  1\nx         1000\n");
    }
}
