//! Detaching from the terminal, with the start's outcome.
//!
//! daemon(3) returns in the background at once, so a start that fails later (the engine
//! process cannot drop its privileges, say) would exit 0 and leave the reason in syslog
//! only. Here the process the admin or rc(8) started waits until the daemon says it
//! runs (both processes up, the engine confined) and exits 0; if the daemon fails first,
//! its one line has reached the terminal and the waiting process exits 1.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use anyhow::Context;

use crate::sys::process::Forked;

/// What the waiting process reads when the daemon runs.
const RUNNING: &[u8] = b"running";

/// The daemon's side of the start report: tell the waiting process, once.
#[derive(Debug, Default)]
pub struct StartReport {
    pipe: Option<UnixStream>,
}

impl StartReport {
    /// Nobody waits (the daemon runs in the foreground).
    pub fn foreground() -> StartReport {
        StartReport::default()
    }

    /// The daemon runs: the waiting process exits 0, and the daemon lets go of the
    /// terminal (standard input, output and error become /dev/null).
    pub fn running(&mut self) {
        if let Some(mut pipe) = self.pipe.take() {
            let _ = pipe.write_all(RUNNING);
            drop(pipe);
            let _ = quiet_stdio();
        }
    }
}

/// Forks; the calling process waits for the daemon's word and exits, the new one
/// returns in a session of its own, working from `/`, terminal still attached until
/// [`StartReport::running`].
pub fn detach() -> anyhow::Result<StartReport> {
    let (mut read, write) = UnixStream::pair().context("socketpair")?;
    match crate::sys::process::fork().context("detaching")? {
        Forked::Parent { .. } => {
            drop(write);
            let mut said = Vec::new();
            // EOF without the word: the daemon failed, and said why on the terminal.
            let _ = read.read_to_end(&mut said);
            std::process::exit(if said == RUNNING { 0 } else { 1 });
        }
        Forked::Child => {
            drop(read);
            nix::unistd::setsid().context("setsid")?;
            nix::unistd::chdir("/").context("chdir /")?;
            Ok(StartReport { pipe: Some(write) })
        }
    }
}

/// Points standard input, output and error at /dev/null.
pub fn quiet_stdio() -> io::Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(())
}
