//! [`BatchWriter::push_record`] against the state path (`encode_batch`) on what the
//! walk of a bulk meets: one writer restarted batch after batch, and records that are
//! not quite the encoder's.

use proptest::collection::vec;
use proptest::prelude::*;

use super::super::tests::arb_state;
use super::super::{decode_batch, decode_record, encode_batch, encode_record, BatchWriter};
use super::{rest_taken, Layout};
use crate::state::State;
use crate::table::synth::Synth;

fn aged(s: &State, waited: u32) -> State {
    State {
        age_secs: s.age_secs.saturating_add(waited),
        expire_secs: s.expire_secs.saturating_sub(waited),
        ..*s
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// One writer restarted for each batch (as the engine's bulk walk keeps one for a
    /// call's batches) writes what a new writer per batch writes: `encode_batch`'s
    /// batches of the aged states, nothing of a batch carried into the next (names,
    /// the record before). States alike in runs, as a bulk's neighbours are.
    #[test]
    fn a_restarted_writer_writes_each_batch_as_a_new_one(
        states in vec(arb_state(), 1..40),
        runs in vec(0..4usize, 40),
        waited in prop_oneof![Just(0u32), 0..100_000u32, Just(u32::MAX)],
        limit in 513..2000usize,
    ) {
        let mut states = states;
        for i in 1..states.len() {
            if runs[i] > 0 {
                states[i] = State { id: states[i].id, bytes: states[i].bytes, ..states[i - 1] };
            }
        }
        // Behind bytes already in the buffer (a frame's head).
        restarted_writer_is_encode_batch(&states, waited, limit, &[0xee])?;
    }

    /// A record edited anywhere never makes the writer panic; refused, it leaves the
    /// batch as it was; when the record still decodes (`decode_record`), the writer
    /// takes it and the batch reads back as that state, aged.
    #[test]
    fn edited_records_are_refused_or_batched_as_they_decode(
        before in arb_state(),
        state in arb_state(),
        edits in vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<proptest::sample::Index>(),
        cut_it in any::<bool>(),
        waited in 0..1000u32,
    ) {
        let mut out = Vec::new();
        let mut writer = BatchWriter::new(1400, &mut out).unwrap();
        let mut record = Vec::new();
        encode_record(&before, &mut record);
        prop_assert!(writer.push_record(&record, waited, &mut out).unwrap());
        record.clear();
        encode_record(&state, &mut record);
        for (at, byte) in &edits {
            let at = at.index(record.len());
            record[at] = *byte;
        }
        if cut_it {
            record.truncate(cut.index(record.len()));
        }
        let kept = out.clone();
        match writer.push_record(&record, waited, &mut out) {
            Err(_) => {
                prop_assert_eq!(&out, &kept);
                prop_assert!(decode_record(&record).is_err());
            }
            Ok(taken) => {
                prop_assert!(taken);
                if let Ok(edited) = decode_record(&record) {
                    prop_assert_eq!(
                        decode_batch(&out).unwrap(),
                        vec![aged(&before, waited), aged(&edited, waited)]
                    );
                }
            }
        }
    }
}

/// `state` with the counters of a live state (a few bytes each, as a bulk's are) and,
/// when `scrub` is off, peers without scrub data: records that the quick look at a
/// record's counters and peers (`rest_end`) takes, where `arb_state`'s counters of any
/// size mostly send it to the field-by-field scan.
fn live(state: State, scale: u64, scrub: bool) -> State {
    let mut s = state;
    for counter in s.packets.iter_mut().chain(s.bytes.iter_mut()) {
        *counter %= scale;
    }
    if !scrub {
        s.src.scrub = None;
        s.dst.scrub = None;
    }
    s
}

/// The lone record of `s` and where its counters start.
fn record_and_rest(s: &State) -> (Vec<u8>, usize) {
    let mut record = Vec::new();
    encode_record(s, &mut record);
    let mut layout = Layout::default();
    layout.read(&record).expect("a lone record");
    let rest = usize::from(layout.rest);
    (record, rest)
}

/// What the bulk walk meets: every synthetic state's record is taken by the quick
/// look (or the walk pays the field-by-field scan for each), and the widest state's
/// (ten-byte counters, scrubbed peers) by the scan.
#[test]
fn a_bulks_records_take_the_quick_look_and_the_widest_the_scan() {
    for s in Synth::new(5, 9).states(5000) {
        let (record, rest) = record_and_rest(&s);
        assert_eq!(rest_taken(&record, rest), (true, true), "{s:?}");
    }
    let (record, rest) = record_and_rest(&super::super::tests::widest_state());
    assert_eq!(rest_taken(&record, rest), (false, true));
    // A counter of ten bytes whose last holds more than the 64th bit is refused by
    // both; one of ten bytes that fits is taken by the scan.
    let (mut record, rest) = record_and_rest(&Synth::new(5, 9).state());
    for (last, taken) in [(0x02, false), (0x01, true)] {
        record.truncate(rest);
        record.extend_from_slice(&[0xff; 9]);
        // The counter, three more, the byte, two peers holding nothing.
        record.extend_from_slice(&[last, 0, 0, 0, 0, 0, 0]);
        assert_eq!(rest_taken(&record, rest), (false, taken));
    }
}

/// Writes `states`' records with one writer restarted batch after batch, behind
/// `head` in the buffer, and checks the bytes against `encode_batch`'s of the aged
/// states.
fn restarted_writer_is_encode_batch(
    states: &[State],
    waited: u32,
    limit: usize,
    head: &[u8],
) -> Result<(), TestCaseError> {
    let aged: Vec<State> = states.iter().map(|s| aged(s, waited)).collect();
    let mut out = head.to_vec();
    let mut writer = BatchWriter::new(limit, &mut out).unwrap();
    let mut expected = head.to_vec();
    let mut rest = &aged[..];
    let mut record = Vec::new();
    let mut next = 0;
    while !rest.is_empty() {
        let n = encode_batch(rest, limit, &mut expected).unwrap();
        if next > 0 {
            writer.restart(&mut out);
        }
        let mut taken = 0;
        for s in &states[next..] {
            record.clear();
            encode_record(s, &mut record);
            if !writer.push_record(&record, waited, &mut out).unwrap() {
                break;
            }
            taken += 1;
        }
        prop_assert_eq!((taken, writer.len()), (n, n));
        prop_assert_eq!(&out, &expected);
        rest = &rest[n..];
        next += n;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The quick look at a record's counters and peers takes only what the
    /// field-by-field scan takes, whatever the bytes after the record's expiry:
    /// edited, cut short, grown, or none of a record's.
    #[test]
    fn the_quick_look_takes_only_what_the_scan_takes(
        state in arb_state(),
        scale in prop_oneof![Just(1u64 << 7), Just(1u64 << 21), Just(1u64 << 56), Just(u64::MAX)],
        scrub in any::<bool>(),
        edits in vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<proptest::sample::Index>()),
        grown in vec(any::<u8>(), 0..3),
        foreign in proptest::option::of(vec(any::<u8>(), 0..80)),
    ) {
        let (mut record, rest) = record_and_rest(&live(state, scale, scrub));
        prop_assert_eq!(rest_taken(&record, rest).1, true);
        if let Some(foreign) = foreign {
            record.truncate(rest);
            record.extend_from_slice(&foreign);
        }
        for (at, byte) in &edits {
            if record.len() > rest {
                let at = rest + at.index(record.len() - rest);
                record[at] = *byte;
            }
        }
        if let Some(cut) = cut {
            record.truncate(rest + cut.index(record.len() - rest + 1));
        }
        record.extend_from_slice(&grown);
        let (quick, scanned) = rest_taken(&record, rest);
        prop_assert!(!quick || scanned, "the quick look took what the scan refuses");
    }

    /// Records of live states (the quick look's, in runs of alike neighbours as a
    /// bulk's are, the odd one with scrub data or counters of any size) written by one
    /// writer restarted batch after batch are `encode_batch`'s batches of the aged
    /// states.
    #[test]
    fn a_restarted_writer_on_live_records_writes_encode_batchs_batches(
        states in vec((arb_state(), 0..8u8), 1..60),
        waited in prop_oneof![Just(0u32), 0..100_000u32, Just(u32::MAX)],
        limit in 513..3000usize,
    ) {
        let mut live_states: Vec<State> = Vec::new();
        for (s, kind) in states {
            let s = match kind {
                0 => s,
                1 => live(s, 1 << 40, true),
                _ => live(s, 1 << 20, false),
            };
            let s = match live_states.last() {
                // Alike neighbours: the groups of the one before.
                Some(before) if kind >= 4 => State {
                    id: s.id,
                    wire: s.wire,
                    stack: s.wire,
                    src: s.src,
                    dst: s.dst,
                    packets: s.packets,
                    bytes: s.bytes,
                    ..*before
                },
                _ => s,
            };
            live_states.push(s);
        }
        restarted_writer_is_encode_batch(&live_states, waited, limit, &[])?;
    }
}
