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
        bail!("pfsync is up but has no syncdev: give `syncdev IF`, the interface facing the peers");
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
/// that the DATA frame carrying one to a pfsyncd peer still fits it (never under the
/// smallest MTU that carries one full record: there the frame may be fragmented).
pub(in crate::daemon) fn link_settings(config: &SyncConfig) -> LinkSettings {
    let mtu = if config.extensions {
        config
            .mtu
            .saturating_sub(DATA_OVERHEAD as u32)
            .max(super::config::MIN_MTU)
    } else {
        config.mtu
    };
    let syncpeer = config
        .syncpeers
        .first()
        .copied()
        .unwrap_or_else(|| Family::V4.group());
    LinkSettings {
        dialect: config.dialect,
        mtu: mtu as usize,
        ip_header_len: if syncpeer.is_ipv6() { 40 } else { 20 },
        maxupd: config.maxupd,
        syncpeer,
    }
}
