//! What the daemon's pfsyncd sessions (`crate::session`) ask of the engine besides the
//! digests (`digest.rs`): the count of bulk updates asked of one peer (RESYNC; the peer
//! answers it with [`Engine::answer_bulk_request`], compact).
//!
//! None of this is pfsync: a kernel peer never triggers it. The tests here also cover
//! `forget_states` and `announce_states` as the sessions use them.

use super::Engine;

impl Engine {
    /// Counts a bulk update asked of one pfsyncd peer (a RESYNC frame, sent by the
    /// sessions) because its DATA was lost past its resend buffer. Unlike
    /// [`request_bulk`](Self::request_bulk) it neither demotes carp nor waits for the
    /// bulk's end (we are in sync but for what was lost), and no kernel peer is asked:
    /// the loss was between pfsyncd peers.
    pub fn count_resync_request(&mut self) {
        self.stats.session_resync_requests += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        all_messages, at, engine, receive, table_ops, tcp, transmits, upd, PEER, US,
    };
    use crate::engine::{LocalChange, TableOp};
    use crate::wire::{Dialect, Message};

    const D: Dialect = Dialect::OpenBsd;

    #[test]
    fn forgetting_deletes_a_peers_copies_from_cache_and_table_once() {
        let mut e = engine(D);
        receive(
            &mut e,
            at(0),
            D,
            &[upd(D, &tcp(PEER, 1)), upd(D, &tcp(PEER, 2))],
        );
        let _ = table_ops(&mut e);
        // Older than FORGET_MIN_AGE: a copy that may not have overtaken the list.
        e.forget_states(at(1_500), PEER, &[1, 3]);
        assert_eq!(e.stats().digest_forgotten, 1, "3 is not held");
        assert_eq!(
            table_ops(&mut e),
            vec![TableOp::Delete {
                creatorid: PEER,
                id: 1
            }]
        );
        assert!(e.state(PEER, 1).is_none());
        assert!(e.state(PEER, 2).is_some());
        e.forget_states(at(1_600), PEER, &[1]);
        assert_eq!(e.stats().digest_forgotten, 1);
        // A late copy of the forgotten state is refused as after a delete.
        receive(&mut e, at(1_700), D, &[upd(D, &tcp(PEER, 1))]);
        assert!(e.state(PEER, 1).is_none());
        // Our own states are never forgotten by a peer's list.
        e.handle_local(at(1_800), LocalChange::Insert(tcp(US, 9)));
        e.forget_states(at(3_000), US, &[9]);
        assert!(e.state(US, 9).is_some());
    }

    #[test]
    fn announcing_sends_full_updates_of_our_states_at_once() {
        let mut e = engine(D);
        e.handle_local(at(0), LocalChange::Insert(tcp(US, 9)));
        e.flush(at(0));
        let _ = transmits(&mut e);
        receive(&mut e, at(5), D, &[upd(D, &tcp(PEER, 1))]);
        let _ = transmits(&mut e);
        // A peer's state, or one we lack, is not ours to announce.
        e.announce_states(at(10), &[9, 10, 1]);
        let sent = all_messages(&transmits(&mut e));
        let updated: Vec<(u32, u64)> = sent
            .iter()
            .filter_map(|m| match m {
                Message::Upd(r) => crate::state::State::from_record(r)
                    .ok()
                    .map(|s| (s.creatorid, s.id)),
                _ => None,
            })
            .collect();
        assert_eq!(updated, vec![(US, 9)], "{sent:?}");
        assert_eq!(e.stats().digest_announced, 1);
    }

    #[test]
    fn a_resync_request_neither_demotes_nor_asks_the_plain_link() {
        let mut e = engine(D);
        e.count_resync_request();
        assert!(!e.demoted());
        assert!(transmits(&mut e).is_empty(), "nothing for the plain link");
        assert_eq!(e.stats().session_resync_requests, 1);
    }
}
