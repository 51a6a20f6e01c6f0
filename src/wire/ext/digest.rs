//! DIGEST: a compact summary of the sender's own states (creator = sender). The ids are
//! spread over N buckets (N a power of two, [`MAX_BUCKETS`] at most) by
//! [`bucket_of`]; per bucket, the xor of [`entry_hash`] over its states (each state's
//! id and version, the hash of what a copy must agree on after sync: see the engine's
//! `digest.rs`) and their count. A receiver computes the same over its copies of the
//! sender's states and asks (DIGEST_REQ) for the buckets that differ: a copy missing,
//! one too many, or one whose version differs (an update lost for good). One frame carries a run of buckets, so a
//! digest of N buckets takes N / [`MAX_BUCKETS_PER_FRAME`] frames under any MTU.
//!
//! ```text
//!  0               4       6       8                               16      18      20
//! +---------------+-------+-------+-------------------------------+-------+-------+
//! | round (BE32)  | N     | first | as-of seq (BE64)              | count |  pad  |
//! +---------------+-------+-------+-------------------------------+-------+-------+
//! | xor of hashes (BE64)          | ids (BE32)    |  ... count times (bucket first + i)
//! ```
//! `as_of` is the sender's highest DATA seq when it summed: a receiver that has not
//! received that far yet would see differences that are only in flight.

use super::{check_list, Error, Result};
use crate::wire::codec::wire_struct;

wire_struct! {
    /// DIGEST head.
    DigestPacket, DigestHead, size 20;
    /// The sender's digest round; DIGEST_REQ and IDS echo it.
    round / set_round: u32 = 0..4;
    /// Buckets in the whole digest (N).
    buckets / set_buckets: u16 = 4..6;
    /// The first bucket in this frame.
    first / set_first: u16 = 6..8;
    /// The sender's highest DATA seq when it summed.
    as_of / set_as_of: u64 = 8..16;
    /// Buckets in this frame.
    count / set_count: u16 = 16..18;
    [pad] _pad = 18..20;
}

/// Bytes per bucket.
pub const RECORD: usize = 12;
/// The most buckets per frame (788 bytes of body).
pub const MAX_BUCKETS_PER_FRAME: usize = 64;
/// The most buckets a digest may have.
pub const MAX_BUCKETS: u16 = 1024;

/// One bucket: xor of the states' [`entry_hash`]es and how many states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BucketSum {
    pub xor: u64,
    pub count: u32,
}

impl BucketSum {
    /// Adds (or, xor being its own inverse, removes with [`BucketSum::remove`]) a state
    /// of id `id` at version `version`.
    pub fn add(&mut self, id: u64, version: u32) {
        self.xor ^= entry_hash(id, version);
        self.count = self.count.wrapping_add(1);
    }

    /// Removes a state added before at this version.
    pub fn remove(&mut self, id: u64, version: u32) {
        self.xor ^= entry_hash(id, version);
        self.count = self.count.wrapping_sub(1);
    }

    /// A counted state went from version `old` to `new`: O(1), the count unchanged.
    pub fn change(&mut self, id: u64, old: u32, new: u32) {
        self.xor ^= entry_hash(id, old) ^ entry_hash(id, new);
    }
}

/// What one state adds to its bucket's xor: a hash of its id and its version. For one
/// id, distinct versions give distinct hashes (both steps are bijections), so a copy
/// whose version differs changes the bucket's sum.
pub fn entry_hash(id: u64, version: u32) -> u64 {
    id_hash(id_hash(id) ^ u64::from(version))
}

/// The 64-bit hash of a state id both sides of a digest use: a fixed bijective mixer
/// (splitmix64's finalizer), so equal sets give equal sums on every node and the
/// sequential ids of one creator spread evenly over the buckets.
pub fn id_hash(id: u64) -> u64 {
    let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The bucket of `id` in a digest of `buckets` buckets (a power of two).
pub fn bucket_of(id: u64, buckets: u16) -> u16 {
    (id_hash(id) % u64::from(buckets.max(1))) as u16
}

/// Sums states, `(id, version)`, into `buckets` buckets.
pub fn sum(states: impl IntoIterator<Item = (u64, u32)>, buckets: u16) -> Vec<BucketSum> {
    let mut sums = vec![BucketSum::default(); usize::from(buckets)];
    for (id, version) in states {
        sums[usize::from(bucket_of(id, buckets))].add(id, version);
    }
    sums
}

/// DIGEST body: a run of buckets of one digest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DigestRepr {
    pub round: u32,
    pub buckets: u16,
    pub first: u16,
    pub as_of: u64,
    pub sums: Vec<BucketSum>,
}

impl DigestRepr {
    /// Parses a DIGEST body; N must be a power of two up to [`MAX_BUCKETS`] and the run
    /// inside it.
    pub fn parse(body: &[u8]) -> Result<DigestRepr> {
        let head = DigestPacket::new_checked(body).map_err(|_| Error::BadBody {
            kind: "DIGEST",
            need: SIZE,
            have: body.len(),
        })?;
        let head = DigestHead::parse(&head);
        let count = usize::from(head.count);
        check_list("DIGEST", body, SIZE, RECORD, count, MAX_BUCKETS_PER_FRAME)?;
        if !head.buckets.is_power_of_two() || head.buckets > MAX_BUCKETS {
            return Err(Error::BadValue {
                kind: "DIGEST",
                field: "buckets",
                value: head.buckets.into(),
            });
        }
        if usize::from(head.first) + count > usize::from(head.buckets) {
            return Err(Error::BadValue {
                kind: "DIGEST",
                field: "first",
                value: head.first.into(),
            });
        }
        let sums = body[SIZE..]
            .chunks_exact(RECORD)
            .map(|r| BucketSum {
                xor: u64::from_be_bytes(r[..8].try_into().expect("8 bytes")),
                count: u32::from_be_bytes(r[8..].try_into().expect("4 bytes")),
            })
            .collect();
        Ok(DigestRepr {
            round: head.round,
            buckets: head.buckets,
            first: head.first,
            as_of: head.as_of,
            sums,
        })
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        SIZE + RECORD * self.sums.len()
    }

    /// Writes the body into exactly `buffer_len()` bytes. Panics past
    /// [`MAX_BUCKETS_PER_FRAME`].
    pub fn emit(&self, out: &mut [u8]) {
        assert!(self.sums.len() <= MAX_BUCKETS_PER_FRAME);
        DigestHead {
            round: self.round,
            buckets: self.buckets,
            first: self.first,
            as_of: self.as_of,
            count: self.sums.len() as u16,
        }
        .emit_bytes(&mut out[..SIZE]);
        for (s, r) in self.sums.iter().zip(out[SIZE..].chunks_exact_mut(RECORD)) {
            r[..8].copy_from_slice(&s.xor.to_be_bytes());
            r[8..].copy_from_slice(&s.count.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::ext::{Body, FrameRepr};

    static FRAME: [u8; 60] = [
        0xc5, 0x07, 0x00, 0x3c, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, // header
        0, 0, 0, 5, 0x01, 0x00, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 99, 0x00, 0x02, 0, 0, // head
        0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0, 0, 0, 3, // bucket 16
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // bucket 17: empty
    ];

    #[test]
    fn parse_and_emit() {
        let frame = FrameRepr::parse(&FRAME).unwrap();
        let digest = DigestRepr {
            round: 5,
            buckets: 256,
            first: 16,
            as_of: 99,
            sums: vec![
                BucketSum {
                    xor: 0x1122_3344_5566_7788,
                    count: 3,
                },
                BucketSum::default(),
            ],
        };
        assert_eq!(frame.body, Body::Digest(digest));
        let mut buf = [0xa5u8; 60];
        frame.emit(&mut buf);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn bucket_run_must_fit_the_digest() {
        let mut past = FRAME;
        past[22..24].copy_from_slice(&255u16.to_be_bytes());
        assert!(matches!(
            FrameRepr::parse(&past),
            Err(Error::BadValue { field: "first", .. })
        ));
        let mut odd = FRAME;
        odd[20..22].copy_from_slice(&100u16.to_be_bytes());
        assert!(matches!(
            FrameRepr::parse(&odd),
            Err(Error::BadValue {
                field: "buckets",
                ..
            })
        ));
    }

    #[test]
    fn sums_cancel_on_remove_and_spread_ids() {
        let mut b = BucketSum::default();
        b.add(7, 1);
        b.add(8, 2);
        b.remove(7, 1);
        let mut only8 = BucketSum::default();
        only8.add(8, 2);
        assert_eq!(b, only8);
        let sums = sum((1..=25_600u64).map(|id| (id, 0)), 256);
        // Sequential ids spread: no bucket far from the mean of 100.
        assert!(
            sums.iter().all(|s| (50..150).contains(&s.count)),
            "{sums:?}"
        );
    }

    #[test]
    fn a_new_version_changes_the_sum_as_remove_and_add_do() {
        let mut b = BucketSum::default();
        b.add(7, 1);
        b.add(8, 2);
        let before = b;
        b.change(7, 1, 3);
        assert_ne!(b, before, "a copy at another version differs");
        let mut again = BucketSum::default();
        again.add(8, 2);
        again.add(7, 3);
        assert_eq!(b, again);
        b.change(7, 3, 1);
        assert_eq!(b, before);
    }
}
