//! FreeBSD 14 state record (`struct pfsync_state_1400`), 277 bytes: INS (13), UPD (14).
//! The 1301 layout up to `updates` (with a 16-bit `state_flags`), then routing,
//! queueing and dummynet fields.

use crate::wire::codec::{wire_struct, IfName, PfAddr};
use crate::wire::msg::key_freebsd::KeyFreeBsdRepr;
use crate::wire::msg::peer::PeerRepr;
use crate::wire::Dialect;

wire_struct! {
    /// FreeBSD `struct pfsync_state_1400`.
    State1400Packet, State1400Repr, size 277;
    /// State id.
    id / set_id: u64 = 0..8;
    /// Interface, "all" for floating states.
    ifname / set_ifname: IfName = 8..24;
    /// key[0] wire, key[1] stack.
    key / set_key: [KeyFreeBsdRepr; 2] = 24..96;
    /// The side that opened the connection.
    src / set_src: PeerRepr = 96..128;
    /// The other side.
    dst / set_dst: PeerRepr = 128..160;
    /// route-to / reply-to / dup-to next hop.
    rt_addr / set_rt_addr: PfAddr = 160..176;
    /// Rule number, 0xffffffff for none.
    rule / set_rule: u32 = 176..180;
    /// Anchor rule number.
    anchor / set_anchor: u32 = 180..184;
    /// NAT rule number.
    nat_rule / set_nat_rule: u32 = 184..188;
    /// Age in seconds.
    creation / set_creation: u32 = 188..192;
    /// Seconds until expiry.
    expire / set_expire: u32 = 192..196;
    /// Packets [in, out].
    packets / set_packets: [u64; 2] = 196..212;
    /// Bytes [in, out].
    bytes / set_bytes: [u64; 2] = 212..228;
    /// Creator host id.
    creatorid / set_creatorid: u32 = 228..232;
    /// Address family, 2 or 28.
    af / set_af: u8 = 232..233;
    /// IP protocol.
    proto / set_proto: u8 = 233..234;
    /// 1 in, 2 out.
    direction / set_direction: u8 = 234..235;
    /// `PFSTATE_*` (unaligned 16 bits).
    state_flags / set_state_flags: u16 = 235..237;
    /// Log flags.
    log / set_log: u8 = 237..238;
    /// Timeout index.
    timeout / set_timeout: u8 = 239..240;
    /// `PFSYNC_FLAG_*`.
    sync_flags / set_sync_flags: u8 = 240..241;
    /// Unused, 0.
    updates / set_updates: u8 = 241..242;
    /// ALTQ queue id.
    qid / set_qid: u16 = 242..244;
    /// ALTQ priority queue id.
    pqid / set_pqid: u16 = 244..246;
    /// dummynet pipe.
    dnpipe / set_dnpipe: u16 = 246..248;
    /// dummynet reverse pipe.
    dnrpipe / set_dnrpipe: u16 = 248..250;
    /// Routing table, -1 for the default.
    rtableid / set_rtableid: i32 = 250..254;
    /// min-ttl.
    min_ttl / set_min_ttl: u8 = 254..255;
    /// set-tos.
    set_tos / set_set_tos: u8 = 255..256;
    /// max-mss.
    max_mss / set_max_mss: u16 = 256..258;
    /// set-prio.
    set_prio / set_set_prio: [u8; 2] = 258..260;
    /// Route type (FreeBSD numbering).
    rt / set_rt: u8 = 260..261;
    /// Route interface.
    rt_ifname / set_rt_ifname: IfName = 261..277;
    [pad] __spare = 238..239;
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
    Ok(())
}

impl State1400Repr {
    /// The receiver's value checks (on the bytes this record emits).
    pub fn check(&self, dialect: Dialect) -> crate::wire::Result<()> {
        let mut bytes = [0u8; SIZE];
        self.emit_bytes(&mut bytes);
        check_bytes(&bytes, dialect)
    }
}
