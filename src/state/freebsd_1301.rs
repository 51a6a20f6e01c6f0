//! FreeBSD `struct pfsync_state_1301` (242 bytes) to and from [`State`].
//!
//! The oldest FreeBSD format, still the only one FreeBSD 13 reads: the common prefix
//! (keys, peers, route address, rules, counters) and one family, protocol, direction,
//! log, 8 bits of state flags, timeout and sync flags. Everything else (route type and
//! interface, queues, pipes, routing table, TTL/TOS/MSS/priority rewriting) is absent;
//! FreeBSD 14+ receivers recover some of it from their own ruleset.

use super::{
    addr_in_family, af_from_wire, direction_from_wire, rt_addr_from_wire, rule_from_wire,
    rule_to_wire, timeout_from_wire, Lost, Peer, Protocol, State, StateError, StateFlags, StateKey,
};
use crate::wire::msg::{KeyFreeBsdRepr, State1301Repr};
use crate::wire::{Dialect, Family, IfName, RouteType, TagName};

const FAMILY: Family = Family::FreeBsd;

/// A FreeBSD key, in the family and protocol the record gives both keys.
pub(super) fn key_from_freebsd(
    k: &KeyFreeBsdRepr,
    af: super::AddressFamily,
    proto: Protocol,
) -> StateKey {
    StateKey {
        af,
        proto,
        addr: [af.decode(k.addr[0]), af.decode(k.addr[1])],
        port: k.port,
        rdomain: 0,
    }
}

/// A FreeBSD key: addresses and ports only, the addresses in the family `af` the
/// receiver will read them in.
pub(super) fn key_to_freebsd(k: &StateKey, af: super::AddressFamily) -> KeyFreeBsdRepr {
    KeyFreeBsdRepr {
        addr: [
            addr_in_family(af, Some(k.addr[0])),
            addr_in_family(af, Some(k.addr[1])),
        ],
        port: k.port,
    }
}

impl State {
    /// Decodes a FreeBSD 1301 record.
    pub fn from_freebsd_1301(r: &State1301Repr) -> Result<State, StateError> {
        let af = af_from_wire(FAMILY, "af", r.af)?;
        let proto = Protocol::from_number(r.proto);
        Ok(State {
            id: r.id,
            creatorid: r.creatorid,
            ifname: r.ifname,
            orig_ifname: IfName::EMPTY,
            wire: key_from_freebsd(&r.key[0], af, proto),
            stack: key_from_freebsd(&r.key[1], af, proto),
            src: Peer::from_repr(&r.src, proto, "src.state")?,
            dst: Peer::from_repr(&r.dst, proto, "dst.state")?,
            direction: direction_from_wire(r.direction)?,
            rt: RouteType::None,
            rt_addr: rt_addr_from_wire(af, RouteType::None, r.rt_addr),
            rt_ifname: IfName::EMPTY,
            rule: rule_from_wire(r.rule),
            anchor: rule_from_wire(r.anchor),
            nat_rule: rule_from_wire(r.nat_rule),
            age_secs: r.creation,
            expire_secs: r.expire,
            packets: r.packets,
            bytes: r.bytes,
            log: r.log,
            state_flags: StateFlags::from_wire(FAMILY, r.state_flags.into()),
            timeout: timeout_from_wire(r.timeout)?,
            sync_flags: r.sync_flags,
            rtableid: None,
            reply_rtableid: None,
            qid: 0,
            pqid: 0,
            dnpipe: 0,
            dnrpipe: 0,
            min_ttl: 0,
            set_tos: 0,
            max_mss: 0,
            set_prio: [0; 2],
            tagname: TagName::EMPTY,
        })
    }

    /// Encodes as a FreeBSD 1301 record, with the fields it could not carry.
    pub fn to_freebsd_1301(&self) -> (State1301Repr, Lost) {
        let record = self.encode_freebsd_1301();
        let lost = self.lost_through(State::from_freebsd_1301(&record));
        (record, lost)
    }

    fn encode_freebsd_1301(&self) -> State1301Repr {
        // The field is 8 bits wide: flags from 0x0100 up do not fit.
        let state_flags = (self.state_flags.to_wire(FAMILY) & 0x00ff) as u8;
        State1301Repr {
            id: self.id,
            ifname: self.ifname,
            key: [
                key_to_freebsd(&self.wire, self.wire.af),
                key_to_freebsd(&self.stack, self.wire.af),
            ],
            src: self.src.to_repr(),
            dst: self.dst.to_repr(),
            rt_addr: addr_in_family(self.wire.af, self.rt_addr),
            rule: rule_to_wire(self.rule),
            anchor: rule_to_wire(self.anchor),
            nat_rule: rule_to_wire(self.nat_rule),
            creation: self.age_secs,
            expire: self.expire_secs,
            packets: self.packets,
            bytes: self.bytes,
            creatorid: self.creatorid,
            af: self.wire.af.to_wire(FAMILY),
            proto: self.wire.proto.number(),
            direction: self.direction.number(),
            log: self.log,
            state_flags,
            // A 1301 receiver may be FreeBSD 13, which knows no SCTP timeouts.
            timeout: self.timeout.carried_by(Dialect::FreeBsd1301).number(),
            sync_flags: self.sync_flags,
            updates: 0,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::state::{AddressFamily, PeerLevel, PeerState, StateField, Timeout};
    use std::net::IpAddr;

    /// A UDP state with everything 1400 carries set.
    fn rich_state() -> State {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        let key = StateKey {
            af: AddressFamily::Inet,
            proto: Protocol::Udp,
            addr: [v4("10.0.0.1"), v4("10.0.0.2")],
            port: [5353, 53],
            rdomain: 0,
        };
        let peer = Peer {
            state: PeerState::Level(PeerLevel::MULTIPLE),
            ..Peer::default()
        };
        State {
            id: 42,
            creatorid: 0x1a2b_3c4d,
            ifname: IfName::new("vtnet0").unwrap(),
            wire: key,
            stack: key,
            src: peer,
            dst: peer,
            rt: RouteType::RouteTo,
            rt_addr: Some(v4("10.0.0.254")),
            rt_ifname: IfName::new("vtnet1").unwrap(),
            rule: Some(3),
            timeout: Timeout::UdpMultiple,
            state_flags: StateFlags::SETPRIO | StateFlags::NODF,
            rtableid: Some(2),
            qid: 5,
            pqid: 6,
            dnpipe: 7,
            dnrpipe: 8,
            min_ttl: 9,
            set_tos: 10,
            max_mss: 1300,
            set_prio: [1, 2],
            ..State::default()
        }
    }

    #[test]
    fn reports_the_lost_fields_by_name() {
        let s = rich_state();
        let (r, lost) = s.to_freebsd_1301();
        r.check(Dialect::FreeBsd1301).unwrap();
        assert_eq!(r.af, 2);
        assert_eq!(r.proto, 17);
        assert_eq!(
            r.state_flags, 0x20,
            "NODF stays, SETPRIO (0x200) does not fit"
        );
        assert_eq!(
            lost.to_string(),
            "rt, rt_ifname, state_flags, rtableid, qid, pqid, dnpipe, dnrpipe, \
             min_ttl, set_tos, max_mss, set_prio"
        );
        // The route address travels; with no route type it stays an address.
        let back = State::from_freebsd_1301(&r).unwrap();
        assert_eq!(back.rt_addr, s.rt_addr);
        assert_eq!(back.rt, RouteType::None);
        // What was lost is what differs, and taking it back restores the state.
        assert_eq!(s.diff(&back), lost);
        let mut restored = back;
        restored.take_fields(&s, lost);
        assert_eq!(restored, s);
    }

    #[test]
    fn defaults_are_not_lost() {
        let s = State {
            rtableid: None,
            qid: 0,
            rt: RouteType::None,
            rt_addr: None,
            rt_ifname: IfName::EMPTY,
            state_flags: StateFlags::NODF,
            min_ttl: 0,
            set_tos: 0,
            max_mss: 0,
            set_prio: [0, 0],
            pqid: 0,
            dnpipe: 0,
            dnrpipe: 0,
            ..rich_state()
        };
        let (_, lost) = s.to_freebsd_1301();
        assert!(lost.is_empty(), "lost {lost}");
    }

    #[test]
    fn ipv6_is_28_on_freebsd() {
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut s = rich_state();
        for k in [&mut s.wire, &mut s.stack] {
            k.af = AddressFamily::Inet6;
            k.addr = [v6("fd00::1"), v6("fd00::2")];
        }
        s.rt_addr = None;
        s.rt = RouteType::None;
        let (r, lost) = s.to_freebsd_1301();
        assert_eq!(r.af, 28);
        assert!(!lost.contains(StateField::WireKey));
        let back = State::from_freebsd_1301(&r).unwrap();
        assert_eq!(back.wire, s.wire);
        // 24 is OpenBSD's number: not an address family on FreeBSD.
        let mut bad = r;
        bad.af = 24;
        assert_eq!(
            State::from_freebsd_1301(&bad).unwrap_err(),
            StateError::AddressFamily {
                field: "af",
                value: 24
            }
        );
    }

    #[test]
    fn sctp_timeouts_do_not_reach_freebsd_13() {
        let s = State {
            wire: StateKey {
                proto: Protocol::Sctp,
                ..StateKey::default()
            },
            src: Peer {
                state: PeerState::Level(PeerLevel::new(6).unwrap()),
                ..Peer::default()
            },
            dst: Peer {
                state: PeerState::Level(PeerLevel::NO_TRAFFIC),
                ..Peer::default()
            },
            timeout: Timeout::SctpFirst,
            ..State::default()
        };
        let (r, lost) = s.to_freebsd_1301();
        assert_eq!(r.timeout, Timeout::OtherFirst.number());
        assert!(lost.contains(StateField::Timeout));
        r.check(Dialect::FreeBsd1301).unwrap();
    }
}
