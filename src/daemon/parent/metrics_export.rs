//! The parent's side of the metrics: the textfile written every `--metrics-interval`
//! and the `/metrics` endpoint of `--metrics-listen`.
//!
//! Both ask the engine process for the text the way `ctl metrics` does (a request with
//! the parent's report, on the request channel; answers come back in order), so the
//! file, a scrape and `ctl metrics` say the same. The HTTP server runs here, not in the
//! engine process: the text needs the parent's report anyway, and on OpenBSD the
//! engine's pledge would have to grow from `stdio` to `stdio inet` to accept
//! connections (a confined process that can connect anywhere: openbsd/src
//! sys/kern/kern_pledge.c, `pledge_syscalls[]`, `[SYS_accept] = PLEDGE_INET |
//! PLEDGE_UNIX`, read at commit 004d4497806b), while what the parent reads of a client
//! is one bounded request head, compared with fixed strings ([`crate::metrics::http`]).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::PollFd;

use crate::daemon::options::Options;
use crate::metrics::http::ServerCounters;
use crate::metrics::{write_atomically, MetricsServer};
use crate::{log_info, log_warn};

/// Who waits for an answer of the engine process, in the order the requests went.
#[derive(Debug)]
pub(super) enum Waiter {
    /// A control client.
    Control(UnixStream),
    /// A connection of the `/metrics` endpoint.
    Http(u64),
    /// The metrics file.
    File,
}

/// The textfile and the endpoint.
#[derive(Debug)]
pub(super) struct MetricsExport {
    server: Option<MetricsServer>,
    file: Option<PathBuf>,
    interval: Duration,
    next_write: Instant,
    /// A request for the file's text is on its way: no second one.
    file_pending: bool,
    /// The last write failed (logged once until one succeeds).
    file_failing: bool,
}

impl MetricsExport {
    /// From the options, with the listener bound before the privilege drop.
    pub(super) fn new(options: &Options, server: Option<MetricsServer>, now: Instant) -> Self {
        MetricsExport {
            server,
            file: options.metrics_file.clone(),
            interval: options.metrics_interval,
            // The first file at once: a collector finds it as soon as the daemon runs.
            next_write: now,
            file_pending: false,
            file_failing: false,
        }
    }

    /// When something is due: a connection's timeout or the next write of the file.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let file = (self.file.is_some() && !self.file_pending).then_some(self.next_write);
        let server = self.server.as_ref().and_then(MetricsServer::deadline);
        [file, server].into_iter().flatten().min()
    }

    /// What the endpoint served and refused so far.
    pub(super) fn http_counters(&self) -> ServerCounters {
        self.server
            .as_ref()
            .map_or_else(ServerCounters::default, |s| s.counters)
    }

    /// The endpoint's descriptors to poll.
    pub(super) fn poll_fds(&self) -> Vec<PollFd<'_>> {
        self.server
            .as_ref()
            .map_or_else(Vec::new, MetricsServer::poll_fds)
    }

    /// Moves the endpoint's connections on; who needs the metrics text now.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Waiter> {
        let mut due: Vec<Waiter> = match &mut self.server {
            Some(server) => server.serve(now).into_iter().map(Waiter::Http).collect(),
            None => Vec::new(),
        };
        if self.file.is_some() && !self.file_pending && now >= self.next_write {
            self.file_pending = true;
            self.next_write = now + self.interval;
            due.push(Waiter::File);
        }
        due
    }

    /// The engine's text for `waiter` (`None`: the engine is gone).
    pub(super) fn answered(&mut self, waiter: Waiter, now: Instant, text: Option<&str>) {
        match waiter {
            Waiter::Http(id) => {
                if let Some(server) = &mut self.server {
                    server.answer(id, now, text);
                }
            }
            Waiter::File => {
                self.file_pending = false;
                if let (Some(path), Some(text)) = (&self.file, text) {
                    match write_atomically(path, text) {
                        Ok(()) if self.file_failing => {
                            self.file_failing = false;
                            log_info!("metrics file {} written again", path.display());
                        }
                        Ok(()) => {}
                        Err(e) if !self.file_failing => {
                            self.file_failing = true;
                            log_warn!("{e}; tried again every {} s", self.interval.as_secs());
                        }
                        Err(_) => {}
                    }
                }
            }
            Waiter::Control(_) => {}
        }
    }
}
