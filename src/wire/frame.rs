//! Whole packets: reading a pfsync payload into messages, and building one.
//!
//! A packet is a header, then runs of records each behind a subheader, then on FreeBSD
//! an EOF subheader. [`PacketReader`] walks it with the receiving kernel's rules;
//! [`PacketBuilder`] packs messages of mixed actions up to an MTU and never produces a
//! packet the dialect's kernel would refuse.

use crate::wire::header::{self, HeaderPacket, HeaderRepr};
use crate::wire::msg::{
    BusRepr, ClrRepr, StateRecord, StateRefRepr, TdbFreeBsdRepr, TdbOpenBsdRepr, UpdCRepr,
};
use crate::wire::subheader::{self, SubheaderPacket, SubheaderRepr};
use crate::wire::{Action, Dialect, Error, Family, Result};

/// One message: a record and the action it was sent under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// CLR.
    Clr(ClrRepr),
    /// INS, in any state format.
    Ins(StateRecord),
    /// INS_ACK.
    InsAck(StateRefRepr),
    /// UPD, in any state format.
    Upd(StateRecord),
    /// UPD_C.
    UpdC(UpdCRepr),
    /// UPD_REQ (id 0 and creatorid 0: bulk request).
    UpdReq(StateRefRepr),
    /// DEL with a full record (accepted by OpenBSD and FreeBSD 13, sent by none).
    Del(StateRecord),
    /// DEL_C.
    DelC(StateRefRepr),
    /// BUS.
    Bus(BusRepr),
    /// TDB, OpenBSD layout.
    TdbOpenBsd(TdbOpenBsdRepr),
    /// TDB, FreeBSD layout.
    TdbFreeBsd(TdbFreeBsdRepr),
}

impl Message {
    /// Parses one record of `action`; `bytes` holds at least the record. `None` for
    /// actions that carry no record the codec reads (EOF, obsolete and fragment ones).
    #[inline]
    pub fn parse(action: Action, family: Family, bytes: &[u8]) -> Option<Result<Message>> {
        Some(match action {
            Action::Clr => ClrRepr::parse_bytes(bytes).map(Message::Clr),
            Action::Ins(f) => StateRecord::parse(f, bytes).map(Message::Ins),
            Action::InsAck => StateRefRepr::parse_bytes(bytes).map(Message::InsAck),
            Action::Upd(f) => StateRecord::parse(f, bytes).map(Message::Upd),
            Action::UpdC => UpdCRepr::parse_bytes(bytes).map(Message::UpdC),
            Action::UpdReq => StateRefRepr::parse_bytes(bytes).map(Message::UpdReq),
            Action::Del(f) => StateRecord::parse(f, bytes).map(Message::Del),
            Action::DelC => StateRefRepr::parse_bytes(bytes).map(Message::DelC),
            Action::Bus => BusRepr::parse_bytes(bytes).map(Message::Bus),
            Action::Tdb => match family {
                Family::OpenBsd => TdbOpenBsdRepr::parse_bytes(bytes).map(Message::TdbOpenBsd),
                Family::FreeBsd => TdbFreeBsdRepr::parse_bytes(bytes).map(Message::TdbFreeBsd),
            },
            Action::Eof
            | Action::InsF
            | Action::DelF
            | Action::OldIns
            | Action::OldUpd
            | Action::OldTdb => return None,
        })
    }

    /// The action this message is sent under.
    pub fn action(&self) -> Action {
        match self {
            Message::Clr(_) => Action::Clr,
            Message::Ins(r) => Action::Ins(r.format()),
            Message::InsAck(_) => Action::InsAck,
            Message::Upd(r) => Action::Upd(r.format()),
            Message::UpdC(_) => Action::UpdC,
            Message::UpdReq(_) => Action::UpdReq,
            Message::Del(r) => Action::Del(r.format()),
            Message::DelC(_) => Action::DelC,
            Message::Bus(_) => Action::Bus,
            Message::TdbOpenBsd(_) | Message::TdbFreeBsd(_) => Action::Tdb,
        }
    }

    /// The layout family a TDB message belongs to; `None` for the others, which read
    /// the same in both families or say their format through the action.
    fn tdb_family(&self) -> Option<Family> {
        match self {
            Message::TdbOpenBsd(_) => Some(Family::OpenBsd),
            Message::TdbFreeBsd(_) => Some(Family::FreeBsd),
            _ => None,
        }
    }

    /// Bytes `emit_bytes` writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Message::Clr(r) => r.buffer_len(),
            Message::Ins(r) | Message::Upd(r) | Message::Del(r) => r.buffer_len(),
            Message::InsAck(r) | Message::UpdReq(r) | Message::DelC(r) => r.buffer_len(),
            Message::UpdC(r) => r.buffer_len(),
            Message::Bus(r) => r.buffer_len(),
            Message::TdbOpenBsd(r) => r.buffer_len(),
            Message::TdbFreeBsd(r) => r.buffer_len(),
        }
    }

    /// Writes the record into the first `buffer_len()` bytes.
    pub fn emit_bytes(&self, bytes: &mut [u8]) {
        match self {
            Message::Clr(r) => r.emit_bytes(bytes),
            Message::Ins(r) | Message::Upd(r) | Message::Del(r) => r.emit_bytes(bytes),
            Message::InsAck(r) | Message::UpdReq(r) | Message::DelC(r) => r.emit_bytes(bytes),
            Message::UpdC(r) => r.emit_bytes(bytes),
            Message::Bus(r) => r.emit_bytes(bytes),
            Message::TdbOpenBsd(r) => r.emit_bytes(bytes),
            Message::TdbFreeBsd(r) => r.emit_bytes(bytes),
        }
    }

    /// The value checks a receiving kernel of `dialect` makes on this record.
    pub fn check(&self, dialect: Dialect) -> Result<()> {
        match self {
            Message::Ins(r) | Message::Upd(r) | Message::Del(r) => r.check(dialect),
            Message::UpdC(r) => r.check(dialect),
            Message::Bus(r) => r.check(),
            Message::Clr(_)
            | Message::InsAck(_)
            | Message::UpdReq(_)
            | Message::DelC(_)
            | Message::TdbOpenBsd(_)
            | Message::TdbFreeBsd(_) => Ok(()),
        }
    }
}

/// What walking a packet yields besides messages.
// Messages are plain values on purpose: reading a packet allocates nothing per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// A record.
    Message(Message),
    /// A run of records the receiver skips: an OpenBSD action it does not know or that
    /// has no handler (obsolete actions, INS_F, DEL_F, EOF), sized by the subheader.
    Skipped {
        /// Action number.
        action: u8,
        /// Records in the run.
        count: u16,
        /// Bytes skipped.
        len: usize,
    },
    /// The FreeBSD end-of-frame subheader.
    Eof,
}

/// A record inside a packet, not parsed yet: its action and exactly its bytes. Its
/// length was checked and its values validated as the receiving kernel does when the
/// walk reached it; `message()` parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    action: Action,
    family: Family,
    bytes: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// The action it was sent under.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The record's bytes (the size the receiver knows; larger OpenBSD records are cut).
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Parses the record.
    #[inline]
    pub fn message(&self) -> Result<Message> {
        Message::parse(self.action, self.family, self.bytes).unwrap_or(Err(
            Error::UnsupportedAction {
                action: 0,
                name: self.action.name(),
            },
        ))
    }
}

/// What the zero-copy walk yields: like [`Item`], with records left unparsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawItem<'a> {
    /// A validated record.
    Record(RecordRef<'a>),
    /// A run of records the receiver skips; see [`Item::Skipped`].
    Skipped {
        /// Action number.
        action: u8,
        /// Records in the run.
        count: u16,
        /// Bytes skipped.
        len: usize,
    },
    /// The FreeBSD end-of-frame subheader.
    Eof,
}

/// `bytes` as exactly `N` bytes, or badlen.
fn exactly<const N: usize>(bytes: &[u8]) -> Result<&[u8; N]> {
    bytes
        .get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or(Error::BadLength {
            what: "record",
            need: N,
            have: bytes.len(),
        })
}

/// The value checks a receiving kernel of `dialect` makes on one record, on its bytes.
pub fn check_record(dialect: Dialect, action: Action, bytes: &[u8]) -> Result<()> {
    use crate::wire::msg::{bus, state_1301, state_1400, state_1500, state_openbsd, upd_c};
    use crate::wire::RecordFormat as F;
    match action {
        Action::Ins(f) | Action::Upd(f) | Action::Del(f) => match f {
            F::OpenBsd => state_openbsd::check_bytes(exactly(bytes)?, dialect),
            F::FreeBsd1301 => state_1301::check_bytes(exactly(bytes)?, dialect),
            F::FreeBsd1400 => state_1400::check_bytes(exactly(bytes)?, dialect),
            F::FreeBsd1500 => state_1500::check_bytes(exactly(bytes)?, dialect),
        },
        Action::UpdC => upd_c::check_bytes(exactly(bytes)?, dialect),
        Action::Bus => bus::check_bytes(exactly(bytes)?),
        _ => Ok(()),
    }
}

/// A pfsync packet being read: the header is checked on construction, the records
/// as the iterator from [`PacketReader::items`] reaches them.
#[derive(Debug, Clone, Copy)]
pub struct PacketReader<'a> {
    data: &'a [u8],
    header: HeaderRepr,
    dialect: Dialect,
}

impl<'a> PacketReader<'a> {
    /// Reads the header of a pfsync payload (the bytes after the IP header), choosing
    /// the receiving dialect from its version: the newest kernel of that family, which
    /// knows every state format of it.
    pub fn new(payload: &'a [u8]) -> Result<Self> {
        let version = Self::version_of(payload)?;
        let dialect = Dialect::receiver_for_version(version).ok_or(Error::BadVersion(version))?;
        Self::new_as(payload, dialect)
    }

    /// Reads a payload as a kernel of exactly `dialect` would: a different header
    /// version is `badver`, actions at or above its `PFSYNC_ACT_MAX` are unknown.
    pub fn new_as(payload: &'a [u8], dialect: Dialect) -> Result<Self> {
        let version = Self::version_of(payload)?;
        if version != dialect.version() {
            return Err(Error::BadVersion(version));
        }
        let header = HeaderRepr::parse(&HeaderPacket::new_unchecked(payload));
        let len = usize::from(header.len);
        if len < header::SIZE || len > payload.len() {
            return Err(Error::BadLength {
                what: "header len",
                need: len.max(header::SIZE),
                have: payload.len(),
            });
        }
        // Bytes past the header's length are ignored, as both kernels do.
        Ok(PacketReader {
            data: &payload[..len],
            header,
            dialect,
        })
    }

    fn version_of(payload: &[u8]) -> Result<u8> {
        if payload.len() < header::SIZE {
            return Err(Error::Short {
                need: header::SIZE,
                have: payload.len(),
            });
        }
        Ok(payload[0])
    }

    /// The header.
    pub fn header(&self) -> &HeaderRepr {
        &self.header
    }

    /// The dialect the packet is read with.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The packet up to the header's length.
    pub fn bytes(&self) -> &'a [u8] {
        self.data
    }

    /// Walks the packet without parsing records; see [`items`](Self::items) for the
    /// error rules. Nothing is copied: records are handed out as checked slices.
    pub fn raw_items(&self) -> RawItems<'a> {
        RawItems {
            data: self.data,
            dialect: self.dialect,
            offset: header::SIZE,
            run: None,
            done: false,
        }
    }

    /// Walks the packet. A record whose values fail the checks yields its error and
    /// the walk goes on with the next record (the kernels count `badval` and continue);
    /// any other error is yielded once and ends the walk (the rest of the packet is
    /// dropped, as the kernels do).
    pub fn items(&self) -> Items<'a> {
        Items {
            raw: self.raw_items(),
        }
    }

    /// The messages only: skipped runs and EOF are left out.
    pub fn messages(&self) -> impl Iterator<Item = Result<Message>> + 'a {
        self.items().filter_map(|item| match item {
            Ok(Item::Message(m)) => Some(Ok(m)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
    }
}

/// A run of records of one action being walked.
#[derive(Debug, Clone, Copy)]
struct Run {
    action: Action,
    /// Distance between records: the sender's size on OpenBSD, the known one on FreeBSD.
    stride: usize,
    remaining: u16,
}

/// Iterator over the parsed items of a packet; see [`PacketReader::items`].
#[derive(Debug, Clone)]
pub struct Items<'a> {
    raw: RawItems<'a>,
}

impl Iterator for Items<'_> {
    type Item = Result<Item>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.raw.next()? {
            Ok(RawItem::Record(r)) => r.message().map(Item::Message),
            Ok(RawItem::Skipped { action, count, len }) => Ok(Item::Skipped { action, count, len }),
            Ok(RawItem::Eof) => Ok(Item::Eof),
            Err(e) => Err(e),
        })
    }
}

/// Iterator over the unparsed items of a packet; see [`PacketReader::raw_items`].
#[derive(Debug, Clone)]
pub struct RawItems<'a> {
    data: &'a [u8],
    dialect: Dialect,
    offset: usize,
    run: Option<Run>,
    done: bool,
}

impl<'a> RawItems<'a> {
    fn fail(&mut self, error: Error) -> Option<Result<RawItem<'a>>> {
        self.done = true;
        Some(Err(error))
    }

    /// Reads the next subheader and sets up its run, or yields what it amounts to.
    fn next_subheader(&mut self) -> Option<Result<RawItem<'a>>> {
        let rest = &self.data[self.offset..];
        if rest.len() < subheader::SIZE {
            // Trailing bytes too few for a subheader are ignored, as the kernels do.
            self.done = true;
            return None;
        }
        let sub = SubheaderRepr::parse(&SubheaderPacket::new_unchecked(rest));
        let sub_offset = self.offset;
        self.offset += subheader::SIZE;
        let available = self.data.len() - self.offset;
        match self.dialect.family() {
            Family::OpenBsd => self.open_openbsd_run(sub, available),
            Family::FreeBsd => self.open_freebsd_run(sub, sub_offset, available),
        }
    }

    /// OpenBSD: the subheader says the record size, so unknown actions are skipped.
    fn open_openbsd_run(
        &mut self,
        sub: SubheaderRepr,
        available: usize,
    ) -> Option<Result<RawItem<'a>>> {
        let msglen = usize::from(sub.len) * 4;
        let action = self.dialect.action(sub.action);
        let known = action.and_then(|a| self.dialect.record_len(a));
        let handled =
            matches!(known, Some(k) if msglen >= k) && !matches!(action, Some(Action::Eof));
        let unknown = action.is_none() || matches!(known, Some(k) if msglen < k);
        if unknown && (sub.count == 0 || msglen == 0) {
            return self.fail(Error::BadSubheader {
                action: sub.action,
                len: msglen,
                count: sub.count,
            });
        }
        let total = msglen * usize::from(sub.count);
        if total > available {
            return self.fail(Error::BadLength {
                what: "records",
                need: total,
                have: available,
            });
        }
        match action {
            Some(a) if handled && sub.count > 0 => {
                self.run = Some(Run {
                    action: a,
                    stride: msglen,
                    remaining: sub.count,
                });
                self.next()
            }
            _ => {
                self.offset += total;
                Some(Ok(RawItem::Skipped {
                    action: sub.action,
                    count: sub.count,
                    len: total,
                }))
            }
        }
    }

    /// FreeBSD: record sizes come from the action; an unknown or refused action, or
    /// records past the end, drop the rest of the packet.
    fn open_freebsd_run(
        &mut self,
        sub: SubheaderRepr,
        sub_offset: usize,
        available: usize,
    ) -> Option<Result<RawItem<'a>>> {
        let Some(action) = self.dialect.action(sub.action) else {
            return self.fail(Error::UnknownAction { action: sub.action });
        };
        if self.dialect.refuses(action) {
            return self.fail(Error::UnsupportedAction {
                action: sub.action,
                name: action.name(),
            });
        }
        if action == Action::Eof {
            self.done = true;
            if self.offset != self.data.len() {
                return Some(Err(Error::EofNotAtEnd {
                    offset: sub_offset,
                    len: self.data.len(),
                }));
            }
            return Some(Ok(RawItem::Eof));
        }
        let Some(stride) = self.dialect.record_len(action) else {
            return self.fail(Error::UnsupportedAction {
                action: sub.action,
                name: action.name(),
            });
        };
        let total = stride * usize::from(sub.count);
        if total > available {
            return self.fail(Error::BadLength {
                what: "records",
                need: total,
                have: available,
            });
        }
        if sub.count == 0 {
            return self.next();
        }
        self.run = Some(Run {
            action,
            stride,
            remaining: sub.count,
        });
        self.next()
    }
}

impl<'a> Iterator for RawItems<'a> {
    type Item = Result<RawItem<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let Some(run) = self.run.as_mut() else {
            return self.next_subheader();
        };
        // The run's length was checked against the data when it was opened.
        let record = &self.data[self.offset..self.offset + run.stride];
        self.offset += run.stride;
        run.remaining -= 1;
        let action = run.action;
        if run.remaining == 0 {
            self.run = None;
        }
        // A record larger than known (a newer OpenBSD sender) is read up to the size
        // we know; `record_len` is defined for every action a run is opened for.
        let known = self.dialect.record_len(action).unwrap_or(record.len());
        let record = &record[..known.min(record.len())];
        Some(match check_record(self.dialect, action, record) {
            Ok(()) => Ok(RawItem::Record(RecordRef {
                action,
                family: self.dialect.family(),
                bytes: record,
            })),
            Err(e) => Err(e),
        })
    }
}

/// Why a message cannot go into a packet of the builder's dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The dialect has no number for this action or state format.
    #[error("{dialect} cannot carry {action}")]
    NotInDialect {
        /// The builder's dialect.
        dialect: Dialect,
        /// The action's name.
        action: &'static str,
    },
    /// The dialect's kernel refuses this action.
    #[error("a {dialect} kernel refuses {action}")]
    Refused {
        /// The builder's dialect.
        dialect: Dialect,
        /// The action's name.
        action: &'static str,
    },
    /// The record's values would be refused by the receiver.
    #[error("record refused by a {dialect} receiver: {error}")]
    Invalid {
        /// The builder's dialect.
        dialect: Dialect,
        /// The receiver's error.
        error: Error,
    },
    /// Even an empty packet cannot hold this record at this MTU.
    #[error("a {need}-byte packet does not fit in {budget} bytes")]
    TooLarge {
        /// Bytes the smallest packet with this record needs.
        need: usize,
        /// Bytes the MTU leaves for the pfsync payload.
        budget: usize,
    },
}

/// Whether a message went into the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Pushed {
    /// It is in.
    Added,
    /// It does not fit: finish this packet and push it into the next.
    Full,
}

/// Size of an IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// Size of an IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;

/// Packs messages into one pfsync payload of at most `mtu` bytes once an IP header is
/// added: one subheader per run of one action, the header length, the checksum field,
/// and on FreeBSD the EOF trailer.
#[derive(Debug, Clone)]
pub struct PacketBuilder {
    dialect: Dialect,
    budget: usize,
    pfcksum: [u8; 16],
    buf: Vec<u8>,
    /// The open run: its action number, where its subheader is, and its count.
    run: Option<(u8, usize, u16)>,
}

impl PacketBuilder {
    /// A builder for IPv4 packets of at most `mtu` bytes.
    pub fn new(dialect: Dialect, mtu: usize) -> Self {
        Self::with_ip_header(dialect, mtu, IPV4_HEADER_LEN)
    }

    /// A builder leaving `ip_header_len` bytes of the MTU to the IP header.
    pub fn with_ip_header(dialect: Dialect, mtu: usize, ip_header_len: usize) -> Self {
        // The header's length field is 16 bits; no packet may be longer.
        let budget = mtu.saturating_sub(ip_header_len).min(usize::from(u16::MAX));
        let mut buf = Vec::with_capacity(budget);
        buf.resize(header::SIZE, 0);
        PacketBuilder {
            dialect,
            budget,
            pfcksum: [0; 16],
            buf,
            run: None,
        }
    }

    /// Sets the header checksum field (FreeBSD: the sender's ruleset checksum).
    pub fn set_pfcksum(&mut self, pfcksum: [u8; 16]) {
        self.pfcksum = pfcksum;
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Bytes the MTU leaves for the pfsync payload.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// True when no message has been pushed since the last `finish`.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == header::SIZE
    }

    /// Payload length so far, trailer included.
    pub fn len(&self) -> usize {
        self.buf.len() + self.trailer_len()
    }

    fn trailer_len(&self) -> usize {
        if self.dialect.has_eof_trailer() {
            subheader::SIZE
        } else {
            0
        }
    }

    /// The action number `message` has in this dialect, or why it cannot be sent.
    fn admit(&self, message: &Message) -> core::result::Result<u8, BuildError> {
        let action = message.action();
        let dialect = self.dialect;
        let wrong_tdb = message
            .tdb_family()
            .is_some_and(|family| family != dialect.family());
        let number = match dialect.action_number(action) {
            Some(n) if !wrong_tdb => n,
            _ => {
                return Err(BuildError::NotInDialect {
                    dialect,
                    action: action.name(),
                })
            }
        };
        // A full DEL is refused by FreeBSD 14 and later, and a peer we send 1301 to may
        // be one of them; no kernel sends it anyway (DEL_C is what goes out).
        let del_to_freebsd =
            matches!(action, Action::Del(_)) && dialect.family() == Family::FreeBsd;
        if dialect.refuses(action) || del_to_freebsd {
            return Err(BuildError::Refused {
                dialect,
                action: action.name(),
            });
        }
        Ok(number)
    }

    /// Bytes `message` would add: its record, plus a subheader if it opens a run.
    fn cost(&self, number: u8, len: usize) -> usize {
        match self.run {
            Some((action, _, count)) if action == number && count < u16::MAX => len,
            _ => subheader::SIZE + len,
        }
    }

    /// Adds a message, or says the packet is full. Errors for messages this dialect's
    /// kernel would refuse, and leave the packet as it was.
    pub fn push(&mut self, message: &Message) -> core::result::Result<Pushed, BuildError> {
        let number = self.admit(message)?;
        let len = message.buffer_len();
        let smallest = header::SIZE + subheader::SIZE + len + self.trailer_len();
        if smallest > self.budget {
            return Err(BuildError::TooLarge {
                need: smallest,
                budget: self.budget,
            });
        }
        let cost = self.cost(number, len);
        if self.len() + cost > self.budget {
            return Ok(Pushed::Full);
        }
        let previous_run = self.run;
        if cost > len {
            let at = self.buf.len();
            self.buf.resize(at + subheader::SIZE, 0);
            self.run = Some((number, at, 0));
        }
        let at = self.buf.len();
        self.buf.resize(at + len, 0);
        message.emit_bytes(&mut self.buf[at..]);
        // Check what the receiver will read, and take the record back if it refuses it.
        if let Err(error) = check_record(self.dialect, message.action(), &self.buf[at..]) {
            self.buf
                .truncate(if cost > len { at - subheader::SIZE } else { at });
            if cost > len {
                self.run = previous_run;
            }
            return Err(BuildError::Invalid {
                dialect: self.dialect,
                error,
            });
        }
        if let Some((action, sub_at, count)) = self.run.as_mut() {
            *count += 1;
            SubheaderRepr {
                action: *action,
                len: self.dialect.subheader_len_byte(len),
                count: *count,
            }
            .emit_bytes(&mut self.buf[*sub_at..]);
        }
        Ok(Pushed::Added)
    }

    /// Ends the packet: writes the trailer and the header, returns the payload, and
    /// starts an empty one. `None` if nothing was pushed.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        if self.is_empty() {
            return None;
        }
        if self.dialect.has_eof_trailer() {
            let at = self.buf.len();
            self.buf.resize(at + subheader::SIZE, 0);
            let eof = self
                .dialect
                .action_number(Action::Eof)
                .expect("every FreeBSD dialect numbers EOF");
            SubheaderRepr {
                action: eof,
                len: 0,
                count: 1,
            }
            .emit_bytes(&mut self.buf[at..]);
        }
        let len = u16::try_from(self.buf.len()).expect("the budget keeps packets below 64 KiB");
        HeaderRepr {
            version: self.dialect.version(),
            len,
            pfcksum: self.pfcksum,
        }
        .emit_bytes(&mut self.buf);
        self.run = None;
        let mut fresh = Vec::with_capacity(self.budget);
        fresh.resize(header::SIZE, 0);
        Some(std::mem::replace(&mut self.buf, fresh))
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
