//! CLR (`struct pfsync_clr`), 20 bytes: clear the states of one creator, optionally only
//! those on one interface (an empty name means all).

use crate::wire::codec::{wire_struct, IfName};

wire_struct! {
    /// `struct pfsync_clr`.
    ClrPacket, ClrRepr, size 20;
    /// Interface whose states go; empty for all.
    ifname / set_ifname: IfName = 0..16;
    /// The creator whose states go.
    creatorid / set_creatorid: u32 = 16..20;
}

#[cfg(test)]
mod test {
    use super::*;

    // pfsync-wire.md §2.11: CLR of creator 1a2b3c4d on em0.
    static BYTES: [u8; 20] = [
        0x65, 0x6d, 0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x1a, 0x2b, 0x3c, 0x4d,
    ];

    #[test]
    fn parse_and_emit() {
        let repr = ClrRepr::parse_bytes(&BYTES).unwrap();
        assert_eq!(repr.ifname.to_string(), "em0");
        assert_eq!(repr.creatorid, 0x1a2b_3c4d);
        let mut buf = [0xa5u8; 20];
        repr.emit_bytes(&mut buf);
        assert_eq!(buf, BYTES);
    }
}
