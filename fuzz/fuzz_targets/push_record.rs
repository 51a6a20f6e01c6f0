//! The bulk sender's copy of cached records into a batch
//! (`pfsyncd::state::compact_record::BatchWriter::push_record`): arbitrary record bytes,
//! aged by arbitrary waits, into batches of arbitrary limits, never a panic. A record
//! that is a state's lone record (`decode_record` reads it) is never refused, and the
//! batch decodes to those states aged by their waits; while every record taken is the
//! one `encode_record` makes of its state, the batch is byte for byte what
//! `BatchWriter::push` makes of the aged states, and it fills at the same record.
//! Bytes that are no lone record are refused with the batch left as it was, or taken
//! (push_record checks a record's structure, not its values: its records come from the
//! sender's own cache); a batch that took one is only checked not to panic.
//!
//! Input: the limit (2 bytes), how many bytes precede the batch in its buffer (1), then
//! records, each: a wait selector (1), the wait (4, little-endian), the record's length
//! (2, little-endian, below 600) and its bytes. Seeds (`fuzz/seeds/push_record`, kept in
//! git where `fuzz/corpus` is not): lone records of `table::synth` states in that form,
//! with waits of each kind, a batch filling at the smallest limit, the default state, a
//! record cut short, a state twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pfsyncd::state::compact_record::{
    decode_batch, decode_record, encode_record, BatchWriter, MAX_RECORD_BYTES,
};
use pfsyncd::state::State;

/// Splits off the first `n` bytes.
fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Some(head)
}

/// `state` as the sender ages it after `waited` seconds in the cache.
fn aged(state: &State, waited: u32) -> State {
    State {
        age_secs: state.age_secs.saturating_add(waited),
        expire_secs: state.expire_secs.saturating_sub(waited),
        ..*state
    }
}

/// One batch being written twice: from the records (`push_record`) and, while every
/// record is canonical, from their aged states (`push`).
struct Batch {
    limit: usize,
    prefix: usize,
    out: Vec<u8>,
    writer: BatchWriter,
    reference: Option<(Vec<u8>, BatchWriter)>,
    /// The aged states taken, in order; `None` once a record no state has was taken.
    states: Option<Vec<State>>,
    taken: usize,
}

impl Batch {
    fn new(limit: usize, prefix: usize) -> Batch {
        let mut out = vec![0xa5; prefix];
        let writer = BatchWriter::new(limit, &mut out).expect("limit above a record");
        let mut reference_out = Vec::new();
        let reference = BatchWriter::new(limit, &mut reference_out).expect("limit");
        Batch {
            limit,
            prefix,
            out,
            writer,
            reference: Some((reference_out, reference)),
            states: Some(Vec::new()),
            taken: 0,
        }
    }

    /// Offers a record; false if the batch is full (true if it took or refused it).
    /// The second: whether the record is the one `encode_record` makes of its state.
    fn offer(&mut self, record: &[u8], waited: u32) -> (bool, bool) {
        let before = self.out.clone();
        let state = decode_record(record).ok();
        let canonical = state.as_ref().is_some_and(|s| {
            let mut again = Vec::new();
            encode_record(s, &mut again);
            again == record
        });
        let taken = match self.writer.push_record(record, waited, &mut self.out) {
            Err(e) => {
                assert!(state.is_none(), "a lone record refused: {e}");
                assert_eq!(self.out, before, "a refused record left bytes");
                return (true, false);
            }
            Ok(taken) => taken,
        };
        if !taken {
            assert_eq!(self.out, before, "a record that did not fit left bytes");
        }
        match (&mut self.reference, &state) {
            (Some((reference_out, reference)), Some(s)) if canonical => {
                assert_eq!(
                    reference.push(&aged(s, waited), reference_out),
                    taken,
                    "push and push_record disagree on what fits"
                );
                assert_eq!(&self.out[self.prefix..], &reference_out[..]);
            }
            _ if taken => self.reference = None,
            _ => {}
        }
        if taken {
            self.taken += 1;
            match (&mut self.states, state) {
                (Some(states), Some(s)) => states.push(aged(&s, waited)),
                _ => self.states = None,
            }
        }
        (taken, canonical)
    }

    /// The batch's bytes decode to the states it took.
    fn check(&self) {
        assert!(self.out.len() - self.prefix <= self.limit, "over the limit");
        assert_eq!(self.writer.len(), self.taken, "states counted");
        let decoded = decode_batch(&self.out[self.prefix..]);
        if let Some(states) = &self.states {
            assert_eq!(decoded.as_ref(), Ok(states), "the batch's states");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut data = data;
    let Some(head) = take(&mut data, 3) else {
        return;
    };
    let limit = 1 + MAX_RECORD_BYTES + usize::from(u16::from_le_bytes([head[0], head[1]])) % 9000;
    let prefix = usize::from(head[2] % 4);
    let mut batch = Batch::new(limit, prefix);
    while let Some(header) = take(&mut data, 7) {
        let waited = match header[0] % 4 {
            0 => 0,
            1 => u32::MAX,
            _ => u32::from_le_bytes([header[1], header[2], header[3], header[4]]),
        };
        let len = usize::from(u16::from_le_bytes([header[5], header[6]])) % 600;
        let Some(record) = take(&mut data, len) else {
            break;
        };
        if !batch.offer(record, waited).0 {
            batch.check();
            batch = Batch::new(limit, prefix);
            // A state's own record always fits an empty batch (a longer spelling of
            // it may not).
            let (taken, canonical) = batch.offer(record, waited);
            assert!(
                taken || !canonical,
                "a state's record does not fit an empty batch"
            );
        }
    }
    batch.check();
});
