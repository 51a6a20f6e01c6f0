//! The pfsync wire codec, for every kernel dialect.
//!
//! Two levels, as in smoltcp: zero-copy views (`…Packet<T>`) that read and write fields
//! in a byte buffer, and `…Repr` values that are parsed from and emitted into one.
//! After a view's `new_checked` succeeded, no accessor panics; `Repr::emit` never panics
//! on a buffer of at least `buffer_len()` bytes.
//!
//! Everything that differs between the kernels is decided by a [`Dialect`]. Every refusal
//! is an [`Error`] that names the kernel counter ([`Counter`]) the kernel would bump.

pub(crate) mod codec;
pub mod dialect;
pub mod ext;
pub mod frame;
pub mod header;
pub mod msg;
pub mod pretty;
pub mod subheader;

pub use codec::{Field, IfName, Name, PfAddr, TagName, WireField};
pub use dialect::{Action, Dialect, Family, RecordFormat, RouteType};
pub use frame::{
    check_record, BuildError, Item, Message, PacketBuilder, PacketReader, Pushed, RawItem,
    RecordRef,
};

/// The `pfsyncstats` counters a wire error maps to, named as in the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Shorter than the pfsync header.
    Hdrops,
    /// Header version unknown, or a state format the receiver does not know.
    Badver,
    /// Unknown or unsupported action.
    Badact,
    /// A length that does not match the data.
    Badlen,
    /// A record whose values fail validation.
    Badval,
}

impl Counter {
    /// The counter's name, as `netstat -s -p pfsync` and `struct pfsyncstats` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Counter::Hdrops => "hdrops",
            Counter::Badver => "badver",
            Counter::Badact => "badact",
            Counter::Badlen => "badlen",
            Counter::Badval => "badval",
        }
    }
}

impl core::fmt::Display for Counter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the codec refused some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The packet is shorter than the 20-byte pfsync header.
    #[error("packet of {have} bytes is shorter than the pfsync header ({need} bytes)")]
    Short { need: usize, have: usize },
    /// Header version other than 5 (FreeBSD) or 6 (OpenBSD).
    #[error("header version {0} is neither 5 (FreeBSD) nor 6 (OpenBSD)")]
    BadVersion(u8),
    /// A state record format the receiving dialect does not know (FreeBSD counts badver).
    #[error("action {action} carries a state format this dialect does not know")]
    UnknownFormat { action: u8 },
    /// A length field or a record run that does not fit the data.
    #[error("{what}: need {need} bytes, have {have}")]
    BadLength {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// The FreeBSD EOF subheader is not the last thing in the packet.
    #[error("EOF subheader at offset {offset} is not at the end of the packet ({len} bytes)")]
    EofNotAtEnd { offset: usize, len: usize },
    /// An action number the dialect does not know.
    #[error("unknown action {action}")]
    UnknownAction { action: u8 },
    /// An action the dialect knows but refuses (INS_F, DEL_F; full DEL on FreeBSD 14+).
    #[error("action {action} ({name}) is not supported by this dialect")]
    UnsupportedAction { action: u8, name: &'static str },
    /// OpenBSD: a subheader whose record size or count is zero for an unknown action.
    #[error("action {action}: subheader gives record size {len} bytes and count {count}")]
    BadSubheader { action: u8, len: usize, count: u16 },
    /// A record field with a value the kernel rejects.
    #[error("bad value {value} for {field}")]
    BadValue { field: &'static str, value: u32 },
}

impl Error {
    /// The kernel counter this refusal is counted in.
    pub fn counter(&self) -> Counter {
        match self {
            Error::Short { .. } => Counter::Hdrops,
            Error::BadVersion(_) | Error::UnknownFormat { .. } => Counter::Badver,
            Error::BadLength { .. } | Error::EofNotAtEnd { .. } => Counter::Badlen,
            Error::UnknownAction { .. }
            | Error::UnsupportedAction { .. }
            | Error::BadSubheader { .. } => Counter::Badact,
            Error::BadValue { .. } => Counter::Badval,
        }
    }
}

/// Result of the codec.
pub type Result<T> = core::result::Result<T, Error>;
