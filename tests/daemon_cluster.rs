//! pfsyncd daemons for real: separate processes in network namespaces joined by a
//! bridge, driven through their control sockets.
//!
//! Needs root (network namespaces, raw sockets) and iproute2. Without them every test
//! fails with the reason: CI runs as root, and a silent pass would prove nothing.

use std::time::Duration;

use pfsyncd::lab::{wait_until, Cluster};

/// Prefix of the namespaces these tests create (the pid and host follow).
const PREFIX: &str = "pfsd-it-";

fn cluster(hosts: usize) -> Cluster {
    Cluster::new(env!("CARGO_BIN_EXE_pfsyncd").as_ref(), PREFIX, hosts)
        .unwrap_or_else(|e| panic!("cannot build the test cluster: {e}"))
}

/// True when every host holds the same states with the same synchronised fields, and
/// `expect` of them.
fn converged(c: &Cluster, expect: usize) -> bool {
    let first = match c.synced_states(0) {
        Ok(s) => s,
        Err(_) => return false,
    };
    first.len() == expect
        && (1..c.hosts().len()).all(|i| c.synced_states(i).is_ok_and(|s| s == first))
}

#[test]
fn three_nodes_converge_under_churn() {
    let mut c = cluster(3);
    for i in 0..3 {
        c.start(i, &[]).unwrap();
    }
    c.ctl(0, "insert 300").unwrap();
    c.ctl(1, "insert 200").unwrap();
    c.ctl(2, "churn 2000 500").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    c.ctl(2, "churn 0").unwrap();
    c.ctl(0, "update 50").unwrap();
    c.ctl(1, "delete 20").unwrap();
    let expect = c.synced_states(0).unwrap().len();
    let took = wait_until(Duration::from_secs(10), || {
        let n = c.synced_states(0).map(|s| s.len()).unwrap_or(0);
        converged(&c, n) && n > 0
    });
    assert!(
        took.is_some(),
        "no convergence in 10 s: {:?}",
        (0..3)
            .map(|i| c.synced_states(i).map(|s| s.len()))
            .collect::<Vec<_>>()
    );
    assert!(expect >= 900, "{expect} states");
    for i in 0..3 {
        let stats = c.ctl_json(i, "stats").unwrap();
        let peers = stats["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 2, "host {} heard {peers:?}", i + 1);
        assert_eq!(stats["pfsync"]["badttl"], 0);
        let status = c.ctl_json(i, "status").unwrap();
        assert_eq!(status["syncok"], true, "host {}", i + 1);
    }
}
