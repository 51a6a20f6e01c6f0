//! The fields of a [`State`](super::State), by name, and the set of those a conversion
//! lost.

use core::fmt;

use crate::wire::RecordFormat;

/// A field of the neutral state, named after the kernel record field it travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateField {
    /// `id`.
    Id,
    /// `creatorid`.
    Creatorid,
    /// `ifname`.
    Ifname,
    /// `orig_ifname` (1500).
    OrigIfname,
    /// `wire_af`: the wire key's family (`af` where there is one family).
    WireAf,
    /// `wire_proto`: the wire key's protocol (`proto` where there is one).
    WireProto,
    /// `key[0]` addresses and ports.
    WireKey,
    /// `stack_af`: the stack key's family.
    StackAf,
    /// `stack_proto`: the stack key's protocol.
    StackProto,
    /// `key[1]` addresses and ports.
    StackKey,
    /// `key[].rdomain` (OpenBSD).
    Rdomain,
    /// `src` peer.
    Src,
    /// `dst` peer.
    Dst,
    /// `direction`.
    Direction,
    /// `rt`: the route type.
    Rt,
    /// `rt_addr`: the route's next hop.
    RtAddr,
    /// `rt_af`: the next hop's family.
    RtAf,
    /// `rt_ifname`.
    RtIfname,
    /// `rule`.
    Rule,
    /// `anchor`.
    Anchor,
    /// `nat_rule`.
    NatRule,
    /// `creation` (the age).
    Creation,
    /// `expire`.
    Expire,
    /// `packets`.
    Packets,
    /// `bytes`.
    Bytes,
    /// `log`.
    Log,
    /// `state_flags`.
    StateFlags,
    /// `timeout`.
    Timeout,
    /// `sync_flags`.
    SyncFlags,
    /// `rtableid` (both OpenBSD slots).
    Rtableid,
    /// `qid`.
    Qid,
    /// `pqid`.
    Pqid,
    /// `dnpipe`.
    Dnpipe,
    /// `dnrpipe`.
    Dnrpipe,
    /// `min_ttl`.
    MinTtl,
    /// `set_tos`.
    SetTos,
    /// `max_mss`.
    MaxMss,
    /// `set_prio`.
    SetPrio,
    /// `tagname`.
    Tagname,
}

impl StateField {
    /// Every field, in the order [`Lost`] lists them.
    pub const ALL: [StateField; 39] = [
        StateField::Id,
        StateField::Creatorid,
        StateField::Ifname,
        StateField::OrigIfname,
        StateField::WireAf,
        StateField::WireProto,
        StateField::WireKey,
        StateField::StackAf,
        StateField::StackProto,
        StateField::StackKey,
        StateField::Rdomain,
        StateField::Src,
        StateField::Dst,
        StateField::Direction,
        StateField::Rt,
        StateField::RtAddr,
        StateField::RtAf,
        StateField::RtIfname,
        StateField::Rule,
        StateField::Anchor,
        StateField::NatRule,
        StateField::Creation,
        StateField::Expire,
        StateField::Packets,
        StateField::Bytes,
        StateField::Log,
        StateField::StateFlags,
        StateField::Timeout,
        StateField::SyncFlags,
        StateField::Rtableid,
        StateField::Qid,
        StateField::Pqid,
        StateField::Dnpipe,
        StateField::Dnrpipe,
        StateField::MinTtl,
        StateField::SetTos,
        StateField::MaxMss,
        StateField::SetPrio,
        StateField::Tagname,
    ];

    /// The kernel-style name.
    pub const fn name(self) -> &'static str {
        match self {
            StateField::Id => "id",
            StateField::Creatorid => "creatorid",
            StateField::Ifname => "ifname",
            StateField::OrigIfname => "orig_ifname",
            StateField::WireAf => "wire_af",
            StateField::WireProto => "wire_proto",
            StateField::WireKey => "wire_key",
            StateField::StackAf => "stack_af",
            StateField::StackProto => "stack_proto",
            StateField::StackKey => "stack_key",
            StateField::Rdomain => "rdomain",
            StateField::Src => "src",
            StateField::Dst => "dst",
            StateField::Direction => "direction",
            StateField::Rt => "rt",
            StateField::RtAddr => "rt_addr",
            StateField::RtAf => "rt_af",
            StateField::RtIfname => "rt_ifname",
            StateField::Rule => "rule",
            StateField::Anchor => "anchor",
            StateField::NatRule => "nat_rule",
            StateField::Creation => "creation",
            StateField::Expire => "expire",
            StateField::Packets => "packets",
            StateField::Bytes => "bytes",
            StateField::Log => "log",
            StateField::StateFlags => "state_flags",
            StateField::Timeout => "timeout",
            StateField::SyncFlags => "sync_flags",
            StateField::Rtableid => "rtableid",
            StateField::Qid => "qid",
            StateField::Pqid => "pqid",
            StateField::Dnpipe => "dnpipe",
            StateField::Dnrpipe => "dnrpipe",
            StateField::MinTtl => "min_ttl",
            StateField::SetTos => "set_tos",
            StateField::MaxMss => "max_mss",
            StateField::SetPrio => "set_prio",
            StateField::Tagname => "tagname",
        }
    }

    const fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

impl fmt::Display for StateField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`StateField`]s: those a conversion could not carry. `Display` lists their
/// names, comma-separated ("rtableid, qid"); the empty set displays as "none".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lost(u64);

impl Lost {
    /// No field.
    pub const EMPTY: Lost = Lost(0);
    /// Every field.
    pub const ALL: Lost = Lost::of(&StateField::ALL);

    /// The set of the given fields.
    pub const fn of(fields: &[StateField]) -> Lost {
        let mut bits = 0;
        let mut i = 0;
        while i < fields.len() {
            bits |= fields[i].bit();
            i += 1;
        }
        Lost(bits)
    }

    /// True when nothing was lost.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The number of fields.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// True when `field` is in the set.
    pub const fn contains(self, field: StateField) -> bool {
        self.0 & field.bit() != 0
    }

    /// True when every field of `self` is in `other`.
    pub const fn is_subset(self, other: Lost) -> bool {
        self.0 & !other.0 == 0
    }

    /// Adds a field.
    pub fn insert(&mut self, field: StateField) {
        self.0 |= field.bit();
    }

    /// Removes a field.
    pub fn remove(&mut self, field: StateField) {
        self.0 &= !field.bit();
    }

    /// The fields of both sets.
    pub const fn union(self, other: Lost) -> Lost {
        Lost(self.0 | other.0)
    }

    /// The fields of `self` not in `other`.
    pub const fn difference(self, other: Lost) -> Lost {
        Lost(self.0 & !other.0)
    }

    /// The fields, in [`StateField::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = StateField> {
        StateField::ALL
            .into_iter()
            .filter(move |f| self.contains(*f))
    }
}

impl From<StateField> for Lost {
    fn from(field: StateField) -> Self {
        Lost(field.bit())
    }
}

impl FromIterator<StateField> for Lost {
    fn from_iter<I: IntoIterator<Item = StateField>>(iter: I) -> Self {
        let mut set = Lost::EMPTY;
        for f in iter {
            set.insert(f);
        }
        set
    }
}

impl core::ops::BitOr for Lost {
    type Output = Lost;
    fn bitor(self, rhs: Lost) -> Lost {
        self.union(rhs)
    }
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, field) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(field.name())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lost({self})")
    }
}

/// The fields a conversion to `format` may lose, for a state whose values are canonical:
/// rule numbers below 0xffffffff, routing tables below 2^31, addresses of their key's
/// family, peer states of their protocol's kind, protocols built with
/// `Protocol::from_number`. Every other field always survives.
///
/// - OpenBSD: no `orig_ifname`, `rt_ifname`, `tagname`, ALTQ or dummynet; no `rt_af` (the
///   wire family is assumed); no fastroute `rt`; the stack protocol is implied; no
///   FreeBSD flags; no SCTP timeouts.
/// - 1301: one family and protocol for both keys (so no af-to), nothing of OpenBSD's
///   `rdomain`, and none of the routing, queueing and rewriting fields; 8 bits of flags;
///   no SCTP timeouts (a FreeBSD 13 receiver may get it).
/// - 1400: one family and protocol for both keys, no `rt_af`, `tagname`, `orig_ifname`,
///   `rdomain`, OpenBSD flags, nor OpenBSD's reply routing table.
/// - 1500: no `rdomain`, OpenBSD flags, nor OpenBSD's reply routing table; and, unlike
///   every other format, no `sync_flags` (which receivers ignore).
pub const fn lossy_fields(format: RecordFormat) -> Lost {
    use StateField as F;
    match format {
        RecordFormat::OpenBsd => Lost::of(&[
            F::OrigIfname,
            F::StackProto,
            F::Rt,
            F::RtAddr,
            F::RtAf,
            F::RtIfname,
            F::StateFlags,
            F::Timeout,
            F::Qid,
            F::Pqid,
            F::Dnpipe,
            F::Dnrpipe,
            F::Tagname,
        ]),
        RecordFormat::FreeBsd1301 => Lost::of(&[
            F::OrigIfname,
            F::StackAf,
            F::StackProto,
            F::StackKey,
            F::Rdomain,
            F::Rt,
            F::RtAddr,
            F::RtAf,
            F::RtIfname,
            F::StateFlags,
            F::Timeout,
            F::Rtableid,
            F::Qid,
            F::Pqid,
            F::Dnpipe,
            F::Dnrpipe,
            F::MinTtl,
            F::SetTos,
            F::MaxMss,
            F::SetPrio,
            F::Tagname,
        ]),
        RecordFormat::FreeBsd1400 => Lost::of(&[
            F::OrigIfname,
            F::StackAf,
            F::StackProto,
            F::StackKey,
            F::Rdomain,
            F::RtAddr,
            F::RtAf,
            F::StateFlags,
            F::Rtableid,
            F::Tagname,
        ]),
        RecordFormat::FreeBsd1500 => {
            Lost::of(&[F::Rdomain, F::StateFlags, F::SyncFlags, F::Rtableid])
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn names_are_listed_in_field_order() {
        let lost: Lost = [StateField::Qid, StateField::Rtableid]
            .into_iter()
            .collect();
        assert_eq!(lost.to_string(), "rtableid, qid");
        assert_eq!(lost.len(), 2);
        assert!(!lost.is_empty());
        assert_eq!(Lost::EMPTY.to_string(), "none");
        assert!(Lost::EMPTY.is_empty());
    }

    #[test]
    fn all_holds_every_field_once() {
        assert_eq!(Lost::ALL.len(), StateField::ALL.len());
        for (i, f) in StateField::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i, "{f} out of order");
        }
    }

    #[test]
    fn wider_formats_lose_less() {
        let f1500 = lossy_fields(RecordFormat::FreeBsd1500);
        let f1400 = lossy_fields(RecordFormat::FreeBsd1400);
        let f1301 = lossy_fields(RecordFormat::FreeBsd1301);
        assert!(f1500
            .difference(StateField::SyncFlags.into())
            .is_subset(f1400));
        assert!(f1400.is_subset(f1301));
        assert!(!lossy_fields(RecordFormat::OpenBsd).contains(StateField::Rdomain));
    }
}
