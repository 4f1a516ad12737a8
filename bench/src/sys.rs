//! What the swarm reads from the system: the monotonic clock its payload timestamps use,
//! its own CPU time (getrusage), and a broker's memory and CPU from `/proc/PID`.

use std::time::Duration;

/// CLOCK_MONOTONIC in nanoseconds (through the vDSO: no system call).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User and system CPU time of this process, all threads.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The CPU used between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

pub fn own_cpu() -> CpuTime {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is valid for writes; RUSAGE_SELF always exists.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    CpuTime {
        user: tv(ru.ru_utime),
        system: tv(ru.ru_stime),
    }
}

/// A sample of another process (the broker under test).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// Resident set size, bytes (`VmRSS` of `/proc/PID/status`).
    pub rss: u64,
    /// Proportional set size, bytes (`Pss` of `/proc/PID/smaps_rollup`), when readable.
    pub pss: Option<u64>,
    /// User + system CPU time (`/proc/PID/stat` fields 14 and 15).
    pub cpu: CpuTime,
}

/// Reads `/proc/PID`; `None` when the process is gone or unreadable.
pub fn sample_process(pid: u32) -> Option<ProcSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = kb_field(&status, "VmRSS:")? * 1024;
    let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| kb_field(&s, "Pss:"))
        .map(|kb| kb * 1024);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(ProcSample {
        rss,
        pss,
        cpu: parse_stat_cpu(&stat)?,
    })
}

/// The value in kB of the line starting with `name` ("VmRSS:   1234 kB").
fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// utime and stime from a `/proc/PID/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_cpu(stat: &str) -> Option<CpuTime> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After ")": field 3 (state) is the first; utime is field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks = |t: u64| Duration::from_nanos(t * 1_000_000_000 / hz);
    Some(CpuTime {
        user: ticks(utime),
        system: ticks(stime),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let s = sample_process(std::process::id()).expect("own /proc entry");
        assert!(s.rss > 0);
        assert!(sample_process(u32::MAX).is_none());
    }

    #[test]
    fn stat_cpu_counts_fields_after_the_command_name() {
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let line = format!("42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 {} {} 0 0", hz * 2, hz);
        let cpu = parse_stat_cpu(&line).unwrap();
        assert_eq!(cpu.user, Duration::from_secs(2));
        assert_eq!(cpu.system, Duration::from_secs(1));
    }

    #[test]
    fn clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a && a > 0);
    }
}
