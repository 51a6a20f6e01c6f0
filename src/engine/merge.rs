//! Merging a peer's view of a state into ours: the stale-update rules of the kernels'
//! `pfsync_upd_tcp`, on the neutral model.
//!
//! For each direction, the peer's data replaces ours unless ours is newer ("stale"
//! side). The number of stale sides decides what happens next: none or one, the timeout
//! is taken over too; one or two, we answer with our own newer copy.

use crate::state::{Peer, PeerState, Protocol, State, TcpState};

/// TCP states from which pf proxies the handshake (`PF_TCPS_PROXY_SRC`).
const PROXY_SRC: u8 = TcpState::ProxySrc as u8;

/// `a` is after `b` in 32-bit sequence space (`SEQ_GT`).
pub fn seq_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

fn level(p: &Peer) -> u8 {
    match p.state {
        PeerState::Tcp(s) => s.number(),
        PeerState::Level(l) => l.get(),
    }
}

/// The result of a merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    /// Sides (0, 1 or 2) on which our copy is newer than the peer's.
    pub stale: u8,
    /// Our copy changed.
    pub changed: bool,
}

/// Merges the peers and timeout of `theirs` into `ours`. `full` is true for a full
/// update (expiry and counters are taken over too when not stale on both sides).
pub fn merge(ours: &mut State, theirs: &State, full: bool) -> Merge {
    let before = *ours;
    let (src_stale, dst_stale) = if ours.wire.proto == Protocol::Tcp {
        let (ls, ms) = (level(&ours.src), level(&theirs.src));
        let src = (ls > ms && (ls < PROXY_SRC || ms >= PROXY_SRC))
            || (ls == ms && seq_gt(ours.src.seqlo, theirs.src.seqlo));
        let (ld, md) = (level(&ours.dst), level(&theirs.dst));
        // OpenBSD's rule for the destination side: equal states compare seqlo.
        // (FreeBSD compares seqlo from SYN_SENT on, whatever the message's state.)
        let dst = ld > md || (ld == md && seq_gt(ours.dst.seqlo, theirs.dst.seqlo));
        (src, dst)
    } else {
        (
            level(&ours.src) > level(&theirs.src),
            level(&ours.dst) > level(&theirs.dst),
        )
    };
    if !src_stale {
        ours.src = theirs.src;
    }
    if !dst_stale {
        ours.dst = theirs.dst;
    }
    let stale = u8::from(src_stale) + u8::from(dst_stale);
    if stale < 2 {
        ours.timeout = theirs.timeout;
        if full {
            ours.expire_secs = theirs.expire_secs;
            ours.packets = theirs.packets;
            ours.bytes = theirs.bytes;
        }
    }
    Merge {
        stale,
        changed: *ours != before,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::state::{PeerLevel, Timeout};

    fn tcp(src: (TcpState, u32), dst: (TcpState, u32)) -> State {
        let mut s = State::default();
        s.wire.proto = Protocol::Tcp;
        s.src.state = PeerState::Tcp(src.0);
        s.src.seqlo = src.1;
        s.dst.state = PeerState::Tcp(dst.0);
        s.dst.seqlo = dst.1;
        s
    }

    #[test]
    fn sequence_comparison_wraps() {
        assert!(seq_gt(5, 3));
        assert!(seq_gt(2, u32::MAX - 2));
        assert!(!seq_gt(u32::MAX - 2, 2));
        assert!(!seq_gt(7, 7));
    }

    #[test]
    fn newer_peer_data_replaces_ours() {
        use TcpState::Established as E;
        let mut ours = tcp((E, 100), (E, 200));
        let mut theirs = tcp((E, 150), (E, 250));
        theirs.timeout = Timeout::TcpClosing;
        let m = merge(&mut ours, &theirs, false);
        assert_eq!(
            m,
            Merge {
                stale: 0,
                changed: true
            }
        );
        assert_eq!((ours.src.seqlo, ours.dst.seqlo), (150, 250));
        assert_eq!(ours.timeout, Timeout::TcpClosing);
    }

    #[test]
    fn one_stale_side_keeps_ours_there_and_takes_the_timeout() {
        use TcpState::Established as E;
        let mut ours = tcp((E, 500), (E, 200));
        let mut theirs = tcp((E, 150), (E, 250));
        theirs.timeout = Timeout::TcpClosing;
        let m = merge(&mut ours, &theirs, false);
        assert_eq!(m.stale, 1);
        assert_eq!((ours.src.seqlo, ours.dst.seqlo), (500, 250));
        assert_eq!(ours.timeout, Timeout::TcpClosing);
    }

    #[test]
    fn both_sides_stale_keeps_everything() {
        use TcpState::{Established as E, FinWait2};
        let mut ours = tcp((FinWait2, 10), (FinWait2, 10));
        let theirs = tcp((E, 99), (E, 99));
        let before = ours;
        let m = merge(&mut ours, &theirs, true);
        assert_eq!(
            m,
            Merge {
                stale: 2,
                changed: false
            }
        );
        assert_eq!(ours, before);
    }

    #[test]
    fn a_proxied_handshake_is_not_newer_than_a_real_state() {
        // Ours is PROXY_SRC (11), theirs ESTABLISHED (4): 11 > 4 but ours is a proxy
        // state and theirs is not, so ours does not count as newer.
        let mut ours = tcp((TcpState::ProxySrc, 1), (TcpState::Established, 1));
        let theirs = tcp((TcpState::Established, 1), (TcpState::Established, 1));
        assert_eq!(merge(&mut ours, &theirs, false).stale, 0);
    }

    #[test]
    fn other_protocols_compare_levels_only() {
        let mut ours = State::default();
        ours.wire.proto = Protocol::Udp;
        ours.src.state = PeerState::Level(PeerLevel::MULTIPLE);
        ours.dst.state = PeerState::Level(PeerLevel::SINGLE);
        let mut theirs = ours;
        theirs.src.state = PeerState::Level(PeerLevel::SINGLE);
        theirs.dst.state = PeerState::Level(PeerLevel::MULTIPLE);
        let m = merge(&mut ours, &theirs, false);
        assert_eq!(m.stale, 1);
        assert_eq!(ours.src.state, PeerState::Level(PeerLevel::MULTIPLE));
        assert_eq!(ours.dst.state, PeerState::Level(PeerLevel::MULTIPLE));
    }
}
