//! The sync configuration, in the words `ifconfig pfsync0` takes:
//!
//! ```text
//! syncdev IF | -syncdev        the sync interface
//! syncpeer ADDR | -syncpeer    a unicast peer (may be given several times; none: multicast)
//! maxupd N                     updates of a TCP state before it is sent at once (0-255)
//! defer | -defer               deferral (refused: the kernel holds the packet, we cannot)
//! version 1301|1400|1500|openbsd   the dialect we send
//! mtu N                        largest packet on the sync link
//! up | down                    sync on or off
//! nosync-if IF                 keep states on interface IF out of sync (both ways)
//! nosync-proto P               ... of protocol P (tcp, udp, icmp, icmp6, sctp or 0-255)
//! nosync-net ADDR[/LEN]        ... with an address in this prefix (either side)
//! nosync-port N                ... of TCP, UDP or SCTP with port N (either side)
//! -nosync                      drop every nosync-* filter
//! syncdelay N                  announce new local states once N seconds old (0: at once)
//! immediate on|off|auto        send changes at the end of the turn, not after the 1 s
//!                              batch (auto: when every peer is a pfsyncd)
//! ifmap PEERIF LOCALIF [peer ADDR] | -ifmap   a peer's interface name is our LOCALIF
//! anysource | -anysource       with syncpeers: take packets from any source, or (the
//!                              default) from the syncpeers only
//! securekey, secureport, secureaddr, securepeer   the secure link ([`super::secure_config`])
//! ```
//!
//! Words are applied in order on top of the current configuration, as ifconfig applies
//! them to the interface, so a SIGHUP can re-apply the same words to a running daemon.

use std::net::IpAddr;

use super::immediate::Immediate;
use super::secure_config::{self, SecureConfig};
use crate::engine::{AllowedSources, FilterRule, IfMap, IfMapping};
use crate::wire::{Dialect, IfName};

/// The smallest MTU that still carries one full state record of the largest format with
/// IP header, pfsync header, subheader and EOF.
pub const MIN_MTU: u32 = 20 + 20 + 4 + 360 + 4;

/// What pfsync does, in `ifconfig pfsync0` terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    /// The sync interface; `None` until configured.
    pub syncdev: Option<IfName>,
    /// Unicast peers; empty means the multicast group (224.0.0.240 / ff12::f0).
    pub syncpeers: Vec<IpAddr>,
    /// `maxupd`.
    pub maxupd: u8,
    /// The dialect we send.
    pub dialect: Dialect,
    /// MTU of the sync link.
    pub mtu: u32,
    /// Sync is on.
    pub up: bool,
    /// Classes of states kept out of sync both ways (`nosync-*`), in the order given.
    pub sync_filter: Vec<FilterRule>,
    /// Seconds a new local state must have lived before it is announced (`syncdelay`).
    pub sync_delay_secs: u32,
    /// The peers' interface names and ours (`ifmap`).
    pub ifmap: IfMap,
    /// Packets from any source are taken even with unicast sync peers (`anysource`).
    pub anysource: bool,
    /// Changes leave at the end of the turn rather than after the 1 s batch
    /// (`immediate`; see [`super::immediate`]).
    pub immediate: Immediate,
    /// The secure link (`securekey`, `secureport`, `secureaddr`, `securepeer`).
    pub secure: SecureConfig,
    /// pfsyncd peers find each other and use the extensions (`extensions on|off`):
    /// sequence numbers, loss recovery and digests between them (`crate::session`).
    pub extensions: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            syncdev: None,
            syncpeers: Vec::new(),
            maxupd: 128,
            // The conservative default towards unknown FreeBSD peers (pfsync-wire.md §4).
            dialect: Dialect::FreeBsd1301,
            mtu: 1500,
            up: false,
            sync_filter: Vec::new(),
            sync_delay_secs: 0,
            ifmap: IfMap::default(),
            anysource: false,
            immediate: Immediate::Auto,
            secure: SecureConfig::default(),
            extensions: true,
        }
    }
}

/// One word of the sync configuration, as `--help` and the man page show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Word {
    /// The word with its value, as the help shows it: `syncdev IF`.
    pub usage: &'static str,
    /// A use of it that `SyncConfig::apply` takes: `syncdev em1`.
    pub example: &'static str,
    /// What it does, in one line.
    pub meaning: &'static str,
}

impl Word {
    /// The word itself: `syncdev`.
    pub fn name(&self) -> &'static str {
        self.usage.split(' ').next().unwrap_or(self.usage)
    }
}

/// Every word `SyncConfig::apply` takes, in the order `--help` lists them. The help,
/// the unknown-word error and the man page's list are checked against this table, so a
/// new word is added here with its match arm in `apply` (a test finds an arm missing
/// from the table).
pub const WORDS: &[Word] = &[
    Word {
        usage: "syncdev IF",
        example: "syncdev em1",
        meaning: "the sync interface; pfsync packets are accepted only from it",
    },
    Word {
        usage: "-syncdev",
        example: "-syncdev",
        meaning: "no sync interface",
    },
    Word {
        usage: "syncpeer ADDR",
        example: "syncpeer 10.0.0.2",
        meaning: "send to this unicast IPv4/IPv6 peer (may be repeated; none: multicast 224.0.0.240, ff12::f0)",
    },
    Word {
        usage: "-syncpeer",
        example: "-syncpeer",
        meaning: "forget every syncpeer: back to multicast",
    },
    Word {
        usage: "maxupd N",
        example: "maxupd 128",
        meaning: "a TCP state updated N times is sent at once (0-255, default 128)",
    },
    Word {
        usage: "defer",
        example: "defer",
        meaning: "refused: deferral needs the kernel to hold packets, which a userland daemon cannot",
    },
    Word {
        usage: "-defer",
        example: "-defer",
        meaning: "no deferral (the default and the only choice)",
    },
    Word {
        usage: "version V",
        example: "version openbsd",
        meaning: "the dialect sent: 1301 (default), 1400, 1500 or openbsd; every one is received",
    },
    Word {
        usage: "mtu N",
        example: "mtu 1500",
        meaning: "largest packet on the sync link (408-65535, default 1500)",
    },
    Word {
        usage: "up",
        example: "up",
        meaning: "synchronise (without a syncdev: secure peers only, no plain link)",
    },
    Word {
        usage: "down",
        example: "down",
        meaning: "stop synchronising (the default)",
    },
    Word {
        usage: "ifmap PEERIF LOCALIF [peer ADDR]",
        example: "ifmap em0 igb0 peer 10.0.0.2",
        meaning: "a peer's state on its PEERIF is taken in on our LOCALIF (with peer: from ADDR only)",
    },
    Word {
        usage: "-ifmap",
        example: "-ifmap",
        meaning: "drop every interface mapping",
    },
    Word {
        usage: "anysource",
        example: "anysource",
        meaning: "with syncpeers, also take packets from other sources, as the kernels do",
    },
    Word {
        usage: "-anysource",
        example: "-anysource",
        meaning: "with syncpeers, take packets from them only (the default)",
    },
    Word {
        usage: "nosync-if IF",
        example: "nosync-if em2",
        meaning: "keep states on IF out of sync, both ways (may be repeated)",
    },
    Word {
        usage: "nosync-proto P",
        example: "nosync-proto udp",
        meaning: "keep states of protocol P (tcp, udp, icmp, icmp6, sctp or 0-255) out of sync",
    },
    Word {
        usage: "nosync-net ADDR[/LEN]",
        example: "nosync-net 192.0.2.0/24",
        meaning: "keep states with an address in this prefix out of sync",
    },
    Word {
        usage: "nosync-port N",
        example: "nosync-port 53",
        meaning: "keep states with this port (either side) out of sync",
    },
    Word {
        usage: "-nosync",
        example: "-nosync",
        meaning: "drop every sync filter",
    },
    Word {
        usage: "syncdelay N",
        example: "syncdelay 10",
        meaning: "announce a new state only once it has lived N seconds (0-3600, default 0: at once)",
    },
    Word {
        usage: "immediate on|off|auto",
        example: "immediate on",
        meaning: "send changes at the end of the turn, packed, not after the 1 s batch (auto, the default: when every peer is a pfsyncd)",
    },
    Word {
        usage: "extensions on|off",
        example: "extensions off",
        meaning: "find pfsyncd peers and recover lost messages between them (default on; off: kernel behaviour only)",
    },
    Word {
        usage: "securekey FILE",
        example: "securekey /etc/pfsyncd.key",
        meaning: "this node's WireGuard private key file (mode 600) for the secure link",
    },
    Word {
        usage: "-securekey",
        example: "-securekey",
        meaning: "no secure link (the default)",
    },
    Word {
        usage: "secureport N",
        example: "secureport 5240",
        meaning: "the secure link's UDP port, ours and the peers' by default (1-65535, default 5240)",
    },
    Word {
        usage: "secureaddr ADDR",
        example: "secureaddr 10.0.0.1",
        meaning: "the source address of the pfsync packets we send over the secure link (default: the syncdev's)",
    },
    Word {
        usage: "-secureaddr",
        example: "-secureaddr",
        meaning: "the syncdev's address as our secure link address",
    },
    Word {
        usage: "securepeer ADDR[:PORT] pubkey KEY [psk FILE] [inner ADDR]",
        example: "securepeer 192.0.2.7:5240 pubkey HIo9x/T6qmUJ9cYMqWfPamNTEMNzbXw5G5ndlzmO3B0= psk /etc/pfsyncd.psk",
        meaning: "a pfsyncd peer reached over UDP and authenticated by its public key (repeatable; IPv6 as [ADDR]:PORT)",
    },
    Word {
        usage: "-securepeer",
        example: "-securepeer",
        meaning: "forget every securepeer",
    },
];

/// The names of the words, for the unknown-word error: "syncdev, ..., up or down".
fn expected_words() -> String {
    let mut names: Vec<&str> = Vec::new();
    for word in WORDS {
        let name = word.name().trim_start_matches('-');
        if !names.contains(&name) {
            names.push(name);
        }
    }
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

/// A word or value `SyncConfig::apply` refuses; its `Display` is the one line the
/// daemon prints before exiting with status 64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A word ifconfig's pfsync part does not know.
    #[error("unknown word '{0}' (expected {expected})", expected = expected_words())]
    UnknownWord(String),
    /// A word that needs a value came last.
    #[error("'{0}' needs a value")]
    MissingValue(&'static str),
    /// An interface name that does not fit `IFNAMSIZ`.
    #[error("syncdev '{0}': not an interface name (1 to 15 bytes, no NUL)")]
    BadInterface(String),
    /// Not an IP address, or one pfsync refuses as a peer.
    #[error("syncpeer '{value}': {why}")]
    BadPeer {
        /// The value given.
        value: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// A number out of range.
    #[error("{word} '{value}': expected a number from {min} to {max}")]
    BadNumber {
        /// The word.
        word: &'static str,
        /// The value given.
        value: String,
        /// Lowest allowed.
        min: u32,
        /// Highest allowed.
        max: u32,
    },
    /// An unknown `version`.
    #[error("version '{0}': expected 1301, 1400, 1500 or openbsd")]
    BadVersion(String),
    /// An `extensions` value other than on or off.
    #[error("extensions '{0}': expected on or off")]
    BadExtensions(String),
    /// `defer` cannot be done in userland.
    #[error("defer is not supported: the kernel holds the first packet of a new state until the peer acknowledges it, and a userland daemon cannot hold kernel packets; run -defer")]
    DeferUnsupported,
    /// A `nosync-*` value that names no class of states.
    #[error("{word} '{value}': {why}")]
    BadFilter {
        /// The word.
        word: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// A secure link word or value that cannot be taken.
    #[error(transparent)]
    BadSecure(#[from] secure_config::SecureWordError),
    /// An `immediate` value other than on, off or auto.
    #[error("immediate '{0}': expected on, off or auto")]
    BadImmediate(String),
    /// An `ifmap` that cannot be applied.
    #[error("ifmap '{value}': {why}")]
    BadIfMap {
        /// The value given.
        value: String,
        /// Why it is refused.
        why: &'static str,
    },
}

impl SyncConfig {
    /// Applies `ifconfig pfsync0`-style words in order.
    pub fn apply<S: AsRef<str>>(&mut self, words: &[S]) -> Result<(), ConfigError> {
        let mut words = words.iter().map(AsRef::as_ref).peekable();
        while let Some(word) = words.next() {
            let mut value =
                |name: &'static str| words.next().ok_or(ConfigError::MissingValue(name));
            match word {
                "syncdev" => {
                    let v = value("syncdev")?;
                    let name = IfName::new(v)
                        .filter(|n| !n.is_empty())
                        .ok_or_else(|| ConfigError::BadInterface(v.to_string()))?;
                    self.syncdev = Some(name);
                }
                "-syncdev" => self.syncdev = None,
                "syncpeer" => {
                    let v = value("syncpeer")?;
                    let peer = parse_peer(v)?;
                    if !self.syncpeers.contains(&peer) {
                        self.syncpeers.push(peer);
                    }
                }
                "-syncpeer" => self.syncpeers.clear(),
                "maxupd" => {
                    let v = value("maxupd")?;
                    self.maxupd = parse_number("maxupd", v, 0, 255)? as u8;
                }
                "mtu" => {
                    let v = value("mtu")?;
                    self.mtu = parse_number("mtu", v, MIN_MTU, 65535)?;
                }
                "version" => {
                    let v = value("version")?;
                    self.dialect = Dialect::from_name(v)
                        .ok_or_else(|| ConfigError::BadVersion(v.to_string()))?;
                }
                "defer" => return Err(ConfigError::DeferUnsupported),
                "-defer" => {}
                "up" => self.up = true,
                "down" => self.up = false,
                "nosync-if" => {
                    let v = value("nosync-if")?;
                    let name = IfName::new(v).filter(|n| !n.is_empty()).ok_or_else(|| {
                        bad_filter("nosync-if", v, "not an interface name (1 to 15 bytes)")
                    })?;
                    self.add_filter(FilterRule::Interface(name));
                }
                "nosync-proto" => {
                    let v = value("nosync-proto")?;
                    self.add_filter(FilterRule::Protocol(parse_protocol(v)?));
                }
                "nosync-net" => {
                    let v = value("nosync-net")?;
                    self.add_filter(parse_network(v)?);
                }
                "nosync-port" => {
                    let v = value("nosync-port")?;
                    let port = parse_number("nosync-port", v, 1, 65535)?;
                    self.add_filter(FilterRule::Port(port as u16));
                }
                "-nosync" => self.sync_filter.clear(),
                "syncdelay" => {
                    let v = value("syncdelay")?;
                    self.sync_delay_secs = parse_number("syncdelay", v, 0, MAX_SYNC_DELAY_SECS)?;
                }
                "immediate" => {
                    let v = value("immediate")?;
                    self.immediate = Immediate::from_name(v)
                        .ok_or_else(|| ConfigError::BadImmediate(v.to_string()))?;
                }
                "ifmap" => {
                    let mapping = parse_ifmap(&mut words)?;
                    self.ifmap.insert(mapping);
                }
                "-ifmap" => self.ifmap.clear(),
                "anysource" => self.anysource = true,
                "-anysource" => self.anysource = false,
                "extensions" => {
                    let v = value("extensions")?;
                    self.extensions = match v {
                        "on" => true,
                        "off" => false,
                        other => return Err(ConfigError::BadExtensions(other.to_string())),
                    };
                }
                "securekey" => {
                    let v = value("securekey")?;
                    self.secure.key_file = Some(secure_config::parse_path("securekey", v)?);
                }
                "-securekey" => self.secure.key_file = None,
                "secureport" => {
                    let v = value("secureport")?;
                    self.secure.port = secure_config::parse_port(v)?;
                }
                "secureaddr" => {
                    let v = value("secureaddr")?;
                    self.secure.inner_addr =
                        Some(secure_config::parse_inner_addr("secureaddr", v)?);
                }
                "-secureaddr" => self.secure.inner_addr = None,
                "securepeer" => {
                    let peer = secure_config::parse_secure_peer(&mut words)?;
                    self.secure.add_peer(peer);
                }
                "-securepeer" => self.secure.peers.clear(),
                other => return Err(ConfigError::UnknownWord(other.to_string())),
            }
        }
        Ok(())
    }

    /// A configuration from words on top of the defaults.
    pub fn from_words<S: AsRef<str>>(words: &[S]) -> Result<SyncConfig, ConfigError> {
        let mut config = SyncConfig::default();
        config.apply(words)?;
        Ok(config)
    }

    /// The words that give this configuration, as `ifconfig pfsync0` would print it.
    pub fn to_words(&self) -> Vec<String> {
        let mut words = Vec::new();
        if let Some(dev) = &self.syncdev {
            words.extend(["syncdev".to_string(), dev.to_string()]);
        }
        for peer in &self.syncpeers {
            words.extend(["syncpeer".to_string(), peer.to_string()]);
        }
        words.extend(["maxupd".to_string(), self.maxupd.to_string()]);
        words.extend(["version".to_string(), self.dialect.name().to_string()]);
        words.extend(["mtu".to_string(), self.mtu.to_string()]);
        words.push("-defer".to_string());
        for rule in &self.sync_filter {
            words.extend(filter_words(rule));
        }
        words.extend(["syncdelay".to_string(), self.sync_delay_secs.to_string()]);
        words.extend(["immediate".to_string(), self.immediate.name().to_string()]);
        words.push(if self.up { "up" } else { "down" }.to_string());
        for m in self.ifmap.mappings() {
            words.extend(["ifmap".to_string(), m.peer_name.to_string()]);
            words.push(m.local_name.to_string());
            if let Some(peer) = m.peer {
                words.extend(["peer".to_string(), peer.to_string()]);
            }
        }
        if self.anysource {
            words.push("anysource".to_string());
        }
        if !self.extensions {
            words.extend(["extensions".to_string(), "off".to_string()]);
        }
        words.extend(self.secure.to_words());
        words
    }

    /// The senders whose packets the engine takes: with unicast sync peers and no
    /// `anysource`, those peers only; otherwise anyone, as the kernels.
    pub fn allowed_sources(&self) -> AllowedSources {
        if self.syncpeers.is_empty() || self.anysource {
            AllowedSources::Any
        } else {
            // What the secure link authenticated comes from a configured peer's inner
            // address: a syncpeer list for the plain link does not refuse it.
            let secure = self.secure.peers.iter().map(|p| p.inner_addr());
            AllowedSources::Only(self.syncpeers.iter().copied().chain(secure).collect())
        }
    }
}

/// `ifmap PEERIF LOCALIF [peer ADDR]`, after the word `ifmap`.
fn parse_ifmap<'a>(
    words: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
) -> Result<IfMapping, ConfigError> {
    let peer_name = words.next().ok_or(ConfigError::MissingValue("ifmap"))?;
    let local_name = words.next().ok_or(ConfigError::MissingValue("ifmap"))?;
    let value = format!("{peer_name} {local_name}");
    let bad = |why| ConfigError::BadIfMap {
        value: value.clone(),
        why,
    };
    let name = |text: &str| {
        let name = IfName::new(text)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("not an interface name (1 to 15 bytes, no NUL)"))?;
        if IfMap::is_floating(&name) {
            return Err(bad(
                "'all' is pf's name for floating states, the same on every system: never mapped",
            ));
        }
        Ok(name)
    };
    let mut mapping = IfMapping {
        peer_name: name(peer_name)?,
        local_name: name(local_name)?,
        peer: None,
    };
    if words.next_if_eq(&"peer").is_some() {
        let addr = words
            .next()
            .ok_or(ConfigError::MissingValue("ifmap ... peer"))?;
        let addr: IpAddr = addr.parse().map_err(|_| ConfigError::BadIfMap {
            value: format!("{value} peer {addr}"),
            why: "not an IPv4 or IPv6 address",
        })?;
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(ConfigError::BadIfMap {
                value: format!("{value} peer {addr}"),
                why: "a peer is one sender's unicast address",
            });
        }
        mapping.peer = Some(addr);
    }
    Ok(mapping)
}

/// The longest `syncdelay`: a state not announced within an hour is one a failover
/// would lose for a long time; longer is a typo more likely than a wish.
pub const MAX_SYNC_DELAY_SECS: u32 = 3600;

impl SyncConfig {
    fn add_filter(&mut self, rule: FilterRule) {
        if !self.sync_filter.contains(&rule) {
            self.sync_filter.push(rule);
        }
    }

    /// The `nosync-*` words of the filter, as `to_words` gives them.
    pub fn filter_words(&self) -> Vec<String> {
        self.sync_filter.iter().flat_map(filter_words).collect()
    }

    /// The engine's filter of these words.
    pub fn engine_filter(&self) -> crate::engine::SyncFilter {
        crate::engine::SyncFilter::new(self.sync_filter.clone())
    }

    /// A node whose peers are all on the secure link: secure peers and no `syncdev`.
    /// `up` then opens no plain link at all (nothing is sent twice, nothing is taken
    /// from the LAN); with a `syncdev` the plain link stays, for kernel peers.
    pub fn secure_only(&self) -> bool {
        !self.secure.peers.is_empty() && self.syncdev.is_none()
    }

    /// Whether this configuration alone says every peer is a pfsyncd (for `immediate
    /// auto`): a secure peer is one by definition, and anyone on a plain link may be a
    /// kernel. So: a secure-only node. (On a plain link the engine process also asks
    /// the sessions, see `daemon::immediate`.)
    pub fn all_peers_pfsyncd(&self) -> bool {
        self.secure_only()
    }

    /// The engine's delay of these words.
    pub fn engine_sync_delay(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.sync_delay_secs))
    }
}

fn bad_filter(word: &'static str, value: &str, why: &'static str) -> ConfigError {
    ConfigError::BadFilter {
        word,
        value: value.to_string(),
        why,
    }
}

/// Protocol names as pf.conf spells them, and their numbers.
const PROTOCOL_NAMES: [(&str, u8); 6] = [
    ("icmp", 1),
    ("tcp", 6),
    ("udp", 17),
    ("icmp6", 58),
    ("ipv6-icmp", 58),
    ("sctp", 132),
];

fn parse_protocol(value: &str) -> Result<u8, ConfigError> {
    if let Some((_, n)) = PROTOCOL_NAMES.iter().find(|(name, _)| *name == value) {
        return Ok(*n);
    }
    value.parse::<u8>().map_err(|_| {
        bad_filter(
            "nosync-proto",
            value,
            "expected tcp, udp, icmp, icmp6, sctp or a number from 0 to 255",
        )
    })
}

fn parse_network(value: &str) -> Result<FilterRule, ConfigError> {
    let (addr, len) = match value.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (value, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| {
        bad_filter(
            "nosync-net",
            value,
            "expected an IPv4 or IPv6 address, optionally /prefix length",
        )
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        None => max,
        Some(l) => l.parse::<u8>().ok().filter(|&n| n <= max).ok_or_else(|| {
            bad_filter(
                "nosync-net",
                value,
                if max == 32 {
                    "prefix length must be 0 to 32"
                } else {
                    "prefix length must be 0 to 128"
                },
            )
        })?,
    };
    Ok(FilterRule::Network { addr, prefix_len })
}

/// The words that give one filter rule.
fn filter_words(rule: &FilterRule) -> [String; 2] {
    match rule {
        FilterRule::Interface(name) => ["nosync-if".into(), name.to_string()],
        FilterRule::Protocol(n) => {
            let name = PROTOCOL_NAMES
                .iter()
                .find(|(_, number)| number == n)
                .map_or_else(|| n.to_string(), |(name, _)| name.to_string());
            ["nosync-proto".into(), name]
        }
        FilterRule::Network { addr, prefix_len } => {
            ["nosync-net".into(), format!("{addr}/{prefix_len}")]
        }
        FilterRule::Port(p) => ["nosync-port".into(), p.to_string()],
    }
}

fn parse_number(word: &'static str, value: &str, min: u32, max: u32) -> Result<u32, ConfigError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| ConfigError::BadNumber {
            word,
            value: value.to_string(),
            min,
            max,
        })
}

fn parse_peer(value: &str) -> Result<IpAddr, ConfigError> {
    let bad = |why| ConfigError::BadPeer {
        value: value.to_string(),
        why,
    };
    let addr: IpAddr = value
        .parse()
        .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
    // The kernels refuse these as a syncpeer (OpenBSD rejects 0.0.0.0 and the broadcast
    // address; neither is a peer).
    if addr.is_unspecified() {
        return Err(bad(
            "the unspecified address is not a peer (leave syncpeer out for multicast)",
        ));
    }
    if addr == IpAddr::from([255, 255, 255, 255]) {
        return Err(bad("the broadcast address is not a peer"));
    }
    Ok(addr)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_words_of_the_brief() {
        let c = SyncConfig::from_words(&[
            "syncdev", "em1", "syncpeer", "10.0.0.2", "maxupd", "128", "up",
        ])
        .unwrap();
        assert_eq!(c.syncdev, IfName::new("em1"));
        assert_eq!(c.syncpeers, vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.maxupd, 128);
        assert!(c.up);
    }

    #[test]
    fn several_peers_and_ipv6() {
        let c = SyncConfig::from_words(&[
            "syncpeer", "10.0.0.2", "syncpeer", "fd2c::2", "syncpeer", "10.0.0.2", "version",
            "openbsd",
        ])
        .unwrap();
        assert_eq!(c.syncpeers.len(), 2);
        assert_eq!(c.dialect, Dialect::OpenBsd);
        let c2 = SyncConfig::from_words(&c.to_words()).unwrap();
        assert_eq!(c2, c);
    }

    #[test]
    fn words_apply_in_order() {
        let mut c =
            SyncConfig::from_words(&["syncdev", "em1", "syncpeer", "10.0.0.2", "up"]).unwrap();
        c.apply(&["-syncpeer", "down", "maxupd", "0"]).unwrap();
        assert!(c.syncpeers.is_empty());
        assert!(!c.up);
        assert_eq!(c.maxupd, 0);
    }

    #[test]
    fn refusals_are_one_clear_line() {
        let cases: &[(&[&str], &str)] = &[
            (&["syncdev"], "'syncdev' needs a value"),
            (
                &["syncdev", "a-very-long-interface-name"],
                "not an interface name",
            ),
            (&["syncpeer", "10.0.0.256"], "not an IPv4 or IPv6 address"),
            (&["syncpeer", "0.0.0.0"], "unspecified"),
            (&["syncpeer", "255.255.255.255"], "broadcast"),
            (&["maxupd", "256"], "from 0 to 255"),
            (&["maxupd", "-1"], "from 0 to 255"),
            (&["mtu", "100"], "from 408 to 65535"),
            (&["version", "1200"], "expected 1301, 1400, 1500 or openbsd"),
            (&["defer"], "userland daemon cannot hold kernel packets"),
            (&["carpdev", "em0"], "unknown word 'carpdev'"),
            (&["ifmap", "em0"], "'ifmap' needs a value"),
            (&["ifmap", "em0", "all"], "never mapped"),
            (&["ifmap", "all", "em0"], "never mapped"),
            (
                &["ifmap", "em0", "a-very-long-interface-name"],
                "not an interface name",
            ),
            (
                &["ifmap", "em0", "igb0", "peer"],
                "'ifmap ... peer' needs a value",
            ),
            (
                &["ifmap", "em0", "igb0", "peer", "x"],
                "not an IPv4 or IPv6 address",
            ),
            (&["ifmap", "em0", "igb0", "peer", "224.0.0.240"], "unicast"),
            (&["anysource", "yes"], "unknown word 'yes'"),
        ];
        for (words, want) in cases {
            let err = SyncConfig::from_words(words).unwrap_err().to_string();
            assert!(err.contains(want), "{words:?}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    /// Words the table lists that `apply` refuses on purpose, with a clear reason.
    const REFUSED: &[&str] = &["defer"];

    #[test]
    fn every_word_of_the_table_is_taken_by_apply() {
        for word in WORDS {
            let example: Vec<&str> = word.example.split(' ').collect();
            assert_eq!(example[0], word.name(), "{word:?}: example of another word");
            let result = SyncConfig::from_words(&example);
            if REFUSED.contains(&word.name()) {
                let err = result.unwrap_err();
                assert!(
                    !matches!(err, ConfigError::UnknownWord(_)),
                    "{word:?}: {err}"
                );
            } else {
                assert!(result.is_ok(), "{word:?}: {}", result.unwrap_err());
            }
            assert!(
                !word.meaning.contains('\n'),
                "{word:?}: meaning on one line"
            );
        }
        let mtu = WORDS.iter().find(|w| w.name() == "mtu").unwrap();
        assert!(mtu.meaning.contains(&format!("{MIN_MTU}-65535")), "{mtu:?}");
    }

    /// The words the arms of `apply`'s outer match name, read from this file: the arms
    /// at the indentation of its catch-all `other =>` arm.
    fn words_apply_matches() -> Vec<String> {
        let source = include_str!("config.rs");
        let body = &source[source.find("pub fn apply").expect("apply in config.rs")..];
        let catch_all = body
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with("other => return Err(ConfigError::UnknownWord")
            })
            .expect("the catch-all arm of apply");
        let indent = catch_all.len() - catch_all.trim_start().len();
        let mut words = Vec::new();
        for line in body.lines().take_while(|l| *l != catch_all) {
            let arm = &line[line.len() - line.trim_start().len()..];
            if line.len() - arm.len() != indent || !arm.starts_with('"') {
                continue;
            }
            let pattern = arm.split("=>").next().unwrap_or("");
            for alternative in pattern.split('|') {
                words.push(alternative.trim().trim_matches('"').to_string());
            }
        }
        words
    }

    #[test]
    fn every_word_apply_takes_is_in_the_table() {
        let matched = words_apply_matches();
        assert!(matched.len() >= WORDS.len(), "{matched:?}");
        for word in &matched {
            assert!(
                WORDS.iter().any(|w| w.name() == word),
                "'{word}' is taken by SyncConfig::apply but missing from WORDS"
            );
            // And it is one the unknown-word error names.
            let err = SyncConfig::from_words(&["no-such-word"])
                .unwrap_err()
                .to_string();
            assert!(err.contains(word.trim_start_matches('-')), "{err}");
        }
    }

    #[test]
    fn sync_filter_and_delay_words() {
        let c = SyncConfig::from_words(&[
            "nosync-if",
            "em2",
            "nosync-proto",
            "udp",
            "nosync-proto",
            "47",
            "nosync-net",
            "10.9.0.0/16",
            "nosync-net",
            "fd00::1",
            "nosync-port",
            "53",
            "nosync-port",
            "53",
            "syncdelay",
            "2",
        ])
        .unwrap();
        assert_eq!(
            c.sync_filter,
            vec![
                FilterRule::Interface(IfName::new("em2").unwrap()),
                FilterRule::Protocol(17),
                FilterRule::Protocol(47),
                FilterRule::Network {
                    addr: "10.9.0.0".parse().unwrap(),
                    prefix_len: 16
                },
                FilterRule::Network {
                    addr: "fd00::1".parse().unwrap(),
                    prefix_len: 128
                },
                FilterRule::Port(53),
            ]
        );
        assert_eq!(c.sync_delay_secs, 2);
        assert_eq!(SyncConfig::from_words(&c.to_words()).unwrap(), c);
        let mut c = c;
        c.apply(&["-nosync", "syncdelay", "0"]).unwrap();
        assert!(c.sync_filter.is_empty());
        assert_eq!(c.sync_delay_secs, 0);
    }

    #[test]
    fn sync_filter_refusals_are_one_clear_line() {
        let cases: &[(&[&str], &str)] = &[
            (&["nosync-if"], "'nosync-if' needs a value"),
            (
                &["nosync-if", "a-very-long-interface-name"],
                "not an interface name",
            ),
            (&["nosync-proto", "gre2"], "expected tcp, udp"),
            (&["nosync-proto", "256"], "expected tcp, udp"),
            (&["nosync-net", "10.9.0.0/33"], "0 to 32"),
            (&["nosync-net", "fd00::/129"], "0 to 128"),
            (
                &["nosync-net", "10.9.0/16"],
                "expected an IPv4 or IPv6 address",
            ),
            (&["nosync-port", "0"], "from 1 to 65535"),
            (&["nosync-port", "65536"], "from 1 to 65535"),
            (&["syncdelay", "-1"], "from 0 to 3600"),
            (&["syncdelay", "3601"], "from 0 to 3600"),
        ];
        for (words, want) in cases {
            let err = SyncConfig::from_words(words).unwrap_err().to_string();
            assert!(err.contains(want), "{words:?}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn interface_mappings_global_and_per_peer() {
        let c = SyncConfig::from_words(&[
            "syncpeer", "10.0.0.2", "ifmap", "em0", "igb0", "ifmap", "em1", "igb1", "peer",
            "10.0.0.2", "up",
        ])
        .unwrap();
        let m = c.ifmap.mappings();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].peer_name, m[0].local_name),
            (IfName::new("em0").unwrap(), IfName::new("igb0").unwrap())
        );
        assert_eq!(m[0].peer, None);
        assert_eq!(m[1].peer, Some("10.0.0.2".parse().unwrap()));
        assert!(c.up, "the word after a mapping is read as a word");
        let again = SyncConfig::from_words(&c.to_words()).unwrap();
        assert_eq!(again, c);
        let mut c = c;
        c.apply(&["-ifmap"]).unwrap();
        assert!(c.ifmap.is_empty());
    }

    #[test]
    fn unicast_peers_only_unless_anysource() {
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let multicast = SyncConfig::from_words(&["syncdev", "em1"]).unwrap();
        assert_eq!(multicast.allowed_sources(), AllowedSources::Any);
        let mut c = SyncConfig::from_words(&["syncpeer", "10.0.0.2"]).unwrap();
        assert_eq!(c.allowed_sources(), AllowedSources::Only(vec![peer]));
        c.apply(&["anysource"]).unwrap();
        assert_eq!(c.allowed_sources(), AllowedSources::Any);
        assert_eq!(SyncConfig::from_words(&c.to_words()).unwrap(), c);
        c.apply(&["-anysource"]).unwrap();
        assert_eq!(c.allowed_sources(), AllowedSources::Only(vec![peer]));
    }
}

#[cfg(test)]
mod secure_words_test {
    use super::secure_config::SecureConfig;
    use super::*;
    use std::path::PathBuf;

    const KEY: &str = "HIo9x/T6qmUJ9cYMqWfPamNTEMNzbXw5G5ndlzmO3B0=";

    #[test]
    fn secure_words_ipv4_and_ipv6_round_trip() {
        let c = SyncConfig::from_words(&[
            "securekey",
            "/etc/pfsyncd.key",
            "secureport",
            "6000",
            "secureaddr",
            "10.0.0.1",
            "securepeer",
            "192.0.2.7",
            "pubkey",
            KEY,
            "securepeer",
            "[2001:db8::7]:5300",
            "pubkey",
            KEY,
            "psk",
            "/etc/pfsyncd.psk",
            "inner",
            "fd00::7",
            "up",
        ])
        .unwrap();
        assert!(c.up, "the word after a securepeer is read as a word");
        let s = &c.secure;
        assert_eq!(s.key_file, Some(PathBuf::from("/etc/pfsyncd.key")));
        assert_eq!(s.port, 6000);
        assert_eq!(s.inner_addr, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(s.peers.len(), 2);
        assert_eq!(
            s.peers[0].endpoint(s.port),
            "192.0.2.7:6000".parse().unwrap()
        );
        assert_eq!(
            s.peers[0].inner_addr(),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            s.peers[1].endpoint(s.port),
            "[2001:db8::7]:5300".parse().unwrap()
        );
        assert_eq!(
            s.peers[1].inner_addr(),
            "fd00::7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(s.peers[1].public_key.to_string(), KEY);
        assert!(s.is_secure_peer_addr("fd00::7".parse().unwrap()));
        assert!(!s.is_secure_peer_addr("10.0.0.9".parse().unwrap()));
        assert_eq!(SyncConfig::from_words(&c.to_words()).unwrap(), c);
    }

    #[test]
    fn a_peer_given_again_is_replaced_and_minus_drops_all() {
        let mut c = SyncConfig::from_words(&["securepeer", "192.0.2.7", "pubkey", KEY]).unwrap();
        c.apply(&["securepeer", "192.0.2.7:7000", "pubkey", KEY])
            .unwrap();
        assert_eq!(c.secure.peers.len(), 1);
        assert_eq!(c.secure.peers[0].port, Some(7000));
        c.apply(&["-securepeer", "-securekey", "-secureaddr"])
            .unwrap();
        assert_eq!(c.secure, SecureConfig::default());
    }

    #[test]
    fn secure_refusals_are_one_clear_line() {
        let cases: &[(&[&str], &str)] = &[
            (&["securekey"], "'securekey' needs a value"),
            (&["securekey", "pfsyncd.key"], "absolute path"),
            (&["secureport", "0"], "from 1 to 65535"),
            (&["secureport", "65536"], "from 1 to 65535"),
            (&["secureaddr", "224.0.0.240"], "unicast"),
            (&["secureaddr", "x"], "not an IPv4 or IPv6 address"),
            (&["securepeer"], "'securepeer' needs a value"),
            (&["securepeer", "192.0.2.7"], "expected 'pubkey KEY'"),
            (&["securepeer", "192.0.2.7", "pubkey"], "needs a value"),
            (&["securepeer", "192.0.2.7", "pubkey", "abc"], "44 base64"),
            (&["securepeer", "192.0.2.7:0", "pubkey", KEY], "port"),
            (&["securepeer", "0.0.0.0", "pubkey", KEY], "unicast"),
            (&["securepeer", "ff02::1", "pubkey", KEY], "unicast"),
            (
                &["securepeer", "host.example", "pubkey", KEY],
                "[IPv6]:PORT",
            ),
            (
                &["securepeer", "192.0.2.7", "pubkey", KEY, "psk", "rel"],
                "absolute path",
            ),
            (
                &["securepeer", "192.0.2.7", "pubkey", KEY, "inner"],
                "needs a value",
            ),
        ];
        for (words, want) in cases {
            let err = SyncConfig::from_words(words).unwrap_err().to_string();
            assert!(err.contains(want), "{words:?}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn only_secure_peers_without_a_plain_link_are_all_pfsyncd() {
        let secure =
            "securekey /k securepeer 192.0.2.7 pubkey HIo9x/T6qmUJ9cYMqWfPamNTEMNzbXw5G5ndlzmO3B0=";
        let words = |extra: &str| {
            let text = format!("{secure} {extra}");
            SyncConfig::from_words(&text.split_whitespace().collect::<Vec<_>>()).unwrap()
        };
        assert!(words("").all_peers_pfsyncd());
        assert!(!words("syncdev eth0").all_peers_pfsyncd());
        assert!(!SyncConfig::from_words(&["syncdev", "eth0"])
            .unwrap()
            .all_peers_pfsyncd());
        assert!(!SyncConfig::default().all_peers_pfsyncd());
        assert_eq!(SyncConfig::default().immediate, Immediate::Auto);
        let on = SyncConfig::from_words(&["immediate", "on"]).unwrap();
        assert_eq!(on.immediate, Immediate::On);
        assert_eq!(SyncConfig::from_words(&on.to_words()).unwrap(), on);
        assert!(matches!(
            SyncConfig::from_words(&["immediate", "yes"]),
            Err(ConfigError::BadImmediate(_))
        ));
    }
}
