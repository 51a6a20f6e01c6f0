//! All secure peers of this node: routes each received datagram to its peer, each pfsync
//! packet to every peer, and changes peers one at a time (SIGHUP) without touching the
//! others' sessions.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};

use super::inner::InnerBuildError;
use super::keys::{PrivateKey, PublicKey};
use super::peer::{PeerConfig, PeerStats, SecurePeer};
use super::{Datagram, InnerPacket, Refusal, RefusalCounts};

/// Handshake messages per second before cookies are demanded. boringtun's device uses
/// 100; every handshake initiation passes the shared limiter twice here (once to route
/// it, once inside the tunnel, whose verified entry point is crate-private), hence 200.
const HANDSHAKE_RATE_LIMIT: u64 = 200;
/// Peer indices are 24 bits: boringtun keeps the low 8 bits of the 32-bit session index
/// for itself.
const INDEX_LIMIT: u32 = 1 << 24;
/// A WireGuard cookie reply's length.
const COOKIE_REPLY_LEN: usize = 64;
/// The largest UDP payload without jumbograms (IPv6: 65535 - 8; IPv4's is 20 less).
const MAX_DATAGRAM: usize = 65_527;
/// Room for the largest inner packet plus WireGuard's overhead; boringtun writes into it
/// (and panics in `encapsulate` if it is too small).
const SCRATCH_LEN: usize = 65_536 + 148;

/// Why a peer cannot be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The peer's inner address is not of this node's inner address family.
    #[error("peer inner address {peer} is not of the family of ours ({ours})")]
    Family {
        /// The peer's.
        peer: IpAddr,
        /// Ours.
        ours: IpAddr,
    },
    /// Two peers with one public key could not be told apart in a handshake.
    #[error("public key {key} is already the key of peer {other}")]
    DuplicateKey {
        /// The key.
        key: PublicKey,
        /// The peer that has it.
        other: IpAddr,
    },
    /// The peer's inner address is our own.
    #[error("peer inner address {0} is this node's own")]
    OwnAddress(IpAddr),
}

/// What [`SecureLink::set_peer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerChange {
    /// A new peer.
    Added,
    /// The peer's key or pre-shared key changed: new tunnel, counters kept.
    Rekeyed,
    /// Only the endpoint changed: the session is kept.
    Moved,
    /// The same configuration: its session is kept.
    Unchanged,
}

/// The secure peers of this node.
pub struct SecureLink {
    private_key: PrivateKey,
    public_key: PublicKey,
    inner_addr: IpAddr,
    limiter: Arc<RateLimiter>,
    peers: Vec<SecurePeer>,
    next_index: u32,
    scratch: Vec<u8>,
    outbox: VecDeque<Datagram>,
    unattributed: RefusalCounts,
}

impl SecureLink {
    /// A link with no peers yet; `inner_addr` is the source of our pfsync packets.
    pub fn new(private_key: PrivateKey, inner_addr: IpAddr) -> SecureLink {
        let public_key = private_key.public_key();
        SecureLink {
            limiter: Arc::new(RateLimiter::new(&public_key.x25519(), HANDSHAKE_RATE_LIMIT)),
            private_key,
            public_key,
            inner_addr,
            peers: Vec::new(),
            next_index: 1,
            scratch: vec![0; SCRATCH_LEN],
            outbox: VecDeque::new(),
            unattributed: RefusalCounts::default(),
        }
    }

    /// This node's public key.
    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// This node's inner address.
    pub fn inner_addr(&self) -> IpAddr {
        self.inner_addr
    }

    fn free_index(&mut self) -> u32 {
        loop {
            let index = self.next_index;
            self.next_index = (self.next_index + 1) % INDEX_LIMIT;
            if index != 0 && self.peers.iter().all(|p| p.index() != index) {
                return index;
            }
        }
    }

    /// Adds the peer, or re-keys the one with its inner address; the other peers'
    /// sessions are not touched.
    pub fn set_peer(&mut self, config: PeerConfig) -> Result<PeerChange, LinkError> {
        if config.inner_addr == self.inner_addr {
            return Err(LinkError::OwnAddress(config.inner_addr));
        }
        if config.inner_addr.is_ipv4() != self.inner_addr.is_ipv4() {
            return Err(LinkError::Family {
                peer: config.inner_addr,
                ours: self.inner_addr,
            });
        }
        if let Some(other) = self
            .peers
            .iter()
            .find(|p| p.config().public_key == config.public_key)
            .filter(|p| p.config().inner_addr != config.inner_addr)
        {
            return Err(LinkError::DuplicateKey {
                key: config.public_key,
                other: other.config().inner_addr,
            });
        }
        let existing = self
            .peers
            .iter()
            .position(|p| p.config().inner_addr == config.inner_addr);
        if let Some(at) = existing {
            let current = self.peers[at].config();
            if current == &config {
                return Ok(PeerChange::Unchanged);
            }
            // Same keys: the session stays valid wherever the peer now is.
            if current.public_key == config.public_key
                && current.preshared_key == config.preshared_key
            {
                self.peers[at].set_endpoint(config.endpoint);
                return Ok(PeerChange::Moved);
            }
        }
        let index = self.free_index();
        let fresh = SecurePeer::new(&self.private_key, config, index, self.limiter.clone());
        match existing {
            Some(at) => {
                let old = std::mem::replace(&mut self.peers[at], fresh);
                self.peers[at].inherit_counters(old);
                self.peers[at].initiate(&mut self.scratch, &mut self.outbox);
                Ok(PeerChange::Rekeyed)
            }
            None => {
                self.peers.push(fresh);
                Ok(PeerChange::Added)
            }
        }
    }

    /// Removes the peer with this inner address; false if there was none.
    pub fn remove_peer(&mut self, inner_addr: IpAddr) -> bool {
        let before = self.peers.len();
        self.peers.retain(|p| p.config().inner_addr != inner_addr);
        self.peers.len() != before
    }

    /// Takes a new private key for this node: every session is dropped and re-handshaken.
    pub fn set_private_key(&mut self, private_key: PrivateKey) {
        self.public_key = private_key.public_key();
        self.limiter = Arc::new(RateLimiter::new(
            &self.public_key.x25519(),
            HANDSHAKE_RATE_LIMIT,
        ));
        for peer in &mut self.peers {
            peer.set_local_key(&private_key, self.limiter.clone());
            peer.initiate(&mut self.scratch, &mut self.outbox);
        }
        self.private_key = private_key;
    }

    /// The configured peers.
    pub fn peers(&self) -> impl Iterator<Item = &SecurePeer> {
        self.peers.iter()
    }

    /// Sends one pfsync payload to every peer.
    pub fn send(&mut self, payload: &[u8]) -> Result<(), InnerBuildError> {
        for peer in &mut self.peers {
            peer.send(
                self.inner_addr,
                payload,
                &mut self.scratch,
                &mut self.outbox,
            )?;
        }
        Ok(())
    }

    /// Sends one pfsync payload to the peer with this inner address; false if none.
    pub fn send_to(&mut self, peer_inner: IpAddr, payload: &[u8]) -> Result<bool, InnerBuildError> {
        match self
            .peers
            .iter_mut()
            .find(|p| p.config().inner_addr == peer_inner)
        {
            Some(peer) => {
                peer.send(
                    self.inner_addr,
                    payload,
                    &mut self.scratch,
                    &mut self.outbox,
                )?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn refuse_unattributed(&mut self, reason: Refusal) -> Refusal {
        self.unattributed.count(reason);
        reason
    }

    /// Handles one received UDP datagram; returns the pfsync packet it carried, if any
    /// (handshakes and keepalives carry none). Replies go to the outbox.
    pub fn receive(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Option<InnerPacket>, Refusal> {
        // No UDP payload is longer; boringtun would refuse it too, but only once it is
        // routed to a peer.
        if datagram.len() > MAX_DATAGRAM {
            return Err(self.refuse_unattributed(Refusal::Malformed));
        }
        let receiver = match Tunn::parse_incoming_packet(datagram) {
            Err(_) => return Err(self.refuse_unattributed(Refusal::Malformed)),
            Ok(Packet::HandshakeInit(init)) => {
                // MAC1 and the load check come before the Diffie-Hellman that finds the
                // sender, so a flood of forged initiations costs a hash each.
                let mut cookie = [0u8; COOKIE_REPLY_LEN];
                match self
                    .limiter
                    .verify_packet(Some(from.ip()), datagram, &mut cookie)
                {
                    Ok(_) => {}
                    Err(TunnResult::WriteToNetwork(reply)) => {
                        self.outbox.push_back(Datagram {
                            to: from,
                            bytes: reply.to_vec(),
                        });
                        return Err(self.refuse_unattributed(Refusal::UnderLoad));
                    }
                    Err(_) => return Err(self.refuse_unattributed(Refusal::NotAuthentic)),
                }
                let Ok(half) = parse_handshake_anon(
                    &self.private_key.secret(),
                    &self.public_key.x25519(),
                    &init,
                ) else {
                    return Err(self.refuse_unattributed(Refusal::NotAuthentic));
                };
                match self
                    .peers
                    .iter_mut()
                    .find(|p| p.config().public_key.as_bytes() == &half.peer_static_public)
                {
                    Some(peer) => {
                        return peer.receive(from, datagram, &mut self.scratch, &mut self.outbox)
                    }
                    None => return Err(self.refuse_unattributed(Refusal::UnknownPeer)),
                }
            }
            Ok(Packet::HandshakeResponse(response)) => response.receiver_idx,
            Ok(Packet::PacketCookieReply(reply)) => reply.receiver_idx,
            Ok(Packet::PacketData(data)) => data.receiver_idx,
        };
        let scratch = &mut self.scratch;
        let outbox = &mut self.outbox;
        let index = receiver >> 8;
        match self.peers.iter_mut().find(|p| p.index() == index) {
            Some(peer) => peer.receive(from, datagram, scratch, outbox),
            None => Err(self.refuse_unattributed(Refusal::UnknownPeer)),
        }
    }

    /// Runs every peer's timers; call every 250 ms or so.
    pub fn update_timers(&mut self) {
        // The limiter is shared, so no tunnel resets it; it resets at most once a second.
        self.limiter.reset_count();
        for peer in &mut self.peers {
            peer.update_timers(&mut self.scratch, &mut self.outbox);
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_datagram(&mut self) -> Option<Datagram> {
        self.outbox.pop_front()
    }

    /// Every peer's counters, dated on `now`.
    pub fn peer_stats(&self, now: Instant) -> Vec<PeerStats> {
        self.peers.iter().map(|p| p.stats(now)).collect()
    }

    /// Refusals of datagrams that could not be tied to a configured peer.
    pub fn unattributed_refusals(&self) -> &RefusalCounts {
        &self.unattributed
    }
}
