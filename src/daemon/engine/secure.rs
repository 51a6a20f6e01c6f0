//! The secure link's side in the engine process: the `SecureLink` (and so every tunnel's
//! keys) lives here, in the confined process, which authenticates and decrypts what the
//! parent forwards unparsed. A pfsync packet that comes out reaches the engine as one
//! from the peer's inner address on the sync interface would; a plain-link packet from
//! an address a secure peer holds is a downgrade and refused.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::daemon::privsep::ToParent;
use crate::daemon::secure_config::SecureConfig;
use crate::engine::Received;
use crate::secure::{
    HandshakeState, InnerPacket, LinkError, PeerChange, PeerConfig, PresharedKey, PrivateKey,
    Refusal, RefusalCounts, SecureLink,
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

/// How often the tunnels' timers run (the handshake retry and keepalive timers are
/// kept to this granularity, as WireGuard's are).
pub const TIMER_TICK: Duration = Duration::from_millis(250);

/// The engine process's secure link.
pub struct SecureSide {
    link: SecureLink,
    /// When the tunnels' timers run next.
    next_tick: Instant,
    /// Sources already reported as failing to authenticate.
    reported: BTreeSet<IpAddr>,
    /// Plain-link packets refused because their source is a secure peer's.
    downgrades: u64,
    /// The pre-shared keys the parent last read, by peer inner address (at start, and
    /// on each SIGHUP whose read succeeded): what a peer with a `psk` file uses.
    preshared_keys: BTreeMap<IpAddr, PresharedKey>,
}

impl SecureSide {
    /// A link with this node's key and inner address, and no peers yet.
    pub fn new(private_key: PrivateKey, inner_addr: IpAddr) -> SecureSide {
        SecureSide {
            link: SecureLink::new(private_key, inner_addr),
            next_tick: Instant::now(),
            reported: BTreeSet::new(),
            downgrades: 0,
            preshared_keys: BTreeMap::new(),
        }
    }

    /// The link the daemon starts with, its peers' outcomes logged (a peer refused,
    /// say for our own key, is left out and said so; the others run).
    pub fn start(
        private_key: PrivateKey,
        inner_addr: IpAddr,
        peers: Vec<PeerConfig>,
    ) -> SecureSide {
        let mut side = SecureSide::new(private_key, inner_addr);
        side.preshared_keys = peers
            .iter()
            .filter_map(|p| Some((p.inner_addr, p.preshared_key.clone()?)))
            .collect();
        for (addr, outcome) in side.set_peers(peers) {
            match outcome {
                Ok(_) => crate::log_info!("secure peer {addr} configured"),
                Err(e) => crate::log_error!("secure peer {addr}: {e}"),
            }
        }
        side
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

    /// When [`SecureSide::tick`] is due, for the loop's poll timeout.
    pub fn tick_deadline(&self) -> Instant {
        self.next_tick
    }

    /// Runs the tunnels' timers when due.
    pub fn tick(&mut self, now: Instant) {
        if now >= self.next_tick {
            self.link.update_timers();
            self.next_tick = now + TIMER_TICK;
        }
    }

    /// Wraps one pfsync packet the engine sends for every secure peer (a peer without
    /// a session holds it and starts a handshake).
    pub fn send(&mut self, payload: &[u8]) {
        if let Err(e) = self.link.send(payload) {
            crate::log_warn!(
                "secure link: packet of {} bytes not sent: {e}",
                payload.len()
            );
        }
    }

    /// Wraps one payload for the secure peer with this inner address alone (a pfsyncd
    /// extension frame for that peer); false if no such peer.
    pub fn send_to(&mut self, inner_addr: IpAddr, payload: &[u8]) -> bool {
        match self.link.send_to(inner_addr, payload) {
            Ok(found) => found,
            Err(e) => {
                crate::log_warn!(
                    "secure link: frame of {} bytes to {inner_addr} not sent: {e}",
                    payload.len()
                );
                true
            }
        }
    }

    /// The inner addresses of the configured peers.
    pub fn inner_addrs(&self) -> Vec<IpAddr> {
        self.link.peers().map(|p| p.config().inner_addr).collect()
    }

    /// Queues every datagram the link has to send for the parent, which owns the
    /// sockets.
    pub fn queue_datagrams(&mut self, out: &mut Vec<u8>) {
        while let Some(d) = self.link.poll_datagram() {
            ToParent::SecureSend {
                to: d.to,
                datagram: &d.bytes,
            }
            .encode(out);
        }
    }

    /// The peers a reloaded configuration names, each with the pre-shared key the
    /// parent last read for it (this process cannot open the files). A peer whose `psk`
    /// file never read gets none, and its line says so.
    pub fn peers_from_config(&self, secure: &SecureConfig) -> Vec<PeerConfig> {
        secure
            .peers
            .iter()
            .map(|entry| {
                let inner_addr = entry.inner_addr();
                let preshared_key = entry
                    .psk_file
                    .as_ref()
                    .and_then(|_| self.preshared_keys.get(&inner_addr).cloned());
                if entry.psk_file.is_some() && preshared_key.is_none() {
                    crate::log_warn!(
                        "secure peer {inner_addr}: no pre-shared key could be read; without it the handshake fails"
                    );
                }
                PeerConfig {
                    public_key: entry.public_key,
                    preshared_key,
                    endpoint: entry.endpoint(secure.port),
                    inner_addr,
                }
            })
            .collect()
    }

    /// Takes this node's private key as the parent read it again; a key that differs
    /// from the running one re-keys every session (true), the same key changes nothing.
    pub fn set_private_key(&mut self, private_key: PrivateKey) -> bool {
        if private_key.public_key() == self.link.public_key() {
            return false;
        }
        self.link.set_private_key(private_key);
        self.reported.clear();
        true
    }

    /// Takes a peer's pre-shared key as the parent read it again. A configured peer
    /// whose key differs is re-keyed now, alone; a peer not configured yet takes it
    /// when the `Reconfigure` that follows adds it. `None` when nothing changed.
    pub fn set_preshared_key(
        &mut self,
        peer: IpAddr,
        key: PresharedKey,
    ) -> Option<Result<PeerChange, LinkError>> {
        self.preshared_keys.insert(peer, key.clone());
        let current = self
            .link
            .peers()
            .map(|p| p.config())
            .find(|c| c.inner_addr == peer)?;
        if current.preshared_key.as_ref() == Some(&key) {
            return None;
        }
        let config = PeerConfig {
            preshared_key: Some(key),
            ..current.clone()
        };
        Some(self.link.set_peer(config))
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

    /// `ctl stats --json`'s `secure` object: per peer its handshake, last handshake
    /// (seconds ago), bytes and packets each way and refusals by reason; then the
    /// refusals no peer could be blamed for, and the downgrades.
    pub fn stats_json(&self, now: Instant) -> Value {
        let peers: Vec<Value> = self
            .link
            .peer_stats(now)
            .iter()
            .map(|p| {
                json!({
                    "inner": p.inner_addr.to_string(),
                    "endpoint": p.endpoint.to_string(),
                    "public_key": p.public_key.to_string(),
                    "handshake": handshake_name(p.handshake),
                    "last_handshake_secs": p.last_handshake.map(|t| now.saturating_duration_since(t).as_secs()),
                    "handshakes_sent": p.handshakes_sent,
                    "bytes_in": p.bytes_in,
                    "bytes_out": p.bytes_out,
                    "packets_in": p.packets_in,
                    "packets_out": p.packets_out,
                    "refused": refusals_json(&p.refused),
                })
            })
            .collect();
        json!({
            "peers": peers,
            "refused_unattributed": refusals_json(self.link.unattributed_refusals()),
            "downgrade": self.downgrades,
        })
    }

    /// `ctl stats`'s secure link lines, one per peer and one for the rest.
    pub fn stats_text(&self, now: Instant) -> String {
        let mut out = String::new();
        for p in self.link.peer_stats(now) {
            let last = p.last_handshake.map_or_else(
                || "never".to_string(),
                |t| format!("{}s ago", now.saturating_duration_since(t).as_secs()),
            );
            out.push_str(&format!(
                "secure peer {} ({}): handshake {} (last {last}), in {} bytes {} packets, out {} bytes {} packets, refused {}\n",
                p.inner_addr,
                p.endpoint,
                handshake_name(p.handshake),
                p.bytes_in,
                p.packets_in,
                p.bytes_out,
                p.packets_out,
                refusals_text(&p.refused),
            ));
        }
        out.push_str(&format!(
            "secure link: refused from no peer {}, downgrade {}\n",
            refusals_text(self.link.unattributed_refusals()),
            self.downgrades
        ));
        out
    }

    /// The link, for sending, timers and statistics.
    pub fn link(&mut self) -> &mut SecureLink {
        &mut self.link
    }
}

fn handshake_name(state: HandshakeState) -> &'static str {
    match state {
        HandshakeState::None => "none",
        HandshakeState::Initiating => "initiating",
        HandshakeState::Established => "established",
    }
}

fn refusals_json(counts: &RefusalCounts) -> Value {
    let map: Map<String, Value> = counts
        .iter()
        .map(|(reason, n)| (reason.name().to_string(), Value::from(n)))
        .collect();
    Value::Object(map)
}

/// The non-zero reasons, `replay 3, not-authentic 1`, or `0`.
fn refusals_text(counts: &RefusalCounts) -> String {
    let named: Vec<String> = counts
        .iter()
        .filter(|&(_, n)| n > 0)
        .map(|(reason, n)| format!("{} {n}", reason.name()))
        .collect();
    if named.is_empty() {
        "0".to_string()
    } else {
        named.join(", ")
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

    #[test]
    fn stats_show_each_peer_handshake_bytes_and_refusals() {
        let (ka, kb) = (
            PrivateKey::generate().unwrap(),
            PrivateKey::generate().unwrap(),
        );
        let mut a = SecureSide::new(ka.clone(), IpAddr::from([10, 0, 0, 1]));
        let mut b = SecureSide::new(kb.clone(), IpAddr::from([10, 0, 0, 2]));
        a.set_peers(vec![peer_config(&kb, 2)]);
        b.set_peers(vec![peer_config(&ka, 1)]);
        a.link().send(&[5, 0, 0, 12]).unwrap();
        let mut captured = Vec::new();
        loop {
            let mut moved = false;
            while let Some(d) = a.link().poll_datagram() {
                captured.push(d.bytes.clone());
                b.receive("192.0.2.1:5240".parse().unwrap(), &d.bytes);
                moved = true;
            }
            while let Some(d) = b.link().poll_datagram() {
                a.receive("192.0.2.2:5240".parse().unwrap(), &d.bytes);
                moved = true;
            }
            if !moved {
                break;
            }
        }
        // Every captured datagram again: each a replay (or a handshake not newer).
        for d in &captured {
            b.receive("192.0.2.1:5240".parse().unwrap(), d);
        }
        b.receive("192.0.2.9:5240".parse().unwrap(), &[9; 40]);
        b.refuse_plain(Some(IpAddr::from([10, 0, 0, 1])));
        let now = Instant::now();
        let json = b.stats_json(now);
        let peer = &json["peers"][0];
        assert_eq!(peer["inner"], "10.0.0.1");
        assert_eq!(peer["handshake"], "established");
        assert!(peer["bytes_in"].as_u64().unwrap() > 0, "{json}");
        assert!(peer["bytes_out"].as_u64().unwrap() > 0, "{json}");
        assert_eq!(peer["packets_in"], 1);
        assert!(peer["refused"]["replay"].as_u64().unwrap() >= 1, "{json}");
        assert_eq!(json["refused_unattributed"]["malformed"], 1);
        assert_eq!(json["downgrade"], 1);
        let text = b.stats_text(now);
        assert!(
            text.contains("secure peer 10.0.0.1 (192.0.2.1:5240): handshake established"),
            "{text}"
        );
        assert!(text.contains("replay"), "{text}");
        assert!(
            text.contains("refused from no peer malformed 1, downgrade 1"),
            "{text}"
        );
    }
}
