//! The control socket's client side (`pfsyncd ctl`, the lab, the tests): a UNIX stream
//! socket with a line protocol. A client sends one request line, reads the response to
//! the end, and the daemon closes the connection. The server side is the parent's
//! ([`super::parent::control_socket`]).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/var/run/pfsyncd.sock";

/// Sends `request` to the daemon at `path` and returns its whole response.
pub fn request(path: &Path, request: &str) -> io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request.as_bytes())?;
    stream.write_all(b"\n")?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}
