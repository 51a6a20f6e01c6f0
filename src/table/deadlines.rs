//! The memory table's deadline index: one bucket of slot positions per table second, on
//! a wheel.
//!
//! The ordered set of (deadline, key) it replaces cost a B-tree insert and remove per
//! state (a tenth of a second per million in a bulk) and some 40 bytes a state. Here a
//! state is 4 bytes in the bucket of its second. Each slot knows its place in its bucket
//! and each bucket entry its slot, so a state is filed and taken out in constant time
//! (the last entry of a bucket takes a removed one's place, as in the slot list).
//!
//! The buckets of the seconds `low .. low + WHEEL` are on a wheel, second `d` at
//! `d % WHEEL`, with a bit each saying which hold states: filing one is an array index,
//! not a search (a bulk's states fall over a day of seconds, tcp.established's 86 400).
//! Seconds outside that window, or whose wheel bucket holds another second, go to an
//! ordered map (a slot's place says which). The window moves up as the table expires
//! what is due ([`Deadlines::passed`]): every state left is due later, and buckets never
//! move. Expiry stays exact to the second: the earliest second is the first bucket with
//! states from `low` round the wheel, or the map's first, whichever is earlier.

use std::collections::BTreeMap;

/// Seconds on the wheel: a day and a half, more than pf's longest default timeout.
const WHEEL: usize = 1 << 17;

/// The place bit of a slot filed in the map rather than on the wheel.
const FAR: u32 = 1 << 31;

/// A bucket of the wheel: the slots filed under one second.
#[derive(Debug, Default, Clone)]
struct Bucket {
    /// The second the bucket holds, while it holds slots. Beside them, not in an array
    /// of its own: filing a slot then reads one random cache line of the wheel, not two.
    second: i64,
    slots: Vec<u32>,
}

/// The buckets; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    /// The buckets of the wheel (empty until the first state is filed).
    wheel: Vec<Bucket>,
    /// One bit per wheel bucket: set while it holds states.
    occupied: Vec<u64>,
    /// Every second on the wheel is at or after this, and before `low + WHEEL`.
    low: i64,
    /// States on the wheel.
    on_wheel: usize,
    /// The seconds not on the wheel.
    far: BTreeMap<i64, Vec<u32>>,
}

fn bucket_of(deadline: i64) -> usize {
    deadline.rem_euclid(WHEEL as i64) as usize
}

impl Deadlines {
    /// Files slot `at` under second `deadline`; returns its place, which the slot keeps
    /// for [`Deadlines::remove`] and [`Deadlines::moved`].
    pub(super) fn insert(&mut self, deadline: i64, at: u32) -> u32 {
        if self.wheel.is_empty() {
            self.wheel = vec![Bucket::default(); WHEEL];
            self.occupied = vec![0; WHEEL / 64];
        }
        if self.on_wheel == 0 {
            // An empty wheel may start anywhere at or before its first second.
            self.low = self.low.min(deadline);
        }
        let b = bucket_of(deadline);
        let in_window = deadline >= self.low && deadline.saturating_sub(self.low) < WHEEL as i64;
        let bucket = &mut self.wheel[b];
        let free = bucket.slots.is_empty() || bucket.second == deadline;
        if in_window && free {
            bucket.slots.push(at);
            bucket.second = deadline;
            self.occupied[b / 64] |= 1 << (b % 64);
            self.on_wheel += 1;
            // A bucket of two billion states would need 200 GB of slots first.
            return (bucket.slots.len() - 1) as u32;
        }
        let bucket = self.far.entry(deadline).or_default();
        bucket.push(at);
        (bucket.len() - 1) as u32 | FAR
    }

    /// Starts loading what filing a slot under `deadline` reads: its wheel bucket, and
    /// then (`ready`, a while after that, when the bucket is in the cache) where its
    /// next entry goes (see [`crate::sys::memory::prefetch`]). Changes nothing.
    #[inline]
    pub(super) fn prefetch(&self, deadline: i64, ready: bool) {
        if let Some(bucket) = self.wheel.get(bucket_of(deadline)) {
            if !ready {
                crate::sys::memory::prefetch(bucket);
            } else if let Some(last) = bucket.slots.last() {
                crate::sys::memory::prefetch(last);
            }
        }
    }

    /// The bucket a slot filed at `place` under `deadline` is in.
    fn bucket_mut(&mut self, deadline: i64, place: u32) -> Option<&mut Vec<u32>> {
        if place & FAR != 0 {
            self.far.get_mut(&deadline)
        } else {
            let bucket = self.wheel.get_mut(bucket_of(deadline))?;
            (bucket.second == deadline).then_some(&mut bucket.slots)
        }
    }

    /// Takes out the entry at `place` under `deadline`. Returns the slot whose entry
    /// took that place: it must be told its new place (`place` still).
    pub(super) fn remove(&mut self, deadline: i64, place: u32) -> Option<u32> {
        let bucket = self.bucket_mut(deadline, place)?;
        let i = (place & !FAR) as usize;
        if i >= bucket.len() {
            return None;
        }
        bucket.swap_remove(i);
        let moved = bucket.get(i).copied();
        if bucket.is_empty() {
            if place & FAR != 0 {
                self.far.remove(&deadline);
            } else {
                let b = bucket_of(deadline);
                self.occupied[b / 64] &= !(1 << (b % 64));
                // Its room goes: a bulk's bucket may have held thousands.
                self.wheel[b].slots = Vec::new();
            }
        }
        if place & FAR == 0 {
            self.on_wheel -= 1;
        }
        moved
    }

    /// The slot filed at `place` under `deadline` is now at `at` in the slot list.
    pub(super) fn moved(&mut self, deadline: i64, place: u32, at: u32) {
        if let Some(entry) = self
            .bucket_mut(deadline, place)
            .and_then(|b| b.get_mut((place & !FAR) as usize))
        {
            *entry = at;
        }
    }

    /// The earliest second on the wheel: the first bucket with states from `low` on.
    fn first_on_wheel(&self) -> Option<i64> {
        if self.on_wheel == 0 {
            return None;
        }
        let start = bucket_of(self.low);
        let words = self.occupied.len();
        // The first word is looked at twice: from `start` on, and last, below it.
        for k in 0..=words {
            let w = (start / 64 + k) % words;
            let mut bits = self.occupied[w];
            if k == 0 {
                bits &= !0 << (start % 64);
            }
            if bits != 0 {
                let b = w * 64 + bits.trailing_zeros() as usize;
                return Some(self.wheel[b].second);
            }
        }
        None
    }

    /// The earliest second any slot is filed under.
    pub(super) fn first(&self) -> Option<i64> {
        match (self.first_on_wheel(), self.far.first_key_value()) {
            (Some(w), Some((&f, _))) => Some(w.min(f)),
            (w, f) => w.or(f.map(|(&f, _)| f)),
        }
    }

    /// A slot filed under the earliest second, and that second.
    pub(super) fn first_slot(&self) -> Option<(i64, u32)> {
        let first = self.first()?;
        let bucket = match self.far.get(&first) {
            Some(far) => far,
            None => &self.wheel[bucket_of(first)].slots,
        };
        bucket.last().map(|&at| (first, at))
    }

    /// Nothing is filed at or before `now` any more (the table expired it): the wheel's
    /// window moves up, making room for later seconds.
    pub(super) fn passed(&mut self, now: i64) {
        debug_assert!(self.first().is_none_or(|f| f > now));
        self.low = self.low.max(now.saturating_add(1));
    }

    /// Forgets every slot.
    pub(super) fn clear(&mut self) {
        for (b, bucket) in self.wheel.iter_mut().enumerate() {
            if self.occupied[b / 64] & (1 << (b % 64)) != 0 {
                bucket.slots = Vec::new();
            }
        }
        self.occupied.fill(0);
        self.on_wheel = 0;
        self.far.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against an ordered map of (second, slot), over seconds that wrap the wheel many
    /// times, fall far outside it and collide on it, with time moving on as the table
    /// moves it: the earliest second is always the model's, and every slot is found
    /// where its place says.
    #[test]
    fn the_first_second_is_the_earliest_whatever_the_wheel_holds() {
        let mut d = Deadlines::default();
        // slot -> (second, place), as the table keeps them.
        let mut slots: Vec<Option<(i64, u32)>> = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |below: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        };
        let mut now: i64 = -5;
        for round in 0..3000 {
            for _ in 0..next(20) {
                let ahead = match next(4) {
                    0 => next(60) as i64,
                    1 => next(90_000) as i64,
                    2 => WHEEL as i64 * (1 + next(3) as i64) + next(5) as i64,
                    _ => (WHEEL as i64) - 2 + next(4) as i64,
                };
                let second = now + ahead;
                let at = slots.len() as u32;
                let place = d.insert(second, at);
                slots.push(Some((second, place)));
            }
            // Some go early (a delete, an update moving them).
            for _ in 0..next(8) {
                let at = next(slots.len().max(1) as u64) as usize;
                if let Some(Some((second, place))) = slots.get(at).copied() {
                    if let Some(moved) = d.remove(second, place) {
                        let m = slots[moved as usize].as_mut().unwrap();
                        assert_eq!(m.0, second);
                        m.1 = place;
                    }
                    slots[at] = None;
                }
            }
            let model = slots.iter().flatten().map(|&(s, _)| s).min();
            assert_eq!(d.first(), model, "round {round}");
            // Expire what is due, as the table does.
            now += next(if round % 50 == 0 { 200_000 } else { 3_000 }) as i64;
            while let Some((second, at)) = d.first_slot() {
                if second > now {
                    break;
                }
                let (s, place) = slots[at as usize].expect("a filed slot");
                assert_eq!(s, second);
                if let Some(moved) = d.remove(second, place) {
                    slots[moved as usize].as_mut().unwrap().1 = place;
                }
                slots[at as usize] = None;
            }
            d.passed(now);
            assert!(slots.iter().flatten().all(|&(s, _)| s > now));
            let model = slots.iter().flatten().map(|&(s, _)| s).min();
            assert_eq!(d.first(), model, "round {round}, after expiry");
        }
        assert!(!d.far.is_empty() || slots.iter().flatten().count() < 10);
    }
}
