//! [`BatchWriter::push_record`] against the state path (`encode_batch`) on what the
//! walk of a bulk meets: one writer restarted batch after batch, and records that are
//! not quite the encoder's.

use proptest::collection::vec;
use proptest::prelude::*;

use super::super::tests::arb_state;
use super::super::{decode_batch, decode_record, encode_batch, encode_record, BatchWriter};
use crate::state::State;

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
        let aged: Vec<State> = states.iter().map(|s| aged(s, waited)).collect();
        let mut out = vec![0xee];
        let mut writer = BatchWriter::new(limit, &mut out).unwrap();
        let mut expected = vec![0xee];
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
