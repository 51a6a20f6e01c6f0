//! The pf state table, through a [`PfDevice`]: the kernel's ioctls on the BSDs
//! (`crate::sys::PfDev`), or any other implementation of the same five operations.
//!
//! What this layer decides (and what the tests check, on Linux):
//! - **Records.** The ioctls take and give the pfsync wire records (kernel-interface.md
//!   §2.4: same layout and byte order): OpenBSD its 264-byte `struct pfsync_state`,
//!   FreeBSD the 1301 record (DIOCADDSTATE takes nothing else, also on 14 and 15). They
//!   are read and written by the wire codec, whose layouts the header oracle checks.
//! - **Import on FreeBSD** goes with rule -1 and no route: 14 and later refuse
//!   (`EINVAL`) a record naming a real rule unless the rule has exactly one route
//!   address, and the default rule only with a zero route address (§0.2). The imported
//!   state loses route-to, rtable, queues and tag, which the 1301 record cannot carry
//!   anyway.
//! - **Update** = kill by id + add. No kernel call changes a state in place (§0.4). It
//!   costs: the state's counters restart from the record's, the kernel announces the
//!   kill (a DEL_C on its own pfsync, silent here as pfsync0 has no syncdev), and a
//!   packet of the connection in between finds no state (pf then blocks or creates a
//!   new one, by the ruleset).
//! - **Errors** become [`TableError`]s by errno: `EEXIST` exists, `ENOENT`/`ESRCH` not
//!   found, `EINVAL` refused, `ENOMEM` full, `EOPNOTSUPP` unsupported with the cure
//!   (FreeBSD: `kldload pfsync` and `ifconfig pfsync0 up`), anything else I/O.
//! - **Changes** are found by listing every state each poll and diffing the listing
//!   with the previous one ([`Differ`]), our own imports, updates and kills recognised.
//!   No-sync states (`PFSTATE_NOSYNC`) are never reported nor listed.
//! - **Clear** of one creator's states: the kernels' clear ioctl clears every creator's,
//!   so the states are killed one by one from the last listing.
//! - The ruleset checksum for the pfsync header is not read yet: all zero (what the
//!   memory table sends too; receivers only compare it to decide on a bulk request).

pub mod netlink;

use std::io;
use std::time::Instant;

use super::diff::Differ;
use super::{syncable, StateTable, TableError};
use crate::engine::LocalChange;
use crate::state::State;
use crate::wire::msg::StateRecord;
use crate::wire::{IfName, RecordFormat};

/// The kernel operations the pf table needs. Records are in the device's
/// [`format`](PfDevice::format).
pub trait PfDevice {
    /// The record format the device takes and gives.
    fn format(&self) -> RecordFormat;
    /// Every state, as records, into `out` (replacing its content).
    fn list(&mut self, out: &mut Vec<u8>) -> io::Result<()>;
    /// Adds one state (DIOCADDSTATE).
    fn add(&mut self, record: &[u8]) -> io::Result<()>;
    /// Kills one state by id (DIOCKILLSTATES); how many went.
    fn kill(&mut self, creatorid: u32, id: u64) -> io::Result<u32>;
}

/// The cure for `EOPNOTSUPP` from DIOCADDSTATE.
pub const NO_PFSYNC: &str = "the kernel has no pfsync to import states with: on FreeBSD \
     `kldload pfsync` and `ifconfig pfsync0 up` (no syncdev); on OpenBSD a kernel with pfsync";

/// Turns a system error of `op` on state `key` into a table error.
pub fn error_of(op: &'static str, key: (u32, u64), e: io::Error) -> TableError {
    let (creatorid, id) = key;
    match e.raw_os_error() {
        Some(libc::EEXIST) => TableError::AlreadyExists { creatorid, id },
        Some(libc::ENOENT) | Some(libc::ESRCH) => TableError::NotFound { creatorid, id },
        Some(libc::EINVAL) => TableError::Invalid(op),
        Some(libc::ENOMEM) => TableError::Full,
        Some(libc::EOPNOTSUPP) | Some(libc::ENODEV) => TableError::Unsupported { hint: NO_PFSYNC },
        _ => TableError::from_io(op, key, e),
    }
}

/// The record a kernel's DIOCADDSTATE accepts for `state`.
pub fn import_record(state: &State, format: RecordFormat) -> StateRecord {
    let mut s = *state;
    if format == RecordFormat::FreeBsd1301 {
        // FreeBSD 14+ refuses real rule numbers and any route address (see above).
        s.rule = None;
        s.rt_addr = None;
        s.rt = crate::wire::RouteType::None;
    }
    s.to_record(format).0
}

/// The pf table over a device.
#[derive(Debug)]
pub struct PfTable<D> {
    dev: D,
    differ: Differ,
    listing: Vec<u8>,
    scratch: Vec<u8>,
    /// Records in the last listing that did not decode (counted, skipped).
    pub undecodable: u64,
}

impl<D: PfDevice> PfTable<D> {
    /// A table over `dev`; the first poll reports every syncable state as an insert.
    pub fn new(dev: D) -> PfTable<D> {
        PfTable {
            dev,
            differ: Differ::new(),
            listing: Vec::new(),
            scratch: Vec::new(),
            undecodable: 0,
        }
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The device, mutably.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    fn record_len(&self) -> usize {
        self.dev.format().size()
    }

    /// The states of the last listing, no-sync ones left out.
    fn listed(&mut self) -> Vec<State> {
        let format = self.dev.format();
        let len = self.record_len();
        let mut out = Vec::with_capacity(self.listing.len() / len);
        for chunk in self.listing.chunks_exact(len) {
            match StateRecord::parse(format, chunk)
                .ok()
                .and_then(|r| State::from_record(&r).ok())
            {
                Some(s) if syncable(&s) => out.push(s),
                Some(_) => {}
                None => self.undecodable += 1,
            }
        }
        out
    }

    fn add(&mut self, state: &State) -> Result<(), TableError> {
        let record = import_record(state, self.dev.format());
        self.scratch.clear();
        self.scratch.resize(record.buffer_len(), 0);
        record.emit_bytes(&mut self.scratch);
        let key = (state.creatorid, state.id);
        self.dev
            .add(&self.scratch)
            .map_err(|e| error_of("DIOCADDSTATE", key, e))
    }
}

impl<D: PfDevice> StateTable for PfTable<D> {
    fn import(&mut self, _now: Instant, state: &State) -> Result<(), TableError> {
        self.add(state)?;
        self.differ.echoes_mut().expect_state(state);
        Ok(())
    }

    fn update(&mut self, _now: Instant, state: &State) -> Result<(), TableError> {
        let key = (state.creatorid, state.id);
        let killed = self
            .dev
            .kill(state.creatorid, state.id)
            .map_err(|e| error_of("DIOCKILLSTATES", key, e))?;
        if killed == 0 {
            return Err(TableError::NotFound {
                creatorid: key.0,
                id: key.1,
            });
        }
        match self.add(state) {
            Ok(()) => {
                self.differ.echoes_mut().expect_state(state);
                Ok(())
            }
            Err(e) => {
                // Killed and not added back: the next listing must report it gone.
                self.differ.echoes_mut().expect_absent(key);
                Err(e)
            }
        }
    }

    fn remove(&mut self, creatorid: u32, id: u64) -> Result<bool, TableError> {
        let n = self
            .dev
            .kill(creatorid, id)
            .map_err(|e| error_of("DIOCKILLSTATES", (creatorid, id), e))?;
        self.differ.echoes_mut().expect_absent((creatorid, id));
        Ok(n > 0)
    }

    fn clear(&mut self, creatorid: Option<u32>, ifname: &IfName) -> Result<usize, TableError> {
        let doomed: Vec<(u32, u64)> = self
            .listed()
            .iter()
            .filter(|s| creatorid.is_none_or(|c| c == s.creatorid))
            .filter(|s| ifname.is_empty() || s.ifname == *ifname)
            .map(|s| (s.creatorid, s.id))
            .collect();
        let mut n = 0;
        for (c, id) in doomed {
            if self.remove(c, id)? {
                n += 1;
            }
        }
        Ok(n)
    }

    fn poll_changes(
        &mut self,
        _now: Instant,
        out: &mut Vec<LocalChange>,
    ) -> Result<(), TableError> {
        self.dev
            .list(&mut self.listing)
            .map_err(|e| error_of("DIOCGETSTATES", (0, 0), e))?;
        let states = self.listed();
        self.differ.poll(&states, out);
        Ok(())
    }

    fn get(&mut self, _now: Instant, creatorid: u32, id: u64) -> Result<Option<State>, TableError> {
        Ok(self
            .listed()
            .into_iter()
            .find(|s| s.creatorid == creatorid && s.id == id))
    }

    fn for_each_state(
        &mut self,
        _now: Instant,
        f: &mut dyn FnMut(&State),
    ) -> Result<(), TableError> {
        for s in self.listed() {
            f(&s);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.listing.len() / self.record_len()
    }

    fn checksum(&self) -> [u8; 16] {
        [0; 16]
    }
}
