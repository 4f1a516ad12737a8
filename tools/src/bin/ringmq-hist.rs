//! ringmq-hist: print, merge, compare and plot HdrHistogram interval logs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringmq_tools::hist::{self, HistError, plot};

/// Print, merge, compare and plot HdrHistogram interval logs: what `ringmq-swarm --hist`
/// writes and what the broker dumps (GET /debug/histograms, SIGUSR1). Values are
/// latencies in microseconds; all intervals of a tag are merged before anything is shown.
#[derive(Debug, Parser)]
#[command(name = "ringmq-hist", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Per tag, a percentile table (count, min, p50, p90, p99, p99.9, p99.99, max, mean; µs).
    Print {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Only this tag (`(untagged)` for untagged intervals).
        #[arg(long)]
        tag: Option<String>,
    },
    /// Merge all intervals of all files into one histogram per tag, written as an
    /// interval log.
    Merge {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output interval log.
        #[arg(short, long)]
        output: PathBuf,
        /// Only this tag.
        #[arg(long)]
        tag: Option<String>,
    },
    /// Two runs side by side per percentile, with the ratio B/A (per tag both have).
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Only this tag (in both, unless --tag-b names B's).
        #[arg(long)]
        tag: Option<String>,
        /// B's tag, to compare two different series (e.g. the swarm's untagged latency
        /// with the broker's `merged.publish_to_delivery`).
        #[arg(long)]
        tag_b: Option<String>,
    },
    /// The percentile distribution, one line per file and tag: OUT.svg, or OUT.html (a
    /// self-contained page with the plot and the tables).
    Plot {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Output file, .svg or .html.
        #[arg(short, long)]
        output: PathBuf,
        /// Only this tag.
        #[arg(long)]
        tag: Option<String>,
        /// Plot title.
        #[arg(long, default_value = "Latency by percentile")]
        title: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringmq-hist: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<(), HistError> {
    match cmd {
        Cmd::Print { files, tag } => {
            let logs = hist::read_logs(&files, tag.as_deref())?;
            let tables: Vec<String> = logs.iter().map(hist::print_table).collect();
            print!("{}", tables.join("\n"));
        }
        Cmd::Merge { files, output, tag } => {
            let logs = hist::read_logs(&files, tag.as_deref())?;
            let merged = hist::merge(&logs)?;
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            let comment = format!(
                "ringmq-hist merge of {} (one interval per tag, latency in µs)",
                names.join(" ")
            );
            hist::write_log_file(&output, &merged, &comment)?;
            for s in &merged {
                eprintln!(
                    "{}: {} values from {} interval(s)",
                    s.name(),
                    s.hist.len(),
                    s.intervals
                );
            }
            eprintln!("wrote {}", output.display());
        }
        Cmd::Compare { a, b, tag, tag_b } => {
            let a = hist::read_log(&a)?.only(tag.as_deref())?;
            let b = hist::read_log(&b)?.only(tag_b.as_deref().or(tag.as_deref()))?;
            print!("{}", hist::compare_table(&a, &b)?);
        }
        Cmd::Plot {
            files,
            output,
            tag,
            title,
        } => {
            let logs = hist::read_logs(&files, tag.as_deref())?;
            let several = logs.len() > 1;
            let lines: Vec<plot::Line<'_>> = logs
                .iter()
                .flat_map(|log| {
                    let one_tag = log.series.len() == 1;
                    log.series.iter().map(move |s| plot::Line {
                        label: match (several, one_tag) {
                            (false, _) => s.name().to_owned(),
                            (true, true) if s.tag.is_none() => log.label(),
                            (true, _) => format!("{} {}", log.label(), s.name()),
                        },
                        series: s,
                    })
                })
                .collect();
            let out_err = |reason: String| HistError::Output {
                path: output.clone(),
                reason,
            };
            let doc = match extension(&output).as_str() {
                "svg" => plot::svg(&lines, &title).map_err(out_err)?,
                "html" | "htm" => plot::html(&lines, &title).map_err(out_err)?,
                other => {
                    return Err(out_err(format!(
                        "unknown output type {other:?}: name the file .svg or .html"
                    )));
                }
            };
            std::fs::write(&output, doc).map_err(|source| HistError::Io {
                path: output.clone(),
                source,
            })?;
            eprintln!("wrote {} ({} line(s))", output.display(), lines.len());
        }
    }
    Ok(())
}

fn extension(p: &Path) -> String {
    p.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}
