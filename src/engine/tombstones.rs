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

/// Recent clears, so that a stale copy of a cleared state does not bring it back.
///
/// A clear names no states, so no single-state tombstone can be laid for it. What tells
/// a stale copy from a state created after the clear is its age: a state that is older
/// than the time since the clear existed before it, and was cleared. For the tombstone
/// TTL after a clear, such states of the cleared creator (any creator, after a local
/// `pfctl -F states`) on the cleared interface are refused. A state created after the
/// clear is taken as usual. Bounded like the tombstones.
#[derive(Debug)]
pub(super) struct ClearMarks {
    marks: VecDeque<ClearMark>,
    ttl: Duration,
}

#[derive(Debug, Clone, Copy)]
struct ClearMark {
    creatorid: Option<u32>,
    ifname: crate::wire::IfName,
    at: Instant,
}

/// Most clears remembered at once.
const MAX_CLEAR_MARKS: usize = 64;

impl ClearMarks {
    pub(super) fn new(ttl: Duration) -> ClearMarks {
        ClearMarks {
            marks: VecDeque::new(),
            ttl,
        }
    }

    /// Records a clear of `creatorid`'s states (every creator's if `None`) on `ifname`
    /// (every interface if empty).
    pub(super) fn mark(
        &mut self,
        creatorid: Option<u32>,
        ifname: crate::wire::IfName,
        at: Instant,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        if self.marks.len() == MAX_CLEAR_MARKS {
            self.marks.pop_front();
        }
        self.marks.push_back(ClearMark {
            creatorid,
            ifname,
            at,
        });
    }

    /// True when `state` is older than a clear that covered it, made less than the TTL
    /// ago: a copy from before the clear.
    pub(super) fn cleared(&mut self, state: &crate::state::State, now: Instant) -> bool {
        if self.marks.is_empty() {
            // The common case, asked once per state imported.
            return false;
        }
        while self
            .marks
            .front()
            .is_some_and(|m| now.saturating_duration_since(m.at) >= self.ttl)
        {
            self.marks.pop_front();
        }
        self.marks.iter().any(|m| {
            m.creatorid.is_none_or(|c| c == state.creatorid)
                && (m.ifname.is_empty() || m.ifname == state.ifname)
                // Ages are whole seconds: one second of slack for the rounding.
                && u64::from(state.age_secs) > now.saturating_duration_since(m.at).as_secs() + 1
        })
    }
}

#[cfg(test)]
mod clear_test {
    use super::*;
    use crate::state::State;
    use crate::wire::IfName;

    #[test]
    fn only_copies_older_than_the_clear_are_refused_for_the_ttl() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut m = ClearMarks::new(5 * s);
        m.mark(Some(7), IfName::EMPTY, t0);
        let old = State {
            creatorid: 7,
            age_secs: 60,
            ..State::default()
        };
        let new = State { age_secs: 1, ..old };
        let other = State {
            creatorid: 8,
            ..old
        };
        assert!(m.cleared(&old, t0 + s));
        assert!(!m.cleared(&new, t0 + 2 * s), "created after the clear");
        assert!(!m.cleared(&other, t0 + s), "another creator");
        assert!(!m.cleared(&old, t0 + 5 * s), "the TTL passed");
        let mut local = ClearMarks::new(5 * s);
        local.mark(None, IfName::new("em0").unwrap(), t0);
        let on_em0 = State {
            ifname: IfName::new("em0").unwrap(),
            ..other
        };
        assert!(local.cleared(&on_em0, t0 + s));
        assert!(!local.cleared(&other, t0 + s), "another interface");
    }
}
