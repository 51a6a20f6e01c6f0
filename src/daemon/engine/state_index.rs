//! The engine's cache as the sessions' [`StateIndex`]: what a digest exchange reads.
//!
//! SLOW VERSION, to be replaced: every call walks the whole cache (O(states)), once
//! per peer and digest period for our own digest and once per digest received. The
//! engine is to keep the sums per creator up to date as states come and go
//! (`src/engine/digest.rs`, branch i1x-digest); then `digest` reads those and this
//! file shrinks to the forwarding.

use std::time::Instant;

use crate::engine::Engine;
use crate::session::{bucket_of, sum, BucketSum, StateIndex};

/// The engine, read for a digest exchange.
pub(super) struct EngineIndex<'e>(pub(super) &'e Engine);

impl StateIndex for EngineIndex<'_> {
    fn digest(&self, creator: u32, buckets: u16) -> Vec<BucketSum> {
        sum(self.0.synced_ids(creator), buckets)
    }

    fn ids_in_bucket(&self, creator: u32, buckets: u16, bucket: u16) -> Vec<u64> {
        self.0
            .synced_ids(creator)
            .filter(|id| bucket_of(*id, buckets) == bucket)
            .collect()
    }

    fn received_at(&self, creator: u32, id: u64) -> Option<Instant> {
        self.0.peer_updated_at(creator, id)
    }
}
