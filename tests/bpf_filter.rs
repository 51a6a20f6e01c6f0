//! The bpf filter program the BSD receive path installs, run by a real kernel: attached
//! with SO_ATTACH_FILTER to a Linux packet socket (Ethernet frames, as bpf gives them on
//! an Ethernet syncdev) in a network namespace, while another namespace sends pfsync
//! and other packets over a veth. Only pfsync with TTL / hop limit 255 may arrive.
//!
//! Also the BSD receiver's multicast membership (`GroupMembership`), joined on a veth
//! of a namespace and read back from the kernel's own tables (/proc/net/igmp, igmp6).
//!
//! Needs root (namespaces, packet sockets): without it the tests fail with the reason.

// Network namespaces and packet sockets are Linux's.
#![cfg(target_os = "linux")]

use std::collections::HashSet;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use pfsyncd::lab::{check_root_and_ip, ip, Netns};
use pfsyncd::net::bpf::{pfsync_filter, LinkType, Os};
use pfsyncd::net::{GroupMembership, Interface, PFSYNC_GROUP_V4, PFSYNC_GROUP_V6};
use pfsyncd::sys::attach_filter;

const PREFIX: &str = "pfsd-bpft-";

/// Sends `marker` as the payload of an IP datagram of `proto` with `ttl`, from inside
/// `ns` to `to`.
fn send(ns: &Netns, to: IpAddr, proto: i32, ttl: u32, marker: &[u8]) {
    let marker = marker.to_vec();
    ns.run(move || {
        let domain = if to.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let s = Socket::new(domain, Type::RAW, Some(Protocol::from(proto))).unwrap();
        if to.is_ipv6() {
            s.set_unicast_hops_v6(ttl).unwrap();
        } else {
            s.set_ttl_v4(ttl).unwrap();
        }
        s.send_to(&marker, &SockAddr::from(SocketAddr::new(to, 0)))
            .unwrap();
    })
    .unwrap();
}

#[test]
fn the_filter_passes_only_pfsync_with_ttl_255() {
    check_root_and_ip().unwrap_or_else(|e| panic!("{e}"));
    pfsyncd::lab::sweep_stale(PREFIX);
    let a = Netns::new(PREFIX, "a").unwrap();
    let b = Netns::new(PREFIX, "b").unwrap();
    ip(&[
        "-n",
        a.name(),
        "link",
        "add",
        "a0",
        "address",
        "02:00:00:00:0a:01",
        "type",
        "veth",
        "peer",
        "name",
        "b0",
        "address",
        "02:00:00:00:0a:02",
        "netns",
        b.name(),
    ])
    .unwrap();
    for (ns, dev, v4, v6) in [
        (&a, "a0", "198.18.9.1/24", "2001:db8:9::1/64"),
        (&b, "b0", "198.18.9.2/24", "2001:db8:9::2/64"),
    ] {
        ns.ip(&["addr", "add", v4, "dev", dev]).unwrap();
        ns.ip(&["addr", "add", v6, "dev", dev, "nodad"]).unwrap();
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    // Neighbours known up front: no packet waits for ARP or neighbour discovery.
    a.ip(&[
        "neigh",
        "replace",
        "198.18.9.2",
        "lladdr",
        "02:00:00:00:0a:02",
        "dev",
        "a0",
        "nud",
        "permanent",
    ])
    .unwrap();
    a.ip(&[
        "neigh",
        "replace",
        "2001:db8:9::2",
        "lladdr",
        "02:00:00:00:0a:02",
        "dev",
        "a0",
        "nud",
        "permanent",
    ])
    .unwrap();

    // The receiving packet socket, filter attached, then drained of what came before.
    let rx = b
        .run(|| {
            let all = i32::from(0x0003u16.to_be()); // ETH_P_ALL
            let s = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(all))).unwrap();
            attach_filter(s.as_fd(), &pfsync_filter(LinkType::Ethernet, Os::FreeBsd)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            s
        })
        .unwrap();
    let mut buf = [0u8; 2048];
    while (&rx).read(&mut buf).is_ok() {}

    let v4: IpAddr = "198.18.9.2".parse().unwrap();
    let v6: IpAddr = "2001:db8:9::2".parse().unwrap();
    let cases: [(&[u8], IpAddr, i32, u32, bool); 6] = [
        (b"MARK-v4-pfsync-255", v4, 240, 255, true),
        (b"MARK-v4-pfsync-254", v4, 240, 254, false),
        (b"MARK-v4-pfsync-1", v4, 240, 1, false),
        (b"MARK-v4-udp-255", v4, 17, 255, false),
        (b"MARK-v6-pfsync-255", v6, 240, 255, true),
        (b"MARK-v6-pfsync-254", v6, 240, 254, false),
    ];
    for (marker, to, proto, ttl, _) in cases {
        send(&a, to, proto, ttl, marker);
    }
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(n) = (&rx).read(&mut buf) {
            let frame = &buf[..n];
            for (marker, ..) in cases {
                if frame.windows(marker.len()).any(|w| w == marker) {
                    seen.insert(marker.to_vec());
                }
            }
        }
    }
    for (marker, _, _, _, pass) in cases {
        let name = String::from_utf8_lossy(marker);
        assert_eq!(
            seen.contains(marker),
            pass,
            "{name}: {}",
            if pass { "filtered out" } else { "let through" }
        );
    }
}

/// The IPv4 groups the kernel has joined on `dev`, from the calling thread's namespace
/// (`/proc/net` is the process's, `/proc/thread-self/net` the thread's).
fn igmp_groups(dev: &str) -> Vec<Ipv4Addr> {
    let text = std::fs::read_to_string("/proc/thread-self/net/igmp").unwrap();
    let mut groups = Vec::new();
    let mut in_dev = false;
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if !line.starts_with(char::is_whitespace) {
            // "Idx Device : Count Querier": a device's section begins.
            in_dev = fields.get(1) == Some(&dev);
        } else if in_dev {
            // The group as the kernel prints its network-order word: "%08X".
            let word = u32::from_str_radix(fields[0], 16).unwrap();
            groups.push(Ipv4Addr::from(word.to_ne_bytes()));
        }
    }
    groups
}

/// The IPv6 groups the kernel has joined on `dev` (`/proc/net/igmp6`: index, device,
/// address in hex, users, flags, timer).
fn igmp6_groups(dev: &str) -> Vec<Ipv6Addr> {
    let text = std::fs::read_to_string("/proc/thread-self/net/igmp6").unwrap();
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.get(1) == Some(&dev))
        .map(|f| Ipv6Addr::from(u128::from_str_radix(f[2], 16).unwrap()))
        .collect()
}

#[test]
fn the_bpf_receivers_groups_are_joined_on_the_syncdev_while_it_lives() {
    check_root_and_ip().unwrap_or_else(|e| panic!("{e}"));
    pfsyncd::lab::sweep_stale(PREFIX);
    let ns = Netns::new(PREFIX, "m").unwrap();
    ns.ip(&["link", "add", "m0", "type", "veth", "peer", "name", "m1"])
        .unwrap();
    ns.ip(&["addr", "add", "198.18.10.1/24", "dev", "m0"])
        .unwrap();
    for dev in ["m0", "m1"] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    let other_group: IpAddr = "239.1.2.3".parse().unwrap();
    let unicast: IpAddr = "198.18.10.2".parse().unwrap();
    let configured = [
        IpAddr::V4(PFSYNC_GROUP_V4),
        IpAddr::V6(PFSYNC_GROUP_V6),
        other_group,
        unicast,
    ];
    ns.run(|| {
        let ours_v4 = [PFSYNC_GROUP_V4, "239.1.2.3".parse().unwrap()];
        for g in ours_v4 {
            assert!(!igmp_groups("m0").contains(&g), "{g} joined before");
        }
        assert!(!igmp6_groups("m0").contains(&PFSYNC_GROUP_V6));

        let syncdev = Interface::lookup("m0").unwrap();
        let membership = GroupMembership::join(&configured, &syncdev).unwrap();
        assert_eq!(
            membership.groups(),
            &configured[..3],
            "the unicast peer is skipped"
        );
        for g in ours_v4 {
            assert!(igmp_groups("m0").contains(&g), "{g} not joined on m0");
            assert!(
                !igmp_groups("m1").contains(&g),
                "{g} joined off the syncdev"
            );
        }
        assert!(
            igmp6_groups("m0").contains(&PFSYNC_GROUP_V6),
            "ff12::f0 not joined on m0: {:?}",
            igmp6_groups("m0")
        );
        assert!(!igmp6_groups("m1").contains(&PFSYNC_GROUP_V6));

        drop(membership);
        for g in ours_v4 {
            assert!(!igmp_groups("m0").contains(&g), "{g} still joined");
        }
        assert!(!igmp6_groups("m0").contains(&PFSYNC_GROUP_V6));
    })
    .unwrap();
}
