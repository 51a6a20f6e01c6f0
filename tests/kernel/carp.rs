//! Models of the kernels' carp demotion counters, written from their code:
//!
//! - FreeBSD: `sys/netinet/ip_carp.c` `carp_demote_adj_sysctl()`: a write of
//!   `net.inet.carp.demotion` hands the value written to `carp_demote_adj()`, which
//!   `atomic_add_int`s it to `V_carp_demotion`: a delta, with no bound; a read returns
//!   the counter. Read in freebsd/freebsd-src as the index stores it (a 14-era tree,
//!   with the carp netlink interface) and in an older one; both the same.
//! - OpenBSD: `sys/net/if.c` rev 1.741 (2025-09-09) `if_setgroupattribs()`: ENOENT when
//!   there is no group of that name; EINVAL when `demote + ifg_carp_demoted` would go past
//!   0xff or below 0, the counter unchanged; otherwise it adds the delta.
//!   `if_getgroupattribs()` returns the counter. (An older if.c in the index returns
//!   ERANGE instead of EINVAL; either way the change is refused.)

#![allow(dead_code)]

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use pfsyncd::daemon::parent::carp::DemotionCounter;

/// FreeBSD's global `V_carp_demotion`, shared between the daemons of a test (one kernel,
/// successive runs).
#[derive(Debug, Clone, Default)]
pub struct FreeBsdCarp {
    pub demotion: Rc<RefCell<i32>>,
    /// Every delta written, in order.
    pub writes: Rc<RefCell<Vec<i32>>>,
}

impl DemotionCounter for FreeBsdCarp {
    fn adjust(&mut self, delta: i32) -> io::Result<()> {
        let mut d = self.demotion.borrow_mut();
        *d = d.wrapping_add(delta);
        self.writes.borrow_mut().push(delta);
        Ok(())
    }

    fn value(&mut self) -> io::Result<i32> {
        Ok(*self.demotion.borrow())
    }
}

/// OpenBSD's `carp` interface group and its demotion counter.
#[derive(Debug, Clone)]
pub struct OpenBsdCarpGroup {
    /// None: no carp interface, so no `carp` group.
    pub demoted: Rc<RefCell<Option<i32>>>,
    pub writes: Rc<RefCell<Vec<i32>>>,
}

impl OpenBsdCarpGroup {
    /// A `carp` group demoted by `demoted` (others' demotion).
    pub fn new(demoted: i32) -> OpenBsdCarpGroup {
        OpenBsdCarpGroup {
            demoted: Rc::new(RefCell::new(Some(demoted))),
            writes: Rc::default(),
        }
    }

    /// A system without carp interfaces.
    pub fn absent() -> OpenBsdCarpGroup {
        OpenBsdCarpGroup {
            demoted: Rc::new(RefCell::new(None)),
            writes: Rc::default(),
        }
    }

    pub fn demoted(&self) -> i32 {
        self.demoted.borrow().expect("a carp group")
    }
}

impl DemotionCounter for OpenBsdCarpGroup {
    fn adjust(&mut self, delta: i32) -> io::Result<()> {
        let mut g = self.demoted.borrow_mut();
        let Some(now) = g.as_mut() else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        if delta + *now > 0xff || delta + *now < 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        *now += delta;
        self.writes.borrow_mut().push(delta);
        Ok(())
    }

    fn value(&mut self) -> io::Result<i32> {
        (*self.demoted.borrow()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
}
