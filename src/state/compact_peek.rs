//! A lone compact record ([`super::encode_record`]) checked whole but read only for what
//! a table files a state by: its key, interface, timeout class, age and expiry.
//!
//! The memory table keeps each import's record as the engine's channel carried it and
//! decodes it later with `.expect`, so the parent must refuse every record
//! [`super::decode_record`] refuses. Building the 400-byte [`State`] only to read five
//! fields of it was most of the receiver parent's cost per state (issue 14). This walk
//! reads the same fields in the same order with the same checks ([`Reader`]'s), keeping
//! only [`PeekedState`]: a record one refuses the other refuses, with the same error
//! (`compact_peek_tests.rs` proves it on valid, cut, edited and random bytes).
//!
//! A child of `compact_record` so that it shares the reader and the layout's constants
//! rather than copying them.

use super::{name_bytes, varint_of_eight};
use super::{
    route_of, unzigzag, CompactRecordError, Reader, ALL_BITS, CREATOR, FLAGS, IFNAME,
    MIXED_FAMILIES, NAMES, PEER_MAX_WIN, PEER_MAX_WIN_IS_WINDOW, PEER_MSS, PEER_SCRUB,
    PEER_SEQDIFF, PEER_SEQLO, PEER_WINDOW, PEER_WSCALE, QUEUES, RDOMAIN, ROUTE, RULE, RULE_REFS,
    SHAPE, STACK, STACK_ADDR0, STACK_ADDR1, STACK_AF, STACK_PORT0, STACK_PORT1, STACK_PROTO,
    STACK_RDOMAIN, TUNING,
};
use crate::state::{AddressFamily, Direction, PeerState, Protocol, State, Timeout};
use crate::wire::{IfName, Name};

/// What a table reads of an import's or an update's state: its key, the interface an
/// import is checked against, and what its times come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeekedState {
    /// Host id of the state's creator.
    pub creatorid: u32,
    /// State id.
    pub id: u64,
    /// Interface, "all" for floating states.
    pub ifname: IfName,
    /// The timeout class, whose value gives the state's deadline.
    pub timeout: Timeout,
    /// Seconds since the state was created.
    pub age_secs: u32,
    /// Seconds until it expires (0: a full timeout from now).
    pub expire_secs: u32,
}

impl PeekedState {
    /// The fields of a whole state.
    pub fn of(s: &State) -> PeekedState {
        PeekedState {
            creatorid: s.creatorid,
            id: s.id,
            ifname: s.ifname,
            timeout: s.timeout,
            age_secs: s.age_secs,
            expire_secs: s.expire_secs,
        }
    }

    /// The state's name: creator id and id.
    pub fn key(&self) -> (u32, u64) {
        (self.creatorid, self.id)
    }
}

/// The [`PeekedState`] of bytes [`super::encode_record`] made, after checking every
/// length and value of them as [`super::decode_record`] does: `Err` exactly when it
/// errs, with the same error.
pub fn peek_record(bytes: &[u8]) -> Result<PeekedState, CompactRecordError> {
    // The fast walk takes what the reader takes; the reader is asked only for the
    // error of a record the fast walk refuses.
    if let Some(peeked) = peek_fast(bytes) {
        return Ok(peeked);
    }
    let mut r = Reader {
        bytes,
        at: 0,
        names: Vec::new(),
        remember_names: false,
        odd_varint: false,
    };
    let peeked = r.peek()?;
    if r.at != bytes.len() {
        return Err(r.invalid("trailing bytes"));
    }
    Ok(peeked)
}

/// A lone compact record that [`super::decode_record`] takes (checked by
/// [`peek_record`]), and what was peeked of it: the only way to make one is to check the
/// bytes, so a table given one may store them and decode them later without a doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedRecord<'a> {
    bytes: &'a [u8],
    peeked: PeekedState,
}

impl<'a> CheckedRecord<'a> {
    /// `bytes`, checked whole; the error [`super::decode_record`] would give otherwise.
    pub fn check(bytes: &'a [u8]) -> Result<CheckedRecord<'a>, CompactRecordError> {
        Ok(CheckedRecord {
            bytes,
            peeked: peek_record(bytes)?,
        })
    }

    /// The record's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// What the table files the state by.
    pub fn peeked(&self) -> &PeekedState {
        &self.peeked
    }

    /// The same record in `room` (bytes that were checked stay checked), or `None` if it
    /// is longer than `room` (only a record of padded varints can be longer than
    /// [`super::MAX_RECORD_BYTES`]).
    pub fn copy_into<'b>(&self, room: &'b mut [u8]) -> Option<CheckedRecord<'b>> {
        let room = room.get_mut(..self.bytes.len())?;
        room.copy_from_slice(self.bytes);
        Some(CheckedRecord {
            bytes: room,
            peeked: self.peeked,
        })
    }

    /// The whole state, for a table that needs one (pf).
    pub fn state(&self) -> Result<State, CompactRecordError> {
        super::decode_record(self.bytes)
    }
}

/// [`peek_record`]'s answer when it is `Ok`, `None` when it errs, with a cursor that
/// tells only whether a read could be made: [`Reader`]'s reads build an error with its
/// field and offset at every step, and were most of the receiver parent's cost of a
/// record (its `name` alone a fifth: a `memcpy` call for a few bytes, then the name
/// read back whole from where those bytes were just stored). The same reads and checks
/// as [`Reader::peek`], in its order: a change there must be made here too (the tests
/// hold the two to the same answer on valid, cut, edited and random bytes).
pub fn peek_fast(bytes: &[u8]) -> Option<PeekedState> {
    let mut c = Cursor { bytes, at: 0 };
    let mask = c.u32()?;
    if mask & !ALL_BITS != 0 {
        return None;
    }
    let mut peeked = PeekedState {
        creatorid: 0,
        id: unzigzag(c.varint()?) as u64,
        ifname: IfName::EMPTY,
        timeout: Timeout::default(),
        age_secs: 0,
        expire_secs: 0,
    };
    let mut v6 = false;
    let mut proto = Protocol::default();
    if mask & IFNAME != 0 {
        peeked.ifname = c.ifname()?;
    }
    if mask & SHAPE != 0 {
        let shape = c.u8()?;
        v6 = shape & 1 != 0;
        Direction::from_number(shape >> 1 & 3)?;
        proto = match shape >> 3 {
            0 => Protocol::Tcp,
            1 => Protocol::Udp,
            2 => Protocol::Icmp,
            3 => Protocol::Icmpv6,
            4 => Protocol::Sctp,
            7 => Protocol::from_number(c.u8()?),
            _ => return None,
        };
        peeked.timeout = Timeout::from_number(c.u8()?)?;
    }
    if mask & RULE != 0 {
        c.option_u32()?;
    }
    let stack_bits = if mask & STACK != 0 {
        let bits = c.u8()?;
        if bits == 0 || bits & 0x80 != 0 {
            return None;
        }
        bits
    } else {
        0
    };
    if stack_bits != 0 {
        c.stack(stack_bits)?;
    }
    if mask & CREATOR != 0 {
        peeked.creatorid = c.u32_le()?;
    }
    if mask & FLAGS != 0 {
        c.skip(2)?;
        c.u16()?;
    }
    if mask & ROUTE != 0 {
        route_of(c.u8()?)?;
        match c.u8()? {
            0 => {}
            4 => c.skip(4)?,
            6 => c.skip(16)?,
            _ => return None,
        }
        c.name(16)?;
    }
    if mask & NAMES != 0 {
        c.name(16)?;
        c.name(64)?;
    }
    if mask & QUEUES != 0 {
        for _ in 0..4 {
            c.u16()?;
        }
    }
    if mask & RULE_REFS != 0 {
        for _ in 0..4 {
            c.option_u32()?;
        }
    }
    if mask & TUNING != 0 {
        c.skip(4)?;
        c.u16()?;
    }
    if mask & RDOMAIN != 0 {
        c.u16()?;
    }
    if mask & MIXED_FAMILIES != 0 {
        c.tagged_addr()?;
        c.tagged_addr()?;
    } else {
        c.skip(if v6 { 32 } else { 8 })?;
    }
    // The ports.
    c.skip(4)?;
    peeked.age_secs = c.u32()?;
    peeked.expire_secs = c.u32()?;
    for _ in 0..4 {
        c.varint()?;
    }
    let states = c.u8()?;
    PeerState::from_number(proto, states >> 4)?;
    PeerState::from_number(proto, states & 0x0f)?;
    c.peer()?;
    c.peer()?;
    (c.at == bytes.len()).then_some(peeked)
}

/// A record's bytes on [`peek_fast`]'s walk.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    #[inline(always)]
    fn u8(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    /// Steps over `n` bytes, if there are so many.
    #[inline(always)]
    fn skip(&mut self, n: usize) -> Option<()> {
        // `at` is at most the length, `n` at most 64: no overflow.
        let end = self.at + n;
        if end > self.bytes.len() {
            return None;
        }
        self.at = end;
        Some(())
    }

    #[inline(always)]
    fn u32_le(&mut self) -> Option<u32> {
        let word = *self.bytes.get(self.at..)?.first_chunk::<4>()?;
        self.at += 4;
        Some(u32::from_le_bytes(word))
    }

    /// [`Reader::varint`]: LEB128 of at most ten bytes, the tenth holding one bit.
    #[inline(always)]
    fn varint(&mut self) -> Option<u64> {
        let first = self.u8()?;
        if first & 0x80 == 0 {
            return Some(u64::from(first));
        }
        self.varint_rest(first)
    }

    /// A varint of more than one byte, `first` its first (taken already).
    #[inline(always)]
    fn varint_rest(&mut self, first: u8) -> Option<u64> {
        if let Some((v, len)) = self.bytes.get(self.at - 1..).and_then(varint_of_eight) {
            self.at += len - 1;
            return Some(v);
        }
        self.varint_bytewise(first)
    }

    /// [`Cursor::varint_rest`] a byte at a time: a varint near the record's end, or of
    /// nine or ten bytes.
    fn varint_bytewise(&mut self, first: u8) -> Option<u64> {
        let mut v = u64::from(first & 0x7f);
        for shift in (7..64).step_by(7) {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return None;
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    #[inline(always)]
    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.varint()?).ok()
    }

    #[inline(always)]
    fn u16(&mut self) -> Option<u16> {
        u16::try_from(self.varint()?).ok()
    }

    /// [`Reader::option_u32`]'s check.
    #[inline(always)]
    fn option_u32(&mut self) -> Option<()> {
        match self.varint()? {
            0 => Some(()),
            v => u32::try_from(v - 1).ok().map(drop),
        }
    }

    /// [`Reader::name`]'s checks of a name of a field of `room` bytes (16 or 64) in a
    /// lone record: written whole (a dictionary index, 128 and up, is longer than any
    /// field), at most `room` bytes, not ending in NUL.
    #[inline(always)]
    fn name(&mut self, room: usize) -> Option<()> {
        let len = usize::from(self.u8()?);
        if len > room {
            return None;
        }
        let start = self.at;
        self.skip(len)?;
        (len == 0 || self.bytes[start + len - 1] != 0).then_some(())
    }

    /// An interface name, checked as [`Cursor::name`] checks it.
    #[inline(always)]
    fn ifname(&mut self) -> Option<IfName> {
        let start = self.at + 1;
        self.name(16)?;
        let len = self.at - start;
        Some(Name(name_bytes(&self.bytes[start..], len)))
    }

    fn stack(&mut self, bits: u8) -> Option<()> {
        if bits & STACK_AF != 0 && !matches!(self.u8()?, 4 | 6) {
            return None;
        }
        if bits & STACK_PROTO != 0 {
            self.u8()?;
        }
        for bit in [STACK_ADDR0, STACK_ADDR1] {
            if bits & bit != 0 {
                self.tagged_addr()?;
            }
        }
        for bit in [STACK_PORT0, STACK_PORT1] {
            if bits & bit != 0 {
                self.skip(2)?;
            }
        }
        if bits & STACK_RDOMAIN != 0 {
            self.u16()?;
        }
        Some(())
    }

    #[inline(always)]
    fn tagged_addr(&mut self) -> Option<()> {
        match self.u8()? {
            4 => self.skip(4),
            6 => self.skip(16),
            _ => None,
        }
    }

    /// [`Reader::check_peer`].
    #[inline(always)]
    fn peer(&mut self) -> Option<()> {
        let bits = self.u8()?;
        if bits & PEER_MAX_WIN != 0 && bits & PEER_MAX_WIN_IS_WINDOW != 0 {
            return None;
        }
        if bits & PEER_SEQLO != 0 {
            self.skip(4)?;
        }
        let window = if bits & PEER_WINDOW != 0 {
            self.u32()?
        } else {
            0
        };
        if bits & PEER_SEQDIFF != 0 {
            self.u32()?;
        }
        if bits & PEER_MAX_WIN != 0 {
            self.u16()?;
        }
        if bits & PEER_MAX_WIN_IS_WINDOW != 0 && window > u32::from(u16::MAX) {
            return None;
        }
        if bits & PEER_MSS != 0 {
            self.u16()?;
        }
        if bits & PEER_WSCALE != 0 {
            self.skip(1)?;
        }
        if bits & PEER_SCRUB != 0 {
            self.u16()?;
            self.skip(5)?;
        }
        Some(())
    }
}

impl Reader<'_> {
    /// [`Reader::record`] with [`State::default`] before it, keeping only what
    /// [`PeekedState`] holds. Every read and check of `record` is here, in its order:
    /// a change there must be made here too (the tests compare the two).
    fn peek(&mut self) -> Result<PeekedState, CompactRecordError> {
        let mask = self.u32("mask")?;
        if mask & !ALL_BITS != 0 {
            return Err(self.invalid("mask"));
        }
        // What the record leaves out is `State::default`'s.
        let mut peeked = PeekedState {
            creatorid: 0,
            id: unzigzag(self.varint("id")?) as u64,
            ifname: IfName::EMPTY,
            timeout: Timeout::default(),
            age_secs: 0,
            expire_secs: 0,
        };
        let mut af = AddressFamily::Inet;
        let mut proto = Protocol::default();
        if mask & IFNAME != 0 {
            peeked.ifname = self.name("ifname")?;
        }
        if mask & SHAPE != 0 {
            let shape = self.u8()?;
            af = if shape & 1 == 0 {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            Direction::from_number(shape >> 1 & 3).ok_or_else(|| self.invalid("direction"))?;
            proto = match shape >> 3 {
                0 => Protocol::Tcp,
                1 => Protocol::Udp,
                2 => Protocol::Icmp,
                3 => Protocol::Icmpv6,
                4 => Protocol::Sctp,
                7 => Protocol::from_number(self.u8()?),
                _ => return Err(self.invalid("protocol")),
            };
            peeked.timeout =
                Timeout::from_number(self.u8()?).ok_or_else(|| self.invalid("timeout"))?;
        }
        if mask & RULE != 0 {
            self.option_u32("rule")?;
        }
        let stack_bits = if mask & STACK != 0 {
            let bits = self.u8()?;
            if bits == 0 || bits & 0x80 != 0 {
                return Err(self.invalid("stack"));
            }
            bits
        } else {
            0
        };
        if stack_bits & STACK_AF != 0 && !matches!(self.u8()?, 4 | 6) {
            return Err(self.invalid("stack family"));
        }
        if stack_bits & STACK_PROTO != 0 {
            self.u8()?;
        }
        for bit in [STACK_ADDR0, STACK_ADDR1] {
            if stack_bits & bit != 0 {
                self.tagged_addr("stack address")?;
            }
        }
        for bit in [STACK_PORT0, STACK_PORT1] {
            if stack_bits & bit != 0 {
                self.u16_le()?;
            }
        }
        if stack_bits & STACK_RDOMAIN != 0 {
            self.u16("stack rdomain")?;
        }
        if mask & CREATOR != 0 {
            peeked.creatorid = self.u32_le()?;
        }
        if mask & FLAGS != 0 {
            self.u8()?;
            self.u8()?;
            self.u16("state flags")?;
        }
        if mask & ROUTE != 0 {
            route_of(self.u8()?).ok_or_else(|| self.invalid("route type"))?;
            match self.u8()? {
                0 => {}
                4 => {
                    self.bare_addr(AddressFamily::Inet)?;
                }
                6 => {
                    self.bare_addr(AddressFamily::Inet6)?;
                }
                _ => return Err(self.invalid("route address")),
            }
            let _: IfName = self.name("route interface")?;
        }
        if mask & NAMES != 0 {
            let _: IfName = self.name("original interface")?;
            let _: Name<64> = self.name("tag")?;
        }
        if mask & QUEUES != 0 {
            for field in ["qid", "pqid", "dnpipe", "dnrpipe"] {
                self.u16(field)?;
            }
        }
        if mask & RULE_REFS != 0 {
            for field in ["anchor", "nat rule", "rtableid", "reply rtableid"] {
                self.option_u32(field)?;
            }
        }
        if mask & TUNING != 0 {
            // One byte at a time, as `record` reads them: a cut one errs at the same byte.
            for _ in 0..4 {
                self.u8()?;
            }
            self.u16("max mss")?;
        }
        if mask & RDOMAIN != 0 {
            self.u16("rdomain")?;
        }
        for _ in 0..2 {
            if mask & MIXED_FAMILIES != 0 {
                self.tagged_addr("address")?;
            } else {
                self.bare_addr(af)?;
            }
        }
        self.u16_le()?;
        self.u16_le()?;
        peeked.age_secs = self.u32("age")?;
        peeked.expire_secs = self.u32("expire")?;
        for field in ["packets", "packets", "bytes", "bytes"] {
            self.varint(field)?;
        }
        let states = self.u8()?;
        // Both peers' states must be of the protocol.
        self.peer_state(proto, states >> 4)?;
        self.peer_state(proto, states & 0x0f)?;
        self.check_peer()?;
        self.check_peer()?;
        Ok(peeked)
    }

    /// [`Reader::peer`]'s reads and checks, without making the `Peer` (two a record).
    fn check_peer(&mut self) -> Result<(), CompactRecordError> {
        let bits = self.u8()?;
        if bits & PEER_MAX_WIN != 0 && bits & PEER_MAX_WIN_IS_WINDOW != 0 {
            return Err(self.invalid("peer max_win"));
        }
        if bits & PEER_SEQLO != 0 {
            self.u32_le()?;
        }
        let window = if bits & PEER_WINDOW != 0 {
            self.u32("peer window")?
        } else {
            0
        };
        if bits & PEER_SEQDIFF != 0 {
            self.u32("peer seqdiff")?;
        }
        if bits & PEER_MAX_WIN != 0 {
            self.u16("peer max_win")?;
        }
        if bits & PEER_MAX_WIN_IS_WINDOW != 0 && u16::try_from(window).is_err() {
            return Err(self.invalid("peer max_win"));
        }
        if bits & PEER_MSS != 0 {
            self.u16("peer mss")?;
        }
        if bits & PEER_WSCALE != 0 {
            self.u8()?;
        }
        if bits & PEER_SCRUB != 0 {
            self.u16("scrub flags")?;
            self.u8()?;
            self.u32_le()?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "compact_peek_tests.rs"]
mod tests;
