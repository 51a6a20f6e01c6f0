//! Table operations that cross a local change on the way.
//!
//! In one process the engine's table operations were applied at once, before the
//! table was polled again, so a local change always came after them and on top of
//! them. Across the channel an operation can be decided by an engine that has not yet
//! seen a local change already sent to it: a merged copy of a state, based on the
//! version before the change, would overwrite the newer local one in the table, and
//! the table (which does not report the engine's own operations) and the engine (which
//! then hears of the local change) would disagree for good.
//!
//! So the parent numbers the local changes it sends; the engine says with each
//! operation how many it had taken when it decided it; and an operation on a state with
//! a newer local change, or any operation older than a local clear, has crossed one:
//! - an import or update is skipped: the local version stands, the engine is about to
//!   hear of it and send it, and a peer holding newer data answers that as stale with
//!   its own copy, which merges again — what the kernels do when traffic and a peer's
//!   update meet;
//! - a delete or clear is carried out (a peer's delete wins, as it would have in one
//!   process), and the engine is told of the states gone, so the local change it is
//!   about to hear cannot bring them back.

use std::collections::{HashMap, VecDeque};

use crate::engine::{KeyedState, LocalChange};
use crate::table::Key;

/// The local changes sent to the engine that it may not have taken yet. The engine
/// says how many it has taken with every operation and once per turn of its loop, so
/// what is remembered is what is in flight, a few milliseconds of changes.
#[derive(Debug)]
pub struct Crossings {
    /// Local changes sent so far.
    sent: u64,
    /// The number of the latest change sent about each state not yet known taken
    /// (keyed with a secret: peers choose the ids of their states).
    latest: HashMap<Key, u64, KeyedState>,
    /// The same, in the order sent, for forgetting.
    order: VecDeque<(u64, Key)>,
    /// The number of the latest local clear.
    last_clear: u64,
    /// Operations skipped because they crossed a local change.
    pub superseded: u64,
}

impl Crossings {
    /// Nothing in flight; `hasher` keys the map.
    pub fn new(hasher: KeyedState) -> Crossings {
        Crossings {
            sent: 0,
            latest: HashMap::with_hasher(hasher),
            order: VecDeque::new(),
            last_clear: 0,
            superseded: 0,
        }
    }

    /// Notes a local change as sent; its number is the count so far.
    pub fn sent(&mut self, change: &LocalChange) {
        self.sent += 1;
        let key = match change {
            LocalChange::Insert(s) | LocalChange::Update(s) => (s.creatorid, s.id),
            LocalChange::Delete { creatorid, id } => (*creatorid, *id),
            LocalChange::Clear { .. } => {
                self.last_clear = self.sent;
                return;
            }
        };
        self.latest.insert(key, self.sent);
        self.order.push_back((self.sent, key));
    }

    /// Local changes sent so far (what an engine that has taken all of them says).
    pub fn count(&self) -> u64 {
        self.sent
    }

    /// The engine has taken the first `seen` changes: forgets those.
    pub fn taken(&mut self, seen: u64) {
        while let Some(&(n, key)) = self.order.front() {
            if n > seen {
                break;
            }
            self.order.pop_front();
            if self.latest.get(&key) == Some(&n) {
                self.latest.remove(&key);
            }
        }
    }

    /// An operation on `key`, decided after `seen` local changes, crossed a newer one.
    pub fn crosses(&self, key: Key, seen: u64) -> bool {
        self.last_clear > seen || self.latest.get(&key).is_some_and(|&n| n > seen)
    }

    /// Whether a local change after the first `seen` is still in flight: when not, no
    /// operation decided after `seen` crosses one ([`Crossings::crosses`] is false for
    /// every key), so a group of them needs no look-up each.
    pub fn in_flight_after(&self, seen: u64) -> bool {
        // `order` is in the order sent, and holds every change `latest` names.
        self.last_clear > seen || self.order.back().is_some_and(|&(n, _)| n > seen)
    }

    /// The states with a local change newer than `seen` (for a clear that crossed).
    pub fn newer_than(&self, seen: u64) -> Vec<Key> {
        let mut keys: Vec<Key> = self
            .latest
            .iter()
            .filter(|&(_, &n)| n > seen)
            .map(|(k, _)| *k)
            .collect();
        keys.sort_unstable();
        keys
    }

    /// States remembered (for the tests: the memory stays bounded by what is in flight).
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;
    use crate::wire::IfName;

    fn update(creatorid: u32, id: u64) -> LocalChange {
        LocalChange::Update(State {
            creatorid,
            id,
            ..State::default()
        })
    }

    fn crossings() -> Crossings {
        Crossings::new(KeyedState::new([1, 2]))
    }

    #[test]
    fn an_operation_decided_before_a_change_crosses_it() {
        let mut c = crossings();
        c.sent(&update(1, 10)); // 1
        c.sent(&update(1, 11)); // 2
                                // Decided having taken none: both states crossed; others did not.
        assert!(c.crosses((1, 10), 0));
        assert!(c.crosses((1, 11), 1));
        assert!(!c.crosses((1, 11), 2));
        assert!(!c.crosses((1, 12), 0));
        // Taken: forgotten, and nothing crosses any more.
        c.taken(2);
        assert!(c.is_empty());
        assert!(!c.crosses((1, 10), 0));
    }

    #[test]
    fn a_state_changed_again_is_remembered_by_its_latest_change() {
        let mut c = crossings();
        c.sent(&update(1, 10)); // 1
        c.sent(&LocalChange::Delete {
            creatorid: 2,
            id: 5,
        }); // 2
        c.sent(&update(1, 10)); // 3
        c.taken(1);
        assert!(c.crosses((1, 10), 2), "change 3 not taken at 2");
        assert_eq!(c.newer_than(1), vec![(1, 10), (2, 5)]);
        c.taken(3);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn everything_decided_before_a_clear_crosses_it() {
        let mut c = crossings();
        c.sent(&update(1, 10));
        c.sent(&LocalChange::Clear {
            ifname: IfName::EMPTY,
        });
        c.taken(2);
        assert!(c.crosses((9, 9), 1));
        assert!(!c.crosses((9, 9), 2));
        assert_eq!(c.count(), 2);
    }

    /// `in_flight_after(seen)` is false only when no key crosses at `seen` (a frame of
    /// operations then skips the look-up each), and true when one does or a change
    /// after `seen` is still in flight; through sends, clears and takes in any order.
    #[test]
    fn nothing_crosses_when_nothing_is_in_flight_after() {
        let mut c = crossings();
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut next = move |below: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        };
        let mut taken = 0;
        let (mut quiet, mut busy) = (0, 0);
        for _ in 0..5000 {
            match next(10) {
                0 => c.sent(&LocalChange::Clear {
                    ifname: IfName::EMPTY,
                }),
                1..=5 => c.sent(&update(1, next(8))),
                _ => {
                    taken = (taken + next(3)).min(c.count());
                    c.taken(taken);
                }
            }
            for seen in taken..=c.count() {
                let crossing = (0..8).any(|id| c.crosses((1, id), seen));
                if c.in_flight_after(seen) {
                    busy += 1;
                    assert!(crossing || c.last_clear > seen, "nothing crosses at {seen}");
                } else {
                    quiet += 1;
                    assert!(!crossing, "a key crosses at {seen}");
                }
            }
        }
        assert!(quiet > 100 && busy > 100, "{quiet} quiet, {busy} busy");
    }
}
