//! The sync engine: what the kernels' `if_pfsync.c` does, as a pure state machine.
//!
//! No sockets, no clock reads, no randomness, no syscalls, no threads (sans-IO, like
//! quinn-proto). The caller feeds it inputs, each with the current time:
//! - [`Engine::handle_packet`]: a pfsync packet received on the sync link;
//! - [`Engine::handle_local`]: a change of the local state table;
//! - [`Engine::handle_timeout`]: the deadline from [`Engine::poll_timeout`] passed;
//! - [`Engine::request_bulk`], [`Engine::send_bulk`], [`Engine::flush`]: commands.
//!
//! A table that predates the engine is handed over with [`Engine::load`] before the
//! first input. The creator id and the hash key come from the caller ([`Config::new`]
//! for a configured id, [`Config::random`] for one drawn from the OS's random source).
//!
//! After any of them, the caller drains the outputs: [`Engine::poll_transmit`] (packets
//! for the sync link), [`Engine::poll_table_op`] (operations on the local table),
//! [`Engine::poll_event`] (carp demotion, bulk status), and asks
//! [`Engine::poll_timeout`] when to call again. Outputs queue up until drained; an input
//! produces at most what its own work amounts to (a packet in, some packets and table
//! operations out), so draining after each input keeps them small.
//!
//! Behaviour follows the kernels (pfsync-wire.md §3): one queue per message kind with at
//! most one slot per state; packets built at flush time and filled to the MTU; a 1 s
//! batching timer; immediate sends for update requests, clears, stale replies, `maxupd`
//! and split states; a bulk update on request, paced; our own bulk request at start,
//! retried, with carp demotion until it completes.
//!
//! "Immediate" means at the end of the input being handled: every answer a received
//! packet calls for (update requests for the unknown states of a UPD_C run, full updates
//! for a run of UPD_REQ, stale replies) leaves in one flush, as OpenBSD sends the
//! requests of one UPD_C block in one packet and FreeBSD defers its push to a software
//! interrupt.
//!
//! Deliberate differences from the kernels are marked "Difference:" where they are made.
//! In short:
//! - with [`Config::immediate`] (for clusters of pfsyncd peers only) every queued change
//!   is due at once: it leaves at the caller's next [`Engine::handle_timeout`], the end
//!   of its turn, packed with whatever else the turn queued, instead of after the 1 s
//!   batch;
//! - a full update or insert for a state deleted less than `tombstone_ttl` (5 s) ago is
//!   refused, as a copy overtaken by the DEL_C (`tombstones.rs`; a zero TTL restores the
//!   kernels' behaviour, which lets such copies linger until pf expires them); when the
//!   refused copy is of a state of ours, we send its DEL_C again, for the other nodes
//!   that took it in; likewise, for that time after a clear, copies of states older
//!   than the clear that covered them are refused;
//! - a bulk request during a bulk send we run schedules one more full pass, however
//!   many arrive (FreeBSD restarts the send, OpenBSD ignores the request), sends BUS
//!   START again at once (at most once a second), and holds the END back until that
//!   pass is done (`bulk.rs: start_bulk_send`);
//! - the wait for BUS END is an idle timeout renewed by the sender's full updates, not
//!   a total sized from the state limit, and when no START came but a bulk's updates
//!   do, we wait for its END rather than give up (`bulk.rs: bulk_progress`);
//! - bulk updates go at the pace of the dialect's kernel unless configured
//!   ([`kernel_bulk_interval`]);
//! - records carry the age and expiry as at the time they are written (`cache.rs:
//!   EntryRef::state_at`), as the kernels' export does;
//! - no-sync states are not cached at all;
//! - a duplicate INS is counted in `ins_duplicate`, not in `badact`;
//! - the bulk send covers every cached state, queued or not (FreeBSD skips states with
//!   a pending message), and BUS END shares the last records' packet when it fits;
//! - a peer's state is cached and imported without its rule numbers unless its packet
//!   carries our ruleset checksum in a FreeBSD header (`receive.rs: rules_trusted`), so
//!   we never relay a number from another ruleset under our checksum;
//! - a peer's id 0 is refused (`receive.rs: refused_key`);
//! - sync filters keep classes of states out of sync both ways (`filter.rs`), and new
//!   local states may be announced only once they are old enough (`delay.rs`); both
//!   are off by default.
//! - the merge is OpenBSD's (`merge.rs`): FreeBSD's re-copy of the message's dst peer
//!   when one side is stale is not reproduced;
//! - no deferral: we never set the ACK flag, and an INS_ACK releases nothing (we do
//!   acknowledge a peer's INS that asks for it).
//!
//! `Config::bulk_max_tries` counts every send of our bulk request, the first included
//! (12 sends, then we give up and call ourselves in sync).

mod bulk;
mod cache;
mod delay;
mod digest;
#[cfg(test)]
mod digest_tests;
mod filter;
mod hash;
mod index;
mod mapping;
mod merge;
mod peers;
mod receive;
mod send;
mod session;
mod stats;
#[cfg(test)]
mod tests;
mod tombstones;

pub use bulk::CompactBulk;
pub use cache::{Key, Queue};
pub use digest::FORGET_MIN_AGE;
pub use filter::{FilterRule, SyncFilter};
pub use hash::{KeyedHasher, KeyedState};
pub use mapping::{IfMap, IfMapping};
pub use merge::{merge, seq_gt, Merge};
pub use peers::AllowedSources;
pub use stats::{Stats, ACTIONS};

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use cache::{Cache, Entry};

use crate::state::{Protocol, State, StateFlags};
use crate::wire::msg::ClrRepr;
use crate::wire::{Dialect, IfName};

/// IP protocol number of pfsync itself: its own states are never synced.
pub const IPPROTO_PFSYNC: u8 = 240;

/// The IPv4 multicast group pfsync sends to unless a sync peer is configured.
pub const PFSYNC_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 240);
/// The IPv6 multicast group FreeBSD 14+ sends to over IPv6 (`ff12::f0`).
pub const PFSYNC_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff12, 0, 0, 0, 0, 0, 0, 0xf0);

/// How long a running bulk update may stay silent. The kernels pace their senders at
/// one packet per 20 ms (OpenBSD `pfsync_bulk_snd_tmo`) or per clock tick (FreeBSD
/// `pfsync_bulk_update`); their requesters wait at least 4 s for the whole bulk
/// (`pfsync_bulk_req_nstate_bulk`, FreeBSD `pfsync_in_bus`). A sender silent this long has
/// gone away or lost the END.
pub const BULK_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// The pause between the packets of a bulk update the kernel speaking `dialect` sends,
/// and so the pace its input is built for: OpenBSD one packet per 20 ms
/// (`PFSYNC_BULK_SND_IVAL_MS`, `pfsync_bulk_snd_tmo`), FreeBSD one per clock tick
/// (`pfsync_bulk_update` re-arms its callout with 1 tick; 1 ms at the default hz 1000).
pub fn kernel_bulk_interval(dialect: Dialect) -> Duration {
    match dialect {
        Dialect::OpenBsd => Duration::from_millis(20),
        Dialect::FreeBsd1301 | Dialect::FreeBsd1400 | Dialect::FreeBsd1500 => {
            Duration::from_millis(1)
        }
    }
}

/// Engine settings. [`Config::new`] and [`Config::random`] give the kernels' defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our host id, written into BUS and CLR messages. It must be the creator id the
    /// local table gives the states it creates (pf's hostid).
    pub creatorid: u32,
    /// The dialect we send.
    pub dialect: Dialect,
    /// Where packets go: the multicast group or a unicast sync peer.
    pub syncpeer: IpAddr,
    /// MTU of the sync link.
    pub mtu: usize,
    /// Bytes of the IP header under each packet (20 for IPv4, 40 for IPv6).
    pub ip_header_len: usize,
    /// A TCP state updated this many times since it was last sent is sent at once
    /// (`maxupd`; 0 and 1 both mean every update).
    pub maxupd: u8,
    /// Longest a queued change waits before it is sent.
    pub flush_delay: Duration,
    /// Queued changes are due at once instead of after `flush_delay`: the caller's
    /// [`Engine::handle_timeout`] at the end of its turn sends them, packed together.
    /// Off by default (the kernels' 1 s batch); for peers that are all pfsyncd.
    pub immediate: bool,
    /// A local update to a state a peer updated less than this ago is sent at once.
    pub split_window: Duration,
    /// How long our bulk request waits for a BUS START before it is sent again.
    pub bulk_retry: Duration,
    /// How many times our bulk request is sent in all before we give up and call
    /// ourselves in sync.
    pub bulk_max_tries: u32,
    /// How long a bulk update the peer announced may go without a full state record
    /// before we ask again: an idle timeout, refreshed by every state the bulk brings,
    /// so that a kernel sender's pace (OpenBSD: 5 states per 20 ms) never cuts a large
    /// table short.
    pub bulk_idle_timeout: Duration,
    /// Pause between bursts of a bulk update we send.
    pub bulk_interval: Duration,
    /// Packets per burst of a bulk update we send.
    pub bulk_burst: usize,
    /// The bulk pace was set ([`set_bulk_pps`](Self::set_bulk_pps)): it stays when the
    /// dialect changes. Otherwise it is the dialect's kernel's
    /// ([`kernel_bulk_interval`]).
    pub bulk_pace_set: bool,
    /// The timer sends our bulk updates at the pace above (the kernels' way). Off, the
    /// walk moves only when [`Engine::bulk_compact_batches`] asks for batches: a sender
    /// paced by its receiver (pfsyncd peers only; a kernel peer needs the paced bulk).
    pub bulk_paced: bool,
    /// Most states the cache holds; beyond, states are counted and not synced.
    pub max_states: usize,
    /// Most update requests waiting to be sent.
    pub max_pending_requests: usize,
    /// The header checksum field (FreeBSD: the ruleset checksum).
    pub pfcksum: [u8; 16],
    /// Secret key of the cache index's hash (see [`hash`](KeyedState)).
    pub hash_key: [u64; 2],
    /// How long a deleted state's stale copies are refused (zero: as the kernels, never;
    /// see `tombstones.rs`).
    pub tombstone_ttl: Duration,
    /// Most deletes remembered for that.
    pub max_tombstones: usize,
    /// States kept out of sync both ways (see `filter.rs`); empty by default.
    pub filter: SyncFilter,
    /// How old a new local state must be before it is announced (see `delay.rs`);
    /// zero by default, as the kernels announce at once.
    pub sync_delay: Duration,
}

impl Config {
    /// The kernels' defaults for `dialect`, with a configured `creatorid`: MTU 1500,
    /// maxupd 128, 1 s batching, 2 s split window, bulk request retried every 2 s
    /// (OpenBSD) or 5 s (FreeBSD), 12 tries in all, bulk updates sent at the pace of
    /// the dialect's kernel.
    ///
    /// The hash key is a fixed one, which makes runs reproducible but lets whoever reads
    /// this source aim inserts at one bucket: a daemon sets [`hash_key`](Self::hash_key)
    /// from the OS's random source, or uses [`Config::random`].
    pub fn new(creatorid: u32, dialect: Dialect) -> Config {
        let bulk_retry = match dialect {
            Dialect::OpenBsd => Duration::from_secs(2),
            _ => Duration::from_secs(5),
        };
        Config {
            creatorid,
            dialect,
            syncpeer: IpAddr::V4(PFSYNC_GROUP_V4),
            mtu: 1500,
            ip_header_len: crate::wire::frame::IPV4_HEADER_LEN,
            maxupd: 128,
            flush_delay: Duration::from_secs(1),
            immediate: false,
            split_window: Duration::from_secs(2),
            bulk_retry,
            bulk_max_tries: 12,
            bulk_idle_timeout: BULK_IDLE_TIMEOUT,
            bulk_interval: kernel_bulk_interval(dialect),
            bulk_burst: 1,
            bulk_pace_set: false,
            bulk_paced: true,
            max_states: 10_000_000,
            max_pending_requests: 4096,
            pfcksum: [0; 16],
            hash_key: [0, 0],
            tombstone_ttl: Duration::from_secs(5),
            max_tombstones: 65_536,
            filter: SyncFilter::default(),
            sync_delay: Duration::ZERO,
        }
    }

    /// Paces our bulk updates at `pps` packets per second, whatever the dialect:
    /// bursts every millisecond from 1000 packets per second up, single packets spaced
    /// out below.
    pub fn set_bulk_pps(&mut self, pps: u32) {
        let pps = pps.max(1);
        if pps >= 1000 {
            self.bulk_interval = Duration::from_millis(1);
            self.bulk_burst = pps as usize / 1000;
        } else {
            self.bulk_interval = Duration::from_secs(1) / pps;
            self.bulk_burst = 1;
        }
        self.bulk_pace_set = true;
    }

    /// The defaults with a random creator id and hash key, from 32 bytes the caller drew
    /// from the operating system (`getrandom(2)`, `arc4random_buf(3)`): the engine reads
    /// no randomness itself. Bytes 0..4 give the creator id (never 0, which receivers
    /// refuse), bytes 16..32 the hash key; the rest is unused.
    pub fn random(dialect: Dialect, random: [u8; 32]) -> Config {
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&random[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let id = u32::from_le_bytes([random[0], random[1], random[2], random[3]]);
        Config {
            hash_key: [word(16), word(24)],
            ..Config::new(id.max(1), dialect)
        }
    }
}

/// A packet received on the sync link, with what the transport knows of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    /// The pfsync payload (after the IP header).
    pub payload: &'a [u8],
    /// It arrived on the sync interface.
    pub on_syncdev: bool,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// It came over IPv6.
    pub ipv6: bool,
    /// The sender's address: checked against [`AllowedSources`] (the kernels accept
    /// any), and the key of per-peer interface mappings.
    pub source: Option<IpAddr>,
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

/// The settings of the sync link that can change while the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSettings {
    /// The dialect we send.
    pub dialect: Dialect,
    /// MTU of the sync link.
    pub mtu: usize,
    /// Bytes of the IP header under each packet (20 for IPv4, 40 for IPv6).
    pub ip_header_len: usize,
    /// `maxupd`.
    pub maxupd: u8,
    /// Where packets go: a unicast peer or the multicast group.
    pub syncpeer: IpAddr,
}

/// A packet to send on the sync link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to: the configured sync peer or multicast group.
    pub destination: IpAddr,
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

/// A table operation as [`Engine::poll_table_op_packed`] gives it: the state of an
/// import or an update by its compact encoding ([`crate::state::compact`]), as the
/// engine cached it, not as a [`State`]. A caller that sends the state on in that
/// encoding (the engine process to its parent) neither makes the 400-byte `State` nor
/// encodes it again; [`to_op`](Self::to_op) decodes it for one that needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackedTableOp<'a> {
    /// Add a state a peer sent.
    Import(&'a [u8]),
    /// Replace a state with the merged copy.
    Update(&'a [u8]),
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

impl PackedTableOp<'_> {
    /// The operation, its state decoded.
    pub fn to_op(&self) -> TableOp {
        // Only the cache's encoder made these bytes (`Engine::push_cached_state_op`):
        // a failure is a bug in the codec, which its tests rule out.
        let state = |packed: &[u8]| {
            crate::state::compact::decode(packed).expect("a state the engine packed")
        };
        match *self {
            PackedTableOp::Import(packed) => TableOp::Import(state(packed)),
            PackedTableOp::Update(packed) => TableOp::Update(state(packed)),
            PackedTableOp::Delete { creatorid, id } => TableOp::Delete { creatorid, id },
            PackedTableOp::Clear { creatorid, ifname } => TableOp::Clear { creatorid, ifname },
        }
    }

    /// The compact encoding of an import's or an update's state.
    pub fn packed(&self) -> Option<&[u8]> {
        match *self {
            PackedTableOp::Import(packed) | PackedTableOp::Update(packed) => Some(packed),
            _ => None,
        }
    }
}

/// A table operation in the engine's queue: the state of an import or an update is not
/// held (a `State` is 400 bytes, and each move of one a copy), only the number of the
/// cache's loan of its packed bytes (`Cache::lend`).
#[derive(Debug, Clone, Copy)]
enum QueuedOp {
    Import { loan: u32 },
    Update { loan: u32 },
    Delete { creatorid: u32, id: u64 },
    Clear { creatorid: u32, ifname: IfName },
}

/// Where a packet came from, as far as a bulk request in it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputOrigin {
    /// The plain link: a kernel peer, or a daemon without a session: the paced bulk.
    Plain,
    /// DATA of a pfsyncd session peer: the compact bulk.
    Session,
    /// The plain link, from a source that may be a pfsyncd peer (being probed, or a
    /// session peer whose DATA copy asks too): a bulk request is noted, not answered;
    /// the caller answers it ([`Engine::answer_bulk_request`]) once it knows which.
    PlainHeld,
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
        /// When we stop waiting for its end, unless more of it comes first.
        deadline: Instant,
    },
    /// Done (complete, or given up).
    Done,
}

/// The sync engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    config: Config,
    cache: Cache,
    /// Update requests to send (UPD_REQ for states we lack), deduplicated by `requested`.
    requests: VecDeque<Key>,
    requested: HashSet<Key, KeyedState>,
    tombstones: tombstones::Tombstones,
    clear_marks: tombstones::ClearMarks,
    /// DEL_Cs to say again for states of ours already gone from the cache.
    redeletes: Vec<Key>,
    /// New local states waiting to be old enough to be announced.
    delays: delay::DelayQueue,
    /// When to drop the peers' unimported filtered states that expired (`filter.rs`).
    unimported_sweep_at: Option<Instant>,
    clears: Vec<ClrRepr>,
    send_bulk_request: bool,
    /// The batching timer: when the queued messages go out at the latest.
    flush_at: Option<Instant>,
    /// Something asked for an immediate send: flush at the end of this input.
    flush_now: bool,
    /// The packet being handled may bind states to rules by number (see
    /// `receive.rs: rules_trusted`).
    rules_trusted: bool,
    /// Where the packet being handled came from, if the transport said.
    packet_source: Option<IpAddr>,
    /// Where the BUS START of the bulk update we receive came from, if known: only its
    /// records are that bulk's progress.
    bulk_sender: Option<IpAddr>,
    bulk_request: BulkRequest,
    bulk_requested_at: Option<Instant>,
    /// When the last full state record (INS, UPD) arrived: a bulk update's progress,
    /// also one whose START we missed.
    last_full_record: Option<Instant>,
    bulk_send: Option<bulk::BulkSend>,
    /// The compact bulk update we send to pfsyncd peers, paced by them (see
    /// [`Engine::bulk_compact_batches`]); runs beside a paced one for kernel peers.
    compact_send: Option<bulk::BulkSend>,
    /// Where the packet being handled came from, as far as a bulk request in it goes.
    input_origin: InputOrigin,
    /// A bulk request arrived from a [`InputOrigin::PlainHeld`] source.
    held_bulk_request: bool,
    /// When the last pass of the compact bulk that ended began (its END's endtime).
    compact_last_started: Option<Instant>,
    /// The senders whose packets are taken (`peers.rs`).
    allowed_sources: AllowedSources,
    /// The sender of the last packet refused for its source, for the log.
    last_refused_source: Option<IpAddr>,
    /// The peers' interface names and ours (`mapping.rs`).
    ifmap: IfMap,
    demoted: bool,
    syncok: bool,
    transmits: VecDeque<Transmit>,
    table_ops: VecDeque<QueuedOp>,
    events: VecDeque<Event>,
    stats: Stats,
    /// The states of the compact batch being handled, in one vector kept for every
    /// batch (see `bulk.rs: handle_vouched_compact_batch`).
    compact_states: Vec<State>,
    /// The lone records of those states (`compact_record::decode_batch_lone`), kept
    /// likewise.
    compact_lone: crate::state::compact_record::LoneRecords,
    /// The digest versions of those states (see `receive.rs`: `Made`), kept likewise.
    compact_versions: Vec<u32>,
}

impl Engine {
    /// An engine with nothing cached and no bulk request made yet.
    pub fn new(config: Config) -> Engine {
        let hasher = KeyedState::new(config.hash_key);
        Engine {
            cache: Cache::new(config.max_states, hasher),
            requests: VecDeque::new(),
            requested: HashSet::with_hasher(hasher),
            tombstones: tombstones::Tombstones::new(
                config.tombstone_ttl,
                config.max_tombstones,
                hasher,
            ),
            clear_marks: tombstones::ClearMarks::new(config.tombstone_ttl),
            redeletes: Vec::new(),
            delays: delay::DelayQueue::default(),
            unimported_sweep_at: None,
            clears: Vec::new(),
            send_bulk_request: false,
            flush_at: None,
            flush_now: false,
            rules_trusted: false,
            packet_source: None,
            bulk_sender: None,
            bulk_request: BulkRequest::Idle,
            bulk_requested_at: None,
            last_full_record: None,
            bulk_send: None,
            compact_send: None,
            input_origin: InputOrigin::Plain,
            compact_last_started: None,
            held_bulk_request: false,
            allowed_sources: AllowedSources::Any,
            last_refused_source: None,
            ifmap: IfMap::default(),
            demoted: false,
            syncok: false,
            transmits: VecDeque::new(),
            table_ops: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            compact_states: Vec::new(),
            compact_lone: Default::default(),
            compact_versions: Vec::new(),
            config,
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

    /// True while carp is demoted (our bulk request is pending).
    pub fn demoted(&self) -> bool {
        self.demoted
    }

    /// Where our bulk request is.
    pub fn bulk_request_state(&self) -> BulkRequest {
        self.bulk_request
    }

    /// True while we send a bulk update.
    pub fn bulk_sending(&self) -> bool {
        self.bulk_send.is_some() || self.compact_send.is_some()
    }

    /// True while we send a compact bulk update to pfsyncd peers (see
    /// [`Engine::bulk_compact_batches`]).
    pub fn compact_bulk_sending(&self) -> bool {
        self.compact_send.is_some()
    }

    /// Number of cached states (including deleted ones whose DEL_C is still queued).
    pub fn state_count(&self) -> usize {
        self.cache.len()
    }

    /// How many more states the cache's limit lets in.
    pub fn states_room_left(&self) -> usize {
        self.cache.room_left()
    }

    /// Makes room in the cache for `n` more states; returns for how many (see
    /// [`Cache::reserve_states`]).
    pub fn reserve_states(&mut self, n: usize) -> usize {
        self.cache.reserve_states(n)
    }

    /// A cached state.
    pub fn state(&self, creatorid: u32, id: u64) -> Option<State> {
        self.cache
            .find((creatorid, id))
            .map(|slot| self.cache.get(slot))
            .filter(|e| !e.deleted)
            .map(|e| e.state())
    }

    /// Every cached state that is not deleted.
    pub fn states(&self) -> impl Iterator<Item = State> + '_ {
        self.cache
            .entries()
            .filter(|e| !e.deleted)
            .map(|e| e.state())
    }

    /// Messages queued and not sent yet, per queue (packet order).
    pub fn queued(&self) -> [usize; 5] {
        Queue::ALL.map(|q| self.cache.queue_len(q))
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
        self.poll_table_op_packed().map(|op| op.to_op())
    }

    /// As [`poll_table_op`](Self::poll_table_op), the state of an import or an update
    /// by the compact encoding the engine cached it in ([`PackedTableOp`]): a caller
    /// that sends the state on in that encoding need not make it again.
    #[must_use]
    pub fn poll_table_op_packed(&mut self) -> Option<PackedTableOp<'_>> {
        let Some(op) = self.table_ops.pop_front() else {
            // Every operation was polled: their bytes are no longer lent out.
            self.cache.end_loans();
            return None;
        };
        Some(match op {
            QueuedOp::Import { loan } => PackedTableOp::Import(self.cache.lent(loan)),
            QueuedOp::Update { loan } => PackedTableOp::Update(self.cache.lent(loan)),
            QueuedOp::Delete { creatorid, id } => PackedTableOp::Delete { creatorid, id },
            QueuedOp::Clear { creatorid, ifname } => PackedTableOp::Clear { creatorid, ifname },
        })
    }

    /// Queues an import (`update` false) or an update of the state in `slot`, as
    /// cached now: the cache lends its packed bytes, and copies them only if the state
    /// changes or goes before the operation is polled.
    pub(super) fn push_cached_state_op(&mut self, slot: u32, update: bool) {
        if self.table_ops.is_empty() {
            // The bytes of operations polled before are no longer lent out.
            self.cache.end_loans();
        }
        let loan = self.cache.lend(slot);
        self.table_ops.push_back(if update {
            QueuedOp::Update { loan }
        } else {
            QueuedOp::Import { loan }
        });
    }

    /// Queues the removal of a state from the table.
    pub(super) fn push_delete_op(&mut self, creatorid: u32, id: u64) {
        self.table_ops.push_back(QueuedOp::Delete { creatorid, id });
    }

    /// Queues the removal of a creator's states (on `ifname`, or all) from the table.
    pub(super) fn push_clear_op(&mut self, creatorid: u32, ifname: IfName) {
        self.table_ops
            .push_back(QueuedOp::Clear { creatorid, ifname });
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
        let bulk_send = self
            .bulk_send
            .as_ref()
            .filter(|_| self.config.bulk_paced)
            .map(|b| b.next_at);
        [
            self.flush_at,
            bulk_req,
            bulk_send,
            self.delays.next_deadline(),
            self.unimported_sweep_at,
        ]
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
        self.bulk_sender = None;
        self.stats.bulk_tries = 1;
        self.syncok = false;
        self.set_demoted(true);
        self.queue_bulk_request();
        self.end_input(now);
    }

    /// Sends every cached state to the peers as full updates, paced and framed by BUS
    /// START and END, as a peer's bulk request makes us do. After a daemon restart
    /// (states [`load`](Self::load)ed, messages queued by the old process lost), this
    /// gives the peers what they may have missed: they import what they lack and merge
    /// the rest, answering with their own copy where it is newer. (Peers without a
    /// request outstanding ignore the BUS messages.)
    pub fn send_bulk(&mut self, now: Instant) {
        self.start_bulk_send(now);
        self.end_input(now);
    }

    /// Sends whatever is queued now.
    pub fn flush(&mut self, now: Instant) {
        self.flush_now = true;
        self.end_input(now);
    }

    /// Takes new link settings (`ifconfig pfsync0 maxupd 64 version 1400`, a SIGHUP),
    /// keeping the cache, the queues and the bulk status. What is queued is sent first,
    /// under the settings it was queued with, so no packet mixes two dialects or
    /// exceeds the MTU it was sized for.
    pub fn reconfigure(&mut self, now: Instant, link: LinkSettings) {
        self.flush(now);
        self.config.dialect = link.dialect;
        if !self.config.bulk_pace_set {
            self.config.bulk_interval = kernel_bulk_interval(link.dialect);
            self.config.bulk_burst = 1;
        }
        self.config.mtu = link.mtu;
        self.config.ip_header_len = link.ip_header_len;
        self.config.maxupd = link.maxupd;
        self.config.syncpeer = link.syncpeer;
    }

    /// Sends queued changes at the end of the caller's turn (`on`) or after the
    /// kernels' batching delay. Turned on, what is already queued is due at `now`.
    pub fn set_immediate(&mut self, now: Instant, on: bool) {
        self.config.immediate = on;
        if on {
            self.flush_at = self.flush_at.map(|t| t.min(now));
        }
    }

    /// Takes the senders to accept packets from from now on (`syncpeer`s and
    /// `anysource`).
    pub fn set_allowed_sources(&mut self, allowed: AllowedSources) {
        self.allowed_sources = allowed;
    }

    /// Whether packets from `source` are taken (see [`AllowedSources`]).
    pub fn accepts_source(&self, source: Option<IpAddr>) -> bool {
        self.allowed_sources.allows(source)
    }

    /// The sender of the last packet refused for its source (`badsrc`), if known.
    pub fn last_refused_source(&self) -> Option<IpAddr> {
        self.last_refused_source
    }

    /// Takes the interface-name mappings for the states peers send from now on.
    pub fn set_ifmap(&mut self, ifmap: IfMap) {
        self.ifmap = ifmap;
    }

    /// Takes the local ruleset checksum for the header of the packets sent from now on.
    pub fn set_checksum(&mut self, checksum: [u8; 16]) {
        self.config.pfcksum = checksum;
    }

    fn set_demoted(&mut self, on: bool) {
        if self.demoted != on {
            self.demoted = on;
            self.events.push_back(Event::CarpDemote(on));
        }
    }

    /// Sends at once what an input asked to send at once.
    fn end_input(&mut self, now: Instant) {
        if self.flush_now {
            self.send_pending(now);
        }
    }

    // ---------------------------------------------------------------- timers

    /// Runs what is due at `now`: the batching timer, bulk request retries, the next
    /// burst of a bulk update we send.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.announce_due(now);
        self.sweep_unimported(now);
        if self.flush_at.is_some_and(|t| t <= now) {
            self.flush_now = true;
        }
        self.bulk_request_timeout(now);
        if self.config.bulk_paced && self.bulk_send.as_ref().is_some_and(|b| b.next_at <= now) {
            self.bulk_send_burst(now);
        }
        self.end_input(now);
    }

    // ---------------------------------------------------------------- local changes

    /// Caches a state the local table held before the engine started (the daemon
    /// restarted, or pfsync is brought up on a running firewall), without announcing
    /// it: as in the kernels, a state is announced when it is created, and states that
    /// existed before reach the peers through their bulk requests and our later updates
    /// (or [`send_bulk`](Self::send_bulk)). Call before the first input; a state already
    /// cached is replaced. `now` is when the state's age and expiry were read.
    pub fn load(&mut self, now: Instant, state: State) {
        if Self::never_synced(&state) {
            return;
        }
        let clock = self.cache.clock(now);
        match self.cache.find((state.creatorid, state.id)) {
            Some(slot) => self.cache.set_state(slot, &state, clock),
            None => {
                let mut entry = Entry::new(&state, clock);
                if self.config.filter.matches(&state) {
                    // It may have been announced by the daemon before us: its delete
                    // still goes (filter.rs).
                    entry.filtered = Some(filter::Filtered::Muted);
                }
                if self.cache.insert(entry, &state).is_err() {
                    self.stats.cache_full += 1;
                }
            }
        }
    }

    /// Handles a change of the local table.
    pub fn handle_local(&mut self, now: Instant, change: LocalChange) {
        match change {
            LocalChange::Insert(s) | LocalChange::Update(s) => self.local_upsert(now, s),
            LocalChange::Delete { creatorid, id } => self.local_delete(now, creatorid, id),
            LocalChange::Clear { ifname } => self.local_clear(now, ifname),
        }
        self.end_input(now);
    }

    fn never_synced(state: &State) -> bool {
        state.state_flags.contains(StateFlags::NOSYNC)
            || state.wire.proto == Protocol::Other(IPPROTO_PFSYNC)
    }

    /// What a peer could see changed between two copies of a state: the peers, the
    /// timeout class, the flags, the counters. Age and expiry move with the clock and
    /// are not news on their own. A report equal to our copy in all of these is the
    /// table echoing what we imported or merged, and is not announced (no echo); any
    /// packet that matched the state moved its counters, so a real update always is.
    fn is_news(old: &State, new: &State) -> bool {
        old.src != new.src
            || old.dst != new.dst
            || old.timeout != new.timeout
            || old.state_flags != new.state_flags
            || old.packets != new.packets
            || old.bytes != new.bytes
    }

    fn local_upsert(&mut self, now: Instant, state: State) {
        let key = (state.creatorid, state.id);
        let never = Self::never_synced(&state);
        let clock = self.cache.clock(now);
        let Some(slot) = self.cache.find(key) else {
            // Difference: no-sync states are not cached at all (the kernels keep them in
            // the state table, which the daemon does not duplicate); every later report
            // of them is dropped here again.
            if never || self.filter_out_new(&state) {
                return;
            }
            self.tombstones.exhume(key);
            let wait = self.announce_wait(&state);
            match self.cache.insert(Entry::new(&state, clock), &state) {
                Ok(slot) => match wait {
                    Some(wait) => self.delay_announcement(now, slot, wait),
                    None => self.enqueue(now, slot, Queue::Ins),
                },
                Err(_) => self.stats.cache_full += 1,
            }
            return;
        };
        let e = self.cache.get(slot);
        if e.deleted {
            return;
        }
        if e.nosync || never {
            // Turned no-sync (FreeBSD marks a state so before it goes): never sent again.
            self.cache.dequeue(slot);
            self.cache.set_state(slot, &state, clock);
            self.cache.mark(slot, |e| {
                e.nosync = true;
                e.delayed = false;
            });
            self.cache.set_state(slot, &state, clock);
            return;
        }
        if e.filtered.is_some() || e.delayed {
            // Muted by the filter, or not due yet (its INS will carry this copy).
            if e.filtered.is_some() {
                self.stats.filtered_out += 1;
            }
            self.cache.set_state(slot, &state, clock);
            return;
        }
        let news = Self::is_news(&e.state(), &state);
        let split = self
            .cache
            .peer_updated(slot)
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.split_window);
        let queue = e.queue;
        self.cache.set_state(slot, &state, clock);
        if !news {
            return;
        }
        match queue {
            // An INS_ACK is replaced by the update, as the kernels do.
            None | Some(Queue::InsAck) => self.enqueue(now, slot, Queue::UpdC),
            // Already queued: the record is written from the newest copy at flush.
            Some(_) => {}
        }
        if state.wire.proto == Protocol::Tcp {
            let e = self.cache.get_mut(slot);
            e.updates = e.updates.saturating_add(1);
            if e.updates >= self.config.maxupd {
                self.flush_now = true;
            }
        }
        if split {
            // The state's traffic is split between us and a peer: it must not wait.
            self.flush_now = true;
        }
    }

    fn local_delete(&mut self, now: Instant, creatorid: u32, id: u64) {
        let Some(slot) = self.cache.find((creatorid, id)) else {
            // Unknown: a no-sync state, or one a peer deleted (the table echoing our
            // Delete or Clear).
            return;
        };
        let e = self.cache.get(slot);
        if e.deleted {
            return;
        }
        self.tombstones.bury((creatorid, id), now);
        if e.delayed {
            // Ended before it was due: the peers never hear of it.
            self.stats.delayed_then_deleted += 1;
        }
        if e.nosync
            || e.delayed
            || e.queue == Some(Queue::Ins)
            || e.filtered == Some(filter::Filtered::Unimported)
        {
            // Never announced: nothing to tell.
            self.cache.remove(slot);
            return;
        }
        self.cache.mark(slot, |e| e.deleted = true);
        self.enqueue(now, slot, Queue::DelC);
    }

    fn local_clear(&mut self, now: Instant, ifname: IfName) {
        // Every matching state goes, whoever created it, without a DEL_C each: the CLR
        // tells the peers to drop ours, and the other creators' states stay theirs (the
        // kernels mark the cleared states no-sync). States already deleted keep their
        // queued DEL_C.
        let doomed: Vec<u32> = self
            .cache
            .slots()
            .filter(|&s| {
                let e = self.cache.get(s);
                !e.deleted && (ifname.is_empty() || e.state().ifname == ifname)
            })
            .collect();
        for slot in doomed {
            self.cache.remove(slot);
        }
        self.clear_marks.mark(None, ifname, now);
        self.make_room(now, send::clr_cost(self.clears.is_empty()));
        self.clears.push(ClrRepr {
            ifname,
            creatorid: self.config.creatorid,
        });
        self.flush_now = true;
    }
}
