//! The host side of `ringmq-tune`: `/proc/sys` files, `RLIMIT_NOFILE`, capabilities.

use std::io;
use std::path::{Path, PathBuf};

/// Where sysctls live (a folder in tests).
#[derive(Debug, Clone)]
pub struct ProcSys {
    pub root: PathBuf,
}

impl Default for ProcSys {
    fn default() -> Self {
        ProcSys {
            root: PathBuf::from("/proc/sys"),
        }
    }
}

impl ProcSys {
    /// `/proc/sys/net/ipv4/tcp_mem` for `net.ipv4.tcp_mem`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name.replace('.', "/"))
    }

    /// The file's text, `Ok(None)` when it does not exist.
    pub fn read(&self, name: &str) -> io::Result<Option<String>> {
        match std::fs::read_to_string(self.path(name)) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `text` to the setting's file (no creation: a missing setting stays missing).
    pub fn write(&self, name: &str, text: &str) -> io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.path(name))?;
        f.write_all(text.as_bytes())
    }
}

/// Why a write to `/proc/sys` failed, in words.
pub fn explain_write_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            format!("permission denied ({e}): run as root (CAP_SYS_ADMIN / CAP_NET_ADMIN)")
        }
        Some(libc::EROFS) => {
            format!("/proc/sys is read-only here ({e}): a container? set it on the host")
        }
        Some(libc::EINVAL) => format!("the kernel rejected the value ({e})"),
        _ => e.to_string(),
    }
}

/// Soft and hard `RLIMIT_NOFILE` of this process (`u64::MAX` for unlimited).
pub fn nofile() -> io::Result<(u64, u64)> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((rl.rlim_cur, rl.rlim_max))
}

/// Sets `RLIMIT_NOFILE` of process `pid` (0: this process) with prlimit(2).
pub fn set_nofile(pid: i32, soft: u64, hard: u64) -> io::Result<()> {
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `new` is a valid rlimit; a null old-limit pointer is allowed.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `RLIMIT_NOFILE` of process `pid` (0: this process).
pub fn nofile_of(pid: i32) -> io::Result<(u64, u64)> {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid, writable rlimit; a null new-limit pointer only reads.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((old.rlim_cur, old.rlim_max))
}

/// `CAP_SYS_RESOURCE`, needed to raise a hard resource limit.
pub const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process has capability `cap` in its effective set (from
/// `/proc/self/status`; `None` when that cannot be read).
pub fn has_capability(cap: u32) -> Option<bool> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    cap_in_status(&status, cap)
}

/// Parses the `CapEff:` line of a `/proc/PID/status` text.
pub fn cap_in_status(status: &str, cap: u32) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let bits = u64::from_str_radix(hex, 16).ok()?;
    Some(cap < 64 && bits & (1 << cap) != 0)
}

/// Total memory in bytes (from `/proc/meminfo`).
pub fn mem_total() -> Option<u64> {
    let s = std::fs::read_to_string(Path::new("/proc/meminfo")).ok()?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_bits() {
        let s = "Name:\tx\nCapEff:\t000001fffeffffff\n";
        assert_eq!(cap_in_status(s, CAP_SYS_RESOURCE), Some(false));
        assert_eq!(cap_in_status(s, 21), Some(true));
        assert_eq!(
            cap_in_status("CapEff:\t0000000001000000\n", CAP_SYS_RESOURCE),
            Some(true)
        );
        assert_eq!(cap_in_status("nothing", 0), None);
    }

    #[test]
    fn paths_follow_the_dots() {
        let p = ProcSys {
            root: "/proc/sys".into(),
        };
        assert_eq!(p.path("fs.file-max"), Path::new("/proc/sys/fs/file-max"));
        assert_eq!(
            p.path("net.ipv4.tcp_mem"),
            Path::new("/proc/sys/net/ipv4/tcp_mem")
        );
    }

    #[test]
    fn own_limits_read() {
        let (soft, hard) = nofile().unwrap();
        assert!(soft <= hard);
        assert_eq!(nofile_of(0).unwrap(), (soft, hard));
    }
}
