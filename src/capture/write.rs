//! Writing capture files: classic pcap, and a small pcapng writer (section header,
//! interfaces, enhanced and simple packet blocks, arbitrary blocks). Used to make the
//! test captures; the output depends only on the arguments, so it is reproducible.

use std::io::{self, Write};
use std::time::Duration;

use super::pcap::Precision;
use super::pcapng::{BYTE_ORDER_MAGIC, EPB_TYPE, IDB_TYPE, SHB_TYPE, SPB_TYPE};
use super::source::Endian;
use super::MAX_FRAME_LEN;

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// How a pcap file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcapOptions {
    /// Byte order of every header field.
    pub endian: Endian,
    /// Timestamp unit.
    pub precision: Precision,
    /// Snapshot length written in the file header.
    pub snaplen: u32,
}

impl Default for PcapOptions {
    fn default() -> Self {
        PcapOptions {
            endian: Endian::Little,
            precision: Precision::Micros,
            snaplen: MAX_FRAME_LEN as u32,
        }
    }
}

/// Writes a classic pcap file.
#[derive(Debug)]
pub struct PcapWriter<W> {
    out: W,
    options: PcapOptions,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header for frames of `link_type`.
    pub fn new(mut out: W, link_type: u32, options: PcapOptions) -> io::Result<Self> {
        let e = options.endian;
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&e.u32_bytes(options.precision.magic()));
        header.extend_from_slice(&e.u16_bytes(2));
        header.extend_from_slice(&e.u16_bytes(4));
        header.extend_from_slice(&[0; 8]); // thiszone, sigfigs
        header.extend_from_slice(&e.u32_bytes(options.snaplen));
        header.extend_from_slice(&e.u32_bytes(link_type));
        out.write_all(&header)?;
        Ok(PcapWriter { out, options })
    }

    /// Writes a whole frame.
    pub fn write_frame(&mut self, time: Duration, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| invalid("frame longer than 4 GiB"))?;
        self.write_cut_frame(time, data, len)
    }

    /// Writes a frame that was `orig_len` bytes on the wire, of which `data` was kept.
    pub fn write_cut_frame(
        &mut self,
        time: Duration,
        data: &[u8],
        orig_len: u32,
    ) -> io::Result<()> {
        let e = self.options.endian;
        let secs = u32::try_from(time.as_secs()).map_err(|_| invalid("time after 2106"))?;
        let frac = match self.options.precision {
            Precision::Micros => time.subsec_micros(),
            Precision::Nanos => time.subsec_nanos(),
        };
        let len = u32::try_from(data.len()).map_err(|_| invalid("frame longer than 4 GiB"))?;
        let mut record = Vec::with_capacity(16 + data.len());
        record.extend_from_slice(&e.u32_bytes(secs));
        record.extend_from_slice(&e.u32_bytes(frac));
        record.extend_from_slice(&e.u32_bytes(len));
        record.extend_from_slice(&e.u32_bytes(orig_len));
        record.extend_from_slice(data);
        self.out.write_all(&record)
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Writes a pcapng file of one section.
#[derive(Debug)]
pub struct PcapNgWriter<W> {
    out: W,
    endian: Endian,
    /// Timestamp units per second of each interface, in order.
    units: Vec<u64>,
}

impl<W: Write> PcapNgWriter<W> {
    /// Writes a section header (version 1.0, section length unknown, no options).
    pub fn new(out: W, endian: Endian) -> io::Result<Self> {
        let mut w = PcapNgWriter {
            out,
            endian,
            units: Vec::new(),
        };
        let mut body = Vec::with_capacity(16);
        body.extend_from_slice(&endian.u32_bytes(BYTE_ORDER_MAGIC));
        body.extend_from_slice(&endian.u16_bytes(1));
        body.extend_from_slice(&endian.u16_bytes(0));
        body.extend_from_slice(&endian.u64_bytes(u64::MAX));
        w.write_block(SHB_TYPE, &body)?;
        Ok(w)
    }

    /// Describes an interface and returns its index. `tsresol` is the `if_tsresol`
    /// byte (10^-n seconds, or 2^-n with the high bit); microseconds when `None`.
    pub fn add_interface(
        &mut self,
        link_type: u32,
        snaplen: u32,
        tsresol: Option<u8>,
    ) -> io::Result<u32> {
        let e = self.endian;
        let link = u16::try_from(link_type).map_err(|_| invalid("link type above 65535"))?;
        let units = match tsresol {
            None => Some(1_000_000),
            Some(b) if b & 0x80 == 0 => 10u64.checked_pow(b.into()),
            Some(b) => 1u64.checked_shl(u32::from(b & 0x7f)),
        }
        .ok_or_else(|| invalid("timestamp resolution too fine"))?;
        let mut body = Vec::with_capacity(20);
        body.extend_from_slice(&e.u16_bytes(link));
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&e.u32_bytes(snaplen));
        if let Some(b) = tsresol {
            body.extend_from_slice(&e.u16_bytes(9));
            body.extend_from_slice(&e.u16_bytes(1));
            body.extend_from_slice(&[b, 0, 0, 0]);
            body.extend_from_slice(&[0; 4]); // opt_endofopt
        }
        self.write_block(IDB_TYPE, &body)?;
        let index = u32::try_from(self.units.len()).map_err(|_| invalid("too many interfaces"))?;
        self.units.push(units);
        Ok(index)
    }

    /// Writes an enhanced packet block on `interface`.
    pub fn write_enhanced(
        &mut self,
        interface: u32,
        time: Duration,
        data: &[u8],
    ) -> io::Result<()> {
        let e = self.endian;
        // A block naming an undescribed interface is legal to write (readers refuse it),
        // which the tests use; its time is then written in microseconds.
        let units = self
            .units
            .get(interface as usize)
            .copied()
            .unwrap_or(1_000_000);
        let ticks = u128::from(time.as_secs()) * u128::from(units)
            + u128::from(time.subsec_nanos()) * u128::from(units) / 1_000_000_000;
        let ticks = u64::try_from(ticks).map_err(|_| invalid("timestamp out of range"))?;
        let len = u32::try_from(data.len()).map_err(|_| invalid("frame longer than 4 GiB"))?;
        let mut body = Vec::with_capacity(20 + data.len() + 3);
        body.extend_from_slice(&e.u32_bytes(interface));
        body.extend_from_slice(&e.u32_bytes((ticks >> 32) as u32));
        body.extend_from_slice(&e.u32_bytes(ticks as u32));
        body.extend_from_slice(&e.u32_bytes(len));
        body.extend_from_slice(&e.u32_bytes(len));
        body.extend_from_slice(data);
        self.write_block(EPB_TYPE, &body)
    }

    /// Writes a simple packet block (interface 0, no timestamp).
    pub fn write_simple(&mut self, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| invalid("frame longer than 4 GiB"))?;
        let mut body = Vec::with_capacity(4 + data.len() + 3);
        body.extend_from_slice(&self.endian.u32_bytes(len));
        body.extend_from_slice(data);
        self.write_block(SPB_TYPE, &body)
    }

    /// Writes any block: the body is padded to a multiple of 4 and framed by the type
    /// and the total length twice.
    pub fn write_block(&mut self, block_type: u32, body: &[u8]) -> io::Result<()> {
        let e = self.endian;
        let padded = body.len().next_multiple_of(4);
        let total = u32::try_from(12 + padded).map_err(|_| invalid("block longer than 4 GiB"))?;
        let mut block = Vec::with_capacity(12 + padded);
        block.extend_from_slice(&e.u32_bytes(block_type));
        block.extend_from_slice(&e.u32_bytes(total));
        block.extend_from_slice(body);
        block.resize(8 + padded, 0);
        block.extend_from_slice(&e.u32_bytes(total));
        self.out.write_all(&block)
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn pcap_header_and_record_layout() {
        let mut out = Vec::new();
        let mut w = PcapWriter::new(&mut out, 246, PcapOptions::default()).unwrap();
        w.write_frame(Duration::new(1, 2_000), b"ab").unwrap();
        assert_eq!(
            out,
            [
                0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 246, 0, 0,
                0, // file header
                1, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, b'a', b'b' // record
            ]
        );
    }

    #[test]
    fn pcapng_blocks_are_padded_and_framed() {
        let mut out = Vec::new();
        let mut w = PcapNgWriter::new(&mut out, Endian::Big).unwrap();
        w.write_block(0x40, b"abcde").unwrap();
        let block = &out[28..];
        assert_eq!(
            block,
            [0, 0, 0, 0x40, 0, 0, 0, 20, b'a', b'b', b'c', b'd', b'e', 0, 0, 0, 0, 0, 0, 20]
        );
    }

    #[test]
    fn unrepresentable_values_are_errors() {
        let mut out = Vec::new();
        let mut w = PcapWriter::new(&mut out, 1, PcapOptions::default()).unwrap();
        assert!(w.write_frame(Duration::from_secs(1 << 33), b"").is_err());
        let mut ng = PcapNgWriter::new(Vec::new(), Endian::Little).unwrap();
        assert!(ng.add_interface(70_000, 0, None).is_err());
        assert!(ng.add_interface(1, 0, Some(20)).is_err());
    }
}
