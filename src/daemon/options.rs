//! What the command line gives the daemon, and the configuration it reads from them:
//! read by the start, by the parent on SIGHUP and by the engine process (its creator id
//! and pace), and by `pfsyncd check`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::config::SyncConfig;

/// Which state table the daemon keeps in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableChoice {
    /// The in-memory table: a full cluster member without pf (a replica, a monitor, the
    /// lab).
    Memory,
    /// pf, through /dev/pf (FreeBSD, OpenBSD).
    Pf,
}

/// What the command line gives the daemon.
#[derive(Debug, Clone)]
pub struct Options {
    /// `ifconfig pfsync0` words from the command line, applied after the file's.
    pub words: Vec<String>,
    /// A file of `ifconfig pfsync0` words (`#` starts a comment), re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// Path of the control socket.
    pub control: PathBuf,
    /// Our creator id: `--creatorid`, else random; with pf and no `--creatorid`,
    /// [`super::run`] replaces it with pf's hostid.
    pub creatorid: u32,
    /// `creatorid` came from `--creatorid`.
    pub creatorid_given: bool,
    /// The state table.
    pub table: TableChoice,
    /// How often the table is asked for its changes.
    pub table_interval: Duration,
    /// Packets per second of a bulk update we send; `None`: the pace of the dialect's
    /// kernel.
    pub bulk_pps: Option<u32>,
    /// The memory table refuses peer states on interfaces this system lacks (pf always
    /// does).
    pub check_interfaces: bool,
    /// Detach from the terminal and log to syslog once started.
    pub detach: bool,
    /// The pidfile, locked for the daemon's life.
    pub pidfile: Option<PathBuf>,
    /// The unprivileged user of the engine process.
    pub user: String,
    /// The empty directory the engine process is chrooted to.
    pub chroot: PathBuf,
}

/// Reads the configuration: defaults, then the file's words, then the command line's.
pub fn load_config(options: &Options) -> anyhow::Result<SyncConfig> {
    let mut config = SyncConfig::default();
    if let Some(path) = &options.config_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("configuration file {}", path.display()))?;
        let words: Vec<&str> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(str::split_whitespace)
            .collect();
        config
            .apply(&words)
            .with_context(|| format!("configuration file {}", path.display()))?;
    }
    config.apply(&options.words)?;
    Ok(config)
}
