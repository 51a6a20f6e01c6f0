//! The daemon's start with the secure link's words: a bad value is a usage error (64) in
//! one line; a private key file others can read is refused in one line naming the file
//! and its mode, before anything else is opened.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_pfsyncd");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run pfsyncd")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "pfsyncd-secure-start-{name}-{}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).unwrap();
    dir
}

#[test]
fn a_bad_secure_word_is_a_usage_error_in_one_line() {
    let out = run(&[
        "-d",
        "--table",
        "memory",
        "syncdev",
        "lo",
        "securepeer",
        "192.0.2.7",
        "pubkey",
        "short",
    ]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("securepeer '192.0.2.7 pubkey short'"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_private_key_others_can_read_is_refused_at_start() {
    let dir = scratch("open");
    let key = dir.join("key");
    let generated = run(&["genkey"]);
    assert!(generated.status.success());
    fs::write(&key, &generated.stdout).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let key_arg = key.display().to_string();
    let out = run(&[
        "-d",
        "--table",
        "memory",
        "syncdev",
        "lo",
        "securekey",
        &key_arg,
    ]);
    let err = String::from_utf8(out.stderr).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("securekey {key_arg}")) && err.contains("mode 0644"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}
