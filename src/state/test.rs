//! Tests across formats: the translation matrix over random states, and the small types.

use super::*;
use crate::wire::msg::StateRecord;

/// A small deterministic generator (xorshift64*), so the matrix is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn u8(&mut self) -> u8 {
        self.next() as u8
    }
    fn u16(&mut self) -> u16 {
        self.next() as u16
    }
    fn u32(&mut self) -> u32 {
        self.next() as u32
    }
    fn chance(&mut self) -> bool {
        self.below(2) == 0
    }
    fn maybe<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        if self.chance() {
            Some(f(self))
        } else {
            None
        }
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
    fn family(&mut self) -> AddressFamily {
        self.pick(&[AddressFamily::Inet, AddressFamily::Inet6])
    }
    fn addr(&mut self, af: AddressFamily) -> IpAddr {
        match af {
            AddressFamily::Inet => IpAddr::V4(Ipv4Addr::from(self.u32())),
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::from(
                u128::from(self.next()) << 64 | u128::from(self.next()),
            )),
        }
    }
    fn name<const N: usize>(&mut self) -> crate::wire::Name<N> {
        let len = self.below(N as u64) as usize;
        let text: String = (0..len)
            .map(|_| char::from(b'a' + (self.below(26) as u8)))
            .collect();
        crate::wire::Name::new(&text).unwrap()
    }
    fn protocol(&mut self) -> Protocol {
        let n = self.pick(&[1, 6, 17, 58, 132, 0, 47, 255]);
        Protocol::from_number(if n == 0 { self.u8() } else { n })
    }
    fn key(&mut self, af: AddressFamily, proto: Protocol) -> StateKey {
        StateKey {
            af,
            proto,
            addr: [self.addr(af), self.addr(af)],
            port: [self.u16(), self.u16()],
            rdomain: if self.chance() { 0 } else { self.u16() },
        }
    }
    fn peer(&mut self, proto: Protocol) -> Peer {
        let state = PeerState::from_number(proto, self.below(13) as u8).unwrap();
        Peer {
            seqlo: self.u32(),
            seqhi: self.u32(),
            seqdiff: self.u32(),
            max_win: self.u16(),
            mss: self.u16(),
            wscale: self.u8(),
            state,
            scrub: self.maybe(|r| Scrub {
                flags: r.u16(),
                ttl: r.u8(),
                ts_mod: r.u32(),
            }),
        }
    }
    fn rule(&mut self) -> Option<u32> {
        self.maybe(|r| r.u32() % u32::MAX)
    }
    fn rtable(&mut self) -> Option<u32> {
        self.maybe(|r| r.u32() >> 1)
    }

    /// A canonical state (see `lossy_fields`), with each field random.
    fn state(&mut self) -> State {
        let wire_af = self.family();
        let stack_af = if self.below(4) == 0 {
            self.family()
        } else {
            wire_af
        };
        let proto = self.protocol();
        let stack_proto = if stack_af == wire_af {
            proto
        } else {
            proto.across_families()
        };
        State {
            id: self.next(),
            creatorid: self.u32(),
            ifname: self.name(),
            orig_ifname: self.name(),
            wire: self.key(wire_af, proto),
            stack: self.key(stack_af, stack_proto),
            src: self.peer(proto),
            dst: self.peer(proto),
            direction: self.pick(&[Direction::InOut, Direction::In, Direction::Out]),
            rt: self.pick(&[
                RouteType::None,
                RouteType::FastRoute,
                RouteType::RouteTo,
                RouteType::DupTo,
                RouteType::ReplyTo,
            ]),
            rt_addr: self.maybe(|r| {
                let af = r.family();
                r.addr(af)
            }),
            rt_ifname: self.name(),
            rule: self.rule(),
            anchor: self.rule(),
            nat_rule: self.rule(),
            age_secs: self.u32(),
            expire_secs: self.u32(),
            packets: [self.next(), self.next()],
            bytes: [self.next(), self.next()],
            log: self.u8(),
            state_flags: StateFlags::from_bits_truncate(self.u16()),
            timeout: Timeout::from_number(self.below(25) as u8).unwrap(),
            sync_flags: self.u8(),
            rtableid: self.rtable(),
            reply_rtableid: self.rtable(),
            qid: self.u16(),
            pqid: self.u16(),
            dnpipe: self.u16(),
            dnrpipe: self.u16(),
            min_ttl: self.u8(),
            set_tos: self.u8(),
            max_mss: self.u16(),
            set_prio: [self.u8(), self.u8()],
            tagname: self.name(),
        }
    }
}

const FORMATS: [RecordFormat; 4] = [
    RecordFormat::OpenBsd,
    RecordFormat::FreeBsd1301,
    RecordFormat::FreeBsd1400,
    RecordFormat::FreeBsd1500,
];

fn dialect_of(format: RecordFormat) -> Dialect {
    Dialect::ALL
        .into_iter()
        .find(|d| d.record_format() == format)
        .unwrap()
}

/// Through the bytes, as a receiver gets the record.
fn through_bytes(record: &StateRecord) -> State {
    let mut buf = vec![0xa5u8; record.buffer_len() + 8];
    record.emit_bytes(&mut buf);
    let parsed = StateRecord::parse(record.format(), &buf).unwrap();
    assert_eq!(&parsed, record);
    State::from_record(&parsed).unwrap()
}

#[test]
fn translation_matrix() {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for _ in 0..300 {
        let s = rng.state();
        for from in FORMATS {
            let (r1, lost1) = s.to_record(from);
            assert!(lost1.is_subset(lossy_fields(from)), "{from:?} lost {lost1}");
            let a = through_bytes(&r1);
            assert_eq!(s.diff(&a), lost1);
            for to in FORMATS {
                let (r2, lost2) = a.to_record(to);
                r2.check(dialect_of(to)).unwrap();
                assert!(lost2.is_subset(lossy_fields(to)), "{to:?} lost {lost2}");
                let b = through_bytes(&r2);
                // Exactly the reported fields changed, and the fields both formats
                // carry went through both conversions unchanged.
                assert_eq!(a.diff(&b), lost2, "{from:?} -> {to:?}");
                assert!(s.diff(&b).is_subset(lost1 | lost2), "{from:?} -> {to:?}");
                let mut restored = b;
                restored.take_fields(&a, lost2);
                assert_eq!(restored, a, "{from:?} -> {to:?}");
                // What one conversion left is carried again without loss.
                let (r3, lost3) = b.to_record(to);
                assert!(lost3.is_empty(), "{from:?} -> {to:?} lost {lost3} twice");
                assert_eq!(r3, r2);
            }
        }
    }
}

#[test]
fn same_format_round_trip_is_exact_where_nothing_is_lost() {
    let mut rng = Rng(42);
    for _ in 0..200 {
        let s = rng.state();
        let (r, _) = s.to_record(RecordFormat::FreeBsd1500);
        let mut expected = s;
        expected.wire.rdomain = 0;
        expected.stack.rdomain = 0;
        expected.reply_rtableid = None;
        expected.state_flags = StateFlags::from_wire(Family::FreeBsd, s.state_flags.bits());
        expected.sync_flags = 0;
        assert_eq!(State::from_record(&r).unwrap(), expected);
    }
}

#[test]
fn numbering_of_the_small_enums() {
    for (i, t) in Timeout::ALL.iter().enumerate() {
        assert_eq!(t.number() as usize, i);
        assert_eq!(Timeout::from_number(i as u8), Some(*t));
    }
    assert_eq!(Timeout::from_number(25), None);
    assert_eq!(Timeout::TsDiff.number(), 19);
    assert_eq!(Timeout::SctpClosed.number(), 24);
    for (i, t) in TcpState::ALL.iter().enumerate() {
        assert_eq!(t.number() as usize, i);
    }
    assert_eq!(TcpState::Established.number(), 4);
    assert_eq!(TcpState::ProxyDst.number(), 12);
    assert_eq!(TcpState::from_number(13), None);
    assert_eq!(PeerLevel::new(13), None);
    assert_eq!(
        PeerState::from_number(Protocol::Udp, 2),
        Some(PeerState::Level(PeerLevel::MULTIPLE))
    );
    for n in 0..=255u8 {
        assert_eq!(Protocol::from_number(n).number(), n);
    }
    assert_eq!(Protocol::from(132), Protocol::Sctp);
    assert_eq!(Direction::from_number(3), None);
}

#[test]
fn address_families_per_os() {
    use AddressFamily::*;
    assert_eq!(AddressFamily::from_wire(Family::OpenBsd, 24), Some(Inet6));
    assert_eq!(AddressFamily::from_wire(Family::FreeBsd, 28), Some(Inet6));
    assert_eq!(AddressFamily::from_wire(Family::OpenBsd, 28), None);
    assert_eq!(AddressFamily::from_wire(Family::FreeBsd, 24), None);
    // Linux's AF_INET6 never appears.
    assert_eq!(AddressFamily::from_wire(Family::FreeBsd, 10), None);
    assert_eq!(Inet.to_wire(Family::OpenBsd), 2);
    assert_eq!(Inet6.to_wire(Family::OpenBsd), 24);
    assert_eq!(Inet6.to_wire(Family::FreeBsd), 28);
}

#[test]
fn state_flags_keep_each_os_bits() {
    let all = StateFlags::from_bits_truncate(0xffff);
    assert_eq!(all.to_wire(Family::OpenBsd), 0x07ff);
    assert_eq!(all.to_wire(Family::FreeBsd), 0xc3ff);
    assert_eq!(
        StateFlags::from_wire(Family::OpenBsd, 0x4010),
        StateFlags::ACK
    );
    assert_eq!(
        StateFlags::from_wire(Family::FreeBsd, 0x8400),
        StateFlags::DN_IS_QUEUE
    );
    assert_eq!(
        format!("{:?}", StateFlags::ACK | StateFlags::NOSYNC),
        "{NOSYNC, ACK}"
    );
    let mut f = StateFlags::EMPTY;
    f.insert(StateFlags::SLOPPY);
    assert!(f.contains(StateFlags::SLOPPY) && !f.is_empty());
    f.remove(StateFlags::SLOPPY);
    assert!(f.is_empty());
}

#[test]
fn errors_become_badval_wire_errors() {
    let e = StateError::AddressFamily {
        field: "af",
        value: 10,
    };
    assert_eq!(e.counter(), Counter::Badval);
    let w: crate::wire::Error = e.into();
    assert_eq!(
        w,
        crate::wire::Error::BadValue {
            field: "af",
            value: 10
        }
    );
    assert_eq!(w.counter(), Counter::Badval);
    assert_eq!(
        e.to_string(),
        "af: address family 10 is neither AF_INET nor the sender's AF_INET6"
    );
}
