//! The pfsync header (`struct pfsync_header`), 20 bytes, both families.
//!
//! ```text
//!  0       1       2               4                               20
//! +-------+-------+---------------+-------------------------------+
//! |version|  pad  |  len (BE16)   |  pfcksum (16, FreeBSD) / 0    |
//! +-------+-------+---------------+-------------------------------+
//! ```
//! `len` counts from the start of this header to the end of the last record.

use crate::wire::codec::wire_struct;

wire_struct! {
    /// `struct pfsync_header`.
    HeaderPacket, HeaderRepr, size 20;
    /// 5 (FreeBSD) or 6 (OpenBSD).
    version / set_version: u8 = 0..1;
    /// Bytes from the start of the header to the end of the last record.
    len / set_len: u16 = 2..4;
    /// FreeBSD: the sender's ruleset checksum; OpenBSD: zero (`spare`).
    pfcksum / set_pfcksum: [u8; 16] = 4..20;
    [pad] _pad = 1..2;
}

#[cfg(test)]
mod test {
    use super::*;

    // FreeBSD bulk request header, pfsync-wire.md §2.11.
    static BYTES: [u8; 20] = [
        0x05, 0x00, 0x00, 0x28, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
    ];

    #[test]
    fn deconstruct() {
        let p = HeaderPacket::new_checked(&BYTES[..]).unwrap();
        assert_eq!(p.version(), 5);
        assert_eq!(p.len(), 40);
        assert_eq!(p.pfcksum()[0], 1);
        assert_eq!(p.pfcksum()[15], 16);
    }

    #[test]
    fn emit_writes_every_byte() {
        let repr = HeaderRepr::parse_bytes(&BYTES).unwrap();
        let mut buf = [0xa5u8; 20];
        repr.emit_bytes(&mut buf);
        assert_eq!(buf, BYTES);
    }

    #[test]
    fn short_buffer_is_refused() {
        let err = HeaderPacket::new_checked(&BYTES[..19]).unwrap_err();
        assert_eq!(err.counter(), crate::wire::Counter::Badlen);
    }
}
