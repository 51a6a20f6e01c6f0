//! The send side: queue accounting, and building packets at flush time.
//!
//! Nothing is encoded while messages wait: a queue entry is a state's slot, and its
//! record is written from the newest copy when the packet is built, so a state updated
//! ten times before the flush is sent once. The queued bytes are accounted as the kernel
//! does, so that a message that would overflow the MTU sends the packet first.

use std::time::Instant;

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
        if self.flush_at.is_none() {
            self.flush_at = Some(now + self.config.flush_delay);
        }
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
