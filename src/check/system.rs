//! The steps about the system around pf: carp demotion, and the configured pfsync
//! version against the kernel's. The BSD readings go through the base system's tools
//! (sysctl(8), ifconfig(8), pfctl(8)), as an admin would read them.

use std::process::Command;

use super::{Report, Step};
use crate::daemon::{SyncConfig, TableChoice};
use crate::wire::Dialect;

/// Runs a base-system tool; its standard output, or why it failed.
pub(super) fn tool(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A numeric sysctl, through sysctl(8).
#[cfg_attr(target_os = "linux", allow(dead_code))]
pub(super) fn sysctl_int(name: &str) -> Result<i64, String> {
    let text = tool("sysctl", &["-n", name])?;
    text.trim()
        .parse()
        .map_err(|_| format!("sysctl {name}: not a number: {}", text.trim()))
}

/// carp demotion: the daemon raises it while its bulk update is pending. Tried the way
/// the daemon does it, with a delta of 0.
pub(super) fn carp_step(report: &mut Report) {
    #[cfg(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd")))]
    {
        let current = if cfg!(target_os = "freebsd") {
            sysctl_int("net.inet.carp.demotion").map(|v| format!("net.inet.carp.demotion {v}"))
        } else {
            tool("ifconfig", &["-g", "carp"]).map(|t| t.trim().to_string())
        };
        report.push(match crate::sys::carp_demote(0) {
            Ok(()) => Step::ok(
                "carp demotion",
                format!("adjustable ({})", current.unwrap_or_else(|e| e)),
            ),
            Err(e) => Step::skip(
                "carp demotion",
                format!(
                    "no carp to demote ({e}): fine without carp; with carp, load it \
                     (FreeBSD: kldload carp) so a firewall out of sync is not elected master"
                ),
            ),
        });
    }
    #[cfg(not(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd"))))]
    report.push(Step::skip(
        "carp demotion",
        "no carp on this system: the daemon demotes nothing here",
    ));
}

/// The pfsync versions a FreeBSD kernel of `osreldate` speaks, oldest first:
/// `PFSYNC_MSG_VERSION_1301` and `_1400` from 14.0, `_1500` from 15.0 (the 15 header of
/// net/if_pfsync.h has all three). GUESS: the release each arrived in is not read from
/// the sources' history, nor whether 13.x got 1400 by a merge; a 13.x kernel is taken
/// to speak 1301 only.
pub fn freebsd_versions(osreldate: i64) -> &'static [Dialect] {
    if osreldate >= 1_500_000 {
        &[
            Dialect::FreeBsd1301,
            Dialect::FreeBsd1400,
            Dialect::FreeBsd1500,
        ]
    } else if osreldate >= 1_400_000 {
        &[Dialect::FreeBsd1301, Dialect::FreeBsd1400]
    } else {
        &[Dialect::FreeBsd1301]
    }
}

/// The configured version against what this kernel's pfsync speaks: a peer kernel of the
/// same release drops a version it does not know (FreeBSD counts it in `badver`).
pub(super) fn version_step(report: &mut Report, config: &SyncConfig, table: TableChoice) {
    let sending = config.dialect;
    if cfg!(target_os = "freebsd") {
        let versions = match sysctl_int("kern.osreldate") {
            Ok(v) => freebsd_versions(v),
            Err(e) => {
                report.push(Step::fail(
                    "version",
                    e,
                    "sysctl kern.osreldate must be readable",
                ));
                return;
            }
        };
        let names: Vec<&str> = versions.iter().map(|d| d.name()).collect();
        report.push(
            if sending == Dialect::OpenBsd || versions.contains(&sending) {
                Step::ok(
                    "version",
                    format!(
                        "sending {sending}; this kernel's pfsync speaks {}",
                        names.join(", ")
                    ),
                )
            } else {
                Step::fail(
                    "version",
                    format!(
                        "sending {sending}, which this kernel's pfsync does not speak ({})",
                        names.join(", ")
                    ),
                    format!(
                        "give `version {}` unless every peer is newer",
                        names.last().copied().unwrap_or("1301")
                    ),
                )
            },
        );
    } else if cfg!(target_os = "openbsd") {
        report.push(Step::ok(
            "version",
            format!("sending {sending}; OpenBSD's kernel pfsync speaks openbsd (header version 6)"),
        ));
    } else {
        let _ = table;
        report.push(Step::skip(
            "version",
            format!("sending {sending}; no kernel pfsync here to compare with"),
        ));
    }
}

/// What `pfctl -s info` says: running, and how many states.
#[cfg_attr(target_os = "linux", allow(dead_code))]
pub(super) struct PfInfo {
    /// `Status: Enabled`.
    pub(super) enabled: bool,
    /// The state table's `current entries`.
    pub(super) states: Option<u64>,
}

#[cfg_attr(target_os = "linux", allow(dead_code))]
pub(super) fn pf_info(text: &str) -> PfInfo {
    let enabled = text
        .lines()
        .any(|l| l.trim_start().starts_with("Status: Enabled"));
    let states = text.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix("current entries")?;
        rest.trim().parse().ok()
    });
    PfInfo { enabled, states }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pfctl_info_is_read() {
        let text = "Status: Enabled for 0 days 00:01:02           Debug: Urgent\n\n\
                    State Table                          Total             Rate\n  \
                    current entries                        3               \n  \
                    searches                             120            1.9/s\n";
        let i = pf_info(text);
        assert!(i.enabled);
        assert_eq!(i.states, Some(3));
        assert!(!pf_info("Status: Disabled for 0 days").enabled);
    }
}
