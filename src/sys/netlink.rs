//! A generic netlink socket: Linux's (for the tests, against a real kernel's
//! controller) and FreeBSD's (pf's state listing on 14 and 15).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `NETLINK_GENERIC`, the same on Linux and FreeBSD.
const NETLINK_GENERIC: libc::c_int = 16;

#[cfg(any(target_os = "linux", target_os = "android"))]
const AF_NETLINK: libc::c_int = libc::AF_NETLINK;
#[cfg(target_os = "freebsd")]
const AF_NETLINK: libc::c_int = super::bindings::AF_NETLINK as libc::c_int;

/// A generic netlink socket, talking to the kernel.
#[derive(Debug)]
pub struct NetlinkSocket {
    fd: OwnedFd,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn kernel_address() -> (libc::sockaddr_nl, libc::socklen_t) {
    // SAFETY: sockaddr_nl is plain integers; all zero is a valid value.
    let mut a: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    a.nl_family = AF_NETLINK as libc::sa_family_t;
    (
        a,
        std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
    )
}

#[cfg(target_os = "freebsd")]
fn kernel_address() -> (super::bindings::sockaddr_nl, libc::socklen_t) {
    let size = std::mem::size_of::<super::bindings::sockaddr_nl>();
    let a = super::bindings::sockaddr_nl {
        nl_len: size as u8,
        nl_family: AF_NETLINK as _,
        ..Default::default()
    };
    (a, size as libc::socklen_t)
}

impl NetlinkSocket {
    /// Opens a generic netlink socket.
    pub fn open() -> io::Result<NetlinkSocket> {
        // SAFETY: socket(2) with constant arguments; the result is checked, and a valid
        // descriptor is owned from here on.
        let fd = unsafe {
            libc::socket(
                AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_GENERIC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A kernel that never answers must not hang the daemon.
        nix::sys::socket::setsockopt(
            &fd,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(5, 0),
        )
        .map_err(io::Error::from)?;
        Ok(NetlinkSocket { fd })
    }

    /// Sends one request to the kernel.
    pub fn send(&self, request: &[u8]) -> io::Result<()> {
        let (addr, len) = kernel_address();
        // SAFETY: the buffer and the address are valid for their given lengths for the
        // duration of the call; the descriptor is open.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                request.as_ptr().cast(),
                request.len(),
                0,
                (&addr as *const _ as *const libc::sockaddr).cast(),
                len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives the next datagram (a batch of messages) into `buf`; its length.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length; the descriptor is open.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}
