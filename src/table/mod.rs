//! The local state table: what the engine's [`TableOp`]s are applied to and what its
//! [`LocalChange`]s come from.
//!
//! [`StateTable`] is the interface; two implementations fit it:
//! - [`MemoryTable`] ([`memory`]): the states held in memory, with pf's expiry by timeout
//!   class. It is the default where `/dev/pf` does not exist, and makes the node a full
//!   cluster member without a packet filter: it answers bulk requests and can serve as a
//!   live replica or a monitor of a cluster. Tests and the lab drive it with local
//!   operations ([`MemoryTable::insert_local`] and friends).
//! - the pf backend (to come), over `/dev/pf` and pf netlink: list states, import
//!   (`DIOCADDSTATE`), update as kill-by-id + re-add (no kernel interface updates a state
//!   in place), kill by id, clear, the ruleset checksum, and change detection by periodic
//!   snapshot + diff ([`diff`]) since the kernels offer no change notification.
//!
//! # Contract
//!
//! - **States are named by `(creatorid, id)`.** Times in the states handed out
//!   (`age_secs`, `expire_secs`) are relative to the `now` of the call.
//! - **No-sync states are never reported.** A state with `PFSTATE_NOSYNC`, or of IP
//!   protocol 240 (pfsync itself), is left out of [`StateTable::poll_changes`],
//!   [`StateTable::for_each_state`] and [`StateTable::get`] ([`syncable`]); it still counts
//!   in [`StateTable::len`], which is the size of the table.
//! - **Echo suppression is the table's job.** What the engine did to the table through
//!   [`StateTable::import`], [`StateTable::update`], [`StateTable::remove`],
//!   [`StateTable::clear`] or [`StateTable::apply`] is *not* reported back by
//!   [`StateTable::poll_changes`]; only changes from elsewhere are (traffic, expiry, an
//!   administrator's `pfctl -k`/`-F states`, the memory table's local operations). The
//!   memory table knows exactly what it did; the pf backend recognises its own imports,
//!   updates and kills in the snapshot diff ([`diff::Echoes`]). The reason to do it here
//!   rather than in the engine: a table that echoed a peer's CLR as a local
//!   [`LocalChange::Clear`] would make the engine send a CLR of *our* states to every
//!   peer, and an echoed kill of an updated state (pf's kill + re-add) would become a
//!   DEL_C. The engine still tolerates the echoes that get through an imperfect filter
//!   (an insert or update equal to its copy is no news, a delete of an unknown state is
//!   ignored), so a missed echo costs at most a redundant message.
//! - **Errors are outcomes to count.** Every [`TableError`] names its [`Outcome`], and
//!   [`TableStats`] counts them; a failed operation never stops the daemon.

mod deadlines;
pub mod diff;
pub mod memory;
pub mod pf;
mod slot_bytes;
mod slot_index;
pub mod synth;
mod timeouts;

pub use memory::{InterfaceCheck, MemoryConfig, MemoryTable};
pub use timeouts::Timeouts;

use std::time::Instant;

use crate::engine::{LocalChange, TableOp, IPPROTO_PFSYNC};
use crate::state::{Protocol, State, StateFlags};
use crate::wire::IfName;

/// A state's name: `(creatorid, id)`.
pub type Key = (u32, u64);

/// The name of a state.
pub fn key_of(state: &State) -> Key {
    (state.creatorid, state.id)
}

/// True unless the state is never synced: flagged `PFSTATE_NOSYNC` (a `no-sync` rule), or
/// a state of pfsync's own traffic (IP protocol 240). Tables never report the others.
pub fn syncable(state: &State) -> bool {
    !state.state_flags.contains(StateFlags::NOSYNC)
        && state.wire.proto != Protocol::Other(IPPROTO_PFSYNC)
}

/// A local state table. See the [module documentation](self) for the contract.
pub trait StateTable {
    /// Adds a state a peer sent (pf: `DIOCADDSTATE`). Its creation time and last activity
    /// come from `age_secs` and `expire_secs` as a kernel's import takes them
    /// (pfsync-wire.md §2.10): created `age_secs` ago; expiring `expire_secs` from now, or
    /// after a full timeout of its class when `expire_secs` is 0.
    ///
    /// Errors: [`TableError::AlreadyExists`] (pf: `EEXIST`, a state of that name or a
    /// colliding key), [`TableError::Invalid`] (`EINVAL`: creatorid 0, an unknown
    /// interface, a rule or route the kernel refuses), [`TableError::Full`] (`ENOMEM`),
    /// [`TableError::Unsupported`] (`EOPNOTSUPP`: no pfsync in the kernel).
    fn import(&mut self, now: Instant, state: &State) -> Result<(), TableError>;

    /// Replaces a state with the engine's merged copy (pf: kill by id, then re-add). The
    /// state keeps its creation time; its last activity becomes `now`, as the kernels'
    /// merge sets it. [`TableError::NotFound`] if there is no such state.
    fn update(&mut self, now: Instant, state: &State) -> Result<(), TableError>;

    /// Removes a state (pf: kill by id and creator). `Ok(false)` if there was none.
    fn remove(&mut self, creatorid: u32, id: u64) -> Result<bool, TableError>;

    /// Removes the states of `creatorid` (every creator's if `None`) on `ifname` (on every
    /// interface if empty), and says how many went.
    fn clear(&mut self, creatorid: Option<u32>, ifname: &IfName) -> Result<usize, TableError>;

    /// Appends to `out` what changed in the table since the last call, except what this
    /// trait's own operations did, and never a no-sync state. The first call reports the
    /// states the table held when it was opened (pf: every state in the kernel; the
    /// memory table starts empty) as inserts.
    fn poll_changes(&mut self, now: Instant, out: &mut Vec<LocalChange>) -> Result<(), TableError>;

    /// One state, as of `now`; `None` if there is none (or it is a no-sync state).
    fn get(&mut self, now: Instant, creatorid: u32, id: u64) -> Result<Option<State>, TableError>;

    /// Calls `f` with every state but the no-sync ones, as of `now`, in no set order.
    fn for_each_state(&mut self, now: Instant, f: &mut dyn FnMut(&State))
        -> Result<(), TableError>;

    /// Every state but the no-sync ones, as of `now`.
    fn states(&mut self, now: Instant) -> Result<Vec<State>, TableError> {
        let mut all = Vec::with_capacity(self.len());
        self.for_each_state(now, &mut |s| all.push(*s))?;
        Ok(all)
    }

    /// How many states the table holds, no-sync ones included (for the pf backend: at its
    /// last snapshot).
    fn len(&self) -> usize;

    /// True when the table holds no state.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ruleset checksum for the pfsync header (FreeBSD's `pf_chksum`; all zero where
    /// there is no ruleset, as in the memory table).
    fn checksum(&self) -> [u8; 16];

    /// What the table refused, corrected or found incomplete at the kernel edge so far
    /// (all zero for a table without a kernel behind it).
    fn edge_counters(&self) -> EdgeCounters {
        EdgeCounters::default()
    }

    /// Carries out an engine operation; returns how many states it touched (a delete of a
    /// state that is not there touches none, and is no error).
    fn apply(&mut self, now: Instant, op: &TableOp) -> Result<usize, TableError> {
        match op {
            TableOp::Import(s) => self.import(now, s).map(|()| 1),
            TableOp::Update(s) => self.update(now, s).map(|()| 1),
            TableOp::Delete { creatorid, id } => self.remove(*creatorid, *id).map(usize::from),
            TableOp::Clear { creatorid, ifname } => self.clear(Some(*creatorid), ifname),
        }
    }

    /// [`StateTable::apply`], given also the compact encoding ([`crate::state::compact`])
    /// of an import's or update's state as it came off the engine's channel: bytes that
    /// decode to that state. A table that keeps states in that encoding (the memory
    /// table) stores them as they are instead of encoding the state again; the others
    /// ignore them.
    fn apply_encoded(
        &mut self,
        now: Instant,
        op: &TableOp,
        encoded: Option<&[u8]>,
    ) -> Result<usize, TableError> {
        let _ = encoded;
        self.apply(now, op)
    }
}

/// Bad input and incomplete answers met at the kernel edge, one counter each: what was
/// refused before any kernel call, what was corrected on its way in, and which kernel
/// answers were found incomplete. `ctl stats` shows them; none of them loses a state that
/// was already synced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgeCounters {
    /// Imports, updates or kills refused before the kernel call because the id or the
    /// creator id was 0 (a kill with id 0 would kill every state).
    pub refused_zero_id: u64,
    /// Imports whose remaining lifetime was larger than the local timeout of its class
    /// and was clamped to it (the kernels' unsigned arithmetic would wrap).
    pub expire_clamped: u64,
    /// Imports of a state bound to an interface this system does not have.
    pub unknown_interface: u64,
    /// Imports whose rule number was dropped (sent as -1) because the sender's ruleset
    /// checksum differs from ours.
    pub rule_unbound: u64,
    /// State listings the kernel cut short (a dump ended with an error, a DIOCGETSTATES
    /// answer that may have stopped before a hash row): listed again, never diffed.
    pub partial_listings: u64,
    /// States in a listing that did not decode, and were skipped.
    pub undecodable: u64,
    /// Updates not made because the local state is in a synproxy handshake
    /// (`PF_TCPS_PROXY_DST`): killing it to re-add it would make pf send the client a
    /// RST (`pf_unlink_state`, both kernels).
    pub synproxy_kept: u64,
    /// Capture buffers the receiver could not walk to their end (bpf), the rest lost.
    pub capture_bad_buffers: u64,
    /// Captured datagrams cut short, skipped.
    pub capture_cut: u64,
    /// Captured frames that are not well-formed pfsync over IP, skipped.
    pub capture_malformed: u64,
}

impl EdgeCounters {
    /// What a rise of counter `name` means, for the log.
    pub fn meaning(name: &str) -> &'static str {
        match name {
            "refused_zero_id" => "a peer's state with id or creator id 0, refused before any kernel call (a kill by id 0 kills every state)",
            "expire_clamped" => "a peer's state outliving the local timeout of its class, clamped to it",
            "unknown_interface" => "a peer's state bound to an interface this system does not have, not imported",
            "rule_unbound" => "a peer's rule number that cannot be vouched for, imported as the default rule",
            "partial_listings" => "a state listing the kernel cut short, listed again and not compared",
            "undecodable" => "states in the kernel's listing that did not decode, skipped",
            "synproxy_kept" => "a peer's update of a state in a local synproxy handshake, not made (the kill would send a RST)",
            "capture_bad_buffers" => "capture buffers that did not walk to their end, the rest lost",
            "capture_cut" => "captured datagrams cut short, skipped",
            "capture_malformed" => "captured frames that are not pfsync over IP, skipped",
            _ => "",
        }
    }

    /// The counters with their names, as `ctl stats` prints them.
    pub fn named(&self) -> [(&'static str, u64); 10] {
        [
            ("refused_zero_id", self.refused_zero_id),
            ("expire_clamped", self.expire_clamped),
            ("unknown_interface", self.unknown_interface),
            ("rule_unbound", self.rule_unbound),
            ("partial_listings", self.partial_listings),
            ("undecodable", self.undecodable),
            ("synproxy_kept", self.synproxy_kept),
            ("capture_bad_buffers", self.capture_bad_buffers),
            ("capture_cut", self.capture_cut),
            ("capture_malformed", self.capture_malformed),
        ]
    }
}

/// What an operation on the table came to: one counter each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Done.
    Done,
    /// A state of that name (or, in pf, with a colliding key) is there already (`EEXIST`).
    AlreadyExists,
    /// The table refused the state (`EINVAL`).
    Invalid,
    /// No such state (`ENOENT`, `ESRCH`).
    NotFound,
    /// The table is full (`ENOMEM`: pf's state limit).
    Full,
    /// The table cannot do this here (`EOPNOTSUPP`, `ENODEV`).
    Unsupported,
    /// Any other failure of the kernel interface.
    Io,
}

impl Outcome {
    /// The counter's name, as `pfsyncd` reports it.
    pub const fn counter(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::AlreadyExists => "exists",
            Outcome::Invalid => "invalid",
            Outcome::NotFound => "notfound",
            Outcome::Full => "full",
            Outcome::Unsupported => "unsupported",
            Outcome::Io => "io",
        }
    }
}

/// Why a table operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// A state of that name is there already (pf: `EEXIST`, also for a state key that
    /// collides with another state's).
    #[error("state {creatorid:08x}/{id:016x} exists already")]
    AlreadyExists {
        /// Its creator.
        creatorid: u32,
        /// Its id.
        id: u64,
    },
    /// The table refused the state (pf: `EINVAL`); the reason as far as it is known.
    #[error("state refused: {0}")]
    Invalid(&'static str),
    /// No such state.
    #[error("no state {creatorid:08x}/{id:016x}")]
    NotFound {
        /// Its creator.
        creatorid: u32,
        /// Its id.
        id: u64,
    },
    /// The table holds as many states as it may (pf: `ENOMEM`, the state limit).
    #[error("state table full")]
    Full,
    /// The operation is not available here (pf: `EOPNOTSUPP`); `hint` says what to do,
    /// e.g. "load pfsync.ko and bring pfsync0 up".
    #[error("not supported: {hint}")]
    Unsupported {
        /// What would make it work.
        hint: &'static str,
    },
    /// Another failure of the kernel interface.
    #[error("{op}: {source}")]
    Io {
        /// The operation, e.g. "DIOCADDSTATE".
        op: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

impl TableError {
    /// The outcome (counter) this error is counted in.
    pub fn outcome(&self) -> Outcome {
        match self {
            TableError::AlreadyExists { .. } => Outcome::AlreadyExists,
            TableError::Invalid(_) => Outcome::Invalid,
            TableError::NotFound { .. } => Outcome::NotFound,
            TableError::Full => Outcome::Full,
            TableError::Unsupported { .. } => Outcome::Unsupported,
            TableError::Io { .. } => Outcome::Io,
        }
    }

    /// Classifies a system error from operation `op` on state `key` by its kind:
    /// `EEXIST`, `ENOENT`, `EINVAL`, `ENOMEM` and `ENOSYS` get their own outcome, anything
    /// else is [`TableError::Io`]. A backend that knows more (`EOPNOTSUPP` from
    /// `DIOCADDSTATE` means pfsync is missing) builds the error itself.
    pub fn from_io(op: &'static str, key: Key, err: std::io::Error) -> TableError {
        use std::io::ErrorKind as K;
        let (creatorid, id) = key;
        match err.kind() {
            K::AlreadyExists => TableError::AlreadyExists { creatorid, id },
            K::NotFound => TableError::NotFound { creatorid, id },
            K::InvalidInput => TableError::Invalid(op),
            K::OutOfMemory => TableError::Full,
            K::Unsupported => TableError::Unsupported {
                hint: "the kernel lacks this interface",
            },
            _ => TableError::Io { op, source: err },
        }
    }
}

/// Counters of table operations, by operation and outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableStats {
    /// Imports done.
    pub imported: u64,
    /// Updates done.
    pub updated: u64,
    /// States removed by a delete.
    pub removed: u64,
    /// Deletes of a state that was not there.
    pub remove_missing: u64,
    /// States removed by clears.
    pub cleared: u64,
    /// Operations refused with [`Outcome::AlreadyExists`].
    pub exists: u64,
    /// ... with [`Outcome::Invalid`].
    pub invalid: u64,
    /// ... with [`Outcome::NotFound`].
    pub notfound: u64,
    /// ... with [`Outcome::Full`].
    pub full: u64,
    /// ... with [`Outcome::Unsupported`].
    pub unsupported: u64,
    /// ... with [`Outcome::Io`].
    pub io: u64,
}

impl TableStats {
    /// Counts the result of [`StateTable::apply`] for `op`.
    pub fn record(&mut self, op: &TableOp, result: &Result<usize, TableError>) {
        match result {
            Ok(n) => {
                let n = *n as u64;
                match op {
                    TableOp::Import(_) => self.imported += n,
                    TableOp::Update(_) => self.updated += n,
                    TableOp::Delete { .. } if n == 0 => self.remove_missing += 1,
                    TableOp::Delete { .. } => self.removed += n,
                    TableOp::Clear { .. } => self.cleared += n,
                }
            }
            Err(e) => self.count(e.outcome()),
        }
    }

    /// Counts one failure.
    pub fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Done => {}
            Outcome::AlreadyExists => self.exists += 1,
            Outcome::Invalid => self.invalid += 1,
            Outcome::NotFound => self.notfound += 1,
            Outcome::Full => self.full += 1,
            Outcome::Unsupported => self.unsupported += 1,
            Outcome::Io => self.io += 1,
        }
    }
}
