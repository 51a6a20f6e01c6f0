//! The sync link: pfsync over raw IP protocol 240 on the sync interface (pfsync-wire.md §1).
//!
//! - [`Transport`]: the syncdev, the syncpeers (none: multicast to 224.0.0.240 or ff12::f0
//!   on the syncdev) and the family;
//! - [`Interface`]: the syncdev looked up (exists, is up), its index, addresses and MTU;
//! - [`Sender`]: a raw socket that sends a pfsync payload to every destination with TTL 255,
//!   as the kernels do;
//! - [`SyncReceiver`]: the receive side behind a trait, [`RawReceiver`] on Linux (on the BSDs
//!   the kernel consumes protocol 240 and bpf will take its place);
//! - [`classify`] and [`SyncInput`]: our own packets dropped, the rest in the form
//!   [`crate::engine::Engine::handle_packet`] takes, which counts `badif` and `badttl`.
//!
//! Everything that looks up interfaces or opens sockets answers for the network namespace of
//! the calling thread.
//!
//! ```no_run
//! # #[cfg(target_os = "linux")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use pfsyncd::net::{Family, Interface, RawReceiver, Sender, SyncInput, Transport, RECV_BUFFER_LEN};
//!
//! let transport = Transport::multicast("em1", Family::V4);
//! let syncdev = Interface::lookup(&transport.syncdev)?; // "syncdev em1: no such interface"
//! let sender = Sender::open(&transport, &syncdev)?;
//! let mut input = SyncInput::new(RawReceiver::open(&transport, &syncdev)?, syncdev);
//!
//! let report = sender.send(&[/* a pfsync packet */]);
//! let oerrors = report.failed.len();
//!
//! let mut buf = vec![0; RECV_BUFFER_LEN];
//! // When the input's fd is readable:
//! while let Some(received) = input.recv(&mut buf)? {
//!     // engine.handle_packet(now, received): it counts badif and badttl itself.
//! #   let _ = (received, oerrors);
//! }
//! # Ok(())
//! # }
//! # #[cfg(not(target_os = "linux"))]
//! # fn main() {}
//! ```

pub mod bpf;
mod config;
mod error;
mod filter;
mod iface;
mod input;
mod ip;
mod membership;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod raw;
mod recv;
mod send;

pub use config::{
    Family, Transport, IPPROTO_PFSYNC, IPTOS_LOWDELAY, PFSYNC_GROUP_V4, PFSYNC_GROUP_V6, PFSYNC_TTL,
};
pub use error::NetError;
pub use filter::{classify, Verdict};
pub use iface::{mtu, Interface};
pub use input::SyncInput;
pub use ip::{Ipv4Error, Ipv4Header, IPV4_MIN_HEADER_LEN};
pub use membership::GroupMembership;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub use raw::{RawReceiver, RawStats};
pub use recv::{CaptureSkips, ReceivedPacket, SyncReceiver, RECV_BUFFER_LEN};
pub use send::{SendFailure, SendReport, Sender};
