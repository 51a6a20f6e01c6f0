//! The control requests about the table, answered by the parent, which holds it:
//! `states`, `get`, and on the memory table the synthetic traffic (`insert`, `update`,
//! `touch`, `delete`, `clear`, `churn`); which requests those are is
//! [`crate::daemon::requests::TABLE_REQUESTS`].

use std::time::Instant;

use serde_json::Value;

use super::churn::{fresh_state, Churn};
use super::table::Table;
use crate::daemon::report::{state_json, state_line};
use crate::daemon::requests::json_line;
use crate::table::synth::Synth;
use crate::wire::IfName;

/// The parts of the parent a request about the table uses, borrowed for one answer.
pub(super) struct TableParts<'p> {
    pub(super) table: &'p mut Table,
    pub(super) churn: &'p mut Churn,
    pub(super) synth: &'p mut Synth,
    /// Ours, for the answer to `insert`.
    pub(super) creatorid: u32,
    /// When the engine last wrote recently synced states, for `get --json`.
    pub(super) applied: &'p super::applied::RecentlyApplied,
}

/// Answers one request about the table.
pub(super) fn answer(p: &mut TableParts<'_>, now: Instant, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let json = words.contains(&"--json");
    let sums = words.contains(&"--sums");
    let args: Vec<&str> = words
        .iter()
        .skip(1)
        .copied()
        .filter(|w| *w != "--json" && *w != "--sums")
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
        "states" if sums => Ok(state_sums(p, now)),
        "states" => Ok(states(p, now, json)),
        "get" => get(p, now, &args, json),
        "insert" => memory(p, "insert")
            .map(|_| ())
            .and_then(|()| number(0, 1))
            .map(|n| insert(p, now, n)),
        "update" => memory(p, "update")
            .map(|_| ())
            .and_then(|()| number(0, 1))
            .map(|n| update(p, now, n)),
        "delete" => memory(p, "delete")
            .map(|_| ())
            .and_then(|()| number(0, 1))
            .map(|n| delete(p, n)),
        "touch" => touch(p, now, &args),
        "clear" => memory(p, "clear").map(|m| {
            let n = m.clear_local(&IfName::EMPTY);
            format!("cleared {n}\n")
        }),
        "churn" => memory(p, "churn")
            .map(|_| ())
            .and_then(|()| number(0, 0))
            .and_then(|rate| {
                let target = number(1, p.table.len())?;
                let rate =
                    u32::try_from(rate).map_err(|_| "error: rate too large\n".to_string())?;
                p.churn.set(now, rate, target);
                Ok(if rate == 0 {
                    "churn stopped\n".to_string()
                } else {
                    format!("churn {rate} changes/s around {target} states\n")
                })
            }),
        other => Err(format!("error: '{other}' is not a table request\n")),
    };
    result.unwrap_or_else(|e| e)
}

/// The memory table, or the error for a request that needs it.
fn memory<'a>(
    p: &'a mut TableParts<'_>,
    what: &str,
) -> Result<&'a mut crate::table::MemoryTable, String> {
    p.table.memory().ok_or_else(|| {
        format!("error: {what} makes synthetic states, on the memory table only (this daemon syncs pf)\n")
    })
}

fn insert(p: &mut TableParts<'_>, now: Instant, n: usize) -> String {
    // When the first state went in, on the clock every daemon of the machine reads: the
    // start of the sync path a peer's `applied_monotonic_ns` ends (benches/latency.rs).
    let created = crate::daemon::latency::monotonic_ns(Instant::now());
    let mut ids = None;
    for i in 0..n {
        let s = fresh_state(p.synth);
        let Some(m) = p.table.memory() else {
            return "error: not the memory table\n".to_string();
        };
        match m.insert_local(now, s) {
            Ok(s) => {
                p.churn.adopt((s.creatorid, s.id));
                let first = ids.map_or(s.id, |(first, _)| first);
                ids = Some((first, s.id));
            }
            Err(e) => return format!("error: after {i} states: {e}\n"),
        }
    }
    match ids {
        Some((first, last)) => format!(
            "inserted {n}: creatorid {:08x} ids {first:016x} to {last:016x}{}\n",
            p.creatorid,
            created.map_or_else(String::new, |ns| format!(" created_monotonic_ns {ns}"))
        ),
        None => "inserted 0\n".to_string(),
    }
}

/// Traffic on one named state, for measuring how long a change takes to reach a peer:
/// the answer goes out once the change is on its way to the engine process.
fn touch(p: &mut TableParts<'_>, now: Instant, args: &[&str]) -> Result<String, String> {
    let (creatorid, id) = key_arg(args)?;
    let synth = &mut p.synth;
    let Some(m) = p.table.memory() else {
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

fn get(p: &mut TableParts<'_>, now: Instant, args: &[&str], json: bool) -> Result<String, String> {
    let (creatorid, id) = key_arg(args)?;
    match p.table.state_table().get(now, creatorid, id) {
        Ok(Some(s)) if json => {
            let mut v = state_json(&s);
            if let Some(at) = p.applied.when((creatorid, id)) {
                // How long ago a peer's copy was written in (absent: not recently).
                v["applied_us_ago"] = (now.saturating_duration_since(at).as_micros() as u64).into();
                // The same on CLOCK_MONOTONIC: against the sender's `created_monotonic_ns`
                // (`insert`), the sync path between the two tables.
                if let Some(ns) = crate::daemon::latency::monotonic_ns(at) {
                    v["applied_monotonic_ns"] = ns.into();
                }
            }
            Ok(json_line(v))
        }
        Ok(Some(s)) => Ok(state_line(&s) + "\n"),
        Ok(None) => Err(format!("error: no state {creatorid:08x}/{id:016x}\n")),
        Err(e) => Err(format!("error: {e}\n")),
    }
}

/// `n` distinct random states of the memory table (fewer if it holds fewer), at the
/// cost of `n` states, not of the table (issue 14: a listing per request took 0.6 s of
/// CPU a second at 50 `delete 10`/s and delayed the sync path).
fn pick(p: &mut TableParts<'_>, n: usize) -> Vec<(u32, u64)> {
    let synth = &mut p.synth;
    match p.table.memory() {
        Some(m) => m.sample(n, |b| synth.below(b)),
        None => Vec::new(),
    }
}

fn update(p: &mut TableParts<'_>, now: Instant, n: usize) -> String {
    let keys = pick(p, n);
    let mut done = 0;
    let synth = &mut p.synth;
    if let Some(m) = p.table.memory() {
        for (c, id) in keys {
            if m.update_local(now, c, id, |s| synth.advance(s)).is_ok() {
                done += 1;
            }
        }
    }
    format!("updated {done}\n")
}

fn delete(p: &mut TableParts<'_>, n: usize) -> String {
    let keys = pick(p, n);
    let done = match p.table.memory() {
        Some(m) => keys
            .iter()
            .filter(|&&(c, id)| m.delete_local(c, id))
            .count(),
        None => 0,
    };
    format!("deleted {done}\n")
}

fn states(p: &mut TableParts<'_>, now: Instant, json: bool) -> String {
    let mut states = match p.table.state_table().states(now) {
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

/// One line per state: creator id, id, seconds to expiry, and a checksum of what
/// pfsync synchronises of it (what `states --json` shows under `sync`). Two nodes
/// running the same build agree on a state's checksum when they agree on the state;
/// comparing tables this way costs a fraction of the JSON listing (tests/daemon_loss.rs
/// compares 100 000 states several times within the 2 s it allows).
fn state_sums(p: &mut TableParts<'_>, now: Instant) -> String {
    use std::fmt::Write as _;
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut states = match p.table.state_table().states(now) {
        Ok(s) => s,
        Err(e) => return format!("error: {e}\n"),
    };
    states.sort_unstable_by_key(|s| (s.creatorid, s.id));
    let mut out = String::with_capacity(states.len() * 44);
    for s in &states {
        // DefaultHasher::new() has fixed keys: the same on every node of one build.
        let mut h = DefaultHasher::new();
        (s.ifname.to_string(), s.direction.number(), s.wire, s.stack).hash(&mut h);
        (s.src, s.dst, s.timeout, s.state_flags, s.rule).hash(&mut h);
        (format!("{:?}", s.rt), s.rt_addr, s.rtableid).hash(&mut h);
        let _ = writeln!(
            out,
            "{:08x} {:016x} {} {:016x}",
            s.creatorid,
            s.id,
            s.expire_secs,
            h.finish()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{MemoryConfig, MemoryTable};

    const STATES: usize = 100_000;

    fn parts_answer(table: &mut Table, churn: &mut Churn, synth: &mut Synth, line: &str) -> String {
        let applied =
            super::super::applied::RecentlyApplied::new(crate::engine::KeyedState::new([1, 2]));
        let mut p = TableParts {
            table,
            churn,
            synth,
            creatorid: 7,
            applied: &applied,
        };
        answer(&mut p, Instant::now(), line)
    }

    fn visited(table: &mut Table) -> u64 {
        table.memory().unwrap().slots_visited()
    }

    /// Issue 14: `delete N` listed the whole table for each request. No request that
    /// does not return the table may look at more slots than its answer holds.
    #[test]
    fn delete_update_get_churn_cost_what_they_answer_not_the_table() {
        let mut table = Table::Memory(Box::new(MemoryTable::new(MemoryConfig::new(7))));
        let mut churn = Churn::default();
        let mut synth = Synth::new(3, 7);
        let inserted = parts_answer(&mut table, &mut churn, &mut synth, "insert 100000");
        assert!(inserted.starts_with("inserted 100000"), "{inserted}");
        for (line, most) in [
            ("delete 10", 10),
            ("update 10", 10),
            ("delete 1", 1),
            ("update 1000", 1000),
            ("churn 0", 0),
            ("get 7 1", 0),
            ("touch 7 2", 0),
        ] {
            let before = visited(&mut table);
            let a = parts_answer(&mut table, &mut churn, &mut synth, line);
            assert!(!a.starts_with("error"), "{line}: {a}");
            let cost = visited(&mut table) - before;
            assert!(
                cost <= most,
                "{line} looked at {cost} slots of a {STATES}-state table (at most {most})"
            );
        }
        assert_eq!(table.len(), STATES - 11);
        // The samples are real: deleting more than the table holds empties it.
        let a = parts_answer(&mut table, &mut churn, &mut synth, "delete 200000");
        assert_eq!(a, format!("deleted {}\n", STATES - 11));
        assert_eq!(table.len(), 0);
    }

    /// `states --sums` changes with what pfsync synchronises (a `touch` moves the
    /// source's sequence numbers) and only for that state.
    #[test]
    fn state_sums_follow_the_synced_fields() {
        let mut table = Table::Memory(Box::new(MemoryTable::new(MemoryConfig::new(7))));
        let mut churn = Churn::default();
        let mut synth = Synth::new(3, 7);
        parts_answer(&mut table, &mut churn, &mut synth, "insert 3");
        let before = parts_answer(&mut table, &mut churn, &mut synth, "states --sums");
        assert_eq!(before.lines().count(), 3, "{before}");
        let again = parts_answer(&mut table, &mut churn, &mut synth, "states --sums");
        assert_eq!(before, again);
        let touched = parts_answer(&mut table, &mut churn, &mut synth, "touch 7 2");
        assert!(!touched.starts_with("error"), "{touched}");
        let after = parts_answer(&mut table, &mut churn, &mut synth, "states --sums");
        let sum = |text: &str, line: usize| {
            let l = text.lines().nth(line).unwrap().to_string();
            l.rsplit(' ').next().unwrap().to_string()
        };
        assert_eq!(sum(&before, 0), sum(&after, 0));
        assert_ne!(sum(&before, 1), sum(&after, 1), "{before}{after}");
        assert_eq!(sum(&before, 2), sum(&after, 2));
    }
}
