//! Random datagrams fed to a `SecureLink` whose peer has an established session, as
//! anyone on the routed path could send them: nothing may panic, nothing forged may
//! reach the engine, and every refusal is counted once. Part of the input is laid over
//! the header of a real data message (its type and receiver index), so the fuzzer gets
//! past the routing to the authentication of the session.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use pfsyncd::secure::{PeerConfig, PrivateKey, SecureLink};

const HEADER: usize = 16;

fn node(n: u8) -> (PrivateKey, IpAddr, SocketAddr) {
    (
        PrivateKey::from_bytes([n; 32]),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, n)), 8240),
    )
}

/// Two links with a session: (the target, a real data message to it, its sender).
fn established() -> (SecureLink, Vec<u8>, SocketAddr) {
    let (key_a, inner_a, end_a) = node(1);
    let (key_b, inner_b, end_b) = node(2);
    let mut a = SecureLink::new(key_a.clone(), inner_a);
    let mut b = SecureLink::new(key_b.clone(), inner_b);
    a.set_peer(PeerConfig {
        public_key: key_b.public_key(),
        preshared_key: None,
        endpoint: end_b,
        inner_addr: inner_b,
    })
    .unwrap();
    b.set_peer(PeerConfig {
        public_key: key_a.public_key(),
        preshared_key: None,
        endpoint: end_a,
        inner_addr: inner_a,
    })
    .unwrap();
    a.send(b"pfsync").unwrap();
    let mut data = Vec::new();
    for _ in 0..4 {
        while let Some(d) = a.poll_datagram() {
            if d.bytes[0] == 4 {
                data = d.bytes.clone();
            }
            b.receive(end_a, &d.bytes).unwrap();
        }
        while let Some(d) = b.poll_datagram() {
            a.receive(end_b, &d.bytes).unwrap();
        }
    }
    assert!(!data.is_empty(), "the handshake completed and data flowed");
    (b, data, end_a)
}

fuzz_target!(|input: &[u8]| {
    let (mut link, data, sender) = established();
    let before = link.unattributed_refusals().total()
        + link
            .peer_stats(Instant::now())
            .iter()
            .map(|s| s.refused.total())
            .sum::<u64>();
    let mut refused = 0u64;
    // Datagrams separated by 0xff; a leading 0 byte borrows the real header.
    for chunk in input.split(|&b| b == 0xff) {
        let datagram = match chunk.split_first() {
            Some((0, rest)) => [&data[..HEADER], rest].concat(),
            _ => chunk.to_vec(),
        };
        match link.receive(sender, &datagram) {
            Ok(None) => {}
            Ok(Some(p)) => panic!("a forged datagram delivered {:?}", p.payload()),
            Err(_) => refused += 1,
        }
    }
    let after = link.unattributed_refusals().total()
        + link
            .peer_stats(Instant::now())
            .iter()
            .map(|s| s.refused.total())
            .sum::<u64>();
    assert_eq!(after - before, refused, "every refusal counted once");
    while link.poll_datagram().is_some() {}
});
