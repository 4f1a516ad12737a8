//! What a run reports: the [`RunReport`] figures, the one-screen summary, the JSON file,
//! and the self-contained HTML report (inline SVG drawn with plotters; no script, no
//! font or asset fetched from anywhere).

use std::fmt::Write as _;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::Serialize;

use crate::control::Counters;
use crate::sys::CpuTime;

/// Every figure of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub scenario: String,
    pub target: String,
    pub transport: String,
    pub mqtt_version: String,
    pub qos: u8,
    pub payload_bytes: usize,
    pub connections: u32,
    pub publishers: u32,
    pub clients: u32,
    pub threads: usize,
    /// Messages per second asked for (0: open loop).
    pub rate: f64,
    pub warmup_s: f64,
    /// The window the headline figures cover: the measured window (message scenarios),
    /// the hold (idle), the connect phase (connect).
    pub window_s: f64,
    /// Where that window starts, seconds from the start of the run.
    pub measure_offset_s: f64,
    pub source_addrs: usize,
    pub messages: Option<MessageFigures>,
    /// End-to-end latency of messages sent inside the measured window.
    pub latency_us: Option<LatencyFigures>,
    /// QoS 1/2: from a PUBLISH sent inside the window to its PUBACK (or PUBREC).
    pub ack_latency_us: Option<LatencyFigures>,
    /// (percentile, µs) of the same distribution.
    pub latency_percentiles: Vec<(f64, u64)>,
    pub connect: ConnectFigures,
    /// The swarm's own CPU over the window.
    pub cpu: CpuFigures,
    /// The swarm's CPU over the whole run, set-up and tear-down included.
    pub cpu_total_s: f64,
    pub broker: Option<BrokerFigures>,
    pub counters: Counters,
    /// Distinct errors seen, most frequent first.
    pub errors: Vec<(String, u64)>,
    /// One sample a second over the whole run.
    pub timeline: Vec<Sample>,
    /// Latency per second of the measured window (and of the drain after it).
    pub intervals: Vec<IntervalPoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageFigures {
    /// Messages published, warm-up and window.
    pub published: u64,
    /// Messages published inside the measured window.
    pub published_measured: u64,
    /// `published_measured` per second of window.
    pub publish_rate: f64,
    /// Deliveries owed: for each subscriber, every message published to its topic.
    pub expected: u64,
    /// Deliveries of this run's messages, duplicates included.
    pub received: u64,
    /// Deliveries that were not duplicates.
    pub unique: u64,
    /// Unique deliveries of messages published inside the measured window (the messages
    /// whose latency is measured).
    pub delivered_measured: u64,
    /// Unique deliveries received inside the measured window, whatever their send time.
    pub delivered_in_window: u64,
    /// `delivered_in_window` per second of window: the delivery throughput.
    pub delivery_rate: f64,
    /// `expected - unique`: messages never delivered.
    pub lost: u64,
    /// Of those, in gaps before a later message of the same publisher…
    pub lost_in_gaps: u64,
    /// …and after the last message a subscriber got from a publisher.
    pub lost_at_end: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub foreign: u64,
    pub publish_skipped: u64,
    pub publish_refused: u64,
    pub drain_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyFigures {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub p9999: u64,
    pub max: u64,
}

impl LatencyFigures {
    /// The report's line for these figures: `label`, the percentiles, then in brackets
    /// `note`, the mean and the count.
    fn summary(&self, label: &str, note: &str) -> String {
        format!(
            "{label:<13}p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({note}mean {:.0}, n={})",
            thousands(self.p50),
            thousands(self.p90),
            thousands(self.p99),
            thousands(self.p999),
            thousands(self.max),
            self.mean,
            thousands(self.count)
        )
    }

    pub fn from_histogram(h: &Histogram<u64>) -> LatencyFigures {
        let q = |x| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(x)
            }
        };
        LatencyFigures {
            count: h.len(),
            min: if h.is_empty() { 0 } else { h.min() },
            mean: if h.is_empty() { 0.0 } else { h.mean() },
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            p9999: q(0.9999),
            max: h.max(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectFigures {
    /// From the start to every client ready (or to giving up).
    pub setup_s: f64,
    pub all_ready: bool,
    pub ready_at_end_of_setup: u64,
    /// Connect scenario: from the start to the last client's first CONNACK.
    pub time_to_all_s: Option<f64>,
    /// Connect scenario: clients / time_to_all.
    pub rate_per_s: Option<f64>,
    pub first_connacks: u64,
    pub connacks: u64,
    /// From the socket operation to CONNACK.
    pub latency_us: LatencyFigures,
    pub connect_failures: u64,
    pub connack_refused: u64,
    pub suback_refused: u64,
    pub timeouts: u64,
    pub reconnects: u64,
    /// Reconnects the client planned (`--reconnect-every`).
    pub rejoins: u64,
    pub disconnects: u64,
    pub protocol_errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuFigures {
    pub user_s: f64,
    pub system_s: f64,
    pub total_s: f64,
    /// Of one core, over the window.
    pub core_percent: f64,
    /// CPU µs per unit of work: per message published or received inside the window
    /// (connect: per CONNACK).
    pub us_per_unit: Option<f64>,
}

impl CpuFigures {
    pub fn new(cpu: CpuTime, window_s: f64, work: u64) -> CpuFigures {
        let total = cpu.total().as_secs_f64();
        CpuFigures {
            user_s: cpu.user.as_secs_f64(),
            system_s: cpu.system.as_secs_f64(),
            total_s: total,
            core_percent: if window_s > 0.0 {
                total / window_s * 100.0
            } else {
                0.0
            },
            us_per_unit: (work > 0).then(|| total * 1e6 / work as f64),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BrokerFigures {
    pub pid: u32,
    pub rss_before: u64,
    pub rss_end: u64,
    pub rss_peak: u64,
    pub pss_before: Option<u64>,
    pub pss_end: Option<u64>,
    /// (RSS at the end of the window − RSS before connecting) / clients, bytes.
    pub rss_growth_per_connection: f64,
    pub pss_growth_per_connection: Option<f64>,
    /// The broker's CPU over the window.
    pub cpu: CpuFigures,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds from the start of the run.
    pub t_s: f64,
    pub phase: String,
    pub ready: u64,
    pub published_per_s: f64,
    pub delivered_per_s: f64,
    pub missing: u64,
    pub reconnects: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IntervalPoint {
    /// Seconds from the start of the run.
    pub t_s: f64,
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// 1234567 → "1,234,567".
fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn rate(v: f64) -> String {
    thousands(v.round().max(0.0) as u64)
}

fn bytes(v: f64) -> String {
    let a = v.abs();
    let sign = if v < 0.0 { "-" } else { "" };
    if a >= 1024.0 * 1024.0 * 1024.0 {
        format!("{sign}{:.2} GiB", a / (1024.0 * 1024.0 * 1024.0))
    } else if a >= 1024.0 * 1024.0 {
        format!("{sign}{:.1} MiB", a / (1024.0 * 1024.0))
    } else if a >= 10.0 * 1024.0 {
        format!("{sign}{:.1} KiB", a / 1024.0)
    } else {
        format!("{sign}{a:.0} B")
    }
}

impl RunReport {
    /// The one-screen summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(
            w,
            "ringmq-swarm {}  {}  MQTT {}  QoS {}  payload {} B",
            self.scenario, self.target, self.mqtt_version, self.qos, self.payload_bytes
        );
        let roles = match self.scenario.as_str() {
            "fanout" => format!(
                " ({} subscribers, {} publisher{})",
                self.connections,
                self.publishers,
                if self.publishers == 1 { "" } else { "s" }
            ),
            "fanin" => format!(" ({} publishers, 1 subscriber)", self.connections),
            _ => String::new(),
        };
        let _ = writeln!(
            w,
            "clients      {}{roles} on {} threads{}",
            thousands(u64::from(self.clients)),
            self.threads,
            if self.source_addrs > 0 {
                format!(", {} source addresses", self.source_addrs)
            } else {
                String::new()
            }
        );
        let c = &self.connect;
        let _ = writeln!(
            w,
            "setup        {} in {:.2} s  (connect p50 {} µs, p99 {} µs, max {} µs)",
            if c.all_ready {
                "all ready".to_string()
            } else {
                format!("NOT all ready ({} connected)", c.ready_at_end_of_setup)
            },
            c.setup_s,
            thousands(c.latency_us.p50),
            thousands(c.latency_us.p99),
            thousands(c.latency_us.max)
        );
        if self.scenario == "connect" {
            match (c.time_to_all_s, c.rate_per_s) {
                (Some(t), Some(r)) => {
                    let _ = writeln!(
                        w,
                        "connect      {} connections in {t:.3} s = {} connections/s",
                        thousands(u64::from(self.clients)),
                        rate(r)
                    );
                }
                _ => {
                    let _ = writeln!(
                        w,
                        "connect      only {} of {} connected within {:.1} s",
                        thousands(c.first_connacks),
                        thousands(u64::from(self.clients)),
                        self.window_s
                    );
                }
            }
        }
        if let Some(m) = &self.messages {
            let _ = writeln!(
                w,
                "window       {:.1} s measured (+{:.1} s warm-up, {:.1} s drain); rate {}",
                self.window_s,
                self.warmup_s,
                m.drain_s,
                if self.rate > 0.0 {
                    format!("{} msg/s asked", rate(self.rate))
                } else {
                    "open loop".to_string()
                }
            );
            let _ = writeln!(
                w,
                "published    {} msg/s  ({} in window, {} in all)",
                rate(m.publish_rate),
                thousands(m.published_measured),
                thousands(m.published)
            );
            let _ = writeln!(
                w,
                "delivered    {} msg/s  ({} in window, {} of them sent in it; {} of {} expected in all)",
                rate(m.delivery_rate),
                thousands(m.delivered_in_window),
                thousands(m.delivered_measured),
                thousands(m.unique),
                thousands(m.expected)
            );
            let _ = writeln!(
                w,
                "integrity    lost {} (never delivered, {} in gaps)  duplicated {}  out-of-order {}  foreign {}{}{}",
                thousands(m.lost),
                thousands(m.lost_in_gaps),
                thousands(m.duplicates),
                thousands(m.out_of_order),
                thousands(m.foreign),
                if m.publish_skipped > 0 {
                    format!(
                        "  publishes skipped (behind rate) {}",
                        thousands(m.publish_skipped)
                    )
                } else {
                    String::new()
                },
                if m.publish_refused > 0 {
                    format!("  refused {}", thousands(m.publish_refused))
                } else {
                    String::new()
                }
            );
        }
        if let Some(l) = self.latency_us.as_ref().filter(|l| l.count == 0) {
            let _ = writeln!(
                w,
                "latency µs   none measured: no message sent inside the window was delivered \
                 (n={})",
                l.count
            );
        } else if let Some(l) = &self.latency_us {
            let _ = writeln!(w, "{}", l.summary("latency µs", ""));
        }
        if let Some(l) = &self.ack_latency_us {
            let _ = writeln!(w, "{}", l.summary("ack µs", "publish to PUBACK/PUBREC, "));
        }
        let _ = writeln!(
            w,
            "connections  reconnects {} (of them {} planned)  lost {}  connect failures {}  CONNACK refused {}  SUBACK refused {}  timeouts {}  protocol errors {}",
            c.reconnects,
            c.rejoins,
            c.disconnects,
            c.connect_failures,
            c.connack_refused,
            c.suback_refused,
            c.timeouts,
            c.protocol_errors
        );
        let unit = match self.scenario.as_str() {
            "connect" => "connection",
            _ => "msg",
        };
        let per = |cpu: &CpuFigures| {
            cpu.us_per_unit
                .map(|u| format!(", {u:.2} µs/{unit}"))
                .unwrap_or_default()
        };
        let _ = writeln!(
            w,
            "swarm CPU    {:.2} s (user {:.2} + sys {:.2}) over {:.3} s = {:.0}% of one core{}",
            self.cpu.total_s,
            self.cpu.user_s,
            self.cpu.system_s,
            self.window_s,
            self.cpu.core_percent,
            per(&self.cpu)
        );
        if let Some(b) = &self.broker {
            let _ = writeln!(
                w,
                "broker CPU   {:.2} s (user {:.2} + sys {:.2}) = {:.0}% of one core{}  [pid {}]",
                b.cpu.total_s,
                b.cpu.user_s,
                b.cpu.system_s,
                b.cpu.core_percent,
                per(&b.cpu),
                b.pid
            );
            let _ = writeln!(
                w,
                "broker RSS   {} before → {} at end (peak {}): {} per connection{}",
                bytes(b.rss_before as f64),
                bytes(b.rss_end as f64),
                bytes(b.rss_peak as f64),
                bytes(b.rss_growth_per_connection),
                b.pss_growth_per_connection
                    .map(|p| format!(" (PSS {})", bytes(p)))
                    .unwrap_or_default()
            );
        }
        for (e, n) in self.errors.iter().take(5) {
            let _ = writeln!(w, "error        {n} × {e}");
        }
        s
    }

    pub fn write_json(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn write_html(&self, path: &Path) -> Result<(), String> {
        std::fs::write(path, self.html()?).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The HTML report: the summary, the figures, and up to three SVG plots.
    pub fn html(&self) -> Result<String, String> {
        let mut h = String::new();
        let title = format!("ringmq-swarm {} → {}", self.scenario, self.target);
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>{}</title><style>\
             body{{font-family:sans-serif;margin:2em;max-width:1000px;color:#222}}\
             pre{{background:#f4f4f4;padding:1em;overflow-x:auto}}\
             table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}\
             th{{background:#eee}}svg{{display:block;margin:1em 0}}\
             </style></head><body>\n<h1>{}</h1>\n<pre>{}</pre>\n",
            escape(&title),
            escape(&title),
            escape(&self.summary())
        );
        if let Some(l) = &self.latency_us {
            let _ = write!(
                h,
                "<h2>End-to-end latency (µs)</h2>\n<table><tr><th>n</th><th>min</th><th>p50</th>\
                 <th>p90</th><th>p99</th><th>p99.9</th><th>p99.99</th><th>max</th><th>mean</th></tr>\
                 <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{:.1}</td></tr></table>\n",
                l.count, l.min, l.p50, l.p90, l.p99, l.p999, l.p9999, l.max, l.mean
            );
            if !self.latency_percentiles.is_empty() {
                h.push_str("<h3>Percentile distribution</h3>\n");
                h.push_str(&self.percentile_svg()?);
            }
        }
        if !self.timeline.is_empty() {
            h.push_str("<h2>Throughput over time</h2>\n");
            h.push_str(&self.throughput_svg()?);
        }
        if self.intervals.len() > 1 {
            h.push_str("<h2>Latency over time (per second)</h2>\n");
            h.push_str(&self.latency_time_svg()?);
        }
        h.push_str("<h2>All figures</h2>\n<pre>");
        h.push_str(&escape(
            &serde_json::to_string_pretty(&FiguresOnly(self)).map_err(|e| e.to_string())?,
        ));
        h.push_str("</pre>\n</body></html>\n");
        Ok(h)
    }

    fn percentile_svg(&self) -> Result<String, String> {
        // x: 1/(1-p), so that 90 %, 99 %, 99.9 % … are evenly spaced.
        let points: Vec<(f64, f64)> = self
            .latency_percentiles
            .iter()
            .filter(|(p, _)| *p < 100.0)
            .map(|&(p, v)| (1.0 / (1.0 - p / 100.0), (v.max(1)) as f64))
            .collect();
        let x_max = points.iter().map(|p| p.0).fold(10.0f64, f64::max).max(10.0);
        let y_max = points.iter().map(|p| p.1).fold(10.0f64, f64::max) * 1.5;
        let y_min = points.iter().map(|p| p.1).fold(f64::MAX, f64::min).max(1.0) / 1.5;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .caption("latency by percentile", ("sans-serif", 18))
                .build_cartesian_2d((1f64..x_max).log_scale(), (y_min..y_max).log_scale())
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("percentile")
                .y_desc("µs")
                .x_label_formatter(&|x| percentile_label(*x))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()
                .map_err(plot_err)?;
            chart
                .draw_series(LineSeries::new(points, &BLUE))
                .map_err(plot_err)?;
            root.present().map_err(plot_err)?;
        }
        Ok(svg)
    }

    fn throughput_svg(&self) -> Result<String, String> {
        let t_max = self.timeline.last().map_or(1.0, |s| s.t_s).max(1.0);
        let peak = |f: fn(&Sample) -> f64| self.timeline.iter().map(f).fold(0.0f64, f64::max);
        let (pub_peak, del_peak) = (peak(|s| s.published_per_s), peak(|s| s.delivered_per_s));
        // Fan-out delivers far more than it publishes: a logarithmic axis shows both.
        let log = pub_peak > 0.0 && del_peak > 20.0 * pub_peak;
        let y = move |v: f64| if log { v.max(1.0).log10() } else { v };
        let y_max = if log {
            y(pub_peak.max(del_peak)).ceil().max(1.0) + 0.3
        } else {
            pub_peak.max(del_peak).max(1.0) * 1.1
        };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (900, 380)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(80)
                .caption("messages per second", ("sans-serif", 18))
                .build_cartesian_2d(0f64..t_max, 0f64..y_max)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("seconds since start")
                .y_desc(if log { "msg/s (log scale)" } else { "msg/s" })
                .y_label_formatter(&|v| rate(if log { 10f64.powf(*v) } else { *v }))
                .draw()
                .map_err(plot_err)?;
            let published: Vec<(f64, f64)> = self
                .timeline
                .iter()
                .map(|s| (s.t_s, y(s.published_per_s)))
                .collect();
            let delivered: Vec<(f64, f64)> = self
                .timeline
                .iter()
                .map(|s| (s.t_s, y(s.delivered_per_s)))
                .collect();
            chart
                .draw_series(LineSeries::new(published, &RED))
                .map_err(plot_err)?
                .label("published")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
            chart
                .draw_series(LineSeries::new(delivered, &BLUE))
                .map_err(plot_err)?
                .label("delivered")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
            if self.window_s > 0.0 && self.messages.is_some() {
                let a = self.measure_offset_s;
                let b = a + self.window_s;
                chart
                    .draw_series([
                        PathElement::new(vec![(a, 0.0), (a, y_max)], BLACK.mix(0.3)),
                        PathElement::new(vec![(b, 0.0), (b, y_max)], BLACK.mix(0.3)),
                    ])
                    .map_err(plot_err)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
            root.present().map_err(plot_err)?;
        }
        Ok(svg)
    }

    fn latency_time_svg(&self) -> Result<String, String> {
        let t_min = self.intervals.first().map_or(0.0, |i| i.t_s);
        let t_max = self
            .intervals
            .last()
            .map_or(1.0, |i| i.t_s + 1.0)
            .max(t_min + 1.0);
        let y_max = self
            .intervals
            .iter()
            .map(|i| i.max_us)
            .max()
            .unwrap_or(10)
            .max(10) as f64
            * 1.5;
        let y_min = self
            .intervals
            .iter()
            .map(|i| i.p50_us)
            .min()
            .unwrap_or(1)
            .max(1) as f64
            / 1.5;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (900, 380)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_err)?;
            let mut chart = ChartBuilder::on(&root)
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .caption("latency per second: p50, p99, max", ("sans-serif", 18))
                .build_cartesian_2d(t_min..t_max, (y_min..y_max).log_scale())
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("seconds since start")
                .y_desc("µs")
                .y_label_formatter(&|y| format!("{y:.0}"))
                .draw()
                .map_err(plot_err)?;
            for (name, color, pick) in [
                (
                    "p50",
                    BLUE,
                    (|i: &IntervalPoint| i.p50_us) as fn(&IntervalPoint) -> u64,
                ),
                ("p99", RED, |i| i.p99_us),
                ("max", BLACK, |i| i.max_us),
            ] {
                let pts: Vec<(f64, f64)> = self
                    .intervals
                    .iter()
                    .map(|i| (i.t_s + 0.5, pick(i).max(1) as f64))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts, &color))
                    .map_err(plot_err)?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
            root.present().map_err(plot_err)?;
        }
        Ok(svg)
    }
}

/// The report without its long series, for the HTML page's figure dump.
struct FiguresOnly<'a>(&'a RunReport);

impl Serialize for FiguresOnly<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let r = self.0;
        let mut st = s.serialize_struct("RunReport", 6)?;
        st.serialize_field("messages", &r.messages)?;
        st.serialize_field("latency_us", &r.latency_us)?;
        st.serialize_field("connect", &r.connect)?;
        st.serialize_field("cpu", &r.cpu)?;
        st.serialize_field("broker", &r.broker)?;
        st.serialize_field("counters", &r.counters)?;
        st.end()
    }
}

fn plot_err<E: std::fmt::Debug>(e: E) -> String {
    format!("plot: {e:?}")
}

/// The percentile at x = 1/(1-p): 1 → "0%", 10 → "90%", 1000 → "99.9%".
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    let nines = x.log10().round().max(0.0) as usize;
    format!("{p:.prec$}%", prec = nines.saturating_sub(2))
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(-2048.0 * 1024.0), "-2.0 MiB");
        assert_eq!(escape("<a&\"b\">"), "&lt;a&amp;&quot;b&quot;&gt;");
    }
}
