//! The compact bulk update between pfsyncd peers (issue #14 point 4): a session peer's
//! bulk request is answered with compact record batches in DATA frames, sent as fast as
//! the peers' ACKs open a window, framed by BUS START and END in DATA as well. Kernel
//! peers keep the paced bulk (`engine::bulk`), which runs beside this one when both ask.
//!
//! **Window.** At most [`CompactBulk::window_at`] DATA are in flight past the lowest mark an
//! established session peer told us (its cumulative ACK): about [`WINDOW_BYTES`], and
//! never more than half the resend buffer (in frames of the batch size) nor half the
//! receivers' tracking window, so a NACK for anything in flight is always answered
//! from the buffer (never GONE, never a resync), and a receiver never sees a jump past
//! its window. Until the first mark moves, a plain-link bulk opens with what the
//! receivers' sockets surely hold ([`START_WINDOW_BYTES`]), not 16 frames: a receiver
//! making room for the announced states ACKs late, and found nothing queued then. No packets-per-second guess: the receiver ACKs as its engine takes the
//! frames, so a slow receiver ACKs slowly and the window stays shut.
//!
//! **Loss.** A receiver flooded past its socket loses DATA; it NACKs the gaps it sees
//! and the resend fills them. A lost tail (nothing after it to show a gap) is found by
//! a tail probe: when the window is full and the mark has not moved for [`PROBE_AFTER`],
//! our last DATA goes again with an ACK (see `Sessions::probe_tail`). The END goes
//! after the last batch in the same stream; the receiver holds an END until its stream
//! has no gap (`SessionSide::next_delivery`), so the bulk never ends short.
//!
//! **Size.** At START the sender tells each established peer whose HELLO set
//! [`FEATURE_BULK_SIZE`](ext::hello::FEATURE_BULK_SIZE) how many states the bulk carries
//! at most (BULK_SIZE, see `wire::ext::bulk_size`): the receiver's engine sizes its cache
//! for them and tells its parent, which sizes the memory table, once, rather than both
//! growing by doubling (a rehash and a copy each time) while the states arrive. A hint:
//! the receiver reserves room for the announced count less the states it holds, at most
//! [`MOST_STATES_RESERVED`] and what its state limit leaves, and a lost BULK_SIZE only
//! loses the pre-sizing.
//!
//! **Progress** of both sides is kept here for `ctl stats`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::engine::Engine;
use crate::session::{Link, Sessions};
use crate::state::compact_record::MAX_RECORD_BYTES;
use crate::wire::ext;
use crate::wire::ext::data::{compact_batch_head_len, push_compact_batch_head};
use crate::wire::msg::bus::{STATUS_END, STATUS_START};
use crate::{log_info, log_warn};

/// How long a plain bulk request from a source that may be a pfsyncd peer waits for
/// the sessions to tell (HELLO answered within a round trip, or not at all): then it
/// gets the paced bulk, as a kernel peer. Once per source first seen (and per hour for
/// a kernel peer, as it is probed again).
pub(super) const PLAIN_REQUEST_HOLD: Duration = Duration::from_millis(200);

/// How often a source being probed is sent HELLO again while its plain bulk request
/// is held: a lost HELLO is otherwise retried only after the probe's interval (1 s),
/// past the hold, and a pfsyncd peer behind a lossy link got the paced bulk.
const HELD_HELLO_EVERY: Duration = Duration::from_millis(50);

/// Most HELLOs a held request sends again: one every [`HELD_HELLO_EVERY`] within
/// [`PLAIN_REQUEST_HOLD`] after the probe's first (at 50, 100 and 150 ms). Each is
/// the probe round's next HELLO sent ahead ([`Sessions::hello_again`]), which refuses
/// once the round has none left (2 with the default 3 tries): a kernel peer still
/// gets `probe_tries` HELLOs a round, and is judged one no sooner.
const HELD_HELLOS: usize =
    (PLAIN_REQUEST_HOLD.as_millis() / HELD_HELLO_EVERY.as_millis()) as usize - 1;

/// How long a plain bulk request of a session peer waits for its DATA copy (sent in
/// the same turn) before it is answered itself (a peer that restarted and does not
/// know us yet sends none). A request from a source that was no session peer when it
/// came waits for no copy: a peer sends DATA only in a session, so it sent none.
pub(super) const DATA_COPY_GRACE: Duration = Duration::from_millis(20);

/// Shortest wait of a full window for the mark to move before probing the tail.
pub(super) const PROBE_AFTER: Duration = Duration::from_millis(2);

/// Longest wait before a tail probe, however long the round trips.
const PROBE_AFTER_MAX: Duration = Duration::from_millis(50);

/// Most batches made per call of [`CompactBulk::pump`]: the caller moves them to the
/// parent between calls, so one call never queues more than about this many frames.
const BATCHES_PER_PUMP: usize = 64;

/// Bytes in flight the window aims at. What a window buys is cover for the time an ACK
/// takes to come back (a fraction of a millisecond on a LAN, plus the receiver's
/// [`ack_every`](crate::session::Config::ack_every) frames and our pump's batches);
/// beyond that it only queues frames in front of the receiver, which delays its NACKs'
/// answers past their give-up (10 tries, 20 ms apart) under loss. 4 MiB (half the
/// resend buffer): a receiver on this machine takes some 40 000 frames a second at
/// MTU 1500, and its ACKs come back in bursts, as its engine and parent take turns (a
/// bulk of a million states took 1.28 s with at most 512 KiB in flight, 1.15 s with
/// 2 MiB and 1.08 s with 4 MiB, the window then below its cap).
const WINDOW_BYTES: usize = 4 << 20;

/// Fewest frames in the window whatever their size or the receiver's pace.
const WINDOW_MIN_FRAMES: u64 = 16;

/// Bytes a fresh bulk may have in flight to a plain-link peer before its pace is
/// known. Its receive socket surely holds them: the raw socket asks for 32 MiB and
/// the daemon does not start without it (`net::raw`, SO_RCVBUFFORCE on Linux,
/// SO_RCVBUF within kern.ipc.maxsockbuf on the BSDs), so 1 MiB each leaves room for
/// 32 senders answering one request at once (more lose frames, NACKed and resent).
/// A secure peer's UDP socket may keep the system's default, far less.
const START_WINDOW_BYTES: usize = 1 << 20;

/// How much of the receiver's work the window may queue in front of it, at the pace
/// its marks come back: frames in flight wait in its socket and channel before its
/// sessions see them, and so do the resends its NACKs ask for, which must come within
/// the NACKs' give-up (10 tries 20 ms apart) or the numbers are lost for good: 40 ms
/// is a fifth of that.
const QUEUE_TIME: Duration = Duration::from_millis(40);

/// How often the receiver's pace is measured (frames its mark rose by).
const PACE_PERIOD: Duration = Duration::from_millis(5);

/// The window before the pace is known, for frames of `frame_bytes`: what the
/// receivers' sockets surely hold ([`START_WINDOW_BYTES`] each), or
/// [`WINDOW_MIN_FRAMES`] when a secure peer is among them.
fn start_window(secure_peer: bool, frame_bytes: usize) -> u64 {
    if secure_peer {
        return WINDOW_MIN_FRAMES;
    }
    ((START_WINDOW_BYTES / frame_bytes.max(1)) as u64).max(WINDOW_MIN_FRAMES)
}

/// The most frames in flight for frames of `frame_bytes`, for sessions configured as
/// `sessions`: [`WINDOW_BYTES`], and never more than half the resend buffer (a NACK
/// for anything in flight is answered from it, never GONE) nor half the receivers'
/// tracking window (no jump past it).
pub(super) fn window_cap(sessions: &Sessions, frame_bytes: usize) -> u64 {
    let config = sessions.config();
    let frame_bytes = frame_bytes.max(1);
    let by_buffer = (config.resend_bytes / 2 / frame_bytes) as u64;
    ((WINDOW_BYTES / frame_bytes) as u64)
        .min(config.window / 2)
        .min(by_buffer)
        .max(WINDOW_MIN_FRAMES)
}

/// Bytes of a compact batch that fit one DATA frame in a datagram of the link MTU:
/// the engine's payload room (its packet size, already [`ext::DATA_OVERHEAD`] under
/// the MTU, less its IP reserve) less the content's head (with the ruleset checksum
/// when the engine vouches). The reserve, not the IP header: FreeBSD's dialects keep
/// 40 bytes whatever the family, and the secure link's packet size counts on it, so a
/// batch 20 bytes larger made a wrapped datagram up to 20 bytes over the MTU: two
/// fragments.
/// Never under one record's worst case (a link that small fragments the frame, as it
/// does the engine's own packets).
pub(super) fn batch_limit(engine: &Engine) -> usize {
    let head = compact_batch_head_len(engine.compact_ruleset().is_some());
    engine
        .payload_room()
        .saturating_sub(head)
        .max(1 + MAX_RECORD_BYTES)
}

/// The most states a BULK_SIZE makes room for beyond those held: twice issue 14's
/// million. Room is what a peer's word alone makes us commit: the cache index's 8-byte
/// buckets at most 4/5 full (its pages are mapped as keys land in them, which a
/// bulk's spread soon makes all of them), for 2 000 000 states 32 MB in this process,
/// and as much again in the parent's table index (which applies its own bound), well
/// inside the receiver's memory target (400 MB for a million states, 306 MB used).
/// Beyond it the tables grow as the states come, as without an announcement.
pub(super) const MOST_STATES_RESERVED: u64 = 2_000_000;

/// A compact bulk update received from one peer.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Received {
    pub batches: u64,
    pub states: u64,
    pub refused: u64,
    /// The states its last BULK_SIZE announced.
    pub announced: Option<u64>,
    pub first_at: Option<Instant>,
    pub last_at: Option<Instant>,
}

/// Both sides of the compact bulk.
#[derive(Debug, Default)]
pub(super) struct CompactBulk {
    /// The START of the running bulk went out, at this time.
    started_at: Option<Instant>,
    /// The lowest mark of the peers as last seen, and since when.
    mark: u64,
    mark_since: Option<Instant>,
    last_probe: Option<Instant>,
    /// The receivers' pace in frames a second (their marks' rise, smoothed), and the
    /// mark and time of the last measure.
    pace: f64,
    pace_mark: u64,
    pace_at: Option<Instant>,
    /// The shortest round trip seen in this bulk (a frame sent, the mark past it), and
    /// the frame being timed.
    min_rtt: Option<Duration>,
    timing: Option<(u64, Instant)>,
    /// The window now, in frames.
    pub window: u64,
    /// Counters of what we sent.
    pub bulks_sent: u64,
    pub batches_sent: u64,
    pub states_sent: u64,
    pub tail_probes: u64,
    /// Pumps that found the window full.
    pub window_full: u64,
    /// Since when the window is full (the first pump that found it so), and the time
    /// it was full in all: what the receivers had queued in front of them, the
    /// sender waiting on them. Over a bulk, the rest is the time the window let the
    /// sender make batches as fast as it could.
    full_since: Option<Instant>,
    pub window_full_time: Duration,
    pub last_send_ms: Option<u64>,
    /// Per peer, what its compact bulk brought us.
    pub received: BTreeMap<IpAddr, Received>,
    /// Plain bulk requests not answered yet.
    held: Vec<HeldRequest>,
    /// When each session peer last asked for a bulk in DATA.
    asked_in_data: BTreeMap<IpAddr, Instant>,
    /// Held plain requests answered: compact, paced, and dropped for their DATA copy.
    pub held_compact: u64,
    pub held_paced: u64,
    pub held_dropped: u64,
    /// BULK_SIZE frames sent (one per peer told, per bulk).
    pub sizes_sent: u64,
    /// BULK_SIZE frames received; states room was made for in all (in the cache, and
    /// asked of the parent); announcements that asked for more room than was made
    /// ([`MOST_STATES_RESERVED`] or the state limit).
    pub sizes_received: u64,
    pub states_reserved: u64,
    pub reserves_capped: u64,
    /// Room asked of the parent's table ([`ToParent::ReserveStates`]): how many times,
    /// and up to how many states held the last time.
    ///
    /// [`ToParent::ReserveStates`]: crate::daemon::privsep::ToParent::ReserveStates
    pub parent_asks: u64,
    parent_asked_upto: u64,
}

/// A plain bulk request not answered yet (see [`CompactBulk::answer_held`]).
#[derive(Debug, Clone, Copy)]
struct HeldRequest {
    from: IpAddr,
    since: Instant,
    /// Whether the source was a session peer when it came: only then may a DATA copy
    /// of the request follow.
    copy_may_follow: bool,
    /// HELLOs sent again to the source while it is held ([`HELD_HELLOS`] at most).
    hellos: usize,
}

impl HeldRequest {
    /// When the next HELLO goes again, while the source is probed.
    fn next_hello_at(&self) -> Option<Instant> {
        (self.hellos < HELD_HELLOS)
            .then(|| self.since + HELD_HELLO_EVERY * (self.hellos as u32 + 1))
    }
}

impl CompactBulk {
    /// Sends what the window allows of the engine's compact bulk, if one runs (START
    /// first, END after the last batch). True when frames were queued: the caller moves
    /// them out and calls again while its channel has room.
    pub(super) fn pump(
        &mut self,
        now: Instant,
        engine: &mut Engine,
        sessions: &mut Sessions,
    ) -> bool {
        if !engine.compact_bulk_sending() {
            return false;
        }
        let mut queued = false;
        if self.started_at.is_none() {
            self.started_at = Some(now);
            self.mark_since = Some(now);
            self.pace_at = None;
            self.min_rtt = None;
            self.timing = None;
            self.full_since = None;
            // The walk's count: every state cached now (states filtered out or deleted
            // meanwhile are skipped, and states added during the walk are sent too,
            // but those are few).
            self.sizes_sent += sessions.announce_bulk_size(engine.state_count() as u64) as u64;
            if let Some(start) = engine.bus_packet(now, STATUS_START) {
                let _ = sessions.send_data(now, &start);
            }
            log_info!("a pfsyncd peer asked for a bulk update: sending compact batches");
            // BULK_SIZE and START leave on their own (the caller writes them at once,
            // see `starting`): a window of batches takes milliseconds to make, and the
            // receiver makes room for the states meanwhile. True even when nothing
            // was queued, so that the caller calls again for the batches.
            return true;
        }
        let peers: Vec<IpAddr> = sessions
            .peers()
            .filter(|a| {
                sessions
                    .peer(*a)
                    .is_some_and(|p| p.link == Link::Established)
            })
            .collect();
        let highest = sessions.highest_sent();
        let mark = peers
            .iter()
            .filter_map(|a| sessions.peer(*a).map(|p| p.acked))
            .min()
            .unwrap_or(highest);
        if mark != self.mark {
            self.mark = mark;
            self.mark_since = Some(now);
        }
        let limit = batch_limit(engine);
        let frame_bytes = limit + ext::DATA_OVERHEAD + compact_batch_head_len(true);
        let secure_peer = peers
            .iter()
            .any(|a| sessions.peer(*a).is_some_and(|p| p.secure));
        let window = self.window_at(
            now,
            mark,
            window_cap(sessions, frame_bytes),
            start_window(secure_peer, frame_bytes),
        );
        let in_flight = highest.saturating_sub(mark);
        if in_flight >= window {
            self.window_full += 1;
            self.full_since.get_or_insert(now);
            if self.probe_due(now) {
                self.last_probe = Some(now);
                for peer in &peers {
                    if sessions.probe_tail(*peer) {
                        self.tail_probes += 1;
                        queued = true;
                    }
                }
            }
            return queued;
        }
        if let Some(since) = self.full_since.take() {
            self.window_full_time += now.saturating_duration_since(since);
        }
        let wanted = usize::try_from(window - in_flight)
            .unwrap_or(usize::MAX)
            .min(BATCHES_PER_PUMP);
        // Each batch is made behind room for its DATA frame's head and its content's
        // head, and sent as it is: the walk's buffer is the frame the parent gets and
        // the resend buffer keeps (no copy of 9 KB per datagram in between).
        let mut head = Vec::with_capacity(ext::DATA_OVERHEAD + compact_batch_head_len(true));
        head.resize(ext::DATA_OVERHEAD, 0);
        push_compact_batch_head(&mut head, engine.compact_ruleset());
        let made = match engine.bulk_compact_batches_after(now, wanted, limit, &head) {
            Ok(Some(made)) => made,
            Ok(None) => return queued,
            Err(e) => {
                log_warn!("compact bulk: {e}");
                return queued;
            }
        };
        // Only once the receivers' pace is measured: the first window's frames wait
        // while the receiver makes room for the announced states, and that round trip,
        // kept as the shortest, would set the tail probes' wait for the whole bulk.
        if self.timing.is_none() && self.pace > 0.0 && !made.batches.is_empty() {
            // The first of these frames is timed: its seq is the next to be numbered.
            self.timing = Some((sessions.highest_sent() + 1, now));
        }
        for frame in made.batches {
            if let Err(e) = sessions.send_data_framed(now, frame) {
                log_warn!("compact bulk: {e}");
            }
            self.batches_sent += 1;
            queued = true;
        }
        self.states_sent += made.states;
        if made.finished {
            if let Some(end) = engine.bus_packet(now, STATUS_END) {
                let _ = sessions.send_data(now, &end);
            }
            let started = self.started_at.take().unwrap_or(now);
            let ms = now.saturating_duration_since(started).as_millis() as u64;
            self.bulks_sent += 1;
            self.last_send_ms = Some(ms);
            log_info!("compact bulk update sent in {ms} ms");
            queued = true;
        }
        queued
    }

    /// Whether no compact bulk has been started yet (or the last one ended): a
    /// [`pump`](Self::pump) now starts one, and its first frames are to be written
    /// at once.
    pub(super) fn starting(&self) -> bool {
        self.started_at.is_none()
    }

    /// A plain packet of `from` held a bulk request back (see
    /// `Engine::handle_packet_holding_bulk_request`); the sessions are probing it, or
    /// it is a session peer, asked again who it is (a restart shows).
    pub(super) fn hold_request(&mut self, now: Instant, from: IpAddr, sessions: &mut Sessions) {
        let session_peer = sessions.is_session_peer(from);
        if !self.held.iter().any(|h| h.from == from) {
            self.held.push(HeldRequest {
                from,
                since: now,
                copy_may_follow: session_peer,
                hellos: 0,
            });
        }
        if session_peer {
            sessions.reprobe(from);
        }
    }

    /// A session peer's DATA asked for a bulk (answered by the engine, compact).
    pub(super) fn note_asked_in_data(&mut self, now: Instant, from: IpAddr) {
        self.asked_in_data.insert(from, now);
    }

    /// Answers the held plain requests whose source is now known: compact for a
    /// session peer (unless its DATA copy was answered), paced for a source that did
    /// not answer HELLO within [`PLAIN_REQUEST_HOLD`]. A source still probed is sent
    /// HELLO again every [`HELD_HELLO_EVERY`] meanwhile (a lost HELLO).
    pub(super) fn answer_held(
        &mut self,
        now: Instant,
        engine: &mut Engine,
        sessions: &mut Sessions,
    ) -> bool {
        let mut answered = false;
        let mut i = 0;
        while i < self.held.len() {
            let HeldRequest {
                from,
                since,
                copy_may_follow,
                ..
            } = self.held[i];
            let copy_answered = self
                .asked_in_data
                .get(&from)
                .is_some_and(|t| *t + DATA_COPY_GRACE >= since);
            let session = sessions.is_session_peer(from);
            let waited = now.saturating_duration_since(since);
            let verdict = if copy_answered {
                self.held_dropped += 1;
                true
            } else if session && (!copy_may_follow || waited >= DATA_COPY_GRACE) {
                self.held_compact += 1;
                engine.answer_bulk_request(now, true);
                true
            } else if !session && waited >= PLAIN_REQUEST_HOLD {
                self.held_paced += 1;
                engine.answer_bulk_request(now, false);
                true
            } else {
                let held = &mut self.held[i];
                if !session && held.next_hello_at().is_some_and(|t| t <= now) {
                    // Counted whether sent or not (the source may be a kernel peer by
                    // now): the bound holds either way.
                    held.hellos += 1;
                    sessions.hello_again(from);
                }
                false
            };
            if verdict {
                self.held.swap_remove(i);
                answered = true;
            } else {
                i += 1;
            }
        }
        answered
    }

    /// The window: the receivers' measured pace times the shortest round trip plus
    /// [`QUEUE_TIME`], between [`WINDOW_MIN_FRAMES`] and `cap`; `start` frames (see
    /// [`start_window`]) until a pace is measured. While the window limits
    /// the pace, it holds a round trip and [`QUEUE_TIME`] more of frames at that pace,
    /// so the measured pace and the window grow until the receiver is what limits them;
    /// then at most [`QUEUE_TIME`] of its work waits in front of it. (The shortest
    /// round trip, not the last: the last includes the queue the window made.)
    fn window_at(&mut self, now: Instant, mark: u64, cap: u64, start: u64) -> u64 {
        match self.pace_at {
            None => {
                self.pace_at = Some(now);
                self.pace_mark = mark;
            }
            Some(at) if now.saturating_duration_since(at) >= PACE_PERIOD => {
                let secs = now.saturating_duration_since(at).as_secs_f64();
                let sample = mark.saturating_sub(self.pace_mark) as f64 / secs;
                self.pace = if self.pace == 0.0 {
                    sample
                } else {
                    0.75 * self.pace + 0.25 * sample
                };
                self.pace_at = Some(now);
                self.pace_mark = mark;
            }
            Some(_) => {}
        }
        if let Some((seq, sent)) = self.timing {
            if mark >= seq {
                let rtt = now.saturating_duration_since(sent);
                self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
                self.timing = None;
            }
        }
        let cover = self.min_rtt.unwrap_or(Duration::ZERO) + QUEUE_TIME;
        let aimed = (self.pace * cover.as_secs_f64()) as u64;
        // No pace yet (no mark moved since the start): what the receivers surely hold.
        let least = if self.pace == 0.0 {
            start
        } else {
            WINDOW_MIN_FRAMES
        };
        self.window = aimed
            .max(least)
            .clamp(WINDOW_MIN_FRAMES, cap.max(WINDOW_MIN_FRAMES));
        self.window
    }

    /// How long a full window waits for the mark before a tail probe: twice the
    /// shortest round trip, at least [`PROBE_AFTER`] (a loaded machine's round trips
    /// are scheduling delays, which a probe would only add to).
    fn probe_after(&self) -> Duration {
        (self.min_rtt.unwrap_or(Duration::ZERO) * 2).clamp(PROBE_AFTER, PROBE_AFTER_MAX)
    }

    fn probe_due(&self, now: Instant) -> bool {
        let after = self.probe_after();
        let still = self
            .mark_since
            .is_some_and(|t| now.saturating_duration_since(t) >= after);
        let spaced = self
            .last_probe
            .is_none_or(|t| now.saturating_duration_since(t) >= after);
        still && spaced
    }

    /// When the loop must come back for a tail probe, while a bulk runs.
    ///
    /// `can_pump`: whether the caller would pump now (its channel to the parent has
    /// room). A tail probe is only sent by a pump: while the channel is full the probe's
    /// time, once passed, made the loop spin (a poll of 0 ms a turn, a core busy until
    /// the parent took the queue; suspected in the bench runs where the sender used
    /// 0.44 CPU s for a bulk that takes 0.17); the channel's writability brings the loop
    /// back instead.
    pub(super) fn deadline(
        &self,
        now: Instant,
        engine: &Engine,
        can_pump: bool,
    ) -> Option<Instant> {
        // A held request's verdict may come by time alone at the end of its grace
        // (a session peer's) and of its hold; its next HELLO before. Only what is
        // still ahead: a passed grace of a request still held (its source no session
        // peer) would make the loop spin until the hold ends.
        let held = self
            .held
            .iter()
            .flat_map(|h| {
                [
                    h.copy_may_follow.then(|| h.since + DATA_COPY_GRACE),
                    Some(h.since + PLAIN_REQUEST_HOLD),
                    h.next_hello_at(),
                ]
            })
            .flatten()
            .filter(|t| *t > now)
            .min();
        let probe = self
            .mark_since
            .filter(|_| can_pump && engine.compact_bulk_sending())
            .map(|since| {
                let after = self.probe_after();
                (since + after).max(self.last_probe.map_or(since, |t| t + after))
            });
        held.into_iter().chain(probe).min()
    }

    /// A compact batch of `from` reached the engine (`states` taken, or refused); the
    /// batches of `from` refused so far.
    pub(super) fn note_received(
        &mut self,
        now: Instant,
        from: IpAddr,
        states: Option<usize>,
    ) -> u64 {
        let r = self.received.entry(from).or_default();
        match states {
            Some(n) => {
                r.batches += 1;
                r.states += n as u64;
            }
            None => r.refused += 1,
        }
        r.first_at.get_or_insert(now);
        r.last_at = Some(now);
        r.refused
    }

    /// `from` announced a compact bulk of about `states` states (BULK_SIZE): the
    /// engine's cache makes room for those it does not hold yet, within
    /// [`MOST_STATES_RESERVED`] and its state limit. `ask_parent` is given for how
    /// many states the parent's table is to make room, and it is returned (0: nothing
    /// asked): only when that reaches a quarter past the last room asked of it, so
    /// that a peer repeating or raising its count a little at a time makes a few asks
    /// (and parent log lines), not one each. The parent is asked first, so that both
    /// processes make their room at once (on two cores), not one after the other:
    /// each takes some milliseconds for a million states, while the first batches wait.
    pub(super) fn note_size_announced(
        &mut self,
        from: IpAddr,
        states: u64,
        engine: &mut Engine,
        ask_parent: impl FnOnce(u64),
    ) -> u64 {
        self.sizes_received += 1;
        self.received.entry(from).or_default().announced = Some(states);
        let held = engine.state_count() as u64;
        let wanted = states.saturating_sub(held);
        let room = wanted.min(MOST_STATES_RESERVED);
        let reserved = room.min(engine.states_room_left() as u64);
        if reserved < wanted {
            self.reserves_capped += 1;
        }
        self.states_reserved += reserved;
        let upto = held + reserved;
        let asked = if reserved == 0 || upto <= self.parent_asked_upto + self.parent_asked_upto / 4
        {
            0
        } else {
            self.parent_asked_upto = upto;
            self.parent_asks += 1;
            ask_parent(reserved);
            reserved
        };
        engine.reserve_states(reserved as usize);
        asked
    }

    /// `ctl stats`'s line about the compact bulk.
    pub(super) fn stats_text(&self) -> String {
        let mut out = format!(
            "\tcompact bulk sent: {} ({} batches, {} states, last in {} ms), window full {} ({} ms), tail probes {}\n",
            self.bulks_sent,
            self.batches_sent,
            self.states_sent,
            self.last_send_ms.map_or_else(|| "-".to_string(), |ms| ms.to_string()),
            self.window_full,
            self.window_full_time.as_millis(),
            self.tail_probes,
        );
        out.push_str(&format!(
            "\tbulk sizes: {} announced to peers, {} received, room made for {} states, {} capped, {} asked of the table\n",
            self.sizes_sent, self.sizes_received, self.states_reserved, self.reserves_capped, self.parent_asks,
        ));
        for (peer, r) in &self.received {
            out.push_str(&format!(
                "\tcompact bulk from {peer}: {} batches, {} states in {:.3} s, {} refused, size announced {}\n",
                r.batches,
                r.states,
                seconds(r),
                r.refused,
                r.announced.map_or_else(|| "-".to_string(), |n| n.to_string()),
            ));
        }
        out
    }

    /// `ctl stats --json`'s `compact_bulk` object.
    pub(super) fn json(&self) -> Value {
        let received: serde_json::Map<String, Value> = self
            .received
            .iter()
            .map(|(peer, r)| {
                (
                    peer.to_string(),
                    json!({
                        "batches": r.batches,
                        "states": r.states,
                        "refused": r.refused,
                        "seconds": seconds(r),
                        "announced": r.announced,
                    }),
                )
            })
            .collect();
        json!({
            "sending": self.started_at.is_some(),
            "bulks_sent": self.bulks_sent,
            "batches_sent": self.batches_sent,
            "states_sent": self.states_sent,
            "last_send_ms": self.last_send_ms,
            "window_full": self.window_full,
            "window_full_ms": self.window_full_time.as_millis() as u64,
            "window": self.window,
            "pace_frames_per_s": self.pace as u64,
            "min_rtt_us": self.min_rtt.map(|d| d.as_micros() as u64),
            "tail_probes": self.tail_probes,
            "held_requests_compact": self.held_compact,
            "held_requests_paced": self.held_paced,
            "held_requests_dropped": self.held_dropped,
            "sizes_sent": self.sizes_sent,
            "sizes_received": self.sizes_received,
            "states_reserved": self.states_reserved,
            "reserves_capped": self.reserves_capped,
            "parent_asks": self.parent_asks,
            "received": received,
        })
    }
}

/// Seconds from a peer's first compact batch to its last.
fn seconds(r: &Received) -> f64 {
    match (r.first_at, r.last_at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64(),
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::engine::{Config, LocalChange};
    use crate::wire::ext::data::{compact_batch_content, Content};
    use crate::wire::Dialect;

    /// Every compact batch's DATA frame fits the link MTU whole, vouched for (FreeBSD:
    /// 16 bytes of ruleset checksum in its head) or not (OpenBSD): a frame one byte
    /// over is sent as two IP fragments, twice the packets and a reassembly at the
    /// receiver.
    #[test]
    fn a_compact_batch_frame_fits_the_link_mtu() {
        for dialect in [Dialect::FreeBsd1400, Dialect::OpenBsd] {
            for link_mtu in [1500, 9000, 1280] {
                let mut config = Config::new(1, dialect);
                // As link_settings sets it with the extensions on.
                config.mtu = link_mtu - ext::DATA_OVERHEAD;
                config.bulk_paced = false;
                let mut engine = Engine::new(config);
                let now = Instant::now();
                for s in crate::table::synth::Synth::new(3, 1).states(2000) {
                    engine.handle_local(now, LocalChange::Insert(s));
                }
                engine.flush(now);
                while engine.poll_transmit().is_some() {}
                engine.answer_bulk_request(now, true);
                let limit = batch_limit(&engine);
                let ruleset = engine.compact_ruleset();
                // As the pump makes them: each batch behind its content's head.
                let mut head = Vec::new();
                push_compact_batch_head(&mut head, ruleset);
                let mut largest = 0;
                loop {
                    let made = engine
                        .bulk_compact_batches_after(now, 8, limit, &head)
                        .unwrap()
                        .unwrap();
                    for content in &made.batches {
                        let Content::CompactBatch {
                            ruleset: vouched,
                            batch,
                        } = Content::of(content)
                        else {
                            panic!("not a compact batch content");
                        };
                        assert_eq!(vouched, ruleset);
                        assert_eq!(content[..], compact_batch_content(ruleset, batch)[..]);
                        let datagram =
                            engine.config().ip_header_len + ext::DATA_OVERHEAD + content.len();
                        largest = largest.max(datagram);
                    }
                    if made.finished {
                        break;
                    }
                }
                assert!(
                    largest <= link_mtu,
                    "{dialect:?}: a {largest}-byte DATA datagram on a {link_mtu} link"
                );
                // Full, too: within one record of the MTU.
                assert!(
                    largest + 100 > link_mtu,
                    "{dialect:?}: {largest} of {link_mtu}"
                );
            }
        }
    }

    /// A receiver slower than the link (a loaded one taking 2 ms a frame, a jumbo
    /// frame's ~180 states) that tells its mark every `ack_every` frames, as the
    /// sessions' receivers do: the window must keep frames waiting at it when its ACK
    /// leaves, or it sits idle a round trip per ACK with CPU to spare. Simulated in
    /// steps of 50 us over 3 s; the sender runs `pump`'s window and timing. The
    /// receiver is a model (a steady cost per frame, fixed delays), not a measurement:
    /// a loaded machine's receiver is descheduled at random, which this leaves out.
    #[test]
    fn the_window_keeps_a_slow_receiver_busy_between_its_acks() {
        for (one_way, per_frame) in [(500, 2_000), (3_000, 2_000), (3_000, 5_000), (200, 500)] {
            let idle = receiver_idle_share(one_way, per_frame, 1500, 58);
            assert!(idle < 0.05, "{one_way} us each way, {per_frame} us a frame");
        }
        // A bulk at MTU 9000 as the bench measured it: some 230 us of the receiver's
        // work a frame (183 states), round trips of 1 to 5 ms, the window's own cap.
        let cap = 466;
        for one_way in [200, 500, 1_000, 2_500] {
            let idle = receiver_idle_share(one_way, 230, 9000, cap);
            assert!(idle < 0.05, "MTU 9000, {one_way} us each way");
        }
    }

    /// The share of the time the receiver of frames of `frame_bytes` sits idle, as
    /// the model of `the_window_keeps_a_slow_receiver_busy_between_its_acks` runs it,
    /// with at most `cap` frames in flight.
    fn receiver_idle_share(one_way: u64, per_frame: u64, frame_bytes: usize, cap: u64) -> f64 {
        // The sessions' cadence: an ACK every `ack_every` DATA or `ack_bytes` of them.
        let config = crate::session::Config::new(1, 1);
        let ack_every = config
            .ack_every
            .min(config.ack_bytes.div_ceil(frame_bytes) as u64);
        let t0 = Instant::now();
        let at = |us: u64| t0 + Duration::from_micros(us);
        let mut bulk = CompactBulk::default();
        let (mut highest, mut mark) = (0u64, 0u64);
        let mut arrivals = std::collections::VecDeque::new();
        let mut acks = std::collections::VecDeque::new();
        let (mut processed, mut told, mut busy_until) = (0u64, 0u64, None::<u64>);
        let mut idle_us = 0;
        let (warm_up, end, step) = (500_000u64, 3_000_000u64, 50u64);
        for now_us in (0..end).step_by(step as usize) {
            while acks.front().is_some_and(|&(t, _)| t <= now_us) {
                mark = acks.pop_front().expect("one").1;
            }
            if busy_until.is_some_and(|t| t <= now_us) {
                busy_until = None;
                processed += 1;
                if processed >= told + ack_every {
                    told = processed;
                    acks.push_back((now_us + one_way, told));
                }
            }
            if busy_until.is_none() {
                if arrivals.front().is_some_and(|&t| t <= now_us) {
                    arrivals.pop_front();
                    busy_until = Some(now_us + per_frame);
                } else if now_us >= warm_up {
                    idle_us += step;
                }
            }
            let window = bulk.window_at(at(now_us), mark, cap, WINDOW_MIN_FRAMES);
            if highest - mark < window && bulk.timing.is_none() {
                bulk.timing = Some((highest + 1, at(now_us)));
            }
            while highest - mark < window {
                highest += 1;
                arrivals.push_back(now_us + one_way);
            }
        }
        let idle = idle_us as f64 / (end - warm_up) as f64;
        eprintln!(
            "{one_way} us each way, {per_frame} us a frame of {frame_bytes} bytes, an ACK every \
             {ack_every} frames: the receiver idle {:.1} % of the time (window {}, pace {:.0} \
             frames/s, {} frames done)",
            idle * 100.0,
            bulk.window,
            bulk.pace,
            processed
        );
        idle
    }

    /// Two session layers, `a` (10.0.0.1) and `b` (10.0.0.2), not yet peers.
    fn session_pair() -> (Sessions, Sessions, IpAddr, IpAddr) {
        let (addr_a, addr_b): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a = Sessions::new(crate::session::Config::new(1, 0xa));
        let b = Sessions::new(crate::session::Config::new(2, 0xb));
        (a, b, addr_a, addr_b)
    }

    /// Frames passed between `a` and `b` at once until nothing moves.
    fn exchange(now: Instant, a: &mut Sessions, addr_a: IpAddr, b: &mut Sessions, addr_b: IpAddr) {
        loop {
            let mut moved = false;
            while let Some((_, bytes)) = a.poll_transmit() {
                b.handle_frame(now, addr_a, &bytes);
                moved = true;
            }
            while let Some((_, bytes)) = b.poll_transmit() {
                a.handle_frame(now, addr_b, &bytes);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    fn engine_with_states(now: Instant) -> Engine {
        let mut config = Config::new(1, Dialect::FreeBsd1400);
        config.mtu = 1500 - ext::DATA_OVERHEAD;
        config.bulk_paced = false;
        let mut engine = Engine::new(config);
        for s in crate::table::synth::Synth::new(1, 1).states(100) {
            engine.handle_local(now, LocalChange::Insert(s));
        }
        engine.flush(now);
        while engine.poll_transmit().is_some() {}
        engine
    }

    /// A node that starts late asks in plain pfsync before its sessions know anyone: no
    /// DATA copy of that request can follow, so it is answered (compact) as soon as the
    /// sessions tell it is a pfsyncd peer, not a grace period later (which was 20 ms
    /// of every late node's bulk).
    #[test]
    fn a_request_from_a_source_not_yet_a_session_peer_is_answered_once_the_session_forms() {
        let now = Instant::now();
        let mut engine = engine_with_states(now);
        let (mut a, mut b, addr_a, addr_b) = session_pair();
        let mut bulk = CompactBulk::default();
        bulk.hold_request(now, addr_b, &mut a);
        assert!(
            !bulk.answer_held(now, &mut engine, &mut a),
            "not a session peer yet"
        );
        a.add_secure_peer(now, addr_b);
        b.add_secure_peer(now, addr_a);
        exchange(now, &mut a, addr_a, &mut b, addr_b);
        assert!(a.is_session_peer(addr_b));
        let soon = now + Duration::from_millis(1);
        assert!(
            bulk.answer_held(soon, &mut engine, &mut a),
            "answered once the session formed"
        );
        assert_eq!(bulk.held_compact, 1);
        assert!(engine.compact_bulk_sending());
    }

    /// A late node's plain request from a source being probed, whose first HELLO is
    /// lost (10 % loss): the next regular probe comes a second later, past the hold,
    /// and the node would get the paced bulk. While the request is held the source is
    /// sent HELLO again within the hold, so the session forms and the bulk is compact.
    #[test]
    fn a_held_request_whose_hello_was_lost_still_gets_the_compact_bulk() {
        let t0 = Instant::now();
        let mut engine = engine_with_states(t0);
        let (mut a, mut b, addr_a, addr_b) = session_pair();
        a.note_plain(t0, addr_b);
        let lost = a.poll_transmit().expect("the first HELLO");
        assert_eq!(lost.0, addr_b);
        let mut bulk = CompactBulk::default();
        bulk.hold_request(t0, addr_b, &mut a);
        let mut answered_at = None;
        for ms in 1..=250 {
            let now = t0 + Duration::from_millis(ms);
            a.handle_timeout(now);
            exchange(now, &mut a, addr_a, &mut b, addr_b);
            if bulk.answer_held(now, &mut engine, &mut a) {
                answered_at = Some(ms);
                break;
            }
            exchange(now, &mut a, addr_a, &mut b, addr_b);
        }
        assert_eq!(bulk.held_paced, 0, "taken for a kernel peer");
        assert_eq!(bulk.held_compact, 1);
        assert!(answered_at.is_some_and(|ms| ms < PLAIN_REQUEST_HOLD.as_millis() as u64));
        assert!(engine.compact_bulk_sending());
    }

    /// A kernel peer's held bulk request costs it no HELLO beyond the probe round's
    /// `probe_tries`: those left are sent ahead within the hold and not again at
    /// their time, and it is judged a kernel peer after `probe_tries` intervals, no
    /// sooner.
    #[test]
    fn a_kernel_peers_held_request_costs_a_bounded_number_of_hellos() {
        let t0 = Instant::now();
        let mut engine = engine_with_states(t0);
        let (mut a, _b, _addr_a, addr_b) = session_pair();
        let config = a.config().clone();
        a.note_plain(t0, addr_b);
        let mut bulk = CompactBulk::default();
        bulk.hold_request(t0, addr_b, &mut a);
        let mut hellos_in_hold = 0;
        let mut hellos = 0;
        let mut kernel_at = None;
        for ms in 0..=4_000u64 {
            let now = t0 + Duration::from_millis(ms);
            a.handle_timeout(now);
            bulk.answer_held(now, &mut engine, &mut a);
            // The loop is woken when something is due, never at once (a spin).
            if let Some(due) = bulk.deadline(now, &engine, true) {
                assert!(due > now, "{ms} ms: a deadline passed");
            }
            while let Some((to, _)) = a.poll_transmit() {
                assert_eq!(to, addr_b);
                hellos += 1;
                if ms < PLAIN_REQUEST_HOLD.as_millis() as u64 {
                    hellos_in_hold += 1;
                }
            }
            if kernel_at.is_none()
                && a.peer(addr_b)
                    .is_some_and(|p| matches!(p.link, Link::Kernel { .. }))
            {
                kernel_at = Some(ms);
            }
        }
        assert_eq!(bulk.held_paced, 1);
        assert_eq!(hellos_in_hold, config.probe_tries as usize);
        assert_eq!(hellos, config.probe_tries as usize);
        assert_eq!(
            kernel_at,
            Some(config.probe_interval.as_millis() as u64 * u64::from(config.probe_tries))
        );
    }

    /// A fresh bulk to a plain-link peer opens with what its receive socket surely
    /// holds ([`START_WINDOW_BYTES`]), not 16 frames: a receiver making room for the
    /// announced states (both its processes, some 10 ms for a million) ACKs late, and
    /// 16 jumbo frames left it nothing queued when it was done; a secure peer, whose
    /// UDP buffer may be the system's default, starts at [`WINDOW_MIN_FRAMES`]. Once
    /// paced, the window is the pace's, as before.
    #[test]
    fn a_fresh_bulk_opens_with_what_the_receivers_socket_holds() {
        let t0 = Instant::now();
        let frame = 9000;
        let cap = 466;
        let mut plain = CompactBulk::default();
        let start = start_window(false, frame);
        assert_eq!(start, (START_WINDOW_BYTES / frame) as u64);
        assert!(start > 100, "{start} frames");
        assert_eq!(plain.window_at(t0, 0, cap, start), start);
        // No ACK yet 5 ms on (a receiver busy making room): still open that far.
        assert_eq!(plain.window_at(t0 + PACE_PERIOD, 0, cap, start), start);
        // Never past the cap, however small it is.
        assert_eq!(CompactBulk::default().window_at(t0, 0, 40, start), 40);
        // The pace measured: the pace's window (30 frames in 5 ms, 6 000 a second,
        // times the queue time), as before.
        let paced = plain.window_at(t0 + PACE_PERIOD * 2, 30, cap, start);
        assert_eq!(paced, (6_000.0 * QUEUE_TIME.as_secs_f64()) as u64);
        // A secure peer.
        let mut secure = CompactBulk::default();
        let start = start_window(true, frame);
        assert_eq!(start, WINDOW_MIN_FRAMES);
        assert_eq!(secure.window_at(t0, 0, cap, start), WINDOW_MIN_FRAMES);
    }

    /// A session peer's plain request still waits for its DATA copy (sent in the same
    /// turn), so that the bulk is answered once.
    #[test]
    fn a_session_peers_plain_request_waits_for_its_data_copy() {
        let now = Instant::now();
        let mut engine = engine_with_states(now);
        let (mut a, mut b, addr_a, addr_b) = session_pair();
        a.add_secure_peer(now, addr_b);
        b.add_secure_peer(now, addr_a);
        exchange(now, &mut a, addr_a, &mut b, addr_b);
        let mut bulk = CompactBulk::default();
        bulk.hold_request(now, addr_b, &mut a);
        let soon = now + Duration::from_millis(1);
        assert!(
            !bulk.answer_held(soon, &mut engine, &mut a),
            "its copy may follow"
        );
        assert!(!engine.compact_bulk_sending());
        let later = now + DATA_COPY_GRACE;
        assert!(bulk.answer_held(later, &mut engine, &mut a));
        assert_eq!(bulk.held_compact, 1);
    }

    /// BULK_SIZE and START leave on their own, before the first batches are made (a
    /// window's worth took the sender some 2 ms, which the receiver waited for before
    /// it could start making room for the states).
    #[test]
    fn the_size_and_start_leave_before_the_first_batches_are_made() {
        let now = Instant::now();
        let mut engine = engine_with_states(now);
        let (mut a, mut b, addr_a, addr_b) = session_pair();
        a.add_secure_peer(now, addr_b);
        b.add_secure_peer(now, addr_a);
        exchange(now, &mut a, addr_a, &mut b, addr_b);
        let mut sender = CompactBulk::default();
        engine.answer_bulk_request(now, true);
        let kinds = |a: &mut Sessions| -> Vec<ext::Kind> {
            std::iter::from_fn(|| a.poll_transmit())
                .map(|(_, f)| ext::FrameRepr::parse(&f).unwrap().body.kind())
                .collect()
        };
        assert!(sender.pump(now, &mut engine, &mut a));
        assert_eq!(kinds(&mut a), [ext::Kind::BulkSize, ext::Kind::Data]);
        assert_eq!(sender.batches_sent, 0);
        assert!(sender.pump(now, &mut engine, &mut a));
        assert!(sender.batches_sent > 0);
        let next = kinds(&mut a);
        assert!(
            !next.is_empty() && next.iter().all(|k| *k == ext::Kind::Data),
            "{next:?}"
        );
    }

    /// A compact bulk of 2 000 states under way from `a` to its secure peer `b`, its
    /// first two pumps done at `now`: the engine, both sessions with their addresses,
    /// and the sender.
    fn bulk_under_way(now: Instant) -> (Engine, Sessions, Sessions, IpAddr, IpAddr, CompactBulk) {
        let mut engine = Engine::new(Config {
            mtu: 1500 - ext::DATA_OVERHEAD,
            bulk_paced: false,
            ..Config::new(1, Dialect::FreeBsd1400)
        });
        for s in crate::table::synth::Synth::new(1, 1).states(2_000) {
            engine.handle_local(now, LocalChange::Insert(s));
        }
        engine.flush(now);
        while engine.poll_transmit().is_some() {}
        let (mut a, mut b, addr_a, addr_b) = session_pair();
        a.add_secure_peer(now, addr_b);
        b.add_secure_peer(now, addr_a);
        exchange(now, &mut a, addr_a, &mut b, addr_b);
        let mut sender = CompactBulk::default();
        engine.answer_bulk_request(now, true);
        assert!(sender.pump(now, &mut engine, &mut a));
        assert!(sender.pump(now, &mut engine, &mut a));
        (engine, a, b, addr_a, addr_b, sender)
    }

    /// A due tail probe wakes the engine's loop only while it can pump: with its channel
    /// full, a passed probe time made the loop poll 0 ms a turn.
    #[test]
    fn a_due_tail_probe_wakes_the_loop_only_when_it_can_pump() {
        let now = Instant::now();
        let (engine, _a, _b, _addr_a, _addr_b, sender) = bulk_under_way(now);
        assert!(engine.compact_bulk_sending());
        // No ACK for long: the probe is due.
        let later = now + Duration::from_millis(100);
        let due = sender.deadline(later, &engine, true);
        assert!(due.is_some_and(|t| t <= later), "{due:?}");
        // The channel full, nothing to wait for by time: its writability wakes the loop.
        let spun = sender.deadline(later, &engine, false);
        assert!(
            spun.is_none_or(|t| t > later),
            "a passed deadline: {spun:?}"
        );
    }

    /// The first window's frames are not timed: they wait at the receiver while it
    /// makes room for the announced states (some 10 ms for a million), and a round
    /// trip of that, kept as the shortest for the whole bulk, put the tail probes
    /// 30 ms apart. Frames sent once the receiver's pace is measured are.
    #[test]
    fn the_first_windows_frames_are_not_timed() {
        let now = Instant::now();
        let (mut engine, mut a, mut b, addr_a, addr_b, mut sender) = bulk_under_way(now);
        assert!(sender.batches_sent > 0);
        assert_eq!(sender.timing, None, "a first-window frame timed");
        // The receiver takes them and ACKs; its pace is measured a period on.
        let later = now + PACE_PERIOD;
        exchange(later, &mut a, addr_a, &mut b, addr_b);
        sender.pump(later, &mut engine, &mut a);
        assert!(sender.pace > 0.0);
        assert!(sender.timing.is_some(), "frames sent once paced are timed");
    }

    /// At START the sender tells its session peer the bulk's size (BULK_SIZE, before
    /// the START's DATA), and nothing at all to a kernel peer beside it; the receiver's
    /// engine makes room for the states it does not hold, and counts it.
    #[test]
    fn the_start_announces_the_size_to_session_peers_only() {
        let now = Instant::now();
        let mut engine = engine_with_states(now);
        let (mut a, mut b, addr_a, addr_b) = session_pair();
        a.add_secure_peer(now, addr_b);
        b.add_secure_peer(now, addr_a);
        exchange(now, &mut a, addr_a, &mut b, addr_b);
        assert!(a.is_session_peer(addr_b));
        // A kernel peer: seen in plain pfsync, never answering HELLO.
        let kernel: IpAddr = "10.0.0.9".parse().unwrap();
        a.note_plain(now, kernel);
        let mut t = now;
        let is_kernel = |a: &Sessions| matches!(a.peer(kernel).unwrap().link, Link::Kernel { .. });
        while let Some(next) = a.poll_timeout().filter(|_| !is_kernel(&a)) {
            t = next;
            a.handle_timeout(t);
        }
        assert!(is_kernel(&a));
        while a.poll_transmit().is_some() {}
        let mut sender = CompactBulk::default();
        engine.answer_bulk_request(t, true);
        assert!(sender.pump(t, &mut engine, &mut a));
        let frames: Vec<(IpAddr, Vec<u8>)> = std::iter::from_fn(|| a.poll_transmit()).collect();
        assert!(
            frames.iter().all(|(to, _)| *to == addr_b),
            "nothing new to the kernel peer"
        );
        let kinds: Vec<ext::Kind> = frames
            .iter()
            .map(|(_, f)| ext::FrameRepr::parse(f).unwrap().body.kind())
            .collect();
        assert_eq!(
            kinds[..2],
            [ext::Kind::BulkSize, ext::Kind::Data],
            "{kinds:?}"
        );
        assert_eq!(sender.sizes_sent, 1);

        let mut receiver_engine = Engine::new(Config::new(2, Dialect::FreeBsd1400));
        let mut receiver = CompactBulk::default();
        b.handle_frame(t, addr_a, &frames[0].1);
        let announced = std::iter::from_fn(|| b.poll_event()).find_map(|e| match e {
            crate::session::Event::BulkSizeAnnounced { peer, states } => Some((peer, states)),
            _ => None,
        });
        assert_eq!(announced, Some((addr_a, 100)));
        assert_eq!(
            receiver.note_size_announced(addr_a, 100, &mut receiver_engine, |_| {}),
            100
        );
        assert_eq!(receiver.states_reserved, 100);
        assert_eq!(receiver.reserves_capped, 0);
        assert_eq!(receiver.received[&addr_a].announced, Some(100));
        let stats = receiver.json();
        assert_eq!(stats["sizes_received"], 1);
        assert_eq!(stats["states_reserved"], 100);
        assert_eq!(stats["received"][addr_a.to_string()]["announced"], 100);
    }

    /// What an announcement makes room for is bounded: the states held are not counted
    /// again, and no more than [`MOST_STATES_RESERVED`] nor what the state limit leaves
    /// (a capped announcement is counted). A hostile or buggy peer's count commits no
    /// more than that.
    #[test]
    fn the_room_an_announcement_makes_is_bounded() {
        let now = Instant::now();
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let mut bulk = CompactBulk::default();

        let mut limited = Engine::new(Config {
            max_states: 1_000,
            ..Config::new(2, Dialect::FreeBsd1400)
        });
        for s in crate::table::synth::Synth::new(1, 1).states(10) {
            limited.handle_local(now, LocalChange::Insert(s));
        }
        assert_eq!(limited.state_count(), 10);
        assert_eq!(
            bulk.note_size_announced(peer, 5_000, &mut limited, |_| {}),
            990
        );
        assert_eq!(bulk.reserves_capped, 1);
        // Held already: nothing more to make room for, nothing to ask the parent.
        assert_eq!(bulk.note_size_announced(peer, 10, &mut limited, |_| {}), 0);
        assert_eq!(bulk.note_size_announced(peer, 0, &mut limited, |_| {}), 0);
        assert_eq!(bulk.reserves_capped, 1);

        let mut unlimited = Engine::new(Config {
            max_states: usize::MAX,
            ..Config::new(2, Dialect::FreeBsd1400)
        });
        assert_eq!(
            bulk.note_size_announced(peer, u64::MAX, &mut unlimited, |_| {}),
            MOST_STATES_RESERVED
        );
        assert_eq!(bulk.reserves_capped, 2);
        assert_eq!(bulk.sizes_received, 4);
        assert_eq!(bulk.states_reserved, 990 + MOST_STATES_RESERVED);
        assert_eq!(bulk.received[&peer].announced, Some(u64::MAX));
        assert!(bulk
            .stats_text()
            .contains("4 received, room made for 2000990 states, 2 capped"));
    }

    /// A peer that repeats its announcement, or raises its count a little at a time,
    /// asks the parent for room a few times only (each ask a log line there), and
    /// never past [`MOST_STATES_RESERVED`] beyond what is held.
    #[test]
    fn repeated_announcements_ask_the_parent_a_few_times() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let mut bulk = CompactBulk::default();
        let mut engine = Engine::new(Config::new(2, Dialect::FreeBsd1400));
        let mut asked = Vec::new();
        for states in (1..=3_000_000u64).step_by(997).chain([u64::MAX; 100]) {
            let room = bulk.note_size_announced(peer, states, &mut engine, |_| {});
            if room > 0 {
                asked.push(room);
            }
        }
        assert!(asked.len() < 70, "{} asks", asked.len());
        assert!(asked.iter().all(|&r| r <= MOST_STATES_RESERVED));
        // The last ask within a quarter of the most.
        assert!(asked
            .last()
            .is_some_and(|&r| r * 5 / 4 >= MOST_STATES_RESERVED));
        assert_eq!(bulk.parent_asks, asked.len() as u64);
    }
}
