//! Anti-entropy between a creator and the peers holding copies of its states.
//!
//! Each node sends its own DIGEST (its states, creator = itself) to every peer once a
//! period. A receiver compares it with the same sums over its copies of that creator's
//! states and asks (DIGEST_REQ) for the buckets that differ; the creator lists each
//! (IDS: id and version of each state); the receiver forgets what the creator no longer
//! has ([`Event::ForgetStates`], never an id received less than `forget_min_age` ago,
//! whose announcement may have overtaken the list) and asks (NEED) for what it lacks or
//! holds at another version, which the creator announces ([`Event::AnnounceStates`]:
//! full updates of those ids).
//!
//! A version is a hash of what two copies agree on once synced (the engine's
//! `state_version`). A copy at another version is either stale (an update lost for
//! good: the announcement replaces it) or newer than the creator's (traffic through
//! the peer, a split state): then the receiver's merge finds the announcement stale
//! and answers with its own copy at once, as the kernels do; the creator merges it,
//! both copies hold the newer side of each, and the next digests agree. Each NEED is
//! answered by one announcement and at most one answer to it, so the exchange ends.
//!
//! The session layer runs the exchange; the states stay with the engine, reached through
//! [`StateIndex`]. Work that needs the index is queued by `handle_frame` and
//! `handle_timeout` and done in `Sessions::digest_work`, announced by
//! [`Event::DigestWork`].
//!
//! [`Event::ForgetStates`]: super::Event::ForgetStates
//! [`Event::AnnounceStates`]: super::Event::AnnounceStates
//! [`Event::DigestWork`]: super::Event::DigestWork

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

pub use crate::wire::ext::digest::{bucket_of, entry_hash, id_hash, sum};
pub use crate::wire::ext::{BucketSum, Listed};
use crate::wire::ext::{DigestRepr, IdsRepr};

/// What the session layer needs of the state table for a digest exchange. Buckets are
/// [`bucket_of`] of the id; sums are [`BucketSum::add`] of every state (id and
/// version) in the bucket.
///
/// `digest` is asked once per peer and period for our own states and once per digest
/// received: an implementation on a large table keeps the sums per creator up to date
/// as states come, change and go ([`BucketSum::add`], [`BucketSum::change`],
/// [`BucketSum::remove`], O(1) each, xor being its own inverse) rather than summing the
/// table each time.
pub trait StateIndex {
    /// The sums of `creator`'s states held here, `buckets` of them (our own states when
    /// `creator` is our creator id).
    fn digest(&self, creator: u32, buckets: u16) -> Vec<BucketSum>;
    /// The ids and versions of `creator`'s states held here that fall in `bucket`.
    fn ids_in_bucket(&self, creator: u32, buckets: u16, bucket: u16) -> Vec<Listed>;
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
        ids: Vec<Listed>,
    },
}

/// The parts of the IDS lists of one peer's current round, bucket by bucket.
#[derive(Debug, Clone, Default)]
pub(crate) struct Assembly {
    round: u32,
    buckets: HashMap<u16, Vec<Option<Vec<Listed>>>>,
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
    pub fn add(&mut self, ids: IdsRepr, max_buckets: usize) -> (bool, Option<Vec<Listed>>) {
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
/// it lists that we lack or hold at another version.
pub(crate) fn compare_ids(
    index: &impl StateIndex,
    creator: u32,
    buckets: u16,
    bucket: u16,
    theirs: &[Listed],
    young_after: Option<Instant>,
) -> (Vec<u64>, Vec<u64>) {
    let ours: HashMap<u64, u32> = index
        .ids_in_bucket(creator, buckets, bucket)
        .into_iter()
        .map(|l| (l.id, l.version))
        .collect();
    // An id listed under the wrong bucket is not the creator's answer to our question.
    let theirs: HashMap<u64, u32> = theirs
        .iter()
        .filter(|l| bucket_of(l.id, buckets) == bucket)
        .map(|l| (l.id, l.version))
        .collect();
    let mut forget: Vec<u64> = ours
        .keys()
        .filter(|id| !theirs.contains_key(id))
        .filter(|id| match (index.received_at(creator, **id), young_after) {
            (Some(at), Some(young_after)) => at < young_after,
            _ => true,
        })
        .copied()
        .collect();
    let mut need: Vec<u64> = theirs
        .iter()
        .filter(|(id, version)| ours.get(id) != Some(version))
        .map(|(id, _)| *id)
        .collect();
    forget.sort_unstable();
    need.sort_unstable();
    (forget, need)
}
