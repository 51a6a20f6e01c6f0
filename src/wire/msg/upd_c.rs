//! UPD_C (`struct pfsync_upd_c`), 84 bytes: a compressed update, the peers and the
//! timeout of a state the receiver already has.

use crate::wire::codec::wire_struct;
use crate::wire::msg::peer::PeerRepr;
use crate::wire::Dialect;

wire_struct! {
    /// `struct pfsync_upd_c`.
    UpdCPacket, UpdCRepr, size 84;
    /// State id.
    id / set_id: u64 = 0..8;
    /// Source peer.
    src / set_src: PeerRepr = 8..40;
    /// Destination peer.
    dst / set_dst: PeerRepr = 40..72;
    /// Creator host id.
    creatorid / set_creatorid: u32 = 72..76;
    /// Sent as 0 by both kernels, ignored on receive.
    expire / set_expire: u32 = 76..80;
    /// Timeout index (`PFTM_*`).
    timeout / set_timeout: u8 = 80..81;
    /// OpenBSD `state_flags` (sent 0); FreeBSD `_pad[0]`.
    state_flags / set_state_flags: u8 = 81..82;
    [pad] _pad = 82..84;
}

/// The receiver's value checks on one record's bytes: timeout below `PFTM_MAX`, peer
/// states at most 12.
pub fn check_bytes(bytes: &[u8; SIZE], dialect: Dialect) -> crate::wire::Result<()> {
    super::check_timeout(dialect, super::byte(bytes, field::timeout))?;
    super::peer::check_state("src.state", super::peer_state(bytes, &field::src))?;
    super::peer::check_state("dst.state", super::peer_state(bytes, &field::dst))
}

impl UpdCRepr {
    /// The receiver's value checks (on the bytes this record emits).
    pub fn check(&self, dialect: Dialect) -> crate::wire::Result<()> {
        let mut bytes = [0u8; SIZE];
        self.emit_bytes(&mut bytes);
        check_bytes(&bytes, dialect)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn sample() -> UpdCRepr {
        let mut peer = PeerRepr {
            seqlo: 1000,
            seqhi: 2000,
            max_win: 512,
            mss: 1460,
            state: 4,
            wscale: 2,
            ..PeerRepr::default()
        };
        let src = peer;
        peer.seqlo = 3000;
        UpdCRepr {
            id: 0x0102_0304_0506_0708,
            src,
            dst: peer,
            creatorid: 0xcafe_f00d,
            expire: 0,
            timeout: 2,
            state_flags: 0,
        }
    }

    #[test]
    fn emit_then_parse() {
        let repr = sample();
        let mut buf = [0xa5u8; SIZE];
        repr.emit_bytes(&mut buf);
        assert_eq!(&buf[0..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&buf[8 + 8..8 + 12], &1000u32.to_be_bytes());
        assert_eq!(&buf[40 + 8..40 + 12], &3000u32.to_be_bytes());
        assert_eq!(&buf[72..76], &[0xca, 0xfe, 0xf0, 0x0d]);
        assert_eq!(buf[80], 2);
        assert_eq!(&buf[82..84], &[0, 0]);
        assert_eq!(UpdCRepr::parse_bytes(&buf).unwrap(), repr);
    }

    #[test]
    fn timeout_limits_differ_per_dialect() {
        let mut r = sample();
        r.timeout = 22; // PFTM_SCTP_ESTABLISHED
        assert!(r.check(Dialect::FreeBsd1500).is_ok());
        assert_eq!(
            r.check(Dialect::OpenBsd).unwrap_err().counter(),
            crate::wire::Counter::Badval
        );
    }
}
