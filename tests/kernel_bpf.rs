//! The bpf read buffers of each kernel (tests/kernel/bpf.rs, written from the kernels'
//! catchpacket / bpf_catchpacket) walked by our `Records`: every frame comes back, whole
//! or cut at the snap length, for every link type; what no kernel writes is refused.

#[path = "kernel/bpf.rs"]
mod model;

use model::{capture, Kernel, StoreBuffer};
use pfsyncd::net::bpf::{
    pfsync_in_frame, pfsync_in_record, BpfError, LinkType, Os, Records, Skipped,
};

const LINKS: [LinkType; 4] = [
    LinkType::Ethernet,
    LinkType::Null,
    LinkType::Loop,
    LinkType::Raw,
];

/// Frames of every length from 1 to 97 bytes, each byte telling frame and position.
fn frames() -> Vec<Vec<u8>> {
    (1..=97usize)
        .map(|n| (0..n).map(|i| (n * 7 + i) as u8).collect())
        .collect()
}

/// (frame, datalen) of every record of `reads`, failing on the first walk error.
fn walk(reads: &[Vec<u8>], os: Os) -> Result<Vec<(Vec<u8>, usize)>, BpfError> {
    let mut got = Vec::new();
    for buf in reads {
        for r in Records::new(buf, os) {
            let r = r?;
            got.push((r.frame.to_vec(), r.datalen));
        }
    }
    Ok(got)
}

#[test]
fn every_kernel_writes_the_header_lengths_its_code_computes() {
    // The numbers the review gives for FreeBSD (26 / 28 / 32) and OpenBSD 7.7 (30), from
    // the model's own arithmetic: a check on the model, not on our walker.
    let want = [
        (Kernel::FreeBsdAmd64, [26, 28, 28, 32]),
        (Kernel::OpenBsd66, [22, 20, 20, 20]),
        (Kernel::OpenBsdPre77, [26, 24, 24, 24]),
        (Kernel::OpenBsd77, [30, 28, 28, 28]),
    ];
    for (kernel, lens) in want {
        for (link, len) in LINKS.iter().zip(lens) {
            assert_eq!(kernel.bh_hdrlen(*link), len, "{kernel:?} {link:?}");
            // The network header lands on the alignment boundary.
            assert_eq!(
                (len + model::link_header_len(*link)) % kernel.alignment(),
                0
            );
        }
    }
}

#[test]
fn every_frame_comes_back_exactly_from_every_kernel_and_link() {
    for kernel in Kernel::ALL {
        for link in LINKS {
            let frames = frames();
            // A small buffer, so the frames fill several reads.
            let reads = capture(kernel, link, 1024, 65_535, &frames);
            assert!(reads.len() > 3, "{kernel:?} {link:?}");
            let got = walk(&reads, kernel.os())
                .unwrap_or_else(|e| panic!("{kernel:?} {link:?}: {e} ({e:?})"));
            assert_eq!(got.len(), frames.len(), "{kernel:?} {link:?}");
            for ((frame, datalen), want) in got.iter().zip(&frames) {
                assert_eq!(frame, want, "{kernel:?} {link:?}");
                assert_eq!(*datalen, want.len());
            }
        }
    }
}

#[test]
fn a_frame_cut_by_the_snap_length_comes_back_cut_with_its_wire_length() {
    for kernel in Kernel::ALL {
        for link in LINKS {
            let frames = frames();
            let reads = capture(kernel, link, 4096, 40, &frames);
            let got = walk(&reads, kernel.os())
                .unwrap_or_else(|e| panic!("{kernel:?} {link:?}: {e} ({e:?})"));
            assert_eq!(got.len(), frames.len());
            for ((frame, datalen), want) in got.iter().zip(&frames) {
                assert_eq!(&frame[..], &want[..want.len().min(40)]);
                assert_eq!(*datalen, want.len());
            }
        }
    }
}

/// A pfsync datagram (IPv4, TTL 255, to 224.0.0.240) behind `link`'s header.
fn pfsync_frame(link: LinkType, os: Os, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![
        0x45, 0x10, 0, 0, 0, 0, 0x40, 0, 255, 240, 0, 0, 10, 0, 0, 1, 224, 0, 0, 240,
    ];
    let total = (20 + payload.len()) as u16;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(payload);
    behind_link_header(link, os, false, &ip)
}

/// A pfsync datagram over IPv6 (hop limit 255, to ff12::f0).
fn pfsync6_frame(link: LinkType, os: Os, payload: &[u8]) -> Vec<u8> {
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    ip[6] = 240;
    ip[7] = 255;
    ip[8] = 0xfe;
    ip[9] = 0x80;
    ip[23] = 1;
    ip[24..26].copy_from_slice(&[0xff, 0x12]);
    ip[39] = 0xf0;
    ip.extend_from_slice(payload);
    behind_link_header(link, os, true, &ip)
}

fn behind_link_header(link: LinkType, os: Os, v6: bool, ip: &[u8]) -> Vec<u8> {
    let af_inet6 = os.af_inet6();
    let af = if v6 { af_inet6 } else { 2 };
    let mut frame = match link {
        LinkType::Ethernet => {
            let mut e = vec![0x01, 0x00, 0x5e, 0, 0, 0xf0, 2, 0, 0, 0, 0, 1];
            let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
            e.extend_from_slice(&ethertype.to_be_bytes());
            e
        }
        // DLT_NULL: the family in host order; DLT_LOOP: in network order.
        LinkType::Null => af.to_ne_bytes().to_vec(),
        LinkType::Loop => af.to_be_bytes().to_vec(),
        LinkType::Raw => Vec::new(),
    };
    frame.extend_from_slice(ip);
    frame
}

#[test]
fn the_pfsync_payload_is_found_in_every_kernels_record() {
    for kernel in Kernel::ALL {
        for link in LINKS {
            let os = kernel.os();
            let frame = pfsync_frame(link, os, b"pfsync payload");
            let reads = capture(kernel, link, 4096, 65_535, &[frame.clone(), frame]);
            let got = walk(&reads, os).unwrap_or_else(|e| panic!("{kernel:?} {link:?}: {e}"));
            assert_eq!(got.len(), 2);
            for (f, _) in &got {
                let p = pfsync_in_frame(f, link, os).expect("a pfsync frame");
                assert_eq!(&f[p.payload], b"pfsync payload");
                assert_eq!(p.ttl, 255);
            }
        }
    }
}

/// One record of `kernel` on Ethernet, and the offsets of its length fields.
fn one_record(kernel: Kernel) -> (Vec<u8>, (usize, usize, usize)) {
    let mut store = StoreBuffer::new(kernel, LinkType::Ethernet, 4096, 65_535);
    assert!(store.catch(&[7u8; 60]));
    (store.read(), kernel.fields())
}

fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

#[test]
fn what_no_kernel_writes_is_refused() {
    for kernel in Kernel::ALL {
        let os = kernel.os();
        let (record, (caplen_at, datalen_at, hdrlen_at)) = one_record(kernel);
        let first = |b: &[u8]| Records::new(b, os).next().map(|r| r.map(|_| ()));
        assert!(matches!(first(&record), Some(Ok(_))), "{kernel:?}");

        // A header length that ends inside bh_hdrlen itself.
        let mut short = record.clone();
        put_u16(&mut short, hdrlen_at, (hdrlen_at + 1) as u16);
        assert!(
            matches!(first(&short), Some(Err(BpfError::BadHeaderLength { .. }))),
            "{kernel:?}: {:?}",
            first(&short)
        );
        // Zero would never move on.
        let mut zero = record.clone();
        put_u16(&mut zero, hdrlen_at, 0);
        assert!(matches!(
            first(&zero),
            Some(Err(BpfError::BadHeaderLength { .. }))
        ));
        // Longer than any header with its alignment padding.
        let mut long = record.clone();
        put_u16(&mut long, hdrlen_at, 40);
        assert!(
            matches!(first(&long), Some(Err(BpfError::BadHeaderLength { .. }))),
            "{kernel:?}: {:?}",
            first(&long)
        );
        // Captured bytes past the buffer.
        let mut past = record.clone();
        put_u32(&mut past, caplen_at, 1000);
        assert!(matches!(
            first(&past),
            Some(Err(BpfError::BadCaptureLength { .. }))
        ));
        // More captured than the packet had: a kernel captures at most the packet.
        let mut more = record.clone();
        put_u32(&mut more, datalen_at, 59);
        assert!(
            matches!(first(&more), Some(Err(BpfError::BadCaptureLength { .. }))),
            "{kernel:?}: {:?}",
            first(&more)
        );
        // A buffer that ends inside the next record's header.
        let mut cut = record.clone();
        while cut.len() % kernel.alignment() != 0 {
            cut.push(0);
        }
        let at = cut.len();
        cut.extend_from_slice(&record[..hdrlen_at]);
        let all: Vec<_> = Records::new(&cut, os).collect();
        assert_eq!(all.len(), 2);
        assert!(matches!(all[1], Err(BpfError::ShortHeader { at: a, .. }) if a == at));
    }
}

#[test]
fn random_buffers_end_the_walk_without_a_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..4000usize {
        let b: Vec<u8> = (0..len % 600)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for os in [Os::FreeBsd, Os::OpenBsd] {
            // Each record takes at least a header: the walk cannot loop.
            assert!(Records::new(&b, os).count() <= b.len() / 18 + 1);
        }
    }
}

#[test]
fn a_cut_datagram_or_another_frame_is_skipped_with_its_reason() {
    for kernel in Kernel::ALL {
        for link in LINKS {
            let os = kernel.os();
            let pfsync = pfsync_frame(link, os, &[0x5a; 200]);
            let mut other = pfsync.clone();
            // Protocol 17 instead of 240.
            other[model::link_header_len(link) + 9] = 17;
            let pfsync6 = pfsync6_frame(link, os, &[0x5a; 200]);
            let reads = capture(kernel, link, 8192, 65_535, &[pfsync.clone(), other]);
            let cut = capture(kernel, link, 8192, 100, &[pfsync, pfsync6]);
            let verdicts: Vec<_> = reads
                .iter()
                .chain(&cut)
                .flat_map(|b| Records::new(b, os))
                .map(|r| pfsync_in_record(&r.unwrap(), link, os).map(|p| p.payload.len()))
                .collect();
            assert_eq!(
                verdicts,
                vec![
                    Ok(200),
                    Err(Skipped::NotPfsync),
                    Err(Skipped::Cut),
                    Err(Skipped::Cut)
                ],
                "{kernel:?} {link:?}"
            );
        }
    }
}
