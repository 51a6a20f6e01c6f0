//! The sync engine: what the kernels' `if_pfsync.c` does, as a pure state machine.
//!
//! No sockets, no clock reads, no syscalls, no threads (sans-IO, like quinn-proto). The
//! caller feeds it inputs, each with the current time:
//! - [`Engine::handle_packet`]: a pfsync packet received on the sync link;
//! - [`Engine::handle_local`]: a change of the local state table;
//! - [`Engine::handle_timeout`]: the deadline from [`Engine::poll_timeout`] passed;
//! - [`Engine::request_bulk`], [`Engine::flush`]: commands.
//!
//! After any of them, the caller drains the outputs: [`Engine::poll_transmit`] (packets
//! for the sync link), [`Engine::poll_table_op`] (operations on the local table),
//! [`Engine::poll_event`] (carp demotion, bulk status), and asks
//! [`Engine::poll_timeout`] when to call again.
//!
//! Behaviour follows the kernels (pfsync-wire.md §3): one queue per message kind with at
//! most one slot per state; packets built at flush time and filled to the MTU; a 1 s
//! batching timer; immediate sends for update requests, clears, stale replies, `maxupd`
//! and split states; a bulk update on request, paced; our own bulk request at start,
//! retried, with carp demotion until it completes.

mod cache;
mod merge;
mod stats;

pub use cache::{Key, Queue};
pub use merge::{merge, seq_gt, Merge};
pub use stats::{Stats, ACTIONS};

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use cache::{Cache, Entry};

use crate::state::{Peer, State, StateFlags};
use crate::wire::msg::bus::{STATUS_END, STATUS_START};
use crate::wire::msg::{BusRepr, ClrRepr, StateRefRepr, UpdCRepr};
use crate::wire::{
    Dialect, IfName, Message, PacketBuilder, PacketReader, Pushed, RawItem, RecordFormat,
};

/// IP protocol number of pfsync itself: its own states are never synced.
pub const IPPROTO_PFSYNC: u8 = 240;

/// Engine settings. `Config::new` gives the kernels' defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our host id, written into BUS and CLR messages.
    pub creatorid: u32,
    /// The dialect we send.
    pub dialect: Dialect,
    /// MTU of the sync link.
    pub mtu: usize,
    /// Bytes of the IP header under each packet (20 for IPv4, 40 for IPv6).
    pub ip_header_len: usize,
    /// A TCP state updated this many times is sent at once (`maxupd`).
    pub maxupd: u8,
    /// Longest a queued change waits before it is sent.
    pub flush_delay: Duration,
    /// A local update to a state a peer updated less than this ago is sent at once.
    pub split_window: Duration,
    /// How long our bulk request waits for an answer before it is sent again.
    pub bulk_retry: Duration,
    /// How many times our bulk request is sent before we give up and call it done.
    pub bulk_max_tries: u32,
    /// How long a bulk update may take once the peer announced its start.
    pub bulk_end_timeout: Duration,
    /// Pause between bursts of a bulk update we send.
    pub bulk_interval: Duration,
    /// Packets per burst of a bulk update we send.
    pub bulk_burst: usize,
    /// A bulk request arriving while we send one restarts it, unless the running one
    /// started less than this ago (then it is run again once it ends).
    pub bulk_restart_min: Duration,
    /// Most states the cache holds; beyond, states are counted and not synced.
    pub max_states: usize,
    /// Most update requests waiting to be sent.
    pub max_pending_requests: usize,
    /// The header checksum field (FreeBSD: the ruleset checksum).
    pub pfcksum: [u8; 16],
}

impl Config {
    /// The kernels' defaults for `dialect`: MTU 1500, maxupd 128, 1 s batching, bulk
    /// request retried every 2 s (OpenBSD) or 5 s (FreeBSD) up to 12 times.
    pub fn new(creatorid: u32, dialect: Dialect) -> Config {
        let bulk_retry = match dialect {
            Dialect::OpenBsd => Duration::from_secs(2),
            _ => Duration::from_secs(5),
        };
        Config {
            creatorid,
            dialect,
            mtu: 1500,
            ip_header_len: 20,
            maxupd: 128,
            flush_delay: Duration::from_secs(1),
            split_window: Duration::from_secs(2),
            bulk_retry,
            bulk_max_tries: 12,
            bulk_end_timeout: Duration::from_secs(120),
            bulk_interval: Duration::from_millis(1),
            bulk_burst: 1,
            bulk_restart_min: Duration::from_secs(1),
            max_states: 10_000_000,
            max_pending_requests: 4096,
            pfcksum: [0; 16],
        }
    }
}

/// A packet received on the sync link, with what the transport knows of it.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The pfsync payload (after the IP header).
    pub payload: &'a [u8],
    /// It arrived on the sync interface.
    pub on_syncdev: bool,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// It came over IPv6.
    pub ipv6: bool,
}

/// A change of the local state table, as the table backend reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LocalChange {
    /// A state appeared.
    Insert(State),
    /// A state changed.
    Update(State),
    /// A state went away.
    Delete {
        /// Its creator.
        creatorid: u32,
        /// Its id.
        id: u64,
    },
    /// States were flushed (`pfctl -F states`, optionally `-i ifname`).
    Clear {
        /// Only the states on this interface; empty for all.
        ifname: IfName,
    },
}

/// A packet to send on the sync link (to the sync peers or the multicast group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The pfsync payload; the transport adds the IP header (protocol 240, TTL 255).
    pub payload: Vec<u8>,
}

/// An operation on the local state table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TableOp {
    /// Add a state a peer sent.
    Import(State),
    /// Replace a state with the merged copy.
    Update(State),
    /// Remove a state.
    Delete {
        /// Its creator.
        creatorid: u32,
        /// Its id.
        id: u64,
    },
    /// Remove every state of a creator (on one interface if named).
    Clear {
        /// The creator.
        creatorid: u32,
        /// Only on this interface; empty for all.
        ifname: IfName,
    },
}

/// Something the daemon acts on or logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Raise (true) or lower (false) the carp demotion: we are not in sync yet.
    CarpDemote(bool),
    /// Our bulk update ended: `complete` if a peer said so, false if we gave up.
    BulkDone {
        /// A BUS END arrived (rather than the tries running out).
        complete: bool,
    },
    /// A peer asked us for a bulk update and we started sending it.
    BulkSendStarted,
    /// We finished sending a bulk update.
    BulkSendDone {
        /// States sent.
        states: u64,
    },
}

/// Where our own bulk request is (the kernel's `pfsync_bulk_req_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkRequest {
    /// Never asked.
    Idle,
    /// Sent, waiting for a BUS START; retried until the tries run out.
    Waiting {
        /// Tries so far.
        tries: u32,
        /// When the current try times out.
        deadline: Instant,
    },
    /// A peer is sending it.
    Receiving {
        /// When we stop waiting for its end.
        deadline: Instant,
    },
    /// Done (complete, or given up).
    Done,
}

/// A bulk update we are sending.
#[derive(Debug, Clone)]
struct BulkSend {
    keys: Vec<Key>,
    next: usize,
    started: Instant,
    next_at: Instant,
    start_sent: bool,
    sent: u64,
    run_again: bool,
}

/// The sync engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    cache: Cache,
    requests: VecDeque<Key>,
    requested: HashSet<Key>,
    clears: Vec<ClrRepr>,
    bus: Vec<BusRepr>,
    send_bulk_request: bool,
    flush_at: Option<Instant>,
    bulk_request: BulkRequest,
    bulk_requested_at: Option<Instant>,
    bulk_send: Option<BulkSend>,
    demoted: bool,
    syncok: bool,
    transmits: VecDeque<Transmit>,
    table_ops: VecDeque<TableOp>,
    events: VecDeque<Event>,
    stats: Stats,
}

/// Bytes a subheader takes.
const SUBHEADER: usize = crate::wire::subheader::SIZE;
/// Bytes of a state reference (INS_ACK, UPD_REQ, DEL_C).
const REF_LEN: usize = crate::wire::msg::state_ref::SIZE;

impl Engine {
    /// An engine with nothing cached and no bulk request made yet.
    pub fn new(config: Config) -> Engine {
        Engine {
            cache: Cache::new(config.max_states),
            config,
            requests: VecDeque::new(),
            requested: HashSet::new(),
            clears: Vec::new(),
            bus: Vec::new(),
            send_bulk_request: false,
            flush_at: None,
            bulk_request: BulkRequest::Idle,
            bulk_requested_at: None,
            bulk_send: None,
            demoted: false,
            syncok: false,
            transmits: VecDeque::new(),
            table_ops: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// True once our bulk update completed or was given up (the kernel's `syncok`).
    pub fn syncok(&self) -> bool {
        self.syncok
    }

    /// Where our bulk request is.
    pub fn bulk_request_state(&self) -> BulkRequest {
        self.bulk_request
    }

    /// True while we send a bulk update.
    pub fn bulk_sending(&self) -> bool {
        self.bulk_send.is_some()
    }

    /// Number of cached states.
    pub fn state_count(&self) -> usize {
        self.cache.len()
    }

    /// A cached state.
    pub fn state(&self, creatorid: u32, id: u64) -> Option<&State> {
        self.cache
            .find((creatorid, id))
            .map(|slot| self.cache.get(slot))
            .filter(|e| !e.deleted)
            .map(|e| &e.state)
    }

    /// Every cached state that is not deleted.
    pub fn states(&self) -> impl Iterator<Item = &State> + '_ {
        self.cache
            .slots()
            .map(|s| self.cache.get(s))
            .filter(|e| !e.deleted)
            .map(|e| &e.state)
    }

    /// The transport failed to send a packet we handed out.
    pub fn report_send_error(&mut self) {
        self.stats.oerrors += 1;
    }

    // ---------------------------------------------------------------- outputs

    /// The next packet to send. Call after every input until it returns `None`.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next operation for the local table.
    #[must_use]
    pub fn poll_table_op(&mut self) -> Option<TableOp> {
        self.table_ops.pop_front()
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let bulk_req = match self.bulk_request {
            BulkRequest::Waiting { deadline, .. } | BulkRequest::Receiving { deadline } => {
                Some(deadline)
            }
            _ => None,
        };
        let bulk_send = self.bulk_send.as_ref().map(|b| b.next_at);
        [self.flush_at, bulk_req, bulk_send]
            .into_iter()
            .flatten()
            .min()
    }

    // ---------------------------------------------------------------- commands

    /// Asks the peers for every state they have (a bulk update), as a pfsync interface
    /// does when it comes up. Carp is demoted until the update ends or we give up.
    pub fn request_bulk(&mut self, now: Instant) {
        self.bulk_request = BulkRequest::Waiting {
            tries: 1,
            deadline: now + self.config.bulk_retry,
        };
        self.bulk_requested_at = Some(now);
        self.stats.bulk_tries = 1;
        self.syncok = false;
        self.set_demoted(true);
        self.queue_bulk_request(now);
    }

    /// Sends whatever is queued now.
    pub fn flush(&mut self, now: Instant) {
        self.send_pending(now);
    }

    fn set_demoted(&mut self, on: bool) {
        if self.demoted != on {
            self.demoted = on;
            self.events.push_back(Event::CarpDemote(on));
        }
    }

    fn queue_bulk_request(&mut self, now: Instant) {
        self.stats.bulk_requests_sent += 1;
        self.send_bulk_request = true;
        self.send_pending(now);
    }

    fn bulk_request_done(&mut self, now: Instant, complete: bool) {
        self.bulk_request = BulkRequest::Done;
        self.syncok = true;
        if let Some(at) = self.bulk_requested_at {
            self.stats.bulk_last_duration_ms = now.saturating_duration_since(at).as_millis() as u64;
        }
        self.set_demoted(false);
        self.events.push_back(Event::BulkDone { complete });
    }

    // ---------------------------------------------------------------- timers

    /// Runs what is due at `now`: the batching timer, bulk request retries, the next
    /// burst of a bulk update we send.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.flush_at.is_some_and(|t| t <= now) {
            self.send_pending(now);
        }
        match self.bulk_request {
            BulkRequest::Waiting { tries, deadline } if deadline <= now => {
                if tries < self.config.bulk_max_tries {
                    self.bulk_request = BulkRequest::Waiting {
                        tries: tries + 1,
                        deadline: now + self.config.bulk_retry,
                    };
                    self.stats.bulk_tries = u64::from(tries + 1);
                    self.queue_bulk_request(now);
                } else {
                    // As the kernels do: give up, and call ourselves in sync.
                    self.bulk_request_done(now, false);
                }
            }
            BulkRequest::Receiving { deadline } if deadline <= now => {
                self.bulk_request_done(now, false);
            }
            _ => {}
        }
        if self.bulk_send.as_ref().is_some_and(|b| b.next_at <= now) {
            self.bulk_send_burst(now);
        }
    }

    // ---------------------------------------------------------------- receive

    /// Handles a packet from the sync link.
    pub fn handle_packet(&mut self, now: Instant, packet: Received<'_>) {
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
        let reader = match PacketReader::new(packet.payload) {
            Ok(r) => r,
            Err(e) => {
                self.stats.count(e.counter());
                return;
            }
        };
        let dialect = reader.dialect();
        for item in reader.raw_items() {
            match item {
                Ok(RawItem::Record(record)) => {
                    if let Some(n) = dialect.action_number(record.action()) {
                        self.stats.iacts[usize::from(n).min(ACTIONS - 1)] += 1;
                    }
                    match record.message() {
                        Ok(m) => self.handle_message(now, m),
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
    }

    fn handle_message(&mut self, now: Instant, message: Message) {
        match message {
            Message::Clr(c) => self.in_clr(c),
            Message::Ins(r) => match State::from_record(&r) {
                Ok(s) => self.in_ins(now, s),
                Err(e) => self.stats.count(e.counter()),
            },
            Message::Upd(r) => match State::from_record(&r) {
                Ok(s) => self.in_upd(now, s),
                Err(e) => self.stats.count(e.counter()),
            },
            Message::UpdC(u) => self.in_upd_c(now, &u),
            Message::UpdReq(r) => self.in_upd_req(now, r),
            Message::Del(r) => self.in_del(r.creatorid(), r.id()),
            Message::DelC(r) => self.in_del(r.creatorid, r.id),
            Message::Bus(b) => self.in_bus(now, b),
            // Deferral is not done in userland; IPsec SAs are not synced.
            Message::InsAck(_) | Message::TdbOpenBsd(_) | Message::TdbFreeBsd(_) => {}
        }
    }

    fn in_clr(&mut self, clr: ClrRepr) {
        let doomed: Vec<u32> = self
            .cache
            .slots()
            .filter(|&s| {
                let st = &self.cache.get(s).state;
                st.creatorid == clr.creatorid && (clr.ifname.is_empty() || st.ifname == clr.ifname)
            })
            .collect();
        for slot in doomed {
            // Removed because a peer said so: no DEL_C goes back.
            self.cache.remove(slot);
        }
        self.table_ops.push_back(TableOp::Clear {
            creatorid: clr.creatorid,
            ifname: clr.ifname,
        });
    }

    fn import(&mut self, now: Instant, mut state: State) -> Option<u32> {
        if state.creatorid == 0 {
            self.stats.badstate += 1;
            return None;
        }
        state.state_flags.remove(StateFlags::ACK);
        let mut entry = Entry::new(state);
        entry.peer_updated = Some(now);
        match self.cache.insert(entry) {
            Ok(slot) => {
                self.table_ops.push_back(TableOp::Import(state));
                Some(slot)
            }
            Err(_) => {
                self.stats.cache_full += 1;
                self.stats.badstate += 1;
                None
            }
        }
    }

    fn in_ins(&mut self, now: Instant, state: State) {
        let ack = state.state_flags.contains(StateFlags::ACK);
        let slot = match self.cache.find((state.creatorid, state.id)) {
            // A duplicate insert (a retransmission, a duplicated packet) is ignored.
            Some(slot) => slot,
            None => match self.import(now, state) {
                Some(slot) => slot,
                None => return,
            },
        };
        if ack {
            // The sender holds a packet until we acknowledge the state.
            self.enqueue(now, slot, Queue::InsAck);
            self.send_pending(now);
        }
    }

    fn in_upd(&mut self, now: Instant, state: State) {
        match self.cache.find((state.creatorid, state.id)) {
            None => {
                self.import(now, state);
            }
            Some(slot) => self.merge_into(now, slot, &state, true),
        }
    }

    fn in_upd_c(&mut self, now: Instant, upd: &UpdCRepr) {
        let key = (upd.creatorid, upd.id);
        let Some(slot) = self.cache.find(key) else {
            self.request_state(now, key);
            return;
        };
        let ours = self.cache.get(slot).state;
        let proto = ours.wire.proto;
        let theirs = (|| {
            Some(State {
                src: Peer::from_repr(&upd.src, proto, "src.state").ok()?,
                dst: Peer::from_repr(&upd.dst, proto, "dst.state").ok()?,
                timeout: crate::state::Timeout::from_number(upd.timeout)?,
                ..ours
            })
        })();
        match theirs {
            Some(theirs) => self.merge_into(now, slot, &theirs, false),
            None => self.stats.badval += 1,
        }
    }

    fn merge_into(&mut self, now: Instant, slot: u32, theirs: &State, full: bool) {
        let entry = self.cache.get_mut(slot);
        if entry.deleted {
            return;
        }
        entry.peer_updated = Some(now);
        let m = merge(&mut entry.state, theirs, full);
        let merged = entry.state;
        if m.changed {
            self.table_ops.push_back(TableOp::Update(merged));
        }
        if m.stale > 0 {
            // Tell the peer our newer view, at once.
            self.stats.stale += 1;
            if self.cache.get(slot).queue.is_none() {
                self.enqueue(now, slot, Queue::UpdC);
            }
            self.send_pending(now);
        }
    }

    fn request_state(&mut self, now: Instant, key: Key) {
        if self.requested.contains(&key) {
            return;
        }
        if self.requests.len() >= self.config.max_pending_requests {
            self.stats.req_overflow += 1;
            return;
        }
        self.make_room(now, SUBHEADER + REF_LEN);
        self.requested.insert(key);
        self.requests.push_back(key);
        self.send_pending(now);
    }

    fn in_upd_req(&mut self, now: Instant, req: StateRefRepr) {
        if req.is_bulk_request() {
            self.stats.bulk_requests_received += 1;
            self.start_bulk_send(now);
            return;
        }
        let Some(slot) = self.cache.find((req.creatorid, req.id)) else {
            self.stats.badstate += 1;
            return;
        };
        let e = self.cache.get(slot);
        if e.nosync || e.deleted {
            return;
        }
        self.enqueue(now, slot, Queue::Upd);
        self.send_pending(now);
    }

    fn in_del(&mut self, creatorid: u32, id: u64) {
        let Some(slot) = self.cache.find((creatorid, id)) else {
            self.stats.badstate += 1;
            return;
        };
        // Removed because a peer said so: no DEL_C goes back.
        self.cache.remove(slot);
        self.table_ops.push_back(TableOp::Delete { creatorid, id });
    }

    fn in_bus(&mut self, now: Instant, bus: BusRepr) {
        let waiting = matches!(
            self.bulk_request,
            BulkRequest::Waiting { .. } | BulkRequest::Receiving { .. }
        );
        if !waiting {
            return;
        }
        match bus.status {
            STATUS_START => {
                self.bulk_request = BulkRequest::Receiving {
                    deadline: now + self.config.bulk_end_timeout,
                };
            }
            STATUS_END => {
                // FreeBSD's check: the update must have started after our request,
                // or it is the tail of someone else's (OpenBSD sends endtime 0).
                let started = now.checked_sub(Duration::from_secs(u64::from(bus.endtime)));
                let requested = self.bulk_requested_at.unwrap_or(now);
                let late_enough = started.is_none_or(|s| s + Duration::from_secs(1) >= requested);
                if late_enough {
                    self.bulk_request_done(now, true);
                }
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------- local changes

    /// Handles a change of the local table.
    pub fn handle_local(&mut self, now: Instant, change: LocalChange) {
        match change {
            LocalChange::Insert(s) | LocalChange::Update(s) => self.local_upsert(now, s),
            LocalChange::Delete { creatorid, id } => self.local_delete(now, creatorid, id),
            LocalChange::Clear { ifname } => self.local_clear(now, ifname),
        }
    }

    fn never_synced(state: &State) -> bool {
        state.state_flags.contains(StateFlags::NOSYNC)
            || state.wire.proto == crate::state::Protocol::Other(IPPROTO_PFSYNC)
    }

    fn local_upsert(&mut self, now: Instant, state: State) {
        let key = (state.creatorid, state.id);
        let Some(slot) = self.cache.find(key) else {
            let mut entry = Entry::new(state);
            entry.nosync = Self::never_synced(&state);
            let nosync = entry.nosync;
            match self.cache.insert(entry) {
                Ok(slot) if !nosync => {
                    self.enqueue(now, slot, Queue::Ins);
                }
                Ok(_) => {}
                Err(_) => self.stats.cache_full += 1,
            }
            return;
        };
        let e = self.cache.get(slot);
        if e.nosync || e.deleted {
            return;
        }
        // What a peer could see changed: the peers, the timeout class, the flags. A
        // report equal to our copy (the table echoing a state we imported or merged)
        // is not news.
        let old = e.state;
        let news = old.src != state.src
            || old.dst != state.dst
            || old.timeout != state.timeout
            || old.state_flags != state.state_flags;
        let split = e
            .peer_updated
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.split_window);
        let tcp = state.wire.proto == crate::state::Protocol::Tcp;
        let queue = e.queue;
        self.cache.get_mut(slot).state = state;
        if !news {
            return;
        }
        match queue {
            None | Some(Queue::InsAck) => self.enqueue(now, slot, Queue::UpdC),
            // Already queued: the record is written from the newest copy at flush.
            Some(_) => {}
        }
        let mut now_please = split;
        if tcp {
            let e = self.cache.get_mut(slot);
            e.updates = e.updates.saturating_add(1);
            now_please |= e.updates >= self.config.maxupd;
        }
        if now_please {
            self.send_pending(now);
        }
    }

    fn local_delete(&mut self, now: Instant, creatorid: u32, id: u64) {
        let Some(slot) = self.cache.find((creatorid, id)) else {
            return;
        };
        let e = self.cache.get(slot);
        if e.nosync || e.queue == Some(Queue::Ins) {
            // Never announced: nothing to tell.
            self.cache.remove(slot);
            return;
        }
        if e.deleted {
            return;
        }
        self.cache.get_mut(slot).deleted = true;
        self.enqueue(now, slot, Queue::DelC);
    }

    fn local_clear(&mut self, now: Instant, ifname: IfName) {
        let doomed: Vec<u32> = self
            .cache
            .slots()
            .filter(|&s| ifname.is_empty() || self.cache.get(s).state.ifname == ifname)
            .collect();
        for slot in doomed {
            self.cache.remove(slot);
        }
        self.make_room(now, SUBHEADER + crate::wire::msg::clr::SIZE);
        self.clears.push(ClrRepr {
            ifname,
            creatorid: self.config.creatorid,
        });
        self.send_pending(now);
    }

    // ---------------------------------------------------------------- queues

    fn record_len(&self, queue: Queue) -> usize {
        match queue {
            Queue::Ins | Queue::Upd => self.config.dialect.record_format().size(),
            Queue::UpdC => crate::wire::msg::upd_c::SIZE,
            Queue::InsAck | Queue::DelC => REF_LEN,
        }
    }

    /// Bytes of the packet the queued messages make, trailer included.
    fn pending_len(&self) -> usize {
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
        if !self.requests.is_empty() || self.send_bulk_request {
            len +=
                SUBHEADER + (self.requests.len() + usize::from(self.send_bulk_request)) * REF_LEN;
        }
        if !self.clears.is_empty() {
            len += SUBHEADER + self.clears.len() * crate::wire::msg::clr::SIZE;
        }
        if !self.bus.is_empty() {
            len += SUBHEADER + self.bus.len() * crate::wire::msg::bus::SIZE;
        }
        len
    }

    fn budget(&self) -> usize {
        self.config
            .mtu
            .saturating_sub(self.config.ip_header_len)
            .min(usize::from(u16::MAX))
    }

    fn nothing_pending(&self) -> bool {
        Queue::ALL.iter().all(|&q| self.cache.queue_len(q) == 0)
            && self.requests.is_empty()
            && !self.send_bulk_request
            && self.clears.is_empty()
            && self.bus.is_empty()
    }

    /// Sends what is queued first if `extra` more bytes would not fit; arms the
    /// batching timer when the packet is empty.
    fn make_room(&mut self, now: Instant, extra: usize) {
        if !self.nothing_pending() && self.pending_len() + extra > self.budget() {
            self.send_pending(now);
        }
        if self.flush_at.is_none() {
            self.flush_at = Some(now + self.config.flush_delay);
        }
    }

    fn enqueue(&mut self, now: Instant, slot: u32, queue: Queue) {
        let len = self.record_len(queue);
        let opens_run = self.cache.queue_len(queue) == 0;
        let extra = len + if opens_run { SUBHEADER } else { 0 };
        if self.cache.get(slot).queue != Some(queue) {
            self.make_room(now, extra);
        }
        self.cache.enqueue(slot, queue);
    }

    /// Builds packets from everything queued and hands them to the transport.
    fn send_pending(&mut self, _now: Instant) {
        self.flush_at = None;
        if self.nothing_pending() {
            return;
        }
        let mut builder = PacketBuilder::with_ip_header(
            self.config.dialect,
            self.config.mtu,
            self.config.ip_header_len,
        );
        builder.set_pfcksum(self.config.pfcksum);
        let format = self.config.dialect.record_format();
        for q in Queue::ALL {
            while let Some(slot) = self.cache.front(q) {
                let message = self.message_for(slot, q, format);
                self.cache.dequeue(slot);
                let e = self.cache.get_mut(slot);
                e.updates = 0;
                if q == Queue::DelC {
                    self.cache.remove(slot);
                }
                self.push(&mut builder, &message);
            }
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
        for bus in std::mem::take(&mut self.bus) {
            self.push(&mut builder, &Message::Bus(bus));
        }
        self.finish_packet(&mut builder);
    }

    fn message_for(&mut self, slot: u32, queue: Queue, format: RecordFormat) -> Message {
        let state = self.cache.get(slot).state;
        let reference = StateRefRepr {
            id: state.id,
            creatorid: state.creatorid,
        };
        match queue {
            Queue::Ins | Queue::Upd => {
                let (record, lost) = state.to_record(format);
                self.stats.lost_fields += lost.iter().count() as u64;
                if queue == Queue::Ins {
                    Message::Ins(record)
                } else {
                    Message::Upd(record)
                }
            }
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
    fn push(&mut self, builder: &mut PacketBuilder, message: &Message) {
        match builder.push(message) {
            Ok(Pushed::Added) => self.count_out(message),
            Ok(Pushed::Full) => {
                self.finish_packet(builder);
                match builder.push(message) {
                    Ok(Pushed::Added) => self.count_out(message),
                    _ => self.stats.onomem += 1,
                }
            }
            // A message the dialect cannot carry: counted, the rest goes on.
            Err(_) => self.stats.onomem += 1,
        }
    }

    fn count_out(&mut self, message: &Message) {
        if let Some(n) = self.config.dialect.action_number(message.action()) {
            self.stats.oacts[usize::from(n).min(ACTIONS - 1)] += 1;
        }
    }

    fn finish_packet(&mut self, builder: &mut PacketBuilder) {
        if let Some(payload) = builder.finish() {
            if self.config.dialect.has_eof_trailer() {
                self.stats.oacts[12] += 1;
            }
            self.stats.opackets += 1;
            if self.config.ip_header_len == crate::wire::frame::IPV6_HEADER_LEN {
                self.stats.opackets6 += 1;
            }
            self.transmits.push_back(Transmit { payload });
        }
    }

    // ---------------------------------------------------------------- bulk send

    fn start_bulk_send(&mut self, now: Instant) {
        if let Some(running) = self.bulk_send.as_mut() {
            if now.saturating_duration_since(running.started) < self.config.bulk_restart_min {
                // A burst of requests (several peers starting, or a flood): one more
                // full pass after this one, not a restart each time.
                running.run_again = true;
                return;
            }
        }
        let keys: Vec<Key> = self
            .cache
            .slots()
            .map(|s| self.cache.get(s))
            .filter(|e| !e.nosync && !e.deleted)
            .map(|e| (e.state.creatorid, e.state.id))
            .collect();
        self.bulk_send = Some(BulkSend {
            keys,
            next: 0,
            started: now,
            next_at: now,
            start_sent: false,
            sent: 0,
            run_again: false,
        });
        self.events.push_back(Event::BulkSendStarted);
        self.bulk_send_burst(now);
    }

    fn bus_message(&self, now: Instant, status: u8, started: Instant) -> Message {
        Message::Bus(BusRepr {
            creatorid: self.config.creatorid,
            endtime: now.saturating_duration_since(started).as_secs() as u32,
            status,
        })
    }

    fn bulk_send_burst(&mut self, now: Instant) {
        let Some(mut bulk) = self.bulk_send.take() else {
            return;
        };
        let format = self.config.dialect.record_format();
        let mut builder = PacketBuilder::with_ip_header(
            self.config.dialect,
            self.config.mtu,
            self.config.ip_header_len,
        );
        builder.set_pfcksum(self.config.pfcksum);
        if !bulk.start_sent {
            // BUS START goes out in its own packet, as FreeBSD sends it.
            let start = self.bus_message(now, STATUS_START, bulk.started);
            self.push(&mut builder, &start);
            self.finish_packet(&mut builder);
            bulk.start_sent = true;
        }
        let mut packets = 0;
        while packets < self.config.bulk_burst && bulk.next < bulk.keys.len() {
            let key = bulk.keys[bulk.next];
            let Some(slot) = self.cache.find(key) else {
                bulk.next += 1;
                continue;
            };
            let e = self.cache.get(slot);
            if e.nosync || e.deleted {
                bulk.next += 1;
                continue;
            }
            let (record, lost) = e.state.to_record(format);
            self.stats.lost_fields += lost.iter().count() as u64;
            let message = Message::Upd(record);
            match builder.push(&message) {
                Ok(Pushed::Added) => {
                    self.count_out(&message);
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
        if bulk.next >= bulk.keys.len() {
            let end = self.bus_message(now, STATUS_END, bulk.started);
            self.push(&mut builder, &end);
            self.finish_packet(&mut builder);
            self.stats.bulk_sends_completed += 1;
            self.events
                .push_back(Event::BulkSendDone { states: bulk.sent });
            if bulk.run_again {
                self.start_bulk_send(now);
            }
            return;
        }
        self.finish_packet(&mut builder);
        bulk.next_at = now + self.config.bulk_interval;
        self.bulk_send = Some(bulk);
    }
}
