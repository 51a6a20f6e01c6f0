//! Unit tests of the engine's single-node behaviour, packet in, packet out.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use super::*;
use crate::state::{PeerState, TcpState, Timeout};
use crate::wire::msg::{BusRepr, StateRefRepr, UpdCRepr};
use crate::wire::{Message, PacketBuilder, PacketReader, Pushed};

pub(super) const US: u32 = 0x0a0a_0a0a;
pub(super) const PEER: u32 = 0x0b0b_0b0b;

fn t0() -> Instant {
    // A fixed base for virtual time; only offsets from it matter.
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

pub(super) fn at(ms: u64) -> Instant {
    t0() + Duration::from_millis(ms)
}

pub(super) fn engine(dialect: Dialect) -> Engine {
    Engine::new(Config::new(US, dialect))
}

pub(super) fn engine_with(dialect: Dialect, f: impl FnOnce(&mut Config)) -> Engine {
    let mut c = Config::new(US, dialect);
    f(&mut c);
    Engine::new(c)
}

pub(super) fn ifname(s: &str) -> IfName {
    IfName::new(s).unwrap()
}

pub(super) fn tcp(creatorid: u32, id: u64) -> State {
    let mut s = State {
        id,
        creatorid,
        ifname: ifname("em0"),
        timeout: Timeout::TcpEstablished,
        packets: [1, 1],
        bytes: [60, 60],
        ..State::default()
    };
    s.wire.addr = [
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    ];
    s.wire.port = [40000, 80];
    s.stack = s.wire;
    s.src.state = PeerState::Tcp(TcpState::Established);
    s.dst.state = PeerState::Tcp(TcpState::Established);
    s.src.seqlo = 1000;
    s.dst.seqlo = 5000;
    s
}

/// The same state after `n` more packets each way.
pub(super) fn advanced(mut s: State, n: u32) -> State {
    s.src.seqlo = s.src.seqlo.wrapping_add(100 * n);
    s.dst.seqlo = s.dst.seqlo.wrapping_add(100 * n);
    s.packets[0] += u64::from(n);
    s.packets[1] += u64::from(n);
    s
}

pub(super) fn transmits(e: &mut Engine) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| e.poll_transmit())
        .map(|t| t.payload)
        .collect()
}

pub(super) fn table_ops(e: &mut Engine) -> Vec<TableOp> {
    std::iter::from_fn(|| e.poll_table_op()).collect()
}

fn events(e: &mut Engine) -> Vec<Event> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn messages(payload: &[u8]) -> Vec<Message> {
    PacketReader::new(payload)
        .unwrap()
        .messages()
        .collect::<Result<_, _>>()
        .unwrap()
}

pub(super) fn all_messages(packets: &[Vec<u8>]) -> Vec<Message> {
    packets.iter().flat_map(|p| messages(p)).collect()
}

fn packet(dialect: Dialect, msgs: &[Message]) -> Vec<u8> {
    let mut b = PacketBuilder::new(dialect, 9000);
    for m in msgs {
        assert_eq!(b.push(m).unwrap(), Pushed::Added);
    }
    b.finish().unwrap()
}

pub(super) fn receive(e: &mut Engine, now: Instant, dialect: Dialect, msgs: &[Message]) {
    let p = packet(dialect, msgs);
    e.handle_packet(now, good(&p));
}

fn good(payload: &[u8]) -> Received<'_> {
    Received {
        payload,
        on_syncdev: true,
        ttl: 255,
        ipv6: false,
        source: None,
    }
}

pub(super) fn upd(dialect: Dialect, s: &State) -> Message {
    Message::Upd(s.to_record(dialect.record_format()).0)
}

pub(super) fn ins(dialect: Dialect, s: &State) -> Message {
    Message::Ins(s.to_record(dialect.record_format()).0)
}

pub(super) fn upd_c(s: &State) -> Message {
    Message::UpdC(UpdCRepr {
        id: s.id,
        src: s.src.to_repr(),
        dst: s.dst.to_repr(),
        creatorid: s.creatorid,
        expire: 0,
        timeout: s.timeout.number(),
        state_flags: 0,
    })
}

pub(super) fn sref(creatorid: u32, id: u64) -> StateRefRepr {
    StateRefRepr { id, creatorid }
}

/// Gives the engine a state a peer sent, and drains what that produced.
pub(super) fn import(e: &mut Engine, now: Instant, s: &State) {
    receive(
        e,
        now,
        Dialect::FreeBsd1400,
        &[upd(Dialect::FreeBsd1400, s)],
    );
    assert!(matches!(table_ops(e)[..], [TableOp::Import(_)]));
    assert!(transmits(e).is_empty());
}

#[test]
fn a_local_insert_waits_for_the_one_second_timer() {
    let mut e = engine(Dialect::FreeBsd1400);
    e.handle_local(at(0), LocalChange::Insert(tcp(US, 1)));
    assert!(transmits(&mut e).is_empty());
    assert_eq!(e.poll_timeout(), Some(at(1000)));
    // A second change does not move the timer.
    e.handle_local(at(500), LocalChange::Insert(tcp(US, 2)));
    assert_eq!(e.poll_timeout(), Some(at(1000)));
    e.handle_timeout(at(999));
    assert!(transmits(&mut e).is_empty());
    e.handle_timeout(at(1000));
    let sent = transmits(&mut e);
    assert_eq!(sent.len(), 1);
    let ids: Vec<u64> = all_messages(&sent)
        .iter()
        .map(|m| match m {
            Message::Ins(r) => State::from_record(r).unwrap().id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(e.poll_timeout(), None);
    assert_eq!(e.stats().opackets, 1);
    assert_eq!(e.stats().oacts[13], 2);
    assert_eq!(e.stats().oacts[12], 1, "one EOF per packet");
}

#[test]
fn maxupd_updates_of_a_tcp_state_send_at_once() {
    let mut e = engine_with(Dialect::FreeBsd1400, |c| c.maxupd = 3);
    let mut s = tcp(US, 1);
    e.handle_local(at(0), LocalChange::Insert(s));
    e.flush(at(0));
    assert_eq!(transmits(&mut e).len(), 1);
    for i in 1..=2 {
        s = advanced(s, 1);
        e.handle_local(at(10 * i), LocalChange::Update(s));
        assert!(transmits(&mut e).is_empty(), "update {i} waits");
    }
    s = advanced(s, 1);
    e.handle_local(at(30), LocalChange::Update(s));
    let sent = transmits(&mut e);
    assert_eq!(sent.len(), 1, "the third update sends");
    match &all_messages(&sent)[..] {
        [Message::UpdC(u)] => assert_eq!(u.src.seqlo, s.src.seqlo),
        other => panic!("{other:?}"),
    }
    // The counter starts again after a send.
    s = advanced(s, 1);
    e.handle_local(at(40), LocalChange::Update(s));
    assert!(transmits(&mut e).is_empty());
}

#[test]
fn maxupd_counts_tcp_only() {
    let mut e = engine_with(Dialect::FreeBsd1400, |c| c.maxupd = 1);
    let mut s = tcp(US, 1);
    s.wire.proto = crate::state::Protocol::Udp;
    s.stack.proto = crate::state::Protocol::Udp;
    s.src.state = PeerState::Level(crate::state::PeerLevel::SINGLE);
    s.dst.state = PeerState::Level(crate::state::PeerLevel::NO_TRAFFIC);
    s.timeout = Timeout::UdpSingle;
    e.handle_local(at(0), LocalChange::Insert(s));
    e.flush(at(0));
    transmits(&mut e);
    s.packets[0] += 1;
    e.handle_local(at(1), LocalChange::Update(s));
    assert!(transmits(&mut e).is_empty());
    e.handle_timeout(at(1001));
    assert_eq!(transmits(&mut e).len(), 1);
}

#[test]
fn a_full_packet_is_sent_before_the_timer_and_packets_fill_the_mtu() {
    // 1400 records are 277 bytes: five fit in the 1460 bytes FreeBSD leaves of a 1500
    // MTU (20 + 4 + 5×277 + 4 = 1413).
    let mut e = engine(Dialect::FreeBsd1400);
    for id in 1..=5 {
        e.handle_local(at(0), LocalChange::Insert(tcp(US, id)));
    }
    assert!(transmits(&mut e).is_empty());
    e.handle_local(at(1), LocalChange::Insert(tcp(US, 6)));
    let sent = transmits(&mut e);
    assert_eq!(sent.len(), 1, "the sixth does not fit: the first five go");
    assert_eq!(all_messages(&sent).len(), 5);
    assert_eq!(sent[0].len(), 1413);
    // The sixth waits for its own timer.
    assert_eq!(e.poll_timeout(), Some(at(1001)));
    for id in 7..=23 {
        e.handle_local(at(2), LocalChange::Insert(tcp(US, id)));
    }
    e.flush(at(3));
    let sent2 = transmits(&mut e);
    for p in sent.iter().chain(&sent2) {
        assert!(p.len() + 40 <= 1500);
    }
    let ids: Vec<u64> = all_messages(&sent2)
        .iter()
        .map(|m| match m {
            Message::Ins(r) => State::from_record(r).unwrap().id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, (6..=23).collect::<Vec<_>>());
    assert_eq!(sent2.len(), 4, "18 records in 5+5+5+3");
}

#[test]
fn mixed_kinds_share_a_packet_in_kernel_order() {
    let mut e = engine(Dialect::FreeBsd1500);
    let theirs = tcp(PEER, 1);
    import(&mut e, at(0), &theirs);
    let mine = tcp(US, 2);
    e.handle_local(at(1), LocalChange::Insert(mine));
    e.handle_local(at(2), LocalChange::Update(advanced(theirs, 1)));
    // Split state: the update goes at once, and with it the queued insert.
    let sent = transmits(&mut e);
    assert_eq!(sent.len(), 1);
    let kinds: Vec<&str> = all_messages(&sent)
        .iter()
        .map(|m| m.action().name())
        .collect();
    assert_eq!(kinds, ["INS_1500", "UPD_C"]);
}

#[test]
fn upd_c_for_unknown_states_asks_for_them_in_one_packet() {
    let mut e = engine(Dialect::OpenBsd);
    let states: Vec<State> = (1..=3).map(|i| tcp(PEER, i)).collect();
    let msgs: Vec<Message> = states.iter().map(upd_c).collect();
    receive(&mut e, at(0), Dialect::FreeBsd1301, &msgs);
    let sent = transmits(&mut e);
    assert_eq!(sent.len(), 1);
    let reqs: Vec<Message> = all_messages(&sent);
    assert_eq!(
        reqs,
        (1..=3)
            .map(|i| Message::UpdReq(sref(PEER, i)))
            .collect::<Vec<_>>()
    );
    assert_eq!(sent[0][0], 6, "sent in our dialect");
    // The same UPD_C again: asked again (the first request may have been lost).
    receive(&mut e, at(10), Dialect::FreeBsd1301, &msgs[..1]);
    assert_eq!(all_messages(&transmits(&mut e)).len(), 1);
}

#[test]
fn upd_req_is_answered_at_once_with_a_full_update() {
    let mut e = engine(Dialect::FreeBsd1400);
    let s = tcp(US, 7);
    e.handle_local(at(0), LocalChange::Insert(s));
    e.flush(at(0));
    transmits(&mut e);
    receive(
        &mut e,
        at(5),
        Dialect::FreeBsd1301,
        &[Message::UpdReq(sref(US, 7))],
    );
    let sent = transmits(&mut e);
    match &all_messages(&sent)[..] {
        [Message::Upd(r)] => assert_eq!(State::from_record(r).unwrap(), s),
        other => panic!("{other:?}"),
    }
    // Unknown: badstate, nothing sent.
    receive(
        &mut e,
        at(6),
        Dialect::FreeBsd1301,
        &[Message::UpdReq(sref(US, 99))],
    );
    assert!(transmits(&mut e).is_empty());
    assert_eq!(e.stats().badstate, 1);
}

#[test]
fn a_queued_compressed_update_is_upgraded_by_a_request() {
    let mut e = engine(Dialect::FreeBsd1400);
    let s = tcp(US, 7);
    e.handle_local(at(0), LocalChange::Insert(s));
    e.flush(at(0));
    transmits(&mut e);
    e.handle_local(at(1), LocalChange::Update(advanced(s, 1)));
    assert_eq!(e.queued(), [0, 0, 0, 1, 0]);
    receive(
        &mut e,
        at(2),
        Dialect::FreeBsd1400,
        &[Message::UpdReq(sref(US, 7))],
    );
    let kinds: Vec<&str> = all_messages(&transmits(&mut e))
        .iter()
        .map(|m| m.action().name())
        .collect();
    assert_eq!(
        kinds,
        ["UPD_1400"],
        "one slot per state: the UPD_C became an UPD"
    );
}

#[test]
fn a_stale_update_is_answered_at_once_with_ours() {
    let mut e = engine(Dialect::FreeBsd1400);
    let s = tcp(PEER, 1);
    import(&mut e, at(0), &s);
    let newer = advanced(s, 5);
    e.handle_local(at(3000), LocalChange::Update(newer));
    e.flush(at(3000));
    transmits(&mut e);
    // The peer sends an older view: both sides stale.
    receive(
        &mut e,
        at(3100),
        Dialect::FreeBsd1400,
        &[upd_c(&advanced(s, 1))],
    );
    assert_eq!(e.stats().stale, 1);
    let sent = transmits(&mut e);
    match &all_messages(&sent)[..] {
        [Message::UpdC(u)] => {
            assert_eq!(u.src.seqlo, newer.src.seqlo);
            assert_eq!(u.dst.seqlo, newer.dst.seqlo);
        }
        other => panic!("{other:?}"),
    }
    assert!(table_ops(&mut e).is_empty(), "ours kept, nothing to apply");
    // One stale side: theirs taken on the other side, ours sent back.
    let mut mixed = advanced(s, 9);
    mixed.src.seqlo = s.src.seqlo;
    receive(&mut e, at(3200), Dialect::FreeBsd1400, &[upd_c(&mixed)]);
    assert_eq!(e.stats().stale, 2);
    match &table_ops(&mut e)[..] {
        [TableOp::Update(m)] => {
            assert_eq!(m.src.seqlo, newer.src.seqlo);
            assert_eq!(m.dst.seqlo, mixed.dst.seqlo);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(all_messages(&transmits(&mut e)).len(), 1);
}

#[test]
fn newer_updates_are_merged_without_reply() {
    let mut e = engine(Dialect::FreeBsd1400);
    let s = tcp(PEER, 1);
    import(&mut e, at(0), &s);
    let newer = advanced(s, 2);
    receive(&mut e, at(10), Dialect::OpenBsd, &[upd_c(&newer)]);
    match &table_ops(&mut e)[..] {
        [TableOp::Update(m)] => assert_eq!((m.src, m.dst), (newer.src, newer.dst)),
        other => panic!("{other:?}"),
    }
    assert!(transmits(&mut e).is_empty());
    assert_eq!(e.poll_timeout(), None);
    // The table echoes the merged state back: no news, nothing sent.
    let merged = e.state(PEER, 1).unwrap();
    e.handle_local(at(11), LocalChange::Update(merged));
    assert_eq!(e.poll_timeout(), None);
}

/// A packet that imports a state, updates it and deletes it: each table operation
/// carries the state as it was when queued (the cache lends its bytes to the queue and
/// copies them before the state changes or goes).
#[test]
fn queued_table_operations_keep_the_state_they_were_queued_with() {
    let mut e = engine(Dialect::FreeBsd1400);
    let s = tcp(PEER, 1);
    let newer = advanced(s, 2);
    let other = tcp(PEER, 2);
    receive(
        &mut e,
        at(0),
        Dialect::FreeBsd1400,
        &[
            upd(Dialect::FreeBsd1400, &s),
            upd(Dialect::FreeBsd1400, &other),
            upd(Dialect::FreeBsd1400, &newer),
            Message::DelC(sref(PEER, 1)),
        ],
    );
    match &table_ops(&mut e)[..] {
        [TableOp::Import(first), TableOp::Import(second), TableOp::Update(merged), TableOp::Delete {
            creatorid: PEER,
            id: 1,
        }] => {
            assert_eq!((first.id, first.src, first.dst), (1, s.src, s.dst));
            assert_eq!(second.id, 2);
            assert_eq!(
                (merged.id, merged.src, merged.dst),
                (1, newer.src, newer.dst)
            );
        }
        other => panic!("{other:?}"),
    }
    // Drained: the next input's operations start afresh.
    receive(
        &mut e,
        at(10),
        Dialect::FreeBsd1400,
        &[upd(Dialect::FreeBsd1400, &advanced(other, 1))],
    );
    match &table_ops(&mut e)[..] {
        [TableOp::Update(m)] => assert_eq!((m.id, m.src), (2, advanced(other, 1).src)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn clear_with_and_without_interface() {
    let mut e = engine(Dialect::FreeBsd1400);
    for id in 1..=4 {
        let mut s = tcp(PEER, id);
        s.ifname = ifname(if id % 2 == 0 { "em0" } else { "em1" });
        import(&mut e, at(0), &s);
    }
    import(&mut e, at(0), &tcp(0x0c0c_0c0c, 9));
    let clr = |name: &str, creatorid| {
        Message::Clr(crate::wire::msg::ClrRepr {
            ifname: if name.is_empty() {
                IfName::EMPTY
            } else {
                ifname(name)
            },
            creatorid,
        })
    };
    receive(&mut e, at(1), Dialect::FreeBsd1400, &[clr("em0", PEER)]);
    assert_eq!(
        table_ops(&mut e),
        [TableOp::Clear {
            creatorid: PEER,
            ifname: ifname("em0")
        }]
    );
    let left: Vec<u64> = e.states().map(|s| s.id).collect();
    assert_eq!(left, [1, 3, 9]);
    receive(&mut e, at(2), Dialect::OpenBsd, &[clr("", PEER)]);
    assert_eq!(
        table_ops(&mut e),
        [TableOp::Clear {
            creatorid: PEER,
            ifname: IfName::EMPTY
        }]
    );
    let left: Vec<u64> = e.states().map(|s| s.id).collect();
    assert_eq!(left, [9]);
    assert!(
        transmits(&mut e).is_empty(),
        "no DEL_C for what a peer cleared"
    );
    // The table echoes the deletions: nothing is sent either.
    for id in 1..=4 {
        e.handle_local(
            at(3),
            LocalChange::Delete {
                creatorid: PEER,
                id,
            },
        );
    }
    assert_eq!(e.poll_timeout(), None);
}

#[test]
fn a_local_clear_sends_our_clr_at_once() {
    let mut e = engine(Dialect::OpenBsd);
    let mine = tcp(US, 1);
    e.handle_local(at(0), LocalChange::Insert(mine));
    e.flush(at(0));
    transmits(&mut e);
    import(&mut e, at(0), &tcp(PEER, 2));
    e.handle_local(
        at(1),
        LocalChange::Delete {
            creatorid: US,
            id: 1,
        },
    );
    e.handle_local(
        at(2),
        LocalChange::Clear {
            ifname: ifname("em0"),
        },
    );
    let sent = transmits(&mut e);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        all_messages(&sent),
        [
            Message::DelC(sref(US, 1)),
            Message::Clr(crate::wire::msg::ClrRepr {
                ifname: ifname("em0"),
                creatorid: US
            })
        ]
    );
    assert_eq!(e.state_count(), 0);
}

#[test]
fn an_insert_asking_for_an_ack_is_acked_at_once() {
    let mut e = engine(Dialect::FreeBsd1400);
    let mut s = tcp(PEER, 3);
    s.state_flags.insert(StateFlags::ACK);
    receive(
        &mut e,
        at(0),
        Dialect::FreeBsd1400,
        &[ins(Dialect::FreeBsd1400, &s)],
    );
    match &table_ops(&mut e)[..] {
        [TableOp::Import(i)] => assert!(!i.state_flags.contains(StateFlags::ACK)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        all_messages(&transmits(&mut e)),
        [Message::InsAck(sref(PEER, 3))]
    );
    // Without the flag: imported, nothing sent.
    receive(
        &mut e,
        at(1),
        Dialect::FreeBsd1400,
        &[ins(Dialect::FreeBsd1400, &tcp(PEER, 4))],
    );
    assert!(transmits(&mut e).is_empty());
    assert_eq!(table_ops(&mut e).len(), 1);
    // A duplicate insert is ignored.
    receive(
        &mut e,
        at(2),
        Dialect::FreeBsd1400,
        &[ins(Dialect::FreeBsd1400, &tcp(PEER, 4))],
    );
    assert!(table_ops(&mut e).is_empty());
    assert_eq!(e.stats().ins_duplicate, 1);
    // I6: a duplicate that asks for an ack gets none, as in the kernels, whose failing
    // import never queues one (OpenBSD `pf_state_import` fails before
    // `pfsync_insert_state`; FreeBSD `pfsync_state_import` fails in `pf_state_insert`).
    receive(
        &mut e,
        at(3),
        Dialect::FreeBsd1400,
        &[ins(Dialect::FreeBsd1400, &s)],
    );
    assert!(transmits(&mut e).is_empty());
    assert_eq!(e.stats().ins_duplicate, 2);
}

#[test]
fn imported_states_are_not_echoed_but_local_changes_to_them_are_sent() {
    let mut e = engine(Dialect::FreeBsd1400);
    let s = tcp(PEER, 5);
    import(&mut e, at(0), &s);
    // The table reports the state we imported as an insert: not ours to announce.
    e.handle_local(at(1), LocalChange::Insert(s));
    assert_eq!(e.poll_timeout(), None);
    e.handle_timeout(at(5000));
    assert!(transmits(&mut e).is_empty());
    // Later, traffic through us changes it (active-active): that is sent.
    let moved = advanced(s, 1);
    e.handle_local(at(6000), LocalChange::Update(moved));
    e.handle_timeout(at(7000));
    match &all_messages(&transmits(&mut e))[..] {
        [Message::UpdC(u)] => assert_eq!(u.src.seqlo, moved.src.seqlo),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_peer_delete_is_applied_and_not_echoed() {
    let mut e = engine(Dialect::FreeBsd1400);
    let s = tcp(PEER, 5);
    import(&mut e, at(0), &s);
    receive(
        &mut e,
        at(1),
        Dialect::FreeBsd1400,
        &[Message::DelC(sref(PEER, 5))],
    );
    assert_eq!(
        table_ops(&mut e),
        [TableOp::Delete {
            creatorid: PEER,
            id: 5
        }]
    );
    e.handle_local(
        at(2),
        LocalChange::Delete {
            creatorid: PEER,
            id: 5,
        },
    );
    assert_eq!(e.poll_timeout(), None);
    assert!(transmits(&mut e).is_empty());
    // An unknown one: badstate.
    receive(
        &mut e,
        at(3),
        Dialect::FreeBsd1400,
        &[Message::DelC(sref(PEER, 5))],
    );
    assert_eq!(e.stats().badstate, 1);
}

#[test]
fn a_local_delete_sends_del_c_unless_the_insert_never_left() {
    let mut e = engine(Dialect::FreeBsd1400);
    e.handle_local(at(0), LocalChange::Insert(tcp(US, 1)));
    e.handle_local(
        at(1),
        LocalChange::Delete {
            creatorid: US,
            id: 1,
        },
    );
    assert_eq!(e.state_count(), 0);
    e.handle_timeout(at(1000));
    assert!(
        transmits(&mut e).is_empty(),
        "never announced: nothing to say"
    );
    e.handle_local(at(2000), LocalChange::Insert(tcp(US, 2)));
    e.flush(at(2000));
    transmits(&mut e);
    e.handle_local(at(2001), LocalChange::Update(advanced(tcp(US, 2), 1)));
    e.handle_local(
        at(2002),
        LocalChange::Delete {
            creatorid: US,
            id: 2,
        },
    );
    assert_eq!(e.queued(), [0, 0, 0, 0, 1], "the DEL_C replaced the UPD_C");
    e.handle_timeout(at(3001));
    assert_eq!(
        all_messages(&transmits(&mut e)),
        [Message::DelC(sref(US, 2))]
    );
    assert_eq!(e.state_count(), 0);
}

#[test]
fn no_sync_states_are_never_sent() {
    let mut e = engine(Dialect::FreeBsd1400);
    let mut quiet = tcp(US, 1);
    quiet.state_flags.insert(StateFlags::NOSYNC);
    let mut own = tcp(US, 2);
    own.wire.proto = crate::state::Protocol::Other(IPPROTO_PFSYNC);
    own.src.state = PeerState::Level(crate::state::PeerLevel::SINGLE);
    own.dst.state = PeerState::Level(crate::state::PeerLevel::SINGLE);
    for s in [quiet, own] {
        e.handle_local(at(0), LocalChange::Insert(s));
        e.handle_local(at(1), LocalChange::Update(advanced(s, 1)));
    }
    e.handle_timeout(at(2000));
    assert!(transmits(&mut e).is_empty());
    receive(
        &mut e,
        at(3000),
        Dialect::FreeBsd1400,
        &[
            Message::UpdReq(sref(US, 1)),
            Message::UpdReq(StateRefRepr::BULK_REQUEST),
        ],
    );
    let sent = transmits(&mut e);
    let kinds: Vec<&str> = all_messages(&sent)
        .iter()
        .map(|m| m.action().name())
        .collect();
    assert_eq!(kinds, ["BUS", "BUS"], "an empty bulk: START and END only");
    for s in [quiet, own] {
        e.handle_local(
            at(4000),
            LocalChange::Delete {
                creatorid: US,
                id: s.id,
            },
        );
    }
    e.handle_timeout(at(6000));
    assert!(transmits(&mut e).is_empty());
    // A synced state that turns no-sync is dropped from its queue.
    let s = tcp(US, 3);
    e.handle_local(at(7000), LocalChange::Insert(s));
    let mut marked = s;
    marked.state_flags.insert(StateFlags::NOSYNC);
    e.handle_local(at(7001), LocalChange::Update(marked));
    e.handle_local(
        at(7002),
        LocalChange::Delete {
            creatorid: US,
            id: 3,
        },
    );
    e.handle_timeout(at(9000));
    assert!(transmits(&mut e).is_empty());
}

#[test]
fn our_bulk_request_is_retried_twelve_times_then_given_up() {
    let mut e = engine(Dialect::FreeBsd1400);
    e.request_bulk(at(0));
    assert_eq!(events(&mut e), [Event::CarpDemote(true)]);
    assert!(e.demoted() && !e.syncok());
    let mut sends = 0;
    let mut now = at(0);
    loop {
        for p in transmits(&mut e) {
            assert_eq!(messages(&p), [Message::UpdReq(StateRefRepr::BULK_REQUEST)]);
            sends += 1;
        }
        match e.poll_timeout() {
            Some(t) => {
                assert_eq!(t - now, Duration::from_secs(5), "FreeBSD retries every 5 s");
                now = t;
                e.handle_timeout(now);
            }
            None => break,
        }
    }
    assert_eq!(sends, 12);
    assert_eq!(now - at(0), Duration::from_secs(60));
    assert_eq!(
        events(&mut e),
        [
            Event::BulkDone { complete: false },
            Event::CarpDemote(false)
        ]
    );
    assert!(e.syncok() && !e.demoted());
    assert_eq!(e.stats().bulk_requests_sent, 12);
    assert_eq!(e.stats().bulk_given_up, 1);
}

#[test]
fn openbsd_retries_every_two_seconds() {
    let mut e = engine(Dialect::OpenBsd);
    e.request_bulk(at(0));
    assert_eq!(e.poll_timeout(), Some(at(2000)));
}

#[test]
fn bus_start_and_end_complete_our_request() {
    let mut e = engine(Dialect::FreeBsd1500);
    // A BUS with no request outstanding is ignored.
    let bus = |status, endtime| {
        Message::Bus(BusRepr {
            creatorid: PEER,
            endtime,
            status,
        })
    };
    receive(&mut e, at(0), Dialect::FreeBsd1500, &[bus(STATUS_END, 0)]);
    assert!(!e.syncok());
    e.request_bulk(at(10_000));
    transmits(&mut e);
    events(&mut e);
    receive(
        &mut e,
        at(10_050),
        Dialect::FreeBsd1500,
        &[bus(STATUS_START, 0)],
    );
    assert!(matches!(
        e.bulk_request_state(),
        BulkRequest::Receiving { .. }
    ));
    // No retry while the update runs: the deadline is the idle timeout.
    assert_eq!(
        e.poll_timeout(),
        Some(at(10_050) + super::BULK_IDLE_TIMEOUT)
    );
    // An END for an update that started long before our request is not ours.
    receive(
        &mut e,
        at(10_100),
        Dialect::FreeBsd1500,
        &[bus(STATUS_END, 9)],
    );
    assert!(!e.syncok());
    assert_eq!(e.stats().bus_end_stale, 1);
    receive(
        &mut e,
        at(12_000),
        Dialect::FreeBsd1500,
        &[bus(STATUS_END, 1)],
    );
    assert!(e.syncok());
    assert_eq!(
        events(&mut e),
        [Event::BulkDone { complete: true }, Event::CarpDemote(false)]
    );
    assert_eq!(e.stats().bulk_last_duration_ms, 2000);
    assert_eq!(e.poll_timeout(), None);
}

#[test]
fn an_end_without_start_completes_too() {
    // OpenBSD puts END after the last records; if START was lost, END still counts.
    let mut e = engine(Dialect::OpenBsd);
    e.request_bulk(at(0));
    receive(
        &mut e,
        at(100),
        Dialect::OpenBsd,
        &[Message::Bus(BusRepr {
            creatorid: PEER,
            endtime: 0,
            status: STATUS_END,
        })],
    );
    assert!(e.syncok());
}

use crate::wire::msg::bus::{STATUS_END, STATUS_START};

#[test]
fn a_bulk_update_we_send_is_paced_and_framed_by_bus() {
    let mut e = engine_with(Dialect::FreeBsd1500, |c| {
        c.bulk_interval = Duration::from_millis(20)
    });
    for id in 1..=10 {
        e.handle_local(at(0), LocalChange::Insert(tcp(US, id)));
    }
    e.flush(at(0));
    transmits(&mut e);
    receive(
        &mut e,
        at(100),
        Dialect::FreeBsd1301,
        &[Message::UpdReq(StateRefRepr::BULK_REQUEST)],
    );
    assert_eq!(events(&mut e), [Event::BulkSendStarted]);
    // START alone, then one packet of three 1500 records (FreeBSD's count at MTU 1500).
    let first = transmits(&mut e);
    assert_eq!(first.len(), 2);
    assert!(matches!(
        messages(&first[0])[..],
        [Message::Bus(BusRepr {
            status: STATUS_START,
            creatorid: US,
            ..
        })]
    ));
    assert_eq!(messages(&first[1]).len(), 3);
    assert_eq!(e.poll_timeout(), Some(at(120)));
    // The metrics show how far it got.
    assert_eq!(e.bulk_send_progress(), Some(3));
    let mut ids = Vec::new();
    let mut packets = first;
    while let Some(t) = e.poll_timeout() {
        e.handle_timeout(t);
        packets.extend(transmits(&mut e));
    }
    let mut end = None;
    for m in all_messages(&packets) {
        match m {
            Message::Upd(r) => ids.push(State::from_record(&r).unwrap().id),
            Message::Bus(b) if b.status == STATUS_END => end = Some(b),
            _ => {}
        }
    }
    assert_eq!(ids, (1..=10).collect::<Vec<_>>());
    assert!(end.is_some());
    assert_eq!(events(&mut e), [Event::BulkSendDone { states: 10 }]);
    assert!(!e.bulk_sending());
    assert_eq!(e.bulk_send_progress(), None);
}

#[test]
fn a_flood_of_bulk_requests_costs_one_more_pass() {
    let mut e = engine(Dialect::FreeBsd1400);
    for id in 1..=50 {
        e.handle_local(at(0), LocalChange::Insert(tcp(US, id)));
    }
    e.flush(at(0));
    transmits(&mut e);
    let flood = vec![Message::UpdReq(StateRefRepr::BULK_REQUEST); 100];
    for i in 0..20 {
        receive(&mut e, at(100 + i), Dialect::FreeBsd1400, &flood);
    }
    assert_eq!(e.stats().bulk_requests_received, 2000);
    let mut now = at(200);
    let mut packets = transmits(&mut e);
    while let Some(t) = e.poll_timeout() {
        now = now.max(t);
        e.handle_timeout(now);
        packets.extend(transmits(&mut e));
        assert!(packets.len() < 100, "bounded");
    }
    // Two passes, one END after the second; no second START, as every request came
    // within a second of the first.
    let bus: Vec<u8> = all_messages(&packets)
        .into_iter()
        .filter_map(|m| match m {
            Message::Bus(b) => Some(b.status),
            _ => None,
        })
        .collect();
    assert_eq!(bus, [STATUS_START, STATUS_END]);
    assert_eq!(e.stats().bulk_starts_resent, 0);
    assert_eq!(e.stats().bulk_sends_completed, 1);
    assert_eq!(e.stats().bulk_states_sent, 100);
}

#[test]
fn a_flood_of_requests_for_unknown_states_stays_bounded() {
    let mut e = engine_with(Dialect::FreeBsd1400, |c| c.max_pending_requests = 8);
    // UPD_C for unknown states: requests up to the bound, the rest counted.
    let msgs: Vec<Message> = (1..=17).map(|i| upd_c(&tcp(PEER, i))).collect();
    receive(&mut e, at(0), Dialect::FreeBsd1400, &msgs);
    assert_eq!(all_messages(&transmits(&mut e)).len(), 8);
    assert_eq!(e.stats().req_overflow, 9);
    // UPD_REQ for states we lack: counted, nothing kept, nothing sent.
    let reqs: Vec<Message> = (1..=120).map(|i| Message::UpdReq(sref(PEER, i))).collect();
    for i in 0..100 {
        receive(&mut e, at(1 + i), Dialect::FreeBsd1400, &reqs);
    }
    assert_eq!(e.stats().badstate, 12_000);
    assert!(transmits(&mut e).is_empty());
    assert_eq!(e.state_count(), 0);
    assert_eq!(e.poll_timeout(), None);
}

#[test]
fn a_flood_of_requests_for_known_states_sends_each_once_per_packet() {
    let mut e = engine(Dialect::FreeBsd1400);
    e.handle_local(at(0), LocalChange::Insert(tcp(US, 1)));
    e.flush(at(0));
    transmits(&mut e);
    let reqs = vec![Message::UpdReq(sref(US, 1)); 120];
    receive(&mut e, at(1), Dialect::FreeBsd1400, &reqs);
    assert_eq!(all_messages(&transmits(&mut e)).len(), 1);
}

#[test]
fn bad_ttl_interface_and_garbage_are_counted() {
    let mut e = engine(Dialect::FreeBsd1400);
    let p = packet(
        Dialect::FreeBsd1400,
        &[upd(Dialect::FreeBsd1400, &tcp(PEER, 1))],
    );
    e.handle_packet(
        at(0),
        Received {
            ttl: 254,
            ..good(&p)
        },
    );
    e.handle_packet(
        at(0),
        Received {
            on_syncdev: false,
            ..good(&p)
        },
    );
    e.handle_packet(
        at(0),
        Received {
            ipv6: true,
            ttl: 1,
            ..good(&p)
        },
    );
    e.handle_packet(at(0), good(&p[..10]));
    let mut bad_version = p.clone();
    bad_version[0] = 4;
    e.handle_packet(at(0), good(&bad_version));
    let mut bad_len = p.clone();
    bad_len[3] = 0xff;
    e.handle_packet(at(0), good(&bad_len));
    let s = e.stats();
    assert_eq!(
        (
            s.ipackets,
            s.ipackets6,
            s.badttl,
            s.badif,
            s.hdrops,
            s.badver,
            s.badlen
        ),
        (6, 1, 2, 1, 1, 1, 1)
    );
    assert_eq!(e.state_count(), 0);
    assert!(table_ops(&mut e).is_empty());
}

#[test]
fn every_dialect_is_accepted_whatever_we_send() {
    for ours in Dialect::ALL {
        for theirs in Dialect::ALL {
            let mut e = engine(ours);
            let s = tcp(PEER, 1);
            receive(&mut e, at(0), theirs, &[ins(theirs, &s)]);
            assert_eq!(
                e.state(PEER, 1).map(|x| (x.src, x.dst)),
                Some((s.src, s.dst))
            );
            // And our answer to it goes in our dialect.
            receive(&mut e, at(1), theirs, &[Message::UpdReq(sref(PEER, 1))]);
            let sent = transmits(&mut e);
            assert_eq!(sent[0][0], ours.version());
            match &messages(&sent[0])[..] {
                [Message::Upd(r)] => assert_eq!(r.format(), ours.record_format()),
                other => panic!("{other:?}"),
            }
        }
    }
}

#[test]
fn split_states_are_sent_at_once_for_two_seconds() {
    let mut e = engine(Dialect::OpenBsd);
    let s = tcp(PEER, 1);
    import(&mut e, at(0), &s);
    e.handle_local(at(1999), LocalChange::Update(advanced(s, 1)));
    assert_eq!(transmits(&mut e).len(), 1, "updated by a peer 1.999 s ago");
    e.handle_local(at(2000), LocalChange::Update(advanced(s, 2)));
    assert!(transmits(&mut e).is_empty(), "2 s ago: not split any more");
}

#[test]
fn random_config_takes_the_callers_bytes() {
    let mut r = [0u8; 32];
    r[..4].copy_from_slice(&7u32.to_le_bytes());
    r[16] = 1;
    let c = Config::random(Dialect::FreeBsd1400, r);
    assert_eq!(c.creatorid, 7);
    assert_eq!(c.hash_key, [1, 0]);
    assert_eq!(Config::random(Dialect::OpenBsd, [0; 32]).creatorid, 1);
}

#[test]
fn cache_limit_is_counted_not_crashed_on() {
    let mut e = engine_with(Dialect::FreeBsd1400, |c| c.max_states = 2);
    for id in 1..=3 {
        e.handle_local(at(0), LocalChange::Insert(tcp(US, id)));
    }
    receive(
        &mut e,
        at(1),
        Dialect::FreeBsd1400,
        &[upd(Dialect::FreeBsd1400, &tcp(PEER, 1))],
    );
    assert_eq!(e.state_count(), 2);
    assert_eq!(e.stats().cache_full, 2);
    assert!(table_ops(&mut e).is_empty());
}

#[test]
fn a_late_copy_of_a_deleted_state_does_not_bring_it_back() {
    let mut e = engine(Dialect::FreeBsd1400);
    let s = tcp(PEER, 5);
    // The DEL_C overtook the insert: the insert arrives after it.
    receive(
        &mut e,
        at(0),
        Dialect::FreeBsd1400,
        &[Message::DelC(sref(PEER, 5))],
    );
    receive(
        &mut e,
        at(10),
        Dialect::FreeBsd1400,
        &[ins(Dialect::FreeBsd1400, &s)],
    );
    receive(&mut e, at(20), Dialect::FreeBsd1400, &[upd_c(&s)]);
    assert!(table_ops(&mut e).is_empty());
    assert!(transmits(&mut e).is_empty(), "no request for it either");
    assert_eq!(e.stats().tombstoned, 2);
    // Our own deleted state, sent back by a peer's bulk update.
    e.handle_local(at(30), LocalChange::Insert(tcp(US, 1)));
    e.flush(at(30));
    e.handle_local(
        at(40),
        LocalChange::Delete {
            creatorid: US,
            id: 1,
        },
    );
    e.flush(at(40));
    transmits(&mut e);
    receive(
        &mut e,
        at(50),
        Dialect::FreeBsd1400,
        &[upd(Dialect::FreeBsd1400, &tcp(US, 1))],
    );
    assert!(table_ops(&mut e).is_empty());
    // Whoever else got that copy took it in: we say DEL_C again, at once.
    assert_eq!(
        all_messages(&transmits(&mut e)),
        [Message::DelC(sref(US, 1))]
    );
    // A peer's stale copy is refused but not answered: it is not ours to delete.
    receive(&mut e, at(60), Dialect::FreeBsd1400, &[upd_c(&s)]);
    assert!(transmits(&mut e).is_empty());
    // After the TTL, the kernels' behaviour: imported.
    receive(
        &mut e,
        at(5100),
        Dialect::FreeBsd1400,
        &[upd(Dialect::FreeBsd1400, &s)],
    );
    assert_eq!(table_ops(&mut e).len(), 1);
}

#[test]
fn loaded_states_are_not_announced_until_they_change() {
    let mut e = engine(Dialect::FreeBsd1400);
    let s = tcp(US, 1);
    e.load(at(0), s);
    let mut quiet = s;
    quiet.id = 2;
    quiet.state_flags.insert(StateFlags::NOSYNC);
    e.load(at(0), quiet);
    assert_eq!(e.state_count(), 1);
    assert_eq!(e.poll_timeout(), None);
    e.handle_local(at(0), LocalChange::Update(s));
    assert_eq!(e.poll_timeout(), None, "the same state: no news");
    e.handle_local(at(1), LocalChange::Update(advanced(s, 1)));
    e.handle_timeout(at(1001));
    assert!(matches!(
        all_messages(&transmits(&mut e))[..],
        [Message::UpdC(_)]
    ));
    // And send_bulk sends the table, framed by BUS.
    e.send_bulk(at(2000));
    while let Some(t) = e.poll_timeout() {
        e.handle_timeout(t);
    }
    let kinds: Vec<&str> = all_messages(&transmits(&mut e))
        .iter()
        .map(|m| m.action().name())
        .collect();
    assert_eq!(kinds, ["BUS", "UPD_1400", "BUS"]);
}

#[test]
fn a_bulk_update_whose_end_is_lost_is_asked_for_again() {
    let mut e = engine(Dialect::FreeBsd1400);
    e.request_bulk(at(0));
    transmits(&mut e);
    receive(
        &mut e,
        at(10),
        Dialect::FreeBsd1400,
        &[Message::Bus(BusRepr {
            creatorid: PEER,
            endtime: 0,
            status: STATUS_START,
        })],
    );
    // States keep coming: the wait for the END is an idle timeout, and each one renews it.
    import(&mut e, at(15_000), &tcp(PEER, 1));
    e.handle_timeout(at(20_010));
    assert!(transmits(&mut e).is_empty());
    assert_eq!(
        e.poll_timeout(),
        Some(at(15_000) + super::BULK_IDLE_TIMEOUT)
    );
    e.handle_timeout(at(35_000));
    assert_eq!(
        all_messages(&transmits(&mut e)),
        [Message::UpdReq(StateRefRepr::BULK_REQUEST)]
    );
    assert!(matches!(
        e.bulk_request_state(),
        BulkRequest::Waiting { tries: 2, .. }
    ));
    assert!(e.demoted());
}

#[test]
fn a_packet_of_clears_is_applied_in_order_and_in_one_pass() {
    let mut e = engine(Dialect::FreeBsd1400);
    for id in 1..=3 {
        import(&mut e, at(0), &tcp(PEER, id));
    }
    let clr = Message::Clr(crate::wire::msg::ClrRepr {
        ifname: IfName::EMPTY,
        creatorid: PEER,
    });
    // CLR, then an insert of that creator, then the same CLR twice: the insert comes
    // after the first clear and goes with the second.
    receive(
        &mut e,
        at(1),
        Dialect::FreeBsd1400,
        &[clr, ins(Dialect::FreeBsd1400, &tcp(PEER, 9)), clr, clr],
    );
    let ops = table_ops(&mut e);
    assert_eq!(ops.len(), 3, "{ops:?}");
    assert!(matches!(ops[0], TableOp::Clear { .. }));
    assert!(matches!(ops[1], TableOp::Import(s) if s.id == 9));
    assert!(
        matches!(ops[2], TableOp::Clear { .. }),
        "the repeated CLR once"
    );
    assert_eq!(e.state_count(), 0);
}

#[test]
fn reconfigure_sends_what_is_queued_under_the_old_dialect_first() {
    let mut e = engine(Dialect::FreeBsd1301);
    e.handle_local(at(0), LocalChange::Insert(tcp(US, 1)));
    assert!(e.poll_transmit().is_none(), "batched for a second");
    e.reconfigure(
        at(10),
        LinkSettings {
            dialect: Dialect::OpenBsd,
            mtu: 1500,
            ip_header_len: 20,
            maxupd: 1,
            syncpeer: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
        },
    );
    let old = e.poll_transmit().expect("the queued insert leaves at once");
    assert_eq!(old.payload[0], 5, "as FreeBSD version 5");
    assert!(e.poll_transmit().is_none());
    e.handle_local(at(20), LocalChange::Insert(tcp(US, 2)));
    e.handle_timeout(at(1100));
    let new = e.poll_transmit().expect("the next insert");
    assert_eq!(new.payload[0], 6, "as OpenBSD version 6");
    assert_eq!(new.destination, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)));
    assert_eq!(e.config().maxupd, 1);
    // The bulk pace follows the dialect's kernel, unless it was set.
    assert_eq!(e.config().bulk_interval, Duration::from_millis(20));
    let mut set = engine_with(Dialect::FreeBsd1301, |c| c.set_bulk_pps(60_000));
    set.reconfigure(
        at(10),
        LinkSettings {
            dialect: Dialect::OpenBsd,
            mtu: 1500,
            ip_header_len: 20,
            maxupd: 1,
            syncpeer: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)),
        },
    );
    assert_eq!(set.config().bulk_interval, Duration::from_millis(1));
    assert_eq!(set.config().bulk_burst, 60);
}

#[test]
fn the_bulk_pace_is_the_dialects_kernels_unless_set() {
    assert_eq!(
        Config::new(US, Dialect::OpenBsd).bulk_interval,
        Duration::from_millis(20)
    );
    assert_eq!(
        Config::new(US, Dialect::FreeBsd1400).bulk_interval,
        Duration::from_millis(1)
    );
    let mut c = Config::new(US, Dialect::OpenBsd);
    c.set_bulk_pps(200);
    assert_eq!(
        (c.bulk_interval, c.bulk_burst),
        (Duration::from_millis(5), 1)
    );
    c.set_bulk_pps(5_500);
    assert_eq!(
        (c.bulk_interval, c.bulk_burst),
        (Duration::from_millis(1), 5)
    );
}

#[test]
fn a_stale_copy_after_a_clear_is_refused_but_a_new_state_is_taken() {
    let mut e = engine(Dialect::FreeBsd1400);
    for id in 1..=3 {
        import(&mut e, at(0), &tcp(PEER, id));
    }
    let clr = Message::Clr(crate::wire::msg::ClrRepr {
        ifname: IfName::EMPTY,
        creatorid: PEER,
    });
    receive(&mut e, at(1000), Dialect::FreeBsd1400, &[clr]);
    table_ops(&mut e);
    // A copy of state 2 from before the clear (60 s old) arrives late; a state the peer
    // made after the clear (age 0) arrives too.
    let stale = State {
        age_secs: 60,
        ..tcp(PEER, 2)
    };
    let fresh = State {
        age_secs: 0,
        ..tcp(PEER, 7)
    };
    receive(
        &mut e,
        at(1500),
        Dialect::FreeBsd1400,
        &[
            upd(Dialect::FreeBsd1400, &stale),
            ins(Dialect::FreeBsd1400, &fresh),
        ],
    );
    let ops = table_ops(&mut e);
    assert_eq!(ops.len(), 1, "{ops:?}");
    assert!(matches!(ops[0], TableOp::Import(s) if s.id == 7));
    assert_eq!(e.stats().tombstoned, 1);
    // After the tombstone TTL the kernels' behaviour returns: the copy is taken.
    receive(
        &mut e,
        at(7000),
        Dialect::FreeBsd1400,
        &[upd(Dialect::FreeBsd1400, &stale)],
    );
    assert_eq!(table_ops(&mut e).len(), 1);
}

/// F4: a kill by id 0 kills every state on both kernels (FreeBSD `pf_killstates` scans
/// all rows when `psk_pfcmp.id` is 0; OpenBSD `DIOCKILLSTATES` takes the key path, which
/// matches every state of rdomain 0), and both kernels import a peer's id 0
/// (`pfsync_state_import` and `pf_state_import` refuse only creator 0). So no id 0 from
/// a peer may reach the table: not as a state, nor as a delete of one.
#[test]
fn a_peer_state_with_id_zero_is_refused_and_no_delete_of_it_reaches_the_table() {
    let mut e = engine(Dialect::FreeBsd1500);
    // A local report of id 0 (pf never makes one, but the table is not ours to trust).
    e.handle_local(at(0), LocalChange::Insert(tcp(US, 0)));
    transmits(&mut e);
    for dialect in [Dialect::FreeBsd1500, Dialect::OpenBsd] {
        let zero = tcp(PEER, 0);
        receive(&mut e, at(1), dialect, &[ins(dialect, &zero)]);
        receive(&mut e, at(2), dialect, &[upd(dialect, &zero)]);
        receive(&mut e, at(3), dialect, &[upd_c(&zero)]);
        receive(
            &mut e,
            at(4),
            dialect,
            &[Message::DelC(sref(PEER, 0)), Message::DelC(sref(US, 0))],
        );
    }
    let ops = table_ops(&mut e);
    assert!(ops.is_empty(), "id 0 reached the table: {ops:?}");
    assert!(e.state(PEER, 0).is_none());
    // 2 × (INS, UPD, UPD_C, DEL_C, DEL_C).
    assert_eq!(e.stats().badstate, 10);
    // No request goes out for it either.
    assert!(all_messages(&transmits(&mut e)).is_empty());
}

/// I3: a request during our bulk update gets a BUS START at once (the requester missed
/// ours), and the END waits for a whole pass after it.
#[test]
fn a_request_during_our_bulk_update_gets_a_start_at_once() {
    let mut e = engine(Dialect::OpenBsd);
    for id in 1..=500 {
        e.handle_local(at(0), LocalChange::Insert(tcp(US, id)));
    }
    e.flush(at(0));
    transmits(&mut e);
    let request = [Message::UpdReq(StateRefRepr::BULK_REQUEST)];
    receive(&mut e, at(100), Dialect::OpenBsd, &request);
    transmits(&mut e);
    // 100 packets at OpenBSD's 20 ms: the pass runs until 2.1 s.
    let mut now = at(100);
    while now < at(1_500) {
        now = e.poll_timeout().expect("the bulk runs");
        e.handle_timeout(now);
        transmits(&mut e);
    }
    receive(&mut e, now, Dialect::OpenBsd, &request);
    let bus = |packets: &[Vec<u8>]| -> Vec<(u8, u32)> {
        all_messages(packets)
            .into_iter()
            .filter_map(|m| match m {
                Message::Bus(b) => Some((b.status, b.endtime)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(bus(&transmits(&mut e)), [(STATUS_START, 0)]);
    let mut rest = Vec::new();
    while let Some(t) = e.poll_timeout() {
        e.handle_timeout(t);
        rest.extend(transmits(&mut e));
        now = t;
    }
    // One END, after a second whole pass (2 s) that began when the first ended (2.1 s):
    // its endtime counts from the second pass.
    assert_eq!(bus(&rest), [(STATUS_END, 2)]);
    assert!(now >= at(4_000), "{:?}", now - t0());
    assert_eq!(e.stats().bulk_starts_resent, 1);
    assert_eq!(e.stats().bulk_states_sent, 1000);
}

/// I1: only the bulk's sender's updates keep us waiting for its END; another peer's
/// traffic must not hold carp demoted after the sender went away.
#[test]
fn only_the_bulk_senders_updates_renew_the_wait_for_its_end() {
    let sender = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3));
    let mut e = engine(Dialect::FreeBsd1400);
    e.request_bulk(at(0));
    transmits(&mut e);
    let from = |e: &mut Engine, now, source, msgs: &[Message]| {
        let p = packet(Dialect::FreeBsd1400, msgs);
        e.handle_packet(
            now,
            Received {
                source: Some(source),
                ..good(&p)
            },
        );
    };
    let start = Message::Bus(BusRepr {
        creatorid: PEER,
        endtime: 0,
        status: STATUS_START,
    });
    from(&mut e, at(10), sender, &[start]);
    from(
        &mut e,
        at(5_000),
        sender,
        &[upd(Dialect::FreeBsd1400, &tcp(PEER, 1))],
    );
    from(
        &mut e,
        at(15_000),
        other,
        &[upd(Dialect::FreeBsd1400, &tcp(PEER + 1, 1))],
    );
    assert_eq!(e.poll_timeout(), Some(at(5_000) + super::BULK_IDLE_TIMEOUT));
    e.handle_timeout(at(5_000) + super::BULK_IDLE_TIMEOUT);
    assert_eq!(
        all_messages(&transmits(&mut e)),
        [Message::UpdReq(StateRefRepr::BULK_REQUEST)]
    );
}

/// A bulk send driven by the receiver's credits (`bulk_paced` off): the timer sends no
/// bulk packet, each call hands out at most the batches asked for, each within its
/// limit, and a second engine fed those batches holds every state, equal to ours.
#[test]
fn a_credit_driven_bulk_moves_only_when_asked_and_delivers_every_state() {
    let mut sender = engine_with(Dialect::FreeBsd1400, |c| c.bulk_paced = false);
    let mut synth = crate::table::synth::Synth::new(5, US);
    let states = synth.states(1000);
    for s in &states {
        sender.handle_local(at(0), LocalChange::Insert(*s));
    }
    sender.flush(at(0));
    transmits(&mut sender);
    receive(
        &mut sender,
        at(100),
        Dialect::FreeBsd1400,
        &[Message::UpdReq(StateRefRepr::BULK_REQUEST)],
    );
    assert_eq!(events(&mut sender), [Event::BulkSendStarted]);
    // Nothing on the plain link, not even BUS START (the caller sends `bus_packet` to
    // the pfsyncd peers only), and no timer for the bulk.
    assert!(
        transmits(&mut sender).is_empty(),
        "nothing on the plain link"
    );
    let start = sender
        .bus_packet(at(100), STATUS_START)
        .expect("a BUS START packet");
    assert!(matches!(
        messages(&start)[..],
        [Message::Bus(BusRepr {
            status: STATUS_START,
            ..
        })]
    ));
    assert_eq!(sender.poll_timeout().filter(|t| *t <= at(10_000)), None);
    sender.handle_timeout(at(10_000));
    assert!(transmits(&mut sender).is_empty());
    assert_eq!(sender.bulk_send_progress(), None, "no paced bulk");
    assert_eq!(sender.compact_send_progress(), Some(0));
    assert_eq!(
        sender.bulk_compact_batches(at(10_000), 1, 100),
        Err(crate::state::compact_record::BatchLimitError { limit: 100 })
    );

    let mut receiver = engine(Dialect::FreeBsd1400);
    let (mut batches, mut bytes, mut calls) = (0, 0, 0);
    loop {
        let made = sender
            .bulk_compact_batches(at(10_000), 3, 1400)
            .unwrap()
            .expect("a bulk send runs");
        calls += 1;
        assert!(made.batches.len() <= 3);
        for batch in &made.batches {
            assert!(batch.len() <= 1400);
            bytes += batch.len();
            batches += 1;
            receiver
                .handle_compact_batch(at(10_000), None, batch)
                .unwrap();
        }
        if made.finished {
            break;
        }
        assert_eq!(made.batches.len(), 3, "a batch short only at the end");
        assert!(
            transmits(&mut sender).is_empty(),
            "nothing on the plain link"
        );
    }
    assert!(calls > 5, "{calls} calls");
    assert_eq!(events(&mut sender), [Event::BulkSendDone { states: 1000 }]);
    assert!(!sender.bulk_sending());
    assert_eq!(sender.bulk_compact_batches(at(10_000), 3, 1400), Ok(None));
    assert_eq!(receiver.stats().compact_batches_received, batches);
    for s in &states {
        // As a full update over the plain link would leave it: 10 s older than when
        // the sender cached it, and its rule number untrusted (no ruleset checksum).
        let mut expected = sender.state(US, s.id).expect("the sender's own state");
        expected.age_secs += 10;
        expected.expire_secs = expected.expire_secs.saturating_sub(10);
        expected.rule = None;
        assert_eq!(receiver.state(US, s.id), Some(expected), "state {}", s.id);
    }
    let per_state = bytes as f64 / 1000.0;
    assert!(per_state < 80.0, "{per_state} B/state");
    // A batch that is not one is refused whole, and counted.
    assert!(receiver
        .handle_compact_batch(at(10_000), None, &[9, 1, 2])
        .is_err());
    assert_eq!(receiver.stats().compact_batches_refused, 1);
}

/// The compact bulk's batches are `encode_batch`'s of the cached states as they are
/// when sent (aged), in slot order, each as full as the limit allows: reading only
/// the states that fit changes no byte.
#[test]
fn compact_bulk_batches_are_the_cached_states_batched_in_order() {
    let mut sender = engine_with(Dialect::FreeBsd1400, |c| c.bulk_paced = false);
    let states = crate::table::synth::Synth::new(8, US).states(700);
    for s in &states {
        sender.handle_local(at(0), LocalChange::Insert(*s));
    }
    sender.flush(at(0));
    transmits(&mut sender);
    let aged: Vec<State> = states
        .iter()
        .map(|s| {
            let mut s = sender.state(US, s.id).expect("cached");
            s.age_secs += 7;
            s.expire_secs = s.expire_secs.saturating_sub(7);
            s
        })
        .collect();
    sender.answer_bulk_request(at(7_000), true);
    let mut got = Vec::new();
    loop {
        let made = sender
            .bulk_compact_batches(at(7_000), 2, 1000)
            .unwrap()
            .unwrap();
        got.extend(made.batches);
        if made.finished {
            break;
        }
    }
    let mut expected = Vec::new();
    let mut rest = &aged[..];
    while !rest.is_empty() {
        let mut batch = Vec::new();
        let n = crate::state::compact_record::encode_batch(rest, 1000, &mut batch).unwrap();
        expected.push(batch);
        rest = &rest[n..];
    }
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "the batches differ from encode_batch's");
}

/// A node asked by a kernel peer (plain link) and by a pfsyncd peer (in DATA) runs
/// both bulks: the paced one on the timer, with its BUS START on the plain link, and
/// the compact one only when asked for batches; a plain request from a source that may
/// be a pfsyncd peer is held for the caller, who answers it either way.
#[test]
fn a_kernel_and_a_pfsyncd_request_get_both_bulks_and_a_held_one_waits() {
    let mut e = engine(Dialect::FreeBsd1400);
    let mut synth = crate::table::synth::Synth::new(5, US);
    for s in synth.states(100) {
        e.handle_local(at(0), LocalChange::Insert(s));
    }
    e.flush(at(0));
    transmits(&mut e);
    let request = packet(
        Dialect::FreeBsd1400,
        &[Message::UpdReq(StateRefRepr::BULK_REQUEST)],
    );
    // Held: no bulk starts, nothing is sent.
    assert!(e.handle_packet_holding_bulk_request(at(100), good(&request)));
    assert!(!e.bulk_sending());
    assert!(transmits(&mut e).is_empty());
    assert_eq!(e.stats().bulk_requests_held, 1);
    // From a pfsyncd peer in DATA: the compact walk, nothing on the plain link.
    e.handle_session_packet(at(100), good(&request));
    assert!(e.compact_bulk_sending() && e.bulk_send_progress().is_none());
    assert!(transmits(&mut e).is_empty());
    // The held one turns out to be a kernel peer's: the paced bulk, beside.
    e.answer_bulk_request(at(100), false);
    assert!(e.bulk_send_progress().is_some(), "the paced bulk runs");
    let start = transmits(&mut e);
    assert!(matches!(
        messages(&start[0])[..],
        [Message::Bus(BusRepr {
            status: STATUS_START,
            ..
        })]
    ));
    assert_eq!(e.stats().bulk_requests_received, 2);
    // Each runs to its end on its own.
    let mut states = 0;
    loop {
        let made = e.bulk_compact_batches(at(100), 4, 1400).unwrap().unwrap();
        states += made.states;
        if made.finished {
            break;
        }
    }
    assert_eq!(states, 100);
    assert!(!e.compact_bulk_sending() && e.bulk_sending());
    let end = e.bus_packet(at(100), STATUS_END).expect("BUS END");
    assert!(matches!(
        messages(&end)[..],
        [Message::Bus(BusRepr {
            status: STATUS_END,
            ..
        })]
    ));
    for ms in 100..20_000 {
        e.handle_timeout(at(ms));
        if !e.bulk_sending() {
            break;
        }
    }
    assert!(!e.bulk_sending(), "the paced bulk ended");
}

/// The receiver decodes every batch into one kept vector: a batch refused for a bad
/// last record takes none of its states (nor leaves them for the next batch), and the
/// batches after it, longer or shorter, are taken whole and alone.
#[test]
fn compact_batches_are_all_or_nothing_with_the_kept_vector() {
    use crate::state::compact_record::encode_batch;
    let states = crate::table::synth::Synth::new(11, PEER).states(300);
    let batch_of = |states: &[State]| {
        let mut out = Vec::new();
        assert_eq!(encode_batch(states, usize::MAX, &mut out), Ok(states.len()));
        out
    };
    let mut e = engine(Dialect::FreeBsd1400);
    let mut cut = batch_of(&states[..40]);
    cut.pop();
    assert!(e.handle_compact_batch(at(5), None, &cut).is_err());
    assert_eq!(e.state_count(), 0);
    assert!(table_ops(&mut e).is_empty());
    assert_eq!(e.stats().compact_batches_refused, 1);

    assert_eq!(
        e.handle_compact_batch(at(5), None, &batch_of(&states[40..50])),
        Ok(10)
    );
    assert_eq!(
        e.handle_compact_batch(at(5), None, &batch_of(&states[50..300])),
        Ok(250)
    );
    assert_eq!(
        e.handle_compact_batch(at(5), None, &batch_of(&states[..3])),
        Ok(3)
    );
    assert_eq!(e.state_count(), 263);
    let imported: Vec<u64> = table_ops(&mut e)
        .iter()
        .map(|op| match op {
            TableOp::Import(s) => s.id,
            other => panic!("{other:?}"),
        })
        .collect();
    let expected: Vec<u64> = states[40..300]
        .iter()
        .chain(&states[..3])
        .map(|s| s.id)
        .collect();
    assert_eq!(imported, expected);
    assert!(e.state(PEER, states[39].id).is_none());
}

/// An import's and an update's state come with the compact encoding the cache made of
/// them, which decodes to the operation's state; a delete comes without. The queue
/// holds no `State`: the bytes are a copy, true however the cache changes before the
/// operation is polled, and polling the plain way or the packed way gives the same.
#[test]
fn table_ops_come_with_the_cached_encoding_of_their_state() {
    let mut e = engine(Dialect::FreeBsd1400);
    let (a, b) = (tcp(PEER, 1), tcp(PEER, 2));
    let d = Dialect::FreeBsd1400;
    receive(
        &mut e,
        at(0),
        d,
        &[
            upd(d, &a),
            upd(d, &b),
            Message::DelC(sref(PEER, 2)),
            upd(d, &advanced(a, 1)),
        ],
    );
    let mut got = Vec::new();
    while let Some(op) = e.poll_table_op_packed() {
        let packed = op.packed().map(<[u8]>::to_vec);
        got.push((op.to_op(), packed));
    }
    let [(TableOp::Import(ia), Some(pa)), (TableOp::Import(ib), Some(pb)), (TableOp::Delete { id: 2, .. }, None), (TableOp::Update(ua), Some(pu))] =
        &got[..]
    else {
        panic!("{got:?}");
    };
    // What the old queue held: the states as imported and merged, and their encodings.
    let encoded = |s: &State| {
        let mut out = Vec::new();
        crate::state::compact::encode(s, &mut out);
        out
    };
    assert_eq!((ia, ib), (&a, &b));
    assert_eq!((pa, pb, pu), (&encoded(&a), &encoded(&b), &encoded(ua)));
    assert_eq!(ua.src.seqlo, advanced(a, 1).src.seqlo);
    assert_eq!(Some(*ua), e.state(PEER, 1));
    // Drained the plain way, then again the packed way.
    receive(
        &mut e,
        at(1),
        d,
        &[upd(d, &tcp(PEER, 3)), upd(d, &advanced(a, 2))],
    );
    assert_eq!(table_ops(&mut e).len(), 2);
    receive(&mut e, at(2), d, &[upd(d, &advanced(a, 3))]);
    let op = e.poll_table_op_packed().expect("an update");
    let PackedTableOp::Update(packed) = op else {
        panic!("{op:?}")
    };
    assert_eq!(
        crate::state::compact::decode(packed),
        e.state(PEER, 1),
        "the cached copy"
    );
    assert!(e.poll_table_op_packed().is_none());
    // The bytes are the state's when it was queued: a later change of the cached state
    // (or its removal) before the poll does not reach them.
    receive(&mut e, at(3), d, &[upd(d, &tcp(PEER, 4))]);
    receive(&mut e, at(3), d, &[Message::DelC(sref(PEER, 4))]);
    receive(&mut e, at(3), d, &[upd(d, &advanced(a, 4))]);
    assert_eq!(
        table_ops(&mut e),
        vec![
            TableOp::Import(tcp(PEER, 4)),
            TableOp::Delete {
                creatorid: PEER,
                id: 4
            },
            TableOp::Update(e.state(PEER, 1).expect("cached")),
        ]
    );
}

/// A state of every odd shape (IPv6, names, tag, policy route, rule numbers, scrub,
/// the ACK flag) through a compact batch, trusted and not, and through a kernel
/// packet: each import's state is the one sent as the import takes it (the ACK flag off,
/// untrusted rule numbers off), as the queue held it when it carried `State`s, and its
/// bytes are that state's encoding.
#[test]
fn imports_of_odd_states_come_out_as_they_went_in() {
    use crate::state::{AddressFamily, Scrub};
    use crate::table::synth::{Kind, Synth};
    use crate::wire::{RouteType, TagName};

    let mut synth = Synth::new(11, PEER);
    let mut sent = Vec::new();
    for (i, kind) in [Kind::Tcp, Kind::Udp, Kind::Icmp, Kind::Tcp]
        .into_iter()
        .cycle()
        .take(40)
        .enumerate()
    {
        let af = if i % 3 == 0 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let mut s = synth.state_of(kind, af);
        s.id = 1000 + i as u64;
        match i % 5 {
            0 => {
                s.orig_ifname = ifname("vtnet7");
                s.tagname = TagName::new("a-rather-long-tag-name").unwrap();
                s.rt = RouteType::RouteTo;
                s.rt_addr = Some(s.wire.addr[1]);
                s.rt_ifname = ifname("em1");
            }
            1 => {
                s.rule = Some(7);
                s.anchor = Some(3);
                s.nat_rule = Some(9);
                s.state_flags.insert(StateFlags::ACK);
            }
            2 => {
                s.src.scrub = Some(Scrub {
                    flags: 1,
                    ttl: 64,
                    ts_mod: 0xdead_beef,
                });
                s.stack.port[0] ^= 0x1111;
            }
            3 => s.rule = None,
            _ => {}
        }
        sent.push(s);
    }
    let taken = |s: &State, trusted: bool| {
        let mut s = *s;
        s.state_flags.remove(StateFlags::ACK);
        if !trusted {
            (s.rule, s.anchor, s.nat_rule) = (None, None, None);
        }
        s
    };
    let check = |e: &mut Engine, trusted: bool| {
        let mut n = 0;
        while let Some(op) = e.poll_table_op_packed() {
            let (PackedTableOp::Import(packed), TableOp::Import(got)) = (op, op.to_op()) else {
                panic!("{op:?}");
            };
            let want = taken(&sent[n], trusted);
            assert_eq!(got, want);
            let mut encoded = Vec::new();
            crate::state::compact::encode(&want, &mut encoded);
            assert_eq!(packed, &encoded[..]);
            n += 1;
        }
        assert_eq!(n, sent.len());
    };
    let mut batch = Vec::new();
    assert_eq!(
        crate::state::compact_record::encode_batch(&sent, 1 << 20, &mut batch),
        Ok(sent.len())
    );
    for trusted in [false, true] {
        let mut e = engine(Dialect::FreeBsd1400);
        let ruleset = trusted.then_some(e.config().pfcksum);
        assert_eq!(
            e.handle_vouched_compact_batch(at(0), None, ruleset, &batch),
            Ok(sent.len())
        );
        check(&mut e, trusted);
    }
    let mut e = engine(Dialect::OpenBsd);
    let d = Dialect::OpenBsd;
    for s in &sent {
        // OpenBSD's records hold fewer fields: what it carries is what it sends.
        let (record, _) = s.to_record(d.record_format());
        let carried = State::from_record(&record).expect("a record");
        receive(&mut e, at(0), d, &[upd(d, s)]);
        let Some(TableOp::Import(got)) = e.poll_table_op() else {
            panic!("no import of {s:?}");
        };
        assert_eq!(got, taken(&carried, false));
        assert!(e.poll_table_op().is_none());
    }
}
