//! Real daemons in network namespaces: which peers a node listens to (the allow-list of
//! unicast sync peers, `anysource`) and under which interface names it takes their
//! states in (`ifmap`).
//!
//! Needs root (network namespaces, raw sockets) and iproute2, as tests/daemon_cluster.rs;
//! without them every test fails with the reason.

// Network namespaces and the raw-socket receiver are Linux's.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use nix::sys::signal::Signal;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use pfsyncd::lab::{wait_until, Cluster, Netns};
use pfsyncd::state::State;
use pfsyncd::table::synth::Synth;
use pfsyncd::wire::{Dialect, Message, PacketBuilder};

mod cluster;
use cluster::{cluster, serial};

/// A creator id no daemon of the lab has: the stranger's.
const STRANGER: u32 = 0x7777;

fn stat(c: &Cluster, i: usize, path: &[&str]) -> u64 {
    let mut v = c.ctl_json(i, "stats").unwrap();
    for p in path {
        v = v[*p].clone();
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("stats {path:?} of host {}", i + 1))
}

/// Host `i`'s states: (creator id, id) → interface name.
fn ifnames(c: &Cluster, i: usize) -> BTreeMap<(String, String), String> {
    c.synced_states(i)
        .unwrap_or_else(|e| panic!("host {}: {e}", i + 1))
        .into_iter()
        .map(|(creator, id, sync)| {
            let name = sync["ifname"].as_str().unwrap_or_default().to_string();
            ((creator, id), name)
        })
        .collect()
}

fn creator_hex(creatorid: u32) -> String {
    format!("{creatorid:08x}")
}

/// Renames the namespace's `eth0` (a NIC of another make); its IPv4 address stays.
fn rename_eth0(ns: &Netns, name: &str) {
    ns.ip(&["link", "set", "eth0", "down"]).unwrap();
    ns.ip(&["link", "set", "eth0", "name", name]).unwrap();
    ns.ip(&["link", "set", name, "up"]).unwrap();
}

/// A valid pfsync packet with `n` fresh states of creator `creatorid`.
fn valid_packet(dialect: Dialect, creatorid: u32, n: usize, seed: u64) -> Vec<u8> {
    let mut synth = Synth::new(seed, creatorid);
    let mut b = PacketBuilder::new(dialect, 1500);
    for _ in 0..n {
        let s = State {
            age_secs: 0,
            expire_secs: 0,
            ..synth.state()
        };
        let (record, _) = s.to_record(dialect.record_format());
        let _ = b.push(&Message::Ins(record)).unwrap();
    }
    b.finish().unwrap()
}

/// Sends raw protocol-240 datagrams with TTL 255 from inside `ns` to `to`, as a
/// kernel's pfsync would.
fn raw_send(ns: &Netns, to: IpAddr, packet: &[u8]) {
    let packet = packet.to_vec();
    ns.run(move || {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(240))).unwrap();
        s.set_ttl_v4(255).unwrap();
        let _ = s.send_to(&packet, &SockAddr::from(SocketAddr::new(to, 0)));
    })
    .unwrap();
}

#[test]
fn states_on_the_senders_nic_are_imported_under_the_local_name() {
    let _g = serial();
    let mut c = cluster("ifmap", 2);
    // Two firewalls with NICs of different makes on the sync link.
    rename_eth0(&c.host(0).ns, "em0");
    rename_eth0(&c.host(1).ns, "igb0");
    c.start(0, &["syncdev", "em0", "up"]).unwrap();
    c.start(
        1,
        &[
            "--check-interfaces",
            "syncdev",
            "igb0",
            "ifmap",
            "em0",
            "igb0",
            "up",
        ],
    )
    .unwrap();
    // Host 1's synthetic states are bound to em0 (its NIC), em1 and vtnet0 (which
    // neither host has) and all (floating).
    c.ctl(0, "insert 200").unwrap();
    let sent = ifnames(&c, 0);
    let count = |name: &str| sent.values().filter(|n| *n == name).count();
    let (on_em0, floating) = (count("em0"), count("all"));
    let unknown = sent.len() - on_em0 - floating;
    assert!(on_em0 > 0 && floating > 0 && unknown > 0, "{sent:?}");
    let expected: BTreeMap<_, _> = sent
        .iter()
        .filter_map(|(k, name)| match name.as_str() {
            "em0" => Some((k.clone(), "igb0".to_string())),
            "all" => Some((k.clone(), "all".to_string())),
            _ => None,
        })
        .collect();
    let took = wait_until(Duration::from_secs(15), || {
        ifnames(&c, 1) == expected && stat(&c, 1, &["edge", "unknown_interface"]) >= unknown as u64
    });
    assert!(
        took.is_some(),
        "host 2 holds {:?} (wanted {} on igb0, {} floating), unknown_interface {}",
        ifnames(&c, 1).values().collect::<Vec<_>>(),
        on_em0,
        floating,
        stat(&c, 1, &["edge", "unknown_interface"])
    );
    assert!(stat(&c, 1, &["engine", "ifname_mapped"]) >= on_em0 as u64);

    // No reverse mapping: host 2 sends what it holds under its own names, and host 1,
    // restarted empty, maps them back with its own ifmap.
    c.start(0, &["syncdev", "em0", "ifmap", "igb0", "em0", "up"])
        .unwrap();
    let back = wait_until(Duration::from_secs(20), || {
        let now = ifnames(&c, 0);
        expected.keys().all(|k| now.get(k) == sent.get(k))
    });
    assert!(
        back.is_some(),
        "host 1 did not get its states back on em0: {:?}",
        ifnames(&c, 0).values().collect::<Vec<_>>()
    );
    assert!(!ifnames(&c, 0).values().any(|n| n == "igb0"));
}

#[test]
fn a_stranger_on_the_link_is_refused_unless_anysource() {
    let _g = serial();
    let mut c = cluster("src", 3);
    let peer_of = |i: usize| c.addr(i, false).to_string();
    let (peer0, peer1) = (peer_of(0), peer_of(1));
    // Host 1's words are in a file, so that a SIGHUP can add anysource.
    let file = c.dir().join("h1.conf");
    std::fs::write(&file, format!("syncpeer {peer1}\n")).unwrap();
    let file_arg = file.to_str().unwrap().to_string();
    c.start(0, &["-f", &file_arg, "syncdev", "eth0", "up"])
        .unwrap();
    c.start(1, &["syncdev", "eth0", "syncpeer", &peer0, "up"])
        .unwrap();
    // The configured peer is heard.
    c.ctl(1, "insert 20").unwrap();
    wait_until(Duration::from_secs(10), || ifnames(&c, 0).len() == 20)
        .expect("host 2's states on host 1");

    // Host 3 runs no daemon: a stranger on the link with valid pfsync packets.
    let to = c.addr(0, false);
    let pkt = valid_packet(Dialect::FreeBsd1400, STRANGER, 3, 1);
    let stranger = creator_hex(STRANGER);
    let from_stranger = |c: &Cluster| ifnames(c, 0).keys().filter(|k| k.0 == stranger).count();
    wait_until(Duration::from_secs(10), || {
        raw_send(&c.host(2).ns, to, &pkt);
        stat(&c, 0, &["engine", "badsrc"]) >= 3
    })
    .expect("badsrc counted");
    assert_eq!(from_stranger(&c), 0, "the stranger's states were imported");
    assert_eq!(ifnames(&c, 0).len(), 20);
    let text = c.ctl(0, "stats").unwrap();
    assert!(text.contains("discarded for a source other than the syncpeers"));
    // The stranger is logged as refused, and not listed as a peer.
    let stranger_addr = c.addr(2, false).to_string();
    wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&c.host(0).log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("badsrc +") && l.contains(&stranger_addr))
    })
    .expect("the refusal logged");
    let peers = c.ctl_json(0, "stats").unwrap()["peers"].clone();
    assert!(!peers.to_string().contains(&stranger_addr), "{peers}");

    // A dedicated link: any source.
    std::fs::write(&file, format!("syncpeer {peer1} anysource\n")).unwrap();
    c.signal(0, Signal::SIGHUP).unwrap();
    let badsrc = stat(&c, 0, &["engine", "badsrc"]);
    wait_until(Duration::from_secs(10), || {
        raw_send(&c.host(2).ns, to, &pkt);
        from_stranger(&c) == 3
    })
    .expect("the stranger's states taken with anysource");
    assert_eq!(stat(&c, 0, &["engine", "badsrc"]), badsrc);
    assert_eq!(ifnames(&c, 0).len(), 23);
}
