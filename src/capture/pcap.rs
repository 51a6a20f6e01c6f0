//! Classic pcap: a 24-byte file header, then records of a 16-byte header and the frame.
//!
//! ```text
//! file header: magic(4) major(2) minor(2) thiszone(4) sigfigs(4) snaplen(4) linktype(4)
//! record:      ts_sec(4) ts_frac(4) incl_len(4) orig_len(4) data(incl_len)
//! ```
//! The magic number, read in either byte order, says the file's byte order and whether
//! `ts_frac` counts microseconds or nanoseconds.

use std::io::Read;
use std::time::Duration;

use super::source::{Endian, Source};
use super::{CaptureError, Frame, MAX_FRAME_LEN};

/// Size of the file header.
pub const FILE_HEADER_LEN: usize = 24;
/// Size of a record header.
pub const RECORD_HEADER_LEN: usize = 16;

/// The magic of a microsecond file, as a number in the file's byte order.
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// The magic of a nanosecond file.
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// The magic of the modified ("Kuznetzov") format, recognised only to refuse it.
const MAGIC_MODIFIED: u32 = 0xa1b2_cd34;

/// What `ts_frac` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Microseconds (the classic magic).
    #[default]
    Micros,
    /// Nanoseconds.
    Nanos,
}

impl Precision {
    fn nanos_per_unit(self) -> u64 {
        match self {
            Precision::Micros => 1_000,
            Precision::Nanos => 1,
        }
    }

    /// The magic number announcing this precision.
    pub fn magic(self) -> u32 {
        match self {
            Precision::Micros => MAGIC_MICROS,
            Precision::Nanos => MAGIC_NANOS,
        }
    }
}

/// The file header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Byte order of the file.
    pub endian: Endian,
    /// Timestamp unit.
    pub precision: Precision,
    /// Major version (2).
    pub major: u16,
    /// Minor version (4).
    pub minor: u16,
    /// Snapshot length the capture was taken with.
    pub snaplen: u32,
    /// Link-layer header type of every frame (the low 16 bits of the field; the high
    /// bits carry FCS information, which does not concern the frame's start).
    pub link_type: u32,
}

/// Reads a classic pcap file.
#[derive(Debug)]
pub struct PcapReader<R> {
    source: Source<R>,
    header: FileHeader,
    frames: u64,
    buf: Vec<u8>,
}

impl<R: Read> PcapReader<R> {
    /// Reads the file header.
    pub fn new(reader: R) -> Result<Self, CaptureError> {
        let mut source = Source::new(reader, 0);
        let mut magic = [0u8; 4];
        let n = source.fill(&mut magic)?;
        if n < magic.len() {
            return Err(CaptureError::TooShort(n));
        }
        Self::after_magic(source, magic)
    }

    /// Continues after the magic number was read by the format detection.
    pub(crate) fn after_magic(mut source: Source<R>, magic: [u8; 4]) -> Result<Self, CaptureError> {
        let (endian, precision) = detect(magic)?;
        let mut rest = [0u8; FILE_HEADER_LEN - 4];
        let have = source.fill(&mut rest)?;
        if have < rest.len() {
            return Err(CaptureError::Truncated {
                what: "pcap file header",
                offset: 0,
                need: FILE_HEADER_LEN as u64,
                have: (4 + have) as u64,
            });
        }
        let major = endian.u16([rest[0], rest[1]]);
        let minor = endian.u16([rest[2], rest[3]]);
        if major != 2 {
            return Err(CaptureError::UnsupportedVersion {
                format: "pcap",
                major,
                minor,
            });
        }
        let snaplen = endian.u32([rest[12], rest[13], rest[14], rest[15]]);
        let link_type = endian.u32([rest[16], rest[17], rest[18], rest[19]]) & 0xffff;
        Ok(PcapReader {
            source,
            header: FileHeader {
                endian,
                precision,
                major,
                minor,
                snaplen,
                link_type,
            },
            frames: 0,
            buf: Vec::new(),
        })
    }

    /// The file header.
    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// The next frame, `None` at a clean end of file (the end falls between records).
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        let offset = self.source.offset();
        let mut rec = [0u8; RECORD_HEADER_LEN];
        let have = self.source.fill(&mut rec)?;
        if have == 0 {
            return Ok(None);
        }
        if have < rec.len() {
            return Err(CaptureError::Truncated {
                what: "pcap record header",
                offset,
                need: RECORD_HEADER_LEN as u64,
                have: have as u64,
            });
        }
        let e = self.header.endian;
        let ts_sec = e.u32([rec[0], rec[1], rec[2], rec[3]]);
        let ts_frac = e.u32([rec[4], rec[5], rec[6], rec[7]]);
        let incl_len = e.u32([rec[8], rec[9], rec[10], rec[11]]);
        let orig_len = e.u32([rec[12], rec[13], rec[14], rec[15]]);
        self.frames += 1;
        if u64::from(incl_len) > MAX_FRAME_LEN as u64 {
            return Err(CaptureError::FrameTooLarge {
                frame: self.frames,
                offset,
                len: incl_len.into(),
                max: MAX_FRAME_LEN,
            });
        }
        let have = self.source.read_into(&mut self.buf, incl_len.into())?;
        if have < incl_len as usize {
            return Err(CaptureError::Truncated {
                what: "pcap record",
                offset,
                need: RECORD_HEADER_LEN as u64 + u64::from(incl_len),
                have: (RECORD_HEADER_LEN + have) as u64,
            });
        }
        Ok(Some(Frame {
            number: self.frames,
            time: Some(timestamp(ts_sec, ts_frac, self.header.precision)),
            link_type: self.header.link_type,
            interface: 0,
            data: &self.buf,
            orig_len,
        }))
    }
}

/// Byte order and precision from the magic bytes.
fn detect(magic: [u8; 4]) -> Result<(Endian, Precision), CaptureError> {
    for endian in [Endian::Little, Endian::Big] {
        match endian.u32(magic) {
            MAGIC_MICROS => return Ok((endian, Precision::Micros)),
            MAGIC_NANOS => return Ok((endian, Precision::Nanos)),
            MAGIC_MODIFIED => return Err(CaptureError::ModifiedPcap),
            _ => {}
        }
    }
    Err(CaptureError::NotACapture(magic))
}

/// A record's time; a fraction of a second or more (a broken writer) carries over.
fn timestamp(secs: u32, frac: u32, precision: Precision) -> Duration {
    let nanos = u64::from(frac) * precision.nanos_per_unit();
    let secs = u64::from(secs) + nanos / 1_000_000_000;
    // Below one billion, so the cast is exact.
    Duration::new(secs, (nanos % 1_000_000_000) as u32)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::capture::write::{PcapOptions, PcapWriter};
    use crate::capture::{linktype, CaptureReader};

    fn file(endian: Endian, precision: Precision, frames: &[(Duration, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = PcapWriter::new(
            &mut out,
            linktype::ETHERNET,
            PcapOptions {
                endian,
                precision,
                snaplen: 65535,
            },
        )
        .unwrap();
        for (t, data) in frames {
            w.write_frame(*t, data).unwrap();
        }
        out
    }

    #[test]
    fn both_byte_orders_and_precisions_read_back() {
        let t1 = Duration::new(1_704_110_400, 123_456_000);
        let t2 = Duration::new(1_704_110_401, 789);
        for endian in [Endian::Little, Endian::Big] {
            for precision in [Precision::Micros, Precision::Nanos] {
                let bytes = file(endian, precision, &[(t1, b"abc"), (t2, b"")]);
                let mut r = PcapReader::new(&bytes[..]).unwrap();
                assert_eq!(r.header().endian, endian);
                assert_eq!(r.header().precision, precision);
                assert_eq!(r.header().link_type, linktype::ETHERNET);
                let f = r.next_frame().unwrap().unwrap();
                assert_eq!(
                    (f.number, f.time, f.data, f.orig_len),
                    (1, Some(t1), &b"abc"[..], 3)
                );
                let f = r.next_frame().unwrap().unwrap();
                let want = match precision {
                    Precision::Micros => Duration::new(1_704_110_401, 0),
                    Precision::Nanos => t2,
                };
                assert_eq!((f.number, f.time, f.data), (2, Some(want), &b""[..]));
                assert!(r.next_frame().unwrap().is_none());
            }
        }
    }

    #[test]
    fn the_first_bytes_decide_the_byte_order() {
        let le = file(Endian::Little, Precision::Micros, &[]);
        assert_eq!(&le[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        let be = file(Endian::Big, Precision::Nanos, &[]);
        assert_eq!(&be[..4], &[0xa1, 0xb2, 0x3c, 0x4d]);
    }

    #[test]
    fn truncation_anywhere_is_an_error_not_a_panic() {
        let bytes = file(
            Endian::Big,
            Precision::Micros,
            &[(Duration::ZERO, &[1, 2, 3, 4, 5, 6, 7, 8])],
        );
        for cut in 0..bytes.len() {
            let result = CaptureReader::new(&bytes[..cut]).and_then(|mut r| {
                while r.next_frame()?.is_some() {}
                Ok(())
            });
            // Cut right after the file header, the file is merely empty.
            assert_eq!(result.is_err(), cut != FILE_HEADER_LEN, "cut at {cut}");
        }
    }

    #[test]
    fn a_huge_record_length_is_refused_before_reading() {
        let mut bytes = file(Endian::Little, Precision::Micros, &[(Duration::ZERO, b"x")]);
        bytes[FILE_HEADER_LEN + 8..FILE_HEADER_LEN + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert!(matches!(
            r.next_frame(),
            Err(CaptureError::FrameTooLarge { frame: 1, .. })
        ));
    }

    #[test]
    fn a_record_longer_than_the_file_is_truncated() {
        let mut bytes = file(
            Endian::Little,
            Precision::Micros,
            &[(Duration::ZERO, b"xyz")],
        );
        bytes[FILE_HEADER_LEN + 8..FILE_HEADER_LEN + 12].copy_from_slice(&1000u32.to_le_bytes());
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        match r.next_frame() {
            Err(CaptureError::Truncated { need, have, .. }) => assert_eq!((need, have), (1016, 19)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_versions_and_the_modified_format_are_refused() {
        let mut bytes = file(Endian::Little, Precision::Micros, &[]);
        bytes[4] = 3;
        assert!(matches!(
            PcapReader::new(&bytes[..]),
            Err(CaptureError::UnsupportedVersion { major: 3, .. })
        ));
        let modified = [0x34, 0xcd, 0xb2, 0xa1, 2, 0, 4, 0];
        assert!(matches!(
            PcapReader::new(&modified[..]),
            Err(CaptureError::ModifiedPcap)
        ));
    }

    #[test]
    fn fcs_bits_above_the_link_type_are_ignored() {
        let mut bytes = file(Endian::Little, Precision::Micros, &[]);
        bytes[20..24].copy_from_slice(&(0x1000_0000u32 | 1).to_le_bytes());
        assert_eq!(PcapReader::new(&bytes[..]).unwrap().header().link_type, 1);
    }

    #[test]
    fn fractions_beyond_a_second_carry_over() {
        assert_eq!(
            timestamp(1, 2_500_000, Precision::Micros),
            Duration::new(3, 500_000_000)
        );
        assert_eq!(
            timestamp(u32::MAX, u32::MAX, Precision::Micros),
            Duration::new(u64::from(u32::MAX) + 4294, 967_295_000)
        );
    }
}
