//! FreeBSD `struct pfsync_state_1400` (277 bytes) to and from [`State`].
//!
//! FreeBSD 14's format: the 1301 fields with 16 bits of state flags, plus queues, pipes,
//! one routing table, TTL/TOS/MSS/priority rewriting and the route type and interface.
//! Still one family and protocol for both keys, so no af-to; no route family, tag or
//! original interface.

use super::freebsd_1301::{key_from_freebsd, key_to_freebsd};
use super::{
    addr_in_family, af_from_wire, direction_from_wire, rt_addr_from_wire, rt_from_wire, rt_to_wire,
    rtable_from_wire, rtable_to_wire, rule_from_wire, rule_to_wire, timeout_from_wire, Lost, Peer,
    Protocol, State, StateError, StateFlags,
};
use crate::wire::msg::State1400Repr;
use crate::wire::{Dialect, Family, IfName, TagName};

const FAMILY: Family = Family::FreeBsd;

impl State {
    /// Decodes a FreeBSD 1400 record.
    pub fn from_freebsd_1400(r: &State1400Repr) -> Result<State, StateError> {
        let af = af_from_wire(FAMILY, "af", r.af)?;
        let proto = Protocol::from_number(r.proto);
        let rt = rt_from_wire(FAMILY, r.rt)?;
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
            rt,
            rt_addr: rt_addr_from_wire(af, rt, r.rt_addr),
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
            sync_flags: r.sync_flags,
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
            tagname: TagName::EMPTY,
        })
    }

    /// Encodes as a FreeBSD 1400 record, with the fields it could not carry.
    pub fn to_freebsd_1400(&self) -> (State1400Repr, Lost) {
        let record = self.encode_freebsd_1400();
        let lost = self.lost_through(State::from_freebsd_1400(&record));
        (record, lost)
    }

    fn encode_freebsd_1400(&self) -> State1400Repr {
        State1400Repr {
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
            state_flags: self.state_flags.to_wire(FAMILY),
            log: self.log,
            timeout: self.timeout.carried_by(Dialect::FreeBsd1400).number(),
            sync_flags: self.sync_flags,
            updates: 0,
            qid: self.qid,
            pqid: self.pqid,
            dnpipe: self.dnpipe,
            dnrpipe: self.dnrpipe,
            rtableid: rtable_to_wire(self.rtableid),
            min_ttl: self.min_ttl,
            set_tos: self.set_tos,
            max_mss: self.max_mss,
            set_prio: self.set_prio,
            rt: rt_to_wire(FAMILY, self.rt),
            rt_ifname: self.rt_ifname,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::state::{AddressFamily, StateField, StateKey, Timeout};
    use crate::wire::RouteType;
    use std::net::IpAddr;

    fn v6_reply_to() -> State {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let key = StateKey {
            af: AddressFamily::Inet6,
            proto: Protocol::Tcp,
            addr: [ip("2001:db8::10"), ip("2001:db8::20")],
            port: [22, 60000],
            rdomain: 0,
        };
        State {
            id: 7,
            creatorid: 9,
            ifname: IfName::new("igb0").unwrap(),
            wire: key,
            stack: key,
            direction: crate::state::Direction::Out,
            rt: RouteType::ReplyTo,
            rt_addr: Some(ip("2001:db8::1")),
            rt_ifname: IfName::new("igb1").unwrap(),
            rtableid: Some(1),
            timeout: Timeout::TcpEstablished,
            state_flags: StateFlags::DN_IS_PIPE,
            dnpipe: 3,
            ..State::default()
        }
    }

    #[test]
    fn numbers_follow_freebsd() {
        let s = v6_reply_to();
        let (r, lost) = s.to_freebsd_1400();
        assert!(lost.is_empty(), "lost {lost}");
        assert_eq!(r.af, 28);
        assert_eq!(r.rt, 4, "reply-to is 4 on FreeBSD");
        assert_eq!(r.rtableid, 1);
        assert_eq!(r.state_flags, 0x4000);
        r.check(Dialect::FreeBsd1400).unwrap();
        assert_eq!(State::from_freebsd_1400(&r).unwrap(), s);
    }

    #[test]
    fn to_openbsd_translates_and_reports() {
        let s = v6_reply_to();
        let (r, lost) = s.to_openbsd();
        assert_eq!(r.af, 24);
        assert_eq!(r.rt, 3, "reply-to is 3 on OpenBSD");
        // Outbound: the rule's table is the wire key's slot.
        assert_eq!(r.rtableid, [1, -1]);
        assert_eq!(r.state_flags, 0, "dummynet is FreeBSD's");
        assert_eq!(lost.to_string(), "rt_ifname, state_flags, dnpipe");
    }

    #[test]
    fn fastroute_has_no_openbsd_number() {
        let s = State {
            rt: RouteType::FastRoute,
            ..v6_reply_to()
        };
        let (r14, lost) = s.to_freebsd_1400();
        assert_eq!(r14.rt, 1);
        assert!(lost.is_empty());
        let (r, lost) = s.to_openbsd();
        assert_eq!(r.rt, 0);
        assert!(lost.contains(StateField::Rt));
    }

    #[test]
    fn unknown_route_type_is_refused() {
        let (mut r, _) = v6_reply_to().to_freebsd_1400();
        r.rt = 5;
        let err = State::from_freebsd_1400(&r).unwrap_err();
        assert_eq!(
            err,
            StateError::RouteType {
                family: Family::FreeBsd,
                value: 5
            }
        );
        assert_eq!(err.counter(), crate::wire::Counter::Badval);
    }
}
