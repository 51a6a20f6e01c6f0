//! What differs between the kernels, in one place.
//!
//! OpenBSD speaks header version 6 with a 264-byte state record and a subheader that
//! gives the record size; FreeBSD speaks version 5, with the 1301, 1400 and 1500 records
//! told apart by action number, no record size in the subheader, and an EOF trailer.

/// The two header families. The header version alone says which one a packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Header version 6.
    OpenBsd,
    /// Header version 5.
    FreeBsd,
}

/// The state record layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordFormat {
    /// OpenBSD `struct pfsync_state`, 264 bytes.
    OpenBsd,
    /// FreeBSD `struct pfsync_state_1301`, 242 bytes (FreeBSD 9 to 13, and 14+ `version 1301`).
    FreeBsd1301,
    /// FreeBSD `struct pfsync_state_1400`, 277 bytes.
    FreeBsd1400,
    /// FreeBSD `struct pfsync_state_1500`, 360 bytes.
    FreeBsd1500,
}

impl RecordFormat {
    /// Size of one record on the wire.
    pub const fn size(self) -> usize {
        match self {
            RecordFormat::OpenBsd => crate::wire::msg::state_openbsd::SIZE,
            RecordFormat::FreeBsd1301 => crate::wire::msg::state_1301::SIZE,
            RecordFormat::FreeBsd1400 => crate::wire::msg::state_1400::SIZE,
            RecordFormat::FreeBsd1500 => crate::wire::msg::state_1500::SIZE,
        }
    }

    /// Short name, as `ifconfig pfsync0 version` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            RecordFormat::OpenBsd => "openbsd",
            RecordFormat::FreeBsd1301 => "1301",
            RecordFormat::FreeBsd1400 => "1400",
            RecordFormat::FreeBsd1500 => "1500",
        }
    }
}

/// A message kind, independent of the number a dialect gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Clear states of one creator (optionally on one interface).
    Clr,
    /// Insert a state.
    Ins(RecordFormat),
    /// Acknowledge an insert (deferral).
    InsAck,
    /// Full update of a state.
    Upd(RecordFormat),
    /// Compressed update (peers and timeout only).
    UpdC,
    /// Request a full update of one state, or with a zero id and creator, of all (bulk).
    UpdReq,
    /// Delete with a full state record (accepted, never sent by current kernels).
    Del(RecordFormat),
    /// Compressed delete.
    DelC,
    /// Insert fragment (never implemented by any kernel).
    InsF,
    /// Delete fragments (never implemented by any kernel).
    DelF,
    /// Bulk update status.
    Bus,
    /// IPsec replay counter update, the dialect's current layout.
    Tdb,
    /// End of frame (FreeBSD trailer; deprecated on OpenBSD).
    Eof,
    /// OpenBSD: obsolete insert (action 1), skipped.
    OldIns,
    /// OpenBSD: obsolete update (action 3), skipped.
    OldUpd,
    /// OpenBSD: obsolete TDB with a 32-bit replay counter (action 11), skipped.
    OldTdb,
}

impl Action {
    /// The name used in `pfsyncd decode`, after the kernel's `PFSYNC_ACT_*` names.
    pub const fn name(self) -> &'static str {
        match self {
            Action::Clr => "CLR",
            Action::Ins(RecordFormat::OpenBsd) => "INS",
            Action::Ins(RecordFormat::FreeBsd1301) => "INS_1301",
            Action::Ins(RecordFormat::FreeBsd1400) => "INS_1400",
            Action::Ins(RecordFormat::FreeBsd1500) => "INS_1500",
            Action::InsAck => "INS_ACK",
            Action::Upd(RecordFormat::OpenBsd) => "UPD",
            Action::Upd(RecordFormat::FreeBsd1301) => "UPD_1301",
            Action::Upd(RecordFormat::FreeBsd1400) => "UPD_1400",
            Action::Upd(RecordFormat::FreeBsd1500) => "UPD_1500",
            Action::UpdC => "UPD_C",
            Action::UpdReq => "UPD_REQ",
            Action::Del(_) => "DEL",
            Action::DelC => "DEL_C",
            Action::InsF => "INS_F",
            Action::DelF => "DEL_F",
            Action::Bus => "BUS",
            Action::Tdb => "TDB",
            Action::Eof => "EOF",
            Action::OldIns => "OINS",
            Action::OldUpd => "OUPD",
            Action::OldTdb => "OTDB",
        }
    }
}

/// Route type of a state (`rt`), in neutral form; the numbers differ per OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RouteType {
    /// No policy routing.
    #[default]
    None,
    /// FreeBSD `PF_FASTROUTE` (defined, unused by pf).
    FastRoute,
    /// `route-to`.
    RouteTo,
    /// `dup-to`.
    DupTo,
    /// `reply-to`.
    ReplyTo,
}

/// One kernel dialect: the format a node sends, and the rules it receives by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// OpenBSD (header version 6).
    OpenBsd,
    /// FreeBSD, `version 1301` (also what FreeBSD 13 speaks).
    FreeBsd1301,
    /// FreeBSD, `version 1400` (the FreeBSD 14 default).
    FreeBsd1400,
    /// FreeBSD, `version 1500` (the FreeBSD 15 default).
    FreeBsd1500,
}

/// pfsync header version of FreeBSD.
pub const VERSION_FREEBSD: u8 = 5;
/// pfsync header version of OpenBSD.
pub const VERSION_OPENBSD: u8 = 6;

impl Dialect {
    /// All dialects.
    pub const ALL: [Dialect; 4] = [
        Dialect::OpenBsd,
        Dialect::FreeBsd1301,
        Dialect::FreeBsd1400,
        Dialect::FreeBsd1500,
    ];

    /// The header family.
    pub const fn family(self) -> Family {
        match self {
            Dialect::OpenBsd => Family::OpenBsd,
            _ => Family::FreeBsd,
        }
    }

    /// The dialect a received packet is parsed with, from its header version: the most
    /// recent receiver of that family, which knows every state format of the family.
    pub const fn receiver_for_version(version: u8) -> Option<Dialect> {
        match version {
            VERSION_OPENBSD => Some(Dialect::OpenBsd),
            VERSION_FREEBSD => Some(Dialect::FreeBsd1500),
            _ => None,
        }
    }

    /// Parses the word `ifconfig pfsync0 version` takes, plus `openbsd`.
    pub fn from_name(name: &str) -> Option<Dialect> {
        match name {
            "openbsd" | "6" => Some(Dialect::OpenBsd),
            "1301" => Some(Dialect::FreeBsd1301),
            "1400" => Some(Dialect::FreeBsd1400),
            "1500" => Some(Dialect::FreeBsd1500),
            _ => None,
        }
    }

    /// The name `from_name` takes.
    pub const fn name(self) -> &'static str {
        self.record_format().name()
    }

    /// Header version byte.
    pub const fn version(self) -> u8 {
        match self.family() {
            Family::OpenBsd => VERSION_OPENBSD,
            Family::FreeBsd => VERSION_FREEBSD,
        }
    }

    /// The state record this dialect sends.
    pub const fn record_format(self) -> RecordFormat {
        match self {
            Dialect::OpenBsd => RecordFormat::OpenBsd,
            Dialect::FreeBsd1301 => RecordFormat::FreeBsd1301,
            Dialect::FreeBsd1400 => RecordFormat::FreeBsd1400,
            Dialect::FreeBsd1500 => RecordFormat::FreeBsd1500,
        }
    }

    /// `PFSYNC_ACT_MAX` of a kernel of this dialect: actions at or above it are unknown.
    pub const fn act_max(self) -> u8 {
        match self {
            Dialect::OpenBsd => 16,
            Dialect::FreeBsd1301 => 13,
            Dialect::FreeBsd1400 => 15,
            Dialect::FreeBsd1500 => 17,
        }
    }

    /// `AF_INET6` as this OS numbers it on the wire (`AF_INET` is 2 on both).
    pub const fn af_inet6(self) -> u8 {
        match self.family() {
            Family::OpenBsd => 24,
            Family::FreeBsd => 28,
        }
    }

    /// `PFTM_MAX`: a state timeout index must be below it. FreeBSD 14 added five SCTP
    /// timeouts; a 1301 peer may be FreeBSD 13, which knows only the first twenty.
    pub const fn pftm_max(self) -> u8 {
        match self {
            Dialect::OpenBsd | Dialect::FreeBsd1301 => 20,
            Dialect::FreeBsd1400 | Dialect::FreeBsd1500 => 25,
        }
    }

    /// True when the subheader carries the record size, so an unknown action can be
    /// skipped (OpenBSD). FreeBSD drops the rest of the packet at an unknown action.
    pub const fn skips_unknown_actions(self) -> bool {
        matches!(self.family(), Family::OpenBsd)
    }

    /// True when every packet ends with an EOF subheader (FreeBSD).
    pub const fn has_eof_trailer(self) -> bool {
        matches!(self.family(), Family::FreeBsd)
    }

    /// The subheader `len` byte for records of `record_len` bytes: OpenBSD gives the
    /// size in 4-byte words; FreeBSD sends 0 and ignores it.
    pub const fn subheader_len_byte(self, record_len: usize) -> u8 {
        match self.family() {
            Family::OpenBsd => (record_len / 4) as u8,
            Family::FreeBsd => 0,
        }
    }

    /// The kind of message an action number means in this dialect, or `None` if the
    /// number is unknown to it.
    pub const fn action(self, number: u8) -> Option<Action> {
        if number >= self.act_max() {
            return None;
        }
        let fmt = self.record_format();
        Some(match (self.family(), number) {
            (_, 0) => Action::Clr,
            (_, 2) => Action::InsAck,
            (_, 4) => Action::UpdC,
            (_, 5) => Action::UpdReq,
            (_, 7) => Action::DelC,
            (_, 8) => Action::InsF,
            (_, 9) => Action::DelF,
            (_, 10) => Action::Bus,
            (_, 12) => Action::Eof,
            (Family::OpenBsd, 1) => Action::OldIns,
            (Family::OpenBsd, 3) => Action::OldUpd,
            (Family::OpenBsd, 6) => Action::Del(fmt),
            (Family::OpenBsd, 11) => Action::OldTdb,
            (Family::OpenBsd, 13) => Action::Ins(fmt),
            (Family::OpenBsd, 14) => Action::Upd(fmt),
            (Family::OpenBsd, 15) => Action::Tdb,
            (Family::FreeBsd, 1) => Action::Ins(RecordFormat::FreeBsd1301),
            (Family::FreeBsd, 3) => Action::Upd(RecordFormat::FreeBsd1301),
            (Family::FreeBsd, 6) => Action::Del(RecordFormat::FreeBsd1301),
            (Family::FreeBsd, 11) => Action::Tdb,
            (Family::FreeBsd, 13) => Action::Ins(RecordFormat::FreeBsd1400),
            (Family::FreeBsd, 14) => Action::Upd(RecordFormat::FreeBsd1400),
            (Family::FreeBsd, 15) => Action::Ins(RecordFormat::FreeBsd1500),
            (Family::FreeBsd, 16) => Action::Upd(RecordFormat::FreeBsd1500),
            _ => return None,
        })
    }

    /// The number this dialect gives an action, or `None` if it cannot express it
    /// (another family's record format, or a format newer than the dialect).
    pub const fn action_number(self, action: Action) -> Option<u8> {
        use RecordFormat as F;
        let number = match (self.family(), action) {
            (_, Action::Clr) => 0,
            (_, Action::InsAck) => 2,
            (_, Action::UpdC) => 4,
            (_, Action::UpdReq) => 5,
            (_, Action::DelC) => 7,
            (_, Action::InsF) => 8,
            (_, Action::DelF) => 9,
            (_, Action::Bus) => 10,
            (_, Action::Eof) => 12,
            (Family::OpenBsd, Action::OldIns) => 1,
            (Family::OpenBsd, Action::OldUpd) => 3,
            (Family::OpenBsd, Action::Del(F::OpenBsd)) => 6,
            (Family::OpenBsd, Action::OldTdb) => 11,
            (Family::OpenBsd, Action::Ins(F::OpenBsd)) => 13,
            (Family::OpenBsd, Action::Upd(F::OpenBsd)) => 14,
            (Family::OpenBsd, Action::Tdb) => 15,
            (Family::FreeBsd, Action::Ins(F::FreeBsd1301)) => 1,
            (Family::FreeBsd, Action::Upd(F::FreeBsd1301)) => 3,
            (Family::FreeBsd, Action::Del(F::FreeBsd1301)) => 6,
            (Family::FreeBsd, Action::Tdb) => 11,
            (Family::FreeBsd, Action::Ins(F::FreeBsd1400)) => 13,
            (Family::FreeBsd, Action::Upd(F::FreeBsd1400)) => 14,
            (Family::FreeBsd, Action::Ins(F::FreeBsd1500)) => 15,
            (Family::FreeBsd, Action::Upd(F::FreeBsd1500)) => 16,
            _ => return None,
        };
        // A number at or above the dialect's PFSYNC_ACT_MAX is unknown to it.
        if number < self.act_max() {
            Some(number)
        } else {
            None
        }
    }

    /// Size of one record of `action` as this dialect's kernel knows it; `None` for
    /// actions without records it could parse (obsolete ones, INS_F/DEL_F).
    pub const fn record_len(self, action: Action) -> Option<usize> {
        use crate::wire::msg;
        Some(match action {
            Action::Clr => msg::clr::SIZE,
            Action::Ins(f) | Action::Upd(f) | Action::Del(f) => f.size(),
            Action::InsAck | Action::UpdReq | Action::DelC => msg::state_ref::SIZE,
            Action::UpdC => msg::upd_c::SIZE,
            Action::Bus => msg::bus::SIZE,
            Action::Tdb => match self.family() {
                Family::OpenBsd => msg::tdb_openbsd::SIZE,
                Family::FreeBsd => msg::tdb_freebsd::SIZE,
            },
            Action::Eof => 0,
            Action::InsF | Action::DelF | Action::OldIns | Action::OldUpd | Action::OldTdb => {
                return None
            }
        })
    }

    /// Whether a kernel of this dialect refuses the action (counting badact) rather
    /// than handling or skipping it. FreeBSD refuses INS_F and DEL_F, and since 14 the
    /// full DEL; OpenBSD skips all three.
    pub const fn refuses(self, action: Action) -> bool {
        match (self, action) {
            (Dialect::OpenBsd, _) => false,
            (_, Action::InsF | Action::DelF) => true,
            (Dialect::FreeBsd1400 | Dialect::FreeBsd1500, Action::Del(_)) => true,
            _ => false,
        }
    }

    /// The `rt` number of a route type, or `None` if the OS has no such type.
    pub const fn rt_number(self, rt: RouteType) -> Option<u8> {
        match (self.family(), rt) {
            (_, RouteType::None) => Some(0),
            (Family::OpenBsd, RouteType::FastRoute) => None,
            (Family::OpenBsd, RouteType::RouteTo) => Some(1),
            (Family::OpenBsd, RouteType::DupTo) => Some(2),
            (Family::OpenBsd, RouteType::ReplyTo) => Some(3),
            (Family::FreeBsd, RouteType::FastRoute) => Some(1),
            (Family::FreeBsd, RouteType::RouteTo) => Some(2),
            (Family::FreeBsd, RouteType::DupTo) => Some(3),
            (Family::FreeBsd, RouteType::ReplyTo) => Some(4),
        }
    }

    /// The route type an `rt` number means, or `None` for an unknown number.
    pub const fn rt_type(self, number: u8) -> Option<RouteType> {
        match (self.family(), number) {
            (_, 0) => Some(RouteType::None),
            (Family::OpenBsd, 1) => Some(RouteType::RouteTo),
            (Family::OpenBsd, 2) => Some(RouteType::DupTo),
            (Family::OpenBsd, 3) => Some(RouteType::ReplyTo),
            (Family::FreeBsd, 1) => Some(RouteType::FastRoute),
            (Family::FreeBsd, 2) => Some(RouteType::RouteTo),
            (Family::FreeBsd, 3) => Some(RouteType::DupTo),
            (Family::FreeBsd, 4) => Some(RouteType::ReplyTo),
            _ => None,
        }
    }
}

impl core::fmt::Display for Dialect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn action_numbers_round_trip_in_every_dialect() {
        use RecordFormat as F;
        let mut every = vec![
            Action::Clr,
            Action::InsAck,
            Action::UpdC,
            Action::UpdReq,
            Action::DelC,
            Action::InsF,
            Action::DelF,
            Action::Bus,
            Action::Tdb,
            Action::Eof,
            Action::OldIns,
            Action::OldUpd,
            Action::OldTdb,
        ];
        for f in [F::OpenBsd, F::FreeBsd1301, F::FreeBsd1400, F::FreeBsd1500] {
            every.extend([Action::Ins(f), Action::Upd(f), Action::Del(f)]);
        }
        for d in Dialect::ALL {
            for n in 0..=255u8 {
                if let Some(a) = d.action(n) {
                    assert_eq!(d.action_number(a), Some(n), "{d:?} action {n}");
                }
            }
            for a in &every {
                if let Some(n) = d.action_number(*a) {
                    assert_eq!(d.action(n), Some(*a), "{d:?} {a:?}");
                }
            }
        }
    }

    #[test]
    fn state_actions_per_dialect() {
        assert_eq!(
            Dialect::OpenBsd.action(13),
            Some(Action::Ins(RecordFormat::OpenBsd))
        );
        assert_eq!(Dialect::FreeBsd1301.action(13), None);
        assert_eq!(
            Dialect::FreeBsd1400.action(13),
            Some(Action::Ins(RecordFormat::FreeBsd1400))
        );
        assert_eq!(Dialect::FreeBsd1400.action(15), None);
        assert_eq!(
            Dialect::FreeBsd1500.action(16),
            Some(Action::Upd(RecordFormat::FreeBsd1500))
        );
        assert_eq!(Dialect::OpenBsd.action(16), None);
        // A 1400 sender cannot express a 1500 record, nor an OpenBSD one.
        assert_eq!(
            Dialect::FreeBsd1400.action_number(Action::Ins(RecordFormat::FreeBsd1500)),
            None
        );
        assert_eq!(
            Dialect::FreeBsd1500.action_number(Action::Ins(RecordFormat::OpenBsd)),
            None
        );
    }

    #[test]
    fn route_types_round_trip() {
        for d in Dialect::ALL {
            for n in 0..=255u8 {
                if let Some(rt) = d.rt_type(n) {
                    assert_eq!(d.rt_number(rt), Some(n));
                }
            }
        }
        assert_eq!(Dialect::OpenBsd.rt_number(RouteType::ReplyTo), Some(3));
        assert_eq!(Dialect::FreeBsd1400.rt_number(RouteType::ReplyTo), Some(4));
    }
}
