//! The receive side of the sync link, behind a trait: a raw socket on Linux
//! ([`super::raw::RawReceiver`]); bpf on the BSDs, where the kernel consumes protocol 240
//! (kernel-interface.md §8), comes with the pf backend.

use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::os::fd::AsFd;

/// A buffer big enough for any IP datagram.
pub const RECV_BUFFER_LEN: usize = 65_535;

/// One received pfsync datagram: where its payload is in the caller's buffer, and what the
/// transport knows of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPacket {
    /// The pfsync payload (after the IP header) in the buffer given to
    /// [`SyncReceiver::recv`].
    pub payload: Range<usize>,
    /// The source address.
    pub source: IpAddr,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Index of the interface it arrived on, if the receiver knows it.
    pub ifindex: Option<u32>,
    /// It came over IPv6.
    pub ipv6: bool,
}

impl ReceivedPacket {
    /// The payload bytes in `buf`, the buffer the packet was received into.
    ///
    /// # Panics
    /// If `buf` is shorter than the payload range (not the buffer it was received into).
    pub fn payload<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        &buf[self.payload.clone()]
    }

    /// The name of the arrival interface (a system call; for logs, not for every packet).
    pub fn ifname(&self) -> Option<String> {
        let index = self.ifindex?;
        let name = nix::net::if_::if_indextoname(index).ok()?;
        name.into_string().ok()
    }
}

/// Receives pfsync datagrams from the sync link.
///
/// Implementations are non-blocking: poll the file descriptor ([`AsFd`]) for readability,
/// then call [`SyncReceiver::recv`] until it returns `Ok(None)`.
pub trait SyncReceiver: AsFd {
    /// The next datagram into `buf` (use [`RECV_BUFFER_LEN`] bytes), or `None` if none is
    /// queued. Datagrams the receiver cannot make sense of (a malformed IP header, cut short
    /// by a small `buf`) are skipped and counted by the implementation, not returned.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<ReceivedPacket>>;

    /// What the receiver skipped so far, by reason.
    fn skipped(&self) -> CaptureSkips {
        CaptureSkips::default()
    }
}

/// Captures a receiver skipped, by reason: the kernel handed over something that is not
/// a whole pfsync datagram. None of them reaches the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureSkips {
    /// Capture buffers that did not walk to their end (bpf: the rest of the read is lost).
    pub bad_buffers: u64,
    /// Datagrams cut short (bpf's snap length, or longer than the receive buffer).
    pub cut: u64,
    /// Frames or datagrams that are not well-formed pfsync over IP.
    pub malformed: u64,
}

impl<R: SyncReceiver + ?Sized> SyncReceiver for Box<R> {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<ReceivedPacket>> {
        (**self).recv(buf)
    }

    fn skipped(&self) -> CaptureSkips {
        (**self).skipped()
    }
}

impl<R: SyncReceiver + ?Sized> SyncReceiver for &mut R {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<ReceivedPacket>> {
        (**self).recv(buf)
    }

    fn skipped(&self) -> CaptureSkips {
        (**self).skipped()
    }
}
