//! The send side: a raw IP protocol 240 socket, set up as the kernels send pfsync.
//!
//! The kernel builds the IP header (no `IP_HDRINCL`): the payload handed to
//! [`Sender::send`] is the pfsync packet, starting at its header.

use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, BorrowedFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::config::{needs_scope, Family, Transport, IPPROTO_PFSYNC, IPTOS_LOWDELAY, PFSYNC_TTL};
use super::error::NetError;
use super::iface::Interface;

/// A send that failed for one destination.
#[derive(Debug)]
pub struct SendFailure {
    /// The destination.
    pub destination: IpAddr,
    /// Why.
    pub error: io::Error,
}

/// The outcome of one [`Sender::send`]: a packet per destination.
#[derive(Debug, Default)]
#[must_use = "failed sends are counted as oerrors"]
pub struct SendReport {
    /// Destinations the packet went to.
    pub sent: usize,
    /// Destinations it did not go to, with the error (each one an `oerrors`).
    pub failed: Vec<SendFailure>,
}

impl SendReport {
    /// Whether every destination got the packet.
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Sends pfsync packets to the link's destinations.
#[derive(Debug)]
pub struct Sender {
    socket: Socket,
    destinations: Vec<(IpAddr, SockAddr)>,
    /// The syncdev's index, the scope of link-local unicast destinations.
    syncdev_index: u32,
}

impl Sender {
    /// Opens the raw socket for `transport` on `syncdev` (looked up with
    /// [`Interface::lookup`]), non-blocking:
    /// - IPv4: TTL and multicast TTL 255, multicast loop off, TOS low-delay, the syncdev as
    ///   multicast interface (by its address) and, on Linux, bound to it (`SO_BINDTODEVICE`).
    ///   Linux sets DF itself (path MTU discovery is on for raw sockets by default).
    /// - IPv6: unicast and multicast hop limit 255, multicast loop off, the syncdev as
    ///   multicast interface; link-local destinations are scoped to it.
    ///
    /// Needs root (`CAP_NET_RAW`).
    pub fn open(transport: &Transport, syncdev: &Interface) -> Result<Sender, NetError> {
        transport.validate()?;
        let name = syncdev.name.as_str();
        let err = |what| move |e: io::Error| NetError::io(name, what, e);
        let protocol = Some(Protocol::from(i32::from(IPPROTO_PFSYNC)));
        let ttl = u32::from(PFSYNC_TTL);
        let socket = match transport.family {
            Family::V4 => {
                let socket = Socket::new(Domain::IPV4, Type::RAW, protocol)
                    .map_err(err("raw IPv4 socket (protocol 240)"))?;
                socket.set_ttl_v4(ttl).map_err(err("IP_TTL"))?;
                socket
                    .set_multicast_ttl_v4(ttl)
                    .map_err(err("IP_MULTICAST_TTL"))?;
                socket
                    .set_multicast_loop_v4(false)
                    .map_err(err("IP_MULTICAST_LOOP"))?;
                socket
                    .set_tos_v4(u32::from(IPTOS_LOWDELAY))
                    .map_err(err("IP_TOS"))?;
                match syncdev.ipv4() {
                    Some(addr) => socket
                        .set_multicast_if_v4(&addr)
                        .map_err(err("IP_MULTICAST_IF"))?,
                    // Linux sends multicast out of the bound device; elsewhere the multicast
                    // interface is named by its address.
                    None if cfg!(any(target_os = "linux", target_os = "android")) => {}
                    None if transport.groups().is_empty() => {}
                    None => {
                        return Err(NetError::NoAddress {
                            name: name.to_owned(),
                            family: Family::V4,
                        })
                    }
                }
                socket
            }
            Family::V6 => {
                let socket = Socket::new(Domain::IPV6, Type::RAW, protocol)
                    .map_err(err("raw IPv6 socket (next header 240)"))?;
                socket
                    .set_unicast_hops_v6(ttl)
                    .map_err(err("IPV6_UNICAST_HOPS"))?;
                socket
                    .set_multicast_hops_v6(ttl)
                    .map_err(err("IPV6_MULTICAST_HOPS"))?;
                socket
                    .set_multicast_loop_v6(false)
                    .map_err(err("IPV6_MULTICAST_LOOP"))?;
                socket
                    .set_multicast_if_v6(syncdev.index)
                    .map_err(err("IPV6_MULTICAST_IF"))?;
                socket
            }
        };
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            socket
                .bind_device(Some(name.as_bytes()))
                .map_err(err("SO_BINDTODEVICE"))?;
            // A raw socket gets a copy of every protocol-240 datagram; this one only sends.
            // A filter that accepts nothing keeps its receive queue empty.
            let drop_all = socket2::SockFilter::new(BPF_RET_K, 0, 0, 0);
            socket
                .attach_filter(&[drop_all])
                .map_err(err("SO_ATTACH_FILTER"))?;
        }
        socket
            .set_nonblocking(true)
            .map_err(err("non-blocking mode"))?;
        let destinations = transport
            .destinations()
            .into_iter()
            .map(|dest| (dest, sockaddr(dest, syncdev.index)))
            .collect();
        Ok(Sender {
            socket,
            destinations,
            syncdev_index: syncdev.index,
        })
    }

    /// Sends `payload` (a pfsync packet) to every destination. A destination whose send
    /// fails (including a full socket buffer: the socket is non-blocking) is reported and
    /// the others are still tried.
    pub fn send(&self, payload: &[u8]) -> SendReport {
        let mut report = SendReport::default();
        for (destination, addr) in &self.destinations {
            match send_one(&self.socket, payload, addr) {
                Ok(()) => report.sent += 1,
                Err(error) => report.failed.push(SendFailure {
                    destination: *destination,
                    error,
                }),
            }
        }
        report
    }

    /// Sends `payload` to `destination` alone, unicast on the syncdev, with the same
    /// socket (protocol 240, TTL 255): a pfsyncd extension frame for one peer. A
    /// destination of the other address family fails (the socket has one family).
    pub fn send_to(&self, destination: IpAddr, payload: &[u8]) -> io::Result<()> {
        send_one(
            &self.socket,
            payload,
            &sockaddr(destination, self.syncdev_index),
        )
    }

    /// Where packets go.
    pub fn destinations(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.destinations.iter().map(|(ip, _)| *ip)
    }
}

impl AsFd for Sender {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

/// `BPF_RET | BPF_K`: return the constant (0: accept no byte).
#[cfg(any(target_os = "linux", target_os = "android"))]
const BPF_RET_K: u16 = 0x06;

fn send_one(socket: &Socket, payload: &[u8], addr: &SockAddr) -> io::Result<()> {
    loop {
        match socket.send_to(payload, addr) {
            Ok(n) if n == payload.len() => return Ok(()),
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("sent {n} of {} bytes", payload.len()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The socket address of a destination; the port is unused by raw sockets.
fn sockaddr(dest: IpAddr, syncdev_index: u32) -> SockAddr {
    let addr = match dest {
        IpAddr::V4(v4) => SocketAddr::V4(SocketAddrV4::new(v4, 0)),
        IpAddr::V6(v6) => {
            let scope = if needs_scope(&v6) { syncdev_index } else { 0 };
            SocketAddr::V6(SocketAddrV6::new(v6, 0, 0, scope))
        }
    };
    SockAddr::from(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_destinations_get_the_syncdev_as_scope() {
        let group = sockaddr("ff12::f0".parse().unwrap(), 7);
        assert_eq!(group.as_socket_ipv6().unwrap().scope_id(), 7);
        let ll = sockaddr("fe80::2".parse().unwrap(), 7);
        assert_eq!(ll.as_socket_ipv6().unwrap().scope_id(), 7);
        let global = sockaddr("2001:db8::2".parse().unwrap(), 7);
        assert_eq!(global.as_socket_ipv6().unwrap().scope_id(), 0);
        let v4 = sockaddr("224.0.0.240".parse().unwrap(), 7);
        assert_eq!(v4.as_socket_ipv4().unwrap().ip().octets(), [224, 0, 0, 240]);
    }
}
