//! A state peer (`struct pfsync_state_peer` on OpenBSD, `pf_state_peer_export` on
//! FreeBSD), 32 bytes, the same on both.

use crate::wire::codec::wire_struct;

/// `PFSYNC_SCRUB_FLAG_VALID` / `PF_SCRUB_FLAG_VALID`: the scrub fields are meaningful.
pub const SCRUB_FLAG_VALID: u8 = 0x01;
/// `PF_TCPS_PROXY_DST`, the highest peer state a kernel accepts.
pub const STATE_MAX: u8 = 12;

wire_struct! {
    /// `struct pfsync_state_peer` / `struct pf_state_peer_export`.
    PeerPacket, PeerRepr, size 32;
    /// `scrub.pfss_flags` (only `PFSS_TIMESTAMP` is sent).
    pfss_flags / set_pfss_flags: u16 = 0..2;
    /// `scrub.pfss_ttl`: stashed TTL.
    pfss_ttl / set_pfss_ttl: u8 = 2..3;
    /// `scrub.scrub_flag`: 0x01 when the scrub fields are valid.
    scrub_flag / set_scrub_flag: u8 = 3..4;
    /// `scrub.pfss_ts_mod`: timestamp modulation (FreeBSD SCTP: verification tag).
    pfss_ts_mod / set_pfss_ts_mod: u32 = 4..8;
    /// Highest sequence number sent.
    seqlo / set_seqlo: u32 = 8..12;
    /// Highest the other end acknowledged plus its window.
    seqhi / set_seqhi: u32 = 12..16;
    /// Sequence number modulator.
    seqdiff / set_seqdiff: u32 = 16..20;
    /// Largest window, before scaling.
    max_win / set_max_win: u16 = 20..22;
    /// MSS option.
    mss / set_mss: u16 = 22..24;
    /// TCP state 0..=12 (`TCPS_*`, proxy states), or for other protocols 0..=2.
    state / set_state: u8 = 24..25;
    /// Low 4 bits: window scale; 0x80: scaling negotiated.
    wscale / set_wscale: u8 = 25..26;
    [pad] _pad = 26..32;
}

/// The kernels' check of a received peer: its state level is at most 12.
pub fn check_state(which: &'static str, state: u8) -> crate::wire::Result<()> {
    if state > STATE_MAX {
        return Err(crate::wire::Error::BadValue {
            field: which,
            value: state.into(),
        });
    }
    Ok(())
}

impl PeerRepr {
    /// The kernels' check of a received peer: its state level is at most 12.
    pub fn check(&self, which: &'static str) -> crate::wire::Result<()> {
        check_state(which, self.state)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    static BYTES: [u8; 32] = [
        0x00, 0x01, 64, 0x01, 0xde, 0xad, 0xbe, 0xef, // scrub
        0x11, 0x22, 0x33, 0x44, // seqlo
        0x55, 0x66, 0x77, 0x88, // seqhi
        0, 0, 0, 9, // seqdiff
        0xff, 0xff, 0x05, 0xb4, // max_win, mss 1460
        4, 0x87, 0, 0, 0, 0, 0, 0, // ESTABLISHED, wscale 7 negotiated, pad
    ];

    #[test]
    fn deconstruct() {
        let p = PeerPacket::new_checked(&BYTES[..]).unwrap();
        assert_eq!(p.pfss_flags(), 1);
        assert_eq!(p.pfss_ttl(), 64);
        assert_eq!(p.scrub_flag(), SCRUB_FLAG_VALID);
        assert_eq!(p.pfss_ts_mod(), 0xdead_beef);
        assert_eq!(p.seqlo(), 0x1122_3344);
        assert_eq!(p.seqhi(), 0x5566_7788);
        assert_eq!(p.seqdiff(), 9);
        assert_eq!(p.max_win(), 0xffff);
        assert_eq!(p.mss(), 1460);
        assert_eq!(p.state(), 4);
        assert_eq!(p.wscale(), 0x87);
    }

    #[test]
    fn emit_writes_pads() {
        let repr = PeerRepr::parse_bytes(&BYTES).unwrap();
        let mut buf = [0xa5u8; 32];
        repr.emit_bytes(&mut buf);
        assert_eq!(buf, BYTES);
    }

    #[test]
    fn state_above_proxy_dst_is_badval() {
        let mut b = BYTES;
        b[24] = 13;
        let repr = PeerRepr::parse_bytes(&b).unwrap();
        assert_eq!(
            repr.check("src.state").unwrap_err().counter(),
            crate::wire::Counter::Badval
        );
    }
}
