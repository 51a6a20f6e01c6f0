//! The memory table: expiry by timeout class in virtual time, the semantics of the
//! engine's operations, echo suppression, and the order of reported changes.

use std::time::{Duration, Instant};

use pfsyncd::engine::{LocalChange, TableOp};
use pfsyncd::state::{AddressFamily, State, StateFlags, Timeout};
use pfsyncd::table::synth::{Kind, Synth};
use pfsyncd::table::{
    key_of, MemoryConfig, MemoryTable, Outcome, StateTable, TableError, TableStats, Timeouts,
};
use pfsyncd::wire::IfName;

const US: u32 = 0x0000_0001;
const PEER: u32 = 0x0000_0002;
const OTHER: u32 = 0x0000_0003;

fn table() -> MemoryTable {
    MemoryTable::new(MemoryConfig::new(US))
}

fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

fn ifname(s: &str) -> IfName {
    IfName::new(s).unwrap()
}

/// A peer's state, fresh (age 0, expire 0 = a full timeout from now).
fn peer_state(synth: &mut Synth) -> State {
    State {
        age_secs: 0,
        expire_secs: 0,
        ..synth.state()
    }
}

fn poll(t: &mut MemoryTable, now: Instant) -> Vec<LocalChange> {
    let mut out = Vec::new();
    t.poll_changes(now, &mut out).unwrap();
    out
}

fn delete(s: &State) -> LocalChange {
    LocalChange::Delete {
        creatorid: s.creatorid,
        id: s.id,
    }
}

#[test]
fn each_class_expires_after_its_timeout() {
    let t0 = Instant::now();
    let mut t = table();
    let mut synth = Synth::new(1, PEER);
    let classes: Vec<Timeout> = Timeout::ALL
        .into_iter()
        .filter(|c| !matches!(c, Timeout::AdaptiveStart | Timeout::AdaptiveEnd))
        .collect();
    let mut imported = Vec::new();
    for &class in &classes {
        let s = State {
            timeout: class,
            ..peer_state(&mut synth)
        };
        t.import(t0, &s).unwrap();
        imported.push(s);
    }
    for s in &imported {
        let value = u64::from(Timeouts::DEFAULT.get(s.timeout));
        // Still there a second before its deadline (unless the class has no time at all).
        if value > 0 {
            let before = secs(t0, value - 1);
            let got = t.get(before, s.creatorid, s.id).unwrap().unwrap();
            assert_eq!(got.expire_secs, 1, "{:?}", s.timeout);
            assert_eq!(got.age_secs as u64, value - 1);
        }
    }
    // Walk time forward; each state goes at its class's value, reported as a delete.
    let mut values: Vec<u64> = imported
        .iter()
        .map(|s| u64::from(Timeouts::DEFAULT.get(s.timeout)))
        .collect();
    values.sort();
    values.dedup();
    let mut gone = 0;
    for v in values {
        let changes = poll(&mut t, secs(t0, v));
        let due: Vec<&State> = imported
            .iter()
            .filter(|s| u64::from(Timeouts::DEFAULT.get(s.timeout)) == v)
            .collect();
        assert_eq!(changes.len(), due.len(), "at {v} s");
        for s in due {
            assert!(changes.contains(&delete(s)), "{:?} at {v} s", s.timeout);
            assert!(t.get(secs(t0, v), s.creatorid, s.id).unwrap().is_none());
        }
        gone += changes.len();
        assert_eq!(t.len(), imported.len() - gone);
    }
    assert!(t.is_empty());
    assert_eq!(t.expired_count(), imported.len() as u64);
}

#[test]
fn tcp_established_lasts_a_day_udp_first_a_minute() {
    let t0 = Instant::now();
    let mut t = table();
    let mut synth = Synth::new(2, PEER);
    let tcp = State {
        timeout: Timeout::TcpEstablished,
        ..peer_state(&mut synth)
    };
    let udp = State {
        timeout: Timeout::UdpFirst,
        ..peer_state(&mut synth)
    };
    t.import(t0, &tcp).unwrap();
    t.import(t0, &udp).unwrap();
    assert!(poll(&mut t, secs(t0, 59)).is_empty());
    assert_eq!(poll(&mut t, secs(t0, 60)), vec![delete(&udp)]);
    assert!(poll(&mut t, secs(t0, 86_399)).is_empty());
    assert_eq!(poll(&mut t, secs(t0, 86_400)), vec![delete(&tcp)]);
}

#[test]
fn import_takes_creation_and_activity_from_the_record() {
    let t0 = Instant::now();
    let mut t = table();
    let mut synth = Synth::new(3, PEER);
    // 100 s old, 50 s left of a udp.multiple (60 s): last active 10 s ago.
    let s = State {
        timeout: Timeout::UdpMultiple,
        age_secs: 100,
        expire_secs: 50,
        ..synth.state_of(Kind::Udp, AddressFamily::Inet)
    };
    t.import(t0, &s).unwrap();
    let got = t.get(t0, s.creatorid, s.id).unwrap().unwrap();
    assert_eq!((got.age_secs, got.expire_secs), (100, 50));
    assert_eq!(got, s, "handed out as imported");
    let later = t.get(secs(t0, 10), s.creatorid, s.id).unwrap().unwrap();
    assert_eq!((later.age_secs, later.expire_secs), (110, 40));
    // Due at its deadline: still listed with 0 left until expired.
    let due = t.get(secs(t0, 50), s.creatorid, s.id).unwrap().unwrap();
    assert_eq!(due.expire_secs, 0);
    assert!(poll(&mut t, secs(t0, 49)).is_empty());
    assert_eq!(poll(&mut t, secs(t0, 50)), vec![delete(&s)]);

    // expire 0: the receiver counts a full timeout from now.
    let fresh = State {
        timeout: Timeout::TcpOpening,
        age_secs: 7,
        expire_secs: 0,
        ..synth.state_of(Kind::Tcp, AddressFamily::Inet6)
    };
    t.import(t0, &fresh).unwrap();
    let got = t.get(t0, fresh.creatorid, fresh.id).unwrap().unwrap();
    assert_eq!((got.age_secs, got.expire_secs), (7, 30));
    // More left than the class allows here (the sender's timeouts are longer): kept.
    let long = State {
        timeout: Timeout::IcmpFirst,
        expire_secs: 1000,
        ..synth.state_of(Kind::Icmp, AddressFamily::Inet)
    };
    t.import(t0, &long).unwrap();
    assert_eq!(
        t.get(t0, long.creatorid, long.id)
            .unwrap()
            .unwrap()
            .expire_secs,
        1000
    );
}

#[test]
fn timeouts_are_configurable() {
    let t0 = Instant::now();
    let config = MemoryConfig {
        timeouts: Timeouts::DEFAULT.with(Timeout::UdpFirst, 5),
        ..MemoryConfig::new(US)
    };
    let mut t = MemoryTable::new(config);
    let mut synth = Synth::new(4, PEER);
    let a = State {
        timeout: Timeout::UdpFirst,
        ..peer_state(&mut synth)
    };
    let b = State {
        timeout: Timeout::TcpClosing,
        ..peer_state(&mut synth)
    };
    t.import(t0, &a).unwrap();
    t.import(t0, &b).unwrap();
    assert_eq!(poll(&mut t, secs(t0, 5)), vec![delete(&a)]);
    // Changing a value moves the deadlines of the states already there.
    t.set_timeouts(Timeouts::DEFAULT.with(Timeout::TcpClosing, 20));
    assert_eq!(t.next_deadline(), Some(secs(t0, 20)));
    assert_eq!(poll(&mut t, secs(t0, 20)), vec![delete(&b)]);
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn update_keeps_creation_and_restarts_the_timeout() {
    let t0 = Instant::now();
    let mut t = table();
    let mut synth = Synth::new(5, PEER);
    let s = State {
        timeout: Timeout::TcpOpening,
        age_secs: 5,
        expire_secs: 0,
        ..synth.state_of(Kind::Tcp, AddressFamily::Inet)
    };
    t.import(t0, &s).unwrap();
    let mut merged = s;
    merged.timeout = Timeout::TcpEstablished;
    merged.src.seqlo = merged.src.seqlo.wrapping_add(100);
    merged.age_secs = 999; // the engine's stale copy: ignored, creation is the table's
    merged.expire_secs = 1;
    t.update(secs(t0, 20), &merged).unwrap();
    let got = t.get(secs(t0, 20), s.creatorid, s.id).unwrap().unwrap();
    assert_eq!(got.age_secs, 25);
    assert_eq!(got.expire_secs, 86_400);
    assert_eq!(got.src, merged.src);
    assert_eq!(got.timeout, Timeout::TcpEstablished);
    // Not due at the old deadline any more; the engine's update is not reported back.
    assert!(poll(&mut t, secs(t0, 40)).is_empty());

    let missing = State { id: 12345, ..s };
    assert!(matches!(
        t.update(t0, &missing),
        Err(TableError::NotFound { id: 12345, .. })
    ));
}

#[test]
fn import_refusals_are_counted_outcomes() {
    let t0 = Instant::now();
    let config = MemoryConfig {
        limit: Some(2),
        ..MemoryConfig::new(US)
    };
    let mut t = MemoryTable::new(config);
    let mut synth = Synth::new(6, PEER);
    let mut stats = TableStats::default();
    let a = synth.state();
    let ops = [
        TableOp::Import(a),
        TableOp::Import(a),
        TableOp::Import(State {
            creatorid: 0,
            ..synth.state()
        }),
        TableOp::Import(synth.state()),
        TableOp::Import(synth.state()),
        TableOp::Delete {
            creatorid: PEER,
            id: 999,
        },
        TableOp::Update(State {
            id: 999,
            ..synth.state()
        }),
    ];
    let mut outcomes = Vec::new();
    for op in &ops {
        let r = t.apply(t0, op);
        outcomes.push(r.as_ref().map_or_else(|e| e.outcome(), |_| Outcome::Done));
        stats.record(op, &r);
    }
    assert_eq!(
        outcomes,
        [
            Outcome::Done,
            Outcome::AlreadyExists,
            Outcome::Invalid,
            Outcome::Done,
            Outcome::Full,
            Outcome::Done,
            Outcome::NotFound,
        ]
    );
    assert_eq!(
        stats,
        TableStats {
            imported: 2,
            remove_missing: 1,
            exists: 1,
            invalid: 1,
            full: 1,
            notfound: 1,
            ..TableStats::default()
        }
    );
    assert_eq!(Outcome::AlreadyExists.counter(), "exists");
    assert_eq!(t.len(), 2);
}

#[test]
fn remove_and_clear_by_creator_and_interface() {
    let t0 = Instant::now();
    let mut t = table();
    let mut synth_peer = Synth::new(7, PEER);
    let mut synth_other = Synth::new(8, OTHER);
    let mut all = Vec::new();
    for (i, name) in ["em0", "em1", "em0", "all"].iter().enumerate() {
        for synth in [&mut synth_peer, &mut synth_other] {
            let s = State {
                ifname: ifname(name),
                ..synth.state()
            };
            t.import(t0, &s).unwrap();
            all.push((i, s));
        }
    }
    let local = t
        .insert_local(
            t0,
            State {
                ifname: ifname("em0"),
                ..synth_peer.state()
            },
        )
        .unwrap();
    assert_eq!(t.len(), 9);
    let (_, first) = all[0];
    assert!(t.remove(first.creatorid, first.id).unwrap());
    assert!(!t.remove(first.creatorid, first.id).unwrap());
    // The peer's states on em0: one left (the other was removed above).
    assert_eq!(t.clear(Some(PEER), &ifname("em0")).unwrap(), 1);
    assert_eq!(t.len(), 7);
    // Every state of the other creator, on every interface.
    assert_eq!(t.clear(Some(OTHER), &IfName::EMPTY).unwrap(), 4);
    assert_eq!(t.len(), 3);
    let left: Vec<State> = t.states(t0).unwrap();
    assert!(left
        .iter()
        .all(|s| s.creatorid == PEER || s.creatorid == US));
    assert!(t.get(t0, local.creatorid, local.id).unwrap().is_some());
    // Every creator's states, on every interface.
    assert_eq!(t.clear(None, &IfName::EMPTY).unwrap(), 3);
    assert!(t.is_empty());
    // None of it was the table's own news.
    assert_eq!(poll(&mut t, t0), vec![]);
}

#[test]
fn engine_operations_are_not_echoed_local_ones_are() {
    let t0 = Instant::now();
    let mut t = table();
    let mut synth = Synth::new(9, PEER);
    let a = peer_state(&mut synth);
    let b = peer_state(&mut synth);
    t.apply(t0, &TableOp::Import(a)).unwrap();
    t.apply(t0, &TableOp::Import(b)).unwrap();
    let mut a2 = a;
    synth.advance(&mut a2);
    t.apply(t0, &TableOp::Update(a2)).unwrap();
    t.apply(
        t0,
        &TableOp::Delete {
            creatorid: b.creatorid,
            id: b.id,
        },
    )
    .unwrap();
    t.apply(
        t0,
        &TableOp::Clear {
            creatorid: OTHER,
            ifname: IfName::EMPTY,
        },
    )
    .unwrap();
    assert_eq!(poll(&mut t, t0), vec![], "the engine's own operations");

    // Traffic on the imported state is news, and so is its expiry.
    let touched = t
        .update_local(secs(t0, 1), a.creatorid, a.id, |s| s.src.seqlo ^= 1)
        .unwrap();
    assert_eq!(touched.creatorid, PEER);
    assert_eq!(
        poll(&mut t, secs(t0, 1)),
        vec![LocalChange::Update(touched)]
    );
    let value = u64::from(Timeouts::DEFAULT.get(a2.timeout));
    assert_eq!(poll(&mut t, secs(t0, 1 + value)), vec![delete(&a)]);
}

#[test]
fn local_operations_are_reported_in_order_once_per_poll() {
    let t0 = Instant::now();
    let mut t = MemoryTable::new(MemoryConfig {
        first_id: 1000,
        ..MemoryConfig::new(US)
    });
    let mut synth = Synth::new(10, 0);
    let a = t.insert_local(t0, peer_state(&mut synth)).unwrap();
    let b = t.insert_local(t0, peer_state(&mut synth)).unwrap();
    let c = t.insert_local(t0, peer_state(&mut synth)).unwrap();
    assert_eq!((a.creatorid, a.id, b.id, c.id), (US, 1000, 1001, 1002));
    // a updated twice: reported once, as the insert, with its newest content.
    t.update_local(secs(t0, 1), a.creatorid, a.id, |s| synth.advance(s))
        .unwrap();
    let a_now = t
        .update_local(secs(t0, 2), a.creatorid, a.id, |s| s.dst.seqhi ^= 1)
        .unwrap();
    // b inserted and deleted between polls: nothing.
    assert!(t.delete_local(b.creatorid, b.id));
    assert!(!t.delete_local(b.creatorid, b.id));
    let changes = poll(&mut t, secs(t0, 2));
    let c_now = t.get(secs(t0, 2), c.creatorid, c.id).unwrap().unwrap();
    assert_eq!(
        changes,
        vec![LocalChange::Insert(a_now), LocalChange::Insert(c_now)]
    );
    assert_eq!(c_now.age_secs, 2, "times as of the poll");

    // Next window: an update, a delete, a clear, then an insert after the clear.
    let c2 = t
        .update_local(secs(t0, 3), c.creatorid, c.id, |s| synth.advance(s))
        .unwrap();
    t.delete_local(a.creatorid, a.id);
    let n = t.clear_local(&ifname("nonexistent0"));
    assert_eq!(n, 0);
    let d = t.insert_local(secs(t0, 3), synth.state()).unwrap();
    assert_eq!(
        poll(&mut t, secs(t0, 3)),
        vec![
            LocalChange::Update(c2),
            delete(&a),
            LocalChange::Clear {
                ifname: ifname("nonexistent0")
            },
            LocalChange::Insert(d),
        ]
    );
    assert_eq!(poll(&mut t, secs(t0, 3)), vec![]);
}

#[test]
fn expiries_follow_the_operations_noted_before_the_poll() {
    let t0 = Instant::now();
    let mut t = table();
    let mut synth = Synth::new(11, 0);
    let short = t
        .insert_local(
            t0,
            State {
                timeout: Timeout::IcmpError,
                age_secs: 0,
                expire_secs: 0,
                ..synth.state_of(Kind::Icmp, AddressFamily::Inet)
            },
        )
        .unwrap();
    let long = t
        .insert_local(
            t0,
            State {
                timeout: Timeout::TcpEstablished,
                age_secs: 0,
                expire_secs: 0,
                ..synth.state_of(Kind::Tcp, AddressFamily::Inet)
            },
        )
        .unwrap();
    assert_eq!(poll(&mut t, t0).len(), 2);
    let later = t
        .update_local(secs(t0, 30), long.creatorid, long.id, |_| {})
        .unwrap();
    assert_eq!(
        poll(&mut t, secs(t0, 30)),
        vec![LocalChange::Update(later), delete(&short)]
    );
}

#[test]
fn local_clear_takes_every_creators_states_on_the_interface() {
    let t0 = Instant::now();
    let mut t = table();
    let mut synth = Synth::new(12, PEER);
    let on = |s: State, name: &str| State {
        ifname: ifname(name),
        ..s
    };
    t.import(t0, &on(synth.state(), "em0")).unwrap();
    t.import(t0, &on(synth.state(), "em1")).unwrap();
    let ours = t.insert_local(t0, on(synth.state(), "em0")).unwrap();
    let kept = t.insert_local(t0, on(synth.state(), "em1")).unwrap();
    poll(&mut t, t0);
    assert_eq!(t.clear_local(&ifname("em0")), 2);
    assert!(t.get(t0, ours.creatorid, ours.id).unwrap().is_none());
    assert!(t.get(t0, kept.creatorid, kept.id).unwrap().is_some());
    assert_eq!(
        poll(&mut t, t0),
        vec![LocalChange::Clear {
            ifname: ifname("em0")
        }]
    );
    assert_eq!(t.clear_local(&IfName::EMPTY), 2);
    assert!(t.is_empty());
}

#[test]
fn no_sync_states_are_held_but_never_reported() {
    let t0 = Instant::now();
    let mut t = table();
    let mut synth = Synth::new(13, 0);
    let mut quiet = synth.state();
    quiet.state_flags.insert(StateFlags::NOSYNC);
    quiet.timeout = Timeout::UdpSingle;
    quiet.expire_secs = 0;
    let quiet = t.insert_local(t0, quiet).unwrap();
    let loud = t.insert_local(t0, synth.state()).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(poll(&mut t, t0), vec![LocalChange::Insert(loud)]);
    assert_eq!(t.states(t0).unwrap(), vec![loud]);
    assert!(t.get(t0, quiet.creatorid, quiet.id).unwrap().is_none());
    assert!(t.get_any(t0, quiet.creatorid, quiet.id).is_some());
    t.update_local(t0, quiet.creatorid, quiet.id, |s| s.src.seqlo ^= 1)
        .unwrap();
    assert!(poll(&mut t, t0).is_empty());
    // Its expiry is silent too.
    assert!(poll(&mut t, secs(t0, 30)).is_empty());
    assert_eq!(t.len(), 1);
    assert!(t.delete_local(loud.creatorid, loud.id));
    assert_eq!(poll(&mut t, secs(t0, 30)), vec![delete(&loud)]);
}

#[test]
fn local_ids_skip_names_already_taken() {
    let t0 = Instant::now();
    let mut t = table();
    // A peer sends back a state of ours from before a restart.
    let mut synth = Synth::new(14, US);
    let old = synth.state();
    assert_eq!(old.id, 1);
    t.import(t0, &old).unwrap();
    let new = t.insert_local(t0, synth.state()).unwrap();
    assert_eq!((new.creatorid, new.id), (US, 2));
}

#[test]
fn usable_as_a_trait_object() {
    let t0 = Instant::now();
    let mut t: Box<dyn StateTable> = Box::new(table());
    let s = Synth::new(15, PEER).state();
    t.import(t0, &s).unwrap();
    assert_eq!(t.len(), 1);
    assert_eq!(t.checksum(), [0; 16]);
    let mut seen = Vec::new();
    t.for_each_state(t0, &mut |s| seen.push(key_of(s))).unwrap();
    assert_eq!(seen, vec![key_of(&s)]);
}

#[test]
fn a_full_table_refuses_local_inserts_too() {
    let t0 = Instant::now();
    let mut t = MemoryTable::new(MemoryConfig {
        limit: Some(1),
        ..MemoryConfig::new(US)
    });
    let mut synth = Synth::new(16, 0);
    t.insert_local(t0, synth.state()).unwrap();
    assert!(matches!(
        t.insert_local(t0, synth.state()),
        Err(TableError::Full)
    ));
    assert!(matches!(
        t.update_local(t0, US, 77, |_| {}),
        Err(TableError::NotFound {
            creatorid: US,
            id: 77
        })
    ));
}
