use proptest::collection::vec;
use proptest::prelude::*;

use super::super::tests::{arb_state, widest_state};
use super::super::{decode_record, encode_record};
use super::*;
use crate::table::synth::Synth;

fn record(s: &State) -> Vec<u8> {
    let mut out = Vec::new();
    encode_record(s, &mut out);
    out
}

/// What the full decoder says of `bytes`, cut down to what the peek keeps.
fn decoded(bytes: &[u8]) -> Result<PeekedState, CompactRecordError> {
    decode_record(bytes).map(|s| PeekedState::of(&s))
}

/// What the reader's walk says of `bytes` (`peek_record` without its fast walk).
fn read_slowly(bytes: &[u8]) -> Result<PeekedState, CompactRecordError> {
    let mut r = Reader {
        bytes,
        at: 0,
        names: Vec::new(),
        remember_names: false,
        odd_varint: false,
    };
    let peeked = r.peek()?;
    if r.at != bytes.len() {
        return Err(r.invalid("trailing bytes"));
    }
    Ok(peeked)
}

/// The three walks give the same answer for `bytes`: the same fields, or the same error
/// (the fast one, none).
fn agree(bytes: &[u8]) -> Result<PeekedState, CompactRecordError> {
    let peeked = peek_record(bytes);
    assert_eq!(peeked, decoded(bytes), "{bytes:02x?}");
    assert_eq!(read_slowly(bytes), peeked, "{bytes:02x?}");
    assert_eq!(peek_fast(bytes), peeked.clone().ok(), "{bytes:02x?}");
    peeked
}

/// Every one-byte change of `good`, to every value, and every cut of it.
fn every_edit_and_cut_agrees(good: &[u8]) -> (usize, usize) {
    let (mut refused, mut taken) = (0, 0);
    let mut bytes = good.to_vec();
    for at in 0..good.len() {
        for value in 0..=255u8 {
            bytes[at] = value;
            match agree(&bytes) {
                Ok(_) => taken += 1,
                Err(_) => refused += 1,
            }
        }
        bytes[at] = good[at];
    }
    for cut in 0..good.len() {
        assert!(agree(&good[..cut]).is_err(), "cut at {cut}");
    }
    (refused, taken)
}

#[test]
fn synthetic_states_peek_as_they_decode() {
    let mut synth = Synth::new(11, 0x0102_0304);
    for _ in 0..2000 {
        let s = synth.state();
        assert_eq!(agree(&record(&s)), Ok(PeekedState::of(&s)));
        // Taken by the fast walk, not the reader's.
        assert_eq!(peek_fast(&record(&s)), Some(PeekedState::of(&s)));
    }
}

#[test]
fn every_edit_of_a_synthetic_record_is_judged_alike() {
    let mut synth = Synth::new(5, 9);
    for _ in 0..8 {
        let (refused, taken) = every_edit_and_cut_agrees(&record(&synth.state()));
        // The edits reach both answers (the comparison is not of errors only).
        assert!(refused > 0 && taken > 0, "{refused} refused, {taken} taken");
    }
}

#[test]
fn every_edit_of_the_widest_record_is_judged_alike() {
    // Every group of the layout, mixed families, scrub, routes and names.
    let (refused, taken) = every_edit_and_cut_agrees(&record(&widest_state()));
    assert!(refused > 0 && taken > 0, "{refused} refused, {taken} taken");
}

#[test]
fn malformed_records_are_refused_with_the_decoders_error() {
    // The refusals of compact_record's and compact's tests, on a lone record.
    assert_eq!(agree(&[]), Err(CompactRecordError::Truncated { offset: 0 }));
    assert!(matches!(
        agree(&[0x80, 0x40]),
        Err(CompactRecordError::Invalid { field: "mask", .. })
    ));
    // A dictionary index: a lone record has no dictionary.
    assert!(matches!(
        agree(&[1, 2, 0x85]),
        Err(CompactRecordError::Invalid {
            field: "ifname",
            ..
        })
    ));
    // A name longer than its field; one ending in NUL (the encoder never writes one).
    assert!(matches!(
        agree(&[1, 2, 17]),
        Err(CompactRecordError::Invalid {
            field: "ifname",
            ..
        })
    ));
    assert!(matches!(
        agree(&[1, 2, 2, b'e', 0]),
        Err(CompactRecordError::Invalid {
            field: "ifname",
            ..
        })
    ));
    // Trailing bytes after a whole record.
    let mut good = record(&Synth::new(3, 3).state());
    good.push(0);
    assert!(matches!(
        agree(&good),
        Err(CompactRecordError::Invalid {
            field: "trailing bytes",
            ..
        })
    ));
    // A varint of more than ten bytes, and one whose tenth byte overflows.
    let mut long = vec![0x80; 11];
    long.insert(0, 0);
    assert!(agree(&long).is_err());
    let mut over = vec![
        0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
    ];
    over.extend([0; 20]);
    assert!(matches!(
        agree(&over),
        Err(CompactRecordError::Invalid { field: "id", .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_state_peeks_as_it_decodes(s in arb_state()) {
        prop_assert_eq!(peek_record(&record(&s)), Ok(PeekedState::of(&s)));
        prop_assert_eq!(peek_fast(&record(&s)), Some(PeekedState::of(&s)));
    }

    #[test]
    fn cut_and_edited_records_are_judged_alike(
        s in arb_state(),
        edits in vec((any::<proptest::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<proptest::sample::Index>(),
    ) {
        let mut bytes = record(&s);
        for (at, byte) in edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let _ = agree(&bytes);
        let _ = agree(&bytes[..cut.index(bytes.len())]);
    }

    #[test]
    fn arbitrary_bytes_are_judged_alike(bytes in vec(any::<u8>(), 0..400)) {
        let _ = agree(&bytes);
    }
}
