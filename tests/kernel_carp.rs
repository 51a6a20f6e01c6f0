//! carp demotion across daemon runs, on models of each kernel's counter
//! (tests/kernel/carp.rs): what a crashed run left raised is lowered by the next, the
//! counter never goes below zero or (OpenBSD) past 255, and a record pfsyncd never
//! writes makes no kernel call.

#[path = "kernel/carp.rs"]
mod model;

use std::path::PathBuf;

use model::{FreeBsdCarp, OpenBsdCarpGroup};
use pfsyncd::daemon::parent::carp::{
    CarpError, Demotion, DemotionCounter, DemotionRecord, Leftover,
};

/// A fresh directory for the record (the pidfile's, /var/run in production), removed
/// when dropped.
struct Dir(PathBuf);

impl Dir {
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("pfsyncd-carp-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

fn run(amount: i32, counter: impl DemotionCounter + 'static, record: &DemotionRecord) -> Demotion {
    Demotion::new(amount, Box::new(counter), Some(record.clone()))
}

#[test]
fn a_crashed_runs_demotion_is_lowered_by_the_next_run_on_freebsd() {
    let d = dir("fb-crash");
    let record = DemotionRecord::beside(&d.join("pfsyncd.pid"));
    assert_eq!(record.path(), d.join("pfsyncd.carp"));
    let kernel = FreeBsdCarp::default();
    // Another demotion already there (an interface down: V_carp_ifdown_adj).
    *kernel.demotion.borrow_mut() = 240;

    let mut first = run(240, kernel.clone(), &record);
    assert_eq!(first.lower_leftover().unwrap(), None);
    first.set(true).unwrap();
    assert_eq!(*kernel.demotion.borrow(), 480);
    // Killed: nothing runs on the way out.
    std::mem::forget(first);

    let mut second = run(240, kernel.clone(), &record);
    assert_eq!(
        second.lower_leftover().unwrap(),
        Some(Leftover {
            recorded: 240,
            lowered: 240
        })
    );
    assert_eq!(
        *kernel.demotion.borrow(),
        240,
        "only our share is taken off"
    );
    assert!(!record.path().exists());
    // And the second run works as the first did.
    second.set(true).unwrap();
    drop(second);
    assert_eq!(*kernel.demotion.borrow(), 240);
    assert!(!record.path().exists());
}

#[test]
fn repeated_crashes_do_not_wedge_openbsds_group_counter() {
    let d = dir("ob-crash");
    let record = DemotionRecord::beside(&d.join("pfsyncd.pid"));
    let kernel = OpenBsdCarpGroup::new(0);
    // 255 / 32 = 7 crashes would fill the counter if nobody lowered it.
    for _ in 0..20 {
        let mut run = run(32, kernel.clone(), &record);
        run.lower_leftover().unwrap();
        run.set(true)
            .unwrap_or_else(|e| panic!("raise refused at {}: {e}", kernel.demoted()));
        std::mem::forget(run);
    }
    assert_eq!(kernel.demoted(), 32);
    let mut last = run(32, kernel.clone(), &record);
    last.lower_leftover().unwrap();
    drop(last);
    assert_eq!(kernel.demoted(), 0);
}

#[test]
fn the_record_is_written_before_the_raise_and_removed_after_the_lowering() {
    let d = dir("order");
    let record = DemotionRecord::beside(&d.join("pfsyncd.pid"));
    let kernel = FreeBsdCarp::default();
    let mut demotion = run(240, kernel.clone(), &record);
    demotion.set(true).unwrap();
    assert_eq!(
        std::fs::read_to_string(record.path()).unwrap().trim(),
        "240"
    );
    demotion.set(false).unwrap();
    assert!(!record.path().exists());
    assert_eq!(*kernel.writes.borrow(), vec![240, -240]);
}

#[test]
fn openbsd_refuses_a_raise_past_255_and_nothing_is_recorded() {
    let d = dir("ob-full");
    let record = DemotionRecord::beside(&d.join("pfsyncd.pid"));
    let kernel = OpenBsdCarpGroup::new(250);
    let mut demotion = run(32, kernel.clone(), &record);
    let err = demotion.set(true).unwrap_err();
    assert!(
        matches!(&err, CarpError::Kernel(e) if e.raw_os_error() == Some(libc::EINVAL)),
        "{err}"
    );
    assert!(!demotion.raised());
    assert!(!record.path().exists(), "a refused raise left a record");
    assert_eq!(kernel.demoted(), 250);
    // No carp group at all: ENOENT, and nothing recorded either.
    let none = OpenBsdCarpGroup::absent();
    let mut demotion = run(32, none, &record);
    assert!(demotion.set(true).is_err());
    assert!(!record.path().exists());
}

#[test]
fn a_leftover_is_never_lowered_below_what_the_counter_holds() {
    // The record is written before the kernel call: a crash between the two leaves a
    // record of a demotion never made, or an operator lowered it by hand.
    for held in [0, 100] {
        let d = dir(&format!("clamp-{held}"));
        let record = DemotionRecord::beside(&d.join("pfsyncd.pid"));
        record.write(240).unwrap();
        let kernel = FreeBsdCarp::default();
        *kernel.demotion.borrow_mut() = held;
        let mut demotion = run(240, kernel.clone(), &record);
        assert_eq!(
            demotion.lower_leftover().unwrap(),
            Some(Leftover {
                recorded: 240,
                lowered: held
            })
        );
        assert_eq!(
            *kernel.demotion.borrow(),
            0,
            "FreeBSD would go negative: promoted"
        );
        assert!(!record.path().exists());
    }
    let d = dir("clamp-ob");
    let record = DemotionRecord::beside(&d.join("pfsyncd.pid"));
    record.write(32).unwrap();
    let kernel = OpenBsdCarpGroup::new(10);
    run(32, kernel.clone(), &record).lower_leftover().unwrap();
    assert_eq!(kernel.demoted(), 0);
}

#[test]
fn a_record_pfsyncd_never_writes_makes_no_kernel_call() {
    for content in [
        "",
        "abc",
        "0",
        "-5",
        "241",
        "99999999999",
        "240 240",
        "\u{0}\u{ff}",
    ] {
        let d = dir("bad");
        let record = DemotionRecord::beside(&d.join("pfsyncd.pid"));
        std::fs::write(record.path(), content).unwrap();
        let kernel = FreeBsdCarp::default();
        *kernel.demotion.borrow_mut() = 500;
        let mut demotion = run(240, kernel.clone(), &record);
        let err = demotion.lower_leftover().unwrap_err();
        assert!(
            matches!(err, CarpError::BadRecord { .. }),
            "{content:?}: {err}"
        );
        assert!(kernel.writes.borrow().is_empty(), "{content:?}");
        assert_eq!(*kernel.demotion.borrow(), 500);
    }
}

#[test]
fn a_failed_lowering_keeps_the_record_for_the_next_run() {
    let d = dir("keep");
    let record = DemotionRecord::beside(&d.join("pfsyncd.pid"));
    let kernel = OpenBsdCarpGroup::new(0);
    let mut demotion = run(32, kernel.clone(), &record);
    demotion.set(true).unwrap();
    // The carp interfaces go away meanwhile: the group with them.
    *kernel.demoted.borrow_mut() = None;
    assert!(demotion.set(false).is_err());
    assert!(demotion.raised());
    assert_eq!(std::fs::read_to_string(record.path()).unwrap().trim(), "32");
    std::mem::forget(demotion);
}
