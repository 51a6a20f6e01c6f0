//! Interface-name mapping: a peer's states bound to its NIC names, taken in under ours.
//!
//! Firewalls of one cluster often have different NICs (`em0` on one, `igb0` on the
//! other). A state is bound to an interface by name (`ifname` in every record format),
//! and neither kernel translates it: FreeBSD's import skips a state whose interface it
//! does not have (`pfsync_state_import`, `pfi_kkif_find`), OpenBSD's makes an interface
//! entry for the name and imports a state no packet can match. So if-bound states sync
//! only between identical names.
//!
//! A mapping says "the peer's `em0` is our `igb0`", for every peer or for the peer at one
//! address. It is applied to what a peer sends before anything else looks at it: the
//! interface of its full states (INS, UPD), the real interface of its floating states
//! (FreeBSD 15 `orig_ifname`), and the interface of its clears (CLR). pf's `all`
//! (floating states) is never mapped. A name no mapping covers is kept: the table
//! refuses and counts it if this system lacks it (`unknown_interface`).
//!
//! There is no reverse mapping. What we send, our own states and the peers' states we
//! send again in bulk updates and stale replies alike, carries our names, the ones the
//! states have in our table: every packet speaks the sender's names, so each receiver
//! needs one mapping per sender, keyed by the sender's address, and never has to guess
//! whose names a relayed state carries. A two-node cluster maps both ways (`ifmap em0
//! igb0` on the `igb0` side, `ifmap igb0 em0` on the `em0` side).

use std::net::IpAddr;

use super::Engine;
use crate::state::State;
use crate::wire::msg::ClrRepr;
use crate::wire::IfName;

/// pf's interface name for floating states, which is the same on every system.
const FLOATING: &[u8] = b"all";

/// One mapping: the peer's name, ours, and the peer it is for (all if `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfMapping {
    /// The interface name in the peer's packets.
    pub peer_name: IfName,
    /// The name the state takes here.
    pub local_name: IfName,
    /// Only in packets from this address; `None`: from any peer.
    pub peer: Option<IpAddr>,
}

/// The mappings in force. A per-peer mapping of a name wins over the global one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IfMap {
    mappings: Vec<IfMapping>,
}

impl IfMap {
    /// True if `name` is pf's floating-state name, which is never mapped.
    pub fn is_floating(name: &IfName) -> bool {
        name.as_bytes() == FLOATING
    }

    /// Adds a mapping; one for the same peer name and peer replaces it.
    pub fn insert(&mut self, mapping: IfMapping) {
        match self.mappings.iter_mut().find(|m| {
            m.peer == mapping.peer && m.peer_name.as_bytes() == mapping.peer_name.as_bytes()
        }) {
            Some(m) => *m = mapping,
            None => self.mappings.push(mapping),
        }
    }

    /// Drops every mapping.
    pub fn clear(&mut self) {
        self.mappings.clear();
    }

    /// The mappings, in the order given.
    pub fn mappings(&self) -> &[IfMapping] {
        &self.mappings
    }

    /// True with no mapping.
    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }

    /// Our name for the interface a packet from `source` calls `name`, if a mapping
    /// covers it. Names compare up to their NUL: bytes after it are not part of the
    /// name.
    pub fn local_name(&self, name: &IfName, source: Option<IpAddr>) -> Option<IfName> {
        if name.is_empty() || Self::is_floating(name) {
            return None;
        }
        let matching = |m: &&IfMapping| m.peer_name.as_bytes() == name.as_bytes();
        let for_peer = source.and_then(|s| {
            self.mappings
                .iter()
                .filter(matching)
                .find(|m| m.peer == Some(s))
        });
        for_peer
            .or_else(|| {
                self.mappings
                    .iter()
                    .filter(matching)
                    .find(|m| m.peer.is_none())
            })
            .map(|m| m.local_name)
    }
}

impl Engine {
    /// Turns a peer's state's interface names into ours, where mapped.
    pub(super) fn map_state(&mut self, state: &mut State) {
        if self.ifmap.is_empty() {
            return;
        }
        let source = self.packet_source;
        if let Some(local) = self.ifmap.local_name(&state.ifname, source) {
            state.ifname = local;
            self.stats.ifname_mapped += 1;
        }
        if let Some(local) = self.ifmap.local_name(&state.orig_ifname, source) {
            state.orig_ifname = local;
        }
    }

    /// A peer's clear with its interface name turned into ours, where mapped.
    pub(super) fn mapped_clear(&mut self, mut clear: ClrRepr) -> ClrRepr {
        if let Some(local) = self.ifmap.local_name(&clear.ifname, self.packet_source) {
            clear.ifname = local;
            self.stats.ifname_mapped += 1;
        }
        clear
    }
}

#[cfg(test)]
mod test {
    use std::time::Instant;

    use super::*;
    use crate::engine::{Config, Engine, Received, TableOp};
    use crate::wire::{Dialect, Message, PacketBuilder, Pushed};

    const US: u32 = 0x0a0a_0a0a;
    const PEER: u32 = 0x0b0b_0b0b;

    fn name(s: &str) -> IfName {
        IfName::new(s).unwrap()
    }

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn map(peer_name: &str, local_name: &str, peer: Option<&str>) -> IfMapping {
        IfMapping {
            peer_name: name(peer_name),
            local_name: name(local_name),
            peer: peer.map(addr),
        }
    }

    fn peer_state(id: u64, ifname: &str) -> State {
        State {
            id,
            creatorid: PEER,
            ifname: name(ifname),
            ..State::default()
        }
    }

    fn packet(dialect: Dialect, msgs: &[Message]) -> Vec<u8> {
        let mut b = PacketBuilder::new(dialect, 9000);
        for m in msgs {
            assert_eq!(b.push(m).unwrap(), Pushed::Added);
        }
        b.finish().unwrap()
    }

    fn receive(e: &mut Engine, source: &str, dialect: Dialect, msgs: &[Message]) -> Vec<TableOp> {
        let p = packet(dialect, msgs);
        e.handle_packet(
            Instant::now(),
            Received {
                payload: &p,
                on_syncdev: true,
                ttl: 255,
                ipv6: false,
                source: Some(addr(source)),
            },
        );
        std::iter::from_fn(|| e.poll_table_op()).collect()
    }

    fn imported_names(ops: &[TableOp]) -> Vec<String> {
        ops.iter()
            .filter_map(|op| match op {
                TableOp::Import(s) => Some(s.ifname.to_string()),
                _ => None,
            })
            .collect()
    }

    fn engine_with(mappings: &[IfMapping]) -> Engine {
        let mut e = Engine::new(Config::new(US, Dialect::FreeBsd1400));
        let mut m = IfMap::default();
        for &x in mappings {
            m.insert(x);
        }
        e.set_ifmap(m);
        e
    }

    #[test]
    fn a_peer_state_is_imported_under_the_mapped_name() {
        let mut e = engine_with(&[map("em0", "igb0", None)]);
        let dialects = [Dialect::FreeBsd1301, Dialect::FreeBsd1400, Dialect::OpenBsd];
        for (id, dialect) in (1..).zip(dialects) {
            let s = peer_state(id, "em0");
            let f = dialect.record_format();
            let ops = receive(
                &mut e,
                "10.0.0.2",
                dialect,
                &[Message::Ins(s.to_record(f).0)],
            );
            assert_eq!(imported_names(&ops), ["igb0"], "{dialect:?}");
            // The cache holds our name: what we send again carries it (no reverse map).
            assert_eq!(e.state(PEER, id).unwrap().ifname, name("igb0"));
        }
        let s = peer_state(100, "em0");
        let ops = receive(
            &mut e,
            "10.0.0.2",
            Dialect::FreeBsd1400,
            &[Message::Upd(
                s.to_record(Dialect::FreeBsd1400.record_format()).0,
            )],
        );
        assert_eq!(imported_names(&ops), ["igb0"]);
        assert!(e.stats().ifname_mapped >= 4);
    }

    #[test]
    fn unmapped_and_floating_names_are_kept() {
        let mut e = engine_with(&[map("em0", "igb0", None), map("all", "igb0", None)]);
        let f = Dialect::FreeBsd1400.record_format();
        let ops = receive(
            &mut e,
            "10.0.0.2",
            Dialect::FreeBsd1400,
            &[
                Message::Upd(peer_state(1, "em1").to_record(f).0),
                Message::Upd(peer_state(2, "all").to_record(f).0),
            ],
        );
        assert_eq!(imported_names(&ops), ["em1", "all"]);
        assert_eq!(e.stats().ifname_mapped, 0);
    }

    #[test]
    fn a_per_peer_mapping_wins_for_that_peer_only() {
        let mut e = engine_with(&[
            map("em0", "igb0", None),
            map("em0", "ix0", Some("10.0.0.3")),
        ]);
        let f = Dialect::FreeBsd1400.record_format();
        let from_2 = receive(
            &mut e,
            "10.0.0.2",
            Dialect::FreeBsd1400,
            &[Message::Upd(peer_state(1, "em0").to_record(f).0)],
        );
        let from_3 = receive(
            &mut e,
            "10.0.0.3",
            Dialect::FreeBsd1400,
            &[Message::Upd(peer_state(2, "em0").to_record(f).0)],
        );
        assert_eq!(imported_names(&from_2), ["igb0"]);
        assert_eq!(imported_names(&from_3), ["ix0"]);
    }

    #[test]
    fn a_clear_of_a_peer_interface_clears_the_mapped_one() {
        let mut e = engine_with(&[map("em0", "igb0", None)]);
        let f = Dialect::FreeBsd1400.record_format();
        receive(
            &mut e,
            "10.0.0.2",
            Dialect::FreeBsd1400,
            &[Message::Upd(peer_state(1, "em0").to_record(f).0)],
        );
        let ops = receive(
            &mut e,
            "10.0.0.2",
            Dialect::FreeBsd1400,
            &[Message::Clr(ClrRepr {
                ifname: name("em0"),
                creatorid: PEER,
            })],
        );
        assert_eq!(
            ops,
            [TableOp::Clear {
                creatorid: PEER,
                ifname: name("igb0")
            }]
        );
        assert_eq!(e.state(PEER, 1), None, "the cleared state is still cached");
    }

    #[test]
    fn a_later_mapping_of_the_same_name_replaces_the_earlier() {
        let mut m = IfMap::default();
        m.insert(map("em0", "igb0", None));
        m.insert(map("em0", "igb1", None));
        m.insert(map("em0", "ix0", Some("10.0.0.2")));
        assert_eq!(m.mappings().len(), 2);
        assert_eq!(m.local_name(&name("em0"), None), Some(name("igb1")));
        assert_eq!(
            m.local_name(&name("em0"), Some(addr("10.0.0.2"))),
            Some(name("ix0"))
        );
        // Bytes after the NUL are not part of the name.
        let mut padded = name("em0");
        padded.0[10] = b'x';
        assert_eq!(m.local_name(&padded, None), Some(name("igb1")));
    }
}
