//! When the engine's operations last wrote each recently synced state into the table,
//! for `ctl get --json` ("applied_us_ago"): how long a peer's change took to arrive can
//! be told from the table's side, whatever the delay of the request that asks (issue 14
//! point 5: a bench that polls the table measures its own polling otherwise).
//!
//! Written once per state the engine imports or updates, a million times in a bulk: a
//! keyed map insert and remove, a queue push and a clock read per state took a tenth of
//! the receiving parent's CPU. So the record is a direct-mapped array (the key's keyed
//! hash picks one entry, a later write that hashes there takes it over) holding the
//! write's turn of the parent's loop, and the clock is read once per turn, when the turn's
//! writes are done ([`RecentlyApplied::stamp`]): a time told is at or after the write,
//! late by at most one turn (a turn takes at most [`TURN_BUDGET`] bytes of frames, about
//! a millisecond), never early, so a latency computed from it is never flattered.
//!
//! [`TURN_BUDGET`]: crate::daemon::privsep::TURN_BUDGET

use std::hash::BuildHasher;
use std::time::Instant;

use crate::engine::KeyedState;
use crate::table::Key;

/// Entries: the most recent writes, some 40 ms of a 100 000 changes/s churn and nearly
/// everything of a quieter one (1.5 MB).
const REMEMBERED: usize = 1 << 16;

/// Turns whose time is kept: a write older than this many turns with writes is
/// forgotten.
const TURNS: usize = 1 << 12;

#[derive(Debug, Clone, Copy)]
struct Write {
    /// The state written; `(0, 0)` for none (a table refuses creator id 0).
    key: Key,
    /// The turn it was written in.
    turn: u64,
}

/// The recent writes, bounded.
#[derive(Debug)]
pub(super) struct RecentlyApplied {
    writes: Box<[Write]>,
    /// The time of turn `t` at `t % TURNS`, with `t`.
    stamps: Box<[(u64, Option<Instant>)]>,
    /// The turn being written.
    turn: u64,
    /// Whether the turn being written has writes (only those are stamped).
    written: bool,
    hasher: KeyedState,
}

impl RecentlyApplied {
    /// Nothing remembered; `hasher` keys the array (peers choose their states' ids).
    pub(super) fn new(hasher: KeyedState) -> RecentlyApplied {
        RecentlyApplied {
            writes: vec![
                Write {
                    key: (0, 0),
                    turn: 0
                };
                REMEMBERED
            ]
            .into_boxed_slice(),
            stamps: vec![(u64::MAX, None); TURNS].into_boxed_slice(),
            turn: 0,
            written: false,
            hasher,
        }
    }

    fn entry(&self, key: Key) -> usize {
        self.hasher.hash_one(key) as usize & (REMEMBERED - 1)
    }

    /// The engine's operation wrote `key` in this turn.
    pub(super) fn wrote(&mut self, key: Key) {
        let at = self.entry(key);
        self.writes[at] = Write {
            key,
            turn: self.turn,
        };
        self.written = true;
    }

    /// The turn's writes are done, at `now`.
    pub(super) fn stamp(&mut self, now: Instant) {
        if !self.written {
            return;
        }
        self.stamps[self.turn as usize % TURNS] = (self.turn, Some(now));
        self.turn += 1;
        self.written = false;
    }

    /// When the engine last wrote `key` (the end of that turn), if that is recent enough
    /// to be remembered.
    pub(super) fn when(&self, key: Key) -> Option<Instant> {
        let write = self.writes[self.entry(key)];
        if write.key != key || key == (0, 0) {
            return None;
        }
        match self.stamps[write.turn as usize % TURNS] {
            (turn, at) if turn == write.turn => at,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_latest_write_is_kept_and_the_oldest_forgotten() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut r = RecentlyApplied::new(KeyedState::new([1, 2]));
        r.wrote((1, 1));
        // Not told before its turn is stamped.
        assert_eq!(r.when((1, 1)), None);
        r.stamp(ms(1));
        assert_eq!(r.when((1, 1)), Some(ms(1)));
        // A turn without writes changes nothing.
        r.stamp(ms(2));
        r.wrote((1, 1));
        r.wrote((1, 2));
        r.stamp(ms(5));
        assert_eq!(r.when((1, 1)), Some(ms(5)));
        assert_eq!(r.when((1, 2)), Some(ms(5)));
        assert_eq!(r.when((1, 3)), None);
        assert_eq!(r.when((0, 0)), None);
        // Many later writes take over (1, 1)'s entry.
        for id in 2..16 * REMEMBERED as u64 {
            r.wrote((1, id));
        }
        r.stamp(ms(9));
        assert_eq!(r.when((1, 1)), None);
        assert_eq!(r.when((1, 16 * REMEMBERED as u64 - 1)), Some(ms(9)));
        // A write older than the turns kept is forgotten.
        r.wrote((2, 7));
        r.stamp(ms(10));
        let other = (1..)
            .map(|id| (3, id))
            .find(|&k| r.entry(k) != r.entry((2, 7)))
            .unwrap();
        for _ in 0..TURNS - 1 {
            r.wrote(other);
            r.stamp(ms(11));
        }
        assert_eq!(r.when((2, 7)), Some(ms(10)), "kept while its turn is");
        r.wrote(other);
        r.stamp(ms(12));
        assert_eq!(r.when((2, 7)), None);
        assert_eq!(r.when(other), Some(ms(12)));
    }
}
