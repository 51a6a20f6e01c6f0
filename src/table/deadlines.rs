//! The memory table's deadline index: one bucket of slot positions per table second.
//!
//! The ordered set of (deadline, key) it replaces cost a B-tree insert and remove per
//! state (a tenth of a second per million in a bulk) and some 40 bytes a state. Here a
//! state is 4 bytes in the bucket of its second, and an ordered map holds the seconds
//! only: a bulk's states fall into few of them. Each slot knows its place in its bucket
//! and each bucket entry its slot, so a state is filed and taken out in constant time
//! (the last entry of a bucket takes a removed one's place, as in the slot list), and
//! expiry stays exact to the second: the first bucket is the earliest second due.

use std::collections::BTreeMap;

/// The buckets; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    buckets: BTreeMap<i64, Vec<u32>>,
}

impl Deadlines {
    /// Files slot `at` under second `deadline`; returns its place in the bucket, which
    /// the slot keeps for [`Deadlines::remove`] and [`Deadlines::moved`].
    pub(super) fn insert(&mut self, deadline: i64, at: u32) -> u32 {
        let bucket = self.buckets.entry(deadline).or_default();
        bucket.push(at);
        // A bucket of four billion states would need 400 GB of slots first.
        (bucket.len() - 1) as u32
    }

    /// Takes out the entry at `place` under `deadline`. Returns the slot whose entry
    /// took that place: it must be told its new place.
    pub(super) fn remove(&mut self, deadline: i64, place: u32) -> Option<u32> {
        let bucket = self.buckets.get_mut(&deadline)?;
        let place = place as usize;
        if place >= bucket.len() {
            return None;
        }
        bucket.swap_remove(place);
        let moved = bucket.get(place).copied();
        if bucket.is_empty() {
            self.buckets.remove(&deadline);
        }
        moved
    }

    /// The slot filed at `place` under `deadline` is now at `at` in the slot list.
    pub(super) fn moved(&mut self, deadline: i64, place: u32, at: u32) {
        if let Some(entry) = self
            .buckets
            .get_mut(&deadline)
            .and_then(|b| b.get_mut(place as usize))
        {
            *entry = at;
        }
    }

    /// The earliest second any slot is filed under.
    pub(super) fn first(&self) -> Option<i64> {
        self.buckets.first_key_value().map(|(&d, _)| d)
    }

    /// A slot filed under the earliest second, and that second.
    pub(super) fn first_slot(&self) -> Option<(i64, u32)> {
        let (&d, bucket) = self.buckets.first_key_value()?;
        bucket.last().map(|&at| (d, at))
    }

    /// Forgets every slot.
    pub(super) fn clear(&mut self) {
        self.buckets.clear();
    }
}
