//! The sync link for real: raw protocol-240 sockets sending and receiving between network
//! namespaces joined by veth pairs (and a bridge), all created here and deleted again.
//!
//! Needs root (network namespaces, raw sockets) and iproute2's `ip`. Without them every
//! test fails with the reason: CI runs as root, and a silent pass would prove nothing.
//! Traffic stays inside the namespaces these tests create (addresses from 198.18.0.0/15
//! and 2001:db8::/32, which exist nowhere else). Every receive has a timeout.

// Network namespaces and the raw-socket receiver are Linux's.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use pfsyncd::net::{
    classify, mtu, Family, Interface, Ipv4Header, NetError, RawReceiver, ReceivedPacket, Sender,
    SyncInput, SyncReceiver, Transport, Verdict, IPTOS_LOWDELAY, PFSYNC_GROUP_V4, PFSYNC_GROUP_V6,
    RECV_BUFFER_LEN,
};

/// How long a packet that must arrive may take.
const ARRIVAL: Duration = Duration::from_secs(3);

/// Prefix of every namespace these tests create.
const PREFIX: &str = "pfsyncd-test-";

// ---------------------------------------------------------------------------------------
// The lab: namespaces, links, threads inside them.

/// Fails the test unless it can do its job: root and `ip`.
fn require_root_and_ip() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .unwrap_or("?");
    assert!(
        euid == "0",
        "the net_raw tests need root (network namespaces, raw sockets): run them as root \
         (CI does); effective uid is {euid}"
    );
    let ip = Command::new("ip").arg("-V").output();
    assert!(
        ip.map(|o| o.status.success()).unwrap_or(false),
        "the net_raw tests need iproute2's `ip` (apt-get install iproute2)"
    );
    sweep_stale();
}

/// Deletes namespaces left by test processes that are gone (killed before cleaning up).
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// Runs `ip` with `args`; panics with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A network namespace, deleted (with its interfaces) when dropped, also on panic.
struct Netns {
    name: String,
}

impl Netns {
    fn new(test: &str, role: &str) -> Netns {
        let name = format!("{PREFIX}{}-{test}-{role}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread that has entered this namespace; sockets opened there stay in
    /// it wherever they are used later.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(format!("/run/netns/{}", self.name)).expect("open netns");
        std::thread::scope(|s| {
            let handle = s.spawn(move || {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            });
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Joins `a:a_if` and `b:b_if` with a veth pair; no automatic IPv6 link-local addresses
/// (they would wait for duplicate address detection), the links up.
fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    ip(&[
        "-n", &a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    for (ns, ifname) in [(a, a_if), (b, b_if)] {
        ip(&["-n", &ns.name, "link", "set", ifname, "addrgenmode", "none"]);
        ip(&["-n", &ns.name, "link", "set", ifname, "up"]);
    }
    wait_up(a, a_if);
    wait_up(b, b_if);
}

/// Waits until the kernel has the link operationally up. Until then (the link watch runs
/// asynchronously after the carrier comes on) its transmit queue drops every packet.
fn wait_up(ns: &Netns, ifname: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("ip")
            .args(["-n", &ns.name, "-o", "link", "show", "dev", ifname])
            .output()
            .expect("run ip");
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        if line.contains(" state UP ") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{ifname} in {} not up: {line}",
            ns.name
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Adds an address (IPv6 without duplicate address detection).
fn addr(ns: &Netns, ifname: &str, cidr: &str) {
    if cidr.contains(':') {
        ip(&["-n", &ns.name, "addr", "add", cidr, "dev", ifname, "nodad"]);
    } else {
        ip(&["-n", &ns.name, "addr", "add", cidr, "dev", ifname]);
    }
}

/// Two namespaces, `a` (sender) and `b` (receiver), joined by `a0`–`b0` with
/// 198.18.`net`.1 and .2, fe80::1 and ::2, 2001:db8:`net`::1 and ::2.
fn pair(test: &str, net: u8) -> (Netns, Netns) {
    let a = Netns::new(test, "a");
    let b = Netns::new(test, "b");
    veth(&a, "a0", &b, "b0");
    addr(&a, "a0", &format!("198.18.{net}.1/24"));
    addr(&b, "b0", &format!("198.18.{net}.2/24"));
    addr(&a, "a0", "fe80::1/64");
    addr(&b, "b0", "fe80::2/64");
    addr(&a, "a0", &format!("2001:db8:{net}::1/64"));
    addr(&b, "b0", &format!("2001:db8:{net}::2/64"));
    (a, b)
}

// ---------------------------------------------------------------------------------------
// Sending and receiving.

/// Opens a receiver for `transport` inside `ns`.
fn receiver(ns: &Netns, transport: &Transport) -> (RawReceiver, Interface) {
    ns.run(|| {
        let dev = Interface::lookup(&transport.syncdev).expect("syncdev");
        let rx = RawReceiver::open(transport, &dev).expect("open receiver");
        (rx, dev)
    })
}

/// Sends `payload` inside `ns` with a [`Sender`] for `transport`; every destination must
/// take it.
fn send(ns: &Netns, transport: &Transport, payload: &[u8]) {
    ns.run(|| {
        let dev = Interface::lookup(&transport.syncdev).expect("syncdev");
        let sender = Sender::open(transport, &dev).expect("open sender");
        let report = sender.send(payload);
        assert!(report.is_ok(), "send failed: {:?}", report.failed);
        assert_eq!(report.sent, transport.destinations().len());
    })
}

/// Sends `payload` inside `ns` to `dest` from a raw socket of our own with TTL/hop limit
/// `ttl`, out of `ifname`.
fn send_with_ttl(ns: &Netns, ifname: &str, dest: SocketAddr, ttl: u32, payload: &[u8]) {
    ns.run(|| {
        let proto = Some(Protocol::from(240));
        let socket = if dest.is_ipv4() {
            let s = Socket::new(Domain::IPV4, Type::RAW, proto).unwrap();
            s.set_ttl_v4(ttl).unwrap();
            s.set_multicast_ttl_v4(ttl).unwrap();
            s
        } else {
            let s = Socket::new(Domain::IPV6, Type::RAW, proto).unwrap();
            s.set_unicast_hops_v6(ttl).unwrap();
            s.set_multicast_hops_v6(ttl).unwrap();
            s
        };
        socket.bind_device(Some(ifname.as_bytes())).unwrap();
        let sent = socket.send_to(payload, &SockAddr::from(dest)).unwrap();
        assert_eq!(sent, payload.len());
    })
}

/// The next packet within [`ARRIVAL`], or `None`.
fn recv_within(rx: &mut impl SyncReceiver, buf: &mut [u8]) -> Option<ReceivedPacket> {
    let deadline = Instant::now() + ARRIVAL;
    loop {
        if let Some(packet) = rx.recv(buf).expect("recv") {
            return Some(packet);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut fds = [PollFd::new(rx.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// The next packet, which must arrive within [`ARRIVAL`].
fn expect_packet(rx: &mut impl SyncReceiver, buf: &mut [u8], what: &str) -> ReceivedPacket {
    recv_within(rx, buf).unwrap_or_else(|| panic!("{what}: nothing arrived within {ARRIVAL:?}"))
}

fn v4(s: &str) -> IpAddr {
    s.parse::<Ipv4Addr>().unwrap().into()
}

fn v6(s: &str) -> IpAddr {
    s.parse::<Ipv6Addr>().unwrap().into()
}

/// A payload that tells the packets of a test apart.
fn payload(tag: u8) -> Vec<u8> {
    let mut p = vec![6, 0, 0, 0];
    p.extend(std::iter::repeat_n(tag, 28));
    p
}

// ---------------------------------------------------------------------------------------
// The tests.

#[test]
fn multicast_v4_arrives_with_ttl_255_on_the_syncdev() {
    require_root_and_ip();
    let (a, b) = pair("mc4", 1);
    let (mut rx, b0) = receiver(&b, &Transport::multicast("b0", Family::V4));
    send(&a, &Transport::multicast("a0", Family::V4), &payload(1));

    let mut buf = vec![0u8; RECV_BUFFER_LEN];
    let got = expect_packet(&mut rx, &mut buf, "multicast to 224.0.0.240");
    assert_eq!(got.source, v4("198.18.1.1"));
    assert_eq!(got.ttl, 255);
    assert_eq!(got.ifindex, Some(b0.index));
    assert!(!got.ipv6);
    assert_eq!(got.payload(&buf), payload(1));
    assert_eq!(classify(&got, &b0), Verdict::Accept);
    assert_eq!(b.run(|| got.ifname()).as_deref(), Some("b0"));

    // The IP header the kernel built for us: as the kernels send pfsync.
    let header = Ipv4Header::parse_pfsync(&buf[..got.payload.end]).unwrap();
    assert_eq!(header.dst, PFSYNC_GROUP_V4);
    assert_eq!(header.tos, IPTOS_LOWDELAY);
    assert!(header.dont_fragment, "DF is set");
    assert_eq!(header.payload, got.payload);

    let received = got.to_engine(&buf, b0.index);
    assert!(received.on_syncdev);
    assert_eq!((received.ttl, received.ipv6), (255, false));
    assert_eq!(received.payload, payload(1));
    assert_eq!(rx.stats(), Default::default());

    // A datagram longer than the buffer is skipped and counted, not returned cut.
    send(&a, &Transport::multicast("a0", Family::V4), &payload(2));
    wait_readable(&rx);
    let mut small = [0u8; 16];
    assert_eq!(rx.recv(&mut small).unwrap(), None);
    assert_eq!(rx.stats().truncated, 1);
}

/// Waits until `fd` is readable, at most [`ARRIVAL`].
fn wait_readable(fd: &impl AsFd) {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let n = poll(&mut fds, PollTimeout::try_from(ARRIVAL).unwrap()).expect("poll");
    assert_eq!(n, 1, "nothing arrived within {ARRIVAL:?}");
}

#[test]
fn unicast_reaches_each_syncpeer() {
    require_root_and_ip();
    // a's syncdev is a bridge with b and c behind it, as two peers on one sync LAN.
    let a = Netns::new("uc", "a");
    let b = Netns::new("uc", "b");
    let c = Netns::new("uc", "c");
    ip(&["-n", &a.name, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &a.name, "link", "set", "br0", "addrgenmode", "none"]);
    veth(&a, "pb", &b, "b0");
    veth(&a, "pc", &c, "c0");
    ip(&["-n", &a.name, "link", "set", "pb", "master", "br0"]);
    ip(&["-n", &a.name, "link", "set", "pc", "master", "br0"]);
    ip(&["-n", &a.name, "link", "set", "br0", "up"]);
    wait_up(&a, "br0");
    addr(&a, "br0", "198.18.2.1/24");
    addr(&b, "b0", "198.18.2.2/24");
    addr(&c, "c0", "198.18.2.3/24");

    let back_to_a = Transport::unicast("b0", vec![v4("198.18.2.1")]).unwrap();
    let (mut rx_b, b0) = receiver(&b, &back_to_a);
    let back_to_a = Transport::unicast("c0", vec![v4("198.18.2.1")]).unwrap();
    let (mut rx_c, c0) = receiver(&c, &back_to_a);
    let peers = Transport::unicast("br0", vec![v4("198.18.2.2"), v4("198.18.2.3")]).unwrap();
    send(&a, &peers, &payload(2));

    let mut buf = vec![0u8; RECV_BUFFER_LEN];
    for (rx, dev, who) in [(&mut rx_b, &b0, "peer b"), (&mut rx_c, &c0, "peer c")] {
        let got = expect_packet(rx, &mut buf, who);
        assert_eq!(got.source, v4("198.18.2.1"), "{who}");
        assert_eq!(got.ttl, 255, "{who}");
        assert_eq!(got.ifindex, Some(dev.index), "{who}");
        assert_eq!(got.payload(&buf), payload(2), "{who}");
        assert_eq!(classify(&got, dev), Verdict::Accept, "{who}");
        let header = Ipv4Header::parse_pfsync(&buf[..got.payload.end]).unwrap();
        assert_eq!(IpAddr::from(header.dst), dev.addrs[0], "{who}");
    }
}

#[test]
fn ttl_254_is_bad_ttl() {
    require_root_and_ip();
    let (a, b) = pair("ttl", 3);
    let (mut rx, b0) = receiver(&b, &Transport::multicast("b0", Family::V4));
    let group = SocketAddr::from((PFSYNC_GROUP_V4, 0));
    send_with_ttl(&a, "a0", group, 254, &payload(3));
    send(&a, &Transport::multicast("a0", Family::V4), &payload(4));

    let mut buf = vec![0u8; RECV_BUFFER_LEN];
    let mut seen = Vec::new();
    for _ in 0..2 {
        let got = expect_packet(&mut rx, &mut buf, "TTL 254, then 255");
        seen.push((got.ttl, classify(&got, &b0), got.payload(&buf).to_vec()));
    }
    assert_eq!(
        seen,
        vec![
            (254, Verdict::BadTtl, payload(3)),
            (255, Verdict::Accept, payload(4)),
        ]
    );

    // The engine is handed the TTL as it came, to count badttl itself.
    let mut input = SyncInput::new(rx, b0);
    send_with_ttl(&a, "a0", group, 254, &payload(5));
    assert_eq!(wait_input(&mut input, &mut buf), (254, true, payload(5)));
}

#[test]
fn another_interface_is_bad_if() {
    require_root_and_ip();
    // b's syncdev b0 faces a; c reaches b over a second link, b1.
    let (a, b) = pair("badif", 4);
    let c = Netns::new("badif", "c");
    veth(&b, "b1", &c, "c0");
    addr(&b, "b1", "198.18.5.2/24");
    addr(&c, "c0", "198.18.5.3/24");
    let (mut rx, b0) = receiver(&b, &Transport::multicast("b0", Family::V4));
    let b1_index = b.run(|| Interface::lookup("b1").unwrap().index);

    let to_b = Transport::unicast("c0", vec![v4("198.18.5.2")]).unwrap();
    send(&c, &to_b, &payload(6));
    send(&a, &Transport::multicast("a0", Family::V4), &payload(7));

    let mut buf = vec![0u8; RECV_BUFFER_LEN];
    let got = expect_packet(&mut rx, &mut buf, "unicast from c on b1");
    assert_eq!(got.source, v4("198.18.5.3"));
    assert_eq!(got.ttl, 255);
    assert_eq!(got.ifindex, Some(b1_index));
    assert_eq!(classify(&got, &b0), Verdict::BadIf);
    let received = got.to_engine(&buf, b0.index);
    assert!(!received.on_syncdev);
    assert_eq!(received.payload, payload(6));

    // The same receiver still takes what comes on the syncdev.
    let got = expect_packet(&mut rx, &mut buf, "multicast from a on b0");
    assert_eq!(classify(&got, &b0), Verdict::Accept);
    assert_eq!(got.payload(&buf), payload(7));
}

#[test]
fn our_own_packets_are_not_delivered_to_us() {
    require_root_and_ip();
    let (a, b) = pair("own", 6);
    // a listens on the group too, and sends to it: multicast loop is off.
    let (rx_a, a0) = receiver(&a, &Transport::multicast("a0", Family::V4));
    let (mut rx_b, _) = receiver(&b, &Transport::multicast("b0", Family::V4));
    send(&a, &Transport::multicast("a0", Family::V4), &payload(8));
    // A unicast syncpeer that is our own address does come back (through lo): dropped as own.
    let to_self_and_b = Transport::unicast("a0", vec![v4("198.18.6.1"), v4("198.18.6.2")]).unwrap();
    send(&a, &to_self_and_b, &payload(9));
    // Then b speaks; everything of a's own would be queued at a before this.
    send(&b, &Transport::multicast("b0", Family::V4), &payload(10));

    let mut buf = vec![0u8; RECV_BUFFER_LEN];
    let mut input = SyncInput::new(rx_a, a0);
    let (ttl, on_syncdev, bytes) = wait_input(&mut input, &mut buf);
    assert_eq!((ttl, on_syncdev, bytes), (255, true, payload(10)));
    assert_eq!(
        input.own_dropped(),
        1,
        "only the unicast to ourselves came back, and was dropped"
    );
    let mut raw = input.into_receiver();
    assert!(raw.recv(&mut buf).unwrap().is_none(), "nothing else queued");

    // b got both of a's packets.
    for tag in [8, 9] {
        let got = expect_packet(&mut rx_b, &mut buf, "a's packets at b");
        assert_eq!(got.payload(&buf), payload(tag));
        assert_eq!(got.source, v4("198.18.6.1"));
    }
}

#[test]
fn own_packet_is_classified_own() {
    require_root_and_ip();
    let (a, _b) = pair("ownraw", 7);
    let (mut rx, a0) = receiver(&a, &Transport::multicast("a0", Family::V4));
    send(
        &a,
        &Transport::unicast("a0", vec![v4("198.18.7.1")]).unwrap(),
        &payload(11),
    );
    let mut buf = vec![0u8; RECV_BUFFER_LEN];
    let got = expect_packet(&mut rx, &mut buf, "unicast to ourselves");
    assert_eq!(got.source, v4("198.18.7.1"));
    assert_eq!(classify(&got, &a0), Verdict::Own);
}

#[test]
fn ipv6_multicast_ff12_f0_and_unicast_with_hop_limit_255() {
    require_root_and_ip();
    let (a, b) = pair("v6", 8);
    let (mut rx, b0) = receiver(&b, &Transport::multicast("b0", Family::V6));
    let a_addrs = [v6("fe80::1"), v6("2001:db8:8::1")];

    send(&a, &Transport::multicast("a0", Family::V6), &payload(12));
    let mut buf = vec![0u8; RECV_BUFFER_LEN];
    let got = expect_packet(&mut rx, &mut buf, "multicast to ff12::f0");
    assert!(got.ipv6);
    assert_eq!(got.ttl, 255);
    assert_eq!(got.ifindex, Some(b0.index));
    assert!(a_addrs.contains(&got.source), "source {}", got.source);
    assert_eq!(got.payload(&buf), payload(12));
    assert_eq!(classify(&got, &b0), Verdict::Accept);
    let received = got.to_engine(&buf, b0.index);
    assert!(received.ipv6 && received.on_syncdev && received.ttl == 255);

    let to_b = Transport::unicast("a0", vec![v6("2001:db8:8::2")]).unwrap();
    send(&a, &to_b, &payload(13));
    let got = expect_packet(&mut rx, &mut buf, "unicast to 2001:db8:8::2");
    assert_eq!(
        (got.source, got.ttl, got.ifindex),
        (v6("2001:db8:8::1"), 255, Some(b0.index))
    );
    assert_eq!(got.payload(&buf), payload(13));
    assert_eq!(classify(&got, &b0), Verdict::Accept);

    let link_local = Transport::unicast("a0", vec![v6("fe80::2")]).unwrap();
    send(&a, &link_local, &payload(14));
    let got = expect_packet(&mut rx, &mut buf, "unicast to fe80::2%a0");
    assert_eq!((got.source, got.ttl), (v6("fe80::1"), 255));
    assert_eq!(got.payload(&buf), payload(14));

    // ff12::f0 is link-local scope: the destination names the interface.
    let a0_index = a.run(|| Interface::lookup("a0").unwrap().index);
    let scoped = SocketAddr::V6(SocketAddrV6::new(PFSYNC_GROUP_V6, 0, 0, a0_index));
    send_with_ttl(&a, "a0", scoped, 254, &payload(15));
    let got = expect_packet(&mut rx, &mut buf, "hop limit 254");
    assert_eq!(got.ttl, 254);
    assert_eq!(classify(&got, &b0), Verdict::BadTtl);
}

#[test]
fn the_syncdev_must_exist_and_be_up() {
    require_root_and_ip();
    let (a, _b) = pair("dev", 9);
    ip(&["-n", &a.name, "link", "set", "a0", "mtu", "1400"]);
    // A link left down (veth: the dummy driver may not be there).
    ip(&[
        "-n", &a.name, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ]);
    a.run(|| {
        let a0 = Interface::lookup("a0").unwrap();
        assert_eq!(a0.mtu().unwrap(), 1400);
        assert!(a0.owns(v4("198.18.9.1")) && a0.owns(v6("fe80::1")));
        assert_eq!(
            Interface::lookup("em9").unwrap_err().to_string(),
            "syncdev em9: no such interface"
        );
        assert!(matches!(mtu("em9"), Err(NetError::NoSuchInterface { .. })));
        let down = Interface::lookup("d0").unwrap_err();
        assert_eq!(down.to_string(), "syncdev d0: interface is down");
    });
}

/// Receives through a [`SyncInput`] (own packets dropped) until a packet arrives within
/// [`ARRIVAL`]: (ttl, on_syncdev, payload).
fn wait_input(input: &mut SyncInput<RawReceiver>, buf: &mut [u8]) -> (u8, bool, Vec<u8>) {
    let deadline = Instant::now() + ARRIVAL;
    loop {
        if let Some(r) = input.recv(buf).expect("recv") {
            return (r.ttl, r.on_syncdev, r.payload.to_vec());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "nothing arrived within {ARRIVAL:?}");
        let mut fds = [PollFd::new(input.as_fd(), PollFlags::POLLIN)];
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        );
    }
}
