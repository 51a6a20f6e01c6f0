//! A bulk's batch written from the cache's lone records ([`super::encode_record`]) as
//! they lie, for [`BatchWriter::push_record`](super::BatchWriter::push_record): one
//! pass over a record finds its parts ([`Layout`]), its groups are compared by their
//! bytes with the record before it, and its names go through the batch's dictionary
//! ([`Names`]).
//!
//! This is the sender's whole cost per state in a compact bulk (issue 14), so the pass
//! visits only the groups a record holds, compares short spans without a library call,
//! keeps of the record before only its bytes up to its key, and reuses its buffers from
//! batch to batch. The bytes written are those [`super::Encoder`] writes for the state
//! (`compact_record_tests.rs` proves it on synthetic and arbitrary states).
//!
//! A child of `compact_record` so that it shares the format's constants.

use super::{
    default_groups, unzigzag, varint, zigzag, CompactRecordError, ALL_BITS, CREATOR,
    DICTIONARY_SIZE, FLAGS, IFNAME, MAX_RECORD_BYTES, MIXED_FAMILIES, NAMES, QUEUES, ROUTE, RULE,
    RULE_REFS, SHAPE, STACK, STACK_ADDR0, STACK_ADDR1, STACK_AF, STACK_PORT0, STACK_PORT1,
    STACK_PROTO, STACK_RDOMAIN, TUNING,
};
use super::{
    PEER_MAX_WIN, PEER_MSS, PEER_SCRUB, PEER_SEQDIFF, PEER_SEQLO, PEER_WINDOW, PEER_WSCALE,
};

/// The mask bits that name groups (all but [`MIXED_FAMILIES`]), lowest first in the
/// order their bytes follow a record's id ([`super::GROUP_ORDER`]).
const GROUP_BITS: u32 = ALL_BITS & !MIXED_FAMILIES;

/// Where the parts of a lone record lie in its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Layout {
    mask: u32,
    id: u64,
    /// Each held group's bytes (start, end), by bit number; unset for the others.
    groups: [(u16, u16); 12],
    /// The wire key's addresses and ports.
    key: (u16, u16),
    age: u32,
    expire: u32,
    /// Where the counters start; the rest of the record is theirs and the peers'.
    rest: u16,
}

/// A cursor over a lone record that checks what it steps over as the full reader
/// does (lengths, varints, tags) but keeps nothing.
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scan<'_> {
    fn truncated(&self) -> CompactRecordError {
        CompactRecordError::Truncated { offset: self.at }
    }

    fn invalid(&self, field: &'static str) -> CompactRecordError {
        CompactRecordError::Invalid {
            field,
            offset: self.at,
        }
    }

    #[inline(always)]
    fn byte(&mut self) -> Result<u8, CompactRecordError> {
        match self.bytes.get(self.at) {
            Some(&b) => {
                self.at += 1;
                Ok(b)
            }
            None => Err(self.truncated()),
        }
    }

    #[inline(always)]
    fn skip(&mut self, n: usize) -> Result<(), CompactRecordError> {
        if self.bytes.len() - self.at < n {
            return Err(self.truncated());
        }
        self.at += n;
        Ok(())
    }

    #[inline(always)]
    fn varint(&mut self, field: &'static str) -> Result<u64, CompactRecordError> {
        // Most values (masks, ids, ages, small counters) take one byte.
        if let Some(&b) = self.bytes.get(self.at) {
            if b < 0x80 {
                self.at += 1;
                return Ok(u64::from(b));
            }
        }
        // Ids take nine bytes or so: read from a word when one ends within it.
        if let Some(word) = self.bytes.get(self.at..self.at + 8) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            let ends = !word & 0x8080_8080_8080_8080;
            if ends != 0 {
                let len = ends.trailing_zeros() / 8 + 1;
                let mut v = 0;
                for k in 0..len {
                    v |= (word >> (8 * k) & 0x7f) << (7 * k);
                }
                self.at += len as usize;
                return Ok(v);
            }
        }
        self.varint_long(field)
    }

    /// Steps over a varint, checked as [`varint`](Self::varint) checks it: a record's
    /// counters, windows and sequence numbers take several bytes, found at once
    /// where eight bytes follow.
    #[inline(always)]
    fn skip_varint(&mut self, field: &'static str) -> Result<(), CompactRecordError> {
        if let Some(word) = self.bytes.get(self.at..self.at + 8) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            // A byte without its high bit ends the varint; nine bytes or fewer always
            // fit 64 bits.
            let ends = !word & 0x8080_8080_8080_8080;
            if ends != 0 {
                self.at += ends.trailing_zeros() as usize / 8 + 1;
                return Ok(());
            }
        }
        self.varint_long(field).map(drop)
    }

    #[inline(never)]
    fn varint_long(&mut self, field: &'static str) -> Result<u64, CompactRecordError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            // The tenth byte may hold one bit only.
            if shift == 63 && part > 1 {
                return Err(self.invalid(field));
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.invalid(field))
    }

    #[inline(always)]
    fn u32(&mut self, field: &'static str) -> Result<u32, CompactRecordError> {
        let v = self.varint(field)?;
        u32::try_from(v).map_err(|_| self.invalid(field))
    }

    /// A name written whole (a lone record's, never a dictionary index).
    #[inline(always)]
    fn name(&mut self, field: &'static str) -> Result<(), CompactRecordError> {
        let len = self.byte()?;
        if len > 64 {
            return Err(self.invalid(field));
        }
        self.skip(usize::from(len))
    }

    /// A tagged address's bytes.
    fn tagged_addr(&mut self, field: &'static str) -> Result<(), CompactRecordError> {
        match self.byte()? {
            4 => self.skip(4),
            6 => self.skip(16),
            _ => Err(self.invalid(field)),
        }
    }

    #[inline(always)]
    fn peer(&mut self) -> Result<(), CompactRecordError> {
        let bits = self.byte()?;
        if bits & PEER_SEQLO != 0 {
            self.skip(4)?;
        }
        let varints = [PEER_WINDOW, PEER_SEQDIFF, PEER_MAX_WIN, PEER_MSS];
        for bit in varints {
            if bits & bit != 0 {
                self.skip_varint("peer")?;
            }
        }
        if bits & PEER_WSCALE != 0 {
            self.skip(1)?;
        }
        if bits & PEER_SCRUB != 0 {
            self.skip_varint("scrub flags")?;
            self.skip(5)?;
        }
        Ok(())
    }
}

impl Layout {
    /// Reads the parts of the lone record `bytes` into `self` (the groups it does not
    /// hold left as they were: never read), every byte stepped over and checked; an
    /// error for bytes [`super::encode_record`] did not make (it makes none longer
    /// than [`MAX_RECORD_BYTES`]).
    #[inline(always)]
    fn read(&mut self, bytes: &[u8]) -> Result<(), CompactRecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(CompactRecordError::Invalid {
                field: "record length",
                offset: MAX_RECORD_BYTES,
            });
        }
        let mut r = Scan { bytes, at: 0 };
        let mask = r.varint("mask")?;
        if mask & !u64::from(ALL_BITS) != 0 {
            return Err(r.invalid("mask"));
        }
        let layout = self;
        layout.mask = mask as u32;
        layout.id = unzigzag(r.varint("id")?) as u64;
        let mut inet6 = false;
        let mut held = layout.mask & GROUP_BITS;
        while held != 0 {
            let i = held.trailing_zeros() as usize;
            held &= held - 1;
            let start = r.at;
            match 1 << i {
                IFNAME => r.name("ifname")?,
                SHAPE => {
                    let shape = r.byte()?;
                    inet6 = shape & 1 != 0;
                    // The protocol's number when its code is 7, then the timeout.
                    r.skip(1 + usize::from(shape >> 3 == 7))?;
                }
                RULE => r.skip_varint("rule")?,
                STACK => {
                    let bits = r.byte()?;
                    r.skip(
                        usize::from(bits & STACK_AF != 0) + usize::from(bits & STACK_PROTO != 0),
                    )?;
                    for addr in [STACK_ADDR0, STACK_ADDR1] {
                        if bits & addr != 0 {
                            r.tagged_addr("stack address")?;
                        }
                    }
                    r.skip(
                        2 * (usize::from(bits & STACK_PORT0 != 0)
                            + usize::from(bits & STACK_PORT1 != 0)),
                    )?;
                    if bits & STACK_RDOMAIN != 0 {
                        r.skip_varint("stack rdomain")?;
                    }
                }
                CREATOR => r.skip(4)?,
                FLAGS => {
                    r.skip(2)?;
                    r.skip_varint("state flags")?;
                }
                ROUTE => {
                    r.skip(1)?;
                    match r.byte()? {
                        0 => {}
                        4 => r.skip(4)?,
                        6 => r.skip(16)?,
                        _ => return Err(r.invalid("route address")),
                    }
                    r.name("route interface")?;
                }
                NAMES => {
                    r.name("original interface")?;
                    r.name("tag")?;
                }
                QUEUES | RULE_REFS => {
                    for _ in 0..4 {
                        r.skip_varint("queue or rule reference")?;
                    }
                }
                TUNING => {
                    r.skip(4)?;
                    r.skip_varint("max mss")?;
                }
                // RDOMAIN, the last.
                _ => r.skip_varint("rdomain")?,
            }
            // Within MAX_RECORD_BYTES, checked above.
            layout.groups[i] = (start as u16, r.at as u16);
        }
        let key_start = r.at;
        if layout.mask & MIXED_FAMILIES != 0 {
            r.tagged_addr("address")?;
            r.tagged_addr("address")?;
        } else {
            r.skip(if inet6 { 32 } else { 8 })?;
        }
        r.skip(4)?;
        layout.key = (key_start as u16, r.at as u16);
        layout.age = r.u32("age")?;
        layout.expire = r.u32("expire")?;
        layout.rest = r.at as u16;
        // The rest is copied as it is, but stepped over all the same: bytes that are
        // not a whole record are refused, not passed on.
        for _ in 0..4 {
            r.skip_varint("counter")?;
        }
        r.skip(1)?;
        r.peer()?;
        r.peer()?;
        if r.at != bytes.len() {
            return Err(r.invalid("trailing bytes"));
        }
        Ok(())
    }

    /// The bytes of held group `i` in `bytes`, the record this layout is of.
    #[inline(always)]
    fn group<'a>(&self, bytes: &'a [u8], i: usize) -> &'a [u8] {
        let (start, end) = self.groups[i];
        &bytes[usize::from(start)..usize::from(end)]
    }
}

/// Whether two short spans hold the same bytes, without a library call: a group is a
/// few bytes, where `memcmp`'s call costs more than the comparison.
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut differ = 0;
    for (x, y) in a.iter().zip(b) {
        differ |= x ^ y;
    }
    differ == 0
}

/// A batch's name dictionary, as [`super::Encoder`] keeps it (the first
/// [`DICTIONARY_SIZE`] names it sent, by index), each name's first 16 bytes (all of an
/// interface's) also held as one number, so that looking a name up compares numbers.
#[derive(Debug, Default)]
pub(super) struct Names {
    heads: Vec<(u8, u128)>,
    /// The bytes after the first 16 of each name (a tag's), empty for shorter names.
    tails: Vec<Vec<u8>>,
}

impl Names {
    pub(super) fn len(&self) -> usize {
        self.heads.len()
    }

    pub(super) fn truncate(&mut self, len: usize) {
        self.heads.truncate(len);
        self.tails.truncate(len);
    }

    pub(super) fn clear(&mut self) {
        self.truncate(0);
    }

    /// Writes a name by its used bytes (up to its last non-NUL), or by its index if
    /// this batch sent it before.
    #[inline(always)]
    fn write(&mut self, out: &mut Vec<u8>, raw: &[u8]) {
        let used = &raw[..raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)];
        let mut head = 0u128;
        for (i, &b) in used.iter().take(16).enumerate() {
            head |= u128::from(b) << (8 * i);
        }
        let len = used.len() as u8;
        let tail = used.get(16..).unwrap_or(&[]);
        let found = self
            .heads
            .iter()
            .zip(&self.tails)
            .position(|(h, t)| *h == (len, head) && (len <= 16 || t[..] == tail[..]));
        if let Some(i) = found {
            out.push(0x80 | i as u8);
            return;
        }
        out.push(len);
        out.extend_from_slice(used);
        if self.heads.len() < DICTIONARY_SIZE {
            self.heads.push((len, head));
            self.tails.push(tail.to_vec());
        }
    }
}

/// What [`BatchWriter::push_record`](super::BatchWriter::push_record) keeps between
/// records of a batch: the record before (its layout and its bytes up to its key: its
/// groups), and the batch's names.
#[derive(Debug)]
pub(super) struct FromRecords {
    /// The layouts of the record before (`layouts[prev]`) and of the one being
    /// written, read in place.
    layouts: [Layout; 2],
    prev: usize,
    prev_bytes: [u8; MAX_RECORD_BYTES],
    pub(super) names: Names,
}

impl Default for FromRecords {
    fn default() -> FromRecords {
        FromRecords {
            layouts: [Layout::default(); 2],
            prev: 0,
            prev_bytes: [0; MAX_RECORD_BYTES],
            names: Names::default(),
        }
    }
}

impl FromRecords {
    /// A new batch: compared with the default state again, no names sent.
    pub(super) fn clear(&mut self) {
        self.layouts[self.prev] = Layout::default();
        self.names.clear();
    }

    /// Appends the batch record of the lone record `record` aged by `waited` seconds to
    /// `out` (space reserved), as the record after the one before; does not take it as
    /// the one before (see [`taken`](Self::taken)).
    #[inline(always)]
    pub(super) fn write(
        &mut self,
        record: &[u8],
        waited: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), CompactRecordError> {
        let [first, second] = &mut self.layouts;
        let (prev, layout) = if self.prev == 0 {
            (&*first, second)
        } else {
            (&*second, first)
        };
        layout.read(record)?;
        let layout = &*layout;
        let held = layout.mask & GROUP_BITS;
        let prev_held = prev.mask & GROUP_BITS;
        // A group a lone record holds differs from the default's (that is why it holds
        // it): a group one of the two holds differs, and only groups both hold need
        // their bytes compared. The stack group is the record's own (its stack key
        // against its wire key), never compared.
        let mut mask = (layout.mask & (STACK | MIXED_FAMILIES)) | ((held ^ prev_held) & !STACK);
        let mut both = held & prev_held & !STACK;
        while both != 0 {
            let i = both.trailing_zeros() as usize;
            both &= both - 1;
            if !same(layout.group(record, i), prev.group(&self.prev_bytes, i)) {
                mask |= 1 << i;
            }
        }
        out.reserve(record.len() + 32);
        varint(out, u64::from(mask));
        varint(out, zigzag(layout.id.wrapping_sub(prev.id) as i64));
        let mut written = mask & GROUP_BITS;
        while written != 0 {
            let i = written.trailing_zeros() as usize;
            written &= written - 1;
            let span = if held & (1 << i) != 0 {
                layout.group(record, i)
            } else {
                &default_groups()[i][..]
            };
            match 1 << i {
                IFNAME => self.names.write(out, &span[1..]),
                ROUTE => {
                    // Route type, tagged address (a 0 tag when none), interface.
                    let head = 2 + match span[1] {
                        4 => 4,
                        6 => 16,
                        _ => 0,
                    };
                    out.extend_from_slice(&span[..head]);
                    self.names.write(out, &span[head + 1..]);
                }
                NAMES => {
                    let first = 1 + usize::from(span[0]);
                    self.names.write(out, &span[1..first]);
                    self.names.write(out, &span[first + 1..]);
                }
                _ => out.extend_from_slice(span),
            }
        }
        let (key_start, key_end) = (usize::from(layout.key.0), usize::from(layout.key.1));
        out.extend_from_slice(&record[key_start..key_end]);
        varint(out, u64::from(layout.age.saturating_add(waited)));
        varint(out, u64::from(layout.expire.saturating_sub(waited)));
        out.extend_from_slice(&record[usize::from(layout.rest)..]);
        Ok(())
    }

    /// The record `write` wrote last (`record`) stays in the batch: the next is
    /// compared with it.
    #[inline(always)]
    pub(super) fn taken(&mut self, record: &[u8]) {
        self.prev = 1 - self.prev;
        let groups_end = usize::from(self.layouts[self.prev].key.0);
        self.prev_bytes[..groups_end].copy_from_slice(&record[..groups_end]);
    }
}

#[cfg(test)]
#[path = "compact_record_layout_tests.rs"]
mod tests;
