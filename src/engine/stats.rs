//! Counters: every `struct pfsyncstats` field, per-action message counts in and out as
//! FreeBSD keeps them, and what the engine adds (bulk status, bounded-queue overflows).

use crate::wire::Counter;

/// Highest action number of any dialect, plus one: the size of the per-action arrays.
pub const ACTIONS: usize = 17;

/// The engine's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets handed to the receive path.
    pub ipackets: u64,
    /// IPv6 packets handed to the receive path (FreeBSD counts them in `ipackets` too).
    pub ipackets6: u64,
    /// Received on an interface other than the sync interface.
    pub badif: u64,
    /// TTL or hop limit other than 255.
    pub badttl: u64,
    /// Shorter than the pfsync header.
    pub hdrops: u64,
    /// Unknown header version, or a state format unknown to the receiver.
    pub badver: u64,
    /// Unknown or refused action.
    pub badact: u64,
    /// Lengths that do not match the data.
    pub badlen: u64,
    /// Never incremented: pfsync has no authentication.
    pub badauth: u64,
    /// From a sender other than the configured unicast sync peers (not a kernel
    /// counter: the kernels accept any source).
    pub badsrc: u64,
    /// Peer states and clears whose interface name a mapping turned into ours.
    pub ifname_mapped: u64,
    /// An update older than our copy in at least one direction.
    pub stale: u64,
    /// A record with values the receiver rejects.
    pub badval: u64,
    /// A lookup or insert that failed (unknown state, creator 0, cache full).
    pub badstate: u64,
    /// Packets sent.
    pub opackets: u64,
    /// IPv6 packets sent.
    pub opackets6: u64,
    /// Packets that could not be built.
    pub onomem: u64,
    /// Send errors reported back by the transport.
    pub oerrors: u64,
    /// Records received per action number (EOF once per packet), FreeBSD's `iacts`.
    pub iacts: [u64; ACTIONS],
    /// Records sent per action number, FreeBSD's `oacts`.
    pub oacts: [u64; ACTIONS],
    /// Bulk update requests we sent (each retry counts).
    pub bulk_requests_sent: u64,
    /// Bulk update requests peers sent us.
    pub bulk_requests_received: u64,
    /// Bulk requests from plain sources that may be pfsyncd peers, held for the daemon
    /// to answer (compact or paced) once it knows.
    pub bulk_requests_held: u64,
    /// Bulk updates we sent to completion.
    pub bulk_sends_completed: u64,
    /// Bulk requests that arrived while a second pass was already due (coalesced).
    pub bulk_requests_coalesced: u64,
    /// BUS STARTs sent again for a request that came during our bulk update (its
    /// sender missed the first).
    pub bulk_starts_resent: u64,
    /// States sent in completed bulk updates.
    pub bulk_states_sent: u64,
    /// Compact record batches taken from pfsyncd peers.
    pub compact_batches_received: u64,
    /// Compact record batches refused whole (bad version, length or value).
    pub compact_batches_refused: u64,
    /// Tries of our current or last bulk request.
    pub bulk_tries: u64,
    /// Our bulk requests that ended with a BUS END.
    pub bulk_completed: u64,
    /// Our bulk requests given up (tries ran out, or the END never came).
    pub bulk_given_up: u64,
    /// BUS START received while our request was pending.
    pub bus_start_received: u64,
    /// BUS END received while our request was pending.
    pub bus_end_received: u64,
    /// BUS END refused: it closed a bulk update that began before our request.
    pub bus_end_stale: u64,
    /// How long our last completed bulk update took, in milliseconds.
    pub bulk_last_duration_ms: u64,
    /// Update requests dropped because the pending-request queue was full.
    pub req_overflow: u64,
    /// Inserts of states we already had (duplicated packets, re-announcements).
    pub ins_duplicate: u64,
    /// Stale copies of states deleted a moment ago, refused (see `tombstone_ttl`).
    pub tombstoned: u64,
    /// Peer states taken without their rule numbers (rule, anchor, NAT rule): the
    /// packet's ruleset checksum differed from ours, or it came from OpenBSD, so the
    /// numbers name rules of another ruleset.
    pub rule_unbound: u64,
    /// States not cached because the cache was at its limit.
    pub cache_full: u64,
    /// Fields the sending dialect could not carry, summed over sent states.
    pub lost_fields: u64,
    /// Local state changes not announced because the state matches a sync filter
    /// (each report of a new filtered state, each update of a muted one; see
    /// `filter.rs`).
    pub filtered_out: u64,
    /// Peer records not passed to the table because the state matches a sync filter.
    pub filtered_in: u64,
    /// New local states whose announcement waited for `sync_delay`.
    pub delayed: u64,
    /// Of those, the ones that ended before they were due: never sent at all.
    pub delayed_then_deleted: u64,
    /// Of those, the ones announced when due.
    pub delayed_announced: u64,
    /// Peer states dropped because their creator's digest list no longer had them.
    pub digest_forgotten: u64,
    /// Our states sent again as full updates because a peer's digest lacked them.
    pub digest_announced: u64,
    /// Our muted states (sync filter) left out of our digests because a peer asked for
    /// one (its copy was not the frozen one, or it had none): `Filtered::MutedUnlisted`.
    pub digest_unlisted: u64,
    /// Bulk requests sent to the session peers after a loss their resend buffers no
    /// longer covered.
    pub session_resync_requests: u64,
}

impl Stats {
    /// Counts a refusal in the kernel counter it maps to.
    pub fn count(&mut self, counter: Counter) {
        match counter {
            Counter::Hdrops => self.hdrops += 1,
            Counter::Badver => self.badver += 1,
            Counter::Badact => self.badact += 1,
            Counter::Badlen => self.badlen += 1,
            Counter::Badval => self.badval += 1,
        }
    }

    /// The `pfsyncstats` fields in kernel order, with their kernel names.
    pub fn pfsyncstats(&self) -> [(&'static str, u64); 16] {
        [
            ("ipackets", self.ipackets),
            ("ipackets6", self.ipackets6),
            ("badif", self.badif),
            ("badttl", self.badttl),
            ("hdrops", self.hdrops),
            ("badver", self.badver),
            ("badact", self.badact),
            ("badlen", self.badlen),
            ("badauth", self.badauth),
            ("stale", self.stale),
            ("badval", self.badval),
            ("badstate", self.badstate),
            ("opackets", self.opackets),
            ("opackets6", self.opackets6),
            ("onomem", self.onomem),
            ("oerrors", self.oerrors),
        ]
    }
}
