//! The BSD receive path: a bpf device on the syncdev with the pfsync filter, read in
//! buffers of many packets, handed out one at a time as [`SyncReceiver`] wants them.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::buffer::{pfsync_in_record, Records, Skipped};
use super::program::{pfsync_filter, LinkType, Os};
use crate::net::{GroupMembership, Interface, NetError, ReceivedPacket, SyncReceiver, Transport};

/// This OS, for the numbers that differ.
#[cfg(target_os = "freebsd")]
const OS: Os = Os::FreeBsd;
#[cfg(target_os = "openbsd")]
const OS: Os = Os::OpenBsd;

/// Buffer asked of bpf: a bulk update arrives as a burst.
const BUFFER: u32 = 4 << 20;

/// Counts of what the receiver skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BpfStats {
    /// Buffers that did not walk to their end (the rest was dropped).
    pub bad_buffers: u64,
    /// Frames without a pfsync datagram in them.
    pub not_pfsync: u64,
    /// Frames bpf cut short (a part of a datagram is not a datagram).
    pub cut: u64,
}

/// Receives pfsync with bpf.
#[derive(Debug)]
pub struct BpfReceiver {
    fd: OwnedFd,
    link: LinkType,
    ifindex: u32,
    buf: Vec<u8>,
    len: usize,
    at: usize,
    stats: BpfStats,
    // Held for the receiver's lifetime: without it a NIC's multicast filter drops the
    // peers' frames before bpf sees them.
    _membership: GroupMembership,
}

impl BpfReceiver {
    /// Opens bpf on `syncdev` and joins the link's multicast groups there. Needs root
    /// (or access to /dev/bpf).
    pub fn open(transport: &Transport, syncdev: &Interface) -> Result<BpfReceiver, NetError> {
        let membership = GroupMembership::join(&transport.groups(), syncdev)?;
        let name = syncdev.name.as_str();
        let mut link = None;
        let dev = crate::sys::open_bpf(name, BUFFER, |dlt| {
            let l = LinkType::from_dlt(dlt, OS).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!("link type {dlt} is not one pfsyncd reads"),
                )
            })?;
            link = Some(l);
            Ok(pfsync_filter(l, OS))
        })
        .map_err(|e| NetError::io(name, "bpf", e))?;
        Ok(BpfReceiver {
            fd: dev.fd,
            link: link.unwrap_or(LinkType::Ethernet),
            ifindex: syncdev.index,
            buf: vec![0; dev.buffer_len.max(4096)],
            len: 0,
            at: 0,
            stats: BpfStats::default(),
            _membership: membership,
        })
    }

    /// What was skipped so far.
    pub fn stats(&self) -> BpfStats {
        self.stats
    }
}

impl AsFd for BpfReceiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl SyncReceiver for BpfReceiver {
    fn skipped(&self) -> crate::net::CaptureSkips {
        crate::net::CaptureSkips {
            bad_buffers: self.stats.bad_buffers,
            cut: self.stats.cut,
            malformed: self.stats.not_pfsync,
        }
    }

    fn recv(&mut self, out: &mut [u8]) -> io::Result<Option<ReceivedPacket>> {
        loop {
            if self.at >= self.len {
                // bpf returns whole buffers: a read is all or nothing.
                match nix::unistd::read(&self.fd, &mut self.buf) {
                    Ok(0) => return Ok(None),
                    Ok(n) => {
                        self.len = n;
                        self.at = 0;
                    }
                    Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            let mut records =
                Records::with_layout(&self.buf[self.at..self.len], crate::sys::BPF_HEADER_LAYOUT);
            let item = records.next();
            let step = records.offset();
            match item {
                Some(Ok(record)) => {
                    self.at += step;
                    let ip = match pfsync_in_record(&record, self.link, OS) {
                        Ok(ip) => ip,
                        Err(Skipped::Cut) => {
                            self.stats.cut += 1;
                            continue;
                        }
                        Err(Skipped::NotPfsync) => {
                            self.stats.not_pfsync += 1;
                            continue;
                        }
                    };
                    let payload = &record.frame[ip.payload.clone()];
                    let n = payload.len().min(out.len());
                    out[..n].copy_from_slice(&payload[..n]);
                    return Ok(Some(ReceivedPacket {
                        payload: 0..n,
                        source: ip.source,
                        ttl: ip.ttl,
                        ifindex: Some(self.ifindex),
                        ipv6: ip.ipv6,
                    }));
                }
                Some(Err(_)) | None => {
                    if item.is_some() {
                        self.stats.bad_buffers += 1;
                    }
                    self.at = self.len;
                }
            }
        }
    }
}
