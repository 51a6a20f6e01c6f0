//! Renderings of pfsync packets for people and for programs, shared by `pfsyncd decode`
//! and the daemon's logs.
//!
//! Text is tcpdump-like: a header line (time, IP addresses and TTL when known, then
//! `PFSYNCv<version> len <len> <dialect>`), then one indented line per message, skipped
//! run, EOF or error. State records read like `pfctl -ss -v` on one line.
//!
//! JSON is one object per packet, whose messages carry the kernel structures' own field
//! names (`id`, `creatorid`, `ifname`, `key[].addr`, `src.seqlo`, `expire`, …), ids as
//! hex strings, addresses and names as text.
//!
//! Addresses in state records are printed in the address family of the record's own
//! dialect: `AF_INET6` is 24 in OpenBSD records and 28 in FreeBSD ones.

use core::fmt::{self, Display, Formatter};
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::wire::header::HeaderRepr;
use crate::wire::msg::bus::{STATUS_END, STATUS_START};
use crate::wire::msg::{
    BusRepr, ClrRepr, KeyFreeBsdRepr, KeyOpenBsdRepr, PeerRepr, State1301Repr, State1400Repr,
    State1500Repr, StateOpenBsdRepr, StateRecord, StateRefRepr, TdbFreeBsdRepr, TdbOpenBsdRepr,
    UpdCRepr,
};
use crate::wire::{
    Dialect, Error, Family, IfName, Item, Message, Name, PacketReader, PfAddr, RecordFormat,
    RouteType,
};

/// What carried a packet, and when: everything the pfsync payload does not say itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Frame number in a capture file.
    pub frame: Option<u64>,
    /// Time since the Unix epoch.
    pub time: Option<Duration>,
    /// The IP header, when the packet came with one.
    pub ip: Option<IpEnvelope>,
}

/// The IP header fields worth showing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpEnvelope {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
}

// ---------------------------------------------------------------------------------------
// Text

/// A packet as text: the header line and one indented line per item, without a final
/// newline. A payload whose header is refused gives the header line and its error.
pub fn text<'a>(envelope: &'a Envelope, payload: &'a [u8]) -> PacketText<'a> {
    PacketText { envelope, payload }
}

/// See [`text`].
#[derive(Debug, Clone, Copy)]
pub struct PacketText<'a> {
    envelope: &'a Envelope,
    payload: &'a [u8],
}

/// The TTL (hop limit) a receiving kernel requires; others count `badttl`.
pub const REQUIRED_TTL: u8 = 255;

/// How message lines are indented under their packet's header line.
pub const INDENT: &str = "    ";

impl Display for PacketText<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Prefix(self.envelope))?;
        // pfsyncd's own frames travel where pfsync packets do.
        if crate::wire::ext::is_ext(self.payload) {
            return write!(f, "{}", crate::wire::ext::pretty::FrameText(self.payload));
        }
        let reader = match PacketReader::new(self.payload) {
            Ok(reader) => reader,
            Err(e) => {
                return write!(
                    f,
                    "PFSYNC ({} bytes)\n{INDENT}{}",
                    self.payload.len(),
                    ErrorText(&e)
                )
            }
        };
        let header = reader.header();
        write!(
            f,
            "PFSYNCv{} len {} {}",
            header.version,
            header.len,
            sender_dialect(&reader)
        )?;
        if header.pfcksum != [0; 16] {
            write!(f, " cksum {}", hex(&header.pfcksum))?;
        }
        let dialect = reader.dialect();
        for item in reader.items() {
            write!(f, "\n{INDENT}{}", ItemText { item, dialect })?;
        }
        Ok(())
    }
}

/// The start of a header line: time of day (UTC), then `src > dst ttl N` (marked
/// `(badttl)` unless 255), then `: `. Empty when the envelope is.
#[derive(Debug, Clone, Copy)]
pub struct Prefix<'a>(pub &'a Envelope);

impl Display for Prefix<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if let Some(t) = self.0.time {
            let secs = t.as_secs() % 86_400;
            write!(
                f,
                "{:02}:{:02}:{:02}.{} ",
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                fraction(t.subsec_nanos())
            )?;
        }
        if let Some(ip) = self.0.ip {
            write!(f, "{} > {} ttl {}", ip.src, ip.dst, ip.ttl)?;
            // Both kernels drop pfsync packets that crossed a router; say so, as this is
            // a classic reason for states not to arrive.
            if ip.ttl != REQUIRED_TTL {
                f.write_str(" (badttl)")?;
            }
            f.write_str(": ")?;
        }
        Ok(())
    }
}

/// One item of a packet walk, as a line (no indent).
#[derive(Debug, Clone, Copy)]
pub struct ItemText {
    /// What the reader yielded.
    pub item: crate::wire::Result<Item>,
    /// The dialect it was read with (names skipped actions).
    pub dialect: Dialect,
}

impl Display for ItemText {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.item {
            Ok(Item::Message(m)) => write!(f, "{}", MessageText(m)),
            Ok(Item::Skipped { action, count, len }) => {
                write!(f, "skipped action {action}")?;
                if let Some(a) = self.dialect.action(*action) {
                    write!(f, " {}", a.name())?;
                }
                write!(f, " count {count} ({len} bytes)")
            }
            Ok(Item::Eof) => f.write_str("EOF"),
            Err(e) => write!(f, "{}", ErrorText(e)),
        }
    }
}

/// A codec error as `error: <message> (counter <name>)`.
#[derive(Debug, Clone, Copy)]
pub struct ErrorText<'a>(pub &'a Error);

impl Display for ErrorText<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "error: {} (counter {})", self.0, self.0.counter())
    }
}

/// One message as a line (no indent), starting with its action name.
#[derive(Debug, Clone, Copy)]
pub struct MessageText<'a>(pub &'a Message);

impl Display for MessageText<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let m = self.0;
        f.write_str(m.action().name())?;
        match m {
            Message::Ins(s) | Message::Upd(s) | Message::Del(s) => {
                write!(f, " {}", StateText(&StateView::of(s)))
            }
            Message::UpdC(u) => write_upd_c(f, u),
            Message::UpdReq(r) if r.is_bulk_request() => f.write_str(" bulk update request"),
            Message::InsAck(r) | Message::UpdReq(r) | Message::DelC(r) => {
                write!(f, " {}", Ident(r.id, r.creatorid))
            }
            Message::Bus(b) => {
                write!(
                    f,
                    " creatorid: {:08x} age: {} status: ",
                    b.creatorid,
                    Hms(b.endtime)
                )?;
                match b.status {
                    STATUS_START => f.write_str("start"),
                    STATUS_END => f.write_str("end"),
                    other => write!(f, "{other}"),
                }
            }
            Message::Clr(c) => {
                write!(f, " creatorid: {:08x} interface: ", c.creatorid)?;
                if c.ifname.is_empty() {
                    f.write_str("(all)")
                } else {
                    write!(f, "{}", c.ifname)
                }
            }
            Message::TdbOpenBsd(t) => write!(
                f,
                " spi: 0x{:08x} dst: {} sproto: {} rpl: {} cur_bytes: {} rdomain: {}",
                t.spi,
                sockaddr_text(&t.dst, Family::OpenBsd),
                ipsec_proto(t.sproto),
                t.rpl,
                t.cur_bytes,
                t.rdomain
            ),
            Message::TdbFreeBsd(t) => write!(
                f,
                " spi: 0x{:08x} dst: {} sproto: {} rpl: {} cur_bytes: {}",
                t.spi,
                sockaddr_text(&t.dst, Family::FreeBsd),
                ipsec_proto(t.sproto),
                t.rpl,
                t.cur_bytes
            ),
        }
    }
}

/// `id: %016x creatorid: %08x`, as the BSD tcpdump printers show a state's identity.
struct Ident(u64, u32);

impl Display for Ident {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "id: {:016x} creatorid: {:08x}", self.0, self.1)
    }
}

fn write_upd_c(f: &mut Formatter<'_>, u: &UpdCRepr) -> fmt::Result {
    write!(f, " {}", Ident(u.id, u.creatorid))?;
    // A compressed update does not say its protocol; the timeout class does.
    let class = match u.timeout {
        0..=5 => PeerClass::Tcp,
        6..=13 => PeerClass::Levels,
        _ => PeerClass::Numbers,
    };
    write!(
        f,
        " {}:{} timeout {}",
        PeerStateName(class, u.src.state),
        PeerStateName(class, u.dst.state),
        TimeoutName(u.timeout)
    )
}

/// A state record in neutral form, for the text line: each layout puts the same facts
/// in different fields.
struct StateView<'a> {
    family: Family,
    id: u64,
    creatorid: u32,
    ifname: &'a IfName,
    /// Wire key, stack key: addresses, ports, address family, protocol.
    keys: [KeyView; 2],
    direction: u8,
    src: &'a PeerRepr,
    dst: &'a PeerRepr,
    timeout: u8,
    creation: u32,
    expire: u32,
    packets: [u64; 2],
    bytes: [u64; 2],
    rule: u32,
    rt: Option<u8>,
    rt_addr: PfAddr,
    rt_af: u8,
    rt_ifname: Option<&'a IfName>,
    rtableid: Option<i32>,
    tagname: Option<&'a Name<64>>,
    orig_ifname: Option<&'a IfName>,
}

#[derive(Clone, Copy)]
struct KeyView {
    addr: [PfAddr; 2],
    port: [u16; 2],
    af: u8,
    proto: u8,
}

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_SCTP: u8 = 132;

impl<'a> StateView<'a> {
    fn of(record: &'a StateRecord) -> Self {
        match record {
            StateRecord::OpenBsd(s) => Self::openbsd(s),
            StateRecord::FreeBsd1301(s) => Self::freebsd_1301(s),
            StateRecord::FreeBsd1400(s) => Self::freebsd_1400(s),
            StateRecord::FreeBsd1500(s) => Self::freebsd_1500(s),
        }
    }

    fn openbsd(s: &'a StateOpenBsdRepr) -> Self {
        let key_af = |k: &KeyOpenBsdRepr| if k.af == 0 { s.af } else { k.af };
        let (wire_af, stack_af) = (key_af(&s.key[0]), key_af(&s.key[1]));
        // An af-to state translates ICMP to ICMPv6 or back between its keys.
        let stack_proto = match s.proto {
            IPPROTO_ICMP if wire_af != stack_af => IPPROTO_ICMPV6,
            IPPROTO_ICMPV6 if wire_af != stack_af => IPPROTO_ICMP,
            p => p,
        };
        let key = |k: &KeyOpenBsdRepr, af, proto| KeyView {
            addr: k.addr,
            port: k.port,
            af,
            proto,
        };
        StateView {
            family: Family::OpenBsd,
            id: s.id,
            creatorid: s.creatorid,
            ifname: &s.ifname,
            keys: [
                key(&s.key[0], wire_af, s.proto),
                key(&s.key[1], stack_af, stack_proto),
            ],
            direction: s.direction,
            src: &s.src,
            dst: &s.dst,
            timeout: s.timeout,
            creation: s.creation,
            expire: s.expire,
            packets: s.packets,
            bytes: s.bytes,
            rule: s.rule,
            rt: Some(s.rt),
            rt_addr: s.rt_addr,
            rt_af: s.af,
            rt_ifname: None,
            rtableid: Some(s.rtableid[0]),
            tagname: None,
            orig_ifname: None,
        }
    }

    fn freebsd_keys(key: &[KeyFreeBsdRepr; 2], af: [u8; 2], proto: [u8; 2]) -> [KeyView; 2] {
        [0, 1].map(|i| KeyView {
            addr: key[i].addr,
            port: key[i].port,
            af: af[i],
            proto: proto[i],
        })
    }

    fn freebsd_1301(s: &'a State1301Repr) -> Self {
        StateView {
            family: Family::FreeBsd,
            id: s.id,
            creatorid: s.creatorid,
            ifname: &s.ifname,
            keys: Self::freebsd_keys(&s.key, [s.af; 2], [s.proto; 2]),
            direction: s.direction,
            src: &s.src,
            dst: &s.dst,
            timeout: s.timeout,
            creation: s.creation,
            expire: s.expire,
            packets: s.packets,
            bytes: s.bytes,
            rule: s.rule,
            rt: None,
            rt_addr: s.rt_addr,
            rt_af: s.af,
            rt_ifname: None,
            rtableid: None,
            tagname: None,
            orig_ifname: None,
        }
    }

    fn freebsd_1400(s: &'a State1400Repr) -> Self {
        StateView {
            family: Family::FreeBsd,
            id: s.id,
            creatorid: s.creatorid,
            ifname: &s.ifname,
            keys: Self::freebsd_keys(&s.key, [s.af; 2], [s.proto; 2]),
            direction: s.direction,
            src: &s.src,
            dst: &s.dst,
            timeout: s.timeout,
            creation: s.creation,
            expire: s.expire,
            packets: s.packets,
            bytes: s.bytes,
            rule: s.rule,
            rt: Some(s.rt),
            rt_addr: s.rt_addr,
            rt_af: s.af,
            rt_ifname: Some(&s.rt_ifname),
            rtableid: Some(s.rtableid),
            tagname: None,
            orig_ifname: None,
        }
    }

    fn freebsd_1500(s: &'a State1500Repr) -> Self {
        StateView {
            family: Family::FreeBsd,
            id: s.id,
            creatorid: s.creatorid,
            ifname: &s.ifname,
            keys: Self::freebsd_keys(
                &s.key,
                [s.wire_af, s.stack_af],
                [s.wire_proto, s.stack_proto],
            ),
            direction: s.direction,
            src: &s.src,
            dst: &s.dst,
            timeout: s.timeout,
            creation: s.creation,
            expire: s.expire,
            packets: s.packets,
            bytes: s.bytes,
            rule: s.rule,
            rt: Some(s.rt),
            rt_addr: s.rt_addr,
            rt_af: if s.rt_af == 0 { s.wire_af } else { s.rt_af },
            rt_ifname: Some(&s.rt_ifname),
            rtableid: Some(s.rtableid),
            tagname: Some(&s.tagname),
            orig_ifname: Some(&s.orig_ifname),
        }
    }

    fn inet6(&self) -> u8 {
        inet6_of(self.family)
    }
}

/// `AF_INET6` as the records of a family number it.
fn inet6_of(family: Family) -> u8 {
    match family {
        Family::OpenBsd => Dialect::OpenBsd.af_inet6(),
        Family::FreeBsd => Dialect::FreeBsd1500.af_inet6(),
    }
}

/// The dialect whose numbering (route types) a family's records use.
fn numbering_of(family: Family) -> Dialect {
    match family {
        Family::OpenBsd => Dialect::OpenBsd,
        Family::FreeBsd => Dialect::FreeBsd1500,
    }
}

/// A key's flow from the side that opened the connection to the other: for an inbound
/// state index 0 is the packet source, for an outbound one index 1 is.
struct Flow<'a>(&'a KeyView, u8, u8);

impl Display for Flow<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let Flow(key, direction, inet6) = *self;
        let (from, to) = if direction == 2 { (1, 0) } else { (0, 1) };
        write!(
            f,
            "{} -> {}",
            HostPort(&key.addr[from], key.port[from], key.af, inet6),
            HostPort(&key.addr[to], key.port[to], key.af, inet6)
        )
    }
}

/// `a.b.c.d:port` or `v6addr[port]` as pfctl writes them; no port when it is 0.
struct HostPort<'a>(&'a PfAddr, u16, u8, u8);

impl Display for HostPort<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let HostPort(addr, port, af, inet6) = *self;
        let text = addr_text(addr, af, inet6);
        match (port, af == inet6) {
            (0, _) => f.write_str(&text),
            (p, true) => write!(f, "{text}[{p}]"),
            (p, false) => write!(f, "{text}:{p}"),
        }
    }
}

struct StateText<'a>(&'a StateView<'a>);

impl Display for StateText<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let inet6 = s.inet6();
        let [wire, stack] = &s.keys;
        write!(
            f,
            "{} {} {} {}",
            Ident(s.id, s.creatorid),
            s.ifname,
            ProtoName(wire.proto),
            Flow(wire, s.direction, inet6)
        )?;
        let same = wire.addr == stack.addr
            && wire.port == stack.port
            && wire.af == stack.af
            && wire.proto == stack.proto;
        if !same {
            write!(f, " (stack")?;
            if stack.proto != wire.proto {
                write!(f, " {}", ProtoName(stack.proto))?;
            }
            write!(f, " {})", Flow(stack, s.direction, inet6))?;
        }
        match s.direction {
            1 => f.write_str(" in")?,
            2 => f.write_str(" out")?,
            other => write!(f, " direction {other}")?,
        }
        let class = match wire.proto {
            IPPROTO_TCP => PeerClass::Tcp,
            IPPROTO_SCTP => PeerClass::Numbers,
            _ => PeerClass::Levels,
        };
        write!(
            f,
            " {}:{} timeout {} age {} expires in {} pkts {}:{} bytes {}:{}",
            PeerStateName(class, s.src.state),
            PeerStateName(class, s.dst.state),
            TimeoutName(s.timeout),
            Hms(s.creation),
            Hms(s.expire),
            s.packets[0],
            s.packets[1],
            s.bytes[0],
            s.bytes[1]
        )?;
        if s.rule != u32::MAX {
            write!(f, " rule {}", s.rule)?;
        }
        if let Some(rt) = s.rt.filter(|&rt| rt != 0) {
            match numbering_of(s.family).rt_type(rt) {
                Some(kind) => f.write_str(route_name(kind))?,
                None => write!(f, " rt {rt}")?,
            }
            write!(f, " {}", addr_text(&s.rt_addr, s.rt_af, inet6))?;
            if let Some(name) = s.rt_ifname.filter(|n| !n.is_empty()) {
                write!(f, "@{name}")?;
            }
        }
        if let Some(rtable) = s.rtableid.filter(|&r| r > 0) {
            write!(f, " rtable {rtable}")?;
        }
        if let Some(tag) = s.tagname.filter(|t| !t.is_empty()) {
            write!(f, " tag {tag}")?;
        }
        if let Some(orig) = s.orig_ifname.filter(|o| !o.is_empty() && *o != s.ifname) {
            write!(f, " origif {orig}")?;
        }
        Ok(())
    }
}

fn route_name(kind: RouteType) -> &'static str {
    match kind {
        RouteType::None => "",
        RouteType::FastRoute => " fastroute",
        RouteType::RouteTo => " route-to",
        RouteType::DupTo => " dup-to",
        RouteType::ReplyTo => " reply-to",
    }
}

/// How to name a peer's state level.
#[derive(Clone, Copy)]
enum PeerClass {
    /// TCP: the TCP FSM states and pf's two proxy states.
    Tcp,
    /// UDP, ICMP and other protocols: pf's three traffic levels.
    Levels,
    /// SCTP or unknown: the number.
    Numbers,
}

struct PeerStateName(PeerClass, u8);

const TCP_STATES: [&str; 13] = [
    "CLOSED",
    "LISTEN",
    "SYN_SENT",
    "SYN_RCVD",
    "ESTABLISHED",
    "CLOSE_WAIT",
    "FIN_WAIT_1",
    "CLOSING",
    "LAST_ACK",
    "FIN_WAIT_2",
    "TIME_WAIT",
    "PROXY_SRC",
    "PROXY_DST",
];
const LEVELS: [&str; 3] = ["NO_TRAFFIC", "SINGLE", "MULTIPLE"];

impl Display for PeerStateName {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let names: &[&str] = match self.0 {
            PeerClass::Tcp => &TCP_STATES,
            PeerClass::Levels => &LEVELS,
            PeerClass::Numbers => &[],
        };
        match names.get(usize::from(self.1)) {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.1),
        }
    }
}

/// `PFTM_*` indices by the names `pfctl` gives the timeouts (FreeBSD adds SCTP at 20).
const TIMEOUTS: [&str; 25] = [
    "tcp.first",
    "tcp.opening",
    "tcp.established",
    "tcp.closing",
    "tcp.finwait",
    "tcp.closed",
    "udp.first",
    "udp.single",
    "udp.multiple",
    "icmp.first",
    "icmp.error",
    "other.first",
    "other.single",
    "other.multiple",
    "frag",
    "interval",
    "adaptive.start",
    "adaptive.end",
    "src.track",
    "tsdiff",
    "sctp.first",
    "sctp.opening",
    "sctp.established",
    "sctp.closing",
    "sctp.closed",
];

struct TimeoutName(u8);

impl Display for TimeoutName {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match TIMEOUTS.get(usize::from(self.0)) {
            Some(name) => f.write_str(name),
            None => write!(f, "{}", self.0),
        }
    }
}

struct ProtoName(u8);

impl Display for ProtoName {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            IPPROTO_ICMP => "icmp",
            IPPROTO_TCP => "tcp",
            IPPROTO_UDP => "udp",
            47 => "gre",
            50 => "esp",
            51 => "ah",
            IPPROTO_ICMPV6 => "icmp6",
            103 => "pim",
            112 => "carp",
            IPPROTO_SCTP => "sctp",
            other => return write!(f, "proto-{other}"),
        };
        f.write_str(name)
    }
}

fn ipsec_proto(p: u8) -> String {
    match p {
        50 => "esp".into(),
        51 => "ah".into(),
        108 => "ipcomp".into(),
        other => other.to_string(),
    }
}

/// Seconds as `HH:MM:SS` (hours may exceed 24), as pfctl shows ages.
struct Hms(u32);

impl Display for Hms {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let s = self.0;
        write!(f, "{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }
}

/// An address in the given family; in an unknown family, by its bytes' shape.
fn addr_text(addr: &PfAddr, af: u8, inet6: u8) -> String {
    if af == 2 {
        addr.v4().to_string()
    } else if af == inet6 {
        addr.v6().to_string()
    } else {
        format!("{addr:?}")
    }
}

/// The address in a `union sockaddr_union` (TDB `dst`), or its bytes in hex.
fn sockaddr_text(sa: &[u8; 28], family: Family) -> String {
    let inet6 = inet6_of(family);
    match sa[1] {
        2 => std::net::Ipv4Addr::new(sa[4], sa[5], sa[6], sa[7]).to_string(),
        af if af == inet6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&sa[8..24]);
            std::net::Ipv6Addr::from(octets).to_string()
        }
        _ => hex(sa),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sub-second digits: six, or nine when the time has nanoseconds.
fn fraction(nanos: u32) -> String {
    if nanos % 1000 == 0 {
        format!("{:06}", nanos / 1000)
    } else {
        format!("{nanos:09}")
    }
}

/// The sender's dialect as far as the packet shows it: `openbsd`; for FreeBSD the
/// record format its states use (`1301`, `1400`, `1500`), or `freebsd` when it carries
/// no state or several formats.
pub fn sender_dialect(reader: &PacketReader<'_>) -> &'static str {
    if reader.dialect().family() == Family::OpenBsd {
        return "openbsd";
    }
    let mut seen: Option<RecordFormat> = None;
    for message in reader.messages().flatten() {
        if let Message::Ins(s) | Message::Upd(s) | Message::Del(s) = message {
            match seen {
                None => seen = Some(s.format()),
                Some(f) if f == s.format() => {}
                Some(_) => return "freebsd",
            }
        }
    }
    seen.map_or("freebsd", RecordFormat::name)
}

// ---------------------------------------------------------------------------------------
// JSON

/// A packet as one JSON object: `frame`, `time`, `ip` (from the envelope, when known),
/// `header` (`version`, `len`, `pfcksum`), `dialect`, and `messages`, one entry per item
/// of the walk. A refused header gives `len` (bytes present), `error` and `counter`
/// instead of `header` and `messages`.
pub fn json(envelope: &Envelope, payload: &[u8]) -> Value {
    let mut object = envelope_json(envelope);
    if crate::wire::ext::is_ext(payload) {
        if let Value::Object(ext) = crate::wire::ext::pretty::frame_json(payload) {
            object.extend(ext);
        }
        return Value::Object(object);
    }
    match PacketReader::new(payload) {
        Err(e) => {
            object.insert("len".into(), payload.len().into());
            object.insert("error".into(), e.to_string().into());
            object.insert("counter".into(), e.counter().name().into());
        }
        Ok(reader) => {
            object.insert("header".into(), header_json(reader.header()));
            object.insert("dialect".into(), sender_dialect(&reader).into());
            let dialect = reader.dialect();
            let messages = reader.items().map(|item| item_json(&item, dialect));
            object.insert("messages".into(), Value::Array(messages.collect()));
        }
    }
    Value::Object(object)
}

/// The envelope's fields: `frame`, `time` (RFC 3339, UTC), `ip: {src, dst, ttl}`.
pub fn envelope_json(envelope: &Envelope) -> Map<String, Value> {
    let mut object = Map::new();
    if let Some(frame) = envelope.frame {
        object.insert("frame".into(), frame.into());
    }
    if let Some(time) = envelope.time {
        object.insert("time".into(), rfc3339(time).into());
    }
    if let Some(ip) = envelope.ip {
        object.insert(
            "ip".into(),
            json!({"src": ip.src.to_string(), "dst": ip.dst.to_string(), "ttl": ip.ttl}),
        );
    }
    object
}

fn header_json(h: &HeaderRepr) -> Value {
    json!({"version": h.version, "len": h.len, "pfcksum": hex(&h.pfcksum)})
}

/// One item of a packet walk: a message object, `{action, skipped: true, action_number,
/// count, len}`, `{action: "EOF"}`, or `{error, counter}`.
pub fn item_json(item: &crate::wire::Result<Item>, dialect: Dialect) -> Value {
    match item {
        Ok(Item::Message(m)) => message_json(m),
        Ok(Item::Skipped { action, count, len }) => json!({
            "action": dialect.action(*action).map_or("unknown", |a| a.name()),
            "action_number": action,
            "skipped": true,
            "count": count,
            "len": len,
        }),
        Ok(Item::Eof) => json!({"action": "EOF"}),
        Err(e) => error_json(e),
    }
}

/// `{error: <message>, counter: <pfsyncstats name>}`.
pub fn error_json(e: &Error) -> Value {
    json!({"error": e.to_string(), "counter": e.counter().name()})
}

/// One message: `action` and the record's fields under the kernel's names.
pub fn message_json(m: &Message) -> Value {
    let mut object = match m {
        Message::Ins(s) | Message::Upd(s) | Message::Del(s) => state_json(s),
        Message::UpdC(u) => upd_c_json(u),
        Message::InsAck(r) | Message::UpdReq(r) | Message::DelC(r) => state_ref_json(r),
        Message::Bus(b) => bus_json(b),
        Message::Clr(c) => clr_json(c),
        Message::TdbOpenBsd(t) => tdb_openbsd_json(t),
        Message::TdbFreeBsd(t) => tdb_freebsd_json(t),
    };
    object.insert("action".into(), m.action().name().into());
    Value::Object(object)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn id_hex(id: u64) -> String {
    format!("{id:016x}")
}

fn creator_hex(creatorid: u32) -> String {
    format!("{creatorid:08x}")
}

fn peer_json(p: &PeerRepr) -> Value {
    json!({
        "scrub": {
            "pfss_flags": p.pfss_flags,
            "pfss_ttl": p.pfss_ttl,
            "scrub_flag": p.scrub_flag,
            "pfss_ts_mod": p.pfss_ts_mod,
        },
        "seqlo": p.seqlo,
        "seqhi": p.seqhi,
        "seqdiff": p.seqdiff,
        "max_win": p.max_win,
        "mss": p.mss,
        "state": p.state,
        "wscale": p.wscale,
    })
}

fn addrs_json(addr: &[PfAddr; 2], af: u8, inet6: u8) -> Value {
    json!([
        addr_text(&addr[0], af, inet6),
        addr_text(&addr[1], af, inet6)
    ])
}

fn state_json(record: &StateRecord) -> Map<String, Value> {
    match record {
        StateRecord::OpenBsd(s) => openbsd_state_json(s),
        StateRecord::FreeBsd1301(s) => state_1301_json(s),
        StateRecord::FreeBsd1400(s) => state_1400_json(s),
        StateRecord::FreeBsd1500(s) => state_1500_json(s),
    }
}

fn openbsd_state_json(s: &StateOpenBsdRepr) -> Map<String, Value> {
    let inet6 = inet6_of(Family::OpenBsd);
    let key = |k: &KeyOpenBsdRepr| {
        let af = if k.af == 0 { s.af } else { k.af };
        json!({
            "addr": addrs_json(&k.addr, af, inet6),
            "port": k.port,
            "rdomain": k.rdomain,
            "af": k.af,
        })
    };
    object(json!({
        "id": id_hex(s.id),
        "ifname": s.ifname.to_string(),
        "key": [key(&s.key[0]), key(&s.key[1])],
        "src": peer_json(&s.src),
        "dst": peer_json(&s.dst),
        "rt_addr": addr_text(&s.rt_addr, s.af, inet6),
        "rule": s.rule,
        "anchor": s.anchor,
        "nat_rule": s.nat_rule,
        "creation": s.creation,
        "expire": s.expire,
        "packets": s.packets,
        "bytes": s.bytes,
        "creatorid": creator_hex(s.creatorid),
        "rtableid": s.rtableid,
        "max_mss": s.max_mss,
        "af": s.af,
        "proto": s.proto,
        "direction": s.direction,
        "log": s.log,
        "rt": s.rt,
        "timeout": s.timeout,
        "sync_flags": s.sync_flags,
        "updates": s.updates,
        "min_ttl": s.min_ttl,
        "set_tos": s.set_tos,
        "state_flags": s.state_flags,
        "set_prio": s.set_prio,
    }))
}

fn freebsd_keys_json(key: &[KeyFreeBsdRepr; 2], af: [u8; 2]) -> Value {
    let inet6 = inet6_of(Family::FreeBsd);
    json!([
        {"addr": addrs_json(&key[0].addr, af[0], inet6), "port": key[0].port},
        {"addr": addrs_json(&key[1].addr, af[1], inet6), "port": key[1].port},
    ])
}

/// The fields every FreeBSD layout shares (offsets 0 to 231).
macro_rules! freebsd_prefix_json {
    ($s:expr, $key_af:expr, $rt_af:expr) => {{
        let s = $s;
        let inet6 = inet6_of(Family::FreeBsd);
        json!({
            "id": id_hex(s.id),
            "ifname": s.ifname.to_string(),
            "key": freebsd_keys_json(&s.key, $key_af),
            "src": peer_json(&s.src),
            "dst": peer_json(&s.dst),
            "rt_addr": addr_text(&s.rt_addr, $rt_af, inet6),
            "rule": s.rule,
            "anchor": s.anchor,
            "nat_rule": s.nat_rule,
            "creation": s.creation,
            "expire": s.expire,
            "packets": s.packets,
            "bytes": s.bytes,
            "creatorid": creator_hex(s.creatorid),
        })
    }};
}

fn state_1301_json(s: &State1301Repr) -> Map<String, Value> {
    let mut o = object(freebsd_prefix_json!(s, [s.af; 2], s.af));
    o.extend(object(json!({
        "af": s.af,
        "proto": s.proto,
        "direction": s.direction,
        "log": s.log,
        "state_flags": s.state_flags,
        "timeout": s.timeout,
        "sync_flags": s.sync_flags,
        "updates": s.updates,
    })));
    o
}

fn state_1400_json(s: &State1400Repr) -> Map<String, Value> {
    let mut o = object(freebsd_prefix_json!(s, [s.af; 2], s.af));
    o.extend(object(json!({
        "af": s.af,
        "proto": s.proto,
        "direction": s.direction,
        "state_flags": s.state_flags,
        "log": s.log,
        "timeout": s.timeout,
        "sync_flags": s.sync_flags,
        "updates": s.updates,
        "qid": s.qid,
        "pqid": s.pqid,
        "dnpipe": s.dnpipe,
        "dnrpipe": s.dnrpipe,
        "rtableid": s.rtableid,
        "min_ttl": s.min_ttl,
        "set_tos": s.set_tos,
        "max_mss": s.max_mss,
        "set_prio": s.set_prio,
        "rt": s.rt,
        "rt_ifname": s.rt_ifname.to_string(),
    })));
    o
}

fn state_1500_json(s: &State1500Repr) -> Map<String, Value> {
    let rt_af = if s.rt_af == 0 { s.wire_af } else { s.rt_af };
    let mut o = object(freebsd_prefix_json!(s, [s.wire_af, s.stack_af], rt_af));
    o.extend(object(json!({
        "tagname": s.tagname.to_string(),
        "rt_ifname": s.rt_ifname.to_string(),
        "orig_ifname": s.orig_ifname.to_string(),
        "rtableid": s.rtableid,
        "state_flags": s.state_flags,
        "qid": s.qid,
        "pqid": s.pqid,
        "dnpipe": s.dnpipe,
        "dnrpipe": s.dnrpipe,
        "max_mss": s.max_mss,
        "wire_af": s.wire_af,
        "stack_af": s.stack_af,
        "rt_af": s.rt_af,
        "wire_proto": s.wire_proto,
        "stack_proto": s.stack_proto,
        "log": s.log,
        "timeout": s.timeout,
        "direction": s.direction,
        "rt": s.rt,
        "min_ttl": s.min_ttl,
        "set_tos": s.set_tos,
        "set_prio": s.set_prio,
    })));
    o
}

fn upd_c_json(u: &UpdCRepr) -> Map<String, Value> {
    object(json!({
        "id": id_hex(u.id),
        "src": peer_json(&u.src),
        "dst": peer_json(&u.dst),
        "creatorid": creator_hex(u.creatorid),
        "expire": u.expire,
        "timeout": u.timeout,
        "state_flags": u.state_flags,
    }))
}

fn state_ref_json(r: &StateRefRepr) -> Map<String, Value> {
    object(json!({"id": id_hex(r.id), "creatorid": creator_hex(r.creatorid)}))
}

fn bus_json(b: &BusRepr) -> Map<String, Value> {
    object(json!({
        "creatorid": creator_hex(b.creatorid),
        "endtime": b.endtime,
        "status": b.status,
    }))
}

fn clr_json(c: &ClrRepr) -> Map<String, Value> {
    object(json!({"ifname": c.ifname.to_string(), "creatorid": creator_hex(c.creatorid)}))
}

fn tdb_openbsd_json(t: &TdbOpenBsdRepr) -> Map<String, Value> {
    object(json!({
        "spi": format!("{:08x}", t.spi),
        "dst": sockaddr_text(&t.dst, Family::OpenBsd),
        "rpl": t.rpl,
        "cur_bytes": t.cur_bytes,
        "sproto": t.sproto,
        "updates": t.updates,
        "rdomain": t.rdomain,
    }))
}

fn tdb_freebsd_json(t: &TdbFreeBsdRepr) -> Map<String, Value> {
    object(json!({
        "spi": format!("{:08x}", t.spi),
        "dst": sockaddr_text(&t.dst, Family::FreeBsd),
        "rpl": t.rpl,
        "cur_bytes": t.cur_bytes,
        "sproto": t.sproto,
        "updates": t.updates,
    }))
}

/// A time since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn rfc3339(t: Duration) -> String {
    let secs = t.as_secs();
    let (year, month, day) = civil_date(secs / 86_400);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        fraction(t.subsec_nanos())
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // Count from 0000-03-01, so that the leap day closes each year, and in 400-year eras
    // of 146097 days, which repeat exactly.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    // Years of 365 days, corrected for the leap days of the era so far.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March, of 31 30 31 30 31 31 30 31 30 31 31 29|28 days: 153 days per five.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::msg::bus::STATUS_END;
    use crate::wire::{PacketBuilder, Pushed};

    fn packet(dialect: Dialect, messages: &[Message]) -> Vec<u8> {
        let mut b = PacketBuilder::new(dialect, 1500);
        for m in messages {
            assert_eq!(b.push(m).unwrap(), Pushed::Added);
        }
        b.finish().unwrap()
    }

    fn lines(envelope: &Envelope, payload: &[u8]) -> Vec<String> {
        text(envelope, payload)
            .to_string()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn peer(state: u8, seqlo: u32) -> PeerRepr {
        PeerRepr {
            state,
            seqlo,
            ..PeerRepr::default()
        }
    }

    fn v6(text: &str) -> PfAddr {
        PfAddr::from_v6(text.parse().unwrap())
    }

    fn v4(text: &str) -> PfAddr {
        PfAddr::from_v4(text.parse().unwrap())
    }

    fn openbsd_v6_state() -> StateOpenBsdRepr {
        let key = KeyOpenBsdRepr {
            addr: [v6("2001:db8::10"), v6("2001:db8::1")],
            port: [51000, 443],
            rdomain: 0,
            af: 24,
        };
        StateOpenBsdRepr {
            id: 0x0123_4567_89ab_cdef,
            ifname: IfName::new("em0").unwrap(),
            key: [key, key],
            src: peer(4, 1000),
            dst: peer(4, 2000),
            rule: u32::MAX,
            creation: 300,
            expire: 86_100,
            creatorid: 0x0a0b_0c0d,
            af: 24,
            proto: 6,
            direction: 1,
            timeout: 2,
            ..StateOpenBsdRepr::default()
        }
    }

    #[test]
    fn openbsd_ipv6_state_uses_af_24() {
        let payload = packet(
            Dialect::OpenBsd,
            &[Message::Ins(StateRecord::OpenBsd(openbsd_v6_state()))],
        );
        let envelope = Envelope {
            frame: Some(1),
            time: Some(Duration::new(1_704_110_401, 0)),
            ip: Some(IpEnvelope {
                src: "10.0.0.1".parse().unwrap(),
                dst: "224.0.0.240".parse().unwrap(),
                ttl: 255,
            }),
        };
        let got = lines(&envelope, &payload);
        assert_eq!(
            got,
            [
                "12:00:01.000000 10.0.0.1 > 224.0.0.240 ttl 255: PFSYNCv6 len 288 openbsd",
                "    INS id: 0123456789abcdef creatorid: 0a0b0c0d em0 tcp \
                 2001:db8::10[51000] -> 2001:db8::1[443] in ESTABLISHED:ESTABLISHED \
                 timeout tcp.established age 00:05:00 expires in 23:55:00 pkts 0:0 bytes 0:0",
            ]
        );
        let j = json(&envelope, &payload);
        assert_eq!(j["time"], "2024-01-01T12:00:01.000000Z");
        assert_eq!(j["ip"]["ttl"], 255);
        assert_eq!(j["header"]["version"], 6);
        assert_eq!(j["dialect"], "openbsd");
        let m = &j["messages"][0];
        assert_eq!(m["action"], "INS");
        assert_eq!(m["id"], "0123456789abcdef");
        assert_eq!(m["creatorid"], "0a0b0c0d");
        assert_eq!(m["ifname"], "em0");
        assert_eq!(m["key"][0]["addr"][1], "2001:db8::1");
        assert_eq!(m["key"][0]["port"][1], 443);
        assert_eq!(m["key"][0]["af"], 24);
        assert_eq!(m["src"]["seqlo"], 1000);
        assert_eq!(m["src"]["scrub"]["scrub_flag"], 0);
        assert_eq!(m["expire"], 86_100);
    }

    #[test]
    fn freebsd_ipv6_state_uses_af_28_and_nat_shows_the_stack_key() {
        let wire = KeyFreeBsdRepr {
            addr: [v6("2001:db8::2"), v6("2001:db8:1::5")],
            port: [4000, 53],
        };
        let stack = KeyFreeBsdRepr {
            addr: [v6("fd00::2"), v6("2001:db8:1::5")],
            port: [1234, 53],
        };
        let s = State1301Repr {
            id: 7,
            ifname: IfName::new("vtnet0").unwrap(),
            key: [wire, stack],
            src: peer(1, 0),
            dst: peer(2, 0),
            rule: 4,
            creatorid: 0xdead_beef,
            af: 28,
            proto: 17,
            direction: 2,
            timeout: 8,
            ..State1301Repr::default()
        };
        let payload = packet(
            Dialect::FreeBsd1301,
            &[Message::Upd(StateRecord::FreeBsd1301(s))],
        );
        let got = lines(&Envelope::default(), &payload);
        assert_eq!(got[0], "PFSYNCv5 len 270 1301");
        assert_eq!(
            got[1],
            "UPD_1301 id: 0000000000000007 creatorid: deadbeef vtnet0 udp \
             2001:db8:1::5[53] -> 2001:db8::2[4000] (stack 2001:db8:1::5[53] -> fd00::2[1234]) \
             out SINGLE:MULTIPLE timeout udp.multiple age 00:00:00 expires in 00:00:00 \
             pkts 0:0 bytes 0:0 rule 4"
                .replace("UPD", "    UPD")
        );
        assert_eq!(got[2], "    EOF");
        let j = json(&Envelope::default(), &payload);
        assert_eq!(j["messages"][0]["key"][1]["addr"][0], "fd00::2");
        assert_eq!(j["messages"][1]["action"], "EOF");
        assert!(j.get("ip").is_none());
    }

    #[test]
    fn small_messages() {
        let bus = BusRepr {
            creatorid: 0x1a2b_3c4d,
            endtime: 3,
            status: STATUS_END,
        };
        let clr = ClrRepr {
            ifname: IfName::new("em0").unwrap(),
            creatorid: 0x1a2b_3c4d,
        };
        let all = ClrRepr {
            ifname: IfName::EMPTY,
            creatorid: 1,
        };
        let del = StateRefRepr {
            id: 0x65a1_b2c3,
            creatorid: 0x1a2b_3c4d,
        };
        let payload = packet(
            Dialect::FreeBsd1400,
            &[
                Message::Bus(bus),
                Message::Clr(clr),
                Message::Clr(all),
                Message::DelC(del),
                Message::UpdReq(StateRefRepr::BULK_REQUEST),
            ],
        );
        let got = lines(&Envelope::default(), &payload);
        assert_eq!(
            &got[1..],
            [
                "    BUS creatorid: 1a2b3c4d age: 00:00:03 status: end",
                "    CLR creatorid: 1a2b3c4d interface: em0",
                "    CLR creatorid: 00000001 interface: (all)",
                "    DEL_C id: 0000000065a1b2c3 creatorid: 1a2b3c4d",
                "    UPD_REQ bulk update request",
                "    EOF",
            ]
        );
        assert_eq!(got[0], "PFSYNCv5 len 116 freebsd");
    }

    #[test]
    fn upd_c_names_peer_states_by_timeout_class() {
        let u = UpdCRepr {
            id: 1,
            src: peer(4, 0),
            dst: peer(10, 0),
            creatorid: 2,
            timeout: 3,
            ..UpdCRepr::default()
        };
        assert_eq!(
            MessageText(&Message::UpdC(u)).to_string(),
            "UPD_C id: 0000000000000001 creatorid: 00000002 ESTABLISHED:TIME_WAIT timeout tcp.closing"
        );
        let udp = UpdCRepr {
            timeout: 7,
            src: peer(1, 0),
            dst: peer(0, 0),
            ..u
        };
        assert!(MessageText(&Message::UpdC(udp))
            .to_string()
            .ends_with("SINGLE:NO_TRAFFIC timeout udp.single"));
    }

    #[test]
    fn errors_and_skipped_runs_are_lines() {
        let mut payload = packet(
            Dialect::OpenBsd,
            &[Message::Ins(StateRecord::OpenBsd(openbsd_v6_state()))],
        );
        payload[24 + 255] = 99; // timeout of the record
                                // An unknown action 16 with a record size: OpenBSD skips it.
        payload.extend_from_slice(&[16, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
        let len = payload.len() as u16;
        payload[2..4].copy_from_slice(&len.to_be_bytes());
        let got = lines(&Envelope::default(), &payload);
        assert_eq!(
            got[1],
            "    error: bad value 99 for timeout (counter badval)"
        );
        assert_eq!(got[2], "    skipped action 16 count 2 (8 bytes)");
        let j = json(&Envelope::default(), &payload);
        assert_eq!(j["messages"][0]["counter"], "badval");
        assert_eq!(j["messages"][1]["skipped"], true);
        assert_eq!(j["messages"][1]["action_number"], 16);
    }

    #[test]
    fn a_refused_header_is_one_error() {
        let got = lines(&Envelope::default(), &[6, 0, 0]);
        assert_eq!(
            got,
            [
                "PFSYNC (3 bytes)",
                "    error: packet of 3 bytes is shorter than the pfsync header (20 bytes) (counter hdrops)"
            ]
        );
        let j = json(&Envelope::default(), &[6, 0, 0]);
        assert_eq!(j["counter"], "hdrops");
        assert_eq!(j["len"], 3);
    }

    #[test]
    fn state_1500_af_to_and_extras() {
        let s = State1500Repr {
            id: 9,
            ifname: IfName::new("all").unwrap(),
            key: [
                KeyFreeBsdRepr {
                    addr: [v6("64:ff9b::c000:201"), v6("2001:db8::9")],
                    port: [0, 0],
                },
                KeyFreeBsdRepr {
                    addr: [v4("192.0.2.1"), v4("198.51.100.9")],
                    port: [0, 0],
                },
            ],
            creatorid: 5,
            tagname: Name::new("guests").unwrap(),
            orig_ifname: IfName::new("igb1").unwrap(),
            rt_ifname: IfName::new("igb2").unwrap(),
            rt_addr: v4("198.51.100.1"),
            rt_af: 2,
            rt: 2,
            rtableid: 3,
            wire_af: 28,
            stack_af: 2,
            wire_proto: 58,
            stack_proto: 1,
            direction: 1,
            timeout: 9,
            rule: u32::MAX,
            ..State1500Repr::default()
        };
        let line = MessageText(&Message::Ins(StateRecord::FreeBsd1500(s))).to_string();
        assert_eq!(
            line,
            "INS_1500 id: 0000000000000009 creatorid: 00000005 all icmp6 \
             64:ff9b::c000:201 -> 2001:db8::9 (stack icmp 192.0.2.1 -> 198.51.100.9) in \
             NO_TRAFFIC:NO_TRAFFIC timeout icmp.first age 00:00:00 expires in 00:00:00 \
             pkts 0:0 bytes 0:0 route-to 198.51.100.1@igb2 rtable 3 tag guests origif igb1"
        );
        let j = message_json(&Message::Ins(StateRecord::FreeBsd1500(s)));
        assert_eq!(j["key"][0]["addr"][0], "64:ff9b::c000:201");
        assert_eq!(j["key"][1]["addr"][1], "198.51.100.9");
        assert_eq!(j["tagname"], "guests");
        assert_eq!(j["rt_addr"], "198.51.100.1");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any payload prints, in both forms, without panicking; with a plausible header
        /// (version 5 or 6, the right length) the walk reaches the records.
        #[test]
        fn any_payload_prints(
            version in proptest::prop_oneof![proptest::strategy::Just(5u8), proptest::strategy::Just(6u8), proptest::prelude::any::<u8>()],
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1500),
        ) {
            let mut payload = vec![version, 0, 0, 0];
            payload.extend_from_slice(&[0; 16]);
            payload.extend_from_slice(&body);
            let len = payload.len().min(usize::from(u16::MAX)) as u16;
            payload[2..4].copy_from_slice(&len.to_be_bytes());
            let envelope = Envelope::default();
            let _ = text(&envelope, &payload).to_string();
            let _ = json(&envelope, &payload);
            let _ = text(&envelope, &body).to_string();
        }
    }

    #[test]
    fn dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        assert_eq!(civil_date(11_017), (2000, 3, 1));
        assert_eq!(civil_date(10_956), (1999, 12, 31));
        assert_eq!(
            rfc3339(Duration::new(951_782_400, 5)),
            "2000-02-29T00:00:00.000000005Z"
        );
    }

    #[test]
    fn tdb_destinations() {
        let mut sa = [0u8; 28];
        sa[0] = 16;
        sa[1] = 2;
        sa[4..8].copy_from_slice(&[192, 0, 2, 7]);
        assert_eq!(sockaddr_text(&sa, Family::OpenBsd), "192.0.2.7");
        sa[1] = 24;
        sa[8..24].copy_from_slice(&v6("2001:db8::7").0);
        assert_eq!(sockaddr_text(&sa, Family::OpenBsd), "2001:db8::7");
        assert_eq!(sockaddr_text(&sa, Family::FreeBsd).len(), 56);
    }
}
