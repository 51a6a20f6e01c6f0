//! `/dev/pf`: listing, adding and killing states with the kernel's ioctls, numbers and
//! structures from the kernel's headers (bindgen).
//!
//! FreeBSD 15's header hides DIOCGETSTATES and no longer has DIOCKILLSTATES (the kernels
//! still answer them when built with COMPAT_FREEBSD14, kernel-interface.md §0.1, VERIFY):
//! their numbers are computed here with [`iowr`] from the structures the header still
//! has, and [`iowr`] itself is checked at compile time against numbers the header does
//! give. FreeBSD 14/15's netlink listing is not used yet.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use super::bindings as k;
use super::from_bytes;
use super::ioccom::iowr;
use crate::table::pf::PfDevice;
use crate::wire::RecordFormat;

#[cfg(target_os = "freebsd")]
type WireState = k::pfsync_state_1301;
#[cfg(target_os = "openbsd")]
type WireState = k::pfsync_state;

/// The record DIOCADDSTATE and DIOCGETSTATES carry on this OS.
#[cfg(target_os = "freebsd")]
const FORMAT: RecordFormat = RecordFormat::FreeBsd1301;
#[cfg(target_os = "openbsd")]
const FORMAT: RecordFormat = RecordFormat::OpenBsd;

const RECORD: usize = std::mem::size_of::<WireState>();
const GETSTATES: u32 = iowr(b'D', 25, std::mem::size_of::<k::pfioc_states>());
const KILLSTATES: u32 = iowr(b'D', 41, std::mem::size_of::<k::pfioc_state_kill>());

const _: () = {
    // The ioctl structure is the record, and the record is the wire codec's.
    assert!(std::mem::size_of::<k::pfioc_state>() == RECORD);
    assert!(RECORD == FORMAT.size());
    // iowr gives the header's own numbers where the header has them.
    assert!(iowr(b'D', 37, std::mem::size_of::<k::pfioc_state>()) == k::DIOCADDSTATE);
    assert!(iowr(b'D', 19, std::mem::size_of::<k::pfioc_state>()) == k::DIOCGETSTATE);
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

/// The pf device, open read-write.
#[derive(Debug)]
pub struct PfDev {
    file: File,
    /// FreeBSD: pf's netlink family, where the kernel has it (14+), and the next
    /// request's sequence number; `None` once found missing (13, or an old 14).
    #[cfg(target_os = "freebsd")]
    netlink: Option<(super::NetlinkSocket, u16, u32)>,
}

/// The errno of the last call, as it is: the table turns errno values into outcomes
/// and names the operation itself.
fn ioctl_error(_what: &str) -> io::Error {
    io::Error::last_os_error()
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
            #[cfg(target_os = "freebsd")]
            netlink: open_netlink(),
        })
    }

    /// States through pf's netlink family, as pfctl lists them on FreeBSD 14 and 15 (15
    /// has the ioctl only in kernels built with COMPAT_FREEBSD14), written into `out`
    /// as 1301 records like the ioctl's. `None` without the family.
    #[cfg(target_os = "freebsd")]
    fn list_netlink(&mut self, out: &mut Vec<u8>) -> Option<io::Result<()>> {
        use crate::table::pf::netlink::dump_states;
        let (socket, family, seq) = self.netlink.as_mut()?;
        *seq = seq.wrapping_add(1);
        let mut states = Vec::new();
        if let Err(e) = dump_states(socket, *family, *seq, &mut states) {
            return Some(Err(e));
        }
        out.clear();
        out.resize(states.len() * RECORD, 0);
        for (s, chunk) in states.iter().zip(out.chunks_exact_mut(RECORD)) {
            s.to_record(FORMAT).0.emit_bytes(chunk);
        }
        Some(Ok(()))
    }
}

/// pf's netlink family, if this kernel has one.
#[cfg(target_os = "freebsd")]
fn open_netlink() -> Option<(super::NetlinkSocket, u16, u32)> {
    use crate::table::pf::netlink::{resolve_family, PF_FAMILY};
    let mut socket = super::NetlinkSocket::open().ok()?;
    let family = resolve_family(&mut socket, PF_FAMILY, 1).ok()?;
    Some((socket, family, 1))
}

impl PfDevice for PfDev {
    fn format(&self) -> RecordFormat {
        FORMAT
    }

    fn list(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        #[cfg(target_os = "freebsd")]
        if let Some(result) = self.list_netlink(out) {
            return result;
        }
        let fd = self.file.as_raw_fd();
        loop {
            let mut ps = k::pfioc_states::default();
            ps.ps_len = 0;
            // SAFETY: with ps_len 0 the kernel only writes ps_len (the size it needs)
            // into `ps`, a `struct pfioc_states` of the kernel's own layout.
            if unsafe { libc::ioctl(fd, GETSTATES as libc::c_ulong, &mut ps) } == -1 {
                return Err(ioctl_error("DIOCGETSTATES"));
            }
            let need = ps.ps_len as usize;
            // Room for states created meanwhile.
            let cap = (need + need / 8 + 64 * RECORD) / RECORD * RECORD;
            out.clear();
            out.resize(cap, 0);
            ps.ps_len = cap as _;
            set_buffer(&mut ps, out.as_mut_ptr());
            // SAFETY: `ps_buf` points at `cap` writable bytes of `out`, alive and not
            // otherwise used until the call returns; the kernel writes at most ps_len
            // bytes there and sets ps_len to what it wrote.
            if unsafe { libc::ioctl(fd, GETSTATES as libc::c_ulong, &mut ps) } == -1 {
                return Err(ioctl_error("DIOCGETSTATES"));
            }
            let got = ps.ps_len as usize;
            if got < cap {
                out.truncate(got - got % RECORD);
                return Ok(());
            }
            // Full: more states than room; list again.
        }
    }

    fn add(&mut self, record: &[u8]) -> io::Result<()> {
        let state: WireState = from_bytes(record).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a record of the wrong size")
        })?;
        let ps = k::pfioc_state { state };
        // SAFETY: DIOCADDSTATE reads one `struct pfioc_state`, which `ps` is.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), k::DIOCADDSTATE as libc::c_ulong, &ps) }
            == -1
        {
            return Err(ioctl_error("DIOCADDSTATE"));
        }
        Ok(())
    }

    #[cfg(target_os = "openbsd")]
    fn checksum(&mut self) -> io::Result<[u8; 16]> {
        let mut status = k::pf_status::default();
        // SAFETY: DIOCGETSTATUS writes one `struct pf_status`, which `status` is.
        if unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                k::DIOCGETSTATUS as libc::c_ulong,
                &mut status,
            )
        } == -1
        {
            return Err(ioctl_error("DIOCGETSTATUS"));
        }
        Ok(status.pf_chksum)
    }

    #[cfg(target_os = "freebsd")]
    fn checksum(&mut self) -> io::Result<[u8; 16]> {
        use crate::table::pf::netlink::read_checksum;
        match self.netlink.as_mut() {
            Some((socket, family, seq)) => {
                *seq = seq.wrapping_add(1);
                read_checksum(socket, *family, *seq)
            }
            // FreeBSD 13's DIOCGETSTATUS is gone from the 15 header this builds with.
            None => Ok([0; 16]),
        }
    }

    fn kill(&mut self, creatorid: u32, id: u64) -> io::Result<u32> {
        let mut psk = k::pfioc_state_kill::default();
        // The kernel compares the raw (network order) values of the records.
        psk.psk_pfcmp.id = id.to_be();
        psk.psk_pfcmp.creatorid = creatorid.to_be();
        // SAFETY: DIOCKILLSTATES reads and writes one `struct pfioc_state_kill`, which
        // `psk` is.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), KILLSTATES as libc::c_ulong, &mut psk) }
            == -1
        {
            return Err(ioctl_error("DIOCKILLSTATES"));
        }
        Ok(psk.psk_killed)
    }
}
