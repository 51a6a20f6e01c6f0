//! The command line tells its words: `pfsyncd --help` and `pfsyncd check --help` list
//! every sync word of the table `SyncConfig::apply` is checked against, one line each;
//! the man page describes each; and a word not in the table is refused with the list.

use std::process::{Command, Output};

use pfsyncd::daemon::config::WORDS;

const BIN: &str = env!("CARGO_BIN_EXE_pfsyncd");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run pfsyncd")
}

fn help_of(args: &[&str]) -> String {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {:?}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

fn assert_lists_every_word(help: &str, what: &str) {
    for word in WORDS {
        assert!(
            help.lines().any(|l| {
                let l = l.trim();
                l.starts_with(word.usage) && l.ends_with(word.meaning)
            }),
            "{what} lacks the line of '{}':\n{help}",
            word.usage
        );
    }
}

#[test]
fn help_lists_every_word() {
    assert_lists_every_word(&help_of(&["--help"]), "pfsyncd --help");
    assert_lists_every_word(&help_of(&["help"]), "pfsyncd help");
}

#[test]
fn check_help_lists_every_word_and_takes_them() {
    let help = help_of(&["check", "--help"]);
    assert_lists_every_word(&help, "pfsyncd check --help");
    assert!(
        help.contains("Usage: pfsyncd check [OPTIONS] [--import-test] [--json] [WORDS]..."),
        "{help}"
    );
}

#[test]
fn the_man_page_describes_every_word() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/pfsyncd.8"))
        .expect("man/pfsyncd.8");
    // Each word is an item (or part of one) of the DESCRIPTION's list of words.
    for word in WORDS {
        let name = word.name();
        assert!(
            page.lines()
                .any(|l| l.starts_with(".It Cm") && l.split(' ').any(|token| token == name)),
            "man/pfsyncd.8 has no .It Cm item for '{name}'"
        );
    }
}

#[test]
fn an_unknown_word_is_refused_with_the_list() {
    let out = run(&["-d", "--table", "memory", "syncdev", "lo", "carpdev", "em0"]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown word 'carpdev'"), "{err}");
    for word in WORDS {
        assert!(
            err.contains(word.name().trim_start_matches('-')),
            "'{}' not named in: {err}",
            word.name()
        );
    }
}
