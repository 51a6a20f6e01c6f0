//! carp demotion while our bulk update is pending, as the kernel's pfsync does: a
//! firewall that does not hold the states yet must not become carp master. Raised
//! when the engine asks, lowered on syncok and on exit (also on an error exit: the
//! value is undone on drop).

use std::io;

/// How much is added: FreeBSD's pfsync adds `CARP_MAXSKEW` (240) to the global
/// counter, OpenBSD's 32 to the `carp` group's (kernel-interface.md §5).
pub const AMOUNT: i32 = if cfg!(target_os = "openbsd") { 32 } else { 240 };

/// Our share of the carp demotion counter.
pub struct Demotion {
    amount: i32,
    applied: i32,
    adjust: Box<dyn FnMut(i32) -> io::Result<()>>,
}

impl Demotion {
    /// A demotion of `amount` made through `adjust` (which adds a delta).
    pub fn new(amount: i32, adjust: Box<dyn FnMut(i32) -> io::Result<()>>) -> Demotion {
        Demotion {
            amount,
            applied: 0,
            adjust,
        }
    }

    /// This system's: the kernel's carp on the BSDs, nothing elsewhere.
    pub fn system() -> Demotion {
        #[cfg(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd")))]
        let adjust: Box<dyn FnMut(i32) -> io::Result<()>> = Box::new(crate::sys::carp_demote);
        #[cfg(not(all(pfsyncd_bindings, any(target_os = "freebsd", target_os = "openbsd"))))]
        let adjust: Box<dyn FnMut(i32) -> io::Result<()>> = Box::new(|_| {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no carp on this system",
            ))
        });
        Demotion::new(AMOUNT, adjust)
    }

    /// Raises (`true`) or lowers our demotion; nothing if it is already so.
    pub fn set(&mut self, on: bool) -> io::Result<()> {
        let want = if on { self.amount } else { 0 };
        if want != self.applied {
            (self.adjust)(want - self.applied)?;
            self.applied = want;
        }
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

    #[test]
    fn raised_once_lowered_once_and_undone_on_drop() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let l = log.clone();
        let mut d = Demotion::new(
            240,
            Box::new(move |delta| {
                l.borrow_mut().push(delta);
                Ok(())
            }),
        );
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
        let mut d = Demotion::new(
            32,
            Box::new(|_| Err(io::Error::from_raw_os_error(libc::EPERM))),
        );
        assert!(d.set(true).is_err());
        assert!(!d.raised());
    }
}
