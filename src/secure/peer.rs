//! One secure peer: its keys, endpoint and inner address, the boringtun tunnel to it, and
//! what it did (handshakes, bytes, refusals).

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};

use super::inner::{build_inner, check_inner, InnerBuildError};
use super::keys::{PresharedKey, PrivateKey, PublicKey};
use super::{Datagram, InnerPacket, Refusal, RefusalCounts};

/// WireGuard's message type of a handshake initiation: a little-endian u32 1 (type 1 and
/// three reserved zero bytes).
const HANDSHAKE_INIT_TYPE: [u8; 4] = [1, 0, 0, 0];
/// A session older than this is dead (WireGuard's Reject-After-Time; boringtun keeps its
/// own copy private).
const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);

/// A configured secure peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its static public key.
    pub public_key: PublicKey,
    /// The optional pre-shared key between us.
    pub preshared_key: Option<PresharedKey>,
    /// Where its UDP datagrams go.
    pub endpoint: SocketAddr,
    /// The source address of its pfsync packets (its sync address); identifies the peer.
    pub inner_addr: IpAddr,
}

/// Where the handshake with a peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeState {
    /// Nothing sent or received yet.
    None,
    /// A handshake initiation was sent and no session is up.
    Initiating,
    /// A session is up (its handshake is younger than Reject-After-Time).
    Established,
}

/// A peer's counters, for `ctl stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's inner address.
    pub inner_addr: IpAddr,
    /// Its public key.
    pub public_key: PublicKey,
    /// Its endpoint.
    pub endpoint: SocketAddr,
    /// The handshake.
    pub handshake: HandshakeState,
    /// When the current session's handshake completed, on the caller's clock.
    pub last_handshake: Option<Instant>,
    /// Handshake initiations sent.
    pub handshakes_sent: u64,
    /// UDP payload bytes received and accepted (any message type).
    pub bytes_in: u64,
    /// UDP payload bytes sent.
    pub bytes_out: u64,
    /// pfsync packets delivered to the engine.
    pub packets_in: u64,
    /// pfsync packets handed to the tunnel.
    pub packets_out: u64,
    /// Datagrams from this peer refused, by reason.
    pub refused: RefusalCounts,
}

/// One secure peer and its tunnel.
pub struct SecurePeer {
    config: PeerConfig,
    index: u32,
    tunnel: Tunn,
    handshakes_sent: u64,
    bytes_in: u64,
    bytes_out: u64,
    packets_in: u64,
    packets_out: u64,
    refused: RefusalCounts,
}

impl fmt::Debug for SecurePeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurePeer")
            .field("config", &self.config)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// The refusal a boringtun error stands for.
fn refusal_of(error: &WireGuardError) -> Refusal {
    use WireGuardError as E;
    match error {
        E::DuplicateCounter | E::InvalidCounter | E::WrongTai64nTimestamp => Refusal::Replay,
        E::InvalidMac | E::InvalidAeadTag | E::WrongKey | E::InvalidTai64nTimestamp => {
            Refusal::NotAuthentic
        }
        E::WrongIndex | E::UnexpectedPacket => Refusal::Unexpected,
        E::NoCurrentSession | E::ConnectionExpired => Refusal::NoSession,
        E::UnderLoad => Refusal::UnderLoad,
        // The rest are shape errors (our scratch buffer is larger than any datagram, so
        // DestinationBufferTooSmall and LockFailed do not arise from our calls).
        E::IncorrectPacketLength
        | E::WrongPacketType
        | E::InvalidPacket
        | E::DestinationBufferTooSmall
        | E::LockFailed => Refusal::Malformed,
    }
}

impl SecurePeer {
    /// A peer with a fresh tunnel; `index` (24 bits) is how its messages find it.
    pub fn new(
        local: &PrivateKey,
        config: PeerConfig,
        index: u32,
        limiter: Arc<RateLimiter>,
    ) -> SecurePeer {
        let tunnel = Tunn::new(
            local.secret(),
            config.public_key.x25519(),
            config.preshared_key.as_ref().map(PresharedKey::bytes),
            None,
            index,
            Some(limiter),
        );
        SecurePeer {
            config,
            index,
            tunnel,
            handshakes_sent: 0,
            bytes_in: 0,
            bytes_out: 0,
            packets_in: 0,
            packets_out: 0,
            refused: RefusalCounts::default(),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &PeerConfig {
        &self.config
    }

    /// Sends to a new endpoint from now on (the keys and session stay).
    pub fn set_endpoint(&mut self, endpoint: SocketAddr) {
        self.config.endpoint = endpoint;
    }

    /// The index its messages carry (receiver index >> 8).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Takes this node's new private key; the sessions are dropped and rebuilt by a new
    /// handshake.
    pub fn set_local_key(&mut self, local: &PrivateKey, limiter: Arc<RateLimiter>) {
        self.tunnel
            .set_static_private(local.secret(), local.public_key().x25519(), Some(limiter));
    }

    /// Keeps the counters of the tunnel this one replaces (a re-key is the same peer).
    pub(crate) fn inherit_counters(&mut self, old: SecurePeer) {
        self.handshakes_sent += old.handshakes_sent;
        self.bytes_in += old.bytes_in;
        self.bytes_out += old.bytes_out;
        self.packets_in += old.packets_in;
        self.packets_out += old.packets_out;
        for (reason, n) in old.refused.iter() {
            for _ in 0..n {
                self.refused.count(reason);
            }
        }
    }

    /// Counts a refusal of a datagram routed to this peer.
    pub fn count_refusal(&mut self, reason: Refusal) {
        self.refused.count(reason);
    }

    fn emit(&mut self, bytes: &[u8], out: &mut VecDeque<Datagram>) {
        if bytes.get(..4) == Some(&HANDSHAKE_INIT_TYPE[..]) {
            self.handshakes_sent += 1;
        }
        self.bytes_out += bytes.len() as u64;
        out.push_back(Datagram {
            to: self.config.endpoint,
            bytes: bytes.to_vec(),
        });
    }

    /// Encrypts one pfsync payload, wrapped as the kernel would send it from `local_inner`
    /// to this peer. Without a session the tunnel queues it and starts a handshake.
    pub fn send(
        &mut self,
        local_inner: IpAddr,
        payload: &[u8],
        scratch: &mut [u8],
        out: &mut VecDeque<Datagram>,
    ) -> Result<(), InnerBuildError> {
        let packet = build_inner(local_inner, self.config.inner_addr, payload)?;
        self.packets_out += 1;
        // Anything but a datagram means the packet waits in the tunnel's queue behind a
        // handshake already under way.
        if let TunnResult::WriteToNetwork(bytes) = self.tunnel.encapsulate(&packet, scratch) {
            self.emit(bytes, out);
        }
        Ok(())
    }

    /// Handles a datagram routed to this peer; returns the pfsync packet it carried, if
    /// any. Every refusal is counted here.
    pub fn receive(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        scratch: &mut [u8],
        out: &mut VecDeque<Datagram>,
    ) -> Result<Option<InnerPacket>, Refusal> {
        let result = self.tunnel.decapsulate(Some(from.ip()), datagram, scratch);
        let (delivered, reply) = match result {
            TunnResult::Done => (None, None),
            TunnResult::Err(e) => {
                let reason = refusal_of(&e);
                self.refused.count(reason);
                return Err(reason);
            }
            TunnResult::WriteToNetwork(bytes) => (None, Some(bytes.to_vec())),
            TunnResult::WriteToTunnelV4(packet, _) | TunnResult::WriteToTunnelV6(packet, _) => {
                (Some(packet.to_vec()), None)
            }
        };
        self.bytes_in += datagram.len() as u64;
        if let Some(reply) = reply {
            self.emit(&reply, out);
        }
        // A session that just came up releases the packets queued behind its handshake:
        // after our handshake's response, or, when the peer initiated, after its first
        // data (the responder's session is current only then). Before the engine's next
        // packet, so they keep their order.
        self.flush_queue(scratch, out);
        let Some(packet) = delivered else {
            return Ok(None);
        };
        match check_inner(&packet, self.config.inner_addr) {
            Ok(payload) => {
                self.packets_in += 1;
                Ok(Some(InnerPacket {
                    peer: self.config.inner_addr,
                    packet,
                    payload,
                }))
            }
            Err(reason) => {
                self.refused.count(reason);
                Err(reason)
            }
        }
    }

    fn flush_queue(&mut self, scratch: &mut [u8], out: &mut VecDeque<Datagram>) {
        loop {
            let bytes = match self.tunnel.decapsulate(None, &[], scratch) {
                TunnResult::WriteToNetwork(bytes) => bytes.to_vec(),
                _ => return,
            };
            self.emit(&bytes, out);
        }
    }

    /// Starts a handshake now (a new one even if one is under way), rather than at the
    /// next packet or the 5 s retry: after a re-key the link is down until one completes.
    pub fn initiate(&mut self, scratch: &mut [u8], out: &mut VecDeque<Datagram>) {
        let bytes = match self.tunnel.format_handshake_initiation(scratch, true) {
            TunnResult::WriteToNetwork(bytes) => bytes.to_vec(),
            _ => return,
        };
        self.emit(&bytes, out);
    }

    /// Runs the tunnel's timers: handshake retries, rekeying, keepalives, expiry.
    pub fn update_timers(&mut self, scratch: &mut [u8], out: &mut VecDeque<Datagram>) {
        let bytes = match self.tunnel.update_timers(scratch) {
            TunnResult::WriteToNetwork(bytes) => bytes.to_vec(),
            // ConnectionExpired only says the session is gone; the next send rebuilds it.
            _ => return,
        };
        self.emit(&bytes, out);
    }

    /// Its counters, with the last handshake dated on the caller's clock `now`.
    pub fn stats(&self, now: Instant) -> PeerStats {
        let since = self.tunnel.time_since_last_handshake();
        let handshake = match since {
            Some(age) if age < REJECT_AFTER_TIME => HandshakeState::Established,
            _ if self.handshakes_sent > 0 => HandshakeState::Initiating,
            _ => HandshakeState::None,
        };
        PeerStats {
            inner_addr: self.config.inner_addr,
            public_key: self.config.public_key,
            endpoint: self.config.endpoint,
            handshake,
            last_handshake: since.and_then(|age| now.checked_sub(age)),
            handshakes_sent: self.handshakes_sent,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            packets_in: self.packets_in,
            packets_out: self.packets_out,
            refused: self.refused.clone(),
        }
    }
}
