//! The messages between the privileged parent and the engine process, and their bytes.
//!
//! A frame is a little-endian `u32` body length, a kind byte and the body. Bodies are
//! fixed fields in order, byte strings behind a `u32` length, states in the compact
//! encoding of [`crate::state::compact`]. The format is private to one build of the
//! daemon (both processes are the same executable), so it has no version.
//!
//! The parent decodes what the engine process sends as untrusted input: every length
//! and value is checked, and a message that does not decode is an error, never a
//! panic. The engine process trusts the parent no less than its own memory, but checks
//! the same way, by the same code.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::daemon::latency::{Histogram, ParentLatency};
use crate::daemon::log::Level;
use crate::engine::{LocalChange, PackedTableOp, Received, TableOp};
use crate::metrics::http::ServerCounters;
use crate::state::compact_record::peek::CheckedRecord;
use crate::state::{compact, State};
use crate::table::memory::RecordOp;
use crate::table::{EdgeCounters, TableStats};
use crate::wire::IfName;

/// Longest body accepted (a 64 KB datagram with room to spare).
pub const MAX_BODY: usize = 1 << 20;
/// Longest text in one frame (a log line, a control answer).
pub const MAX_TEXT: usize = MAX_BODY - 256;
/// Bytes before the body: length and kind.
pub const FRAME_HEADER: usize = 5;

/// A message that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A kind byte this build does not send in that direction.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The body ends before the message does.
    #[error("{0} message cut short")]
    Truncated(&'static str),
    /// Bytes after the last field.
    #[error("{what} message has {extra} bytes too many")]
    Trailing {
        /// The message.
        what: &'static str,
        /// Bytes left over.
        extra: usize,
    },
    /// A field whose value is impossible.
    #[error("{what} message: bad {field}")]
    BadValue {
        /// The message.
        what: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A frame longer than [`MAX_BODY`].
    #[error("frame of {0} bytes is longer than {MAX_BODY}")]
    TooLong(usize),
}

/// What the parent reports of the table and the link for `status` and `stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParentReport {
    /// The table is the memory table (otherwise pf).
    pub memory_table: bool,
    /// States in the table (pf: at the last listing).
    pub states: u64,
    /// Outcomes of the engine's table operations.
    pub table: TableStats,
    /// The engine's operations skipped for a local change they crossed.
    pub superseded: u64,
    /// States the memory table expired itself.
    pub expired: u64,
    /// Our own packets the receiver dropped.
    pub own_dropped: u64,
    /// Synthetic changes per second (memory table).
    pub churn_rate: u32,
    /// States the churn keeps around.
    pub churn_target: u64,
    /// Inserts, updates and deletes the churn made.
    pub churn_made: [u64; 3],
    /// What the table refused, corrected or found incomplete at the kernel edge.
    pub edge: EdgeCounters,
    /// What the `/metrics` endpoint served and refused.
    pub metrics_http: ServerCounters,
    /// What the parent's hops of the sync path cost.
    pub latency: ParentLatency,
}

/// From the parent to the engine process.
// One message is decoded at a time and acted on at once, never stored: the size of the
// largest variant (a whole state) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ToEngine<'a> {
    /// A datagram from the sync link, its pfsync payload unparsed, with what the
    /// kernel said of it (the engine judges and parses it).
    Packet(Received<'a>),
    /// A change of the local table.
    Local(LocalChange),
    /// The ruleset checksum changed.
    Checksum([u8; 16]),
    /// This many packets could not be sent (`oerrors`).
    SendFailed(u32),
    /// SIGHUP: the new configuration, in `ifconfig` words.
    Reconfigure {
        /// The words.
        words: &'a str,
        /// syncdev, syncpeers or up changed: flush under the old settings first, and
        /// ask for a bulk update if the new link is open.
        link_changed: bool,
        /// A link is open after the change.
        link_open: bool,
    },
    /// A control request for the engine (`status`, `stats`, `bulk`), with what the
    /// parent knows for the answer: reply with [`ToParent::Answer`].
    Request {
        /// The request line, as the client sent it.
        line: &'a str,
        /// The table and the link.
        report: ParentReport,
        /// The [`ToParent::Table`] operations carried out when the report was taken (those
        /// skipped as crossed included), in the order sent: the engine's bulk update is
        /// in the table once this passes the operations sent before its END.
        applied: u64,
    },
    /// Stop: send what is queued, say [`ToParent::Done`], exit.
    Shutdown {
        /// The signal's number.
        signal: i32,
    },
    /// A UDP datagram the secure link's socket received, unparsed: the engine process
    /// authenticates and decrypts it, the parent never looks inside.
    SecureDatagram {
        /// Its source.
        from: SocketAddr,
        /// Its bytes.
        datagram: &'a [u8],
    },
    /// This node's secure link private key, read and checked by the parent (at start
    /// through the fork; on SIGHUP in this message, before the `Reconfigure`).
    SecureKey(SecureKeyBytes<'a>),
    /// A secure peer's pre-shared key, read and checked by the parent on SIGHUP, before
    /// the `Reconfigure` that names the peer.
    SecurePresharedKey {
        /// The peer's inner address.
        peer: IpAddr,
        /// The key.
        key: SecureKeyBytes<'a>,
    },
    /// When the parent queued the frame after this one (see [`crate::daemon::latency`]).
    Stamp(u64),
}

/// The 32 bytes of a private or pre-shared key in a message; `Debug` never shows them.
/// They borrow the frame. GAP: the channel's buffers that carried them are not wiped
/// (they are reused and overwritten by later frames, not zeroed).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecureKeyBytes<'a>(pub &'a [u8; 32]);

impl std::fmt::Debug for SecureKeyBytes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecureKeyBytes(..)")
    }
}

/// From the engine process to the parent.
#[allow(clippy::large_enum_variant)] // as ToEngine
#[derive(Debug, Clone, PartialEq)]
pub enum ToParent<'a> {
    /// Send this pfsync payload to the sync peers.
    Transmit(&'a [u8]),
    /// Carry out a table operation.
    Table {
        /// The operation.
        op: TableOp,
        /// Local changes the engine had taken when it decided it (see
        /// [`super::crossing`]).
        seen: u64,
    },
    /// Raise (true) or lower the carp demotion.
    Demote(bool),
    /// The answer to the oldest [`ToEngine::Request`] not yet answered.
    Answer(&'a str),
    /// The engine runs under the configuration of the last `Reconfigure`: a new link
    /// may replace the old one now.
    Reconfigured,
    /// A log line.
    Log {
        /// Its level.
        level: Level,
        /// The text.
        text: &'a str,
    },
    /// The engine has taken this many local changes (see [`super::crossing`]).
    Taken(u64),
    /// The engine process runs, confined: the start has succeeded.
    Ready,
    /// Shut down as asked; nothing more follows.
    Done,
    /// Send this payload (a pfsyncd extension frame) unicast to one address on the
    /// plain link, as pfsync packets are sent (protocol 240, TTL 255, on the syncdev).
    TransmitTo {
        /// Where to.
        to: IpAddr,
        /// The frame.
        payload: &'a [u8],
    },
    /// Send this datagram from the secure link's socket.
    SecureSend {
        /// Where to.
        to: SocketAddr,
        /// The datagram, already encrypted by the engine process.
        datagram: &'a [u8],
    },
    /// When the engine queued the frame after this one (see [`crate::daemon::latency`]).
    Stamp(u64),
    /// Carry out these imports and updates, in order: [`ToParent::Table`] of each, all
    /// decided after the same `seen`, in one frame (a bulk's million operations framed
    /// and dispatched one by one cost the parent a frame header, a `seen` and a turn of
    /// its loop each). Written by [`TableFrames`]; the parent reads it with
    /// [`ToParent::decode_record_ops`], which checks each state's record but makes no
    /// `State` of it.
    TableRecords {
        /// Local changes the engine had taken when it decided them.
        seen: u64,
        /// The operations, each an `Import` or an `Update`.
        ops: Vec<TableOp>,
    },
    /// A peer's compact bulk will bring about this many states the engine does not
    /// hold (BULK_SIZE): the table may make room for them now, as the engine's cache
    /// did, rather than grow as they come. A hint, which the parent bounds itself.
    ReserveStates(u64),
}

// Kind bytes. The two directions share no number, so a frame sent the wrong way is an
// unknown kind rather than a misread.
const PACKET: u8 = 1;
const LOCAL: u8 = 2;
const CHECKSUM: u8 = 3;
const SEND_FAILED: u8 = 4;
const RECONFIGURE: u8 = 5;
const REQUEST: u8 = 6;
const SHUTDOWN: u8 = 8;
const SECURE_DATAGRAM: u8 = 9;
const SECURE_KEY: u8 = 10;
const SECURE_PSK: u8 = 11;
const STAMP_TO_ENGINE: u8 = 12;

const TRANSMIT: u8 = 64;
const TABLE: u8 = 65;
const DEMOTE: u8 = 66;
const ANSWER: u8 = 67;
const RECONFIGURED: u8 = 69;
const LOG: u8 = 70;
const DONE: u8 = 71;
const TAKEN: u8 = 72;
const READY: u8 = 73;
const SECURE_SEND: u8 = 74;
const STAMP_TO_PARENT: u8 = 75;
const TRANSMIT_TO: u8 = 76;
const TABLE_RECORDS: u8 = 77;
const RESERVE_STATES: u8 = 78;

/// The longest body [`TableFrames`] makes of a frame of operations before it starts
/// another: some two hundred of a bulk's, half a turn's budget of the parent's
/// ([`super::TURN_BUDGET`]), so that a turn still ends near its budget.
const TABLE_RECORDS_BODY: usize = 16 << 10;

// Sub-kinds of state changes and table operations.
const INSERT: u8 = 0;
const UPDATE: u8 = 1;
const DELETE: u8 = 2;
const CLEAR: u8 = 3;

/// Appends one frame: header, then what `body` writes.
fn frame(out: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    out[start + 4] = kind;
    body(out);
    let len = (out.len() - start - FRAME_HEADER) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_state(out: &mut Vec<u8>, s: &State) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    compact::encode(s, out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

fn put_addr(out: &mut Vec<u8>, a: Option<IpAddr>) {
    match a {
        None => out.push(0),
        Some(IpAddr::V4(a)) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
}

fn put_socket_addr(out: &mut Vec<u8>, a: SocketAddr) {
    put_addr(out, Some(a.ip()));
    out.extend_from_slice(&a.port().to_le_bytes());
}

/// A body being read; every read checks the length left.
struct Body<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        if self.bytes.len() < n {
            return Err(MessageError::Truncated(self.what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, MessageError> {
        Ok(self.take(1)?[0])
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, MessageError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.bad(field)),
        }
    }

    fn u32(&mut self) -> Result<u32, MessageError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, MessageError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    /// The kernel-edge counters, in the order of [`EdgeCounters::named`].
    fn edge_counters(&mut self) -> Result<EdgeCounters, MessageError> {
        Ok(EdgeCounters {
            refused_zero_id: self.u64()?,
            expire_clamped: self.u64()?,
            unknown_interface: self.u64()?,
            rule_unbound: self.u64()?,
            partial_listings: self.u64()?,
            undecodable: self.u64()?,
            synproxy_kept: self.u64()?,
            capture_bad_buffers: self.u64()?,
            capture_cut: self.u64()?,
            capture_malformed: self.u64()?,
        })
    }

    fn bytes(&mut self) -> Result<&'a [u8], MessageError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn text(&mut self, field: &'static str) -> Result<&'a str, MessageError> {
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| self.bad(field))
    }

    fn state(&mut self) -> Result<State, MessageError> {
        let b = self.bytes()?;
        compact::decode(b).ok_or_else(|| self.bad("state"))
    }

    fn ifname(&mut self) -> Result<IfName, MessageError> {
        let mut raw = [0u8; 16];
        raw.copy_from_slice(self.take(16)?);
        Ok(crate::wire::Name(raw))
    }

    fn addr(&mut self) -> Result<Option<IpAddr>, MessageError> {
        match self.u8()? {
            0 => Ok(None),
            4 => {
                let b = self.take(4)?;
                Ok(Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))))
            }
            6 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(self.take(16)?);
                Ok(Some(IpAddr::V6(Ipv6Addr::from(b))))
            }
            _ => Err(self.bad("address family")),
        }
    }

    fn socket_addr(&mut self) -> Result<SocketAddr, MessageError> {
        let ip = self.addr()?.ok_or_else(|| self.bad("socket address"))?;
        let b = self.take(2)?;
        Ok(SocketAddr::new(ip, u16::from_le_bytes([b[0], b[1]])))
    }

    fn bad(&self, field: &'static str) -> MessageError {
        MessageError::BadValue {
            what: self.what,
            field,
        }
    }

    fn end<T>(self, value: T) -> Result<T, MessageError> {
        if self.bytes.is_empty() {
            Ok(value)
        } else {
            Err(MessageError::Trailing {
                what: self.what,
                extra: self.bytes.len(),
            })
        }
    }
}

impl ToEngine<'_> {
    /// Appends the message's frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ToEngine::Packet(p) => frame(out, PACKET, |o| {
                put_addr(o, p.source);
                o.extend_from_slice(&[p.ttl, u8::from(p.on_syncdev), u8::from(p.ipv6)]);
                put_bytes(o, p.payload);
            }),
            ToEngine::Local(c) => frame(out, LOCAL, |o| match c {
                LocalChange::Insert(s) => {
                    o.push(INSERT);
                    put_state(o, s);
                }
                LocalChange::Update(s) => {
                    o.push(UPDATE);
                    put_state(o, s);
                }
                LocalChange::Delete { creatorid, id } => {
                    o.push(DELETE);
                    o.extend_from_slice(&creatorid.to_le_bytes());
                    o.extend_from_slice(&id.to_le_bytes());
                }
                LocalChange::Clear { ifname } => {
                    o.push(CLEAR);
                    o.extend_from_slice(&ifname.0);
                }
            }),
            ToEngine::Checksum(sum) => frame(out, CHECKSUM, |o| o.extend_from_slice(sum)),
            ToEngine::SendFailed(n) => frame(out, SEND_FAILED, |o| {
                o.extend_from_slice(&n.to_le_bytes());
            }),
            ToEngine::Reconfigure {
                words,
                link_changed,
                link_open,
            } => frame(out, RECONFIGURE, |o| {
                o.extend_from_slice(&[u8::from(*link_changed), u8::from(*link_open)]);
                put_bytes(o, words.as_bytes());
            }),
            ToEngine::Request {
                line,
                report: r,
                applied,
            } => frame(out, REQUEST, |o| {
                o.push(u8::from(r.memory_table));
                let t = &r.table;
                for v in [
                    r.states,
                    t.imported,
                    t.updated,
                    t.removed,
                    t.remove_missing,
                    t.cleared,
                    t.exists,
                    t.invalid,
                    t.notfound,
                    t.full,
                    t.unsupported,
                    t.io,
                    r.expired,
                    r.own_dropped,
                    r.churn_target,
                    r.churn_made[0],
                    r.churn_made[1],
                    r.churn_made[2],
                    r.superseded,
                ] {
                    o.extend_from_slice(&v.to_le_bytes());
                }
                for (_, v) in r.edge.named() {
                    o.extend_from_slice(&v.to_le_bytes());
                }
                o.extend_from_slice(&r.churn_rate.to_le_bytes());
                let h = &r.metrics_http;
                for v in [h.served, h.refused, h.dropped] {
                    o.extend_from_slice(&v.to_le_bytes());
                }
                for h in r.latency.named() {
                    for v in h.1.words() {
                        o.extend_from_slice(&v.to_le_bytes());
                    }
                }
                o.extend_from_slice(&applied.to_le_bytes());
                put_bytes(o, line.as_bytes());
            }),
            ToEngine::Shutdown { signal } => frame(out, SHUTDOWN, |o| {
                o.extend_from_slice(&signal.to_le_bytes());
            }),
            ToEngine::SecureDatagram { from, datagram } => frame(out, SECURE_DATAGRAM, |o| {
                put_socket_addr(o, *from);
                put_bytes(o, datagram);
            }),
            ToEngine::SecureKey(key) => frame(out, SECURE_KEY, |o| o.extend_from_slice(key.0)),
            ToEngine::SecurePresharedKey { peer, key } => frame(out, SECURE_PSK, |o| {
                put_addr(o, Some(*peer));
                o.extend_from_slice(key.0);
            }),
            ToEngine::Stamp(ns) => frame(out, STAMP_TO_ENGINE, |o| {
                o.extend_from_slice(&ns.to_le_bytes());
            }),
        }
    }

    /// The message of one frame's kind and body.
    pub fn decode(kind: u8, body: &[u8]) -> Result<ToEngine<'_>, MessageError> {
        let what = match kind {
            PACKET => "packet",
            LOCAL => "local change",
            CHECKSUM => "checksum",
            SEND_FAILED => "send failed",
            RECONFIGURE => "reconfigure",
            REQUEST => "request",
            SHUTDOWN => "shutdown",
            SECURE_DATAGRAM => "secure datagram",
            SECURE_KEY => "secure key",
            SECURE_PSK => "secure pre-shared key",
            STAMP_TO_ENGINE => "stamp",
            other => return Err(MessageError::UnknownKind(other)),
        };
        let mut b = Body { bytes: body, what };
        let msg = match kind {
            PACKET => ToEngine::Packet(Received {
                source: b.addr()?,
                ttl: b.u8()?,
                on_syncdev: b.bool("on_syncdev")?,
                ipv6: b.bool("ipv6")?,
                payload: b.bytes()?,
            }),
            LOCAL => ToEngine::Local(match b.u8()? {
                INSERT => LocalChange::Insert(b.state()?),
                UPDATE => LocalChange::Update(b.state()?),
                DELETE => LocalChange::Delete {
                    creatorid: b.u32()?,
                    id: b.u64()?,
                },
                CLEAR => LocalChange::Clear {
                    ifname: b.ifname()?,
                },
                _ => return Err(b.bad("change")),
            }),
            CHECKSUM => {
                let mut sum = [0u8; 16];
                sum.copy_from_slice(b.take(16)?);
                ToEngine::Checksum(sum)
            }
            SEND_FAILED => ToEngine::SendFailed(b.u32()?),
            RECONFIGURE => {
                let link_changed = b.bool("link_changed")?;
                let link_open = b.bool("link_open")?;
                ToEngine::Reconfigure {
                    link_changed,
                    link_open,
                    words: b.text("words")?,
                }
            }
            REQUEST => {
                let memory_table = b.bool("table kind")?;
                let mut v = [0u64; 19];
                for x in &mut v {
                    *x = b.u64()?;
                }
                let report = ParentReport {
                    memory_table,
                    states: v[0],
                    table: TableStats {
                        imported: v[1],
                        updated: v[2],
                        removed: v[3],
                        remove_missing: v[4],
                        cleared: v[5],
                        exists: v[6],
                        invalid: v[7],
                        notfound: v[8],
                        full: v[9],
                        unsupported: v[10],
                        io: v[11],
                    },
                    expired: v[12],
                    own_dropped: v[13],
                    churn_target: v[14],
                    churn_made: [v[15], v[16], v[17]],
                    superseded: v[18],
                    edge: b.edge_counters()?,
                    churn_rate: b.u32()?,
                    metrics_http: ServerCounters {
                        served: b.u64()?,
                        refused: b.u64()?,
                        dropped: b.u64()?,
                    },
                    latency: ParentLatency::default(),
                };
                let mut latency = ParentLatency::default();
                for h in latency.named_mut() {
                    *h = Histogram::from_words(|| b.u64().ok()).ok_or_else(|| b.bad("latency"))?;
                }
                let report = ParentReport { latency, ..report };
                ToEngine::Request {
                    report,
                    applied: b.u64()?,
                    line: b.text("request")?,
                }
            }
            SHUTDOWN => ToEngine::Shutdown {
                signal: b.u32()? as i32,
            },
            SECURE_DATAGRAM => ToEngine::SecureDatagram {
                from: b.socket_addr()?,
                datagram: b.bytes()?,
            },
            SECURE_KEY => ToEngine::SecureKey(SecureKeyBytes(
                b.take(32)?.try_into().expect("take gives 32 bytes"),
            )),
            SECURE_PSK => ToEngine::SecurePresharedKey {
                peer: b.addr()?.ok_or_else(|| b.bad("peer"))?,
                key: SecureKeyBytes(b.take(32)?.try_into().expect("take gives 32 bytes")),
            },
            STAMP_TO_ENGINE => ToEngine::Stamp(b.u64()?),
            _ => unreachable!("kinds are matched above"),
        };
        b.end(msg)
    }
}

/// The rest of an import's or update's body: its state's record, checked, and nothing
/// after it (as [`Body::state`] and [`Body::end`] read it).
fn record_op(mut b: Body<'_>, update: bool) -> Result<RecordOp<'_>, MessageError> {
    let bytes = b.bytes()?;
    let record = CheckedRecord::check(bytes).map_err(|_| b.bad("state"))?;
    b.end(if update {
        RecordOp::Update(record)
    } else {
        RecordOp::Import(record)
    })
}

impl ToParent<'_> {
    /// Appends the message's frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            ToParent::Transmit(payload) => frame(out, TRANSMIT, |o| put_bytes(o, payload)),
            ToParent::Table { op, seen } => frame(out, TABLE, |o| {
                o.extend_from_slice(&seen.to_le_bytes());
                match op {
                    TableOp::Import(s) => {
                        o.push(INSERT);
                        put_state(o, s);
                    }
                    TableOp::Update(s) => {
                        o.push(UPDATE);
                        put_state(o, s);
                    }
                    TableOp::Delete { creatorid, id } => {
                        o.push(DELETE);
                        o.extend_from_slice(&creatorid.to_le_bytes());
                        o.extend_from_slice(&id.to_le_bytes());
                    }
                    TableOp::Clear { creatorid, ifname } => {
                        o.push(CLEAR);
                        o.extend_from_slice(&creatorid.to_le_bytes());
                        o.extend_from_slice(&ifname.0);
                    }
                }
            }),
            ToParent::Demote(on) => frame(out, DEMOTE, |o| o.push(u8::from(*on))),
            ToParent::Answer(text) => frame(out, ANSWER, |o| put_bytes(o, text.as_bytes())),
            ToParent::Reconfigured => frame(out, RECONFIGURED, |_| {}),
            ToParent::Log { level, text } => frame(out, LOG, |o| {
                o.push(*level as u8);
                put_bytes(o, text.as_bytes());
            }),
            ToParent::Taken(n) => frame(out, TAKEN, |o| o.extend_from_slice(&n.to_le_bytes())),
            ToParent::ReserveStates(n) => frame(out, RESERVE_STATES, |o| {
                o.extend_from_slice(&n.to_le_bytes());
            }),
            ToParent::Ready => frame(out, READY, |_| {}),
            ToParent::Done => frame(out, DONE, |_| {}),
            ToParent::SecureSend { to, datagram } => frame(out, SECURE_SEND, |o| {
                put_socket_addr(o, *to);
                put_bytes(o, datagram);
            }),
            ToParent::Stamp(ns) => frame(out, STAMP_TO_PARENT, |o| {
                o.extend_from_slice(&ns.to_le_bytes());
            }),
            ToParent::TransmitTo { to, payload } => frame(out, TRANSMIT_TO, |o| {
                put_addr(o, Some(*to));
                put_bytes(o, payload);
            }),
            ToParent::TableRecords { seen, ops } => frame(out, TABLE_RECORDS, |o| {
                o.extend_from_slice(&seen.to_le_bytes());
                o.extend_from_slice(&(ops.len() as u32).to_le_bytes());
                for op in ops {
                    match op {
                        TableOp::Import(s) => {
                            o.push(INSERT);
                            put_state(o, s);
                        }
                        TableOp::Update(s) => {
                            o.push(UPDATE);
                            put_state(o, s);
                        }
                        // Never in this message (`decode` makes none, `TableFrames`
                        // frames them alone): the code a parent refuses here.
                        TableOp::Delete { .. } | TableOp::Clear { .. } => o.push(DELETE),
                    }
                }
            }),
        }
    }

    /// The compact encoding of the state a table operation's frame carries (an import's
    /// or an update's), as it is in the frame: what [`ToParent::decode`] decodes the
    /// op's state from, so a table that keeps that encoding need not make it again.
    /// `None` for any other frame.
    pub fn encoded_state(kind: u8, body: &[u8]) -> Option<&[u8]> {
        if kind != TABLE {
            return None;
        }
        let mut b = Body {
            bytes: body,
            what: "table operation",
        };
        b.u64().ok()?;
        match b.u8().ok()? {
            INSERT | UPDATE => b.bytes().ok(),
            _ => None,
        }
    }

    /// Appends the frame of [`ToParent::Table`] for `op` and `seen`, the state of an
    /// `Import` or `Update` given by its compact encoding `packed` (from
    /// [`Engine::poll_table_op_packed`](crate::engine::Engine::poll_table_op_packed)):
    /// the same bytes, without encoding the state again.
    pub fn encode_table_packed(out: &mut Vec<u8>, op: &TableOp, packed: &[u8], seen: u64) {
        match op {
            TableOp::Import(_) => ToParent::encode_table_record(out, false, packed, seen),
            TableOp::Update(_) => ToParent::encode_table_record(out, true, packed, seen),
            _ => ToParent::Table { op: *op, seen }.encode(out),
        }
    }

    /// Appends the frame of [`ToParent::Table`] for an import (`update` false) or an
    /// update of the state whose compact encoding is `packed`, and `seen`: what
    /// [`encode_table_packed`](Self::encode_table_packed) writes for that operation, for
    /// a caller that holds no `State` (the engine's
    /// [`PackedTableOp`](crate::engine::PackedTableOp)).
    pub fn encode_table_record(out: &mut Vec<u8>, update: bool, packed: &[u8], seen: u64) {
        frame(out, TABLE, |o| {
            o.extend_from_slice(&seen.to_le_bytes());
            o.push(if update { UPDATE } else { INSERT });
            put_bytes(o, packed);
        });
    }

    /// An import's or update's frame as the memory table takes it: the operation with its
    /// state's compact record checked whole ([`CheckedRecord`]) but not made a [`State`],
    /// and the frame's `seen`. `Err` exactly when [`ToParent::decode`] errs on the frame,
    /// with the same error; `None` for any other frame (and one cut before its
    /// operation's kind), which [`ToParent::decode`] decodes.
    pub fn decode_record_op(
        kind: u8,
        body: &[u8],
    ) -> Option<Result<(RecordOp<'_>, u64), MessageError>> {
        if kind != TABLE {
            return None;
        }
        let mut b = Body {
            bytes: body,
            what: "table operation",
        };
        let seen = b.u64().ok()?;
        let update = match b.u8().ok()? {
            INSERT => false,
            UPDATE => true,
            _ => return None,
        };
        Some(record_op(b, update).map(|op| (op, seen)))
    }

    /// Whether a frame of this kind is a [`ToParent::TableRecords`] (for
    /// [`ToParent::decode_record_ops`]).
    pub fn carries_records(kind: u8) -> bool {
        kind == TABLE_RECORDS
    }

    /// A frame of [`ToParent::TableRecords`] as the memory table takes it: each
    /// operation with its state's compact record checked whole ([`CheckedRecord`]) but
    /// not made a [`State`], appended to `ops` in order, and the frame's `seen`. `Err`
    /// exactly when [`ToParent::decode`] errs on the frame, with the same error (`ops`
    /// then holds those before the bad one); `None` for any other frame.
    pub fn decode_record_ops<'a>(
        kind: u8,
        body: &'a [u8],
        ops: &mut Vec<RecordOp<'a>>,
    ) -> Option<Result<u64, MessageError>> {
        if kind != TABLE_RECORDS {
            return None;
        }
        let mut b = Body {
            bytes: body,
            what: "table records",
        };
        Some((|| {
            let seen = b.u64()?;
            let count = b.u32()?;
            if count == 0 {
                return Err(b.bad("operations"));
            }
            // Room for all at once, as far as the body can hold them (an operation takes
            // more than eight bytes): the count is the engine's word.
            ops.reserve((count as usize).min(b.bytes.len() / 8));
            for _ in 0..count {
                let update = match b.u8()? {
                    INSERT => false,
                    UPDATE => true,
                    _ => return Err(b.bad("operation")),
                };
                let record = CheckedRecord::check(b.bytes()?).map_err(|_| b.bad("state"))?;
                ops.push(if update {
                    RecordOp::Update(record)
                } else {
                    RecordOp::Import(record)
                });
            }
            b.end(seen)
        })())
    }

    /// The message of one frame's kind and body.
    pub fn decode(kind: u8, body: &[u8]) -> Result<ToParent<'_>, MessageError> {
        let what = match kind {
            TRANSMIT => "transmit",
            TABLE => "table operation",
            DEMOTE => "demote",
            ANSWER => "answer",
            RECONFIGURED => "reconfigured",
            LOG => "log",
            DONE => "done",
            TAKEN => "taken",
            READY => "ready",
            SECURE_SEND => "secure send",
            STAMP_TO_PARENT => "stamp",
            TRANSMIT_TO => "transmit to",
            TABLE_RECORDS => "table records",
            RESERVE_STATES => "reserve states",
            other => return Err(MessageError::UnknownKind(other)),
        };
        let mut b = Body { bytes: body, what };
        let msg = match kind {
            TRANSMIT => ToParent::Transmit(b.bytes()?),
            TABLE => {
                let seen = b.u64()?;
                let op = match b.u8()? {
                    INSERT => TableOp::Import(b.state()?),
                    UPDATE => TableOp::Update(b.state()?),
                    DELETE => TableOp::Delete {
                        creatorid: b.u32()?,
                        id: b.u64()?,
                    },
                    CLEAR => TableOp::Clear {
                        creatorid: b.u32()?,
                        ifname: b.ifname()?,
                    },
                    _ => return Err(b.bad("operation")),
                };
                ToParent::Table { op, seen }
            }
            DEMOTE => ToParent::Demote(b.bool("demotion")?),
            ANSWER => ToParent::Answer(b.text("answer")?),
            RECONFIGURED => ToParent::Reconfigured,
            LOG => {
                let level = match b.u8()? {
                    0 => Level::Error,
                    1 => Level::Warn,
                    2 => Level::Info,
                    3 => Level::Debug,
                    _ => return Err(b.bad("level")),
                };
                ToParent::Log {
                    level,
                    text: b.text("text")?,
                }
            }
            DONE => ToParent::Done,
            TAKEN => ToParent::Taken(b.u64()?),
            RESERVE_STATES => ToParent::ReserveStates(b.u64()?),
            READY => ToParent::Ready,
            SECURE_SEND => ToParent::SecureSend {
                to: b.socket_addr()?,
                datagram: b.bytes()?,
            },
            STAMP_TO_PARENT => ToParent::Stamp(b.u64()?),
            TRANSMIT_TO => ToParent::TransmitTo {
                to: b.addr()?.ok_or_else(|| b.bad("destination"))?,
                payload: b.bytes()?,
            },
            TABLE_RECORDS => {
                let seen = b.u64()?;
                let count = b.u32()?;
                if count == 0 {
                    return Err(b.bad("operations"));
                }
                let mut ops = Vec::new();
                for _ in 0..count {
                    ops.push(match b.u8()? {
                        INSERT => TableOp::Import(b.state()?),
                        UPDATE => TableOp::Update(b.state()?),
                        _ => return Err(b.bad("operation")),
                    });
                }
                ToParent::TableRecords { seen, ops }
            }
            _ => unreachable!("kinds are matched above"),
        };
        b.end(msg)
    }
}

/// Where a records frame's count of operations is, after its `seen`.
const RECORDS_COUNT_AT: usize = FRAME_HEADER + 8;

/// Writes the engine's table operations into the channel's queue: consecutive imports
/// and updates of the same `seen` go into one [`ToParent::TableRecords`] frame (up to
/// [`TABLE_RECORDS_BODY`] bytes), anything else into a frame of its own
/// ([`ToParent::Table`]), in the order given. Each frame in the queue is whole after
/// every [`TableFrames::push`]: a writer dropped at any point leaves nothing to finish.
#[derive(Debug, Default)]
pub struct TableFrames {
    /// The records frame being added to: where it starts in the queue, where it ends
    /// (a frame written after it by anyone else closes it), and its `seen`.
    open: Option<(usize, usize, u64)>,
}

impl TableFrames {
    /// Appends `op`, decided after `seen` local changes, to `out`; `packed` is its
    /// state's compact encoding if the caller has it (an import's or update's), else it
    /// is encoded here.
    pub fn push(&mut self, out: &mut Vec<u8>, op: &TableOp, packed: Option<&[u8]>, seen: u64) {
        let (update, state) = match op {
            TableOp::Import(s) => (false, s),
            TableOp::Update(s) => (true, s),
            TableOp::Delete { .. } | TableOp::Clear { .. } => {
                self.open = None;
                ToParent::Table { op: *op, seen }.encode(out);
                return;
            }
        };
        match packed {
            Some(packed) => self.push_record(out, update, packed, seen),
            None => {
                let mut encoded = Vec::new();
                crate::state::compact::encode(state, &mut encoded);
                self.push_record(out, update, &encoded, seen);
            }
        }
    }

    /// Appends an operation as the engine polls it
    /// ([`Engine::poll_table_op_packed`](crate::engine::Engine::poll_table_op_packed)):
    /// an import's or update's state goes as the compact bytes the engine cached.
    pub fn push_packed(&mut self, out: &mut Vec<u8>, op: &PackedTableOp<'_>, seen: u64) {
        match *op {
            PackedTableOp::Import(packed) => self.push_record(out, false, packed, seen),
            PackedTableOp::Update(packed) => self.push_record(out, true, packed, seen),
            PackedTableOp::Delete { .. } | PackedTableOp::Clear { .. } => {
                self.open = None;
                ToParent::Table {
                    op: op.to_op(),
                    seen,
                }
                .encode(out);
            }
        }
    }

    /// Appends an import (`update` false) or update of the state whose compact encoding
    /// is `packed` to the open records frame, or to a new one.
    pub fn push_record(&mut self, out: &mut Vec<u8>, update: bool, packed: &[u8], seen: u64) {
        let start = match self.open {
            Some((start, end, open_seen))
                if end == out.len()
                    && open_seen == seen
                    && end - start - FRAME_HEADER < TABLE_RECORDS_BODY =>
            {
                start
            }
            _ => {
                let start = out.len();
                out.extend_from_slice(&[0; FRAME_HEADER]);
                out[start + 4] = TABLE_RECORDS;
                out.extend_from_slice(&seen.to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
                start
            }
        };
        out.push(if update { UPDATE } else { INSERT });
        put_bytes(out, packed);
        let len = (out.len() - start - FRAME_HEADER) as u32;
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        let count_at = start + RECORDS_COUNT_AT;
        let mut count = [0u8; 4];
        count.copy_from_slice(&out[count_at..count_at + 4]);
        let count = u32::from_le_bytes(count) + 1;
        out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
        self.open = Some((start, out.len(), seen));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::compact_record::MAX_RECORD_BYTES;
    use crate::table::synth::Synth;

    /// Splits one encoded frame into kind and body, checking its length field.
    fn split(frame: &[u8]) -> (u8, &[u8]) {
        let len = u32::from_le_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(frame.len(), FRAME_HEADER + len);
        (frame[4], &frame[FRAME_HEADER..])
    }

    fn states() -> Vec<State> {
        Synth::new(7, 0x0102_0304).states(64)
    }

    fn engine_messages(states: &[State]) -> Vec<ToEngine<'static>> {
        let mut m = vec![
            ToEngine::Packet(Received {
                source: Some(IpAddr::from([198, 18, 0, 2])),
                ttl: 255,
                on_syncdev: true,
                ipv6: false,
                payload: &[6, 0, 0, 12, 1, 2, 3],
            }),
            ToEngine::Packet(Received {
                source: Some("2001:db8::1".parse().unwrap()),
                ttl: 1,
                on_syncdev: false,
                ipv6: true,
                payload: &[],
            }),
            ToEngine::Packet(Received {
                source: None,
                ttl: 0,
                on_syncdev: false,
                ipv6: false,
                payload: &[5],
            }),
            ToEngine::Local(LocalChange::Delete {
                creatorid: 0xdead_beef,
                id: u64::MAX,
            }),
            ToEngine::Local(LocalChange::Clear {
                ifname: IfName::new("em0").unwrap(),
            }),
            ToEngine::Checksum([0xa5; 16]),
            ToEngine::SendFailed(3),
            ToEngine::Reconfigure {
                words: "syncdev em1 maxupd 10 up",
                link_changed: true,
                link_open: false,
            },
            ToEngine::Request {
                line: "status --json",
                report: ParentReport {
                    memory_table: true,
                    states: 1,
                    table: TableStats {
                        imported: 2,
                        updated: 3,
                        removed: 4,
                        remove_missing: 5,
                        cleared: 6,
                        exists: 7,
                        invalid: 8,
                        notfound: 9,
                        full: 10,
                        unsupported: 11,
                        io: 12,
                    },
                    expired: 13,
                    own_dropped: 14,
                    churn_rate: 15,
                    churn_target: 16,
                    churn_made: [17, 18, 19],
                    superseded: 20,
                    edge: EdgeCounters {
                        refused_zero_id: 21,
                        expire_clamped: 22,
                        unknown_interface: 23,
                        rule_unbound: 24,
                        partial_listings: 25,
                        undecodable: 26,
                        synproxy_kept: 27,
                        capture_bad_buffers: 28,
                        capture_cut: 29,
                        capture_malformed: 30,
                    },
                    metrics_http: ServerCounters {
                        served: 30,
                        refused: 31,
                        dropped: 32,
                    },
                    latency: {
                        let mut l = ParentLatency::default();
                        l.send.record(std::time::Duration::from_micros(40));
                        l.apply.record(std::time::Duration::from_millis(700));
                        l
                    },
                },
                applied: 33,
            },
            ToEngine::Stamp(u64::MAX),
            ToEngine::Shutdown { signal: 15 },
            ToEngine::SecureDatagram {
                from: "192.0.2.7:5240".parse().unwrap(),
                datagram: &[4, 0, 0, 0, 1, 2, 3],
            },
            ToEngine::SecureDatagram {
                from: "[2001:db8::7]:65535".parse().unwrap(),
                datagram: &[],
            },
            ToEngine::SecureKey(SecureKeyBytes(&[0x5a; 32])),
            ToEngine::SecurePresharedKey {
                peer: "2001:db8::7".parse().unwrap(),
                key: SecureKeyBytes(&[0xa5; 32]),
            },
        ];
        for s in states {
            m.push(ToEngine::Local(LocalChange::Insert(*s)));
            m.push(ToEngine::Local(LocalChange::Update(*s)));
        }
        m
    }

    fn parent_messages(states: &[State]) -> Vec<ToParent<'static>> {
        let mut m = vec![
            ToParent::Stamp(7),
            ToParent::Transmit(&[5, 0, 0, 12]),
            ToParent::Table {
                op: TableOp::Delete {
                    creatorid: 1,
                    id: 2,
                },
                seen: 0,
            },
            ToParent::Table {
                op: TableOp::Clear {
                    creatorid: 3,
                    ifname: IfName::EMPTY,
                },
                seen: u64::MAX,
            },
            ToParent::Demote(true),
            ToParent::Demote(false),
            ToParent::Answer("pfsync0: flags=UP\n"),
            ToParent::Reconfigured,
            ToParent::Log {
                level: Level::Warn,
                text: "peer 198.18.0.2 heard",
            },
            ToParent::Taken(12345),
            ToParent::ReserveStates(1_000_000),
            ToParent::ReserveStates(u64::MAX),
            ToParent::Ready,
            ToParent::Done,
            ToParent::SecureSend {
                to: "[2001:db8::7]:5240".parse().unwrap(),
                datagram: &[1, 0, 0, 0, 9],
            },
            ToParent::SecureSend {
                to: "192.0.2.7:1".parse().unwrap(),
                datagram: &[],
            },
            ToParent::TransmitTo {
                to: "198.18.0.2".parse().unwrap(),
                payload: &[0xc5, 1, 0, 32],
            },
            ToParent::TransmitTo {
                to: "fe80::2".parse().unwrap(),
                payload: &[],
            },
        ];
        for s in states {
            m.push(ToParent::Table {
                op: TableOp::Import(*s),
                seen: 7,
            });
            m.push(ToParent::Table {
                op: TableOp::Update(*s),
                seen: 8,
            });
        }
        for (i, group) in states.chunks(5).enumerate() {
            m.push(ToParent::TableRecords {
                seen: i as u64 * 1000,
                ops: group
                    .iter()
                    .enumerate()
                    .map(|(j, s)| {
                        if (i + j) % 3 == 0 {
                            TableOp::Update(*s)
                        } else {
                            TableOp::Import(*s)
                        }
                    })
                    .collect(),
            });
        }
        m
    }

    #[test]
    fn every_message_decodes_to_itself() {
        let states = states();
        for m in engine_messages(&states) {
            let mut out = Vec::new();
            m.encode(&mut out);
            let (kind, body) = split(&out);
            assert_eq!(ToEngine::decode(kind, body).unwrap(), m);
        }
        for m in parent_messages(&states) {
            let mut out = Vec::new();
            m.encode(&mut out);
            let (kind, body) = split(&out);
            let decoded = ToParent::decode(kind, body).unwrap();
            // An import's or update's state bytes, as the frame has them, are its state.
            let encoded = ToParent::encoded_state(kind, body);
            match &decoded {
                ToParent::Table {
                    op: TableOp::Import(s) | TableOp::Update(s),
                    ..
                } => assert_eq!(encoded.and_then(compact::decode).as_ref(), Some(s)),
                _ => assert_eq!(encoded, None, "{m:?}"),
            }
            assert_eq!(decoded, m);
        }
    }

    /// `decode_record_op` on a frame: what `decode` says, when it answers at all.
    fn record_op_agrees(kind: u8, body: &[u8]) -> bool {
        let Some(record_op) = ToParent::decode_record_op(kind, body) else {
            assert!(
                !matches!(
                    ToParent::decode(kind, body),
                    Ok(ToParent::Table {
                        op: TableOp::Import(_) | TableOp::Update(_),
                        ..
                    })
                ),
                "{kind} {body:02x?}"
            );
            return false;
        };
        let whole = ToParent::decode(kind, body);
        match (record_op, whole) {
            (Ok((op, seen)), Ok(ToParent::Table { op: whole, seen: s })) => {
                assert_eq!(seen, s);
                assert_eq!(op.table_op().ok(), Some(whole));
                // The record is the frame's bytes, as the table will keep them.
                assert_eq!(
                    Some(op.record().bytes()),
                    ToParent::encoded_state(kind, body)
                );
            }
            (Err(e), Err(whole)) => assert_eq!(e, whole, "{body:02x?}"),
            (r, whole) => panic!("{r:?} but decode says {whole:?}"),
        }
        true
    }

    #[test]
    fn a_record_op_is_what_decode_says() {
        let states = states();
        let mut answered = 0;
        for m in parent_messages(&states) {
            let mut out = Vec::new();
            m.encode(&mut out);
            let (kind, body) = split(&out);
            if record_op_agrees(kind, body) {
                answered += 1;
                // Cut anywhere, a byte changed to anything, a byte too many.
                for cut in 0..body.len() {
                    record_op_agrees(kind, &body[..cut]);
                }
                let mut edited = body.to_vec();
                for at in (0..body.len()).step_by(3) {
                    for value in [0, 1, 4, 6, 0x7f, 0x80, 0xff, body[at] ^ 0x10] {
                        edited[at] = value;
                        record_op_agrees(kind, &edited);
                    }
                    edited[at] = body[at];
                }
                edited.push(0);
                assert!(matches!(
                    ToParent::decode_record_op(kind, &edited),
                    Some(Err(MessageError::Trailing { extra: 1, .. }))
                ));
            }
        }
        assert_eq!(answered, 2 * states.len());
        // The refusal of `bad_values_are_refused_by_name`, by the same name.
        assert_eq!(
            ToParent::decode_record_op(TABLE, &[0, 0, 0, 0, 0, 0, 0, 0, INSERT, 1, 0, 0, 0, 0xff]),
            Some(Err(MessageError::BadValue {
                what: "table operation",
                field: "state"
            }))
        );
    }

    /// `decode_record_ops` on a frame: what `decode` says, when it answers at all.
    fn record_ops_agree(kind: u8, body: &[u8]) -> bool {
        let mut ops = Vec::new();
        let Some(decoded) = ToParent::decode_record_ops(kind, body, &mut ops) else {
            assert!(!matches!(
                ToParent::decode(kind, body),
                Ok(ToParent::TableRecords { .. })
            ));
            return false;
        };
        match (decoded, ToParent::decode(kind, body)) {
            (
                Ok(seen),
                Ok(ToParent::TableRecords {
                    seen: s,
                    ops: whole,
                }),
            ) => {
                assert_eq!(seen, s);
                let ops: Vec<TableOp> = ops.iter().map(|op| op.table_op().unwrap()).collect();
                assert_eq!(ops, whole);
            }
            (Err(e), Err(whole)) => assert_eq!(e, whole, "{body:02x?}"),
            (r, whole) => panic!("{r:?} but decode says {whole:?}"),
        }
        true
    }

    #[test]
    fn record_ops_are_what_decode_says() {
        let states = states();
        let mut answered = 0;
        for m in parent_messages(&states) {
            let mut out = Vec::new();
            m.encode(&mut out);
            let (kind, body) = split(&out);
            if !record_ops_agree(kind, body) {
                continue;
            }
            answered += 1;
            // Cut anywhere, a byte changed to anything, a byte too many.
            for cut in 0..body.len() {
                assert!(record_ops_agree(kind, &body[..cut]));
            }
            let mut edited = body.to_vec();
            for at in (0..body.len()).step_by(3) {
                for value in [0, 1, 2, 3, 4, 6, 0x7f, 0x80, 0xff, body[at] ^ 0x10] {
                    edited[at] = value;
                    record_ops_agree(kind, &edited);
                }
                edited[at] = body[at];
            }
            edited.push(0);
            assert!(matches!(
                ToParent::decode_record_ops(kind, &edited, &mut Vec::new()),
                Some(Err(MessageError::Trailing { extra: 1, .. }))
            ));
            assert!(record_ops_agree(kind, &edited));
        }
        assert_eq!(answered, states.len().div_ceil(5));
        // Refused by name: no operation, one of another kind, a state that does not
        // decode.
        let bad = |field| {
            Some(Err(MessageError::BadValue {
                what: "table records",
                field,
            }))
        };
        let seen = [0u8; 8];
        let mut ops = Vec::new();
        let none = [&seen[..], &[0, 0, 0, 0]].concat();
        assert_eq!(
            ToParent::decode_record_ops(TABLE_RECORDS, &none, &mut ops),
            bad("operations")
        );
        let seen = [&seen[..], &[1, 0, 0, 0]].concat();
        let delete = [&seen[..], &[DELETE, 0, 0, 0, 0]].concat();
        assert_eq!(
            ToParent::decode_record_ops(TABLE_RECORDS, &delete, &mut ops),
            bad("operation")
        );
        let undecodable = [&seen[..], &[INSERT, 1, 0, 0, 0, 0xff]].concat();
        assert_eq!(
            ToParent::decode_record_ops(TABLE_RECORDS, &undecodable, &mut ops),
            bad("state")
        );
        for body in [&none[..], &delete, &undecodable] {
            assert!(record_ops_agree(TABLE_RECORDS, body));
        }
    }

    /// What `TableFrames` writes is the operations given, in order, each with its
    /// `seen`, as one frame each would say: imports and updates gathered, a delete or a
    /// clear, a new `seen`, a full frame or a frame written by another in between
    /// closing a group.
    #[test]
    fn table_frames_carry_each_operation_in_order() {
        let states = Synth::new(9, 0x0a0b_0c0d).states(2000);
        let mut given = Vec::new();
        let mut out = Vec::new();
        let mut frames = TableFrames::default();
        for (i, s) in states.iter().enumerate() {
            let seen = (i / 700) as u64;
            let op = match i % 50 {
                7 => TableOp::Delete {
                    creatorid: s.creatorid,
                    id: s.id,
                },
                8 => TableOp::Clear {
                    creatorid: s.creatorid,
                    ifname: s.ifname,
                },
                n if n % 4 == 0 => TableOp::Update(*s),
                _ => TableOp::Import(*s),
            };
            let mut packed = Vec::new();
            compact::encode(s, &mut packed);
            // The engine has most states' encoding, not all.
            let packed = (i % 11 != 0).then_some(&packed[..]);
            frames.push(&mut out, &op, packed, seen);
            given.push((op, seen));
            if i % 333 == 0 {
                ToParent::Taken(i as u64).encode(&mut out);
            }
        }
        let mut taken = Vec::new();
        let (mut rest, mut records_frames) = (&out[..], 0);
        while !rest.is_empty() {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            let (kind, body) = (rest[4], &rest[FRAME_HEADER..FRAME_HEADER + len]);
            rest = &rest[FRAME_HEADER + len..];
            match ToParent::decode(kind, body).unwrap() {
                ToParent::Table { op, seen } => taken.push((op, seen)),
                ToParent::TableRecords { seen, ops } => {
                    assert!(len <= TABLE_RECORDS_BODY + MAX_RECORD_BYTES + 5, "{len}");
                    assert!(record_ops_agree(kind, body));
                    records_frames += 1;
                    taken.extend(ops.into_iter().map(|op| (op, seen)));
                }
                ToParent::Taken(_) => {}
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(taken, given);
        assert!(
            records_frames > 40 && records_frames < 200,
            "{records_frames}"
        );
    }

    #[test]
    fn a_message_sent_the_wrong_way_is_an_unknown_kind() {
        let mut out = Vec::new();
        ToParent::Done.encode(&mut out);
        let (kind, body) = split(&out);
        assert_eq!(
            ToEngine::decode(kind, body),
            Err(MessageError::UnknownKind(kind))
        );
        out.clear();
        ToEngine::SendFailed(1).encode(&mut out);
        let (kind, body) = split(&out);
        assert_eq!(
            ToParent::decode(kind, body),
            Err(MessageError::UnknownKind(kind))
        );
    }

    #[test]
    fn every_cut_and_every_extra_byte_is_refused() {
        let states = states();
        for m in parent_messages(&states[..4]) {
            let mut out = Vec::new();
            m.encode(&mut out);
            let (kind, body) = split(&out);
            for cut in 0..body.len() {
                assert!(
                    ToParent::decode(kind, &body[..cut]).is_err(),
                    "{m:?} cut at {cut}"
                );
            }
            let mut longer = body.to_vec();
            longer.push(0);
            assert!(matches!(
                ToParent::decode(kind, &longer),
                Err(MessageError::Trailing { extra: 1, .. })
            ));
        }
        for m in engine_messages(&states[..4]) {
            let mut out = Vec::new();
            m.encode(&mut out);
            let (kind, body) = split(&out);
            for cut in 0..body.len() {
                assert!(
                    ToEngine::decode(kind, &body[..cut]).is_err(),
                    "{m:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        // A demotion that is neither 0 nor 1.
        assert_eq!(
            ToParent::decode(DEMOTE, &[2]),
            Err(MessageError::BadValue {
                what: "demote",
                field: "demotion"
            })
        );
        // A log level past debug, text that is not UTF-8, an unknown table operation.
        assert!(ToParent::decode(LOG, &[9, 0, 0, 0, 0]).is_err());
        assert!(ToParent::decode(LOG, &[1, 1, 0, 0, 0, 0xff]).is_err());
        assert!(ToParent::decode(TABLE, &[0, 0, 0, 0, 0, 0, 0, 0, 7]).is_err());
        // A state whose bytes the compact decoder refuses.
        assert_eq!(
            ToParent::decode(TABLE, &[0, 0, 0, 0, 0, 0, 0, 0, INSERT, 1, 0, 0, 0, 0xff]),
            Err(MessageError::BadValue {
                what: "table operation",
                field: "state"
            })
        );
        // An address family that is neither 4 nor 6.
        assert!(ToEngine::decode(PACKET, &[5, 1, 2, 3, 4, 255, 1, 0, 0, 0, 0, 0]).is_err());
        // A secure datagram or send without a source or destination address.
        assert_eq!(
            ToEngine::decode(SECURE_DATAGRAM, &[0, 0x14, 0x78, 0, 0, 0, 0]),
            Err(MessageError::BadValue {
                what: "secure datagram",
                field: "socket address"
            })
        );
        assert!(ToParent::decode(SECURE_SEND, &[0, 0x14, 0x78, 0, 0, 0, 0]).is_err());
        // A key that is not 32 bytes.
        assert!(ToEngine::decode(SECURE_KEY, &[1; 31]).is_err());
        assert!(ToEngine::decode(SECURE_KEY, &[1; 33]).is_err());
        // A pre-shared key without its peer, or short.
        assert!(ToEngine::decode(SECURE_PSK, &[0; 33]).is_err());
        assert!(ToEngine::decode(SECURE_PSK, &[4, 10, 0, 0, 1, 7]).is_err());
        // And it never shows in a log line.
        let debug = format!("{:?}", ToEngine::SecureKey(SecureKeyBytes(&[0x5a; 32])));
        assert!(!debug.contains("90"), "{debug}");
    }

    #[test]
    fn random_bodies_never_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let kind = next() as u8;
            let len = (next() % 96) as usize;
            let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = ToParent::decode(kind, &body);
            let _ = ToEngine::decode(kind, &body);
        }
    }

    /// A table operation framed from its state's compact encoding is the frame of the
    /// operation itself, byte for byte.
    #[test]
    fn a_packed_table_op_frames_as_the_op() {
        for (i, s) in states().iter().enumerate() {
            let mut packed = Vec::new();
            compact::encode(s, &mut packed);
            let ops = [
                TableOp::Import(*s),
                TableOp::Update(*s),
                TableOp::Delete {
                    creatorid: s.creatorid,
                    id: s.id,
                },
            ];
            for op in ops {
                let seen = i as u64 * 3;
                let mut plain = Vec::new();
                ToParent::Table { op, seen }.encode(&mut plain);
                let mut from_packed = Vec::new();
                ToParent::encode_table_packed(&mut from_packed, &op, &packed, seen);
                assert_eq!(from_packed, plain, "{op:?}");
            }
        }
    }
}
