//! `--import-test`: one state through the table the way a peer's state goes (import),
//! read back, killed by id, and checked gone.
//!
//! The state is a UDP flow between TEST-NET addresses (192.0.2.0/24 and
//! 198.51.100.0/24, RFC 5737: never routed), so it cannot match real traffic.
//!
//! **The creator id.** pf's hostid is random (`arc4random()` at pf's start on both
//! BSDs) unless `set hostid` fixes it, so no creator id is reserved and none can be
//! known to be unused by the peers. The test starts at [`PROBE_CREATORID`] and takes the
//! first value that no state in the table carries and that is not this host's hostid,
//! so its kill by id can only ever hit the state it imported. Run the check with the
//! daemon stopped: a running daemon would announce the state to its peers for the second
//! it lives.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::Step;
use crate::state::{
    AddressFamily, Direction, PeerLevel, PeerState, Protocol, State, StateKey, Timeout,
};
use crate::table::StateTable;
use crate::wire::IfName;

/// Where the search for an unused creator id starts ("7e57 c4ec", test check).
pub const PROBE_CREATORID: u32 = 0x7e57_c4ec;
/// The TEST-NET-2 end of the test state (the remote end of an outbound flow).
pub const PROBE_REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The TEST-NET-1 end of the test state.
pub const PROBE_LOCAL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// The step's name.
const STEP: &str = "import test";

/// The test state of creator `creatorid` with id `id`, bound to `ifname`.
pub fn probe_state(creatorid: u32, id: u64, ifname: &str) -> State {
    let wire = StateKey {
        af: AddressFamily::Inet,
        proto: Protocol::Udp,
        // Outbound: index 0 is the remote end (the discard port), 1 ours.
        addr: [IpAddr::V4(PROBE_REMOTE), IpAddr::V4(PROBE_LOCAL)],
        port: [9, 40_000],
        rdomain: 0,
    };
    let mut state = State {
        id,
        creatorid,
        ifname: IfName::new(ifname).unwrap_or_default(),
        wire,
        stack: wire,
        direction: Direction::Out,
        rule: None,
        timeout: Timeout::UdpSingle,
        expire_secs: 60,
        ..State::default()
    };
    state.src.state = PeerState::Level(PeerLevel::SINGLE);
    state.dst.state = PeerState::Level(PeerLevel::NO_TRAFFIC);
    state
}

/// The first creator id from [`PROBE_CREATORID`] on that no listed state carries and
/// that is not `hostid`.
pub fn unused_creatorid(taken: &[u32], hostid: Option<u32>) -> u32 {
    let mut id = PROBE_CREATORID;
    while id == 0 || taken.contains(&id) || Some(id) == hostid {
        id = id.wrapping_add(1);
    }
    id
}

/// Imports the test state into `table`, reads it back, kills it by id and checks it is
/// gone. `hostid`: this host's, never used as the test's creator id. The table is
/// listed again between steps (pf's table answers from its last listing).
pub fn import_test(table: &mut dyn StateTable, hostid: Option<u32>, ifname: &str) -> Step {
    let now = Instant::now();
    let mut changes = Vec::new();
    if let Err(e) = table.poll_changes(now, &mut changes) {
        return Step::fail(
            STEP,
            format!("listing the states: {e}"),
            "see the listing step",
        );
    }
    let mut taken = Vec::new();
    if let Err(e) = table.for_each_state(now, &mut |s| taken.push(s.creatorid)) {
        return Step::fail(
            STEP,
            format!("listing the states: {e}"),
            "see the listing step",
        );
    }
    let creatorid = unused_creatorid(&taken, hostid);
    // Ids from the clock: a second check does not meet the first one's state.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let id = nanos.max(1);
    let state = probe_state(creatorid, id, ifname);
    let name = format!("{creatorid:08x}/{id:016x}");
    if let Err(e) = table.import(now, &state) {
        return Step::fail(
            STEP,
            format!("importing {name}: {e}"),
            import_remedy(&e.to_string()),
        );
    }
    let outcome = read_back_and_kill(table, &state, &name);
    // Whatever failed on the way, the test state does not stay behind.
    if outcome.status != super::Status::Ok {
        let _ = table.remove(creatorid, id);
    }
    outcome
}

fn read_back_and_kill(table: &mut dyn StateTable, state: &State, name: &str) -> Step {
    let (creatorid, id) = (state.creatorid, state.id);
    let mut changes = Vec::new();
    let relist = |table: &mut dyn StateTable, changes: &mut Vec<_>| {
        changes.clear();
        table.poll_changes(Instant::now(), changes)
    };
    if let Err(e) = relist(table, &mut changes) {
        return Step::fail(
            STEP,
            format!("listing after the import: {e}"),
            "see the listing step",
        );
    }
    match table.get(Instant::now(), creatorid, id) {
        Ok(Some(back)) if back.wire == state.wire => {}
        Ok(Some(back)) => {
            return Step::fail(
                STEP,
                format!("{name} came back with another key: {:?}", back.wire),
                "report this with the output of pfctl -ss -vv",
            )
        }
        Ok(None) => {
            return Step::fail(
                STEP,
                format!("{name} was imported but is not in the listing"),
                "compare pfctl -ss -vv; the listing may be skipping states (see the listing step)",
            )
        }
        Err(e) => {
            return Step::fail(
                STEP,
                format!("reading {name} back: {e}"),
                "see the listing step",
            )
        }
    }
    match table.remove(creatorid, id) {
        Ok(true) => {}
        Ok(false) => {
            return Step::fail(
                STEP,
                format!("killing {name} by id killed nothing"),
                format!("kill it by hand: pfctl -k id -k {id:016x}/{creatorid:08x}"),
            )
        }
        Err(e) => {
            return Step::fail(
                STEP,
                format!("killing {name} by id: {e}"),
                format!(
                    "check securelevel; kill it by hand: pfctl -k id -k {id:016x}/{creatorid:08x}"
                ),
            )
        }
    }
    if let Err(e) = relist(table, &mut changes) {
        return Step::fail(
            STEP,
            format!("listing after the kill: {e}"),
            "see the listing step",
        );
    }
    match table.get(Instant::now(), creatorid, id) {
        Ok(None) => Step::ok(
            STEP,
            format!(
                "imported {name} ({} -> {}, udp), read it back, killed it by id: gone",
                PROBE_LOCAL, PROBE_REMOTE
            ),
        ),
        Ok(Some(_)) => Step::fail(
            STEP,
            format!("{name} is still listed after its kill"),
            format!("kill it by hand: pfctl -k id -k {id:016x}/{creatorid:08x}"),
        ),
        Err(e) => Step::fail(
            STEP,
            format!("listing after the kill: {e}"),
            "see the listing step",
        ),
    }
}

/// What to do about a refused import, by what the table said.
fn import_remedy(error: &str) -> String {
    if error.contains("not supported") {
        "FreeBSD: kldload pfsync && ifconfig pfsync0 -syncdev up".into()
    } else if error.contains("refused") {
        "the interface of the test state must exist: give `syncdev IF`".into()
    } else {
        "check securelevel (FreeBSD: at most 2, OpenBSD: at most 1) and the pf state limit".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{MemoryConfig, MemoryTable};

    #[test]
    fn the_creator_id_avoids_listed_states_and_the_hostid() {
        assert_eq!(unused_creatorid(&[], None), PROBE_CREATORID);
        assert_eq!(
            unused_creatorid(
                &[PROBE_CREATORID, PROBE_CREATORID + 1],
                Some(PROBE_CREATORID + 2)
            ),
            PROBE_CREATORID + 3
        );
    }

    #[test]
    fn the_import_test_passes_on_the_memory_table_and_leaves_nothing() {
        let mut table = MemoryTable::new(MemoryConfig::new(0x0102_0304));
        let step = import_test(&mut table, None, "eth0");
        assert_eq!(step.status, super::super::Status::Ok, "{step:?}");
        assert!(table.is_empty());
    }
}
