//! Three nodes, two links: A and B are secure peers on two sites joined only by a router
//! namespace (the outer packets' TTL is decremented, so the plain link could not cross
//! it, and B is taken off the LAN altogether); C is a plain-link peer on A's LAN. The
//! middle node A keeps one cluster across both links: what C makes reaches B through A,
//! and what B makes reaches C through A.
//!
//! Needs root, iproute2 and the lab's namespaces, as tests/daemon_cluster.rs.

#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::time::Duration;

use pfsyncd::lab::{wait_until, Cluster, Netns};

mod cluster;
use cluster::keys::{key_file, keypair};
use cluster::{cluster, serial};

/// Host `i`'s states that live `secs` or more: hosts expire states by their own
/// clocks, so one about to go may be gone on one host and not yet on another.
fn keys(c: &Cluster, i: usize, secs: u64) -> BTreeSet<(String, String)> {
    c.synced_states_lasting(i, secs)
        .map(|s| {
            s.into_iter()
                .map(|(creator, id, _)| (creator, id))
                .collect()
        })
        .unwrap_or_default()
}

/// True when every state a host holds with 10 s or more to live is on the others, and
/// each of the three creators has states on every host.
fn converged(c: &Cluster) -> bool {
    (0..3).all(|i| {
        let lasting = keys(c, i, 10);
        let creators: BTreeSet<&String> = lasting.iter().map(|(creator, _)| creator).collect();
        creators.len() == 3 && (0..3).all(|j| keys(c, j, 5).is_superset(&lasting))
    })
}

/// A router namespace with a WAN link to each of `hosts` (10.1.N.0/24 for host N,
/// counted from 1), forwarding between them.
fn router(c: &Cluster, hosts: &[usize]) -> Netns {
    let router = Netns::new("pfsd-secx-", "rt").unwrap();
    for &i in hosts {
        let n = i + 1;
        let port = format!("r{n}");
        router
            .ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                "wan0",
                "netns",
                c.host(i).ns.name(),
            ])
            .unwrap();
        router
            .ip(&["addr", "add", &format!("10.1.{n}.1/24"), "dev", &port])
            .unwrap();
        router.ip(&["link", "set", &port, "up"]).unwrap();
        let ns = &c.host(i).ns;
        ns.ip(&["addr", "add", &format!("10.1.{n}.2/24"), "dev", "wan0"])
            .unwrap();
        ns.ip(&["link", "set", "wan0", "up"]).unwrap();
        ns.ip(&["route", "add", "10.1.0.0/16", "via", &format!("10.1.{n}.1")])
            .unwrap();
    }
    let forwarding = router
        .command("sysctl".as_ref())
        .args(["-qw", "net.ipv4.ip_forward=1"])
        .status()
        .unwrap();
    assert!(forwarding.success());
    router
}

#[test]
fn a_plain_peer_and_a_secure_peer_converge_through_the_middle_node() {
    let _serial = serial();
    let mut c = cluster("secx", 3);
    let (a, b, plain) = (0, 1, 2);
    let _router = router(&c, &[a, b]);
    // B is on another site: off the LAN of A and C.
    c.switch()
        .ip(&["link", "set", &format!("p{}", b + 1), "nomaster"])
        .unwrap();
    let wan = |i: usize| format!("10.1.{}.2", i + 1);
    let (key_a, key_b) = (keypair(), keypair());
    let file_a = key_file(&c.dir().join("key-a"), &key_a.0);
    let file_b = key_file(&c.dir().join("key-b"), &key_b.0);
    let (lan_a, lan_b, lan_plain) = (
        c.addr(a, false).to_string(),
        c.addr(b, false).to_string(),
        c.addr(plain, false).to_string(),
    );
    let wan_a = wan(a);
    let wan_b = wan(b);
    c.start(
        a,
        &[
            "syncdev",
            "eth0",
            "syncpeer",
            &lan_plain,
            "securekey",
            &file_a,
            "securepeer",
            &wan_b,
            "pubkey",
            &key_b.1,
            "inner",
            &lan_b,
            "up",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    c.start(
        b,
        &[
            "syncdev",
            "eth0",
            "syncpeer",
            "192.0.2.250",
            "securekey",
            &file_b,
            "securepeer",
            &wan_a,
            "pubkey",
            &key_a.1,
            "inner",
            &lan_a,
            "up",
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    c.start(plain, &["syncdev", "eth0", "syncpeer", &lan_a, "up"])
        .unwrap_or_else(|e| panic!("{e}"));

    c.ctl(a, "insert 10").unwrap();
    c.ctl(b, "insert 20").unwrap();
    c.ctl(plain, "insert 30").unwrap();
    let converged_in = wait_until(Duration::from_secs(20), || converged(&c));
    let held: Vec<String> = (0..3)
        .map(|i| {
            let mut by_creator = std::collections::BTreeMap::<String, usize>::new();
            for (creator, _) in keys(&c, i, 0) {
                *by_creator.entry(creator).or_default() += 1;
            }
            format!("{by_creator:?}")
        })
        .collect();
    assert!(
        converged_in.is_some(),
        "A, B and C hold {held:?} (states per creator)\nA: {}\nB: {}\nC: {}",
        c.log_tail(a, 12),
        c.log_tail(b, 12),
        c.log_tail(plain, 12)
    );
    eprintln!(
        "three nodes across two links converged in {} ms: {held:?}",
        converged_in.unwrap().as_millis()
    );
    let peer = c.ctl_json(b, "stats").unwrap()["secure"]["peers"][0].clone();
    assert_eq!(peer["handshake"], "established", "{peer}");
    assert_eq!(peer["endpoint"], format!("{wan_a}:5240"));
}
