//! pcapng: a sequence of blocks, each `type(4) total_length(4) body total_length(4)`.
//!
//! A section header block (SHB) starts every section and says its byte order; interface
//! description blocks (IDB) number the interfaces of the section, each with its link
//! type, snapshot length and timestamp resolution; packet blocks (enhanced, simple and
//! the obsolete one) carry frames. Every other block is skipped by its length.

use std::io::Read;
use std::time::Duration;

use super::source::{Endian, Source};
use super::{CaptureError, Frame, MAX_FRAME_LEN};

/// Section header block type (the same in both byte orders).
pub const SHB_TYPE: u32 = 0x0a0d_0d0a;
/// Interface description block type.
pub const IDB_TYPE: u32 = 1;
/// Obsolete packet block type.
pub const OPB_TYPE: u32 = 2;
/// Simple packet block type.
pub const SPB_TYPE: u32 = 3;
/// Enhanced packet block type.
pub const EPB_TYPE: u32 = 6;
/// The byte-order magic inside a section header.
pub const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;

/// Names used in errors.
pub const SHB_NAME: &str = "section header block";
/// Names used in errors.
pub const IDB_NAME: &str = "interface description block";
/// Names used in errors.
pub const EPB_NAME: &str = "enhanced packet block";
/// Names used in errors.
pub const SPB_NAME: &str = "simple packet block";
/// Names used in errors.
pub const OPB_NAME: &str = "packet block";
const OTHER_NAME: &str = "block";

/// Blocks this reader holds in memory (section headers, interfaces, packets) are
/// refused above this size; the largest legitimate one is a frame of
/// [`MAX_FRAME_LEN`] plus its options.
pub const MAX_BLOCK_LEN: usize = 1 << 20;
/// Interfaces one section may describe; each costs memory, and real captures have a few.
pub const MAX_INTERFACES: usize = 4096;

/// `opt_endofopt`.
const OPT_END: u16 = 0;
/// `if_tsresol`.
const OPT_IF_TSRESOL: u16 = 9;
/// `if_tsoffset`.
const OPT_IF_TSOFFSET: u16 = 14;

/// True if the file's first four bytes are a section header's block type.
pub fn is_magic(magic: [u8; 4]) -> bool {
    u32::from_be_bytes(magic) == SHB_TYPE
}

/// One interface of the current section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interface {
    /// Link-layer header type.
    pub link_type: u32,
    /// Snapshot length (0: none).
    pub snaplen: u32,
    /// Timestamp units per second (`if_tsresol`, 10^6 by default).
    pub units_per_second: u64,
    /// Seconds added to every timestamp (`if_tsoffset`).
    pub offset_seconds: i64,
}

impl Interface {
    fn time(&self, high: u32, low: u32) -> Duration {
        let ticks = (u64::from(high) << 32) | u64::from(low);
        let units = self.units_per_second;
        let secs = i128::from(ticks / units) + i128::from(self.offset_seconds);
        // ticks % units < 2^64, so the product stays far below 2^128.
        let nanos = u128::from(ticks % units) * 1_000_000_000 / u128::from(units);
        let secs = u64::try_from(secs.max(0)).unwrap_or(u64::MAX);
        // nanos < 10^9 by construction.
        Duration::new(secs, nanos as u32)
    }
}

/// Reads a pcapng file.
#[derive(Debug)]
pub struct PcapNgReader<R> {
    source: Source<R>,
    endian: Endian,
    interfaces: Vec<Interface>,
    frames: u64,
    buf: Vec<u8>,
}

impl<R: Read> PcapNgReader<R> {
    /// Reads the first section header.
    pub fn new(reader: R) -> Result<Self, CaptureError> {
        let mut source = Source::new(reader, 0);
        let mut magic = [0u8; 4];
        let n = source.fill(&mut magic)?;
        if n < magic.len() {
            return Err(CaptureError::TooShort(n));
        }
        if !is_magic(magic) {
            return Err(CaptureError::NotACapture(magic));
        }
        Self::after_magic(source)
    }

    /// Continues after the section header's block type was read by format detection.
    pub(crate) fn after_magic(source: Source<R>) -> Result<Self, CaptureError> {
        let mut reader = PcapNgReader {
            source,
            endian: Endian::Little,
            interfaces: Vec::new(),
            frames: 0,
            buf: Vec::new(),
        };
        let mut len = [0u8; 4];
        let have = reader.source.fill(&mut len)?;
        if have < len.len() {
            return Err(CaptureError::Truncated {
                what: SHB_NAME,
                offset: 0,
                need: 28,
                have: 4 + have as u64,
            });
        }
        reader.section_header(0, len)?;
        Ok(reader)
    }

    /// The byte order of the current section.
    pub fn endian(&self) -> Endian {
        self.endian
    }

    /// The interfaces described so far in the current section.
    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// The next frame, `None` at a clean end of file (the end falls between blocks).
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        loop {
            let offset = self.source.offset();
            let mut head = [0u8; 8];
            let have = self.source.fill(&mut head)?;
            if have == 0 {
                return Ok(None);
            }
            if have < head.len() {
                return Err(CaptureError::Truncated {
                    what: "pcapng block header",
                    offset,
                    need: 8,
                    have: have as u64,
                });
            }
            let block_type = self.endian.u32([head[0], head[1], head[2], head[3]]);
            let len_bytes = [head[4], head[5], head[6], head[7]];
            if block_type == SHB_TYPE {
                self.section_header(offset, len_bytes)?;
                continue;
            }
            let len = self.endian.u32(len_bytes);
            let name = block_name(block_type);
            check_length(name, offset, len, 12)?;
            match block_type {
                IDB_TYPE => {
                    self.read_body(name, offset, len)?;
                    self.interface_description(offset)?;
                }
                EPB_TYPE | SPB_TYPE | OPB_TYPE => {
                    self.read_body(name, offset, len)?;
                    self.frames += 1;
                    return self.packet(block_type, offset).map(Some);
                }
                _ => self.skip_block(offset, len)?,
            }
        }
    }

    /// Reads a section header whose type was read at `offset`; `len_bytes` are its
    /// length field, which means something only once the byte order is known.
    fn section_header(&mut self, offset: u64, len_bytes: [u8; 4]) -> Result<(), CaptureError> {
        let mut bom = [0u8; 4];
        let have = self.source.fill(&mut bom)?;
        if have < bom.len() {
            return Err(CaptureError::Truncated {
                what: SHB_NAME,
                offset,
                need: 28,
                have: 8 + have as u64,
            });
        }
        self.endian = if u32::from_le_bytes(bom) == BYTE_ORDER_MAGIC {
            Endian::Little
        } else if u32::from_be_bytes(bom) == BYTE_ORDER_MAGIC {
            Endian::Big
        } else {
            return Err(CaptureError::BadByteOrder { offset, magic: bom });
        };
        let len = self.endian.u32(len_bytes);
        check_length(SHB_NAME, offset, len, 28)?;
        // The byte-order magic is already consumed: the rest is the body after it.
        self.read_rest(SHB_NAME, offset, len, 12)?;
        let body = self.body(len, 12);
        let major = self.endian.u16_at(body, 0).unwrap_or(0);
        let minor = self.endian.u16_at(body, 2).unwrap_or(0);
        if major != 1 {
            return Err(CaptureError::UnsupportedVersion {
                format: "pcapng",
                major,
                minor,
            });
        }
        // Interface numbers start over in every section.
        self.interfaces.clear();
        Ok(())
    }

    fn interface_description(&mut self, offset: u64) -> Result<(), CaptureError> {
        let e = self.endian;
        let body = self.buf.as_slice();
        let body = &body[..body.len().saturating_sub(4)];
        let (Some(link_type), Some(snaplen)) = (e.u16_at(body, 0), e.u32_at(body, 4)) else {
            return Err(CaptureError::BlockTooShort {
                block: IDB_NAME,
                offset,
                need: 8,
                have: body.len(),
            });
        };
        if self.interfaces.len() >= MAX_INTERFACES {
            return Err(CaptureError::TooManyInterfaces {
                offset,
                max: MAX_INTERFACES,
            });
        }
        let index = self.interfaces.len() as u32;
        let mut interface = Interface {
            link_type: link_type.into(),
            snaplen,
            units_per_second: 1_000_000,
            offset_seconds: 0,
        };
        for option in Options::new(e, body.get(8..).unwrap_or_default()) {
            let (code, value) = option.map_err(|code| CaptureError::BadOption {
                block: IDB_NAME,
                offset,
                code,
            })?;
            match code {
                OPT_IF_TSRESOL => {
                    if let Some(&byte) = value.first() {
                        interface.units_per_second =
                            resolution(byte).ok_or(CaptureError::UnsupportedResolution {
                                interface: index,
                                byte,
                            })?;
                    }
                }
                OPT_IF_TSOFFSET => {
                    if let Some(secs) = e.u64_at(value, 0) {
                        interface.offset_seconds = secs as i64;
                    }
                }
                _ => {}
            }
        }
        self.interfaces.push(interface);
        Ok(())
    }

    /// Turns the packet block in the buffer into a frame.
    fn packet(&self, block_type: u32, offset: u64) -> Result<Frame<'_>, CaptureError> {
        let e = self.endian;
        let name = block_name(block_type);
        let body = self.buf.as_slice();
        let body = &body[..body.len().saturating_sub(4)];
        let fixed = if block_type == SPB_TYPE { 4 } else { 20 };
        if body.len() < fixed {
            return Err(CaptureError::BlockTooShort {
                block: name,
                offset,
                need: fixed,
                have: body.len(),
            });
        }
        let field = |at| e.u32_at(body, at).unwrap_or(0);
        let (index, time_words, captured, orig_len) = match block_type {
            SPB_TYPE => {
                let orig_len = field(0);
                (0, None, orig_len, orig_len)
            }
            OPB_TYPE => (
                u32::from(e.u16_at(body, 0).unwrap_or(0)),
                Some((field(4), field(8))),
                field(12),
                field(16),
            ),
            _ => (field(0), Some((field(4), field(8))), field(12), field(16)),
        };
        let interface =
            self.interfaces
                .get(index as usize)
                .ok_or(CaptureError::UnknownInterface {
                    block: name,
                    offset,
                    interface: index,
                    declared: self.interfaces.len(),
                })?;
        let available = body.len() - fixed;
        let captured = if block_type == SPB_TYPE {
            // A simple packet block's captured length is implied: the frame, cut to the
            // snapshot length, in whatever the block holds.
            let cut = if interface.snaplen == 0 {
                captured
            } else {
                captured.min(interface.snaplen)
            };
            (cut as usize).min(available)
        } else if captured as usize > available {
            return Err(CaptureError::CapturedPastBlock {
                block: name,
                offset,
                captured,
                available,
            });
        } else {
            captured as usize
        };
        if captured > MAX_FRAME_LEN {
            return Err(CaptureError::FrameTooLarge {
                frame: self.frames,
                offset,
                len: captured as u64,
                max: MAX_FRAME_LEN,
            });
        }
        Ok(Frame {
            number: self.frames,
            time: time_words.map(|(high, low)| interface.time(high, low)),
            link_type: interface.link_type,
            interface: index,
            data: &body[fixed..fixed + captured],
            orig_len,
        })
    }

    /// Reads the rest of a block of `len` bytes whose first 8 bytes were consumed.
    fn read_body(&mut self, name: &'static str, offset: u64, len: u32) -> Result<(), CaptureError> {
        self.read_rest(name, offset, len, 8)
    }

    /// Reads the rest of a block of `len` bytes of which `consumed` were read, trailer
    /// included, into the buffer, and checks the trailer.
    fn read_rest(
        &mut self,
        name: &'static str,
        offset: u64,
        len: u32,
        consumed: u32,
    ) -> Result<(), CaptureError> {
        if len as usize > MAX_BLOCK_LEN {
            return Err(CaptureError::BlockTooLarge {
                block: name,
                offset,
                len,
                max: MAX_BLOCK_LEN,
            });
        }
        let want = len - consumed;
        let have = self.source.read_into(&mut self.buf, want.into())?;
        if have < want as usize {
            return Err(CaptureError::Truncated {
                what: name,
                offset,
                need: len.into(),
                have: u64::from(consumed) + have as u64,
            });
        }
        let trailer = self.endian.u32_at(&self.buf, have - 4).unwrap_or(0);
        if trailer != len {
            return Err(CaptureError::LengthMismatch {
                block: name,
                offset,
                len,
                trailer,
            });
        }
        Ok(())
    }

    /// The body in the buffer of a block of `len` bytes of which `consumed` were read
    /// before it, without the trailer.
    fn body(&self, len: u32, consumed: u32) -> &[u8] {
        let body_len = (len - consumed - 4) as usize;
        &self.buf[..body_len.min(self.buf.len())]
    }

    /// Skips a block this reader does not use, checking its trailer.
    fn skip_block(&mut self, offset: u64, len: u32) -> Result<(), CaptureError> {
        let body = u64::from(len) - 12;
        let skipped = self.source.skip(body)?;
        let mut trailer = [0u8; 4];
        let have = if skipped == body {
            self.source.fill(&mut trailer)?
        } else {
            0
        };
        if have < trailer.len() {
            return Err(CaptureError::Truncated {
                what: OTHER_NAME,
                offset,
                need: len.into(),
                have: 8 + skipped + have as u64,
            });
        }
        let trailer = self.endian.u32(trailer);
        if trailer != len {
            return Err(CaptureError::LengthMismatch {
                block: OTHER_NAME,
                offset,
                len,
                trailer,
            });
        }
        Ok(())
    }
}

fn block_name(block_type: u32) -> &'static str {
    match block_type {
        SHB_TYPE => SHB_NAME,
        IDB_TYPE => IDB_NAME,
        EPB_TYPE => EPB_NAME,
        SPB_TYPE => SPB_NAME,
        OPB_TYPE => OPB_NAME,
        _ => OTHER_NAME,
    }
}

/// Every block length is a multiple of 4 and covers at least type, length and trailer.
fn check_length(name: &'static str, offset: u64, len: u32, min: u32) -> Result<(), CaptureError> {
    let problem = if len < min {
        "below the minimum for its type"
    } else if len % 4 != 0 {
        "not a multiple of 4"
    } else {
        return Ok(());
    };
    Err(CaptureError::BadBlockLength {
        block: name,
        offset,
        len,
        problem,
    })
}

/// Timestamp units per second for an `if_tsresol` byte: 10^n, or 2^n with the high bit
/// set. `None` when the unit is too fine to count in 64 bits.
fn resolution(byte: u8) -> Option<u64> {
    let exponent = u32::from(byte & 0x7f);
    if byte & 0x80 == 0 {
        10u64.checked_pow(exponent)
    } else if exponent < 64 {
        Some(1u64 << exponent)
    } else {
        None
    }
}

/// The options of a block body: `code(2) length(2) value padded to 4`, until
/// `opt_endofopt` or the end. An option running past the end yields its code as error.
struct Options<'a> {
    endian: Endian,
    bytes: &'a [u8],
    done: bool,
}

impl<'a> Options<'a> {
    fn new(endian: Endian, bytes: &'a [u8]) -> Self {
        Options {
            endian,
            bytes,
            done: false,
        }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<(u16, &'a [u8]), u16>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (Some(code), Some(len)) = (
            self.endian.u16_at(self.bytes, 0),
            self.endian.u16_at(self.bytes, 2),
        ) else {
            // Fewer than four bytes left: nothing that could be an option.
            self.done = true;
            return None;
        };
        if code == OPT_END {
            self.done = true;
            return None;
        }
        let end = 4 + usize::from(len);
        let Some(value) = self.bytes.get(4..end) else {
            self.done = true;
            return Some(Err(code));
        };
        let padded = end.next_multiple_of(4).min(self.bytes.len());
        self.bytes = &self.bytes[padded..];
        Some(Ok((code, value)))
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::capture::linktype;
    use crate::capture::write::PcapNgWriter;
    use crate::capture::CaptureReader;

    fn two_interfaces(endian: Endian) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = PcapNgWriter::new(&mut out, endian).unwrap();
        let eth = w.add_interface(linktype::ETHERNET, 0, None).unwrap();
        let pfsync = w.add_interface(linktype::PFSYNC, 1500, Some(9)).unwrap();
        w.write_block(0x0000_0bad, b"ignored!").unwrap();
        w.write_enhanced(eth, Duration::new(10, 250_000_000), b"abcde")
            .unwrap();
        w.write_enhanced(pfsync, Duration::new(11, 7), b"xyz")
            .unwrap();
        w.write_simple(b"simple").unwrap();
        out
    }

    #[test]
    fn both_byte_orders_read_back_with_their_interfaces() {
        for endian in [Endian::Little, Endian::Big] {
            let bytes = two_interfaces(endian);
            let mut r = PcapNgReader::new(&bytes[..]).unwrap();
            assert_eq!(r.endian(), endian);
            let f = r.next_frame().unwrap().unwrap();
            assert_eq!(
                (f.number, f.link_type, f.interface, f.data, f.time),
                (1, 1, 0, &b"abcde"[..], Some(Duration::new(10, 250_000_000)))
            );
            let f = r.next_frame().unwrap().unwrap();
            assert_eq!(
                (f.number, f.link_type, f.interface, f.data, f.time),
                (2, 246, 1, &b"xyz"[..], Some(Duration::new(11, 7)))
            );
            let f = r.next_frame().unwrap().unwrap();
            assert_eq!((f.number, f.data, f.time), (3, &b"simple"[..], None));
            assert!(r.next_frame().unwrap().is_none());
            assert_eq!(r.interfaces().len(), 2);
            assert_eq!(r.interfaces()[1].units_per_second, 1_000_000_000);
        }
    }

    #[test]
    fn a_new_section_may_change_byte_order_and_resets_interfaces() {
        let mut bytes = two_interfaces(Endian::Little);
        let mut second = Vec::new();
        let mut w = PcapNgWriter::new(&mut second, Endian::Big).unwrap();
        w.add_interface(linktype::RAW, 0, None).unwrap();
        w.write_enhanced(0, Duration::new(1, 0), b"\x45").unwrap();
        bytes.extend_from_slice(&second);
        let mut r = CaptureReader::new(&bytes[..]).unwrap();
        let mut seen = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            seen.push((f.number, f.link_type));
        }
        assert_eq!(seen, [(1, 1), (2, 246), (3, 1), (4, 101)]);
    }

    #[test]
    fn simple_packets_are_cut_to_the_snapshot_length() {
        let mut out = Vec::new();
        let mut w = PcapNgWriter::new(&mut out, Endian::Little).unwrap();
        w.add_interface(linktype::RAW, 4, None).unwrap();
        w.write_simple(b"0123456789").unwrap();
        let mut r = PcapNgReader::new(&out[..]).unwrap();
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!((f.data, f.orig_len), (&b"0123"[..], 10));
    }

    #[test]
    fn resolutions_and_offsets() {
        assert_eq!(resolution(6), Some(1_000_000));
        assert_eq!(resolution(0x80 | 10), Some(1024));
        assert_eq!(resolution(19), Some(10_000_000_000_000_000_000));
        assert_eq!(resolution(20), None);
        assert_eq!(resolution(0xff), None);
        let i = Interface {
            link_type: 1,
            snaplen: 0,
            units_per_second: 1024,
            offset_seconds: -5,
        };
        assert_eq!(i.time(0, 10 * 1024 + 512), Duration::new(5, 500_000_000));
        assert_eq!(i.time(0, 0), Duration::ZERO);
        let fine = Interface {
            units_per_second: 1 << 63,
            offset_seconds: i64::MAX,
            ..i
        };
        assert_eq!(
            fine.time(u32::MAX, u32::MAX).as_secs(),
            (i64::MAX as u64) + 1
        );
    }

    #[test]
    fn a_packet_on_an_unknown_interface_is_recoverable() {
        let mut out = Vec::new();
        let mut w = PcapNgWriter::new(&mut out, Endian::Little).unwrap();
        w.add_interface(linktype::RAW, 0, None).unwrap();
        w.write_enhanced(3, Duration::ZERO, b"lost").unwrap();
        w.write_enhanced(0, Duration::ZERO, b"kept").unwrap();
        let mut r = PcapNgReader::new(&out[..]).unwrap();
        let err = r.next_frame().unwrap_err();
        assert!(matches!(
            err,
            CaptureError::UnknownInterface { interface: 3, .. }
        ));
        assert!(err.is_recoverable());
        assert_eq!(r.next_frame().unwrap().unwrap().data, b"kept");
    }

    fn le_block(block_type: u32, body: &[u8]) -> Vec<u8> {
        let len = (12 + body.len()) as u32;
        let mut b = block_type.to_le_bytes().to_vec();
        b.extend_from_slice(&len.to_le_bytes());
        b.extend_from_slice(body);
        b.extend_from_slice(&len.to_le_bytes());
        b
    }

    fn le_file(blocks: &[Vec<u8>]) -> Vec<u8> {
        let mut shb_body = BYTE_ORDER_MAGIC.to_le_bytes().to_vec();
        shb_body.extend_from_slice(&[1, 0, 0, 0]);
        shb_body.extend_from_slice(&(-1i64).to_le_bytes());
        let mut out = le_block(SHB_TYPE, &shb_body);
        for b in blocks {
            out.extend_from_slice(b);
        }
        out
    }

    fn read_all(bytes: &[u8]) -> Result<usize, CaptureError> {
        let mut r = CaptureReader::new(bytes)?;
        let mut n = 0;
        while r.next_frame()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn bogus_lengths_are_refused() {
        // A block declaring 4 GiB in a tiny file: truncated, not allocated.
        let mut huge = le_file(&[]);
        huge.extend_from_slice(&0x0000_0bad_u32.to_le_bytes());
        huge.extend_from_slice(&0xffff_fff0_u32.to_le_bytes());
        huge.extend_from_slice(&[0; 16]);
        assert!(matches!(
            read_all(&huge),
            Err(CaptureError::Truncated { .. })
        ));
        // A packet block above the in-memory limit.
        let mut big = le_file(&[]);
        big.extend_from_slice(&EPB_TYPE.to_le_bytes());
        big.extend_from_slice(&0x0100_0100_u32.to_le_bytes());
        assert!(matches!(
            read_all(&big),
            Err(CaptureError::BlockTooLarge { .. })
        ));
        // Not a multiple of 4, below the minimum, mismatched trailer.
        let mut odd = le_file(&[]);
        odd.extend_from_slice(&[6, 0, 0, 0, 13, 0, 0, 0]);
        assert!(matches!(
            read_all(&odd),
            Err(CaptureError::BadBlockLength { .. })
        ));
        let mut tiny = le_file(&[]);
        tiny.extend_from_slice(&[6, 0, 0, 0, 8, 0, 0, 0]);
        assert!(matches!(
            read_all(&tiny),
            Err(CaptureError::BadBlockLength { .. })
        ));
        let mut block = le_block(0x0bad, &[0; 4]);
        let last = block.len() - 4;
        block[last] = 20;
        assert!(matches!(
            read_all(&le_file(&[block])),
            Err(CaptureError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn malformed_packet_blocks_are_refused() {
        let idb = le_block(IDB_TYPE, &[1, 0, 0, 0, 0, 0, 0, 0]);
        // Captured length past the block.
        let mut epb = vec![0u8; 20];
        epb[12] = 200;
        let err = read_all(&le_file(&[idb.clone(), le_block(EPB_TYPE, &epb)])).unwrap_err();
        assert!(matches!(
            err,
            CaptureError::CapturedPastBlock { captured: 200, .. }
        ));
        // Shorter than the fixed fields.
        let err = read_all(&le_file(&[idb.clone(), le_block(EPB_TYPE, &[0; 8])])).unwrap_err();
        assert!(matches!(err, CaptureError::BlockTooShort { need: 20, .. }));
        // An option running past the end of an interface description.
        let bad_idb = le_block(IDB_TYPE, &[1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 200, 0]);
        let err = read_all(&le_file(&[bad_idb])).unwrap_err();
        assert!(matches!(err, CaptureError::BadOption { code: 9, .. }));
        // An unsupported resolution.
        let fine = le_block(IDB_TYPE, &[1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 0, 99, 0, 0, 0]);
        let err = read_all(&le_file(&[fine])).unwrap_err();
        assert!(matches!(
            err,
            CaptureError::UnsupportedResolution { byte: 99, .. }
        ));
        // A bad byte-order magic and a wrong major version.
        let mut bad_bom = le_file(&[]);
        bad_bom[8] = 0;
        assert!(matches!(
            read_all(&bad_bom),
            Err(CaptureError::BadByteOrder { .. })
        ));
        let mut v2 = le_file(&[]);
        v2[12] = 2;
        assert!(matches!(
            read_all(&v2),
            Err(CaptureError::UnsupportedVersion { major: 2, .. })
        ));
    }

    #[test]
    fn the_obsolete_packet_block_is_read() {
        let idb = le_block(IDB_TYPE, &[101, 0, 0, 0, 0, 0, 0, 0]);
        let mut opb = vec![0u8; 20];
        opb[8] = 1; // 1 µs
        opb[12] = 2;
        opb[16] = 2;
        opb.extend_from_slice(&[0x45, 0x00, 0, 0]);
        let bytes = le_file(&[idb, le_block(OPB_TYPE, &opb)]);
        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!((f.data, f.link_type), (&[0x45, 0][..], 101));
        assert_eq!(f.time, Some(Duration::from_micros(1)));
    }

    #[test]
    fn truncation_anywhere_is_an_error_not_a_panic() {
        let bytes = two_interfaces(Endian::Big);
        let mut boundaries = vec![];
        let mut at = 0;
        while at < bytes.len() {
            boundaries.push(at);
            let len = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().unwrap());
            at += len as usize;
        }
        for cut in 0..bytes.len() {
            let result = read_all(&bytes[..cut]);
            if boundaries.contains(&cut) && cut > 0 {
                assert!(result.is_ok(), "cut at block boundary {cut}");
            } else {
                assert!(result.is_err(), "cut at {cut}");
            }
        }
    }
}
