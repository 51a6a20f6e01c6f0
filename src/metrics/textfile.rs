//! The metrics as a file for node_exporter's textfile collector, replaced atomically:
//! a reader sees the old file or the new one, never a part.
//!
//! The text is written to a temporary file in the same directory (a rename is atomic
//! only within one file system), flushed to disk, given mode 0644 (node_exporter
//! usually runs as another user) and renamed over the file; the directory is then
//! flushed so the rename survives a crash. The temporary file's name starts with a dot
//! and does not end in `.prom`, so the collector never reads it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why the file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TextfileError {
    /// The path names no file in a directory.
    #[error("metrics file {0}: not a file name in a directory")]
    NoFileName(PathBuf),
    /// A step of the write failed.
    #[error("metrics file {path}: {step}: {source}")]
    Io {
        /// The file (or the temporary file) concerned.
        path: PathBuf,
        /// What was being done.
        step: &'static str,
        /// The cause.
        source: io::Error,
    },
}

/// The temporary file next to `path`: `.NAME.tmp` in the same directory.
pub fn temporary_path(path: &Path) -> Result<PathBuf, TextfileError> {
    let name = path
        .file_name()
        .ok_or_else(|| TextfileError::NoFileName(path.to_path_buf()))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(".tmp");
    Ok(path.with_file_name(tmp))
}

/// Replaces the file at `path` with `text`, atomically.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), TextfileError> {
    let tmp = temporary_path(path)?;
    let io = |path: &Path, step| {
        let path = path.to_path_buf();
        move |source| TextfileError::Io { path, step, source }
    };
    // A temporary file left by a crash is truncated and reused.
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io(&tmp, "create"))?;
    let written = file
        .write_all(text.as_bytes())
        .map_err(io(&tmp, "write"))
        // The process's umask may have taken bits off the creation mode.
        .and_then(|()| {
            file.set_permissions(fs::Permissions::from_mode(0o644))
                .map_err(io(&tmp, "chmod"))
        })
        .and_then(|()| file.sync_all().map_err(io(&tmp, "fsync")))
        .and_then(|()| fs::rename(&tmp, path).map_err(io(path, "rename")));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    // The rename itself, to disk; a failure here leaves the new file in place, readable.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Checks at start that the file can be written where it goes: creates the temporary
/// file and removes it.
pub fn check_writable(path: &Path) -> Result<(), TextfileError> {
    let tmp = temporary_path(path)?;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(|source| TextfileError::Io {
            path: tmp.clone(),
            step: "create",
            source,
        })?;
    let _ = fs::remove_file(&tmp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pfsyncd-textfile-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = scratch("replace");
        let path = dir.join("pfsyncd.prom");
        write_atomically(&path, "a 1\n").unwrap();
        write_atomically(&path, "a 2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a 2\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("pfsyncd.prom")]);
        assert_eq!(
            temporary_path(&path).unwrap(),
            dir.join(".pfsyncd.prom.tmp")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let e = write_atomically(Path::new("/nonexistent-pfsyncd/x.prom"), "a 1\n").unwrap_err();
        assert!(e.to_string().contains("create"), "{e}");
        assert!(matches!(
            temporary_path(Path::new("/")),
            Err(TextfileError::NoFileName(_))
        ));
    }
}
