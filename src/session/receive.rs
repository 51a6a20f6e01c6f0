//! One peer's DATA stream as we receive it: which sequence numbers arrived, which are
//! missing and being asked for, and when to give up on them.
//!
//! Bounded: at most `window` sequence numbers are tracked above the cumulative mark
//! (received out of order or missing); a number further ahead moves the mark up and
//! gives up on what it skips (a resync then covers it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A missing sequence number being asked for.
#[derive(Debug, Clone, Copy)]
struct Missing {
    /// NACKs sent for it so far.
    tries: u32,
    /// When to ask (again).
    next_at: Instant,
    /// NACKs sent for it, counted or not (the back-off grows with them).
    asks: u32,
    /// When it was last asked for.
    asked_at: Option<Instant>,
}

/// What became of an arriving DATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// New: deliver it.
    New,
    /// Received (or given up) before: drop it.
    Duplicate,
}

/// The receive side of one peer's stream.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    /// Every seq up to this one was received or given up.
    cumulative: u64,
    /// The highest seq known to exist (from a DATA, an ACK or a HELLO).
    highest: u64,
    /// Received seqs above `cumulative`.
    above: BTreeSet<u64>,
    /// Seqs in (`cumulative`, `highest`] not received, being asked for.
    missing: BTreeMap<u64, Missing>,
    /// The earliest `next_at` of `missing`, if any.
    nack_due: Option<Instant>,
}

/// What changed in the stream because of one input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Change {
    /// Newly found missing seqs.
    pub gaps: u64,
    /// Seqs given up without being received (a resync must cover them).
    pub given_up: u64,
}

impl Stream {
    /// A stream whose next DATA will be `first`.
    pub fn new(first: u64) -> Stream {
        let before = first.saturating_sub(1);
        Stream {
            cumulative: before,
            highest: before,
            above: BTreeSet::new(),
            missing: BTreeMap::new(),
            nack_due: None,
        }
    }

    /// Every seq up to this one was received or given up.
    pub fn cumulative(&self) -> u64 {
        self.cumulative
    }

    /// Seqs missing now.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// A DATA with `seq` arrived.
    pub fn on_data(&mut self, now: Instant, seq: u64, window: u64) -> (Arrival, Change) {
        if seq <= self.cumulative || self.above.contains(&seq) {
            return (Arrival::Duplicate, Change::default());
        }
        // The common case, a stream in order with nothing missing: the mark moves by
        // one, without a round through the sets (a node allocated and freed per DATA).
        if seq == self.cumulative + 1 && self.highest == self.cumulative && window > 0 {
            debug_assert!(self.above.is_empty() && self.missing.is_empty());
            self.cumulative = seq;
            self.highest = seq;
            self.nack_due = None;
            return (Arrival::New, Change::default());
        }
        let mut change = self.raise_highest(now, seq, window, true);
        if seq > self.cumulative {
            self.missing.remove(&seq);
            self.above.insert(seq);
            change.given_up += self.advance();
        }
        (Arrival::New, change)
    }

    /// The sender says it sent up to `highest` (ACK, HELLO): what we have not seen of
    /// it is missing (tail loss).
    pub fn on_highest(&mut self, now: Instant, highest: u64, window: u64) -> Change {
        if highest <= self.highest {
            return Change::default();
        }
        let mut change = self.raise_highest(now, highest, window, false);
        change.given_up += self.advance();
        change
    }

    /// The sender no longer holds these seqs: stop asking, close the gap. Returns how
    /// many missing seqs that gave up.
    pub fn on_gone(&mut self, start: u64, end: u64) -> u64 {
        let gone: Vec<u64> = self.missing.range(start..end).map(|(s, _)| *s).collect();
        for seq in &gone {
            self.missing.remove(seq);
            self.above.insert(*seq);
        }
        let given_up = gone.len() as u64;
        self.advance();
        given_up
    }

    /// The seqs to ask for now, each counted as one more try; seqs asked `max_tries`
    /// times already are given up instead. Returns (to ask, given up). `heard` is when
    /// a frame of the peer last came in.
    ///
    /// The pause after each try doubles from `interval` up to `max_interval`: a peer
    /// busy importing a bulk, or a loaded machine, answers late, and a late answer is
    /// no loss; giving up starts a resync of the whole table, under the same loss. An
    /// ask after which nothing at all came from the peer is not counted as a try: our
    /// own input was stalled (the parent busy), not the answer lost.
    pub fn due_nacks(
        &mut self,
        now: Instant,
        interval: Duration,
        max_interval: Duration,
        max_tries: u32,
        heard: Option<Instant>,
    ) -> (Vec<u64>, u64) {
        if self.nack_due.is_none_or(|due| due > now) {
            return (Vec::new(), 0);
        }
        let mut ask = Vec::new();
        let mut given_up = Vec::new();
        for (seq, missing) in self.missing.iter_mut() {
            if missing.next_at > now {
                continue;
            }
            let heard_since = missing
                .asked_at
                .is_none_or(|asked| heard.is_some_and(|h| h > asked));
            if missing.tries >= max_tries && heard_since {
                given_up.push(*seq);
            } else {
                let pause = interval
                    .saturating_mul(1u32 << missing.asks.min(16))
                    .min(max_interval);
                if heard_since {
                    missing.tries += 1;
                }
                missing.asks += 1;
                missing.next_at = now + pause;
                missing.asked_at = Some(now);
                ask.push(*seq);
            }
        }
        for seq in &given_up {
            self.missing.remove(seq);
            self.above.insert(*seq);
        }
        self.advance();
        self.nack_due = self.missing.values().map(|m| m.next_at).min();
        (ask, given_up.len() as u64)
    }

    /// When [`Stream::due_nacks`] has work.
    pub fn nack_due(&self) -> Option<Instant> {
        self.nack_due
    }

    /// Moves `highest` up to `seq` (exclusive of `seq` itself when it arrived), marking
    /// what lies between missing, and keeps the tracked span within `window`.
    fn raise_highest(&mut self, now: Instant, seq: u64, window: u64, arrived: bool) -> Change {
        let mut change = Change::default();
        // Past the window: give up on everything more than `window` below `seq`.
        let floor = seq.saturating_sub(window);
        if floor > self.cumulative {
            let received = self.above.range(..=floor).count() as u64;
            let skipped = floor - self.cumulative;
            change.given_up += skipped - received;
            self.above = self.above.split_off(&(floor + 1));
            self.missing = self.missing.split_off(&(floor + 1));
            self.cumulative = floor;
            self.highest = self.highest.max(floor);
        }
        let last_missing = if arrived { seq - 1 } else { seq };
        let first_missing = self.highest.saturating_add(1);
        for missing in first_missing..=last_missing {
            self.missing.insert(
                missing,
                Missing {
                    tries: 0,
                    asks: 0,
                    next_at: now,
                    asked_at: None,
                },
            );
            change.gaps += 1;
        }
        if change.gaps > 0 {
            self.nack_due = Some(now);
        }
        self.highest = self.highest.max(seq);
        change
    }

    /// Moves the cumulative mark over what arrived in order. Returns 0: given-up seqs
    /// are counted where they are given up.
    fn advance(&mut self) -> u64 {
        while let Some(next) = self.cumulative.checked_add(1) {
            if self.above.first() != Some(&next) {
                break;
            }
            self.above.pop_first();
            self.cumulative = next;
        }
        if self.missing.is_empty() {
            self.nack_due = None;
        }
        0
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn t(ms: u64) -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    const IVAL: Duration = Duration::from_millis(20);

    #[test]
    fn in_order_then_duplicate() {
        let mut s = Stream::new(1);
        assert_eq!(s.on_data(t(0), 1, 100).0, Arrival::New);
        assert_eq!(s.on_data(t(0), 2, 100).0, Arrival::New);
        assert_eq!(s.on_data(t(0), 2, 100).0, Arrival::Duplicate);
        assert_eq!(s.cumulative(), 2);
        assert_eq!(s.missing(), 0);
    }

    #[test]
    fn gap_is_asked_at_once_then_retried_then_given_up() {
        let mut s = Stream::new(1);
        let (_, c) = s.on_data(t(0), 3, 100);
        assert_eq!(c.gaps, 2);
        assert_eq!(
            s.due_nacks(t(0), IVAL, IVAL, 2, Some(t(0))),
            (vec![1, 2], 0)
        );
        assert_eq!(
            s.due_nacks(t(10), IVAL, IVAL, 2, Some(t(10))),
            (vec![], 0),
            "not due yet"
        );
        assert_eq!(s.on_data(t(15), 1, 100).0, Arrival::New);
        assert_eq!(s.due_nacks(t(20), IVAL, IVAL, 2, Some(t(20))), (vec![2], 0));
        assert_eq!(
            s.due_nacks(t(40), IVAL, IVAL, 2, Some(t(40))),
            (vec![], 1),
            "two tries, then given up"
        );
        assert_eq!(s.cumulative(), 3);
        assert_eq!(s.nack_due(), None);
    }

    #[test]
    fn heartbeat_finds_tail_loss() {
        let mut s = Stream::new(10);
        assert_eq!(s.on_data(t(0), 10, 100).0, Arrival::New);
        let c = s.on_highest(t(5), 11, 100);
        assert_eq!(c.gaps, 1);
        assert_eq!(s.due_nacks(t(5), IVAL, IVAL, 3, Some(t(5))).0, vec![11]);
    }

    #[test]
    fn the_last_sequence_number_does_not_overflow() {
        let mut s = Stream::new(u64::MAX - 1);
        assert_eq!(s.on_data(t(0), u64::MAX, 8).0, Arrival::New);
        assert_eq!(s.on_data(t(0), u64::MAX - 1, 8).0, Arrival::New);
        assert_eq!(s.cumulative(), u64::MAX);
        assert_eq!(s.on_data(t(0), u64::MAX, 8).0, Arrival::Duplicate);
        assert_eq!(s.on_highest(t(0), u64::MAX, 8), Change::default());
    }

    #[test]
    fn far_jump_is_bounded_by_the_window() {
        let mut s = Stream::new(1);
        let c = s.on_highest(t(0), u64::MAX / 2, 64);
        assert_eq!(c.gaps, 64);
        assert!(c.given_up > 0);
        assert_eq!(s.missing(), 64);
        let c = s.on_gone(1, u64::MAX);
        assert_eq!(c, 64);
        assert_eq!(s.missing(), 0);
        assert_eq!(s.cumulative(), u64::MAX / 2);
    }
}
