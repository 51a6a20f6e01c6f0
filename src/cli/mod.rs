//! Command-line parsing and dispatch. Each subcommand lives in its own module with its
//! `Args` and a `run` returning `anyhow::Result<ExitCode>`; errors are reported here,
//! once, as `pfsyncd: <context>: <cause>`.

use std::io;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod check;
mod ctl;
mod daemon;
mod decode;
mod keys;
#[cfg(target_os = "linux")]
mod lab;
mod words;

/// `EX_USAGE` of sysexits(3): the command was used incorrectly.
const EX_USAGE: u8 = 64;

/// A userland pfsync daemon for FreeBSD and OpenBSD firewalls.
///
/// Without a subcommand, runs the daemon; the sync configuration follows the options in
/// the words of `ifconfig pfsync0`, which `--help` lists (see [`words::help`]).
#[derive(Debug, Parser)]
#[command(name = "pfsyncd", bin_name = "pfsyncd", version, about, long_about = None)]
#[command(
    override_usage = "pfsyncd [OPTIONS] [WORDS]...\n       pfsyncd check [OPTIONS] [--import-test] [--json] [WORDS]...\n       pfsyncd <decode|ctl|lab|genkey|pubkey> ..."
)]
struct Cli {
    #[command(flatten)]
    daemon: daemon::DaemonArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Options of the daemon that take a value.
const VALUED: &[&str] = &[
    "-c",
    "-f",
    "--table",
    "--creatorid",
    "--pidfile",
    "--log-level",
    "--interval",
    "--bulk-pps",
    "--user",
    "--chroot",
    "--metrics-file",
    "--metrics-interval",
    "--metrics-listen",
];

/// Splits the command line where the `ifconfig` words begin (clap would take `-defer`
/// for flags).
fn split_words(args: Vec<String>) -> (Vec<String>, Vec<String>) {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        if matches!(a, "decode" | "ctl" | "lab" | "genkey" | "pubkey" | "help") {
            break;
        }
        if words::is_word(a) {
            let words = args[i..].to_vec();
            return (args[..i].to_vec(), words);
        }
        i += if VALUED.contains(&a) { 2 } else { 1 };
    }
    (args, Vec::new())
}

// Parsed once at start: the daemon's options in `check` cost nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Try every kernel interaction the daemon needs (/dev/pf, pfsync0, the sync link,
    /// the sandbox, carp), one line each: ok, FAIL with the remedy, or skip. Takes the
    /// daemon's options and words; exit status 0 only when nothing failed.
    Check(check::Args),
    /// Print the pfsync packets of a pcap or pcapng capture, tcpdump style or as JSON.
    Decode(decode::Args),
    /// Ask a running daemon: status, stats, metrics, states, bulk, insert, update, delete,
    /// clear.
    Ctl(ctl::Args),
    /// Run a cluster of daemons in network namespaces on this machine, with traffic,
    /// shown live (root, Linux); everything is removed at the end, on Ctrl-C too.
    #[cfg(target_os = "linux")]
    Lab(lab::Args),
    /// Print a new private key for the secure link (WireGuard's format, like `wg genkey`).
    Genkey(keys::GenkeyArgs),
    /// Read a private key on stdin, print its public key (like `wg pubkey`).
    Pubkey(keys::PubkeyArgs),
}

/// Parses the command line, runs the subcommand, and turns the outcome into the exit
/// status: 0, 1 for a failure, 64 for a usage error.
pub fn main() -> ExitCode {
    let (args, words) = split_words(std::env::args().collect());
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(e) => return usage(e),
    };
    let result = match &cli.command {
        Some(Command::Decode(args)) => decode::run(args),
        Some(Command::Check(args)) => check::run(args, &words),
        Some(Command::Ctl(args)) => ctl::run(args),
        #[cfg(target_os = "linux")]
        Some(Command::Lab(args)) => lab::run(args),
        Some(Command::Genkey(args)) => keys::genkey(args),
        Some(Command::Pubkey(args)) => keys::pubkey(args),
        None => daemon::run_daemon(&cli.daemon, &words),
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

/// The command line, with the sync words listed at the end of the daemon's and
/// `check`'s help (built at run time from the table, which clap's attributes cannot
/// take).
fn parse(args: Vec<String>) -> Result<Cli, clap::Error> {
    let command = Cli::command()
        .after_help(words::help())
        .mut_subcommand("check", |check| {
            check
                .override_usage("pfsyncd check [OPTIONS] [--import-test] [--json] [WORDS]...")
                .after_help(words::help())
        });
    Cli::from_arg_matches(&command.try_get_matches_from(args)?)
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

#[cfg(test)]
mod sync_filter_words_test {
    use super::*;

    #[test]
    fn the_filter_and_delay_words_start_the_words() {
        for first in [
            "-nosync",
            "nosync-proto",
            "syncdelay",
            "-ifmap",
            "-anysource",
        ] {
            let args: Vec<String> = ["pfsyncd", "-d", "-c", "/tmp/s", first, "udp", "up"]
                .map(String::from)
                .to_vec();
            let (options, words) = split_words(args);
            assert_eq!(options.len(), 4, "{first}");
            assert_eq!(words[0], first);
        }
    }
}
