//! The secure link's words, beside the plain link's in [`super::config`]:
//!
//! ```text
//! securekey FILE | -securekey      this node's WireGuard private key file (none: no secure link)
//! secureport N                     the UDP port we listen on and dial by default (5240)
//! secureaddr ADDR | -secureaddr    our inner source address (default: the syncdev's)
//! securepeer ADDR[:PORT] pubkey KEY [psk FILE] [inner ADDR] | -securepeer
//! ```
//!
//! Only paths and public keys are held here: the words travel as text to the engine
//! process on every reconfigure, and secrets must not. The parent reads the files.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::secure::PublicKey;

/// A secure link word refused; [`super::config::ConfigError`] carries it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecureWordError {
    /// A value is missing at the end of the words.
    #[error("'{0}' needs a value")]
    MissingValue(&'static str),
    /// A value that cannot be taken.
    #[error("{word} '{value}': {why}")]
    Bad {
        /// The word.
        word: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        why: String,
    },
}

/// The secure link's default UDP port. Chosen beside WireGuard's 51820 range rather than
/// on it, so a host running both needs no change; any port may be configured.
pub const DEFAULT_SECURE_PORT: u16 = 5240;

/// The secure link, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureConfig {
    /// This node's private key file; `None`: no secure link.
    pub key_file: Option<PathBuf>,
    /// The UDP port we bind, and the port of a peer that names none.
    pub port: u16,
    /// The source address of the pfsync packets we wrap; `None`: the syncdev's.
    pub inner_addr: Option<IpAddr>,
    /// The secure peers, one per inner address, in the order given.
    pub peers: Vec<SecurePeerEntry>,
}

impl Default for SecureConfig {
    fn default() -> Self {
        SecureConfig {
            key_file: None,
            port: DEFAULT_SECURE_PORT,
            inner_addr: None,
            peers: Vec::new(),
        }
    }
}

/// One `securepeer` word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurePeerEntry {
    /// Where its datagrams go.
    pub addr: IpAddr,
    /// Its UDP port; `None`: our `secureport`.
    pub port: Option<u16>,
    /// Its static public key.
    pub public_key: PublicKey,
    /// The file of the pre-shared key between us, if any.
    pub psk_file: Option<PathBuf>,
    /// The source of its pfsync packets; `None`: `addr`.
    pub inner: Option<IpAddr>,
}

impl SecurePeerEntry {
    /// The source address its inner packets must carry; identifies the peer.
    pub fn inner_addr(&self) -> IpAddr {
        self.inner.unwrap_or(self.addr)
    }

    /// Where its datagrams go, with our `secureport` when it names none.
    pub fn endpoint(&self, default_port: u16) -> SocketAddr {
        SocketAddr::new(self.addr, self.port.unwrap_or(default_port))
    }
}

impl SecureConfig {
    /// Takes a peer; one with the same inner address is replaced (re-keyed or moved).
    pub fn add_peer(&mut self, entry: SecurePeerEntry) {
        match self
            .peers
            .iter_mut()
            .find(|p| p.inner_addr() == entry.inner_addr())
        {
            Some(old) => *old = entry,
            None => self.peers.push(entry),
        }
    }

    /// Whether a plain-link packet from `source` comes from an address a secure peer
    /// holds (to be refused: no downgrade).
    pub fn is_secure_peer_addr(&self, source: IpAddr) -> bool {
        self.peers
            .iter()
            .any(|p| p.addr == source || p.inner_addr() == source)
    }

    /// The words that give this configuration.
    pub fn to_words(&self) -> Vec<String> {
        let mut words = Vec::new();
        if let Some(path) = &self.key_file {
            words.extend(["securekey".to_string(), path.display().to_string()]);
        }
        words.extend(["secureport".to_string(), self.port.to_string()]);
        if let Some(addr) = self.inner_addr {
            words.extend(["secureaddr".to_string(), addr.to_string()]);
        }
        for peer in &self.peers {
            let target = match peer.port {
                Some(port) => SocketAddr::new(peer.addr, port).to_string(),
                None => peer.addr.to_string(),
            };
            words.extend([
                "securepeer".to_string(),
                target,
                "pubkey".to_string(),
                peer.public_key.to_string(),
            ]);
            if let Some(psk) = &peer.psk_file {
                words.extend(["psk".to_string(), psk.display().to_string()]);
            }
            if let Some(inner) = peer.inner {
                words.extend(["inner".to_string(), inner.to_string()]);
            }
        }
        words
    }
}

fn bad(word: &'static str, value: &str, why: impl Into<String>) -> SecureWordError {
    SecureWordError::Bad {
        word,
        value: value.to_string(),
        why: why.into(),
    }
}

/// A file path in a word: the words reach the engine as whitespace-separated text, so
/// a path with whitespace could not travel; it is refused rather than cut.
pub(super) fn parse_path(word: &'static str, value: &str) -> Result<PathBuf, SecureWordError> {
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        return Err(bad(word, value, "expected a file path without whitespace"));
    }
    if !value.starts_with('/') {
        // The daemon changes directory; a relative path would name another file on
        // SIGHUP than at start.
        return Err(bad(word, value, "expected an absolute path"));
    }
    Ok(PathBuf::from(value))
}

/// A unicast address a peer can have.
fn unicast(word: &'static str, value: &str, addr: IpAddr) -> Result<IpAddr, SecureWordError> {
    if addr.is_unspecified() || addr.is_multicast() || addr == IpAddr::from([255, 255, 255, 255]) {
        return Err(bad(word, value, "expected one host's unicast address"));
    }
    Ok(addr)
}

/// `secureaddr ADDR`.
pub(super) fn parse_inner_addr(word: &'static str, value: &str) -> Result<IpAddr, SecureWordError> {
    let addr: IpAddr = value
        .parse()
        .map_err(|_| bad(word, value, "not an IPv4 or IPv6 address"))?;
    unicast(word, value, addr)
}

/// `secureport N`.
pub(super) fn parse_port(value: &str) -> Result<u16, SecureWordError> {
    value
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| bad("secureport", value, "expected a number from 1 to 65535"))
}

/// `securepeer ADDR[:PORT] pubkey KEY [psk FILE] [inner ADDR]`, after the word.
pub(super) fn parse_secure_peer<'a>(
    words: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
) -> Result<SecurePeerEntry, SecureWordError> {
    let target = words
        .next()
        .ok_or(SecureWordError::MissingValue("securepeer"))?;
    let (addr, port) = match target.parse::<SocketAddr>() {
        Ok(socket) if socket.port() == 0 => {
            return Err(bad("securepeer", target, "port must be 1 to 65535"))
        }
        Ok(socket) => (socket.ip(), Some(socket.port())),
        Err(_) => match target.parse::<IpAddr>() {
            Ok(addr) => (addr, None),
            Err(_) => {
                return Err(bad(
                    "securepeer",
                    target,
                    "expected ADDR, ADDR:PORT or [IPv6]:PORT",
                ))
            }
        },
    };
    let addr = unicast("securepeer", target, addr)?;
    if words.next_if_eq(&"pubkey").is_none() {
        return Err(bad(
            "securepeer",
            target,
            "expected 'pubkey KEY' after the address",
        ));
    }
    let key_text = words
        .next()
        .ok_or(SecureWordError::MissingValue("securepeer ... pubkey"))?;
    let public_key = PublicKey::parse(key_text).map_err(|e| {
        bad(
            "securepeer",
            &format!("{target} pubkey {key_text}"),
            e.to_string(),
        )
    })?;
    let mut entry = SecurePeerEntry {
        addr,
        port,
        public_key,
        psk_file: None,
        inner: None,
    };
    loop {
        if words.next_if_eq(&"psk").is_some() {
            let path = words
                .next()
                .ok_or(SecureWordError::MissingValue("securepeer ... psk"))?;
            entry.psk_file = Some(parse_path("securepeer ... psk", path)?);
        } else if words.next_if_eq(&"inner").is_some() {
            let inner = words
                .next()
                .ok_or(SecureWordError::MissingValue("securepeer ... inner"))?;
            entry.inner = Some(parse_inner_addr("securepeer ... inner", inner)?);
        } else {
            return Ok(entry);
        }
    }
}
