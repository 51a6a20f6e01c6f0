//! The sync words on the command line: where they begin, and how `--help` lists them,
//! both from the one table of [`pfsyncd::daemon::config::WORDS`].

use pfsyncd::daemon::config::WORDS;

/// Whether `arg` is one of the words (the first of them ends the options: clap would
/// take `-defer` for a flag).
pub fn is_word(arg: &str) -> bool {
    WORDS.iter().any(|w| w.name() == arg)
}

/// The words, one line each, for the end of `--help`.
pub fn help() -> String {
    let width = WORDS.iter().map(|w| w.usage.len()).max().unwrap_or(0);
    let mut out = String::from(
        "Sync words (those of `ifconfig pfsync0`, after the options or in -f FILE, applied in order):\n",
    );
    for word in WORDS {
        out += &format!("  {:<width$}  {}\n", word.usage, word.meaning);
    }
    out += "\nExample: pfsyncd syncdev em1 syncpeer 10.0.0.2 version 1400 up";
    out
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn help_has_a_line_per_word() {
        let help = help();
        for word in WORDS {
            assert!(
                help.lines()
                    .any(|l| l.trim_start().starts_with(word.usage) && l.ends_with(word.meaning)),
                "{word:?} not in\n{help}"
            );
        }
    }

    #[test]
    fn words_end_the_options_and_others_do_not() {
        assert!(is_word("-defer"));
        assert!(is_word("syncdev"));
        assert!(!is_word("-d"));
        assert!(!is_word("em1"));
    }
}
