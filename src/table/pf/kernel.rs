//! The raw calls pf's state table is reached by, one method per kernel call, bytes in and
//! bytes out as the kernel takes and gives them. `crate::sys::PfDev` makes them on a BSD;
//! the kernel models of `tests/kernel` answer them as the kernels' code does, so that
//! everything decided above them ([`super::device::KernelPf`]) runs in the tests.
//!
//! Nothing here interprets what the kernel says: no retry, no choice between the ioctl
//! and netlink, no errno mapping. That is the device's job.

use std::io;

use super::netlink::Transport;

/// Which kernel's pf: the calls exist on both, with different record formats and
/// semantics (FreeBSD copies whole hash rows in DIOCGETSTATES, OpenBSD state by state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsFamily {
    /// FreeBSD: 1301 records through the ioctls; netlink on 14 and later.
    FreeBsd,
    /// OpenBSD: its `struct pfsync_state` through the ioctls.
    OpenBsd,
}

/// The fields of `struct pfioc_state_kill` pfsyncd sets: `psk_pfcmp.id` and
/// `psk_pfcmp.creatorid`, everything else zero. Both are the raw values the kernel
/// compares with its states' (network order, as the records carry them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillRequest {
    /// `psk_pfcmp.id`, raw. 0 makes both kernels kill by the other (all-zero) filters:
    /// every state.
    pub id_raw: u64,
    /// `psk_pfcmp.creatorid`, raw. 0 makes both kernels use their own hostid.
    pub creatorid_raw: u32,
}

impl KillRequest {
    /// The request for the state `(creatorid, id)` as pfsyncd names it (host order).
    pub fn for_state(creatorid: u32, id: u64) -> KillRequest {
        KillRequest {
            id_raw: id.to_be(),
            creatorid_raw: creatorid.to_be(),
        }
    }
}

/// What OpenBSD's DIOCGETSTATUS tells of `struct pf_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoctlStatus {
    /// `hostid`, raw: the value pf stamps as creatorid on its states (network order).
    pub hostid_raw: u32,
    /// `pf_chksum`, the ruleset checksum.
    pub checksum: [u8; 16],
    /// `running`: pf enabled.
    pub running: bool,
}

/// The raw calls on pf's state table.
pub trait PfKernel {
    /// Which kernel answers.
    fn os(&self) -> OsFamily;
    /// DIOCGETSTATES with `ps_len` = `ps_len` and `ps_buf` = `buf`: the `ps_len` the
    /// kernel wrote back. With `ps_len` 0 the kernel writes nothing into `buf` and says
    /// the size it would need (an estimate). `buf` has at least `ps_len` bytes.
    fn get_states(&mut self, ps_len: usize, buf: &mut [u8]) -> io::Result<usize>;
    /// DIOCADDSTATE of one record (FreeBSD: 1301; OpenBSD: its own).
    fn add_state(&mut self, record: &[u8]) -> io::Result<()>;
    /// DIOCKILLSTATES: `psk_killed`.
    fn kill_states(&mut self, request: KillRequest) -> io::Result<u32>;
    /// DIOCGETSTATUS (OpenBSD; FreeBSD 15 has none: `ENODEV`).
    fn get_status(&mut self) -> io::Result<IoctlStatus>;
    /// DIOCGETTIMEOUT: the default rule's value (seconds) of timeout class `class`.
    fn get_timeout(&mut self, class: u8) -> io::Result<u32>;
    /// A generic netlink socket, where the kernel has one (FreeBSD 14 and later);
    /// whether pf's family answers on it is the device's to find out.
    fn netlink(&mut self) -> Option<&mut dyn Transport>;
    /// Whether this system has an interface of that name (`if_nametoindex`); `None`
    /// where it cannot tell.
    fn interface_exists(&self, name: &str) -> Option<bool> {
        let _ = name;
        None
    }
}
