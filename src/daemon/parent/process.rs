//! The privileged parent: the table, the sync link, carp, the pidfile, the signals and
//! the control socket (see [`crate::daemon::privsep`]). One thread, `poll(2)` over the signal
//! stream, the channel to the engine process, the sync receiver and the control
//! socket; the clock is read here.
//!
//! Per turn: signals; what the engine process sent (packets to send, table operations,
//! carp, answers to control requests, log lines); up to [`RECEIVE_BATCH`] datagrams from
//! the link, forwarded unparsed; the table's own changes when due; control requests.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use zeroize::Zeroizing;

use super::applied::RecentlyApplied;
use super::carp::Demotion;
use super::churn::Churn;
use super::control_socket::{accept, respond, SocketFile};
use super::detach::StartReport;
use super::metrics_export::{MetricsExport, Waiter};
use super::pidfile::Pidfile;
use super::requests::{self as table_requests, TableParts};
use super::secure::{reload_secure_keys, SecureSockets};
use super::table::{EngineOp, Table};
use crate::daemon::config::SyncConfig;
use crate::daemon::latency::{self, ParentLatency};
use crate::daemon::link::{open_link, Link};
use crate::daemon::options::{load_config, Options};
use crate::daemon::privsep::crossing::Crossings;
use crate::daemon::privsep::message::SecureKeyBytes;
use crate::daemon::privsep::{
    Channel, ChannelError, ParentReport, ToEngine, ToParent, HIGH_WATER, TURN_BUDGET,
};
use crate::daemon::requests::{route, Route};
use crate::engine::{LocalChange, TableOp};
use crate::metrics::MetricsServer;
use crate::net::RECV_BUFFER_LEN;
use crate::table::memory::RecordOp;
use crate::table::synth::Synth;
use crate::table::EdgeCounters;
use crate::table::TableStats;
use crate::{log_debug, log_error, log_info, log_warn};

/// Most datagrams read per turn, so the channel and timers are served during a flood.
pub const RECEIVE_BATCH: usize = 256;
/// How often failed table operations are summarised in the log.
const FAILURE_SUMMARY: Duration = Duration::from_secs(10);
/// Room for this many local changes is kept between polls (a state is 400 bytes wide).
const MAX_KEPT_CHANGES: usize = 16 << 10;
/// How long the engine process has to send what it holds once told to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The parent's state between turns of its loop.
pub(in crate::daemon) struct Parent {
    options: Options,
    config: SyncConfig,
    table: Table,
    table_stats: TableStats,
    synth: Synth,
    churn: Churn,
    link: Option<Link>,
    /// The secure link's sockets, when configured; what they read goes to the engine
    /// process unparsed.
    secure: Option<SecureSockets>,
    /// The link a SIGHUP opened, taken into use once the engine has flushed under the
    /// old one.
    pending_link: Option<Option<Link>>,
    carp: Demotion,
    carp_broken: bool,
    channel: Channel,
    /// Control requests for the engine, and its answers (see [`crate::daemon::engine`]).
    requests: Channel,
    engine_pid: Pid,
    signals: UnixStream,
    control: UnixListener,
    /// Control clients, scrapes and the metrics file waiting for the engine's answer,
    /// oldest first.
    waiting: VecDeque<Waiter>,
    metrics: MetricsExport,
    changes: Vec<LocalChange>,
    crossings: Crossings,
    /// The engine's table operations taken so far (see `ToEngine::Request::applied`).
    table_ops_applied: u64,
    /// What this process's hops of the sync path cost (`ctl stats`, "latency").
    latency: ParentLatency,
    /// When the engine's operations last wrote recently synced states.
    applied: RecentlyApplied,
    /// A frame of table records copied out of the channel's buffer, kept for its room.
    records_frame: Vec<u8>,
    /// The engine's frames were left over at this turn's budget: take no new input.
    engine_behind: bool,
    checksum: [u8; 16],
    send_failures: u32,
    next_table_poll: Instant,
    /// The kernel-edge counters as last logged: each rise gets one line per poll.
    edge_logged: EdgeCounters,
    last_housekeeping: Instant,
    reported_failures: u64,
    last_failure_summary: Instant,
    /// Set once told to stop: when the engine's time to finish is up.
    stopping: Option<Instant>,
    engine_done: bool,
    // Held for the daemon's life; removed on drop.
    _socket_file: SocketFile,
    _pidfile: Option<Pidfile>,
    /// Told once the engine process runs confined (a detached start waits for it).
    start: StartReport,
}

impl Parent {
    #[allow(clippy::too_many_arguments)]
    pub(in crate::daemon) fn new(
        options: Options,
        config: SyncConfig,
        table: Table,
        link: Option<Link>,
        secure: Option<SecureSockets>,
        channel: Channel,
        requests: Channel,
        engine_pid: Pid,
        control: UnixListener,
        socket_file: SocketFile,
        pidfile: Option<Pidfile>,
        signals: UnixStream,
        start: StartReport,
        seed: u64,
        hash_key: [u64; 2],
        metrics_server: Option<MetricsServer>,
    ) -> Parent {
        let now = Instant::now();
        // The pidfile is locked by now: no other pfsyncd shares the record.
        let mut carp = Demotion::system(options.pidfile.as_deref());
        match carp.lower_leftover() {
            Ok(None) => {}
            Ok(Some(left)) => log_info!(
                "carp demotion of {} left raised by a previous run: lowered by {}",
                left.recorded,
                left.lowered
            ),
            Err(e) => log_error!("{e}"),
        }
        let metrics = MetricsExport::new(&options, metrics_server, now);
        Parent {
            metrics,
            synth: Synth::new(seed, options.creatorid),
            options,
            config,
            table,
            table_stats: TableStats::default(),
            churn: Churn::default(),
            link,
            secure,
            pending_link: None,
            carp,
            carp_broken: false,
            channel,
            requests,
            engine_pid,
            signals,
            control,
            waiting: VecDeque::new(),
            changes: Vec::new(),
            crossings: Crossings::new(crate::engine::KeyedState::new(hash_key)),
            table_ops_applied: 0,
            latency: ParentLatency::default(),
            applied: RecentlyApplied::new(crate::engine::KeyedState::new(hash_key)),
            records_frame: Vec::new(),
            engine_behind: false,
            checksum: [0; 16],
            send_failures: 0,
            next_table_poll: now,
            edge_logged: EdgeCounters::default(),
            last_housekeeping: now,
            reported_failures: 0,
            last_failure_summary: now,
            stopping: None,
            engine_done: false,
            _socket_file: socket_file,
            _pidfile: pidfile,
            start,
        }
    }

    /// Runs until the engine process has stopped; an error if it stopped unasked.
    pub(in crate::daemon) fn run(mut self) -> anyhow::Result<()> {
        log_info!(
            "started: creatorid {:08x}, {} table, control socket {}, engine process {}, {}",
            self.options.creatorid,
            self.table.name(),
            self.options.control.display(),
            self.engine_pid,
            self.config.to_words().join(" ")
        );
        if self.link.is_none() {
            log_info!("pfsync is down: nothing is sent or received until `up`");
        }
        let mut buf = vec![0u8; RECV_BUFFER_LEN];
        let outcome = loop {
            let now = Instant::now();
            // A poll waits while the engine is behind (see step): then the channel's
            // writability wakes the loop, not the poll's deadline.
            let table_due = (self.channel.queued() < HIGH_WATER).then_some(self.next_table_poll);
            let wait = [
                table_due,
                self.churn.deadline(),
                self.stopping,
                self.metrics.deadline(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
            .min(Duration::from_secs(1));
            // Frames left from the last turn's budget are taken without waiting.
            let ms = if self.channel.has_frame() {
                0
            } else {
                u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX)
            };
            // The link is read only while the engine keeps up (see privsep::channel).
            let read_link = self.stopping.is_none() && self.channel.queued() < HIGH_WATER;
            // Which of the signal stream, the engine's answers and the control socket
            // have something: the others are not read this turn (issue 14 point 5: at
            // 10 000 changes/s a turn's fixed cost is most of the daemon's CPU, and a
            // read or accept that finds nothing is a system call per turn each).
            let (signals_ready, answers_ready, control_ready, engine_short);
            {
                let mut channel_events = PollFlags::POLLIN;
                // Behind the engine (a timeout of 0 then), we still ask whether its end
                // of the channel is nearly drained: see `engine_short` below.
                if self.channel.wants_write() || self.channel.has_frame() {
                    channel_events |= PollFlags::POLLOUT;
                }
                let mut request_events = PollFlags::POLLIN;
                if self.requests.wants_write() {
                    request_events |= PollFlags::POLLOUT;
                }
                let mut fds = vec![
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.channel.as_fd(), channel_events),
                ];
                let requests_at = (!self.requests.is_closed()).then(|| {
                    fds.push(PollFd::new(self.requests.as_fd(), request_events));
                    fds.len() - 1
                });
                let control_at = self.stopping.is_none().then(|| {
                    fds.push(PollFd::new(self.control.as_fd(), PollFlags::POLLIN));
                    fds.len() - 1
                });
                if let (Some(link), true) = (&self.link, read_link) {
                    fds.push(PollFd::new(link.input.as_fd(), PollFlags::POLLIN));
                }
                if let (Some(secure), true) = (&self.secure, read_link) {
                    fds.extend(
                        secure
                            .sockets()
                            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN)),
                    );
                }
                if self.stopping.is_none() {
                    fds.extend(self.metrics.poll_fds());
                }
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => break Err(anyhow!("poll: {e}")),
                }
                signals_ready = readable(&fds[0]);
                // Writable with nothing of ours queued: the engine has less than a
                // quarter of the socket's buffer (some ten jumbo datagrams, a
                // millisecond of a bulk's import) left to read.
                engine_short = self.channel.queued() == 0
                    && fds[1]
                        .revents()
                        .is_some_and(|r| r.contains(PollFlags::POLLOUT));
                answers_ready = requests_at.is_some_and(|i| readable(&fds[i]));
                control_ready = control_at.is_some_and(|i| readable(&fds[i]));
            }
            if signals_ready {
                self.signals();
            }
            let now = Instant::now();
            if answers_ready {
                if let Err(e) = self.take_answers() {
                    break self.engine_gone(e);
                }
            }
            if let Err(e) = self.take_messages(now) {
                break self.engine_gone(e);
            }
            // Frames of the engine's left for the next turn (its budget ran out): the
            // engine produces faster than this process carries out. Taking more work in
            // (datagrams, the table's changes) would only lengthen that queue, up to its
            // high-water mark and the socket's buffer, some 50 000 operations or half a
            // second at 100 000 changes/s (issue 14: the 733 ms); the input waits in the
            // kernel's socket buffer and the table instead, for the turns that drain it.
            self.engine_behind = self.channel.has_frame();
            // But the engine is fed while it runs short: in a bulk it is the slower of
            // the two, and a turn of ours spent on its backlog while it has nothing
            // left to import is a core idle (the engine slept some 20 times for 3 to 5
            // ms each in a bulk of a million states at MTU 9000, the machine idle 18 %).
            // What it is sent then is at most a turn's datagrams more in front of it.
            if read_link && (!self.engine_behind || engine_short) {
                self.receive(&mut buf);
                if let Some(secure) = &self.secure {
                    secure.receive(&mut buf, RECEIVE_BATCH, self.channel.queue());
                }
                // The engine can start on these while this turn goes on (two cores).
                if let Err(e) = self.channel.flush() {
                    break self.engine_gone(e);
                }
            }
            self.step(now, false);
            if self.stopping.is_none() {
                if control_ready {
                    self.control(Instant::now());
                }
                self.metrics_requests(Instant::now());
            }
            if self.send_failures > 0 {
                ToEngine::SendFailed(std::mem::take(&mut self.send_failures))
                    .encode(self.channel.queue());
            }
            if let Err(e) = self.channel.flush().and_then(|()| self.requests.flush()) {
                break self.engine_gone(e);
            }
            if let Some(deadline) = self.stopping {
                if Instant::now() >= deadline {
                    log_warn!(
                        "engine process {} did not stop within {} s: killed",
                        self.engine_pid,
                        SHUTDOWN_GRACE.as_secs()
                    );
                    let _ = kill(self.engine_pid, Signal::SIGKILL);
                    break Ok(());
                }
            }
        };
        for waiter in self.waiting.drain(..) {
            match waiter {
                Waiter::Control(client) => respond(client, "error: pfsyncd is shutting down\n"),
                other => self.metrics.answered(other, Instant::now(), None),
            }
        }
        self.lower_carp();
        self.reap();
        outcome
    }

    /// Takes the signals caught since the last turn.
    fn signals(&mut self) {
        let mut caught = [0u8; 16];
        let n = match (&self.signals).read(&mut caught) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                log_error!("signal thread: {e}");
                0
            }
        };
        for &signo in &caught[..n] {
            match Signal::try_from(i32::from(signo)) {
                Ok(Signal::SIGHUP) if self.stopping.is_none() => self.reload(),
                Ok(Signal::SIGHUP) => {}
                Ok(s) if self.stopping.is_none() => {
                    log_info!("{s}: shutting down");
                    ToEngine::Shutdown { signal: s as i32 }.encode(self.channel.queue());
                    self.stopping = Some(Instant::now() + SHUTDOWN_GRACE);
                }
                // A second SIGTERM while stopping: the first one is being carried out.
                Ok(_) | Err(_) => {}
            }
        }
    }

    /// Handles what the engine process sent. `Err` when it is gone or broke the
    /// protocol.
    fn take_messages(&mut self, now: Instant) -> Result<(), ChannelError> {
        let filled = self.channel.fill();
        let mut budget = TURN_BUDGET;
        let mut held = [0u8; crate::state::compact_record::MAX_RECORD_BYTES];
        let takes_records = self.table.takes_records();
        // When the operation just before ended, if the frame before was one: an
        // operation that follows another is timed from there (its frame's decoding
        // included), one clock read per operation in a bulk rather than two.
        let mut apply_ended: Option<Instant> = None;
        let mut records = std::mem::take(&mut self.records_frame);
        while let Some((kind, body)) = self.channel.next_frame_in(&mut budget)? {
            let follows_apply = apply_ended.take();
            // A frame of imports and updates (a bulk's): copied whole, as acting may
            // queue answers on the channel whose buffer it is in, and applied together.
            if ToParent::carries_records(kind) {
                records.clear();
                records.extend_from_slice(body);
                let mut ops = Vec::new();
                if let Some(seen) = ToParent::decode_record_ops(kind, &records, &mut ops) {
                    apply_ended = Some(self.apply_records(now, &ops, seen?, follows_apply));
                    continue;
                }
            }
            // The memory table keeps an import's or update's record as it is: checked
            // whole, it is never made a State (most of this process's cost per state in
            // a bulk). A copy: the frame borrows the channel's buffer, and acting may
            // queue answers on the channel. (A record longer than `held`, of padded
            // varints, goes the whole way.)
            let decoded = takes_records
                .then(|| ToParent::decode_record_op(kind, body))
                .flatten();
            let record_op = match decoded {
                Some(decoded) => {
                    let (op, seen) = decoded?;
                    op.copy_into(&mut held).map(|op| (op, seen))
                }
                None => None,
            };
            if let Some((op, seen)) = record_op {
                apply_ended =
                    Some(self.timed_apply(now, EngineOp::Record(op), seen, follows_apply));
                continue;
            }
            let msg = ToParent::decode(kind, body)?;
            // (The frame borrows the channel's buffer: take what the message needs
            // before acting, which may queue answers on the channel.)
            match msg {
                ToParent::Transmit(payload) => {
                    if let Some(link) = &self.link {
                        let started = Instant::now();
                        if !link.sender.send(payload).is_ok() {
                            self.send_failures += 1;
                        }
                        self.latency.send.record(started.elapsed());
                    }
                }
                ToParent::Table { op, seen } => {
                    apply_ended =
                        Some(self.timed_apply(now, EngineOp::Whole(&op), seen, follows_apply));
                }
                // (Taken above, without decoding their states; the same, whole.)
                ToParent::TableRecords { seen, ops } => {
                    let mut follows_apply = follows_apply;
                    for op in &ops {
                        follows_apply =
                            Some(self.timed_apply(now, EngineOp::Whole(op), seen, follows_apply));
                    }
                    apply_ended = follows_apply;
                }
                ToParent::Stamp(ns) => self.latency.to_parent.record(latency::since(ns)),
                ToParent::TransmitTo { to, payload } => {
                    if let Some(link) = &self.link {
                        if let Err(e) = link.sender.send_to(to, payload) {
                            log_debug!("extension frame to {to}: {e}");
                            self.send_failures += 1;
                        }
                    }
                }
                ToParent::Demote(on) => self.demote(on),
                // Answers come on their own channel (take_answers).
                ToParent::Answer(_) => return Err(misplaced("answer")),
                ToParent::Reconfigured => {
                    if let Some(link) = self.pending_link.take() {
                        self.link = link;
                    }
                }
                ToParent::Log { level, text } => {
                    crate::daemon::log::write(level, format_args!("{text}"))
                }
                ToParent::Taken(n) => self.crossings.taken(n),
                ToParent::ReserveStates(asked) => {
                    if let Some(room) = self.table.reserve_states(asked) {
                        log_info!(
                            "table: room made for {room} more states ahead of a peer's bulk ({asked} asked)"
                        );
                    }
                }
                ToParent::Ready => self.start.running(),
                ToParent::Done => self.engine_done = true,
                ToParent::SecureSend { to, datagram } => {
                    let Some(secure) = &self.secure else {
                        return Err(misplaced("secure send"));
                    };
                    if let Err(e) = secure.send_to(to, datagram) {
                        log_debug!("secure link: send to {to}: {e}");
                        self.send_failures += 1;
                    }
                }
            }
        }
        self.records_frame = records;
        // One time for the turn's writes, after them (see applied.rs).
        self.applied.stamp(apply_ended.unwrap_or_else(Instant::now));
        filled?;
        if self.channel.is_closed() {
            return Err(ChannelError::Closed);
        }
        Ok(())
    }

    /// Passes the engine's answers on to the control clients waiting for them.
    fn take_answers(&mut self) -> Result<(), ChannelError> {
        // Closed with the engine process: the data channel says how it ended.
        if self.requests.is_closed() {
            return Ok(());
        }
        let filled = self.requests.fill();
        while let Some((kind, body)) = self.requests.next_frame()? {
            let ToParent::Answer(text) = ToParent::decode(kind, body)? else {
                return Err(misplaced("non-answer"));
            };
            match self.waiting.pop_front() {
                Some(Waiter::Control(client)) => respond(client, text),
                Some(other) => self.metrics.answered(other, Instant::now(), Some(text)),
                None => return Err(misplaced("answer nobody waits for")),
            }
        }
        filled
    }

    /// The engine process closed the channel: the end of a shutdown, or a crash.
    fn engine_gone(&mut self, why: ChannelError) -> anyhow::Result<()> {
        if self.engine_done && matches!(why, ChannelError::Closed) {
            return Ok(());
        }
        let pid = self.engine_pid;
        let how = match why {
            ChannelError::Closed => match self.wait_engine(Duration::from_secs(2)) {
                Some(WaitStatus::Exited(_, code)) => format!("exited with status {code}"),
                Some(WaitStatus::Signaled(_, sig, _)) => format!("was killed by {sig}"),
                _ => "closed its channel".to_string(),
            },
            other => {
                let _ = kill(self.engine_pid, Signal::SIGKILL);
                format!("was stopped: {other}")
            }
        };
        let e = anyhow!("engine process {pid} {how}; exiting");
        log_error!("{e}");
        Err(e)
    }

    /// Waits up to `timeout` for the engine process to end; its status if it did.
    fn wait_engine(&mut self, timeout: Duration) -> Option<WaitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match waitpid(self.engine_pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(WaitStatus::StillAlive) => return None,
                Ok(status) => {
                    // Reaped: nothing left to wait for.
                    self.engine_pid = Pid::from_raw(0);
                    return Some(status);
                }
                Err(_) => return None,
            }
        }
    }

    /// Leaves no zombie and no engine process behind.
    fn reap(&mut self) {
        if self.engine_pid.as_raw() <= 0 {
            return;
        }
        if self.wait_engine(Duration::from_secs(2)).is_none() && self.engine_pid.as_raw() > 0 {
            let _ = kill(self.engine_pid, Signal::SIGKILL);
            let _ = waitpid(self.engine_pid, None);
        }
    }

    /// Reads datagrams off the link and forwards them.
    fn receive(&mut self, buf: &mut [u8]) {
        let Some(link) = &mut self.link else { return };
        for n in 0..RECEIVE_BATCH {
            match link.input.recv(buf) {
                Ok(Some(rx)) => {
                    if n == 0 {
                        ToEngine::Stamp(latency::stamp()).encode(self.channel.queue());
                    }
                    ToEngine::Packet(rx).encode(self.channel.queue());
                }
                Ok(None) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log_warn!("receive: {e}");
                    return;
                }
            }
            if self.channel.queued() >= HIGH_WATER {
                return;
            }
        }
    }

    /// [`Self::apply`], timed from `follows_apply` (the end of the operation just
    /// before) or from now; returns when it ended.
    fn timed_apply(
        &mut self,
        now: Instant,
        op: EngineOp,
        seen: u64,
        follows_apply: Option<Instant>,
    ) -> Instant {
        let started = follows_apply.unwrap_or_else(Instant::now);
        self.apply(now, &op, seen);
        let ended = Instant::now();
        self.latency
            .apply
            .record(ended.saturating_duration_since(started));
        ended
    }

    /// Carries out the operations of a frame of records, all decided after `seen` local
    /// changes, as [`Self::apply`] would one by one, timed together from `follows_apply`
    /// or from now (each counted in the latency as the mean of them: two clock reads a
    /// frame, not one or two an operation); returns when they ended. On the memory table,
    /// when no local change after `seen` is in flight (so none of them can cross one),
    /// they go to it as a group ([`MemoryTable::apply_records`]: its cache misses
    /// overlap).
    ///
    /// [`MemoryTable::apply_records`]: crate::table::MemoryTable::apply_records
    fn apply_records(
        &mut self,
        now: Instant,
        ops: &[RecordOp],
        seen: u64,
        follows_apply: Option<Instant>,
    ) -> Instant {
        let started = follows_apply.unwrap_or_else(Instant::now);
        self.crossings.taken(seen);
        match self.table.memory() {
            Some(memory) if !self.crossings.in_flight_after(seen) => {
                let (stats, applied) = (&mut self.table_stats, &mut self.applied);
                memory.apply_records(now, ops, |op, result| {
                    let key = op.record().peeked().key();
                    let is_import = matches!(op, RecordOp::Import(_));
                    let op = EngineOp::Record(*op);
                    op.count(stats, &result);
                    match result {
                        Ok(_) => applied.wrote(key),
                        Err(e) if is_import => log_debug!("import: {e}"),
                        Err(_) => {}
                    }
                });
                for _ in ops {
                    // Counted taken, as `apply` counts them.
                    self.table_ops_applied += 1;
                    #[cfg(debug_assertions)]
                    slow_apply_for_tests(self.table_ops_applied);
                }
            }
            _ => {
                for op in ops {
                    self.apply(now, &EngineOp::Record(*op), seen);
                }
            }
        }
        let ended = Instant::now();
        if let Some(n) = u32::try_from(ops.len()).ok().filter(|&n| n > 0) {
            self.latency
                .apply
                .record_each(ended.saturating_duration_since(started) / n, u64::from(n));
        }
        ended
    }

    /// Carries out an operation the engine decided after taking `seen` local changes,
    /// unless it crossed a newer one (see [`crate::daemon::privsep::crossing`]).
    fn apply(&mut self, now: Instant, op: &EngineOp, seen: u64) {
        // Counted taken, skipped or not: the engine waits for this to pass a bulk
        // update's END before it says done.
        self.table_ops_applied += 1;
        #[cfg(debug_assertions)]
        slow_apply_for_tests(self.table_ops_applied);
        self.crossings.taken(seen);
        let key = op.key();
        let crossed = match key {
            Some(key) => self.crossings.crosses(key, seen),
            None => !self.crossings.newer_than(seen).is_empty(),
        };
        if crossed && op.writes() {
            self.crossings.superseded += 1;
            return;
        }
        let result = self.table.apply(now, op);
        op.count(&mut self.table_stats, &result);
        match (&result, key) {
            (Ok(_), Some(key)) if op.writes() => self.applied.wrote(key),
            (Err(e), _)
                if matches!(
                    op,
                    EngineOp::Whole(TableOp::Import(_)) | EngineOp::Record(RecordOp::Import(_))
                ) =>
            {
                log_debug!("import: {e}")
            }
            _ => {}
        }
        if crossed {
            // The engine is about to hear of a local change of a state now gone: tell
            // it the state went, after that change.
            let keys = match (op, key) {
                (EngineOp::Whole(TableOp::Delete { .. }), Some(key)) => vec![key],
                _ => self.crossings.newer_than(seen),
            };
            for (creatorid, id) in keys {
                if let Ok(None) = self.table.state_table().get(now, creatorid, id) {
                    self.send_local(LocalChange::Delete { creatorid, id });
                }
            }
        }
    }

    /// Sends a change of the table to the engine.
    fn send_local(&mut self, change: LocalChange) {
        self.crossings.sent(&change);
        ToEngine::Local(change).encode(self.channel.queue());
    }

    /// Answers the control clients waiting to be accepted: the table's requests here,
    /// after the changes they made are on their way to the engine (so a client that
    /// inserts states and then asks a peer finds them sent); the engine's through it.
    fn control(&mut self, now: Instant) {
        loop {
            let (client, line) = match accept(&self.control) {
                Ok(Some(c)) => c,
                Ok(None) => return,
                Err(e) => {
                    log_warn!("control socket: {e}");
                    return;
                }
            };
            match route(&line) {
                Route::Answer(text) => respond(client, &text),
                Route::Table => {
                    let mut parts = TableParts {
                        table: &mut self.table,
                        churn: &mut self.churn,
                        synth: &mut self.synth,
                        creatorid: self.options.creatorid,
                        applied: &self.applied,
                    };
                    let text = table_requests::answer(&mut parts, now, &line);
                    self.step(now, true);
                    // The change is on its way to the engine before the client is woken
                    // to take the CPU (two cores: issue 14 point 5); a failure is the
                    // turn's flush's to report.
                    let _ = self.channel.flush();
                    respond(client, &text);
                }
                Route::Engine => {
                    let report = self.report();
                    ToEngine::Request {
                        line: &line,
                        report,
                        applied: self.table_ops_applied,
                    }
                    .encode(self.requests.queue());
                    self.waiting.push_back(Waiter::Control(client));
                }
            }
        }
    }

    /// Asks the engine for the metrics text for the scrapes that came in and for the
    /// metrics file when it is due, as `ctl metrics` would.
    fn metrics_requests(&mut self, now: Instant) {
        for waiter in self.metrics.due(now) {
            let report = self.report();
            ToEngine::Request {
                line: "metrics",
                report,
                applied: self.table_ops_applied,
            }
            .encode(self.requests.queue());
            self.waiting.push_back(waiter);
        }
    }

    /// One line for each kernel-edge counter that rose since the last time: bad input
    /// from a peer or the kernel is refused or corrected quietly per state, and told
    /// here once per poll.
    fn log_edge_rises(&mut self) {
        let now = self.edge_counters();
        for ((name, n), (_, before)) in now.named().into_iter().zip(self.edge_logged.named()) {
            if n > before {
                log_warn!(
                    "kernel edge: {name} +{} ({n} in all): {}",
                    n - before,
                    EdgeCounters::meaning(name)
                );
            }
        }
        self.edge_logged = now;
    }

    /// The table's kernel-edge counters, with what the sync receiver skipped.
    fn edge_counters(&self) -> EdgeCounters {
        let mut edge = self.table.state_table_ref().edge_counters();
        if let Some(link) = &self.link {
            let skipped = link.input.skipped();
            edge.capture_bad_buffers = skipped.bad_buffers;
            edge.capture_cut = skipped.cut;
            edge.capture_malformed = skipped.malformed;
        }
        edge
    }

    fn report(&self) -> ParentReport {
        ParentReport {
            memory_table: matches!(self.table, Table::Memory(_)),
            states: self.table.len() as u64,
            table: self.table_stats,
            superseded: self.crossings.superseded,
            expired: self.table.expired_count(),
            own_dropped: self.link.as_ref().map_or(0, |l| l.input.own_dropped()),
            churn_rate: self.churn.rate(),
            churn_target: self.churn.target() as u64,
            churn_made: self.churn.made,
            edge: self.edge_counters(),
            metrics_http: self.metrics.http_counters(),
            latency: self.latency,
        }
    }

    /// The churn (memory table), and the table's changes to the engine when due (or
    /// `force`d after a control request). While the engine has not taken what was sent
    /// (a queue above the high-water mark) a due poll waits: the changes gather in the
    /// table (pf's next snapshot, the memory table's journal) at less cost than in the
    /// queue.
    fn step(&mut self, now: Instant, force: bool) {
        let churned = match self.table.memory() {
            Some(m) => self.churn.run(now, m, &mut self.synth) > 0,
            None => false,
        };
        let due = (churned || now >= self.next_table_poll)
            && self.channel.queued() < HIGH_WATER
            && !self.engine_behind;
        if force || due {
            self.next_table_poll = now + self.options.table_interval;
            let started = Instant::now();
            self.changes.clear();
            if let Err(e) = self
                .table
                .state_table()
                .poll_changes(now, &mut self.changes)
            {
                log_warn!("table: {e}");
            }
            self.log_edge_rises();
            let mut changes = std::mem::take(&mut self.changes);
            if !changes.is_empty() {
                ToEngine::Stamp(latency::stamp()).encode(self.channel.queue());
            }
            let found = !changes.is_empty();
            for c in changes.drain(..) {
                self.send_local(c);
            }
            if found {
                self.latency.table_poll.record(started.elapsed());
            }
            // A poll of a million changes (a bulk of local inserts) gives its 400 MB back.
            if changes.capacity() > MAX_KEPT_CHANGES {
                changes.shrink_to(MAX_KEPT_CHANGES);
            }
            self.changes = changes;
            let sum = self.table.state_table().checksum();
            if sum != self.checksum {
                self.checksum = sum;
                ToEngine::Checksum(sum).encode(self.channel.queue());
            }
        }
        if now.duration_since(self.last_housekeeping) >= Duration::from_secs(1) {
            self.housekeeping(now);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
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

    /// SIGHUP: reads the configuration again. A configuration that does not parse or a
    /// link that does not open leaves the daemon as it was; otherwise the engine
    /// process is told, and a new link replaces the old once the engine has sent what
    /// it queued under the old settings.
    fn reload(&mut self) {
        let config = match load_config(&self.options) {
            Ok(c) => c,
            Err(e) => {
                log_error!("SIGHUP: {e:#}; keeping the running configuration");
                return;
            }
        };
        // The key files may change under unchanged words (a rotated key): they are read
        // again on every SIGHUP, and the engine process takes what differs.
        self.send_secure_keys(&config);
        if config == self.config {
            log_info!("SIGHUP: configuration unchanged");
            return;
        }
        if (config.secure.port, &config.secure.inner_addr)
            != (self.config.secure.port, &self.config.secure.inner_addr)
            || config.secure.key_file.is_some() != self.config.secure.key_file.is_some()
        {
            log_warn!(
                "SIGHUP: secureport and secureaddr, and turning the secure link on or off, are taken at the next start; keys and peers change now"
            );
        }
        let link_changed = (config.up, config.syncdev, &config.syncpeers)
            != (self.config.up, self.config.syncdev, &self.config.syncpeers);
        let mut link_open = self.link.is_some();
        if link_changed {
            match open_link(&config) {
                Ok(link) => {
                    link_open = link.is_some();
                    self.pending_link = Some(link);
                }
                Err(e) => {
                    log_error!("SIGHUP: {e:#}; keeping the running configuration");
                    return;
                }
            }
        }
        self.config = config;
        let words = self.config.to_words().join(" ");
        ToEngine::Reconfigure {
            words: &words,
            link_changed,
            link_open,
        }
        .encode(self.channel.queue());
        log_info!("SIGHUP: now {words}");
    }

    /// Reads the secure link's key files the new configuration names and hands them to
    /// the engine process, ahead of the `Reconfigure`. A file that fails keeps the
    /// running key of its kind, in one line.
    fn send_secure_keys(&mut self, config: &SyncConfig) {
        // Without sockets the engine process has no secure link to re-key.
        if self.secure.is_none() || config.secure.key_file.is_none() {
            return;
        }
        let reloaded = reload_secure_keys(&config.secure);
        match reloaded.private_key {
            Ok(key) => {
                ToEngine::SecureKey(SecureKeyBytes(&key.to_bytes())).encode(self.channel.queue());
            }
            Err(e) => log_error!("SIGHUP: {e}; the running private key stays"),
        }
        for (peer, key) in reloaded.preshared_keys {
            match key {
                Ok(key) => ToEngine::SecurePresharedKey {
                    peer,
                    key: SecureKeyBytes(&Zeroizing::new(key.bytes())),
                }
                .encode(self.channel.queue()),
                Err(e) => log_error!("SIGHUP: {e}; the peer's running pre-shared key stays"),
            }
        }
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

    fn lower_carp(&mut self) {
        if self.carp.raised() {
            match self.carp.set(false) {
                Ok(()) => log_info!("carp demotion lowered on exit"),
                Err(e) => log_error!("carp demotion left raised on exit: {e}"),
            }
        }
    }
}

/// Whether a polled descriptor has something to read, or is closed or failed (which a
/// read then tells).
fn readable(fd: &PollFd<'_>) -> bool {
    fd.revents()
        .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR))
}

fn misplaced(what: &'static str) -> ChannelError {
    ChannelError::Message(crate::daemon::privsep::MessageError::BadValue {
        what,
        field: "channel it came on",
    })
}

/// A debug build's test hook: with `PFSYNCD_TEST_SLOW_APPLY=MICROS` the parent pauses
/// that long after every 100 table operations, so that a test sees the imports trail the
/// engine's END (on this machine a release parent keeps up with the memory table, as it
/// may not with pf's ioctls). Not compiled into a release build.
#[cfg(debug_assertions)]
fn slow_apply_for_tests(applied: u64) {
    static PAUSE: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        std::env::var("PFSYNCD_TEST_SLOW_APPLY")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_micros)
    });
    if let (Some(p), 0) = (pause, applied % 100) {
        std::thread::sleep(*p);
    }
}
