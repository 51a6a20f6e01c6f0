//! HELLO and HELLO_ACK: discovery. A node sends HELLO to a source it does not know yet
//! (or to a secure peer at once); a pfsyncd peer answers HELLO_ACK; a kernel drops both
//! (`badver`, see the module doc of `wire::ext`).
//!
//! ```text
//!  0               4       6       8                               16
//! +---------------+-------+-------+-------------------------------+
//! | features BE32 |mtu BE16|  pad  | next seq (BE64)               |
//! +---------------+-------+-------+-------------------------------+
//! ```
//! `next_seq` is the sequence number of the next DATA the sender will send, so the
//! receiver knows where the stream starts and sees a lost first DATA as a gap.

use super::{check_fixed, Result};
use crate::wire::codec::wire_struct;

wire_struct! {
    /// HELLO / HELLO_ACK body.
    HelloPacket, HelloRepr, size 16;
    /// Feature bits ([`FEATURE_DIGEST`], ...); unknown bits are ignored.
    features / set_features: u32 = 0..4;
    /// The sender's link MTU, so the peer sizes what it sends.
    mtu / set_mtu: u16 = 4..6;
    /// Sequence number of the sender's next DATA.
    next_seq / set_next_seq: u64 = 8..16;
    [pad] _pad = 6..8;
}

/// The sender runs digest exchanges (anti-entropy).
pub const FEATURE_DIGEST: u32 = 1;

/// The sender understands [`BULK_SIZE`](super::bulk_size): a compact bulk's sender
/// announces its size only to peers that set this (an older pfsyncd would count the
/// unknown frame kind as garbage).
pub const FEATURE_BULK_SIZE: u32 = 2;

pub(super) fn parse(body: &[u8]) -> Result<HelloRepr> {
    check_fixed("HELLO", body, SIZE)?;
    Ok(HelloRepr::parse(&HelloPacket::new_unchecked(body)))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::ext::{Body, FrameRepr, Sender};

    static FRAME: [u8; 32] = [
        0xc5, 0x01, 0x00, 0x20, 0x0a, 0x0b, 0x0c, 0x0d, 1, 2, 3, 4, 5, 6, 7, 8, // header
        0x00, 0x00, 0x00, 0x01, 0x05, 0xdc, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 42, // body
    ];

    #[test]
    fn parse_and_emit() {
        let frame = FrameRepr::parse(&FRAME).unwrap();
        let hello = HelloRepr {
            features: FEATURE_DIGEST,
            mtu: 1500,
            next_seq: 42,
        };
        assert_eq!(
            frame,
            FrameRepr {
                sender: Sender {
                    creator: 0x0a0b_0c0d,
                    boot: 0x0102_0304_0506_0708
                },
                body: Body::Hello(hello),
            }
        );
        let mut buf = [0xa5u8; 32];
        frame.emit(&mut buf);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn hello_ack_differs_by_kind_only() {
        let mut bytes = FRAME;
        bytes[1] = 2;
        let frame = FrameRepr::parse(&bytes).unwrap();
        assert!(matches!(frame.body, Body::HelloAck(h) if h.next_seq == 42));
    }

    #[test]
    fn short_body_is_refused() {
        let mut bytes = FRAME[..31].to_vec();
        bytes[3] = 31;
        assert!(FrameRepr::parse(&bytes).is_err());
    }
}
