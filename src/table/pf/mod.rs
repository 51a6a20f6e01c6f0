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
//! - The ruleset checksum for the pfsync header is read at every poll (OpenBSD
//!   DIOCGETSTATUS, FreeBSD 14/15 the netlink status); receivers that find it equal to
//!   theirs trust the rule numbers of our states.

pub mod device;
pub mod kernel;
pub mod netlink;

pub use device::KernelPf;
pub use kernel::{KillRequest, OsFamily, PfKernel};

use std::io;
use std::time::Instant;

use super::diff::{diff, Change, ChangeKind, Echoes, Entry, Expect, Snapshot};
use super::{syncable, StateTable, TableError};
use crate::engine::LocalChange;
use crate::state::State;
use crate::wire::msg::{state_1301, state_openbsd, StateRecord};
use crate::wire::{Field, IfName, RecordFormat};

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
    /// The ruleset checksum (`pf_status.pf_chksum`), for the pfsync header; all zero
    /// where the kernel does not tell (receivers then do not trust our rule numbers).
    fn checksum(&mut self) -> io::Result<[u8; 16]> {
        Ok([0; 16])
    }
    /// pf's host id (`pf_status.hostid`, host order): the creator id pf stamps on local
    /// states. `None` where the kernel does not tell.
    fn hostid(&mut self) -> io::Result<Option<u32>> {
        Ok(None)
    }
    /// One line saying how this device lists, imports and kills states on the running
    /// kernel (e.g. "states listed by netlink GETSTATES, killed by netlink KILLSTATES,
    /// imported by DIOCADDSTATE (1301)"), for the start-up log and `pfsyncd check`.
    fn describe(&self) -> String {
        format!("states imported as {:?} records", self.format())
    }
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

/// Where a record keeps what the change detection reads without decoding it.
struct Layout {
    id: Field,
    creatorid: Field,
    proto: Field,
    /// The byte holding the low 8 state flags (NOSYNC is 0x08).
    flags_low: usize,
    /// What changes with the clock alone: age and expiry. Left out of the fingerprint;
    /// the counters stay in, as traffic on a state (a UDP state's packets, say) is news
    /// the peers need to keep it alive.
    volatile: [Field; 2],
}

fn layout(format: RecordFormat) -> Layout {
    match format {
        RecordFormat::OpenBsd => {
            use state_openbsd::field as f;
            Layout {
                id: f::id,
                creatorid: f::creatorid,
                proto: f::proto,
                // A big-endian u16: the low byte second.
                flags_low: f::state_flags.start + 1,
                volatile: [f::creation, f::expire],
            }
        }
        // The pf backend reads only the records its kernels give: OpenBSD's and 1301.
        _ => {
            use state_1301::field as f;
            Layout {
                id: f::id,
                creatorid: f::creatorid,
                proto: f::proto,
                flags_low: f::state_flags.start,
                volatile: [f::creation, f::expire],
            }
        }
    }
}

/// `PFSTATE_NOSYNC`, the same bit on both OSes.
const NOSYNC: u8 = 0x08;

impl Layout {
    /// The name, whether it is synced, and the fingerprint of a raw record.
    fn read(&self, r: &[u8], scratch: &mut [u8; 512]) -> ((u32, u64), bool, u64) {
        let id = u64::from_be_bytes(r[self.id.clone()].try_into().unwrap_or([0; 8]));
        let creatorid = u32::from_be_bytes(r[self.creatorid.clone()].try_into().unwrap_or([0; 4]));
        let synced =
            r[self.flags_low] & NOSYNC == 0 && r[self.proto.start] != crate::net::IPPROTO_PFSYNC;
        let n = r.len().min(scratch.len());
        scratch[..n].copy_from_slice(&r[..n]);
        for v in &self.volatile {
            scratch[v.clone()].fill(0);
        }
        ((creatorid, id), synced, fold(&scratch[..n]))
    }
}

/// A fast 64-bit digest (multiply and rotate per word): enough to notice a change.
fn fold(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        h = (h ^ v).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(29);
    }
    for &b in words.remainder() {
        h = (h ^ u64::from(b)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    }
    h ^ (h >> 31)
}

/// The pf table over a device.
pub struct PfTable<D> {
    dev: D,
    previous: Snapshot,
    echoes: Echoes,
    changes: Vec<Change>,
    listing: Vec<u8>,
    scratch: Vec<u8>,
    /// Records in the last listing that did not decode (counted, skipped).
    pub undecodable: u64,
    checksum: [u8; 16],
}

impl<D: PfDevice> PfTable<D> {
    /// A table over `dev`; the first poll reports every syncable state as an insert.
    pub fn new(dev: D) -> PfTable<D> {
        PfTable {
            dev,
            previous: Snapshot::new(),
            echoes: Echoes::new(),
            changes: Vec::new(),
            listing: Vec::new(),
            scratch: Vec::new(),
            undecodable: 0,
            checksum: [0; 16],
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

    /// The state of one record, if it decodes.
    fn decode(&mut self, index: u32) -> Option<State> {
        let len = self.record_len();
        let at = index as usize * len;
        let r = self.listing.get(at..at + len)?;
        let s = StateRecord::parse(self.dev.format(), r)
            .ok()
            .and_then(|r| State::from_record(&r).ok());
        if s.is_none() {
            self.undecodable += 1;
        }
        s
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
        // What the kernel lists may differ from what we gave in fields the record does
        // not fingerprint the same way (rule -1, flags): any fingerprint is our echo.
        self.echoes
            .expect((state.creatorid, state.id), Expect::Exists);
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
                self.echoes.expect(key, Expect::Exists);
                Ok(())
            }
            Err(e) => {
                // Killed and not added back: the next listing must report it gone.
                self.echoes.expect_absent(key);
                Err(e)
            }
        }
    }

    fn remove(&mut self, creatorid: u32, id: u64) -> Result<bool, TableError> {
        let n = self
            .dev
            .kill(creatorid, id)
            .map_err(|e| error_of("DIOCKILLSTATES", (creatorid, id), e))?;
        self.echoes.expect_absent((creatorid, id));
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
        // The ruleset may have been reloaded since; a failure keeps the last one.
        if let Ok(sum) = self.dev.checksum() {
            self.checksum = sum;
        }
        // Names and fingerprints straight from the records; only the states that
        // changed are decoded.
        let lay = layout(self.dev.format());
        let len = self.record_len();
        let mut scratch = [0u8; 512];
        let entries: Vec<Entry> = self
            .listing
            .chunks_exact(len)
            .enumerate()
            .filter_map(|(i, r)| {
                let (key, synced, fingerprint) = lay.read(r, &mut scratch);
                synced.then_some(Entry {
                    key,
                    fingerprint,
                    index: i as u32,
                })
            })
            .collect();
        let next = Snapshot::from_entries(entries);
        self.changes.clear();
        diff(&self.previous, &next, &mut self.echoes, &mut self.changes);
        let changes = std::mem::take(&mut self.changes);
        for c in &changes {
            match (c.kind, c.index) {
                (ChangeKind::Insert, Some(i)) => {
                    if let Some(s) = self.decode(i) {
                        out.push(LocalChange::Insert(s));
                    }
                }
                (ChangeKind::Update, Some(i)) => {
                    if let Some(s) = self.decode(i) {
                        out.push(LocalChange::Update(s));
                    }
                }
                _ => out.push(LocalChange::Delete {
                    creatorid: c.key.0,
                    id: c.key.1,
                }),
            }
        }
        self.changes = changes;
        self.previous = next;
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
        self.checksum
    }
}
