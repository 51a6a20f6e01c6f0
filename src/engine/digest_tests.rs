//! Digest sums kept by the engine (`digest.rs`): equal to a walk over the cache after
//! any history, and two engines joined by sessions over a lossy link converging
//! through digests alone.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::digest::state_version;
use super::tests::{
    advanced, at, engine, engine_with, ifname, import, receive, sref, table_ops, tcp, upd,
};
use super::tests::{PEER, US};
use super::*;
use crate::session::{self, bucket_of, sum, BucketSum, Listed, Sessions, StateIndex};
use crate::wire::Message;

/// xorshift64*: seeded, so every run sees the same history and the same losses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The ids of `creator`'s states the engine holds and would list, found by walking
/// the cache: not deleted, not no-sync, not waiting for their announcement.
fn held(e: &Engine, creator: u32) -> BTreeSet<u64> {
    held_versions(e, creator).iter().map(|l| l.id).collect()
}

/// [`held`] with the version of each, from the state itself (not the entry's field).
fn held_versions(e: &Engine, creator: u32) -> BTreeSet<Listed> {
    e.cache
        .entries()
        .filter(|x| {
            x.key().0 == creator
                && !x.deleted
                && !x.nosync
                && !x.delayed
                && x.filtered != Some(filter::Filtered::MutedUnlisted)
        })
        .map(|x| Listed {
            id: x.key().1,
            version: state_version(&x.state()),
        })
        .collect()
}

/// The sums and every bucket's list agree with a walk over the cache, and the ids
/// listed are those of `states()` (deleted ones left out) minus the uncounted marks.
fn check_sums(e: &Engine, buckets: u16, creators: &[u32], step: usize) {
    for &creator in creators {
        let want = held_versions(e, creator);
        let from_states: BTreeSet<u64> = e
            .states()
            .filter(|s| s.creatorid == creator && !Engine::never_synced(s))
            .map(|s| s.id)
            .collect();
        assert!(
            want.iter().all(|l| from_states.contains(&l.id)),
            "step {step}"
        );
        assert_eq!(
            e.digest(creator, buckets),
            sum(want.iter().map(|l| (l.id, l.version)), buckets),
            "step {step}: sums of creator {creator:#x}"
        );
        let mut listed = BTreeSet::new();
        for bucket in 0..buckets {
            for l in e.ids_in_bucket(creator, buckets, bucket) {
                assert_eq!(bucket_of(l.id, buckets), bucket, "step {step}");
                assert!(listed.insert(l), "step {step}: {l:?} listed twice");
            }
        }
        assert_eq!(listed, want, "step {step}: bucket lists of {creator:#x}");
    }
}

#[test]
fn sums_equal_a_walk_after_random_inserts_updates_deletes_clears_and_loads() {
    let third = 0x0c0c_0c0c;
    let creators = [US, PEER, third];
    for seed in 1..=4u64 {
        let mut rng = Rng(seed * 7919);
        // A power of two (the sessions' 256 is one), whose bucket is a mask of the
        // id's hash, and a count whose bucket is a remainder.
        let buckets: u16 = if seed <= 2 { 16 } else { 12 };
        // Some new local states wait (`sync_delay`) so that the delayed mark comes and
        // goes; ages 0..4 s against a 2 s delay.
        let mut e = engine_with(Dialect::FreeBsd1400, |c| {
            c.sync_delay = Duration::from_secs(2)
        });
        // Half the runs keep sums from the start, half from a loaded table on.
        let early = seed % 2 == 0;
        if early {
            e.enable_digests(buckets);
        }
        for id in 0..50 {
            e.load(at(0), tcp(creators[(id % 3) as usize], 1000 + id));
        }
        if !early {
            e.enable_digests(buckets);
        }
        let mut now_ms = 0;
        for step in 0..3000 {
            now_ms += rng.below(40);
            let now = at(now_ms);
            let creator = creators[rng.below(3) as usize];
            let id = 1 + rng.below(120);
            let mut s = tcp(creator, id);
            s.age_secs = rng.below(4) as u32;
            match rng.below(100) {
                0..=29 => e.handle_local(now, LocalChange::Insert(s)),
                30..=44 => e.handle_local(now, LocalChange::Update(advanced(s, 1 + step as u32))),
                45..=49 => {
                    s.state_flags.insert(crate::state::StateFlags::NOSYNC);
                    e.handle_local(now, LocalChange::Update(s));
                }
                50..=64 => e.handle_local(
                    now,
                    LocalChange::Delete {
                        creatorid: creator,
                        id,
                    },
                ),
                65..=79 if creator != US => receive(
                    &mut e,
                    now,
                    Dialect::FreeBsd1400,
                    &[upd(Dialect::FreeBsd1400, &advanced(s, 2))],
                ),
                80..=87 if creator != US => receive(
                    &mut e,
                    now,
                    Dialect::FreeBsd1400,
                    &[Message::DelC(sref(creator, id))],
                ),
                88 => e.handle_local(
                    now,
                    LocalChange::Clear {
                        ifname: if rng.below(2) == 0 {
                            IfName::EMPTY
                        } else {
                            ifname("em0")
                        },
                    },
                ),
                89 if creator != US => receive(
                    &mut e,
                    now,
                    Dialect::FreeBsd1400,
                    &[Message::Clr(crate::wire::msg::ClrRepr {
                        ifname: IfName::EMPTY,
                        creatorid: creator,
                    })],
                ),
                90..=91 => e.load(now, s),
                92 if creator != US => e.forget_states(now, creator, &[id, id + 1]),
                _ => e.handle_timeout(now),
            }
            while e.poll_transmit().is_some() {}
            let _ = table_ops(&mut e);
            check_sums(&e, buckets, &creators, step);
        }
        // Memory stays with the creators that have states.
        let with_states = creators
            .iter()
            .filter(|c| !held(&e, **c).is_empty())
            .count();
        assert_eq!(
            e.cache.digests().unwrap().creator_count(),
            with_states,
            "seed {seed}"
        );
    }
}

#[test]
fn without_kept_sums_the_index_walks_the_cache_to_the_same_answer() {
    let mut kept = engine(Dialect::FreeBsd1400);
    kept.enable_digests(32);
    let mut walked = engine(Dialect::FreeBsd1400);
    for id in 1..=200 {
        for e in [&mut kept, &mut walked] {
            e.handle_local(at(0), LocalChange::Insert(tcp(US, id)));
            let peer = upd(Dialect::FreeBsd1400, &tcp(PEER, id));
            receive(e, at(0), Dialect::FreeBsd1400, &[peer]);
        }
    }
    for id in (1..=200).step_by(3) {
        for e in [&mut kept, &mut walked] {
            e.handle_local(at(5), LocalChange::Delete { creatorid: US, id });
        }
    }
    for creator in [US, PEER, 77] {
        assert_eq!(kept.digest(creator, 32), walked.digest(creator, 32));
        // Another bucket count than the one kept: walked too.
        assert_eq!(kept.digest(creator, 8), walked.digest(creator, 8));
        for bucket in 0..32 {
            let mut a = kept.ids_in_bucket(creator, 32, bucket);
            let mut b = walked.ids_in_bucket(creator, 32, bucket);
            a.sort_unstable();
            b.sort_unstable();
            assert_eq!(a, b);
        }
    }
    assert_ne!(kept.digest(US, 32), vec![BucketSum::default(); 32]);
}

#[test]
fn forget_never_touches_our_own_young_or_deleted_states() {
    let mut e = engine(Dialect::FreeBsd1400);
    e.enable_digests(16);
    e.handle_local(at(0), LocalChange::Insert(tcp(US, 1)));
    import(&mut e, at(0), &tcp(PEER, 1));
    import(&mut e, at(0), &tcp(PEER, 2));
    // Deleted here, its DEL_C still queued.
    e.handle_local(
        at(0),
        LocalChange::Delete {
            creatorid: PEER,
            id: 2,
        },
    );
    import(&mut e, at(2500), &tcp(PEER, 3));
    let _ = table_ops(&mut e);
    // Our own id: never.
    e.forget_states(at(3000), US, &[1]);
    assert!(e.state(US, 1).is_some());
    // Id 3 came 0.5 s ago: kept; id 2 keeps its DEL_C; id 1 is old: forgotten; id 9
    // we never had.
    e.forget_states(at(3000), PEER, &[1, 2, 3, 9]);
    assert_eq!(
        table_ops(&mut e),
        [TableOp::Delete {
            creatorid: PEER,
            id: 1
        }]
    );
    assert!(e.state(PEER, 1).is_none());
    assert!(e.state(PEER, 3).is_some());
    assert_eq!(e.queued()[Queue::DelC as usize], 1);
    assert_eq!(e.stats().digest_forgotten, 1);
    assert_eq!(e.received_at(PEER, 3), Some(at(2500)));
    assert_eq!(e.received_at(US, 1), None);
    // Once old enough, id 3 goes too.
    e.forget_states(at(3600), PEER, &[3]);
    assert!(e.state(PEER, 3).is_none());
    assert_eq!(e.stats().digest_forgotten, 2);
    assert_eq!(e.digest(PEER, 16), vec![BucketSum::default(); 16]);
}

#[test]
fn announce_sends_full_updates_of_what_we_hold_at_once() {
    let mut e = engine(Dialect::FreeBsd1400);
    e.enable_digests(16);
    for id in 1..=3 {
        e.handle_local(at(0), LocalChange::Insert(tcp(US, id)));
    }
    e.flush(at(0));
    while e.poll_transmit().is_some() {}
    let mut nosync = tcp(US, 3);
    nosync.state_flags.insert(crate::state::StateFlags::NOSYNC);
    e.handle_local(at(10), LocalChange::Update(nosync));
    import(&mut e, at(10), &tcp(PEER, 1));
    while e.poll_transmit().is_some() {}
    // 1 and 2 are ours; 3 is no-sync; 9 we lack; a peer's id 1 is not ours to announce.
    e.announce_states(at(20), &[1, 2, 3, 9]);
    let sent = super::tests::all_messages(&super::tests::transmits(&mut e));
    let ids: Vec<(u32, u64)> = sent
        .iter()
        .filter_map(|m| match m {
            Message::Upd(r) => {
                let s = State::from_record(r).unwrap();
                Some((s.creatorid, s.id))
            }
            _ => None,
        })
        .collect();
    assert_eq!(ids, [(US, 1), (US, 2)], "{sent:?}");
    assert_eq!(e.stats().digest_announced, 2);
}

/// One pfsyncd node: its engine, its sessions, and the digest events applied to the
/// engine as the daemon applies them.
struct Node {
    engine: Engine,
    sessions: Sessions,
}

fn addr(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8 + 1))
}

/// What travels the link: a session frame or a plain pfsync packet of the engine.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Carried {
    Frame(Vec<u8>),
    Pfsync(Vec<u8>),
}

/// Two nodes on a link that loses `loss` of everything (pfsync packets and session
/// frames alike) and delays by 0.1–2.1 ms, as the session tests' link does. The
/// engines' packets go as plain pfsync (not in DATA frames): nothing but the digest
/// exchange recovers what is lost.
struct Pair {
    nodes: Vec<Node>,
    now: Instant,
    rng: Rng,
    loss: f64,
    heap: BinaryHeap<Reverse<(Instant, u64, usize, Carried)>>,
    order: u64,
}

const A: u32 = 100;
const B: u32 = 101;

impl Pair {
    fn new(loss: f64, seed: u64, buckets: u16) -> Pair {
        let nodes = [A, B]
            .iter()
            .enumerate()
            .map(|(i, &creator)| {
                let mut config = session::Config::new(creator, 0xb007_0000 + i as u64);
                config.digest_buckets = buckets;
                let mut engine = Engine::new(Config::new(creator, Dialect::FreeBsd1400));
                engine.enable_digests(buckets);
                Node {
                    engine,
                    sessions: Sessions::new(config),
                }
            })
            .collect();
        Pair {
            nodes,
            now: at(0),
            rng: Rng(seed),
            loss,
            heap: BinaryHeap::new(),
            order: 0,
        }
    }

    fn send(&mut self, from: usize, what: Carried) {
        if self.rng.unit() < self.loss {
            return;
        }
        let delay = Duration::from_micros(100 + self.rng.below(2001));
        self.order += 1;
        self.heap
            .push(Reverse((self.now + delay, self.order, 1 - from, what)));
    }

    fn pump(&mut self) {
        loop {
            let mut any = false;
            for i in 0..2 {
                while let Some(t) = self.nodes[i].engine.poll_transmit() {
                    any = true;
                    self.send(i, Carried::Pfsync(t.payload));
                }
                while let Some((_, bytes)) = self.nodes[i].sessions.poll_transmit() {
                    any = true;
                    self.send(i, Carried::Frame(bytes));
                }
                while self.nodes[i].sessions.poll_deliver().is_some() {}
                while self.nodes[i].engine.poll_table_op().is_some() {}
                while self.nodes[i].engine.poll_event().is_some() {}
                while let Some(event) = self.nodes[i].sessions.poll_event() {
                    any = true;
                    let now = self.now;
                    let Node { engine, sessions } = &mut self.nodes[i];
                    match event {
                        session::Event::DigestWork => sessions.digest_work(now, engine),
                        session::Event::ForgetStates { creator, ids, .. } => {
                            engine.forget_states(now, creator, &ids)
                        }
                        session::Event::AnnounceStates { ids, .. } => {
                            engine.announce_states(now, &ids)
                        }
                        _ => {}
                    }
                }
            }
            if !any {
                return;
            }
        }
    }

    fn run_until(&mut self, until: Instant) {
        loop {
            self.pump();
            let timers = self.nodes.iter().flat_map(|n| {
                [n.engine.poll_timeout(), n.sessions.poll_timeout()]
                    .into_iter()
                    .flatten()
            });
            let arrival = self.heap.peek().map(|Reverse(a)| a.0);
            let Some(next) = timers.chain(arrival).min().filter(|t| *t <= until) else {
                self.now = until;
                return;
            };
            self.now = self.now.max(next);
            while self.heap.peek().is_some_and(|Reverse(a)| a.0 <= self.now) {
                let Reverse((_, _, to, what)) = self.heap.pop().unwrap();
                let from = addr(1 - to);
                match what {
                    Carried::Frame(bytes) => {
                        self.nodes[to].sessions.handle_frame(self.now, from, &bytes)
                    }
                    Carried::Pfsync(payload) => self.nodes[to].engine.handle_packet(
                        self.now,
                        Received {
                            payload: &payload,
                            on_syncdev: true,
                            ttl: 255,
                            ipv6: false,
                            source: Some(from),
                        },
                    ),
                }
            }
            let now = self.now;
            for n in &mut self.nodes {
                if n.engine.poll_timeout().is_some_and(|t| t <= now) {
                    n.engine.handle_timeout(now);
                }
                if n.sessions.poll_timeout().is_some_and(|t| t <= now) {
                    n.sessions.handle_timeout(now);
                }
            }
        }
    }

    /// States of each creator held by the other node but not by it, and held by it
    /// but not by the other node.
    fn differing(&self) -> usize {
        let mut n = 0;
        for (own, other, creator) in [(0, 1, A), (1, 0, B)] {
            let truth = held_versions(&self.nodes[own].engine, creator);
            let copy = held_versions(&self.nodes[other].engine, creator);
            n += truth.symmetric_difference(&copy).count();
        }
        n
    }
}

/// Each node creates, updates and deletes its own states on a lossy link for 10 s;
/// once the churn stops, the copies must equal the creators' sets through digests.
fn engines_converge_through_digests(loss: f64, seed: u64) {
    let mut pair = Pair::new(loss, seed, 64);
    for i in 0..2 {
        let now = pair.now;
        pair.nodes[i].sessions.add_secure_peer(now, addr(1 - i));
    }
    pair.run_until(at(3000));
    assert!(pair.nodes[0].sessions.is_session_peer(addr(1)));
    // Digests stop at nothing in between: the churn runs for 10 s, 1000 changes a node.
    let mut next_id = [1u64, 1u64];
    let mut live: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    let mut rng = Rng(seed ^ 0x5eed);
    for step in 0..2000u64 {
        let i = (step % 2) as usize;
        let creator = [A, B][i];
        let now = at(3000 + step * 5);
        pair.run_until(now);
        let change = match rng.below(10) {
            0..=4 => {
                let id = next_id[i];
                next_id[i] += 1;
                live[i].push(id);
                LocalChange::Insert(tcp(creator, id))
            }
            5..=7 if !live[i].is_empty() => {
                let id = live[i][rng.below(live[i].len() as u64) as usize];
                LocalChange::Update(advanced(tcp(creator, id), 1 + step as u32))
            }
            _ if !live[i].is_empty() => {
                let at = rng.below(live[i].len() as u64) as usize;
                let id = live[i].swap_remove(at);
                LocalChange::Delete {
                    creatorid: creator,
                    id,
                }
            }
            _ => continue,
        };
        pair.nodes[i].engine.handle_local(now, change);
    }
    let stop = at(3000 + 2000 * 5);
    // Let the last batch go out (1 s timer): what is lost now is lost for pfsync.
    pair.run_until(stop + Duration::from_millis(1100));
    let lost = pair.differing();
    assert!(lost > 0, "the link lost nothing: the test proves nothing");
    let mut converged_at = None;
    for s in 1..=30 {
        pair.run_until(stop + Duration::from_secs(1 + s));
        if pair.differing() == 0 {
            converged_at = Some(s);
            break;
        }
    }
    let forgotten: u64 = pair
        .nodes
        .iter()
        .map(|n| n.engine.stats().digest_forgotten)
        .sum();
    let announced: u64 = pair
        .nodes
        .iter()
        .map(|n| n.engine.stats().digest_announced)
        .sum();
    assert!(
        converged_at.is_some(),
        "{} states still differ 30 s after the churn ({lost} at its end)",
        pair.differing()
    );
    assert!(forgotten > 0 && announced > 0, "{forgotten} {announced}");
    // The sums are still those of a walk on both sides.
    for n in &pair.nodes {
        check_sums(&n.engine, 64, &[A, B], 0);
    }
}

#[test]
fn two_engines_converge_through_digests_at_10_percent_loss() {
    engines_converge_through_digests(0.10, 21);
}

#[test]
fn two_engines_converge_through_digests_at_30_percent_loss() {
    engines_converge_through_digests(0.30, 22);
}

/// What two copies of a state agree on once synced: the peers and the timeout class.
fn synced_part(
    s: &State,
) -> (
    crate::state::Peer,
    crate::state::Peer,
    crate::state::Timeout,
) {
    (s.src, s.dst, s.timeout)
}

impl Pair {
    /// Both sessions up, then `state` of node `i`'s creator inserted there and synced.
    fn with_state(seed: u64, i: usize, state: State) -> Pair {
        let mut pair = Pair::new(0.0, seed, 64);
        for n in 0..2 {
            let now = pair.now;
            pair.nodes[n].sessions.add_secure_peer(now, addr(1 - n));
        }
        pair.run_until(at(3000));
        pair.nodes[i]
            .engine
            .handle_local(at(3000), LocalChange::Insert(state));
        pair.run_until(at(6000));
        assert!(pair.copies_agree(state.creatorid, state.id), "synced");
        pair
    }

    /// Whether both nodes hold the state and their copies agree on what pfsync syncs.
    fn copies_agree(&self, creator: u32, id: u64) -> bool {
        let copies: Vec<Option<State>> = self
            .nodes
            .iter()
            .map(|n| n.engine.state(creator, id))
            .collect();
        match (&copies[0], &copies[1]) {
            (Some(a), Some(b)) => synced_part(a) == synced_part(b),
            _ => false,
        }
    }

    /// Node `i` takes `change` from its table; what it sends of it now is lost.
    fn change_lost(&mut self, i: usize, change: LocalChange) {
        let now = self.now;
        self.loss = 1.0;
        self.nodes[i].engine.handle_local(now, change);
        self.nodes[i].engine.flush(now);
        self.pump();
        self.loss = 0.0;
    }

    /// The first whole second (1..=limit) after which the copies agree.
    fn seconds_until_agreed(&mut self, creator: u32, id: u64, limit: u64) -> Option<u64> {
        let start = self.now;
        (1..=limit).find(|s| {
            self.run_until(start + Duration::from_secs(*s));
            self.copies_agree(creator, id)
        })
    }
}

/// Issue 14: an update lost for good (plain pfsync here, nothing resent) leaves the
/// peer's copy stale. Digests of ids alone never see it: the ids agree. With versions,
/// the bucket differs, the IDS list names the id, the peer NEEDs it and the creator's
/// announcement replaces the stale copy, within a few digest rounds (1 s each).
#[test]
fn a_lost_update_is_repaired_by_the_digests_alone() {
    let state = tcp(A, 7);
    let mut pair = Pair::with_state(31, 0, state);
    pair.change_lost(0, LocalChange::Update(advanced(state, 3)));
    assert!(!pair.copies_agree(A, 7), "the update was lost");
    let repaired = pair.seconds_until_agreed(A, 7, 10);
    assert!(
        repaired.is_some_and(|s| s <= 4),
        "the stale copy is still stale after {repaired:?} s"
    );
    assert_eq!(
        synced_part(&pair.nodes[1].engine.state(A, 7).unwrap()),
        synced_part(&advanced(state, 3)),
        "the creator's copy won"
    );
    assert!(pair.nodes[0].engine.stats().digest_announced > 0);
}

/// Issue 14: a peer's copy NEWER than the creator's (traffic through the peer, its
/// update to the creator lost) does not loop: the creator's announcement is stale to
/// the peer, which answers with its copy at once (the kernels' rule, `merge_into`);
/// the creator merges it, the digests agree and the exchange stops.
#[test]
fn a_newer_copy_at_the_peer_converges_and_the_exchange_ends() {
    let state = tcp(A, 9);
    let mut pair = Pair::with_state(32, 0, state);
    let through_b = advanced(state, 5);
    pair.change_lost(1, LocalChange::Update(through_b));
    assert!(!pair.copies_agree(A, 9), "B's update was lost");
    let agreed = pair.seconds_until_agreed(A, 9, 10);
    assert!(
        agreed.is_some_and(|s| s <= 4),
        "still differ after {agreed:?} s"
    );
    assert_eq!(
        synced_part(&pair.nodes[0].engine.state(A, 9).unwrap()),
        synced_part(&through_b),
        "the newer copy won at the creator"
    );
    let traffic = |pair: &Pair| {
        (
            pair.nodes[0].engine.stats().digest_announced,
            pair.nodes[1]
                .sessions
                .peer(addr(0))
                .unwrap()
                .stats
                .ids_needed,
            pair.nodes[1]
                .sessions
                .peer(addr(0))
                .unwrap()
                .stats
                .buckets_differing,
        )
    };
    let settled = traffic(&pair);
    assert!(
        settled.0 > 0 && settled.1 > 0,
        "found by the digests: {settled:?}"
    );
    let later = pair.now + Duration::from_secs(20);
    pair.run_until(later);
    assert_eq!(
        traffic(&pair),
        settled,
        "announcements went on after agreement"
    );
    assert!(pair.copies_agree(A, 9));
}

/// A state kept out of sync by a filter (`filter.rs`) is not asked for at every round:
/// its updates stop, so the copies' versions part; the digests compare the version last
/// synced (frozen at the creator while muted, the creator's at the peer), or the
/// bucket would differ, and the NEED be sent and ignored, once a second for good.
#[test]
fn a_filtered_state_is_not_asked_for_at_every_round() {
    use crate::engine::filter::FilterRule;
    use crate::engine::SyncFilter;
    let tcp_filter = || SyncFilter::new(vec![FilterRule::Protocol(6)]);
    for muted_at in [0, 1] {
        let state = tcp(A, 11);
        let mut pair = Pair::with_state(33 + muted_at as u64, 0, state);
        let now = pair.now;
        pair.nodes[muted_at].engine.set_filter(now, tcp_filter());
        pair.run_until(now + Duration::from_millis(100));
        // Traffic on the creator's side: its copy moves on, unsent (muted at A) or not
        // merged (muted at B).
        let now = pair.now;
        for n in 1..=5 {
            pair.nodes[0].engine.handle_local(
                now + Duration::from_millis(n),
                LocalChange::Update(advanced(state, n as u32)),
            );
        }
        let needed = |pair: &Pair| {
            pair.nodes[1]
                .sessions
                .peer(addr(0))
                .unwrap()
                .stats
                .ids_needed
        };
        pair.run_until(now + Duration::from_secs(3));
        let settled = needed(&pair);
        pair.run_until(now + Duration::from_secs(13));
        assert_eq!(
            needed(&pair),
            settled,
            "muted at node {muted_at}: NEEDs go on, {settled} after 3 s"
        );
        if muted_at == 0 {
            // Unmuted, the creator announces its copy again: in sync, and quiet.
            let now = pair.now;
            pair.nodes[0]
                .engine
                .set_filter(now, SyncFilter::new(Vec::new()));
            pair.run_until(now + Duration::from_secs(3));
            assert!(pair.copies_agree(A, 11), "announced again when unmuted");
            let settled = needed(&pair);
            pair.run_until(now + Duration::from_secs(13));
            assert_eq!(needed(&pair), settled, "unmuted: NEEDs go on");
        }
    }
}

/// A state muted while its last update was still queued (a SIGHUP racing the 1 s
/// batch): the update was made before the filter came, so it goes, and the version the
/// muted state is frozen at is the one its peers' copies hold. Left unsent, the
/// creator's copy stays one version ahead of every peer's for as long as the state
/// lives: its bucket differs at every digest round and the peer's NEED is ignored
/// (announcements skip filtered states), bandwidth every second for nothing.
#[test]
fn a_state_muted_with_its_update_queued_settles() {
    use crate::engine::filter::FilterRule;
    use crate::engine::SyncFilter;
    let state = tcp(A, 12);
    let mut pair = Pair::with_state(35, 0, state);
    let now = pair.now;
    // maxupd 128 (the default): the update waits for the 1 s batch, and the filter
    // comes meanwhile.
    pair.nodes[0]
        .engine
        .handle_local(now, LocalChange::Update(advanced(state, 1)));
    assert!(
        pair.nodes[0].engine.poll_transmit().is_none(),
        "the update is queued, not sent"
    );
    pair.nodes[0]
        .engine
        .set_filter(now, SyncFilter::new(vec![FilterRule::Protocol(6)]));
    let asked = |pair: &Pair| {
        let stats = &pair.nodes[1].sessions.peer(addr(0)).unwrap().stats;
        (
            stats.buckets_differing,
            stats.buckets_asked,
            stats.ids_needed,
        )
    };
    pair.run_until(now + Duration::from_secs(3));
    let settled = asked(&pair);
    pair.run_until(now + Duration::from_secs(13));
    assert_eq!(
        asked(&pair),
        settled,
        "(buckets differing, buckets asked, ids needed) go on every round"
    );
    // Muted, the creator's later traffic stays home, and still nothing is asked.
    let now = pair.now;
    pair.nodes[0]
        .engine
        .handle_local(now, LocalChange::Update(advanced(state, 2)));
    pair.run_until(now + Duration::from_secs(10));
    assert_eq!(asked(&pair), settled, "asked after a muted update");
    assert_eq!(
        synced_part(&pair.nodes[1].engine.state(A, 12).unwrap()),
        synced_part(&advanced(state, 1)),
        "the peer holds the update made before the filter, not the one after"
    );
    assert_eq!(pair.nodes[0].engine.stats().digest_unlisted, 0, "in sync");
}

/// A node restarted with a filter in its configuration finds in its table states the
/// filter matches (`Engine::load` mutes them: the daemon before may have announced
/// them). A peer that never had them must not ask for them at every round.
#[test]
fn states_loaded_muted_that_the_peer_never_had_are_not_asked_for_at_every_round() {
    use crate::engine::filter::FilterRule;
    use crate::engine::SyncFilter;
    let mut pair = Pair::new(0.0, 36, 64);
    let now = pair.now;
    pair.nodes[0]
        .engine
        .set_filter(now, SyncFilter::new(vec![FilterRule::Protocol(6)]));
    pair.nodes[0].engine.load(now, tcp(A, 13));
    for n in 0..2 {
        pair.nodes[n].sessions.add_secure_peer(now, addr(1 - n));
    }
    let asked = |pair: &Pair| {
        let stats = &pair.nodes[1].sessions.peer(addr(0)).unwrap().stats;
        (
            stats.buckets_differing,
            stats.buckets_asked,
            stats.ids_needed,
        )
    };
    pair.run_until(now + Duration::from_secs(6));
    let settled = asked(&pair);
    pair.run_until(now + Duration::from_secs(16));
    assert_eq!(
        asked(&pair),
        settled,
        "(buckets differing, buckets asked, ids needed) go on every round"
    );
    assert!(
        settled.2 > 0,
        "the peer asked for the state once: {settled:?}"
    );
    assert_eq!(pair.nodes[0].engine.stats().digest_unlisted, 1);
    assert!(pair.nodes[1].engine.state(A, 13).is_none(), "never sent");
    assert!(pair.nodes[0].engine.state(A, 13).is_some(), "still ours");
    for n in &pair.nodes {
        check_sums(&n.engine, 64, &[A, B], 0);
    }
}

/// A muted state whose last update before the filter was lost (plain pfsync: nothing
/// resends it) is a version ahead of the peer's copy: the peer asks for it once, and
/// then forgets its copy (the state is no longer listed) instead of asking every round.
#[test]
fn a_muted_state_whose_last_update_was_lost_is_forgotten_not_asked_for_every_round() {
    use crate::engine::filter::FilterRule;
    use crate::engine::SyncFilter;
    let state = tcp(A, 14);
    let mut pair = Pair::with_state(37, 0, state);
    pair.change_lost(0, LocalChange::Update(advanced(state, 1)));
    let now = pair.now;
    pair.nodes[0]
        .engine
        .set_filter(now, SyncFilter::new(vec![FilterRule::Protocol(6)]));
    let asked = |pair: &Pair| {
        let stats = &pair.nodes[1].sessions.peer(addr(0)).unwrap().stats;
        (
            stats.buckets_differing,
            stats.buckets_asked,
            stats.ids_needed,
        )
    };
    pair.run_until(now + Duration::from_secs(6));
    let settled = asked(&pair);
    pair.run_until(now + Duration::from_secs(16));
    assert_eq!(
        asked(&pair),
        settled,
        "(buckets differing, buckets asked, ids needed) go on every round"
    );
    assert!(settled.2 > 0, "the stale copy was found: {settled:?}");
    assert!(
        pair.nodes[1].engine.state(A, 14).is_none(),
        "the peer forgot its stale copy"
    );
    // Unmuted, the creator announces it again, and it is listed again.
    let now = pair.now;
    pair.nodes[0]
        .engine
        .set_filter(now, SyncFilter::new(Vec::new()));
    pair.run_until(now + Duration::from_secs(3));
    assert!(pair.copies_agree(A, 14), "announced again when unmuted");
    for n in &pair.nodes {
        check_sums(&n.engine, 64, &[A, B], 0);
    }
}
