//! DATA: one whole pfsync packet, as the engine built it, or one compact record batch of
//! a bulk update, under a per-sender sequence number. The content is opaque here; the
//! receiver hands it to its engine.
//!
//! ```text
//!  0                               8
//! +-------------------------------+---------------------------------
//! | seq (BE64)                    | pfsync packet (header, subheaders, records) ...
//! +-------------------------------+---------------------------------
//! | seq (BE64)                    | 0xC6 | 0, or 1 + ruleset checksum (16) | compact batch
//! +-------------------------------+---------------------------------
//!                                   (the batch: `state::compact_record`)
//! +-------------------------------+---------------------------------
//! ```
//!
//! The content's first byte tells the two apart: a pfsync packet starts with its header
//! version (4–6 for every kernel), a batch with [`COMPACT_BATCH`]. Both share the
//! sender's one sequence space, so loss recovery (NACK, resend, GONE) covers both alike.

use super::{Error, Result};

/// Bytes before the pfsync packet.
pub const SIZE: usize = 8;

/// First byte of a DATA content that is a compact record batch (no pfsync header
/// version is this; the batch follows it).
pub const COMPACT_BATCH: u8 = 0xC6;

/// What a DATA frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content<'a> {
    /// A pfsync packet, for the engine's packet input.
    Pfsync(&'a [u8]),
    /// A compact record batch, and the ruleset checksum under which the sender vouches
    /// for its states' rule numbers (as a FreeBSD header's checksum does; `None`: not
    /// vouched, as OpenBSD never does).
    CompactBatch {
        ruleset: Option<[u8; RULESET_BYTES]>,
        batch: &'a [u8],
    },
    /// [`COMPACT_BATCH`] followed by a head that is not one (counted, dropped).
    BadCompact,
}

/// Bytes of the ruleset checksum in a compact batch's head.
pub const RULESET_BYTES: usize = 16;

impl<'a> Content<'a> {
    /// What the DATA content `packet` is: after [`COMPACT_BATCH`], a byte saying
    /// whether a ruleset checksum follows (0 or 1), the checksum if so, then the batch.
    pub fn of(packet: &'a [u8]) -> Content<'a> {
        let Some((&COMPACT_BATCH, rest)) = packet.split_first() else {
            return Content::Pfsync(packet);
        };
        match rest.split_first() {
            Some((0, batch)) => Content::CompactBatch {
                ruleset: None,
                batch,
            },
            Some((1, rest)) if rest.len() >= RULESET_BYTES => {
                let (sum, batch) = rest.split_at(RULESET_BYTES);
                Content::CompactBatch {
                    ruleset: Some(sum.try_into().expect("16 bytes")),
                    batch,
                }
            }
            _ => Content::BadCompact,
        }
    }
}

/// Bytes of the head [`compact_batch_content`] puts before a batch: [`COMPACT_BATCH`],
/// the flag, and the ruleset checksum when the batch is `vouched` for.
pub fn compact_batch_head_len(vouched: bool) -> usize {
    2 + if vouched { RULESET_BYTES } else { 0 }
}

/// The DATA content carrying compact record batch `batch`, its rule numbers vouched
/// for under `ruleset` if given.
pub fn compact_batch_content(ruleset: Option<[u8; RULESET_BYTES]>, batch: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(2 + RULESET_BYTES + batch.len());
    push_compact_batch_head(&mut content, ruleset);
    content.extend_from_slice(batch);
    content
}

/// Appends the head of a DATA content carrying a compact record batch (see
/// [`compact_batch_content`]): the batch written behind it makes the content.
pub fn push_compact_batch_head(out: &mut Vec<u8>, ruleset: Option<[u8; RULESET_BYTES]>) {
    out.push(COMPACT_BATCH);
    match ruleset {
        Some(sum) => {
            out.push(1);
            out.extend_from_slice(&sum);
        }
        None => out.push(0),
    }
}

/// DATA body: a sequence number and the pfsync packet it numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRepr<'a> {
    /// Per-sender sequence number, from 1, one per DATA whatever its addressee.
    pub seq: u64,
    /// The pfsync packet.
    pub packet: &'a [u8],
}

impl<'a> DataRepr<'a> {
    /// What the frame carries.
    pub fn content(&self) -> Content<'a> {
        Content::of(self.packet)
    }

    /// Parses a DATA body; an empty packet is refused (the sender never numbers one).
    pub fn parse(body: &'a [u8]) -> Result<DataRepr<'a>> {
        if body.len() <= SIZE {
            return Err(Error::BadBody {
                kind: "DATA",
                need: SIZE + 1,
                have: body.len(),
            });
        }
        let seq = u64::from_be_bytes(body[..SIZE].try_into().expect("8 bytes"));
        if seq == 0 {
            return Err(Error::BadValue {
                kind: "DATA",
                field: "seq",
                value: 0,
            });
        }
        Ok(DataRepr {
            seq,
            packet: &body[SIZE..],
        })
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        SIZE + self.packet.len()
    }

    /// Writes the body into exactly `buffer_len()` bytes.
    pub fn emit(&self, out: &mut [u8]) {
        out[..SIZE].copy_from_slice(&self.seq.to_be_bytes());
        out[SIZE..].copy_from_slice(self.packet);
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::ext::{Body, FrameRepr, Sender, DATA_OVERHEAD};

    static FRAME: [u8; 28] = [
        0xc5, 0x03, 0x00, 0x1c, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, // header
        0, 0, 0, 0, 0, 0, 0x10, 0x01, // seq 4097
        0x06, 0x00, 0x00, 0x04, // pfsync bytes (opaque here)
    ];

    #[test]
    fn parse_and_emit() {
        let frame = FrameRepr::parse(&FRAME).unwrap();
        assert_eq!(
            frame,
            FrameRepr {
                sender: Sender {
                    creator: 7,
                    boot: 1
                },
                body: Body::Data(DataRepr {
                    seq: 4097,
                    packet: &[6, 0, 0, 4]
                }),
            }
        );
        assert_eq!(frame.buffer_len() - 4, DATA_OVERHEAD);
        let mut buf = [0xa5u8; 28];
        frame.emit(&mut buf);
        assert_eq!(buf, FRAME);
    }

    /// A compact batch of one state (id 1, creator 2, everything else default) under
    /// seq 5, its rule numbers vouched for under checksum 0x11 * 16: the head written
    /// out by hand, to pin the content flag.
    static BATCH_FRAME: [u8; 24 + 2 + 16] = [
        0xc5,
        0x03,
        0x00,
        0x00,
        0,
        0,
        0,
        7,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        1, // header (length below)
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        5,             // seq 5
        COMPACT_BATCH, // content flag
        1,             // a ruleset checksum follows
        0x11,
        0x11,
        0x11,
        0x11,
        0x11,
        0x11,
        0x11,
        0x11, //
        0x11,
        0x11,
        0x11,
        0x11,
        0x11,
        0x11,
        0x11,
        0x11, // checksum; the batch follows
    ];

    #[test]
    fn a_compact_batch_is_told_from_a_pfsync_packet() {
        use crate::state::{compact_record, State};
        let state = State {
            id: 1,
            creatorid: 2,
            ..State::default()
        };
        let mut batch = Vec::new();
        assert_eq!(
            compact_record::encode_batch(&[state], 1400, &mut batch),
            Ok(1)
        );
        let mut bytes = BATCH_FRAME.to_vec();
        bytes.extend_from_slice(&batch);
        let length = bytes.len() as u16;
        bytes[2..4].copy_from_slice(&length.to_be_bytes());
        let frame = FrameRepr::parse(&bytes).unwrap();
        let Body::Data(data) = frame.body else {
            panic!("not DATA: {frame:?}")
        };
        assert_eq!(data.seq, 5);
        let Content::CompactBatch {
            ruleset,
            batch: got,
        } = data.content()
        else {
            panic!("not a compact batch: {:?}", data.content())
        };
        assert_eq!(ruleset, Some([0x11; 16]));
        assert_eq!(compact_record::decode_batch(got), Ok(vec![state]));
        assert_eq!(
            compact_batch_content(Some([0x11; 16]), &batch),
            bytes[24..].to_vec()
        );
        assert_eq!(frame.to_vec(), bytes);
        // Not vouched: a zero byte and the batch.
        assert_eq!(
            Content::of(&compact_batch_content(None, &batch)),
            Content::CompactBatch {
                ruleset: None,
                batch: &batch
            }
        );
        // A pfsync packet (FreeBSD version 5 here) is one; a bad head is refused.
        assert_eq!(Content::of(&[5, 0, 0, 4]), Content::Pfsync(&[5, 0, 0, 4]));
        assert_eq!(Content::of(&[COMPACT_BATCH]), Content::BadCompact);
        assert_eq!(Content::of(&[COMPACT_BATCH, 2, 0]), Content::BadCompact);
        assert_eq!(Content::of(&[COMPACT_BATCH, 1, 0]), Content::BadCompact);
    }

    #[test]
    fn seq_zero_and_empty_packet_are_refused() {
        let mut zero = FRAME;
        zero[16..24].fill(0);
        assert!(matches!(
            FrameRepr::parse(&zero),
            Err(Error::BadValue { field: "seq", .. })
        ));
        let mut empty = FRAME[..24].to_vec();
        empty[3] = 24;
        assert!(matches!(
            FrameRepr::parse(&empty),
            Err(Error::BadBody { .. })
        ));
    }

    /// The head written in front of a packet in place is `emit`'s, byte for byte.
    #[test]
    fn a_head_in_place_is_the_emitted_frame() {
        let sender = Sender {
            creator: 0xdead_beef,
            boot: 0x0123_4567_89ab_cdef,
        };
        for (seq, len) in [
            (1, 1),
            (4097, 4),
            (u64::MAX, 8976),
            (7, 65535 - DATA_OVERHEAD),
        ] {
            let packet: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
            let emitted = FrameRepr {
                sender,
                body: Body::Data(DataRepr {
                    seq,
                    packet: &packet,
                }),
            }
            .to_vec();
            let mut in_place = vec![0xff; DATA_OVERHEAD];
            in_place.extend_from_slice(&packet);
            FrameRepr::emit_data_head(sender, seq, &mut in_place);
            assert_eq!(in_place, emitted, "seq {seq}, {len} bytes");
        }
    }
}
