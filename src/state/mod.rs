//! The neutral state model: one pf state, typed and independent of the OS that sent it.
//!
//! Every state record format ([`RecordFormat`]) converts to a [`State`] and back, so a
//! state received from OpenBSD can be sent to FreeBSD and the other way round. Numbers
//! that differ between the kernels (`AF_INET6` 24/28, the `rt` route types, the state
//! flags each OS defines, the highest timeout index) are decoded into typed values here
//! and encoded again for the target, never kept as the sender's numbers.
//!
//! Decoding ([`State::from_record`]) fails only on values the typed model cannot hold; the
//! error maps to the kernel counter `badval`. It does not apply a receiver's limits (the
//! timeout bound of a dialect): that is [`StateRecord::check`]'s job, run first as the
//! kernel does.
//!
//! Encoding ([`State::to_record`]) always succeeds and reports, as a [`Lost`] set, the
//! fields the target format cannot carry. A field counts as lost only when converting the
//! record back gives a different value, so a default value (no routing table, no queue) is
//! never lost. [`lossy_fields`] lists what each format may lose.
//!
//! Rules that are choices of this model rather than facts of the wire:
//! - **Address families.** Each key has its own family. OpenBSD sends one per key (0 means
//!   "the state's"); FreeBSD 1301/1400 one for both keys; 1500 one per key.
//! - **Protocols.** Each key has its own protocol. Only 1500 sends both; OpenBSD derives the
//!   stack key's from the wire key's (ICMP and ICMPv6 swapped when the families differ, as
//!   af-to does); 1301/1400 use one for both keys.
//! - **Route address.** `rt_addr` is `None` when the record gives no route family and no
//!   route (1500: `rt_af` 0; other formats: `rt` none and an all-zero address). Formats
//!   without `rt_af` take the stack key's family for the address (the family after an
//!   af-to translation; the same as the wire key's otherwise).
//! - **Addresses of the wrong family.** Where a record has no room for a family (the
//!   stack key of 1301/1400, the route address of all but 1500), an address of another
//!   family than the receiver will assume is sent as zero rather than misread, and
//!   reported lost.
//! - **Routing tables.** [`State::rtableid`] is the table for packets in the direction that
//!   created the state: FreeBSD's single `rtableid`, and OpenBSD's `rtableid` slot that
//!   `pf_create_state` fills from the rule (the stack key's for inbound states, the wire
//!   key's for outbound ones). [`State::reply_rtableid`] is OpenBSD's other slot, which
//!   OpenBSD itself leaves at -1 ("return traffic is routed normally"); FreeBSD has no
//!   place for it. (FreeBSD applies its one table to both directions; the model does not
//!   try to express that difference.)
//! - **Timeouts** at or above the target dialect's `PFTM_MAX` (FreeBSD's SCTP classes, for
//!   OpenBSD and 1301 targets) are replaced by the generic protocol's class nearest in
//!   meaning, and reported lost as `timeout`: the receiver would count the record as
//!   `badval` otherwise.

pub mod compact;
pub mod compact_record;
mod freebsd_1301;
mod freebsd_1400;
mod freebsd_1500;
mod lost;
mod openbsd;

pub use lost::{lossy_fields, Lost, StateField};

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::msg::peer::SCRUB_FLAG_VALID;
use crate::wire::msg::{PeerRepr, StateRecord};
use crate::wire::{Counter, Dialect, Family, IfName, PfAddr, RecordFormat, RouteType, TagName};

/// An address family, as a type rather than the sender's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AddressFamily {
    /// IPv4 (`AF_INET`, 2 on both OSes).
    #[default]
    Inet,
    /// IPv6 (`AF_INET6`: 24 on OpenBSD, 28 on FreeBSD).
    Inet6,
}

impl AddressFamily {
    /// `AF_INET`, the same number on every BSD.
    pub const AF_INET: u8 = 2;

    /// The family a number means on the wire of `family`'s kernels.
    pub const fn from_wire(family: Family, number: u8) -> Option<AddressFamily> {
        if number == Self::AF_INET {
            Some(AddressFamily::Inet)
        } else if number == Self::af_inet6(family) {
            Some(AddressFamily::Inet6)
        } else {
            None
        }
    }

    /// The number `family`'s kernels give this address family.
    pub const fn to_wire(self, family: Family) -> u8 {
        match self {
            AddressFamily::Inet => Self::AF_INET,
            AddressFamily::Inet6 => Self::af_inet6(family),
        }
    }

    const fn af_inet6(family: Family) -> u8 {
        match family {
            Family::OpenBsd => Dialect::OpenBsd.af_inet6(),
            Family::FreeBsd => Dialect::FreeBsd1500.af_inet6(),
        }
    }

    /// The family of an address.
    pub const fn of(addr: &IpAddr) -> AddressFamily {
        match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        }
    }

    /// The all-zero address of this family.
    pub const fn unspecified(self) -> IpAddr {
        match self {
            AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }

    /// Reads a `pf_addr` as an address of this family (IPv4: its first 4 bytes).
    pub fn decode(self, addr: PfAddr) -> IpAddr {
        match self {
            AddressFamily::Inet => IpAddr::V4(addr.v4()),
            AddressFamily::Inet6 => IpAddr::V6(addr.v6()),
        }
    }
}

/// An IP protocol. Numbers without a named variant are `Other`; build values with
/// [`Protocol::from_number`] (or `From<u8>`) so that, say, 6 is always `Tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// ICMP (1).
    Icmp,
    /// TCP (6).
    #[default]
    Tcp,
    /// UDP (17).
    Udp,
    /// ICMPv6 (58).
    Icmpv6,
    /// SCTP (132).
    Sctp,
    /// Any other protocol number.
    Other(u8),
}

impl Protocol {
    /// The protocol a number means.
    pub const fn from_number(number: u8) -> Protocol {
        match number {
            1 => Protocol::Icmp,
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            58 => Protocol::Icmpv6,
            132 => Protocol::Sctp,
            n => Protocol::Other(n),
        }
    }

    /// The protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Icmp => 1,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmpv6 => 58,
            Protocol::Sctp => 132,
            Protocol::Other(n) => n,
        }
    }

    /// The protocol after an af-to translation: ICMP and ICMPv6 trade places, the rest
    /// stay. OpenBSD does not send the stack key's protocol and implies it this way.
    pub const fn across_families(self) -> Protocol {
        match self {
            Protocol::Icmp => Protocol::Icmpv6,
            Protocol::Icmpv6 => Protocol::Icmp,
            other => other,
        }
    }
}

impl From<u8> for Protocol {
    fn from(number: u8) -> Self {
        Protocol::from_number(number)
    }
}

impl From<Protocol> for u8 {
    fn from(p: Protocol) -> Self {
        p.number()
    }
}

/// The direction of the packet that created the state (`PF_INOUT`, `PF_IN`, `PF_OUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// 0: both (a rule's direction; kernels accept it in a state record).
    InOut,
    /// 1: inbound.
    #[default]
    In,
    /// 2: outbound.
    Out,
}

impl Direction {
    /// The direction a number means; `None` above 2.
    pub const fn from_number(number: u8) -> Option<Direction> {
        match number {
            0 => Some(Direction::InOut),
            1 => Some(Direction::In),
            2 => Some(Direction::Out),
            _ => None,
        }
    }

    /// The number on the wire (the same on both OSes).
    pub const fn number(self) -> u8 {
        match self {
            Direction::InOut => 0,
            Direction::In => 1,
            Direction::Out => 2,
        }
    }
}

/// A TCP peer's state: the BSD `TCPS_*` values, plus pf's two synproxy states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum TcpState {
    /// `TCPS_CLOSED` (0).
    #[default]
    Closed,
    /// `TCPS_LISTEN` (1).
    Listen,
    /// `TCPS_SYN_SENT` (2).
    SynSent,
    /// `TCPS_SYN_RECEIVED` (3).
    SynReceived,
    /// `TCPS_ESTABLISHED` (4).
    Established,
    /// `TCPS_CLOSE_WAIT` (5).
    CloseWait,
    /// `TCPS_FIN_WAIT_1` (6).
    FinWait1,
    /// `TCPS_CLOSING` (7).
    Closing,
    /// `TCPS_LAST_ACK` (8).
    LastAck,
    /// `TCPS_FIN_WAIT_2` (9).
    FinWait2,
    /// `TCPS_TIME_WAIT` (10).
    TimeWait,
    /// `PF_TCPS_PROXY_SRC` (11): synproxy talking to the client.
    ProxySrc,
    /// `PF_TCPS_PROXY_DST` (12): synproxy talking to the server.
    ProxyDst,
}

impl TcpState {
    /// Every state, in number order.
    pub const ALL: [TcpState; 13] = [
        TcpState::Closed,
        TcpState::Listen,
        TcpState::SynSent,
        TcpState::SynReceived,
        TcpState::Established,
        TcpState::CloseWait,
        TcpState::FinWait1,
        TcpState::Closing,
        TcpState::LastAck,
        TcpState::FinWait2,
        TcpState::TimeWait,
        TcpState::ProxySrc,
        TcpState::ProxyDst,
    ];

    /// The state a number means; `None` above 12.
    pub const fn from_number(number: u8) -> Option<TcpState> {
        if (number as usize) < Self::ALL.len() {
            Some(Self::ALL[number as usize])
        } else {
            None
        }
    }

    /// The number on the wire.
    pub const fn number(self) -> u8 {
        self as u8
    }
}

/// The state level of a non-TCP peer: 0 no traffic, 1 single, 2 multiple (`PFUDPS_*`,
/// `PFOTHERS_*`). FreeBSD keeps its SCTP states in the same byte with higher numbers; the
/// kernels accept anything up to 12, so this type does too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PeerLevel(u8);

impl PeerLevel {
    /// No packet seen from this peer.
    pub const NO_TRAFFIC: PeerLevel = PeerLevel(0);
    /// One packet seen.
    pub const SINGLE: PeerLevel = PeerLevel(1);
    /// More than one packet seen.
    pub const MULTIPLE: PeerLevel = PeerLevel(2);
    /// The highest level a kernel accepts (`PF_TCPS_PROXY_DST`).
    pub const MAX: u8 = crate::wire::msg::peer::STATE_MAX;

    /// A level; `None` above 12.
    pub const fn new(level: u8) -> Option<PeerLevel> {
        if level <= Self::MAX {
            Some(PeerLevel(level))
        } else {
            None
        }
    }

    /// The number on the wire.
    pub const fn get(self) -> u8 {
        self.0
    }
}

/// A peer's state: TCP states for TCP (by the wire key's protocol), levels otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// The peer of a TCP state.
    Tcp(TcpState),
    /// The peer of any other protocol's state.
    Level(PeerLevel),
}

impl Default for PeerState {
    fn default() -> Self {
        PeerState::Tcp(TcpState::Closed)
    }
}

impl PeerState {
    /// The state a wire number means for a state of protocol `proto`.
    pub const fn from_number(proto: Protocol, number: u8) -> Option<PeerState> {
        if matches!(proto, Protocol::Tcp) {
            match TcpState::from_number(number) {
                Some(s) => Some(PeerState::Tcp(s)),
                None => None,
            }
        } else {
            match PeerLevel::new(number) {
                Some(l) => Some(PeerState::Level(l)),
                None => None,
            }
        }
    }

    /// The number on the wire.
    pub const fn number(self) -> u8 {
        match self {
            PeerState::Tcp(s) => s.number(),
            PeerState::Level(l) => l.get(),
        }
    }
}

/// A peer's scrub data (sent only when the state scrubs, `scrub_flag` 0x01).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scrub {
    /// `pfss_flags` (only `PFSS_TIMESTAMP`, 0x0001, is sent).
    pub flags: u16,
    /// Stashed TTL.
    pub ttl: u8,
    /// Timestamp modulation; FreeBSD SCTP states keep the verification tag here.
    pub ts_mod: u32,
}

/// One side of a state (`pfsync_state_peer`), the same on every OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Peer {
    /// Highest sequence number sent.
    pub seqlo: u32,
    /// Highest the other end acknowledged plus its window.
    pub seqhi: u32,
    /// Sequence number modulator (0 if not modulated).
    pub seqdiff: u32,
    /// Largest window seen, unscaled.
    pub max_win: u16,
    /// MSS option.
    pub mss: u16,
    /// Low 4 bits: window scale shift; 0x80: scaling negotiated (`PF_WSCALE_FLAG`).
    pub wscale: u8,
    /// TCP state or level.
    pub state: PeerState,
    /// Scrub data, present iff the record's `scrub_flag` is 0x01.
    pub scrub: Option<Scrub>,
}

impl Peer {
    /// Decodes a peer of a state of protocol `proto` (the wire key's).
    pub fn from_repr(
        repr: &PeerRepr,
        proto: Protocol,
        field: &'static str,
    ) -> Result<Peer, StateError> {
        let state = PeerState::from_number(proto, repr.state).ok_or(StateError::PeerState {
            field,
            value: repr.state,
        })?;
        // Receivers ignore the scrub bytes unless the flag says they are valid.
        let scrub = (repr.scrub_flag == SCRUB_FLAG_VALID).then_some(Scrub {
            flags: repr.pfss_flags,
            ttl: repr.pfss_ttl,
            ts_mod: repr.pfss_ts_mod,
        });
        Ok(Peer {
            seqlo: repr.seqlo,
            seqhi: repr.seqhi,
            seqdiff: repr.seqdiff,
            max_win: repr.max_win,
            mss: repr.mss,
            wscale: repr.wscale,
            state,
            scrub,
        })
    }

    /// Encodes the peer (every format has the same one).
    pub fn to_repr(&self) -> PeerRepr {
        let scrub = self.scrub.unwrap_or_default();
        PeerRepr {
            pfss_flags: scrub.flags,
            pfss_ttl: scrub.ttl,
            scrub_flag: if self.scrub.is_some() {
                SCRUB_FLAG_VALID
            } else {
                0
            },
            pfss_ts_mod: scrub.ts_mod,
            seqlo: self.seqlo,
            seqhi: self.seqhi,
            seqdiff: self.seqdiff,
            max_win: self.max_win,
            mss: self.mss,
            state: self.state.number(),
            wscale: self.wscale,
        }
    }
}

/// A state's timeout class (`PFTM_*`), the index into the ruleset's timeout table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Timeout {
    /// 0 `tcp.first`.
    #[default]
    TcpFirst,
    /// 1 `tcp.opening`.
    TcpOpening,
    /// 2 `tcp.established`.
    TcpEstablished,
    /// 3 `tcp.closing`.
    TcpClosing,
    /// 4 `tcp.finwait`.
    TcpFinWait,
    /// 5 `tcp.closed`.
    TcpClosed,
    /// 6 `udp.first`.
    UdpFirst,
    /// 7 `udp.single`.
    UdpSingle,
    /// 8 `udp.multiple`.
    UdpMultiple,
    /// 9 `icmp.first`.
    IcmpFirst,
    /// 10 `icmp.error`.
    IcmpError,
    /// 11 `other.first`.
    OtherFirst,
    /// 12 `other.single`.
    OtherSingle,
    /// 13 `other.multiple`.
    OtherMultiple,
    /// 14 `frag`.
    Frag,
    /// 15 `interval`.
    Interval,
    /// 16 `adaptive.start`.
    AdaptiveStart,
    /// 17 `adaptive.end`.
    AdaptiveEnd,
    /// 18 `src.track`.
    SrcNode,
    /// 19 `ts.diff`.
    TsDiff,
    /// 20 `sctp.first` (FreeBSD 14+).
    SctpFirst,
    /// 21 `sctp.opening` (FreeBSD 14+).
    SctpOpening,
    /// 22 `sctp.established` (FreeBSD 14+).
    SctpEstablished,
    /// 23 `sctp.closing` (FreeBSD 14+).
    SctpClosing,
    /// 24 `sctp.closed` (FreeBSD 14+).
    SctpClosed,
}

impl Timeout {
    /// Every class, in number order.
    pub const ALL: [Timeout; 25] = [
        Timeout::TcpFirst,
        Timeout::TcpOpening,
        Timeout::TcpEstablished,
        Timeout::TcpClosing,
        Timeout::TcpFinWait,
        Timeout::TcpClosed,
        Timeout::UdpFirst,
        Timeout::UdpSingle,
        Timeout::UdpMultiple,
        Timeout::IcmpFirst,
        Timeout::IcmpError,
        Timeout::OtherFirst,
        Timeout::OtherSingle,
        Timeout::OtherMultiple,
        Timeout::Frag,
        Timeout::Interval,
        Timeout::AdaptiveStart,
        Timeout::AdaptiveEnd,
        Timeout::SrcNode,
        Timeout::TsDiff,
        Timeout::SctpFirst,
        Timeout::SctpOpening,
        Timeout::SctpEstablished,
        Timeout::SctpClosing,
        Timeout::SctpClosed,
    ];

    /// The class an index means; `None` for 25 and above (the kernels' `PFTM_PURGE` and
    /// `PFTM_UNLINKED` are internal and never valid in a record).
    pub const fn from_number(number: u8) -> Option<Timeout> {
        if (number as usize) < Self::ALL.len() {
            Some(Self::ALL[number as usize])
        } else {
            None
        }
    }

    /// The index on the wire.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// The class a kernel of `dialect` accepts: this one if below its `PFTM_MAX`, else the
    /// generic protocol's class nearest in meaning (only the SCTP classes are ever above).
    pub const fn carried_by(self, dialect: Dialect) -> Timeout {
        if self.number() < dialect.pftm_max() {
            return self;
        }
        // A kernel without SCTP tracking handles SCTP as an "other" protocol: the first
        // packet, a connection being set up or torn down (one direction active), and an
        // established association (both).
        match self {
            Timeout::SctpFirst => Timeout::OtherFirst,
            Timeout::SctpEstablished => Timeout::OtherMultiple,
            _ => Timeout::OtherSingle,
        }
    }
}

/// `PFSTATE_*` state flags, as a neutral set.
///
/// The two OSes agree on 0x0001–0x0200 and otherwise use bits the other leaves free
/// (OpenBSD 0x0400 INP_UNLINKED; FreeBSD 0x4000/0x8000 for dummynet), so the neutral bits
/// are the wire bits. Decoding keeps only the bits the sender's OS defines; encoding
/// writes only the bits the target's OS defines (and 1301 only the low 8).
///
/// 0x0004 PFLOW is carried for both: the spec lists it as unused on FreeBSD, which is
/// true of FreeBSD 13 and 14.0, but FreeBSD's pflow port defines it again, and a kernel
/// that does not know it ignores it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StateFlags(u16);

impl StateFlags {
    /// No flag.
    pub const EMPTY: StateFlags = StateFlags(0);
    /// `PFSTATE_ALLOWOPTS`: IP options allowed.
    pub const ALLOWOPTS: StateFlags = StateFlags(0x0001);
    /// `PFSTATE_SLOPPY`: sloppy TCP tracking.
    pub const SLOPPY: StateFlags = StateFlags(0x0002);
    /// `PFSTATE_PFLOW`: export to pflow.
    pub const PFLOW: StateFlags = StateFlags(0x0004);
    /// `PFSTATE_NOSYNC`: not synced (meaningless on the wire).
    pub const NOSYNC: StateFlags = StateFlags(0x0008);
    /// `PFSTATE_ACK`: in an INS, the sender defers a packet and wants an INS_ACK.
    pub const ACK: StateFlags = StateFlags(0x0010);
    /// `PFSTATE_NODF`: clear the don't-fragment bit.
    pub const NODF: StateFlags = StateFlags(0x0020);
    /// `PFSTATE_SETTOS`: rewrite the TOS (`set_tos`).
    pub const SETTOS: StateFlags = StateFlags(0x0040);
    /// `PFSTATE_RANDOMID`: randomize the IP id.
    pub const RANDOMID: StateFlags = StateFlags(0x0080);
    /// `PFSTATE_SCRUB_TCP`: TCP normalization (`reassemble tcp`).
    pub const SCRUB_TCP: StateFlags = StateFlags(0x0100);
    /// `PFSTATE_SETPRIO`: set the priority (`set_prio`).
    pub const SETPRIO: StateFlags = StateFlags(0x0200);
    /// OpenBSD `PFSTATE_INP_UNLINKED`: the socket link was dropped.
    pub const INP_UNLINKED: StateFlags = StateFlags(0x0400);
    /// FreeBSD `PFSTATE_DN_IS_PIPE`: `dnpipe` is a dummynet pipe.
    pub const DN_IS_PIPE: StateFlags = StateFlags(0x4000);
    /// FreeBSD `PFSTATE_DN_IS_QUEUE`: `dnpipe` is a dummynet queue.
    pub const DN_IS_QUEUE: StateFlags = StateFlags(0x8000);

    /// The flags OpenBSD defines.
    pub const OPENBSD: StateFlags = StateFlags(0x07ff);
    /// The flags FreeBSD defines.
    pub const FREEBSD: StateFlags = StateFlags(0x03ff | 0xc000);
    /// Every flag either OS defines.
    pub const ALL: StateFlags = StateFlags(Self::OPENBSD.0 | Self::FREEBSD.0);

    const NAMES: [(StateFlags, &'static str); 13] = [
        (Self::ALLOWOPTS, "ALLOWOPTS"),
        (Self::SLOPPY, "SLOPPY"),
        (Self::PFLOW, "PFLOW"),
        (Self::NOSYNC, "NOSYNC"),
        (Self::ACK, "ACK"),
        (Self::NODF, "NODF"),
        (Self::SETTOS, "SETTOS"),
        (Self::RANDOMID, "RANDOMID"),
        (Self::SCRUB_TCP, "SCRUB_TCP"),
        (Self::SETPRIO, "SETPRIO"),
        (Self::INP_UNLINKED, "INP_UNLINKED"),
        (Self::DN_IS_PIPE, "DN_IS_PIPE"),
        (Self::DN_IS_QUEUE, "DN_IS_QUEUE"),
    ];

    /// The flags `family`'s kernels define.
    pub const fn defined_by(family: Family) -> StateFlags {
        match family {
            Family::OpenBsd => Self::OPENBSD,
            Family::FreeBsd => Self::FREEBSD,
        }
    }

    /// Decodes a wire value of `family`, dropping bits that OS does not define.
    pub const fn from_wire(family: Family, bits: u16) -> StateFlags {
        StateFlags(bits & Self::defined_by(family).0)
    }

    /// Encodes for `family`, dropping flags that OS does not define.
    pub const fn to_wire(self, family: Family) -> u16 {
        self.0 & Self::defined_by(family).0
    }

    /// Builds a set from neutral bits, dropping bits no OS defines.
    pub const fn from_bits_truncate(bits: u16) -> StateFlags {
        StateFlags(bits & Self::ALL.0)
    }

    /// The neutral bits.
    /// Flags from raw bits, kept as they are (for our own storage; wire input goes
    /// through [`from_wire`](Self::from_wire)).
    pub const fn from_bits(bits: u16) -> StateFlags {
        StateFlags(bits)
    }

    pub const fn bits(self) -> u16 {
        self.0
    }

    /// True when no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when every flag of `other` is set.
    pub const fn contains(self, other: StateFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Sets the flags of `other`.
    pub fn insert(&mut self, other: StateFlags) {
        self.0 |= other.0;
    }

    /// Clears the flags of `other`.
    pub fn remove(&mut self, other: StateFlags) {
        self.0 &= !other.0;
    }
}

impl core::ops::BitOr for StateFlags {
    type Output = StateFlags;
    fn bitor(self, rhs: StateFlags) -> StateFlags {
        StateFlags(self.0 | rhs.0)
    }
}

impl core::ops::BitAnd for StateFlags {
    type Output = StateFlags;
    fn bitand(self, rhs: StateFlags) -> StateFlags {
        StateFlags(self.0 & rhs.0)
    }
}

impl fmt::Debug for StateFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut set = f.debug_set();
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                set.entry(&format_args!("{name}"));
            }
        }
        set.finish()
    }
}

/// A state key: the connection as seen on the wire, or as seen by the stack after
/// translation (NAT, rdr, af-to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateKey {
    /// Address family; the addresses are of this family.
    pub af: AddressFamily,
    /// IP protocol.
    pub proto: Protocol,
    /// Addresses; index 0 is the packet source for an inbound state, the (remote)
    /// destination for an outbound one.
    pub addr: [IpAddr; 2],
    /// Ports (ICMP: the id), in the same order.
    pub port: [u16; 2],
    /// OpenBSD routing domain; FreeBSD has none (0).
    pub rdomain: u16,
}

impl Default for StateKey {
    fn default() -> Self {
        StateKey {
            af: AddressFamily::Inet,
            proto: Protocol::default(),
            addr: [AddressFamily::Inet.unspecified(); 2],
            port: [0; 2],
            rdomain: 0,
        }
    }
}

/// One pf state, independent of the OS and record format it came in.
///
/// `Default` gives an all-zero IPv4 TCP state with no rule and no routing table, as a
/// base for struct update syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct State {
    /// State id (opaque).
    pub id: u64,
    /// Host id of the state's creator.
    pub creatorid: u32,
    /// Interface, "all" for floating states.
    pub ifname: IfName,
    /// FreeBSD 15: the real interface of a floating state; empty when unknown.
    pub orig_ifname: IfName,
    /// The key as on the wire (`key[0]`).
    pub wire: StateKey,
    /// The key as the stack sees it (`key[1]`).
    pub stack: StateKey,
    /// The side that opened the connection.
    pub src: Peer,
    /// The other side.
    pub dst: Peer,
    /// Direction of the packet that created the state.
    pub direction: Direction,
    /// Policy routing (`route-to`, `reply-to`, `dup-to`).
    pub rt: RouteType,
    /// Next hop of the policy route, with its family (`rt_af`); `None` when neither is
    /// given (see the module documentation).
    pub rt_addr: Option<IpAddr>,
    /// FreeBSD 14+: the policy route's interface; empty when not given.
    pub rt_ifname: IfName,
    /// Rule number; `None` is 0xffffffff.
    pub rule: Option<u32>,
    /// Anchor rule number.
    pub anchor: Option<u32>,
    /// NAT rule number (OpenBSD always sends none).
    pub nat_rule: Option<u32>,
    /// Age in seconds (`creation` on the wire).
    pub age_secs: u32,
    /// Seconds until expiry (`expire`); 0 if already due.
    pub expire_secs: u32,
    /// Packets [forward, reply].
    pub packets: [u64; 2],
    /// Bytes [forward, reply].
    pub bytes: [u64; 2],
    /// `PF_LOG*` bits.
    pub log: u8,
    /// `PFSTATE_*` flags.
    pub state_flags: StateFlags,
    /// Timeout class.
    pub timeout: Timeout,
    /// `PFSYNC_FLAG_*` (0x04 source node, 0x08 NAT source node); receivers ignore them.
    pub sync_flags: u8,
    /// Routing table (FreeBSD: FIB) of the state's forward direction; `None` is -1, the
    /// default.
    pub rtableid: Option<u32>,
    /// OpenBSD: routing table of the return traffic; `None` (-1) as OpenBSD creates it.
    pub reply_rtableid: Option<u32>,
    /// FreeBSD: ALTQ queue id.
    pub qid: u16,
    /// FreeBSD: ALTQ priority queue id.
    pub pqid: u16,
    /// FreeBSD: dummynet pipe or queue.
    pub dnpipe: u16,
    /// FreeBSD: dummynet reverse pipe or queue.
    pub dnrpipe: u16,
    /// `min-ttl`.
    pub min_ttl: u8,
    /// `set-tos`.
    pub set_tos: u8,
    /// `max-mss`.
    pub max_mss: u16,
    /// `set-prio` [normal, low-delay].
    pub set_prio: [u8; 2],
    /// FreeBSD 15: pf tag name; empty when untagged.
    pub tagname: TagName,
}

impl Default for State {
    fn default() -> Self {
        State {
            id: 0,
            creatorid: 0,
            ifname: IfName::EMPTY,
            orig_ifname: IfName::EMPTY,
            wire: StateKey::default(),
            stack: StateKey::default(),
            src: Peer::default(),
            dst: Peer::default(),
            direction: Direction::default(),
            rt: RouteType::None,
            rt_addr: None,
            rt_ifname: IfName::EMPTY,
            rule: None,
            anchor: None,
            nat_rule: None,
            age_secs: 0,
            expire_secs: 0,
            packets: [0; 2],
            bytes: [0; 2],
            log: 0,
            state_flags: StateFlags::EMPTY,
            timeout: Timeout::default(),
            sync_flags: 0,
            rtableid: None,
            reply_rtableid: None,
            qid: 0,
            pqid: 0,
            dnpipe: 0,
            dnrpipe: 0,
            min_ttl: 0,
            set_tos: 0,
            max_mss: 0,
            set_prio: [0; 2],
            tagname: TagName::EMPTY,
        }
    }
}

/// A record value the typed model cannot hold. The kernels count such records (where
/// they check them at all) as `badval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Neither `AF_INET` nor the sender's `AF_INET6`.
    #[error("{field}: address family {value} is neither AF_INET nor the sender's AF_INET6")]
    AddressFamily { field: &'static str, value: u8 },
    /// A direction above 2.
    #[error("direction {0} is not 0 (in/out), 1 (in) or 2 (out)")]
    Direction(u8),
    /// A peer state above `PF_TCPS_PROXY_DST` (12).
    #[error("{field}: peer state {value} is above 12")]
    PeerState { field: &'static str, value: u8 },
    /// A timeout index that is no `PFTM_*` class of any kernel.
    #[error("timeout index {0} is no PFTM_* class")]
    Timeout(u8),
    /// A route type the sender's OS does not define.
    #[error("route type {value} is not defined in the {family:?} numbering")]
    RouteType { family: Family, value: u8 },
    /// A routing table below -1.
    #[error("rtableid {0} is neither -1 nor a table number")]
    Rtableid(i32),
}

impl StateError {
    /// The kernel counter a record refused for this reason is counted in.
    pub fn counter(&self) -> Counter {
        Counter::Badval
    }

    /// The record field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            StateError::AddressFamily { field, .. } | StateError::PeerState { field, .. } => field,
            StateError::Direction(_) => "direction",
            StateError::Timeout(_) => "timeout",
            StateError::RouteType { .. } => "rt",
            StateError::Rtableid(_) => "rtableid",
        }
    }

    /// The offending value, as the wire error carries it.
    pub fn value(&self) -> u32 {
        match *self {
            StateError::AddressFamily { value, .. } | StateError::PeerState { value, .. } => {
                value.into()
            }
            StateError::Direction(v) | StateError::Timeout(v) => v.into(),
            StateError::RouteType { value, .. } => value.into(),
            // The wire error holds a u32; a negative table keeps its bit pattern.
            StateError::Rtableid(v) => v as u32,
        }
    }
}

impl From<StateError> for crate::wire::Error {
    fn from(e: StateError) -> Self {
        crate::wire::Error::BadValue {
            field: e.field(),
            value: e.value(),
        }
    }
}

impl State {
    /// Decodes a record of any format.
    pub fn from_record(record: &StateRecord) -> Result<State, StateError> {
        match record {
            StateRecord::OpenBsd(r) => State::from_openbsd(r),
            StateRecord::FreeBsd1301(r) => State::from_freebsd_1301(r),
            StateRecord::FreeBsd1400(r) => State::from_freebsd_1400(r),
            StateRecord::FreeBsd1500(r) => State::from_freebsd_1500(r),
        }
    }

    /// Encodes as a record of `format`, with the fields that format could not carry.
    pub fn to_record(&self, format: RecordFormat) -> (StateRecord, Lost) {
        match format {
            RecordFormat::OpenBsd => {
                let (r, lost) = self.to_openbsd();
                (StateRecord::OpenBsd(r), lost)
            }
            RecordFormat::FreeBsd1301 => {
                let (r, lost) = self.to_freebsd_1301();
                (StateRecord::FreeBsd1301(r), lost)
            }
            RecordFormat::FreeBsd1400 => {
                let (r, lost) = self.to_freebsd_1400();
                (StateRecord::FreeBsd1400(r), lost)
            }
            RecordFormat::FreeBsd1500 => {
                let (r, lost) = self.to_freebsd_1500();
                (StateRecord::FreeBsd1500(r), lost)
            }
        }
    }

    /// The fields in which `other` differs from `self`, named as [`Lost`] names them.
    pub fn diff(&self, other: &State) -> Lost {
        use StateField as F;
        let mut d = Lost::EMPTY;
        let mut mark = |field: StateField, differs: bool| {
            if differs {
                d.insert(field);
            }
        };
        let (a, b) = (self, other);
        mark(F::Id, a.id != b.id);
        mark(F::Creatorid, a.creatorid != b.creatorid);
        mark(F::Ifname, a.ifname != b.ifname);
        mark(F::OrigIfname, a.orig_ifname != b.orig_ifname);
        mark(F::WireAf, a.wire.af != b.wire.af);
        mark(F::WireProto, a.wire.proto != b.wire.proto);
        mark(
            F::WireKey,
            a.wire.addr != b.wire.addr || a.wire.port != b.wire.port,
        );
        mark(F::StackAf, a.stack.af != b.stack.af);
        mark(F::StackProto, a.stack.proto != b.stack.proto);
        mark(
            F::StackKey,
            a.stack.addr != b.stack.addr || a.stack.port != b.stack.port,
        );
        mark(
            F::Rdomain,
            a.wire.rdomain != b.wire.rdomain || a.stack.rdomain != b.stack.rdomain,
        );
        mark(F::Src, a.src != b.src);
        mark(F::Dst, a.dst != b.dst);
        mark(F::Direction, a.direction != b.direction);
        mark(F::Rt, a.rt != b.rt);
        // One neutral field, two wire fields: the family is rt_af, the bytes rt_addr.
        let family = |x: &Option<IpAddr>| x.as_ref().map(AddressFamily::of);
        let bytes = |x: &Option<IpAddr>| x.map(PfAddr::from_ip).unwrap_or(PfAddr::ZERO);
        mark(F::RtAf, family(&a.rt_addr) != family(&b.rt_addr));
        mark(F::RtAddr, bytes(&a.rt_addr) != bytes(&b.rt_addr));
        mark(F::RtIfname, a.rt_ifname != b.rt_ifname);
        mark(F::Rule, a.rule != b.rule);
        mark(F::Anchor, a.anchor != b.anchor);
        mark(F::NatRule, a.nat_rule != b.nat_rule);
        mark(F::Creation, a.age_secs != b.age_secs);
        mark(F::Expire, a.expire_secs != b.expire_secs);
        mark(F::Packets, a.packets != b.packets);
        mark(F::Bytes, a.bytes != b.bytes);
        mark(F::Log, a.log != b.log);
        mark(F::StateFlags, a.state_flags != b.state_flags);
        mark(F::Timeout, a.timeout != b.timeout);
        mark(F::SyncFlags, a.sync_flags != b.sync_flags);
        mark(
            F::Rtableid,
            a.rtableid != b.rtableid || a.reply_rtableid != b.reply_rtableid,
        );
        mark(F::Qid, a.qid != b.qid);
        mark(F::Pqid, a.pqid != b.pqid);
        mark(F::Dnpipe, a.dnpipe != b.dnpipe);
        mark(F::Dnrpipe, a.dnrpipe != b.dnrpipe);
        mark(F::MinTtl, a.min_ttl != b.min_ttl);
        mark(F::SetTos, a.set_tos != b.set_tos);
        mark(F::MaxMss, a.max_mss != b.max_mss);
        mark(F::SetPrio, a.set_prio != b.set_prio);
        mark(F::Tagname, a.tagname != b.tagname);
        d
    }

    /// Copies the named fields from `from`. With the [`Lost`] of a conversion, this puts
    /// back what a narrower format could not carry, e.g. from the local copy of a state
    /// when a 1301 update arrives for it. `rt_addr` and `rt_af` name one neutral field,
    /// as do the two routing tables (`rtableid`) and the two keys' `rdomain`.
    pub fn take_fields(&mut self, from: &State, fields: Lost) {
        use StateField as F;
        for field in fields.iter() {
            match field {
                F::Id => self.id = from.id,
                F::Creatorid => self.creatorid = from.creatorid,
                F::Ifname => self.ifname = from.ifname,
                F::OrigIfname => self.orig_ifname = from.orig_ifname,
                F::WireAf => self.wire.af = from.wire.af,
                F::WireProto => self.wire.proto = from.wire.proto,
                F::WireKey => {
                    self.wire.addr = from.wire.addr;
                    self.wire.port = from.wire.port;
                }
                F::StackAf => self.stack.af = from.stack.af,
                F::StackProto => self.stack.proto = from.stack.proto,
                F::StackKey => {
                    self.stack.addr = from.stack.addr;
                    self.stack.port = from.stack.port;
                }
                F::Rdomain => {
                    self.wire.rdomain = from.wire.rdomain;
                    self.stack.rdomain = from.stack.rdomain;
                }
                F::Src => self.src = from.src,
                F::Dst => self.dst = from.dst,
                F::Direction => self.direction = from.direction,
                F::Rt => self.rt = from.rt,
                F::RtAddr | F::RtAf => self.rt_addr = from.rt_addr,
                F::RtIfname => self.rt_ifname = from.rt_ifname,
                F::Rule => self.rule = from.rule,
                F::Anchor => self.anchor = from.anchor,
                F::NatRule => self.nat_rule = from.nat_rule,
                F::Creation => self.age_secs = from.age_secs,
                F::Expire => self.expire_secs = from.expire_secs,
                F::Packets => self.packets = from.packets,
                F::Bytes => self.bytes = from.bytes,
                F::Log => self.log = from.log,
                F::StateFlags => self.state_flags = from.state_flags,
                F::Timeout => self.timeout = from.timeout,
                F::SyncFlags => self.sync_flags = from.sync_flags,
                F::Rtableid => {
                    self.rtableid = from.rtableid;
                    self.reply_rtableid = from.reply_rtableid;
                }
                F::Qid => self.qid = from.qid,
                F::Pqid => self.pqid = from.pqid,
                F::Dnpipe => self.dnpipe = from.dnpipe,
                F::Dnrpipe => self.dnrpipe = from.dnrpipe,
                F::MinTtl => self.min_ttl = from.min_ttl,
                F::SetTos => self.set_tos = from.set_tos,
                F::MaxMss => self.max_mss = from.max_mss,
                F::SetPrio => self.set_prio = from.set_prio,
                F::Tagname => self.tagname = from.tagname,
            }
        }
    }

    /// What a record built from `self` loses: the fields in which decoding it differs.
    /// A record that does not decode (no encoder produces one) loses everything.
    fn lost_through(&self, decoded: Result<State, StateError>) -> Lost {
        match decoded {
            Ok(back) => self.diff(&back),
            Err(_) => Lost::ALL,
        }
    }
}

// Helpers shared by the per-format conversions.

/// A rule number: 0xffffffff is "none".
fn rule_from_wire(n: u32) -> Option<u32> {
    (n != u32::MAX).then_some(n)
}

fn rule_to_wire(n: Option<u32>) -> u32 {
    n.unwrap_or(u32::MAX)
}

/// A routing table: -1 is the default; anything lower is no table.
fn rtable_from_wire(n: i32) -> Result<Option<u32>, StateError> {
    match n {
        -1 => Ok(None),
        n if n >= 0 => Ok(Some(n as u32)),
        n => Err(StateError::Rtableid(n)),
    }
}

/// A table beyond `i32::MAX` has no wire form; it goes as the default and the round trip
/// reports it lost.
fn rtable_to_wire(n: Option<u32>) -> i32 {
    n.and_then(|n| i32::try_from(n).ok()).unwrap_or(-1)
}

fn af_from_wire(family: Family, field: &'static str, n: u8) -> Result<AddressFamily, StateError> {
    AddressFamily::from_wire(family, n).ok_or(StateError::AddressFamily { field, value: n })
}

fn direction_from_wire(n: u8) -> Result<Direction, StateError> {
    Direction::from_number(n).ok_or(StateError::Direction(n))
}

fn timeout_from_wire(n: u8) -> Result<Timeout, StateError> {
    Timeout::from_number(n).ok_or(StateError::Timeout(n))
}

fn rt_from_wire(family: Family, n: u8) -> Result<RouteType, StateError> {
    let dialect = match family {
        Family::OpenBsd => Dialect::OpenBsd,
        Family::FreeBsd => Dialect::FreeBsd1500,
    };
    dialect
        .rt_type(n)
        .ok_or(StateError::RouteType { family, value: n })
}

/// The `rt` number of `family`; a route type the OS lacks goes as none (the round trip
/// reports it lost).
fn rt_to_wire(family: Family, rt: RouteType) -> u8 {
    let dialect = match family {
        Family::OpenBsd => Dialect::OpenBsd,
        Family::FreeBsd => Dialect::FreeBsd1500,
    };
    dialect.rt_number(rt).unwrap_or(0)
}

/// The route address of a record without a route family (all but 1500). The family is
/// assumed to be the stack key's, the family the packet is routed in after an af-to
/// translation (the only case where the keys' families differ); a record with neither a
/// route type nor an address has no route address.
fn rt_addr_from_wire(assumed_af: AddressFamily, rt: RouteType, addr: PfAddr) -> Option<IpAddr> {
    if rt == RouteType::None && addr.is_zero() {
        None
    } else {
        Some(assumed_af.decode(addr))
    }
}

/// An address for a slot whose family the receiver assumes to be `af`. An address of the
/// other family would be misread there, so it goes as zero (and the round trip reports
/// it lost).
fn addr_in_family(af: AddressFamily, addr: Option<IpAddr>) -> PfAddr {
    match addr {
        Some(a) if AddressFamily::of(&a) == af => PfAddr::from_ip(a),
        _ => PfAddr::ZERO,
    }
}

/// A route address where the record gives its family (1500).
fn rt_addr_to_wire(addr: Option<IpAddr>) -> PfAddr {
    addr.map(PfAddr::from_ip).unwrap_or(PfAddr::ZERO)
}

#[cfg(test)]
mod test;
