//! The daemon's log: one line per event an admin cares about, filtered by level.
//!
//! In the foreground (`-d`), lines go to standard error, prefixed `pfsyncd:` and the level
//! where it is not `info`. Detached, they go to syslog, facility daemon, with the level
//! as the syslog severity.
//!
//! The engine process, chrooted, reaches neither the terminal's successor nor syslog's
//! socket: its lines wait in a queue ([`use_queue`]) that its loop sends to the parent,
//! which writes them as its own. One writer keeps the lines in order and whole.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

/// How much the daemon says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Only what stops the daemon or loses states.
    Error = 0,
    /// And what an admin should look at (a peer refusing our states, send errors).
    Warn = 1,
    /// And the life of the sync: start, peers seen, bulk updates, syncok. The default.
    Info = 2,
    /// And summaries of every second's traffic.
    Debug = 3,
}

impl Level {
    /// The level's name as `--log-level` takes it.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

impl FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Level, String> {
        match s {
            "error" => Ok(Level::Error),
            "warn" | "warning" => Ok(Level::Warn),
            "info" => Ok(Level::Info),
            "debug" => Ok(Level::Debug),
            _ => Err(format!(
                "log level '{s}': expected error, warn, info or debug"
            )),
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static SYSLOG: AtomicBool = AtomicBool::new(false);
static QUEUED: AtomicBool = AtomicBool::new(false);
static QUEUE: Mutex<LineQueue> = Mutex::new(LineQueue {
    lines: VecDeque::new(),
    dropped: 0,
});

/// Most lines held for the parent; more are counted, and the count said once there is
/// room again.
pub const QUEUE_LIMIT: usize = 4096;

struct LineQueue {
    lines: VecDeque<(Level, String)>,
    dropped: u64,
}

/// Keeps every later line in a queue for [`take_queued`] (the engine process).
pub fn use_queue() {
    QUEUED.store(true, Ordering::Relaxed);
}

/// Hands the queued lines to `send`, oldest first.
pub fn take_queued(mut send: impl FnMut(Level, &str)) {
    let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
    if q.dropped > 0 && q.lines.is_empty() {
        let n = std::mem::take(&mut q.dropped);
        send(
            Level::Warn,
            &format!("{n} log lines of the engine process were dropped"),
        );
    }
    while let Some((level, line)) = q.lines.pop_front() {
        send(level, &line);
    }
}

/// Sends every later line to syslog (facility daemon) instead of standard error.
pub fn use_syslog() {
    use nix::syslog::{openlog, Facility, LogFlags};
    #[cfg(target_os = "linux")]
    let opened = openlog(Some(c"pfsyncd"), LogFlags::LOG_PID, Facility::LOG_DAEMON);
    // Elsewhere nix passes the ident through a temporary string that openlog(3) keeps a
    // pointer to; without one, syslog(3) uses the program's name, which is pfsyncd.
    #[cfg(not(target_os = "linux"))]
    let opened = openlog(None::<&str>, LogFlags::LOG_PID, Facility::LOG_DAEMON);
    if opened.is_ok() {
        SYSLOG.store(true, Ordering::Relaxed);
    }
}

/// Sets the process-wide level.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// True when lines of `level` are written.
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Writes one line at `level`, if enabled.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    if QUEUED.load(Ordering::Relaxed) {
        let mut q = QUEUE.lock().unwrap_or_else(|p| p.into_inner());
        if q.lines.len() < QUEUE_LIMIT {
            q.lines.push_back((level, args.to_string()));
        } else {
            q.dropped += 1;
        }
        return;
    }
    if SYSLOG.load(Ordering::Relaxed) {
        use nix::syslog::{syslog, Facility, Priority, Severity};
        let severity = match level {
            Level::Error => Severity::LOG_ERR,
            Level::Warn => Severity::LOG_WARNING,
            Level::Info => Severity::LOG_INFO,
            Level::Debug => Severity::LOG_DEBUG,
        };
        let _ = syslog(
            Priority::new(severity, Facility::LOG_DAEMON),
            &args.to_string(),
        );
        return;
    }
    match level {
        Level::Info => eprintln!("pfsyncd: {args}"),
        _ => eprintln!("pfsyncd: {}: {args}", level.name()),
    }
}

/// Logs at error level.
#[macro_export]
macro_rules! log_error {
    ($($t:tt)*) => { $crate::daemon::log::write($crate::daemon::log::Level::Error, format_args!($($t)*)) };
}

/// Logs at warn level.
#[macro_export]
macro_rules! log_warn {
    ($($t:tt)*) => { $crate::daemon::log::write($crate::daemon::log::Level::Warn, format_args!($($t)*)) };
}

/// Logs at info level.
#[macro_export]
macro_rules! log_info {
    ($($t:tt)*) => { $crate::daemon::log::write($crate::daemon::log::Level::Info, format_args!($($t)*)) };
}

/// Logs at debug level.
#[macro_export]
macro_rules! log_debug {
    ($($t:tt)*) => { $crate::daemon::log::write($crate::daemon::log::Level::Debug, format_args!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_lines_come_out_in_order() {
        // The only test that queues: the switch is process-wide.
        use_queue();
        write(Level::Info, format_args!("one {}", 1));
        write(Level::Debug, format_args!("not at the default level"));
        write(Level::Error, format_args!("two"));
        let mut got = Vec::new();
        take_queued(|l, s| got.push((l, s.to_string())));
        assert_eq!(
            got,
            vec![(Level::Info, "one 1".into()), (Level::Error, "two".into())]
        );
        for i in 0..QUEUE_LIMIT + 5 {
            write(Level::Info, format_args!("{i}"));
        }
        let mut n = 0;
        take_queued(|_, _| n += 1);
        assert_eq!(n, QUEUE_LIMIT);
        let mut said = String::new();
        take_queued(|_, s| said = s.to_string());
        assert_eq!(said, "5 log lines of the engine process were dropped");
        QUEUED.store(false, Ordering::Relaxed);
    }

    #[test]
    fn levels_parse_and_order() {
        assert_eq!("warn".parse::<Level>(), Ok(Level::Warn));
        assert!("loud".parse::<Level>().is_err());
        assert!(Level::Error < Level::Debug);
    }
}
