//! The IPv4 header an IPv4 raw socket (and bpf) delivers in front of the pfsync payload.

use std::net::Ipv4Addr;
use std::ops::Range;

use super::config::IPPROTO_PFSYNC;

/// Length of an IPv4 header without options.
pub const IPV4_MIN_HEADER_LEN: usize = 20;

/// The "don't fragment" flag in the flags/fragment-offset field.
const FLAG_DF: u16 = 0x4000;
/// The "more fragments" flag.
const FLAG_MF: u16 = 0x2000;
/// The fragment offset (in 8-byte units).
const OFFSET_MASK: u16 = 0x1fff;

/// Why bytes are not an IPv4 pfsync datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ipv4Error {
    /// Fewer bytes than the fixed header.
    #[error("IPv4 header truncated: {0} bytes")]
    Short(usize),
    /// The version nibble is not 4.
    #[error("IP version {0}, expected 4")]
    Version(u8),
    /// IHL below 5.
    #[error("IPv4 header length {0} below 20")]
    HeaderLength(usize),
    /// The header (with options) is longer than the bytes.
    #[error("IPv4 header of {header} bytes in {len} bytes")]
    HeaderBeyond {
        /// IHL × 4.
        header: usize,
        /// What there is.
        len: usize,
    },
    /// The total length is below the header length or above the bytes.
    #[error("IPv4 total length {total} with a {header}-byte header in {len} bytes")]
    TotalLength {
        /// The total length field.
        total: usize,
        /// IHL × 4.
        header: usize,
        /// What there is.
        len: usize,
    },
    /// A fragment (raw sockets and pfsync deal in whole datagrams).
    #[error("IPv4 fragment (offset {offset}, more {more})")]
    Fragment {
        /// Byte offset.
        offset: usize,
        /// MF flag.
        more: bool,
    },
    /// Another protocol than pfsync.
    #[error("IP protocol {0}, expected 240")]
    Protocol(u8),
}

/// The fields of an IPv4 header pfsync cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Type of service (pfsync senders use 0x10, low delay).
    pub tos: u8,
    /// The DF flag.
    pub dont_fragment: bool,
    /// Time to live.
    pub ttl: u8,
    /// Protocol.
    pub protocol: u8,
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
    /// Where the payload is in the parsed bytes: after the header (and its options), up to
    /// the total length (anything after it is not part of the datagram).
    pub payload: Range<usize>,
}

impl Ipv4Header {
    /// Parses the header at the start of `packet`, strictly: version 4, IHL ≥ 5, the header
    /// and the total length within `packet`, not a fragment. Any protocol.
    pub fn parse(packet: &[u8]) -> Result<Ipv4Header, Ipv4Error> {
        if packet.len() < IPV4_MIN_HEADER_LEN {
            return Err(Ipv4Error::Short(packet.len()));
        }
        let version = packet[0] >> 4;
        if version != 4 {
            return Err(Ipv4Error::Version(version));
        }
        let header = usize::from(packet[0] & 0x0f) * 4;
        if header < IPV4_MIN_HEADER_LEN {
            return Err(Ipv4Error::HeaderLength(header));
        }
        if header > packet.len() {
            return Err(Ipv4Error::HeaderBeyond {
                header,
                len: packet.len(),
            });
        }
        let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        if total < header || total > packet.len() {
            return Err(Ipv4Error::TotalLength {
                total,
                header,
                len: packet.len(),
            });
        }
        let frag = u16::from_be_bytes([packet[6], packet[7]]);
        let more = frag & FLAG_MF != 0;
        let offset = usize::from(frag & OFFSET_MASK) * 8;
        if more || offset != 0 {
            return Err(Ipv4Error::Fragment { offset, more });
        }
        Ok(Ipv4Header {
            tos: packet[1],
            dont_fragment: frag & FLAG_DF != 0,
            ttl: packet[8],
            protocol: packet[9],
            src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
            dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
            payload: header..total,
        })
    }

    /// [`Ipv4Header::parse`], and the protocol must be pfsync (240).
    pub fn parse_pfsync(packet: &[u8]) -> Result<Ipv4Header, Ipv4Error> {
        let header = Ipv4Header::parse(packet)?;
        if header.protocol != IPPROTO_PFSYNC {
            return Err(Ipv4Error::Protocol(header.protocol));
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::link::ipv4_packet;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 240);
    const PAYLOAD: &[u8] = &[6, 0, 0, 24, 0xa5, 0xa5, 0xa5, 0xa5];

    fn packet() -> Vec<u8> {
        ipv4_packet(SRC, GROUP, 255, IPPROTO_PFSYNC, PAYLOAD).unwrap()
    }

    #[test]
    fn parses_a_kernel_style_header() {
        let bytes = packet();
        let h = Ipv4Header::parse_pfsync(&bytes).unwrap();
        assert_eq!(
            h,
            Ipv4Header {
                tos: 0x10,
                dont_fragment: true,
                ttl: 255,
                protocol: 240,
                src: SRC,
                dst: GROUP,
                payload: 20..28,
            }
        );
        assert_eq!(&bytes[h.payload], PAYLOAD);
    }

    #[test]
    fn options_move_the_payload() {
        let mut bytes = packet();
        // IHL 6: one 4-byte option word (NOPs) after the fixed header.
        bytes[0] = 0x46;
        bytes.splice(20..20, [1, 1, 1, 1]);
        let total = u16::try_from(bytes.len()).unwrap();
        bytes[2..4].copy_from_slice(&total.to_be_bytes());
        let h = Ipv4Header::parse_pfsync(&bytes).unwrap();
        assert_eq!(h.payload, 24..32);
        assert_eq!(&bytes[h.payload], PAYLOAD);
    }

    #[test]
    fn bytes_after_the_total_length_are_not_payload() {
        let mut bytes = packet();
        bytes.extend_from_slice(&[0xee; 6]);
        let h = Ipv4Header::parse(&bytes).unwrap();
        assert_eq!(&bytes[h.payload], PAYLOAD);
    }

    #[test]
    fn every_malformation_is_refused() {
        let good = packet();
        assert_eq!(Ipv4Header::parse(&good[..19]), Err(Ipv4Error::Short(19)));
        assert_eq!(Ipv4Header::parse(&[]), Err(Ipv4Error::Short(0)));

        let mut v6 = good.clone();
        v6[0] = 0x65;
        assert_eq!(Ipv4Header::parse(&v6), Err(Ipv4Error::Version(6)));

        let mut ihl4 = good.clone();
        ihl4[0] = 0x44;
        assert_eq!(Ipv4Header::parse(&ihl4), Err(Ipv4Error::HeaderLength(16)));

        let mut ihl15 = good.clone();
        ihl15[0] = 0x4f;
        assert_eq!(
            Ipv4Header::parse(&ihl15),
            Err(Ipv4Error::HeaderBeyond {
                header: 60,
                len: 28
            })
        );

        let mut long = good.clone();
        long[2..4].copy_from_slice(&29u16.to_be_bytes());
        assert_eq!(
            Ipv4Header::parse(&long),
            Err(Ipv4Error::TotalLength {
                total: 29,
                header: 20,
                len: 28
            })
        );
        let mut short = good.clone();
        short[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert!(matches!(
            Ipv4Header::parse(&short),
            Err(Ipv4Error::TotalLength { total: 19, .. })
        ));

        let mut first_fragment = good.clone();
        first_fragment[6] = 0x20; // MF, offset 0
        assert_eq!(
            Ipv4Header::parse(&first_fragment),
            Err(Ipv4Error::Fragment {
                offset: 0,
                more: true
            })
        );
        let mut later_fragment = good.clone();
        later_fragment[6..8].copy_from_slice(&3u16.to_be_bytes());
        assert_eq!(
            Ipv4Header::parse(&later_fragment),
            Err(Ipv4Error::Fragment {
                offset: 24,
                more: false
            })
        );

        let udp = ipv4_packet(SRC, GROUP, 255, 17, PAYLOAD).unwrap();
        assert!(Ipv4Header::parse(&udp).is_ok());
        assert_eq!(Ipv4Header::parse_pfsync(&udp), Err(Ipv4Error::Protocol(17)));
    }

    #[test]
    fn an_empty_payload_is_a_valid_datagram() {
        let bytes = ipv4_packet(SRC, GROUP, 1, IPPROTO_PFSYNC, &[]).unwrap();
        let h = Ipv4Header::parse_pfsync(&bytes).unwrap();
        assert_eq!(h.ttl, 1);
        assert!(h.payload.is_empty());
    }
}
