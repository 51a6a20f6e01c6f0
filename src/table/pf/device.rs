//! The pf device over any [`PfKernel`]: what to call on the running kernel, and what its
//! answers mean. This is the logic that used to sit in `crate::sys::pf` next to the
//! ioctls, where it could only be type-checked; here the kernel models of `tests/kernel`
//! run it.
//!
//! At open the device asks the kernel what it offers: pf's generic netlink family and
//! its commands (FreeBSD 14.0 has GETSTATES only; later 14.x and 15 also KILLSTATES and
//! GET_STATUS). Then:
//! - **Listing**: netlink GETSTATES where the family has it, as 1500 records (the
//!   netlink state carries what 1301 cannot: route interface, rtable, high state flags,
//!   queues, pipes); DIOCGETSTATES otherwise, as 1301 (FreeBSD) or OpenBSD records.
//! - **Kill**: netlink KILLSTATES where the family has it (FreeBSD 15 has no
//!   DIOCKILLSTATES: ENODEV), DIOCKILLSTATES otherwise. An id or creator id of 0 is
//!   refused before any call: id 0 is both kernels' "kill every state", creator id 0
//!   their own hostid.
//! - **Import**: DIOCADDSTATE everywhere (1301 on every FreeBSD).
//! - **Status** (checksum, hostid): OpenBSD DIOCGETSTATUS; FreeBSD netlink GET_STATUS,
//!   or DIOCGETSTATUS where the kernel still answers it; a kernel that answers neither is
//!   asked no more.

use std::io;

use super::kernel::{KillRequest, OsFamily, PfKernel};
use super::netlink::{self, FamilyInfo, PfStatus};
use super::{Listing, PfDevice};
use crate::state::Timeout;
use crate::table::Timeouts;
use crate::wire::{IfName, RecordFormat};

/// Free room, in records, a FreeBSD DIOCGETSTATES answer must leave to be taken as
/// whole: a cut answer leaves less room than the row that did not fit.
const FREEBSD_ROW_SLACK: usize = 64;

/// DIOCGETSTATES attempts before a listing is given up as partial.
const LIST_ATTEMPTS: usize = 3;

/// How a call is made on the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Netlink,
    Ioctl,
    /// Neither answers (FreeBSD 15 without the netlink command; status on 13).
    Missing,
}

/// The pf device: a kernel and what was found it offers.
pub struct KernelPf<K> {
    kernel: K,
    family: Option<FamilyInfo>,
    list_path: Path,
    kill_path: Path,
    status_path: Path,
    seq: u32,
}

impl<K: PfKernel> KernelPf<K> {
    /// The device over `kernel`, after asking it what it offers.
    pub fn open(mut kernel: K) -> KernelPf<K> {
        let os = kernel.os();
        let family = match os {
            OsFamily::FreeBsd => kernel
                .netlink()
                .and_then(|t| netlink::resolve_family_info(t, netlink::PF_FAMILY, 1).ok()),
            OsFamily::OpenBsd => None,
        };
        // A controller that lists no commands leaves it open: try netlink, and fall back
        // at the first refusal.
        let offers = |cmd: u8| {
            family
                .as_ref()
                .is_some_and(|f| f.has_command(cmd).unwrap_or(true))
        };
        let list_path = if offers(netlink::PFNL_CMD_GETSTATES) {
            Path::Netlink
        } else {
            Path::Ioctl
        };
        let kill_path = if offers(netlink::PFNL_CMD_KILLSTATES) {
            Path::Netlink
        } else {
            Path::Ioctl
        };
        let status_path = if offers(netlink::PFNL_CMD_GET_STATUS) {
            Path::Netlink
        } else {
            Path::Ioctl
        };
        KernelPf {
            kernel,
            family,
            list_path,
            kill_path,
            status_path,
            seq: 1,
        }
    }

    /// The kernel.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// The kernel, mutably (the tests move its clock and traffic).
    pub fn kernel_mut(&mut self) -> &mut K {
        &mut self.kernel
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn family_id(&self) -> io::Result<u16> {
        self.family
            .as_ref()
            .map(|f| f.id)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
    }

    /// States through pf's netlink family, as 1500 records.
    fn list_netlink(&mut self, out: &mut Vec<u8>) -> io::Result<Listing> {
        let family = self.family_id()?;
        let seq = self.next_seq();
        let t = self
            .kernel
            .netlink()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
        let mut states = Vec::new();
        // A state that does not decode is skipped: it was never reported either, so its
        // absence reads as nothing (a dump cut short is an error from dump_states).
        netlink::dump_states(t, family, seq, &mut states)?;
        let len = RecordFormat::FreeBsd1500.size();
        out.clear();
        out.resize(states.len() * len, 0);
        for (s, chunk) in states.iter().zip(out.chunks_exact_mut(len)) {
            s.to_record(RecordFormat::FreeBsd1500).0.emit_bytes(chunk);
        }
        Ok(Listing::Complete)
    }

    /// States through DIOCGETSTATES.
    ///
    /// FreeBSD copies whole id-hash rows and stops before the first row that does not
    /// fit, so an answer shorter than the buffer does not prove the listing whole. A cut
    /// answer means the kernel held more states than the buffer has room for; so an
    /// answer is taken as whole only when it leaves room to spare *and* the size the
    /// kernel gives right after (an upper bound: FreeBSD counts allocated states,
    /// OpenBSD its state count) fits the buffer. Otherwise the listing is taken again
    /// with a larger buffer, and given up as partial after [`LIST_ATTEMPTS`].
    fn list_ioctl(&mut self, out: &mut Vec<u8>) -> io::Result<Listing> {
        let record = self.format().size();
        // FreeBSD's ps_len is an int.
        let max = i32::MAX as usize / record * record;
        // Free room an answer must leave: OpenBSD fills state by state, so one record;
        // FreeBSD stops before a whole row.
        let slack = match self.kernel.os() {
            OsFamily::FreeBsd => FREEBSD_ROW_SLACK * record,
            OsFamily::OpenBsd => record,
        };
        let mut need = self.kernel.get_states(0, &mut [])?;
        let mut last_cap = 0;
        let mut got = 0;
        for _ in 0..LIST_ATTEMPTS {
            // Room for states created meanwhile, and at least twice the last try.
            let cap = (need + need / 8 + slack).max(last_cap * 2).min(max) / record * record;
            out.clear();
            out.resize(cap, 0);
            got = self.kernel.get_states(cap, out)?.min(cap);
            need = self.kernel.get_states(0, &mut [])?;
            if got + slack <= cap && need <= cap {
                out.truncate(got - got % record);
                return Ok(Listing::Complete);
            }
            if cap == max {
                break;
            }
            last_cap = cap;
        }
        out.truncate(got - got % record);
        Ok(Listing::Partial)
    }

    /// pf's status by netlink or DIOCGETSTATUS, as this kernel offers; `None` once
    /// neither answers.
    fn status(&mut self) -> io::Result<Option<PfStatus>> {
        if self.status_path == Path::Netlink {
            let family = self.family_id()?;
            let seq = self.next_seq();
            if let Some(t) = self.kernel.netlink() {
                match netlink::read_status(t, family, seq) {
                    Ok(s) => return Ok(Some(s)),
                    // 14.0: no GET_STATUS.
                    Err(e) if refused(&e) => self.status_path = Path::Ioctl,
                    Err(e) => return Err(e),
                }
            }
        }
        if self.status_path == Path::Ioctl {
            match self.kernel.get_status() {
                Ok(s) => {
                    return Ok(Some(PfStatus {
                        checksum: s.checksum,
                        hostid: u32::from_be(s.hostid_raw),
                        running: s.running,
                    }))
                }
                // FreeBSD 15's header and kernel have no DIOCGETSTATUS.
                Err(e) if refused(&e) => self.status_path = Path::Missing,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

/// An answer that says the call does not exist here (rather than that it failed).
fn refused(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENODEV) | Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY)
    )
}

fn path_name(path: Path, netlink: &'static str, ioctl: &'static str) -> &'static str {
    match path {
        Path::Netlink => netlink,
        Path::Ioctl => ioctl,
        Path::Missing => "nothing (the kernel answers neither)",
    }
}

impl<K: PfKernel> PfDevice for KernelPf<K> {
    fn format(&self) -> RecordFormat {
        match self.kernel.os() {
            OsFamily::FreeBsd => RecordFormat::FreeBsd1301,
            OsFamily::OpenBsd => RecordFormat::OpenBsd,
        }
    }

    fn list_format(&self) -> RecordFormat {
        match self.list_path {
            Path::Netlink => RecordFormat::FreeBsd1500,
            _ => self.format(),
        }
    }

    fn list(&mut self, out: &mut Vec<u8>) -> io::Result<Listing> {
        match self.list_path {
            Path::Netlink => self.list_netlink(out),
            _ => self.list_ioctl(out),
        }
    }

    fn add(&mut self, record: &[u8]) -> io::Result<()> {
        self.kernel.add_state(record)
    }

    fn kill(&mut self, creatorid: u32, id: u64) -> io::Result<u32> {
        if id == 0 || creatorid == 0 {
            // id 0: both kernels kill by the (all-zero) filters, every state; creator
            // id 0: they take their own hostid.
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if self.kill_path == Path::Netlink {
            let family = self.family_id()?;
            let seq = self.next_seq();
            if let Some(t) = self.kernel.netlink() {
                match netlink::kill_state(t, family, seq, creatorid, id) {
                    Ok(n) => return Ok(n),
                    Err(e) if refused(&e) => self.kill_path = Path::Ioctl,
                    Err(e) => return Err(e),
                }
            }
        }
        self.kernel
            .kill_states(KillRequest::for_state(creatorid, id))
    }

    fn checksum(&mut self) -> io::Result<[u8; 16]> {
        Ok(self.status()?.map_or([0; 16], |s| s.checksum))
    }

    fn hostid(&mut self) -> io::Result<Option<u32>> {
        Ok(self.status()?.map(|s| s.hostid))
    }

    fn timeouts(&mut self) -> io::Result<Timeouts> {
        let mut timeouts = Timeouts::DEFAULT;
        for class in Timeout::ALL {
            match self.kernel.get_timeout(class as u8) {
                Ok(secs) => timeouts.set(class, secs),
                // Past this kernel's PFTM_MAX (no SCTP classes before FreeBSD 14).
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(timeouts)
    }

    fn has_interface(&self, name: &IfName) -> Option<bool> {
        let name = name.to_string_lossy();
        // pf's own name for floating states, which no NIC has.
        if name == "all" {
            return Some(true);
        }
        self.kernel.interface_exists(&name)
    }

    fn describe(&self) -> String {
        let os = match self.kernel.os() {
            OsFamily::FreeBsd => "FreeBSD",
            OsFamily::OpenBsd => "OpenBSD",
        };
        let family = match &self.family {
            Some(f) => format!("netlink family {} ({})", netlink::PF_FAMILY, f.id),
            None => "no pf netlink family".to_owned(),
        };
        format!(
            "pf on {os}, {family}: states listed by {} ({} records), killed by {}, \
             imported by DIOCADDSTATE ({} records), status by {}",
            path_name(self.list_path, "netlink GETSTATES", "DIOCGETSTATES"),
            self.list_format().name(),
            path_name(self.kill_path, "netlink KILLSTATES", "DIOCKILLSTATES"),
            self.format().name(),
            path_name(self.status_path, "netlink GET_STATUS", "DIOCGETSTATUS"),
        )
    }
}
