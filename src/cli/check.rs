//! `pfsyncd check`: every kernel interaction the daemon needs, tried once and reported
//! (see [`pfsyncd::check`]).

use std::process::ExitCode;

use pfsyncd::check::{self, CheckOptions};

use super::daemon::{options_of, DaemonArgs};

/// Options: the daemon's, then `ifconfig` words, as the daemon takes them.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    daemon: DaemonArgs,
    /// Also import one state on TEST-NET addresses (192.0.2.1 -> 198.51.100.1, udp),
    /// read it back, kill it by id and check it is gone.
    #[arg(long)]
    import_test: bool,
    /// One JSON object: {"passed", "steps": [{"name", "status", "detail", "remedy"}]}.
    #[arg(long)]
    json: bool,
}

/// Runs the steps; exit status 0 only when none failed.
pub fn run(args: &Args, words: &[String]) -> anyhow::Result<ExitCode> {
    let daemon = match options_of(&args.daemon, words)? {
        Ok(options) => options,
        Err(code) => return Ok(code),
    };
    let report = check::run(&CheckOptions {
        daemon,
        import_test: args.import_test,
    });
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
