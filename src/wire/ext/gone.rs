//! GONE: sequence numbers a NACK asked for that the sender's resend buffer no longer
//! holds (or never held), as [`SeqRanges`](super::SeqRanges). The receiver stops asking,
//! closes the gap and resyncs from that peer (a bulk request).

#[cfg(test)]
mod test {
    use crate::wire::ext::{Body, FrameRepr, SeqRange, SeqRanges};

    static FRAME: [u8; 32] = [
        0xc5, 0x05, 0x00, 0x20, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, // header
        0x00, 0x01, 0x00, 0x00, // one range
        0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, // 1..65537
    ];

    #[test]
    fn parse_and_emit() {
        let frame = FrameRepr::parse(&FRAME).unwrap();
        assert_eq!(
            frame.body,
            Body::Gone(SeqRanges {
                ranges: vec![SeqRange {
                    start: 1,
                    count: 65536
                }]
            })
        );
        let mut buf = [0xa5u8; 32];
        frame.emit(&mut buf);
        assert_eq!(buf, FRAME);
    }
}
