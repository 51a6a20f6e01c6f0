//! Privilege separation: the daemon runs as two processes.
//!
//! - **The parent** keeps root and what needs it: `/dev/pf` (or the memory table), the
//!   sync link's raw socket and bpf device, carp demotion, the pidfile, the
//!   configuration file and the signals. It reads datagrams off the link and forwards
//!   their pfsync payload unparsed, with the source, TTL and arrival interface the
//!   kernel reported; it sends what the engine asks to send, and carries out the
//!   engine's table operations. It never parses a pfsync byte. It also holds the
//!   control socket (root only): its clients are the admin, not the network, and the
//!   requests about the table are answered where the table is.
//! - **The engine process** holds the engine and everything that reads what peers
//!   send: the pfsync parser, the merge rules, the cache, bulk updates. It runs as an
//!   unprivileged user, chrooted to an empty directory, holding only its two channels
//!   to the parent, on OpenBSD pledged to `stdio` ([`sandbox`]).
//!
//! A packet that exploited a parser bug would find itself in a process that cannot
//! open a file, cannot talk to pf or bpf and owns no raw socket; what it can still do
//! is what a hostile peer on the sync link can do anyway (ask for states to be
//! imported), through messages the parent checks ([`message`]).
//!
//! The processes talk over two socket pairs ([`channel`]): one for the sync's data
//! (datagrams, table changes and operations, packets to send, log lines), and one for
//! the admin's requests to the engine and their answers, which the engine serves first
//! so that `status` is answered at once during a big bulk update. The table's changes
//! and the engine's operations on it pass each other on the way; [`crossing`] keeps a
//! local change from being overwritten by an operation decided before the engine saw
//! it.
//!
//! If the engine process dies the parent lowers carp, removes its files and exits with
//! an error (an rc supervisor or the admin restarts the daemon; pf keeps its states
//! meanwhile). If the parent dies the engine process finds its channels closed and
//! exits.

pub mod channel;
pub mod crossing;
pub mod message;
pub mod sandbox;

pub use channel::{Channel, ChannelError, HIGH_WATER, TURN_BUDGET};
pub use message::{MessageError, ParentReport, TableFrames, ToEngine, ToParent};
pub use sandbox::{Sandbox, SandboxError, DEFAULT_CHROOT, DEFAULT_USER};
