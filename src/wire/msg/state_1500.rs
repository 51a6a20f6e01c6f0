//! FreeBSD 15 state record (`struct pfsync_state_1500`), 360 bytes: INS (15), UPD (16).
//! The 1301 layout up to `creatorid`, then a realigned tail with separate wire and stack
//! address families and protocols (af-to), the tag name and the original interface.

use crate::wire::codec::{wire_struct, IfName, PfAddr, TagName};
use crate::wire::msg::key_freebsd::KeyFreeBsdRepr;
use crate::wire::msg::peer::PeerRepr;
use crate::wire::Dialect;

wire_struct! {
    /// FreeBSD `struct pfsync_state_1500`.
    State1500Packet, State1500Repr, size 360;
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
    /// pf tag name.
    tagname / set_tagname: TagName = 232..296;
    /// Route interface.
    rt_ifname / set_rt_ifname: IfName = 296..312;
    /// The real interface of a floating state.
    orig_ifname / set_orig_ifname: IfName = 312..328;
    /// Routing table, -1 for the default.
    rtableid / set_rtableid: i32 = 328..332;
    /// `PFSTATE_*`.
    state_flags / set_state_flags: u16 = 332..334;
    /// ALTQ queue id.
    qid / set_qid: u16 = 334..336;
    /// ALTQ priority queue id.
    pqid / set_pqid: u16 = 336..338;
    /// dummynet pipe.
    dnpipe / set_dnpipe: u16 = 338..340;
    /// dummynet reverse pipe.
    dnrpipe / set_dnrpipe: u16 = 340..342;
    /// max-mss.
    max_mss / set_max_mss: u16 = 342..344;
    /// Address family of the wire key.
    wire_af / set_wire_af: u8 = 344..345;
    /// Address family of the stack key.
    stack_af / set_stack_af: u8 = 345..346;
    /// Address family of the route.
    rt_af / set_rt_af: u8 = 346..347;
    /// IP protocol of the wire key.
    wire_proto / set_wire_proto: u8 = 347..348;
    /// IP protocol of the stack key.
    stack_proto / set_stack_proto: u8 = 348..349;
    /// Log flags.
    log / set_log: u8 = 349..350;
    /// Timeout index.
    timeout / set_timeout: u8 = 350..351;
    /// 1 in, 2 out.
    direction / set_direction: u8 = 351..352;
    /// Route type (FreeBSD numbering).
    rt / set_rt: u8 = 352..353;
    /// min-ttl.
    min_ttl / set_min_ttl: u8 = 353..354;
    /// set-tos.
    set_tos / set_set_tos: u8 = 354..355;
    /// set-prio.
    set_prio / set_set_prio: [u8; 2] = 355..357;
    [pad] spare = 357..360;
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
        field::wire_af,
    )?;
    super::check_af(dialect, "stack_af", super::byte(bytes, field::stack_af))?;
    Ok(())
}

impl State1500Repr {
    /// The receiver's value checks (on the bytes this record emits).
    pub fn check(&self, dialect: Dialect) -> crate::wire::Result<()> {
        let mut bytes = [0u8; SIZE];
        self.emit_bytes(&mut bytes);
        check_bytes(&bytes, dialect)
    }
}
