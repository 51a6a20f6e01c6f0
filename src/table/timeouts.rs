//! The timeout table (`set timeout` in pf.conf): seconds per timeout class.

use crate::state::Timeout;

/// Seconds of each timeout class (`PFTM_*`), as a ruleset's `timeout[]` array holds
/// them. `Timeouts::default()` gives pf's defaults.
///
/// The values of 0–19 are the headers' `PFTM_*_VAL` (the same in FreeBSD's
/// `netpfil/pf/pf.h` and OpenBSD's `net/pfvar.h`); `adaptive.start`/`.end` are
/// `PFSTATE_ADAPT_START`/`_END`, state counts rather than seconds. The SCTP classes
/// (FreeBSD only) have no `_VAL` in the headers; their defaults are those pf.conf(5)
/// documents, the same as the TCP classes of the same meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timeouts([u32; Timeout::ALL.len()]);

impl Timeouts {
    /// pf's defaults.
    pub const DEFAULT: Timeouts = Timeouts([
        120,     // tcp.first
        30,      // tcp.opening
        86_400,  // tcp.established
        900,     // tcp.closing
        45,      // tcp.finwait
        90,      // tcp.closed
        60,      // udp.first
        30,      // udp.single
        60,      // udp.multiple
        20,      // icmp.first
        10,      // icmp.error
        60,      // other.first
        30,      // other.single
        60,      // other.multiple
        60,      // frag
        10,      // interval
        60_000,  // adaptive.start (states)
        120_000, // adaptive.end (states)
        0,       // src.track
        30,      // ts.diff
        120,     // sctp.first
        30,      // sctp.opening
        86_400,  // sctp.established
        900,     // sctp.closing
        90,      // sctp.closed
    ]);

    /// The value of a class.
    pub const fn get(&self, class: Timeout) -> u32 {
        self.0[class as usize]
    }

    /// Sets the value of a class.
    pub fn set(&mut self, class: Timeout, secs: u32) {
        self.0[class as usize] = secs;
    }

    /// With one class changed.
    pub const fn with(mut self, class: Timeout, secs: u32) -> Timeouts {
        self.0[class as usize] = secs;
        self
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pf_s() {
        let t = Timeouts::default();
        let expect = [
            (Timeout::TcpFirst, 120),
            (Timeout::TcpOpening, 30),
            (Timeout::TcpEstablished, 86_400),
            (Timeout::TcpClosing, 900),
            (Timeout::TcpFinWait, 45),
            (Timeout::TcpClosed, 90),
            (Timeout::UdpFirst, 60),
            (Timeout::UdpSingle, 30),
            (Timeout::UdpMultiple, 60),
            (Timeout::IcmpFirst, 20),
            (Timeout::IcmpError, 10),
            (Timeout::OtherFirst, 60),
            (Timeout::OtherSingle, 30),
            (Timeout::OtherMultiple, 60),
            (Timeout::Frag, 60),
            (Timeout::Interval, 10),
            (Timeout::SrcNode, 0),
            (Timeout::SctpFirst, 120),
            (Timeout::SctpOpening, 30),
            (Timeout::SctpEstablished, 86_400),
            (Timeout::SctpClosing, 900),
            (Timeout::SctpClosed, 90),
        ];
        for (class, secs) in expect {
            assert_eq!(t.get(class), secs, "{class:?}");
        }
        assert_eq!(t.with(Timeout::UdpFirst, 5).get(Timeout::UdpFirst), 5);
    }
}
