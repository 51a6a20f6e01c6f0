//! `pfsyncd genkey` and `pfsyncd pubkey`: WireGuard keys for the secure link on hosts
//! without wireguard-tools, in its format (`pfsyncd genkey | pfsyncd pubkey` works like
//! `wg genkey | wg pubkey`, and the keys of either are read by the other).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::process::ExitCode;

use anyhow::Context;
use nix::sys::stat::{fstat, SFlag};
use zeroize::Zeroizing;

use pfsyncd::secure::{PrivateKey, KEY_TEXT_LEN};

/// Print a new private key.
#[derive(Debug, clap::Args)]
pub struct GenkeyArgs {}

/// Read a private key on stdin, print its public key.
#[derive(Debug, clap::Args)]
pub struct PubkeyArgs {}

/// Prints a new private key from /dev/urandom; warns, as `wg genkey` does, when stdout is
/// a file others may read (the key would be theirs too).
pub fn genkey(_: &GenkeyArgs) -> anyhow::Result<ExitCode> {
    let key = PrivateKey::generate().context("reading /dev/urandom")?;
    let stdout = io::stdout();
    if let Ok(st) = fstat(stdout.as_fd()) {
        let is_file = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
        if is_file && st.st_mode & 0o077 != 0 {
            eprintln!("pfsyncd genkey: warning: writing a private key to a file others can read (chmod 600 it)");
        }
    }
    let mut out = stdout.lock();
    writeln!(out, "{}", key.to_base64().as_str())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Reads one private key (44 base64 characters, whitespace around it allowed) from stdin
/// and prints its public key.
pub fn pubkey(_: &PubkeyArgs) -> anyhow::Result<ExitCode> {
    let mut text = Zeroizing::new(String::new());
    // A key and a newline; more is not a key, and is not read.
    io::stdin()
        .lock()
        .take(4 * KEY_TEXT_LEN as u64)
        .read_to_string(&mut text)
        .context("reading a private key on stdin")?;
    let key = PrivateKey::parse(&text).context("stdin is not a private key")?;
    let mut out = io::stdout().lock();
    writeln!(out, "{}", key.public_key())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
