//! Delayed sync benchmark: what `syncdelay` saves on the sync link for a realistic mix of
//! flow lifetimes, on the engine alone (no sockets), on virtual time.
//!
//! `cargo bench --bench delay` prints, in one run, sync packets/s and bytes/s for
//! `syncdelay` 0, 2 and 10 s, the reduction against 0, and the share of flows never
//! synced. Without `--bench` (as under `cargo test --benches`) it runs one tiny pass.
//!
//! The traffic: new flows at a fixed rate; lifetimes 70 % uniform in 0.05–2 s, 20 % in
//! 2–30 s, 10 % in 60–300 s (the mix the project's brief names: short DNS and web
//! flows, a long tail; the anchors hold no published lifetime distribution, only the
//! outcome of one study, Feng, Huang, Wu, GLOBECOM 2008: delayed replication cut 50 % /
//! 74.4 % of the replication bandwidth while 1.9 % / 3.4 % of protected traffic was
//! lost). 80 % TCP, 20 % UDP. Each flow is reported by the table as it changes: at
//! 0.2, 0.6 and 1.5 s of age, then every 5 s, and deleted at its end. Packets and bytes
//! (pfsync payload plus a 20-byte IPv4 header) are counted over the second half of the
//! simulated period, when the long flows have reached a steady state; the share never
//! synced counts every flow of the run (those alive at the end are announced by running
//! the timers out). With no delay nearly every flow is synced: at these rates a packet
//! fills with INS records long before the 1 s batching timer, as in the kernels.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use pfsyncd::engine::{Config, Engine, LocalChange};
use pfsyncd::state::{PeerLevel, PeerState, Protocol, State, TcpState, Timeout};
use pfsyncd::wire::{Dialect, IfName, Message, PacketReader};

const CREATOR: u32 = 0x5eed_0002;
const IP_HEADER: u64 = 20;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [lo, hi) milliseconds.
    fn ms(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

#[derive(Clone, Copy)]
enum Change {
    Insert,
    Update,
    Delete,
}

/// One table report: (milliseconds since the start, flow number, what).
type Report = (u64, u32, Change);

/// Every report of the run, in time order.
fn traffic(flows_per_sec: u64, period_ms: u64, seed: u64) -> (Vec<Report>, Vec<(u64, bool)>) {
    let mut rng = Rng(seed);
    let mut heap: BinaryHeap<Reverse<(u64, u32, u8)>> = BinaryHeap::new();
    // Per flow: start time, TCP or not.
    let mut flows = Vec::new();
    let gap_us = 1_000_000 / flows_per_sec;
    let n = period_ms * 1000 / gap_us;
    for f in 0..n {
        let start = f * gap_us / 1000;
        let life = match rng.next() % 100 {
            0..=69 => rng.ms(50, 2_000),
            70..=89 => rng.ms(2_000, 30_000),
            _ => rng.ms(60_000, 300_000),
        };
        let f = f as u32;
        flows.push((start, rng.next() % 10 < 8));
        heap.push(Reverse((start, f, 0)));
        let mut age = [200, 600, 1500]
            .into_iter()
            .chain((1..).map(|k| 1500 + 5000 * k));
        for a in age.by_ref() {
            if a >= life {
                break;
            }
            heap.push(Reverse((start + a, f, 1)));
        }
        heap.push(Reverse((start + life, f, 2)));
    }
    let mut out = Vec::with_capacity(heap.len());
    while let Some(Reverse((t, f, k))) = heap.pop() {
        if t >= period_ms {
            // Still alive at the end: its later reports fall outside the run.
            continue;
        }
        let change = match k {
            0 => Change::Insert,
            1 => Change::Update,
            _ => Change::Delete,
        };
        out.push((t, f, change));
    }
    (out, flows)
}

fn state_of(flow: u32, start_ms: u64, now_ms: u64, tcp: bool, packets: u64) -> State {
    let id = u64::from(flow) + 1;
    let mut s = State {
        id,
        creatorid: CREATOR,
        ifname: IfName::new("em0").expect("a name"),
        packets: [packets, packets.saturating_sub(1)],
        bytes: [packets * 600, packets.saturating_sub(1) * 600],
        age_secs: ((now_ms - start_ms) / 1000) as u32,
        expire_secs: 60,
        ..State::default()
    };
    s.wire.addr = [
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | flow)),
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    ];
    s.wire.port = [(1024 + flow % 60000) as u16, if tcp { 443 } else { 53 }];
    if tcp {
        let established = packets > 1;
        let tcp_state = if established {
            TcpState::Established
        } else {
            TcpState::SynSent
        };
        s.src.state = PeerState::Tcp(tcp_state);
        s.dst.state = PeerState::Tcp(if established {
            TcpState::Established
        } else {
            TcpState::Closed
        });
        s.src.seqlo = 1000 + packets as u32 * 1400;
        s.timeout = if established {
            Timeout::TcpEstablished
        } else {
            Timeout::TcpFirst
        };
    } else {
        s.wire.proto = Protocol::Udp;
        s.src.state = PeerState::Level(PeerLevel::SINGLE);
        s.dst.state = PeerState::Level(if packets > 1 {
            PeerLevel::MULTIPLE
        } else {
            PeerLevel::NO_TRAFFIC
        });
        s.timeout = Timeout::UdpSingle;
    }
    s.stack = s.wire;
    s
}

struct Outcome {
    packets: u64,
    bytes: u64,
    inserts: u64,
    flows: u64,
    elapsed: Duration,
}

fn run(reports: &[Report], flows: &[(u64, bool)], delay_secs: u64, period_ms: u64) -> Outcome {
    let mut config = Config::new(CREATOR, Dialect::FreeBsd1400);
    config.sync_delay = Duration::from_secs(delay_secs);
    let mut engine = Engine::new(config);
    let t0 = Instant::now();
    let window_from = period_ms / 2;
    let mut packets_seen = vec![0u64; flows.len()];
    let mut out = Outcome {
        packets: 0,
        bytes: 0,
        inserts: 0,
        flows: flows.len() as u64,
        elapsed: Duration::ZERO,
    };
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let drain = |engine: &mut Engine, ms: u64, out: &mut Outcome| {
        while let Some(t) = engine.poll_transmit() {
            if ms >= window_from && ms < period_ms {
                out.packets += 1;
                out.bytes += t.payload.len() as u64 + IP_HEADER;
            }
            for m in PacketReader::new(&t.payload)
                .expect("our packet")
                .messages()
            {
                if matches!(m, Ok(Message::Ins(_))) {
                    out.inserts += 1;
                }
            }
        }
    };
    let started = Instant::now();
    for &(ms, flow, change) in reports {
        while let Some(due) = engine.poll_timeout().filter(|&d| d <= at(ms)) {
            engine.handle_timeout(due);
            let due_ms = due.duration_since(t0).as_millis() as u64;
            drain(&mut engine, due_ms, &mut out);
        }
        let (start, tcp) = flows[flow as usize];
        let change = match change {
            Change::Insert => {
                packets_seen[flow as usize] = 1;
                LocalChange::Insert(state_of(flow, start, ms, tcp, 1))
            }
            Change::Update => {
                packets_seen[flow as usize] += 3;
                let p = packets_seen[flow as usize];
                LocalChange::Update(state_of(flow, start, ms, tcp, p))
            }
            Change::Delete => LocalChange::Delete {
                creatorid: CREATOR,
                id: u64::from(flow) + 1,
            },
        };
        engine.handle_local(at(ms), change);
        drain(&mut engine, ms, &mut out);
    }
    // The flows alive at the end are announced when due: run the timers out (outside
    // the measured window).
    while let Some(due) = engine.poll_timeout() {
        engine.handle_timeout(due);
        drain(&mut engine, u64::MAX, &mut out);
    }
    out.elapsed = started.elapsed();
    out
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rate, period_ms) = if full { (1_000, 600_000) } else { (50, 40_000) };
    println!(
        "delayed sync benchmark ({}): {rate} new flows/s for {} s, measured over the last {} s",
        if full { "full" } else { "quick pass" },
        period_ms / 1000,
        period_ms / 2000
    );
    let (reports, flows) = traffic(rate, period_ms, 0x0dd_f10e5);
    println!(
        "  {} flows, {} table reports (inserts, updates, deletes)",
        flows.len(),
        reports.len()
    );
    let window_secs = (period_ms / 2) as f64 / 1000.0;
    let mut baseline = None;
    for delay in [0, 2, 10] {
        let o = run(&reports, &flows, delay, period_ms);
        let pps = o.packets as f64 / window_secs;
        let bps = o.bytes as f64 / window_secs;
        let (base_pps, base_bps) = *baseline.get_or_insert((pps, bps));
        let never = 1.0 - o.inserts as f64 / o.flows as f64;
        println!(
            "  syncdelay {delay:>2} s: {pps:>8.1} packets/s ({:>5.1} % less), {:>9.1} kB/s \
             ({:>5.1} % less); flows never synced {:>5.1} %; engine time {:.2} s",
            100.0 * (1.0 - pps / base_pps),
            bps / 1000.0,
            100.0 * (1.0 - bps / base_bps),
            100.0 * never,
            o.elapsed.as_secs_f64(),
        );
    }
}
