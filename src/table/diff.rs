//! Change detection by snapshot and diff, for tables that cannot tell what changed.
//!
//! pf has no state-change notification (kernel-interface.md §0.5): the pf backend lists
//! every state now and then, and compares the list with the one before. This module is
//! that comparison, as pure functions over [`Snapshot`]s, so it can be tested and
//! measured without a kernel.
//!
//! A [`Snapshot`] is, per syncable state, its name and a [`fingerprint`] of the fields a
//! peer would be told about (the two peers, the timeout class, the state flags: what the
//! engine counts as news), sorted by name. [`diff`] walks two snapshots side by side and
//! reports each state that appeared, changed fingerprint, or went away, in name order.
//!
//! **Echoes.** The backend changes the table itself (imports, kill + re-add, kills,
//! clears); the next listing shows those changes, and they must not be reported as local
//! news (see the [table contract](super)). Before the listing, the backend notes what
//! each of its operations should leave behind in an [`Echoes`] set: a state present with
//! a fingerprint (import, update), present with any fingerprint, or absent (kill, clear).
//! [`diff`] compares the new listing not with the old one but with what the engine
//! believes: the old listing with those expectations applied. So our own changes are not
//! reported, a state that changed again after our operation is, and so is a state we
//! imported that went away before the listing (else the engine would keep it forever).
//! Every expectation is forgotten once the diff ran: the listing was taken after the
//! operations, so it shows them or something newer.
//!
//! The fingerprint is a 64-bit hash: a change that leaves it equal (one in 2^64) is
//! missed until the state changes again.
//!
//! [`Differ`] keeps the previous snapshot and the echo set, and turns a listing of the
//! table straight into [`LocalChange`]s.

use std::collections::HashMap;

use crate::engine::LocalChange;
use crate::state::{Peer, State};

use super::{key_of, syncable, Key};

/// A 64-bit digest of the fields a peer is told about: both peers (sequence windows,
/// TCP state, scrub data), the timeout class, the state flags.
pub fn fingerprint(state: &State) -> u64 {
    fn peer_words(p: &Peer) -> [u64; 3] {
        let scrub = p.scrub.map_or(0, |s| {
            1 | u64::from(s.flags) << 8 | u64::from(s.ttl) << 24 | u64::from(s.ts_mod) << 32
        });
        [
            u64::from(p.seqlo) | u64::from(p.seqhi) << 32,
            u64::from(p.seqdiff) | u64::from(p.max_win) << 32 | u64::from(p.mss) << 48,
            u64::from(p.wscale) | u64::from(p.state.number()) << 8 | scrub.rotate_left(16),
        ]
    }
    let mut h = Mix::new();
    for w in peer_words(&state.src) {
        h.word(w);
    }
    for w in peer_words(&state.dst) {
        h.word(w);
    }
    h.word(u64::from(state.timeout.number()) | u64::from(state.state_flags.bits()) << 8);
    h.finish()
}

/// A small word-at-a-time hash (multiply and fold), enough to tell states apart.
struct Mix(u64);

impl Mix {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn new() -> Mix {
        Mix(0x243f_6a88_85a3_08d3)
    }

    fn word(&mut self, w: u64) {
        let x = (self.0 ^ w).wrapping_mul(Self::K);
        self.0 = x ^ (x >> 29);
    }

    fn finish(self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

/// One state in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its name.
    pub key: Key,
    /// Its [`fingerprint`].
    pub fingerprint: u64,
    /// Where it is in the listing the snapshot was built from.
    pub index: u32,
}

/// The syncable states of a table listing, by name, with their fingerprints.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    entries: Vec<Entry>,
}

impl Snapshot {
    /// An empty snapshot (the one before the first listing).
    pub fn new() -> Snapshot {
        Snapshot::default()
    }

    /// The snapshot of a listing. No-sync states are left out; of two states with the
    /// same name (a listing taken while the table changed), the first is kept.
    pub fn build(states: &[State]) -> Snapshot {
        let mut s = Snapshot::new();
        s.rebuild(states);
        s
    }

    /// Builds the snapshot of `states` in place, reusing the memory.
    pub fn rebuild(&mut self, states: &[State]) {
        assert!(
            states.len() <= u32::MAX as usize,
            "a listing of more than 2^32 states"
        );
        self.entries.clear();
        self.entries.reserve(states.len());
        self.entries
            .extend(
                states
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| syncable(s))
                    .map(|(i, s)| Entry {
                        key: key_of(s),
                        fingerprint: fingerprint(s),
                        index: i as u32,
                    }),
            );
        self.sort();
    }

    /// A snapshot of entries made elsewhere (sorted here; of equal names, the lowest index
    /// is kept).
    pub fn from_entries(entries: Vec<Entry>) -> Snapshot {
        let mut s = Snapshot { entries };
        s.sort();
        s
    }

    fn sort(&mut self) {
        // Of equal names, the first listed (lowest index) stays first.
        if !self.entries.is_sorted_by(|a, b| a.key <= b.key) {
            self.entries.sort_unstable_by_key(|e| (e.key, e.index));
        }
        self.entries.dedup_by_key(|e| e.key);
    }

    /// The entries, by name.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// How many states.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of a state.
    pub fn get(&self, key: Key) -> Option<&Entry> {
        self.entries
            .binary_search_by_key(&key, |e| e.key)
            .ok()
            .map(|i| &self.entries[i])
    }
}

/// What one of our own operations should leave behind in the next snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The state, with this fingerprint (an import, an update).
    Present(u64),
    /// The state, whatever its fingerprint (when the backend cannot tell what the kernel
    /// will make of it).
    Exists,
    /// No such state (a kill, a clear).
    Absent,
}

/// Our own recent operations on the table, to recognise in the next diff.
#[derive(Debug, Clone, Default)]
pub struct Echoes {
    expected: HashMap<Key, Expect>,
}

impl Echoes {
    /// An empty set.
    pub fn new() -> Echoes {
        Echoes::default()
    }

    /// We imported or updated `state`: expect it as it is.
    pub fn expect_state(&mut self, state: &State) {
        self.expect(key_of(state), Expect::Present(fingerprint(state)));
    }

    /// We removed a state (a kill, or as part of a clear).
    pub fn expect_absent(&mut self, key: Key) {
        self.expect(key, Expect::Absent);
    }

    /// Notes an expectation; a later one for the same state replaces the earlier.
    pub fn expect(&mut self, key: Key, what: Expect) {
        self.expected.insert(key, what);
    }

    /// What is expected of a state.
    pub fn get(&self, key: Key) -> Option<Expect> {
        self.expected.get(&key).copied()
    }

    /// How many expectations are pending.
    pub fn len(&self) -> usize {
        self.expected.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.expected.is_empty()
    }

    /// Forgets them all.
    pub fn clear(&mut self) {
        self.expected.clear();
    }

    /// Takes the expectation of a state out of the set.
    fn take(&mut self, key: Key) -> Option<Expect> {
        if self.expected.is_empty() {
            None
        } else {
            self.expected.remove(&key)
        }
    }
}

/// What happened to a state between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// It appeared.
    Insert,
    /// Its fingerprint changed.
    Update,
    /// It went away.
    Delete,
}

/// A change found by [`diff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// To which state.
    pub key: Key,
    /// For inserts and updates: where the state is in the new listing.
    pub index: Option<u32>,
}

/// Counts of one [`diff`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// States reported as appeared.
    pub inserts: u64,
    /// States reported as changed.
    pub updates: u64,
    /// States reported as gone.
    pub deletes: u64,
    /// Expectations the listing bore out (our own changes, not reported).
    pub echoes: u64,
    /// Expectations the listing contradicted (the state changed again, or went away,
    /// after our operation): reported.
    pub unmatched: u64,
}

/// What the engine believes of a state: the previous listing with our operations since
/// applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Belief {
    Gone,
    Is(u64),
    Any,
}

impl Belief {
    fn of(old: Option<u64>, expect: Option<Expect>) -> Belief {
        match (expect, old) {
            (Some(Expect::Present(fp)), _) | (None, Some(fp)) => Belief::Is(fp),
            (Some(Expect::Exists), _) => Belief::Any,
            (Some(Expect::Absent), _) | (None, None) => Belief::Gone,
        }
    }

    /// The change to report when the listing shows `now`.
    fn change(self, now: Option<u64>) -> Option<ChangeKind> {
        match (self, now) {
            (Belief::Gone, None) | (Belief::Any, Some(_)) => None,
            (Belief::Is(a), Some(b)) if a == b => None,
            (Belief::Gone, Some(_)) => Some(ChangeKind::Insert),
            (Belief::Is(_), Some(_)) => Some(ChangeKind::Update),
            (Belief::Is(_) | Belief::Any, None) => Some(ChangeKind::Delete),
        }
    }
}

/// Appends to `out` the changes from `old` with our own operations applied (`echoes`)
/// to `new`, then forgets every expectation.
///
/// What is reported is what the engine does not know yet: it knows the previous listing
/// (from the reports before) and what it did itself. So a state we imported or updated
/// counts as present with the expected fingerprint, one we removed as gone, and each is
/// compared with the new listing: a state we imported that is gone again by the listing
/// (expired, killed by an administrator) is reported deleted, one we removed that is
/// there again is reported inserted.
///
/// The changes come in name order, except the deletes of states found in neither
/// listing (imported and gone between the two), which come last, in name order too.
pub fn diff(
    old: &Snapshot,
    new: &Snapshot,
    echoes: &mut Echoes,
    out: &mut Vec<Change>,
) -> DiffStats {
    let mut stats = DiffStats::default();
    let (a, b) = (old.entries(), new.entries());
    let (mut i, mut j) = (0, 0);
    let mut visit = |key: Key, old: Option<u64>, now: Option<&Entry>, echoes: &mut Echoes| {
        let expect = echoes.take(key);
        let kind = Belief::of(old, expect).change(now.map(|e| e.fingerprint));
        if expect.is_some() {
            match kind {
                None => stats.echoes += 1,
                Some(_) => stats.unmatched += 1,
            }
        }
        let Some(kind) = kind else {
            return;
        };
        match kind {
            ChangeKind::Insert => stats.inserts += 1,
            ChangeKind::Update => stats.updates += 1,
            ChangeKind::Delete => stats.deletes += 1,
        }
        out.push(Change {
            kind,
            key,
            index: now.map(|e| e.index),
        });
    };
    while i < a.len() || j < b.len() {
        let order = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) => x.key.cmp(&y.key),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                visit(a[i].key, Some(a[i].fingerprint), None, echoes);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                visit(b[j].key, None, Some(&b[j]), echoes);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                visit(a[i].key, Some(a[i].fingerprint), Some(&b[j]), echoes);
                i += 1;
                j += 1;
            }
        }
    }
    // Expectations of states in neither listing.
    if !echoes.is_empty() {
        let mut rest: Vec<(Key, Expect)> = echoes.expected.drain().collect();
        rest.sort_unstable_by_key(|(k, _)| *k);
        for (key, expect) in rest {
            echoes.expect(key, expect);
            visit(key, None, None, echoes);
        }
    }
    echoes.clear();
    stats
}

/// Snapshot-and-diff change detection for a table that can only be listed: keeps the
/// previous snapshot and our pending [`Echoes`].
#[derive(Debug, Default)]
pub struct Differ {
    previous: Snapshot,
    next: Snapshot,
    echoes: Echoes,
    changes: Vec<Change>,
    last: DiffStats,
}

impl Differ {
    /// A differ that has seen nothing: the first listing is reported as inserts.
    pub fn new() -> Differ {
        Differ::default()
    }

    /// The expectations of our own operations, to fill before the next listing.
    pub fn echoes_mut(&mut self) -> &mut Echoes {
        &mut self.echoes
    }

    /// The previous snapshot.
    pub fn previous(&self) -> &Snapshot {
        &self.previous
    }

    /// The counts of the last [`poll`](Self::poll).
    pub fn last_stats(&self) -> DiffStats {
        self.last
    }

    /// Compares a new listing of the table (taken after every operation noted in the
    /// echoes) with the previous one, and appends the changes to `out` as the engine
    /// takes them: inserts and updates with the listed state, deletes by name.
    pub fn poll(&mut self, states: &[State], out: &mut Vec<LocalChange>) -> DiffStats {
        self.next.rebuild(states);
        self.changes.clear();
        let stats = diff(
            &self.previous,
            &self.next,
            &mut self.echoes,
            &mut self.changes,
        );
        out.reserve(self.changes.len());
        for c in &self.changes {
            let state = c.index.map(|i| states[i as usize]);
            out.push(match (c.kind, state) {
                (ChangeKind::Insert, Some(s)) => LocalChange::Insert(s),
                (ChangeKind::Update, Some(s)) => LocalChange::Update(s),
                _ => LocalChange::Delete {
                    creatorid: c.key.0,
                    id: c.key.1,
                },
            });
        }
        std::mem::swap(&mut self.previous, &mut self.next);
        self.last = stats;
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{PeerState, StateFlags, TcpState, Timeout};
    use crate::table::synth::Synth;

    fn states(n: usize) -> Vec<State> {
        Synth::new(7, 0x1111_2222).states(n)
    }

    fn kinds(changes: &[Change]) -> Vec<(ChangeKind, Key)> {
        changes.iter().map(|c| (c.kind, c.key)).collect()
    }

    #[test]
    fn first_listing_is_all_inserts_in_name_order() {
        let mut list = states(50);
        list.reverse();
        let mut out = Vec::new();
        let stats = diff(
            &Snapshot::new(),
            &Snapshot::build(&list),
            &mut Echoes::new(),
            &mut out,
        );
        assert_eq!(stats.inserts, 50);
        assert_eq!(out.len(), 50);
        assert!(out.windows(2).all(|w| w[0].key < w[1].key));
        for c in &out {
            assert_eq!(c.kind, ChangeKind::Insert);
            assert_eq!(key_of(&list[c.index.unwrap() as usize]), c.key);
        }
    }

    #[test]
    fn inserts_updates_deletes() {
        let old = states(10);
        let mut new = old.clone();
        new[0].src.seqlo = new[0].src.seqlo.wrapping_add(1000);
        new[5].timeout = Timeout::SctpClosed;
        new[6].packets[0] += 1; // not news
        new[7].expire_secs += 1; // not news
        let gone = new.remove(3);
        let extra = Synth::new(8, 0x3333_4444).state();
        new.push(extra);
        let mut out = Vec::new();
        let stats = diff(
            &Snapshot::build(&old),
            &Snapshot::build(&new),
            &mut Echoes::new(),
            &mut out,
        );
        let mut expect = vec![
            (ChangeKind::Delete, key_of(&gone)),
            (ChangeKind::Update, key_of(&old[0])),
            (ChangeKind::Update, key_of(&old[5])),
            (ChangeKind::Insert, key_of(&extra)),
        ];
        expect.sort_by_key(|e| e.1);
        assert_eq!(kinds(&out), expect);
        assert_eq!((stats.inserts, stats.updates, stats.deletes), (1, 2, 1));
        for c in out.iter().filter(|c| c.kind != ChangeKind::Delete) {
            assert_eq!(key_of(&new[c.index.unwrap() as usize]), c.key);
        }
    }

    #[test]
    fn every_news_field_changes_the_fingerprint() {
        let base = states(1)[0];
        let f = fingerprint(&base);
        let mut variants = Vec::new();
        let mut v = base;
        v.src.seqhi ^= 1;
        variants.push(v);
        let mut v = base;
        v.dst.max_win ^= 1;
        variants.push(v);
        let mut v = base;
        v.dst.state = PeerState::Tcp(TcpState::TimeWait);
        variants.push(v);
        let mut v = base;
        v.src.scrub = Some(Default::default());
        variants.push(v);
        let mut v = base;
        v.state_flags.insert(StateFlags::SLOPPY);
        variants.push(v);
        let mut v = base;
        v.timeout = Timeout::UdpSingle;
        variants.push(v);
        for v in variants {
            assert_ne!(fingerprint(&v), f, "{v:?}");
        }
        let mut same = base;
        same.packets = [9, 9];
        same.bytes = [99, 99];
        same.age_secs += 5;
        same.expire_secs = 1;
        assert_eq!(fingerprint(&same), f);
    }

    #[test]
    fn echoes_are_not_reported() {
        let old = states(6);
        let mut new = old.clone();
        let mut echoes = Echoes::new();
        // Our import appears as expected.
        let imported = Synth::new(9, 0x5555_6666).state();
        new.push(imported);
        echoes.expect_state(&imported);
        // Our update (kill + re-add) shows the merged peers.
        new[1].dst.seqlo = new[1].dst.seqlo.wrapping_add(7);
        echoes.expect_state(&new[1]);
        // Our kill and a clear.
        new.retain(|s| key_of(s) != key_of(&old[2]) && key_of(s) != key_of(&old[3]));
        echoes.expect_absent(key_of(&old[2]));
        echoes.expect_absent(key_of(&old[3]));
        // Our update, but traffic changed the state again before the listing: news.
        let mut ours = new[3];
        ours.src.seqlo = ours.src.seqlo.wrapping_add(1);
        echoes.expect_state(&ours);
        new[3].src.seqlo = new[3].src.seqlo.wrapping_add(2);
        // An import the kernel normalised: expected to exist, whatever it looks like.
        let mut normalised = Synth::new(10, 0x7777_8888).state();
        echoes.expect(key_of(&normalised), Expect::Exists);
        normalised.state_flags = StateFlags::EMPTY;
        new.push(normalised);
        // Expected but never seen: forgotten after the diff.
        echoes.expect_absent((1, 1));
        let mut out = Vec::new();
        let stats = diff(
            &Snapshot::build(&old),
            &Snapshot::build(&new),
            &mut echoes,
            &mut out,
        );
        assert_eq!(kinds(&out), vec![(ChangeKind::Update, key_of(&new[3]))]);
        assert_eq!(stats.echoes, 6);
        assert_eq!(stats.unmatched, 1);
        assert_eq!((stats.inserts, stats.updates, stats.deletes), (0, 1, 0));
        assert!(echoes.is_empty());
    }

    #[test]
    fn an_echo_that_does_not_match_is_news() {
        let old = states(3);
        let mut echoes = Echoes::new();
        // We killed it, but it is there (changed): new to the engine, which dropped it.
        let mut new = old.clone();
        new[0].dst.seqhi ^= 0xffff;
        echoes.expect_absent(key_of(&old[0]));
        // We expected a state that a local delete then removed: a delete.
        echoes.expect_state(&old[1]);
        new.remove(1);
        let mut out = Vec::new();
        diff(
            &Snapshot::build(&old),
            &Snapshot::build(&new),
            &mut echoes,
            &mut out,
        );
        let mut expect = vec![
            (ChangeKind::Insert, key_of(&old[0])),
            (ChangeKind::Delete, key_of(&old[1])),
        ];
        expect.sort_by_key(|e| e.1);
        assert_eq!(kinds(&out), expect);
    }

    #[test]
    fn an_import_gone_before_the_listing_is_a_delete() {
        let old = states(3);
        let mut echoes = Echoes::new();
        let mut synth = Synth::new(12, 0x4242);
        let (a, b) = (synth.state(), synth.state());
        echoes.expect_state(&b);
        echoes.expect(key_of(&a), Expect::Exists);
        // A kill of a state the listing never showed: nothing to say.
        echoes.expect_absent((0x4242, 99));
        let mut out = Vec::new();
        let stats = diff(
            &Snapshot::build(&old),
            &Snapshot::build(&old),
            &mut echoes,
            &mut out,
        );
        assert_eq!(
            kinds(&out),
            vec![
                (ChangeKind::Delete, key_of(&a)),
                (ChangeKind::Delete, key_of(&b))
            ]
        );
        assert_eq!((stats.deletes, stats.unmatched, stats.echoes), (2, 2, 1));
        assert!(echoes.is_empty());
    }

    #[test]
    fn no_sync_states_are_never_reported() {
        let mut old = states(4);
        old[0].state_flags.insert(StateFlags::NOSYNC);
        let mut new = old.clone();
        new[0].src.seqlo ^= 1; // a no-sync state changing
        new[1].state_flags.insert(StateFlags::NOSYNC); // becoming no-sync: gone for peers
        let mut pfsync = Synth::new(11, 0x99).state();
        pfsync.wire.proto = crate::state::Protocol::Other(crate::engine::IPPROTO_PFSYNC);
        new.push(pfsync);
        let snap = Snapshot::build(&new);
        assert_eq!(snap.len(), 2);
        assert!(snap.get(key_of(&new[0])).is_none());
        let mut out = Vec::new();
        diff(&Snapshot::build(&old), &snap, &mut Echoes::new(), &mut out);
        assert_eq!(kinds(&out), vec![(ChangeKind::Delete, key_of(&old[1]))]);
    }

    #[test]
    fn duplicate_names_keep_the_first() {
        let s = states(2);
        let mut dup = s[0];
        dup.src.seqlo ^= 1;
        let snap = Snapshot::build(&[s[0], s[1], dup]);
        assert_eq!(snap.len(), 2);
        assert_eq!(snap.get(key_of(&s[0])).unwrap().index, 0);
    }

    #[test]
    fn differ_turns_listings_into_local_changes() {
        let mut d = Differ::new();
        let mut list = states(5);
        let mut out = Vec::new();
        d.poll(&list, &mut out);
        assert_eq!(out.len(), 5);
        assert!(out.iter().all(|c| matches!(c, LocalChange::Insert(_))));
        out.clear();
        assert_eq!(d.poll(&list, &mut out), DiffStats::default());
        assert!(out.is_empty());
        let gone = list.remove(0);
        list[0].dst.seqlo ^= 4;
        d.echoes_mut().expect_state(&list[1]);
        d.poll(&list, &mut out);
        let mut expect = vec![
            LocalChange::Delete {
                creatorid: gone.creatorid,
                id: gone.id,
            },
            LocalChange::Update(list[0]),
        ];
        if key_of(&list[0]) < key_of(&gone) {
            expect.swap(0, 1);
        }
        assert_eq!(out, expect);
        assert_eq!(d.previous().len(), 4);
        assert_eq!(d.last_stats().echoes, 1);
    }
}
