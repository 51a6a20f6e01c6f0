//! A compact, lossless byte encoding of a [`State`], for holding many states in memory.
//!
//! A `State` is about 400 bytes wide because every field has room for its largest value
//! (IPv6 addresses, a 64-byte tag name, three interface names). A typical state needs a
//! third of that: IPv4 addresses, the stack key equal to the wire key, no tag. The
//! memory table keeps its states in this form, so a million states cost a few hundred
//! megabytes less (and a bulk update of them writes that much less fresh memory).
//!
//! The format is private to this process (no versioning): small integers as LEB128
//! varints, names and addresses by length, rare groups of fields behind presence bits.
//! [`decode`] checks every length and value and returns `None` on bytes it did not make,
//! never panicking.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    AddressFamily, Direction, Peer, PeerState, Protocol, Scrub, State, StateFlags, StateKey,
    Timeout,
};
use crate::wire::{Name, RouteType};

// Presence bits of the first byte.
const STACK_DIFFERS: u8 = 0x01;
const HAS_ROUTE: u8 = 0x02;
const HAS_NAMES: u8 = 0x04;
const HAS_QUEUES: u8 = 0x08;
const HAS_RULES: u8 = 0x10;
const HAS_TUNING: u8 = 0x20;

/// Appends the encoding of `s` to `out`.
pub fn encode(s: &State, out: &mut Vec<u8>) {
    let stack_differs = s.stack != s.wire;
    // By every byte, not the first: a name is kept whole, bytes after a NUL included.
    let has_route = s.rt != RouteType::None || s.rt_addr.is_some() || !blank(&s.rt_ifname.0);
    let has_names = !blank(&s.orig_ifname.0) || !blank(&s.tagname.0);
    let has_queues = s.qid != 0 || s.pqid != 0 || s.dnpipe != 0 || s.dnrpipe != 0;
    let has_rules = s.anchor.is_some()
        || s.nat_rule.is_some()
        || s.rtableid.is_some()
        || s.reply_rtableid.is_some();
    let has_tuning = s.min_ttl != 0 || s.set_tos != 0 || s.max_mss != 0 || s.set_prio != [0; 2];
    let mut flags = 0;
    for (on, bit) in [
        (stack_differs, STACK_DIFFERS),
        (has_route, HAS_ROUTE),
        (has_names, HAS_NAMES),
        (has_queues, HAS_QUEUES),
        (has_rules, HAS_RULES),
        (has_tuning, HAS_TUNING),
    ] {
        if on {
            flags |= bit;
        }
    }
    out.push(flags);
    varint(out, s.id);
    varint(out, u64::from(s.creatorid));
    name(out, &s.ifname.0);
    key(out, &s.wire);
    if stack_differs {
        key(out, &s.stack);
    }
    peer(out, &s.src);
    peer(out, &s.dst);
    out.extend_from_slice(&[s.direction.number(), s.log, s.timeout as u8, s.sync_flags]);
    varint(out, u64::from(s.state_flags.bits()));
    option_u32(out, s.rule);
    varint(out, u64::from(s.age_secs));
    varint(out, u64::from(s.expire_secs));
    for v in s.packets.iter().chain(&s.bytes) {
        varint(out, *v);
    }
    if has_route {
        out.push(route_number(s.rt));
        match s.rt_addr {
            None => out.push(0),
            Some(a) => addr(out, a),
        }
        name(out, &s.rt_ifname.0);
    }
    if has_names {
        name(out, &s.orig_ifname.0);
        name(out, &s.tagname.0);
    }
    if has_queues {
        for v in [s.qid, s.pqid, s.dnpipe, s.dnrpipe] {
            varint(out, u64::from(v));
        }
    }
    if has_rules {
        option_u32(out, s.anchor);
        option_u32(out, s.nat_rule);
        option_u32(out, s.rtableid);
        option_u32(out, s.reply_rtableid);
    }
    if has_tuning {
        out.extend_from_slice(&[s.min_ttl, s.set_tos, s.set_prio[0], s.set_prio[1]]);
        varint(out, u64::from(s.max_mss));
    }
}

/// The state `bytes` encode; `None` for bytes [`encode`] did not make.
pub fn decode(bytes: &[u8]) -> Option<State> {
    let mut r = Reader { bytes, at: 0 };
    let flags = r.u8()?;
    let mut s = State {
        id: r.varint()?,
        creatorid: r.u32()?,
        ifname: r.name()?,
        ..State::default()
    };
    s.wire = r.key()?;
    s.stack = if flags & STACK_DIFFERS != 0 {
        r.key()?
    } else {
        s.wire
    };
    s.src = r.peer(s.wire.proto)?;
    s.dst = r.peer(s.wire.proto)?;
    s.direction = Direction::from_number(r.u8()?)?;
    s.log = r.u8()?;
    s.timeout = Timeout::from_number(r.u8()?)?;
    s.sync_flags = r.u8()?;
    s.state_flags = StateFlags::from_bits(u16::try_from(r.varint()?).ok()?);
    s.rule = r.option_u32()?;
    s.age_secs = r.u32()?;
    s.expire_secs = r.u32()?;
    for i in 0..2 {
        s.packets[i] = r.varint()?;
    }
    for i in 0..2 {
        s.bytes[i] = r.varint()?;
    }
    if flags & HAS_ROUTE != 0 {
        s.rt = route_of(r.u8()?)?;
        s.rt_addr = r.addr()?;
        s.rt_ifname = r.name()?;
    }
    if flags & HAS_NAMES != 0 {
        s.orig_ifname = r.name()?;
        s.tagname = r.name()?;
    }
    if flags & HAS_QUEUES != 0 {
        s.qid = r.u16()?;
        s.pqid = r.u16()?;
        s.dnpipe = r.u16()?;
        s.dnrpipe = r.u16()?;
    }
    if flags & HAS_RULES != 0 {
        s.anchor = r.option_u32()?;
        s.nat_rule = r.option_u32()?;
        s.rtableid = r.option_u32()?;
        s.reply_rtableid = r.option_u32()?;
    }
    if flags & HAS_TUNING != 0 {
        s.min_ttl = r.u8()?;
        s.set_tos = r.u8()?;
        s.set_prio = [r.u8()?, r.u8()?];
        s.max_mss = r.u16()?;
    }
    (r.at == bytes.len()).then_some(s)
}

fn blank(raw: &[u8]) -> bool {
    raw.iter().all(|&b| b == 0)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn option_u32(out: &mut Vec<u8>, v: Option<u32>) {
    // 0 is None; anything else is the value plus one.
    varint(out, v.map_or(0, |v| u64::from(v) + 1));
}

/// A name's bytes up to the first NUL, then whatever follows it (kept, so that
/// decoding gives back exactly the same array).
fn name(out: &mut Vec<u8>, raw: &[u8]) {
    let used = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    out.push(used as u8);
    out.extend_from_slice(&raw[..used]);
}

fn addr(out: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
}

fn key(out: &mut Vec<u8>, k: &StateKey) {
    out.push(match k.af {
        AddressFamily::Inet => 4,
        AddressFamily::Inet6 => 6,
    });
    out.push(k.proto.number());
    addr(out, k.addr[0]);
    addr(out, k.addr[1]);
    varint(out, u64::from(k.port[0]));
    varint(out, u64::from(k.port[1]));
    varint(out, u64::from(k.rdomain));
}

fn peer(out: &mut Vec<u8>, p: &Peer) {
    out.extend_from_slice(&p.seqlo.to_le_bytes());
    out.extend_from_slice(&p.seqhi.to_le_bytes());
    varint(out, u64::from(p.seqdiff));
    varint(out, u64::from(p.max_win));
    varint(out, u64::from(p.mss));
    out.push(p.wscale);
    out.push(p.state.number());
    match p.scrub {
        None => out.push(0),
        Some(sc) => {
            out.push(1);
            varint(out, u64::from(sc.flags));
            out.push(sc.ttl);
            out.extend_from_slice(&sc.ts_mod.to_le_bytes());
        }
    }
}

fn route_number(rt: RouteType) -> u8 {
    match rt {
        RouteType::None => 0,
        RouteType::FastRoute => 1,
        RouteType::RouteTo => 2,
        RouteType::DupTo => 3,
        RouteType::ReplyTo => 4,
    }
}

fn route_of(n: u8) -> Option<RouteType> {
    Some(match n {
        0 => RouteType::None,
        1 => RouteType::FastRoute,
        2 => RouteType::RouteTo,
        3 => RouteType::DupTo,
        4 => RouteType::ReplyTo,
        _ => return None,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32_le(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.varint()?).ok()
    }

    fn u16(&mut self) -> Option<u16> {
        u16::try_from(self.varint()?).ok()
    }

    fn option_u32(&mut self) -> Option<Option<u32>> {
        match self.varint()? {
            0 => Some(None),
            v => Some(Some(u32::try_from(v - 1).ok()?)),
        }
    }

    fn name<const N: usize>(&mut self) -> Option<Name<N>> {
        let len = usize::from(self.u8()?);
        let used = self.take(len)?;
        let mut raw = [0u8; N];
        raw.get_mut(..len)?.copy_from_slice(used);
        Some(Name(raw))
    }

    fn addr(&mut self) -> Option<Option<IpAddr>> {
        match self.u8()? {
            0 => Some(None),
            4 => {
                let o: [u8; 4] = self.take(4)?.try_into().ok()?;
                Some(Some(IpAddr::V4(Ipv4Addr::from(o))))
            }
            6 => {
                let o: [u8; 16] = self.take(16)?.try_into().ok()?;
                Some(Some(IpAddr::V6(Ipv6Addr::from(o))))
            }
            _ => None,
        }
    }

    fn key(&mut self) -> Option<StateKey> {
        let af = match self.u8()? {
            4 => AddressFamily::Inet,
            6 => AddressFamily::Inet6,
            _ => return None,
        };
        let proto = Protocol::from_number(self.u8()?);
        let a0 = self.addr()??;
        let a1 = self.addr()??;
        Some(StateKey {
            af,
            proto,
            addr: [a0, a1],
            port: [self.u16()?, self.u16()?],
            rdomain: self.u16()?,
        })
    }

    fn peer(&mut self, proto: Protocol) -> Option<Peer> {
        let seqlo = self.u32_le()?;
        let seqhi = self.u32_le()?;
        let seqdiff = self.u32()?;
        let max_win = self.u16()?;
        let mss = self.u16()?;
        let wscale = self.u8()?;
        let state = PeerState::from_number(proto, self.u8()?)?;
        let scrub = match self.u8()? {
            0 => None,
            1 => Some(Scrub {
                flags: self.u16()?,
                ttl: self.u8()?,
                ts_mod: self.u32_le()?,
            }),
            _ => return None,
        };
        Some(Peer {
            seqlo,
            seqhi,
            seqdiff,
            max_win,
            mss,
            wscale,
            state,
            scrub,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::synth::Synth;
    use crate::wire::{IfName, TagName};

    fn round_trip(s: &State) -> usize {
        let mut out = Vec::new();
        encode(s, &mut out);
        assert_eq!(decode(&out).as_ref(), Some(s), "{s:?}");
        out.len()
    }

    #[test]
    fn synthetic_states_round_trip_and_are_small() {
        let mut synth = Synth::new(42, 0x0102_0304);
        let mut total = 0;
        for _ in 0..10_000 {
            total += round_trip(&synth.state());
        }
        let mean = total / 10_000;
        assert!(mean < 140, "mean {mean} bytes");
    }

    #[test]
    fn rare_fields_round_trip() {
        let mut synth = Synth::new(7, 9);
        let mut s = synth.state();
        s.stack.addr[0] = "2001:db8::9".parse().unwrap();
        s.stack.port = [1, 65535];
        s.rt = RouteType::ReplyTo;
        s.rt_addr = Some("192.0.2.1".parse().unwrap());
        s.rt_ifname = IfName::new("em3").unwrap();
        s.orig_ifname = IfName::new("vtnet0").unwrap();
        s.tagname = TagName::new("a-tag").unwrap();
        // Bytes after a NUL are kept too.
        s.tagname.0[40] = b'x';
        (s.qid, s.pqid, s.dnpipe, s.dnrpipe) = (1, 2, 3, 65535);
        (s.anchor, s.nat_rule, s.rtableid, s.reply_rtableid) =
            (Some(0), Some(u32::MAX), Some(7), None);
        (s.min_ttl, s.set_tos, s.max_mss, s.set_prio) = (1, 2, 1460, [3, 4]);
        s.rule = Some(u32::MAX - 1);
        s.packets = [u64::MAX, 0];
        s.src.scrub = Some(Scrub {
            flags: 1,
            ttl: 64,
            ts_mod: u32::MAX,
        });
        s.state_flags = StateFlags::from_bits(0xffff);
        round_trip(&s);
        round_trip(&State::default());
        // A name that is empty as text (NUL first) with bytes after it is kept whole,
        // alone in its group (found by the privsep fuzz target).
        for name in 0..3 {
            let mut s = State::default();
            match name {
                0 => s.tagname.0[1] = b'k',
                1 => s.orig_ifname.0[15] = 1,
                _ => s.rt_ifname.0[2] = 0xff,
            }
            round_trip(&s);
        }
    }

    #[test]
    fn foreign_bytes_never_panic() {
        let mut synth = Synth::new(3, 3);
        let mut good = Vec::new();
        encode(&synth.state(), &mut good);
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_none(), "cut at {cut}");
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode(&bytes);
        }
    }
}
