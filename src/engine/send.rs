//! The send side: queue accounting, and building packets at flush time.
//!
//! Nothing is encoded while messages wait: a queue entry is a state's slot, and its
//! record is written from the newest copy when the packet is built, so a state updated
//! ten times before the flush is sent once. The queued bytes are accounted as the kernel
//! does, so that a message that would overflow the MTU sends the packet first.

use std::time::{Duration, Instant};

use super::cache::Queue;
use super::{Engine, Transmit, ACTIONS};
use crate::state::State;
use crate::wire::msg::{StateRefRepr, UpdCRepr};
use crate::wire::{Action, Message, PacketBuilder, Pushed, RecordFormat};

/// Bytes a subheader takes.
pub(super) const SUBHEADER: usize = crate::wire::subheader::SIZE;
/// Bytes of a state reference (INS_ACK, UPD_REQ, DEL_C).
pub(super) const REF_LEN: usize = crate::wire::msg::state_ref::SIZE;

/// Bytes one more CLR adds.
pub(super) fn clr_cost(opens_run: bool) -> usize {
    crate::wire::msg::clr::SIZE + if opens_run { SUBHEADER } else { 0 }
}

/// Bytes one more UPD_REQ adds.
pub(super) fn req_cost(opens_run: bool) -> usize {
    REF_LEN + if opens_run { SUBHEADER } else { 0 }
}

impl Engine {
    fn record_len(&self, queue: Queue) -> usize {
        match queue {
            Queue::Ins | Queue::Upd => self.config.dialect.record_format().size(),
            Queue::UpdC => crate::wire::msg::upd_c::SIZE,
            Queue::InsAck | Queue::DelC => REF_LEN,
        }
    }

    /// Bytes of the packet the queued messages make, trailer included.
    pub(super) fn pending_len(&self) -> usize {
        let mut len = crate::wire::header::SIZE;
        if self.config.dialect.has_eof_trailer() {
            len += SUBHEADER;
        }
        for q in Queue::ALL {
            let n = self.cache.queue_len(q);
            if n > 0 {
                len += SUBHEADER + n * self.record_len(q);
            }
        }
        if self.cache.queue_len(Queue::DelC) == 0 && !self.redeletes.is_empty() {
            len += SUBHEADER;
        }
        len += self.redeletes.len() * REF_LEN;
        let reqs = self.requests.len() + usize::from(self.send_bulk_request);
        if reqs > 0 {
            len += SUBHEADER + reqs * REF_LEN;
        }
        if !self.clears.is_empty() {
            len += SUBHEADER + self.clears.len() * crate::wire::msg::clr::SIZE;
        }
        len
    }

    /// Bytes of the MTU kept for the IP header. FreeBSD keeps the size of an IPv6
    /// header whatever the transport, so its IPv4 packets stay 20 bytes below the MTU
    /// (three 1500-format records per packet at MTU 1500, not four); we do the same.
    pub(super) fn ip_reserve(&self) -> usize {
        if self.config.dialect.has_eof_trailer() {
            self.config
                .ip_header_len
                .max(crate::wire::frame::IPV6_HEADER_LEN)
        } else {
            self.config.ip_header_len
        }
    }

    /// Bytes the MTU leaves for one pfsync payload.
    pub(super) fn budget(&self) -> usize {
        self.config
            .mtu
            .saturating_sub(self.ip_reserve())
            .min(usize::from(u16::MAX))
    }

    /// Bytes the MTU leaves for one pfsync payload: what a compact batch's DATA
    /// content may take, whichever link carries it (the secure link's wrapping is
    /// sized from this, not from the IP header alone).
    pub fn payload_room(&self) -> usize {
        self.budget()
    }

    pub(super) fn nothing_pending(&self) -> bool {
        Queue::ALL.iter().all(|&q| self.cache.queue_len(q) == 0)
            && self.requests.is_empty()
            && self.redeletes.is_empty()
            && !self.send_bulk_request
            && self.clears.is_empty()
    }

    /// Before `extra` more bytes are queued: sends what is queued if they would not fit
    /// in the packet, and arms the batching timer for the new message.
    pub(super) fn make_room(&mut self, now: Instant, extra: usize) {
        if !self.nothing_pending() && self.pending_len() + extra > self.budget() {
            self.send_pending(now);
        }
        // A later change never moves the timer later; with `immediate` it is due now, and
        // the caller's end-of-turn timeout sends everything the turn queued together.
        let delay = if self.config.immediate {
            Duration::ZERO
        } else {
            self.config.flush_delay
        };
        let due = now + delay;
        self.flush_at = Some(self.flush_at.map_or(due, |t| t.min(due)));
    }

    /// Bytes a state adds to the packet in `queue` (its record, and a subheader if it
    /// opens the queue's run).
    fn queue_cost(&self, queue: Queue) -> usize {
        self.record_len(queue)
            + if self.cache.queue_len(queue) == 0 {
                SUBHEADER
            } else {
                0
            }
    }

    /// Puts a state in a queue (taking it out of the one it is in).
    pub(super) fn enqueue(&mut self, now: Instant, slot: u32, queue: Queue) {
        let current = self.cache.get(slot).queue;
        if current == Some(queue) {
            return;
        }
        let added = self.queue_cost(queue);
        let freed = match current {
            Some(q) => {
                self.record_len(q)
                    + if self.cache.queue_len(q) == 1 {
                        SUBHEADER
                    } else {
                        0
                    }
            }
            None => 0,
        };
        self.make_room(now, added.saturating_sub(freed));
        self.cache.enqueue(slot, queue);
    }

    /// Queues an update request for a state we lack.
    pub(super) fn request_state(&mut self, now: Instant, key: super::Key) {
        if self.requested.contains(&key) {
            return;
        }
        if self.requests.len() >= self.config.max_pending_requests {
            self.stats.req_overflow += 1;
            return;
        }
        let opens = self.requests.is_empty() && !self.send_bulk_request;
        self.make_room(now, req_cost(opens));
        self.requested.insert(key);
        self.requests.push_back(key);
        self.flush_now = true;
    }

    /// Queues a DEL_C for a state of ours that is no longer cached, and asks for an
    /// immediate send (see `refused_deleted`).
    pub(super) fn redelete(&mut self, now: Instant, key: super::Key) {
        if self.redeletes.len() >= self.config.max_pending_requests || self.redeletes.contains(&key)
        {
            return;
        }
        let opens = self.cache.queue_len(Queue::DelC) == 0 && self.redeletes.is_empty();
        self.make_room(now, REF_LEN + if opens { SUBHEADER } else { 0 });
        self.redeletes.push(key);
        self.flush_now = true;
    }

    /// Queues our bulk request (UPD_REQ 0/0) and asks for an immediate send.
    pub(super) fn queue_bulk_request(&mut self) {
        self.stats.bulk_requests_sent += 1;
        self.send_bulk_request = true;
        self.flush_now = true;
    }

    pub(super) fn new_builder(&self) -> PacketBuilder {
        let mut builder =
            PacketBuilder::with_ip_header(self.config.dialect, self.config.mtu, self.ip_reserve());
        builder.set_pfcksum(self.config.pfcksum);
        builder
    }

    /// Builds packets from everything queued and hands them to the transport.
    pub(super) fn send_pending(&mut self, now: Instant) {
        self.flush_at = None;
        self.flush_now = false;
        if self.nothing_pending() {
            return;
        }
        let mut builder = self.new_builder();
        let format = self.config.dialect.record_format();
        let clock = self.cache.clock(now);
        for q in Queue::ALL {
            while let Some(slot) = self.cache.front(q) {
                let message = self.message_for(slot, q, format, clock);
                self.cache.dequeue(slot);
                if q == Queue::DelC {
                    self.cache.remove(slot);
                } else {
                    self.cache.get_mut(slot).updates = 0;
                }
                self.push(&mut builder, &message);
            }
        }
        for (creatorid, id) in std::mem::take(&mut self.redeletes) {
            self.push(&mut builder, &Message::DelC(StateRefRepr { id, creatorid }));
        }
        if std::mem::take(&mut self.send_bulk_request) {
            self.push(&mut builder, &Message::UpdReq(StateRefRepr::BULK_REQUEST));
        }
        while let Some(key) = self.requests.pop_front() {
            self.requested.remove(&key);
            let req = StateRefRepr {
                id: key.1,
                creatorid: key.0,
            };
            self.push(&mut builder, &Message::UpdReq(req));
        }
        for clr in std::mem::take(&mut self.clears) {
            self.push(&mut builder, &Message::Clr(clr));
        }
        self.finish_packet(&mut builder);
    }

    /// A full record of a state in the configured format.
    pub(super) fn record_of(&mut self, state: &State, format: RecordFormat) -> Message {
        let (record, lost) = state.to_record(format);
        self.stats.lost_fields += lost.len() as u64;
        Message::Upd(record)
    }

    /// The message for a queued state, its age and expiry as at `clock`.
    fn message_for(
        &mut self,
        slot: u32,
        queue: Queue,
        format: RecordFormat,
        clock: u32,
    ) -> Message {
        let state = self.cache.get(slot).state_at(clock);
        let reference = StateRefRepr {
            id: state.id,
            creatorid: state.creatorid,
        };
        match queue {
            Queue::Ins => match self.record_of(&state, format) {
                Message::Upd(record) => Message::Ins(record),
                other => other,
            },
            Queue::Upd => self.record_of(&state, format),
            Queue::UpdC => Message::UpdC(UpdCRepr {
                id: state.id,
                src: state.src.to_repr(),
                dst: state.dst.to_repr(),
                creatorid: state.creatorid,
                expire: 0,
                timeout: state.timeout.carried_by(self.config.dialect).number(),
                state_flags: 0,
            }),
            Queue::InsAck => Message::InsAck(reference),
            Queue::DelC => Message::DelC(reference),
        }
    }

    /// Adds a message, sending the packet first when it is full.
    pub(super) fn push(&mut self, builder: &mut PacketBuilder, message: &Message) {
        match builder.push(message) {
            Ok(Pushed::Added) => self.count_out(message.action()),
            Ok(Pushed::Full) => {
                self.finish_packet(builder);
                match builder.push(message) {
                    Ok(Pushed::Added) => self.count_out(message.action()),
                    _ => self.stats.onomem += 1,
                }
            }
            // A record the dialect cannot carry or the receiver would refuse: counted,
            // the rest goes on.
            Err(_) => self.stats.onomem += 1,
        }
    }

    pub(super) fn count_out(&mut self, action: Action) {
        if let Some(n) = self.config.dialect.action_number(action) {
            self.stats.oacts[usize::from(n).min(ACTIONS - 1)] += 1;
        }
    }

    /// Ends the packet being built, if anything is in it, and queues it for the transport.
    pub(super) fn finish_packet(&mut self, builder: &mut PacketBuilder) {
        if let Some(payload) = builder.finish() {
            if self.config.dialect.has_eof_trailer() {
                self.count_out(Action::Eof);
            }
            self.stats.opackets += 1;
            if self.config.ip_header_len == crate::wire::frame::IPV6_HEADER_LEN {
                self.stats.opackets6 += 1;
            }
            self.transmits.push_back(Transmit {
                destination: self.config.syncpeer,
                payload,
            });
        }
    }
}

#[cfg(test)]
mod immediate_tests {
    use super::super::tests::{all_messages, at, engine_with, tcp, transmits, US};
    use super::super::*;
    use crate::wire::Message;

    fn immediate(dialect: Dialect) -> Engine {
        engine_with(dialect, |c| c.immediate = true)
    }

    #[test]
    fn with_immediate_one_change_is_due_at_once_and_leaves_in_one_packet() {
        let mut e = immediate(Dialect::FreeBsd1400);
        e.handle_local(at(0), LocalChange::Insert(tcp(US, 1)));
        // Not per change: the end of the caller's turn sends it.
        assert!(transmits(&mut e).is_empty());
        assert_eq!(e.poll_timeout(), Some(at(0)));
        e.handle_timeout(at(0));
        let sent = transmits(&mut e);
        assert_eq!(sent.len(), 1);
        assert!(matches!(all_messages(&sent)[..], [Message::Ins(_)]));
        assert_eq!(e.poll_timeout(), None);
    }

    #[test]
    fn with_immediate_a_turns_changes_are_packed_into_full_packets() {
        // 1400 records: five per packet at MTU 1500 (see the batching test in tests.rs).
        let mut e = immediate(Dialect::FreeBsd1400);
        for id in 1..=50 {
            e.handle_local(at(0), LocalChange::Insert(tcp(US, id)));
        }
        e.handle_timeout(at(0));
        let sent = transmits(&mut e);
        assert_eq!(sent.len(), 10, "50 records, 5 a packet");
        assert_eq!(all_messages(&sent).len(), 50);
    }

    #[test]
    fn with_immediate_updates_and_deletes_are_due_at_once_too() {
        let mut e = immediate(Dialect::FreeBsd1400);
        let s = tcp(US, 1);
        e.handle_local(at(0), LocalChange::Insert(s));
        e.handle_timeout(at(0));
        transmits(&mut e);
        e.handle_local(
            at(5),
            LocalChange::Update(super::super::tests::advanced(s, 1)),
        );
        assert_eq!(e.poll_timeout(), Some(at(5)));
        e.handle_timeout(at(5));
        assert!(matches!(
            all_messages(&transmits(&mut e))[..],
            [Message::UpdC(_)]
        ));
        e.handle_local(
            at(9),
            LocalChange::Delete {
                creatorid: US,
                id: 1,
            },
        );
        assert_eq!(e.poll_timeout(), Some(at(9)));
        e.handle_timeout(at(9));
        assert!(matches!(
            all_messages(&transmits(&mut e))[..],
            [Message::DelC(_)]
        ));
    }

    #[test]
    fn turning_immediate_on_makes_what_is_queued_due_and_off_brings_the_batch_back() {
        let mut e = engine_with(Dialect::FreeBsd1400, |_| {});
        e.handle_local(at(0), LocalChange::Insert(tcp(US, 1)));
        assert_eq!(e.poll_timeout(), Some(at(1000)));
        e.set_immediate(at(10), true);
        assert_eq!(e.poll_timeout(), Some(at(10)));
        e.handle_timeout(at(10));
        assert_eq!(transmits(&mut e).len(), 1);
        e.set_immediate(at(20), false);
        e.handle_local(at(20), LocalChange::Insert(tcp(US, 2)));
        assert_eq!(e.poll_timeout(), Some(at(1020)));
    }
}
