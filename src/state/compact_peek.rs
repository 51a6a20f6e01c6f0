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

use super::{
    route_of, unzigzag, CompactRecordError, Reader, ALL_BITS, CREATOR, FLAGS, IFNAME,
    MIXED_FAMILIES, NAMES, PEER_MAX_WIN, PEER_MAX_WIN_IS_WINDOW, PEER_MSS, PEER_SCRUB,
    PEER_SEQDIFF, PEER_SEQLO, PEER_WINDOW, PEER_WSCALE, QUEUES, RDOMAIN, ROUTE, RULE, RULE_REFS,
    SHAPE, STACK, STACK_ADDR0, STACK_ADDR1, STACK_AF, STACK_PORT0, STACK_PORT1, STACK_PROTO,
    STACK_RDOMAIN, TUNING,
};
use crate::state::{AddressFamily, Direction, Protocol, State, Timeout};
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
    let mut r = Reader {
        bytes,
        at: 0,
        names: Vec::new(),
        remember_names: false,
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
