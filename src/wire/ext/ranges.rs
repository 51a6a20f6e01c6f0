//! A list of sequence number ranges, the body of NACK and GONE.
//!
//! ```text
//!  0       2       4                               12      16
//! +-------+-------+-------------------------------+-------+ ...
//! | count |  pad  | start (BE64)                  | n BE32| (count times)
//! +-------+-------+-------------------------------+-------+ ...
//! ```

use super::{check_list, Error, Result};

/// Bytes before the ranges.
pub const HEAD: usize = 4;
/// Bytes per range.
pub const RECORD: usize = 12;
/// The most ranges one frame carries (796 bytes of body): what a receiver asks for in
/// one NACK, and what a sender must look at per NACK, are bounded.
pub const MAX_RANGES: usize = 66;

/// `count` sequence numbers from `start` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqRange {
    pub start: u64,
    pub count: u32,
}

impl SeqRange {
    /// One past the last sequence number of the range.
    pub fn end(&self) -> u64 {
        self.start + u64::from(self.count)
    }
}

/// NACK / GONE body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeqRanges {
    pub ranges: Vec<SeqRange>,
}

impl SeqRanges {
    /// Parses a list; empty ranges, seq 0 and ranges past `u64::MAX` are refused.
    pub fn parse(kind: &'static str, body: &[u8]) -> Result<SeqRanges> {
        if body.len() < HEAD {
            return Err(Error::BadBody {
                kind,
                need: HEAD,
                have: body.len(),
            });
        }
        let count = usize::from(u16::from_be_bytes([body[0], body[1]]));
        check_list(kind, body, HEAD, RECORD, count, MAX_RANGES)?;
        let mut ranges = Vec::with_capacity(count);
        for record in body[HEAD..].chunks_exact(RECORD) {
            let start = u64::from_be_bytes(record[..8].try_into().expect("8 bytes"));
            let n = u32::from_be_bytes(record[8..].try_into().expect("4 bytes"));
            if start == 0 || n == 0 || start.checked_add(u64::from(n)).is_none() {
                return Err(Error::BadValue {
                    kind,
                    field: "range",
                    value: start,
                });
            }
            ranges.push(SeqRange { start, count: n });
        }
        Ok(SeqRanges { ranges })
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        HEAD + RECORD * self.ranges.len()
    }

    /// Writes the list into exactly `buffer_len()` bytes. Panics past [`MAX_RANGES`].
    pub fn emit(&self, out: &mut [u8]) {
        assert!(self.ranges.len() <= MAX_RANGES, "at most MAX_RANGES ranges");
        out[..2].copy_from_slice(&(self.ranges.len() as u16).to_be_bytes());
        out[2..HEAD].fill(0);
        for (range, record) in self.ranges.iter().zip(out[HEAD..].chunks_exact_mut(RECORD)) {
            record[..8].copy_from_slice(&range.start.to_be_bytes());
            record[8..].copy_from_slice(&range.count.to_be_bytes());
        }
    }

    /// Ranges covering sorted, distinct sequence numbers, at most [`MAX_RANGES`] per
    /// list (so several lists for a scattered set).
    pub fn from_sorted(seqs: impl IntoIterator<Item = u64>) -> Vec<SeqRanges> {
        let mut lists = Vec::new();
        let mut current = SeqRanges::default();
        for seq in seqs {
            if let Some(last) = current.ranges.last_mut() {
                if last.end() == seq && last.count < u32::MAX {
                    last.count += 1;
                    continue;
                }
            }
            if current.ranges.len() == MAX_RANGES {
                lists.push(std::mem::take(&mut current));
            }
            current.ranges.push(SeqRange {
                start: seq,
                count: 1,
            });
        }
        if !current.ranges.is_empty() {
            lists.push(current);
        }
        lists
    }
}
