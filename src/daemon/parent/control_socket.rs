//! The control socket's server side, the parent's: bound as root with mode 0600 before
//! the fork, polled by the parent's loop. A client sends one request line, reads the
//! response to the end, and the parent closes the connection (the client side is
//! [`crate::daemon::control`]).

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The listening control socket; its file is removed on drop.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    file: SocketFile,
}

/// The control socket's file, removed when this is dropped.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl SocketFile {
    /// Forgets the file without removing it (a forked process whose parent owns it).
    pub fn disarm(self) {
        std::mem::forget(self);
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// Binds `path` with mode 0600. A socket file nobody answers on is removed first;
    /// one a daemon answers on is refused.
    pub fn bind(path: &Path) -> io::Result<ControlSocket> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{}: a daemon already answers on it", path.display()),
                ));
            }
            fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlSocket {
            listener,
            file: SocketFile {
                path: path.to_path_buf(),
            },
        })
    }

    /// The listener and the file apart: after the fork the engine process closes its
    /// copy of the listener and forgets the file, which only the parent removes.
    pub fn into_parts(self) -> (UnixListener, SocketFile) {
        (self.listener, self.file)
    }
}

/// Accepts one pending client of a non-blocking `listener` and reads its request line
/// (bounded wait).
pub fn accept(listener: &UnixListener) -> io::Result<Option<(UnixStream, String)>> {
    let stream = match listener.accept() {
        Ok((s, _)) => s,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(4096)).read_line(&mut line)?;
    Ok(Some((stream, line.trim().to_string())))
}

/// Writes a response and closes.
pub fn respond(mut stream: UnixStream, text: &str) {
    let _ = stream.write_all(text.as_bytes());
}
