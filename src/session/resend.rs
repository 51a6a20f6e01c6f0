//! The resend buffer: the DATA frames we sent lately, by sequence number, so a NACK can
//! be answered with the same frame. Bounded in bytes; the oldest frames go first.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// DATA frames by seq; the seqs held are contiguous (every DATA is pushed). A frame is
/// shared with the transmit queue it was also put on (and the resends of it), never
/// copied.
#[derive(Debug, Clone)]
pub(crate) struct ResendBuffer {
    frames: VecDeque<(u64, Arc<Vec<u8>>)>,
    bytes: usize,
    limit: usize,
}

impl ResendBuffer {
    pub fn new(limit: usize) -> ResendBuffer {
        ResendBuffer {
            frames: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    /// Keeps `frame` under `seq`, dropping the oldest frames to stay under the limit.
    pub fn push(&mut self, seq: u64, frame: Arc<Vec<u8>>) {
        self.bytes += frame.len();
        self.frames.push_back((seq, frame));
        while self.bytes > self.limit {
            let Some((_, old)) = self.frames.pop_front() else {
                break;
            };
            self.bytes -= old.len();
        }
    }

    /// The lowest seq held, or `next` when nothing is.
    pub fn oldest(&self, next: u64) -> u64 {
        self.frames.front().map_or(next, |(seq, _)| *seq)
    }

    /// The frame sent under `seq`, if still held.
    pub fn get(&self, seq: u64) -> Option<&Arc<Vec<u8>>> {
        let (first, _) = self.frames.front()?;
        let index = usize::try_from(seq.checked_sub(*first)?).ok()?;
        self.frames.get(index).map(|(_, f)| f)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A token bucket of resent frames: a peer flooding NACKs gets at most `burst` frames
/// at once and `rate` a second, whatever it asks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResendBudget {
    tokens: f64,
    at: Option<Instant>,
}

impl ResendBudget {
    pub fn new() -> ResendBudget {
        ResendBudget {
            tokens: 0.0,
            at: None,
        }
    }

    /// Takes one token if there is one, after refilling for the time passed.
    pub fn take(&mut self, now: Instant, burst: u32, rate: u32) -> bool {
        let refill = match self.at {
            None => f64::from(burst),
            Some(at) => now.saturating_duration_since(at).as_secs_f64() * f64::from(rate),
        };
        self.tokens = (self.tokens + refill).min(f64::from(burst));
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn oldest_frames_go_past_the_limit() {
        let mut b = ResendBuffer::new(25);
        for seq in 1..=5 {
            b.push(seq, Arc::new(vec![seq as u8; 10]));
        }
        assert_eq!(b.bytes(), 20);
        assert_eq!(b.oldest(6), 4);
        assert_eq!(b.get(3).map(|f| f.as_slice()), None);
        assert_eq!(b.get(5).map(|f| f.as_slice()), Some(&[5u8; 10][..]));
        assert_eq!(b.get(6).map(|f| f.as_slice()), None);
        assert_eq!(b.get(0).map(|f| f.as_slice()), None);
    }

    #[test]
    fn budget_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut budget = ResendBudget::new();
        let taken = (0..10).filter(|_| budget.take(t0, 4, 100)).count();
        assert_eq!(taken, 4);
        let later = t0 + std::time::Duration::from_millis(20);
        let taken = (0..10).filter(|_| budget.take(later, 4, 100)).count();
        assert_eq!(taken, 2);
    }
}
