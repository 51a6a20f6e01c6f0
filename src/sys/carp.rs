//! carp demotion from userland (kernel-interface.md §5): a delta to the demotion
//! counter, so that a firewall that is not in sync yet does not become carp master.
//! FreeBSD: the `net.inet.carp.demotion` sysctl; OpenBSD: the `carp` interface
//! group's demotion counter (SIOCSIFGATTR).

use std::io;

/// Adds `delta` to the carp demotion counter.
#[cfg(target_os = "freebsd")]
pub fn carp_demote(delta: i32) -> io::Result<()> {
    let name = c"net.inet.carp.demotion";
    let value: libc::c_int = delta;
    // SAFETY: the name is a NUL-terminated string; no old value is asked for (null
    // pointers); the new value is one int, `value`, of the size given.
    let r = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>(),
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Adds `delta` to the carp demotion counter.
#[cfg(target_os = "openbsd")]
pub fn carp_demote(delta: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    use super::bindings as k;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut req = k::ifgroupreq::default();
    for (dst, &src) in req.ifgr_name.iter_mut().zip(b"carp") {
        *dst = src as _;
    }
    req.ifgr_ifgru.ifgru_attrib.ifg_carp_demoted = delta;
    // SAFETY: SIOCSIFGATTR reads one `struct ifgroupreq`, which `req` is (the kernel's
    // own layout), on an open socket.
    let r = unsafe { libc::ioctl(socket.as_raw_fd(), k::SIOCSIFGATTR as libc::c_ulong, &req) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
