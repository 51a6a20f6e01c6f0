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
//! hash is keyed ([`CopyHasher`]) so that nobody choosing payloads can aim one at
//! another's hash.
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

/// The keyed hash of a packet's bytes. The mixing step of the engine's index hash
/// ([`crate::engine::KeyedState`]: a folded 64x64->128-bit multiply, the key in the
/// starting values and the multiplier) over four independent lanes of 8-byte words,
/// so that a 1 400-byte packet costs a quarter of one lane's serial chain: both copies
/// of every packet a session peer sends are hashed, at up to tens of thousands of
/// packets a second. Without the key, nobody can aim a packet at another's hash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CopyHasher {
    lanes: [u64; 4],
    multiplier: u64,
}

/// Odd constants (fraction bits of the golden ratio and of sqrt(2), sqrt(3), sqrt(5))
/// that make the lanes start apart and keep a zero key usable.
const LANE_TWEAKS: [u64; 4] = [
    0x9e37_79b9_7f4a_7c15,
    0x6a09_e667_f3bc_c909,
    0xbb67_ae85_84ca_a73b,
    0x3c6e_f372_fe94_f82b,
];

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline]
fn word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

impl CopyHasher {
    pub fn new(key: [u64; 2]) -> CopyHasher {
        CopyHasher {
            // Every bit of both words reaches the lanes (the multiplier's low bit is
            // forced to 1 below).
            lanes: LANE_TWEAKS.map(|t| fold(key[0] ^ t, t | 1) ^ key[1].rotate_left(29)),
            // Odd, so the multiply never loses the low bit of its input.
            multiplier: (key[1] ^ LANE_TWEAKS[0]) | 1,
        }
    }

    pub fn hash(&self, bytes: &[u8]) -> u64 {
        let m = self.multiplier;
        let mut lanes = self.lanes;
        let mut blocks = bytes.chunks_exact(32);
        for block in &mut blocks {
            for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(8)) {
                *lane = fold(*lane ^ word(w), m);
            }
        }
        // The rest, a word per lane, the last one zero-padded: the length below tells
        // "a" from "a\0".
        for (lane, w) in lanes.iter_mut().zip(blocks.remainder().chunks(8)) {
            *lane = fold(*lane ^ word(w), m);
        }
        let mut h = fold(lanes[0] ^ bytes.len() as u64, m);
        for lane in &lanes[1..] {
            h = fold(h ^ *lane, m);
        }
        fold(h, m ^ LANE_TWEAKS[1])
    }
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
    fn the_hash_sees_every_byte_and_the_key() {
        let h = CopyHasher::new([1, 2]);
        let packet: Vec<u8> = (0..1403u32).map(|i| (i * 7) as u8).collect();
        let base = h.hash(&packet);
        assert_eq!(base, CopyHasher::new([1, 2]).hash(&packet));
        assert_ne!(base, CopyHasher::new([1, 3]).hash(&packet));
        assert_ne!(base, CopyHasher::new([0, 2]).hash(&packet));
        for at in [0, 7, 8, 31, 32, 700, 1399, 1402] {
            let mut other = packet.clone();
            other[at] ^= 1;
            assert_ne!(base, h.hash(&other), "byte {at}");
        }
        assert_ne!(h.hash(b"a"), h.hash(b"a\0"));
        assert_ne!(h.hash(&packet[..1400]), h.hash(&packet[..1401]));
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
