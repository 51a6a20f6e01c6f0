//! IDS: the ids of the sender's own states in one digest bucket, each with its version,
//! as of its `as_of` seq; a bucket with many ids takes several frames (`part` of
//! `parts`).
//!
//! ```text
//!  0               4       6       8       10      12              16              24
//! +---------------+-------+-------+-------+-------+---------------+---------------+
//! | round (BE32)  |bucket | part  | parts | count |      pad      | as-of (BE64)  |
//! +---------------+-------+-------+-------+-------+---------------+---------------+
//! | id (BE64)                     | version (BE32)| ... count times (12 bytes each)
//! +-------------------------------+---------------+
//! ```
//!
//! The version is the hash of what a copy must agree on after sync (the engine's
//! `digest.rs`, `state_version`): a receiver holding the id at another version asks
//! for it (NEED) as for one it lacks. Up to 2026-12 a record was the id alone (8
//! bytes); a peer still sending those is refused here (the count and the length
//! disagree), counted as garbage.

use super::{check_list, Error, Result};
use crate::wire::codec::wire_struct;

wire_struct! {
    /// IDS head.
    IdsPacket, IdsHead, size 24;
    /// The digest round this answers.
    round / set_round: u32 = 0..4;
    /// The bucket listed.
    bucket / set_bucket: u16 = 4..6;
    /// This frame's part, from 0.
    part / set_part: u16 = 6..8;
    /// Frames the bucket's list takes.
    parts / set_parts: u16 = 8..10;
    /// Ids in this frame.
    count / set_count: u16 = 10..12;
    /// The sender's highest DATA seq when it listed.
    as_of / set_as_of: u64 = 16..24;
    [pad] _pad = 12..16;
}

/// The most ids per frame: 1176 bytes of body, 1192 with the header, under a 1280-byte
/// IPv6 minimum MTU with the IP header.
pub const MAX_IDS_PER_FRAME: usize = 96;

/// Bytes per listed state: id and version.
pub const RECORD: usize = 12;

/// One listed state: its id and its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Listed {
    pub id: u64,
    pub version: u32,
}

/// IDS body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdsRepr {
    pub round: u32,
    pub bucket: u16,
    pub part: u16,
    pub parts: u16,
    pub as_of: u64,
    pub ids: Vec<Listed>,
}

impl IdsRepr {
    pub fn parse(body: &[u8]) -> Result<IdsRepr> {
        let head = IdsPacket::new_checked(body).map_err(|_| Error::BadBody {
            kind: "IDS",
            need: SIZE,
            have: body.len(),
        })?;
        let head = IdsHead::parse(&head);
        check_list(
            "IDS",
            body,
            SIZE,
            RECORD,
            usize::from(head.count),
            MAX_IDS_PER_FRAME,
        )?;
        if head.part >= head.parts {
            return Err(Error::BadValue {
                kind: "IDS",
                field: "part",
                value: head.part.into(),
            });
        }
        Ok(IdsRepr {
            round: head.round,
            bucket: head.bucket,
            part: head.part,
            parts: head.parts,
            as_of: head.as_of,
            ids: body[SIZE..]
                .chunks_exact(RECORD)
                .map(|r| Listed {
                    id: u64::from_be_bytes(r[..8].try_into().expect("8 bytes")),
                    version: u32::from_be_bytes(r[8..].try_into().expect("4 bytes")),
                })
                .collect(),
        })
    }

    pub fn buffer_len(&self) -> usize {
        SIZE + RECORD * self.ids.len()
    }

    /// Writes the body into exactly `buffer_len()` bytes. Panics past
    /// [`MAX_IDS_PER_FRAME`].
    pub fn emit(&self, out: &mut [u8]) {
        assert!(self.ids.len() <= MAX_IDS_PER_FRAME);
        IdsHead {
            round: self.round,
            bucket: self.bucket,
            part: self.part,
            parts: self.parts,
            count: self.ids.len() as u16,
            as_of: self.as_of,
        }
        .emit_bytes(&mut out[..SIZE]);
        for (listed, r) in self.ids.iter().zip(out[SIZE..].chunks_exact_mut(RECORD)) {
            r[..8].copy_from_slice(&listed.id.to_be_bytes());
            r[8..].copy_from_slice(&listed.version.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::wire::ext::{Body, FrameRepr};

    static FRAME: [u8; 64] = [
        0xc5, 0x09, 0x00, 0x40, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, // header
        0, 0, 0, 9, 0, 3, 0, 1, 0, 2, 0, 2, 0, 0, 0, 0, // round 9, bucket 3, part 1 of 2
        0, 0, 0, 0, 0, 0, 0x01, 0x00, // as of 256
        0, 0, 0, 0, 0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, // id 5 at 0xdeadbeef
        0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 1, // id 6 at 1
    ];

    #[test]
    fn parse_and_emit() {
        let frame = FrameRepr::parse(&FRAME).unwrap();
        assert_eq!(
            frame.body,
            Body::Ids(IdsRepr {
                round: 9,
                bucket: 3,
                part: 1,
                parts: 2,
                as_of: 256,
                ids: vec![
                    Listed {
                        id: 5,
                        version: 0xdead_beef
                    },
                    Listed { id: 6, version: 1 }
                ]
            })
        );
        let mut buf = [0xa5u8; 64];
        frame.emit(&mut buf);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn the_old_layout_of_ids_alone_is_refused() {
        // Two 8-byte ids where the count calls for two 12-byte records.
        let mut old = FRAME[..56].to_vec();
        old[3] = 56;
        assert!(matches!(
            FrameRepr::parse(&old),
            Err(Error::BadBody {
                kind: "IDS",
                need: 48,
                have: 40
            })
        ));
    }

    #[test]
    fn part_must_be_below_parts() {
        let mut bad = FRAME;
        bad[23] = 2;
        assert!(matches!(
            FrameRepr::parse(&bad),
            Err(Error::BadValue { field: "part", .. })
        ));
    }
}
