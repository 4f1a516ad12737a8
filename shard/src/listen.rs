//! Listening sockets. Every shard binds its own socket on every listener address with
//! `SO_REUSEPORT`, so the kernel spreads new connections over the shards and no shard
//! ever hands a connection to another.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::FromRawFd;

/// Opens a listening TCP socket on `addr` with `SO_REUSEADDR`, `SO_REUSEPORT` and
/// `TCP_NODELAY` (accepted sockets inherit it, so small MQTT packets are not held back
/// by Nagle's algorithm).
pub fn reuseport_listener(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let domain = match addr {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain syscalls on a descriptor this function owns; it is wrapped in a
    // `TcpListener` right away, which closes it on every error path below.
    unsafe {
        let fd = libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for (level, opt) in [
            (libc::SOL_SOCKET, libc::SO_REUSEADDR),
            (libc::SOL_SOCKET, libc::SO_REUSEPORT),
            (libc::IPPROTO_TCP, libc::TCP_NODELAY),
        ] {
            let r = libc::setsockopt(
                fd,
                level,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let (storage, len) = sockaddr(addr);
        if libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::listen(fd, backlog.min(i32::MAX as u32) as i32) < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(listener)
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
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
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
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
}
