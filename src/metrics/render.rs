//! What pfsyncd exposes, by name: every counter `pfsyncd ctl stats` shows, the peers,
//! bulk updates, the table, in the Prometheus text format ([`super::exposition`]).
//!
//! The names follow the Prometheus conventions: a `pfsyncd_` prefix, counters ending
//! in `_total`, base units (seconds), one family per quantity with labels where the
//! same quantity is counted per peer, per reason or per message action. The
//! `struct pfsyncstats` counters keep their kernel names
//! (`pfsyncd_pfsync_badttl_total`), so they read against `netstat -s -p pfsync`.
//! Every series is written on every scrape, zero or not, so a rate never starts from
//! a missing series.

use std::net::IpAddr;
use std::time::Duration;

use super::exposition::{Exposition, Kind};
use crate::daemon::privsep::ParentReport;
use crate::engine::Stats;

/// What one peer looks like at the time of the scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSample {
    /// Its source address.
    pub addr: IpAddr,
    /// How long ago it was last heard.
    pub last_heard_ago: Duration,
    /// Packets received from it.
    pub packets: u64,
    /// Payload bytes received from it.
    pub bytes: u64,
    /// The pfsync header version of its latest packet.
    pub version: u8,
}

/// One pfsyncd session (`extensions on`) at the time of the scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSample {
    /// The peer's address (plain-link source or secure inner address).
    pub addr: IpAddr,
    /// The extensions are used towards it.
    pub established: bool,
    /// Its counters, by the series name's middle part (`gaps` for
    /// `pfsyncd_session_gaps_total`), in a fixed order.
    pub counters: [(&'static str, u64); SESSION_COUNTERS.len()],
}

/// The per-session counters and their meanings.
pub const SESSION_COUNTERS: [(&str, &str); 16] = [
    (
        "gaps",
        "Sequence numbers of a pfsyncd peer's stream found missing.",
    ),
    (
        "nacks_sent",
        "NACKs sent to a pfsyncd peer for its missing DATA.",
    ),
    ("nacks_received", "NACKs received from a pfsyncd peer."),
    (
        "resent",
        "DATA resent to a pfsyncd peer in answer to its NACKs.",
    ),
    (
        "gone_received",
        "GONE frames from a pfsyncd peer: DATA it no longer held.",
    ),
    (
        "resyncs",
        "DATA of a pfsyncd peer given up for good (a bulk request follows).",
    ),
    ("duplicates", "DATA of a pfsyncd peer received twice."),
    (
        "digest_rounds",
        "Digests of a pfsyncd peer compared with our copies.",
    ),
    (
        "buckets_differing",
        "Digest buckets found differing from a pfsyncd peer's.",
    ),
    (
        "ids_forgotten",
        "Ids of a pfsyncd peer's states its digest no longer lists.",
    ),
    (
        "ids_announced",
        "Ids of our states a pfsyncd peer asked for, announced again.",
    ),
    (
        "plain_copies_skipped",
        "Plain packets of a pfsyncd peer not taken again: their DATA copy was.",
    ),
    (
        "data_copies_skipped",
        "DATA of a pfsyncd peer whose packet was not taken again: its plain copy was.",
    ),
    (
        "resyncs_asked",
        "Bulk updates asked of a pfsyncd peer (RESYNC) for its DATA it no longer held.",
    ),
    (
        "resyncs_received",
        "RESYNC frames from a pfsyncd peer: it asked us for a bulk update.",
    ),
    (
        "buckets_asked",
        "Digest buckets of a pfsyncd peer asked about (differing twice running).",
    ),
];

/// Where a bulk update we asked for stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkState {
    /// Never asked.
    None,
    /// Asked, no START yet.
    Requested,
    /// A peer is sending it.
    Receiving,
    /// Completed or given up.
    Done,
}

impl BulkState {
    const ALL: [BulkState; 4] = [
        BulkState::None,
        BulkState::Requested,
        BulkState::Receiving,
        BulkState::Done,
    ];

    /// The word `ctl status` uses.
    pub fn word(self) -> &'static str {
        match self {
            BulkState::None => "none",
            BulkState::Requested => "requested",
            BulkState::Receiving => "receiving",
            BulkState::Done => "done",
        }
    }
}

/// Everything the metrics are made of, taken at one moment by the engine process.
#[derive(Debug, Clone)]
pub struct Snapshot<'a> {
    /// The engine's counters.
    pub stats: &'a Stats,
    /// The parent's report of the table and the link.
    pub report: &'a ParentReport,
    /// The peers heard, in address order.
    pub peers: Vec<PeerSample>,
    /// Packets from sources beyond the peers remembered.
    pub untracked_peer_packets: u64,
    /// The pfsyncd sessions, in address order (none with the extensions off).
    pub sessions: Vec<SessionSample>,
    /// The wall clock now, in seconds since the epoch (for last-heard timestamps).
    pub unix_now: f64,
    /// pfsync is up.
    pub up: bool,
    /// The sync link is open.
    pub link_open: bool,
    /// The engine considers itself in sync.
    pub syncok: bool,
    /// carp demotion is raised for a pending bulk update.
    pub demoted: bool,
    /// Our bulk request.
    pub bulk: BulkState,
    /// We are sending a bulk update.
    pub bulk_sending: bool,
    /// States sent so far in the bulk update we are sending (0 when none).
    pub bulk_send_states: u64,
    /// States in the engine's cache.
    pub cached: u64,
    /// States waiting in each send queue: INS, INS_ACK, UPD, UPD_C, DEL_C.
    pub queued: [u64; 5],
    /// The configured version, as `ifconfig pfsync0 version` spells it.
    pub version: &'static str,
    /// Our creator id.
    pub creatorid: u32,
}

/// The `struct pfsyncstats` counters' meanings, as `netstat -s -p pfsync` words them.
const PFSYNCSTATS_HELP: [(&str, &str); 16] = [
    (
        "ipackets",
        "Packets received (IPv4 and IPv6, as FreeBSD counts them).",
    ),
    ("ipackets6", "Packets received over IPv6."),
    ("badif", "Packets discarded for bad interface."),
    ("badttl", "Packets discarded for bad ttl."),
    ("hdrops", "Packets shorter than header."),
    ("badver", "Packets discarded for bad version."),
    ("badact", "Packets discarded for bad action."),
    ("badlen", "Packets discarded for short packet."),
    (
        "badauth",
        "Packets discarded for bad HMAC (never: pfsync has no authentication).",
    ),
    ("stale", "Stale states: updates older than our copy."),
    ("badval", "States discarded for bad values."),
    ("badstate", "Failed state lookups or inserts."),
    ("opackets", "Packets sent (IPv4 and IPv6)."),
    ("opackets6", "Packets sent over IPv6."),
    (
        "onomem",
        "Sends failed for want of memory (packets that could not be built).",
    ),
    ("oerrors", "Send errors."),
];

const QUEUES: [&str; 5] = ["ins", "ins_ack", "upd", "upd_c", "del_c"];

/// The whole exposition.
pub fn render(s: &Snapshot<'_>) -> String {
    let mut e = Exposition::new();
    status(&mut e, s);
    pfsync(&mut e, s.stats);
    engine(&mut e, s);
    bulk(&mut e, s);
    table(&mut e, s.report);
    peers(&mut e, s);
    sessions(&mut e, s);
    e.finish()
}

fn status(e: &mut Exposition, s: &Snapshot<'_>) {
    let creatorid = format!("{:08x}", s.creatorid);
    let table = if s.report.memory_table {
        "memory"
    } else {
        "pf"
    };
    e.family(
        "pfsyncd_info",
        Kind::Gauge,
        "Always 1: the configured pfsync version, the state table and our creator id.",
    )
    .sample(
        &[
            ("version", s.version),
            ("table", table),
            ("creatorid", &creatorid),
        ],
        1u64,
    );
    e.single(
        "pfsyncd_up",
        Kind::Gauge,
        "1 while pfsync is configured up.",
        s.up,
    );
    e.single(
        "pfsyncd_link_open",
        Kind::Gauge,
        "1 while the sync link is open.",
        s.link_open,
    );
    e.single(
        "pfsyncd_syncok",
        Kind::Gauge,
        "1 once in sync (the first bulk update done or given up), as ifconfig's syncok.",
        s.syncok,
    );
    e.single(
        "pfsyncd_carp_demoted",
        Kind::Gauge,
        "1 while carp is demoted for a pending bulk update.",
        s.demoted,
    );
}

fn pfsync(e: &mut Exposition, st: &Stats) {
    for ((field, value), (help_field, help)) in st.pfsyncstats().into_iter().zip(PFSYNCSTATS_HELP) {
        debug_assert_eq!(field, help_field);
        e.single(
            &format!("pfsyncd_pfsync_{field}_total"),
            Kind::Counter,
            help,
            value,
        );
    }
    let actions = |e: &mut Exposition, name: &str, help: &str, counts: &[u64]| {
        let mut f = e.family(name, Kind::Counter, help);
        for (action, n) in counts.iter().enumerate() {
            f.sample(&[("action", &action.to_string())], *n);
        }
    };
    actions(
        e,
        "pfsyncd_messages_received_total",
        "Records received per pfsync action number (EOF once per packet), as FreeBSD's iacts.",
        &st.iacts,
    );
    actions(
        e,
        "pfsyncd_messages_sent_total",
        "Records sent per pfsync action number, as FreeBSD's oacts.",
        &st.oacts,
    );
}

fn engine(e: &mut Exposition, s: &Snapshot<'_>) {
    let st = s.stats;
    e.single(
        "pfsyncd_cache_states",
        Kind::Gauge,
        "States in the engine's cache.",
        s.cached,
    );
    let mut f = e.family(
        "pfsyncd_queued_states",
        Kind::Gauge,
        "States waiting to be sent, per send queue.",
    );
    for (queue, n) in QUEUES.iter().zip(s.queued) {
        f.sample(&[("queue", queue)], n);
    }
    let counters: [(&str, &str, u64); 17] = [
        (
            "pfsyncd_filtered_out_total",
            "Local state changes not announced because a sync filter (nosync-if, -proto, -net, -port) matches.",
            st.filtered_out,
        ),
        (
            "pfsyncd_filtered_in_total",
            "Peer states not imported because a sync filter matches them.",
            st.filtered_in,
        ),
        (
            "pfsyncd_delayed_total",
            "New local states held back by syncdelay.",
            st.delayed,
        ),
        (
            "pfsyncd_delayed_announced_total",
            "States held back by syncdelay and announced once old enough.",
            st.delayed_announced,
        ),
        (
            "pfsyncd_delayed_then_deleted_total",
            "States held back by syncdelay that ended before they were announced: never sent.",
            st.delayed_then_deleted,
        ),
        (
            "pfsyncd_digest_forgotten_total",
            "Peer states dropped because their creator's digest list no longer had them.",
            st.digest_forgotten,
        ),
        (
            "pfsyncd_digest_announced_total",
            "Own states sent again as full updates because a peer's digest lacked them.",
            st.digest_announced,
        ),
        (
            "pfsyncd_digest_unlisted_total",
            "Own muted states (sync filter) left out of the digests after a peer asked for one.",
            st.digest_unlisted,
        ),
        (
            "pfsyncd_badsrc_total",
            "Packets discarded for a source other than the configured syncpeers (not a kernel counter).",
            st.badsrc,
        ),
        (
            "pfsyncd_ifname_mapped_total",
            "Peer states and clears taken under a mapped interface name (ifmap).",
            st.ifname_mapped,
        ),
        (
            "pfsyncd_inserts_duplicate_total",
            "Inserts of states we already had (duplicated packets, re-announcements).",
            st.ins_duplicate,
        ),
        (
            "pfsyncd_states_tombstoned_total",
            "Stale copies of states deleted a moment ago, refused.",
            st.tombstoned,
        ),
        (
            "pfsyncd_update_requests_dropped_total",
            "Update requests dropped because the pending-request queue was full.",
            st.req_overflow,
        ),
        (
            "pfsyncd_cache_full_total",
            "States not cached because the cache was at its limit.",
            st.cache_full,
        ),
        (
            "pfsyncd_lost_fields_total",
            "Fields the sending dialect could not carry, summed over sent states.",
            st.lost_fields,
        ),
        (
            "pfsyncd_rule_unbound_total",
            "Peer states taken without their rule numbers (another ruleset's numbers).",
            st.rule_unbound,
        ),
        (
            "pfsyncd_session_resync_requests_total",
            "Bulk requests to the pfsyncd peers for DATA lost past their resend buffers.",
            st.session_resync_requests,
        ),
    ];
    for (name, help, v) in counters {
        e.single(name, Kind::Counter, help, v);
    }
    e.single(
        "pfsyncd_own_packets_dropped_total",
        Kind::Counter,
        "Our own packets the receiver saw and dropped.",
        s.report.own_dropped,
    );
}

fn bulk(e: &mut Exposition, s: &Snapshot<'_>) {
    let st = s.stats;
    let mut f = e.family(
        "pfsyncd_bulk_request_state",
        Kind::Gauge,
        "1 for the state of the bulk update we asked for (none, requested, receiving, done).",
    );
    for state in BulkState::ALL {
        f.sample(&[("state", state.word())], state == s.bulk);
    }
    e.single(
        "pfsyncd_bulk_request_tries",
        Kind::Gauge,
        "Tries of our current or last bulk request.",
        st.bulk_tries,
    );
    e.single(
        "pfsyncd_bulk_last_duration_seconds",
        Kind::Gauge,
        "How long our last completed bulk update took.",
        st.bulk_last_duration_ms as f64 / 1000.0,
    );
    e.single(
        "pfsyncd_bulk_sending",
        Kind::Gauge,
        "1 while we send a bulk update to a peer.",
        s.bulk_sending,
    );
    e.single(
        "pfsyncd_bulk_send_states",
        Kind::Gauge,
        "States sent so far in the bulk update we are sending (0 when none).",
        s.bulk_send_states,
    );
    let counters: [(&str, &str, u64); 14] = [
        (
            "pfsyncd_bulk_requests_sent_total",
            "Bulk update requests we sent (each retry counts).",
            st.bulk_requests_sent,
        ),
        (
            "pfsyncd_bulk_requests_received_total",
            "Bulk update requests peers sent us.",
            st.bulk_requests_received,
        ),
        (
            "pfsyncd_bulk_requests_coalesced_total",
            "Bulk requests that arrived while another pass was already due.",
            st.bulk_requests_coalesced,
        ),
        (
            "pfsyncd_bulk_sends_completed_total",
            "Bulk updates we sent to completion.",
            st.bulk_sends_completed,
        ),
        (
            "pfsyncd_bulk_states_sent_total",
            "States sent in completed bulk updates.",
            st.bulk_states_sent,
        ),
        (
            "pfsyncd_bulk_starts_resent_total",
            "Bulk update starts sent again for a late request.",
            st.bulk_starts_resent,
        ),
        (
            "pfsyncd_bulk_requests_held_total",
            "Bulk requests from plain sources that may be pfsyncd peers, held until known.",
            st.bulk_requests_held,
        ),
        (
            "pfsyncd_compact_batches_received_total",
            "Compact record batches taken from pfsyncd peers.",
            st.compact_batches_received,
        ),
        (
            "pfsyncd_compact_batches_refused_total",
            "Compact record batches refused whole (bad version, length or value).",
            st.compact_batches_refused,
        ),
        (
            "pfsyncd_bulk_completed_total",
            "Our bulk requests that ended with a bulk update end.",
            st.bulk_completed,
        ),
        (
            "pfsyncd_bulk_given_up_total",
            "Our bulk requests given up (tries ran out, or the end never came).",
            st.bulk_given_up,
        ),
        (
            "pfsyncd_bulk_starts_received_total",
            "Bulk update starts received while our request was pending.",
            st.bus_start_received,
        ),
        (
            "pfsyncd_bulk_ends_received_total",
            "Bulk update ends received while our request was pending.",
            st.bus_end_received,
        ),
        (
            "pfsyncd_bulk_ends_refused_total",
            "Bulk update ends refused: they closed an update begun before our request.",
            st.bus_end_stale,
        ),
    ];
    for (name, help, v) in counters {
        e.single(name, Kind::Counter, help, v);
    }
}

fn table(e: &mut Exposition, r: &ParentReport) {
    let t = &r.table;
    e.single(
        "pfsyncd_table_states",
        Kind::Gauge,
        "States in the table (pf: at its last listing).",
        r.states,
    );
    e.single(
        "pfsyncd_table_imported_total",
        Kind::Counter,
        "States imported into the table.",
        t.imported,
    );
    e.single(
        "pfsyncd_table_updated_total",
        Kind::Counter,
        "States updated in the table.",
        t.updated,
    );
    e.family(
        "pfsyncd_table_removed_total",
        Kind::Counter,
        "States removed from the table, by a peer's delete or clear.",
    )
    .sample(&[("by", "delete")], t.removed)
    .sample(&[("by", "clear")], t.cleared);
    e.single(
        "pfsyncd_table_delete_missing_total",
        Kind::Counter,
        "Deletes of a state that was not in the table.",
        t.remove_missing,
    );
    e.single(
        "pfsyncd_table_expired_total",
        Kind::Counter,
        "States the memory table expired itself.",
        r.expired,
    );
    e.single(
        "pfsyncd_table_superseded_total",
        Kind::Counter,
        "Peer updates skipped for a newer local change.",
        r.superseded,
    );
    e.family(
        "pfsyncd_table_failures_total",
        Kind::Counter,
        "Table operations (imports, updates, deletes) that failed, by reason.",
    )
    .sample(&[("reason", "exists")], t.exists)
    .sample(&[("reason", "invalid")], t.invalid)
    .sample(&[("reason", "notfound")], t.notfound)
    .sample(&[("reason", "full")], t.full)
    .sample(&[("reason", "unsupported")], t.unsupported)
    .sample(&[("reason", "io")], t.io);
    let mut f = e.family(
        "pfsyncd_kernel_edge_total",
        Kind::Counter,
        "Peer or kernel input refused, corrected or found incomplete at the kernel edge, by event.",
    );
    for (event, n) in r.edge.named() {
        f.sample(&[("event", event)], n);
    }
    e.family(
        "pfsyncd_churn_changes_total",
        Kind::Counter,
        "Synthetic changes made by ctl churn (memory table).",
    )
    .sample(&[("change", "insert")], r.churn_made[0])
    .sample(&[("change", "update")], r.churn_made[1])
    .sample(&[("change", "delete")], r.churn_made[2]);
    let h = &r.metrics_http;
    e.family(
        "pfsyncd_metrics_requests_total",
        Kind::Counter,
        "Requests to the /metrics endpoint: served, refused with a 4xx or 5xx status, or dropped (closed early, an I/O error, too slow to read the answer).",
    )
    .sample(&[("outcome", "served")], h.served)
    .sample(&[("outcome", "refused")], h.refused)
    .sample(&[("outcome", "dropped")], h.dropped);
    e.single(
        "pfsyncd_churn_rate",
        Kind::Gauge,
        "Synthetic changes per second ctl churn is making (memory table).",
        u64::from(r.churn_rate),
    );
    e.single(
        "pfsyncd_churn_target_states",
        Kind::Gauge,
        "States ctl churn keeps around (memory table).",
        r.churn_target,
    );
}

fn peers(e: &mut Exposition, s: &Snapshot<'_>) {
    e.single(
        "pfsyncd_peers",
        Kind::Gauge,
        "Peers heard since the start.",
        s.peers.len() as u64,
    );
    e.single(
        "pfsyncd_untracked_peer_packets_total",
        Kind::Counter,
        "Packets from sources beyond the most peers remembered.",
        s.untracked_peer_packets,
    );
    let addrs: Vec<String> = s.peers.iter().map(|p| p.addr.to_string()).collect();
    let mut f = e.family(
        "pfsyncd_peer_last_heard_timestamp_seconds",
        Kind::Gauge,
        "When a peer was last heard, in seconds since the epoch.",
    );
    for (p, addr) in s.peers.iter().zip(&addrs) {
        // Whole milliseconds: the scrape's own jitter is larger.
        let at = ((s.unix_now - p.last_heard_ago.as_secs_f64()) * 1000.0).round() / 1000.0;
        f.sample(&[("peer", addr)], at);
    }
    let mut f = e.family(
        "pfsyncd_peer_packets_received_total",
        Kind::Counter,
        "Packets received from a peer.",
    );
    for (p, addr) in s.peers.iter().zip(&addrs) {
        f.sample(&[("peer", addr)], p.packets);
    }
    let mut f = e.family(
        "pfsyncd_peer_bytes_received_total",
        Kind::Counter,
        "pfsync payload bytes received from a peer.",
    );
    for (p, addr) in s.peers.iter().zip(&addrs) {
        f.sample(&[("peer", addr)], p.bytes);
    }
    let mut f = e.family(
        "pfsyncd_peer_version",
        Kind::Gauge,
        "The pfsync header version of a peer's latest packet (5: FreeBSD, 6: OpenBSD).",
    );
    for (p, addr) in s.peers.iter().zip(&addrs) {
        f.sample(&[("peer", addr)], u64::from(p.version));
    }
}

fn sessions(e: &mut Exposition, s: &Snapshot<'_>) {
    let addrs: Vec<String> = s.sessions.iter().map(|p| p.addr.to_string()).collect();
    let mut f = e.family(
        "pfsyncd_session_established",
        Kind::Gauge,
        "1 while the extensions are used towards a pfsyncd peer.",
    );
    for (p, addr) in s.sessions.iter().zip(&addrs) {
        f.sample(&[("peer", addr)], p.established);
    }
    for (i, (name, help)) in SESSION_COUNTERS.iter().enumerate() {
        let mut f = e.family(
            &format!("pfsyncd_session_{name}_total"),
            Kind::Counter,
            help,
        );
        for (p, addr) in s.sessions.iter().zip(&addrs) {
            f.sample(&[("peer", addr)], p.counters[i].1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::exposition::validate;
    use crate::metrics::http::ServerCounters;
    use crate::table::TableStats;

    fn snapshot<'a>(stats: &'a Stats, report: &'a ParentReport) -> Snapshot<'a> {
        Snapshot {
            stats,
            report,
            peers: vec![
                PeerSample {
                    addr: "10.0.0.2".parse().unwrap(),
                    last_heard_ago: Duration::from_millis(1500),
                    packets: 7,
                    bytes: 900,
                    version: 5,
                },
                PeerSample {
                    addr: "fe80::2".parse().unwrap(),
                    last_heard_ago: Duration::ZERO,
                    packets: 1,
                    bytes: 100,
                    version: 6,
                },
            ],
            untracked_peer_packets: 3,
            sessions: vec![SessionSample {
                addr: "10.0.0.2".parse().unwrap(),
                established: true,
                counters: SESSION_COUNTERS.map(|(name, _)| (name, 4)),
            }],
            unix_now: 1_700_000_000.0,
            up: true,
            link_open: true,
            syncok: false,
            demoted: true,
            bulk: BulkState::Receiving,
            bulk_sending: false,
            bulk_send_states: 0,
            cached: 12,
            queued: [1, 0, 2, 0, 3],
            version: "1400",
            creatorid: 0xabc,
        }
    }

    fn value(samples: &[(String, f64)], series: &str) -> f64 {
        samples
            .iter()
            .find(|(s, _)| s == series)
            .unwrap_or_else(|| panic!("no series {series}"))
            .1
    }

    #[test]
    fn the_whole_output_keeps_the_format_and_its_conventions() {
        let stats = Stats {
            ipackets: 5,
            badttl: 2,
            stale: 4,
            bulk_last_duration_ms: 1250,
            ..Stats::default()
        };
        let mut report = ParentReport {
            memory_table: true,
            states: 40,
            ..ParentReport::default()
        };
        report.table.invalid = 9;
        report.table.cleared = 6;
        report.edge.refused_zero_id = 1;
        report.metrics_http.refused = 4;
        let text = render(&snapshot(&stats, &report));
        let samples = validate(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(value(&samples, "pfsyncd_pfsync_ipackets_total"), 5.0);
        assert_eq!(value(&samples, "pfsyncd_pfsync_badttl_total"), 2.0);
        assert_eq!(value(&samples, "pfsyncd_pfsync_stale_total"), 4.0);
        assert_eq!(value(&samples, "pfsyncd_table_states"), 40.0);
        assert_eq!(
            value(&samples, "pfsyncd_table_failures_total{reason=\"invalid\"}"),
            9.0
        );
        assert_eq!(
            value(&samples, "pfsyncd_table_removed_total{by=\"clear\"}"),
            6.0
        );
        assert_eq!(
            value(
                &samples,
                "pfsyncd_kernel_edge_total{event=\"refused_zero_id\"}"
            ),
            1.0
        );
        assert_eq!(value(&samples, "pfsyncd_bulk_last_duration_seconds"), 1.25);
        assert_eq!(
            value(
                &samples,
                "pfsyncd_metrics_requests_total{outcome=\"refused\"}"
            ),
            4.0
        );
        assert_eq!(
            value(&samples, "pfsyncd_bulk_request_state{state=\"receiving\"}"),
            1.0
        );
        assert_eq!(
            value(&samples, "pfsyncd_bulk_request_state{state=\"done\"}"),
            0.0
        );
        assert_eq!(
            value(&samples, "pfsyncd_queued_states{queue=\"del_c\"}"),
            3.0
        );
        assert_eq!(
            value(&samples, "pfsyncd_messages_received_total{action=\"16\"}"),
            0.0
        );
        assert_eq!(
            value(
                &samples,
                "pfsyncd_info{version=\"1400\",table=\"memory\",creatorid=\"00000abc\"}"
            ),
            1.0
        );
        assert_eq!(
            value(
                &samples,
                "pfsyncd_peer_last_heard_timestamp_seconds{peer=\"10.0.0.2\"}"
            ),
            1_699_999_998.5
        );
        assert_eq!(
            value(&samples, "pfsyncd_peer_version{peer=\"fe80::2\"}"),
            6.0
        );
        assert_eq!(
            value(
                &samples,
                "pfsyncd_peer_bytes_received_total{peer=\"10.0.0.2\"}"
            ),
            900.0
        );
        assert_eq!(value(&samples, "pfsyncd_untracked_peer_packets_total"), 3.0);
        // Every ctl stats counter of the engine is there, under one name each.
        for (field, _) in stats.pfsyncstats() {
            value(&samples, &format!("pfsyncd_pfsync_{field}_total"));
        }
        for (event, _) in report.edge.named() {
            value(
                &samples,
                &format!("pfsyncd_kernel_edge_total{{event=\"{event}\"}}"),
            );
        }
    }

    /// Every field of the engine's counters, each set to its own value, shows under
    /// its series. The pattern names every field: a counter added to `Stats` fails to
    /// compile here until it is given a series.
    #[test]
    fn every_engine_counter_has_its_series() {
        let mut stats = Stats::default();
        let Stats {
            ipackets,
            ipackets6,
            badif,
            badttl,
            hdrops,
            badver,
            badact,
            badlen,
            badauth,
            badsrc,
            ifname_mapped,
            filtered_out,
            filtered_in,
            delayed,
            delayed_then_deleted,
            delayed_announced,
            digest_forgotten,
            digest_announced,
            digest_unlisted,
            stale,
            badval,
            badstate,
            opackets,
            opackets6,
            onomem,
            oerrors,
            iacts,
            oacts,
            bulk_requests_sent,
            bulk_requests_received,
            bulk_requests_held,
            bulk_sends_completed,
            bulk_requests_coalesced,
            bulk_starts_resent,
            bulk_states_sent,
            compact_batches_received,
            compact_batches_refused,
            bulk_tries,
            bulk_completed,
            bulk_given_up,
            bus_start_received,
            bus_end_received,
            bus_end_stale,
            bulk_last_duration_ms,
            req_overflow,
            ins_duplicate,
            tombstoned,
            rule_unbound,
            cache_full,
            lost_fields,
            session_resync_requests,
        } = &mut stats;
        let fields: Vec<(&mut u64, &str)> = vec![
            (ipackets, "pfsyncd_pfsync_ipackets_total"),
            (ipackets6, "pfsyncd_pfsync_ipackets6_total"),
            (badif, "pfsyncd_pfsync_badif_total"),
            (badttl, "pfsyncd_pfsync_badttl_total"),
            (hdrops, "pfsyncd_pfsync_hdrops_total"),
            (badver, "pfsyncd_pfsync_badver_total"),
            (badact, "pfsyncd_pfsync_badact_total"),
            (badlen, "pfsyncd_pfsync_badlen_total"),
            (badauth, "pfsyncd_pfsync_badauth_total"),
            (badsrc, "pfsyncd_badsrc_total"),
            (ifname_mapped, "pfsyncd_ifname_mapped_total"),
            (filtered_out, "pfsyncd_filtered_out_total"),
            (filtered_in, "pfsyncd_filtered_in_total"),
            (delayed, "pfsyncd_delayed_total"),
            (delayed_announced, "pfsyncd_delayed_announced_total"),
            (delayed_then_deleted, "pfsyncd_delayed_then_deleted_total"),
            (digest_forgotten, "pfsyncd_digest_forgotten_total"),
            (digest_announced, "pfsyncd_digest_announced_total"),
            (digest_unlisted, "pfsyncd_digest_unlisted_total"),
            (stale, "pfsyncd_pfsync_stale_total"),
            (badval, "pfsyncd_pfsync_badval_total"),
            (badstate, "pfsyncd_pfsync_badstate_total"),
            (opackets, "pfsyncd_pfsync_opackets_total"),
            (opackets6, "pfsyncd_pfsync_opackets6_total"),
            (onomem, "pfsyncd_pfsync_onomem_total"),
            (oerrors, "pfsyncd_pfsync_oerrors_total"),
            (bulk_requests_sent, "pfsyncd_bulk_requests_sent_total"),
            (
                bulk_requests_received,
                "pfsyncd_bulk_requests_received_total",
            ),
            (bulk_requests_held, "pfsyncd_bulk_requests_held_total"),
            (bulk_sends_completed, "pfsyncd_bulk_sends_completed_total"),
            (
                bulk_requests_coalesced,
                "pfsyncd_bulk_requests_coalesced_total",
            ),
            (bulk_starts_resent, "pfsyncd_bulk_starts_resent_total"),
            (bulk_states_sent, "pfsyncd_bulk_states_sent_total"),
            (
                compact_batches_received,
                "pfsyncd_compact_batches_received_total",
            ),
            (
                compact_batches_refused,
                "pfsyncd_compact_batches_refused_total",
            ),
            (bulk_tries, "pfsyncd_bulk_request_tries"),
            (bulk_completed, "pfsyncd_bulk_completed_total"),
            (bulk_given_up, "pfsyncd_bulk_given_up_total"),
            (bus_start_received, "pfsyncd_bulk_starts_received_total"),
            (bus_end_received, "pfsyncd_bulk_ends_received_total"),
            (bus_end_stale, "pfsyncd_bulk_ends_refused_total"),
            (req_overflow, "pfsyncd_update_requests_dropped_total"),
            (ins_duplicate, "pfsyncd_inserts_duplicate_total"),
            (tombstoned, "pfsyncd_states_tombstoned_total"),
            (rule_unbound, "pfsyncd_rule_unbound_total"),
            (cache_full, "pfsyncd_cache_full_total"),
            (lost_fields, "pfsyncd_lost_fields_total"),
            (
                session_resync_requests,
                "pfsyncd_session_resync_requests_total",
            ),
        ];
        let mut expected = Vec::new();
        for (i, (field, series)) in fields.into_iter().enumerate() {
            *field = 1000 + i as u64;
            expected.push((series, *field as f64));
        }
        iacts[3] = 7;
        oacts[16] = 9;
        *bulk_last_duration_ms = 2500;
        let report = ParentReport::default();
        let text = render(&snapshot(&stats, &report));
        let samples = validate(&text).unwrap();
        for (series, v) in expected {
            assert_eq!(value(&samples, series), v, "{series}");
        }
        assert_eq!(
            value(&samples, "pfsyncd_messages_received_total{action=\"3\"}"),
            7.0
        );
        assert_eq!(
            value(&samples, "pfsyncd_messages_sent_total{action=\"16\"}"),
            9.0
        );
        assert_eq!(value(&samples, "pfsyncd_bulk_last_duration_seconds"), 2.5);
    }

    /// The same for the parent's report: every field named, each with its own value.
    #[test]
    fn every_counter_of_the_parent_has_its_series() {
        let mut report = ParentReport::default();
        let ParentReport {
            memory_table,
            states,
            table,
            superseded,
            expired,
            own_dropped,
            churn_rate,
            churn_target,
            churn_made,
            edge,
            metrics_http,
            // Histograms of the sync path's hops: `ctl stats` only, no series yet.
            latency: _,
        } = &mut report;
        let TableStats {
            imported,
            updated,
            removed,
            remove_missing,
            cleared,
            exists,
            invalid,
            notfound,
            full,
            unsupported,
            io,
        } = table;
        let ServerCounters {
            served,
            refused,
            dropped,
        } = metrics_http;
        let [inserts, updates, deletes] = churn_made;
        let fields: Vec<(&mut u64, &str)> = vec![
            (states, "pfsyncd_table_states"),
            (superseded, "pfsyncd_table_superseded_total"),
            (expired, "pfsyncd_table_expired_total"),
            (own_dropped, "pfsyncd_own_packets_dropped_total"),
            (churn_target, "pfsyncd_churn_target_states"),
            (inserts, "pfsyncd_churn_changes_total{change=\"insert\"}"),
            (updates, "pfsyncd_churn_changes_total{change=\"update\"}"),
            (deletes, "pfsyncd_churn_changes_total{change=\"delete\"}"),
            (imported, "pfsyncd_table_imported_total"),
            (updated, "pfsyncd_table_updated_total"),
            (removed, "pfsyncd_table_removed_total{by=\"delete\"}"),
            (remove_missing, "pfsyncd_table_delete_missing_total"),
            (cleared, "pfsyncd_table_removed_total{by=\"clear\"}"),
            (exists, "pfsyncd_table_failures_total{reason=\"exists\"}"),
            (invalid, "pfsyncd_table_failures_total{reason=\"invalid\"}"),
            (
                notfound,
                "pfsyncd_table_failures_total{reason=\"notfound\"}",
            ),
            (full, "pfsyncd_table_failures_total{reason=\"full\"}"),
            (
                unsupported,
                "pfsyncd_table_failures_total{reason=\"unsupported\"}",
            ),
            (io, "pfsyncd_table_failures_total{reason=\"io\"}"),
            (served, "pfsyncd_metrics_requests_total{outcome=\"served\"}"),
            (
                refused,
                "pfsyncd_metrics_requests_total{outcome=\"refused\"}",
            ),
            (
                dropped,
                "pfsyncd_metrics_requests_total{outcome=\"dropped\"}",
            ),
        ];
        let mut expected = Vec::new();
        for (i, (field, series)) in fields.into_iter().enumerate() {
            *field = 2000 + i as u64;
            expected.push((series, *field as f64));
        }
        *memory_table = true;
        *churn_rate = 77;
        edge.undecodable = 5;
        let stats = Stats::default();
        let text = render(&snapshot(&stats, &report));
        let samples = validate(&text).unwrap();
        for (series, v) in expected {
            assert_eq!(value(&samples, series), v, "{series}");
        }
        assert_eq!(value(&samples, "pfsyncd_churn_rate"), 77.0);
        assert_eq!(
            value(&samples, "pfsyncd_kernel_edge_total{event=\"undecodable\"}"),
            5.0
        );
        assert!(text.contains("table=\"memory\""));
    }

    #[test]
    fn the_status_part_is_byte_exact() {
        let stats = Stats::default();
        let report = ParentReport::default();
        let mut e = Exposition::new();
        status(&mut e, &snapshot(&stats, &report));
        assert_eq!(
            e.finish(),
            "# HELP pfsyncd_info Always 1: the configured pfsync version, the state table and our creator id.\n\
             # TYPE pfsyncd_info gauge\n\
             pfsyncd_info{version=\"1400\",table=\"pf\",creatorid=\"00000abc\"} 1\n\
             # HELP pfsyncd_up 1 while pfsync is configured up.\n\
             # TYPE pfsyncd_up gauge\n\
             pfsyncd_up 1\n\
             # HELP pfsyncd_link_open 1 while the sync link is open.\n\
             # TYPE pfsyncd_link_open gauge\n\
             pfsyncd_link_open 1\n\
             # HELP pfsyncd_syncok 1 once in sync (the first bulk update done or given up), as ifconfig's syncok.\n\
             # TYPE pfsyncd_syncok gauge\n\
             pfsyncd_syncok 0\n\
             # HELP pfsyncd_carp_demoted 1 while carp is demoted for a pending bulk update.\n\
             # TYPE pfsyncd_carp_demoted gauge\n\
             pfsyncd_carp_demoted 1\n"
        );
    }

    #[test]
    fn no_peers_still_declares_the_peer_families() {
        let stats = Stats::default();
        let report = ParentReport::default();
        let mut s = snapshot(&stats, &report);
        s.peers.clear();
        s.sessions.clear();
        let text = render(&s);
        validate(&text).unwrap();
        assert!(text.contains("# TYPE pfsyncd_peer_packets_received_total counter\n"));
        assert!(text.contains("# TYPE pfsyncd_session_gaps_total counter\n"));
        assert!(!text.contains("peer=\""));
    }

    #[test]
    fn each_session_has_its_series() {
        let stats = Stats::default();
        let report = ParentReport::default();
        let samples = validate(&render(&snapshot(&stats, &report))).unwrap();
        assert_eq!(
            value(&samples, "pfsyncd_session_established{peer=\"10.0.0.2\"}"),
            1.0
        );
        for (name, _) in SESSION_COUNTERS {
            assert_eq!(
                value(
                    &samples,
                    &format!("pfsyncd_session_{name}_total{{peer=\"10.0.0.2\"}}")
                ),
                4.0
            );
        }
    }
}
