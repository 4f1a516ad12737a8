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

/// A plain-text table, columns two spaces apart: the first column left-aligned, the
/// others right-aligned when `numbers` (else left-aligned too); no trailing spaces.
pub(crate) fn table(header: &[String], rows: &[Vec<String>], numbers: bool) -> String {
    let all = || std::iter::once(header).chain(rows.iter().map(|r| &r[..]));
    let mut width = vec![0usize; header.len()];
    for row in all() {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in all() {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&width).enumerate() {
            let pad = " ".repeat(w - cell.chars().count());
            if i > 0 {
                line.push_str("  ");
            }
            if i > 0 && numbers {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
