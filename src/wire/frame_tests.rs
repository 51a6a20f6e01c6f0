//! Packet-level tests: the worked examples of pfsync-wire.md §2.11 byte for byte, the
//! receive rules of each dialect, and MTU packing.

use super::*;
use crate::wire::msg::bus::STATUS_END;
use crate::wire::msg::{PeerRepr, State1500Repr, StateOpenBsdRepr};
use crate::wire::{Counter, IfName, RecordFormat};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn build(dialect: Dialect, messages: &[Message]) -> Vec<u8> {
    let mut b = PacketBuilder::new(dialect, 1500);
    for m in messages {
        assert_eq!(b.push(m).unwrap(), Pushed::Added);
    }
    b.finish().unwrap()
}

fn items(bytes: &[u8]) -> Vec<Result<Item>> {
    PacketReader::new(bytes).unwrap().items().collect()
}

const ZERO16: &str = "00000000 00000000 00000000 00000000";

#[test]
fn freebsd_bulk_request_matches_the_spec() {
    let bytes = build(
        Dialect::FreeBsd1400,
        &[Message::UpdReq(StateRefRepr::BULK_REQUEST)],
    );
    let want = hex(&format!(
        "05000028 {ZERO16} 05000001 000000000000000000000000 0c000001"
    ));
    assert_eq!(bytes, want);
    assert_eq!(
        items(&bytes),
        vec![
            Ok(Item::Message(Message::UpdReq(StateRefRepr::BULK_REQUEST))),
            Ok(Item::Eof)
        ]
    );
}

#[test]
fn openbsd_bulk_request_matches_the_spec() {
    let bytes = build(
        Dialect::OpenBsd,
        &[Message::UpdReq(StateRefRepr::BULK_REQUEST)],
    );
    let want = hex(&format!(
        "06000024 {ZERO16} 05030001 000000000000000000000000"
    ));
    assert_eq!(bytes, want);
}

#[test]
fn openbsd_clr_matches_the_spec() {
    let clr = ClrRepr {
        ifname: IfName::new("em0").unwrap(),
        creatorid: 0x1a2b_3c4d,
    };
    let bytes = build(Dialect::OpenBsd, &[Message::Clr(clr)]);
    let want = hex(&format!(
        "0600002c {ZERO16} 00050001 656d3000 00000000 00000000 00000000 1a2b3c4d"
    ));
    assert_eq!(bytes, want);
    assert_eq!(items(&bytes), vec![Ok(Item::Message(Message::Clr(clr)))]);
}

#[test]
fn freebsd_bus_end_and_del_c_match_the_spec() {
    let bus = BusRepr {
        creatorid: 0x1a2b_3c4d,
        endtime: 3,
        status: STATUS_END,
    };
    let bytes = build(Dialect::FreeBsd1301, &[Message::Bus(bus)]);
    let want = hex(&format!(
        "05000028 {ZERO16} 0a000001 1a2b3c4d 00000003 02000000 0c000001"
    ));
    assert_eq!(bytes, want);

    let del = StateRefRepr {
        id: 0x65a1_b2c3,
        creatorid: 0x1a2b_3c4d,
    };
    let bytes = build(Dialect::FreeBsd1500, &[Message::DelC(del)]);
    let want = hex(&format!(
        "05000028 {ZERO16} 07000001 0000000065a1b2c3 1a2b3c4d 0c000001"
    ));
    assert_eq!(bytes, want);
}

fn openbsd_state(id: u64) -> StateOpenBsdRepr {
    StateOpenBsdRepr {
        id,
        creatorid: 0x0102_0304,
        af: 2,
        proto: 6,
        direction: 1,
        timeout: 2,
        src: PeerRepr {
            state: 4,
            ..PeerRepr::default()
        },
        dst: PeerRepr {
            state: 4,
            ..PeerRepr::default()
        },
        ..StateOpenBsdRepr::default()
    }
}

fn state_1500(id: u64) -> State1500Repr {
    State1500Repr {
        id,
        creatorid: 0x0102_0304,
        wire_af: 28,
        stack_af: 28,
        wire_proto: 17,
        stack_proto: 17,
        direction: 2,
        timeout: 8,
        ..State1500Repr::default()
    }
}

#[test]
fn runs_of_one_action_share_a_subheader() {
    let a = Message::Ins(StateRecord::OpenBsd(openbsd_state(1)));
    let b = Message::Ins(StateRecord::OpenBsd(openbsd_state(2)));
    let c = Message::DelC(StateRefRepr {
        id: 3,
        creatorid: 4,
    });
    let bytes = build(Dialect::OpenBsd, &[a, b, c, a]);
    // header, [sub + 2 states], [sub + del_c], [sub + state]
    assert_eq!(bytes.len(), 20 + 4 + 2 * 264 + 4 + 12 + 4 + 264);
    assert_eq!(&bytes[20..24], &[13, 66, 0, 2]);
    assert_eq!(&bytes[20 + 4 + 528..20 + 8 + 528], &[7, 3, 0, 1]);
    let got: Vec<_> = items(&bytes).into_iter().map(|i| i.unwrap()).collect();
    assert_eq!(
        got,
        vec![
            Item::Message(a),
            Item::Message(b),
            Item::Message(c),
            Item::Message(a)
        ]
    );
}

#[test]
fn packets_are_filled_to_the_mtu() {
    // pfsync-wire.md §1.3: records per full packet at MTU 1500.
    let cases: [(Dialect, Message, usize); 4] = [
        (
            Dialect::OpenBsd,
            Message::Upd(StateRecord::OpenBsd(openbsd_state(1))),
            5,
        ),
        (
            Dialect::FreeBsd1500,
            Message::Upd(StateRecord::FreeBsd1500(state_1500(1))),
            4,
        ),
        (
            Dialect::OpenBsd,
            Message::UpdC(UpdCRepr {
                id: 1,
                creatorid: 1,
                ..UpdCRepr::default()
            }),
            17,
        ),
        (
            Dialect::FreeBsd1400,
            Message::UpdC(UpdCRepr {
                id: 1,
                creatorid: 1,
                ..UpdCRepr::default()
            }),
            // The kernel reserves 40 bytes for an IP header whatever the family and
            // fits 16; we count the header actually sent.
            17,
        ),
    ];
    for (dialect, message, per_packet) in cases {
        let mut b = PacketBuilder::new(dialect, 1500);
        let mut n = 0;
        while b.push(&message).unwrap() == Pushed::Added {
            n += 1;
        }
        assert_eq!(n, per_packet, "{dialect:?}");
        let bytes = b.finish().unwrap();
        assert!(bytes.len() + 20 <= 1500);
        assert_eq!(
            PacketReader::new(&bytes).unwrap().messages().count(),
            per_packet
        );
        assert!(b.is_empty());
    }
}

#[test]
fn builder_refuses_what_the_kernel_would() {
    let mut b = PacketBuilder::new(Dialect::FreeBsd1400, 1500);
    let openbsd = Message::Ins(StateRecord::OpenBsd(openbsd_state(1)));
    assert!(matches!(
        b.push(&openbsd),
        Err(BuildError::NotInDialect { .. })
    ));
    let newer = Message::Ins(StateRecord::FreeBsd1500(state_1500(1)));
    assert!(matches!(
        b.push(&newer),
        Err(BuildError::NotInDialect { .. })
    ));
    let mut bad = openbsd_state(1);
    bad.timeout = 20;
    let mut ob = PacketBuilder::new(Dialect::OpenBsd, 1500);
    assert!(matches!(
        ob.push(&Message::Ins(StateRecord::OpenBsd(bad))),
        Err(BuildError::Invalid { .. })
    ));
    let raw_1301 = [0u8; crate::wire::msg::state_1301::SIZE];
    let mut s1301 = crate::wire::msg::State1301Repr::parse_bytes(&raw_1301).unwrap();
    s1301.af = 2;
    let del = Message::Del(StateRecord::FreeBsd1301(s1301));
    // Even to a 1301 peer: it may be FreeBSD 14+, which refuses DEL.
    let mut fb13 = PacketBuilder::new(Dialect::FreeBsd1301, 1500);
    assert!(matches!(fb13.push(&del), Err(BuildError::Refused { .. })));
    let mut fb = PacketBuilder::new(Dialect::FreeBsd1500, 1500);
    assert!(matches!(fb.push(&del), Err(BuildError::Refused { .. })));
    let mut tiny = PacketBuilder::new(Dialect::OpenBsd, 200);
    assert!(matches!(
        tiny.push(&Message::Ins(StateRecord::OpenBsd(openbsd_state(1)))),
        Err(BuildError::TooLarge { .. })
    ));
    assert!(b.is_empty() && ob.is_empty() && fb.is_empty() && tiny.is_empty());
    assert_eq!(b.finish(), None);
}

#[test]
fn short_and_bad_headers() {
    let err = PacketReader::new(&[6, 0, 0, 20]).unwrap_err();
    assert_eq!(err.counter(), Counter::Hdrops);
    let mut p = build(
        Dialect::OpenBsd,
        &[Message::UpdReq(StateRefRepr::BULK_REQUEST)],
    );
    p[0] = 4;
    assert_eq!(PacketReader::new(&p).unwrap_err(), Error::BadVersion(4));
    p[0] = 6;
    p[3] += 1; // header len one past the data
    assert_eq!(
        PacketReader::new(&p).unwrap_err().counter(),
        Counter::Badlen
    );
    p[3] = 19; // header len below the header
    assert_eq!(
        PacketReader::new(&p).unwrap_err().counter(),
        Counter::Badlen
    );
    // An OpenBSD packet read by a FreeBSD kernel is badver.
    p[3] = 36;
    assert_eq!(
        PacketReader::new_as(&p, Dialect::FreeBsd1500).unwrap_err(),
        Error::BadVersion(6)
    );
}

#[test]
fn bytes_past_the_header_len_are_ignored() {
    let mut p = build(
        Dialect::OpenBsd,
        &[Message::UpdReq(StateRefRepr::BULK_REQUEST)],
    );
    p.extend_from_slice(&[0xff; 7]);
    assert_eq!(items(&p).len(), 1);
}

#[test]
fn freebsd_unknown_action_drops_the_rest() {
    let del = Message::DelC(StateRefRepr {
        id: 1,
        creatorid: 2,
    });
    let mut p = build(Dialect::FreeBsd1500, &[del]);
    // Insert an unknown action (17) before EOF.
    let eof_at = p.len() - 4;
    p.splice(eof_at..eof_at, [17, 0, 0, 1, 0, 0, 0, 0]);
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    let got = items(&p);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], Ok(Item::Message(del)));
    assert_eq!(got[1].unwrap_err().counter(), Counter::Badact);
    // A FreeBSD 13 receiver does not know 13 (INS_1400): badact there too.
    let ins = Message::Ins(StateRecord::FreeBsd1500(state_1500(1)));
    let p = build(Dialect::FreeBsd1500, &[ins]);
    let got: Vec<_> = PacketReader::new_as(&p, Dialect::FreeBsd1400)
        .unwrap()
        .items()
        .collect();
    assert_eq!(got, vec![Err(Error::UnknownAction { action: 15 })]);
}

#[test]
fn freebsd_refused_actions_and_eof_rules() {
    let del_c = Message::DelC(StateRefRepr {
        id: 1,
        creatorid: 2,
    });
    for action in [8u8, 9] {
        let mut p = build(Dialect::FreeBsd1301, &[del_c]);
        p[20] = action;
        assert_eq!(items(&p)[0].unwrap_err().counter(), Counter::Badact);
    }
    // EOF in the middle of the packet: badlen.
    let mut p = build(Dialect::FreeBsd1301, &[del_c, del_c]);
    p[20..24].copy_from_slice(&[12, 0, 0, 1]);
    assert_eq!(
        items(&p),
        vec![Err(Error::EofNotAtEnd {
            offset: 20,
            len: p.len()
        })]
    );
    // Records running past the end: badlen.
    let mut p = build(Dialect::FreeBsd1301, &[del_c]);
    p[23] = 3;
    assert_eq!(items(&p)[0].unwrap_err().counter(), Counter::Badlen);
}

#[test]
fn openbsd_skips_what_it_does_not_know_when_sized() {
    let clr = Message::Clr(ClrRepr {
        ifname: IfName::EMPTY,
        creatorid: 9,
    });
    let mut p = build(Dialect::OpenBsd, &[clr]);
    // An unknown action 20 with 2 records of 2 words, before the CLR run.
    p.splice(
        20..20,
        [
            20, 2, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
        ],
    );
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        items(&p),
        vec![
            Ok(Item::Skipped {
                action: 20,
                count: 2,
                len: 16
            }),
            Ok(Item::Message(clr))
        ]
    );
    // Unknown action without a size: badact and stop.
    p[21] = 0;
    assert_eq!(items(&p)[0].unwrap_err().counter(), Counter::Badact);
    // A known action announced smaller than its record, count 0: badact.
    let mut p = build(Dialect::OpenBsd, &[clr]);
    p[21] = 4;
    p[23] = 0;
    assert_eq!(items(&p)[0].unwrap_err().counter(), Counter::Badact);
}

#[test]
fn openbsd_uses_the_senders_record_size_as_stride() {
    let c = ClrRepr {
        ifname: IfName::new("vio0").unwrap(),
        creatorid: 7,
    };
    let mut p = build(Dialect::OpenBsd, &[Message::Clr(c)]);
    // Announce 6 words (24 bytes) per record, and append 4 unknown trailing bytes.
    p[21] = 6;
    p.extend_from_slice(&[0xee; 4]);
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    assert_eq!(items(&p), vec![Ok(Item::Message(Message::Clr(c)))]);
}

#[test]
fn a_bad_value_skips_one_record_only() {
    let good = openbsd_state(1);
    let mut bad = openbsd_state(2);
    bad.direction = 3;
    let mut p = build(
        Dialect::OpenBsd,
        &[
            Message::Ins(StateRecord::OpenBsd(good)),
            Message::Ins(StateRecord::OpenBsd(good)),
        ],
    );
    // Overwrite the second record's direction byte.
    p[20 + 4 + 264 + 252] = 3;
    let got = items(&p);
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0],
        Ok(Item::Message(Message::Ins(StateRecord::OpenBsd(good))))
    );
    assert_eq!(got[1].unwrap_err().counter(), Counter::Badval);
    let _ = bad;
}

#[test]
fn every_state_format_reads_back_in_its_family() {
    for (dialect, format) in [
        (Dialect::OpenBsd, RecordFormat::OpenBsd),
        (Dialect::FreeBsd1301, RecordFormat::FreeBsd1301),
        (Dialect::FreeBsd1400, RecordFormat::FreeBsd1400),
        (Dialect::FreeBsd1500, RecordFormat::FreeBsd1500),
    ] {
        let mut raw = vec![0u8; format.size()];
        raw[0..8].copy_from_slice(&42u64.to_be_bytes());
        let mut record = StateRecord::parse(format, &raw).unwrap();
        // Give it values every receiver accepts.
        match &mut record {
            StateRecord::OpenBsd(r) => r.af = 2,
            StateRecord::FreeBsd1301(r) => r.af = 2,
            StateRecord::FreeBsd1400(r) => r.af = 28,
            StateRecord::FreeBsd1500(r) => {
                r.wire_af = 2;
                r.stack_af = 2
            }
        }
        let upd = Message::Upd(record);
        let p = build(dialect, &[upd]);
        assert_eq!(
            PacketReader::new(&p)
                .unwrap()
                .messages()
                .collect::<Vec<_>>(),
            vec![Ok(upd)]
        );
    }
}
