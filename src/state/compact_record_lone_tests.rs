//! [`decode_batch_lone`]'s lone records are [`encode_record`]'s bytes of the decoded
//! states as [`ImportChanges`] leave them: on batches the encoder wrote, on bytes it
//! would not write (padded varints, redundant bits, protocol numbers spelt out), and
//! on edited bytes.

use proptest::collection::vec;
use proptest::prelude::*;

use super::tests::arb_state;
use super::*;
use crate::table::synth::Synth;

/// The lone records [`decode_batch_lone`] makes of `batch` under `changes`, checked
/// against the encoder's of the decoded states; the states, which must be
/// [`decode_batch`]'s.
fn checked_lone(batch: &[u8], changes: ImportChanges) -> Result<Vec<State>, CompactRecordError> {
    let mut states = Vec::new();
    let mut lone = LoneRecords::default();
    let got = decode_batch_lone(batch, &mut states, &mut lone, changes);
    let expected = decode_batch(batch);
    match got {
        Err(e) => {
            assert_eq!(expected, Err(e.clone()));
            Err(e)
        }
        Ok(()) => {
            assert_eq!(expected.as_ref(), Ok(&states));
            assert_eq!(lone.len(), states.len());
            for (i, s) in states.iter().enumerate() {
                let mut changed = *s;
                changes.apply(&mut changed);
                let mut record = Vec::new();
                encode_record(&changed, &mut record);
                assert_eq!(lone.get(i), Some(&record[..]), "state {i}: {changed:?}");
                assert!(record.len() <= MAX_RECORD_BYTES);
            }
            Ok(states)
        }
    }
}

fn every_change() -> [ImportChanges; 2] {
    [
        ImportChanges {
            unbind_rules: false,
        },
        ImportChanges { unbind_rules: true },
    ]
}

#[test]
fn a_synthetic_bulks_lone_records_are_the_encoders() {
    let mut synth = Synth::new(3, 0x0a0b_0c0d);
    let mut states: Vec<State> = (0..3000).map(|_| synth.state()).collect();
    // Some ask for an INS_ACK, some carry every rule number.
    for (i, s) in states.iter_mut().enumerate() {
        if i % 7 == 0 {
            s.state_flags.insert(StateFlags::ACK);
        }
        if i % 5 == 0 {
            (s.rule, s.anchor, s.nat_rule) = (Some(3), Some(4), Some(5));
        }
    }
    let mut rest = &states[..];
    while !rest.is_empty() {
        let mut batch = Vec::new();
        let n = encode_batch(rest, 1500 - 44, &mut batch).unwrap();
        for changes in every_change() {
            assert_eq!(checked_lone(&batch, changes).unwrap(), &rest[..n]);
        }
        rest = &rest[n..];
    }
}

/// One record of the default state's shape (IPv4, mask `mask`, `groups` after the id),
/// its tail written by hand: the parts given as raw bytes.
struct Handmade {
    mask: Vec<u8>,
    groups: Vec<u8>,
    addrs: Vec<u8>,
    age: Vec<u8>,
    counters: Vec<u8>,
    peers: Vec<u8>,
}

impl Handmade {
    fn plain() -> Handmade {
        Handmade {
            mask: vec![0],
            groups: Vec::new(),
            addrs: vec![10, 0, 0, 1, 10, 0, 0, 2],
            age: vec![5],
            counters: vec![1, 2, 3, 4],
            // Both peers' states 0; src with seqlo, dst empty.
            peers: vec![0x00, PEER_SEQLO, 1, 2, 3, 4, 0],
        }
    }

    fn batch(&self) -> Vec<u8> {
        let mut b = vec![VERSION];
        b.extend_from_slice(&self.mask);
        b.push(2); // id 1
        b.extend_from_slice(&self.groups);
        b.extend_from_slice(&self.addrs);
        b.extend_from_slice(&[0x50, 0, 0x35, 0]);
        b.extend_from_slice(&self.age);
        b.push(9); // expire
        b.extend_from_slice(&self.counters);
        b.extend_from_slice(&self.peers);
        b
    }
}

#[test]
fn bytes_the_encoder_would_not_write_still_give_its_lone_record() {
    let plain = Handmade::plain();
    let cases: Vec<(&str, Handmade)> = vec![
        ("plain", Handmade::plain()),
        (
            "padded age",
            Handmade {
                age: vec![0x85, 0x00],
                ..Handmade::plain()
            },
        ),
        (
            "padded counter",
            Handmade {
                counters: vec![0x81, 0x80, 0x00, 2, 3, 4],
                ..Handmade::plain()
            },
        ),
        (
            "seqlo bit with seqlo 0",
            Handmade {
                peers: vec![0x00, PEER_SEQLO, 0, 0, 0, 0, 0],
                ..Handmade::plain()
            },
        ),
        (
            "max_win sent equal to the window",
            Handmade {
                peers: vec![0x00, PEER_WINDOW | PEER_MAX_WIN, 100, 100, 0],
                ..Handmade::plain()
            },
        ),
        (
            "padded window",
            Handmade {
                peers: vec![0x00, PEER_WINDOW, 0xe4, 0x00, 0],
                ..Handmade::plain()
            },
        ),
        (
            "mixed families of one family",
            Handmade {
                mask: vec![MIXED_FAMILIES as u8 | 0x80, (MIXED_FAMILIES >> 7) as u8],
                addrs: vec![4, 10, 0, 0, 1, 4, 10, 0, 0, 2],
                ..Handmade::plain()
            },
        ),
        (
            "mixed families, really",
            Handmade {
                mask: vec![MIXED_FAMILIES as u8 | 0x80, (MIXED_FAMILIES >> 7) as u8],
                addrs: [&[4, 10, 0, 0, 1, 6][..], &[0x20, 1, 0x0d, 0xb8], &[0; 12]].concat(),
                ..Handmade::plain()
            },
        ),
        (
            "TCP spelt as protocol number 6",
            Handmade {
                mask: vec![SHAPE as u8],
                groups: vec![7 << 3, 6, 0],
                ..Handmade::plain()
            },
        ),
        (
            "stack port equal to the wire's",
            Handmade {
                mask: vec![STACK as u8],
                groups: vec![STACK_PORT0, 0x50, 0],
                ..Handmade::plain()
            },
        ),
        (
            "stack port of its own",
            Handmade {
                mask: vec![STACK as u8],
                groups: vec![STACK_PORT0, 0x51, 0],
                ..Handmade::plain()
            },
        ),
        (
            "padded mask and an empty name group",
            Handmade {
                mask: vec![0x81, 0x00],
                groups: vec![0],
                ..Handmade::plain()
            },
        ),
        (
            "ACK flag and rule numbers",
            Handmade {
                mask: vec![(RULE | FLAGS) as u8],
                groups: vec![8, 0, 0, StateFlags::ACK.bits() as u8],
                ..Handmade::plain()
            },
        ),
    ];
    for (what, case) in cases {
        let batch = case.batch();
        assert!(decode_batch(&batch).is_ok(), "{what}: the case must decode");
        for changes in every_change() {
            checked_lone(&batch, changes).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        // Twice in a batch: the second record inherits what the first set.
        let twice = [&batch[..], &batch[1..]].concat();
        for changes in every_change() {
            checked_lone(&twice, changes).unwrap_or_else(|e| panic!("{what} twice: {e}"));
        }
    }
    // The plain case's lone record is its tail copied: as long as the batch record.
    let mut states = Vec::new();
    let mut lone = LoneRecords::default();
    decode_batch_lone(
        &plain.batch(),
        &mut states,
        &mut lone,
        ImportChanges::default(),
    )
    .unwrap();
    assert_eq!(lone.get(0).unwrap().len(), plain.batch().len() - 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_batchs_lone_records_are_the_encoders(
        states in vec(arb_state(), 1..16),
        alike in vec(0..4u8, 16),
        acks in vec(any::<bool>(), 16),
        unbind_rules in any::<bool>(),
    ) {
        // Neighbours alike in most groups, as a bulk's are, and unlike; alike but for
        // the stack key (its own, or the wire key), so that the stack group comes and
        // goes while the groups after it stay.
        let mut states = states;
        for i in 1..states.len() {
            let before = states[i - 1];
            let stack = match alike[i] {
                2 => states[i].stack,
                3 => before.wire,
                _ => before.stack,
            };
            if alike[i] > 0 {
                states[i] = State { id: states[i].id, packets: states[i].packets, stack, ..before };
            }
        }
        for i in 0..states.len() {
            if acks[i] {
                states[i].state_flags.insert(StateFlags::ACK);
            }
        }
        let mut batch = Vec::new();
        let n = encode_batch(&states, usize::MAX, &mut batch).unwrap();
        prop_assert_eq!(n, states.len());
        let decoded = checked_lone(&batch, ImportChanges { unbind_rules }).unwrap();
        prop_assert_eq!(decoded, states);
    }

    #[test]
    fn edited_batchs_lone_records_are_the_encoders_or_the_same_error(
        states in vec(arb_state(), 1..6),
        edits in vec((any::<proptest::sample::Index>(), any::<u8>()), 1..6),
        unbind_rules in any::<bool>(),
    ) {
        let mut batch = Vec::new();
        encode_batch(&states, usize::MAX, &mut batch).unwrap();
        for (at, byte) in edits {
            let i = at.index(batch.len() - 1) + 1;
            batch[i] = byte;
        }
        let _ = checked_lone(&batch, ImportChanges { unbind_rules });
    }

    #[test]
    fn arbitrary_bytes_lone_records_are_the_encoders_or_the_same_error(
        bytes in vec(any::<u8>(), 1..400),
    ) {
        let mut bytes = bytes;
        bytes[0] = VERSION;
        let _ = checked_lone(&bytes, ImportChanges::default());
    }
}
