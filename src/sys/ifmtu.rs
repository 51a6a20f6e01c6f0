//! Interface ioctls the safe crates do not offer (the sync link's MTU).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `SIOCGIFMTU` of the OS (the `libc` crate has it for Linux only).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SIOCGIFMTU: libc::c_ulong = libc::SIOCGIFMTU;
#[cfg(target_os = "freebsd")]
const SIOCGIFMTU: libc::c_ulong = iowr(b'i', 51, std::mem::size_of::<libc::ifreq>());
#[cfg(target_os = "openbsd")]
const SIOCGIFMTU: libc::c_ulong = iowr(b'i', 126, std::mem::size_of::<libc::ifreq>());

/// BSD `_IOWR(group, num, type)`.
#[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
const fn iowr(group: u8, num: u8, len: usize) -> libc::c_ulong {
    (0xc000_0000 | ((len as u32 & 0x1fff) << 16) | ((group as u32) << 8) | num as u32)
        as libc::c_ulong
}

/// Asks the kernel for the MTU of `name` with `SIOCGIFMTU` on `socket` (any open
/// socket).
///
/// Neither std, socket2 nor nix has a safe way to read an interface's MTU. `name` must
/// be non-empty, shorter than `IFNAMSIZ` and without NUL; anything else is refused.
pub fn interface_mtu(socket: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an interface name",
        ));
    }

    let mut ifr_name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (dst, &src) in ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    // The union member the kernel writes (OpenBSD overloads ifru_metric as ifr_mtu).
    #[cfg(not(target_os = "openbsd"))]
    let ifru = libc::__c_anonymous_ifr_ifru { ifru_mtu: 0 };
    #[cfg(target_os = "openbsd")]
    let ifru = libc::__c_anonymous_ifr_ifru { ifru_metric: 0 };
    let mut req = libc::ifreq {
        ifr_name,
        ifr_ifru: ifru,
    };
    // SAFETY: `socket` is an open socket borrowed for the whole call. SIOCGIFMTU reads
    // `ifr_name`, NUL-terminated because the name is shorter than IFNAMSIZ and the array was
    // zero-filled, and writes only the MTU into `req`, which is a valid, exclusively borrowed
    // `ifreq` of the size the request number encodes. The request type differs per libc
    // (c_ulong on glibc and the BSDs, c_int on musl), hence the cast.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), SIOCGIFMTU as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union was initialised through this very member above and the successful
    // ioctl wrote it; every bit pattern is a valid c_int.
    #[cfg(not(target_os = "openbsd"))]
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    // SAFETY: as above, for OpenBSD's member.
    #[cfg(target_os = "openbsd")]
    let mtu = unsafe { req.ifr_ifru.ifru_metric };
    u32::try_from(mtu).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative MTU"))
}
