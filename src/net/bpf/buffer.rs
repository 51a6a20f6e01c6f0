//! Reading what bpf(4) returns: one read gives a buffer of records, each a `struct
//! bpf_hdr`, then the captured bytes, then padding up to the next `BPF_WORDALIGN`
//! boundary. The header's layout and the alignment differ between the BSDs; the offsets
//! below are checked against the real headers (`tests` in this module, on the bindgen
//! oracle). A buffer is walked without copying; every length is checked, and a record
//! that does not fit ends the walk with an error (never a panic, never a loop).

use std::net::{IpAddr, Ipv6Addr};
use std::ops::Range;

use super::program::{LinkType, Os, AF_INET};
use crate::net::Ipv4Header;

/// Where the fields of `struct bpf_hdr` are, and which header lengths a kernel writes.
///
/// A record's header is not `sizeof(struct bpf_hdr)` long: the kernel sizes it so that
/// the network header after the link header lands on a `BPF_ALIGNMENT` boundary. FreeBSD
/// (`sys/net/bpf.c` `bpf_hdrlen()`) writes `BPF_WORDALIGN(linkhdr + SIZEOF_BPF_HDR) -
/// linkhdr` with `SIZEOF_BPF_HDR` the end of `bh_hdrlen` (26 on amd64): 26 for Ethernet,
/// 28 for DLT_NULL, 32 for DLT_RAW, the packet over the struct's tail padding. OpenBSD
/// (`bpfsattach()`) does the same with `sizeof(struct bpf_hdr)`: 28 since bpf.h 1.74
/// (7.7, `bh_csumflags`), 20 in bpf.h 1.67 (6.6, nothing past `bh_hdrlen`). So the walker
/// takes `bh_hdrlen` as the packet's offset, and refuses only lengths no kernel writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLayout {
    /// Offset of `bh_caplen` (u32).
    pub caplen: usize,
    /// Offset of `bh_datalen` (u32).
    pub datalen: usize,
    /// Offset of `bh_hdrlen` (u16).
    pub hdrlen: usize,
    /// The longest `bh_hdrlen` a kernel writes: its longest header, padded by up to
    /// `align - 1` bytes.
    pub max_hdrlen: usize,
    /// `BPF_ALIGNMENT`: records start at multiples of it.
    pub align: usize,
}

impl HeaderLayout {
    /// FreeBSD on LP64 (amd64, arm64): a 16-byte `struct timeval`, `BPF_ALIGNMENT` =
    /// `sizeof(long)`; headers of `SIZEOF_BPF_HDR` = 26 bytes plus padding.
    pub const FREEBSD: HeaderLayout = HeaderLayout {
        caplen: 16,
        datalen: 20,
        hdrlen: 24,
        max_hdrlen: 26 + 7,
        align: 8,
    };
    /// OpenBSD: an 8-byte `struct bpf_timeval`, `BPF_ALIGNMENT` = `sizeof(u_int32_t)`;
    /// headers from 18 bytes (the fields up to `bh_hdrlen`, the oldest layout) to 28 (with
    /// `bh_csumflags` and tail padding) plus padding.
    pub const OPENBSD: HeaderLayout = HeaderLayout {
        caplen: 8,
        datalen: 12,
        hdrlen: 16,
        max_hdrlen: 28 + 3,
        align: 4,
    };

    /// The layout of `os`.
    pub const fn of(os: Os) -> HeaderLayout {
        match os {
            Os::FreeBsd => HeaderLayout::FREEBSD,
            Os::OpenBsd => HeaderLayout::OPENBSD,
        }
    }

    /// The shortest header a kernel writes: up to the end of `bh_hdrlen`, FreeBSD's
    /// `SIZEOF_BPF_HDR`. Fewer bytes left than this cannot be a record.
    pub const fn min_hdrlen(&self) -> usize {
        self.hdrlen + 2
    }
}

/// A buffer that bpf cannot have written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BpfError {
    /// Fewer bytes left than a record header.
    #[error("bpf buffer: {left} bytes left at {at}, less than a record header")]
    ShortHeader {
        /// Where the record starts.
        at: usize,
        /// Bytes left.
        left: usize,
    },
    /// A header length no kernel writes (shorter than the fields up to `bh_hdrlen`,
    /// longer than the longest header with its padding), or past the buffer.
    #[error("bpf buffer: header length {hdrlen} at {at} is not one a kernel writes")]
    BadHeaderLength {
        /// Where the record starts.
        at: usize,
        /// `bh_hdrlen`.
        hdrlen: usize,
    },
    /// A captured length past the buffer, or longer than the packet.
    #[error("bpf buffer: {caplen} captured bytes at {at} run past the buffer or the packet")]
    BadCaptureLength {
        /// Where the record starts.
        at: usize,
        /// `bh_caplen`.
        caplen: usize,
    },
}

/// One record of a bpf buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The captured bytes (the frame, link header first).
    pub frame: &'a [u8],
    /// The packet's length on the wire (more than the frame if it was cut).
    pub datalen: usize,
}

/// The records of one bpf read.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    buf: &'a [u8],
    at: usize,
    layout: HeaderLayout,
    failed: bool,
}

impl<'a> Records<'a> {
    /// The records of `buf`, as `os` lays them out on LP64.
    pub fn new(buf: &'a [u8], os: Os) -> Records<'a> {
        Records::with_layout(buf, HeaderLayout::of(os))
    }

    /// The records of `buf` in `layout` (the receiver passes the target's own).
    pub fn with_layout(buf: &'a [u8], layout: HeaderLayout) -> Records<'a> {
        Records {
            buf,
            at: 0,
            layout,
            failed: false,
        }
    }

    /// Where the next record starts (the buffer's length once walked).
    pub fn offset(&self) -> usize {
        self.at.min(self.buf.len())
    }
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, BpfError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.buf.len() {
            return None;
        }
        let at = self.at;
        let rest = &self.buf[at..];
        let l = self.layout;
        let mut fail = |e| {
            self.failed = true;
            Some(Err(e))
        };
        // The last record of a read may end before the header's tail padding would
        // (FreeBSD stores the packet over it): only the fields up to bh_hdrlen are sure.
        if rest.len() < l.min_hdrlen() {
            return fail(BpfError::ShortHeader {
                at,
                left: rest.len(),
            });
        }
        let caplen = u32_at(rest, l.caplen);
        let datalen = u32_at(rest, l.datalen);
        let hdrlen = usize::from(u16::from_ne_bytes([rest[l.hdrlen], rest[l.hdrlen + 1]]));
        if hdrlen < l.min_hdrlen() || hdrlen > l.max_hdrlen || hdrlen > rest.len() {
            return fail(BpfError::BadHeaderLength { at, hdrlen });
        }
        // The kernel captures min(snap length, packet length): never more than the packet.
        if caplen > rest.len() - hdrlen || caplen > datalen {
            return fail(BpfError::BadCaptureLength { at, caplen });
        }
        let end = hdrlen + caplen;
        // The next record starts at the next multiple of the alignment (or the buffer
        // ends); hdrlen > 0, so the walk always moves on.
        self.at = at + end.div_ceil(l.align) * l.align;
        Some(Ok(Record {
            frame: &rest[hdrlen..end],
            datalen,
        }))
    }
}

/// What the IP layer of a captured frame says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpPacket {
    /// The pfsync payload, within the frame.
    pub payload: Range<usize>,
    /// The source address.
    pub source: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// It is IPv6.
    pub ipv6: bool,
}

/// Why a record gives the engine nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// bpf cut the frame short of the packet: a part of a datagram is not a datagram.
    Cut,
    /// No pfsync datagram in the frame.
    NotPfsync,
}

/// The pfsync datagram of a record of `link` on `os`, whole.
pub fn pfsync_in_record(record: &Record<'_>, link: LinkType, os: Os) -> Result<IpPacket, Skipped> {
    if record.frame.len() < record.datalen {
        return Err(Skipped::Cut);
    }
    pfsync_in_frame(record.frame, link, os).ok_or(Skipped::NotPfsync)
}

/// The pfsync datagram in a frame of `link` on `os`: `None` for anything else (the
/// filter lets nothing else through, but a frame is checked all the same).
pub fn pfsync_in_frame(frame: &[u8], link: LinkType, os: Os) -> Option<IpPacket> {
    let (ip_at, v6) = match link {
        LinkType::Ethernet => {
            let ethertype =
                |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
            let (at, t) = match ethertype(12)? {
                0x8100 => (18, ethertype(16)?),
                t => (14, t),
            };
            match t {
                0x0800 => (at, false),
                0x86dd => (at, true),
                _ => return None,
            }
        }
        LinkType::Null | LinkType::Loop => {
            let word: [u8; 4] = frame.get(..4)?.try_into().ok()?;
            let af = if link == LinkType::Null {
                u32::from_ne_bytes(word)
            } else {
                u32::from_be_bytes(word)
            };
            match af {
                AF_INET => (4, false),
                af if af == os.af_inet6() => (4, true),
                _ => return None,
            }
        }
        LinkType::Raw => match frame.first()? >> 4 {
            4 => (0, false),
            6 => (0, true),
            _ => return None,
        },
    };
    let ip = frame.get(ip_at..)?;
    if v6 {
        // Fixed header only: pfsync is sent without extension headers.
        if ip.len() < 40 || ip[0] >> 4 != 6 || ip[6] != 240 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        let end = 40usize.checked_add(len)?.min(ip.len());
        let src: [u8; 16] = ip[8..24].try_into().ok()?;
        Some(IpPacket {
            payload: ip_at + 40..ip_at + end,
            source: IpAddr::V6(Ipv6Addr::from(src)),
            ttl: ip[7],
            ipv6: true,
        })
    } else {
        let h = Ipv4Header::parse_pfsync(ip).ok()?;
        Some(IpPacket {
            payload: ip_at + h.payload.start..ip_at + h.payload.end,
            source: IpAddr::V4(h.src),
            ttl: h.ttl,
            ipv6: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4_pfsync(ttl: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0x10, 0, 0, 0, 0, 0x40, 0, ttl, 240, 0, 0, 10, 0, 0, 1, 224, 0, 0, 240,
        ];
        let total = (20 + payload.len()) as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    // The walk over each kernel's records, and what it refuses, is tested on the kernel
    // model: tests/kernel_bpf.rs.

    #[test]
    fn the_pfsync_datagram_is_found_behind_each_link_header() {
        let ip = ipv4_pfsync(255, b"pfsync!");
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&ip);
        let p = pfsync_in_frame(&eth, LinkType::Ethernet, Os::FreeBsd).unwrap();
        assert_eq!(&eth[p.payload.clone()], b"pfsync!");
        assert_eq!(p.ttl, 255);
        assert_eq!(p.source, "10.0.0.1".parse::<IpAddr>().unwrap());
        let mut lo = 2u32.to_be_bytes().to_vec();
        lo.extend_from_slice(&ip);
        let p = pfsync_in_frame(&lo, LinkType::Loop, Os::OpenBsd).unwrap();
        assert_eq!(&lo[p.payload], b"pfsync!");
        let p = pfsync_in_frame(&ip, LinkType::Raw, Os::OpenBsd).unwrap();
        assert_eq!(&ip[p.payload], b"pfsync!");
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[4..6].copy_from_slice(&3u16.to_be_bytes());
        v6[6] = 240;
        v6[7] = 255;
        v6[8] = 0x20;
        v6.extend_from_slice(b"abc");
        let mut null = 28u32.to_ne_bytes().to_vec();
        null.extend_from_slice(&v6);
        let p = pfsync_in_frame(&null, LinkType::Null, Os::FreeBsd).unwrap();
        assert!(p.ipv6);
        assert_eq!(&null[p.payload], b"abc");
        assert!(pfsync_in_frame(&null, LinkType::Null, Os::OpenBsd).is_none());
        assert!(pfsync_in_frame(&[], LinkType::Ethernet, Os::FreeBsd).is_none());
    }

    /// The offsets above, against the real headers.
    #[cfg(pfsyncd_oracle)]
    #[test]
    fn layouts_match_the_kernel_headers() {
        use crate::sys::{freebsd, openbsd};
        use std::mem::{offset_of, size_of};
        let f = HeaderLayout::FREEBSD;
        assert_eq!(offset_of!(freebsd::bpf_hdr, bh_caplen), f.caplen);
        assert_eq!(offset_of!(freebsd::bpf_hdr, bh_datalen), f.datalen);
        assert_eq!(offset_of!(freebsd::bpf_hdr, bh_hdrlen), f.hdrlen);
        // FreeBSD's SIZEOF_BPF_HDR; the header with the most padding follows it.
        assert_eq!(f.min_hdrlen(), 26);
        assert_eq!(f.max_hdrlen, f.min_hdrlen() + f.align - 1);
        assert_eq!(size_of::<freebsd::bpf_hdr>(), 32);
        let o = HeaderLayout::OPENBSD;
        assert_eq!(offset_of!(openbsd::bpf_hdr, bh_caplen), o.caplen);
        assert_eq!(offset_of!(openbsd::bpf_hdr, bh_datalen), o.datalen);
        assert_eq!(offset_of!(openbsd::bpf_hdr, bh_hdrlen), o.hdrlen);
        // OpenBSD's SIZEOF_BPF_HDR is the whole struct, padded to BPF_ALIGNMENT.
        assert_eq!(o.max_hdrlen, size_of::<openbsd::bpf_hdr>() + o.align - 1);
        for (os, null, en, lp, raw) in [
            (
                Os::FreeBsd,
                freebsd::DLT_NULL,
                freebsd::DLT_EN10MB,
                freebsd::DLT_LOOP,
                freebsd::DLT_RAW,
            ),
            (
                Os::OpenBsd,
                openbsd::DLT_NULL,
                openbsd::DLT_EN10MB,
                openbsd::DLT_LOOP,
                openbsd::DLT_RAW,
            ),
        ] {
            assert_eq!(LinkType::Null.dlt(os), null);
            assert_eq!(LinkType::Ethernet.dlt(os), en);
            assert_eq!(LinkType::Loop.dlt(os), lp);
            assert_eq!(LinkType::Raw.dlt(os), raw);
        }
        assert_eq!(Os::FreeBsd.af_inet6(), freebsd::AF_INET6);
        assert_eq!(Os::OpenBsd.af_inet6(), openbsd::AF_INET6);
    }
}
