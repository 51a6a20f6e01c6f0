//! The Linux receiver: a raw IP protocol 240 socket.
//!
//! On Linux nothing in the kernel consumes protocol 240, so a raw socket sees every pfsync
//! datagram delivered to this host, on any interface (it is deliberately not bound to the
//! syncdev, so that packets from elsewhere can be counted as `badif`). IPv4 raw sockets
//! deliver the IP header, which is parsed for the TTL and source; IPv6 ones deliver only
//! the payload, with the hop limit and the arrival interface in control messages.

use std::io;
use std::io::IoSliceMut;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

use super::config::{Family, Transport, IPPROTO_PFSYNC};
use super::error::NetError;
use super::iface::Interface;
use super::ip::Ipv4Header;
use super::recv::{ReceivedPacket, SyncReceiver};

/// Bytes of socket receive buffer asked for (the kernel doubles it for bookkeeping).
const RECEIVE_BUFFER: usize = 32 << 20;

/// Datagrams a [`RawReceiver`] skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawStats {
    /// IPv4 header malformed, or not protocol 240.
    pub malformed: u64,
    /// Longer than the buffer given to `recv`.
    pub truncated: u64,
    /// Control messages cut short (no arrival interface or hop limit).
    pub ctrunc: u64,
}

/// Receives pfsync on a raw socket (Linux).
#[derive(Debug)]
pub struct RawReceiver {
    socket: Socket,
    family: Family,
    cmsg: Vec<u8>,
    stats: RawStats,
}

impl RawReceiver {
    /// Opens a non-blocking raw protocol-240 socket of the transport's family, asks for the
    /// arrival interface (`IP_PKTINFO` / `IPV6_RECVPKTINFO`) and the IPv6 hop limit, and joins
    /// the multicast destinations (224.0.0.240 or ff12::f0) on the syncdev. Needs root.
    pub fn open(transport: &Transport, syncdev: &Interface) -> Result<RawReceiver, NetError> {
        transport.validate()?;
        let name = syncdev.name.as_str();
        let err = |what| move |e: io::Error| NetError::io(name, what, e);
        let protocol = Some(Protocol::from(i32::from(IPPROTO_PFSYNC)));
        let (socket, cmsg) = match transport.family {
            Family::V4 => {
                let socket = Socket::new(Domain::IPV4, Type::RAW, protocol)
                    .map_err(err("raw IPv4 socket (protocol 240)"))?;
                setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)
                    .map_err(io::Error::from)
                    .map_err(err("IP_PKTINFO"))?;
                (socket, nix::cmsg_space!(libc::in_pktinfo))
            }
            Family::V6 => {
                let socket = Socket::new(Domain::IPV6, Type::RAW, protocol)
                    .map_err(err("raw IPv6 socket (next header 240)"))?;
                setsockopt(&socket, sockopt::Ipv6RecvPacketInfo, &true)
                    .map_err(io::Error::from)
                    .map_err(err("IPV6_RECVPKTINFO"))?;
                setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true)
                    .map_err(io::Error::from)
                    .map_err(err("IPV6_RECVHOPLIMIT"))?;
                (socket, nix::cmsg_space!(libc::in6_pktinfo, libc::c_int))
            }
        };
        for group in transport.groups() {
            match group {
                IpAddr::V4(group) => socket
                    .join_multicast_v4_n(&group, &InterfaceIndexOrAddress::Index(syncdev.index))
                    .map_err(err("IP_ADD_MEMBERSHIP"))?,
                IpAddr::V6(group) => socket
                    .join_multicast_v6(&group, syncdev.index)
                    .map_err(err("IPV6_JOIN_GROUP"))?,
            }
        }
        // A peer's bulk update arrives as a burst of thousands of packets; the default
        // buffer (about 200 KB) would drop most of them while one state import runs, and
        // pfsync never retransmits. Root may go past net.core.rmem_max.
        if setsockopt(&socket, sockopt::RcvBufForce, &RECEIVE_BUFFER).is_err() {
            socket
                .set_recv_buffer_size(RECEIVE_BUFFER)
                .map_err(err("SO_RCVBUF"))?;
        }
        socket
            .set_nonblocking(true)
            .map_err(err("non-blocking mode"))?;
        Ok(RawReceiver {
            socket,
            family: transport.family,
            cmsg,
            stats: RawStats::default(),
        })
    }

    /// What was skipped so far.
    pub fn stats(&self) -> RawStats {
        self.stats
    }

    /// One `recvmsg`: `Ok(None)` when nothing is queued, `Ok(Some(None))` for a datagram
    /// that was skipped (and counted).
    fn recv_one(&mut self, buf: &mut [u8]) -> io::Result<Option<Option<ReceivedPacket>>> {
        let fd = self.socket.as_raw_fd();
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<SockaddrStorage>(
            fd,
            &mut iov,
            Some(&mut self.cmsg),
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(msg) => msg,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let bytes = msg.bytes;
        let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
        let source = msg.address.as_ref().and_then(source_of);
        let mut ifindex = None;
        let mut hop_limit = None;
        match msg.cmsgs() {
            Ok(cmsgs) => {
                for cmsg in cmsgs {
                    match cmsg {
                        ControlMessageOwned::Ipv4PacketInfo(info) => {
                            ifindex = u32::try_from(info.ipi_ifindex).ok();
                        }
                        ControlMessageOwned::Ipv6PacketInfo(info) => {
                            ifindex = Some(info.ipi6_ifindex);
                        }
                        ControlMessageOwned::Ipv6HopLimit(limit) => {
                            hop_limit = u8::try_from(limit).ok();
                        }
                        _ => {}
                    }
                }
            }
            Err(_) => self.stats.ctrunc += 1,
        }
        if truncated {
            self.stats.truncated += 1;
            return Ok(Some(None));
        }
        let packet = match self.family {
            Family::V4 => match Ipv4Header::parse_pfsync(&buf[..bytes]) {
                Ok(header) => Some(ReceivedPacket {
                    payload: header.payload,
                    source: header.src.into(),
                    ttl: header.ttl,
                    ifindex,
                    ipv6: false,
                }),
                Err(_) => None,
            },
            Family::V6 => source.map(|source| ReceivedPacket {
                payload: 0..bytes,
                source,
                // Missing only if the control messages were cut: then it fails the check.
                ttl: hop_limit.unwrap_or(0),
                ifindex,
                ipv6: true,
            }),
        };
        if packet.is_none() {
            self.stats.malformed += 1;
        }
        Ok(Some(packet))
    }
}

impl SyncReceiver for RawReceiver {
    fn skipped(&self) -> super::recv::CaptureSkips {
        super::recv::CaptureSkips {
            bad_buffers: 0,
            cut: self.stats.truncated,
            malformed: self.stats.malformed + self.stats.ctrunc,
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<ReceivedPacket>> {
        loop {
            match self.recv_one(buf) {
                Ok(None) => return Ok(None),
                Ok(Some(Some(packet))) => return Ok(Some(packet)),
                Ok(Some(None)) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsFd for RawReceiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// The IP address of a received datagram's source.
fn source_of(addr: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        Some(IpAddr::V4(v4.ip()))
    } else {
        addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
    }
}
