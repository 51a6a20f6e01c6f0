//! Membership of the pfsync multicast groups on the syncdev, for a receiver that gets
//! its packets without a socket of its own: bpf on the BSDs. A NIC with a multicast
//! filter passes up only frames to groups the host has joined, so bpf never sees a
//! peer's 224.0.0.240 unless someone joins it; the kernel's pfsync joins only when it
//! has a syncdev, and pfsyncd runs it without one. A UDP socket per family holds the
//! joins for as long as the value lives; the kernel leaves the groups when it is closed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use socket2::{Domain, Protocol, Socket, Type};

use super::error::NetError;
use super::iface::Interface;

/// The groups joined on the syncdev, held until dropped.
#[derive(Debug)]
pub struct GroupMembership {
    groups: Vec<IpAddr>,
    // Only held: closing them leaves the groups.
    _v4: Option<Socket>,
    _v6: Option<Socket>,
}

impl GroupMembership {
    /// Joins every multicast address of `groups` on `syncdev` (unicast ones are skipped:
    /// a peer's unicast frames pass any filter).
    pub fn join(groups: &[IpAddr], syncdev: &Interface) -> Result<GroupMembership, NetError> {
        let err = |what: &'static str| {
            let name = syncdev.name.clone();
            move |e: std::io::Error| NetError::io(&name, what, e)
        };
        let groups: Vec<IpAddr> = groups
            .iter()
            .copied()
            .filter(IpAddr::is_multicast)
            .collect();
        let v4: Vec<Ipv4Addr> = groups
            .iter()
            .filter_map(|g| match g {
                IpAddr::V4(g) => Some(*g),
                IpAddr::V6(_) => None,
            })
            .collect();
        let v6: Vec<Ipv6Addr> = groups
            .iter()
            .filter_map(|g| match g {
                IpAddr::V6(g) => Some(*g),
                IpAddr::V4(_) => None,
            })
            .collect();

        let v4_socket = if v4.is_empty() {
            None
        } else {
            let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
                .map_err(err("UDP socket for the IPv4 groups"))?;
            for group in &v4 {
                join_v4(&socket, group, syncdev)?;
            }
            Some(socket)
        };
        let v6_socket = if v6.is_empty() {
            None
        } else {
            let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))
                .map_err(err("UDP socket for the IPv6 groups"))?;
            for group in &v6 {
                socket
                    .join_multicast_v6(group, syncdev.index)
                    .map_err(err("IPV6_JOIN_GROUP"))?;
            }
            Some(socket)
        };
        Ok(GroupMembership {
            groups,
            _v4: v4_socket,
            _v6: v6_socket,
        })
    }

    /// The groups joined.
    pub fn groups(&self) -> &[IpAddr] {
        &self.groups
    }
}

/// Joins `group` on the syncdev named by its index, where IP_ADD_MEMBERSHIP takes a
/// `struct ip_mreqn` (Linux; FreeBSD's `inp_join_group` in sys/netinet/in_mcast.c).
#[cfg(not(target_os = "openbsd"))]
fn join_v4(socket: &Socket, group: &Ipv4Addr, syncdev: &Interface) -> Result<(), NetError> {
    let on = socket2::InterfaceIndexOrAddress::Index(syncdev.index);
    socket
        .join_multicast_v4_n(group, &on)
        .map_err(|e| NetError::io(&syncdev.name, "IP_ADD_MEMBERSHIP", e))
}

/// Joins `group` on the syncdev named by its IPv4 address: OpenBSD's `struct ip_mreq`
/// has no index.
#[cfg(target_os = "openbsd")]
fn join_v4(socket: &Socket, group: &Ipv4Addr, syncdev: &Interface) -> Result<(), NetError> {
    let addr = syncdev.ipv4().ok_or_else(|| NetError::NoAddress {
        name: syncdev.name.clone(),
        family: super::Family::V4,
    })?;
    socket
        .join_multicast_v4(group, &addr)
        .map_err(|e| NetError::io(&syncdev.name, "IP_ADD_MEMBERSHIP", e))
}
