//! What the process asks of the OS: the open-file limit, the cores it may run on,
//! signal masks and waits, and port reservations for the listeners.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::config::values::Host;

/// The open-file limit after `raise_nofile`, and what went wrong raising it, if anything.
pub struct NoFile {
    pub soft: u64,
    pub warning: Option<String>,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (never the hard limit itself).
pub fn raise_nofile() -> NoFile {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        let e = io::Error::last_os_error();
        return NoFile {
            soft: 1024,
            warning: Some(format!("getrlimit: {e}")),
        };
    }
    let (soft, hard) = (lim.rlim_cur, lim.rlim_max);
    if soft >= hard {
        return NoFile {
            soft,
            warning: None,
        };
    }
    let raised = libc::rlimit {
        rlim_cur: lim.rlim_max,
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit reads one rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return NoFile {
            soft: hard,
            warning: None,
        };
    }
    // An unlimited hard limit can still be refused above fs.nr_open.
    let e = io::Error::last_os_error();
    let warning = format!("cannot raise the open-file limit from {soft} to {hard}: {e}");
    NoFile {
        soft,
        warning: Some(warning),
    }
}

/// Cores this process may run on, from its affinity mask (ascending); empty if unknown.
pub fn affinity_cores() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a live cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads the set for cores below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// The host as settings see it: cores, parallelism, open-file limit.
pub fn host(nofile: &NoFile) -> Host {
    Host {
        cores: affinity_cores(),
        parallelism: std::thread::available_parallelism().map_or(1, |n| n.get()),
        nofile: nofile.soft,
    }
}

/// A write to a closed socket returns EPIPE instead of killing the process.
pub fn ignore_sigpipe() {
    // SAFETY: installs SIG_IGN for SIGPIPE; no handler code runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

/// The signals the main thread waits for: SIGINT, SIGTERM, SIGHUP, SIGUSR1.
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGINT, SIGTERM, SIGHUP and SIGUSR1 in the calling thread, and so in every thread
    /// it spawns from now on; they then stay pending until `wait` takes them. Call
    /// before spawning any thread.
    pub fn block() -> io::Result<Signals> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initializes the set; sigaddset and pthread_sigmask use it.
        unsafe {
            libc::sigemptyset(set.as_mut_ptr());
            let mut set = set.assume_init();
            for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1] {
                libc::sigaddset(&mut set, sig);
            }
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            Ok(Signals { set })
        }
    }

    /// Waits up to `timeout` for one of the blocked signals; `None` on timeout.
    pub fn wait(&self, timeout: Duration) -> Option<i32> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: sigtimedwait reads the set and timespec; a null siginfo is allowed.
        let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        (sig > 0).then_some(sig)
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGUSR1 => "SIGUSR1",
        _ => "signal",
    }
}

/// Holds a listener's port from before the shards start until they listen on it.
///
/// A plain bind first proves the port is free — a `SO_REUSEPORT` bind alone would
/// quietly share it with another ringmq of the same user — and turns port 0 into a
/// concrete port. Then a bound, non-listening `SO_REUSEPORT` socket keeps the port
/// until the shards listen: their `SO_REUSEPORT` listeners may join it, it never
/// receives a connection, and the kernel no longer hands the port out as the source
/// port of an outgoing connection or to a bind to port 0 (which matters when many
/// tests start brokers on port 0 at once). A listener with `SO_REUSEADDR` could still
/// take the port in those milliseconds; the shards then fail to start, with an error.
pub struct PortReservation {
    pub addr: SocketAddr,
    _socket: OwnedFd,
}

pub fn reserve_port(addr: SocketAddr) -> io::Result<PortReservation> {
    let probe = TcpListener::bind(addr)?;
    let addr = probe.local_addr()?;
    drop(probe);
    let socket = ringmq_shard::listen::reuseport_socket(addr)?;
    Ok(PortReservation {
        addr,
        _socket: socket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_shard::listen::reuseport_listener;

    #[test]
    fn a_reserved_port_takes_the_shards() {
        let r = reserve_port("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(r.addr.port(), 0);
        // Shards (SO_REUSEPORT) can listen on it, twice.
        let a = reuseport_listener(r.addr, 16).unwrap();
        let b = reuseport_listener(r.addr, 16).unwrap();
        assert_eq!(a.local_addr().unwrap(), r.addr);
        // A plain listener cannot, then.
        assert!(TcpListener::bind(r.addr).is_err());
        drop(r);
        let _c = std::net::TcpStream::connect(a.local_addr().unwrap()).unwrap();
        drop((a, b));
    }

    #[test]
    fn a_port_in_use_cannot_be_reserved() {
        let shard = reuseport_listener("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let e = reserve_port(shard.local_addr().unwrap())
            .err()
            .expect("port in use");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn affinity_lists_some_core() {
        assert!(!affinity_cores().is_empty());
    }
}
