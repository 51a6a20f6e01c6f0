//! The cache index: (creatorid, id) → slot, in one flat array.
//!
//! Open addressing with linear probing. A bucket is 8 bytes: the low 32 bits of the
//! key's hash and the slot number plus one (0 is an empty bucket). The key itself is not
//! stored: a bucket whose hash matches is confirmed against the entry in the slab, which
//! a lookup reads next anyway. Compared with a `HashMap<Key, u32>` (control bytes and
//! 24-byte buckets in two arrays), a lookup costs one cache miss in the index instead of
//! two, and the index 12–24 bytes per state instead of 28–57, which is what makes a
//! table of a million states fast.
//!
//! Removal shifts the following buckets of the run back (no tombstones), so probe runs
//! stay as short as the load allows; the load is kept at most 2/3. (At 4/5, a lookup
//! of a key not held, which every import makes, walked some six buckets on average
//! over a growth cycle, two and a half at 2/3; a million states take the same 2^21
//! buckets either way.) The hash is keyed
//! ([`KeyedState`]), so a peer cannot choose ids that pile up in one run.

use core::cell::Cell;
use core::hash::BuildHasher;

use super::cache::Key;
use super::hash::KeyedState;

#[derive(Debug)]
pub(super) struct Index {
    buckets: Vec<u64>,
    len: usize,
    hasher: KeyedState,
    /// Where the last lookup that failed ended (see [`Vacant`]); forgotten at every
    /// change of the buckets.
    vacant: Cell<Option<Vacant>>,
}

/// The empty bucket a failed lookup of `key` stopped at: where an insert of `key` goes
/// while no bucket changed since (the insert's own walk from the key's home bucket
/// would stop there too). A bulk looks each new key up, then inserts it: the insert
/// then costs no second walk, in a large index no second cache miss.
#[derive(Debug, Clone, Copy)]
struct Vacant {
    key: Key,
    hash: u32,
    at: usize,
}

#[inline]
fn bucket(hash: u32, slot: u32) -> u64 {
    (u64::from(hash) << 32) | (u64::from(slot) + 1)
}

#[inline]
fn hash_of(b: u64) -> u32 {
    (b >> 32) as u32
}

#[inline]
fn slot_of(b: u64) -> u32 {
    (b as u32).wrapping_sub(1)
}

impl Index {
    pub(super) fn new(hasher: KeyedState) -> Index {
        Index {
            buckets: Vec::new(),
            len: 0,
            hasher,
            vacant: Cell::new(None),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn hash(&self, key: Key) -> u32 {
        self.hasher.hash_one(key) as u32
    }

    #[inline]
    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// Where `key` is: its bucket's position and slot. `key_of` gives the key of a slot.
    #[inline]
    fn position(&self, key: Key, key_of: impl Fn(u32) -> Key) -> Option<(usize, u32)> {
        if self.len == 0 {
            return None;
        }
        let h = self.hash(key);
        let mask = self.mask();
        let mut i = h as usize & mask;
        loop {
            let b = self.buckets[i];
            if b == 0 {
                self.vacant.set(Some(Vacant {
                    key,
                    hash: h,
                    at: i,
                }));
                return None;
            }
            if hash_of(b) == h && key_of(slot_of(b)) == key {
                return Some((i, slot_of(b)));
            }
            i = (i + 1) & mask;
        }
    }

    /// Starts loading the bucket where a lookup of `key` starts into the processor's
    /// caches, without waiting for it (see `prefetch`).
    #[inline]
    pub(super) fn prefetch_home(&self, key: Key) {
        if let Some(b) = self.buckets.get(self.hash(key) as usize & self.mask()) {
            crate::sys::memory::prefetch(b);
        }
    }

    /// The slot of `key`.
    #[inline]
    pub(super) fn find(&self, key: Key, key_of: impl Fn(u32) -> Key) -> Option<u32> {
        self.position(key, key_of).map(|(_, slot)| slot)
    }

    fn place(&mut self, b: u64) {
        let mask = self.mask();
        let mut i = hash_of(b) as usize & mask;
        while self.buckets[i] != 0 {
            i = (i + 1) & mask;
        }
        self.buckets[i] = b;
    }

    /// Whether `len` keys fit `cap` buckets: at most 2/3 full (see the module
    /// documentation).
    #[inline]
    fn fits(len: usize, cap: usize) -> bool {
        len.saturating_mul(3) <= cap.saturating_mul(2)
    }

    /// Makes room for `more` keys beyond those held, so that adding them rehashes
    /// nothing: a bulk update of known size grows the index once, to its final size,
    /// instead of at each doubling on the way. The caller bounds `more` (the cache's
    /// limit); slots are 32-bit in any case. For the cache's size hint
    /// (`Cache::reserve_states`, which a bulk's announced size calls).
    pub(super) fn reserve(&mut self, more: usize) {
        let need = self.len.saturating_add(more).min(u32::MAX as usize);
        if Self::fits(need, self.buckets.len()) {
            return;
        }
        let mut cap = self.buckets.len().max(16);
        while !Self::fits(need, cap) {
            cap *= 2;
        }
        self.rehash(cap);
    }

    fn grow(&mut self) {
        self.rehash((self.buckets.len() * 2).max(16));
    }

    /// Moves every key into `cap` buckets (a power of two).
    fn rehash(&mut self, cap: usize) {
        self.vacant.set(None);
        // Its pages mapped in one call, not faulted in one by one as the rehash writes
        // them (see `populate_spare`): a million states' index takes 4096 pages.
        let mut buckets = Vec::with_capacity(cap);
        crate::sys::memory::populate_spare(&mut buckets, cap);
        buckets.resize(cap, 0);
        // As `place` does, on the new buckets held here: the walk reads no field of
        // the index at each step.
        let mask = cap - 1;
        for &b in self.buckets.iter().filter(|&&b| b != 0) {
            let mut i = hash_of(b) as usize & mask;
            while buckets[i] != 0 {
                i = (i + 1) & mask;
            }
            buckets[i] = b;
        }
        self.buckets = buckets;
    }

    /// Adds `key` at `slot`. The key must not be in the index.
    pub(super) fn insert(&mut self, key: Key, slot: u32) {
        debug_assert!(slot < u32::MAX);
        if !Self::fits(self.len + 1, self.buckets.len()) {
            self.grow();
        }
        match self.vacant.take() {
            Some(vacant) if vacant.key == key => {
                debug_assert_eq!(self.buckets[vacant.at], 0);
                self.buckets[vacant.at] = bucket(vacant.hash, slot);
            }
            _ => self.place(bucket(self.hash(key), slot)),
        }
        self.len += 1;
    }

    /// Removes `key`; returns its slot. `key_of` must still know the slot's key.
    pub(super) fn remove(&mut self, key: Key, key_of: impl Fn(u32) -> Key) -> Option<u32> {
        let (mut hole, slot) = self.position(key, key_of)?;
        self.vacant.set(None);
        let mask = self.mask();
        // Shift the rest of the run back over the hole, each bucket as far as its home
        // position allows.
        let mut i = hole;
        loop {
            i = (i + 1) & mask;
            let b = self.buckets[i];
            if b == 0 {
                break;
            }
            let home = hash_of(b) as usize & mask;
            // The bucket may move to the hole if the hole lies between its home and
            // where it is now (cyclically).
            if (i.wrapping_sub(home) & mask) >= (i.wrapping_sub(hole) & mask) {
                self.buckets[hole] = b;
                hole = i;
            }
        }
        self.buckets[hole] = 0;
        self.len -= 1;
        Some(slot)
    }

    /// Bytes the index holds.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> usize {
        self.buckets.capacity() * 8
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::collections::HashMap;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn matches_a_hash_map_under_random_inserts_and_removes() {
        // The slab is a vector of keys; slots are reused as the cache reuses them.
        let mut idx = Index::new(KeyedState::new([3, 4]));
        let mut slab: Vec<Option<Key>> = Vec::new();
        let mut free: Vec<u32> = Vec::new();
        let mut model: HashMap<Key, u32> = HashMap::new();
        let mut rng = Rng(99);
        for round in 0..200_000u64 {
            let r = rng.next();
            // Few creators, clustered ids: the worst case for runs.
            let key = ((r % 3) as u32, (r >> 8) % 5000);
            let key_of = |slab: &Vec<Option<Key>>, s: u32| slab[s as usize].expect("live");
            match model.get(&key).copied() {
                Some(slot) if round % 3 != 0 => {
                    assert_eq!(idx.remove(key, |s| key_of(&slab, s)), Some(slot));
                    slab[slot as usize] = None;
                    free.push(slot);
                    model.remove(&key);
                }
                Some(slot) => assert_eq!(idx.find(key, |s| key_of(&slab, s)), Some(slot)),
                None => {
                    assert_eq!(idx.find(key, |s| key_of(&slab, s)), None);
                    let slot = free.pop().unwrap_or_else(|| {
                        slab.push(None);
                        (slab.len() - 1) as u32
                    });
                    slab[slot as usize] = Some(key);
                    idx.insert(key, slot);
                    model.insert(key, slot);
                }
            }
            assert_eq!(idx.len(), model.len());
        }
        for (key, slot) in &model {
            assert_eq!(idx.find(*key, |s| slab[s as usize].unwrap()), Some(*slot));
        }
        assert!(idx.bytes() <= 8 * 16384);
    }

    /// Room reserved ahead: the keys added after fit without a rehash (the index is
    /// sized once), keys held before stay found, and a reserve that fits already
    /// changes nothing.
    #[test]
    fn a_reserve_sizes_the_index_once_for_the_keys_to_come() {
        let mut idx = Index::new(KeyedState::new([1, 2]));
        let mut slab: Vec<Key> = Vec::new();
        let add = |idx: &mut Index, slab: &mut Vec<Key>, key: Key| {
            assert_eq!(idx.find(key, |s| slab[s as usize]), None);
            slab.push(key);
            idx.insert(key, (slab.len() - 1) as u32);
        };
        for id in 0..1000 {
            add(&mut idx, &mut slab, (3, id));
        }
        idx.reserve(99_000);
        let bytes = idx.bytes();
        assert_eq!(
            bytes,
            8 << 18,
            "100 000 keys at most 2/3 full: 2^18 buckets"
        );
        idx.reserve(10);
        assert_eq!(idx.bytes(), bytes);
        for id in 1000..100_000 {
            add(&mut idx, &mut slab, (3 + (id % 2) as u32, id));
        }
        assert_eq!(idx.bytes(), bytes, "no growth after the reserve");
        assert_eq!(idx.len(), 100_000);
        for (slot, key) in slab.iter().enumerate() {
            assert_eq!(idx.find(*key, |s| slab[s as usize]), Some(slot as u32));
        }
        // One more key than reserved grows it as usual.
        let mut more = 100_000;
        while Index::fits(idx.len() + 1, idx.buckets.len()) {
            add(&mut idx, &mut slab, (9, more));
            more += 1;
        }
        add(&mut idx, &mut slab, (9, more));
        assert_eq!(idx.bytes(), 2 * bytes);
    }

    /// An insert goes where the last failed lookup stopped only while that is still
    /// true: lookups of other keys, removes (which shift runs back) and growth in
    /// between send it the long way, and every key stays found.
    #[test]
    fn an_insert_after_a_failed_lookup_is_found_whatever_came_between() {
        let mut idx = Index::new(KeyedState::new([5, 6]));
        let mut slab: Vec<Option<Key>> = Vec::new();
        let mut model: HashMap<Key, u32> = HashMap::new();
        let mut rng = Rng(7);
        for _ in 0..100_000 {
            let r = rng.next();
            let key = ((r % 2) as u32, (r >> 8) % 3000);
            if model.contains_key(&key) {
                continue;
            }
            assert_eq!(idx.find(key, |s| slab[s as usize].unwrap()), None);
            match (r >> 40) % 4 {
                // Another key looked up in between.
                0 => {
                    let other = ((r >> 2) as u32 % 2, (r >> 20) % 3000);
                    let found = idx.find(other, |s| slab[s as usize].unwrap());
                    assert_eq!(found, model.get(&other).copied());
                }
                // A key removed in between (its run shifts back).
                1 => {
                    if let Some(&gone) = model.keys().next() {
                        let slot = model.remove(&gone).unwrap();
                        let removed = idx.remove(gone, |s| slab[s as usize].unwrap());
                        assert_eq!(removed, Some(slot));
                        slab[slot as usize] = None;
                    }
                }
                _ => {}
            }
            slab.push(Some(key));
            let slot = (slab.len() - 1) as u32;
            idx.insert(key, slot);
            model.insert(key, slot);
        }
        assert_eq!(idx.len(), model.len());
        for (key, slot) in &model {
            assert_eq!(idx.find(*key, |s| slab[s as usize].unwrap()), Some(*slot));
        }
    }

    /// Room reserved up front (a bulk's announced size): the keys then added grow
    /// nothing, the keys held before stay where a lookup finds them, and a reserve
    /// for fewer than there is room for changes nothing.
    #[test]
    fn reserved_room_takes_its_keys_without_growing() {
        let mut idx = Index::new(KeyedState::new([5, 6]));
        let slab: Vec<Key> = (0..10_000u64).map(|i| ((i % 4) as u32, i * 977)).collect();
        for (slot, key) in slab.iter().enumerate().take(100) {
            idx.insert(*key, slot as u32);
        }
        idx.reserve(9_900);
        let reserved = idx.bytes();
        // 10 000 keys at most 2/3 full: 15 000 buckets, a power of two.
        assert_eq!(reserved, 8 * 16384);
        idx.reserve(5_000);
        assert_eq!(idx.bytes(), reserved, "room enough already");
        for (slot, key) in slab.iter().enumerate().skip(100) {
            assert_eq!(idx.find(*key, |s| slab[s as usize]), None);
            idx.insert(*key, slot as u32);
        }
        assert_eq!(idx.bytes(), reserved, "no growth past the reserve");
        for (slot, key) in slab.iter().enumerate() {
            assert_eq!(idx.find(*key, |s| slab[s as usize]), Some(slot as u32));
        }
        // Past the room (the power of two's 2/3), it grows as before.
        let more: Vec<Key> = (0..3_200u64).map(|i| (9, i)).collect();
        for (i, key) in more.iter().enumerate() {
            idx.insert(*key, 10_000 + i as u32);
        }
        assert_eq!(idx.len(), 13_200);
        assert_eq!(idx.bytes(), 2 * reserved);
    }
}
