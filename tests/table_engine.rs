//! A node with the memory table is a full cluster member: two engines, each over its own
//! memory table, joined by a lossless link in virtual time. The second node's bulk
//! request fills its table from the first's; later traffic and deletes follow; the
//! engine's imports are not echoed back.

use std::time::{Duration, Instant};

use pfsyncd::engine::{Config, Engine, LocalChange, Received, TableOp};
use pfsyncd::state::{AddressFamily, State};
use pfsyncd::table::synth::{Kind, Synth};
use pfsyncd::table::{key_of, MemoryConfig, MemoryTable, StateTable, TableStats};
use pfsyncd::wire::Dialect;

struct Node {
    engine: Engine,
    table: MemoryTable,
    stats: TableStats,
    reported: Vec<LocalChange>,
    ops: Vec<TableOp>,
}

impl Node {
    fn new(creatorid: u32) -> Node {
        Node {
            engine: Engine::new(Config::new(creatorid, Dialect::FreeBsd1400)),
            table: MemoryTable::new(MemoryConfig::new(creatorid)),
            stats: TableStats::default(),
            reported: Vec::new(),
            ops: Vec::new(),
        }
    }

    /// Feeds the table's changes to the engine and the engine's operations to the table;
    /// returns the packets to send.
    fn step(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let mut changes = Vec::new();
        self.table.poll_changes(now, &mut changes).unwrap();
        for c in &changes {
            self.engine.handle_local(now, *c);
        }
        self.reported.extend(changes);
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        self.drain(now)
    }

    fn drain(&mut self, now: Instant) -> Vec<Vec<u8>> {
        while let Some(op) = self.engine.poll_table_op() {
            let r = self.table.apply(now, &op);
            self.stats.record(&op, &r);
            self.ops.push(op);
        }
        while self.engine.poll_event().is_some() {}
        let mut out = Vec::new();
        while let Some(t) = self.engine.poll_transmit() {
            out.push(t.payload);
        }
        out
    }

    fn receive(&mut self, now: Instant, payload: &[u8]) -> Vec<Vec<u8>> {
        self.engine.handle_packet(
            now,
            Received {
                payload,
                on_syncdev: true,
                ttl: 255,
                ipv6: false,
                source: None,
            },
        );
        self.drain(now)
    }
}

/// Runs both nodes for `secs` of virtual time in 100 ms steps.
fn run(a: &mut Node, b: &mut Node, now: &mut Instant, secs: u64) {
    for _ in 0..secs * 10 {
        *now += Duration::from_millis(100);
        let mut to_b = a.step(*now);
        let mut to_a = b.step(*now);
        while !to_a.is_empty() || !to_b.is_empty() {
            let mut next_a = Vec::new();
            let mut next_b = Vec::new();
            for p in to_b.drain(..) {
                next_a.extend(b.receive(*now, &p));
            }
            for p in to_a.drain(..) {
                next_b.extend(a.receive(*now, &p));
            }
            to_a = next_a;
            to_b = next_b;
        }
    }
}

fn fresh(s: State) -> State {
    State {
        age_secs: 0,
        expire_secs: 0,
        ..s
    }
}

#[test]
fn a_memory_node_replicates_a_cluster_member() {
    let t0 = Instant::now();
    let mut now = t0;
    let mut a = Node::new(0xaaaa_aaaa);
    let mut b = Node::new(0xbbbb_bbbb);
    let mut synth = Synth::new(21, 0);
    let mut ours = Vec::new();
    for _ in 0..300 {
        let s = synth.state_of(Kind::Tcp, AddressFamily::Inet);
        ours.push(a.table.insert_local(now, fresh(s)).unwrap());
    }
    run(&mut a, &mut b, &mut now, 3);
    // B comes up and asks for everything.
    b.engine.request_bulk(now);
    run(&mut a, &mut b, &mut now, 20);
    assert!(b.engine.syncok());
    assert_eq!(b.table.len(), 300);
    for s in &ours {
        let got = b.table.get(now, s.creatorid, s.id).unwrap().unwrap();
        assert_eq!(
            (got.wire, got.src, got.dst, got.timeout),
            (s.wire, s.src, s.dst, s.timeout)
        );
    }
    // B's imports are not B's news: nothing of them was reported to B's engine.
    assert!(b.reported.is_empty(), "{:?}", b.reported.first());
    assert_eq!(b.stats.imported, 300);

    // Traffic on A reaches B's table.
    let moved = a
        .table
        .update_local(now, ours[0].creatorid, ours[0].id, |s| synth.advance(s))
        .unwrap();
    // A state A deletes goes from B's table too.
    assert!(a.table.delete_local(ours[1].creatorid, ours[1].id));
    run(&mut a, &mut b, &mut now, 3);
    let got = b
        .table
        .get(now, moved.creatorid, moved.id)
        .unwrap()
        .unwrap();
    assert_eq!((got.src, got.dst), (moved.src, moved.dst));
    assert!(b
        .table
        .get(now, ours[1].creatorid, ours[1].id)
        .unwrap()
        .is_none());
    assert_eq!(b.table.len(), 299);
    // Nothing came back to A as an operation on its own table.
    assert!(
        a.ops
            .iter()
            .all(|op| !matches!(op, TableOp::Import(s) if key_of(s).0 == 0xaaaa_aaaa)),
        "{:?}",
        a.ops.first()
    );
    assert_eq!(a.table.len(), 299);
}
