//! A deterministic network of sync engines on virtual time.
//!
//! Many [`Engine`]s in one process, each with a small in-memory state table standing in
//! for pf's: the table applies the engine's [`TableOp`]s and reports its changes back to
//! the engine as [`LocalChange`]s, echoes included, as a kernel backend would. The nodes
//! share a multicast link whose every (sender, receiver) pair may drop, duplicate,
//! reorder and delay packets. Time is a base [`Instant`] plus an offset that jumps to the
//! next event (a packet delivery or an engine deadline); nothing sleeps, and a seed
//! fixes every random choice, so a failing run can be replayed exactly.
//!
//! The run is bounded: more than [`Sim::max_steps`] events, or a network that never
//! goes quiet, fails the test as a livelock.

#![allow(dead_code)]

pub mod kernel;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use pfsyncd::engine::{
    Config, Engine, Event, Key, LocalChange, Received, TableOp, PFSYNC_GROUP_V4,
};
use pfsyncd::state::{
    AddressFamily, PeerLevel, PeerState, Protocol, State, StateKey, TcpState, Timeout,
};
use pfsyncd::wire::{Dialect, IfName};

// ------------------------------------------------------------------ randomness

/// xorshift64*: small, fast, and the same on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Never zero, and nearby seeds start far apart.
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next_u64() >> 11) as f64) < p * (1u64 << 53) as f64
    }

    /// Uniform in 0..=max.
    pub fn duration(&mut self, max: Duration) -> Duration {
        let n = max.as_nanos() as u64;
        Duration::from_nanos(if n == 0 { 0 } else { self.below(n + 1) })
    }

    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

// ------------------------------------------------------------------ links

/// What happens to a packet between one sender and one receiver.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The receiver is reachable at all.
    pub up: bool,
    /// Probability the packet is lost.
    pub drop: f64,
    /// Probability a second copy arrives too (with its own delay).
    pub dup: f64,
    /// Probability the packet is held back by up to `reorder_delay` more, so that later
    /// packets overtake it.
    pub reorder: f64,
    /// Fixed delay.
    pub delay: Duration,
    /// Random extra delay, uniform up to this.
    pub jitter: Duration,
    /// See `reorder`.
    pub reorder_delay: Duration,
}

impl Link {
    /// A LAN: 0.2 ms, no loss.
    pub const GOOD: Link = Link {
        up: true,
        drop: 0.0,
        dup: 0.0,
        reorder: 0.0,
        delay: Duration::from_micros(200),
        jitter: Duration::ZERO,
        reorder_delay: Duration::ZERO,
    };

    /// A link that does everything badly but lose packets: 1–5 ms, 2 % duplicated,
    /// 5 % held back by up to 200 ms.
    pub const ROUGH: Link = Link {
        up: true,
        drop: 0.0,
        dup: 0.02,
        reorder: 0.05,
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(4),
        reorder_delay: Duration::from_millis(200),
    };

    pub fn with_drop(self, drop: f64) -> Link {
        Link { drop, ..self }
    }
}

// ------------------------------------------------------------------ nodes

/// One firewall: an engine and its state table.
#[derive(Debug)]
pub struct Node {
    pub config: Config,
    pub engine: Engine,
    /// The stand-in for pf's state table.
    pub table: BTreeMap<Key, State>,
    /// The daemon runs and the node is on the link.
    pub up: bool,
    /// The table reports the engine's own operations back (as pf does).
    pub echo: bool,
    /// The engine's events, with the time they came.
    pub events: Vec<(Duration, Event)>,
    /// The engine's table operations so far.
    pub ops_applied: u64,
    /// Next id for a state this node creates.
    pub next_id: u64,
    /// States this node created and still has, with their creation time (for churn).
    pub owned: BTreeMap<u64, Duration>,
}

impl Node {
    pub fn creatorid(&self) -> u32 {
        self.config.creatorid
    }

    /// Applies a table operation; returns the change pf would report for it.
    fn apply(&mut self, op: TableOp) -> Vec<LocalChange> {
        self.ops_applied += 1;
        match op {
            TableOp::Import(s) => {
                let key = (s.creatorid, s.id);
                // The kernel's import fails on an existing state; nothing is reported.
                if self.table.contains_key(&key) {
                    return vec![];
                }
                self.table.insert(key, s);
                vec![LocalChange::Insert(s)]
            }
            TableOp::Update(s) => match self.table.get_mut(&(s.creatorid, s.id)) {
                Some(old) => {
                    *old = s;
                    vec![LocalChange::Update(s)]
                }
                None => vec![],
            },
            TableOp::Delete { creatorid, id } => match self.table.remove(&(creatorid, id)) {
                Some(_) => vec![LocalChange::Delete { creatorid, id }],
                None => vec![],
            },
            TableOp::Clear { creatorid, ifname } => {
                let doomed: Vec<Key> = self
                    .table
                    .iter()
                    .filter(|(k, s)| k.0 == creatorid && (ifname.is_empty() || s.ifname == ifname))
                    .map(|(k, _)| *k)
                    .collect();
                doomed
                    .into_iter()
                    .map(|k| {
                        self.table.remove(&k);
                        if k.0 == self.config.creatorid {
                            self.owned.remove(&k.1);
                        }
                        LocalChange::Delete {
                            creatorid: k.0,
                            id: k.1,
                        }
                    })
                    .collect()
            }
        }
    }
}

// ------------------------------------------------------------------ the network

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    payload: Vec<u8>,
}

/// Counters of the network itself.
#[derive(Debug, Default, Clone)]
pub struct NetStats {
    pub sent: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub to_down_nodes: u64,
}

/// A recorded packet, for scenarios that look at the wire.
#[derive(Debug, Clone)]
pub struct Tapped {
    pub at: Duration,
    pub from: usize,
    pub payload: Vec<u8>,
}

pub struct Sim {
    pub base: Instant,
    pub now: Instant,
    pub nodes: Vec<Node>,
    links: Vec<Vec<Link>>,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    pub rng: Rng,
    pub steps: u64,
    pub max_steps: u64,
    pub net: NetStats,
    /// Every packet sent, when set.
    pub tap: Option<Vec<Tapped>>,
    /// Packets arrive over IPv6 (counted in `ipackets6`).
    pub ipv6: bool,
    /// Prints every message and local change about this state (for debugging a run).
    pub trace: Option<Key>,
}

impl Sim {
    /// Nodes with these settings, all up, on good links, none having asked for a bulk
    /// update yet.
    pub fn new(seed: u64, configs: Vec<Config>) -> Sim {
        let base = Instant::now();
        let n = configs.len();
        let nodes = configs
            .into_iter()
            .map(|config| Node {
                engine: Engine::new(config.clone()),
                config,
                table: BTreeMap::new(),
                up: true,
                echo: true,
                events: Vec::new(),
                ops_applied: 0,
                next_id: 1,
                owned: BTreeMap::new(),
            })
            .collect();
        Sim {
            base,
            now: base,
            nodes,
            links: vec![vec![Link::GOOD; n]; n],
            queue: BinaryHeap::new(),
            seq: 0,
            rng: Rng::new(seed),
            steps: 0,
            max_steps: 5_000_000,
            net: NetStats::default(),
            tap: None,
            ipv6: false,
            trace: std::env::var("SIM_TRACE").ok().and_then(|v| {
                let (c, i) = v.split_once('/')?;
                Some((
                    u32::from_str_radix(c, 16).ok()?,
                    u64::from_str_radix(i, 16).ok()?,
                ))
            }),
        }
    }

    /// `n` nodes of one dialect, creator ids 0x1000 + i, hash keys from the seed.
    pub fn uniform(seed: u64, n: usize, dialect: Dialect) -> Sim {
        Sim::new(seed, (0..n).map(|i| config(seed, i, dialect)).collect())
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    pub fn set_links(&mut self, link: Link) {
        for row in &mut self.links {
            for l in row.iter_mut() {
                *l = link;
            }
        }
    }

    pub fn set_link(&mut self, from: usize, to: usize, link: Link) {
        self.links[from][to] = link;
    }

    // -------------------------------------------------------------- node control

    /// Brings a node's pfsync up: it asks for a bulk update, as the kernels do.
    pub fn start(&mut self, i: usize) {
        self.nodes[i].up = true;
        let now = self.now;
        self.nodes[i].engine.request_bulk(now);
        self.pump(i);
    }

    /// Brings every node up.
    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    /// Takes a node off the link (its daemon stops; its table stays).
    pub fn stop(&mut self, i: usize) {
        self.nodes[i].up = false;
    }

    /// Reboots a node: a fresh engine and an empty table, then a bulk request. State ids
    /// start far from the old ones, as pf seeds them from the clock.
    pub fn reboot(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.engine = Engine::new(node.config.clone());
        node.table.clear();
        node.owned.clear();
        node.next_id += 1 << 32;
        self.start(i);
    }

    /// Restarts a node's daemon only: a fresh engine, the table kept. The new daemon
    /// loads the table into the engine, asks for a bulk update, and sends its table as
    /// one (what the old process had queued is lost).
    pub fn restart_daemon(&mut self, i: usize) {
        let now = self.now;
        let node = &mut self.nodes[i];
        node.engine = Engine::new(node.config.clone());
        for s in node.table.values() {
            node.engine.load(now, *s);
        }
        self.start(i);
        let now = self.now;
        self.nodes[i].engine.send_bulk(now);
        self.pump(i);
    }

    // -------------------------------------------------------------- local changes

    /// A change of node `i`'s table, as pf makes it: the table first, then the engine.
    pub fn local(&mut self, i: usize, change: LocalChange) {
        if let Some(key) = self.trace {
            let k = match change {
                LocalChange::Insert(s) | LocalChange::Update(s) => Some((s.creatorid, s.id)),
                LocalChange::Delete { creatorid, id } => Some((creatorid, id)),
                LocalChange::Clear { .. } => None,
            };
            if k == Some(key) {
                eprintln!("{:>12?} local at {i}: {change:?}", self.elapsed());
            }
        }
        let node = &mut self.nodes[i];
        match change {
            LocalChange::Insert(s) | LocalChange::Update(s) => {
                node.table.insert((s.creatorid, s.id), s);
            }
            LocalChange::Delete { creatorid, id } => {
                node.table.remove(&(creatorid, id));
                if creatorid == node.config.creatorid {
                    node.owned.remove(&id);
                }
            }
            LocalChange::Clear { ifname } => {
                node.table
                    .retain(|_, s| !(ifname.is_empty() || s.ifname == ifname));
                let table = &node.table;
                let me = node.config.creatorid;
                node.owned.retain(|id, _| table.contains_key(&(me, *id)));
            }
        }
        if node.up {
            let now = self.now;
            node.engine.handle_local(now, change);
            self.pump(i);
        }
    }

    /// Node `i` creates a state (its creator id, its next id) from a template.
    pub fn create(&mut self, i: usize, template: State) -> Key {
        let node = &mut self.nodes[i];
        let s = State {
            creatorid: node.config.creatorid,
            id: node.next_id,
            ..template
        };
        node.next_id += 1;
        node.owned.insert(s.id, self.now - self.base);
        self.local(i, LocalChange::Insert(s));
        (s.creatorid, s.id)
    }

    /// Node `i`'s copy of a state.
    pub fn get(&self, i: usize, key: Key) -> Option<&State> {
        self.nodes[i].table.get(&key)
    }

    // -------------------------------------------------------------- the engine loop

    /// Drains node `i`'s outputs: packets onto the link, operations into its table (and
    /// the table's reports back into the engine), events into its log.
    fn pump(&mut self, i: usize) {
        loop {
            let mut echoes = Vec::new();
            while let Some(t) = self.nodes[i].engine.poll_transmit() {
                assert!(t.payload.len() + 20 <= self.nodes[i].config.mtu);
                assert_eq!(t.destination, self.nodes[i].config.syncpeer);
                self.transmit(i, t.payload);
            }
            while let Some(op) = self.nodes[i].engine.poll_table_op() {
                let reports = self.nodes[i].apply(op);
                if self.nodes[i].echo {
                    echoes.extend(reports);
                }
            }
            let at = self.elapsed();
            while let Some(e) = self.nodes[i].engine.poll_event() {
                self.nodes[i].events.push((at, e));
            }
            if echoes.is_empty() {
                return;
            }
            let now = self.now;
            for change in echoes {
                self.nodes[i].engine.handle_local(now, change);
            }
        }
    }

    fn transmit(&mut self, from: usize, payload: Vec<u8>) {
        self.net.sent += 1;
        self.net.bytes += payload.len() as u64;
        if let Some(tap) = self.tap.as_mut() {
            tap.push(Tapped {
                at: self.now - self.base,
                from,
                payload: payload.clone(),
            });
        }
        // Multicast, loopback off: everyone but the sender.
        for to in 0..self.nodes.len() {
            if to == from {
                continue;
            }
            let link = self.links[from][to];
            if !link.up || self.rng.chance(link.drop) {
                self.net.dropped += 1;
                continue;
            }
            let copies = if self.rng.chance(link.dup) {
                self.net.duplicated += 1;
                2
            } else {
                1
            };
            for _ in 0..copies {
                self.trace_packet("send", from, to, &payload);
                let mut delay = link.delay + self.rng.duration(link.jitter);
                if self.rng.chance(link.reorder) {
                    self.net.reordered += 1;
                    delay += self.rng.duration(link.reorder_delay);
                }
                self.seq += 1;
                self.queue.push(Reverse(InFlight {
                    at: self.now + delay,
                    seq: self.seq,
                    to,
                    payload: payload.clone(),
                }));
            }
        }
    }

    /// The time of the next event, if any.
    pub fn next_event(&self) -> Option<Instant> {
        let packet = self.queue.peek().map(|Reverse(p)| p.at);
        let timers = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .filter_map(|n| n.engine.poll_timeout());
        packet.into_iter().chain(timers).min()
    }

    /// Runs everything due at the next event's time. False when nothing is pending.
    pub fn step(&mut self) -> bool {
        let Some(next) = self.next_event() else {
            return false;
        };
        self.steps += 1;
        assert!(
            self.steps <= self.max_steps,
            "livelock: {} events by {:?}",
            self.steps,
            self.elapsed()
        );
        self.now = self.now.max(next);
        while self.queue.peek().is_some_and(|Reverse(p)| p.at <= self.now) {
            let Reverse(p) = self.queue.pop().expect("peeked");
            self.deliver(p.to, &p.payload);
        }
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            if node.up && node.engine.poll_timeout().is_some_and(|t| t <= self.now) {
                node.engine.handle_timeout(self.now);
                self.pump(i);
            }
        }
        true
    }

    fn trace_packet(&self, what: &str, from: usize, to: usize, payload: &[u8]) {
        let Some(key) = self.trace else { return };
        let Ok(reader) = pfsyncd::wire::PacketReader::new(payload) else {
            return;
        };
        use pfsyncd::wire::Message as M;
        for m in reader.messages().flatten() {
            let k = match &m {
                M::Ins(r) | M::Upd(r) => State::from_record(r).ok().map(|s| (s.creatorid, s.id)),
                M::UpdC(u) => Some((u.creatorid, u.id)),
                M::UpdReq(r) | M::DelC(r) | M::InsAck(r) => Some((r.creatorid, r.id)),
                M::Clr(c) if c.creatorid == key.0 => Some(key),
                _ => None,
            };
            if k == Some(key) {
                eprintln!(
                    "{:>12?} {what} {from}->{to}: {}",
                    self.elapsed(),
                    m.action().name()
                );
            }
        }
    }

    fn deliver(&mut self, to: usize, payload: &[u8]) {
        if !self.nodes[to].up {
            self.net.to_down_nodes += 1;
            return;
        }
        self.net.delivered += 1;
        self.trace_packet("deliver", usize::MAX, to, payload);
        let now = self.now;
        self.nodes[to].engine.handle_packet(
            now,
            Received {
                payload,
                on_syncdev: true,
                ttl: 255,
                ipv6: self.ipv6,
                source: None,
            },
        );
        self.pump(to);
    }

    /// Delivers a packet from outside the cluster to every node that is up, now.
    pub fn inject(&mut self, payload: &[u8], ttl: u8, on_syncdev: bool) {
        for to in 0..self.nodes.len() {
            if !self.nodes[to].up {
                continue;
            }
            let now = self.now;
            self.nodes[to].engine.handle_packet(
                now,
                Received {
                    payload,
                    on_syncdev,
                    ttl,
                    ipv6: false,
                    source: None,
                },
            );
            self.pump(to);
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.next_event().is_some_and(|t| t <= until) {
            self.step();
        }
        self.now = until;
    }

    /// Runs until nothing is in flight and no engine has a deadline; fails if that takes
    /// longer than `limit` of virtual time (a livelock, or a retry loop that never ends).
    pub fn settle(&mut self, limit: Duration) {
        let until = self.now + limit;
        while let Some(t) = self.next_event() {
            assert!(
                t <= until,
                "not quiet {limit:?} after {:?}: {} in flight, timers {:?}",
                until - limit - self.base,
                self.queue.len(),
                self.nodes
                    .iter()
                    .map(|n| n.engine.poll_timeout().map(|t| t - self.base))
                    .collect::<Vec<_>>()
            );
            self.step();
        }
    }

    // -------------------------------------------------------------- checks

    /// Fails unless every node that is up has the same states with the same views.
    pub fn assert_converged(&self) {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up)
            .collect();
        let report = self.divergence(&up);
        assert!(report.is_empty(), "nodes diverge:\n{report}");
    }

    /// Differences between the tables of `nodes`, as text (empty when they agree).
    pub fn divergence(&self, nodes: &[usize]) -> String {
        let mut out = String::new();
        let Some(&first) = nodes.first() else {
            return out;
        };
        let mut keys: Vec<Key> = nodes
            .iter()
            .flat_map(|&i| self.nodes[i].table.keys().copied())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut shown = 0;
        for key in keys {
            let views: Vec<Option<View>> = nodes
                .iter()
                .map(|&i| self.nodes[i].table.get(&key).map(View::of))
                .collect();
            if views.iter().all(|v| *v == views[0]) {
                continue;
            }
            shown += 1;
            if shown <= 10 {
                let _ = writeln!(out, "state {:08x}/{:x}:", key.0, key.1);
                for (&i, v) in nodes.iter().zip(&views) {
                    let _ = writeln!(out, "  node {i}: {v:?}");
                }
            }
        }
        if shown > 10 {
            let _ = writeln!(out, "... {} states differ in all", shown);
        }
        let _ = first;
        out
    }

    /// The events a node logged.
    pub fn events(&self, i: usize) -> Vec<Event> {
        self.nodes[i].events.iter().map(|(_, e)| *e).collect()
    }

    /// A summary for test output.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "t={:?} steps={} net: sent {} ({} B), delivered {}, dropped {}, dup {}, reordered {}\n",
            self.elapsed(),
            self.steps,
            self.net.sent,
            self.net.bytes,
            self.net.delivered,
            self.net.dropped,
            self.net.duplicated,
            self.net.reordered
        );
        for (i, n) in self.nodes.iter().enumerate() {
            let s = n.engine.stats();
            let _ = writeln!(
                out,
                "  node {i} ({}): {} states, out {} pkts, in {}, stale {}, badstate {}, \
                 req_overflow {}, ins_dup {}, tombstoned {}, bulk sent {} ({} states), syncok {}",
                n.config.dialect,
                n.table.len(),
                s.opackets,
                s.ipackets,
                s.stale,
                s.badstate,
                s.req_overflow,
                s.ins_duplicate,
                s.tombstoned,
                s.bulk_sends_completed,
                s.bulk_states_sent,
                n.engine.syncok()
            );
        }
        out
    }
}

/// What every dialect carries of a state, and so what converged nodes agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    pub src: pfsyncd::state::Peer,
    pub dst: pfsyncd::state::Peer,
    pub timeout: Timeout,
    pub af: AddressFamily,
    pub proto: Protocol,
    pub addr: [IpAddr; 2],
    pub port: [u16; 2],
    pub ifname: IfName,
}

impl View {
    pub fn of(s: &State) -> View {
        View {
            src: s.src,
            dst: s.dst,
            timeout: s.timeout,
            af: s.wire.af,
            proto: s.wire.proto,
            addr: s.wire.addr,
            port: s.wire.port,
            ifname: s.ifname,
        }
    }
}

// ------------------------------------------------------------------ configurations

/// The settings of node `i` in a run seeded with `seed`.
pub fn config(seed: u64, i: usize, dialect: Dialect) -> Config {
    let mut c = Config::new(0x1000 + i as u32, dialect);
    let mut r = Rng::new(seed ^ (i as u64) << 40);
    c.hash_key = [r.next_u64(), r.next_u64()];
    c.syncpeer = IpAddr::V4(PFSYNC_GROUP_V4);
    c
}

// ------------------------------------------------------------------ states and traffic

pub fn ifname(s: &str) -> IfName {
    IfName::new(s).expect("a short name")
}

/// The timeout class pf gives a state in these peer states.
pub fn timeout_for(proto: Protocol, src: PeerState, dst: PeerState) -> Timeout {
    match (proto, src, dst) {
        (Protocol::Tcp, PeerState::Tcp(a), PeerState::Tcp(b)) => {
            let lo = a.min(b);
            let hi = a.max(b);
            if hi >= TcpState::TimeWait {
                Timeout::TcpClosed
            } else if hi >= TcpState::FinWait2 {
                Timeout::TcpFinWait
            } else if hi >= TcpState::CloseWait {
                Timeout::TcpClosing
            } else if lo >= TcpState::Established {
                Timeout::TcpEstablished
            } else if lo >= TcpState::SynSent {
                Timeout::TcpOpening
            } else {
                Timeout::TcpFirst
            }
        }
        (Protocol::Udp, PeerState::Level(a), PeerState::Level(b)) => {
            if a >= PeerLevel::MULTIPLE && b >= PeerLevel::MULTIPLE {
                Timeout::UdpMultiple
            } else if b > PeerLevel::NO_TRAFFIC {
                Timeout::UdpSingle
            } else {
                Timeout::UdpFirst
            }
        }
        (Protocol::Icmp | Protocol::Icmpv6, _, _) => Timeout::IcmpFirst,
        _ => Timeout::OtherSingle,
    }
}

fn addr(rng: &mut Rng, af: AddressFamily) -> IpAddr {
    match af {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::from(
            0x0a00_0000 | (rng.next_u64() as u32 & 0xffffff),
        )),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::from(
            0x2001_0db8_u128 << 96 | u128::from(rng.next_u64()),
        )),
    }
}

/// A fresh state as pf creates it on the first packet: TCP, UDP or ICMP, IPv4 or IPv6.
pub fn random_state(rng: &mut Rng) -> State {
    let af = if rng.chance(0.2) {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let roll = rng.below(10);
    let proto = match roll {
        0..=6 => Protocol::Tcp,
        7 | 8 => Protocol::Udp,
        _ if af == AddressFamily::Inet6 => Protocol::Icmpv6,
        _ => Protocol::Icmp,
    };
    let key = StateKey {
        af,
        proto,
        addr: [addr(rng, af), addr(rng, af)],
        port: [
            1024 + rng.below(60000) as u16,
            rng.pick(&[22, 53, 80, 443, 8080]),
        ],
        rdomain: 0,
    };
    let mut s = State {
        ifname: ifname(rng.pick(&["em0", "em1", "vlan7"])),
        wire: key,
        stack: key,
        packets: [1, 0],
        bytes: [60, 0],
        rule: Some(rng.below(40) as u32),
        ..State::default()
    };
    match proto {
        Protocol::Tcp => {
            s.src.state = PeerState::Tcp(TcpState::SynSent);
            s.dst.state = PeerState::Tcp(TcpState::Closed);
            s.src.seqlo = rng.next_u64() as u32;
            s.src.seqhi = s.src.seqlo.wrapping_add(1);
            s.src.max_win = 65535;
            s.src.wscale = 0x80 | 7;
            s.dst.seqlo = 0;
        }
        _ => {
            s.src.state = PeerState::Level(PeerLevel::SINGLE);
            s.dst.state = PeerState::Level(PeerLevel::NO_TRAFFIC);
        }
    }
    s.timeout = timeout_for(proto, s.src.state, s.dst.state);
    s
}

/// The state after a few more packets: sequence numbers forward, peer states forward
/// now and then, counters up. Monotonic, as pf's own updates are.
pub fn advance(rng: &mut Rng, mut s: State) -> State {
    let n = 1 + rng.below(4);
    s.packets[0] += n;
    s.packets[1] += n;
    s.bytes[0] += 100 * n;
    s.bytes[1] += 1400 * n;
    match (s.src.state, s.dst.state) {
        (PeerState::Tcp(a), PeerState::Tcp(b)) => {
            if b == TcpState::Closed {
                // The handshake completes.
                s.dst.seqlo = rng.next_u64() as u32;
                s.src.state = PeerState::Tcp(TcpState::Established);
                s.dst.state = PeerState::Tcp(TcpState::Established);
                s.dst.max_win = 65535;
                s.dst.wscale = 0x80 | 7;
            } else if rng.chance(0.05) {
                // The client closes first: FIN_WAIT_1, 2, TIME_WAIT on its side,
                // CLOSE_WAIT, LAST_ACK, TIME_WAIT on the server's.
                let src_next = match a {
                    TcpState::Established => TcpState::FinWait1,
                    TcpState::FinWait1 => TcpState::FinWait2,
                    TcpState::FinWait2 => TcpState::TimeWait,
                    other => other,
                };
                let dst_next = match b {
                    TcpState::Established => TcpState::CloseWait,
                    TcpState::CloseWait => TcpState::LastAck,
                    TcpState::LastAck => TcpState::TimeWait,
                    other => other,
                };
                s.src.state = PeerState::Tcp(src_next);
                s.dst.state = PeerState::Tcp(dst_next);
            }
            s.src.seqlo = s.src.seqlo.wrapping_add(100 * n as u32);
            s.dst.seqlo = s.dst.seqlo.wrapping_add(1400 * n as u32);
            s.src.seqhi = s.dst.seqlo.wrapping_add(65535 << 7);
            s.dst.seqhi = s.src.seqlo.wrapping_add(65535 << 7);
        }
        (PeerState::Level(_), PeerState::Level(_)) => {
            s.src.state = PeerState::Level(PeerLevel::MULTIPLE);
            // Levels only go up, as in pf.
            if let PeerState::Level(l) = s.dst.state {
                if l < PeerLevel::MULTIPLE {
                    s.dst.state = PeerState::Level(if rng.chance(0.5) {
                        PeerLevel::MULTIPLE
                    } else {
                        PeerLevel::SINGLE
                    });
                }
            }
        }
        _ => {}
    }
    s.timeout = timeout_for(s.wire.proto, s.src.state, s.dst.state);
    s
}

/// Random local activity on the nodes that are up: each node creates states, updates
/// the ones it created, and deletes those older than `min_age` (so that a delete never
/// overtakes the insert it follows, however the link reorders).
pub struct Churn {
    /// Mean operations per second, over all nodes.
    pub rate: f64,
    /// Share of creations, updates and deletions (the rest).
    pub create: f64,
    pub update: f64,
    pub min_age: Duration,
    /// Cap on the states a node owns (creations turn into updates beyond).
    pub max_owned: usize,
}

impl Default for Churn {
    fn default() -> Self {
        Churn {
            rate: 200.0,
            create: 0.3,
            update: 0.6,
            min_age: Duration::from_secs(3),
            max_owned: 400,
        }
    }
}

impl Churn {
    /// Runs the network for `d` with this churn going on.
    pub fn run(&self, sim: &mut Sim, d: Duration) {
        let until = sim.now + d;
        let mean = Duration::from_secs_f64(1.0 / self.rate);
        let mut next_op = sim.now;
        loop {
            let event = sim.next_event();
            if next_op <= until && event.is_none_or(|t| t >= next_op) {
                sim.now = sim.now.max(next_op);
                self.one(sim);
                next_op += mean.mul_f64(0.5 + sim.rng.below(1000) as f64 / 1000.0);
                continue;
            }
            match event {
                Some(t) if t <= until => {
                    sim.step();
                }
                _ => break,
            }
        }
        sim.now = sim.now.max(until);
    }

    /// One random operation on one random node that is up.
    pub fn one(&self, sim: &mut Sim) {
        let up: Vec<usize> = (0..sim.nodes.len()).filter(|&i| sim.nodes[i].up).collect();
        if up.is_empty() {
            return;
        }
        let i = sim.rng.pick(&up);
        let roll = sim.rng.below(1000) as f64 / 1000.0;
        let owned = sim.nodes[i].owned.len();
        if owned == 0 || (roll < self.create && owned < self.max_owned) {
            let s = random_state(&mut sim.rng);
            sim.create(i, s);
            return;
        }
        let ids: Vec<(u64, Duration)> = sim.nodes[i].owned.iter().map(|(k, v)| (*k, *v)).collect();
        let (id, born) = ids[sim.rng.below(ids.len() as u64) as usize];
        let key = (sim.nodes[i].creatorid(), id);
        let old_enough = sim.elapsed().saturating_sub(born) >= self.min_age;
        if roll < self.create + self.update || !old_enough {
            if let Some(&s) = sim.nodes[i].table.get(&key) {
                let s = advance(&mut sim.rng, s);
                sim.local(i, LocalChange::Update(s));
            }
        } else {
            sim.local(
                i,
                LocalChange::Delete {
                    creatorid: key.0,
                    id: key.1,
                },
            );
        }
    }
}
