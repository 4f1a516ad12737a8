//! The host settings `tuning.md` recommends for a million concurrent MQTT connections
//! (1,000,000 loopback client/server pairs on a 24 GiB host), how to read, judge and
//! apply them.
//!
//! A setting is a `/proc/sys` file holding one integer, a triple (`tcp_mem`,
//! `tcp_rmem`, `tcp_wmem`) or a range (`ip_local_port_range`), plus the process's
//! `RLIMIT_NOFILE`. Each element of a recommendation says which way it may deviate:
//! at least the value (else LOW), at most the value (else HIGH). A port range is OK
//! when it covers 1024–65535 and does not reach below 1024.
//!
//! `apply` only moves what is not OK, and only as far as the recommendation (a larger
//! value where "at least" is asked stays), so running it twice changes nothing.

pub mod sys;

use std::fmt;

use sys::ProcSys;

/// How a setting's file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One integer.
    Int,
    /// Three integers: min, default/pressure, max.
    Triple,
    /// Two integers: first and last port.
    Range,
}

impl Shape {
    /// How many values the file holds.
    pub fn count(self) -> usize {
        match self {
            Shape::Int => 1,
            Shape::Triple => 3,
            Shape::Range => 2,
        }
    }
}

/// Which way one element may deviate from its recommended value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The recommended value or more.
    AtLeast,
    /// The recommended value or less.
    AtMost,
}

/// One sysctl and its recommendation.
#[derive(Debug)]
pub struct Spec {
    /// Dotted name, `net.ipv4.tcp_mem`.
    pub name: &'static str,
    pub shape: Shape,
    pub recommended: &'static [u64],
    /// Per element (unused for ranges).
    pub want: &'static [Want],
    /// Unit of the values, for people.
    pub unit: &'static str,
    /// Why, in one line.
    pub reason: &'static str,
    /// What its absence means, when it may be absent.
    pub when_absent: Option<&'static str>,
}

use Want::{AtLeast, AtMost};

/// The open-file limit `tuning.md` recommends (`LimitNOFILE=` in a systemd unit).
pub const RECOMMENDED_NOFILE: u64 = 2_000_000;

/// The connection count every recommendation is sized for.
pub const TARGET_CONNECTIONS: u64 = 1_000_000;

/// Every sysctl `ringmq-tune` checks, in the order it applies them (`fs.nr_open`
/// before the open-file limit it caps).
pub static SPECS: &[Spec] = &[
    Spec {
        name: "fs.nr_open",
        shape: Shape::Int,
        recommended: &[2_097_152],
        want: &[AtLeast],
        unit: "files",
        reason: "caps RLIMIT_NOFILE: must exceed LimitNOFILE=2000000",
        when_absent: None,
    },
    Spec {
        name: "fs.file-max",
        shape: Shape::Int,
        recommended: &[4_194_304],
        want: &[AtLeast],
        unit: "files",
        reason: "system-wide open files: a million loopback pairs are 2 M sockets (direct descriptors are files too)",
        when_absent: None,
    },
    Spec {
        name: "net.core.somaxconn",
        shape: Shape::Int,
        recommended: &[4096],
        want: &[AtLeast],
        unit: "connections",
        reason: "caps each listener's accept queue; ringmq asks 1024 per shard listener",
        when_absent: None,
    },
    Spec {
        name: "net.ipv4.tcp_max_syn_backlog",
        shape: Shape::Int,
        recommended: &[16_384],
        want: &[AtLeast],
        unit: "half-open connections",
        reason: "SYN queue during connect storms when SYN cookies are off (dropped SYNs retry after 1 s)",
        when_absent: None,
    },
    Spec {
        name: "net.ipv4.ip_local_port_range",
        shape: Shape::Range,
        recommended: &[1024, 65_535],
        want: &[],
        unit: "ports",
        reason: "ephemeral ports per source address for the client side; 64,512 × 59 source addresses ≫ 1 M",
        when_absent: None,
    },
    Spec {
        name: "net.ipv4.tcp_mem",
        shape: Shape::Triple,
        recommended: &[786_432, 1_048_576, 1_572_864],
        want: &[AtLeast, AtLeast, AtLeast],
        unit: "pages (4 KiB)",
        reason: "all TCP buffer memory: 3/4/6 GiB lets a million sockets each hold a page of queued data",
        when_absent: None,
    },
    Spec {
        name: "net.ipv4.tcp_rmem",
        shape: Shape::Triple,
        recommended: &[4096, 16_384, 4_194_304],
        want: &[AtLeast, AtMost, AtMost],
        unit: "bytes",
        reason: "per-socket receive buffer: small default so a million slow readers cannot exhaust tcp_mem",
        when_absent: None,
    },
    Spec {
        name: "net.ipv4.tcp_wmem",
        shape: Shape::Triple,
        recommended: &[4096, 16_384, 4_194_304],
        want: &[AtLeast, AtMost, AtMost],
        unit: "bytes",
        reason: "per-socket send buffer: small default so back-pressure reaches ringmq's counted queues early",
        when_absent: None,
    },
    Spec {
        name: "net.core.netdev_max_backlog",
        shape: Shape::Int,
        recommended: &[65_536],
        want: &[AtLeast],
        unit: "packets per CPU",
        reason: "loopback delivers through this per-CPU queue; a batched fan-out overflows 1000 (drops, 200 ms+ retransmits)",
        when_absent: None,
    },
    Spec {
        name: "net.ipv4.tcp_tw_reuse",
        shape: Shape::Int,
        recommended: &[1],
        want: &[AtLeast],
        unit: "0 off, 1 on, 2 loopback only",
        reason: "lets reconnect storms reuse TIME_WAIT ports on the client side (2 covers loopback)",
        when_absent: None,
    },
    Spec {
        name: "net.netfilter.nf_conntrack_max",
        shape: Shape::Int,
        recommended: &[2_097_152],
        want: &[AtLeast],
        unit: "tracked connections",
        reason: "when conntrack is loaded every connection takes an entry; a full table drops new SYNs",
        when_absent: Some("conntrack is not loaded: nothing to do"),
    },
    Spec {
        name: "vm.max_map_count",
        shape: Shape::Int,
        recommended: &[262_144],
        want: &[AtLeast],
        unit: "mappings per process",
        reason: "rings, buffer rings, stacks and allocator arenas of 60+ shards in one process; cheap headroom",
        when_absent: None,
    },
];

/// The spec named `name`.
pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// Verdict on one setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Low,
    High,
    Absent,
    /// The value could not be read or parsed.
    Error,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Low => "LOW",
            Status::High => "HIGH",
            Status::Absent => "absent",
            Status::Error => "ERROR",
        })
    }
}

/// Parses a setting's text: whitespace-separated unsigned integers, exactly as many as
/// its shape has.
pub fn parse(shape: Shape, text: &str) -> Result<Vec<u64>, String> {
    let values = text
        .split_whitespace()
        .map(|w| {
            w.parse::<u64>()
                .map_err(|_| format!("{w:?} is not an unsigned integer"))
        })
        .collect::<Result<Vec<u64>, String>>()?;
    if values.len() != shape.count() {
        return Err(format!(
            "expected {} value(s), found {} in {:?}",
            shape.count(),
            values.len(),
            text.trim()
        ));
    }
    if shape == Shape::Range && values[0] > values[1] {
        return Err(format!("range {} {} runs backwards", values[0], values[1]));
    }
    Ok(values)
}

/// The text written to the setting's file (tab-separated, as the kernel prints it).
pub fn format_for_kernel(values: &[u64]) -> String {
    values
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("\t")
}

/// The values as shown to people.
pub fn format_values(values: &[u64]) -> String {
    values
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The recommendation as shown to people: `≥ 2097152`, `≥4096 ≤16384 ≤4194304`,
/// `1024-65535`.
pub fn format_recommended(spec: &Spec) -> String {
    match spec.shape {
        Shape::Range => format!("{}-{}", spec.recommended[0], spec.recommended[1]),
        Shape::Int => format!("{}{}", sign(spec.want[0]), spec.recommended[0]),
        Shape::Triple => spec
            .recommended
            .iter()
            .zip(spec.want)
            .map(|(v, w)| format!("{}{v}", sign(*w)))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn sign(w: Want) -> &'static str {
    match w {
        AtLeast => "≥",
        AtMost => "≤",
    }
}

/// Judges `current` against the spec: LOW when any "at least" element is below, or a
/// port range is narrower than recommended; HIGH when any "at most" element is above,
/// or a port range reaches below its recommended start (privileged ports). LOW wins.
pub fn judge(spec: &Spec, current: &[u64]) -> Status {
    let rec = spec.recommended;
    if spec.shape == Shape::Range {
        let (lo, hi) = (current[0], current[1]);
        return if lo > rec[0] || hi < rec[1] {
            Status::Low
        } else if lo < rec[0] {
            Status::High
        } else {
            Status::Ok
        };
    }
    let mut status = Status::Ok;
    for ((c, r), w) in current.iter().zip(rec).zip(spec.want) {
        match w {
            AtLeast if c < r => return Status::Low,
            AtMost if c > r => status = Status::High,
            _ => {}
        }
    }
    status
}

/// What `apply` writes: each element moved just enough to satisfy the recommendation
/// (already-satisfying elements kept), a triple kept non-decreasing, a range widened
/// to the recommended one.
pub fn target(spec: &Spec, current: &[u64]) -> Vec<u64> {
    let rec = spec.recommended;
    if spec.shape == Shape::Range {
        return vec![rec[0], current[1].max(rec[1])];
    }
    let mut t: Vec<u64> = current
        .iter()
        .zip(rec)
        .zip(spec.want)
        .map(|((&c, &r), w)| match w {
            AtLeast => c.max(r),
            AtMost => c.min(r),
        })
        .collect();
    for i in 1..t.len() {
        t[i] = t[i].max(t[i - 1]);
    }
    t
}

/// One line of `check`.
#[derive(Debug, Clone)]
pub struct Row {
    /// Setting name (`net.ipv4.tcp_mem`, `RLIMIT_NOFILE (hard)`).
    pub name: String,
    /// Where it was read.
    pub source: String,
    /// The current value as shown (None when absent or unreadable).
    pub current: Option<String>,
    pub recommended: String,
    pub status: Status,
    /// Why it matters, or why it could not be read, or what to do instead.
    pub note: String,
}

/// Reads and judges one sysctl.
pub fn check_spec(proc: &ProcSys, spec: &Spec) -> Row {
    let mut row = Row {
        name: spec.name.to_owned(),
        source: proc.path(spec.name).display().to_string(),
        current: None,
        recommended: format_recommended(spec),
        status: Status::Error,
        note: spec.reason.to_owned(),
    };
    match proc.read(spec.name) {
        Ok(None) => {
            row.status = Status::Absent;
            row.note = spec.when_absent.unwrap_or("not in this kernel").to_owned();
        }
        Err(e) => row.note = format!("cannot read: {e}"),
        Ok(Some(text)) => match parse(spec.shape, &text) {
            Err(e) => row.note = format!("cannot parse: {e}"),
            Ok(values) => {
                row.status = judge(spec, &values);
                row.current = Some(format_values(&values));
            }
        },
    }
    row
}

/// How many fixed-file tables (lanes, over all of ringmq's shards) hold `connections` when
/// the hard open-file limit is `hard`: each table gets `min(hard − 64, 65536)` slots
/// (ringmq's default `--files-per-shard`) and takes new connections until 1280 short of
/// full (listen backlog 1024 + 256), so it serves `table − 1280` connections.
pub fn lanes_needed(hard: u64, connections: u64) -> Option<u64> {
    let table = hard.saturating_sub(64).min(65_536);
    let per_shard = table.checked_sub(1280).filter(|&n| n > 0)?;
    Some(connections.div_ceil(per_shard))
}

/// The two `RLIMIT_NOFILE` rows, from the limits and whether the hard one can be raised
/// (`CAP_SYS_RESOURCE`; `None` when unknown).
pub fn nofile_rows(soft: u64, hard: u64, can_raise: Option<bool>) -> [Row; 2] {
    let hard_status = if hard >= RECOMMENDED_NOFILE {
        Status::Ok
    } else {
        Status::Low
    };
    let mut hard_note = String::from(
        "each io_uring fixed-file table holds at most RLIMIT_NOFILE sockets; LimitNOFILE=2000000",
    );
    if hard_status == Status::Low {
        let lanes = lanes_needed(hard, TARGET_CONNECTIONS)
            .map_or("more lanes than a shard may open".to_owned(), |n| {
                format!("{n} lanes (rings) over its shards (--lanes-per-shard bounds them)")
            });
        let why = match can_raise {
            Some(false) => "cannot be raised here (no CAP_SYS_RESOURCE)",
            Some(true) => "can be raised (LimitNOFILE= in the unit, prlimit, or apply --pid)",
            None => "raising it needs CAP_SYS_RESOURCE",
        };
        hard_note = format!("{why}; at this limit ringmq opens {lanes} for a million connections");
    }
    let soft_goal = hard.min(RECOMMENDED_NOFILE);
    let soft_status = if soft >= soft_goal {
        Status::Ok
    } else {
        Status::Low
    };
    let soft_note = if soft_status == Status::Ok {
        "ringmq raises its soft limit to the hard one; ringmq-swarm uses the soft limit as is"
            .to_owned()
    } else {
        format!(
            "ringmq raises it itself, but ringmq-swarm sizes its rings by it: `ulimit -n {soft_goal}`"
        )
    };
    let source = "getrlimit(RLIMIT_NOFILE)".to_owned();
    [
        Row {
            name: "RLIMIT_NOFILE (soft)".into(),
            source: source.clone(),
            current: Some(show_limit(soft)),
            recommended: format!("≥{soft_goal} (= hard, up to {RECOMMENDED_NOFILE})"),
            status: soft_status,
            note: soft_note,
        },
        Row {
            name: "RLIMIT_NOFILE (hard)".into(),
            source,
            current: Some(show_limit(hard)),
            recommended: format!("≥{RECOMMENDED_NOFILE}"),
            status: hard_status,
            note: hard_note,
        },
    ]
}

fn show_limit(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// Every row of `check` on this host.
pub fn check(proc: &ProcSys) -> Vec<Row> {
    let mut rows: Vec<Row> = SPECS.iter().map(|s| check_spec(proc, s)).collect();
    match sys::nofile() {
        Ok((soft, hard)) => rows.extend(nofile_rows(
            soft,
            hard,
            sys::has_capability(sys::CAP_SYS_RESOURCE),
        )),
        Err(e) => rows.push(Row {
            name: "RLIMIT_NOFILE".into(),
            source: "getrlimit(RLIMIT_NOFILE)".into(),
            current: None,
            recommended: format!("≥{RECOMMENDED_NOFILE}"),
            status: Status::Error,
            note: format!("getrlimit failed: {e}"),
        }),
    }
    rows
}

/// `check`'s table: one line per setting, then the reasons for what is not OK (all
/// reasons with `verbose`).
pub fn format_check(rows: &[Row], verbose: bool) -> String {
    let header = ["setting", "current", "recommended", "status"].map(String::from);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.current.clone().unwrap_or_else(|| "-".into()),
                r.recommended.clone(),
                r.status.to_string(),
            ]
        })
        .collect();
    let mut out = crate::table(&header, &cells, false);
    let notes: Vec<&Row> = rows
        .iter()
        .filter(|r| verbose || r.status != Status::Ok)
        .collect();
    if !notes.is_empty() {
        out.push('\n');
        for r in notes {
            out.push_str(&format!("{} [{}]: {}\n", r.name, r.status, r.note));
        }
    }
    let bad = rows
        .iter()
        .filter(|r| matches!(r.status, Status::Low | Status::High))
        .count();
    out.push_str(&format!(
        "\n{bad} of {} setting(s) off the recommendation for {TARGET_CONNECTIONS} connections \
         (see tuning.md; `ringmq-tune apply` sets them)\n",
        rows.len()
    ));
    out
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `check --json`: `{"target_connections":…,"ok":bool,"settings":[{…}]}`; `current`
/// is null when absent or unreadable.
pub fn format_check_json(rows: &[Row]) -> String {
    let all_ok = rows
        .iter()
        .all(|r| matches!(r.status, Status::Ok | Status::Absent));
    let items: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"name\":{},\"source\":{},\"current\":{},\"recommended\":{},\"status\":{},\"note\":{}}}",
                json_str(&r.name),
                json_str(&r.source),
                r.current.as_deref().map_or("null".to_owned(), json_str),
                json_str(&r.recommended),
                json_str(&r.status.to_string()),
                json_str(&r.note),
            )
        })
        .collect();
    format!(
        "{{\"target_connections\":{TARGET_CONNECTIONS},\"ok\":{all_ok},\"settings\":[\n  {}\n]}}\n",
        items.join(",\n  ")
    )
}

/// What `apply` did (or would do) to one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already as recommended.
    Unchanged(String),
    /// Not on this host.
    Absent(String),
    /// Set (from, to, remark).
    Changed(String, String, String),
    /// `--dry-run`: would set (from, to, remark).
    WouldChange(String, String, String),
    /// Cannot be changed here, for a known reason (not an error of `apply`).
    NotPossible(String),
    /// Tried and failed.
    Failed(String),
}

/// One line of `apply`.
#[derive(Debug, Clone)]
pub struct Action {
    pub name: String,
    pub outcome: Outcome,
}

/// Applies one sysctl: reads, judges, writes the target when not OK, reads back.
pub fn apply_spec(proc: &ProcSys, spec: &Spec, dry_run: bool) -> Action {
    let name = spec.name.to_owned();
    let outcome = (|| {
        let text = match proc.read(spec.name) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Outcome::Absent(spec.when_absent.unwrap_or("not in this kernel").into());
            }
            Err(e) => return Outcome::Failed(format!("cannot read: {e}")),
        };
        let current = match parse(spec.shape, &text) {
            Ok(v) => v,
            Err(e) => return Outcome::Failed(format!("cannot parse: {e}")),
        };
        if judge(spec, &current) == Status::Ok {
            return Outcome::Unchanged(format_values(&current));
        }
        let want = target(spec, &current);
        let (from, to) = (format_values(&current), format_values(&want));
        if dry_run {
            return Outcome::WouldChange(from, to, String::new());
        }
        if let Err(e) = proc.write(spec.name, &format_for_kernel(&want)) {
            return Outcome::Failed(format!("cannot set {to}: {}", sys::explain_write_error(&e)));
        }
        match proc
            .read(spec.name)
            .ok()
            .flatten()
            .map(|t| parse(spec.shape, &t))
        {
            Some(Ok(now)) if now == want => Outcome::Changed(from, to, String::new()),
            Some(Ok(now)) => Outcome::Failed(format!(
                "wrote {to} but the kernel keeps {}",
                format_values(&now)
            )),
            _ => Outcome::Failed(format!("wrote {to} but cannot read it back")),
        }
    })();
    Action { name, outcome }
}

/// Applies the open-file limits to this process and, with `pid`, to that process too.
/// Limits are per process and inherited, so this only helps what `pid` starts next;
/// the lasting way is `LimitNOFILE=` in the unit file.
pub fn apply_nofile(proc: &ProcSys, dry_run: bool, pid: Option<i32>) -> Vec<Action> {
    let target_pid = pid.unwrap_or(0);
    let who = match pid {
        Some(p) => format!("process {p}"),
        None => "ringmq-tune's own process only (limits are inherited, not global: \
                 use --pid $$ for your shell, or LimitNOFILE= in the unit)"
            .to_owned(),
    };
    let (soft, hard) = match sys::nofile_of(target_pid) {
        Ok(l) => l,
        Err(e) => {
            return vec![Action {
                name: "RLIMIT_NOFILE".into(),
                outcome: Outcome::Failed(format!("cannot read the limits of {who}: {e}")),
            }];
        }
    };
    let mut actions = Vec::new();
    // Hard limit first: the soft one can only go up to it.
    let mut new_hard = hard;
    let hard_outcome = if hard >= RECOMMENDED_NOFILE {
        Outcome::Unchanged(show_limit(hard))
    } else {
        let nr_open = proc
            .read("fs.nr_open")
            .ok()
            .flatten()
            .and_then(|t| parse(Shape::Int, &t).ok())
            .map(|v| v[0]);
        let lanes = lanes_needed(hard, TARGET_CONNECTIONS).unwrap_or(0);
        let instead = format!(
            "ringmq still reaches {TARGET_CONNECTIONS} connections: its shards open {lanes} \
             lanes (rings with their own fixed-file tables) for them (see tuning.md)"
        );
        if sys::has_capability(sys::CAP_SYS_RESOURCE) == Some(false) {
            Outcome::NotPossible(format!(
                "hard limit {hard} cannot be raised: this process lacks CAP_SYS_RESOURCE; {instead}"
            ))
        } else if nr_open.is_some_and(|n| n < RECOMMENDED_NOFILE) && !dry_run {
            Outcome::NotPossible(format!(
                "hard limit {hard} cannot exceed fs.nr_open = {}; {instead}",
                nr_open.unwrap_or(0)
            ))
        } else if dry_run {
            Outcome::WouldChange(
                hard.to_string(),
                RECOMMENDED_NOFILE.to_string(),
                who.clone(),
            )
        } else {
            match sys::set_nofile(target_pid, soft.min(RECOMMENDED_NOFILE), RECOMMENDED_NOFILE) {
                Ok(()) => {
                    new_hard = RECOMMENDED_NOFILE;
                    Outcome::Changed(
                        hard.to_string(),
                        RECOMMENDED_NOFILE.to_string(),
                        who.clone(),
                    )
                }
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => Outcome::NotPossible(format!(
                    "hard limit {hard} cannot be raised ({e}): needs CAP_SYS_RESOURCE and \
                     fs.nr_open ≥ {RECOMMENDED_NOFILE}; {instead}"
                )),
                Err(e) => Outcome::Failed(format!("prlimit failed: {e}")),
            }
        }
    };
    actions.push(Action {
        name: "RLIMIT_NOFILE (hard)".into(),
        outcome: hard_outcome,
    });

    let goal = new_hard.min(RECOMMENDED_NOFILE);
    let soft_outcome = if soft >= goal {
        Outcome::Unchanged(show_limit(soft))
    } else if dry_run {
        Outcome::WouldChange(soft.to_string(), goal.to_string(), who.clone())
    } else {
        match sys::set_nofile(target_pid, goal, new_hard) {
            Ok(()) => Outcome::Changed(soft.to_string(), goal.to_string(), who),
            Err(e) => Outcome::Failed(format!("prlimit failed: {e}")),
        }
    };
    actions.push(Action {
        name: "RLIMIT_NOFILE (soft)".into(),
        outcome: soft_outcome,
    });
    actions
}

/// Everything `apply` does, sysctls first (`fs.nr_open` before the limit it caps).
pub fn apply(proc: &ProcSys, dry_run: bool, pid: Option<i32>) -> Vec<Action> {
    let mut actions: Vec<Action> = SPECS.iter().map(|s| apply_spec(proc, s, dry_run)).collect();
    actions.extend(apply_nofile(proc, dry_run, pid));
    actions
}

/// `apply`'s report, one line per setting, and a summary.
pub fn format_apply(actions: &[Action], dry_run: bool) -> String {
    let width = actions
        .iter()
        .map(|a| a.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for a in actions {
        let (verb, text) = match &a.outcome {
            Outcome::Unchanged(v) => ("ok", format!("{v} (unchanged)")),
            Outcome::Absent(why) => ("absent", why.clone()),
            Outcome::Changed(f, t, r) => ("changed", with_remark(format!("{f} → {t}"), r)),
            Outcome::WouldChange(f, t, r) => ("would set", with_remark(format!("{f} → {t}"), r)),
            Outcome::NotPossible(why) => ("CANNOT", why.clone()),
            Outcome::Failed(why) => ("FAILED", why.clone()),
        };
        let pad = width - a.name.chars().count();
        out.push_str(&format!(
            "{}{}  {verb:<9}  {text}\n",
            a.name,
            " ".repeat(pad)
        ));
    }
    let count = |f: fn(&Outcome) -> bool| actions.iter().filter(|a| f(&a.outcome)).count();
    let changed = count(|o| matches!(o, Outcome::Changed(..) | Outcome::WouldChange(..)));
    let cannot = count(|o| matches!(o, Outcome::NotPossible(_)));
    let failed = count(|o| matches!(o, Outcome::Failed(_)));
    out.push_str(&format!(
        "\n{changed} {}, {cannot} cannot be changed here, {failed} failed{}\n",
        if dry_run { "would change" } else { "changed" },
        if dry_run {
            " (dry run: nothing written)"
        } else {
            ""
        }
    ));
    if !dry_run && changed > 0 {
        out.push_str(
            "These last until reboot; `ringmq-tune conf > /etc/sysctl.d/90-ringmq.conf` keeps them.\n",
        );
    }
    out
}

fn with_remark(s: String, remark: &str) -> String {
    if remark.is_empty() {
        s
    } else {
        format!("{s} for {remark}")
    }
}

/// A sysctl.d file with the values `apply` would leave (the current value where it is
/// already OK, the recommended one where absent); settings that may be missing are
/// prefixed with `-` so that systemd-sysctl skips them.
pub fn sysctl_conf(proc: &ProcSys) -> String {
    let mut out = String::from(
        "# ringmq: a million concurrent MQTT connections (see tuning.md).\n\
         # Written by `ringmq-tune conf`; install as /etc/sysctl.d/90-ringmq.conf.\n",
    );
    for spec in SPECS {
        let values = proc
            .read(spec.name)
            .ok()
            .flatten()
            .and_then(|t| parse(spec.shape, &t).ok())
            .map_or_else(|| spec.recommended.to_vec(), |cur| target(spec, &cur));
        let dash = if spec.when_absent.is_some() { "-" } else { "" };
        out.push_str(&format!(
            "\n# {} ({})\n{dash}{} = {}\n",
            spec.reason,
            spec.unit,
            spec.name,
            format_values(&values)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_consistent() {
        for s in SPECS {
            assert_eq!(s.recommended.len(), s.shape.count(), "{}", s.name);
            if s.shape != Shape::Range {
                assert_eq!(s.want.len(), s.shape.count(), "{}", s.name);
            }
            // The recommendation itself is OK, and applying to it changes nothing.
            assert_eq!(judge(s, s.recommended), Status::Ok, "{}", s.name);
            assert_eq!(target(s, s.recommended), s.recommended, "{}", s.name);
        }
        assert!(spec("fs.nr_open").unwrap().recommended[0] >= RECOMMENDED_NOFILE);
    }
}
