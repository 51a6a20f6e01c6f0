//! The privileged parent: what runs in the process that keeps root after the fork.
//!
//! It holds `/dev/pf` (or the memory table), the sync link's raw socket and bpf device,
//! carp demotion, the pidfile, the control socket (root only) and the signals; it
//! forwards the link's datagrams to the engine process unparsed and carries out the
//! engine's table operations (see [`super::privsep`]). Nothing here parses a pfsync
//! byte. Files here use each other and the shared pieces of [`super`], never
//! [`super::engine`].

mod applied;
pub mod carp;
pub mod churn;
pub mod control_socket;
pub mod detach;
pub mod kernel_start;
mod metrics_export;
pub mod pidfile;
pub(super) mod process;
mod requests;
pub mod secure;
pub(super) mod table;
