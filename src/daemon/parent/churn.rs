//! Synthetic traffic on the memory table, for the lab, the tests and the benchmarks:
//! `pfsyncd ctl churn RATE [STATES]` makes the daemon insert, update and delete states
//! of its own at RATE changes per second around a table of STATES states, as traffic
//! through a busy firewall would. It drives the real sync path: the changes are found
//! by polling the table, like pf's, and sent by the engine.
//!
//! Only the states this daemon created are touched, so several nodes churning at once
//! never race on one state (active-active is exercised by `update`, which picks any
//! state).

use std::time::{Duration, Instant};

use crate::table::synth::Synth;
use crate::table::{MemoryTable, TableError};

/// How often the churn runs while active.
pub const TICK: Duration = Duration::from_millis(1);

/// The churn generator.
#[derive(Debug, Default)]
pub struct Churn {
    rate: u32,
    target: usize,
    /// States of ours that may be updated or deleted (creatorid, id).
    keys: Vec<(u32, u64)>,
    /// Changes owed since the last run, in millionths.
    owed_micro: u64,
    last: Option<Instant>,
    /// Inserts, updates and deletes made so far.
    pub made: [u64; 3],
}

impl Churn {
    /// Starts (or, with rate 0, stops) the churn at `rate` changes per second around
    /// `target` states.
    pub fn set(&mut self, now: Instant, rate: u32, target: usize) {
        self.rate = rate;
        self.target = target;
        self.last = (rate > 0).then_some(now);
        self.owed_micro = 0;
    }

    /// Changes per second, 0 when stopped.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// States the churn keeps around.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Remembers a state of ours made elsewhere (`ctl insert`), so the churn may touch it.
    pub fn adopt(&mut self, key: (u32, u64)) {
        self.keys.push(key);
    }

    /// When the churn wants to run next.
    pub fn deadline(&self) -> Option<Instant> {
        self.last.map(|t| t + TICK)
    }

    /// Makes the changes due by `now`. Returns how many were made.
    pub fn run(&mut self, now: Instant, table: &mut MemoryTable, synth: &mut Synth) -> usize {
        let Some(last) = self.last else { return 0 };
        let elapsed = now.saturating_duration_since(last);
        self.last = Some(now);
        self.owed_micro += elapsed.as_micros() as u64 * u64::from(self.rate);
        let due = (self.owed_micro / 1_000_000) as usize;
        self.owed_micro %= 1_000_000;
        // A stall (the machine was busy) is not made up all at once.
        let due = due.min(self.rate as usize / 10 + 1);
        let mut made = 0;
        for _ in 0..due {
            if self.change(now, table, synth) {
                made += 1;
            }
        }
        made
    }

    fn change(&mut self, now: Instant, table: &mut MemoryTable, synth: &mut Synth) -> bool {
        let roll = synth.below(100);
        let short = self.keys.len() < self.target;
        let over = self.keys.len() > self.target;
        if self.keys.is_empty() || (short && roll < 50) || (!over && roll < 15) {
            return self.insert(now, table, synth);
        }
        let at = synth.below(self.keys.len() as u64) as usize;
        let (creatorid, id) = self.keys[at];
        if over || roll >= 85 {
            self.keys.swap_remove(at);
            self.made[2] += 1;
            return table.delete_local(creatorid, id);
        }
        match table.update_local(now, creatorid, id, |s| synth.advance(s)) {
            Ok(_) => {
                self.made[1] += 1;
                true
            }
            Err(TableError::NotFound { .. }) => {
                // Expired or deleted by a peer: forget it.
                self.keys.swap_remove(at);
                false
            }
            Err(_) => false,
        }
    }

    fn insert(&mut self, now: Instant, table: &mut MemoryTable, synth: &mut Synth) -> bool {
        let fresh = fresh_state(synth);
        match table.insert_local(now, fresh) {
            Ok(s) => {
                self.keys.push((s.creatorid, s.id));
                self.made[0] += 1;
                true
            }
            Err(_) => false,
        }
    }
}

/// A new state as traffic creates it: created now, a full timeout ahead.
pub fn fresh_state(synth: &mut Synth) -> crate::state::State {
    crate::state::State {
        age_secs: 0,
        expire_secs: 0,
        ..synth.state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{MemoryConfig, StateTable};

    #[test]
    fn churn_keeps_its_rate_and_size() {
        let t0 = Instant::now();
        let mut table = MemoryTable::new(MemoryConfig::new(7));
        let mut synth = Synth::new(1, 7);
        let mut churn = Churn::default();
        churn.set(t0, 10_000, 500);
        let mut made = 0;
        for ms in 1..=1000u64 {
            made += churn.run(t0 + Duration::from_millis(ms), &mut table, &mut synth);
        }
        // One second at 10 000/s.
        assert!((9_900..=10_000).contains(&made), "{made}");
        assert!(churn.made.iter().all(|&n| n > 0), "{:?}", churn.made);
        let len = table.len();
        assert!((400..=600).contains(&len), "{len}");
        churn.set(t0, 0, 0);
        assert_eq!(
            churn.run(t0 + Duration::from_secs(5), &mut table, &mut synth),
            0
        );
    }
}
