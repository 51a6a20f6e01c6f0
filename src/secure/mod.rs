//! The secure link: pfsync packets carried between pfsyncd peers inside the WireGuard
//! protocol (Noise IK, ChaCha20-Poly1305, replay window, rekeying, cookies under load),
//! implemented by boringtun's `noise` module, used as a library.
//!
//! Sans-IO like the engine: no sockets here. The caller feeds received UDP datagrams to
//! [`SecureLink::receive`] and pfsync payloads to [`SecureLink::send`], drains
//! [`SecureLink::poll_datagram`] into its UDP socket, and ticks
//! [`SecureLink::update_timers`] (every 250 ms, as boringtun's own device does). boringtun
//! reads the monotonic clock itself for its timers; the caller's clock only paces the
//! ticks and dates the statistics.
//!
//! Each inner packet is the pfsync packet as the kernel sends it (IP, protocol 240, TTL
//! 255): the inner source must be the peer's configured inner address.

mod inner;
mod keys;
mod link;
mod peer;

pub use inner::{build_inner, check_inner, InnerBuildError, PFSYNC_TTL};
pub use keys::{
    check_private_key_file, read_private_key, read_private_key_file, KeyError, PresharedKey,
    PrivateKey, PublicKey, KEY_LEN, KEY_TEXT_LEN,
};
pub use link::{LinkError, PeerChange, SecureLink};
pub use peer::{HandshakeState, PeerConfig, PeerStats, SecurePeer};

use std::net::{IpAddr, SocketAddr};
use std::ops::{Index, Range};

/// Why a received datagram was refused. Nothing refused reaches the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    /// Not a WireGuard message (type or length wrong).
    #[error("not a WireGuard message")]
    Malformed,
    /// A MAC, AEAD tag or the handshake's static key does not verify.
    #[error("does not authenticate")]
    NotAuthentic,
    /// A data counter already seen or too old, or a handshake timestamp not newer.
    #[error("replay")]
    Replay,
    /// A handshake from a key no peer has, or a message for an index none of ours.
    #[error("from no configured peer")]
    UnknownPeer,
    /// A handshake reply no handshake of ours waits for.
    #[error("unexpected handshake message")]
    Unexpected,
    /// Data for a session that does not exist (any more).
    #[error("no session")]
    NoSession,
    /// Handshake refused under load (a cookie reply was sent instead).
    #[error("under load")]
    UnderLoad,
    /// The decrypted packet is not an IP packet.
    #[error("inner packet malformed")]
    InnerMalformed,
    /// The decrypted packet's source is not the peer's inner address.
    #[error("inner source is not the peer's")]
    InnerSource,
    /// The decrypted packet is not protocol 240.
    #[error("inner packet is not pfsync")]
    InnerProtocol,
    /// The decrypted packet's TTL (hop limit) is not 255.
    #[error("inner TTL is not 255")]
    InnerTtl,
}

impl Refusal {
    /// Every reason, in counter order.
    pub const ALL: [Refusal; 11] = [
        Refusal::Malformed,
        Refusal::NotAuthentic,
        Refusal::Replay,
        Refusal::UnknownPeer,
        Refusal::Unexpected,
        Refusal::NoSession,
        Refusal::UnderLoad,
        Refusal::InnerMalformed,
        Refusal::InnerSource,
        Refusal::InnerProtocol,
        Refusal::InnerTtl,
    ];

    /// A short name for counters and `ctl stats`.
    pub fn name(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::NotAuthentic => "not-authentic",
            Refusal::Replay => "replay",
            Refusal::UnknownPeer => "unknown-peer",
            Refusal::Unexpected => "unexpected",
            Refusal::NoSession => "no-session",
            Refusal::UnderLoad => "under-load",
            Refusal::InnerMalformed => "inner-malformed",
            Refusal::InnerSource => "inner-source",
            Refusal::InnerProtocol => "inner-protocol",
            Refusal::InnerTtl => "inner-ttl",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// Datagrams refused, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusalCounts([u64; Refusal::ALL.len()]);

impl RefusalCounts {
    /// Counts one refusal.
    pub fn count(&mut self, reason: Refusal) {
        self.0[reason.slot()] += 1;
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// (reason, count) for every reason.
    pub fn iter(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Refusal::ALL.iter().map(|r| (*r, self.0[r.slot()]))
    }
}

impl Index<Refusal> for RefusalCounts {
    type Output = u64;
    fn index(&self, reason: Refusal) -> &u64 {
        &self.0[reason.slot()]
    }
}

/// A UDP datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The peer's endpoint.
    pub to: SocketAddr,
    /// The WireGuard message.
    pub bytes: Vec<u8>,
}

/// A pfsync packet received from a secure peer, authenticated and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerPacket {
    /// The peer's configured inner address (the packet's source).
    pub peer: IpAddr,
    /// The whole inner IP packet, as the kernel would have received it on the plain link.
    pub packet: Vec<u8>,
    /// Where the pfsync payload is in `packet`.
    pub payload: Range<usize>,
}

impl InnerPacket {
    /// The pfsync payload, for the engine.
    pub fn payload(&self) -> &[u8] {
        &self.packet[self.payload.clone()]
    }
}
