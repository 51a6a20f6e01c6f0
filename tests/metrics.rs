//! The metrics of a real daemon: `/metrics` scraped over TCP with a plain HTTP/1.1
//! client, the textfile read while it is being replaced, and bad requests.
//!
//! Two daemons (memory tables) in network namespaces, as in tests/daemon_cluster.rs:
//! host 1 serves `/metrics` on its address and writes a textfile every second; host 2
//! is its peer. Needs root; fails, not skips, without it.

// Network namespaces are Linux's.
#![cfg(target_os = "linux")]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pfsyncd::lab::{wait_until, Cluster};
use pfsyncd::metrics::validate;

mod cluster;
use cluster::{cluster, serial};

const PORT: u16 = 9478;

/// Sends `request` as is, reads the answer until the daemon closes: (status line,
/// headers, body).
fn exchange(c: &Cluster, addr: SocketAddr, request: &[u8]) -> (String, String, String) {
    let request = request.to_vec();
    let raw = c
        .host(0)
        .ns
        .run(move || {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(&request)?;
            let mut raw = Vec::new();
            s.read_to_end(&mut raw)?;
            Ok::<_, std::io::Error>(raw)
        })
        .unwrap()
        .unwrap_or_else(|e| panic!("{addr}: {e}"));
    let raw = String::from_utf8(raw).expect("the answer is UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// A scrape: the body, checked against the format.
fn scrape(c: &Cluster, addr: SocketAddr) -> Vec<(String, f64)> {
    let (status, headers, body) = exchange(
        c,
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: test\r\nAccept: text/plain\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 200 OK", "{headers}\n{body}");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    assert!(
        headers.contains(&format!("Content-Length: {}", body.len())),
        "{headers}"
    );
    validate(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// The sum of the series starting with `prefix`.
fn sum(samples: &[(String, f64)], prefix: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

fn value(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .unwrap_or_else(|| panic!("no series {series}"))
        .1
}

#[test]
fn a_scrape_a_textfile_and_bad_requests() {
    let _serial = serial();
    let mut c = cluster("met", 2);
    let addr = SocketAddr::new(c.addr(0, false), PORT);
    let file = c.dir().join("textfile").join("pfsyncd.prom");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let listen = addr.to_string();
    let file_arg = file.display().to_string();
    c.start(
        0,
        &[
            "--metrics-listen",
            &listen,
            "--metrics-file",
            &file_arg,
            "--metrics-interval",
            "1",
        ],
    )
    .unwrap();
    c.start(1, &[]).unwrap();

    // The listener stays in the parent: the engine process holds its two channels and
    // no other socket.
    let engine = c.ctl_json(0, "status").unwrap()["engine"]["pid"]
        .as_u64()
        .expect("status names the engine process");
    let sockets = std::fs::read_dir(format!("/proc/{engine}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter(|t| t.to_string_lossy().starts_with("socket:"))
        .count();
    assert_eq!(sockets, 2, "the engine process holds only its channels");

    // (a) A real scrape; values move with churn on both sides.
    let peer = c.addr(1, false).to_string();
    let peer_packets = format!("pfsyncd_peer_packets_received_total{{peer=\"{peer}\"}}");
    let first = scrape(&c, addr);
    assert_eq!(value(&first, "pfsyncd_up"), 1.0);
    assert_eq!(
        value(
            &first,
            &format!(
                "pfsyncd_info{{version=\"1301\",table=\"memory\",creatorid=\"{:08x}\"}}",
                c.host(0).creatorid
            )
        ),
        1.0
    );
    c.ctl(0, "churn 200 100").unwrap();
    c.ctl(1, "churn 200 100").unwrap();
    let moved = wait_until(Duration::from_secs(10), || {
        let now = scrape(&c, addr);
        let rose = |name: &str| {
            value(&now, name)
                > first
                    .iter()
                    .find(|(s, _)| s == name)
                    .map_or(0.0, |(_, v)| *v)
        };
        now.iter().any(|(s, _)| *s == peer_packets)
            && rose("pfsyncd_pfsync_opackets_total")
            && rose("pfsyncd_pfsync_ipackets_total")
            && rose("pfsyncd_churn_changes_total{change=\"insert\"}")
            && rose("pfsyncd_table_imported_total")
            && sum(&now, "pfsyncd_messages_sent_total{")
                > sum(&first, "pfsyncd_messages_sent_total{")
    });
    assert!(
        moved.is_some(),
        "the counters did not move: {:?}",
        scrape(&c, addr)
    );
    c.ctl(0, "churn 0").unwrap();
    c.ctl(1, "churn 0").unwrap();
    let now = scrape(&c, addr);
    assert_eq!(
        value(&now, &format!("pfsyncd_peer_version{{peer=\"{peer}\"}}")),
        5.0
    );
    // What ctl says, the scrape says, in the same format.
    let ctl = c.ctl(0, "metrics").unwrap();
    validate(&ctl).unwrap_or_else(|e| panic!("ctl metrics: {e}\n{ctl}"));
    let names = |s: &[(String, f64)]| -> BTreeSet<String> {
        s.iter()
            .map(|(series, _)| series.split('{').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&validate(&ctl).unwrap()), names(&now));

    // (b) The textfile: never empty or partial while read in a loop, and replaced about
    // every second.
    let mut contents = Vec::new();
    let mut changes = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(4500) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.is_empty(), "empty textfile");
        validate(&text).unwrap_or_else(|e| panic!("partial textfile: {e}\n{text}"));
        if contents.last() != Some(&text) {
            contents.push(text);
            changes.push(start.elapsed());
        }
        c.ctl(0, "insert 1").unwrap();
    }
    // The first read counts as a change: 4.5 s of 1 s writes make 4 or 5 more.
    assert!(
        (4..=7).contains(&changes.len()),
        "textfile replaced at {changes:?}"
    );
    for pair in changes[1..].windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(600) && gap <= Duration::from_millis(1600),
            "textfile replaced at {changes:?}"
        );
    }
    let mode = std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(&file).unwrap());
    assert_eq!(mode & 0o777, 0o644);
    assert_no_temporary(file.parent().unwrap());

    // (c) Bad requests get a 4xx; the daemon lives on.
    let bad: [(&[u8], &str); 5] = [
        (b"POST /metrics HTTP/1.1\r\n\r\n", "405"),
        (b"GET / HTTP/1.1\r\n\r\n", "404"),
        (b"GET /metrics/../x HTTP/1.1\r\n\r\n", "404"),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            "400",
        ),
        (b"GET /metrics HTTP/9.9\r\n\r\n", "505"),
    ];
    for (request, code) in bad {
        let (status, _, _) = exchange(&c, addr, request);
        assert!(
            status.starts_with(&format!("HTTP/1.1 {code} ")),
            "{:?}: {status}",
            String::from_utf8_lossy(request)
        );
    }
    let mut long = b"GET /".to_vec();
    long.extend(std::iter::repeat_n(b'a', 5000));
    long.extend_from_slice(b" HTTP/1.1\r\n\r\n");
    // Refused as soon as the line is too long; the client may still be writing the rest.
    let status = c
        .host(0)
        .ns
        .run(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(&long);
            let mut first = [0u8; 12];
            s.read_exact(&mut first).map(|()| first)
        })
        .unwrap();
    if let Ok(first) = status {
        assert_eq!(&first, b"HTTP/1.1 414");
    }
    // A client that connects and says nothing holds no one up.
    let silent = c
        .host(0)
        .ns
        .run(move || TcpStream::connect(addr).unwrap())
        .unwrap();
    let t0 = Instant::now();
    scrape(&c, addr);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "a silent client blocked a scrape"
    );
    drop(silent);
    // Each refusal is counted; the ones above and the 414 (5 + 1 at least).
    let after = scrape(&c, addr);
    assert!(
        value(
            &after,
            "pfsyncd_metrics_requests_total{outcome=\"refused\"}"
        ) >= 6.0,
        "{after:?}"
    );
    assert!(value(&after, "pfsyncd_metrics_requests_total{outcome=\"served\"}") >= 3.0);
    let stats = c.ctl(0, "stats").unwrap();
    assert!(stats.contains("requests refused (4xx or 5xx)"), "{stats}");
    c.ctl(0, "status").unwrap();
    assert!(c.host(0).pid().is_some());
    assert!(
        c.exited(0).is_none(),
        "the daemon died: {}",
        c.log_tail(0, 5)
    );
}

fn assert_no_temporary(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        assert_eq!(name, "pfsyncd.prom", "left in the textfile directory");
    }
}

#[test]
fn bad_metrics_options_are_usage_errors() {
    let bin = env!("CARGO_BIN_EXE_pfsyncd");
    for args in [
        &["--metrics-listen", "localhost:9478"][..],
        &["--metrics-listen", "127.0.0.1"],
        &["--metrics-listen", "127.0.0.1:0"],
        &["--metrics-file", "/tmp/x.prom", "--metrics-interval", "0"],
        &["--metrics-interval", "5"],
        &["--metrics-file", "/tmp/"],
    ] {
        let out = Command::new(bin)
            .arg("-d")
            .args(args)
            .args(["syncdev", "lo", "up"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains("--metrics-"), "{args:?}: {err}");
    }
}

#[test]
fn silent_clients_at_the_cap_hold_no_one_up_for_long() {
    let _serial = serial();
    let mut c = cluster("mcap", 1);
    let addr = SocketAddr::new(c.addr(0, false), PORT);
    let listen = addr.to_string();
    c.start(0, &["--metrics-listen", &listen]).unwrap();
    // As many silent connections as the daemon serves at once: a scrape waits in the
    // listen queue until the first of them gets its 408 (5 s), then is answered.
    let silent: Vec<TcpStream> = c
        .host(0)
        .ns
        .run(move || {
            (0..pfsyncd::metrics::http::MAX_CONNECTIONS)
                .map(|_| TcpStream::connect(addr).unwrap())
                .collect()
        })
        .unwrap();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let scrape_thread = s.spawn(|| scrape(&c, addr));
        // Meanwhile the parent's loop goes on: the control socket answers at once.
        std::thread::sleep(Duration::from_millis(500));
        let t1 = Instant::now();
        c.ctl(0, "status").unwrap();
        assert!(
            t1.elapsed() < Duration::from_secs(1),
            "the parent was held up"
        );
        let samples = scrape_thread.join().unwrap();
        assert!(value(&samples, "pfsyncd_up") == 1.0);
    });
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(4) && waited < Duration::from_secs(8),
        "the scrape waited {waited:?}"
    );
    for mut s in silent {
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
    }
    assert!(
        c.exited(0).is_none(),
        "the daemon died: {}",
        c.log_tail(0, 5)
    );
}

#[test]
fn a_metrics_file_or_port_that_cannot_be_had_stops_the_start() {
    let _serial = serial();
    let mut c = cluster("mbad", 1);
    let missing = c.dir().join("no-such-dir").join("pfsyncd.prom");
    let missing = missing.display().to_string();
    let e = c.start(0, &["--metrics-file", &missing]).unwrap_err();
    assert!(
        e.to_string().contains("metrics file") && e.to_string().contains("create"),
        "{e}"
    );
    // The port taken by someone else in the host's namespace.
    let addr = SocketAddr::new(c.addr(0, false), PORT);
    let taken = c
        .host(0)
        .ns
        .run(move || std::net::TcpListener::bind(addr).unwrap())
        .unwrap();
    let listen = addr.to_string();
    let e = c.start(0, &["--metrics-listen", &listen]).unwrap_err();
    assert!(e.to_string().contains("--metrics-listen"), "{e}");
    drop(taken);
    c.start(0, &["--metrics-listen", &listen]).unwrap();
    scrape(&c, addr);
}
