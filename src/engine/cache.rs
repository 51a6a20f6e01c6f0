//! The state cache: every state the engine knows, keyed by (creatorid, id), and the
//! send queues threaded through it.
//!
//! Each state sits in at most one queue at a time, as in the kernels (`sync_state`).
//! The queues are intrusive doubly linked lists over a slab, so moving a state from one
//! queue to another (a compressed update upgraded to a full one, an insert acknowledged)
//! is O(1) and costs no allocation.
//!
//! The slab grows in fixed chunks rather than as one vector: a vector of ~400-byte
//! entries that doubles would waste up to half its size; chunks waste at most one chunk.
//! Iteration (bulk sends, clears) goes by slot number, so it is deterministic.

use std::collections::HashMap;
use std::time::Instant;

use super::digest::{Digests, UNCOUNTED};
use super::hash::KeyedState;
use super::index::Index;
use crate::state::{compact, State};

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
/// Slots per slab chunk (a power of two).
const CHUNK_BITS: u32 = 8;
const CHUNK: usize = 1 << CHUNK_BITS;

/// What the engine keeps per state.
///
/// The state itself is held in the compact encoding of [`crate::state::compact`]
/// (about 110 bytes instead of a 400-byte `State`): with a million states, this is what
/// the engine's memory is made of. [`state`](Entry::state) decodes it,
/// [`set_state`](Entry::set_state) stores a new copy; the key is kept apart, for the
/// index.
#[derive(Debug, Clone)]
pub struct Entry {
    key: Key,
    packed: Box<[u8]>,
    /// When a peer last updated this state: local updates within the split window are
    /// sent at once.
    pub peer_updated: Option<Instant>,
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
}

impl Entry {
    /// A new entry, in no queue, its age and expiry true at `stamp` (see
    /// [`Cache::clock`]).
    pub fn new(state: &State, stamp: u32) -> Entry {
        Entry {
            key: (state.creatorid, state.id),
            stamp,
            packed: pack(state),
            peer_updated: None,
            prev: NIL,
            next: NIL,
            queue: None,
            updates: 0,
            nosync: false,
            deleted: false,
            filtered: None,
            delayed: false,
            digest_pos: UNCOUNTED,
        }
    }

    /// Whether the state counts in its creator's digest (see `digest.rs`).
    fn counts(&self) -> bool {
        !self.deleted && !self.delayed && !self.nosync
    }
}

impl Entry {
    /// The state's (creatorid, id).
    pub fn key(&self) -> Key {
        self.key
    }

    /// The state as last seen (locally, or from a peer).
    pub fn state(&self) -> State {
        // Only `pack` makes these bytes, from a whole state: a failure is a bug in the
        // codec, which its tests rule out.
        compact::decode(&self.packed).expect("a state the engine packed")
    }

    /// The state as it is at `clock` (see [`Cache::clock`]): older, and nearer its
    /// expiry, by the time since it was stored, as a kernel's `pf_state_export` writes
    /// them from its absolute creation and expiry times.
    pub fn state_at(&self, clock: u32) -> State {
        let mut state = self.state();
        let waited = clock.saturating_sub(self.stamp);
        state.age_secs = state.age_secs.saturating_add(waited);
        state.expire_secs = state.expire_secs.saturating_sub(waited);
        state
    }

    /// Replaces the state (of the same key), its age and expiry true at `stamp`. An
    /// update mostly moves sequence numbers and counters, so the new encoding usually
    /// has the old one's length and is written in place, without an allocation.
    pub fn set_state(&mut self, state: &State, stamp: u32) {
        debug_assert_eq!(self.key, (state.creatorid, state.id));
        self.stamp = stamp;
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            compact::encode(state, scratch);
            if scratch.len() == self.packed.len() {
                self.packed.copy_from_slice(scratch);
            } else {
                self.packed = Box::from(&scratch[..]);
            }
        });
    }
}

thread_local! {
    /// Where states are encoded before they are stored, so that storing one costs at
    /// most one allocation of its exact size.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn pack(state: &State) -> Box<[u8]> {
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.clear();
        compact::encode(state, scratch);
        Box::from(&scratch[..])
    })
}

/// The key of a live slot.
#[inline]
fn key_in(chunks: &[Vec<Option<Entry>>], slot: u32) -> Key {
    chunks[(slot >> CHUNK_BITS) as usize][slot as usize & (CHUNK - 1)]
        .as_ref()
        .expect("the index names live slots")
        .key
}

/// The cache is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheFull;

/// States by key, with the send queues.
#[derive(Debug)]
pub struct Cache {
    chunks: Vec<Vec<Option<Entry>>>,
    free: Vec<u32>,
    index: Index,
    /// States per creator, so that a CLR for a creator we hold nothing of costs no scan.
    creators: HashMap<u32, u32, KeyedState>,
    heads: [u32; 5],
    tails: [u32; 5],
    lens: [usize; 5],
    limit: usize,
    /// New states take new slots (at the end), not freed ones: a walk in slot order
    /// then meets every state added during it.
    append_only: bool,
    /// What entries' stamps count from: the first instant the clock was read at.
    epoch: Option<Instant>,
    /// Digest sums per creator, once enabled (`digest.rs`).
    digests: Option<Digests>,
}

impl Cache {
    /// An empty cache holding at most `limit` states, its index hashed with `hasher`.
    pub fn new(limit: usize, hasher: KeyedState) -> Cache {
        Cache {
            chunks: Vec::new(),
            free: Vec::new(),
            index: Index::new(hasher),
            creators: HashMap::with_hasher(hasher),
            heads: [NIL; 5],
            tails: [NIL; 5],
            lens: [0; 5],
            // Slot numbers are u32 and NIL is reserved.
            limit: limit.min(NIL as usize - 1),
            append_only: false,
            epoch: None,
            digests: None,
        }
    }

    /// Whole seconds from the cache's epoch to `now`: what entries are stamped with.
    /// Four bytes per state, where an `Instant` would take sixteen.
    pub fn clock(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        u32::try_from(now.saturating_duration_since(epoch).as_secs()).unwrap_or(u32::MAX)
    }

    /// Number of states.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Slots ever allocated: every live slot is below this.
    pub fn slot_count(&self) -> u32 {
        match self.chunks.last() {
            Some(last) => ((self.chunks.len() - 1) * CHUNK + last.len()) as u32,
            None => 0,
        }
    }

    /// While set, freed slots are not reused (see `append_only`).
    pub fn set_append_only(&mut self, on: bool) {
        self.append_only = on;
    }

    /// States of one creator.
    pub fn creator_count(&self, creatorid: u32) -> u32 {
        self.creators.get(&creatorid).copied().unwrap_or(0)
    }

    /// The slot of a state.
    #[inline]
    pub fn find(&self, key: Key) -> Option<u32> {
        let chunks = &self.chunks;
        self.index.find(key, |slot| key_in(chunks, slot))
    }

    #[inline]
    fn place(slot: u32) -> (usize, usize) {
        ((slot >> CHUNK_BITS) as usize, slot as usize & (CHUNK - 1))
    }

    /// The entry in a slot, if the slot is live.
    #[inline]
    pub fn at(&self, slot: u32) -> Option<&Entry> {
        let (c, i) = Self::place(slot);
        self.chunks.get(c)?.get(i)?.as_ref()
    }

    /// The entry in a slot. Slots come from `find`/`insert` and stay valid until
    /// `remove`; a stale one is a bug in the engine.
    #[inline]
    pub fn get(&self, slot: u32) -> &Entry {
        self.at(slot).expect("a live cache slot")
    }

    /// The entry in a slot, mutably.
    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> &mut Entry {
        let (c, i) = Self::place(slot);
        self.chunks[c][i].as_mut().expect("a live cache slot")
    }

    /// Adds a state that is not in the cache yet.
    pub fn insert(&mut self, entry: Entry) -> Result<u32, CacheFull> {
        let key = entry.key;
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
            Some(slot) => {
                let (c, i) = Self::place(slot);
                self.chunks[c][i] = Some(entry);
                slot
            }
            None => {
                if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
                    // Exactly one chunk: pushes below never reallocate it.
                    self.chunks.push(Vec::with_capacity(CHUNK));
                }
                let slot = self.slot_count();
                self.chunks
                    .last_mut()
                    .expect("a chunk with room")
                    .push(Some(entry));
                slot
            }
        };
        self.index.insert(key, slot);
        *self.creators.entry(key.0).or_insert(0) += 1;
        self.get_mut(slot).digest_pos = UNCOUNTED;
        self.recount(slot);
        Ok(slot)
    }

    /// Changes an entry's marks (`deleted`, `delayed`, ...) through `change`, keeping
    /// the digest sums true. Every change of a mark that decides whether a state
    /// counts (see [`Entry::counts`]) must come through here.
    pub fn mark(&mut self, slot: u32, change: impl FnOnce(&mut Entry)) {
        change(self.get_mut(slot));
        self.recount(slot);
    }

    /// Counts or uncounts the entry in `slot` in the digest sums, as its marks say.
    fn recount(&mut self, slot: u32) {
        let Some(digests) = self.digests.as_mut() else {
            return;
        };
        let (c, i) = Self::place(slot);
        let e = self.chunks[c][i].as_mut().expect("a live cache slot");
        let counted = e.digest_pos != UNCOUNTED;
        if e.counts() == counted {
            return;
        }
        if counted {
            self.uncount(slot);
        } else {
            e.digest_pos = digests.add(e.key, slot);
        }
    }

    /// Takes the entry in `slot` out of the digest sums, if it is in them.
    fn uncount(&mut self, slot: u32) {
        let Some(digests) = self.digests.as_mut() else {
            return;
        };
        let (c, i) = Self::place(slot);
        let e = self.chunks[c][i].as_mut().expect("a live cache slot");
        if e.digest_pos == UNCOUNTED {
            return;
        }
        let (key, pos) = (e.key, e.digest_pos);
        e.digest_pos = UNCOUNTED;
        if let Some(moved) = digests.remove(key, pos) {
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
            self.get_mut(slot).digest_pos = UNCOUNTED;
            self.recount(slot);
        }
    }

    /// The digest sums, if kept.
    pub(super) fn digests(&self) -> Option<&Digests> {
        self.digests.as_ref()
    }

    /// Removes a state (out of its queue first) and returns it.
    pub fn remove(&mut self, slot: u32) -> Entry {
        self.dequeue(slot);
        self.uncount(slot);
        let key = self.get(slot).key;
        let chunks = &self.chunks;
        let removed = self.index.remove(key, |slot| key_in(chunks, slot));
        debug_assert_eq!(removed, Some(slot));
        let (c, i) = Self::place(slot);
        let entry = self.chunks[c][i].take().expect("a live cache slot");
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
                .iter()
                .enumerate()
                .filter(|(_, e)| e.is_some())
                .map(move |(i, _)| ((c << CHUNK_BITS) + i) as u32)
        })
    }

    /// Every live entry, in slot order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.chunks.iter().flatten().flatten()
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
            out.push(c.get(s).key.1);
            let next = c.get(s).next;
            at = (next != NIL).then_some(next);
        }
        out
    }

    #[test]
    fn queues_move_states_in_constant_time() {
        let mut c = cache(10);
        let slots: Vec<u32> = (1..=4)
            .map(|i| c.insert(Entry::new(&state(i), 0)).unwrap())
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
        let again = c.insert(Entry::new(&state(9), 0)).unwrap();
        assert_eq!(again, slots[3]);
    }

    #[test]
    fn the_limit_is_kept() {
        let mut c = cache(1);
        c.insert(Entry::new(&state(1), 0)).unwrap();
        assert_eq!(c.insert(Entry::new(&state(2), 0)).unwrap_err(), CacheFull);
    }

    #[test]
    fn chunks_hold_many_states_in_slot_order() {
        let mut c = cache(10_000);
        let n = 3 * CHUNK as u64 + 5;
        for i in 0..n {
            let slot = c.insert(Entry::new(&state(i), 0)).unwrap();
            assert_eq!(u64::from(slot), i);
        }
        assert_eq!(c.slot_count() as u64, n);
        assert_eq!(c.creator_count(7), n as u32);
        c.remove(c.find((7, 300)).unwrap());
        let ids: Vec<u64> = c.entries().map(|e| e.key.1).collect();
        assert_eq!(ids.len() as u64, n - 1);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(c.at(300).is_none());
        assert_eq!(c.slots().count() as u64, n - 1);
        // Every chunk was allocated once, at its final size.
        assert!(c.chunks.iter().all(|ch| ch.capacity() == CHUNK));
    }
}
