//! The packet carried inside the tunnel: a pfsync packet exactly as the kernel sends it on
//! the plain link (an IP packet, protocol 240, TTL/hop limit 255), so the receiving engine
//! applies the same checks whichever link it came over.

use std::net::{IpAddr, Ipv6Addr};
use std::ops::Range;

use crate::capture::link::{ipv4_packet, ipv6_packet};
use crate::net::{Ipv4Header, IPPROTO_PFSYNC};

use super::Refusal;

/// The TTL (hop limit) pfsync is sent with and checked against: a packet that crossed a
/// router is not from the link (pfsync(4)).
pub const PFSYNC_TTL: u8 = 255;
/// IPv6 fixed header length.
const IPV6_HEADER_LEN: usize = 40;

/// Why an inner packet cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InnerBuildError {
    /// Source and destination of different families.
    #[error("inner addresses {src} and {dst} are of different families")]
    Family {
        /// This node's inner address.
        src: IpAddr,
        /// The peer's.
        dst: IpAddr,
    },
    /// More than an IP packet holds.
    #[error("pfsync payload of {0} bytes does not fit one IP packet")]
    TooLong(usize),
}

/// Wraps a pfsync payload in the IP header the kernel would put in front of it.
pub fn build_inner(src: IpAddr, dst: IpAddr, payload: &[u8]) -> Result<Vec<u8>, InnerBuildError> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_packet(s, d, PFSYNC_TTL, IPPROTO_PFSYNC, payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_packet(s, d, PFSYNC_TTL, IPPROTO_PFSYNC, payload),
        _ => return Err(InnerBuildError::Family { src, dst }),
    }
    .map_err(|_| InnerBuildError::TooLong(payload.len()))
}

/// The fields of a decrypted inner packet that decide whether it is accepted.
struct InnerHeader {
    src: IpAddr,
    protocol: u8,
    ttl: u8,
    payload: Range<usize>,
}

fn parse_ipv6(packet: &[u8]) -> Option<InnerHeader> {
    if packet.len() < IPV6_HEADER_LEN || packet[0] >> 4 != 6 {
        return None;
    }
    let end = IPV6_HEADER_LEN + usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    if end > packet.len() {
        return None;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&packet[8..24]);
    Some(InnerHeader {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        // pfsync is sent without extension headers; one in front of it is refused as
        // another protocol rather than walked.
        protocol: packet[6],
        ttl: packet[7],
        payload: IPV6_HEADER_LEN..end,
    })
}

fn parse_inner(packet: &[u8]) -> Option<InnerHeader> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => Ipv4Header::parse(packet).ok().map(|h| InnerHeader {
            src: IpAddr::V4(h.src),
            protocol: h.protocol,
            ttl: h.ttl,
            payload: h.payload,
        }),
        Some(6) => parse_ipv6(packet),
        _ => None,
    }
}

/// Accepts a decrypted inner packet only if it is pfsync as the kernel sends it, from the
/// peer's configured inner address; returns where the pfsync payload is.
pub fn check_inner(packet: &[u8], peer_inner: IpAddr) -> Result<Range<usize>, Refusal> {
    let header = parse_inner(packet).ok_or(Refusal::InnerMalformed)?;
    if header.src != peer_inner {
        return Err(Refusal::InnerSource);
    }
    if header.protocol != IPPROTO_PFSYNC {
        return Err(Refusal::InnerProtocol);
    }
    if header.ttl != PFSYNC_TTL {
        return Err(Refusal::InnerTtl);
    }
    Ok(header.payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    const A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
    const B6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));

    #[test]
    fn a_built_packet_passes_the_check_in_both_families() {
        for (a, b) in [(A4, B4), (A6, B6)] {
            let packet = build_inner(a, b, b"pfsync").unwrap();
            let payload = check_inner(&packet, a).unwrap();
            assert_eq!(&packet[payload], b"pfsync");
            assert_eq!(check_inner(&packet, b), Err(Refusal::InnerSource));
        }
        assert!(matches!(
            build_inner(A4, B6, b""),
            Err(InnerBuildError::Family { .. })
        ));
    }

    #[test]
    fn another_protocol_ttl_or_garbage_is_refused() {
        let tcp = ipv4_packet(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            255,
            6,
            b"x",
        )
        .unwrap();
        assert_eq!(check_inner(&tcp, A4), Err(Refusal::InnerProtocol));
        let routed = ipv6_packet(
            Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
            Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
            254,
            IPPROTO_PFSYNC,
            b"x",
        )
        .unwrap();
        assert_eq!(check_inner(&routed, A6), Err(Refusal::InnerTtl));
        for garbage in [&[][..], &[0x45][..], &[0x60; 39][..], &[0x10; 60][..]] {
            assert_eq!(check_inner(garbage, A4), Err(Refusal::InnerMalformed));
        }
    }
}
