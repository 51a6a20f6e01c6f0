//! INS_ACK, UPD_REQ and DEL_C (`struct pfsync_ins_ack`, `pfsync_upd_req`,
//! `pfsync_del_c`): the same 12 bytes, a state's identity.
//!
//! An UPD_REQ with id 0 and creatorid 0 asks for a bulk update.

use crate::wire::codec::wire_struct;

wire_struct! {
    /// A state identity: `struct pfsync_ins_ack` / `pfsync_upd_req` / `pfsync_del_c`.
    StateRefPacket, StateRefRepr, size 12;
    /// State id (opaque; a big-endian counter by convention).
    id / set_id: u64 = 0..8;
    /// Host id of the state's creator.
    creatorid / set_creatorid: u32 = 8..12;
}

impl StateRefRepr {
    /// The bulk update request (id 0, creator 0).
    pub const BULK_REQUEST: StateRefRepr = StateRefRepr {
        id: 0,
        creatorid: 0,
    };

    /// True for the bulk update request.
    pub fn is_bulk_request(&self) -> bool {
        *self == Self::BULK_REQUEST
    }
}

#[cfg(test)]
mod test {
    use super::*;

    // pfsync-wire.md §2.11: DEL_C of id 0x65a1b2c3, creator 1a2b3c4d.
    static BYTES: [u8; 12] = [0, 0, 0, 0, 0x65, 0xa1, 0xb2, 0xc3, 0x1a, 0x2b, 0x3c, 0x4d];

    #[test]
    fn parse_and_emit() {
        let repr = StateRefRepr::parse_bytes(&BYTES).unwrap();
        assert_eq!(repr.id, 0x65a1_b2c3);
        assert_eq!(repr.creatorid, 0x1a2b_3c4d);
        assert!(!repr.is_bulk_request());
        let mut buf = [0xa5u8; 12];
        repr.emit_bytes(&mut buf);
        assert_eq!(buf, BYTES);
    }
}
