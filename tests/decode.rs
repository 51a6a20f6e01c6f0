//! `pfsyncd decode` end to end: the built binary on every shipped capture, in text and
//! JSON, and on hostile files; and the shipped captures are what
//! `examples/make_captures.rs` writes, byte for byte.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

#[allow(dead_code)]
#[path = "../examples/make_captures.rs"]
mod make_captures;

const BIN: &str = env!("CARGO_BIN_EXE_pfsyncd");

fn captures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures")
}

fn capture(name: &str) -> PathBuf {
    captures_dir().join(name)
}

/// A scratch directory of this test binary, cleared for `name`.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("decode")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(BIN).args(args).output().expect("run pfsyncd")
}

fn decode(path: &Path, json: bool) -> Output {
    let mut args = vec!["decode".as_ref(), path.as_os_str()];
    if json {
        args.push("--json".as_ref());
    }
    run(&args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("UTF-8 output")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("UTF-8 errors")
}

/// Decodes a shipped capture as text, expecting success.
fn text_of(name: &str) -> String {
    let o = decode(&capture(name), false);
    assert!(o.status.success(), "{name}: {o:?}");
    assert_eq!(stderr(&o), "", "{name}");
    stdout(&o)
}

/// Decodes a shipped capture as JSON, expecting success and one object per line.
fn json_of(name: &str) -> Vec<Value> {
    let o = decode(&capture(name), true);
    assert!(o.status.success(), "{name}: {o:?}");
    stdout(&o)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: {e}: {line}")))
        .collect()
}

fn shipped() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(captures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn assert_has(text: &str, wanted: &[&str]) {
    for line in wanted {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn shipped_captures_are_reproducible_from_the_code() {
    let dir = scratch("regenerated");
    let generated = make_captures::captures().unwrap();
    let generated_names: BTreeSet<String> = generated.iter().map(|(n, _)| n.to_string()).collect();
    let shipped_names: BTreeSet<String> = shipped().into_iter().collect();
    assert_eq!(
        generated_names, shipped_names,
        "tests/captures/ has stale or missing files"
    );
    for (name, bytes) in generated {
        std::fs::write(dir.join(name), &bytes).unwrap();
        let committed = std::fs::read(capture(name)).unwrap();
        assert!(
            committed == bytes,
            "{name} differs from what make_captures writes; run `cargo run --example make_captures`"
        );
        assert!(bytes.len() < 8 * 1024, "{name} should stay small");
    }
}

#[test]
fn every_capture_decodes_in_both_modes() {
    for name in shipped() {
        let text = text_of(&name);
        let last = text.lines().last().unwrap_or_default();
        assert!(last.starts_with("summary: "), "{name}: {last}");
        let packets = json_of(&name);
        assert!(!packets.is_empty(), "{name}");
        for p in &packets {
            assert!(p["frame"].is_u64(), "{name}: {p}");
            if p.get("layer").is_some() {
                assert!(p["error"].is_string(), "{name}: {p}");
                continue;
            }
            if p.get("header").is_none() {
                // A packet whose header a kernel refuses.
                assert!(
                    p["error"].is_string() && p["counter"].is_string(),
                    "{name}: {p}"
                );
                continue;
            }
            assert!(p["header"]["version"].is_u64(), "{name}: {p}");
            assert!(p["header"]["len"].is_u64(), "{name}: {p}");
            assert_eq!(
                p["header"]["pfcksum"].as_str().map(str::len),
                Some(32),
                "{name}"
            );
            assert!(p["dialect"].is_string(), "{name}: {p}");
            for m in p["messages"].as_array().unwrap() {
                if m.get("error").is_some() {
                    assert!(m["counter"].is_string(), "{name}: {m}");
                    continue;
                }
                let action = m["action"].as_str().unwrap();
                if is_state_action(action) {
                    assert_state_keys(&name, m);
                }
                if ["UPD_C", "DEL_C", "INS_ACK", "UPD_REQ", "BUS", "CLR"].contains(&action) {
                    assert_eq!(
                        m["creatorid"].as_str().map(str::len),
                        Some(8),
                        "{name}: {m}"
                    );
                }
            }
        }
    }
}

/// INS, UPD and DEL in any record format (not INS_ACK, UPD_C, UPD_REQ, DEL_C).
fn is_state_action(action: &str) -> bool {
    matches!(action, "INS" | "UPD" | "DEL")
        || action.starts_with("INS_1")
        || action.starts_with("UPD_1")
}

/// The keys the issue promises, named as the kernel's struct fields.
fn assert_state_keys(name: &str, m: &Value) {
    assert_eq!(m["id"].as_str().map(str::len), Some(16), "{name}: {m}");
    assert_eq!(
        m["creatorid"].as_str().map(str::len),
        Some(8),
        "{name}: {m}"
    );
    assert!(m["ifname"].is_string(), "{name}: {m}");
    let keys = m["key"].as_array().expect("key[]");
    assert_eq!(keys.len(), 2);
    for k in keys {
        assert!(
            k["addr"][0].is_string() && k["addr"][1].is_string(),
            "{name}: {k}"
        );
        assert!(k["port"][0].is_u64(), "{name}: {k}");
    }
    assert!(m["src"]["seqlo"].is_u64(), "{name}: {m}");
    assert!(m["dst"]["seqlo"].is_u64(), "{name}: {m}");
    assert!(m["src"]["scrub"]["scrub_flag"].is_u64(), "{name}: {m}");
    assert!(m["expire"].is_u64(), "{name}: {m}");
    assert!(m["creation"].is_u64(), "{name}: {m}");
    assert!(m["timeout"].is_u64(), "{name}: {m}");
}

fn find<'a>(packets: &'a [Value], action: &str, id: &str) -> &'a Value {
    packets
        .iter()
        .flat_map(|p| p["messages"].as_array().into_iter().flatten())
        .find(|m| m["action"] == action && m["id"] == id)
        .unwrap_or_else(|| panic!("no {action} {id}"))
}

#[test]
fn openbsd_capture() {
    let text = text_of("openbsd-v6.pcap");
    assert_has(
        &text,
        &[
            "12:00:00.000000 10.0.0.2 > 224.0.0.240 ttl 255: PFSYNCv6 len 36 openbsd\n    UPD_REQ bulk update request\n",
            "    BUS creatorid: 0a0b0c0d age: 00:00:00 status: start\n",
            // af 24 read as IPv6.
            "    UPD id: 0000000000001002 creatorid: 0a0b0c0d em1 udp 2001:db8:2::10[40000] -> 2001:db8:1::53[53] out MULTIPLE:SINGLE timeout udp.multiple",
            // NAT: the stack key is shown when it differs.
            "(stack 192.168.1.20:50505 -> 203.0.113.80:80) out ESTABLISHED:ESTABLISHED",
            "    INS id: 0000000000001004 creatorid: 0a0b0c0d em0 tcp 2001:db8:1::22[60022] -> 2001:db8:ffff::1[22] in FIN_WAIT_2:FIN_WAIT_2 timeout tcp.finwait age 00:05:00 expires in 00:00:40",
            "    UPD_C id: 0000000000001001 creatorid: 0a0b0c0d ESTABLISHED:ESTABLISHED timeout tcp.established\n",
            "    DEL_C id: 0000000000001002 creatorid: 0a0b0c0d\n",
            "    INS_ACK id: 0000000000001003 creatorid: 0a0b0c0d\n",
            "    CLR creatorid: 0a0b0c0d interface: em0\n",
            "    TDB spi: 0x12345678 dst: 10.0.0.9 sproto: esp",
            "summary: 9 frames, 8 pfsync (0 malformed), 1 not pfsync, 0 undecodable",
        ],
    );
    let packets = json_of("openbsd-v6.pcap");
    assert_eq!(packets.len(), 8, "the ARP frame makes no line");
    let dns = find(&packets, "UPD", "0000000000001002");
    assert_eq!(dns["af"], 24);
    assert_eq!(dns["key"][0]["addr"][0], "2001:db8:1::53");
    assert_eq!(dns["key"][0]["af"], 24);
    assert_eq!(dns["ifname"], "em1");
    assert_eq!(dns["expire"], 48);
    let nat = find(&packets, "INS", "0000000000001003");
    assert_eq!(nat["key"][1]["addr"][1], "192.168.1.20");
    assert_eq!(nat["src"]["seqlo"], 0x1000_0000);
    assert_eq!(nat["rtableid"], serde_json::json!([0, 0]));
    assert_eq!(packets[0]["ip"]["src"], "10.0.0.2");
    assert_eq!(packets[0]["time"], "2024-01-01T12:00:00.000000Z");
}

#[test]
fn freebsd_captures() {
    let text = text_of("freebsd-1301.pcap");
    assert_has(
        &text,
        &[
            "PFSYNCv5 len 512 1301\n",
            // af 28 read as IPv6.
            "    UPD_1301 id: 65a1000000000002 creatorid: fb5d0001 igb1 tcp 2001:db8:100::10[49152] -> 2001:db8:200::20[443] in ESTABLISHED:ESTABLISHED",
            "    BUS creatorid: fb5d0001 age: 00:00:01 status: end\n    EOF\n",
            "    INS_1301 id: 65a1000000000003 creatorid: fb5d0001 igb0 icmp",
            "    CLR creatorid: fb5d0001 interface: (all)\n",
        ],
    );
    let packets = json_of("freebsd-1301.pcap");
    let https = find(&packets, "UPD_1301", "65a1000000000002");
    assert_eq!(https["af"], 28);
    assert_eq!(https["key"][0]["addr"][1], "2001:db8:200::20");
    assert_eq!(https["state_flags"], 0x10);

    let text = text_of("freebsd-1400.pcapng");
    assert_has(
        &text,
        &[
            "12:00:20.000000 fd2c::2 > ff12::f0 ttl 255: PFSYNCv5 len 305 1400\n",
            "route-to 2001:db8:b::fe@vtnet1",
            "rule 9 rtable 2\n",
            // Interface 1 is pfsync0: no IP, nanosecond time stamps.
            "12:00:21.123456789 PFSYNCv5 len 128 freebsd\n",
            // A simple packet block has no time; the hop-by-hop header is skipped.
            "\nfd2c::2 > ff12::f0 ttl 255: PFSYNCv5 len 40 freebsd\n    UPD_REQ bulk update request\n",
            // Interface 2 is OpenBSD-style loopback.
            "12:00:22.000000 127.0.0.1 > 224.0.0.240 ttl 255: PFSYNCv5 len 40 freebsd\n    BUS creatorid: fb5d0002",
            "summary: 5 frames, 5 pfsync (0 malformed)",
        ],
    );
    let packets = json_of("freebsd-1400.pcapng");
    let routed = find(&packets, "INS_1400", "6600000000000001");
    assert_eq!(routed["rt_ifname"], "vtnet1");
    assert_eq!(routed["rt_addr"], "2001:db8:b::fe");
    assert_eq!(routed["rtableid"], -1);
    assert!(packets[3].get("time").is_none(), "simple packet block");

    let text = text_of("freebsd-1500-pfsync0.pcap");
    assert_has(
        &text,
        &[
            "12:00:30.000000001 PFSYNCv5 len 748 1500 cksum 5e1f0c7d123456789abcdef001234567\n",
            "all icmp6 2001:db8:64::5[119] -> 64:ff9b::c000:221[119] (stack icmp 192.0.2.33:119 -> 198.51.100.64:119) in",
            "route-to 198.51.100.1@igb2 tag nat64 origif igb1\n",
            "igb0 sctp 10.30.0.1:2905 -> 10.20.0.1:2905 out 4:4 timeout sctp.established",
            "    BUS creatorid: fb5d0001 age: 00:00:05 status: end\n",
        ],
    );
    let packets = json_of("freebsd-1500-pfsync0.pcap");
    assert!(
        packets[0].get("ip").is_none(),
        "pfsync0 frames have no IP header"
    );
    let nat64 = find(&packets, "INS_1500", "6700000000000001");
    assert_eq!(nat64["wire_af"], 28);
    assert_eq!(nat64["stack_af"], 2);
    assert_eq!(nat64["key"][0]["addr"][0], "2001:db8:64::5");
    assert_eq!(nat64["key"][1]["addr"][0], "192.0.2.33");
    assert_eq!(nat64["tagname"], "nat64");
    assert_eq!(nat64["orig_ifname"], "igb1");
    let sctp = find(&packets, "INS_1500", "6700000000000002");
    assert_eq!(sctp["src"]["scrub"]["pfss_ts_mod"], 0xfeed_f00d_u32);
    assert_eq!(
        packets[0]["header"]["pfcksum"],
        "5e1f0c7d123456789abcdef001234567"
    );
}

#[test]
fn other_link_types() {
    let text = text_of("raw-ip.pcap");
    assert_has(
        &text,
        &[
            "12:00:40.000000 10.0.0.1 > 224.0.0.240 ttl 255: PFSYNCv6 len 288 openbsd\n",
            "12:00:41.000000 fd2c::1 > fd2c::2 ttl 255: PFSYNCv5 len 40 freebsd\n    DEL_C id: 6600000000000009",
            "summary: 3 frames, 2 pfsync (0 malformed), 1 not pfsync, 0 undecodable",
        ],
    );
    let text = text_of("loopback.pcap");
    assert_has(
        &text,
        &[
            "12:00:50.000000 127.0.0.1 > 224.0.0.240 ttl 255: PFSYNCv6 len 36 openbsd\n",
            "12:00:51.000000 127.0.0.1 > 224.0.0.240 ttl 255: PFSYNCv5 len 40 freebsd\n",
            "12:00:52.000000 ::1 > ::1 ttl 255: PFSYNCv6 len 36 openbsd\n",
            "12:00:53.000000 ::1 > ::1 ttl 255: PFSYNCv5",
            "12:00:54.000000 ::1 > ::1 ttl 255: PFSYNCv5",
            "summary: 6 frames, 5 pfsync (0 malformed), 1 not pfsync, 0 undecodable",
        ],
    );
}

#[test]
fn hostile_packets_print_their_error_and_counter_and_decoding_goes_on() {
    let text = text_of("hostile.pcap");
    assert_has(
        &text,
        &[
            "PFSYNC (10 bytes)\n    error: packet of 10 bytes is shorter than the pfsync header (20 bytes) (counter hdrops)\n",
            "    error: header version 4 is neither 5 (FreeBSD) nor 6 (OpenBSD) (counter badver)\n",
            "    error: header len: need 144 bytes, have 44 (counter badlen)\n",
            "    DEL_C id: 0bad000000000001 creatorid: 0bad0bad\n    error: unknown action 20 (counter badact)\n",
            // badval skips one record; the next is read.
            "    error: bad value 99 for timeout (counter badval)\n    INS id: 0000000000001003",
            "    error: bad value 10 for af (counter badval)\n    EOF\n",
            "    skipped action 16 count 2 (24 bytes)\n    CLR creatorid: 1a2b3c4d interface: em1\n",
            "    error: action 17: subheader gives record size 0 bytes and count 1 (counter badact)\n",
            "is not at the end of the packet (48 bytes) (counter badlen)\n",
            "    error: action 6 (DEL) is not supported by this dialect (counter badact)\n",
            "    error: records: need 60 bytes, have 16 (counter badlen)\n",
            "10.66.0.1 > 224.0.0.240 ttl 64 (badttl): PFSYNCv6 len 36 openbsd\n",
            "frame 13: error: IPv4 header length 16 bytes is below 20\n",
            "frame 14: error: IPv4 fragment of a pfsync packet at offset 0, more follow\n",
            "frame 15: error: truncated Ethernet header: need 14 bytes, have 10\n",
            "summary: 18 frames, 12 pfsync (10 malformed), 3 not pfsync, 3 undecodable\n",
        ],
    );
    let packets = json_of("hostile.pcap");
    assert_eq!(
        packets.len(),
        15,
        "one line per pfsync packet or broken frame"
    );
    assert_eq!(packets[0]["counter"], "hdrops");
    assert_eq!(packets[1]["counter"], "badver");
    let badval = &packets[4]["messages"];
    assert_eq!(badval[0]["counter"], "badval");
    assert_eq!(badval[0]["error"], "bad value 99 for timeout");
    assert_eq!(badval[1]["action"], "INS");
    assert_eq!(packets[6]["messages"][0]["skipped"], true);
    assert_eq!(packets[12]["layer"], "link");
}

/// Runs the binary on `bytes` written to a file and expects it to fail cleanly: no
/// panic, exit status 1, exactly one line on stderr.
fn expect_clean_failure(name: &str, bytes: &[u8]) -> Output {
    let path = scratch(name).join("input");
    std::fs::write(&path, bytes).unwrap();
    for json in [false, true] {
        let o = decode(&path, json);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name} (json {json}): {err}");
        assert_eq!(err.lines().count(), 1, "{name} (json {json}): {err}");
        assert!(err.starts_with("pfsyncd: "), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    decode(&path, false)
}

#[test]
fn random_bytes_are_not_a_capture() {
    // A fixed xorshift sequence, so a failure can be reproduced.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let o = expect_clean_failure("random", &bytes);
    assert!(
        stderr(&o).contains("not a pcap or pcapng file"),
        "{}",
        stderr(&o)
    );
    expect_clean_failure("empty", b"");
}

#[test]
fn a_truncated_capture_prints_what_it_could_then_one_error() {
    let whole = std::fs::read(capture("openbsd-v6.pcap")).unwrap();
    let o = expect_clean_failure("truncated", &whole[..whole.len() - 30]);
    let out = stdout(&o);
    assert!(
        out.contains("CLR creatorid: 0a0b0c0d interface: em0"),
        "{out}"
    );
    assert!(!out.contains("TDB"), "{out}");
    let err = stderr(&o);
    assert!(err.contains("after 8 frames"), "{err}");
    assert!(err.contains("truncated pcap record"), "{err}");
    // Cut inside the file header.
    expect_clean_failure("header", &whole[..20]);
}

#[test]
fn a_huge_record_length_is_refused_without_allocating_it() {
    let mut bytes = std::fs::read(capture("raw-ip.pcap")).unwrap();
    // The first record's incl_len, little-endian.
    bytes[24 + 8..24 + 12].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    let o = expect_clean_failure("huge", &bytes);
    assert!(
        stderr(&o).contains("exceeds the 262144-byte limit"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_bogus_pcapng_block_length_is_refused() {
    let whole = std::fs::read(capture("freebsd-1400.pcapng")).unwrap();
    // The second block (the first interface description) starts after the 28-byte
    // section header; give it a length that is not a multiple of 4.
    let mut odd = whole.clone();
    odd[28 + 4..28 + 8].copy_from_slice(&21u32.to_le_bytes());
    let o = expect_clean_failure("pcapng-odd", &odd);
    assert!(stderr(&o).contains("not a multiple of 4"), "{}", stderr(&o));
    // A length far past the end of the file.
    let mut long = whole.clone();
    long[28 + 4..28 + 8].copy_from_slice(&0x00ff_fff0u32.to_le_bytes());
    let o = expect_clean_failure("pcapng-long", &long);
    assert!(
        stderr(&o).contains("exceeds the 1048576-byte limit"),
        "{}",
        stderr(&o)
    );
    // The trailing copy of a block length disagreeing with the leading one.
    let mut mismatch = whole;
    mismatch[24..28].copy_from_slice(&32u32.to_le_bytes());
    let o = expect_clean_failure("pcapng-mismatch", &mismatch);
    assert!(stderr(&o).contains("trailing length"), "{}", stderr(&o));
}

#[test]
fn unreadable_files_and_usage_errors() {
    let o = decode(Path::new("/nonexistent/capture.pcap"), false);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).trim_end(),
        "pfsyncd: cannot open /nonexistent/capture.pcap: No such file or directory (os error 2)"
    );
    let o = decode(&captures_dir(), false);
    assert_eq!(o.status.code(), Some(1), "a directory");
    assert_eq!(stderr(&o).lines().count(), 1);
    for args in [
        &["decode"][..],
        &["decode", "a", "b"],
        &["frobnicate"],
        &[],
        &["decode", "--yaml", "x"],
    ] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let o = run(&args);
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", stderr(&o));
    }
    let o = run(&["--help".as_ref()]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("decode"));
}

#[test]
fn standard_input_is_read_with_a_dash() {
    let bytes = std::fs::read(capture("raw-ip.pcap")).unwrap();
    let mut child = Command::new(BIN)
        .args(["decode", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert!(stdout(&o).contains("fd2c::1 > fd2c::2 ttl 255"));
}
