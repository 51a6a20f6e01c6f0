//! The state cache: every state the engine knows, keyed by (creatorid, id), and the
//! send queues threaded through it.
//!
//! Each state sits in at most one queue at a time, as in the kernels (`sync_state`).
//! The queues are intrusive doubly linked lists over a slab, so moving a state from one
//! queue to another (a compressed update upgraded to a full one, an insert acknowledged)
//! is O(1) and costs no allocation.
//!
//! The slab grows in fixed chunks rather than as one vector: a vector of entries that
//! doubles would waste up to half its size; chunks waste at most one chunk. Each chunk
//! also holds its states' compact encodings back to back (see `Chunk`): a million
//! states take about 44 + 60 bytes each here, plus the index's 12–24. Iteration (bulk
//! sends, clears) goes by slot number, so it is deterministic.

use std::collections::HashMap;
use std::time::Instant;

use super::digest::{state_version, Digests, UNCOUNTED};
use super::hash::KeyedState;
use super::index::Index;
use crate::state::{compact, compact_record, State};

/// A state's identity: (creatorid, id).
pub type Key = (u32, u64);

/// The send queues, in the order their messages are written into a packet (FreeBSD's
/// order: inserts, acks, full updates, compressed updates, deletes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// INS: a new local state.
    Ins = 0,
    /// INS_ACK: acknowledging a peer's insert that asked for it.
    InsAck = 1,
    /// UPD: a full update (a peer asked for this state).
    Upd = 2,
    /// UPD_C: a compressed update.
    UpdC = 3,
    /// DEL_C: a deleted local state.
    DelC = 4,
}

impl Queue {
    /// Every queue, in packet order.
    pub const ALL: [Queue; 5] = [
        Queue::Ins,
        Queue::InsAck,
        Queue::Upd,
        Queue::UpdC,
        Queue::DelC,
    ];
}

const NIL: u32 = u32::MAX;
/// Slots per slab chunk (a power of two): some 120 KB of entries and states, whose
/// pages are mapped in two calls when the chunk is made (see [`Chunk::with_room`]).
const CHUNK_BITS: u32 = 10;
const CHUNK: usize = 1 << CHUNK_BITS;

/// What the engine keeps per state, beside the state itself.
///
/// The state is held in the compact encoding of [`crate::state::compact`] (about 60
/// bytes instead of a 400-byte `State`), back to back with the other states of its
/// slab chunk (see [`Chunk`]): with a million states, this is what the engine's memory
/// is made of, so the entry is kept to 48 bytes (4-byte alignment, the id in two
/// halves, times as 32-bit counts) and the encoding costs no allocation of its own.
/// [`EntryRef::state`] decodes it, [`Cache::set_state`] stores a new copy.
#[derive(Debug, Clone)]
pub struct Entry {
    id: [u32; 2],
    creatorid: u32,
    /// Where the packed state starts in its chunk's bytes, and its length.
    at: u32,
    len: u16,
    /// When a peer last updated this state, in milliseconds on the cache's clock
    /// (wrapping; 0: never): local updates within the split window are sent at once.
    /// Read through [`Cache::peer_updated`].
    peer_updated: u32,
    prev: u32,
    next: u32,
    /// The queue the state is in, if any.
    pub queue: Option<Queue>,
    /// Local updates since the state was last sent (TCP only), for `maxupd`.
    pub updates: u8,
    /// Never sent (the table reported it no-sync after we had it). Set through
    /// [`Cache::mark`], which keeps the digest sums.
    pub nosync: bool,
    /// Deleted locally; kept until its DEL_C is sent. Set through [`Cache::mark`].
    pub deleted: bool,
    /// Kept out of sync by the sync filter (see `filter.rs`).
    pub filtered: Option<super::filter::Filtered>,
    /// A new local state whose INS waits for it to be old enough (see `delay.rs`).
    /// Set through [`Cache::mark`].
    pub delayed: bool,
    /// When the stored age and expiry were true, on the cache's clock
    /// ([`Cache::clock`]): a record written later ages them by the time since.
    stamp: u32,
    /// Where the state is in its digest bucket's list (`digest.rs`), `UNCOUNTED` if
    /// it is not counted (no digests kept, deleted, or delayed).
    digest_pos: u32,
    /// The state's version for the digests (`digest.rs`, `state_version`), as counted
    /// in its bucket's sum: replaced only through [`Cache::set_state`] or
    /// [`Cache::mark`], which move the sum with it. While the state is filtered, the
    /// version last synced: frozen when our own state is muted, the creator's when a
    /// peer's copy is ([`Cache::adopt_version`]).
    version: u32,
}

impl Entry {
    /// A new entry for `state`, in no queue, its age and expiry true at `stamp` (see
    /// [`Cache::clock`]). The state itself is stored by [`Cache::insert`].
    pub fn new(state: &State, stamp: u32) -> Entry {
        Entry::with_version(state, stamp, state_version(state))
    }

    /// As [`new`](Self::new), `version` given: it must be [`state_version`] of
    /// `state` (worked out for a whole batch at once, see `receive.rs`: `Made`).
    #[inline]
    pub fn with_version(state: &State, stamp: u32, version: u32) -> Entry {
        debug_assert_eq!(version, state_version(state));
        Entry {
            id: [state.id as u32, (state.id >> 32) as u32],
            creatorid: state.creatorid,
            at: 0,
            len: 0,
            stamp,
            peer_updated: 0,
            prev: NIL,
            next: NIL,
            queue: None,
            updates: 0,
            nosync: false,
            deleted: false,
            filtered: None,
            delayed: false,
            digest_pos: UNCOUNTED,
            version,
        }
    }

    /// Whether the state counts in its creator's digest (see `digest.rs`).
    fn counts(&self) -> bool {
        !self.deleted
            && !self.delayed
            && !self.nosync
            && self.filtered != Some(super::filter::Filtered::MutedUnlisted)
    }

    /// The state's (creatorid, id).
    #[inline]
    pub fn key(&self) -> Key {
        (
            self.creatorid,
            u64::from(self.id[0]) | u64::from(self.id[1]) << 32,
        )
    }

    /// The state's version for the digests.
    pub fn version(&self) -> u32 {
        self.version
    }

    fn range(&self) -> std::ops::Range<usize> {
        self.at as usize..self.at as usize + usize::from(self.len)
    }
}

/// An entry with its state's bytes, as [`Cache::get`] gives it.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    entry: &'a Entry,
    packed: &'a [u8],
}

impl std::ops::Deref for EntryRef<'_> {
    type Target = Entry;

    fn deref(&self) -> &Entry {
        self.entry
    }
}

impl<'a> EntryRef<'a> {
    /// The state's compact encoding ([`crate::state::compact`]).
    pub fn packed(&self) -> &'a [u8] {
        self.packed
    }

    /// The state's packed bytes (a lone record of `state::compact_record`) and the
    /// seconds it aged since they were true, at `clock`: what
    /// [`state_at`](Self::state_at) would decode and age, for a writer that copies
    /// the bytes instead (a bulk send).
    pub fn packed_at(&self, clock: u32) -> (&'a [u8], u32) {
        (self.packed, clock.saturating_sub(self.entry.stamp))
    }

    /// The state as last seen (locally, or from a peer).
    pub fn state(&self) -> State {
        // Only `Cache::store` makes these bytes, from a whole state: a failure is a bug
        // in the codec, which its tests rule out.
        compact::decode(self.packed).expect("a state the engine packed")
    }

    /// The state as it is at `clock` (see [`Cache::clock`]): older, and nearer its
    /// expiry, by the time since it was stored, as a kernel's `pf_state_export` writes
    /// them from its absolute creation and expiry times.
    pub fn state_at(&self, clock: u32) -> State {
        let mut state = self.state();
        let waited = clock.saturating_sub(self.entry.stamp);
        state.age_secs = state.age_secs.saturating_add(waited);
        state.expire_secs = state.expire_secs.saturating_sub(waited);
        state
    }
}

/// A slab chunk: up to [`CHUNK`] entries, and their packed states back to back in one
/// allocation, so that a state costs its encoding's bytes and no allocator overhead.
///
/// A state whose new encoding has the old one's length (an update mostly moves sequence
/// numbers and counters) is rewritten in place; another length is appended and the old
/// bytes become garbage, as do a removed state's. When the garbage outweighs the live
/// bytes, the chunk's bytes are rewritten without it: each byte copied is paid for by a
/// byte of garbage made before.
#[derive(Debug, Default)]
struct Chunk {
    entries: Vec<Option<Entry>>,
    bytes: Vec<u8>,
    garbage: usize,
}

impl Chunk {
    /// A chunk with room for `bytes` of packed states, the pages of its entries and of
    /// the first `expected` bytes mapped now, in one call to the kernel each
    /// (`populate_spare`): the chunk is about to be filled, and its first writes would
    /// otherwise fault its pages in one by one (a million states' cache takes some
    /// 30 000 pages). The room beyond `expected` is mapped only if a write needs it.
    fn with_room(bytes: usize, expected: usize) -> Chunk {
        let mut chunk = Chunk {
            entries: Vec::with_capacity(CHUNK),
            bytes: Vec::with_capacity(bytes),
            garbage: 0,
        };
        crate::sys::memory::populate_spare(&mut chunk.entries, CHUNK);
        crate::sys::memory::populate_spare(&mut chunk.bytes, expected);
        chunk
    }

    /// Appends the encoding of `state` to the chunk's bytes; returns where it starts
    /// and its length. Grows by an eighth, not by doubling: a chunk's bytes are
    /// sized from the states before it (see [`Cache::insert`]), and doubling would
    /// leave up to half of them unused.
    fn append(&mut self, state: &State) -> (u32, u16) {
        let at = self.bytes.len();
        if self.bytes.capacity() - at < compact_record::MAX_RECORD_BYTES {
            let more = (self.bytes.capacity() / 8).max(compact_record::MAX_RECORD_BYTES);
            self.bytes.reserve_exact(more);
        }
        compact::encode(state, &mut self.bytes);
        (at as u32, (self.bytes.len() - at) as u16)
    }

    /// As [`append`](Self::append), for the state whose encoding is `packed`.
    fn append_packed(&mut self, packed: &[u8]) -> (u32, u16) {
        let at = self.bytes.len();
        if self.bytes.capacity() - at < packed.len() {
            let more = (self.bytes.capacity() / 8).max(compact_record::MAX_RECORD_BYTES);
            self.bytes.reserve_exact(more);
        }
        self.bytes.extend_from_slice(packed);
        (at as u32, packed.len() as u16)
    }

    fn entry(&self, i: usize) -> Option<EntryRef<'_>> {
        let entry = self.entries.get(i)?.as_ref()?;
        Some(EntryRef {
            packed: &self.bytes[entry.range()],
            entry,
        })
    }

    /// Stores `state` as the packed state of entry `i`.
    fn store(&mut self, i: usize, state: &State) {
        let (at, len) = self.append(state);
        let e = self.entries[i].as_mut().expect("a live cache slot");
        if e.len == len && e.len != 0 {
            // Same length: in place, and the appended copy taken back.
            let old = e.range();
            self.bytes.copy_within(at as usize.., old.start);
            self.bytes.truncate(at as usize);
            return;
        }
        self.garbage += usize::from(e.len);
        e.at = at;
        e.len = len;
        self.collect_garbage();
    }

    /// Forgets the bytes of a removed entry.
    fn release(&mut self, entry: &Entry) {
        self.garbage += usize::from(entry.len);
        self.collect_garbage();
    }

    fn collect_garbage(&mut self) {
        if self.garbage < 1024 || self.garbage * 2 < self.bytes.len() {
            return;
        }
        let live = self.bytes.len() - self.garbage;
        let mut bytes = Vec::with_capacity(live + live / 8);
        for e in self.entries.iter_mut().flatten() {
            let range = e.range();
            e.at = bytes.len() as u32;
            bytes.extend_from_slice(&self.bytes[range]);
        }
        self.bytes = bytes;
        self.garbage = 0;
    }
}

/// The key of a live slot.
#[inline]
fn key_in(chunks: &[Chunk], slot: u32) -> Key {
    chunks[(slot >> CHUNK_BITS) as usize].entries[slot as usize & (CHUNK - 1)]
        .as_ref()
        .expect("the index names live slots")
        .key()
}

/// An instant on the cache's clocks (see [`Cache::clock`]).
#[derive(Debug, Clone, Copy)]
struct ClockTimes {
    /// Whole seconds from the epoch.
    secs: u32,
    /// Milliseconds from the epoch, plus one, wrapping (never 0).
    millis: u32,
}

/// The cache is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheFull;

/// The packed bytes of a state lent out (see [`Cache::lend`]): still those of its slot,
/// or a copy made before the slot changed.
#[derive(Debug, Clone, Copy)]
enum Loan {
    Slot(u32),
    Copy { start: u32, len: u16 },
}

/// States by key, with the send queues.
#[derive(Debug)]
pub struct Cache {
    chunks: Vec<Chunk>,
    free: Vec<u32>,
    index: Index,
    /// States per creator, so that a CLR for a creator we hold nothing of costs no scan.
    creators: HashMap<u32, u32, KeyedState>,
    /// States of one creator inserted and not yet added into `creators` (creator,
    /// count): a bulk's states come in runs of one creator, and a run costs one map
    /// update, not one per state. Read through [`creator_count`](Self::creator_count).
    creator_run: (u32, u32),
    heads: [u32; 5],
    tails: [u32; 5],
    lens: [usize; 5],
    limit: usize,
    /// New states take new slots (at the end), not freed ones: a walk in slot order
    /// then meets every state added during it.
    append_only: bool,
    /// What entries' stamps count from: the first instant the clock was read at.
    epoch: Option<Instant>,
    /// The latest instant the clock was read at.
    latest: Option<Instant>,
    /// The instant the clock was last read at, and what it read.
    last_times: Option<(Instant, ClockTimes)>,
    /// Digest sums per creator, once enabled (`digest.rs`).
    digests: Option<Digests>,
    /// Bytes of the packed states stored so far, and how many: their mean sizes a new
    /// chunk's bytes.
    packed_bytes: u64,
    packed_count: u64,
    /// The states lent out, by loan number (see [`lend`](Self::lend)).
    loans: Vec<Loan>,
    /// Loans below this number are copies; those from it on may still read their
    /// slots. Each loan is copied once at most, however many changes come before the
    /// loans end.
    loans_copied: usize,
    /// The bytes of the loans copied before their slots changed, back to back.
    loan_copies: Vec<u8>,
}

impl Cache {
    /// An empty cache holding at most `limit` states, its index hashed with `hasher`.
    pub fn new(limit: usize, hasher: KeyedState) -> Cache {
        Cache {
            chunks: Vec::new(),
            free: Vec::new(),
            index: Index::new(hasher),
            creators: HashMap::with_hasher(hasher),
            creator_run: (0, 0),
            heads: [NIL; 5],
            tails: [NIL; 5],
            lens: [0; 5],
            // Slot numbers are u32 and NIL is reserved.
            limit: limit.min(NIL as usize - 1),
            append_only: false,
            epoch: None,
            latest: None,
            last_times: None,
            digests: None,
            packed_bytes: 0,
            packed_count: 0,
            loans: Vec::new(),
            loans_copied: 0,
            loan_copies: Vec::new(),
        }
    }

    /// Whole seconds from the cache's epoch to `now`: what entries are stamped with.
    /// Four bytes per state, where an `Instant` would take sixteen.
    pub fn clock(&mut self, now: Instant) -> u32 {
        self.times(now).secs
    }

    /// `now` on the cache's clocks, which remembers it as the latest time seen (see
    /// [`peer_updated`](Self::peer_updated)). Worked out once per instant: a batch's
    /// states all come at the same `now`, and each asks twice.
    #[inline]
    fn times(&mut self, now: Instant) -> ClockTimes {
        match self.last_times {
            Some((at, times)) if at == now => times,
            _ => {
                let epoch = *self.epoch.get_or_insert(now);
                if self.latest.is_none_or(|latest| latest < now) {
                    self.latest = Some(now);
                }
                let since = now.saturating_duration_since(epoch);
                let times = ClockTimes {
                    secs: u32::try_from(since.as_secs()).unwrap_or(u32::MAX),
                    // Plus one, wrapping after 49 days; never 0, an entry's "never"
                    // (the one instant that would wrap to it reads a millisecond late).
                    millis: (since.as_millis() as u32).wrapping_add(1).max(1),
                };
                self.last_times = Some((now, times));
                times
            }
        }
    }

    /// A peer updated the state in `slot` at `now`.
    pub fn set_peer_updated(&mut self, slot: u32, now: Instant) {
        let ms = self.times(now).millis;
        self.get_mut(slot).peer_updated = ms;
    }

    /// When a peer last updated the state in `slot`, if ever: the latest instant
    /// before the latest time the cache was given whose milliseconds match. A time
    /// more than 49 days old reads as a multiple of 49 days later: the engine asks
    /// only whether it was within a few seconds, and such a state answers "yes" for
    /// those seconds once every 49 days (a local update sent at once, a forget put
    /// off), which does no harm.
    pub fn peer_updated(&self, slot: u32) -> Option<Instant> {
        let at = self.get(slot).peer_updated;
        let (epoch, latest) = (self.epoch?, self.latest?);
        if at == 0 {
            return None;
        }
        let latest_ms = latest.saturating_duration_since(epoch).as_millis() as u32;
        let age = latest_ms.wrapping_sub(at - 1);
        Some(
            latest
                .checked_sub(std::time::Duration::from_millis(u64::from(age)))
                .unwrap_or(epoch),
        )
    }

    /// Lends out the packed bytes of the state in `slot` as they are now (a queued
    /// table operation's): the loan's number, for [`lent`](Self::lent). The bytes are
    /// not copied unless the state changes or goes before the loans end: a bulk's
    /// imports are written once, into the cache, and read from there when the
    /// operations are polled.
    pub fn lend(&mut self, slot: u32) -> u32 {
        debug_assert!(self.at(slot).is_some());
        self.loans.push(Loan::Slot(slot));
        (self.loans.len() - 1) as u32
    }

    /// The bytes lent as loan `loan`: those of its state when it was lent.
    pub fn lent(&self, loan: u32) -> &[u8] {
        match self.loans[loan as usize] {
            Loan::Slot(slot) => self.get(slot).packed(),
            Loan::Copy { start, len } => {
                &self.loan_copies[start as usize..start as usize + usize::from(len)]
            }
        }
    }

    /// Every loan was read: their numbers are free again.
    pub fn end_loans(&mut self) {
        self.loans.clear();
        self.loan_copies.clear();
        self.loans_copied = 0;
    }

    /// Copies the bytes of the loans that still read their slots: a slot is about to
    /// change or go. All of them at once, so that what follows (a packet's merges, a
    /// clear's removals) costs one pass, not one per change.
    fn keep_loans(&mut self) {
        for i in self.loans_copied..self.loans.len() {
            if let Loan::Slot(slot) = self.loans[i] {
                let (c, j) = Self::place(slot);
                let chunk = &self.chunks[c];
                let range = chunk.entries[j]
                    .as_ref()
                    .expect("a lent slot is live")
                    .range();
                let start = self.loan_copies.len() as u32;
                self.loan_copies.extend_from_slice(&chunk.bytes[range]);
                let len = (self.loan_copies.len() - start as usize) as u16;
                self.loans[i] = Loan::Copy { start, len };
            }
        }
        self.loans_copied = self.loans.len();
    }

    /// Number of states.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// How many more states the limit lets in.
    pub fn room_left(&self) -> usize {
        self.limit.saturating_sub(self.len())
    }

    /// Makes room for `n` more states (no more than the limit leaves), so that
    /// adding them rehashes nothing; returns for how many. Only the index and the
    /// chunk list are sized: a chunk's bytes still come with its states; the index's
    /// pages are mapped in one call, as its growth maps them.
    pub fn reserve_states(&mut self, n: usize) -> usize {
        let n = n.min(self.room_left());
        self.index.reserve(n);
        self.chunks.reserve(n.div_ceil(CHUNK));
        n
    }

    /// Slots ever allocated: every live slot is below this.
    pub fn slot_count(&self) -> u32 {
        match self.chunks.last() {
            Some(last) => ((self.chunks.len() - 1) * CHUNK + last.entries.len()) as u32,
            None => 0,
        }
    }

    /// While set, freed slots are not reused (see `append_only`).
    pub fn set_append_only(&mut self, on: bool) {
        self.append_only = on;
    }

    /// States of one creator.
    pub fn creator_count(&self, creatorid: u32) -> u32 {
        let run = match self.creator_run {
            (creator, n) if creator == creatorid => n,
            _ => 0,
        };
        self.creators.get(&creatorid).copied().unwrap_or(0) + run
    }

    /// Adds the run of inserts not counted yet into `creators`.
    fn count_creator_run(&mut self) {
        let (creator, n) = std::mem::take(&mut self.creator_run);
        if n > 0 {
            *self.creators.entry(creator).or_insert(0) += n;
        }
    }

    /// The slot of a state.
    #[inline]
    pub fn find(&self, key: Key) -> Option<u32> {
        let chunks = &self.chunks;
        self.index.find(key, |slot| key_in(chunks, slot))
    }

    /// Has the index buckets where lookups of `keys` start fetched, one after the
    /// other without waiting: their memory fetches overlap, where lookups made one at
    /// a time (each followed by its state's handling) would wait for each in turn. In a
    /// large table every lookup misses the CPU caches otherwise. Prefetches, not loads:
    /// a load waits in the processor's window until its line comes, and a batch's
    /// loads filled it.
    pub fn warm(&self, keys: impl Iterator<Item = Key>) {
        for key in keys {
            self.index.prefetch_home(key);
        }
    }

    #[inline]
    fn place(slot: u32) -> (usize, usize) {
        ((slot >> CHUNK_BITS) as usize, slot as usize & (CHUNK - 1))
    }

    /// The entry in a slot, if the slot is live.
    #[inline]
    pub fn at(&self, slot: u32) -> Option<EntryRef<'_>> {
        let (c, i) = Self::place(slot);
        self.chunks.get(c)?.entry(i)
    }

    /// The entry in a slot. Slots come from `find`/`insert` and stay valid until
    /// `remove`; a stale one is a bug in the engine.
    #[inline]
    pub fn get(&self, slot: u32) -> EntryRef<'_> {
        self.at(slot).expect("a live cache slot")
    }

    /// The entry in a slot, mutably (its state: [`set_state`](Self::set_state)).
    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> &mut Entry {
        let (c, i) = Self::place(slot);
        self.chunks[c].entries[i]
            .as_mut()
            .expect("a live cache slot")
    }

    /// Replaces the state in `slot` (of the same key), its age and expiry true at
    /// `stamp`; its digest sum follows its version, O(1).
    pub fn set_state(&mut self, slot: u32, state: &State, stamp: u32) {
        self.keep_loans();
        let (c, i) = Self::place(slot);
        let chunk = &mut self.chunks[c];
        let counted_version = {
            let e = chunk.entries[i].as_mut().expect("a live cache slot");
            debug_assert_eq!(e.key(), (state.creatorid, state.id));
            e.stamp = stamp;
            let counted = e.version;
            if e.filtered.is_none() {
                // A filtered state's copies part (its updates stop both ways): the
                // version last synced stays (see `Cache::adopt_version`).
                e.version = state_version(state);
            }
            counted
        };
        chunk.store(i, state);
        self.recount(slot, counted_version);
    }

    /// Adds a state that is not in the cache yet, with `entry` (made from it by
    /// [`Entry::new`]).
    pub fn insert(&mut self, entry: Entry, state: &State) -> Result<u32, CacheFull> {
        self.insert_with(entry, state, None)
    }

    /// As [`insert`](Self::insert), the state's encoding ([`compact::encode`]) given:
    /// `packed` must be those bytes (a transcoded batch record's,
    /// `compact_record::decode_batch_lone`); they are stored as they are.
    pub fn insert_packed(
        &mut self,
        entry: Entry,
        state: &State,
        packed: &[u8],
    ) -> Result<u32, CacheFull> {
        debug_assert_eq!(packed, &compact::encoded(state)[..], "{state:?}");
        self.insert_with(entry, state, Some(packed))
    }

    fn insert_with(
        &mut self,
        mut entry: Entry,
        state: &State,
        packed: Option<&[u8]>,
    ) -> Result<u32, CacheFull> {
        let key = entry.key();
        debug_assert_eq!(key, (state.creatorid, state.id));
        debug_assert!(self.find(key).is_none());
        if self.index.len() >= self.limit {
            return Err(CacheFull);
        }
        let reuse = if self.append_only {
            None
        } else {
            self.free.pop()
        };
        let slot = match reuse {
            Some(slot) => slot,
            None => {
                if self.chunks.last().is_none_or(|c| c.entries.len() == CHUNK) {
                    if let Some(full) = self.chunks.last_mut() {
                        // Its states are in: the room left for more goes back.
                        full.bytes.shrink_to_fit();
                    }
                    // Room for as many bytes as the states so far take on average (an
                    // eighth more for the spread): most chunks never grow.
                    let mean = match self.packed_count {
                        0 => 64,
                        n => self.packed_bytes / n + 1,
                    };
                    let room = CHUNK * mean as usize;
                    // Exactly one chunk of entries: pushes below never reallocate it.
                    self.chunks.push(Chunk::with_room(room + room / 8, room));
                }
                let slot = self.slot_count();
                self.chunks
                    .last_mut()
                    .expect("a chunk with room")
                    .entries
                    .push(None);
                slot
            }
        };
        let (c, i) = Self::place(slot);
        let chunk = &mut self.chunks[c];
        (entry.at, entry.len) = match packed {
            Some(packed) => chunk.append_packed(packed),
            None => chunk.append(state),
        };
        self.packed_bytes += u64::from(entry.len);
        self.packed_count += 1;
        // `recount` of an entry not counted yet, made before the entry is stored: no
        // lookups of it again, once per state imported.
        entry.digest_pos = UNCOUNTED;
        if let Some(digests) = self.digests.as_mut() {
            if entry.counts() {
                entry.digest_pos = digests.add(key, entry.version, slot);
            }
        }
        chunk.entries[i] = Some(entry);
        self.index.insert(key, slot);
        if self.creator_run.0 != key.0 {
            self.count_creator_run();
            self.creator_run.0 = key.0;
        }
        self.creator_run.1 += 1;
        Ok(slot)
    }

    /// Changes an entry's marks (`deleted`, `delayed`, ...) through `change`, keeping
    /// the digest sums true. Every change of a mark that decides whether a state
    /// counts (see [`Entry::counts`]) must come through here.
    pub fn mark(&mut self, slot: u32, change: impl FnOnce(&mut Entry)) {
        let e = self.get_mut(slot);
        let (counted_version, was_filtered) = (e.version, e.filtered.is_some());
        change(e);
        if was_filtered && e.filtered.is_none() {
            // Synced again from now on: the version is the state's own.
            let version = state_version(&self.get(slot).state());
            self.get_mut(slot).version = version;
        }
        self.recount(slot, counted_version);
    }

    /// A filtered copy of a peer's state (not merged) whose creator's copy is now at
    /// `version`: the digests compare that, or they would ask for the copy at every
    /// round and never take it.
    pub fn adopt_version(&mut self, slot: u32, version: u32) {
        self.mark(slot, |e| e.version = version);
    }

    /// Counts, uncounts or recounts the entry in `slot` in the digest sums, as its
    /// marks and version say; `counted_version` is the version it was counted at.
    fn recount(&mut self, slot: u32, counted_version: u32) {
        if self.digests.is_none() {
            return;
        }
        let e = self.get(slot);
        let counted = e.digest_pos != UNCOUNTED;
        let (key, version) = (e.key(), e.version);
        match (counted, e.counts()) {
            (true, true) if counted_version != version => {
                if let Some(digests) = self.digests.as_mut() {
                    digests.change(key, counted_version, version);
                }
            }
            (true, false) => self.uncount(slot, counted_version),
            (false, true) => {
                if let Some(digests) = self.digests.as_mut() {
                    let pos = digests.add(key, version, slot);
                    self.get_mut(slot).digest_pos = pos;
                }
            }
            _ => {}
        }
    }

    /// Takes the entry in `slot`, counted at `counted_version`, out of the digest sums,
    /// if it is in them.
    fn uncount(&mut self, slot: u32, counted_version: u32) {
        if self.digests.is_none() {
            return;
        }
        let e = self.get_mut(slot);
        if e.digest_pos == UNCOUNTED {
            return;
        }
        let (key, pos) = (e.key(), e.digest_pos);
        e.digest_pos = UNCOUNTED;
        let moved = self
            .digests
            .as_mut()
            .and_then(|digests| digests.remove(key, counted_version, pos));
        if let Some(moved) = moved {
            self.get_mut(moved).digest_pos = pos;
        }
    }

    /// Keeps digest sums of `buckets` buckets from now on, starting from every entry
    /// held now. Called again with another count, starts over.
    pub fn enable_digests(&mut self, buckets: u16) {
        let hasher = *self.creators.hasher();
        self.digests = Some(Digests::new(buckets, hasher));
        let slots: Vec<u32> = self.slots().collect();
        for slot in slots {
            let e = self.get_mut(slot);
            e.digest_pos = UNCOUNTED;
            let version = e.version;
            self.recount(slot, version);
        }
    }

    /// The digest sums, if kept.
    pub(super) fn digests(&self) -> Option<&Digests> {
        self.digests.as_ref()
    }

    /// Removes a state (out of its queue first) and returns it.
    pub fn remove(&mut self, slot: u32) -> Entry {
        self.keep_loans();
        self.dequeue(slot);
        let version = self.get(slot).version;
        self.uncount(slot, version);
        let key = self.get(slot).key();
        let chunks = &self.chunks;
        let removed = self.index.remove(key, |slot| key_in(chunks, slot));
        debug_assert_eq!(removed, Some(slot));
        let (c, i) = Self::place(slot);
        let chunk = &mut self.chunks[c];
        let entry = chunk.entries[i].take().expect("a live cache slot");
        chunk.release(&entry);
        self.count_creator_run();
        if let Some(n) = self.creators.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.creators.remove(&key.0);
            }
        }
        self.free.push(slot);
        entry
    }

    /// Puts a state at the tail of `queue`, taking it out of any other queue first.
    pub fn enqueue(&mut self, slot: u32, queue: Queue) {
        if self.get(slot).queue == Some(queue) {
            return;
        }
        self.dequeue(slot);
        let q = queue as usize;
        let tail = self.tails[q];
        {
            let e = self.get_mut(slot);
            e.queue = Some(queue);
            e.prev = tail;
            e.next = NIL;
        }
        if tail == NIL {
            self.heads[q] = slot;
        } else {
            self.get_mut(tail).next = slot;
        }
        self.tails[q] = slot;
        self.lens[q] += 1;
    }

    /// Takes a state out of its queue, if it is in one.
    pub fn dequeue(&mut self, slot: u32) {
        let (queue, prev, next) = {
            let e = self.get(slot);
            match e.queue {
                Some(q) => (q as usize, e.prev, e.next),
                None => return,
            }
        };
        if prev == NIL {
            self.heads[queue] = next;
        } else {
            self.get_mut(prev).next = next;
        }
        if next == NIL {
            self.tails[queue] = prev;
        } else {
            self.get_mut(next).prev = prev;
        }
        self.lens[queue] -= 1;
        let e = self.get_mut(slot);
        e.queue = None;
        e.prev = NIL;
        e.next = NIL;
    }

    /// Number of states in a queue.
    #[inline]
    pub fn queue_len(&self, queue: Queue) -> usize {
        self.lens[queue as usize]
    }

    /// The first state of a queue.
    #[inline]
    pub fn front(&self, queue: Queue) -> Option<u32> {
        let head = self.heads[queue as usize];
        (head != NIL).then_some(head)
    }

    /// Every live slot, in slot order.
    pub fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.chunks.iter().enumerate().flat_map(|(c, chunk)| {
            chunk
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.is_some())
                .map(move |(i, _)| ((c << CHUNK_BITS) + i) as u32)
        })
    }

    /// Every live entry, in slot order.
    pub fn entries(&self) -> impl Iterator<Item = EntryRef<'_>> + '_ {
        self.chunks
            .iter()
            .flat_map(|chunk| (0..chunk.entries.len()).filter_map(|i| chunk.entry(i)))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn state(id: u64) -> State {
        State {
            id,
            creatorid: 7,
            ..State::default()
        }
    }

    fn cache(limit: usize) -> Cache {
        Cache::new(limit, KeyedState::new([0, 0]))
    }

    fn order(c: &Cache, q: Queue) -> Vec<u64> {
        let mut out = Vec::new();
        let mut at = c.front(q);
        while let Some(s) = at {
            out.push(c.get(s).key().1);
            let next = c.get(s).next;
            at = (next != NIL).then_some(next);
        }
        out
    }

    #[test]
    fn queues_move_states_in_constant_time() {
        let mut c = cache(10);
        let slots: Vec<u32> = (1..=4)
            .map(|i| c.insert(Entry::new(&state(i), 0), &state(i)).unwrap())
            .collect();
        for &s in &slots {
            c.enqueue(s, Queue::UpdC);
        }
        assert_eq!(order(&c, Queue::UpdC), vec![1, 2, 3, 4]);
        c.enqueue(slots[1], Queue::Upd);
        assert_eq!(order(&c, Queue::UpdC), vec![1, 3, 4]);
        assert_eq!(order(&c, Queue::Upd), vec![2]);
        c.remove(slots[3]);
        c.dequeue(slots[0]);
        assert_eq!(order(&c, Queue::UpdC), vec![3]);
        assert_eq!(c.queue_len(Queue::UpdC), 1);
        assert_eq!(c.len(), 3);
        // A freed slot is reused.
        let again = c.insert(Entry::new(&state(9), 0), &state(9)).unwrap();
        assert_eq!(again, slots[3]);
    }

    #[test]
    fn the_limit_is_kept() {
        let mut c = cache(1);
        c.insert(Entry::new(&state(1), 0), &state(1)).unwrap();
        assert_eq!(
            c.insert(Entry::new(&state(2), 0), &state(2)).unwrap_err(),
            CacheFull
        );
    }

    #[test]
    fn chunks_hold_many_states_in_slot_order() {
        let mut c = cache(10_000);
        let n = 3 * CHUNK as u64 + 5;
        for i in 0..n {
            let slot = c.insert(Entry::new(&state(i), 0), &state(i)).unwrap();
            assert_eq!(u64::from(slot), i);
        }
        assert_eq!(c.slot_count() as u64, n);
        assert_eq!(c.creator_count(7), n as u32);
        c.remove(c.find((7, 300)).unwrap());
        let ids: Vec<u64> = c.entries().map(|e| e.key().1).collect();
        assert_eq!(ids.len() as u64, n - 1);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(c.at(300).is_none());
        assert_eq!(c.slots().count() as u64, n - 1);
        // Every chunk was allocated once, at its final size.
        assert!(c.chunks.iter().all(|ch| ch.entries.capacity() == CHUNK));
    }

    /// States of random lengths replaced (same length and not), removed and added in
    /// random order, across chunks: every entry always decodes to its last state, and
    /// the chunks' garbage is collected.
    #[test]
    fn packed_states_stay_true_under_random_updates_and_removes() {
        use crate::table::synth::Synth;
        use std::collections::HashMap;
        let mut synth = Synth::new(3, 7);
        let mut c = cache(100_000);
        let mut model: HashMap<u64, (u32, State)> = HashMap::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next_id = 1;
        for round in 0..40_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ids: Vec<u64> = model.keys().copied().collect();
            match x % 4 {
                0 | 1 if model.len() < 3000 => {
                    let mut s = synth.state();
                    s.creatorid = 7;
                    s.id = next_id;
                    next_id += 1;
                    let slot = c.insert(Entry::new(&s, round), &s).unwrap();
                    model.insert(s.id, (slot, s));
                }
                2 if !ids.is_empty() => {
                    let id = ids[(x >> 8) as usize % ids.len()];
                    let (slot, old) = model[&id];
                    // Half the time the same fields with other values (mostly the same
                    // length), else another state's shape (another length).
                    let mut s = if x & 256 == 0 { old } else { synth.state() };
                    (s.creatorid, s.id) = (7, id);
                    s.src.seqlo = s.src.seqlo.wrapping_add(x as u32);
                    s.packets[0] = x >> 20;
                    c.set_state(slot, &s, round);
                    model.insert(id, (slot, s));
                }
                _ if !ids.is_empty() => {
                    let id = ids[(x >> 8) as usize % ids.len()];
                    let (slot, _) = model.remove(&id).unwrap();
                    assert_eq!(c.remove(slot).key(), (7, id));
                }
                _ => {}
            }
        }
        assert_eq!(c.len(), model.len());
        for (id, (slot, s)) in &model {
            assert_eq!(c.find((7, *id)), Some(*slot));
            assert_eq!(c.get(*slot).state(), *s);
        }
        for chunk in &c.chunks {
            let live: usize = chunk
                .entries
                .iter()
                .flatten()
                .map(|e| usize::from(e.len))
                .sum();
            assert_eq!(chunk.bytes.len(), live + chunk.garbage);
            assert!(chunk.garbage < 1024 || chunk.garbage * 2 < chunk.bytes.len());
        }
    }

    /// A loan reads as the bytes lent, whatever happened to its state after: changed
    /// in place or to another length, removed and its slot taken by another state,
    /// its chunk's garbage collected, lent again. Checked against copies made at
    /// lending (what the engine's queue held before loans).
    #[test]
    fn loans_read_as_lent_whatever_changes_after() {
        use crate::table::synth::Synth;
        let mut synth = Synth::new(5, 9);
        let mut c = cache(100_000);
        let mut live: Vec<(u32, State)> = Vec::new();
        let mut lent: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next_id = 1;
        let mut checked = 0;
        for round in 0..60_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let pick = (x >> 8) as usize;
            match x % 6 {
                0 | 1 if live.len() < 3000 => {
                    let mut s = synth.state();
                    (s.creatorid, s.id) = (7, next_id);
                    next_id += 1;
                    let slot = c.insert(Entry::new(&s, round), &s).unwrap();
                    live.push((slot, s));
                }
                2 if !live.is_empty() => {
                    let i = pick % live.len();
                    let (slot, old) = live[i];
                    let mut s = if x & 256 == 0 { old } else { synth.state() };
                    (s.creatorid, s.id) = (7, old.id);
                    s.src.seqlo = s.src.seqlo.wrapping_add(x as u32);
                    c.set_state(slot, &s, round);
                    live[i] = (slot, s);
                }
                3 if !live.is_empty() => {
                    let (slot, _) = live.swap_remove(pick % live.len());
                    c.remove(slot);
                }
                _ if !live.is_empty() => {
                    let (slot, _) = live[pick % live.len()];
                    let bytes = c.get(slot).packed().to_vec();
                    lent.push((c.lend(slot), bytes));
                }
                _ => {}
            }
            if x % 50 == 0 {
                for (loan, bytes) in &lent {
                    assert_eq!(c.lent(*loan), &bytes[..], "loan {loan} at round {round}");
                    checked += 1;
                }
                if x & 512 == 0 {
                    c.end_loans();
                    lent.clear();
                }
            }
        }
        assert!(checked > 10_000, "{checked} loans checked");
        for (slot, s) in &live {
            assert_eq!(c.get(*slot).state(), *s);
        }
    }

    #[test]
    fn an_entry_is_small() {
        // What a million states' entries cost beside their packed bytes (44 bytes, and
        // 4 for the digests' version).
        assert!(std::mem::size_of::<Option<Entry>>() <= 48);
    }

    #[test]
    fn peer_update_times_survive_the_millisecond_clock_wrapping() {
        let mut c = cache(10);
        let t0 = Instant::now();
        let slot = c.insert(Entry::new(&state(1), 0), &state(1)).unwrap();
        assert_eq!(c.peer_updated(slot), None);
        c.clock(t0);
        let wrap = std::time::Duration::from_millis(1 << 32);
        for at in [
            t0,
            t0 + std::time::Duration::from_millis(1999),
            t0 + wrap,
            t0 + wrap * 3 + std::time::Duration::from_millis(5),
        ] {
            c.set_peer_updated(slot, at);
            assert_eq!(c.peer_updated(slot), Some(at));
            let later = at + std::time::Duration::from_millis(1500);
            c.clock(later);
            assert_eq!(c.peer_updated(slot), Some(at));
        }
    }

    /// `reserve_states` (a bulk's announced size) makes room within the limit only,
    /// and the states then inserted are the same cache as without it.
    #[test]
    fn reserved_room_is_bounded_by_the_limit_and_changes_no_outcome() {
        let mut c = cache(5_000);
        let mut plain = cache(5_000);
        for i in 0..10 {
            c.insert(Entry::new(&state(i), 0), &state(i)).unwrap();
            plain.insert(Entry::new(&state(i), 0), &state(i)).unwrap();
        }
        assert_eq!(
            c.reserve_states(1_000_000),
            4_990,
            "no more than the limit leaves"
        );
        let reserved = c.index.bytes();
        assert_eq!(c.reserve_states(100), 100);
        for i in 10..5_000 {
            let a = c.insert(Entry::new(&state(i), 0), &state(i)).unwrap();
            let b = plain.insert(Entry::new(&state(i), 0), &state(i)).unwrap();
            assert_eq!(a, b);
        }
        assert_eq!(c.index.bytes(), reserved, "no growth past the reserve");
        assert_eq!(c.reserve_states(7), 0, "full");
        for i in 0..5_000 {
            let slot = c.find((7, i)).expect("held");
            assert_eq!(c.get(slot).state(), plain.get(slot).state());
        }
        assert_eq!(
            c.insert(Entry::new(&state(5_000), 0), &state(5_000))
                .unwrap_err(),
            CacheFull
        );
    }
}
