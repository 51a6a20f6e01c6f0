//! What two nodes' copies of a state must agree on. Nodes of one dialect carry the whole
//! state; a mixed cluster carries only what every dialect has, and a state from an
//! OpenBSD node reaches the others without its rule number (OpenBSD never vouches for
//! its numbers, engine-interop-review I2), so comparing whole states there would call a
//! synced cluster diverged.

use serde_json::{json, Value};

/// The part of a state's `sync` view (as `ctl states --json` gives it) every dialect
/// carries: keys, both peers' TCP state and sequence windows, the timeout class.
pub fn carried_by_every_dialect(sync: &Value) -> Value {
    let peer = |p: &Value| {
        json!([
            p["state"],
            p["seqlo"],
            p["seqhi"],
            p["max_win"],
            p["wscale"]
        ])
    };
    json!([
        sync["wire"]["proto"],
        sync["wire"]["addr"],
        sync["wire"]["port"],
        sync["stack"]["addr"],
        sync["stack"]["port"],
        peer(&sync["src"]),
        peer(&sync["dst"]),
        sync["timeout"]
    ])
}

/// The whole `sync` view: what nodes of one dialect must agree on.
pub fn whole(sync: &Value) -> Value {
    sync.clone()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_lost_rule_number_is_no_difference_but_a_sequence_number_is() {
        let state = json!({
            "wire": {"proto": 6, "addr": ["192.0.2.1", "198.51.100.1"], "port": [1, 2]},
            "stack": {"addr": ["192.0.2.1", "198.51.100.1"], "port": [1, 2]},
            "src": {"state": 4, "seqlo": 100, "seqhi": 200, "max_win": 10, "wscale": 0},
            "dst": {"state": 4, "seqlo": 300, "seqhi": 400, "max_win": 10, "wscale": 0},
            "timeout": 2,
            "rule": 7
        });
        let mut unbound = state.clone();
        unbound["rule"] = Value::Null;
        assert_ne!(whole(&state), whole(&unbound));
        assert_eq!(
            carried_by_every_dialect(&state),
            carried_by_every_dialect(&unbound)
        );
        let mut behind = state.clone();
        behind["src"]["seqlo"] = json!(99);
        assert_ne!(
            carried_by_every_dialect(&state),
            carried_by_every_dialect(&behind)
        );
    }
}
