//! Errors of the sync link setup.

use std::io;
use std::net::IpAddr;

use super::config::Family;

/// Why the sync link could not be set up.
///
/// Errors on the data path (a failed send, a failed receive) stay plain [`io::Error`]s: the
/// caller counts them (`oerrors`) and goes on.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The syncdev does not exist.
    #[error("syncdev {name}: no such interface")]
    NoSuchInterface {
        /// The configured name.
        name: String,
    },
    /// The syncdev exists but is administratively down.
    #[error("syncdev {name}: interface is down")]
    InterfaceDown {
        /// The configured name.
        name: String,
    },
    /// The syncdev has no address of the family, and this OS needs one to pick the
    /// multicast interface.
    #[error("syncdev {name}: no {family} address")]
    NoAddress {
        /// The syncdev.
        name: String,
        /// The family that has none.
        family: Family,
    },
    /// A syncpeer of the other family than the link.
    #[error("syncpeer {peer}: not an {family} address, as the other syncpeers")]
    MixedFamilies {
        /// The odd peer.
        peer: IpAddr,
        /// The link's family.
        family: Family,
    },
    /// A syncpeer that can not be a destination.
    #[error("syncpeer {peer}: {reason}")]
    BadPeer {
        /// The peer.
        peer: IpAddr,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A system call failed.
    #[error("syncdev {syncdev}: {what}: {source}")]
    Io {
        /// The syncdev.
        syncdev: String,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl NetError {
    pub(crate) fn io(syncdev: &str, what: &'static str, source: impl Into<io::Error>) -> Self {
        NetError::Io {
            syncdev: syncdev.to_owned(),
            what,
            source: source.into(),
        }
    }
}
