//! The secure link's side in the engine process: the `SecureLink` (and so every tunnel's
//! keys) lives here, in the confined process, which authenticates and decrypts what the
//! parent forwards unparsed. A pfsync packet that comes out reaches the engine as one
//! from the peer's inner address on the sync interface would; a plain-link packet from
//! an address a secure peer holds is a downgrade and refused.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use crate::engine::Received;
use crate::secure::{
    InnerPacket, LinkError, PeerChange, PeerConfig, PrivateKey, Refusal, SecureLink,
};

/// What one datagram gave.
#[derive(Debug)]
pub enum SecureReceive {
    /// A pfsync packet for the engine ([`SecureSide::received`]).
    Packet(InnerPacket),
    /// A handshake or keepalive: nothing for the engine.
    Nothing,
    /// Refused and counted; `log` is the one line to log, given the first time a source
    /// fails to authenticate (a wrong key would otherwise log once per packet).
    Refused {
        /// Why.
        reason: Refusal,
        /// The line to log, if this is the first of its kind from this source.
        log: Option<String>,
    },
}

/// The engine process's secure link.
pub struct SecureSide {
    link: SecureLink,
    /// Sources already reported as failing to authenticate.
    reported: BTreeSet<IpAddr>,
    /// Plain-link packets refused because their source is a secure peer's.
    downgrades: u64,
}

impl SecureSide {
    /// A link with this node's key and inner address, and no peers yet.
    pub fn new(private_key: PrivateKey, inner_addr: IpAddr) -> SecureSide {
        SecureSide {
            link: SecureLink::new(private_key, inner_addr),
            reported: BTreeSet::new(),
            downgrades: 0,
        }
    }

    /// Makes the peers exactly `peers`: new ones added, changed ones re-keyed or moved,
    /// absent ones removed; the sessions of the others are kept. Each peer's outcome,
    /// for the log.
    pub fn set_peers(
        &mut self,
        peers: Vec<PeerConfig>,
    ) -> Vec<(IpAddr, Result<PeerChange, LinkError>)> {
        let wanted: BTreeSet<IpAddr> = peers.iter().map(|p| p.inner_addr).collect();
        let gone: Vec<IpAddr> = self
            .link
            .peers()
            .map(|p| p.config().inner_addr)
            .filter(|a| !wanted.contains(a))
            .collect();
        let mut outcome = Vec::new();
        for addr in gone {
            self.link.remove_peer(addr);
            self.reported.remove(&addr);
        }
        for peer in peers {
            let addr = peer.inner_addr;
            outcome.push((addr, self.link.set_peer(peer)));
        }
        outcome
    }

    /// Takes a new private key; every session re-handshakes.
    pub fn set_private_key(&mut self, private_key: PrivateKey) {
        self.link.set_private_key(private_key);
        self.reported.clear();
    }

    /// Authenticates and decrypts one datagram the parent forwarded.
    pub fn receive(&mut self, from: SocketAddr, datagram: &[u8]) -> SecureReceive {
        match self.link.receive(from, datagram) {
            Ok(Some(packet)) => {
                self.reported.remove(&from.ip());
                SecureReceive::Packet(packet)
            }
            Ok(None) => SecureReceive::Nothing,
            Err(reason) => {
                let says_wrong_key = matches!(reason, Refusal::NotAuthentic | Refusal::UnknownPeer);
                let log = (says_wrong_key && self.reported.insert(from.ip())).then(|| {
                    format!(
                        "secure link: datagrams from {from} {reason}: a wrong public key on one side, or a stranger (said once per source)"
                    )
                });
                SecureReceive::Refused { reason, log }
            }
        }
    }

    /// The engine's view of a decrypted packet: as a plain-link packet from the peer's
    /// inner address on the sync interface, TTL 255 (the inner header was checked).
    pub fn received(packet: &InnerPacket) -> Received<'_> {
        Received {
            payload: packet.payload(),
            on_syncdev: true,
            ttl: crate::secure::PFSYNC_TTL,
            ipv6: packet.peer.is_ipv6(),
            source: Some(packet.peer),
        }
    }

    /// Whether a plain-link packet from `source` is a downgrade (its source is a secure
    /// peer's address); counted when it is.
    pub fn refuse_plain(&mut self, source: Option<IpAddr>) -> bool {
        let Some(source) = source else {
            return false;
        };
        let secure = self.link.peers().any(|p| {
            let c = p.config();
            c.inner_addr == source || c.endpoint.ip() == source
        });
        if secure {
            self.downgrades += 1;
        }
        secure
    }

    /// Plain-link packets refused as downgrades.
    pub fn downgrades(&self) -> u64 {
        self.downgrades
    }

    /// The link, for sending, timers and statistics.
    pub fn link(&mut self) -> &mut SecureLink {
        &mut self.link
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn peer_config(key: &PrivateKey, n: u8) -> PeerConfig {
        PeerConfig {
            public_key: key.public_key(),
            preshared_key: None,
            endpoint: SocketAddr::new(IpAddr::from([192, 0, 2, n]), 5240),
            inner_addr: IpAddr::from([10, 0, 0, n]),
        }
    }

    /// Moves every datagram between the two sides until none is left; the packets
    /// each side got.
    fn exchange(
        a: &mut SecureSide,
        b: &mut SecureSide,
    ) -> (Vec<SecureReceive>, Vec<SecureReceive>) {
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        loop {
            let mut moved = false;
            while let Some(d) = a.link().poll_datagram() {
                got_b.push(b.receive(
                    SocketAddr::new(IpAddr::from([192, 0, 2, 1]), 5240),
                    &d.bytes,
                ));
                moved = true;
            }
            while let Some(d) = b.link().poll_datagram() {
                got_a.push(a.receive(
                    SocketAddr::new(IpAddr::from([192, 0, 2, 2]), 5240),
                    &d.bytes,
                ));
                moved = true;
            }
            if !moved {
                return (got_a, got_b);
            }
        }
    }

    #[test]
    fn a_decrypted_packet_reaches_the_engine_as_from_the_peers_inner_address() {
        let (ka, kb) = (
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap(),
        );
        let mut a = SecureSide::new(ka.clone(), IpAddr::from([10, 0, 0, 1]));
        let mut b = SecureSide::new(kb.clone(), IpAddr::from([10, 0, 0, 2]));
        assert!(a.set_peers(vec![peer_config(&kb, 2)])[0].1.is_ok());
        assert!(b.set_peers(vec![peer_config(&ka, 1)])[0].1.is_ok());
        a.link().send(&[5, 0, 0, 12, 1, 2, 3, 4]).unwrap();
        let (_, got_b) = exchange(&mut a, &mut b);
        let packet = got_b
            .iter()
            .find_map(|r| match r {
                SecureReceive::Packet(p) => Some(p),
                _ => None,
            })
            .expect("the payload came through");
        let rx = SecureSide::received(packet);
        assert_eq!(rx.payload, &[5, 0, 0, 12, 1, 2, 3, 4]);
        assert_eq!(rx.source, Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!((rx.ttl, rx.on_syncdev, rx.ipv6), (255, true, false));
    }

    #[test]
    fn a_wrong_key_is_logged_once_per_source() {
        let (ka, kb) = (
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap(),
        );
        let stranger = PrivateKey::generate().unwrap();
        let mut a = SecureSide::new(ka.clone(), IpAddr::from([10, 0, 0, 1]));
        // b believes a has another key: a's handshakes come from no peer b knows.
        let mut b = SecureSide::new(kb.clone(), IpAddr::from([10, 0, 0, 2]));
        a.set_peers(vec![peer_config(&kb, 2)]);
        b.set_peers(vec![peer_config(&stranger, 1)]);
        let mut lines = 0;
        let mut refused = 0;
        for _ in 0..5 {
            a.link().send(&[5, 0, 0, 12]).unwrap();
            // A fresh initiation each round, as the timers would make one.
            let mut a_again = SecureSide::new(ka.clone(), IpAddr::from([10, 0, 0, 1]));
            a_again.set_peers(vec![peer_config(&kb, 2)]);
            a_again.link().send(&[5, 0, 0, 12]).unwrap();
            let (_, got_b) = exchange(&mut a_again, &mut b);
            for r in got_b {
                if let SecureReceive::Refused { log, .. } = r {
                    refused += 1;
                    lines += usize::from(log.is_some());
                }
            }
        }
        assert!(refused >= 5, "{refused}");
        assert_eq!(lines, 1, "one line for one source, however many datagrams");
    }

    #[test]
    fn a_plain_packet_from_a_secure_peer_is_a_downgrade() {
        let kb = PrivateKey::generate().unwrap();
        let mut a = SecureSide::new(PrivateKey::generate().unwrap(), IpAddr::from([10, 0, 0, 1]));
        a.set_peers(vec![peer_config(&kb, 2)]);
        assert!(a.refuse_plain(Some(IpAddr::from([10, 0, 0, 2]))));
        assert!(a.refuse_plain(Some(IpAddr::from([192, 0, 2, 2]))));
        assert!(!a.refuse_plain(Some(IpAddr::from([10, 0, 0, 3]))));
        assert!(!a.refuse_plain(None));
        assert_eq!(a.downgrades(), 2);
    }

    #[test]
    fn set_peers_adds_rekeys_and_removes_without_touching_the_others() {
        let keys: Vec<PrivateKey> = (0..3).map(|_| PrivateKey::generate().unwrap()).collect();
        let mut a = SecureSide::new(PrivateKey::generate().unwrap(), IpAddr::from([10, 0, 0, 1]));
        let out = a.set_peers(vec![peer_config(&keys[0], 2), peer_config(&keys[1], 3)]);
        assert_eq!(
            out.iter().map(|o| o.1.clone()).collect::<Vec<_>>(),
            vec![Ok(PeerChange::Added); 2]
        );
        let out = a.set_peers(vec![peer_config(&keys[0], 2), peer_config(&keys[2], 3)]);
        assert_eq!(out[0].1, Ok(PeerChange::Unchanged));
        assert_eq!(out[1].1, Ok(PeerChange::Rekeyed));
        let out = a.set_peers(vec![peer_config(&keys[2], 3)]);
        assert_eq!(out[0].1, Ok(PeerChange::Unchanged));
        let left: Vec<IpAddr> = a.link().peers().map(|p| p.config().inner_addr).collect();
        assert_eq!(left, vec![IpAddr::from([10, 0, 0, 3])]);
    }
}
