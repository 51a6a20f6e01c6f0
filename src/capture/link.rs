//! From a captured frame to a pfsync payload: the link-layer header, then IPv4 or IPv6,
//! or for `LINKTYPE_PFSYNC` the payload directly. And the reverse, to build frames for
//! test captures: IPv4/IPv6 headers, Ethernet with an optional VLAN tag, BSD loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::linktype;
use super::source::Endian;

/// IP protocol number of pfsync (`IPPROTO_PFSYNC`).
pub const IPPROTO_PFSYNC: u8 = 240;
/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Ethertype of ARP (used by tests as a frame that is not IP).
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethertype of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// Ethertypes of stacked (802.1ad and pre-standard QinQ) tags, skipped like 802.1Q.
const ETHERTYPE_QINQ: [u16; 2] = [0x88a8, 0x9100];

/// `AF_INET` on every BSD.
pub const AF_INET: u32 = 2;
/// `AF_INET6` on OpenBSD and NetBSD.
pub const AF_INET6_OPENBSD: u32 = 24;
/// `AF_INET6` on FreeBSD and DragonFly.
pub const AF_INET6_FREEBSD: u32 = 28;
/// `AF_INET6` on macOS.
pub const AF_INET6_DARWIN: u32 = 30;

const ETHERNET_HEADER_LEN: usize = 14;
const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;

/// An IP packet found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPacket<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit (pfsync receivers require 255).
    pub ttl: u8,
    /// IPv4 protocol, or the IPv6 next header after the extension headers.
    pub protocol: u8,
    /// The bytes after the IP header(s), cut to the length the IP header gives.
    pub payload: &'a [u8],
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network<'a> {
    /// An IP packet, of any protocol.
    Ip(IpPacket<'a>),
    /// A pfsync payload without IP header (`LINKTYPE_PFSYNC`).
    Pfsync(&'a [u8]),
}

impl<'a> Network<'a> {
    /// The pfsync payload, if this is pfsync: IP protocol 240 or the pfsync link type.
    pub fn pfsync_payload(&self) -> Option<&'a [u8]> {
        match self {
            Network::Ip(ip) if ip.protocol == IPPROTO_PFSYNC => Some(ip.payload),
            Network::Ip(_) => None,
            Network::Pfsync(payload) => Some(payload),
        }
    }
}

/// Why a frame gave no IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// A link type this decoder does not know.
    #[error("link type {0} is not supported")]
    UnsupportedLinkType(u32),
    /// Fewer bytes than a header needs.
    #[error("truncated {layer} header: need {need} bytes, have {have}")]
    Truncated {
        /// The header.
        layer: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// An Ethernet frame of another protocol.
    #[error("not IP: ethertype {0:#06x}")]
    NotIpEthertype(u16),
    /// A loopback frame of another address family.
    #[error("not IP: address family {0}")]
    NotIpFamily(u32),
    /// An IP version nibble that does not fit the link type or the ethertype.
    #[error("IP version {found} where {expected} was expected")]
    BadIpVersion {
        /// What the link layer announced ("IPv4", "IPv6", "IPv4 or IPv6").
        expected: &'static str,
        /// The version nibble found.
        found: u8,
    },
    /// An IPv4 header length below 20 bytes.
    #[error("IPv4 header length {0} bytes is below 20")]
    BadHeaderLength(usize),
    /// An IPv4 total length shorter than its header.
    #[error("IPv4 total length {total} is shorter than its {header}-byte header")]
    BadTotalLength {
        /// Total length.
        total: usize,
        /// Header length.
        header: usize,
    },
    /// The IP header announces more bytes than were captured.
    #[error("IPv{version} packet of {declared} bytes, only {captured} captured")]
    CutShort {
        /// 4 or 6.
        version: u8,
        /// Length the header gives.
        declared: usize,
        /// Bytes present.
        captured: usize,
    },
    /// A fragment of a pfsync packet (pfsync is sent with DF; it cannot be decoded).
    #[error(
        "IPv{version} fragment of a pfsync packet at offset {offset}{}",
        if *more { ", more follow" } else { ", the last" }
    )]
    Fragment {
        /// 4 or 6.
        version: u8,
        /// Fragment offset in bytes.
        offset: usize,
        /// The more-fragments flag.
        more: bool,
    },
    /// A packet too long for the IP length field (building only).
    #[error("{layer} payload of {len} bytes is too long")]
    TooLong {
        /// The header being built.
        layer: &'static str,
        /// Payload length.
        len: usize,
    },
}

impl LinkError {
    /// True when the frame is well formed but simply not IP: counted as "not pfsync"
    /// rather than reported.
    pub fn is_not_ip(&self) -> bool {
        matches!(
            self,
            LinkError::NotIpEthertype(_) | LinkError::NotIpFamily(_)
        )
    }
}

fn truncated(layer: &'static str, need: usize, have: usize) -> LinkError {
    LinkError::Truncated { layer, need, have }
}

/// Peels the link layer (and IP) off a frame of `link_type`.
pub fn decapsulate(link_type: u32, frame: &[u8]) -> Result<Network<'_>, LinkError> {
    match link_type {
        linktype::PFSYNC | linktype::PFSYNC_OPENBSD | linktype::PFSYNC_FREEBSD => {
            Ok(Network::Pfsync(frame))
        }
        linktype::ETHERNET => ethernet(frame),
        linktype::RAW | linktype::RAW_BSD | linktype::RAW_OPENBSD => ip_any(frame),
        linktype::IPV4 => ipv4(frame),
        linktype::IPV6 => ipv6(frame),
        linktype::NULL => loopback(frame, None),
        linktype::LOOP => loopback(frame, Some(Endian::Big)),
        other => Err(LinkError::UnsupportedLinkType(other)),
    }
}

fn ethernet(frame: &[u8]) -> Result<Network<'_>, LinkError> {
    if frame.len() < ETHERNET_HEADER_LEN {
        return Err(truncated("Ethernet", ETHERNET_HEADER_LEN, frame.len()));
    }
    let mut at = 12;
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    // Each tag is 2 bytes of TCI and the next ethertype; the loop ends because every
    // turn consumes 4 bytes of a finite frame.
    while ethertype == ETHERTYPE_VLAN || ETHERTYPE_QINQ.contains(&ethertype) {
        at += 4;
        let Some(next) = frame.get(at..at + 2) else {
            return Err(truncated("802.1Q tag", at + 2, frame.len()));
        };
        ethertype = u16::from_be_bytes([next[0], next[1]]);
    }
    let payload = &frame[at + 2..];
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(payload),
        ETHERTYPE_IPV6 => ipv6(payload),
        other => Err(LinkError::NotIpEthertype(other)),
    }
}

/// BSD loopback: the address family in 4 bytes, in the capturing host's byte order
/// (`NULL`, either order accepted) or in network order (`LOOP`).
fn loopback(frame: &[u8], endian: Option<Endian>) -> Result<Network<'_>, LinkError> {
    let Some(head) = frame.get(..4) else {
        return Err(truncated("loopback", 4, frame.len()));
    };
    let raw = [head[0], head[1], head[2], head[3]];
    let known = |af: u32| {
        matches!(
            af,
            AF_INET | AF_INET6_OPENBSD | AF_INET6_FREEBSD | AF_INET6_DARWIN
        )
    };
    let af = match endian {
        Some(e) => e.u32(raw),
        None => {
            let little = Endian::Little.u32(raw);
            let big = Endian::Big.u32(raw);
            if known(little) || !known(big) {
                little
            } else {
                big
            }
        }
    };
    let payload = &frame[4..];
    match af {
        AF_INET => ipv4(payload),
        AF_INET6_OPENBSD | AF_INET6_FREEBSD | AF_INET6_DARWIN => ipv6(payload),
        other => Err(LinkError::NotIpFamily(other)),
    }
}

/// Raw IP of either version.
fn ip_any(packet: &[u8]) -> Result<Network<'_>, LinkError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => ipv4(packet),
        Some(6) => ipv6(packet),
        Some(found) => Err(LinkError::BadIpVersion {
            expected: "IPv4 or IPv6",
            found,
        }),
        None => Err(truncated("IP", 1, 0)),
    }
}

/// The version nibble comes first, so a packet of the wrong version is named as such
/// even when it is also shorter than the expected header.
fn check_version(packet: &[u8], version: u8, name: &'static str) -> Result<(), LinkError> {
    match packet.first().map(|b| b >> 4) {
        None => Err(truncated(name, 1, 0)),
        Some(found) if found != version => Err(LinkError::BadIpVersion {
            expected: name,
            found,
        }),
        Some(_) => Ok(()),
    }
}

fn ipv4(packet: &[u8]) -> Result<Network<'_>, LinkError> {
    check_version(packet, 4, "IPv4")?;
    if packet.len() < IPV4_MIN_HEADER_LEN {
        return Err(truncated("IPv4", IPV4_MIN_HEADER_LEN, packet.len()));
    }
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER_LEN {
        return Err(LinkError::BadHeaderLength(header_len));
    }
    if packet.len() < header_len {
        return Err(truncated("IPv4 (with options)", header_len, packet.len()));
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total < header_len {
        return Err(LinkError::BadTotalLength {
            total,
            header: header_len,
        });
    }
    if total > packet.len() {
        return Err(LinkError::CutShort {
            version: 4,
            declared: total,
            captured: packet.len(),
        });
    }
    let protocol = packet[9];
    let fragment = u16::from_be_bytes([packet[6], packet[7]]);
    let more = fragment & 0x2000 != 0;
    let offset = usize::from(fragment & 0x1fff) * 8;
    if protocol == IPPROTO_PFSYNC && (more || offset != 0) {
        return Err(LinkError::Fragment {
            version: 4,
            offset,
            more,
        });
    }
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Ok(Network::Ip(IpPacket {
        src: src.into(),
        dst: dst.into(),
        ttl: packet[8],
        protocol,
        // The total length cuts off Ethernet padding and trailers.
        payload: &packet[header_len..total],
    }))
}

/// IPv6 extension headers skipped on the way to the upper protocol.
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;
const DEST_OPTIONS: u8 = 60;

fn ipv6(packet: &[u8]) -> Result<Network<'_>, LinkError> {
    check_version(packet, 6, "IPv6")?;
    if packet.len() < IPV6_HEADER_LEN {
        return Err(truncated("IPv6", IPV6_HEADER_LEN, packet.len()));
    }
    let payload_len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    let end = IPV6_HEADER_LEN + payload_len;
    if end > packet.len() {
        return Err(LinkError::CutShort {
            version: 6,
            declared: end,
            captured: packet.len(),
        });
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&packet[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&packet[24..40]);
    let mut next = packet[6];
    let mut rest = &packet[IPV6_HEADER_LEN..end];
    // Every extension header consumes at least 8 bytes, so this ends.
    loop {
        let len = match next {
            HOP_BY_HOP | ROUTING | DEST_OPTIONS => {
                let Some(&words) = rest.get(1) else {
                    return Err(truncated("IPv6 extension", 2, rest.len()));
                };
                8 + usize::from(words) * 8
            }
            AUTH => {
                let Some(&words) = rest.get(1) else {
                    return Err(truncated("IPv6 AH", 2, rest.len()));
                };
                (usize::from(words) + 2) * 4
            }
            FRAGMENT => {
                if rest.len() < 8 {
                    return Err(truncated("IPv6 fragment", 8, rest.len()));
                }
                let field = u16::from_be_bytes([rest[2], rest[3]]);
                let offset = usize::from(field >> 3) * 8;
                let more = field & 1 != 0;
                if rest[0] == IPPROTO_PFSYNC && (offset != 0 || more) {
                    return Err(LinkError::Fragment {
                        version: 6,
                        offset,
                        more,
                    });
                }
                8
            }
            _ => break,
        };
        if rest.len() < len {
            return Err(truncated("IPv6 extension", len, rest.len()));
        }
        next = rest[0];
        rest = &rest[len..];
    }
    Ok(Network::Ip(IpPacket {
        src: Ipv6Addr::from(src).into(),
        dst: Ipv6Addr::from(dst).into(),
        ttl: packet[7],
        protocol: next,
        payload: rest,
    }))
}

/// The Internet checksum of an IPv4 header (with its checksum field zero).
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet as the kernels send pfsync: no options, TOS low-delay, DF, ID 0.
pub fn ipv4_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    protocol: u8,
    payload: &[u8],
) -> Result<Vec<u8>, LinkError> {
    let total =
        u16::try_from(IPV4_MIN_HEADER_LEN + payload.len()).map_err(|_| LinkError::TooLong {
            layer: "IPv4",
            len: payload.len(),
        })?;
    let mut packet = Vec::with_capacity(usize::from(total));
    packet.extend_from_slice(&[0x45, 0x10]);
    packet.extend_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&[0, 0, 0x40, 0, ttl, protocol, 0, 0]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    let checksum = ipv4_checksum(&packet);
    packet[10..12].copy_from_slice(&checksum.to_be_bytes());
    packet.extend_from_slice(payload);
    Ok(packet)
}

/// An IPv6 packet without extension headers.
pub fn ipv6_packet(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    next_header: u8,
    payload: &[u8],
) -> Result<Vec<u8>, LinkError> {
    let len = u16::try_from(payload.len()).map_err(|_| LinkError::TooLong {
        layer: "IPv6",
        len: payload.len(),
    })?;
    let mut packet = Vec::with_capacity(IPV6_HEADER_LEN + payload.len());
    packet.extend_from_slice(&[0x60, 0, 0, 0]);
    packet.extend_from_slice(&len.to_be_bytes());
    packet.extend_from_slice(&[next_header, hop_limit]);
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    packet.extend_from_slice(payload);
    Ok(packet)
}

/// An Ethernet II frame, with an 802.1Q tag if `vlan` is given (its low 12 bits).
pub fn ethernet_frame(
    dst: [u8; 6],
    src: [u8; 6],
    vlan: Option<u16>,
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETHERNET_HEADER_LEN + 4 + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    if let Some(id) = vlan {
        frame.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        frame.extend_from_slice(&(id & 0x0fff).to_be_bytes());
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The Ethernet multicast address of an IPv4 group (01:00:5e + low 23 bits).
pub fn ipv4_multicast_mac(group: Ipv4Addr) -> [u8; 6] {
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

/// The Ethernet multicast address of an IPv6 group (33:33 + low 32 bits).
pub fn ipv6_multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// A BSD loopback frame: the address family in `endian` order, then the packet.
pub fn loopback_frame(af: u32, endian: Endian, packet: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4 + packet.len());
    frame.extend_from_slice(&endian.u32_bytes(af));
    frame.extend_from_slice(packet);
    frame
}

#[cfg(test)]
mod test {
    use super::*;

    const SRC4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const GROUP4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 240);
    const PAYLOAD: &[u8] = b"pfsync payload";

    fn group6() -> Ipv6Addr {
        "ff12::f0".parse().unwrap()
    }

    fn src6() -> Ipv6Addr {
        "fd2c::1".parse().unwrap()
    }

    fn v4() -> Vec<u8> {
        ipv4_packet(SRC4, GROUP4, 255, IPPROTO_PFSYNC, PAYLOAD).unwrap()
    }

    fn v6() -> Vec<u8> {
        ipv6_packet(src6(), group6(), 255, IPPROTO_PFSYNC, PAYLOAD).unwrap()
    }

    fn expect_v4(net: Network<'_>) {
        let Network::Ip(ip) = net else {
            panic!("{net:?}")
        };
        assert_eq!(
            (ip.src, ip.dst, ip.ttl, ip.protocol, ip.payload),
            (SRC4.into(), GROUP4.into(), 255, 240, PAYLOAD)
        );
        assert_eq!(net.pfsync_payload(), Some(PAYLOAD));
    }

    fn expect_v6(net: Network<'_>) {
        let Network::Ip(ip) = net else {
            panic!("{net:?}")
        };
        assert_eq!(
            (ip.src, ip.dst, ip.ttl, ip.protocol, ip.payload),
            (src6().into(), group6().into(), 255, 240, PAYLOAD)
        );
    }

    #[test]
    fn ipv4_header_checksum_verifies() {
        let p = v4();
        assert_eq!(ipv4_checksum(&p[..20]), 0);
        assert_eq!(&p[..4], &[0x45, 0x10, 0, 34]);
        assert_eq!(p[6], 0x40, "DF");
    }

    #[test]
    fn ethernet_with_and_without_vlan_tags() {
        let mac = ipv4_multicast_mac(GROUP4);
        assert_eq!(mac, [1, 0, 0x5e, 0, 0, 240]);
        let plain = ethernet_frame(mac, [2; 6], None, ETHERTYPE_IPV4, &v4());
        expect_v4(decapsulate(linktype::ETHERNET, &plain).unwrap());
        let tagged = ethernet_frame(mac, [2; 6], Some(100), ETHERTYPE_IPV4, &v4());
        assert_eq!(&tagged[12..16], &[0x81, 0x00, 0x00, 100]);
        expect_v4(decapsulate(linktype::ETHERNET, &tagged).unwrap());
        let mut qinq = ethernet_frame(mac, [2; 6], Some(7), ETHERTYPE_VLAN, &[0, 8]);
        qinq[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
        qinq.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        qinq.extend_from_slice(&v6());
        expect_v6(decapsulate(linktype::ETHERNET, &qinq).unwrap());
        let v6_frame = ethernet_frame(
            ipv6_multicast_mac(group6()),
            [2; 6],
            None,
            ETHERTYPE_IPV6,
            &v6(),
        );
        assert_eq!(&v6_frame[..6], &[0x33, 0x33, 0, 0, 0, 0xf0]);
        expect_v6(decapsulate(linktype::ETHERNET, &v6_frame).unwrap());
    }

    #[test]
    fn ethernet_padding_is_cut_by_the_ip_length() {
        let mut frame = ethernet_frame([1; 6], [2; 6], None, ETHERTYPE_IPV4, &v4());
        frame.extend_from_slice(&[0; 12]);
        expect_v4(decapsulate(linktype::ETHERNET, &frame).unwrap());
        let mut frame6 = ethernet_frame([1; 6], [2; 6], None, ETHERTYPE_IPV6, &v6());
        frame6.extend_from_slice(&[0xee; 6]);
        expect_v6(decapsulate(linktype::ETHERNET, &frame6).unwrap());
    }

    #[test]
    fn other_ethertypes_are_not_ip() {
        let arp = ethernet_frame([0xff; 6], [2; 6], None, ETHERTYPE_ARP, &[0; 28]);
        let err = decapsulate(linktype::ETHERNET, &arp).unwrap_err();
        assert_eq!(err, LinkError::NotIpEthertype(ETHERTYPE_ARP));
        assert!(err.is_not_ip());
        let short = decapsulate(linktype::ETHERNET, &arp[..13]).unwrap_err();
        assert!(matches!(short, LinkError::Truncated { need: 14, .. }));
        assert!(!short.is_not_ip());
        let cut_tag = ethernet_frame([1; 6], [2; 6], Some(1), ETHERTYPE_IPV4, &[]);
        assert!(matches!(
            decapsulate(linktype::ETHERNET, &cut_tag[..16]),
            Err(LinkError::Truncated {
                layer: "802.1Q tag",
                ..
            })
        ));
    }

    #[test]
    fn raw_ip_link_types() {
        for link in [linktype::RAW, linktype::RAW_BSD, linktype::RAW_OPENBSD] {
            expect_v4(decapsulate(link, &v4()).unwrap());
            expect_v6(decapsulate(link, &v6()).unwrap());
        }
        expect_v4(decapsulate(linktype::IPV4, &v4()).unwrap());
        expect_v6(decapsulate(linktype::IPV6, &v6()).unwrap());
        assert!(matches!(
            decapsulate(linktype::IPV4, &v6()),
            Err(LinkError::BadIpVersion { found: 6, .. })
        ));
        assert!(matches!(
            decapsulate(linktype::IPV6, &v4()),
            Err(LinkError::BadIpVersion { found: 4, .. })
        ));
        assert!(matches!(
            decapsulate(linktype::RAW, &[0x50]),
            Err(LinkError::BadIpVersion { found: 5, .. })
        ));
        assert!(decapsulate(linktype::RAW, &[]).is_err());
    }

    #[test]
    fn pfsync_link_types_carry_the_payload_directly() {
        for link in [
            linktype::PFSYNC,
            linktype::PFSYNC_OPENBSD,
            linktype::PFSYNC_FREEBSD,
        ] {
            assert_eq!(
                decapsulate(link, PAYLOAD).unwrap(),
                Network::Pfsync(PAYLOAD)
            );
        }
        assert_eq!(
            decapsulate(105, PAYLOAD),
            Err(LinkError::UnsupportedLinkType(105))
        );
    }

    #[test]
    fn loopback_in_either_byte_order_and_every_inet6_number() {
        for endian in [Endian::Little, Endian::Big] {
            expect_v4(
                decapsulate(linktype::NULL, &loopback_frame(AF_INET, endian, &v4())).unwrap(),
            );
            for af in [AF_INET6_OPENBSD, AF_INET6_FREEBSD, AF_INET6_DARWIN] {
                let frame = loopback_frame(af, endian, &v6());
                expect_v6(decapsulate(linktype::NULL, &frame).unwrap());
            }
        }
        let loop_frame = loopback_frame(AF_INET6_OPENBSD, Endian::Big, &v6());
        expect_v6(decapsulate(linktype::LOOP, &loop_frame).unwrap());
        // LOOP is network order only.
        let little = loopback_frame(AF_INET, Endian::Little, &v4());
        assert!(decapsulate(linktype::LOOP, &little)
            .unwrap_err()
            .is_not_ip());
        let other = loopback_frame(17, Endian::Little, &v4());
        assert_eq!(
            decapsulate(linktype::NULL, &other),
            Err(LinkError::NotIpFamily(17))
        );
        assert!(decapsulate(linktype::NULL, &[2, 0]).is_err());
    }

    #[test]
    fn ipv4_header_checks() {
        let good = v4();
        let mut bad = good.clone();
        bad[0] = 0x44;
        assert_eq!(
            decapsulate(linktype::RAW, &bad),
            Err(LinkError::BadHeaderLength(16))
        );
        let mut long = good.clone();
        long[0] = 0x4f;
        assert!(matches!(
            decapsulate(linktype::RAW, &long),
            Err(LinkError::Truncated { need: 60, .. })
        ));
        let mut total = good.clone();
        total[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert!(matches!(
            decapsulate(linktype::RAW, &total),
            Err(LinkError::BadTotalLength { total: 10, .. })
        ));
        assert!(matches!(
            decapsulate(linktype::RAW, &good[..30]),
            Err(LinkError::CutShort {
                declared: 34,
                captured: 30,
                ..
            })
        ));
        assert!(decapsulate(linktype::RAW, &good[..19]).is_err());
    }

    #[test]
    fn ipv4_options_are_skipped() {
        let mut p = vec![0x46, 0x10, 0, 38, 0, 0, 0x40, 0, 255, 240, 0, 0];
        p.extend_from_slice(&SRC4.octets());
        p.extend_from_slice(&GROUP4.octets());
        p.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        p.extend_from_slice(PAYLOAD);
        expect_v4(decapsulate(linktype::RAW, &p).unwrap());
    }

    #[test]
    fn fragments_of_pfsync_are_errors_other_protocols_pass() {
        let mut frag = v4();
        frag[6] = 0x20; // MF
        assert!(matches!(
            decapsulate(linktype::RAW, &frag),
            Err(LinkError::Fragment {
                version: 4,
                more: true,
                ..
            })
        ));
        let mut udp_frag = ipv4_packet(SRC4, GROUP4, 64, 17, PAYLOAD).unwrap();
        udp_frag[7] = 1;
        let Network::Ip(ip) = decapsulate(linktype::RAW, &udp_frag).unwrap() else {
            panic!()
        };
        assert_eq!(ip.protocol, 17);
    }

    #[test]
    fn ipv6_extension_headers_are_walked() {
        let mut ext = vec![IPPROTO_PFSYNC, 0, 1, 4, 0, 0, 0, 0]; // dest options, 8 bytes
        ext.extend_from_slice(PAYLOAD);
        let mut hop = vec![DEST_OPTIONS, 1];
        hop.extend_from_slice(&[0; 14]); // hop-by-hop of 16 bytes
        hop.extend_from_slice(&ext);
        let p = ipv6_packet(src6(), group6(), 255, HOP_BY_HOP, &hop).unwrap();
        expect_v6(decapsulate(linktype::RAW, &p).unwrap());
        // An atomic fragment (offset 0, no more) passes; a real one is refused.
        let mut frag = vec![IPPROTO_PFSYNC, 0, 0, 0, 0, 0, 0, 1];
        frag.extend_from_slice(PAYLOAD);
        let p = ipv6_packet(src6(), group6(), 255, FRAGMENT, &frag).unwrap();
        expect_v6(decapsulate(linktype::RAW, &p).unwrap());
        frag[3] = 1; // more fragments
        let p = ipv6_packet(src6(), group6(), 255, FRAGMENT, &frag).unwrap();
        assert!(matches!(
            decapsulate(linktype::RAW, &p),
            Err(LinkError::Fragment { version: 6, .. })
        ));
        // An extension header longer than the packet.
        let p = ipv6_packet(src6(), group6(), 255, ROUTING, &[IPPROTO_PFSYNC, 9]).unwrap();
        assert!(matches!(
            decapsulate(linktype::RAW, &p),
            Err(LinkError::Truncated { .. })
        ));
        // ESP hides the protocol: not pfsync.
        let p = ipv6_packet(src6(), group6(), 255, 50, PAYLOAD).unwrap();
        assert_eq!(
            decapsulate(linktype::RAW, &p).unwrap().pfsync_payload(),
            None
        );
    }

    #[test]
    fn ipv6_payload_length_is_checked() {
        let p = v6();
        assert!(matches!(
            decapsulate(linktype::RAW, &p[..45]),
            Err(LinkError::CutShort { version: 6, .. })
        ));
        assert!(matches!(
            decapsulate(linktype::RAW, &p[..39]),
            Err(LinkError::Truncated { need: 40, .. })
        ));
    }

    #[test]
    fn oversized_payloads_cannot_be_built() {
        let big = vec![0u8; 70_000];
        assert!(ipv4_packet(SRC4, GROUP4, 255, 240, &big).is_err());
        assert!(ipv6_packet(src6(), group6(), 255, 240, &big).is_err());
    }
}
