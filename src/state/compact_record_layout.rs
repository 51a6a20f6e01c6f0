//! A bulk's batch written from the cache's lone records ([`super::encode_record`]) as
//! they lie, for [`BatchWriter::push_record`](super::BatchWriter::push_record): one
//! pass over a record finds its parts ([`Layout`]), its groups are compared by their
//! bytes with the record before it, and its names go through the batch's dictionary
//! ([`Names`]).
//!
//! This is the sender's whole cost per state in a compact bulk (issue 14), so the pass
//! visits only the groups a record holds (a bulk's common ones at constant places), reads
//! each short group once as a number (with its length) that is compared and written
//! whole, checks the counters and peers it copies by finding runs of varints in one
//! word (field by field only for what that does not take), writes the batch record in
//! a room of its own and moves it into the batch in one copy, keeps of the record before
//! only its layout (and its bytes up to its key when it has a long group), and reuses
//! its buffers from batch to batch. The bytes written are those [`super::Encoder`]
//! writes for the state (`compact_record_tests.rs` and `compact_record_layout_tests.rs`
//! prove it on synthetic, live-like and arbitrary states).
//!
//! A child of `compact_record` so that it shares the format's constants.

use super::{
    default_groups, unzigzag, varint_of_eight, zigzag, CompactRecordError, ALL_BITS, CREATOR,
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
    /// Each held group of fewer than 16 bytes as a number ([`word`]), its length in
    /// its highest byte, by bit number: compared and copied whole.
    words: [u128; 12],
    /// The held groups of 16 bytes or more (a tag's, a route's): compared and copied
    /// by their bytes.
    long: u32,
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
        // Ids take a few bytes: read from a word when one ends within it.
        if let Some((v, len)) = self.bytes.get(self.at..).and_then(varint_of_eight) {
            self.at += len;
            return Ok(v);
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
        self.skip_varints_apart(1, field)
    }

    /// Steps over `k` varints one after the other (a record's counters, a peer's
    /// windows), checked as [`varint`](Self::varint) checks each: at once where they
    /// end within the 16 bytes from here and none takes ten bytes (the one length
    /// whose last byte can overflow 64 bits), one by one otherwise.
    #[inline(always)]
    fn skip_varints(&mut self, k: u32, field: &'static str) -> Result<(), CompactRecordError> {
        if k == 0 {
            return Ok(());
        }
        if let Some(word) = self.window() {
            let mut ends = !word & HIGH_BITS;
            for _ in 1..k {
                ends &= ends.wrapping_sub(1);
            }
            // The high bit of the byte that ends the k-th varint.
            let last = ends.trailing_zeros();
            // Where nine bytes in a row go on (a varint of ten bytes or more): the
            // high bit of the first of them.
            let more = word & HIGH_BITS;
            let two = more & (more >> 8);
            let four = two & (two >> 16);
            let nine = four & (four >> 32) & (four >> 40);
            let at = self.at + (last / 8 + 1) as usize;
            // Past the end: a varint cut short, its error found one by one.
            if ends != 0 && nine.trailing_zeros() > last && at <= self.bytes.len() {
                self.at = at;
                return Ok(());
            }
        }
        self.skip_varints_apart(k, field)
    }

    /// [`skip_varints`](Self::skip_varints) one varint at a time.
    #[inline(never)]
    fn skip_varints_apart(
        &mut self,
        k: u32,
        field: &'static str,
    ) -> Result<(), CompactRecordError> {
        for _ in 0..k {
            self.varint_long(field)?;
        }
        Ok(())
    }

    /// The 16 bytes from here as a number, little-endian, zero past the record's end
    /// (the last varints of a record are read at once too); `None` for a record
    /// shorter than 16 bytes.
    #[inline(always)]
    fn window(&self) -> Option<u128> {
        (self.bytes.len() >= 16).then(|| load(self.bytes, self.at))
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
        let varints = bits & (PEER_WINDOW | PEER_SEQDIFF | PEER_MAX_WIN | PEER_MSS);
        self.skip_varints(varints.count_ones(), "peer")?;
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
    /// Group `i` of `bytes` (this layout's record) lies from `start` to `end`.
    #[inline(always)]
    fn held(&mut self, bytes: &[u8], i: usize, start: usize, end: usize) {
        // Within MAX_RECORD_BYTES, checked before.
        self.groups[i] = (start as u16, end as u16);
        let len = end - start;
        if len < 16 {
            self.words[i] = word(bytes, start, len) | (len as u128) << 120;
        } else {
            self.long |= 1 << i;
        }
    }

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
        layout.long = 0;
        let mut inet6 = false;
        // The groups a bulk's records hold, each in its own branch (its bit number a
        // constant there), then the rare ones.
        let held = layout.mask;
        if held & IFNAME != 0 {
            let start = r.at;
            r.name("ifname")?;
            layout.held(bytes, 0, start, r.at);
        }
        if held & SHAPE != 0 {
            let start = r.at;
            let shape = r.byte()?;
            inet6 = shape & 1 != 0;
            // The protocol's number when its code is 7, then the timeout.
            r.skip(1 + usize::from(shape >> 3 == 7))?;
            layout.held(bytes, 1, start, r.at);
        }
        if held & RULE != 0 {
            let start = r.at;
            r.skip_varint("rule")?;
            layout.held(bytes, 2, start, r.at);
        }
        if held & CREATOR != 0 && held & STACK == 0 {
            let start = r.at;
            r.skip(4)?;
            layout.held(bytes, 4, start, r.at);
        }
        // (A stack group comes before the creator's.)
        let rare = if held & STACK == 0 { !CREATOR } else { !0 };
        let mut held = held & GROUP_BITS & !(IFNAME | SHAPE | RULE) & rare;
        while held != 0 {
            let i = held.trailing_zeros() as usize;
            held &= held - 1;
            let start = r.at;
            match 1 << i {
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
            layout.held(bytes, i, start, r.at);
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
        if rest_end(bytes, r.at) == Some(bytes.len()) {
            return Ok(());
        }
        // Bytes the quick look could not take: checked field by field, for the error
        // (or taken after all: a varint of ten bytes, a scrubbed peer).
        r.rest()
    }
}

impl Scan<'_> {
    /// Steps over a record's counters and peers, field by field, to its last byte.
    fn rest(&mut self) -> Result<(), CompactRecordError> {
        self.skip_varints(4, "counter")?;
        self.skip(1)?;
        self.peer()?;
        self.peer()?;
        if self.at != self.bytes.len() {
            return Err(self.invalid("trailing bytes"));
        }
        Ok(())
    }
}

/// Whether the counters and peers from `at` in `bytes` (a record's, up to its end)
/// are taken by the quick look, and by the field-by-field scan, for their tests.
#[cfg(test)]
fn rest_taken(bytes: &[u8], at: usize) -> (bool, bool) {
    let quick = rest_end(bytes, at) == Some(bytes.len());
    let scanned = Scan { bytes, at }.rest().is_ok();
    (quick, scanned)
}

/// High bits of 16 bytes: where a varint's byte says that another follows.
const HIGH_BITS: u128 = u128::from_le_bytes([0x80; 16]);

/// The 16 bytes from `at` in `bytes` as a number, little-endian, zero past its end.
#[inline(always)]
fn load(bytes: &[u8], at: usize) -> u128 {
    if let Some(word) = bytes.get(at..).and_then(<[u8]>::first_chunk::<16>) {
        return u128::from_le_bytes(*word);
    }
    match bytes.last_chunk::<16>() {
        // Then `at` is within its last 16 bytes, or past them.
        Some(last) => {
            let shift = 8 * (at - (bytes.len() - 16));
            u128::from_le_bytes(*last)
                .checked_shr(shift as u32)
                .unwrap_or(0)
        }
        None => {
            let mut word = [0u8; 16];
            let from = bytes.get(at..).unwrap_or(&[]);
            word[..from.len()].copy_from_slice(from);
            u128::from_le_bytes(word)
        }
    }
}

/// [`load`] of 8 bytes.
#[inline(always)]
fn load8(bytes: &[u8], at: usize) -> u64 {
    if let Some(word) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        return u64::from_le_bytes(*word);
    }
    match bytes.last_chunk::<8>() {
        Some(last) => {
            let shift = 8 * (at - (bytes.len() - 8));
            u64::from_le_bytes(*last)
                .checked_shr(shift as u32)
                .unwrap_or(0)
        }
        None => load(bytes, at) as u64,
    }
}

/// Where the `k` varints from `at` in `bytes` end, when they all end within the 16
/// bytes from there and none takes ten bytes (the one length whose last byte can
/// overflow 64 bits); `None` otherwise. Bytes past the end read as zeros: a varint
/// cut short ends past the end.
#[inline(always)]
fn varints_end(bytes: &[u8], at: usize, k: u32) -> Option<usize> {
    if k == 0 {
        return Some(at);
    }
    // Most runs end within 8 bytes, where no varint can take ten.
    let word = load8(bytes, at);
    let mut ends = !word & 0x8080_8080_8080_8080;
    for _ in 1..k {
        ends &= ends.wrapping_sub(1);
    }
    if ends != 0 {
        return Some(at + (ends.trailing_zeros() / 8 + 1) as usize);
    }
    varints_end_wide(bytes, at, k)
}

/// [`varints_end`] over 16 bytes.
#[inline(always)]
fn varints_end_wide(bytes: &[u8], at: usize, k: u32) -> Option<usize> {
    let word = load(bytes, at);
    let mut ends = !word & HIGH_BITS;
    for _ in 1..k {
        ends &= ends.wrapping_sub(1);
    }
    if ends == 0 {
        return None;
    }
    // The high bit of the byte that ends the k-th varint.
    let last = ends.trailing_zeros();
    // Where nine bytes in a row go on: the high bit of the first of them.
    let more = word & HIGH_BITS;
    let two = more & (more >> 8);
    let four = two & (two >> 16);
    let nine = four & (four >> 32) & (four >> 40);
    (nine.trailing_zeros() > last).then_some(at + (last / 8 + 1) as usize)
}

/// Where a record's counters and peers from `at` end, found at once: four varints, a
/// byte, and two peers without scrub data, each run of varints as
/// [`varints_end`] finds it; `None` for those it does not take (the caller checks
/// them field by field). Once a field runs past the end, so does every later one, so
/// an end at the record's end means that every field lies within it.
#[inline(always)]
fn rest_end(bytes: &[u8], at: usize) -> Option<usize> {
    const VARINTS: u8 = PEER_WINDOW | PEER_SEQDIFF | PEER_MAX_WIN | PEER_MSS;
    // The counters (packets and bytes: several bytes each) seldom end within eight.
    let mut at = varints_end_wide(bytes, at, 4)? + 1;
    for _ in 0..2 {
        let bits = *bytes.get(at)?;
        if bits & PEER_SCRUB != 0 {
            return None;
        }
        at += 1 + 4 * usize::from(bits & PEER_SEQLO != 0);
        // How many of the four varints the peer holds (bits 1 to 4).
        const HELD: [u8; 16] = [0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4];
        const _: () = assert!(VARINTS == 0b1_1110);
        at = varints_end(bytes, at, u32::from(HELD[usize::from(bits >> 1 & 0xf)]))?;
        at += usize::from(bits & PEER_WSCALE != 0);
    }
    Some(at)
}

/// Room for one batch record as [`FromRecords::write`] makes it before it goes into
/// the batch: a record of [`MAX_RECORD_BYTES`] grows by at most its mask's and id's
/// widest varints, its age's and expiry's, and the default groups it falls back to
/// (under 100 bytes in all), and the 16-byte moves below write up to 16 bytes past
/// what they keep.
const STAGE_BYTES: usize = 2 * MAX_RECORD_BYTES;

/// Bytes of the 16 from `at` in `bytes` as a number, little-endian, those past `len`
/// (at most 16) zero; `None` when `bytes` holds fewer than 16 from `at` (the caller
/// then takes the bytes one by one). A group or name is a few bytes, and a record
/// holds at least 16 more after any of them (its key, age, expiry, counters, peers):
/// one load, where a byte loop or `memcmp` call cost more than the comparison.
#[inline(always)]
fn window(bytes: &[u8], at: usize, len: usize) -> Option<u128> {
    let word = u128::from_le_bytes(*bytes.get(at..)?.first_chunk::<16>()?);
    Some(word & LOW_BYTES[len.min(16)])
}

/// By `n`: a number whose low `n` bytes are all ones (a shift of a 128-bit number by
/// a variable count costs a dozen instructions, a load one).
const LOW_BYTES: [u128; 17] = {
    let mut masks = [u128::MAX; 17];
    let mut n = 0;
    while n < 16 {
        masks[n] = (1u128 << (8 * n)) - 1;
        n += 1;
    }
    masks
};

/// The `len` bytes (16 or fewer) from `at` in `bytes` as a number, as [`window`]
/// reads them, or byte by byte where fewer than 16 follow (never in a record made by
/// [`super::encode_record`], whose groups all have its key and more after them).
#[inline(always)]
fn word(bytes: &[u8], at: usize, len: usize) -> u128 {
    match window(bytes, at, len) {
        Some(word) => word,
        None => bytes[at..at + len]
            .iter()
            .rev()
            .fold(0, |word, &b| word << 8 | u128::from(b)),
    }
}

/// Writes the number `word`'s low `len` bytes (16 or fewer) into `stage` at `at`, in
/// one 16-byte move; returns where they end.
#[inline(always)]
fn put_word(stage: &mut [u8; STAGE_BYTES], at: usize, word: u128, len: usize) -> usize {
    stage[at..at + 16].copy_from_slice(&word.to_le_bytes());
    at + len
}

/// Copies `src` into `stage` at `at`, returning where it ends: in moves of 16, 8 or 4
/// bytes (the last overlapping the one before), not a `memcpy` call per few bytes.
#[inline(always)]
fn put(stage: &mut [u8; STAGE_BYTES], at: usize, src: &[u8]) -> usize {
    let n = src.len();
    let end = at + n;
    if n >= 16 {
        let mut i = 0;
        while i + 16 < n {
            stage[at + i..at + i + 16].copy_from_slice(&src[i..i + 16]);
            i += 16;
        }
        stage[end - 16..end].copy_from_slice(&src[n - 16..]);
    } else if n >= 8 {
        stage[at..at + 8].copy_from_slice(&src[..8]);
        stage[end - 8..end].copy_from_slice(&src[n - 8..]);
    } else if n >= 4 {
        stage[at..at + 4].copy_from_slice(&src[..4]);
        stage[end - 4..end].copy_from_slice(&src[n - 4..]);
    } else {
        for (to, from) in stage[at..end].iter_mut().zip(src) {
            *to = *from;
        }
    }
    end
}

/// Writes the varint of `v` into `stage` at `at`, returning where it ends.
#[inline(always)]
fn put_varint(stage: &mut [u8; STAGE_BYTES], mut at: usize, mut v: u64) -> usize {
    // A mask, an id's step, an age or expiry: one or two bytes.
    if v < 0x80 {
        stage[at] = v as u8;
        return at + 1;
    }
    if v < 0x4000 {
        stage[at..at + 2].copy_from_slice(&[v as u8 | 0x80, (v >> 7) as u8]);
        return at + 2;
    }
    while v >= 0x80 {
        stage[at] = v as u8 | 0x80;
        v >>= 7;
        at += 1;
    }
    stage[at] = v as u8;
    at + 1
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

    /// Writes the name of `len` bytes at `from` in `record` into `stage` at `at` by its
    /// used bytes (up to its last non-NUL), or by its index if this batch sent it
    /// before; returns where it ends.
    #[inline(always)]
    fn write(
        &mut self,
        stage: &mut [u8; STAGE_BYTES],
        at: usize,
        record: &[u8],
        from: usize,
        len: usize,
    ) -> usize {
        if len <= 16 {
            return self.write_short(stage, at, word(record, from, len));
        }
        let raw = &record[from..from + len];
        let used = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let head = word(raw, 0, used.min(16));
        let tail = raw.get(16..used).unwrap_or(&[]);
        self.write_found(stage, at, used, head, tail)
    }

    /// [`write`](Self::write) for a name of 16 bytes or fewer, given as a number
    /// ([`word`]): an interface's, always.
    #[inline(always)]
    fn write_short(&mut self, stage: &mut [u8; STAGE_BYTES], at: usize, name: u128) -> usize {
        // Its used bytes end at the highest byte of the number that is not NUL.
        let used = 16 - (name.leading_zeros() / 8) as usize;
        self.write_found(stage, at, used, name, &[])
    }

    #[inline(always)]
    fn write_found(
        &mut self,
        stage: &mut [u8; STAGE_BYTES],
        at: usize,
        used: usize,
        head: u128,
        tail: &[u8],
    ) -> usize {
        let key = (used as u8, head);
        let found = self
            .heads
            .iter()
            .zip(&self.tails)
            .position(|(h, t)| *h == key && (used <= 16 || t[..] == tail[..]));
        if let Some(i) = found {
            stage[at] = 0x80 | i as u8;
            return at + 1;
        }
        stage[at] = used as u8;
        let end = put_word(stage, at + 1, head, used.min(16));
        let end = put(stage, end, tail);
        if self.heads.len() < DICTIONARY_SIZE {
            self.heads.push(key);
            self.tails.push(tail.to_vec());
        }
        end
    }
}

/// What [`BatchWriter::push_record`](super::BatchWriter::push_record) keeps between
/// records of a batch: the record before (its layout and its bytes up to its key: its
/// groups), the batch's names, and the room where a record is written.
#[derive(Debug)]
pub(super) struct FromRecords {
    /// The layouts of the record before (`layouts[prev]`) and of the one being
    /// written, read in place.
    layouts: [Layout; 2],
    prev: usize,
    /// The bytes of the record before up to its key, when it has a long group.
    prev_bytes: [u8; MAX_RECORD_BYTES],
    pub(super) names: Names,
    /// The record being written, moved into the batch whole when it fits.
    stage: [u8; STAGE_BYTES],
}

impl Default for FromRecords {
    fn default() -> FromRecords {
        FromRecords {
            layouts: [Layout::default(); 2],
            prev: 0,
            prev_bytes: [0; MAX_RECORD_BYTES],
            names: Names::default(),
            stage: [0; STAGE_BYTES],
        }
    }
}

impl FromRecords {
    /// A new batch: compared with the default state again, no names sent.
    pub(super) fn clear(&mut self) {
        self.layouts[self.prev] = Layout::default();
        self.names.clear();
    }

    /// Writes the batch record of the lone record `record` aged by `waited` seconds, as
    /// the record after the one before, and returns it (see [`taken`](Self::taken)
    /// once it went into the batch). Its names are in the dictionary from here on.
    #[inline(always)]
    pub(super) fn write(
        &mut self,
        record: &[u8],
        waited: u32,
    ) -> Result<&[u8], CompactRecordError> {
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
        let both = held & prev_held & !STACK;
        // Groups of a few bytes on both sides: the same when their numbers (length
        // included) are.
        let long = (layout.long | prev.long) & both;
        let short = both & !long;
        // A bulk's groups, each at a constant place and without a branch.
        for i in [0, 1, 2, 4] {
            mask |= u32::from(layout.words[i] != prev.words[i]) << i & short;
        }
        let mut short = short & !(IFNAME | SHAPE | RULE | CREATOR);
        while short != 0 {
            let i = short.trailing_zeros() as usize;
            short &= short - 1;
            mask |= u32::from(layout.words[i] != prev.words[i]) << i;
        }
        let mut long = long;
        while long != 0 {
            let i = long.trailing_zeros() as usize;
            long &= long - 1;
            let (start, end) = layout.groups[i];
            let (prev_start, prev_end) = prev.groups[i];
            // Of 16 bytes or more on one side at least: the other's bytes are in
            // `prev_bytes` when they are as long.
            let differs = end - start != prev_end - prev_start
                || record[usize::from(start)..usize::from(end)]
                    != self.prev_bytes[usize::from(prev_start)..usize::from(prev_end)];
            mask |= u32::from(differs) << i;
        }
        let stage = &mut self.stage;
        let mut at = put_varint(stage, 0, u64::from(mask));
        at = put_varint(stage, at, zigzag(layout.id.wrapping_sub(prev.id) as i64));
        let mut written = mask & GROUP_BITS;
        // The common groups: a few bytes, in one number.
        let in_words = held & !layout.long & !(ROUTE | NAMES);
        // The first three, when each is in its number, at their constant places.
        let first = IFNAME | SHAPE | RULE;
        if written & first & !in_words == 0 {
            if written & IFNAME != 0 {
                // Its length's byte, then the name.
                let name = (layout.words[0] & LOW_BYTES[15]) >> 8;
                at = self.names.write_short(stage, at, name);
            }
            for i in [1, 2] {
                if written & (1 << i) != 0 {
                    let word = layout.words[i];
                    at = put_word(stage, at, word, (word >> 120) as usize);
                }
            }
            written &= !first;
        }
        while written != 0 {
            let i = written.trailing_zeros() as usize;
            written &= written - 1;
            let names = &mut self.names;
            let bit = 1 << i;
            if in_words & bit != 0 {
                let word = layout.words[i];
                at = if bit == IFNAME {
                    // Its length's byte, then the name.
                    names.write_short(stage, at, (word & LOW_BYTES[15]) >> 8)
                } else {
                    put_word(stage, at, word, (word >> 120) as usize)
                };
                continue;
            }
            // A group the record does not hold is the default's.
            let (bytes, start, end) = if held & bit != 0 {
                let (start, end) = layout.groups[i];
                (record, usize::from(start), usize::from(end))
            } else {
                let default = &default_groups()[i][..];
                (default, 0, default.len())
            };
            at = match bit {
                IFNAME => names.write(stage, at, bytes, start + 1, end - start - 1),
                ROUTE => {
                    // Route type, tagged address (a 0 tag when none), interface.
                    let head = 2 + match bytes[start + 1] {
                        4 => 4,
                        6 => 16,
                        _ => 0,
                    };
                    let at = put(stage, at, &bytes[start..start + head]);
                    let name = start + head + 1;
                    names.write(stage, at, bytes, name, end - name)
                }
                NAMES => {
                    let first = start + 1 + usize::from(bytes[start]);
                    let at = names.write(stage, at, bytes, start + 1, first - start - 1);
                    names.write(stage, at, bytes, first + 1, end - first - 1)
                }
                _ => put(stage, at, &bytes[start..end]),
            };
        }
        let (key_start, key_end) = (usize::from(layout.key.0), usize::from(layout.key.1));
        at = match window(record, key_start, key_end - key_start) {
            // An IPv4 key's 12 bytes.
            Some(key) if key_end - key_start <= 16 => put_word(stage, at, key, key_end - key_start),
            _ => put(stage, at, &record[key_start..key_end]),
        };
        at = put_varint(stage, at, u64::from(layout.age.saturating_add(waited)));
        at = put_varint(stage, at, u64::from(layout.expire.saturating_sub(waited)));
        at = put(stage, at, &record[usize::from(layout.rest)..]);
        Ok(&stage[..at])
    }

    /// The record `write` wrote last (`record`) went into the batch: the next is
    /// compared with it.
    #[inline(always)]
    pub(super) fn taken(&mut self, record: &[u8]) {
        self.prev = 1 - self.prev;
        let taken = &self.layouts[self.prev];
        // Its groups of fewer than 16 bytes are in its layout; the others are compared
        // by their bytes.
        if taken.long != 0 {
            let groups_end = usize::from(taken.key.0);
            self.prev_bytes[..groups_end].copy_from_slice(&record[..groups_end]);
        }
    }
}

#[cfg(test)]
#[path = "compact_record_layout_tests.rs"]
mod tests;
