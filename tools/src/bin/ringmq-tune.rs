//! ringmq-tune: check and apply the host settings of tuning.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringmq_tools::tune::{self, Outcome, Status, sys::ProcSys};

/// Check and apply the kernel and process settings that tuning.md recommends for a
/// million concurrent MQTT connections (sysctls under /proc/sys and RLIMIT_NOFILE).
#[derive(Debug, Parser)]
#[command(name = "ringmq-tune", version, about)]
struct Cli {
    /// Read and write sysctls under this folder instead of /proc/sys (for tests).
    #[arg(long, global = true, hide = true, default_value = "/proc/sys")]
    proc_sys: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print each setting: its current value, the recommended one, and OK/LOW/HIGH.
    Check {
        /// One JSON object on stdout, for scripts.
        #[arg(long)]
        json: bool,
        /// Give the reason for every setting, not only those off the recommendation.
        #[arg(short, long)]
        verbose: bool,
        /// Exit with status 1 when any setting is LOW or HIGH.
        #[arg(long)]
        strict: bool,
    },
    /// Set what is not OK (needs root); say what changed and what could not be changed.
    /// Idempotent: a second run changes nothing.
    Apply {
        /// Say what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also raise RLIMIT_NOFILE of this process (e.g. `--pid $$` for your shell, so
        /// that what it starts next inherits it); limits are per process.
        #[arg(long)]
        pid: Option<i32>,
    },
    /// Print a sysctl.d file with the values apply leaves (for
    /// /etc/sysctl.d/90-ringmq.conf, so that they survive a reboot).
    Conf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let proc = ProcSys { root: cli.proc_sys };
    match cli.cmd {
        Cmd::Check {
            json,
            verbose,
            strict,
        } => {
            let rows = tune::check(&proc);
            if json {
                print!("{}", tune::format_check_json(&rows));
            } else {
                print!("{}", tune::format_check(&rows, verbose));
            }
            let off = rows
                .iter()
                .any(|r| matches!(r.status, Status::Low | Status::High));
            if strict && off {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Cmd::Apply { dry_run, pid } => {
            let actions = tune::apply(&proc, dry_run, pid);
            print!("{}", tune::format_apply(&actions, dry_run));
            if actions
                .iter()
                .any(|a| matches!(a.outcome, Outcome::Failed(_)))
            {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Cmd::Conf => {
            print!("{}", tune::sysctl_conf(&proc));
            ExitCode::SUCCESS
        }
    }
}
