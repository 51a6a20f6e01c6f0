//! Starting the daemon, above both processes: the configuration, the pidfile, the sync
//! link, the control socket and the table are opened as root, everything that can fail
//! is tried before detaching, then the daemon forks into the privileged parent
//! ([`super::parent`]) and the confined engine process ([`super::engine`]); see
//! [`super::privsep`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};

use super::engine::process::EngineProcess;
use super::engine::secure::SecureSide;
use super::link::open_link;
use super::options::{load_config, Options, TableChoice};
use super::parent::control_socket::ControlSocket;
use super::parent::detach::{self, StartReport};
use super::parent::kernel_start;
use super::parent::pidfile::Pidfile;
use super::parent::process::Parent;
use super::parent::secure::SecureSockets;
use super::parent::table::{open_pf, Table};
use super::privsep::{self, Sandbox};
use crate::metrics::textfile::check_writable;
use crate::metrics::MetricsServer;
use crate::sys::process::Forked;
use crate::table::{InterfaceCheck, MemoryConfig, MemoryTable};
use crate::{log_error, log_info, log_warn};

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

/// 32 bytes from the OS's random source.
pub fn random_bytes() -> io::Result<[u8; 32]> {
    let mut b = [0u8; 32];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

/// Runs the daemon until SIGTERM or SIGINT (the parent), or until the parent says so
/// (the engine process, which exits here and never returns).
pub fn run(mut options: Options) -> anyhow::Result<()> {
    let config = load_config(&options)?;
    // The secure link's key files are checked first, so a key others can read is the
    // one line the admin sees.
    let secure_keys = super::parent::secure::load_secure_keys(&config.secure)?;
    #[cfg(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd")))]
    if options.table == TableChoice::Pf {
        kernel_start::check_kernel_pfsync()?;
    }
    // Everything that can fail at start is done before detaching, so the admin sees the
    // one line saying why and the exit status.
    let sandbox = Sandbox::lookup(&options.user, &options.chroot)?;
    let mut pidfile = options.pidfile.as_deref().map(Pidfile::lock).transpose()?;
    let link = open_link(&config)?;
    let secure = match secure_keys {
        None => None,
        Some(keys) => {
            let inner_addr = super::parent::secure::our_inner_addr(&config)?;
            let sockets = SecureSockets::open(&config.secure)
                .with_context(|| format!("secureport {}", config.secure.port))?;
            Some((keys, inner_addr, sockets))
        }
    };
    let (secure_keys, secure_sockets) = match secure {
        None => (None, None),
        Some((keys, inner_addr, sockets)) => (Some((keys, inner_addr)), Some(sockets)),
    };
    let metrics_server = open_metrics(&options)?;
    let control = ControlSocket::bind(&options.control)
        .with_context(|| format!("control socket {}", options.control.display()))?;
    let mut table = open_table(&options)?;
    let (creatorid, source) = kernel_start::choose_creatorid(
        options.creatorid_given.then_some(options.creatorid),
        options.creatorid,
        &mut table,
    );
    options.creatorid = creatorid;
    let pf_describe = table.pf().map(|pf| pf.describe());
    let random = random_bytes().context("/dev/urandom")?;
    let start = if options.detach {
        // Before any thread exists: fork(2) keeps only the calling thread.
        let start = detach::detach()?;
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
    // Both processes stamp the sync path's hops against one base (daemon::latency).
    super::latency::start_clock();
    match crate::sys::process::fork().context("starting the engine process")? {
        Forked::Child => {
            // Nothing privileged goes along: the table (and /dev/pf), the link's
            // sockets, the pidfile and the parent's end are closed here; the socket
            // file stays the parent's to remove.
            super::log::use_queue();
            drop((
                table,
                link,
                secure_sockets,
                parent_end,
                parent_requests,
                listener,
                start,
                metrics_server,
            ));
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
                let _ = detach::quiet_stdio();
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
                        secure_keys.map(|(keys, inner_addr)| {
                            SecureSide::start(keys.private_key, inner_addr, keys.peers)
                        }),
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
            // The keys are the engine process's alone from here.
            drop((engine_end, engine_requests, secure_keys));
            #[cfg(target_os = "openbsd")]
            privsep::sandbox::unveil_parent(
                options.config_file.as_deref(),
                options.pidfile.as_deref(),
                socket_file.path(),
                options
                    .metrics_file
                    .as_deref()
                    .and_then(std::path::Path::parent),
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
                secure_sockets,
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
                metrics_server,
            );
            parent.run()
        }
    }
}

/// The metrics endpoint's listener, bound as root before the privilege drop (a port
/// below 1024 needs it), and a first try of the metrics file's directory, so that both
/// fail at start, not later.
fn open_metrics(options: &Options) -> anyhow::Result<Option<MetricsServer>> {
    if let Some(path) = &options.metrics_file {
        check_writable(path)?;
    }
    let Some(addr) = options.metrics_listen else {
        return Ok(None);
    };
    let server = MetricsServer::bind(addr).with_context(|| format!("--metrics-listen {addr}"))?;
    if addr.ip().is_unspecified() {
        log_warn!(
            "metrics served on every address (--metrics-listen {addr}): whoever reaches port {} reads them",
            addr.port()
        );
    }
    Ok(Some(server))
}

/// The table the daemon keeps in sync, opened as root.
fn open_table(options: &Options) -> anyhow::Result<Table> {
    Ok(match options.table {
        TableChoice::Pf => open_pf()?,
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
