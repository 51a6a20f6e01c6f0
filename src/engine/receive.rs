//! The receive side: a packet from a peer, checked as the kernels check it, and each of
//! its messages applied to the cache (pfsync-wire.md §1.4, §3.2).
//!
//! Every dialect is accepted, whatever we send: the header version picks the reader, and
//! the records are translated through the neutral [`State`].

use std::time::Instant;

use super::cache::{Entry, Queue};
use super::digest::state_version;
use super::filter::Filtered;
use super::merge::merge;
use super::{Engine, InputOrigin, Received, ACTIONS};
use crate::state::{Peer, State, StateFlags, Timeout};
use crate::wire::msg::{ClrRepr, StateRefRepr, UpdCRepr};
use crate::wire::{Dialect, Message, PacketReader, RawItem};

/// What a compact batch's reader made of a state besides the state, as the import
/// would make it: the import takes it as it is instead of making it again.
#[derive(Debug, Clone, Copy)]
pub(super) struct Made<'a> {
    /// The state's encoding as imported (`compact_record::decode_batch_lone` under
    /// the same `ImportChanges`), which the cache then stores without encoding the
    /// state; `None` where the import may change the state after the reader (the
    /// interface map).
    pub(super) packed: Option<&'a [u8]>,
    /// The state's version for the digests ([`state_version`]). Made for a whole batch
    /// in one loop, where the processor works on several states' hashes at once: one
    /// at a time, each waits for its chain of multiplications. No import change
    /// touches what the version hashes.
    pub(super) version: u32,
}

impl Engine {
    /// Handles a packet from the sync link.
    pub fn handle_packet(&mut self, now: Instant, packet: Received<'_>) {
        self.receive(now, packet);
        self.end_input(now);
    }

    /// A pfsync packet from a pfsyncd session peer (carried in DATA): handled as
    /// [`handle_packet`](Self::handle_packet), except that a bulk request in it starts
    /// the compact bulk update, paced by the peer, instead of the timer's.
    pub fn handle_session_packet(&mut self, now: Instant, packet: Received<'_>) {
        self.input_origin = InputOrigin::Session;
        self.receive(now, packet);
        self.input_origin = InputOrigin::Plain;
        self.end_input(now);
    }

    /// A plain pfsync packet from a source that may be a pfsyncd peer: handled as
    /// [`handle_packet`](Self::handle_packet), except that a bulk request in it is
    /// not answered but noted; true when one was. The caller answers it with
    /// [`answer_bulk_request`](Self::answer_bulk_request) once it knows whether the
    /// source takes the compact bulk (or drops it, when the source's DATA copy of the
    /// same request was answered: two answers would send two passes).
    pub fn handle_packet_holding_bulk_request(
        &mut self,
        now: Instant,
        packet: Received<'_>,
    ) -> bool {
        self.input_origin = InputOrigin::PlainHeld;
        self.held_bulk_request = false;
        self.receive(now, packet);
        self.input_origin = InputOrigin::Plain;
        self.end_input(now);
        std::mem::take(&mut self.held_bulk_request)
    }

    fn receive(&mut self, now: Instant, packet: Received<'_>) {
        self.stats.ipackets += 1;
        if packet.ipv6 {
            self.stats.ipackets6 += 1;
        }
        if !packet.on_syncdev {
            self.stats.badif += 1;
            return;
        }
        if packet.ttl != 255 {
            self.stats.badttl += 1;
            return;
        }
        if !self.allowed_sources.allows(packet.source) {
            self.stats.badsrc += 1;
            self.last_refused_source = packet.source;
            return;
        }
        let reader = match PacketReader::new(packet.payload) {
            Ok(r) => r,
            Err(e) => {
                self.stats.count(e.counter());
                return;
            }
        };
        let dialect = reader.dialect();
        self.rules_trusted = Self::rules_trusted(dialect, reader.header().pfcksum, &self.config);
        self.packet_source = packet.source;
        let mut clears = Vec::new();
        for item in reader.raw_items() {
            match item {
                Ok(RawItem::Record(record)) => {
                    if let Some(n) = dialect.action_number(record.action()) {
                        self.stats.iacts[usize::from(n).min(ACTIONS - 1)] += 1;
                    }
                    match record.message() {
                        Ok(Message::Clr(c)) => clears.push(self.mapped_clear(c)),
                        Ok(m) => {
                            self.in_clrs(now, &mut clears);
                            self.handle_message(now, m)
                        }
                        Err(e) => self.stats.count(e.counter()),
                    }
                }
                Ok(RawItem::Skipped { action, count, .. }) => {
                    if usize::from(action) < ACTIONS {
                        self.stats.iacts[usize::from(action)] += u64::from(count);
                    }
                }
                Ok(RawItem::Eof) => self.stats.iacts[12] += 1,
                Err(e) => self.stats.count(e.counter()),
            }
        }
        self.in_clrs(now, &mut clears);
        self.rules_trusted = false;
        self.packet_source = None;
    }

    /// Whether the rule numbers of a packet's states name rules of our ruleset, as
    /// FreeBSD decides it (`pfsync_input`: PFSYNC_SI_CKSUM when the header's checksum
    /// equals `pf_status.pf_chksum`). OpenBSD never trusts them (`pfsync_in_ins` and
    /// `pfsync_in_upd` import with PFSYNC_SI_PFSYNC only), and sends no checksum.
    fn rules_trusted(dialect: Dialect, pfcksum: [u8; 16], config: &super::Config) -> bool {
        dialect != Dialect::OpenBsd && pfcksum == config.pfcksum
    }

    fn handle_message(&mut self, now: Instant, message: Message) {
        if matches!(message, Message::Upd(_)) {
            // Bulk updates are made of full updates (INS is a new state, not a bulk's).
            self.bulk_progress(now);
        }
        match message {
            Message::Clr(c) => {
                let c = self.mapped_clear(c);
                self.in_clrs(now, &mut vec![c])
            }
            Message::Ins(r) => match State::from_record(&r) {
                Ok(mut s) => {
                    self.map_state(&mut s);
                    self.in_ins(now, s)
                }
                Err(e) => self.stats.count(e.counter()),
            },
            Message::Upd(r) => match State::from_record(&r) {
                Ok(mut s) => {
                    self.map_state(&mut s);
                    self.in_upd(now, &mut s, None)
                }
                Err(e) => self.stats.count(e.counter()),
            },
            Message::UpdC(u) => self.in_upd_c(now, &u),
            Message::UpdReq(r) => self.in_upd_req(now, r),
            Message::Del(r) => self.in_del(now, r.creatorid(), r.id()),
            Message::DelC(r) => self.in_del(now, r.creatorid, r.id),
            Message::Bus(b) => self.in_bus(now, b),
            // Deferral is not done in userland, so an INS_ACK releases nothing; IPsec
            // SAs are not synced.
            Message::InsAck(_) | Message::TdbOpenBsd(_) | Message::TdbFreeBsd(_) => {}
        }
    }

    /// A run of CLR records, applied in one walk over the cache: a packet full of CLRs
    /// (about seventy) costs one pass, not one per record. (The kernels walk the table
    /// per record.) The run is applied before the next message of another kind, so the
    /// packet's order is kept.
    fn in_clrs(&mut self, now: Instant, run: &mut Vec<ClrRepr>) {
        if run.is_empty() {
            return;
        }
        let mut unique: Vec<ClrRepr> = Vec::with_capacity(run.len());
        for clr in run.drain(..) {
            if !unique.contains(&clr) {
                unique.push(clr);
            }
        }
        let matches = |st: &State| {
            unique.iter().any(|c| {
                st.creatorid == c.creatorid && (c.ifname.is_empty() || st.ifname == c.ifname)
            })
        };
        if unique
            .iter()
            .any(|c| self.cache.creator_count(c.creatorid) > 0)
        {
            let doomed: Vec<u32> = self
                .cache
                .slots()
                .filter(|&s| {
                    let e = self.cache.get(s);
                    // A state we deleted keeps its queued DEL_C, as in the kernels, where
                    // it is no longer in the table the CLR walks.
                    !e.deleted && matches(&e.state())
                })
                .collect();
            for slot in doomed {
                // Removed because a peer said so: no DEL_C goes back.
                self.cache.remove(slot);
            }
        }
        // The table may hold states of that creator we never cached (no-sync ones, or
        // the cache was full): the clear goes to the table in any case. Whether the
        // interface exists is the table's business.
        for clr in unique {
            self.clear_marks.mark(Some(clr.creatorid), clr.ifname, now);
            self.push_clear_op(clr.creatorid, clr.ifname);
        }
    }

    /// A key no peer may name: creator 0 (both kernels' imports refuse it) or id 0.
    ///
    /// Difference: the kernels import a peer's id 0. We refuse it, with anything that
    /// names it, because the table's kill by id 0 is a kill of every state on both
    /// kernels (FreeBSD `pf_killstates`, OpenBSD `DIOCKILLSTATES` scan when the id is 0).
    fn refused_key(&mut self, creatorid: u32, id: u64) -> bool {
        let refused = creatorid == 0 || id == 0;
        if refused {
            self.stats.badstate += 1;
        }
        refused
    }

    /// Takes in a peer's state we do not hold. `state` is what was imported (the ACK
    /// flag and untrusted rule numbers taken off). `made`, if given, is what a compact
    /// batch's reader made of the state already (see [`Made`]).
    fn import(&mut self, now: Instant, state: &mut State, made: Option<Made<'_>>) -> Option<u32> {
        if self.refused_key(state.creatorid, state.id) {
            return None;
        }
        if self.tombstones.contains((state.creatorid, state.id), now) {
            // A copy that was on its way when the state was deleted.
            self.refused_deleted(now, (state.creatorid, state.id));
            return None;
        }
        if self.clear_marks.cleared(state, now) {
            // A copy from before a clear that covered it.
            self.stats.tombstoned += 1;
            return None;
        }
        // The flag asks the receiver for an INS_ACK; it means nothing in our table.
        state.state_flags.remove(StateFlags::ACK);
        if !self.rules_trusted && (state.rule, state.anchor, state.nat_rule) != (None, None, None) {
            // The numbers name rules of the sender's ruleset, not ours: bound to the
            // default rule, as the kernels bind such a state, the state is neither
            // imported with them nor relayed with them under our checksum.
            state.rule = None;
            state.anchor = None;
            state.nat_rule = None;
            self.stats.rule_unbound += 1;
        }
        let clock = self.cache.clock(now);
        let mut entry = match made {
            Some(made) => Entry::with_version(state, clock, made.version),
            None => Entry::new(state, clock),
        };
        let kept_out = self.filter_in(state);
        if kept_out {
            entry.filtered = Some(Filtered::Unimported);
            self.schedule_unimported_sweep(now);
        }
        let inserted = match made.and_then(|made| made.packed) {
            Some(packed) => self.cache.insert_packed(entry, state, packed),
            None => self.cache.insert(entry, state),
        };
        match inserted {
            Ok(slot) => {
                self.cache.set_peer_updated(slot, now);
                if !kept_out {
                    self.push_cached_state_op(slot, false);
                }
                Some(slot)
            }
            Err(_) => {
                self.stats.cache_full += 1;
                self.stats.badstate += 1;
                None
            }
        }
    }

    /// A peer sent a state we deleted a moment ago. If the state is ours, the peer
    /// (and whoever else got that copy, a bulk update being multicast) may have taken
    /// it in after our DEL_C: we say DEL_C again. Only the creator does, so a stale copy
    /// costs one DEL_C, not one per node.
    /// Difference: the kernels send a state's DEL_C once.
    fn refused_deleted(&mut self, now: Instant, key: super::Key) {
        self.stats.tombstoned += 1;
        if key.0 == self.config.creatorid {
            self.redelete(now, key);
        }
    }

    fn in_ins(&mut self, now: Instant, mut state: State) {
        if self.refused_key(state.creatorid, state.id) {
            return;
        }
        let ack = state.state_flags.contains(StateFlags::ACK);
        if self.cache.find((state.creatorid, state.id)).is_some() {
            // A duplicate insert (a duplicated packet, or a peer re-announcing) is
            // ignored, as the kernels' failing import is, ack included: neither kernel
            // gets to queue one (OpenBSD fails in `pf_state_import`, FreeBSD in
            // `pf_state_insert`).
            // Difference: FreeBSD counts the failed import as badact; a duplicated
            // packet is not an error of the sender, so it is counted apart.
            self.stats.ins_duplicate += 1;
            return;
        }
        let Some(slot) = self.import(now, &mut state, None) else {
            return;
        };
        if ack {
            // The sender holds a packet until we acknowledge the state.
            self.enqueue(now, slot, Queue::InsAck);
            self.flush_now = true;
        }
    }

    /// A full update; `made` as for [`import`](Self::import).
    pub(super) fn in_upd(&mut self, now: Instant, state: &mut State, made: Option<Made<'_>>) {
        if self.refused_key(state.creatorid, state.id) {
            return;
        }
        match self.cache.find((state.creatorid, state.id)) {
            None => {
                self.import(now, state, made);
            }
            Some(slot) => self.merge_into(now, slot, state, true),
        }
    }

    fn in_upd_c(&mut self, now: Instant, upd: &UpdCRepr) {
        if self.refused_key(upd.creatorid, upd.id) {
            return;
        }
        let key = (upd.creatorid, upd.id);
        let Some(slot) = self.cache.find(key) else {
            if self.tombstones.contains(key, now) {
                self.refused_deleted(now, key);
            } else {
                self.request_state(now, key);
            }
            return;
        };
        let ours = self.cache.get(slot).state();
        let proto = ours.wire.proto;
        let theirs = (|| {
            Some(State {
                src: Peer::from_repr(&upd.src, proto, "src.state").ok()?,
                dst: Peer::from_repr(&upd.dst, proto, "dst.state").ok()?,
                timeout: Timeout::from_number(upd.timeout)?,
                ..ours
            })
        })();
        match theirs {
            Some(theirs) => self.merge_into(now, slot, &theirs, false),
            None => self.stats.badval += 1,
        }
    }

    fn merge_into(&mut self, now: Instant, slot: u32, theirs: &State, full: bool) {
        let clock = self.cache.clock(now);
        let entry = self.cache.get(slot);
        if entry.deleted {
            // We deleted it and our DEL_C is on its way: the peer will drop it too.
            return;
        }
        if let Some(filtered) = entry.filtered {
            // Kept out of sync (filter.rs): neither merged nor answered. An unimported
            // copy is only refreshed, for its expiry.
            if full && filtered == Filtered::Unimported {
                self.cache.set_state(slot, theirs, clock);
            }
            self.cache.adopt_version(slot, state_version(theirs));
            self.stats.filtered_in += 1;
            return;
        }
        let mut merged = entry.state_at(clock);
        let (nosync, queue) = (entry.nosync, entry.queue);
        self.cache.set_peer_updated(slot, now);
        let m = merge(&mut merged, theirs, full);
        if m.changed {
            self.cache.set_state(slot, &merged, clock);
            self.push_cached_state_op(slot, true);
        }
        if m.stale > 0 {
            // The peer's copy is older than ours on some side: tell it ours, at once.
            self.stats.stale += 1;
            if !nosync {
                if matches!(queue, None | Some(Queue::InsAck)) {
                    self.enqueue(now, slot, Queue::UpdC);
                }
                self.flush_now = true;
            }
        }
    }

    fn in_upd_req(&mut self, now: Instant, req: StateRefRepr) {
        if req.is_bulk_request() {
            if self.input_origin == InputOrigin::PlainHeld {
                self.stats.bulk_requests_held += 1;
                self.held_bulk_request = true;
                return;
            }
            self.stats.bulk_requests_received += 1;
            self.start_bulk_send(now);
            return;
        }
        if self.refused_key(req.creatorid, req.id) {
            return;
        }
        let Some(slot) = self.cache.find((req.creatorid, req.id)) else {
            self.stats.badstate += 1;
            return;
        };
        let e = self.cache.get(slot);
        if e.deleted {
            self.stats.badstate += 1;
            return;
        }
        if e.nosync || e.filtered.is_some() || e.delayed {
            // FreeBSD ignores it silently (OpenBSD counts badstate). A filtered state
            // is not synced; a delayed one is not announced yet.
            return;
        }
        if e.queue != Some(Queue::Ins) {
            // A queued INS carries the full state already.
            self.enqueue(now, slot, Queue::Upd);
        }
        self.flush_now = true;
    }

    fn in_del(&mut self, now: Instant, creatorid: u32, id: u64) {
        if self.refused_key(creatorid, id) {
            return;
        }
        // Remembered even for a state we lack: its insert may still be on its way.
        self.tombstones.bury((creatorid, id), now);
        let Some(slot) = self.cache.find((creatorid, id)) else {
            self.stats.badstate += 1;
            return;
        };
        if self.cache.get(slot).deleted {
            // Gone here too; our DEL_C still goes, as the kernel's queue still holds it.
            self.stats.badstate += 1;
            return;
        }
        // Removed because a peer said so: no DEL_C goes back.
        let entry = self.cache.remove(slot);
        if entry.filtered == Some(Filtered::Unimported) {
            self.stats.filtered_in += 1;
            return;
        }
        self.push_delete_op(creatorid, id);
    }
}
