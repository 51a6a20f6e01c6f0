//! How long a change takes to reach the peer's table (issue 14 point 5), between two
//! daemons in network namespaces on this machine (root, Linux), the same setup as
//! `benches/cluster.rs`:
//!
//! 1. one new state on an idle cluster (target p99 <= 1 ms);
//! 2. one new state while the sender churns 10 000 changes/s (target p99 <= 0.5 ms);
//! 3. the same at 100 000 changes/s (target p99 <= 2 ms, max <= 50 ms);
//!
//! each with `immediate on` (both daemons are pfsyncd), and the idle case once more
//! with `immediate off` (the kernels' 1 s batch) for comparison.
//!
//! A probe is `ctl insert 1` on the sender, then `ctl get --json` on the peer every
//! 0.5 ms until the state is there; the peer's answer says how long ago its parent
//! wrote the state into the table (`applied_us_ago`), so the arrival is known whatever
//! the polling's delay, and the polling stays light enough not to take the CPU the
//! daemons need on a two-core machine. Each probe gives two figures, both printed:
//!
//! - "end to end": the bench's clock starts before the insert request is written, so
//!   it includes the insert's control round trip into the sender (the bench's wake-up,
//!   the sender parent's) and the way back of the answer that found it; the bench
//!   measures a control round trip on its own (`ctl get` of a state that exists) and
//!   prints it;
//! - "sync path", the figure: from the state's insertion into the sender's
//!   table (`created_monotonic_ns` in the insert's answer) to its application in the
//!   peer's (`applied_monotonic_ns` in `get --json`), two stamps of CLOCK_MONOTONIC,
//!   which all network namespaces of the machine share.
//!
//! The daemons' own per-hop figures (`ctl stats`, "latency"), taken over the probes'
//! time only, are printed after each case: what each hop of the privilege-separated
//! path costs. So are, for the churning cases, the four processes' CPU over the probes
//! and per change made, and the load average at the start: on a shared two-core
//! machine the wall-clock quantiles follow the other work, the CPU figures much less.
//!
//! `cargo bench --bench latency` (`-- quick` for shorter runs; `-- idle`, `-- 10k` or
//! `-- 100k` for one case).

#[cfg(target_os = "linux")]
mod linux {
    use std::time::{Duration, Instant};

    use pfsyncd::lab::{percentile, wait_until, Cluster};

    const BIN: &str = env!("CARGO_BIN_EXE_pfsyncd");
    /// States both tables hold while the churn runs around them.
    const TABLE: usize = 100_000;
    /// Between two polls of the peer's table.
    const POLL_PAUSE: Duration = Duration::from_micros(500);
    /// The hops of the sync path, in path order (`pfsyncd::daemon::latency`).
    const HOPS: [&str; 6] = pfsyncd::daemon::latency::HOPS;
    /// Buckets per doubling of the histograms' time.
    const PER_OCTAVE: f64 = 4.0;

    fn cluster(tag: &str) -> Cluster {
        Cluster::new(BIN.as_ref(), &format!("pfsd-lat{tag}-"), 2)
            .unwrap_or_else(|e| panic!("latency bench: {e} (run as root, with iproute2)"))
    }

    /// Milliseconds, sorted.
    fn summary(mut ms: Vec<f64>) -> String {
        ms.sort_by(f64::total_cmp);
        format!(
            "p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms over {} probes",
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN),
            ms.len()
        )
    }

    /// One probe's two figures, in ms: end to end (from before the insert request to
    /// the peer's write) and the sync path (the sender's insertion to the peer's write,
    /// on the daemons' CLOCK_MONOTONIC stamps).
    #[derive(Default)]
    struct Probes {
        end_to_end: Vec<f64>,
        sync_path: Vec<f64>,
        lost: usize,
    }

    impl Probes {
        fn push(&mut self, probe: Option<(f64, f64)>) {
            match probe {
                Some((e2e, sync)) => {
                    self.end_to_end.push(e2e);
                    self.sync_path.push(sync);
                }
                None => self.lost += 1,
            }
        }

        fn summary(self) -> String {
            format!(
                "sync path (sender's table to peer's table) {}; end to end (from the \
                 insert request, with its control round trip) {}{}",
                summary(self.sync_path),
                summary(self.end_to_end),
                lost_note(self.lost)
            )
        }
    }

    /// One probe: a new state on host 0, until host 1's table holds it. `None` if it
    /// did not arrive within `timeout` (the churn may delete a state it adopted).
    fn probe(c: &Cluster, timeout: Duration) -> Option<(f64, f64)> {
        let start = Instant::now();
        let answer = c.ctl(0, "insert 1").ok()?;
        // "inserted 1: creatorid C ids A to A created_monotonic_ns N"
        let w: Vec<&str> = answer.split_whitespace().collect();
        let get = format!("get {} {} --json", w.get(3)?, w.get(5)?);
        let created: u64 = w.get(9)?.parse().ok()?;
        while start.elapsed() < timeout {
            if let Ok(text) = c.ctl(1, &get) {
                let found = start.elapsed();
                // The peer says how long before its answer the state was written in:
                // the arrival, whatever the polling's delay (the answer's own way back
                // is left in, a few tens of µs).
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                let ago = Duration::from_micros(v["applied_us_ago"].as_u64()?);
                let applied = v["applied_monotonic_ns"].as_u64()?;
                return Some((
                    found.saturating_sub(ago).as_secs_f64() * 1000.0,
                    applied.saturating_sub(created) as f64 / 1e6,
                ));
            }
            // Polled gently: on two cores a tight poll loop takes the CPU the daemons
            // need, and the peer's stamp makes the pause cost no precision.
            std::thread::sleep(POLL_PAUSE);
        }
        None
    }

    /// The control round trip alone: `ctl get` of a state host 1 holds.
    fn round_trip(c: &Cluster) -> String {
        let answer = c.ctl(0, "insert 1").unwrap();
        let w: Vec<&str> = answer.split_whitespace().collect();
        let get = format!("get {} {}", w[3], w[5]);
        wait_until(Duration::from_secs(5), || c.ctl(1, &get).is_ok()).expect("probe state");
        let ms = (0..500)
            .map(|_| {
                let t = Instant::now();
                c.ctl(1, &get).unwrap();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        summary(ms)
    }

    /// The per-hop histograms of a daemon (`ctl stats`, "latency"): per hop, the
    /// counts per bucket and the max.
    fn hop_counts(c: &Cluster, i: usize) -> Vec<(Vec<u64>, u64)> {
        let stats = c.ctl_json(i, "stats").unwrap();
        HOPS.iter()
            .map(|hop| {
                let h = &stats["latency"][hop];
                let counts = h["counts"]
                    .as_array()
                    .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0)).collect())
                    .unwrap_or_default();
                (counts, h["max_us"].as_u64().unwrap_or(0))
            })
            .collect()
    }

    /// What each hop cost between two readings of [`hop_counts`], one line each: the
    /// quantiles are bucket bounds (within 19 %), the max the highest bucket's bound
    /// (the daemon's own max when the last, open bucket was reached).
    fn hops(before: &[(Vec<u64>, u64)], after: &[(Vec<u64>, u64)]) -> String {
        let bound = |i: usize, n: usize, max: u64| {
            if i + 1 == n {
                max as f64
            } else {
                2f64.powf(i as f64 / PER_OCTAVE)
            }
        };
        HOPS.iter()
            .zip(before.iter().zip(after))
            .map(|(hop, ((b, _), (a, max)))| {
                let d: Vec<u64> = a
                    .iter()
                    .enumerate()
                    .map(|(i, &n)| n.saturating_sub(b.get(i).copied().unwrap_or(0)))
                    .collect();
                let count: u64 = d.iter().sum();
                let quantile = |p: f64| {
                    let rank = ((count as f64 * p).ceil() as u64).max(1);
                    let mut seen = 0;
                    for (i, &n) in d.iter().enumerate() {
                        seen += n;
                        if seen >= rank {
                            return bound(i, d.len(), *max);
                        }
                    }
                    f64::NAN
                };
                let top = d.iter().rposition(|&n| n > 0);
                format!(
                    "  {hop:<11} n {count:>7}, p50 <= {:.0} us, p99 <= {:.0} us, max <= {:.0} us",
                    quantile(0.5),
                    quantile(0.99),
                    top.map_or(0.0, |i| bound(i, d.len(), *max))
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn both_hops(c: &Cluster) -> [Vec<(Vec<u64>, u64)>; 2] {
        [hop_counts(c, 0), hop_counts(c, 1)]
    }

    fn print_hops(before: &[Vec<(Vec<u64>, u64)>; 2], after: &[Vec<(Vec<u64>, u64)>; 2]) {
        println!(
            " sender hops:\n{}\n receiver hops:\n{}",
            hops(&before[0], &after[0]),
            hops(&before[1], &after[1])
        );
    }

    fn start(c: &mut Cluster, immediate: &str) {
        let words = ["immediate", immediate, "syncdev", "eth0", "up"];
        c.start(0, &words).unwrap();
        c.start(1, &words).unwrap();
        // Both bulk requests settle (each answers the other's) before the probes.
        let settled = wait_until(Duration::from_secs(30), || {
            (0..2).all(|i| c.status(i).unwrap()["bulk"] == "done")
        });
        assert!(settled.is_some(), "the bulk updates did not end");
    }

    fn idle(immediate: &str, probes: usize) {
        let mut c = cluster(&format!("i{immediate}"));
        start(&mut c, immediate);
        let rtt = round_trip(&c);
        let before = both_hops(&c);
        let mut probed = Probes::default();
        for _ in 0..probes {
            probed.push(probe(&c, Duration::from_secs(3)));
            // Idle between probes: each finds the cluster quiet.
            std::thread::sleep(Duration::from_millis(5));
        }
        println!(
            "idle, immediate {immediate}: one new state reaches the peer's table: {} \
             (target p99 1 ms); control round trip alone: {rtt}",
            probed.summary()
        );
        print_hops(&before, &both_hops(&c));
    }

    fn churning(rate: u32, secs: u64, p99_target: f64) {
        let mut c = cluster(&format!("c{}k", rate / 1000));
        start(&mut c, "on");
        c.ctl(0, &format!("insert {TABLE}")).unwrap();
        // The peer holds them all before the churn starts.
        let synced = wait_until(Duration::from_secs(60), || {
            c.status(1).unwrap()["states"].as_u64() >= Some(TABLE as u64)
        });
        assert!(synced.is_some(), "the peer did not take the table");
        let rtt = round_trip(&c);
        c.ctl(0, &format!("churn {rate} {TABLE}")).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let made_before = made(&c);
        let before = both_hops(&c);
        let pids = pids(&c);
        let cpu_before = cpu_secs(&pids);

        let t0 = Instant::now();
        let mut probed = Probes::default();
        while t0.elapsed() < Duration::from_secs(secs) {
            probed.push(probe(&c, Duration::from_secs(3)));
        }
        let cpu_after = cpu_secs(&pids);
        let elapsed = t0.elapsed().as_secs_f64();
        let changes = made(&c) - made_before;
        let rate_made = changes as f64 / elapsed;
        let after = both_hops(&c);
        println!(
            "churn {rate}/s asked, {rate_made:.0}/s made, immediate on: one new state \
             reaches the peer's table: {} (target p99 {p99_target} ms{}); control round \
             trip alone (idle): {rtt}",
            probed.summary(),
            if rate >= 100_000 { ", max 50 ms" } else { "" }
        );
        println!("{}", cpu_line(cpu_before, cpu_after, elapsed, changes));
        print_hops(&before, &after);
        c.ctl(0, "churn 0").unwrap();
    }

    /// The four daemon processes: sender parent, sender engine, receiver parent,
    /// receiver engine.
    fn pids(c: &Cluster) -> [u32; 4] {
        let [sender, receiver] = [0, 1].map(|i| c.daemon_pids(i).unwrap());
        [sender[0], sender[1], receiver[0], receiver[1]]
    }

    /// CPU seconds (user + system) each process used so far.
    fn cpu_secs(pids: &[u32; 4]) -> [f64; 4] {
        pids.map(pfsyncd::lab::cpu_secs_of)
    }

    /// The daemons' CPU over the probes: what the machine's two cores had to give them.
    fn cpu_line(before: [f64; 4], after: [f64; 4], secs: f64, changes: u64) -> String {
        let d: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        let total: f64 = d.iter().sum();
        format!(
            " daemons' CPU: sender parent {:.0} %, engine {:.0} %; receiver parent {:.0} %, \
             engine {:.0} % of a core; {:.1} µs of CPU per change made",
            d[0] / secs * 100.0,
            d[1] / secs * 100.0,
            d[2] / secs * 100.0,
            d[3] / secs * 100.0,
            total * 1e6 / changes.max(1) as f64
        )
    }

    fn made(c: &Cluster) -> u64 {
        c.churn_made(0).unwrap()
    }

    fn lost_note(lost: usize) -> String {
        if lost == 0 {
            String::new()
        } else {
            format!(", {lost} not seen within 3 s (deleted by the churn, or lost)")
        }
    }

    pub fn main() {
        // `cargo test --all-targets` (CI) runs this without `--bench`: the quick pass.
        let quick =
            std::env::args().any(|a| a == "quick") || !std::env::args().any(|a| a == "--bench");
        if !nix::unistd::geteuid().is_root() {
            eprintln!("the latency bench needs root (network namespaces, raw sockets)");
            std::process::exit(1);
        }
        let named = |p: &str| std::env::args().any(|a| a == p);
        let all = !named("idle") && !named("10k") && !named("100k");
        let (probes, secs) = if quick { (200, 5) } else { (2000, 20) };
        println!(
            "latency benchmark ({}; load average {} at the start: the machine's other work \
             takes the same two cores)",
            if quick { "quick" } else { "full" },
            pfsyncd::lab::load_average()
        );
        if all || named("idle") {
            idle("on", probes);
            idle("off", 5);
        }
        if all || named("10k") {
            churning(10_000, secs, 0.5);
        }
        if all || named("100k") {
            churning(100_000, secs, 2.0);
        }
    }
}

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

/// Network namespaces are Linux's: elsewhere there is nothing to run.
#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the latency bench runs on Linux only");
    std::process::exit(1);
}
