//! Which senders the receive path accepts: any (multicast, or a dedicated link), or only
//! the configured unicast sync peers.
//!
//! Difference: neither kernel looks at the source address of a pfsync packet. FreeBSD's
//! `pfsync_input` (freebsd/freebsd-src sys/netpfil/pf/if_pfsync.c, commit 01194da2)
//! checks the receiving interface, the TTL, the length and the header version, and
//! nothing of `ip_src`; OpenBSD's (openbsd/src sys/net/if_pfsync.c v1.74, commit
//! 72dd6adc) reads `ip_src` only to address its answers to update requests. Anyone
//! who can put a TTL-255 packet on the sync link can create, change and delete states.
//! With unicast sync peers configured, we take packets from those addresses only and
//! count the rest in `badsrc`; `anysource` restores the kernels' behaviour.

use std::net::IpAddr;

/// The senders whose packets the engine takes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AllowedSources {
    /// Any sender, as the kernels (multicast, or `anysource`).
    #[default]
    Any,
    /// Only these addresses (the unicast sync peers). A packet whose source the
    /// transport did not give cannot be shown to come from one of them, and is refused.
    Only(Vec<IpAddr>),
}

impl AllowedSources {
    /// Whether a packet from `source` is taken.
    pub fn allows(&self, source: Option<IpAddr>) -> bool {
        match self {
            AllowedSources::Any => true,
            AllowedSources::Only(peers) => source.is_some_and(|s| peers.contains(&unmapped(s))),
        }
    }
}

/// An IPv4 peer seen through an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, a dual-stack
/// socket's view of it) is that IPv4 peer.
fn unmapped(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod test {
    use std::time::Instant;

    use super::*;
    use crate::engine::{Config, Engine, Received, TableOp};
    use crate::state::State;
    use crate::wire::{Dialect, IfName, Message, PacketBuilder, Pushed};

    const US: u32 = 0x0a0a_0a0a;
    const PEER: u32 = 0x0b0b_0b0b;

    fn addr(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A packet with one full update of a peer's state.
    fn update_packet(id: u64) -> Vec<u8> {
        let state = State {
            id,
            creatorid: PEER,
            ifname: IfName::new("em0").unwrap(),
            ..State::default()
        };
        let dialect = Dialect::FreeBsd1400;
        let mut b = PacketBuilder::new(dialect, 9000);
        let msg = Message::Upd(state.to_record(dialect.record_format()).0);
        assert_eq!(b.push(&msg).unwrap(), Pushed::Added);
        b.finish().unwrap()
    }

    fn from(payload: &[u8], source: Option<IpAddr>) -> Received<'_> {
        Received {
            payload,
            on_syncdev: true,
            ttl: 255,
            ipv6: false,
            source,
        }
    }

    fn imports(e: &mut Engine) -> usize {
        std::iter::from_fn(|| e.poll_table_op())
            .filter(|op| matches!(op, TableOp::Import(_)))
            .count()
    }

    #[test]
    fn with_unicast_peers_another_source_is_refused_and_counted() {
        let mut e = Engine::new(Config::new(US, Dialect::FreeBsd1400));
        e.set_allowed_sources(AllowedSources::Only(vec![addr("10.0.0.2")]));
        let now = Instant::now();
        let p = update_packet(1);
        e.handle_packet(now, from(&p, Some(addr("10.0.0.9"))));
        assert_eq!(imports(&mut e), 0, "a stranger's state was imported");
        assert_eq!(e.stats().badsrc, 1);
        assert_eq!(e.state_count(), 0);
        // An unknown source is refused too.
        e.handle_packet(now, from(&p, None));
        assert_eq!(imports(&mut e), 0);
        assert_eq!(e.stats().badsrc, 2);
        // The peer's own packet is taken, also through a v4-mapped address.
        e.handle_packet(now, from(&p, Some(addr("::ffff:10.0.0.2"))));
        assert_eq!(imports(&mut e), 1);
        assert_eq!(e.stats().badsrc, 2);
        assert_eq!(e.stats().ipackets, 3);
    }

    #[test]
    fn any_source_is_taken_by_default_and_with_anysource() {
        let mut e = Engine::new(Config::new(US, Dialect::FreeBsd1400));
        let now = Instant::now();
        let p = update_packet(1);
        e.handle_packet(now, from(&p, Some(addr("10.0.0.9"))));
        assert_eq!(imports(&mut e), 1);
        e.set_allowed_sources(AllowedSources::Only(vec![addr("10.0.0.2")]));
        e.set_allowed_sources(AllowedSources::Any);
        let p = update_packet(2);
        e.handle_packet(now, from(&p, Some(addr("10.0.0.9"))));
        assert_eq!(imports(&mut e), 1);
        assert_eq!(e.stats().badsrc, 0);
    }

    #[test]
    fn refusal_comes_after_the_kernels_interface_and_ttl_checks() {
        let mut e = Engine::new(Config::new(US, Dialect::FreeBsd1400));
        e.set_allowed_sources(AllowedSources::Only(vec![addr("10.0.0.2")]));
        let p = update_packet(1);
        let mut rx = from(&p, Some(addr("10.0.0.9")));
        rx.ttl = 64;
        e.handle_packet(Instant::now(), rx);
        assert_eq!((e.stats().badttl, e.stats().badsrc), (1, 0));
    }
}
