//! Property tests: every wire `Repr` survives emit then parse, and emit writes exactly its
//! structure; every neutral `State` survives each record format but for the fields the
//! conversion reports lost, and converts to records the receiving kernels accept.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::array::uniform;
use proptest::prelude::*;

use pfsyncd::state::{
    lossy_fields, AddressFamily, Direction, Peer, PeerState, Protocol, Scrub, State, StateFlags,
    StateKey, Timeout,
};
use pfsyncd::wire::header::{self, HeaderRepr};
use pfsyncd::wire::msg::{
    bus, clr, key_freebsd, key_openbsd, peer, state_1301, state_1400, state_1500, state_openbsd,
    state_ref, tdb_freebsd, tdb_openbsd, upd_c, BusRepr, ClrRepr, KeyFreeBsdRepr, KeyOpenBsdRepr,
    PeerRepr, State1301Repr, State1400Repr, State1500Repr, StateOpenBsdRepr, StateRecord,
    StateRefRepr, TdbFreeBsdRepr, TdbOpenBsdRepr, UpdCRepr,
};
use pfsyncd::wire::subheader::{self, SubheaderRepr};
use pfsyncd::wire::{Action, Dialect, IfName, Name, PfAddr, RecordFormat, RouteType};

// Case counts: the wire properties are cheap; the state properties convert through all
// four formats. Together they stay well under the time budget of a debug build.
const WIRE_CASES: u32 = 1024;
const STATE_CASES: u32 = 1024;

// ---------------------------------------------------------------------------------------
// Strategies for the wire representations: every field any value.

fn name<const N: usize>() -> impl Strategy<Value = Name<N>> {
    any::<[u8; N]>().prop_map(Name)
}

fn pf_addr() -> impl Strategy<Value = PfAddr> {
    any::<[u8; 16]>().prop_map(PfAddr)
}

fn header_repr() -> impl Strategy<Value = HeaderRepr> {
    (any::<u8>(), any::<u16>(), any::<[u8; 16]>()).prop_map(|(version, len, pfcksum)| HeaderRepr {
        version,
        len,
        pfcksum,
    })
}

fn subheader_repr() -> impl Strategy<Value = SubheaderRepr> {
    (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(action, len, count)| SubheaderRepr {
        action,
        len,
        count,
    })
}

fn clr_repr() -> impl Strategy<Value = ClrRepr> {
    (name(), any::<u32>()).prop_map(|(ifname, creatorid)| ClrRepr { ifname, creatorid })
}

fn state_ref_repr() -> impl Strategy<Value = StateRefRepr> {
    (any::<u64>(), any::<u32>()).prop_map(|(id, creatorid)| StateRefRepr { id, creatorid })
}

fn bus_repr() -> impl Strategy<Value = BusRepr> {
    (any::<u32>(), any::<u32>(), any::<u8>()).prop_map(|(creatorid, endtime, status)| BusRepr {
        creatorid,
        endtime,
        status,
    })
}

fn tdb_openbsd_repr() -> impl Strategy<Value = TdbOpenBsdRepr> {
    (
        any::<u32>(),
        any::<[u8; 28]>(),
        any::<u64>(),
        any::<u64>(),
        any::<u8>(),
        any::<u8>(),
        any::<u16>(),
    )
        .prop_map(
            |(spi, dst, rpl, cur_bytes, sproto, updates, rdomain)| TdbOpenBsdRepr {
                spi,
                dst,
                rpl,
                cur_bytes,
                sproto,
                updates,
                rdomain,
            },
        )
}

fn tdb_freebsd_repr() -> impl Strategy<Value = TdbFreeBsdRepr> {
    (
        any::<u32>(),
        any::<[u8; 28]>(),
        any::<u32>(),
        any::<u64>(),
        any::<u8>(),
        any::<u8>(),
    )
        .prop_map(
            |(spi, dst, rpl, cur_bytes, sproto, updates)| TdbFreeBsdRepr {
                spi,
                dst,
                rpl,
                cur_bytes,
                sproto,
                updates,
            },
        )
}

fn peer_repr() -> impl Strategy<Value = PeerRepr> {
    (
        (any::<u16>(), any::<u8>(), any::<u8>(), any::<u32>()),
        (any::<u32>(), any::<u32>(), any::<u32>()),
        (any::<u16>(), any::<u16>(), any::<u8>(), any::<u8>()),
    )
        .prop_map(
            |(
                (pfss_flags, pfss_ttl, scrub_flag, pfss_ts_mod),
                (seqlo, seqhi, seqdiff),
                (max_win, mss, state, wscale),
            )| PeerRepr {
                pfss_flags,
                pfss_ttl,
                scrub_flag,
                pfss_ts_mod,
                seqlo,
                seqhi,
                seqdiff,
                max_win,
                mss,
                state,
                wscale,
            },
        )
}

fn upd_c_repr() -> impl Strategy<Value = UpdCRepr> {
    (
        any::<u64>(),
        peer_repr(),
        peer_repr(),
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        any::<u8>(),
    )
        .prop_map(
            |(id, src, dst, creatorid, expire, timeout, state_flags)| UpdCRepr {
                id,
                src,
                dst,
                creatorid,
                expire,
                timeout,
                state_flags,
            },
        )
}

fn key_openbsd_repr() -> impl Strategy<Value = KeyOpenBsdRepr> {
    (
        uniform(pf_addr()),
        any::<[u16; 2]>(),
        any::<u16>(),
        any::<u8>(),
    )
        .prop_map(|(addr, port, rdomain, af)| KeyOpenBsdRepr {
            addr,
            port,
            rdomain,
            af,
        })
}

fn key_freebsd_repr() -> impl Strategy<Value = KeyFreeBsdRepr> {
    (uniform(pf_addr()), any::<[u16; 2]>()).prop_map(|(addr, port)| KeyFreeBsdRepr { addr, port })
}

/// The fields the four state records share: id, ifname, src, dst, rt_addr, rule, anchor,
/// nat_rule, creation, expire, packets, bytes, creatorid.
type CommonFields = (
    (u64, IfName, PeerRepr, PeerRepr, PfAddr, u32, u32),
    (u32, u32, u32, [u64; 2], [u64; 2], u32),
);

fn common_fields() -> impl Strategy<Value = CommonFields> {
    (
        (
            any::<u64>(),
            name(),
            peer_repr(),
            peer_repr(),
            pf_addr(),
            any::<u32>(),
            any::<u32>(),
        ),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<[u64; 2]>(),
            any::<[u64; 2]>(),
            any::<u32>(),
        ),
    )
}

fn state_openbsd_repr() -> impl Strategy<Value = StateOpenBsdRepr> {
    (
        common_fields(),
        uniform(key_openbsd_repr()),
        (
            any::<[i32; 2]>(),
            any::<u16>(),
            any::<u16>(),
            any::<[u8; 2]>(),
        ),
        any::<[u8; 10]>(),
    )
        .prop_map(
            |(
                (
                    (id, ifname, src, dst, rt_addr, rule, anchor),
                    (nat_rule, creation, expire, packets, bytes, creatorid),
                ),
                key,
                (rtableid, max_mss, state_flags, set_prio),
                b,
            )| StateOpenBsdRepr {
                id,
                ifname,
                key,
                src,
                dst,
                rt_addr,
                rule,
                anchor,
                nat_rule,
                creation,
                expire,
                packets,
                bytes,
                creatorid,
                rtableid,
                max_mss,
                af: b[0],
                proto: b[1],
                direction: b[2],
                log: b[3],
                rt: b[4],
                timeout: b[5],
                sync_flags: b[6],
                updates: b[7],
                min_ttl: b[8],
                set_tos: b[9],
                state_flags,
                set_prio,
            },
        )
}

fn state_1301_repr() -> impl Strategy<Value = State1301Repr> {
    (
        common_fields(),
        uniform(key_freebsd_repr()),
        any::<[u8; 8]>(),
    )
        .prop_map(
            |(
                (
                    (id, ifname, src, dst, rt_addr, rule, anchor),
                    (nat_rule, creation, expire, packets, bytes, creatorid),
                ),
                key,
                b,
            )| State1301Repr {
                id,
                ifname,
                key,
                src,
                dst,
                rt_addr,
                rule,
                anchor,
                nat_rule,
                creation,
                expire,
                packets,
                bytes,
                creatorid,
                af: b[0],
                proto: b[1],
                direction: b[2],
                log: b[3],
                state_flags: b[4],
                timeout: b[5],
                sync_flags: b[6],
                updates: b[7],
            },
        )
}

fn state_1400_repr() -> impl Strategy<Value = State1400Repr> {
    (
        common_fields(),
        uniform(key_freebsd_repr()),
        (
            any::<u16>(),
            any::<[u16; 4]>(),
            any::<i32>(),
            any::<u16>(),
            any::<[u8; 2]>(),
        ),
        any::<[u8; 10]>(),
        name(),
    )
        .prop_map(
            |(
                (
                    (id, ifname, src, dst, rt_addr, rule, anchor),
                    (nat_rule, creation, expire, packets, bytes, creatorid),
                ),
                key,
                (state_flags, queues, rtableid, max_mss, set_prio),
                b,
                rt_ifname,
            )| State1400Repr {
                id,
                ifname,
                key,
                src,
                dst,
                rt_addr,
                rule,
                anchor,
                nat_rule,
                creation,
                expire,
                packets,
                bytes,
                creatorid,
                af: b[0],
                proto: b[1],
                direction: b[2],
                state_flags,
                log: b[3],
                timeout: b[4],
                sync_flags: b[5],
                updates: b[6],
                qid: queues[0],
                pqid: queues[1],
                dnpipe: queues[2],
                dnrpipe: queues[3],
                rtableid,
                min_ttl: b[7],
                set_tos: b[8],
                max_mss,
                set_prio,
                rt: b[9],
                rt_ifname,
            },
        )
}

fn state_1500_repr() -> impl Strategy<Value = State1500Repr> {
    (
        common_fields(),
        uniform(key_freebsd_repr()),
        (name(), name(), name()),
        (
            any::<i32>(),
            any::<u16>(),
            any::<[u16; 4]>(),
            any::<u16>(),
            any::<[u8; 2]>(),
        ),
        any::<[u8; 11]>(),
    )
        .prop_map(
            |(
                (
                    (id, ifname, src, dst, rt_addr, rule, anchor),
                    (nat_rule, creation, expire, packets, bytes, creatorid),
                ),
                key,
                (tagname, rt_ifname, orig_ifname),
                (rtableid, state_flags, queues, max_mss, set_prio),
                b,
            )| State1500Repr {
                id,
                ifname,
                key,
                src,
                dst,
                rt_addr,
                rule,
                anchor,
                nat_rule,
                creation,
                expire,
                packets,
                bytes,
                creatorid,
                tagname,
                rt_ifname,
                orig_ifname,
                rtableid,
                state_flags,
                qid: queues[0],
                pqid: queues[1],
                dnpipe: queues[2],
                dnrpipe: queues[3],
                max_mss,
                wire_af: b[0],
                stack_af: b[1],
                rt_af: b[2],
                wire_proto: b[3],
                stack_proto: b[4],
                log: b[5],
                timeout: b[6],
                direction: b[7],
                rt: b[8],
                min_ttl: b[9],
                set_tos: b[10],
                set_prio,
            },
        )
}

/// Emits `x` into buffers larger than `size` filled with two different patterns: every
/// byte of the structure must be written (both buffers agree on it), none after it
/// touched, and parsing gives `x` back.
macro_rules! assert_round_trip {
    ($x:expr, $repr:ty, $size:expr) => {{
        let x: $repr = $x;
        assert_eq!(x.buffer_len(), $size);
        let mut a = [0xa5u8; $size + 16];
        let mut b = [0x5au8; $size + 16];
        x.emit_bytes(&mut a);
        x.emit_bytes(&mut b);
        prop_assert_eq!(
            &a[..$size],
            &b[..$size],
            "a byte of the structure was left unwritten"
        );
        prop_assert!(
            a[$size..].iter().all(|&v| v == 0xa5),
            "emit wrote past SIZE"
        );
        prop_assert!(
            b[$size..].iter().all(|&v| v == 0x5a),
            "emit wrote past SIZE"
        );
        prop_assert_eq!(<$repr>::parse_bytes(&a[..$size]).unwrap(), x);
        // A buffer one byte short is refused.
        prop_assert!(<$repr>::parse_bytes(&a[..$size - 1]).is_err());
    }};
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(WIRE_CASES))]

    #[test]
    fn header(x in header_repr()) { assert_round_trip!(x, HeaderRepr, header::SIZE); }

    #[test]
    fn subheader(x in subheader_repr()) { assert_round_trip!(x, SubheaderRepr, subheader::SIZE); }

    #[test]
    fn clr(x in clr_repr()) { assert_round_trip!(x, ClrRepr, clr::SIZE); }

    #[test]
    fn state_ref(x in state_ref_repr()) { assert_round_trip!(x, StateRefRepr, state_ref::SIZE); }

    #[test]
    fn upd_c(x in upd_c_repr()) { assert_round_trip!(x, UpdCRepr, upd_c::SIZE); }

    #[test]
    fn bus(x in bus_repr()) { assert_round_trip!(x, BusRepr, bus::SIZE); }

    #[test]
    fn tdb_openbsd(x in tdb_openbsd_repr()) {
        assert_round_trip!(x, TdbOpenBsdRepr, tdb_openbsd::SIZE);
    }

    #[test]
    fn tdb_freebsd(x in tdb_freebsd_repr()) {
        assert_round_trip!(x, TdbFreeBsdRepr, tdb_freebsd::SIZE);
    }

    #[test]
    fn peer(x in peer_repr()) { assert_round_trip!(x, PeerRepr, peer::SIZE); }

    #[test]
    fn key_openbsd(x in key_openbsd_repr()) {
        assert_round_trip!(x, KeyOpenBsdRepr, key_openbsd::SIZE);
    }

    #[test]
    fn key_freebsd(x in key_freebsd_repr()) {
        assert_round_trip!(x, KeyFreeBsdRepr, key_freebsd::SIZE);
    }

    #[test]
    fn state_openbsd(x in state_openbsd_repr()) {
        assert_round_trip!(x, StateOpenBsdRepr, state_openbsd::SIZE);
        assert_record_survives_its_own_format(StateRecord::OpenBsd(x))?;
    }

    #[test]
    fn state_1301(x in state_1301_repr()) {
        assert_round_trip!(x, State1301Repr, state_1301::SIZE);
        assert_record_survives_its_own_format(StateRecord::FreeBsd1301(x))?;
    }

    #[test]
    fn state_1400(x in state_1400_repr()) {
        assert_round_trip!(x, State1400Repr, state_1400::SIZE);
        assert_record_survives_its_own_format(StateRecord::FreeBsd1400(x))?;
    }

    #[test]
    fn state_1500(x in state_1500_repr()) {
        assert_round_trip!(x, State1500Repr, state_1500::SIZE);
        assert_record_survives_its_own_format(StateRecord::FreeBsd1500(x))?;
    }
}

/// A record its own kind of receiver accepts, once decoded, loses nothing when encoded
/// again in its format, and decodes to the same state.
fn assert_record_survives_its_own_format(record: StateRecord) -> Result<(), TestCaseError> {
    let format = record.format();
    let receiver = Dialect::ALL
        .into_iter()
        .find(|d| d.record_format() == format)
        .unwrap();
    if record.check(receiver).is_err() {
        return Ok(());
    }
    let Ok(state) = State::from_record(&record) else {
        return Ok(());
    };
    let (again, lost) = state.to_record(format);
    prop_assert!(lost.is_empty(), "{:?} lost {}", format, lost);
    prop_assert_eq!(State::from_record(&again).unwrap(), state);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Strategies for the neutral model: canonical states (see `lossy_fields`).

fn family() -> impl Strategy<Value = AddressFamily> {
    prop_oneof![Just(AddressFamily::Inet), Just(AddressFamily::Inet6)]
}

fn address(af: AddressFamily) -> BoxedStrategy<IpAddr> {
    match af {
        AddressFamily::Inet => any::<u32>()
            .prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
            .boxed(),
        AddressFamily::Inet6 => any::<u128>()
            .prop_map(|a| IpAddr::V6(Ipv6Addr::from(a)))
            .boxed(),
    }
}

fn any_address() -> impl Strategy<Value = IpAddr> {
    family().prop_flat_map(address)
}

/// Mostly the protocols pf treats specially, sometimes any number.
fn protocol() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        3 => prop::sample::select(vec![1u8, 6, 17, 58, 132]),
        1 => any::<u8>(),
    ]
    .prop_map(Protocol::from_number)
}

fn text_name<const N: usize>() -> impl Strategy<Value = Name<N>> {
    proptest::string::string_regex(&format!("[a-z0-9_.]{{0,{}}}", N - 1))
        .unwrap()
        .prop_map(|s| Name::new(&s).unwrap())
}

fn key(af: AddressFamily, proto: Protocol) -> impl Strategy<Value = StateKey> {
    (
        uniform(address(af)),
        any::<[u16; 2]>(),
        prop_oneof![Just(0u16), any::<u16>()],
    )
        .prop_map(move |(addr, port, rdomain)| StateKey {
            af,
            proto,
            addr,
            port,
            rdomain,
        })
}

fn state_peer(proto: Protocol) -> impl Strategy<Value = Peer> {
    (
        (any::<u32>(), any::<u32>(), any::<u32>()),
        (any::<u16>(), any::<u16>(), any::<u8>()),
        0u8..=12,
        proptest::option::of((any::<u16>(), any::<u8>(), any::<u32>())),
    )
        .prop_map(
            move |((seqlo, seqhi, seqdiff), (max_win, mss, wscale), state, scrub)| Peer {
                seqlo,
                seqhi,
                seqdiff,
                max_win,
                mss,
                wscale,
                state: PeerState::from_number(proto, state).unwrap(),
                scrub: scrub.map(|(flags, ttl, ts_mod)| Scrub { flags, ttl, ts_mod }),
            },
        )
}

fn rule_number() -> impl Strategy<Value = Option<u32>> {
    proptest::option::of(0..u32::MAX)
}

fn routing_table() -> impl Strategy<Value = Option<u32>> {
    proptest::option::of(0..=i32::MAX as u32)
}

/// The keys and peers, which depend on the families and protocol drawn first: af-to
/// states have a stack key of the other family, with ICMP translated.
fn connection() -> impl Strategy<Value = (StateKey, StateKey, Peer, Peer)> {
    (family(), prop::bool::weighted(0.25), protocol()).prop_flat_map(|(wire_af, af_to, proto)| {
        let stack_af = match (af_to, wire_af) {
            (false, af) => af,
            (true, AddressFamily::Inet) => AddressFamily::Inet6,
            (true, AddressFamily::Inet6) => AddressFamily::Inet,
        };
        let stack_proto = if af_to {
            proto.across_families()
        } else {
            proto
        };
        (
            key(wire_af, proto),
            key(stack_af, stack_proto),
            state_peer(proto),
            state_peer(proto),
        )
    })
}

fn route_type() -> impl Strategy<Value = RouteType> {
    prop::sample::select(vec![
        RouteType::None,
        RouteType::FastRoute,
        RouteType::RouteTo,
        RouteType::DupTo,
        RouteType::ReplyTo,
    ])
}

fn state() -> impl Strategy<Value = State> {
    (
        (
            any::<u64>(),
            any::<u32>(),
            text_name(),
            text_name(),
            connection(),
        ),
        (
            prop::sample::select(vec![Direction::InOut, Direction::In, Direction::Out]),
            route_type(),
            proptest::option::of(any_address()),
            text_name(),
            (rule_number(), rule_number(), rule_number()),
        ),
        (
            any::<u32>(),
            any::<u32>(),
            any::<[u64; 2]>(),
            any::<[u64; 2]>(),
            any::<u8>(),
            any::<u16>(),
            0u8..25,
            any::<u8>(),
        ),
        (
            routing_table(),
            routing_table(),
            any::<[u16; 4]>(),
            any::<[u8; 2]>(),
            any::<u16>(),
            any::<[u8; 2]>(),
            text_name::<64>(),
        ),
    )
        .prop_map(
            |(
                (id, creatorid, ifname, orig_ifname, (wire, stack, src, dst)),
                (direction, rt, rt_addr, rt_ifname, (rule, anchor, nat_rule)),
                (age_secs, expire_secs, packets, bytes, log, flags, timeout, sync_flags),
                (rtableid, reply_rtableid, queues, ttl_tos, max_mss, set_prio, tagname),
            )| State {
                id,
                creatorid,
                ifname,
                orig_ifname,
                wire,
                stack,
                src,
                dst,
                direction,
                rt,
                rt_addr,
                rt_ifname,
                rule,
                anchor,
                nat_rule,
                age_secs,
                expire_secs,
                packets,
                bytes,
                log,
                state_flags: StateFlags::from_bits_truncate(flags),
                timeout: Timeout::from_number(timeout).unwrap(),
                sync_flags,
                rtableid,
                reply_rtableid,
                qid: queues[0],
                pqid: queues[1],
                dnpipe: queues[2],
                dnrpipe: queues[3],
                min_ttl: ttl_tos[0],
                set_tos: ttl_tos[1],
                max_mss,
                set_prio,
                tagname,
            },
        )
}

const FORMATS: [RecordFormat; 4] = [
    RecordFormat::OpenBsd,
    RecordFormat::FreeBsd1301,
    RecordFormat::FreeBsd1400,
    RecordFormat::FreeBsd1500,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(STATE_CASES))]

    /// `from_record(to_record(s, f))` is `s` but for the fields reported lost, which are
    /// among those `f` may lose; the record goes through its bytes on the way.
    #[test]
    fn state_survives_each_format_but_for_what_it_reports(s in state()) {
        for format in FORMATS {
            let (record, lost) = s.to_record(format);
            prop_assert_eq!(record.format(), format);
            prop_assert!(
                lost.is_subset(lossy_fields(format)),
                "{:?} lost {}, may lose only {}", format, lost, lossy_fields(format)
            );
            let mut buf = vec![0u8; record.buffer_len()];
            record.emit_bytes(&mut buf);
            let parsed = StateRecord::parse(format, &buf).unwrap();
            prop_assert_eq!(parsed, record);
            let back = State::from_record(&parsed).unwrap();

            // `s` with the lost fields taken from `back` is `back`: nothing else moved.
            let mut expected = s;
            expected.take_fields(&back, lost);
            prop_assert_eq!(expected, back, "{:?}, lost {}", format, lost);
            // And each reported field did change.
            prop_assert_eq!(s.diff(&back), lost);
        }
    }

    /// A state converted for a dialect passes the value checks of every receiver that
    /// reads that record format.
    #[test]
    fn converted_records_pass_the_receivers_checks(s in state()) {
        for sender in Dialect::ALL {
            let format = sender.record_format();
            let (record, _) = s.to_record(format);
            record.check(sender).map_err(|e| TestCaseError::fail(format!("{sender}: {e}")))?;
            for receiver in Dialect::ALL {
                if receiver.action_number(Action::Ins(format)).is_some() {
                    record
                        .check(receiver)
                        .map_err(|e| TestCaseError::fail(format!("{sender} to {receiver}: {e}")))?;
                }
            }
        }
    }
}
