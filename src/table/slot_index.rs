//! The memory table's index: where each state's slot is in the dense slot list, by the
//! state's name.
//!
//! An open-addressing table of 8-byte entries (slot position, 32 bits of the key's hash),
//! probed linearly and kept at most three quarters full. The std `HashMap<Key, u32>` it
//! replaces held 24-byte entries plus a control byte, half of which are empty after it
//! doubles: some 50 MB of a million states' table, against 16 MB here. The keys are a
//! peer's choice, so the hash is keyed ([`KeyedState`], a secret drawn by the table).
//!
//! The stored 32 hash bits also give an entry's home bucket (their low bits), so growing
//! and deleting (backward shift, no tombstones) never read the slots; only a lookup
//! reads a slot's key, to confirm a match of the 32 bits.

use std::hash::BuildHasher;

use crate::engine::KeyedState;

use super::Key;

/// The slot position of a vacant entry.
const VACANT: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The slot's position in the dense list, or [`VACANT`].
    at: u32,
    /// The high 32 bits of the key's hash; their low bits are the entry's home.
    tag: u32,
}

const EMPTY: Entry = Entry { at: VACANT, tag: 0 };

/// The index; see the module documentation.
#[derive(Debug)]
pub(super) struct SlotIndex {
    entries: Vec<Entry>,
    len: usize,
    hasher: KeyedState,
}

impl SlotIndex {
    /// An empty index hashing with `hasher`.
    pub(super) fn new(hasher: KeyedState) -> SlotIndex {
        SlotIndex {
            entries: Vec::new(),
            len: 0,
            hasher,
        }
    }

    /// `key`'s hash as the index files it: an import's lookup and its insert hash once
    /// ([`SlotIndex::get_tagged`], [`SlotIndex::insert_tagged`]).
    #[inline]
    pub(super) fn tag(&self, key: Key) -> u32 {
        (self.hasher.hash_one(key) >> 32) as u32
    }

    /// Reads the entry a lookup of `tag` starts at, so that the lookup soon after finds
    /// it in the cache: a million states' index is 16 MB, and nearly every lookup of a
    /// bulk's was a cache miss, one after the other (a ninth of the receiver parent's
    /// time). Touched for many operations before any is carried out, the misses overlap.
    #[inline]
    pub(super) fn touch(&self, tag: u32) {
        if let Some(e) = self
            .entries
            .get(tag as usize & self.entries.len().wrapping_sub(1))
        {
            crate::sys::memory::prefetch(e);
        }
    }

    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    /// The entry holding `key`; `key_at(at)` is the key of the slot at `at`.
    fn find(&self, key: Key, key_at: impl Fn(u32) -> Key) -> Option<usize> {
        self.find_tagged(key, self.tag(key), key_at)
    }

    /// [`SlotIndex::find`] of `key`, whose [`SlotIndex::tag`] is `tag`.
    #[inline]
    fn find_tagged(&self, key: Key, tag: u32, key_at: impl Fn(u32) -> Key) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = tag as usize & mask;
        loop {
            let e = self.entries[i];
            if e.at == VACANT {
                return None;
            }
            if e.tag == tag && key_at(e.at) == key {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Where `key`'s slot is.
    #[cfg(test)]
    pub(super) fn get(&self, key: Key, key_at: impl Fn(u32) -> Key) -> Option<u32> {
        self.find(key, key_at).map(|i| self.entries[i].at)
    }

    /// [`SlotIndex::get`] of `key`, whose [`SlotIndex::tag`] is `tag`.
    #[inline]
    pub(super) fn get_tagged(
        &self,
        key: Key,
        tag: u32,
        key_at: impl Fn(u32) -> Key,
    ) -> Option<u32> {
        self.find_tagged(key, tag, key_at)
            .map(|i| self.entries[i].at)
    }

    /// Files `key` (which must not be filed) at slot `at`.
    #[cfg(test)]
    pub(super) fn insert(&mut self, key: Key, at: u32) {
        self.insert_tagged(self.tag(key), at);
    }

    /// Files the key whose [`SlotIndex::tag`] is `tag` (which must not be filed) at slot
    /// `at`.
    #[inline]
    pub(super) fn insert_tagged(&mut self, tag: u32, at: u32) {
        self.reserve(1);
        self.put(Entry { at, tag });
        self.len += 1;
    }

    fn put(&mut self, entry: Entry) {
        let mask = self.mask();
        let mut i = entry.tag as usize & mask;
        while self.entries[i].at != VACANT {
            i = (i + 1) & mask;
        }
        self.entries[i] = entry;
    }

    /// Makes room for `more` keys beyond those filed, so that filing them rehashes
    /// nothing (a bulk update can ask for its room once).
    pub(super) fn reserve(&mut self, more: usize) {
        let need = self.len.saturating_add(more);
        // At most three quarters full: a probe for a missing key (every import asks
        // one) then meets a vacant entry within a few cache lines.
        if need.saturating_mul(4) <= self.entries.len().saturating_mul(3) {
            return;
        }
        let mut size = self.entries.len().max(16);
        while need.saturating_mul(4) > size.saturating_mul(3) {
            size *= 2;
        }
        // Its pages mapped in one go, then filled in order (see `populate_spare`).
        let mut entries = Vec::with_capacity(size);
        crate::sys::memory::populate_spare(&mut entries, size);
        entries.resize(size, EMPTY);
        let old = std::mem::replace(&mut self.entries, entries);
        for e in old.into_iter().filter(|e| e.at != VACANT) {
            self.put(e);
        }
    }

    /// Takes `key` out; where its slot was.
    pub(super) fn remove(&mut self, key: Key, key_at: impl Fn(u32) -> Key) -> Option<u32> {
        let found = self.find(key, key_at)?;
        let at = self.entries[found].at;
        self.vacate(found);
        self.len -= 1;
        Some(at)
    }

    /// Empties entry `hole`, moving back the entries after it that probed past it
    /// (backward-shift deletion: no tombstones, so probes stay as short as at insert).
    fn vacate(&mut self, mut hole: usize) {
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let e = self.entries[j];
            if e.at == VACANT {
                break;
            }
            let home = e.tag as usize & mask;
            // `e` may fill the hole unless its home lies after the hole, up to `j`
            // (cyclically): then it was never past the hole.
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.entries[hole] = e;
                hole = j;
            }
        }
        self.entries[hole] = EMPTY;
    }

    /// `key`'s slot moved from `from` to `to`.
    pub(super) fn moved(&mut self, key: Key, from: u32, to: u32) {
        if self.len == 0 {
            return;
        }
        let tag = self.tag(key);
        let mask = self.mask();
        let mut i = tag as usize & mask;
        loop {
            let e = &mut self.entries[i];
            if e.at == VACANT {
                return;
            }
            if e.tag == tag && e.at == from {
                e.at = to;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// The longest run of entries a lookup walks (for the tests on chosen keys).
    #[cfg(test)]
    pub(super) fn longest_probe(&self) -> usize {
        let mask = self.mask();
        (0..self.entries.len())
            .filter(|&i| self.entries[i].at != VACANT)
            .map(|i| (i.wrapping_sub(self.entries[i].tag as usize) & mask) + 1)
            .max()
            .unwrap_or(0)
    }

    /// Bytes the entries take.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.entries.len() * std::mem::size_of::<Entry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Against a std map, through inserts, removes and moves of a dense list (as the
    /// memory table does them: the last slot takes a removed one's place).
    #[test]
    fn follows_a_dense_list_as_a_map_would() {
        let mut index = SlotIndex::new(KeyedState::new([3, 4]));
        let mut slots: Vec<Key> = Vec::new();
        let mut model: HashMap<Key, u32> = HashMap::new();
        let mut x: u64 = 0x1234_5678;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..60_000u64 {
            let r = next();
            // Few creators, ids from a small range: inserts meet present keys too.
            let key = ((r % 3) as u32 + 1, (r >> 8) % 5000);
            if r % 5 < 3 {
                if index.get(key, |at| slots[at as usize]).is_none() {
                    index.insert(key, slots.len() as u32);
                    model.insert(key, slots.len() as u32);
                    slots.push(key);
                }
            } else if let Some(at) = index.remove(key, |at| slots[at as usize]) {
                assert_eq!(model.remove(&key), Some(at));
                let last = slots.len() as u32 - 1;
                slots.swap_remove(at as usize);
                if at != last {
                    let moved = slots[at as usize];
                    index.moved(moved, last, at);
                    model.insert(moved, at);
                }
            } else {
                assert!(!model.contains_key(&key));
            }
            if round % 10_000 == 0 {
                for (k, &at) in &model {
                    assert_eq!(index.get(*k, |a| slots[a as usize]), Some(at));
                }
            }
        }
        assert_eq!(index.len, model.len());
        for (k, &at) in &model {
            assert_eq!(index.get(*k, |a| slots[a as usize]), Some(at));
        }
    }

    /// Ids a peer picks to collide in the low bits (the bucket of an unkeyed or
    /// identity hash) spread like any others under the key, and a million states
    /// take 16 MB of index.
    #[test]
    fn chosen_ids_do_not_pile_up() {
        let mut index = SlotIndex::new(KeyedState::new([0xfeed, 0xbeef]));
        let keys: Vec<Key> = (0..1_000_000u64).map(|i| (7, i << 21)).collect();
        for (at, &k) in keys.iter().enumerate() {
            index.insert(k, at as u32);
        }
        assert!(
            index.longest_probe() < 200,
            "probe of {}",
            index.longest_probe()
        );
        assert!(index.bytes() <= 16 << 20, "{} bytes", index.bytes());
        for (at, &k) in keys.iter().enumerate().step_by(997) {
            assert_eq!(index.get(k, |a| keys[a as usize]), Some(at as u32));
        }
        // Reserved room is not rehashed again.
        let mut index = SlotIndex::new(KeyedState::new([1, 1]));
        index.reserve(1000);
        let room = index.entries.len();
        for at in 0..1000u32 {
            index.insert((1, u64::from(at)), at);
        }
        assert_eq!(index.entries.len(), room);
    }
}
