//! The pf table's logic over a device that behaves as the kernels' ioctls do (as
//! kernel-interface.md describes them): records in, records out, errno for refusals.
//! The ioctls themselves run only on a BSD; everything the table decides is here.

use std::collections::BTreeMap;
use std::io;
use std::time::Instant;

use pfsyncd::engine::LocalChange;
use pfsyncd::state::{State, StateFlags};
use pfsyncd::table::pf::{Listing, PfDevice, PfTable, NO_PFSYNC};
use pfsyncd::table::synth::Synth;
use pfsyncd::table::{StateTable, TableError};
use pfsyncd::wire::msg::StateRecord;
use pfsyncd::wire::{IfName, RecordFormat};

/// A kernel's state table as the ioctls show it.
struct Kernel {
    format: RecordFormat,
    /// The listing's format where it differs from the import's (FreeBSD's netlink
    /// listing: 1500).
    list_format: Option<RecordFormat>,
    records: BTreeMap<(u32, u64), Vec<u8>>,
    /// pfsync.ko loaded and pfsync0 up (FreeBSD), else DIOCADDSTATE is EOPNOTSUPP.
    pfsync: bool,
    adds: usize,
    kills: usize,
    chksum: [u8; 16],
}

impl Kernel {
    fn new(format: RecordFormat) -> Kernel {
        Kernel {
            format,
            list_format: None,
            records: BTreeMap::new(),
            pfsync: true,
            adds: 0,
            kills: 0,
            chksum: [0; 16],
        }
    }

    /// A state created by traffic through the firewall.
    fn create(&mut self, s: &State) {
        let (r, _) = s.to_record(self.list_format.unwrap_or(self.format));
        let mut b = vec![0; r.buffer_len()];
        r.emit_bytes(&mut b);
        self.records.insert((s.creatorid, s.id), b);
    }

    fn state(&self, key: (u32, u64)) -> Option<State> {
        let b = self.records.get(&key)?;
        State::from_record(&StateRecord::parse(self.format, b).ok()?).ok()
    }
}

fn errno(n: i32) -> io::Error {
    io::Error::from_raw_os_error(n)
}

impl PfDevice for Kernel {
    fn format(&self) -> RecordFormat {
        self.format
    }

    fn list_format(&self) -> RecordFormat {
        self.list_format.unwrap_or(self.format)
    }

    fn list(&mut self, out: &mut Vec<u8>) -> io::Result<Listing> {
        out.clear();
        for r in self.records.values() {
            out.extend_from_slice(r);
        }
        Ok(Listing::Complete)
    }

    fn add(&mut self, record: &[u8]) -> io::Result<()> {
        if !self.pfsync {
            return Err(errno(libc::EOPNOTSUPP));
        }
        let r = StateRecord::parse(self.format, record).map_err(|_| errno(libc::EINVAL))?;
        let s = State::from_record(&r).map_err(|_| errno(libc::EINVAL))?;
        // FreeBSD 14+: a real rule number without a single route address is refused.
        if self.format == RecordFormat::FreeBsd1301 && s.rule.is_some() {
            return Err(errno(libc::EINVAL));
        }
        if self.records.contains_key(&(s.creatorid, s.id)) {
            return Err(errno(libc::EEXIST));
        }
        self.adds += 1;
        self.records.insert((s.creatorid, s.id), record.to_vec());
        Ok(())
    }

    fn checksum(&mut self) -> io::Result<[u8; 16]> {
        Ok(self.chksum)
    }

    fn kill(&mut self, creatorid: u32, id: u64) -> io::Result<u32> {
        self.kills += 1;
        Ok(u32::from(self.records.remove(&(creatorid, id)).is_some()))
    }
}

fn poll<D: PfDevice>(t: &mut PfTable<D>) -> Vec<LocalChange> {
    let mut out = Vec::new();
    t.poll_changes(Instant::now(), &mut out).unwrap();
    out
}

fn synth_states(seed: u64, creator: u32, n: usize) -> Vec<State> {
    let mut synth = Synth::new(seed, creator);
    (0..n)
        .map(|_| State {
            rule: None,
            ..synth.state()
        })
        .collect()
}

#[test]
fn the_first_listing_is_inserts_without_no_sync_states() {
    for format in [RecordFormat::OpenBsd, RecordFormat::FreeBsd1301] {
        let mut k = Kernel::new(format);
        let states = synth_states(1, 0x11, 20);
        for s in &states {
            k.create(s);
        }
        let mut hidden = synth_states(2, 0x11, 1)[0];
        hidden.id = 999_999;
        hidden.state_flags.insert(StateFlags::NOSYNC);
        k.create(&hidden);
        let mut t = PfTable::new(k);
        let changes = poll(&mut t);
        assert_eq!(changes.len(), 20, "{format:?}");
        assert!(changes.iter().all(|c| matches!(c, LocalChange::Insert(_))));
        assert!(t.get(Instant::now(), 0x11, 999_999).unwrap().is_none());
        // Every listed state is found by its name, and only by its own.
        for s in &states {
            let got = t.get(Instant::now(), s.creatorid, s.id).unwrap();
            assert_eq!(
                got.map(|g| (g.creatorid, g.id, g.wire)),
                Some((s.creatorid, s.id, s.wire))
            );
        }
        assert!(t.get(Instant::now(), 0x12, states[0].id).unwrap().is_none());
        assert!(poll(&mut t).is_empty(), "nothing changed");
    }
}

#[test]
fn our_imports_updates_and_kills_are_not_reported_but_traffic_is() {
    for format in [RecordFormat::OpenBsd, RecordFormat::FreeBsd1301] {
        let mut t = PfTable::new(Kernel::new(format));
        assert!(poll(&mut t).is_empty());
        let now = Instant::now();
        let peer = synth_states(3, 0x22, 10);
        for s in &peer {
            t.import(now, s).unwrap();
        }
        assert!(poll(&mut t).is_empty(), "imports echo: {format:?}");
        // The engine's merge: kill + re-add, not reported either.
        let mut merged = peer[0];
        merged.src.seqlo = merged.src.seqlo.wrapping_add(1000);
        t.update(now, &merged).unwrap();
        assert!(poll(&mut t).is_empty(), "updates echo");
        assert_eq!(t.device().kills, 1);
        assert!(t.remove(peer[1].creatorid, peer[1].id).unwrap());
        assert!(poll(&mut t).is_empty(), "kills echo");
        // Traffic moves a state in the kernel: reported.
        let mut moved = peer[2];
        moved.dst.seqlo = moved.dst.seqlo.wrapping_add(77);
        moved.packets[0] += 1;
        t.device_mut().create(&moved);
        let changes = poll(&mut t);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(matches!(changes[0], LocalChange::Update(s) if s.id == moved.id));
    }
}

#[test]
fn counters_are_news_and_the_clock_is_not() {
    for format in [RecordFormat::OpenBsd, RecordFormat::FreeBsd1301] {
        let mut k = Kernel::new(format);
        let s = synth_states(8, 0x77, 1)[0];
        k.create(&s);
        let mut t = PfTable::new(k);
        assert_eq!(poll(&mut t).len(), 1);
        // A second passes: age and expiry move.
        let older = State {
            age_secs: s.age_secs + 1,
            expire_secs: s.expire_secs.saturating_sub(1),
            ..s
        };
        t.device_mut().create(&older);
        assert!(poll(&mut t).is_empty(), "{format:?}");
        // A packet: the counters move.
        let mut used = older;
        used.packets[1] += 1;
        t.device_mut().create(&used);
        assert_eq!(poll(&mut t).len(), 1, "{format:?}");
    }
}

#[test]
fn the_ruleset_checksum_follows_the_kernel() {
    let mut t = PfTable::new(Kernel::new(RecordFormat::OpenBsd));
    assert_eq!(t.checksum(), [0; 16]);
    t.device_mut().chksum = [0xab; 16];
    poll(&mut t);
    assert_eq!(
        t.checksum(),
        [0xab; 16],
        "read at the poll after a ruleset load"
    );
}

#[test]
fn freebsd_imports_go_with_rule_minus_one_and_no_route() {
    let mut t = PfTable::new(Kernel::new(RecordFormat::FreeBsd1301));
    let mut s = synth_states(4, 0x33, 1)[0];
    s.rule = Some(7);
    s.rt = pfsyncd::wire::RouteType::RouteTo;
    s.rt_addr = Some("192.0.2.9".parse().unwrap());
    t.import(Instant::now(), &s).unwrap();
    let k = t.device().state((s.creatorid, s.id)).unwrap();
    assert_eq!(k.rule, None);
    assert_eq!(k.rt_addr, None);
    // OpenBSD keeps the rule number, once the local ruleset checksum is known (the
    // engine vouches for a rule number against it).
    let mut o = PfTable::new(Kernel::new(RecordFormat::OpenBsd));
    o.device_mut().chksum = [0xab; 16];
    poll(&mut o);
    o.import(Instant::now(), &s).unwrap();
    assert_eq!(o.device().state((s.creatorid, s.id)).unwrap().rule, Some(7));
}

#[test]
fn errnos_become_counted_outcomes_with_the_cure() {
    let now = Instant::now();
    let mut t = PfTable::new(Kernel::new(RecordFormat::FreeBsd1301));
    let s = synth_states(5, 0x44, 1)[0];
    t.import(now, &s).unwrap();
    assert!(matches!(
        t.import(now, &s),
        Err(TableError::AlreadyExists { .. })
    ));
    let missing = State { id: 424242, ..s };
    assert!(matches!(
        t.update(now, &missing),
        Err(TableError::NotFound { .. })
    ));
    t.device_mut().pfsync = false;
    let other = State { id: 5, ..s };
    match t.import(now, &other) {
        Err(e @ TableError::Unsupported { .. }) => {
            assert!(e.to_string().contains("kldload pfsync"), "{e}");
            assert_eq!(e.to_string(), format!("not supported: {NO_PFSYNC}"));
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn a_clear_of_one_creator_kills_only_its_states() {
    let mut k = Kernel::new(RecordFormat::OpenBsd);
    for s in synth_states(6, 0x55, 5)
        .iter()
        .chain(&synth_states(7, 0x66, 4))
    {
        k.create(s);
    }
    let mut t = PfTable::new(k);
    poll(&mut t);
    assert_eq!(t.clear(Some(0x55), &IfName::EMPTY).unwrap(), 5);
    assert!(poll(&mut t).is_empty(), "our clear is not news");
    assert_eq!(t.len(), 4);
}

/// F9: FreeBSD 14/15 list by netlink, whose states carry what 1301 cannot (route
/// interface, rtable, the high state flags); the table reads the 1500 listing as it is.
/// F12: an expired state's netlink expiry is an absolute uptime; no listed expiry goes
/// out beyond the local timeout of its class.
#[test]
fn a_netlink_listing_keeps_what_1301_cannot_carry() {
    let mut k = Kernel::new(RecordFormat::FreeBsd1301);
    k.list_format = Some(RecordFormat::FreeBsd1500);
    let mut s = synth_states(9, 0x99, 1)[0];
    s.rt = pfsyncd::wire::RouteType::RouteTo;
    s.rt_addr = Some("192.0.2.1".parse().unwrap());
    s.rt_ifname = IfName::new("em1").unwrap();
    s.rtableid = Some(3);
    s.state_flags.insert(StateFlags::SETPRIO);
    s.timeout = pfsyncd::state::Timeout::TcpEstablished;
    s.expire_secs = 1_000_000;
    k.create(&s);
    let mut t = PfTable::new(k);
    let changes = poll(&mut t);
    assert_eq!(changes.len(), 1, "{changes:?}");
    let LocalChange::Insert(got) = changes[0] else {
        panic!("{changes:?}")
    };
    assert_eq!((got.creatorid, got.id), (s.creatorid, s.id));
    assert_eq!(got.rt_ifname, s.rt_ifname);
    assert_eq!(got.rtableid, Some(3));
    assert_eq!(got.state_flags, s.state_flags);
    assert_eq!(got.expire_secs, 86_400, "clamped to tcp.established");
    assert!(poll(&mut t).is_empty());
}
