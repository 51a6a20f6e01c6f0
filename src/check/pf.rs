//! The pf steps (FreeBSD, OpenBSD): /dev/pf, pf running, securelevel, pfsync, the
//! hostid, the listing, and the import test, through the [`PfDevice`] the daemon uses.

use std::time::Instant;

use super::system::{pf_info, sysctl_int, tool};
use super::{import, Report, Step};
use crate::daemon::parent::kernel_start::refuse_kernel_syncdev;
use crate::table::pf::{PfDevice, PfTable};
use crate::table::StateTable;

/// The securelevel above which pf refuses DIOCADDSTATE and DIOCKILLSTATES with EPERM:
/// FreeBSD `pfioctl` lets only its read-only list through when
/// `securelevel_gt(td->td_ucred, 2)`; OpenBSD `pfioctl` when `securelevel > 1`
/// (freebsd/freebsd-src and openbsd/src `pf_ioctl.c`).
const MAX_SECURELEVEL: i64 = if cfg!(target_os = "freebsd") { 2 } else { 1 };

pub(super) fn steps(report: &mut Report, import_test: bool, ifname: Option<&str>) {
    let mut dev = match crate::sys::PfDev::open() {
        Ok(dev) => {
            // What the daemon opens: the device that chose netlink or the ioctls.
            let dev = crate::table::pf::KernelPf::open(dev);
            report.push(Step::ok("/dev/pf", "opened read-write"));
            dev
        }
        Err(e) => {
            report.push(Step::fail(
                "/dev/pf",
                format!("opening read-write: {e}"),
                "run as root; FreeBSD: kldload pf",
            ));
            return;
        }
    };
    let info = tool("pfctl", &["-s", "info"]).map(|t| pf_info(&t));
    report.push(match &info {
        Ok(i) if i.enabled => Step::ok("pf running", "pfctl -s info: Status: Enabled"),
        Ok(_) => Step::fail(
            "pf running",
            "pf is loaded but not enabled: no state is created",
            "pfctl -e (rc.conf: pf_enable=YES)",
        ),
        Err(e) => Step::fail("pf running", e.clone(), "pfctl(8) must run"),
    });
    report.push(match sysctl_int("kern.securelevel") {
        Ok(level) if level <= MAX_SECURELEVEL => Step::ok(
            "securelevel",
            format!("kern.securelevel {level}: pf takes imports and kills (refused above {MAX_SECURELEVEL})"),
        ),
        Ok(level) => Step::fail(
            "securelevel",
            format!("kern.securelevel {level}: pf refuses DIOCADDSTATE and DIOCKILLSTATES above {MAX_SECURELEVEL} (EPERM)"),
            format!("run at securelevel {MAX_SECURELEVEL} or lower (it can only be lowered at boot)"),
        ),
        Err(e) => Step::fail("securelevel", e, "sysctl kern.securelevel must be readable"),
    });
    pfsync_steps(report);
    let hostid = match dev.hostid() {
        Ok(Some(h)) if h != 0 => {
            report.push(Step::ok(
                "hostid",
                format!("{h:08x}: the daemon's creator id without --creatorid"),
            ));
            Some(h)
        }
        Ok(_) => {
            report.push(Step::fail(
                "hostid",
                "the kernel does not tell pf's hostid",
                "give --creatorid with the Hostid of `pfctl -v -s info`",
            ));
            None
        }
        Err(e) => {
            report.push(Step::fail(
                "hostid",
                format!("reading pf's hostid: {e}"),
                "give --creatorid with the Hostid of `pfctl -v -s info`",
            ));
            None
        }
    };
    let how = dev.describe();
    let mut table = PfTable::new(dev);
    listing_steps(report, &mut table, &how, info.ok().and_then(|i| i.states));
    if import_test {
        report.push(import::import_test(
            &mut table,
            hostid,
            ifname.unwrap_or("lo0"),
        ));
    }
}

/// pfsync in the kernel: loaded (FreeBSD: DIOCADDSTATE needs it, and pfsync0 up), and
/// pfsync0 without a syncdev.
fn pfsync_steps(report: &mut Report) {
    let exists = nix::net::if_::if_nametoindex("pfsync0").is_ok();
    if cfg!(target_os = "freebsd") {
        report.push(if exists {
            Step::ok("pfsync loaded", "pfsync0 exists (pfsync.ko is loaded)")
        } else {
            Step::fail(
                "pfsync loaded",
                "no pfsync0: pfsync.ko is not loaded, and DIOCADDSTATE answers EOPNOTSUPP without it",
                "kldload pfsync (rc.conf: pfsync_enable is not needed; the pfsyncd rc script loads it)",
            )
        });
        if !exists {
            return;
        }
    } else {
        report.push(Step::skip(
            "pfsync loaded",
            "OpenBSD: DIOCADDSTATE is in the kernel (GENERIC has pfsync) and needs no pfsync0",
        ));
        if !exists {
            report.push(Step::ok(
                "pfsync0",
                "no pfsync0: the kernel's pfsync is off",
            ));
            return;
        }
    }
    let syncdev = match crate::sys::pfsync_if::pfsync_syncdev_field("pfsync0") {
        Ok(field) => refuse_kernel_syncdev(&field),
        Err(e) => {
            report.push(Step::fail(
                "pfsync0",
                format!("SIOCGETPFSYNC: {e}"),
                "ifconfig pfsync0 must answer",
            ));
            return;
        }
    };
    if let Err(e) = syncdev {
        report.push(Step::fail(
            "pfsync0",
            e.to_string(),
            "ifconfig pfsync0 -syncdev (the pfsyncd rc script does)",
        ));
        return;
    }
    let up = crate::net::Interface::lookup("pfsync0").is_ok();
    report.push(if cfg!(target_os = "freebsd") && !up {
        Step::fail(
            "pfsync0",
            "pfsync0 has no syncdev but is down: DIOCADDSTATE answers EOPNOTSUPP until it is up",
            "ifconfig pfsync0 -syncdev up",
        )
    } else {
        Step::ok(
            "pfsync0",
            format!("no syncdev, {}", if up { "up" } else { "down" }),
        )
    });
}

fn listing_steps<D: PfDevice>(
    report: &mut Report,
    table: &mut PfTable<D>,
    how: &str,
    pfctl_states: Option<u64>,
) {
    let mut changes = Vec::new();
    if let Err(e) = table.poll_changes(Instant::now(), &mut changes) {
        report.push(Step::fail(
            "state listing",
            format!("{how}: {e}"),
            "see the error; FreeBSD 15 without netlink cannot list states",
        ));
        return;
    }
    let listed = table.len() as u64;
    let seen = pfctl_states.map_or_else(String::new, |n| format!("; pfctl -s info: {n}"));
    report.push(Step::ok(
        "state listing",
        format!("{how}: {listed} states{seen}"),
    ));
    let undecodable = table.edge_counters().undecodable;
    report.push(match pfctl_states {
        _ if undecodable > 0 => Step::fail(
            "listing decodes",
            format!("{undecodable} listed states did not decode and were skipped"),
            "report this with `pfctl -ss -vv` and `pfsyncd --version`",
        ),
        Some(n) if n > 0 && listed == 0 => Step::fail(
            "listing decodes",
            format!("pf holds {n} states but the listing gave none"),
            "report this with `pfctl -ss -vv`, uname -a and `pfsyncd --version`",
        ),
        _ => Step::ok(
            "listing decodes",
            format!("{} syncable states decoded, none skipped", changes.len()),
        ),
    });
}
