//! TDB, FreeBSD layout (`struct pfsync_tdb`, action 11), 48 bytes. FreeBSD never sends
//! it and skips it on receive.

use crate::wire::codec::wire_struct;

wire_struct! {
    /// FreeBSD `struct pfsync_tdb`.
    TdbFreeBsdPacket, TdbFreeBsdRepr, size 48;
    /// Security parameter index.
    spi / set_spi: u32 = 0..4;
    /// `union sockaddr_union dst`, as raw bytes.
    dst / set_dst: [u8; 28] = 4..32;
    /// Replay counter (32-bit).
    rpl / set_rpl: u32 = 32..36;
    /// Bytes processed.
    cur_bytes / set_cur_bytes: u64 = 36..44;
    /// IPsec protocol.
    sproto / set_sproto: u8 = 44..45;
    /// Update count.
    updates / set_updates: u8 = 45..46;
    [pad] _pad = 46..48;
}
