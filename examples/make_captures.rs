//! Writes the test captures of `tests/captures/` with pfsyncd's own encoder.
//!
//! ```text
//! cargo run --example make_captures            # into tests/captures/
//! cargo run --example make_captures -- DIR     # somewhere else
//! ```
//!
//! The pfsync payloads come from `PacketBuilder`; IP, Ethernet and loopback headers are
//! built by hand as the kernels send them (TTL 255, protocol 240, 224.0.0.240 or
//! ff12::f0). Everything is a constant, so the files are the same on every run, and
//! `tests/decode.rs` checks that the committed ones still are what this writes.
//! `hostile.pcap` holds packets a kernel refuses, made by patching good ones.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use pfsyncd::capture::link::{
    self, ethernet_frame, ipv4_multicast_mac, ipv4_packet, ipv6_multicast_mac, ipv6_packet,
    loopback_frame, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, IPPROTO_PFSYNC,
};
use pfsyncd::capture::pcap::Precision;
use pfsyncd::capture::write::{PcapNgWriter, PcapOptions, PcapWriter};
use pfsyncd::capture::{linktype, Endian};
use pfsyncd::wire::msg::bus::{STATUS_END, STATUS_START};
use pfsyncd::wire::msg::peer::SCRUB_FLAG_VALID;
use pfsyncd::wire::msg::{
    BusRepr, ClrRepr, KeyFreeBsdRepr, KeyOpenBsdRepr, PeerRepr, State1301Repr, State1400Repr,
    State1500Repr, StateOpenBsdRepr, StateRecord, StateRefRepr, TdbOpenBsdRepr, UpdCRepr,
};
use pfsyncd::wire::{Dialect, IfName, Message, Name, PacketBuilder, PfAddr, Pushed};

/// 2024-01-01T12:00:00Z.
const T0: u64 = 1_704_110_400;

/// Host ids of the firewalls in the captures.
const OPENBSD_A: u32 = 0x0a0b_0c0d;
const OPENBSD_B: u32 = 0x1a2b_3c4d;
const FREEBSD_A: u32 = 0xfb5d_0001;
const FREEBSD_B: u32 = 0xfb5d_0002;

const GROUP4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 240);
const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
const PROTO_SCTP: u8 = 132;

/// Writes every capture into the directory given, or `tests/captures/`.
#[allow(dead_code)] // `tests/decode.rs` includes this file for `captures` only.
fn main() -> Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/captures")));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, bytes) in captures()? {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
    Ok(())
}

/// Every capture, by file name.
pub fn captures() -> Result<Vec<(&'static str, Vec<u8>)>> {
    Ok(vec![
        ("openbsd-v6.pcap", openbsd_v6()?),
        ("freebsd-1301.pcap", freebsd_1301()?),
        ("freebsd-1400.pcapng", freebsd_1400()?),
        ("freebsd-1500-pfsync0.pcap", freebsd_1500_pfsync0()?),
        ("raw-ip.pcap", raw_ip()?),
        ("loopback.pcap", loopback()?),
        ("hostile.pcap", hostile()?),
    ])
}

// ---------------------------------------------------------------------------------------
// Helpers

fn at(secs: u64, micros: u64) -> Duration {
    Duration::from_secs(T0 + secs) + Duration::from_micros(micros)
}

/// One pfsync payload holding `messages`, all of which must fit.
fn payload(dialect: Dialect, messages: &[Message]) -> Result<Vec<u8>> {
    let mut builder = PacketBuilder::new(dialect, 1500);
    for m in messages {
        let pushed = builder
            .push(m)
            .with_context(|| format!("{dialect}: {}", m.action().name()))?;
        ensure!(pushed == Pushed::Added, "{dialect}: packet full");
    }
    builder.finish().context("empty packet")
}

fn pfsync_v4(src: Ipv4Addr, payload: &[u8]) -> Result<Vec<u8>> {
    Ok(ipv4_packet(src, GROUP4, 255, IPPROTO_PFSYNC, payload)?)
}

fn pfsync_v6(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Result<Vec<u8>> {
    Ok(ipv6_packet(src, dst, 255, IPPROTO_PFSYNC, payload)?)
}

/// An Ethernet frame to the pfsync group, from `mac`.
fn ether_v4(mac: [u8; 6], vlan: Option<u16>, packet: &[u8]) -> Vec<u8> {
    ethernet_frame(
        ipv4_multicast_mac(GROUP4),
        mac,
        vlan,
        ETHERTYPE_IPV4,
        packet,
    )
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn v6(text: &str) -> Result<Ipv6Addr> {
    text.parse().with_context(|| format!("address {text}"))
}

fn addr4(a: u8, b: u8, c: u8, d: u8) -> PfAddr {
    PfAddr::from_v4(v4(a, b, c, d))
}

fn addr6(text: &str) -> Result<PfAddr> {
    Ok(PfAddr::from_v6(v6(text)?))
}

fn ifname(name: &str) -> Result<IfName> {
    IfName::new(name).with_context(|| format!("interface name {name}"))
}

fn tcp_peer(state: u8, seqlo: u32, window: u16) -> PeerRepr {
    PeerRepr {
        seqlo,
        seqhi: seqlo.wrapping_add(u32::from(window)),
        max_win: window,
        mss: 1460,
        state,
        wscale: 0x87,
        ..PeerRepr::default()
    }
}

fn level_peer(state: u8) -> PeerRepr {
    PeerRepr {
        state,
        ..PeerRepr::default()
    }
}

const ESTABLISHED: u8 = 4;
const FIN_WAIT_2: u8 = 9;
const SINGLE: u8 = 1;
const MULTIPLE: u8 = 2;
const IN: u8 = 1;
const OUT: u8 = 2;
/// `PFTM_*` indices used below.
const TCP_ESTABLISHED: u8 = 2;
const TCP_FIN_WAIT: u8 = 4;
const UDP_MULTIPLE: u8 = 8;
const ICMP_FIRST: u8 = 9;
const SCTP_ESTABLISHED: u8 = 22;

fn openbsd_key(addr: [PfAddr; 2], port: [u16; 2], af: u8) -> KeyOpenBsdRepr {
    KeyOpenBsdRepr {
        addr,
        port,
        rdomain: 0,
        af,
    }
}

/// A TCP state on OpenBSD; `stack` differs from the wire key under NAT.
fn openbsd_tcp(
    id: u64,
    wire: KeyOpenBsdRepr,
    stack: KeyOpenBsdRepr,
    direction: u8,
) -> Result<StateOpenBsdRepr> {
    Ok(StateOpenBsdRepr {
        id,
        ifname: ifname("em0")?,
        key: [wire, stack],
        src: tcp_peer(ESTABLISHED, 0x1000_0000, 64_240),
        dst: tcp_peer(ESTABLISHED, 0x2000_0000, 65_160),
        rule: 3,
        anchor: u32::MAX,
        nat_rule: u32::MAX,
        creation: 300,
        expire: 86_100,
        packets: [42, 40],
        bytes: [5_120, 81_920],
        creatorid: OPENBSD_A,
        rtableid: [0, 0],
        af: wire.af,
        proto: PROTO_TCP,
        direction,
        timeout: TCP_ESTABLISHED,
        ..StateOpenBsdRepr::default()
    })
}

// ---------------------------------------------------------------------------------------
// OpenBSD over Ethernet

/// The OpenBSD states of `openbsd-v6.pcap`.
struct OpenBsdStates {
    web: StateOpenBsdRepr,
    dns6: StateOpenBsdRepr,
    nat: StateOpenBsdRepr,
    ssh6: StateOpenBsdRepr,
}

fn openbsd_states() -> Result<OpenBsdStates> {
    let web_key = openbsd_key(
        [addr4(192, 168, 1, 10), addr4(10, 1, 1, 1)],
        [51_234, 443],
        2,
    );
    let web = openbsd_tcp(0x0000_0000_0000_1001, web_key, web_key, IN)?;
    let dns_key = openbsd_key(
        [addr6("2001:db8:1::53")?, addr6("2001:db8:2::10")?],
        [53, 40_000],
        24,
    );
    let dns6 = StateOpenBsdRepr {
        id: 0x0000_0000_0000_1002,
        ifname: ifname("em1")?,
        key: [dns_key, dns_key],
        src: level_peer(MULTIPLE),
        dst: level_peer(SINGLE),
        rule: 7,
        anchor: u32::MAX,
        nat_rule: u32::MAX,
        creation: 12,
        expire: 48,
        packets: [3, 2],
        bytes: [300, 420],
        creatorid: OPENBSD_A,
        af: 24,
        proto: PROTO_UDP,
        direction: OUT,
        timeout: UDP_MULTIPLE,
        ..StateOpenBsdRepr::default()
    };
    // Outbound NAT: the stack sees the inside host, the wire the firewall's address.
    let nat_wire = openbsd_key(
        [addr4(203, 0, 113, 80), addr4(198, 51, 100, 7)],
        [80, 61_001],
        2,
    );
    let nat_stack = openbsd_key(
        [addr4(203, 0, 113, 80), addr4(192, 168, 1, 20)],
        [80, 50_505],
        2,
    );
    let nat = StateOpenBsdRepr {
        id: 0x0000_0000_0000_1003,
        ..openbsd_tcp(0x1003, nat_wire, nat_stack, OUT)?
    };
    let ssh_key = openbsd_key(
        [addr6("2001:db8:1::22")?, addr6("2001:db8:ffff::1")?],
        [60_022, 22],
        24,
    );
    let ssh6 = StateOpenBsdRepr {
        src: tcp_peer(FIN_WAIT_2, 0x3000_0000, 1_024),
        dst: tcp_peer(FIN_WAIT_2, 0x4000_0000, 1_024),
        timeout: TCP_FIN_WAIT,
        expire: 40,
        ..openbsd_tcp(0x0000_0000_0000_1004, ssh_key, ssh_key, IN)?
    };
    Ok(OpenBsdStates {
        web,
        dns6,
        nat,
        ssh6,
    })
}

fn openbsd_v6() -> Result<Vec<u8>> {
    let s = openbsd_states()?;
    let d = Dialect::OpenBsd;
    let a = v4(10, 0, 0, 1);
    let b = v4(10, 0, 0, 2);
    let st = |r: StateOpenBsdRepr| StateRecord::OpenBsd(r);
    let refs = |r: &StateOpenBsdRepr| StateRefRepr {
        id: r.id,
        creatorid: r.creatorid,
    };
    let upd_c = |r: &StateOpenBsdRepr| UpdCRepr {
        id: r.id,
        src: r.src,
        dst: r.dst,
        creatorid: r.creatorid,
        expire: 0,
        timeout: r.timeout,
        state_flags: 0,
    };
    let bus = |status, creatorid| BusRepr {
        creatorid,
        endtime: 0,
        status,
    };
    let mut tdb_dst = [0u8; 28];
    tdb_dst[0] = 16; // sa_len of a sockaddr_in
    tdb_dst[1] = 2;
    tdb_dst[4..8].copy_from_slice(&[10, 0, 0, 9]);
    let tdb = TdbOpenBsdRepr {
        spi: 0x1234_5678,
        dst: tdb_dst,
        rpl: 16_384,
        cur_bytes: 1_048_576,
        sproto: 50,
        updates: 1,
        rdomain: 0,
    };

    let mut w = PcapWriter::new(Vec::new(), linktype::ETHERNET, PcapOptions::default())?;
    // fw-b comes up and asks for everything; fw-a answers with a bulk update.
    let bulk_request = payload(d, &[Message::UpdReq(StateRefRepr::BULK_REQUEST)])?;
    w.write_frame(
        at(0, 0),
        &ether_v4(MAC_B, None, &pfsync_v4(b, &bulk_request)?),
    )?;
    let bulk = payload(
        d,
        &[
            Message::Bus(bus(STATUS_START, OPENBSD_A)),
            Message::Upd(st(s.web)),
            Message::Upd(st(s.dns6)),
        ],
    )?;
    w.write_frame(at(0, 10_000), &ether_v4(MAC_A, None, &pfsync_v4(a, &bulk)?))?;
    let end = payload(d, &[Message::Bus(bus(STATUS_END, OPENBSD_A))])?;
    w.write_frame(at(0, 30_000), &ether_v4(MAC_A, None, &pfsync_v4(a, &end)?))?;
    // New states, on a tagged sync VLAN.
    let inserts = payload(d, &[Message::Ins(st(s.nat)), Message::Ins(st(s.ssh6))])?;
    w.write_frame(
        at(1, 0),
        &ether_v4(MAC_A, Some(100), &pfsync_v4(a, &inserts)?),
    )?;
    // Updates, a delete, and fw-b acknowledging an insert.
    let updates = payload(
        d,
        &[
            Message::UpdC(upd_c(&s.web)),
            Message::UpdC(upd_c(&s.ssh6)),
            Message::DelC(refs(&s.dns6)),
        ],
    )?;
    w.write_frame(at(2, 0), &ether_v4(MAC_A, None, &pfsync_v4(a, &updates)?))?;
    let ack = payload(d, &[Message::InsAck(refs(&s.nat))])?;
    w.write_frame(at(2, 500), &ether_v4(MAC_B, None, &pfsync_v4(b, &ack)?))?;
    let clr = ClrRepr {
        ifname: ifname("em0")?,
        creatorid: OPENBSD_A,
    };
    let clear = payload(d, &[Message::Clr(clr)])?;
    w.write_frame(at(3, 0), &ether_v4(MAC_A, None, &pfsync_v4(a, &clear)?))?;
    // Not pfsync: skipped and counted by the decoder.
    let arp = ethernet_frame([0xff; 6], MAC_B, None, ETHERTYPE_ARP, &[0; 28]);
    w.write_frame(at(3, 500_000), &arp)?;
    let ipsec = payload(d, &[Message::TdbOpenBsd(tdb)])?;
    w.write_frame(at(4, 0), &ether_v4(MAC_A, None, &pfsync_v4(a, &ipsec)?))?;
    Ok(w.into_inner())
}

// ---------------------------------------------------------------------------------------
// FreeBSD

fn freebsd_key(addr: [PfAddr; 2], port: [u16; 2]) -> KeyFreeBsdRepr {
    KeyFreeBsdRepr { addr, port }
}

fn freebsd_1301() -> Result<Vec<u8>> {
    let d = Dialect::FreeBsd1301;
    let a = v4(192, 168, 100, 1);
    let b = v4(192, 168, 100, 2);
    let ntp = freebsd_key([addr4(192, 168, 10, 5), addr4(192, 0, 2, 123)], [123, 123]);
    let ntp_state = State1301Repr {
        id: 0x65a1_0000_0000_0001,
        ifname: ifname("igb0")?,
        key: [ntp, ntp],
        src: level_peer(MULTIPLE),
        dst: level_peer(MULTIPLE),
        rule: 2,
        anchor: u32::MAX,
        nat_rule: u32::MAX,
        creation: 3_600,
        expire: 55,
        packets: [60, 60],
        bytes: [4_560, 4_560],
        creatorid: FREEBSD_A,
        af: 2,
        proto: PROTO_UDP,
        direction: OUT,
        timeout: UDP_MULTIPLE,
        ..State1301Repr::default()
    };
    let https6 = freebsd_key(
        [addr6("2001:db8:100::10")?, addr6("2001:db8:200::20")?],
        [49_152, 443],
    );
    let https6_state = State1301Repr {
        id: 0x65a1_0000_0000_0002,
        ifname: ifname("igb1")?,
        key: [https6, https6],
        src: tcp_peer(ESTABLISHED, 0x0a00_0000, 65_535),
        dst: tcp_peer(ESTABLISHED, 0x0b00_0000, 65_535),
        rule: 5,
        anchor: u32::MAX,
        nat_rule: u32::MAX,
        creation: 125,
        expire: 86_275,
        packets: [1_000, 2_000],
        bytes: [64_000, 2_048_000],
        creatorid: FREEBSD_A,
        af: 28,
        proto: PROTO_TCP,
        direction: IN,
        timeout: TCP_ESTABLISHED,
        state_flags: 0x10,
        ..State1301Repr::default()
    };
    let ping = freebsd_key(
        [addr4(192, 168, 10, 7), addr4(198, 51, 100, 1)],
        [0x4242, 0x4242],
    );
    let ping_state = State1301Repr {
        id: 0x65a1_0000_0000_0003,
        ifname: ifname("igb0")?,
        key: [ping, ping],
        src: level_peer(SINGLE),
        dst: level_peer(0),
        rule: 1,
        anchor: u32::MAX,
        nat_rule: u32::MAX,
        creation: 0,
        expire: 20,
        packets: [1, 0],
        bytes: [84, 0],
        creatorid: FREEBSD_A,
        af: 2,
        proto: PROTO_ICMP,
        direction: OUT,
        timeout: ICMP_FIRST,
        ..State1301Repr::default()
    };
    let options = PcapOptions {
        endian: Endian::Big,
        ..PcapOptions::default()
    };
    let mut w = PcapWriter::new(Vec::new(), linktype::ETHERNET, options)?;
    let frame =
        |mac, src, p: &[u8]| -> Result<Vec<u8>> { Ok(ether_v4(mac, None, &pfsync_v4(src, p)?)) };
    let request = payload(d, &[Message::UpdReq(StateRefRepr::BULK_REQUEST)])?;
    w.write_frame(at(10, 0), &frame(MAC_B, b, &request)?)?;
    let start = BusRepr {
        creatorid: FREEBSD_A,
        endtime: 0,
        status: STATUS_START,
    };
    w.write_frame(
        at(10, 2_000),
        &frame(MAC_A, a, &payload(d, &[Message::Bus(start)])?)?,
    )?;
    let bulk = payload(
        d,
        &[
            Message::Upd(StateRecord::FreeBsd1301(ntp_state)),
            Message::Upd(StateRecord::FreeBsd1301(https6_state)),
        ],
    )?;
    w.write_frame(at(10, 3_000), &frame(MAC_A, a, &bulk)?)?;
    let end = BusRepr {
        endtime: 1,
        status: STATUS_END,
        ..start
    };
    w.write_frame(
        at(11, 0),
        &frame(MAC_A, a, &payload(d, &[Message::Bus(end)])?)?,
    )?;
    let mixed = payload(
        d,
        &[
            Message::Ins(StateRecord::FreeBsd1301(ping_state)),
            Message::UpdC(UpdCRepr {
                id: https6_state.id,
                src: https6_state.src,
                dst: https6_state.dst,
                creatorid: FREEBSD_A,
                expire: 0,
                timeout: TCP_ESTABLISHED,
                state_flags: 0,
            }),
            Message::DelC(StateRefRepr {
                id: ntp_state.id,
                creatorid: FREEBSD_A,
            }),
        ],
    )?;
    w.write_frame(at(12, 0), &frame(MAC_A, a, &mixed)?)?;
    let clear_all = ClrRepr {
        ifname: IfName::EMPTY,
        creatorid: FREEBSD_A,
    };
    w.write_frame(
        at(13, 0),
        &frame(MAC_A, a, &payload(d, &[Message::Clr(clear_all)])?)?,
    )?;
    Ok(w.into_inner())
}

fn state_1400(id: u64, key: KeyFreeBsdRepr, af: u8) -> Result<State1400Repr> {
    Ok(State1400Repr {
        id,
        ifname: ifname("vtnet0")?,
        key: [key, key],
        src: tcp_peer(ESTABLISHED, 0x5000_0000, 32_768),
        dst: tcp_peer(ESTABLISHED, 0x6000_0000, 32_768),
        rule: 9,
        anchor: u32::MAX,
        nat_rule: u32::MAX,
        creation: 30,
        expire: 86_370,
        packets: [12, 10],
        bytes: [2_000, 15_000],
        creatorid: FREEBSD_B,
        af,
        proto: PROTO_TCP,
        direction: IN,
        timeout: TCP_ESTABLISHED,
        rtableid: -1,
        max_mss: 1_400,
        ..State1400Repr::default()
    })
}

fn freebsd_1400() -> Result<Vec<u8>> {
    let d = Dialect::FreeBsd1400;
    let src6 = v6("fd2c::2")?;
    let group6 = v6("ff12::f0")?;
    let key6 = freebsd_key(
        [addr6("2001:db8:a::100")?, addr6("2001:db8:b::200")?],
        [55_000, 8_443],
    );
    let routed = State1400Repr {
        rt: 2, // FreeBSD PF_ROUTETO
        rt_addr: addr6("2001:db8:b::fe")?,
        rt_ifname: ifname("vtnet1")?,
        ..state_1400(0x6600_0000_0000_0001, key6, 28)?
    };
    let key4 = freebsd_key([addr4(172, 16, 0, 5), addr4(172, 16, 9, 9)], [40_100, 25]);
    let mail = State1400Repr {
        rtableid: 2,
        ..state_1400(0x6600_0000_0000_0002, key4, 2)?
    };

    let mut w = PcapNgWriter::new(Vec::new(), Endian::Little)?;
    let eth = w.add_interface(linktype::ETHERNET, 0, None)?;
    let pfsync0 = w.add_interface(linktype::PFSYNC, 1_500, Some(9))?;
    let lo = w.add_interface(linktype::LOOP, 0, None)?;
    // A block type no reader knows: skipped by its length.
    w.write_block(0x0000_0bad, b"skip me")?;
    let mac6 = ipv6_multicast_mac(group6);
    let ins = payload(d, &[Message::Ins(StateRecord::FreeBsd1400(routed))])?;
    let frame = ethernet_frame(
        mac6,
        MAC_B,
        None,
        ETHERTYPE_IPV6,
        &pfsync_v6(src6, group6, &ins)?,
    );
    w.write_enhanced(eth, at(20, 0), &frame)?;
    let upd = payload(d, &[Message::Upd(StateRecord::FreeBsd1400(mail))])?;
    let frame = ether_v4(MAC_B, None, &pfsync_v4(v4(172, 16, 255, 2), &upd)?);
    w.write_enhanced(eth, at(20, 250_000), &frame)?;
    // As bpf on pfsync0 sees it: no IP header, nanosecond stamps.
    let compressed = payload(
        d,
        &[
            Message::UpdC(UpdCRepr {
                id: mail.id,
                src: mail.src,
                dst: mail.dst,
                creatorid: FREEBSD_B,
                expire: 0,
                timeout: TCP_ESTABLISHED,
                state_flags: 0,
            }),
            Message::DelC(StateRefRepr {
                id: routed.id,
                creatorid: FREEBSD_B,
            }),
        ],
    )?;
    w.write_enhanced(pfsync0, Duration::new(T0 + 21, 123_456_789), &compressed)?;
    // A bulk request behind an IPv6 hop-by-hop header (PadN), in a simple packet block.
    let request = payload(d, &[Message::UpdReq(StateRefRepr::BULK_REQUEST)])?;
    let mut hop_by_hop = vec![IPPROTO_PFSYNC, 0, 1, 4, 0, 0, 0, 0];
    hop_by_hop.extend_from_slice(&request);
    let packet = ipv6_packet(src6, group6, 255, 0, &hop_by_hop)?;
    w.write_simple(&ethernet_frame(mac6, MAC_B, None, ETHERTYPE_IPV6, &packet))?;
    let start = BusRepr {
        creatorid: FREEBSD_B,
        endtime: 0,
        status: STATUS_START,
    };
    let bus = pfsync_v4(v4(127, 0, 0, 1), &payload(d, &[Message::Bus(start)])?)?;
    w.write_enhanced(
        lo,
        at(22, 0),
        &loopback_frame(link::AF_INET, Endian::Big, &bus),
    )?;
    Ok(w.into_inner())
}

fn freebsd_1500_pfsync0() -> Result<Vec<u8>> {
    let d = Dialect::FreeBsd1500;
    // NAT64: the wire key is IPv6 ICMPv6, the stack key IPv4 ICMP; a floating state
    // first seen on igb1, routed out of igb2 and tagged.
    let nat64 = State1500Repr {
        id: 0x6700_0000_0000_0001,
        ifname: ifname("all")?,
        key: [
            freebsd_key(
                [addr6("2001:db8:64::5")?, addr6("64:ff9b::c000:221")?],
                [0x77, 0x77],
            ),
            freebsd_key(
                [addr4(192, 0, 2, 33), addr4(198, 51, 100, 64)],
                [0x77, 0x77],
            ),
        ],
        src: level_peer(SINGLE),
        dst: level_peer(0),
        rt_addr: addr4(198, 51, 100, 1),
        rule: 11,
        anchor: u32::MAX,
        nat_rule: u32::MAX,
        creation: 1,
        expire: 19,
        packets: [1, 0],
        bytes: [104, 0],
        creatorid: FREEBSD_A,
        tagname: Name::new("nat64").context("tag name")?,
        rt_ifname: ifname("igb2")?,
        orig_ifname: ifname("igb1")?,
        rtableid: 0,
        wire_af: 28,
        stack_af: 2,
        rt_af: 2,
        wire_proto: PROTO_ICMPV6,
        stack_proto: PROTO_ICMP,
        timeout: ICMP_FIRST,
        direction: IN,
        rt: 2,
        ..State1500Repr::default()
    };
    let sctp_key = freebsd_key([addr4(10, 20, 0, 1), addr4(10, 30, 0, 1)], [2_905, 2_905]);
    let mut sctp_src = level_peer(4);
    // FreeBSD refuses an SCTP state without scrub data; the verification tag rides in
    // pfss_ts_mod.
    sctp_src.scrub_flag = SCRUB_FLAG_VALID;
    sctp_src.pfss_ts_mod = 0xfeed_f00d;
    let sctp = State1500Repr {
        id: 0x6700_0000_0000_0002,
        ifname: ifname("igb0")?,
        key: [sctp_key, sctp_key],
        src: sctp_src,
        dst: level_peer(4),
        rule: 12,
        anchor: u32::MAX,
        nat_rule: u32::MAX,
        creation: 600,
        expire: 5_400,
        packets: [900, 880],
        bytes: [90_000, 88_000],
        creatorid: FREEBSD_A,
        rtableid: -1,
        wire_af: 2,
        stack_af: 2,
        wire_proto: PROTO_SCTP,
        stack_proto: PROTO_SCTP,
        timeout: SCTP_ESTABLISHED,
        direction: OUT,
        ..State1500Repr::default()
    };
    let options = PcapOptions {
        endian: Endian::Big,
        precision: Precision::Nanos,
        snaplen: 65_535,
    };
    let mut w = PcapWriter::new(Vec::new(), linktype::PFSYNC, options)?;
    let mut first = PacketBuilder::new(d, 1500);
    first.set_pfcksum(*b"\x5e\x1f\x0c\x7d\x12\x34\x56\x78\x9a\xbc\xde\xf0\x01\x23\x45\x67");
    for m in [
        Message::Ins(StateRecord::FreeBsd1500(nat64)),
        Message::Ins(StateRecord::FreeBsd1500(sctp)),
    ] {
        ensure!(first.push(&m)? == Pushed::Added, "1500 packet full");
    }
    let first = first.finish().context("empty packet")?;
    w.write_frame(Duration::new(T0 + 30, 1), &first)?;
    let second = payload(
        d,
        &[
            Message::Upd(StateRecord::FreeBsd1500(State1500Repr {
                expire: 5_399,
                packets: [901, 881],
                ..sctp
            })),
            Message::DelC(StateRefRepr {
                id: nat64.id,
                creatorid: FREEBSD_A,
            }),
            Message::Bus(BusRepr {
                creatorid: FREEBSD_A,
                endtime: 5,
                status: STATUS_END,
            }),
        ],
    )?;
    w.write_frame(Duration::new(T0 + 31, 500_000_001), &second)?;
    Ok(w.into_inner())
}

// ---------------------------------------------------------------------------------------
// Other link types

fn raw_ip() -> Result<Vec<u8>> {
    let s = openbsd_states()?;
    let mut w = PcapWriter::new(Vec::new(), linktype::RAW, PcapOptions::default())?;
    let ins = payload(
        Dialect::OpenBsd,
        &[Message::Ins(StateRecord::OpenBsd(s.web))],
    )?;
    w.write_frame(at(40, 0), &pfsync_v4(v4(10, 0, 0, 1), &ins)?)?;
    // FreeBSD 14 over IPv6 unicast, as in its basic_ipv6_unicast test.
    let del = payload(
        Dialect::FreeBsd1400,
        &[Message::DelC(StateRefRepr {
            id: 0x6600_0000_0000_0009,
            creatorid: FREEBSD_B,
        })],
    )?;
    w.write_frame(at(41, 0), &pfsync_v6(v6("fd2c::1")?, v6("fd2c::2")?, &del)?)?;
    // An ICMP echo: not pfsync.
    let ping = ipv4_packet(
        v4(10, 0, 0, 1),
        v4(10, 0, 0, 2),
        64,
        PROTO_ICMP,
        &[8, 0, 0xf7, 0xff, 0, 0, 0, 0],
    )?;
    w.write_frame(at(42, 0), &ping)?;
    Ok(w.into_inner())
}

fn loopback() -> Result<Vec<u8>> {
    let localhost = v4(127, 0, 0, 1);
    let local6 = Ipv6Addr::LOCALHOST;
    let mut w = PcapWriter::new(Vec::new(), linktype::NULL, PcapOptions::default())?;
    let openbsd_request = payload(
        Dialect::OpenBsd,
        &[Message::UpdReq(StateRefRepr::BULK_REQUEST)],
    )?;
    let packet = pfsync_v4(localhost, &openbsd_request)?;
    // The family is in the byte order of the host that captured: both occur.
    w.write_frame(
        at(50, 0),
        &loopback_frame(link::AF_INET, Endian::Little, &packet),
    )?;
    let freebsd_request = payload(
        Dialect::FreeBsd1301,
        &[Message::UpdReq(StateRefRepr::BULK_REQUEST)],
    )?;
    let packet = pfsync_v4(localhost, &freebsd_request)?;
    w.write_frame(
        at(51, 0),
        &loopback_frame(link::AF_INET, Endian::Big, &packet),
    )?;
    let bus = payload(
        Dialect::OpenBsd,
        &[Message::Bus(BusRepr {
            creatorid: OPENBSD_B,
            endtime: 0,
            status: STATUS_END,
        })],
    )?;
    let packet = pfsync_v6(local6, local6, &bus)?;
    w.write_frame(
        at(52, 0),
        &loopback_frame(link::AF_INET6_OPENBSD, Endian::Little, &packet),
    )?;
    let del = payload(
        Dialect::FreeBsd1400,
        &[Message::DelC(StateRefRepr {
            id: 0x6600_0000_0000_0001,
            creatorid: FREEBSD_B,
        })],
    )?;
    let packet = pfsync_v6(local6, local6, &del)?;
    w.write_frame(
        at(53, 0),
        &loopback_frame(link::AF_INET6_FREEBSD, Endian::Little, &packet),
    )?;
    w.write_frame(
        at(54, 0),
        &loopback_frame(link::AF_INET6_DARWIN, Endian::Big, &packet),
    )?;
    // Another address family: not IP, not pfsync.
    w.write_frame(at(55, 0), &loopback_frame(17, Endian::Little, &[0; 16]))?;
    Ok(w.into_inner())
}

// ---------------------------------------------------------------------------------------
// Hostile

/// Sets the header's length field to the payload's length after a patch.
fn fix_len(payload: &mut [u8]) -> Result<()> {
    let len = u16::try_from(payload.len())?;
    payload[2..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Inserts `bytes` before a FreeBSD packet's EOF subheader (its last four bytes).
fn before_eof(mut payload: Vec<u8>, bytes: &[u8]) -> Result<Vec<u8>> {
    let eof_at = payload.len() - 4;
    payload.splice(eof_at..eof_at, bytes.iter().copied());
    fix_len(&mut payload)?;
    Ok(payload)
}

fn hostile() -> Result<Vec<u8>> {
    let s = openbsd_states()?;
    let src = v4(10, 66, 0, 1);
    let del = StateRefRepr {
        id: 0x0bad_0000_0000_0001,
        creatorid: 0x0bad_0bad,
    };
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut pfsync = |p: &[u8]| -> Result<()> {
        frames.push(ether_v4(MAC_A, None, &pfsync_v4(src, p)?));
        Ok(())
    };
    let openbsd_request = payload(
        Dialect::OpenBsd,
        &[Message::UpdReq(StateRefRepr::BULK_REQUEST)],
    )?;

    // 1. Shorter than the pfsync header: hdrops.
    pfsync(&openbsd_request[..10])?;
    // 2. Header version 4: badver.
    let mut bad_version = openbsd_request.clone();
    bad_version[0] = 4;
    pfsync(&bad_version)?;
    // 3. Header length past the end of the packet: badlen.
    let mut long = payload(
        Dialect::OpenBsd,
        &[Message::Clr(ClrRepr {
            ifname: ifname("em0")?,
            creatorid: OPENBSD_A,
        })],
    )?;
    long[2..4].copy_from_slice(&144u16.to_be_bytes());
    pfsync(&long)?;
    // 4. FreeBSD: a DEL_C, then action 20, unknown to every FreeBSD: badact, rest dropped.
    let del_c = payload(Dialect::FreeBsd1400, &[Message::DelC(del)])?;
    let mut unknown = vec![20, 0, 0, 1];
    unknown.extend_from_slice(&[0xee; 12]);
    pfsync(&before_eof(del_c.clone(), &unknown)?)?;
    // 5. OpenBSD: two inserts, the first with timeout 99: badval, then the second.
    let mut bad_timeout = payload(
        Dialect::OpenBsd,
        &[
            Message::Ins(StateRecord::OpenBsd(s.web)),
            Message::Ins(StateRecord::OpenBsd(s.nat)),
        ],
    )?;
    bad_timeout[20 + 4 + 255] = 99;
    pfsync(&bad_timeout)?;
    // 6. FreeBSD 1400 record with af 10 (Linux's AF_INET6): badval.
    let key = freebsd_key([addr6("2001:db8::1")?, addr6("2001:db8::2")?], [1, 2]);
    let mut linux_af = payload(
        Dialect::FreeBsd1400,
        &[Message::Upd(StateRecord::FreeBsd1400(state_1400(
            0x0bad_0000_0000_0006,
            key,
            28,
        )?))],
    )?;
    linux_af[20 + 4 + 232] = 10;
    pfsync(&linux_af)?;
    // 7. OpenBSD: an unknown action 16 whose subheader gives size and count is skipped,
    //    then a CLR is read.
    let clr = payload(
        Dialect::OpenBsd,
        &[Message::Clr(ClrRepr {
            ifname: ifname("em1")?,
            creatorid: OPENBSD_B,
        })],
    )?;
    let mut skipped = clr[..20].to_vec();
    skipped.extend_from_slice(&[16, 3, 0, 2]);
    skipped.extend_from_slice(&[0x55; 24]);
    skipped.extend_from_slice(&clr[20..]);
    fix_len(&mut skipped)?;
    pfsync(&skipped)?;
    // 8. OpenBSD: an unknown action without a record size: badact.
    let mut sizeless = openbsd_request[..20].to_vec();
    sizeless.extend_from_slice(&[17, 0, 0, 1]);
    sizeless.extend_from_slice(&[0; 12]);
    fix_len(&mut sizeless)?;
    pfsync(&sizeless)?;
    // 9. FreeBSD: bytes after the EOF subheader, inside the header length: badlen.
    let mut after_eof = del_c.clone();
    after_eof.extend_from_slice(&[0; 8]);
    fix_len(&mut after_eof)?;
    pfsync(&after_eof)?;
    // 10. FreeBSD 14+: a full DEL (action 6) is refused: badact.
    let mut full_del = vec![6, 0, 0, 1];
    full_del.extend_from_slice(&[0; 242]);
    pfsync(&before_eof(
        payload(Dialect::FreeBsd1400, &[Message::DelC(del)])?,
        &full_del,
    )?)?;
    // 11. FreeBSD: a subheader counting 5 DEL_C where one is present: badlen.
    let mut overcount = del_c.clone();
    overcount[20 + 3] = 5;
    pfsync(&overcount)?;
    // 12. A good packet, but with TTL 64 (a receiving kernel counts badttl).
    frames.push(ether_v4(
        MAC_A,
        None,
        &ipv4_packet(src, GROUP4, 64, IPPROTO_PFSYNC, &openbsd_request)?,
    ));
    // 13. Protocol 240 with an IPv4 header length of 16 bytes.
    let mut bad_ihl = pfsync_v4(src, &openbsd_request)?;
    bad_ihl[0] = 0x44;
    frames.push(ether_v4(MAC_A, None, &bad_ihl));
    // 14. A fragment of a pfsync packet.
    let mut fragment = pfsync_v4(src, &openbsd_request)?;
    fragment[6] = 0x20; // more fragments, DF cleared
    fragment[10..12].fill(0);
    let checksum = link::ipv4_checksum(&fragment[..20]);
    fragment[10..12].copy_from_slice(&checksum.to_be_bytes());
    frames.push(ether_v4(MAC_A, None, &fragment));
    // 15. A cut-off Ethernet header.
    frames.push(MAC_A[..].repeat(2)[..10].to_vec());
    // 16. Frames that are not pfsync at all: ARP, a DNS query, an IPv6 TCP SYN.
    frames.push(ethernet_frame(
        [0xff; 6],
        MAC_B,
        None,
        ETHERTYPE_ARP,
        &[0; 28],
    ));
    let dns = ipv4_packet(
        v4(10, 66, 0, 2),
        v4(10, 66, 0, 53),
        64,
        PROTO_UDP,
        &[0x30, 0x39, 0, 53, 0, 8, 0, 0],
    )?;
    frames.push(ethernet_frame(MAC_A, MAC_B, None, ETHERTYPE_IPV4, &dns));
    let syn = ipv6_packet(
        v6("2001:db8::a")?,
        v6("2001:db8::b")?,
        64,
        PROTO_TCP,
        &[0; 20],
    )?;
    frames.push(ethernet_frame(MAC_A, MAC_B, None, ETHERTYPE_IPV6, &syn));

    let mut w = PcapWriter::new(Vec::new(), linktype::ETHERNET, PcapOptions::default())?;
    for (i, frame) in (0u64..).zip(&frames) {
        w.write_frame(at(60 + i, 0), frame)?;
    }
    Ok(w.into_inner())
}
