//! "bulk: done" means the states are in the table (issue 14, point 6).
//!
//! The engine process decides a bulk update is over when the END arrives, but the
//! imports it decided are carried out by the parent, which may still be working through
//! them: status must say `importing` until every operation sent before the END has been
//! applied. A status answer carries the parent's table count taken when the parent
//! passed the request on, and the engine compares against that same moment, so "done"
//! with fewer states than the sender holds is the bug itself, not a race of the test.
//!
//! Needs root, iproute2 and nftables, as `daemon_cluster.rs`.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use serde_json::Value;

mod cluster;
use cluster::{cluster, serial};

/// Enough for the parent's imports to trail the engine (issue 14 saw 110 000 of
/// 1 000 000 still to import in a release build); `PFSYNCD_TEST_BULK_STATES` changes it.
/// A debug build's engine is the slower side, where a fast bulk of 200 000 arrives short
/// (issue 14 point 4): 100 000 there checks the words.
fn states_to_send() -> u64 {
    std::env::var("PFSYNCD_TEST_BULK_STATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            100_000
        } else {
            300_000
        })
}

/// The sender's bulk pace in packets per second (`--bulk-pps`; the default pace when
/// unset, or with `PFSYNCD_TEST_BULK_PPS=0`): fast enough that the engine hands the
/// parent imports faster than it applies them, slow enough not to overrun the receiver.
fn sender_pace() -> Option<String> {
    let pps = std::env::var("PFSYNCD_TEST_BULK_PPS").unwrap_or_else(|_| "10000".into());
    (pps != "0").then_some(pps)
}

/// States whose copies here may expire before the sender's: ages travel in whole
/// seconds and a bulk's records are written some time before they are imported, and
/// about 150 of the synthetic states expire each second (331 were seen once, with the
/// engine holding all of the sender's).
const EXPIRY_MARGIN: u64 = 1_000;

#[test]
fn bulk_done_only_once_every_state_is_in_the_table() {
    let _g = serial();
    let mut c = cluster("bdone", 2);
    let pace = sender_pace();
    match &pace {
        Some(pps) => c.start(0, &["--bulk-pps", pps]).unwrap(),
        None => c.start(0, &[]).unwrap(),
    }
    let want = states_to_send();
    for _ in 0..want / 10_000 {
        c.ctl(0, "insert 10000").unwrap();
    }
    let sent = c.ctl_json(0, "status").unwrap()["states"].as_u64().unwrap();
    assert_eq!(sent, want / 10_000 * 10_000);
    if cfg!(debug_assertions) {
        // The debug parent's test hook (parent/process.rs): 4 ms after every 100 table
        // operations, so the imports trail the END here, as they did at 1 000 000 states
        // in issue 14 and as a release parent with the memory table on this machine
        // does not (measured: 1 000 000 at 100 000 packets/s imported in step).
        std::env::set_var("PFSYNCD_TEST_SLOW_APPLY", "4000");
    }
    c.start(1, &[]).unwrap();

    let start = Instant::now();
    let mut importing_seen = 0u32;
    let done: Value = loop {
        let s = c.ctl_json(1, "status").unwrap();
        let states = s["states"].as_u64().unwrap();
        match s["bulk"].as_str().unwrap() {
            "done" => {
                // The synthetic states include short-lived ones (ICMP errors: 10 s), which
                // expire on both nodes while a loaded machine runs the test: the sender's
                // count now is the reference, less a margin for copies that expire a
                // moment earlier here (the bug left thousands out, at the slow apply).
                let holds = c.ctl_json(0, "status").unwrap()["states"].as_u64().unwrap();
                assert!(
                    states + EXPIRY_MARGIN >= holds,
                    "status said done with {states} states in the table while the sender \
                     holds {holds} of the {sent} it made (the engine held {}): {s}",
                    s["cached"]
                );
                break s;
            }
            "importing" => {
                importing_seen += 1;
                assert_eq!(s["syncok"], false, "syncok before the imports: {s}");
                assert!(
                    s["importing"].as_u64().is_some_and(|n| n > 0),
                    "importing without operations in flight: {s}"
                );
            }
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no bulk done with {sent} states in 180 s: {s}"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(done["syncok"], true, "{done}");
    eprintln!(
        "{sent} states bulk-synced and imported in {:?}; status said importing {importing_seen} times",
        start.elapsed()
    );
    // The log says syncok (and the carp demotion is lowered) only after the imports:
    // both travel the data channel, behind the table operations; the status answer
    // comes on its own channel and may be ahead of them.
    let logged = pfsyncd::lab::wait_until(Duration::from_secs(20), || {
        c.log_tail(1, 200).contains("syncok 1")
    });
    assert!(logged.is_some(), "{}", c.log_tail(1, 20));
}
