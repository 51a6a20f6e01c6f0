//! Compact state records on the wire between pfsyncd peers: a batch of [`State`]s, each
//! record written as what differs from the record before it in the batch.
//!
//! A kernel record is 200–300 bytes because every field has its widest room. A bulk
//! update sends states that are alike: one creator, ids counting up, a few interfaces, a
//! few rules, no policy route, no queue, no tag. This encoding sends only what differs
//! from the previous state of the batch (the first is compared with
//! [`State::default`]), so a typical synthetic state costs 40–90 bytes instead of 254.
//!
//! This is a wire format, read from peers we do not trust to be well-formed:
//! - every batch starts with a version byte ([`VERSION`]); a receiver refuses a version it
//!   does not know rather than guess;
//! - every length and value is checked; [`decode_batch`] returns a
//!   [`CompactRecordError`] on bytes it cannot read, never panics, and allocates at most
//!   one `State` per input byte;
//! - a batch is self-contained (no state carried between batches), so a lost datagram
//!   costs its own states only.
//!
//! Layout of one record (integers are LEB128 varints unless said otherwise):
//! `mask` (which groups follow), `id` (zigzag delta from the previous id), then the
//! groups the mask names, then the wire key's addresses and ports, age, expiry, the four
//! counters and the two peers, which are always sent. Names (interfaces, tag) go through
//! a per-batch dictionary: the second time a name appears it costs one byte.
//!
//! Not compressed further: on the bench's synthetic states what is left is mostly random
//! addresses, ports and sequence numbers, which a general-purpose compressor cannot
//! shrink (and no such crate is vendored in this build).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    AddressFamily, Direction, Peer, PeerState, Protocol, Scrub, State, StateFlags, StateKey,
    Timeout,
};
use crate::wire::{Name, RouteType};

/// The version byte that starts every batch of this format.
pub const VERSION: u8 = 1;

/// No record is longer than this (a state with every field at its widest), so a batch
/// limit of `1 + MAX_RECORD_BYTES` always fits one state.
pub const MAX_RECORD_BYTES: usize = 512;

/// At most this many distinct names are remembered per batch (a dictionary index is
/// 7 bits).
const DICTIONARY_SIZE: usize = 128;

// Mask bits, the commonest first so that a typical mask is one varint byte.
const IFNAME: u32 = 1 << 0;
const SHAPE: u32 = 1 << 1;
const RULE: u32 = 1 << 2;
const STACK: u32 = 1 << 3;
const CREATOR: u32 = 1 << 4;
const FLAGS: u32 = 1 << 5;
const ROUTE: u32 = 1 << 6;
const NAMES: u32 = 1 << 7;
const QUEUES: u32 = 1 << 8;
const RULE_REFS: u32 = 1 << 9;
const TUNING: u32 = 1 << 10;
const RDOMAIN: u32 = 1 << 11;
/// An address of the wire key is not of the key's family (never made by a kernel; kept
/// so that the encoding is lossless for every `State`).
const MIXED_FAMILIES: u32 = 1 << 12;
const ALL_BITS: u32 = (1 << 13) - 1;
/// The groups, in the order their bytes follow a record's id.
const GROUP_ORDER: [u32; 12] = [
    IFNAME, SHAPE, RULE, STACK, CREATOR, FLAGS, ROUTE, NAMES, QUEUES, RULE_REFS, TUNING, RDOMAIN,
];

// Stack key bits: what differs from the wire key.
const STACK_AF: u8 = 1 << 0;
const STACK_PROTO: u8 = 1 << 1;
const STACK_ADDR0: u8 = 1 << 2;
const STACK_ADDR1: u8 = 1 << 3;
const STACK_PORT0: u8 = 1 << 4;
const STACK_PORT1: u8 = 1 << 5;
const STACK_RDOMAIN: u8 = 1 << 6;

// Peer bits: which of a peer's fields are not zero.
const PEER_SEQLO: u8 = 1 << 0;
const PEER_WINDOW: u8 = 1 << 1;
const PEER_SEQDIFF: u8 = 1 << 2;
const PEER_MAX_WIN: u8 = 1 << 3;
const PEER_MSS: u8 = 1 << 4;
const PEER_WSCALE: u8 = 1 << 5;
const PEER_SCRUB: u8 = 1 << 6;
/// `max_win` equals the window `seqhi - seqlo` (as a kernel's fresh state has it): not sent.
const PEER_MAX_WIN_IS_WINDOW: u8 = 1 << 7;

/// Bytes that are not a batch of this format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactRecordError {
    /// No bytes at all (not even the version).
    #[error("empty compact batch")]
    Empty,
    /// A version this build does not read.
    #[error("compact batch version {0} unknown (this build reads {VERSION})")]
    Version(u8),
    /// The bytes end inside a record.
    #[error("compact batch truncated at byte {offset}")]
    Truncated {
        /// Where the missing bytes would start.
        offset: usize,
    },
    /// A value the state model cannot hold, or a length or index out of range.
    #[error("compact batch: bad {field} at byte {offset}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Where it starts (or ends, for varints).
        offset: usize,
    },
}

/// A batch limit too small to hold one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("compact batch limit {limit} below {} bytes", 1 + MAX_RECORD_BYTES)]
pub struct BatchLimitError {
    /// The limit asked for.
    pub limit: usize,
}

/// Appends one batch to `out`: the version byte and as many of `states`, in order, as
/// fit in `limit` bytes (counting from `out`'s length on entry). Returns how many were
/// written; the caller sends the rest in the next batch. `limit` must be at least
/// `1 + MAX_RECORD_BYTES`, so that every batch makes progress.
pub fn encode_batch(
    states: &[State],
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<usize, BatchLimitError> {
    let mut batch = BatchWriter::new(limit, out)?;
    for (written, state) in states.iter().enumerate() {
        if !batch.push(state, out) {
            return Ok(written);
        }
    }
    Ok(states.len())
}

/// One batch being written, a state at a time, for a caller that makes its states as
/// it goes (a bulk sender decoding them from its cache): it makes only those that fit,
/// where [`encode_batch`] wants them all at hand. The bytes are [`encode_batch`]'s.
pub struct BatchWriter {
    encoder: Encoder,
    start: usize,
    limit: usize,
    written: usize,
    /// For [`push_record`](Self::push_record): the record before and the names sent.
    records: FromRecords,
}

impl BatchWriter {
    /// Starts a batch at the end of `out` (its version byte), of at most `limit` bytes
    /// from there; `limit` as for [`encode_batch`].
    pub fn new(limit: usize, out: &mut Vec<u8>) -> Result<BatchWriter, BatchLimitError> {
        if limit < 1 + MAX_RECORD_BYTES {
            return Err(BatchLimitError { limit });
        }
        let start = out.len();
        out.push(VERSION);
        Ok(BatchWriter {
            encoder: Encoder {
                prev: State::default(),
                // A bulk's batch meets a few names (interfaces): room for them at once,
                // not a reallocation at each doubling.
                names: Vec::with_capacity(8),
                remember_names: true,
            },
            start,
            limit,
            written: 0,
            records: FromRecords::default(),
        })
    }

    /// Closes this batch and starts the next at the end of `out`, as
    /// [`new`](Self::new) with the same limit would, but keeping this writer's buffers:
    /// a bulk sender writing batch after batch allocates nothing per batch for them.
    pub fn restart(&mut self, out: &mut Vec<u8>) {
        self.start = out.len();
        out.push(VERSION);
        self.written = 0;
        self.encoder.prev = State::default();
        self.encoder.names.clear();
        self.records.clear();
    }

    /// Appends `state` to the batch in `out` (the `out` it was started in) if it fits
    /// the limit; false, and `out` as it was, when it does not: the batch is full. The
    /// first state always fits.
    pub fn push(&mut self, state: &State, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        let names_before = self.encoder.names.len();
        self.encoder.record(state, out);
        if out.len() - self.start > self.limit {
            out.truncate(before);
            self.encoder.names.truncate(names_before);
            return false;
        }
        self.encoder.prev = *state;
        self.written += 1;
        true
    }

    /// As [`push`](Self::push) for the state whose lone record ([`encode_record`]) is
    /// `record`, aged by `waited` seconds (its age up, its expiry down, both saturating),
    /// without making the state: the record's parts are copied, compared with the
    /// record before by their bytes (a group's bytes are equal exactly when its fields
    /// are), and only the id, names, age and expiry are written anew
    /// (`compact_record_layout.rs`). The bytes are those [`push`](Self::push) writes
    /// for that state. A batch is written with one of the two, never both. An error for
    /// bytes [`encode_record`] did not make (`out` then as it was).
    pub fn push_record(
        &mut self,
        record: &[u8],
        waited: u32,
        out: &mut Vec<u8>,
    ) -> Result<bool, CompactRecordError> {
        let names_before = self.records.names.len();
        let written = self.records.write(record, waited)?;
        if out.len() + written.len() - self.start > self.limit {
            self.records.names.truncate(names_before);
            return Ok(false);
        }
        out.extend_from_slice(written);
        self.records.taken(record);
        self.written += 1;
        Ok(true)
    }

    /// States written so far.
    pub fn len(&self) -> usize {
        self.written
    }

    /// No state written yet.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }
}

/// The states of one batch made by [`encode_batch`].
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<State>, CompactRecordError> {
    let mut states = Vec::new();
    decode_batch_into(bytes, &mut states)?;
    Ok(states)
}

/// A reader of the batch `bytes` past its version byte, refused unless it is ours.
fn batch_reader(bytes: &[u8]) -> Result<Reader<'_>, CompactRecordError> {
    let (&version, _) = bytes.split_first().ok_or(CompactRecordError::Empty)?;
    if version != VERSION {
        return Err(CompactRecordError::Version(version));
    }
    Ok(Reader {
        bytes,
        at: 1,
        names: Vec::new(),
        remember_names: true,
        odd_varint: false,
    })
}

/// As [`decode_batch`], into `states` (emptied first): a receiver that reuses one
/// vector for every batch allocates nothing per batch. On an error `states` holds the
/// records before the bad one, which the caller must not take (a batch is all or
/// nothing).
pub fn decode_batch_into(bytes: &[u8], states: &mut Vec<State>) -> Result<(), CompactRecordError> {
    states.clear();
    let mut r = batch_reader(bytes)?;
    // A record is at least 12 bytes; cap the guess so a hostile length costs nothing.
    states.reserve((bytes.len() / 12).min(4096));
    // Each record is read over the one before it, in place.
    let mut s = State::default();
    while r.at < bytes.len() {
        r.record(&mut s)?;
        // Copied once, into the vector (a push of the value copies it to the stack
        // first: 400 bytes more per state).
        states.extend_from_slice(std::slice::from_ref(&s));
    }
    Ok(())
}

/// Appends one state as a lone record: compared with [`State::default`], no version byte,
/// no name dictionary. For a process's own memory ([`super::compact`]), where a bulk's
/// neighbours are not at hand; not a wire format.
pub fn encode_record(state: &State, out: &mut Vec<u8>) {
    // Written into a scratch record first, through a writer whose position stays in a
    // register: a byte costs a store and a bounds check, where a vector's push reads
    // and writes its length and capacity through the pointer. This is the engine's
    // cost per state cached, imported or merged. The scratch is this thread's, kept:
    // room made in `out` would be zeroed for every record.
    thread_local! {
        static SCRATCH: std::cell::RefCell<[u8; MAX_RECORD_BYTES]> =
            const { std::cell::RefCell::new([0; MAX_RECORD_BYTES]) };
    }
    let written = SCRATCH.with(|scratch| {
        let Ok(mut scratch) = scratch.try_borrow_mut() else {
            return false;
        };
        let mut record = RecordBuf {
            bytes: &mut scratch[..],
            len: 0,
        };
        write_record(default_state(), state, &mut Vec::new(), false, &mut record);
        let len = record.len;
        match scratch.get(..len) {
            Some(bytes) => {
                out.extend_from_slice(bytes);
                true
            }
            None => false,
        }
    });
    if !written {
        // Past the bound (a bug its test rules out): the record is written all the same.
        write_record(default_state(), state, &mut Vec::new(), false, out);
    }
}

/// What the engine's import changes in a peer's state before it caches it
/// (`engine/receive.rs`, `import`): the ACK flag (a request for an INS_ACK) goes, and
/// so do the rule numbers when they name rules of the sender's ruleset, not ours.
/// [`decode_batch_lone`] writes each state's lone record as these changes leave it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportChanges {
    /// `rule`, `anchor` and `nat_rule` become `None`.
    pub unbind_rules: bool,
}

impl ImportChanges {
    /// The changes, made to `s`.
    pub fn apply(&self, s: &mut State) {
        s.state_flags.remove(StateFlags::ACK);
        if self.unbind_rules {
            s.rule = None;
            s.anchor = None;
            s.nat_rule = None;
        }
    }
}

/// The lone records ([`encode_record`]) of a batch's states, one per state, in order:
/// what [`decode_batch_lone`] makes.
#[derive(Debug, Default)]
pub struct LoneRecords {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl LoneRecords {
    /// Forgets every record, keeping the room.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// The lone record of the batch's `i`th state.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)? as usize;
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        self.bytes.get(start..end)
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// No record.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes held, records and room: a caller keeping these between batches drops a
    /// large one (a hostile peer's batch) rather than pin its memory.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity() + 4 * self.ends.capacity()
    }

    fn push_end(&mut self) {
        self.ends.push(self.bytes.len() as u32);
    }
}

/// Room for one group's lone bytes: the widest (NAMES) takes 2 + 16 + 64.
const GROUP_ROOM: usize = 96;

/// The groups a bulk's records seldom carry or differ from the default in (all but the
/// interface, the shape and the rule).
const RARE_GROUPS: u32 = GROUP_BITS & !(IFNAME | SHAPE | RULE);

/// The groups a record's mask may name (MIXED_FAMILIES is the record's own).
const GROUP_BITS: u32 = ALL_BITS & !MIXED_FAMILIES;

/// The first `len` bytes (at most 8) of `bytes` as a little-endian word, the bytes
/// after them zero: what a group is compared with the default's by (every default
/// group is that short).
#[inline(always)]
fn word_of(bytes: &[u8; GROUP_ROOM], len: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    let word = u64::from_le_bytes(word);
    match len {
        0 => 0,
        1..8 => word & (u64::MAX >> (64 - 8 * len)),
        _ => word,
    }
}

/// Turns a batch's records into their states' lone records as it reads them, instead
/// of encoding each decoded state again: a group a batch record carries is written
/// from the decoded state (as the encoder writes it: names whole, varints short), a
/// group it inherits is the previous record's lone group, and the rest of the record
/// (addresses, ports, times, counters, peers) is copied when it is what the encoder
/// writes for those values; when it is not (hostile or odd bytes), the state is
/// encoded whole. Either way the bytes are [`encode_record`]'s.
struct Transcoder {
    /// Each group's lone bytes for the current state, by bit number.
    groups: [[u8; GROUP_ROOM]; 12],
    lens: [usize; 12],
    /// The groups in which the current state differs from [`State::default`].
    differs: u32,
    /// A group's bytes did not fit `GROUP_ROOM` (never, for any state: its tests).
    overflow: bool,
    /// [`State::default`]'s groups (at most 8 bytes each), as [`word_of`] gives them.
    default_words: [u64; 12],
    default_lens: [usize; 12],
    /// The bits of a word [`word_of`] keeps for each default group's length.
    default_masks: [u64; 12],
    /// The lone bytes of the [`RARE_GROUPS`] the current state differs in, in order:
    /// made again only when one of them changes (a bulk's creator, say, is in every
    /// record and changes never).
    rare: [u8; RARE_ROOM],
    rare_len: usize,
}

/// Room for every rare group's bytes.
const RARE_ROOM: usize = 9 * GROUP_ROOM;

impl Transcoder {
    fn new() -> Transcoder {
        let defaults = default_groups();
        let mut default_words = [0; 12];
        let mut default_lens = [0; 12];
        let mut default_masks = [0; 12];
        for (i, bytes) in defaults.iter().enumerate() {
            let mut room = [0u8; GROUP_ROOM];
            let len = bytes.len().min(8);
            room[..len].copy_from_slice(&bytes[..len]);
            default_words[i] = word_of(&room, len);
            // A default group wider than a word (none is) is compared byte by byte.
            default_lens[i] = if bytes.len() > 8 { usize::MAX } else { len };
            default_masks[i] = word_of(&[0xff; GROUP_ROOM], len);
        }
        Transcoder {
            groups: [[0; GROUP_ROOM]; 12],
            lens: [0; 12],
            differs: 0,
            overflow: false,
            default_words,
            default_lens,
            default_masks,
            rare: [0; RARE_ROOM],
            rare_len: 0,
        }
    }

    /// [`rare`](Self::rare) made again from the groups.
    #[inline(never)]
    fn remake_rare(&mut self) {
        let mut len = 0;
        let mut groups = self.differs & RARE_GROUPS;
        while groups != 0 {
            let i = groups.trailing_zeros() as usize;
            let group = &self.groups[i][..self.lens[i]];
            self.rare[len..len + group.len()].copy_from_slice(group);
            len += group.len();
            groups &= groups - 1;
        }
        self.rare_len = len;
    }

    /// Group `bit` as `s` has it after `changes`.
    #[inline(always)]
    fn refresh(&mut self, bit: u32, s: &State, changes: ImportChanges) {
        let i = bit.trailing_zeros() as usize;
        let mut out = RecordBuf {
            bytes: &mut self.groups[i][..],
            len: 0,
        };
        match bit {
            IFNAME => {
                // `write_name` with no dictionary: the used bytes' count, then the used
                // bytes; the room's sixteen are copied whole (the bytes after the used
                // ones are NUL, and not counted), no call to `memcpy`.
                let raw = &s.ifname.0;
                let used = used_len(raw);
                out.bytes[0] = used as u8;
                out.bytes[1..1 + raw.len()].copy_from_slice(raw);
                out.len = 1 + used;
            }
            FLAGS => {
                let mut flags = s.state_flags;
                flags.remove(StateFlags::ACK);
                flags_group(&mut out, s.log, s.sync_flags, flags);
            }
            RULE if changes.unbind_rules => option_u32(&mut out, None),
            RULE_REFS if changes.unbind_rules => {
                rule_refs_group(&mut out, [None, None, s.rtableid, s.reply_rtableid])
            }
            _ => write_group(bit, s, &mut Vec::new(), false, &mut out),
        }
        let len = out.len;
        self.overflow |= len > GROUP_ROOM;
        let len = len.min(GROUP_ROOM);
        self.lens[i] = len;
        let is_default = if self.default_lens[i] == usize::MAX {
            self.groups[i][..len] == default_groups()[i][..]
        } else {
            // A group of the default's length is the default's bytes: masked by the
            // length known ahead, not by this group's.
            let mut word = [0u8; 8];
            word.copy_from_slice(&self.groups[i][..8]);
            let word = u64::from_le_bytes(word);
            len == self.default_lens[i] && word & self.default_masks[i] == self.default_words[i]
        };
        if is_default {
            self.differs &= !bit;
        } else {
            self.differs |= bit;
        }
    }

    /// The lone record of `s`, just read by `r` as `shape`, appended to `lone`.
    #[inline(always)]
    fn record(
        &mut self,
        r: &Reader<'_>,
        shape: &RecordShape,
        s: &State,
        changes: ImportChanges,
        lone: &mut LoneRecords,
    ) {
        let carried = shape.mask & GROUP_BITS;
        let rare_before = self.differs & RARE_GROUPS;
        if carried & STACK == 0 {
            // Sent whenever the stack key is not the wire key, whatever the record
            // before: not carried, it is the wire key.
            self.differs &= !STACK;
        }
        // GROUP_ORDER spelt out: each refresh's match folds away (a loop over the bits
        // jumped through a table at every group carried, two or three a record).
        let mut refresh = |bit: u32| {
            if carried & bit != 0 {
                self.refresh(bit, s, changes);
            }
        };
        refresh(IFNAME);
        refresh(SHAPE);
        refresh(RULE);
        // The rest change seldom in a bulk: one test passes them all by.
        if carried & RARE_GROUPS != 0 {
            refresh(STACK);
            refresh(CREATOR);
            refresh(FLAGS);
            refresh(ROUTE);
            refresh(NAMES);
            refresh(QUEUES);
            refresh(RULE_REFS);
            refresh(TUNING);
            refresh(RDOMAIN);
        }
        if carried & RARE_GROUPS != 0 || self.differs & RARE_GROUPS != rare_before {
            self.remake_rare();
        }
        let mixed = shape.mask & MIXED_FAMILIES;
        let tail_is_ours = !r.odd_varint
            && !self.overflow
            && (mixed == 0
                || s.wire
                    .addr
                    .iter()
                    .any(|a| AddressFamily::of(a) != s.wire.af))
            && shape.peer_states == s.src.state.number() << 4 | s.dst.state.number()
            && shape.peer_bits == [peer_bits(&s.src), peer_bits(&s.dst)];
        let start = lone.bytes.len();
        let copied = match r.bytes.get(shape.tail_at..r.at) {
            Some(tail) if tail_is_ours => {
                let out = &mut lone.bytes;
                varint(out, u64::from(self.differs | mixed));
                varint(out, zigzag(s.id as i64));
                let groups = self.differs;
                let mut copy = |bytes: &[u8; GROUP_ROOM], len: usize| {
                    if len <= 16 {
                        // Sixteen bytes stored and the length set back: no call to
                        // `memcpy` for a group of a few bytes.
                        let end = out.len() + len;
                        out.extend_from_slice(&bytes[..16]);
                        out.truncate(end);
                    } else {
                        out.extend_from_slice(&bytes[..len]);
                    }
                };
                // GROUP_ORDER spelt out: a loop over the bits ran one to three times a
                // record, and its exit mispredicted.
                for bit in [IFNAME, SHAPE, RULE] {
                    if groups & bit != 0 {
                        let i = bit.trailing_zeros() as usize;
                        copy(&self.groups[i], self.lens[i]);
                    }
                }
                // The rest (which follow these three) as one range.
                match self.rare.first_chunk::<GROUP_ROOM>() {
                    Some(first) if self.rare_len <= 16 => copy(first, self.rare_len),
                    _ => out.extend_from_slice(&self.rare[..self.rare_len]),
                }
                out.extend_from_slice(tail);
                out.len() - start <= MAX_RECORD_BYTES
            }
            _ => false,
        };
        if !copied {
            lone.bytes.truncate(start);
            let mut changed = *s;
            changes.apply(&mut changed);
            encode_record(&changed, &mut lone.bytes);
        }
        lone.push_end();
    }
}

/// As [`decode_batch_into`], and each state's lone record ([`encode_record`]) as
/// `changes` leave the state, into `lone` (emptied first): the engine caches a peer's
/// state in that form, and these bytes cost a fraction of encoding the state again.
/// `states` holds the states as decoded (without `changes`). On an error, as
/// [`decode_batch_into`]; `lone` then holds part of the records.
pub fn decode_batch_lone(
    bytes: &[u8],
    states: &mut Vec<State>,
    lone: &mut LoneRecords,
    changes: ImportChanges,
) -> Result<(), CompactRecordError> {
    states.clear();
    lone.clear();
    let mut r = batch_reader(bytes)?;
    states.reserve((bytes.len() / 12).min(4096));
    // A lone record is at most a few bytes longer than its batch record (names whole,
    // groups the same as the record before's): room for most batches at once.
    lone.bytes.reserve(bytes.len() + bytes.len() / 2);
    lone.ends.reserve((bytes.len() / 12).min(4096));
    let mut transcoder = Transcoder::new();
    let mut s = State::default();
    while r.at < bytes.len() {
        r.odd_varint = false;
        let shape = r.record(&mut s)?;
        transcoder.record(&r, &shape, &s, changes, lone);
        states.extend_from_slice(std::slice::from_ref(&s));
    }
    Ok(())
}

/// [`State::default`], made once: what a lone record is compared with.
fn default_state() -> &'static State {
    static DEFAULT: std::sync::OnceLock<State> = std::sync::OnceLock::new();
    DEFAULT.get_or_init(State::default)
}

/// Where the encoder writes: a batch's vector, or one lone record's [`RecordBuf`].
trait Sink {
    fn put(&mut self, byte: u8);
    fn put_slice(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, byte: u8) {
        self.push(byte);
    }

    #[inline]
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Room for one lone record. Bytes past the room are counted, not written: `len`
/// beyond it says the record did not fit (never, for a record of
/// [`MAX_RECORD_BYTES`]' bound), without a panic.
struct RecordBuf<'a> {
    bytes: &'a mut [u8],
    len: usize,
}

impl Sink for RecordBuf<'_> {
    #[inline(always)]
    fn put(&mut self, byte: u8) {
        if let Some(b) = self.bytes.get_mut(self.len) {
            *b = byte;
        }
        self.len += 1;
    }

    #[inline(always)]
    fn put_slice(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if let Some(room) = self.bytes.get_mut(self.len..end) {
            room.copy_from_slice(bytes);
        }
        self.len = end;
    }
}

/// The names a batch sent, by their used bytes (at most a tag name's 64).
type NameList = Vec<(u8, [u8; 64])>;

/// The state of bytes [`encode_record`] made; every byte must belong to it.
pub fn decode_record(bytes: &[u8]) -> Result<State, CompactRecordError> {
    let mut s = State::default();
    decode_record_into(bytes, &mut s)?;
    Ok(s)
}

/// [`decode_record`] into `s` (whatever it held), for a caller that reads many states
/// one after the other and keeps none: no `State` is made or moved. On an error, `s`
/// holds part of a state.
pub fn decode_record_into(bytes: &[u8], s: &mut State) -> Result<(), CompactRecordError> {
    let mut r = Reader {
        bytes,
        at: 0,
        names: Vec::new(),
        remember_names: false,
        odd_varint: false,
    };
    *s = State::default();
    r.record(s)?;
    if r.at != bytes.len() {
        return Err(r.invalid("trailing bytes"));
    }
    Ok(())
}

struct Encoder {
    prev: State,
    /// Whether names go into the dictionary (batches) or are always sent whole (lone
    /// records, which then allocate nothing).
    remember_names: bool,
    /// The names this batch sent.
    names: NameList,
}

impl Encoder {
    fn record(&mut self, s: &State, out: &mut Vec<u8>) {
        write_record(&self.prev, s, &mut self.names, self.remember_names, out);
    }

    /// The bytes of group `bit` (one of [`GROUP_ORDER`]) of `s`.
    fn group(&mut self, bit: u32, s: &State, out: &mut Vec<u8>) {
        write_group(bit, s, &mut self.names, self.remember_names, out);
    }
}

/// The record of `s` after `p` (the batch's state before it, or [`State::default`] for
/// a lone record): the groups in which `s` differs from `p`, then what is always sent.
/// Names go through `names` when `remember` (a batch's dictionary).
#[inline(always)]
fn write_record(p: &State, s: &State, names: &mut NameList, remember: bool, out: &mut impl Sink) {
    // The groups' tests one by one, each only as wide as its fields.
    let mut mask = 0;
    if s.ifname != p.ifname {
        mask |= IFNAME;
    }
    if s.wire.af != p.wire.af
        || s.wire.proto != p.wire.proto
        || s.direction != p.direction
        || s.timeout != p.timeout
    {
        mask |= SHAPE;
    }
    if s.rule != p.rule {
        mask |= RULE;
    }
    if s.stack != s.wire {
        mask |= STACK;
    }
    if s.creatorid != p.creatorid {
        mask |= CREATOR;
    }
    if s.log != p.log || s.sync_flags != p.sync_flags || s.state_flags != p.state_flags {
        mask |= FLAGS;
    }
    if s.rt != p.rt || s.rt_addr != p.rt_addr || s.rt_ifname != p.rt_ifname {
        mask |= ROUTE;
    }
    if !same_bytes(&s.orig_ifname.0, &p.orig_ifname.0) || !same_bytes(&s.tagname.0, &p.tagname.0) {
        mask |= NAMES;
    }
    if (s.qid, s.pqid, s.dnpipe, s.dnrpipe) != (p.qid, p.pqid, p.dnpipe, p.dnrpipe) {
        mask |= QUEUES;
    }
    if (s.anchor, s.nat_rule, s.rtableid, s.reply_rtableid)
        != (p.anchor, p.nat_rule, p.rtableid, p.reply_rtableid)
    {
        mask |= RULE_REFS;
    }
    if (s.min_ttl, s.set_tos, s.max_mss, s.set_prio)
        != (p.min_ttl, p.set_tos, p.max_mss, p.set_prio)
    {
        mask |= TUNING;
    }
    if s.wire.rdomain != p.wire.rdomain {
        mask |= RDOMAIN;
    }
    if s.wire
        .addr
        .iter()
        .any(|a| AddressFamily::of(a) != s.wire.af)
    {
        mask |= MIXED_FAMILIES;
    }
    varint(out, u64::from(mask));
    varint(out, zigzag(s.id.wrapping_sub(p.id) as i64));
    // GROUP_ORDER, spelt out: each call's match folds away (a loop over the bits
    // jumps through a table at every group, and mispredicts).
    let mut group = |bit: u32| {
        if mask & bit != 0 {
            write_group(bit, s, names, remember, out);
        }
    };
    group(IFNAME);
    group(SHAPE);
    group(RULE);
    group(STACK);
    group(CREATOR);
    group(FLAGS);
    group(ROUTE);
    group(NAMES);
    group(QUEUES);
    group(RULE_REFS);
    group(TUNING);
    group(RDOMAIN);
    for a in s.wire.addr {
        if mask & MIXED_FAMILIES != 0 {
            tagged_addr(out, a);
        } else {
            bare_addr(out, a);
        }
    }
    for port in s.wire.port {
        out.put_slice(&port.to_le_bytes());
    }
    varint(out, u64::from(s.age_secs));
    varint(out, u64::from(s.expire_secs));
    for v in s.packets.iter().chain(&s.bytes) {
        varint(out, *v);
    }
    // Both peer states are at most 12 (PeerLevel::MAX, TcpState::ProxyDst).
    out.put(s.src.state.number() << 4 | s.dst.state.number());
    peer(out, &s.src);
    peer(out, &s.dst);
}

/// The bytes of group `bit` (one of [`GROUP_ORDER`]) of `s`.
#[inline(always)]
fn write_group(bit: u32, s: &State, names: &mut NameList, remember: bool, out: &mut impl Sink) {
    match bit {
        IFNAME => write_name(names, remember, out, &s.ifname.0),
        SHAPE => {
            let (proto_code, proto_extra) = proto_code(s.wire.proto);
            let af = match s.wire.af {
                AddressFamily::Inet => 0,
                AddressFamily::Inet6 => 1,
            };
            out.put(af | s.direction.number() << 1 | proto_code << 3);
            if let Some(n) = proto_extra {
                out.put(n);
            }
            out.put(s.timeout.number());
        }
        RULE => option_u32(out, s.rule),
        STACK => stack(out, &s.wire, &s.stack),
        CREATOR => out.put_slice(&s.creatorid.to_le_bytes()),
        FLAGS => flags_group(out, s.log, s.sync_flags, s.state_flags),
        ROUTE => {
            out.put(route_number(s.rt));
            match s.rt_addr {
                None => out.put(0),
                Some(a) => tagged_addr(out, a),
            }
            write_name(names, remember, out, &s.rt_ifname.0);
        }
        NAMES => {
            write_name(names, remember, out, &s.orig_ifname.0);
            write_name(names, remember, out, &s.tagname.0);
        }
        QUEUES => {
            for v in [s.qid, s.pqid, s.dnpipe, s.dnrpipe] {
                varint(out, u64::from(v));
            }
        }
        RULE_REFS => rule_refs_group(out, [s.anchor, s.nat_rule, s.rtableid, s.reply_rtableid]),
        TUNING => {
            out.put_slice(&[s.min_ttl, s.set_tos, s.set_prio[0], s.set_prio[1]]);
            varint(out, u64::from(s.max_mss));
        }
        RDOMAIN => varint(out, u64::from(s.wire.rdomain)),
        _ => unreachable!("GROUP_ORDER names every group"),
    }
}

/// The FLAGS group's bytes.
#[inline(always)]
fn flags_group(out: &mut impl Sink, log: u8, sync_flags: u8, state_flags: StateFlags) {
    out.put_slice(&[log, sync_flags]);
    varint(out, u64::from(state_flags.bits()));
}

/// The RULE_REFS group's bytes: anchor, NAT rule, routing table, reply routing table.
#[inline(always)]
fn rule_refs_group(out: &mut impl Sink, refs: [Option<u32>; 4]) {
    for v in refs {
        option_u32(out, v);
    }
}

/// A name by its used bytes (up to the last non-NUL, so bytes after a NUL are kept),
/// or by its index if this batch sent it before (`names`, filled when `remember`).
#[inline(always)]
fn write_name(names: &mut NameList, remember: bool, out: &mut impl Sink, raw: &[u8]) {
    let used = &raw[..used_len(raw)];
    if let Some(i) = names
        .iter()
        .position(|(len, n)| &n[..usize::from(*len)] == used)
    {
        out.put(0x80 | i as u8);
        return;
    }
    out.put(used.len() as u8);
    out.put_slice(used);
    if remember && names.len() < DICTIONARY_SIZE {
        let mut kept = [0u8; 64];
        kept[..used.len()].copy_from_slice(used);
        names.push((used.len() as u8, kept));
    }
}

/// Whether two names' rooms (16 or 64 bytes) hold the same bytes, compared sixteen at a
/// time in registers: a tag name's 64 bytes are otherwise compared by a call to
/// `memcmp`, once per state encoded.
#[inline(always)]
fn same_bytes<const N: usize>(a: &[u8; N], b: &[u8; N]) -> bool {
    if N % 16 != 0 {
        return a == b;
    }
    a.chunks_exact(16).zip(b.chunks_exact(16)).all(|(a, b)| {
        let word = |bytes: &[u8]| {
            let mut word = [0u8; 16];
            word.copy_from_slice(bytes);
            u128::from_ne_bytes(word)
        };
        word(a) == word(b)
    })
}

/// The length of `raw` up to its last byte that is not NUL: sixteen bytes at a time for
/// a name's whole room (16 or 64 bytes), which is what most names are given as.
#[inline]
fn used_len(raw: &[u8]) -> usize {
    if raw.len() % 16 != 0 {
        return raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    }
    for (i, chunk) in raw.chunks_exact(16).enumerate().rev() {
        let mut word = [0u8; 16];
        word.copy_from_slice(chunk);
        let word = u128::from_le_bytes(word);
        if word != 0 {
            // The highest byte that is not NUL is the last one, little-endian.
            return i * 16 + 16 - (word.leading_zeros() / 8) as usize;
        }
    }
    0
}

/// The protocol of each code [`proto_code`] gives but 7 ("the number follows").
const PROTOCOL_OF_CODE: [Option<Protocol>; 7] = [
    Some(Protocol::Tcp),
    Some(Protocol::Udp),
    Some(Protocol::Icmp),
    Some(Protocol::Icmpv6),
    Some(Protocol::Sctp),
    None,
    None,
];

/// Protocols in three bits; 7 means "the number follows".
fn proto_code(p: Protocol) -> (u8, Option<u8>) {
    match p {
        Protocol::Tcp => (0, None),
        Protocol::Udp => (1, None),
        Protocol::Icmp => (2, None),
        Protocol::Icmpv6 => (3, None),
        Protocol::Sctp => (4, None),
        Protocol::Other(n) => (7, Some(n)),
    }
}

#[inline(always)]
fn stack(out: &mut impl Sink, wire: &StateKey, stack: &StateKey) {
    let mut bits = 0;
    for (on, bit) in [
        (stack.af != wire.af, STACK_AF),
        (stack.proto != wire.proto, STACK_PROTO),
        (stack.addr[0] != wire.addr[0], STACK_ADDR0),
        (stack.addr[1] != wire.addr[1], STACK_ADDR1),
        (stack.port[0] != wire.port[0], STACK_PORT0),
        (stack.port[1] != wire.port[1], STACK_PORT1),
        (stack.rdomain != wire.rdomain, STACK_RDOMAIN),
    ] {
        if on {
            bits |= bit;
        }
    }
    out.put(bits);
    if bits & STACK_AF != 0 {
        out.put(match stack.af {
            AddressFamily::Inet => 4,
            AddressFamily::Inet6 => 6,
        });
    }
    if bits & STACK_PROTO != 0 {
        out.put(stack.proto.number());
    }
    for (i, bit) in [STACK_ADDR0, STACK_ADDR1].into_iter().enumerate() {
        if bits & bit != 0 {
            tagged_addr(out, stack.addr[i]);
        }
    }
    for (i, bit) in [STACK_PORT0, STACK_PORT1].into_iter().enumerate() {
        if bits & bit != 0 {
            out.put_slice(&stack.port[i].to_le_bytes());
        }
    }
    if bits & STACK_RDOMAIN != 0 {
        varint(out, u64::from(stack.rdomain));
    }
}

#[inline(always)]
fn peer(out: &mut impl Sink, p: &Peer) {
    let bits = peer_bits(p);
    let window = p.seqhi.wrapping_sub(p.seqlo);
    out.put(bits);
    if bits & PEER_SEQLO != 0 {
        out.put_slice(&p.seqlo.to_le_bytes());
    }
    if bits & PEER_WINDOW != 0 {
        varint(out, u64::from(window));
    }
    if bits & PEER_SEQDIFF != 0 {
        varint(out, u64::from(p.seqdiff));
    }
    if bits & PEER_MAX_WIN != 0 {
        varint(out, u64::from(p.max_win));
    }
    if bits & PEER_MSS != 0 {
        varint(out, u64::from(p.mss));
    }
    if bits & PEER_WSCALE != 0 {
        out.put(p.wscale);
    }
    if let Some(sc) = p.scrub {
        varint(out, u64::from(sc.flags));
        out.put(sc.ttl);
        out.put_slice(&sc.ts_mod.to_le_bytes());
    }
}

/// Which of a peer's fields the encoder sends.
#[inline(always)]
fn peer_bits(p: &Peer) -> u8 {
    let window = p.seqhi.wrapping_sub(p.seqlo);
    let max_win_is_window = u32::from(p.max_win) == window && p.max_win != 0;
    // Each bit from its test, with no branch: the receiver checks a batch record's bits
    // by these once per peer.
    let bit = |on: bool, bit: u8| u8::from(on) * bit;
    bit(p.seqlo != 0, PEER_SEQLO)
        | bit(window != 0, PEER_WINDOW)
        | bit(p.seqdiff != 0, PEER_SEQDIFF)
        | bit(p.max_win != 0 && !max_win_is_window, PEER_MAX_WIN)
        | bit(p.mss != 0, PEER_MSS)
        | bit(p.wscale != 0, PEER_WSCALE)
        | bit(p.scrub.is_some(), PEER_SCRUB)
        | bit(max_win_is_window, PEER_MAX_WIN_IS_WINDOW)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

#[inline(always)]
fn varint(out: &mut impl Sink, mut v: u64) {
    while v >= 0x80 {
        out.put(v as u8 | 0x80);
        v >>= 7;
    }
    out.put(v as u8);
}

#[inline(always)]
fn option_u32(out: &mut impl Sink, v: Option<u32>) {
    // 0 is None; anything else is the value plus one.
    varint(out, v.map_or(0, |v| u64::from(v) + 1));
}

#[inline(always)]
fn bare_addr(out: &mut impl Sink, a: IpAddr) {
    match a {
        IpAddr::V4(a) => out.put_slice(&a.octets()),
        IpAddr::V6(a) => out.put_slice(&a.octets()),
    }
}

#[inline(always)]
fn tagged_addr(out: &mut impl Sink, a: IpAddr) {
    out.put(match a {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 6,
    });
    bare_addr(out, a);
}

fn route_number(rt: RouteType) -> u8 {
    match rt {
        RouteType::None => 0,
        RouteType::FastRoute => 1,
        RouteType::RouteTo => 2,
        RouteType::DupTo => 3,
        RouteType::ReplyTo => 4,
    }
}

fn route_of(n: u8) -> Option<RouteType> {
    Some(match n {
        0 => RouteType::None,
        1 => RouteType::FastRoute,
        2 => RouteType::RouteTo,
        3 => RouteType::DupTo,
        4 => RouteType::ReplyTo,
        _ => return None,
    })
}

/// The bytes of each group of [`State::default`] as a lone record would hold them, by
/// bit number: what a record without the group stands for.
fn default_groups() -> &'static [Vec<u8>; 12] {
    static DEFAULTS: std::sync::OnceLock<[Vec<u8>; 12]> = std::sync::OnceLock::new();
    DEFAULTS.get_or_init(|| {
        let mut encoder = Encoder {
            prev: State::default(),
            names: Vec::new(),
            remember_names: false,
        };
        let default = State::default();
        std::array::from_fn(|i| {
            let mut bytes = Vec::new();
            if i < GROUP_ORDER.len() && GROUP_ORDER.contains(&(1 << i)) {
                encoder.group(1 << i, &default, &mut bytes);
            }
            bytes
        })
    })
}

/// The first `len` bytes of `from` (which holds at least that many) as the `N` bytes
/// of a name, NUL after them. Taken 16 bytes at a time and masked where `from` holds
/// `N` bytes (a name is never a record's last field, so nearly always): copying `len`
/// bytes into a zeroed array cost a `memcpy` call for a few bytes, and reading the name
/// back whole right after those narrow stores stalled on them (a fifth of a record's
/// peek in the receiver's parent).
#[inline(always)]
fn name_bytes<const N: usize>(from: &[u8], len: usize) -> [u8; N] {
    let mut raw = [0u8; N];
    match from.first_chunk::<N>() {
        Some(window) if N % 16 == 0 => {
            for at in (0..N).step_by(16) {
                let kept = len.saturating_sub(at).min(16);
                let mask = if kept == 16 {
                    u128::MAX
                } else {
                    (1u128 << (8 * kept)) - 1
                };
                let mut word = [0u8; 16];
                word.copy_from_slice(&window[at..at + 16]);
                raw[at..at + 16].copy_from_slice(&(u128::from_le_bytes(word) & mask).to_le_bytes());
            }
        }
        _ => raw[..len].copy_from_slice(&from[..len]),
    }
    raw
}

/// The varint at the start of `bytes` and its length, read from eight bytes at once if
/// `bytes` holds eight and the varint ends within them (`None` otherwise, for the
/// byte-at-a-time reading): the first byte without its continuation bit ends it, and the
/// 7-bit groups before it are packed together in three steps, with no branch per byte.
#[inline(always)]
pub(super) fn varint_of_eight(bytes: &[u8]) -> Option<(u64, usize)> {
    varint_of_eight_checked(bytes).map(|(v, len, _)| (v, len))
}

/// [`varint_of_eight`], and whether the varint's last byte holds no bit: padding, if
/// it is not the only byte (our encoder never writes that).
#[inline(always)]
fn varint_of_eight_checked(bytes: &[u8]) -> Option<(u64, usize, bool)> {
    let word = u64::from_le_bytes(*bytes.first_chunk::<8>()?);
    let ends = !word & 0x8080_8080_8080_8080;
    if ends == 0 {
        return None;
    }
    // Every bit up to the top bit of the varint's last byte (which is clear) is the
    // varint's: one mask, with no shift by the length.
    let end_bit = ends.trailing_zeros();
    let upto_end = ends ^ (ends - 1);
    let used = word & upto_end;
    let last_empty = used & (upto_end ^ (upto_end >> 8)) == 0;
    // The 7-bit groups packed pairwise, then by fours, then the two halves: each step
    // takes the upper part's surplus zero bits out by a subtraction.
    let mut v = used & 0x7f7f_7f7f_7f7f_7f7f;
    v -= (v & 0x7f00_7f00_7f00_7f00) >> 1;
    v -= ((v & 0x3fff_0000_3fff_0000) >> 2) * 3;
    v = u64::from(v as u32) | (v >> 32) << 28;
    Some((v, (end_bit / 8 + 1) as usize, last_empty))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The names this batch sent, by their used bytes (the longest is a tag name): no
    /// allocation per name, as decoding is on the receiver's hot path.
    names: Vec<(u8, [u8; 64])>,
    remember_names: bool,
    /// A varint longer than its value needs was read: bytes our encoder did not make,
    /// which a copy of them would keep (see [`Transcoder`]).
    odd_varint: bool,
}

/// Where a record's parts lie and the raw bits it read, as [`Reader::record`] found
/// them: what [`Transcoder`] needs to copy the record's tail and to prove it is the
/// encoder's.
#[derive(Debug, Clone, Copy, Default)]
struct RecordShape {
    mask: u32,
    /// Where the wire key's addresses start: the bytes from here to the record's end
    /// are sent whatever the record before.
    tail_at: usize,
    /// The byte of both peers' states, and each peer's field bits.
    peer_states: u8,
    peer_bits: [u8; 2],
}

impl Reader<'_> {
    #[inline(always)]
    fn invalid(&self, field: &'static str) -> CompactRecordError {
        CompactRecordError::Invalid {
            field,
            offset: self.at,
        }
    }

    #[inline(always)]
    fn truncated(&self) -> CompactRecordError {
        CompactRecordError::Truncated { offset: self.at }
    }

    #[inline(always)]
    fn take(&mut self, n: usize) -> Result<&[u8], CompactRecordError> {
        let end = self.at.checked_add(n).ok_or_else(|| self.truncated())?;
        let out = self
            .bytes
            .get(self.at..end)
            .ok_or(CompactRecordError::Truncated { offset: self.at })?;
        self.at = end;
        Ok(out)
    }

    #[inline(always)]
    fn u8(&mut self) -> Result<u8, CompactRecordError> {
        let b = *self.bytes.get(self.at).ok_or_else(|| self.truncated())?;
        self.at += 1;
        Ok(b)
    }

    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Result<[u8; N], CompactRecordError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    #[inline(always)]
    fn u16_le(&mut self) -> Result<u16, CompactRecordError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    #[inline(always)]
    fn u32_le(&mut self) -> Result<u32, CompactRecordError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    #[inline(always)]
    fn varint(&mut self, field: &'static str) -> Result<u64, CompactRecordError> {
        match self.varint_quick() {
            Some(v) => Ok(v),
            None => {
                // By value, so that no pointer to this reader leaves the record's
                // reading, whose position then stays in a register.
                let (v, at, odd) = Reader::varint_long_at(self.bytes, self.at, field)?;
                self.at = at;
                self.odd_varint |= odd;
                Ok(v)
            }
        }
    }

    /// A varint of at most eight bytes with eight to read, where the value comes back
    /// in a register: `None` for the rest (longer, near the end, or bad), which
    /// [`varint_long`](Self::varint_long) reads or refuses.
    #[inline(always)]
    fn varint_quick(&mut self) -> Option<u64> {
        // Most values (masks, ids' deltas, ages, small counters) take one byte.
        let &b = self.bytes.get(self.at)?;
        if b & 0x80 == 0 {
            self.at += 1;
            return Some(u64::from(b));
        }
        // Two or three bytes (MSS, windows, ages, expiries): tested at each field's
        // own branches, which a field of one width predicts; cheaper than the packing
        // of eight bytes.
        if let Some(&[_, b1, b2]) = self.bytes.get(self.at..self.at + 3) {
            let low = u64::from(b & 0x7f) | u64::from(b1 & 0x7f) << 7;
            if b1 & 0x80 == 0 {
                self.at += 2;
                // The last byte holds a bit, or it was padded.
                self.odd_varint |= b1 == 0;
                return Some(low);
            }
            if b2 & 0x80 == 0 {
                self.at += 3;
                self.odd_varint |= b2 == 0;
                return Some(low | u64::from(b2) << 14);
            }
        }
        let (v, len, last_empty) = self
            .bytes
            .get(self.at..)
            .and_then(varint_of_eight_checked)?;
        self.at += len;
        // More than one byte (the first said so): an empty last byte is padding.
        self.odd_varint |= last_empty;
        Some(v)
    }

    /// [`varint_long`](Self::varint_long) at `at` of `bytes`: the value, where it ends,
    /// and whether it was padded.
    #[cold]
    #[inline(never)]
    fn varint_long_at(
        bytes: &[u8],
        at: usize,
        field: &'static str,
    ) -> Result<(u64, usize, bool), CompactRecordError> {
        let mut r = Reader {
            bytes,
            at,
            names: Vec::new(),
            remember_names: false,
            odd_varint: false,
        };
        let v = r.varint_long(field)?;
        Ok((v, r.at, r.odd_varint))
    }

    #[inline(always)]
    fn varint_long(&mut self, field: &'static str) -> Result<u64, CompactRecordError> {
        if let Some((v, len, last_empty)) =
            self.bytes.get(self.at..).and_then(varint_of_eight_checked)
        {
            self.at += len;
            self.odd_varint |= len > 1 && last_empty;
            return Ok(v);
        }
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            // The tenth byte may hold one bit only.
            if shift == 63 && part > 1 {
                return Err(self.invalid(field));
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                self.odd_varint |= shift > 0 && part == 0;
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

    #[inline(always)]
    fn u16(&mut self, field: &'static str) -> Result<u16, CompactRecordError> {
        let v = self.varint(field)?;
        u16::try_from(v).map_err(|_| self.invalid(field))
    }

    #[inline(always)]
    fn option_u32(&mut self, field: &'static str) -> Result<Option<u32>, CompactRecordError> {
        match self.varint(field)? {
            0 => Ok(None),
            v => u32::try_from(v - 1)
                .map(Some)
                .map_err(|_| self.invalid(field)),
        }
    }

    #[inline(always)]
    fn name<const N: usize>(&mut self, field: &'static str) -> Result<Name<N>, CompactRecordError> {
        let mut names = std::mem::take(&mut self.names);
        let name = self.name_in(&mut names, field);
        self.names = names;
        name
    }

    /// [`name`](Self::name) with the batch's dictionary `names` held apart from the
    /// reader, so that no pointer to the reader leaves the record's reading.
    #[inline(always)]
    fn name_in<const N: usize>(
        &mut self,
        names: &mut NameList,
        field: &'static str,
    ) -> Result<Name<N>, CompactRecordError> {
        let tag = self.u8()?;
        if tag & 0x80 != 0 {
            return self.known_name(names, tag, field);
        }
        let names = if self.remember_names {
            Some(names)
        } else {
            None
        };
        let (name, at) = Reader::new_name_at(self.bytes, self.at, tag, field, names)?;
        self.at = at;
        Ok(name)
    }

    /// A name sent whole (the first time in a batch, or in a lone record) at `at` of
    /// `bytes`, after its tag; remembered in `names` if given. The name and where it
    /// ends.
    #[inline(never)]
    fn new_name_at<const N: usize>(
        bytes: &[u8],
        at: usize,
        tag: u8,
        field: &'static str,
        names: Option<&mut NameList>,
    ) -> Result<(Name<N>, usize), CompactRecordError> {
        let mut r = Reader {
            bytes,
            at,
            names: Vec::new(),
            remember_names: false,
            odd_varint: false,
        };
        let len = usize::from(tag);
        if len > N.min(64) {
            return Err(r.invalid(field));
        }
        // The encoder never writes trailing NULs: a name ending in one was not made by it,
        // and would not match the encoder's dictionary.
        if r.take(len)?.last() == Some(&0) {
            return Err(r.invalid(field));
        }
        let used = &bytes[at..];
        if let Some(names) = names {
            if names.len() < DICTIONARY_SIZE {
                names.push((len as u8, name_bytes(used, len)));
            }
        }
        Ok((Name(name_bytes(used, len)), r.at))
    }

    /// A name sent before in the batch, by its dictionary index: most of a bulk's names
    /// (a few interfaces for a million states).
    #[inline(always)]
    fn known_name<const N: usize>(
        &self,
        names: &NameList,
        tag: u8,
        field: &'static str,
    ) -> Result<Name<N>, CompactRecordError> {
        let (len, used) = names
            .get(usize::from(tag & 0x7f))
            .ok_or_else(|| self.invalid(field))?;
        let len = usize::from(*len);
        if len > N {
            return Err(self.invalid(field));
        }
        // A remembered name's room is NUL after its used bytes (`name_bytes`): its
        // first `N` bytes are the name, copied whole.
        Ok(Name(match used.first_chunk::<N>() {
            Some(room) => *room,
            None => name_bytes(used, len),
        }))
    }

    #[inline(always)]
    fn bare_addr(&mut self, af: AddressFamily) -> Result<IpAddr, CompactRecordError> {
        Ok(match af {
            AddressFamily::Inet => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
        })
    }

    #[inline(always)]
    fn tagged_addr(&mut self, field: &'static str) -> Result<IpAddr, CompactRecordError> {
        match self.u8()? {
            4 => self.bare_addr(AddressFamily::Inet),
            6 => self.bare_addr(AddressFamily::Inet6),
            _ => Err(self.invalid(field)),
        }
    }

    /// Reads one record over `s`, which holds the record before it (or the default) on
    /// entry and this record's state on return (part of it on an error).
    fn record(&mut self, s: &mut State) -> Result<RecordShape, CompactRecordError> {
        // Read by a copy of this reader, the dictionary apart: nothing takes the copy's
        // address, so its position and flags live in registers (this reader's, behind
        // a pointer, were stored and loaded again around every field).
        let mut names = std::mem::take(&mut self.names);
        let mut r = Reader {
            bytes: self.bytes,
            at: self.at,
            names: Vec::new(),
            remember_names: self.remember_names,
            odd_varint: self.odd_varint,
        };
        let shape = r.record_fields(s, &mut names);
        self.at = r.at;
        self.odd_varint = r.odd_varint;
        self.names = names;
        shape
    }

    /// [`record`](Self::record)'s reads, the batch's dictionary being `names`.
    #[inline(always)]
    fn record_fields(
        &mut self,
        s: &mut State,
        names: &mut NameList,
    ) -> Result<RecordShape, CompactRecordError> {
        let mask = self.u32("mask")?;
        if mask & !ALL_BITS != 0 {
            return Err(self.invalid("mask"));
        }
        s.id = s.id.wrapping_add(unzigzag(self.varint("id")?) as u64);
        if mask & IFNAME != 0 {
            s.ifname = self.name_in(names, "ifname")?;
        }
        if mask & SHAPE != 0 {
            let shape = self.u8()?;
            s.wire.af = if shape & 1 == 0 {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            s.direction =
                Direction::from_number(shape >> 1 & 3).ok_or_else(|| self.invalid("direction"))?;
            // By a table, not a jump through one (which mispredicts on a bulk's mix).
            s.wire.proto = match PROTOCOL_OF_CODE.get(usize::from(shape >> 3)) {
                Some(&Some(proto)) => proto,
                _ if shape >> 3 == 7 => Protocol::from_number(self.u8()?),
                _ => return Err(self.invalid("protocol")),
            };
            s.timeout = Timeout::from_number(self.u8()?).ok_or_else(|| self.invalid("timeout"))?;
        }
        if mask & RULE != 0 {
            s.rule = self.option_u32("rule")?;
        }
        let stack_bits = if mask & STACK != 0 {
            let bits = self.u8()?;
            // An empty set would mean "the wire key", which the encoder says by no STACK.
            if bits == 0 || bits & 0x80 != 0 {
                return Err(self.invalid("stack"));
            }
            bits
        } else {
            0
        };
        let mut stack_key = StateKey::default();
        let mut stack_addr = [None; 2];
        let mut stack_port = [None; 2];
        let mut stack_rdomain = None;
        // Most stack keys are the wire key: one test passes the stack's fields by.
        if stack_bits != 0 {
            if stack_bits & STACK_AF != 0 {
                stack_key.af = match self.u8()? {
                    4 => AddressFamily::Inet,
                    6 => AddressFamily::Inet6,
                    _ => return Err(self.invalid("stack family")),
                };
            }
            if stack_bits & STACK_PROTO != 0 {
                stack_key.proto = Protocol::from_number(self.u8()?);
            }
            for (i, bit) in [STACK_ADDR0, STACK_ADDR1].into_iter().enumerate() {
                if stack_bits & bit != 0 {
                    stack_addr[i] = Some(self.tagged_addr("stack address")?);
                }
            }
            for (i, bit) in [STACK_PORT0, STACK_PORT1].into_iter().enumerate() {
                if stack_bits & bit != 0 {
                    stack_port[i] = Some(self.u16_le()?);
                }
            }
            if stack_bits & STACK_RDOMAIN != 0 {
                stack_rdomain = Some(self.u16("stack rdomain")?);
            }
        }
        if mask & CREATOR != 0 {
            s.creatorid = self.u32_le()?;
        }
        if mask & FLAGS != 0 {
            s.log = self.u8()?;
            s.sync_flags = self.u8()?;
            s.state_flags = StateFlags::from_bits(self.u16("state flags")?);
        }
        if mask & ROUTE != 0 {
            s.rt = route_of(self.u8()?).ok_or_else(|| self.invalid("route type"))?;
            s.rt_addr = match self.u8()? {
                0 => None,
                4 => Some(self.bare_addr(AddressFamily::Inet)?),
                6 => Some(self.bare_addr(AddressFamily::Inet6)?),
                _ => return Err(self.invalid("route address")),
            };
            s.rt_ifname = self.name_in(names, "route interface")?;
        }
        if mask & NAMES != 0 {
            s.orig_ifname = self.name_in(names, "original interface")?;
            s.tagname = self.name_in(names, "tag")?;
        }
        if mask & QUEUES != 0 {
            s.qid = self.u16("qid")?;
            s.pqid = self.u16("pqid")?;
            s.dnpipe = self.u16("dnpipe")?;
            s.dnrpipe = self.u16("dnrpipe")?;
        }
        if mask & RULE_REFS != 0 {
            s.anchor = self.option_u32("anchor")?;
            s.nat_rule = self.option_u32("nat rule")?;
            s.rtableid = self.option_u32("rtableid")?;
            s.reply_rtableid = self.option_u32("reply rtableid")?;
        }
        if mask & TUNING != 0 {
            s.min_ttl = self.u8()?;
            s.set_tos = self.u8()?;
            s.set_prio = [self.u8()?, self.u8()?];
            s.max_mss = self.u16("max mss")?;
        }
        if mask & RDOMAIN != 0 {
            s.wire.rdomain = self.u16("rdomain")?;
        }
        let tail_at = self.at;
        for i in 0..2 {
            s.wire.addr[i] = if mask & MIXED_FAMILIES != 0 {
                self.tagged_addr("address")?
            } else {
                self.bare_addr(s.wire.af)?
            };
        }
        for i in 0..2 {
            s.wire.port[i] = self.u16_le()?;
        }
        s.stack = s.wire;
        if stack_bits != 0 {
            if stack_bits & STACK_AF != 0 {
                s.stack.af = stack_key.af;
            }
            if stack_bits & STACK_PROTO != 0 {
                s.stack.proto = stack_key.proto;
            }
            for i in 0..2 {
                if let Some(a) = stack_addr[i] {
                    s.stack.addr[i] = a;
                }
                if let Some(p) = stack_port[i] {
                    s.stack.port[i] = p;
                }
            }
            if let Some(r) = stack_rdomain {
                s.stack.rdomain = r;
            }
        }
        s.age_secs = self.u32("age")?;
        s.expire_secs = self.u32("expire")?;
        for i in 0..2 {
            s.packets[i] = self.varint("packets")?;
        }
        for i in 0..2 {
            s.bytes[i] = self.varint("bytes")?;
        }
        let states = self.u8()?;
        let src_state = self.peer_state(s.wire.proto, states >> 4)?;
        let dst_state = self.peer_state(s.wire.proto, states & 0x0f)?;
        let src_bits = self.peer(src_state, &mut s.src)?;
        let dst_bits = self.peer(dst_state, &mut s.dst)?;
        Ok(RecordShape {
            mask,
            tail_at,
            peer_states: states,
            peer_bits: [src_bits, dst_bits],
        })
    }

    #[inline(always)]
    fn peer_state(&self, proto: Protocol, n: u8) -> Result<PeerState, CompactRecordError> {
        PeerState::from_number(proto, n).ok_or_else(|| self.invalid("peer state"))
    }

    /// A peer, read over `p` (every field written), and the bits that said which of its
    /// fields follow. Written in place: a `Peer` returned by value was copied twice.
    #[inline(always)]
    fn peer(&mut self, state: PeerState, p: &mut Peer) -> Result<u8, CompactRecordError> {
        let bits = self.u8()?;
        if bits & PEER_MAX_WIN != 0 && bits & PEER_MAX_WIN_IS_WINDOW != 0 {
            return Err(self.invalid("peer max_win"));
        }
        p.state = state;
        p.seqlo = if bits & PEER_SEQLO != 0 {
            self.u32_le()?
        } else {
            0
        };
        let window = if bits & PEER_WINDOW != 0 {
            self.u32("peer window")?
        } else {
            0
        };
        p.seqhi = p.seqlo.wrapping_add(window);
        p.seqdiff = if bits & PEER_SEQDIFF != 0 {
            self.u32("peer seqdiff")?
        } else {
            0
        };
        p.max_win = if bits & PEER_MAX_WIN != 0 {
            self.u16("peer max_win")?
        } else if bits & PEER_MAX_WIN_IS_WINDOW != 0 {
            u16::try_from(window).map_err(|_| self.invalid("peer max_win"))?
        } else {
            0
        };
        p.mss = if bits & PEER_MSS != 0 {
            self.u16("peer mss")?
        } else {
            0
        };
        p.wscale = if bits & PEER_WSCALE != 0 {
            self.u8()?
        } else {
            0
        };
        p.scrub = if bits & PEER_SCRUB != 0 {
            Some(Scrub {
                flags: self.u16("scrub flags")?,
                ttl: self.u8()?,
                ts_mod: self.u32_le()?,
            })
        } else {
            None
        };
        Ok(bits)
    }
}

#[cfg(test)]
#[path = "compact_record_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "compact_record_lone_tests.rs"]
mod lone_tests;

// A child, to share the reader and the layout's constants.
#[path = "compact_peek.rs"]
pub mod peek;

// A child, to share the layout's constants and the batch writer's fields.
#[path = "compact_record_layout.rs"]
mod layout;
use layout::FromRecords;
