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

/// Enough for the parent's imports to trail the engine: issue 14 saw 110 000 of
/// 1 000 000 still to import in a release build. A debug build's engine is the slower
/// side (a bulk of 200 000 arrives short there, issue 14 point 4): 100 000 still passes
/// through whole and checks the words.
const STATES: u64 = if cfg!(debug_assertions) {
    100_000
} else {
    1_000_000
};

#[test]
fn bulk_done_only_once_every_state_is_in_the_table() {
    let _g = serial();
    let mut c = cluster("bdone", 2);
    // The default pace: the bulk is lossless (unpaced, one arrives short: issue 14), and
    // still faster than a debug parent imports it.
    c.start(0, &[]).unwrap();
    for _ in 0..STATES / 10_000 {
        c.ctl(0, "insert 10000").unwrap();
    }
    let sent = c.ctl_json(0, "status").unwrap()["states"].as_u64().unwrap();
    assert_eq!(sent, STATES);
    c.start(1, &[]).unwrap();

    let start = Instant::now();
    let mut importing_seen = 0u32;
    let done: Value = loop {
        let s = c.ctl_json(1, "status").unwrap();
        let states = s["states"].as_u64().unwrap();
        match s["bulk"].as_str().unwrap() {
            "done" => {
                let cached = s["cached"].as_u64().unwrap();
                assert!(
                    states >= cached,
                    "status said done with {states} states in the table while the engine \
                     held {cached} (of the {sent} sent): {s}"
                );
                assert!(
                    cached >= sent,
                    "the bulk update itself arrived short: {cached} of {sent} (issue 14 \
                     point 4, not the import): {s}"
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
            start.elapsed() < Duration::from_secs(120),
            "no bulk done with {sent} states in 120 s: {s}"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(done["syncok"], true, "{done}");
    eprintln!(
        "{sent} states bulk-synced and imported in {:?}; status said importing {importing_seen} times",
        start.elapsed()
    );
    // The log says syncok only after the imports: it travels the same ordered channel
    // as the table operations, behind them.
    let log = c.log_tail(1, 200);
    assert!(log.contains("syncok 1"), "{log}");
}
