//! pfsync0's own configuration, read with `SIOCGETPFSYNC`: whether the kernel's pfsync has
//! a syncdev (it must not while pfsyncd runs: it would speak pfsync on the same link and
//! consume the peers' packets).
//!
//! The kernels answer the same way (FreeBSD `sys/netpfil/pf/if_pfsync.c` `pfsyncioctl`,
//! read at freebsd/freebsd-src 01194da2; OpenBSD `sys/net/if_pfsync.c` `pfsync_get_ioc`):
//! they zero a `struct pfsyncreq`, `strlcpy` the syncdev's `if_xname` into
//! `pfsyncr_syncdev` when one is set, and copy the structure out to `ifr_data`.

use std::io;
use std::os::fd::AsRawFd;

use super::bindings::pfsyncreq;
use super::ioccom::iowr;

/// `SIOCGETPFSYNC`: `_IOWR('i', 248, struct ifreq)` on both BSDs (FreeBSD
/// `net/if_pfsync.h`, OpenBSD `sys/sockio.h`).
const SIOCGETPFSYNC: u32 = iowr(b'i', 248, std::mem::size_of::<libc::ifreq>());

/// The `pfsyncr_syncdev` field of interface `ifname` (`pfsync0`) as the kernel filled it:
/// all zero when it has no syncdev. `ENXIO`/`ENODEV`: no such interface (FreeBSD: pfsync.ko
/// not loaded; OpenBSD: pfsync0 not created).
pub fn pfsync_syncdev_field(ifname: &str) -> io::Result<[u8; libc::IFNAMSIZ]> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an interface name",
        ));
    }
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut answer = pfsyncreq::default();
    let mut ifr_name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, &src) in ifr_name.iter_mut().zip(ifname.as_bytes()) {
        *dst = src as libc::c_char;
    }
    let mut req = libc::ifreq {
        ifr_name,
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_data: (&mut answer as *mut pfsyncreq).cast(),
        },
    };
    // SAFETY: `socket` is open for the whole call. SIOCGETPFSYNC reads `ifr_name`
    // (NUL-terminated: shorter than IFNAMSIZ in a zeroed array) and copies out exactly
    // `sizeof(struct pfsyncreq)` bytes to `ifr_data`, which points at `answer`, a live,
    // exclusively borrowed `pfsyncreq` of the layout bindgen took from the same header.
    // `req` is a valid `ifreq` of the size the request number encodes.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGETPFSYNC as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut field = [0u8; libc::IFNAMSIZ];
    for (dst, &src) in field.iter_mut().zip(answer.pfsyncr_syncdev.iter()) {
        *dst = src as u8;
    }
    Ok(field)
}
