//! A bulk update against the link's own speed, in one run between the same two network
//! namespaces (root, Linux; issue #14 point 4):
//!
//! 1. **raw blast**: 1 000 000 FreeBSD 1400 state records (277 bytes each, the
//!    uncompressed bytes a kernel bulk carries) in MTU-sized UDP datagrams, sent as fast
//!    as the sender's socket takes them; the receiver counts what arrives. Its time is
//!    first send to last datagram received: what this machine's veth pair and a plain
//!    socket reader cost, with nothing of pfsyncd in the way;
//! 2. **daemons' bulk**: a pfsyncd holding the same number of states and a pfsyncd that
//!    starts late and asks for them. Both are pfsyncd peers (`extensions on`, the
//!    default), so the bulk is the compact one (`daemon/engine/bulk.rs`): compact record
//!    batches in DATA frames, as fast as the receiver's ACKs open the window
//!    (`--bulk-pps` paces only a kernel peer's bulk). Printed: seconds from the
//!    receiver's start until its bulk is done (`status`: the states in its table), bytes
//!    on the wire per state (the receiver's `eth0` received bytes over the bulk, frames
//!    counted whole, divided by the states imported), peak RSS of each daemon (parent +
//!    engine), CPU seconds of each daemon over the bulk and states per receiver CPU
//!    second (the machine is shared: the load average is printed too), and the bulk's
//!    time as a ratio of the blast's.
//!
//! Also printed: what the same states cost as `state::compact_record` batches of the
//! same MTU, computed offline (what the wire figure should come near).
//!
//! 3. **receive stages**, in this process on one core (`-- stages` for these alone): the
//!    same number of synthetic states as kernel bulk packets (FreeBSD 1400, MTU 1500)
//!    and as compact batches, through each stage of a receiver in turn: decoding the
//!    records, the engine's import (`handle_packet` / `handle_compact_batch`, table
//!    operations drained), and the memory table applying those operations; states per
//!    second of each, and the growth of this process's RSS while the engine and the
//!    table fill (what a receiver's two processes hold for them).
//!
//! `cargo bench --bench bulk` (1 000 000 states at MTU 1500 and 9000); `-- quick` for
//! 100 000; `-- 1500` or `-- 9000` for one MTU; `-- walk` runs the sender's bulk walk
//! alone (no daemons, one core, cheap to profile); `-- profile` skips the stages and
//! records each daemon with `perf record -g` over the daemons' bulk alone
//! (`perf-bulk-{sender,receiver}-MTU.data`); `-- daemons` skips the stages too.

#[cfg(target_os = "linux")]
mod linux {
    use std::net::{SocketAddr, UdpSocket};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use nix::sys::socket::{setsockopt, sockopt};
    use pfsyncd::daemon::privsep::message::FRAME_HEADER;
    use pfsyncd::daemon::privsep::ToParent;
    use pfsyncd::lab::{
        cpu_secs_of, load_average, proc_status, wait_until, wait_until_every, Cluster,
    };
    use pfsyncd::state::compact_record;
    use pfsyncd::table::synth::Synth;
    use pfsyncd::wire::RecordFormat;
    use serde_json::Value;

    const BIN: &str = env!("CARGO_BIN_EXE_pfsyncd");
    /// The blast's port (nothing listens on it but the blast's receiver).
    const BLAST_PORT: u16 = 9999;
    /// IPv4 + UDP headers.
    const IP_UDP: usize = 28;
    /// The pfsync header and one subheader, left free in a blast datagram so that it
    /// carries as many records as a kernel's bulk packet of that MTU.
    const PFSYNC_HEADERS: usize = 12 + 4;
    /// The receive buffer the daemon asks for (src/net/raw.rs), so both readers get the
    /// same room.
    const RECEIVE_BUFFER: usize = 32 << 20;

    /// CPU seconds (user + system) a daemon's two processes used so far.
    fn cpu_secs(c: &Cluster, i: usize) -> f64 {
        cpu_secs_each(c, i).iter().sum()
    }

    /// The same, each: parent, engine.
    fn cpu_secs_each(c: &Cluster, i: usize) -> [f64; 2] {
        c.daemon_pids(i).unwrap().map(cpu_secs_of)
    }

    /// Context switches of a daemon's processes so far: [parent, engine] x [voluntary,
    /// involuntary] (`/proc/PID/status`).
    fn switches_each(c: &Cluster, i: usize) -> [[u64; 2]; 2] {
        c.daemon_pids(i).unwrap().map(|p| {
            [
                proc_status(p, "voluntary_ctxt_switches:"),
                proc_status(p, "nonvoluntary_ctxt_switches:"),
            ]
        })
    }

    /// Seconds a daemon's processes waited runnable on a run queue so far (the second
    /// field of `/proc/PID/schedstat`): [parent, engine].
    fn run_delay_each(c: &Cluster, i: usize) -> [f64; 2] {
        c.daemon_pids(i).unwrap().map(|p| {
            std::fs::read_to_string(format!("/proc/{p}/schedstat"))
                .unwrap_or_default()
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0) as f64
                / 1e9
        })
    }

    /// The machine's CPU time so far as (all, idle) ticks (`/proc/stat`: idle + iowait
    /// count as idle).
    fn machine_ticks() -> (u64, u64) {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .take(7)
            .filter_map(|v| v.parse().ok())
            .collect();
        let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
        (f.iter().sum(), idle)
    }

    /// Peak RSS of a daemon in MB: (parent + engine, parent, engine).
    fn peak_mb(c: &Cluster, i: usize) -> (f64, f64, f64) {
        let [parent, engine] = c.daemon_pids(i).unwrap();
        let mb = |p| proc_status(p, "VmHWM:") as f64 / 1024.0;
        (mb(parent) + mb(engine), mb(parent), mb(engine))
    }

    /// Bytes host `i`'s `eth0` has received (whole frames).
    fn rx_bytes(c: &Cluster, i: usize) -> u64 {
        let out = std::process::Command::new("ip")
            .args([
                "-n",
                c.host(i).ns.name(),
                "-j",
                "-s",
                "link",
                "show",
                "eth0",
            ])
            .output()
            .expect("ip");
        let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j");
        v[0]["stats64"]["rx"]["bytes"].as_u64().expect("rx bytes")
    }

    struct Blast {
        secs: f64,
        records_received: usize,
        datagrams_sent: usize,
    }

    /// Sends `records` FreeBSD 1400 records from host 0 to host 1 in datagrams of `mtu`.
    fn blast(c: &Cluster, records: usize, mtu: u32) -> Blast {
        let size = RecordFormat::FreeBsd1400.size();
        let per_datagram = (mtu as usize - IP_UDP - PFSYNC_HEADERS) / size;
        // Real record bytes of synthetic states; a pool of datagrams cycled, since what
        // the bytes say does not change what moving them costs.
        let mut synth = Synth::new(1, 7);
        let pool: Vec<Vec<u8>> = (0..256)
            .map(|_| {
                let mut datagram = vec![0u8; per_datagram * size];
                for chunk in datagram.chunks_mut(size) {
                    synth
                        .state()
                        .to_record(RecordFormat::FreeBsd1400)
                        .0
                        .emit_bytes(chunk);
                }
                datagram
            })
            .collect();
        let datagrams = records.div_ceil(per_datagram);
        let to = SocketAddr::new(c.addr(1, false), BLAST_PORT);
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::scope(|s| {
            let receiver = s.spawn(|| {
                c.host(1)
                    .ns
                    .run(|| {
                        let sock = UdpSocket::bind(to).expect("bind the blast receiver");
                        if setsockopt(&sock, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
                            let _ = setsockopt(&sock, sockopt::RcvBuf, &RECEIVE_BUFFER);
                        }
                        // Silence this long after the last datagram means the rest is lost.
                        sock.set_read_timeout(Some(Duration::from_millis(500)))
                            .unwrap();
                        ready_tx.send(()).unwrap();
                        let mut buf = vec![0u8; 65536];
                        let (mut got, mut last) = (0usize, None);
                        while got < datagrams {
                            match sock.recv(&mut buf) {
                                Ok(_) => {
                                    got += 1;
                                    last = Some(Instant::now());
                                }
                                Err(_) if last.is_some() => break,
                                // Nothing yet: the sender has not started.
                                Err(_) => {}
                            }
                        }
                        (got, last)
                    })
                    .expect("the receiver's namespace")
            });
            ready_rx.recv().unwrap();
            let start = c
                .host(0)
                .ns
                .run(|| {
                    let sock = UdpSocket::bind((c.addr(0, false), 0)).expect("bind the sender");
                    let start = Instant::now();
                    for i in 0..datagrams {
                        let datagram = &pool[i % pool.len()];
                        // The last datagram carries only the records left.
                        let left = (records - i * per_datagram).min(per_datagram);
                        sock.send_to(&datagram[..left * size], to).expect("send");
                    }
                    start
                })
                .expect("the sender's namespace");
            let (got, last) = receiver.join().unwrap();
            Blast {
                secs: last.map_or(f64::NAN, |l| (l - start).as_secs_f64()),
                // Every datagram but the last holds `per_datagram` records.
                records_received: (got * per_datagram).min(records),
                datagrams_sent: datagrams,
            }
        })
    }

    struct DaemonBulk {
        /// States the sender held when the receiver started.
        held: u64,
        done: bool,
        secs: f64,
        imported: u64,
        bytes_per_state: f64,
        sender_peak: (f64, f64, f64),
        receiver_peak: (f64, f64, f64),
        /// CPU seconds over the bulk: sender, receiver (since its start).
        sender_cpu: f64,
        receiver_cpu: f64,
        /// The receiver's: parent, engine.
        receiver_cpu_each: [f64; 2],
        /// Context switches over the bulk of sender and receiver (see [`switches_each`]).
        sender_switches: [[u64; 2]; 2],
        receiver_switches: [[u64; 2]; 2],
        /// Of the machine's CPU time over the bulk, the share idle (all cores).
        idle_share: f64,
        /// Seconds each process waited runnable over the bulk: sender, receiver.
        sender_run_delay: [f64; 2],
        receiver_run_delay: [f64; 2],
        /// The sessions' per-peer counters (`ctl stats --json` "sessions": NACKs,
        /// resends, duplicates) of receiver and sender.
        sessions: [Value; 2],
        /// The compact bulk figures (`ctl stats`) of receiver and sender.
        compact: Value,
        sender_compact: Value,
    }

    /// The daemons' bulk of `states` at `mtu`, paced at `pps`, as benches/cluster.rs
    /// runs it (the sender filled once its own bulk request has ended).
    fn daemon_bulk(c: &mut Cluster, states: usize, mtu: u32, pps: u32) -> DaemonBulk {
        let mtu_s = mtu.to_string();
        let pps_s = pps.to_string();
        let words = ["--bulk-pps", &pps_s, "mtu", &mtu_s, "syncdev", "eth0", "up"];
        c.start(0, &words).unwrap();
        // A receiver that hears the sender's own bulk request (asked again for a minute)
        // while it imports answers with a full pass of its own: wait for it to end.
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
        // Slow on a machine shared with other work: a million inserts are announced to
        // nobody, each through both processes.
        let drained = wait_until(Duration::from_secs(400), || {
            let s = c.status(0).unwrap();
            // Caught up with its table (which expiry may have thinned meanwhile).
            s["cached"].as_u64() >= s["states"].as_u64()
                && s["queued"]
                    .as_array()
                    .is_some_and(|q| q.iter().all(|n| n.as_u64() == Some(0)))
        });
        assert!(
            drained.is_some(),
            "the sender's engine did not catch up: {}",
            c.status(0).unwrap()
        );
        // Synthetic states expire (ICMP ones in 10–20 s): a fill slowed down by a busy
        // machine leaves fewer than asked for, which is not the bulk's loss.
        let held = c.status(0).unwrap()["states"].as_u64().unwrap_or(0);
        let rx_before = rx_bytes(c, 1);
        let sender_cpu_before = cpu_secs(c, 0);
        let sender_switches_before = switches_each(c, 0);
        let sender_delay_before = run_delay_each(c, 0);
        let ticks_before = machine_ticks();
        let t0 = Instant::now();
        c.start(1, &words).unwrap();
        let profiles = profiling().then(|| {
            [(0, "sender"), (1, "receiver")]
                .map(|(i, side)| perf_record(&c.daemon_pids(i).unwrap(), side, mtu))
        });
        // Polled every 5 ms (it was 20 ms: up to 20 ms, 10 on average, counted
        // after the bulk was done); a status costs both daemons' processes little.
        let done = wait_until_every(Duration::from_secs(120), Duration::from_millis(5), || {
            c.status(1).unwrap()["bulk"] == "done"
        });
        let secs = t0.elapsed().as_secs_f64();
        let ticks_after = machine_ticks();
        let idle_share = (ticks_after.1 - ticks_before.1) as f64
            / (ticks_after.0 - ticks_before.0).max(1) as f64;
        let sender_switches_after = switches_each(c, 0);
        let sender_switches = [0, 1]
            .map(|p| [0, 1].map(|k| sender_switches_after[p][k] - sender_switches_before[p][k]));
        let receiver_switches = switches_each(c, 1);
        let sender_delay_after = run_delay_each(c, 0);
        let sender_run_delay = [0, 1].map(|p| sender_delay_after[p] - sender_delay_before[p]);
        let receiver_run_delay = run_delay_each(c, 1);
        for mut perf in profiles.into_iter().flatten() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(perf.id() as i32),
                nix::sys::signal::Signal::SIGINT,
            );
            let _ = perf.wait();
        }
        let sender_cpu = cpu_secs(c, 0) - sender_cpu_before;
        let receiver_cpu_each = cpu_secs_each(c, 1);
        let receiver_cpu = receiver_cpu_each.iter().sum();
        let rx = rx_bytes(c, 1) - rx_before;
        let imported = c.ctl_json(1, "stats").unwrap()["table"]["imported"]
            .as_u64()
            .unwrap_or(0);
        let figures = DaemonBulk {
            held,
            done: done.is_some(),
            secs,
            imported,
            bytes_per_state: rx as f64 / imported.max(1) as f64,
            sender_peak: peak_mb(c, 0),
            receiver_peak: peak_mb(c, 1),
            sender_cpu,
            receiver_cpu,
            receiver_cpu_each,
            sender_switches,
            receiver_switches,
            idle_share,
            sender_run_delay,
            receiver_run_delay,
            sessions: [1, 0].map(|i| c.ctl_json(i, "stats").unwrap()["sessions"].clone()),
            compact: c.ctl_json(1, "stats").unwrap()["session_counters"]["compact_bulk"].clone(),
            sender_compact: c.ctl_json(0, "stats").unwrap()["session_counters"]["compact_bulk"]
                .clone(),
        };
        c.stop(1);
        c.stop(0);
        figures
    }

    /// `-- profile`: `perf record -g` each daemon's two processes over the bulk alone.
    fn profiling() -> bool {
        std::env::args().any(|a| a == "profile")
    }

    /// `perf record -g` of `pids` until it gets SIGINT, into `perf-bulk-SIDE-MTU.data`
    /// in the working directory (`perf report -i` reads it).
    fn perf_record(pids: &[u32], side: &str, mtu: u32) -> std::process::Child {
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        let out = format!("perf-bulk-{side}-{mtu}.data");
        println!("      profiling the {side} ({}) into {out}", pids.join(","));
        std::process::Command::new("perf")
            .args(["record", "-g", "-q", "-o", &out, "-p", &pids.join(",")])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("perf record (linux-perf installed?)")
    }

    /// Bytes per state of `states` synthetic states as compact record batches that fit
    /// a pfsync datagram of `mtu`.
    fn compact_bytes_per_state(states: usize, mtu: u32) -> f64 {
        let all = Synth::new(1, 7).states(states.min(200_000));
        let limit = mtu as usize - IP_UDP - PFSYNC_HEADERS;
        let (mut rest, mut bytes, mut out) = (&all[..], 0, Vec::new());
        while !rest.is_empty() {
            out.clear();
            let n = compact_record::encode_batch(rest, limit, &mut out).expect("limit");
            // Each batch whole on the wire: its frame's headers too.
            bytes += out.len() + IP_UDP + PFSYNC_HEADERS + 14;
            rest = &rest[n..];
        }
        bytes as f64 / all.len() as f64
    }

    fn run(states: usize, mtu: u32, pps: u32) {
        let mut c = Cluster::new(BIN.as_ref(), &format!("pfsd-bulk{mtu}-"), 2)
            .unwrap_or_else(|e| panic!("bulk bench: {e} (run as root, with iproute2)"));
        if mtu != 1500 {
            c.set_mtu(mtu).unwrap();
        }
        let b = blast(&c, states, mtu);
        println!(
            "blast {states} records of 277 B, MTU {mtu}: {:.3} s, {} of {states} records \
             received ({} datagrams sent)",
            b.secs, b.records_received, b.datagrams_sent
        );
        let d = daemon_bulk(&mut c, states, mtu, pps);
        let mb = |p: (f64, f64, f64)| format!("{:.0} MB ({:.0} + {:.0})", p.0, p.1, p.2);
        println!(
            "bulk  {states} states, MTU {mtu} (compact, windowed; kernel pace {pps}/s unused): {} in {:.3} s, imported \
             {} of the {} the sender held, {:.1} B/state on the wire, peak RSS (parent + \
             engine) sender {}, receiver {}; bulk/blast {:.2}",
            if d.done { "done" } else { "NOT done" },
            d.secs,
            d.imported,
            d.held,
            d.bytes_per_state,
            mb(d.sender_peak),
            mb(d.receiver_peak),
            d.secs / b.secs,
        );
        println!(
            "      CPU over the bulk: sender {:.2} s, receiver {:.2} s (parent {:.2} + engine \
             {:.2}, since its start); {:.0} states per receiver CPU second; load average {}",
            d.sender_cpu,
            d.receiver_cpu,
            d.receiver_cpu_each[0],
            d.receiver_cpu_each[1],
            d.imported as f64 / d.receiver_cpu.max(1e-9),
            load_average()
        );
        let sw = |s: [[u64; 2]; 2]| {
            format!(
                "parent {} + {}, engine {} + {}",
                s[0][0], s[0][1], s[1][0], s[1][1]
            )
        };
        println!(
            "      machine idle over the bulk {:.1} %; context switches (voluntary + \
             involuntary): sender {}, receiver {}",
            100.0 * d.idle_share,
            sw(d.sender_switches),
            sw(d.receiver_switches),
        );
        println!(
            "      waiting runnable: sender parent {:.3} s, engine {:.3} s; receiver parent {:.3} \
             s, engine {:.3} s",
            d.sender_run_delay[0],
            d.sender_run_delay[1],
            d.receiver_run_delay[0],
            d.receiver_run_delay[1],
        );
        println!(
            "      sessions (ctl stats): receiver {}\n      sender {}",
            d.sessions[0], d.sessions[1]
        );
        println!(
            "      compact bulk (ctl stats): receiver {}\n      sender {}",
            d.compact["received"], d.sender_compact
        );
        println!(
            "      compact records (state::compact_record) of the same synthetic states at \
             MTU {mtu}: {:.1} B/state on the wire, frames included",
            compact_bytes_per_state(states, mtu)
        );
    }

    fn rss_mb() -> f64 {
        proc_status(std::process::id(), "VmRSS:") as f64 / 1024.0
    }

    /// This thread's CPU seconds: on a shared machine, what a stage cost, where its
    /// wall-clock time also counts the other processes.
    fn thread_cpu_secs() -> f64 {
        use nix::time::{clock_gettime, ClockId};
        let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("the thread's clock");
        t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9
    }

    /// A stage's start: wall clock and this thread's CPU time.
    struct Lap {
        wall: Instant,
        cpu: f64,
    }

    impl Lap {
        fn start() -> Lap {
            Lap {
                wall: Instant::now(),
                cpu: thread_cpu_secs(),
            }
        }

        fn stop(&self) -> (Duration, f64) {
            (self.wall.elapsed(), thread_cpu_secs() - self.cpu)
        }
    }

    fn rate(states: usize, (took, cpu): (Duration, f64)) -> String {
        format!(
            "{:>10.0} states/s ({:.3} s, CPU {:.3} s)",
            states as f64 / took.as_secs_f64(),
            took.as_secs_f64(),
            cpu
        )
    }

    /// The sender's stage on `n` synthetic states: its engine's compact bulk walk
    /// (`Engine::bulk_compact_batches`, the cached records into batches of a DATA
    /// frame at MTU 1500 and 9000), in this process on one core.
    fn send_stage(n: usize) {
        use pfsyncd::engine::{Config, Engine, LocalChange};
        use pfsyncd::wire::Dialect;

        let mut engine = Engine::new(Config::new(7, Dialect::FreeBsd1400));
        let now = Instant::now();
        for s in Synth::new(1, 7).states(n) {
            engine.handle_local(now, LocalChange::Insert(s));
        }
        engine.flush(now);
        while engine.poll_transmit().is_some() {}
        while engine.poll_table_op().is_some() {}
        // A bulk a few seconds after the states were cached: every record is aged.
        let later = now + Duration::from_secs(3);
        for (mtu, limit) in [(1500, 1438), (9000, 8938)] {
            engine.answer_bulk_request(later, true);
            let t = Lap::start();
            let mut sent = 0;
            loop {
                let made = engine
                    .bulk_compact_batches(later, 64, limit)
                    .expect("limit")
                    .expect("a compact bulk runs");
                sent += made.states;
                if made.finished {
                    break;
                }
            }
            assert_eq!(sent as usize, n);
            println!("  sender's bulk walk, MTU {mtu}: {}", rate(n, t.stop()));
        }
    }

    /// The receiver's stages on `n` synthetic states, one after the other.
    fn stages(n: usize) {
        use pfsyncd::engine::{Config, Engine, PackedTableOp, Received, TableOp};
        use pfsyncd::state::State;
        use pfsyncd::table::{MemoryConfig, MemoryTable, StateTable};
        use pfsyncd::wire::{Dialect, Message, PacketBuilder, PacketReader, Pushed, RawItem};

        const SENDER: u32 = 7;
        let states = Synth::new(1, SENDER).states(n);
        let mut packets = Vec::new();
        let mut builder = PacketBuilder::new(Dialect::FreeBsd1400, 1500);
        for s in &states {
            let message = Message::Upd(s.to_record(RecordFormat::FreeBsd1400).0);
            if builder.push(&message) == Ok(Pushed::Full) {
                packets.extend(builder.finish());
                assert_eq!(builder.push(&message), Ok(Pushed::Added));
            }
        }
        packets.extend(builder.finish());
        let mut batches = Vec::new();
        let mut rest = &states[..];
        while !rest.is_empty() {
            let mut batch = Vec::new();
            let k = compact_record::encode_batch(rest, 1500 - IP_UDP - PFSYNC_HEADERS, &mut batch)
                .expect("limit");
            batches.push(batch);
            rest = &rest[k..];
        }
        println!(
            "stages, {n} states, one core: {} kernel packets (FreeBSD 1400, MTU 1500), {} \
             compact batches",
            packets.len(),
            batches.len()
        );

        let t = Lap::start();
        let mut decoded = 0;
        for p in &packets {
            let reader = PacketReader::new(p).expect("our packet");
            for item in reader.raw_items() {
                if let Ok(RawItem::Record(r)) = item {
                    if let Ok(Message::Upd(u)) = r.message() {
                        decoded += usize::from(State::from_record(&u).is_ok());
                    }
                }
            }
        }
        assert_eq!(decoded, n);
        println!("  decode, kernel records:     {}", rate(n, t.stop()));
        let t = Lap::start();
        let decoded: usize = batches
            .iter()
            .map(|b| compact_record::decode_batch(b).expect("our batch").len())
            .sum();
        assert_eq!(decoded, n);
        println!("  decode, compact batches:    {}", rate(n, t.stop()));

        // Everything stays alive to the end, so that each RSS growth is what that stage
        // holds (nothing freed before is reused).
        let now = Instant::now();
        let mut engines = Vec::new();
        for compact in [false, true] {
            let rss_before = rss_mb();
            let mut engine = Engine::new(Config::new(0x0c0c_0001, Dialect::FreeBsd1400));
            let mut imports = 0;
            // Drained as the engine process drains them: an import's state as the
            // compact bytes the engine cached (`drain_engine`), no `State` made.
            let mut drain = |engine: &mut Engine| {
                while let Some(op) = engine.poll_table_op_packed() {
                    imports += usize::from(matches!(op, PackedTableOp::Import(_)));
                }
                while engine.poll_transmit().is_some() {}
            };
            let t = Lap::start();
            if compact {
                for b in &batches {
                    engine
                        .handle_compact_batch(now, None, b)
                        .expect("our batch");
                    drain(&mut engine);
                }
            } else {
                for p in &packets {
                    engine.handle_packet(
                        now,
                        Received {
                            payload: p,
                            on_syncdev: true,
                            ttl: 255,
                            ipv6: false,
                            source: None,
                        },
                    );
                    drain(&mut engine);
                }
            }
            let took = t.stop();
            assert_eq!(engine.state_count(), n);
            assert_eq!(imports, n);
            let name = if compact { "compact" } else { "kernel " };
            println!(
                "  engine import, {name}:     {}; RSS +{:.0} MB (the engine's cache)",
                rate(n, took),
                rss_mb() - rss_before
            );
            engines.push(engine);
        }
        // The table operations the engine hands the parent for these imports.
        // The parent gets each with its state's compact bytes as the channel carries
        // them (`ToParent::encoded_state`), which the memory table keeps as they are.
        let ops: Vec<(TableOp, Vec<u8>)> = engines[0]
            .states()
            .map(|s| {
                let mut bytes = Vec::new();
                pfsyncd::state::compact::encode(&s, &mut bytes);
                (TableOp::Import(s), bytes)
            })
            .collect();
        let rss_before = rss_mb();
        let mut table = MemoryTable::new(MemoryConfig::new(0x0c0c_0001));
        let t = Lap::start();
        for (op, bytes) in &ops {
            table.apply_encoded(now, op, Some(bytes)).expect("import");
        }
        let took = t.stop();
        assert_eq!(table.len(), n);
        println!(
            "  memory table apply:         {}; RSS +{:.0} MB (the table)",
            rate(n, took),
            rss_mb() - rss_before
        );
        drop(table);
        // The receiver parent's whole work per operation: the engine's frame decoded,
        // then applied. The way it went before issue 14 point 4's record ops (a frame
        // per operation, a State decoded from each, its bytes kept) and the way it goes
        // now (frames of many operations as the engine writes them, each record checked
        // and peeked, never made a State, applied a frame at a time), on fresh tables.
        let mut frames = Vec::new();
        let mut records_frames = Vec::new();
        let mut writer = pfsyncd::daemon::privsep::TableFrames::default();
        for (op, packed) in &ops {
            ToParent::Table { op: *op, seen: 0 }.encode(&mut frames);
            writer.push(&mut records_frames, op, Some(packed), 0);
        }
        fn split(mut rest: &[u8]) -> Vec<(u8, &[u8])> {
            let mut bodies = Vec::new();
            while !rest.is_empty() {
                let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                bodies.push((rest[4], &rest[FRAME_HEADER..FRAME_HEADER + len]));
                rest = &rest[FRAME_HEADER + len..];
            }
            bodies
        }
        let (bodies, records_bodies) = (split(&frames), split(&records_frames));
        for record_ops in [false, true] {
            let mut table = MemoryTable::new(MemoryConfig::new(0x0c0c_0001));
            let t = Lap::start();
            if record_ops {
                for &(kind, body) in &records_bodies {
                    let mut ops = Vec::new();
                    ToParent::decode_record_ops(kind, body, &mut ops)
                        .expect("imports")
                        .expect("decodes");
                    table.apply_records(now, &ops, |_, r| {
                        r.expect("import");
                    });
                }
            } else {
                for &(kind, body) in &bodies {
                    let Ok(ToParent::Table { op, .. }) = ToParent::decode(kind, body) else {
                        panic!("not a table operation");
                    };
                    let encoded = ToParent::encoded_state(kind, body);
                    table.apply_encoded(now, &op, encoded).expect("import");
                }
            }
            let took = t.stop();
            assert_eq!(table.len(), n);
            let how = if record_ops { "record op" } else { "State    " };
            println!("  parent frame -> table, {how}: {}", rate(n, took));
        }
    }

    /// The receiver's engine import and parent table stages, with and without the
    /// room for the bulk's states reserved up front (`-- presize`).
    fn presize(n: usize) {
        use pfsyncd::engine::{Config, Engine, PackedTableOp, TableOp};
        use pfsyncd::table::{MemoryConfig, MemoryTable, StateTable};
        use pfsyncd::wire::Dialect;

        let states = Synth::new(1, 7).states(n);
        let mut batches = Vec::new();
        let mut rest = &states[..];
        while !rest.is_empty() {
            let mut batch = Vec::new();
            let k = compact_record::encode_batch(rest, 9000 - IP_UDP - PFSYNC_HEADERS, &mut batch)
                .expect("limit");
            batches.push(batch);
            rest = &rest[k..];
        }
        let now = Instant::now();
        let mut writer = pfsyncd::daemon::privsep::TableFrames::default();
        let mut frames = Vec::new();
        for s in &states {
            let mut bytes = Vec::new();
            pfsyncd::state::compact::encode(s, &mut bytes);
            writer.push(&mut frames, &TableOp::Import(*s), Some(&bytes), 0);
        }
        let mut bodies = Vec::new();
        let mut rest = &frames[..];
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            bodies.push((rest[4], &rest[FRAME_HEADER..FRAME_HEADER + len]));
            rest = &rest[FRAME_HEADER + len..];
        }
        for round in 0..3 {
            for reserve in [false, true] {
                let rss_before = rss_mb();
                let mut engine = Engine::new(Config::new(0x0c0c_0001, Dialect::FreeBsd1400));
                let t = Lap::start();
                if reserve {
                    engine.reserve_states(n);
                }
                for b in &batches {
                    engine
                        .handle_compact_batch(now, None, b)
                        .expect("our batch");
                    while let Some(op) = engine.poll_table_op_packed() {
                        std::hint::black_box(matches!(op, PackedTableOp::Import(_)));
                    }
                    while engine.poll_transmit().is_some() {}
                }
                let took = t.stop();
                assert_eq!(engine.state_count(), n);
                let rss = rss_mb() - rss_before;
                drop(engine);
                let mut table = MemoryTable::new(MemoryConfig::new(0x0c0c_0001));
                let rss_before = rss_mb();
                let t = Lap::start();
                if reserve {
                    table.reserve_states(n);
                }
                let mut ops = Vec::new();
                for &(kind, body) in &bodies {
                    ops.clear();
                    ToParent::decode_record_ops(kind, body, &mut ops)
                        .expect("imports")
                        .expect("decodes");
                    table.apply_records(now, &ops, |_, r| {
                        r.expect("import");
                    });
                }
                let took_table = t.stop();
                assert_eq!(table.len(), n);
                println!(
                    "  round {round}, reserved {reserve:5}: engine import {} RSS +{rss:.0} MB; \
                     parent frame -> table {} RSS +{:.0} MB",
                    rate(n, took),
                    rate(n, took_table),
                    rss_mb() - rss_before
                );
            }
        }
    }

    pub fn main() {
        // `cargo test --all-targets` (CI) runs this without `--bench`: the quick pass.
        let quick =
            std::env::args().any(|a| a == "quick") || !std::env::args().any(|a| a == "--bench");
        if !nix::unistd::geteuid().is_root() {
            eprintln!("the bulk bench needs root (network namespaces)");
            std::process::exit(1);
        }
        let states = if quick { 100_000 } else { 1_000_000 };
        println!("bulk benchmark ({})", if quick { "quick" } else { "full" });
        let named = |p: &str| std::env::args().any(|a| a == p);
        // `-- daemons`: the daemons' bulk alone (the stages take a core for a minute).
        if !profiling() && !named("daemons") && !named("presize") {
            // `-- walk`: the sender's stage alone (a profile of it, say).
            if !named("walk") {
                stages(states);
            }
            send_stage(states);
        }
        if named("walk") {
            return;
        }
        if named("stages") {
            return;
        }
        if named("presize") {
            presize(states);
            return;
        }
        let both = !named("1500") && !named("9000");
        // The paces benches/cluster.rs found to be lossless at each MTU.
        if both || named("1500") {
            run(states, 1500, 100_000);
        }
        if both || named("9000") {
            run(states, 9000, 8_000);
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
    eprintln!("the bulk bench runs on Linux only");
    std::process::exit(1);
}
