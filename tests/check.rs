//! `pfsyncd check`, the real binary, on Linux: in a namespace with a veth it passes on a
//! good configuration, and fails with a remedy and exit status 1 on each bad one; its
//! JSON parses; `--import-test` passes on the memory table. And `ctl stats` shows the
//! kernel-edge counters (all zero on the memory table, but there).
//!
//! Needs root and iproute2 (like tests/privsep.rs): fails, not skips, without them.

#![cfg(target_os = "linux")]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use serde_json::Value;

use pfsyncd::lab::{lab_user, Cluster, EMPTY_DIR};

mod cluster;
use cluster::{cluster, serial};

/// Runs `pfsyncd check ARGS` in host 0's namespace, with the memory table, the lab's
/// user and chroot unless `args` name others.
fn check(c: &Cluster, args: &[&str]) -> Output {
    let mut cmd = c.host(0).ns.command(env!("CARGO_BIN_EXE_pfsyncd").as_ref());
    cmd.args(["check", "--table", "memory"]);
    if !args.contains(&"--user") {
        cmd.args(["--user", lab_user()]);
    }
    if !args.contains(&"--chroot") {
        cmd.arg("--chroot").arg(c.dir().join(EMPTY_DIR));
    }
    cmd.args(args);
    cmd.output().expect("runs pfsyncd check")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The line of step `name`.
fn step_line<'a>(text: &'a str, name: &str) -> &'a str {
    text.lines()
        .find(|l| {
            l.get(6..)
                .is_some_and(|rest| rest.starts_with(&format!("{name}:")))
        })
        .unwrap_or_else(|| panic!("no step {name} in:\n{text}"))
}

#[test]
fn a_good_configuration_passes() {
    let _g = serial();
    let c = cluster("chk-ok", 1);
    let out = check(&c, &["syncdev", "eth0", "up"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for step in [
        "root",
        "configuration",
        "engine user",
        "chroot",
        "syncdev",
        "receiver",
    ] {
        assert!(step_line(&text, step).starts_with("ok "), "{step}:\n{text}");
    }
    assert!(
        step_line(&text, "receiver")
            .contains("raw socket (protocol 240) open on eth0, joined 224.0.0.240"),
        "{text}"
    );
    // What does not apply on Linux says so.
    assert!(
        step_line(&text, "carp demotion").starts_with("skip "),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");
}

#[test]
fn each_bad_configuration_fails_with_a_remedy() {
    let _g = serial();
    let c = cluster("chk-bad", 1);
    let writable = c.dir().join("writable");
    fs::create_dir_all(&writable).unwrap();
    fs::set_permissions(&writable, fs::Permissions::from_mode(0o777)).unwrap();
    let writable = writable.display().to_string();
    let cases: [(&[&str], &str, &str); 4] = [
        (&["syncdev", "eth9", "up"], "syncdev", "no such interface"),
        (&["up"], "syncdev", "no syncdev is configured"),
        (
            &["--user", "root", "syncdev", "eth0", "up"],
            "engine user",
            "uid 0",
        ),
        (
            &["--chroot", &writable, "syncdev", "eth0", "up"],
            "chroot",
            "writable by group or others",
        ),
    ];
    for (args, step, why) in cases {
        let out = check(&c, args);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}:\n{text}");
        let line = step_line(&text, step);
        assert!(line.starts_with("FAIL "), "{args:?}: {line}");
        assert!(line.contains(why), "{args:?}: {line}");
        let next = text
            .lines()
            .skip_while(|l| *l != line)
            .nth(1)
            .unwrap_or_default();
        assert!(
            next.trim_start().starts_with("remedy: "),
            "{args:?}:\n{text}"
        );
        assert!(text.contains("step(s) failed"), "{text}");
    }
}

#[test]
fn the_json_report_parses() {
    let _g = serial();
    let c = cluster("chk-json", 1);
    for (args, passed) in [
        (&["--json", "syncdev", "eth0", "up"][..], true),
        (&["--json", "syncdev", "eth9", "up"][..], false),
    ] {
        let out = check(&c, args);
        let report: Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
        assert_eq!(report["passed"], passed, "{report}");
        assert_eq!(out.status.code(), Some(if passed { 0 } else { 1 }));
        let steps = report["steps"].as_array().expect("a list of steps");
        assert!(steps.len() >= 6, "{report}");
        for s in steps {
            assert!(s["name"].is_string() && s["detail"].is_string(), "{s}");
            let status = s["status"].as_str().unwrap();
            assert!(["ok", "FAIL", "skip"].contains(&status), "{s}");
            assert_eq!(s["remedy"].is_string(), status == "FAIL", "{s}");
        }
    }
}

#[test]
fn the_import_test_passes_on_the_memory_table() {
    let _g = serial();
    let c = cluster("chk-imp", 1);
    let out = check(&c, &["--import-test", "syncdev", "eth0", "up"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let line = step_line(&text, "import test");
    assert!(line.starts_with("ok "), "{line}");
    assert!(line.contains("192.0.2.1 -> 198.51.100.1"), "{line}");
    assert!(line.contains("killed it by id: gone"), "{line}");
}

#[test]
fn ctl_stats_shows_the_kernel_edge_counters() {
    let _g = serial();
    let mut c = cluster("chk-edge", 1);
    c.start(0, &[]).unwrap();
    let names = [
        "refused_zero_id",
        "expire_clamped",
        "unknown_interface",
        "rule_unbound",
        "partial_listings",
        "undecodable",
    ];
    // The start-up line says where the creator id came from.
    let log = fs::read_to_string(&c.host(0).log).unwrap();
    assert!(
        log.contains(&format!(
            "creator id {:08x} (--creatorid)",
            c.host(0).creatorid
        )),
        "{log}"
    );
    let stats = c.ctl_json(0, "stats").unwrap();
    for name in names {
        assert_eq!(stats["edge"][name], 0, "{name} in {}", stats["edge"]);
    }
    let text = c.ctl(0, "stats").unwrap();
    assert!(text.contains("kernel edge:"), "{text}");
    for name in names {
        assert!(text.contains(&format!("\t0 {name}")), "{name} in {text}");
    }
}
