//! The control requests the engine process answers: `status`, `stats` and `metrics`,
//! which join the engine's view with the report the parent sends along of the table and
//! the link, and `bulk`.

use std::fmt::Write as _;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::peers::Peers;
use super::secure::SecureSide;
use super::sessions::SessionSide;
use crate::daemon::config::SyncConfig;
use crate::daemon::options::Options;
use crate::daemon::privsep::{ParentReport, Sandbox};
use crate::daemon::requests::json_line;
use crate::engine::{BulkRequest, Engine};
use crate::metrics::{render, BulkState, PeerSample, Snapshot};

/// The parts of the engine process a request reads (and `bulk` drives), borrowed for
/// one answer.
pub(super) struct EngineParts<'e> {
    pub(super) engine: &'e mut Engine,
    pub(super) options: &'e Options,
    pub(super) config: &'e SyncConfig,
    pub(super) peers: &'e Peers,
    /// The secure link, when configured.
    pub(super) secure: Option<&'e SecureSide>,
    /// The pfsyncd sessions, with the extensions on.
    pub(super) sessions: Option<&'e SessionSide>,
    pub(super) sandbox: &'e Sandbox,
    pub(super) link_open: bool,
    /// Table operations of the last bulk update the parent had not yet applied when it
    /// passed the request on.
    pub(super) bulk_ops_in_flight: u64,
    /// What the engine process's hops of the sync path cost.
    pub(super) latency: &'e crate::daemon::latency::EngineLatency,
}

/// Answers `line`, a request [`crate::daemon::requests::route`] sent to the engine.
pub(super) fn answer(
    d: &mut EngineParts<'_>,
    now: Instant,
    line: &str,
    report: &ParentReport,
) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let json = words.contains(&"--json");
    match words.first().copied().unwrap_or("") {
        "status" if json => json_line(status_json(d, report)),
        "status" => status_text(d, report),
        "stats" if json => json_line(stats_json(d, report, now)),
        "stats" => stats_text(d, report, now),
        "metrics" => metrics_text(d, report, now),
        "bulk" => {
            d.engine.request_bulk(now);
            crate::log_info!("bulk update requested from the peers (ctl bulk)");
            "bulk update requested\n".into()
        }
        other => format!("error: '{other}' is not a request for the engine\n"),
    }
}

/// The END of the last bulk update has come, but the parent has not yet put every state
/// it brought into the table (issue 14: "done" with 110 000 of 1 000 000 still to import).
fn importing(d: &EngineParts<'_>) -> bool {
    matches!(d.engine.bulk_request_state(), BulkRequest::Done) && d.bulk_ops_in_flight > 0
}

/// For the metrics, which have no word for importing: still receiving, as far as the
/// table is concerned.
fn bulk_state(d: &EngineParts<'_>) -> BulkState {
    match d.engine.bulk_request_state() {
        BulkRequest::Idle => BulkState::None,
        BulkRequest::Waiting { .. } => BulkState::Requested,
        BulkRequest::Receiving { .. } => BulkState::Receiving,
        BulkRequest::Done if importing(d) => BulkState::Receiving,
        BulkRequest::Done => BulkState::Done,
    }
}

fn bulk_status(d: &EngineParts<'_>) -> &'static str {
    if importing(d) {
        "importing"
    } else {
        bulk_state(d).word()
    }
}

/// syncok as the table sees it: not before the bulk update's states are in it.
fn syncok(d: &EngineParts<'_>) -> bool {
    d.engine.syncok() && !importing(d)
}

/// The metrics in the Prometheus text format: what `stats` shows, and the status gauges.
fn metrics_text(d: &EngineParts<'_>, r: &ParentReport, now: Instant) -> String {
    let peers = d
        .peers
        .iter()
        .map(|(addr, p)| PeerSample {
            addr: *addr,
            last_heard_ago: now.saturating_duration_since(p.last_heard),
            packets: p.packets,
            bytes: p.bytes,
            version: p.version,
        })
        .collect();
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    render(&Snapshot {
        stats: d.engine.stats(),
        report: r,
        peers,
        untracked_peer_packets: d.peers.untracked,
        sessions: d.sessions.map(SessionSide::samples).unwrap_or_default(),
        unix_now,
        up: d.config.up,
        link_open: d.link_open,
        syncok: syncok(d),
        demoted: d.engine.demoted(),
        bulk: bulk_state(d),
        bulk_sending: d.engine.bulk_sending(),
        bulk_send_states: d.engine.bulk_send_progress().unwrap_or(0),
        cached: d.engine.state_count() as u64,
        queued: d.engine.queued().map(|n| n as u64),
        version: d.config.dialect.name(),
        creatorid: d.options.creatorid,
    })
}

fn status_json(d: &EngineParts<'_>, r: &ParentReport) -> Value {
    let c = &d.config;
    json!({
        "flags": if c.up { "UP" } else { "DOWN" },
        "syncdev": c.syncdev.map(|n| n.to_string()),
        "syncpeers": c.syncpeers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "maxupd": c.maxupd,
        "defer": false,
        "version": c.dialect.name(),
        "mtu": c.mtu,
        "sync_filter": c.filter_words(),
        "syncdelay": c.sync_delay_secs,
        "immediate": c.immediate.name(),
        "immediate_on": d.engine.config().immediate,
        "anysource": c.anysource,
        "ifmap": c.ifmap.mappings().iter().map(|m| json!({
            "peer_name": m.peer_name.to_string(),
            "local_name": m.local_name.to_string(),
            "peer": m.peer.map(|p| p.to_string()),
        })).collect::<Vec<_>>(),
        "syncok": syncok(d),
        "bulk": bulk_status(d),
        "importing": if importing(d) { d.bulk_ops_in_flight } else { 0 },
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

fn status_text(d: &EngineParts<'_>, r: &ParentReport) -> String {
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
        "\timmediate: {} ({})",
        if d.engine.config().immediate {
            "on, changes leave at the end of each turn"
        } else {
            "off, changes wait up to 1 s"
        },
        c.immediate.name()
    );
    if !c.syncpeers.is_empty() {
        let _ = writeln!(
            s,
            "\tsources: {}",
            if c.anysource {
                "any (anysource)"
            } else {
                "syncpeers only"
            }
        );
    }
    for m in c.ifmap.mappings() {
        let _ = write!(s, "\tifmap: peer's {} is our {}", m.peer_name, m.local_name);
        match m.peer {
            Some(p) => {
                let _ = writeln!(s, " (from {p})");
            }
            None => s.push('\n'),
        }
    }
    let _ = writeln!(
        s,
        "\tsyncok: {} bulk: {}{}{}",
        u8::from(syncok(d)),
        bulk_status(d),
        if importing(d) {
            format!(" ({} table operations in flight)", d.bulk_ops_in_flight)
        } else {
            String::new()
        },
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

fn stats_json(d: &EngineParts<'_>, r: &ParentReport, now: Instant) -> Value {
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
            "requests_held": st.bulk_requests_held,
            "sends_completed": st.bulk_sends_completed,
            "states_sent": st.bulk_states_sent,
            "completed": st.bulk_completed,
            "given_up": st.bulk_given_up,
            "last_duration_ms": st.bulk_last_duration_ms,
            "starts_resent": st.bulk_starts_resent,
            "compact_batches_received": st.compact_batches_received,
            "compact_batches_refused": st.compact_batches_refused,
        },
        "engine": {
            "stale": st.stale,
            "ins_duplicate": st.ins_duplicate,
            "tombstoned": st.tombstoned,
            "req_overflow": st.req_overflow,
            "cache_full": st.cache_full,
            "lost_fields": st.lost_fields,
            "rule_unbound": st.rule_unbound,
            "badsrc": st.badsrc,
            "ifname_mapped": st.ifname_mapped,
        },
        "sync_filter": {
            "filtered_out": st.filtered_out,
            "filtered_in": st.filtered_in,
        },
        "sync_delay": {
            "delayed": st.delayed,
            "delayed_announced": st.delayed_announced,
            "delayed_then_deleted": st.delayed_then_deleted,
        },
        "table": {
            "imported": t.imported, "updated": t.updated, "removed": t.removed,
            "remove_missing": t.remove_missing, "cleared": t.cleared, "exists": t.exists,
            "invalid": t.invalid, "notfound": t.notfound, "full": t.full,
            "unsupported": t.unsupported, "io": t.io,
            "expired": r.expired,
            "superseded": r.superseded,
        },
        "edge": r.edge.named().into_iter().map(|(k, v)| (k.to_string(), Value::from(v))).collect::<Map<String, Value>>(),
        "own_dropped": r.own_dropped,
        "metrics_http": {
            "served": r.metrics_http.served,
            "refused": r.metrics_http.refused,
            "dropped": r.metrics_http.dropped,
        },
        "churn": r.churn_made,
        "peers": peers,
        "untracked_peer_packets": d.peers.untracked,
        "secure": d.secure.map(|side| side.stats_json(now)),
        "latency": crate::daemon::latency::json(&r.latency, d.latency),
        "extensions": d.sessions.is_some(),
        "sessions": d.sessions.map_or_else(|| json!({}), |side| side.peers_json(now)),
        "session_counters": d.sessions.map(SessionSide::counters_json),
        "session_engine": {
            "forgotten": st.digest_forgotten,
            "announced": st.digest_announced,
            "unlisted": st.digest_unlisted,
            "resync_requests": st.session_resync_requests,
        },
    })
}

fn stats_text(d: &EngineParts<'_>, r: &ParentReport, now: Instant) -> String {
    let st = d.engine.stats();
    let mut s = String::from("pfsync:\n");
    let line = |s: &mut String, n: u64, what: &str| {
        let _ = writeln!(s, "\t{n} {what}");
    };
    line(&mut s, st.ipackets, "packets received (IPv4)");
    line(&mut s, st.ipackets6, "packets received (IPv6)");
    line(&mut s, st.badif, "packets discarded for bad interface");
    line(&mut s, st.badttl, "packets discarded for bad ttl");
    line(
        &mut s,
        st.badsrc,
        "packets discarded for a source other than the syncpeers (badsrc)",
    );
    line(&mut s, st.hdrops, "packets shorter than header");
    line(&mut s, st.badver, "packets discarded for bad version");
    line(&mut s, st.badauth, "packets discarded for bad HMAC");
    line(&mut s, st.badact, "packets discarded for bad action");
    line(&mut s, st.badlen, "packets discarded for short packet");
    line(&mut s, st.badval, "states discarded for bad values");
    line(&mut s, st.stale, "stale states");
    line(&mut s, st.badstate, "failed state lookup/inserts");
    line(
        &mut s,
        st.rule_unbound,
        "states taken without the rule numbers of another ruleset",
    );
    line(
        &mut s,
        st.ifname_mapped,
        "peer states and clears taken under a mapped interface name",
    );
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
    line(
        &mut s,
        st.bulk_starts_resent,
        "bulk update starts sent again for a late request",
    );
    let _ = writeln!(s, "sync filter and delay:");
    line(
        &mut s,
        st.filtered_out,
        "local state changes not sent (sync filter)",
    );
    line(
        &mut s,
        st.filtered_in,
        "peer state records not imported (sync filter)",
    );
    line(&mut s, st.delayed, "new states delayed (syncdelay)");
    line(
        &mut s,
        st.delayed_announced,
        "delayed states announced when due",
    );
    line(
        &mut s,
        st.delayed_then_deleted,
        "delayed states ended before they were due (never sent)",
    );
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
    let _ = writeln!(s, "kernel edge:");
    for (name, n) in r.edge.named() {
        let _ = writeln!(s, "\t{n} {name}");
    }
    let h = &r.metrics_http;
    if h.served + h.refused + h.dropped > 0 {
        let _ = writeln!(s, "metrics endpoint:");
        line(&mut s, h.served, "requests served");
        line(&mut s, h.refused, "requests refused (4xx or 5xx)");
        line(&mut s, h.dropped, "connections dropped");
    }
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
    if let Some(side) = d.secure {
        s.push_str(&side.stats_text(now));
    }
    if let Some(side) = d.sessions {
        s.push_str(&side.stats_text(now));
        let _ = writeln!(
            s,
            "\t{} peer states forgotten (digest), {} own states announced again (digest), {} bulk requests for lost DATA",
            st.digest_forgotten, st.digest_announced, st.session_resync_requests
        );
    }
    s
}
