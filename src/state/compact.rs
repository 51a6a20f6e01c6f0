//! A compact, lossless byte encoding of a [`State`], for holding many states in memory.
//!
//! A `State` is about 400 bytes wide because every field has room for its largest value
//! (IPv6 addresses, a 64-byte tag name, three interface names). A typical state needs a
//! sixth of that: IPv4 addresses, the stack key equal to the wire key, no tag. The
//! engine's cache and the memory table keep their states in this form, and states cross
//! the channel between the daemon's processes in it.
//!
//! The encoding is a lone record of [`super::compact_record`] (the records pfsyncd peers
//! send each other in a bulk), compared with [`State::default`]: one encoder for both,
//! and the smaller one (59 bytes a synthetic state against 86 for this module's earlier
//! encoding, which the memory of a million states in two processes pays twice).
//! [`decode`] checks every length and value and returns `None` on bytes it did not make,
//! never panicking.

use super::compact_record;
use super::State;

/// Appends the encoding of `s` to `out`.
pub fn encode(s: &State, out: &mut Vec<u8>) {
    compact_record::encode_record(s, out);
}

/// The encoding of `s`, in a vector of its own.
pub fn encoded(s: &State) -> Vec<u8> {
    let mut out = Vec::new();
    encode(s, &mut out);
    out
}

/// The state `bytes` encode; `None` for bytes [`encode`] did not make.
pub fn decode(bytes: &[u8]) -> Option<State> {
    compact_record::decode_record(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Scrub, StateFlags};
    use crate::table::synth::Synth;
    use crate::wire::RouteType;
    use crate::wire::{IfName, TagName};

    fn round_trip(s: &State) -> usize {
        let mut out = Vec::new();
        encode(s, &mut out);
        assert_eq!(decode(&out).as_ref(), Some(s), "{s:?}");
        out.len()
    }

    #[test]
    fn synthetic_states_round_trip_and_are_small() {
        let mut synth = Synth::new(42, 0x0102_0304);
        let mut total = 0;
        for _ in 0..10_000 {
            total += round_trip(&synth.state());
        }
        let mean = total / 10_000;
        assert!(mean < 70, "mean {mean} bytes");
    }

    #[test]
    fn rare_fields_round_trip() {
        let mut synth = Synth::new(7, 9);
        let mut s = synth.state();
        s.stack.addr[0] = "2001:db8::9".parse().unwrap();
        s.stack.port = [1, 65535];
        s.rt = RouteType::ReplyTo;
        s.rt_addr = Some("192.0.2.1".parse().unwrap());
        s.rt_ifname = IfName::new("em3").unwrap();
        s.orig_ifname = IfName::new("vtnet0").unwrap();
        s.tagname = TagName::new("a-tag").unwrap();
        // Bytes after a NUL are kept too.
        s.tagname.0[40] = b'x';
        (s.qid, s.pqid, s.dnpipe, s.dnrpipe) = (1, 2, 3, 65535);
        (s.anchor, s.nat_rule, s.rtableid, s.reply_rtableid) =
            (Some(0), Some(u32::MAX), Some(7), None);
        (s.min_ttl, s.set_tos, s.max_mss, s.set_prio) = (1, 2, 1460, [3, 4]);
        s.rule = Some(u32::MAX - 1);
        s.packets = [u64::MAX, 0];
        s.src.scrub = Some(Scrub {
            flags: 1,
            ttl: 64,
            ts_mod: u32::MAX,
        });
        s.state_flags = StateFlags::from_bits(0xffff);
        round_trip(&s);
        round_trip(&State::default());
        // A name that is empty as text (NUL first) with bytes after it is kept whole,
        // alone in its group (found by the privsep fuzz target).
        for name in 0..3 {
            let mut s = State::default();
            match name {
                0 => s.tagname.0[1] = b'k',
                1 => s.orig_ifname.0[15] = 1,
                _ => s.rt_ifname.0[2] = 0xff,
            }
            round_trip(&s);
        }
    }

    #[test]
    fn foreign_bytes_never_panic() {
        let mut synth = Synth::new(3, 3);
        let mut good = Vec::new();
        encode(&synth.state(), &mut good);
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_none(), "cut at {cut}");
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 300)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = decode(&bytes);
        }
    }
}
