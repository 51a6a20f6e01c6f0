//! Running the daemon: options as flags, the sync configuration in `ifconfig pfsync0`
//! words after them.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use pfsyncd::daemon::control::DEFAULT_SOCKET;
use pfsyncd::daemon::log::{self, Level};
use pfsyncd::daemon::privsep::{DEFAULT_CHROOT, DEFAULT_USER};
use pfsyncd::daemon::{load_config, run, Options, TableChoice};

use super::EX_USAGE;

/// The daemon's own options (the words come separately).
#[derive(Debug, clap::Args)]
pub struct DaemonArgs {
    /// Stay in the foreground and log to standard error (otherwise: detach once
    /// started, log to syslog, and write the pidfile).
    #[arg(short = 'd')]
    pub foreground: bool,
    /// A file of `ifconfig pfsync0` words (`#` comments), read at start and on SIGHUP;
    /// words on the command line apply after it.
    #[arg(short = 'f', value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Path of the control socket.
    #[arg(short = 'c', value_name = "CONTROL_SOCKET", default_value = DEFAULT_SOCKET)]
    pub control: PathBuf,
    /// State table: pf (the default where /dev/pf exists) or memory.
    #[arg(long, value_name = "pf|memory")]
    pub table: Option<String>,
    /// Our creator id in hex (default: pf's hostid with the pf table, else random).
    #[arg(long, value_name = "HEX")]
    pub creatorid: Option<String>,
    /// The pidfile, locked while the daemon runs (default when detaching:
    /// /var/run/pfsyncd.pid).
    #[arg(long, value_name = "PATH")]
    pub pidfile: Option<PathBuf>,
    /// error, warn, info (default) or debug.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// How often the state table is asked for its changes, in milliseconds (default:
    /// 100 for the memory table, 1000 for pf, whose every poll lists all states).
    #[arg(long, value_name = "MS")]
    pub interval: Option<u64>,
    /// Packets per second of a bulk update we send. By default, the pace of the
    /// configured version's kernel: 50 for OpenBSD (one per 20 ms), 1000 for FreeBSD
    /// (one per tick). A cluster of pfsyncd only can go much faster (a receiving
    /// pfsyncd imports 100 000 states/s without loss).
    #[arg(long, value_name = "PPS")]
    pub bulk_pps: Option<u32>,
    /// Memory table: refuse (and count as unknown_interface) a peer's state bound to an
    /// interface this system does not have, as the pf table always does. Off by default,
    /// so that a replica holds states of interfaces it lacks.
    #[arg(long)]
    pub check_interfaces: bool,
    /// The unprivileged user the engine process (the part that parses what peers send)
    /// runs as.
    #[arg(long, value_name = "USER", default_value = DEFAULT_USER)]
    pub user: String,
    /// The empty, root-owned directory the engine process is chrooted to.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CHROOT)]
    pub chroot: PathBuf,
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("pfsyncd: {msg}");
    ExitCode::from(EX_USAGE)
}

/// Validates and runs.
pub fn run_daemon(args: &DaemonArgs, words: &[String]) -> anyhow::Result<ExitCode> {
    if words.is_empty() && args.config_file.is_none() {
        return Ok(usage(
            "no sync configuration: give the words of ifconfig pfsync0 (e.g. `syncdev em1 up`) or -f FILE; see --help",
        ));
    }
    let options = match options_of(args, words)? {
        Ok(options) => options,
        Err(code) => return Ok(code),
    };
    // Bad words, on the command line or in the file, are a usage error (64); a file
    // that cannot be read is a plain failure.
    if let Err(e) = load_config(&options) {
        if e.downcast_ref::<pfsyncd::daemon::ConfigError>().is_some() {
            return Ok(usage(format!("{e:#}")));
        }
        return Err(e);
    }
    run(options)?;
    Ok(ExitCode::SUCCESS)
}

/// The daemon's options from the command line; a usage error is the exit status to
/// leave with, already reported.
pub(super) fn options_of(
    args: &DaemonArgs,
    words: &[String],
) -> anyhow::Result<Result<Options, ExitCode>> {
    let table = match args.table.as_deref() {
        Some("memory") => TableChoice::Memory,
        Some("pf") => TableChoice::Pf,
        Some(other) => {
            return Ok(Err(usage(format!(
                "--table '{other}': expected pf or memory"
            ))))
        }
        // pf where there is one, as a firewall daemon is meant to run.
        None if Path::new("/dev/pf").exists() => TableChoice::Pf,
        None => TableChoice::Memory,
    };
    if let Some(level) = &args.log_level {
        match level.parse::<Level>() {
            Ok(level) => log::set_level(level),
            Err(e) => return Ok(Err(usage(format!("--log-level: {e}")))),
        }
    }
    let interval = args.interval.unwrap_or(match table {
        TableChoice::Pf => 1000,
        TableChoice::Memory => 100,
    });
    if !(10..=60_000).contains(&interval) {
        return Ok(Err(usage(format!(
            "--interval {interval}: expected 10 to 60000 milliseconds"
        ))));
    }
    if args.bulk_pps == Some(0) {
        return Ok(Err(usage(
            "--bulk-pps 0: expected at least 1 packet per second",
        )));
    }
    let creatorid = match &args.creatorid {
        Some(hex) => {
            let h = hex.trim_start_matches("0x");
            match u32::from_str_radix(h, 16) {
                Ok(id) if id != 0 => id,
                _ => {
                    return Ok(Err(usage(format!(
                        "--creatorid '{hex}': expected a non-zero hex number of up to 8 digits"
                    ))))
                }
            }
        }
        None => random_creatorid().context("/dev/urandom")?,
    };
    let pidfile = match (&args.pidfile, args.foreground) {
        (Some(p), _) => Some(absolute(p)?),
        (None, false) => Some(PathBuf::from(DEFAULT_PIDFILE)),
        (None, true) => None,
    };
    Ok(Ok(Options {
        words: words.to_vec(),
        // Absolute: a detached daemon works from /.
        config_file: args.config_file.as_deref().map(absolute).transpose()?,
        control: absolute(&args.control)?,
        detach: !args.foreground,
        pidfile,
        creatorid,
        creatorid_given: args.creatorid.is_some(),
        table,
        table_interval: std::time::Duration::from_millis(interval),
        bulk_pps: args.bulk_pps,
        check_interfaces: args.check_interfaces,
        user: args.user.clone(),
        chroot: absolute(&args.chroot)?,
    }))
}

/// Where the pidfile goes when detaching without --pidfile.
const DEFAULT_PIDFILE: &str = "/var/run/pfsyncd.pid";

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("{}", p.display()))
}

fn random_creatorid() -> std::io::Result<u32> {
    let mut f = File::open("/dev/urandom")?;
    loop {
        let mut b = [0u8; 4];
        f.read_exact(&mut b)?;
        let id = u32::from_le_bytes(b);
        if id != 0 {
            return Ok(id);
        }
    }
}
