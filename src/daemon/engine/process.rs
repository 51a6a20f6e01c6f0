//! The engine process: the sync engine, fed by the parent over the channel;
//! unprivileged and chrooted (see [`crate::daemon::privsep`]). One thread, `poll(2)` over the
//! channel, with the engine's next deadline as the timeout; the clock is read here,
//! never in the engine.
//!
//! Per turn: what the parent sent (datagrams, each parsed and followed by the table
//! operations and packets it caused, so an update request is answered before the next
//! datagram; the table's changes; control requests for the engine); due timers; the
//! log lines of the turn.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use super::peers::Peers;
use super::requests::{self as engine_requests, EngineParts};
use super::secure::{SecureReceive, SecureSide};
use super::sessions::{PlainVerdict, SessionSide};
use crate::daemon::config::SyncConfig;
use crate::daemon::immediate::{immediate_wanted, plain_peers_all_pfsyncd, PlainPeer};
use crate::daemon::latency::{self, EngineLatency};
use crate::daemon::link::link_settings;
use crate::daemon::options::Options;
use crate::daemon::privsep::message::MAX_TEXT;
use crate::daemon::privsep::{
    Channel, ChannelError, Sandbox, TableFrames, ToEngine, ToParent, TURN_BUDGET,
};
use crate::engine::{BulkRequest, Config, Engine, Event, Received};
use crate::session::{Event as SessionEvent, Link};
use crate::wire::ext::Content;
use crate::{log_error, log_info, log_warn};

/// Mixed into the engine's hash key to key the sessions' copy hash (`session/copies.rs`).
const COPY_KEY_TWEAK: u64 = 0x636f_7079_5f6b_6579;

/// A peer silent this long is logged as gone quiet (pfsync sends at least every second
/// while states change, but an idle firewall sends nothing: this is informational).
const PEER_QUIET: Duration = Duration::from_secs(60);
/// Queued bytes that are written at once, in the middle of a batch of datagrams.
const EAGER_FLUSH: usize = 16 << 10;
/// Bytes queued to the parent above which the compact bulk waits: its frames leave
/// in turns, behind whatever else the turn sends.
const COMPACT_BULK_HIGH_WATER: usize = 1 << 20;
/// Bytes queued for the parent that a turn writes before it ends: a compact bulk's
/// first frames leave while the rest of its turn is made. Above what a turn of input
/// makes (TURN_BUDGET), so that the receive path writes once a turn as before.
const BULK_EARLY_FLUSH: usize = 256 << 10;
/// Queued bytes for the parent above which the parent's frames (the link's packets) are
/// not taken: what waits for the parent is what an ACK sent now waits behind.
const INPUT_HIGH_WATER: usize = 256 << 10;
/// Bytes of the parent's frames taken per turn while a bulk update comes in: four times the parent's
/// [`TURN_BUDGET`]. The parent's turn is bounded by its sends (a `sendto` on a veth runs
/// the receiver's side too); ours by the datagrams' import, some 1 ms for 128 KiB of a
/// compact bulk at MTU 9000 (2 600 states). Each turn ends with a write that wakes the
/// parent when it caught up and slept, and the parent, twice as fast per state, does so
/// after every turn of ours: with 32 KiB turns it slept and woke some 440 to 980
/// times in a bulk of a million states, each wakeup a chance for the scheduler to
/// put it on our core (the wakeup of a socket's reader is a sync one) while the other
/// core idles.
const ENGINE_TURN_BUDGET: usize = 4 * TURN_BUDGET;
/// How long the last messages may take to leave when the engine process stops.
const LAST_WORDS: Duration = Duration::from_secs(2);

/// The engine process's state between turns of its loop.
pub(in crate::daemon) struct EngineProcess {
    options: Options,
    config: SyncConfig,
    engine: Engine,
    peers: Peers,
    /// The secure link, when configured: every packet sent goes through it too.
    secure: Option<SecureSide>,
    /// The pfsyncd sessions (`extensions on`).
    sessions: Option<SessionSide>,
    /// The boot id of the sessions' next start: random per daemon start, one more at
    /// each SIGHUP that turns the extensions on again (the peers see a restart).
    next_boot: u64,
    sandbox: Sandbox,
    link_open: bool,
    channel: Channel,
    /// Control requests from the parent, and their answers.
    requests: Channel,
    syncok: bool,
    /// Local changes taken (see [`crate::daemon::privsep::crossing`]).
    local_seen: u64,
    /// The last count told to the parent.
    local_taken_said: u64,
    /// Table operations sent to the parent so far.
    table_ops_sent: u64,
    /// `table_ops_sent` when the last bulk update ended: it is in the table once the
    /// parent has applied that many.
    bulk_end_op: u64,
    last_housekeeping: Instant,
    /// `badsrc` as last logged.
    badsrc_logged: u64,
    /// What this process's hops of the sync path cost (`ctl stats`, "latency").
    latency: EngineLatency,
    /// When this turn read the parent's first stamped batch (see
    /// [`crate::daemon::latency`]).
    batch_read_at: Option<u64>,
    /// This turn's first packet or table operation for the parent has its stamp.
    output_stamped: bool,
    /// When the sessions last found a kernel peer (HELLO never answered), for
    /// `immediate auto`.
    last_kernel_peer: Option<Instant>,
    /// What decides `immediate auto` changed: decide again at the end of the turn.
    immediate_stale: bool,
    /// A compact bulk just started: its BULK_SIZE and START are written at once.
    flush_bulk_start: bool,
}

/// How the loop ends.
enum Stop {
    /// The parent said so: exit 0.
    Asked,
    /// The channel failed: exit 1.
    Failed,
}

impl EngineProcess {
    /// The engine, configured as the daemon starts.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::daemon) fn new(
        options: Options,
        config: SyncConfig,
        channel: Channel,
        requests: Channel,
        sandbox: Sandbox,
        random: [u8; 32],
        link_open: bool,
        secure: Option<SecureSide>,
    ) -> EngineProcess {
        let mut ec = Config::random(config.dialect, random);
        ec.creatorid = options.creatorid;
        let link_cfg = link_settings(&config);
        ec.maxupd = link_cfg.maxupd;
        ec.mtu = link_cfg.mtu;
        ec.ip_header_len = link_cfg.ip_header_len;
        ec.syncpeer = link_cfg.syncpeer;
        ec.filter = config.engine_filter();
        ec.sync_delay = config.engine_sync_delay();
        ec.immediate = immediate_wanted(config.immediate, config.all_peers_pfsyncd());
        // Unless told otherwise, the pace of the dialect's kernel (OpenBSD's input is
        // built for one packet per 20 ms); a pfsyncd cluster takes --bulk-pps.
        if let Some(pps) = options.bulk_pps {
            ec.set_bulk_pps(pps);
        }
        if ec.immediate {
            log_info!("immediate: changes leave at the end of each turn, not after the 1 s batch");
        }
        let mut engine = Engine::new(ec);
        // Bytes 4..12 of the random draw are left unused by Config::random.
        let boot = u64::from_le_bytes(random[4..12].try_into().expect("8 bytes"));
        engine.set_allowed_sources(config.allowed_sources());
        engine.set_ifmap(config.ifmap.clone());
        let now = Instant::now();
        if link_open || (config.up && config.secure_only()) {
            // As a pfsync interface coming up: ask the peers for everything they have.
            engine.request_bulk(now);
            log_info!("bulk update requested from the peers");
        }
        let mut process = EngineProcess {
            options,
            config,
            engine,
            peers: Peers::default(),
            secure,
            sessions: None,
            next_boot: boot,
            sandbox,
            link_open,
            channel,
            requests,
            syncok: false,
            local_seen: 0,
            local_taken_said: 0,
            table_ops_sent: 0,
            bulk_end_op: 0,
            last_housekeeping: now,
            badsrc_logged: 0,
            latency: EngineLatency::default(),
            batch_read_at: None,
            output_stamped: false,
            last_kernel_peer: None,
            immediate_stale: false,
            flush_bulk_start: false,
        };
        process.set_extensions(now);
        process
    }

    /// Starts or stops the sessions as the configuration says (`extensions on|off`),
    /// and tells them the secure peers.
    fn set_extensions(&mut self, now: Instant) {
        match (&mut self.sessions, self.config.extensions) {
            (None, true) => {
                let boot = self.next_boot;
                self.next_boot = self.next_boot.wrapping_add(1);
                // Another function of the engine's secret key: neither hash's output
                // tells anything of the other's.
                let key = self.engine.config().hash_key;
                self.sessions = Some(SessionSide::new(
                    self.engine.config().creatorid,
                    boot,
                    self.config.mtu,
                    [key[1].rotate_left(17) ^ COPY_KEY_TWEAK, key[0]],
                ));
                // The digest sums are kept from now on, O(1) per change.
                self.engine.enable_digests(
                    self.sessions
                        .as_ref()
                        .map_or(256, |side| side.sessions.config().digest_buckets),
                );
                log_info!("extensions on: pfsyncd peers are found and synced with loss recovery");
            }
            (Some(_), false) => {
                self.sessions = None;
                log_info!("extensions off: plain pfsync only");
            }
            _ => {}
        }
        if let (Some(side), Some(secure)) = (&mut self.sessions, &self.secure) {
            side.set_secure_peers(now, &secure.inner_addrs());
        }
    }

    /// Sends the queued log lines and closes the channel (a failed start).
    pub(in crate::daemon) fn say_goodbye(mut channel: Channel) {
        forward_log(&mut channel);
        let _ = channel.flush_all(LAST_WORDS);
    }

    /// Runs until the parent says stop or goes away; the exit status.
    pub(in crate::daemon) fn run(mut self) -> i32 {
        // Confined and about to serve: a detached start may report success now.
        ToParent::Ready.encode(self.channel.queue());
        let stop = loop {
            let now = Instant::now();
            // As `pump_compact_bulk` decides.
            let can_pump = self.channel.queued() < COMPACT_BULK_HIGH_WATER;
            let wait = self
                .engine
                .poll_timeout()
                .into_iter()
                .chain(self.secure.as_ref().map(SecureSide::tick_deadline))
                .chain(
                    self.sessions
                        .as_ref()
                        .and_then(|s| s.sessions.poll_timeout()),
                )
                .chain(self.sessions.as_ref().and_then(SessionSide::held_deadline))
                .chain(
                    self.sessions
                        .as_ref()
                        .and_then(|s| s.bulk.deadline(now, &self.engine, can_pump)),
                )
                .min()
                .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
                .min(Duration::from_secs(1));
            // Frames left from the last turn's budget are taken without waiting.
            let ms = if self.channel.has_frame() && self.channel.queued() < INPUT_HIGH_WATER {
                0
            } else {
                u16::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(u16::MAX)
            };
            // The parent is read only while it takes what we send (privsep::channel).
            let mut channel_events = PollFlags::empty();
            if self.channel.queued() < INPUT_HIGH_WATER {
                channel_events |= PollFlags::POLLIN;
            }
            if self.channel.wants_write() {
                channel_events |= PollFlags::POLLOUT;
            }
            let requests_ready;
            {
                let mut request_events = PollFlags::POLLIN;
                if self.requests.wants_write() {
                    request_events |= PollFlags::POLLOUT;
                }
                let mut fds = [
                    PollFd::new(self.channel.as_fd(), channel_events),
                    PollFd::new(self.requests.as_fd(), request_events),
                ];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        log_error!("poll: {e}");
                        break Stop::Failed;
                    }
                }
                // A read of the request channel that finds nothing is a system call per
                // turn (issue 14 point 5): only when it has something, or closed.
                requests_ready = fds[1].revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                });
            }
            let now = Instant::now();
            self.output_stamped = false;
            if requests_ready {
                if let Err(e) = self.take_requests(now) {
                    log_error!("{e}");
                    break Stop::Failed;
                }
            }
            if channel_events.contains(PollFlags::POLLIN) {
                match self.take_messages(now) {
                    Ok(None) => {}
                    Ok(Some(stop)) => break stop,
                    Err(e) => {
                        // The parent is gone (or broke the protocol): nobody to serve.
                        log_error!("{e}");
                        break Stop::Failed;
                    }
                }
            }
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            if let Some(secure) = &mut self.secure {
                secure.tick(now);
            }
            if let Some(side) = &mut self.sessions {
                if side.sessions.poll_timeout().is_some_and(|t| t <= now) {
                    side.sessions.handle_timeout(now);
                }
            }
            self.drain(now);
            if now.duration_since(self.last_housekeeping) >= Duration::from_secs(1) {
                self.housekeeping(now);
            }
            if std::mem::take(&mut self.immediate_stale) {
                self.decide_immediate(now);
            }
            if self.local_seen != self.local_taken_said {
                // So the parent forgets what we have seen (privsep::crossing).
                self.local_taken_said = self.local_seen;
                ToParent::Taken(self.local_seen).encode(self.channel.queue());
            }
            forward_log(&mut self.channel);
            if let Err(e) = self.channel.flush() {
                log_error!("{e}");
                break Stop::Failed;
            }
            if let Some(read_at) = self.batch_read_at.take() {
                if self.output_stamped {
                    self.latency.engine_turn.record(latency::since(read_at));
                }
            }
        };
        forward_log(&mut self.channel);
        let _ = self.channel.flush_all(LAST_WORDS);
        match stop {
            Stop::Asked => 0,
            Stop::Failed => 1,
        }
    }

    /// Handles what the parent sent; `Some` when told to stop.
    fn take_messages(&mut self, now: Instant) -> Result<Option<Stop>, ChannelError> {
        let filled = self.channel.fill();
        // The large turn only while a bulk update comes in: otherwise what a turn
        // decides (a change to send at once) would wait behind four times the input.
        let mut budget = match self.engine.bulk_request_state() {
            BulkRequest::Receiving { .. } => ENGINE_TURN_BUDGET,
            _ => TURN_BUDGET,
        };
        while let Some((kind, body)) = self.channel.next_frame_in(&mut budget)? {
            match ToEngine::decode(kind, body)? {
                ToEngine::Packet(rx) => {
                    // A secure peer's packets come only through the secure link.
                    if let Some(secure) = &mut self.secure {
                        if secure.refuse_plain(rx.source) {
                            continue;
                        }
                    }
                    // A session peer's plain packet: once taken, its DATA copy is not.
                    let mut first_copy = None;
                    if let Some(side) = &mut self.sessions {
                        let accepted = self.engine.accepts_source(rx.source);
                        match side.classify_plain(now, &rx, accepted) {
                            PlainVerdict::Frame(src) => {
                                side.sessions.handle_frame(now, src, rx.payload);
                                self.drain(now);
                                continue;
                            }
                            PlainVerdict::Drop | PlainVerdict::Copy => continue,
                            PlainVerdict::Engine => {}
                            PlainVerdict::FirstCopy(src, hash) => first_copy = Some((src, hash)),
                        }
                    }
                    if let (Some(src), true, 255) = (rx.source, rx.on_syncdev, rx.ttl) {
                        // A sender refused for its address is no peer of ours.
                        if self.engine.accepts_source(Some(src))
                            && self.peers.heard(now, src, rx.payload)
                        {
                            log_info!(
                                "peer {src} heard (pfsync version {})",
                                rx.payload.first().copied().unwrap_or(0)
                            );
                        }
                    }
                    // One cluster across both links: the secure peers hear the plain
                    // peers through us (the kernels never relay, so a plain peer's packet
                    // reaches them no other way). Wrapped now, sent with what this packet
                    // causes.
                    if let Some(secure) = &mut self.secure {
                        if rx.on_syncdev
                            && rx.ttl == crate::secure::PFSYNC_TTL
                            && self.engine.accepts_source(rx.source)
                        {
                            secure.send(rx.payload);
                        }
                    }
                    // A bulk request from a source that may be a pfsyncd peer waits
                    // until the sessions tell (see `bulk.rs`).
                    let maybe_pfsyncd = maybe_pfsyncd(&self.sessions, rx.source);
                    match (maybe_pfsyncd, &mut self.sessions) {
                        (Some(src), Some(side)) => {
                            if self.engine.handle_packet_holding_bulk_request(now, rx) {
                                side.bulk.hold_request(now, src, &mut side.sessions);
                            } else if let Some((src, hash)) = first_copy {
                                side.plain_copy_taken(now, src, hash);
                            }
                        }
                        _ => self.engine.handle_packet(now, rx),
                    }
                    // Table operations and answers of this packet before the next one.
                    self.drain(now);
                    // The parent can start on them while the rest of the batch is
                    // parsed (a failure shows again at the turn's flush).
                    if self.channel.queued() >= EAGER_FLUSH {
                        let _ = self.channel.flush();
                    }
                }
                ToEngine::Local(c) => {
                    self.local_seen += 1;
                    self.engine.handle_local(now, c);
                }
                ToEngine::Stamp(ns) => {
                    self.latency.to_engine.record(latency::since(ns));
                    self.batch_read_at.get_or_insert_with(latency::stamp);
                }
                ToEngine::Checksum(sum) => self.engine.set_checksum(sum),
                ToEngine::SendFailed(n) => {
                    for _ in 0..n {
                        self.engine.report_send_error();
                    }
                }
                ToEngine::Reconfigure {
                    words,
                    link_changed,
                    link_open,
                } => {
                    let words = words.to_string();
                    self.reconfigure(now, &words, link_changed, link_open);
                }
                // Requests come on their own channel (take_requests).
                ToEngine::Request { .. } => return Err(misplaced("request")),
                ToEngine::SecureDatagram { from, datagram } => {
                    let Some(secure) = &mut self.secure else {
                        return Err(misplaced("secure datagram"));
                    };
                    match secure.receive(from, datagram) {
                        SecureReceive::Packet(packet) => {
                            let rx = SecureSide::received(&packet);
                            // The same dispatch as the plain link's, the secure peer's
                            // inner address as the source.
                            let verdict = match &mut self.sessions {
                                Some(side) => side.classify_plain(now, &rx, true),
                                None => PlainVerdict::Engine,
                            };
                            match verdict {
                                PlainVerdict::Frame(src) => {
                                    if let Some(side) = &mut self.sessions {
                                        side.sessions.handle_frame(now, src, rx.payload);
                                    }
                                }
                                PlainVerdict::Drop | PlainVerdict::Copy => {}
                                // A secure peer's packets are not tracked (DATA alone
                                // comes from it): no first copy to note.
                                PlainVerdict::Engine | PlainVerdict::FirstCopy(..) => {
                                    if let Some(src) = rx.source {
                                        if self.peers.heard(now, src, rx.payload) {
                                            log_info!("secure peer {src} heard");
                                        }
                                    }
                                    // A bulk request waits until the sessions tell who
                                    // asks, as on the plain link: a secure peer that
                                    // restarted asks in plain pfsync before its new
                                    // sessions know ours, and an answer at once would
                                    // go as DATA to the stream of its previous run,
                                    // which it drops and never asks for again.
                                    let session_peer = maybe_pfsyncd(&self.sessions, rx.source);
                                    match (session_peer, &mut self.sessions) {
                                        (Some(src), Some(side)) => {
                                            if self
                                                .engine
                                                .handle_packet_holding_bulk_request(now, rx)
                                            {
                                                side.bulk.hold_request(
                                                    now,
                                                    src,
                                                    &mut side.sessions,
                                                );
                                            }
                                        }
                                        _ => self.engine.handle_packet(now, rx),
                                    }
                                    // And the plain peers hear the secure ones through
                                    // us, unchanged, as if they were on the LAN.
                                    if self.link_open {
                                        ToParent::Transmit(packet.payload())
                                            .encode(self.channel.queue());
                                    }
                                }
                            }
                        }
                        SecureReceive::Nothing => {}
                        SecureReceive::Refused { log, .. } => {
                            if let Some(line) = log {
                                log_warn!("{line}");
                            }
                        }
                    }
                    // Handshake answers and the packets of this one before the next.
                    self.drain(now);
                    // As for a plain packet: the parent applies a bulk update's states
                    // while the engine decrypts the rest of the batch.
                    if self.channel.queued() >= EAGER_FLUSH {
                        let _ = self.channel.flush();
                    }
                }
                ToEngine::SecureKey(key) => {
                    let Some(secure) = &mut self.secure else {
                        return Err(misplaced("secure key"));
                    };
                    let key = crate::secure::PrivateKey::from_bytes(*key.0);
                    let public = key.public_key();
                    if secure.set_private_key(key) {
                        log_info!(
                            "secure link: new private key (public key {public}); every peer handshakes again"
                        );
                    }
                }
                ToEngine::SecurePresharedKey { peer, key } => {
                    let Some(secure) = &mut self.secure else {
                        return Err(misplaced("secure pre-shared key"));
                    };
                    let key = crate::secure::PresharedKey::from_bytes(*key.0);
                    match secure.set_preshared_key(peer, key) {
                        None => {}
                        Some(Ok(_)) => {
                            log_info!("secure peer {peer}: new pre-shared key; it handshakes again")
                        }
                        Some(Err(e)) => log_error!("secure peer {peer}: {e}"),
                    }
                }
                ToEngine::Shutdown { signal } => {
                    self.shutdown(now, signal);
                    return Ok(Some(Stop::Asked));
                }
            }
        }
        filled?;
        if self.channel.is_closed() {
            return Err(ChannelError::Closed);
        }
        Ok(None)
    }

    /// Answers the control requests the parent passed on. They have a channel of their
    /// own and are taken first each turn: an admin's `status` is answered at once, not
    /// after the backlog of a bulk update or a million local changes.
    fn take_requests(&mut self, now: Instant) -> Result<(), ChannelError> {
        let filled = self.requests.fill();
        while let Some((kind, body)) = self.requests.next_frame()? {
            let ToEngine::Request {
                line,
                report,
                applied,
            } = ToEngine::decode(kind, body)?
            else {
                return Err(misplaced("non-request"));
            };
            let line = line.to_string();
            let mut parts = EngineParts {
                engine: &mut self.engine,
                options: &self.options,
                config: &self.config,
                peers: &self.peers,
                secure: self.secure.as_ref(),
                sessions: self.sessions.as_ref(),
                sandbox: &self.sandbox,
                link_open: self.link_open,
                bulk_ops_in_flight: self.bulk_end_op.saturating_sub(applied),
                latency: &self.latency,
            };
            let text = engine_requests::answer(&mut parts, now, &line, &report);
            // What the request changed (a bulk request) leaves before the answer.
            self.drain(now);
            let mut cut = text.len().min(MAX_TEXT);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            ToParent::Answer(&text[..cut]).encode(self.requests.queue());
        }
        filled?;
        if self.requests.is_closed() {
            return Err(ChannelError::Closed);
        }
        self.requests.flush()
    }

    /// SIGHUP, as the parent passes it on: the configuration changes, the cache stays.
    fn reconfigure(&mut self, now: Instant, words: &str, link_changed: bool, link_open: bool) {
        let config = match SyncConfig::from_words(&words.split_whitespace().collect::<Vec<_>>()) {
            Ok(c) => c,
            Err(e) => {
                // The parent checked these words; this would be a bug, not a bad file.
                log_error!("reconfigure: {e}; keeping the running configuration");
                ToParent::Reconfigured.encode(self.channel.queue());
                return;
            }
        };
        if link_changed {
            // What is queued leaves on the old link: the parent swaps links only once
            // it has our Reconfigured, which follows these packets.
            self.engine.flush(now);
            self.drain(now);
        }
        self.engine.reconfigure(now, link_settings(&config));
        self.engine.set_filter(now, config.engine_filter());
        self.engine.set_sync_delay(config.engine_sync_delay());
        self.engine.set_allowed_sources(config.allowed_sources());
        self.engine.set_ifmap(config.ifmap.clone());
        if let Some(secure) = &mut self.secure {
            let peers = secure.peers_from_config(&config.secure);
            for (addr, outcome) in secure.set_peers(peers) {
                match outcome {
                    Ok(change) => log_info!("secure peer {addr}: {change:?}"),
                    Err(e) => log_error!("secure peer {addr}: {e}"),
                }
            }
        }
        self.config = config;
        self.link_open = link_open;
        self.set_extensions(now);
        self.decide_immediate(now);
        ToParent::Reconfigured.encode(self.channel.queue());
        // A link that comes up (or moves) is synced from scratch, as an interface that
        // comes up asks for a bulk update.
        if link_changed && (link_open || (self.config.up && self.config.secure_only())) {
            self.engine.request_bulk(now);
            log_info!("bulk update requested from the peers");
        }
        self.drain(now);
    }

    /// Whether every peer is a pfsyncd: the configuration says so (secure peers only),
    /// or, on the plain link, the sessions do (see [`plain_peers_all_pfsyncd`]).
    fn all_peers_pfsyncd(&self, now: Instant) -> bool {
        if self.config.all_peers_pfsyncd() {
            return true;
        }
        let Some(side) = self.sessions.as_ref().filter(|_| self.link_open) else {
            return false;
        };
        let secure = self
            .secure
            .as_ref()
            .map(SecureSide::inner_addrs)
            .unwrap_or_default();
        let addrs: std::collections::BTreeSet<std::net::IpAddr> = side
            .sessions
            .peers()
            .chain(self.peers.iter().map(|(addr, _)| *addr))
            .chain(self.config.syncpeers.iter().copied())
            .filter(|addr| !secure.contains(addr))
            .collect();
        let plain = addrs.into_iter().map(|addr| PlainPeer {
            session: side.sessions.is_session_peer(addr),
            last_heard: self.peers.last_heard(addr),
        });
        plain_peers_all_pfsyncd(now, plain, self.last_kernel_peer)
    }

    /// Decides `immediate` again from the setting and what is known of the peers.
    fn decide_immediate(&mut self, now: Instant) {
        let on = immediate_wanted(self.config.immediate, self.all_peers_pfsyncd(now));
        self.set_immediate(now, on);
    }

    /// Tells the engine whether changes leave at the end of the turn (see
    /// [`crate::daemon::immediate`]); called whenever what decides it changes.
    fn set_immediate(&mut self, now: Instant, on: bool) {
        if self.engine.config().immediate != on {
            self.engine.set_immediate(now, on);
            log_info!(
                "immediate {}: changes leave {}",
                if on { "on" } else { "off" },
                if on {
                    "at the end of each turn"
                } else {
                    "after the 1 s batch"
                }
            );
        }
    }

    fn shutdown(&mut self, now: Instant, signal: i32) {
        let name = Signal::try_from(signal).map_or_else(|_| signal.to_string(), |s| s.to_string());
        log_info!("{name}: engine sends what it holds and stops");
        // The peers should not miss the last second of changes.
        self.engine.flush(now);
        self.drain(now);
        ToParent::Done.encode(self.channel.queue());
    }

    fn housekeeping(&mut self, now: Instant) {
        for peer in self
            .peers
            .gone_quiet(now, self.last_housekeeping, PEER_QUIET)
        {
            log_info!("peer {peer} silent for {} s", PEER_QUIET.as_secs());
        }
        self.last_housekeeping = now;
        // A peer heard long ago ages out of the decision.
        self.decide_immediate(now);
        let badsrc = self.engine.stats().badsrc;
        if badsrc > self.badsrc_logged {
            let from = self
                .engine
                .last_refused_source()
                .map_or_else(|| "an unknown source".to_string(), |a| a.to_string());
            log_warn!(
                "badsrc +{} ({badsrc} in all): packets from {from} refused, not a syncpeer \
                 (anysource takes any sender)",
                badsrc - self.badsrc_logged
            );
            self.badsrc_logged = badsrc;
        }
    }

    /// Sends the engine's table operations, carp requests and packets to the parent,
    /// and logs its events; moves what the sessions produce, which may feed the engine
    /// again, until neither has anything left.
    fn drain(&mut self, now: Instant) {
        loop {
            self.drain_engine(now);
            let fed = self.pump_sessions(now);
            if self.channel.queued() >= BULK_EARLY_FLUSH
                || std::mem::take(&mut self.flush_bulk_start)
            {
                // A failure shows again at the turn's flush.
                let _ = self.channel.flush();
            }
            if !fed && !self.pump_compact_bulk(now) {
                break;
            }
        }
        if let Some(secure) = &mut self.secure {
            secure.queue_datagrams(self.channel.queue());
        }
    }

    /// The next frames of a compact bulk update we send, while the channel to the
    /// parent has room (see `bulk.rs`); true when frames were queued.
    fn pump_compact_bulk(&mut self, now: Instant) -> bool {
        let Some(side) = &mut self.sessions else {
            return false;
        };
        let answered = side
            .bulk
            .answer_held(now, &mut self.engine, &mut side.sessions);
        if self.channel.queued() >= COMPACT_BULK_HIGH_WATER {
            return answered;
        }
        let starting = side.bulk.starting();
        let queued = side.bulk.pump(now, &mut self.engine, &mut side.sessions);
        // BULK_SIZE and START are written as soon as the sessions move them to the
        // channel, before the first batches are made: the receiver starts making
        // room for the states meanwhile.
        self.flush_bulk_start |= starting && !side.bulk.starting();
        queued || answered
    }

    /// The sessions' events, deliveries and frames. True when the engine was fed
    /// (states forgotten or announced, a packet delivered): its outputs wait.
    fn pump_sessions(&mut self, now: Instant) -> bool {
        let Some(side) = &mut self.sessions else {
            return false;
        };
        let engine = &mut self.engine;
        let mut fed = false;
        if engine.bulk_sending() {
            side.note_bulk_sending(now);
        }
        // Digests against a table a bulk is still filling find every bucket differing.
        side.sessions.set_digests_paused(
            engine.compact_bulk_sending()
                || matches!(
                    engine.bulk_request_state(),
                    BulkRequest::Waiting { .. } | BulkRequest::Receiving { .. }
                ),
        );
        while let Some(event) = side.sessions.poll_event() {
            side.log_event(&event);
            match event {
                SessionEvent::ResyncNeeded { peer } => side.on_resync_needed(now, peer, engine),
                SessionEvent::ResyncAsked { peer } => {
                    // As a bulk request in its DATA: the compact bulk.
                    engine.answer_bulk_request(now, true);
                    side.bulk.note_asked_in_data(now, peer);
                    fed = true;
                }
                SessionEvent::DigestWork => {
                    side.sessions.digest_work(now, &*engine);
                }
                SessionEvent::ForgetStates { peer, creator, ids } => {
                    if side.may_forget(now, peer, engine.bulk_sending()) {
                        engine.forget_states(now, creator, &ids);
                        fed = true;
                    }
                }
                SessionEvent::AnnounceStates { ids, .. } => {
                    engine.announce_states(now, &ids);
                    fed = true;
                }
                SessionEvent::PeerUp { peer, .. } | SessionEvent::PeerRestarted { peer, .. } => {
                    side.session_started(now, peer);
                    self.immediate_stale = true;
                }
                SessionEvent::BulkSizeAnnounced { peer, states } => {
                    // The parent's ask leaves at once: both processes make room
                    // together (see `note_size_announced`).
                    let channel = &mut self.channel;
                    side.bulk.note_size_announced(peer, states, engine, |room| {
                        ToParent::ReserveStates(room).encode(channel.queue());
                        // A failure shows again at the turn's flush.
                        let _ = channel.flush();
                    });
                }
                SessionEvent::PeerDown { .. } => self.immediate_stale = true,
                SessionEvent::KernelPeer { .. } => {
                    self.last_kernel_peer = Some(now);
                    self.immediate_stale = true;
                }
            }
        }
        // One delivery at a time: its table operations and answers leave before the
        // next, as for packets from the parent.
        if let Some((from, packet)) = side.next_delivery(now) {
            let content = Content::of(&packet);
            if let Content::CompactBatch { ruleset, batch } = content {
                // A compact bulk's batch: for our engine only (no kernel reads it, so it
                // is not relayed to the other link).
                let taken = engine.handle_vouched_compact_batch(now, Some(from), ruleset, batch);
                let refused = side
                    .bulk
                    .note_received(now, from, taken.as_ref().ok().copied());
                if let Err(e) = taken {
                    // Logged at 1, 2, 4, ... refusals: a peer sending garbage is counted,
                    // not a flood of lines.
                    if refused.is_power_of_two() {
                        log_warn!(
                            "pfsyncd peer {from}: compact batch refused ({refused} so far): {e}"
                        );
                    }
                }
                return true;
            }
            if content == Content::BadCompact {
                side.bulk.note_received(now, from, None);
                return true;
            }
            // Its plain copy was taken (and relayed to the secure peers) already.
            if side.data_copy_skipped(now, from, &packet) {
                return true;
            }
            let rx = Received {
                payload: &packet,
                on_syncdev: true,
                ttl: 255,
                ipv6: from.is_ipv6(),
                source: Some(from),
            };
            if self.peers.heard(now, from, &packet) {
                log_info!(
                    "peer {from} heard (pfsync version {}, in DATA)",
                    packet.first().copied().unwrap_or(0)
                );
            }
            let asked = engine.stats().bulk_requests_received;
            engine.handle_session_packet(now, rx);
            if engine.stats().bulk_requests_received != asked {
                side.bulk.note_asked_in_data(now, from);
            }
            // One cluster across both links (as for plain packets in take_messages):
            // a secure peer's packets go on to the plain link, a plain peer's to the
            // secure peers, unchanged.
            let from_secure = self
                .secure
                .as_ref()
                .is_some_and(|secure| secure.inner_addrs().contains(&from));
            if from_secure {
                if self.link_open {
                    ToParent::Transmit(&packet).encode(self.channel.queue());
                }
            } else if let Some(secure) = self.secure.as_mut() {
                secure.send(&packet);
            }
            fed = true;
        }
        // Shared with the resend buffer: a bulk's batch is copied once more, into the
        // channel, not first into a frame of its own.
        while let Some((to, frame)) = side.sessions.poll_transmit_shared() {
            let secure_peer = self
                .secure
                .as_mut()
                .is_some_and(|secure| secure.send_to(to, &frame));
            if secure_peer {
                continue;
            }
            if self.link_open {
                ToParent::TransmitTo {
                    to,
                    payload: &frame,
                }
                .encode(self.channel.queue());
            } else {
                side.frames_unsent += 1;
            }
        }
        fed
    }

    /// The engine's outputs (see [`EngineProcess::drain`]).
    fn drain_engine(&mut self, now: Instant) {
        let (engine, channel, secure) = (&mut self.engine, &mut self.channel, &mut self.secure);
        let stamped = &mut self.output_stamped;
        let mut stamp_once = |channel: &mut Channel| {
            if !std::mem::replace(stamped, true) {
                ToParent::Stamp(latency::stamp()).encode(channel.queue());
            }
        };
        let sessions = &mut self.sessions;
        // A state the engine cached goes with the encoding it made then: a bulk's
        // million imports are not encoded twice. Imports and updates go many to a frame.
        let mut table_frames = TableFrames::default();
        while let Some(op) = engine.poll_table_op_packed() {
            stamp_once(channel);
            table_frames.push_packed(channel.queue(), &op, self.local_seen);
            self.table_ops_sent += 1;
        }
        while let Some(ev) = engine.poll_event() {
            if let Event::BulkDone { .. } = ev {
                // Every operation the bulk update made was polled above, before its END
                // event: once the parent has applied this many, the states are in the
                // table. The carp demotion and the syncok log line need no count: they
                // follow on this channel, which the parent reads in order.
                self.bulk_end_op = self.table_ops_sent;
            }
            match ev {
                Event::CarpDemote(on) => ToParent::Demote(on).encode(channel.queue()),
                Event::BulkDone { complete: true } => log_info!(
                    "bulk update received in {} ms, {} states cached",
                    engine.stats().bulk_last_duration_ms,
                    engine.state_count()
                ),
                Event::BulkDone { complete: false } => log_warn!(
                    "bulk update: no peer answered after {} requests; going on as in sync",
                    engine.stats().bulk_tries
                ),
                Event::BulkSendStarted => log_info!("a peer asked for a bulk update: sending"),
                Event::BulkSendDone { states } => log_info!("bulk update sent: {states} states"),
            }
        }
        if engine.syncok() != self.syncok {
            self.syncok = engine.syncok();
            log_info!("syncok {}", u8::from(self.syncok));
        }
        // With unicast syncpeers that are all session peers, the plain link has no
        // kernel peer to serve: only their DATA goes.
        let plain_wanted = match sessions {
            Some(side) => {
                self.config.syncpeers.is_empty()
                    || !self
                        .config
                        .syncpeers
                        .iter()
                        .all(|p| side.sessions.is_session_peer(*p))
            }
            None => true,
        };
        while let Some(t) = engine.poll_transmit() {
            // Down, the engine still builds packets (its queues drain); nobody sends
            // them.
            if self.link_open && plain_wanted {
                stamp_once(channel);
                ToParent::Transmit(&t.payload).encode(channel.queue());
            }
            match (secure.as_mut(), sessions.as_ref()) {
                // A secure peer with a session gets the packet as DATA (below).
                (Some(secure), Some(side)) => {
                    for inner in secure.inner_addrs() {
                        if !side.sessions.is_session_peer(inner) {
                            secure.send_to(inner, &t.payload);
                        }
                    }
                }
                (Some(secure), None) => secure.send(&t.payload),
                (None, _) => {}
            }
            if let Some(side) = sessions.as_mut() {
                if let Err(e) = side.sessions.send_data(now, &t.payload) {
                    log_warn!("pfsyncd peers: {e}");
                }
            }
        }
    }
}

/// A frame of a kind that does not belong on the channel it came on.
fn misplaced(what: &'static str) -> ChannelError {
    ChannelError::Message(crate::daemon::privsep::MessageError::BadValue {
        what,
        field: "channel it came on",
    })
}

/// The log lines of this process, to the parent.
fn forward_log(channel: &mut Channel) {
    crate::daemon::log::take_queued(|level, text| {
        let mut cut = text.len().min(MAX_TEXT);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        ToParent::Log {
            level,
            text: &text[..cut],
        }
        .encode(channel.queue());
    });
}

/// `source`, if the sessions track it as a peer that is not a kernel: a pfsyncd peer, or
/// one that may be, whose bulk request waits until the sessions tell (`bulk.rs`).
fn maybe_pfsyncd(
    sessions: &Option<SessionSide>,
    source: Option<std::net::IpAddr>,
) -> Option<std::net::IpAddr> {
    let (side, src) = (sessions.as_ref()?, source?);
    side.sessions
        .peer(src)
        .filter(|p| !matches!(p.link, Link::Kernel { .. }))
        .map(|_| src)
}
