//! FreeBSD 14/15's pf netlink family (`"pfctl"`), as pfctl itself talks to it: generic
//! netlink framing, the family lookup (with the commands the kernel has), the state dump,
//! the kill of one state, pf's status, and the decoding of each answer.
//!
//! Facts, read from FreeBSD's `sys/netpfil/pf/pf_nl.c` (14.0, a later 14.x, main) and
//! `netpfil/pf/pf_nl.h` (FreeBSD 15, whose numbers the oracle test checks), and from
//! `sys/netlink/` (the controller and the message writer); tests/kernel/freebsd_netlink.rs
//! models them per version and says which commit was read:
//! - integers are in host order, except what the kernel keeps in network order and
//!   copies as it is: the state id (an opaque 8 bytes, big-endian as on the wire) and the
//!   key ports; the creator id is sent `htonl`ed, so it reads as the host-order number,
//!   and `PF_GS_HOSTID` is sent `ntohl`ed, the same swap of the same stored value;
//! - the kill filter's `PF_CS_CMP_ID`/`PF_CS_CMP_CREATORID` are compared raw with the
//!   stored (network-order) values, so they are sent big-endian; id 0 means "no id" and
//!   kills whatever the other filters match, all states when there are none;
//! - 14.x keys carry only addresses and ports: the family and protocol are the state's
//!   (`PF_ST_AF`, `PF_ST_PROTO`); 15's keys add `PF_STK_AF`/`PF_STK_PROTO`;
//! - addresses are 4 or 16 bytes by the family; nested attributes come without
//!   `NLA_F_NESTED`;
//! - `PF_ST_CREATION` is the age in seconds, `PF_ST_EXPIRE` the seconds left, except for
//!   an expired state not purged yet (see [`default_timeout_secs`]);
//! - the peers' sequence numbers and windows are host order (the wire's are `htonl`ed);
//! - a dump is `NLM_F_MULTI` messages, one per state, ended by `NLMSG_DONE` whose int is
//!   the dump's error; no acknowledgement follows a dump;
//! - errors come in `NLMSG_ERROR` as the positive errno (Linux: negative); an unknown
//!   command is `ENOTSUP` (45): 14.0 has neither `PFNL_CMD_KILLSTATES` nor
//!   `PFNL_CMD_GET_STATUS`, which the controller's `CTRL_ATTR_OPS` tells at start.
//!
//! Every length is checked: bad input is a typed error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::state::{
    AddressFamily, Direction, Peer, PeerState, Protocol, Scrub, State, StateFlags, Timeout,
};
use crate::wire::IfName;

/// `struct nlmsghdr`: 16 bytes.
pub const NLMSG_HDRLEN: usize = 16;
/// `struct genlmsghdr`: 4 bytes.
pub const GENL_HDRLEN: usize = 4;
/// `struct nlattr`: 4 bytes.
pub const NLA_HDRLEN: usize = 4;
/// Attributes and messages are padded to 4 bytes.
pub const NLA_ALIGNTO: usize = 4;

/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x01;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 0x04;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;
/// `NLMSG_ERROR`.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
pub const NLMSG_DONE: u16 = 3;
/// `NLA_F_NESTED`.
pub const NLA_F_NESTED: u16 = 1 << 15;
/// The attribute type without the nested and byte-order flags.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | (1 << 14));
/// `GENL_ID_CTRL`: the controller family.
pub const GENL_ID_CTRL: u16 = 16;
/// `CTRL_CMD_GETFAMILY`.
pub const CTRL_CMD_GETFAMILY: u8 = 3;
/// `CTRL_ATTR_FAMILY_ID` (u16).
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// `CTRL_ATTR_FAMILY_NAME` (string).
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// `CTRL_ATTR_OPS`: nested, one nested entry per command the family handles.
pub const CTRL_ATTR_OPS: u16 = 6;
/// `CTRL_ATTR_OP_ID` (u32), in an entry of `CTRL_ATTR_OPS`.
pub const CTRL_ATTR_OP_ID: u16 = 1;
/// pf's family name.
pub const PF_FAMILY: &str = "pfctl";
/// `PFNL_CMD_GETSTATES`.
pub const PFNL_CMD_GETSTATES: u8 = 1;
/// `PFNL_CMD_KILLSTATES`.
pub const PFNL_CMD_KILLSTATES: u8 = 9;
/// `PFNL_CMD_GET_STATUS`.
pub const PFNL_CMD_GET_STATUS: u8 = 11;
/// `PF_GS_RUNNING`: whether pf is enabled (a bool).
pub const PF_GS_RUNNING: u16 = 2;
/// `PF_GS_HOSTID`: the host id, u32.
pub const PF_GS_HOSTID: u16 = 5;
/// `PF_GS_CHKSUM`: the ruleset checksum, 16 bytes.
pub const PF_GS_CHKSUM: u16 = 14;
/// `PF_CS_CMP_ID`: the state id to kill (u64, compared raw with the kernel's).
pub const PF_CS_CMP_ID: u16 = 1;
/// `PF_CS_CMP_CREATORID`: its creator id (u32, compared raw).
pub const PF_CS_CMP_CREATORID: u16 = 2;
/// `PF_CS_KILLED`: how many states the kill removed (u32).
pub const PF_CS_KILLED: u16 = 13;

/// State attributes (`PF_ST_*`).
#[allow(missing_docs)]
pub mod st {
    pub const ID: u16 = 1;
    pub const CREATORID: u16 = 2;
    pub const IFNAME: u16 = 3;
    pub const ORIG_IFNAME: u16 = 4;
    pub const KEY_WIRE: u16 = 5;
    pub const KEY_STACK: u16 = 6;
    pub const PEER_SRC: u16 = 7;
    pub const PEER_DST: u16 = 8;
    pub const RT_ADDR: u16 = 9;
    pub const RULE: u16 = 10;
    pub const ANCHOR: u16 = 11;
    pub const NAT_RULE: u16 = 12;
    pub const CREATION: u16 = 13;
    pub const EXPIRE: u16 = 14;
    pub const PACKETS0: u16 = 15;
    pub const PACKETS1: u16 = 16;
    pub const BYTES0: u16 = 17;
    pub const BYTES1: u16 = 18;
    pub const AF: u16 = 19;
    pub const PROTO: u16 = 21;
    pub const DIRECTION: u16 = 22;
    pub const LOG: u16 = 23;
    pub const TIMEOUT: u16 = 24;
    pub const STATE_FLAGS: u16 = 25;
    pub const SYNC_FLAGS: u16 = 26;
    pub const RTABLEID: u16 = 31;
    pub const MIN_TTL: u16 = 32;
    pub const MAX_MSS: u16 = 33;
    pub const DNPIPE: u16 = 34;
    pub const DNRPIPE: u16 = 35;
    pub const RT: u16 = 36;
    pub const RT_IFNAME: u16 = 37;
}

/// Key attributes (`PF_STK_*`).
#[allow(missing_docs)]
pub mod stk {
    pub const ADDR0: u16 = 1;
    pub const ADDR1: u16 = 2;
    pub const PORT0: u16 = 3;
    pub const PORT1: u16 = 4;
    pub const AF: u16 = 5;
    pub const PROTO: u16 = 6;
}

/// Peer attributes (`PF_STP_*`).
#[allow(missing_docs)]
pub mod stp {
    pub const PFSS_FLAGS: u16 = 1;
    pub const PFSS_TTL: u16 = 2;
    pub const SCRUB_FLAG: u16 = 3;
    pub const PFSS_TS_MOD: u16 = 4;
    pub const SEQLO: u16 = 5;
    pub const SEQHI: u16 = 6;
    pub const SEQDIFF: u16 = 7;
    pub const MAX_WIN: u16 = 8;
    pub const MSS: u16 = 9;
    pub const STATE: u16 = 10;
    pub const WSCALE: u16 = 11;
}

/// Why a netlink message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NlError {
    /// A header or length that does not fit the bytes.
    #[error("netlink: truncated or bad length at byte {0}")]
    Truncated(usize),
    /// An attribute of the wrong size for its type.
    #[error("netlink: attribute {attr} has {len} bytes")]
    BadAttribute {
        /// The attribute type.
        attr: u16,
        /// Its payload length.
        len: usize,
    },
    /// An errno field that no errno can be (`i32::MIN`).
    #[error("netlink: errno field {0}")]
    Errno(i32),
    /// A state without a field every state has, or with a value the model refuses.
    #[error("netlink state: {0}")]
    BadState(String),
}

fn pad(n: usize) -> usize {
    n.div_ceil(NLA_ALIGNTO) * NLA_ALIGNTO
}

/// A request: `nlmsghdr`, `genlmsghdr`, attributes.
#[derive(Debug, Clone)]
pub struct Request {
    buf: Vec<u8>,
}

impl Request {
    /// A generic netlink request to `family` for `cmd`.
    pub fn new(family: u16, flags: u16, seq: u32, cmd: u8) -> Request {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&family.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        // pid 0: the kernel fills it in.
        buf.extend_from_slice(&[cmd, 1, 0, 0]);
        Request { buf }
    }

    /// Adds a NUL-terminated string attribute.
    pub fn string(mut self, attr: u16, value: &str) -> Request {
        let len = NLA_HDRLEN + value.len() + 1;
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&attr.to_ne_bytes());
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        self.buf.resize(pad(self.buf.len()), 0);
        self
    }

    /// Adds an attribute of raw bytes.
    pub fn bytes(mut self, attr: u16, value: &[u8]) -> Request {
        let len = NLA_HDRLEN + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&attr.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(pad(self.buf.len()), 0);
        self
    }

    /// The bytes, with the total length set.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// The request that resolves a family's id.
pub fn get_family(name: &str, seq: u32) -> Vec<u8> {
    // With an acknowledgement, so the end of the answer is known.
    Request::new(GENL_ID_CTRL, NLM_F_ACK, seq, CTRL_CMD_GETFAMILY)
        .string(CTRL_ATTR_FAMILY_NAME, name)
        .finish()
}

/// The request that dumps every state (no filter attributes: all of them).
pub fn get_states(family: u16, seq: u32) -> Vec<u8> {
    Request::new(family, NLM_F_DUMP | NLM_F_ACK, seq, PFNL_CMD_GETSTATES).finish()
}

/// One message of a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`: the family, or NLMSG_DONE / NLMSG_ERROR.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// What follows the header.
    pub payload: &'a [u8],
}

/// The request that kills the state `id` of `creatorid`. The kernel compares both with
/// what it keeps, which is network order, and reads them as native integers: so the
/// bytes sent are the big-endian ones.
pub fn kill_states(family: u16, seq: u32, creatorid: u32, id: u64) -> Vec<u8> {
    Request::new(family, NLM_F_ACK, seq, PFNL_CMD_KILLSTATES)
        .bytes(PF_CS_CMP_ID, &id.to_be_bytes())
        .bytes(PF_CS_CMP_CREATORID, &creatorid.to_be_bytes())
        .finish()
}

/// The request for pf's status (one answer, acknowledged).
pub fn get_status(family: u16, seq: u32) -> Vec<u8> {
    Request::new(family, NLM_F_ACK, seq, PFNL_CMD_GET_STATUS).finish()
}

/// The ruleset checksum in a `PFNL_CMD_GET_STATUS` answer (its genl payload).
pub fn decode_checksum(genl: &[u8]) -> Result<Option<[u8; 16]>, NlError> {
    let attrs = genl.get(GENL_HDRLEN..).ok_or(NlError::Truncated(0))?;
    for a in attributes(attrs) {
        let (kind, v) = a?;
        if kind == PF_GS_CHKSUM {
            return Ok(Some(fixed(kind, v)?));
        }
    }
    Ok(None)
}

/// What a `PFNL_CMD_GET_STATUS` answer says that we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PfStatus {
    /// The ruleset checksum (`pf_status.pf_chksum`).
    pub checksum: [u8; 16],
    /// The creator id pf stamps on its own states, in the same (host) order as
    /// [`State::creatorid`]: the kernel sends `ntohl(hostid)` here as it sends
    /// `htonl(creatorid)` in a state, the same swap of the same stored value.
    pub hostid: u32,
    /// Whether pf is enabled.
    pub running: bool,
}

/// The status in a `PFNL_CMD_GET_STATUS` answer (its genl payload).
pub fn decode_status(genl: &[u8]) -> Result<PfStatus, NlError> {
    let attrs = genl.get(GENL_HDRLEN..).ok_or(NlError::Truncated(0))?;
    let (mut checksum, mut hostid, mut running) = (None, None, None);
    for a in attributes(attrs) {
        let (kind, v) = a?;
        match kind {
            PF_GS_CHKSUM => checksum = Some(fixed(kind, v)?),
            PF_GS_HOSTID => hostid = Some(u32_ne(kind, v)?),
            PF_GS_RUNNING => running = Some(bool_of(kind, v)?),
            _ => {}
        }
    }
    match (checksum, hostid, running) {
        (Some(checksum), Some(hostid), Some(running)) => Ok(PfStatus {
            checksum,
            hostid,
            running,
        }),
        _ => Err(NlError::BadState(
            "pf's status lacks the checksum, host id or running flag".into(),
        )),
    }
}

/// The number of states a `PFNL_CMD_KILLSTATES` answer says were killed.
pub fn decode_killed(genl: &[u8]) -> Result<Option<u32>, NlError> {
    let attrs = genl.get(GENL_HDRLEN..).ok_or(NlError::Truncated(0))?;
    for a in attributes(attrs) {
        let (kind, v) = a?;
        if kind == PF_CS_KILLED {
            return Ok(Some(u32_ne(kind, v)?));
        }
    }
    Ok(None)
}

/// The messages of a receive buffer.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Result<Message<'_>, NlError>> {
    let mut at = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= buf.len() {
            return None;
        }
        let rest = &buf[at..];
        let bad = NlError::Truncated(at);
        if rest.len() < NLMSG_HDRLEN {
            failed = true;
            return Some(Err(bad));
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            failed = true;
            return Some(Err(bad));
        }
        let m = Message {
            kind: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            payload: &rest[NLMSG_HDRLEN..len],
        };
        at += pad(len).max(NLMSG_HDRLEN);
        Some(Ok(m))
    })
}

/// The errno of an `NLMSG_ERROR` payload, positive (0 is an acknowledgement). FreeBSD's
/// `nlmsg_ack` writes the errno as it is, positive; Linux (and FreeBSD's Linux
/// compatibility layer) negates it: either sign means the same errno.
pub fn error_of(payload: &[u8]) -> Result<i32, NlError> {
    let b: [u8; 4] = payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(NlError::Truncated(0))?;
    errno_of(i32::from_ne_bytes(b))
}

/// The errno of an `NLMSG_DONE` payload: the dump handler's error (`_nlmsg_end_dump`),
/// 0 for a complete dump. A DONE without payload (older or foreign kernels) is 0.
pub fn done_error_of(payload: &[u8]) -> Result<i32, NlError> {
    match payload.get(..4) {
        None => Ok(0),
        Some(b) => errno_of(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
    }
}

fn errno_of(raw: i32) -> Result<i32, NlError> {
    // i32::MIN has no positive twin: no errno is that.
    i32::try_from(raw.unsigned_abs()).map_err(|_| NlError::Errno(raw))
}

/// The attributes of `bytes`: (type without flags, payload).
pub fn attributes(bytes: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), NlError>> {
    let mut at = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at + NLA_HDRLEN > bytes.len() {
            // Fewer than 4 bytes left is padding.
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([bytes[at], bytes[at + 1]]));
        let kind = u16::from_ne_bytes([bytes[at + 2], bytes[at + 3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || at + len > bytes.len() {
            failed = true;
            return Some(Err(NlError::Truncated(at)));
        }
        let payload = &bytes[at + NLA_HDRLEN..at + len];
        at += pad(len);
        Some(Ok((kind, payload)))
    })
}

/// The family id in a `CTRL_CMD_GETFAMILY` answer (its genl payload).
pub fn family_id(genl: &[u8]) -> Result<Option<u16>, NlError> {
    let attrs = genl.get(GENL_HDRLEN..).ok_or(NlError::Truncated(0))?;
    for a in attributes(attrs) {
        let (kind, v) = a?;
        if kind == CTRL_ATTR_FAMILY_ID {
            return Ok(Some(u16_ne(kind, v)?));
        }
    }
    Ok(None)
}

/// The commands a `CTRL_CMD_GETFAMILY` answer lists (`CTRL_ATTR_OPS`), `None` if it
/// lists none.
pub fn family_commands(genl: &[u8]) -> Result<Option<Vec<u8>>, NlError> {
    let attrs = genl.get(GENL_HDRLEN..).ok_or(NlError::Truncated(0))?;
    let mut commands: Option<Vec<u8>> = None;
    for a in attributes(attrs) {
        let (kind, ops) = a?;
        if kind != CTRL_ATTR_OPS {
            continue;
        }
        let list = commands.get_or_insert_with(Vec::new);
        for op in attributes(ops) {
            let (_, entry) = op?;
            for field in attributes(entry) {
                let (kind, v) = field?;
                if kind == CTRL_ATTR_OP_ID {
                    let id = u32_ne(kind, v)?;
                    // Commands are a genl header's u8; a larger id is not one we send.
                    if let Ok(id) = u8::try_from(id) {
                        list.push(id);
                    }
                }
            }
        }
    }
    Ok(commands)
}

fn fixed<const N: usize>(attr: u16, v: &[u8]) -> Result<[u8; N], NlError> {
    v.try_into()
        .map_err(|_| NlError::BadAttribute { attr, len: v.len() })
}

fn u8_of(attr: u16, v: &[u8]) -> Result<u8, NlError> {
    Ok(fixed::<1>(attr, v)?[0])
}

/// A netlink bool: FreeBSD's writer puts a u8 (Linux's flag attributes may be
/// longer); any non-zero byte is true.
fn bool_of(attr: u16, v: &[u8]) -> Result<bool, NlError> {
    if v.is_empty() || v.len() > 4 {
        return Err(NlError::BadAttribute { attr, len: v.len() });
    }
    Ok(v.iter().any(|&b| b != 0))
}

fn u16_ne(attr: u16, v: &[u8]) -> Result<u16, NlError> {
    Ok(u16::from_ne_bytes(fixed(attr, v)?))
}

fn u32_ne(attr: u16, v: &[u8]) -> Result<u32, NlError> {
    Ok(u32::from_ne_bytes(fixed(attr, v)?))
}

fn u64_ne(attr: u16, v: &[u8]) -> Result<u64, NlError> {
    Ok(u64::from_ne_bytes(fixed(attr, v)?))
}

fn name_of(attr: u16, v: &[u8]) -> Result<IfName, NlError> {
    let text = v.split(|&b| b == 0).next().unwrap_or(&[]);
    let text =
        std::str::from_utf8(text).map_err(|_| NlError::BadAttribute { attr, len: v.len() })?;
    IfName::new(text).ok_or(NlError::BadAttribute { attr, len: v.len() })
}

fn addr_of(attr: u16, v: &[u8]) -> Result<IpAddr, NlError> {
    match v.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::from(fixed::<4>(attr, v)?))),
        16 => Ok(IpAddr::V6(Ipv6Addr::from(fixed::<16>(attr, v)?))),
        len => Err(NlError::BadAttribute { attr, len }),
    }
}

/// A rule number, `None` for -1.
fn rule_of(attr: u16, v: &[u8]) -> Result<Option<u32>, NlError> {
    let n = u32_ne(attr, v)?;
    Ok((n != u32::MAX).then_some(n))
}

/// A key as the dump has it. 14.x writes no `PF_STK_AF`/`PF_STK_PROTO` (only 15's keys
/// carry them), so both may be missing here and come from the state (`PF_ST_AF`,
/// `PF_ST_PROTO`), as libpfctl 14 takes them.
#[derive(Default)]
struct RawKey {
    addr: [Option<IpAddr>; 2],
    port: [u16; 2],
    af: Option<u8>,
    proto: Option<u16>,
}

fn key_of(v: &[u8]) -> Result<RawKey, NlError> {
    let mut k = RawKey::default();
    for a in attributes(v) {
        let (kind, v) = a?;
        match kind {
            stk::ADDR0 => k.addr[0] = Some(addr_of(kind, v)?),
            stk::ADDR1 => k.addr[1] = Some(addr_of(kind, v)?),
            // Kept in network order by the kernel and copied as it is.
            stk::PORT0 => k.port[0] = u16::from_be_bytes(fixed(kind, v)?),
            stk::PORT1 => k.port[1] = u16::from_be_bytes(fixed(kind, v)?),
            stk::AF => k.af = Some(u8_of(kind, v)?),
            stk::PROTO => k.proto = Some(u16_ne(kind, v)?),
            _ => {}
        }
    }
    Ok(k)
}

#[derive(Default)]
struct RawPeer {
    seqlo: u32,
    seqhi: u32,
    seqdiff: u32,
    max_win: u16,
    mss: u16,
    state: u8,
    wscale: u8,
    scrub: Option<Scrub>,
}

fn peer_of(v: &[u8]) -> Result<RawPeer, NlError> {
    let mut p = RawPeer::default();
    let mut scrub = Scrub::default();
    let mut has_scrub = false;
    for a in attributes(v) {
        let (kind, v) = a?;
        match kind {
            stp::SEQLO => p.seqlo = u32_ne(kind, v)?,
            stp::SEQHI => p.seqhi = u32_ne(kind, v)?,
            stp::SEQDIFF => p.seqdiff = u32_ne(kind, v)?,
            stp::MAX_WIN => p.max_win = u16_ne(kind, v)?,
            stp::MSS => p.mss = u16_ne(kind, v)?,
            stp::STATE => p.state = u8_of(kind, v)?,
            stp::WSCALE => p.wscale = u8_of(kind, v)?,
            stp::PFSS_FLAGS => scrub.flags = u16_ne(kind, v)?,
            stp::PFSS_TTL => scrub.ttl = u8_of(kind, v)?,
            stp::PFSS_TS_MOD => scrub.ts_mod = u32_ne(kind, v)?,
            stp::SCRUB_FLAG => has_scrub = u8_of(kind, v)? != 0,
            _ => {}
        }
    }
    p.scrub = has_scrub.then_some(scrub);
    Ok(p)
}

/// The family of a key's `af` (FreeBSD numbering).
fn family_of(af: u8) -> Result<AddressFamily, NlError> {
    match af {
        2 => Ok(AddressFamily::Inet),
        28 => Ok(AddressFamily::Inet6),
        n => Err(NlError::BadState(format!("address family {n}"))),
    }
}

/// The key, its family and protocol defaulting to the state's (`whole`).
fn make_key(k: &RawKey, whole: &WholeState) -> Result<crate::state::StateKey, NlError> {
    let af =
        k.af.or(whole.af)
            .ok_or_else(|| NlError::BadState("a key without address family".into()))?;
    let af = family_of(af)?;
    let proto = match k.proto.or(whole.proto.map(u16::from)) {
        Some(p) => u8::try_from(p)
            .map(Protocol::from_number)
            .map_err(|_| NlError::BadState(format!("protocol {p}")))?,
        None => return Err(NlError::BadState("a key without protocol".into())),
    };
    let fill = |a: Option<IpAddr>| a.unwrap_or(af.unspecified());
    Ok(crate::state::StateKey {
        af,
        proto,
        addr: [fill(k.addr[0]), fill(k.addr[1])],
        port: k.port,
        rdomain: 0,
    })
}

/// The default rule's timeout of a class (`PFTM_*_VAL`, FreeBSD's `netpfil/pf/pf.h`;
/// the SCTP classes take TCP's), the bound `PF_ST_EXPIRE` is clamped to.
///
/// `dump_state` writes seconds left only while `pf_state_expires()` is ahead of
/// `time_uptime`; an expired state that pf has not purged yet gets the raw uptime at
/// which it expired (the ioctl export writes 0). The two cannot be told apart in the
/// message, and a live state's seconds left never exceed its timeout, so the value is
/// clamped to the class's default: an expired state is announced with at most that
/// (pf purges it within its purge interval and the next poll announces the deletion),
/// never with the uptime. Clamping rather than zeroing everything above the default
/// keeps a live state whose rule or `set timeout` gives a longer timeout alive on the
/// peers (announced shorter, never as already expired).
fn default_timeout_secs(class: Timeout) -> u32 {
    const DAY: u32 = 24 * 60 * 60;
    match class {
        Timeout::TcpFirst | Timeout::SctpFirst => 120,
        Timeout::TcpOpening | Timeout::SctpOpening => 30,
        Timeout::TcpEstablished | Timeout::SctpEstablished => DAY,
        Timeout::TcpClosing | Timeout::SctpClosing => 15 * 60,
        Timeout::TcpFinWait => 45,
        Timeout::TcpClosed | Timeout::SctpClosed => 90,
        Timeout::UdpFirst | Timeout::UdpMultiple => 60,
        Timeout::UdpSingle => 30,
        Timeout::IcmpFirst => 20,
        Timeout::IcmpError => 10,
        Timeout::OtherFirst | Timeout::OtherMultiple => 60,
        Timeout::OtherSingle => 30,
        Timeout::Frag => 60,
        Timeout::Interval => 10,
        Timeout::TsDiff => 30,
        // Not classes a state lives by.
        Timeout::AdaptiveStart | Timeout::AdaptiveEnd | Timeout::SrcNode => 0,
    }
}

/// What the state itself says of its keys (`PF_ST_AF`, `PF_ST_PROTO`).
#[derive(Default)]
struct WholeState {
    af: Option<u8>,
    proto: Option<u8>,
}

fn make_peer(p: &RawPeer, proto: Protocol) -> Result<Peer, NlError> {
    let state = PeerState::from_number(proto, p.state)
        .ok_or_else(|| NlError::BadState(format!("peer state {}", p.state)))?;
    Ok(Peer {
        seqlo: p.seqlo,
        seqhi: p.seqhi,
        seqdiff: p.seqdiff,
        max_win: p.max_win,
        mss: p.mss,
        wscale: p.wscale,
        state,
        scrub: p.scrub,
    })
}

/// The state in one `PFNL_CMD_GETSTATES` answer (its genl payload).
pub fn decode_state(genl: &[u8]) -> Result<State, NlError> {
    let attrs = genl.get(GENL_HDRLEN..).ok_or(NlError::Truncated(0))?;
    let mut s = State::default();
    let (mut wire, mut stack) = (None, None);
    let (mut src, mut dst) = (RawPeer::default(), RawPeer::default());
    let (mut have_id, mut have_creator) = (false, false);
    let mut rt_addr = None;
    let mut whole = WholeState::default();
    for a in attributes(attrs) {
        let (kind, v) = a?;
        match kind {
            // The id is the kernel's opaque (big-endian) 8 bytes, copied as they are.
            st::ID => {
                s.id = u64::from_be_bytes(fixed(kind, v)?);
                have_id = true;
            }
            st::CREATORID => {
                s.creatorid = u32_ne(kind, v)?;
                have_creator = true;
            }
            st::IFNAME => s.ifname = name_of(kind, v)?,
            st::ORIG_IFNAME => s.orig_ifname = name_of(kind, v)?,
            st::KEY_WIRE => wire = Some(key_of(v)?),
            st::KEY_STACK => stack = Some(key_of(v)?),
            st::PEER_SRC => src = peer_of(v)?,
            st::PEER_DST => dst = peer_of(v)?,
            st::RT_ADDR => rt_addr = Some(addr_of(kind, v)?),
            st::RULE => s.rule = rule_of(kind, v)?,
            st::ANCHOR => s.anchor = rule_of(kind, v)?,
            st::NAT_RULE => s.nat_rule = rule_of(kind, v)?,
            st::CREATION => s.age_secs = u32_ne(kind, v)?,
            st::EXPIRE => s.expire_secs = u32_ne(kind, v)?,
            st::AF => whole.af = Some(u8_of(kind, v)?),
            st::PROTO => whole.proto = Some(u8_of(kind, v)?),
            st::PACKETS0 => s.packets[0] = u64_ne(kind, v)?,
            st::PACKETS1 => s.packets[1] = u64_ne(kind, v)?,
            st::BYTES0 => s.bytes[0] = u64_ne(kind, v)?,
            st::BYTES1 => s.bytes[1] = u64_ne(kind, v)?,
            st::DIRECTION => {
                let d = u8_of(kind, v)?;
                s.direction = Direction::from_number(d)
                    .ok_or_else(|| NlError::BadState(format!("direction {d}")))?;
            }
            st::LOG => s.log = u8_of(kind, v)?,
            st::TIMEOUT => {
                let t = u8_of(kind, v)?;
                s.timeout = Timeout::from_number(t)
                    .ok_or_else(|| NlError::BadState(format!("timeout {t}")))?;
            }
            st::STATE_FLAGS => {
                s.state_flags =
                    StateFlags::from_wire(crate::wire::Family::FreeBsd, u16_ne(kind, v)?)
            }
            st::SYNC_FLAGS => s.sync_flags = u8_of(kind, v)?,
            st::RTABLEID => {
                let r = u32_ne(kind, v)?;
                s.rtableid = (r != u32::MAX).then_some(r);
            }
            st::MIN_TTL => s.min_ttl = u8_of(kind, v)?,
            st::MAX_MSS => s.max_mss = u16_ne(kind, v)?,
            st::DNPIPE => s.dnpipe = u16_ne(kind, v)?,
            st::DNRPIPE => s.dnrpipe = u16_ne(kind, v)?,
            st::RT => {
                // FreeBSD's numbering, as in its records (the oracle test checks it).
                let n = u8_of(kind, v)?;
                s.rt = crate::wire::Dialect::FreeBsd1500
                    .rt_type(n)
                    .ok_or_else(|| NlError::BadState(format!("route type {n}")))?;
            }
            st::RT_IFNAME => s.rt_ifname = name_of(kind, v)?,
            // Unknown and newer attributes are skipped.
            _ => {}
        }
    }
    if !(have_id && have_creator) {
        return Err(NlError::BadState("a state without id or creator".into()));
    }
    let wire = wire.ok_or_else(|| NlError::BadState("no wire key".into()))?;
    s.wire = make_key(&wire, &whole)?;
    s.stack = match stack {
        Some(k) => make_key(&k, &whole)?,
        None => s.wire,
    };
    s.expire_secs = s.expire_secs.min(default_timeout_secs(s.timeout));
    s.src = make_peer(&src, s.wire.proto)?;
    s.dst = make_peer(&dst, s.wire.proto)?;
    // 14 writes the state's zero rt_addr when there is no route-to; 15 writes none.
    s.rt_addr = rt_addr.filter(|a| s.rt != crate::wire::RouteType::None || !a.is_unspecified());
    Ok(s)
}

/// What a netlink conversation needs of a socket.
pub trait Transport {
    /// Sends one request.
    fn send(&mut self, request: &[u8]) -> std::io::Result<()>;
    /// Receives one datagram of messages into `buf`; its length.
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    all(pfsyncd_bindings, target_os = "freebsd")
))]
impl Transport for crate::sys::NetlinkSocket {
    fn send(&mut self, request: &[u8]) -> std::io::Result<()> {
        crate::sys::NetlinkSocket::send(self, request)
    }

    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        crate::sys::NetlinkSocket::recv(self, buf)
    }
}

fn invalid(e: NlError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// Reads the answers to request `seq` until its end, handing each message of `kind`
/// to `each`: a dump ends with NLMSG_DONE, a single answer with its acknowledgement
/// (NLMSG_ERROR 0). A kernel error comes back as that errno.
fn converse<T: Transport + ?Sized>(
    t: &mut T,
    request: &[u8],
    seq: u32,
    mut each: impl FnMut(&Message<'_>) -> Result<(), NlError>,
) -> std::io::Result<()> {
    t.send(request)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = t.recv(&mut buf)?;
        if n == 0 {
            return Err(invalid(NlError::Truncated(0)));
        }
        for m in messages(&buf[..n]) {
            let m = m.map_err(invalid)?;
            if m.seq != seq {
                // An answer to something else (an earlier, abandoned request).
                continue;
            }
            match m.kind {
                NLMSG_DONE => {
                    // The end of a dump; an errno here means it stopped short.
                    let errno = done_error_of(m.payload).map_err(invalid)?;
                    if errno == 0 {
                        return Ok(());
                    }
                    return Err(std::io::Error::from_raw_os_error(errno));
                }
                NLMSG_ERROR => {
                    let errno = error_of(m.payload).map_err(invalid)?;
                    if errno == 0 {
                        return Ok(());
                    }
                    return Err(std::io::Error::from_raw_os_error(errno));
                }
                _ => each(&m).map_err(invalid)?,
            }
        }
    }
}

/// What the generic netlink controller says of a family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyInfo {
    /// The family id, the `nlmsg_type` of its requests.
    pub id: u16,
    /// The commands the controller lists for the family (`CTRL_ATTR_OPS`), `None` if it
    /// lists none; a kernel without a command (FreeBSD 14.0 has no
    /// `PFNL_CMD_KILLSTATES`) is told apart by this once, at start.
    pub commands: Option<Vec<u8>>,
}

impl FamilyInfo {
    /// Whether the family handles `cmd`; `None` when the controller did not say.
    pub fn has_command(&self, cmd: u8) -> Option<bool> {
        self.commands.as_ref().map(|c| c.contains(&cmd))
    }
}

/// The id and commands of generic netlink family `name` (ENOENT from the kernel if
/// there is none).
pub fn resolve_family_info<T: Transport + ?Sized>(
    t: &mut T,
    name: &str,
    seq: u32,
) -> std::io::Result<FamilyInfo> {
    let mut id = None;
    let mut commands = None;
    converse(t, &get_family(name, seq), seq, |m| {
        if m.kind == GENL_ID_CTRL && id.is_none() {
            id = family_id(m.payload)?;
            commands = family_commands(m.payload)?;
        }
        Ok(())
    })?;
    let id = id.ok_or_else(|| invalid(NlError::BadState(format!("no id for family {name}"))))?;
    Ok(FamilyInfo { id, commands })
}

/// The id of generic netlink family `name` (ENOENT from the kernel if there is none).
pub fn resolve_family<T: Transport + ?Sized>(
    t: &mut T,
    name: &str,
    seq: u32,
) -> std::io::Result<u16> {
    resolve_family_info(t, name, seq).map(|f| f.id)
}

/// pf's status: ruleset checksum, host id, running. EOPNOTSUPP from a kernel without
/// `PFNL_CMD_GET_STATUS` (14.0).
pub fn read_status<T: Transport + ?Sized>(
    t: &mut T,
    family: u16,
    seq: u32,
) -> std::io::Result<PfStatus> {
    let mut status = None;
    converse(t, &get_status(family, seq), seq, |m| {
        if m.kind == family && status.is_none() {
            status = Some(decode_status(m.payload)?);
        }
        Ok(())
    })?;
    status.ok_or_else(|| invalid(NlError::BadState("no answer to GET_STATUS".into())))
}

/// pf's ruleset checksum, for the pfsync header.
pub fn read_checksum<T: Transport + ?Sized>(
    t: &mut T,
    family: u16,
    seq: u32,
) -> std::io::Result<[u8; 16]> {
    read_status(t, family, seq).map(|s| s.checksum)
}

/// Kills the state `id` of `creatorid`; how many the kernel killed (0 or 1).
///
/// Id 0 or creator id 0 is refused with EINVAL before anything is sent: the kernel
/// takes id 0 as "no id", kills by its other (here empty) filters, and an empty filter
/// matches every state (`pf_killstates` → `pf_killstates_row`); creator id 0 it
/// replaces with its own host id.
pub fn kill_state<T: Transport + ?Sized>(
    t: &mut T,
    family: u16,
    seq: u32,
    creatorid: u32,
    id: u64,
) -> std::io::Result<u32> {
    if id == 0 || creatorid == 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut killed = None;
    converse(t, &kill_states(family, seq, creatorid, id), seq, |m| {
        if m.kind == family && killed.is_none() {
            killed = decode_killed(m.payload)?;
        }
        Ok(())
    })?;
    killed.ok_or_else(|| invalid(NlError::BadState("no PF_CS_KILLED in the answer".into())))
}

/// Every state pf holds, by the pf family's dump, appended to `out`; states that do not
/// decode are skipped and their number returned. When states were listed and none
/// decodes, the listing is an error (InvalidData), never an empty table. A dump the
/// kernel ends with an errno in its DONE (it stopped short) is that errno; a dump that
/// just stops (FreeBSD's writer out of memory aborts the DONE too) ends in the socket's
/// receive timeout. On any error `out` may hold part of the states: not a listing.
pub fn dump_states<T: Transport + ?Sized>(
    t: &mut T,
    family: u16,
    seq: u32,
    out: &mut Vec<State>,
) -> std::io::Result<u64> {
    let mut skipped = 0;
    let mut listed = 0u64;
    let mut first_error = None;
    converse(t, &get_states(family, seq), seq, |m| {
        if m.kind == family {
            match decode_state(m.payload) {
                Ok(s) => {
                    out.push(s);
                    listed += 1;
                }
                Err(e) => {
                    skipped += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        Ok(())
    })?;
    // A kernel whose every state fails is one this decoder does not understand: an empty
    // table would make us announce the deletion of everything.
    if listed == 0 {
        if let Some(e) = first_error {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("none of the {skipped} states pf listed could be read: {e}"),
            ));
        }
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds attributes as FreeBSD's `nl_writer` does (`nlattr_add`, padded to 4).
    struct W(Vec<u8>);

    impl W {
        fn attr(&mut self, kind: u16, v: &[u8]) -> &mut W {
            let len = (NLA_HDRLEN + v.len()) as u16;
            self.0.extend_from_slice(&len.to_ne_bytes());
            self.0.extend_from_slice(&kind.to_ne_bytes());
            self.0.extend_from_slice(v);
            self.0.resize(pad(self.0.len()), 0);
            self
        }
        /// `nlattr_add_nested`: FreeBSD writes the bare type, without `NLA_F_NESTED`.
        fn nested(&mut self, kind: u16, inner: &W) -> &mut W {
            self.attr(kind, &inner.0)
        }
    }

    /// Which `dump_state_key` wrote the keys.
    #[derive(Clone, Copy, PartialEq)]
    enum Keys {
        /// 14.0 and 14.x: addresses and ports only.
        Fb14,
        /// 15 (main): and `PF_STK_AF` (u8), `PF_STK_PROTO` (u16).
        Fb15,
    }

    /// A TCP state in the order and sizes `dump_state` writes them.
    fn tcp_state_message_of(keys: Keys) -> Vec<u8> {
        let mut key = W(Vec::new());
        key.attr(stk::ADDR0, &[10, 0, 0, 1])
            .attr(stk::ADDR1, &[10, 0, 0, 2])
            .attr(stk::PORT0, &40000u16.to_be_bytes())
            .attr(stk::PORT1, &443u16.to_be_bytes());
        if keys == Keys::Fb15 {
            key.attr(stk::AF, &[2])
                .attr(stk::PROTO, &6u16.to_ne_bytes());
        }
        let mut peer = W(Vec::new());
        peer.attr(stp::SEQLO, &1000u32.to_ne_bytes())
            .attr(stp::SEQHI, &2000u32.to_ne_bytes())
            .attr(stp::SEQDIFF, &0u32.to_ne_bytes())
            .attr(stp::MAX_WIN, &65535u16.to_ne_bytes())
            .attr(stp::MSS, &1460u16.to_ne_bytes())
            .attr(stp::STATE, &[4])
            .attr(stp::WSCALE, &[0x87]);
        let mut m = W(vec![PFNL_CMD_GETSTATES, 0, 0, 0]);
        m.attr(28, &1u64.to_ne_bytes()) // PF_ST_VERSION, skipped
            .nested(st::KEY_WIRE, &key)
            .nested(st::KEY_STACK, &key)
            .attr(st::PROTO, &[6])
            .attr(st::AF, &[2])
            .attr(st::IFNAME, b"vtnet0\0")
            .attr(st::ORIG_IFNAME, b"vtnet0\0")
            .attr(st::CREATION, &30u32.to_ne_bytes())
            .attr(st::EXPIRE, &86370u32.to_ne_bytes())
            .attr(st::DIRECTION, &[1])
            .attr(st::LOG, &[0])
            .attr(st::TIMEOUT, &[2])
            .attr(st::STATE_FLAGS, &0u16.to_ne_bytes())
            .attr(st::SYNC_FLAGS, &[0])
            .attr(st::ID, &[0, 0, 0, 0, 0, 0, 0x12, 0x34])
            .attr(st::CREATORID, &0xdead_beefu32.to_ne_bytes())
            .attr(st::RULE, &u32::MAX.to_ne_bytes())
            .attr(st::ANCHOR, &u32::MAX.to_ne_bytes())
            .attr(st::NAT_RULE, &u32::MAX.to_ne_bytes())
            .attr(st::PACKETS0, &5u64.to_ne_bytes())
            .attr(st::BYTES1, &900u64.to_ne_bytes())
            .attr(st::RTABLEID, &u32::MAX.to_ne_bytes())
            .attr(st::RT, &[0])
            .nested(st::PEER_SRC, &peer)
            .nested(st::PEER_DST, &peer);
        m.0
    }

    fn tcp_state_message() -> Vec<u8> {
        tcp_state_message_of(Keys::Fb15)
    }

    #[test]
    fn a_tcp_state_decodes() {
        let s = decode_state(&tcp_state_message()).unwrap();
        assert_eq!(s.id, 0x1234);
        assert_eq!(s.creatorid, 0xdead_beef);
        assert_eq!(s.ifname, IfName::new("vtnet0").unwrap());
        assert_eq!(s.wire.port, [40000, 443]);
        assert_eq!(s.wire.addr[1], "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(s.wire.proto, Protocol::Tcp);
        assert_eq!(s.src.seqlo, 1000);
        assert_eq!(
            s.src.state,
            PeerState::Tcp(crate::state::TcpState::Established)
        );
        assert_eq!(s.timeout, Timeout::TcpEstablished);
        assert_eq!((s.rule, s.rtableid), (None, None));
        assert_eq!((s.age_secs, s.expire_secs), (30, 86370));
        assert_eq!((s.packets[0], s.bytes[1]), (5, 900));
    }

    #[test]
    fn truncated_and_random_input_are_errors_not_panics() {
        let m = tcp_state_message();
        for cut in 0..m.len() {
            let _ = decode_state(&m[..cut]);
        }
        let mut x: u64 = 99;
        for len in 0..2000 {
            let b: Vec<u8> = (0..len % 400)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode_state(&b);
            for m in messages(&b) {
                let _ = m;
            }
            let _ = family_id(&b);
        }
        // A zero-length attribute does not loop.
        let mut z = vec![PFNL_CMD_GETSTATES, 0, 0, 0];
        z.extend_from_slice(&[0, 0, 1, 0]);
        assert!(matches!(decode_state(&z), Err(NlError::Truncated(_))));
        // A u32 attribute of 3 bytes.
        let mut w = W(vec![1, 0, 0, 0]);
        w.attr(st::CREATORID, &[1, 2, 3]);
        assert!(matches!(
            decode_state(&w.0),
            Err(NlError::BadAttribute { .. })
        ));
    }

    #[test]
    fn the_checksum_is_found_in_a_status_answer() {
        let mut m = W(vec![PFNL_CMD_GET_STATUS, 0, 0, 0]);
        m.attr(1, b"pflog0\0").attr(PF_GS_CHKSUM, &[7u8; 16]);
        assert_eq!(decode_checksum(&m.0).unwrap(), Some([7u8; 16]));
        let mut short = W(vec![PFNL_CMD_GET_STATUS, 0, 0, 0]);
        short.attr(PF_GS_CHKSUM, &[7u8; 15]);
        assert!(decode_checksum(&short.0).is_err());
    }

    #[test]
    fn requests_are_framed_as_netlink_wants() {
        let r = get_family(PF_FAMILY, 7);
        // nlmsghdr 16 + genlmsghdr 4 + attr (4 + "pfctl\0" = 10, padded to 12).
        assert_eq!(r.len(), 32);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 32);
        assert_eq!(
            u16::from_ne_bytes(r[4..6].try_into().unwrap()),
            GENL_ID_CTRL
        );
        assert_eq!(r[16], CTRL_CMD_GETFAMILY);
        assert_eq!(&r[24..30], b"pfctl\0");
        let d = get_states(33, 8);
        assert_eq!(d.len(), 20);
        assert_eq!(
            u16::from_ne_bytes(d[6..8].try_into().unwrap()),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP
        );
        let both = [r.clone(), d.clone()].concat();
        let msgs: Vec<_> = messages(&both).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1].kind, 33);
    }

    #[test]
    fn fourteen_s_keys_take_the_state_s_family_and_protocol() {
        let a = decode_state(&tcp_state_message_of(Keys::Fb14)).unwrap();
        let b = decode_state(&tcp_state_message_of(Keys::Fb15)).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            (a.wire.af, a.wire.proto),
            (AddressFamily::Inet, Protocol::Tcp)
        );
        assert_eq!(
            (a.stack.af, a.stack.proto),
            (AddressFamily::Inet, Protocol::Tcp)
        );
        // Linux's nesting flag on the same attributes changes nothing.
        let mut flagged = W(vec![PFNL_CMD_GETSTATES, 0, 0, 0]);
        let plain = tcp_state_message_of(Keys::Fb14);
        for at in attributes(&plain[GENL_HDRLEN..]) {
            let (kind, v) = at.unwrap();
            let nested = matches!(
                kind,
                st::KEY_WIRE | st::KEY_STACK | st::PEER_SRC | st::PEER_DST
            );
            flagged.attr(if nested { kind | NLA_F_NESTED } else { kind }, v);
        }
        assert_eq!(decode_state(&flagged.0).unwrap(), a);
    }

    #[test]
    fn a_key_without_any_family_is_an_error() {
        let mut m = W(vec![PFNL_CMD_GETSTATES, 0, 0, 0]);
        let mut key = W(Vec::new());
        key.attr(stk::ADDR0, &[10, 0, 0, 1]);
        m.nested(st::KEY_WIRE, &key)
            .attr(st::ID, &[0, 0, 0, 0, 0, 0, 0, 1])
            .attr(st::CREATORID, &1u32.to_ne_bytes());
        assert!(matches!(decode_state(&m.0), Err(NlError::BadState(_))));
    }

    #[test]
    fn the_expire_of_an_expired_state_is_clamped_to_its_class() {
        let at = |expire: u32, timeout: u8| {
            let mut m = W(Vec::new());
            for a in attributes(&tcp_state_message()[GENL_HDRLEN..]) {
                let (kind, v) = a.unwrap();
                match kind {
                    st::EXPIRE => m.attr(kind, &expire.to_ne_bytes()),
                    st::TIMEOUT => m.attr(kind, &[timeout]),
                    _ => m.attr(kind, v),
                };
            }
            let mut genl = vec![PFNL_CMD_GETSTATES, 0, 0, 0];
            genl.extend_from_slice(&m.0);
            decode_state(&genl).unwrap().expire_secs
        };
        // tcp.established, udp.multiple: seconds left pass; an uptime-sized value does not.
        assert_eq!(at(86370, 2), 86370);
        assert_eq!(at(4_000_000, 2), 86400);
        assert_eq!(at(25, 8), 25);
        assert_eq!(at(4_000_000, 8), 60);
    }

    #[test]
    fn errnos_of_either_sign_are_the_same_errno() {
        let ack = |e: i32| {
            let mut p = e.to_ne_bytes().to_vec();
            p.extend_from_slice(&[0u8; 16]);
            error_of(&p)
        };
        assert_eq!(ack(2), Ok(2));
        assert_eq!(ack(-2), Ok(2));
        assert_eq!(ack(0), Ok(0));
        assert!(ack(i32::MIN).is_err());
        assert!(error_of(&[1, 2]).is_err());
        assert_eq!(done_error_of(&12i32.to_ne_bytes()), Ok(12));
        assert_eq!(done_error_of(&0i32.to_ne_bytes()), Ok(0));
        assert_eq!(done_error_of(&[]), Ok(0));
    }

    #[test]
    fn the_controller_s_command_list_is_read() {
        let mut ops = W(Vec::new());
        for (i, cmd) in [1u32, 9, 11].iter().enumerate() {
            let mut op = W(Vec::new());
            op.attr(CTRL_ATTR_OP_ID, &cmd.to_ne_bytes())
                .attr(2, &6u32.to_ne_bytes());
            ops.nested(i as u16 + 1, &op);
        }
        let mut m = W(vec![1, 2, 0, 0]);
        m.attr(CTRL_ATTR_FAMILY_NAME, b"pfctl\0")
            .attr(CTRL_ATTR_FAMILY_ID, &19u16.to_ne_bytes())
            .nested(CTRL_ATTR_OPS, &ops);
        assert_eq!(family_id(&m.0), Ok(Some(19)));
        assert_eq!(family_commands(&m.0), Ok(Some(vec![1, 9, 11])));
        let mut bare = W(vec![1, 2, 0, 0]);
        bare.attr(CTRL_ATTR_FAMILY_ID, &19u16.to_ne_bytes());
        assert_eq!(family_commands(&bare.0), Ok(None));
        let info = FamilyInfo {
            id: 19,
            commands: None,
        };
        assert_eq!(info.has_command(9), None);
    }

    #[test]
    fn status_and_kill_answers_are_read() {
        let mut m = W(vec![PFNL_CMD_GET_STATUS, 0, 0, 0]);
        m.attr(1, b"\0")
            .attr(PF_GS_RUNNING, &[1])
            .attr(PF_GS_HOSTID, &0x0102_0304u32.to_ne_bytes())
            .attr(PF_GS_CHKSUM, &[9u8; 16]);
        let st = decode_status(&m.0).unwrap();
        assert_eq!(
            (st.hostid, st.running, st.checksum),
            (0x0102_0304, true, [9; 16])
        );
        let mut partial = W(vec![PFNL_CMD_GET_STATUS, 0, 0, 0]);
        partial.attr(PF_GS_CHKSUM, &[9u8; 16]);
        assert!(decode_status(&partial.0).is_err());
        let mut k = W(vec![PFNL_CMD_KILLSTATES, 0, 0, 0]);
        k.attr(PF_CS_KILLED, &1u32.to_ne_bytes());
        assert_eq!(decode_killed(&k.0), Ok(Some(1)));
        // The kill request: id and creator id as the kernel keeps them, big-endian.
        let r = kill_states(19, 5, 0x0a0b_0c0d, 0x1122_3344_5566_7788);
        let attrs: Vec<_> = attributes(&r[NLMSG_HDRLEN + GENL_HDRLEN..])
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(r[NLMSG_HDRLEN], PFNL_CMD_KILLSTATES);
        assert_eq!(
            attrs,
            vec![
                (PF_CS_CMP_ID, &0x1122_3344_5566_7788u64.to_be_bytes()[..]),
                (PF_CS_CMP_CREATORID, &0x0a0b_0c0du32.to_be_bytes()[..]),
            ]
        );
    }

    /// The numbers above, against FreeBSD 15's headers.
    #[cfg(pfsyncd_oracle)]
    #[test]
    fn numbers_match_the_freebsd_headers() {
        use crate::sys::freebsd as f;
        use crate::wire::RouteType;
        assert_eq!(PFNL_CMD_GETSTATES as u32, f::PFNL_CMD_GETSTATES);
        assert_eq!(u32::from(st::ID), f::PF_ST_ID);
        assert_eq!(PFNL_CMD_GET_STATUS as u32, f::PFNL_CMD_GET_STATUS);
        assert_eq!(u32::from(PF_GS_CHKSUM), f::PF_GS_CHKSUM);
        assert_eq!(u32::from(st::CREATORID), f::PF_ST_CREATORID);
        assert_eq!(u32::from(st::KEY_WIRE), f::PF_ST_KEY_WIRE);
        assert_eq!(u32::from(st::PEER_DST), f::PF_ST_PEER_DST);
        assert_eq!(u32::from(st::PACKETS0), f::PF_ST_PACKETS0);
        assert_eq!(u32::from(st::PROTO), f::PF_ST_PROTO);
        assert_eq!(u32::from(st::STATE_FLAGS), f::PF_ST_STATE_FLAGS);
        assert_eq!(u32::from(st::RTABLEID), f::PF_ST_RTABLEID);
        assert_eq!(u32::from(st::RT_IFNAME), f::PF_ST_RT_IFNAME);
        assert_eq!(u32::from(stk::PROTO), f::PF_STK_PROTO);
        assert_eq!(u32::from(stp::WSCALE), f::PF_STP_WSCALE);
        assert_eq!(u32::from(stp::SCRUB_FLAG), f::PF_STP_SCRUB_FLAG);
        // PF_CS_* and CTRL_ATTR_OP_ID are not in build.rs's allowlist (its owner may add
        // pf_clear_states_type_t and the CTRL_ATTR_OP enum); pf_nl.h of 15 has them as
        // 1, 2, 13 and 1.
        assert_eq!(PFNL_CMD_KILLSTATES as u32, f::PFNL_CMD_KILLSTATES);
        assert_eq!(u32::from(PF_GS_RUNNING), f::PF_GS_RUNNING);
        assert_eq!(u32::from(PF_GS_HOSTID), f::PF_GS_HOSTID);
        assert_eq!(u32::from(CTRL_ATTR_OPS), f::CTRL_ATTR_OPS);
        assert_eq!(u32::from(NLM_F_DUMP), f::NLM_F_DUMP);
        assert_eq!(u32::from(NLMSG_DONE), f::NLMSG_DONE);
        assert_eq!(NLA_F_NESTED as u32, f::NLA_F_NESTED);
        assert_eq!(u32::from(CTRL_ATTR_FAMILY_NAME), f::CTRL_ATTR_FAMILY_NAME);
        assert_eq!(CTRL_CMD_GETFAMILY as u32, f::CTRL_CMD_GETFAMILY);
        assert_eq!(u32::from(GENL_ID_CTRL), f::GENL_ID_CTRL);
        // FreeBSD's route types as the RT attribute numbers them.
        let d = crate::wire::Dialect::FreeBsd1500;
        assert_eq!(d.rt_type(f::PF_ROUTETO as u8), Some(RouteType::RouteTo));
        assert_eq!(d.rt_type(f::PF_DUPTO as u8), Some(RouteType::DupTo));
        assert_eq!(d.rt_type(f::PF_REPLYTO as u8), Some(RouteType::ReplyTo));
        assert_eq!(f::AF_INET6, 28);
        assert_eq!(std::mem::size_of::<f::nlmsghdr>(), NLMSG_HDRLEN);
        assert_eq!(std::mem::size_of::<f::genlmsghdr>(), GENL_HDRLEN);
        assert_eq!(std::mem::size_of::<f::nlattr>(), NLA_HDRLEN);
    }
}
