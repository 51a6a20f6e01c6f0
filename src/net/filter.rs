//! What the sync link makes of a received datagram, before and for the engine.
//!
//! The kernels check the arrival interface (`badif`) and the TTL (`badttl`) and nothing of
//! the source; the engine counts those two itself from [`Received::on_syncdev`] and
//! [`Received::ttl`]. What only userland needs is dropping its own packets: multicast loop
//! is off, but a unicast syncpeer that is one of our addresses, or a bridged setup, can still
//! bring them back.

use crate::engine::Received;

use super::config::PFSYNC_TTL;
use super::iface::Interface;
use super::recv::ReceivedPacket;

/// The fate of a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// From a peer, on the syncdev, with TTL 255.
    Accept,
    /// TTL or hop limit not 255 (the engine counts `badttl`).
    BadTtl,
    /// Not arrived on the syncdev (the engine counts `badif`).
    BadIf,
    /// Sent by us: its source is one of the syncdev's addresses. Dropped before the engine.
    Own,
}

/// Classifies a datagram. Our own come first (whatever else is wrong with them, they are
/// no peer's); then the kernels' order: interface, then TTL.
pub fn classify(packet: &ReceivedPacket, syncdev: &Interface) -> Verdict {
    if syncdev.owns(packet.source) {
        Verdict::Own
    } else if packet.ifindex != Some(syncdev.index) {
        Verdict::BadIf
    } else if packet.ttl != PFSYNC_TTL {
        Verdict::BadTtl
    } else {
        Verdict::Accept
    }
}

impl ReceivedPacket {
    /// What the engine takes ([`crate::engine::Engine::handle_packet`]), for a datagram
    /// received into `buf`. `on_syncdev` is false when the arrival interface is unknown.
    pub fn to_engine<'b>(&self, buf: &'b [u8], syncdev_index: u32) -> Received<'b> {
        Received {
            payload: self.payload(buf),
            on_syncdev: self.ifindex == Some(syncdev_index),
            ttl: self.ttl,
            ipv6: self.ipv6,
            source: Some(self.source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn syncdev() -> Interface {
        Interface {
            name: "em1".into(),
            index: 3,
            addrs: vec![
                IpAddr::from([192, 0, 2, 1]),
                "fe80::1".parse().unwrap(),
                "2001:db8::1".parse().unwrap(),
            ],
        }
    }

    fn packet(source: &str, ttl: u8, ifindex: Option<u32>) -> ReceivedPacket {
        let source: IpAddr = source.parse().unwrap();
        ReceivedPacket {
            payload: 20..28,
            source,
            ttl,
            ifindex,
            ipv6: source.is_ipv6(),
        }
    }

    #[test]
    fn a_peer_on_the_syncdev_with_ttl_255_is_accepted() {
        let dev = syncdev();
        assert_eq!(
            classify(&packet("192.0.2.2", 255, Some(3)), &dev),
            Verdict::Accept
        );
        assert_eq!(
            classify(&packet("fe80::2", 255, Some(3)), &dev),
            Verdict::Accept
        );
    }

    #[test]
    fn any_other_ttl_is_bad() {
        let dev = syncdev();
        for ttl in [0, 1, 64, 254] {
            assert_eq!(
                classify(&packet("192.0.2.2", ttl, Some(3)), &dev),
                Verdict::BadTtl
            );
            assert_eq!(
                classify(&packet("2001:db8::2", ttl, Some(3)), &dev),
                Verdict::BadTtl
            );
        }
    }

    #[test]
    fn another_or_an_unknown_interface_is_bad_before_the_ttl() {
        let dev = syncdev();
        assert_eq!(
            classify(&packet("192.0.2.2", 255, Some(4)), &dev),
            Verdict::BadIf
        );
        assert_eq!(
            classify(&packet("192.0.2.2", 255, None), &dev),
            Verdict::BadIf
        );
        // Both wrong: the interface is checked first, as the kernels do.
        assert_eq!(
            classify(&packet("192.0.2.2", 1, Some(4)), &dev),
            Verdict::BadIf
        );
    }

    #[test]
    fn our_own_addresses_are_own_whatever_else() {
        let dev = syncdev();
        for source in ["192.0.2.1", "fe80::1", "2001:db8::1"] {
            assert_eq!(classify(&packet(source, 255, Some(3)), &dev), Verdict::Own);
            assert_eq!(classify(&packet(source, 1, Some(1)), &dev), Verdict::Own);
        }
    }

    #[test]
    fn the_engine_gets_payload_interface_and_ttl() {
        let buf: Vec<u8> = (0..40).collect();
        let r = packet("192.0.2.2", 254, Some(3)).to_engine(&buf, 3);
        assert_eq!(r.payload, &buf[20..28]);
        assert!(r.on_syncdev);
        assert_eq!(r.ttl, 254);
        assert!(!r.ipv6);
        let r = packet("2001:db8::2", 255, Some(4)).to_engine(&buf, 3);
        assert!(!r.on_syncdev);
        assert!(r.ipv6);
        assert!(!packet("192.0.2.2", 255, None).to_engine(&buf, 3).on_syncdev);
    }
}
