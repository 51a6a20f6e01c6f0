//! Delayed sync of short-lived states (`syncdelay N`): a new local state is announced
//! only once it has lived `Config::sync_delay`, so the many flows that end within a
//! second or two (DNS, short HTTP) never cost the sync link anything.
//!
//! A state younger than the delay when first reported is cached but not queued; its
//! announcement waits in a queue of deadlines (its age at report counts: a state
//! reported at 3 s old with a 10 s delay is due 7 s later). Until then:
//! - its updates only refresh the cached copy: the INS, when due, carries the latest;
//! - its delete sends nothing (the peers never heard of it), counted in
//!   `delayed_then_deleted`;
//! - the bulk updates we send leave it out, as do answers to update requests.
//!
//! The delay is a trade: a failover within it loses the states not announced yet, as
//! the kernels lose states whose INS is still in the 1 s batching queue. A new delay
//! (SIGHUP) applies to states first seen after it; waiting ones keep their deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::cache::Queue;
use super::{Engine, Key};
use crate::state::State;

/// Deadlines kept before the queue is checked for those of states gone.
const DELAY_QUEUE_SLACK: usize = 4096;

/// The announcements waiting for their state to be old enough, earliest first.
#[derive(Debug, Default)]
pub(super) struct DelayQueue {
    due: BinaryHeap<Reverse<(Instant, Key)>>,
}

impl DelayQueue {
    /// When the earliest announcement is due.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, _))| *at)
    }

    fn push(&mut self, at: Instant, key: Key) {
        self.due.push(Reverse((at, key)));
    }

    fn len(&self) -> usize {
        self.due.len()
    }

    fn retain(&mut self, mut keep: impl FnMut(Key) -> bool) {
        self.due.retain(|Reverse((_, key))| keep(*key));
    }

    fn pop_due(&mut self, now: Instant) -> Option<Key> {
        match self.due.peek() {
            Some(Reverse((at, _))) if *at <= now => self.due.pop().map(|Reverse((_, k))| k),
            _ => None,
        }
    }
}

impl Engine {
    /// Sets how old a new local state must be before it is announced (zero: at once,
    /// as the kernels do). Applies to states first seen from now on.
    pub fn set_sync_delay(&mut self, delay: Duration) {
        self.config.sync_delay = delay;
    }

    /// How long a new state of age `age_secs` still waits before it is announced;
    /// `None` if it is due now.
    pub(super) fn announce_wait(&self, state: &State) -> Option<Duration> {
        let age = Duration::from_secs(u64::from(state.age_secs));
        let wait = self.config.sync_delay.saturating_sub(age);
        (!wait.is_zero()).then_some(wait)
    }

    /// A new local state, just cached at `slot`, waits `wait` before its INS is queued.
    pub(super) fn delay_announcement(&mut self, now: Instant, slot: u32, wait: Duration) {
        self.cache.mark(slot, |e| e.delayed = true);
        let key = self.cache.get(slot).key();
        self.delays.push(now + wait, key);
        self.stats.delayed += 1;
        // The deadlines of states that ended early stay queued until due: with a long
        // delay and many short flows they would pile up, so once they outnumber the
        // cached states twice over, they go.
        if self.delays.len() > (2 * self.cache.len()).max(DELAY_QUEUE_SLACK) {
            let cache = &self.cache;
            self.delays
                .retain(|key| cache.find(key).is_some_and(|slot| cache.get(slot).delayed));
        }
    }

    /// Queues the INS of every delayed state now due. A state deleted (or cleared, or
    /// filtered) meanwhile has left the cache, or is no longer marked, and is skipped.
    pub(super) fn announce_due(&mut self, now: Instant) {
        while let Some(key) = self.delays.pop_due(now) {
            let Some(slot) = self.cache.find(key) else {
                continue;
            };
            let e = self.cache.get(slot);
            if !e.delayed || e.deleted {
                continue;
            }
            self.cache.mark(slot, |e| e.delayed = false);
            self.stats.delayed_announced += 1;
            self.enqueue(now, slot, Queue::Ins);
        }
    }
}

#[cfg(test)]
mod test {
    use super::super::tests::{all_messages, at, engine_with, receive, tcp, transmits, US};
    use super::super::{Config, LocalChange};
    use super::*;
    use crate::wire::msg::StateRefRepr;
    use crate::wire::{Dialect, Message};

    const D: Dialect = Dialect::FreeBsd1400;

    fn delayed(secs: u64) -> impl FnOnce(&mut Config) {
        move |c| c.sync_delay = Duration::from_secs(secs)
    }

    /// Runs the timers up to `end`; every state message sent, with when (ms after t0).
    fn run_until(e: &mut Engine, end: u64, sent: &mut Vec<(u64, Message)>) {
        while let Some(t) = e.poll_timeout() {
            if t > at(end) {
                break;
            }
            e.handle_timeout(t);
            let ms = t.duration_since(at(0)).as_millis() as u64;
            for m in all_messages(&transmits(e)) {
                sent.push((ms, m));
            }
        }
    }

    #[test]
    fn a_state_deleted_before_the_delay_never_appears_on_the_wire() {
        let mut e = engine_with(D, delayed(2));
        let mut s = tcp(US, 1);
        e.handle_local(at(0), LocalChange::Insert(s));
        s = super::super::tests::advanced(s, 1);
        let mut sent = Vec::new();
        run_until(&mut e, 500, &mut sent);
        e.handle_local(at(500), LocalChange::Update(s));
        // Past the 1 s batching timer, which would have sent an undelayed INS.
        run_until(&mut e, 1500, &mut sent);
        e.handle_local(
            at(1500),
            LocalChange::Delete {
                creatorid: US,
                id: 1,
            },
        );
        run_until(&mut e, 10_000, &mut sent);
        e.flush(at(10_000));
        assert!(sent.is_empty(), "{sent:?}");
        assert!(transmits(&mut e).is_empty());
        assert_eq!(e.stats().delayed, 1);
        assert_eq!(e.stats().delayed_then_deleted, 1);
        assert_eq!(e.stats().delayed_announced, 0);
    }

    #[test]
    fn a_state_older_than_the_delay_appears_once_at_the_delay() {
        let mut e = engine_with(D, delayed(2));
        e.handle_local(at(0), LocalChange::Insert(tcp(US, 1)));
        assert_eq!(e.poll_timeout(), Some(at(2000)), "due when 2 s old");
        let mut sent = Vec::new();
        run_until(&mut e, 1999, &mut sent);
        assert!(sent.is_empty());
        run_until(&mut e, 10_000, &mut sent);
        // Due at 2 s, then batched as any new state is (at most the 1 s timer).
        match &sent[..] {
            [(ms, Message::Ins(r))] => {
                assert!((2000..=3000).contains(ms), "sent at {ms} ms");
                assert!(State::from_record(r).unwrap().age_secs >= 2);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.stats().delayed_announced, 1);
    }

    #[test]
    fn the_age_at_report_counts_towards_the_delay() {
        let mut e = engine_with(D, delayed(10));
        let mut old = tcp(US, 1);
        old.age_secs = 4;
        e.handle_local(at(0), LocalChange::Insert(old));
        assert_eq!(e.poll_timeout(), Some(at(6000)));
        let mut older = tcp(US, 2);
        older.age_secs = 12;
        e.handle_local(at(0), LocalChange::Insert(older));
        assert_eq!(
            e.poll_timeout(),
            Some(at(1000)),
            "old enough: the batching timer"
        );
        assert_eq!(e.stats().delayed, 1);
    }

    #[test]
    fn updates_before_the_delay_collapse_into_the_ins() {
        let mut e = engine_with(D, delayed(2));
        let mut s = tcp(US, 1);
        e.handle_local(at(0), LocalChange::Insert(s));
        for i in 1..=5 {
            s = super::super::tests::advanced(s, 1);
            e.handle_local(at(300 * i), LocalChange::Update(s));
        }
        let mut sent = Vec::new();
        run_until(&mut e, 3000, &mut sent);
        match &sent[..] {
            [(_, Message::Ins(r))] => {
                assert_eq!(State::from_record(r).unwrap().src.seqlo, s.src.seqlo)
            }
            other => panic!("{other:?}"),
        }
        // Announced: its updates flow as usual.
        s = super::super::tests::advanced(s, 1);
        e.handle_local(at(4000), LocalChange::Update(s));
        run_until(&mut e, 6000, &mut sent);
        assert!(matches!(sent[1..], [(_, Message::UpdC(_))]), "{sent:?}");
    }

    #[test]
    fn bulk_updates_and_update_requests_leave_states_not_due_out() {
        let mut e = engine_with(D, delayed(10));
        let mut old = tcp(US, 1);
        old.age_secs = 60;
        e.handle_local(at(0), LocalChange::Insert(old));
        e.handle_local(at(0), LocalChange::Insert(tcp(US, 2)));
        e.flush(at(0));
        transmits(&mut e);
        receive(
            &mut e,
            at(100),
            D,
            &[
                Message::UpdReq(StateRefRepr::BULK_REQUEST),
                Message::UpdReq(StateRefRepr {
                    id: 2,
                    creatorid: US,
                }),
            ],
        );
        let mut sent: Vec<(u64, Message)> = all_messages(&transmits(&mut e))
            .into_iter()
            .map(|m| (100, m))
            .collect();
        run_until(&mut e, 5000, &mut sent);
        let ids: Vec<u64> = sent
            .iter()
            .filter_map(|(_, m)| match m {
                Message::Upd(r) | Message::Ins(r) => Some(State::from_record(r).unwrap().id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, [1], "state 2 is not due before 10 s");
    }

    #[test]
    fn deadlines_of_states_gone_do_not_pile_up() {
        let mut e = engine_with(D, delayed(3600));
        for id in 1..=20_000 {
            let ms = id / 10;
            e.handle_local(at(ms), LocalChange::Insert(tcp(US, id)));
            e.handle_local(at(ms), LocalChange::Delete { creatorid: US, id });
        }
        assert!(
            e.delays.len() <= 4097,
            "{} deadlines queued",
            e.delays.len()
        );
        assert_eq!(e.stats().delayed_then_deleted, 20_000);
        e.handle_local(at(3000), LocalChange::Insert(tcp(US, 50_000)));
        e.handle_timeout(at(3_603_000));
        e.flush(at(3_603_000));
        assert_eq!(e.stats().delayed_announced, 1);
    }

    #[test]
    fn a_delayed_state_a_new_filter_matches_is_never_sent() {
        let mut e = engine_with(D, delayed(2));
        e.handle_local(at(0), LocalChange::Insert(tcp(US, 1)));
        e.set_filter(
            at(500),
            crate::engine::SyncFilter::new(vec![crate::engine::FilterRule::Port(80)]),
        );
        let mut sent = Vec::new();
        run_until(&mut e, 10_000, &mut sent);
        assert!(sent.is_empty(), "{sent:?}");
        assert_eq!(e.state_count(), 0);
    }
}
