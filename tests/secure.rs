//! The secure link in process: `SecureLink`s exchanging WireGuard datagrams through an
//! in-memory network (no sockets), with an attacker that replays, forges and injects.
//! The WireGuard side of the peers is boringtun itself (the crate the link uses); the
//! attacker's raw tunnel is a boringtun `Tunn` too, holding a configured peer's key, to
//! carry inner packets our link would never build.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey as X25519Public, StaticSecret};

use pfsyncd::secure::{
    Datagram, HandshakeState, InnerPacket, PeerChange, PeerConfig, PresharedKey, PrivateKey,
    Refusal, SecureLink,
};

/// One node: its endpoint, its link, and what it received.
struct Node {
    endpoint: SocketAddr,
    link: SecureLink,
    delivered: Vec<InnerPacket>,
    refused: Vec<Refusal>,
}

/// Nodes joined by a lossless network that records every datagram it carried.
struct Net {
    nodes: Vec<Node>,
    carried: Vec<(SocketAddr, Datagram)>,
}

fn inner_v4(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

fn endpoint(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)), 8240)
}

impl Net {
    /// `count` nodes with fresh keys, inner addresses 10.0.0.1.., no peers yet.
    fn new(count: u8) -> (Net, Vec<PrivateKey>) {
        let keys: Vec<PrivateKey> = (0..count)
            .map(|_| PrivateKey::generate().unwrap())
            .collect();
        let nodes = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let n = i as u8 + 1;
                Node {
                    endpoint: endpoint(n),
                    link: SecureLink::new(key.clone(), inner_v4(n)),
                    delivered: Vec::new(),
                    refused: Vec::new(),
                }
            })
            .collect();
        (
            Net {
                nodes,
                carried: Vec::new(),
            },
            keys,
        )
    }

    fn config(&self, of: usize) -> PeerConfig {
        PeerConfig {
            public_key: self.nodes[of].link.public_key(),
            preshared_key: None,
            endpoint: self.nodes[of].endpoint,
            inner_addr: self.nodes[of].link.inner_addr(),
        }
    }

    /// Makes `a` and `b` peers of each other.
    fn pair(&mut self, a: usize, b: usize) {
        let (ca, cb) = (self.config(a), self.config(b));
        assert_eq!(self.nodes[a].link.set_peer(cb).unwrap(), PeerChange::Added);
        assert_eq!(self.nodes[b].link.set_peer(ca).unwrap(), PeerChange::Added);
    }

    /// Delivers datagrams until none is left; returns how many were carried.
    fn run(&mut self) -> usize {
        let mut carried = 0;
        for _round in 0..100 {
            let mut in_flight: VecDeque<(SocketAddr, Datagram)> = VecDeque::new();
            for node in &mut self.nodes {
                while let Some(d) = node.link.poll_datagram() {
                    in_flight.push_back((node.endpoint, d));
                }
            }
            if in_flight.is_empty() {
                return carried;
            }
            for (from, d) in in_flight {
                carried += 1;
                self.carried.push((from, d.clone()));
                self.deliver(from, &d);
            }
        }
        panic!("the network never went quiet");
    }

    /// Hands one datagram to the node at `d.to`, if any.
    fn deliver(&mut self, from: SocketAddr, d: &Datagram) -> Option<Result<(), Refusal>> {
        let node = self.nodes.iter_mut().find(|n| n.endpoint == d.to)?;
        Some(match node.link.receive(from, &d.bytes) {
            Ok(Some(p)) => {
                node.delivered.push(p);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(r) => {
                node.refused.push(r);
                Err(r)
            }
        })
    }

    fn payloads(&self, node: usize) -> Vec<Vec<u8>> {
        self.nodes[node]
            .delivered
            .iter()
            .map(|p| p.payload().to_vec())
            .collect()
    }

    fn stats(&self, node: usize, peer: usize) -> pfsyncd::secure::PeerStats {
        let inner = self.nodes[peer].link.inner_addr();
        self.nodes[node]
            .link
            .peer_stats(Instant::now())
            .into_iter()
            .find(|s| s.inner_addr == inner)
            .unwrap()
    }
}

#[test]
fn two_links_handshake_and_carry_pfsync_both_ways() {
    let (mut net, _) = Net::new(2);
    net.pair(0, 1);
    net.nodes[0].link.send(b"from one").unwrap();
    net.run();
    net.nodes[1].link.send(b"from two").unwrap();
    net.run();
    assert_eq!(net.payloads(1), vec![b"from one".to_vec()]);
    assert_eq!(net.payloads(0), vec![b"from two".to_vec()]);

    let delivered = &net.nodes[1].delivered[0];
    assert_eq!(delivered.peer, inner_v4(1));
    // The inner packet is the kernel's: IPv4, protocol 240, TTL 255, from node 1 to 2.
    assert_eq!(delivered.packet[0], 0x45);
    assert_eq!(delivered.packet[8], 255);
    assert_eq!(delivered.packet[9], 240);

    let one = net.stats(0, 1);
    assert_eq!(one.handshake, HandshakeState::Established);
    assert!(one.last_handshake.is_some());
    assert_eq!(one.handshakes_sent, 1);
    assert_eq!((one.packets_out, one.packets_in), (1, 1));
    assert!(one.bytes_in > 0 && one.bytes_out > 0);
    assert_eq!(one.refused.total(), 0);
    let two = net.stats(1, 0);
    assert_eq!(two.handshake, HandshakeState::Established);
    assert_eq!(
        two.handshakes_sent, 0,
        "node 2 answered, it did not initiate"
    );
    assert!(net.nodes.iter().all(|n| n.refused.is_empty()));
}

#[test]
fn ipv6_inner_addresses_and_a_preshared_key_work() {
    let key_a = PrivateKey::generate().unwrap();
    let key_b = PrivateKey::generate().unwrap();
    let a6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));
    let b6 = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
    let psk = PresharedKey::from_bytes([7; 32]);
    let mut a = SecureLink::new(key_a.clone(), a6);
    let mut b = SecureLink::new(key_b.clone(), b6);
    let ea: SocketAddr = "[2001:db8::1]:8240".parse().unwrap();
    let eb: SocketAddr = "[2001:db8::2]:8240".parse().unwrap();
    a.set_peer(PeerConfig {
        public_key: key_b.public_key(),
        preshared_key: Some(psk.clone()),
        endpoint: eb,
        inner_addr: b6,
    })
    .unwrap();
    b.set_peer(PeerConfig {
        public_key: key_a.public_key(),
        preshared_key: Some(psk),
        endpoint: ea,
        inner_addr: a6,
    })
    .unwrap();
    a.send(b"v6").unwrap();
    let mut got = Vec::new();
    for _ in 0..10 {
        while let Some(d) = a.poll_datagram() {
            assert_eq!(d.to, eb);
            if let Some(p) = b.receive(ea, &d.bytes).unwrap() {
                got.push(p);
            }
        }
        while let Some(d) = b.poll_datagram() {
            assert!(a.receive(eb, &d.bytes).unwrap().is_none());
        }
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload(), b"v6");
    assert_eq!(got[0].packet[0] >> 4, 6);
    assert_eq!(got[0].packet[7], 255, "hop limit");
}

#[test]
fn a_replayed_datagram_is_refused_and_counted() {
    let (mut net, _) = Net::new(2);
    net.pair(0, 1);
    net.nodes[0].link.send(b"once").unwrap();
    net.run();
    assert_eq!(net.payloads(1).len(), 1);

    // Every datagram the network carried, again: handshake messages and data.
    let captured = net.carried.clone();
    for (from, d) in &captured {
        let outcome = net.deliver(*from, d).unwrap();
        assert!(outcome.is_err(), "replay of {:?} accepted", &d.bytes[..4]);
    }
    assert_eq!(net.payloads(1).len(), 1, "a replay delivered a packet");
    let data_replays = net.stats(1, 0).refused[Refusal::Replay];
    assert!(
        data_replays >= 2,
        "initiation and data are replays: {data_replays}"
    );
    // The session survives the replays.
    net.nodes[0].link.send(b"twice").unwrap();
    net.run();
    assert_eq!(net.payloads(1), vec![b"once".to_vec(), b"twice".to_vec()]);
}

#[test]
fn a_wrong_key_never_handshakes_and_says_why() {
    // Node 1 has a wrong key for node 2: node 2 cannot verify the initiation's MAC.
    let (mut net, _) = Net::new(2);
    let stranger = PrivateKey::generate().unwrap().public_key();
    let mut wrong = net.config(1);
    wrong.public_key = stranger;
    net.nodes[0].link.set_peer(wrong).unwrap();
    let right = net.config(0);
    net.nodes[1].link.set_peer(right).unwrap();
    net.nodes[0].link.send(b"lost").unwrap();
    net.run();
    net.nodes[0].link.update_timers();
    net.run();
    assert!(net.payloads(1).is_empty());
    assert_eq!(net.nodes[1].refused, vec![Refusal::NotAuthentic]);
    assert_eq!(
        net.nodes[1].link.unattributed_refusals()[Refusal::NotAuthentic],
        1
    );
    assert_eq!(net.stats(0, 1).handshake, HandshakeState::Initiating);
    assert_eq!(net.stats(1, 0).handshake, HandshakeState::None);

    // Node 2 has a wrong key for node 1: the initiation decrypts to a key it does not know.
    let (mut net, _) = Net::new(2);
    let right = net.config(1);
    net.nodes[0].link.set_peer(right).unwrap();
    let mut wrong = net.config(0);
    wrong.public_key = stranger;
    net.nodes[1].link.set_peer(wrong).unwrap();
    net.nodes[0].link.send(b"lost").unwrap();
    net.run();
    assert!(net.payloads(1).is_empty());
    assert_eq!(net.nodes[1].refused, vec![Refusal::UnknownPeer]);
    assert_eq!(net.stats(0, 1).handshake, HandshakeState::Initiating);
}

#[test]
fn random_and_forged_datagrams_are_refused_without_panic() {
    let (mut net, _) = Net::new(2);
    net.pair(0, 1);
    net.nodes[0].link.send(b"real").unwrap();
    net.run();
    let captured = net.carried.clone();
    let attacker = endpoint(66);
    let target = net.nodes[1].endpoint;

    // Random bytes of every length around WireGuard's message sizes.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut random = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    };
    let mut forged = 0u64;
    for len in (0..200).chain([1400, 65_000, 70_000]) {
        let mut bytes = random(len);
        for message_type in 1..=4u8 {
            if len >= 4 {
                bytes[..4].copy_from_slice(&[message_type, 0, 0, 0]);
            }
            let d = Datagram {
                to: target,
                bytes: bytes.clone(),
            };
            assert!(net.deliver(attacker, &d).unwrap().is_err());
            forged += 1;
        }
    }
    // Each real datagram with one bit flipped anywhere.
    for (from, d) in &captured {
        for at in 0..d.bytes.len() {
            let mut bytes = d.bytes.clone();
            bytes[at] ^= 0x01;
            let d = Datagram { to: d.to, bytes };
            assert!(
                net.deliver(*from, &d).unwrap().is_err(),
                "bit {at} flipped accepted"
            );
            forged += 1;
        }
    }
    assert_eq!(net.payloads(1), vec![b"real".to_vec()]);
    assert_eq!(net.payloads(0), Vec::<Vec<u8>>::new());
    // Every forgery is counted once, at the node it was sent to: with the peer it was
    // routed to, or unattributed.
    let counted: u64 = (0..2)
        .map(|n| {
            net.nodes[n].link.unattributed_refusals().total() + net.stats(n, 1 - n).refused.total()
        })
        .sum();
    assert_eq!(counted, forged, "every forgery counted");
}

/// A raw boringtun tunnel holding node 1's key: what a node that has a configured peer's
/// key could send, including inner packets our link never builds.
fn raw_tunnel_as(key: &PrivateKey, to: &SecureLink) -> Tunn {
    let secret = StaticSecret::from(
        <[u8; 32]>::try_from(base64_decode(key.to_base64().as_str()).as_slice()).unwrap(),
    );
    Tunn::new(
        secret,
        X25519Public::from(*to.public_key().as_bytes()),
        None,
        None,
        4242,
        None,
    )
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

/// Sends `inner` over `tunnel` to `link` (handshaking first); returns what `link` made of it.
fn send_raw(
    tunnel: &mut Tunn,
    from: SocketAddr,
    link: &mut SecureLink,
    inner: &[u8],
) -> Result<Option<InnerPacket>, Refusal> {
    let mut buf = vec![0u8; 2048];
    let mut to_link: VecDeque<Vec<u8>> = VecDeque::new();
    if let TunnResult::WriteToNetwork(b) = tunnel.encapsulate(inner, &mut buf) {
        to_link.push_back(b.to_vec());
    }
    let mut last = Ok(None);
    for _ in 0..10 {
        let Some(d) = to_link.pop_front() else { break };
        last = link.receive(from, &d);
        while let Some(reply) = link.poll_datagram() {
            let mut out = vec![0u8; 2048];
            let mut result = tunnel.decapsulate(Some(reply.to.ip()), &reply.bytes, &mut out);
            while let TunnResult::WriteToNetwork(b) = result {
                to_link.push_back(b.to_vec());
                result = tunnel.decapsulate(None, &[], &mut out);
            }
        }
    }
    last
}

#[test]
fn an_inner_packet_from_another_source_protocol_or_ttl_is_refused() {
    let (mut net, keys) = Net::new(2);
    net.pair(0, 1);
    let from = net.nodes[0].endpoint;
    let mut tunnel = raw_tunnel_as(&keys[0], &net.nodes[1].link);
    let link = &mut net.nodes[1].link;
    let src = Ipv4Addr::new(10, 0, 0, 1);
    let dst = Ipv4Addr::new(10, 0, 0, 2);

    let good = ip4(src, dst, 255, 240);
    let got = send_raw(&mut tunnel, from, link, &good).unwrap().unwrap();
    assert_eq!(got.payload(), b"pfsync!");

    let other_source = ip4(Ipv4Addr::new(10, 0, 0, 3), dst, 255, 240);
    assert_eq!(
        send_raw(&mut tunnel, from, link, &other_source),
        Err(Refusal::InnerSource)
    );
    let tcp = ip4(src, dst, 255, 6);
    assert_eq!(
        send_raw(&mut tunnel, from, link, &tcp),
        Err(Refusal::InnerProtocol)
    );
    let routed = ip4(src, dst, 254, 240);
    assert_eq!(
        send_raw(&mut tunnel, from, link, &routed),
        Err(Refusal::InnerTtl)
    );

    let stats = net.stats(1, 0);
    assert_eq!(stats.refused[Refusal::InnerSource], 1);
    assert_eq!(stats.refused[Refusal::InnerProtocol], 1);
    assert_eq!(stats.refused[Refusal::InnerTtl], 1);
    assert_eq!(stats.packets_in, 1);
}

/// An IPv4 packet with a valid checksum carrying "pfsync!".
fn ip4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, protocol: u8) -> Vec<u8> {
    pfsyncd::capture::link::ipv4_packet(src, dst, ttl, protocol, b"pfsync!").unwrap()
}

/// A key rotation as an admin does it: node 1 takes a new private key (its SIGHUP),
/// sends on (the packets wait in the tunnel), and node 2 learns the new public key
/// later (its SIGHUP). With no packet and no timer after that, the link comes back and
/// what waited arrives, in order: the re-keyed side handshakes at once, and the side
/// that answered the handshake releases its queue on the first data of the session.
#[test]
fn a_rotated_key_brings_the_link_back_at_once_with_what_waited() {
    let (mut net, _) = Net::new(2);
    net.pair(0, 1);
    net.nodes[0].link.send(b"first").unwrap();
    net.run();
    assert_eq!(net.payloads(1), vec![b"first".to_vec()]);

    net.nodes[0]
        .link
        .set_private_key(PrivateKey::generate().unwrap());
    net.nodes[0].link.send(b"waited 1").unwrap();
    net.nodes[0].link.send(b"waited 2").unwrap();
    net.run();
    assert_eq!(net.payloads(1).len(), 1, "node 2 still knows the old key");
    assert!(net.nodes[1].refused.contains(&Refusal::UnknownPeer));

    let rotated = net.config(0);
    assert_eq!(
        net.nodes[1].link.set_peer(rotated).unwrap(),
        PeerChange::Rekeyed
    );
    net.run();
    assert_eq!(
        net.payloads(1),
        vec![
            b"first".to_vec(),
            b"waited 1".to_vec(),
            b"waited 2".to_vec()
        ]
    );
}

#[test]
fn rekeying_one_peer_leaves_the_other_working() {
    let (mut net, _) = Net::new(3);
    net.pair(0, 1);
    net.pair(0, 2);
    net.nodes[0].link.send(b"first").unwrap();
    net.run();
    assert_eq!(net.payloads(1).len(), 1);
    assert_eq!(net.payloads(2).len(), 1);
    let before = net.stats(0, 1);

    // Node 3 takes a new key; node 1 learns it (SIGHUP), node 2 is not involved.
    let new_key = PrivateKey::generate().unwrap();
    net.nodes[2].link.set_private_key(new_key);
    let rekeyed = net.config(2);
    assert_eq!(
        net.nodes[0].link.set_peer(rekeyed.clone()).unwrap(),
        PeerChange::Rekeyed
    );
    assert_eq!(
        net.nodes[0].link.set_peer(rekeyed).unwrap(),
        PeerChange::Unchanged
    );

    net.nodes[0].link.send(b"second").unwrap();
    net.run();
    assert_eq!(net.payloads(1), vec![b"first".to_vec(), b"second".to_vec()]);
    assert_eq!(net.payloads(2), vec![b"first".to_vec(), b"second".to_vec()]);
    let after = net.stats(0, 1);
    assert_eq!(
        after.handshakes_sent, before.handshakes_sent,
        "node 2's session was kept"
    );
    assert!(after.last_handshake.is_some());
    // A re-key starts a handshake at once on both sides (node 3 on its new key, node 1
    // on learning it), so two may cross; at least one more than before.
    assert!(
        net.stats(0, 2).handshakes_sent >= 2,
        "node 3 handshook again"
    );

    // Node 2 moves (new endpoint, same key): node 1 keeps its session and follows it.
    net.nodes[1].endpoint = endpoint(22);
    let moved = net.config(1);
    assert_eq!(
        net.nodes[0].link.set_peer(moved).unwrap(),
        PeerChange::Moved
    );
    net.nodes[0].link.send(b"moved").unwrap();
    net.run();
    assert_eq!(net.payloads(1).last().unwrap(), b"moved");
    assert_eq!(net.stats(0, 1).handshakes_sent, before.handshakes_sent);

    // Removing node 3 leaves node 2.
    assert!(net.nodes[0].link.remove_peer(inner_v4(3)));
    net.nodes[0].link.send(b"third").unwrap();
    net.run();
    assert_eq!(net.payloads(1).len(), 4);
    assert_eq!(net.payloads(2).len(), 3);
}

#[test]
fn a_bad_peer_configuration_is_refused() {
    let (mut net, _) = Net::new(3);
    net.pair(0, 1);
    let mut same_key = net.config(2);
    same_key.public_key = net.nodes[1].link.public_key();
    assert!(net.nodes[0].link.set_peer(same_key).is_err());
    let mut own = net.config(2);
    own.inner_addr = inner_v4(1);
    assert!(net.nodes[0].link.set_peer(own).is_err());
    let mut v6 = net.config(2);
    v6.inner_addr = IpAddr::V6(Ipv6Addr::LOCALHOST);
    assert!(net.nodes[0].link.set_peer(v6).is_err());
}

const BIN: &str = env!("CARGO_BIN_EXE_pfsyncd");

/// Runs `program args`, feeding `stdin`; returns its stdout, asserting success.
fn run_with_stdin(program: &str, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn genkey_piped_to_pubkey_gives_the_library_public_key() {
    let private = run_with_stdin(BIN, &["genkey"], "");
    assert_eq!(
        private.len(),
        45,
        "44 characters and a newline: {private:?}"
    );
    let public = run_with_stdin(BIN, &["pubkey"], &private);
    let key = PrivateKey::parse(&private).unwrap();
    assert_eq!(public.trim(), key.public_key().to_string());
    assert_ne!(run_with_stdin(BIN, &["genkey"], ""), private);

    let refused = std::process::Command::new(BIN)
        .arg("pubkey")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a private key"));
}

/// wireguard-tools' `wg` reads our keys and we read its: installed here with
/// `apt-get install wireguard-tools`; without `wg` on the PATH this comparison is skipped
/// and says so.
#[test]
fn keys_are_interchangeable_with_wireguard_tools() {
    if std::process::Command::new("wg")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: wg (wireguard-tools) is not installed");
        return;
    }
    for _ in 0..3 {
        let theirs = run_with_stdin("wg", &["genkey"], "");
        assert_eq!(
            run_with_stdin(BIN, &["pubkey"], &theirs),
            run_with_stdin("wg", &["pubkey"], &theirs)
        );
        let ours = run_with_stdin(BIN, &["genkey"], "");
        let their_public = run_with_stdin("wg", &["pubkey"], &ours);
        assert_eq!(run_with_stdin(BIN, &["pubkey"], &ours), their_public);
        assert_eq!(
            PrivateKey::parse(&ours).unwrap().public_key(),
            pfsyncd::secure::PublicKey::parse(&their_public).unwrap()
        );
        let psk = run_with_stdin("wg", &["genpsk"], "");
        assert!(PresharedKey::parse(&psk).is_ok());
    }
}

/// boringtun's timers on virtual time. boringtun reads the clock itself (no time can be
/// passed in); its `mock-instant` feature swaps that clock for mock_instant's, which is
/// per thread and moved only by the test. Run with
/// `cargo test --features secure-mock-clock --test secure`; without the feature these
/// tests are not built (120 s of real time each).
#[cfg(feature = "secure-mock-clock")]
mod virtual_time {
    use super::*;
    use mock_instant::MockClock;
    use std::time::Duration;

    /// WireGuard's Rekey-After-Time (whitepaper section 6.1; boringtun's
    /// `noise/timers.rs` REKEY_AFTER_TIME, crate-private there).
    const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
    /// Rekey-Timeout: an unanswered initiation is sent again after it.
    const REKEY_TIMEOUT: Duration = Duration::from_secs(5);

    /// Moves the clock by `by` in 250 ms steps, ticking every node's timers at each step
    /// as the daemon will (boringtun's device ticks every 250 ms): one big jump would
    /// skip the keepalive a responder sends 10 s after data, and a missing keepalive
    /// starts a handshake of its own (Keepalive-Timeout + Rekey-Timeout).
    fn tick(net: &mut Net, by: Duration) {
        let step = Duration::from_millis(250);
        let mut moved = Duration::ZERO;
        while moved < by {
            MockClock::advance(step);
            moved += step;
            for node in &mut net.nodes {
                node.link.update_timers();
            }
            net.run();
        }
    }

    #[test]
    fn the_initiator_rekeys_after_rekey_after_time_and_data_keeps_flowing() {
        let (mut net, _) = Net::new(2);
        net.pair(0, 1);
        net.nodes[0].link.send(b"t0").unwrap();
        net.run();
        assert_eq!(net.stats(0, 1).handshakes_sent, 1);

        // Data sent after the session began; the session is not yet old.
        tick(&mut net, Duration::from_secs(1));
        net.nodes[0].link.send(b"t1").unwrap();
        net.run();
        tick(&mut net, REKEY_AFTER_TIME - Duration::from_secs(2));
        assert_eq!(net.stats(0, 1).handshakes_sent, 1, "rekeyed too early");

        tick(&mut net, Duration::from_secs(2));
        assert_eq!(net.stats(0, 1).handshakes_sent, 2, "no rekey after 120 s");
        assert_eq!(net.stats(0, 1).handshake, HandshakeState::Established);
        assert_eq!(
            net.stats(1, 0).handshakes_sent,
            0,
            "the responder does not rekey"
        );

        net.nodes[0].link.send(b"after").unwrap();
        net.nodes[1].link.send(b"back").unwrap();
        net.run();
        assert_eq!(
            net.payloads(1),
            vec![b"t0".to_vec(), b"t1".to_vec(), b"after".to_vec()]
        );
        assert_eq!(net.payloads(0), vec![b"back".to_vec()]);
        assert!(net.nodes.iter().all(|n| n.refused.is_empty()));
    }

    #[test]
    fn an_unanswered_initiation_is_retried_after_rekey_timeout() {
        let (mut net, _) = Net::new(2);
        // Node 2 does not know node 1: every initiation is refused there, and counted.
        let right = net.config(1);
        net.nodes[0].link.set_peer(right).unwrap();
        net.nodes[0].link.send(b"lost").unwrap();
        net.run();
        tick(&mut net, REKEY_TIMEOUT + Duration::from_secs(1));
        assert_eq!(net.stats(0, 1).handshakes_sent, 2);
        assert_eq!(net.stats(0, 1).handshake, HandshakeState::Initiating);
        assert_eq!(
            net.nodes[1].link.unattributed_refusals()[Refusal::UnknownPeer],
            2
        );
    }
}
