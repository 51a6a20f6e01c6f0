//! The engine process's pfsyncd sessions (`extensions on`): the [`Sessions`] of this
//! node, what decides where a received packet goes, and the `ctl stats` view.
//!
//! Untrusted frames are parsed here, in the confined process, never in the parent. The
//! loop in `process.rs` moves what the sessions produce: frames to the parent (plain
//! link, unicast) or the secure link, pfsync packets to the engine, events to the
//! engine's session methods (`crate::engine` `session.rs`).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::bulk::CompactBulk;
use crate::engine::{BulkRequest, Engine, Received};
use crate::metrics::{SessionSample, SESSION_COUNTERS};
use crate::session::{
    Config, CopyCheck, CopyHash, CopyPath, Event, Link, PeerInfo, PeerStats, Sessions,
};
use crate::wire::frame::RawItem;
use crate::wire::msg::bus::STATUS_END;
use crate::wire::{ext, Action, Message, PacketReader};
use crate::{log_info, log_warn};

/// Fewest seconds between two bulk requests made of one peer for its lost DATA: it
/// answers each with its whole table, and one answer covers every loss before it (the
/// digests find what a bulk under loss misses again).
const RESYNC_SPACING: Duration = Duration::from_secs(5);

/// How long after a pfsyncd peer's session starts (or restarts) its digests do not
/// make us forget its states. A restarted node holds none of its own states until our
/// bulk update gives them back (as pfsync does after a reboot: the states live on for
/// failover); its first digests would otherwise delete the very copies it asked for.
const FORGET_GRACE: Duration = Duration::from_secs(30);

/// How long after we were last seen sending a bulk update a peer's digests do not make
/// us forget states: a digest made before the bulk's last states reached it.
const AFTER_BULK: Duration = Duration::from_secs(5);

/// Longest a delivered BUS END waits for the DATA before it (see
/// [`SessionSide::next_delivery`]): most gaps are filled within a few NACK round trips;
/// one still open then (its NACKs back off for about 3.3 s) no longer holds up the end
/// of the bulk.
const HOLD_MAX: Duration = Duration::from_secs(2);

/// Where a packet received on the plain link goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PlainVerdict {
    /// An extension frame from a sender the engine would take packets from: to the
    /// sessions.
    Frame(IpAddr),
    /// A frame from a sender the engine would refuse: dropped, counted.
    Drop,
    /// A session peer's plain packet whose DATA copy was taken: not taken again,
    /// counted (`plain_copies_skipped`).
    Copy,
    /// A pfsync packet for the engine, as without the extensions.
    Engine,
    /// A session peer's plain packet, for the engine; once it is taken,
    /// [`SessionSide::plain_copy_taken`] makes its DATA copy skipped.
    FirstCopy(IpAddr, CopyHash),
}

/// The sessions and the daemon's counters about them.
pub(super) struct SessionSide {
    pub(super) sessions: Sessions,
    /// When each peer was last asked for a bulk update for its lost DATA.
    last_resync: HashMap<IpAddr, Instant>,
    /// ResyncNeeded events not acted on: that peer was asked less than
    /// [`RESYNC_SPACING`] before.
    pub(super) resyncs_spaced: u64,
    /// Frames refused before parsing: off the syncdev, TTL not 255, no source, or a
    /// source the engine refuses (`syncpeer` without `anysource`).
    pub(super) frames_refused: u64,
    /// Frames for an address neither on a reachable link nor a secure peer.
    pub(super) frames_unsent: u64,
    /// Secure peers told to the sessions (so a reload adds only the new ones).
    secure_known: BTreeSet<IpAddr>,
    /// Delivered packets ending a bulk update, held until the DATA before them came.
    held: VecDeque<(IpAddr, Vec<u8>, Instant)>,
    /// Packets held so.
    pub(super) bulk_ends_held: u64,
    /// ResyncNeeded events not acted on while our own bulk update was under way (it
    /// brings everything).
    pub(super) resyncs_during_bulk: u64,
    /// When each peer's current session started.
    session_started: HashMap<IpAddr, Instant>,
    /// When we were last seen sending a bulk update.
    bulk_sent_at: Option<Instant>,
    /// ForgetStates events not acted on: the peer's session was young, or we were
    /// sending a bulk update.
    pub(super) forgets_deferred: u64,
    /// The compact bulk update to and from the session peers.
    pub(super) bulk: CompactBulk,
}

impl SessionSide {
    /// Sessions for creator `creator`, boot id `boot` (random per start), link MTU
    /// `mtu`.
    /// `copy_key` keys the hash that finds a peer's second copy of a packet (secret:
    /// peers choose what they send).
    pub(super) fn new(creator: u32, boot: u64, mtu: u32, copy_key: [u64; 2]) -> SessionSide {
        let mut config = Config::new(creator, boot);
        config.mtu = u16::try_from(mtu).unwrap_or(u16::MAX);
        config.copy_key = copy_key;
        SessionSide {
            sessions: Sessions::new(config),
            last_resync: HashMap::new(),
            resyncs_spaced: 0,
            frames_refused: 0,
            frames_unsent: 0,
            secure_known: BTreeSet::new(),
            held: VecDeque::new(),
            bulk_ends_held: 0,
            resyncs_during_bulk: 0,
            session_started: HashMap::new(),
            bulk_sent_at: None,
            forgets_deferred: 0,
            bulk: CompactBulk::default(),
        }
    }

    /// Where the plain-link packet `rx` goes; `accepted` says whether the engine
    /// takes packets from its source. A plain pfsync packet from a new source makes
    /// the sessions probe it (HELLO).
    pub(super) fn classify_plain(
        &mut self,
        now: Instant,
        rx: &Received<'_>,
        accepted: bool,
    ) -> PlainVerdict {
        // What the engine itself would count and drop (wrong interface, TTL, source)
        // is never a peer of ours.
        let valid_sender = match rx.source {
            Some(src) if rx.on_syncdev && rx.ttl == 255 && accepted => Some(src),
            _ => None,
        };
        if ext::is_ext(rx.payload) {
            return match valid_sender {
                Some(src) => PlainVerdict::Frame(src),
                None => {
                    self.frames_refused += 1;
                    PlainVerdict::Drop
                }
            };
        }
        let Some(src) = valid_sender else {
            return PlainVerdict::Engine;
        };
        // Counted by the sessions when it is a session peer's. Such a packet is taken
        // unless its DATA copy was (same bytes, see `session/copies.rs`): a node between
        // two links relays the other link's packets as they are (plain, from its own
        // address), and only its own packets have a DATA copy. The plain copy is not
        // dropped unseen: it usually comes first, and whichever comes first is taken.
        self.sessions.note_plain(now, src);
        match self
            .sessions
            .check_copy(now, src, CopyPath::Plain, rx.payload)
        {
            CopyCheck::Untracked => PlainVerdict::Engine,
            CopyCheck::Second => PlainVerdict::Copy,
            CopyCheck::First(hash) => PlainVerdict::FirstCopy(src, hash),
        }
    }

    /// The engine took the plain packet of `src` whose hash `hash`
    /// ([`PlainVerdict::FirstCopy`]) was told: its DATA copy will be skipped. Not
    /// called when the packet held a bulk request back: that one's DATA copy is what
    /// answers it (`bulk.rs`).
    pub(super) fn plain_copy_taken(&mut self, now: Instant, src: IpAddr, hash: CopyHash) {
        self.sessions.remember_copy(now, src, CopyPath::Plain, hash);
    }

    /// Whether the delivered DATA packet `packet` of `from` is skipped: its plain copy
    /// was taken. When not, it is remembered as taken (the caller takes it).
    pub(super) fn data_copy_skipped(&mut self, now: Instant, from: IpAddr, packet: &[u8]) -> bool {
        match self.sessions.check_copy(now, from, CopyPath::Data, packet) {
            CopyCheck::Untracked => false,
            CopyCheck::Second => true,
            CopyCheck::First(hash) => {
                self.sessions.remember_copy(now, from, CopyPath::Data, hash);
                false
            }
        }
    }

    /// Tells the sessions the secure peers `inner_addrs` (pfsyncd peers by
    /// definition); the ones already told are left as they are.
    pub(super) fn set_secure_peers(&mut self, now: Instant, inner_addrs: &[IpAddr]) {
        for addr in inner_addrs {
            if self.secure_known.insert(*addr) {
                self.sessions.add_secure_peer(now, *addr);
            }
        }
        self.secure_known.retain(|a| inner_addrs.contains(a));
    }

    /// Whether a bulk request for DATA of `peer` lost may go to it now (and notes that
    /// it does).
    pub(super) fn resync_due(&mut self, now: Instant, peer: IpAddr) -> bool {
        if self
            .last_resync
            .get(&peer)
            .is_some_and(|t| now.saturating_duration_since(*t) < RESYNC_SPACING)
        {
            self.resyncs_spaced += 1;
            return false;
        }
        if self.last_resync.len() >= self.sessions.config().max_peers {
            // Addresses of peers long gone: only the spacing of the recent ones matters.
            self.last_resync
                .retain(|_, t| now.saturating_duration_since(*t) < RESYNC_SPACING);
        }
        self.last_resync.insert(peer, now);
        true
    }

    /// DATA of `peer` was lost past its resend buffer: a bulk update asked of `peer`
    /// alone (RESYNC), unless our own bulk request is under way (it brings everything)
    /// or `peer` was asked less than [`RESYNC_SPACING`] ago. Every other peer holds
    /// what it sent us; asked, each would send its whole table.
    pub(super) fn on_resync_needed(&mut self, now: Instant, peer: IpAddr, engine: &mut Engine) {
        if matches!(
            engine.bulk_request_state(),
            BulkRequest::Waiting { .. } | BulkRequest::Receiving { .. }
        ) {
            self.resyncs_during_bulk += 1;
        } else if self.resync_due(now, peer) && self.sessions.ask_resync(peer) {
            engine.count_resync_request();
        }
    }

    /// The next pfsync packet for the engine: a held BUS END whose wait is over first,
    /// then the sessions' deliveries. DATA is delivered as it comes, in any order; a
    /// BUS END that overtook lost DATA would make the engine call its bulk update done
    /// (carp undemoted, `status` saying done) with states still missing, so a packet
    /// ending a bulk update waits until its sender's stream has no gap left (filled by
    /// resends, or given up), or [`HOLD_MAX`].
    pub(super) fn next_delivery(&mut self, now: Instant) -> Option<(IpAddr, Vec<u8>)> {
        // What filled a gap is queued behind the held END: it goes first.
        while let Some((from, packet)) = self.sessions.poll_deliver() {
            let behind_held = self.held.iter().any(|(f, _, _)| *f == from);
            if (self.gap_before(from) || behind_held) && carries_bulk_end(&packet) {
                self.bulk_ends_held += 1;
                self.held.push_back((from, packet, now));
                continue;
            }
            return Some((from, packet));
        }
        let at = self.held.iter().position(|(from, _, since)| {
            !self.gap_before(*from) || now.saturating_duration_since(*since) >= HOLD_MAX
        })?;
        self.held.remove(at).map(|(from, packet, _)| (from, packet))
    }

    /// Whether DATA of `from` is missing now.
    fn gap_before(&self, from: IpAddr) -> bool {
        self.sessions.peer(from).is_some_and(|p| p.missing > 0)
    }

    /// When a held packet's wait ends at the latest, for the loop's timeout.
    pub(super) fn held_deadline(&self) -> Option<Instant> {
        self.held
            .iter()
            .map(|(_, _, since)| *since + HOLD_MAX)
            .min()
    }

    /// Notes that we are sending a bulk update now (see [`SessionSide::may_forget`]).
    pub(super) fn note_bulk_sending(&mut self, now: Instant) {
        self.bulk_sent_at = Some(now);
    }

    /// Notes when a peer's session started (PeerUp, PeerRestarted).
    pub(super) fn session_started(&mut self, now: Instant, peer: IpAddr) {
        self.session_started.insert(peer, now);
    }

    /// Whether `peer`'s digest may make us forget states now: not within
    /// [`FORGET_GRACE`] of its session's start, nor while we send a bulk update
    /// (`bulk_sending`), which may be what it waits for, nor for [`AFTER_BULK`] after
    /// one (its digests may predate the bulk's last states). Counted when not.
    pub(super) fn may_forget(&mut self, now: Instant, peer: IpAddr, bulk_sending: bool) -> bool {
        if bulk_sending {
            self.bulk_sent_at = Some(now);
        }
        let young = self
            .session_started
            .get(&peer)
            .is_some_and(|t| now.saturating_duration_since(*t) < FORGET_GRACE);
        let after_bulk = self
            .bulk_sent_at
            .is_some_and(|t| now.saturating_duration_since(t) < AFTER_BULK);
        if young || after_bulk {
            self.forgets_deferred += 1;
            return false;
        }
        true
    }

    /// Logs a discovery event once, as it happens; other events are not logged here.
    pub(super) fn log_event(&self, event: &Event) {
        match event {
            Event::PeerUp { peer, creator } => {
                log_info!("pfsyncd peer {peer} (creator {creator:08x}): session up")
            }
            Event::PeerDown { peer } => {
                log_warn!("pfsyncd peer {peer}: silent, session down; probing it")
            }
            Event::PeerRestarted { peer, creator } => {
                log_info!("pfsyncd peer {peer} (creator {creator:08x}) restarted: its stream starts over")
            }
            Event::KernelPeer { peer } => log_info!(
                "peer {peer} never answered HELLO: a kernel peer (plain pfsync only; probed again in an hour)"
            ),
            Event::ResyncNeeded { peer } => log_info!(
                "pfsyncd peer {peer}: DATA lost past its resend buffer; bulk update asked of it"
            ),
            _ => {}
        }
    }

    /// `ctl stats --json`'s `sessions` object: one entry per peer, keyed by address.
    pub(super) fn peers_json(&self, now: Instant) -> Value {
        let mut peers = serde_json::Map::new();
        for addr in self.addrs() {
            if let Some(p) = self.sessions.peer(addr) {
                peers.insert(addr.to_string(), peer_json(&p, now));
            }
        }
        Value::Object(peers)
    }

    /// `ctl stats --json`'s `session_counters`: what is not tied to one peer.
    pub(super) fn counters_json(&self) -> Value {
        let s = self.sessions.stats();
        json!({
            "highest_sent": self.sessions.highest_sent(),
            "resend_buffer_bytes": self.sessions.resend_bytes(),
            "data_numbered": s.data_numbered,
            "plain_from_session_peer": s.plain_from_session_peer,
            "garbage": s.garbage,
            "unknown_peer": s.unknown_peer,
            "stale_identity": s.stale_identity,
            "peers_refused": s.peers_refused,
            "data_too_long": s.data_too_long,
            "digest_work_dropped": s.digest_work_dropped,
            "resyncs_spaced": self.resyncs_spaced,
            "resyncs_during_bulk": self.resyncs_during_bulk,
            "bulk_ends_held": self.bulk_ends_held,
            "forgets_deferred": self.forgets_deferred,
            "frames_refused": self.frames_refused,
            "frames_unsent": self.frames_unsent,
            "compact_bulk": self.bulk.json(),
        })
    }

    /// `ctl stats`'s session lines, one per peer and one for the rest.
    pub(super) fn stats_text(&self, now: Instant) -> String {
        let mut out = String::from("sessions:\n");
        for addr in self.addrs() {
            let Some(p) = self.sessions.peer(addr) else {
                continue;
            };
            let st = &p.stats;
            let (creator, boot) = p.remote.map_or_else(
                || ("-".to_string(), "-".to_string()),
                |r| (format!("{:08x}", r.creator), format!("{:016x}", r.boot)),
            );
            let heard = p.last_heard.map_or_else(
                || "never".to_string(),
                |t| {
                    format!(
                        "{:.1} s ago",
                        now.saturating_duration_since(t).as_secs_f64()
                    )
                },
            );
            out.push_str(&format!(
                "\t{addr}: {}{}, creator {creator}, boot {boot}, last heard {heard}; \
                 gaps {}, nacks sent {} received {}, resent {}, gone sent {} received {}, \
                 resyncs {}, duplicates {}, digest rounds {}, buckets differing {}, \
                 ids forgotten {} announced {}, copies skipped plain {} data {}\n",
                link_name(p.link),
                if p.secure { " (secure)" } else { "" },
                st.gaps,
                st.nacks_sent,
                st.nacks_received,
                st.resent,
                st.gone_sent,
                st.gone_received,
                st.resyncs,
                st.duplicates,
                st.digest_rounds,
                st.buckets_differing,
                st.ids_forgotten,
                st.ids_announced,
                st.plain_copies_skipped,
                st.data_copies_skipped,
            ));
        }
        let s = self.sessions.stats();
        out.push_str(&format!(
            "\tDATA numbered {}, plain packets of session peers {}, frames refused {} garbage {} unknown peer {} stale identity {}\n",
            s.data_numbered,
            s.plain_from_session_peer,
            self.frames_refused,
            s.garbage,
            s.unknown_peer,
            s.stale_identity
        ));
        out.push_str(&self.bulk.stats_text());
        out
    }

    /// The sessions as the metrics show them, in address order.
    pub(super) fn samples(&self) -> Vec<SessionSample> {
        self.addrs()
            .into_iter()
            .filter_map(|addr| {
                let p = self.sessions.peer(addr)?;
                Some(SessionSample {
                    addr,
                    established: p.link == Link::Established,
                    // Every name has its counter (a unit test checks).
                    counters: SESSION_COUNTERS
                        .map(|(name, _)| (name, session_counter(&p.stats, name).unwrap_or(0))),
                })
            })
            .collect()
    }

    fn addrs(&self) -> Vec<IpAddr> {
        let mut addrs: Vec<IpAddr> = self.sessions.peers().collect();
        addrs.sort();
        addrs
    }
}

/// The per-peer counter a metrics series name stands for.
fn session_counter(st: &PeerStats, name: &str) -> Option<u64> {
    Some(match name {
        "gaps" => st.gaps,
        "nacks_sent" => st.nacks_sent,
        "nacks_received" => st.nacks_received,
        "resent" => st.resent,
        "gone_received" => st.gone_received,
        "resyncs" => st.resyncs,
        "duplicates" => st.duplicates,
        "digest_rounds" => st.digest_rounds,
        "buckets_differing" => st.buckets_differing,
        "ids_forgotten" => st.ids_forgotten,
        "ids_announced" => st.ids_announced,
        "plain_copies_skipped" => st.plain_copies_skipped,
        "data_copies_skipped" => st.data_copies_skipped,
        "resyncs_asked" => st.resyncs_asked,
        "resyncs_received" => st.resyncs_received,
        "buckets_asked" => st.buckets_asked,
        _ => return None,
    })
}

/// Whether a pfsync packet holds a BUS END.
fn carries_bulk_end(packet: &[u8]) -> bool {
    let Ok(reader) = PacketReader::new(packet) else {
        return false;
    };
    reader.raw_items().any(|item| match item {
        Ok(RawItem::Record(r)) if r.action() == Action::Bus => {
            matches!(r.message(), Ok(Message::Bus(bus)) if bus.status == STATUS_END)
        }
        _ => false,
    })
}

fn link_name(link: Link) -> &'static str {
    match link {
        Link::Probing { .. } => "probing",
        Link::Kernel { .. } => "kernel",
        Link::Established => "established",
    }
}

fn peer_json(p: &PeerInfo, now: Instant) -> Value {
    let st = &p.stats;
    json!({
        "state": link_name(p.link),
        "secure": p.secure,
        "creator": p.remote.map(|r| format!("{:08x}", r.creator)),
        "boot": p.remote.map(|r| format!("{:016x}", r.boot)),
        "mtu": p.mtu,
        "last_heard_ms": p.last_heard.map(|t| now.saturating_duration_since(t).as_millis() as u64),
        "received": p.received,
        "missing": p.missing,
        "acked": p.acked,
        "frames_in": st.frames_in,
        "frames_out": st.frames_out,
        "hellos_sent": st.hellos_sent,
        "data_in": st.data_in,
        "data_out": st.data_out,
        "duplicates": st.duplicates,
        "gaps": st.gaps,
        "nacks_sent": st.nacks_sent,
        "nack_seqs_asked": st.nack_seqs_asked,
        "nacks_received": st.nacks_received,
        "resent": st.resent,
        "resend_throttled": st.resend_throttled,
        "gone_sent": st.gone_sent,
        "gone_received": st.gone_received,
        "seqs_given_up": st.seqs_given_up,
        "resyncs": st.resyncs,
        "resyncs_asked": st.resyncs_asked,
        "resyncs_received": st.resyncs_received,
        "heartbeats_sent": st.heartbeats_sent,
        "heartbeats_received": st.heartbeats_received,
        "restarts": st.restarts,
        "digest_rounds": st.digest_rounds,
        "digests_sent": st.digests_sent,
        "buckets_differing": st.buckets_differing,
        "buckets_asked": st.buckets_asked,
        "digest_deferred": st.digest_deferred,
        "ids_forgotten": st.ids_forgotten,
        "ids_needed": st.ids_needed,
        "ids_announced": st.ids_announced,
        "plain_copies_skipped": st.plain_copies_skipped,
        "data_copies_skipped": st.data_copies_skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rx<'a>(payload: &'a [u8], source: &str, ttl: u8) -> Received<'a> {
        Received {
            payload,
            on_syncdev: true,
            ttl,
            ipv6: false,
            source: Some(source.parse().unwrap()),
        }
    }

    #[test]
    fn frames_go_to_the_sessions_plain_packets_to_the_engine() {
        let now = Instant::now();
        let mut side = SessionSide::new(1, 2, 1500, [3, 4]);
        let frame = [ext::VERSION; 32];
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            side.classify_plain(now, &rx(&frame, "10.0.0.2", 255), true),
            PlainVerdict::Frame(a)
        );
        // TTL, or a source the engine refuses: never a session's frame.
        assert_eq!(
            side.classify_plain(now, &rx(&frame, "10.0.0.2", 254), true),
            PlainVerdict::Drop
        );
        assert_eq!(
            side.classify_plain(now, &rx(&frame, "10.0.0.2", 255), false),
            PlainVerdict::Drop
        );
        assert_eq!(side.frames_refused, 2);
        // A plain packet from a new source goes to the engine and is probed.
        assert_eq!(
            side.classify_plain(now, &rx(&[6, 0, 0, 12], "10.0.0.3", 255), true),
            PlainVerdict::Engine
        );
        let probe = side.sessions.poll_transmit().expect("a HELLO");
        assert_eq!(probe.0, "10.0.0.3".parse::<IpAddr>().unwrap());
        assert_eq!(probe.1[0], ext::VERSION);
    }

    #[test]
    fn a_young_session_or_a_bulk_being_sent_keeps_the_states() {
        let now = Instant::now();
        let mut side = SessionSide::new(1, 2, 1500, [3, 4]);
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        side.session_started(now, peer);
        assert!(!side.may_forget(now + Duration::from_secs(1), peer, false));
        assert!(!side.may_forget(now + FORGET_GRACE, peer, true));
        assert!(!side.may_forget(now + FORGET_GRACE + AFTER_BULK / 2, peer, false));
        assert!(side.may_forget(now + FORGET_GRACE + AFTER_BULK, peer, false));
        assert_eq!(side.forgets_deferred, 3);
    }

    #[test]
    fn only_a_bulk_end_is_recognised_as_one() {
        use crate::wire::msg::bus::STATUS_START;
        use crate::wire::msg::BusRepr;
        use crate::wire::{Dialect, PacketBuilder};
        let packet = |status| {
            let mut b = PacketBuilder::new(Dialect::OpenBsd, 1500);
            let _ = b
                .push(&Message::Bus(BusRepr {
                    creatorid: 1,
                    endtime: 0,
                    status,
                }))
                .unwrap();
            b.finish().unwrap()
        };
        assert!(carries_bulk_end(&packet(STATUS_END)));
        assert!(!carries_bulk_end(&packet(STATUS_START)));
        assert!(!carries_bulk_end(&[0xc5; 40]));
    }

    /// Moves every frame between `a` (at `a_addr`) and `side` (at `b_addr`), dropping
    /// the frames of `a` that `lose` picks.
    fn exchange(
        now: Instant,
        a: &mut Sessions,
        side: &mut SessionSide,
        mut lose: impl FnMut(&[u8]) -> bool,
    ) {
        let (a_addr, b_addr): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        loop {
            let mut moved = false;
            while let Some((to, frame)) = a.poll_transmit() {
                assert_eq!(to, b_addr);
                moved = true;
                if !lose(&frame) {
                    side.sessions.handle_frame(now, a_addr, &frame);
                }
            }
            while let Some((to, frame)) = side.sessions.poll_transmit() {
                assert_eq!(to, a_addr);
                moved = true;
                a.handle_frame(now, b_addr, &frame);
            }
            if !moved {
                return;
            }
        }
    }

    #[test]
    fn a_bulk_end_waits_for_the_data_lost_before_it() {
        use crate::wire::msg::BusRepr;
        use crate::wire::{Dialect, PacketBuilder};
        let t0 = Instant::now();
        let (a_addr, b_addr): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut a = Sessions::new(Config::new(1, 1));
        let mut side = SessionSide::new(2, 2, 1500, [3, 4]);
        // b hears a plain packet of a and probes it; a answers.
        side.classify_plain(t0, &rx(&[6, 0, 0, 12], "10.0.0.1", 255), true);
        while let Some((to, frame)) = side.sessions.poll_transmit() {
            assert_eq!(to, a_addr);
            a.handle_frame(t0, b_addr, &frame);
        }
        exchange(t0, &mut a, &mut side, |_| false);
        assert!(side.sessions.is_session_peer(a_addr) && a.is_session_peer(b_addr));
        while side.next_delivery(t0).is_some() {}

        let bus_end = {
            let mut b = PacketBuilder::new(Dialect::OpenBsd, 1500);
            let _ = b
                .push(&Message::Bus(BusRepr {
                    creatorid: 1,
                    endtime: 0,
                    status: STATUS_END,
                }))
                .unwrap();
            b.finish().unwrap()
        };
        let states = vec![6u8, 0, 0, 20, 1, 2, 3, 4];
        // DATA 1 (states) is lost; DATA 2 (the END) arrives.
        a.send_data(t0, &states).unwrap();
        let mut first = true;
        exchange(t0, &mut a, &mut side, |_| std::mem::take(&mut first));
        a.send_data(t0, &bus_end).unwrap();
        // Only the END's frame goes through; the NACK it causes is not answered yet.
        let end_frame = a.poll_transmit().unwrap().1;
        side.sessions.handle_frame(t0, a_addr, &end_frame);
        assert_eq!(side.next_delivery(t0), None, "the END waits");
        assert_eq!(side.bulk_ends_held, 1);
        // The NACK reaches a, the resend comes: the states first, then the END.
        exchange(t0, &mut a, &mut side, |_| false);
        assert_eq!(side.next_delivery(t0), Some((a_addr, states)));
        assert_eq!(side.next_delivery(t0), Some((a_addr, bus_end.clone())));
        assert_eq!(side.next_delivery(t0), None);

        // An END whose gap is never filled goes after HOLD_MAX.
        a.send_data(t0, &[6, 0, 0, 20, 9, 9, 9, 9]).unwrap();
        let _lost = a.poll_transmit();
        a.send_data(t0, &bus_end).unwrap();
        let end_frame = a.poll_transmit().unwrap().1;
        side.sessions.handle_frame(t0, a_addr, &end_frame);
        assert_eq!(side.next_delivery(t0), None);
        assert_eq!(side.held_deadline(), Some(t0 + HOLD_MAX));
        assert_eq!(side.next_delivery(t0 + HOLD_MAX), Some((a_addr, bus_end)));
    }

    #[test]
    fn every_session_series_has_its_counter() {
        for (name, _) in SESSION_COUNTERS {
            assert!(
                session_counter(&PeerStats::default(), name).is_some(),
                "{name}"
            );
        }
    }

    /// A node with session peers `peers` configured so, every session up.
    fn side_with_peers(
        now: Instant,
        peers: &[IpAddr],
        configs: Vec<Config>,
    ) -> (SessionSide, Vec<Sessions>) {
        let us: IpAddr = "10.0.0.1".parse().unwrap();
        let mut side = SessionSide::new(1, 1, 1500, [3, 4]);
        let mut others: Vec<Sessions> = configs.into_iter().map(Sessions::new).collect();
        side.set_secure_peers(now, peers);
        for _ in 0..3 {
            while let Some((to, frame)) = side.sessions.poll_transmit() {
                let i = peers.iter().position(|p| *p == to).expect("a peer");
                others[i].handle_frame(now, us, &frame);
            }
            for (i, other) in others.iter_mut().enumerate() {
                while let Some((to, frame)) = other.poll_transmit() {
                    assert_eq!(to, us);
                    side.sessions.handle_frame(now, peers[i], &frame);
                }
            }
        }
        for (i, peer) in peers.iter().enumerate() {
            assert!(side.sessions.is_session_peer(*peer));
            assert!(others[i].is_session_peer(us));
            while others[i].poll_event().is_some() {}
        }
        while side.sessions.poll_event().is_some() {}
        (side, others)
    }

    /// Issue 14: DATA of B lost past B's resend buffer (B answers GONE) is asked again
    /// of B alone; A and C would each answer a bulk request with their whole table.
    #[test]
    fn a_loss_from_one_peer_asks_that_peer_alone_for_a_bulk() {
        let now = Instant::now();
        let us: IpAddr = "10.0.0.1".parse().unwrap();
        let peers: Vec<IpAddr> = ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        // B's buffer holds one frame: its DATA 2, lost on the way, is gone by DATA 3.
        let mut configs: Vec<Config> = (0..3).map(|i| Config::new(11 + i, 100)).collect();
        configs[1].resend_bytes = 30;
        let (mut side, mut others) = side_with_peers(now, &peers, configs);
        let mut engine = Engine::new(crate::engine::Config::new(1, crate::wire::Dialect::OpenBsd));
        let b = peers[1];
        others[1].send_data(now, &[6, 0, 0, 20, 1]).unwrap();
        let (_, first) = others[1].poll_transmit().unwrap();
        side.sessions.handle_frame(now, b, &first);
        others[1].send_data(now, &[6, 0, 0, 20, 2]).unwrap();
        let _lost = others[1].poll_transmit();
        others[1].send_data(now, &[6, 0, 0, 20, 3]).unwrap();
        let mut resyncs = 0;
        for _ in 0..3 {
            while let Some((_, frame)) = others[1].poll_transmit() {
                side.sessions.handle_frame(now, b, &frame);
            }
            while let Some(event) = side.sessions.poll_event() {
                if let Event::ResyncNeeded { peer } = event {
                    assert_eq!(peer, b);
                    resyncs += 1;
                    side.on_resync_needed(now, peer, &mut engine);
                }
            }
            // The NACK to B, and what the resync sends.
            let sent: Vec<(IpAddr, Vec<u8>)> =
                std::iter::from_fn(|| side.sessions.poll_transmit()).collect();
            for (to, frame) in sent {
                let i = peers.iter().position(|p| *p == to).expect("a peer");
                assert_eq!(to, b, "only B is asked: {}", ext::pretty::FrameText(&frame));
                others[i].handle_frame(now, us, &frame);
            }
        }
        assert_eq!(resyncs, 1, "B's GONE gave DATA 2 up");
        // B's sessions take it as a bulk asked of it alone.
        assert!(
            std::iter::from_fn(|| others[1].poll_event())
                .any(|e| e == Event::ResyncAsked { peer: us }),
            "B is asked for a bulk"
        );
        for i in [0, 2] {
            assert!(std::iter::from_fn(|| others[i].poll_event())
                .all(|e| !matches!(e, Event::ResyncAsked { .. })));
        }
        assert_eq!(engine.stats().session_resync_requests, 1);
        assert_eq!(side.sessions.peer(b).unwrap().stats.resyncs_asked, 1);
        // Spaced per peer: B again at once is not asked, C is.
        side.on_resync_needed(now + Duration::from_secs(1), b, &mut engine);
        let _ = std::iter::from_fn(|| side.sessions.poll_transmit()).count();
        side.on_resync_needed(now + Duration::from_secs(1), peers[2], &mut engine);
        let asked: Vec<IpAddr> = std::iter::from_fn(|| side.sessions.poll_transmit())
            .map(|(to, _)| to)
            .collect();
        assert_eq!(asked, vec![peers[2]]);
        assert_eq!(side.resyncs_spaced, 1);
    }

    /// Takes a plain packet as `take_messages` does: the engine, then the first copy
    /// noted. True when the engine took it.
    fn take_plain(
        side: &mut SessionSide,
        engine: &mut Engine,
        now: Instant,
        rx: Received<'_>,
    ) -> bool {
        match side.classify_plain(now, &rx, true) {
            PlainVerdict::Engine => {
                engine.handle_packet(now, rx);
                true
            }
            PlainVerdict::FirstCopy(src, hash) => {
                if !engine.handle_packet_holding_bulk_request(now, rx) {
                    side.plain_copy_taken(now, src, hash);
                }
                true
            }
            PlainVerdict::Frame(_) | PlainVerdict::Drop | PlainVerdict::Copy => false,
        }
    }

    /// Takes the next DATA delivery as `pump_sessions` does. True when the engine took
    /// it.
    fn take_delivery(side: &mut SessionSide, engine: &mut Engine, now: Instant) -> bool {
        let (from, packet) = side.next_delivery(now).expect("a delivery");
        if side.data_copy_skipped(now, from, &packet) {
            return false;
        }
        engine.handle_session_packet(now, rx(&packet, &from.to_string(), 255));
        true
    }

    /// Issue 14: a session peer's plain packet and its DATA copy cost the engine one
    /// import, whichever comes first; the DATA copy still counts in the session (its
    /// sequence number is marked received). A relayed packet (plain, no DATA copy) is
    /// taken every time.
    #[test]
    fn a_packet_and_its_data_copy_are_taken_once() {
        let t0 = Instant::now();
        let (a_addr, b_addr): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut a = Sessions::new(Config::new(1, 1));
        let mut side = SessionSide::new(2, 2, 1500, [3, 4]);
        let mut engine = Engine::new(crate::engine::Config::new(2, crate::wire::Dialect::OpenBsd));
        side.classify_plain(t0, &rx(&[6, 0, 0, 12], "10.0.0.1", 255), true);
        while let Some((to, frame)) = side.sessions.poll_transmit() {
            assert_eq!(to, a_addr);
            a.handle_frame(t0, b_addr, &frame);
        }
        exchange(t0, &mut a, &mut side, |_| false);
        assert!(side.sessions.is_session_peer(a_addr));
        while side.next_delivery(t0).is_some() {}
        let imported = |e: &Engine| e.stats().ipackets;
        let before = imported(&engine);

        // DATA first, then the plain copy.
        let p1 = vec![6u8, 0, 0, 20, 1, 1, 1, 1];
        a.send_data(t0, &p1).unwrap();
        exchange(t0, &mut a, &mut side, |_| false);
        assert!(take_delivery(&mut side, &mut engine, t0));
        assert!(!take_plain(
            &mut side,
            &mut engine,
            t0,
            rx(&p1, "10.0.0.1", 255)
        ));
        assert_eq!(imported(&engine), before + 1);

        // Plain first, then the DATA copy: its sequence number is still received.
        let p2 = vec![6u8, 0, 0, 20, 2, 2, 2, 2];
        assert!(take_plain(
            &mut side,
            &mut engine,
            t0,
            rx(&p2, "10.0.0.1", 255)
        ));
        a.send_data(t0, &p2).unwrap();
        exchange(t0, &mut a, &mut side, |_| false);
        assert!(!take_delivery(&mut side, &mut engine, t0));
        assert_eq!(imported(&engine), before + 2);
        let peer = side.sessions.peer(a_addr).unwrap();
        assert_eq!(peer.received, 2, "the skipped DATA is marked received");
        assert_eq!(peer.stats.data_in, 2);
        assert_eq!(peer.stats.plain_copies_skipped, 1);
        assert_eq!(peer.stats.data_copies_skipped, 1);

        // Relayed packets (the same bytes, twice, no DATA copy): each taken.
        let relayed = vec![6u8, 0, 0, 20, 9, 9, 9, 9];
        for _ in 0..2 {
            assert!(take_plain(
                &mut side,
                &mut engine,
                t0,
                rx(&relayed, "10.0.0.1", 255)
            ));
        }
        // A packet sent again with the same bytes: plain and DATA, once more.
        assert!(take_plain(
            &mut side,
            &mut engine,
            t0,
            rx(&p2, "10.0.0.1", 255)
        ));
        a.send_data(t0, &p2).unwrap();
        exchange(t0, &mut a, &mut side, |_| false);
        assert!(!take_delivery(&mut side, &mut engine, t0));
        assert_eq!(imported(&engine), before + 5);
        // A DATA copy long after its plain copy is taken (the memory waits COPY_WINDOW).
        let p3 = vec![6u8, 0, 0, 20, 3, 3, 3, 3];
        assert!(take_plain(
            &mut side,
            &mut engine,
            t0,
            rx(&p3, "10.0.0.1", 255)
        ));
        let late = t0 + crate::session::COPY_WINDOW + Duration::from_millis(1);
        a.send_data(late, &p3).unwrap();
        exchange(late, &mut a, &mut side, |_| false);
        assert!(take_delivery(&mut side, &mut engine, late));
        assert_eq!(imported(&engine), before + 7);
        let json = peer_json(&side.sessions.peer(a_addr).unwrap(), late);
        assert_eq!(json["plain_copies_skipped"], 1);
        assert_eq!(json["data_copies_skipped"], 2);
        assert!(side
            .stats_text(late)
            .contains("copies skipped plain 1 data 2"));
    }

    #[test]
    fn resync_requests_are_spaced() {
        let now = Instant::now();
        let mut side = SessionSide::new(1, 2, 1500, [3, 4]);
        let (a, b) = ("10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        assert!(side.resync_due(now, a));
        assert!(!side.resync_due(now + Duration::from_millis(500), a));
        assert!(side.resync_due(now + Duration::from_millis(500), b));
        assert!(side.resync_due(now + RESYNC_SPACING, a));
        assert_eq!(side.resyncs_spaced, 1);
    }
}
