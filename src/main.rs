//! ringmq: the broker binary. It reads flags and the config file, sets up the log,
//! prepares the process (open-file limit, signals), and hands over to [`server::run`],
//! which starts one shard per placement entry and the control plane (HTTP server,
//! webhooks), and shuts down gracefully on SIGINT/SIGTERM. The modules are the
//! library's (`lib.rs` maps them).

use std::io::{BufRead, IsTerminal};

use ringmq::auth::password::{self, PasswdOutcome};
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
    if let Some(cli::Command::Passwd { file, user }) = &flags.command {
        return passwd(file, user);
    }
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

/// `ringmq passwd FILE USER`: the password from the terminal (twice, without echo) or
/// from stdin's first line, hashed with argon2id into the file.
fn passwd(file: &std::path::Path, user: &str) -> i32 {
    if let Err(why) = password::check_username(user) {
        eprintln!("ringmq passwd: bad username: {why}");
        return EXIT_USAGE;
    }
    let secret = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {user}: "));
        let again = rpassword::prompt_password("Again: ");
        match (first, again) {
            (Ok(a), Ok(b)) if a == b => zeroize::Zeroizing::new(a),
            (Ok(_), Ok(_)) => {
                eprintln!("ringmq passwd: the passwords differ; nothing changed");
                return 1;
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("ringmq passwd: cannot read the password: {e}");
                return 1;
            }
        }
    } else {
        let mut line = zeroize::Zeroizing::new(String::new());
        if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
            eprintln!("ringmq passwd: cannot read the password from stdin: {e}");
            return 1;
        }
        let len = line.trim_end_matches(['\n', '\r']).len();
        line.truncate(len);
        line
    };
    if secret.is_empty() {
        eprintln!("ringmq passwd: empty password; nothing changed");
        return 1;
    }
    match password::passwd(file, user, secret.as_bytes()) {
        Ok(PasswdOutcome::Added) => {
            println!("added {user} to {}", file.display());
            0
        }
        Ok(PasswdOutcome::Replaced) => {
            println!("changed the password of {user} in {}", file.display());
            0
        }
        Err(e) => {
            eprintln!("ringmq passwd: {}: {e}", file.display());
            1
        }
    }
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
