//! The peers we hear from: when, how much, and in which dialect.
//!
//! pfsync has no peer list: whoever sends to the group or to us is a peer. The daemon
//! learns them from the source address of what the engine accepted on the syncdev, so
//! `pfsyncd ctl stats` can say when each one was last heard — the first thing to look at
//! when a backup falls behind.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Most peers remembered; a hostile sender spoofing sources cannot grow the map further.
pub const MAX_PEERS: usize = 256;

/// What we know of one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// First packet.
    pub first_heard: Instant,
    /// Latest packet.
    pub last_heard: Instant,
    /// Packets received.
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// The pfsync header version of its latest packet (5: FreeBSD, 6: OpenBSD).
    pub version: u8,
}

/// The peers, by source address.
#[derive(Debug, Default)]
pub struct Peers {
    peers: BTreeMap<IpAddr, Peer>,
    /// Packets from sources beyond [`MAX_PEERS`].
    pub untracked: u64,
}

impl Peers {
    /// Notes a packet from `source`; true the first time this source is heard.
    pub fn heard(&mut self, now: Instant, source: IpAddr, payload: &[u8]) -> bool {
        let version = payload.first().copied().unwrap_or(0);
        let bytes = payload.len() as u64;
        if let Some(p) = self.peers.get_mut(&source) {
            p.last_heard = now;
            p.packets += 1;
            p.bytes += bytes;
            p.version = version;
            return false;
        }
        if self.peers.len() >= MAX_PEERS {
            self.untracked += 1;
            return false;
        }
        self.peers.insert(
            source,
            Peer {
                first_heard: now,
                last_heard: now,
                packets: 1,
                bytes,
                version,
            },
        );
        true
    }

    /// When `source` was last heard, if ever.
    pub fn last_heard(&self, source: IpAddr) -> Option<Instant> {
        self.peers.get(&source).map(|p| p.last_heard)
    }

    /// Every peer, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &Peer)> {
        self.peers.iter()
    }

    /// Peers not heard for `silence`, once each: the caller logs them. Their entry stays,
    /// so `stats` shows how long ago they went quiet.
    pub fn gone_quiet(&self, now: Instant, since: Instant, silence: Duration) -> Vec<IpAddr> {
        self.peers
            .iter()
            .filter(|(_, p)| {
                let quiet_from = p.last_heard + silence;
                quiet_from > since && quiet_from <= now
            })
            .map(|(a, _)| *a)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_source_and_bounds_the_map() {
        let t0 = Instant::now();
        let mut peers = Peers::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(peers.heard(t0, a, &[5, 0, 0]));
        assert!(!peers.heard(t0 + Duration::from_secs(1), a, &[6]));
        let p = peers.iter().next().unwrap().1;
        assert_eq!((p.packets, p.bytes, p.version), (2, 4, 6));
        for i in 0..1000u32 {
            peers.heard(t0, IpAddr::from(i.to_be_bytes()), &[5]);
        }
        assert_eq!(peers.iter().count(), MAX_PEERS);
        assert!(peers.untracked > 0);
    }

    #[test]
    fn a_quiet_peer_is_reported_once() {
        let t0 = Instant::now();
        let mut peers = Peers::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        peers.heard(t0, a, &[5]);
        let silence = Duration::from_secs(10);
        let s = Duration::from_secs(1);
        assert!(peers.gone_quiet(t0 + 9 * s, t0 + 8 * s, silence).is_empty());
        assert_eq!(peers.gone_quiet(t0 + 11 * s, t0 + 9 * s, silence), vec![a]);
        assert!(peers
            .gone_quiet(t0 + 12 * s, t0 + 11 * s, silence)
            .is_empty());
    }
}
