//! The daemon: configuration in the words of `ifconfig pfsync0`, privilege separation
//! into a privileged parent (the state table, the sync transport, carp) and an
//! unprivileged engine process (the engine and the control socket), their event loops,
//! and the control socket's requests.

pub mod carp;
pub mod churn;
pub mod config;
pub mod control;
pub mod detach;
mod engine_process;
mod engine_requests;
pub mod kernel_start;
pub mod log;
mod metrics_export;
mod parent;
pub mod peers;
pub mod pidfile;
pub mod privsep;
pub mod report;
mod requests;
pub mod run;
mod table;
mod table_requests;

pub use config::{ConfigError, SyncConfig};
pub use requests::HELP;
pub use run::{load_config, run, Options, TableChoice};
