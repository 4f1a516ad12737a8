//! ringmq-swarm: the command-line front of `ringmq_bench` (see `ringmq-swarm --help`).

use std::process::ExitCode;

use clap::Parser;
use ringmq_bench::config::{Cli, Config};
use ringmq_bench::run::run;

fn main() -> ExitCode {
    let cfg = match Config::from_cli(Cli::parse()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("ringmq-swarm: {e}");
            return ExitCode::from(2);
        }
    };
    let (json, hist, html) = (cfg.json.clone(), cfg.hist.clone(), cfg.report.clone());
    let report = match run(cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringmq-swarm: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.summary());
    let mut ok = true;
    if let Some(p) = json
        && let Err(e) = report.write_json(&p)
    {
        eprintln!("ringmq-swarm: --json {e}");
        ok = false;
    }
    if let Some(p) = html
        && let Err(e) = report.write_html(&p)
    {
        eprintln!("ringmq-swarm: --report {e}");
        ok = false;
    }
    if let Some(p) = hist {
        eprintln!("latency interval log written to {}", p.display());
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
