//! What each hop of the privilege-separated sync path costs (issue 14 point 5), as
//! histograms in `ctl stats` under "latency".
//!
//! A change goes: the parent polls the table (`table_poll`) → channel (`to_engine`) →
//! the engine process's turn (`engine_turn`) → channel (`to_parent`) → the parent sends
//! it (`send`) → the wire and the peer's parent receiving it (not measured here: the
//! rest of the end-to-end figure) → channel (`to_engine`) → the peer's engine turn →
//! channel (`to_parent`) → the peer's parent applies the operation (`apply`).
//!
//! The channel hops are measured with stamps: a process writes one before the first
//! frame of a turn's batch, and the reader takes the difference when it reads it, so a
//! hop is the time from the first frame being queued to its being read: the rest of
//! the writer's turn, the flush, the wake-up and the reader's turn up to that frame.
//! The stamps read a clock that both processes share: an `Instant` base taken before
//! the engine process is forked ([`start_clock`]).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// Buckets per doubling of the time: a figure is known within 19 %.
const PER_OCTAVE: f64 = 4.0;
/// Buckets: from 1 µs up to 2^15.5 µs (46 ms); longer goes to the last (the max says
/// how long).
pub const BUCKETS: usize = 64;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Takes the clock's base. Called before the engine process is forked, so both
/// processes read stamps against the same base.
pub fn start_clock() {
    BASE.get_or_init(Instant::now);
}

/// Nanoseconds since the base: a stamp the other process can compare with its own.
pub fn stamp() -> u64 {
    let base = *BASE.get_or_init(Instant::now);
    base.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64
}

/// The time from a stamp until now.
pub fn since(stamp_ns: u64) -> Duration {
    Duration::from_nanos(stamp().saturating_sub(stamp_ns))
}

/// `at` on the machine's CLOCK_MONOTONIC, in nanoseconds: one clock for every process
/// and network namespace of the machine (Linux's time namespaces aside), so that two
/// daemons' stamps of one state, its insertion into the sender's table and its
/// application in the peer's, give the sync path's time between two tables without the
/// control requests that asked (issue 14 point 5). `Instant` is not tied to a named
/// clock: the offset from now is taken instead. `None` if the clock cannot be read.
pub fn monotonic_ns(at: Instant) -> Option<u64> {
    let clock = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let now_ns = u64::try_from(clock.tv_sec())
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(u64::try_from(clock.tv_nsec()).ok()?)?;
    let ago = Instant::now().saturating_duration_since(at);
    now_ns.checked_sub(u64::try_from(ago.as_nanos()).ok()?)
}

/// A histogram of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram {
    /// Counts per bucket (see [`Histogram::bucket_of`]).
    pub counts: [u64; BUCKETS],
    /// The longest, in µs.
    pub max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: [0; BUCKETS],
            max_us: 0,
        }
    }
}

impl Histogram {
    /// The bucket of `us` microseconds: 0 below 1 µs, then four per doubling.
    fn bucket_of(us: f64) -> usize {
        if us < 1.0 {
            return 0;
        }
        ((us.log2() * PER_OCTAVE) as usize + 1).min(BUCKETS - 1)
    }

    /// The upper bound of a bucket, in µs.
    fn upper_us(bucket: usize) -> f64 {
        2f64.powf(bucket as f64 / PER_OCTAVE)
    }

    /// Counts one.
    pub fn record(&mut self, d: Duration) {
        self.record_each(d, 1);
    }

    /// Counts `n`, each of `d` (what a group timed together took each, on average).
    pub fn record_each(&mut self, d: Duration, n: u64) {
        let us = d.as_secs_f64() * 1e6;
        self.counts[Self::bucket_of(us)] += n;
        self.max_us = self.max_us.max(us.ceil() as u64);
    }

    /// How many were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `p` quantile (0 to 1), in µs: the upper bound of its bucket, never above
    /// the max.
    pub fn quantile_us(&self, p: f64) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        let rank = ((n as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank && i == BUCKETS - 1 {
                // The last bucket holds everything longer: only the max is known.
                return self.max_us as f64;
            }
            if seen >= rank {
                return Self::upper_us(i).min(self.max_us as f64);
            }
        }
        self.max_us as f64
    }

    /// `{count, p50_us, p99_us, max_us, counts}`: `counts` per bucket, bucket `i`
    /// holding what took up to 2^(i/4) µs (the last: longer), so that a reader can
    /// subtract two readings and have the figures of the time between.
    pub fn json(&self) -> Value {
        json!({
            "count": self.count(),
            "p50_us": (self.quantile_us(0.5) * 10.0).round() / 10.0,
            "p99_us": (self.quantile_us(0.99) * 10.0).round() / 10.0,
            "max_us": self.max_us,
            "counts": self.counts.to_vec(),
        })
    }

    /// The counts and the max, for the channel.
    pub fn words(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts.iter().copied().chain([self.max_us])
    }

    /// From [`words`](Self::words).
    pub fn from_words(mut next: impl FnMut() -> Option<u64>) -> Option<Histogram> {
        let mut h = Histogram::default();
        for c in &mut h.counts {
            *c = next()?;
        }
        h.max_us = next()?;
        Some(h)
    }
}

/// The parent's hops, reported to the engine process with every request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParentLatency {
    /// Polling the table and queuing its changes for the engine, per poll that found
    /// some.
    pub table_poll: Histogram,
    /// From the engine queuing a turn's first packet or operation to the parent
    /// reading it.
    pub to_parent: Histogram,
    /// Sending one packet on the sync link.
    pub send: Histogram,
    /// Applying one table operation.
    pub apply: Histogram,
}

impl ParentLatency {
    /// The histograms in a fixed order, with their names.
    pub fn named(&self) -> [(&'static str, &Histogram); 4] {
        [
            ("table_poll", &self.table_poll),
            ("to_parent", &self.to_parent),
            ("send", &self.send),
            ("apply", &self.apply),
        ]
    }

    /// The same, to fill in.
    pub fn named_mut(&mut self) -> [&mut Histogram; 4] {
        [
            &mut self.table_poll,
            &mut self.to_parent,
            &mut self.send,
            &mut self.apply,
        ]
    }
}

/// The engine process's hops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineLatency {
    /// From the parent queuing a batch's first change or datagram to the engine
    /// reading it.
    pub to_engine: Histogram,
    /// From reading that to the end of the turn's flush to the parent (the engine's
    /// work on the batch, the end-of-turn send, the flush).
    pub engine_turn: Histogram,
}

/// The hops' names in path order (`ctl stats` lists them by name).
pub const HOPS: [&str; 6] = [
    "table_poll",
    "to_engine",
    "engine_turn",
    "to_parent",
    "send",
    "apply",
];

/// Every hop, for `ctl stats`.
pub fn json(parent: &ParentLatency, engine: &EngineLatency) -> Value {
    let p = parent.named();
    let mut m = Map::new();
    for (name, h) in [
        p[0],
        ("to_engine", &engine.to_engine),
        ("engine_turn", &engine.engine_turn),
        p[1],
        p[2],
        p[3],
    ] {
        m.insert(name.to_string(), h.json());
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_right_bucket_and_never_pass_the_max() {
        let mut h = Histogram::default();
        for _ in 0..98 {
            h.record(Duration::from_micros(100));
        }
        h.record(Duration::from_micros(400));
        h.record(Duration::from_millis(700));
        assert_eq!(h.count(), 100);
        let p50 = h.quantile_us(0.5);
        assert!((100.0..=119.0).contains(&p50), "{p50}");
        let p99 = h.quantile_us(0.99);
        assert!((400.0..=476.0).contains(&p99), "{p99}");
        assert_eq!(h.max_us, 700_000);
        assert_eq!(h.quantile_us(1.0), 700_000.0);
        let mut words = h.words();
        assert_eq!(Histogram::from_words(|| words.next()), Some(h));
        assert_eq!(Histogram::default().quantile_us(0.99), 0.0);
    }

    #[test]
    fn a_stamp_measures_the_time_since() {
        start_clock();
        let s = stamp();
        std::thread::sleep(Duration::from_millis(2));
        assert!(since(s) >= Duration::from_millis(2));
        // A stamp from the future (a bad peer process) is no time, not a panic.
        assert_eq!(since(u64::MAX), Duration::ZERO);
    }

    #[test]
    fn monotonic_stamps_follow_the_instants_they_were_taken_from() {
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(3));
        let t1 = Instant::now();
        let a = monotonic_ns(t0).expect("CLOCK_MONOTONIC");
        let b = monotonic_ns(t1).expect("CLOCK_MONOTONIC");
        // The same instant read twice, and two instants as far apart as they were.
        let again = monotonic_ns(t0).unwrap();
        assert!(a.abs_diff(again) < 1_000_000, "{a} {again}");
        let apart = (t1 - t0).as_nanos() as u64;
        assert!((b - a).abs_diff(apart) < 1_000_000, "{a} {b} {apart}");
        // Another reader of the clock (the bench, the peer) sees the same time.
        let other = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
        let other_ns = other.tv_sec() as u64 * 1_000_000_000 + other.tv_nsec() as u64;
        let now_ns = monotonic_ns(Instant::now()).unwrap();
        assert!(now_ns.abs_diff(other_ns) < 1_000_000, "{now_ns} {other_ns}");
    }
}
