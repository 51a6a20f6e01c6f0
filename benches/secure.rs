//! The secure link against the plain link, two daemons in network namespaces on this
//! machine, in one run (root, Linux):
//!
//! 1. bulk update of 1 000 000 states from one daemon to a daemon that starts late, over
//!    the plain link and over the secure link: time from the receiver's start until its
//!    bulk update is done, the states it imported, states/s. Both senders send their
//!    bulk at the same pace, `--bulk-pps` (100 000 packets/s, as benches/cluster.rs's
//!    first case), so the figure shows whether the secure link keeps the pace the plain
//!    link keeps. Two rounds, plain and secure in turn; the faster of each counts, and
//!    every round is printed, with the CPU each process used;
//! 2. churn of 100 000 changes/s for a fixed time over each link, `maxupd 1` (every TCP
//!    update sent at once): the rate made, CPU of both daemons, and the propagation of a
//!    TCP update (p50/p99/max), probed as benches/cluster.rs does (`ctl touch` on the
//!    sender, `ctl get` polled on the receiver).
//!
//! Then a table and the ratios: secure throughput as % of plain (target: at least 85 %),
//! and the p99 difference (target: within 1 ms).
//!
//! The plain case sends unicast to the peer (`syncpeer`), as the secure link does. The
//! secure case is a secure-only node (`securepeer` and `secureaddr`, no `syncdev`): it
//! opens no plain link, so only the secure link (UDP port 5240, the default) carries
//! states, each packet sent once. Each case gets its own cluster, so
//! nothing of one run is left in the other; the plain case runs first. The receiver
//! answers the sender's own bulk request at the sender's start and is stopped while
//! the sender is filled, so the sender does not ask again (for a minute) meanwhile.
//!
//! 0. first, the secure link's own cost in this process (no daemons): a full packet
//!    wrapped and opened, µs each.
//!
//! `cargo bench --bench secure` (`-- quick` for 100 000 states and 5 s; `-- link`,
//! `-- bulk` or `-- churn` for one part; `-- mtu N` for both links' packets under N).

#[cfg(target_os = "linux")]
mod linux {
    use std::fs;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use pfsyncd::lab::{cpu_secs_of, percentile, wait_until, Cluster, Propagation};
    use serde_json::Value;

    const BIN: &str = env!("CARGO_BIN_EXE_pfsyncd");
    /// The bulk pace of both links, packets per second.
    const BULK_PPS: u32 = 100_000;

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Link {
        Plain,
        Secure,
    }

    impl Link {
        fn name(self) -> &'static str {
            match self {
                Link::Plain => "plain",
                Link::Secure => "secure",
            }
        }
    }

    /// A pair of daemons' words per host for one link.
    struct Pair {
        cluster: Cluster,
        words: [Vec<String>; 2],
    }

    /// A fresh private key (`pfsyncd genkey`) and its public key (`pfsyncd pubkey`).
    fn keypair() -> (String, String) {
        let private = Command::new(BIN).arg("genkey").output().unwrap();
        assert!(private.status.success(), "pfsyncd genkey failed");
        let mut child = Command::new(BIN)
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&private.stdout)
            .unwrap();
        let public = child.wait_with_output().unwrap();
        assert!(public.status.success(), "pfsyncd pubkey failed");
        let text = |b: Vec<u8>| String::from_utf8(b).unwrap().trim().to_string();
        (text(private.stdout), text(public.stdout))
    }

    /// Two hosts; each one's words name the other as its peer on `link`, after `extra`.
    fn pair(link: Link, tag: &str, extra: &[&str]) -> Pair {
        let cluster = Cluster::new(BIN.as_ref(), &format!("pfsd-bsec{tag}-"), 2)
            .unwrap_or_else(|e| panic!("secure bench: {e} (run as root, with iproute2)"));
        let keys = [keypair(), keypair()];
        let words = [0, 1].map(|i| {
            let peer = cluster.addr(1 - i, false).to_string();
            let mut w: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            match link {
                Link::Plain => w.extend(["syncdev".into(), "eth0".into(), "syncpeer".into(), peer]),
                Link::Secure => {
                    let key = cluster.dir().join(format!("key{i}"));
                    let mut f = fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&key)
                        .unwrap();
                    writeln!(f, "{}", keys[i].0).unwrap();
                    // A secure-only node: no syncdev, no plain link at all.
                    w.extend([
                        "secureaddr".into(),
                        cluster.addr(i, false).to_string(),
                        "securekey".into(),
                        key.display().to_string(),
                        "securepeer".into(),
                        peer,
                        "pubkey".into(),
                        keys[1 - i].1.clone(),
                    ]);
                }
            }
            w.push("up".into());
            w
        });
        Pair { cluster, words }
    }

    impl Pair {
        fn start(&mut self, i: usize) {
            let words: Vec<&str> = self.words[i].iter().map(String::as_str).collect();
            self.cluster
                .start(i, &words)
                .unwrap_or_else(|e| panic!("{e}"));
        }

        fn status(&self, i: usize) -> Value {
            self.cluster.status(i).unwrap()
        }

        fn pids(&self, i: usize) -> [u32; 2] {
            self.cluster.daemon_pids(i).unwrap()
        }

        /// The secure peer's handshake on host `i`, for the record.
        fn handshake(&self, i: usize) -> String {
            let stats = self.cluster.ctl_json(i, "stats").unwrap();
            stats["secure"]["peers"][0]["handshake"]
                .as_str()
                .unwrap_or("-")
                .to_string()
        }
    }

    fn cpu_secs(pids: [u32; 2]) -> f64 {
        pids.iter().map(|&p| cpu_secs_of(p)).sum()
    }

    struct BulkResult {
        done: bool,
        secs: f64,
        /// Seconds from the receiver's start to its first state.
        first: f64,
        /// CPU seconds meanwhile: sender parent, engine; receiver parent, engine.
        cpu: [f64; 2 * 2],
        imported: u64,
    }

    impl BulkResult {
        fn states_per_sec(&self) -> f64 {
            self.imported as f64 / self.secs
        }

        /// States imported per CPU second of all four processes: on a shared machine
        /// the wall time is the scheduler's, this is the link's.
        fn states_per_cpu_sec(&self) -> f64 {
            self.imported as f64 / self.cpu.iter().sum::<f64>()
        }
    }

    /// Fills host 0 with `states` once its own bulk request has ended (as on a firewall
    /// that has been up a while) and its engine has sent them all.
    fn fill_sender(p: &mut Pair, states: usize) {
        // The receiver answers the sender's bulk request at its start (with nothing), so
        // the sender does not ask again for a minute; then it goes until it is timed.
        p.start(1);
        p.start(0);
        let answered = wait_until(Duration::from_secs(90), || p.status(0)["bulk"] == "done");
        assert!(answered.is_some(), "the sender's bulk request did not end");
        p.cluster.stop(1);
        let mut left = states;
        while left > 0 {
            let n = left.min(100_000);
            p.cluster.ctl(0, &format!("insert {n}")).unwrap();
            left -= n;
        }
        // Its queues empty twice in a row: every insert announced (to nobody). Some of
        // the states may expire meanwhile on a slow machine; the receiver's count says.
        let mut empty_before = false;
        let drained = wait_until(Duration::from_secs(180), || {
            let empty = p.status(0)["queued"]
                .as_array()
                .is_some_and(|q| q.iter().all(|n| n.as_u64() == Some(0)));
            let twice = empty && empty_before;
            empty_before = empty;
            twice
        });
        assert!(
            drained.is_some(),
            "the sender's engine did not catch up: {}",
            p.status(0)
        );
    }

    /// Starts host 1 and times its bulk update from host 0: until the first state, and
    /// until the bulk update is done.
    fn receive_bulk(p: &mut Pair) -> BulkResult {
        let sender = p.pids(0);
        let sender_cpu = sender.map(cpu_secs_of);
        let t0 = Instant::now();
        p.start(1);
        let mut first = None;
        let mut done = false;
        while t0.elapsed() < Duration::from_secs(120) {
            let s = p.status(1);
            if first.is_none() && s["states"].as_u64() > Some(0) {
                first = Some(t0.elapsed().as_secs_f64());
            }
            if s["bulk"] == "done" {
                done = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let secs = t0.elapsed().as_secs_f64();
        let now = sender.map(cpu_secs_of);
        let cpu = [
            now[0] - sender_cpu[0],
            now[1] - sender_cpu[1],
            cpu_secs_of(p.pids(1)[0]),
            cpu_secs_of(p.pids(1)[1]),
        ];
        let imported = p.cluster.ctl_json(1, "stats").unwrap()["table"]["imported"]
            .as_u64()
            .unwrap_or(0);
        BulkResult {
            done,
            secs,
            first: first.unwrap_or(f64::NAN),
            imported,
            cpu,
        }
    }

    /// Each link in turn, plain first, `rounds` times: its sender filled, then its
    /// receiver timed. The fastest round of each link counts: the machine is shared,
    /// and a round another process slowed says nothing about the link.
    fn bulk(states: usize, rounds: usize) -> [BulkResult; 2] {
        let mut best: [Option<BulkResult>; 2] = [None, None];
        for _ in 0..rounds {
            for (at, r) in bulk_round(states).into_iter().enumerate() {
                if best[at].as_ref().is_none_or(|b| r.secs < b.secs) {
                    best[at] = Some(r);
                }
            }
        }
        best.map(|r| r.expect("at least one round"))
    }

    fn bulk_round(states: usize) -> [BulkResult; 2] {
        let pps = BULK_PPS.to_string();
        let mut extra = vec!["--bulk-pps", pps.as_str()];
        let mtu = mtu_words();
        extra.extend(mtu.iter().map(String::as_str));
        [Link::Plain, Link::Secure].map(|link| {
            let tag = match link {
                Link::Plain => "bp",
                Link::Secure => "bs",
            };
            let mut p = pair(link, tag, &extra);
            fill_sender(&mut p, states);
            let r = receive_bulk(&mut p);
            println!(
                "bulk  {:6} {states} states at {BULK_PPS} packets/s: {} in {:.2} s from the \
                 receiver's start (first state after {:.3} s), imported {} ({:.0} states/s); \
                 CPU s sender {:.2} + {:.2}, receiver {:.2} + {:.2} (parent + engine){}",
                link.name(),
                if r.done { "done" } else { "NOT done" },
                r.secs,
                r.first,
                r.imported,
                r.states_per_sec(),
                r.cpu[0],
                r.cpu[1],
                r.cpu[2],
                r.cpu[3],
                if link == Link::Secure {
                    format!(", handshake {}", p.handshake(1))
                } else {
                    String::new()
                }
            );
            r
        })
    }

    struct ChurnResult {
        wall: f64,
        made_per_sec: f64,
        cpu: [f64; 2],
        delays: Vec<f64>,
        lost: usize,
        received: u64,
    }

    impl ChurnResult {
        fn p(&self, p: f64) -> f64 {
            percentile(&self.delays, p)
        }

        fn received_per_sec(&self) -> f64 {
            self.received as f64 / self.wall
        }
    }

    fn churn_one(link: Link, rate: u32, secs: u64, size: usize) -> ChurnResult {
        let tag = match link {
            Link::Plain => "cp",
            Link::Secure => "cs",
        };
        let mut words = vec!["maxupd", "1"];
        let mtu = mtu_words();
        words.extend(mtu.iter().map(String::as_str));
        let mut p = pair(link, tag, &words);
        p.start(0);
        p.start(1);
        // A tunnel holds only 256 packets while its handshake runs: the states go once
        // it is up (the receiver's bulk request at its start begins it).
        if link == Link::Secure {
            let up = wait_until(Duration::from_secs(20), || {
                p.handshake(0) == "established" && p.handshake(1) == "established"
            });
            assert!(up.is_some(), "the secure link did not shake hands");
        }
        let c = &p.cluster;
        c.ctl(0, &format!("insert {size}")).unwrap();
        let mut probes = c.tcp_probes(0, 20).unwrap();
        // The peer holds the states (the secure link has shaken hands) before timing.
        let synced = wait_until(Duration::from_secs(60), || {
            c.status(1).unwrap()["states"].as_u64() >= Some(size as u64)
        });
        assert!(
            synced.is_some(),
            "{} link: the peer did not get the states: {}",
            link.name(),
            c.ctl(1, "stats").unwrap_or_default()
        );
        let (p0, p1) = (p.pids(0), p.pids(1));
        let made = || c.churn_made(0).unwrap();
        // Changes the peer's table took: states inserted, updated and removed.
        let received = || -> u64 {
            let stats = c.ctl_json(1, "stats").unwrap();
            ["imported", "updated", "removed"]
                .iter()
                .map(|k| stats["table"][k].as_u64().unwrap_or(0))
                .sum()
        };
        let (cpu0, cpu1, made0, received0) = (cpu_secs(p0), cpu_secs(p1), made(), received());
        let t0 = Instant::now();
        c.ctl(0, &format!("churn {rate} {size}")).unwrap();
        let mut delays = Vec::new();
        let mut lost = 0;
        let mut k = 0;
        while t0.elapsed() < Duration::from_secs(secs) {
            let at = k % probes.len();
            k += 1;
            // The churn may delete a probe, or it may expire: another takes its place.
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
        let made_per_sec = (made() - made0) as f64 / wall;
        let cpu = [
            (cpu_secs(p0) - cpu0) / wall * 100.0,
            (cpu_secs(p1) - cpu1) / wall * 100.0,
        ];
        let received = received() - received0;
        c.ctl(0, "churn 0").unwrap();
        delays.sort_by(f64::total_cmp);
        let r = ChurnResult {
            wall,
            made_per_sec,
            cpu,
            delays,
            lost,
            received,
        };
        println!(
            "churn {:6} {rate}/s asked, {:.0}/s made for {wall:.0} s around {size} states, \
             maxupd 1: {} changes imported by the peer ({:.0}/s); CPU of a core sender {:.0} %, \
             receiver {:.0} %; propagation over {} probes: p50 {:.2} ms, p99 {:.2} ms, \
             max {:.2} ms{}{}",
            link.name(),
            r.made_per_sec,
            r.received,
            r.received_per_sec(),
            r.cpu[0],
            r.cpu[1],
            r.delays.len(),
            r.p(0.5),
            r.p(0.99),
            r.delays.last().copied().unwrap_or(f64::NAN),
            if lost > 0 {
                format!(", {lost} probes not seen within 3 s (deleted by the churn, or lost)")
            } else {
                String::new()
            },
            if link == Link::Secure {
                format!(", handshake {}", p.handshake(1))
            } else {
                String::new()
            }
        );
        r
    }

    fn churn(rate: u32, secs: u64, size: usize) -> [ChurnResult; 2] {
        [Link::Plain, Link::Secure].map(|link| churn_one(link, rate, secs, size))
    }

    /// The secure link alone, in this process, no sockets: full pfsync packets (1480
    /// bytes, as at MTU 1500) wrapped by one side and opened by the other, to tell the
    /// cost of the cryptography from the daemons' (`-- link`).
    fn link_in_process(packets: usize) {
        use pfsyncd::secure::{PeerConfig, PrivateKey, SecureLink};
        use std::net::{IpAddr, SocketAddr};
        let keys = [
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap(),
        ];
        let inner = [IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2])];
        let endpoint = |i: usize| SocketAddr::new(inner[i], 5240);
        let mut sides = [0, 1].map(|i| {
            let mut link = SecureLink::new(keys[i].clone(), inner[i]);
            link.set_peer(PeerConfig {
                public_key: keys[1 - i].public_key(),
                preshared_key: None,
                endpoint: endpoint(1 - i),
                inner_addr: inner[1 - i],
            })
            .unwrap();
            link
        });
        // The handshake: one packet, every datagram moved until none is left.
        sides[0].send(&[0; 4]).unwrap();
        loop {
            let mut moved = false;
            for from in 0..2 {
                while let Some(d) = sides[from].poll_datagram() {
                    let _ = sides[1 - from].receive(endpoint(from), &d.bytes);
                    moved = true;
                }
            }
            if !moved {
                break;
            }
        }
        let payload = vec![0x5a; 1480];
        let (mut wrap, mut open) = (Duration::ZERO, Duration::ZERO);
        let mut bytes = 0;
        for _ in 0..packets {
            let t = Instant::now();
            sides[0].send(&payload).unwrap();
            let d = sides[0].poll_datagram().unwrap();
            wrap += t.elapsed();
            bytes = d.bytes.len();
            let t = Instant::now();
            let got = sides[1].receive(endpoint(0), &d.bytes).unwrap();
            open += t.elapsed();
            assert_eq!(got.map(|p| p.payload().len()), Some(payload.len()));
        }
        let per = |d: Duration| d.as_secs_f64() * 1e6 / packets as f64;
        println!(
            "link  in process, {packets} packets of 1480 bytes ({bytes}-byte datagrams): wrap \
             {:.2} us, open {:.2} us a packet ({:.0} packets/s one way on one core)",
            per(wrap),
            per(open),
            packets as f64 / (wrap + open).as_secs_f64()
        );
    }

    /// `-- mtu N`: both links' daemons send packets of at most N bytes (`mtu N`), so
    /// that a wrapped packet is not fragmented (the default 1500 is).
    fn mtu_words() -> Vec<String> {
        let args: Vec<String> = std::env::args().collect();
        args.windows(2)
            .find(|w| w[0] == "mtu")
            .map(|w| vec!["mtu".to_string(), w[1].clone()])
            .unwrap_or_default()
    }

    fn ratio(secure: f64, plain: f64) -> String {
        format!("{:.1} %", secure / plain * 100.0)
    }

    pub fn main() {
        let quick = std::env::args().any(|a| a == "quick");
        let full = std::env::args().any(|a| a == "--bench") && !quick;
        if !nix::unistd::geteuid().is_root() {
            eprintln!("the secure bench needs root (network namespaces, raw sockets)");
            std::process::exit(1);
        }
        let (states, secs) = if full { (1_000_000, 30) } else { (100_000, 5) };
        println!(
            "secure link against plain link ({})",
            if full { "full" } else { "quick" }
        );
        let only = |part: &str| {
            let named = |p: &str| std::env::args().any(|a| a == p);
            !named("bulk") && !named("churn") && !named("link") || named(part)
        };
        if only("link") {
            link_in_process(if full { 200_000 } else { 50_000 });
        }
        let bulk = only("bulk").then(|| bulk(states, 2));
        let churn = only("churn").then(|| churn(100_000, secs, 100_000));
        println!();
        println!(
            "{:<34} {:>14} {:>14} {:>14}",
            "", "plain", "secure", "secure/plain"
        );
        if let Some([plain, secure]) = &bulk {
            println!(
                "{:<34} {:>14.2} {:>14.2} {:>14}",
                format!("bulk {states} states, s (best of 2)"),
                plain.secs,
                secure.secs,
                ratio(secure.secs, plain.secs)
            );
            println!(
                "{:<34} {:>14.0} {:>14.0} {:>14}",
                "bulk states/s",
                plain.states_per_sec(),
                secure.states_per_sec(),
                ratio(secure.states_per_sec(), plain.states_per_sec())
            );
            println!(
                "{:<34} {:>14.0} {:>14.0} {:>14}",
                "bulk states per CPU s (4 procs)",
                plain.states_per_cpu_sec(),
                secure.states_per_cpu_sec(),
                ratio(secure.states_per_cpu_sec(), plain.states_per_cpu_sec())
            );
        }
        if let Some([plain, secure]) = &churn {
            println!(
                "{:<34} {:>14.0} {:>14.0} {:>14}",
                "churn changes/s made",
                plain.made_per_sec,
                secure.made_per_sec,
                ratio(secure.made_per_sec, plain.made_per_sec)
            );
            println!(
                "{:<34} {:>14.0} {:>14.0} {:>14}",
                "churn changes/s imported by peer",
                plain.received_per_sec(),
                secure.received_per_sec(),
                ratio(secure.received_per_sec(), plain.received_per_sec())
            );
            for (name, p) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
                println!(
                    "{:<34} {:>14.2} {:>14.2} {:>+14.2}",
                    format!("churn propagation {name}, ms"),
                    plain.p(p),
                    secure.p(p),
                    secure.p(p) - plain.p(p)
                );
            }
            println!(
                "{:<34} {:>14} {:>14}",
                "churn CPU sender/receiver, %",
                format!("{:.0}/{:.0}", plain.cpu[0], plain.cpu[1]),
                format!("{:.0}/{:.0}", secure.cpu[0], secure.cpu[1]),
            );
            println!(
                "{:<34} {:>14} {:>14}",
                "probes (not seen in 3 s)",
                format!("{} ({})", plain.delays.len(), plain.lost),
                format!("{} ({})", secure.delays.len(), secure.lost),
            );
        }
        println!();
        if let Some([plain, secure]) = &bulk {
            let pct = secure.states_per_sec() / plain.states_per_sec() * 100.0;
            println!(
                "bulk: secure throughput {pct:.1} % of plain (target >= 85 %): {}; per CPU \
                 second {:.1} %",
                if pct >= 85.0 && secure.done {
                    "met"
                } else {
                    "MISSED"
                },
                secure.states_per_cpu_sec() / plain.states_per_cpu_sec() * 100.0
            );
        }
        if let Some([plain, secure]) = &churn {
            let pct = secure.received_per_sec() / plain.received_per_sec() * 100.0;
            let diff = secure.p(0.99) - plain.p(0.99);
            println!(
                "churn: secure throughput {pct:.1} % of plain (target >= 85 %): {}; p99 {:+.2} ms \
                 (target within 1 ms): {}",
                if pct >= 85.0 { "met" } else { "MISSED" },
                diff,
                if diff <= 1.0 { "met" } else { "MISSED" }
            );
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
    eprintln!("the secure bench runs on Linux only");
    std::process::exit(1);
}
