//! The control socket's requests (`pfsyncd ctl …`), as the engine process takes them:
//! one line in, a text or JSON answer out. An answer that starts with `error:` makes
//! `pfsyncd ctl` exit with status 1.
//!
//! `bulk` and `help` are answered here. `status` and `stats` join the engine's view with
//! a report the parent sends of the table and the link. The requests about the table
//! go to the parent as they came ([`super::table_requests`]).

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::engine_process::EngineProcess;
use super::privsep::ParentReport;
use super::table_requests::TABLE_REQUESTS;
use crate::engine::BulkRequest;

/// What `pfsyncd ctl help` prints.
pub const HELP: &str = "\
status [--json]          the sync interface, like ifconfig pfsync0
stats [--json]           counters, like netstat -s -p pfsync, and the peers heard
states [--json]          the state table, like pfctl -ss -v
get CREATORID ID [--json] one state (hex numbers, as states prints them)
bulk                     ask the peers for a bulk update now
insert [N]               (memory table) N new states of our own
update [N]               (memory table) traffic on N random states
touch CREATORID ID       (memory table) traffic on one state; says its new src seqlo
delete [N]               (memory table) remove N random states
clear                    (memory table) remove every state, as pfctl -F states
churn RATE [STATES]      (memory table) RATE changes/s around STATES states; churn 0 stops
";

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// Answered at once.
    Answer(String),
    /// To the parent as it is; its answer is the answer.
    Table,
    /// Needs the parent's report: `status` (`stats` false) or `stats`.
    Report {
        /// `stats` rather than `status`.
        stats: bool,
        /// `--json`.
        json: bool,
    },
}

/// Decides where `line` goes; `bulk` is carried out here.
pub(super) fn route(d: &mut EngineProcess, now: Instant, line: &str) -> Route {
    let words: Vec<&str> = line.split_whitespace().collect();
    let json = words.contains(&"--json");
    match words.first().copied().unwrap_or("") {
        "status" => Route::Report { stats: false, json },
        "stats" => Route::Report { stats: true, json },
        "bulk" => {
            d.engine.request_bulk(now);
            Route::Answer("bulk update requested\n".into())
        }
        "help" => Route::Answer(HELP.to_string()),
        "" => Route::Answer("error: empty request; try help\n".to_string()),
        w if TABLE_REQUESTS.contains(&w) => Route::Table,
        other => Route::Answer(format!("error: unknown request '{other}'; try help\n")),
    }
}

/// The answer to `status` or `stats` with the parent's report.
pub(super) fn answer_report(
    d: &EngineProcess,
    report: &ParentReport,
    now: Instant,
    stats: bool,
    json: bool,
) -> String {
    match (stats, json) {
        (false, true) => json_line(status_json(d, report)),
        (false, false) => status_text(d, report),
        (true, true) => json_line(stats_json(d, report, now)),
        (true, false) => stats_text(d, report, now),
    }
}

fn json_line(v: Value) -> String {
    v.to_string() + "\n"
}

fn bulk_status(d: &EngineProcess) -> &'static str {
    match d.engine.bulk_request_state() {
        BulkRequest::Idle => "none",
        BulkRequest::Waiting { .. } => "requested",
        BulkRequest::Receiving { .. } => "receiving",
        BulkRequest::Done => "done",
    }
}

fn status_json(d: &EngineProcess, r: &ParentReport) -> Value {
    let c = &d.config;
    json!({
        "flags": if c.up { "UP" } else { "DOWN" },
        "syncdev": c.syncdev.map(|n| n.to_string()),
        "syncpeers": c.syncpeers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "maxupd": c.maxupd,
        "defer": false,
        "version": c.dialect.name(),
        "mtu": c.mtu,
        "syncok": d.engine.syncok(),
        "bulk": bulk_status(d),
        "bulk_sending": d.engine.bulk_sending(),
        "demoted": d.engine.demoted(),
        "creatorid": format!("{:08x}", d.options.creatorid),
        "states": r.states,
        "cached": d.engine.state_count(),
        "queued": d.engine.queued(),
        "churn": r.churn_rate,
        "link": d.link_open,
        "table": if r.memory_table { "memory" } else { "pf" },
        "engine": {
            "pid": std::process::id(),
            "user": d.sandbox.user,
            "chroot": d.sandbox.dir.display().to_string(),
        },
    })
}

fn status_text(d: &EngineProcess, r: &ParentReport) -> String {
    let c = &d.config;
    let mut s = String::new();
    let _ = writeln!(s, "pfsync0: flags={}", if c.up { "UP" } else { "DOWN" });
    let _ = write!(s, "\tpfsync: syncdev: ");
    match c.syncdev {
        Some(dev) => {
            let _ = write!(s, "{dev}");
        }
        None => s.push_str("(none)"),
    }
    for p in &c.syncpeers {
        let _ = write!(s, " syncpeer: {p}");
    }
    let _ = writeln!(
        s,
        " maxupd: {} defer: off version: {}",
        c.maxupd,
        c.dialect.name()
    );
    let _ = writeln!(
        s,
        "\tsyncok: {} bulk: {}{}",
        u8::from(d.engine.syncok()),
        bulk_status(d),
        if d.engine.bulk_sending() {
            " (sending one)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "\tcreatorid: {:08x} states: {} cached: {} mtu: {}",
        d.options.creatorid,
        r.states,
        d.engine.state_count(),
        c.mtu
    );
    let _ = writeln!(
        s,
        "\ttable: {} engine: pid {} user {} chroot {}",
        if r.memory_table { "memory" } else { "pf" },
        std::process::id(),
        d.sandbox.user,
        d.sandbox.dir.display()
    );
    if r.churn_rate > 0 {
        let _ = writeln!(
            s,
            "\tchurn: {} changes/s around {} states",
            r.churn_rate, r.churn_target
        );
    }
    s
}

fn stats_json(d: &EngineProcess, r: &ParentReport, now: Instant) -> Value {
    let st = d.engine.stats();
    let mut pfsync = Map::new();
    for (name, v) in st.pfsyncstats() {
        pfsync.insert(name.into(), v.into());
    }
    let t = &r.table;
    let peers: Vec<Value> = d
        .peers
        .iter()
        .map(|(addr, p)| {
            json!({
                "addr": addr.to_string(),
                "last_heard_ms": now.saturating_duration_since(p.last_heard).as_millis() as u64,
                "packets": p.packets,
                "bytes": p.bytes,
                "version": p.version,
            })
        })
        .collect();
    json!({
        "pfsync": pfsync,
        "iacts": st.iacts.to_vec(),
        "oacts": st.oacts.to_vec(),
        "bulk": {
            "requests_sent": st.bulk_requests_sent,
            "requests_received": st.bulk_requests_received,
            "sends_completed": st.bulk_sends_completed,
            "states_sent": st.bulk_states_sent,
            "completed": st.bulk_completed,
            "given_up": st.bulk_given_up,
            "last_duration_ms": st.bulk_last_duration_ms,
        },
        "engine": {
            "stale": st.stale,
            "ins_duplicate": st.ins_duplicate,
            "tombstoned": st.tombstoned,
            "req_overflow": st.req_overflow,
            "cache_full": st.cache_full,
            "lost_fields": st.lost_fields,
        },
        "table": {
            "imported": t.imported, "updated": t.updated, "removed": t.removed,
            "remove_missing": t.remove_missing, "cleared": t.cleared, "exists": t.exists,
            "invalid": t.invalid, "notfound": t.notfound, "full": t.full,
            "unsupported": t.unsupported, "io": t.io,
            "expired": r.expired,
            "superseded": r.superseded,
        },
        "own_dropped": r.own_dropped,
        "churn": r.churn_made,
        "peers": peers,
        "untracked_peer_packets": d.peers.untracked,
    })
}

fn stats_text(d: &EngineProcess, r: &ParentReport, now: Instant) -> String {
    let st = d.engine.stats();
    let mut s = String::from("pfsync:\n");
    let line = |s: &mut String, n: u64, what: &str| {
        let _ = writeln!(s, "\t{n} {what}");
    };
    line(&mut s, st.ipackets, "packets received (IPv4)");
    line(&mut s, st.ipackets6, "packets received (IPv6)");
    line(&mut s, st.badif, "packets discarded for bad interface");
    line(&mut s, st.badttl, "packets discarded for bad ttl");
    line(&mut s, st.hdrops, "packets shorter than header");
    line(&mut s, st.badver, "packets discarded for bad version");
    line(&mut s, st.badauth, "packets discarded for bad HMAC");
    line(&mut s, st.badact, "packets discarded for bad action");
    line(&mut s, st.badlen, "packets discarded for short packet");
    line(&mut s, st.badval, "states discarded for bad values");
    line(&mut s, st.stale, "stale states");
    line(&mut s, st.badstate, "failed state lookup/inserts");
    line(&mut s, st.opackets, "packets sent (IPv4)");
    line(&mut s, st.opackets6, "packets sent (IPv6)");
    line(&mut s, st.onomem, "send failed due to mbuf memory error");
    line(&mut s, st.oerrors, "send error");
    let _ = writeln!(s, "bulk:");
    line(&mut s, st.bulk_requests_sent, "bulk requests sent");
    line(&mut s, st.bulk_requests_received, "bulk requests received");
    line(&mut s, st.bulk_states_sent, "states sent in bulk updates");
    line(
        &mut s,
        st.bulk_completed,
        "bulk updates received to completion",
    );
    line(&mut s, st.bulk_given_up, "bulk updates given up");
    let t = &r.table;
    let _ = writeln!(s, "table:");
    line(&mut s, t.imported, "states imported");
    line(&mut s, t.updated, "states updated");
    line(&mut s, t.removed + t.cleared, "states removed");
    line(&mut s, r.expired, "states expired");
    line(
        &mut s,
        r.superseded,
        "peer updates skipped for a newer local change",
    );
    line(
        &mut s,
        t.exists + t.invalid + t.notfound + t.full + t.unsupported + t.io,
        "operations failed",
    );
    let _ = writeln!(s, "peers:");
    for (addr, p) in d.peers.iter() {
        let _ = writeln!(
            s,
            "\t{addr}: last heard {:.1} s ago, {} packets, {} bytes, version {}",
            now.saturating_duration_since(p.last_heard).as_secs_f64(),
            p.packets,
            p.bytes,
            p.version
        );
    }
    s
}
