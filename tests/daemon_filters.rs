//! Sync filters and delayed sync with real daemons in network namespaces (see
//! `daemon_cluster.rs`: needs root, iproute2 and nftables, and fails without them).
//!
//! The memory table's synthetic states mix TCP, UDP and ICMP on em0, em1, vtnet0 and
//! all (`table/synth.rs`), so each filter has states to stop and states to let through.

// Network namespaces and the raw-socket receiver are Linux's.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use pfsyncd::lab::{wait_until, Cluster};

mod cluster;
use cluster::{cluster, serial};

const UDP: u64 = 17;
const ICMP: u64 = 1;

/// Host `i`'s states with 10 s or more to live, by (creator, id).
fn states(c: &Cluster, i: usize) -> BTreeMap<(String, String), Value> {
    c.synced_states_lasting(i, 10)
        .unwrap_or_else(|e| panic!("host {}: {e}", i + 1))
        .into_iter()
        .map(|(c, id, v)| ((c, id), v))
        .collect()
}

fn proto(v: &Value) -> u64 {
    v["wire"]["proto"].as_u64().unwrap()
}

fn stat(c: &Cluster, i: usize, group: &str, name: &str) -> u64 {
    c.ctl_json(i, "stats").unwrap()[group][name]
        .as_u64()
        .unwrap_or_else(|| panic!("stats {group}.{name} of host {}", i + 1))
}

/// "inserted N: creatorid C ids A to B": the creator and the id range, as `states`
/// names them.
fn inserted(answer: &str) -> (String, u64, u64) {
    let w: Vec<&str> = answer.split_whitespace().collect();
    let id = |s: &str| u64::from_str_radix(s, 16).unwrap();
    (w[3].to_string(), id(w[5]), id(w[7]))
}

fn in_range(key: &(String, String), range: &(String, u64, u64)) -> bool {
    let id = u64::from_str_radix(&key.1, 16).unwrap();
    key.0 == range.0 && (range.1..=range.2).contains(&id)
}

#[test]
fn a_filter_stops_a_class_of_states_both_ways_and_a_sighup_changes_it() {
    let _g = serial();
    let mut c = cluster("filt", 2);
    let file = c.dir().join("pfsyncd.conf");
    std::fs::write(&file, "syncdev eth0 nosync-proto udp up\n").unwrap();
    let f = file.to_str().unwrap().to_string();
    c.start(0, &["-f", &f]).unwrap();
    // Host 2 refuses to import (and to announce) states on vtnet0.
    c.start(1, &["syncdev", "eth0", "nosync-if", "vtnet0", "up"])
        .unwrap();

    let first = inserted(&c.ctl(0, "insert 300").unwrap());
    let wanted = |v: &Value| proto(v) != UDP && v["ifname"] != "vtnet0";
    let settled = wait_until(Duration::from_secs(15), || {
        let (a, b) = (states(&c, 0), states(&c, 1));
        a.iter()
            .filter(|(_, v)| wanted(v))
            .all(|(k, v)| b.get(k) == Some(v))
            && b.values().all(wanted)
    });
    let (a, b) = (states(&c, 0), states(&c, 1));
    assert!(
        settled.is_some(),
        "host 2 holds {} of host 1's {}",
        b.len(),
        a.len()
    );
    let udp = a.values().filter(|v| proto(v) == UDP).count() as u64;
    let on_vtnet0 = a
        .values()
        .filter(|v| proto(v) != UDP && v["ifname"] == "vtnet0")
        .count() as u64;
    assert!(udp > 0 && on_vtnet0 > 0, "the mix has both classes");
    assert!(b.len() > 100, "the rest flows: {} states", b.len());
    assert!(stat(&c, 0, "sync_filter", "filtered_out") >= udp);
    // The vtnet0 states may come in packets after the last wanted one: wait for them.
    let counted = wait_until(Duration::from_secs(10), || {
        stat(&c, 1, "sync_filter", "filtered_in") >= on_vtnet0
    });
    assert!(
        counted.is_some(),
        "host 2 counted {} of {on_vtnet0} states on vtnet0 as filtered in",
        stat(&c, 1, "sync_filter", "filtered_in")
    );

    // SIGHUP: UDP flows from now on, ICMP no longer does.
    std::fs::write(&file, "syncdev eth0 nosync-proto icmp up\n").unwrap();
    c.signal(0, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_until(Duration::from_secs(5), || {
        c.ctl_json(0, "status").unwrap()["sync_filter"]
            == serde_json::json!(["nosync-proto", "icmp"])
    })
    .expect("reloaded");
    let second = inserted(&c.ctl(0, "insert 300").unwrap());
    let wanted_now = |v: &Value| proto(v) != ICMP && v["ifname"] != "vtnet0";
    let settled = wait_until(Duration::from_secs(15), || {
        let (a, b) = (states(&c, 0), states(&c, 1));
        a.iter()
            .filter(|(k, v)| in_range(k, &second) && wanted_now(v))
            .all(|(k, v)| b.get(k) == Some(v))
    });
    assert!(settled.is_some(), "the new UDP states reach host 2");
    let (a, b) = (states(&c, 0), states(&c, 1));
    assert!(
        b.iter()
            .any(|(k, v)| in_range(k, &second) && proto(v) == UDP),
        "UDP flows after the SIGHUP"
    );
    assert!(
        !b.iter()
            .any(|(k, v)| in_range(k, &second) && proto(v) == ICMP),
        "ICMP stops after the SIGHUP"
    );
    // The first batch's UDP states, never announced, were not announced by the change.
    assert!(!b
        .keys()
        .any(|k| in_range(k, &first) && a.get(k).is_some_and(|v| proto(v) == UDP)));
}

#[test]
fn syncdelay_keeps_short_lived_states_off_the_link() {
    let _g = serial();
    let mut c = cluster("delay", 2);
    c.start(0, &["syncdev", "eth0", "syncdelay", "3", "up"])
        .unwrap();
    c.start(1, &[]).unwrap();
    let short = inserted(&c.ctl(0, "insert 50").unwrap());
    // Deleted within the delay: never sent.
    c.ctl(0, "delete 50").unwrap();
    let long = inserted(&c.ctl(0, "insert 50").unwrap());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !states(&c, 1).keys().any(|k| in_range(k, &long)),
        "not before 3 s"
    );
    // Every long-lived state host 1 still holds reaches host 2. (Some synthetic states
    // expire within seconds: whichever host expires one first sends its DEL_C, so the
    // sender's set shrinks too; a fixed count would race that.)
    let took = wait_until(Duration::from_secs(10), || {
        let (a, b) = (states(&c, 0), states(&c, 1));
        let sent: Vec<_> = a.keys().filter(|k| in_range(k, &long)).collect();
        !sent.is_empty() && sent.iter().all(|k| b.contains_key(*k))
    });
    assert!(
        took.is_some(),
        "announced once due: host 2 holds {} of host 1's {}",
        states(&c, 1).keys().filter(|k| in_range(k, &long)).count(),
        states(&c, 0).keys().filter(|k| in_range(k, &long)).count(),
    );
    assert!(!states(&c, 1).keys().any(|k| in_range(k, &short)));
    assert_eq!(stat(&c, 0, "sync_delay", "delayed"), 100);
    assert_eq!(stat(&c, 0, "sync_delay", "delayed_then_deleted"), 50);
    assert_eq!(stat(&c, 1, "table", "imported"), 50);
}
