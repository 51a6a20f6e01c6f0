//! A model of what a BSD kernel's bpf writes into a descriptor's store buffer, which a
//! read(2) of the bpf device returns: one record per captured frame, each a `struct
//! bpf_hdr`, then the frame at `bh_hdrlen`, the next record at the next `BPF_WORDALIGN`
//! boundary. Written from the kernels' code, not from our walker's constants:
//!
//! - FreeBSD (amd64): `sys/net/bpf.c` `catchpacket()` and `bpf_hdrlen()`, read in
//!   sobomax/freebsd14_vendor at 0f7ff3427c99afe8b7a0ccf8638dc10aed02c3f8 (FreeBSD 14
//!   vendor tree) and in freebsd/freebsd-src as the index stores it (a FreeBSD 12-era
//!   version; the same `bpf_hdrlen`). `SIZEOF_BPF_HDR(type)` is `offsetof(type,
//!   bh_hdrlen) + sizeof(bh_hdrlen)`: 26 for amd64's `struct bpf_hdr` (16-byte `struct
//!   timeval`); `bh_hdrlen = BPF_WORDALIGN(bif_hdrlen + 26) - bif_hdrlen` with
//!   `BPF_ALIGNMENT` = `sizeof(long)` = 8. The whole 32-byte `struct bpf_hdr` is appended
//!   first (`bpf_append_bytes(..., sizeof(hdr_old))`), then the packet is copied to
//!   `curlen + hdrlen`, over the header's tail padding. No FreeBSD 15 bpf.c was found in
//!   the index; `bpf_hdrlen` has not changed between the 12 and 14 trees read.
//! - OpenBSD: `sys/net/bpf.c` rev 1.234 (2025-07-07) `bpf_catchpacket()` and
//!   `bpfsattach()`: `bif_hdrlen = BPF_WORDALIGN(hdrlen + SIZEOF_BPF_HDR) - hdrlen`,
//!   `SIZEOF_BPF_HDR` = `sizeof(struct bpf_hdr)`, `BPF_ALIGNMENT` = `sizeof(u_int32_t)`;
//!   the whole header is stored (`*bh = *tbh`), the packet copied to `bh + hdrlen`.
//!   `struct bpf_hdr` from `sys/net/bpf.h` rev 1.74 (2025-03-04, in 7.7): 26 bytes of
//!   fields ending with `bh_csumflags`, sizeof 28; and rev 1.67 (2019-09-12, openbsd/src
//!   commit 06d0e876d5af4716f206f19f671414ad2cb4f976, OpenBSD 6.6): the classic 18 bytes
//!   ending with `bh_hdrlen`, sizeof 20 on amd64 (`SIZEOF_BPF_HDR` 18 only on arm, i386,
//!   mips, sparc64).
//!
//! The link header lengths are the `hdrlen` each interface type passes to
//! `bpfattach()`: 14 (`ETHER_HDR_LEN`) for DLT_EN10MB, 4 (the address family word) for
//! DLT_NULL and DLT_LOOP, 0 for DLT_RAW.

#![allow(dead_code)]

use pfsyncd::net::bpf::{LinkType, Os};

/// A kernel whose bpf records the model writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// FreeBSD on amd64 (the default `BPF_T_MICROTIME` timestamps, `struct bpf_hdr`).
    FreeBsdAmd64,
    /// OpenBSD before the header grew: bpf.h rev 1.67, 20-byte `struct bpf_hdr`.
    OpenBsd66,
    /// OpenBSD between the two headers read.
    /// GUESS: `bh_ifidx`, `bh_flowid`, `bh_flags`, `bh_drops` without `bh_csumflags`
    /// (sizeof 24); no stored bpf.h of that era was found. It sits between the two read
    /// layouts, so a walker that takes both takes it too.
    OpenBsdPre77,
    /// OpenBSD 7.7 and later: bpf.h rev 1.74, 28-byte `struct bpf_hdr`.
    OpenBsd77,
}

impl Kernel {
    /// Every kernel modelled.
    pub const ALL: [Kernel; 4] = [
        Kernel::FreeBsdAmd64,
        Kernel::OpenBsd66,
        Kernel::OpenBsdPre77,
        Kernel::OpenBsd77,
    ];

    /// The OS, for the walker.
    pub fn os(self) -> Os {
        match self {
            Kernel::FreeBsdAmd64 => Os::FreeBsd,
            _ => Os::OpenBsd,
        }
    }

    /// `BPF_ALIGNMENT`.
    pub fn alignment(self) -> usize {
        match self {
            Kernel::FreeBsdAmd64 => 8,
            _ => 4,
        }
    }

    /// `sizeof(struct bpf_hdr)`: how many bytes the kernel stores for the header.
    pub fn header_size(self) -> usize {
        match self {
            Kernel::FreeBsdAmd64 => 32,
            Kernel::OpenBsd66 => 20,
            Kernel::OpenBsdPre77 => 24,
            Kernel::OpenBsd77 => 28,
        }
    }

    /// `SIZEOF_BPF_HDR` as the kernel's header length computation uses it.
    pub fn sizeof_bpf_hdr(self) -> usize {
        match self {
            // offsetof(struct bpf_hdr, bh_hdrlen) + sizeof(u_short)
            Kernel::FreeBsdAmd64 => 24 + 2,
            k => k.header_size(),
        }
    }

    /// Offsets of `bh_caplen`, `bh_datalen`, `bh_hdrlen` in a record (for tests that
    /// damage a buffer).
    pub fn fields(self) -> (usize, usize, usize) {
        match self {
            Kernel::FreeBsdAmd64 => (16, 20, 24),
            _ => (8, 12, 16),
        }
    }

    /// `bh_hdrlen` for a link header of `link_header` bytes.
    pub fn bh_hdrlen(self, link: LinkType) -> usize {
        let l = link_header_len(link);
        word_align(l + self.sizeof_bpf_hdr(), self.alignment()) - l
    }
}

/// The `hdrlen` the interface passes to `bpfattach()`.
pub fn link_header_len(link: LinkType) -> usize {
    match link {
        LinkType::Ethernet => 14,
        LinkType::Null | LinkType::Loop => 4,
        LinkType::Raw => 0,
    }
}

fn word_align(x: usize, align: usize) -> usize {
    (x + align - 1) & !(align - 1)
}

/// Bytes a new store buffer holds before anything is caught: what an earlier use of the
/// buffer left (the kernel does not clear it), so padding is never zero by luck.
const STALE: u8 = 0xa5;

/// One bpf descriptor's store buffer.
#[derive(Debug, Clone)]
pub struct StoreBuffer {
    kernel: Kernel,
    link: LinkType,
    bufsize: usize,
    snaplen: usize,
    buf: Vec<u8>,
    slen: usize,
    stamp: u32,
}

impl StoreBuffer {
    /// A buffer of `bufsize` bytes (`BIOCSBLEN`) for an interface of `link`, with a filter
    /// that accepts `snaplen` bytes of each packet (the filter's return value).
    pub fn new(kernel: Kernel, link: LinkType, bufsize: usize, snaplen: usize) -> StoreBuffer {
        StoreBuffer {
            kernel,
            link,
            bufsize,
            snaplen,
            // Room past bufsize for a header stored whole at the very end (the kernel's
            // buffer is bufsize long; a read never returns past bd_slen).
            buf: vec![STALE; bufsize + 64],
            slen: 0,
            stamp: 1_700_000_000,
        }
    }

    /// Catches `packet` as catchpacket / bpf_catchpacket does; false when it does not
    /// fit what is left of the buffer (the kernel would rotate to its free buffer, or
    /// drop; the model leaves that to the caller, who reads and starts a new buffer).
    pub fn catch(&mut self, packet: &[u8]) -> bool {
        let k = self.kernel;
        let hdrlen = k.bh_hdrlen(self.link);
        let pktlen = packet.len();
        let totlen = (hdrlen + self.snaplen.min(pktlen)).min(self.bufsize);
        let curlen = word_align(self.slen, k.alignment());
        if curlen + totlen > self.bufsize {
            return false;
        }
        let caplen = totlen - hdrlen;
        let mut header = vec![0u8; k.header_size()];
        self.stamp += 1;
        match k {
            Kernel::FreeBsdAmd64 => {
                header[0..8].copy_from_slice(&i64::from(self.stamp).to_ne_bytes());
                header[8..16].copy_from_slice(&123_456i64.to_ne_bytes());
            }
            _ => {
                header[0..4].copy_from_slice(&self.stamp.to_ne_bytes());
                header[4..8].copy_from_slice(&123_456u32.to_ne_bytes());
            }
        }
        let (c, d, h) = k.fields();
        header[c..c + 4].copy_from_slice(&(caplen as u32).to_ne_bytes());
        header[d..d + 4].copy_from_slice(&(pktlen as u32).to_ne_bytes());
        header[h..h + 2].copy_from_slice(&(hdrlen as u16).to_ne_bytes());
        if matches!(k, Kernel::OpenBsdPre77 | Kernel::OpenBsd77) {
            // bh_ifidx, bh_flowid, bh_flags (direction in), bh_drops: set, as a
            // receiving kernel sets them.
            header[18..20].copy_from_slice(&3u16.to_ne_bytes());
            header[20..22].copy_from_slice(&0x1234u16.to_ne_bytes());
            header[22] = 0x10;
            header[23] = 0;
        }
        if k == Kernel::OpenBsd77 {
            header[24..26].copy_from_slice(&0x0030u16.to_ne_bytes());
        }
        self.buf[curlen..curlen + header.len()].copy_from_slice(&header);
        self.buf[curlen + hdrlen..curlen + hdrlen + caplen].copy_from_slice(&packet[..caplen]);
        self.slen = curlen + totlen;
        true
    }

    /// What a read(2) returns: the buffer up to the end of the last record.
    pub fn read(&self) -> Vec<u8> {
        self.buf[..self.slen].to_vec()
    }
}

/// The buffers a stream of `packets` fills, each a read, as the kernel rotates them.
pub fn capture(
    kernel: Kernel,
    link: LinkType,
    bufsize: usize,
    snaplen: usize,
    packets: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    let mut reads = Vec::new();
    let mut store = StoreBuffer::new(kernel, link, bufsize, snaplen);
    for p in packets {
        if !store.catch(p) {
            reads.push(store.read());
            store = StoreBuffer::new(kernel, link, bufsize, snaplen);
            assert!(store.catch(p), "a packet larger than the buffer");
        }
    }
    if store.slen > 0 {
        reads.push(store.read());
    }
    reads
}
