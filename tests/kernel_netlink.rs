//! pfsyncd's pf netlink client against a model of FreeBSD's kernel (14.0, a later 14.x and
//! 15), written from FreeBSD's code: see tests/kernel/freebsd_netlink.rs for what was read,
//! which versions, and what is a guess.

#[path = "kernel/freebsd_netlink.rs"]
mod model;

use std::io;
use std::net::IpAddr;

use model::{
    KState, Kernel, Version, WriterFault, DEFAULT_TIMEOUTS, ENOENT, ENOMEM, ENOTSUP,
    PFNL_CMD_GET_STATUS, PFNL_CMD_KILLSTATES, PFTM_TCP_ESTABLISHED,
};
use pfsyncd::state::{AddressFamily, Protocol, State};
use pfsyncd::table::pf::netlink::{
    dump_states, get_status, kill_state, kill_states, read_status, resolve_family,
    resolve_family_info, Transport, PF_FAMILY,
};

const ALL: [Version; 3] = [Version::Fb14_0, Version::Fb14x, Version::Fb15];
const HOSTID: u32 = 0x1234_5678;
const PEER: u32 = 0xdead_beef;

/// A kernel with three states: two of its own (TCP/IPv4, UDP/IPv6), one from a peer.
fn kernel(version: Version) -> Kernel {
    let mut k = Kernel::new(version, HOSTID);
    let now = k.time_uptime;
    k.states.push(KState::tcp4(
        0x0000_0001_0000_0001,
        HOSTID,
        ([10, 0, 0, 1], 40000),
        ([10, 0, 0, 2], 443),
        now,
        120,
        3,
    ));
    k.states
        .push(KState::udp6(0x0000_0001_0000_0002, HOSTID, now));
    k.states.push(KState::tcp4(
        0x0000_0002_0000_0001,
        PEER,
        ([192, 168, 1, 5], 51000),
        ([192, 168, 1, 9], 22),
        now,
        600,
        10,
    ));
    k
}

fn family(k: &mut Kernel) -> u16 {
    resolve_family(k, PF_FAMILY, 1).expect("pf's family")
}

fn listing(k: &mut Kernel) -> io::Result<(Vec<State>, u64)> {
    let f = family(k);
    let mut out = Vec::new();
    let skipped = dump_states(k, f, 2, &mut out)?;
    Ok((out, skipped))
}

fn find(states: &[State], id: u64) -> &State {
    states
        .iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("state {id:#x} not listed"))
}

/// F2: 14.0 and 14.x key attributes carry no PF_STK_AF/PF_STK_PROTO (only 15's do); the
/// state-level PF_ST_AF/PF_ST_PROTO say them. Every version's dump must decode.
#[test]
fn every_version_s_states_decode() {
    for v in ALL {
        let mut k = kernel(v);
        let (states, skipped) = listing(&mut k).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        assert_eq!(skipped, 0, "{v:?}: states skipped");
        assert_eq!(states.len(), 3, "{v:?}");
        let tcp = find(&states, 0x0000_0001_0000_0001);
        assert_eq!(tcp.wire.af, AddressFamily::Inet, "{v:?}");
        assert_eq!(tcp.wire.proto, Protocol::Tcp, "{v:?}");
        assert_eq!(tcp.stack.proto, Protocol::Tcp, "{v:?}");
        assert_eq!(tcp.wire.port, [40000, 443], "{v:?}");
        assert_eq!(tcp.wire.addr[1], "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(tcp.creatorid, HOSTID, "{v:?}");
        assert_eq!(tcp.age_secs, 120, "{v:?}");
        assert_eq!(tcp.expire_secs, DEFAULT_TIMEOUTS[2] - 3, "{v:?}");
        let udp = find(&states, 0x0000_0001_0000_0002);
        assert_eq!(udp.wire.af, AddressFamily::Inet6, "{v:?}");
        assert_eq!(udp.stack.af, AddressFamily::Inet6, "{v:?}");
        assert_eq!(udp.wire.proto, Protocol::Udp, "{v:?}");
        assert_eq!(udp.wire.port, [5353, 53], "{v:?}");
        assert_eq!(find(&states, 0x0000_0002_0000_0001).creatorid, PEER);
    }
}

/// The same pf states read the same whatever the version wrote them: 14's zero
/// `PF_ST_RT_ADDR` of a state without route-to, which 15 leaves out, is no route address.
#[test]
fn every_version_reads_the_same_states() {
    let listed: Vec<Vec<State>> = ALL
        .iter()
        .map(|&v| {
            let (mut states, _) = listing(&mut kernel(v)).unwrap();
            states.sort_by_key(|s| s.id);
            states
        })
        .collect();
    assert_eq!(listed[0], listed[2], "14.0 and 15 differ");
    assert_eq!(listed[1], listed[2], "14.x and 15 differ");
    assert!(listed[2].iter().all(|s| s.rt_addr.is_none()));
}

/// F2: a state that still does not decode is counted; a listing where none decodes is an
/// error, never an empty table.
#[test]
fn a_listing_where_no_state_decodes_is_an_error() {
    let mut k = kernel(Version::Fb14x);
    // FAULT (not kernel behaviour): a family pf never keeps, so no decoder can read the
    // states.
    for s in &mut k.states {
        s.key[0].af = 99;
        s.key[1].af = 99;
    }
    let e = listing(&mut k).expect_err("nothing decodes, yet the listing succeeded");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    // One bad state among good ones is counted, the others listed.
    let mut k = kernel(Version::Fb14x);
    k.states[1].key[0].af = 99;
    k.states[1].key[1].af = 99;
    let (states, skipped) = listing(&mut k).unwrap();
    assert_eq!((states.len(), skipped), (2, 1));
}

/// F8: `_nlmsg_end_dump` puts the handler's error in the DONE; the dump was partial.
#[test]
fn a_dump_ended_by_done_carrying_enomem_is_an_error() {
    for v in ALL {
        let mut k = kernel(v);
        k.fault = WriterFault::DoneCarriesEnomemAfter(1);
        let e = listing(&mut k).expect_err("a partial dump taken as complete");
        assert_eq!(e.raw_os_error(), Some(ENOMEM), "{v:?}: {e}");
    }
}

/// The writer running out of memory: the code aborts the DONE too and sends no ack, so
/// the answer just stops; the receive timeout ends the wait. Never a complete listing.
#[test]
fn a_dump_cut_by_the_writer_running_out_is_not_taken_as_complete() {
    let mut k = kernel(Version::Fb14x);
    let f = family(&mut k);
    // One state's message is some 300 bytes: the second does not fit.
    k.fault = WriterFault::AllocationFailsAfter(500);
    let mut out = Vec::new();
    let e = dump_states(&mut k, f, 2, &mut out).expect_err("a cut dump taken as complete");
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
}

/// F8: FreeBSD's `nlmsg_ack` writes the errno positive (Linux negates it).
#[test]
fn freebsd_errors_come_back_as_their_errno() {
    let mut k = kernel(Version::Fb14x);
    let e = resolve_family(&mut k, "no-such-family", 1).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ENOENT), "{e}");
    // 14.0 has no GET_STATUS: the dispatcher's ENOTSUP (45 on FreeBSD).
    let mut k = kernel(Version::Fb14_0);
    let f = family(&mut k);
    let e = read_status(&mut k, f, 2).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ENOTSUP), "{e}");
}

/// L1/F3/F13: the controller lists the commands each kernel handles, so the device can
/// choose once at start: 14.0 has neither KILLSTATES nor GET_STATUS.
#[test]
fn the_controller_says_which_commands_a_kernel_has() {
    for (v, has) in [
        (Version::Fb14_0, false),
        (Version::Fb14x, true),
        (Version::Fb15, true),
    ] {
        let mut k = kernel(v);
        let info = resolve_family_info(&mut k, PF_FAMILY, 1).unwrap();
        assert_eq!(info.id, k.family_id);
        assert_eq!(info.has_command(PFNL_CMD_KILLSTATES), Some(has), "{v:?}");
        assert_eq!(info.has_command(PFNL_CMD_GET_STATUS), Some(has), "{v:?}");
        assert_eq!(info.has_command(1), Some(true), "{v:?}");
    }
    // What a kernel without the command answers when asked anyway.
    let mut k = kernel(Version::Fb14_0);
    let f = family(&mut k);
    let e = kill_state(&mut k, f, 3, PEER, 0x0000_0002_0000_0001).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(ENOTSUP), "{e}");
    assert_eq!(k.states.len(), 3);
}

/// F3: KILLSTATES by id and creator id kills that state only.
#[test]
fn kill_by_id_kills_one() {
    for v in [Version::Fb14x, Version::Fb15] {
        let mut k = kernel(v);
        let f = family(&mut k);
        let killed = kill_state(&mut k, f, 3, PEER, 0x0000_0002_0000_0001).unwrap();
        assert_eq!(killed, 1, "{v:?}");
        assert_eq!(k.states.len(), 2, "{v:?}");
        assert!(k.states.iter().all(|s| s.id() != 0x0000_0002_0000_0001));
        // The right id with another creator is another state: none killed.
        let killed = kill_state(&mut k, f, 4, PEER, 0x0000_0001_0000_0001).unwrap();
        assert_eq!(killed, 0, "{v:?}");
        assert_eq!(k.states.len(), 2, "{v:?}");
        let (states, _) = listing(&mut k).unwrap();
        assert_eq!(states.len(), 2);
    }
}

/// F3: pf takes id 0 as "no id" and kills by the (here empty) filters: everything. The
/// guard refuses it before anything is sent.
#[test]
fn kill_with_id_zero_never_reaches_the_kernel() {
    let mut k = kernel(Version::Fb14x);
    let f = family(&mut k);
    let sent = k.received.len();
    let e = kill_state(&mut k, f, 3, PEER, 0).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    let e = kill_state(&mut k, f, 4, 0, 0x0000_0002_0000_0001).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    assert_eq!(k.received.len(), sent, "a request reached the kernel");
    assert_eq!(k.states.len(), 3);
    // What the guard prevents: the same request sent raw empties the table.
    k.send_raw(&kill_states(f, 5, PEER, 0));
    let mut buf = vec![0u8; 4096];
    assert!(k.recv(&mut buf).unwrap() > 0);
    assert!(k.states.is_empty(), "id 0 should have killed every state");
}

/// pf_killstates takes creator id 0 with an id as its own host id: the guard refuses it
/// rather than letting the kernel pick. Sent raw, it kills the local state of that id.
#[test]
fn creator_id_zero_means_the_host_s_own() {
    let mut k = kernel(Version::Fb15);
    let f = family(&mut k);
    k.send_raw(&kill_states(f, 5, 0, 0x0000_0001_0000_0002));
    let mut buf = vec![0u8; 4096];
    assert!(k.recv(&mut buf).unwrap() > 0);
    assert_eq!(k.states.len(), 2);
    assert!(k.states.iter().all(|s| s.id() != 0x0000_0001_0000_0002));
}

/// F13: GET_STATUS's host id is the creator id pf stamps on its states, in the same
/// order as the dump's; 15 and 14.x alike.
#[test]
fn the_host_id_is_the_creator_id_of_local_states() {
    for v in [Version::Fb14x, Version::Fb15] {
        let mut k = kernel(v);
        let f = family(&mut k);
        let status = read_status(&mut k, f, 2).unwrap();
        assert_eq!(status.hostid, HOSTID, "{v:?}");
        assert!(status.running, "{v:?}");
        assert_eq!(status.checksum, k.chksum, "{v:?}");
        let (states, _) = listing(&mut k).unwrap();
        assert_eq!(
            find(&states, 0x0000_0001_0000_0001).creatorid,
            status.hostid
        );
        k.running = false;
        assert!(!read_status(&mut k, f, 9).unwrap().running, "{v:?}");
    }
    // The raw request is what it claims to be.
    let r = get_status(19, 7);
    assert_eq!(r[16], PFNL_CMD_GET_STATUS);
}

/// F12: pf_nl.c writes PF_ST_EXPIRE as seconds left only while the state is alive; an
/// expired state not yet purged gets the raw uptime at which it expired. Never announce
/// that as seconds left.
#[test]
fn an_expired_state_is_not_announced_with_the_uptime() {
    for v in ALL {
        let mut k = kernel(v);
        let established = DEFAULT_TIMEOUTS[usize::from(PFTM_TCP_ESTABLISHED)];
        // The purge sweeps at multiples of 10 s; the clock starts on one. The TCP state
        // was last seen so long ago that it expires in 5 s; 7 s pass, short of the sweep.
        let now = k.time_uptime;
        k.states[0].expire = now - established + 5;
        k.advance(7);
        assert_eq!(
            k.states.len(),
            3,
            "{v:?}: the expired state is still listed"
        );
        let (states, _) = listing(&mut k).unwrap();
        let s = find(&states, 0x0000_0001_0000_0001);
        assert!(
            s.expire_secs <= established,
            "{v:?}: an expired state announced with {} s left",
            s.expire_secs
        );
        // A live state keeps its seconds left: the peer's, seen 10 s before the start.
        let peer = find(&states, 0x0000_0002_0000_0001);
        assert_eq!(peer.expire_secs, established - 10 - 7, "{v:?}");
        // The sweep takes it; the listing no longer has it.
        k.advance(3);
        let (states, _) = listing(&mut k).unwrap();
        assert_eq!(states.len(), 2, "{v:?}");
        assert!(
            states.iter().all(|s| s.id != 0x0000_0001_0000_0001),
            "{v:?}"
        );
    }
}

/// The device keeps its socket as `&mut dyn Transport`; every call takes one.
#[test]
fn the_calls_take_a_dyn_transport() {
    let mut k = kernel(Version::Fb15);
    let t: &mut dyn Transport = &mut k;
    let info = resolve_family_info(t, PF_FAMILY, 1).unwrap();
    let mut out = Vec::new();
    assert_eq!(dump_states(t, info.id, 2, &mut out).unwrap(), 0);
    assert_eq!(out.len(), 3);
    assert_eq!(read_status(t, info.id, 3).unwrap().hostid, HOSTID);
    assert_eq!(
        kill_state(t, info.id, 4, HOSTID, 0x0000_0001_0000_0002).unwrap(),
        1
    );
    assert_eq!(k.states.len(), 2);
}

/// Replays recorded kernel datagrams, then stays silent as a timed-out socket.
struct Replay(std::collections::VecDeque<Vec<u8>>);

impl Transport for Replay {
    fn send(&mut self, _request: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let d = self
            .0
            .pop_front()
            .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))?;
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

/// Whatever the kernel's bytes turn into, the client answers with states or an error,
/// never a panic or a hang.
#[test]
fn garbled_kernel_answers_are_errors_not_panics() {
    for v in ALL {
        let mut k = kernel(v);
        let f = family(&mut k);
        k.send_raw(&pfsyncd::table::pf::netlink::get_states(f, 2));
        let mut answer = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = k.recv(&mut buf) {
            answer.push(buf[..n].to_vec());
        }
        let total: usize = answer.iter().map(Vec::len).sum();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let mut garbled = answer.clone();
            for _ in 0..1 + next() % 4 {
                let mut at = (next() as usize) % total;
                let d = garbled.iter_mut().find(|d| {
                    if at < d.len() {
                        true
                    } else {
                        at -= d.len();
                        false
                    }
                });
                let d = d.expect("an offset inside the answer");
                d[at] = next() as u8;
            }
            if next() % 3 == 0 {
                let last = garbled.len() - 1;
                let cut = (next() as usize) % garbled[last].len();
                garbled[last].truncate(cut);
            }
            let mut out = Vec::new();
            let _ = dump_states(&mut Replay(garbled.into()), f, 2, &mut out);
            assert!(out.len() <= 3, "{v:?}: more states than the kernel has");
        }
    }
}
