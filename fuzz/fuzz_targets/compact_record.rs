//! Compact state records from a peer (`pfsyncd::state::compact_record`): arbitrary bytes
//! decode to states or to an error, never a panic; whatever decodes encodes again to a
//! batch that decodes to the same states.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfsyncd::state::compact_record::{decode_batch, encode_batch};

fuzz_target!(|data: &[u8]| {
    let Ok(states) = decode_batch(data) else {
        return;
    };
    let mut again = Vec::new();
    let n = encode_batch(&states, usize::MAX, &mut again).expect("no limit");
    assert_eq!(n, states.len());
    assert_eq!(decode_batch(&again).expect("our own batch"), states);
});
