//! The subheader (`struct pfsync_subheader`), 4 bytes, in front of every run of records
//! of one action.
//!
//! ```text
//! +--------+--------+----------------+
//! | action |  len   |  count (BE16)  |
//! +--------+--------+----------------+
//! ```
//! `len` is the record size in 4-byte words on OpenBSD (mandatory there); FreeBSD
//! names it `_pad`, sends 0 and ignores it.

use crate::wire::codec::wire_struct;

wire_struct! {
    /// `struct pfsync_subheader`.
    SubheaderPacket, SubheaderRepr, size 4;
    /// Action number, in the sender's dialect.
    action / set_action: u8 = 0..1;
    /// OpenBSD: record size in 4-byte words. FreeBSD: `_pad`.
    len / set_len: u8 = 1..2;
    /// Number of records that follow.
    count / set_count: u16 = 2..4;
}

#[cfg(test)]
mod test {
    use super::*;

    // OpenBSD bulk request subheader: UPD_REQ, 3 words, one record.
    static BYTES: [u8; 4] = [0x05, 0x03, 0x00, 0x01];

    #[test]
    fn deconstruct_and_emit() {
        let repr = SubheaderRepr::parse_bytes(&BYTES).unwrap();
        assert_eq!(
            repr,
            SubheaderRepr {
                action: 5,
                len: 3,
                count: 1
            }
        );
        let mut buf = [0xa5u8; 4];
        repr.emit_bytes(&mut buf);
        assert_eq!(buf, BYTES);
    }
}
