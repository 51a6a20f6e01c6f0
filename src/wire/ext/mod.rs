//! pfsyncd extension frames: what two pfsyncd peers say to each other beside pfsync.
//!
//! A frame travels exactly where a pfsync packet does (the payload of IP protocol 240
//! on the plain link, the inner packet on the secure link), so it needs no socket of
//! its own and crosses the same filters. Byte 0 is a header version no kernel speaks,
//! [`VERSION`] (0xC5), and that is why kernel peers ignore every frame: both kernels
//! check the header version before they read anything else of the packet and drop it,
//! counting `badver`:
//! - FreeBSD `sys/netpfil/pf/if_pfsync.c`, `pfsync_input` (freebsd/freebsd-src@01194da2):
//!   after the interface (`badif`), TTL (`badttl`) and length (`hdrops`) checks,
//!   `ph->version != PFSYNC_VERSION` counts `pfsyncs_badver` and goes to `done`
//!   (`m_freem`); the subheader loop is never reached.
//! - OpenBSD `sys/net/if_pfsync.c`, `pfsync_input`: the 2023 rewrite (read from an
//!   unattributed copy in the code index; openbsd/src holds only v1.74 @72dd6adc here)
//!   checks `badif`, `badttl`, `hdrops` (shorter than `struct pfsync_header`), then
//!   `ph->version != PFSYNC_VERSION` counts `pfsyncs_badver` and leaves; v1.74 does the
//!   same before it reads `ph->action`.
//!
//! A datagram shorter than the 20-byte pfsync header would be counted in `hdrops`
//! instead; the smallest frame (an empty NACK, GONE or NEED) is 20 bytes, so every frame
//! counts `badver`. Either way the kernel reads nothing past the first bytes, so no
//! action of ours can reach a kernel's state table.
//!
//! ```text
//!  0       1       2               4               8                              16
//! +-------+-------+---------------+---------------+-------------------------------+
//! | 0xC5  | kind  | length (BE16) | creator (BE32)|   boot id (BE64)              |
//! +-------+-------+---------------+---------------+-------------------------------+
//! | body of `kind`, length - 16 bytes ...
//! ```
//! `length` counts the whole frame; bytes after it are refused (a frame is one
//! datagram). The creator id names the sender; the boot id is drawn at random at each
//! daemon start, so a restarted peer is told apart and its sequence numbers restart.
//!
//! One file per frame kind; each body is a fixed head (a `wire_struct!` view) and, for
//! list frames, a run of fixed-size records whose count the head gives and the frame
//! length must match exactly.

pub mod ack;
pub mod bulk_size;
pub mod data;
pub mod digest;
pub mod digest_req;
pub mod gone;
pub mod hello;
pub mod ids;
pub mod nack;
pub mod need;
pub mod pretty;
mod ranges;
pub mod resync;

use crate::wire::codec::wire_struct;

pub use ack::AckRepr;
pub use bulk_size::BulkSizeRepr;
pub use data::{Content, DataRepr};
pub use digest::{BucketSum, DigestRepr, MAX_BUCKETS_PER_FRAME};
pub use digest_req::{DigestReqRepr, MAX_REQ_BUCKETS};
pub use hello::HelloRepr;
pub use ids::{IdsRepr, Listed, MAX_IDS_PER_FRAME};
pub use need::{NeedRepr, MAX_IDS_PER_FRAME as MAX_NEED_IDS_PER_FRAME};
pub use ranges::{SeqRange, SeqRanges, MAX_RANGES};

/// Header version of every extension frame; no kernel speaks it (5 FreeBSD, 6 OpenBSD).
pub const VERSION: u8 = 0xC5;

wire_struct! {
    /// The fixed header of every extension frame.
    HeaderPacket, HeaderRepr, size 16;
    /// Always [`VERSION`].
    version / set_version: u8 = 0..1;
    /// The frame kind ([`Kind`]).
    kind / set_kind: u8 = 1..2;
    /// Bytes of the whole frame, header included.
    length / set_length: u16 = 2..4;
    /// The sender's pfsync creator id.
    creator / set_creator: u32 = 4..8;
    /// The sender's boot id, random per daemon start.
    boot / set_boot: u64 = 8..16;
}

/// Bytes a DATA frame adds to the pfsync packet it carries: the header and the
/// sequence number. The engine builds packets this much under the link MTU.
pub const DATA_OVERHEAD: usize = SIZE + data::SIZE;

// Kernels count badver only past their 20-byte header check (hdrops before it): keep
// the frames a kernel peer sees most (HELLO, ACK, DATA) past it.
const _: () = assert!(
    SIZE + hello::SIZE >= 20
        && SIZE + ack::SIZE >= 20
        && DATA_OVERHEAD >= 20
        && SIZE + bulk_size::SIZE >= 20
);

/// The largest frame: its length is a 16-bit field.
pub const MAX_FRAME: usize = u16::MAX as usize;

/// Frame kinds (byte 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Hello,
    HelloAck,
    Data,
    Nack,
    Gone,
    Ack,
    Digest,
    DigestReq,
    Ids,
    Need,
    Resync,
    BulkSize,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 12] = [
        Kind::Hello,
        Kind::HelloAck,
        Kind::Data,
        Kind::Nack,
        Kind::Gone,
        Kind::Ack,
        Kind::Digest,
        Kind::DigestReq,
        Kind::Ids,
        Kind::Need,
        Kind::Resync,
        Kind::BulkSize,
    ];

    /// The kind's number on the wire.
    pub fn code(self) -> u8 {
        match self {
            Kind::Hello => 1,
            Kind::HelloAck => 2,
            Kind::Data => 3,
            Kind::Nack => 4,
            Kind::Gone => 5,
            Kind::Ack => 6,
            Kind::Digest => 7,
            Kind::DigestReq => 8,
            Kind::Ids => 9,
            Kind::Need => 10,
            Kind::Resync => 11,
            Kind::BulkSize => 12,
        }
    }

    /// The kind a wire number names, if any.
    pub fn from_code(code: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The kind's name, as printed by the decoders.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hello => "HELLO",
            Kind::HelloAck => "HELLO_ACK",
            Kind::Data => "DATA",
            Kind::Nack => "NACK",
            Kind::Gone => "GONE",
            Kind::Ack => "ACK",
            Kind::Digest => "DIGEST",
            Kind::DigestReq => "DIGEST_REQ",
            Kind::Ids => "IDS",
            Kind::Need => "NEED",
            Kind::Resync => "RESYNC",
            Kind::BulkSize => "BULK_SIZE",
        }
    }
}

/// Why some bytes are not an extension frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than the frame header.
    #[error("frame of {have} bytes is shorter than the extension header (16 bytes)")]
    Short { have: usize },
    /// Byte 0 is not [`VERSION`].
    #[error("header version {0:#04x} is not the pfsyncd extension (0xc5)")]
    BadVersion(u8),
    /// An unknown kind number.
    #[error("unknown frame kind {0}")]
    BadKind(u8),
    /// The header's length differs from the datagram's.
    #[error("header says {said} bytes, the datagram has {have}")]
    BadLength { said: usize, have: usize },
    /// The body does not have the size its kind and counts call for.
    #[error("{kind} body: need {need} bytes, have {have}")]
    BadBody {
        kind: &'static str,
        need: usize,
        have: usize,
    },
    /// A list longer than its kind allows.
    #[error("{kind}: {count} entries, at most {max}")]
    TooMany {
        kind: &'static str,
        count: usize,
        max: usize,
    },
    /// A field value the kind refuses.
    #[error("{kind}: bad {field} {value}")]
    BadValue {
        kind: &'static str,
        field: &'static str,
        value: u64,
    },
}

/// Result of the extension codec.
pub type Result<T> = core::result::Result<T, Error>;

/// Whether a datagram on the pfsync path is an extension frame (by its first byte).
pub fn is_ext(bytes: &[u8]) -> bool {
    bytes.first() == Some(&VERSION)
}

/// Who sent a frame: creator id and boot id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sender {
    pub creator: u32,
    pub boot: u64,
}

/// A frame body, per kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<'a> {
    Hello(HelloRepr),
    HelloAck(HelloRepr),
    Data(DataRepr<'a>),
    Nack(SeqRanges),
    Gone(SeqRanges),
    Ack(AckRepr),
    Digest(DigestRepr),
    DigestReq(DigestReqRepr),
    Ids(IdsRepr),
    Need(NeedRepr),
    /// A bulk update asked of the addressee alone ([`resync`]).
    Resync,
    /// The size of the compact bulk its sender starts ([`bulk_size`]).
    BulkSize(BulkSizeRepr),
}

impl Body<'_> {
    /// The body's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Body::Hello(_) => Kind::Hello,
            Body::HelloAck(_) => Kind::HelloAck,
            Body::Data(_) => Kind::Data,
            Body::Nack(_) => Kind::Nack,
            Body::Gone(_) => Kind::Gone,
            Body::Ack(_) => Kind::Ack,
            Body::Digest(_) => Kind::Digest,
            Body::DigestReq(_) => Kind::DigestReq,
            Body::Ids(_) => Kind::Ids,
            Body::Need(_) => Kind::Need,
            Body::Resync => Kind::Resync,
            Body::BulkSize(_) => Kind::BulkSize,
        }
    }

    fn buffer_len(&self) -> usize {
        match self {
            Body::Hello(h) | Body::HelloAck(h) => h.buffer_len(),
            Body::Data(d) => d.buffer_len(),
            Body::Nack(r) | Body::Gone(r) => r.buffer_len(),
            Body::Ack(a) => a.buffer_len(),
            Body::Digest(d) => d.buffer_len(),
            Body::DigestReq(d) => d.buffer_len(),
            Body::Ids(i) => i.buffer_len(),
            Body::Need(n) => n.buffer_len(),
            Body::Resync => resync::SIZE,
            Body::BulkSize(b) => b.buffer_len(),
        }
    }

    fn emit(&self, out: &mut [u8]) {
        match self {
            Body::Hello(h) | Body::HelloAck(h) => h.emit_bytes(out),
            Body::Data(d) => d.emit(out),
            Body::Nack(r) | Body::Gone(r) => r.emit(out),
            Body::Ack(a) => a.emit_bytes(out),
            Body::Digest(d) => d.emit(out),
            Body::DigestReq(d) => d.emit(out),
            Body::Ids(i) => i.emit(out),
            Body::Need(n) => n.emit(out),
            Body::Resync => out.fill(0),
            Body::BulkSize(b) => b.emit_bytes(out),
        }
    }
}

/// A whole frame: sender and body. DATA borrows its pfsync packet from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRepr<'a> {
    pub sender: Sender,
    pub body: Body<'a>,
}

impl<'a> FrameRepr<'a> {
    /// Parses one datagram; every length is checked against the data, so hostile bytes
    /// give an [`Error`], never a panic.
    pub fn parse(bytes: &'a [u8]) -> Result<FrameRepr<'a>> {
        let header =
            HeaderPacket::new_checked(bytes).map_err(|_| Error::Short { have: bytes.len() })?;
        let header = HeaderRepr::parse(&header);
        if header.version != VERSION {
            return Err(Error::BadVersion(header.version));
        }
        let kind = Kind::from_code(header.kind).ok_or(Error::BadKind(header.kind))?;
        if usize::from(header.length) != bytes.len() {
            return Err(Error::BadLength {
                said: header.length.into(),
                have: bytes.len(),
            });
        }
        let body = &bytes[SIZE..];
        let body = match kind {
            Kind::Hello => Body::Hello(hello::parse(body)?),
            Kind::HelloAck => Body::HelloAck(hello::parse(body)?),
            Kind::Data => Body::Data(DataRepr::parse(body)?),
            Kind::Nack => Body::Nack(SeqRanges::parse("NACK", body)?),
            Kind::Gone => Body::Gone(SeqRanges::parse("GONE", body)?),
            Kind::Ack => Body::Ack(ack::parse(body)?),
            Kind::Digest => Body::Digest(DigestRepr::parse(body)?),
            Kind::DigestReq => Body::DigestReq(DigestReqRepr::parse(body)?),
            Kind::Ids => Body::Ids(IdsRepr::parse(body)?),
            Kind::Need => Body::Need(NeedRepr::parse(body)?),
            Kind::Resync => {
                resync::parse(body)?;
                Body::Resync
            }
            Kind::BulkSize => Body::BulkSize(bulk_size::parse(body)?),
        };
        Ok(FrameRepr {
            sender: Sender {
                creator: header.creator,
                boot: header.boot,
            },
            body,
        })
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        SIZE + self.body.buffer_len()
    }

    /// Writes the frame into exactly `buffer_len()` bytes. Panics on another size, or if
    /// the frame is longer than [`MAX_FRAME`] (the builders keep lists under their
    /// bounds, which keeps every frame far under it).
    pub fn emit(&self, out: &mut [u8]) {
        let len = self.buffer_len();
        assert_eq!(out.len(), len, "emit into exactly buffer_len() bytes");
        let length = u16::try_from(len).expect("a frame fits its 16-bit length");
        HeaderRepr {
            version: VERSION,
            kind: self.body.kind().code(),
            length,
            creator: self.sender.creator,
            boot: self.sender.boot,
        }
        .emit_bytes(&mut out[..SIZE]);
        self.body.emit(&mut out[SIZE..]);
    }

    /// Writes the head of a DATA frame of `sender` and `seq` into the first
    /// [`DATA_OVERHEAD`] bytes of `frame`, whose rest is the pfsync packet already in
    /// place: the same bytes as `emit` of a [`Body::Data`] of that packet, without
    /// copying it. Panics if `frame` is no longer than the head or longer than
    /// [`MAX_FRAME`], as `emit` does.
    pub fn emit_data_head(sender: Sender, seq: u64, frame: &mut [u8]) {
        assert!(frame.len() > DATA_OVERHEAD, "a DATA frame carries a packet");
        let length = u16::try_from(frame.len()).expect("a frame fits its 16-bit length");
        HeaderRepr {
            version: VERSION,
            kind: Kind::Data.code(),
            length,
            creator: sender.creator,
            boot: sender.boot,
        }
        .emit_bytes(&mut frame[..SIZE]);
        frame[SIZE..DATA_OVERHEAD].copy_from_slice(&seq.to_be_bytes());
    }

    /// The frame as a new datagram.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.buffer_len()];
        self.emit(&mut out);
        out
    }
}

/// Checks a list body: `head` bytes, then exactly `count` records of `record` bytes.
fn check_list(
    kind: &'static str,
    body: &[u8],
    head: usize,
    record: usize,
    count: usize,
    max: usize,
) -> Result<()> {
    if count > max {
        return Err(Error::TooMany { kind, count, max });
    }
    let need = head + record * count;
    if body.len() != need {
        return Err(Error::BadBody {
            kind,
            need,
            have: body.len(),
        });
    }
    Ok(())
}

/// Checks a fixed body is exactly `need` bytes.
fn check_fixed(kind: &'static str, body: &[u8], need: usize) -> Result<()> {
    if body.len() != need {
        return Err(Error::BadBody {
            kind,
            need,
            have: body.len(),
        });
    }
    Ok(())
}

/// Reads big-endian u64 ids (or any 8-byte records) from a run.
fn read_u64s(run: &[u8]) -> Vec<u64> {
    run.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("chunks of 8")))
        .collect()
}

#[cfg(test)]
mod test;
