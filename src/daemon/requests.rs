//! The control socket's requests (`pfsyncd ctl …`): one line in, a text or JSON answer
//! out. An answer that starts with `error:` makes `pfsyncd ctl` exit with status 1.
//!
//! The parent holds the control socket (root only, mode 0600) and answers what is about
//! the table itself (`parent/requests.rs`); what needs the engine (`status`,
//! `stats`, `bulk`) goes to the engine process with the parent's report, and its
//! answer comes back (`engine/requests.rs`). Which request goes where is decided
//! here, below both, so that neither side needs the other's list.

use serde_json::Value;

/// What `pfsyncd ctl help` prints.
pub const HELP: &str = "\
status [--json]          the sync interface, like ifconfig pfsync0
stats [--json]           counters, like netstat -s -p pfsync, and the peers heard
metrics                  the same in the Prometheus text format
states [--json]          the state table, like pfctl -ss -v
states --sums            per state: creatorid id expiry checksum (comparing tables)
get CREATORID ID [--json] one state (hex numbers, as states prints them)
bulk                     ask the peers for a bulk update now
insert [N]               (memory table) N new states of our own
update [N]               (memory table) traffic on N random states
touch CREATORID ID       (memory table) traffic on one state; says its new src seqlo
delete [N]               (memory table) remove N random states
clear                    (memory table) remove every state, as pfctl -F states
churn RATE [STATES]      (memory table) RATE changes/s around STATES states; churn 0 stops
";

/// The requests the engine process answers.
pub const ENGINE_REQUESTS: &[&str] = &["status", "stats", "metrics", "bulk"];

/// The requests the parent answers from the table.
pub const TABLE_REQUESTS: &[&str] = &[
    "states", "get", "insert", "update", "touch", "delete", "clear", "churn",
];

/// Who answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::daemon) enum Route {
    /// The answer, at once (help, errors).
    Answer(String),
    /// The parent, from the table.
    Table,
    /// The engine process.
    Engine,
}

/// Decides who answers `line`.
pub(in crate::daemon) fn route(line: &str) -> Route {
    match line.split_whitespace().next().unwrap_or("") {
        "help" => Route::Answer(HELP.to_string()),
        "" => Route::Answer("error: empty request; try help\n".to_string()),
        w if ENGINE_REQUESTS.contains(&w) => Route::Engine,
        w if TABLE_REQUESTS.contains(&w) => Route::Table,
        other => Route::Answer(format!("error: unknown request '{other}'; try help\n")),
    }
}

/// A JSON answer: one line.
pub(in crate::daemon) fn json_line(v: Value) -> String {
    v.to_string() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_has_one_answerer() {
        assert_eq!(route("status --json"), Route::Engine);
        assert_eq!(route("bulk"), Route::Engine);
        assert_eq!(route("metrics"), Route::Engine);
        assert_eq!(route("get 1 2"), Route::Table);
        assert_eq!(route("churn 10"), Route::Table);
        assert!(matches!(route("frob"), Route::Answer(a) if a.starts_with("error: unknown")));
        assert!(matches!(route("  "), Route::Answer(a) if a.starts_with("error: empty")));
        for w in ENGINE_REQUESTS {
            assert!(!TABLE_REQUESTS.contains(w));
            assert!(HELP.contains(w));
        }
        for w in TABLE_REQUESTS {
            assert!(HELP.contains(w), "{w} in help");
        }
    }
}
