//! The pf state table, through a [`PfDevice`]: [`KernelPf`] over the kernel's raw calls
//! ([`PfKernel`]: `crate::sys::PfDev` on the BSDs, the kernel models in the tests), or
//! any other implementation.
//!
//! What this layer decides (and what the tests check, on Linux):
//! - **Records.** The ioctls take and give the pfsync wire records (kernel-interface.md
//!   §2.4: same layout and byte order): OpenBSD its 264-byte `struct pfsync_state`,
//!   FreeBSD the 1301 record (DIOCADDSTATE takes nothing else, also on 14 and 15). A
//!   netlink listing (FreeBSD 14/15) comes as 1500 records, which carry what 1301
//!   cannot ([`PfDevice::list_format`]). They are read and written by the wire codec,
//!   whose layouts the header oracle checks.
//! - **Import on FreeBSD** goes with rule -1 and no route: 14 and later refuse
//!   (`EINVAL`) a record naming a real rule unless the rule has exactly one route
//!   address, and the default rule only with a zero route address (§0.2). The imported
//!   state loses route-to, rtable, queues and tag, which the 1301 record cannot carry
//!   anyway. **On OpenBSD** DIOCADDSTATE binds the record's rule number with no checksum
//!   check, so a rule number goes only while the local ruleset checksum is known (the
//!   engine keeps a peer's rule number only when its checksum equals ours); otherwise
//!   -1, counted as `rule_unbound`.
//! - **Expiry** of an import is clamped to the local timeout of its class (read with
//!   DIOCGETTIMEOUT, again after a ruleset change): both kernels subtract (timeout -
//!   expire) unsigned. Counted as `expire_clamped`. Listed expiries are clamped the same
//!   way (FreeBSD's netlink gives an expired state's as an absolute uptime).
//! - **Ids of 0** (state id or creator id) are refused before any kernel call and
//!   counted (`refused_zero_id`): a kill with id 0 kills every state on both kernels,
//!   and creator id 0 is the kernel's own hostid.
//! - **Update** = kill by id + add. No kernel call changes a state in place (§0.4). It
//!   costs: the state's counters restart from the record's, the kernel announces the
//!   kill (a DEL_C on its own pfsync, silent here as pfsync0 has no syncdev), and a
//!   packet of the connection in between finds no state (pf then blocks or creates a
//!   new one, by the ruleset).
//! - **Errors** become [`TableError`]s by errno: `EEXIST` exists, `ENOENT`/`ESRCH` not
//!   found, `EINVAL` refused, `ENOMEM` full (but not for an SCTP import, whose scrub
//!   memory is what failed), `EOPNOTSUPP` unsupported with the cure (FreeBSD: `kldload
//!   pfsync` and `ifconfig pfsync0 up`), `ENODEV` a call this kernel does not have,
//!   `EPERM` the securelevel, anything else I/O.
//! - **Changes** are found by listing every state each poll and diffing the listing
//!   with the previous one (`super::diff`), our own imports, updates and kills recognised.
//!   No-sync states (`PFSTATE_NOSYNC`) are never reported nor listed. A listing the
//!   device cannot prove whole ([`Listing::Partial`]) is counted (`partial_listings`)
//!   and never diffed: the last whole one stays.
//! - **Clear** of one creator's states: the kernels' clear ioctl clears every creator's,
//!   so the states are killed one by one from the last listing.
//! - The ruleset checksum for the pfsync header is read at every poll (OpenBSD
//!   DIOCGETSTATUS, FreeBSD 14/15 the netlink status); receivers that find it equal to
//!   theirs trust the rule numbers of our states.

pub mod device;
pub mod kernel;
pub mod netlink;

pub use device::KernelPf;
pub use kernel::{IoctlStatus, KillRequest, OsFamily, PfKernel};

use std::io;
use std::time::Instant;

use super::diff::{diff, Change, ChangeKind, Echoes, Entry, Expect, Snapshot};
use super::{syncable, EdgeCounters, StateTable, TableError, Timeouts};
use crate::engine::LocalChange;
use crate::state::{PeerState, Protocol, State, TcpState};
use crate::wire::msg::{state_1301, state_1500, state_openbsd, StateRecord};
use crate::wire::{Field, IfName, RecordFormat};

/// What a listing came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Every state the kernel held.
    Complete,
    /// The kernel may have left states out (a DIOCGETSTATES that stopped before a hash
    /// row, a dump cut short): not to be compared with the last listing, as missing
    /// states would read as deleted.
    Partial,
}

/// The kernel operations the pf table needs. Imports are in the device's
/// [`format`](PfDevice::format), listings in its [`list_format`](PfDevice::list_format).
pub trait PfDevice {
    /// The record format DIOCADDSTATE takes.
    fn format(&self) -> RecordFormat;
    /// The record format [`list`](PfDevice::list) gives: the import format, or FreeBSD's
    /// 1500 when states are listed by netlink (which carries more than 1301 can).
    fn list_format(&self) -> RecordFormat {
        self.format()
    }
    /// Every state, as records, into `out` (replacing its content).
    fn list(&mut self, out: &mut Vec<u8>) -> io::Result<Listing>;
    /// Adds one state (DIOCADDSTATE).
    fn add(&mut self, record: &[u8]) -> io::Result<()>;
    /// Kills one state by id (DIOCKILLSTATES or netlink KILLSTATES); how many went.
    /// Refuses (`EINVAL`, no kernel call) an id or creator id of 0: the kernels read
    /// them as "every state" and "our hostid".
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
    /// Whether a state bound to interface `name` can be imported here: the interface
    /// exists, or the name is pf's "all" (floating states). `None` where the device
    /// cannot tell, and the kernel decides.
    fn has_interface(&self, name: &IfName) -> Option<bool> {
        let _ = name;
        None
    }
    /// The local timeouts (the default rule's, `set timeout`), which imports are
    /// measured against; pf's defaults where the kernel does not tell.
    fn timeouts(&mut self) -> io::Result<Timeouts> {
        Ok(Timeouts::DEFAULT)
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

/// What `ENODEV` means: pf's ioctl switch has no such call.
pub const NO_SUCH_CALL: &str = "the kernel has no such pf call (ENODEV): FreeBSD 15 has no \
     DIOCKILLSTATES and kills through pf's netlink family (PFNL_CMD_KILLSTATES), which this \
     kernel did not offer; see the start-up line that says what the device found";

/// What `EPERM` from a state call means on a root process.
pub const SECURELEVEL: &str = "the kernel refuses state changes at this securelevel (EPERM; \
     OpenBSD above 1, FreeBSD above 2): lower kern.securelevel, or run pfsyncd before it is raised";

/// Turns a system error of `op` on state `key` into a table error.
pub fn error_of(op: &'static str, key: (u32, u64), e: io::Error) -> TableError {
    let (creatorid, id) = key;
    match e.raw_os_error() {
        Some(libc::EEXIST) => TableError::AlreadyExists { creatorid, id },
        Some(libc::ENOENT) | Some(libc::ESRCH) => TableError::NotFound { creatorid, id },
        Some(libc::EINVAL) => TableError::Invalid(op),
        Some(libc::ENOMEM) => TableError::Full,
        // pfsync's import hook is missing (FreeBSD: pfsync.ko not loaded or pfsync0 down).
        Some(libc::EOPNOTSUPP) => TableError::Unsupported { hint: NO_PFSYNC },
        Some(libc::ENODEV) => TableError::Unsupported { hint: NO_SUCH_CALL },
        Some(libc::EPERM) => TableError::Unsupported { hint: SECURELEVEL },
        _ => TableError::from_io(op, key, e),
    }
}

/// [`error_of`] for an import of `state`: FreeBSD's import answers `ENOMEM` for every
/// allocation it could not make (`pfsync_state_import`'s cleanup path), and an SCTP
/// state needs scrub memory a state of another protocol does not, so there it is not
/// "table full".
fn import_error_of(state: &State, e: io::Error) -> TableError {
    if e.raw_os_error() == Some(libc::ENOMEM) && state.wire.proto == Protocol::Sctp {
        return TableError::Invalid(
            "DIOCADDSTATE: ENOMEM on an SCTP state: pf could not set up its scrub state \
             (kernel memory), not a full state table",
        );
    }
    error_of("DIOCADDSTATE", (state.creatorid, state.id), e)
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
        // FreeBSD's netlink listing (see PfDevice::list_format).
        RecordFormat::FreeBsd1500 => {
            use state_1500::field as f;
            Layout {
                id: f::id,
                creatorid: f::creatorid,
                proto: f::wire_proto,
                // A big-endian u16: the low byte second.
                flags_low: f::state_flags.start + 1,
                volatile: [f::creation, f::expire],
            }
        }
        // The ioctls' 1301 (1400 is no kernel's listing format; read as 1301 would be
        // wrong, but no device gives it).
        RecordFormat::FreeBsd1301 | RecordFormat::FreeBsd1400 => {
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
    /// The last complete listing, in the device's list format.
    listing: Vec<u8>,
    /// The listing being taken, swapped in only when complete.
    incoming: Vec<u8>,
    scratch: Vec<u8>,
    counters: EdgeCounters,
    checksum: [u8; 16],
    /// The local timeouts, read at the first use and again when the ruleset changes.
    timeouts: Option<Timeouts>,
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
            incoming: Vec::new(),
            scratch: Vec::new(),
            counters: EdgeCounters::default(),
            checksum: [0; 16],
            timeouts: None,
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
        self.dev.list_format().size()
    }

    /// The local timeouts; pf's defaults when the kernel does not tell, until the next
    /// ruleset change asks again (not at every use: a listing decodes every state).
    fn timeouts(&mut self) -> Timeouts {
        if let Some(t) = self.timeouts {
            return t;
        }
        let t = self.dev.timeouts().unwrap_or(Timeouts::DEFAULT);
        self.timeouts = Some(t);
        t
    }

    /// A listed state as peers are told of it: FreeBSD's netlink gives an expired
    /// state's expiry as an absolute uptime (kernel-edge-review F12), so no listed
    /// expiry is taken beyond the local timeout of its class.
    fn as_listed(&mut self, mut s: State) -> State {
        let limit = self.timeouts().get(s.timeout);
        s.expire_secs = s.expire_secs.min(limit);
        s
    }

    /// A synced state of the last listing, found through the snapshot's index (no-sync
    /// states are not in it), as the kernel listed it.
    fn listed_state(&self, key: (u32, u64)) -> Option<State> {
        let entry = self.previous.get(key)?;
        let len = self.record_len();
        let at = entry.index as usize * len;
        let r = self.listing.get(at..at + len)?;
        let s = StateRecord::parse(self.dev.list_format(), r)
            .ok()
            .and_then(|r| State::from_record(&r).ok())?;
        ((s.creatorid, s.id) == key).then_some(s)
    }

    /// The state of one record, if it decodes.
    fn decode(&mut self, index: u32) -> Option<State> {
        let len = self.record_len();
        let at = index as usize * len;
        let r = self.listing.get(at..at + len)?;
        let s = StateRecord::parse(self.dev.list_format(), r)
            .ok()
            .and_then(|r| State::from_record(&r).ok());
        match s {
            Some(s) => Some(self.as_listed(s)),
            None => {
                self.counters.undecodable += 1;
                None
            }
        }
    }

    /// The states of the last listing, no-sync ones left out.
    fn listed(&mut self) -> Vec<State> {
        let format = self.dev.list_format();
        let len = self.record_len();
        let mut out = Vec::with_capacity(self.listing.len() / len);
        // Undecodable records are counted once, when a poll meets them (decode).
        for chunk in self.listing.chunks_exact(len) {
            match StateRecord::parse(format, chunk)
                .ok()
                .and_then(|r| State::from_record(&r).ok())
            {
                Some(s) if syncable(&s) => out.push(s),
                _ => {}
            }
        }
        out.into_iter().map(|s| self.as_listed(s)).collect()
    }

    /// Refuses a state name the kernels would read as "every state" (id 0) or "our
    /// hostid" (creator id 0), before any kernel call.
    fn refuse_zero(&mut self, creatorid: u32, id: u64) -> Result<(), TableError> {
        if id == 0 || creatorid == 0 {
            self.counters.refused_zero_id += 1;
            return Err(TableError::Invalid(
                "a state id or creator id of 0 (the kernels' kill-all and own-hostid values)",
            ));
        }
        Ok(())
    }

    /// Refuses a state bound to an interface this system does not have, before any
    /// kernel call: FreeBSD's ioctl import answers EINVAL (`pfsync_state_import`,
    /// `pfi_kkif_find`); OpenBSD's (`pf_state_import`, `pfi_kif_get`) makes a kif for
    /// the name and imports a state no packet can match, which only takes room.
    fn refuse_unknown_interface(&mut self, state: &State) -> Result<(), TableError> {
        if self.dev.has_interface(&state.ifname) == Some(false) {
            self.counters.unknown_interface += 1;
            return Err(TableError::Invalid(
                "a state bound to an interface this system does not have",
            ));
        }
        Ok(())
    }

    /// Refuses to update (kill and re-add) a state whose local copy is in a synproxy
    /// handshake: both kernels answer the unlink of a state in `PF_TCPS_PROXY_DST` with a
    /// RST to the client (FreeBSD and OpenBSD `pf_unlink_state`/`pf_remove_state`). The
    /// update waits: once the handshake is through, the state's next update goes in.
    fn refuse_synproxy_kill(&mut self, state: &State) -> Result<(), TableError> {
        let in_handshake = self
            .listed_state((state.creatorid, state.id))
            .is_some_and(|l| l.src.state == PeerState::Tcp(TcpState::ProxyDst));
        if in_handshake {
            self.counters.synproxy_kept += 1;
            return Err(TableError::Invalid(
                "the local state is in a synproxy handshake: killing it to update it would reset the client",
            ));
        }
        Ok(())
    }

    /// The state as it may be given to this kernel's DIOCADDSTATE.
    fn importable(&mut self, state: &State) -> State {
        let mut s = *state;
        // Both kernels subtract (local timeout - expire) in unsigned arithmetic: an
        // expire beyond the local timeout would wrap (never expire, or go at once).
        let limit = self.timeouts().get(s.timeout);
        if s.expire_secs > limit {
            s.expire_secs = limit;
            self.counters.expire_clamped += 1;
        }
        // OpenBSD binds an ioctl import's rule number with no checksum check
        // (pf_state_import, PFSYNC_SI_IOCTL). The engine keeps a rule number only when
        // the sender's ruleset checksum equals ours; while ours is unknown (all zero, no
        // poll yet or a kernel that does not tell) nothing can be vouched for.
        if self.dev.format() == RecordFormat::OpenBsd
            && s.rule.is_some()
            && self.checksum == [0; 16]
        {
            s.rule = None;
            self.counters.rule_unbound += 1;
        }
        s
    }

    fn add(&mut self, state: &State) -> Result<(), TableError> {
        let importable = self.importable(state);
        let record = import_record(&importable, self.dev.format());
        self.scratch.clear();
        self.scratch.resize(record.buffer_len(), 0);
        record.emit_bytes(&mut self.scratch);
        self.dev
            .add(&self.scratch)
            .map_err(|e| import_error_of(state, e))
    }

    /// Reads the ruleset checksum; a new ruleset may come with new timeouts.
    fn read_checksum(&mut self) {
        // A failure keeps the last one.
        if let Ok(sum) = self.dev.checksum() {
            if sum != self.checksum {
                self.timeouts = None;
            }
            self.checksum = sum;
        }
    }
}

impl<D: PfDevice> StateTable for PfTable<D> {
    fn import(&mut self, _now: Instant, state: &State) -> Result<(), TableError> {
        self.refuse_zero(state.creatorid, state.id)?;
        self.refuse_unknown_interface(state)?;
        self.add(state)?;
        // What the kernel lists may differ from what we gave in fields the record does
        // not fingerprint the same way (rule -1, flags): any fingerprint is our echo.
        self.echoes
            .expect((state.creatorid, state.id), Expect::Exists);
        Ok(())
    }

    fn update(&mut self, _now: Instant, state: &State) -> Result<(), TableError> {
        self.refuse_zero(state.creatorid, state.id)?;
        self.refuse_synproxy_kill(state)?;
        // Before the kill: a state killed and then refused would be lost.
        self.refuse_unknown_interface(state)?;
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
        self.refuse_zero(creatorid, id)?;
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
        let listing = self
            .dev
            .list(&mut self.incoming)
            .map_err(|e| error_of("DIOCGETSTATES", (0, 0), e))?;
        self.read_checksum();
        if listing == Listing::Partial {
            // States left out would read as deleted: keep the last complete listing
            // and its snapshot, and try again at the next poll.
            self.counters.partial_listings += 1;
            return Ok(());
        }
        std::mem::swap(&mut self.listing, &mut self.incoming);
        // Names and fingerprints straight from the records; only the states that
        // changed are decoded.
        let lay = layout(self.dev.list_format());
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
        // One record through the last snapshot's index, not the whole listing: the
        // parent asks after every crossed delete or clear.
        Ok(self
            .listed_state((creatorid, id))
            .map(|s| self.as_listed(s)))
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

    fn edge_counters(&self) -> EdgeCounters {
        self.counters
    }
}
