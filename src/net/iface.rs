//! The syncdev: name, index, state, addresses and MTU.
//!
//! Everything here answers for the network namespace of the calling thread.

use std::net::{IpAddr, Ipv4Addr};

use nix::errno::Errno;
use nix::ifaddrs::getifaddrs;
use nix::net::if_::{if_nametoindex, InterfaceFlags};

use super::error::NetError;

/// An interface as the sync link uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name (`em1`).
    pub name: String,
    /// Its index (what IP_PKTINFO and IPV6_MULTICAST_IF speak).
    pub index: u32,
    /// Its IPv4 and IPv6 addresses: a packet from one of them is our own.
    pub addrs: Vec<IpAddr>,
}

impl Interface {
    /// Looks the interface up: it must exist and be up.
    pub fn lookup(name: &str) -> Result<Interface, NetError> {
        let missing = || NetError::NoSuchInterface {
            name: name.to_owned(),
        };
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(missing());
        }
        let index = match if_nametoindex(name) {
            Ok(index) => index,
            Err(Errno::ENODEV | Errno::ENXIO) => return Err(missing()),
            Err(e) => return Err(NetError::io(name, "interface index", e)),
        };
        let (up, addrs) = scan(name)?;
        match up {
            None => Err(missing()),
            Some(false) => Err(NetError::InterfaceDown {
                name: name.to_owned(),
            }),
            Some(true) => Ok(Interface {
                name: name.to_owned(),
                index,
                addrs,
            }),
        }
    }

    /// Reads the addresses again (they may change while the daemon runs).
    pub fn refresh_addrs(&mut self) -> Result<(), NetError> {
        let (_, addrs) = scan(&self.name)?;
        self.addrs = addrs;
        Ok(())
    }

    /// The first IPv4 address, if any.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.addrs.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }

    /// Whether `addr` is one of the interface's addresses.
    pub fn owns(&self, addr: IpAddr) -> bool {
        self.addrs.contains(&addr)
    }

    /// The interface's MTU (SIOCGIFMTU).
    pub fn mtu(&self) -> Result<u32, NetError> {
        mtu(&self.name)
    }
}

/// Whether the interface is up (`None`: no such interface) and its IP addresses.
fn scan(name: &str) -> Result<(Option<bool>, Vec<IpAddr>), NetError> {
    let entries = getifaddrs().map_err(|e| NetError::io(name, "getifaddrs", e))?;
    let mut up = None;
    let mut addrs = Vec::new();
    for entry in entries.filter(|e| e.interface_name == name) {
        up = Some(up.unwrap_or(false) | entry.flags.contains(InterfaceFlags::IFF_UP));
        let Some(addr) = entry.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if !addrs.contains(&ip) {
            addrs.push(ip);
        }
    }
    Ok((up, addrs))
}

/// The MTU of interface `name` (SIOCGIFMTU).
pub fn mtu(name: &str) -> Result<u32, NetError> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(NetError::NoSuchInterface {
            name: name.to_owned(),
        });
    }
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(|e| NetError::io(name, "socket for SIOCGIFMTU", e))?;
    match crate::sys::interface_mtu(std::os::fd::AsFd::as_fd(&socket), name) {
        Ok(mtu) => Ok(mtu),
        Err(e)
            if e.raw_os_error() == Some(libc::ENODEV) || e.raw_os_error() == Some(libc::ENXIO) =>
        {
            Err(NetError::NoSuchInterface {
                name: name.to_owned(),
            })
        }
        Err(e) => Err(NetError::io(name, "SIOCGIFMTU", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interface_says_so() {
        let err = Interface::lookup("em9").unwrap_err();
        assert_eq!(err.to_string(), "syncdev em9: no such interface");
        let err = Interface::lookup("").unwrap_err();
        assert_eq!(err.to_string(), "syncdev : no such interface");
        let long = "x".repeat(40);
        assert!(matches!(
            Interface::lookup(&long),
            Err(NetError::NoSuchInterface { .. })
        ));
        assert!(matches!(mtu("em9"), Err(NetError::NoSuchInterface { .. })));
    }

    #[test]
    fn loopback_is_found_with_its_addresses_and_mtu() {
        let lo_name = if cfg!(target_os = "linux") {
            "lo"
        } else {
            "lo0"
        };
        let lo = Interface::lookup(lo_name).unwrap();
        assert!(lo.index > 0);
        assert!(lo.owns(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(lo.ipv4(), Some(Ipv4Addr::LOCALHOST));
        assert!(lo.mtu().unwrap() >= 1280);
    }
}
