//! carp demotion while our bulk update is pending, as the kernel's pfsync does: a
//! firewall that does not hold the states yet must not become carp master. Raised
//! when the engine asks, lowered on syncok and on exit (also on an error exit: the
//! value is undone on drop).
//!
//! The kernel's counter outlives us: FreeBSD's `net.inet.carp.demotion` is one global
//! integer the sysctl adds a delta to (`carp_demote_adj_sysctl` → `carp_demote_adj`),
//! OpenBSD's is the `carp` group's, kept in 0..=255 by `if_setgroupattribs` (EINVAL
//! past either end). A daemon killed while it demotes would leave carp demoted for
//! good, and on OpenBSD a few such crashes would make every later raise fail. So what
//! we add is recorded in a small file before the kernel call, removed once lowered,
//! and a new run lowers what the file says a previous run left raised.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How much is added: FreeBSD's pfsync adds `CARP_MAXSKEW` (240) to the global
/// counter, OpenBSD's 32 to the `carp` group's (kernel-interface.md §5).
pub const AMOUNT: i32 = if cfg!(target_os = "openbsd") { 32 } else { 240 };

/// The kernel's carp demotion counter.
pub trait DemotionCounter {
    /// Adds `delta` (negative to lower).
    fn adjust(&mut self, delta: i32) -> io::Result<()>;
    /// The counter's value now (everyone's demotion, not only ours).
    fn value(&mut self) -> io::Result<i32>;
}

/// This system's counter: the kernel's carp on the BSDs; elsewhere every call fails.
#[derive(Debug, Default)]
pub struct SystemCounter;

impl DemotionCounter for SystemCounter {
    #[cfg(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd")))]
    fn adjust(&mut self, delta: i32) -> io::Result<()> {
        crate::sys::carp_demote(delta)
    }

    #[cfg(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd")))]
    fn value(&mut self) -> io::Result<i32> {
        crate::sys::carp_demotion()
    }

    #[cfg(not(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd"))))]
    fn adjust(&mut self, _delta: i32) -> io::Result<()> {
        Err(no_carp())
    }

    #[cfg(not(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd"))))]
    fn value(&mut self) -> io::Result<i32> {
        Err(no_carp())
    }
}

#[cfg(not(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd"))))]
fn no_carp() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "no carp on this system")
}

/// Why the demotion could not be moved, or what a previous run left could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CarpError {
    /// The kernel refused the change or the read.
    #[error("carp demotion: {0}")]
    Kernel(#[source] io::Error),
    /// The record file could not be written, read or removed.
    #[error("carp demotion record {path}: {source}")]
    Record {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The record file holds something pfsyncd never writes: nothing is lowered for it.
    #[error("carp demotion record {path}: {content:?} is not a demotion pfsyncd applies (1..={max}); carp is not lowered for it")]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// What it holds (cut to 32 bytes).
        content: String,
        /// The largest amount a run applies.
        max: i32,
    },
}

/// The file that says how much demotion this daemon has applied (next to the pidfile:
/// `/var/run/pfsyncd.carp`). Absent when nothing is applied.
#[derive(Debug, Clone)]
pub struct DemotionRecord {
    path: PathBuf,
}

impl DemotionRecord {
    /// The record at `path`.
    pub fn new(path: impl Into<PathBuf>) -> DemotionRecord {
        DemotionRecord { path: path.into() }
    }

    /// The record that goes with `pidfile`: the same name with the extension `.carp`.
    pub fn beside(pidfile: &Path) -> DemotionRecord {
        DemotionRecord::new(pidfile.with_extension("carp"))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, source: io::Error) -> CarpError {
        CarpError::Record {
            path: self.path.clone(),
            source,
        }
    }

    /// Records `amount` applied (0: removes the file). Atomic: a crash leaves the old
    /// record or the new one, never a torn one.
    pub fn write(&self, amount: i32) -> Result<(), CarpError> {
        if amount == 0 {
            return self.remove();
        }
        let mut new = self.path.clone().into_os_string();
        new.push(".new");
        let new = PathBuf::from(new);
        let mut file = File::create(&new).map_err(|e| self.error(e))?;
        writeln!(file, "{amount}")
            .and_then(|()| file.sync_all())
            .map_err(|e| self.error(e))?;
        fs::rename(&new, &self.path).map_err(|e| self.error(e))
    }

    /// Removes the record (nothing applied).
    pub fn remove(&self) -> Result<(), CarpError> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The amount recorded, if any; refused unless it is one a run applies (1..=`max`).
    pub fn read(&self, max: i32) -> Result<Option<i32>, CarpError> {
        let text = match fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let text = String::from_utf8_lossy(&text);
        match text.trim().parse::<i32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
            _ => Err(CarpError::BadRecord {
                path: self.path.clone(),
                content: text.chars().take(32).collect(),
                max,
            }),
        }
    }
}

/// What [`Demotion::lower_leftover`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leftover {
    /// What the record said a previous run applied.
    pub recorded: i32,
    /// What was taken off the counter: the recorded amount, or less if the counter
    /// holds less (someone lowered it already); never below zero.
    pub lowered: i32,
}

/// Our share of the carp demotion counter.
pub struct Demotion {
    amount: i32,
    applied: i32,
    counter: Box<dyn DemotionCounter>,
    record: Option<DemotionRecord>,
}

impl Demotion {
    /// A demotion of `amount` made on `counter`, recorded in `record` if given.
    pub fn new(
        amount: i32,
        counter: Box<dyn DemotionCounter>,
        record: Option<DemotionRecord>,
    ) -> Demotion {
        Demotion {
            amount,
            applied: 0,
            counter,
            record,
        }
    }

    /// This system's, recorded beside `pidfile` if there is one.
    pub fn system(pidfile: Option<&Path>) -> Demotion {
        Demotion::new(
            AMOUNT,
            Box::new(SystemCounter),
            pidfile.map(DemotionRecord::beside),
        )
    }

    /// Lowers what a previous run recorded and did not lower (it crashed), and removes
    /// the record. `None` when there was nothing. Call before raising.
    pub fn lower_leftover(&mut self) -> Result<Option<Leftover>, CarpError> {
        let Some(record) = &self.record else {
            return Ok(None);
        };
        let Some(recorded) = record.read(self.amount)? else {
            return Ok(None);
        };
        // The record is written before the kernel call, so a crash in between leaves a
        // record of a demotion never made: never take off more than the counter holds.
        let now = self.counter.value().map_err(CarpError::Kernel)?;
        let lowered = recorded.min(now.max(0));
        if lowered > 0 {
            self.counter.adjust(-lowered).map_err(CarpError::Kernel)?;
        }
        record.remove()?;
        Ok(Some(Leftover { recorded, lowered }))
    }

    /// Raises (`true`) or lowers our demotion; nothing if it is already so.
    pub fn set(&mut self, on: bool) -> Result<(), CarpError> {
        let want = if on { self.amount } else { 0 };
        if want == self.applied {
            return Ok(());
        }
        if want > self.applied {
            // Recorded first: a crash right after the kernel call still leaves it.
            if let Some(record) = &self.record {
                record.write(want)?;
            }
            if let Err(e) = self.counter.adjust(want - self.applied) {
                if let Some(record) = &self.record {
                    // Best effort: a record of more than was applied is lowered at most
                    // to what the counter holds by the next run.
                    let _ = record.write(self.applied);
                }
                return Err(CarpError::Kernel(e));
            }
        } else {
            self.counter
                .adjust(want - self.applied)
                .map_err(CarpError::Kernel)?;
            if let Some(record) = &self.record {
                record.write(want)?;
            }
        }
        self.applied = want;
        Ok(())
    }

    /// True while we demote carp.
    pub fn raised(&self) -> bool {
        self.applied != 0
    }
}

impl Drop for Demotion {
    fn drop(&mut self) {
        let _ = self.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Adjustments seen, and whether to fail them.
    struct Log(Rc<RefCell<Vec<i32>>>, bool);

    impl DemotionCounter for Log {
        fn adjust(&mut self, delta: i32) -> io::Result<()> {
            if self.1 {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            self.0.borrow_mut().push(delta);
            Ok(())
        }
        fn value(&mut self) -> io::Result<i32> {
            Ok(self.0.borrow().iter().sum())
        }
    }

    #[test]
    fn raised_once_lowered_once_and_undone_on_drop() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut d = Demotion::new(240, Box::new(Log(log.clone(), false)), None);
        d.set(true).unwrap();
        d.set(true).unwrap();
        assert!(d.raised());
        d.set(false).unwrap();
        d.set(false).unwrap();
        d.set(true).unwrap();
        drop(d);
        assert_eq!(*log.borrow(), vec![240, -240, 240, -240]);
    }

    #[test]
    fn a_failed_adjustment_is_not_counted_as_applied() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut d = Demotion::new(32, Box::new(Log(log, true)), None);
        assert!(d.set(true).is_err());
        assert!(!d.raised());
    }
}
