//! Capture files: reading pcap and pcapng, writing them, and the link layers between a
//! captured frame and a pfsync payload. Used by `pfsyncd decode` and to make the test
//! captures.
//!
//! Both readers take any [`std::io::Read`] and are strict: every refusal is a
//! [`CaptureError`], no input makes them panic, and no declared length is trusted
//! beyond the bytes actually present (a frame or block is read into a buffer that grows
//! with the data, and is refused above a fixed limit rather than allocated).

pub mod link;
pub mod pcap;
pub mod pcapng;
mod source;
pub mod write;

use std::io::{self, Read};
use std::time::Duration;

pub use link::{decapsulate, IpPacket, LinkError, Network};
pub use source::Endian;

/// Link-layer header types (`LINKTYPE_*` in files; some BSD `DLT_*` values as they
/// appear in files written on BSDs).
pub mod linktype {
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    pub const NULL: u32 = 0;
    /// Ethernet II, possibly with 802.1Q tags.
    pub const ETHERNET: u32 = 1;
    /// Raw IP as OpenBSD writes `DLT_RAW`.
    pub const RAW_OPENBSD: u32 = 14;
    /// Raw IP as most other BSDs write `DLT_RAW`.
    pub const RAW_BSD: u32 = 12;
    /// OpenBSD's `DLT_PFSYNC`, written as is by its libpcap.
    pub const PFSYNC_OPENBSD: u32 = 18;
    /// Raw IPv4 or IPv6, told apart by the version nibble.
    pub const RAW: u32 = 101;
    /// OpenBSD loopback: like `NULL` but the address family is in network byte order.
    pub const LOOP: u32 = 108;
    /// FreeBSD's `DLT_PFSYNC`, written as is by its libpcap.
    pub const PFSYNC_FREEBSD: u32 = 121;
    /// Raw IPv4 only.
    pub const IPV4: u32 = 228;
    /// Raw IPv6 only.
    pub const IPV6: u32 = 229;
    /// `LINKTYPE_PFSYNC`: frames start at the pfsync header, as bpf on `pfsync0` gives them.
    pub const PFSYNC: u32 = 246;
}

/// The longest frame either reader accepts: libpcap's own limit on a snapshot length.
/// A record declaring more is refused, whatever the file's snaplen says.
pub const MAX_FRAME_LEN: usize = 262_144;

/// One captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Position among the packet records of the file, from 1.
    pub number: u64,
    /// Capture time since the Unix epoch; `None` for pcapng simple packet blocks.
    pub time: Option<Duration>,
    /// Link-layer header type of the frame's interface.
    pub link_type: u32,
    /// pcapng interface index (0 in pcap files).
    pub interface: u32,
    /// The captured bytes.
    pub data: &'a [u8],
    /// Length of the frame on the wire (more than `data.len()` if the capture cut it).
    pub orig_len: u32,
}

/// Why a capture file could not be read (further).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The underlying reader failed.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    /// The file is shorter than any capture header.
    #[error("not a pcap or pcapng file: only {0} bytes")]
    TooShort(usize),
    /// The first four bytes are no pcap or pcapng magic number.
    #[error("not a pcap or pcapng file: it starts with {:02x}{:02x}{:02x}{:02x}", .0[0], .0[1], .0[2], .0[3])]
    NotACapture([u8; 4]),
    /// pcap with the modified (Kuznetzov) magic, whose records carry extra fields.
    #[error("modified pcap format (magic a1b2cd34) is not supported")]
    ModifiedPcap,
    /// A major version this reader does not know.
    #[error("{format} version {major}.{minor} is not supported")]
    UnsupportedVersion {
        /// "pcap" or "pcapng".
        format: &'static str,
        /// Major version.
        major: u16,
        /// Minor version.
        minor: u16,
    },
    /// The file ends inside a header, record or block.
    #[error("truncated {what} at byte {offset}: need {need} bytes, have {have}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// File offset where it starts.
        offset: u64,
        /// Bytes it declares or needs.
        need: u64,
        /// Bytes present.
        have: u64,
    },
    /// A frame longer than [`MAX_FRAME_LEN`].
    #[error("frame {frame} at byte {offset}: captured length {len} exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// Frame number.
        frame: u64,
        /// File offset of its record.
        offset: u64,
        /// Declared captured length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A pcapng block length that is not a multiple of 4 or below the minimum.
    #[error("pcapng {block} at byte {offset}: total length {len} is {problem}")]
    BadBlockLength {
        /// Block name.
        block: &'static str,
        /// File offset of the block.
        offset: u64,
        /// Declared total length.
        len: u32,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A pcapng block bigger than this reader holds in memory.
    #[error("pcapng {block} at byte {offset}: total length {len} exceeds the {max}-byte limit")]
    BlockTooLarge {
        /// Block name.
        block: &'static str,
        /// File offset of the block.
        offset: u64,
        /// Declared total length.
        len: u32,
        /// The limit.
        max: usize,
    },
    /// The length at the end of a pcapng block differs from the one at its start.
    #[error("pcapng {block} at byte {offset}: trailing length {trailer} differs from {len}")]
    LengthMismatch {
        /// Block name.
        block: &'static str,
        /// File offset of the block.
        offset: u64,
        /// Leading total length.
        len: u32,
        /// Trailing total length.
        trailer: u32,
    },
    /// A section header whose byte-order magic is neither 1a2b3c4d nor 4d3c2b1a.
    #[error("pcapng section header at byte {offset}: byte-order magic {magic:02x?}")]
    BadByteOrder {
        /// File offset of the block.
        offset: u64,
        /// The four bytes found.
        magic: [u8; 4],
    },
    /// A pcapng block body shorter than its fixed fields.
    #[error("pcapng {block} at byte {offset}: body of {have} bytes, its fixed fields need {need}")]
    BlockTooShort {
        /// Block name.
        block: &'static str,
        /// File offset of the block.
        offset: u64,
        /// Bytes the fixed fields need.
        need: usize,
        /// Body bytes present.
        have: usize,
    },
    /// A packet's captured length runs past the end of its block.
    #[error("pcapng {block} at byte {offset}: captured length {captured} runs past the block ({available} bytes left)")]
    CapturedPastBlock {
        /// Block name.
        block: &'static str,
        /// File offset of the block.
        offset: u64,
        /// Declared captured length.
        captured: u32,
        /// Bytes left in the block body.
        available: usize,
    },
    /// A packet block refers to an interface the section did not describe.
    #[error("pcapng {block} at byte {offset}: interface {interface} not described (the section has {declared})")]
    UnknownInterface {
        /// Block name.
        block: &'static str,
        /// File offset of the block.
        offset: u64,
        /// The interface index.
        interface: u32,
        /// How many interfaces the section described.
        declared: usize,
    },
    /// An option list that runs past its block.
    #[error("pcapng {block} at byte {offset}: option {code} runs past the end of the block")]
    BadOption {
        /// Block name.
        block: &'static str,
        /// File offset of the block.
        offset: u64,
        /// Option code.
        code: u16,
    },
    /// A section describing more interfaces than [`pcapng::MAX_INTERFACES`].
    #[error(
        "pcapng interface description at byte {offset}: more than {max} interfaces in one section"
    )]
    TooManyInterfaces {
        /// File offset of the block.
        offset: u64,
        /// The limit.
        max: usize,
    },
    /// An `if_tsresol` finer than this reader can convert.
    #[error("pcapng interface {interface}: timestamp resolution {byte:#04x} is not supported")]
    UnsupportedResolution {
        /// Interface index.
        interface: u32,
        /// The `if_tsresol` byte.
        byte: u8,
    },
}

impl CaptureError {
    /// True when the error concerns one packet block whose bytes were all consumed, so
    /// the file's framing is intact and reading may go on with the next block.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            CaptureError::CapturedPastBlock { .. }
                | CaptureError::UnknownInterface { .. }
                | CaptureError::BlockTooShort {
                    block: pcapng::EPB_NAME | pcapng::SPB_NAME | pcapng::OPB_NAME,
                    ..
                }
        )
    }
}

/// The capture file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap.
    Pcap,
    /// pcapng.
    PcapNg,
}

impl Format {
    /// "pcap" or "pcapng".
    pub fn name(self) -> &'static str {
        match self {
            Format::Pcap => "pcap",
            Format::PcapNg => "pcapng",
        }
    }
}

/// A reader for either format, chosen by the file's first four bytes.
#[derive(Debug)]
pub struct CaptureReader<R> {
    inner: Inner<R>,
}

#[derive(Debug)]
enum Inner<R> {
    Pcap(pcap::PcapReader<R>),
    PcapNg(pcapng::PcapNgReader<R>),
}

impl<R: Read> CaptureReader<R> {
    /// Reads the file header and picks the format.
    pub fn new(reader: R) -> Result<Self, CaptureError> {
        let mut source = source::Source::new(reader, 0);
        let mut magic = [0u8; 4];
        let n = source.fill(&mut magic)?;
        if n < magic.len() {
            return Err(CaptureError::TooShort(n));
        }
        let inner = if pcapng::is_magic(magic) {
            Inner::PcapNg(pcapng::PcapNgReader::after_magic(source)?)
        } else {
            Inner::Pcap(pcap::PcapReader::after_magic(source, magic)?)
        };
        Ok(CaptureReader { inner })
    }

    /// The file's format.
    pub fn format(&self) -> Format {
        match self.inner {
            Inner::Pcap(_) => Format::Pcap,
            Inner::PcapNg(_) => Format::PcapNg,
        }
    }

    /// The next frame, `None` at a clean end of file.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        match &mut self.inner {
            Inner::Pcap(r) => r.next_frame(),
            Inner::PcapNg(r) => r.next_frame(),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn short_and_foreign_files_are_refused() {
        assert!(matches!(
            CaptureReader::new(&b"ab"[..]),
            Err(CaptureError::TooShort(2))
        ));
        assert!(matches!(
            CaptureReader::new(&b"GIF89a..."[..]),
            Err(CaptureError::NotACapture(_))
        ));
    }

    /// Reads every frame and prints every pfsync payload, as `pfsyncd decode` does.
    fn decode_everything(bytes: &[u8]) {
        let Ok(mut reader) = CaptureReader::new(bytes) else {
            return;
        };
        // Every step consumes input, so this ends; the bound is a safety net.
        for _ in 0..10_000 {
            match reader.next_frame() {
                Ok(Some(frame)) => {
                    if let Some(payload) = decapsulate(frame.link_type, frame.data)
                        .ok()
                        .and_then(|n| n.pfsync_payload())
                    {
                        let envelope = crate::wire::pretty::Envelope {
                            frame: Some(frame.number),
                            time: frame.time,
                            ip: None,
                        };
                        let _ = crate::wire::pretty::text(&envelope, payload).to_string();
                        let _ = crate::wire::pretty::json(&envelope, payload);
                    }
                }
                Err(e) if e.is_recoverable() => {}
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// A pcap and a pcapng file with a few pfsync packets, to mutate.
    fn seeds() -> [Vec<u8>; 2] {
        use crate::wire::msg::StateRefRepr;
        use crate::wire::{Dialect, Message, PacketBuilder};
        use std::net::Ipv4Addr;
        let mut payloads = Vec::new();
        for dialect in Dialect::ALL {
            let mut b = PacketBuilder::new(dialect, 1500);
            let _ = b.push(&Message::DelC(StateRefRepr {
                id: 1,
                creatorid: 2,
            }));
            let _ = b.push(&Message::UpdReq(StateRefRepr::BULK_REQUEST));
            payloads.extend(b.finish());
        }
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(224, 0, 0, 240);
        let mut pcap = Vec::new();
        let mut w =
            write::PcapWriter::new(&mut pcap, linktype::ETHERNET, write::PcapOptions::default())
                .unwrap();
        let mut ng = Vec::new();
        let mut n = write::PcapNgWriter::new(&mut ng, Endian::Big).unwrap();
        n.add_interface(linktype::RAW, 0, Some(9)).unwrap();
        n.add_interface(linktype::PFSYNC, 0, None).unwrap();
        for p in &payloads {
            let ip = link::ipv4_packet(src, dst, 255, link::IPPROTO_PFSYNC, p).unwrap();
            let frame = link::ethernet_frame([1; 6], [2; 6], Some(5), link::ETHERTYPE_IPV4, &ip);
            w.write_frame(Duration::from_secs(1), &frame).unwrap();
            n.write_enhanced(0, Duration::from_secs(2), &ip).unwrap();
            n.write_enhanced(1, Duration::from_secs(3), p).unwrap();
        }
        // A simple packet block belongs to interface 0, raw IP here.
        let ip = link::ipv4_packet(src, dst, 255, link::IPPROTO_PFSYNC, &payloads[0]).unwrap();
        n.write_simple(&ip).unwrap();
        [pcap, ng]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024)) {
            decode_everything(&bytes);
            // The same bytes behind each magic number, to get past format detection.
            for magic in [[0xd4, 0xc3, 0xb2, 0xa1], [0xa1, 0xb2, 0x3c, 0x4d], [0x0a, 0x0d, 0x0d, 0x0a]] {
                let mut file = magic.to_vec();
                file.extend_from_slice(&bytes);
                decode_everything(&file);
            }
        }

        #[test]
        fn mutated_captures_never_panic(
            which in 0usize..2,
            edits in proptest::collection::vec(
                (proptest::prelude::any::<proptest::sample::Index>(), proptest::prelude::any::<u8>()),
                1..12,
            ),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let mut file = seeds()[which].clone();
            for (at, byte) in &edits {
                let i = at.index(file.len());
                file[i] = *byte;
            }
            decode_everything(&file);
            let len = cut.index(file.len() + 1);
            decode_everything(&file[..len]);
        }
    }

    #[test]
    fn the_seeds_decode() {
        for seed in seeds() {
            let mut r = CaptureReader::new(&seed[..]).unwrap();
            let mut frames = 0;
            while let Some(f) = r.next_frame().unwrap() {
                let payload = decapsulate(f.link_type, f.data)
                    .unwrap()
                    .pfsync_payload()
                    .unwrap();
                crate::wire::PacketReader::new(payload).unwrap();
                frames += 1;
            }
            assert!(frames >= 4);
        }
    }

    #[test]
    fn both_formats_are_recognised() {
        let mut pcap = Vec::new();
        write::PcapWriter::new(&mut pcap, linktype::RAW, write::PcapOptions::default()).unwrap();
        assert_eq!(
            CaptureReader::new(&pcap[..]).unwrap().format(),
            Format::Pcap
        );
        let mut ng = Vec::new();
        write::PcapNgWriter::new(&mut ng, Endian::Big).unwrap();
        assert_eq!(
            CaptureReader::new(&ng[..]).unwrap().format(),
            Format::PcapNg
        );
    }
}
