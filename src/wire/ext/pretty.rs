//! Extension frames as text and JSON, for `pfsyncd decode` and capture tools: one line
//! per frame, `PFSYNCD <KIND> creator <id> boot <id>` then the body's fields.

use core::fmt::{self, Display, Formatter};

use serde_json::{json, Value};

use super::{Body, FrameRepr, SeqRanges};

/// A frame (or why it is not one) as one line, without a newline.
#[derive(Debug, Clone, Copy)]
pub struct FrameText<'a>(pub &'a [u8]);

impl Display for FrameText<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let frame = match FrameRepr::parse(self.0) {
            Ok(frame) => frame,
            Err(e) => return write!(f, "PFSYNCD ({} bytes): {e}", self.0.len()),
        };
        write!(
            f,
            "PFSYNCD {} creator {:08x} boot {:016x}",
            frame.body.kind().name(),
            frame.sender.creator,
            frame.sender.boot
        )?;
        match &frame.body {
            Body::Hello(h) | Body::HelloAck(h) => write!(
                f,
                " features {:#x} mtu {} next seq {}",
                h.features, h.mtu, h.next_seq
            ),
            Body::Data(d) => write!(f, " seq {} pfsync {} bytes", d.seq, d.packet.len()),
            Body::Nack(r) | Body::Gone(r) => write!(f, " {}", Ranges(r)),
            Body::Ack(a) => write!(f, " sent {} received {}", a.highest_sent, a.received),
            Body::Digest(d) => write!(
                f,
                " round {} buckets {}..{} of {} as of {}",
                d.round,
                d.first,
                usize::from(d.first) + d.sums.len(),
                d.buckets,
                d.as_of
            ),
            Body::DigestReq(r) => write!(f, " round {} buckets {:?}", r.round, r.buckets),
            Body::Ids(i) => write!(
                f,
                " round {} bucket {} part {}/{} as of {} ids {}",
                i.round,
                i.bucket,
                i.part + 1,
                i.parts,
                i.as_of,
                i.ids.len()
            ),
            Body::Need(n) => write!(f, " ids {:?}", n.ids),
            Body::Resync => Ok(()),
            Body::BulkSize(b) => write!(f, " states {}", b.states),
        }
    }
}

struct Ranges<'a>(&'a SeqRanges);

impl Display for Ranges<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.ranges.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            if r.count == 1 {
                write!(f, "{sep}{}", r.start)?;
            } else {
                write!(f, "{sep}{}-{}", r.start, r.end() - 1)?;
            }
        }
        Ok(())
    }
}

/// A frame as a JSON object: `kind`, `creator`, `boot` and the body's fields, or
/// `error`.
pub fn frame_json(bytes: &[u8]) -> Value {
    let frame = match FrameRepr::parse(bytes) {
        Ok(frame) => frame,
        Err(e) => return json!({"ext": true, "len": bytes.len(), "error": e.to_string()}),
    };
    let body = match &frame.body {
        Body::Hello(h) | Body::HelloAck(h) => {
            json!({"features": h.features, "mtu": h.mtu, "next_seq": h.next_seq})
        }
        Body::Data(d) => json!({"seq": d.seq, "pfsync_len": d.packet.len()}),
        Body::Nack(r) | Body::Gone(r) => json!({"ranges": r
            .ranges
            .iter()
            .map(|r| json!({"start": r.start, "count": r.count}))
            .collect::<Vec<_>>()}),
        Body::Ack(a) => json!({"highest_sent": a.highest_sent, "received": a.received}),
        Body::Digest(d) => json!({"round": d.round, "buckets": d.buckets, "first": d.first,
            "as_of": d.as_of, "sums": d.sums.iter().map(|s| json!([s.xor, s.count])).collect::<Vec<_>>()}),
        Body::DigestReq(r) => json!({"round": r.round, "buckets": r.buckets}),
        Body::Ids(i) => json!({"round": i.round, "bucket": i.bucket, "part": i.part,
            "parts": i.parts, "as_of": i.as_of,
            "ids": i.ids.iter().map(|l| json!([l.id, l.version])).collect::<Vec<_>>()}),
        Body::Need(n) => json!({"ids": n.ids}),
        Body::Resync => json!({}),
        Body::BulkSize(b) => json!({"states": b.states}),
    };
    json!({
        "ext": true,
        "kind": frame.body.kind().name(),
        "creator": frame.sender.creator,
        "boot": frame.sender.boot,
        "body": body,
    })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn nack_prints_its_ranges() {
        let frame: [u8; 44] = [
            0xc5, 0x04, 0x00, 0x2c, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0x00, 0x02, 0x00, 0x00, 0,
            0, 0, 0, 0, 0, 0, 10, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 20, 0, 0, 0, 1,
        ];
        assert_eq!(
            FrameText(&frame).to_string(),
            "PFSYNCD NACK creator 00000002 boot 0000000000000003 10-12,20"
        );
        assert_eq!(frame_json(&frame)["body"]["ranges"][1]["start"], 20);
        assert!(FrameText(&frame[..10]).to_string().contains("shorter"));
    }

    #[test]
    fn bulk_size_prints_its_count() {
        let frame: [u8; 24] = [
            0xc5, 0x0c, 0x00, 0x18, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0x30,
            0x39,
        ];
        assert_eq!(
            FrameText(&frame).to_string(),
            "PFSYNCD BULK_SIZE creator 00000002 boot 0000000000000003 states 12345"
        );
        assert_eq!(frame_json(&frame)["body"]["states"], 12345);
        assert_eq!(frame_json(&frame)["kind"], "BULK_SIZE");
    }
}
