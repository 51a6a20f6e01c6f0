//! BUS (`struct pfsync_bus`), 12 bytes: bulk update status, START or END.

use crate::wire::codec::wire_struct;

/// `PFSYNC_BUS_START`.
pub const STATUS_START: u8 = 1;
/// `PFSYNC_BUS_END`.
pub const STATUS_END: u8 = 2;

wire_struct! {
    /// `struct pfsync_bus`.
    BusPacket, BusRepr, size 12;
    /// Host id of the sender.
    creatorid / set_creatorid: u32 = 0..4;
    /// FreeBSD: seconds since the sender received the request. OpenBSD: 0.
    endtime / set_endtime: u32 = 4..8;
    /// 1 = START, 2 = END.
    status / set_status: u8 = 8..9;
    [pad] _pad = 9..12;
}

/// Checks the status is START or END, on the record's bytes.
pub fn check_bytes(bytes: &[u8; SIZE]) -> crate::wire::Result<()> {
    match bytes[field::status.start] {
        STATUS_START | STATUS_END => Ok(()),
        other => Err(crate::wire::Error::BadValue {
            field: "status",
            value: other.into(),
        }),
    }
}

impl BusRepr {
    /// Checks the status is START or END.
    pub fn check(&self) -> crate::wire::Result<()> {
        let mut bytes = [0u8; SIZE];
        self.emit_bytes(&mut bytes);
        check_bytes(&bytes)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // pfsync-wire.md §2.11: BUS END, creator 1a2b3c4d, endtime 3.
    static BYTES: [u8; 12] = [0x1a, 0x2b, 0x3c, 0x4d, 0, 0, 0, 3, 2, 0, 0, 0];

    #[test]
    fn parse_and_emit() {
        let repr = BusRepr::parse_bytes(&BYTES).unwrap();
        assert_eq!(repr.status, STATUS_END);
        assert_eq!(repr.endtime, 3);
        repr.check().unwrap();
        let mut buf = [0xa5u8; 12];
        repr.emit_bytes(&mut buf);
        assert_eq!(buf, BYTES);
    }

    #[test]
    fn unknown_status_is_badval() {
        let mut b = BYTES;
        b[8] = 7;
        let err = BusRepr::parse_bytes(&b).unwrap().check().unwrap_err();
        assert_eq!(err.counter(), crate::wire::Counter::Badval);
    }
}
