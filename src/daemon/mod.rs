//! The daemon: configuration in the words of `ifconfig pfsync0`, the event loop that
//! joins the engine, the sync transport and the state table, and the control socket.

pub mod carp;
pub mod churn;
pub mod config;
pub mod control;
pub mod log;
pub mod peers;
pub mod pidfile;
pub mod privsep;
pub mod report;
mod requests;
pub mod run;
mod table;

pub use config::{ConfigError, SyncConfig};
pub use requests::HELP;
pub use run::{load_config, run, Options, TableChoice};
