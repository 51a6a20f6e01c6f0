//! The control socket's requests (`pfsyncd ctl …`): one line in, a text or JSON answer
//! out. An answer that starts with `error:` makes `pfsyncd ctl` exit with status 1.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::churn::fresh_state;
use super::report::{state_json, state_line};
use super::run::Daemon;
use crate::engine::BulkRequest;
use crate::wire::IfName;

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

/// Answers one request.
pub(super) fn handle(d: &mut Daemon, now: Instant, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let json = words.contains(&"--json");
    let args: Vec<&str> = words
        .iter()
        .skip(1)
        .copied()
        .filter(|w| *w != "--json")
        .collect();
    let number = |at: usize, default: usize| -> Result<usize, String> {
        match args.get(at) {
            None => Ok(default),
            Some(w) => w
                .parse()
                .map_err(|_| format!("error: '{w}' is not a number\n")),
        }
    };
    let result = match words.first().copied().unwrap_or("") {
        "status" => Ok(if json {
            json_line(status_json(d))
        } else {
            status_text(d)
        }),
        "stats" => Ok(if json {
            json_line(stats_json(d, now))
        } else {
            stats_text(d, now)
        }),
        "states" => Ok(states(d, now, json)),
        "get" => get(d, now, &args, json),
        "bulk" => {
            d.engine.request_bulk(now);
            Ok("bulk update requested\n".into())
        }
        "insert" => memory(d, "insert")
            .map(|_| ())
            .and_then(|()| number(0, 1))
            .map(|n| insert(d, now, n)),
        "update" => memory(d, "update")
            .map(|_| ())
            .and_then(|()| number(0, 1))
            .map(|n| update(d, now, n)),
        "delete" => memory(d, "delete")
            .map(|_| ())
            .and_then(|()| number(0, 1))
            .map(|n| delete(d, now, n)),
        "touch" => touch(d, now, &args),
        "clear" => memory(d, "clear").map(|m| {
            let n = m.clear_local(&IfName::EMPTY);
            format!("cleared {n}\n")
        }),
        "churn" => memory(d, "churn")
            .map(|_| ())
            .and_then(|()| number(0, 0))
            .and_then(|rate| {
                let target = number(1, d.table.len())?;
                let rate =
                    u32::try_from(rate).map_err(|_| "error: rate too large\n".to_string())?;
                d.churn.set(now, rate, target);
                Ok(if rate == 0 {
                    "churn stopped\n".to_string()
                } else {
                    format!("churn {rate} changes/s around {target} states\n")
                })
            }),
        "help" => Ok(HELP.to_string()),
        "" => Err("error: empty request; try help\n".to_string()),
        other => Err(format!("error: unknown request '{other}'; try help\n")),
    };
    result.unwrap_or_else(|e| e)
}

/// The memory table, or the error for a request that needs it.
fn memory<'d>(d: &'d mut Daemon, what: &str) -> Result<&'d mut crate::table::MemoryTable, String> {
    d.table.memory().ok_or_else(|| {
        format!("error: {what} makes synthetic states, on the memory table only (this daemon syncs pf)\n")
    })
}

fn json_line(v: Value) -> String {
    v.to_string() + "\n"
}

fn insert(d: &mut Daemon, now: Instant, n: usize) -> String {
    let mut ids = None;
    for i in 0..n {
        let s = fresh_state(&mut d.synth);
        let Some(m) = d.table.memory() else {
            return "error: not the memory table\n".to_string();
        };
        match m.insert_local(now, s) {
            Ok(s) => {
                d.churn.adopt((s.creatorid, s.id));
                let first = ids.map_or(s.id, |(first, _)| first);
                ids = Some((first, s.id));
            }
            Err(e) => return format!("error: after {i} states: {e}\n"),
        }
    }
    match ids {
        Some((first, last)) => format!(
            "inserted {n}: creatorid {:08x} ids {first:016x} to {last:016x}\n",
            d.options.creatorid
        ),
        None => "inserted 0\n".to_string(),
    }
}

/// Traffic on one named state, for measuring how long a change takes to reach a peer:
/// the answer goes out after the change has been handed to the engine (and, when it is
/// due at once, sent).
fn touch(d: &mut Daemon, now: Instant, args: &[&str]) -> Result<String, String> {
    let (creatorid, id) = key_arg(args)?;
    let synth = &mut d.synth;
    let Some(m) = d.table.memory() else {
        return Err("error: touch works on the memory table only\n".to_string());
    };
    match m.update_local(now, creatorid, id, |s| synth.advance(s)) {
        Ok(s) => Ok(format!(
            "touched {creatorid:08x}/{id:016x} seqlo {}\n",
            s.src.seqlo
        )),
        Err(e) => Err(format!("error: {e}\n")),
    }
}

fn key_arg(args: &[&str]) -> Result<(u32, u64), String> {
    let hex = |at: usize, what: &str| -> Result<u64, String> {
        let w = args
            .get(at)
            .ok_or_else(|| format!("error: needs {what} (hex)\n"))?;
        u64::from_str_radix(w.trim_start_matches("0x"), 16)
            .map_err(|_| format!("error: {what} '{w}' is not a hex number\n"))
    };
    let creatorid = u32::try_from(hex(0, "a creator id")?)
        .map_err(|_| "error: a creator id has 8 hex digits\n".to_string())?;
    Ok((creatorid, hex(1, "a state id")?))
}

fn get(d: &mut Daemon, now: Instant, args: &[&str], json: bool) -> Result<String, String> {
    let (creatorid, id) = key_arg(args)?;
    match d.table.state_table().get(now, creatorid, id) {
        Ok(Some(s)) if json => Ok(json_line(state_json(&s))),
        Ok(Some(s)) => Ok(state_line(&s) + "\n"),
        Ok(None) => Err(format!("error: no state {creatorid:08x}/{id:016x}\n")),
        Err(e) => Err(format!("error: {e}\n")),
    }
}

/// `n` distinct random states of the table (fewer if it holds fewer).
fn pick(d: &mut Daemon, now: Instant, n: usize) -> Vec<(u32, u64)> {
    let mut keys = Vec::with_capacity(d.table.len());
    let _ = d
        .table
        .state_table()
        .for_each_state(now, &mut |s| keys.push((s.creatorid, s.id)));
    // A partial Fisher-Yates shuffle: the first n are a uniform sample.
    let n = n.min(keys.len());
    for i in 0..n {
        let j = i + d.synth.below((keys.len() - i) as u64) as usize;
        keys.swap(i, j);
    }
    keys.truncate(n);
    keys
}

fn update(d: &mut Daemon, now: Instant, n: usize) -> String {
    let keys = pick(d, now, n);
    let mut done = 0;
    let synth = &mut d.synth;
    if let Some(m) = d.table.memory() {
        for (c, id) in keys {
            if m.update_local(now, c, id, |s| synth.advance(s)).is_ok() {
                done += 1;
            }
        }
    }
    format!("updated {done}\n")
}

fn delete(d: &mut Daemon, now: Instant, n: usize) -> String {
    let keys = pick(d, now, n);
    let done = match d.table.memory() {
        Some(m) => keys
            .iter()
            .filter(|&&(c, id)| m.delete_local(c, id))
            .count(),
        None => 0,
    };
    format!("deleted {done}\n")
}

fn states(d: &mut Daemon, now: Instant, json: bool) -> String {
    let mut states = match d.table.state_table().states(now) {
        Ok(s) => s,
        Err(e) => return format!("error: {e}\n"),
    };
    states.sort_unstable_by_key(|s| (s.creatorid, s.id));
    if json {
        return json_line(Value::Array(states.iter().map(state_json).collect()));
    }
    let mut out = String::new();
    for s in &states {
        out.push_str(&state_line(s));
        out.push('\n');
    }
    out
}

fn bulk_status(d: &Daemon) -> &'static str {
    match d.engine.bulk_request_state() {
        BulkRequest::Idle => "none",
        BulkRequest::Waiting { .. } => "requested",
        BulkRequest::Receiving { .. } => "receiving",
        BulkRequest::Done => "done",
    }
}

fn status_json(d: &Daemon) -> Value {
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
        "states": d.table.len(),
        "cached": d.engine.state_count(),
        "queued": d.engine.queued(),
        "churn": d.churn.rate(),
        "link": d.link_up(),
    })
}

fn status_text(d: &Daemon) -> String {
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
        d.table.len(),
        d.engine.state_count(),
        c.mtu
    );
    if d.churn.rate() > 0 {
        let _ = writeln!(
            s,
            "\tchurn: {} changes/s around {} states",
            d.churn.rate(),
            d.churn.target()
        );
    }
    s
}

fn stats_json(d: &Daemon, now: Instant) -> Value {
    let st = d.engine.stats();
    let mut pfsync = Map::new();
    for (name, v) in st.pfsyncstats() {
        pfsync.insert(name.into(), v.into());
    }
    let t = &d.table_stats;
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
            "expired": d.table.expired_count(),
        },
        "own_dropped": d.own_dropped(),
        "churn": d.churn.made,
        "peers": peers,
        "untracked_peer_packets": d.peers.untracked,
    })
}

fn stats_text(d: &Daemon, now: Instant) -> String {
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
    let t = &d.table_stats;
    let _ = writeln!(s, "table:");
    line(&mut s, t.imported, "states imported");
    line(&mut s, t.updated, "states updated");
    line(&mut s, t.removed + t.cleared, "states removed");
    line(&mut s, d.table.expired_count(), "states expired");
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
