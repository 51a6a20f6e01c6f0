//! The engine process: what runs confined after the fork, as an unprivileged user,
//! chrooted to an empty directory, on OpenBSD pledged to `stdio`, holding only its two
//! channels to the parent (see [`super::privsep`], whose sandbox it enters first).
//!
//! It holds the sync engine and everything that reads what peers send: the pfsync
//! parser, the merge rules, bulk updates, the peers heard, and the control requests
//! that need the engine. Files here use each other and the shared pieces of
//! [`super`], never [`super::parent`].

mod bulk;
mod peers;
pub(super) mod process;
mod requests;
pub mod secure;
mod sessions;
