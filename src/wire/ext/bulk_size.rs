//! BULK_SIZE: "the compact bulk I am starting carries about this many states", sent by
//! a compact bulk's sender at its START to each established peer whose HELLO set
//! [`FEATURE_BULK_SIZE`](super::hello::FEATURE_BULK_SIZE), so that the receiver sizes
//! its cache and table once instead of growing them by doubling while a million states
//! arrive (each doubling a rehash and a copy).
//!
//! ```text
//!  0                               8
//! +-------------------------------+
//! | states (BE64)                 |
//! +-------------------------------+
//! ```
//!
//! A hint only: the count is the sender's walk's (an upper bound of what it sends, as
//! states come and go during the walk), and the receiver reserves no more than its own
//! bounds allow. Unsequenced, like RESYNC: a lost BULK_SIZE loses the pre-sizing, never
//! a state. 24 bytes, past a kernel's header-length check, so a kernel that receives
//! one by mistake counts it `badver` as every other frame (see the module above).

use super::{check_fixed, Result};
use crate::wire::codec::wire_struct;

wire_struct! {
    /// BULK_SIZE body.
    BulkSizePacket, BulkSizeRepr, size 8;
    /// States the bulk carries, about (an upper bound).
    states / set_states: u64 = 0..8;
}

pub(super) fn parse(body: &[u8]) -> Result<BulkSizeRepr> {
    check_fixed("BULK_SIZE", body, SIZE)?;
    Ok(BulkSizeRepr::parse(&BulkSizePacket::new_unchecked(body)))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::ext::{Body, Error, FrameRepr, Sender};

    static FRAME: [u8; 24] = [
        0xc5, 0x0c, 0x00, 0x18, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, // header
        0, 0, 0, 0, 0x00, 0x0f, 0x42, 0x40, // 1 000 000 states
    ];

    #[test]
    fn parse_and_emit() {
        let frame = FrameRepr::parse(&FRAME).unwrap();
        assert_eq!(
            frame,
            FrameRepr {
                sender: Sender {
                    creator: 2,
                    boot: 3
                },
                body: Body::BulkSize(BulkSizeRepr { states: 1_000_000 }),
            }
        );
        let mut buf = [0xa5u8; 24];
        frame.emit(&mut buf);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn a_body_of_another_size_is_refused() {
        let mut short = FRAME[..20].to_vec();
        short[3] = 20;
        assert!(matches!(
            FrameRepr::parse(&short),
            Err(Error::BadBody {
                kind: "BULK_SIZE",
                need: 8,
                have: 4
            })
        ));
        let mut long = FRAME.to_vec();
        long.extend_from_slice(&[0; 8]);
        long[3] = 32;
        assert!(matches!(
            FrameRepr::parse(&long),
            Err(Error::BadBody {
                kind: "BULK_SIZE",
                ..
            })
        ));
    }
}
