//! Recently deleted states, so that a stale copy does not bring them back.
//!
//! Difference from the kernels, which keep no record of a deleted state: a full update
//! or insert for a state deleted a moment ago is almost always a copy that was already
//! on its way, overtaken by the DEL_C (a reordered packet, a duplicate, a bulk update
//! another node was sending when the delete happened, multicast to everyone). Imported,
//! it would linger at that node until pf expires it, and a node could even import its
//! own deleted state back. For [`Config::tombstone_ttl`](super::Config::tombstone_ttl)
//! after a delete (local, or a peer's DEL/DEL_C, even for a state we never had), such
//! imports are refused and counted in `Stats::tombstoned`. A zero TTL gives the kernels'
//! behaviour. The record is bounded (oldest dropped first), so a flood of deletes costs
//! a fixed amount of memory.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::cache::Key;
use super::hash::KeyedState;

#[derive(Debug)]
pub(super) struct Tombstones {
    until: HashMap<Key, Instant, KeyedState>,
    order: VecDeque<(Key, Instant)>,
    ttl: Duration,
    cap: usize,
}

impl Tombstones {
    pub(super) fn new(ttl: Duration, cap: usize, hasher: KeyedState) -> Tombstones {
        Tombstones {
            until: HashMap::with_hasher(hasher),
            order: VecDeque::new(),
            ttl,
            cap,
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(key, until)) = self.order.front() {
            if until > now && self.order.len() <= self.cap {
                break;
            }
            self.order.pop_front();
            if self.until.get(&key) == Some(&until) {
                self.until.remove(&key);
            }
        }
    }

    /// Records a delete.
    pub(super) fn bury(&mut self, key: Key, now: Instant) {
        if self.ttl.is_zero() || self.cap == 0 {
            return;
        }
        let until = now + self.ttl;
        self.until.insert(key, until);
        self.order.push_back((key, until));
        self.expire(now);
    }

    /// Forgets a delete (the local table has the state again).
    pub(super) fn exhume(&mut self, key: Key) {
        if !self.until.is_empty() {
            self.until.remove(&key);
        }
    }

    /// True when the state was deleted less than the TTL ago.
    pub(super) fn contains(&mut self, key: Key, now: Instant) -> bool {
        if self.until.is_empty() {
            return false;
        }
        self.expire(now);
        self.until.get(&key).is_some_and(|&t| t > now)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.until.len()
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn deletes_are_remembered_for_the_ttl_and_bounded() {
        let t0 = Instant::now();
        let mut t = Tombstones::new(Duration::from_secs(5), 3, KeyedState::new([0, 0]));
        t.bury((1, 1), t0);
        assert!(t.contains((1, 1), t0 + Duration::from_secs(4)));
        assert!(!t.contains((1, 1), t0 + Duration::from_secs(5)));
        for id in 0..10 {
            t.bury((2, id), t0);
        }
        assert_eq!(t.len(), 3);
        assert!(t.contains((2, 9), t0) && !t.contains((2, 0), t0));
        t.exhume((2, 9));
        assert!(!t.contains((2, 9), t0));
        let mut off = Tombstones::new(Duration::ZERO, 3, KeyedState::new([0, 0]));
        off.bury((1, 1), t0);
        assert!(!off.contains((1, 1), t0));
    }
}
