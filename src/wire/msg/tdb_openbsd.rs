//! TDB, OpenBSD layout (`struct pfsync_tdb`, action 15), 52 bytes: IPsec SA replay
//! counter sync. pfsyncd does not sync IPsec; it decodes and can re-emit these.

use crate::wire::codec::wire_struct;

wire_struct! {
    /// OpenBSD `struct pfsync_tdb`.
    TdbOpenBsdPacket, TdbOpenBsdRepr, size 52;
    /// Security parameter index.
    spi / set_spi: u32 = 0..4;
    /// `union sockaddr_union dst`, as raw bytes (sa_len, sa_family, ...).
    dst / set_dst: [u8; 28] = 4..32;
    /// Replay counter (64-bit).
    rpl / set_rpl: u64 = 32..40;
    /// Bytes processed.
    cur_bytes / set_cur_bytes: u64 = 40..48;
    /// IPsec protocol.
    sproto / set_sproto: u8 = 48..49;
    /// Update count.
    updates / set_updates: u8 = 49..50;
    /// Routing domain.
    rdomain / set_rdomain: u16 = 50..52;
}
