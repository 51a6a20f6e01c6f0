//! `/dev/pf`: the raw state calls of [`PfKernel`], numbers and structures from the
//! kernel's headers (bindgen). What to call and what the answers mean is decided in
//! `crate::table::pf::device`, which the kernel models test.
//!
//! FreeBSD 15's header hides DIOCGETSTATES (answered by kernels built with
//! COMPAT_FREEBSD14) and no longer has DIOCKILLSTATES (its kernel answers ENODEV,
//! kernel-edge-review F3): their numbers are computed here with [`iowr`] from the
//! structures the header still has, and [`iowr`] itself is checked at compile time
//! against numbers the header does give. FreeBSD 14 and 15 list and kill by pf's netlink
//! family where the kernel has it, through the socket [`PfKernel::netlink`] hands out.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use super::bindings as k;
use super::from_bytes;
use super::ioccom::iowr;
use crate::table::pf::kernel::{IoctlStatus, KillRequest, OsFamily, PfKernel};
use crate::table::pf::netlink::Transport;
use crate::wire::RecordFormat;

#[cfg(all(target_os = "freebsd", not(pfsyncd_freebsd_no_1301)))]
type WireState = k::pfsync_state_1301;
#[cfg(all(target_os = "freebsd", pfsyncd_freebsd_no_1301))]
type WireState = k::pfsync_state;
#[cfg(target_os = "openbsd")]
type WireState = k::pfsync_state;

/// The record DIOCADDSTATE and DIOCGETSTATES carry on this OS.
#[cfg(target_os = "freebsd")]
const FORMAT: RecordFormat = RecordFormat::FreeBsd1301;
#[cfg(target_os = "openbsd")]
const FORMAT: RecordFormat = RecordFormat::OpenBsd;

#[cfg(target_os = "freebsd")]
const OS: OsFamily = OsFamily::FreeBsd;
#[cfg(target_os = "openbsd")]
const OS: OsFamily = OsFamily::OpenBsd;

const RECORD: usize = std::mem::size_of::<WireState>();
const GETSTATES: u32 = iowr(b'D', 25, std::mem::size_of::<k::pfioc_states>());
const KILLSTATES: u32 = iowr(b'D', 41, std::mem::size_of::<k::pfioc_state_kill>());
const GETTIMEOUT: u32 = iowr(b'D', 30, std::mem::size_of::<k::pfioc_tm>());

const _: () = {
    // The ioctl structure is the record, and the record is the wire codec's.
    assert!(std::mem::size_of::<k::pfioc_state>() == RECORD);
    assert!(RECORD == FORMAT.size());
    // iowr gives the header's own numbers where the header has them.
    assert!(iowr(b'D', 37, std::mem::size_of::<k::pfioc_state>()) == k::DIOCADDSTATE);
    assert!(iowr(b'D', 19, std::mem::size_of::<k::pfioc_state>()) == k::DIOCGETSTATE);
    assert!(GETTIMEOUT == k::DIOCGETTIMEOUT);
};
// The fields the pf table reads straight from the records, where the codec says they
// are (the header oracle checks every field on Linux; this checks the target's own
// header at build time).
#[cfg(target_os = "freebsd")]
const _: () = {
    use crate::wire::msg::state_1301::field as f;
    use std::mem::offset_of;
    assert!(offset_of!(WireState, id) == f::id.start);
    assert!(offset_of!(WireState, creatorid) == f::creatorid.start);
    assert!(offset_of!(WireState, proto) == f::proto.start);
    assert!(offset_of!(WireState, state_flags) == f::state_flags.start);
    assert!(offset_of!(WireState, creation) == f::creation.start);
    assert!(offset_of!(WireState, expire) == f::expire.start);
};
#[cfg(target_os = "openbsd")]
const _: () = {
    use crate::wire::msg::state_openbsd::field as f;
    use std::mem::offset_of;
    assert!(offset_of!(WireState, id) == f::id.start);
    assert!(offset_of!(WireState, creatorid) == f::creatorid.start);
    assert!(offset_of!(WireState, proto) == f::proto.start);
    assert!(offset_of!(WireState, state_flags) == f::state_flags.start);
    assert!(offset_of!(WireState, creation) == f::creation.start);
    assert!(offset_of!(WireState, expire) == f::expire.start);
};

#[cfg(target_os = "openbsd")]
const _: () = {
    assert!(GETSTATES == k::DIOCGETSTATES);
    assert!(KILLSTATES == k::DIOCKILLSTATES);
};

/// Points a `pfioc_states` at a buffer (the union is named differently per OS).
#[cfg(target_os = "freebsd")]
fn set_buffer(ps: &mut k::pfioc_states, buf: *mut u8) {
    ps.__bindgen_anon_1.ps_buf = buf.cast();
}
#[cfg(target_os = "openbsd")]
fn set_buffer(ps: &mut k::pfioc_states, buf: *mut u8) {
    ps.ps_u.psu_buf = buf.cast();
}

/// The pf device, open read-write, and a generic netlink socket where there is one.
#[derive(Debug)]
pub struct PfDev {
    file: File,
    #[cfg(target_os = "freebsd")]
    netlink: Option<super::NetlinkSocket>,
}

impl PfDev {
    /// Opens `/dev/pf` read-write (root).
    pub fn open() -> io::Result<PfDev> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/pf")
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot open /dev/pf read-write: {e} (pfsyncd needs root, and pf loaded)"
                    ),
                )
            })?;
        Ok(PfDev {
            file,
            // 13 has no netlink; a 14 kernel without it is told by the family lookup.
            #[cfg(target_os = "freebsd")]
            netlink: super::NetlinkSocket::open().ok(),
        })
    }

    fn fd(&self) -> libc::c_int {
        self.file.as_raw_fd()
    }
}

/// The errno of the last call, as it is: the device turns errno values into outcomes.
fn last_error() -> io::Error {
    io::Error::last_os_error()
}

impl PfKernel for PfDev {
    fn os(&self) -> OsFamily {
        OS
    }

    fn get_states(&mut self, ps_len: usize, buf: &mut [u8]) -> io::Result<usize> {
        // FreeBSD's ps_len is an int: a larger request would turn negative, which the
        // kernel takes as "how much do you need" (the device clamps; so does this).
        let len = ps_len.min(buf.len()).min(i32::MAX as usize);
        let mut ps = k::pfioc_states {
            ps_len: len as _,
            ..Default::default()
        };
        set_buffer(&mut ps, buf.as_mut_ptr());
        // SAFETY: `ps` is a `struct pfioc_states` of the kernel's own layout; its buffer
        // points at `buf`, of which at least `ps_len` bytes are writable and not
        // otherwise used until the call returns (with ps_len 0 the kernel writes only
        // ps_len). The kernel writes at most ps_len bytes there.
        if unsafe { libc::ioctl(self.fd(), GETSTATES as libc::c_ulong, &mut ps) } == -1 {
            return Err(last_error());
        }
        Ok(ps.ps_len.max(0) as usize)
    }

    fn add_state(&mut self, record: &[u8]) -> io::Result<()> {
        let state: WireState = from_bytes(record).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a record of the wrong size")
        })?;
        let ps = k::pfioc_state { state };
        // SAFETY: DIOCADDSTATE reads one `struct pfioc_state`, which `ps` is.
        if unsafe { libc::ioctl(self.fd(), k::DIOCADDSTATE as libc::c_ulong, &ps) } == -1 {
            return Err(last_error());
        }
        Ok(())
    }

    fn kill_states(&mut self, request: KillRequest) -> io::Result<u32> {
        let mut psk = k::pfioc_state_kill::default();
        psk.psk_pfcmp.id = request.id_raw;
        psk.psk_pfcmp.creatorid = request.creatorid_raw;
        // SAFETY: DIOCKILLSTATES reads and writes one `struct pfioc_state_kill`, which
        // `psk` is.
        if unsafe { libc::ioctl(self.fd(), KILLSTATES as libc::c_ulong, &mut psk) } == -1 {
            return Err(last_error());
        }
        Ok(psk.psk_killed)
    }

    #[cfg(target_os = "openbsd")]
    fn get_status(&mut self) -> io::Result<IoctlStatus> {
        let mut status = k::pf_status::default();
        // SAFETY: DIOCGETSTATUS writes one `struct pf_status`, which `status` is.
        if unsafe { libc::ioctl(self.fd(), k::DIOCGETSTATUS as libc::c_ulong, &mut status) } == -1 {
            return Err(last_error());
        }
        Ok(IoctlStatus {
            hostid_raw: status.hostid,
            checksum: status.pf_chksum,
            running: status.running != 0,
        })
    }

    /// FreeBSD 15's header has no DIOCGETSTATUS (the kernel keeps only the nvlist
    /// one); the status comes from netlink.
    #[cfg(target_os = "freebsd")]
    fn get_status(&mut self) -> io::Result<IoctlStatus> {
        Err(io::Error::from_raw_os_error(libc::ENODEV))
    }

    fn get_timeout(&mut self, class: u8) -> io::Result<u32> {
        let mut tm = k::pfioc_tm {
            timeout: class.into(),
            seconds: 0,
        };
        // SAFETY: DIOCGETTIMEOUT reads and writes one `struct pfioc_tm`, which `tm` is.
        if unsafe { libc::ioctl(self.fd(), GETTIMEOUT as libc::c_ulong, &mut tm) } == -1 {
            return Err(last_error());
        }
        Ok(tm.seconds.max(0) as u32)
    }

    #[cfg(target_os = "freebsd")]
    fn netlink(&mut self) -> Option<&mut dyn Transport> {
        self.netlink.as_mut().map(|s| s as &mut dyn Transport)
    }

    #[cfg(target_os = "openbsd")]
    fn netlink(&mut self) -> Option<&mut dyn Transport> {
        None
    }

    fn interface_exists(&self, name: &str) -> Option<bool> {
        Some(nix::net::if_::if_nametoindex(name).is_ok())
    }
}
