//! What the sync link is: the syncdev, the syncpeers and the address family.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::NetError;

// One definition of protocol 240 and the groups, shared with the engine.
pub use crate::engine::{IPPROTO_PFSYNC, PFSYNC_GROUP_V4, PFSYNC_GROUP_V6};

/// The TTL (IPv4) or hop limit (IPv6) pfsync sends with and requires on receive
/// (`PFSYNC_DFLTTL`).
pub const PFSYNC_TTL: u8 = 255;

/// IPv4 type of service the kernels send pfsync with (`IPTOS_LOWDELAY`).
pub const IPTOS_LOWDELAY: u8 = 0x10;

/// The address family of the sync link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 (every kernel).
    V4,
    /// IPv6 (FreeBSD 14 and later only).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The pfsync multicast group of this family.
    pub fn group(self) -> IpAddr {
        match self {
            Family::V4 => PFSYNC_GROUP_V4.into(),
            Family::V6 => PFSYNC_GROUP_V6.into(),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The sync link's configuration, as `ifconfig pfsync0 syncdev IF syncpeer ADDR` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// The sync interface: packets go out on it and are accepted only from it.
    pub syncdev: String,
    /// The peers. Empty: the multicast group of [`Transport::family`] on the syncdev.
    /// Otherwise every packet goes to each of them; they must all be of `family`.
    pub syncpeers: Vec<IpAddr>,
    /// The address family of the link.
    pub family: Family,
}

impl Transport {
    /// Multicast to the pfsync group on `syncdev` (224.0.0.240 or ff12::f0).
    pub fn multicast(syncdev: impl Into<String>, family: Family) -> Transport {
        Transport {
            syncdev: syncdev.into(),
            syncpeers: Vec::new(),
            family,
        }
    }

    /// Unicast to each of `syncpeers` (at least one), whose family is the link's family.
    pub fn unicast(
        syncdev: impl Into<String>,
        syncpeers: Vec<IpAddr>,
    ) -> Result<Transport, NetError> {
        let Some(&first) = syncpeers.first() else {
            return Err(NetError::BadPeer {
                peer: Ipv4Addr::UNSPECIFIED.into(),
                reason: "no syncpeer given for unicast",
            });
        };
        let transport = Transport {
            syncdev: syncdev.into(),
            syncpeers,
            family: Family::of(first),
        };
        transport.validate()?;
        Ok(transport)
    }

    /// Checks that every syncpeer is of the link's family and can be a destination.
    pub fn validate(&self) -> Result<(), NetError> {
        for &peer in &self.syncpeers {
            if Family::of(peer) != self.family {
                return Err(NetError::MixedFamilies {
                    peer,
                    family: self.family,
                });
            }
            if peer.is_unspecified() {
                return Err(NetError::BadPeer {
                    peer,
                    reason: "the unspecified address is not a destination (leave the syncpeers empty for multicast)",
                });
            }
            if let IpAddr::V4(v4) = peer {
                if v4.is_broadcast() {
                    return Err(NetError::BadPeer {
                        peer,
                        reason: "broadcast is not supported",
                    });
                }
            }
        }
        Ok(())
    }

    /// The pfsync group of the link's family.
    pub fn group(&self) -> IpAddr {
        self.family.group()
    }

    /// Where every packet goes: the syncpeers, or the group when there are none.
    pub fn destinations(&self) -> Vec<IpAddr> {
        if self.syncpeers.is_empty() {
            vec![self.group()]
        } else {
            self.syncpeers.clone()
        }
    }

    /// The multicast groups among the destinations, which the receiver joins on the syncdev.
    pub fn groups(&self) -> Vec<IpAddr> {
        self.destinations()
            .into_iter()
            .filter(IpAddr::is_multicast)
            .collect()
    }
}

/// Whether an IPv6 destination needs the syncdev as its scope (zone): link-local unicast,
/// and multicast of interface- or link-local scope (ff12::f0 is link-local scope).
pub(crate) fn needs_scope(addr: &Ipv6Addr) -> bool {
    let s = addr.segments();
    let link_local_unicast = s[0] & 0xffc0 == 0xfe80;
    let small_multicast_scope = addr.is_multicast() && matches!(s[0] & 0x000f, 1 | 2);
    link_local_unicast || small_multicast_scope
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multicast_goes_to_the_group_of_the_family() {
        let v4 = Transport::multicast("em1", Family::V4);
        assert_eq!(v4.destinations(), vec![IpAddr::from([224, 0, 0, 240])]);
        assert_eq!(v4.groups(), v4.destinations());
        let v6 = Transport::multicast("em1", Family::V6);
        assert_eq!(
            v6.destinations(),
            vec![IpAddr::from("ff12::f0".parse::<Ipv6Addr>().unwrap())]
        );
        assert!(v4.validate().is_ok() && v6.validate().is_ok());
    }

    #[test]
    fn unicast_peers_take_their_family() {
        let peers: Vec<IpAddr> = vec!["192.0.2.2".parse().unwrap(), "192.0.2.3".parse().unwrap()];
        let t = Transport::unicast("em1", peers.clone()).unwrap();
        assert_eq!(t.family, Family::V4);
        assert_eq!(t.destinations(), peers);
        assert!(t.groups().is_empty());
        let t6 = Transport::unicast("em1", vec!["2001:db8::2".parse().unwrap()]).unwrap();
        assert_eq!(t6.family, Family::V6);
    }

    #[test]
    fn bad_peers_are_refused_with_the_reason() {
        let mixed = Transport::unicast(
            "em1",
            vec!["192.0.2.2".parse().unwrap(), "2001:db8::2".parse().unwrap()],
        )
        .unwrap_err();
        assert_eq!(
            mixed.to_string(),
            "syncpeer 2001:db8::2: not an IPv4 address, as the other syncpeers"
        );
        let zero = Transport::unicast("em1", vec!["0.0.0.0".parse().unwrap()]).unwrap_err();
        assert!(zero
            .to_string()
            .starts_with("syncpeer 0.0.0.0: the unspecified"));
        assert!(Transport::unicast("em1", vec![]).is_err());
        let bcast = Transport::unicast("em1", vec!["255.255.255.255".parse().unwrap()]);
        assert!(bcast.is_err());
    }

    #[test]
    fn scoped_ipv6_destinations() {
        assert!(needs_scope(&PFSYNC_GROUP_V6));
        assert!(needs_scope(&"fe80::1".parse().unwrap()));
        assert!(needs_scope(&"ff02::1".parse().unwrap()));
        assert!(!needs_scope(&"ff05::f0".parse().unwrap()));
        assert!(!needs_scope(&"2001:db8::2".parse().unwrap()));
    }
}
