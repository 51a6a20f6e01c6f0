//! `immediate on|off|auto`: whether changes leave at the end of the turn that saw them
//! or wait for the kernels' 1 s batch.
//!
//! A kernel peer is built for the batch (its input takes what a kernel sends), so the
//! batch stays towards any kernel peer; between pfsyncd peers nothing needs it. `auto`
//! (the default) decides from what the node knows of its peers; the engine process
//! asks [`immediate_wanted`] (with `SyncConfig::all_peers_pfsyncd`) at start and at every change of what it knows, and tells
//! the engine (`Engine::set_immediate`). On a plain link it also asks
//! [`plain_peers_all_pfsyncd`] with what the sessions know: a plain link whose every
//! peer has a pfsyncd session, and where no kernel peer was heard for
//! [`KERNEL_PEER_MEMORY`], is between pfsyncd peers too.

use std::time::{Duration, Instant};

/// How long a kernel peer keeps `immediate auto` off after it was last heard, or after
/// it was found not answering HELLO. A kernel peer on an idle firewall sends nothing,
/// but it still answers a bulk request and takes our updates: ten minutes without a
/// word from it, with every other peer a session peer, and it is taken to be gone.
pub const KERNEL_PEER_MEMORY: Duration = Duration::from_secs(600);

/// What the node knows of one peer on the plain link (a heard source or a configured
/// `syncpeer`; secure peers are not among them, they are pfsyncd peers by definition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainPeer {
    /// It has an established pfsyncd session with us.
    pub session: bool,
    /// Its last pfsync packet to us; `None`: never heard (a `syncpeer` may still be a
    /// silent kernel).
    pub last_heard: Option<Instant>,
}

/// The `immediate` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Immediate {
    /// Always at the end of the turn.
    On,
    /// Always the kernels' batch.
    Off,
    /// At the end of the turn when every peer is known to be a pfsyncd.
    #[default]
    Auto,
}

impl Immediate {
    /// The setting a config word names.
    pub fn from_name(name: &str) -> Option<Immediate> {
        match name {
            "on" => Some(Immediate::On),
            "off" => Some(Immediate::Off),
            "auto" => Some(Immediate::Auto),
            _ => None,
        }
    }

    /// The word's value, as `to_words` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Immediate::On => "on",
            Immediate::Off => "off",
            Immediate::Auto => "auto",
        }
    }
}

/// Whether changes go out at the end of the turn: `on` and `off` say so, `auto` when
/// every peer is a pfsyncd.
pub fn immediate_wanted(setting: Immediate, all_peers_pfsyncd: bool) -> bool {
    match setting {
        Immediate::On => true,
        Immediate::Off => false,
        Immediate::Auto => all_peers_pfsyncd,
    }
}

/// Whether every peer on the plain link is a pfsyncd: at least one session peer, every
/// other peer last heard [`KERNEL_PEER_MEMORY`] ago or more, and no kernel peer found
/// (HELLO never answered) in that time. A peer still being probed is not yet known to
/// be a pfsyncd, so it keeps the batch.
pub fn plain_peers_all_pfsyncd(
    now: Instant,
    peers: impl IntoIterator<Item = PlainPeer>,
    last_kernel_peer: Option<Instant>,
) -> bool {
    let recent = |t: Instant| now.saturating_duration_since(t) < KERNEL_PEER_MEMORY;
    if last_kernel_peer.is_some_and(recent) {
        return false;
    }
    let mut any_session = false;
    for peer in peers {
        if peer.session {
            any_session = true;
        } else if peer.last_heard.is_none_or(recent) {
            return false;
        }
    }
    any_session
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> PlainPeer {
        PlainPeer {
            session: true,
            last_heard: None,
        }
    }

    fn other(last_heard: Option<Instant>) -> PlainPeer {
        PlainPeer {
            session: false,
            last_heard,
        }
    }

    #[test]
    fn session_peers_only_are_all_pfsyncd() {
        let now = Instant::now() + 2 * KERNEL_PEER_MEMORY;
        assert!(plain_peers_all_pfsyncd(now, [session()], None));
        assert!(plain_peers_all_pfsyncd(now, [session(), session()], None));
        // Nobody known: a kernel may be listening.
        assert!(!plain_peers_all_pfsyncd(now, [], None));
    }

    #[test]
    fn a_kernel_or_unknown_peer_keeps_the_batch_until_it_has_been_quiet() {
        let now = Instant::now() + 2 * KERNEL_PEER_MEMORY;
        let minute = Duration::from_secs(60);
        // Heard a minute ago and no session (a kernel, or a pfsyncd still probed).
        assert!(!plain_peers_all_pfsyncd(
            now,
            [session(), other(Some(now - minute))],
            None
        ));
        // A syncpeer never heard may be a silent kernel.
        assert!(!plain_peers_all_pfsyncd(
            now,
            [session(), other(None)],
            None
        ));
        // Quiet for the whole memory: gone.
        assert!(plain_peers_all_pfsyncd(
            now,
            [session(), other(Some(now - KERNEL_PEER_MEMORY))],
            None
        ));
        // A kernel peer found (HELLO never answered) a minute ago, whatever is heard.
        assert!(!plain_peers_all_pfsyncd(
            now,
            [session()],
            Some(now - minute)
        ));
        assert!(plain_peers_all_pfsyncd(
            now,
            [session()],
            Some(now - KERNEL_PEER_MEMORY)
        ));
    }

    #[test]
    fn on_and_off_decide_auto_follows_the_peers() {
        assert!(immediate_wanted(Immediate::On, false));
        assert!(!immediate_wanted(Immediate::Off, true));
        assert!(immediate_wanted(Immediate::Auto, true));
        assert!(!immediate_wanted(Immediate::Auto, false));
    }

    #[test]
    fn the_setting_reads_back_and_defaults_to_auto() {
        for s in [Immediate::On, Immediate::Off, Immediate::Auto] {
            assert_eq!(Immediate::from_name(s.name()), Some(s));
        }
        assert_eq!(Immediate::from_name("yes"), None);
        assert_eq!(Immediate::default(), Immediate::Auto);
    }
}
