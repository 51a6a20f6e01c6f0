//! OpenBSD state record (`struct pfsync_state`), 264 bytes: INS (13), UPD (14), DEL (6).

use crate::wire::codec::{wire_struct, IfName, PfAddr};
use crate::wire::msg::key_openbsd::KeyOpenBsdRepr;
use crate::wire::msg::peer::PeerRepr;
use crate::wire::Dialect;

wire_struct! {
    /// OpenBSD `struct pfsync_state`.
    StateOpenBsdPacket, StateOpenBsdRepr, size 264;
    /// State id.
    id / set_id: u64 = 0..8;
    /// Interface, "all" for floating states.
    ifname / set_ifname: IfName = 8..24;
    /// key[0] as on the wire, key[1] as seen by the stack.
    key / set_key: [KeyOpenBsdRepr; 2] = 24..104;
    /// The side that opened the connection.
    src / set_src: PeerRepr = 104..136;
    /// The other side.
    dst / set_dst: PeerRepr = 136..168;
    /// route-to / reply-to / dup-to next hop.
    rt_addr / set_rt_addr: PfAddr = 168..184;
    /// Rule number, 0xffffffff for none.
    rule / set_rule: u32 = 184..188;
    /// Anchor rule number, 0xffffffff for none.
    anchor / set_anchor: u32 = 188..192;
    /// NAT rule number (0xffffffff on OpenBSD).
    nat_rule / set_nat_rule: u32 = 192..196;
    /// Age in seconds.
    creation / set_creation: u32 = 196..200;
    /// Seconds until expiry.
    expire / set_expire: u32 = 200..204;
    /// Packets [in, out], each as two big-endian 32-bit words high first.
    packets / set_packets: [u64; 2] = 204..220;
    /// Bytes [in, out], same encoding.
    bytes / set_bytes: [u64; 2] = 220..236;
    /// Creator host id.
    creatorid / set_creatorid: u32 = 236..240;
    /// Routing tables [wire, stack].
    rtableid / set_rtableid: [i32; 2] = 240..248;
    /// max-mss.
    max_mss / set_max_mss: u16 = 248..250;
    /// Address family, 2 or 24 (OpenBSD's AF_INET6).
    af / set_af: u8 = 250..251;
    /// IP protocol of the wire key.
    proto / set_proto: u8 = 251..252;
    /// 1 in, 2 out.
    direction / set_direction: u8 = 252..253;
    /// Log flags.
    log / set_log: u8 = 253..254;
    /// Route type (OpenBSD numbering).
    rt / set_rt: u8 = 254..255;
    /// Timeout index (`PFTM_*`).
    timeout / set_timeout: u8 = 255..256;
    /// `PFSYNC_FLAG_*`.
    sync_flags / set_sync_flags: u8 = 256..257;
    /// Unused, 0.
    updates / set_updates: u8 = 257..258;
    /// min-ttl.
    min_ttl / set_min_ttl: u8 = 258..259;
    /// set-tos.
    set_tos / set_set_tos: u8 = 259..260;
    /// `PFSTATE_*`.
    state_flags / set_state_flags: u16 = 260..262;
    /// set-prio.
    set_prio / set_set_prio: [u8; 2] = 262..264;
}

/// The receiver's value checks on one record's bytes.
pub fn check_bytes(bytes: &[u8; SIZE], dialect: Dialect) -> crate::wire::Result<()> {
    super::check_state_common(
        dialect,
        bytes,
        field::timeout,
        field::src,
        field::dst,
        field::direction,
        field::af,
    )?;
    for (name, key) in [("key[0].af", 0), ("key[1].af", 1)] {
        let at = field::key.start + key * crate::wire::msg::key_openbsd::SIZE;
        let af = bytes[at + crate::wire::msg::key_openbsd::field::af.start];
        if af != 0 {
            super::check_af(dialect, name, af)?;
        }
    }
    Ok(())
}

impl StateOpenBsdRepr {
    /// The receiver's value checks (on the bytes this record emits).
    pub fn check(&self, dialect: Dialect) -> crate::wire::Result<()> {
        let mut bytes = [0u8; SIZE];
        self.emit_bytes(&mut bytes);
        check_bytes(&bytes, dialect)
    }
}
