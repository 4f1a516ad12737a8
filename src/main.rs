//! ringmq: the broker binary. It reads flags and the config file, sets up the log,
//! prepares the process (open-file limit, signals), and hands over to [`server::run`],
//! which starts one shard per placement entry and the control plane (HTTP server,
//! webhooks), and shuts down gracefully on SIGINT/SIGTERM. The modules are the
//! library's (`lib.rs` maps them).

use ringmq::config::{cli, settings};
use ringmq::control::logging;
use ringmq::{server, system};

/// Exit status for bad flags or a bad config file (clap uses it too).
const EXIT_USAGE: i32 = 2;

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    system::ignore_sigpipe();
    let nofile = system::raise_nofile();
    let host = system::host(&nofile);

    let flags = cli::Options::parse_with(&host);
    let file = match &flags.config {
        Some(path) => match cli::Options::from_file(path) {
            Ok(options) => Some((path.clone(), options)),
            Err(e) => return usage_error(&e),
        },
        None => None,
    };

    let file_ref = file.as_ref().map(|(p, o)| (p.as_path(), o));
    let settings = match settings::resolve(&flags, file_ref, &host) {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    logging::init(settings.log_format, &settings.log_level);
    if let Some(w) = &nofile.warning {
        tracing::warn!("{w}");
    }

    if let Err(e) = std::fs::create_dir_all(&settings.data_dir) {
        tracing::error!(
            "cannot create the data directory {}: {e}",
            settings.data_dir.display()
        );
        return 1;
    }

    // Before any thread exists, so that every thread inherits the mask and only the
    // main thread's sigtimedwait ever takes these signals.
    let signals = match system::Signals::block() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot block signals: {e}");
            return 1;
        }
    };
    server::run(settings, signals)
}

/// Bad flags or config come before the log is set up (its settings are among them), so
/// they go to stderr as plain lines.
fn usage_error(msg: &str) -> i32 {
    logging::plain_lines(|| {
        tracing::error!("ringmq: {msg}");
        tracing::error!("ringmq: see `ringmq --help`");
    });
    EXIT_USAGE
}
