//! `immediate on|off|auto`: whether changes leave at the end of the turn that saw them
//! or wait for the kernels' 1 s batch.
//!
//! A kernel peer is built for the batch (its input takes what a kernel sends), so the
//! batch stays towards any kernel peer; between pfsyncd peers nothing needs it. `auto`
//! (the default) decides from what the node knows of its peers; the engine process
//! asks [`immediate_wanted`] (with `SyncConfig::all_peers_pfsyncd`) at start and at every change of what it knows, and tells
//! the engine (`Engine::set_immediate`).

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

#[cfg(test)]
mod tests {
    use super::*;

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
