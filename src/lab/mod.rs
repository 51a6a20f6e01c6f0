//! Several pfsyncd hosts on one Linux machine: network namespaces joined by veth pairs
//! and a bridge, each running a daemon with a memory table. Used by `pfsyncd lab` and by
//! the cluster tests and benchmarks. Needs root and iproute2.

pub mod cluster;
pub mod compare;
pub mod netns;
pub mod probe;
pub mod procfs;

pub use cluster::{lab_user, wait_until, wait_until_every, Cluster, Host, EMPTY_DIR};
pub use netns::{check_root_and_ip, ip, sweep_stale, Netns};
pub use probe::{percentile, wait_until_fast, Propagation, TcpProbe};
pub use procfs::{cpu_secs_of, load_average, proc_status};

/// Why the lab could not do something.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Network namespaces and raw sockets need root.
    #[error("the lab needs root (network namespaces, raw sockets); run it with sudo")]
    NotRoot,
    /// An outside tool (`ip`) failed or is missing.
    #[error("{0}")]
    Tool(String),
    /// A daemon did not start or answer.
    #[error("{0}")]
    Daemon(String),
}
