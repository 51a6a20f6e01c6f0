//! Attaching a classic BPF program to a Linux socket (SO_ATTACH_FILTER): the same
//! program the BSDs' bpf(4) takes with BIOCSETF, run by a real kernel here, for tests.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::net::bpf::Insn;

/// Attaches `program` to the socket `fd`; from then on the kernel queues only what the
/// program accepts.
pub fn attach_filter(fd: BorrowedFd<'_>, program: &[Insn]) -> io::Result<()> {
    let mut filter: Vec<libc::sock_filter> = program
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let len = u16::try_from(filter.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "program too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `filter`, `len` instructions that live until the call
    // returns; the kernel copies the program during setsockopt and keeps no pointer. The
    // option length is the size of the `sock_fprog` passed, and `fd` is a valid open
    // socket borrowed for the call.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
