//! pfsyncd: a userland pfsync daemon for FreeBSD and OpenBSD firewalls.
//!
//! The layers, bottom up:
//! - [`wire`]: the pfsync wire codec for every kernel dialect (no I/O, no clock);
//! - [`state`]: the neutral state model every dialect converts to and from;
//! - [`engine`]: the sans-IO sync engine (the kernels' pfsync semantics, no I/O, no clock);
//! - [`capture`]: pcap/pcapng reading and writing, for `pfsyncd decode` and test captures.
#![deny(unsafe_code)]

pub mod capture;
pub mod check;
pub mod daemon;
pub mod engine;
#[cfg(target_os = "linux")]
pub mod lab;
pub mod metrics;
pub mod net;
pub mod secure;
pub mod session;
pub mod state;
#[allow(unsafe_code)]
pub mod sys;
pub mod table;
pub mod wire;
