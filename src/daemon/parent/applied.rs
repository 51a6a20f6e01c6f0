//! When the engine's operations last wrote each recently synced state into the table,
//! for `ctl get --json` ("applied_us_ago"): how long a peer's change took to arrive can
//! be told from the table's side, whatever the delay of the request that asks (issue 14
//! point 5: a bench that polls the table measures its own polling otherwise).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use crate::engine::KeyedState;
use crate::table::Key;

/// States remembered: the most recent writes, some 40 ms of a 100 000 changes/s churn
/// and everything of a quieter one (about 2 MB).
const REMEMBERED: usize = 1 << 16;

/// The recent writes, bounded.
#[derive(Debug)]
pub(super) struct RecentlyApplied {
    at: HashMap<Key, Instant, KeyedState>,
    order: VecDeque<(Key, Instant)>,
}

impl RecentlyApplied {
    /// Nothing remembered; `hasher` keys the map (peers choose their states' ids).
    pub(super) fn new(hasher: KeyedState) -> RecentlyApplied {
        RecentlyApplied {
            at: HashMap::with_hasher(hasher),
            order: VecDeque::new(),
        }
    }

    /// The engine's operation wrote `key` at `when`.
    pub(super) fn wrote(&mut self, key: Key, when: Instant) {
        if self.order.len() >= REMEMBERED {
            if let Some((old, old_when)) = self.order.pop_front() {
                if self.at.get(&old) == Some(&old_when) {
                    self.at.remove(&old);
                }
            }
        }
        self.at.insert(key, when);
        self.order.push_back((key, when));
    }

    /// When the engine last wrote `key`, if that is recent enough to be remembered.
    pub(super) fn when(&self, key: Key) -> Option<Instant> {
        self.at.get(&key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_latest_write_is_kept_and_the_oldest_forgotten() {
        let t0 = Instant::now();
        let mut r = RecentlyApplied::new(KeyedState::new([1, 2]));
        r.wrote((1, 1), t0);
        r.wrote((1, 1), t0 + Duration::from_millis(5));
        assert_eq!(r.when((1, 1)), Some(t0 + Duration::from_millis(5)));
        for id in 2..REMEMBERED as u64 + 2 {
            r.wrote((1, id), t0);
        }
        // The two writes of (1, 1) left the window; the map followed.
        assert_eq!(r.when((1, 1)), None);
        assert_eq!(r.when((1, REMEMBERED as u64 + 1)), Some(t0));
        assert!(r.at.len() <= REMEMBERED && r.order.len() <= REMEMBERED);
    }
}
