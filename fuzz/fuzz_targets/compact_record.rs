//! Compact state records from a peer (`pfsyncd::state::compact_record`): arbitrary bytes
//! decode to states or to an error, never a panic; whatever decodes encodes again to a
//! batch that decodes to the same states. The engine's decode (`decode_batch_lone`)
//! gives the same states or the same error, and each state's lone record as the
//! encoder makes it (`encode_record`) of the state as the import leaves it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfsyncd::state::compact_record::{
    decode_batch, decode_batch_lone, encode_batch, encode_record, ImportChanges, LoneRecords,
};

fuzz_target!(|data: &[u8]| {
    let decoded = decode_batch(data);
    for unbind_rules in [false, true] {
        let changes = ImportChanges { unbind_rules };
        let mut states = Vec::new();
        let mut lone = LoneRecords::default();
        match decode_batch_lone(data, &mut states, &mut lone, changes) {
            Err(e) => assert_eq!(decoded.as_ref(), Err(&e)),
            Ok(()) => {
                assert_eq!(decoded.as_ref(), Ok(&states));
                for (i, s) in states.iter().enumerate() {
                    let mut changed = *s;
                    changes.apply(&mut changed);
                    let mut record = Vec::new();
                    encode_record(&changed, &mut record);
                    assert_eq!(lone.get(i), Some(&record[..]));
                }
            }
        }
    }
    let Ok(states) = decoded else {
        return;
    };
    let mut again = Vec::new();
    let n = encode_batch(&states, usize::MAX, &mut again).expect("no limit");
    assert_eq!(n, states.len());
    assert_eq!(decode_batch(&again).expect("our own batch"), states);
});
