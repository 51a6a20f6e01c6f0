//! The engine's side of anti-entropy digests (`session/digest.rs`): per creator, the
//! bucket sums of the states we hold (each state's id and version, [`state_version`]),
//! and the states of each bucket, kept up to date as the cache changes, so that a
//! digest costs a copy of the sums and a bucket's list costs its length, not a walk
//! over the table.
//!
//! A state counts as held unless it is deleted (its DEL_C still queued: the peers are
//! about to drop it, and so is the creator's digest), delayed (a new local state not
//! announced yet: no peer has it, and we could not announce it on request) or no-sync
//! (never sent again; FreeBSD marks a state so just before it goes). Filtered states
//! count: the peers hold the copies they had before the filter came (muted ones), and
//! a peer's state we keep out of our table is still its creator's. They count at the
//! version last synced, as their updates stop both ways: our own muted state's version
//! is frozen while muted (recomputed when unmuted, and announced again), a filtered
//! copy of a peer's state takes the version of each update it is sent and does not
//! merge (`Cache::adopt_version`). An update still queued when the filter comes is
//! sent before the state is muted (`Engine::set_filter`), so the version frozen is the
//! peers'. Where a peer's copy is still not that version (the last update lost on a
//! plain pfsync link) or it has none (a state loaded muted after a restart, never
//! sent; a peer that joined after the filter came), it asks for the state (NEED), which
//! we never send: the state is then left out of our digests for good
//! ([`Filtered::MutedUnlisted`]), so that the peers forget their copies after one more
//! round instead of asking every round while the state lives (the
//! `..._not_asked_for_...` tests in `digest_tests.rs`). Its delete still goes.
//!
//! Cost per counted state: 4 bytes in its bucket's slot list, plus the position in
//! that list (`Entry::digest_pos`) and the version counted (`Entry::version`, 4 bytes)
//! kept in the cache entry. Per creator holding states: one sum and one list header per
//! bucket. Adding or removing a state is an xor into its bucket's sum and a push or a
//! swap-remove on its bucket's list; an update that changes the version is two xors
//! (the old contribution out, the new in): O(1) each.
//!
//! **The version** ([`state_version`]) is a hash of what two copies of a state agree on
//! once pfsync has synced them: what an UPD_C carries and the merge (`merge.rs`) takes
//! over, both peers' `seqlo`, `seqhi`, `max_win`, `wscale` and TCP state or level, and
//! the timeout class. Not the age or expiry (they tick), nor packets and bytes (UPD_C
//! does not carry them), nor the state flags (UPD_C carries none, OpenBSD's field is
//! sent 0, and the merge keeps ours: a difference there could never be repaired and
//! would be asked for at every round), nor what never changes after the INS (keys,
//! rules, `seqdiff`, `mss`, scrub). Unkeyed and fixed, so every node computes the same
//! for the same copy.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::cache::Key;
use super::filter::Filtered;
use super::hash::KeyedState;
use super::{Engine, Queue};
use crate::session::{bucket_of, id_hash, sum, BucketSum, Listed, StateIndex};
use crate::state::{Peer, PeerState, State};

/// The version of a state for the digests: a hash of what its copies agree on once
/// synced (see the module documentation).
pub fn state_version(state: &State) -> u32 {
    fn seqs(p: &Peer) -> u64 {
        u64::from(p.seqlo) | u64::from(p.seqhi) << 32
    }
    fn window(p: &Peer) -> u64 {
        let level = match p.state {
            PeerState::Tcp(s) => s.number(),
            PeerState::Level(l) => l.get(),
        };
        u64::from(p.max_win) | u64::from(p.wscale) << 16 | u64::from(level) << 24
    }
    let rest = window(&state.src) | window(&state.dst) << 32;
    let mut h = id_hash(u64::from(state.timeout as u8));
    for word in [seqs(&state.src), seqs(&state.dst), rest] {
        h = id_hash(h ^ word);
    }
    (h ^ (h >> 32)) as u32
}

/// A state received from a peer less than this ago is never forgotten on a creator's
/// list: its announcement may have overtaken the list (the session layer applies the
/// same rule, `forget_min_age`).
pub const FORGET_MIN_AGE: Duration = Duration::from_secs(1);

/// No position: the entry is not counted.
pub(super) const UNCOUNTED: u32 = u32::MAX;

/// One creator's sums and bucket lists.
#[derive(Debug)]
struct CreatorSums {
    sums: Box<[BucketSum]>,
    /// The cache slots of the counted states, per bucket.
    slots: Box<[Vec<u32>]>,
    count: u32,
}

/// Sums and bucket lists of every creator we hold counted states of.
#[derive(Debug)]
pub(super) struct Digests {
    buckets: u16,
    creators: HashMap<u32, CreatorSums, KeyedState>,
}

impl Digests {
    pub(super) fn new(buckets: u16, hasher: KeyedState) -> Digests {
        Digests {
            buckets: buckets.max(1),
            creators: HashMap::with_hasher(hasher),
        }
    }

    pub(super) fn buckets(&self) -> u16 {
        self.buckets
    }

    /// Counts the state `key` at `slot`, at `version`; returns its position in its
    /// bucket's list.
    pub(super) fn add(&mut self, key: Key, version: u32, slot: u32) -> u32 {
        let buckets = usize::from(self.buckets);
        let creator = self.creators.entry(key.0).or_insert_with(|| CreatorSums {
            sums: vec![BucketSum::default(); buckets].into_boxed_slice(),
            slots: (0..buckets).map(|_| Vec::new()).collect(),
            count: 0,
        });
        // `bucket_of` and `BucketSum::add` of one id, its hash made once and, for a
        // power of two buckets (the sessions' 256), no division: every state
        // imported comes through here.
        let hash = id_hash(key.1);
        let bucket = bucket_of_hash(hash, self.buckets);
        let sum = &mut creator.sums[bucket];
        sum.xor ^= id_hash(hash ^ u64::from(version));
        sum.count = sum.count.wrapping_add(1);
        let list = &mut creator.slots[bucket];
        list.push(slot);
        creator.count += 1;
        (list.len() - 1) as u32
    }

    /// A counted state went from version `old` to `new`.
    pub(super) fn change(&mut self, key: Key, old: u32, new: u32) {
        if let Some(creator) = self.creators.get_mut(&key.0) {
            let bucket = usize::from(bucket_of(key.1, self.buckets));
            creator.sums[bucket].change(key.1, old, new);
        }
    }

    /// Stops counting the state `key`, counted at `version`, at `pos` of its bucket's
    /// list. Returns the slot that moved into `pos`, whose entry must take `pos` as its
    /// position.
    pub(super) fn remove(&mut self, key: Key, version: u32, pos: u32) -> Option<u32> {
        let creator = self.creators.get_mut(&key.0)?;
        let bucket = usize::from(bucket_of(key.1, self.buckets));
        creator.sums[bucket].remove(key.1, version);
        let list = &mut creator.slots[bucket];
        let pos = pos as usize;
        list.swap_remove(pos);
        let moved = list.get(pos).copied();
        if list.capacity() > 16 && list.len() * 4 < list.capacity() {
            list.shrink_to(list.len() * 2);
        }
        creator.count -= 1;
        if creator.count == 0 {
            self.creators.remove(&key.0);
        }
        moved
    }

    /// The sums of a creator's counted states (zeros if we hold none).
    pub(super) fn sums(&self, creator: u32) -> Vec<BucketSum> {
        match self.creators.get(&creator) {
            Some(c) => c.sums.to_vec(),
            None => vec![BucketSum::default(); usize::from(self.buckets)],
        }
    }

    /// The slots of a creator's counted states in `bucket`.
    pub(super) fn slots(&self, creator: u32, bucket: u16) -> &[u32] {
        self.creators
            .get(&creator)
            .and_then(|c| c.slots.get(usize::from(bucket)))
            .map_or(&[], |list| &list[..])
    }

    /// Creators we hold counted states of.
    #[cfg(test)]
    pub(super) fn creator_count(&self) -> usize {
        self.creators.len()
    }
}

/// [`bucket_of`] of the id whose [`id_hash`] is `hash`.
#[inline]
fn bucket_of_hash(hash: u64, buckets: u16) -> usize {
    let buckets = u64::from(buckets.max(1));
    let bucket = if buckets.is_power_of_two() {
        hash & (buckets - 1)
    } else {
        hash % buckets
    };
    bucket as usize
}

impl Engine {
    /// Keeps digest sums of `buckets` buckets (the session layer's
    /// `Config::digest_buckets`) from now on: one walk over the cache now, O(1) per
    /// change afterwards. Until it is called nothing is kept (kernel-only clusters pay
    /// nothing) and [`StateIndex`] answers by walking the cache.
    pub fn enable_digests(&mut self, buckets: u16) {
        self.cache.enable_digests(buckets);
    }

    /// A creator's list (IDS) no longer has these ids: drops our copies, each from the
    /// table too (`TableOp::Delete`). Never states of our own creator id (only the table
    /// ends those), states received less than [`FORGET_MIN_AGE`] ago (their
    /// announcement may have overtaken the list), or states we deleted whose DEL_C is
    /// still queued.
    pub fn forget_states(&mut self, now: Instant, creator: u32, ids: &[u64]) {
        if creator == self.config.creatorid {
            return;
        }
        for &id in ids {
            let Some(slot) = self.cache.find((creator, id)) else {
                continue;
            };
            let e = self.cache.get(slot);
            let young = self
                .cache
                .peer_updated(slot)
                .is_some_and(|at| now.saturating_duration_since(at) < FORGET_MIN_AGE);
            if young || e.deleted {
                continue;
            }
            // Like a DEL from the creator: a late copy of it is refused for a while.
            self.tombstones.bury((creator, id), now);
            let entry = self.cache.remove(slot);
            self.stats.digest_forgotten += 1;
            if entry.filtered == Some(Filtered::Unimported) {
                // Never in the table.
                continue;
            }
            self.push_delete_op(creator, id);
        }
    }

    /// A peer lacks these states of ours: sends each we hold as a full update (UPD),
    /// at once. States we do not announce (deleted, no-sync, filtered, not due yet) are
    /// skipped, as their update requests are; a muted one is also listed no more
    /// ([`Filtered::MutedUnlisted`], see the module documentation).
    pub fn announce_states(&mut self, now: Instant, ids: &[u64]) {
        let creator = self.config.creatorid;
        let mut announced = 0;
        for &id in ids {
            let Some(slot) = self.cache.find((creator, id)) else {
                continue;
            };
            let e = self.cache.get(slot);
            if e.filtered == Some(Filtered::Muted) && !e.deleted && !e.nosync {
                // Its frozen version is not the asker's, and never will be: listed no
                // more, so that the peers forget it rather than ask every round.
                self.cache
                    .mark(slot, |e| e.filtered = Some(Filtered::MutedUnlisted));
                self.stats.digest_unlisted += 1;
                continue;
            }
            if e.deleted || e.nosync || e.filtered.is_some() || e.delayed {
                continue;
            }
            if e.queue != Some(Queue::Ins) {
                // A queued INS carries the full state already.
                self.enqueue(now, slot, Queue::Upd);
            }
            announced += 1;
        }
        if announced > 0 {
            self.stats.digest_announced += announced;
            self.flush_now = true;
        }
        self.end_input(now);
    }

    /// Ids and versions of a creator's counted states, by walking the cache (no sums
    /// kept, or kept with another bucket count).
    fn counted_ids(&self, creator: u32) -> impl Iterator<Item = Listed> + '_ {
        let any = self.cache.creator_count(creator) > 0;
        self.cache
            .entries()
            .take_while(move |_| any)
            .filter(move |e| {
                e.key().0 == creator
                    && !e.deleted
                    && !e.delayed
                    && !e.nosync
                    && e.filtered != Some(Filtered::MutedUnlisted)
            })
            .map(|e| Listed {
                id: e.key().1,
                version: e.version(),
            })
    }
}

impl StateIndex for Engine {
    fn digest(&self, creator: u32, buckets: u16) -> Vec<BucketSum> {
        match self.cache.digests() {
            Some(d) if d.buckets() == buckets => d.sums(creator),
            _ => sum(
                self.counted_ids(creator).map(|l| (l.id, l.version)),
                buckets,
            ),
        }
    }

    fn ids_in_bucket(&self, creator: u32, buckets: u16, bucket: u16) -> Vec<Listed> {
        match self.cache.digests() {
            Some(d) if d.buckets() == buckets => d
                .slots(creator, bucket)
                .iter()
                .map(|&slot| {
                    let e = self.cache.get(slot);
                    Listed {
                        id: e.key().1,
                        version: e.version(),
                    }
                })
                .collect(),
            _ => self
                .counted_ids(creator)
                .filter(|l| bucket_of(l.id, buckets) == bucket)
                .collect(),
        }
    }

    fn received_at(&self, creator: u32, id: u64) -> Option<Instant> {
        let slot = self.cache.find((creator, id))?;
        self.cache.peer_updated(slot)
    }
}
