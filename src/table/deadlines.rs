//! The memory table's deadline index: one list of slot positions per table second, on
//! a wheel.
//!
//! The ordered set of (deadline, key) it replaces cost a B-tree insert and remove per
//! state (a tenth of a second per million in a bulk) and some 40 bytes a state. Here a
//! state is a link of 8 bytes, in a list per second threaded through an array beside the
//! slot list (entry `at` for the slot at `at`), so a state is filed and taken out in
//! constant time. The lists replace a vector of positions per second: a bulk's states
//! fall over a day of seconds, most in a second of their own, and each such vector was
//! a `malloc` on filing, a `realloc` and copy as it grew, and a `free` when it emptied
//! (a tenth of the receiving parent's time in a bulk, issue 14).
//!
//! The lists of the seconds `low .. low + WHEEL` are on a wheel, second `d` at
//! `d % WHEEL`, with a bit each saying which hold states: filing one is an array index,
//! not a search. Seconds outside that window, or whose wheel bucket holds another second,
//! go to an ordered map (a link says which). The window moves up as the table expires
//! what is due ([`Deadlines::passed`]): every state left is due later, and buckets never
//! move. Expiry stays exact to the second: the earliest second is the first bucket with
//! states from `low` round the wheel, or the map's first, whichever is earlier.

use std::collections::BTreeMap;

/// Seconds on the wheel: a day and a half, more than pf's longest default timeout.
const WHEEL: usize = 1 << 17;

/// The bit of a link's `prev` saying that its list is in the map rather than on the
/// wheel.
const FAR: u32 = 1 << 31;

/// No slot: the end of a list, or (as a `prev`, beside [`FAR`]) its head.
const NIL: u32 = FAR - 1;

/// A slot's place in the list of its second.
#[derive(Debug, Clone, Copy)]
struct Link {
    /// The slot before it in its list, [`NIL`] for the head; with [`FAR`] if the list
    /// is in the map.
    prev: u32,
    /// The slot after it, or [`NIL`].
    next: u32,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

/// A bucket of the wheel: the list of the slots filed under one second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// The second the bucket holds, while it holds slots. Beside its list's head, not in
    /// an array of its own: filing a slot then reads one random cache line of the wheel,
    /// not two.
    second: i64,
    /// The list's first slot, or [`NIL`] when the bucket is empty.
    head: u32,
}

const EMPTY: Bucket = Bucket {
    second: 0,
    head: NIL,
};

/// The lists; see the module documentation.
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
    /// The heads of the lists of the seconds not on the wheel.
    far: BTreeMap<i64, u32>,
    /// Each filed slot's link, by its position (entries of positions not filed are
    /// stale and never read).
    links: Vec<Link>,
    /// The links' pages, mapped ahead of their growth.
    links_ahead: crate::sys::memory::PopulateAhead,
}

fn bucket_of(deadline: i64) -> usize {
    deadline.rem_euclid(WHEEL as i64) as usize
}

impl Deadlines {
    /// Makes room for the links of `slots` slots in all.
    pub(super) fn reserve(&mut self, slots: usize) {
        self.links.reserve(slots.saturating_sub(self.links.len()));
    }

    /// Files slot `at` (not filed) under second `deadline`.
    pub(super) fn insert(&mut self, deadline: i64, at: u32) {
        // Two billion states would need 200 GB of slots first.
        debug_assert!(at < NIL);
        if self.wheel.is_empty() {
            let mut wheel = Vec::with_capacity(WHEEL);
            crate::sys::memory::populate_spare(&mut wheel, WHEEL);
            wheel.resize(WHEEL, EMPTY);
            self.wheel = wheel;
            self.occupied = vec![0; WHEEL / 64];
        }
        if self.links.len() <= at as usize {
            // A new slot's link, at the end (the slot list grows a slot at a time).
            self.links_ahead.before_push(&mut self.links);
            self.links.resize(at as usize + 1, UNLINKED);
        }
        if self.on_wheel == 0 {
            // An empty wheel may start anywhere at or before its first second.
            self.low = self.low.min(deadline);
        }
        let b = bucket_of(deadline);
        let in_window = deadline >= self.low && deadline.saturating_sub(self.low) < WHEEL as i64;
        let bucket = &mut self.wheel[b];
        let free = bucket.head == NIL || bucket.second == deadline;
        let (head, far) = if in_window && free {
            bucket.second = deadline;
            self.occupied[b / 64] |= 1 << (b % 64);
            self.on_wheel += 1;
            (&mut bucket.head, 0)
        } else {
            (self.far.entry(deadline).or_insert(NIL), FAR)
        };
        let next = std::mem::replace(head, at);
        self.links[at as usize] = Link {
            prev: far | NIL,
            next,
        };
        if next != NIL {
            self.links[next as usize].prev = far | at;
        }
    }

    /// Starts loading what filing a slot under `deadline` reads: its wheel bucket, and
    /// then (`ready`, a while after that, when the bucket is in the cache) the link of
    /// the slot it goes before (see [`crate::sys::memory::prefetch`]). Changes nothing.
    #[inline]
    pub(super) fn prefetch(&self, deadline: i64, ready: bool) {
        if let Some(bucket) = self.wheel.get(bucket_of(deadline)) {
            if !ready {
                crate::sys::memory::prefetch(bucket);
            } else if let Some(link) = self.links.get(bucket.head as usize) {
                crate::sys::memory::prefetch(link);
            }
        }
    }

    /// Makes `at` the head of the list of `deadline` (the wheel's or, with `far`, the
    /// map's), or empties that list if `at` is [`NIL`].
    fn set_head(&mut self, deadline: i64, far: bool, at: u32) {
        if far {
            if at == NIL {
                self.far.remove(&deadline);
            } else if let Some(head) = self.far.get_mut(&deadline) {
                *head = at;
            }
        } else {
            let b = bucket_of(deadline);
            self.wheel[b].head = at;
            if at == NIL {
                self.occupied[b / 64] &= !(1 << (b % 64));
            }
        }
    }

    /// Takes out slot `at`, filed under `deadline`.
    pub(super) fn remove(&mut self, deadline: i64, at: u32) {
        let Link { prev, next } = self.links[at as usize];
        let far = prev & FAR != 0;
        match prev & !FAR {
            NIL => self.set_head(deadline, far, next),
            before => self.links[before as usize].next = next,
        }
        if next != NIL {
            self.links[next as usize].prev = prev;
        }
        if !far {
            self.on_wheel -= 1;
        }
    }

    /// The slot filed under `deadline` at `from` in the slot list is now at `to` (whose
    /// slot was taken out).
    pub(super) fn moved(&mut self, deadline: i64, from: u32, to: u32) {
        let link = self.links[from as usize];
        self.links[to as usize] = link;
        let far = link.prev & FAR;
        match link.prev & !FAR {
            NIL => self.set_head(deadline, far != 0, to),
            before => self.links[before as usize].next = to,
        }
        if link.next != NIL {
            self.links[link.next as usize].prev = far | to;
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
        let head = match self.far.get(&first) {
            Some(&far) => far,
            None => self.wheel[bucket_of(first)].head,
        };
        (head != NIL).then_some((first, head))
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
                *bucket = EMPTY;
            }
        }
        self.occupied.fill(0);
        self.on_wheel = 0;
        self.far.clear();
    }

    /// The slots filed under each second, walking every list (for the tests).
    #[cfg(test)]
    fn filed(&self) -> BTreeMap<u32, i64> {
        let mut filed = BTreeMap::new();
        let walk = |filed: &mut BTreeMap<u32, i64>, second: i64, mut at: u32, far: u32| {
            let mut prev = far | NIL;
            while at != NIL {
                let link = self.links[at as usize];
                assert_eq!(link.prev, prev, "the back link of {at}");
                assert!(filed.insert(at, second).is_none(), "{at} filed twice");
                prev = far | at;
                at = link.next;
            }
        };
        for (b, bucket) in self.wheel.iter().enumerate() {
            let occupied = self.occupied[b / 64] & (1 << (b % 64)) != 0;
            assert_eq!(occupied, bucket.head != NIL, "bucket {b}");
            if occupied {
                walk(&mut filed, bucket.second, bucket.head, 0);
            }
        }
        let on_wheel = filed.len();
        assert_eq!(on_wheel, self.on_wheel);
        for (&second, &head) in &self.far {
            assert_ne!(head, NIL, "an empty list of {second} kept");
            walk(&mut filed, second, head, FAR);
        }
        filed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slot list as the memory table keeps it (the last slot takes a removed one's
    /// place): the second each slot is filed under.
    struct Model {
        slots: Vec<i64>,
    }

    impl Model {
        fn take(&mut self, d: &mut Deadlines, at: usize) {
            d.remove(self.slots[at], at as u32);
            let last = self.slots.len() - 1;
            self.slots.swap_remove(at);
            if at != last {
                d.moved(self.slots[at], last as u32, at as u32);
            }
        }

        fn check(&self, d: &Deadlines, when: &str) {
            let model: BTreeMap<u32, i64> = (0..).zip(self.slots.iter().copied()).collect();
            assert_eq!(d.filed(), model, "{when}");
            assert_eq!(d.first(), self.slots.iter().copied().min(), "{when}");
        }
    }

    /// Against the seconds of a dense slot list, over seconds that wrap the wheel many
    /// times, fall far outside it and collide on it, with time moving on as the table
    /// moves it, slots refiled, taken out and moved into their places: the earliest second
    /// is always the model's, and every list holds exactly the slots of its second.
    #[test]
    fn the_first_second_is_the_earliest_whatever_the_wheel_holds() {
        let mut d = Deadlines::default();
        let mut m = Model { slots: Vec::new() };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |below: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % below
        };
        let mut now: i64 = -5;
        let mut far_seen = false;
        for round in 0..3000 {
            let second = |next: &mut dyn FnMut(u64) -> u64| {
                let ahead = match next(5) {
                    0 => next(60) as i64,
                    1 => next(90_000) as i64,
                    2 => WHEEL as i64 * (1 + next(3) as i64) + next(5) as i64,
                    3 => 1 + next(3) as i64,
                    _ => (WHEEL as i64) - 2 + next(4) as i64,
                };
                now + ahead
            };
            for _ in 0..next(20) {
                let s = second(&mut next);
                d.insert(s, m.slots.len() as u32);
                m.slots.push(s);
            }
            // Some go early (a delete), some are refiled (an update).
            for _ in 0..next(8) {
                if m.slots.is_empty() {
                    break;
                }
                let at = next(m.slots.len() as u64) as usize;
                if next(2) == 0 {
                    m.take(&mut d, at);
                } else {
                    let s = second(&mut next);
                    d.remove(m.slots[at], at as u32);
                    d.insert(s, at as u32);
                    m.slots[at] = s;
                }
            }
            far_seen |= !d.far.is_empty();
            if round % 20 == 0 {
                m.check(&d, &format!("round {round}"));
            } else {
                assert_eq!(d.first(), m.slots.iter().copied().min(), "round {round}");
            }
            // Expire what is due, as the table does.
            now += next(if round % 50 == 0 { 200_000 } else { 3_000 }) as i64;
            while let Some((second, at)) = d.first_slot() {
                if second > now {
                    break;
                }
                assert_eq!(m.slots[at as usize], second);
                m.take(&mut d, at as usize);
            }
            d.passed(now);
            assert!(m.slots.iter().all(|&s| s > now));
            m.check(&d, &format!("round {round}, after expiry"));
        }
        assert!(far_seen);
        // Everything filed again after a clear, as a change of the timeouts does.
        d.clear();
        for (at, &s) in m.slots.iter().enumerate() {
            d.insert(s, at as u32);
        }
        m.check(&d, "after a clear");
    }
}
