//! ACK: the heartbeat. Sent every 100-250 ms while DATA flowed lately, every few seconds
//! when idle, so a receiver learns the sender's highest sequence number without more
//! traffic and finds a lost last DATA (tail loss).
//!
//! ```text
//!  0                               8                               16
//! +-------------------------------+-------------------------------+
//! | highest seq sent (BE64)       | cumulative seq received (BE64)|
//! +-------------------------------+-------------------------------+
//! ```
//! `received` is the receiver side's cumulative mark of the peer's stream: every seq
//! up to it was received or given up (a later round uses it as the bulk's ack clock).

use super::{check_fixed, Result};
use crate::wire::codec::wire_struct;

wire_struct! {
    /// ACK body.
    AckPacket, AckRepr, size 16;
    /// The highest DATA sequence number the sender sent; 0 before the first.
    highest_sent / set_highest_sent: u64 = 0..8;
    /// Every seq of the addressee's stream up to this one was received or given up.
    received / set_received: u64 = 8..16;
}

pub(super) fn parse(body: &[u8]) -> Result<AckRepr> {
    check_fixed("ACK", body, SIZE)?;
    Ok(AckRepr::parse(&AckPacket::new_unchecked(body)))
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::ext::{Body, FrameRepr};

    static FRAME: [u8; 32] = [
        0xc5, 0x06, 0x00, 0x20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, // header
        0, 0, 0, 0, 0, 0, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0x7f, // body
    ];

    #[test]
    fn parse_and_emit() {
        let frame = FrameRepr::parse(&FRAME).unwrap();
        assert_eq!(
            frame.body,
            Body::Ack(AckRepr {
                highest_sent: 256,
                received: 127
            })
        );
        assert_eq!(frame.sender.creator, 1);
        assert_eq!(frame.sender.boot, 9);
        let mut buf = [0xa5u8; 32];
        frame.emit(&mut buf);
        assert_eq!(buf, FRAME);
    }
}
