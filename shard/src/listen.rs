//! Listening sockets. Every shard binds its own socket on every listener address with
//! `SO_REUSEPORT`, so the kernel spreads new connections over the shards and no shard
//! ever hands a connection to another. Also the socket addresses operations point at, in
//! the form the kernel reads.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A socket address in the form the kernel reads (`sockaddr_in` or `sockaddr_in6` in a
/// `sockaddr_storage`). An operation that points at one must not outlive it: keep it at a
/// stable place (boxed) while operations use it.
pub struct SockAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl SockAddr {
    pub fn new(addr: SocketAddr) -> SockAddr {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above, for sockaddr_in6.
                unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        SockAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }

    pub fn ptr(&self) -> *const libc::sockaddr {
        (&raw const self.storage).cast()
    }

    /// Bytes of the address the kernel reads at `ptr`.
    pub fn len(&self) -> libc::socklen_t {
        self.len
    }

    /// Never true: an address has its family at least.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A TCP socket bound to `addr` with `SO_REUSEADDR` and `SO_REUSEPORT`, not listening: the
/// shards' listeners on the same address may join it.
pub fn reuseport_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain syscalls on a descriptor owned by `fd` from its creation on, which
    // closes it on every error path below.
    unsafe {
        let raw = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(raw);
        set_options(
            &fd,
            libc::SOL_SOCKET,
            &[libc::SO_REUSEADDR, libc::SO_REUSEPORT],
        )?;
        let addr = SockAddr::new(addr);
        if libc::bind(fd.as_raw_fd(), addr.ptr(), addr.len()) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }
}

/// Opens a listening TCP socket on `addr` (see [`reuseport_socket`]) with `TCP_NODELAY`
/// (accepted sockets inherit it, so small packets are not held back by Nagle's algorithm).
pub fn reuseport_listener(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let fd = reuseport_socket(addr)?;
    set_options(&fd, libc::IPPROTO_TCP, &[libc::TCP_NODELAY])?;
    // SAFETY: `listen` on a descriptor this function owns.
    if unsafe { libc::listen(fd.as_raw_fd(), backlog.min(i32::MAX as u32) as i32) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(TcpListener::from(fd))
}

/// Turns on each boolean socket option of `options` at `level`.
fn set_options(fd: &OwnedFd, level: libc::c_int, options: &[libc::c_int]) -> io::Result<()> {
    let one: libc::c_int = 1;
    for &opt in options {
        // SAFETY: `setsockopt` reads an int from a live local for the length given.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_listeners_share_a_port() {
        let a = reuseport_listener("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = a.local_addr().unwrap();
        let b = reuseport_listener(addr, 16).unwrap();
        assert_eq!(b.local_addr().unwrap(), addr);
    }

    #[test]
    fn socket_addresses_are_laid_out_for_the_kernel() {
        let a = SockAddr::new("127.0.0.2:1883".parse().unwrap());
        assert_eq!(a.len() as usize, std::mem::size_of::<libc::sockaddr_in>());
        // SAFETY: written as a sockaddr_in above.
        let sin: libc::sockaddr_in = unsafe { std::ptr::read(a.ptr().cast()) };
        assert_eq!(sin.sin_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(u16::from_be(sin.sin_port), 1883);
        assert_eq!(u32::from_be(sin.sin_addr.s_addr), 0x7f00_0002);
        let b = SockAddr::new("[::1]:9".parse().unwrap());
        assert_eq!(b.len() as usize, std::mem::size_of::<libc::sockaddr_in6>());
        // SAFETY: written as a sockaddr_in6 above.
        let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read(b.ptr().cast()) };
        assert_eq!(sin6.sin6_family, libc::AF_INET6 as libc::sa_family_t);
        assert_eq!(u16::from_be(sin6.sin6_port), 9);
    }
}
