//! The pf device ([`KernelPf`]) and the pf table over models of the kernels' state
//! ioctls (tests/kernel/pf_ioctl.rs, written from the kernels' code per version).

#[path = "kernel/freebsd_netlink.rs"]
mod freebsd_netlink;
#[path = "kernel/pf_ioctl.rs"]
mod pf_ioctl;

use std::time::Instant;

use pf_ioctl::{PfModel, Version};
use pfsyncd::engine::LocalChange;
use pfsyncd::state::{PeerState, Protocol, State, TcpState, Timeout};
use pfsyncd::table::pf::{KernelPf, PfDevice, PfTable};
use pfsyncd::table::synth::Synth;
use pfsyncd::table::{StateTable, TableError};
use pfsyncd::wire::IfName;

/// States as a peer sends them: its creator id, no rule, an interface the models know.
fn peer_states(seed: u64, creator: u32, n: usize) -> Vec<State> {
    let mut synth = Synth::new(seed, creator);
    (0..n)
        .map(|_| State {
            rule: None,
            anchor: None,
            ifname: IfName::new("em0").unwrap(),
            ..synth.state()
        })
        .collect()
}

fn table(version: Version) -> PfTable<KernelPf<PfModel>> {
    PfTable::new(KernelPf::open(PfModel::new(version)))
}

/// A table over a kernel that answers no netlink (a FreeBSD 14/15 kernel without the
/// netlink module, or a 14 whose pf family does not resolve): the ioctls alone.
fn ioctl_table(version: Version) -> PfTable<KernelPf<PfModel>> {
    let mut m = PfModel::new(version);
    m.netlink = None;
    PfTable::new(KernelPf::open(m))
}

fn model(t: &mut PfTable<KernelPf<PfModel>>) -> &mut PfModel {
    t.device_mut().kernel_mut()
}

fn poll(t: &mut PfTable<KernelPf<PfModel>>) -> Vec<LocalChange> {
    let mut out = Vec::new();
    t.poll_changes(Instant::now(), &mut out).unwrap();
    out
}

#[test]
fn imports_list_and_kill_on_every_kernel() {
    for v in Version::ALL {
        let mut t = table(v);
        let now = Instant::now();
        for s in peer_states(1, 0x22, 12) {
            t.import(now, &s).unwrap();
        }
        assert!(poll(&mut t).is_empty(), "{v:?}: imports echo");
        assert_eq!(t.len(), 12, "{v:?}");
        let s = peer_states(1, 0x22, 1)[0];
        assert!(t.remove(s.creatorid, s.id).unwrap(), "{v:?}");
        assert!(!model(&mut t).has((s.creatorid, s.id)));
        assert!(poll(&mut t).is_empty(), "{v:?}: our kill echoes");
    }
}

/// F4: a kill with id 0 reaches the kernel's kill-all path (both kernels); creator id 0
/// makes the kernel use its own hostid. Nothing may reach the kernel.
#[test]
fn a_zero_id_or_creator_is_refused_before_any_kernel_call() {
    for v in Version::ALL {
        if v == Version::FreeBsd15 {
            continue;
        }
        let mut t = table(v);
        let now = Instant::now();
        for s in peer_states(2, 0x33, 5) {
            t.import(now, &s).unwrap();
        }
        let local = model(&mut t).create_local(peer_states(3, 0, 1)[0]);
        poll(&mut t);
        let before = model(&mut t).len();
        // A peer's DEL_C of id 0.
        assert!(t.remove(0x33, 0).is_err(), "{v:?}: kill of id 0 refused");
        // A peer's UPD of id 0.
        let zero = State {
            id: 0,
            ..peer_states(2, 0x33, 1)[0]
        };
        assert!(t.update(now, &zero).is_err(), "{v:?}");
        assert!(t.import(now, &zero).is_err(), "{v:?}");
        // Creator id 0 with our local state's id: the kernel would kill ours.
        assert!(t.remove(0, local.id).is_err(), "{v:?}");
        assert_eq!(model(&mut t).len(), before, "{v:?}: nothing was killed");
        assert!(
            !model(&mut t).calls.contains(&"DIOCKILLSTATES"),
            "{v:?}: no kill reached the kernel"
        );
        assert_eq!(t.edge_counters().refused_zero_id, 4, "{v:?}");
        // The device on its own refuses as well.
        assert!(t.device_mut().kill(0x33, 0).is_err());
        assert!(t.device_mut().kill(0, local.id).is_err());
        assert_eq!(model(&mut t).len(), before, "{v:?}");
    }
}

/// A peer's state bound to an interface this system does not have: FreeBSD's ioctl import
/// refuses it (EINVAL), OpenBSD's makes a kif for the name and imports a state no packet
/// can match. Neither kernel call is made; the refusal is counted, and an update of such a
/// state kills nothing first.
#[test]
fn a_state_on_an_unknown_interface_is_refused_before_any_kernel_call() {
    for v in Version::ALL {
        let mut t = table(v);
        let now = Instant::now();
        let three = peer_states(4, 0x44, 3);
        let mut s = three[0];
        s.ifname = IfName::new("igb9").unwrap();
        let err = t.import(now, &s).unwrap_err();
        assert!(matches!(err, TableError::Invalid(_)), "{v:?}: {err}");
        assert!(t.update(now, &s).is_err(), "{v:?}");
        assert_eq!(t.edge_counters().unknown_interface, 2, "{v:?}");
        assert!(
            !model(&mut t).calls.contains(&"DIOCADDSTATE"),
            "{v:?}: no import reached the kernel"
        );
        assert!(model(&mut t).kifs_made.is_empty(), "{v:?}");
        assert_eq!(model(&mut t).len(), 0, "{v:?}");
        // Floating states (pf's "all") and the NICs this system has go in.
        let mut floating = three[1];
        floating.ifname = IfName::new("all").unwrap();
        t.import(now, &floating).unwrap();
        t.import(now, &three[2]).unwrap();
        assert_eq!(model(&mut t).len(), 2, "{v:?}");
    }
}

/// L3: an update is a kill and an add, and killing a state in the second half of a
/// synproxy handshake makes pf send the client a RST (pf_unlink_state, both kernels).
/// Such an update is not made, and counted. (On 14.x and 15 the kill would go by
/// netlink, whose model does not send the RST; the refusal comes before either.)
#[test]
fn a_state_in_a_synproxy_handshake_is_not_killed_to_be_updated() {
    for v in [Version::FreeBsd13_1, Version::FreeBsd14_0, Version::OpenBsd] {
        let mut t = table(v);
        let now = Instant::now();
        let mut s = peer_states(7, 0, 1)[0];
        s.wire.proto = Protocol::Tcp;
        s.stack.proto = Protocol::Tcp;
        s.src.state = PeerState::Tcp(TcpState::ProxyDst);
        s.dst.state = PeerState::Tcp(TcpState::Listen);
        s.timeout = Timeout::TcpOpening;
        let local = model(&mut t).create_local(s);
        poll(&mut t);
        // A peer's view of our state, a little further on.
        let mut theirs = local;
        theirs.dst.seqlo = theirs.dst.seqlo.wrapping_add(100);
        let err = t.update(now, &theirs).unwrap_err();
        assert!(matches!(err, TableError::Invalid(_)), "{v:?}: {err}");
        assert_eq!(
            model(&mut t).resets_sent,
            0,
            "{v:?}: pf sent the client a RST"
        );
        assert_eq!(t.edge_counters().synproxy_kept, 1, "{v:?}");
        assert_eq!(model(&mut t).len(), 1, "{v:?}: the state is still there");
        // Once through the handshake, updates go in.
        let mut through = local;
        through.src.state = PeerState::Tcp(TcpState::Established);
        through.dst.state = PeerState::Tcp(TcpState::Established);
        model(&mut t).replace(through);
        poll(&mut t);
        t.update(now, &theirs).unwrap();
        assert_eq!(model(&mut t).resets_sent, 0, "{v:?}");
    }
}

/// F3: FreeBSD 15 has no DIOCKILLSTATES: ENODEV, and no "kldload pfsync" cure for it.
#[test]
fn freebsd_15_without_netlink_kill_says_so_not_kldload() {
    let mut t = ioctl_table(Version::FreeBsd15);
    let s = peer_states(4, 0x44, 1)[0];
    t.import(Instant::now(), &s).unwrap();
    let e = t.remove(s.creatorid, s.id).unwrap_err();
    assert!(matches!(e, TableError::Unsupported { .. }), "{e:?}");
    assert!(!e.to_string().contains("kldload"), "{e}");
    assert!(e.to_string().contains("DIOCKILLSTATES"), "{e}");
}

/// F7: FreeBSD copies whole hash rows and stops before a row that does not fit, so a
/// listing shorter than the buffer may still be partial. A partial listing must never
/// be diffed (it would announce live states as deleted).
#[test]
fn freebsd_row_truncation_is_detected_and_never_diffed() {
    for v in [
        Version::FreeBsd13_1,
        Version::FreeBsd14_0,
        Version::FreeBsd15,
    ] {
        let mut t = ioctl_table(v);
        let base = peer_states(5, 0x55, 1)[0];
        for _ in 0..40 {
            model(&mut t).create_local(base);
        }
        assert_eq!(poll(&mut t).len(), 40, "{v:?}");
        // A burst between the size query and the listing: more states than the slack.
        model(&mut t).hash_rows = 4;
        model(&mut t).burst_after_size_query = vec![base; 200];
        let changes = poll(&mut t);
        assert!(
            !changes
                .iter()
                .any(|c| matches!(c, LocalChange::Delete { .. })),
            "{v:?}: no live state reported deleted: {} changes",
            changes.len()
        );
        // A table that always outgrows the buffer: counted, not diffed.
        model(&mut t).growth_per_size_query = Some((base, 3));
        let before = t.edge_counters().partial_listings;
        let changes = poll(&mut t);
        assert!(
            !changes
                .iter()
                .any(|c| matches!(c, LocalChange::Delete { .. })),
            "{v:?}"
        );
        assert!(t.edge_counters().partial_listings > before, "{v:?}");
    }
}

/// F11: an expire larger than the local timeout of the class wraps in the kernels'
/// unsigned import arithmetic; the table clamps it to the local timeout.
#[test]
fn an_expire_beyond_the_local_timeout_is_clamped() {
    for v in Version::ALL {
        let mut t = table(v);
        model(&mut t).timeouts.set(Timeout::TcpEstablished, 3600);
        let s = State {
            timeout: Timeout::TcpEstablished,
            expire_secs: 172_800,
            ..peer_states(6, 0x66, 1)[0]
        };
        t.import(Instant::now(), &s).unwrap();
        model(&mut t).advance(1);
        let k = model(&mut t).exported((s.creatorid, s.id));
        let k = k.unwrap_or_else(|| panic!("{v:?}: the import was purged at once"));
        assert!(
            k.expire_secs <= 3600 && k.expire_secs > 3000,
            "{v:?}: expire {} after the import",
            k.expire_secs
        );
        assert_eq!(t.edge_counters().expire_clamped, 1, "{v:?}");
    }
}

/// F10: OpenBSD binds an ioctl import's rule number with no checksum check; a rule
/// number the table cannot vouch for goes as -1.
#[test]
fn openbsd_binds_a_rule_number_only_when_it_can_be_vouched_for() {
    let mut t = table(Version::OpenBsd);
    model(&mut t).rules = vec![[0; 25]; 10];
    let s = State {
        rule: Some(3),
        ..peer_states(7, 0x77, 1)[0]
    };
    // Before any poll the table has not read the local checksum: nothing is vouched.
    t.import(Instant::now(), &s).unwrap();
    assert_eq!(
        model(&mut t).bound_rule((s.creatorid, s.id)),
        Some(None),
        "bound to the default rule"
    );
    assert_eq!(t.edge_counters().rule_unbound, 1);
}

/// F13: pf's hostid is the creator id of local states.
#[test]
fn the_hostid_is_pfs() {
    let mut t = table(Version::OpenBsd);
    let local = model(&mut t).create_local(peer_states(8, 0, 1)[0]);
    assert_eq!(t.device_mut().hostid().unwrap(), Some(local.creatorid));
}

/// The device says what it found, in one line.
#[test]
fn the_device_describes_what_it_uses() {
    let line = KernelPf::open(PfModel::new(Version::FreeBsd15)).describe();
    assert!(line.contains("listed by netlink GETSTATES"), "{line}");
    assert!(line.contains("killed by netlink KILLSTATES"), "{line}");
    assert!(!line.contains('\n'), "{line}");
    // 14.0's family has no KILLSTATES: the ioctl.
    let line = KernelPf::open(PfModel::new(Version::FreeBsd14_0)).describe();
    assert!(line.contains("listed by netlink GETSTATES"), "{line}");
    assert!(line.contains("killed by DIOCKILLSTATES"), "{line}");
    let mut m = PfModel::new(Version::FreeBsd15);
    m.netlink = None;
    let line = KernelPf::open(m).describe();
    assert!(line.contains("no pf netlink family"), "{line}");
    assert!(line.contains("listed by DIOCGETSTATES"), "{line}");
    let line = KernelPf::open(PfModel::new(Version::OpenBsd)).describe();
    assert!(line.contains("killed by DIOCKILLSTATES"), "{line}");
}

/// F3, the cure: FreeBSD 15 kills through netlink KILLSTATES, and an update (kill and
/// add) works there.
#[test]
fn freebsd_15_kills_and_updates_through_netlink() {
    let mut t = table(Version::FreeBsd15);
    let now = Instant::now();
    let states = peer_states(14, 0x14, 3);
    for s in &states {
        t.import(now, s).unwrap();
    }
    assert!(poll(&mut t).is_empty());
    let mut moved = states[0];
    moved.src.seqlo = moved.src.seqlo.wrapping_add(10);
    t.update(now, &moved).unwrap();
    assert!(t.remove(states[1].creatorid, states[1].id).unwrap());
    assert!(!model(&mut t).has((states[1].creatorid, states[1].id)));
    assert!(model(&mut t).has((moved.creatorid, moved.id)));
    assert!(!model(&mut t).calls.contains(&"DIOCKILLSTATES"));
    assert!(poll(&mut t).is_empty(), "our update and kill echo");
    assert_eq!(t.len(), 2);
}

/// F9 on the kernel: a netlink listing keeps the 16-bit state flags and the rtable that
/// 1301 records drop.
#[test]
fn freebsd_netlink_listing_keeps_what_1301_drops() {
    let mut t = table(Version::FreeBsd15);
    let mut s = peer_states(15, 0, 1)[0];
    s.state_flags.insert(pfsyncd::state::StateFlags::SETPRIO);
    s.rtableid = Some(2);
    let local = model(&mut t).create_local(s);
    let changes = poll(&mut t);
    let [LocalChange::Insert(got)] = changes.as_slice() else {
        panic!("{changes:?}")
    };
    assert_eq!(got.id, local.id);
    assert!(got
        .state_flags
        .contains(pfsyncd::state::StateFlags::SETPRIO));
    assert_eq!(got.rtableid, Some(2));
}

/// L2: at a raised securelevel the kernels refuse state changes with EPERM; the error
/// says so.
#[test]
fn a_raised_securelevel_is_named() {
    for v in [Version::OpenBsd, Version::FreeBsd14x] {
        let mut t = table(v);
        model(&mut t).securelevel = 3;
        let e = t
            .import(Instant::now(), &peer_states(9, 0x99, 1)[0])
            .unwrap_err();
        assert!(e.to_string().contains("securelevel"), "{v:?}: {e}");
    }
}

/// L7: FreeBSD's import answers ENOMEM for an SCTP state it cannot give scrub memory;
/// that is no full table.
#[test]
fn enomem_on_an_sctp_import_is_not_a_full_table() {
    let mut t = table(Version::FreeBsd15);
    let mut s = peer_states(10, 0x10, 1)[0];
    s.wire.proto = Protocol::Sctp;
    s.stack.proto = Protocol::Sctp;
    s.src.scrub = None;
    s.dst.scrub = None;
    let e = t.import(Instant::now(), &s).unwrap_err();
    assert!(!matches!(e, TableError::Full), "{e:?}");
    assert!(e.to_string().contains("SCTP"), "{e}");
}

/// F10, the other side: once the local checksum is known, a rule number the engine
/// kept (vouched for against it) is bound as the kernel does.
#[test]
fn openbsd_binds_a_vouched_rule_number() {
    let mut t = table(Version::OpenBsd);
    model(&mut t).rules = vec![[0; 25]; 10];
    poll(&mut t);
    assert_eq!(t.checksum(), [0x5a; 16]);
    let s = State {
        rule: Some(3),
        ..peer_states(11, 0x11, 1)[0]
    };
    t.import(Instant::now(), &s).unwrap();
    assert_eq!(model(&mut t).bound_rule((s.creatorid, s.id)), Some(Some(3)));
    assert_eq!(t.edge_counters().rule_unbound, 0);
}

/// F11: the local timeouts are read from the kernel, and again after a ruleset change.
#[test]
fn local_timeouts_follow_the_kernel() {
    let mut t = table(Version::FreeBsd14x);
    model(&mut t).timeouts.set(Timeout::UdpMultiple, 20);
    poll(&mut t);
    let s = State {
        timeout: Timeout::UdpMultiple,
        expire_secs: 50,
        ..peer_states(12, 0x12, 1)[0]
    };
    t.import(Instant::now(), &s).unwrap();
    assert_eq!(
        model(&mut t)
            .exported((s.creatorid, s.id))
            .unwrap()
            .expire_secs,
        20
    );
    // `set timeout udp.multiple 90` and a ruleset load.
    model(&mut t).timeouts.set(Timeout::UdpMultiple, 90);
    model(&mut t).checksum = [0x77; 16];
    poll(&mut t);
    let s2 = State { id: s.id + 1, ..s };
    t.import(Instant::now(), &s2).unwrap();
    assert_eq!(
        model(&mut t)
            .exported((s2.creatorid, s2.id))
            .unwrap()
            .expire_secs,
        50
    );
}

/// F7, verified: OpenBSD fills the buffer state by state, so an answer shorter than
/// the buffer is whole, and one that fills it is taken again.
#[test]
fn openbsd_listing_state_by_state() {
    let mut t = table(Version::OpenBsd);
    let base = peer_states(13, 0, 1)[0];
    for _ in 0..30 {
        model(&mut t).create_local(base);
    }
    model(&mut t).burst_after_size_query = vec![base; 100];
    let changes = poll(&mut t);
    assert_eq!(changes.len(), 130);
    assert_eq!(t.edge_counters().partial_listings, 0);
}

/// Why F4 matters, on the models: the raw DIOCKILLSTATES with id 0 kills every state
/// (both kernels), and with creator id 0 the kernel's own state of that id.
#[test]
fn the_kernels_read_id_0_as_every_state() {
    use pfsyncd::table::pf::{KillRequest, PfKernel};
    for v in [Version::FreeBsd13_1, Version::FreeBsd14x, Version::OpenBsd] {
        let mut m = PfModel::new(v);
        let local = m.create_local(peer_states(16, 0, 1)[0]);
        for _ in 0..4 {
            m.create_local(peer_states(16, 0, 1)[0]);
        }
        let ours = KillRequest {
            id_raw: local.id.to_be(),
            creatorid_raw: 0,
        };
        assert_eq!(
            m.kill_states(ours).unwrap(),
            1,
            "{v:?}: creator 0 is the hostid"
        );
        assert_eq!(
            m.kill_states(KillRequest::for_state(0x77, 0)).unwrap(),
            4,
            "{v:?}"
        );
        assert_eq!(m.len(), 0, "{v:?}");
    }
}
