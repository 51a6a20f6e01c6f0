//! Change detection two ways must agree: the memory table's exact reports, and the
//! snapshot diff the pf backend will use, run over listings of the same table.
//!
//! A random mix of local operations (traffic), the engine's operations and passing time
//! runs on a memory table. Two replicas follow it as the engine would: each applies the
//! engine's operations itself (it made them) and the changes its detector reports. Both
//! must end equal to the table (names and fingerprints of the syncable states) at every
//! poll; the diff replica registers the engine's operations as expected echoes, as the
//! pf backend will.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use pfsyncd::engine::{LocalChange, TableOp};
use pfsyncd::state::{State, StateFlags};
use pfsyncd::table::diff::{fingerprint, Differ};
use pfsyncd::table::synth::Synth;
use pfsyncd::table::{key_of, syncable, Key, MemoryConfig, MemoryTable, StateTable};
use pfsyncd::wire::IfName;

const US: u32 = 0xaaaa_0001;
const PEER: u32 = 0xbbbb_0002;
const IFNAMES: [&str; 5] = ["em0", "em1", "vtnet0", "all", ""];

#[derive(Debug, Clone)]
enum Op {
    LocalInsert { nosync: bool },
    LocalUpdate(usize),
    LocalDelete(usize),
    LocalClear(usize),
    Import,
    EngineUpdate(usize),
    EngineRemove(usize),
    EngineClear { ours: bool, ifname: usize },
    Wait(u64),
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::LocalInsert { nosync: false }),
        1 => Just(Op::LocalInsert { nosync: true }),
        4 => any::<usize>().prop_map(Op::LocalUpdate),
        2 => any::<usize>().prop_map(Op::LocalDelete),
        1 => (0..IFNAMES.len()).prop_map(Op::LocalClear),
        4 => Just(Op::Import),
        3 => any::<usize>().prop_map(Op::EngineUpdate),
        2 => any::<usize>().prop_map(Op::EngineRemove),
        1 => (any::<bool>(), 0..IFNAMES.len())
            .prop_map(|(ours, ifname)| Op::EngineClear { ours, ifname }),
        2 => (0u64..120).prop_map(Op::Wait),
        3 => Just(Op::Poll),
    ]
}

/// What a replica knows of a state: fingerprint and interface.
type Replica = HashMap<Key, (u64, IfName)>;

fn ifname(i: usize) -> IfName {
    IfName::new(IFNAMES[i]).unwrap()
}

fn note(replica: &mut Replica, s: &State) {
    if syncable(s) {
        replica.insert(key_of(s), (fingerprint(s), s.ifname));
    } else {
        replica.remove(&key_of(s));
    }
}

/// Applies an engine operation to a replica (the engine knows what it did).
fn apply_op(replica: &mut Replica, op: &TableOp, done: bool) {
    if !done {
        return;
    }
    match op {
        TableOp::Import(s) | TableOp::Update(s) => note(replica, s),
        TableOp::Delete { creatorid, id } => {
            replica.remove(&(*creatorid, *id));
        }
        TableOp::Clear { creatorid, ifname } => {
            replica.retain(|k, (_, i)| !(k.0 == *creatorid && (ifname.is_empty() || i == ifname)))
        }
    }
}

/// Applies reported changes to a replica.
fn apply_changes(replica: &mut Replica, changes: &[LocalChange]) {
    for c in changes {
        match c {
            LocalChange::Insert(s) | LocalChange::Update(s) => note(replica, s),
            LocalChange::Delete { creatorid, id } => {
                replica.remove(&(*creatorid, *id));
            }
            LocalChange::Clear { ifname } => {
                replica.retain(|_, (_, i)| !(ifname.is_empty() || i == ifname))
            }
        }
    }
}

/// The `i`th state a replica knows of, in name order.
fn known(replica: &Replica, i: usize) -> Option<Key> {
    let mut keys: Vec<Key> = replica.keys().copied().collect();
    keys.sort_unstable();
    keys.get(i % keys.len().max(1)).copied()
}

fn truth(t: &mut MemoryTable, now: Instant) -> Replica {
    let mut r = Replica::new();
    for s in t.states(now).unwrap() {
        note(&mut r, &s);
    }
    r
}

fn run(ops: &[Op], seed: u64) -> Result<(), TestCaseError> {
    let t0 = Instant::now();
    let mut now = t0;
    let mut t = MemoryTable::new(MemoryConfig::new(US));
    let mut local = Synth::new(seed, 0);
    let mut peer = Synth::new(seed ^ 0x55, PEER);
    let mut exact = Replica::new();
    let mut by_diff = Replica::new();
    let mut differ = Differ::new();
    let mut changes = Vec::new();
    let pick = |t: &mut MemoryTable, now: Instant, i: usize| -> Option<State> {
        let mut keys: Vec<Key> = Vec::new();
        t.for_each_state(now, &mut |s| keys.push(key_of(s)))
            .unwrap();
        keys.sort();
        let key = *keys.get(i % keys.len().max(1))?;
        t.get(now, key.0, key.1).unwrap()
    };
    for op in ops.iter().chain([&Op::Poll]) {
        let engine_op = match op {
            Op::LocalInsert { nosync } => {
                let mut s = local.state();
                s.ifname = ifname(local.below(4) as usize);
                if *nosync {
                    s.state_flags.insert(StateFlags::NOSYNC);
                }
                t.insert_local(now, s).unwrap();
                None
            }
            Op::LocalUpdate(i) => {
                if let Some(s) = pick(&mut t, now, *i) {
                    t.update_local(now, s.creatorid, s.id, |s| local.advance(s))
                        .unwrap();
                }
                None
            }
            Op::LocalDelete(i) => {
                if let Some(s) = pick(&mut t, now, *i) {
                    assert!(t.delete_local(s.creatorid, s.id));
                }
                None
            }
            Op::LocalClear(i) => {
                t.clear_local(&ifname(*i));
                None
            }
            Op::Import => {
                let mut s = peer.state();
                s.ifname = ifname(peer.below(4) as usize);
                Some(TableOp::Import(s))
            }
            // The engine works on the states it knows of.
            Op::EngineUpdate(i) => known(&exact, *i)
                .and_then(|k| t.get_any(now, k.0, k.1))
                .map(|mut s| {
                    peer.advance(&mut s);
                    TableOp::Update(s)
                }),
            Op::EngineRemove(i) => known(&exact, *i).map(|k| TableOp::Delete {
                creatorid: k.0,
                id: k.1,
            }),
            Op::EngineClear { ours, ifname: i } => Some(TableOp::Clear {
                creatorid: if *ours { US } else { PEER },
                ifname: ifname(*i),
            }),
            Op::Wait(s) => {
                now += Duration::from_secs(*s);
                None
            }
            Op::Poll => {
                changes.clear();
                t.poll_changes(now, &mut changes).unwrap();
                apply_changes(&mut exact, &changes);
                let listing = t.states(now).unwrap();
                changes.clear();
                differ.poll(&listing, &mut changes);
                apply_changes(&mut by_diff, &changes);
                let truth = truth(&mut t, now);
                prop_assert_eq!(&exact, &truth, "exact reports");
                prop_assert_eq!(&by_diff, &truth, "snapshot diff");
                None
            }
        };
        if let Some(op) = engine_op {
            // The pf backend's bookkeeping: what the operation should leave behind.
            let echoes_before: Vec<Key> = match &op {
                TableOp::Clear { creatorid, ifname } => differ
                    .previous()
                    .entries()
                    .iter()
                    .map(|e| e.key)
                    .filter(|k| k.0 == *creatorid)
                    .filter(|k| {
                        ifname.is_empty()
                            || t.get_any(now, k.0, k.1)
                                .is_some_and(|s| s.ifname == *ifname)
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let done = t.apply(now, &op).is_ok();
            apply_op(&mut exact, &op, done);
            apply_op(&mut by_diff, &op, done);
            if done {
                let echoes = differ.echoes_mut();
                match &op {
                    TableOp::Import(s) | TableOp::Update(s) => echoes.expect_state(s),
                    TableOp::Delete { creatorid, id } => echoes.expect_absent((*creatorid, *id)),
                    TableOp::Clear { .. } => {
                        for k in echoes_before {
                            echoes.expect_absent(k);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn exact_reports_and_snapshot_diff_agree(ops in prop::collection::vec(op(), 1..80), seed in any::<u64>()) {
        run(&ops, seed)?;
    }
}

#[test]
fn a_long_run() {
    let mut ops = Vec::new();
    let mut synth = Synth::new(99, 1);
    for _ in 0..3000 {
        let i = synth.below(1000) as usize;
        ops.push(match synth.below(12) {
            0..=2 => Op::LocalInsert {
                nosync: i % 10 == 0,
            },
            3 => Op::LocalUpdate(i),
            4 => Op::LocalDelete(i),
            5 => Op::Import,
            6 => Op::EngineUpdate(i),
            7 => Op::EngineRemove(i),
            8 if i % 20 == 0 => Op::LocalClear(i % IFNAMES.len()),
            8 if i % 20 == 1 => Op::EngineClear {
                ours: false,
                ifname: i % IFNAMES.len(),
            },
            9 => Op::Wait(i as u64 % 40),
            _ => Op::Poll,
        });
    }
    run(&ops, 7).unwrap();
}
