//! Where the engine process goes when it leaves root: an unprivileged user, a chroot
//! to an empty directory, and on OpenBSD pledge(2).
//!
//! Everything that can be checked is checked in the parent before the fork ([`Sandbox::
//! lookup`]), so a missing user or an unsafe directory is one line at start, before
//! the daemon detaches. [`Sandbox::enter`] then does, in the child:
//! 1. `chroot(dir)`, `chdir("/")`: no file of the system is reachable by name;
//! 2. `setgroups([gid])`, `setresgid(gid)`, `setresuid(uid)`: real, effective and saved
//!    ids all unprivileged, so root cannot be taken back; this is verified by trying
//!    (`setuid(0)` must fail);
//! 3. Linux: `PR_SET_NO_NEW_PRIVS` (no setuid executable can raise it again; changing
//!    the uid away from 0 already cleared every capability); OpenBSD:
//!    `pledge("stdio")` — read and write the descriptors it holds, its two channels to
//!    the parent, and nothing else (no pf ioctl is allowed under pledge anyway, which
//!    is why the parent stays unpledged).

#[cfg(target_os = "openbsd")]
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

/// The default unprivileged user (create it on the firewall: see pfsyncd(8)).
pub const DEFAULT_USER: &str = "_pfsyncd";
/// The default chroot directory (empty and root-owned on both BSDs).
pub const DEFAULT_CHROOT: &str = "/var/empty";
/// OpenBSD: what the engine process may still do.
#[cfg(target_os = "openbsd")]
const PROMISES: &std::ffi::CStr = c"stdio";

/// Why the engine process cannot be confined as configured.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Not started as root: there is nothing to separate.
    #[error("pfsyncd must be started as root: it opens /dev/pf, bpf and raw sockets, then runs its network-facing part as {user}")]
    NotRoot {
        /// The unprivileged user.
        user: String,
    },
    /// No such user.
    #[error("user {0} does not exist: create it (FreeBSD: pw useradd {0} -d /var/empty -s /usr/sbin/nologin; OpenBSD: useradd -d /var/empty -s /sbin/nologin {0}; Linux: useradd --system {0}) or name another with --user")]
    NoUser(String),
    /// The user is root (uid 0), which would separate nothing.
    #[error("user {0} has uid 0: the engine process needs an unprivileged user")]
    RootUser(String),
    /// The user database could not be read.
    #[error("looking up user {user}: {source}")]
    Lookup {
        /// The user.
        user: String,
        /// The cause.
        source: nix::Error,
    },
    /// The chroot directory is missing or unsuitable.
    #[error("chroot directory {path}: {why}")]
    Chroot {
        /// The directory.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// A system call of the drop failed.
    #[error("dropping privileges: {call}: {source}")]
    Drop {
        /// The call.
        call: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// Root could be taken back after the drop.
    #[error("dropping privileges: uid 0 could be taken back")]
    NotDropped,
}

/// The unprivileged user and the empty directory of the engine process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// The user's name.
    pub user: String,
    /// Its uid.
    pub uid: Uid,
    /// Its primary group.
    pub gid: Gid,
    /// The chroot directory.
    pub dir: PathBuf,
}

impl Sandbox {
    /// Looks the user up and checks the directory: it must exist, be a directory, be
    /// owned by root and not be writable by group or others (else the unprivileged
    /// process, or another user, could plant files in its root).
    pub fn lookup(user: &str, dir: &Path) -> Result<Sandbox, SandboxError> {
        if !Uid::effective().is_root() {
            return Err(SandboxError::NotRoot {
                user: user.to_string(),
            });
        }
        let (uid, gid) = check_user(user)?;
        check_chroot(dir)?;
        Ok(Sandbox {
            user: user.to_string(),
            uid,
            gid,
            dir: dir.to_path_buf(),
        })
    }

    /// Confines the calling process (the engine process, just forked): see the module
    /// doc. On error the process must exit: it may be half-confined.
    pub fn enter(&self) -> Result<(), SandboxError> {
        let drop = |call| {
            move |e: nix::Error| SandboxError::Drop {
                call,
                source: e.into(),
            }
        };
        nix::unistd::chroot(&self.dir).map_err(drop("chroot"))?;
        nix::unistd::chdir("/").map_err(drop("chdir /"))?;
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        nix::unistd::setgroups(&[self.gid]).map_err(drop("setgroups"))?;
        nix::unistd::setresgid(self.gid, self.gid, self.gid).map_err(drop("setresgid"))?;
        nix::unistd::setresuid(self.uid, self.uid, self.uid).map_err(drop("setresuid"))?;
        if nix::unistd::setuid(Uid::from_raw(0)).is_ok()
            || nix::unistd::seteuid(Uid::from_raw(0)).is_ok()
        {
            return Err(SandboxError::NotDropped);
        }
        #[cfg(target_os = "linux")]
        nix::sys::prctl::set_no_new_privs().map_err(drop("prctl(PR_SET_NO_NEW_PRIVS)"))?;
        #[cfg(target_os = "openbsd")]
        crate::sys::process::pledge(PROMISES).map_err(|source| SandboxError::Drop {
            call: "pledge",
            source,
        })?;
        Ok(())
    }
}

/// The user's uid and primary group; refused if it does not exist or is root.
pub fn check_user(user: &str) -> Result<(Uid, Gid), SandboxError> {
    let found = User::from_name(user)
        .map_err(|source| SandboxError::Lookup {
            user: user.to_string(),
            source,
        })?
        .ok_or_else(|| SandboxError::NoUser(user.to_string()))?;
    if found.uid.is_root() {
        return Err(SandboxError::RootUser(user.to_string()));
    }
    Ok((found.uid, found.gid))
}

/// Refuses a chroot directory that is missing, not a directory, not owned by root, or
/// writable by group or others.
pub fn check_chroot(dir: &Path) -> Result<(), SandboxError> {
    let chroot_err = |why: String| SandboxError::Chroot {
        path: dir.display().to_string(),
        why,
    };
    let meta = std::fs::metadata(dir).map_err(|e| {
        chroot_err(if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "does not exist; create it (mkdir -m 755 {}) or name another with --chroot",
                dir.display()
            )
        } else {
            e.to_string()
        })
    })?;
    if !meta.is_dir() {
        return Err(chroot_err("not a directory".into()));
    }
    if meta.uid() != 0 {
        return Err(chroot_err(format!("owned by uid {}, not root", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(chroot_err(format!(
            "writable by group or others (mode {:o}); chmod 755 it",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// OpenBSD: limits what the parent can see of the file system to what it still opens
/// after the start: the configuration file (re-read on SIGHUP), bpf (a SIGHUP may move
/// the link), the pidfile and control socket it removes at exit, and the directory of
/// the metrics file (its temporary file is created there and renamed over it). The
/// parent cannot pledge: pledge allows no DIOCADDSTATE or DIOCGETSTATES.
#[cfg(target_os = "openbsd")]
pub fn unveil_parent(
    config_file: Option<&Path>,
    pidfile: Option<&Path>,
    control: &Path,
    metrics_dir: Option<&Path>,
) -> std::io::Result<()> {
    use crate::sys::process::{unveil, unveil_lock};
    let c =
        |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other);
    if let Some(f) = config_file {
        unveil(&c(f)?, c"r")?;
    }
    unveil(c"/dev/bpf", c"rw")?;
    if let Some(p) = pidfile {
        unveil(&c(p)?, c"rwc")?;
    }
    unveil(&c(control)?, c"rwc")?;
    if let Some(dir) = metrics_dir {
        unveil(&c(dir)?, c"rwc")?;
    }
    unveil_lock()
}

/// What ps(1) shows for the engine process: `pfsyncd: engine`.
pub fn title_engine() {
    crate::sys::process::set_title(c"engine");
}
