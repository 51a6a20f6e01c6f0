//! Daemons against each other, in network namespaces on this machine (root, Linux):
//!
//! 1. bulk update of 1 000 000 states from one daemon to a daemon that starts late:
//!    time from its start until its bulk update is done, states received, and the peak
//!    memory of both (targets: <= 3 s, <= 500 MB per daemon), at MTU 1500 and 9000.
//!    The sender is filled once its own bulk request (sent alone, retried for a
//!    minute) has ended, as on a firewall that has been up a while, and the receiver
//!    starts once the sender has announced its states;
//! 2. steady churn of 100 000 changes/s for 30 s on one daemon with a peer: the rate
//!    reached, CPU per daemon, and how long a change takes to reach the peer (p50/p99;
//!    target p99 <= 5 ms for messages sent at once).
//!
//! A daemon is two processes (privilege separation): its memory is the sum of both
//! peaks (the engine process is forked before the daemon holds any state, so they
//! share next to nothing), its CPU the sum of both, shown as parent + engine.
//!
//! Propagation is measured with probes: while the churn runs, the bench changes one
//! TCP state at a time (`ctl touch`, which answers after the change has been handed to
//! the engine and sent if due) and polls the peer (`ctl get`) until it shows the new
//! sequence number. The figure includes a control-socket round trip per poll (about
//! 0.1 ms here). With `maxupd 1` every TCP update is sent at once; with the default 128
//! they wait for the 1 s batch, which is shown for comparison.
//!
//! `cargo bench --bench cluster` (`-- quick` for 100 000 states and 5 s; `-- bulk` or
//! `-- churn` for one part).

#[cfg(target_os = "linux")]
mod linux {
    use std::time::{Duration, Instant};

    use pfsyncd::lab::{cpu_secs_of, percentile, proc_status, wait_until, Cluster, Propagation};

    const BIN: &str = env!("CARGO_BIN_EXE_pfsyncd");

    fn cluster(tag: &str) -> Cluster {
        Cluster::new(BIN.as_ref(), &format!("pfsd-bench{tag}-"), 2)
            .unwrap_or_else(|e| panic!("cluster bench: {e} (run as root, with iproute2)"))
    }

    /// CPU seconds (user + system) of a daemon's parent and engine processes.
    fn cpu_secs(pids: [u32; 2]) -> [f64; 2] {
        pids.map(cpu_secs_of)
    }

    /// KB of `field` summed over a daemon's processes.
    fn kb(pids: [u32; 2], field: &str) -> u64 {
        pids.iter().map(|&p| proc_status(p, field)).sum()
    }

    fn bulk(states: usize, mtu: u32, pps: u32) {
        let mut c = cluster(&format!("b{mtu}"));
        if mtu != 1500 {
            c.set_mtu(mtu).unwrap();
        }
        let mtu_s = mtu.to_string();
        let pps_s = pps.to_string();
        let words = ["--bulk-pps", &pps_s, "mtu", &mtu_s, "syncdev", "eth0", "up"];
        c.start(0, &words).unwrap();
        // The sender comes up alone: its own bulk request is asked again every 5 s for
        // a minute (FreeBSD's 12 tries). A receiver that hears one while it imports
        // answers with a full pass of its own, both ways at once. A firewall that has
        // been up a while has given up long ago: wait for that, then fill it (so its
        // states do not expire meanwhile).
        let alone = wait_until(Duration::from_secs(90), || {
            c.status(0).unwrap()["bulk"] == "done"
        });
        assert!(alone.is_some(), "the sender's bulk request did not end");
        let mut left = states;
        while left > 0 {
            let n = left.min(100_000);
            c.ctl(0, &format!("insert {n}")).unwrap();
            left -= n;
        }
        // Let the sender's own inserts (multicast to nobody yet) drain: `ctl insert`
        // answers once the changes are on their way to the engine process, which may
        // still be announcing them; a receiver started then would get both at once.
        // A debug build on a loaded machine (the quick run in CI) takes its time.
        let drained = wait_until(Duration::from_secs(180), || {
            let s = c.status(0).unwrap();
            s["cached"].as_u64() >= Some(states as u64)
                && s["queued"]
                    .as_array()
                    .is_some_and(|q| q.iter().all(|n| n.as_u64() == Some(0)))
        });
        assert!(
            drained.is_some(),
            "the sender's engine did not catch up: {}",
            c.status(0).unwrap()
        );
        let sender_rss = kb(c.daemon_pids(0).unwrap(), "VmRSS:");
        let t0 = Instant::now();
        c.start(1, &words).unwrap();
        let done = wait_until(Duration::from_secs(120), || {
            c.status(1).unwrap()["bulk"] == "done"
        });
        let took = t0.elapsed();
        let got = c.status(1).unwrap()["states"].as_u64().unwrap_or(0);
        let imported = c.ctl_json(1, "stats").unwrap()["table"]["imported"]
            .as_u64()
            .unwrap_or(0);
        let peak = |i: usize| {
            let [parent, engine] = c.daemon_pids(i).unwrap();
            let mb = |p| proc_status(p, "VmHWM:") as f64 / 1024.0;
            format!(
                "{:.0} MB (parent {:.0} + engine {:.0})",
                mb(parent) + mb(engine),
                mb(parent),
                mb(engine)
            )
        };
        println!(
            "bulk  {states} states, MTU {mtu}, {pps} packets/s: {} in {:.2} s from the \
             receiver's start (target 3 s); imported {imported} (holds {got}, the rest \
             expired meanwhile); peak RSS sender {} (RSS {:.0} MB once filled), \
             receiver {} (target 500 MB)",
            if done.is_some() { "done" } else { "NOT done" },
            took.as_secs_f64(),
            peak(0),
            sender_rss as f64 / 1024.0,
            peak(1),
        );
    }

    fn churn(rate: u32, secs: u64, maxupd: u8, size: usize) {
        let mut c = cluster(&format!("c{maxupd}"));
        let maxupd_s = maxupd.to_string();
        let words = ["maxupd", &maxupd_s, "syncdev", "eth0", "up"];
        c.start(0, &words).unwrap();
        c.start(1, &words).unwrap();
        c.ctl(0, &format!("insert {size}")).unwrap();
        let mut probes = c.tcp_probes(0, 20).unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let (p0, p1) = (c.daemon_pids(0).unwrap(), c.daemon_pids(1).unwrap());
        let made = |c: &Cluster| c.churn_made(0).unwrap();
        let (cpu0, cpu1, made0) = (cpu_secs(p0), cpu_secs(p1), made(&c));
        let t0 = Instant::now();
        c.ctl(0, &format!("churn {rate} {size}")).unwrap();
        let mut delays = Vec::new();
        let mut lost = 0;
        let mut k = 0;
        while t0.elapsed() < Duration::from_secs(secs) {
            let at = k % probes.len();
            k += 1;
            // The churn may delete a probe (it may touch every state of ours), or it may
            // expire: then another takes its place.
            match c
                .propagate(0, 1, &probes[at], Duration::from_secs(3))
                .unwrap()
            {
                Propagation::Gone => probes[at] = c.tcp_probes(0, 1).unwrap().remove(0),
                Propagation::Arrived(took) => delays.push(took.as_secs_f64() * 1000.0),
                Propagation::NotSeen => lost += 1,
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        let rate_made = (made(&c) - made0) as f64 / wall;
        let used = |now: [f64; 2], then: [f64; 2]| [now[0] - then[0], now[1] - then[1]];
        let (d0, d1) = (used(cpu_secs(p0), cpu0), used(cpu_secs(p1), cpu1));
        let pct = |d: [f64; 2]| {
            format!(
                "{:.0} % ({:.0} + {:.0})",
                (d[0] + d[1]) / wall * 100.0,
                d[0] / wall * 100.0,
                d[1] / wall * 100.0
            )
        };
        c.ctl(0, "churn 0").unwrap();
        delays.sort_by(f64::total_cmp);
        println!(
            "churn {rate}/s asked, {:.0}/s made for {wall:.0} s around {size} states, maxupd \
             {maxupd}: CPU of a core (parent + engine) sender {}, receiver {}; propagation of \
             a TCP update over {} probes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{}",
            rate_made,
            pct(d0),
            pct(d1),
            delays.len(),
            percentile(&delays, 0.5),
            percentile(&delays, 0.99),
            delays.last().copied().unwrap_or(f64::NAN),
            if lost > 0 {
                format!(
                    ", {lost} probes not seen within 3 s (deleted by the churn meanwhile, or lost)"
                )
            } else {
                String::new()
            }
        );
    }

    pub fn main() {
        let quick = std::env::args().any(|a| a == "quick");
        let full = std::env::args().any(|a| a == "--bench") && !quick;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("the cluster bench needs root (network namespaces, raw sockets)");
            std::process::exit(1);
        }
        let (states, secs) = if full { (1_000_000, 30) } else { (100_000, 5) };
        println!(
            "cluster benchmark ({})",
            if full { "full" } else { "quick" }
        );
        // `-- bulk` or `-- churn` runs one part only.
        let only = |part: &str| {
            let named = |p: &str| std::env::args().any(|a| a == p);
            !named("bulk") && !named("churn") || named(part)
        };
        if only("bulk") {
            bulk(states, 1500, 100_000);
            // Each case waits a minute for the sender's own bulk request to end: the
            // quick run (CI) shows one.
            if full {
                bulk(states, 1500, 60_000);
                bulk(states, 9000, 8_000);
            }
        }
        if only("churn") {
            churn(100_000, secs, 1, 100_000);
            churn(100_000, secs.min(10), 128, 100_000);
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
    eprintln!("the cluster bench runs on Linux only");
    std::process::exit(1);
}
