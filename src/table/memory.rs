//! The memory table: states held in memory, expiring as pf's do.
//!
//! # Time
//!
//! The table keeps whole seconds, as pf does (`time_uptime`), counted from the first
//! `now` it is given. Each state has a creation time, a last activity and a deadline:
//! last activity + the value of its timeout class ([`Timeouts`], pf's defaults unless
//! configured). States handed out carry `age_secs` = now − creation and `expire_secs` =
//! deadline − now (0 once due).
//!
//! A state added with `age_secs`/`expire_secs` (an import, or a local insert) takes them
//! as a kernel's import does (pfsync-wire.md §2.10): created `age_secs` ago; with
//! `expire_secs` ≠ 0 its last activity is now − (timeout value − `expire_secs`), so it
//! expires `expire_secs` from now; with 0 its last activity is now, a full timeout. An
//! update (the engine's merge, or a local update) sets the last activity to now and keeps
//! the creation time.
//!
//! A state is due when its deadline is at or before now; due states are removed by
//! [`MemoryTable::expire`], which [`StateTable::poll_changes`] runs first, and reported as
//! deletes (pf sends a DEL_C for an expired state whoever created it). Until then they are
//! still listed, with `expire_secs` 0, as `pfctl -ss` shows them until the purge. pf's
//! adaptive timeouts (scaling by table size) are not applied.
//!
//! # Changes
//!
//! The table knows what it did, so it reports exactly: local operations
//! ([`insert_local`](MemoryTable::insert_local), [`update_local`](MemoryTable::update_local),
//! [`delete_local`](MemoryTable::delete_local), [`clear_local`](MemoryTable::clear_local))
//! and expiries are noted in order, and [`StateTable::poll_changes`] reports them in that
//! order, with each state as it is at the poll, at most once per poll (an insert followed
//! by updates is one insert), and nothing for a state inserted and gone again between two
//! polls. Expiries are found when the poll runs, so they follow the operations noted before
//! it. What the engine did through [`StateTable`] is never reported (the table
//! [contract](super)).
//!
//! A local clear is `pfctl -F states [-i ifname]`: it removes the states of every creator
//! on the interface and is reported as one [`LocalChange::Clear`] (the engine sends a CLR
//! of our creator id), not as deletes. The engine, hearing of it at the poll, drops every
//! state it holds on that interface, so the clear is followed by inserts of the states
//! the table got on the interface since (the engine's imports included: the kernels
//! ignore an INS of a state they hold).

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use crate::engine::{KeyedState, LocalChange, TableOp};
use crate::state::compact_record::peek::{CheckedRecord, PeekedState};
use crate::state::{compact, State, Timeout};
use crate::sys::memory::PopulateAhead;
use crate::wire::IfName;

use super::deadlines::Deadlines;
use super::slot_bytes::{Bytes, Spill};
use super::slot_index::SlotIndex;
use super::{key_of, syncable, EdgeCounters, Key, StateTable, TableError, Timeouts};

/// Settings of a [`MemoryTable`].
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Our host id: the creator of local states.
    pub creatorid: u32,
    /// The id of the first local state; later ones count up. Seed it from the clock
    /// (as FreeBSD seeds its counters with the time pf started) so that a restarted
    /// daemon does not reuse the ids its peers still hold.
    pub first_id: u64,
    /// Seconds per timeout class.
    pub timeouts: Timeouts,
    /// Most states the table holds (pf's `set limit states`); `None` for no limit.
    pub limit: Option<usize>,
    /// Whether a peer's state must be bound to an interface this system has, as pf
    /// imports it. Off by default: a replica or a lab node holds states of interfaces
    /// it does not have.
    pub interfaces: InterfaceCheck,
}

/// Which interface names a peer's state may be bound to in the memory table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum InterfaceCheck {
    /// Any name (the default).
    #[default]
    Off,
    /// The names of this system's interfaces (`if_nametoindex`, asked at each import).
    System,
    /// These names only.
    Only(Vec<IfName>),
}

impl InterfaceCheck {
    /// Whether a state bound to `name` may be imported. pf's "all" (floating states)
    /// always may; so may a state with no name, which no interface check can refuse in pf
    /// either.
    fn admits(&self, name: &IfName) -> bool {
        if matches!(self, InterfaceCheck::Off)
            || name.is_empty()
            || crate::engine::IfMap::is_floating(name)
        {
            return true;
        }
        match self {
            InterfaceCheck::Off => true,
            InterfaceCheck::System => std::str::from_utf8(name.as_bytes())
                .is_ok_and(|n| nix::net::if_::if_nametoindex(n).is_ok()),
            InterfaceCheck::Only(names) => names.iter().any(|n| n.as_bytes() == name.as_bytes()),
        }
    }
}

impl MemoryConfig {
    /// Defaults: ids from 1, pf's timeouts, no limit.
    pub fn new(creatorid: u32) -> MemoryConfig {
        MemoryConfig {
            creatorid,
            first_id: 1,
            timeouts: Timeouts::DEFAULT,
            limit: None,
            interfaces: InterfaceCheck::Off,
        }
    }
}

/// A state, in the compact encoding of [`crate::state::compact`] (about a third of a
/// `State`'s width: a million states cost some 250 MB less), and its times, in table
/// seconds.
#[derive(Debug)]
struct Slot {
    id: u64,
    creatorid: u32,
    created: i64,
    /// When the state expires. Its last activity is not kept: it is always the
    /// deadline less the timeout of its class (see [`MemoryTable::set_timeouts`]).
    deadline: i64,
    bytes: Bytes,
}

impl Slot {
    fn key(&self) -> Key {
        (self.creatorid, self.id)
    }

    /// The state, its bytes read from the table's `spill` if they are there.
    fn state(&self, spill: &Spill) -> State {
        // Slots hold what this table encoded from whole states, or records checked
        // whole as `decode` checks them (`CheckedRecord`, `apply_record`): a failure is
        // a bug in the codec or the check, which their tests rule out.
        compact::decode(self.bytes.as_slice(spill)).expect("a state the memory table encoded")
    }
}

/// Writes the slot bytes of `state` into `slot`: `encoded` if given (bytes that decode to
/// it, see [`StateTable::apply_encoded`]), in place ([`Bytes::set`]), else its encoding.
fn encode_into(slot: &mut Bytes, spill: &mut Spill, state: &State, encoded: Option<&[u8]>) {
    match encoded {
        // Not checked against `state` even in a debug build: decoding every import
        // again slows a debug daemon's bulk enough for the lab's states to expire.
        Some(bytes) => slot.set(bytes, spill),
        None => encode_state(slot, spill, state),
    }
}

/// Writes the encoding of `state` into `slot`.
fn encode_state(slot: &mut Bytes, spill: &mut Spill, state: &State) {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        compact::encode(state, scratch);
        slot.set(scratch, spill);
    })
}

/// A secret key for the table's index, from the system's random source (std's
/// `RandomState` is seeded from it): peers choose the ids it hashes.
fn random_hash_key() -> [u64; 2] {
    let random = std::collections::hash_map::RandomState::new();
    [random.hash_one(0x5eed_u64), random.hash_one(0xf00d_u64)]
}

/// Table seconds of `now`, counted from `origin`.
fn secs_since(origin: Instant, now: Instant) -> i64 {
    match now.checked_duration_since(origin) {
        Some(d) => d.as_secs() as i64,
        None => -(origin.duration_since(now).as_secs_f64().ceil() as i64),
    }
}

/// A change noted for the next poll.
#[derive(Debug, Clone, Copy)]
enum Note {
    Insert(Key),
    Update(Key),
    Delete(Key),
    Clear(IfName),
}

/// The in-memory state table. See the [module documentation](self).
#[derive(Debug)]
pub struct MemoryTable {
    config: MemoryConfig,
    origin: Option<Instant>,
    /// The last `now` turned into table seconds, and those.
    last_secs: Option<(Instant, i64)>,
    /// Every state, densely, so that a control request can pick random states at the
    /// cost of what it picks, not of the table (issue 14: `ctl delete N` listed the
    /// table). A removed slot's place goes to the last one.
    slots: Vec<Slot>,
    /// The encodings too long for their slots.
    spill: Spill,
    /// The slot list's pages, mapped ahead of its growth.
    slots_ahead: PopulateAhead,
    /// Where each key's slot is. Only a position in the index, not the slot: an index
    /// is at half load after it doubles, and doubles with the old one still held.
    index: SlotIndex,
    deadlines: Deadlines,
    /// Slots looked at by listings, clears and samples: what a request costs.
    visited: u64,
    journal: Vec<Note>,
    next_id: u64,
    expired: u64,
    /// Imports refused for their interface (`unknown_interface`, as the pf table).
    edge: EdgeCounters,
}

impl MemoryTable {
    /// An empty table.
    pub fn new(config: MemoryConfig) -> MemoryTable {
        MemoryTable {
            next_id: config.first_id,
            config,
            origin: None,
            last_secs: None,
            slots: Vec::new(),
            spill: Spill::default(),
            slots_ahead: PopulateAhead::default(),
            index: SlotIndex::new(KeyedState::new(random_hash_key())),
            deadlines: Deadlines::default(),
            visited: 0,
            journal: Vec::new(),
            expired: 0,
            edge: EdgeCounters::default(),
        }
    }

    /// Makes room for `n` more states (no more than the limit leaves), so that adding
    /// them moves and rehashes nothing; returns for how many. Address space only: the
    /// pages are mapped as states arrive (`PopulateAhead`), except the index's, which
    /// a rehash writes whole (8 bytes an entry, at most 3/4 full). A table without a
    /// limit takes `n` as it is: the caller bounds it (the daemon's parent does, see
    /// `daemon::parent::table::MOST_STATES_RESERVED`).
    pub fn reserve_states(&mut self, n: usize) -> usize {
        let n = match self.config.limit {
            Some(limit) => n.min(limit.saturating_sub(self.slots.len())),
            None => n,
        };
        self.slots.reserve(n);
        self.index.reserve(n);
        self.deadlines.reserve(self.slots.len().saturating_add(n));
        n
    }

    /// The settings.
    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    /// How many states expired so far.
    pub fn expired_count(&self) -> u64 {
        self.expired
    }

    /// Slots looked at so far by listings, clears and samples (not by the lookups of one
    /// named state): the measure that a control request costs what it answers, not what
    /// the table holds.
    pub fn slots_visited(&self) -> u64 {
        self.visited
    }

    /// Up to `n` distinct states picked uniformly at random (fewer if the table holds
    /// fewer, or if some picked are no-sync states, which are left out), at the cost of
    /// `n` slots: Floyd's sampling over the dense key list. `below(b)` is a random
    /// number in `0..b`.
    pub fn sample(&mut self, n: usize, mut below: impl FnMut(u64) -> u64) -> Vec<Key> {
        let len = self.slots.len();
        let n = n.min(len);
        let mut picked: HashSet<usize> = HashSet::with_capacity(n);
        for j in len - n..len {
            let t = below(j as u64 + 1) as usize;
            if !picked.insert(t.min(j)) {
                picked.insert(j);
            }
        }
        self.visited += picked.len() as u64;
        picked
            .into_iter()
            .map(|at| &self.slots[at])
            .filter(|s| syncable(&s.state(&self.spill)))
            .map(Slot::key)
            .collect()
    }

    /// Changes the timeout values; every state's deadline follows.
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        let old = std::mem::replace(&mut self.config.timeouts, timeouts);
        self.deadlines.clear();
        self.visited += self.slots.len() as u64;
        for (at, slot) in self.slots.iter_mut().enumerate() {
            // Every deadline was set as last activity + the class's timeout then.
            let class = slot.state(&self.spill).timeout;
            let active = slot.deadline - i64::from(old.get(class));
            slot.deadline = active + i64::from(timeouts.get(class));
            self.deadlines.insert(slot.deadline, at as u32);
        }
    }

    /// Table seconds of `now`.
    #[inline]
    fn secs(&mut self, now: Instant) -> i64 {
        // A daemon's turn applies hundreds of operations at one `now`.
        if let Some((last, secs)) = self.last_secs {
            if last == now {
                return secs;
            }
        }
        let origin = *self.origin.get_or_insert(now);
        let secs = secs_since(origin, now);
        self.last_secs = Some((now, secs));
        secs
    }

    fn timeout_of(&self, class: Timeout) -> i64 {
        i64::from(self.config.timeouts.get(class))
    }

    /// The state as handed out at table second `now`.
    fn hand_out(slot: &Slot, spill: &Spill, now: i64) -> State {
        let clamp = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
        State {
            age_secs: clamp(now - slot.created),
            expire_secs: clamp(slot.deadline - now),
            ..slot.state(spill)
        }
    }

    /// Adds a state of a new key (whose index tag is `tag`) with the times its
    /// `age_secs`/`expire_secs` give; `fill` writes its encoding into the new slot.
    fn place(
        &mut self,
        now: i64,
        state: &PeekedState,
        tag: u32,
        fill: impl FnOnce(&mut Bytes, &mut Spill),
    ) {
        let value = self.timeout_of(state.timeout);
        let created = now - i64::from(state.age_secs);
        let deadline = if state.expire_secs != 0 {
            now + i64::from(state.expire_secs)
        } else {
            now + value
        };
        let key = state.key();
        // Callers have made sure the key is new (an import refuses one it holds).
        debug_assert!(self.find(key).is_none());
        // Four billion states would need 400 GB of slots.
        let at = self.slots.len() as u32;
        self.deadlines.insert(deadline, at);
        self.slots_ahead.before_push(&mut self.slots);
        self.slots.push(Slot {
            id: key.1,
            creatorid: key.0,
            created,
            deadline,
            bytes: Bytes::EMPTY,
        });
        fill(&mut self.slots[at as usize].bytes, &mut self.spill);
        self.index.insert_tagged(tag, at);
    }

    /// Replaces the content of `key`'s state (whose index tag is `tag`) by what `fill`
    /// writes, the encoding of a state of timeout class `class` named `key`, and marks
    /// activity now. Returns where its slot is; `None` if there is none.
    fn refresh(
        &mut self,
        now: i64,
        key: Key,
        tag: u32,
        class: Timeout,
        fill: impl FnOnce(&mut Bytes, &mut Spill),
    ) -> Option<u32> {
        let value = self.timeout_of(class);
        let at = self.find_tagged(key, tag)?;
        self.refile(at, now + value);
        fill(&mut self.slots[at as usize].bytes, &mut self.spill);
        Some(at)
    }

    /// Where `key`'s slot is in the list.
    fn find(&self, key: Key) -> Option<u32> {
        self.find_tagged(key, self.index.tag(key))
    }

    /// [`MemoryTable::find`] of `key`, whose index tag is `tag`.
    #[inline]
    fn find_tagged(&self, key: Key, tag: u32) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .get_tagged(key, tag, |at| slots[at as usize].key())
    }

    /// Files the slot at `at` under a new deadline.
    fn refile(&mut self, at: u32, deadline: i64) {
        if self.slots[at as usize].deadline == deadline {
            return;
        }
        self.unfile(at);
        self.deadlines.insert(deadline, at);
        self.slots[at as usize].deadline = deadline;
    }

    /// Takes the slot at `at` out of its deadline's list.
    fn unfile(&mut self, at: u32) {
        self.deadlines.remove(self.slots[at as usize].deadline, at);
    }

    /// Takes a key's slot out of the index, its deadline's bucket and the dense list
    /// (the last slot takes its place), and gives its bytes' place in the spill back;
    /// what `read` says of it before.
    fn take<R>(&mut self, key: Key, read: impl FnOnce(&Slot, &Spill) -> R) -> Option<R> {
        let slots = &self.slots;
        let at = self.index.remove(key, |at| slots[at as usize].key())?;
        self.unfile(at);
        let last = self.slots.len() as u32 - 1;
        let mut slot = self.slots.swap_remove(at as usize);
        if at != last {
            let moved = &self.slots[at as usize];
            self.index.moved(moved.key(), last, at);
            self.deadlines.moved(moved.deadline, last, at);
        }
        let said = read(&slot, &self.spill);
        slot.bytes.release(&mut self.spill);
        Some(said)
    }

    /// Whether the state of `slot` is one reported (see [`syncable`]).
    fn slot_syncable(slot: &Slot, spill: &Spill) -> bool {
        syncable(&slot.state(spill))
    }

    fn slot(&self, key: Key) -> Option<&Slot> {
        self.find(key).map(|at| &self.slots[at as usize])
    }

    /// Refuses a peer's state bound to an interface the check does not admit, before
    /// anything changes, as the pf table refuses one this system lacks.
    #[inline]
    fn refuse_unknown_interface(&mut self, ifname: &IfName) -> Result<(), TableError> {
        if !self.config.interfaces.admits(ifname) {
            self.edge.unknown_interface += 1;
            return Err(TableError::Invalid(
                "a state bound to an interface this system does not have",
            ));
        }
        Ok(())
    }

    fn check_room(&self) -> Result<(), TableError> {
        match self.config.limit {
            Some(limit) if self.slots.len() >= limit => Err(TableError::Full),
            _ => Ok(()),
        }
    }

    // ------------------------------------------------------------ local operations

    /// A new local state, as traffic would create it: `state` gets our creator id and
    /// the next free id, and its times from its `age_secs`/`expire_secs` (0 and 0: new
    /// now, a full timeout). Reported as an insert. Returns the state as stored.
    pub fn insert_local(&mut self, now: Instant, mut state: State) -> Result<State, TableError> {
        self.check_room()?;
        let now = self.secs(now);
        state.creatorid = self.config.creatorid;
        while self.find((state.creatorid, self.next_id)).is_some() {
            self.next_id = self.next_id.wrapping_add(1);
        }
        state.id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let tag = self.index.tag(key_of(&state));
        self.place(now, &PeekedState::of(&state), tag, |b, spill| {
            encode_state(b, spill, &state)
        });
        self.journal.push(Note::Insert(key_of(&state)));
        let (creatorid, id) = key_of(&state);
        self.slot((creatorid, id))
            .map(|slot| Self::hand_out(slot, &self.spill, now))
            .ok_or(TableError::NotFound { creatorid, id })
    }

    /// Traffic on a state (any creator's): `change` edits it (its name stays), and its
    /// last activity becomes now. Reported as an update. Returns the state as stored.
    pub fn update_local(
        &mut self,
        now: Instant,
        creatorid: u32,
        id: u64,
        change: impl FnOnce(&mut State),
    ) -> Result<State, TableError> {
        let now = self.secs(now);
        let key = (creatorid, id);
        let mut state = self
            .slot(key)
            .map(|s| s.state(&self.spill))
            .ok_or(TableError::NotFound { creatorid, id })?;
        change(&mut state);
        // Its name stays whatever `change` did.
        (state.creatorid, state.id) = key;
        let at = self
            .refresh(now, key, self.index.tag(key), state.timeout, |b, spill| {
                encode_state(b, spill, &state)
            })
            .ok_or(TableError::NotFound { creatorid, id })?;
        self.journal.push(Note::Update(key));
        Ok(Self::hand_out(&self.slots[at as usize], &self.spill, now))
    }

    /// Removes a state (`pfctl -k id`); reported as a delete. False if there was none.
    pub fn delete_local(&mut self, creatorid: u32, id: u64) -> bool {
        match self.take((creatorid, id), Self::slot_syncable) {
            Some(synced) => {
                if synced {
                    self.journal.push(Note::Delete((creatorid, id)));
                }
                true
            }
            None => false,
        }
    }

    /// Removes every state on `ifname` (every state if empty), whoever created it, as
    /// `pfctl -F states [-i ifname]` does; reported as one clear. Returns how many went.
    pub fn clear_local(&mut self, ifname: &IfName) -> usize {
        let n = self.remove_where(|s| ifname.is_empty() || s.ifname == *ifname);
        self.journal.push(Note::Clear(*ifname));
        n
    }

    /// Removes the states due at `now`, each reported as a delete (no-sync ones
    /// silently). Returns how many went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let now = self.secs(now);
        let mut n = 0;
        while let Some((deadline, at)) = self.deadlines.first_slot() {
            if deadline > now {
                break;
            }
            let key = self.slots[at as usize].key();
            if let Some(synced) = self.take(key, Self::slot_syncable) {
                if synced {
                    self.journal.push(Note::Delete(key));
                }
                n += 1;
            }
        }
        self.deadlines.passed(now);
        self.expired += n as u64;
        n
    }

    /// When the next state is due, if any (for the daemon's timer).
    pub fn next_deadline(&self) -> Option<Instant> {
        let deadline = self.deadlines.first()?;
        let origin = self.origin?;
        let d = Duration::from_secs(deadline.unsigned_abs());
        if deadline >= 0 {
            origin.checked_add(d)
        } else {
            Some(origin.checked_sub(d).unwrap_or(origin))
        }
    }

    /// A state of any kind, no-sync ones included, as of `now`.
    pub fn get_any(&mut self, now: Instant, creatorid: u32, id: u64) -> Option<State> {
        let now = self.secs(now);
        self.slot((creatorid, id))
            .map(|s| Self::hand_out(s, &self.spill, now))
    }

    fn remove_where(&mut self, doomed: impl Fn(&State) -> bool) -> usize {
        self.visited += self.slots.len() as u64;
        let keys: Vec<Key> = self
            .slots
            .iter()
            .filter(|s| doomed(&s.state(&self.spill)))
            .map(Slot::key)
            .collect();
        for key in &keys {
            self.take(*key, |_, _| ());
        }
        keys.len()
    }
}

/// An import or an update of the engine's, its state left in the compact record the
/// engine's channel carried it in: the parent's way to the memory table, which keeps
/// that record and reads only a few fields of it ([`MemoryTable::apply_record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordOp<'a> {
    /// [`TableOp::Import`].
    Import(CheckedRecord<'a>),
    /// [`TableOp::Update`].
    Update(CheckedRecord<'a>),
}

impl<'a> RecordOp<'a> {
    /// The record.
    pub fn record(&self) -> &CheckedRecord<'a> {
        match self {
            RecordOp::Import(r) | RecordOp::Update(r) => r,
        }
    }

    /// The same operation with its record copied into `room` (see
    /// [`CheckedRecord::copy_into`]).
    pub fn copy_into<'b>(&self, room: &'b mut [u8]) -> Option<RecordOp<'b>> {
        Some(match self {
            RecordOp::Import(r) => RecordOp::Import(r.copy_into(room)?),
            RecordOp::Update(r) => RecordOp::Update(r.copy_into(room)?),
        })
    }

    /// The operation with its whole state, for a table that needs one (pf).
    pub fn table_op(&self) -> Result<TableOp, TableError> {
        let state = self
            .record()
            .state()
            .map_err(|_| TableError::Invalid("a compact record that does not decode"))?;
        Ok(match self {
            RecordOp::Import(_) => TableOp::Import(state),
            RecordOp::Update(_) => TableOp::Update(state),
        })
    }
}

impl MemoryTable {
    /// [`StateTable::apply`] of an import or update given as its checked compact record:
    /// the record is stored as it is and no [`State`] is made of it.
    pub fn apply_record(&mut self, now: Instant, op: &RecordOp) -> Result<usize, TableError> {
        let tag = self.index.tag(op.record().peeked().key());
        self.apply_record_tagged(now, op, tag)
    }

    /// [`MemoryTable::apply_record`] of each of `ops` in turn, `each` told of each
    /// operation's outcome as it is carried out: the same outcomes, the same table. The
    /// index entries and deadline buckets the operations use are fetched some operations
    /// ahead (see [`SlotIndex::touch`]), so that their cache misses overlap rather than
    /// come one after the other.
    pub fn apply_records<'r>(
        &mut self,
        now: Instant,
        ops: &[RecordOp<'r>],
        mut each: impl FnMut(&RecordOp<'r>, Result<usize, TableError>),
    ) {
        /// How many operations ahead of the one applied the index entry and the
        /// deadline bucket are fetched; and, later, where the bucket's next entry goes.
        const AHEAD: usize = 16;
        const THEN_AHEAD: usize = 6;
        let mut tags = [0u32; AHEAD];
        let mut deadlines = [None; AHEAD];
        // Before the first state, the table's clock has not started: no deadline is
        // known to read ahead.
        let secs = self.origin.map(|origin| secs_since(origin, now));
        for i in 0..ops.len() + AHEAD {
            // Operation `i - AHEAD` is applied, and its place in the ring taken by `i`.
            let slot = i % AHEAD;
            if let Some(op) = i.checked_sub(AHEAD).and_then(|j| ops.get(j)) {
                let result = self.apply_record_tagged(now, op, tags[slot]);
                each(op, result);
            }
            if let Some(op) = ops.get(i) {
                let peeked = op.record().peeked();
                tags[slot] = self.index.tag(peeked.key());
                self.index.touch(tags[slot]);
                // Where an import is filed (an update's old place is behind its slot,
                // which the index names: not read ahead).
                let expire = match op {
                    RecordOp::Import(_) if peeked.expire_secs != 0 => i64::from(peeked.expire_secs),
                    _ => self.timeout_of(peeked.timeout),
                };
                deadlines[slot] = secs.map(|now| now + expire);
                if let Some(d) = deadlines[slot] {
                    self.deadlines.prefetch(d, false);
                }
            }
            // The bucket of the operation applied `THEN_AHEAD` from now is in the cache
            // by now: the link its slot goes before is fetched.
            if let Some(j) = (i + THEN_AHEAD)
                .checked_sub(AHEAD)
                .filter(|&j| j < ops.len())
            {
                if let Some(d) = deadlines[j % AHEAD] {
                    self.deadlines.prefetch(d, true);
                }
            }
        }
    }

    /// [`MemoryTable::apply_record`] of an operation whose state's index tag is `tag`.
    #[inline]
    fn apply_record_tagged(
        &mut self,
        now: Instant,
        op: &RecordOp,
        tag: u32,
    ) -> Result<usize, TableError> {
        let record = op.record();
        let bytes = |b: &mut Bytes, spill: &mut Spill| b.set(record.bytes(), spill);
        match op {
            RecordOp::Import(_) => self.import_with(now, record.peeked(), tag, bytes),
            RecordOp::Update(_) => self.update_with(now, record.peeked(), tag, bytes),
        }
        .map(|()| 1)
    }

    /// Imports the state `state` was read from, whose encoding `bytes` writes; `tag` is
    /// its index tag.
    #[inline]
    fn import_with(
        &mut self,
        now: Instant,
        state: &PeekedState,
        tag: u32,
        bytes: impl FnOnce(&mut Bytes, &mut Spill),
    ) -> Result<(), TableError> {
        if state.creatorid == 0 {
            return Err(TableError::Invalid("creatorid 0"));
        }
        self.refuse_unknown_interface(&state.ifname)?;
        let key = state.key();
        if self.find_tagged(key, tag).is_some() {
            return Err(TableError::AlreadyExists {
                creatorid: key.0,
                id: key.1,
            });
        }
        self.check_room()?;
        let now = self.secs(now);
        self.place(now, state, tag, bytes);
        Ok(())
    }

    /// Updates the state `state` was read from, whose encoding `bytes` writes; `tag` is
    /// its index tag.
    #[inline]
    fn update_with(
        &mut self,
        now: Instant,
        state: &PeekedState,
        tag: u32,
        bytes: impl FnOnce(&mut Bytes, &mut Spill),
    ) -> Result<(), TableError> {
        self.refuse_unknown_interface(&state.ifname)?;
        let now = self.secs(now);
        let (creatorid, id) = state.key();
        self.refresh(now, (creatorid, id), tag, state.timeout, bytes)
            .map(|_| ())
            .ok_or(TableError::NotFound { creatorid, id })
    }

    fn import_encoded(
        &mut self,
        now: Instant,
        state: &State,
        encoded: Option<&[u8]>,
    ) -> Result<(), TableError> {
        let tag = self.index.tag(key_of(state));
        self.import_with(now, &PeekedState::of(state), tag, |b, spill| {
            encode_into(b, spill, state, encoded)
        })
    }

    fn update_encoded(
        &mut self,
        now: Instant,
        state: &State,
        encoded: Option<&[u8]>,
    ) -> Result<(), TableError> {
        let tag = self.index.tag(key_of(state));
        self.update_with(now, &PeekedState::of(state), tag, |b, spill| {
            encode_into(b, spill, state, encoded)
        })
    }
}

impl StateTable for MemoryTable {
    fn import(&mut self, now: Instant, state: &State) -> Result<(), TableError> {
        self.import_encoded(now, state, None)
    }

    fn update(&mut self, now: Instant, state: &State) -> Result<(), TableError> {
        self.update_encoded(now, state, None)
    }

    fn apply_encoded(
        &mut self,
        now: Instant,
        op: &TableOp,
        encoded: Option<&[u8]>,
    ) -> Result<usize, TableError> {
        match op {
            TableOp::Import(s) => self.import_encoded(now, s, encoded).map(|()| 1),
            TableOp::Update(s) => self.update_encoded(now, s, encoded).map(|()| 1),
            _ => self.apply(now, op),
        }
    }

    fn remove(&mut self, creatorid: u32, id: u64) -> Result<bool, TableError> {
        Ok(self.take((creatorid, id), |_, _| ()).is_some())
    }

    fn clear(&mut self, creatorid: Option<u32>, ifname: &IfName) -> Result<usize, TableError> {
        Ok(self.remove_where(|s| {
            creatorid.is_none_or(|c| s.creatorid == c) && (ifname.is_empty() || s.ifname == *ifname)
        }))
    }

    fn poll_changes(&mut self, now: Instant, out: &mut Vec<LocalChange>) -> Result<(), TableError> {
        self.expire(now);
        let now = self.secs(now);
        let journal = std::mem::take(&mut self.journal);
        // States reported in this poll, and states noted as inserted that are gone again.
        let mut reported: HashSet<Key> = HashSet::new();
        let mut unseen: HashSet<Key> = HashSet::new();
        for note in journal {
            match note {
                Note::Insert(key) | Note::Update(key) => match self.slot(key) {
                    Some(slot) => {
                        if Self::slot_syncable(slot, &self.spill) && reported.insert(key) {
                            let state = Self::hand_out(slot, &self.spill, now);
                            out.push(match note {
                                Note::Insert(_) => LocalChange::Insert(state),
                                _ => LocalChange::Update(state),
                            });
                        }
                    }
                    None => {
                        if matches!(note, Note::Insert(_)) {
                            unseen.insert(key);
                        }
                    }
                },
                Note::Delete(key) => {
                    reported.remove(&key);
                    if !unseen.remove(&key) {
                        out.push(LocalChange::Delete {
                            creatorid: key.0,
                            id: key.1,
                        });
                    }
                }
                Note::Clear(ifname) => {
                    out.push(LocalChange::Clear { ifname });
                    // The engine hears of the clear only now and drops every state it
                    // holds on the interface, those the table got since included: they
                    // are announced again.
                    self.visited += self.slots.len() as u64;
                    let mut since: Vec<(Key, State)> = self
                        .slots
                        .iter()
                        .map(|slot| (slot.key(), Self::hand_out(slot, &self.spill, now)))
                        .filter(|(_, s)| ifname.is_empty() || s.ifname == ifname)
                        .filter(|(_, s)| syncable(s))
                        .collect();
                    since.sort_unstable_by_key(|(k, _)| *k);
                    for (key, state) in since {
                        reported.insert(key);
                        out.push(LocalChange::Insert(state));
                    }
                }
            }
        }
        Ok(())
    }

    fn get(&mut self, now: Instant, creatorid: u32, id: u64) -> Result<Option<State>, TableError> {
        Ok(self.get_any(now, creatorid, id).filter(syncable))
    }

    fn for_each_state(
        &mut self,
        now: Instant,
        f: &mut dyn FnMut(&State),
    ) -> Result<(), TableError> {
        let now = self.secs(now);
        self.visited += self.slots.len() as u64;
        for slot in &self.slots {
            if Self::slot_syncable(slot, &self.spill) {
                f(&Self::hand_out(slot, &self.spill, now));
            }
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn checksum(&self) -> [u8; 16] {
        [0; 16]
    }

    fn edge_counters(&self) -> EdgeCounters {
        self.edge
    }
}

#[cfg(test)]
mod test {
    use super::super::slot_bytes::INLINE;
    use super::*;

    const US: u32 = 1;
    const PEER: u32 = 2;

    fn name(s: &str) -> IfName {
        IfName::new(s).unwrap()
    }

    fn peer_state(id: u64, ifname: &str) -> State {
        State {
            id,
            creatorid: PEER,
            ifname: name(ifname),
            ..State::default()
        }
    }

    fn table(interfaces: InterfaceCheck) -> MemoryTable {
        MemoryTable::new(MemoryConfig {
            interfaces,
            ..MemoryConfig::new(US)
        })
    }

    #[test]
    fn with_the_check_on_a_state_on_a_missing_interface_is_refused_and_counted() {
        let now = Instant::now();
        let mut t = table(InterfaceCheck::Only(vec![name("igb0")]));
        assert!(t.import(now, &peer_state(1, "igb0")).is_ok());
        assert!(matches!(
            t.import(now, &peer_state(2, "em0")),
            Err(TableError::Invalid(_))
        ));
        assert!(
            t.import(now, &peer_state(3, "all")).is_ok(),
            "floating state refused"
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.edge_counters().unknown_interface, 1);
        // An update cannot move a state onto a missing interface either.
        assert!(t.update(now, &peer_state(1, "em0")).is_err());
        assert_eq!(t.get(now, PEER, 1).unwrap().unwrap().ifname, name("igb0"));
        assert_eq!(t.edge_counters().unknown_interface, 2);
    }

    #[test]
    fn the_system_check_asks_the_system() {
        let now = Instant::now();
        let mut t = table(InterfaceCheck::System);
        assert!(t.import(now, &peer_state(1, "lo")).is_ok());
        assert!(t.import(now, &peer_state(2, "nosuchif0")).is_err());
        assert_eq!(t.edge_counters().unknown_interface, 1);
    }

    /// The dense key list follows every way a state goes (delete, remove, expiry,
    /// clear), so a sample only ever names states the table holds, each once.
    #[test]
    fn samples_name_held_states_once_whatever_removed_the_others() {
        let t0 = Instant::now();
        let mut t = MemoryTable::new(MemoryConfig::new(US));
        for id in 1..=1000 {
            let mut s = peer_state(id, "igb0");
            // A third expire in 10 s, the rest last.
            s.expire_secs = if id % 3 == 0 { 10 } else { 0 };
            t.import(t0, &s).unwrap();
        }
        for id in (1..=1000).step_by(7) {
            t.remove(PEER, id).unwrap();
        }
        for id in (2..=1000).step_by(11) {
            t.delete_local(PEER, id);
        }
        t.expire(t0 + Duration::from_secs(11));
        // The index follows the slots moved into removed ones' places.
        let held: Vec<u64> = (1..=1000)
            .filter_map(|id| t.get_any(t0, PEER, id))
            .map(|s| s.id)
            .collect();
        assert_eq!(held.len(), t.len());
        assert!(held.iter().all(|&id| id % 7 != 1 && id % 3 != 0));
        assert_eq!(
            held,
            (1..=1000)
                .filter(|id| t.get_any(t0, PEER, *id).is_some_and(|s| s.id == *id))
                .collect::<Vec<_>>()
        );
        let mut rng = 12345u64;
        let mut below = move |b: u64| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) % b
        };
        let before = t.slots_visited();
        let picked = t.sample(50, &mut below);
        assert_eq!(t.slots_visited() - before, 50);
        assert_eq!(picked.len(), 50);
        let distinct: HashSet<Key> = picked.iter().copied().collect();
        assert_eq!(distinct.len(), 50);
        assert!(picked.iter().all(|&(c, id)| t.get_any(t0, c, id).is_some()));
        let all = t.sample(usize::MAX, &mut below);
        assert_eq!(all.len(), t.len());
        t.clear_local(&IfName::EMPTY);
        assert!(t.sample(5, &mut below).is_empty());
    }

    /// Deadlines through imports, updates, removals, expiries and a change of the
    /// timeouts, against a model that keeps each state's deadline: what is held after
    /// each second's expiry is exactly what the model says is not yet due.
    #[test]
    fn expiry_is_exact_to_the_second_whatever_moved_the_deadlines() {
        use crate::state::Timeout;
        let t0 = Instant::now();
        let at = |sec: u64| t0 + Duration::from_secs(sec);
        let mut t = MemoryTable::new(MemoryConfig::new(US));
        let mut model: std::collections::BTreeMap<u64, i64> = Default::default();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |below: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        };
        let mut sec = 0u64;
        let mut id = 0u64;
        let mut value = 30;
        for _ in 0..400 {
            t.expire(at(sec));
            let now = sec as i64;
            for _ in 0..next(40) {
                id += 1;
                let mut s = peer_state(id, "igb0");
                s.timeout = Timeout::UdpSingle;
                s.expire_secs = next(50) as u32;
                t.import(at(sec), &s).unwrap();
                let life = if s.expire_secs == 0 {
                    value
                } else {
                    i64::from(s.expire_secs)
                };
                model.insert(id, now + life);
            }
            let held: Vec<u64> = model.keys().copied().collect();
            for _ in 0..next(10) {
                if held.is_empty() {
                    break;
                }
                let pick = held[next(held.len() as u64) as usize];
                if !model.contains_key(&pick) {
                    continue;
                }
                if next(3) == 0 {
                    t.remove(PEER, pick).unwrap();
                    model.remove(&pick);
                } else {
                    let mut s = peer_state(pick, "igb1");
                    s.timeout = Timeout::UdpSingle;
                    t.update(at(sec), &s).unwrap();
                    model.insert(pick, now + value);
                }
            }
            if sec == 200 {
                // Every deadline moves by the change of the class's value.
                t.set_timeouts(Timeouts::DEFAULT.with(Timeout::UdpSingle, 45));
                value = 45;
                for d in model.values_mut() {
                    *d += 15;
                }
            }
            sec += next(3);
            let due: Vec<u64> = model
                .iter()
                .filter(|(_, &d)| d <= sec as i64)
                .map(|(&k, _)| k)
                .collect();
            let expired = t.expire(at(sec));
            assert_eq!(expired, due.len(), "second {sec}");
            for k in due {
                model.remove(&k);
            }
            assert_eq!(t.len(), model.len(), "second {sec}");
            for (&k, &d) in &model {
                let s = t.get_any(at(sec), PEER, k).expect("held");
                assert_eq!(i64::from(s.expire_secs), d - sec as i64, "state {k}");
            }
            let first = model.values().min().map(|&d| at(d as u64));
            assert_eq!(t.next_deadline(), first);
        }
        assert!(id > 5000, "{id} states");
    }

    /// `reserve_states` (a bulk's announced size) makes room within the limit only:
    /// the states then imported move and rehash nothing, and make the same table as
    /// without it.
    #[test]
    fn reserved_room_is_bounded_by_the_limit_and_changes_no_outcome() {
        use crate::table::synth::Synth;
        let now = Instant::now();
        let config = MemoryConfig {
            limit: Some(4_000),
            ..MemoryConfig::new(US)
        };
        let (mut t, mut plain) = (MemoryTable::new(config.clone()), MemoryTable::new(config));
        let states = Synth::new(9, PEER).states(4_000);
        for s in &states[..10] {
            t.import(now, s).unwrap();
            plain.import(now, s).unwrap();
        }
        assert_eq!(
            t.reserve_states(usize::MAX),
            3_990,
            "no more than the limit leaves"
        );
        let (slots, index) = (t.slots.as_ptr(), t.index.bytes());
        assert!(t.slots.capacity() >= 4_000);
        for s in &states[10..] {
            t.import(now, s).unwrap();
            plain.import(now, s).unwrap();
        }
        assert_eq!(t.slots.as_ptr(), slots, "the slot list never moved");
        assert_eq!(t.index.bytes(), index, "the index never grew");
        assert_eq!(t.reserve_states(5), 0, "full");
        let mut beyond = states[0];
        beyond.id = u64::MAX;
        let refused = t.import(now, &beyond);
        assert!(matches!(refused, Err(TableError::Full)), "{refused:?}");
        for s in &states {
            let a = t.get_any(now, s.creatorid, s.id).unwrap();
            assert_eq!(Some(a), plain.get_any(now, s.creatorid, s.id));
        }
        assert_eq!(t.next_deadline(), plain.next_deadline());
        assert_eq!(t.expire(now + Duration::from_secs(1 << 20)), 4_000);
        assert!(t.is_empty());
    }

    /// A slot is the state's bytes inline: the list is reused as states come and go,
    /// an encoding too long to fit lives in the spill and reads back whole, and bytes
    /// given off the channel are kept as the state.
    #[test]
    fn slots_hold_their_bytes_and_are_reused() {
        use crate::table::synth::Synth;
        use crate::wire::TagName;
        assert!(
            std::mem::size_of::<Slot>() <= 104,
            "{}",
            std::mem::size_of::<Slot>()
        );
        let now = Instant::now();
        let mut t = MemoryTable::new(MemoryConfig::new(US));
        let mut synth = Synth::new(5, PEER);
        let states = synth.states(3000);
        for s in &states {
            t.import(now, s).unwrap();
        }
        let room = t.slots.capacity();
        for round in 0..3 {
            for s in &states {
                assert!(t.remove(s.creatorid, s.id).unwrap(), "round {round}");
            }
            assert!(t.is_empty());
            for s in &states {
                t.import(now, s).unwrap();
            }
            assert_eq!(t.slots.capacity(), room, "round {round}");
        }
        let mut long = synth.state();
        long.wire.addr = [
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        ];
        long.stack.addr = [
            "2001:db8::3".parse().unwrap(),
            "2001:db8::4".parse().unwrap(),
        ];
        long.tagname = TagName::new("a-rather-long-tag-name-for-a-state").unwrap();
        let mut bytes = Vec::new();
        compact::encode(&long, &mut bytes);
        assert!(bytes.len() > INLINE, "{} bytes", bytes.len());
        t.apply_encoded(now, &TableOp::Import(long), Some(&bytes))
            .unwrap();
        let got = t.get_any(now, long.creatorid, long.id).unwrap();
        assert_eq!(got.tagname, long.tagname);
        assert_eq!(got.stack, long.stack);
        // Given bytes are stored as they are.
        let mut s = states[7];
        s.packets = [77, 88];
        bytes.clear();
        compact::encode(&s, &mut bytes);
        t.apply_encoded(now, &TableOp::Update(s), Some(&bytes))
            .unwrap();
        assert_eq!(
            t.slot(key_of(&s)).unwrap().bytes.as_slice(&t.spill),
            &bytes[..]
        );
        assert_eq!(t.get_any(now, s.creatorid, s.id).unwrap().packets, [77, 88]);
        for s in &states {
            assert!(t.get_any(now, s.creatorid, s.id).is_some());
        }
    }

    /// A state of `synth`'s made to encode longer than a slot holds (IPv6 addresses, a
    /// tag name of `tag` bytes), or shorter (IPv4, no tag).
    fn of_length(synth: &mut crate::table::synth::Synth, long: bool, tag: usize) -> State {
        use crate::state::AddressFamily;
        use crate::table::synth::Kind;
        use crate::wire::TagName;
        let af = if long {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let mut s = synth.state_of(Kind::Udp, af);
        if long {
            s.tagname = TagName::new(&"t".repeat(tag)).unwrap();
        }
        s
    }

    /// Imports, updates (short to long, long to short, long to longer), deletes, clears
    /// and expiries of states long and short, against a model of what the table holds:
    /// every state reads back as last given, listings list exactly the model's, and the
    /// spill holds a place for each long state held and no more, however they churn.
    #[test]
    fn long_and_short_states_churn_without_losing_or_leaking_a_byte() {
        use crate::table::synth::Synth;
        let t0 = Instant::now();
        let mut t = MemoryTable::new(MemoryConfig::new(US));
        let mut synth = Synth::new(11, PEER);
        let mut model: std::collections::BTreeMap<Key, State> = Default::default();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |below: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        };
        // Times are left out: the expiry test checks them.
        let timeless = |mut s: State| {
            s.age_secs = 0;
            s.expire_secs = 0;
            s
        };
        let encoded_len = |s: &State| {
            let mut b = Vec::new();
            compact::encode(s, &mut b);
            b.len()
        };
        let mut lengths = HashSet::new();
        let mut sec = 0;
        for round in 0..6000u64 {
            let now = t0 + Duration::from_secs(sec);
            match next(12) {
                0..=4 => {
                    let mut s = of_length(&mut synth, next(2) == 0, next(60) as usize);
                    s.expire_secs = [0, 5, 40][next(3) as usize];
                    // Encoded bytes given, or encoded by the table.
                    let mut bytes = Vec::new();
                    compact::encode(&s, &mut bytes);
                    let given = (next(2) == 0).then_some(&bytes[..]);
                    t.apply_encoded(now, &TableOp::Import(s), given).unwrap();
                    lengths.insert(bytes.len());
                    model.insert(key_of(&s), s);
                }
                5..=7 if !model.is_empty() => {
                    let pick = *model.keys().nth(next(model.len() as u64) as usize).unwrap();
                    let mut s = of_length(&mut synth, next(2) == 0, next(60) as usize);
                    (s.creatorid, s.id) = pick;
                    if next(2) == 0 {
                        t.update(now, &s).unwrap();
                    } else {
                        let record = CheckedRecord::check(&{
                            let mut b = Vec::new();
                            compact::encode(&s, &mut b);
                            b
                        })
                        .map(|r| r.bytes().to_vec())
                        .unwrap();
                        let op = RecordOp::Update(CheckedRecord::check(&record).unwrap());
                        t.apply_record(now, &op).unwrap();
                    }
                    model.insert(pick, s);
                }
                8 | 9 if !model.is_empty() => {
                    let pick = *model.keys().nth(next(model.len() as u64) as usize).unwrap();
                    if next(2) == 0 {
                        assert!(t.remove(pick.0, pick.1).unwrap());
                    } else {
                        assert!(t.delete_local(pick.0, pick.1));
                    }
                    model.remove(&pick);
                }
                10 => {
                    sec += next(20);
                    let now = t0 + Duration::from_secs(sec);
                    t.expire(now);
                    model.retain(|k, _| t.get_any(now, k.0, k.1).is_some());
                }
                _ if round % 997 == 0 => {
                    t.clear(None, &IfName::EMPTY).unwrap();
                    model.clear();
                }
                _ => {}
            }
            let long_held = model.values().filter(|s| encoded_len(s) > INLINE).count();
            assert_eq!(t.spill.places_taken(), long_held, "round {round}");
            assert_eq!(t.len(), model.len(), "round {round}");
            if round % 200 == 0 {
                for (k, s) in &model {
                    let got = t.get_any(now, k.0, k.1).expect("held");
                    assert_eq!(timeless(got), timeless(*s), "round {round}");
                }
                let mut listed = Vec::new();
                t.for_each_state(now, &mut |s| listed.push(timeless(*s)))
                    .unwrap();
                listed.sort_by_key(key_of);
                let expected: Vec<State> = model.values().map(|s| timeless(*s)).collect();
                assert_eq!(listed, expected, "round {round}");
            }
        }
        // Short and long were both met (boxed ones: `slot_bytes`'s tests).
        assert!(lengths.iter().any(|&l| l <= INLINE));
        assert!(lengths.iter().any(|&l| l > INLINE));

        // The same states coming and going again and again take the same room.
        let wave: Vec<State> = (0..500)
            .map(|i| of_length(&mut synth, true, i % 60))
            .collect();
        let mut room = None;
        for round in 0..20 {
            for s in &wave {
                t.import(t0, s).unwrap();
            }
            for s in &wave {
                assert!(t.remove(s.creatorid, s.id).unwrap());
            }
            let now_room = t.spill.bytes();
            assert_eq!(*room.get_or_insert(now_room), now_room, "round {round}");
        }
    }

    /// Applies `op` to `whole` as a `TableOp` and to `peeked` as a checked record; both
    /// must say the same.
    fn apply_both(
        now: Instant,
        whole: &mut MemoryTable,
        peeked: &mut MemoryTable,
        update: bool,
        s: &State,
    ) -> Result<usize, TableError> {
        let mut bytes = Vec::new();
        compact::encode(s, &mut bytes);
        let record = CheckedRecord::check(&bytes).unwrap();
        let (op, record_op) = if update {
            (TableOp::Update(*s), RecordOp::Update(record))
        } else {
            (TableOp::Import(*s), RecordOp::Import(record))
        };
        let expected = whole.apply(now, &op);
        // (TableError is not PartialEq: its Io holds an io::Error.)
        assert_eq!(
            format!("{:?}", peeked.apply_record(now, &record_op)),
            format!("{expected:?}"),
            "{s:?}"
        );
        assert_eq!(record_op.table_op().ok(), Some(op));
        expected
    }

    #[test]
    fn a_checked_record_is_applied_as_its_whole_state() {
        let start = Instant::now();
        let check = InterfaceCheck::Only(vec![name("igb0"), name("em0")]);
        let (mut whole, mut peeked) = (table(check.clone()), table(check));
        let mut synth = crate::table::synth::Synth::new(4, PEER);
        let mut states: Vec<State> = synth.states(200);
        for (i, s) in states.iter_mut().enumerate() {
            s.ifname = name(["igb0", "em0", "vtnet9", "all"][i % 4]);
            s.timeout = Timeout::ALL[i % Timeout::ALL.len()];
            s.age_secs = (i * 7) as u32;
            s.expire_secs = if i % 3 == 0 { 0 } else { (i * 11) as u32 };
        }
        states[5].creatorid = 0;
        let mut outcomes = HashSet::new();
        for (round, now) in [start, start + Duration::from_secs(30)]
            .into_iter()
            .enumerate()
        {
            for (i, s) in states.iter().enumerate() {
                // Imports (the second round's are of names held), then updates, some of
                // names never imported.
                let mut s = *s;
                let r = apply_both(now, &mut whole, &mut peeked, false, &s);
                outcomes.insert(format!("{r:?}").chars().take(12).collect::<String>());
                s.packets = [i as u64, round as u64];
                if i % 5 == 0 {
                    s.id += 1 << 40;
                }
                let r = apply_both(now, &mut whole, &mut peeked, true, &s);
                outcomes.insert(format!("{r:?}").chars().take(12).collect::<String>());
            }
        }
        // Taken, refused for the interface or creator, held already, not found.
        assert!(outcomes.len() >= 4, "{outcomes:?}");
        assert_eq!(whole.len(), peeked.len());
        assert_eq!(whole.edge_counters(), peeked.edge_counters());
        let later = start + Duration::from_secs(100);
        for s in &states {
            for id in [s.id, s.id + (1 << 40)] {
                assert_eq!(
                    whole.get_any(later, s.creatorid, id),
                    peeked.get_any(later, s.creatorid, id)
                );
            }
        }
        assert_eq!(whole.next_deadline(), peeked.next_deadline());
    }

    /// `apply_records` over groups of any size says and does what `apply_record` says
    /// and does one operation at a time: imports, duplicates within a group, updates of
    /// names held and not, refusals for the creator, the interface and a full table,
    /// before and after the table's clock has started.
    #[test]
    fn records_applied_in_groups_are_applied_one_by_one() {
        let start = Instant::now();
        let check = InterfaceCheck::Only(vec![name("igb0"), name("em0")]);
        let configured = |limit| {
            let mut t = table(check.clone());
            t.config.limit = limit;
            t
        };
        let mut synth = crate::table::synth::Synth::new(8, PEER);
        let mut states: Vec<State> = synth.states(600);
        for (i, s) in states.iter_mut().enumerate() {
            s.ifname = name(["igb0", "em0", "vtnet9", "all", "em0"][i % 5]);
            s.timeout = Timeout::ALL[i % Timeout::ALL.len()];
            s.age_secs = (i * 7) as u32;
            s.expire_secs = [0, 1, 90, 86_400, 200_000][i % 5];
        }
        states[3].creatorid = 0;
        // (update, state) in the order applied: imports, some twice in a row, and
        // updates, some of names never imported.
        let mut ops = Vec::new();
        for (i, s) in states.iter().enumerate() {
            ops.push((false, *s));
            if i % 7 == 0 {
                ops.push((false, *s));
            }
            if i % 3 == 0 {
                let mut u = states[i / 2];
                u.packets = [i as u64, 1];
                u.timeout = Timeout::ALL[(i + 3) % Timeout::ALL.len()];
                if i % 9 == 0 {
                    u.id += 1 << 40;
                }
                ops.push((true, u));
            }
        }
        let encoded: Vec<(bool, Vec<u8>)> = ops
            .iter()
            .map(|(update, s)| {
                let mut bytes = Vec::new();
                compact::encode(s, &mut bytes);
                (*update, bytes)
            })
            .collect();
        let record_ops: Vec<RecordOp> = encoded
            .iter()
            .map(|(update, bytes)| {
                let r = CheckedRecord::check(bytes).unwrap();
                if *update {
                    RecordOp::Update(r)
                } else {
                    RecordOp::Import(r)
                }
            })
            .collect();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut told_all = Vec::new();
        for limit in [None, Some(300)] {
            let (mut one, mut grouped) = (configured(limit), configured(limit));
            let mut told = Vec::new();
            let mut rest = &record_ops[..];
            let mut turn = 0;
            while !rest.is_empty() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let n = (x % 40) as usize + 1;
                let (group, after) = rest.split_at(n.min(rest.len()));
                let now = start + Duration::from_secs(turn * 3);
                let expected: Vec<String> = group
                    .iter()
                    .map(|op| format!("{:?}", one.apply_record(now, op)))
                    .collect();
                told.clear();
                grouped.apply_records(now, group, |op, r| told.push((*op, format!("{r:?}"))));
                assert_eq!(told.len(), group.len());
                for ((op, said), (expected_op, expected)) in
                    told.iter().zip(group.iter().zip(&expected))
                {
                    assert_eq!(op, expected_op);
                    assert_eq!(said, expected);
                }
                told_all.extend(expected);
                rest = after;
                turn += 1;
            }
            if limit.is_none() {
                // Taken, refused for the creator or the interface, held, not found.
                let kinds: HashSet<String> = told_all
                    .iter()
                    .map(|t| t.chars().take(20).collect())
                    .collect();
                assert!(kinds.len() >= 5, "{kinds:?}");
            } else {
                assert!(told_all.iter().any(|t| t.contains("Full")));
            }
            told_all.clear();
            assert_eq!(one.len(), grouped.len());
            assert_eq!(one.edge_counters(), grouped.edge_counters());
            assert_eq!(one.next_deadline(), grouped.next_deadline());
            let later = start + Duration::from_secs(10_000);
            for (_, s) in &ops {
                assert_eq!(
                    one.get_any(later, s.creatorid, s.id),
                    grouped.get_any(later, s.creatorid, s.id)
                );
            }
            assert_eq!(one.expire(later), grouped.expire(later));
            assert_eq!(one.len(), grouped.len());
        }
    }

    #[test]
    fn off_by_default() {
        let now = Instant::now();
        let mut t = MemoryTable::new(MemoryConfig::new(US));
        assert!(t.import(now, &peer_state(1, "nosuchif0")).is_ok());
        assert_eq!(t.edge_counters(), EdgeCounters::default());
    }
}
