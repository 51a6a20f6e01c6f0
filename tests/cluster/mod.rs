//! What the tests that start real daemons share: one test at a time per binary (each
//! starts several daemons; side by side on two cores their timing would be the
//! machine's), and a cluster of namespaces with the test's own prefix.

use std::sync::{Mutex, MutexGuard};

use pfsyncd::lab::Cluster;

/// Key files for the secure link (only its tests use them).
#[allow(dead_code)]
pub mod keys;

static SERIAL: Mutex<()> = Mutex::new(());

/// Held for a test's life: the tests of a binary run one after the other.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A cluster of `hosts`; `tag` keeps the namespace names apart per test.
pub fn cluster(tag: &str, hosts: usize) -> Cluster {
    Cluster::new(
        env!("CARGO_BIN_EXE_pfsyncd").as_ref(),
        &format!("pfsd-{tag}-"),
        hosts,
    )
    .unwrap_or_else(|e| panic!("cannot build the test cluster: {e}"))
}
