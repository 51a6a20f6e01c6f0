//! Sync filters: classes of states kept out of sync both ways, on top of pf's
//! `no-sync` (what FortiGate's session-sync-filter and conntrackd's Filter offer and
//! no kernel's pfsync does).
//!
//! A state matching any rule is neither announced (no INS, UPD, UPD_C, not in the bulk
//! updates we send) nor imported (a peer's copy is not passed to the table). What was
//! synced before a filter came to match it is never left behind on a peer for good:
//!
//! - a local state announced before: its updates stop, its delete still goes
//!   ([`Filtered::Muted`]), so the peers' copies end when ours does (or when the
//!   digests find a peer's copy is not the one we froze, or that it has none: then we
//!   stop listing the state, [`Filtered::MutedUnlisted`], and the peers forget it);
//! - a local state not announced yet (its INS still queued or delayed): dropped from the
//!   cache as if never seen, nothing goes;
//! - a peer's state imported before: its updates are no longer merged, its delete is
//!   still applied to the table ([`Filtered::Muted`]);
//! - a peer's state first seen while filtered: cached as [`Filtered::Unimported`], only
//!   so that its compressed updates are not answered with update requests (which would
//!   bring its full copy back each time) and its delete is recognised; the table never
//!   sees it.
//!
//! The table never expires an unimported state, so the engine does: once a minute, those
//! whose expiry (as of the peer's last full update) has passed are dropped. One the
//! peer still updates is then asked for again by its next compressed update, and
//! cached again unimported: a request and a full update per expiry period at worst.
//!
//! When a rule goes away, a muted local state is announced again with a full update at
//! once, a state filtered at first sight is announced at its next change (it was never
//! cached), and a peer's unimported state is forgotten, so that its next full update
//! imports it (its next compressed update asks for it).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::cache::Queue;
use super::Engine;
use crate::state::{Protocol, State};
use crate::wire::IfName;

/// One class of states kept out of sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterRule {
    /// States bound to, or created on, this interface (`ifname` or `orig_ifname`:
    /// a floating state is bound to `all` but created on a real interface).
    Interface(IfName),
    /// States of this IP protocol number.
    Protocol(u8),
    /// States with an address in this prefix, on either side, before or after
    /// translation (wire or stack key).
    Network {
        /// The prefix's address (bits past `prefix_len` are ignored).
        addr: IpAddr,
        /// Bits that must match (0 to 32 or 128).
        prefix_len: u8,
    },
    /// TCP, UDP or SCTP states with this port on either side, before or after
    /// translation. (ICMP's "ports" are echo ids, not ports.)
    Port(u16),
}

impl FilterRule {
    /// True if `state` is of this class.
    pub fn matches(&self, state: &State) -> bool {
        let keys = [&state.wire, &state.stack];
        match *self {
            FilterRule::Interface(name) => state.ifname == name || state.orig_ifname == name,
            FilterRule::Protocol(number) => keys.iter().any(|k| k.proto.number() == number),
            FilterRule::Network { addr, prefix_len } => keys
                .iter()
                .flat_map(|k| k.addr)
                .any(|a| in_prefix(a, addr, prefix_len)),
            FilterRule::Port(port) => keys.iter().any(|k| {
                matches!(k.proto, Protocol::Tcp | Protocol::Udp | Protocol::Sctp)
                    && k.port.contains(&port)
            }),
        }
    }
}

/// True if `addr` is in `prefix/prefix_len` (same family only).
fn in_prefix(addr: IpAddr, prefix: IpAddr, prefix_len: u8) -> bool {
    match (addr, prefix) {
        (IpAddr::V4(a), IpAddr::V4(p)) => {
            let len = u32::from(prefix_len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(a) & mask == u32::from(p) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(p)) => {
            let len = u32::from(prefix_len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(a) & mask == u128::from(p) & mask
        }
        _ => false,
    }
}

/// The sync filter: the rules, any of which keeps a state out of sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncFilter {
    rules: Vec<FilterRule>,
}

impl SyncFilter {
    /// A filter of these rules.
    pub fn new(rules: Vec<FilterRule>) -> SyncFilter {
        SyncFilter { rules }
    }

    /// The rules.
    pub fn rules(&self) -> &[FilterRule] {
        &self.rules
    }

    /// True if no rule is set: everything syncs.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// True if `state` matches any rule.
    pub fn matches(&self, state: &State) -> bool {
        self.rules.iter().any(|r| r.matches(state))
    }
}

/// Why a cached state is kept out of sync by the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtered {
    /// Synced before a rule came to match it: its updates are neither sent nor merged,
    /// its delete still goes (ours) or is still applied (a peer's).
    Muted,
    /// A muted state of ours a peer asked for (NEED): its copy there is not the one we
    /// froze (or it has none), and we send none, so the state is left out of our
    /// digests from then on: the peers forget their copies instead of asking for it at
    /// every round (`digest.rs`). Its delete still goes, as a muted state's.
    MutedUnlisted,
    /// A peer's state that matched when it arrived: never imported, cached only to
    /// recognise its compressed updates and its delete.
    Unimported,
}

/// How often unimported peer states are checked for expiry.
pub const UNIMPORTED_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl Engine {
    /// Takes a new sync filter (a SIGHUP). It applies at once to what is cached, as the
    /// module documentation says: states not announced yet that now match are dropped,
    /// announced ones are muted until they end, muted ones no longer matching are
    /// announced again, unimported peer states no longer matching are forgotten.
    pub fn set_filter(&mut self, now: Instant, filter: SyncFilter) {
        if filter == self.config.filter {
            return;
        }
        self.config.filter = filter;
        let slots: Vec<u32> = self.cache.slots().collect();
        let mut to_mute = Vec::new();
        for slot in slots {
            let e = self.cache.get(slot);
            if e.deleted || e.nosync {
                continue;
            }
            let matches = self.config.filter.matches(&e.state());
            match (e.filtered, matches) {
                (None, true) if e.delayed || e.queue == Some(Queue::Ins) => {
                    // Never announced: nothing to take back.
                    self.cache.remove(slot);
                    self.stats.filtered_out += 1;
                }
                (None, true) => to_mute.push(slot),
                (Some(Filtered::Muted | Filtered::MutedUnlisted), false) => {
                    // The peers' copies went stale meanwhile: a full update, at once.
                    self.cache.mark(slot, |e| e.filtered = None);
                    self.enqueue(now, slot, Queue::Upd);
                    self.flush_now = true;
                }
                (Some(Filtered::Unimported), false) => {
                    self.cache.remove(slot);
                }
                _ => {}
            }
        }
        // An update queued before the filter came goes first: a muted state's version
        // is frozen at what its peers last got (digest.rs), and one left unsent would
        // keep its digest bucket differing, and asked for, every round while it lives.
        let pending = |q| matches!(q, Some(Queue::Upd | Queue::UpdC));
        if to_mute
            .iter()
            .any(|&slot| pending(self.cache.get(slot).queue))
        {
            self.flush(now);
        }
        for slot in to_mute {
            self.cache.dequeue(slot);
            self.cache.get_mut(slot).filtered = Some(Filtered::Muted);
        }
        self.end_input(now);
    }

    /// An unimported peer state was cached: make sure a sweep is due.
    pub(super) fn schedule_unimported_sweep(&mut self, now: Instant) {
        if self.unimported_sweep_at.is_none() {
            self.unimported_sweep_at = Some(now + UNIMPORTED_SWEEP_INTERVAL);
        }
    }

    /// Drops the unimported peer states that expired, if a sweep is due; another is
    /// due a minute later while some remain.
    pub(super) fn sweep_unimported(&mut self, now: Instant) {
        if self.unimported_sweep_at.is_none_or(|at| at > now) {
            return;
        }
        self.unimported_sweep_at = None;
        let clock = self.cache.clock(now);
        let mut remaining = false;
        let slots: Vec<u32> = self
            .cache
            .slots()
            .filter(|&s| self.cache.get(s).filtered == Some(Filtered::Unimported))
            .collect();
        for slot in slots {
            if self.cache.get(slot).state_at(clock).expire_secs == 0 {
                self.cache.remove(slot);
            } else {
                remaining = true;
            }
        }
        if remaining {
            self.schedule_unimported_sweep(now);
        }
    }

    /// A local state seen for the first time matches the filter: it is not cached
    /// (like a no-sync state), and counted.
    pub(super) fn filter_out_new(&mut self, state: &State) -> bool {
        let out = self.config.filter.matches(state);
        if out {
            self.stats.filtered_out += 1;
        }
        out
    }

    /// A peer's state matches the filter (or its cached entry is filtered): counted,
    /// and the caller leaves the table alone.
    pub(super) fn filter_in(&mut self, state: &State) -> bool {
        let kept_out = self.config.filter.matches(state);
        if kept_out {
            self.stats.filtered_in += 1;
        }
        kept_out
    }
}

#[cfg(test)]
mod test {
    use std::net::Ipv4Addr;

    use super::super::tests::{
        all_messages, at, engine_with, ifname, import, receive, table_ops, tcp, transmits, upd,
        upd_c, PEER, US,
    };
    use super::super::{Config, LocalChange, TableOp};
    use super::*;
    use crate::state::{PeerLevel, PeerState, Timeout};
    use crate::wire::msg::StateRefRepr;
    use crate::wire::{Dialect, Message};

    const D: Dialect = Dialect::FreeBsd1400;

    fn udp(creatorid: u32, id: u64, port: u16) -> State {
        let mut s = tcp(creatorid, id);
        s.wire.proto = Protocol::Udp;
        s.stack.proto = Protocol::Udp;
        s.wire.port = [40000, port];
        s.stack = s.wire;
        s.src.state = PeerState::Level(PeerLevel::SINGLE);
        s.dst.state = PeerState::Level(PeerLevel::NO_TRAFFIC);
        s.timeout = Timeout::UdpSingle;
        s
    }

    fn filtered(rules: Vec<FilterRule>) -> impl FnOnce(&mut Config) {
        move |c| c.filter = SyncFilter::new(rules)
    }

    /// (action, id) of every state message sent.
    fn sent_ids(e: &mut Engine) -> Vec<(&'static str, u64)> {
        all_messages(&transmits(e))
            .into_iter()
            .filter_map(|m| match m {
                Message::Ins(r) => Some(("ins", State::from_record(&r).unwrap().id)),
                Message::Upd(r) => Some(("upd", State::from_record(&r).unwrap().id)),
                Message::UpdC(u) => Some(("updc", u.id)),
                Message::DelC(d) => Some(("delc", d.id)),
                Message::UpdReq(r) if !r.is_bulk_request() => Some(("req", r.id)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn rules_match_their_class_only() {
        let mut s = udp(US, 1, 53);
        s.orig_ifname = ifname("em2");
        s.ifname = ifname("all");
        assert!(
            FilterRule::Interface(ifname("em2")).matches(&s),
            "created on"
        );
        assert!(FilterRule::Interface(ifname("all")).matches(&s), "bound to");
        assert!(!FilterRule::Interface(ifname("em0")).matches(&s));
        assert!(FilterRule::Protocol(17).matches(&s));
        assert!(!FilterRule::Protocol(6).matches(&s));
        assert!(FilterRule::Port(53).matches(&s));
        assert!(FilterRule::Port(40000).matches(&s));
        assert!(!FilterRule::Port(80).matches(&s));
        let net = |a: [u8; 4], len| FilterRule::Network {
            addr: IpAddr::from(a),
            prefix_len: len,
        };
        assert!(net([10, 0, 0, 0], 24).matches(&s));
        assert!(net([10, 0, 0, 2], 32).matches(&s));
        assert!(!net([10, 0, 1, 0], 24).matches(&s));
        assert!(net([0, 0, 0, 0], 0).matches(&s), "/0 is every IPv4 state");
        let v6 = FilterRule::Network {
            addr: "::".parse().unwrap(),
            prefix_len: 0,
        };
        assert!(!v6.matches(&s), "never across families");
        // After translation: the stack key's address counts too.
        s.stack.addr[0] = IpAddr::V4(Ipv4Addr::new(192, 168, 7, 7));
        assert!(net([192, 168, 7, 0], 24).matches(&s));
        // An ICMP state's "port" is an echo id.
        let mut icmp = s;
        icmp.wire.proto = Protocol::Icmp;
        icmp.stack.proto = Protocol::Icmp;
        assert!(!FilterRule::Port(53).matches(&icmp));
    }

    #[test]
    fn a_filtered_local_state_is_never_announced_and_the_rest_flows() {
        let mut e = engine_with(D, filtered(vec![FilterRule::Protocol(17)]));
        let mut dns = udp(US, 1, 53);
        e.handle_local(at(0), LocalChange::Insert(dns));
        e.handle_local(at(0), LocalChange::Insert(tcp(US, 2)));
        e.flush(at(0));
        assert_eq!(sent_ids(&mut e), [("ins", 2)]);
        dns.packets[0] += 1;
        e.handle_local(at(10), LocalChange::Update(dns));
        e.handle_local(
            at(20),
            LocalChange::Delete {
                creatorid: US,
                id: 1,
            },
        );
        e.flush(at(30));
        assert!(transmits(&mut e).is_empty());
        assert_eq!(e.stats().filtered_out, 2, "the insert and the update");
        assert_eq!(e.state(US, 1), None);
    }

    #[test]
    fn a_peer_state_matching_the_filter_is_not_imported() {
        let net = FilterRule::Network {
            addr: IpAddr::from([10, 9, 0, 0]),
            prefix_len: 16,
        };
        let mut e = engine_with(D, filtered(vec![net]));
        let mut theirs = tcp(PEER, 7);
        theirs.wire.addr[1] = IpAddr::from([10, 9, 1, 1]);
        theirs.stack = theirs.wire;
        receive(&mut e, at(0), D, &[upd(D, &theirs)]);
        assert!(table_ops(&mut e).is_empty(), "not passed to the table");
        assert_eq!(e.stats().filtered_in, 1);
        // Its compressed updates are not answered with requests for it.
        let later = super::super::tests::advanced(theirs, 1);
        receive(&mut e, at(100), D, &[upd_c(&later)]);
        assert!(transmits(&mut e).is_empty(), "no UPD_REQ");
        assert!(table_ops(&mut e).is_empty());
        // Its delete does not reach the table either.
        receive(
            &mut e,
            at(200),
            D,
            &[Message::DelC(StateRefRepr {
                id: 7,
                creatorid: PEER,
            })],
        );
        assert!(table_ops(&mut e).is_empty());
        assert_eq!(e.stats().filtered_in, 3);
        // The rest flows.
        import(&mut e, at(300), &tcp(PEER, 8));
    }

    #[test]
    fn bulk_updates_we_send_leave_filtered_states_out() {
        let mut e = engine_with(D, filtered(vec![FilterRule::Port(53)]));
        e.handle_local(at(0), LocalChange::Insert(udp(US, 1, 53)));
        e.handle_local(at(0), LocalChange::Insert(tcp(US, 2)));
        e.flush(at(0));
        transmits(&mut e);
        receive(
            &mut e,
            at(100),
            D,
            &[Message::UpdReq(StateRefRepr::BULK_REQUEST)],
        );
        let mut packets = transmits(&mut e);
        while let Some(t) = e.poll_timeout() {
            e.handle_timeout(t);
            packets.extend(transmits(&mut e));
        }
        let ids: Vec<u64> = all_messages(&packets)
            .into_iter()
            .filter_map(|m| match m {
                Message::Upd(r) => Some(State::from_record(&r).unwrap().id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, [2]);
    }

    #[test]
    fn a_filter_added_later_mutes_announced_states_and_still_sends_their_delete() {
        let mut e = engine_with(D, |_| {});
        let mut announced = udp(US, 1, 53);
        e.handle_local(at(0), LocalChange::Insert(announced));
        e.flush(at(0));
        assert_eq!(sent_ids(&mut e), [("ins", 1)]);
        // Queued, not sent yet, when the filter comes.
        e.handle_local(at(10), LocalChange::Insert(udp(US, 2, 53)));
        e.set_filter(at(20), SyncFilter::new(vec![FilterRule::Protocol(17)]));
        e.flush(at(20));
        assert!(transmits(&mut e).is_empty(), "the queued INS is dropped");
        assert_eq!(e.state(US, 2), None);
        announced.packets[0] += 1;
        e.handle_local(at(30), LocalChange::Update(announced));
        e.flush(at(30));
        assert!(transmits(&mut e).is_empty(), "updates stop");
        e.handle_local(
            at(40),
            LocalChange::Delete {
                creatorid: US,
                id: 1,
            },
        );
        e.flush(at(40));
        assert_eq!(sent_ids(&mut e), [("delc", 1)], "the delete still goes");
    }

    #[test]
    fn a_filter_removed_announces_muted_states_again_at_once() {
        let mut e = engine_with(D, |_| {});
        e.handle_local(at(0), LocalChange::Insert(udp(US, 1, 53)));
        e.flush(at(0));
        transmits(&mut e);
        e.set_filter(at(10), SyncFilter::new(vec![FilterRule::Port(53)]));
        assert!(transmits(&mut e).is_empty());
        e.set_filter(at(20), SyncFilter::default());
        assert_eq!(sent_ids(&mut e), [("upd", 1)]);
    }

    #[test]
    fn a_peer_state_imported_before_the_filter_keeps_its_delete() {
        let mut e = engine_with(D, |_| {});
        let theirs = tcp(PEER, 5);
        import(&mut e, at(0), &theirs);
        e.set_filter(at(10), SyncFilter::new(vec![FilterRule::Protocol(6)]));
        receive(
            &mut e,
            at(20),
            D,
            &[upd(D, &super::super::tests::advanced(theirs, 1))],
        );
        assert!(table_ops(&mut e).is_empty(), "no longer merged");
        assert_eq!(e.stats().filtered_in, 1);
        receive(
            &mut e,
            at(30),
            D,
            &[Message::DelC(StateRefRepr {
                id: 5,
                creatorid: PEER,
            })],
        );
        assert_eq!(
            table_ops(&mut e),
            [TableOp::Delete {
                creatorid: PEER,
                id: 5
            }],
            "the copy in our table still ends with the peer's"
        );
    }

    #[test]
    fn unimported_peer_states_are_dropped_once_expired() {
        let mut e = engine_with(D, filtered(vec![FilterRule::Protocol(17)]));
        let mut theirs = udp(PEER, 9, 53);
        theirs.expire_secs = 30;
        receive(&mut e, at(0), D, &[upd(D, &theirs)]);
        assert_eq!(e.state_count(), 1, "cached, unimported");
        assert_eq!(e.poll_timeout(), Some(at(60_000)));
        e.handle_timeout(at(60_000));
        assert_eq!(e.state_count(), 0, "expired: dropped");
        assert_eq!(e.poll_timeout(), None, "no sweep without unimported states");
        // A peer that still updates it: asked for again, and cached again.
        receive(&mut e, at(61_000), D, &[upd_c(&theirs)]);
        assert_eq!(sent_ids(&mut e), [("req", 9)]);
        theirs.expire_secs = 300;
        receive(&mut e, at(61_100), D, &[upd(D, &theirs)]);
        assert!(table_ops(&mut e).is_empty());
        e.handle_timeout(at(120_000));
        assert_eq!(e.state_count(), 1, "a full update keeps it");
    }
}
