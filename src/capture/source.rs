//! A byte stream that knows where it is, and reads declared lengths without trusting
//! them: a length only ever allocates as many bytes as actually arrive.

use std::io::{self, Read};

/// Which way multi-byte fields of a capture file are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endian {
    /// Least significant byte first (what x86 and most capture files use).
    Little,
    /// Most significant byte first.
    Big,
}

impl Endian {
    /// Reads a `u16` from exactly two bytes.
    pub fn u16(self, bytes: [u8; 2]) -> u16 {
        match self {
            Endian::Little => u16::from_le_bytes(bytes),
            Endian::Big => u16::from_be_bytes(bytes),
        }
    }

    /// Reads a `u32` from exactly four bytes.
    pub fn u32(self, bytes: [u8; 4]) -> u32 {
        match self {
            Endian::Little => u32::from_le_bytes(bytes),
            Endian::Big => u32::from_be_bytes(bytes),
        }
    }

    /// Reads a `u64` from exactly eight bytes.
    pub fn u64(self, bytes: [u8; 8]) -> u64 {
        match self {
            Endian::Little => u64::from_le_bytes(bytes),
            Endian::Big => u64::from_be_bytes(bytes),
        }
    }

    /// The bytes of a `u16`.
    pub fn u16_bytes(self, value: u16) -> [u8; 2] {
        match self {
            Endian::Little => value.to_le_bytes(),
            Endian::Big => value.to_be_bytes(),
        }
    }

    /// The bytes of a `u32`.
    pub fn u32_bytes(self, value: u32) -> [u8; 4] {
        match self {
            Endian::Little => value.to_le_bytes(),
            Endian::Big => value.to_be_bytes(),
        }
    }

    /// The bytes of a `u64`.
    pub fn u64_bytes(self, value: u64) -> [u8; 8] {
        match self {
            Endian::Little => value.to_le_bytes(),
            Endian::Big => value.to_be_bytes(),
        }
    }

    /// Reads a `u16` at `at`, or `None` past the end of `bytes`.
    pub fn u16_at(self, bytes: &[u8], at: usize) -> Option<u16> {
        let raw = bytes.get(at..at.checked_add(2)?)?;
        Some(self.u16(raw.try_into().ok()?))
    }

    /// Reads a `u32` at `at`, or `None` past the end of `bytes`.
    pub fn u32_at(self, bytes: &[u8], at: usize) -> Option<u32> {
        let raw = bytes.get(at..at.checked_add(4)?)?;
        Some(self.u32(raw.try_into().ok()?))
    }

    /// Reads a `u64` at `at`, or `None` past the end of `bytes`.
    pub fn u64_at(self, bytes: &[u8], at: usize) -> Option<u64> {
        let raw = bytes.get(at..at.checked_add(8)?)?;
        Some(self.u64(raw.try_into().ok()?))
    }
}

/// A reader that counts the bytes it consumed, so errors can say where they are.
#[derive(Debug)]
pub(crate) struct Source<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R, offset: u64) -> Self {
        Source { inner, offset }
    }

    /// Bytes consumed so far.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads until `buf` is full or the stream ends; returns how many bytes arrived.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.offset += filled as u64;
        Ok(filled)
    }

    /// Replaces the contents of `buf` with up to `len` bytes from the stream and returns
    /// how many arrived. The buffer grows with the data, never ahead of it, so a bogus
    /// `len` costs nothing beyond the bytes really present.
    pub(crate) fn read_into(&mut self, buf: &mut Vec<u8>, len: u64) -> io::Result<usize> {
        buf.clear();
        let n = (&mut self.inner).take(len).read_to_end(buf)?;
        self.offset += n as u64;
        Ok(n)
    }

    /// Discards up to `len` bytes; returns how many there were.
    pub(crate) fn skip(&mut self, len: u64) -> io::Result<u64> {
        let n = io::copy(&mut (&mut self.inner).take(len), &mut io::sink())?;
        self.offset += n;
        Ok(n)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn reads_are_counted_and_short_reads_reported() {
        let data = [1u8, 2, 3, 4, 5];
        let mut src = Source::new(&data[..], 0);
        let mut four = [0u8; 4];
        assert_eq!(src.fill(&mut four).unwrap(), 4);
        assert_eq!(src.offset(), 4);
        let mut buf = Vec::new();
        assert_eq!(src.read_into(&mut buf, u64::MAX).unwrap(), 1);
        assert_eq!(buf, [5]);
        assert_eq!(src.skip(10).unwrap(), 0);
        assert_eq!(src.offset(), 5);
    }

    #[test]
    fn a_huge_declared_length_allocates_only_what_arrives() {
        let data = [7u8; 10];
        let mut src = Source::new(&data[..], 0);
        let mut buf = Vec::new();
        assert_eq!(src.read_into(&mut buf, 1 << 40).unwrap(), 10);
        assert!(buf.capacity() < 1 << 20);
    }

    #[test]
    fn field_readers_stop_at_the_end() {
        let e = Endian::Big;
        assert_eq!(e.u16_at(&[1, 2, 3], 1), Some(0x0203));
        assert_eq!(e.u16_at(&[1, 2, 3], 2), None);
        assert_eq!(e.u32_at(&[1, 2, 3], usize::MAX - 1), None);
        assert_eq!(Endian::Little.u32_at(&[1, 0, 0, 0], 0), Some(1));
        assert_eq!(Endian::Little.u64_at(&[0; 7], 0), None);
    }
}
