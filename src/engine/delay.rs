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
        let e = self.cache.get_mut(slot);
        e.delayed = true;
        let key = e.key();
        self.delays.push(now + wait, key);
        self.stats.delayed += 1;
    }

    /// Queues the INS of every delayed state now due. A state deleted (or cleared, or
    /// filtered) meanwhile has left the cache, or is no longer marked, and is skipped.
    pub(super) fn announce_due(&mut self, now: Instant) {
        while let Some(key) = self.delays.pop_due(now) {
            let Some(slot) = self.cache.find(key) else {
                continue;
            };
            let e = self.cache.get_mut(slot);
            if !e.delayed || e.deleted {
                continue;
            }
            e.delayed = false;
            self.stats.delayed_announced += 1;
            self.enqueue(now, slot, Queue::Ins);
        }
    }
}
