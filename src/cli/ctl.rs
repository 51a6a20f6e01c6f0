//! `pfsyncd ctl`: one request to a running daemon over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use pfsyncd::daemon::control::{request, DEFAULT_SOCKET};

/// Ask a running daemon.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path of the control socket.
    #[arg(short = 'c', value_name = "CONTROL_SOCKET", default_value = DEFAULT_SOCKET)]
    pub control: PathBuf,
    /// The request: status, stats, states [--json], bulk, and on the memory table
    /// insert [N], update [N], delete [N], clear.
    #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
    pub request: Vec<String>,
}

/// Sends the request and prints the answer.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match request(&args.control, &args.request.join(" ")) {
        Ok(text) => {
            print!("{text}");
            if text.starts_with("error:") {
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
                None => e.to_string(),
            };
            eprintln!(
                "pfsyncd ctl: cannot reach {}: {why}",
                args.control.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
