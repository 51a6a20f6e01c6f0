//! The daemon: configuration in the words of `ifconfig pfsync0`, privilege separation
//! into two processes, their event loops, and the control socket's requests.
//!
//! The tree shows the privilege boundary (as OpenBSD's privsep daemons do):
//!
//! - [`start`] runs first, as root, above both processes: it opens what needs root,
//!   then forks.
//! - [`parent`]: what runs in the process that keeps root (the table, the sync link,
//!   carp, the pidfile, the control socket's server side).
//! - [`engine`]: what runs in the confined process (the engine, and everything that
//!   reads what peers send).
//! - Below both, used by either: [`privsep`] (the channel between them, its messages,
//!   the crossing of changes and operations, the sandbox), [`config`], [`options`],
//!   [`link`], [`immediate`], [`latency`], [`secure_config`], [`requests`] (which control request goes to which process), [`report`],
//!   [`log`], and [`control`] (the control socket's client side).
//!
//! `parent/` and `engine/` use only their own files and the shared ones, the shared
//! ones use neither, and no file imports a file that imports it back
//! (`tests/layout.rs`).

pub mod config;
pub mod control;
pub mod engine;
pub mod immediate;
pub mod latency;
pub mod link;
pub mod log;
pub mod options;
pub mod parent;
pub mod privsep;
pub mod report;
pub mod requests;
pub mod secure_config;
pub mod start;

pub use config::{ConfigError, SyncConfig};
pub use options::{load_config, Options, TableChoice};
pub use requests::HELP;
pub use start::run;
