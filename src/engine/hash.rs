//! A keyed hasher for the engine's indexes.
//!
//! The cache index is keyed by (creatorid, id), values a peer chooses. With a hash
//! function an attacker can predict, a flood of crafted inserts could put every state in
//! one bucket chain and make each lookup linear. The hasher therefore takes a secret key
//! the caller draws from the operating system's random source ([`Config::random`]); the
//! engine never reads randomness itself.
//!
//! The mixing step is a folded 64×64→128-bit multiply (the low and high halves of the
//! product XORed), with the key in both the starting value and the multiplier. It costs
//! a few nanoseconds per key, far less than SipHash, which matters at a million changes
//! a second; it is not a cryptographic PRF, but without the key an attacker cannot aim
//! keys at one bucket.
//!
//! [`Config::random`]: super::Config::random

use core::hash::{BuildHasher, Hasher};

/// An odd constant (the golden ratio's fraction bits) that keeps a zero key usable.
const PHI: u64 = 0x9e37_79b9_7f4a_7c15;
/// A second constant for the final mix.
const MIX: u64 = 0xd6e8_feb8_6659_fd93;

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Builds [`KeyedHasher`]s with one secret key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedState {
    seed: u64,
    multiplier: u64,
}

impl KeyedState {
    /// A builder for a 128-bit key. Any key works, zero included (tests use fixed keys
    /// so that runs are reproducible).
    pub fn new(key: [u64; 2]) -> KeyedState {
        KeyedState {
            // Every bit of both words reaches the seed (the multiplier's low bit is
            // forced to 1 below).
            seed: (key[0] ^ MIX).wrapping_add(key[1].rotate_left(29)),
            // Odd, so the multiply never loses the low bit of its input.
            multiplier: (key[1] ^ PHI) | 1,
        }
    }
}

impl BuildHasher for KeyedState {
    type Hasher = KeyedHasher;

    #[inline]
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher {
            state: self.seed,
            multiplier: self.multiplier,
        }
    }
}

/// The hasher; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct KeyedHasher {
    state: u64,
    multiplier: u64,
}

impl Hasher for KeyedHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length goes in too, so "a" and "a\0" differ.
            self.write_u64(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.state = fold(self.state ^ n, self.multiplier);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // hashbrown takes the bucket from the low bits and a tag from the top 7: one more
        // round spreads every input bit over both.
        fold(self.state, self.multiplier ^ MIX)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::collections::HashSet;

    fn hash(state: &KeyedState, key: (u32, u64)) -> u64 {
        state.hash_one(key)
    }

    #[test]
    fn keys_change_the_hash() {
        let a = KeyedState::new([1, 2]);
        let b = KeyedState::new([1, 3]);
        let c = KeyedState::new([4, 2]);
        let k = (0x1a2b_3c4d, 42);
        assert_ne!(hash(&a, k), hash(&b, k));
        assert_ne!(hash(&a, k), hash(&c, k));
        assert_eq!(hash(&a, k), hash(&KeyedState::new([1, 2]), k));
    }

    #[test]
    fn sequential_ids_spread_over_buckets() {
        // State ids are counters: the low bits of their hashes must still differ.
        let s = KeyedState::new([0, 0]);
        let buckets: HashSet<u64> = (0..4096u64).map(|id| hash(&s, (7, id)) & 4095).collect();
        assert!(
            buckets.len() > 2400,
            "{} of 4096 buckets used",
            buckets.len()
        );
        let tags: HashSet<u64> = (0..4096u64).map(|id| hash(&s, (7, id)) >> 57).collect();
        assert_eq!(tags.len(), 128);
    }
}
