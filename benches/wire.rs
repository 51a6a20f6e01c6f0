//! Encode and decode throughput of every state record format, in records per second on
//! one core, with a count of heap allocations per record.
//!
//! Run with `cargo bench --bench wire`. Decoding means `PacketReader` over whole
//! packets: header checks, subheader walk, each record parsed into its `Repr` and
//! validated as the receiving kernel does. Encoding means `PacketBuilder::push` of
//! every record plus `finish` per packet.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pfsyncd::wire::msg::{PeerRepr, StateRecord, UpdCRepr};
use pfsyncd::wire::{
    Dialect, Item, Message, PacketBuilder, PacketReader, Pushed, RawItem, RecordFormat,
};

/// Counts every allocation, so the bench can show there is none per record.
struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarding the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// How long each figure is measured: 1.5 s under `cargo bench`; under `cargo test
/// --benches` (no `--bench` flag) one short pass, so the bench code is exercised.
fn run_for() -> Duration {
    if std::env::args().any(|a| a == "--bench") {
        Duration::from_millis(1500)
    } else {
        Duration::from_millis(1)
    }
}

fn peer(seq: u32) -> PeerRepr {
    PeerRepr {
        seqlo: seq,
        seqhi: seq.wrapping_add(65535),
        max_win: 65535,
        mss: 1460,
        state: 4,
        wscale: 0x87,
        ..PeerRepr::default()
    }
}

/// A state record of `format` with every field set to something plausible.
fn record(format: RecordFormat, i: u64) -> StateRecord {
    let raw = vec![0u8; format.size()];
    let mut r = StateRecord::parse(format, &raw).expect("a zero record parses");
    let i32v = i as u32;
    macro_rules! common {
        ($r:expr) => {{
            $r.id = i.to_be();
            $r.creatorid = 0x1a2b_3c4d;
            $r.src = peer(i32v);
            $r.dst = peer(i32v ^ 0x5555_5555);
            $r.rule = u32::MAX;
            $r.anchor = u32::MAX;
            $r.nat_rule = u32::MAX;
            $r.creation = 30;
            $r.expire = 86_000;
            $r.packets = [i, i * 2];
            $r.bytes = [i * 1500, i * 3000];
            $r.direction = 1;
            $r.timeout = 2;
            $r.key[0].port = [40000 + (i % 20000) as u16, 443];
            $r.key[1].port = $r.key[0].port;
        }};
    }
    match &mut r {
        StateRecord::OpenBsd(s) => {
            common!(s);
            s.af = 2;
            s.proto = 6;
        }
        StateRecord::FreeBsd1301(s) => {
            common!(s);
            s.af = 2;
            s.proto = 6;
        }
        StateRecord::FreeBsd1400(s) => {
            common!(s);
            s.af = 28;
            s.proto = 6;
            s.rtableid = -1;
        }
        StateRecord::FreeBsd1500(s) => {
            common!(s);
            s.wire_af = 2;
            s.stack_af = 2;
            s.wire_proto = 6;
            s.stack_proto = 6;
            s.rtableid = -1;
        }
    }
    r
}

fn dialect_of(format: RecordFormat) -> Dialect {
    match format {
        RecordFormat::OpenBsd => Dialect::OpenBsd,
        RecordFormat::FreeBsd1301 => Dialect::FreeBsd1301,
        RecordFormat::FreeBsd1400 => Dialect::FreeBsd1400,
        RecordFormat::FreeBsd1500 => Dialect::FreeBsd1500,
    }
}

/// Builds packets holding `n` messages in total.
fn packets(dialect: Dialect, mtu: usize, messages: &[Message]) -> Vec<Vec<u8>> {
    let mut b = PacketBuilder::new(dialect, mtu);
    let mut out = Vec::new();
    for m in messages {
        if b.push(m).expect("valid record") == Pushed::Full {
            out.push(b.finish().expect("non-empty"));
            assert_eq!(b.push(m).expect("valid record"), Pushed::Added);
        }
    }
    out.extend(b.finish());
    out
}

struct Figures {
    records_per_sec: f64,
    allocs_per_record: f64,
}

fn measure(mut round: impl FnMut() -> u64) -> Figures {
    // Warm up, then run whole rounds until the time is up.
    round();
    let allocs_before = ALLOCATIONS.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut records = 0u64;
    let run_for = run_for();
    while start.elapsed() < run_for {
        records += round();
    }
    let secs = start.elapsed().as_secs_f64();
    let allocs = ALLOCATIONS.load(Ordering::Relaxed) - allocs_before;
    Figures {
        records_per_sec: records as f64 / secs,
        allocs_per_record: allocs as f64 / records as f64,
    }
}

fn decode_round(packets: &[Vec<u8>]) -> u64 {
    let mut n = 0u64;
    for p in packets {
        let reader = PacketReader::new(black_box(p)).expect("valid packet");
        for item in reader.items() {
            if let Ok(Item::Message(ref m)) = item {
                black_box(m);
                n += 1;
            } else if item.is_err() {
                panic!("bench packets are valid");
            }
        }
    }
    n
}

fn walk_round(packets: &[Vec<u8>]) -> u64 {
    let mut n = 0u64;
    for p in packets {
        let reader = PacketReader::new(black_box(p)).expect("valid packet");
        for item in reader.raw_items() {
            match item {
                Ok(RawItem::Record(r)) => {
                    black_box(r.bytes());
                    n += 1;
                }
                Ok(_) => {}
                Err(e) => panic!("bench packets are valid: {e}"),
            }
        }
    }
    n
}

fn encode_round(dialect: Dialect, mtu: usize, messages: &[Message]) -> u64 {
    let mut b = PacketBuilder::new(dialect, mtu);
    for m in messages {
        if b.push(black_box(m)).expect("valid") == Pushed::Full {
            black_box(b.finish());
            let _ = b.push(m);
        }
    }
    black_box(b.finish());
    messages.len() as u64
}

fn report(what: &str, mtu: usize, f: &Figures) {
    println!(
        "{what:<34} mtu {mtu:>5}  {:>8.2} M records/s  {:>6.3} allocations/record",
        f.records_per_sec / 1e6,
        f.allocs_per_record
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    const N: u64 = 4096;
    if std::env::args().any(|a| a == "--bench") {
        println!("pfsync wire codec, one core; {N} records per round");
    } else {
        println!(
            "smoke pass of the wire bench (not a measurement: run `cargo bench --bench wire`)"
        );
    }
    for format in [
        RecordFormat::OpenBsd,
        RecordFormat::FreeBsd1301,
        RecordFormat::FreeBsd1400,
        RecordFormat::FreeBsd1500,
    ] {
        let dialect = dialect_of(format);
        let messages: Vec<Message> = (0..N).map(|i| Message::Upd(record(format, i))).collect();
        for mtu in [1500, 9000] {
            let pkts = packets(dialect, mtu, &messages);
            let name = format!("walk+validate {}", format.name());
            report(&name, mtu, &measure(|| walk_round(&pkts)));
            let name = format!("walk+validate+parse {}", format.name());
            report(&name, mtu, &measure(|| decode_round(&pkts)));
            let name = format!("encode {}", format.name());
            report(
                &name,
                mtu,
                &measure(|| encode_round(dialect, mtu, &messages)),
            );
        }
    }
    for dialect in [Dialect::OpenBsd, Dialect::FreeBsd1400] {
        let messages: Vec<Message> = (0..N)
            .map(|i| {
                Message::UpdC(UpdCRepr {
                    id: i.to_be(),
                    creatorid: 1,
                    src: peer(i as u32),
                    dst: peer(!(i as u32)),
                    timeout: 2,
                    ..UpdCRepr::default()
                })
            })
            .collect();
        let pkts = packets(dialect, 1500, &messages);
        let name = format!("walk+validate upd_c {}", dialect.family_name());
        report(&name, 1500, &measure(|| walk_round(&pkts)));
        let name = format!("walk+validate+parse upd_c {}", dialect.family_name());
        report(&name, 1500, &measure(|| decode_round(&pkts)));
        let name = format!("encode upd_c {}", dialect.family_name());
        report(
            &name,
            1500,
            &measure(|| encode_round(dialect, 1500, &messages)),
        );
    }
}

trait FamilyName {
    fn family_name(&self) -> &'static str;
}

impl FamilyName for Dialect {
    fn family_name(&self) -> &'static str {
        match self.family() {
            pfsyncd::wire::Family::OpenBsd => "openbsd",
            pfsyncd::wire::Family::FreeBsd => "freebsd",
        }
    }
}
