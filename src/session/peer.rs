//! One peer's session: what we know of it (discovery), its stream as we receive it,
//! our timers towards it, and its counters.

use std::time::Instant;

use super::copies::CopyMemory;
use super::digest::Assembly;
use super::receive::Stream;
use super::resend::ResendBudget;
use crate::wire::ext::Sender;

/// What we know about the peer at an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// We sent it HELLO `tries` times and heard nothing yet.
    Probing { tries: u32, next_at: Instant },
    /// It never answered: a kernel peer (or a daemon without the extensions). Probed
    /// again at `next_probe_at`.
    Kernel { next_probe_at: Instant },
    /// A pfsyncd peer: the extensions are used towards it.
    Established,
}

/// Per-peer counters (`ctl stats` per peer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Valid frames received from it.
    pub frames_in: u64,
    /// Frames sent to it.
    pub frames_out: u64,
    /// HELLOs sent to it.
    pub hellos_sent: u64,
    /// DATA received and delivered.
    pub data_in: u64,
    /// DATA sent (first sends, not resends).
    pub data_out: u64,
    /// DATA received twice (or after being given up), dropped.
    pub duplicates: u64,
    /// Sequence numbers found missing (gaps seen).
    pub gaps: u64,
    /// NACK frames we sent, and the sequence numbers they asked for.
    pub nacks_sent: u64,
    pub nack_seqs_asked: u64,
    /// NACK frames received from it.
    pub nacks_received: u64,
    /// DATA frames resent in answer to its NACKs.
    pub resent: u64,
    /// Resends refused by its resend budget (it asks again later).
    pub resend_throttled: u64,
    /// NACKed numbers we never sent (ignored).
    pub nack_bogus: u64,
    /// GONE frames sent to it, and received from it.
    pub gone_sent: u64,
    pub gone_received: u64,
    /// Sequence numbers given up (GONE, tries exhausted, or past the window).
    pub seqs_given_up: u64,
    /// ResyncNeeded events raised for it.
    pub resyncs: u64,
    /// RESYNC frames sent to it (bulk updates asked of it alone), and received from it
    /// (bulk updates it asked of us).
    pub resyncs_asked: u64,
    pub resyncs_received: u64,
    /// Heartbeats (ACK) sent and received.
    pub heartbeats_sent: u64,
    pub heartbeats_received: u64,
    /// Restarts seen (new boot id).
    pub restarts: u64,
    /// Digest rounds of its digest we compared, buckets found differing, and rounds
    /// put off because DATA up to its `as_of` had not arrived yet.
    pub digest_rounds: u64,
    pub buckets_differing: u64,
    pub digest_deferred: u64,
    /// Buckets asked about (DIGEST_REQ): those that differed two comparisons running.
    pub buckets_asked: u64,
    /// Ids of its states we forgot (it no longer has them), and asked for (NEED).
    pub ids_forgotten: u64,
    pub ids_needed: u64,
    /// Ids of our states it asked for, announced again.
    pub ids_announced: u64,
    /// Digests of ours sent to it.
    pub digests_sent: u64,
    /// ACKs sent at once (every [`Config::ack_every`](super::Config::ack_every) DATA or
    /// [`Config::ack_bytes`](super::Config::ack_bytes) of them, on a filled gap or a
    /// duplicate), beside the heartbeats.
    pub prompt_acks: u64,
    /// Our last DATA sent again unasked, for a sender whose window is full (see
    /// [`Sessions::probe_tail`](super::Sessions::probe_tail)).
    pub tail_probes: u64,
    /// Its plain packets not taken again: their DATA copy was (see `copies.rs`).
    pub plain_copies_skipped: u64,
    /// Its DATA whose packet was not taken again: the plain copy was.
    pub data_copies_skipped: u64,
}

/// One peer.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub link: Link,
    /// A secure peer: a pfsyncd peer by definition, probed until it answers.
    pub secure: bool,
    /// HELLOs of this probe round sent ahead of their time (`Sessions::hello_again`):
    /// as many of the round's later tries go unsent, so the round sends no more.
    pub hellos_ahead: u32,
    /// Its identity once it said HELLO / HELLO_ACK.
    pub remote: Option<Sender>,
    /// Its MTU and features from its HELLO.
    pub mtu: u16,
    pub features: u32,
    /// The last valid frame from it.
    pub last_heard: Option<Instant>,
    /// When our next heartbeat to it is due (established only).
    pub heartbeat_at: Option<Instant>,
    /// When our next digest to it is due (established only).
    pub digest_at: Option<Instant>,
    /// Its stream as we receive it.
    pub stream: Option<Stream>,
    /// Its cumulative mark of our stream, from its last ACK.
    pub acked: u64,
    /// Our cumulative mark of its stream as our last ACK to it said.
    pub ack_told: u64,
    /// Bytes of its new DATA since our last ACK to it.
    pub unacked_bytes: usize,
    /// Resends we allow it.
    pub budget: ResendBudget,
    /// The round of its digest we asked about, and the IDS parts of that round.
    pub assembly: Assembly,
    /// Per bucket, whether it differed when we last compared it (see
    /// `Sessions::compare_digest`); empty until the first comparison.
    pub differed: Vec<bool>,
    /// Its packets taken lately, so that the other copy of each is not.
    pub copies: CopyMemory,
    pub stats: PeerStats,
}

impl Peer {
    pub fn new(link: Link, secure: bool) -> Peer {
        Peer {
            link,
            secure,
            hellos_ahead: 0,
            remote: None,
            mtu: 0,
            features: 0,
            last_heard: None,
            heartbeat_at: None,
            digest_at: None,
            stream: None,
            acked: 0,
            ack_told: 0,
            unacked_bytes: 0,
            budget: ResendBudget::new(),
            assembly: Assembly::default(),
            differed: Vec::new(),
            copies: CopyMemory::default(),
            stats: PeerStats::default(),
        }
    }

    pub fn established(&self) -> bool {
        self.link == Link::Established
    }
}

/// What the daemon may show of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    pub link: Link,
    pub secure: bool,
    /// Creator and boot id once known.
    pub remote: Option<Sender>,
    /// Its MTU from its HELLO.
    pub mtu: u16,
    /// Sequence numbers of its stream missing now.
    pub missing: usize,
    /// Every seq of its stream up to this one received or given up.
    pub received: u64,
    /// Its cumulative mark of our stream (last ACK).
    pub acked: u64,
    /// Its last valid frame.
    pub last_heard: Option<Instant>,
    pub stats: PeerStats,
}
