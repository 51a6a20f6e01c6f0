//! Receiving with bpf(4), where the kernel's pfsync takes IP protocol 240 before any raw
//! socket sees it (OpenBSD always, FreeBSD once pfsync.ko is loaded, which importing
//! states needs): the filter program ([`program`]) and the reading of bpf buffers
//! ([`buffer`]). Both are plain code, tested on Linux; the program also runs in a Linux
//! kernel through SO_ATTACH_FILTER (`tests/bpf_filter.rs`).

pub mod buffer;
pub mod program;
#[cfg(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd")))]
pub mod receiver;
#[cfg(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd")))]
pub use receiver::{BpfReceiver, BpfStats};

pub use buffer::{
    pfsync_in_frame, pfsync_in_record, BpfError, HeaderLayout, IpPacket, Record, Records, Skipped,
};
pub use program::{pfsync_filter, Insn, LinkType, Os};
