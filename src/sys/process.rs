//! The process calls privilege separation needs that the safe crates leave `unsafe` or
//! do not have: fork(2), the process title, and OpenBSD's pledge(2) and unveil(2).

use std::ffi::CStr;
use std::io;

use nix::unistd::Pid;

/// Which side of a [`fork`] this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The calling process, with the new child's pid.
    Parent {
        /// The child.
        child: Pid,
    },
    /// The new process.
    Child,
}

/// fork(2), for a process that has not started a second thread.
///
/// After fork only the calling thread exists in the child; a lock another thread held
/// (in the allocator, say) would stay locked there forever. The daemon forks before it
/// starts any thread; on Linux this is checked (`/proc/self/task`) and a process with
/// more threads gets an error instead of a child.
pub fn fork() -> io::Result<Forked> {
    #[cfg(target_os = "linux")]
    {
        let threads = std::fs::read_dir("/proc/self/task")?.count();
        if threads != 1 {
            return Err(io::Error::other(format!(
                "fork refused: the process has {threads} threads"
            )));
        }
    }
    // SAFETY: the process is single-threaded (checked above on Linux; by construction
    // on the BSDs, where the daemon forks before it spawns its signal thread), so the
    // child inherits no lock held by a thread that does not exist in it, and may run
    // arbitrary code, not only async-signal-safe functions.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(Forked::Parent { child }),
        Ok(nix::unistd::ForkResult::Child) => Ok(Forked::Child),
        Err(e) => Err(e.into()),
    }
}

/// Sets what ps(1) shows for this process: `pfsyncd: TITLE` (Linux: the thread's
/// name, 15 bytes at most, as `ps -o comm` shows).
pub fn set_title(title: &CStr) {
    #[cfg(target_os = "linux")]
    {
        let mut name = b"pfsyncd: ".to_vec();
        name.extend_from_slice(title.to_bytes());
        name.truncate(15);
        if let Ok(name) = std::ffi::CString::new(name) {
            let _ = nix::sys::prctl::set_name(&name);
        }
    }
    #[cfg(any(target_os = "freebsd", target_os = "openbsd"))]
    // SAFETY: the format is the literal "%s" and its one argument a NUL-terminated
    // string that outlives the call; setproctitle(3) copies it and prefixes the
    // program's name itself.
    unsafe {
        libc::setproctitle(c"%s".as_ptr(), title.as_ptr());
    }
    #[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "openbsd")))]
    let _ = title;
}

/// pledge(2) with `promises` (execpromises left as they are).
#[cfg(target_os = "openbsd")]
pub fn pledge(promises: &CStr) -> io::Result<()> {
    // SAFETY: `promises` is NUL-terminated and outlives the call, which only reads it;
    // a null execpromises is documented as "leave unchanged".
    let rc = unsafe { libc::pledge(promises.as_ptr(), std::ptr::null()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// unveil(2): lets this process see `path` with `permissions` (any of `rwxc`).
#[cfg(target_os = "openbsd")]
pub fn unveil(path: &CStr, permissions: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call, which only reads
    // them.
    let rc = unsafe { libc::unveil(path.as_ptr(), permissions.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// unveil(NULL, NULL): no further unveil calls; only the paths unveiled so far stay
/// visible.
#[cfg(target_os = "openbsd")]
pub fn unveil_lock() -> io::Result<()> {
    // SAFETY: two null pointers are the documented way to lock the unveil list; nothing
    // is read or written through them.
    let rc = unsafe { libc::unveil(std::ptr::null(), std::ptr::null()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Closes every descriptor from 3 up except those in `keep`: what the process
/// inherited and does not need (a terminal's, a shell's or a test harness's pipes) goes.
///
/// For a process that has just forked and dropped every object owning a descriptor
/// other than `keep` (the engine process): descriptors still owned elsewhere in the
/// process would be closed under their owner.
pub fn close_inherited(keep: &[std::os::fd::BorrowedFd<'_>]) {
    use std::os::fd::AsRawFd;
    let mut kept: Vec<i32> = keep.iter().map(|fd| fd.as_raw_fd()).collect();
    kept.sort_unstable();
    let highest = kept.last().copied().unwrap_or(2).max(2);
    for fd in 3..highest {
        if kept.binary_search(&fd).is_err() {
            // SAFETY: by this function's contract no live object owns `fd` (it is not
            // in `keep`), so closing it cannot pull a descriptor from under its owner;
            // closing a number that is not open fails with EBADF, which is harmless.
            unsafe {
                libc::close(fd);
            }
        }
    }
    let from = (highest + 1) as libc::c_uint;
    #[cfg(any(all(target_os = "linux", target_env = "gnu"), target_os = "freebsd"))]
    // SAFETY: as above, for every descriptor above the highest kept one; close_range
    // with no flags only closes.
    unsafe {
        libc::close_range(from, libc::c_uint::MAX, 0);
    }
    #[cfg(target_os = "openbsd")]
    // SAFETY: as above; closefrom(2) only closes.
    unsafe {
        libc::closefrom(from as libc::c_int);
    }
    #[cfg(not(any(
        all(target_os = "linux", target_env = "gnu"),
        target_os = "freebsd",
        target_os = "openbsd"
    )))]
    let _ = from;
}
