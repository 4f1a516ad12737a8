//! The process's log: `tracing` events to stderr, human-readable text by default or one
//! JSON object per line (`--log-format json`), at `--log-level` and above.
//!
//! What is logged where: connects and disconnects at `debug`, refusals and limits at
//! `info`, faults at `warn`/`error`; never anything per message on the data path.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum LogFormat {
    /// `2026-01-01T00:00:00.000000Z  INFO ringmq::server: message key=value`.
    #[default]
    Text,
    /// `{"timestamp":…,"level":"INFO","target":…,"fields":{"message":…}}` per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!(
                "unknown log format `{s}`: expected `text` or `json`"
            )),
        }
    }
}

impl TryFrom<String> for LogFormat {
    type Error = String;
    fn try_from(s: String) -> Result<LogFormat, String> {
        s.parse()
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// A `--log-level`: one of `error`, `warn`, `info`, `debug`, `trace`, `off`, or a
/// `tracing` filter directive list such as `info,ringmq::control=debug`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct LogLevel(String);

impl LogLevel {
    pub fn filter(&self) -> EnvFilter {
        // Checked when parsed, so this cannot fail.
        EnvFilter::try_new(&self.0).unwrap_or_else(|_| EnvFilter::new("info"))
    }
}

impl Default for LogLevel {
    fn default() -> LogLevel {
        LogLevel("info".into())
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<LogLevel, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty log level: expected error, warn, info, debug, trace or off".into());
        }
        EnvFilter::try_new(s)
            .map(|_| LogLevel(s.to_string()))
            .map_err(|e| {
                format!(
                    "bad log level `{s}` ({e}): expected error, warn, info, debug, trace or off"
                )
            })
    }
}

impl TryFrom<String> for LogLevel {
    type Error = String;
    fn try_from(s: String) -> Result<LogLevel, String> {
        s.parse()
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Installs the process-wide subscriber. Called once by `main`, after the settings are
/// known; a second call (tests) leaves the first in place.
pub fn init(format: LogFormat, level: &LogLevel) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(level.filter())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
}

/// Runs `log` with a subscriber that writes each event's message alone to stderr, one
/// line each: for what goes wrong before the settings (and so the real log) are known.
pub fn plain_lines(log: impl FnOnce()) {
    let plain = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(plain, log);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_levels_parse() {
        assert_eq!("json".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!(" Text ".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert!(
            "yaml"
                .parse::<LogFormat>()
                .unwrap_err()
                .contains("`text` or `json`")
        );
        assert_eq!("debug".parse::<LogLevel>().unwrap().to_string(), "debug");
        assert!("info,ringmq::control=trace".parse::<LogLevel>().is_ok());
        assert!("".parse::<LogLevel>().is_err());
        assert!("info,=[".parse::<LogLevel>().is_err());
    }
}
