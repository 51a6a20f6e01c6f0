//! Metrics in the Prometheus text format: the format ([`exposition`]), what pfsyncd
//! exposes ([`render`]), the textfile for node_exporter's textfile collector
//! ([`textfile`]) and the `/metrics` endpoint ([`http`]).
//!
//! The engine process renders the text (it holds the engine's counters and the peers;
//! the parent's report comes with the request, as for `ctl stats`); the parent writes
//! the file and serves the endpoint, asking the engine for the text as it asks for
//! `stats`.

pub mod exposition;
pub mod http;
pub mod render;
pub mod textfile;

pub use exposition::{validate, Exposition, FormatError, Kind};
pub use http::MetricsServer;
pub use render::{render, BulkState, PeerSample, SessionSample, Snapshot, SESSION_COUNTERS};
pub use textfile::{write_atomically, TextfileError};
