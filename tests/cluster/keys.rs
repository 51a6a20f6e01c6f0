//! Keys for the secure link's tests, made by the daemon itself as an admin would.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_pfsyncd");

/// A fresh private key (`pfsyncd genkey`) and its public key (`pfsyncd pubkey`).
pub fn keypair() -> (String, String) {
    let private = Command::new(BIN).arg("genkey").output().unwrap();
    assert!(private.status.success());
    let mut child = Command::new(BIN)
        .arg("pubkey")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&private.stdout)
        .unwrap();
    let public = child.wait_with_output().unwrap();
    assert!(public.status.success());
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap().trim().to_string();
    (text(private.stdout), text(public.stdout))
}

/// Writes a key file only its owner reads, as the daemon demands (rewritten in place
/// when it exists, as an admin rotating a key would); its path, for a config word.
pub fn key_file(path: &Path, key: &str) -> String {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{key}").unwrap();
    path.display().to_string()
}
