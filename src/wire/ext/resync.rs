//! RESYNC: "send me a bulk update": a DATA of the addressee's stream was lost past its
//! resend buffer (GONE, NACKs exhausted, or a jump past the window). It goes to that
//! peer alone, outside the sequenced stream: a bulk request in DATA would reach every
//! peer, and each would answer with its whole table.
//!
//! ```text
//!  0               4
//! +---------------+
//! |   reserved    |  sent as zero, not read
//! +---------------+
//! ```
//!
//! The 4 reserved bytes keep the frame at 20 bytes, past a kernel's header-length
//! check, so a kernel that receives one by mistake counts it `badver` as every other
//! frame (see the module above). Unsequenced, a lost RESYNC is not resent: the next
//! give-up asks again (spaced by the daemon), and the digests find what is left.

use super::{check_fixed, Result};

/// Bytes of the body.
pub const SIZE: usize = 4;

/// Checks a RESYNC body.
pub fn parse(body: &[u8]) -> Result<()> {
    check_fixed("RESYNC", body, SIZE)
}

#[cfg(test)]
mod test {
    use crate::wire::ext::{Body, Error, FrameRepr};

    static FRAME: [u8; 20] = [
        0xc5, 0x0b, 0x00, 0x14, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, // header
        0, 0, 0, 0, // reserved
    ];

    #[test]
    fn parse_and_emit() {
        let frame = FrameRepr::parse(&FRAME).unwrap();
        assert_eq!(frame.body, Body::Resync);
        let mut buf = [0xa5u8; 20];
        frame.emit(&mut buf);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn a_body_of_another_size_is_refused() {
        let mut long = FRAME.to_vec();
        long.extend_from_slice(&[0; 4]);
        long[3] = 24;
        assert!(matches!(
            FrameRepr::parse(&long),
            Err(Error::BadBody { kind: "RESYNC", .. })
        ));
    }
}
