//! NACK: the sequence numbers a receiver misses from the addressee's stream, as
//! [`SeqRanges`](super::SeqRanges). Sent at once on a gap, then retried while the
//! numbers stay missing; the addressee answers each with the DATA from its resend
//! buffer (same seq) or lists it in a GONE.

#[cfg(test)]
mod test {
    use crate::wire::ext::{Body, Error, FrameRepr, SeqRange, SeqRanges, MAX_RANGES};

    static FRAME: [u8; 44] = [
        0xc5, 0x04, 0x00, 0x2c, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, // header
        0x00, 0x02, 0x00, 0x00, // two ranges
        0, 0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 3, // 10..13
        0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 1, // 20
    ];

    #[test]
    fn parse_and_emit() {
        let frame = FrameRepr::parse(&FRAME).unwrap();
        let ranges = SeqRanges {
            ranges: vec![
                SeqRange {
                    start: 10,
                    count: 3,
                },
                SeqRange {
                    start: 20,
                    count: 1,
                },
            ],
        };
        assert_eq!(frame.body, Body::Nack(ranges.clone()));
        let mut buf = [0xa5u8; 44];
        frame.emit(&mut buf);
        assert_eq!(buf, FRAME);
        assert_eq!(
            SeqRanges::from_sorted([10, 11, 12, 20]),
            vec![ranges],
            "consecutive numbers make one range"
        );
    }

    #[test]
    fn count_must_match_and_stay_bounded() {
        let mut short = FRAME;
        short[17] = 3;
        assert!(matches!(
            FrameRepr::parse(&short),
            Err(Error::BadBody { .. })
        ));
        let mut many = FRAME;
        many[16..18].copy_from_slice(&(MAX_RANGES as u16 + 1).to_be_bytes());
        assert!(matches!(
            FrameRepr::parse(&many),
            Err(Error::TooMany { .. })
        ));
        let mut empty_range = FRAME;
        empty_range[31] = 0;
        assert!(matches!(
            FrameRepr::parse(&empty_range),
            Err(Error::BadValue { .. })
        ));
    }

    #[test]
    fn scattered_numbers_split_into_bounded_lists() {
        let lists = SeqRanges::from_sorted((1..=1000u64).map(|i| i * 2));
        assert_eq!(lists.len(), 1000usize.div_ceil(MAX_RANGES));
        assert!(lists.iter().all(|l| l.ranges.len() <= MAX_RANGES));
    }
}
