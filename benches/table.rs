//! Change detection by snapshot + diff over a listing of the state table, as the pf
//! backend will run it: build the snapshot of a new listing (fingerprint every state,
//! sort by name) and diff it against the previous one, with some changes and some echoes
//! of our own operations to recognise. Targets (issue 5), on one core: 100 000 states in
//! 20 ms, 1 000 000 in 200 ms.
//!
//! Also the cost of one `ctl delete 10` request on the memory table (issue 14 point 7):
//! by a listing of the table, as before, and by the table's sample.
//!
//! Run with `cargo bench --bench table` (`-- delete` for the request's figures only). Under `cargo test --benches` (no `--bench`
//! argument) it runs one small pass, so the code is exercised.

use std::hint::black_box;
use std::time::{Duration, Instant};

use pfsyncd::engine::LocalChange;
use pfsyncd::state::State;
use pfsyncd::table::diff::{diff, Change, Differ, Echoes, Snapshot};
use pfsyncd::table::pf::{Listing, PfDevice, PfTable};
use pfsyncd::table::synth::Synth;
use pfsyncd::table::{MemoryConfig, MemoryTable, StateTable};
use pfsyncd::wire::RecordFormat;

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// A listing of `n` states, in the scattered order a kernel's hash walk gives.
fn listing(n: usize) -> Vec<State> {
    let mut synth = Synth::new(0x7ab1e, 0x0102_0304);
    let mut states = synth.states(n);
    // Shuffle (Fisher-Yates with the generator).
    for i in (1..states.len()).rev() {
        let j = synth.below(i as u64 + 1) as usize;
        states.swap(i, j);
    }
    states
}

/// The next listing: 1 % of the states changed by traffic, 0.5 % gone, 0.5 % new, and
/// 0.5 % changed by our own updates (expected as echoes).
fn churn(old: &[State], echoes: &mut Echoes) -> Vec<State> {
    let mut synth = Synth::new(0xc4a2, 0x0506_0708);
    let mut new = Vec::with_capacity(old.len() + old.len() / 200);
    for (i, s) in old.iter().enumerate() {
        let mut s = *s;
        match i % 200 {
            0 | 1 => synth.advance(&mut s),
            2 => continue,
            3 => {
                s.src.seqlo = s.src.seqlo.wrapping_add(1);
                echoes.expect_state(&s);
            }
            _ => {}
        }
        new.push(s);
    }
    for _ in 0..old.len() / 200 {
        new.push(synth.state());
    }
    new
}

struct Figures {
    build: Duration,
    diff: Duration,
    differ: Duration,
    changes: usize,
}

fn measure(n: usize, rounds: usize) -> Figures {
    let old = listing(n);
    let mut echoes = Echoes::new();
    let new = churn(&old, &mut echoes);
    let old_snap = Snapshot::build(&old);
    let mut snap = Snapshot::new();
    let mut changes: Vec<Change> = Vec::new();
    let (mut build, mut diff_time, mut differ_time) = (Duration::MAX, Duration::MAX, Duration::MAX);
    let mut reported = 0;
    for _ in 0..rounds {
        let mut e = echoes.clone();
        let t = Instant::now();
        snap.rebuild(black_box(&new));
        let built = t.elapsed();
        changes.clear();
        let t = Instant::now();
        let stats = diff(&old_snap, &snap, &mut e, &mut changes);
        let diffed = t.elapsed();
        black_box(&changes);
        build = build.min(built);
        diff_time = diff_time.min(diffed);
        reported = changes.len();
        assert_eq!(stats.echoes as usize, n.div_ceil(200));

        // The whole poll as the backend runs it, local changes included.
        let mut differ = Differ::new();
        let mut out: Vec<LocalChange> = Vec::new();
        differ.poll(&old, &mut out);
        *differ.echoes_mut() = echoes.clone();
        out.clear();
        let t = Instant::now();
        differ.poll(black_box(&new), &mut out);
        differ_time = differ_time.min(t.elapsed());
        black_box(&out);
    }
    Figures {
        build,
        diff: diff_time,
        differ: differ_time,
        changes: reported,
    }
}

/// A device that lists a fixed kernel buffer, as DIOCGETSTATES would copy it out.
struct Buffer {
    records: Vec<u8>,
    format: RecordFormat,
}

impl PfDevice for Buffer {
    fn format(&self) -> RecordFormat {
        self.format
    }
    fn list(&mut self, out: &mut Vec<u8>) -> std::io::Result<Listing> {
        out.clear();
        out.extend_from_slice(&self.records);
        Ok(Listing::Complete)
    }
    fn add(&mut self, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn kill(&mut self, _: u32, _: u64) -> std::io::Result<u32> {
        Ok(1)
    }
}

fn kernel_buffer(states: &[State], format: RecordFormat) -> Vec<u8> {
    let size = format.size();
    let mut b = vec![0u8; states.len() * size];
    for (s, chunk) in states.iter().zip(b.chunks_exact_mut(size)) {
        s.to_record(format).0.emit_bytes(chunk);
    }
    b
}

/// The pf table's whole poll from kernel-format buffers: copy out, decode every record,
/// snapshot, diff. Best of `rounds` steady polls with 1 % of the states changed.
fn pf_poll(n: usize, format: RecordFormat, rounds: usize) -> (Duration, usize) {
    let old = listing(n);
    let mut echoes = Echoes::new();
    let new = churn(&old, &mut echoes);
    let (a, b) = (kernel_buffer(&old, format), kernel_buffer(&new, format));
    let mut best = Duration::MAX;
    let mut changes = 0;
    for _ in 0..rounds {
        let mut t = PfTable::new(Buffer {
            records: a.clone(),
            format,
        });
        let mut out = Vec::new();
        t.poll_changes(Instant::now(), &mut out).unwrap();
        t.device_mut().records = b.clone();
        out.clear();
        let start = Instant::now();
        t.poll_changes(Instant::now(), &mut out).unwrap();
        best = best.min(start.elapsed());
        changes = out.len();
        black_box(&out);
    }
    (best, changes)
}

fn main() {
    let full = full_run();
    // `cargo bench --bench table -- delete`: only the control request's figures.
    let only_delete = std::env::args().any(|a| a == "delete");
    let sizes: &[(usize, f64)] = if full {
        &[(100_000, 20.0), (1_000_000, 200.0)]
    } else {
        &[(2_000, f64::INFINITY)]
    };
    let rounds = if full { 5 } else { 1 };
    if !only_delete {
        diff_and_poll(sizes, rounds);
    }
    delete_figures(full);
}

fn diff_and_poll(sizes: &[(usize, f64)], rounds: usize) {
    println!("snapshot + diff, best of {rounds}, one core");
    for &(n, target_ms) in sizes {
        let f = measure(n, rounds);
        let total = (f.build + f.diff).as_secs_f64() * 1e3;
        println!(
            "{n:>9} states: snapshot {:7.2} ms + diff {:6.2} ms = {total:7.2} ms \
             (target {target_ms} ms{}); {} changes; Differ::poll {:7.2} ms",
            f.build.as_secs_f64() * 1e3,
            f.diff.as_secs_f64() * 1e3,
            if total <= target_ms {
                ", met"
            } else {
                ", MISSED"
            },
            f.changes,
            f.differ.as_secs_f64() * 1e3,
        );
    }
    println!(
        "pf table poll from kernel-format buffers (copy, decode, snapshot, diff), best of {rounds}"
    );
    for &(n, target_ms) in sizes {
        for format in [RecordFormat::FreeBsd1301, RecordFormat::OpenBsd] {
            let (t, changes) = pf_poll(n, format, rounds);
            let ms = t.as_secs_f64() * 1e3;
            println!(
                "{n:>9} states, {:>7} records: {ms:7.2} ms (target {target_ms} ms{}); {changes} changes",
                format.name(),
                if ms <= target_ms { ", met" } else { ", MISSED" },
            );
        }
    }
}

fn delete_figures(full: bool) {
    let sizes: &[usize] = if full {
        &[100_000, 1_000_000]
    } else {
        &[2_000]
    };
    println!("ctl delete 10 on the memory table, CPU per request (one thread)");
    for &n in sizes {
        let (listing, sampled) = delete_requests(n, if full { 5 } else { 1 });
        println!(
            "{n:>9} states: listing the table {:9.3} ms, sampling {:7.4} ms ({:.0}x)",
            listing.as_secs_f64() * 1e3,
            sampled.as_secs_f64() * 1e3,
            listing.as_secs_f64() / sampled.as_secs_f64().max(1e-9),
        );
    }
}

/// A memory table of `n` states of a peer, as a bulk update leaves it.
fn memory_table(n: usize) -> MemoryTable {
    let now = Instant::now();
    let mut t = MemoryTable::new(MemoryConfig::new(1));
    for s in Synth::new(0xde1e7e, 2).states(n) {
        t.import(now, &s).unwrap();
    }
    t
}

/// The time per `delete 10` request: as the parent answered it before issue 14 (list
/// every state, shuffle the first ten out; kept here only for the comparison), and by
/// the table's sample. Best of `rounds` requests each.
fn delete_requests(n: usize, rounds: usize) -> (Duration, Duration) {
    let mut table = memory_table(n);
    let mut synth = Synth::new(0x5eed, 1);
    let now = Instant::now();
    let (mut listing, mut sampled) = (Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        let t = Instant::now();
        let mut keys = Vec::with_capacity(table.len());
        table
            .for_each_state(now, &mut |s| keys.push((s.creatorid, s.id)))
            .unwrap();
        for i in 0..10.min(keys.len()) {
            let j = i + synth.below((keys.len() - i) as u64) as usize;
            keys.swap(i, j);
        }
        keys.truncate(10);
        let gone = keys.iter().filter(|k| table.delete_local(k.0, k.1)).count();
        listing = listing.min(t.elapsed());
        black_box(gone);
    }
    for _ in 0..rounds * 100 {
        let t = Instant::now();
        let keys = table.sample(10, |b| synth.below(b));
        let gone = keys.iter().filter(|k| table.delete_local(k.0, k.1)).count();
        sampled = sampled.min(t.elapsed());
        black_box(gone);
    }
    (listing, sampled)
}
