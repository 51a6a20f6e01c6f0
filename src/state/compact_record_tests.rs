use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::state::{PeerLevel, TcpState};
use crate::table::synth::Synth;
use crate::wire::{IfName, TagName};

fn one_batch(states: &[State]) -> Vec<u8> {
    let mut out = Vec::new();
    let n = encode_batch(states, usize::MAX, &mut out).unwrap();
    assert_eq!(n, states.len());
    out
}

/// Bytes per state of `states` sent in batches of at most `limit` bytes, after checking
/// that every batch gives back exactly its states.
fn bytes_per_state(states: &[State], limit: usize) -> f64 {
    let mut total = 0;
    let mut rest = states;
    while !rest.is_empty() {
        let mut out = Vec::new();
        let n = encode_batch(rest, limit, &mut out).unwrap();
        assert!(
            n > 0 && out.len() <= limit,
            "{n} states in {} bytes",
            out.len()
        );
        assert_eq!(decode_batch(&out).unwrap(), rest[..n]);
        total += out.len();
        rest = &rest[n..];
    }
    total as f64 / states.len() as f64
}

#[test]
fn synthetic_bulk_is_under_80_bytes_a_state() {
    let states = Synth::new(42, 0x0102_0304).states(20_000);
    // Payload room of a pfsync datagram at MTU 1500 and 9000 (IPv4 and pfsync headers
    // off), the sizes the bulk sends.
    for (limit, most) in [(1400, 80.0), (8900, 80.0)] {
        let per_state = bytes_per_state(&states, limit);
        eprintln!("compact records, batches of {limit} B: {per_state:.1} B/state");
        assert!(per_state <= most, "{per_state:.1} B/state at {limit}");
    }
}

#[test]
fn a_batch_stops_at_its_limit_and_the_rest_follows() {
    let states = Synth::new(1, 7).states(100);
    let mut out = vec![0xaa; 3];
    let n = encode_batch(&states, 600, &mut out).unwrap();
    assert!(n > 1 && n < 100, "{n}");
    assert!(out.len() - 3 <= 600);
    assert_eq!(decode_batch(&out[3..]).unwrap(), states[..n]);
    assert_eq!(
        encode_batch(&states, MAX_RECORD_BYTES, &mut out),
        Err(BatchLimitError {
            limit: MAX_RECORD_BYTES
        })
    );
    assert_eq!(encode_batch(&[], 600, &mut out), Ok(0));
}

/// A batch written a state at a time is `encode_batch`'s, byte for byte, and a state
/// that does not fit leaves the batch as it was, ready to be closed.
#[test]
fn a_batch_written_state_by_state_is_encode_batchs() {
    let states = Synth::new(9, 3).states(300);
    let mut rest = &states[..];
    while !rest.is_empty() {
        let mut whole = Vec::new();
        let n = encode_batch(rest, 1400, &mut whole).unwrap();
        let mut out = vec![0xee; 2];
        let mut writer = BatchWriter::new(1400, &mut out).unwrap();
        assert!(writer.is_empty());
        let mut taken = 0;
        for s in rest {
            if !writer.push(s, &mut out) {
                break;
            }
            taken += 1;
        }
        assert_eq!((taken, writer.len()), (n, n));
        assert_eq!(out[2..], whole[..]);
        rest = &rest[n..];
    }
    let mut out = Vec::new();
    assert!(BatchWriter::new(MAX_RECORD_BYTES, &mut out).is_err());
}

/// A bulk's states batched from their lone records are the batch of the states, and
/// bytes that are no lone record are refused, the batch left as it was.
#[test]
fn a_bulk_batched_from_records_is_the_states_batch() {
    let states = Synth::new(11, 5).states(2000);
    let mut expected = Vec::new();
    let n = encode_batch(&states, 8900, &mut expected).unwrap();
    let mut out = Vec::new();
    let mut writer = BatchWriter::new(8900, &mut out).unwrap();
    let mut record = Vec::new();
    for (i, s) in states[..n + 1].iter().enumerate() {
        record.clear();
        encode_record(s, &mut record);
        let taken = writer.push_record(&record, 0, &mut out).unwrap();
        assert_eq!(taken, i < n, "state {i} of a batch of {n}");
    }
    assert_eq!(writer.len(), n);
    assert_eq!(out, expected);
    let before = out.clone();
    for cut in 0..record.len() {
        assert!(
            writer.push_record(&record[..cut], 0, &mut out).is_err(),
            "cut at {cut}"
        );
        assert_eq!(out, before);
    }
}

/// A record read into a state that held another gives the record's state alone.
#[test]
fn a_record_read_over_another_state_is_that_record_alone() {
    let mut synth = Synth::new(4, 4);
    let (a, b) = (synth.state(), widest_state());
    let mut bytes = Vec::new();
    encode_record(&a, &mut bytes);
    let mut s = b;
    decode_record_into(&bytes, &mut s).unwrap();
    assert_eq!(s, a);
    assert!(decode_record_into(&bytes[..bytes.len() - 1], &mut s).is_err());
}

/// A state with every field at its widest: the bound every batch limit relies on.
pub(super) fn widest_state() -> State {
    let v6 = IpAddr::V6(Ipv6Addr::from(u128::MAX));
    let key = |af| StateKey {
        af,
        proto: Protocol::Other(255),
        addr: [v6, IpAddr::V4(Ipv4Addr::BROADCAST)],
        port: [u16::MAX; 2],
        rdomain: u16::MAX,
    };
    let peer = Peer {
        seqlo: u32::MAX,
        seqhi: u32::MAX - 1,
        seqdiff: u32::MAX,
        max_win: u16::MAX,
        mss: u16::MAX,
        wscale: u8::MAX,
        state: PeerState::Level(PeerLevel::new(PeerLevel::MAX).unwrap()),
        scrub: Some(Scrub {
            flags: u16::MAX,
            ttl: u8::MAX,
            ts_mod: u32::MAX,
        }),
    };
    State {
        id: 1 << 63,
        creatorid: u32::MAX,
        ifname: Name([0xff; 16]),
        orig_ifname: Name([0xfe; 16]),
        wire: key(AddressFamily::Inet),
        stack: key(AddressFamily::Inet6),
        src: peer,
        dst: peer,
        direction: Direction::Out,
        rt: RouteType::ReplyTo,
        rt_addr: Some(v6),
        rt_ifname: Name([0xfd; 16]),
        rule: Some(u32::MAX - 1),
        anchor: Some(u32::MAX - 1),
        nat_rule: Some(u32::MAX - 1),
        age_secs: u32::MAX,
        expire_secs: u32::MAX,
        packets: [u64::MAX; 2],
        bytes: [u64::MAX; 2],
        log: u8::MAX,
        state_flags: StateFlags::from_bits(u16::MAX),
        timeout: *Timeout::ALL.last().unwrap(),
        sync_flags: u8::MAX,
        rtableid: Some(u32::MAX - 1),
        reply_rtableid: Some(u32::MAX - 1),
        qid: u16::MAX,
        pqid: u16::MAX,
        dnpipe: u16::MAX,
        dnrpipe: u16::MAX,
        min_ttl: u8::MAX,
        set_tos: u8::MAX,
        max_mss: u16::MAX,
        set_prio: [u8::MAX; 2],
        tagname: Name([0xfc; 64]),
    }
}

#[test]
fn the_widest_state_fits_the_record_bound() {
    let s = widest_state();
    let out = one_batch(&[s]);
    assert!(out.len() - 1 <= MAX_RECORD_BYTES, "{} bytes", out.len() - 1);
    assert_eq!(decode_batch(&out).unwrap(), [s]);
    // And after a default state (every group differs from the previous record).
    let out = one_batch(&[State::default(), s, State::default()]);
    assert_eq!(
        decode_batch(&out).unwrap(),
        [State::default(), s, State::default()]
    );
}

#[test]
fn rare_fields_round_trip() {
    let mut s = Synth::new(7, 9).state();
    s.stack.addr[0] = "2001:db8::9".parse().unwrap();
    s.stack.port = [1, 65535];
    s.rt = RouteType::ReplyTo;
    s.rt_addr = Some("192.0.2.1".parse().unwrap());
    s.rt_ifname = IfName::new("em3").unwrap();
    s.orig_ifname = IfName::new("vtnet0").unwrap();
    s.tagname = TagName::new("a-tag").unwrap();
    // Bytes after a NUL are kept too.
    s.tagname.0[40] = b'x';
    let mut t = s;
    t.tagname = TagName::new("em3").unwrap();
    t.ifname = IfName::new("a-tag").unwrap();
    t.wire.addr[1] = "::1".parse().unwrap();
    let batch = [s, t, s, State::default()];
    assert_eq!(decode_batch(&one_batch(&batch)).unwrap(), batch);
}

#[test]
fn foreign_bytes_are_refused_with_an_error() {
    assert_eq!(decode_batch(&[]), Err(CompactRecordError::Empty));
    assert_eq!(decode_batch(&[2, 0]), Err(CompactRecordError::Version(2)));
    assert_eq!(decode_batch(&[VERSION]), Ok(Vec::new()));
    let good = one_batch(&Synth::new(3, 3).states(5));
    let mut refused = 0;
    for cut in 1..good.len() {
        // A cut on a record boundary is a shorter, valid batch; anywhere else an error.
        if decode_batch(&good[..cut]).is_err() {
            refused += 1;
        }
    }
    assert!(refused >= good.len() - 6, "{refused} of {}", good.len());
    // A mask bit nobody defined; a dictionary index never sent.
    assert!(matches!(
        decode_batch(&[VERSION, 0x80, 0x40]),
        Err(CompactRecordError::Invalid { field: "mask", .. })
    ));
    assert!(matches!(
        decode_batch(&[VERSION, 1, 2, 0x85]),
        Err(CompactRecordError::Invalid {
            field: "ifname",
            ..
        })
    ));
}

fn arb_addr(af: AddressFamily) -> BoxedStrategy<IpAddr> {
    match af {
        AddressFamily::Inet => any::<u32>().prop_map(|a| IpAddr::V4(a.into())).boxed(),
        AddressFamily::Inet6 => any::<u128>().prop_map(|a| IpAddr::V6(a.into())).boxed(),
    }
}

fn arb_family() -> impl Strategy<Value = AddressFamily> {
    prop_oneof![Just(AddressFamily::Inet), Just(AddressFamily::Inet6)]
}

fn arb_key() -> impl Strategy<Value = StateKey> {
    (arb_family(), any::<u8>(), any::<[u16; 2]>(), any::<u16>()).prop_flat_map(
        |(af, proto, port, rdomain)| {
            // Now and then an address of the other family (the model allows it).
            let other = match af {
                AddressFamily::Inet => AddressFamily::Inet6,
                AddressFamily::Inet6 => AddressFamily::Inet,
            };
            (
                arb_addr(af),
                prop_oneof![4 => arb_addr(af), 1 => arb_addr(other)],
            )
                .prop_map(move |(a, b)| StateKey {
                    af,
                    proto: Protocol::from_number(proto),
                    addr: [a, b],
                    port,
                    rdomain,
                })
        },
    )
}

fn arb_name<const N: usize>() -> impl Strategy<Value = Name<N>> {
    prop_oneof![
        Just(Name([0; N])),
        "[a-z]{1,4}[0-9]".prop_map(|s| {
            let mut raw = [0; N];
            raw[..s.len()].copy_from_slice(s.as_bytes());
            Name(raw)
        }),
        vec(any::<u8>(), N).prop_map(|v| Name(v.try_into().unwrap())),
    ]
}

fn arb_peer(proto: Protocol) -> impl Strategy<Value = Peer> {
    (
        any::<(u32, u32, u32, u16, u16, u8)>(),
        0..=12u8,
        proptest::option::of(any::<(u16, u8, u32)>()),
        any::<bool>(),
    )
        .prop_map(
            move |((seqlo, seqhi, seqdiff, max_win, mss, wscale), n, scrub, max_win_is_window)| {
                let window = seqhi % 70_000;
                Peer {
                    seqlo,
                    seqhi: seqlo.wrapping_add(window),
                    seqdiff,
                    max_win: if max_win_is_window {
                        window as u16
                    } else {
                        max_win
                    },
                    mss,
                    wscale,
                    state: PeerState::from_number(proto, n).unwrap(),
                    scrub: scrub.map(|(flags, ttl, ts_mod)| Scrub { flags, ttl, ts_mod }),
                }
            },
        )
}

pub(super) fn arb_state() -> impl Strategy<Value = State> {
    (arb_key(), proptest::option::of(arb_key()))
        .prop_flat_map(|(wire, stack)| {
            (
                Just(wire),
                Just(stack.unwrap_or(wire)),
                arb_peer(wire.proto),
                arb_peer(wire.proto),
                (any::<u64>(), 0..4u32, arb_name::<16>(), arb_name::<16>()),
                (
                    0..3u8,
                    0..5u8,
                    proptest::option::of(arb_addr(AddressFamily::Inet6)),
                    arb_name::<16>(),
                    arb_name::<64>(),
                ),
                any::<([Option<u32>; 4], u32, u32, [u64; 4], u8, u16, u8)>(),
                (
                    0..Timeout::ALL.len(),
                    any::<([u16; 4], u8, u8, u16, [u8; 2])>(),
                ),
            )
        })
        .prop_map(|(wire, stack, src, dst, ids, route, numbers, tuning)| {
            let (id, creator, ifname, orig_ifname) = ids;
            let (direction, rt, rt_addr, rt_ifname, tagname) = route;
            let (rules, age, expire, counters, log, flags, sync_flags) = numbers;
            let (timeout, (queues, min_ttl, set_tos, max_mss, set_prio)) = tuning;
            State {
                id,
                creatorid: creator,
                ifname,
                orig_ifname,
                wire,
                stack,
                src,
                dst,
                direction: Direction::from_number(direction).unwrap(),
                rt: route_of(rt).unwrap(),
                rt_addr,
                rt_ifname,
                rule: rules[0].map(|r| r.min(u32::MAX - 1)),
                anchor: rules[1].map(|r| r.min(u32::MAX - 1)),
                nat_rule: rules[2].map(|r| r.min(u32::MAX - 1)),
                age_secs: age,
                expire_secs: expire,
                packets: [counters[0], counters[1]],
                bytes: [counters[2], counters[3]],
                log,
                state_flags: StateFlags::from_bits(flags),
                timeout: Timeout::ALL[timeout],
                sync_flags,
                rtableid: rules[3],
                reply_rtableid: rules[3].map(|r| r / 2),
                qid: queues[0],
                pqid: queues[1],
                dnpipe: queues[2],
                dnrpipe: queues[3],
                min_ttl,
                set_tos,
                max_mss,
                set_prio,
                tagname,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_batch_round_trips(states in vec(arb_state(), 0..12)) {
        let out = one_batch(&states);
        prop_assert_eq!(decode_batch(&out).unwrap(), states);
    }

    #[test]
    fn batches_cut_to_a_limit_round_trip(states in vec(arb_state(), 1..20), limit in 513..3000usize) {
        let mut rest = &states[..];
        while !rest.is_empty() {
            let mut out = Vec::new();
            let n = encode_batch(rest, limit, &mut out).unwrap();
            prop_assert!(n > 0 && out.len() <= limit);
            prop_assert_eq!(decode_batch(&out).unwrap(), &rest[..n]);
            rest = &rest[n..];
        }
    }

    #[test]
    fn records_batched_as_bytes_are_the_aged_states_batched(
        states in vec(arb_state(), 1..20),
        same_as_before in vec(any::<bool>(), 20),
        waited in prop_oneof![Just(0u32), 0..100_000u32, Just(u32::MAX)],
        limit in 513..3000usize,
    ) {
        // Neighbours alike in most groups, as a bulk's are, and unlike.
        let mut states = states;
        for i in 1..states.len() {
            if same_as_before[i] {
                states[i] = State { id: states[i].id, packets: states[i].packets, ..states[i - 1] };
            }
        }
        let aged: Vec<State> = states
            .iter()
            .map(|s| State {
                age_secs: s.age_secs.saturating_add(waited),
                expire_secs: s.expire_secs.saturating_sub(waited),
                ..*s
            })
            .collect();
        let (mut rest, mut aged_rest) = (&states[..], &aged[..]);
        while !rest.is_empty() {
            let mut expected = Vec::new();
            let n = encode_batch(aged_rest, limit, &mut expected).unwrap();
            let mut out = Vec::new();
            let mut writer = BatchWriter::new(limit, &mut out).unwrap();
            let mut record = Vec::new();
            for s in rest {
                record.clear();
                encode_record(s, &mut record);
                if !writer.push_record(&record, waited, &mut out).unwrap() {
                    break;
                }
            }
            prop_assert_eq!(writer.len(), n);
            prop_assert_eq!(&out, &expected);
            rest = &rest[n..];
            aged_rest = &aged_rest[n..];
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        let mut bytes = bytes;
        if let Some(b) = bytes.first_mut() {
            *b = VERSION;
        }
        let _ = decode_batch(&bytes);
    }

    #[test]
    fn edited_batches_never_panic(
        states in vec(arb_state(), 1..4),
        edits in vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut out = one_batch(&states);
        for (at, byte) in edits {
            let i = at.index(out.len() - 1) + 1;
            out[i] = byte;
        }
        let _ = decode_batch(&out);
    }
}

#[test]
fn tcp_states_of_every_stage_round_trip() {
    for n in 0..=12 {
        let mut s =
            Synth::new(n.into(), 1).state_of(crate::table::synth::Kind::Tcp, AddressFamily::Inet);
        s.src.state = PeerState::Tcp(TcpState::from_number(n).unwrap());
        assert_eq!(decode_batch(&one_batch(&[s])).unwrap(), [s]);
    }
}

#[test]
fn decoding_into_a_used_vector_replaces_its_states() {
    let states = Synth::new(21, 5).states(50);
    let mut kept = Synth::new(22, 6).states(70);
    decode_batch_into(&one_batch(&states[..30]), &mut kept).unwrap();
    assert_eq!(kept, states[..30]);
    decode_batch_into(&one_batch(&states[30..]), &mut kept).unwrap();
    assert_eq!(kept, states[30..]);
    let mut cut = one_batch(&states);
    cut.pop();
    assert!(decode_batch_into(&cut, &mut kept).is_err());
    assert!(decode_batch_into(&[2, 0], &mut kept).is_err());
    assert!(kept.is_empty());
}

/// The lone-record encoder as it was before it wrote through [`Sink`] (a vector's
/// pushes, a loop over the groups' tests, names cut by a byte-by-byte search), kept
/// as the reference the faster one must match byte for byte.
mod reference {
    use super::super::*;

    pub(super) fn encode_record(s: &State, out: &mut Vec<u8>) {
        Old {
            prev: State::default(),
        }
        .record(s, out);
    }

    struct Old {
        prev: State,
    }

    impl Old {
        fn record(&mut self, s: &State, out: &mut Vec<u8>) {
            let p = &self.prev;
            let mut mask = 0;
            let groups = [
                (s.ifname != p.ifname, IFNAME),
                (
                    s.wire.af != p.wire.af
                        || s.wire.proto != p.wire.proto
                        || s.direction != p.direction
                        || s.timeout != p.timeout,
                    SHAPE,
                ),
                (s.rule != p.rule, RULE),
                (s.stack != s.wire, STACK),
                (s.creatorid != p.creatorid, CREATOR),
                (
                    s.log != p.log
                        || s.sync_flags != p.sync_flags
                        || s.state_flags != p.state_flags,
                    FLAGS,
                ),
                (
                    s.rt != p.rt || s.rt_addr != p.rt_addr || s.rt_ifname != p.rt_ifname,
                    ROUTE,
                ),
                (
                    s.orig_ifname != p.orig_ifname || s.tagname != p.tagname,
                    NAMES,
                ),
                (
                    (s.qid, s.pqid, s.dnpipe, s.dnrpipe) != (p.qid, p.pqid, p.dnpipe, p.dnrpipe),
                    QUEUES,
                ),
                (
                    (s.anchor, s.nat_rule, s.rtableid, s.reply_rtableid)
                        != (p.anchor, p.nat_rule, p.rtableid, p.reply_rtableid),
                    RULE_REFS,
                ),
                (
                    (s.min_ttl, s.set_tos, s.max_mss, s.set_prio)
                        != (p.min_ttl, p.set_tos, p.max_mss, p.set_prio),
                    TUNING,
                ),
                (s.wire.rdomain != p.wire.rdomain, RDOMAIN),
                (
                    s.wire
                        .addr
                        .iter()
                        .any(|a| AddressFamily::of(a) != s.wire.af),
                    MIXED_FAMILIES,
                ),
            ];
            for (on, bit) in groups {
                if on {
                    mask |= bit;
                }
            }
            varint(out, u64::from(mask));
            varint(out, zigzag(s.id.wrapping_sub(p.id) as i64));
            for bit in GROUP_ORDER {
                if mask & bit != 0 {
                    self.group(bit, s, out);
                }
            }
            for a in s.wire.addr {
                if mask & MIXED_FAMILIES != 0 {
                    tagged_addr(out, a);
                } else {
                    bare_addr(out, a);
                }
            }
            for port in s.wire.port {
                out.extend_from_slice(&port.to_le_bytes());
            }
            varint(out, u64::from(s.age_secs));
            varint(out, u64::from(s.expire_secs));
            for v in s.packets.iter().chain(&s.bytes) {
                varint(out, *v);
            }
            // Both peer states are at most 12 (PeerLevel::MAX, TcpState::ProxyDst).
            out.push(s.src.state.number() << 4 | s.dst.state.number());
            peer(out, &s.src);
            peer(out, &s.dst);
        }

        /// The bytes of group `bit` (one of [`GROUP_ORDER`]) of `s`.
        fn group(&mut self, bit: u32, s: &State, out: &mut Vec<u8>) {
            match bit {
                IFNAME => self.name(out, &s.ifname.0),
                SHAPE => {
                    let (proto_code, proto_extra) = proto_code(s.wire.proto);
                    let af = match s.wire.af {
                        AddressFamily::Inet => 0,
                        AddressFamily::Inet6 => 1,
                    };
                    out.push(af | s.direction.number() << 1 | proto_code << 3);
                    if let Some(n) = proto_extra {
                        out.push(n);
                    }
                    out.push(s.timeout.number());
                }
                RULE => option_u32(out, s.rule),
                STACK => stack(out, &s.wire, &s.stack),
                CREATOR => out.extend_from_slice(&s.creatorid.to_le_bytes()),
                FLAGS => {
                    out.extend_from_slice(&[s.log, s.sync_flags]);
                    varint(out, u64::from(s.state_flags.bits()));
                }
                ROUTE => {
                    out.push(route_number(s.rt));
                    match s.rt_addr {
                        None => out.push(0),
                        Some(a) => tagged_addr(out, a),
                    }
                    self.name(out, &s.rt_ifname.0);
                }
                NAMES => {
                    self.name(out, &s.orig_ifname.0);
                    self.name(out, &s.tagname.0);
                }
                QUEUES => {
                    for v in [s.qid, s.pqid, s.dnpipe, s.dnrpipe] {
                        varint(out, u64::from(v));
                    }
                }
                RULE_REFS => {
                    for v in [s.anchor, s.nat_rule, s.rtableid, s.reply_rtableid] {
                        option_u32(out, v);
                    }
                }
                TUNING => {
                    out.extend_from_slice(&[s.min_ttl, s.set_tos, s.set_prio[0], s.set_prio[1]]);
                    varint(out, u64::from(s.max_mss));
                }
                RDOMAIN => varint(out, u64::from(s.wire.rdomain)),
                _ => unreachable!("GROUP_ORDER names every group"),
            }
        }

        /// A name by its used bytes (up to the last non-NUL, so bytes after a NUL are
        /// kept), or by its index if this batch sent it before.
        fn name(&mut self, out: &mut Vec<u8>, raw: &[u8]) {
            let used = &raw[..raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)];
            out.push(used.len() as u8);
            out.extend_from_slice(used);
        }
    }
}

fn lone_record(s: &State) -> Vec<u8> {
    let mut out = vec![0xee; 3];
    encode_record(s, &mut out);
    // Appended after what `out` held, which stays.
    assert_eq!(out[..3], [0xee; 3]);
    out.split_off(3)
}

fn reference_record(s: &State) -> Vec<u8> {
    let mut out = Vec::new();
    reference::encode_record(s, &mut out);
    out
}

#[test]
fn lone_records_are_the_reference_encoders_bytes() {
    let mut synth = Synth::new(5, 0x0102_0304);
    for s in synth
        .states(2000)
        .iter()
        .chain([&widest_state(), &State::default()])
    {
        assert_eq!(lone_record(s), reference_record(s), "{s:?}");
    }
}

#[test]
fn a_names_used_length_is_the_last_byte_not_nul() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [0, 1, 15, 16, 17, 32, 63, 64] {
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly NULs, some bytes set anywhere (also after a NUL).
            let raw: Vec<u8> = (0..len)
                .map(|i| {
                    if (x >> (i % 64)) & 7 == 0 {
                        (x >> 8) as u8 | 1
                    } else {
                        0
                    }
                })
                .collect();
            let want = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            assert_eq!(used_len(&raw), want, "{raw:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_lone_record_is_the_reference_encoders(s in arb_state()) {
        let record = lone_record(&s);
        prop_assert_eq!(&record, &reference_record(&s));
        prop_assert_eq!(decode_record(&record), Ok(s));
    }
}

/// LEB128 read a byte at a time, as the format defines it: the value, its length, and
/// whether its last byte is padding (no bit, after others).
fn varint_by_bytes(bytes: &[u8]) -> Option<(u64, usize, bool)> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(8) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1, i > 0 && b == 0));
        }
    }
    None
}

/// LEB128 of up to ten bytes (the tenth holding one bit), byte at a time; `None` if
/// cut short or too long.
fn varint_of_any_length(bytes: &[u8]) -> Option<(u64, usize, bool)> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        if i == 9 && b & 0x7f > 1 {
            return None;
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1, i > 0 && b & 0x7f == 0));
        }
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The eight-byte reader against the byte-at-a-time definition, on any bytes:
    /// every length, padded or not, with bytes after the varint.
    #[test]
    fn a_varint_of_eight_is_read_as_byte_by_byte(
        bytes in vec(any::<u8>(), 0..12),
        ends_at in 0..11usize,
        padded in any::<bool>(),
    ) {
        let mut bytes = bytes;
        // Shaped into a varint ending at `ends_at` (most random bytes end at once).
        if ends_at < bytes.len() {
            for b in &mut bytes[..ends_at] {
                *b |= 0x80;
            }
            bytes[ends_at] &= 0x7f;
            if padded {
                bytes[ends_at] = 0;
            }
        }
        let expected = if bytes.len() >= 8 { varint_by_bytes(&bytes) } else { None };
        let checked = varint_of_eight_checked(&bytes)
            .map(|(v, len, last_empty)| (v, len, len > 1 && last_empty));
        prop_assert_eq!(checked, expected);
        prop_assert_eq!(varint_of_eight(&bytes), expected.map(|(v, len, _)| (v, len)));
        // The reader's view, of any length (its two- and three-byte reads need fewer
        // than eight): the same value and length, padding marked as odd; an error for
        // a cut or overlong varint.
        let mut r = Reader {
            bytes: &bytes,
            at: 0,
            names: Vec::new(),
            remember_names: false,
            odd_varint: false,
        };
        match varint_of_any_length(&bytes) {
            Some((v, len, padded)) => {
                prop_assert_eq!(r.varint("test"), Ok(v));
                prop_assert_eq!((r.at, r.odd_varint), (len, padded));
            }
            None => prop_assert!(r.varint("test").is_err()),
        }
    }
}
