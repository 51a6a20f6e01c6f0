//! Anti-entropy between a creator and the peers holding copies of its states.
//!
//! Each node sends its own DIGEST (its states, creator = itself) to every peer once a
//! period. A receiver compares it with the same sums over its copies of that creator's
//! states and asks (DIGEST_REQ) for the buckets that differ; the creator lists each
//! (IDS); the receiver forgets what the creator no longer has ([`Event::ForgetStates`],
//! never an id received less than `forget_min_age` ago, whose announcement may have
//! overtaken the list) and asks (NEED) for what it lacks, which the creator announces
//! ([`Event::AnnounceStates`]: full updates of those ids).
//!
//! The session layer runs the exchange; the states stay with the engine, reached through
//! [`StateIndex`]. Work that needs the index is queued by `handle_frame` and
//! `handle_timeout` and done in `Sessions::digest_work`, announced by
//! [`Event::DigestWork`].
//!
//! [`Event::ForgetStates`]: super::Event::ForgetStates
//! [`Event::AnnounceStates`]: super::Event::AnnounceStates
//! [`Event::DigestWork`]: super::Event::DigestWork

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Instant;

pub use crate::wire::ext::digest::{bucket_of, id_hash, sum};
pub use crate::wire::ext::BucketSum;
use crate::wire::ext::{DigestRepr, IdsRepr};

/// What the session layer needs of the state table for a digest exchange. Buckets are
/// [`bucket_of`] of the id; sums are [`BucketSum::add`] of every id in the bucket.
///
/// `digest` is asked once per peer and period for our own states and once per digest
/// received: an implementation on a large table keeps the sums per creator up to date
/// as states come and go ([`BucketSum::add`] / [`BucketSum::remove`], O(1) each, xor
/// being its own inverse) rather than summing the table each time.
pub trait StateIndex {
    /// The sums of the ids of `creator`'s states held here, `buckets` of them (our own
    /// states when `creator` is our creator id).
    fn digest(&self, creator: u32, buckets: u16) -> Vec<BucketSum>;
    /// The ids of `creator`'s states held here that fall in `bucket`.
    fn ids_in_bucket(&self, creator: u32, buckets: u16, bucket: u16) -> Vec<u64>;
    /// When the state was last received from the link; `None` if never (or long ago).
    fn received_at(&self, creator: u32, id: u64) -> Option<Instant>;
}

/// Digest work waiting for the index.
#[derive(Debug, Clone)]
pub(crate) enum Work {
    /// Send our own digest to `peer`.
    SendDigest { peer: IpAddr },
    /// Compare a run of `peer`'s digest (creator `creator`) with our copy.
    CompareDigest {
        peer: IpAddr,
        creator: u32,
        digest: DigestRepr,
    },
    /// List our ids in these buckets for `peer`.
    AnswerRequest {
        peer: IpAddr,
        round: u32,
        buckets: Vec<u16>,
    },
    /// Compare `peer`'s full list of one bucket with our copy.
    CompareIds {
        peer: IpAddr,
        creator: u32,
        bucket: u16,
        as_of: u64,
        ids: Vec<u64>,
    },
}

/// The parts of the IDS lists of one peer's current round, bucket by bucket.
#[derive(Debug, Clone, Default)]
pub(crate) struct Assembly {
    round: u32,
    buckets: HashMap<u16, Vec<Option<Vec<u64>>>>,
}

impl Assembly {
    /// The round whose lists are being assembled.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// Starts over for `round`: parts of older rounds are dropped.
    pub fn start(&mut self, round: u32) {
        self.round = round;
        self.buckets.clear();
    }

    /// Adds one IDS part; returns the bucket's whole list once every part came. Parts of
    /// another round, or whose part count disagrees, are refused (`false`).
    pub fn add(&mut self, ids: IdsRepr, max_buckets: usize) -> (bool, Option<Vec<u64>>) {
        if ids.round != self.round {
            return (false, None);
        }
        if !self.buckets.contains_key(&ids.bucket) && self.buckets.len() >= max_buckets {
            return (false, None);
        }
        let parts = self
            .buckets
            .entry(ids.bucket)
            .or_insert_with(|| vec![None; usize::from(ids.parts)]);
        if parts.len() != usize::from(ids.parts) {
            return (false, None);
        }
        parts[usize::from(ids.part)] = Some(ids.ids);
        if parts.iter().all(Option::is_some) {
            let parts = self.buckets.remove(&ids.bucket).unwrap_or_default();
            let list = parts.into_iter().flatten().flatten().collect();
            return (true, Some(list));
        }
        (true, None)
    }
}

/// Ids we hold of a creator that it no longer lists (and old enough to forget), and ids
/// it lists that we lack.
pub(crate) fn compare_ids(
    index: &impl StateIndex,
    creator: u32,
    buckets: u16,
    bucket: u16,
    theirs: &[u64],
    young_after: Option<Instant>,
) -> (Vec<u64>, Vec<u64>) {
    let ours: HashSet<u64> = index
        .ids_in_bucket(creator, buckets, bucket)
        .into_iter()
        .collect();
    // An id listed under the wrong bucket is not the creator's answer to our question.
    let theirs_set: HashSet<u64> = theirs
        .iter()
        .copied()
        .filter(|id| bucket_of(*id, buckets) == bucket)
        .collect();
    let mut forget: Vec<u64> = ours
        .iter()
        .filter(|id| !theirs_set.contains(id))
        .filter(|id| match (index.received_at(creator, **id), young_after) {
            (Some(at), Some(young_after)) => at < young_after,
            _ => true,
        })
        .copied()
        .collect();
    let mut need: Vec<u64> = theirs_set
        .iter()
        .filter(|id| !ours.contains(id))
        .copied()
        .collect();
    forget.sort_unstable();
    need.sort_unstable();
    (forget, need)
}
