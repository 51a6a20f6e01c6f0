//! `pfsyncd check`: a first diagnosis of a machine before the daemon runs on it, in the
//! spirit of `sshd -t` and `pfctl -n`. Every kernel interaction the daemon will need is
//! tried once, the way the daemon does it, and reported as one [`Step`]: `ok`, `FAIL`
//! with the remedy, or `skip` where it does not apply on this OS.
//!
//! Nothing here changes the system, except `--import-test`, which adds one state on
//! TEST-NET addresses and kills it again ([`import`]).

pub mod import;
#[cfg(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd")))]
mod pf;
pub mod report;
mod system;

use std::path::Path;

use crate::daemon::privsep::sandbox::{check_chroot, check_user};
use crate::daemon::privsep::SandboxError;
use crate::daemon::{load_config, Options, SyncConfig, TableChoice};
use crate::table::{MemoryConfig, MemoryTable};

pub use report::{Report, Status, Step};

/// What `pfsyncd check` is given: the daemon's own configuration.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// The daemon's options (configuration file, words, table, user, chroot).
    pub daemon: Options,
    /// Also import one test state, read it back and kill it.
    pub import_test: bool,
}

/// Tries every step and reports each.
pub fn run(options: &CheckOptions) -> Report {
    let mut report = Report::default();
    let root = nix::unistd::Uid::effective().is_root();
    report.push(if root {
        Step::ok("root", "running as root")
    } else {
        Step::fail(
            "root",
            "not running as root: /dev/pf, bpf and raw sockets need it",
            "run pfsyncd check as root",
        )
    });
    let config = config_step(&mut report, &options.daemon);
    sandbox_steps(&mut report, &options.daemon.user, &options.daemon.chroot);
    if let Some(config) = &config {
        link_steps(&mut report, config);
    }
    let ifname = config
        .as_ref()
        .and_then(|c| c.syncdev)
        .map(|n| n.to_string());
    match options.daemon.table {
        TableChoice::Memory => {
            report.push(Step::ok(
                "state table",
                "the memory table (no kernel state table is touched)",
            ));
            if options.import_test {
                let mut table = MemoryTable::new(MemoryConfig::new(options.daemon.creatorid));
                report.push(import::import_test(
                    &mut table,
                    None,
                    ifname.as_deref().unwrap_or("lo"),
                ));
            }
        }
        TableChoice::Pf => pf_steps(&mut report, options, ifname.as_deref()),
    }
    system::carp_step(&mut report);
    if let Some(config) = &config {
        system::version_step(&mut report, config, options.daemon.table);
    }
    report
}

fn config_step(report: &mut Report, options: &Options) -> Option<SyncConfig> {
    match load_config(options) {
        Ok(config) => {
            let syncdev = config
                .syncdev
                .map_or_else(|| "no syncdev".to_string(), |d| format!("syncdev {d}"));
            report.push(Step::ok(
                "configuration",
                format!(
                    "{syncdev}, version {}, maxupd {}, {}",
                    config.dialect,
                    config.maxupd,
                    if config.up { "up" } else { "down" }
                ),
            ));
            Some(config)
        }
        Err(e) => {
            report.push(Step::fail(
                "configuration",
                format!("{e:#}"),
                "fix the words (see pfsyncd(8), the words of ifconfig pfsync0)",
            ));
            None
        }
    }
}

fn sandbox_steps(report: &mut Report, user: &str, chroot: &Path) {
    report.push(match check_user(user) {
        Ok((uid, _)) => Step::ok("engine user", format!("{user} (uid {uid}), not root")),
        Err(e @ SandboxError::RootUser(_)) => Step::fail(
            "engine user",
            e.to_string(),
            "name an unprivileged user with --user (the default is _pfsyncd)",
        ),
        Err(e) => Step::fail(
            "engine user",
            e.to_string(),
            format!("create the unprivileged user {user}, or name another with --user"),
        ),
    });
    report.push(match check_chroot(chroot) {
        Ok(()) => Step::ok(
            "chroot",
            format!(
                "{} is root-owned and not writable by group or others",
                chroot.display()
            ),
        ),
        Err(e) => Step::fail(
            "chroot",
            e.to_string(),
            format!(
                "chown root {0} && chmod 755 {0}, or name another with --chroot",
                chroot.display()
            ),
        ),
    });
}

fn link_steps(report: &mut Report, config: &SyncConfig) {
    if !config.up {
        report.push(Step::skip(
            "sync link",
            "the configuration has sync down: no link is opened",
        ));
        return;
    }
    let Some(dev) = config.syncdev else {
        if config.secure_only() {
            report.push(Step::ok(
                "sync link",
                "no syncdev: every peer is a secure peer, no plain link is opened",
            ));
            return;
        }
        report.push(Step::fail(
            "syncdev",
            "sync is up but no syncdev is configured",
            "give `syncdev IF`, the interface facing the peers (or secure peers only)",
        ));
        return;
    };
    let name = dev.to_string();
    match crate::net::Interface::lookup(&name) {
        Ok(i) => {
            let addrs: Vec<String> = i.addrs.iter().map(ToString::to_string).collect();
            report.push(Step::ok(
                "syncdev",
                format!("{name} is up (index {}, {})", i.index, addrs.join(" ")),
            ));
        }
        Err(e) => {
            report.push(Step::fail(
                "syncdev",
                e.to_string(),
                format!("name an existing interface that is up (ifconfig {name} up)"),
            ));
            return;
        }
    }
    report.push(match crate::daemon::link::probe_link(config) {
        Ok(Some(what)) => Step::ok("receiver", what),
        Ok(None) => Step::skip("receiver", "sync is down"),
        Err(e) => Step::fail(
            "receiver",
            format!("{e:#}"),
            "run as root; on the BSDs bpf(4) must be in the kernel (it is in GENERIC)",
        ),
    });
}

#[cfg(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd")))]
fn pf_steps(report: &mut Report, options: &CheckOptions, ifname: Option<&str>) {
    pf::steps(report, options.import_test, ifname);
}

#[cfg(not(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd"))))]
fn pf_steps(report: &mut Report, _options: &CheckOptions, _ifname: Option<&str>) {
    report.push(Step::fail(
        "/dev/pf",
        "this build has no pf (FreeBSD and OpenBSD only)",
        "use --table memory here",
    ));
}
