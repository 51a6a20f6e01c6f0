//! Bulk updates (pfsync-wire.md §3.5): the one we ask for when we come up, and the ones
//! we send when a peer asks.

use std::time::{Duration, Instant};

use super::digest::state_version;
use super::receive::Made;
use super::{BulkRequest, Engine, Event, InputOrigin};
use crate::state::compact_record::{
    self, BatchLimitError, BatchWriter, LoneRecords, MAX_RECORD_BYTES,
};
use crate::state::State;
use crate::wire::msg::bus::{STATUS_END, STATUS_START};
use crate::wire::msg::BusRepr;
use crate::wire::{Message, Pushed};

/// A bulk update we are sending: a walk over the cache's slots, in slot order.
///
/// The walk holds no copy of the keys, so it costs no memory whatever the table size.
/// While it runs, new states take new slots at the end of the slab (freed ones are not
/// reused), and when the walk reaches the end it was given, it goes on once to the end
/// the slab has then: so it also covers the states added during the first pass (one
/// the requester sent itself just before it restarted and that reached us after its
/// request, say), and still ends however fast states come.
#[derive(Debug, Clone)]
pub(super) struct BulkSend {
    next: u32,
    end: u32,
    extended: bool,
    started: Instant,
    pub(super) next_at: Instant,
    sent: u64,
    /// A request arrived during this pass: one more full pass follows it.
    run_again: bool,
    /// When we last sent BUS START for this bulk update.
    start_sent: Instant,
}

/// Least time between two BUS STARTs of one bulk update: a flood of requests costs one
/// START per this, as the kernels' requesters resend theirs every 2 s (OpenBSD) or 5 s
/// (FreeBSD).
const START_RESEND_GAP: Duration = Duration::from_secs(1);

impl BulkSend {
    /// A bulk update starting at `now`, over the slots below `end`.
    fn new(now: Instant, end: u32) -> BulkSend {
        BulkSend {
            next: 0,
            end,
            extended: false,
            started: now,
            next_at: now,
            sent: 0,
            run_again: false,
            start_sent: now,
        }
    }

    /// The pass a request during this one asked for: the walk starts over at `now`,
    /// over the slots below `end`; what was sent and when the START went are kept.
    fn again(self, now: Instant, end: u32) -> BulkSend {
        BulkSend {
            next: 0,
            end,
            extended: false,
            started: now,
            run_again: false,
            ..self
        }
    }
}

impl Engine {
    // ------------------------------------------------------------ our bulk request

    pub(super) fn bulk_request_timeout(&mut self, now: Instant) {
        match self.bulk_request {
            BulkRequest::Waiting { tries, deadline } if deadline <= now => {
                if tries < self.config.bulk_max_tries {
                    self.bulk_request = BulkRequest::Waiting {
                        tries: tries + 1,
                        deadline: now + self.config.bulk_retry,
                    };
                    self.stats.bulk_tries = u64::from(tries + 1);
                    self.queue_bulk_request();
                } else if let Some(deadline) = self.bulk_still_coming(now) {
                    // No START came, but states do: a bulk update runs whose START we
                    // lost (OpenBSD sends it with the first states, and ignores our
                    // requests until its bulk ends). Giving up now would lower carp
                    // with part of it; wait for its END while it makes progress.
                    // Difference: a kernel requester gives up here.
                    self.bulk_request = BulkRequest::Receiving { deadline };
                    self.bulk_sender = None;
                } else {
                    // As the kernels do: give up, and call ourselves in sync (we may be
                    // the only node up).
                    self.bulk_request_done(now, false);
                }
            }
            BulkRequest::Receiving { deadline } if deadline <= now => {
                // The bulk update started but stopped coming without an END (lost, or
                // the sender went away): the sender is not mid-bulk any more, so a new
                // request starts a new one, also on OpenBSD. As FreeBSD does, ask again
                // while tries remain (OpenBSD asks once more but marks itself done
                // anyway).
                let tries = u32::try_from(self.stats.bulk_tries).unwrap_or(u32::MAX);
                if tries < self.config.bulk_max_tries {
                    self.bulk_request = BulkRequest::Waiting {
                        tries: tries + 1,
                        deadline: now + self.config.bulk_retry,
                    };
                    self.stats.bulk_tries = u64::from(tries + 1);
                    self.queue_bulk_request();
                } else {
                    self.bulk_request_done(now, false);
                }
            }
            _ => {}
        }
    }

    fn bulk_request_done(&mut self, now: Instant, complete: bool) {
        self.bulk_request = BulkRequest::Done;
        self.syncok = true;
        if let Some(at) = self.bulk_requested_at {
            self.stats.bulk_last_duration_ms = now.saturating_duration_since(at).as_millis() as u64;
        }
        if complete {
            self.stats.bulk_completed += 1;
        } else {
            self.stats.bulk_given_up += 1;
        }
        self.events.push_back(Event::BulkDone { complete });
        self.set_demoted(false);
    }

    /// A full update arrived: while a bulk update runs, it is the bulk's progress, if it
    /// came from the bulk's sender (or either address is unknown); other peers' updates
    /// must not keep us waiting for a sender that went away.
    ///
    /// Difference: a fixed wait for the END (the kernels size theirs from their own
    /// state limit and pace) would cut a large table short; the wait is an idle timeout
    /// instead, and a sender that keeps sending is never asked again (an OpenBSD sender
    /// ignores requests while its bulk runs, a FreeBSD one restarts it from scratch).
    pub(super) fn bulk_progress(&mut self, now: Instant) {
        self.last_full_record = Some(now);
        let from_sender = match (self.bulk_sender, self.packet_source) {
            (Some(sender), Some(source)) => sender == source,
            _ => true,
        };
        if let BulkRequest::Receiving { deadline } = &mut self.bulk_request {
            if from_sender {
                *deadline = now + self.config.bulk_idle_timeout;
            }
        }
    }

    /// When to stop waiting for a bulk update whose START we have not seen, if its
    /// states still come (one arrived within the idle timeout).
    fn bulk_still_coming(&self, now: Instant) -> Option<Instant> {
        let deadline = self.last_full_record? + self.config.bulk_idle_timeout;
        (deadline > now).then_some(deadline)
    }

    pub(super) fn in_bus(&mut self, now: Instant, bus: BusRepr) {
        let waiting = matches!(
            self.bulk_request,
            BulkRequest::Waiting { .. } | BulkRequest::Receiving { .. }
        );
        if !waiting {
            // FreeBSD ignores a BUS when it has no request outstanding.
            return;
        }
        match bus.status {
            STATUS_START => {
                self.stats.bus_start_received += 1;
                self.bulk_sender = self.packet_source;
                self.bulk_request = BulkRequest::Receiving {
                    deadline: now + self.config.bulk_idle_timeout,
                };
            }
            STATUS_END => {
                self.stats.bus_end_received += 1;
                // FreeBSD's check: the sender must have received the request after we
                // first sent it (`endtime` is the seconds since it did), or this END
                // closes someone else's, older bulk update. OpenBSD sends endtime 0,
                // which always passes. The sender's clock truncates to seconds, hence
                // the one second of slack.
                // FreeBSD compares with `sc_ureq_sent`, set when the interface asks
                // first (`pfsync_kstatus_to_softc`) and left alone by the retries of
                // `pfsync_bulk_fail`: the first request, as here.
                let started = now.checked_sub(Duration::from_secs(u64::from(bus.endtime)));
                let requested = self.bulk_requested_at.unwrap_or(now);
                let late_enough = started.is_none_or(|s| s + Duration::from_secs(1) >= requested);
                if late_enough {
                    self.bulk_request_done(now, true);
                } else {
                    self.stats.bus_end_stale += 1;
                }
            }
            _ => {}
        }
    }

    // ------------------------------------------------------------ bulk send

    /// States sent so far in the bulk update we are sending; `None` when we send none.
    pub fn bulk_send_progress(&self) -> Option<u64> {
        self.bulk_send.as_ref().map(|b| b.sent)
    }

    /// States sent so far in the compact bulk update; `None` when none runs.
    pub fn compact_send_progress(&self) -> Option<u64> {
        self.compact_send.as_ref().map(|b| b.sent)
    }

    /// A peer asked for a bulk update.
    ///
    /// Difference: a request arriving while we send one neither restarts it (FreeBSD)
    /// nor is ignored (OpenBSD): one more full pass follows the running one, however
    /// many requests came, and BUS START goes out again at once. The kernels' requesters
    /// ask again only when they saw no START (OpenBSD every 2 s in its SENT state, where
    /// it also ignores BUS END, and gives up after 12 tries; FreeBSD every 5 s), so a
    /// request during our pass means our START was lost, or a requester came up
    /// meanwhile; either way it needs a START now and a whole pass after it. The END of
    /// the running pass is therefore held back: the walk goes on into the next pass,
    /// and the one END comes after it, so no requester takes the end of a pass it saw
    /// only part of for the end of its bulk. A flood of requests costs one flag and one
    /// START per second.
    pub(super) fn start_bulk_send(&mut self, now: Instant) {
        if self.input_origin == InputOrigin::Session || !self.config.bulk_paced {
            self.start_compact_send(now);
            return;
        }
        if let Some(running) = self.bulk_send.as_mut() {
            if !running.run_again {
                running.run_again = true;
            } else {
                self.stats.bulk_requests_coalesced += 1;
            }
            if now.saturating_duration_since(running.start_sent) >= START_RESEND_GAP {
                running.start_sent = now;
                self.stats.bulk_starts_resent += 1;
                self.send_bus_start(now);
            }
            return;
        }
        self.bulk_send = Some(BulkSend::new(now, self.cache.slot_count()));
        self.cache.set_append_only(true);
        self.events.push_back(Event::BulkSendStarted);
        self.send_bus_start(now);
        if self.config.bulk_paced {
            self.bulk_send_burst(now);
        }
    }

    /// Answers a bulk request held back by
    /// [`handle_packet_holding_bulk_request`](Self::handle_packet_holding_bulk_request):
    /// the compact bulk for a pfsyncd peer, the paced one otherwise.
    pub fn answer_bulk_request(&mut self, now: Instant, compact: bool) {
        self.stats.bulk_requests_received += 1;
        if compact {
            self.start_compact_send(now);
        } else {
            let origin = std::mem::replace(&mut self.input_origin, InputOrigin::Plain);
            self.start_bulk_send(now);
            self.input_origin = origin;
        }
        self.end_input(now);
    }

    /// A pfsyncd peer asked: the compact walk, moved by
    /// [`bulk_compact_batches`](Self::bulk_compact_batches) as the peers take it. A
    /// request during its pass makes one more pass, as for the paced one. No BUS START
    /// leaves here: the caller sends [`bus_packet`](Self::bus_packet) to the pfsyncd
    /// peers only, so that no kernel peer waiting for our paced bulk takes this one's
    /// END for its own.
    fn start_compact_send(&mut self, now: Instant) {
        if let Some(running) = self.compact_send.as_mut() {
            if !running.run_again {
                running.run_again = true;
            } else {
                self.stats.bulk_requests_coalesced += 1;
            }
            return;
        }
        self.compact_send = Some(BulkSend::new(now, self.cache.slot_count()));
        self.cache.set_append_only(true);
        self.events.push_back(Event::BulkSendStarted);
    }

    /// The ruleset checksum under which our compact batches vouch for their rule
    /// numbers, as our FreeBSD packets' header does; `None` under the OpenBSD dialect,
    /// which never vouches.
    pub fn compact_ruleset(&self) -> Option<[u8; 16]> {
        (self.config.dialect != crate::wire::Dialect::OpenBsd).then_some(self.config.pfcksum)
    }

    /// A pfsync packet holding one BUS message (`status` [`STATUS_START`] or
    /// [`STATUS_END`]) of the compact bulk update, for the caller to send to the pfsyncd
    /// peers after the batches (see [`bulk_compact_batches`](Self::bulk_compact_batches)).
    /// The END's endtime counts from the start of the last pass.
    pub fn bus_packet(&mut self, now: Instant, status: u8) -> Option<Vec<u8>> {
        let started = self
            .compact_send
            .as_ref()
            .map_or(self.compact_last_started.unwrap_or(now), |b| b.started);
        let mut builder = self.new_builder();
        let message = self.bus_message(now, status, started);
        match builder.push(&message) {
            Ok(Pushed::Added) => self.count_out(message.action()),
            _ => return None,
        }
        self.stats.opackets += 1;
        builder.finish()
    }

    /// BUS START, at once and in its own packet, as FreeBSD sends it (OpenBSD sends an
    /// empty table's bulk as a lone END; START then END is as good).
    fn send_bus_start(&mut self, now: Instant) {
        let mut builder = self.new_builder();
        let start = self.bus_message(now, STATUS_START, now);
        self.push(&mut builder, &start);
        self.finish_packet(&mut builder);
    }

    fn bus_message(&self, now: Instant, status: u8, started: Instant) -> Message {
        Message::Bus(BusRepr {
            creatorid: self.config.creatorid,
            endtime: now.saturating_duration_since(started).as_secs() as u32,
            status,
        })
    }

    /// Sends the next burst of full updates; at the end, BUS END.
    pub(super) fn bulk_send_burst(&mut self, now: Instant) {
        let Some(mut bulk) = self.bulk_send.take() else {
            return;
        };
        let format = self.config.dialect.record_format();
        let clock = self.cache.clock(now);
        let mut builder = self.new_builder();
        let mut packets = 0;
        loop {
            if bulk.next >= bulk.end && !bulk.extended {
                bulk.extended = true;
                bulk.end = self.cache.slot_count();
            }
            if packets >= self.config.bulk_burst.max(1) || bulk.next >= bulk.end {
                break;
            }
            let Some(e) = self.cache.at(bulk.next) else {
                bulk.next += 1;
                continue;
            };
            // Filtered states are not synced; delayed ones are not due yet.
            if e.nosync || e.deleted || e.filtered.is_some() || e.delayed {
                bulk.next += 1;
                continue;
            }
            let state = e.state_at(clock);
            let message = self.record_of(&state, format);
            match builder.push(&message) {
                Ok(Pushed::Added) => {
                    self.count_out(message.action());
                    bulk.next += 1;
                    bulk.sent += 1;
                }
                Ok(Pushed::Full) => {
                    self.finish_packet(&mut builder);
                    packets += 1;
                }
                Err(_) => {
                    self.stats.onomem += 1;
                    bulk.next += 1;
                }
            }
        }
        if bulk.next < bulk.end {
            self.finish_packet(&mut builder);
            bulk.next_at = now + self.config.bulk_interval;
            self.bulk_send = Some(bulk);
            return;
        }
        if bulk.run_again {
            // Someone asked during this pass: the walk starts over without an END (see
            // `start_bulk_send`), and the END's endtime counts from the new pass, which
            // began after every request it answers.
            self.finish_packet(&mut builder);
            self.bulk_send = Some(BulkSend {
                next_at: now + self.config.bulk_interval,
                ..bulk.again(now, self.cache.slot_count())
            });
            return;
        }
        // The last records and BUS END share a packet when they fit.
        if self.compact_send.is_none() {
            self.cache.set_append_only(false);
        }
        let end = self.bus_message(now, STATUS_END, bulk.started);
        self.push(&mut builder, &end);
        self.finish_packet(&mut builder);
        self.stats.bulk_sends_completed += 1;
        self.stats.bulk_states_sent += bulk.sent;
        self.events
            .push_back(Event::BulkSendDone { states: bulk.sent });
    }

    /// The next state the walk sends (in slot `bulk.next`), moving past those it
    /// skips; `None` at the end of the walk (after its one extension to the slab's end
    /// then).
    fn bulk_walk_next(&self, bulk: &mut BulkSend) -> Option<super::cache::EntryRef<'_>> {
        loop {
            if bulk.next >= bulk.end && !bulk.extended {
                bulk.extended = true;
                bulk.end = self.cache.slot_count();
            }
            if bulk.next >= bulk.end {
                return None;
            }
            match self.cache.at(bulk.next) {
                Some(e) if bulk_sends(&e) => return Some(e),
                _ => bulk.next += 1,
            }
        }
    }

    /// The next `batches` payloads of the running bulk send, as compact record batches
    /// ([`compact_record`]) of at most `limit` bytes each, for a sender paced by its
    /// receiver (credits, a window) rather than by the timer: with
    /// [`Config::bulk_paced`](super::Config::bulk_paced) off, the timer sends no bulk
    /// packets and the walk moves only here. `None` when no bulk send runs.
    ///
    /// The walk is the timer's (slot order, skipped states alike, a request during the
    /// pass making one more pass). At its end the bulk send is over as after a paced
    /// one (stats, [`Event::BulkSendDone`]), but no BUS END is sent: the caller tells
    /// its peer that the bulk ended, after the last batch, on the channel the batches
    /// went on.
    pub fn bulk_compact_batches(
        &mut self,
        now: Instant,
        batches: usize,
        limit: usize,
    ) -> Result<Option<CompactBulk>, BatchLimitError> {
        self.bulk_compact_batches_after(now, batches, limit, &[])
    }

    /// As [`bulk_compact_batches`](Self::bulk_compact_batches), each batch's buffer
    /// starting with `head` (not counted in `limit`): a caller that sends the batches
    /// behind a head of its own (a DATA content's) writes it first, and sends each
    /// buffer as it is, without copying the batch behind it.
    pub fn bulk_compact_batches_after(
        &mut self,
        now: Instant,
        batches: usize,
        limit: usize,
        head: &[u8],
    ) -> Result<Option<CompactBulk>, BatchLimitError> {
        if limit < 1 + MAX_RECORD_BYTES {
            return Err(BatchLimitError { limit });
        }
        let Some(mut bulk) = self.compact_send.take() else {
            return Ok(None);
        };
        let clock = self.cache.clock(now);
        let mut made = CompactBulk::default();
        // One writer for all the batches of this call: its buffers are reused.
        let mut writer: Option<BatchWriter> = None;
        while made.batches.len() < batches {
            let mut batch = Vec::with_capacity(head.len() + limit);
            batch.extend_from_slice(head);
            let writer = match writer.as_mut() {
                Some(writer) => {
                    writer.restart(&mut batch);
                    writer
                }
                None => writer.insert(BatchWriter::new(limit, &mut batch)?),
            };
            // Each state's packed bytes go into the batch as they are, but for its age
            // and expiry (no `State` is made); the walk stays at a state until a batch
            // took it.
            while let Some(entry) = self.bulk_walk_next(&mut bulk) {
                let (record, waited) = entry.packed_at(clock);
                // Only the cache's own encoder made these bytes: a refusal is a bug in
                // the codec, which its tests rule out (as `Entry::state` says).
                let taken = writer
                    .push_record(record, waited, &mut batch)
                    .expect("a state the engine packed");
                if !taken {
                    break;
                }
                bulk.next += 1;
            }
            if writer.is_empty() {
                if bulk.run_again {
                    bulk = bulk.again(now, self.cache.slot_count());
                    continue;
                }
                made.finished = true;
                break;
            }
            bulk.sent += writer.len() as u64;
            made.states += writer.len() as u64;
            made.batches.push(batch);
        }
        if made.finished {
            if self.bulk_send.is_none() {
                self.cache.set_append_only(false);
            }
            self.compact_last_started = Some(bulk.started);
            self.stats.bulk_sends_completed += 1;
            self.stats.bulk_states_sent += bulk.sent;
            self.events
                .push_back(Event::BulkSendDone { states: bulk.sent });
        } else {
            self.compact_send = Some(bulk);
        }
        Ok(Some(made))
    }

    /// Full updates from a pfsyncd peer as one compact record batch (a bulk's, or any):
    /// each state is imported or merged as a full update (`Upd`) from `source` would be.
    /// The caller has checked the source (the session's peer): the link checks of
    /// [`handle_packet`](Self::handle_packet) (syncdev, TTL, allowed sources) are the
    /// plain link's. Bytes that are not a batch are refused whole and counted; states before the bad
    /// record are not taken either, so a batch is all or nothing.
    pub fn handle_compact_batch(
        &mut self,
        now: Instant,
        source: Option<std::net::IpAddr>,
        batch: &[u8],
    ) -> Result<usize, compact_record::CompactRecordError> {
        self.handle_vouched_compact_batch(now, source, None, batch)
    }

    /// As [`handle_compact_batch`](Self::handle_compact_batch), the rule numbers
    /// trusted as a FreeBSD packet's are (`pfsync_input`'s PFSYNC_SI_CKSUM) when the
    /// sender vouched for them under our ruleset checksum (see
    /// [`compact_ruleset`](Self::compact_ruleset)); never under the OpenBSD dialect.
    pub fn handle_vouched_compact_batch(
        &mut self,
        now: Instant,
        source: Option<std::net::IpAddr>,
        ruleset: Option<[u8; 16]>,
        batch: &[u8],
    ) -> Result<usize, compact_record::CompactRecordError> {
        let rules_trusted = ruleset.is_some_and(|sum| {
            self.config.dialect != crate::wire::Dialect::OpenBsd && sum == self.config.pfcksum
        });
        let mut states = std::mem::take(&mut self.compact_states);
        let mut lone = std::mem::take(&mut self.compact_lone);
        // Each state's cached form is made as the batch is read (the import's changes
        // made to it), unless the interface map may change the state after: then the
        // cache encodes what the map left.
        let transcoded = self.ifmap.is_empty();
        let decoded = if transcoded {
            let changes = compact_record::ImportChanges {
                unbind_rules: !rules_trusted,
            };
            compact_record::decode_batch_lone(batch, &mut states, &mut lone, changes)
        } else {
            compact_record::decode_batch_into(batch, &mut states)
        };
        let taken = match decoded {
            Ok(()) => states.len(),
            Err(_) => 0,
        };
        if let Err(e) = decoded {
            self.stats.compact_batches_refused += 1;
            self.keep_compact_states(states, lone);
            return Err(e);
        }
        self.stats.compact_batches_received += 1;
        self.packet_source = source;
        self.rules_trusted = rules_trusted;
        // Every state of the batch arrived at `now`: one progress mark stands for all.
        if taken > 0 {
            self.bulk_progress(now);
        }
        self.cache.warm(states.iter().map(|s| (s.creatorid, s.id)));
        let mut versions = std::mem::take(&mut self.compact_versions);
        versions.clear();
        versions.extend(states.iter().map(state_version));
        for (i, (state, &version)) in states.iter_mut().zip(&versions).enumerate() {
            self.map_state(state);
            let packed = if transcoded { lone.get(i) } else { None };
            self.in_upd(now, state, Some(Made { packed, version }));
        }
        if versions.capacity() <= KEPT_BATCH_STATES {
            self.compact_versions = versions;
        }
        self.keep_compact_states(states, lone);
        self.rules_trusted = false;
        self.packet_source = None;
        self.end_input(now);
        Ok(taken)
    }
}

impl Engine {
    /// Keeps the batch vector for the next batch, unless a large batch (a hostile
    /// peer's, most likely) made it big: the common case allocates nothing per batch,
    /// the rare one does not pin the memory.
    fn keep_compact_states(&mut self, mut states: Vec<State>, mut lone: LoneRecords) {
        states.clear();
        if states.capacity() <= KEPT_BATCH_STATES {
            self.compact_states = states;
        }
        lone.clear();
        if lone.capacity() <= KEPT_BATCH_STATES * 64 {
            self.compact_lone = lone;
        }
    }
}

/// States of the largest batch vector kept between batches (about 400 KB): a batch of
/// a 9000-byte MTU holds at most 750 records of 12 bytes, typically 150.
const KEPT_BATCH_STATES: usize = 1024;

/// Whether a bulk update sends the state of `entry`: filtered states are not synced;
/// delayed ones are not due yet.
#[inline]
fn bulk_sends(entry: &super::cache::Entry) -> bool {
    !(entry.nosync || entry.deleted || entry.filtered.is_some() || entry.delayed)
}

/// What [`Engine::bulk_compact_batches`] produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactBulk {
    /// The batches, in order, each behind the head asked for (if any); each batch
    /// fits the limit asked for.
    pub batches: Vec<Vec<u8>>,
    /// States in them.
    pub states: u64,
    /// The bulk send ended with these batches (none runs any more).
    pub finished: bool,
}
