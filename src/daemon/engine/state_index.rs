//! The engine's cache as the sessions' [`StateIndex`]: what a digest exchange reads.
//!
//! SLOW VERSION, to be replaced: `digest` walks the whole cache (O(states)) once per
//! peer and digest period for our own digest and once per creator per batch of digests
//! received. The engine is to keep the sums per creator up to date as states come and
//! go (`src/engine/digest.rs`, branch i1x-digest); then `digest` reads those and this
//! file shrinks to the forwarding. `ids_in_bucket` walks the cache once per creator and
//! batch of work (the lists of every bucket are kept for the batch), not once per
//! bucket asked.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use crate::engine::Engine;
use crate::session::{bucket_of, sum, BucketSum, StateIndex};

/// The ids of each bucket, bucket by bucket.
type BucketLists = Vec<Vec<u64>>;

/// The engine, read for one batch of digest work (`Sessions::digest_work`).
pub(super) struct EngineIndex<'e> {
    engine: &'e Engine,
    /// Per (creator, bucket count): the ids of each bucket, made at the first ask.
    buckets: RefCell<HashMap<(u32, u16), BucketLists>>,
}

impl<'e> EngineIndex<'e> {
    pub(super) fn new(engine: &'e Engine) -> EngineIndex<'e> {
        EngineIndex {
            engine,
            buckets: RefCell::new(HashMap::new()),
        }
    }
}

impl StateIndex for EngineIndex<'_> {
    fn digest(&self, creator: u32, buckets: u16) -> Vec<BucketSum> {
        sum(self.engine.synced_ids(creator), buckets)
    }

    fn ids_in_bucket(&self, creator: u32, buckets: u16, bucket: u16) -> Vec<u64> {
        let mut memo = self.buckets.borrow_mut();
        let lists = memo.entry((creator, buckets)).or_insert_with(|| {
            let mut lists = vec![Vec::new(); usize::from(buckets.max(1))];
            for id in self.engine.synced_ids(creator) {
                lists[usize::from(bucket_of(id, buckets))].push(id);
            }
            lists
        });
        lists.get(usize::from(bucket)).cloned().unwrap_or_default()
    }

    fn received_at(&self, creator: u32, id: u64) -> Option<Instant> {
        self.engine.peer_updated_at(creator, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Config, LocalChange};
    use crate::table::synth::Synth;
    use crate::wire::Dialect;

    #[test]
    fn the_index_lists_and_sums_the_synced_states_of_a_creator() {
        let now = Instant::now();
        let mut engine = Engine::new(Config::new(7, Dialect::OpenBsd));
        let mut synth = Synth::new(1, 7);
        let states: Vec<_> = (0..300).map(|_| synth.state()).collect();
        for s in &states {
            engine.handle_local(now, LocalChange::Insert(*s));
        }
        let index = EngineIndex::new(&engine);
        let ids: Vec<u64> = states.iter().map(|s| s.id).collect();
        assert_eq!(index.digest(7, 16), sum(ids.iter().copied(), 16));
        let mut listed: Vec<u64> = (0..16)
            .flat_map(|b| index.ids_in_bucket(7, 16, b))
            .collect();
        listed.sort_unstable();
        let mut want = ids.clone();
        want.sort_unstable();
        assert_eq!(listed, want);
        for b in 0..16 {
            assert!(index
                .ids_in_bucket(7, 16, b)
                .iter()
                .all(|id| bucket_of(*id, 16) == b));
        }
        assert!(index.ids_in_bucket(8, 16, 0).is_empty());
        assert_eq!(
            index.received_at(7, ids[0]),
            None,
            "our own, never received"
        );
    }
}
