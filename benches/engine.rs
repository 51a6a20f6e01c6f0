//! Engine benchmark: local changes in, packets out, on one core; and the engine's memory
//! per cached state.
//!
//! `cargo bench --bench engine` prints the figures. Without `--bench` (as under
//! `cargo test --benches`) it runs one tiny pass, to keep the code working.
//!
//! Throughput: a table of 100 000 states (also 10 000 and 1 000 000) under a realistic
//! mix of changes (15 % new states, 70 % updates of existing ones, 80 % of them TCP,
//! 15 % deletions), fed to the engine as the table backend would, on virtual time
//! advancing 1 µs per change, every packet drained as it is produced and the batching
//! timer run when due. The figure is changes handled per second of the engine's time,
//! packets and bytes out included. Updates hit random states, so with a large table
//! most of the cost is cache misses (index, then entry).
//!
//! Memory: a counting global allocator measures the bytes the engine holds for N cached
//! states (nothing queued), divided by N, minus `size_of::<State>()`: what the engine
//! costs beyond the state record itself.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use pfsyncd::engine::{Config, Engine, LocalChange};
use pfsyncd::state::{PeerLevel, PeerState, Protocol, State, TcpState, Timeout};
use pfsyncd::wire::{Dialect, IfName};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated() -> isize {
    ALLOCATED.load(Ordering::Relaxed)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CREATOR: u32 = 0x5eed_0001;

/// A new state: 80 % TCP, 20 % UDP, IPv4.
fn new_state(rng: &mut Rng, id: u64) -> State {
    let tcp = rng.below(10) < 8;
    let mut s = State {
        id,
        creatorid: CREATOR,
        ifname: IfName::new("em0").expect("a name"),
        packets: [1, 0],
        bytes: [60, 0],
        rule: Some(3),
        ..State::default()
    };
    s.wire.addr = [
        IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
        IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
    ];
    s.wire.port = [rng.next() as u16, 443];
    if tcp {
        s.src.state = PeerState::Tcp(TcpState::SynSent);
        s.dst.state = PeerState::Tcp(TcpState::Closed);
        s.src.seqlo = rng.next() as u32;
        s.timeout = Timeout::TcpFirst;
    } else {
        s.wire.proto = Protocol::Udp;
        s.src.state = PeerState::Level(PeerLevel::SINGLE);
        s.dst.state = PeerState::Level(PeerLevel::NO_TRAFFIC);
        s.timeout = Timeout::UdpFirst;
    }
    s.stack = s.wire;
    s
}

/// The state after one more packet.
fn touch(s: &mut State) {
    s.packets[0] += 1;
    s.bytes[0] += 1400;
    match s.dst.state {
        PeerState::Tcp(TcpState::Closed) => {
            s.src.state = PeerState::Tcp(TcpState::Established);
            s.dst.state = PeerState::Tcp(TcpState::Established);
            s.timeout = Timeout::TcpEstablished;
        }
        PeerState::Tcp(_) => {
            s.src.seqlo = s.src.seqlo.wrapping_add(1400);
            s.dst.seqhi = s.src.seqlo.wrapping_add(65535);
        }
        PeerState::Level(_) => {
            s.src.state = PeerState::Level(PeerLevel::MULTIPLE);
            s.timeout = Timeout::UdpSingle;
        }
    }
}

struct Run {
    changes: u64,
    packets: u64,
    bytes: u64,
    elapsed: Duration,
}

/// Feeds `changes` local changes to an engine holding `table` states, keeping digest
/// sums of `digest_buckets` buckets if given (`Engine::enable_digests`).
///
/// The changes are made in batches before they are timed, as the table backend hands
/// them over ready-made; the clock runs only while the engine works (changes in,
/// timers, packets out).
fn throughput(dialect: Dialect, table: usize, changes: u64, digest_buckets: Option<u16>) -> Run {
    const BATCH: u64 = 50_000;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut engine = Engine::new(Config::random(dialect, [7; 32]));
    if let Some(buckets) = digest_buckets {
        engine.enable_digests(buckets);
    }
    let base = Instant::now();
    let mut live: Vec<State> = Vec::with_capacity(table * 2);
    let mut next_id = 1;
    // Fill the table (not timed).
    for _ in 0..table {
        let s = new_state(&mut rng, next_id);
        next_id += 1;
        engine.handle_local(base, LocalChange::Insert(s));
        live.push(s);
    }
    engine.flush(base);
    while engine.poll_transmit().is_some() {}
    let (mut packets, mut bytes) = (0, 0);
    let mut elapsed = Duration::ZERO;
    let mut batch = Vec::with_capacity(BATCH as usize);
    let mut done = 0;
    while done < changes {
        batch.clear();
        for i in done..(done + BATCH).min(changes) {
            let now = base + Duration::from_micros(i + 1);
            let roll = rng.below(100);
            let change = if roll < 15 || live.is_empty() {
                let s = new_state(&mut rng, next_id);
                next_id += 1;
                live.push(s);
                LocalChange::Insert(s)
            } else if roll < 85 {
                let at = rng.below(live.len() as u64) as usize;
                touch(&mut live[at]);
                LocalChange::Update(live[at])
            } else {
                let at = rng.below(live.len() as u64) as usize;
                let s = live.swap_remove(at);
                LocalChange::Delete {
                    creatorid: s.creatorid,
                    id: s.id,
                }
            };
            batch.push((now, change));
        }
        done += batch.len() as u64;
        let started = Instant::now();
        for &(now, change) in &batch {
            engine.handle_local(now, change);
            if engine.poll_timeout().is_some_and(|t| t <= now) {
                engine.handle_timeout(now);
            }
            while let Some(t) = engine.poll_transmit() {
                packets += 1;
                bytes += t.payload.len() as u64;
            }
        }
        elapsed += started.elapsed();
    }
    let started = Instant::now();
    let end = base + Duration::from_micros(changes + 2_000_000);
    engine.flush(end);
    while let Some(t) = engine.poll_transmit() {
        packets += 1;
        bytes += t.payload.len() as u64;
    }
    elapsed += started.elapsed();
    std::hint::black_box(&engine);
    Run {
        changes,
        packets,
        bytes,
        elapsed,
    }
}

/// Nanoseconds per insert and per delete (the delete and its DEL_C sent) of `n` states,
/// the best of three passes, with and without digest sums: what keeping the sums costs
/// each change, apart from the rest of a change's work.
fn digest_upkeep(n: u64, digest_buckets: Option<u16>) -> (f64, f64) {
    let mut rng = Rng(0x0d16_e570_0000_0001);
    let states: Vec<State> = (1..=n).map(|id| new_state(&mut rng, id)).collect();
    let (mut insert, mut delete) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let mut engine = Engine::new(Config::random(Dialect::FreeBsd1400, [5; 32]));
        if let Some(buckets) = digest_buckets {
            engine.enable_digests(buckets);
        }
        let now = Instant::now();
        let started = Instant::now();
        for s in &states {
            engine.handle_local(now, LocalChange::Insert(*s));
            while engine.poll_transmit().is_some() {}
        }
        insert = insert.min(started.elapsed().as_nanos() as f64 / n as f64);
        let started = Instant::now();
        for s in &states {
            engine.handle_local(
                now,
                LocalChange::Delete {
                    creatorid: s.creatorid,
                    id: s.id,
                },
            );
            while engine.poll_transmit().is_some() {}
        }
        engine.flush(now);
        while engine.poll_transmit().is_some() {}
        delete = delete.min(started.elapsed().as_nanos() as f64 / n as f64);
        std::hint::black_box(&engine);
    }
    (insert, delete)
}

/// Engine bytes per cached state beyond the state record, for `n` states (digest sums
/// of `digest_buckets` buckets kept if given).
fn memory_per_state(n: u64, digest_buckets: Option<u16>) -> (f64, f64) {
    let mut rng = Rng(0x0bad_cafe_f00d_0001);
    let now = Instant::now();
    let states: Vec<State> = (1..=n).map(|id| new_state(&mut rng, id)).collect();
    let before = allocated();
    let mut engine = Engine::new(Config::random(Dialect::FreeBsd1400, [9; 32]));
    if let Some(buckets) = digest_buckets {
        engine.enable_digests(buckets);
    }
    for s in &states {
        engine.handle_local(now, LocalChange::Insert(*s));
        // Sent as they fill packets: nothing stays queued but the last packet's worth.
        while engine.poll_transmit().is_some() {}
    }
    engine.flush(now);
    while engine.poll_transmit().is_some() {}
    let total = (allocated() - before) as f64;
    let per_state = total / n as f64;
    std::hint::black_box(&engine);
    drop(engine);
    // The cache holds each state packed (src/state/compact.rs): what is beyond the
    // packed bytes is the engine's overhead.
    let mut packed = 0usize;
    let mut buf = Vec::new();
    for s in &states {
        buf.clear();
        pfsyncd::state::compact::encode(s, &mut buf);
        packed += buf.len();
    }
    let packed = packed as f64 / n as f64;
    (per_state, packed)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (table, changes, mem_n) = if full {
        (100_000, 3_000_000, 1_000_000)
    } else {
        (1_000, 10_000, 10_000)
    };
    println!(
        "engine benchmark ({})",
        if full { "full" } else { "quick pass" }
    );
    // The session layer's default digest bucket count (session::Config::new).
    const DIGEST_BUCKETS: u16 = 256;
    let runs = [
        (Dialect::FreeBsd1400, table, None),
        (Dialect::FreeBsd1400, table, Some(DIGEST_BUCKETS)),
        (Dialect::OpenBsd, table, None),
        (Dialect::FreeBsd1500, table, None),
        (Dialect::FreeBsd1400, table / 10, None),
        (Dialect::FreeBsd1400, table * 10, None),
        (Dialect::FreeBsd1400, table * 10, Some(DIGEST_BUCKETS)),
    ];
    for (dialect, table, digests) in runs {
        let r = throughput(dialect, table, changes, digests);
        let digests = match digests {
            Some(b) => format!(", digest sums of {b} buckets kept"),
            None => String::new(),
        };
        let rate = r.changes as f64 / r.elapsed.as_secs_f64();
        println!(
            "  {dialect:>7}: {} changes on a {table}-state table{digests} in {:.3} s: \
             {:.2} M changes/s, {} packets ({:.0}/s, {:.1} MB/s), {:.1} changes per packet",
            r.changes,
            r.elapsed.as_secs_f64(),
            rate / 1e6,
            r.packets,
            r.packets as f64 / r.elapsed.as_secs_f64(),
            r.bytes as f64 / r.elapsed.as_secs_f64() / 1e6,
            r.changes as f64 / r.packets.max(1) as f64,
        );
    }
    for digests in [None, Some(DIGEST_BUCKETS)] {
        let (insert, delete) = digest_upkeep(mem_n, digests);
        println!(
            "  upkeep: {mem_n} inserts then deletes{}: {insert:.0} ns per insert, \
             {delete:.0} ns per delete (best of 3)",
            match digests {
                Some(b) => format!(", digest sums of {b} buckets kept"),
                None => String::new(),
            }
        );
    }
    for digests in [None, Some(DIGEST_BUCKETS)] {
        let (per_state, packed) = memory_per_state(mem_n, digests);
        let kept = match digests {
            Some(b) => format!(" with digest sums of {b} buckets"),
            None => String::new(),
        };
        println!(
            "  memory: {mem_n} cached states{kept}: {per_state:.1} B allocated per state in all; \
         the state packed in {packed:.1} B on average (a State is {} B), so the engine's \
         overhead is {:.1} B per state (target <= 200; the allocator's own header per \
         allocation, 8-16 B, is not counted)",
            std::mem::size_of::<State>(),
            per_state - packed
        );
    }
}
