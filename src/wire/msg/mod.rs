//! One module per kernel structure that travels in a pfsync packet.

pub mod bus;
pub mod clr;
pub mod key_freebsd;
pub mod key_openbsd;
pub mod peer;
pub mod state_1301;
pub mod state_1400;
pub mod state_1500;
pub mod state_openbsd;
pub mod state_ref;
pub mod tdb_freebsd;
pub mod tdb_openbsd;
pub mod upd_c;

pub use bus::BusRepr;
pub use clr::ClrRepr;
pub use key_freebsd::KeyFreeBsdRepr;
pub use key_openbsd::KeyOpenBsdRepr;
pub use peer::PeerRepr;
pub use state_1301::State1301Repr;
pub use state_1400::State1400Repr;
pub use state_1500::State1500Repr;
pub use state_openbsd::StateOpenBsdRepr;
pub use state_ref::StateRefRepr;
pub use tdb_freebsd::TdbFreeBsdRepr;
pub use tdb_openbsd::TdbOpenBsdRepr;
pub use upd_c::UpdCRepr;

use crate::wire::{Dialect, Error, Result};

/// `PF_INOUT`, `PF_IN`, `PF_OUT`: the highest direction a kernel accepts is 2.
pub const DIRECTION_MAX: u8 = 2;

/// An address family must be `AF_INET` (2) or this dialect's `AF_INET6`.
pub(crate) fn check_af(dialect: Dialect, field: &'static str, af: u8) -> Result<()> {
    if af == 2 || af == dialect.af_inet6() {
        Ok(())
    } else {
        Err(Error::BadValue {
            field,
            value: af.into(),
        })
    }
}

/// The timeout index must be below the receiver's `PFTM_MAX`.
pub(crate) fn check_timeout(dialect: Dialect, timeout: u8) -> Result<()> {
    if timeout >= dialect.pftm_max() {
        return Err(Error::BadValue {
            field: "timeout",
            value: timeout.into(),
        });
    }
    Ok(())
}

/// The state level of the peer at `peer` inside `record`.
pub(crate) fn peer_state(record: &[u8], peer: &crate::wire::Field) -> u8 {
    record[peer.start + peer::field::state.start]
}

/// The byte of a one-byte field.
pub(crate) fn byte(record: &[u8], field: crate::wire::Field) -> u8 {
    record[field.start]
}

/// The checks both kernels make on an inserted or updated full state record, on the
/// record's bytes: timeout, both peer states, direction and address family. The
/// offsets are the record module's own field constants.
pub(crate) fn check_state_common(
    dialect: Dialect,
    record: &[u8],
    timeout: crate::wire::Field,
    src: crate::wire::Field,
    dst: crate::wire::Field,
    direction: crate::wire::Field,
    af: crate::wire::Field,
) -> Result<()> {
    check_timeout(dialect, byte(record, timeout))?;
    peer::check_state("src.state", peer_state(record, &src))?;
    peer::check_state("dst.state", peer_state(record, &dst))?;
    let direction = byte(record, direction);
    let af = byte(record, af);
    if direction > DIRECTION_MAX {
        return Err(Error::BadValue {
            field: "direction",
            value: direction.into(),
        });
    }
    check_af(dialect, "af", af)
}

/// A full state record in any of the four layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRecord {
    /// OpenBSD, 264 bytes.
    OpenBsd(StateOpenBsdRepr),
    /// FreeBSD 1301, 242 bytes.
    FreeBsd1301(State1301Repr),
    /// FreeBSD 1400, 277 bytes.
    FreeBsd1400(State1400Repr),
    /// FreeBSD 1500, 360 bytes.
    FreeBsd1500(State1500Repr),
}

impl StateRecord {
    /// Parses one record of the given format; `bytes` must hold at least its size.
    #[inline]
    pub fn parse(format: crate::wire::RecordFormat, bytes: &[u8]) -> Result<Self> {
        use crate::wire::RecordFormat as F;
        Ok(match format {
            F::OpenBsd => StateRecord::OpenBsd(StateOpenBsdRepr::parse_bytes(bytes)?),
            F::FreeBsd1301 => StateRecord::FreeBsd1301(State1301Repr::parse_bytes(bytes)?),
            F::FreeBsd1400 => StateRecord::FreeBsd1400(State1400Repr::parse_bytes(bytes)?),
            F::FreeBsd1500 => StateRecord::FreeBsd1500(State1500Repr::parse_bytes(bytes)?),
        })
    }

    /// The layout.
    pub fn format(&self) -> crate::wire::RecordFormat {
        use crate::wire::RecordFormat as F;
        match self {
            StateRecord::OpenBsd(_) => F::OpenBsd,
            StateRecord::FreeBsd1301(_) => F::FreeBsd1301,
            StateRecord::FreeBsd1400(_) => F::FreeBsd1400,
            StateRecord::FreeBsd1500(_) => F::FreeBsd1500,
        }
    }

    /// Size on the wire.
    pub fn buffer_len(&self) -> usize {
        self.format().size()
    }

    /// Emits into the first `buffer_len()` bytes.
    pub fn emit_bytes(&self, bytes: &mut [u8]) {
        match self {
            StateRecord::OpenBsd(r) => r.emit_bytes(bytes),
            StateRecord::FreeBsd1301(r) => r.emit_bytes(bytes),
            StateRecord::FreeBsd1400(r) => r.emit_bytes(bytes),
            StateRecord::FreeBsd1500(r) => r.emit_bytes(bytes),
        }
    }

    /// The receiver's value checks.
    pub fn check(&self, dialect: Dialect) -> Result<()> {
        match self {
            StateRecord::OpenBsd(r) => r.check(dialect),
            StateRecord::FreeBsd1301(r) => r.check(dialect),
            StateRecord::FreeBsd1400(r) => r.check(dialect),
            StateRecord::FreeBsd1500(r) => r.check(dialect),
        }
    }

    /// State id.
    pub fn id(&self) -> u64 {
        match self {
            StateRecord::OpenBsd(r) => r.id,
            StateRecord::FreeBsd1301(r) => r.id,
            StateRecord::FreeBsd1400(r) => r.id,
            StateRecord::FreeBsd1500(r) => r.id,
        }
    }

    /// Creator host id.
    pub fn creatorid(&self) -> u32 {
        match self {
            StateRecord::OpenBsd(r) => r.creatorid,
            StateRecord::FreeBsd1301(r) => r.creatorid,
            StateRecord::FreeBsd1400(r) => r.creatorid,
            StateRecord::FreeBsd1500(r) => r.creatorid,
        }
    }

    /// `PFSTATE_*` flags (8 bits wide in 1301).
    pub fn state_flags(&self) -> u16 {
        match self {
            StateRecord::OpenBsd(r) => r.state_flags,
            StateRecord::FreeBsd1301(r) => r.state_flags.into(),
            StateRecord::FreeBsd1400(r) => r.state_flags,
            StateRecord::FreeBsd1500(r) => r.state_flags,
        }
    }
}
