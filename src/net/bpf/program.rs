//! The classic BPF filter the receive path installs: only pfsync packets that can have
//! come from the sync link pass the kernel, so the daemon is woken for nothing else.
//!
//! A packet passes when it is IPv4 with protocol 240 and TTL 255, or IPv6 with next
//! header 240 (no extension headers) and hop limit 255; it passes whole. The TTL is
//! checked here too (the engine checks it again and counts `badttl`): a packet that
//! crossed a router is not a peer's, and the kernel need not copy it to us. The
//! program is classic BPF, the same instruction set on the BSDs' bpf(4) and Linux's
//! SO_ATTACH_FILTER, which is how it is tested on Linux (`tests/bpf_filter.rs`).

/// One classic BPF instruction (`struct bpf_insn` / `struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Operation.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

// Instruction classes, sizes, modes and operations (bpf(4)).
/// Load into A.
pub const BPF_LD: u16 = 0x00;
/// ALU operation on A.
pub const BPF_ALU: u16 = 0x04;
/// Jump.
pub const BPF_JMP: u16 = 0x05;
/// Return.
pub const BPF_RET: u16 = 0x06;
/// 32-bit word.
pub const BPF_W: u16 = 0x00;
/// 16-bit half word.
pub const BPF_H: u16 = 0x08;
/// Byte.
pub const BPF_B: u16 = 0x10;
/// Absolute offset into the packet.
pub const BPF_ABS: u16 = 0x20;
/// AND.
pub const BPF_AND: u16 = 0x50;
/// Jump if equal.
pub const BPF_JEQ: u16 = 0x10;
/// Operand is the constant `k`.
pub const BPF_K: u16 = 0x00;

/// Link types the receive path knows (`DLT_*`, numbered per OS: see [`LinkType::dlt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// Ethernet (`DLT_EN10MB`), optionally with one 802.1Q tag.
    Ethernet,
    /// A 4-byte address family in host byte order (`DLT_NULL`).
    Null,
    /// A 4-byte address family in network byte order (`DLT_LOOP`).
    Loop,
    /// The IP header first (`DLT_RAW`).
    Raw,
}

/// The operating system whose numbers apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// FreeBSD.
    FreeBsd,
    /// OpenBSD.
    OpenBsd,
}

impl Os {
    /// `AF_INET6` in a loopback header.
    pub const fn af_inet6(self) -> u32 {
        match self {
            Os::FreeBsd => 28,
            Os::OpenBsd => 24,
        }
    }
}

/// `AF_INET`, the same everywhere.
pub const AF_INET: u32 = 2;
/// IP protocol number of pfsync.
const PFSYNC: u32 = 240;

impl LinkType {
    /// The `DLT_*` number on `os`.
    pub const fn dlt(self, os: Os) -> u32 {
        match (self, os) {
            (LinkType::Null, _) => 0,
            (LinkType::Ethernet, _) => 1,
            (LinkType::Loop, Os::OpenBsd) => 12,
            (LinkType::Loop, Os::FreeBsd) => 108,
            (LinkType::Raw, Os::OpenBsd) => 14,
            (LinkType::Raw, Os::FreeBsd) => 12,
        }
    }

    /// The link type of a `DLT_*` number on `os`.
    pub fn from_dlt(dlt: u32, os: Os) -> Option<LinkType> {
        [
            LinkType::Ethernet,
            LinkType::Null,
            LinkType::Loop,
            LinkType::Raw,
        ]
        .into_iter()
        .find(|l| l.dlt(os) == dlt)
    }
}

/// A program under construction, with forward jumps to labels resolved at the end.
struct Asm {
    insns: Vec<Insn>,
    // (instruction index, label for jt, label for jf)
    jumps: Vec<(usize, Option<Label>, Option<Label>)>,
    labels: Vec<Option<usize>>,
}

#[derive(Debug, Clone, Copy)]
struct Label(usize);

impl Asm {
    fn new() -> Asm {
        Asm {
            insns: Vec::new(),
            jumps: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    fn here(&mut self, l: Label) {
        self.labels[l.0] = Some(self.insns.len());
    }

    fn load(&mut self, size: u16, offset: u32) {
        self.insns.push(Insn {
            code: BPF_LD | size | BPF_ABS,
            jt: 0,
            jf: 0,
            k: offset,
        });
    }

    fn and(&mut self, k: u32) {
        self.insns.push(Insn {
            code: BPF_ALU | BPF_AND | BPF_K,
            jt: 0,
            jf: 0,
            k,
        });
    }

    /// If A == k go to `yes` (next instruction if `None`), else to `no` (next if `None`).
    fn jeq(&mut self, k: u32, yes: Option<Label>, no: Option<Label>) {
        self.jumps.push((self.insns.len(), yes, no));
        self.insns.push(Insn {
            code: BPF_JMP | BPF_JEQ | BPF_K,
            jt: 0,
            jf: 0,
            k,
        });
    }

    fn ret(&mut self, k: u32) {
        self.insns.push(Insn {
            code: BPF_RET | BPF_K,
            jt: 0,
            jf: 0,
            k,
        });
    }

    fn finish(mut self) -> Vec<Insn> {
        for (at, yes, no) in std::mem::take(&mut self.jumps) {
            let target = |l: Option<Label>| -> u8 {
                l.map_or(0, |l| {
                    let to = self.labels[l.0].expect("every label is placed");
                    // Jumps go forward, and these programs are short.
                    u8::try_from(to - at - 1).expect("a short forward jump")
                })
            };
            self.insns[at].jt = target(yes);
            self.insns[at].jf = target(no);
        }
        self.insns
    }
}

/// Accept the whole packet.
const WHOLE: u32 = u32::MAX;

/// The filter for `link` on `os`.
pub fn pfsync_filter(link: LinkType, os: Os) -> Vec<Insn> {
    let mut a = Asm::new();
    let drop = a.label();
    let accept = a.label();
    // Each entry: where the IP header starts, and the label of its v4 and v6 checks.
    match link {
        LinkType::Ethernet => {
            let v4 = a.label();
            let v6 = a.label();
            let vlan = a.label();
            a.load(BPF_H, 12);
            a.jeq(0x0800, Some(v4), None);
            a.jeq(0x86dd, Some(v6), None);
            a.jeq(0x8100, Some(vlan), Some(drop));
            a.here(v4);
            ipv4(&mut a, 14, accept, drop);
            a.here(v6);
            ipv6(&mut a, 14, accept, drop);
            a.here(vlan);
            let v4t = a.label();
            let v6t = a.label();
            a.load(BPF_H, 16);
            a.jeq(0x0800, Some(v4t), None);
            a.jeq(0x86dd, Some(v6t), Some(drop));
            a.here(v4t);
            ipv4(&mut a, 18, accept, drop);
            a.here(v6t);
            ipv6(&mut a, 18, accept, drop);
        }
        LinkType::Null | LinkType::Loop => {
            let v4 = a.label();
            let v6 = a.label();
            // A 32-bit load is in network order: a host-order (little-endian) family
            // reads byte-swapped.
            let family = |af: u32| {
                if link == LinkType::Null && cfg!(target_endian = "little") {
                    af.swap_bytes()
                } else {
                    af
                }
            };
            a.load(BPF_W, 0);
            a.jeq(family(AF_INET), Some(v4), None);
            a.jeq(family(os.af_inet6()), Some(v6), Some(drop));
            a.here(v4);
            ipv4(&mut a, 4, accept, drop);
            a.here(v6);
            ipv6(&mut a, 4, accept, drop);
        }
        LinkType::Raw => {
            let v4 = a.label();
            let v6 = a.label();
            a.load(BPF_B, 0);
            a.and(0xf0);
            a.jeq(0x40, Some(v4), None);
            a.jeq(0x60, Some(v6), Some(drop));
            a.here(v4);
            ipv4(&mut a, 0, accept, drop);
            a.here(v6);
            ipv6(&mut a, 0, accept, drop);
        }
    }
    a.here(accept);
    a.ret(WHOLE);
    a.here(drop);
    a.ret(0);
    a.finish()
}

/// IPv4 at `at`: protocol 240 and TTL 255, else `drop`.
fn ipv4(a: &mut Asm, at: u32, accept: Label, drop: Label) {
    a.load(BPF_B, at + 9);
    a.jeq(PFSYNC, None, Some(drop));
    a.load(BPF_B, at + 8);
    a.jeq(255, Some(accept), Some(drop));
}

/// IPv6 at `at`: next header 240 and hop limit 255, else `drop`.
fn ipv6(a: &mut Asm, at: u32, accept: Label, drop: Label) {
    a.load(BPF_B, at + 6);
    a.jeq(PFSYNC, None, Some(drop));
    a.load(BPF_B, at + 7);
    a.jeq(255, Some(accept), Some(drop));
}

/// Runs `program` on `packet` as a kernel would, for tests: the bytes to keep (0: drop).
/// Loads beyond the packet drop it, as in the kernels.
pub fn run(program: &[Insn], packet: &[u8]) -> u32 {
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    while let Some(i) = program.get(pc) {
        pc += 1;
        let load = |size: usize| -> Option<u32> {
            let at = i.k as usize;
            let b = packet.get(at..at.checked_add(size)?)?;
            Some(b.iter().fold(0u32, |v, &x| v << 8 | u32::from(x)))
        };
        match i.code {
            c if c == BPF_LD | BPF_W | BPF_ABS => match load(4) {
                Some(v) => acc = v,
                None => return 0,
            },
            c if c == BPF_LD | BPF_H | BPF_ABS => match load(2) {
                Some(v) => acc = v,
                None => return 0,
            },
            c if c == BPF_LD | BPF_B | BPF_ABS => match load(1) {
                Some(v) => acc = v,
                None => return 0,
            },
            c if c == BPF_ALU | BPF_AND | BPF_K => acc &= i.k,
            c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                pc += usize::from(if acc == i.k { i.jt } else { i.jf });
            }
            c if c == BPF_RET | BPF_K => return i.k,
            // An instruction this interpreter does not know: as the kernels refuse such
            // a program, drop.
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(proto: u8, ttl: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[8] = ttl;
        p[9] = proto;
        p
    }

    fn ipv6(next: u8, hops: u8) -> Vec<u8> {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[6] = next;
        p[7] = hops;
        p
    }

    fn framed(link: LinkType, os: Os, ip: &[u8]) -> Vec<u8> {
        let v6 = ip[0] >> 4 == 6;
        let mut f = match link {
            LinkType::Ethernet => {
                let mut h = vec![0u8; 12];
                h.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
                h
            }
            LinkType::Null | LinkType::Loop => {
                let af = if v6 { os.af_inet6() } else { AF_INET };
                if link == LinkType::Null {
                    af.to_ne_bytes().to_vec()
                } else {
                    af.to_be_bytes().to_vec()
                }
            }
            LinkType::Raw => Vec::new(),
        };
        f.extend_from_slice(ip);
        f
    }

    #[test]
    fn only_pfsync_with_ttl_255_passes_on_every_link_and_os() {
        for os in [Os::FreeBsd, Os::OpenBsd] {
            for link in [
                LinkType::Ethernet,
                LinkType::Null,
                LinkType::Loop,
                LinkType::Raw,
            ] {
                let prog = pfsync_filter(link, os);
                let pass = |ip: Vec<u8>| run(&prog, &framed(link, os, &ip)) == WHOLE;
                assert!(pass(ipv4(240, 255)), "{link:?} {os:?}");
                assert!(!pass(ipv4(240, 254)), "{link:?} {os:?}");
                assert!(!pass(ipv4(17, 255)), "{link:?} {os:?}");
                assert!(pass(ipv6(240, 255)), "{link:?} {os:?}");
                assert!(!pass(ipv6(240, 1)), "{link:?} {os:?}");
                assert!(!pass(ipv6(0, 255)), "hop-by-hop header {link:?} {os:?}");
                assert_eq!(run(&prog, &[]), 0);
                assert_eq!(LinkType::from_dlt(link.dlt(os), os), Some(link));
            }
        }
    }

    #[test]
    fn one_vlan_tag_is_looked_through() {
        let prog = pfsync_filter(LinkType::Ethernet, Os::FreeBsd);
        let tagged = |ip: &[u8], ethertype: [u8; 2]| {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
            f.extend_from_slice(&ethertype);
            f.extend_from_slice(ip);
            f
        };
        assert_eq!(run(&prog, &tagged(&ipv4(240, 255), [8, 0])), WHOLE);
        assert_eq!(run(&prog, &tagged(&ipv4(240, 64), [8, 0])), 0);
        assert_eq!(run(&prog, &tagged(&ipv6(240, 255), [0x86, 0xdd])), WHOLE);
        // ARP, and a truncated frame.
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(run(&prog, &arp), 0);
        assert_eq!(run(&prog, &[0u8; 13]), 0);
    }

    #[test]
    fn loopback_families_differ_per_os() {
        // An OpenBSD AF_INET6 (24) header is not FreeBSD's (28).
        let prog = pfsync_filter(LinkType::Loop, Os::FreeBsd);
        let mut f = 24u32.to_be_bytes().to_vec();
        f.extend_from_slice(&ipv6(240, 255));
        assert_eq!(run(&prog, &f), 0);
    }
}
