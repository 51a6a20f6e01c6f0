//! A hostile host on the sync network of two secure peers (real daemons): it spoofs
//! plain pfsync packets with a secure peer's source address, sends random and forged
//! WireGuard-looking UDP datagrams to the secure port, and replays datagrams it captured
//! from the real link. None of it may change a table, and every datagram is counted
//! under its reason in `ctl stats`.
//!
//! The switch's bridge is made to flood (no MAC learning), so the hostile host sees the
//! peers' unicast datagrams as a host on a hub or a mirrored port would. It sends with
//! raw sockets (IP_HDRINCL), opened inside its namespace.
//!
//! Needs root, iproute2 and the lab's namespaces, as tests/daemon_cluster.rs.

#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pfsyncd::capture::link::ipv4_packet;
use pfsyncd::lab::{wait_until, Cluster};
use pfsyncd::state::State;
use pfsyncd::table::synth::Synth;
use pfsyncd::wire::{Dialect, Message, PacketBuilder};
use serde_json::Value;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

mod cluster;
use cluster::keys::{key_file, keypair};
use cluster::{cluster, serial};

const SECURE_PORT: u16 = 5240;
/// The creator id of the states the hostile host forges.
const FORGED_CREATOR: u32 = 0x6666_0001;
/// IP protocol numbers.
const IPPROTO_UDP: u8 = 17;
const IPPROTO_PFSYNC: u8 = 240;
/// Linux's ETH_P_IP, for a packet socket that hands over IPv4 packets.
const ETH_P_IP: u16 = 0x0800;

fn v4(addr: IpAddr) -> Ipv4Addr {
    match addr {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => panic!("the lab's hosts have IPv4 addresses"),
    }
}

/// A tiny xorshift: the garbage need not be good randomness, only not ours.
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A valid pfsync packet inserting `n` states of `FORGED_CREATOR`, and their keys.
fn forged_inserts(n: usize) -> (Vec<u8>, Vec<(u32, u64)>) {
    let dialect = Dialect::FreeBsd1400;
    let mut synth = Synth::new(66, FORGED_CREATOR);
    let mut builder = PacketBuilder::new(dialect, 1500);
    let mut keys = Vec::new();
    for _ in 0..n {
        let s = State {
            age_secs: 0,
            expire_secs: 0,
            ..synth.state()
        };
        keys.push((s.creatorid, s.id));
        let (record, _) = s.to_record(dialect.record_format());
        let _ = builder.push(&Message::Ins(record)).unwrap();
    }
    (builder.finish().unwrap(), keys)
}

/// A UDP datagram inside an IPv4 packet, checksum left 0 (allowed for IPv4).
fn udp_packet(from: SocketAddr, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::with_capacity(8 + payload.len());
    udp.extend_from_slice(&from.port().to_be_bytes());
    udp.extend_from_slice(&to.port().to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    ipv4_packet(v4(from.ip()), v4(to.ip()), 64, IPPROTO_UDP, &udp).unwrap()
}

/// A raw socket in the hostile namespace that sends whole IPv4 packets, any source.
fn spoofer(c: &Cluster, hostile: usize) -> Socket {
    c.host(hostile)
        .ns
        .run(|| Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255))).unwrap())
        .unwrap()
}

fn send_raw(socket: &Socket, packet: &[u8]) {
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    socket
        .send_to(packet, &SockAddr::from(SocketAddr::new(IpAddr::V4(dst), 0)))
        .unwrap();
    // Not a flood: the test counts datagrams, the victims' socket buffers must keep
    // every one.
    std::thread::sleep(Duration::from_millis(2));
}

/// One UDP datagram the hostile host saw on the wire.
#[derive(Debug, Clone)]
struct Captured {
    from: SocketAddr,
    to: SocketAddr,
    payload: Vec<u8>,
}

/// Captures the secure link's datagrams seen in the hostile namespace until `stop`.
fn capture(
    c: &Cluster,
    hostile: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Captured>> {
    let socket = c
        .host(hostile)
        .ns
        .run(|| {
            Socket::new(
                Domain::PACKET,
                Type::DGRAM,
                Some(Protocol::from(i32::from(ETH_P_IP.to_be()))),
            )
            .unwrap()
        })
        .unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let Ok(n) = (&socket).read(&mut buf) else {
                continue;
            };
            let p = &buf[..n];
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if p[9] != IPPROTO_UDP || p.len() < ihl + 8 {
                continue;
            }
            let port = |at: usize| u16::from_be_bytes([p[at], p[at + 1]]);
            let (sport, dport) = (port(ihl), port(ihl + 2));
            if dport != SECURE_PORT {
                continue;
            }
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]));
            got.push(Captured {
                from: SocketAddr::new(ip(12), sport),
                to: SocketAddr::new(ip(16), dport),
                payload: p[ihl + 8..].to_vec(),
            });
        }
        got
    })
}

/// Every refusal of host `i`'s secure link, by reason (its peers' and the unattributed
/// ones), and its downgrades.
fn refusals(c: &Cluster, i: usize) -> (std::collections::BTreeMap<String, u64>, u64) {
    let secure = c.ctl_json(i, "stats").unwrap()["secure"].clone();
    let mut by_reason = std::collections::BTreeMap::new();
    let mut add = |counts: &Value| {
        for (reason, n) in counts.as_object().unwrap() {
            *by_reason.entry(reason.clone()).or_insert(0) += n.as_u64().unwrap();
        }
    };
    add(&secure["refused_unattributed"]);
    for peer in secure["peers"].as_array().unwrap() {
        add(&peer["refused"]);
    }
    (by_reason, secure["downgrade"].as_u64().unwrap())
}

fn delta(
    after: &std::collections::BTreeMap<String, u64>,
    before: &std::collections::BTreeMap<String, u64>,
    reason: &str,
) -> u64 {
    after.get(reason).copied().unwrap_or(0) - before.get(reason).copied().unwrap_or(0)
}

fn keys(c: &Cluster, i: usize) -> BTreeSet<(String, String)> {
    c.synced_states(i)
        .unwrap()
        .into_iter()
        .map(|(creator, id, _)| (creator, id))
        .collect()
}

#[test]
fn a_hostile_host_changes_no_state_and_every_datagram_is_counted() {
    let _serial = serial();
    let mut c = cluster("sech", 3);
    let (victim, peer, hostile) = (0, 1, 2);
    // A hub: every frame reaches every port, so the hostile host sees the peers' unicast.
    c.switch()
        .ip(&["link", "set", "br0", "type", "bridge", "ageing_time", "0"])
        .unwrap();
    c.host(hostile)
        .ns
        .ip(&["link", "set", "eth0", "promisc", "on"])
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let capturing = capture(&c, hostile, stop.clone());

    let keys_of = [keypair(), keypair()];
    for i in [victim, peer] {
        let key = key_file(&c.dir().join(format!("key{i}")), &keys_of[i].0);
        let other = c.addr(1 - i, false).to_string();
        // The plain link names the other peer as its syncpeer: without the downgrade
        // rule, a plain packet spoofed with its address would be taken.
        c.start(
            i,
            &[
                "syncdev",
                "eth0",
                "syncpeer",
                &other,
                "securekey",
                &key,
                "securepeer",
                &other,
                "pubkey",
                &keys_of[1 - i].1,
                "up",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    c.ctl(peer, "insert 30").unwrap();
    c.ctl(victim, "insert 20").unwrap();
    let both = |c: &Cluster| keys(c, victim).len() == 50 && keys(c, peer).len() == 50;
    wait_until(Duration::from_secs(15), || both(&c)).unwrap_or_else(|| {
        panic!(
            "the peers did not sync: {}\n{}",
            c.log_tail(victim, 10),
            c.log_tail(peer, 10)
        )
    });
    // Idle from here: no legitimate datagram or plain packet crosses during the attack.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let captured = capturing.join().unwrap();
    let victim_addr = SocketAddr::new(c.addr(victim, false), SECURE_PORT);
    let peer_addr = SocketAddr::new(c.addr(peer, false), SECURE_PORT);
    let to_victim: Vec<&Captured> = captured
        .iter()
        .filter(|d| d.to == victim_addr && d.from == peer_addr)
        .collect();
    let kinds: BTreeSet<u8> = to_victim.iter().map(|d| d.payload[0]).collect();
    assert!(
        kinds.contains(&1) && kinds.contains(&4),
        "the capture holds no handshake initiation and data from the peer: kinds {kinds:?} of {} datagrams",
        captured.len()
    );

    let tables = [keys(&c, victim), keys(&c, peer)];
    let (before, downgrades_before) = refusals(&c, victim);
    let (_, peer_downgrades_before) = refusals(&c, peer);
    let raw = spoofer(&c, hostile);
    let hostile_addr = c.addr(hostile, false);
    let mut garbage = Garbage(0x9e37_79b9_7f4a_7c15);

    // (a) Plain pfsync inserts with a secure peer's source address, both ways.
    let (forged, forged_keys) = forged_inserts(3);
    let spoofed_plain = 5;
    for _ in 0..spoofed_plain {
        for (from, to) in [(peer, victim), (victim, peer)] {
            let packet = ipv4_packet(
                v4(c.addr(from, false)),
                v4(c.addr(to, false)),
                255,
                IPPROTO_PFSYNC,
                &forged,
            )
            .unwrap();
            send_raw(&raw, &packet);
        }
    }

    // (b) Random datagrams (never a WireGuard type byte), then forged ones of each
    // WireGuard type with garbage after the type: handshake initiation (148 bytes),
    // response (92), cookie reply (64), data to unknown indices, and data to the real
    // session's index with a fresh counter and a garbage body.
    let from_hostile = |port: u16| SocketAddr::new(hostile_addr, port);
    let mut sent = 0u64;
    let random = 10u64;
    for n in 0..random {
        let len = 1 + (garbage.next() % 300) as usize;
        let mut d = garbage.bytes(len);
        d[0] = 5 + (d[0] % 250);
        send_raw(
            &raw,
            &udp_packet(from_hostile(40000 + n as u16), victim_addr, &d),
        );
        sent += 1;
    }
    let typed = |kind: u8, len: usize, g: &mut Garbage| {
        let mut d = vec![kind, 0, 0, 0];
        d.extend(g.bytes(len - 4));
        d
    };
    let forged_inits = 10u64;
    for _ in 0..forged_inits {
        send_raw(
            &raw,
            &udp_packet(peer_addr, victim_addr, &typed(1, 148, &mut garbage)),
        );
        sent += 1;
    }
    for (kind, len, count) in [(2u8, 92usize, 5u64), (3, 64, 5), (4, 96, 10)] {
        for _ in 0..count {
            send_raw(
                &raw,
                &udp_packet(peer_addr, victim_addr, &typed(kind, len, &mut garbage)),
            );
            sent += 1;
        }
    }
    let real_data = to_victim
        .iter()
        .rev()
        .find(|d| d.payload[0] == 4)
        .expect("a data message");
    let forged_on_session = 5u64;
    for n in 0..forged_on_session {
        let mut d = real_data.payload.clone();
        // A counter far ahead of any seen, so only the tag can refuse it.
        d[8..16].copy_from_slice(&(1_000_000 + n).to_le_bytes());
        for b in &mut d[16..] {
            *b ^= garbage.next() as u8 | 1;
        }
        send_raw(&raw, &udp_packet(peer_addr, victim_addr, &d));
        sent += 1;
    }

    // (c) Replays of what the peer sent, from the peer's address.
    let replayed = to_victim.len() as u64;
    for d in &to_victim {
        send_raw(&raw, &udp_packet(d.from, d.to, &d.payload));
        sent += 1;
    }

    let counted = wait_until(Duration::from_secs(10), || {
        let (after, _) = refusals(&c, victim);
        after.values().sum::<u64>() - before.values().sum::<u64>() >= sent
    });
    let (after, downgrades_after) = refusals(&c, victim);
    let (_, peer_downgrades_after) = refusals(&c, peer);
    let total = after.values().sum::<u64>() - before.values().sum::<u64>();
    let by_reason: Vec<String> = after
        .keys()
        .map(|r| format!("{r} {}", delta(&after, &before, r)))
        .filter(|s| !s.ends_with(" 0"))
        .collect();
    eprintln!(
        "hostile host: {sent} datagrams to the secure port ({random} random, {forged_inits} forged \
         initiations, 20 forged other types, {forged_on_session} forged on the session, \
         {replayed} replays), refused {total}: {}; plain spoofed {spoofed_plain} each way, \
         downgrades {} and {}",
        by_reason.join(", "),
        downgrades_after - downgrades_before,
        peer_downgrades_after - peer_downgrades_before
    );
    assert!(
        counted.is_some() && total == sent,
        "{total} refusals counted for {sent} datagrams: {by_reason:?}"
    );
    assert_eq!(delta(&after, &before, "malformed"), random, "{by_reason:?}");
    assert!(
        delta(&after, &before, "not-authentic") >= forged_inits + forged_on_session,
        "{by_reason:?}"
    );
    assert!(
        delta(&after, &before, "replay") >= replayed - 1,
        "{by_reason:?}"
    );
    assert_eq!(downgrades_after - downgrades_before, spoofed_plain);
    assert_eq!(
        peer_downgrades_after - peer_downgrades_before,
        spoofed_plain
    );

    // Not one state changed, and the forged ones are nowhere.
    assert_eq!(keys(&c, victim), tables[0]);
    assert_eq!(keys(&c, peer), tables[1]);
    for (creator, id) in &forged_keys {
        for i in [victim, peer] {
            let got = c.ctl(i, &format!("get {creator:08x} {id:016x}"));
            assert!(
                got.is_err(),
                "host {}: forged state present: {got:?}",
                i + 1
            );
        }
    }
    // And the link still works.
    c.ctl(peer, "insert 5").unwrap();
    wait_until(Duration::from_secs(10), || keys(&c, victim).len() == 55)
        .expect("the link carries states after the attack");
}
