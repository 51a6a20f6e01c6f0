//! The pidfile, locked for the daemon's life: a second pfsyncd with the same pidfile
//! finds it locked and refuses to start, saying which process holds it. The lock goes
//! with the process (even on a crash), so a stale file never blocks a restart.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Why the pidfile could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    /// Another process holds the lock.
    #[error("pfsyncd is already running (pid {pid}, pidfile {path})")]
    Running {
        /// The pidfile.
        path: String,
        /// What the file says (may be empty if the other process is just starting).
        pid: String,
    },
    /// The file could not be opened or written.
    #[error("pidfile {path}: {source}")]
    Io {
        /// The pidfile.
        path: String,
        /// The cause.
        source: io::Error,
    },
}

/// A locked pidfile; removed when dropped by the process that wrote it.
#[derive(Debug)]
pub struct Pidfile {
    file: Flock<File>,
    path: PathBuf,
    owner: u32,
}

impl Pidfile {
    /// Opens and locks `path` (created mode 0644), without writing yet.
    pub fn lock(path: &Path) -> Result<Pidfile, PidfileError> {
        let io = |source| PidfileError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(io)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(file) => Ok(Pidfile {
                file,
                path: path.to_path_buf(),
                owner: std::process::id(),
            }),
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                Err(PidfileError::Running {
                    path: path.display().to_string(),
                    pid: pid.trim().to_string(),
                })
            }
            Err((_, e)) => Err(io(e.into())),
        }
    }

    /// Writes our pid (call after detaching: the pid changes).
    pub fn write_pid(&mut self) -> Result<(), PidfileError> {
        self.owner = std::process::id();
        let path = self.path.display().to_string();
        let result = (|| {
            self.file.set_len(0)?;
            self.file.rewind()?;
            writeln!(*self.file, "{}", self.owner)?;
            self.file.sync_data()
        })();
        result.map_err(|source| PidfileError::Io { path, source })
    }
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        // The parent of a detach also drops its copy; only the daemon removes the file.
        if std::process::id() == self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_names_the_holder() {
        let path = std::env::temp_dir().join(format!("pfsyncd-pid-test-{}", std::process::id()));
        let mut first = Pidfile::lock(&path).unwrap();
        first.write_pid().unwrap();
        // flock locks belong to the open file: a second open in this process conflicts too.
        match Pidfile::lock(&path) {
            Err(PidfileError::Running { pid, .. }) => {
                assert_eq!(pid, std::process::id().to_string())
            }
            other => panic!("expected Running, got {other:?}"),
        }
        drop(first);
        assert!(!path.exists());
        let again = Pidfile::lock(&path);
        assert!(again.is_ok());
    }
}
