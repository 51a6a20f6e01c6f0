//! carp demotion from userland (kernel-interface.md §5): a delta to the demotion
//! counter, so that a firewall that is not in sync yet does not become carp master.
//! FreeBSD: the `net.inet.carp.demotion` sysctl; OpenBSD: the `carp` interface
//! group's demotion counter (SIOCSIFGATTR). Both are read back (the sysctl's value,
//! SIOCGIFGATTR) to lower what a crashed run left raised without going below zero.

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

/// The carp demotion counter's value.
#[cfg(target_os = "freebsd")]
pub fn carp_demotion() -> io::Result<i32> {
    let name = c"net.inet.carp.demotion";
    let mut value: libc::c_int = 0;
    let mut size = std::mem::size_of::<libc::c_int>();
    // SAFETY: the name is a NUL-terminated string; the old value is written into
    // `value`, whose size `size` gives; no new value (null, 0).
    let r = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            (&mut value as *mut libc::c_int).cast(),
            &mut size,
            std::ptr::null(),
            0,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    if size != std::mem::size_of::<libc::c_int>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("net.inet.carp.demotion: {size} bytes, not an int"),
        ));
    }
    Ok(value)
}

/// A request on the `carp` interface group.
#[cfg(target_os = "openbsd")]
fn carp_group_request() -> super::bindings::ifgroupreq {
    let mut req = super::bindings::ifgroupreq::default();
    for (dst, &src) in req.ifgr_name.iter_mut().zip(b"carp") {
        *dst = src as _;
    }
    req
}

/// The carp demotion counter's value (the `carp` group's).
#[cfg(target_os = "openbsd")]
pub fn carp_demotion() -> io::Result<i32> {
    use std::os::fd::AsRawFd;

    use super::bindings as k;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut req = carp_group_request();
    // SAFETY: SIOCGIFGATTR reads and writes one `struct ifgroupreq`, which `req` is (the
    // kernel's own layout), on an open socket.
    let r = unsafe {
        libc::ioctl(
            socket.as_raw_fd(),
            k::SIOCGIFGATTR as libc::c_ulong,
            &mut req,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the attribute member of the union (if_getgroupattribs
    // writes ifgr_attrib.ifg_carp_demoted), an int that any bit pattern is valid for.
    Ok(unsafe { req.ifgr_ifgru.ifgru_attrib.ifg_carp_demoted } as i32)
}

/// Adds `delta` to the carp demotion counter.
#[cfg(target_os = "openbsd")]
pub fn carp_demote(delta: i32) -> io::Result<()> {
    use std::os::fd::AsRawFd;

    use super::bindings as k;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut req = carp_group_request();
    req.ifgr_ifgru.ifgru_attrib.ifg_carp_demoted = delta;
    // SAFETY: SIOCSIFGATTR reads one `struct ifgroupreq`, which `req` is (the kernel's
    // own layout), on an open socket.
    let r = unsafe { libc::ioctl(socket.as_raw_fd(), k::SIOCSIFGATTR as libc::c_ulong, &req) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
