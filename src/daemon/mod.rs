//! The daemon: configuration in the words of `ifconfig pfsync0`, and (to come) the event
//! loop that joins the engine, the sync transport, the state table and the control
//! socket.

pub mod config;

pub use config::{ConfigError, SyncConfig};
