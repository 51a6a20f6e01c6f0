//! The `/metrics` endpoint: a listening TCP socket and a minimal, bounded HTTP/1.x
//! server, run inside the parent's `poll(2)` loop without blocking it.
//!
//! What a client can make the daemon do is bounded: at most [`MAX_CONNECTIONS`] at a
//! time (more wait in the listen queue), a request head of at most [`MAX_HEAD`] bytes
//! with a request line of at most [`MAX_REQUEST_LINE`], [`READ_TIMEOUT`] to send it and
//! [`WRITE_TIMEOUT`] to take the answer; only `GET /metrics` is answered with the
//! metrics, anything else with a 4xx status. The head is only split and compared with
//! fixed strings; headers are skipped unread. One request per connection, closed after
//! the answer (`Connection: close`).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags};

/// Longest request line (method, target, version).
pub const MAX_REQUEST_LINE: usize = 4096;
/// Longest request head (request line and headers).
pub const MAX_HEAD: usize = 8192;
/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Time a client has to send its request head after the connection is accepted.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time the engine process has to give the text before the client gets a 503 (it
/// answers requests first in each turn: only a stuck engine takes this long).
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to take the answer once it is ready.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a request head asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics`.
    Metrics,
    /// Refused with this status.
    Refused(Status),
}

/// The statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200.
    Ok,
    /// 400: not an HTTP request line.
    BadRequest,
    /// 404: a path other than `/metrics`.
    NotFound,
    /// 405: a method other than GET.
    MethodNotAllowed,
    /// 408: the head did not arrive in time.
    RequestTimeout,
    /// 414: a request line longer than [`MAX_REQUEST_LINE`].
    UriTooLong,
    /// 431: a head longer than [`MAX_HEAD`].
    HeadTooLarge,
    /// 505: not HTTP/1.x.
    VersionNotSupported,
    /// 503: the engine process did not answer.
    Unavailable,
}

impl Status {
    /// The status line's number and reason.
    pub fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::RequestTimeout => "408 Request Timeout",
            Status::UriTooLong => "414 URI Too Long",
            Status::HeadTooLarge => "431 Request Header Fields Too Large",
            Status::VersionNotSupported => "505 HTTP Version Not Supported",
            Status::Unavailable => "503 Service Unavailable",
        }
    }
}

/// Judges the bytes received so far: `None` while the head is not complete (and within
/// its bounds).
pub fn parse_head(buf: &[u8]) -> Option<Request> {
    let line_end = buf.iter().position(|&b| b == b'\n');
    match line_end {
        None if buf.len() > MAX_REQUEST_LINE => return Some(Request::Refused(Status::UriTooLong)),
        None => return None,
        Some(end) if end > MAX_REQUEST_LINE => return Some(Request::Refused(Status::UriTooLong)),
        Some(_) => {}
    }
    // The head ends with an empty line; its headers are not needed, only skipped.
    let complete = find(buf, b"\r\n\r\n").is_some() || find(buf, b"\n\n").is_some();
    if !complete {
        return (buf.len() > MAX_HEAD).then_some(Request::Refused(Status::HeadTooLarge));
    }
    let line_end = line_end.unwrap_or(0);
    let line = &buf[..line_end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some(judge_request_line(line))
}

fn judge_request_line(line: &[u8]) -> Request {
    let Ok(line) = std::str::from_utf8(line) else {
        return Request::Refused(Status::BadRequest);
    };
    let mut words = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Request::Refused(Status::BadRequest);
    };
    if method.is_empty() || target.is_empty() || !version.starts_with("HTTP/") {
        return Request::Refused(Status::BadRequest);
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return Request::Refused(Status::VersionNotSupported);
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return Request::Refused(Status::NotFound);
    }
    if method != "GET" {
        return Request::Refused(Status::MethodNotAllowed);
    }
    Request::Metrics
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A whole response: status line, headers, body.
pub fn response(status: Status, body: &str) -> Vec<u8> {
    let content_type = if status == Status::Ok {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let allow = if status == Status::MethodNotAllowed {
        "Allow: GET\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        status.line(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// One client's connection.
#[derive(Debug)]
struct Connection {
    id: u64,
    stream: TcpStream,
    phase: Phase,
    deadline: Instant,
}

#[derive(Debug)]
enum Phase {
    /// Reading the request head.
    Reading(Vec<u8>),
    /// Waiting for the engine's metrics.
    Waiting,
    /// Writing the answer; how much of it is out.
    Writing(Vec<u8>, usize),
}

/// What the server counts, for `stats` and the metrics: a bad request is answered with
/// its 4xx status and counted here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ServerCounters {
    /// Requests answered with the metrics.
    pub served: u64,
    /// Requests refused with a 4xx or 5xx status.
    pub refused: u64,
    /// Connections closed for a read or write error, a close before the head was
    /// whole, or a timeout while writing.
    pub dropped: u64,
}

/// The listening socket and its connections.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    connections: Vec<Connection>,
    next_id: u64,
    /// What happened so far.
    pub counters: ServerCounters,
}

impl MetricsServer {
    /// Binds `addr` (as root, before the privilege drop), non-blocking.
    pub fn bind(addr: SocketAddr) -> io::Result<MetricsServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(MetricsServer {
            listener,
            connections: Vec::new(),
            next_id: 0,
            counters: ServerCounters::default(),
        })
    }

    /// The bound address (the port, when 0 was given).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What to poll: the listener while there is room, each connection for what it
    /// waits for.
    pub fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut fds = Vec::with_capacity(self.connections.len() + 1);
        if self.connections.len() < MAX_CONNECTIONS {
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        }
        for c in &self.connections {
            let events = match c.phase {
                Phase::Reading(_) => PollFlags::POLLIN,
                Phase::Waiting => continue,
                Phase::Writing(..) => PollFlags::POLLOUT,
            };
            fds.push(PollFd::new(c.stream.as_fd(), events));
        }
        fds
    }

    /// The earliest connection deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.connections.iter().map(|c| c.deadline).min()
    }

    /// Accepts, reads and writes what can be without blocking; closes what is done or
    /// late. Returns the ids of connections that asked for the metrics: answer each
    /// with [`MetricsServer::answer`].
    pub fn serve(&mut self, now: Instant) -> Vec<u64> {
        while self.connections.len() < MAX_CONNECTIONS {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        self.counters.dropped += 1;
                        continue;
                    }
                    self.next_id += 1;
                    self.connections.push(Connection {
                        id: self.next_id,
                        stream,
                        phase: Phase::Reading(Vec::new()),
                        deadline: now + READ_TIMEOUT,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A connection reset before it was taken, or out of descriptors: the
                // next turn tries again.
                Err(_) => break,
            }
        }
        let mut asked = Vec::new();
        let counters = &mut self.counters;
        self.connections.retain_mut(|c| {
            let keep = step(c, now, counters);
            if matches!(c.phase, Phase::Waiting) && keep == Step::Asked {
                asked.push(c.id);
            }
            keep != Step::Close
        });
        asked
    }

    /// Gives connection `id` its metrics (`None`: the engine could not answer); a
    /// connection gone or answered meanwhile is skipped.
    pub fn answer(&mut self, id: u64, now: Instant, metrics: Option<&str>) {
        // Only a connection still waiting: one that got its 503 meanwhile may still be
        // writing it.
        let Some(c) = self
            .connections
            .iter_mut()
            .find(|c| c.id == id && matches!(c.phase, Phase::Waiting))
        else {
            return;
        };
        let out = match metrics {
            Some(text) => {
                self.counters.served += 1;
                response(Status::Ok, text)
            }
            None => {
                self.counters.refused += 1;
                response(Status::Unavailable, "the engine process did not answer\n")
            }
        };
        c.phase = Phase::Writing(out, 0);
        c.deadline = now + WRITE_TIMEOUT;
        // Most answers fit the socket's buffer: out at once.
        let mut counters = self.counters;
        let done = step(c, now, &mut counters) == Step::Close;
        self.counters = counters;
        if done {
            self.connections.retain(|c| c.id != id);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Keep,
    /// The head asked for the metrics just now.
    Asked,
    Close,
}

/// Moves one connection on as far as it goes without blocking.
fn step(c: &mut Connection, now: Instant, counters: &mut ServerCounters) -> Step {
    if let Phase::Reading(buf) = &mut c.phase {
        let mut chunk = [0u8; 2048];
        let judged = loop {
            if let Some(r) = parse_head(buf) {
                break Some(r);
            }
            // Never more than the bounds allow, plus the chunk that shows they were
            // passed.
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    counters.dropped += 1;
                    return Step::Close;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    counters.dropped += 1;
                    return Step::Close;
                }
            }
        };
        match judged {
            Some(Request::Metrics) => {
                c.phase = Phase::Waiting;
                c.deadline = now + ENGINE_TIMEOUT;
                return Step::Asked;
            }
            Some(Request::Refused(status)) => refuse(c, now, counters, status),
            None if now >= c.deadline => refuse(c, now, counters, Status::RequestTimeout),
            None => return Step::Keep,
        }
    }
    if matches!(c.phase, Phase::Waiting) && now >= c.deadline {
        // The engine's answer, if it comes, finds the connection gone and is dropped.
        counters.refused += 1;
        c.phase = Phase::Writing(
            response(
                Status::Unavailable,
                "the engine process did not answer in time\n",
            ),
            0,
        );
        c.deadline = now + WRITE_TIMEOUT;
    }
    if let Phase::Writing(out, at) = &mut c.phase {
        while *at < out.len() {
            match c.stream.write(&out[*at..]) {
                Ok(0) => break,
                Ok(n) => *at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    counters.dropped += 1;
                    return Step::Close;
                }
            }
        }
        if *at == out.len() {
            let _ = c.stream.shutdown(Shutdown::Write);
            return Step::Close;
        }
        if now >= c.deadline {
            counters.dropped += 1;
            return Step::Close;
        }
    }
    Step::Keep
}

fn refuse(c: &mut Connection, now: Instant, counters: &mut ServerCounters, status: Status) {
    counters.refused += 1;
    let body = format!("{}: this server answers GET /metrics only\n", status.line());
    c.phase = Phase::Writing(response(status, &body), 0);
    c.deadline = now + WRITE_TIMEOUT;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_get_metrics_only() {
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\n"), None);
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Request::Metrics)
        );
        assert_eq!(
            parse_head(b"GET /metrics?name[]=x HTTP/1.0\n\n"),
            Some(Request::Metrics)
        );
        let refused = |head: &[u8]| match parse_head(head) {
            Some(Request::Refused(s)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            refused(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Status::MethodNotAllowed
        );
        assert_eq!(refused(b"GET / HTTP/1.1\r\n\r\n"), Status::NotFound);
        assert_eq!(refused(b"GET /metricsx HTTP/1.1\r\n\r\n"), Status::NotFound);
        assert_eq!(
            refused(b"GET /metrics HTTP/2.0\r\n\r\n"),
            Status::VersionNotSupported
        );
        assert_eq!(refused(b"GET /metrics\r\n\r\n"), Status::BadRequest);
        assert_eq!(
            refused(b"GET  /metrics HTTP/1.1\r\n\r\n"),
            Status::BadRequest
        );
        assert_eq!(
            refused(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"),
            Status::BadRequest
        );
        assert_eq!(refused(b"hello\r\n\r\n"), Status::BadRequest);
    }

    #[test]
    fn a_head_is_bounded() {
        let long_line = vec![b'A'; MAX_REQUEST_LINE + 1];
        assert_eq!(
            parse_head(&long_line),
            Some(Request::Refused(Status::UriTooLong))
        );
        let mut head = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while head.len() <= MAX_HEAD {
            head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(
            parse_head(&head),
            Some(Request::Refused(Status::HeadTooLarge))
        );
    }

    #[test]
    fn a_response_says_its_length_and_closes() {
        let r = String::from_utf8(response(Status::Ok, "a 1\n")).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\na 1\n"
        );
        let r = String::from_utf8(response(Status::MethodNotAllowed, "")).unwrap();
        assert!(r.contains("\r\nAllow: GET\r\n"), "{r}");
    }

    #[test]
    fn serves_a_real_connection_without_blocking() {
        let mut server = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = server.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        let t0 = Instant::now();
        // Accepted, nothing sent yet: nothing asked, nothing blocks.
        let mut asked = Vec::new();
        for _ in 0..100 {
            asked = server.serve(t0);
            if !server.connections.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(asked.is_empty());
        client.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        for _ in 0..100 {
            asked = server.serve(t0);
            if !asked.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(asked.len(), 1);
        server.answer(asked[0], t0, Some("m 1\n"));
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\nm 1\n"), "{got}");
        assert_eq!(server.counters.served, 1);
        assert!(server.connections.is_empty());
    }

    #[test]
    fn a_scrape_the_engine_leaves_unanswered_gets_503_and_a_late_answer_is_dropped() {
        let mut server = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        client.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let t0 = Instant::now();
        let mut asked = Vec::new();
        for _ in 0..100 {
            asked = server.serve(t0);
            if !asked.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(asked.len(), 1);
        assert_eq!(server.deadline(), Some(t0 + ENGINE_TIMEOUT));
        assert!(server.serve(t0 + ENGINE_TIMEOUT).is_empty());
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert!(got.starts_with("HTTP/1.1 503 "), "{got}");
        server.answer(asked[0], t0 + ENGINE_TIMEOUT, Some("late 1\n"));
        assert_eq!((server.counters.served, server.counters.refused), (0, 1));
        assert!(server.connections.is_empty());
    }

    #[test]
    fn a_silent_client_gets_408_at_its_deadline() {
        let mut server = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut client = TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let t0 = Instant::now();
        for _ in 0..100 {
            server.serve(t0);
            if !server.connections.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(server.deadline(), Some(t0 + READ_TIMEOUT));
        server.serve(t0 + READ_TIMEOUT);
        let mut got = String::new();
        client.read_to_string(&mut got).unwrap();
        assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
        assert_eq!(server.counters.refused, 1);
    }
}
