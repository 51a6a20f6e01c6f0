//! The receive path as the daemon uses it: a [`SyncReceiver`], minus our own packets, in
//! the form the engine takes.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::engine::Received;

use super::error::NetError;
use super::filter::{classify, Verdict};
use super::iface::Interface;
use super::recv::SyncReceiver;

/// A receiver with the syncdev it serves: hands the engine everything but our own packets.
#[derive(Debug)]
pub struct SyncInput<R> {
    receiver: R,
    syncdev: Interface,
    own: u64,
}

impl<R: SyncReceiver> SyncInput<R> {
    /// Wraps `receiver`, whose packets are judged against `syncdev`.
    pub fn new(receiver: R, syncdev: Interface) -> SyncInput<R> {
        SyncInput {
            receiver,
            syncdev,
            own: 0,
        }
    }

    /// The next datagram that is not our own, as [`crate::engine::Engine::handle_packet`]
    /// takes it (the engine counts `badif` and `badttl` from it), or `None` when nothing
    /// more is queued.
    pub fn recv<'b>(&mut self, buf: &'b mut [u8]) -> io::Result<Option<Received<'b>>> {
        loop {
            let Some(packet) = self.receiver.recv(buf)? else {
                return Ok(None);
            };
            if classify(&packet, &self.syncdev) == Verdict::Own {
                self.own += 1;
                continue;
            }
            return Ok(Some(packet.to_engine(buf, self.syncdev.index)));
        }
    }

    /// What the receiver skipped.
    pub fn skipped(&self) -> super::recv::CaptureSkips {
        self.receiver.skipped()
    }

    /// How many of our own packets were dropped.
    pub fn own_dropped(&self) -> u64 {
        self.own
    }

    /// The syncdev.
    pub fn syncdev(&self) -> &Interface {
        &self.syncdev
    }

    /// Reads the syncdev's addresses again (after an address change).
    pub fn refresh_addrs(&mut self) -> Result<(), NetError> {
        self.syncdev.refresh_addrs()
    }

    /// The receiver.
    pub fn receiver(&self) -> &R {
        &self.receiver
    }

    /// The receiver, back.
    pub fn into_receiver(self) -> R {
        self.receiver
    }
}

impl<R: AsFd> AsFd for SyncInput<R> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.receiver.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::recv::ReceivedPacket;
    use std::collections::VecDeque;
    use std::net::IpAddr;
    use std::os::fd::OwnedFd;

    /// A receiver that plays back packets, each a source, a TTL, an interface and bytes.
    struct Script {
        packets: VecDeque<(IpAddr, u8, u32, Vec<u8>)>,
        fd: OwnedFd,
    }

    impl AsFd for Script {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.fd.as_fd()
        }
    }

    impl SyncReceiver for Script {
        fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<ReceivedPacket>> {
            let Some((source, ttl, ifindex, bytes)) = self.packets.pop_front() else {
                return Ok(None);
            };
            buf[..bytes.len()].copy_from_slice(&bytes);
            Ok(Some(ReceivedPacket {
                payload: 0..bytes.len(),
                source,
                ttl,
                ifindex: Some(ifindex),
                ipv6: source.is_ipv6(),
            }))
        }
    }

    #[test]
    fn own_packets_are_skipped_and_the_rest_passed_on() {
        let me = IpAddr::from([192, 0, 2, 1]);
        let peer = IpAddr::from([192, 0, 2, 2]);
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let script = Script {
            packets: VecDeque::from(vec![
                (me, 255, 3, vec![1]),
                (peer, 255, 3, vec![2, 2]),
                (me, 255, 3, vec![3]),
                (peer, 254, 4, vec![4]),
            ]),
            fd,
        };
        let dev = Interface {
            name: "em1".into(),
            index: 3,
            addrs: vec![me],
        };
        let mut input = SyncInput::new(script, dev);
        let mut buf = [0u8; 16];
        let r = input.recv(&mut buf).unwrap().unwrap();
        assert_eq!((r.payload, r.on_syncdev, r.ttl), (&[2u8, 2][..], true, 255));
        let r = input.recv(&mut buf).unwrap().unwrap();
        assert_eq!((r.payload, r.on_syncdev, r.ttl), (&[4u8][..], false, 254));
        assert!(input.recv(&mut buf).unwrap().is_none());
        assert_eq!(input.own_dropped(), 2);
    }
}
