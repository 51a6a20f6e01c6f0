//! Starting the daemon: the configuration, the pidfile, the sync link, the control
//! socket and the table are opened as root, everything that can fail is tried before
//! detaching, then the daemon splits into the privileged parent ([`super::parent`]) and
//! the unprivileged engine process ([`super::engine_process`]); see
//! [`super::privsep`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{SigSet, Signal};

use super::control::ControlSocket;
use super::detach::StartReport;
use super::engine_process::EngineProcess;
use super::parent::Parent;
use super::pidfile::Pidfile;
use super::privsep::{self, Sandbox};
use super::table::Table;
use super::SyncConfig;
use crate::engine::LinkSettings;
use crate::net::{Family, Interface, Sender, SyncInput, SyncReceiver, Transport};
use crate::sys::process::Forked;
use crate::table::{InterfaceCheck, MemoryConfig, MemoryTable};
use crate::{log_error, log_info};

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
    /// Our creator id: `--creatorid`, else random; with pf and no `--creatorid`, [`run`]
    /// replaces it with pf's hostid.
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

/// The sync link while the interface is up.
pub(super) struct Link {
    pub(super) sender: Sender,
    pub(super) input: SyncInput<Box<dyn SyncReceiver>>,
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

pub(super) fn open_link(config: &SyncConfig) -> anyhow::Result<Option<Link>> {
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

/// Blocks SIGTERM, SIGINT and SIGHUP, before any thread starts and before the fork, so
/// every thread and the engine process inherit the mask: the engine process never
/// takes them (a Ctrl-C reaches the whole process group, and the parent decides how
/// the engine stops).
fn block_signals() -> anyhow::Result<SigSet> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().context("blocking signals")?;
    Ok(mask)
}

/// The blocked signals, as bytes on a stream the parent's loop polls: one thread takes
/// them with `sigwait(2)`, which works the same on Linux and the BSDs and needs no
/// handler.
fn signal_stream(mask: SigSet) -> anyhow::Result<UnixStream> {
    let (read, mut write) = UnixStream::pair().context("socketpair")?;
    read.set_nonblocking(true).context("socketpair")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            while let Ok(signal) = mask.wait() {
                if write.write_all(&[signal as i32 as u8]).is_err() {
                    return;
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(read)
}

/// Adds the likely cure to a permission error.
fn need_root(e: anyhow::Error) -> anyhow::Error {
    if e.to_string().contains("Operation not permitted") {
        e.context("pfsyncd needs root for raw IP sockets")
    } else {
        e
    }
}

/// 32 bytes from the OS's random source.
pub fn random_bytes() -> io::Result<[u8; 32]> {
    let mut b = [0u8; 32];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

pub(super) fn link_settings(config: &SyncConfig) -> LinkSettings {
    let syncpeer = config
        .syncpeers
        .first()
        .copied()
        .unwrap_or_else(|| Family::V4.group());
    LinkSettings {
        dialect: config.dialect,
        mtu: config.mtu as usize,
        ip_header_len: if syncpeer.is_ipv6() { 40 } else { 20 },
        maxupd: config.maxupd,
        syncpeer,
    }
}

/// Runs the daemon until SIGTERM or SIGINT (the parent), or until the parent says so
/// (the engine process, which exits here and never returns).
pub fn run(mut options: Options) -> anyhow::Result<()> {
    let config = load_config(&options)?;
    #[cfg(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd")))]
    if options.table == TableChoice::Pf {
        super::kernel_start::check_kernel_pfsync()?;
    }
    // Everything that can fail at start is done before detaching, so the admin sees the
    // one line saying why and the exit status.
    let sandbox = Sandbox::lookup(&options.user, &options.chroot)?;
    let mut pidfile = options.pidfile.as_deref().map(Pidfile::lock).transpose()?;
    let link = open_link(&config)?;
    let control = ControlSocket::bind(&options.control)
        .with_context(|| format!("control socket {}", options.control.display()))?;
    let mut table = open_table(&options)?;
    let (creatorid, source) = super::kernel_start::choose_creatorid(
        options.creatorid_given.then_some(options.creatorid),
        options.creatorid,
        &mut table,
    );
    options.creatorid = creatorid;
    let pf_describe = table.pf().map(|pf| pf.describe());
    let random = random_bytes().context("/dev/urandom")?;
    let start = if options.detach {
        // Before any thread exists: fork(2) keeps only the calling thread.
        let start = super::detach::detach()?;
        super::log::use_syslog();
        start
    } else {
        StartReport::foreground()
    };
    if let Some(p) = &mut pidfile {
        p.write_pid()?;
    }
    // After detaching: a detached start says nothing on the terminal unless it fails.
    log_info!("creator id {creatorid:08x} ({})", source.as_str());
    if let Some(how) = pf_describe {
        log_info!("pf: {how}");
    }
    let mask = block_signals()?;
    let (parent_end, engine_end) = privsep::channel::pair().context("socketpair")?;
    let (parent_requests, engine_requests) = privsep::channel::pair().context("socketpair")?;
    let (listener, socket_file) = control.into_parts();
    let link_open = link.is_some();
    match crate::sys::process::fork().context("starting the engine process")? {
        Forked::Child => {
            // Nothing privileged goes along: the table (and /dev/pf), the link's
            // sockets, the pidfile and the parent's end are closed here; the socket
            // file stays the parent's to remove.
            super::log::use_queue();
            drop((table, link, parent_end, parent_requests, listener, start));
            socket_file.disarm();
            // Not dropped: dropping unlocks, and the lock belongs to the open file both
            // processes share, so the parent would lose it. Its descriptor goes with
            // the other inherited ones just below, which leaves the lock alone.
            std::mem::forget(pidfile);
            {
                use std::os::fd::AsFd;
                crate::sys::process::close_inherited(&[
                    engine_end.as_fd(),
                    engine_requests.as_fd(),
                ]);
            }
            // Detached, the engine process never holds the terminal; it has no more
            // to say there (its lines go through the parent).
            if options.detach {
                let _ = super::detach::quiet_stdio();
            }
            let code = match sandbox.enter() {
                Ok(()) => {
                    privsep::sandbox::title_engine();
                    log_info!(
                        "engine process {} runs as {} in {}",
                        std::process::id(),
                        sandbox.user,
                        sandbox.dir.display()
                    );
                    let engine = EngineProcess::new(
                        options,
                        config,
                        engine_end,
                        engine_requests,
                        sandbox,
                        random,
                        link_open,
                    );
                    engine.run()
                }
                Err(e) => {
                    log_error!("{e}");
                    EngineProcess::say_goodbye(engine_end);
                    1
                }
            };
            std::process::exit(code);
        }
        Forked::Parent { child } => {
            drop((engine_end, engine_requests));
            #[cfg(target_os = "openbsd")]
            privsep::sandbox::unveil_parent(
                options.config_file.as_deref(),
                options.pidfile.as_deref(),
                socket_file.path(),
            )
            .context("unveil")?;
            let signals = signal_stream(mask)?;
            let word =
                |at: usize| u64::from_le_bytes(random[at..at + 8].try_into().expect("8 bytes"));
            let parent = Parent::new(
                options,
                config,
                table,
                link,
                parent_end,
                parent_requests,
                child,
                listener,
                socket_file,
                pidfile,
                signals,
                start,
                word(4),
                [word(16), word(24)],
            );
            parent.run()
        }
    }
}

/// The table the daemon keeps in sync, opened as root.
fn open_table(options: &Options) -> anyhow::Result<Table> {
    Ok(match options.table {
        TableChoice::Pf => super::table::open_pf()?,
        TableChoice::Memory => {
            let mut mc = MemoryConfig::new(options.creatorid);
            // Ids count up from the start time, as FreeBSD seeds its state ids: a
            // restarted daemon does not reuse the ids its peers still hold.
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs());
            mc.first_id = secs << 32;
            if options.check_interfaces {
                mc.interfaces = InterfaceCheck::System;
            }
            Table::Memory(Box::new(MemoryTable::new(mc)))
        }
    })
}
