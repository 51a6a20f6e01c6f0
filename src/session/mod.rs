//! Per-peer sessions between pfsyncd peers: discovery, sequence numbers, loss recovery
//! and digests, sans-IO.
//!
//! No sockets, no clock reads, no randomness (the boot id comes from the caller):
//! [`Sessions`] is fed frames and plain-packet sightings with the current time and
//! drained of datagrams to send ([`Sessions::poll_transmit`]), pfsync packets for the
//! engine ([`Sessions::poll_deliver`]) and events ([`Sessions::poll_event`]); the caller
//! calls [`Sessions::handle_timeout`] at [`Sessions::poll_timeout`]. Frames are the
//! `wire::ext` frames, carried where pfsync packets are; a peer is keyed by its address
//! (the plain-link source, or a secure peer's inner address).
//!
//! **Discovery.** A plain pfsync packet from an unknown source ([`Sessions::note_plain`])
//! makes us send it HELLO, [`Config::probe_tries`] times [`Config::probe_interval`]
//! apart; a pfsyncd peer answers HELLO_ACK and the session is established. A source that
//! never answers is a kernel peer (or a daemon without extensions), probed again once
//! per [`Config::kernel_reprobe`]. A kernel drops every frame at its version check and
//! counts `badver` (see `wire::ext`): a kernel peer counts `probe_tries` (3) badver when
//! first seen and 3 more per hour. A secure peer ([`Sessions::add_secure_peer`]) is a
//! pfsyncd peer by definition: HELLO at once, and again every `probe_interval` until it
//! answers. Only HELLO and HELLO_ACK establish a session or change a peer's identity
//! (creator, boot id); a new boot id means the peer restarted and its stream starts
//! over ([`Event::PeerRestarted`]). Other frames from an address without a session, or
//! with another identity, are dropped and counted, and the address is sent a HELLO.
//! A peer silent for [`Config::dead_after`] is down ([`Event::PeerDown`]) and probed.
//!
//! **Sequence numbers and loss.** [`Sessions::send_data`] numbers each pfsync packet
//! once (one stream per sender, from 1) and sends one DATA to each established peer; the
//! frame is kept in a resend buffer of [`Config::resend_bytes`]. A receiver delivers
//! every new DATA at once, in any order (the engine merges); duplicates are dropped and
//! counted. A gap makes it NACK the missing numbers at once, then again while they stay
//! missing, [`Config::nack_tries`] times, the pause doubling from
//! [`Config::nack_interval`] (20 ms) to [`Config::nack_interval_max`] (250 ms): about
//! 3.3 s in all, so a peer that answers late (busy importing, a loaded machine) is not
//! taken for one that lost the numbers, and 16 tries make a give-up at 30 % loss on
//! both ways (each try fails with 0.51) about one in 50 000. An ask after which nothing
//! at all came in from the peer is not counted (our own input stalled: the answer may
//! be waiting in it). The
//! sender answers with the same frames from its buffer, or GONE for what it no longer
//! holds. GONE, exhausted tries, or a jump past [`Config::window`] give the numbers up:
//! [`Event::ResyncNeeded`] and the gap is closed; the daemon asks that peer alone for
//! a bulk update ([`Sessions::ask_resync`], a RESYNC frame, [`Event::ResyncAsked`] at
//! the peer), not every peer: each would answer with its whole table. Tail loss: an ACK (heartbeat) carrying our highest seq goes to every peer
//! every [`Config::heartbeat_busy`] while DATA went out in the last
//! [`Config::busy_for`], every [`Config::heartbeat_idle`] otherwise. A receiver also
//! ACKs at once every [`Config::ack_every`] DATA or [`Config::ack_bytes`] of them,
//! when a DATA filled a gap, on a
//! duplicate, and on a peer's ACK when its mark rose since it last told it (never a
//! reply to a reply), so a sender whose window opens by the marks (the daemon's
//! compact bulk) need not wait for heartbeats; such a sender finds a lost tail by
//! [`Sessions::probe_tail`]. [`Sessions::set_digests_paused`] stops the digests while
//! a bulk update runs.
//!
//! **Bounds.**
//! - Memory: the resend buffer, `resend_bytes` (8 MiB) for all peers together; per
//!   peer, at most `window` (32 768) sequence numbers tracked (at most about 2.5 MiB,
//!   when all of them are missing; the window must span the NACKs' 3.3 s at the
//!   stream's rate, or a number still being asked for is given up), the IDS
//!   parts of one digest round (at most [`MAX_REQ_BUCKETS`] buckets, each at most
//!   [`Config::max_ids_per_bucket`] ids); at most [`Config::max_peers`] (64) peers;
//!   digest work queued at most [`MAX_WORK`] items (oldest dropped, counted); per
//!   established peer, [`COPIES_KEPT`] hashes of its packets taken (4 KiB, `copies.rs`).
//! - NACK answers: a token bucket per peer, [`Config::resend_burst`] frames at once and
//!   [`Config::resend_rate`] a second, however many NACKs of whatever ranges arrive; each
//!   NACK carries at most [`MAX_RANGES`] ranges and costs at most that many GONE ranges.
//! - Heartbeats: 48 bytes (with UDP/IP framing about 80) per peer every 100 ms while
//!   busy (about 0.5 KB/s), every 2 s idle; prompt ACKs at most one per
//!   [`Config::ack_every`] (16) DATA or [`Config::ack_bytes`] (128 KiB: fifteen jumbo
//!   frames) received, plus one per filled gap or duplicate.
//! - Digests: per peer and period (1 s), N/64 DIGEST frames of 804 bytes (3.2 KB/s
//!   per peer for N = 256, whatever the table's size). When buckets differ in two
//!   comparisons running (a copy updated by DATA after the digest's `as_of` differs
//!   once: under churn, one bucket per update in flight), one DIGEST_REQ and per such
//!   bucket its states' ids and versions (12 bytes each,
//!   96 per 1192-byte IDS frame, at most [`Config::max_ids_per_bucket`] = 6144 a
//!   bucket, 74 KB), and NEEDs (8 bytes an id, 128 a frame) of at most the ids that
//!   differ, each answered by one full update. At 1 000 000 states and N = 256 a
//!   bucket holds about 3 900 states: one update lost for good costs one round of
//!   about 47 KB of IDS (41 frames), a NEED and the update; the worst round (every
//!   bucket differing, e.g. a peer that lost everything) is capped at
//!   [`MAX_REQ_BUCKETS`] buckets of at most 74 KB, and the digests pause while a bulk
//!   update runs ([`Sessions::set_digests_paused`]).
//! - RESYNC: one 20-byte frame to the peer whose DATA was lost for good, at most one
//!   per peer per 5 s (the daemon spaces them); it answers with its compact bulk.
//! - HELLO: a kernel peer gets `probe_tries` 32-byte frames when first seen and as many
//!   per hour; a secure peer that does not answer, one per second. A plain bulk
//!   request the daemon holds while its source is probed adds none: the round's
//!   later HELLOs are sent ahead, 50 ms apart within the 200 ms hold
//!   ([`Sessions::hello_again`], `engine::bulk`), and go unsent at their time, so a
//!   kernel peer still gets `probe_tries` per round, and is judged one no sooner.
//!
//! The outputs queue up until drained; each input produces at most what its own work
//! amounts to, so draining after each input keeps them small.

mod copies;
mod digest;
mod peer;
mod receive;
mod resend;
#[cfg(test)]
mod tests;

pub use copies::{CopyCheck, CopyHash, CopyPath, COPIES_KEPT, COPY_WINDOW};
pub use digest::{bucket_of, entry_hash, id_hash, sum, BucketSum, Listed, StateIndex};
pub use peer::{Link, PeerInfo, PeerStats};

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use copies::CopyHasher;
use digest::{compare_ids, Work};
use peer::Peer;
use receive::{Arrival, Change, Stream};
use resend::ResendBuffer;

use crate::wire::ext::{
    self,
    hello::{FEATURE_BULK_SIZE, FEATURE_DIGEST},
    AckRepr, Body, BulkSizeRepr, DigestRepr, DigestReqRepr, FrameRepr, HelloRepr, IdsRepr,
    NeedRepr, Sender, SeqRange, SeqRanges, MAX_BUCKETS_PER_FRAME, MAX_IDS_PER_FRAME,
    MAX_NEED_IDS_PER_FRAME, MAX_RANGES, MAX_REQ_BUCKETS,
};

/// The most digest work items queued for [`Sessions::digest_work`].
pub const MAX_WORK: usize = 1024;

/// Tunables. [`Config::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our creator id and boot id (random per daemon start, from the caller).
    pub creator: u32,
    pub boot: u64,
    /// Our link MTU, told to peers in HELLO.
    pub mtu: u16,
    /// Resend buffer size in bytes, all peers together.
    pub resend_bytes: usize,
    /// Pause after the first NACK for the same missing numbers (doubling after each
    /// one up to `nack_interval_max`), and how many NACKs before giving them up.
    pub nack_interval: Duration,
    pub nack_interval_max: Duration,
    pub nack_tries: u32,
    /// Most sequence numbers tracked above a peer's cumulative mark.
    pub window: u64,
    /// Resends per peer: at most `resend_burst` at once, `resend_rate` a second.
    pub resend_burst: u32,
    pub resend_rate: u32,
    /// Heartbeat period while DATA went out in the last `busy_for`, and otherwise.
    pub heartbeat_busy: Duration,
    pub heartbeat_idle: Duration,
    pub busy_for: Duration,
    /// A peer silent this long is down.
    pub dead_after: Duration,
    /// HELLO probes of an unknown source: how many, how far apart; then how long a
    /// kernel peer is left alone.
    pub probe_tries: u32,
    pub probe_interval: Duration,
    pub kernel_reprobe: Duration,
    /// Digest period (`None`: no digests), buckets (a power of two, at most 1024), the
    /// most ids listed per bucket, and the age under which a state is never forgotten.
    pub digest_period: Option<Duration>,
    pub digest_buckets: u16,
    pub max_ids_per_bucket: usize,
    pub forget_min_age: Duration,
    /// Most peers (addresses) tracked.
    pub max_peers: usize,
    /// A receiver ACKs at once every this many DATA (and on a filled gap or a
    /// duplicate), so a sender whose window opens by our ACKs (the compact bulk) is
    /// never kept waiting for a heartbeat.
    pub ack_every: u64,
    /// A receiver also ACKs at once when this many bytes of new DATA came since its
    /// last ACK: a bound on the receiver's work between two marks whatever the frames'
    /// size, above `ack_every` frames of a 1500-byte link and near it at MTU 9000
    /// (fifteen jumbo frames, some 2 700 states of a compact bulk). Not smaller: each
    /// mark wakes the sender's two processes and makes them send a burst that wakes the
    /// receiver's parent, while the compact bulk's window (`daemon/engine/bulk.rs`)
    /// holds some 40 ms of the receiver's work, so a mark every 1 to 2 ms of it leaves
    /// the receiver nothing to wait for. At 24 KiB (three jumbo frames) a bulk of a
    /// million states at MTU 9000 took some 1 800 ACKs, each a round of wakeups
    /// through the four processes of both daemons.
    pub ack_bytes: usize,
    /// Secret key of the hash that tells a peer's plain packet and its DATA copy
    /// apart from other packets ([`Sessions::check_copy`]); the daemon draws it.
    pub copy_key: [u64; 2],
}

impl Config {
    /// The defaults, for creator `creator` and boot id `boot`.
    pub fn new(creator: u32, boot: u64) -> Config {
        Config {
            creator,
            boot,
            mtu: 1500,
            resend_bytes: 8 << 20,
            nack_interval: Duration::from_millis(20),
            nack_interval_max: Duration::from_millis(250),
            nack_tries: 16,
            window: 32768,
            resend_burst: 1024,
            resend_rate: 20_000,
            heartbeat_busy: Duration::from_millis(100),
            heartbeat_idle: Duration::from_secs(2),
            busy_for: Duration::from_secs(3),
            dead_after: Duration::from_secs(10),
            probe_tries: 3,
            probe_interval: Duration::from_secs(1),
            kernel_reprobe: Duration::from_secs(3600),
            digest_period: Some(Duration::from_secs(1)),
            digest_buckets: 256,
            max_ids_per_bucket: 64 * MAX_IDS_PER_FRAME,
            forget_min_age: Duration::from_secs(1),
            max_peers: 64,
            ack_every: 16,
            ack_bytes: 128 << 10,
            copy_key: [0, 0],
        }
    }
}

/// Something the daemon acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A pfsyncd peer answered: the extensions are used towards it from now on.
    PeerUp { peer: IpAddr, creator: u32 },
    /// An established peer fell silent; it is probed again.
    PeerDown { peer: IpAddr },
    /// A peer restarted (new boot id): its stream started over.
    PeerRestarted { peer: IpAddr, creator: u32 },
    /// A source never answered HELLO: a kernel peer.
    KernelPeer { peer: IpAddr },
    /// DATA from `peer` was lost for good: request a bulk update from it alone
    /// ([`Sessions::ask_resync`]).
    ResyncNeeded { peer: IpAddr },
    /// `peer` lost DATA of ours for good and asks us alone for a bulk update (RESYNC).
    ResyncAsked { peer: IpAddr },
    /// Digest work is queued: call [`Sessions::digest_work`].
    DigestWork,
    /// `creator` (at `peer`) no longer has these states: delete our copies.
    ForgetStates {
        peer: IpAddr,
        creator: u32,
        ids: Vec<u64>,
    },
    /// `peer` lacks these states of ours: send full updates of them.
    AnnounceStates { peer: IpAddr, ids: Vec<u64> },
    /// `peer` starts a compact bulk of about `states` states (BULK_SIZE): room for
    /// them may be made now.
    BulkSizeAnnounced { peer: IpAddr, states: u64 },
}

/// Counters not tied to a known peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams that are not valid extension frames.
    pub garbage: u64,
    /// Valid frames other than HELLO from an address without a session.
    pub unknown_peer: u64,
    /// Frames whose sender identity differs from the session's (stale or spoofed).
    pub stale_identity: u64,
    /// Addresses not tracked because [`Config::max_peers`] were.
    pub peers_refused: u64,
    /// Plain pfsync packets from a session peer (the daemon drops them).
    pub plain_from_session_peer: u64,
    /// Payloads too long for a DATA frame.
    pub data_too_long: u64,
    /// Digest work items dropped past [`MAX_WORK`].
    pub digest_work_dropped: u64,
    /// DATA numbered and sent (to at least one peer).
    pub data_numbered: u64,
}

/// Why [`Sessions::send_data`] refused a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("pfsync packet of {len} bytes does not fit a DATA frame (at most {max})")]
    TooLong { len: usize, max: usize },
}

/// Every session of this node.
#[derive(Debug)]
pub struct Sessions {
    config: Config,
    peers: HashMap<IpAddr, Peer>,
    /// The seq of our next DATA.
    next_seq: u64,
    /// When we last sent DATA.
    last_data_at: Option<Instant>,
    resend: ResendBuffer,
    /// Our digest round counter.
    round: u32,
    work: VecDeque<Work>,
    /// Frames to send. A DATA frame is shared with the resend buffer: one copy of each
    /// (a compact bulk's 9 KB batches, thousands a second), not one per holder.
    transmit: VecDeque<(IpAddr, Arc<Vec<u8>>)>,
    deliver: VecDeque<(IpAddr, Vec<u8>)>,
    events: VecDeque<Event>,
    stats: Stats,
    /// No digests sent or compared (see [`Sessions::set_digests_paused`]).
    digests_paused: bool,
    /// The hash of [`Sessions::check_copy`], keyed by [`Config::copy_key`].
    copy_hasher: CopyHasher,
}

impl Sessions {
    /// Pauses the digests, both ways, while a bulk update runs between us and our
    /// peers: against a table half sent, every bucket differs, and the IDS lists, NEEDs
    /// and announcements that follow would resend in full records what the bulk is
    /// sending compactly (at 1 000 000 states, hundreds of MB a second). Digests
    /// received meanwhile are counted as deferred.
    pub fn set_digests_paused(&mut self, paused: bool) {
        self.digests_paused = paused;
    }

    pub fn new(config: Config) -> Sessions {
        let resend = ResendBuffer::new(config.resend_bytes);
        let copy_hasher = CopyHasher::new(config.copy_key);
        Sessions {
            config,
            peers: HashMap::new(),
            next_seq: 1,
            last_data_at: None,
            resend,
            round: 0,
            work: VecDeque::new(),
            transmit: VecDeque::new(),
            deliver: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            digests_paused: false,
            copy_hasher,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether the extensions are used towards `addr`: of each of its packets, the
    /// plain copy or the DATA copy, whichever comes second, is then not taken again
    /// ([`Sessions::check_copy`]; plain ones counted by [`Sessions::note_plain`]).
    pub fn is_session_peer(&self, addr: IpAddr) -> bool {
        self.peers.get(&addr).is_some_and(Peer::established)
    }

    /// What we know of the peer at `addr`.
    pub fn peer(&self, addr: IpAddr) -> Option<PeerInfo> {
        self.peers.get(&addr).map(|p| PeerInfo {
            link: p.link,
            secure: p.secure,
            remote: p.remote,
            mtu: p.mtu,
            missing: p.stream.as_ref().map_or(0, Stream::missing),
            received: p.stream.as_ref().map_or(0, Stream::cumulative),
            acked: p.acked,
            last_heard: p.last_heard,
            stats: p.stats,
        })
    }

    /// Every tracked address.
    pub fn peers(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.peers.keys().copied()
    }

    /// Bytes held in the resend buffer.
    pub fn resend_bytes(&self) -> usize {
        self.resend.bytes()
    }

    /// The highest seq we sent (0 before the first).
    pub fn highest_sent(&self) -> u64 {
        self.next_seq - 1
    }

    pub fn poll_transmit(&mut self) -> Option<(IpAddr, Vec<u8>)> {
        self.poll_transmit_shared()
            .map(|(to, frame)| (to, Arc::unwrap_or_clone(frame)))
    }

    /// As [`Sessions::poll_transmit`], the frame as held: a DATA frame still in the
    /// resend buffer is not copied (the daemon's send path only reads it).
    pub fn poll_transmit_shared(&mut self) -> Option<(IpAddr, Arc<Vec<u8>>)> {
        self.transmit.pop_front()
    }

    pub fn poll_deliver(&mut self) -> Option<(IpAddr, Vec<u8>)> {
        self.deliver.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// A secure-link peer: a pfsyncd peer by definition, sent HELLO at once and until it
    /// answers.
    pub fn add_secure_peer(&mut self, now: Instant, addr: IpAddr) {
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.secure = true;
            if !peer.established() {
                peer.link = Link::Probing {
                    tries: 0,
                    next_at: now,
                };
            }
        } else if !self.track(addr, true, now) {
            return;
        }
        self.run_probe(now, addr);
    }

    /// A plain pfsync packet came from `from`. An unknown source is probed; a session
    /// peer's plain packet is counted (the daemon skips it when its DATA copy was
    /// taken, [`Sessions::check_copy`]).
    pub fn note_plain(&mut self, now: Instant, from: IpAddr) {
        match self.peers.get(&from) {
            Some(peer) if peer.established() => self.stats.plain_from_session_peer += 1,
            Some(_) => {}
            None => {
                if self.track(from, false, now) {
                    self.run_probe(now, from);
                }
            }
        }
    }

    /// Whether the pfsync packet `payload` of `from`, arriving by `path`, is the other
    /// copy of one already taken (see `copies.rs`). Only an established, non-secure
    /// peer's packets are tracked: a secure peer sends us DATA alone, and what it
    /// relays plain is never its own packet. A second copy is counted.
    pub fn check_copy(
        &mut self,
        now: Instant,
        from: IpAddr,
        path: CopyPath,
        payload: &[u8],
    ) -> CopyCheck {
        let Some(peer) = self.peers.get_mut(&from) else {
            return CopyCheck::Untracked;
        };
        if !peer.established() || peer.secure {
            return CopyCheck::Untracked;
        }
        let hash = self.copy_hasher.hash(payload);
        if !peer.copies.second_copy(now, path, hash) {
            return CopyCheck::First(CopyHash(hash));
        }
        match path {
            CopyPath::Plain => peer.stats.plain_copies_skipped += 1,
            CopyPath::Data => peer.stats.data_copies_skipped += 1,
        }
        CopyCheck::Second
    }

    /// Notes that the packet of `hash` (from [`Sessions::check_copy`]) of `from` was
    /// taken by `path`: its other copy will be skipped.
    pub fn remember_copy(&mut self, now: Instant, from: IpAddr, path: CopyPath, hash: CopyHash) {
        if let Some(peer) = self.peers.get_mut(&from) {
            peer.copies.remember(now, path, hash.0);
        }
    }

    /// Numbers one pfsync packet and sends it as DATA to every established peer.
    /// Returns how many peers it went to (0: none established, nothing numbered).
    pub fn send_data(&mut self, now: Instant, payload: &[u8]) -> Result<usize, SendError> {
        self.check_data_len(payload.len())?;
        if !self.peers.values().any(Peer::established) {
            return Ok(0);
        }
        let mut frame = Vec::with_capacity(ext::DATA_OVERHEAD + payload.len());
        frame.resize(ext::DATA_OVERHEAD, 0);
        frame.extend_from_slice(payload);
        self.send_data_framed(now, frame)
    }

    /// As [`Sessions::send_data`], the packet already behind room for the DATA head:
    /// `frame[ext::DATA_OVERHEAD..]` is the packet, the head is written in place. A
    /// compact bulk's batches are made so (`daemon::engine::bulk`): the frame sent and
    /// kept for resending is the walk's buffer itself, not a copy of it. The same
    /// errors, counters and bytes as `send_data` of the packet.
    pub fn send_data_framed(
        &mut self,
        now: Instant,
        mut frame: Vec<u8>,
    ) -> Result<usize, SendError> {
        self.check_data_len(frame.len().saturating_sub(ext::DATA_OVERHEAD))?;
        let targets: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.established())
            .map(|(a, _)| *a)
            .collect();
        if targets.is_empty() {
            return Ok(0);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.data_numbered += 1;
        self.last_data_at = Some(now);
        let sender = Sender {
            creator: self.config.creator,
            boot: self.config.boot,
        };
        FrameRepr::emit_data_head(sender, seq, &mut frame);
        let frame = Arc::new(frame);
        for addr in &targets {
            let busy_at = now + self.config.heartbeat_busy;
            let peer = self.peers.get_mut(addr).expect("listed above");
            peer.stats.data_out += 1;
            peer.stats.frames_out += 1;
            // An idle heartbeat may be seconds away: a lost last DATA must be found soon.
            if peer.heartbeat_at.is_none_or(|at| at > busy_at) {
                peer.heartbeat_at = Some(busy_at);
            }
            self.transmit.push_back((*addr, Arc::clone(&frame)));
        }
        self.resend.push(seq, frame);
        Ok(targets.len())
    }

    /// A DATA packet of `len` bytes fits a frame, or is counted and refused.
    fn check_data_len(&mut self, len: usize) -> Result<(), SendError> {
        let max = ext::MAX_FRAME - ext::DATA_OVERHEAD;
        if len == 0 || len > max {
            self.stats.data_too_long += 1;
            return Err(SendError::TooLong { len, max });
        }
        Ok(())
    }

    /// Asks the established peer `addr` alone for a bulk update (RESYNC), after
    /// [`Event::ResyncNeeded`]; false when it is not established. Unsequenced: the
    /// caller spaces its asks, and the digests find what a lost RESYNC leaves.
    pub fn ask_resync(&mut self, addr: IpAddr) -> bool {
        if !self.is_session_peer(addr) {
            return false;
        }
        self.count(addr, |s| s.resyncs_asked += 1);
        self.send_to(addr, Body::Resync);
        true
    }

    /// Tells each established peer that understands it (its HELLO set
    /// [`FEATURE_BULK_SIZE`]) that the compact bulk we start carries about `states`
    /// states: BULK_SIZE, unsequenced (lost, only the receiver's pre-sizing is). Kernel
    /// peers and pfsyncd peers without the bit get nothing. Returns how many got it.
    pub fn announce_bulk_size(&mut self, states: u64) -> usize {
        let targets: Vec<IpAddr> = self
            .peers
            .iter()
            .filter(|(_, p)| p.established() && p.features & FEATURE_BULK_SIZE != 0)
            .map(|(a, _)| *a)
            .collect();
        for addr in &targets {
            self.send_to(*addr, Body::BulkSize(BulkSizeRepr { states }));
        }
        targets.len()
    }

    /// Sends an established peer HELLO again: its answer tells whether it restarted
    /// (a new boot id, [`Event::PeerRestarted`]), e.g. when it asks in plain pfsync
    /// what a session peer would ask in DATA.
    pub fn reprobe(&mut self, addr: IpAddr) {
        if self.is_session_peer(addr) {
            let body = Body::Hello(self.hello());
            self.count(addr, |s| s.hellos_sent += 1);
            self.send_to(addr, body);
        }
    }

    /// Sends a source being probed the next HELLO of its probe round now, ahead of
    /// its time: a plain bulk request of it waits for the answer (the daemon's hold,
    /// `engine::bulk`), and a lost HELLO would otherwise be tried again only after
    /// `probe_interval`. The round's later try goes unsent instead, so the round sends
    /// no more than `probe_tries` HELLOs; its tries and timer are untouched, so a
    /// pfsyncd peer behind loss is not taken for a kernel peer sooner. False when
    /// `addr` is not being probed or its round has no HELLO left to send.
    pub fn hello_again(&mut self, addr: IpAddr) -> bool {
        let probe_tries = self.config.probe_tries;
        let Some(peer) = self.peers.get_mut(&addr) else {
            return false;
        };
        let Link::Probing { tries, .. } = peer.link else {
            return false;
        };
        if !peer.secure && tries + peer.hellos_ahead >= probe_tries {
            return false;
        }
        peer.hellos_ahead += 1;
        self.hello_to(addr);
        true
    }

    /// Sends our last DATA to `addr` again, unasked: a sender whose window is full and
    /// whose peer's mark stopped rising probes the tail. Lost, the frame fills the gap
    /// (the peer then NACKs what else it misses); received already, it is a duplicate,
    /// which the peer answers with an ACK at once: either way the mark comes back
    /// without waiting for a heartbeat. False when nothing is held to send.
    pub fn probe_tail(&mut self, addr: IpAddr) -> bool {
        let last = self.highest_sent();
        let Some(frame) = self.resend.get(last).map(Arc::clone) else {
            return false;
        };
        let Some(peer) = self.peers.get_mut(&addr).filter(|p| p.established()) else {
            return false;
        };
        peer.stats.tail_probes += 1;
        peer.stats.frames_out += 1;
        self.transmit.push_back((addr, frame));
        // Our ACK behind it: a peer holding more of our stream than it told us answers
        // with its mark (the DATA above, new to it, may not have made it ACK).
        self.ack_to(addr);
        true
    }

    /// One datagram on the pfsync path from `from` whose first byte is
    /// [`ext::VERSION`]. Bad bytes are counted, never a panic.
    pub fn handle_frame(&mut self, now: Instant, from: IpAddr, bytes: &[u8]) {
        let frame = match FrameRepr::parse(bytes) {
            Ok(frame) => frame,
            Err(_) => {
                self.stats.garbage += 1;
                return;
            }
        };
        match frame.body {
            Body::Hello(hello) => self.on_hello(now, from, frame.sender, hello, true),
            Body::HelloAck(hello) => self.on_hello(now, from, frame.sender, hello, false),
            body => {
                let known = self.peers.get(&from).map(|p| (p.established(), p.remote));
                match known {
                    Some((true, Some(remote))) if remote == frame.sender => {}
                    Some((true, _)) => {
                        self.stats.stale_identity += 1;
                        self.hello_to(from);
                        return;
                    }
                    _ => {
                        self.stats.unknown_peer += 1;
                        // It speaks the extensions: ask who it is (rate-limited by the
                        // probe schedule).
                        if !self.peers.contains_key(&from) && self.track(from, false, now) {
                            self.run_probe(now, from);
                        }
                        return;
                    }
                }
                let peer = self.peers.get_mut(&from).expect("checked above");
                peer.last_heard = Some(now);
                peer.stats.frames_in += 1;
                self.on_body(now, from, frame.sender.creator, body);
            }
        }
    }

    /// Does the digest work queued (see [`Event::DigestWork`]) against `index`.
    pub fn digest_work(&mut self, now: Instant, index: &impl StateIndex) {
        let buckets = self.config.digest_buckets;
        // The runs of one digest usually arrive together: sum each creator once.
        let mut sums: HashMap<u32, Vec<BucketSum>> = HashMap::new();
        while let Some(work) = self.work.pop_front() {
            match work {
                Work::SendDigest { peer } => self.send_digest(peer, index),
                Work::CompareDigest {
                    peer,
                    creator,
                    digest,
                } => {
                    let ours = sums
                        .entry(creator)
                        .or_insert_with(|| index.digest(creator, buckets));
                    self.compare_digest(peer, digest, ours)
                }
                Work::AnswerRequest {
                    peer,
                    round,
                    buckets: wanted,
                } => {
                    let as_of = self.highest_sent();
                    for bucket in wanted.into_iter().filter(|b| *b < buckets) {
                        let mut ids = index.ids_in_bucket(self.config.creator, buckets, bucket);
                        ids.truncate(self.config.max_ids_per_bucket);
                        let parts = ids.len().div_ceil(MAX_IDS_PER_FRAME).max(1);
                        for part in 0..parts {
                            let chunk = ids
                                .iter()
                                .skip(part * MAX_IDS_PER_FRAME)
                                .take(MAX_IDS_PER_FRAME)
                                .copied()
                                .collect();
                            let body = Body::Ids(IdsRepr {
                                round,
                                bucket,
                                part: part as u16,
                                parts: parts as u16,
                                as_of,
                                ids: chunk,
                            });
                            self.send_to(peer, body);
                        }
                    }
                }
                Work::CompareIds {
                    peer,
                    creator,
                    bucket,
                    as_of,
                    ids,
                } => {
                    if self.digests_paused || !self.caught_up(peer, as_of) {
                        self.count(peer, |s| s.digest_deferred += 1);
                        continue;
                    }
                    let young_after = now.checked_sub(self.config.forget_min_age);
                    let (forget, need) =
                        compare_ids(index, creator, buckets, bucket, &ids, young_after);
                    self.count(peer, |s| {
                        s.ids_forgotten += forget.len() as u64;
                        s.ids_needed += need.len() as u64;
                    });
                    if !forget.is_empty() {
                        self.events.push_back(Event::ForgetStates {
                            peer,
                            creator,
                            ids: forget,
                        });
                    }
                    for chunk in need.chunks(MAX_NEED_IDS_PER_FRAME) {
                        self.send_to(
                            peer,
                            Body::Need(NeedRepr {
                                ids: chunk.to_vec(),
                            }),
                        );
                    }
                }
            }
        }
    }

    /// The earliest time [`Sessions::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
        };
        for peer in self.peers.values() {
            match peer.link {
                Link::Probing { next_at, .. } => consider(Some(next_at)),
                Link::Kernel { next_probe_at } => consider(Some(next_probe_at)),
                Link::Established => {
                    consider(peer.heartbeat_at);
                    consider(peer.digest_at);
                    consider(peer.last_heard.map(|t| t + self.config.dead_after));
                    consider(peer.stream.as_ref().and_then(Stream::nack_due));
                }
            }
        }
        earliest
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        for addr in addrs {
            let Some(peer) = self.peers.get_mut(&addr) else {
                continue;
            };
            match peer.link {
                Link::Probing { next_at, .. } if next_at <= now => self.run_probe(now, addr),
                Link::Kernel { next_probe_at } if next_probe_at <= now => {
                    peer.link = Link::Probing {
                        tries: 0,
                        next_at: now,
                    };
                    self.run_probe(now, addr);
                }
                Link::Established => {
                    if peer
                        .last_heard
                        .is_some_and(|t| t + self.config.dead_after <= now)
                    {
                        self.peer_down(now, addr);
                        continue;
                    }
                    self.run_nacks(now, addr);
                    self.run_heartbeat(now, addr);
                    self.run_digest_timer(now, addr);
                }
                _ => {}
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Discovery

    /// Starts tracking `addr`, unless `max_peers` are tracked already.
    fn track(&mut self, addr: IpAddr, secure: bool, now: Instant) -> bool {
        if self.peers.len() >= self.config.max_peers {
            self.stats.peers_refused += 1;
            return false;
        }
        let link = Link::Probing {
            tries: 0,
            next_at: now,
        };
        self.peers.insert(addr, Peer::new(link, secure));
        true
    }

    /// Sends the next HELLO of a probing peer, or gives up on it (kernel peer).
    fn run_probe(&mut self, now: Instant, addr: IpAddr) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let Link::Probing { tries, next_at } = peer.link else {
            return;
        };
        if next_at > now {
            return;
        }
        if tries == 0 {
            // A new round: what an earlier one sent ahead does not count.
            peer.hellos_ahead = 0;
        }
        if tries >= self.config.probe_tries && !peer.secure {
            peer.hellos_ahead = 0;
            peer.link = Link::Kernel {
                next_probe_at: now + self.config.kernel_reprobe,
            };
            self.events.push_back(Event::KernelPeer { peer: addr });
            return;
        }
        peer.link = Link::Probing {
            tries: tries + 1,
            next_at: now + self.config.probe_interval,
        };
        // A HELLO sent ahead for a held bulk request stands for this one.
        if peer.hellos_ahead > 0 {
            peer.hellos_ahead -= 1;
            return;
        }
        self.hello_to(addr);
    }

    fn hello(&self) -> HelloRepr {
        HelloRepr {
            features: FEATURE_BULK_SIZE
                | if self.config.digest_period.is_some() {
                    FEATURE_DIGEST
                } else {
                    0
                },
            mtu: self.config.mtu,
            next_seq: self.next_seq,
        }
    }

    fn hello_to(&mut self, addr: IpAddr) {
        let body = Body::Hello(self.hello());
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.stats.hellos_sent += 1;
        }
        self.send_to(addr, body);
    }

    fn on_hello(
        &mut self,
        now: Instant,
        from: IpAddr,
        sender: Sender,
        hello: HelloRepr,
        answer: bool,
    ) {
        if !self.peers.contains_key(&from) && !self.track(from, false, now) {
            return;
        }
        let peer = self.peers.get_mut(&from).expect("tracked above");
        peer.last_heard = Some(now);
        peer.stats.frames_in += 1;
        peer.mtu = hello.mtu;
        peer.features = hello.features;
        let was_established = peer.established();
        let restarted = peer.remote.is_some_and(|r| r != sender);
        let mut change = Change::default();
        if restarted || peer.stream.is_none() {
            peer.stream = Some(Stream::new(hello.next_seq));
            peer.assembly = Default::default();
            peer.acked = 0;
            peer.ack_told = 0;
            peer.unacked_bytes = 0;
        } else if let Some(stream) = peer.stream.as_mut() {
            // Same boot: what it sent before its next seq and we never saw is missing.
            change = stream.on_highest(now, hello.next_seq.saturating_sub(1), self.config.window);
        }
        self.after_change(now, from, change);
        let peer = self.peers.get_mut(&from).expect("tracked above");
        peer.remote = Some(sender);
        peer.link = Link::Established;
        if peer.heartbeat_at.is_none() {
            peer.heartbeat_at = Some(now + self.config.heartbeat_idle);
        }
        if peer.digest_at.is_none() {
            peer.digest_at = self.config.digest_period.map(|p| now + p);
        }
        if restarted {
            peer.stats.restarts += 1;
            self.events.push_back(Event::PeerRestarted {
                peer: from,
                creator: sender.creator,
            });
        } else if !was_established {
            self.events.push_back(Event::PeerUp {
                peer: from,
                creator: sender.creator,
            });
        }
        if answer {
            let body = Body::HelloAck(self.hello());
            self.send_to(from, body);
        }
        self.run_nacks(now, from);
    }

    fn peer_down(&mut self, now: Instant, addr: IpAddr) {
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.link = Link::Probing {
                tries: 0,
                next_at: now,
            };
            peer.heartbeat_at = None;
            peer.digest_at = None;
            self.events.push_back(Event::PeerDown { peer: addr });
            self.run_probe(now, addr);
        }
    }

    // -----------------------------------------------------------------------------------
    // Frames of an established peer

    fn on_body(&mut self, now: Instant, from: IpAddr, creator: u32, body: Body<'_>) {
        match body {
            Body::Hello(_) | Body::HelloAck(_) => unreachable!("handled by on_hello"),
            Body::Data(data) => {
                let window = self.config.window;
                let peer = self.peers.get_mut(&from).expect("established");
                let stream = peer.stream.get_or_insert_with(|| Stream::new(data.seq));
                let (arrival, change) = stream.on_data(now, data.seq, window);
                let ack_now = match arrival {
                    Arrival::New => {
                        peer.stats.data_in += 1;
                        peer.unacked_bytes += data.packet.len();
                        self.deliver.push_back((from, data.packet.to_vec()));
                        // A gap this DATA filled moved the mark past it.
                        let cumulative = stream.cumulative();
                        cumulative > data.seq
                            || cumulative >= peer.ack_told + self.config.ack_every
                            || (peer.unacked_bytes >= self.config.ack_bytes
                                && cumulative > peer.ack_told)
                    }
                    Arrival::Duplicate => {
                        peer.stats.duplicates += 1;
                        // A resend we did not ask for: its sender waits for our mark.
                        true
                    }
                };
                self.after_change(now, from, change);
                self.run_nacks(now, from);
                if ack_now {
                    self.ack_to(from);
                }
            }
            Body::Ack(ack) => {
                let window = self.config.window;
                let peer = self.peers.get_mut(&from).expect("established");
                peer.stats.heartbeats_received += 1;
                // ACKs may cross each other: the mark only rises (a restart resets it).
                peer.acked = peer.acked.max(ack.received);
                let stream = peer
                    .stream
                    .get_or_insert_with(|| Stream::new(ack.highest_sent.saturating_add(1)));
                let change = stream.on_highest(now, ack.highest_sent, window);
                // It may be waiting for our mark (a window of its DATA in flight): tell
                // it when it rose since we last did. Never a reply to a reply: ours
                // carry no news of its stream.
                let news = stream.cumulative() > peer.ack_told;
                self.after_change(now, from, change);
                self.run_nacks(now, from);
                if news {
                    self.ack_to(from);
                }
            }
            Body::Nack(ranges) => self.answer_nack(now, from, ranges),
            Body::Gone(ranges) => {
                let peer = self.peers.get_mut(&from).expect("established");
                peer.stats.gone_received += 1;
                let mut given_up = 0;
                if let Some(stream) = peer.stream.as_mut() {
                    for r in &ranges.ranges {
                        given_up += stream.on_gone(r.start, r.end());
                    }
                }
                self.after_change(now, from, Change { gaps: 0, given_up });
            }
            Body::Digest(digest) => {
                if digest.buckets != self.config.digest_buckets {
                    // Another bucket count: sums cannot be compared.
                    self.count(from, |s| s.digest_deferred += 1);
                    return;
                }
                if digest.first == 0 {
                    self.count(from, |s| s.digest_rounds += 1);
                }
                self.queue_work(Work::CompareDigest {
                    peer: from,
                    creator,
                    digest,
                });
            }
            Body::DigestReq(req) => {
                let mut buckets = req.buckets;
                buckets.sort_unstable();
                buckets.dedup();
                self.queue_work(Work::AnswerRequest {
                    peer: from,
                    round: req.round,
                    buckets,
                });
            }
            Body::Ids(ids) => {
                let peer = self.peers.get_mut(&from).expect("established");
                let (bucket, as_of) = (ids.bucket, ids.as_of);
                if let (true, Some(list)) = peer.assembly.add(ids, MAX_REQ_BUCKETS) {
                    self.queue_work(Work::CompareIds {
                        peer: from,
                        creator,
                        bucket,
                        as_of,
                        ids: list,
                    });
                }
            }
            Body::Resync => {
                self.count(from, |s| s.resyncs_received += 1);
                self.events.push_back(Event::ResyncAsked { peer: from });
            }
            Body::BulkSize(size) => {
                self.events.push_back(Event::BulkSizeAnnounced {
                    peer: from,
                    states: size.states,
                });
            }
            Body::Need(need) => {
                self.count(from, |s| s.ids_announced += need.ids.len() as u64);
                if !need.ids.is_empty() {
                    self.events.push_back(Event::AnnounceStates {
                        peer: from,
                        ids: need.ids,
                    });
                }
            }
        }
    }

    /// Counts gaps and given-up numbers; a give-up raises [`Event::ResyncNeeded`].
    fn after_change(&mut self, _now: Instant, from: IpAddr, change: Change) {
        let Some(peer) = self.peers.get_mut(&from) else {
            return;
        };
        peer.stats.gaps += change.gaps;
        if change.given_up > 0 {
            peer.stats.seqs_given_up += change.given_up;
            peer.stats.resyncs += 1;
            self.events.push_back(Event::ResyncNeeded { peer: from });
        }
    }

    /// Answers a NACK from our resend buffer, within the peer's budget; what the buffer
    /// no longer holds goes back in a GONE.
    fn answer_nack(&mut self, now: Instant, from: IpAddr, ranges: SeqRanges) {
        let highest = self.highest_sent();
        let oldest = self.resend.oldest(self.next_seq);
        let (burst, rate) = (self.config.resend_burst, self.config.resend_rate);
        let mut gone = Vec::new();
        let mut resend = Vec::new();
        let peer = self.peers.get_mut(&from).expect("established");
        peer.stats.nacks_received += 1;
        'ranges: for range in &ranges.ranges {
            let end = range.end().min(highest + 1);
            if range.end() > highest + 1 {
                peer.stats.nack_bogus += range.end() - end.max(range.start);
            }
            if range.start >= end {
                continue;
            }
            let gone_end = end.min(oldest);
            if range.start < gone_end {
                gone.push(SeqRange {
                    start: range.start,
                    count: (gone_end - range.start) as u32,
                });
            }
            for seq in range.start.max(oldest)..end {
                if !peer.budget.take(now, burst, rate) {
                    peer.stats.resend_throttled += 1;
                    break 'ranges;
                }
                resend.push(seq);
            }
        }
        for seq in resend {
            if let Some(frame) = self.resend.get(seq).map(Arc::clone) {
                let peer = self.peers.get_mut(&from).expect("established");
                peer.stats.resent += 1;
                peer.stats.frames_out += 1;
                self.transmit.push_back((from, frame));
            }
        }
        if !gone.is_empty() {
            debug_assert!(gone.len() <= MAX_RANGES);
            self.count(from, |s| s.gone_sent += 1);
            self.send_to(from, Body::Gone(SeqRanges { ranges: gone }));
        }
    }

    // -----------------------------------------------------------------------------------
    // Timers of an established peer

    fn run_nacks(&mut self, now: Instant, addr: IpAddr) {
        let (interval, max_interval, tries) = (
            self.config.nack_interval,
            self.config.nack_interval_max,
            self.config.nack_tries,
        );
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let heard = peer.last_heard;
        let Some(stream) = peer.stream.as_mut() else {
            return;
        };
        let (ask, given_up) = stream.due_nacks(now, interval, max_interval, tries, heard);
        peer.stats.nack_seqs_asked += ask.len() as u64;
        self.after_change(now, addr, Change { gaps: 0, given_up });
        for list in SeqRanges::from_sorted(ask) {
            self.count(addr, |s| s.nacks_sent += 1);
            self.send_to(addr, Body::Nack(list));
        }
    }

    fn run_heartbeat(&mut self, now: Instant, addr: IpAddr) {
        let busy = self
            .last_data_at
            .is_some_and(|t| now < t + self.config.busy_for);
        let period = if busy {
            self.config.heartbeat_busy
        } else {
            self.config.heartbeat_idle
        };
        let highest_sent = self.highest_sent();
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if peer.heartbeat_at.is_some_and(|t| t > now) {
            return;
        }
        peer.heartbeat_at = Some(now + period);
        peer.stats.heartbeats_sent += 1;
        let received = peer.stream.as_ref().map_or(0, Stream::cumulative);
        peer.ack_told = received;
        peer.unacked_bytes = 0;
        self.send_to(
            addr,
            Body::Ack(AckRepr {
                highest_sent,
                received,
            }),
        );
    }

    /// An ACK now, out of the heartbeat schedule: our mark of `addr`'s stream.
    fn ack_to(&mut self, addr: IpAddr) {
        let highest_sent = self.highest_sent();
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        let received = peer.stream.as_ref().map_or(0, Stream::cumulative);
        peer.ack_told = received;
        peer.unacked_bytes = 0;
        peer.stats.prompt_acks += 1;
        self.send_to(
            addr,
            Body::Ack(AckRepr {
                highest_sent,
                received,
            }),
        );
    }

    fn run_digest_timer(&mut self, now: Instant, addr: IpAddr) {
        let Some(period) = self.config.digest_period else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        if peer.digest_at.is_none_or(|t| t > now) {
            return;
        }
        peer.digest_at = Some(now + period);
        self.queue_work(Work::SendDigest { peer: addr });
    }

    // -----------------------------------------------------------------------------------
    // Digest work

    fn queue_work(&mut self, work: Work) {
        if self.work.len() >= MAX_WORK {
            self.work.pop_front();
            self.stats.digest_work_dropped += 1;
        }
        if self.work.is_empty() {
            self.events.push_back(Event::DigestWork);
        }
        self.work.push_back(work);
    }

    fn send_digest(&mut self, peer: IpAddr, index: &impl StateIndex) {
        if !self.is_session_peer(peer) || self.digests_paused {
            return;
        }
        let buckets = self.config.digest_buckets;
        let sums = index.digest(self.config.creator, buckets);
        self.round = self.round.wrapping_add(1);
        let (round, as_of) = (self.round, self.highest_sent());
        for (i, run) in sums.chunks(MAX_BUCKETS_PER_FRAME).enumerate() {
            let body = Body::Digest(DigestRepr {
                round,
                buckets,
                first: (i * MAX_BUCKETS_PER_FRAME) as u16,
                as_of,
                sums: run.to_vec(),
            });
            self.send_to(peer, body);
        }
        self.count(peer, |s| s.digests_sent += 1);
    }

    fn compare_digest(&mut self, peer: IpAddr, digest: DigestRepr, ours: &[BucketSum]) {
        if self.digests_paused || !self.caught_up(peer, digest.as_of) {
            self.count(peer, |s| s.digest_deferred += 1);
            return;
        }
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        let buckets = usize::from(self.config.digest_buckets);
        if p.differed.len() != buckets {
            p.differed = vec![false; buckets];
        }
        // A bucket is asked about when it differed in the last comparison too: a copy
        // updated by DATA that came after the digest's `as_of` (every update in flight
        // while it was summed, hundreds a second under churn) differs once; a copy left
        // stale or missing differs round after round. Listing a bucket costs 12 bytes a
        // state (about 47 KB at 1 000 000 states), so the one-off differences would cost
        // far more than the second this adds to a repair.
        let mut differing_now = 0;
        let mut differing: Vec<u16> = Vec::new();
        for (i, theirs) in digest.sums.iter().enumerate() {
            let bucket = usize::from(digest.first) + i;
            let differs = ours.get(bucket) != Some(theirs);
            let Some(before) = p.differed.get_mut(bucket) else {
                continue;
            };
            if differs && *before {
                differing.push(bucket as u16);
            }
            differing_now += u64::from(differs);
            *before = differs;
        }
        p.stats.buckets_differing += differing_now;
        if differing.is_empty() {
            return;
        }
        p.stats.buckets_asked += differing.len() as u64;
        // Lists answering another round's request are of no use any more.
        if p.assembly.round() != digest.round {
            p.assembly.start(digest.round);
        }
        self.send_to(
            peer,
            Body::DigestReq(DigestReqRepr {
                round: digest.round,
                buckets: differing,
            }),
        );
    }

    /// Whether we received every DATA of `peer` up to `as_of` (so a difference is not
    /// just in flight).
    fn caught_up(&self, peer: IpAddr, as_of: u64) -> bool {
        self.peers
            .get(&peer)
            .and_then(|p| p.stream.as_ref())
            .is_some_and(|s| s.cumulative() >= as_of)
    }

    // -----------------------------------------------------------------------------------

    fn frame(&self, body: Body<'_>) -> Vec<u8> {
        FrameRepr {
            sender: Sender {
                creator: self.config.creator,
                boot: self.config.boot,
            },
            body,
        }
        .to_vec()
    }

    fn send_to(&mut self, addr: IpAddr, body: Body<'_>) {
        let frame = self.frame(body);
        if let Some(peer) = self.peers.get_mut(&addr) {
            peer.stats.frames_out += 1;
        }
        self.transmit.push_back((addr, Arc::new(frame)));
    }

    fn count(&mut self, addr: IpAddr, f: impl FnOnce(&mut PeerStats)) {
        if let Some(peer) = self.peers.get_mut(&addr) {
            f(&mut peer.stats);
        }
    }
}
