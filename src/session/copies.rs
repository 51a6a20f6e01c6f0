//! Which of a session peer's pfsync packets were taken already, so that its second
//! copy is not.
//!
//! On a plain link a pfsyncd node sends each of its packets twice: plain (for the
//! kernel peers on the link) and as DATA to each session peer (for loss recovery). Both
//! carry the same bytes (the daemon hands the engine's packet to both, unchanged), so
//! the receiver remembers, per peer, a keyed 64-bit hash of each packet it took and on
//! which path; the same hash arriving on the other path soon after is the other copy,
//! and only the engine's work is skipped (a DATA copy still goes through the session
//! layer: its sequence number, the mark, ACKs). One entry matches one copy: a packet
//! the node sends again with the same bytes is taken again.
//!
//! A node between two links relays the other link's packets plain, from its own
//! address, with no DATA copy: such a packet matches only if a DATA packet of the same
//! peer with the same hash was taken within [`COPY_WINDOW`] and not matched yet. The
//! hash is keyed ([`crate::engine::KeyedState`]) so that nobody choosing payloads can
//! aim one at another's hash.
//!
//! Bounds: [`COPIES_KEPT`] entries of 16 bytes per peer (4 KiB), allocated at the
//! first packet taken; an entry older than [`COPY_WINDOW`] matches nothing. A copy
//! that comes later (a DATA resent after a loss), or after more than [`COPIES_KEPT`]
//! other packets of that peer, is taken twice, as without this memory: the merge keeps
//! the newer, so that costs CPU, never states.

use std::time::{Duration, Instant};

/// Packets remembered per peer. The copies of one packet leave the sender in the same
/// turn (the plain one first, the DATA ones after the turn's other plain packets), so
/// they are at most a turn's packets apart.
pub const COPIES_KEPT: usize = 256;

/// How long a taken packet's other copy is waited for: both leave the sender within
/// one turn and cross the same link.
pub const COPY_WINDOW: Duration = Duration::from_secs(2);

/// The path a copy came by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyPath {
    /// A plain pfsync packet from the peer's address.
    Plain,
    /// A DATA frame's packet.
    Data,
}

/// The keyed hash of a packet's bytes, to remember once the packet is taken
/// ([`crate::session::Sessions::remember_copy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyHash(pub(crate) u64);

/// What [`crate::session::Sessions::check_copy`] says of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyCheck {
    /// Not a session peer's, or a secure peer's (it sends no plain copy): take it.
    Untracked,
    /// Its other copy was taken: skip the engine's work (counted).
    Second,
    /// The first copy: take it, then remember it.
    First(CopyHash),
}

/// One packet taken. 16 bytes.
#[derive(Debug, Clone, Copy)]
struct Taken {
    hash: u64,
    /// Milliseconds from [`CopyMemory::epoch`].
    at_ms: u32,
    path: CopyPath,
    /// Its other copy came (one entry stands for one pair).
    matched: bool,
}

/// A peer's packets taken lately, oldest first in a ring.
#[derive(Debug, Clone, Default)]
pub(crate) struct CopyMemory {
    ring: Vec<Taken>,
    /// Where the next entry goes once the ring is full.
    next: usize,
    /// What `at_ms` counts from; moved when the entries are all stale (so `u32`
    /// milliseconds never wrap while an entry could match).
    epoch: Option<Instant>,
}

/// Milliseconds past which the epoch moves: half of `u32`'s range (24 days).
const EPOCH_SPAN_MS: u128 = 1 << 31;

impl CopyMemory {
    /// Whether a packet of hash `hash` arriving by `path` at `now` is the other copy of
    /// one taken: then that entry is used up.
    pub fn second_copy(&mut self, now: Instant, path: CopyPath, hash: u64) -> bool {
        let Some(now_ms) = self.ms(now) else {
            return false;
        };
        let window_ms = COPY_WINDOW.as_millis() as u32;
        let len = self.ring.len();
        // Newest first, up to the first entry too old: the ring is in time order.
        for back in 1..=len {
            let at = (self.next + len - back) % len;
            let entry = &mut self.ring[at];
            if now_ms.saturating_sub(entry.at_ms) > window_ms {
                break;
            }
            if entry.hash == hash && entry.path != path && !entry.matched {
                entry.matched = true;
                return true;
            }
        }
        false
    }

    /// Notes a packet of hash `hash` taken by `path` at `now`.
    pub fn remember(&mut self, now: Instant, path: CopyPath, hash: u64) {
        let at_ms = match self.ms(now) {
            Some(ms) => ms,
            None => {
                // Every entry is stale (or none yet): start over from now.
                self.ring.clear();
                self.next = 0;
                self.epoch = Some(now);
                0
            }
        };
        let taken = Taken {
            hash,
            at_ms,
            path,
            matched: false,
        };
        if self.ring.len() < COPIES_KEPT {
            if self.ring.capacity() == 0 {
                self.ring.reserve_exact(COPIES_KEPT);
            }
            self.ring.push(taken);
            self.next = self.ring.len() % COPIES_KEPT;
        } else {
            self.ring[self.next] = taken;
            self.next = (self.next + 1) % COPIES_KEPT;
        }
    }

    /// Milliseconds from the epoch to `now`; `None` when there is no entry that could
    /// still match (none, or the newest older than the window, or the epoch too far
    /// back for `u32`).
    fn ms(&self, now: Instant) -> Option<u32> {
        let epoch = self.epoch?;
        let ms = now.saturating_duration_since(epoch).as_millis();
        if ms >= EPOCH_SPAN_MS || self.ring.is_empty() {
            return None;
        }
        let ms = ms as u32;
        let newest = self.ring[(self.next + self.ring.len() - 1) % self.ring.len()];
        if ms.saturating_sub(newest.at_ms) > COPY_WINDOW.as_millis() as u32 {
            return None;
        }
        Some(ms)
    }

    /// Bytes held (for the bounds test).
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<Taken>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_matches_one_copy_on_the_other_path() {
        let t0 = Instant::now();
        let mut m = CopyMemory::default();
        m.remember(t0, CopyPath::Plain, 7);
        // The same path again (a relayed packet, or a repeat): not a copy.
        assert!(!m.second_copy(t0, CopyPath::Plain, 7));
        assert!(!m.second_copy(t0, CopyPath::Data, 8));
        assert!(m.second_copy(t0, CopyPath::Data, 7));
        // Used up: a third packet with those bytes is taken.
        assert!(!m.second_copy(t0, CopyPath::Data, 7));
        m.remember(t0, CopyPath::Data, 9);
        assert!(m.second_copy(t0, CopyPath::Plain, 9));
    }

    #[test]
    fn stale_or_pushed_out_entries_match_nothing() {
        let t0 = Instant::now();
        let mut m = CopyMemory::default();
        m.remember(t0, CopyPath::Data, 1);
        assert!(!m.second_copy(
            t0 + COPY_WINDOW + Duration::from_millis(1),
            CopyPath::Plain,
            1
        ));
        m.remember(t0 + COPY_WINDOW * 2, CopyPath::Data, 2);
        for h in 100..100 + COPIES_KEPT as u64 {
            m.remember(t0 + COPY_WINDOW * 2, CopyPath::Data, h);
        }
        assert!(!m.second_copy(t0 + COPY_WINDOW * 2, CopyPath::Plain, 2));
        assert!(m.second_copy(t0 + COPY_WINDOW * 2, CopyPath::Plain, 100));
        assert_eq!(std::mem::size_of::<Taken>(), 16);
        assert_eq!(m.bytes(), COPIES_KEPT * 16);
    }
}
