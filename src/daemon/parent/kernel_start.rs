//! What the daemon asks the kernel before it starts syncing pf: that the kernel's own
//! pfsync is not on the link (no syncdev on pfsync0), and pf's hostid for our creator id.

use super::table::Table;
use crate::log_warn;

/// The kernel's pfsync has a syncdev: it would speak pfsync on the link the daemon
/// uses, with another creator id, and consume the peers' packets (FreeBSD
/// `pfsync_input`, OpenBSD's protosw) before a raw socket sees them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "pfsync0 has syncdev {syncdev}: the kernel's pfsync would sync on that link itself and \
     take the peers' packets; run `ifconfig pfsync0 -syncdev` (FreeBSD's pfsyncd rc script \
     does; OpenBSD: `ifconfig pfsync0 down -syncdev`, and drop syncdev from \
     /etc/hostname.pfsync0) and start pfsyncd again"
)]
pub struct KernelSyncdev {
    /// The kernel's syncdev.
    pub syncdev: String,
}

/// Refuses a kernel pfsync with a syncdev, from the `pfsyncr_syncdev` field that
/// `SIOCGETPFSYNC` filled (all zero without one).
pub fn refuse_kernel_syncdev(field: &[u8]) -> Result<(), KernelSyncdev> {
    // The kernel NUL-terminates (strlcpy); a field without a NUL is read to its end.
    let name = field.split(|&b| b == 0).next().unwrap_or(&[]);
    if name.is_empty() {
        return Ok(());
    }
    Err(KernelSyncdev {
        syncdev: String::from_utf8_lossy(name).into_owned(),
    })
}

/// Refuses to start when pfsync0 has a syncdev. No pfsync0 at all is no kernel pfsync
/// on the link (FreeBSD without pfsync.ko, whose imports then fail with their own remedy;
/// OpenBSD without `ifconfig pfsync0 create`).
#[cfg(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd")))]
pub(in crate::daemon) fn check_kernel_pfsync() -> anyhow::Result<()> {
    match crate::sys::pfsync_if::pfsync_syncdev_field("pfsync0") {
        Ok(field) => Ok(refuse_kernel_syncdev(&field)?),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENXIO) | Some(libc::ENODEV)) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("pfsync0: SIOCGETPFSYNC")),
    }
}

/// Where the creator id came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreatorIdSource {
    /// `--creatorid`.
    Given,
    /// pf's hostid: the creator id pf stamps on local states.
    PfHostid,
    /// Random: the memory table, or pf that did not tell its hostid.
    Random,
}

impl CreatorIdSource {
    /// As the start-up line says it.
    pub fn as_str(self) -> &'static str {
        match self {
            CreatorIdSource::Given => "--creatorid",
            CreatorIdSource::PfHostid => "pf's hostid",
            CreatorIdSource::Random => "random",
        }
    }
}

/// The creator id to run with: `--creatorid` if given; with pf, pf's hostid, since
/// the peers store our states under the id pf stamped on them (a CLR or a re-delete
/// of our own states names that id); otherwise the random `fallback`.
pub(in crate::daemon) fn choose_creatorid(
    given: Option<u32>,
    fallback: u32,
    table: &mut Table,
) -> (u32, CreatorIdSource) {
    if let Some(id) = given {
        return (id, CreatorIdSource::Given);
    }
    let Some(pf) = table.pf() else {
        return (fallback, CreatorIdSource::Random);
    };
    match pf.hostid() {
        // No state carries creator id 0 (the kernels refuse it on import).
        Ok(Some(hostid)) if hostid != 0 => (hostid, CreatorIdSource::PfHostid),
        Ok(_) => {
            log_warn!(
                "pf does not tell its hostid: running with the random creator id {fallback:08x}; \
                 peers will not match it to our states (give --creatorid with the Hostid of \
                 `pfctl -v -s info`)"
            );
            (fallback, CreatorIdSource::Random)
        }
        Err(e) => {
            log_warn!(
                "reading pf's hostid: {e}: running with the random creator id {fallback:08x} \
                 (give --creatorid with the Hostid of `pfctl -v -s info`)"
            );
            (fallback, CreatorIdSource::Random)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::pf::{PfDevice, PfTable};
    use crate::wire::RecordFormat;

    /// What `SIOCGETPFSYNC` copies out in `pfsyncr_syncdev`: FreeBSD
    /// `sys/netpfil/pf/if_pfsync.c` `pfsyncioctl` (freebsd/freebsd-src 01194da2) and OpenBSD
    /// `sys/net/if_pfsync.c` `pfsync_get_ioc` both `bzero` the request, then
    /// `strlcpy(pfsyncr.pfsyncr_syncdev, <syncdev>->if_xname, IFNAMSIZ)` only when a syncdev
    /// is set.
    fn kernel_pfsyncr_syncdev(syncdev: Option<&str>) -> [u8; 16] {
        let mut field = [0u8; 16];
        if let Some(name) = syncdev {
            // strlcpy: at most IFNAMSIZ - 1 bytes, always NUL-terminated.
            let n = name.len().min(15);
            field[..n].copy_from_slice(&name.as_bytes()[..n]);
        }
        field
    }

    #[test]
    fn a_kernel_syncdev_is_refused() {
        assert_eq!(refuse_kernel_syncdev(&kernel_pfsyncr_syncdev(None)), Ok(()));
        let refused = refuse_kernel_syncdev(&kernel_pfsyncr_syncdev(Some("em1")));
        assert_eq!(
            refused,
            Err(KernelSyncdev {
                syncdev: "em1".into()
            }),
            "pfsync0 with syncdev em1 must be refused"
        );
        let text = refused.unwrap_err().to_string();
        assert!(text.contains("ifconfig pfsync0 -syncdev"), "{text}");
        // A longest name (15 bytes, then the NUL strlcpy writes) is read whole.
        let long = "vlan12345678901";
        assert_eq!(
            refuse_kernel_syncdev(&kernel_pfsyncr_syncdev(Some(long))),
            Err(KernelSyncdev {
                syncdev: long.into()
            })
        );
        // A field without a NUL (not what a kernel writes) is still refused, not a panic.
        assert!(refuse_kernel_syncdev(&[b'x'; 16]).is_err());
    }

    /// The model's field is the headers' own: `pfsyncr_syncdev[IFNAMSIZ]` first in a
    /// 28-byte `struct pfsyncreq` (syncdev, syncpeer, maxupdates, defer) on both BSDs.
    #[cfg(pfsyncd_oracle)]
    #[test]
    fn the_model_field_is_the_headers_pfsyncreq() {
        use std::mem::{offset_of, size_of};
        macro_rules! layout {
            ($m:path) => {{
                use $m as k;
                assert_eq!(size_of::<k::pfsyncreq>(), 16 + 4 + 4 + 4);
                assert_eq!(offset_of!(k::pfsyncreq, pfsyncr_syncdev), 0);
                assert_eq!(
                    size_of::<[core::ffi::c_char; 16]>(),
                    kernel_pfsyncr_syncdev(None).len()
                );
                let r = k::pfsyncreq::default();
                assert_eq!(r.pfsyncr_syncdev.len(), 16);
            }};
        }
        layout!(crate::sys::freebsd);
        layout!(crate::sys::openbsd);
    }

    /// A pf device that knows only its hostid. The hostid is what pf stamps as the
    /// creator id of local states (FreeBSD `pf_state_insert`: `s->creatorid =
    /// V_pf_status.hostid`; OpenBSD `pf_state_insert` the same with `pf_status.hostid`);
    /// `PfDevice::hostid` hands it over in host order (the device's job, not modelled).
    struct HostidOnly(Option<u32>);

    impl PfDevice for HostidOnly {
        fn format(&self) -> RecordFormat {
            RecordFormat::FreeBsd1301
        }
        fn list(&mut self, out: &mut Vec<u8>) -> std::io::Result<crate::table::pf::Listing> {
            out.clear();
            Ok(crate::table::pf::Listing::Complete)
        }
        fn add(&mut self, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn kill(&mut self, _: u32, _: u64) -> std::io::Result<u32> {
            Ok(0)
        }
        fn hostid(&mut self) -> std::io::Result<Option<u32>> {
            Ok(self.0)
        }
    }

    fn pf(hostid: Option<u32>) -> Table {
        Table::Pf(Box::new(PfTable::new(HostidOnly(hostid))))
    }

    #[test]
    fn with_pf_the_creator_id_is_the_hostid() {
        assert_eq!(
            choose_creatorid(None, 0x1111_1111, &mut pf(Some(0x5ca1_ab1e))),
            (0x5ca1_ab1e, CreatorIdSource::PfHostid),
            "without --creatorid, pf's hostid"
        );
        assert_eq!(
            choose_creatorid(Some(0x2222_2222), 0x1111_1111, &mut pf(Some(0x5ca1_ab1e))),
            (0x2222_2222, CreatorIdSource::Given)
        );
        // A kernel that does not tell (or says 0, which no state can carry): random.
        for unknown in [None, Some(0)] {
            assert_eq!(
                choose_creatorid(None, 0x1111_1111, &mut pf(unknown)),
                (0x1111_1111, CreatorIdSource::Random)
            );
        }
        let mut memory = Table::Memory(Box::new(crate::table::MemoryTable::new(
            crate::table::MemoryConfig::new(1),
        )));
        assert_eq!(
            choose_creatorid(None, 0x1111_1111, &mut memory),
            (0x1111_1111, CreatorIdSource::Random)
        );
    }
}
