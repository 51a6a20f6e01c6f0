//! Feeds arbitrary bytes to the pfsyncd extension frame parser: every frame it accepts
//! emits back to exactly the bytes it came from (every length is checked on the way in);
//! an IDS frame is its head and exactly 12 bytes (id, version) per listed state, a
//! RESYNC frame exactly 20 bytes, a BULK_SIZE frame exactly 24; a DATA frame's compact record batch decodes or is
//! refused, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfsyncd::state::compact_record;
use pfsyncd::wire::ext::{ids, Body, Content, FrameRepr, MAX_IDS_PER_FRAME};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = FrameRepr::parse(data) {
        assert_eq!(frame.to_vec(), data, "emit(parse(x)) != x");
        match &frame.body {
            Body::Ids(list) => {
                assert!(list.ids.len() <= MAX_IDS_PER_FRAME);
                assert_eq!(data.len(), 16 + ids::SIZE + ids::RECORD * list.ids.len());
            }
            Body::Resync => assert_eq!(data.len(), 20),
            Body::BulkSize(_) => assert_eq!(data.len(), 24),
            _ => {}
        }
        if let Body::Data(d) = &frame.body {
            if let Content::CompactBatch { batch, .. } = d.content() {
                if let Ok(states) = compact_record::decode_batch(batch) {
                    // What decodes encodes back to a batch that decodes the same.
                    let mut again = Vec::new();
                    let limit = batch.len().max(1 + compact_record::MAX_RECORD_BYTES) * 2;
                    if compact_record::encode_batch(&states, limit, &mut again)
                        == Ok(states.len())
                    {
                        assert_eq!(compact_record::decode_batch(&again).as_ref(), Ok(&states));
                    }
                }
            }
        }
    }
});
