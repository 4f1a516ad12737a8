//! ringmq's operator tools.
//!
//! - [`hist`]: read, summarise, merge, compare and plot HdrHistogram interval logs
//!   (what `ringmq-swarm --hist` writes and what the broker dumps at
//!   `GET /debug/histograms` and on SIGUSR1); the `ringmq-hist` binary.
//! - [`tune`]: the kernel and process settings that `tuning.md` recommends for a million
//!   connections, read from `/proc/sys` and `getrlimit`, compared and applied; the
//!   `ringmq-tune` binary.

pub mod hist;
pub mod tune;
