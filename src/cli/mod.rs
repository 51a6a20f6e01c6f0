//! Command-line parsing and dispatch. Each subcommand lives in its own module with its
//! `Args` and a `run` returning `anyhow::Result<ExitCode>`; errors are reported here,
//! once, as `pfsyncd: <context>: <cause>`.

use std::io;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

mod decode;

/// `EX_USAGE` of sysexits(3): the command was used incorrectly.
const EX_USAGE: u8 = 64;

/// A userland pfsync daemon for FreeBSD and OpenBSD firewalls.
#[derive(Debug, Parser)]
#[command(name = "pfsyncd", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the pfsync packets of a pcap or pcapng capture, tcpdump style or as JSON.
    Decode(decode::Args),
}

/// Parses the command line, runs the subcommand, and turns the outcome into the exit
/// status: 0, 1 for a failure, 64 for a usage error.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage(e),
    };
    let result = match &cli.command {
        Command::Decode(args) => decode::run(args),
    };
    match result {
        Ok(code) => code,
        // The reader of our output went away (`| head`): nothing left to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pfsyncd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version requests succeed; every other parse failure is a usage error.
fn usage(e: clap::Error) -> ExitCode {
    // If even stderr is gone there is nobody to tell.
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
        _ => ExitCode::from(EX_USAGE),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
