//! FreeBSD `struct pfsync_state_1500` (360 bytes) to and from [`State`].
//!
//! FreeBSD 15's format carries every neutral field but OpenBSD's: separate families and
//! protocols for the two keys (af-to), the route family, the tag name and the original
//! interface of floating states.

use super::freebsd_1301::{key_from_freebsd, key_to_freebsd};
use super::{
    af_from_wire, direction_from_wire, rt_addr_to_wire, rt_from_wire, rt_to_wire, rtable_from_wire,
    rtable_to_wire, rule_from_wire, rule_to_wire, timeout_from_wire, AddressFamily, Lost, Peer,
    Protocol, State, StateError, StateFlags,
};
use crate::wire::msg::State1500Repr;
use crate::wire::{Dialect, Family};

const FAMILY: Family = Family::FreeBsd;

impl State {
    /// Decodes a FreeBSD 1500 record.
    pub fn from_freebsd_1500(r: &State1500Repr) -> Result<State, StateError> {
        let wire_af = af_from_wire(FAMILY, "wire_af", r.wire_af)?;
        let stack_af = af_from_wire(FAMILY, "stack_af", r.stack_af)?;
        let wire_proto = Protocol::from_number(r.wire_proto);
        let stack_proto = Protocol::from_number(r.stack_proto);
        // rt_af 0 is a state without policy routing; should an address come with it
        // anyway, it is read in the wire family, as the formats without rt_af do.
        let rt_addr = match r.rt_af {
            0 if r.rt_addr.is_zero() => None,
            0 => Some(wire_af.decode(r.rt_addr)),
            n => Some(af_from_wire(FAMILY, "rt_af", n)?.decode(r.rt_addr)),
        };
        Ok(State {
            id: r.id,
            creatorid: r.creatorid,
            ifname: r.ifname,
            orig_ifname: r.orig_ifname,
            wire: key_from_freebsd(&r.key[0], wire_af, wire_proto),
            stack: key_from_freebsd(&r.key[1], stack_af, stack_proto),
            src: Peer::from_repr(&r.src, wire_proto, "src.state")?,
            dst: Peer::from_repr(&r.dst, wire_proto, "dst.state")?,
            direction: direction_from_wire(r.direction)?,
            rt: rt_from_wire(FAMILY, r.rt)?,
            rt_addr,
            rt_ifname: r.rt_ifname,
            rule: rule_from_wire(r.rule),
            anchor: rule_from_wire(r.anchor),
            nat_rule: rule_from_wire(r.nat_rule),
            age_secs: r.creation,
            expire_secs: r.expire,
            packets: r.packets,
            bytes: r.bytes,
            log: r.log,
            state_flags: StateFlags::from_wire(FAMILY, r.state_flags),
            timeout: timeout_from_wire(r.timeout)?,
            sync_flags: 0,
            rtableid: rtable_from_wire(r.rtableid)?,
            reply_rtableid: None,
            qid: r.qid,
            pqid: r.pqid,
            dnpipe: r.dnpipe,
            dnrpipe: r.dnrpipe,
            min_ttl: r.min_ttl,
            set_tos: r.set_tos,
            max_mss: r.max_mss,
            set_prio: r.set_prio,
            tagname: r.tagname,
        })
    }

    /// Encodes as a FreeBSD 1500 record, with the fields it could not carry.
    pub fn to_freebsd_1500(&self) -> (State1500Repr, Lost) {
        let record = self.encode_freebsd_1500();
        let lost = self.lost_through(State::from_freebsd_1500(&record));
        (record, lost)
    }

    fn encode_freebsd_1500(&self) -> State1500Repr {
        State1500Repr {
            id: self.id,
            ifname: self.ifname,
            key: [
                key_to_freebsd(&self.wire, self.wire.af),
                key_to_freebsd(&self.stack, self.stack.af),
            ],
            src: self.src.to_repr(),
            dst: self.dst.to_repr(),
            rt_addr: rt_addr_to_wire(self.rt_addr),
            rule: rule_to_wire(self.rule),
            anchor: rule_to_wire(self.anchor),
            nat_rule: rule_to_wire(self.nat_rule),
            creation: self.age_secs,
            expire: self.expire_secs,
            packets: self.packets,
            bytes: self.bytes,
            creatorid: self.creatorid,
            tagname: self.tagname,
            rt_ifname: self.rt_ifname,
            orig_ifname: self.orig_ifname,
            rtableid: rtable_to_wire(self.rtableid),
            state_flags: self.state_flags.to_wire(FAMILY),
            qid: self.qid,
            pqid: self.pqid,
            dnpipe: self.dnpipe,
            dnrpipe: self.dnrpipe,
            max_mss: self.max_mss,
            wire_af: self.wire.af.to_wire(FAMILY),
            stack_af: self.stack.af.to_wire(FAMILY),
            rt_af: self
                .rt_addr
                .as_ref()
                .map_or(0, |a| AddressFamily::of(a).to_wire(FAMILY)),
            wire_proto: self.wire.proto.number(),
            stack_proto: self.stack.proto.number(),
            log: self.log,
            timeout: self.timeout.carried_by(Dialect::FreeBsd1500).number(),
            direction: self.direction.number(),
            rt: rt_to_wire(FAMILY, self.rt),
            min_ttl: self.min_ttl,
            set_tos: self.set_tos,
            set_prio: self.set_prio,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::state::{PeerLevel, PeerState, StateField, StateKey, Timeout};
    use crate::wire::{IfName, RouteType, TagName};
    use std::net::IpAddr;

    /// A NAT64 ping on a floating state, tagged, routed after translation to an IPv4 next
    /// hop.
    fn nat64_ping() -> State {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let level = |n| PeerState::Level(PeerLevel::new(n).unwrap());
        State {
            id: 1,
            creatorid: 2,
            ifname: IfName::new("all").unwrap(),
            orig_ifname: IfName::new("em0").unwrap(),
            wire: StateKey {
                af: AddressFamily::Inet6,
                proto: Protocol::Icmpv6,
                addr: [ip("2001:db8::1"), ip("64:ff9b::c000:201")],
                port: [77, 77],
                rdomain: 0,
            },
            stack: StateKey {
                af: AddressFamily::Inet,
                proto: Protocol::Icmp,
                addr: [ip("198.51.100.1"), ip("192.0.2.1")],
                port: [77, 77],
                rdomain: 0,
            },
            src: Peer {
                state: level(1),
                ..Peer::default()
            },
            dst: Peer {
                state: level(0),
                ..Peer::default()
            },
            rt: RouteType::RouteTo,
            rt_addr: Some(ip("192.0.2.254")),
            rt_ifname: IfName::new("em1").unwrap(),
            timeout: Timeout::IcmpFirst,
            tagname: TagName::new("nat64").unwrap(),
            ..State::default()
        }
    }

    #[test]
    fn carries_af_to_tag_and_origin() {
        let s = nat64_ping();
        let (r, lost) = s.to_freebsd_1500();
        assert!(lost.is_empty(), "lost {lost}");
        assert_eq!((r.wire_af, r.stack_af, r.rt_af), (28, 2, 2));
        assert_eq!((r.wire_proto, r.stack_proto), (58, 1));
        assert_eq!(r.tagname.to_string(), "nat64");
        assert_eq!(r.orig_ifname.to_string(), "em0");
        assert_eq!(r.rt, 2);
        r.check(Dialect::FreeBsd1500).unwrap();
        assert_eq!(State::from_freebsd_1500(&r).unwrap(), s);
    }

    #[test]
    fn older_formats_lose_the_translation() {
        let s = nat64_ping();
        let (_, lost) = s.to_freebsd_1400();
        assert_eq!(
            lost.to_string(),
            "orig_ifname, stack_af, stack_proto, stack_key, rt_addr, rt_af, tagname"
        );
        // OpenBSD carries both families, implies the ICMP swap, and takes the route
        // address in the translated family.
        let (r, lost) = s.to_openbsd();
        assert_eq!((r.key[0].af, r.key[1].af), (24, 2));
        assert_eq!(lost.to_string(), "orig_ifname, rt_ifname, tagname");
    }

    #[test]
    fn no_route_family_is_no_route_address() {
        let s = State {
            rt: RouteType::None,
            rt_addr: None,
            ..nat64_ping()
        };
        let (r, lost) = s.to_freebsd_1500();
        assert!(lost.is_empty());
        assert_eq!(r.rt_af, 0);
        // 1400 has no rt_af: a route address is read in the wire family.
        let mut r14 = s.to_freebsd_1400().0;
        r14.rt = 2;
        let from_1400 = State::from_freebsd_1400(&r14).unwrap();
        assert_eq!(from_1400.rt_addr, Some(AddressFamily::Inet6.unspecified()));
        assert_eq!(from_1400.to_freebsd_1500().0.rt_af, 28);
    }

    #[test]
    fn sync_flags_have_no_place() {
        let s = State {
            sync_flags: 0x04,
            ..nat64_ping()
        };
        assert_eq!(s.to_freebsd_1500().1.to_string(), "sync_flags");
        assert!(!s.to_freebsd_1400().1.contains(StateField::SyncFlags));
    }

    #[test]
    fn bad_route_family_is_refused() {
        let (mut r, _) = nat64_ping().to_freebsd_1500();
        r.rt_af = 24;
        let err = State::from_freebsd_1500(&r).unwrap_err();
        assert_eq!(err.field(), "rt_af");
        r.rt_af = 28;
        r.stack_af = 10;
        assert_eq!(
            State::from_freebsd_1500(&r).unwrap_err().field(),
            "stack_af"
        );
    }
}
