//! The sync link: the sender and the receive path on the syncdev, opened as root by the
//! start and by the parent on SIGHUP (and tried by `pfsyncd check`), and the settings
//! the engine derives from the same configuration.

use anyhow::{anyhow, bail};

use super::config::SyncConfig;
use crate::engine::LinkSettings;
use crate::net::{Family, Interface, Sender, SyncInput, SyncReceiver, Transport};
use crate::wire::ext::DATA_OVERHEAD;

/// The sync link while the interface is up.
pub(in crate::daemon) struct Link {
    pub(in crate::daemon) sender: Sender,
    pub(in crate::daemon) input: SyncInput<Box<dyn SyncReceiver>>,
}

/// The receive path of this OS: a raw socket on Linux, where nothing in the kernel takes
/// protocol 240.
#[cfg(target_os = "linux")]
fn open_receiver(
    transport: &Transport,
    syncdev: &Interface,
) -> anyhow::Result<Box<dyn SyncReceiver>> {
    let receiver =
        crate::net::RawReceiver::open(transport, syncdev).map_err(|e| need_root(anyhow!("{e}")))?;
    Ok(Box::new(receiver))
}

/// On the BSDs the kernel's pfsync consumes protocol 240 before any raw socket sees it:
/// receive with bpf on the syncdev.
#[cfg(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd")))]
fn open_receiver(
    transport: &Transport,
    syncdev: &Interface,
) -> anyhow::Result<Box<dyn SyncReceiver>> {
    let receiver = crate::net::bpf::BpfReceiver::open(transport, syncdev)
        .map_err(|e| need_root(anyhow!("{e}")))?;
    Ok(Box::new(receiver))
}

/// Elsewhere there is no receive path yet.
#[cfg(not(any(
    target_os = "linux",
    all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd"))
)))]
fn open_receiver(
    _transport: &Transport,
    syncdev: &Interface,
) -> anyhow::Result<Box<dyn SyncReceiver>> {
    bail!(
        "syncdev {}: this build has no receive path for this OS",
        syncdev.name
    )
}

/// Opens the sync link when the configuration has it up; `None` when it is down.
pub(in crate::daemon) fn open_link(config: &SyncConfig) -> anyhow::Result<Option<Link>> {
    if !config.up {
        return Ok(None);
    }
    let Some(dev) = config.syncdev else {
        if config.secure_only() {
            // Every peer is on the secure link: no plain link to open.
            return Ok(None);
        }
        bail!("pfsync is up but has no syncdev: give `syncdev IF`, the interface facing the peers, or secure peers only (`securepeer`)");
    };
    let name = dev.to_string();
    let syncdev = Interface::lookup(&name).map_err(|e| anyhow!("{e}"))?;
    let transport = if config.syncpeers.is_empty() {
        Transport::multicast(name.clone(), Family::V4)
    } else {
        Transport::unicast(name.clone(), config.syncpeers.clone())
            .map_err(|e| anyhow!("syncpeer: {e}"))?
    };
    let sender = Sender::open(&transport, &syncdev).map_err(|e| need_root(anyhow!("{e}")))?;
    let receiver = open_receiver(&transport, &syncdev)?;
    Ok(Some(Link {
        sender,
        input: SyncInput::new(receiver, syncdev),
    }))
}

/// Opens the sync link as the daemon would (sender, and the receiver with its filter
/// and group memberships on the syncdev), then closes it; says what it opened. `None`
/// when the configuration has sync down.
pub fn probe_link(config: &SyncConfig) -> anyhow::Result<Option<String>> {
    let Some(link) = open_link(config)? else {
        return Ok(None);
    };
    let name = link.input.syncdev().name.clone();
    let peers = if config.syncpeers.is_empty() {
        format!("joined {}", Family::V4.group())
    } else {
        let peers: Vec<String> = config.syncpeers.iter().map(ToString::to_string).collect();
        format!("unicast to {}", peers.join(", "))
    };
    let receiver = if cfg!(target_os = "linux") {
        "raw socket (protocol 240)"
    } else {
        "bpf with the pfsync filter"
    };
    Ok(Some(format!(
        "sender and {receiver} open on {name}, {peers}"
    )))
}

/// Adds the likely cure to a permission error.
fn need_root(e: anyhow::Error) -> anyhow::Error {
    if e.to_string().contains("Operation not permitted") {
        e.context("pfsyncd needs root for raw IP sockets")
    } else {
        e
    }
}

/// What the engine needs to know of the link: its dialect, sizes and where it sends.
/// With the extensions on, packets are built [`DATA_OVERHEAD`] bytes under the MTU so
/// that the DATA frame carrying one to a pfsyncd peer still fits it. With secure peers,
/// they are built small enough that the wrapped datagram fits the MTU too (see
/// [`secure_packet_mtu`]); the plain link then sends the same smaller packets. Never
/// under the smallest MTU that carries one full record: there a frame may be
/// fragmented.
pub(in crate::daemon) fn link_settings(config: &SyncConfig) -> LinkSettings {
    let syncpeer = config
        .syncpeers
        .first()
        .copied()
        .unwrap_or_else(|| Family::V4.group());
    let ip_header_len = if syncpeer.is_ipv6() { 40 } else { 20 };
    let frame_overhead = if config.extensions { DATA_OVERHEAD } else { 0 };
    let mut mtu = (config.mtu as usize).saturating_sub(frame_overhead);
    if !config.secure.peers.is_empty() {
        let reserve = ip_reserve(config.dialect, ip_header_len);
        mtu = mtu.min(secure_packet_mtu(config, reserve).saturating_sub(frame_overhead));
    }
    LinkSettings {
        dialect: config.dialect,
        mtu: mtu.max(super::config::MIN_MTU as usize),
        ip_header_len,
        maxupd: config.maxupd,
        syncpeer,
    }
}

/// WireGuard's transport data message: type, receiver index and counter (16 bytes)
/// before the ciphertext, the Poly1305 tag (16) after it.
const WIREGUARD_DATA_OVERHEAD: usize = 32;
/// WireGuard pads the plaintext to a multiple of this.
const WIREGUARD_PADDING: usize = 16;
/// UDP's header.
const UDP_HEADER_LEN: usize = 8;

/// Bytes of the engine's MTU (its IP packet, of which it keeps `reserve` for the IP
/// header) at which the largest packet, wrapped for the secure link, fits `mtu` whole:
/// outer IP header (20, IPv6 40, per peer endpoint) + UDP 8 + WireGuard 32 + the
/// inner IP packet padded to 16 (inner header 20, IPv6 40, + the packet's payload).
fn secure_packet_mtu(config: &SyncConfig, reserve: usize) -> usize {
    let outer = config
        .secure
        .peers
        .iter()
        .map(|p| {
            if p.endpoint(config.secure.port).is_ipv6() {
                40
            } else {
                20
            }
        })
        .max()
        .unwrap_or(20);
    let inner_header = config
        .secure
        .peers
        .iter()
        .map(|p| if p.inner_addr().is_ipv6() { 40 } else { 20 })
        .chain(
            config
                .secure
                .inner_addr
                .map(|a| if a.is_ipv6() { 40 } else { 20 }),
        )
        .max()
        .unwrap_or(20);
    let plaintext =
        (config.mtu as usize).saturating_sub(outer + UDP_HEADER_LEN + WIREGUARD_DATA_OVERHEAD);
    let inner_packet = plaintext - plaintext % WIREGUARD_PADDING;
    // The engine's payload is its MTU less its reserve; the inner packet is that
    // payload behind the inner header.
    (inner_packet + reserve).saturating_sub(inner_header)
}

/// The engine's reserve for the IP header (as `Engine::ip_reserve`): FreeBSD's
/// dialects keep an IPv6 header's 40 bytes whatever the family.
fn ip_reserve(dialect: crate::wire::Dialect, ip_header_len: usize) -> usize {
    if dialect.has_eof_trailer() {
        ip_header_len.max(40)
    } else {
        ip_header_len
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::time::Instant;

    use super::*;
    use crate::engine::{Config, Engine, LocalChange};
    use crate::state::{PeerState, State, TcpState, Timeout};

    const KEY: &str = "HIo9x/T6qmUJ9cYMqWfPamNTEMNzbXw5G5ndlzmO3B0=";

    fn config(text: &str) -> SyncConfig {
        SyncConfig::from_words(&text.split_whitespace().collect::<Vec<_>>()).unwrap()
    }

    fn tcp(id: u64) -> State {
        let mut s = State {
            id,
            creatorid: 1,
            ifname: crate::wire::IfName::new("em0").unwrap(),
            timeout: Timeout::TcpEstablished,
            ..State::default()
        };
        s.wire.addr = [
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        ];
        s.wire.port = [40000, 80];
        s.stack = s.wire;
        s.src.state = PeerState::Tcp(TcpState::Established);
        s.dst.state = PeerState::Tcp(TcpState::Established);
        s
    }

    /// The longest pfsync payload an engine with these link settings builds, from a
    /// queue of many new states.
    fn largest_payload(config: &SyncConfig) -> usize {
        let link = link_settings(config);
        let mut ec = Config::new(1, link.dialect);
        ec.mtu = link.mtu;
        ec.ip_header_len = link.ip_header_len;
        ec.syncpeer = link.syncpeer;
        let mut engine = Engine::new(ec);
        let now = Instant::now();
        for id in 1..=200 {
            engine.handle_local(now, LocalChange::Insert(tcp(id)));
        }
        engine.flush(now);
        std::iter::from_fn(|| engine.poll_transmit())
            .map(|t| t.payload.len())
            .max()
            .expect("packets")
    }

    /// The UDP datagram's IP packet that carries `payload_len` bytes of pfsync as a
    /// DATA frame over WireGuard: outer IP + UDP 8 + WireGuard's 16-byte header and
    /// 16-byte tag around the inner IP packet padded to 16.
    fn wrapped_len(payload_len: usize, inner: (IpAddr, IpAddr), outer_v6: bool) -> usize {
        let frame = vec![0u8; payload_len + DATA_OVERHEAD];
        let inner = crate::secure::build_inner(inner.0, inner.1, &frame)
            .unwrap()
            .len();
        (if outer_v6 { 40 } else { 20 }) + 8 + 16 + inner.next_multiple_of(16) + 16
    }

    #[test]
    fn a_packet_wrapped_for_the_secure_link_fits_the_mtu() {
        let v4 = (
            IpAddr::from(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::from(Ipv4Addr::new(192, 0, 2, 7)),
        );
        let v6 = (
            IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1)),
            IpAddr::from(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 7)),
        );
        let peers = [
            (format!("secureaddr 192.0.2.1 securepeer 192.0.2.7 pubkey {KEY}"), v4, false),
            (
                format!("secureaddr 2001:db8:1::1 securepeer [2001:db8::7]:5240 pubkey {KEY} inner 2001:db8:1::7"),
                v6,
                true,
            ),
            (
                format!("secureaddr 2001:db8:1::1 securepeer 192.0.2.7 pubkey {KEY} inner 2001:db8:1::7"),
                v6,
                false,
            ),
        ];
        for version in ["1301", "1400", "1500", "openbsd"] {
            for mtu in [1500usize, 1400, 9000] {
                for (words, inner, outer_v6) in &peers {
                    for plain in [
                        "",
                        "syncdev em1 syncpeer 10.0.0.2",
                        "syncdev em1 syncpeer fd00::2",
                    ] {
                        let c = config(&format!(
                            "securekey /k {words} {plain} version {version} mtu {mtu}"
                        ));
                        let payload = largest_payload(&c);
                        let wrapped = wrapped_len(payload, *inner, *outer_v6);
                        assert!(
                            wrapped <= mtu,
                            "version {version} mtu {mtu} {words} {plain}: payload {payload} wraps to {wrapped}"
                        );
                        // Not needlessly small: one more 16-byte block would not fit.
                        assert!(
                            wrapped + 16 + 360 > mtu,
                            "version {version} mtu {mtu} {words} {plain}: payload {payload} wraps to only {wrapped}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn without_secure_peers_packets_keep_the_plain_size() {
        let c = config("syncdev em1 syncpeer 10.0.0.2 version openbsd");
        assert_eq!(link_settings(&c).mtu, 1500 - DATA_OVERHEAD);
        let c = config("syncdev em1 syncpeer 10.0.0.2 version openbsd extensions off");
        assert_eq!(link_settings(&c).mtu, 1500);
    }

    #[test]
    fn a_secure_only_node_opens_no_plain_link() {
        let c = config(&format!(
            "securekey /k secureaddr 192.0.2.1 securepeer 192.0.2.7 pubkey {KEY} up"
        ));
        assert!(c.secure_only());
        assert!(open_link(&c).unwrap().is_none());
        // Without secure peers a syncdev is still needed.
        let err = open_link(&config("up")).err().expect("refused").to_string();
        assert!(err.contains("no syncdev"), "{err}");
    }
}
