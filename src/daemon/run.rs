//! The event loop: one thread, `poll(2)` over the signal fd, the control socket and the
//! sync receiver, with the engine's next deadline and the table's poll interval as the
//! timeout. The clock is read here, never in the engine.
//!
//! Per turn: signals; up to [`RECEIVE_BATCH`] packets into the engine (each followed by
//! the table operations and packets it caused, so an update request is answered before
//! the next packet is read); the table's own changes; due timers; control requests.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};

use super::carp::Demotion;
use super::churn::Churn;
use super::control::{respond, ControlSocket};
use super::peers::Peers;
use super::pidfile::Pidfile;
use super::requests;
use super::table::Table;
use super::SyncConfig;
use crate::engine::{Config, Engine, Event, LinkSettings, LocalChange, TableOp};
use crate::net::{Family, Interface, Sender, SyncInput, SyncReceiver, Transport, RECV_BUFFER_LEN};
use crate::table::synth::Synth;
use crate::table::{MemoryConfig, MemoryTable, TableStats};
use crate::{log_error, log_info, log_warn};

/// Most packets read per turn of the loop, so timers and the control socket are served
/// during a bulk update.
pub const RECEIVE_BATCH: usize = 256;
/// A peer silent this long is logged as gone quiet (pfsync sends at least every second
/// while states change, but an idle firewall sends nothing: this is informational).
const PEER_QUIET: Duration = Duration::from_secs(60);
/// How often failed table operations are summarised in the log.
const FAILURE_SUMMARY: Duration = Duration::from_secs(10);

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
    /// Our creator id (pf's hostid).
    pub creatorid: u32,
    /// The state table.
    pub table: TableChoice,
    /// How often the table is asked for its changes.
    pub table_interval: Duration,
    /// Packets per second of a bulk update we send (the kernels send one per tick).
    pub bulk_pps: u32,
    /// Detach from the terminal and log to syslog once started.
    pub detach: bool,
    /// The pidfile, locked for the daemon's life.
    pub pidfile: Option<PathBuf>,
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
struct Link {
    sender: Sender,
    input: SyncInput<Box<dyn SyncReceiver>>,
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
    _transport: &Transport,
    syncdev: &Interface,
) -> anyhow::Result<Box<dyn SyncReceiver>> {
    let receiver =
        crate::net::bpf::BpfReceiver::open(syncdev).map_err(|e| need_root(anyhow!("{e}")))?;
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

fn open_link(config: &SyncConfig) -> anyhow::Result<Option<Link>> {
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

/// SIGTERM, SIGINT and SIGHUP, as bytes on a stream the loop polls: the signals are
/// blocked in every thread and taken by one thread with `sigwait(2)`, which works the
/// same on Linux and the BSDs and needs no handler.
fn signal_stream() -> anyhow::Result<UnixStream> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(s);
    }
    // Before any thread starts, so every thread inherits the mask.
    mask.thread_block().context("blocking signals")?;
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

fn link_settings(config: &SyncConfig) -> LinkSettings {
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

/// The daemon's state between turns of the loop.
pub(super) struct Daemon {
    pub(super) options: Options,
    pub(super) config: SyncConfig,
    pub(super) engine: Engine,
    pub(super) table: Table,
    pub(super) table_stats: TableStats,
    link: Option<Link>,
    pub(super) synth: Synth,
    pub(super) peers: Peers,
    pub(super) churn: Churn,
    carp: Demotion,
    carp_broken: bool,
    changes: Vec<LocalChange>,
    next_table_poll: Instant,
    last_housekeeping: Instant,
    reported_failures: u64,
    last_failure_summary: Instant,
    syncok: bool,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(options: Options) -> anyhow::Result<()> {
    let config = load_config(&options)?;
    // Everything that can fail at start is done before detaching, so the admin sees the
    // one line saying why and the exit status.
    let mut pidfile = options.pidfile.as_deref().map(Pidfile::lock).transpose()?;
    let link = open_link(&config)?;
    let control = ControlSocket::bind(&options.control)
        .with_context(|| format!("control socket {}", options.control.display()))?;
    if options.detach {
        // Before any thread exists: fork(2) keeps only the calling thread.
        nix::unistd::daemon(false, false).context("detaching")?;
        super::log::use_syslog();
    }
    if let Some(p) = &mut pidfile {
        p.write_pid()?;
    }
    let signals = signal_stream()?;

    let random = random_bytes().context("/dev/urandom")?;
    let mut ec = Config::random(config.dialect, random);
    ec.creatorid = options.creatorid;
    let link_cfg = link_settings(&config);
    ec.maxupd = link_cfg.maxupd;
    ec.mtu = link_cfg.mtu;
    ec.ip_header_len = link_cfg.ip_header_len;
    ec.syncpeer = link_cfg.syncpeer;
    // Bursts every millisecond; the kernels' one packet per tick would take minutes for
    // a million states.
    ec.bulk_interval = Duration::from_millis(1);
    ec.bulk_burst = (options.bulk_pps as usize / 1000).max(1);
    let mut engine = Engine::new(ec);
    let table = match options.table {
        TableChoice::Pf => super::table::open_pf()?,
        TableChoice::Memory => {
            let mut mc = MemoryConfig::new(options.creatorid);
            // Ids count up from the start time, as FreeBSD seeds its state ids: a
            // restarted daemon does not reuse the ids its peers still hold.
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs());
            mc.first_id = secs << 32;
            Table::Memory(Box::new(MemoryTable::new(mc)))
        }
    };
    let seed = u64::from_le_bytes(random[4..12].try_into().expect("8 bytes"));
    let now = Instant::now();
    if link.is_some() {
        // As a pfsync interface coming up: ask the peers for everything they have.
        engine.request_bulk(now);
    }
    let mut d = Daemon {
        synth: Synth::new(seed, options.creatorid),
        options,
        config,
        table,
        table_stats: TableStats::default(),
        link,
        peers: Peers::default(),
        churn: Churn::default(),
        carp: Demotion::system(),
        carp_broken: false,
        changes: Vec::new(),
        next_table_poll: now,
        last_housekeeping: now,
        reported_failures: 0,
        last_failure_summary: now,
        syncok: false,
        engine,
    };
    log_info!(
        "started: creatorid {:08x}, {} table, control socket {}, {}",
        d.options.creatorid,
        d.table.name(),
        d.options.control.display(),
        d.config.to_words().join(" ")
    );
    if d.link.is_none() {
        log_info!("pfsync is down: nothing is sent or received until `up`");
    }
    let mut buf = vec![0u8; RECV_BUFFER_LEN];
    loop {
        let now = Instant::now();
        let wait = [
            d.engine.poll_timeout(),
            Some(d.next_table_poll),
            d.churn.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
        .min(Duration::from_secs(1));
        // Round up, so a deadline 0.4 ms away is not a busy loop of 0 ms waits.
        let ms = u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
        {
            let mut fds = vec![
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(control.listener().as_fd(), PollFlags::POLLIN),
            ];
            if let Some(link) = &d.link {
                fds.push(PollFd::new(link.input.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(anyhow!("poll: {e}")),
            }
        }
        let mut caught = [0u8; 16];
        let n = match (&signals).read(&mut caught) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(anyhow!("signal thread: {e}")),
        };
        for &signo in &caught[..n] {
            match Signal::try_from(i32::from(signo)) {
                Ok(Signal::SIGHUP) => d.reload(Instant::now()),
                Ok(s) => {
                    d.shutdown(Instant::now(), s);
                    return Ok(());
                }
                Err(_) => {}
            }
        }
        let now = Instant::now();
        d.receive(now, &mut buf);
        d.step(now, false);
        loop {
            let client = match control.accept() {
                Ok(Some(client)) => client,
                Ok(None) => break,
                Err(e) => {
                    log_warn!("control socket: {e}");
                    break;
                }
            };
            let (stream, line) = client;
            let now = Instant::now();
            let text = requests::handle(&mut d, now, &line);
            // What the request changed goes out before the answer, so a client that
            // inserts states and then asks a peer finds them on their way.
            d.step(now, true);
            respond(stream, &text);
        }
    }
}

impl Daemon {
    /// SIGHUP: reads the configuration again and applies it, keeping the cache and the
    /// table. A configuration that does not parse or a link that does not open leaves
    /// the daemon as it was.
    fn reload(&mut self, now: Instant) {
        let config = match load_config(&self.options) {
            Ok(c) => c,
            Err(e) => {
                log_error!("SIGHUP: {e:#}; keeping the running configuration");
                return;
            }
        };
        if config == self.config {
            log_info!("SIGHUP: configuration unchanged");
            return;
        }
        let link_changed = (config.up, config.syncdev, &config.syncpeers)
            != (self.config.up, self.config.syncdev, &self.config.syncpeers);
        if link_changed {
            let link = match open_link(&config) {
                Ok(l) => l,
                Err(e) => {
                    log_error!("SIGHUP: {e:#}; keeping the running configuration");
                    return;
                }
            };
            // What is queued leaves on the old link.
            self.engine.flush(now);
            self.transmit();
            self.link = link;
        }
        self.engine.reconfigure(now, link_settings(&config));
        self.config = config;
        log_info!("SIGHUP: now {}", self.config.to_words().join(" "));
        // A link that comes up (or moves) is synced from scratch, as an interface that
        // comes up asks for a bulk update.
        if link_changed && self.link.is_some() {
            self.engine.request_bulk(now);
            self.transmit();
        }
    }

    fn shutdown(&mut self, now: Instant, signal: Signal) {
        log_info!("{signal}: shutting down");
        // Send what is queued: the peers should not miss the last second of changes.
        self.engine.flush(now);
        self.transmit();
        if self.carp.raised() {
            match self.carp.set(false) {
                Ok(()) => log_info!("carp demotion lowered on exit"),
                Err(e) => log_error!("carp demotion left raised on exit: {e}"),
            }
        }
    }

    fn receive(&mut self, now: Instant, buf: &mut [u8]) {
        for _ in 0..RECEIVE_BATCH {
            let Some(link) = &mut self.link else { return };
            match link.input.recv(buf) {
                Ok(Some(rx)) => {
                    if let (Some(src), true, 255) = (rx.source, rx.on_syncdev, rx.ttl) {
                        if self.peers.heard(now, src, rx.payload) {
                            log_info!(
                                "peer {src} heard (pfsync version {})",
                                rx.payload.first().copied().unwrap_or(0)
                            );
                        }
                    }
                    self.engine.handle_packet(now, rx);
                }
                Ok(None) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log_warn!("receive: {e}");
                    return;
                }
            }
            self.drain(now);
        }
    }

    /// Feeds the table's changes to the engine (when due, or `force`d after a control
    /// request), runs due timers, and carries out what the engine asks.
    pub(super) fn step(&mut self, now: Instant, force: bool) {
        let churned = match self.table.memory() {
            Some(m) => self.churn.run(now, m, &mut self.synth) > 0,
            None => false,
        };
        if force || churned || now >= self.next_table_poll {
            self.next_table_poll = now + self.options.table_interval;
            self.changes.clear();
            if let Err(e) = self
                .table
                .state_table()
                .poll_changes(now, &mut self.changes)
            {
                log_warn!("table: {e}");
            }
            for c in self.changes.drain(..) {
                self.engine.handle_local(now, c);
            }
            let sum = self.table.state_table().checksum();
            if sum != self.engine.config().pfcksum {
                self.engine.set_checksum(sum);
            }
        }
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        self.drain(now);
        if now.duration_since(self.last_housekeeping) >= Duration::from_secs(1) {
            self.housekeeping(now);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        for peer in self
            .peers
            .gone_quiet(now, self.last_housekeeping, PEER_QUIET)
        {
            log_info!("peer {peer} silent for {} s", PEER_QUIET.as_secs());
        }
        let s = &self.table_stats;
        let failures = s.exists + s.invalid + s.notfound + s.full + s.unsupported + s.io;
        if failures > self.reported_failures
            && now.duration_since(self.last_failure_summary) >= FAILURE_SUMMARY
        {
            log_warn!(
                "{} table operations failed in the last {} s (so far: exists {}, invalid {}, notfound {}, full {}, unsupported {}, io {}); see `pfsyncd ctl stats`",
                failures - self.reported_failures,
                now.duration_since(self.last_failure_summary).as_secs(),
                s.exists, s.invalid, s.notfound, s.full, s.unsupported, s.io
            );
            self.reported_failures = failures;
            self.last_failure_summary = now;
        }
        self.last_housekeeping = now;
    }

    /// Carries out the engine's table operations and events, then sends its packets.
    fn drain(&mut self, now: Instant) {
        while let Some(op) = self.engine.poll_table_op() {
            let result = self.table.state_table().apply(now, &op);
            self.table_stats.record(&op, &result);
            if let (Err(e), TableOp::Import(_)) = (&result, &op) {
                if log_enabled_debug() {
                    crate::log_debug!("import: {e}");
                }
            }
        }
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                Event::CarpDemote(on) => self.demote(on),
                Event::BulkDone { complete: true } => log_info!(
                    "bulk update received in {} ms, {} states",
                    self.engine.stats().bulk_last_duration_ms,
                    self.table.len()
                ),
                Event::BulkDone { complete: false } => log_warn!(
                    "bulk update: no peer answered after {} requests; going on as in sync",
                    self.engine.stats().bulk_tries
                ),
                Event::BulkSendStarted => log_info!("a peer asked for a bulk update: sending"),
                Event::BulkSendDone { states } => {
                    log_info!("bulk update sent: {states} states")
                }
            }
        }
        if self.engine.syncok() != self.syncok {
            self.syncok = self.engine.syncok();
            log_info!("syncok {}", u8::from(self.syncok));
        }
        self.transmit();
    }

    fn demote(&mut self, on: bool) {
        if self.carp_broken {
            return;
        }
        let what = if on { "raised" } else { "lowered" };
        match self.carp.set(on) {
            Ok(()) => log_info!(
                "carp demotion {what} (bulk update {})",
                if on { "pending" } else { "done" }
            ),
            Err(e) => {
                // Once: a system without carp says so on every bulk update otherwise.
                log_warn!("carp demotion not {what}: {e}; carp is left alone from now on");
                self.carp_broken = true;
            }
        }
    }

    fn transmit(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            if let Some(link) = &self.link {
                if !link.sender.send(&t.payload).is_ok() {
                    self.engine.report_send_error();
                }
            }
        }
    }

    /// Packets of ours the receiver dropped (the multicast loop or a peer echoing).
    pub(super) fn own_dropped(&self) -> u64 {
        self.link.as_ref().map_or(0, |l| l.input.own_dropped())
    }

    /// The link is open.
    pub(super) fn link_up(&self) -> bool {
        self.link.is_some()
    }
}

fn log_enabled_debug() -> bool {
    super::log::enabled(super::log::Level::Debug)
}
