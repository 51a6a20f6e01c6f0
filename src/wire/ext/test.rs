//! Frame-level tests: header refusals, and any bytes parse or are refused, never panic.

use super::*;

static ACK: [u8; 32] = [
    0xc5, 0x06, 0x00, 0x20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, //
    0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1,
];

#[test]
fn header_refusals_name_the_cause() {
    assert_eq!(FrameRepr::parse(&ACK[..15]), Err(Error::Short { have: 15 }));
    let mut pfsync = ACK;
    pfsync[0] = 6;
    assert_eq!(FrameRepr::parse(&pfsync), Err(Error::BadVersion(6)));
    let mut kind = ACK;
    kind[1] = 0;
    assert_eq!(FrameRepr::parse(&kind), Err(Error::BadKind(0)));
    let mut long = ACK.to_vec();
    long.push(0);
    assert_eq!(
        FrameRepr::parse(&long),
        Err(Error::BadLength { said: 32, have: 33 })
    );
}

#[test]
fn kind_codes_round_trip() {
    for kind in Kind::ALL {
        assert_eq!(Kind::from_code(kind.code()), Some(kind));
    }
    assert_eq!(Kind::from_code(13), None);
}

proptest::proptest! {
    #[test]
    fn any_bytes_parse_or_are_refused(mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), kind in 0u8..14) {
        if bytes.len() >= 4 {
            bytes[0] = VERSION;
            bytes[1] = kind;
            let len = bytes.len() as u16;
            bytes[2..4].copy_from_slice(&len.to_be_bytes());
        }
        // Pads are written as zeros and not read (as the kernels treat theirs), so a
        // frame comes back equal in what it says, not byte for byte.
        if let Ok(frame) = FrameRepr::parse(&bytes) {
            let again = frame.to_vec();
            proptest::prop_assert_eq!(again.len(), bytes.len());
            proptest::prop_assert_eq!(FrameRepr::parse(&again), Ok(frame));
        }
    }
}

/// Our reader applies the kernels' first check (`pfsync_input`: header version, before
/// anything else is read): every frame kind is refused there and counted `badver`, as
/// FreeBSD (freebsd/freebsd-src@01194da2) and OpenBSD count it.
#[test]
fn every_frame_is_a_badver_to_a_pfsync_reader() {
    let sender = Sender {
        creator: 1,
        boot: 2,
    };
    let bodies = [
        Body::Hello(HelloRepr::default()),
        Body::HelloAck(HelloRepr::default()),
        Body::Data(DataRepr {
            seq: 1,
            packet: &[6, 0, 0, 24],
        }),
        Body::Nack(SeqRanges::default()),
        Body::Gone(SeqRanges::default()),
        Body::Ack(AckRepr::default()),
        Body::Digest(DigestRepr {
            buckets: 256,
            ..Default::default()
        }),
        Body::DigestReq(DigestReqRepr::default()),
        Body::Ids(IdsRepr {
            parts: 1,
            ..Default::default()
        }),
        Body::Need(NeedRepr::default()),
        Body::Resync,
        Body::BulkSize(BulkSizeRepr { states: 1_000_000 }),
    ];
    for body in bodies {
        let kind = body.kind();
        let bytes = FrameRepr { sender, body }.to_vec();
        let err = crate::wire::PacketReader::new(&bytes).unwrap_err();
        let expected = if bytes.len() < 20 {
            crate::wire::Counter::Hdrops
        } else {
            crate::wire::Counter::Badver
        };
        assert_eq!(err.counter(), expected, "{}", kind.name());
    }
}
