//! Synthetic states: valid TCP, UDP and ICMP states over IPv4 and IPv6, the way pf makes
//! them, and traffic that moves them on. For tests, benchmarks and the lab.
//!
//! Deterministic: the same seed gives the same states. Every state converts to every
//! record format without loss (one address family and protocol for both keys, no policy
//! route, no routing table, no tag), so it survives any peer unchanged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::state::{
    AddressFamily, Direction, Peer, PeerLevel, PeerState, Protocol, State, StateKey, TcpState,
    Timeout,
};
use crate::wire::IfName;

/// The kind of state to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A TCP connection.
    Tcp,
    /// A UDP flow.
    Udp,
    /// An ICMP (IPv4) or ICMPv6 echo.
    Icmp,
}

/// A deterministic generator of states. Ids count up from 1 under one creator.
#[derive(Debug, Clone)]
pub struct Synth {
    rng: u64,
    creatorid: u32,
    next_id: u64,
}

const IFNAMES: [&str; 4] = ["em0", "em1", "vtnet0", "all"];
const SERVICES: [u16; 8] = [22, 25, 53, 80, 123, 443, 993, 8080];

impl Synth {
    /// A generator seeded with `seed`, making states of `creatorid`.
    pub fn new(seed: u64, creatorid: u32) -> Synth {
        Synth {
            // xorshift must not start at zero.
            rng: (seed ^ 0x6a09_e667_f3bc_c908) | 1,
            creatorid,
            next_id: 1,
        }
    }

    /// Sets the id the next state gets.
    pub fn set_next_id(&mut self, id: u64) {
        self.next_id = id;
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }

    fn addr(&mut self, af: AddressFamily) -> IpAddr {
        match af {
            // 10.0.0.0/8 and 2001:db8::/32.
            AddressFamily::Inet => IpAddr::V4(Ipv4Addr::from(
                0x0a00_0000 | (self.next() as u32 & 0x00ff_ffff),
            )),
            AddressFamily::Inet6 => {
                let low = u128::from(self.next()) << 32 | u128::from(self.next() as u32);
                IpAddr::V6(Ipv6Addr::from(0x2001_0db8u128 << 96 | low))
            }
        }
    }

    /// A state of a random kind and family (TCP half the time).
    pub fn state(&mut self) -> State {
        let kind = match self.below(8) {
            0..=3 => Kind::Tcp,
            4..=6 => Kind::Udp,
            _ => Kind::Icmp,
        };
        let af = if self.below(4) == 0 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        self.state_of(kind, af)
    }

    /// `n` random states.
    pub fn states(&mut self, n: usize) -> Vec<State> {
        (0..n).map(|_| self.state()).collect()
    }

    /// A state of `kind` and family `af`, at a random point of its life.
    pub fn state_of(&mut self, kind: Kind, af: AddressFamily) -> State {
        let id = self.next_id;
        self.next_id += 1;
        let proto = match (kind, af) {
            (Kind::Tcp, _) => Protocol::Tcp,
            (Kind::Udp, _) => Protocol::Udp,
            (Kind::Icmp, AddressFamily::Inet) => Protocol::Icmp,
            (Kind::Icmp, AddressFamily::Inet6) => Protocol::Icmpv6,
        };
        let client = self.addr(af);
        let server = self.addr(af);
        let port = match kind {
            Kind::Icmp => {
                // pf keys an echo by its id, in both port slots.
                let echo_id = self.next() as u16;
                [echo_id, echo_id]
            }
            _ => [1024 + self.below(64_512) as u16, self.pick(&SERVICES)],
        };
        let direction = if self.below(3) == 0 {
            Direction::Out
        } else {
            Direction::In
        };
        // In: index 0 is the packet's source; out: index 0 is the remote end.
        let wire = StateKey {
            af,
            proto,
            addr: match direction {
                Direction::Out => [server, client],
                _ => [client, server],
            },
            port: match direction {
                Direction::Out => [port[1], port[0]],
                _ => port,
            },
            rdomain: 0,
        };
        let mut stack = wire;
        if direction == Direction::In && self.below(8) == 0 {
            // An rdr: the stack sees another destination.
            stack.addr[1] = self.addr(af);
        }
        let ifname = IfName::new(self.pick(&IFNAMES)).unwrap_or(IfName::EMPTY);
        let mut state = State {
            id,
            creatorid: self.creatorid,
            ifname,
            wire,
            stack,
            direction,
            rule: Some(self.below(64) as u32),
            ..State::default()
        };
        match kind {
            Kind::Tcp => {
                let seq = self.next() as u32;
                let ack = self.next() as u32;
                state.src = self.tcp_peer(seq);
                state.dst = self.tcp_peer(ack);
                let stage = self.pick(&[0, 1, 2, 2, 2, 2, 3, 4, 5]);
                set_tcp_stage(&mut state, stage);
            }
            Kind::Udp | Kind::Icmp => {
                let replied = self.below(4) != 0;
                state.src.state = level(if replied { 2 } else { 1 });
                state.dst.state = level(if replied { 2 } else { 0 });
                state.timeout = match (kind, replied) {
                    (Kind::Udp, false) => Timeout::UdpFirst,
                    (Kind::Udp, true) => Timeout::UdpMultiple,
                    (_, false) => Timeout::IcmpFirst,
                    (_, true) => Timeout::IcmpError,
                };
            }
        }
        let packets = 1 + self.below(1000);
        state.packets = [packets, packets / 2];
        state.bytes = [packets * 600, packets * 300];
        state.age_secs = self.below(3600) as u32;
        let full = crate::table::Timeouts::DEFAULT.get(state.timeout);
        state.expire_secs = 1 + self.below(u64::from(full.max(1))) as u32;
        state
    }

    fn tcp_peer(&mut self, seq: u32) -> Peer {
        let win = 8192 + self.below(57_344) as u32;
        Peer {
            seqlo: seq,
            seqhi: seq.wrapping_add(win),
            seqdiff: 0,
            max_win: win as u16,
            mss: self.pick(&[1460, 1440, 1220, 0]),
            wscale: self.pick(&[0, 0x80 | 7, 0x80 | 2]),
            state: PeerState::Tcp(TcpState::Closed),
            scrub: None,
        }
    }

    /// Traffic on a state: a few packets each way (sequence numbers, windows, counters)
    /// and, now and then, the next step of its life (a TCP handshake or close, a UDP or
    /// ICMP reply). Does not touch `age_secs`/`expire_secs`: the table keeps time.
    pub fn advance(&mut self, state: &mut State) {
        let n = 1 + self.below(8);
        state.packets[0] += n;
        state.packets[1] += n;
        state.bytes[0] += n * 700;
        state.bytes[1] += n * 400;
        match state.src.state {
            PeerState::Tcp(_) => {
                let sent = (n * 700) as u32;
                let back = (n * 400) as u32;
                state.src.seqlo = state.src.seqlo.wrapping_add(sent);
                state.src.seqhi = state.src.seqhi.wrapping_add(back);
                state.dst.seqlo = state.dst.seqlo.wrapping_add(back);
                state.dst.seqhi = state.dst.seqhi.wrapping_add(sent);
                if self.below(4) == 0 {
                    let stage = tcp_stage(state);
                    if stage < 5 {
                        set_tcp_stage(state, stage + 1);
                    }
                }
            }
            PeerState::Level(_) => {
                state.src.state = level(2);
                state.dst.state = level(2);
                state.timeout = match state.timeout {
                    Timeout::UdpFirst | Timeout::UdpSingle => Timeout::UdpMultiple,
                    Timeout::IcmpFirst => Timeout::IcmpError,
                    other => other,
                };
            }
        }
    }
}

fn level(n: u8) -> PeerState {
    PeerState::Level(PeerLevel::new(n).unwrap_or(PeerLevel::NO_TRAFFIC))
}

/// The TCP stages a synthetic state goes through, with the peers' states and the timeout
/// class pf gives them: SYN sent, SYN answered, established, one FIN, both FINs, closed.
const TCP_STAGES: [(TcpState, TcpState, Timeout); 6] = [
    (TcpState::SynSent, TcpState::Closed, Timeout::TcpFirst),
    (TcpState::SynSent, TcpState::SynSent, Timeout::TcpOpening),
    (
        TcpState::Established,
        TcpState::Established,
        Timeout::TcpEstablished,
    ),
    (
        TcpState::FinWait1,
        TcpState::Established,
        Timeout::TcpClosing,
    ),
    (TcpState::FinWait2, TcpState::FinWait2, Timeout::TcpFinWait),
    (TcpState::TimeWait, TcpState::TimeWait, Timeout::TcpClosed),
];

fn set_tcp_stage(state: &mut State, stage: usize) {
    let (src, dst, timeout) = TCP_STAGES[stage.min(TCP_STAGES.len() - 1)];
    state.src.state = PeerState::Tcp(src);
    state.dst.state = PeerState::Tcp(dst);
    state.timeout = timeout;
}

fn tcp_stage(state: &State) -> usize {
    TCP_STAGES
        .iter()
        .position(|&(src, dst, _)| {
            state.src.state == PeerState::Tcp(src) && state.dst.state == PeerState::Tcp(dst)
        })
        .unwrap_or(TCP_STAGES.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RecordFormat;

    #[test]
    fn deterministic_and_distinct() {
        let a = Synth::new(1, 42).states(100);
        let b = Synth::new(1, 42).states(100);
        assert_eq!(a, b);
        assert!(a.iter().enumerate().all(|(i, s)| s.id == i as u64 + 1));
        assert!(a.iter().all(|s| s.creatorid == 42));
        assert_ne!(a, Synth::new(2, 42).states(100));
    }

    #[test]
    fn every_kind_and_family_appears() {
        let all = Synth::new(3, 1).states(400);
        for proto in [
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Icmp,
            Protocol::Icmpv6,
        ] {
            assert!(all.iter().any(|s| s.wire.proto == proto), "{proto:?}");
        }
        assert!(all
            .iter()
            .any(|s| s.wire.af == AddressFamily::Inet6 && s.wire.proto == Protocol::Tcp));
        assert!(all.iter().any(|s| s.stack != s.wire));
        assert!(all.iter().any(|s| s.direction == Direction::Out));
    }

    #[test]
    fn states_survive_every_record_format() {
        let mut synth = Synth::new(4, 0xdead_beef);
        for mut s in synth.states(300) {
            for _ in 0..3 {
                for format in [
                    RecordFormat::OpenBsd,
                    RecordFormat::FreeBsd1301,
                    RecordFormat::FreeBsd1400,
                    RecordFormat::FreeBsd1500,
                ] {
                    let (record, lost) = s.to_record(format);
                    assert!(lost.is_empty(), "{format:?} loses {lost:?} of {s:?}");
                    assert_eq!(State::from_record(&record).unwrap(), s, "{format:?}");
                }
                synth.advance(&mut s);
            }
        }
    }

    #[test]
    fn families_and_keys_agree() {
        for s in Synth::new(5, 9).states(200) {
            for key in [s.wire, s.stack] {
                assert!(key.addr.iter().all(|a| AddressFamily::of(a) == key.af));
            }
            assert!(s.expire_secs >= 1);
            assert!(s.expire_secs <= crate::table::Timeouts::DEFAULT.get(s.timeout).max(1));
        }
    }

    #[test]
    fn advance_moves_tcp_on_and_levels_up() {
        let mut synth = Synth::new(6, 1);
        let mut tcp = synth.state_of(Kind::Tcp, AddressFamily::Inet);
        set_tcp_stage(&mut tcp, 0);
        let before = tcp;
        for _ in 0..100 {
            synth.advance(&mut tcp);
        }
        assert_eq!(tcp.timeout, Timeout::TcpClosed);
        assert_ne!(tcp.src.seqlo, before.src.seqlo);
        assert!(tcp.packets[0] > before.packets[0]);
        let mut udp = synth.state_of(Kind::Udp, AddressFamily::Inet6);
        synth.advance(&mut udp);
        assert_eq!(udp.timeout, Timeout::UdpMultiple);
        assert_eq!(udp.dst.state, level(2));
    }
}
