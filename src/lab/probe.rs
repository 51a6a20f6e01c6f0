//! What the benchmarks ask of the lab's daemons through their control sockets: a
//! daemon's status and processes, how much its churn made, and how long one TCP
//! state's change takes to reach a peer (`ctl touch` on one host, `ctl get` polled on
//! the other).

use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Cluster, LabError};

/// A TCP state of one host, changed on request to time its way to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpProbe {
    /// Its creator id, as `ctl` writes it.
    pub creatorid: String,
    /// Its id, as `ctl` writes it.
    pub id: String,
}

/// What became of one change of a [`TcpProbe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// The state is gone from the host that was to change it (a churn deleted it, or
    /// it expired): nothing was sent, another probe should take its place.
    Gone,
    /// The peer showed the new sequence number this long after the change was made.
    Arrived(Duration),
    /// The peer did not show it within the time given (lost, or deleted meanwhile).
    NotSeen,
}

impl Cluster {
    /// Host `i`'s status (`ctl status --json`).
    pub fn status(&self, i: usize) -> Result<Value, LabError> {
        self.ctl_json(i, "status")
    }

    /// The two processes of host `i`'s daemon (privilege separation): parent, engine.
    pub fn daemon_pids(&self, i: usize) -> Result<[u32; 2], LabError> {
        let status = self.status(i)?;
        let engine = status["engine"]["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| LabError::Daemon(format!("host {}: no engine pid", i + 1)))?;
        let parent = self
            .host(i)
            .pid()
            .ok_or_else(|| LabError::Daemon(format!("host {} runs no daemon", i + 1)))?;
        Ok([parent, engine])
    }

    /// The changes host `i`'s churn (`ctl churn`) made so far, of every kind.
    pub fn churn_made(&self, i: usize) -> Result<u64, LabError> {
        let stats = self.ctl_json(i, "stats")?;
        let counts = stats["churn"]
            .as_array()
            .ok_or_else(|| LabError::Daemon(format!("host {}: no churn counts", i + 1)))?;
        Ok(counts.iter().filter_map(Value::as_u64).sum())
    }

    /// `n` new TCP states of host `i` to probe with: states inserted one at a time
    /// (`ctl insert 1`, whose protocol the daemon picks) until `n` of them are TCP.
    pub fn tcp_probes(&self, i: usize, n: usize) -> Result<Vec<TcpProbe>, LabError> {
        let mut out = Vec::new();
        while out.len() < n {
            // "inserted 1: creatorid C ids A to A ..."
            let answer = self.ctl(i, "insert 1")?;
            let words: Vec<&str> = answer.split_whitespace().collect();
            let (Some(creatorid), Some(id)) = (words.get(3), words.get(5)) else {
                return Err(LabError::Daemon(format!(
                    "host {}: insert answered {answer:?}",
                    i + 1
                )));
            };
            let probe = TcpProbe {
                creatorid: creatorid.to_string(),
                id: id.to_string(),
            };
            // Gone already if a churn took it.
            let Ok(text) = self.ctl(i, &probe.get_json()) else {
                continue;
            };
            let state: Value = serde_json::from_str(&text)
                .map_err(|e| LabError::Daemon(format!("host {}: get: bad JSON: {e}", i + 1)))?;
            if state["sync"]["wire"]["proto"] == 6 {
                out.push(probe);
            }
        }
        Ok(out)
    }

    /// Changes `probe` on host `from` (`ctl touch`, which answers once the change is
    /// handed to the engine, and sent if due) and polls host `to` as fast as it answers
    /// (`ctl get`) until its copy has the new sequence number, or `timeout` passes. The
    /// time includes a control round trip per poll.
    pub fn propagate(
        &self,
        from: usize,
        to: usize,
        probe: &TcpProbe,
        timeout: Duration,
    ) -> Result<Propagation, LabError> {
        let touch = format!("touch {} {}", probe.creatorid, probe.id);
        let Ok(answer) = self.ctl(from, &touch) else {
            return Ok(Propagation::Gone);
        };
        let sent = Instant::now();
        // "... seqlo N": the sequence number the change set.
        let seqlo: u64 = answer
            .split_whitespace()
            .last()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                LabError::Daemon(format!("host {}: touch answered {answer:?}", from + 1))
            })?;
        let get = probe.get_json();
        let arrived = wait_until_fast(timeout, || {
            self.ctl(to, &get)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["sync"]["src"]["seqlo"].as_u64() == Some(seqlo))
        });
        Ok(match arrived {
            Some(_) => Propagation::Arrived(sent.elapsed()),
            None => Propagation::NotSeen,
        })
    }
}

impl TcpProbe {
    /// The control request for its copy, as JSON.
    fn get_json(&self) -> String {
        format!("get {} {} --json", self.creatorid, self.id)
    }
}

/// Polls `check` as fast as it returns (no sleep: each poll is a control round trip
/// already) until it returns true or `timeout` passes; returns how long it took, or
/// `None` on timeout. [`wait_until`](super::wait_until) sleeps 20 ms between polls,
/// too coarse for a propagation in milliseconds.
pub fn wait_until_fast(timeout: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check() {
            return Some(start.elapsed());
        }
    }
    None
}

/// The value at fraction `p` (0.5: the median) of `sorted`, nearest rank; NaN if empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_ranks() {
        let sorted: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 51.0);
        assert_eq!(percentile(&sorted, 0.99), 100.0);
        assert_eq!(percentile(&sorted, 1.0), 101.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn the_fast_wait_polls_until_true_or_timeout() {
        let mut polls = 0;
        let took = wait_until_fast(Duration::from_secs(5), || {
            polls += 1;
            polls == 3
        });
        assert!(took.is_some_and(|d| d < Duration::from_secs(5)));
        assert_eq!(polls, 3);
        assert_eq!(wait_until_fast(Duration::from_millis(5), || false), None);
    }
}
