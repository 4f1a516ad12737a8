//! The main thread of a run: starts the workers, moves the run through its phases, prints
//! progress, merges the per-second latency histograms as they arrive (and writes them to
//! the interval log), samples the broker's `/proc` entry, and turns what the workers hand
//! back into a [`RunReport`].
//!
//! Phases: **connect** (every client connects, and subscribes where it should; nobody
//! publishes until all are ready, so no subscriber misses the start of a sequence) →
//! **publish** (warm-up, then the measured window) → **drain** (publishers stop; wait
//! until deliveries stop arriving and QoS 1/2 acknowledgements are in, at most --drain)
//! → **stop** (DISCONNECT, close). `connect` measures the first phase; `idle` holds the
//! connections for --duration instead of publishing.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;

use crate::config::{Config, Scenario, Transport};
use crate::control::{Control, Counters, IntervalMsg, WORKER_DONE, new_histogram};
use crate::plan::Plan;
use crate::report::{
    BrokerFigures, ConnectFigures, CpuFigures, IntervalPoint, LatencyFigures, MessageFigures,
    RunReport, Sample,
};
use crate::seq::SeqCounters;
use crate::sys::{self, CpuTime, ProcSample, now_ns};
use crate::worker::{WorkerResult, WorkerSetup, run_worker};

const TICK: Duration = Duration::from_millis(20);
const NS: u64 = 1_000_000_000;
/// Drain ends once nothing was delivered for this long and no QoS 1/2 publish is
/// unacknowledged.
const QUIET_NS: u64 = 500_000_000;

/// Runs the configured scenario to its end.
pub fn run(cfg: Config) -> Result<RunReport, String> {
    let cfg = Arc::new(cfg);
    let plan = Arc::new(Plan::new(&cfg));
    let threads = cfg.threads;
    let run_id =
        (sys::now_ns() ^ cfg.seed.rotate_left(17) ^ u64::from(std::process::id())) as u32 | 1;
    let broker_before = match cfg.broker_pid {
        Some(pid) => Some(
            sys::sample_process(pid)
                .ok_or_else(|| format!("--broker-pid {pid}: cannot read /proc/{pid}"))?,
        ),
        None => None,
    };
    let cpu_start = sys::own_cpu();
    let start_ns = now_ns();
    let control = Arc::new(Control::new(threads, run_id, start_ns));
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(threads);
    for id in 0..threads {
        let clients: Vec<u32> = (0..plan.clients())
            .filter(|i| *i as usize % threads == id)
            .collect();
        let setup = WorkerSetup {
            id,
            cfg: Arc::clone(&cfg),
            plan: Arc::clone(&plan),
            control: Arc::clone(&control),
            clients,
            intervals: tx.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("swarm-{id}"))
            .spawn(move || run_worker(setup))
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        handles.push(handle);
    }
    drop(tx);

    let mut mon = Monitor::new(&cfg, rx, threads, start_ns)?;
    let mut r = Runner {
        cfg: &cfg,
        control: &control,
        handles: &handles,
        mon: &mut mon,
        start_ns,
    };
    let phases = r.phases(broker_before);
    control.stop();
    let mut results = Vec::with_capacity(threads);
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(res)) => results.push(res),
            Ok(Err(e)) => failure = Some(format!("worker failed: {e}")),
            Err(_) => failure = Some("worker panicked".to_string()),
        }
    }
    mon.finish()?;
    if let Some(f) = failure {
        return Err(f);
    }
    let phases = phases?;
    let cpu_end = sys::own_cpu();
    Ok(build_report(
        &cfg, &control, results, mon, phases, cpu_start, cpu_end,
    ))
}

/// What the phases measured, for the report.
struct Phases {
    /// Connect phase: from start to all ready (or to giving up).
    setup_ns: u64,
    all_ready: bool,
    /// When every client had its first CONNACK (connect scenario), from start.
    time_to_all_ns: Option<u64>,
    /// The window the headline figures cover (measured window, idle hold, connect phase).
    window_ns: u64,
    /// Offset of the measured window from the start (for plots).
    measure_offset_ns: u64,
    cpu_window: CpuTime,
    /// Messages published and received (duplicates included) inside the window, whatever
    /// their send time: the work the CPU figures are divided by.
    window_messages: u64,
    /// Unique deliveries received inside the window, whatever their send time.
    window_delivered: u64,
    broker_before: Option<ProcSample>,
    broker_window_start: Option<ProcSample>,
    broker_window_end: Option<ProcSample>,
    broker_peak_rss: u64,
    drain_ns: u64,
}

struct Runner<'a> {
    cfg: &'a Config,
    control: &'a Control,
    handles: &'a [JoinHandle<std::io::Result<WorkerResult>>],
    mon: &'a mut Monitor,
    start_ns: u64,
}

impl Runner<'_> {
    /// Sleeps one tick, merges intervals, samples; Err when a worker has ended early.
    fn tick(&mut self, phase: &str) -> Result<Counters, String> {
        std::thread::sleep(TICK);
        self.mon.poll()?;
        let totals = self.control.totals();
        self.mon.sample(&totals, phase, self.cfg);
        if self.handles.iter().any(|h| h.is_finished()) {
            return Err("a worker ended early (see the error above)".into());
        }
        Ok(totals)
    }

    fn broker(&self) -> Option<ProcSample> {
        self.cfg.broker_pid.and_then(sys::sample_process)
    }

    fn phases(&mut self, broker_before: Option<ProcSample>) -> Result<Phases, String> {
        let cfg = self.cfg;
        let clients = u64::from(cfg.clients());
        let mut peak = broker_before.map_or(0, |b| b.rss);
        // Connect phase.
        let cpu0 = sys::own_cpu();
        let broker0 = self.broker();
        let mut last_ready = 0;
        let mut last_progress = now_ns();
        let stall_ns = cfg.connect_timeout.as_nanos() as u64 * 2 + 5 * NS;
        let connect_limit = self.start_ns + cfg.duration.as_nanos() as u64;
        let (all_ready, time_to_all_ns) = loop {
            let t = self.tick("connect")?;
            let now = now_ns();
            if let Some(b) = self.broker() {
                peak = peak.max(b.rss);
            }
            if cfg.scenario == Scenario::Connect {
                if t.first_connacks >= clients {
                    let last = self
                        .control
                        .workers
                        .iter()
                        .map(|w| w.load().last_first_connack_ns)
                        .max()
                        .unwrap_or(now);
                    break (true, Some(last.saturating_sub(self.start_ns)));
                }
                if now >= connect_limit {
                    break (false, None);
                }
                continue;
            }
            if t.ready >= clients {
                break (true, None);
            }
            if t.ready != last_ready {
                last_ready = t.ready;
                last_progress = now;
            } else if now - last_progress > stall_ns {
                eprintln!(
                    "warning: only {} of {clients} clients ready after {:.1} s; going on",
                    t.ready,
                    (now - self.start_ns) as f64 / 1e9
                );
                break (false, None);
            }
        };
        let setup_end = now_ns();
        let setup_ns = setup_end - self.start_ns;
        let mut phases = Phases {
            setup_ns,
            all_ready,
            time_to_all_ns,
            window_ns: setup_ns,
            measure_offset_ns: 0,
            cpu_window: sys::own_cpu().since(&cpu0),
            window_messages: 0,
            window_delivered: 0,
            broker_before,
            broker_window_start: broker0,
            broker_window_end: self.broker(),
            broker_peak_rss: peak,
            drain_ns: 0,
        };
        match cfg.scenario {
            Scenario::Connect => {}
            Scenario::Idle => {
                let w0 = now_ns();
                let cpu0 = sys::own_cpu();
                phases.broker_window_start = self.broker();
                let end = w0 + cfg.duration.as_nanos() as u64;
                while now_ns() < end {
                    self.tick("idle")?;
                    if let Some(b) = self.broker() {
                        phases.broker_peak_rss = phases.broker_peak_rss.max(b.rss);
                    }
                }
                phases.broker_window_end = self.broker();
                phases.cpu_window = sys::own_cpu().since(&cpu0);
                phases.window_ns = now_ns() - w0;
                phases.measure_offset_ns = w0 - self.start_ns;
            }
            Scenario::Fanout | Scenario::Fanin | Scenario::Pairs => {
                let start = now_ns();
                let measure_start = start + cfg.warmup.as_nanos() as u64;
                let end = measure_start + cfg.duration.as_nanos() as u64;
                self.control.start_run(start, measure_start, end);
                self.mon.begin_measure(measure_start)?;
                while now_ns() < measure_start {
                    self.tick("warm-up")?;
                }
                let cpu0 = sys::own_cpu();
                let t0 = self.control.totals();
                phases.broker_window_start = self.broker();
                while now_ns() < end {
                    self.tick("publish")?;
                }
                phases.cpu_window = sys::own_cpu().since(&cpu0);
                let t1 = self.control.totals();
                phases.window_messages =
                    (t1.published + t1.received).saturating_sub(t0.published + t0.received);
                phases.window_delivered = t1.unique.saturating_sub(t0.unique);
                phases.broker_window_end = self.broker();
                phases.window_ns = cfg.duration.as_nanos() as u64;
                phases.measure_offset_ns = measure_start - self.start_ns;
                // Drain.
                let drain_end = end + cfg.drain.as_nanos() as u64;
                let mut last_received = u64::MAX;
                let mut quiet_since = now_ns();
                loop {
                    let t = self.tick("drain")?;
                    let now = now_ns();
                    if t.received != last_received {
                        last_received = t.received;
                        quiet_since = now;
                    }
                    if (now - quiet_since >= QUIET_NS && t.inflight == 0) || now >= drain_end {
                        break;
                    }
                }
                phases.drain_ns = now_ns() - end;
            }
        }
        Ok(phases)
    }
}

/// Gathers the per-second histograms from the workers, prints progress, keeps the time
/// series.
struct Monitor {
    rx: Receiver<IntervalMsg>,
    /// Per worker: every interval below this is in.
    watermarks: Vec<u64>,
    pending: BTreeMap<u64, Histogram<u64>>,
    total: Histogram<u64>,
    intervals: Vec<IntervalPoint>,
    log: Option<BufWriter<File>>,
    log_path: Option<std::path::PathBuf>,
    serializer: V2DeflateSerializer,
    measure_start_ns: Option<u64>,
    start_ns: u64,
    samples: Vec<Sample>,
    last_sample_ns: u64,
    last_totals: Counters,
    quiet: bool,
    clients: u64,
}

impl Monitor {
    fn new(
        cfg: &Config,
        rx: Receiver<IntervalMsg>,
        threads: usize,
        start_ns: u64,
    ) -> Result<Monitor, String> {
        let log = match &cfg.hist {
            Some(p) => Some(BufWriter::new(
                File::create(p).map_err(|e| format!("--hist {}: {e}", p.display()))?,
            )),
            None => None,
        };
        Ok(Monitor {
            rx,
            watermarks: vec![0; threads],
            pending: BTreeMap::new(),
            total: new_histogram(),
            intervals: Vec::new(),
            log,
            log_path: cfg.hist.clone(),
            serializer: V2DeflateSerializer::new(),
            measure_start_ns: None,
            start_ns,
            samples: Vec::new(),
            last_sample_ns: start_ns,
            last_totals: Counters::default(),
            quiet: cfg.quiet,
            clients: u64::from(cfg.clients()),
        })
    }

    fn log_err(&self, e: impl std::fmt::Display) -> String {
        let path = self.log_path.as_ref().map(|p| p.display().to_string());
        format!("--hist {}: {e}", path.unwrap_or_default())
    }

    /// The interval log's header: its base time is the start of the measured window.
    fn begin_measure(&mut self, measure_start_ns: u64) -> Result<(), String> {
        self.measure_start_ns = Some(measure_start_ns);
        let Some(log) = &mut self.log else {
            return Ok(());
        };
        let ahead = Duration::from_nanos(measure_start_ns.saturating_sub(now_ns()));
        let base = SystemTime::now() + ahead;
        let mut serializer = V2DeflateSerializer::new();
        let r = IntervalLogWriterBuilder::new()
            .add_comment("ringmq-swarm end-to-end latency, microseconds, one histogram a second")
            .with_start_time(base)
            .with_base_time(base)
            .begin_log_with(log, &mut serializer)
            .map(|_| ())
            .and_then(|()| {
                writeln!(
                    log,
                    "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
                )
            });
        r.map_err(|e| self.log_err(e))
    }

    /// Takes in what the workers sent; intervals every worker is past are final.
    fn poll(&mut self) -> Result<(), String> {
        while let Ok(msg) = self.rx.try_recv() {
            self.take(msg);
        }
        self.finalize()
    }

    fn take(&mut self, msg: IntervalMsg) {
        let w = &mut self.watermarks[msg.worker];
        if msg.index == WORKER_DONE {
            *w = WORKER_DONE;
            return;
        }
        *w = (*w).max(msg.index + 1);
        if let Some(h) = msg.hist {
            match self.pending.get_mut(&msg.index) {
                Some(p) => p.add(&h).expect("histograms of the same bounds"),
                None => {
                    self.pending.insert(msg.index, h);
                }
            }
        }
    }

    fn finalize(&mut self) -> Result<(), String> {
        let done_below = self.watermarks.iter().copied().min().unwrap_or(0);
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= done_below {
                break;
            }
            let (index, h) = entry.remove_entry();
            self.total.add(&h).expect("histograms of the same bounds");
            self.intervals.push(IntervalPoint {
                t_s: (self.measure_start_ns.unwrap_or(self.start_ns) - self.start_ns) as f64 / 1e9
                    + index as f64,
                count: h.len(),
                p50_us: h.value_at_quantile(0.5),
                p99_us: h.value_at_quantile(0.99),
                max_us: h.max(),
            });
            if let Some(log) = &mut self.log {
                let r = IntervalLogWriterBuilder::new()
                    .begin_log_with(log, &mut self.serializer)
                    .map_err(|e| e.to_string())
                    .and_then(|mut w| {
                        w.write_histogram(
                            &h,
                            Duration::from_secs(index),
                            Duration::from_secs(1),
                            None,
                        )
                        .map_err(|e| e.to_string())
                    });
                r.map_err(|e| self.log_err(e))?;
            }
        }
        Ok(())
    }

    fn sample(&mut self, t: &Counters, phase: &str, cfg: &Config) {
        let now = now_ns();
        if now - self.last_sample_ns < NS {
            return;
        }
        let dt = (now - self.last_sample_ns) as f64 / 1e9;
        let prev = self.last_totals;
        let s = Sample {
            t_s: (now - self.start_ns) as f64 / 1e9,
            phase: phase.to_string(),
            ready: t.ready,
            published_per_s: (t.published - prev.published) as f64 / dt,
            delivered_per_s: (t.unique - prev.unique) as f64 / dt,
            missing: t.missing,
            reconnects: t.reconnects,
        };
        if !self.quiet {
            let connect = if cfg.scenario == Scenario::Connect {
                format!(" connacks {}", t.first_connacks)
            } else {
                String::new()
            };
            eprintln!(
                "[{:6.1}s] {:<8} ready {}/{}{connect}  pub {:.0}/s  recv {:.0}/s  missing {}  dup {}  reconnects {}  failures {}",
                s.t_s,
                phase,
                t.ready,
                self.clients,
                s.published_per_s,
                s.delivered_per_s,
                t.missing,
                t.duplicates,
                t.reconnects,
                t.connect_failures + t.connack_refused + t.timeouts,
            );
        }
        self.samples.push(s);
        self.last_sample_ns = now;
        self.last_totals = *t;
    }

    fn finish(&mut self) -> Result<(), String> {
        while let Ok(msg) = self.rx.recv() {
            self.take(msg);
        }
        for w in &mut self.watermarks {
            *w = WORKER_DONE;
        }
        self.finalize()?;
        if let Some(log) = &mut self.log {
            log.flush().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

fn build_report(
    cfg: &Config,
    control: &Control,
    results: Vec<WorkerResult>,
    mon: Monitor,
    ph: Phases,
    cpu_start: CpuTime,
    cpu_end: CpuTime,
) -> RunReport {
    let mut counters = Counters::default();
    let mut seq = SeqCounters::default();
    let mut connect_hist = new_histogram();
    let mut errors: Vec<(String, u64)> = Vec::new();
    // Expected deliveries: every subscriber should get every message sent to its topic.
    let mut sent_to: HashMap<u32, Vec<(u32, u64)>> = HashMap::new();
    for r in &results {
        for &(topic, publisher, n) in &r.published {
            sent_to.entry(topic).or_default().push((publisher, n));
        }
    }
    let mut expected = 0u64;
    let mut tail_missing = 0u64;
    for r in &results {
        counters.add(&r.counters);
        seq.add(&r.seq);
        connect_hist
            .add(&r.connect_hist)
            .expect("histograms of the same bounds");
        for (e, n) in &r.errors {
            match errors.iter_mut().find(|(t, _)| t == e) {
                Some(x) => x.1 += n,
                None => errors.push((e.clone(), *n)),
            }
        }
        for (topic, table) in &r.subscribers {
            for &(publisher, n) in sent_to.get(topic).map_or(&[][..], Vec::as_slice) {
                expected += n;
                tail_missing += n.saturating_sub(table.next_of(publisher));
            }
        }
    }
    errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    counters.last_first_connack_ns = control
        .workers
        .iter()
        .map(|w| w.load().last_first_connack_ns)
        .max()
        .unwrap_or(0);
    let window_s = ph.window_ns as f64 / 1e9;
    let publishes = cfg.scenario.publishes();
    let lost = expected.saturating_sub(seq.unique);
    let messages = publishes.then(|| MessageFigures {
        published: counters.published,
        published_measured: counters.published_measured,
        publish_rate: counters.published_measured as f64 / window_s,
        expected,
        received: seq.received,
        unique: seq.unique,
        delivered_measured: counters.delivered_measured,
        delivered_in_window: ph.window_delivered,
        delivery_rate: ph.window_delivered as f64 / window_s,
        lost,
        lost_in_gaps: seq.missing(),
        lost_at_end: tail_missing,
        duplicates: seq.duplicates,
        out_of_order: seq.out_of_order,
        foreign: counters.foreign,
        publish_skipped: counters.publish_skipped,
        publish_refused: counters.publish_refused,
        drain_s: ph.drain_ns as f64 / 1e9,
    });
    let latency = publishes.then(|| LatencyFigures::from_histogram(&mon.total));
    let connect_latency = LatencyFigures::from_histogram(&connect_hist);
    let clients = u64::from(cfg.clients());
    let connect = ConnectFigures {
        setup_s: ph.setup_ns as f64 / 1e9,
        all_ready: ph.all_ready,
        ready_at_end_of_setup: counters.first_connacks.min(clients),
        time_to_all_s: ph.time_to_all_ns.map(|t| t as f64 / 1e9),
        rate_per_s: ph
            .time_to_all_ns
            .map(|t| clients as f64 / (t as f64 / 1e9).max(1e-9)),
        first_connacks: counters.first_connacks,
        connacks: counters.connacks,
        latency_us: connect_latency,
        connect_failures: counters.connect_failures,
        connack_refused: counters.connack_refused,
        suback_refused: counters.suback_refused,
        timeouts: counters.timeouts,
        reconnects: counters.reconnects,
        disconnects: counters.disconnects,
        protocol_errors: counters.protocol_errors,
    };
    let work = match cfg.scenario {
        Scenario::Connect => counters.connacks,
        Scenario::Idle => 0,
        _ => ph.window_messages,
    };
    let cpu = CpuFigures::new(ph.cpu_window, window_s, work);
    let cpu_total = cpu_end.since(&cpu_start);
    let broker = match (cfg.broker_pid, ph.broker_before) {
        (Some(pid), Some(before)) => {
            let start = ph.broker_window_start.unwrap_or(before);
            let end = ph.broker_window_end.unwrap_or(start);
            let held = clients as f64;
            let growth = end.rss as f64 - before.rss as f64;
            Some(BrokerFigures {
                pid,
                rss_before: before.rss,
                rss_end: end.rss,
                rss_peak: ph.broker_peak_rss.max(end.rss),
                pss_before: before.pss,
                pss_end: end.pss,
                rss_growth_per_connection: growth / held,
                pss_growth_per_connection: match (before.pss, end.pss) {
                    (Some(b), Some(e)) => Some((e as f64 - b as f64) / held),
                    _ => None,
                },
                cpu: CpuFigures::new(end.cpu.since(&start.cpu), window_s, work),
            })
        }
        _ => None,
    };
    let transport = match (&cfg.target.transport, cfg.tls.is_some()) {
        (Transport::Tcp, false) => "tcp",
        (Transport::Ws { .. }, false) => "ws",
        (Transport::Tcp, true) => "tls",
        (Transport::Ws { .. }, true) => "wss",
    };
    RunReport {
        scenario: cfg.scenario.name().to_string(),
        target: cfg.target.url.clone(),
        transport: transport.to_string(),
        mqtt_version: match cfg.version {
            ringmq_proto::mqtt::Version::V311 => "3.1.1",
            ringmq_proto::mqtt::Version::V5 => "5.0",
        }
        .to_string(),
        qos: cfg.qos as u8,
        payload_bytes: cfg.payload,
        connections: cfg.connections,
        publishers: cfg.publishers,
        clients: cfg.clients(),
        threads: cfg.threads,
        rate: cfg.rate,
        warmup_s: cfg.warmup.as_secs_f64(),
        window_s,
        measure_offset_s: ph.measure_offset_ns as f64 / 1e9,
        source_addrs: cfg.source_addrs.len(),
        messages,
        latency_us: latency,
        latency_percentiles: percentile_curve(&mon.total),
        connect,
        cpu,
        cpu_total_s: cpu_total.total().as_secs_f64(),
        broker,
        counters,
        errors,
        timeline: mon.samples,
        intervals: mon.intervals,
    }
}

/// (percentile, µs) points for the percentile distribution plot: 5 ticks per halving of
/// the remaining distance to 100 %.
fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<(f64, u64)> = h
        .iter_quantiles(5)
        .map(|v| (v.quantile_iterated_to() * 100.0, v.value_iterated_to()))
        .collect();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}
