//! Feeds arbitrary bytes to the pfsyncd extension frame parser: every frame it accepts
//! emits back to exactly the bytes it came from (every length is checked on the way in).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfsyncd::wire::ext::FrameRepr;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = FrameRepr::parse(data) {
        assert_eq!(frame.to_vec(), data, "emit(parse(x)) != x");
    }
});
