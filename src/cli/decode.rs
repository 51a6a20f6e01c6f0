//! `pfsyncd decode FILE [--json]`: every pfsync packet of a capture, one tcpdump-style
//! block of lines or one JSON object per packet.
//!
//! Frames that are not pfsync (not IP, or another IP protocol) are skipped quietly and
//! counted. A malformed pfsync packet, or a frame whose IP header is broken, prints its
//! error and decoding goes on. A capture file that cannot be read further ends decoding
//! after what could be printed, with one error line on stderr and exit status 1.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use pfsyncd::capture::{decapsulate, CaptureError, CaptureReader, Frame, LinkError, Network};
use pfsyncd::wire::pretty::{self, Envelope, IpEnvelope, Prefix};
use pfsyncd::wire::PacketReader;

/// Arguments of `decode`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A pcap or pcapng file, or `-` for standard input.
    pub file: PathBuf,
    /// Print one JSON object per packet (one line each) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What was seen, for the closing summary.
#[derive(Debug, Default)]
struct Tally {
    frames: u64,
    pfsync: u64,
    malformed: u64,
    not_pfsync: u64,
    undecodable: u64,
    /// Link types already reported as unsupported (reported once each).
    unsupported: BTreeSet<u32>,
}

/// Runs `decode`.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let name = args.file.display().to_string();
    let input: Box<dyn Read> = if args.file.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(&args.file).with_context(|| format!("cannot open {name}"))?)
    };
    let mut capture = CaptureReader::new(BufReader::new(input)).with_context(|| name.clone())?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut tally = Tally::default();
    let end = loop {
        match capture.next_frame() {
            Ok(Some(frame)) => decode_frame(&mut out, &frame, args.json, &mut tally)?,
            Ok(None) => break Ok(()),
            Err(e) if e.is_recoverable() => {
                tally.undecodable += 1;
                report_capture_error(&mut out, &e, args.json)?;
            }
            Err(e) => break Err(e),
        }
    };
    if !args.json {
        writeln!(
            out,
            "summary: {} frames, {} pfsync ({} malformed), {} not pfsync, {} undecodable",
            tally.frames, tally.pfsync, tally.malformed, tally.not_pfsync, tally.undecodable
        )?;
    }
    out.flush()?;
    end.with_context(|| format!("{name}: after {} frames", tally.frames))?;
    Ok(ExitCode::SUCCESS)
}

fn decode_frame(
    out: &mut impl Write,
    frame: &Frame<'_>,
    json: bool,
    tally: &mut Tally,
) -> io::Result<()> {
    tally.frames += 1;
    let mut envelope = Envelope {
        frame: Some(frame.number),
        time: frame.time,
        ip: None,
    };
    let network = match decapsulate(frame.link_type, frame.data) {
        Ok(network) => network,
        Err(e) if e.is_not_ip() => {
            tally.not_pfsync += 1;
            return Ok(());
        }
        Err(e @ LinkError::UnsupportedLinkType(link_type)) => {
            tally.undecodable += 1;
            // Every frame of that interface would say the same.
            if tally.unsupported.insert(link_type) {
                report_link_error(out, &envelope, &e, json)?;
            }
            return Ok(());
        }
        Err(e) => {
            tally.undecodable += 1;
            return report_link_error(out, &envelope, &e, json);
        }
    };
    let Some(payload) = network.pfsync_payload() else {
        tally.not_pfsync += 1;
        return Ok(());
    };
    if let Network::Ip(ip) = network {
        envelope.ip = Some(IpEnvelope {
            src: ip.src,
            dst: ip.dst,
            ttl: ip.ttl,
        });
    }
    tally.pfsync += 1;
    if is_malformed(payload) {
        tally.malformed += 1;
    }
    if json {
        serde_json::to_writer(&mut *out, &pretty::json(&envelope, payload))?;
        writeln!(out)
    } else {
        writeln!(out, "{}", pretty::text(&envelope, payload))
    }
}

/// True if a receiving kernel would count an error for this packet.
fn is_malformed(payload: &[u8]) -> bool {
    match PacketReader::new(payload) {
        Ok(reader) => reader.items().any(|item| item.is_err()),
        Err(_) => true,
    }
}

fn report_link_error(
    out: &mut impl Write,
    envelope: &Envelope,
    error: &LinkError,
    json: bool,
) -> io::Result<()> {
    if json {
        let mut object = pretty::envelope_json(envelope);
        object.insert("error".into(), error.to_string().into());
        object.insert("layer".into(), "link".into());
        serde_json::to_writer(&mut *out, &object)?;
        writeln!(out)
    } else {
        let frame = envelope.frame.unwrap_or_default();
        writeln!(out, "{}frame {frame}: error: {error}", Prefix(envelope))
    }
}

fn report_capture_error(out: &mut impl Write, error: &CaptureError, json: bool) -> io::Result<()> {
    if json {
        let object = serde_json::json!({"error": error.to_string(), "layer": "capture"});
        serde_json::to_writer(&mut *out, &object)?;
        writeln!(out)
    } else {
        writeln!(out, "error: {error}")
    }
}
