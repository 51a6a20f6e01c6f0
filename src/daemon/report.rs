//! What `pfsyncd ctl` prints: states in `pfctl -ss -v` words, and JSON for programs.
//!
//! The JSON of a state holds what pfsync synchronises (keys, peers with their sequence
//! windows, timeout class, flags, rule, route) and, apart, what it does not (`packets`,
//! `bytes`, `expire`: each node counts its own traffic and keeps its own clock), so that
//! a test or monitor can compare replicas on the synchronised part alone.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde_json::{json, Value};

use crate::state::{Peer, PeerState, Protocol, State, StateKey, TcpState};

/// pfctl's name of a TCP state (`tcpstates[]` in pf's headers).
pub fn tcp_state_name(s: TcpState) -> &'static str {
    match s {
        TcpState::Closed => "CLOSED",
        TcpState::Listen => "LISTEN",
        TcpState::SynSent => "SYN_SENT",
        TcpState::SynReceived => "SYN_RCVD",
        TcpState::Established => "ESTABLISHED",
        TcpState::CloseWait => "CLOSE_WAIT",
        TcpState::FinWait1 => "FIN_WAIT_1",
        TcpState::Closing => "CLOSING",
        TcpState::LastAck => "LAST_ACK",
        TcpState::FinWait2 => "FIN_WAIT_2",
        TcpState::TimeWait => "TIME_WAIT",
        TcpState::ProxySrc => "PROXY:SRC",
        TcpState::ProxyDst => "PROXY:DST",
    }
}

/// pfctl's name of a peer's state.
pub fn peer_state_name(s: PeerState) -> String {
    match s {
        PeerState::Tcp(t) => tcp_state_name(t).to_string(),
        PeerState::Level(l) => match l.get() {
            0 => "NO_TRAFFIC".to_string(),
            1 => "SINGLE".to_string(),
            2 => "MULTIPLE".to_string(),
            n => n.to_string(),
        },
    }
}

/// pfctl's name of a protocol.
pub fn protocol_name(p: Protocol) -> String {
    match p {
        Protocol::Icmp => "icmp".into(),
        Protocol::Tcp => "tcp".into(),
        Protocol::Udp => "udp".into(),
        Protocol::Icmpv6 => "ipv6-icmp".into(),
        Protocol::Sctp => "sctp".into(),
        Protocol::Other(n) => n.to_string(),
    }
}

fn endpoint(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("{a}[{port}]"),
    }
}

/// One state as `pfctl -ss` prints it, with the id and creator `-v` adds and the
/// counters.
pub fn state_line(s: &State) -> String {
    let k = &s.wire;
    // pfctl prints the state from the firewall's point of view: `->` for outbound
    // states, `<-` for inbound, with the key's addresses in the same order.
    let arrow = match s.direction {
        crate::state::Direction::Out => "->",
        _ => "<-",
    };
    let mut line = format!(
        "{} {} {} {arrow} {}       {}:{}",
        if s.ifname.is_empty() {
            "all".to_string()
        } else {
            s.ifname.to_string()
        },
        protocol_name(k.proto),
        endpoint(k.addr[1], k.port[1]),
        endpoint(k.addr[0], k.port[0]),
        peer_state_name(s.src.state),
        peer_state_name(s.dst.state),
    );
    let _ = write!(
        line,
        "\n   id: {:016x} creatorid: {:08x} expires in {} s, {}:{} pkts, {}:{} bytes",
        s.id, s.creatorid, s.expire_secs, s.packets[0], s.packets[1], s.bytes[0], s.bytes[1]
    );
    line
}

fn key_json(k: &StateKey) -> Value {
    json!({
        "af": if k.addr[0].is_ipv6() { "inet6" } else { "inet" },
        "proto": k.proto.number(),
        "addr": [k.addr[0].to_string(), k.addr[1].to_string()],
        "port": k.port,
        "rdomain": k.rdomain,
    })
}

fn peer_json(p: &Peer) -> Value {
    json!({
        "state": peer_state_name(p.state),
        "seqlo": p.seqlo,
        "seqhi": p.seqhi,
        "seqdiff": p.seqdiff,
        "max_win": p.max_win,
        "mss": p.mss,
        "wscale": p.wscale,
        "scrub": p.scrub.is_some(),
    })
}

/// One state as JSON: `sync` holds what pfsync carries between nodes, `local` what each
/// node keeps for itself.
pub fn state_json(s: &State) -> Value {
    json!({
        "creatorid": format!("{:08x}", s.creatorid),
        "id": format!("{:016x}", s.id),
        "sync": {
            "ifname": s.ifname.to_string(),
            "direction": s.direction.number(),
            "wire": key_json(&s.wire),
            "stack": key_json(&s.stack),
            "src": peer_json(&s.src),
            "dst": peer_json(&s.dst),
            "timeout": s.timeout as u8,
            "state_flags": s.state_flags.bits(),
            "rule": s.rule,
            "rt": format!("{:?}", s.rt),
            "rt_addr": s.rt_addr.map(|a| a.to_string()),
            "rtableid": s.rtableid,
        },
        "local": {
            "expire": s.expire_secs,
            "age": s.age_secs,
            "packets": s.packets,
            "bytes": s.bytes,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{AddressFamily, PeerLevel};

    #[test]
    fn a_tcp_state_reads_like_pfctl() {
        let mut s = State {
            id: 0x10,
            creatorid: 0xabcd,
            ..State::default()
        };
        s.wire.addr = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        s.wire.port = [1234, 80];
        s.src.state = PeerState::Tcp(TcpState::Established);
        s.dst.state = PeerState::Tcp(TcpState::FinWait2);
        let line = state_line(&s);
        assert!(
            line.starts_with("all tcp 10.0.0.2:80 <- 10.0.0.1:1234"),
            "{line}"
        );
        assert!(line.contains("ESTABLISHED:FIN_WAIT_2"), "{line}");
        assert!(line.contains("id: 0000000000000010 creatorid: 0000abcd"));
    }

    #[test]
    fn json_separates_what_is_synced() {
        let mut s = State::default();
        s.wire.af = AddressFamily::Inet;
        s.src.state = PeerState::Level(PeerLevel::MULTIPLE);
        let v = state_json(&s);
        assert_eq!(v["sync"]["src"]["state"], "MULTIPLE");
        assert_eq!(v["local"]["packets"], json!([0, 0]));
    }
}
