//! OpenBSD `struct pfsync_state` (264 bytes) to and from [`State`].
//!
//! OpenBSD gives each key its own family and routing domain, and two routing tables, but
//! only the wire key's protocol; it has no ALTQ, dummynet, route interface, tag or
//! original interface, and numbers `AF_INET6` 24 and `rt` 1 route-to, 2 dup-to,
//! 3 reply-to.

use super::{
    addr_in_family, af_from_wire, direction_from_wire, rt_addr_from_wire, rt_from_wire, rt_to_wire,
    rtable_from_wire, rtable_to_wire, rule_from_wire, rule_to_wire, timeout_from_wire, Direction,
    Lost, Peer, Protocol, State, StateError, StateFlags, StateKey,
};
use crate::wire::msg::{KeyOpenBsdRepr, StateOpenBsdRepr};
use crate::wire::{Dialect, Family, IfName, TagName};

const FAMILY: Family = Family::OpenBsd;

/// The `rtableid` slot pf fills from the rule when it creates the state: the one of the
/// packet's destination side, i.e. the stack key for inbound states and the wire key for
/// outbound ones. The other slot is the reply traffic's.
fn forward_rtable_slot(direction: Direction) -> usize {
    match direction {
        Direction::Out => 0,
        Direction::In | Direction::InOut => 1,
    }
}

impl State {
    /// Decodes an OpenBSD record.
    pub fn from_openbsd(r: &StateOpenBsdRepr) -> Result<State, StateError> {
        let af = af_from_wire(FAMILY, "af", r.af)?;
        // A key family of 0 means "the state's"; a key's own family wins otherwise, as it
        // is the one pf stores in the key.
        let key_af = |k: &KeyOpenBsdRepr, field| match k.af {
            0 => Ok(af),
            n => af_from_wire(FAMILY, field, n),
        };
        let wire_af = key_af(&r.key[0], "key[0].af")?;
        let stack_af = key_af(&r.key[1], "key[1].af")?;
        let wire_proto = Protocol::from_number(r.proto);
        let stack_proto = if stack_af == wire_af {
            wire_proto
        } else {
            wire_proto.across_families()
        };
        let key = |k: &KeyOpenBsdRepr, af: super::AddressFamily, proto| StateKey {
            af,
            proto,
            addr: [af.decode(k.addr[0]), af.decode(k.addr[1])],
            port: k.port,
            rdomain: k.rdomain,
        };
        let direction = direction_from_wire(r.direction)?;
        let rt = rt_from_wire(FAMILY, r.rt)?;
        let forward = forward_rtable_slot(direction);
        Ok(State {
            id: r.id,
            creatorid: r.creatorid,
            ifname: r.ifname,
            orig_ifname: IfName::EMPTY,
            wire: key(&r.key[0], wire_af, wire_proto),
            stack: key(&r.key[1], stack_af, stack_proto),
            src: Peer::from_repr(&r.src, wire_proto, "src.state")?,
            dst: Peer::from_repr(&r.dst, wire_proto, "dst.state")?,
            direction,
            rt,
            rt_addr: rt_addr_from_wire(stack_af, rt, r.rt_addr),
            rt_ifname: IfName::EMPTY,
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
            rtableid: rtable_from_wire(r.rtableid[forward])?,
            reply_rtableid: rtable_from_wire(r.rtableid[1 - forward])?,
            qid: 0,
            pqid: 0,
            dnpipe: 0,
            dnrpipe: 0,
            min_ttl: r.min_ttl,
            set_tos: r.set_tos,
            max_mss: r.max_mss,
            set_prio: r.set_prio,
            tagname: TagName::EMPTY,
        })
    }

    /// Encodes as an OpenBSD record, with the fields it could not carry.
    pub fn to_openbsd(&self) -> (StateOpenBsdRepr, Lost) {
        let record = self.encode_openbsd();
        let lost = self.lost_through(State::from_openbsd(&record));
        (record, lost)
    }

    fn encode_openbsd(&self) -> StateOpenBsdRepr {
        let key = |k: &StateKey| KeyOpenBsdRepr {
            addr: [
                crate::wire::PfAddr::from_ip(k.addr[0]),
                crate::wire::PfAddr::from_ip(k.addr[1]),
            ],
            port: k.port,
            rdomain: k.rdomain,
            // Sent explicitly, as OpenBSD does since af-to: 0 would be read as the
            // state's family, which is the wire key's.
            af: k.af.to_wire(FAMILY),
        };
        let forward = forward_rtable_slot(self.direction);
        let mut rtableid = [0; 2];
        rtableid[forward] = rtable_to_wire(self.rtableid);
        rtableid[1 - forward] = rtable_to_wire(self.reply_rtableid);
        StateOpenBsdRepr {
            id: self.id,
            ifname: self.ifname,
            key: [key(&self.wire), key(&self.stack)],
            src: self.src.to_repr(),
            dst: self.dst.to_repr(),
            rt_addr: addr_in_family(self.stack.af, self.rt_addr),
            rule: rule_to_wire(self.rule),
            anchor: rule_to_wire(self.anchor),
            nat_rule: rule_to_wire(self.nat_rule),
            creation: self.age_secs,
            expire: self.expire_secs,
            packets: self.packets,
            bytes: self.bytes,
            creatorid: self.creatorid,
            rtableid,
            max_mss: self.max_mss,
            af: self.wire.af.to_wire(FAMILY),
            proto: self.wire.proto.number(),
            direction: self.direction.number(),
            log: self.log,
            rt: rt_to_wire(FAMILY, self.rt),
            timeout: self.timeout.carried_by(Dialect::OpenBsd).number(),
            sync_flags: self.sync_flags,
            updates: 0,
            min_ttl: self.min_ttl,
            set_tos: self.set_tos,
            state_flags: self.state_flags.to_wire(FAMILY),
            set_prio: self.set_prio,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::state::{AddressFamily, PeerState, StateField, TcpState, Timeout};
    use crate::wire::msg::StateRecord;
    use crate::wire::{RecordFormat, RouteType};
    use std::net::IpAddr;

    /// An inbound IPv6 TCP state with route-to, built byte by byte as OpenBSD sends it:
    /// AF_INET6 is 24 and route-to is 1.
    fn openbsd_bytes() -> [u8; 264] {
        let mut b = [0u8; 264];
        b[0..8].copy_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes()); // id
        b[8..11].copy_from_slice(b"em0"); // ifname
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let z: IpAddr = "2001:db8::2".parse().unwrap();
        for key in [24usize, 64] {
            b[key..key + 16].copy_from_slice(&crate::wire::PfAddr::from_ip(a).0);
            b[key + 16..key + 32].copy_from_slice(&crate::wire::PfAddr::from_ip(z).0);
            b[key + 32..key + 34].copy_from_slice(&49152u16.to_be_bytes());
            b[key + 34..key + 36].copy_from_slice(&443u16.to_be_bytes());
            b[key + 38] = 24; // key af
        }
        for (peer, seq) in [(104usize, 1000u32), (136, 5000)] {
            b[peer] = 0;
            b[peer + 1] = 1; // PFSS_TIMESTAMP
            b[peer + 2] = 64; // ttl
            b[peer + 3] = 1; // scrub valid
            b[peer + 4..peer + 8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
            b[peer + 8..peer + 12].copy_from_slice(&seq.to_be_bytes());
            b[peer + 12..peer + 16].copy_from_slice(&(seq + 65535).to_be_bytes());
            b[peer + 20..peer + 22].copy_from_slice(&65535u16.to_be_bytes());
            b[peer + 22..peer + 24].copy_from_slice(&1440u16.to_be_bytes());
            b[peer + 24] = 4; // ESTABLISHED
            b[peer + 25] = 0x87;
        }
        let gw: IpAddr = "2001:db8::fe".parse().unwrap();
        b[168..184].copy_from_slice(&crate::wire::PfAddr::from_ip(gw).0);
        b[184..188].copy_from_slice(&7u32.to_be_bytes()); // rule
        b[188..192].copy_from_slice(&u32::MAX.to_be_bytes()); // anchor: none
        b[192..196].copy_from_slice(&u32::MAX.to_be_bytes()); // nat_rule: none
        b[196..200].copy_from_slice(&30u32.to_be_bytes()); // creation
        b[200..204].copy_from_slice(&86370u32.to_be_bytes()); // expire
        b[204..212].copy_from_slice(&10u64.to_be_bytes());
        b[212..220].copy_from_slice(&8u64.to_be_bytes());
        b[220..228].copy_from_slice(&1200u64.to_be_bytes());
        b[228..236].copy_from_slice(&900u64.to_be_bytes());
        b[236..240].copy_from_slice(&0xcafe_f00du32.to_be_bytes()); // creatorid
        b[240..244].copy_from_slice(&(-1i32).to_be_bytes()); // rtableid wire
        b[244..248].copy_from_slice(&(-1i32).to_be_bytes()); // rtableid stack
        b[248..250].copy_from_slice(&1400u16.to_be_bytes()); // max_mss
        b[250] = 24; // af
        b[251] = 6; // tcp
        b[252] = 1; // in
        b[253] = 0; // log
        b[254] = 1; // route-to
        b[255] = 2; // tcp.established
        b[256] = 0; // sync_flags
        b[258] = 5; // min_ttl
        b[259] = 0x10; // set_tos
        b[260..262].copy_from_slice(&(0x0040u16 | 0x0200).to_be_bytes()); // SETTOS|SETPRIO
        b[262] = 3;
        b[263] = 6;
        b
    }

    #[test]
    fn decodes_an_openbsd_ipv6_route_to_state() {
        let r = StateOpenBsdRepr::parse_bytes(&openbsd_bytes()).unwrap();
        r.check(Dialect::OpenBsd).unwrap();
        let s = State::from_openbsd(&r).unwrap();
        assert_eq!(s.wire.af, AddressFamily::Inet6);
        assert_eq!(s.stack.af, AddressFamily::Inet6);
        assert_eq!(s.wire.proto, Protocol::Tcp);
        assert_eq!(s.wire.addr[0], "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(s.wire.port, [49152, 443]);
        assert_eq!(s.rt, RouteType::RouteTo);
        assert_eq!(s.rt_addr, Some("2001:db8::fe".parse().unwrap()));
        assert_eq!(s.src.state, PeerState::Tcp(TcpState::Established));
        assert_eq!(s.src.scrub.unwrap().ts_mod, 0xdead_beef);
        assert_eq!(s.rule, Some(7));
        assert_eq!(s.anchor, None);
        assert_eq!(s.timeout, Timeout::TcpEstablished);
        assert_eq!(s.rtableid, None);
        assert!(s
            .state_flags
            .contains(StateFlags::SETTOS | StateFlags::SETPRIO));
        assert_eq!(s.ifname.to_string(), "em0");
    }

    #[test]
    fn openbsd_to_1400_and_back_keeps_what_both_carry() {
        let original = StateOpenBsdRepr::parse_bytes(&openbsd_bytes()).unwrap();
        let s = State::from_openbsd(&original).unwrap();

        let (r1400, lost) = s.to_freebsd_1400();
        assert!(lost.is_empty(), "lost {lost}");
        r1400.check(Dialect::FreeBsd1400).unwrap();
        assert_eq!(r1400.af, 28, "AF_INET6 is 28 on FreeBSD");
        assert_eq!(r1400.rt, 2, "route-to is 2 on FreeBSD");
        assert_eq!(r1400.rtableid, -1);

        // Through the bytes, as a FreeBSD receiver would get them.
        let mut buf = [0u8; 277];
        r1400.emit_bytes(&mut buf);
        let back =
            State::from_record(&StateRecord::parse(RecordFormat::FreeBsd1400, &buf).unwrap())
                .unwrap();
        assert_eq!(back, s);

        let (again, lost) = back.to_openbsd();
        assert!(lost.is_empty(), "lost {lost}");
        assert_eq!(again, original);
        let mut out = [0xa5u8; 264];
        again.emit_bytes(&mut out);
        assert_eq!(out, openbsd_bytes());
    }

    #[test]
    fn openbsd_only_fields_are_reported_going_to_freebsd() {
        let mut r = StateOpenBsdRepr::parse_bytes(&openbsd_bytes()).unwrap();
        r.key[0].rdomain = 3;
        r.rtableid = [-1, 5]; // inbound: the stack slot is the rule's table
        r.state_flags |= 0x0400; // INP_UNLINKED
        let s = State::from_openbsd(&r).unwrap();
        assert_eq!(s.rtableid, Some(5));
        assert_eq!(s.reply_rtableid, None);
        let (r1400, lost) = s.to_freebsd_1400();
        assert_eq!(
            r1400.rtableid, 5,
            "the forward table is FreeBSD's one table"
        );
        assert_eq!(lost.to_string(), "rdomain, state_flags");

        // OpenBSD's reply-direction table has no FreeBSD field.
        r.rtableid = [2, 5];
        let (_, lost) = State::from_openbsd(&r).unwrap().to_freebsd_1500();
        assert!(lost.contains(StateField::Rtableid));
    }

    #[test]
    fn outbound_states_keep_the_rule_table_in_the_wire_slot() {
        let mut r = StateOpenBsdRepr::parse_bytes(&openbsd_bytes()).unwrap();
        r.direction = 2;
        r.rtableid = [4, -1];
        let s = State::from_openbsd(&r).unwrap();
        assert_eq!((s.rtableid, s.reply_rtableid), (Some(4), None));
        assert_eq!(s.to_openbsd().0.rtableid, [4, -1]);
    }

    #[test]
    fn key_family_zero_means_the_state_family() {
        let mut r = StateOpenBsdRepr::parse_bytes(&openbsd_bytes()).unwrap();
        r.key[0].af = 0;
        r.key[1].af = 0;
        let s = State::from_openbsd(&r).unwrap();
        assert_eq!(s.wire.af, AddressFamily::Inet6);
        assert_eq!(s.stack.af, AddressFamily::Inet6);
        // Sent back explicitly.
        assert_eq!(s.to_openbsd().0.key[1].af, 24);
    }

    #[test]
    fn af_to_implies_the_translated_icmp_protocol() {
        let mut r = StateOpenBsdRepr::parse_bytes(&openbsd_bytes()).unwrap();
        r.af = 2;
        r.key[0].af = 2;
        r.key[0].addr = [
            crate::wire::PfAddr::from_v4("192.0.2.1".parse().unwrap()),
            crate::wire::PfAddr::from_v4("192.0.2.2".parse().unwrap()),
        ];
        r.proto = 1;
        r.src.state = 1;
        r.dst.state = 0;
        r.rt = 0;
        r.rt_addr = crate::wire::PfAddr::ZERO;
        let s = State::from_openbsd(&r).unwrap();
        assert_eq!(s.wire.proto, Protocol::Icmp);
        assert_eq!(s.stack.proto, Protocol::Icmpv6);
        assert_eq!(s.stack.af, AddressFamily::Inet6);
        assert_eq!(s.rt_addr, None);
        // 1500 carries both; 1400 has one family and protocol.
        assert!(s.to_freebsd_1500().1.is_empty());
        let (r1400, lost) = s.to_freebsd_1400();
        assert_eq!((r1400.af, r1400.proto), (2, 1));
        assert_eq!(lost.to_string(), "stack_af, stack_proto, stack_key");
    }

    #[test]
    fn refuses_values_the_model_cannot_hold() {
        let good = StateOpenBsdRepr::parse_bytes(&openbsd_bytes()).unwrap();
        type Spoil = fn(&mut StateOpenBsdRepr);
        let cases: [(Spoil, &str); 6] = [
            (|r| r.af = 28, "af"),
            (|r| r.key[1].af = 10, "key[1].af"),
            (|r| r.direction = 3, "direction"),
            (|r| r.timeout = 25, "timeout"),
            (|r| r.rt = 4, "rt"),
            (|r| r.dst.state = 13, "dst.state"),
        ];
        for (spoil, field) in cases {
            let mut r = good;
            spoil(&mut r);
            let err = State::from_openbsd(&r).unwrap_err();
            assert_eq!(err.field(), field);
            assert_eq!(err.counter(), crate::wire::Counter::Badval);
        }
        let mut r = good;
        r.rtableid[0] = -2;
        assert_eq!(
            State::from_openbsd(&r).unwrap_err(),
            StateError::Rtableid(-2)
        );
    }

    #[test]
    fn sctp_timeouts_become_generic_ones() {
        let s = State {
            timeout: Timeout::SctpEstablished,
            ..State::default()
        };
        let (r, lost) = s.to_openbsd();
        assert_eq!(r.timeout, Timeout::OtherMultiple.number());
        assert_eq!(lost.to_string(), "timeout");
        r.check(Dialect::OpenBsd).unwrap();
    }
}
